//! The report of a run: what was sent, what came back, how fast, and every session
//! that ended badly. It is the instrument's reading, so it keeps raw counts (never
//! only rates) and says in one boolean whether the run was clean.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::BankSimConfig;

/// The result of [`run`](super::run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The settings of the run.
    pub config: BankSimConfig,
    /// Wall-clock start, RFC 3339 UTC.
    pub started_at: String,
    /// Seconds from start to the end of the last session.
    pub duration_s: f64,
    /// Seconds from the first session ready to the last response received: the
    /// window throughput is computed over.
    pub window_s: f64,
    /// Rates over `window_s`.
    pub throughput: Throughput,
    /// Counts over every session.
    pub counters: Counters,
    /// Requests the simulator sent, by MTI (`0100`, `0800`, …).
    pub by_mti: BTreeMap<String, MtiCounters>,
    /// Responses received, by DE39 (`none` when absent).
    pub response_codes: BTreeMap<String, u64>,
    /// Latency of financial requests (network management excluded), microseconds,
    /// from the intended send time when a rate is set (see [`LatencyOrigin`]).
    pub latency_us: Latency,
    /// The same responses measured from the actual send time: the peer's service
    /// time alone. Equal to `latency_us` in saturation runs; the gap in paced runs
    /// is queueing in the simulator (pipeline full, send timer lateness) charged to
    /// the system under test.
    pub service_latency_us: Latency,
    /// Sessions ended by failures, by kind.
    pub disconnects: DisconnectSummary,
    /// One entry per session.
    pub sessions: Vec<SessionReport>,
    /// No request lost, no duplicate or unmatched response, no malformed message,
    /// no disconnect of any kind.
    pub clean: bool,
}

/// Rates over the measuring window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Throughput {
    /// Requests sent per second.
    pub sent_per_s: f64,
    /// Requests answered per second.
    pub answered_per_s: f64,
}

/// Counts of one session or of the whole run. Requests are the simulator's own
/// (financial and network management); FO requests are those the switch sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Requests sent.
    pub sent: u64,
    /// Requests that got a response (the first one), on time or late.
    pub answered: u64,
    /// Of `answered`, responses that came after the timeout.
    pub late: u64,
    /// Requests that passed the timeout without a response (later answered late, or lost).
    pub timeouts: u64,
    /// Requests never answered: still waiting at the end of the grace period, or
    /// in flight when their connection ended.
    pub lost: u64,
    /// Responses for a request already answered.
    pub duplicates: u64,
    /// Responses matching no request of the session.
    pub unmatched: u64,
    /// Frames whose message does not decode under the layout.
    pub malformed: u64,
    /// Requests received from the switch (FO-originated).
    pub fo_requests: u64,
    /// FO requests answered.
    pub fo_answered: u64,
    /// Keep-alive (zero-length) frames received.
    pub keep_alives: u64,
    /// Notifications and other messages that are neither requests nor responses.
    pub ignored: u64,
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.late += o.late;
        self.timeouts += o.timeouts;
        self.lost += o.lost;
        self.duplicates += o.duplicates;
        self.unmatched += o.unmatched;
        self.malformed += o.malformed;
        self.fo_requests += o.fo_requests;
        self.fo_answered += o.fo_answered;
        self.keep_alives += o.keep_alives;
        self.ignored += o.ignored;
    }
}

/// Counts for one request MTI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MtiCounters {
    /// Sent.
    pub sent: u64,
    /// Answered (on time or late).
    pub answered: u64,
    /// Answered after the timeout.
    pub late: u64,
    /// Never answered.
    pub lost: u64,
}

impl AddAssign for MtiCounters {
    fn add_assign(&mut self, o: Self) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.late += o.late;
        self.lost += o.lost;
    }
}

/// Where latency is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyOrigin {
    /// The time the schedule meant the request to go (a rate is set): a stall in
    /// the peer shows up in full, not only for the few requests that were in
    /// flight (no coordinated omission).
    IntendedSend,
    /// The time the request was put on the wire (saturation runs).
    ActualSend,
}

/// Latency summary, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Where it is measured from.
    pub measured_from: LatencyOrigin,
    /// Responses measured.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// No measurement.
    pub fn empty(measured_from: LatencyOrigin) -> Self {
        Self { measured_from, count: 0, min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0.0 }
    }

    /// The summary of a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>, measured_from: LatencyOrigin) -> Self {
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        Self {
            measured_from,
            count: h.len(),
            min: if empty { 0 } else { h.min() },
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p999: q(0.999),
            max: if empty { 0 } else { h.max() },
            mean: if empty { 0.0 } else { h.mean() },
        }
    }
}

/// How a session ended badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectKind {
    /// The TCP connect failed or timed out.
    ConnectFailed,
    /// The peer closed the connection (FIN: end of stream).
    Fin,
    /// The peer reset the connection (RST: `ECONNRESET`).
    Rst,
    /// Another socket error.
    IoError,
    /// The byte stream broke the framing profile; the session cannot continue.
    FramingError,
    /// The sign-on was answered with a refusal (DE39 not an approval).
    SignOnRejected,
    /// The sign-on got no response within the timeout.
    SignOnTimeout,
}

/// One session failure, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisconnectEvent {
    /// What happened.
    pub kind: DisconnectKind,
    /// Milliseconds since the run started.
    pub elapsed_ms: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub at: String,
    /// The error text, if any.
    pub error: Option<String>,
    /// Requests of the session in flight at that moment.
    pub in_flight: u64,
}

/// Session failures over the run, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DisconnectSummary {
    /// Every failure.
    pub total: u64,
    /// Failed connects.
    pub connect_failed: u64,
    /// Peer closes (FIN).
    pub fin: u64,
    /// Peer resets (RST).
    pub rst: u64,
    /// Other socket errors.
    pub io_error: u64,
    /// Framing lost.
    pub framing_error: u64,
    /// Sign-ons refused or unanswered.
    pub sign_on_failed: u64,
}

impl DisconnectSummary {
    /// Counts one event.
    pub fn add(&mut self, kind: DisconnectKind) {
        self.total += 1;
        match kind {
            DisconnectKind::ConnectFailed => self.connect_failed += 1,
            DisconnectKind::Fin => self.fin += 1,
            DisconnectKind::Rst => self.rst += 1,
            DisconnectKind::IoError => self.io_error += 1,
            DisconnectKind::FramingError => self.framing_error += 1,
            DisconnectKind::SignOnRejected | DisconnectKind::SignOnTimeout => self.sign_on_failed += 1,
        }
    }
}

/// One session's share of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// Session number, 0-based.
    pub id: u32,
    /// Its terminal id (DE41).
    pub terminal_id: String,
    /// TCP connections established.
    pub connects: u32,
    /// The session's counts.
    pub counters: Counters,
    /// Its failures, in order.
    pub events: Vec<DisconnectEvent>,
}

impl Report {
    /// Whether counters and failures make a clean run.
    pub(crate) fn is_clean(counters: &Counters, disconnects: &DisconnectSummary) -> bool {
        counters.lost == 0
            && counters.duplicates == 0
            && counters.unmatched == 0
            && counters.malformed == 0
            && disconnects.total == 0
    }
}
