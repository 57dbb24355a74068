//! The bank simulator and load generator: many bank TCP sessions speaking ISO 8583
//! to `pups`, as the measuring instrument for everything the appliance pair claims.
//!
//! What it must never do is hide a failure. Every request it sends must get exactly
//! one response: it counts the ones that never came (lost), came twice
//! (duplicates), came for nothing it sent (unmatched) or came after the timeout
//! (late). Every session that ends badly (connect failure, FIN, RST, socket error,
//! framing lost, sign-on refused) is reported with its time, and by default a
//! session does not reconnect, so a dropped bank session cannot be papered over.
//! [`Report::clean`] sums this up in one boolean.
//!
//! Latency is measured from the *intended* send time when a rate is set, so a stall
//! in the system under test is charged to every request it delayed (no coordinated
//! omission), and from the actual send time in saturation runs.
//!
//! The simulator also plays the bank's issuer side: requests the switch sends it
//! (0100/0200 with the bank as issuer, 0800 sign-on or echo) are answered with the
//! response MTI, the usual fields echoed and DE39 as configured.
//!
//! # Layout
//!
//! - [`config`]: [`BankSimConfig`], its validation, duration and mix parsing.
//! - [`report`]: [`Report`] and its parts, serialized as the JSON report.
//! - `session`: one session's task: the select loop, matching, counting.
//! - `wire`: request templates patched in place, the field clock, test PANs.
//! - [`loopback`]: a minimal, fast switch-side peer that answers every request,
//!   to calibrate the simulator and to benchmark it.
#![warn(missing_docs)]

pub mod config;
pub mod loopback;
pub mod report;
mod session;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use config::{BankSimConfig, ConfigError, parse_duration, parse_mix};
pub use report::{
    Counters, DisconnectEvent, DisconnectKind, DisconnectSummary, Latency, LatencyOrigin, MtiCounters,
    Report, SessionReport, Throughput,
};

use session::{Outcome, Session, Shared};

/// Why a run could not start (or could not finish its report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is not usable.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The target does not resolve to an address.
    #[error("target {target:?}: {reason}")]
    Target {
        /// The target as configured.
        target: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// A session task panicked (a bug in the simulator).
    #[error("session task failed: {0}")]
    Session(String),
}

/// A snapshot for the progress line, taken about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Requests sent so far.
    pub sent: u64,
    /// Requests answered so far.
    pub answered: u64,
    /// Answered per second since the previous snapshot.
    pub rate: f64,
    /// Sessions connected now.
    pub connected: u64,
    /// Session failures so far.
    pub disconnects: u64,
}

/// Runs the simulator until every session has finished: its requests sent (count
/// or duration reached, or `shutdown` completed), its in-flight requests answered
/// or the grace period over. `shutdown` only ends sending early; what is in flight
/// is still awaited.
pub async fn run(cfg: BankSimConfig, shutdown: impl Future<Output = ()>) -> Result<Report, RunError> {
    run_with_progress(cfg, shutdown, |_| {}).await
}

