//! The FO node simulator: a stand-in for a card switch front-office node, speaking
//! the FO link protocol (`docs/fo-link-protocol.md`) to `mups`.
//!
//! `mups` cannot be tested, staged or demonstrated without nodes on the other end
//! of its links, and real nodes cannot be told to decline a card, stall, lose a
//! message or refuse a switchover on demand. This node can: it listens for `mups`
//! (several links at once, e.g. twin appliances), answers `HELLO` and heartbeats,
//! answers the banks' ISO 8583 requests by ordered [rules](rules::Rule), originates
//! requests and echo tests to banks, takes part in switchovers (in-flight requests
//! handed over as `CONTEXT`s), and misbehaves through [test hooks](Hooks). Every
//! event is counted in [`Stats`], so tests assert on counters, not on timing.
//! Usage, configuration and the binary's control interface:
//! `docs/fo-node-sim.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sim::fo_node::{self, BankConfig, FoNodeConfig};
//!
//! let mut cfg = FoNodeConfig::default(); // node A on 127.0.0.1:0
//! cfg.banks.insert("bank-1".into(), BankConfig::new("iso87-ascii"));
//! cfg.rules.push("pan=400000,code=05".parse()?);
//! let node = fo_node::start(cfg).await?;
//! println!("node A listening on {}", node.local_addr());
//! // … point mups at it …
//! println!("{}", serde_json::to_string(&node.stats())?);
//! node.die().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`FoNodeConfig`] (serde, JSON or TOML files), banks, origination,
//!   [`Hooks`], validation.
//! - [`rules`]: response rules and their compact command-line form.
//! - [`respond`]: building responses (echoed fields, DE38/DE39) and originated
//!   requests.
//! - [`stats`]: the counters.
//! - [`control`]: the line-based control commands the binary reads from stdin or a
//!   TCP port.
//! - `node`: state and message handling (links, traffic, in-flight tables,
//!   origination).
//! - `switchover`: `SYNC_BEGIN`, `CONTEXT`, `ACTIVATE`, `DEACTIVATE`, and the
//!   command hooks.
//! - `link`: listener, per-link reader, writer and heartbeat tasks.

#![warn(missing_docs)]

pub mod config;
pub mod control;
mod link;
mod node;
pub mod respond;
pub mod rules;
pub mod stats;
mod switchover;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{BankConfig, CommandKind, ConfigError, FoNodeConfig, Hooks, OriginateConfig};
pub use node::{BankStatus, InFlightInfo, LinkInfo, OriginateError, SessionInfo, SyncInfo, SyncSide};
pub use respond::OriginKind;
pub use rules::{Action, Rule};
pub use stats::Stats;

use node::Shared;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts a node: validates `cfg`, binds its listen address (port 0 picks one) and
/// runs it on the current tokio runtime until [`FoNodeHandle::die`] or until the
/// handle is dropped.
pub async fn start(cfg: FoNodeConfig) -> Result<FoNodeHandle, StartError> {
    let layouts = cfg.resolve()?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.listen, source })?;
    let originate = cfg.originate.clone();
    let shared = Arc::new(Shared::new(cfg, layouts));
    tracing::info!(node = %shared.cfg.node_id, %addr, banks = ?shared.bank_ids(), "FO node simulator listening");
    let listener = tokio::spawn(link::accept_loop(Arc::clone(&shared), listener));
    for o in originate.into_iter().filter(|o| o.rate > 0.0 || o.echo_interval_ms.is_some()) {
        tokio::spawn(originate_loop(Arc::clone(&shared), o));
    }
    Ok(FoNodeHandle { shared, addr, listener: Mutex::new(Some(listener)) })
}

/// Sends the configured requests and echo tests to one bank until the node dies.
/// A tick with no link, or while the bank is not served, is skipped (and counted).
async fn originate_loop(shared: Arc<Shared>, cfg: OriginateConfig) {
    use std::time::Duration;
    use tokio::time::{MissedTickBehavior, interval};

    let period = |secs: f64| Duration::from_secs_f64(secs.max(1e-6));
    let mut requests = interval(period(if cfg.rate > 0.0 { 1.0 / cfg.rate } else { 3600.0 }));
    requests.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut echoes = interval(Duration::from_millis(cfg.echo_interval_ms.unwrap_or(3_600_000).max(1)));
    echoes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    loop {
        let want_requests = cfg.rate > 0.0 && cfg.count.is_none_or(|n| sent < n);
        tokio::select! {
            () = shared.token.cancelled() => return,
            _ = requests.tick(), if want_requests => {
                if shared.origination_paused() {
                    continue;
                }
                if shared.originate(&cfg.bank, OriginKind::Request).is_ok() {
                    sent += 1;
                }
            }
            _ = echoes.tick(), if cfg.echo_interval_ms.is_some() => {
                if !shared.origination_paused() {
                    let _ = shared.originate(&cfg.bank, OriginKind::Echo);
                }
            }
        }
    }
}

