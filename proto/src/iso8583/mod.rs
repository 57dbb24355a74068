//! ISO 8583 messages: layouts, the zero-copy walker, the encoder, and what routing
//! needs (MTI roles and pairing, matching keys, network management, masking).
//!
//! # Layout
//!
//! - [`charset`]: ASCII and EBCDIC (cp037) tables.
//! - [`layout`]: field definitions in pyiso8583's vocabulary, the four built-in
//!   layouts, per-bank overrides.
//! - [`message`]: [`Message`], the walker, and [`FieldRef`], one present field.
//! - `encode`: [`Layout::encode`], values to bytes.
//! - [`mti`]: [`Mti`], roles and request/response pairing.
//! - [`matching`]: [`MatchKeyConfig`] and [`MatchKey`].
//! - [`netmgmt`]: sign-on/sign-off/echo classification, [`ResponseCode`].
//! - [`mask`]: masked rendering for logs.
//! - [`respond`]: responses built from their request (node simulator replies,
//!   `mups`'s synthetic declines).
//! - [`error`]: [`DecodeError`] and [`EncodeError`], each naming the part and offset.

pub mod charset;
mod encode;
pub mod error;
pub mod layout;
pub mod mask;
pub mod matching;
pub mod message;
pub mod mti;
pub mod netmgmt;
pub mod respond;

pub use charset::Charset;
pub use encode::FieldSource;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, Part};
pub use layout::{BUILTIN_LAYOUTS, FieldSpec, Layout, LayoutError, RawFieldSpec};
pub use matching::{MatchKey, MatchKeyConfig};
pub use message::{FieldRef, Message};
pub use mti::{Mti, Role};
pub use netmgmt::{NetMgmt, NetMgmtCodes, ResponseCode};
