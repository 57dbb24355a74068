//! ISO 8583 framing: the length header (and optional TPDU, fixed header and ETX
//! trailer) that delimits messages on a bank's TCP stream.
//!
//! [`FrameConfig::check`] looks at the start of a buffer and says either how many
//! more bytes a frame needs or where the frame's parts are; it keeps no state, so
//! any split of the stream (one byte at a time, many frames in one read) works by
//! calling it again on the grown buffer. The length is validated against
//! [`FrameConfig::max_frame`] as soon as the header is in, before the caller has
//! to buffer (or allocate for) the body. A frame whose length is zero is a
//! keep-alive, never a message.
//!
//! On the wire: `length header | [TPDU, 5 bytes] | [fixed header, N bytes] |
//! message | [ETX]`. The length counts everything after the length header (TPDU,
//! header, message and trailer), plus its own bytes for `-incl` variants.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the length is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthEncoding {
    /// Big-endian binary, 1–4 bytes (`u16be`, `u24be`, `u32be`).
    Binary {
        /// Width in bytes.
        bytes: u8,
    },
    /// Two bytes big-endian then two reserved bytes (`LL LL 00 00`, Visa VMLH).
    /// The reserved bytes are written as zero and ignored when read.
    BinaryPad2,
    /// ASCII decimal digits (`ascii4`).
    AsciiDecimal {
        /// Number of digits, 1–9.
        digits: u8,
    },
    /// ASCII hex digits, upper case when written (`hex4`).
    AsciiHex {
        /// Number of digits, 1–8.
        digits: u8,
    },
    /// Packed decimal (`bcd2`: two bytes, four digits).
    Bcd {
        /// Width in bytes, 1–4.
        bytes: u8,
    },
}

/// A length header: encoding, and whether the length counts its own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthHeader {
    /// How the length is written.
    pub encoding: LengthEncoding,
    /// The length counts the header's own bytes (`-incl` names).
    pub includes_self: bool,
}

impl LengthHeader {
    /// Bytes the header takes on the wire.
    pub fn size(&self) -> usize {
        match self.encoding {
            LengthEncoding::Binary { bytes } | LengthEncoding::Bcd { bytes } => usize::from(bytes),
            LengthEncoding::BinaryPad2 => 4,
            LengthEncoding::AsciiDecimal { digits } | LengthEncoding::AsciiHex { digits } => {
                usize::from(digits)
            }
        }
    }

    /// The largest value the header can hold.
    pub fn max_value(&self) -> u64 {
        match self.encoding {
            LengthEncoding::Binary { bytes } => (1u64 << (8 * u32::from(bytes))) - 1,
            LengthEncoding::BinaryPad2 => 0xFFFF,
            LengthEncoding::AsciiDecimal { digits } => 10u64.pow(u32::from(digits)) - 1,
            LengthEncoding::AsciiHex { digits } => (1u64 << (4 * u32::from(digits))) - 1,
            LengthEncoding::Bcd { bytes } => 10u64.pow(2 * u32::from(bytes)) - 1,
        }
    }

    fn read(&self, raw: &[u8]) -> Option<u64> {
        match self.encoding {
            LengthEncoding::Binary { .. } => Some(raw.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))),
            LengthEncoding::BinaryPad2 => Some(u64::from(u16::from_be_bytes([raw[0], raw[1]]))),
            LengthEncoding::AsciiDecimal { .. } => raw
                .iter()
                .try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))),
            LengthEncoding::AsciiHex { .. } => {
                raw.iter().try_fold(0u64, |acc, &b| Some((acc << 4) | u64::from((b as char).to_digit(16)?)))
            }
            LengthEncoding::Bcd { .. } => raw.iter().try_fold(0u64, |acc, &b| {
                let (hi, lo) = (b >> 4, b & 0x0F);
                (hi <= 9 && lo <= 9).then(|| acc * 100 + u64::from(hi * 10 + lo))
            }),
        }
    }

    fn write(&self, value: u64, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        match self.encoding {
            LengthEncoding::Binary { bytes } => {
                out.extend((0..u32::from(bytes)).rev().map(|i| (value >> (8 * i)) as u8));
            }
            LengthEncoding::BinaryPad2 => out.extend([(value >> 8) as u8, value as u8, 0, 0]),
            LengthEncoding::AsciiDecimal { digits } => {
                out.extend((0..u32::from(digits)).rev().map(|i| b'0' + (value / 10u64.pow(i) % 10) as u8))
            }
            LengthEncoding::AsciiHex { digits } => {
                out.extend((0..u32::from(digits)).rev().map(|i| HEX[(value >> (4 * i) & 0xF) as usize]));
            }
            LengthEncoding::Bcd { bytes } => out.extend((0..u32::from(bytes)).rev().map(|i| {
                let pair = value / 100u64.pow(i) % 100;
                ((pair / 10) as u8) << 4 | (pair % 10) as u8
            })),
        }
    }
}

