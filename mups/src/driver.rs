//! The router driver: one task that owns `proto::router::Router`, feeds it what
//! the links receive and the timer, and carries out its actions. It does nothing
//! else (quinn's `ConnectionDriver` shape): every routing decision is in `proto`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use proto::fo_link::{
    CloseSession, Data, DataFlags, Direction, FoMessage, InventoryEnd, SessionDown, SessionDownReason,
    SessionUp,
};
use proto::node_health::{FlapPolicy, NodeHealth};
use proto::router::{Action, BankIdx, Event, NodeId, Router, SessionView, Side, app_state_name};
use proto::switchover::{
    Input as SwitchInput, Output as SwitchOutput, Phase, SwitchConfig, SwitchPlan, Switchover,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::local_link::ToPups;
use crate::metrics::{
    BankLabels, BankNodeLabels, BankSideLabels, MessageLabels, Metrics, NodeLabels, ResponseLabels,
    SessionStateLabels, SwitchoverLabels,
};
use crate::persist::{BankRoute, FORMAT_VERSION, NodeAdmin, RouteState};
use crate::switching::{
    ApiEvent, BankResult, BankSelection, BankStats, Job, NodeStats, OutcomeView, SwitchRequest, node_input,
    phase_name,
};

/// What the links and the API tell the router.
#[derive(Debug)]
pub enum Input {
    /// A node's link came up.
    NodeUp(NodeId),
    /// A node's link went down.
    NodeDown(NodeId),
    /// DATA from a node.
    NodeData(NodeId, Data),
    /// A switchover message from a node (ACK, NACK, CONTEXT, SYNC_END).
    NodeControl(NodeId, FoMessage),
    /// A heartbeat round trip.
    NodeRtt(NodeId, Duration),
    /// The local link to `pups` is attached; an inventory follows.
    PupsAttached,
    /// The local link is lost (sessions stay open in `pups`).
    PupsDetached,
    /// A bank session, new or in an inventory.
    SessionUp(SessionUp),
    /// A bank session ended.
    SessionDown(SessionDown),
    /// The inventory after an attach is complete.
    InventoryEnd(InventoryEnd),
    /// A bank message (DATA from `pups`).
    BankData(Data),
    /// The API asks for the current state.
    Snapshot(oneshot::Sender<Snapshot>),
    /// The API asks for a switchover job; the reply is its id, or why not.
    Switch(SwitchRequest, oneshot::Sender<Result<u64, String>>),
    /// The API asks for a job.
    Job(u64, oneshot::Sender<Option<Job>>),
    /// The API asks for the most recent jobs, newest first.
    Jobs(usize, oneshot::Sender<Vec<Job>>),
    /// The API sets or clears a maintenance flag; the reply is the target's new version, or why not.
    Maintenance(MaintenanceRequest, oneshot::Sender<Result<u64, MaintenanceError>>),
    /// This appliance became active (it holds the VIP) or standby.
    Role(bool),
    /// Bank requests in flight, all banks (quiescing for an appliance switchover).
    InflightTotal(oneshot::Sender<u64>),
    /// The in-flight tables, for the twin.
    ExportInflight(oneshot::Sender<proto::router::InflightTables>),
    /// The twin's in-flight tables, taken over; the reply is how many entries were skipped.
    ImportInflight(Box<proto::router::InflightTables>, oneshot::Sender<usize>),
    /// The active twin's routes, intent and maintenance flags (replication).
    ApplyRoutes(RouteState),
    /// From now on, nodes' DATA goes to this channel instead of the router (the
    /// sessions are frozen for the twin; `None` ends it). The reply comes once
    /// everything routed before it has been handed to `pups`.
    Divert(Option<mpsc::UnboundedSender<(NodeId, Data)>>, oneshot::Sender<()>),
}

/// A maintenance flag to set or clear.
#[derive(Debug, Clone)]
pub struct MaintenanceRequest {
    /// A bank (automatic moves leave it alone) or a node (no bank is moved to it).
    pub target: MaintenanceTarget,
    /// Set or clear.
    pub on: bool,
    /// Why (logged).
    pub reason: String,
    /// The target's version the caller last saw: a different current version refuses the
    /// change (optimistic concurrency, so two operators cannot silently undo each other).
    /// `None` skips the check (internal callers that own the decision).
    pub version: Option<u64>,
}

/// Why a maintenance change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaintenanceError {
    /// No such bank or node.
    #[error("no {kind} {id:?}")]
    NotFound {
        /// `bank` or `FO node`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The caller's version is stale.
    #[error("version {given} is stale: the current version is {current} (re-read and retry)")]
    Conflict {
        /// Version the caller sent.
        given: u64,
        /// Version now.
        current: u64,
    },
}

/// What a maintenance flag is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceTarget {
    /// A bank id.
    Bank(String),
    /// A node id.
    Node(String),
}

/// What the driver needs besides the router.
pub struct DriverConfig {
    /// Switchover timeouts.
    pub switch: SwitchConfig,
    /// Move a dead node's banks to their reserve.
    pub auto_failover: bool,
    /// Move banks back to their admin intent once its node is stable.
    pub auto_failback: bool,
    /// Flap detection and failback stability.
    pub flap: FlapPolicy,
    /// Bank display names, by bank index.
    pub bank_names: Vec<String>,
    /// State kept from the last run: applied to the router at start.
    pub restored: Option<RouteState>,
    /// Where route, intent and maintenance changes are published (the routes file
    /// writer and the replication to the twin listen).
    pub routes: watch::Sender<RouteState>,
    /// Whether this appliance starts active (no twin: always).
    pub active: bool,
    /// The API's event stream.
    pub events: broadcast::Sender<ApiEvent>,
}

/// The state the API and console show.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Whether `pups` is attached.
    pub pups_attached: bool,
    /// FO nodes.
    pub nodes: Vec<NodeView>,
    /// Banks.
    pub banks: Vec<BankView>,
}

/// One FO node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Link up.
    pub up: bool,
    /// Last heartbeat round trip, microseconds.
    pub rtt_micros: Option<u64>,
    /// Seconds the link has been up, if it is.
    pub up_for_secs: Option<f64>,
    /// Down events within the flap window.
    pub recent_down_events: usize,
    /// Down events since `mups` started.
    pub down_events: u64,
    /// Went down too often lately: no automatic failback to it.
    pub flapping: bool,
    /// No bank is moved to it.
    pub maintenance: bool,
    /// Banks routed to it.
    pub banks_active: usize,
    /// Bumped by every admin change (maintenance): the `version` a change must carry.
    pub version: u64,
}

