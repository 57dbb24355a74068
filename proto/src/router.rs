//! The router: the sans-IO heart of `mups`. It decides where every bank message and
//! every FO node message goes, tracks every request in flight in both directions,
//! applies timeouts, and follows each session's application state (signed on,
//! signed off, echo failing) from network-management traffic.
//!
//! Inputs are calls (`session_up`, `from_bank`, `from_node`, `handle_timeout`, …)
//! that take `now` (which must never go backwards between calls); outputs are [`Action`]s drained with [`Router::poll_action`],
//! and the next deadline from [`Router::poll_timeout`]. The driver in `mups` does
//! the I/O; tests drive it with virtual time.
//!
//! Bank requests are tracked by our own correlation id (the FO node returns it in
//! its DATA), so responses are routed without relying on ISO fields. FO-originated
//! requests are tracked by the bank's matching key, because the bank's response
//! carries only ISO fields. Nothing is dropped silently: every message that cannot
//! go where it should is counted and reported as an [`Event`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::fo_link::{AppState, Data, DataFlags, Direction};
use crate::iso8583::mask::masked_hexdump;
use crate::iso8583::respond::build_decline;
use crate::iso8583::{
    DecodeError, Layout, MatchKey, MatchKeyConfig, Message, Mti, NetMgmt, NetMgmtCodes, Role,
};

/// A bank TCP session, numbered by `pups`.
pub type SessionId = u64;

/// An FO node, by its index in [`RouterConfig::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NodeId(pub u16);

/// A bank, by its index in [`RouterConfig::banks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BankIdx(pub u16);

/// What to do with a bank message that does not decode under the bank's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadMessagePolicy {
    /// Count it, log it masked, and drop it; the session goes on.
    #[default]
    Drop,
    /// Count it, log it masked, and close the session.
    Close,
}

/// What happens to a bank's requests when their node is lost (in flight on a node
/// that went down, or arriving while no node of the bank is up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum NodeLossPolicy {
    /// Nothing is sent: the bank's own timer runs out (it may then reverse or
    /// retry by its rules). Each request is counted as a timeout or `no_route`.
    #[default]
    Timeout,
    /// Answer at once, in the node's place, with a decline carrying DE39 `code`
    /// (for example `91`, issuer or switch inoperative). Counted as `declined`.
    Decline {
        /// The response code, as the layout writes DE39.
        code: String,
    },
}

/// What the router needs to know about one bank.
#[derive(Debug, Clone)]
pub struct BankSpec {
    /// The bank's id, as in configuration and on the FO link.
    pub id: String,
    /// The bank's message layout.
    pub layout: Arc<Layout>,
    /// Which fields tie a response to its request.
    pub match_key: MatchKeyConfig,
    /// Network-management codes.
    pub netmgmt: NetMgmtCodes,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// The node the bank is routed to.
    pub active: NodeId,
    /// Its hot reserve, for automatic failover.
    pub reserve: Option<NodeId>,
    /// What to do with a message that does not decode.
    pub bad_message: BadMessagePolicy,
    /// What to do with requests whose node is lost.
    pub on_node_loss: NodeLossPolicy,
}

/// The router's configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// FO node names (`"A"`, `"B"`); a [`NodeId`] indexes this list.
    pub nodes: Vec<String>,
    /// The banks; a [`BankIdx`] indexes this list.
    pub banks: Vec<BankSpec>,
    /// How long a timed-out request is remembered, so that its response is reported
    /// as late rather than unmatched (jPOS keeps unhandled responses 120 s).
    pub late_window: Duration,
    /// Messages held per bank during a switchover before [`Event::HoldLimit`] asks
    /// for it to be aborted (they are still kept, never dropped).
    pub hold_limit: usize,
}

/// Which side a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A bank session.
    Bank,
    /// An FO node.
    Node,
}

/// Something the driver should log or turn into metrics.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A request got its response. `latency` is from the request leaving us to the
    /// response arriving.
    Answered {
        /// The bank.
        bank: BankIdx,
        /// The node that answered (bank requests) or asked (FO-originated requests).
        node: NodeId,
        /// Who sent the request.
        requester: Side,
        /// The request's MTI.
        mti: Mti,
        /// The response code (DE39), if any.
        response_code: Option<String>,
        /// Time in flight.
        latency: Duration,
    },
    /// A request got no response in time.
    Timeout {
        /// The bank.
        bank: BankIdx,
        /// The session.
        session: SessionId,
        /// The node involved.
        node: NodeId,
        /// Who sent the request.
        requester: Side,
        /// Its matching key.
        key: MatchKey,
    },
    /// A response arrived after its request timed out; it was still delivered.
    Late {
        /// The bank.
        bank: BankIdx,
        /// The node involved.
        node: NodeId,
        /// Who sent the response.
        from: Side,
        /// Its matching key.
        key: MatchKey,
    },
    /// A response matched no request; it was still delivered (see the counters).
    Unmatched {
        /// The bank.
        bank: BankIdx,
        /// Who sent it.
        from: Side,
        /// Its matching key, if it decoded.
        key: Option<MatchKey>,
    },
    /// A message did not decode under the bank's layout.
    BadMessage {
        /// The bank.
        bank: BankIdx,
        /// The session, for bank messages.
        session: Option<SessionId>,
        /// Who sent it.
        from: Side,
        /// What is wrong, with field and offset.
        error: DecodeError,
        /// Masked hex dump of the message.
        dump: String,
        /// Whether the session is being closed for it.
        closed: bool,
    },
    /// A bank request could not be sent: its node is not connected.
    NoRoute {
        /// The bank.
        bank: BankIdx,
        /// The node it should go to.
        node: NodeId,
        /// Its matching key.
        key: MatchKey,
    },
    /// A message for a bank could not be delivered: no live session.
    Undeliverable {
        /// The bank.
        bank: BankIdx,
        /// The session it was for, if known.
        session: Option<SessionId>,
        /// Its MTI, if it decoded.
        mti: Option<Mti>,
    },
    /// A session's application state changed.
    AppStateChanged {
        /// The bank.
        bank: BankIdx,
        /// The session.
        session: SessionId,
        /// The new state.
        state: AppState,
    },
    /// A second response to a request already answered: dropped, not delivered twice.
    Duplicate {
        /// The bank.
        bank: BankIdx,
        /// The node that sent it.
        node: NodeId,
    },
    /// A bank request was answered with a synthetic decline: its node was lost
    /// (see [`NodeLossPolicy::Decline`]).
    Declined {
        /// The bank.
        bank: BankIdx,
        /// The session it was sent to.
        session: SessionId,
        /// The node that was lost.
        node: NodeId,
        /// The request's matching key.
        key: MatchKey,
        /// Whether the request was in flight on the node when it went down (else
        /// it arrived while no node was up).
        was_in_flight: bool,
    },
    /// A bank's held messages reached the hold limit: the switchover should abort.
    HoldLimit {
        /// The bank.
        bank: BankIdx,
        /// Messages held.
        held: usize,
    },
    /// A node sent DATA for a bank we do not know, or in the wrong direction.
    Protocol {
        /// The node.
        node: NodeId,
        /// What was wrong.
        detail: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write a message to a bank session (through `pups`).
    ToBank {
        /// The bank.
        bank: BankIdx,
        /// The session.
        session: SessionId,
        /// The ISO 8583 message, as received from the node.
        message: Bytes,
    },
    /// Send DATA to a node.
    ToNode {
        /// The node.
        node: NodeId,
        /// The frame.
        data: Data,
    },
    /// Close a bank session (through `pups`).
    CloseSession {
        /// The session.
        session: SessionId,
        /// Why.
        reason: String,
    },
    /// Log or count.
    Event(Event),
}

