//! The zero-copy walker: reads the MTI and bitmaps and records where every present
//! data element starts and ends, without copying or decoding field content. Values
//! are decoded only when asked for ([`FieldRef::value`]).

use std::fmt;

use super::charset::Charset;
use super::error::{DecodeError, DecodeErrorKind, Part};
use super::layout::{BitmapEncoding, Encoding, FieldSpec, Layout, MtiEncoding, Pad, PrefixEncoding};
use super::mti::Mti;

/// Largest message the walker reads, in bytes.
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// Where one present field sits in the message.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    /// Start of the length prefix (or of the data, for a fixed field).
    start: u16,
    /// Start of the data.
    data: u16,
    /// End of the data.
    end: u16,
    /// Declared length in the field's units (bytes, or nibbles for BCD).
    units: u16,
}

/// A decoded view of one ISO 8583 message, borrowing the message bytes.
///
/// Building it walks the whole message once (the only way to find a field's offset
/// is to walk every field before it) and checks that the bitmaps, length prefixes
/// and total length are consistent. Field content is not validated until read.
#[derive(Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    layout: &'a Layout,
    mti: Mti,
    /// Bit `128 - n` is data element `n`; bit 127 (field 1) is the secondary bitmap.
    bitmap: u128,
    spans: [Span; 129],
}

/// One present data element.
#[derive(Debug, Clone, Copy)]
pub struct FieldRef<'a> {
    /// Data element number, 2–128.
    pub id: u8,
    /// Offset of the field (its length prefix, if any) from the start of the message.
    pub offset: usize,
    /// Offset of the field's data from the start of the message.
    pub data_offset: usize,
    /// The field's data bytes, without the length prefix.
    pub data: &'a [u8],
    /// The field's bytes on the wire, length prefix included.
    pub wire: &'a [u8],
    /// Declared length, in bytes, or in nibbles for BCD fields.
    pub units: usize,
    /// The definition the field was read with.
    pub spec: &'a FieldSpec,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, part: Part, n: usize) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.pos;
        if n > available {
            return Err(DecodeError {
                part,
                offset: self.pos,
                kind: DecodeErrorKind::Truncated { needed: n, available },
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
}

impl<'a> Message<'a> {
    /// Walks `bytes` (one whole message, no length header) under `layout`.
    pub fn parse(layout: &'a Layout, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        // Offsets are kept in 16 bits (a smaller `Message` is cheaper to build and move);
        // ISO 8583 messages stay far below this, and framing caps them lower still.
        if bytes.len() > MAX_MESSAGE {
            return Err(DecodeError {
                part: Part::Mti,
                offset: 0,
                kind: DecodeErrorKind::LengthOverMax { len: bytes.len(), max: MAX_MESSAGE },
            });
        }
        let mut cur = Cursor { bytes, pos: 0 };
        let mti = read_mti(layout.mti_encoding(), &mut cur)?;
        let primary = read_bitmap(layout.bitmap_encoding(), &mut cur, Part::PrimaryBitmap)?;
        let mut bitmap = u128::from(primary) << 64;
        if primary & (1 << 63) != 0 {
            let offset = cur.pos;
            let secondary = read_bitmap(layout.bitmap_encoding(), &mut cur, Part::SecondaryBitmap)?;
            if secondary & (1 << 63) != 0 {
                return Err(DecodeError {
                    part: Part::SecondaryBitmap,
                    offset,
                    kind: DecodeErrorKind::TertiaryBitmap,
                });
            }
            bitmap |= u128::from(secondary);
        }
        let mut spans = [Span::default(); 129];
        // Visit only the bits that are set (bit 1, the secondary bitmap, is not a field).
        let mut remaining = bitmap & !bit(1);
        while remaining != 0 {
            let id = remaining.leading_zeros() as u8 + 1;
            remaining &= !bit(id);
            let part = Part::Field(id);
            let start = cur.pos;
            let Some(spec) = layout.field(id) else {
                return Err(DecodeError { part, offset: start, kind: DecodeErrorKind::UndefinedField });
            };
            let units = match spec.prefix {
                None => usize::from(spec.max_len),
                Some(prefix) => {
                    let raw = cur.take(part, usize::from(prefix.bytes))?;
                    let units = read_length(prefix.encoding, raw).ok_or(DecodeError {
                        part,
                        offset: start,
                        kind: DecodeErrorKind::BadLengthPrefix,
                    })?;
                    if units > usize::from(spec.max_len) {
                        return Err(DecodeError {
                            part,
                            offset: start,
                            kind: DecodeErrorKind::LengthOverMax {
                                len: units,
                                max: usize::from(spec.max_len),
                            },
                        });
                    }
                    units
                }
            };
            let data = cur.pos;
            cur.take(part, spec.wire_len(units))?;
            // Offsets fit in u16: checked on entry; units ≤ max_len, a u16.
            spans[usize::from(id)] =
                Span { start: start as u16, data: data as u16, end: cur.pos as u16, units: units as u16 };
        }
        if cur.pos != bytes.len() {
            return Err(DecodeError {
                part: Part::End,
                offset: cur.pos,
                kind: DecodeErrorKind::TrailingBytes { count: bytes.len() - cur.pos },
            });
        }
        Ok(Self { bytes, layout, mti, bitmap, spans })
    }

    /// The message type indicator.
    #[inline]
    pub fn mti(&self) -> Mti {
        self.mti
    }

    /// The whole message, exactly as received.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The layout the message was read with.
    #[inline]
    pub fn layout(&self) -> &'a Layout {
        self.layout
    }

    /// Whether data element `id` is present.
    #[inline]
    pub fn has(&self, id: u8) -> bool {
        (2..=128).contains(&id) && self.bitmap & bit(id) != 0
    }

    /// Whether a secondary bitmap is present.
    pub fn has_secondary_bitmap(&self) -> bool {
        self.bitmap & bit(1) != 0
    }

    /// Data element `id`, if present.
    pub fn field(&self, id: u8) -> Option<FieldRef<'a>> {
        if !self.has(id) {
            return None;
        }
        let span = self.spans[usize::from(id)];
        let spec = self.layout.field(id)?;
        Some(FieldRef {
            id,
            offset: span.start as usize,
            data_offset: span.data as usize,
            data: &self.bytes[span.data as usize..span.end as usize],
            wire: &self.bytes[span.start as usize..span.end as usize],
            units: span.units as usize,
            spec,
        })
    }

    /// Every present data element, in field order.
    pub fn fields(&self) -> impl Iterator<Item = FieldRef<'a>> + '_ {
        (2..=128u8).filter_map(|id| self.field(id))
    }

    /// The decoded value of data element `id`, if present.
    pub fn value(&self, id: u8) -> Option<Result<String, DecodeError>> {
        self.field(id).map(|f| f.value())
    }

    /// Masked rendering for logs: see [`super::mask`].
    pub fn masked(&self) -> super::mask::Masked<'_, 'a> {
        super::mask::Masked(self)
    }
}