/// A length-header name that is not one we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown framing {0:?}: expected u8be, u16be, u24be, u32be, u16be-pad2, asciiN (N 1-9), hexN (N 1-8) \
     or bcdN (N bytes 1-4), optionally followed by -incl"
)]
pub struct UnknownFraming(pub String);

impl FromStr for LengthHeader {
    type Err = UnknownFraming;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownFraming(s.to_owned());
        let (base, includes_self) = match s.strip_suffix("-incl") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let number = |prefix: &str, range: Range<u8>| -> Option<u8> {
            let n: u8 = base.strip_prefix(prefix)?.parse().ok()?;
            range.contains(&n).then_some(n)
        };
        let encoding = match base {
            "u8be" => LengthEncoding::Binary { bytes: 1 },
            "u16be" => LengthEncoding::Binary { bytes: 2 },
            "u24be" => LengthEncoding::Binary { bytes: 3 },
            "u32be" => LengthEncoding::Binary { bytes: 4 },
            "u16be-pad2" => LengthEncoding::BinaryPad2,
            _ => {
                if let Some(digits) = number("ascii", 1..10) {
                    LengthEncoding::AsciiDecimal { digits }
                } else if let Some(digits) = number("hex", 1..9) {
                    LengthEncoding::AsciiHex { digits }
                } else if let Some(bytes) = number("bcd", 1..5) {
                    LengthEncoding::Bcd { bytes }
                } else {
                    return Err(unknown());
                }
            }
        };
        Ok(Self { encoding, includes_self })
    }
}

impl fmt::Display for LengthHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.encoding {
            LengthEncoding::Binary { bytes } => write!(f, "u{}be", 8 * u32::from(bytes))?,
            LengthEncoding::BinaryPad2 => f.write_str("u16be-pad2")?,
            LengthEncoding::AsciiDecimal { digits } => write!(f, "ascii{digits}")?,
            LengthEncoding::AsciiHex { digits } => write!(f, "hex{digits}")?,
            LengthEncoding::Bcd { bytes } => write!(f, "bcd{bytes}")?,
        }
        if self.includes_self {
            f.write_str("-incl")?;
        }
        Ok(())
    }
}

impl Serialize for LengthHeader {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LengthHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The ETX byte that ends BASE24-style frames.
pub const ETX: u8 = 0x03;

/// Default maximum frame length (jPOS's `max-packet-length` is 100000; ISO 8583
/// messages in practice stay far below 8 KiB).
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024;

fn default_max_frame() -> usize {
    DEFAULT_MAX_FRAME
}

/// A bank's framing profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameConfig {
    /// The length header, by name (`u16be`, `ascii4-incl`, …).
    pub length: LengthHeader,
    /// A 5-byte TPDU follows the length; replies swap its source and destination.
    #[serde(default)]
    pub tpdu: bool,
    /// Bytes of a fixed header after the length (and TPDU), passed through as is.
    #[serde(default)]
    pub fixed_header: usize,
    /// A trailer byte ends every frame (ETX, 0x03, for BASE24 TCP); counted in the length.
    #[serde(default)]
    pub trailer: Option<u8>,
    /// Largest accepted length (after the length header), checked before the body is read.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
}

impl FrameConfig {
    /// A profile with only a length header, and the default maximum.
    pub fn new(length: LengthHeader) -> Self {
        Self { length, tpdu: false, fixed_header: 0, trailer: None, max_frame: DEFAULT_MAX_FRAME }
    }