/// Per-bank counters, monotonic since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BankCounters {
    /// Messages received from the bank's sessions.
    pub from_bank: u64,
    /// Messages written to the bank's sessions.
    pub to_bank: u64,
    /// Bank requests sent to a node.
    pub requests_to_node: u64,
    /// Node responses delivered to the bank (matched).
    pub responses_to_bank: u64,
    /// FO-originated requests delivered to the bank.
    pub fo_requests_to_bank: u64,
    /// Bank responses to FO-originated requests returned to their node.
    pub fo_responses_to_node: u64,
    /// Notifications and other unpaired messages forwarded.
    pub unpaired_forwarded: u64,
    /// Bank requests whose response did not come in time.
    pub timeouts: u64,
    /// FO-originated requests the bank did not answer in time.
    pub fo_timeouts: u64,
    /// Responses that arrived after their request timed out (delivered).
    pub late: u64,
    /// Node responses that matched nothing (delivered to a session of the bank).
    pub unmatched_from_node: u64,
    /// Bank responses that matched nothing (forwarded to the active node, flagged).
    pub unmatched_from_bank: u64,
    /// Messages that did not decode.
    pub bad_messages: u64,
    /// Bank requests not sent because their node was not connected.
    pub no_route: u64,
    /// Messages for the bank that no live session could take.
    pub undeliverable: u64,
    /// Second responses to requests already answered (dropped, not delivered twice).
    pub duplicates_dropped: u64,
    /// Requests answered with a synthetic decline because their node was lost.
    pub declined: u64,
}

/// One session as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// The session id.
    pub id: SessionId,
    /// The bank's address.
    pub peer: String,
    /// Application state.
    #[serde(serialize_with = "serialize_app_state")]
    pub app_state: AppState,
    /// Bank requests of this session in flight.
    pub inflight: u64,
    /// Seconds since the last message either way.
    pub idle_secs: f64,
    /// Seconds since the last successful echo, if any.
    pub since_echo_secs: Option<f64>,
}

struct Session {
    bank: BankIdx,
    peer: String,
    signed: AppState,
    echo_failing: bool,
    last_message: Instant,
    last_echo_ok: Option<Instant>,
    inflight: u64,
}

impl Session {
    fn app_state(&self) -> AppState {
        if self.echo_failing { AppState::EchoFailing } else { self.signed }
    }
}

struct Bank {
    spec: BankSpec,
    /// Messages held while a switchover cuts over (`None`: not held).
    held: Option<VecDeque<Held>>,
    sessions: Vec<SessionId>,
    /// Nodes' DATA that came while the bank had no session, with when it stops
    /// waiting for one (see [`SESSION_WAIT`]).
    awaiting_session: VecDeque<(Instant, NodeId, Data)>,
    next_session: usize,
    counters: BankCounters,
    inflight: u64,
}

/// A bank message held during a switchover, with what routing already read from it.
struct Held {
    received: Instant,
    session: SessionId,
    message: Bytes,
    key: MatchKey,
    netmgmt: Option<NetMgmt>,
    mti: Mti,
    /// For the bank's response to an FO-originated request: the node that had the
    /// request and its correlation id.
    fo_answer: Option<(NodeId, u64)>,
}

/// A bank request waiting for its node's response, by our correlation id.
struct Pending {
    bank: BankIdx,
    session: SessionId,
    node: NodeId,
    mti: Mti,
    netmgmt: Option<NetMgmt>,
    key: MatchKey,
    sent_at: Instant,
    /// The request itself, kept only when the bank's node-loss policy may have to
    /// answer it with a decline.
    request: Option<Bytes>,
}

/// An FO-originated request waiting for the bank's response, by matching key.
struct FoPending {
    node: NodeId,
    correlation: u64,
    session: SessionId,
    mti: Mti,
    netmgmt: Option<NetMgmt>,
    sent_at: Instant,
    deadline: Instant,
}

/// What `answered` needs of a request, whichever way it went.
struct Answer {
    node: NodeId,
    session: SessionId,
    mti: Mti,
    sent_at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    /// A bank request's deadline, by correlation id.
    Request(u64),
    /// An FO-originated request's deadline.
    FoRequest(BankIdx, MatchKey, u64),
    /// Forget a timed-out bank request.
    ForgetExpired(u64),
    /// Forget a timed-out FO-originated request.
    ForgetFoExpired(BankIdx, MatchKey, u64),
    /// Nodes' DATA waiting for a session of the bank may have waited enough.
    SessionWait(BankIdx),
}

/// How long a node's DATA for a bank with no live session waits for one before it
/// counts as undeliverable. A bank reconnecting, or the sessions a new active
/// appliance takes over from its twin (they come up only once it serves them,
/// after its FO links), would otherwise lose an FO node's request sent just then.
pub const SESSION_WAIT: Duration = Duration::from_secs(2);

/// Most node messages waiting for a bank's session; beyond, undeliverable at once.
const SESSION_WAIT_MAX: usize = 4096;

/// The router. See the module documentation.
pub struct Router {
    nodes: Vec<String>,
    node_up: Vec<bool>,
    banks: Vec<Bank>,
    bank_index: HashMap<String, BankIdx>,
    sessions: FxHashMap<SessionId, Session>,
    // Our own ids: a fast hash is safe here. Maps keyed by bank-supplied values
    // (matching keys) keep std's randomized hash.
    pending: FxHashMap<u64, Pending>,
    expired: FxHashMap<u64, Pending>,
    fo_pending: HashMap<(BankIdx, MatchKey), VecDeque<FoPending>>,
    fo_expired: HashMap<(BankIdx, MatchKey), VecDeque<FoPending>>,
    timers: TimerQueues,
    next_correlation: u64,
    late_window: Duration,
    hold_limit: usize,
    /// Correlation ids answered recently, so a second response (the old node still
    /// answering a request handed over in a switchover) is dropped, not delivered twice.
    answered_recently: FxHashSet<u64>,
    answered_order: VecDeque<u64>,
    actions: VecDeque<Action>,
}

