//! FO switchover jobs: what operators ask for (one bank, several, all; to a node;
//! drain or force) and what became of each bank. Each bank's switchover is a
//! `proto::switchover::Switchover` driven by the router driver; this module keeps
//! the jobs and turns node messages into the machine's inputs.

use std::collections::BTreeMap;
use std::time::SystemTime;

use proto::fo_link::FoMessage;
use proto::router::NodeId;
use proto::switchover::{Input as SwitchInput, Mode, Outcome, Phase};
use serde::{Deserialize, Serialize};

/// Which banks a request names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BankSelection {
    /// `"all"`.
    All(AllBanks),
    /// Bank ids.
    Some(Vec<String>),
}

/// The word `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllBanks {
    /// Every bank.
    All,
}

/// A switch request, as the API takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// The banks.
    pub banks: BankSelection,
    /// Only banks currently on this node (bulk).
    #[serde(default)]
    pub from: Option<String>,
    /// The node to move them to.
    pub to: String,
    /// Drain or force.
    pub mode: Mode,
    /// Why (audit).
    pub reason: String,
}

/// One bank's part of a job.
#[derive(Debug, Clone, Serialize)]
pub struct BankResult {
    /// The node it was on.
    pub from: String,
    /// The node it was to move to.
    pub to: String,
    /// Where its switchover is, or `"skipped"`.
    pub phase: String,
    /// Why it was skipped, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Most messages held at once.
    pub held_max: usize,
    /// How it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeView>,
}

/// A finished switchover, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeView {
    /// The bank is on the new node.
    pub switched: bool,
    /// Why it was rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// Whether both nodes confirmed the rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_confirmed: Option<bool>,
    /// Contexts handed over.
    pub contexts: u32,
    /// Drain deadline reached.
    pub drain_deadline_reached: bool,
    /// Traffic held, microseconds.
    pub hold_micros: u64,
    /// Whole switchover, microseconds.
    pub total_micros: u64,
}

impl From<&Outcome> for OutcomeView {
    fn from(o: &Outcome) -> Self {
        Self {
            switched: o.switched,
            aborted: o.aborted.as_ref().map(ToString::to_string),
            rollback_confirmed: o.rollback_confirmed,
            contexts: o.contexts,
            drain_deadline_reached: o.drain_deadline_reached,
            hold_micros: o.hold.as_micros() as u64,
            total_micros: o.total.as_micros() as u64,
        }
    }
}

/// A switch job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Job id.
    pub id: u64,
    /// Why.
    pub reason: String,
    /// Drain or force.
    pub mode: Mode,
    /// When it was asked for, Unix milliseconds.
    pub created_unix_ms: u64,
    /// `running` or `done`.
    pub state: &'static str,
    /// Who asked: `operator`, or `automatic` (failover, failback).
    pub origin: &'static str,
    /// Counts over the banks, and hold times.
    pub summary: JobSummary,
    /// Per bank.
    pub banks: BTreeMap<String, BankResult>,
}

/// A job at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// Banks named.
    pub banks: usize,
    /// Still switching.
    pub running: usize,
    /// Now on the new node.
    pub switched: usize,
    /// Rolled back: still on the old node.
    pub rolled_back: usize,
    /// Not switched, with a reason (already there, already switching, …).
    pub skipped: usize,
    /// Messages held, summed over the banks (each bank's most at once).
    pub held_messages: usize,
    /// Median hold time of the finished banks, microseconds.
    pub hold_p50_micros: u64,
    /// Longest hold time, microseconds.
    pub hold_max_micros: u64,
}

impl Job {
    /// A new job.
    pub fn new(id: u64, reason: String, mode: Mode) -> Self {
        let created_unix_ms =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self {
            id,
            reason,
            mode,
            created_unix_ms,
            state: "running",
            origin: "operator",
            summary: JobSummary::default(),
            banks: BTreeMap::new(),
        }
    }

    /// Recomputes the summary; marks the job done when no bank is still switching.
    pub fn refresh_state(&mut self) {
        let mut s = JobSummary { banks: self.banks.len(), ..JobSummary::default() };
        let mut holds = Vec::new();
        for b in self.banks.values() {
            s.held_messages += b.held_max;
            match (&b.skipped, &b.outcome) {
                (Some(_), _) => s.skipped += 1,
                (None, None) => s.running += 1,
                (None, Some(o)) => {
                    if o.switched {
                        s.switched += 1;
                    } else {
                        s.rolled_back += 1;
                    }
                    holds.push(o.hold_micros);
                }
            }
        }
        holds.sort_unstable();
        s.hold_p50_micros = holds.get(holds.len() / 2).copied().unwrap_or(0);
        s.hold_max_micros = holds.last().copied().unwrap_or(0);
        self.state = if s.running > 0 { "running" } else { "done" };
        self.summary = s;
    }
}

