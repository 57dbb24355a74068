//! Simulators an operator needs in staging, and that our tests and benchmarks use.
//!
//! # Layout
//!
//! - [`fo_node`]: the FO node simulator (speaks the FO link protocol to `mups`);
//!   library API ([`fo_node::start`]) and the `fo-sim` binary.
//! - [`bank`]: the bank simulator / load generator (speaks ISO 8583 to `pups`);
//!   library API ([`bank::run`]) and the `bank-sim` binary; `bank::loopback` is a fast
//!   responder that speaks a bank's framing directly (the benchmark's reference backend).
#![forbid(unsafe_code)]

pub mod bank;
mod civil;
pub mod fo_node;