impl Router {
    /// A router with no sessions and every node down.
    pub fn new(cfg: RouterConfig) -> Self {
        let bank_index =
            cfg.banks.iter().enumerate().map(|(i, b)| (b.id.clone(), BankIdx(i as u16))).collect();
        Self {
            node_up: vec![false; cfg.nodes.len()],
            nodes: cfg.nodes,
            banks: cfg
                .banks
                .into_iter()
                .map(|spec| Bank {
                    spec,
                    held: None,
                    awaiting_session: VecDeque::new(),
                    sessions: Vec::new(),
                    next_session: 0,
                    counters: BankCounters::default(),
                    inflight: 0,
                })
                .collect(),
            bank_index,
            sessions: FxHashMap::default(),
            pending: FxHashMap::default(),
            expired: FxHashMap::default(),
            fo_pending: HashMap::new(),
            fo_expired: HashMap::new(),
            timers: TimerQueues::default(),
            next_correlation: 1,
            late_window: cfg.late_window,
            hold_limit: cfg.hold_limit,
            answered_recently: FxHashSet::default(),
            answered_order: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    /// The index of a bank id.
    pub fn bank(&self, id: &str) -> Option<BankIdx> {
        self.bank_index.get(id).copied()
    }

    /// A bank's id.
    pub fn bank_id(&self, bank: BankIdx) -> &str {
        &self.banks[usize::from(bank.0)].spec.id
    }

    /// A node's name.
    pub fn node_name(&self, node: NodeId) -> &str {
        &self.nodes[usize::from(node.0)]
    }

    /// Every node, with whether its link is up.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &str, bool)> + '_ {
        self.nodes.iter().enumerate().map(|(i, n)| (NodeId(i as u16), n.as_str(), self.node_up[i]))
    }

    /// Every bank index.
    pub fn banks(&self) -> impl Iterator<Item = BankIdx> + use<> {
        (0..self.banks.len()).map(|i| BankIdx(i as u16))
    }

    /// A bank's counters.
    pub fn counters(&self, bank: BankIdx) -> &BankCounters {
        &self.banks[usize::from(bank.0)].counters
    }

    /// Bank requests of a bank in flight.
    pub fn inflight(&self, bank: BankIdx) -> u64 {
        self.banks[usize::from(bank.0)].inflight
    }

    /// The node a bank is routed to.
    pub fn active_node(&self, bank: BankIdx) -> NodeId {
        self.banks[usize::from(bank.0)].spec.active
    }

    /// The bank's reserve node, if it has one.
    pub fn reserve_node(&self, bank: BankIdx) -> Option<NodeId> {
        self.banks[usize::from(bank.0)].spec.reserve
    }

    /// Whether a node's link is up.
    pub fn node_is_up(&self, node: NodeId) -> bool {
        self.node_up[usize::from(node.0)]
    }

    /// Routes a bank to another node from now on. Requests in flight on the old
    /// node keep their route back.
    pub fn set_active_node(&mut self, bank: BankIdx, node: NodeId) {
        self.banks[usize::from(bank.0)].spec.active = node;
    }

    /// A bank's live sessions.
    pub fn sessions(&self, bank: BankIdx, now: Instant) -> Vec<SessionView> {
        self.banks[usize::from(bank.0)]
            .sessions
            .iter()
            .filter_map(|id| self.sessions.get(id).map(|s| (id, s)))
            .map(|(id, s)| SessionView {
                id: *id,
                peer: s.peer.clone(),
                app_state: s.app_state(),
                inflight: s.inflight,
                idle_secs: now.saturating_duration_since(s.last_message).as_secs_f64(),
                since_echo_secs: s.last_echo_ok.map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
            .collect()
    }

    /// A node's link came up or went down. Requests in flight on a node that went
    /// down stay tracked until their deadline: a response may still come if the
    /// link returns, and otherwise the bank sees a timeout (the default policy).
    /// Banks whose policy is [`NodeLossPolicy::Decline`] get a decline at once
    /// for each of their requests in flight on the lost node.
    pub fn node_link(&mut self, node: NodeId, up: bool) {
        let was_up = std::mem::replace(&mut self.node_up[usize::from(node.0)], up);
        if up || !was_up {
            return;
        }
        let mut lost: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.node == node && p.request.is_some())
            .map(|(&c, _)| c)
            .collect();
        // In the order the bank sent them.
        lost.sort_unstable();
        for correlation in lost {
            let Some(p) = self.pending.remove(&correlation) else { continue };
            // Should the node come back and answer after all, that answer is a
            // duplicate: the bank already has its decline.
            self.remember_answered(correlation);
            let b = usize::from(p.bank.0);
            self.banks[b].inflight -= 1;
            if let Some(s) = self.sessions.get_mut(&p.session) {
                s.inflight -= 1;
            }
            let request = p.request.expect("filtered");
            self.decline(p.bank, p.session, node, p.key, &request, true);
        }
    }

    /// Answers `request` in the node's place with the bank's decline code.
    fn decline(
        &mut self,
        bank: BankIdx,
        session: SessionId,
        node: NodeId,
        key: MatchKey,
        request: &[u8],
        was_in_flight: bool,
    ) {
        let b = usize::from(bank.0);
        let NodeLossPolicy::Decline { code } = &self.banks[b].spec.on_node_loss else { return };
        let layout = Arc::clone(&self.banks[b].spec.layout);
        // The request decoded when it arrived, and the code was checked against the
        // layout at configuration time: failing here means a bug, which must not
        // cost the bank its answer silently.
        let built = Message::parse(&layout, request).map_err(|e| e.to_string()).and_then(|msg| {
            let also = self.banks[b].spec.match_key.fields_for(&msg.mti().pairing_class()).to_vec();
            build_decline(&layout, &msg, code, &also).map(|d| (d, msg.mti())).map_err(|e| e.to_string())
        });
        match built {
            Ok((decline, mti)) => {
                self.banks[b].counters.declined += 1;
                self.event(Event::Declined { bank, session, node, key, was_in_flight });
                self.send_to_bank(bank, Some(session), mti.response(), Bytes::from(decline));
            }
            Err(detail) => {
                self.event(Event::Protocol { node, detail: format!("cannot build a decline: {detail}") })
            }
        }
    }

    /// `pups` reports a new bank session (or an existing one after `mups` attached).
    pub fn session_up(&mut self, now: Instant, session: SessionId, bank: BankIdx, peer: String) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.peer = peer;
            return;
        }
        self.sessions.insert(
            session,
            Session {
                bank,
                peer,
                signed: AppState::Unknown,
                echo_failing: false,
                last_message: now,
                last_echo_ok: None,
                inflight: 0,
            },
        );
        self.banks[usize::from(bank.0)].sessions.push(session);
        // What the nodes sent while the bank had no session goes now, in order.
        let waiting = std::mem::take(&mut self.banks[usize::from(bank.0)].awaiting_session);
        for (until, node, data) in waiting {
            if until >= now {
                self.from_node(now, node, data);
            } else {
                self.undeliverable_waited(bank, data);
            }
        }
    }

