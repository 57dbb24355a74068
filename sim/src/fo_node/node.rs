//! The node's state and what it does with each message: the part of the simulator
//! that is neither sockets nor configuration.
//!
//! One mutex guards the whole state (banks, links, in-flight tables, rules, hooks,
//! counters). Nothing awaits while holding it: handling a message only decides,
//! updates the tables and queues frames on the links' writer channels, so frames
//! leave in the order they were decided (an `ACK`, then each `CONTEXT`, then
//! `SYNC_END`). Timers (delayed answers, origination timeouts, delayed commands)
//! are tasks that sleep without the lock and then re-check the tables, so a
//! handover or a `DEACTIVATE` in between simply finds nothing to do.
//!
//! # In-flight requests and switchovers
//!
//! A received request whose answer a rule delays is *in flight* until answered.
//! So is every request the node originated until its response or timeout. Each
//! entry is *owned* (the node answers or times it out) or *held* (handed over, or
//! taken over but not yet activated). `SYNC_BEGIN{Source}` sends every entry of
//! the bank as a `CONTEXT` and holds it; `SYNC_BEGIN{Target}` then `CONTEXT`s
//! create held entries; `ACTIVATE` makes the bank's entries owned (the target
//! takes over, or an aborted source takes back) and answers or times out those
//! already due; `DEACTIVATE` drops them. (With `answer_before_activate`, taken-over
//! requests are owned at once.) The node originates to a bank only while active
//! and not in a switchover; what it receives it answers whatever the bank's state,
//! since routing is `mups`'s decision, and counts what arrives while inactive. The
//! switchover commands themselves are in the `switchover` module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::fo_link::{Data, DataFlags, Direction, FoMessage, Hello, PeerRole, SessionState, SyncRole};
use proto::iso8583::{Layout, Message, Role};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{FoNodeConfig, Hooks, OriginateConfig};
use super::respond::{OriginKind, build_request, build_response};
use super::rules::{Decision, Rule, decide};
use super::stats::Stats;
use super::switchover::Command;

/// Microseconds since the Unix epoch, now.
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// `t + d`, without the panic of an overflow: a peer's timestamp can be anything.
/// Past a year, "later" means a year.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 86_400);
    t.checked_add(d.min(YEAR)).unwrap_or(t)
}

/// The instant of a Unix-epoch time in microseconds, by its distance from now.
pub(super) fn instant_of(micros: u64, now: Instant, now_micros: u64) -> Instant {
    if micros >= now_micros {
        later(now, Duration::from_micros(micros - now_micros))
    } else {
        now.checked_sub(Duration::from_micros(now_micros - micros)).unwrap_or(now)
    }
}

/// Which side of a switchover a node is on for a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncSide {
    /// The old node, handing its contexts over.
    Source,
    /// The new node, taking them.
    Target,
}

impl From<SyncRole> for SyncSide {
    fn from(role: SyncRole) -> Self {
        match role {
            SyncRole::Source => Self::Source,
            SyncRole::Target => Self::Target,
        }
    }
}

/// A switchover a bank is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncInfo {
    /// The switchover's id.
    pub switch_id: u64,
    /// This node's side.
    pub side: SyncSide,
}

/// One session of a bank, as the last `BANK_STATE` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session id.
    pub session_id: u64,
    /// TCP connected.
    pub up: bool,
    /// Application state: `unknown`, `signed_on`, `signed_off`, `echo_failing`.
    pub application: &'static str,
}

/// What the node knows about one bank ([`FoNodeHandle::bank_status`](super::FoNodeHandle::bank_status)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankStatus {
    /// The bank.
    pub bank_id: String,
    /// Its layout's name.
    pub layout: String,
    /// Whether the node is active for it.
    pub active: bool,
    /// The switchover it is in, if any.
    pub sync: Option<SyncInfo>,
    /// Runtime parameters received with the last `ACTIVATE`.
    pub params: Vec<(String, String)>,
    /// The STAN the next originated request gets.
    pub next_stan: u32,
    /// Sessions, from the last `BANK_STATE`.
    pub sessions: Vec<SessionInfo>,
    /// Received requests in flight.
    pub inflight: usize,
    /// Originated requests in flight.
    pub originated_inflight: usize,
}

