//! Building requests fast and correctly.
//!
//! Each session pre-encodes one whole frame (length header, TPDU, message, ETX) per
//! request MTI. Every field that changes between requests (DE4, 7, 11, 12, 13, 37,
//! and DE90 of reversals) is fixed-length and numeric, so a request is the template
//! copied into the write buffer and those fields overwritten in place: the frame
//! length and the bitmap never change. A template is only accepted after a patched
//! copy has been checked byte for byte against the layout's own encoder (see
//! [`Template::new`]), so patching cannot drift from `proto`'s encoding for any
//! layout.
//!
//! The clock part formats wall-clock time (UTC) for DE7/12/13 and for reports,
//! without a date library.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::frame::{FrameConfig, TPDU_LEN};
use proto::iso8583::layout::{Encoding, FieldSpec, Pad};
use proto::iso8583::{Layout, Message, Mti};

use super::config::ConfigError;

/// Fields patched per request, in the order of [`Values`].
const PATCHED: [u8; 7] = [4, 7, 11, 12, 13, 37, 90];

/// The changing values of one request, as ASCII digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Values {
    /// DE4, amount in minor units.
    pub(crate) amount: [u8; 12],
    /// DE7, transmission date and time, `MMDDhhmmss`.
    pub(crate) de7: [u8; 10],
    /// DE11, STAN.
    pub(crate) stan: [u8; 6],
    /// DE12, local time `hhmmss`.
    pub(crate) de12: [u8; 6],
    /// DE13, local date `MMDD`.
    pub(crate) de13: [u8; 4],
    /// DE37, retrieval reference number.
    pub(crate) rrn: [u8; 12],
    /// DE90, original data elements (reversals only).
    pub(crate) de90: [u8; 42],
}

impl Values {
    fn field(&self, id: u8) -> &[u8] {
        match id {
            4 => &self.amount,
            7 => &self.de7,
            11 => &self.stan,
            12 => &self.de12,
            13 => &self.de13,
            37 => &self.rrn,
            _ => &self.de90,
        }
    }

    fn sample() -> Self {
        Self {
            amount: *b"000000012345",
            de7: *b"1231235959",
            stan: *b"987654",
            de12: *b"235959",
            de13: *b"1231",
            rrn: *b"000001987654",
            de90: *b"020012345612312359590000012345600000000000",
        }
    }
}

/// Writes `value` as exactly `out.len()` decimal ASCII digits (the low ones).
pub(crate) fn put_digits(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Fixed fields of every request of a session.
#[derive(Debug, Clone)]
pub(crate) struct Constants<'a> {
    /// DE2.
    pub(crate) pan: &'a str,
    /// DE32.
    pub(crate) acquirer: &'a str,
    /// DE41.
    pub(crate) terminal: &'a str,
    /// DE42.
    pub(crate) merchant: &'a str,
}

/// Where one patched field sits in the frame.
#[derive(Debug, Clone, Copy)]
struct Patch {
    id: u8,
    offset: usize,
    spec: FieldSpec,
}

/// One request MTI, pre-encoded as a whole frame.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    mti: Mti,
    frame: Vec<u8>,
    message: std::ops::Range<usize>,
    patches: Vec<Patch>,
}

/// Processing code, POS entry mode and currency of generated requests.
const PROCESSING_CODE: &str = "000000";
const POS_ENTRY_MODE: &str = "012";
const CURRENCY: &str = "840";

