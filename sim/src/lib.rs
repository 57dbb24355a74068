//! Simulators an operator needs in staging, and that our tests and benchmarks use.
//!
//! # Layout
//!
//! - `fo_node`: the FO node simulator (speaks the FO link protocol to `mups`).
//! - `bank`: the bank simulator / load generator (speaks ISO 8583 to `pups`).
#![forbid(unsafe_code)]

pub mod bank;
