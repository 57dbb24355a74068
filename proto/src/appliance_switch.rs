//! The planned appliance switchover (flow F5), as two sans-IO state machines: the
//! active appliance hands every bank TCP session to its twin, and the VIP follows.
//!
//! ```text
//! active:  Preparing → Quiescing → Checkpointing → Shipping → MovingVip → Committed
//!              \___________\______________\____________\          \
//!                                                       → Aborted   → (VIP back) Aborted
//! standby: Idle → Preparing → Receiving → Holding → Restoring → Serving
//!                     \____________\__________\ (abort, or the VIP never comes) → Aborted
//! ```
//!
//! The one rule that keeps the two appliances from both serving a session:
//! **whoever holds the VIP serves the sessions**. Until the active asks keepalived
//! to give the VIP up ([`ActiveOutput::SetVrrpFault`]), any failure aborts: the
//! active thaws its frozen sessions and tells the twin to discard what it received.
//! Once it has asked, it decides nothing by itself any more: when the twin says it
//! has the VIP (`VIP_TAKEN`), it closes its frozen copies (silently, in repair
//! mode) and the twin restores; if the VIP comes back (the twin died, or never took
//! it), it thaws and serves on. Its own keepalived reporting the VIP gone is not
//! enough: the VIP may have gone nowhere. The twin restores only once it holds the VIP, and it keeps
//! the bank ports locked until every session is restored.
//!
//! Inputs take `now`; outputs are drained with `poll_output`; the next deadline is
//! `poll_timeout`. `mups` drives both machines: it talks to the twin over the peer
//! link, to `pups` over the local link, and to keepalived through its track file and
//! notify FIFO.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Deadlines of a planned switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplianceSwitchConfig {
    /// Longest wait for the twin to answer PREPARE (lock in place, FO links up).
    pub prepare_timeout: Duration,
    /// Longest wait for `pups` to stop reading and for bank requests in flight to
    /// be answered; what is still in flight then is handed over with the sessions.
    pub quiesce_timeout: Duration,
    /// Longest wait for `pups` to lock and checkpoint every session.
    pub checkpoint_timeout: Duration,
    /// Longest wait for the twin to confirm it holds every snapshot.
    pub ship_timeout: Duration,
    /// Longest wait for the VIP to move once keepalived was asked to give it up.
    pub vip_timeout: Duration,
    /// Longest wait (twin) for the restore of every session.
    pub restore_timeout: Duration,
    /// Longest wait (twin), once it has taken over, for the active's word that it
    /// has closed its frozen copies and sent on what the banks sent it meanwhile
    /// ([`PeerMessage::Closed`]); the twin serves without it after that.
    pub close_wait: Duration,
}

impl Default for ApplianceSwitchConfig {
    fn default() -> Self {
        Self {
            prepare_timeout: Duration::from_secs(2),
            quiesce_timeout: Duration::from_millis(500),
            checkpoint_timeout: Duration::from_secs(2),
            ship_timeout: Duration::from_secs(3),
            vip_timeout: Duration::from_secs(3),
            restore_timeout: Duration::from_secs(5),
            close_wait: Duration::from_millis(200),
        }
    }
}

/// What the two appliances say to each other about a switchover (over the peer link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMessage {
    /// Active → twin: get ready to take over (lock the bank ports, FO links up).
    Prepare {
        /// The switchover.
        switch_id: u64,
    },
    /// Twin → active: ready.
    Ready {
        /// The switchover.
        switch_id: u64,
    },
    /// Active → twin: every snapshot has been sent; `sessions` of them.
    ShipEnd {
        /// The switchover.
        switch_id: u64,
        /// Snapshots sent.
        sessions: u32,
    },
    /// Twin → active: it holds that many snapshots (must equal what was sent).
    Holding {
        /// The switchover.
        switch_id: u64,
        /// Snapshots held.
        sessions: u32,
    },
    /// Twin → active: the VIP arrived here; it restores the sessions. From now on
    /// the twin serves them: the active closes its frozen copies.
    VipTaken {
        /// The switchover.
        switch_id: u64,
    },
    /// Twin → active: it holds the VIP and serves the sessions.
    Serving {
        /// The switchover.
        switch_id: u64,
        /// Sessions restored.
        restored: u32,
        /// Sessions that could not be restored (each logged with its reason).
        failed: u32,
    },
    /// Active → twin: its frozen copies are closed and the bank segments it held
    /// meanwhile are on their way to the twin (network lock in hold mode). The twin
    /// unlocks only then (or after `close_wait`): those segments must reach it
    /// while it still holds its own, before its first segments to the banks, or
    /// PAWS drops them there.
    Closed {
        /// The switchover.
        switch_id: u64,
    },
    /// Either way: stop; the sender gives the reason.
    Abort {
        /// The switchover.
        switch_id: u64,
        /// Why.
        reason: String,
    },
}