    /// Bytes between the length header and the message.
    pub fn header_len(&self) -> usize {
        usize::from(self.tpdu) * TPDU_LEN + self.fixed_header
    }

    fn overhead(&self) -> usize {
        self.header_len() + usize::from(self.trailer.is_some())
    }

    /// Looks for a frame at the start of `buf`.
    pub fn check(&self, buf: &[u8]) -> Result<Check, FrameError> {
        let hlen = self.length.size();
        if buf.len() < hlen {
            return Ok(Check::Incomplete { needed: hlen - buf.len() });
        }
        let declared =
            self.length.read(&buf[..hlen]).ok_or(FrameError::BadLength { header: buf[..hlen].to_vec() })?;
        let body = if self.length.includes_self {
            match declared {
                // Some peers send a bare zero as keep-alive even when lengths count themselves.
                0 => 0,
                d if d < hlen as u64 => return Err(FrameError::BadLength { header: buf[..hlen].to_vec() }),
                d => d - hlen as u64,
            }
        } else {
            declared
        };
        if body > self.max_frame as u64 {
            return Err(FrameError::TooLarge { len: body, max: self.max_frame });
        }
        let body = body as usize;
        if body == 0 {
            return Ok(Check::Frame(FrameInfo {
                total: hlen,
                tpdu: None,
                header: None,
                message: hlen..hlen,
            }));
        }
        if body <= self.overhead() {
            return Err(FrameError::TooShort { len: body, min: self.overhead() + 1 });
        }
        let total = hlen + body;
        if buf.len() < total {
            return Ok(Check::Incomplete { needed: total - buf.len() });
        }
        let mut pos = hlen;
        let tpdu = self.tpdu.then(|| {
            pos += TPDU_LEN;
            pos - TPDU_LEN..pos
        });
        let header = (self.fixed_header > 0).then(|| {
            pos += self.fixed_header;
            pos - self.fixed_header..pos
        });
        let mut end = total;
        if let Some(trailer) = self.trailer {
            end -= 1;
            if buf[end] != trailer {
                return Err(FrameError::BadTrailer { found: buf[end], expected: trailer });
            }
        }
        Ok(Check::Frame(FrameInfo { total, tpdu, header, message: pos..end }))
    }

    /// The bytes the frame at the start of `buf` takes on the wire (length header
    /// included), as its length header declares, or `None` if the header is not all
    /// in `buf` or is not a length (the stream has then lost its framing).
    ///
    /// Unlike [`check`](Self::check) it ignores the maximum and the minimum, so a
    /// reader that refuses a frame (too large, too short, bad trailer) can still skip
    /// exactly that frame's bytes and go on with the next one.
    pub fn extent(&self, buf: &[u8]) -> Option<u64> {
        let hlen = self.length.size();
        let declared = self.length.read(buf.get(..hlen)?)?;
        match (self.length.includes_self, declared) {
            (false, d) => Some(hlen as u64 + d),
            // A bare zero is a keep-alive even when lengths count themselves.
            (true, 0) => Some(hlen as u64),
            (true, d) if d < hlen as u64 => None,
            (true, d) => Some(d),
        }
    }

    /// Appends one frame to `out`. `tpdu` and `header` must match the profile; pass
    /// the request's TPDU through [`swap_tpdu`] when answering it.
    pub fn encode(
        &self,
        tpdu: Option<&[u8; TPDU_LEN]>,
        header: &[u8],
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        if tpdu.is_some() != self.tpdu || header.len() != self.fixed_header {
            return Err(FrameError::HeaderMismatch);
        }
        if message.is_empty() {
            return Err(FrameError::EmptyMessage);
        }
        let body = self.overhead() + message.len();
        if body > self.max_frame {
            return Err(FrameError::TooLarge { len: body as u64, max: self.max_frame });
        }
        let declared = body as u64 + if self.length.includes_self { self.length.size() as u64 } else { 0 };
        if declared > self.length.max_value() {
            return Err(FrameError::TooLarge { len: body as u64, max: self.length.max_value() as usize });
        }
        out.reserve(self.length.size() + body);
        self.length.write(declared, out);
        if let Some(tpdu) = tpdu {
            out.extend_from_slice(tpdu);
        }
        out.extend_from_slice(header);
        out.extend_from_slice(message);
        if let Some(trailer) = self.trailer {
            out.push(trailer);
        }
        Ok(())
    }

