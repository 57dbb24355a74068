//! `pups`, the edge proxy: owns the bank TCP sessions, frames their ISO 8583
//! streams, and passes the messages to `mups` over the local link; at a planned
//! appliance switchover it checkpoints the sockets for the twin, or restores the
//! twin's. Protocol logic lives in `proto`; this crate does the I/O.
//!
//! The rule it serves: a bank never sees a disconnect and never loses a message.
//! While `mups` is away, sessions stay open and are simply not read (the bank sees
//! TCP back-pressure); what was read is kept, in order, for the next `mups`.
//!
//! # Layout
//!
//! - [`codec`]: [`codec::BankCodec`], the tokio codec wrapping `proto::frame` for a
//!   bank session's byte stream, with the bank's bad-frame policy.
//! - `listener`: one TCP listener per distinct bank `listen` address; picks the
//!   bank by source address, enforces `max_sessions`.
//! - `session`: one bank session: reader (framing, keep-alives, idle timeout,
//!   pause) and writer (reply framing, TPDU swap).
//! - `hub`: what sessions and the local link share: live sessions, messages
//!   queued towards `mups`, attachment state, session events.
//! - [`local_link`]: the Unix socket server `mups` attaches to (handshake, data
//!   and control channels, inventory, heartbeats, session commands).
//! - [`metrics`]: counters, `/metrics` and `/healthz`, and [`Stats`] to read them.
//! - `handover`: the `HANDOVER` ops of a planned appliance switchover (lock,
//!   quiesce, checkpoint, thaw, close, restore, serve), carried out one at a time.
//! - [`netlock`]: the network lock (nftables table `inet pups_lock`): silent DROP
//!   of VIP bank ports (standby) or single sessions (active) during a switchover,
//!   or in hold mode (`[pups] hold_queue`) holding them on an NFQUEUE instead.
//! - [`error`]: [`PupsError`], why `pups` could not start.
//! - [`sys`]: `TCP_REPAIR` checkpoint and restore of bank sockets, and the
//!   startup self-check; the only module allowed `unsafe`.
//!
//! [`Pups::start`] binds everything and runs it on the current tokio runtime;
//! [`run`] is the same until a shutdown future completes.

#![deny(unsafe_code)]

pub mod codec;
pub mod error;
mod handover;
mod hub;
mod listener;
pub mod local_link;
pub mod metrics;
pub mod netlock;
mod session;
#[allow(unsafe_code)]
pub mod sys;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proto::config::ApplianceConfig;
use proto::fo_link::SessionDownReason;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::PupsError;
pub use metrics::Stats;

/// How long sessions get to close (and their last messages to reach `mups`) at
/// shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// A running `pups`.
#[derive(Debug)]
pub struct Pups {
    hub: Arc<hub::Hub>,
    bank_addrs: Vec<(String, SocketAddr)>,
    metrics_addr: Option<SocketAddr>,
    local_link: PathBuf,
    /// Stops the bank listeners.
    accept: CancellationToken,
    /// Stops the local link.
    link: CancellationToken,
    /// Stops the metrics server.
    http: CancellationToken,
    /// Stops the handover worker.
    handover: CancellationToken,
    handover_task: tokio::task::JoinHandle<()>,
    tasks: JoinSet<()>,
}

impl Pups {
    /// Validates the configuration, binds the bank listeners, the local link
    /// socket and the metrics listener, and starts serving them on the current
    /// tokio runtime.
    pub async fn start(cfg: Arc<ApplianceConfig>) -> Result<Self, PupsError> {
        cfg.validate()?;
        // Sessions cannot move to the twin appliance without this; say so now,
        // not at the first switchover. Serving banks does not need it.
        match sys::self_check() {
            Ok(()) => info!("TCP_REPAIR self-check passed: sessions can be handed to the twin appliance"),
            Err(e) => warn!(error = %e, "sessions cannot be handed to the twin appliance"),
        }
        let (handover_tx, handover_rx) = tokio::sync::mpsc::unbounded_channel();
        let hub = Arc::new(hub::Hub::new(cfg.clone(), handover_tx));
        let pair = cfg.vrrp.is_some();
        let (netlock, hold) = hold_mode(&cfg, pair);
        let mut worker = handover::Worker::new(hub.clone(), netlock, hold);
        if pair {
            // keepalived may give us the VIP at any moment, and announces it before
            // anyone hears of it: the bank ports are locked before anything else,
            // and open only when mups says Serve.
            worker.lock_ports().await?;
            info!("appliance pair: bank ports locked until mups says Serve");
        }
        // In a pair the VIP may be the twin's for now: listen on it anyway.
        let listeners = listener::bind_all(&hub, pair)?;
        let mut bank_addrs = Vec::new();
        for l in &listeners {
            bank_addrs.extend(l.banks.iter().map(|&i| (hub.bank(i).id.clone(), l.bound)));
        }
        let local_link = cfg.appliance.local_link.clone();
        let unix = local_link::bind(&local_link)?;
        let http = match cfg.pups.metrics_listen {
            Some(addr) => {
                Some(metrics::bind(addr).await.map_err(|source| PupsError::MetricsListen { addr, source })?)
            }
            None => None,
        };
        let metrics_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let (accept, link, http_cancel) =
            (CancellationToken::new(), CancellationToken::new(), CancellationToken::new());
        let handover = CancellationToken::new();
        let handover_task = tokio::spawn(worker.run(handover_rx, handover.clone()));
        let mut tasks = JoinSet::new();
        for l in listeners {
            tasks.spawn(listener::accept_loop(hub.clone(), l, accept.clone()));
        }
        info!(path = %local_link.display(), "local link listening");
        tasks.spawn(local_link::serve(hub.clone(), unix, link.clone()));
        if let Some(listener) = http {
            info!(addr = ?metrics_addr, "serving /metrics and /healthz");
            tasks.spawn(metrics::serve(listener, hub.metrics.clone(), http_cancel.clone()));
        }
        info!(appliance = %cfg.appliance.id, banks = cfg.banks.len(), "pups started");
        Ok(Self {
            hub,
            bank_addrs,
            metrics_addr,
            local_link,
            accept,
            link,
            http: http_cancel,
            handover,
            handover_task,
            tasks,
        })
    }

