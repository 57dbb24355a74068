//! Counters of everything the simulated node sees and does.
//!
//! Tests assert on them instead of on timing, and an operator reads them to know
//! what a staging run did: the binary prints them as JSON periodically and on
//! exit. Counters only grow; the few gauges (`links_open`, `inflight`,
//! `originated_inflight`) say so in their docs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A snapshot of the node's counters ([`FoNodeHandle::stats`](super::FoNodeHandle::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// The node id.
    pub node_id: String,
    /// Milliseconds since the node started.
    pub uptime_ms: u64,

    /// Connections accepted.
    pub links_accepted: u64,
    /// Links open now, `HELLO` exchanged (gauge).
    pub links_open: u64,
    /// Connections closed during the handshake (no, late, or unacceptable `HELLO`;
    /// no common version).
    pub handshake_failures: u64,
    /// Links closed because a frame did not decode.
    pub decode_errors: u64,
    /// Links closed because nothing was received for `controller_timeout_ms`.
    pub controller_timeouts: u64,
    /// `HELLO`s sent.
    pub hello_sent: u64,
    /// `HELLO`s received (a second one on a link is also a protocol error).
    pub hello_received: u64,

    /// `HEARTBEAT`s received.
    pub heartbeats_received: u64,
    /// `HEARTBEAT_ACK`s sent.
    pub heartbeat_acks_sent: u64,
    /// `HEARTBEAT`s left unanswered by the `ignore_heartbeats` hook.
    pub heartbeats_ignored: u64,
    /// Our own `HEARTBEAT`s sent.
    pub heartbeats_sent: u64,
    /// `HEARTBEAT_ACK`s received for them.
    pub heartbeat_acks_received: u64,
    /// `BANK_STATE`s received.
    pub bank_states_received: u64,

    /// `DATA` received (any MTI).
    pub data_received: u64,
    /// `DATA` received, by MTI (`"0100"`, or `"unparsed"`).
    pub received_by_mti: BTreeMap<String, u64>,
    /// Responses sent to banks' requests.
    pub responses_sent: u64,
    /// Responses sent, by DE39.
    pub responses_by_code: BTreeMap<String, u64>,
    /// Requests whose response was delayed by a rule.
    pub delayed: u64,
    /// Requests left unanswered by a rule.
    pub dropped_by_rule: u64,
    /// Links closed by a rule.
    pub closed_by_rule: u64,
    /// Rule matches, by rule label (name, or `#index`).
    pub rule_hits: BTreeMap<String, u64>,
    /// Notifications received (no response is due).
    pub notifications: u64,
    /// `DATA` for a bank the node is not active for (answered anyway).
    pub data_while_inactive: u64,
    /// `DATA` for a bank the node does not serve (dropped).
    pub unknown_bank: u64,
    /// `DATA` whose ISO 8583 message does not parse under the bank's layout (dropped).
    pub parse_errors: u64,
    /// Messages that break the protocol's rules (wrong direction, a message only
    /// nodes send, a second `HELLO`); dropped, the link stays up.
    pub protocol_errors: u64,
    /// Responses that could not be built or had no link to go to.
    pub response_errors: u64,

    /// Requests (and echo tests) originated to banks.
    pub originated_sent: u64,
    /// Originated requests answered (response matched by correlation id).
    pub originated_answered: u64,
    /// Originated requests not answered in time.
    pub originated_timed_out: u64,
    /// Origination ticks skipped: no link, or the bank is not served right now.
    pub originate_skipped: u64,
    /// Responses matching no originated request in flight.
    pub unmatched_responses: u64,
    /// Responses `mups` flagged `LATE`.
    pub late_responses: u64,

    /// Switchover commands received, by name.
    pub commands_received: BTreeMap<String, u64>,
    /// `ACK`s sent.
    pub acks_sent: u64,
    /// `NACK`s sent.
    pub nacks_sent: u64,
    /// Commands swallowed by the `ignore_on` hook.
    pub commands_ignored: u64,
    /// `CONTEXT`s sent (as a switchover source).
    pub contexts_sent: u64,
    /// `CONTEXT`s taken (as a switchover target).
    pub contexts_received: u64,
    /// Contexts of requests the other node originated whose id equals one of ours
    /// (acknowledged, not tracked: their responses go to the node that sent them).
    pub contexts_not_tracked: u64,
    /// `SYNC_END`s sent.
    pub sync_ends_sent: u64,
    /// In-flight requests dropped by `DEACTIVATE` (handed over, or taken and
    /// given back by an aborted switchover).
    pub inflight_dropped: u64,
    /// Received requests not answered yet (gauge).
    pub inflight: u64,
    /// Originated requests awaiting their response (gauge).
    pub originated_inflight: u64,
}

impl Stats {
    /// Adds one to a counter of a map.
    pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
        match map.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                map.insert(key.to_owned(), 1);
            }
        }
    }
}
