//! Message layouts: how the MTI, the bitmaps and each data element are encoded.
//!
//! A layout is written in pyiso8583's spec vocabulary (`data_enc`, `len_enc`,
//! `len_type`, `max_len`, `len_count`, `left_pad`/`right_pad`), the same vocabulary
//! as the independent test vectors, so a bank's field table can be cross-checked
//! against pyiso8583 directly. Four layouts are built in (see [`BUILTIN_LAYOUTS`]);
//! configuration overrides single fields on top of one of them
//! ([`Layout::with_overrides`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::charset::Charset;

/// Names of the built-in layouts.
pub const BUILTIN_LAYOUTS: [&str; 4] = ["iso87-ascii", "iso87-binary", "iso87-bcd", "iso87-ebcdic"];

const BUILTIN_JSON: [&str; 4] = [
    include_str!("layouts/iso87-ascii.json"),
    include_str!("layouts/iso87-binary.json"),
    include_str!("layouts/iso87-bcd.json"),
    include_str!("layouts/iso87-ebcdic.json"),
];

/// How a data element's content is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Text in a character set; the value is the text.
    Text(Charset),
    /// Raw bytes; the value is upper-case hex, two characters a byte.
    Binary,
    /// Packed nibbles (BCD); the value is the nibble string without padding.
    /// Lengths count nibbles.
    Bcd,
}

/// How the length prefix of a variable field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixEncoding {
    /// Decimal digits in a character set, one byte each.
    Text(Charset),
    /// Unsigned big-endian binary.
    Binary,
    /// Packed decimal, two digits a byte.
    Bcd,
}

/// The length prefix of a variable field: its encoding and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefix {
    /// How the length is written.
    pub encoding: PrefixEncoding,
    /// Bytes the prefix takes on the wire (pyiso8583's `len_type`).
    pub bytes: u8,
}

impl LengthPrefix {
    /// The largest length this prefix can express.
    pub fn max_value(&self) -> usize {
        let bytes = u32::from(self.bytes);
        match self.encoding {
            PrefixEncoding::Text(_) => 10usize.pow(bytes) - 1,
            PrefixEncoding::Bcd => 10usize.pow(2 * bytes) - 1,
            PrefixEncoding::Binary => (1usize << (8 * bytes)) - 1,
        }
    }
}

/// Where the filler nibble goes when a BCD value has an odd number of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// Filler first (fixed numerics: `301` → `03 01`).
    Left(u8),
    /// Filler last (variable numerics: `123` → `12 3F`).
    Right(u8),
}

/// The definition of one data element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Content encoding.
    pub encoding: Encoding,
    /// `None` for a fixed-length field.
    pub prefix: Option<LengthPrefix>,
    /// Fixed length, or maximum length of a variable field, in bytes (nibbles for BCD).
    pub max_len: u16,
    /// Filler nibble position for odd-length BCD values.
    pub pad: Pad,
}

impl FieldSpec {
    /// Bytes on the wire for a content length in this field's units.
    #[inline]
    pub fn wire_len(&self, units: usize) -> usize {
        match self.encoding {
            Encoding::Bcd => units.div_ceil(2),
            _ => units,
        }
    }
}

/// How the MTI is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtiEncoding {
    /// Four characters.
    Text(Charset),
    /// Two bytes of packed decimal.
    Bcd,
}

/// How the bitmaps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapEncoding {
    /// Eight raw bytes per bitmap.
    Binary,
    /// Sixteen hex characters per bitmap.
    Hex(Charset),
}

/// A complete message layout: MTI, bitmaps and data elements 2–128.
#[derive(Clone, PartialEq, Eq)]
pub struct Layout {
    name: String,
    mti: MtiEncoding,
    bitmap: BitmapEncoding,
    /// Indexed by field number; 0, 1 and 65 (bitmaps) are never set.
    fields: [Option<FieldSpec>; 129],
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layout")
            .field("name", &self.name)
            .field("mti", &self.mti)
            .field("bitmap", &self.bitmap)
            .field("fields", &self.fields.iter().filter(|s| s.is_some()).count())
            .finish()
    }
}

/// One field definition in pyiso8583's vocabulary, as found in layout files and in
/// configuration overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFieldSpec {
    /// `ascii`, `cp037` (EBCDIC) or `b` (binary; BCD with `len_count = "nibbles"`).
    pub data_enc: String,
    /// Length prefix encoding: `ascii`, `cp037`, `b` (binary) or `bcd`.
    #[serde(default = "default_len_enc")]
    pub len_enc: String,
    /// Bytes in the length prefix; 0 for a fixed-length field.
    #[serde(default)]
    pub len_type: u8,
    /// Fixed or maximum length, in bytes (nibbles with `len_count = "nibbles"`).
    pub max_len: u16,
    /// `bytes` (default) or `nibbles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len_count: Option<String>,
    /// Filler nibble for odd-length BCD, written first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_pad: Option<String>,
    /// Filler nibble for odd-length BCD, written last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_pad: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

fn default_len_enc() -> String {
    "ascii".to_owned()
}

