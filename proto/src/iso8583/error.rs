//! Errors of the ISO 8583 walker and encoder. Every error names the part of the
//! message (MTI, a bitmap, a data element) and the byte offset where it was found.

use std::fmt;

/// A part of a message, as named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The message type indicator.
    Mti,
    /// The primary bitmap.
    PrimaryBitmap,
    /// The secondary bitmap (field 1).
    SecondaryBitmap,
    /// Data element 2–128.
    Field(u8),
    /// Bytes after the last field.
    End,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mti => f.write_str("MTI"),
            Self::PrimaryBitmap => f.write_str("primary bitmap"),
            Self::SecondaryBitmap => f.write_str("secondary bitmap"),
            Self::Field(id) => write!(f, "DE{id}"),
            Self::End => f.write_str("end of message"),
        }
    }
}

/// A message that does not decode under its layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} at byte {offset}: {kind}")]
pub struct DecodeError {
    /// Where the problem is.
    pub part: Part,
    /// Byte offset from the start of the message.
    pub offset: usize,
    /// What the problem is.
    pub kind: DecodeErrorKind,
}

/// What is wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The message ends inside this part.
    #[error("truncated: needs {needed} bytes, {available} left")]
    Truncated {
        /// Bytes the part needs.
        needed: usize,
        /// Bytes left in the message.
        available: usize,
    },
    /// The MTI is not four decimal digits.
    #[error("MTI is not four decimal digits")]
    BadMti,
    /// A hex bitmap holds a character that is not a hex digit.
    #[error("bitmap holds a non-hex character")]
    BadBitmap,
    /// Bit 1 of the secondary bitmap (field 65) announces a tertiary bitmap.
    #[error("tertiary bitmap (bit 65) is not supported")]
    TertiaryBitmap,
    /// The bitmap announces a field the layout does not define.
    #[error("field is present in the bitmap but not defined in the layout")]
    UndefinedField,
    /// A length prefix holds something other than a decimal number.
    #[error("length prefix is not a decimal number")]
    BadLengthPrefix,
    /// A length prefix is over the field's maximum.
    #[error("length {len} is over the field maximum {max}")]
    LengthOverMax {
        /// Length found.
        len: usize,
        /// Field maximum.
        max: usize,
    },
    /// Bytes follow the last field the bitmap announces.
    #[error("{count} bytes after the last field")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A text field holds a byte outside its character set.
    #[error("byte {byte:#04x} is not valid in this field's character set")]
    BadCharacter {
        /// The byte.
        byte: u8,
    },
}

/// A message that cannot be encoded under its layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {kind}")]
pub struct EncodeError {
    /// Which part.
    pub part: Part,
    /// What is wrong.
    pub kind: EncodeErrorKind,
}

/// What is wrong with a value to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// The MTI is not four decimal digits.
    #[error("MTI is not four decimal digits")]
    BadMti,
    /// The field is not 2–128 or is 65 (tertiary bitmap).
    #[error("no such data element (2-128, not 65)")]
    NoSuchField,
    /// The layout does not define this field.
    #[error("not defined in the layout")]
    UndefinedField,
    /// A fixed-length value has the wrong length.
    #[error("length {len}, field is fixed at {expected}")]
    WrongLength {
        /// Length given.
        len: usize,
        /// Fixed length.
        expected: usize,
    },
    /// A variable value is too long.
    #[error("length {len} is over the field maximum {max}")]
    TooLong {
        /// Length given.
        len: usize,
        /// Field maximum.
        max: usize,
    },
    /// A character has no encoding in the field's character set, or a binary or
    /// BCD value is not hex.
    #[error("character {0:?} cannot be encoded in this field")]
    BadCharacter(char),
    /// A binary value has an odd number of hex digits.
    #[error("binary value has an odd number of hex digits")]
    OddHex,
}
