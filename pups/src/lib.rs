//! `pups`, the edge proxy: owns the bank TCP sessions, frames their ISO 8583
//! streams, and (later) checkpoints and restores the sockets for appliance
//! switchover. Protocol logic lives in `proto`; this crate does the I/O.
//!
//! # Layout
//!
//! - [`codec`]: [`codec::BankCodec`], the tokio codec wrapping `proto::frame` for a
//!   bank session's byte stream.

pub mod codec;