impl PeerMessage {
    /// The switchover the message is about.
    pub fn switch_id(&self) -> u64 {
        match self {
            Self::Prepare { switch_id }
            | Self::Ready { switch_id }
            | Self::ShipEnd { switch_id, .. }
            | Self::Holding { switch_id, .. }
            | Self::VipTaken { switch_id }
            | Self::Serving { switch_id, .. }
            | Self::Closed { switch_id }
            | Self::Abort { switch_id, .. } => *switch_id,
        }
    }
}

/// Why a switchover was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum AbortReason {
    /// A step was not confirmed in time.
    Timeout {
        /// The phase that timed out.
        phase: String,
    },
    /// The twin refused or gave up.
    Peer {
        /// Its reason.
        detail: String,
    },
    /// The peer link was lost.
    PeerLost,
    /// `pups` could not checkpoint (or restore).
    Sessions {
        /// What failed.
        detail: String,
    },
    /// The twin holds a different number of snapshots than were sent.
    CountMismatch {
        /// Sent.
        sent: u32,
        /// Held.
        held: u32,
    },
    /// The VIP came back (or never left): this appliance serves on.
    VipStayed,
    /// An operator cancelled it.
    Cancelled,
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { phase } => write!(f, "no confirmation in time ({phase})"),
            Self::Peer { detail } => write!(f, "the twin aborted: {detail}"),
            Self::PeerLost => f.write_str("the peer link was lost"),
            Self::Sessions { detail } => write!(f, "sessions: {detail}"),
            Self::CountMismatch { sent, held } => write!(f, "sent {sent} snapshots, the twin holds {held}"),
            Self::VipStayed => f.write_str("the VIP did not move"),
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// How long each step took; `None` for steps not reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepTimes {
    /// PREPARE → READY.
    pub prepare_micros: Option<u64>,
    /// Stop reading → quiet.
    pub quiesce_micros: Option<u64>,
    /// Lock and checkpoint of every session.
    pub checkpoint_micros: Option<u64>,
    /// First snapshot sent → twin holds all.
    pub ship_micros: Option<u64>,
    /// VIP asked to move → moved (active), or → VIP here (twin).
    pub vip_micros: Option<u64>,
    /// Restore of every session (twin).
    pub restore_micros: Option<u64>,
    /// FO links up and tables in place, until serving (twin).
    pub takeover_micros: Option<u64>,
    /// Banks not read: stop reading (active) → reading again (either side).
    pub frozen_micros: Option<u64>,
    /// The whole switchover.
    pub total_micros: u64,
}

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplianceOutcome {
    /// The switchover.
    pub switch_id: u64,
    /// The sessions moved to the twin (active) / are served here (twin).
    pub committed: bool,
    /// Why not.
    pub aborted: Option<AbortReason>,
    /// Sessions checkpointed (active) or restored (twin).
    pub sessions: u32,
    /// Step timings.
    pub times: StepTimes,
}