/// One bank.
#[derive(Debug, Clone, Serialize)]
pub struct BankView {
    /// Bank id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The node it is routed to.
    pub active_node: String,
    /// The node the operator chose for it (admin intent); differs from
    /// `active_node` after an automatic failover or a rolled-back switch.
    pub intent_node: String,
    /// Automatic failover and failback leave it alone.
    pub maintenance: bool,
    /// The job switching it now, if any.
    pub switching_job: Option<u64>,
    /// Messages per second both ways, over the last 10 seconds.
    pub rate_per_s: f64,
    /// Bank requests in flight.
    pub inflight: u64,
    /// Live sessions.
    pub sessions: Vec<SessionView>,
    /// Bumped by every admin change (intent, maintenance): the `version` a maintenance
    /// change must carry.
    pub version: u64,
    /// Counters.
    pub counters: proto::router::BankCounters,
}

/// Where the driver sends things.
pub struct Outputs {
    /// To `pups`.
    pub pups: mpsc::Sender<ToPups>,
    /// To each node, by `NodeId` index.
    pub nodes: Vec<mpsc::Sender<FoMessage>>,
}

struct Driver {
    router: Router,
    out: Outputs,
    metrics: Metrics,
    pups_attached: bool,
    /// Sessions reported by `pups` since the last attach; the rest go down at INVENTORY_END.
    confirmed: HashSet<u64>,
    known: HashSet<u64>,
    rtt: Vec<Option<Duration>>,
    /// Per bank × node: messages to the node, messages to the bank, response times
    /// (hot path: handles resolved once, no label allocation per message).
    to_node: Vec<Vec<Counter>>,
    to_bank: Vec<Vec<Counter>>,
    response_seconds: Vec<Vec<Histogram>>,
    /// Responses by bank, node and response code (at most 4 characters).
    responses: HashMap<(BankIdx, NodeId, [u8; 4]), Counter>,
    /// Switchovers under way, by bank, with their job.
    switches: HashMap<BankIdx, (u64, Switchover)>,
    switch_cfg: SwitchConfig,
    auto_failover: bool,
    auto_failback: bool,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    next_switch: u64,
    bank_names: Vec<String>,
    /// Admin intent: the node the operator chose for each bank.
    intent: Vec<NodeId>,
    bank_maintenance: Vec<bool>,
    node_maintenance: Vec<bool>,
    /// Admin-change counters (optimistic concurrency), by bank and by node. Not persisted:
    /// a restart starts them again at 0, and a client holding an older number gets a
    /// conflict or, rarely, a match by chance on a state it had read anyway.
    bank_version: Vec<u64>,
    node_version: Vec<u64>,
    /// Gauge ticks, for the stats event every other tick.
    ticks: u64,
    health: Vec<NodeHealth>,
    flap: FlapPolicy,
    /// When automatic failback last tried each bank (a rolled-back attempt is not
    /// retried before `failback_after`).
    last_failback: Vec<Option<Instant>>,
    /// Messages both ways per bank, sampled at each gauge tick, for `rate_per_s`.
    rate_samples: Vec<VecDeque<(Instant, u64)>>,
    events: broadcast::Sender<ApiEvent>,
    routes: watch::Sender<RouteState>,
    /// Standby: no automatic moves, no switch jobs (the active twin decides).
    active: bool,
    /// Nodes' DATA diverted to the appliance task (see [`Input::Divert`]).
    divert: Option<mpsc::UnboundedSender<(NodeId, Data)>>,
    /// Answered once the actions of the current batch are out.
    after_drain: Vec<oneshot::Sender<()>>,
    /// Routes, intent or maintenance changed since last published.
    routes_dirty: bool,
    started: Instant,
    /// Nodes absent since start have been written off (see [`STARTUP_GRACE`]).
    absent_checked: bool,
}

/// How long after start a node that has not connected yet is given before its
/// banks are moved (nodes connect one by one at start; that is not a failure).
const STARTUP_GRACE: Duration = Duration::from_secs(3);

/// Jobs kept for `GET /api/v1/jobs` (finished ones beyond this are forgotten).
const JOBS_KEPT: usize = 1_000;

/// How far back `rate_per_s` looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Runs the router until shutdown.
pub async fn run(
    mut router: Router,
    cfg: DriverConfig,
    mut inputs: mpsc::Receiver<Input>,
    out: Outputs,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let labels = |r: &Router, dir: &'static str| -> Vec<Vec<Counter>> {
        r.banks()
            .map(|b| {
                r.nodes()
                    .map(|(_, node, _)| {
                        metrics
                            .messages
                            .get_or_create(&MessageLabels {
                                bank: r.bank_id(b).to_owned(),
                                node: node.to_owned(),
                                direction: dir,
                            })
                            .clone()
                    })
                    .collect()
            })
            .collect()
    };
    let to_node = labels(&router, "to_node");
    let to_bank = labels(&router, "to_bank");
    let response_seconds = router
        .banks()
        .map(|b| {
            router
                .nodes()
                .map(|(_, node, _)| {
                    let labels = BankNodeLabels { bank: router.bank_id(b).to_owned(), node: node.to_owned() };
                    metrics.response_seconds.get_or_create(&labels).clone()
                })
                .collect()
        })
        .collect();
    let nodes = router.nodes().count();
    let banks = router.banks().count();
    let mut intent: Vec<NodeId> = router.banks().map(|b| router.active_node(b)).collect();
    let mut bank_maintenance = vec![false; banks];
    let mut node_maintenance = vec![false; nodes];
    if let Some(state) = &cfg.restored {
        apply_restored(&mut router, state, &mut intent, &mut bank_maintenance, &mut node_maintenance);
    }
    let mut d = Driver {
        router,
        out,
        metrics,
        pups_attached: false,
        confirmed: HashSet::new(),
        known: HashSet::new(),
        rtt: vec![None; nodes],
        to_node,
        to_bank,
        response_seconds,
        responses: HashMap::new(),
        switches: HashMap::new(),
        switch_cfg: cfg.switch,
        auto_failover: cfg.auto_failover,
        auto_failback: cfg.auto_failback,
        jobs: BTreeMap::new(),
        next_job: 1,
        next_switch: 1,
        bank_names: cfg.bank_names,
        intent,
        bank_maintenance,
        node_maintenance,
        bank_version: vec![0; banks],
        node_version: vec![0; nodes],
        ticks: 0,
        health: vec![NodeHealth::new(); nodes],
        flap: cfg.flap,
        last_failback: vec![None; banks],
        rate_samples: vec![VecDeque::new(); banks],
        events: cfg.events,
        routes: cfg.routes,
        active: cfg.active,
        divert: None,
        after_drain: Vec::new(),
        routes_dirty: true,
        started: now(),
        absent_checked: false,
    };
    d.update_gauges();
    let mut gauges = tokio::time::interval(Duration::from_millis(500));
    loop {
        let deadline =
            [d.router.poll_timeout(), d.switches.values().filter_map(|(_, s)| s.poll_timeout()).min()]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                // The routes file gets the last word.
                d.publish_routes();
                return;
            }
            input = inputs.recv() => {
                let Some(input) = input else { return };
                // One clock read per batch: the batch arrived together.
                let now = now();
                // Take what is already queued before acting: fewer wake-ups under load.
                let mut next = Some(input);
                let mut taken = 0;
                while let Some(input) = next.take() {
                    // A switchover sends SYNC_BEGIN at once, while DATA routed earlier in
                    // the batch waits in the router's actions: send that DATA first, or
                    // the old node would get a request after handing its requests over.
                    if matches!(input, Input::Switch(..)) {
                        d.drain().await;
                    }
                    d.handle(now, input);
                    taken += 1;
                    if taken < 256 {
                        next = inputs.try_recv().ok();
                    }
                }
            }
            _ = sleep_until(deadline) => {
                let now = now();
                d.router.handle_timeout(now);
                let banks: Vec<BankIdx> = d.switches.keys().copied().collect();
                for bank in banks {
                    if let Some((_, sw)) = d.switches.get_mut(&bank) {
                        sw.handle_timeout(now);
                    }
                    d.pump_switch(now, bank);
                }
            }
            _ = gauges.tick() => {
                d.update_gauges();
                d.ticks += 1;
                if d.ticks % 2 == 0 {
                    d.send_stats(now());
                }
                d.write_off_absent_nodes();
                d.fail_back(now());
            }
        }
        d.feed_drains(now());
        d.drain().await;
        for done in d.after_drain.drain(..) {
            let _ = done.send(());
        }
        if d.routes_dirty {
            d.publish_routes();
        }
    }
}

