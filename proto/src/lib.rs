//! Wire codecs and sans-IO state machines for PUPS/MUPS.
//!
//! Nothing in this crate does I/O or reads the clock: codecs take bytes and return
//! values or actions, state machines take events and `now`. The `pups` and `mups`
//! crates drive them over real sockets; tests drive them with virtual time.
//!
//! # Layout
//!
//! - [`config`]: the appliance configuration file (TOML), shared by `pups` and `mups`,
//!   validated with every problem reported at once.
//! - [`frame`]: ISO 8583 length-header framing (binary, ASCII, hex and BCD lengths,
//!   TPDU and fixed headers, ETX trailer, keep-alive frames), as a stateless
//!   `check`/`encode` pair that any buffer type can drive.
//! - [`router`]: the sans-IO router of `mups`: where each message goes, requests in
//!   flight both ways, timeouts, late and unmatched responses, session application state.
//! - [`appliance_switch`]: the planned appliance switchover (sessions handed to the
//!   twin, VIP following), both sides as sans-IO state machines.
//! - [`peer_link`]: the link between the two appliances' `mups` (replicated admin
//!   state, switchover messages, snapshots, router tables).
//! - [`switchover`]: one bank's FO switchover (sync, context hand-over, deactivate,
//!   activate; abort and roll back), as a sans-IO state machine.
//! - [`node_health`]: FO node up/down history for automatic failover and failback
//!   (flap detection, stability before failback).
//! - [`iso8583`]: message layouts (the four built-ins and per-bank overrides), the
//!   zero-copy field walker, the encoder, MTI classification and pairing, matching
//!   keys, network-management classification and masked display.
//! - [`fo_link`]: the FO link protocol between `mups` and the FO nodes (bank
//!   traffic, heartbeats, bank state, switchover commands): `check`/`decode` over
//!   `Bytes`, `encode` to a `Vec`, and a streaming decoder over `BytesMut`.
//! - [`snapshot`]: one bank TCP session's checkpoint (kernel TCP state from
//!   `TCP_REPAIR`, socket options, framing and sign-on state) and the batch shipped
//!   to the twin appliance, with a versioned binary codec.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod appliance_switch;
pub mod config;
pub mod fo_link;
pub mod frame;
pub mod iso8583;
pub mod node_health;
pub mod peer_link;
pub mod router;
pub mod snapshot;
pub mod switchover;