/// Where the active side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivePhase {
    /// PREPARE sent; waiting for READY.
    Preparing,
    /// `pups` stops reading; bank requests in flight are answered.
    Quiescing,
    /// `pups` locks and checkpoints every session.
    Checkpointing,
    /// Snapshots on their way; waiting for HOLDING.
    Shipping,
    /// keepalived asked to give the VIP up; waiting for it to go.
    MovingVip,
    /// The twin has the sessions.
    Committed,
    /// The VIP is to come back before the sessions are thawed.
    AwaitingVipBack,
    /// This appliance serves on.
    Aborted,
}

/// What happens to the active side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveInput {
    /// A message from the twin.
    Peer(PeerMessage),
    /// The peer link went down.
    PeerLost,
    /// `pups` stopped reading and the requests in flight are answered (or the
    /// quiesce deadline passed: the driver then hands the rest over).
    Quiesced,
    /// `pups` locked and checkpointed `sessions` sessions (still held in repair mode).
    Checkpointed {
        /// Sessions.
        sessions: u32,
    },
    /// Every snapshot has been written to the peer link.
    Shipped,
    /// `pups` could not do what it was asked.
    PupsFailed(String),
    /// Our keepalived: `true` when this appliance holds the VIP (MASTER).
    VipHere(bool),
    /// An operator cancelled (honoured until the VIP is asked to move).
    Cancel,
}

/// What the active side asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActiveOutput {
    /// Send to the twin.
    ToPeer(PeerMessage),
    /// `pups`: stop reading from banks (sessions stay open); `mups`: hold new
    /// FO-originated traffic and wait for bank requests in flight.
    Quiesce,
    /// `pups`: lock every session's 4-tuple, checkpoint it, keep it in repair mode.
    Checkpoint,
    /// Send every snapshot to the twin, then report [`ActiveInput::Shipped`].
    Ship,
    /// keepalived: go FAULT (`true`, a priority-0 advert hands the VIP over at
    /// once) or back (`false`).
    SetVrrpFault(bool),
    /// `pups`: the twin has the sessions: close our frozen copies in repair mode
    /// (no FIN, no RST) and drop the bank ports (fence).
    CloseFrozen,
    /// `pups`: repair off, unlock, read again: this appliance serves on.
    Thaw,
    /// The end.
    Finished(ApplianceOutcome),
}

/// The active appliance's side of one planned switchover.
#[derive(Debug)]
pub struct ActiveSwitch {
    switch_id: u64,
    cfg: ApplianceSwitchConfig,
    phase: ActivePhase,
    started: Instant,
    step_started: Instant,
    frozen_since: Option<Instant>,
    deadline: Option<Instant>,
    sessions: u32,
    shipped: bool,
    times: StepTimes,
    abort: Option<AbortReason>,
    out: VecDeque<ActiveOutput>,
}

impl ActiveSwitch {
    /// Starts: PREPARE goes to the twin.
    pub fn start(switch_id: u64, cfg: ApplianceSwitchConfig, now: Instant) -> Self {
        let mut s = Self {
            switch_id,
            cfg,
            phase: ActivePhase::Preparing,
            started: now,
            step_started: now,
            frozen_since: None,
            deadline: Some(now + cfg.prepare_timeout),
            sessions: 0,
            shipped: false,
            times: StepTimes::default(),
            abort: None,
            out: VecDeque::new(),
        };
        s.out.push_back(ActiveOutput::ToPeer(PeerMessage::Prepare { switch_id }));
        s
    }

    /// The switchover id.
    pub fn switch_id(&self) -> u64 {
        self.switch_id
    }

    /// Where it is.
    pub fn phase(&self) -> ActivePhase {
        self.phase
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, ActivePhase::Committed | ActivePhase::Aborted)
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<ActiveOutput> {
        self.out.pop_front()
    }

    fn step(&mut self, now: Instant, phase: ActivePhase, timeout: Option<Duration>) -> u64 {
        let took = micros(now.saturating_duration_since(self.step_started));
        self.step_started = now;
        self.phase = phase;
        self.deadline = timeout.map(|t| now + t);
        took
    }