/// One request in flight, without its card data
/// ([`FoNodeHandle::inflight`](super::FoNodeHandle::inflight)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InFlightInfo {
    /// The bank.
    pub bank_id: String,
    /// Correlation id (`mups`'s for received requests, ours for originated ones).
    pub correlation_id: u64,
    /// The bank session (0 for originated requests: `mups` picks).
    pub session_id: u64,
    /// `to_node` (received from the bank) or `to_bank` (originated).
    pub direction: &'static str,
    /// The matching key.
    pub matching_key: String,
    /// Received (or sent) at, microseconds since the Unix epoch.
    pub received_at_micros: u64,
    /// Deadline, microseconds since the Unix epoch.
    pub deadline_micros: u64,
    /// Whether this node answers (or times out) it; `false` while handed over or
    /// taken over but not activated.
    pub owned: bool,
    /// The DE39 it will be answered with (received requests).
    pub code: Option<String>,
}

/// One open link ([`FoNodeHandle::links`](super::FoNodeHandle::links)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkInfo {
    /// The node's id for the link (increasing).
    pub id: u64,
    /// The controller's address.
    pub peer: SocketAddr,
    /// The controller's name, from its `HELLO`.
    pub controller: String,
}

/// Why a request could not be originated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginateError {
    /// The node does not serve the bank.
    #[error("unknown bank {0:?}")]
    UnknownBank(String),
    /// The node is not active for the bank, or the bank is in a switchover.
    #[error("bank {0:?} is not served by this node right now (inactive or switching)")]
    NotServing(String),
    /// No `mups` is connected.
    #[error("no link to mups")]
    NoLink,
    /// The message cannot be encoded under the bank's layout.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The node is stopped.
    #[error("the node is stopped")]
    Stopped,
}

/// A received request in flight.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) bank: String,
    pub(super) session_id: u64,
    pub(super) correlation_id: u64,
    pub(super) matching_key: String,
    pub(super) received_at_micros: u64,
    pub(super) deadline_micros: u64,
    pub(super) message: Bytes,
    /// The link it came on (answers go there, or to the oldest link if it is gone).
    pub(super) link: u64,
    pub(super) due: Instant,
    pub(super) code: String,
    pub(super) owned: bool,
}

/// An originated request in flight.
#[derive(Debug)]
pub(super) struct Originated {
    pub(super) bank: String,
    pub(super) matching_key: String,
    pub(super) sent_at_micros: u64,
    pub(super) deadline_micros: u64,
    pub(super) deadline: Instant,
    pub(super) message: Bytes,
    pub(super) owned: bool,
}

#[derive(Debug)]
pub(super) struct BankRt {
    pub(super) active: bool,
    pub(super) sync: Option<SyncInfo>,
    pub(super) params: Vec<(String, String)>,
    pub(super) next_stan: u32,
    pub(super) sessions: Vec<SessionState>,
}

#[derive(Debug)]
struct LinkRt {
    tx: UnboundedSender<Vec<u8>>,
    token: CancellationToken,
    peer: SocketAddr,
    controller: String,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(super) rules: Vec<Rule>,
    pub(super) hooks: Hooks,
    pub(super) stats: Stats,
    pub(super) banks: BTreeMap<String, BankRt>,
    links: BTreeMap<u64, LinkRt>,
    pub(super) inflight: BTreeMap<u64, InFlight>,
    pub(super) originated: BTreeMap<u64, Originated>,
    next_link: u64,
    next_entry: u64,
    next_corr: u64,
    next_auth: u32,
    /// Link tasks, awaited when the node dies.
    tasks: Vec<JoinHandle<()>>,
}