    fn undeliverable_waited(&mut self, bank: BankIdx, data: Data) {
        let b = usize::from(bank.0);
        self.banks[b].counters.undeliverable += 1;
        let layout = Arc::clone(&self.banks[b].spec.layout);
        let mti = Message::parse(&layout, &data.message).ok().map(|m| m.mti());
        let wanted = (data.session_id != 0).then_some(data.session_id);
        self.event(Event::Undeliverable { bank, session: wanted, mti });
    }

    /// `pups` reports a session closed. Its requests in flight stay tracked: their
    /// responses will be counted as undeliverable.
    pub fn session_down(&mut self, session: SessionId) {
        if let Some(s) = self.sessions.remove(&session) {
            self.banks[usize::from(s.bank.0)].sessions.retain(|&id| id != session);
        }
    }

    /// A message from a bank session. `bank` is the bank `pups` accepted the
    /// session for (it comes with every message, so data may overtake `session_up`).
    pub fn from_bank(&mut self, now: Instant, bank: BankIdx, session: SessionId, message: Bytes) {
        if !self.sessions.contains_key(&session) {
            self.session_up(now, session, bank, String::new());
        }
        let b = usize::from(bank.0);
        self.banks[b].counters.from_bank += 1;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_message = now;
        }
        let layout = Arc::clone(&self.banks[b].spec.layout);
        let msg = match Message::parse(&layout, &message) {
            Ok(msg) => msg,
            Err(error) => {
                let close = self.banks[b].spec.bad_message == BadMessagePolicy::Close;
                self.banks[b].counters.bad_messages += 1;
                let dump = masked_hexdump(&message, Some(&layout), 256);
                self.event(Event::BadMessage {
                    bank,
                    session: Some(session),
                    from: Side::Bank,
                    error: error.clone(),
                    dump,
                    closed: close,
                });
                if close {
                    self.actions
                        .push_back(Action::CloseSession { session, reason: format!("bad message: {error}") });
                }
                return;
            }
        };
        let spec = &self.banks[b].spec;
        let key = spec.match_key.key(&msg);
        let netmgmt = spec.netmgmt.classify(&msg).and_then(Result::ok);
        let mti = msg.mti();
        let active = spec.active;
        match mti.role() {
            Role::Request | Role::Notification | Role::Other if self.banks[b].held.is_some() => {
                let held = Held { received: now, session, message, key, netmgmt, mti, fo_answer: None };
                let queue = self.banks[b].held.as_mut().expect("checked");
                queue.push_back(held);
                if queue.len() == self.hold_limit {
                    self.event(Event::HoldLimit { bank, held: self.hold_limit });
                }
            }
            Role::Request => self.forward_request(
                now,
                now,
                bank,
                Held { received: now, session, message, key, netmgmt, mti, fo_answer: None },
            ),
            Role::Response => {
                let response_code = msg.response_code().and_then(Result::ok).map(|rc| rc.0);
                let slot = (bank, key);
                if let Some(fo) = pop_front(&mut self.fo_pending, &slot) {
                    self.banks[b].counters.fo_responses_to_node += 1;
                    let request =
                        Answer { node: fo.node, session: fo.session, mti: fo.mti, sent_at: fo.sent_at };
                    self.answered(now, bank, Side::Node, request, fo.netmgmt.as_ref(), response_code);
                    if let Some(queue) = self.banks[b].held.as_mut() {
                        // A switchover is under way: the node may have handed the request
                        // over; the response goes, at release, to whichever node has it.
                        let (key, fo_answer) = (slot.1, Some((fo.node, fo.correlation)));
                        queue.push_back(Held {
                            received: now,
                            session,
                            message,
                            key,
                            netmgmt: None,
                            mti,
                            fo_answer,
                        });
                    } else {
                        self.send_to_node(
                            fo.node,
                            bank,
                            session,
                            fo.correlation,
                            DataFlags::empty(),
                            message,
                        );
                    }
                } else if let Some(fo) = pop_front(&mut self.fo_expired, &slot) {
                    self.banks[b].counters.late += 1;
                    self.event(Event::Late { bank, node: fo.node, from: Side::Bank, key: slot.1 });
                    self.send_to_node(fo.node, bank, session, fo.correlation, DataFlags::LATE, message);
                } else {
                    self.banks[b].counters.unmatched_from_bank += 1;
                    self.event(Event::Unmatched { bank, from: Side::Bank, key: Some(slot.1) });
                    self.send_to_node(active, bank, session, 0, DataFlags::UNMATCHED, message);
                }
            }
            Role::Notification | Role::Other => {
                self.banks[b].counters.unpaired_forwarded += 1;
                self.send_to_node(active, bank, session, 0, DataFlags::empty(), message);
            }
        }
    }

    /// Sends a bank request to the bank's active node and tracks it. Its deadline
    /// counts from when the bank sent it (`held.received`), hold time included.
    fn forward_request(&mut self, now: Instant, received: Instant, bank: BankIdx, held: Held) {
        let b = usize::from(bank.0);
        let Held { session, message, key, netmgmt, mti, .. } = held;
        let active = self.banks[b].spec.active;
        if !self.node_up[usize::from(active.0)] {
            if matches!(self.banks[b].spec.on_node_loss, NodeLossPolicy::Decline { .. }) {
                return self.decline(bank, session, active, key, &message, false);
            }
            self.banks[b].counters.no_route += 1;
            self.event(Event::NoRoute { bank, node: active, key });
            return;
        }
        let correlation = self.next_correlation;
        self.next_correlation += 1;
        let delay = self.banks[b].spec.request_timeout;
        let deadline = (received + delay).max(now);
        let request = matches!(self.banks[b].spec.on_node_loss, NodeLossPolicy::Decline { .. })
            .then(|| message.clone());
        self.pending.insert(
            correlation,
            Pending { bank, session, node: active, mti, netmgmt, key, sent_at: now, request },
        );
        let pending = &self.pending;
        self.timers.prune(delay, |t| !matches!(t, Timer::Request(c) if !pending.contains_key(c)));
        self.timers.push(delay, deadline, Timer::Request(correlation));
        self.banks[b].counters.requests_to_node += 1;
        self.banks[b].inflight += 1;
        if let Some(s) = self.sessions.get_mut(&session) {
            s.inflight += 1;
        }
        self.send_to_node(active, bank, session, correlation, DataFlags::empty(), message);
    }

    /// Holds the bank's traffic towards the nodes (requests, notifications, and
    /// responses to FO-originated requests, which the old node may be handing over):
    /// it is queued, in order, until [`Router::release`]. Used by switchovers.
    pub fn hold(&mut self, bank: BankIdx) {
        let held = &mut self.banks[usize::from(bank.0)].held;
        if held.is_none() {
            *held = Some(VecDeque::new());
        }
    }

    /// Messages held for a bank.
    pub fn held(&self, bank: BankIdx) -> usize {
        self.banks[usize::from(bank.0)].held.as_ref().map_or(0, VecDeque::len)
    }

    /// Routes the bank to `to` and sends what was held, in order.
    ///
    /// When the route moves, what the old node had in flight for the bank is now
    /// `to`'s (a committed switchover handed it over as contexts; in a rolled-back
    /// one `to` is the old node): bank requests still waiting for an answer (should
    /// the old node die later, they are not its losses: no decline, no blame in the
    /// metrics), and FO-originated requests waiting for the bank's response, whose
    /// responses (and the held ones) go to `to`.
    pub fn release(&mut self, now: Instant, bank: BankIdx, to: NodeId) {
        let b = usize::from(bank.0);
        let old = std::mem::replace(&mut self.banks[b].spec.active, to);
        if old != to {
            if self.banks[b].inflight > 0 {
                for p in self.pending.values_mut().filter(|p| p.bank == bank && p.node == old) {
                    p.node = to;
                }
            }
            for map in [&mut self.fo_pending, &mut self.fo_expired] {
                for (_, queue) in map.iter_mut().filter(|((of, _), _)| *of == bank) {
                    queue.iter_mut().filter(|p| p.node == old).for_each(|p| p.node = to);
                }
            }
        }
        let Some(held) = self.banks[b].held.take() else { return };
        for h in held {
            if let Some((node, correlation)) = h.fo_answer {
                let node = if node == old { to } else { node };
                self.send_to_node(node, bank, h.session, correlation, DataFlags::empty(), h.message);
            } else if h.mti.role() == Role::Request {
                self.forward_request(now, h.received, bank, h);
            } else {
                self.banks[b].counters.unpaired_forwarded += 1;
                self.send_to_node(to, bank, h.session, 0, DataFlags::empty(), h.message);
            }
        }
    }

    /// DATA from a node.
    pub fn from_node(&mut self, now: Instant, node: NodeId, data: Data) {
        let Some(bank) = self.bank(&data.bank_id) else {
            let detail = format!("DATA for unknown bank {:?}", data.bank_id);
            return self.event(Event::Protocol { node, detail });
        };
        if data.direction != Direction::ToBank {
            let detail = format!("DATA towards the node received from the node (bank {})", data.bank_id);
            return self.event(Event::Protocol { node, detail });
        }
        let b = usize::from(bank.0);
        if self.banks[b].sessions.is_empty() {
            // No session to deliver to: wait for one (bounded), as if it came then.
            if self.banks[b].awaiting_session.len() >= SESSION_WAIT_MAX {
                return self.undeliverable_waited(bank, data);
            }
            let until = now + SESSION_WAIT;
            self.banks[b].awaiting_session.push_back((until, node, data));
            self.timers.push(SESSION_WAIT, until, Timer::SessionWait(bank));
            return;
        }
        let layout = Arc::clone(&self.banks[b].spec.layout);
        let parsed = Message::parse(&layout, &data.message);
        // Correlation ids of requests the node originates are the node's own, a
        // different namespace from ours: only a non-request can answer one of ours.
        let is_request = parsed.as_ref().is_ok_and(|m| m.mti().role() == Role::Request);
        // A response we are waiting for is routed by correlation id even if it does not
        // decode: we are a transparent proxy, the bank judges its content.
        if let Some(p) = (!is_request).then(|| self.pending.remove(&data.correlation_id)).flatten() {
            self.remember_answered(data.correlation_id);
            self.banks[b].inflight -= 1;
            if let Some(s) = self.sessions.get_mut(&p.session) {
                s.inflight -= 1;
            }
            let response_code = parsed.as_ref().ok().and_then(|m| m.response_code()).and_then(Result::ok);
            let response_code = response_code.map(|rc| rc.0);
            self.banks[b].counters.responses_to_bank += 1;
            let request = Answer { node: p.node, session: p.session, mti: p.mti, sent_at: p.sent_at };
            self.answered(now, bank, Side::Bank, request, p.netmgmt.as_ref(), response_code);
            return self.send_to_bank(bank, Some(p.session), parsed.ok().map(|m| m.mti()), data.message);
        }
        if !is_request && data.correlation_id != 0 && self.answered_recently.contains(&data.correlation_id) {
            self.banks[b].counters.duplicates_dropped += 1;
            return self.event(Event::Duplicate { bank, node });
        }
        if let Some(p) = (!is_request).then(|| self.expired.remove(&data.correlation_id)).flatten() {
            self.remember_answered(data.correlation_id);
            self.banks[b].counters.late += 1;
            let mti = parsed.as_ref().ok().map(Message::mti);
            self.event(Event::Late { bank, node: p.node, from: Side::Node, key: p.key });
            return self.send_to_bank(bank, Some(p.session), mti, data.message);
        }
        let msg = match parsed {
            Ok(msg) => msg,
            Err(error) => {
                self.banks[b].counters.bad_messages += 1;
                let dump = masked_hexdump(&data.message, Some(&layout), 256);
                return self.event(Event::BadMessage {
                    bank,
                    session: None,
                    from: Side::Node,
                    error,
                    dump,
                    closed: false,
                });
            }
        };
        let mti = msg.mti();
        let wanted = (data.session_id != 0).then_some(data.session_id);
        match mti.role() {
            Role::Request => {
                let spec = &self.banks[b].spec;
                let key = spec.match_key.key(&msg);
                let netmgmt = spec.netmgmt.classify(&msg).and_then(Result::ok);
                let deadline = now + spec.request_timeout;
                let Some(session) = self.pick_session(bank, wanted) else {
                    self.banks[b].counters.undeliverable += 1;
                    return self.event(Event::Undeliverable { bank, session: wanted, mti: Some(mti) });
                };
                self.fo_pending.entry((bank, key.clone())).or_default().push_back(FoPending {
                    node,
                    correlation: data.correlation_id,
                    session,
                    mti,
                    netmgmt,
                    sent_at: now,
                    deadline,
                });
                let delay = self.banks[b].spec.request_timeout;
                let fo_pending = &self.fo_pending;
                self.timers.prune(delay, |t| match t {
                    Timer::FoRequest(bank, key, c) => fo_pending
                        .get(&(*bank, key.clone()))
                        .is_some_and(|queue| queue.iter().any(|p| p.correlation == *c)),
                    _ => true,
                });
                self.timers.push(delay, deadline, Timer::FoRequest(bank, key, data.correlation_id));
                self.banks[b].counters.fo_requests_to_bank += 1;
                self.send_to_bank(bank, Some(session), Some(mti), data.message);
            }
            Role::Response => {
                let key = self.banks[b].spec.match_key.key(&msg);
                self.banks[b].counters.unmatched_from_node += 1;
                self.event(Event::Unmatched { bank, from: Side::Node, key: Some(key) });
                self.send_to_bank(bank, wanted, Some(mti), data.message);
            }
            Role::Notification | Role::Other => {
                self.banks[b].counters.unpaired_forwarded += 1;
                self.send_to_bank(bank, wanted, Some(mti), data.message);
            }
        }
    }

    /// Fires every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.timers.pop_due(now) {
            match timer {
                Timer::Request(correlation) => {
                    let Some(p) = self.pending.remove(&correlation) else { continue };
                    let b = usize::from(p.bank.0);
                    self.banks[b].inflight -= 1;
                    self.banks[b].counters.timeouts += 1;
                    if let Some(s) = self.sessions.get_mut(&p.session) {
                        s.inflight -= 1;
                    }
                    self.note_echo_timeout(p.session, p.netmgmt.as_ref());
                    self.event(Event::Timeout {
                        bank: p.bank,
                        session: p.session,
                        node: p.node,
                        requester: Side::Bank,
                        key: p.key.clone(),
                    });
                    self.timers.push(
                        self.late_window,
                        at + self.late_window,
                        Timer::ForgetExpired(correlation),
                    );
                    self.expired.insert(correlation, p);
                }
                Timer::FoRequest(bank, key, correlation) => {
                    let slot = (bank, key);
                    let Some(queue) = self.fo_pending.get_mut(&slot) else { continue };
                    let Some(pos) =
                        queue.iter().position(|p| p.correlation == correlation && p.deadline <= now)
                    else {
                        continue;
                    };
                    let p = queue.remove(pos).expect("position is valid");
                    if queue.is_empty() {
                        self.fo_pending.remove(&slot);
                    }
                    self.banks[usize::from(bank.0)].counters.fo_timeouts += 1;
                    self.note_echo_timeout(p.session, p.netmgmt.as_ref());
                    self.event(Event::Timeout {
                        bank,
                        session: p.session,
                        node: p.node,
                        requester: Side::Node,
                        key: slot.1.clone(),
                    });
                    self.timers.push(
                        self.late_window,
                        at + self.late_window,
                        Timer::ForgetFoExpired(bank, slot.1.clone(), correlation),
                    );
                    self.fo_expired.entry(slot).or_default().push_back(p);
                }
                Timer::ForgetExpired(correlation) => {
                    self.expired.remove(&correlation);
                }
                Timer::SessionWait(bank) => {
                    let b = usize::from(bank.0);
                    while self.banks[b].awaiting_session.front().is_some_and(|(until, _, _)| *until <= now) {
                        let (_, _, data) = self.banks[b].awaiting_session.pop_front().expect("checked");
                        self.undeliverable_waited(bank, data);
                    }
                }
                Timer::ForgetFoExpired(bank, key, correlation) => {
                    let slot = (bank, key);
                    if let Some(queue) = self.fo_expired.get_mut(&slot) {
                        queue.retain(|p| p.correlation != correlation);
                        if queue.is_empty() {
                            self.fo_expired.remove(&slot);
                        }
                    }
                }
            }
        }
    }

    /// Timers armed (in flight plus stale ones not yet dropped): for tests and metrics.
    pub fn timers_armed(&self) -> usize {
        self.timers.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// The next deadline, if any: call [`Router::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn event(&mut self, event: Event) {
        self.actions.push_back(Action::Event(event));
    }

    fn send_to_node(
        &mut self,
        node: NodeId,
        bank: BankIdx,
        session: SessionId,
        correlation_id: u64,
        flags: DataFlags,
        message: Bytes,
    ) {
        let data = Data {
            bank_id: self.bank_id(bank).to_owned(),
            session_id: session,
            direction: Direction::ToNode,
            correlation_id,
            flags,
            message,
        };
        self.actions.push_back(Action::ToNode { node, data });
    }

    /// Delivers to `wanted` if it is a live session of the bank, else to another one.
    fn send_to_bank(&mut self, bank: BankIdx, wanted: Option<SessionId>, mti: Option<Mti>, message: Bytes) {
        let b = usize::from(bank.0);
        match self.pick_session(bank, wanted) {
            Some(session) => {
                self.banks[b].counters.to_bank += 1;
                self.actions.push_back(Action::ToBank { bank, session, message });
            }
            None => {
                self.banks[b].counters.undeliverable += 1;
                self.event(Event::Undeliverable { bank, session: wanted, mti });
            }
        }
    }

    /// `wanted` if it is live and the bank's; else the next signed-on session of the
    /// bank in turn, else the next session at all.
    fn pick_session(&mut self, bank: BankIdx, wanted: Option<SessionId>) -> Option<SessionId> {
        if let Some(id) = wanted {
            if self.sessions.get(&id).is_some_and(|s| s.bank == bank) {
                return Some(id);
            }
        }
        let entry = &mut self.banks[usize::from(bank.0)];
        let n = entry.sessions.len();
        if n == 0 {
            return None;
        }
        let start = entry.next_session % n;
        let signed_on = (0..n).map(|i| (start + i) % n).find(|&i| {
            self.sessions.get(&entry.sessions[i]).is_some_and(|s| s.app_state() == AppState::SignedOn)
        });
        let chosen = signed_on.unwrap_or(start);
        entry.next_session = chosen + 1;
        Some(entry.sessions[chosen])
    }

    fn remember_answered(&mut self, correlation: u64) {
        if self.answered_recently.insert(correlation) {
            self.answered_order.push_back(correlation);
            if self.answered_order.len() > ANSWERED_MEMORY {
                if let Some(old) = self.answered_order.pop_front() {
                    self.answered_recently.remove(&old);
                }
            }
        }
    }

    /// A request got its response: application state, then the event.
    fn answered(
        &mut self,
        now: Instant,
        bank: BankIdx,
        requester: Side,
        request: Answer,
        netmgmt: Option<&NetMgmt>,
        response_code: Option<String>,
    ) {
        self.note_netmgmt(now, request.session, netmgmt, response_code.as_deref());
        self.event(Event::Answered {
            bank,
            node: request.node,
            requester,
            mti: request.mti,
            response_code,
            latency: now.saturating_duration_since(request.sent_at),
        });
    }

    fn note_netmgmt(
        &mut self,
        now: Instant,
        session: SessionId,
        netmgmt: Option<&NetMgmt>,
        response_code: Option<&str>,
    ) {
        let Some(kind) = netmgmt else { return };
        let approved = response_code.is_some_and(|rc| rc.bytes().all(|b| b == b'0'));
        let Some(s) = self.sessions.get_mut(&session) else { return };
        let before = s.app_state();
        match kind {
            NetMgmt::SignOn if approved => s.signed = AppState::SignedOn,
            NetMgmt::SignOff if approved => s.signed = AppState::SignedOff,
            NetMgmt::Echo if approved => {
                s.echo_failing = false;
                s.last_echo_ok = Some(now);
            }
            NetMgmt::Echo => s.echo_failing = true,
            _ => {}
        }
        let (bank, after) = (s.bank, s.app_state());
        if after != before {
            self.event(Event::AppStateChanged { bank, session, state: after });
        }
    }

    fn note_echo_timeout(&mut self, session: SessionId, netmgmt: Option<&NetMgmt>) {
        if netmgmt != Some(&NetMgmt::Echo) {
            return;
        }
        let Some(s) = self.sessions.get_mut(&session) else { return };
        if !s.echo_failing {
            s.echo_failing = true;
            let bank = s.bank;
            self.event(Event::AppStateChanged { bank, session, state: AppState::EchoFailing });
        }
    }
}

