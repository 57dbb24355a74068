//! `mups`, the controller: FO links, routing bank↔node, switchover, REST API and
//! console — and the operator tools that ship with it.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`mups iso decode`, …).
//! - [`iso_tool`]: `mups iso decode`, hex in, JSON out, PAN and track data masked.
#![forbid(unsafe_code)]

pub mod cli;
pub mod iso_tool;