impl State {
    pub(super) fn send(&mut self, link: u64, msg: &FoMessage) -> bool {
        let Some(l) = self.links.get(&link) else { return false };
        match msg.to_vec() {
            Ok(frame) => l.tx.send(frame).is_ok(),
            Err(e) => {
                warn!(link, kind = %msg.kind(), error = %e, "cannot encode a frame");
                false
            }
        }
    }

    /// The link to answer on: `preferred` if still open, else the oldest open one.
    fn route(&self, preferred: u64) -> Option<u64> {
        if self.links.contains_key(&preferred) { Some(preferred) } else { self.links.keys().next().copied() }
    }

    fn close_link(&mut self, link: u64) {
        if let Some(l) = self.links.remove(&link) {
            l.token.cancel();
        }
        self.stats.links_open = self.links.len() as u64;
    }

    /// A fresh correlation id for an originated request: never 0, never one in flight
    /// (ours, or taken over from another node).
    fn alloc_corr(&mut self) -> u64 {
        loop {
            self.next_corr = self.next_corr.wrapping_add(1);
            if self.next_corr != 0 && !self.originated.contains_key(&self.next_corr) {
                return self.next_corr;
            }
        }
    }

    fn auth_id(&mut self) -> String {
        self.next_auth = self.next_auth % 999_999 + 1;
        format!("{:06}", self.next_auth)
    }
}

/// Everything the node's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: FoNodeConfig,
    pub(super) layouts: BTreeMap<String, Layout>,
    state: Mutex<State>,
    /// Cancelled when the node dies; every task and link token descends from it.
    pub(crate) token: CancellationToken,
    started: Instant,
}

impl Shared {
    pub(crate) fn new(cfg: FoNodeConfig, layouts: BTreeMap<String, Layout>) -> Self {
        let banks = cfg
            .banks
            .iter()
            .map(|(id, b)| {
                let rt = BankRt {
                    active: b.active,
                    sync: None,
                    params: Vec::new(),
                    next_stan: 1,
                    sessions: Vec::new(),
                };
                (id.clone(), rt)
            })
            .collect();
        let state = State {
            rules: cfg.rules.clone(),
            hooks: cfg.hooks.clone(),
            stats: Stats { node_id: cfg.node_id.clone(), ..Stats::default() },
            banks,
            links: BTreeMap::new(),
            inflight: BTreeMap::new(),
            originated: BTreeMap::new(),
            next_link: 0,
            next_entry: 0,
            next_corr: 0,
            next_auth: 0,
            tasks: Vec::new(),
        };
        Self {
            cfg,
            layouts,
            state: Mutex::new(state),
            token: CancellationToken::new(),
            started: Instant::now(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Microseconds since the node started (our heartbeats' clock).
    pub(crate) fn monotonic_micros(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Our `HELLO`.
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            node_id: self.cfg.node_id.clone(),
            role: PeerRole::Node,
            min_version: self.cfg.versions[0],
            max_version: self.cfg.versions[1],
            software: self.cfg.software.clone(),
        }
    }

    /// Updates the counters.
    pub(crate) fn count(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self.lock().stats);
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.lock();
        let mut stats = st.stats.clone();
        stats.uptime_ms = self.started.elapsed().as_millis() as u64;
        stats.links_open = st.links.len() as u64;
        stats.inflight = st.inflight.len() as u64;
        stats.originated_inflight = st.originated.len() as u64;
        stats
    }

    pub(crate) fn rules(&self) -> Vec<Rule> {
        self.lock().rules.clone()
    }

    pub(crate) fn set_rules(&self, rules: Vec<Rule>) {
        self.lock().rules = rules;
    }

    pub(crate) fn hooks(&self) -> Hooks {
        self.lock().hooks.clone()
    }

    /// Whether the `pause_origination` hook is on; if so the skipped tick is counted.
    pub(crate) fn origination_paused(&self) -> bool {
        let mut st = self.lock();
        if st.hooks.pause_origination {
            st.stats.originate_skipped += 1;
        }
        st.hooks.pause_origination
    }

    pub(crate) fn update_hooks(&self, f: impl FnOnce(&mut Hooks)) {
        f(&mut self.lock().hooks);
    }

    /// Records a link whose handshake is done; returns its id.
    pub(crate) fn register_link(
        &self,
        tx: UnboundedSender<Vec<u8>>,
        token: CancellationToken,
        peer: SocketAddr,
        controller: String,
    ) -> u64 {
        let mut st = self.lock();
        st.next_link += 1;
        let id = st.next_link;
        st.links.insert(id, LinkRt { tx, token, peer, controller });
        st.stats.links_open = st.links.len() as u64;
        id
    }

    /// Keeps a link task's handle, for [`Shared::take_tasks`]; forgets finished ones.
    pub(crate) fn track(&self, task: JoinHandle<()>) {
        let mut st = self.lock();
        st.tasks.retain(|t| !t.is_finished());
        st.tasks.push(task);
    }

    /// The link tasks still tracked.
    pub(crate) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.lock().tasks)
    }