    /// Feeds an input.
    pub fn handle(&mut self, now: Instant, input: ActiveInput) {
        use ActivePhase as P;
        if self.is_finished() {
            return;
        }
        match (self.phase, input) {
            (_, ActiveInput::Peer(m)) if m.switch_id() != self.switch_id => {}
            (P::Preparing, ActiveInput::Peer(PeerMessage::Ready { .. })) => {
                self.times.prepare_micros =
                    Some(self.step(now, P::Quiescing, Some(self.cfg.quiesce_timeout)));
                self.frozen_since = Some(now);
                self.out.push_back(ActiveOutput::Quiesce);
            }
            (P::Quiescing, ActiveInput::Quiesced) => self.checkpoint(now),
            (P::Checkpointing, ActiveInput::Checkpointed { sessions }) => {
                self.sessions = sessions;
                self.times.checkpoint_micros = Some(self.step(now, P::Shipping, Some(self.cfg.ship_timeout)));
                self.out.push_back(ActiveOutput::Ship);
            }
            (P::Shipping, ActiveInput::Shipped) if !self.shipped => {
                self.shipped = true;
                let end = PeerMessage::ShipEnd { switch_id: self.switch_id, sessions: self.sessions };
                self.out.push_back(ActiveOutput::ToPeer(end));
            }
            (P::Shipping, ActiveInput::Peer(PeerMessage::Holding { sessions, .. })) => {
                if sessions != self.sessions {
                    return self
                        .abort(now, AbortReason::CountMismatch { sent: self.sessions, held: sessions });
                }
                self.times.ship_micros = Some(self.step(now, P::MovingVip, Some(self.cfg.vip_timeout)));
                self.out.push_back(ActiveOutput::SetVrrpFault(true));
            }
            // The VIP leaving us is not enough: it may have gone nowhere (the
            // twin's keepalived is stuck). The twin's word that it has it is.
            (P::MovingVip | P::AwaitingVipBack, ActiveInput::Peer(PeerMessage::VipTaken { .. })) => {
                self.abort = None;
                self.times.vip_micros = Some(self.step(now, P::Committed, None));
                self.out.push_back(ActiveOutput::CloseFrozen);
                self.finish(now);
            }
            // Once the VIP is asked to move, only the VIP decides (module docs).
            (P::MovingVip, ActiveInput::Peer(PeerMessage::Abort { reason, .. })) => {
                self.await_vip_back(now, AbortReason::Peer { detail: reason });
            }
            (P::MovingVip, ActiveInput::PeerLost | ActiveInput::PupsFailed(_)) => {
                self.await_vip_back(now, AbortReason::PeerLost);
            }
            (P::AwaitingVipBack, ActiveInput::VipHere(true)) => {
                // Only now may the twin forget the snapshots: the VIP is here.
                let reason = self.abort.as_ref().map_or_else(String::new, ToString::to_string);
                self.out.push_back(ActiveOutput::ToPeer(PeerMessage::Abort {
                    switch_id: self.switch_id,
                    reason,
                }));
                self.step(now, P::Aborted, None);
                self.out.push_back(ActiveOutput::Thaw);
                self.finish(now);
            }
            (P::AwaitingVipBack | P::MovingVip, _) => {}
            (_, ActiveInput::Peer(PeerMessage::Abort { reason, .. })) => {
                self.abort(now, AbortReason::Peer { detail: reason });
            }
            (_, ActiveInput::PeerLost) => self.abort(now, AbortReason::PeerLost),
            (_, ActiveInput::PupsFailed(detail)) => self.abort(now, AbortReason::Sessions { detail }),
            (_, ActiveInput::Cancel) => self.abort(now, AbortReason::Cancelled),
            _ => {}
        }
    }

    fn checkpoint(&mut self, now: Instant) {
        self.times.quiesce_micros =
            Some(self.step(now, ActivePhase::Checkpointing, Some(self.cfg.checkpoint_timeout)));
        self.out.push_back(ActiveOutput::Checkpoint);
    }