/// The router's in-flight tables, handed to the twin appliance's router in a
/// planned switchover (JSON on the peer link): requests waiting for a node and
/// FO-originated requests waiting for the bank, with the time they have left, and
/// each session's application state. The request bytes are not handed over: a
/// handed-over request whose node is then lost times out at the bank (it cannot be
/// declined).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightTables {
    /// Format version (1).
    pub version: u32,
    /// Correlation ids below this are taken: the new router continues above it.
    pub next_correlation: u64,
    /// Bank requests waiting for their node.
    pub requests: Vec<HandedRequest>,
    /// FO-originated requests waiting for the bank.
    pub fo_requests: Vec<HandedFoRequest>,
    /// Sessions and their application state.
    pub sessions: Vec<HandedSession>,
}

/// A bank request in flight, handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedRequest {
    /// Our correlation id (the node answers with it).
    pub correlation: u64,
    /// Bank id.
    pub bank: String,
    /// Session id.
    pub session: SessionId,
    /// Node name.
    pub node: String,
    /// MTI.
    pub mti: String,
    /// Matching key.
    pub key: String,
    /// `sign_on`, `sign_off`, `echo`, other code, or none.
    pub netmgmt: Option<String>,
    /// Time left before it times out, milliseconds.
    pub remaining_ms: u64,
}

