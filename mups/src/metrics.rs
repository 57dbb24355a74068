//! Prometheus metrics of `mups` (prometheus-client). Names follow the Prometheus
//! conventions (`_total` counters, seconds); labels are bounded: bank, node,
//! direction, response code, never STAN or PAN.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels: bank.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BankLabels {
    /// Bank id.
    pub bank: String,
}

/// Labels: bank and node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BankNodeLabels {
    /// Bank id.
    pub bank: String,
    /// Node id.
    pub node: String,
}

/// Labels: bank, node, direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// Bank id.
    pub bank: String,
    /// Node id.
    pub node: String,
    /// `to_node` or `to_bank`.
    pub direction: &'static str,
}

/// Labels: bank, node, response code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// Bank id.
    pub bank: String,
    /// Node id.
    pub node: String,
    /// DE39 as written (`none` when absent).
    pub rc: String,
}

/// Labels: bank and which side.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BankSideLabels {
    /// Bank id.
    pub bank: String,
    /// `bank` or `node`.
    pub side: &'static str,
}

/// Labels: bank and session application state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionStateLabels {
    /// Bank id.
    pub bank: String,
    /// `unknown`, `signed_on`, `signed_off`, `echo_failing`.
    pub state: &'static str,
}

/// Labels: node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// Node id.
    pub node: String,
}

/// Labels: bank, how a switchover ended, and its mode.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SwitchoverLabels {
    /// Bank id.
    pub bank: String,
    /// `committed` or `rolled_back`.
    pub outcome: &'static str,
    /// `drain`, `force`, or `failover` (automatic, no sync possible).
    pub mode: &'static str,
}

/// Every metric `mups` exports.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Arc<Registry>,
    /// Messages routed.
    pub messages: Family<MessageLabels, Counter>,
    /// Request round trips through the node (bank requests) or the bank (FO requests).
    pub response_seconds: Family<BankNodeLabels, Histogram>,
    /// Responses by DE39.
    pub responses: Family<ResponseLabels, Counter>,
    /// Requests that got no response in time, by who asked.
    pub timeouts: Family<BankSideLabels, Counter>,
    /// Late responses, by who sent them.
    pub late: Family<BankSideLabels, Counter>,
    /// Unmatched responses, by who sent them.
    pub unmatched: Family<BankSideLabels, Counter>,
    /// Messages that did not decode, by who sent them.
    pub bad_messages: Family<BankSideLabels, Counter>,
    /// Bank requests not sent: node down.
    pub no_route: Family<BankLabels, Counter>,
    /// Messages for a bank with no live session.
    pub undeliverable: Family<BankLabels, Counter>,
    /// Messages dropped because a link's queue was full.
    pub queue_overflow: Family<NodeLabels, Counter>,
    /// Bank requests in flight.
    pub inflight: Family<BankLabels, Gauge>,
    /// 1 on the node each bank is routed to.
    pub route: Family<BankNodeLabels, Gauge>,
    /// Sessions by application state.
    pub sessions: Family<SessionStateLabels, Gauge>,
    /// 1 while a node's link is up.
    pub node_up: Family<NodeLabels, Gauge>,
    /// Last heartbeat round trip, microseconds.
    pub node_rtt_micros: Family<NodeLabels, Gauge>,
    /// 1 while `pups` is attached.
    pub pups_attached: Gauge,
    /// Bank requests answered with a synthetic decline (node lost).
    pub declined: Family<BankNodeLabels, Counter>,
    /// Finished switchovers by bank, outcome and mode.
    pub switchovers: Family<SwitchoverLabels, Counter>,
    /// How long each switchover held its bank's traffic.
    pub switchover_hold_seconds: Histogram,
    /// Switchovers under way.
    pub switchovers_running: Gauge,
    /// Times a node's link went down.
    pub node_down_events: Family<NodeLabels, Counter>,
    /// 1 while a node is flapping (automatic failback to it suspended).
    pub node_flapping: Family<NodeLabels, Gauge>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mups");
        let messages = Family::default();
        registry.register("messages", "ISO 8583 messages routed", messages.clone());
        let response_seconds = Family::<BankNodeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "response_duration_seconds",
            "Time from a request leaving mups to its response arriving",
            response_seconds.clone(),
        );
        let responses = Family::default();
        registry.register("responses", "Matched responses by response code (DE39)", responses.clone());
        let timeouts = Family::default();
        registry.register("timeouts", "Requests not answered in time, by requesting side", timeouts.clone());
        let late = Family::default();
        registry.register(
            "late_responses",
            "Responses after their request timed out (delivered)",
            late.clone(),
        );
        let unmatched = Family::default();
        registry.register(
            "unmatched_responses",
            "Responses matching no request (delivered)",
            unmatched.clone(),
        );
        let bad_messages = Family::default();
        registry.register(
            "bad_messages",
            "Messages that did not decode under the bank layout",
            bad_messages.clone(),
        );
        let no_route = Family::default();
        registry.register("no_route", "Bank requests not sent: their node was down", no_route.clone());
        let undeliverable = Family::default();
        registry.register("undeliverable", "Messages for a bank with no live session", undeliverable.clone());
        let queue_overflow = Family::default();
        registry.register("queue_overflow", "Messages dropped on a full link queue", queue_overflow.clone());
        let inflight = Family::default();
        registry.register("inflight_requests", "Bank requests in flight", inflight.clone());
        let route = Family::default();
        registry.register("bank_route", "1 on the node each bank is routed to", route.clone());
        let sessions = Family::default();
        registry.register("sessions", "Bank sessions by application state", sessions.clone());
        let node_up = Family::default();
        registry.register("node_up", "1 while the node link is up", node_up.clone());
        let node_rtt_micros = Family::default();
        registry.register(
            "node_heartbeat_rtt_microseconds",
            "Last heartbeat round trip",
            node_rtt_micros.clone(),
        );
        let pups_attached = Gauge::default();
        registry.register("pups_attached", "1 while pups is attached", pups_attached.clone());
        let declined = Family::default();
        registry.register(
            "declined",
            "Bank requests answered with a synthetic decline because their node was lost",
            declined.clone(),
        );
        let switchovers = Family::default();
        registry.register("switchovers", "Finished FO switchovers by outcome and mode", switchovers.clone());
        let switchover_hold_seconds =
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0]);
        registry.register(
            "switchover_hold_seconds",
            "How long a switchover held its bank's requests",
            switchover_hold_seconds.clone(),
        );
        let switchovers_running = Gauge::default();
        registry.register("switchovers_running", "FO switchovers under way", switchovers_running.clone());
        let node_down_events = Family::default();
        registry.register("node_down_events", "Times a node link went down", node_down_events.clone());
        let node_flapping = Family::default();
        registry.register(
            "node_flapping",
            "1 while a node is flapping (automatic failback to it suspended)",
            node_flapping.clone(),
        );
        Self {
            registry: Arc::new(registry),
            messages,
            response_seconds,
            responses,
            timeouts,
            late,
            unmatched,
            bad_messages,
            no_route,
            undeliverable,
            queue_overflow,
            inflight,
            route,
            sessions,
            node_up,
            node_rtt_micros,
            pups_attached,
            declined,
            switchovers,
            switchover_hold_seconds,
            switchovers_running,
            node_down_events,
            node_flapping,
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