    pub(crate) fn unregister_link(&self, link: u64) {
        self.lock().close_link(link);
    }

    pub(crate) fn close_links(&self) {
        let mut st = self.lock();
        let ids: Vec<u64> = st.links.keys().copied().collect();
        for id in ids {
            st.close_link(id);
        }
    }

    pub(crate) fn links(&self) -> Vec<LinkInfo> {
        self.lock()
            .links
            .iter()
            .map(|(id, l)| LinkInfo { id: *id, peer: l.peer, controller: l.controller.clone() })
            .collect()
    }

    pub(crate) fn bank_status(&self, bank: &str) -> Option<BankStatus> {
        let st = self.lock();
        let b = st.banks.get(bank)?;
        Some(BankStatus {
            bank_id: bank.to_owned(),
            layout: self.layouts.get(bank).map(|l| l.name().to_owned()).unwrap_or_default(),
            active: b.active,
            sync: b.sync,
            params: b.params.clone(),
            next_stan: b.next_stan,
            sessions: b
                .sessions
                .iter()
                .map(|s| SessionInfo {
                    session_id: s.session_id,
                    up: s.transport == proto::fo_link::TransportState::Up,
                    application: match s.application {
                        proto::fo_link::AppState::Unknown => "unknown",
                        proto::fo_link::AppState::SignedOn => "signed_on",
                        proto::fo_link::AppState::SignedOff => "signed_off",
                        proto::fo_link::AppState::EchoFailing => "echo_failing",
                    },
                })
                .collect(),
            inflight: st.inflight.values().filter(|e| e.bank == bank).count(),
            originated_inflight: st.originated.values().filter(|o| o.bank == bank).count(),
        })
    }

    pub(crate) fn bank_ids(&self) -> Vec<String> {
        self.layouts.keys().cloned().collect()
    }

    pub(crate) fn inflight(&self) -> Vec<InFlightInfo> {
        let st = self.lock();
        let received = st.inflight.values().map(|e| InFlightInfo {
            bank_id: e.bank.clone(),
            correlation_id: e.correlation_id,
            session_id: e.session_id,
            direction: "to_node",
            matching_key: e.matching_key.clone(),
            received_at_micros: e.received_at_micros,
            deadline_micros: e.deadline_micros,
            owned: e.owned,
            code: Some(e.code.clone()),
        });
        let originated = st.originated.iter().map(|(corr, o)| InFlightInfo {
            bank_id: o.bank.clone(),
            correlation_id: *corr,
            session_id: 0,
            direction: "to_bank",
            matching_key: o.matching_key.clone(),
            received_at_micros: o.sent_at_micros,
            deadline_micros: o.deadline_micros,
            owned: o.owned,
            code: None,
        });
        received.chain(originated).collect()
    }