fn text(digits: &[u8]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

impl Template {
    /// The template of `mti` for one session. Fails if the layout cannot carry the
    /// fields, or if patching in place would not give the encoder's bytes.
    pub(crate) fn new(
        layout: &Layout,
        framing: &FrameConfig,
        tpdu: Option<&[u8; TPDU_LEN]>,
        mti: Mti,
        constants: &Constants<'_>,
    ) -> Result<Self, ConfigError> {
        let what = || format!("{mti} request");
        let fail =
            |reason: String| ConfigError::Message { layout: layout.name().to_owned(), what: what(), reason };
        let reversal = mti.class() == 4;
        let sample = Values::sample();
        let encode = |v: &Values| -> Result<Vec<u8>, ConfigError> {
            let mut fields: Vec<(u8, &str)> = vec![
                (2, constants.pan),
                (3, PROCESSING_CODE),
                (4, text(&v.amount)),
                (7, text(&v.de7)),
                (11, text(&v.stan)),
                (12, text(&v.de12)),
                (13, text(&v.de13)),
                (22, POS_ENTRY_MODE),
                (32, constants.acquirer),
                (37, text(&v.rrn)),
                (41, constants.terminal),
                (42, constants.merchant),
                (49, CURRENCY),
            ];
            if reversal {
                fields.push((90, text(&v.de90)));
            }
            let message = layout.encode_to_vec(mti.as_str(), fields).map_err(|e| fail(e.to_string()))?;
            let mut frame = Vec::with_capacity(message.len() + 16);
            framing.encode(tpdu, &[], &message, &mut frame).map_err(|e| fail(e.to_string()))?;
            Ok(frame)
        };
        let frame = encode(&Values { de90: [b'0'; 42], ..sample })?;
        let proto::frame::Check::Frame(info) = framing.check(&frame).map_err(|e| fail(e.to_string()))? else {
            return Err(fail("the encoded frame does not read back".to_owned()));
        };
        let msg = Message::parse(layout, &frame[info.message.clone()]).map_err(|e| fail(e.to_string()))?;
        let mut patches = Vec::new();
        for id in PATCHED {
            if id == 90 && !reversal {
                continue;
            }
            let field = msg.field(id).ok_or_else(|| fail(format!("DE{id} is missing")))?;
            let spec = *field.spec;
            if spec.prefix.is_some() || matches!(spec.encoding, Encoding::Binary) {
                return Err(fail(format!("DE{id} is not a fixed-length numeric or text field")));
            }
            patches.push(Patch { id, offset: info.message.start + field.data_offset, spec });
        }
        let template = Self { mti, frame, message: info.message, patches };
        // The self-check: patched bytes must be the encoder's bytes.
        let mut patched = Vec::new();
        template.append(&sample, &mut patched);
        if patched != encode(&sample)? {
            return Err(fail("patching in place does not reproduce the encoder's bytes".to_owned()));
        }
        Ok(template)
    }

    /// The MTI.
    pub(crate) fn mti(&self) -> Mti {
        self.mti
    }

    /// Appends one frame with `values` to `out`; returns the range of the ISO
    /// message within `out`.
    pub(crate) fn append(&self, values: &Values, out: &mut Vec<u8>) -> std::ops::Range<usize> {
        let base = out.len();
        out.extend_from_slice(&self.frame);
        let frame = &mut out[base..];
        for p in &self.patches {
            write_numeric(&p.spec, values.field(p.id), &mut frame[p.offset..]);
        }
        base + self.message.start..base + self.message.end
    }
}

/// Writes ASCII `digits` as a fixed field's data at the start of `out`.
fn write_numeric(spec: &FieldSpec, digits: &[u8], out: &mut [u8]) {
    match spec.encoding {
        Encoding::Text(cs) => {
            for (o, d) in out.iter_mut().zip(digits) {
                *o = cs.digit_byte(d.wrapping_sub(b'0'));
            }
        }
        Encoding::Bcd => {
            let nibble = |d: &u8| d.wrapping_sub(b'0') & 0x0F;
            let (lead, trail) = match (digits.len() % 2 == 1, spec.pad) {
                (true, Pad::Left(p)) => (Some(p), None),
                (true, Pad::Right(p)) => (None, Some(p)),
                (false, _) => (None, None),
            };
            let mut nibbles = lead.into_iter().chain(digits.iter().map(nibble)).chain(trail);
            for o in out.iter_mut() {
                match (nibbles.next(), nibbles.next()) {
                    (Some(hi), Some(lo)) => *o = (hi << 4) | lo,
                    _ => break,
                }
            }
        }
        // Refused when the template is built.
        Encoding::Binary => {}
    }
}

/// A Luhn-valid test PAN for session `index`: BIN 476173, 16 digits.
pub(crate) fn test_pan(index: u32) -> String {
    let body = format!("476173{:09}", u64::from(index) % 1_000_000_000);
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// Wall-clock time broken down (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
}

impl Civil {
    /// From seconds since the Unix epoch (Howard Hinnant's `civil_from_days`).
    pub(crate) fn from_unix(secs: u64) -> Self {
        let rem = secs % 86_400;
        let (year, month, day) = crate::civil::civil_from_days((secs / 86_400) as i64);
        Self {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem / 60 % 60) as u32,
            second: (rem % 60) as u32,
        }
    }
}

/// `2024-05-01T12:34:56.789Z` for a wall-clock time.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let c = Civil::from_unix(since.as_secs());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        since.subsec_millis()
    )
}

