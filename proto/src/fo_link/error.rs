//! Errors of the FO link codec. Body errors name the message kind and the field
//! being read (`DATA.bank_id`), so a log line says where a peer went wrong.
//!
//! Every decode error means the peer speaks something we do not understand: the
//! receiver closes the link with the error in its log. None is ever skipped.

use super::message::FoKind;

/// A frame that cannot be read, or a message that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FoLinkError {
    /// The length field cannot even hold the version and type bytes.
    #[error("frame length {0} is below the minimum 2 (version and type)")]
    BadLength(u32),
    /// The length field is over the configured maximum.
    #[error("frame length {len} is over the maximum {max}")]
    TooLarge {
        /// Length declared (bytes after the length field).
        len: u64,
        /// Maximum.
        max: usize,
    },
    /// The version byte is not one this codec speaks.
    #[error("unsupported FO link version {0}")]
    UnsupportedVersion(u8),
    /// The message type byte is not one this version defines.
    #[error("unknown FO link message type {0:#04x}")]
    UnknownType(u8),
    /// [`decode`](super::decode) was given less than one whole frame.
    #[error("buffer of {available} bytes holds no whole frame")]
    Incomplete {
        /// Bytes given.
        available: usize,
    },
    /// [`decode`](super::decode) was given more than one frame's bytes.
    #[error("buffer of {buffer} bytes holds a frame of {frame} bytes and more")]
    ExtraBytes {
        /// Bytes the frame takes.
        frame: usize,
        /// Bytes given.
        buffer: usize,
    },
    /// The body ends inside a field.
    #[error("{kind}.{field}: truncated, needs {needed} bytes, {available} left")]
    Truncated {
        /// Message being read.
        kind: FoKind,
        /// Field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// Bytes follow the last field of the body.
    #[error("{kind}: {count} bytes after the last field")]
    TrailingBytes {
        /// Message read.
        kind: FoKind,
        /// How many.
        count: usize,
    },
    /// An enumerated field holds a value with no meaning.
    #[error("{kind}.{field}: invalid value {value}")]
    BadEnum {
        /// Message being read.
        kind: FoKind,
        /// Field being read.
        field: &'static str,
        /// Value found.
        value: u8,
    },
    /// A flags field sets bits this version does not define.
    #[error("{kind}.{field}: unknown flag bits {bits:#06x}")]
    UnknownFlags {
        /// Message being read.
        kind: FoKind,
        /// Field being read.
        field: &'static str,
        /// The undefined bits that are set.
        bits: u16,
    },
    /// A string field is not UTF-8.
    #[error("{kind}.{field}: invalid UTF-8")]
    InvalidUtf8 {
        /// Message being read.
        kind: FoKind,
        /// Field being read.
        field: &'static str,
    },
    /// A value to encode is longer than its length prefix can say (strings
    /// 65 535 bytes, lists 65 535 items, blobs and whole frames 4 GiB).
    #[error("{kind}.{field}: length {len} is over the wire maximum {max}")]
    TooLong {
        /// Message being written.
        kind: FoKind,
        /// Field being written (`frame` for the whole frame).
        field: &'static str,
        /// Length given.
        len: usize,
        /// Largest the prefix can hold.
        max: usize,
    },
}