    /// Handles one message received on `link` (after the handshake).
    pub(crate) fn on_message(self: &Arc<Self>, link: u64, msg: FoMessage) {
        let command = match msg {
            FoMessage::SyncBegin(m) => Command::SyncBegin(m),
            FoMessage::Context(m) => Command::Context(m),
            FoMessage::Activate(m) => Command::Activate(m),
            FoMessage::Deactivate(m) => Command::Deactivate(m),
            other => return self.on_link_message(link, other),
        };
        self.on_command(link, command);
    }

    fn on_link_message(self: &Arc<Self>, link: u64, msg: FoMessage) {
        let mut st = self.lock();
        match msg {
            FoMessage::Heartbeat(hb) => {
                st.stats.heartbeats_received += 1;
                if st.hooks.ignore_heartbeats {
                    st.stats.heartbeats_ignored += 1;
                } else if st.send(link, &FoMessage::HeartbeatAck(hb.ack())) {
                    st.stats.heartbeat_acks_sent += 1;
                }
            }
            FoMessage::HeartbeatAck(_) => st.stats.heartbeat_acks_received += 1,
            FoMessage::Data(d) => self.on_data(&mut st, link, d),
            FoMessage::BankState(bs) => {
                st.stats.bank_states_received += 1;
                match st.banks.get_mut(&bs.bank_id) {
                    Some(b) => b.sessions = bs.sessions,
                    None => {
                        st.stats.unknown_bank += 1;
                        debug!(link, bank = %bs.bank_id, "BANK_STATE for a bank we do not serve");
                    }
                }
            }
            FoMessage::Hello(_) => {
                st.stats.hello_received += 1;
                st.stats.protocol_errors += 1;
                warn!(link, "second HELLO on an established link: dropped");
            }
            other @ (FoMessage::SyncEnd(_) | FoMessage::Ack(_) | FoMessage::Nack(_)) => {
                st.stats.protocol_errors += 1;
                warn!(link, kind = %other.kind(), "only nodes send this message: dropped");
            }
            FoMessage::SyncBegin(_)
            | FoMessage::Context(_)
            | FoMessage::Activate(_)
            | FoMessage::Deactivate(_) => {
                // Routed to on_message's command path; never reaches here.
            }
            local @ (FoMessage::Channel(_)
            | FoMessage::SessionUp(_)
            | FoMessage::SessionDown(_)
            | FoMessage::InventoryEnd(_)
            | FoMessage::CloseSession(_)
            | FoMessage::SessionPause(_)
            | FoMessage::SessionResume(_)
            | FoMessage::Handover(_)) => {
                // The protocol: a local-link message on an FO link is treated as an unknown type.
                st.stats.protocol_errors += 1;
                warn!(link, kind = %local.kind(), "local-link message on an FO link: closing the link");
                st.close_link(link);
            }
        }
    }