    /// Fires the deadline if it has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.deadline else { return };
        if now < at {
            return;
        }
        match self.phase {
            // Quiet enough: what is still in flight goes with the sessions.
            ActivePhase::Quiescing => self.checkpoint(now),
            ActivePhase::MovingVip => self.await_vip_back(now, AbortReason::VipStayed),
            phase => {
                let phase = format!("{phase:?}").to_lowercase();
                self.abort(now, AbortReason::Timeout { phase });
            }
        }
    }

    /// Before the VIP was asked to move: thaw at once, tell the twin.
    fn abort(&mut self, now: Instant, reason: AbortReason) {
        let frozen = self.frozen_since.is_some();
        if !matches!(reason, AbortReason::Peer { .. } | AbortReason::PeerLost) {
            let msg = PeerMessage::Abort { switch_id: self.switch_id, reason: reason.to_string() };
            self.out.push_back(ActiveOutput::ToPeer(msg));
        }
        self.abort = Some(reason);
        self.step(now, ActivePhase::Aborted, None);
        if frozen {
            self.out.push_back(ActiveOutput::Thaw);
        }
        self.finish(now);
    }

    /// After the VIP was asked to move: take the fault back and let keepalived
    /// say where the VIP is.
    /// The twin is not told yet: should the VIP reach it anyway, it must still
    /// hold the snapshots and restore them.
    fn await_vip_back(&mut self, now: Instant, reason: AbortReason) {
        self.abort = Some(reason);
        self.step(now, ActivePhase::AwaitingVipBack, None);
        self.out.push_back(ActiveOutput::SetVrrpFault(false));
    }

    fn finish(&mut self, now: Instant) {
        self.deadline = None;
        self.times.total_micros = micros(now.saturating_duration_since(self.started));
        if self.phase == ActivePhase::Aborted {
            self.times.frozen_micros = self.frozen_since.map(|t| micros(now.saturating_duration_since(t)));
        }
        let outcome = ApplianceOutcome {
            switch_id: self.switch_id,
            committed: self.phase == ActivePhase::Committed,
            aborted: self.abort.clone(),
            sessions: self.sessions,
            times: self.times.clone(),
        };
        self.out.push_back(ActiveOutput::Finished(outcome));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Where the twin (standby) side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyPhase {
    /// PREPARE received; making sure the bank ports are locked.
    Preparing,
    /// READY sent; snapshots arriving.
    Receiving,
    /// Every snapshot held; waiting for the VIP.
    Holding,
    /// The VIP is here; `pups` restores the sessions (bank ports still locked).
    Restoring,
    /// `mups` takes over: FO links up, routes and matching state in place.
    TakingOver,
    /// Unlocked; this appliance serves the sessions.
    Serving,
    /// Nothing taken over; snapshots discarded.
    Aborted,
}

/// What happens to the twin side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyInput {
    /// A message from the active.
    Peer(PeerMessage),
    /// The peer link went down.
    PeerLost,
    /// The bank ports on the VIP are locked (dropped) here.
    Locked,
    /// Snapshots stored so far, in all.
    Received(u32),
    /// Our keepalived: `true` when this appliance holds the VIP.
    VipHere(bool),
    /// `pups` restored the sessions (still locked).
    Restored {
        /// Restored.
        restored: u32,
        /// Not restorable (each logged with its reason).
        failed: u32,
    },
    /// `mups` took over: FO links up, routes and matching state loaded.
    TookOver,
    /// `pups` or `mups` could not do what it was asked.
    Failed(String),
}

/// What the twin side asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyOutput {
    /// Send to the active.
    ToPeer(PeerMessage),
    /// `pups`: make sure bank traffic to the VIP's bank ports is dropped.
    Lock,
    /// Drop the snapshots received (the bank ports stay locked: we are standby).
    Discard,
    /// `pups`: restore every snapshot (repair mode; ports still locked).
    Restore,
    /// `mups`: connect the FO links, load routes and matching state.
    TakeOver,
    /// `pups`: unlock and read the banks: this appliance is active.
    Serve,
    /// The end.
    Finished(ApplianceOutcome),
}

