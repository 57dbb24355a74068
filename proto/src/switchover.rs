//! The FO switchover of one bank, as a sans-IO state machine: moves a bank from
//! its old node (source) to a new node (target) without touching the bank's TCP
//! sessions, following the sequence of `docs/fo-link-protocol.md` ("Switchover").
//!
//! ```text
//! [Draining] → SyncBegin → Transferring → Deactivating → Activating → Committed
//!        \__________\____________\_____________\______________→ RollingBack → RolledBack
//! ```
//!
//! The bank's new requests are held from the start ([`Output::Hold`]) until the end
//! ([`Output::Release`], to the new node on success, to the old one after a
//! rollback). In drain mode the machine first waits for the old node's requests in
//! flight to reach zero ([`Input::Inflight`]), up to the drain deadline, then hands
//! over whatever is left as in force mode. Any NACK, any reply not received within
//! the command timeout, a lost link, or a `SYNC_END` whose count does not match the
//! contexts relayed aborts and rolls back: the new node is deactivated, the old one
//! reactivated, held traffic goes back to it, nothing is lost.
//!
//! Inputs take `now`; outputs are drained with [`Switchover::poll_output`]; the
//! next deadline is [`Switchover::poll_timeout`]. The driver in `mups` does the I/O
//! (and the holding and releasing, through the router).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fo_link::{Activate, Context, Deactivate, FoMessage, NackReason, SyncBegin, SyncEnd, SyncRole};
use crate::router::NodeId;

/// How to cut over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Wait (up to the drain deadline) for the old node's requests in flight to
    /// reach zero, then cut.
    Drain,
    /// Cut now; requests in flight are handed over as contexts.
    Force,
}

/// Timing of a switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Longest wait for any node's reply to a command (and for the old node's
    /// contexts and `SYNC_END`).
    pub command_timeout: Duration,
    /// Longest wait for the old node's requests in flight to reach zero (drain mode).
    pub drain_timeout: Duration,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self { command_timeout: Duration::from_millis(500), drain_timeout: Duration::from_secs(10) }
    }
}

/// What to switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPlan {
    /// Unique per switchover; carried by every command.
    pub switch_id: u64,
    /// The bank.
    pub bank_id: String,
    /// The node the bank is on.
    pub from: NodeId,
    /// The node it moves to.
    pub to: NodeId,
    /// Drain or force.
    pub mode: Mode,
}

/// Where the switchover is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the old node's requests in flight to reach zero.
    Draining,
    /// `SYNC_BEGIN` sent to both nodes; waiting for both ACKs.
    SyncBegin,
    /// Relaying the old node's contexts; waiting for `SYNC_END` and every relay ACK.
    Transferring,
    /// `DEACTIVATE` sent to the old node.
    Deactivating,
    /// `ACTIVATE` sent to the new node.
    Activating,
    /// Done: the bank is on the new node.
    Committed,
    /// Aborted: undoing (`DEACTIVATE` new, `ACTIVATE` old).
    RollingBack,
    /// Done: the bank is back on the old node.
    RolledBack,
}

/// Why a switchover was aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AbortReason {
    /// A node refused a command.
    Nack {
        /// Which node.
        node: NodeId,
        /// The phase it refused in.
        phase: Phase,
        /// Its reason code.
        code: u16,
        /// Its words.
        detail: String,
    },
    /// A node did not answer in time.
    Timeout {
        /// The phase that timed out.
        phase: Phase,
    },
    /// A node's link went down.
    LinkDown {
        /// Which node.
        node: NodeId,
    },
    /// The old node's `SYNC_END` count differs from the contexts relayed.
    ContextCount {
        /// What `SYNC_END` said.
        announced: u32,
        /// What was relayed.
        relayed: u32,
    },
    /// The operator (or a newer switchover) cancelled it.
    Cancelled,
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nack { node, phase, code, detail } => {
                write!(f, "node {} refused in {phase:?} (code {code}): {detail}", node.0)
            }
            Self::Timeout { phase } => write!(f, "no answer in time in {phase:?}"),
            Self::LinkDown { node } => write!(f, "link to node {} lost", node.0),
            Self::ContextCount { announced, relayed } => {
                write!(f, "SYNC_END announced {announced} contexts, {relayed} relayed")
            }
            Self::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `true`: the bank is on the new node.
    pub switched: bool,
    /// Why it was rolled back, if it was.
    pub aborted: Option<AbortReason>,
    /// Whether the rollback was confirmed by both nodes (`None` if no rollback).
    pub rollback_confirmed: Option<bool>,
    /// Contexts handed over (and acknowledged by the new node).
    pub contexts: u32,
    /// In drain mode: whether the drain deadline passed with requests still in flight.
    pub drain_deadline_reached: bool,
    /// From `Hold` to `Release`.
    pub hold: Duration,
    /// From start to end.
    pub total: Duration,
}

