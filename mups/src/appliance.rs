//! The appliance pair as `mups` runs it: which appliance is active (keepalived
//! says, through its notify FIFO), the peer link to the twin, the continuous
//! replication of routes, admin intent and maintenance flags to it, and the planned
//! switchover (`proto::appliance_switch`) on either side.
//!
//! One task owns all of it. It talks to `pups` with `HANDOVER` messages over the
//! local link, to the router driver with [`Input`]s, to keepalived through the
//! track file (fault = hand the VIP over now), and to the twin over the peer link.
//!
//! Roles:
//! - **standalone** (no `[vrrp]`): always active; nothing here runs.
//! - **standby**: `pups` keeps the bank ports locked, the FO links are down, the
//!   router makes no automatic moves and takes no switch jobs; routes replicated
//!   from the active are applied.
//! - **active**: holds the VIP; FO links up; `pups` serves.
//!
//! keepalived making us MASTER outside a switchover makes us active (a fresh
//! cluster, or the twin died: then the banks reconnect, as they would to any new
//! server); BACKUP or FAULT outside a switchover makes us standby and fences `pups`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proto::appliance_switch::{
    ActiveInput, ActiveOutput, ActiveSwitch, ApplianceOutcome, ApplianceSwitchConfig, PeerMessage,
    StandbyInput, StandbyOutput, StandbySwitch,
};
use proto::config::VrrpSection;
use proto::fo_link::{Data, FoMessage, Handover, HandoverOp};
use proto::peer_link::PeerFrame;
use proto::router::InflightTables;
use proto::router::NodeId;
use proto::snapshot::SnapshotBatch;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::driver::Input;
use crate::local_link::ToPups;
use crate::peer::PeerEvent;
use crate::persist::RouteState;
use crate::vrrp::{NotifyFifo, TrackFile, VrrpChange, VrrpState};

/// What the appliance task needs.
pub struct ApplianceSettings {
    /// `[appliance] id`.
    pub appliance_id: String,
    /// `[vrrp]`, if this appliance is one of a pair.
    pub vrrp: Option<VrrpSection>,
    /// Whether a peer link is configured.
    pub has_peer: bool,
    /// Switchover deadlines.
    pub switch: ApplianceSwitchConfig,
}

/// Requests from the API.
#[derive(Debug)]
pub enum ApplianceCommand {
    /// `GET /api/v1/appliance`.
    Status(oneshot::Sender<ApplianceStatus>),
    /// `PUT /api/v1/appliance/maintenance`: while set, this appliance refuses to
    /// take sessions over (e.g. while it is being upgraded).
    Maintenance {
        /// Set or clear.
        on: bool,
        /// Why (logged).
        reason: String,
    },
    /// `POST /api/v1/appliance/switchover`: the switch id, or why not.
    Switchover {
        /// Why (logged, kept with the outcome).
        reason: String,
        /// The answer.
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// This appliance and its twin, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct ApplianceStatus {
    /// This appliance.
    pub appliance_id: String,
    /// `standalone`, `active` or `standby`.
    pub role: &'static str,
    /// Refuses to take sessions over.
    pub maintenance: bool,
    /// keepalived's view, if this is one of a pair.
    pub vrrp: Option<VrrpView>,
    /// The twin.
    pub twin: Option<TwinView>,
    /// Replication of the admin state to (active) or from (standby) the twin.
    pub replication: ReplicationView,
    /// A switchover under way.
    pub switchover: Option<RunningView>,
    /// The last switchover, with its timings.
    pub last_switchover: Option<LastSwitchover>,
}

/// keepalived's state.
#[derive(Debug, Clone, Serialize)]
pub struct VrrpView {
    /// The instance.
    pub instance: String,
    /// `MASTER`, `BACKUP`, `FAULT`, `STOP`, or `unknown` before the first event.
    pub state: String,
    /// The priority keepalived last reported.
    pub priority: Option<u8>,
    /// The configured priority.
    pub configured_priority: u8,
    /// Whether our track file holds a fault (we asked to give the VIP up).
    pub fault_set: bool,
}

/// The twin.
#[derive(Debug, Clone, Serialize)]
pub struct TwinView {
    /// Its id, once the link has been up.
    pub id: Option<String>,
    /// Link up.
    pub connected: bool,
    /// Heartbeat round trip, microseconds.
    pub rtt_micros: Option<u64>,
}

/// Replication.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationView {
    /// Last state sequence sent (active) or applied (standby).
    pub seq: u64,
    /// Last sequence the twin confirmed (active).
    pub acked: u64,
    /// Changes sent and not yet confirmed.
    pub lag_changes: u64,
    /// Milliseconds since the oldest unconfirmed change was sent (0 when none).
    pub lag_ms: u64,
}

