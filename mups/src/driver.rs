//! The router driver: one task that owns `proto::router::Router`, feeds it what
//! the links receive and the timer, and carries out its actions. It does nothing
//! else (quinn's `ConnectionDriver` shape): every routing decision is in `proto`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use proto::fo_link::{
    CloseSession, Data, DataFlags, Direction, FoMessage, InventoryEnd, SessionDown, SessionUp,
};
use proto::router::{Action, BankIdx, Event, NodeId, Router, SessionView, Side, app_state_name};
use proto::switchover::{
    Input as SwitchInput, Output as SwitchOutput, Phase, SwitchConfig, SwitchPlan, Switchover,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::local_link::ToPups;
use crate::metrics::{
    BankLabels, BankNodeLabels, BankSideLabels, MessageLabels, Metrics, NodeLabels, ResponseLabels,
    SessionStateLabels,
};
use crate::switching::{BankResult, BankSelection, Job, OutcomeView, SwitchRequest, node_input, phase_name};

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
}

/// One bank.
#[derive(Debug, Clone, Serialize)]
pub struct BankView {
    /// Bank id.
    pub id: String,
    /// The node it is routed to.
    pub active_node: String,
    /// Bank requests in flight.
    pub inflight: u64,
    /// Live sessions.
    pub sessions: Vec<SessionView>,
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
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    next_switch: u64,
}

/// Runs the router until shutdown.
pub async fn run(
    router: Router,
    switch_cfg: SwitchConfig,
    auto_failover: bool,
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
        switch_cfg,
        auto_failover,
        jobs: BTreeMap::new(),
        next_job: 1,
        next_switch: 1,
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
            _ = shutdown.changed() => return,
            input = inputs.recv() => {
                let Some(input) = input else { return };
                // One clock read per batch: the batch arrived together.
                let now = now();
                d.handle(now, input);
                // Take what is already queued before acting: fewer wake-ups under load.
                for _ in 0..255 {
                    let Ok(more) = inputs.try_recv() else { break };
                    d.handle(now, more);
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
            _ = gauges.tick() => d.update_gauges(),
        }
        d.feed_drains(now());
        d.drain().await;
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
            }
            Input::NodeDown(node) => {
                if self.router.nodes().any(|(n, _, up)| n == node && up) {
                    warn!(node = self.router.node_name(node), "node down");
                }
                self.router.node_link(node, false);
                let banks: Vec<BankIdx> = self.switches.keys().copied().collect();
                for bank in banks {
                    if let Some((_, sw)) = self.switches.get_mut(&bank) {
                        sw.handle(now, SwitchInput::LinkDown(node));
                    }
                    self.pump_switch(now, bank);
                }
                if self.auto_failover {
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
            Input::NodeData(node, data) => self.router.from_node(now, node, data),
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
                info!(bank = %down.bank_id, session = down.session_id, reason = ?down.reason, detail = %down.detail,
                      "session down");
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
        }
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
        self.jobs.insert(id, job);
        for bank in banks {
            let current = self.router.active_node(bank);
            if self.switches.contains_key(&bank) || current == to {
                continue;
            }
            let plan = SwitchPlan {
                switch_id: self.next_switch,
                bank_id: self.router.bank_id(bank).to_owned(),
                from: current,
                to,
                mode: req.mode,
            };
            self.next_switch += 1;
            self.switches.insert(bank, (id, Switchover::start(plan, self.switch_cfg, now)));
            self.pump_switch(now, bank);
        }
        Ok(id)
    }

    /// A node is down: every bank active on it moves at once to its reserve, if the
    /// reserve is up (no sync is possible with a dead node). Requests in flight on
    /// the dead node time out at the bank (counted as timeouts); their late answers,
    /// should the node come back, are still delivered once. There is no automatic
    /// failback, so a flapping node cannot bounce banks back and forth.
    fn fail_over(&mut self, dead: NodeId) {
        let banks: Vec<BankIdx> =
            self.router.banks().filter(|&b| self.router.active_node(b) == dead).collect();
        if banks.is_empty() {
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        let dead_name = self.router.node_name(dead).to_owned();
        let mut job = Job::new(
            id,
            format!("automatic failover: node {dead_name} down"),
            proto::switchover::Mode::Force,
        );
        for bank in banks {
            let bank_id = self.router.bank_id(bank).to_owned();
            let reserve = self.router.reserve_node(bank).filter(|&r| r != dead);
            let (to, skipped) = match reserve {
                Some(r) if self.router.node_is_up(r) => {
                    self.router.set_active_node(bank, r);
                    warn!(bank = %bank_id, from = %dead_name, to = self.router.node_name(r), job = id,
                          inflight = self.router.inflight(bank), "automatic failover");
                    (self.router.node_name(r).to_owned(), None)
                }
                Some(r) => {
                    warn!(bank = %bank_id, "both nodes of the bank are down: its requests are counted as no_route; its sessions stay open");
                    (self.router.node_name(r).to_owned(), Some("reserve node is down too".to_owned()))
                }
                None => {
                    warn!(bank = %bank_id, "node down and the bank has no reserve node");
                    (String::new(), Some("no reserve node".to_owned()))
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
            job.banks.insert(
                bank_id,
                BankResult { from: dead_name.clone(), to, phase, skipped, held_max: 0, outcome },
            );
        }
        job.refresh_state();
        self.jobs.insert(id, job);
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
                self.note_job(job_id, bank, |r| r.phase = phase_name(phase).to_owned());
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
                    self.router.release(now, bank, to);
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
                    self.note_job(job_id, bank, |r| {
                        r.phase = phase_name(phase).to_owned();
                        r.outcome = Some(OutcomeView::from(&outcome));
                    });
                    self.switches.remove(&bank);
                    if let Some(job) = self.jobs.get_mut(&job_id) {
                        job.refresh_state();
                    }
                    return;
                }
            }
        }
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

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.pups_attached.set(i64::from(self.pups_attached));
        let now = now();
        for (node, name, up) in self.router.nodes() {
            let labels = NodeLabels { node: name.to_owned() };
            m.node_up.get_or_create(&labels).set(i64::from(up));
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

    fn snapshot(&self, now: std::time::Instant) -> Snapshot {
        Snapshot {
            pups_attached: self.pups_attached,
            nodes: self
                .router
                .nodes()
                .map(|(node, name, up)| NodeView {
                    id: name.to_owned(),
                    up,
                    rtt_micros: self.rtt[usize::from(node.0)].map(|d| d.as_micros() as u64),
                })
                .collect(),
            banks: self
                .router
                .banks()
                .map(|bank| BankView {
                    id: self.router.bank_id(bank).to_owned(),
                    active_node: self.router.node_name(self.router.active_node(bank)).to_owned(),
                    inflight: self.router.inflight(bank),
                    sessions: self.router.sessions(bank, now),
                    counters: self.router.counters(bank).clone(),
                })
                .collect(),
        }
    }
}