/// The twin's side of one planned switchover.
#[derive(Debug)]
pub struct StandbySwitch {
    switch_id: u64,
    cfg: ApplianceSwitchConfig,
    phase: StandbyPhase,
    started: Instant,
    step_started: Instant,
    deadline: Option<Instant>,
    received: u32,
    expected: Option<u32>,
    vip_here: bool,
    /// `mups` has taken over; only the active's [`PeerMessage::Closed`] is awaited.
    took_over: bool,
    /// The active's [`PeerMessage::Closed`] came.
    active_closed: bool,
    restored: u32,
    failed: u32,
    times: StepTimes,
    abort: Option<AbortReason>,
    out: VecDeque<StandbyOutput>,
}

impl StandbySwitch {
    /// PREPARE arrived: lock first.
    pub fn start(switch_id: u64, cfg: ApplianceSwitchConfig, now: Instant) -> Self {
        let mut s = Self {
            switch_id,
            cfg,
            phase: StandbyPhase::Preparing,
            started: now,
            step_started: now,
            deadline: Some(now + cfg.prepare_timeout),
            received: 0,
            expected: None,
            vip_here: false,
            took_over: false,
            active_closed: false,
            restored: 0,
            failed: 0,
            times: StepTimes::default(),
            abort: None,
            out: VecDeque::new(),
        };
        s.out.push_back(StandbyOutput::Lock);
        s
    }

    /// The switchover id.
    pub fn switch_id(&self) -> u64 {
        self.switch_id
    }

    /// Where it is.
    pub fn phase(&self) -> StandbyPhase {
        self.phase
    }

    /// Whether it has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, StandbyPhase::Serving | StandbyPhase::Aborted)
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<StandbyOutput> {
        self.out.pop_front()
    }

    fn step(&mut self, now: Instant, phase: StandbyPhase, timeout: Option<Duration>) -> u64 {
        let took = micros(now.saturating_duration_since(self.step_started));
        self.step_started = now;
        self.phase = phase;
        self.deadline = timeout.map(|t| now + t);
        took
    }

    /// Feeds an input.
    pub fn handle(&mut self, now: Instant, input: StandbyInput) {
        use StandbyPhase as P;
        if self.is_finished() {
            return;
        }
        match (self.phase, input) {
            (_, StandbyInput::Peer(m)) if m.switch_id() != self.switch_id => {}
            (_, StandbyInput::VipHere(here)) => {
                self.vip_here = here;
                if here && self.phase == P::Holding {
                    self.restore(now);
                }
            }
            (P::Preparing, StandbyInput::Locked) => {
                self.times.prepare_micros = Some(self.step(now, P::Receiving, Some(self.cfg.ship_timeout)));
                self.out.push_back(StandbyOutput::ToPeer(PeerMessage::Ready { switch_id: self.switch_id }));
            }
            (P::Receiving, StandbyInput::Received(n)) => {
                self.received = n;
                self.check_all_received(now);
            }
            (P::Receiving, StandbyInput::Peer(PeerMessage::ShipEnd { sessions, .. })) => {
                self.expected = Some(sessions);
                self.check_all_received(now);
            }
            (P::Restoring, StandbyInput::Restored { restored, failed }) => {
                self.restored = restored;
                self.failed = failed;
                self.times.restore_micros =
                    Some(self.step(now, P::TakingOver, Some(self.cfg.restore_timeout)));
                self.out.push_back(StandbyOutput::TakeOver);
            }
            (P::TakingOver, StandbyInput::TookOver) => {
                self.took_over = true;
                if self.active_closed {
                    self.serve(now);
                } else {
                    self.deadline = Some(now + self.cfg.close_wait);
                }
            }
            (P::Holding | P::Restoring | P::TakingOver, StandbyInput::Peer(PeerMessage::Closed { .. })) => {
                self.active_closed = true;
                if self.phase == P::TakingOver && self.took_over {
                    self.serve(now);
                }
            }
            // With the VIP here, nothing can be undone: serve what was restored.
            (P::Restoring | P::TakingOver, StandbyInput::Failed(detail)) => {
                self.abort = Some(AbortReason::Sessions { detail });
            }
            (P::Restoring | P::TakingOver, _) => {}
            // Holding: only the VIP, or the active's word once it has the VIP back, decide.
            (P::Holding, StandbyInput::Peer(PeerMessage::Abort { reason, .. })) => {
                self.abort(now, AbortReason::Peer { detail: reason }, false);
            }
            (P::Holding, _) => {}
            (_, StandbyInput::Peer(PeerMessage::Abort { reason, .. })) => {
                self.abort(now, AbortReason::Peer { detail: reason }, false);
            }
            (_, StandbyInput::PeerLost) => self.abort(now, AbortReason::PeerLost, false),
            (_, StandbyInput::Failed(detail)) => self.abort(now, AbortReason::Sessions { detail }, true),
            _ => {}
        }
    }