/// Applies the state kept from the last run: routes and intent of banks still in
/// the configuration, to nodes still in it; maintenance flags. What no longer
/// matches the configuration is logged and ignored.
fn apply_restored(
    router: &mut Router,
    state: &RouteState,
    intent: &mut [NodeId],
    bank_maintenance: &mut [bool],
    node_maintenance: &mut [bool],
) {
    let node = |router: &Router, name: &str| router.nodes().find(|(_, n, _)| *n == name).map(|(id, _, _)| id);
    for (id, saved) in &state.banks {
        let Some(bank) = router.bank(id) else {
            warn!(bank = %id, "routes file names a bank not in the configuration: ignored");
            continue;
        };
        match (node(router, &saved.active), node(router, &saved.intent)) {
            (Some(active), Some(wanted)) => {
                if active != router.active_node(bank) {
                    info!(bank = %id, node = %saved.active, "route restored from the routes file");
                }
                router.set_active_node(bank, active);
                intent[usize::from(bank.0)] = wanted;
            }
            _ => warn!(bank = %id, active = %saved.active, intent = %saved.intent,
                       "routes file names a node not in the configuration: the configured route applies"),
        }
        bank_maintenance[usize::from(bank.0)] = saved.maintenance;
    }
    for (name, admin) in &state.nodes {
        match node(router, name) {
            Some(n) => node_maintenance[usize::from(n.0)] = admin.maintenance,
            None => warn!(node = %name, "routes file names a node not in the configuration: ignored"),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    fn handle(&mut self, now: std::time::Instant, input: Input) {
        match input {
            Input::NodeUp(node) => {
                info!(node = self.router.node_name(node), "node up");
                self.router.node_link(node, true);
                if self.health[usize::from(node.0)].link(now, true, &self.flap) {
                    self.node_event(now, node);
                }
                if self.auto_failover && self.active {
                    self.recover_stranded(node);
                }
            }
            Input::NodeDown(node) if !self.active => {
                // A standby closes its node links itself: no failure of the node.
                self.health[usize::from(node.0)].closed_by_us();
                self.router.node_link(node, false);
            }
            Input::NodeDown(node) => {
                let name = self.router.node_name(node).to_owned();
                if self.health[usize::from(node.0)].link(now, false, &self.flap) {
                    warn!(node = %name, "node down");
                    self.metrics.node_down_events.get_or_create(&NodeLabels { node: name.clone() }).inc();
                    let health = &self.health[usize::from(node.0)];
                    if health.is_flapping(now, &self.flap) {
                        warn!(node = %name, downs = health.recent_downs(now, &self.flap),
                              window_s = self.flap.window.as_secs(), "node is flapping: no automatic failback to it");
                    }
                    self.node_event(now, node);
                }
                self.router.node_link(node, false);
                let banks: Vec<BankIdx> = self.switches.keys().copied().collect();
                for bank in banks {
                    if let Some((_, sw)) = self.switches.get_mut(&bank) {
                        sw.handle(now, SwitchInput::LinkDown(node));
                    }
                    self.pump_switch(now, bank);
                }
                if self.auto_failover && self.active {
                    self.fail_over(node);
                }
            }
            Input::NodeRtt(node, rtt) => self.rtt[usize::from(node.0)] = Some(rtt),
            Input::NodeControl(node, msg) => {
                let Some((bank_id, input)) = node_input(node, msg) else { return };
                let Some(bank) = self.router.bank(&bank_id) else { return };
                match self.switches.get_mut(&bank) {
                    Some((_, sw)) => sw.handle(now, input),
                    None => {
                        debug!(bank = %bank_id, "switchover message with no switchover under way: ignored")
                    }
                }
                self.pump_switch(now, bank);
            }
            Input::Switch(req, reply) => {
                let _ = reply.send(self.start_job(now, req));
            }
            Input::Job(id, reply) => {
                let _ = reply.send(self.jobs.get(&id).cloned());
            }
            Input::Jobs(limit, reply) => {
                let _ = reply.send(self.jobs.values().rev().take(limit).cloned().collect());
            }
            Input::NodeData(node, data) => match &self.divert {
                Some(tx) => {
                    let _ = tx.send((node, data));
                }
                None => self.router.from_node(now, node, data),
            },
            Input::Divert(tx, done) => {
                self.divert = tx;
                self.after_drain.push(done);
            }
            Input::PupsAttached => {
                self.pups_attached = true;
                self.confirmed.clear();
            }
            Input::PupsDetached => self.pups_attached = false,
            Input::SessionUp(up) => match self.router.bank(&up.bank_id) {
                Some(bank) => {
                    self.confirmed.insert(up.session_id);
                    self.known.insert(up.session_id);
                    info!(bank = %up.bank_id, session = up.session_id, peer = %up.peer, "session up");
                    self.router.session_up(now, up.session_id, bank, up.peer);
                }
                None => {
                    warn!(bank = %up.bank_id, session = up.session_id, "session for a bank not in our configuration")
                }
            },
            Input::SessionDown(down) => {
                if down.reason == SessionDownReason::HandedOver {
                    // Thousands at once at a switchover, summed up by the appliance log.
                    debug!(bank = %down.bank_id, session = down.session_id, "session handed to the twin appliance");
                } else {
                    info!(bank = %down.bank_id, session = down.session_id, reason = ?down.reason,
                          detail = %down.detail, "session down");
                }
                self.known.remove(&down.session_id);
                self.router.session_down(down.session_id);
            }
            Input::InventoryEnd(end) => {
                let gone: Vec<u64> = self.known.difference(&self.confirmed).copied().collect();
                for session in gone {
                    info!(session, "session missing from pups's inventory: down");
                    self.known.remove(&session);
                    self.router.session_down(session);
                }
                info!(sessions = end.sessions, "pups inventory complete");
            }
            Input::BankData(data) => match self.router.bank(&data.bank_id) {
                Some(bank) if data.direction == Direction::ToNode => {
                    self.known.insert(data.session_id);
                    self.router.from_bank(now, bank, data.session_id, data.message);
                }
                _ => {
                    warn!(bank = %data.bank_id, session = data.session_id, "bank DATA for an unknown bank or in the wrong direction")
                }
            },
            Input::Snapshot(reply) => {
                let _ = reply.send(self.snapshot(now));
            }
            Input::Maintenance(req, reply) => {
                let _ = reply.send(self.set_maintenance(now, req));
            }
            Input::Role(active) => {
                if self.active != active {
                    info!(active, "appliance role");
                }
                self.active = active;
                if active {
                    // A fresh start of the grace for nodes that have not connected yet.
                    self.started = now;
                    self.absent_checked = false;
                }
            }
            Input::InflightTotal(reply) => {
                let _ = reply.send(self.router.banks().map(|b| self.router.inflight(b)).sum());
            }
            Input::ExportInflight(reply) => {
                let _ = reply.send(self.router.export_inflight(now));
            }
            Input::ImportInflight(tables, reply) => {
                let skipped = self.router.import_inflight(now, &tables);
                if skipped > 0 {
                    warn!(skipped, "in-flight entries from the twin name banks or nodes we do not have");
                }
                let _ = reply.send(skipped);
            }
            Input::ApplyRoutes(state) => self.apply_routes(state),
        }
    }

    /// The active twin's admin state, replicated: routes, intent, maintenance.
    fn apply_routes(&mut self, state: RouteState) {
        if self.active {
            warn!("replicated routes received while active: ignored");
            return;
        }
        let mut intent = self.intent.clone();
        let mut bank_maint = self.bank_maintenance.clone();
        let mut node_maint = self.node_maintenance.clone();
        apply_restored(&mut self.router, &state, &mut intent, &mut bank_maint, &mut node_maint);
        self.intent = intent;
        self.bank_maintenance = bank_maint;
        self.node_maintenance = node_maint;
        self.routes_dirty = true;
    }

    fn set_maintenance(&mut self, now: Instant, req: MaintenanceRequest) -> Result<u64, MaintenanceError> {
        let check = |current: u64| match req.version {
            Some(given) if given != current => Err(MaintenanceError::Conflict { given, current }),
            _ => Ok(()),
        };
        match &req.target {
            MaintenanceTarget::Bank(id) => {
                let bank = self
                    .router
                    .bank(id)
                    .ok_or_else(|| MaintenanceError::NotFound { kind: "bank", id: id.clone() })?;
                let b = usize::from(bank.0);
                check(self.bank_version[b])?;
                self.bank_maintenance[b] = req.on;
                self.bank_version[b] += 1;
                info!(bank = %id, maintenance = req.on, reason = %req.reason, "bank maintenance flag");
                self.route_changed(bank);
                Ok(self.bank_version[b])
            }
            MaintenanceTarget::Node(name) => {
                let node = self
                    .node_id(name)
                    .ok_or_else(|| MaintenanceError::NotFound { kind: "FO node", id: name.clone() })?;
                let n = usize::from(node.0);
                check(self.node_version[n])?;
                self.node_maintenance[n] = req.on;
                self.node_version[n] += 1;
                info!(node = %name, maintenance = req.on, reason = %req.reason, "node maintenance flag");
                self.routes_dirty = true;
                self.node_event(now, node);
                Ok(self.node_version[n])
            }
        }
    }

    /// The console's live numbers, pushed so that it never polls: per bank the rate,
    /// requests in flight and session counts by state, per node the link and RTT.
    fn send_stats(&self, now: Instant) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let banks = self
            .router
            .banks()
            .map(|bank| {
                let sessions = self.router.sessions(bank, now);
                let count =
                    |state: &str| sessions.iter().filter(|s| app_state_name(s.app_state) == state).count();
                BankStats {
                    id: self.router.bank_id(bank).to_owned(),
                    rate_per_s: (self.rate(bank) * 10.0).round() / 10.0,
                    inflight: self.router.inflight(bank),
                    sessions_up: sessions.len(),
                    signed_on: count("signed_on"),
                    echo_failing: count("echo_failing"),
                    idle_secs: sessions.iter().map(|s| s.idle_secs).reduce(f64::min),
                    since_echo_secs: sessions.iter().filter_map(|s| s.since_echo_secs).reduce(f64::min),
                }
            })
            .collect();
        let nodes = self
            .router
            .nodes()
            .map(|(node, name, up)| NodeStats {
                id: name.to_owned(),
                up,
                rtt_micros: self.rtt[usize::from(node.0)].map(|d| d.as_micros() as u64),
            })
            .collect();
        let _ = self.events.send(ApiEvent::Stats { banks, nodes, switches_running: self.switches.len() });
    }

    fn node_event(&self, now: Instant, node: NodeId) {
        let health = &self.health[usize::from(node.0)];
        let _ = self.events.send(ApiEvent::Node {
            node: self.router.node_name(node).to_owned(),
            up: health.is_up(),
            flapping: health.is_flapping(now, &self.flap),
            maintenance: self.node_maintenance[usize::from(node.0)],
        });
    }

    /// A bank's route, intent or maintenance flag changed: tell the event stream,
    /// and have the routes file rewritten.
    fn route_changed(&mut self, bank: BankIdx) {
        self.routes_dirty = true;
        let b = usize::from(bank.0);
        let _ = self.events.send(ApiEvent::Route {
            bank: self.router.bank_id(bank).to_owned(),
            active: self.router.node_name(self.router.active_node(bank)).to_owned(),
            intent: self.router.node_name(self.intent[b]).to_owned(),
            maintenance: self.bank_maintenance[b],
        });
    }

    fn publish_routes(&mut self) {
        self.routes_dirty = false;
        let banks = self
            .router
            .banks()
            .map(|b| {
                let i = usize::from(b.0);
                let route = BankRoute {
                    active: self.router.node_name(self.router.active_node(b)).to_owned(),
                    intent: self.router.node_name(self.intent[i]).to_owned(),
                    maintenance: self.bank_maintenance[i],
                };
                (self.router.bank_id(b).to_owned(), route)
            })
            .collect();
        let nodes = self
            .router
            .nodes()
            .map(|(n, name, _)| {
                (name.to_owned(), NodeAdmin { maintenance: self.node_maintenance[usize::from(n.0)] })
            })
            .collect();
        let state = RouteState { version: FORMAT_VERSION, banks, nodes };
        self.routes.send_if_modified(|old| {
            let changed = *old != state;
            *old = state;
            changed
        });
    }

    async fn drain(&mut self) {
        while let Some(action) = self.router.poll_action() {
            match action {
                Action::ToBank { bank, session, message } => {
                    let node = self.router.active_node(bank);
                    self.to_bank[usize::from(bank.0)][usize::from(node.0)].inc();
                    let data = Data {
                        bank_id: self.router.bank_id(bank).to_owned(),
                        session_id: session,
                        direction: Direction::ToBank,
                        correlation_id: 0,
                        flags: DataFlags::empty(),
                        message,
                    };
                    // Waits when pups is slow or detached: back-pressure reaches the nodes
                    // instead of anything being dropped.
                    let _ = self.out.pups.send(ToPups::Data(data)).await;
                }
                Action::ToNode { node, data } => {
                    if let Some(bank) = self.router.bank(&data.bank_id) {
                        self.to_node[usize::from(bank.0)][usize::from(node.0)].inc();
                    }
                    if let Err(e) = self.out.nodes[usize::from(node.0)].try_send(FoMessage::Data(data)) {
                        let name = self.router.node_name(node).to_owned();
                        self.metrics.queue_overflow.get_or_create(&NodeLabels { node: name.clone() }).inc();
                        warn!(node = %name, error = %e, "node queue full: message dropped");
                    }
                }
                Action::CloseSession { session, reason } => {
                    let _ =
                        self.out.pups.send(ToPups::Close(CloseSession { session_id: session, reason })).await;
                }
                Action::Event(event) => self.event(event),
            }
        }
    }

    /// Starts a job: one switchover per bank named (skipping, with the reason, banks
    /// already switching or already on the target node).
    fn start_job(&mut self, now: std::time::Instant, req: SwitchRequest) -> Result<u64, String> {
        let to = self.node_id(&req.to).ok_or_else(|| format!("no FO node {:?}", req.to))?;
        let from = match &req.from {
            Some(name) => Some(self.node_id(name).ok_or_else(|| format!("no FO node {name:?}"))?),
            None => None,
        };
        if req.reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        if !self.active {
            return Err("this appliance is standby: switch banks on the active one".into());
        }
        if self.node_maintenance[usize::from(to.0)] {
            return Err(format!("node {} is in maintenance: clear the flag first", req.to));
        }
        let banks: Vec<BankIdx> = match &req.banks {
            BankSelection::All(_) => self.router.banks().collect(),
            BankSelection::Some(ids) => {
                let mut out = Vec::new();
                for id in ids {
                    out.push(self.router.bank(id).ok_or_else(|| format!("no bank {id:?}"))?);
                }
                out
            }
        };
        let banks: Vec<BankIdx> =
            banks.into_iter().filter(|&b| from.is_none_or(|f| self.router.active_node(b) == f)).collect();
        if banks.is_empty() {
            return Err("no bank matches".into());
        }
        let id = self.next_job;
        self.next_job += 1;
        let mut job = Job::new(id, req.reason.clone(), req.mode);
        for bank in &banks {
            let current = self.router.active_node(*bank);
            let skipped = if self.switches.contains_key(bank) {
                Some("a switchover of this bank is already under way".to_owned())
            } else if current == to {
                Some("already on that node".to_owned())
            } else {
                None
            };
            job.banks.insert(
                self.router.bank_id(*bank).to_owned(),
                BankResult {
                    from: self.router.node_name(current).to_owned(),
                    to: req.to.clone(),
                    phase: if skipped.is_some() { "skipped" } else { "starting" }.to_owned(),
                    skipped,
                    held_max: 0,
                    outcome: None,
                },
            );
        }
        job.refresh_state();
        info!(job = id, banks = banks.len(), to = %req.to, mode = ?req.mode, reason = %req.reason, "switch job");
        self.job_started(&job);
        self.job_done(&job);
        self.store_job(job);
        for &bank in &banks {
            // The operator's choice is the bank's admin intent, whatever becomes of the switch.
            if self.intent[usize::from(bank.0)] != to {
                self.intent[usize::from(bank.0)] = to;
                self.bank_version[usize::from(bank.0)] += 1;
                self.route_changed(bank);
            }
        }
        self.launch(now, id, &banks, to, req.mode);
        Ok(id)
    }

    fn job_started(&self, job: &Job) {
        let _ = self.events.send(ApiEvent::JobStarted {
            job: job.id,
            reason: job.reason.clone(),
            origin: job.origin,
            banks: job.banks.len(),
        });
        for (bank, r) in job.banks.iter().filter(|(_, r)| r.skipped.is_some()) {
            let _ = self.events.send(ApiEvent::JobBank {
                job: job.id,
                bank: bank.clone(),
                phase: r.phase.clone(),
                outcome: None,
            });
        }
    }

    /// Keeps a job; beyond [`JOBS_KEPT`], the oldest finished ones are forgotten.
    fn store_job(&mut self, job: Job) {
        self.jobs.insert(job.id, job);
        while self.jobs.len() > JOBS_KEPT {
            let Some(oldest) = self.jobs.iter().find(|(_, j)| j.state == "done").map(|(id, _)| *id) else {
                break;
            };
            self.jobs.remove(&oldest);
        }
    }

    fn job_done(&self, job: &Job) {
        if job.state == "done" {
            let _ = self.events.send(ApiEvent::JobDone { job: job.id, summary: job.summary.clone() });
        }
    }

    /// Starts one switchover per bank (banks already switching or already on `to` are skipped).
    fn launch(
        &mut self,
        now: Instant,
        id: u64,
        banks: &[BankIdx],
        to: NodeId,
        mode: proto::switchover::Mode,
    ) {
        for &bank in banks {
            let current = self.router.active_node(bank);
            if self.switches.contains_key(&bank) || current == to {
                continue;
            }
            let plan = SwitchPlan {
                switch_id: self.next_switch,
                bank_id: self.router.bank_id(bank).to_owned(),
                from: current,
                to,
                mode,
            };
            self.next_switch += 1;
            self.switches.insert(bank, (id, Switchover::start(plan, self.switch_cfg, now)));
            self.pump_switch(now, bank);
        }
    }

    /// A node is down: every bank active on it moves at once to its reserve, if the
    /// reserve is up and not in maintenance (no sync is possible with a dead node).
    /// Requests in flight on the dead node follow the bank's node-loss policy (the
    /// router already declined them, or they time out at the bank); late answers,
    /// should the node come back, are delivered once. Banks in maintenance stay.
    /// The admin intent is unchanged, so a failback (if enabled) knows where to go.
    fn fail_over(&mut self, dead: NodeId) {
        let dead_name = self.router.node_name(dead).to_owned();
        let moves: Vec<(BankIdx, Result<NodeId, String>)> = self
            .router
            .banks()
            .filter(|&b| self.router.active_node(b) == dead)
            .map(|bank| {
                let target = if self.bank_maintenance[usize::from(bank.0)] {
                    Err("bank in maintenance: automatic moves leave it alone".to_owned())
                } else {
                    match self.router.reserve_node(bank).filter(|&r| r != dead) {
                        None => Err("no reserve node".to_owned()),
                        Some(r) if self.node_maintenance[usize::from(r.0)] => {
                            Err("reserve node in maintenance".to_owned())
                        }
                        Some(r) if !self.router.node_is_up(r) => Err("reserve node is down too".to_owned()),
                        Some(r) => Ok(r),
                    }
                };
                (bank, target)
            })
            .collect();
        self.move_at_once(format!("automatic failover: node {dead_name} down"), moves);
    }

    /// A node came up: banks stranded on a node that is down (both of their nodes
    /// were down) move to it at once, if it is their reserve or their intent.
    fn recover_stranded(&mut self, up: NodeId) {
        if self.node_maintenance[usize::from(up.0)] {
            return;
        }
        let moves: Vec<(BankIdx, Result<NodeId, String>)> = self
            .router
            .banks()
            .filter(|&b| {
                let active = self.router.active_node(b);
                active != up
                    && self.is_lost(active)
                    && !self.switches.contains_key(&b)
                    && !self.bank_maintenance[usize::from(b.0)]
                    && (self.router.reserve_node(b) == Some(up) || self.intent[usize::from(b.0)] == up)
            })
            .map(|b| (b, Ok(up)))
            .collect();
        if !moves.is_empty() {
            let name = self.router.node_name(up).to_owned();
            self.move_at_once(
                format!("automatic failover: node {name} up, banks were on a node that is down"),
                moves,
            );
        }
    }

    /// Whether a node is down and known to be: not up, and it went down since this
    /// appliance started or became active, or it has not come up within
    /// [`STARTUP_GRACE`] of that (links come up one by one; a node whose link is
    /// merely not up yet must not have its banks moved to the other).
    fn is_lost(&self, node: NodeId) -> bool {
        let health = &self.health[usize::from(node.0)];
        !health.is_up() && (health.down_since(self.started) || self.started.elapsed() >= STARTUP_GRACE)
    }

    /// Nodes that never came up after start are written off once the grace
    /// period is over: their banks move as if the node had died.
    fn write_off_absent_nodes(&mut self) {
        if !self.auto_failover
            || !self.active
            || self.absent_checked
            || self.started.elapsed() < STARTUP_GRACE
        {
            return;
        }
        self.absent_checked = true;
        let absent: Vec<NodeId> = self
            .router
            .nodes()
            .filter(|&(n, _, up)| !up && self.health[usize::from(n.0)].total_downs() == 0)
            .map(|(n, _, _)| n)
            .collect();
        for node in absent {
            warn!(
                node = self.router.node_name(node),
                grace_s = STARTUP_GRACE.as_secs(),
                "node has not come up since start: its banks move to their reserve"
            );
            self.fail_over(node);
        }
    }

    /// Automatic failback (when configured): banks away from their admin intent go
    /// back once the intent node has been up for `failback_after` and is not
    /// flapping. With the current node up, this is a drain switchover (full sync);
    /// with it down, an immediate move. A rolled-back attempt is retried only after
    /// `failback_after` again.
    fn fail_back(&mut self, now: Instant) {
        if !self.auto_failback || !self.active {
            return;
        }
        let mut by_target: BTreeMap<NodeId, Vec<BankIdx>> = BTreeMap::new();
        for bank in self.router.banks() {
            let b = usize::from(bank.0);
            let (active, wanted) = (self.router.active_node(bank), self.intent[b]);
            if active == wanted
                || self.bank_maintenance[b]
                || self.node_maintenance[usize::from(wanted.0)]
                || self.switches.contains_key(&bank)
                || !self.health[usize::from(wanted.0)].failback_ready(now, &self.flap)
                || self.last_failback[b]
                    .is_some_and(|t| now.saturating_duration_since(t) < self.flap.failback_after)
            {
                continue;
            }
            self.last_failback[b] = Some(now);
            by_target.entry(wanted).or_default().push(bank);
        }
        for (to, banks) in by_target {
            let name = self.router.node_name(to).to_owned();
            let (sync, at_once): (Vec<BankIdx>, Vec<BankIdx>) =
                banks.into_iter().partition(|&b| self.router.node_is_up(self.router.active_node(b)));
            if !at_once.is_empty() {
                let moves = at_once.into_iter().map(|b| (b, Ok(to))).collect();
                self.move_at_once(format!("automatic failback to node {name}"), moves);
            }
            if !sync.is_empty() {
                let mode = proto::switchover::Mode::Drain;
                let id = self.next_job;
                self.next_job += 1;
                let mut job = Job::new(id, format!("automatic failback to node {name}"), mode);
                job.origin = "automatic";
                for &bank in &sync {
                    job.banks.insert(
                        self.router.bank_id(bank).to_owned(),
                        BankResult {
                            from: self.router.node_name(self.router.active_node(bank)).to_owned(),
                            to: name.clone(),
                            phase: "starting".to_owned(),
                            skipped: None,
                            held_max: 0,
                            outcome: None,
                        },
                    );
                }
                job.refresh_state();
                info!(job = id, banks = sync.len(), to = %name, "automatic failback");
                self.job_started(&job);
                self.store_job(job);
                self.launch(now, id, &sync, to, mode);
            }
        }
    }

    /// Moves banks at once, without sync (their node is gone), recorded as a job.
    fn move_at_once(&mut self, reason: String, moves: Vec<(BankIdx, Result<NodeId, String>)>) {
        if moves.is_empty() {
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        let mut job = Job::new(id, reason.clone(), proto::switchover::Mode::Force);
        job.origin = "automatic";
        for (bank, target) in moves {
            let bank_id = self.router.bank_id(bank).to_owned();
            let from = self.router.active_node(bank);
            let from_name = self.router.node_name(from).to_owned();
            let (to, skipped) = match target {
                Ok(to) => {
                    self.router.set_active_node(bank, to);
                    warn!(bank = %bank_id, from = %from_name, to = self.router.node_name(to), job = id,
                          inflight = self.router.inflight(bank), %reason, "bank moved at once");
                    self.metrics
                        .switchovers
                        .get_or_create(&SwitchoverLabels {
                            bank: bank_id.clone(),
                            outcome: "committed",
                            mode: "failover",
                        })
                        .inc();
                    self.route_changed(bank);
                    (self.router.node_name(to).to_owned(), None)
                }
                Err(why) => {
                    warn!(bank = %bank_id, node = %from_name, %why, "bank left on a node that is down: its requests follow its node-loss policy; its sessions stay open");
                    let reserve = self.router.reserve_node(bank).map(|r| self.router.node_name(r).to_owned());
                    (reserve.unwrap_or_default(), Some(why))
                }
            };
            let phase = if skipped.is_some() { "skipped" } else { "committed" }.to_owned();
            let outcome = skipped.is_none().then_some(OutcomeView {
                switched: true,
                aborted: None,
                rollback_confirmed: None,
                contexts: 0,
                drain_deadline_reached: false,
                hold_micros: 0,
                total_micros: 0,
            });
            job.banks
                .insert(bank_id, BankResult { from: from_name, to, phase, skipped, held_max: 0, outcome });
        }
        job.refresh_state();
        self.job_started(&job);
        for (bank, r) in job.banks.iter().filter(|(_, r)| r.skipped.is_none()) {
            let _ = self.events.send(ApiEvent::JobBank {
                job: id,
                bank: bank.clone(),
                phase: r.phase.clone(),
                outcome: r.outcome.clone(),
            });
        }
        self.job_done(&job);
        self.store_job(job);
    }

    fn node_id(&self, name: &str) -> Option<NodeId> {
        self.router.nodes().find(|(_, n, _)| *n == name).map(|(id, _, _)| id)
    }

    /// Carries out a switchover's outputs.
    fn pump_switch(&mut self, now: std::time::Instant, bank: BankIdx) {
        loop {
            let Some((job_id, sw)) = self.switches.get_mut(&bank) else { return };
            let job_id = *job_id;
            let phase = sw.phase();
            let Some(output) = sw.poll_output() else {
                self.note_phase(job_id, bank, phase_name(phase), None);
                return;
            };
            match output {
                SwitchOutput::Send { node, message } => {
                    if let Err(e) = self.out.nodes[usize::from(node.0)].try_send(message) {
                        // The switchover's own timeout will roll it back.
                        warn!(node = self.router.node_name(node), error = %e, "node queue full: switchover command dropped");
                    }
                }
                SwitchOutput::Hold => self.router.hold(bank),
                SwitchOutput::Release { to } => {
                    let held = self.router.held(bank);
                    self.note_job(job_id, bank, |r| r.held_max = r.held_max.max(held));
                    let moved = self.router.active_node(bank) != to;
                    self.router.release(now, bank, to);
                    if moved {
                        self.route_changed(bank);
                    }
                }
                SwitchOutput::Finished(outcome) => {
                    let bank_id = self.router.bank_id(bank).to_owned();
                    if outcome.switched {
                        info!(bank = %bank_id, job = job_id, hold_us = outcome.hold.as_micros() as u64,
                              contexts = outcome.contexts, "switchover committed");
                    } else {
                        warn!(bank = %bank_id, job = job_id, reason = ?outcome.aborted.as_ref().map(ToString::to_string),
                              "switchover rolled back");
                    }
                    let phase = if outcome.switched { Phase::Committed } else { Phase::RolledBack };
                    let mode = self.jobs.get(&job_id).map_or("force", |j| match j.mode {
                        proto::switchover::Mode::Drain => "drain",
                        proto::switchover::Mode::Force => "force",
                    });
                    let labels = SwitchoverLabels {
                        bank: bank_id,
                        outcome: if outcome.switched { "committed" } else { "rolled_back" },
                        mode,
                    };
                    self.metrics.switchovers.get_or_create(&labels).inc();
                    self.metrics.switchover_hold_seconds.observe(outcome.hold.as_secs_f64());
                    self.note_phase(job_id, bank, phase_name(phase), Some(OutcomeView::from(&outcome)));
                    self.switches.remove(&bank);
                    if let Some(job) = self.jobs.get_mut(&job_id) {
                        job.refresh_state();
                    }
                    if let Some(job) = self.jobs.get(&job_id) {
                        self.job_done(job);
                    }
                    return;
                }
            }
        }
    }

    /// Records a bank's phase (and outcome) in its job; the event stream hears of
    /// changes only.
    fn note_phase(&mut self, job: u64, bank: BankIdx, phase: &str, outcome: Option<OutcomeView>) {
        let bank_id = self.router.bank_id(bank);
        let Some(r) = self.jobs.get_mut(&job).and_then(|j| j.banks.get_mut(bank_id)) else { return };
        if r.phase == phase && outcome.is_none() {
            return;
        }
        r.phase = phase.to_owned();
        r.outcome.clone_from(&outcome);
        let _ = self.events.send(ApiEvent::JobBank {
            job,
            bank: bank_id.to_owned(),
            phase: phase.to_owned(),
            outcome,
        });
    }

    fn note_job(&mut self, job: u64, bank: BankIdx, f: impl FnOnce(&mut BankResult)) {
        let bank_id = self.router.bank_id(bank);
        if let Some(r) = self.jobs.get_mut(&job).and_then(|j| j.banks.get_mut(bank_id)) {
            f(r);
        }
    }

    /// Tells draining switchovers how many requests are still in flight.
    fn feed_drains(&mut self, now: std::time::Instant) {
        let draining: Vec<BankIdx> = self
            .switches
            .iter()
            .filter(|(_, (_, s))| s.phase() == Phase::Draining)
            .map(|(b, _)| *b)
            .collect();
        for bank in draining {
            let inflight = self.router.inflight(bank);
            let held = self.router.held(bank);
            if let Some((job, sw)) = self.switches.get_mut(&bank) {
                let job = *job;
                sw.handle(now, SwitchInput::Inflight(inflight));
                self.note_job(job, bank, |r| r.held_max = r.held_max.max(held));
            }
            self.pump_switch(now, bank);
        }
    }

    fn bank_node(&self, bank: BankIdx, node: NodeId) -> BankNodeLabels {
        BankNodeLabels {
            bank: self.router.bank_id(bank).to_owned(),
            node: self.router.node_name(node).to_owned(),
        }
    }

    fn bank_side(&self, bank: BankIdx, side: Side) -> BankSideLabels {
        let side = match side {
            Side::Bank => "bank",
            Side::Node => "node",
        };
        BankSideLabels { bank: self.router.bank_id(bank).to_owned(), side }
    }

    fn event(&mut self, event: Event) {
        let m = &self.metrics;
        match event {
            Event::Answered { bank, node, response_code, latency, .. } => {
                self.response_seconds[usize::from(bank.0)][usize::from(node.0)]
                    .observe(latency.as_secs_f64());
                let rc = response_code.as_deref().unwrap_or("none");
                let mut code = [0u8; 4];
                let n = rc.len().min(4);
                code[..n].copy_from_slice(&rc.as_bytes()[..n]);
                if let Some(counter) = self.responses.get(&(bank, node, code)) {
                    counter.inc();
                } else {
                    let l = self.bank_node(bank, node);
                    let labels = ResponseLabels { bank: l.bank, node: l.node, rc: rc.to_owned() };
                    let counter = m.responses.get_or_create(&labels).clone();
                    counter.inc();
                    self.responses.insert((bank, node, code), counter);
                }
            }
            Event::Timeout { bank, session, node, requester, key } => {
                m.timeouts.get_or_create(&self.bank_side(bank, requester)).inc();
                warn!(bank = self.router.bank_id(bank), session, node = self.router.node_name(node), ?requester,
                      %key, "request timed out");
            }
            Event::Late { bank, node, from, key } => {
                m.late.get_or_create(&self.bank_side(bank, from)).inc();
                warn!(bank = self.router.bank_id(bank), node = self.router.node_name(node), ?from, %key,
                      "late response delivered");
            }
            Event::Unmatched { bank, from, key } => {
                m.unmatched.get_or_create(&self.bank_side(bank, from)).inc();
                warn!(bank = self.router.bank_id(bank), ?from, key = ?key.map(|k| k.to_string()),
                      "unmatched response delivered");
            }
            Event::BadMessage { bank, session, from, error, dump, closed } => {
                m.bad_messages.get_or_create(&self.bank_side(bank, from)).inc();
                warn!(bank = self.router.bank_id(bank), ?session, ?from, %error, %dump, closed,
                      "message does not decode under the bank layout");
            }
            Event::NoRoute { bank, node, key } => {
                m.no_route.get_or_create(&BankLabels { bank: self.router.bank_id(bank).to_owned() }).inc();
                warn!(bank = self.router.bank_id(bank), node = self.router.node_name(node), %key,
                      "node down: request not sent (the bank will time out)");
            }
            Event::Declined { bank, session, node, key, was_in_flight } => {
                m.declined.get_or_create(&self.bank_node(bank, node)).inc();
                warn!(bank = self.router.bank_id(bank), session, node = self.router.node_name(node), %key,
                      was_in_flight, "node lost: request answered with the bank's decline code");
            }
            Event::Undeliverable { bank, session, mti } => {
                m.undeliverable
                    .get_or_create(&BankLabels { bank: self.router.bank_id(bank).to_owned() })
                    .inc();
                warn!(bank = self.router.bank_id(bank), ?session, mti = ?mti.map(|m| m.to_string()),
                      "no live session for the message");
            }
            Event::AppStateChanged { bank, session, state } => {
                info!(
                    bank = self.router.bank_id(bank),
                    session,
                    state = app_state_name(state),
                    "session application state"
                );
            }
            Event::Duplicate { bank, node } => {
                warn!(
                    bank = self.router.bank_id(bank),
                    node = self.router.node_name(node),
                    "second response to an answered request dropped"
                );
            }
            Event::HoldLimit { bank, held } => {
                warn!(
                    bank = self.router.bank_id(bank),
                    held, "held messages reached the hold limit: aborting the switchover"
                );
                if let Some((_, sw)) = self.switches.get_mut(&bank) {
                    sw.handle(now(), SwitchInput::Cancel);
                }
                self.pump_switch(now(), bank);
            }
            Event::Protocol { node, detail } => {
                warn!(node = self.router.node_name(node), %detail, "node broke the protocol");
            }
            other => debug!(?other, "router event"),
        }
    }

    fn update_gauges(&mut self) {
        let now = now();
        for bank in self.router.banks() {
            let c = self.router.counters(bank);
            let samples = &mut self.rate_samples[usize::from(bank.0)];
            samples.push_back((now, c.from_bank + c.to_bank));
            while samples.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > RATE_WINDOW) {
                samples.pop_front();
            }
        }
        let m = &self.metrics;
        m.pups_attached.set(i64::from(self.pups_attached));
        m.switchovers_running.set(self.switches.len() as i64);
        for (node, name, up) in self.router.nodes() {
            let labels = NodeLabels { node: name.to_owned() };
            m.node_up.get_or_create(&labels).set(i64::from(up));
            let flapping = self.health[usize::from(node.0)].is_flapping(now, &self.flap);
            m.node_flapping.get_or_create(&labels).set(i64::from(flapping));
            if let Some(rtt) = self.rtt[usize::from(node.0)] {
                m.node_rtt_micros.get_or_create(&labels).set(rtt.as_micros() as i64);
            }
        }
        for bank in self.router.banks() {
            let id = self.router.bank_id(bank).to_owned();
            m.inflight.get_or_create(&BankLabels { bank: id.clone() }).set(self.router.inflight(bank) as i64);
            let active = self.router.active_node(bank);
            for (node, _, _) in self.router.nodes() {
                m.route.get_or_create(&self.bank_node(bank, node)).set(i64::from(node == active));
            }
            let sessions = self.router.sessions(bank, now);
            for state in ["unknown", "signed_on", "signed_off", "echo_failing"] {
                let n = sessions.iter().filter(|s| app_state_name(s.app_state) == state).count();
                m.sessions.get_or_create(&SessionStateLabels { bank: id.clone(), state }).set(n as i64);
            }
        }
    }

    /// Messages per second both ways over the samples kept.
    fn rate(&self, bank: BankIdx) -> f64 {
        let samples = &self.rate_samples[usize::from(bank.0)];
        match (samples.front(), samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / t1.saturating_duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    fn snapshot(&self, now: std::time::Instant) -> Snapshot {
        Snapshot {
            pups_attached: self.pups_attached,
            nodes: self
                .router
                .nodes()
                .map(|(node, name, up)| {
                    let health = &self.health[usize::from(node.0)];
                    NodeView {
                        id: name.to_owned(),
                        up,
                        rtt_micros: self.rtt[usize::from(node.0)].map(|d| d.as_micros() as u64),
                        up_for_secs: health.up_for(now).map(|d| d.as_secs_f64()),
                        recent_down_events: health.recent_downs(now, &self.flap),
                        down_events: health.total_downs(),
                        flapping: health.is_flapping(now, &self.flap),
                        maintenance: self.node_maintenance[usize::from(node.0)],
                        banks_active: self
                            .router
                            .banks()
                            .filter(|&b| self.router.active_node(b) == node)
                            .count(),
                        version: self.node_version[usize::from(node.0)],
                    }
                })
                .collect(),
            banks: self
                .router
                .banks()
                .map(|bank| BankView {
                    id: self.router.bank_id(bank).to_owned(),
                    name: self.bank_names.get(usize::from(bank.0)).cloned().unwrap_or_default(),
                    active_node: self.router.node_name(self.router.active_node(bank)).to_owned(),
                    intent_node: self.router.node_name(self.intent[usize::from(bank.0)]).to_owned(),
                    maintenance: self.bank_maintenance[usize::from(bank.0)],
                    switching_job: self.switches.get(&bank).map(|(job, _)| *job),
                    rate_per_s: self.rate(bank),
                    inflight: self.router.inflight(bank),
                    sessions: self.router.sessions(bank, now),
                    counters: self.router.counters(bank).clone(),
                    version: self.bank_version[usize::from(bank.0)],
                })
                .collect(),
        }
    }
}