/// What the event stream (`GET /api/v1/events`, server-sent events) carries: job
/// progress for the console, and route and node changes whatever caused them.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApiEvent {
    /// A job was accepted.
    JobStarted {
        /// Job id.
        job: u64,
        /// Why.
        reason: String,
        /// `operator` or `automatic`.
        origin: &'static str,
        /// Banks named.
        banks: usize,
    },
    /// A bank of a job moved to another phase or finished.
    JobBank {
        /// Job id.
        job: u64,
        /// Bank id.
        bank: String,
        /// Its phase (see [`phase_name`]), `skipped`, or `committed`/`rolled_back`.
        phase: String,
        /// How it ended, once it has.
        #[serde(skip_serializing_if = "Option::is_none")]
        outcome: Option<OutcomeView>,
    },
    /// Every bank of a job has finished.
    JobDone {
        /// Job id.
        job: u64,
        /// The counts.
        summary: JobSummary,
    },
    /// A bank's route, intent or maintenance flag changed.
    Route {
        /// Bank id.
        bank: String,
        /// The node it is routed to.
        active: String,
        /// The node the operator chose.
        intent: String,
        /// Automatic moves leave it alone.
        maintenance: bool,
    },
    /// A node went up or down, or its maintenance flag changed.
    Node {
        /// Node id.
        node: String,
        /// Link up.
        up: bool,
        /// Went down too often lately (no failback to it).
        flapping: bool,
        /// No bank is moved to it.
        maintenance: bool,
    },
    /// Live numbers, every second (the console's table without polling).
    Stats {
        /// Per bank.
        banks: Vec<BankStats>,
        /// Per FO node.
        nodes: Vec<NodeStats>,
        /// Bank switchovers under way.
        switches_running: usize,
    },
}

/// One bank's live numbers in [`ApiEvent::Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct BankStats {
    /// Bank id.
    pub id: String,
    /// Messages per second both ways, last 10 s.
    pub rate_per_s: f64,
    /// Bank requests in flight.
    pub inflight: u64,
    /// Sessions whose TCP connection is up.
    pub sessions_up: usize,
    /// Of those, signed on at the application level.
    pub signed_on: usize,
    /// Of those, with failing echo tests.
    pub echo_failing: usize,
    /// Seconds since the last message on any session.
    pub idle_secs: Option<f64>,
    /// Seconds since the last good echo on any session.
    pub since_echo_secs: Option<f64>,
}

/// One node's live numbers in [`ApiEvent::Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    /// Node id.
    pub id: String,
    /// Link up.
    pub up: bool,
    /// Last heartbeat round trip, microseconds.
    pub rtt_micros: Option<u64>,
}

impl ApiEvent {
    /// The job the event belongs to, if any (for `?job=` filtering).
    pub fn job(&self) -> Option<u64> {
        match self {
            Self::JobStarted { job, .. } | Self::JobBank { job, .. } | Self::JobDone { job, .. } => {
                Some(*job)
            }
            _ => None,
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::JobStarted { .. } => "job_started",
            Self::JobBank { .. } => "job_bank",
            Self::JobDone { .. } => "job_done",
            Self::Route { .. } => "route",
            Self::Node { .. } => "node",
            Self::Stats { .. } => "stats",
        }
    }
}

/// The name of a phase, for the API.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Draining => "draining",
        Phase::SyncBegin => "sync_begin",
        Phase::Transferring => "transferring",
        Phase::Deactivating => "deactivating",
        Phase::Activating => "activating",
        Phase::Committed => "committed",
        Phase::RollingBack => "rolling_back",
        Phase::RolledBack => "rolled_back",
    }
}

/// A node's switchover message as the machine's input, with the bank it concerns.
pub fn node_input(node: NodeId, msg: FoMessage) -> Option<(String, SwitchInput)> {
    match msg {
        FoMessage::Ack(a) => Some((a.bank_id, SwitchInput::Ack { node, cmd_id: a.cmd_id })),
        FoMessage::Nack(n) => Some((
            n.bank_id,
            SwitchInput::Nack { node, cmd_id: n.cmd_id, reason: n.reason, detail: n.detail },
        )),
        FoMessage::Context(c) => Some((c.bank_id.clone(), SwitchInput::Context(node, c))),
        FoMessage::SyncEnd(e) => Some((e.bank_id.clone(), SwitchInput::SyncEnd(node, e))),
        _ => None,
    }
}