    fn check_all_received(&mut self, now: Instant) {
        let Some(expected) = self.expected else { return };
        if self.received < expected {
            return;
        }
        if self.received > expected {
            let reason = AbortReason::CountMismatch { sent: expected, held: self.received };
            return self.abort(now, reason, true);
        }
        // No deadline while holding: the VIP may still come (module docs); the
        // active tells us once it has the VIP back.
        self.times.ship_micros = Some(self.step(now, StandbyPhase::Holding, None));
        let holding = PeerMessage::Holding { switch_id: self.switch_id, sessions: self.received };
        self.out.push_back(StandbyOutput::ToPeer(holding));
        if self.vip_here {
            self.restore(now);
        }
    }

    /// Unlock and serve: the takeover time includes the wait for the active's word.
    fn serve(&mut self, now: Instant) {
        self.times.takeover_micros = Some(self.step(now, StandbyPhase::Serving, None));
        self.out.push_back(StandbyOutput::Serve);
        let serving =
            PeerMessage::Serving { switch_id: self.switch_id, restored: self.restored, failed: self.failed };
        self.out.push_back(StandbyOutput::ToPeer(serving));
        self.finish(now);
    }

    fn restore(&mut self, now: Instant) {
        self.times.vip_micros = Some(self.step(now, StandbyPhase::Restoring, Some(self.cfg.restore_timeout)));
        let taken = PeerMessage::VipTaken { switch_id: self.switch_id };
        self.out.push_back(StandbyOutput::ToPeer(taken));
        self.out.push_back(StandbyOutput::Restore);
    }

    /// Fires the deadline if it has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.deadline else { return };
        if now < at {
            return;
        }
        match self.phase {
            // Taken over, the active's word did not come: serve without it.
            StandbyPhase::TakingOver if self.took_over => self.serve(now),
            // The VIP is here: restore failing to report must not keep the banks locked forever.
            StandbyPhase::Restoring | StandbyPhase::TakingOver => {
                self.abort = Some(AbortReason::Timeout { phase: format!("{:?}", self.phase).to_lowercase() });
                self.step(now, StandbyPhase::Serving, None);
                self.out.push_back(StandbyOutput::Serve);
                self.finish(now);
            }
            phase => {
                let phase = format!("{phase:?}").to_lowercase();
                self.abort(now, AbortReason::Timeout { phase }, true);
            }
        }
    }

    fn abort(&mut self, now: Instant, reason: AbortReason, tell_peer: bool) {
        if tell_peer {
            let msg = PeerMessage::Abort { switch_id: self.switch_id, reason: reason.to_string() };
            self.out.push_back(StandbyOutput::ToPeer(msg));
        }
        self.abort = Some(reason);
        self.step(now, StandbyPhase::Aborted, None);
        self.out.push_back(StandbyOutput::Discard);
        self.finish(now);
    }

    fn finish(&mut self, now: Instant) {
        self.deadline = None;
        self.times.total_micros = micros(now.saturating_duration_since(self.started));
        let outcome = ApplianceOutcome {
            switch_id: self.switch_id,
            committed: self.phase == StandbyPhase::Serving,
            aborted: self.abort.clone(),
            sessions: if self.phase == StandbyPhase::Serving { self.restored } else { self.received },
            times: self.times.clone(),
        };
        self.out.push_back(StandbyOutput::Finished(outcome));
    }
}