/// [`run`], calling `on_progress` about once a second.
pub async fn run_with_progress(
    cfg: BankSimConfig,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, RunError> {
    cfg.validate()?;
    let mut addrs = Vec::with_capacity(1 + cfg.more_targets.len());
    for target in std::iter::once(&cfg.target).chain(&cfg.more_targets) {
        addrs.push(resolve(target).await?);
    }
    let shared = Arc::new(Shared::new(cfg, addrs)?);
    let sessions = (0..shared.cfg.sessions)
        .map(|id| Session::new(Arc::clone(&shared), id))
        .collect::<Result<Vec<_>, _>>()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for s in sessions {
        tasks.spawn(s.run(stop_rx.clone()));
    }
    tokio::pin!(shutdown);
    let mut shut = false;
    let tick = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(shared.start + tick, tick);
    let mut last = (shared.start, 0u64);
    let mut outcomes = Vec::with_capacity(shared.cfg.sessions as usize);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(outcome)) => outcomes.push(outcome),
                Some(Err(e)) => {
                    let _ = stop_tx.send(true);
                    return Err(RunError::Session(e.to_string()));
                }
            },
            () = &mut shutdown, if !shut => {
                shut = true;
                tracing::info!("shutdown: sending stops, in-flight requests are awaited");
                let _ = stop_tx.send(true);
            }
            now = ticker.tick() => {
                let live = &shared.live;
                let answered = live.answered.load(Ordering::Relaxed);
                let secs = now.duration_since(last.0).as_secs_f64();
                let rate = if secs > 0.0 { (answered - last.1.min(answered)) as f64 / secs } else { 0.0 };
                last = (now, answered);
                on_progress(&Progress {
                    elapsed: now.duration_since(shared.start),
                    sent: live.sent.load(Ordering::Relaxed),
                    answered,
                    rate,
                    connected: live.connected.load(Ordering::Relaxed),
                    disconnects: live.disconnects.load(Ordering::Relaxed),
                });
            }
        }
    }
    Ok(assemble(&shared, outcomes))
}

fn merge(into: &mut Option<Histogram<u64>>, h: Histogram<u64>) {
    match into {
        None => *into = Some(h),
        // Same bounds everywhere: adding cannot fail.
        Some(total) => {
            let _ = total.add(&h);
        }
    }
}

async fn resolve(target: &str) -> Result<SocketAddr, RunError> {
    let fail = |reason: String| RunError::Target { target: target.to_owned(), reason };
    let mut addrs = tokio::net::lookup_host(target).await.map_err(|e| fail(e.to_string()))?;
    addrs.next().ok_or_else(|| fail("no address".to_owned()))
}

fn assemble(shared: &Shared, mut outcomes: Vec<Outcome>) -> Report {
    outcomes.sort_by_key(|o| o.id);
    let mut counters = Counters::default();
    let mut by_mti: BTreeMap<String, MtiCounters> = BTreeMap::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut disconnects = DisconnectSummary::default();
    let mut histogram: Option<Histogram<u64>> = None;
    let mut service: Option<Histogram<u64>> = None;
    let mut first_ready: Option<Instant> = None;
    let mut last_response: Option<Instant> = None;
    let mut sessions = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        counters += o.counters;
        for (mti, c) in o.by_mti {
            if c != MtiCounters::default() {
                *by_mti.entry(mti.to_string()).or_default() += c;
            }
        }
        for (code, n) in o.codes {
            *codes.entry(code).or_default() += n;
        }
        for e in &o.events {
            disconnects.add(e.kind);
        }
        merge(&mut histogram, o.histogram);
        merge(&mut service, o.service);
        first_ready = match (first_ready, o.ready_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        last_response = last_response.max(o.last_response);
        sessions.push(SessionReport {
            id: o.id,
            terminal_id: o.terminal,
            connects: o.connects,
            counters: o.counters,
            events: o.events,
        });
    }
    let window_s = match (first_ready, last_response) {
        (Some(a), Some(b)) if b > a => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let per_s = |n: u64| if window_s > 0.0 { n as f64 / window_s } else { 0.0 };
    let origin = if shared.cfg.rate > 0.0 { LatencyOrigin::IntendedSend } else { LatencyOrigin::ActualSend };
    let summary = |h: &Option<Histogram<u64>>, origin| match h {
        Some(h) => Latency::from_histogram(h, origin),
        None => Latency::empty(origin),
    };
    let clean = Report::is_clean(&counters, &disconnects);
    Report {
        config: shared.cfg.clone(),
        started_at: wire::rfc3339(shared.start_wall),
        duration_s: shared.start.elapsed().as_secs_f64(),
        window_s,
        throughput: Throughput { sent_per_s: per_s(counters.sent), answered_per_s: per_s(counters.answered) },
        counters,
        by_mti,
        response_codes: codes,
        latency_us: summary(&histogram, origin),
        service_latency_us: summary(&service, LatencyOrigin::ActualSend),
        disconnects,
        sessions,
        clean,
    }
}
