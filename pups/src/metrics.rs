//! Counters and gauges of `pups`, their Prometheus exposition, and the small HTTP
//! server (`/metrics`, `/healthz`) on `[pups].metrics_listen`.
//!
//! Every series is kept with `prometheus-client`; [`Stats`] reads them back for
//! tests and tools without going through HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use proto::fo_link::{HandoverOp, SessionDownReason};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `{bank}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BankLabels {
    bank: String,
}

/// `{bank, reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    bank: String,
    reason: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `{bank, action}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    bank: String,
    action: &'static str,
}

/// `{bank, direction}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    bank: String,
    direction: &'static str,
}

/// `{op, result}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
    result: &'static str,
}

/// `{op}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpOnly {
    op: &'static str,
}

/// The label value of a `HANDOVER` op (`pups_handover_ops_total{op}`).
pub const fn op_label(op: HandoverOp) -> &'static str {
    match op {
        HandoverOp::Quiesce => "quiesce",
        HandoverOp::Quiesced => "quiesced",
        HandoverOp::Checkpoint => "checkpoint",
        HandoverOp::Snapshots => "snapshots",
        HandoverOp::Checkpointed => "checkpointed",
        HandoverOp::Thaw => "thaw",
        HandoverOp::Thawed => "thawed",
        HandoverOp::CloseFrozen => "close_frozen",
        HandoverOp::Closed => "closed",
        HandoverOp::Lock => "lock",
        HandoverOp::Locked => "locked",
        HandoverOp::Restore => "restore",
        HandoverOp::RestoreEnd => "restore_end",
        HandoverOp::Restored => "restored",
        HandoverOp::Serve => "serve",
        HandoverOp::Serving => "serving",
        HandoverOp::Failed => "failed",
    }
}

/// Why a connection was refused before it became a session (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// No bank on the listener allows the source address.
    UnknownSource,
    /// The bank already has `max_sessions` sessions.
    MaxSessions,
}

impl Rejected {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::MaxSessions => "max_sessions",
        }
    }
}

/// What happened to a frame that broke the bank's framing (`action` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrameAction {
    /// Skipped; the session goes on (`bad_frame = "drop"`).
    Dropped,
    /// The session was closed.
    Closed,
}

impl BadFrameAction {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Dropped => "dropped",
            Self::Closed => "closed",
        }
    }
}

/// Keep-alive frames (`direction` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveDirection {
    /// Received from the bank.
    Received,
    /// Echoed to the bank (`keepalive = "echo"`).
    Echoed,
    /// Received and not echoed: the storm guard's limit was reached.
    Suppressed,
}

impl KeepAliveDirection {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Echoed => "echoed",
            Self::Suppressed => "suppressed",
        }
    }
}

/// Bank messages (`direction` label, as on the local link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageDirection {
    /// Read from the bank, for `mups`.
    ToNode,
    /// From `mups`, written to the bank.
    ToBank,
}

impl MessageDirection {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::ToNode => "to_node",
            Self::ToBank => "to_bank",
        }
    }
}

/// A local link message `pups` received and dropped (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDrop {
    /// `DATA` for a session `pups` does not have (any more).
    UnknownSession,
    /// A message on the wrong channel or going the wrong way.
    Protocol,
    /// `DATA` whose message the bank's framing cannot carry.
    Unencodable,
    /// `DATA` for a bank that let its session's write queue fill up (the session is closed).
    BankNotReading,
}

impl LinkDrop {
    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownSession => "unknown_session",
            Self::Protocol => "protocol",
            Self::Unencodable => "unencodable",
            Self::BankNotReading => "bank_not_reading",
        }
    }
}

/// The label value of a session's end (`pups_sessions_closed_total{reason}`).
pub const fn reason_label(reason: SessionDownReason) -> &'static str {
    match reason {
        SessionDownReason::PeerClosed => "peer_closed",
        SessionDownReason::PeerReset => "peer_reset",
        SessionDownReason::IdleTimeout => "idle_timeout",
        SessionDownReason::FramingError => "framing_error",
        SessionDownReason::ClosedByController => "closed_by_controller",
        SessionDownReason::IoError => "io_error",
        SessionDownReason::Shutdown => "shutdown",
        SessionDownReason::HandedOver => "handed_over",
        SessionDownReason::Other(_) => "other",
    }
}