    /// Appends a keep-alive (zero-length) frame to `out`.
    pub fn encode_keep_alive(&self, out: &mut Vec<u8>) {
        let declared = if self.length.includes_self { self.length.size() as u64 } else { 0 };
        self.length.write(declared, out);
    }
}

/// TPDU length in bytes: id (1), destination (2), source (2).
pub const TPDU_LEN: usize = 5;

/// The TPDU of a reply: destination and source swapped.
pub fn swap_tpdu(tpdu: &[u8; TPDU_LEN]) -> [u8; TPDU_LEN] {
    [tpdu[0], tpdu[3], tpdu[4], tpdu[1], tpdu[2]]
}

/// The result of [`FrameConfig::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// At least this many more bytes are needed.
    Incomplete {
        /// Bytes missing (a lower bound until the length header is complete).
        needed: usize,
    },
    /// A whole frame is at the start of the buffer.
    Frame(FrameInfo),
}

/// Where the parts of a frame are, as ranges of the buffer given to `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameInfo {
    /// Bytes the frame takes; drop these from the buffer once handled.
    pub total: usize,
    /// The TPDU, if the profile has one.
    pub tpdu: Option<Range<usize>>,
    /// The fixed header, if the profile has one.
    pub header: Option<Range<usize>>,
    /// The ISO 8583 message; empty for a keep-alive.
    pub message: Range<usize>,
}

impl FrameInfo {
    /// A zero-length frame: a keep-alive, never a message.
    pub fn is_keep_alive(&self) -> bool {
        self.message.is_empty()
    }
}