    fn on_data(self: &Arc<Self>, st: &mut State, link: u64, d: Data) {
        st.stats.data_received += 1;
        if d.direction != Direction::ToNode {
            st.stats.protocol_errors += 1;
            warn!(link, bank = %d.bank_id, "DATA ToBank from mups: dropped");
            return;
        }
        let (Some(layout), Some(bank)) = (self.layouts.get(&d.bank_id), st.banks.get(&d.bank_id)) else {
            st.stats.unknown_bank += 1;
            warn!(link, bank = %d.bank_id, "DATA for a bank we do not serve: dropped");
            return;
        };
        let active = bank.active;
        let msg = match Message::parse(layout, &d.message) {
            Ok(m) => m,
            Err(e) => {
                st.stats.parse_errors += 1;
                Stats::bump(&mut st.stats.received_by_mti, "unparsed");
                warn!(link, bank = %d.bank_id, error = %e, "ISO 8583 message does not parse: dropped");
                return;
            }
        };
        debug!(link, bank = %d.bank_id, session = d.session_id, corr = d.correlation_id, msg = %msg.masked(), "DATA");
        Stats::bump(&mut st.stats.received_by_mti, msg.mti().as_str());
        if !active {
            st.stats.data_while_inactive += 1;
        }
        if d.flags.contains(DataFlags::LATE) {
            st.stats.late_responses += 1;
        }
        match msg.mti().role() {
            Role::Request => self.on_request(st, link, &d, &msg),
            Role::Response => match st.originated.get(&d.correlation_id) {
                Some(o) if d.correlation_id != 0 && o.bank == d.bank_id => {
                    st.originated.remove(&d.correlation_id);
                    st.stats.originated_answered += 1;
                }
                _ => {
                    st.stats.unmatched_responses += 1;
                    debug!(link, bank = %d.bank_id, corr = d.correlation_id, "response matches nothing in flight");
                }
            },
            Role::Notification => st.stats.notifications += 1,
            Role::Other => {}
        }
    }

    fn on_request(self: &Arc<Self>, st: &mut State, link: u64, d: &Data, msg: &Message<'_>) {
        let (decision, hit) = decide(&st.rules, &d.bank_id, msg);
        if let Some(i) = hit {
            let label = st.rules[i].label(i);
            Stats::bump(&mut st.stats.rule_hits, &label);
        }
        match decision {
            Decision::Respond { code, delay } if delay.is_zero() => {
                self.respond(st, link, &d.bank_id, d.session_id, d.correlation_id, msg, &code);
            }
            Decision::Respond { code, delay } => {
                st.stats.delayed += 1;
                let now = unix_micros();
                let entry = InFlight {
                    bank: d.bank_id.clone(),
                    session_id: d.session_id,
                    correlation_id: d.correlation_id,
                    matching_key: self.cfg.match_key.key(msg).as_str().to_owned(),
                    received_at_micros: now,
                    deadline_micros: now.saturating_add(self.cfg.request_deadline_ms.saturating_mul(1000)),
                    message: d.message.clone(),
                    link,
                    due: later(Instant::now(), delay),
                    code,
                    owned: true,
                };
                self.hold(st, entry);
            }
            Decision::Drop => st.stats.dropped_by_rule += 1,
            Decision::Close => {
                st.stats.closed_by_rule += 1;
                info!(link, bank = %d.bank_id, mti = %msg.mti(), "closing the link, as a rule says");
                st.close_link(link);
            }
        }
    }