/// A running node: its address, counters, state, and the levers tests and the
/// control interface pull. Dropping it stops the node.
#[derive(Debug)]
pub struct FoNodeHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl FoNodeHandle {
    /// The address the node listens on (the actual port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.shared.cfg.node_id
    }

    /// The configuration the node was started with (rules and hooks as at start).
    pub fn config(&self) -> &FoNodeConfig {
        &self.shared.cfg
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Whether the node is still running (not dead).
    pub fn is_running(&self) -> bool {
        !self.shared.token.is_cancelled()
    }

    /// The open links (handshake done).
    pub fn links(&self) -> Vec<LinkInfo> {
        self.shared.links()
    }

    /// The state of one bank, or `None` if the node does not serve it.
    pub fn bank_status(&self, bank: &str) -> Option<BankStatus> {
        self.shared.bank_status(bank)
    }

    /// The state of every bank the node serves.
    pub fn banks(&self) -> Vec<BankStatus> {
        self.shared.bank_ids().iter().filter_map(|b| self.shared.bank_status(b)).collect()
    }

    /// Every request in flight (received and not answered yet, or originated and
    /// not answered yet), without card data.
    pub fn inflight(&self) -> Vec<InFlightInfo> {
        self.shared.inflight()
    }

    /// The response rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        self.shared.rules()
    }

    /// Replaces the response rules (applies to requests received from now on).
    /// Fails, changing nothing, if a rule does not validate.
    pub fn set_rules(&self, rules: Vec<Rule>) -> Result<(), ConfigError> {
        let mut cfg = self.shared.cfg.clone();
        cfg.rules = rules;
        cfg.validate()?;
        self.shared.set_rules(cfg.rules);
        Ok(())
    }

    /// The test hooks in force.
    pub fn hooks(&self) -> Hooks {
        self.shared.hooks()
    }

    /// Replaces the test hooks.
    pub fn set_hooks(&self, hooks: Hooks) {
        self.shared.update_hooks(|h| *h = hooks);
    }

    /// Changes the test hooks in place.
    pub fn update_hooks(&self, f: impl FnOnce(&mut Hooks)) {
        self.shared.update_hooks(f);
    }

    /// Answer `kind` commands with `NACK` (`true`) or normally (`false`).
    pub fn nack_on(&self, kind: CommandKind, on: bool) {
        self.update_hooks(|h| toggle(&mut h.nack_on, kind, on));
    }

    /// Swallow `kind` commands without answering (`true`) or not (`false`).
    pub fn ignore_on(&self, kind: CommandKind, on: bool) {
        self.update_hooks(|h| toggle(&mut h.ignore_on, kind, on));
    }

    /// Handle `kind` commands only after `ms` milliseconds (0: at once).
    pub fn delay_on(&self, kind: CommandKind, ms: u64) {
        self.update_hooks(|h| {
            if ms == 0 {
                h.delay_ms_on.remove(&kind);
            } else {
                h.delay_ms_on.insert(kind, ms);
            }
        });
    }

    /// Stop (`false`) or resume (`true`) answering heartbeats.
    pub fn answer_heartbeats(&self, on: bool) {
        self.update_hooks(|h| h.ignore_heartbeats = !on);
    }

    /// Pause (`true`) or resume (`false`) the scheduled origination (the
    /// `pause_origination` hook).
    pub fn pause_origination(&self, on: bool) {
        self.update_hooks(|h| h.pause_origination = on);
    }

    /// Originates one request (or echo test) to `bank` now, on the oldest link, with
    /// the bank's origination settings (or the defaults); returns its correlation id.
    pub fn originate_now(&self, bank: &str, kind: OriginKind) -> Result<u64, OriginateError> {
        self.shared.originate(bank, kind)
    }

    /// Closes every open link; the node keeps listening (`mups` reconnects).
    pub fn close_links(&self) {
        self.shared.close_links();
    }

    /// Kills the node: stops listening and closes every link at once (queued frames
    /// are lost, as in a crash). Returns when the listening socket and the links are
    /// closed, so the address can be bound again.
    pub async fn die(&self) {
        self.shared.token.cancel();
        let listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = listener {
            let _ = task.await;
        }
        for task in self.shared.take_tasks() {
            let _ = task.await;
        }
        self.shared.close_links();
    }
}

impl Drop for FoNodeHandle {
    fn drop(&mut self) {
        self.shared.token.cancel();
    }
}

fn toggle(set: &mut std::collections::BTreeSet<CommandKind>, kind: CommandKind, on: bool) {
    if on {
        set.insert(kind);
    } else {
        set.remove(&kind);
    }
}