/// A frame that cannot be read or written. After a read error the session can only
/// go on if [`FrameConfig::extent`] still knows where the refused frame ends (too
/// large, too short, bad trailer); a [`FrameError::BadLength`] loses the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length header is not a number in its encoding (or, for `-incl`, is
    /// smaller than the header itself).
    #[error("bad length header {}", hex(header))]
    BadLength {
        /// The header bytes.
        header: Vec<u8>,
    },
    /// The length is over the maximum.
    #[error("frame length {len} is over the maximum {max}")]
    TooLarge {
        /// Length declared (or asked for).
        len: u64,
        /// Maximum.
        max: usize,
    },
    /// The length cannot even hold the configured TPDU, header and trailer.
    #[error("frame length {len} is below the minimum {min} for this profile")]
    TooShort {
        /// Length declared.
        len: usize,
        /// Smallest non-keep-alive length.
        min: usize,
    },
    /// The last byte is not the configured trailer.
    #[error("frame ends with {found:#04x}, expected trailer {expected:#04x}")]
    BadTrailer {
        /// Byte found.
        found: u8,
        /// Trailer expected.
        expected: u8,
    },
    /// The TPDU or header given to `encode` does not match the profile.
    #[error("TPDU or fixed header does not match the framing profile")]
    HeaderMismatch,
    /// `encode` was given an empty message (use `encode_keep_alive`).
    #[error("empty message: a zero-length frame is a keep-alive")]
    EmptyMessage,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str) -> FrameConfig {
        FrameConfig::new(name.parse().unwrap())
    }

    #[test]
    fn names_round_trip() {
        for name in
            ["u16be", "u16be-incl", "u32be", "u16be-pad2", "ascii4", "ascii4-incl", "hex4", "bcd2", "u24be"]
        {
            assert_eq!(name.parse::<LengthHeader>().unwrap().to_string(), name);
        }
        for bad in ["u17be", "ascii0", "ascii10", "hex9", "bcd5", "", "-incl"] {
            assert!(bad.parse::<LengthHeader>().is_err(), "{bad}");
        }
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let mut c = cfg("u32be");
        c.max_frame = 1000;
        assert_eq!(c.check(&[0, 0, 0x03, 0xE9]), Err(FrameError::TooLarge { len: 1001, max: 1000 }));
        assert_eq!(cfg("ascii4").check(b"00x1"), Err(FrameError::BadLength { header: b"00x1".to_vec() }));
        assert!(cfg("bcd2").check(&[0x0A, 0x00]).is_err());
        assert!(cfg("u16be-incl").check(&[0x00, 0x01]).is_err());
    }

    #[test]
    fn extent_is_the_declared_frame_even_when_check_refuses_it() {
        let mut c = cfg("u16be");
        c.max_frame = 100;
        c.trailer = Some(ETX);
        // Oversize: refused by check, but its extent is known from the header.
        assert!(matches!(c.check(&[0x01, 0x00]), Err(FrameError::TooLarge { .. })));
        assert_eq!(c.extent(&[0x01, 0x00]), Some(2 + 256));
        // Too short for the trailer, and a bad trailer: extent known.
        assert!(matches!(c.check(&[0x00, 0x01, 0x30]), Err(FrameError::TooShort { .. })));
        assert_eq!(c.extent(&[0x00, 0x01]), Some(3));
        assert!(matches!(c.check(&[0x00, 0x02, 0x30, 0x31]), Err(FrameError::BadTrailer { .. })));
        assert_eq!(c.extent(&[0x00, 0x02, 0x30, 0x31]), Some(4));
        // Header not all in: unknown.
        assert_eq!(c.extent(&[0x01]), None);
        // Unreadable lengths: framing lost.
        assert_eq!(cfg("ascii4").extent(b"00x1"), None);
        assert_eq!(cfg("bcd2").extent(&[0x0A, 0x00]), None);
        assert_eq!(cfg("u16be-incl").extent(&[0x00, 0x01]), None);
        // Readable ones, every encoding, -incl counting the header itself.
        assert_eq!(cfg("ascii4").extent(b"0012"), Some(16));
        assert_eq!(cfg("ascii4-incl").extent(b"0012"), Some(12));
        assert_eq!(cfg("ascii4-incl").extent(b"0000"), Some(4));
        assert_eq!(cfg("hex4").extent(b"00fF"), Some(4 + 255));
        assert_eq!(cfg("bcd2").extent(&[0x01, 0x23]), Some(2 + 123));
        assert_eq!(cfg("u16be-pad2").extent(&[0x00, 0x10, 0xAA, 0xBB]), Some(4 + 16));
        assert_eq!(cfg("u32be").extent(&[0xFF; 4]), Some(4 + u64::from(u32::MAX)));
        // Agrees with check on every frame check accepts.
        let mut wire = Vec::new();
        c.encode(None, b"", b"0800", &mut wire).unwrap();
        let Check::Frame(f) = c.check(&wire).unwrap() else { panic!() };
        assert_eq!(c.extent(&wire), Some(f.total as u64));
    }

    #[test]
    fn tpdu_header_and_trailer() {
        let mut c = cfg("u16be");
        c.tpdu = true;
        c.fixed_header = 2;
        c.trailer = Some(ETX);
        let tpdu = [0x60, 0x00, 0x01, 0x00, 0x02];
        let mut wire = Vec::new();
        c.encode(Some(&tpdu), b"HH", b"0800", &mut wire).unwrap();
        assert_eq!(wire, b"\x00\x0c\x60\x00\x01\x00\x02HH0800\x03");
        let Check::Frame(f) = c.check(&wire).unwrap() else { panic!() };
        assert_eq!(&wire[f.tpdu.unwrap()], &tpdu);
        assert_eq!(&wire[f.header.unwrap()], b"HH");
        assert_eq!(&wire[f.message], b"0800");
        assert_eq!(swap_tpdu(&tpdu), [0x60, 0x00, 0x02, 0x00, 0x01]);
        let last = wire.len() - 1;
        wire[last] = 0;
        assert!(matches!(c.check(&wire), Err(FrameError::BadTrailer { .. })));
        // A non-zero length that cannot hold TPDU + header + trailer.
        assert!(matches!(c.check(&[0, 3, 1, 2, 3]), Err(FrameError::TooShort { .. })));
        // Keep-alives carry no TPDU.
        let mut ka = Vec::new();
        c.encode_keep_alive(&mut ka);
        assert!(matches!(c.check(&ka), Ok(Check::Frame(f)) if f.is_keep_alive() && f.total == 2));
    }
}