/// DE7/DE12/DE13 of the current second, recomputed when the second changes.
#[derive(Debug, Clone)]
pub(crate) struct FieldClock {
    secs: u64,
    /// DE7, `MMDDhhmmss` (UTC).
    pub(crate) de7: [u8; 10],
}

impl FieldClock {
    /// A clock showing now.
    pub(crate) fn new() -> Self {
        let mut c = Self { secs: u64::MAX, de7: [b'0'; 10] };
        c.tick();
        c
    }

    /// Moves to the current second.
    pub(crate) fn tick(&mut self) {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        if secs == self.secs {
            return;
        }
        self.secs = secs;
        let c = Civil::from_unix(secs);
        for (i, v) in [c.month, c.day, c.hour, c.minute, c.second].into_iter().enumerate() {
            put_digits(&mut self.de7[2 * i..2 * i + 2], u64::from(v));
        }
    }

    /// DE12, local time: the simulator's local time is UTC.
    pub(crate) fn de12(&self) -> [u8; 6] {
        let mut out = [0; 6];
        out.copy_from_slice(&self.de7[4..]);
        out
    }

    /// DE13, local date `MMDD`.
    pub(crate) fn de13(&self) -> [u8; 4] {
        let mut out = [0; 4];
        out.copy_from_slice(&self.de7[..4]);
        out
    }
}

#[cfg(test)]
mod tests {
    use proto::iso8583::BUILTIN_LAYOUTS;

    use super::*;

    fn constants() -> Constants<'static> {
        Constants {
            pan: "4761739001010010",
            acquirer: "123456",
            terminal: "SIM00001",
            merchant: "MERCHANT0000001",
        }
    }

    /// For every layout and several framings, a patched template equals a fresh
    /// encoding of the same values, and reads back with them.
    #[test]
    fn patched_templates_equal_the_encoder() {
        let framings =
            [("u16be", None, false), ("ascii4", None, true), ("bcd2", Some([0x60, 0, 1, 0, 0]), false)];
        for name in BUILTIN_LAYOUTS {
            let layout = Layout::builtin(name).unwrap();
            for (len, tpdu, etx) in framings {
                let framing = FrameConfig {
                    tpdu: tpdu.is_some(),
                    trailer: etx.then_some(proto::frame::ETX),
                    ..FrameConfig::new(len.parse().unwrap())
                };
                for mti in ["0100", "0200", "0400", "0420"] {
                    let mti: Mti = mti.parse().unwrap();
                    let t = Template::new(layout, &framing, tpdu.as_ref(), mti, &constants()).unwrap();
                    let mut v = Values::sample();
                    for stan in [1u64, 42, 999_999] {
                        put_digits(&mut v.stan, stan);
                        put_digits(&mut v.amount, stan * 7);
                        put_digits(&mut v.rrn, stan * 1000 + 3);
                        let mut out = vec![0xAA];
                        let range = t.append(&v, &mut out);
                        let msg = Message::parse(layout, &out[range]).unwrap();
                        assert_eq!(msg.mti(), mti);
                        for id in [4, 7, 11, 12, 13, 37] {
                            assert_eq!(
                                msg.value(id).unwrap().unwrap().as_bytes(),
                                v.field(id),
                                "{name} DE{id}"
                            );
                        }
                        assert_eq!(msg.value(41).unwrap().unwrap(), "SIM00001");
                        if mti.class() == 4 {
                            assert_eq!(msg.value(90).unwrap().unwrap().as_bytes(), &v.de90[..]);
                        } else {
                            assert!(!msg.has(90));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn clock_and_pan() {
        assert_eq!(
            Civil::from_unix(0),
            Civil { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0 }
        );
        // 2024-02-29T23:59:58Z
        assert_eq!(
            Civil::from_unix(1_709_251_198),
            Civil { year: 2024, month: 2, day: 29, hour: 23, minute: 59, second: 58 }
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(1_709_251_198_007)),
            "2024-02-29T23:59:58.007Z"
        );
        let pan = test_pan(7);
        assert_eq!(pan.len(), 16);
        assert!(pan.starts_with("476173"));
        // Luhn: 4761739001010010 is a known-valid test card shape; check ours directly.
        let sum: u32 = pan
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, b)| {
                let d = u32::from(b - b'0');
                if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
            })
            .sum();
        assert_eq!(sum % 10, 0);
        let mut digits = [0u8; 6];
        put_digits(&mut digits, 1_234_567);
        assert_eq!(&digits, b"234567");
    }
}
