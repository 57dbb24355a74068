//! The encoder: MTI and field values (by the vector conventions) to message bytes.
//!
//! Used by the simulators and tests to build messages, and by `mups` for the few
//! messages it writes itself (synthetic declines). Routing never re-encodes: it
//! forwards the original bytes.

use super::error::{EncodeError, EncodeErrorKind, Part};
use super::layout::{BitmapEncoding, Encoding, FieldSpec, Layout, MtiEncoding, Pad, PrefixEncoding};
use super::message::bit;
use super::mti::Mti;

/// Where a field's bytes come from, for [`Layout::encode_parts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldSource<'a> {
    /// A value by the vector conventions, encoded by the layout.
    Value(&'a str),
    /// The field's wire bytes (length prefix and data) from a message under the same
    /// layout, copied as they are.
    Wire(&'a [u8]),
}

impl Layout {
    /// Appends the message `mti` + `fields` to `out`. Field values follow the
    /// vector conventions: text as text, binary as hex, BCD as its digit (nibble)
    /// string. Fields may come in any order; a field given twice keeps the last value.
    /// On error `out` is left as it was.
    pub fn encode<'v>(
        &self,
        mti: &str,
        fields: impl IntoIterator<Item = (u8, &'v str)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_inner(mti, fields, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// [`Layout::encode`] into a new vector.
    pub fn encode_to_vec<'v>(
        &self,
        mti: &str,
        fields: impl IntoIterator<Item = (u8, &'v str)>,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(mti, fields, &mut out)?;
        Ok(out)
    }

    /// Like [`Layout::encode`], but each field is either a value or its wire bytes
    /// (length prefix and data, as [`FieldRef::wire`](super::FieldRef) gives them for
    /// a message under the same layout), copied verbatim. This is how a responder
    /// echoes a request's fields without decoding them.
    pub fn encode_parts<'v>(
        &self,
        mti: &str,
        fields: impl IntoIterator<Item = (u8, FieldSource<'v>)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_sources(mti, fields, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner<'v>(
        &self,
        mti: &str,
        fields: impl IntoIterator<Item = (u8, &'v str)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.encode_sources(mti, fields.into_iter().map(|(id, v)| (id, FieldSource::Value(v))), out)
    }

    fn encode_sources<'v>(
        &self,
        mti: &str,
        fields: impl IntoIterator<Item = (u8, FieldSource<'v>)>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let mti: Mti =
            mti.parse().map_err(|_| EncodeError { part: Part::Mti, kind: EncodeErrorKind::BadMti })?;
        let mut values: [Option<FieldSource<'v>>; 129] = [None; 129];
        let mut bitmap = 0u128;
        for (id, value) in fields {
            if !(2..=128).contains(&id) || id == 65 {
                return Err(EncodeError { part: Part::Field(id), kind: EncodeErrorKind::NoSuchField });
            }
            values[usize::from(id)] = Some(value);
            bitmap |= bit(id);
        }
        if bitmap & ((1u128 << 64) - 1) != 0 {
            bitmap |= bit(1);
        }

        match self.mti_encoding() {
            MtiEncoding::Text(cs) => out.extend(mti.digits().map(|d| cs.digit_byte(d))),
            MtiEncoding::Bcd => {
                let d = mti.digits();
                out.extend([(d[0] << 4) | d[1], (d[2] << 4) | d[3]]);
            }
        }
        write_bitmap(self.bitmap_encoding(), (bitmap >> 64) as u64, out);
        if bitmap & bit(1) != 0 {
            write_bitmap(self.bitmap_encoding(), bitmap as u64, out);
        }
        for (id, value) in values.iter().enumerate().skip(2) {
            let Some(value) = value else { continue };
            let id = id as u8;
            let spec = self
                .field(id)
                .ok_or(EncodeError { part: Part::Field(id), kind: EncodeErrorKind::UndefinedField })?;
            match value {
                FieldSource::Value(v) => {
                    encode_field(spec, v, out).map_err(|kind| EncodeError { part: Part::Field(id), kind })?;
                }
                FieldSource::Wire(bytes) => out.extend_from_slice(bytes),
            }
        }
        Ok(())
    }
}

fn write_bitmap(enc: BitmapEncoding, map: u64, out: &mut Vec<u8>) {
    match enc {
        BitmapEncoding::Binary => out.extend(map.to_be_bytes()),
        BitmapEncoding::Hex(cs) => {
            out.extend((0..16).rev().map(|i| cs.digit_byte((map >> (4 * i)) as u8 & 0xF)))
        }
    }
}

fn hex_nibble(c: char) -> Result<u8, EncodeErrorKind> {
    c.to_digit(16).map(|d| d as u8).ok_or(EncodeErrorKind::BadCharacter(c))
}

fn encode_field(spec: &FieldSpec, value: &str, out: &mut Vec<u8>) -> Result<(), EncodeErrorKind> {
    let units = match spec.encoding {
        Encoding::Text(_) => value.chars().count(),
        Encoding::Binary => {
            if value.len() % 2 == 1 {
                return Err(EncodeErrorKind::OddHex);
            }
            value.len() / 2
        }
        Encoding::Bcd => value.len(),
    };
    let max = usize::from(spec.max_len);
    match spec.prefix {
        None if units != max => return Err(EncodeErrorKind::WrongLength { len: units, expected: max }),
        Some(_) if units > max => return Err(EncodeErrorKind::TooLong { len: units, max }),
        None => {}
        Some(prefix) => write_length(prefix.encoding, prefix.bytes, units, out),
    }
    match spec.encoding {
        Encoding::Text(cs) => {
            for c in value.chars() {
                out.push(cs.encode_char(c).ok_or(EncodeErrorKind::BadCharacter(c))?);
            }
        }
        Encoding::Binary => {
            let mut chars = value.chars();
            while let (Some(hi), Some(lo)) = (chars.next(), chars.next()) {
                out.push((hex_nibble(hi)? << 4) | hex_nibble(lo)?);
            }
        }
        Encoding::Bcd => {
            let mut nibbles = Vec::with_capacity(units + 1);
            if units % 2 == 1 {
                if let Pad::Left(p) = spec.pad {
                    nibbles.push(p);
                }
            }
            for c in value.chars() {
                nibbles.push(hex_nibble(c)?);
            }
            if units % 2 == 1 {
                if let Pad::Right(p) = spec.pad {
                    nibbles.push(p);
                }
            }
            out.extend(nibbles.chunks_exact(2).map(|n| (n[0] << 4) | n[1]));
        }
    }
    Ok(())
}

fn write_length(enc: PrefixEncoding, bytes: u8, len: usize, out: &mut Vec<u8>) {
    let bytes = u32::from(bytes);
    match enc {
        PrefixEncoding::Text(cs) => {
            out.extend((0..bytes).rev().map(|i| cs.digit_byte((len / 10usize.pow(i) % 10) as u8)));
        }
        PrefixEncoding::Bcd => out.extend((0..bytes).rev().map(|i| {
            let pair = len / 100usize.pow(i) % 100;
            (((pair / 10) as u8) << 4) | (pair % 10) as u8
        })),
        PrefixEncoding::Binary => out.extend((0..bytes).rev().map(|i| (len >> (8 * i)) as u8)),
    }
}