/// An FO-originated request in flight, handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedFoRequest {
    /// Bank id.
    pub bank: String,
    /// Matching key (the bank's response carries it).
    pub key: String,
    /// The node that asked.
    pub node: String,
    /// The node's correlation id.
    pub correlation: u64,
    /// Session it went to.
    pub session: SessionId,
    /// MTI.
    pub mti: String,
    /// As for [`HandedRequest::netmgmt`].
    pub netmgmt: Option<String>,
    /// Time left, milliseconds.
    pub remaining_ms: u64,
}

/// A session's application state, handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedSession {
    /// Session id.
    pub session: SessionId,
    /// Bank id.
    pub bank: String,
    /// Bank's address.
    pub peer: String,
    /// [`AppState`] code of the sign-on state.
    pub signed: u8,
    /// Echo tests failing.
    pub echo_failing: bool,
}

fn netmgmt_text(n: Option<&NetMgmt>) -> Option<String> {
    n.map(|n| match n {
        NetMgmt::SignOn => "sign_on".to_owned(),
        NetMgmt::SignOff => "sign_off".to_owned(),
        NetMgmt::Echo => "echo".to_owned(),
        NetMgmt::Other(code) => format!("other:{code}"),
        NetMgmt::NoCode => "no_code".to_owned(),
    })
}