/// `Debug` is the masked rendering: a message never prints sensitive data by accident.
impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.masked(), f)
    }
}

impl FieldRef<'_> {
    /// The field's value, by the vector conventions: text as text, binary as
    /// upper-case hex, BCD as its nibble string without padding.
    pub fn value(&self) -> Result<String, DecodeError> {
        match self.spec.encoding {
            Encoding::Text(cs) => decode_text(cs, self.data).map_err(|(i, byte)| DecodeError {
                part: Part::Field(self.id),
                offset: self.data_offset + i,
                kind: DecodeErrorKind::BadCharacter { byte },
            }),
            Encoding::Binary => Ok(hex_upper(self.data)),
            Encoding::Bcd => {
                let mut s = hex_upper(self.data);
                if self.units % 2 == 1 {
                    match self.spec.pad {
                        Pad::Left(_) => {
                            s.remove(0);
                        }
                        Pad::Right(_) => {
                            s.pop();
                        }
                    }
                }
                Ok(s)
            }
        }
    }
}

#[inline]
pub(crate) fn bit(id: u8) -> u128 {
    1u128 << (128 - u32::from(id))
}

fn decode_text(cs: Charset, data: &[u8]) -> Result<String, (usize, u8)> {
    data.iter().enumerate().map(|(i, &b)| cs.decode_byte(b).ok_or((i, b))).collect()
}

pub(crate) fn hex_upper(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(data.len() * 2);
    for &b in data {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0F)] as char);
    }
    s
}

fn read_mti(enc: MtiEncoding, cur: &mut Cursor<'_>) -> Result<Mti, DecodeError> {
    let bad = DecodeError { part: Part::Mti, offset: 0, kind: DecodeErrorKind::BadMti };
    let mut digits = [0u8; 4];
    match enc {
        MtiEncoding::Text(cs) => {
            for (d, &b) in digits.iter_mut().zip(cur.take(Part::Mti, 4)?) {
                *d = cs.digit(b).ok_or(bad.clone())?;
            }
        }
        MtiEncoding::Bcd => {
            let raw = cur.take(Part::Mti, 2)?;
            digits = [raw[0] >> 4, raw[0] & 0x0F, raw[1] >> 4, raw[1] & 0x0F];
            if digits.iter().any(|&d| d > 9) {
                return Err(bad);
            }
        }
    }
    Ok(Mti::from_digit_values(digits))
}

fn read_bitmap(enc: BitmapEncoding, cur: &mut Cursor<'_>, part: Part) -> Result<u64, DecodeError> {
    let offset = cur.pos;
    match enc {
        BitmapEncoding::Binary => {
            let raw = cur.take(part, 8)?;
            Ok(u64::from_be_bytes(raw.try_into().expect("8 bytes")))
        }
        BitmapEncoding::Hex(cs) => {
            let raw = cur.take(part, 16)?;
            raw.iter().enumerate().try_fold(0u64, |acc, (i, &b)| {
                let d = cs.hex_digit(b).ok_or(DecodeError {
                    part,
                    offset: offset + i,
                    kind: DecodeErrorKind::BadBitmap,
                })?;
                Ok((acc << 4) | u64::from(d))
            })
        }
    }
}

fn read_length(enc: PrefixEncoding, raw: &[u8]) -> Option<usize> {
    match enc {
        PrefixEncoding::Text(cs) => {
            raw.iter().try_fold(0usize, |acc, &b| Some(acc * 10 + usize::from(cs.digit(b)?)))
        }
        PrefixEncoding::Bcd => raw.iter().try_fold(0usize, |acc, &b| {
            let (hi, lo) = (b >> 4, b & 0x0F);
            (hi <= 9 && lo <= 9).then(|| acc * 100 + usize::from(hi) * 10 + usize::from(lo))
        }),
        PrefixEncoding::Binary => Some(raw.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))),
    }
}
