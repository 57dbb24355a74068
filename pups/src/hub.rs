//! What the bank sessions and the local link share: the live sessions, the
//! messages waiting to be written to `mups`, and whether `mups` is attached.
//!
//! # Messages towards `mups`
//!
//! Each session keeps the messages it read from its bank in its own queue, in
//! order, until the local link's data writer has written them to the data
//! channel. A session with queued messages is in the hub's *ready* list, once;
//! the writer takes sessions from it round-robin, writes a batch of each, and
//! removes from the queue exactly the messages whose bytes all went out. A message
//! is never removed before it is written, nor written twice: when the link drops
//! mid-write, what was not fully written is written again, whole, to the next
//! `mups`, after what came before it.
//!
//! # Session events
//!
//! `SESSION_UP`, the inventory and `SESSION_DOWN` are queued on the control
//! channel under the hub's lock, so an inventory is a consistent snapshot with no
//! event inside it. A session whose connection has ended stays in the hub until its
//! queue is empty; its `SESSION_DOWN` follows its last `DATA`. While `mups` is
//! away, a session that ends with nothing queued just leaves: the next inventory
//! does not list it.
//!
//! # Sessions restored from the twin
//!
//! Between `RestoreEnd` and `Serve` a restored session is *awaited*: `mups` on the
//! new active may already route `DATA` to it (an FO node's request, a late
//! response), and those messages wait here, in order, until the session's writer
//! exists, then go to it before anything newer. Without this they would meet no
//! session and be lost.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proto::config::{ApplianceConfig, BankConfig};
use proto::fo_link::{FoMessage, InventoryEnd, SessionDownReason};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{info, warn};

use crate::handover::Request;
use crate::metrics::Metrics;
use crate::session::{Session, SessionCmd, lock};

/// The shared state.
#[derive(Debug)]
pub(crate) struct Hub {
    cfg: Arc<ApplianceConfig>,
    banks: Vec<Arc<BankConfig>>,
    pub(crate) metrics: Arc<Metrics>,
    /// TCP sessions open per bank (index as in the configuration).
    open: Vec<AtomicUsize>,
    next_id: AtomicU64,
    state: Mutex<HubState>,
    attached: watch::Sender<bool>,
    /// Wakes the data writer when a session joins the ready list.
    ready: Notify,
    /// Sessions do not read: an appliance switchover holds them (new ones start held).
    held: AtomicBool,
    /// Where `HANDOVER` requests go (the handover worker).
    handover: mpsc::UnboundedSender<Request>,
}

#[derive(Debug, Default)]
struct HubState {
    sessions: BTreeMap<u64, Arc<Session>>,
    /// The control channel's queue, while `mups` is attached.
    control: Option<mpsc::UnboundedSender<FoMessage>>,
    /// Sessions with messages waiting for the data channel.
    ready: VecDeque<u64>,
    /// Messages other than `DATA` for the data channel (`HANDOVER` replies), written
    /// before the next session's batch: after every `DATA` queued before them.
    data_out: VecDeque<FoMessage>,
    /// Restored sessions not yet serving, with the `DATA` that came for them.
    awaited: HashMap<u64, Awaited>,
}

#[derive(Debug)]
struct Awaited {
    bank: usize,
    parked: Vec<Bytes>,
}

/// Where a `DATA` for the bank goes (see [`Hub::route_to_bank`]).
#[derive(Debug)]
pub(crate) enum ToBankRoute {
    /// To this live session's writer.
    Session(Arc<Session>, Bytes),
    /// Kept for a restored session that is not serving yet.
    Parked,
    /// To no session of this bank here: the message comes back, to be dropped.
    Unknown(Bytes),
    /// A restored session waits for it, but already has this many parked.
    ParkFull(Bytes),
}