    /// Where a bank's connections are accepted (the bound address: a configured
    /// port 0 is resolved).
    pub fn bank_addr(&self, bank_id: &str) -> Option<SocketAddr> {
        self.bank_addrs.iter().find(|(id, _)| id == bank_id).map(|&(_, addr)| addr)
    }

    /// Where `/metrics` and `/healthz` are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The local link socket.
    pub fn local_link_path(&self) -> &Path {
        &self.local_link
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        Stats(self.hub.metrics.clone())
    }

    /// Stops: no more connections are accepted, every bank session is closed
    /// (`SESSION_DOWN` reason `Shutdown` to `mups` if attached), then the local link
    /// and the metrics server are closed and the socket file removed.
    ///
    /// `pups` keeps bank sessions open across restarts of `mups`, but not across its
    /// own: until sessions are handed over to a twin appliance, stopping `pups`
    /// disconnects every bank.
    pub async fn shutdown(mut self) {
        self.accept.cancel();
        // Frozen sessions (a switchover mups never finished) close in repair mode,
        // never with a FIN; the network lock stays (a crash would leave it too).
        self.handover.cancel();
        let _ = (&mut self.handover_task).await;
        let sessions = self.hub.close_all(SessionDownReason::Shutdown, "pups is shutting down");
        warn!(
            sessions,
            "pups shutting down: closing every bank session (no hand-over to a twin appliance yet)"
        );
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while !self.hub.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // A connection accepted just before the listeners stopped.
            self.hub.close_all(SessionDownReason::Shutdown, "pups is shutting down");
        }
        let lost = self.hub.abandon_all();
        if lost > 0 {
            warn!(messages = lost, "shutdown: messages read from banks were not delivered to mups");
        }
        self.link.cancel();
        self.http.cancel();
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = std::fs::remove_file(&self.local_link) {
            warn!(path = %self.local_link.display(), error = %e, "cannot remove the local link socket");
        }
        info!("pups stopped");
    }
}

/// The network lock, and in hold mode its queue. Hold mode needs the queue bound
/// and IPv4 forwarding on; if either fails the lock drops instead, and says so
/// (switchovers still work; banks resend on their timers).
fn hold_mode(cfg: &ApplianceConfig, pair: bool) -> (netlock::NetLock, Option<sys::HoldQueue>) {
    let lock = netlock::NetLock::new();
    let Some(number) = cfg.pups.hold_queue.filter(|_| pair) else { return (lock, None) };
    let queue = match sys::HoldQueue::open(number) {
        Ok(q) => q,
        Err(e) => {
            warn!(queue = number, error = %e, "cannot bind the hold queue: the network lock drops instead");
            return (lock, None);
        }
    };
    match sys::enable_forwarding() {
        Ok(was_on) => {
            info!(queue = number, forwarding_was_on = was_on, "network lock in hold mode");
            (lock.with_hold_queue(number), Some(queue))
        }
        Err(e) => {
            warn!(error = %e, "cannot turn IPv4 forwarding on: the network lock drops instead");
            (lock, None)
        }
    }
}

/// Runs `pups` until `shutdown` completes, then shuts it down
/// ([`Pups::shutdown`]). Fails only if it cannot start.
pub async fn run(cfg: Arc<ApplianceConfig>, shutdown: impl Future<Output = ()>) -> Result<(), PupsError> {
    let pups = Pups::start(cfg).await?;
    shutdown.await;
    pups.shutdown().await;
    Ok(())
}