/// A switchover under way.
#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    /// Its id.
    pub switch_id: u64,
    /// `active` (handing over) or `standby` (taking over).
    pub side: &'static str,
    /// Its phase.
    pub phase: String,
}

/// How the last switchover went.
#[derive(Debug, Clone, Serialize)]
pub struct LastSwitchover {
    /// Which side we were.
    pub side: &'static str,
    /// Why it was asked for (active side).
    pub reason: Option<String>,
    /// When it ended, Unix milliseconds.
    pub finished_unix_ms: u64,
    /// The outcome and timings.
    pub outcome: ApplianceOutcome,
}

/// Channels the task is driven by.
pub struct ApplianceIo {
    /// To the router driver.
    pub router: mpsc::Sender<Input>,
    /// To `pups`.
    pub pups: mpsc::Sender<ToPups>,
    /// `HANDOVER` replies from `pups`.
    pub handovers: mpsc::Receiver<Handover>,
    /// Enables the FO node links (active) or takes them down (standby).
    pub nodes_enabled: watch::Sender<bool>,
    /// The admin state to replicate.
    pub routes: watch::Receiver<RouteState>,
    /// To the twin.
    pub peer_out: Option<mpsc::Sender<PeerFrame>>,
    /// From the twin.
    pub peer_events: Option<mpsc::Receiver<PeerEvent>>,
    /// From the API.
    pub commands: mpsc::Receiver<ApplianceCommand>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Standalone,
    Active,
    Standby,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Active => "active",
            Self::Standby => "standby",
        }
    }
}

/// The active side's extra state.
struct Handing {
    sw: ActiveSwitch,
    reason: String,
    /// `pups` answered `Quiesced`; waiting for the router's in-flight to reach 0.
    pups_quiet: bool,
}

/// The standby side's extra state.
struct Taking {
    sw: StandbySwitch,
    received: u32,
    tables: Option<InflightTables>,
    /// Taking over: waiting for the FO links, since when.
    links_since: Option<Instant>,
    /// Nodes' DATA relayed by the old active before our router took the tables over.
    relays: Vec<(NodeId, Data)>,
    /// The tables are in our router: relays go straight to it.
    imported: bool,
}

/// Nodes' DATA reaching us once our sessions are frozen (see [`Input::Divert`]):
/// held until the switchover ends, then relayed to the twin (committed) or given
/// back to our own router (aborted).
enum Relaying {
    Hold(u64, Vec<(NodeId, Data)>),
    Forward(u64),
}