impl Hub {
    pub(crate) fn new(cfg: Arc<ApplianceConfig>, handover: mpsc::UnboundedSender<Request>) -> Self {
        let banks: Vec<_> = cfg.banks.iter().cloned().map(Arc::new).collect();
        let metrics = Arc::new(Metrics::new(banks.iter().map(|b| b.id.as_str())));
        Self {
            open: banks.iter().map(|_| AtomicUsize::new(0)).collect(),
            banks,
            cfg,
            metrics,
            next_id: AtomicU64::new(1),
            state: Mutex::default(),
            attached: watch::Sender::new(false),
            ready: Notify::new(),
            held: AtomicBool::new(false),
            handover,
        }
    }

    /// Hands a `HANDOVER` request to the handover worker.
    pub(crate) fn handover(&self, request: Request) {
        // The worker lives as long as pups; a send fails only during shutdown.
        let _ = self.handover.send(request);
    }

    /// Whether sessions are held (see [`Hub::set_held`]).
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Holds (or releases) every session's reading, for an appliance switchover.
    /// Sessions that start meanwhile start held. Holding returns the
    /// acknowledgements to wait for (see `SessionCmd::Hold`).
    pub(crate) fn set_held(
        &self,
        held: bool,
        sessions: &[Arc<Session>],
    ) -> Vec<tokio::sync::oneshot::Receiver<()>> {
        self.held.store(held, Ordering::SeqCst);
        let mut acks = Vec::new();
        for session in sessions {
            if held {
                let (ack, rx) = tokio::sync::oneshot::channel();
                session.command(SessionCmd::Hold { ack });
                acks.push(rx);
            } else {
                session.command(SessionCmd::Release);
            }
        }
        acks
    }

    /// A session id adopted from the twin appliance is taken: ids given from now
    /// on are above it.
    pub(crate) fn adopt_id(&self, id: u64) {
        self.next_id.fetch_max(id.saturating_add(1), Ordering::Relaxed);
    }

    /// Takes one of the bank's slots even if `max_sessions` are open: a session
    /// restored from the twin is already the bank's, refusing it would cut it.
    pub(crate) fn reserve_forced(&self, bank: usize) {
        self.open[bank].fetch_add(1, Ordering::AcqRel);
    }

    /// The bank's index by id.
    pub(crate) fn bank_index(&self, id: &str) -> Option<usize> {
        self.banks.iter().position(|b| b.id == id)
    }

    /// Whether none of these sessions has messages waiting for `mups`.
    pub(crate) fn drained(sessions: &[Arc<Session>]) -> bool {
        sessions.iter().all(|s| lock(&s.queue).items.is_empty())
    }

    /// Queues a message for the data channel, after the `DATA` queued so far is
    /// written (nothing is queued without an attached `mups`).
    pub(crate) fn send_data_channel(&self, message: FoMessage) {
        let mut state = lock(&self.state);
        if state.control.is_some() {
            state.data_out.push_back(message);
            drop(state);
            self.ready.notify_one();
        }
    }

    /// The next non-`DATA` message for the data channel.
    pub(crate) fn next_data_out(&self) -> Option<FoMessage> {
        lock(&self.state).data_out.pop_front()
    }

    pub(crate) fn config(&self) -> &ApplianceConfig {
        &self.cfg
    }

    pub(crate) fn bank(&self, index: usize) -> &Arc<BankConfig> {
        &self.banks[index]
    }