    /// Puts a received request in flight and arms its answer timer.
    pub(super) fn hold(self: &Arc<Self>, st: &mut State, entry: InFlight) {
        st.next_entry += 1;
        let id = st.next_entry;
        let due = entry.due;
        st.inflight.insert(id, entry);
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = shared.token.cancelled() => {}
                () = tokio::time::sleep_until(due.into()) => shared.answer_due(id),
            }
        });
    }

    fn answer_due(&self, id: u64) {
        let mut st = self.lock();
        if st.inflight.get(&id).is_some_and(|e| e.owned) {
            if let Some(entry) = st.inflight.remove(&id) {
                self.answer(&mut st, entry);
            }
        }
    }

    /// Answers a request taken from the in-flight table.
    pub(super) fn answer(&self, st: &mut State, e: InFlight) {
        let Some(layout) = self.layouts.get(&e.bank) else { return };
        match Message::parse(layout, &e.message) {
            Ok(msg) => self.respond(st, e.link, &e.bank, e.session_id, e.correlation_id, &msg, &e.code),
            Err(err) => {
                st.stats.response_errors += 1;
                warn!(bank = %e.bank, corr = e.correlation_id, error = %err, "in-flight request does not parse");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        st: &mut State,
        link: u64,
        bank: &str,
        session_id: u64,
        correlation_id: u64,
        req: &Message<'_>,
        code: &str,
    ) {
        let auth = st.auth_id();
        let bytes = match build_response(req.layout(), req, code, &auth) {
            Ok(b) => b,
            Err(e) => {
                st.stats.response_errors += 1;
                warn!(bank, corr = correlation_id, error = %e, "cannot build the response");
                return;
            }
        };
        let data = FoMessage::Data(Data {
            bank_id: bank.to_owned(),
            session_id,
            direction: Direction::ToBank,
            correlation_id,
            flags: DataFlags::empty(),
            message: Bytes::from(bytes),
        });
        match st.route(link) {
            Some(l) if st.send(l, &data) => {
                st.stats.responses_sent += 1;
                Stats::bump(&mut st.stats.responses_by_code, code);
            }
            _ => {
                st.stats.response_errors += 1;
                warn!(bank, corr = correlation_id, "no link to send the response on");
            }
        }
    }

    /// Originates one request (or echo) to `bank` now; returns its correlation id.
    pub(crate) fn originate(self: &Arc<Self>, bank: &str, kind: OriginKind) -> Result<u64, OriginateError> {
        if self.token.is_cancelled() {
            return Err(OriginateError::Stopped);
        }
        let Some(layout) = self.layouts.get(bank) else {
            return Err(OriginateError::UnknownBank(bank.to_owned()));
        };
        let default_cfg;
        let cfg = match self.cfg.originate.iter().find(|o| o.bank == bank) {
            Some(c) => c,
            None => {
                default_cfg = OriginateConfig::new(bank, 0.0);
                &default_cfg
            }
        };
        let mut st = self.lock();
        let serving = st.banks.get(bank).is_some_and(|b| b.active && b.sync.is_none());
        if !serving {
            st.stats.originate_skipped += 1;
            return Err(OriginateError::NotServing(bank.to_owned()));
        }
        let Some(link) = st.links.keys().next().copied() else {
            st.stats.originate_skipped += 1;
            return Err(OriginateError::NoLink);
        };
        let b = st.banks.get_mut(bank).ok_or_else(|| OriginateError::UnknownBank(bank.to_owned()))?;
        let stan = b.next_stan;
        b.next_stan = b.next_stan % 999_999 + 1;
        let bytes = build_request(layout, kind, &cfg.mti, &cfg.field_overrides(), stan, SystemTime::now())
            .map_err(|e| OriginateError::Encode(e.to_string()))?;
        let matching_key = Message::parse(layout, &bytes)
            .map(|m| self.cfg.match_key.key(&m).as_str().to_owned())
            .map_err(|e| OriginateError::Encode(e.to_string()))?;
        let corr = st.alloc_corr();
        let message = Bytes::from(bytes);
        let now = unix_micros();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let deadline = later(Instant::now(), timeout);
        st.originated.insert(
            corr,
            Originated {
                bank: bank.to_owned(),
                matching_key,
                sent_at_micros: now,
                deadline_micros: now.saturating_add(timeout.as_micros() as u64),
                deadline,
                message: message.clone(),
                owned: true,
            },
        );
        let data = FoMessage::Data(Data {
            bank_id: bank.to_owned(),
            session_id: 0,
            direction: Direction::ToBank,
            correlation_id: corr,
            flags: DataFlags::empty(),
            message,
        });
        st.send(link, &data);
        st.stats.originated_sent += 1;
        self.arm_timeout(corr, deadline);
        Ok(corr)
    }

    pub(super) fn arm_timeout(self: &Arc<Self>, corr: u64, deadline: Instant) {
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = shared.token.cancelled() => {}
                () = tokio::time::sleep_until(deadline.into()) => shared.time_out(corr),
            }
        });
    }

    fn time_out(&self, corr: u64) {
        let mut st = self.lock();
        if st.originated.get(&corr).is_some_and(|o| o.owned && o.deadline <= Instant::now()) {
            st.originated.remove(&corr);
            st.stats.originated_timed_out += 1;
        }
    }
}
