//! `mups`, the controller: FO links, routing bank↔node, switchover, REST API and
//! console — and the operator tools that ship with it.
//!
//! # Layout
//!
//! - [`runtime`]: starts everything below; [`runtime::start`] for tests.
//! - [`driver`]: the task that owns `proto::router::Router` and carries out its actions.
//! - [`node_link`]: one FO node link (HELLO, heartbeats, DATA, reconnect).
//! - [`local_link`]: the local link to `pups` (control and data channels).
//! - [`link`]: what both links share (codec, HELLO exchange, loss-free outbox, backoff).
//! - [`appliance`]: the appliance pair: role from keepalived, the peer link's
//!   replication, the planned switchover on either side.
//! - [`peer`]: the peer link to the twin's `mups`.
//! - [`auth`]: access control: users, roles, sessions, API tokens, login throttling, the
//!   hash-chained audit log, and the axum guard and routes for them.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and the `/api/v1` routes (state,
//!   banks, nodes, switch jobs, maintenance flags, the event stream).
//! - [`tls`]: rustls for the management listener; `mups tls self-signed`.
//! - [`persist`]: routes, admin intent and maintenance flags kept across restarts.
//! - [`metrics`]: the Prometheus metric set.
//! - [`switching`]: FO switchover jobs (requests, per-bank results) around
//!   `proto::switchover`, driven by [`driver`].
//! - [`cli`]: the command line (`mups run`, `mups check-config`, `mups iso decode`,
//!   `mups keepalived render`, `mups user add|list`, `mups audit verify`).
//! - [`iso_tool`]: `mups iso decode`, hex in, JSON out, PAN and track data masked.
//! - [`keepalived`]: `keepalived.conf` rendered from `[vrrp]` (askama), checked with
//!   `keepalived --config-test`, installed atomically.
//! - [`vrrp`]: keepalived's notify FIFO (typed state-change events) and the track
//!   file through which `mups` puts its appliance in FAULT.
#![forbid(unsafe_code)]

pub mod appliance;
pub mod auth;
pub mod cli;
pub mod driver;
pub mod http;
pub mod iso_tool;
pub mod keepalived;
pub mod link;
pub mod local_link;
pub mod metrics;
pub mod node_link;
pub mod peer;
pub mod persist;
pub mod runtime;
pub mod switching;
pub mod tls;
pub mod vrrp;