fn netmgmt_from_text(t: Option<&str>) -> Option<NetMgmt> {
    Some(match t? {
        "sign_on" => NetMgmt::SignOn,
        "sign_off" => NetMgmt::SignOff,
        "echo" => NetMgmt::Echo,
        "no_code" => NetMgmt::NoCode,
        other => NetMgmt::Other(other.strip_prefix("other:").unwrap_or(other).to_owned()),
    })
}

impl Router {
    /// The in-flight tables, for the twin (see [`InflightTables`]).
    pub fn export_inflight(&self, now: Instant) -> InflightTables {
        let left = |deadline: Instant| deadline.saturating_duration_since(now).as_millis() as u64;
        let requests = self
            .pending
            .iter()
            .map(|(&correlation, p)| {
                let timeout = self.banks[usize::from(p.bank.0)].spec.request_timeout;
                HandedRequest {
                    correlation,
                    bank: self.bank_id(p.bank).to_owned(),
                    session: p.session,
                    node: self.node_name(p.node).to_owned(),
                    mti: p.mti.to_string(),
                    key: p.key.as_str().to_owned(),
                    netmgmt: netmgmt_text(p.netmgmt.as_ref()),
                    remaining_ms: left(p.sent_at + timeout),
                }
            })
            .collect();
        let fo_requests = self
            .fo_pending
            .iter()
            .flat_map(|((bank, key), queue)| {
                queue.iter().map(move |p| HandedFoRequest {
                    bank: self.bank_id(*bank).to_owned(),
                    key: key.as_str().to_owned(),
                    node: self.node_name(p.node).to_owned(),
                    correlation: p.correlation,
                    session: p.session,
                    mti: p.mti.to_string(),
                    netmgmt: netmgmt_text(p.netmgmt.as_ref()),
                    remaining_ms: left(p.deadline),
                })
            })
            .collect();
        let sessions = self
            .sessions
            .iter()
            .map(|(&session, s)| HandedSession {
                session,
                bank: self.bank_id(s.bank).to_owned(),
                peer: s.peer.clone(),
                signed: s.signed.code(),
                echo_failing: s.echo_failing,
            })
            .collect();
        InflightTables {
            version: 1,
            next_correlation: self.next_correlation,
            requests,
            fo_requests,
            sessions,
        }
    }