/// Every series `pups` keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    sessions: Family<BankLabels, Gauge>,
    opened: Family<BankLabels, Counter>,
    closed: Family<CloseLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    bad_frames: Family<ActionLabels, Counter>,
    keepalives: Family<DirectionLabels, Counter>,
    messages: Family<DirectionLabels, Counter>,
    link_attached: Gauge,
    link_attaches: Counter,
    link_dropped: Family<ReasonLabels, Counter>,
    handover_ops: Family<OpLabels, Counter>,
    handover_seconds: Family<OpOnly, Histogram>,
    handover_frozen: Gauge,
    handover_restored: Gauge,
    handover_handed_over: Counter,
    handover_adopted: Counter,
    handover_refused: Counter,
    handover_restore_failures: Counter,
    held_packets: Family<VerdictLabels, Counter>,
}

/// What became of packets the network lock held.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

impl Metrics {
    /// The series, with the per-bank ones created at zero for every bank.
    pub(crate) fn new<'a>(banks: impl IntoIterator<Item = &'a str>) -> Self {
        let mut m = Self {
            registry: Registry::default(),
            sessions: Family::default(),
            opened: Family::default(),
            closed: Family::default(),
            rejected: Family::default(),
            bad_frames: Family::default(),
            keepalives: Family::default(),
            messages: Family::default(),
            link_attached: Gauge::default(),
            link_attaches: Counter::default(),
            link_dropped: Family::default(),
            handover_ops: Family::default(),
            // 100 µs to ~6.5 s.
            handover_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-4, 2.0, 17))
            }),
            handover_frozen: Gauge::default(),
            handover_restored: Gauge::default(),
            handover_handed_over: Counter::default(),
            handover_adopted: Counter::default(),
            handover_refused: Counter::default(),
            handover_restore_failures: Counter::default(),
            held_packets: Family::default(),
        };
        let r = &mut m.registry;
        r.register("pups_sessions", "Open bank sessions", m.sessions.clone());
        r.register("pups_sessions_opened", "Bank sessions opened", m.opened.clone());
        r.register("pups_sessions_closed", "Bank sessions closed, by reason", m.closed.clone());
        r.register(
            "pups_rejected_connections",
            "Bank connections refused before becoming a session",
            m.rejected.clone(),
        );
        r.register("pups_bad_frames", "Frames that broke the bank's framing", m.bad_frames.clone());
        r.register("pups_keepalives", "Keep-alive frames", m.keepalives.clone());
        r.register("pups_messages", "Bank messages, by direction", m.messages.clone());
        r.register("pups_local_link_attached", "1 while mups is attached", m.link_attached.clone());
        r.register("pups_local_link_attaches", "Times mups attached", m.link_attaches.clone());
        r.register(
            "pups_local_link_dropped",
            "Local link messages received and dropped",
            m.link_dropped.clone(),
        );
        r.register(
            "pups_handover_ops",
            "HANDOVER requests carried out, by op and result",
            m.handover_ops.clone(),
        );
        r.register(
            "pups_handover_op_duration_seconds",
            "Time to carry out a HANDOVER request, by op",
            m.handover_seconds.clone(),
        );
        r.register(
            "pups_handover_frozen_sessions",
            "Sessions checkpointed and held in repair mode here",
            m.handover_frozen.clone(),
        );
        r.register(
            "pups_handover_restored_sessions",
            "Sessions restored from the twin, waiting for Serve",
            m.handover_restored.clone(),
        );
        r.register(
            "pups_handover_handed_over_sessions",
            "Sessions handed to the twin appliance (closed here in repair mode)",
            m.handover_handed_over.clone(),
        );
        r.register(
            "pups_handover_adopted_sessions",
            "Sessions restored from the twin appliance and served here",
            m.handover_adopted.clone(),
        );
        r.register(
            "pups_handover_refused_sessions",
            "Sessions a checkpoint left out (not ESTABLISHED, ended, too big), served on here",
            m.handover_refused.clone(),
        );
        r.register(
            "pups_handover_held_packets",
            "Bank packets the network lock held during a switchover, by verdict (accepted: delivered here \
             or forwarded to the twin; dropped: the bank resends)",
            m.held_packets.clone(),
        );
        r.register(
            "pups_handover_restore_failures",
            "Snapshots that could not be restored",
            m.handover_restore_failures.clone(),
        );
        for bank in banks {
            let bank = bank.to_owned();
            m.sessions.get_or_create_owned(&BankLabels { bank: bank.clone() });
            m.opened.get_or_create_owned(&BankLabels { bank: bank.clone() });
            for d in [MessageDirection::ToNode, MessageDirection::ToBank] {
                m.messages.get_or_create_owned(&DirectionLabels { bank: bank.clone(), direction: d.label() });
            }
        }
        for r in [Rejected::UnknownSource, Rejected::MaxSessions] {
            m.rejected.get_or_create_owned(&ReasonLabels { reason: r.label() });
        }
        m
    }

    pub(crate) fn session_opened(&self, bank: &str) {
        let labels = BankLabels { bank: bank.to_owned() };
        self.sessions.get_or_create(&labels).inc();
        self.opened.get_or_create(&labels).inc();
    }

    pub(crate) fn session_closed(&self, bank: &str, reason: SessionDownReason) {
        self.sessions.get_or_create(&BankLabels { bank: bank.to_owned() }).dec();
        self.closed.get_or_create(&CloseLabels { bank: bank.to_owned(), reason: reason_label(reason) }).inc();
    }

    pub(crate) fn rejected(&self, why: Rejected) {
        self.rejected.get_or_create(&ReasonLabels { reason: why.label() }).inc();
    }

    pub(crate) fn bad_frame(&self, bank: &str, action: BadFrameAction) {
        self.bad_frames.get_or_create(&ActionLabels { bank: bank.to_owned(), action: action.label() }).inc();
    }

    pub(crate) fn keepalive(&self, bank: &str, direction: KeepAliveDirection) {
        self.keepalives
            .get_or_create(&DirectionLabels { bank: bank.to_owned(), direction: direction.label() })
            .inc();
    }

    pub(crate) fn messages(&self, bank: &str, direction: MessageDirection, n: u64) {
        self.messages
            .get_or_create(&DirectionLabels { bank: bank.to_owned(), direction: direction.label() })
            .inc_by(n);
    }

    pub(crate) fn link_attached(&self, attached: bool) {
        self.link_attached.set(i64::from(attached));
        if attached {
            self.link_attaches.inc();
        }
    }

    pub(crate) fn link_dropped(&self, why: LinkDrop) {
        self.links_dropped(why, 1);
    }

    pub(crate) fn links_dropped(&self, why: LinkDrop, n: u64) {
        self.link_dropped.get_or_create(&ReasonLabels { reason: why.label() }).inc_by(n);
    }

    pub(crate) fn handover_op(&self, op: HandoverOp, ok: bool, took: std::time::Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.handover_ops.get_or_create(&OpLabels { op: op_label(op), result }).inc();
        self.handover_seconds.get_or_create(&OpOnly { op: op_label(op) }).observe(took.as_secs_f64());
    }

    pub(crate) fn handover_gauges(&self, frozen: usize, restored: usize) {
        self.handover_frozen.set(frozen as i64);
        self.handover_restored.set(restored as i64);
    }

    pub(crate) fn handed_over(&self, n: u32) {
        self.handover_handed_over.inc_by(n.into());
    }

    pub(crate) fn held_packets_released(&self, n: u64, accepted: bool) {
        let verdict = if accepted { "accepted" } else { "dropped" };
        self.held_packets.get_or_create(&VerdictLabels { verdict }).inc_by(n);
    }

    pub(crate) fn adopted(&self, n: u32) {
        self.handover_adopted.inc_by(n.into());
    }

    pub(crate) fn handover_refused(&self, n: usize) {
        self.handover_refused.inc_by(n as u64);
    }

    pub(crate) fn restore_failures(&self, n: usize) {
        self.handover_restore_failures.inc_by(n as u64);
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// A read-only view of `pups`'s counters, for tests and tools. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stats(pub(crate) Arc<Metrics>);

impl Stats {
    /// Open sessions of a bank.
    pub fn sessions(&self, bank: &str) -> i64 {
        self.0.sessions.get(&BankLabels { bank: bank.to_owned() }).map_or(0, |g| g.get())
    }

    /// Sessions of a bank opened since start.
    pub fn sessions_opened(&self, bank: &str) -> u64 {
        self.0.opened.get(&BankLabels { bank: bank.to_owned() }).map_or(0, |c| c.get())
    }

    /// Sessions of a bank closed since start for a reason.
    pub fn sessions_closed(&self, bank: &str, reason: SessionDownReason) -> u64 {
        let labels = CloseLabels { bank: bank.to_owned(), reason: reason_label(reason) };
        self.0.closed.get(&labels).map_or(0, |c| c.get())
    }

    /// Connections refused for a reason.
    pub fn rejected(&self, why: Rejected) -> u64 {
        self.0.rejected.get(&ReasonLabels { reason: why.label() }).map_or(0, |c| c.get())
    }

    /// Bad frames of a bank handled by an action.
    pub fn bad_frames(&self, bank: &str, action: BadFrameAction) -> u64 {
        let labels = ActionLabels { bank: bank.to_owned(), action: action.label() };
        self.0.bad_frames.get(&labels).map_or(0, |c| c.get())
    }

    /// Keep-alives of a bank.
    pub fn keepalives(&self, bank: &str, direction: KeepAliveDirection) -> u64 {
        let labels = DirectionLabels { bank: bank.to_owned(), direction: direction.label() };
        self.0.keepalives.get(&labels).map_or(0, |c| c.get())
    }

    /// Messages of a bank, one way.
    pub fn messages(&self, bank: &str, direction: MessageDirection) -> u64 {
        let labels = DirectionLabels { bank: bank.to_owned(), direction: direction.label() };
        self.0.messages.get(&labels).map_or(0, |c| c.get())
    }

    /// Whether `mups` is attached.
    pub fn link_attached(&self) -> bool {
        self.0.link_attached.get() != 0
    }

    /// Times `mups` attached since start.
    pub fn link_attaches(&self) -> u64 {
        self.0.link_attaches.get()
    }

    /// Local link messages dropped for a reason.
    pub fn link_dropped(&self, why: LinkDrop) -> u64 {
        self.0.link_dropped.get(&ReasonLabels { reason: why.label() }).map_or(0, |c| c.get())
    }

    /// `HANDOVER` requests carried out for an op, successfully (`ok`) or not.
    pub fn handover_ops(&self, op: HandoverOp, ok: bool) -> u64 {
        let labels = OpLabels { op: op_label(op), result: if ok { "ok" } else { "failed" } };
        self.0.handover_ops.get(&labels).map_or(0, |c| c.get())
    }

    /// Sessions frozen here now.
    pub fn handover_frozen(&self) -> i64 {
        self.0.handover_frozen.get()
    }

    /// Sessions restored and not yet served.
    pub fn handover_restored(&self) -> i64 {
        self.0.handover_restored.get()
    }

    /// Sessions handed to the twin since start.
    pub fn handed_over(&self) -> u64 {
        self.0.handover_handed_over.get()
    }

    /// Held bank packets accepted (delivered or forwarded) since start.
    pub fn held_packets_accepted(&self) -> u64 {
        self.0.held_packets.get_or_create(&VerdictLabels { verdict: "accepted" }).get()
    }

    /// Sessions adopted from the twin since start.
    pub fn adopted(&self) -> u64 {
        self.0.handover_adopted.get()
    }

    /// Sessions a checkpoint left out since start.
    pub fn handover_refused(&self) -> u64 {
        self.0.handover_refused.get()
    }

    /// Snapshots that could not be restored since start.
    pub fn restore_failures(&self) -> u64 {
        self.0.handover_restore_failures.get()
    }

    /// The Prometheus text exposition, as `/metrics` serves it.
    pub fn render(&self) -> String {
        self.0.render()
    }
}

/// The OpenMetrics content type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics listener (so its address is known before serving).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/healthz` until `cancel`.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await {
        tracing::error!(error = %e, "metrics server failed");
    }
}

async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS)], metrics.render())
}