    /// A new session id: unique for the process lifetime, never 0.
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes one of the bank's `max_sessions` slots, if one is free.
    pub(crate) fn try_reserve(&self, bank: usize) -> bool {
        let max = self.banks[bank].max_sessions;
        self.open[bank]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives a slot back: the session's TCP connection is closed.
    pub(crate) fn release(&self, bank: usize) {
        self.open[bank].fetch_sub(1, Ordering::AcqRel);
    }

    /// Follows whether `mups` is attached (sessions read only while it is).
    pub(crate) fn attached_rx(&self) -> watch::Receiver<bool> {
        self.attached.subscribe()
    }

    /// Registers a new session and announces it to `mups` if attached. A restored
    /// session's parked `DATA` goes to its writer first, under the hub's lock, so
    /// nothing routed later can overtake it.
    pub(crate) fn session_up(&self, session: &Arc<Session>) {
        let mut state = lock(&self.state);
        state.sessions.insert(session.id, session.clone());
        if let Some(awaited) = state.awaited.remove(&session.id) {
            let parked = awaited.parked.len();
            for message in awaited.parked {
                if session.send_to_bank(message).is_err() {
                    warn!(parent: &session.span, "a message kept for the restored session cannot be queued: dropped");
                }
            }
            if parked > 0 {
                info!(parent: &session.span, messages = parked, "messages kept during the restore go to the bank");
            }
        }
        if let Some(control) = &state.control {
            let _ = control.send(session.up_message());
        }
    }

    /// A session restored from the twin will serve here soon: `DATA` for it waits.
    pub(crate) fn await_session(&self, id: u64, bank: usize) {
        lock(&self.state).awaited.insert(id, Awaited { bank, parked: Vec::new() });
    }

    /// The restored sessions will not serve here after all. Returns how many
    /// parked messages are dropped with them.
    pub(crate) fn forget_awaited(&self) -> usize {
        let mut state = lock(&self.state);
        state.awaited.drain().map(|(_, a)| a.parked.len()).sum()
    }

    /// Finds the session a `DATA` for `bank_id` goes to, or keeps the message
    /// for a restored session that is about to serve.
    pub(crate) fn route_to_bank(&self, id: u64, bank_id: &str, message: Bytes) -> ToBankRoute {
        let mut state = lock(&self.state);
        if let Some(session) = state.sessions.get(&id) {
            return ToBankRoute::Session(session.clone(), message);
        }
        let Some(awaited) = state.awaited.get_mut(&id) else { return ToBankRoute::Unknown(message) };
        if self.banks[awaited.bank].id != bank_id {
            return ToBankRoute::Unknown(message);
        }
        if awaited.parked.len() >= crate::session::OUTBOUND_QUEUE {
            return ToBankRoute::ParkFull(message);
        }
        awaited.parked.push(message);
        ToBankRoute::Parked
    }

    /// A session by id, while it is in the hub.
    pub(crate) fn session(&self, id: u64) -> Option<Arc<Session>> {
        lock(&self.state).sessions.get(&id).cloned()
    }

    /// Every session in the hub.
    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        lock(&self.state).sessions.values().cloned().collect()
    }

    /// Queues a message read from the bank towards `mups`. The caller holds a
    /// permit of the session's `space`.
    pub(crate) fn push(&self, session: &Arc<Session>, message: Bytes) {
        let mut queue = lock(&session.queue);
        queue.items.push_back(message);
        if !queue.scheduled {
            queue.scheduled = true;
            lock(&self.state).ready.push_back(session.id);
            self.ready.notify_one();
        }
    }

    /// The session's TCP connection has ended. Its end is reported now if nothing
    /// of it waits for `mups`, otherwise once the data writer has written it all.
    pub(crate) fn session_ended(&self, session: &Arc<Session>, reason: SessionDownReason, detail: String) {
        let finalize = {
            let mut queue = lock(&session.queue);
            queue.ended = Some((reason, detail));
            let now = queue.items.is_empty() && !queue.finalized;
            queue.finalized |= now;
            now
        };
        if finalize {
            self.finalize(session);
        }
    }

    /// Removes an ended session whose queue is empty, with its `SESSION_DOWN`.
    fn finalize(&self, session: &Session) {
        let (reason, detail) =
            lock(&session.queue).ended.clone().unwrap_or((SessionDownReason::Shutdown, String::new()));
        let mut state = lock(&self.state);
        state.sessions.remove(&session.id);
        if let Some(control) = &state.control {
            let _ = control.send(session.down_message(reason, &detail));
        }
    }

    /// The next session with messages for the data channel, or `None`.
    pub(crate) fn next_ready(&self) -> Option<Arc<Session>> {
        let mut state = lock(&self.state);
        while let Some(id) = state.ready.pop_front() {
            if let Some(session) = state.sessions.get(&id) {
                return Some(session.clone());
            }
        }
        None
    }