struct Appliance {
    s: ApplianceSettings,
    io: ApplianceIo,
    role: Role,
    vrrp_state: Option<VrrpState>,
    vrrp_priority: Option<u8>,
    track: Option<TrackFile>,
    fault_set: bool,
    twin_id: Option<String>,
    twin_up: bool,
    rtt: Option<Duration>,
    seq: u64,
    acked: u64,
    unacked_since: Option<Instant>,
    handing: Option<Handing>,
    taking: Option<Taking>,
    last: Option<LastSwitchover>,
    maintenance: bool,
    diverted: Option<mpsc::UnboundedReceiver<(NodeId, Data)>>,
    relaying: Option<Relaying>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How often quiescing and taking over look again at the router.
const POLL: Duration = Duration::from_millis(2);

/// Longest wait, when taking over, for the FO links before serving anyway (the
/// banks are locked meanwhile; the router's own policies cover a node still down).
const LINKS_WAIT: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn run(settings: ApplianceSettings, io: ApplianceIo, mut shutdown: watch::Receiver<bool>) {
    let pair = settings.vrrp.is_some();
    let track = settings.vrrp.as_ref().map(|v| TrackFile::new(v.track_file_path()));
    let mut fifo = match &settings.vrrp {
        Some(v) => match NotifyFifo::open(v.notify_fifo_path()) {
            Ok(f) => Some(f),
            Err(e) => {
                error!(error = %e, "cannot open keepalived's notify FIFO: this appliance stays standby");
                None
            }
        },
        None => None,
    };
    let mut a = Appliance {
        s: settings,
        io,
        role: if pair { Role::Standby } else { Role::Standalone },
        vrrp_state: None,
        vrrp_priority: None,
        track,
        fault_set: false,
        twin_id: None,
        twin_up: false,
        rtt: None,
        seq: 0,
        acked: 0,
        unacked_since: None,
        handing: None,
        taking: None,
        last: None,
        maintenance: false,
        diverted: None,
        relaying: None,
    };
    a.start().await;
    let mut peer_events = a.io.peer_events.take();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = [
            a.handing.as_ref().and_then(|h| h.sw.poll_timeout()),
            a.taking.as_ref().and_then(|t| t.sw.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let polling = a.handing.as_ref().is_some_and(|h| h.pups_quiet)
            || a.taking.as_ref().is_some_and(|t| t.links_since.is_some());
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(cmd) = a.io.commands.recv() => a.command(cmd).await,
            Some(h) = a.io.handovers.recv() => a.on_pups(h).await,
            Some(ev) = next_peer(&mut peer_events) => a.on_peer(ev).await,
            ev = next_vrrp(&mut fifo) => a.vrrp(ev).await,
            changed = a.io.routes.changed() => {
                if changed.is_ok() {
                    a.replicate().await;
                }
            }
            _ = sleep_until(deadline) => a.timeout().await,
            _ = poll.tick(), if polling => a.poll().await,
            Some(d) = next_diverted(&mut a.diverted) => a.diverted(d).await,
        }
    }
}

async fn next_peer(rx: &mut Option<mpsc::Receiver<PeerEvent>>) -> Option<PeerEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_diverted(rx: &mut Option<mpsc::UnboundedReceiver<(NodeId, Data)>>) -> Option<(NodeId, Data)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_vrrp(fifo: &mut Option<NotifyFifo>) -> (VrrpChange, u8) {
    loop {
        let Some(f) = fifo else { return std::future::pending().await };
        match f.next_event().await {
            Ok(ev) => return (ev.change, ev.priority),
            Err(e) => {
                error!(error = %e, "keepalived notify FIFO failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl Appliance {
    async fn start(&mut self) {
        match self.role {
            Role::Standalone => {
                let _ = self.io.nodes_enabled.send(true);
                let _ = self.io.router.send(Input::Role(true)).await;
            }
            _ => {
                let _ = self.io.nodes_enabled.send(false);
                let _ = self.io.router.send(Input::Role(false)).await;
                // keepalived starts us in FAULT until the track file says healthy.
                if let Some(t) = &self.track {
                    if let Err(e) = t.healthy() {
                        error!(error = %e, "cannot write keepalived's track file");
                    }
                }
                self.to_pups(0, HandoverOp::Lock, 0, Bytes::new()).await;
            }
        }
    }

    async fn to_pups(&self, switch_id: u64, op: HandoverOp, count: u32, payload: Bytes) {
        let h = Handover { switch_id, op, count, detail: String::new(), payload };
        let _ = self.io.pups.send(ToPups::Handover(h)).await;
    }

    async fn to_peer(&self, frame: PeerFrame) {
        if let Some(tx) = &self.io.peer_out {
            let _ = tx.send(frame).await;
        }
    }

    async fn send_switch(&self, m: &PeerMessage) {
        match serde_json::to_vec(m) {
            Ok(json) => self.to_peer(PeerFrame::Switch { json: json.into() }).await,
            Err(e) => error!(error = %e, "cannot encode a switchover message"),
        }
    }

    async fn become_active(&mut self) {
        info!("this appliance is active");
        self.role = Role::Active;
        if self.diverted.take().is_some() {
            self.divert(None).await;
        }
        self.relaying = None;
        // The router first: what the node links report next is news for an active.
        let _ = self.io.router.send(Input::Role(true)).await;
        let _ = self.io.nodes_enabled.send(true);
        // The twin learns our state at once, not at the next change.
        self.replicate().await;
    }

    async fn become_standby(&mut self) {
        info!("this appliance is standby");
        self.role = Role::Standby;
        // The router first: the links we close now must not look like failed nodes
        // to a router that still thinks it is active (it would move their banks).
        let _ = self.io.router.send(Input::Role(false)).await;
        let _ = self.io.nodes_enabled.send(false);
    }

    fn status(&self) -> ApplianceStatus {
        ApplianceStatus {
            appliance_id: self.s.appliance_id.clone(),
            role: self.role.name(),
            maintenance: self.maintenance,
            vrrp: self.s.vrrp.as_ref().map(|v| VrrpView {
                instance: v.instance.clone(),
                state: self.vrrp_state.map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
                priority: self.vrrp_priority,
                configured_priority: v.priority,
                fault_set: self.fault_set,
            }),
            twin: self.s.has_peer.then(|| TwinView {
                id: self.twin_id.clone(),
                connected: self.twin_up,
                rtt_micros: self.rtt.map(|d| d.as_micros() as u64),
            }),
            // The standby's `seq` is what it applied: it owes no acknowledgement.
            replication: if self.role == Role::Active {
                ReplicationView {
                    seq: self.seq,
                    acked: self.acked,
                    lag_changes: self.seq.saturating_sub(self.acked),
                    lag_ms: self.unacked_since.map_or(0, |t| t.elapsed().as_millis() as u64),
                }
            } else {
                ReplicationView { seq: self.seq, acked: self.seq, lag_changes: 0, lag_ms: 0 }
            },
            switchover: self
                .handing
                .as_ref()
                .map(|h| RunningView {
                    switch_id: h.sw.switch_id(),
                    side: "active",
                    phase: format!("{:?}", h.sw.phase()).to_lowercase(),
                })
                .or_else(|| {
                    self.taking.as_ref().map(|t| RunningView {
                        switch_id: t.sw.switch_id(),
                        side: "standby",
                        phase: format!("{:?}", t.sw.phase()).to_lowercase(),
                    })
                }),
            last_switchover: self.last.clone(),
        }
    }

    async fn command(&mut self, cmd: ApplianceCommand) {
        match cmd {
            ApplianceCommand::Status(reply) => {
                let _ = reply.send(self.status());
            }
            ApplianceCommand::Maintenance { on, reason } => {
                info!(maintenance = on, %reason, "appliance maintenance flag");
                self.maintenance = on;
            }
            ApplianceCommand::Switchover { reason, reply } => {
                let refusal = match self.role {
                    Role::Standalone => Some("this appliance has no twin ([vrrp] is not configured)"),
                    Role::Standby => Some("this appliance is standby: ask the active one"),
                    Role::Active if !self.twin_up => Some("the twin is not connected"),
                    Role::Active if self.handing.is_some() || self.taking.is_some() => {
                        Some("a switchover is already under way")
                    }
                    Role::Active => None,
                };
                if let Some(why) = refusal {
                    let _ = reply.send(Err(why.to_owned()));
                    return;
                }
                // Unique across both appliances and restarts.
                let switch_id =
                    SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
                info!(switch_id, %reason, "planned appliance switchover");
                let sw = ActiveSwitch::start(switch_id, self.s.switch, Instant::now());
                self.handing = Some(Handing { sw, reason, pups_quiet: false });
                let _ = reply.send(Ok(switch_id));
                self.pump_active().await;
            }
        }
    }

    async fn feed_active(&mut self, input: ActiveInput) {
        if let Some(h) = &mut self.handing {
            h.sw.handle(Instant::now(), input);
            self.pump_active().await;
        }
    }

    async fn feed_standby(&mut self, input: StandbyInput) {
        if let Some(t) = &mut self.taking {
            t.sw.handle(Instant::now(), input);
            self.pump_standby().await;
        }
    }

    async fn pump_active(&mut self) {
        loop {
            let Some(h) = &mut self.handing else { return };
            let switch_id = h.sw.switch_id();
            let Some(out) = h.sw.poll_output() else { return };
            match out {
                ActiveOutput::ToPeer(m) => self.send_switch(&m).await,
                ActiveOutput::Quiesce => self.to_pups(switch_id, HandoverOp::Quiesce, 0, Bytes::new()).await,
                ActiveOutput::Checkpoint => {
                    // From here on the sessions are frozen: what the nodes send is
                    // kept for whoever serves the sessions in the end.
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.divert(Some(tx)).await;
                    self.diverted = Some(rx);
                    self.relaying = Some(Relaying::Hold(switch_id, Vec::new()));
                    // Only now: everything routed before is already on its way to pups,
                    // ahead of the checkpoint (pups drops DATA for a frozen session).
                    self.to_pups(switch_id, HandoverOp::Checkpoint, 0, Bytes::new()).await;
                }
                ActiveOutput::Ship => {
                    // The snapshots went to the twin as `pups` sent them; the router's
                    // in-flight tables follow.
                    let (tx, rx) = oneshot::channel();
                    let _ = self.io.router.send(Input::ExportInflight(tx)).await;
                    match rx.await.ok().map(|t| serde_json::to_vec(&t)) {
                        Some(Ok(json)) => {
                            self.to_peer(PeerFrame::RouterState { switch_id, json: json.into() }).await
                        }
                        other => warn!(?other, "no in-flight tables to hand over"),
                    }
                    if let Some(h) = &mut self.handing {
                        h.sw.handle(Instant::now(), ActiveInput::Shipped);
                    }
                }
                ActiveOutput::SetVrrpFault(fault) => {
                    self.fault_set = fault;
                    if let Some(t) = &self.track {
                        let r = if fault { t.fault() } else { t.healthy() };
                        if let Err(e) = r {
                            error!(error = %e, fault, "cannot write keepalived's track file");
                        }
                    }
                }
                ActiveOutput::CloseFrozen => {
                    self.to_pups(switch_id, HandoverOp::CloseFrozen, 0, Bytes::new()).await;
                    self.become_standby().await;
                    if let Some(Relaying::Hold(id, held)) = self.relaying.take() {
                        for (node, data) in held {
                            self.relay(id, node, data).await;
                        }
                        self.relaying = Some(Relaying::Forward(id));
                    }
                }
                ActiveOutput::Thaw => {
                    // What was held goes to our router once pups answers THAWED (DATA
                    // for a session still frozen would be dropped).
                    self.to_pups(switch_id, HandoverOp::Thaw, 0, Bytes::new()).await;
                }
                ActiveOutput::Finished(outcome) => {
                    let reason = self.handing.take().map(|h| h.reason);
                    if outcome.committed {
                        info!(switch_id, sessions = outcome.sessions, times = ?outcome.times, "sessions handed to the twin");
                        // The track file goes back to healthy: we are a good standby now.
                        if let Some(t) = &self.track {
                            let _ = t.healthy();
                        }
                        self.fault_set = false;
                    } else {
                        warn!(switch_id, aborted = ?outcome.aborted, "appliance switchover aborted: serving on");
                    }
                    self.last =
                        Some(LastSwitchover { side: "active", reason, finished_unix_ms: unix_ms(), outcome });
                    return;
                }
            }
        }
    }

    async fn pump_standby(&mut self) {
        loop {
            let Some(t) = &mut self.taking else { return };
            let switch_id = t.sw.switch_id();
            let received = t.received;
            let Some(out) = t.sw.poll_output() else { return };
            match out {
                StandbyOutput::ToPeer(m) => self.send_switch(&m).await,
                StandbyOutput::Lock => self.to_pups(switch_id, HandoverOp::Lock, 0, Bytes::new()).await,
                StandbyOutput::Discard => {
                    // pups drops what it holds for this switchover and stays locked.
                    self.to_pups(switch_id, HandoverOp::Lock, 0, Bytes::new()).await;
                }
                StandbyOutput::Restore => {
                    self.to_pups(switch_id, HandoverOp::RestoreEnd, received, Bytes::new()).await;
                }
                StandbyOutput::TakeOver => {
                    self.become_active().await;
                    if let Some(tables) = self.taking.as_mut().and_then(|t| t.tables.take()) {
                        let (tx, rx) = oneshot::channel();
                        let _ = self.io.router.send(Input::ImportInflight(Box::new(tables), tx)).await;
                        let _ = rx.await;
                    }
                    let relays = match &mut self.taking {
                        Some(t) => {
                            t.links_since = Some(Instant::now());
                            t.imported = true;
                            std::mem::take(&mut t.relays)
                        }
                        None => Vec::new(),
                    };
                    for (node, data) in relays {
                        let _ = self.io.router.send(Input::NodeData(node, data)).await;
                    }
                }
                StandbyOutput::Serve => self.to_pups(switch_id, HandoverOp::Serve, 0, Bytes::new()).await,
                StandbyOutput::Finished(outcome) => {
                    self.taking = None;
                    if outcome.committed {
                        info!(switch_id, sessions = outcome.sessions, times = ?outcome.times, "sessions taken over from the twin");
                    } else {
                        warn!(switch_id, aborted = ?outcome.aborted, "takeover aborted");
                    }
                    self.last = Some(LastSwitchover {
                        side: "standby",
                        reason: None,
                        finished_unix_ms: unix_ms(),
                        outcome,
                    });
                    return;
                }
            }
        }
    }

    async fn divert(&self, to: Option<mpsc::UnboundedSender<(NodeId, Data)>>) {
        let (tx, rx) = oneshot::channel();
        let _ = self.io.router.send(Input::Divert(to, tx)).await;
        let _ = rx.await;
    }

    /// The sessions are ours again: nodes' DATA held since the checkpoint goes to
    /// our router, in order.
    async fn give_back_held(&mut self) {
        let Some(mut rx) = self.diverted.take() else { return };
        self.divert(None).await;
        let mut held = match self.relaying.take() {
            Some(Relaying::Hold(_, held)) => held,
            _ => Vec::new(),
        };
        while let Ok(d) = rx.try_recv() {
            held.push(d);
        }
        for (node, data) in held {
            let _ = self.io.router.send(Input::NodeData(node, data)).await;
        }
    }

    async fn relay(&self, switch_id: u64, node: NodeId, data: Data) {
        match FoMessage::Data(data).to_vec() {
            Ok(frame) => {
                self.to_peer(PeerFrame::Relay { switch_id, node: node.0, frame: frame.into() }).await
            }
            Err(e) => error!(error = %e, "cannot encode DATA for the twin"),
        }
    }

    async fn diverted(&mut self, (node, data): (NodeId, Data)) {
        match &mut self.relaying {
            Some(Relaying::Hold(_, held)) => held.push((node, data)),
            Some(Relaying::Forward(id)) => {
                let id = *id;
                self.relay(id, node, data).await;
            }
            None => {
                let _ = self.io.router.send(Input::NodeData(node, data)).await;
            }
        }
    }

    async fn on_pups(&mut self, h: Handover) {
        let ours = |id: u64| id == h.switch_id;
        match h.op {
            HandoverOp::Quiesced => {
                if let Some(hd) = self.handing.as_mut().filter(|x| ours(x.sw.switch_id())) {
                    hd.pups_quiet = true;
                }
            }
            HandoverOp::Snapshots => {
                if self.handing.as_ref().is_some_and(|x| ours(x.sw.switch_id())) {
                    self.to_peer(PeerFrame::Snapshots { switch_id: h.switch_id, batch: h.payload }).await;
                }
            }
            HandoverOp::Checkpointed => {
                if !h.detail.is_empty() {
                    warn!(detail = %h.detail, "sessions not checkpointed");
                }
                self.feed_active(ActiveInput::Checkpointed { sessions: h.count }).await;
            }
            HandoverOp::Thawed => {
                info!(switch_id = h.switch_id, sessions = h.count, detail = %h.detail, "pups thawed the sessions");
                self.give_back_held().await;
            }
            HandoverOp::Closed => {
                info!(op = ?h.op, switch_id = h.switch_id, sessions = h.count, "pups");
                // What the banks sent here meanwhile is on its way: the twin may unlock.
                self.send_switch(&PeerMessage::Closed { switch_id: h.switch_id }).await;
            }
            HandoverOp::Serving => {
                info!(op = ?h.op, switch_id = h.switch_id, sessions = h.count, "pups");
            }
            HandoverOp::Locked => {
                if self.taking.as_ref().is_some_and(|t| ours(t.sw.switch_id())) {
                    self.feed_standby(StandbyInput::Locked).await;
                }
            }
            HandoverOp::Restored => {
                let received = self.taking.as_ref().map_or(0, |t| t.received);
                if !h.detail.is_empty() {
                    warn!(detail = %h.detail, "sessions not restored");
                }
                let failed = received.saturating_sub(h.count);
                self.feed_standby(StandbyInput::Restored { restored: h.count, failed }).await;
            }
            HandoverOp::Failed => {
                error!(switch_id = h.switch_id, detail = %h.detail, "pups could not do its part");
                if self.handing.as_ref().is_some_and(|x| ours(x.sw.switch_id())) {
                    self.feed_active(ActiveInput::PupsFailed(h.detail)).await;
                } else if self.taking.as_ref().is_some_and(|t| ours(t.sw.switch_id())) {
                    self.feed_standby(StandbyInput::Failed(h.detail)).await;
                }
            }
            other => warn!(op = ?other, "HANDOVER op pups should not send"),
        }
    }

    async fn on_peer(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Up(id) => {
                self.twin_id = Some(id);
                self.twin_up = true;
                // The twin gets the whole state at once.
                self.replicate().await;
            }
            PeerEvent::Down(_) => {
                self.twin_up = false;
                self.feed_active(ActiveInput::PeerLost).await;
                self.feed_standby(StandbyInput::PeerLost).await;
            }
            PeerEvent::Rtt(rtt) => self.rtt = Some(rtt),
            PeerEvent::Frame(frame) => self.peer_frame(frame).await,
        }
    }

    async fn peer_frame(&mut self, frame: PeerFrame) {
        match frame {
            PeerFrame::State { seq, json } => match serde_json::from_slice::<RouteState>(&json) {
                Ok(state) if self.role == Role::Standby => {
                    let _ = self.io.router.send(Input::ApplyRoutes(state)).await;
                    self.seq = seq;
                    self.to_peer(PeerFrame::StateAck { seq }).await;
                }
                Ok(_) => warn!("the twin sent its state while we are active: ignored"),
                Err(e) => warn!(error = %e, "replicated state does not parse"),
            },
            PeerFrame::StateAck { seq } => {
                self.acked = self.acked.max(seq);
                if self.acked >= self.seq {
                    self.unacked_since = None;
                }
            }
            PeerFrame::Switch { json } => match serde_json::from_slice::<PeerMessage>(&json) {
                Ok(PeerMessage::Prepare { switch_id }) => self.prepare(switch_id).await,
                Ok(m) => {
                    if self.handing.is_some() {
                        self.feed_active(ActiveInput::Peer(m.clone())).await;
                    }
                    if self.taking.is_some() {
                        self.feed_standby(StandbyInput::Peer(m)).await;
                    }
                }
                Err(e) => warn!(error = %e, "switchover message does not parse"),
            },
            PeerFrame::Snapshots { switch_id, batch } => {
                let Some(t) = self.taking.as_mut().filter(|t| t.sw.switch_id() == switch_id) else { return };
                match SnapshotBatch::decode(&batch) {
                    Ok(b) => {
                        t.received += b.sessions.len() as u32;
                        let total = t.received;
                        self.to_pups(switch_id, HandoverOp::Restore, 0, batch).await;
                        self.feed_standby(StandbyInput::Received(total)).await;
                    }
                    Err(e) => self.feed_standby(StandbyInput::Failed(format!("snapshot batch: {e}"))).await,
                }
            }
            PeerFrame::RouterState { switch_id, json } => {
                if let Some(t) = self.taking.as_mut().filter(|t| t.sw.switch_id() == switch_id) {
                    match serde_json::from_slice(&json) {
                        Ok(tables) => t.tables = Some(tables),
                        Err(e) => warn!(error = %e, "in-flight tables from the twin do not parse"),
                    }
                }
            }
            PeerFrame::Relay { node, frame, .. } => {
                let data = match proto::fo_link::decode(frame) {
                    Ok(FoMessage::Data(d)) => d,
                    Ok(other) => return warn!(kind = %other.kind(), "relayed frame is not DATA"),
                    Err(e) => return warn!(error = %e, "relayed frame does not decode"),
                };
                match &mut self.taking {
                    Some(t) if !t.imported => t.relays.push((NodeId(node), data)),
                    _ => {
                        let _ = self.io.router.send(Input::NodeData(NodeId(node), data)).await;
                    }
                }
            }
            other => warn!(?other, "unexpected peer frame"),
        }
    }

    async fn prepare(&mut self, switch_id: u64) {
        let busy = match self.role {
            Role::Standby if self.maintenance => {
                Some("the twin is in maintenance: it takes no sessions over")
            }
            Role::Standby if self.taking.is_none() => None,
            Role::Standby => Some("a takeover is already under way"),
            _ => Some("this appliance is not standby"),
        };
        if let Some(why) = busy {
            warn!(switch_id, why, "PREPARE refused");
            self.send_switch(&PeerMessage::Abort { switch_id, reason: why.to_owned() }).await;
            return;
        }
        info!(switch_id, "the twin hands its sessions over: preparing");
        let sw = StandbySwitch::start(switch_id, self.s.switch, Instant::now());
        self.taking = Some(Taking {
            sw,
            received: 0,
            tables: None,
            links_since: None,
            relays: Vec::new(),
            imported: false,
        });
        // The VIP may already be here (a previous attempt): the machine must know.
        if self.vrrp_state == Some(VrrpState::Master) {
            if let Some(t) = &mut self.taking {
                t.sw.handle(Instant::now(), StandbyInput::VipHere(true));
            }
        }
        self.pump_standby().await;
    }

    async fn vrrp(&mut self, (change, priority): (VrrpChange, u8)) {
        let VrrpChange::State(state) = change else {
            if change == VrrpChange::MasterRxLowerPri {
                warn!("keepalived: the twin also claims the VIP (a partition healed)");
            }
            return;
        };
        info!(%state, priority, "keepalived");
        self.vrrp_state = Some(state);
        self.vrrp_priority = Some(priority);
        let here = state == VrrpState::Master;
        if self.handing.is_some() {
            self.feed_active(ActiveInput::VipHere(here)).await;
            return;
        }
        if self.taking.is_some() {
            self.feed_standby(StandbyInput::VipHere(here)).await;
            return;
        }
        match (self.role, here) {
            (Role::Standby, true) => {
                // No sessions to take over (a fresh pair, or the twin died): serve.
                self.become_active().await;
                self.to_pups(0, HandoverOp::Serve, 0, Bytes::new()).await;
            }
            (Role::Active, false) => {
                // Demoted outside a switchover: fence at once (split brain must not
                // let both serve a session).
                warn!(%state, "lost the VIP outside a switchover: fencing");
                self.become_standby().await;
                self.to_pups(0, HandoverOp::Lock, 0, Bytes::new()).await;
            }
            _ => {}
        }
    }

    async fn replicate(&mut self) {
        if self.role != Role::Active || !self.twin_up {
            return;
        }
        let state = self.io.routes.borrow_and_update().clone();
        match serde_json::to_vec(&state) {
            Ok(json) => {
                self.seq += 1;
                self.unacked_since.get_or_insert_with(Instant::now);
                self.to_peer(PeerFrame::State { seq: self.seq, json: json.into() }).await;
            }
            Err(e) => error!(error = %e, "cannot encode the routes for the twin"),
        }
    }

    async fn timeout(&mut self) {
        let now = Instant::now();
        if let Some(h) = &mut self.handing {
            h.sw.handle_timeout(now);
        }
        self.pump_active().await;
        if let Some(t) = &mut self.taking {
            t.sw.handle_timeout(now);
        }
        self.pump_standby().await;
    }

    async fn poll(&mut self) {
        if self.handing.as_ref().is_some_and(|h| h.pups_quiet) {
            let (tx, rx) = oneshot::channel();
            let _ = self.io.router.send(Input::InflightTotal(tx)).await;
            if rx.await == Ok(0) {
                if let Some(h) = &mut self.handing {
                    h.pups_quiet = false;
                }
                self.feed_active(ActiveInput::Quiesced).await;
            }
        }
        let since = self.taking.as_ref().and_then(|t| t.links_since);
        if let Some(since) = since {
            let up = match crate::http::snapshot(&self.io.router).await {
                Some(s) => s.banks.iter().all(|b| s.nodes.iter().any(|n| n.id == b.active_node && n.up)),
                None => false,
            };
            if up || since.elapsed() >= LINKS_WAIT {
                if !up {
                    warn!("FO links not all up after {LINKS_WAIT:?}: serving anyway");
                }
                if let Some(t) = &mut self.taking {
                    t.links_since = None;
                }
                self.feed_standby(StandbyInput::TookOver).await;
            }
        }
    }
}