/// A layout definition that cannot be used. Names the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// No built-in layout has this name.
    #[error("unknown layout {0:?} (built in: {list})", list = BUILTIN_LAYOUTS.join(", "))]
    UnknownLayout(String),
    /// The layout document is not valid JSON of the expected shape.
    #[error("layout {layout}: {message}")]
    Syntax {
        /// Layout name.
        layout: String,
        /// Parser message.
        message: String,
    },
    /// A field key is not `t`, `p`, `h` or a number 1–128.
    #[error("layout {layout}: field key {key:?} is not t, p, h or 1-128")]
    BadFieldKey {
        /// Layout name.
        layout: String,
        /// The key as written.
        key: String,
    },
    /// A field definition is inconsistent.
    #[error("layout {layout}: field {field}: {reason}")]
    BadField {
        /// Layout name.
        layout: String,
        /// The field key as written (`t`, `p`, `1`, `2`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl Layout {
    /// A built-in layout by name (see [`BUILTIN_LAYOUTS`]). Parsed once, then shared.
    pub fn builtin(name: &str) -> Result<&'static Self, LayoutError> {
        static PARSED: OnceLock<Vec<Layout>> = OnceLock::new();
        let all = PARSED.get_or_init(|| {
            BUILTIN_LAYOUTS
                .iter()
                .zip(BUILTIN_JSON)
                .map(|(name, json)| Self::from_json(name, json).expect("built-in layouts are valid (tested)"))
                .collect()
        });
        all.iter().find(|l| l.name == name).ok_or_else(|| LayoutError::UnknownLayout(name.to_owned()))
    }

    /// Parses a layout document: a JSON object mapping `t`, `p`, `1`…`128` (and an
    /// ignored `h`) to field definitions.
    pub fn from_json(name: &str, json: &str) -> Result<Self, LayoutError> {
        let raw: BTreeMap<String, RawFieldSpec> = serde_json::from_str(json)
            .map_err(|e| LayoutError::Syntax { layout: name.to_owned(), message: e.to_string() })?;
        let t = raw.get("t").ok_or_else(|| bad(name, "t", "missing MTI definition"))?;
        let p = raw.get("p").ok_or_else(|| bad(name, "p", "missing primary bitmap definition"))?;
        let mut layout = Self {
            name: name.to_owned(),
            mti: parse_mti(name, t)?,
            bitmap: parse_bitmap(name, "p", p)?,
            fields: [None; 129],
        };
        if let Some(secondary) = raw.get("1") {
            if parse_bitmap(name, "1", secondary)? != layout.bitmap {
                return Err(bad(name, "1", "secondary bitmap encoded unlike the primary"));
            }
        }
        let fields = raw.iter().filter(|(k, _)| !matches!(k.as_str(), "t" | "p" | "h" | "1" | "65"));
        let errors = layout.apply(fields);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(layout),
        }
    }

    /// A copy of this layout with single fields redefined, named `name`. Every bad
    /// override is reported, not just the first.
    pub fn with_overrides(
        &self,
        name: &str,
        overrides: &BTreeMap<String, RawFieldSpec>,
    ) -> Result<Self, Vec<LayoutError>> {
        let mut layout = self.clone();
        layout.name = name.to_owned();
        let errors = layout.apply(overrides.iter());
        if errors.is_empty() { Ok(layout) } else { Err(errors) }
    }

    fn apply<'a>(
        &mut self,
        fields: impl Iterator<Item = (&'a String, &'a RawFieldSpec)>,
    ) -> Vec<LayoutError> {
        let mut errors = Vec::new();
        for (key, raw) in fields {
            let id = match key.parse::<u8>() {
                Ok(id @ 2..=128) if id != 65 => id,
                _ => {
                    errors.push(LayoutError::BadFieldKey { layout: self.name.clone(), key: key.clone() });
                    continue;
                }
            };
            match parse_field(&self.name, key, raw) {
                Ok(spec) => self.fields[usize::from(id)] = Some(spec),
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// The layout's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the MTI is written.
    pub fn mti_encoding(&self) -> MtiEncoding {
        self.mti
    }

    /// How the bitmaps are written.
    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap
    }

    /// The definition of data element `id` (2–128), if the layout has one.
    #[inline]
    pub fn field(&self, id: u8) -> Option<&FieldSpec> {
        self.fields.get(usize::from(id))?.as_ref()
    }
}

fn bad(layout: &str, field: &str, reason: impl Into<String>) -> LayoutError {
    LayoutError::BadField { layout: layout.to_owned(), field: field.to_owned(), reason: reason.into() }
}

fn charset_of(enc: &str) -> Option<Charset> {
    match enc {
        "ascii" => Some(Charset::Ascii),
        "cp037" => Some(Charset::Ebcdic),
        _ => None,
    }
}

fn nibbles(raw: &RawFieldSpec) -> Result<bool, String> {
    match raw.len_count.as_deref() {
        None | Some("bytes") => Ok(false),
        Some("nibbles") => Ok(true),
        Some(other) => Err(format!("len_count {other:?} is not bytes or nibbles")),
    }
}

fn parse_mti(layout: &str, raw: &RawFieldSpec) -> Result<MtiEncoding, LayoutError> {
    match (raw.data_enc.as_str(), raw.max_len, raw.len_type) {
        ("b", 2, 0) => Ok(MtiEncoding::Bcd),
        (enc, 4, 0) => charset_of(enc)
            .map(MtiEncoding::Text)
            .ok_or_else(|| bad(layout, "t", format!("unsupported data_enc {enc:?}"))),
        _ => Err(bad(layout, "t", "MTI must be fixed: 4 characters, or 2 bytes with data_enc b")),
    }
}

fn parse_bitmap(layout: &str, key: &str, raw: &RawFieldSpec) -> Result<BitmapEncoding, LayoutError> {
    match (raw.data_enc.as_str(), raw.max_len, raw.len_type) {
        ("b", 8, 0) => Ok(BitmapEncoding::Binary),
        (enc, 16, 0) => charset_of(enc)
            .map(BitmapEncoding::Hex)
            .ok_or_else(|| bad(layout, key, format!("unsupported data_enc {enc:?}"))),
        _ => Err(bad(layout, key, "bitmap must be fixed: 8 bytes with data_enc b, or 16 hex characters")),
    }
}

fn parse_pad(value: Option<&str>) -> Result<Option<u8>, String> {
    match value {
        None | Some("") => Ok(None),
        Some(s) if s.len() == 1 => {
            u8::from_str_radix(s, 16).map(Some).map_err(|_| format!("pad {s:?} is not one hex nibble"))
        }
        Some(s) => Err(format!("pad {s:?} is not one hex nibble")),
    }
}

fn parse_field(layout: &str, key: &str, raw: &RawFieldSpec) -> Result<FieldSpec, LayoutError> {
    let err = |reason: String| bad(layout, key, reason);
    let in_nibbles = nibbles(raw).map_err(err)?;
    let encoding = match (raw.data_enc.as_str(), in_nibbles) {
        ("b", true) => Encoding::Bcd,
        ("b", false) => Encoding::Binary,
        (enc, false) => {
            Encoding::Text(charset_of(enc).ok_or_else(|| err(format!("unsupported data_enc {enc:?}")))?)
        }
        (enc, true) => return Err(err(format!("len_count nibbles needs data_enc b, not {enc:?}"))),
    };
    let prefix = match raw.len_type {
        0 => None,
        bytes @ 1..=4 => {
            let encoding = match raw.len_enc.as_str() {
                "b" => PrefixEncoding::Binary,
                "bcd" => PrefixEncoding::Bcd,
                enc => PrefixEncoding::Text(
                    charset_of(enc).ok_or_else(|| err(format!("unsupported len_enc {enc:?}")))?,
                ),
            };
            Some(LengthPrefix { encoding, bytes })
        }
        n => return Err(err(format!("len_type {n} is over 4"))),
    };
    if raw.max_len == 0 {
        return Err(err("max_len is 0".to_owned()));
    }
    if let Some(prefix) = prefix {
        if usize::from(raw.max_len) > prefix.max_value() {
            return Err(err(format!(
                "max_len {} does not fit a {}-byte length prefix (largest {})",
                raw.max_len,
                prefix.bytes,
                prefix.max_value()
            )));
        }
    }
    let left = parse_pad(raw.left_pad.as_deref()).map_err(err)?;
    let right = parse_pad(raw.right_pad.as_deref()).map_err(err)?;
    let pad = match (left, right) {
        (Some(_), Some(_)) => return Err(err("both left_pad and right_pad given".to_owned())),
        (None, Some(n)) => Pad::Right(n),
        (Some(n), None) => Pad::Left(n),
        // pyiso8583 refuses odd BCD without a pad; we pick the common numeric filler.
        (None, None) => Pad::Left(0),
    };
    Ok(FieldSpec { encoding, prefix, max_len: raw.max_len, pad })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in BUILTIN_LAYOUTS {
            let layout = Layout::builtin(name).unwrap();
            assert_eq!(layout.name(), name);
            assert!(layout.field(2).is_some());
            assert!(layout.field(65).is_none());
        }
        assert_eq!(Layout::builtin("iso87-bcd").unwrap().mti_encoding(), MtiEncoding::Bcd);
        assert!(matches!(Layout::builtin("nope"), Err(LayoutError::UnknownLayout(_))));
    }

    #[test]
    fn overrides_replace_single_fields_and_report_every_error() {
        let base = Layout::builtin("iso87-ascii").unwrap();
        let mut over = BTreeMap::new();
        over.insert(
            "48".to_owned(),
            RawFieldSpec {
                data_enc: "ascii".into(),
                len_enc: "ascii".into(),
                len_type: 2,
                max_len: 50,
                len_count: None,
                left_pad: None,
                right_pad: None,
                desc: None,
            },
        );
        let bank = base.with_overrides("bank-a", &over).unwrap();
        assert_eq!(bank.field(48).unwrap().max_len, 50);
        assert_eq!(bank.field(2), base.field(2));

        let mut wrong = over.clone();
        wrong.get_mut("48").unwrap().max_len = 100; // does not fit LL
        wrong.insert("x".into(), over["48"].clone());
        let errors = base.with_overrides("bank-b", &wrong).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