    /// Takes over the twin's in-flight tables. Entries naming a bank or node this
    /// router does not know are skipped and counted in the result.
    pub fn import_inflight(&mut self, now: Instant, t: &InflightTables) -> usize {
        let mut skipped = 0;
        let node = |r: &Self, name: &str| r.nodes.iter().position(|n| n == name).map(|i| NodeId(i as u16));
        for s in &t.sessions {
            let Some(bank) = self.bank(&s.bank) else {
                skipped += 1;
                continue;
            };
            self.session_up(now, s.session, bank, s.peer.clone());
            if let Some(session) = self.sessions.get_mut(&s.session) {
                session.signed = AppState::from_code(s.signed).unwrap_or(AppState::Unknown);
                session.echo_failing = s.echo_failing;
            }
        }
        // Timer queues are FIFO per delay: arm in deadline order.
        let mut requests: Vec<&HandedRequest> = t.requests.iter().collect();
        requests.sort_by_key(|r| r.remaining_ms);
        let mut fo_requests: Vec<&HandedFoRequest> = t.fo_requests.iter().collect();
        fo_requests.sort_by_key(|f| f.remaining_ms);
        for r in requests {
            let (Some(bank), Some(n), Ok(mti)) =
                (self.bank(&r.bank), node(self, &r.node), r.mti.parse::<Mti>())
            else {
                skipped += 1;
                continue;
            };
            let b = usize::from(bank.0);
            let timeout = self.banks[b].spec.request_timeout;
            let remaining = Duration::from_millis(r.remaining_ms).min(timeout);
            let pending = Pending {
                bank,
                session: r.session,
                node: n,
                mti,
                netmgmt: netmgmt_from_text(r.netmgmt.as_deref()),
                key: MatchKey::from_text(r.key.clone()),
                // As if sent when the deadline says, so latency and timeouts stay true.
                sent_at: (now + remaining).checked_sub(timeout).unwrap_or(now),
                request: None,
            };
            if self.pending.insert(r.correlation, pending).is_none() {
                self.banks[b].inflight += 1;
                if let Some(s) = self.sessions.get_mut(&r.session) {
                    s.inflight += 1;
                }
            }
            self.timers.push(timeout, now + remaining, Timer::Request(r.correlation));
        }
        for f in fo_requests {
            let (Some(bank), Some(n), Ok(mti)) =
                (self.bank(&f.bank), node(self, &f.node), f.mti.parse::<Mti>())
            else {
                skipped += 1;
                continue;
            };
            let timeout = self.banks[usize::from(bank.0)].spec.request_timeout;
            let remaining = Duration::from_millis(f.remaining_ms).min(timeout);
            let key = MatchKey::from_text(f.key.clone());
            let deadline = now + remaining;
            self.fo_pending.entry((bank, key.clone())).or_default().push_back(FoPending {
                node: n,
                correlation: f.correlation,
                session: f.session,
                mti,
                netmgmt: netmgmt_from_text(f.netmgmt.as_deref()),
                sent_at: deadline.checked_sub(timeout).unwrap_or(now),
                deadline,
            });
            self.timers.push(timeout, deadline, Timer::FoRequest(bank, key, f.correlation));
        }
        self.next_correlation = self.next_correlation.max(t.next_correlation);
        skipped
    }
}

/// Answered correlation ids remembered to drop second responses: far more than any
/// switchover hands over, bounded so memory does not grow with the request rate.
const ANSWERED_MEMORY: usize = 65_536;

/// Stale timers dropped per timer armed: more than one, so queues shrink after a burst.
const PRUNE_PER_PUSH: usize = 4;

/// Deadlines in FIFO queues, one per delay. Timers of one delay are armed in `now`
/// order, so each queue is sorted by itself and arming or firing one is O(1) (the
/// binary heap this replaces took 3 % of `mups`'s CPU at saturation). This is why
/// `now` must never go backwards between calls.
#[derive(Debug, Default)]
struct TimerQueues {
    queues: Vec<(Duration, VecDeque<(Instant, Timer)>)>,
}

impl TimerQueues {
    fn push(&mut self, delay: Duration, at: Instant, timer: Timer) {
        match self.queues.iter_mut().find(|(d, _)| *d == delay) {
            Some((_, queue)) => queue.push_back((at, timer)),
            None => self.queues.push((delay, VecDeque::from([(at, timer)]))),
        }
    }

    fn next(&self) -> Option<Instant> {
        self.queues.iter().filter_map(|(_, q)| q.front().map(|(at, _)| *at)).min()
    }

    /// Drops, from the front of the `delay` queue, timers whose request is already
    /// answered: a few per call, so that each queue holds about what is in flight
    /// rather than everything sent in the last timeout period.
    fn prune(&mut self, delay: Duration, live: impl Fn(&Timer) -> bool) {
        if let Some((_, queue)) = self.queues.iter_mut().find(|(d, _)| *d == delay) {
            for _ in 0..PRUNE_PER_PUSH {
                match queue.front() {
                    Some((_, timer)) if !live(timer) => {
                        queue.pop_front();
                    }
                    _ => break,
                }
            }
        }
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Instant, Timer)> {
        let (_, queue) = self
            .queues
            .iter_mut()
            .filter(|(_, q)| q.front().is_some_and(|(at, _)| *at <= now))
            .min_by_key(|(_, q)| q.front().map(|(at, _)| *at))?;
        queue.pop_front()
    }
}

fn pop_front<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, VecDeque<V>>, key: &K) -> Option<V> {
    let queue = map.get_mut(key)?;
    let item = queue.pop_front();
    if queue.is_empty() {
        map.remove(key);
    }
    item
}

/// The API name of an application state.
pub fn app_state_name(state: AppState) -> &'static str {
    match state {
        AppState::Unknown => "unknown",
        AppState::SignedOn => "signed_on",
        AppState::SignedOff => "signed_off",
        AppState::EchoFailing => "echo_failing",
    }
}

fn serialize_app_state<S: serde::Serializer>(state: &AppState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(app_state_name(*state))
}
