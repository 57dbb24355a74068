//! `pups`'s side of a planned appliance switchover (design flow F5): the
//! `HANDOVER` ops `mups` sends over the local link (`docs/appliance-pair.md`,
//! "Switchover: what pups does").
//!
//! One worker task, alive as long as `pups`, carries the ops out one at a time in
//! the order they arrived, so an op is never interleaved with another and never
//! cut short by the link dropping (a half-frozen appliance is worse than a late
//! answer). Answers go on the data channel, after the `DATA` queued before them;
//! without an attached `mups` they are lost, and the state stays for the next
//! `mups` to drive.
//!
//! The rule everything here serves: a bank socket is only ever closed in repair
//! mode, and only once its 4-tuple and the bank ports are locked.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::fo_link::{DEFAULT_MAX_FRAME, FoMessage, Handover, HandoverOp, SessionDownReason};
use proto::snapshot::{SessionSnapshot, SessionState, SignOnState, SnapshotBatch, SnapshotError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::hub::Hub;
use crate::netlock::{NetLock, NetLockError, SessionTuple};
use crate::session::{self, FREEZE_GRACE, Frozen, Session, SessionCmd, lock};
use crate::sys::{self, Buffers, Restored};

/// How long sessions get to come to rest and for what they read to reach `mups`
/// (`Quiesce`, and the same step at the start of `Checkpoint`).
const QUIESCE_WAIT: Duration = Duration::from_secs(5);

/// Longest wait for the data channel to hand on what it holds before a request
/// from the control channel.
const BARRIER_WAIT: Duration = Duration::from_secs(1);

/// Longest wait, at a checkpoint, for the banks to acknowledge bytes in flight:
/// long enough for ACKs already on their way (a LAN round trip), not for a bank
/// that delays its ACK (up to 40 ms on Linux; the bench saw 20 ms waits in 4 of
/// 5 switchovers of 8 sessions). Bytes still in flight are restored as sent, and
/// the twin's window probe draws the bank's ACK at once.
const ACK_WAIT: Duration = Duration::from_millis(3);

/// Longest wait, after handing sessions to the twin, for the VIP to leave this
/// host before held packets are forwarded to it.
const VIP_GONE_WAIT: Duration = Duration::from_secs(2);

/// Room kept in a `HANDOVER` frame for everything but the snapshot batch.
const FRAME_MARGIN: usize = 4096;

/// At most this many threads checkpoint or restore sessions at once.
const PARALLEL_THREADS: usize = 4;

/// Fewer sessions than this are done on one thread (a thread costs ~50 µs).
const PARALLEL_MIN: usize = 64;

/// A `HANDOVER` request from `mups`.
#[derive(Debug)]
pub(crate) struct Request {
    /// The request.
    pub(crate) handover: Handover,
    /// For a request that came on the control channel: fires once the data
    /// channel has handed on every `DATA` already received (see `local_link`).
    pub(crate) barrier: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Whether `op` is one `mups` sends (the others are `pups`'s answers).
pub(crate) const fn is_request(op: HandoverOp) -> bool {
    matches!(
        op,
        HandoverOp::Quiesce
            | HandoverOp::Checkpoint
            | HandoverOp::Thaw
            | HandoverOp::CloseFrozen
            | HandoverOp::Lock
            | HandoverOp::Restore
            | HandoverOp::RestoreEnd
            | HandoverOp::Serve
    )
}

/// Why an op failed; sent to `mups` as `Failed { detail }`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoverError {
    /// nft refused.
    #[error("network lock: {0}")]
    Lock(#[from] NetLockError),
    /// What was read could not reach `mups`.
    #[error("{0} session(s) still have messages for mups after {QUIESCE_WAIT:?} (is mups reading?)")]
    NotQuiet(usize),
    /// The op does not fit what this appliance holds.
    #[error("{0}")]
    State(&'static str),
    /// A snapshot batch could not be encoded.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

/// A session frozen here by `Checkpoint`, in repair mode.
#[derive(Debug)]
struct FrozenSession {
    session: Arc<Session>,
    frozen: Frozen,
    tuple: SessionTuple,
}

/// A socket rebuilt by `RestoreEnd`, waiting for `Serve`.
#[derive(Debug)]
struct Adoptee {
    bank: usize,
    state: SessionState,
    restored: Restored,
}

/// One answer: op, count, detail, payload.
type Answer = (HandoverOp, u32, String, Bytes);

/// The handover worker's state.
#[derive(Debug)]
pub(crate) struct Worker {
    hub: Arc<Hub>,
    netlock: NetLock,
    /// Every VIP:port banks connect to.
    bank_ports: Vec<(IpAddr, u16)>,
    /// The nft table was (re)built by this process.
    installed: bool,
    /// The bank ports are locked now.
    ports_locked: bool,
    /// The lock holds no closing-port or session element (only the standing
    /// port lock and open ports), so `Serve` opens the ports with one quick add.
    only_standing_lock: bool,
    frozen: Vec<FrozenSession>,
    /// The switchover whose snapshots are arriving (`Restore`): each batch is
    /// restored as it comes, while the VIP moves; `RestoreEnd` sums up.
    receiving: Option<u64>,
    /// Snapshots received for it so far.
    received: u32,
    /// Problems with what was received, for `Restored`'s detail.
    incoming_failures: Vec<String>,
    adoptees: Vec<Adoptee>,
    /// Sessions closed by `CloseFrozen` whose locks go, and whose ends are
    /// reported (`SESSION_DOWN`), once it is answered.
    closed_tuples: Vec<SessionTuple>,
    closed_sessions: Vec<Arc<Session>>,
    max_frame: usize,
    /// The lock's hold mode: where held bank packets wait (`netlock`).
    hold: Option<Arc<sys::HoldQueue>>,
}

impl Worker {
    pub(crate) fn new(hub: Arc<Hub>, netlock: NetLock, hold: Option<sys::HoldQueue>) -> Self {
        let bank_ports = bank_ports(&hub);
        Self {
            hold: hold.map(Arc::new),
            hub,
            netlock,
            bank_ports,
            installed: false,
            ports_locked: false,
            only_standing_lock: true,
            frozen: Vec::new(),
            receiving: None,
            received: 0,
            incoming_failures: Vec::new(),
            adoptees: Vec::new(),
            closed_tuples: Vec::new(),
            closed_sessions: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Locks every bank port (VIP:port), building the table first if this process
    /// has not: at start on an appliance of a pair, and for `Lock`. Anything else
    /// the lock held goes (see `NetLock::fence`): slow, but outside a freeze.
    pub(crate) async fn lock_ports(&mut self) -> Result<(), NetLockError> {
        if self.installed {
            let frozen: Vec<_> = self.frozen.iter().map(|f| f.tuple).collect();
            self.netlock.fence(&self.bank_ports, &frozen).await?;
        } else {
            self.netlock.install(&self.bank_ports).await?;
            self.installed = true;
            // A switchover changes the lock over nfnetlink: fail now, not then.
            self.netlock.check_netlink(&self.bank_ports).await?;
        }
        self.ports_locked = true;
        self.only_standing_lock = self.frozen.is_empty();
        info!(ports = ?self.bank_ports, "bank ports locked: bank traffic to them is dropped");
        Ok(())
    }

    /// The checkpoint's lock: the bank ports (open or not) and these sessions'
    /// 4-tuples, in one transaction that only adds elements.
    async fn lock_ports_and(&mut self, sessions: &[SessionTuple]) -> Result<(), NetLockError> {
        if !self.installed {
            self.lock_ports().await?;
        }
        self.only_standing_lock = false;
        self.netlock.lock_ports_and_sessions(&self.bank_ports, sessions).await?;
        self.ports_locked = true;
        Ok(())
    }

    /// Carries out requests until `cancel`, then leaves nothing visible to a bank:
    /// frozen sessions and restored sockets are closed in repair mode.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>, cancel: CancellationToken) {
        loop {
            let request = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                request = rx.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
            };
            self.handle(request).await;
        }
        if !self.frozen.is_empty() {
            warn!(
                sessions = self.frozen.len(),
                "shutdown: frozen sessions closed silently (mups never said where they went)"
            );
            self.close_frozen_sessions(
                SessionDownReason::Shutdown,
                "pups stopped while the session was frozen",
            );
        }
        if !self.adoptees.is_empty() {
            warn!(
                sessions = self.adoptees.len(),
                "shutdown: restored sessions never served, closed silently"
            );
            self.discard_adoptees();
        }
        // Every bank session here is closed by now (or is the twin's): nothing left to
        // guard. A crash skips this and leaves the lock in place, which fails closed.
        if self.installed {
            match self.netlock.remove().await {
                Ok(()) => info!("shutdown: network lock removed"),
                Err(e) => warn!(error = %e, "shutdown: cannot remove the network lock"),
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        let Request { handover, barrier } = request;
        let (op, switch_id) = (handover.op, handover.switch_id);
        if let Some(barrier) = barrier {
            // The data channel is gone, or stuck: carry on; answers need a link anyway.
            let _ = tokio::time::timeout(BARRIER_WAIT, barrier).await;
        }
        info!(switch_id, op = ?op, count = handover.count, "HANDOVER from mups");
        let started = Instant::now();
        let result = match op {
            HandoverOp::Lock => self.lock().await,
            HandoverOp::Quiesce => self.quiesce().await.map(|n| vec![answer(HandoverOp::Quiesced, n, "")]),
            HandoverOp::Checkpoint => self.checkpoint().await,
            HandoverOp::Thaw => self.thaw().await,
            HandoverOp::CloseFrozen => self.close_frozen().await,
            HandoverOp::Restore => {
                self.receive(switch_id, &handover.payload).await;
                Ok(Vec::new())
            }
            HandoverOp::RestoreEnd => self.restore(handover.count).await,
            HandoverOp::Serve => self.serve().await,
            // Answers are filtered out by the link (`is_request`).
            _ => Ok(Vec::new()),
        };
        let took = started.elapsed();
        let metrics = &self.hub.metrics;
        metrics.handover_op(op, result.is_ok(), took);
        metrics.handover_gauges(self.frozen.len(), self.adoptees.len());
        let answers = match result {
            Ok(answers) => {
                info!(switch_id, op = ?op, took_us = took.as_micros() as u64, "HANDOVER done");
                answers
            }
            Err(e) => {
                error!(switch_id, op = ?op, error = %e, "HANDOVER failed");
                vec![answer(HandoverOp::Failed, 0, &e.to_string())]
            }
        };
        // On the data channel, whichever channel asked: an answer follows every
        // DATA written before it (Quiesced: all that the sessions read).
        for (op, count, detail, payload) in answers {
            let message = FoMessage::Handover(Handover { switch_id, op, count, detail, payload });
            self.hub.send_data_channel(message);
        }
        self.unlock_closed().await;
    }

    async fn lock(&mut self) -> Result<Vec<Answer>, HandoverError> {
        if !self.adoptees.is_empty() {
            // A standby again: sockets restored for a switchover that did not serve them go.
            warn!(sessions = self.adoptees.len(), "Lock: discarding restored sessions never served");
            self.discard_adoptees();
        }
        self.receiving = None;
        self.received = 0;
        self.incoming_failures.clear();
        // A demoted active fences this way (mups, on losing the VIP outside a
        // switchover): its sessions stay open, unreachable, until Serve.
        let live = self.live_sessions().len();
        if live > 0 {
            warn!(sessions = live, "Lock: bank sessions here are cut off from their banks until Serve");
        }
        self.lock_ports().await?;
        Ok(vec![answer(HandoverOp::Locked, self.bank_ports.len() as u32, "")])
    }

    /// The sessions not frozen.
    fn live_sessions(&self) -> Vec<Arc<Session>> {
        let frozen: Vec<u64> = self.frozen.iter().map(|f| f.session.id).collect();
        self.hub.sessions().into_iter().filter(|s| !frozen.contains(&s.id)).collect()
    }

    /// Holds every live session and waits until what they read is with `mups`.
    async fn quiesce(&mut self) -> Result<u32, HandoverError> {
        let sessions = self.live_sessions();
        let deadline = tokio::time::Instant::now() + QUIESCE_WAIT;
        for ack in self.hub.set_held(true, &sessions) {
            // A session that ends meanwhile drops its ack: it has nothing left to hold.
            let _ = tokio::time::timeout_at(deadline, ack).await;
        }
        while !Hub::drained(&sessions) {
            if tokio::time::Instant::now() >= deadline {
                let left = sessions.iter().filter(|s| !lock(&s.queue).items.is_empty()).count();
                return Err(HandoverError::NotQuiet(left));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(sessions.len() as u32)
    }

    async fn checkpoint(&mut self) -> Result<Vec<Answer>, HandoverError> {
        if !self.frozen.is_empty() {
            return Err(HandoverError::State("sessions are frozen already: Thaw or CloseFrozen first"));
        }
        // Where the freeze goes, for the log: each step's end, from the start.
        let started = Instant::now();
        let us = |since: Instant| since.elapsed().as_micros() as u64;
        self.quiesce().await?;
        let mut refused = Vec::new();
        let sessions = self.live_sessions();
        self.freeze(sessions, &mut refused).await;
        let frozen_us = us(started);
        // The bank's ACKs must not be dropped while bytes are in flight (see
        // `sys::unacked`): the lock comes once the bank has acknowledged them.
        self.wait_for_acks().await;
        let acked_us = us(started);
        // New connections wait (their SYNs are dropped and retried) until the
        // bank ports open again here (Thaw) or on the twin (Serve); repair mode
        // still receives, so each 4-tuple is locked before entering it.
        let tuples: Vec<_> = self.frozen.iter().map(|f| f.tuple).collect();
        let locked = self.lock_ports_and(&tuples).await;
        if let Err(e) = locked {
            // Not in repair mode yet: their tasks just start again.
            for f in std::mem::take(&mut self.frozen) {
                self.unfreeze(f);
            }
            if let Err(e) = self.netlock.unlock_all().await {
                error!(error = %e, "cannot lift the bank port lock after a failed checkpoint");
            } else {
                self.ports_locked = false;
                self.only_standing_lock = true;
            }
            self.hub.set_held(false, &self.hub.sessions());
            return Err(e.into());
        }
        let locked_us = us(started);
        // Connections accepted before the port lock went in go too (held since
        // birth, so quiet).
        let late = self.live_sessions();
        if !late.is_empty() {
            let before = self.frozen.len();
            self.freeze(late, &mut refused).await;
            let tuples: Vec<_> = self.frozen[before..].iter().map(|f| f.tuple).collect();
            if let Err(e) = self.netlock.lock_sessions(&tuples).await {
                // The port lock covers them already.
                warn!(error = %e, "cannot lock the 4-tuples of late sessions");
            }
        }
        let budget = self.max_frame - FRAME_MARGIN;
        let frozen = std::mem::take(&mut self.frozen);
        let taken = in_parallel(&frozen, |f| snapshot(f, budget));
        let mut snapshots = Vec::with_capacity(frozen.len());
        for (f, result) in frozen.into_iter().zip(taken) {
            match result {
                Ok(snapshot) => {
                    snapshots.push(snapshot);
                    self.frozen.push(f);
                }
                Err(why) => {
                    warn!(parent: &f.session.span, why = %why, "not handed over: serving it on here");
                    refused.push(format!("session {}: {why}", f.session.id));
                    self.unfreeze(f);
                }
            }
        }
        self.hub.metrics.handover_refused(refused.len());
        let mut answers = Vec::new();
        let taken_at_micros = now_micros();
        let mut batch = SnapshotBatch {
            appliance_id: self.hub.config().appliance.id.clone(),
            taken_at_micros,
            sessions: Vec::new(),
        };
        let mut size = 0;
        for (snapshot, len) in snapshots {
            let len = len + 4;
            if size + len > budget && !batch.sessions.is_empty() {
                answers.push(snapshots_answer(&mut batch)?);
                size = 0;
            }
            size += len;
            batch.sessions.push(snapshot);
        }
        if !batch.sessions.is_empty() {
            answers.push(snapshots_answer(&mut batch)?);
        }
        let mut detail = String::new();
        if !refused.is_empty() {
            let _ = write!(detail, "{} refused: {}", refused.len(), refused.join("; "));
        }
        info!(
            frozen = self.frozen.len(),
            refused = refused.len(),
            batches = answers.len(),
            frozen_us,
            acked_us,
            locked_us,
            done_us = us(started),
            "sessions checkpointed"
        );
        answers.push(answer(HandoverOp::Checkpointed, self.frozen.len() as u32, &detail));
        Ok(answers)
    }

    /// Stops the tasks of `sessions` (their writers first write what `mups` sent);
    /// those that do not stop are listed in `refused`.
    async fn freeze(&mut self, sessions: Vec<Arc<Session>>, refused: &mut Vec<String>) {
        let mut waits = Vec::with_capacity(sessions.len());
        for s in sessions {
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.command(SessionCmd::Freeze(tx));
            waits.push((s, rx));
        }
        let deadline = tokio::time::Instant::now() + FREEZE_GRACE * 2 + Duration::from_secs(1);
        for (s, rx) in waits {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(frozen)) => {
                    let tuple = SessionTuple { local: s.local, peer: s.peer };
                    self.frozen.push(FrozenSession { session: s, frozen, tuple });
                }
                Ok(Err(_)) => refused.push(format!("session {}: ended during the checkpoint", s.id)),
                Err(_) => refused.push(format!("session {}: its tasks did not stop in time", s.id)),
            }
        }
    }

    /// Waits (at most [`ACK_WAIT`]) until no frozen socket has bytes in flight.
    async fn wait_for_acks(&self) {
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let in_flight: usize =
                self.frozen.iter().map(|f| sys::unacked(&f.frozen.stream).unwrap_or(0)).sum();
            if in_flight == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    bytes = in_flight,
                    "bytes still in flight at the checkpoint: the twin sends them again"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// After `CloseFrozen` has been answered: back to the standing port lock
    /// alone — the closed sessions' locks and the closing and open ports go (the
    /// standing lock covers them; the sets need not grow with every switchover) —
    /// and what was held meanwhile is forwarded (from now on the port lock forwards).
    async fn unlock_closed(&mut self) {
        for session in std::mem::take(&mut self.closed_sessions) {
            self.report_ended(&session, SessionDownReason::HandedOver, "handed to the twin appliance");
        }
        let tuples = std::mem::take(&mut self.closed_tuples);
        if tuples.is_empty() {
            return;
        }
        let frozen: Vec<_> = self.frozen.iter().map(|f| f.tuple).collect();
        match self.netlock.fence(&self.bank_ports, &frozen).await {
            Ok(()) => self.only_standing_lock = frozen.is_empty(),
            Err(e) => {
                warn!(error = %e, "cannot tidy the lock after CloseFrozen (the bank ports stay locked)")
            }
        }
        self.forward_held_to_twin().await;
    }

    /// Restored sockets that will not serve here are closed silently (on drop);
    /// `DATA` kept for them is dropped, and counted.
    fn discard_adoptees(&mut self) {
        self.adoptees.clear();
        let dropped = self.hub.forget_awaited();
        if dropped > 0 {
            self.hub.metrics.links_dropped(crate::metrics::LinkDrop::UnknownSession, dropped as u64);
            warn!(messages = dropped, "DATA kept for restored sessions that will not serve here: dropped");
        }
    }

    /// Gives the packets the lock held their verdict (hold mode; otherwise there
    /// are none). Accepted, they go to the live sockets here, or on to the twin if
    /// the VIP has left.
    async fn release_held(&self, release: sys::Release) {
        let Some(hold) = self.hold.clone() else { return };
        match tokio::task::spawn_blocking(move || hold.release(release)).await {
            Ok(Ok(n)) => {
                self.hub.metrics.held_packets_released(n, release == sys::Release::Accept);
                info!(packets = n, ?release, "held bank packets released");
            }
            Ok(Err(e)) => error!(error = %e, "cannot release the held bank packets (they time out)"),
            Err(e) => error!(error = %e, "cannot release the held bank packets (they time out)"),
        }
    }

    /// Held packets whose sessions now live on the twin: on once the VIP has left
    /// (forwarded to it), never to this host, where they would meet no socket and
    /// draw an RST.
    async fn forward_held_to_twin(&self) {
        if self.hold.is_none() {
            return;
        }
        let vips: std::collections::BTreeSet<IpAddr> = self.bank_ports.iter().map(|&(ip, _)| ip).collect();
        let deadline = Instant::now() + VIP_GONE_WAIT;
        loop {
            let here: Vec<IpAddr> = vips.iter().copied().filter(|&ip| sys::is_local(ip)).collect();
            if here.is_empty() {
                return self.release_held(sys::Release::Accept).await;
            }
            if Instant::now() > deadline {
                warn!(vips = ?here, "the VIP is still here: held bank packets dropped (the banks resend them)");
                return self.release_held(sys::Release::Drop).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts a frozen session's tasks again (it is out of repair mode).
    fn unfreeze(&self, f: FrozenSession) {
        session::thaw(self.hub.clone(), f.session, f.frozen);
    }

    /// Every frozen session back to serving here; the locks lifted.
    async fn thaw_all(&mut self) -> (u32, Vec<String>) {
        let mut failures = Vec::new();
        let mut thawed = Vec::new();
        for f in std::mem::take(&mut self.frozen) {
            match sys::leave_repair(&f.frozen.stream) {
                Ok(()) => thawed.push(f),
                Err(e) => {
                    // Still in repair mode: it cannot serve, but closing it is silent.
                    error!(parent: &f.session.span, error = %e, "cannot leave repair mode: session lost");
                    failures.push(format!("session {}: cannot leave repair mode: {e}", f.session.id));
                    self.end_frozen(f, SessionDownReason::IoError, "cannot leave repair mode");
                }
            }
        }
        if self.installed {
            match self.netlock.unlock_all().await {
                Ok(()) => {
                    self.ports_locked = false;
                    self.only_standing_lock = true;
                }
                Err(e) => failures.push(format!("unlock: {e}")),
            }
        }
        let n = thawed.len() as u32;
        for f in thawed {
            self.unfreeze(f);
        }
        if !self.ports_locked {
            self.release_held(sys::Release::Accept).await;
        }
        self.hub.set_held(false, &self.hub.sessions());
        (n, failures)
    }

    async fn thaw(&mut self) -> Result<Vec<Answer>, HandoverError> {
        let (n, failures) = self.thaw_all().await;
        info!(sessions = n, "sessions thawed: served here again");
        if !failures.is_empty() && failures.iter().any(|f| f.starts_with("unlock")) {
            // The sessions run, but the lock is still up: mups must know.
            return Err(HandoverError::State("thawed, but the network lock could not be lifted"));
        }
        Ok(vec![answer(HandoverOp::Thawed, n, &failures.join("; "))])
    }

    /// Closes a frozen session in repair mode and reports its end.
    fn end_frozen(&self, f: FrozenSession, reason: SessionDownReason, detail: &str) {
        let FrozenSession { session, frozen, .. } = f;
        if let Some(stream) = take_from_runtime(&session, frozen.stream) {
            close_or_leak(&session, stream);
        }
        self.report_ended(&session, reason, detail);
    }

    /// A closed session's end: its bank slot, its metric, `SESSION_DOWN`.
    fn report_ended(&self, session: &Arc<Session>, reason: SessionDownReason, detail: &str) {
        self.hub.release(session.bank);
        self.hub.metrics.session_closed(session.bank_id(), reason);
        self.hub.session_ended(session, reason, detail.to_owned());
    }

    fn close_frozen_sessions(&mut self, reason: SessionDownReason, detail: &str) -> u32 {
        let frozen = std::mem::take(&mut self.frozen);
        let n = frozen.len() as u32;
        for f in frozen {
            self.end_frozen(f, reason, detail);
        }
        n
    }

    async fn close_frozen(&mut self) -> Result<Vec<Answer>, HandoverError> {
        // Fenced: from now on the twin serves these banks (the checkpoint locked
        // the ports already; a second nft run would only delay what follows).
        if !self.ports_locked {
            self.lock_ports().await?;
        }
        let frozen = std::mem::take(&mut self.frozen);
        let n = frozen.len() as u32;
        let mut streams = Vec::with_capacity(frozen.len());
        for f in frozen {
            let FrozenSession { session, frozen, tuple } = f;
            if let Some(stream) = take_from_runtime(&session, frozen.stream) {
                streams.push((session.clone(), stream));
            }
            self.closed_tuples.push(tuple);
            self.closed_sessions.push(session);
        }
        // The twin waits for our answer: the close system calls run in parallel,
        // and the sessions' ends are reported after the answer (`unlock_closed`).
        in_parallel(streams, |(session, stream)| close_or_leak(&session, stream));
        self.hub.metrics.handed_over(n);
        // With the sockets gone, what the banks sent here meanwhile goes on to the
        // twin at once: it should arrive while the twin still holds its own, before
        // the twin's first segments make the banks' timestamps move on (a held
        // segment arriving after that is dropped by PAWS, and resent by the bank).
        self.forward_held_to_twin().await;
        // Sessions that were not handed over run their course here.
        let closed: Vec<u64> = self.closed_sessions.iter().map(|s| s.id).collect();
        let others: Vec<_> = self.hub.sessions().into_iter().filter(|s| !closed.contains(&s.id)).collect();
        self.hub.set_held(false, &others);
        info!(sessions = n, "frozen sessions closed silently: the twin serves them");
        Ok(vec![answer(HandoverOp::Closed, n, "")])
    }

    /// A `Restore` payload: its sessions are restored now, behind the lock,
    /// while the VIP moves; `RestoreEnd` only sums up.
    async fn receive(&mut self, switch_id: u64, payload: &[u8]) {
        if self.receiving != Some(switch_id) {
            if !self.adoptees.is_empty() {
                warn!(
                    sessions = self.adoptees.len(),
                    "new snapshots: discarding restored sessions never served"
                );
                self.discard_adoptees();
            }
            self.receiving = Some(switch_id);
            self.received = 0;
            self.incoming_failures.clear();
        }
        let batch = match SnapshotBatch::decode(payload) {
            Ok(batch) => batch,
            Err(e) => {
                error!(error = %e, "a snapshot batch does not decode: its sessions cannot be restored");
                self.incoming_failures.push(format!("batch: {e}"));
                return;
            }
        };
        info!(from = %batch.appliance_id, sessions = batch.sessions.len(), "snapshots received");
        self.received += batch.sessions.len() as u32;
        // A standby restores behind the lock; Serve lifts it.
        if !self.ports_locked
            && let Err(e) = self.lock_ports().await
        {
            error!(error = %e, "cannot lock the bank ports: the snapshots are not restored");
            self.incoming_failures.push(format!("{} sessions not restored: lock: {e}", batch.sessions.len()));
            return;
        }
        self.restore_snapshots(batch.sessions);
    }

    /// Restores snapshots as sockets in repair mode (in parallel: a system call
    /// sequence per session), kept as adoptees until `Serve`.
    fn restore_snapshots(&mut self, snapshots: Vec<SessionSnapshot>) {
        let mut valid = Vec::with_capacity(snapshots.len());
        for snap in snapshots {
            let id = snap.app.session_id;
            let Some(bank) = self.hub.bank_index(&snap.app.bank_id) else {
                self.incoming_failures
                    .push(format!("session {id}: bank {:?} is not configured here", snap.app.bank_id));
                continue;
            };
            let in_use = self.hub.session(id).is_some()
                || self.adoptees.iter().any(|a| a.state.session_id == id)
                || valid.iter().any(|(_, s): &(usize, SessionSnapshot)| s.app.session_id == id);
            if in_use {
                self.incoming_failures.push(format!("session {id}: the id is in use here"));
                continue;
            }
            valid.push((bank, snap));
        }
        // Bytes still in flight at the checkpoint (the ACK wait ran out) may
        // have reached the bank: restored as sent, its ACK of them is accepted.
        let restored = in_parallel(&valid, |(_, snap)| sys::restore_with(&snap.tcp, sys::InFlight::AsSent));
        for ((bank, snap), result) in valid.into_iter().zip(restored) {
            let id = snap.app.session_id;
            match result {
                Ok(restored) => {
                    self.hub.adopt_id(id);
                    self.hub.await_session(id, bank);
                    self.adoptees.push(Adoptee { bank, state: snap.app, restored });
                }
                Err(e) => self.incoming_failures.push(format!("session {id}: {e}")),
            }
        }
    }

    async fn restore(&mut self, expected: u32) -> Result<Vec<Answer>, HandoverError> {
        if !self.ports_locked {
            self.lock_ports().await?;
        }
        let mut failures = std::mem::take(&mut self.incoming_failures);
        if self.received != expected {
            failures.push(format!("RestoreEnd says {expected} snapshots, {} received", self.received));
        }
        self.receiving = None;
        self.received = 0;
        let n = self.adoptees.len() as u32;
        self.hub.metrics.restore_failures(failures.len());
        if !failures.is_empty() {
            warn!(failures = ?failures, "some sessions could not be restored");
        }
        info!(sessions = n, "sessions restored (bank ports still locked)");
        Ok(vec![answer(HandoverOp::Restored, n, &failures.join("; "))])
    }

    async fn serve(&mut self) -> Result<Vec<Answer>, HandoverError> {
        if !self.frozen.is_empty() {
            return Err(HandoverError::State("sessions are frozen here: Thaw or CloseFrozen first"));
        }
        // Where the time goes, for the log: each step's end, from the start.
        let started = Instant::now();
        let us = |since: Instant| since.elapsed().as_micros() as u64;
        if self.installed {
            if self.only_standing_lock {
                // The usual case: one add, no removal to wait for.
                self.netlock.open_ports(&self.bank_ports).await?;
            } else {
                warn!("Serve: the lock holds closing ports or sessions: lifting it whole (slower)");
                self.netlock.unlock_all().await?;
                self.only_standing_lock = true;
            }
        }
        self.ports_locked = false;
        let unlocked_us = us(started);
        // The restored sockets are out of repair mode and take what the banks
        // sent meanwhile now (acknowledged at once, read once their tasks run),
        // rather than after every session below is set up.
        self.release_held(sys::Release::Accept).await;
        let released_us = us(started);
        // In parallel, like the restore: each session's tasks start as soon as
        // it is set up (its threads enter this runtime to register and spawn).
        let (hub, runtime) = (self.hub.clone(), tokio::runtime::Handle::current());
        let no_idle_probe = self.hold.is_some();
        // Sessions with a request waiting (read by nobody yet, or held by the
        // lock and just let go) first: the idle ones cost a bank nothing to wait.
        // (The first thread's share starts with them: a few dozen, well under a ms.)
        let mut adoptees: Vec<(bool, Adoptee)> = std::mem::take(&mut self.adoptees)
            .into_iter()
            .map(|a| (a.restored.bytes_to_read() > 0 || !a.state.partial_frame.is_empty(), a))
            .collect();
        adoptees.sort_by_key(|(waiting, _)| !waiting);
        let waiting = adoptees.iter().filter(|(waiting, _)| *waiting).count();
        let adopted = in_parallel(adoptees.into_iter().map(|(_, a)| a), |a| {
            let _entered = runtime.enter();
            let id = a.state.session_id;
            // Hold mode delivers what the bank sent meanwhile: no probe needed.
            let restored = if no_idle_probe { a.restored.without_idle_probe() } else { a.restored };
            // What the new socket does not take at once, its writer writes next.
            let (std, rest) = restored.resume_nonblocking().map_err(|e| format!("session {id}: {e}"))?;
            let stream = register(std).map_err(|e| format!("session {id}: {e}"))?;
            hub.reserve_forced(a.bank);
            session::adopt(hub.clone(), a.bank, stream, &a.state, Bytes::from(rest)).map_err(|e| {
                hub.release(a.bank);
                format!("session {id}: {e}")
            })
        });
        let served = adopted.iter().filter(|r| r.is_ok()).count() as u32;
        let failures: Vec<String> = adopted.into_iter().filter_map(Result::err).collect();
        // Sessions that failed to resume: what was kept for them goes too.
        self.discard_adoptees();
        self.hub.metrics.adopted(served);
        self.hub.set_held(false, &self.hub.sessions());
        info!(
            sessions = served,
            waiting,
            unlocked_us,
            released_us,
            done_us = us(started),
            "serving: bank ports unlocked"
        );
        Ok(vec![answer(HandoverOp::Serving, served, &failures.join("; "))])
    }
}

/// A frozen session's socket, taken from the runtime to be closed; `None` if
/// deregistering failed (dropped, it is still in repair mode: silent).
fn take_from_runtime(session: &Session, stream: tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    stream
        .into_std()
        .map_err(|e| warn!(parent: &session.span, error = %e, "cannot take the socket from the runtime"))
        .ok()
}

/// Closes a frozen socket without a FIN or RST to the bank; if repair mode
/// cannot be entered the fd is leaked on purpose: open forever beats a FIN.
fn close_or_leak(session: &Session, stream: std::net::TcpStream) {
    if let Err(e) = sys::close_silently(stream) {
        error!(parent: &session.span, error = %e, "cannot close silently: socket leaked on purpose");
        std::mem::forget(e.fd);
    }
}

/// Checkpoints one frozen session; on failure it is out of repair mode again.
fn snapshot(f: &FrozenSession, budget: usize) -> Result<(SessionSnapshot, usize), String> {
    if f.frozen.skipping > 0 {
        return Err(format!("in the middle of skipping a bad frame ({} bytes to go)", f.frozen.skipping));
    }
    let mut tcp = sys::checkpoint(&f.frozen.stream, Buffers::Autotuned).map_err(|e| e.to_string())?;
    // Bytes the writer could not hand to the kernel go after the send queue,
    // as if written: the twin sends the whole queue as new data anyway.
    let extra = &f.frozen.unwritten;
    if !extra.is_empty() {
        tcp.send_queue.extend_from_slice(extra);
        tcp.snd_seq = tcp.snd_seq.wrapping_add(extra.len() as u32);
        tcp.send_unsent += extra.len() as u32;
    }
    let (last_tpdu, last_header) = f.session.reply_headers();
    let snapshot = SessionSnapshot {
        tcp,
        app: SessionState {
            bank_id: f.session.bank_id().to_owned(),
            session_id: f.session.id,
            partial_frame: f.frozen.partial.to_vec(),
            last_tpdu,
            last_header: last_header.map(|h| h.to_vec()),
            sign_on: SignOnState::Unknown,
            matching: Vec::new(),
        },
    };
    let len = snapshot.encode().map_err(|e| e.to_string())?.len();
    if len > budget {
        let _ = sys::leave_repair(&f.frozen.stream);
        return Err(format!("its snapshot ({len} bytes) does not fit a local link frame"));
    }
    Ok((snapshot, len))
}

/// `f` over `items`, on up to [`PARALLEL_THREADS`] threads when there are many:
/// a checkpoint, restore or close is a run of system calls per session, and the
/// freeze lasts as long as the longest share. Results are in the order of `items`.
fn in_parallel<T: Send, R: Send>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let items: Vec<T> = items.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(PARALLEL_THREADS);
    if threads < 2 || items.len() < PARALLEL_MIN {
        return items.into_iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(results) => results,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// Hands a resumed socket to the runtime. Should that fail, the socket is closed
/// in repair mode: `from_std` would otherwise drop it with a plain close.
fn register(std: std::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    // A second fd on the same socket, to close it silently if registering fails.
    let spare = match std.try_clone() {
        Ok(spare) => spare,
        Err(e) => {
            let _ = sys::close_silently(std);
            return Err(e);
        }
    };
    match tokio::net::TcpStream::from_std(std) {
        Ok(stream) => Ok(stream),
        Err(e) => {
            let _ = sys::close_silently(spare);
            Err(e)
        }
    }
}

fn answer(op: HandoverOp, count: u32, detail: &str) -> Answer {
    (op, count, detail.to_owned(), Bytes::new())
}

fn snapshots_answer(batch: &mut SnapshotBatch) -> Result<Answer, SnapshotError> {
    let n = batch.sessions.len() as u32;
    let payload = Bytes::from(batch.encode()?);
    batch.sessions.clear();
    Ok((HandoverOp::Snapshots, n, String::new(), payload))
}

/// Every VIP:port banks connect to: each bank's `listen`, or with an unspecified
/// address, that port on every `[vrrp]` VIP of the family. Port 0 (tests only)
/// has nothing to lock.
fn bank_ports(hub: &Hub) -> Vec<(IpAddr, u16)> {
    let cfg = hub.config();
    let vips: Vec<IpAddr> = cfg.vrrp.iter().flat_map(|v| v.vips.iter().map(|n| n.addr())).collect();
    let mut ports = Vec::new();
    for bank in &cfg.banks {
        let (ip, port) = (bank.listen.ip(), bank.listen.port());
        if port == 0 {
            continue;
        }
        if ip.is_unspecified() {
            ports.extend(vips.iter().filter(|v| v.is_ipv4() == ip.is_ipv4()).map(|&v| (v, port)));
        } else {
            ports.push((ip, port));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