/// What happened, for the machine.
#[derive(Debug, Clone)]
pub enum Input {
    /// A node acknowledged a command.
    Ack {
        /// The node.
        node: NodeId,
        /// The command.
        cmd_id: u64,
    },
    /// A node refused a command.
    Nack {
        /// The node.
        node: NodeId,
        /// The command.
        cmd_id: u64,
        /// Why.
        reason: NackReason,
        /// Its words.
        detail: String,
    },
    /// The old node sent a context.
    Context(NodeId, Context),
    /// The old node finished sending contexts.
    SyncEnd(NodeId, SyncEnd),
    /// Requests of the bank in flight on the old node (drain mode), as the router counts them.
    Inflight(u64),
    /// A node's link went down.
    LinkDown(NodeId),
    /// Stop: roll back if not yet committed.
    Cancel,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a message to a node.
    Send {
        /// The node.
        node: NodeId,
        /// The message.
        message: FoMessage,
    },
    /// Hold the bank's new requests (queue them, in order).
    Hold,
    /// Route the bank to `to` and release the held requests to it, in order.
    Release {
        /// The node the bank is on from now.
        to: NodeId,
    },
    /// The switchover is over.
    Finished(Outcome),
}

/// One bank's switchover. See the module documentation.
#[derive(Debug)]
pub struct Switchover {
    plan: SwitchPlan,
    cfg: SwitchConfig,
    phase: Phase,
    started: Instant,
    held_since: Option<Instant>,
    deadline: Option<Instant>,
    next_cmd: u64,
    /// Commands sent and not yet answered, with the node they went to.
    awaiting: BTreeMap<u64, NodeId>,
    sync_begin_source: Option<u64>,
    sync_end: Option<SyncEnd>,
    relayed: u32,
    drain_deadline_reached: bool,
    aborted: Option<AbortReason>,
    rollback_ok: bool,
    outputs: VecDeque<Output>,
}

impl Switchover {
    /// Starts a switchover: holds the bank's traffic and begins (draining or syncing).
    pub fn start(plan: SwitchPlan, cfg: SwitchConfig, now: Instant) -> Self {
        let mut s = Self {
            // Command ids of this switchover: its id in the high bits, a counter below.
            next_cmd: plan.switch_id << 20,
            plan,
            cfg,
            phase: Phase::Draining,
            started: now,
            held_since: Some(now),
            deadline: None,
            awaiting: BTreeMap::new(),
            sync_begin_source: None,
            sync_end: None,
            relayed: 0,
            drain_deadline_reached: false,
            aborted: None,
            rollback_ok: true,
            outputs: VecDeque::new(),
        };
        s.outputs.push_back(Output::Hold);
        match s.plan.mode {
            Mode::Drain => s.deadline = Some(now + cfg.drain_timeout),
            Mode::Force => s.sync_begin(now),
        }
        s
    }