    /// Waits until a session may have joined the ready list.
    pub(crate) async fn ready_notified(&self) {
        self.ready.notified().await;
    }

    /// The first `n` messages of the session's queue were written to `mups`. If
    /// more wait, the session goes back in the ready list: at its end, or at its
    /// head when the rest of its batch could not be written (`interrupted`). If it
    /// has ended and nothing waits, its end is reported.
    pub(crate) fn written(&self, session: &Arc<Session>, n: usize, interrupted: bool) {
        let finalize = {
            let mut queue = lock(&session.queue);
            let n = n.min(queue.items.len());
            queue.items.drain(..n);
            session.space.add_permits(n);
            if queue.items.is_empty() {
                queue.scheduled = false;
                let now = queue.ended.is_some() && !queue.finalized;
                queue.finalized |= now;
                now
            } else {
                let mut state = lock(&self.state);
                if interrupted {
                    state.ready.push_front(session.id);
                } else {
                    state.ready.push_back(session.id);
                }
                false
            }
        };
        if finalize {
            self.finalize(session);
        }
    }

    /// `mups` is attached: queues the inventory (`SESSION_UP` per session, then
    /// `INVENTORY_END`) on `control`, which then carries every session event, and
    /// lets the sessions read. Returns the number of sessions in the inventory.
    pub(crate) fn attach(&self, control: mpsc::UnboundedSender<FoMessage>) -> u32 {
        let n = {
            let mut state = lock(&self.state);
            for session in state.sessions.values() {
                let _ = control.send(session.up_message());
            }
            let n = u32::try_from(state.sessions.len()).unwrap_or(u32::MAX);
            let _ = control.send(FoMessage::InventoryEnd(InventoryEnd { sessions: n }));
            state.control = Some(control);
            // Answers meant for a mups that went away.
            state.data_out.clear();
            n
        };
        self.attached.send_replace(true);
        self.ready.notify_one();
        self.metrics.link_attached(true);
        n
    }

    /// `mups` is gone: sessions stop reading (what they read stays queued), events
    /// are no longer sent, and pauses are lifted (a new `mups` could not know them).
    pub(crate) fn detach(&self) {
        let sessions = {
            let mut state = lock(&self.state);
            state.control = None;
            state.data_out.clear();
            state.sessions.values().cloned().collect::<Vec<_>>()
        };
        self.attached.send_replace(false);
        self.metrics.link_attached(false);
        // A switchover's hold goes with the link that asked for it, like a pause
        // (frozen sessions stay frozen: only mups knows where their twin is).
        self.held.store(false, Ordering::SeqCst);
        for session in sessions {
            session.command(SessionCmd::Resume);
            session.command(SessionCmd::Release);
        }
    }

    /// Asks every session to close (shutdown). Returns how many there were.
    pub(crate) fn close_all(&self, reason: SessionDownReason, detail: &str) -> usize {
        let sessions = self.sessions();
        for session in &sessions {
            session.command(SessionCmd::Close { reason, detail: detail.to_owned() });
        }
        sessions.len()
    }

    /// Drops every session left and its queued messages (end of shutdown). Returns
    /// the number of messages that never reached `mups`.
    pub(crate) fn abandon_all(&self) -> usize {
        let sessions = std::mem::take(&mut lock(&self.state).sessions);
        let mut lost = 0;
        for session in sessions.values() {
            let mut queue = lock(&session.queue);
            if !queue.items.is_empty() {
                warn!(session = session.id, bank = %session.bank_id(), messages = queue.items.len(),
                    "shutdown: messages read from the bank never reached mups");
            }
            lost += queue.items.len();
            queue.items.clear();
            queue.finalized = true;
        }
        if !sessions.is_empty() {
            info!(sessions = sessions.len(), "shutdown: sessions abandoned");
        }
        lost
    }

    /// Whether no session is left.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).sessions.is_empty()
    }
}