    /// The plan.
    pub fn plan(&self) -> &SwitchPlan {
        &self.plan
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether it has finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Committed | Phase::RolledBack)
    }

    /// The next deadline, if any: call [`Switchover::handle_timeout`] then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Feeds what happened.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.is_finished() {
            return;
        }
        match input {
            Input::Inflight(n) => {
                if self.phase == Phase::Draining && n == 0 {
                    self.sync_begin(now);
                }
            }
            Input::Ack { node, cmd_id } => {
                if self.awaiting.get(&cmd_id) != Some(&node) {
                    return; // Not ours, or already answered: ignore.
                }
                self.awaiting.remove(&cmd_id);
                self.advance(now);
            }
            Input::Nack { node, cmd_id, reason, detail } => {
                if self.awaiting.get(&cmd_id) != Some(&node) {
                    return;
                }
                self.awaiting.remove(&cmd_id);
                if self.phase == Phase::RollingBack {
                    self.rollback_ok = false;
                    self.advance(now);
                } else {
                    let phase = self.phase;
                    self.abort(now, AbortReason::Nack { node, phase, code: reason.code(), detail });
                }
            }
            Input::Context(node, ctx) => {
                let in_sync = matches!(self.phase, Phase::SyncBegin | Phase::Transferring);
                if node != self.plan.from || !in_sync || ctx.bank_id != self.plan.bank_id {
                    return;
                }
                // Relay with our own command id: the new node acknowledges that id.
                let cmd_id = self.command(self.plan.to);
                self.relayed += 1;
                let relay = Context { cmd_id, switch_id: self.plan.switch_id, ..ctx };
                self.outputs.push_back(Output::Send { node: self.plan.to, message: relay.into() });
                self.deadline = Some(now + self.cfg.command_timeout);
            }
            Input::SyncEnd(node, end) => {
                let in_sync = matches!(self.phase, Phase::SyncBegin | Phase::Transferring);
                if node != self.plan.from || !in_sync || end.bank_id != self.plan.bank_id {
                    return;
                }
                if end.context_count != self.relayed {
                    let reason =
                        AbortReason::ContextCount { announced: end.context_count, relayed: self.relayed };
                    self.sync_end = Some(end);
                    return self.abort(now, reason);
                }
                self.sync_end = Some(end);
                self.advance(now);
            }
            Input::LinkDown(node) => {
                if node != self.plan.from && node != self.plan.to {
                    return;
                }
                if self.phase == Phase::RollingBack {
                    // A rollback command to a dead node will not be answered.
                    self.rollback_ok = false;
                    self.awaiting.retain(|_, n| *n != node);
                    self.advance(now);
                } else {
                    self.abort(now, AbortReason::LinkDown { node });
                }
            }
            Input::Cancel => {
                if self.phase != Phase::RollingBack {
                    self.abort(now, AbortReason::Cancelled);
                }
            }
        }
    }

    /// Fires the deadline if it has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else { return };
        if now < deadline || self.is_finished() {
            return;
        }
        match self.phase {
            Phase::Draining => {
                // Drain deadline: hand over what is left, as in force mode.
                self.drain_deadline_reached = true;
                self.sync_begin(now);
            }
            Phase::RollingBack => {
                self.rollback_ok = false;
                self.awaiting.clear();
                self.advance(now);
            }
            phase => self.abort(now, AbortReason::Timeout { phase }),
        }
    }

    fn command(&mut self, node: NodeId) -> u64 {
        self.next_cmd += 1;
        self.awaiting.insert(self.next_cmd, node);
        self.next_cmd
    }

    fn send(&mut self, node: NodeId, message: FoMessage) {
        self.outputs.push_back(Output::Send { node, message });
    }

    fn sync_begin(&mut self, now: Instant) {
        self.phase = Phase::SyncBegin;
        let (bank_id, switch_id) = (self.plan.bank_id.clone(), self.plan.switch_id);
        let source = self.command(self.plan.from);
        self.sync_begin_source = Some(source);
        let msg = SyncBegin { cmd_id: source, bank_id: bank_id.clone(), switch_id, role: SyncRole::Source };
        self.send(self.plan.from, msg.into());
        let target = self.command(self.plan.to);
        let msg = SyncBegin { cmd_id: target, bank_id, switch_id, role: SyncRole::Target };
        self.send(self.plan.to, msg.into());
        self.deadline = Some(now + self.cfg.command_timeout);
    }

    /// Moves on when nothing is awaited any more in the current phase.
    fn advance(&mut self, now: Instant) {
        if !self.awaiting.is_empty() {
            return;
        }
        let (bank_id, switch_id) = (self.plan.bank_id.clone(), self.plan.switch_id);
        match self.phase {
            Phase::SyncBegin | Phase::Transferring => {
                if self.sync_end.is_none() {
                    // Both SYNC_BEGINs (and any relayed contexts) acknowledged; the old
                    // node's contexts and SYNC_END are still to come.
                    self.phase = Phase::Transferring;
                    self.deadline = Some(now + self.cfg.command_timeout);
                    return;
                }
                self.phase = Phase::Deactivating;
                let cmd_id = self.command(self.plan.from);
                self.send(self.plan.from, Deactivate { cmd_id, bank_id, switch_id }.into());
                self.deadline = Some(now + self.cfg.command_timeout);
            }
            Phase::Deactivating => {
                self.phase = Phase::Activating;
                let cmd_id = self.command(self.plan.to);
                let params = self.sync_end.as_ref().map(|e| e.params.clone()).unwrap_or_default();
                self.send(self.plan.to, Activate { cmd_id, bank_id, switch_id, params }.into());
                self.deadline = Some(now + self.cfg.command_timeout);
            }
            Phase::Activating => {
                self.phase = Phase::Committed;
                self.finish(now, self.plan.to, None);
            }
            Phase::RollingBack => {
                self.phase = Phase::RolledBack;
                let reason = self.aborted.clone();
                let confirmed = Some(self.rollback_ok);
                self.finish(now, self.plan.from, reason.map(|r| (r, confirmed)));
            }
            Phase::Draining | Phase::Committed | Phase::RolledBack => {}
        }
    }

    fn abort(&mut self, now: Instant, reason: AbortReason) {
        self.aborted = Some(reason);
        self.phase = Phase::RollingBack;
        self.awaiting.clear();
        let (bank_id, switch_id) = (self.plan.bank_id.clone(), self.plan.switch_id);
        let cmd_id = self.command(self.plan.to);
        self.send(self.plan.to, Deactivate { cmd_id, bank_id: bank_id.clone(), switch_id }.into());
        let cmd_id = self.command(self.plan.from);
        let params = self.sync_end.as_ref().map(|e| e.params.clone()).unwrap_or_default();
        self.send(self.plan.from, Activate { cmd_id, bank_id, switch_id, params }.into());
        self.deadline = Some(now + self.cfg.command_timeout);
    }

    fn finish(&mut self, now: Instant, to: NodeId, aborted: Option<(AbortReason, Option<bool>)>) {
        self.deadline = None;
        let hold = self.held_since.take().map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.outputs.push_back(Output::Release { to });
        let (aborted, rollback_confirmed) = match aborted {
            Some((reason, confirmed)) => (Some(reason), confirmed),
            None => (None, None),
        };
        self.outputs.push_back(Output::Finished(Outcome {
            switched: aborted.is_none(),
            aborted,
            rollback_confirmed,
            contexts: self.relayed,
            drain_deadline_reached: self.drain_deadline_reached,
            hold,
            total: now.saturating_duration_since(self.started),
        }));
    }
}
