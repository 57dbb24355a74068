//! Starts everything `mups` runs: the router driver, a link per FO node, the
//! local link to `pups`, and the management HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto::config::ApplianceConfig;
use proto::router::{NodeId, Router};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::info;

use crate::appliance::{self, ApplianceIo, ApplianceSettings};
use crate::driver::{self, DriverConfig, Outputs};
use crate::http;
use crate::link::{Backoff, LinkSettings};
use crate::local_link::{self, LocalLinkConfig};
use crate::metrics::Metrics;
use crate::node_link::{self, NodeLinkConfig};
use crate::peer::{self, PeerConfig};
use crate::persist;

/// Queue sizes between tasks: large enough for bursts at line rate, bounded so a
/// stuck peer shows as back-pressure and counted overflows, not memory growth.
const QUEUE: usize = 65_536;

/// Events kept for slow event-stream readers; one that falls further behind is
/// told how many it missed (and can re-read the job), the driver never waits.
const EVENTS: usize = 16_384;

/// `mups` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The peer link listener could not be bound.
    #[error(transparent)]
    Peer(#[from] peer::PeerListenError),
    /// The management listener could not be bound.
    #[error("management listener {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Access control or TLS could not be set up.
    #[error(transparent)]
    Http(#[from] http::HttpError),
}

/// A running `mups`.
pub struct Mups {
    /// Where the management HTTP server listens.
    pub http_addr: SocketAddr,
    /// The router's input (tests ask it for snapshots).
    pub router: mpsc::Sender<Input>,
    /// The management application, for in-process requests (tests).
    pub app: axum::Router,
    /// Access control (tests create users through it).
    pub auth: crate::auth::Auth,
    /// The management listener speaks HTTPS.
    pub tls: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub use crate::driver::Input;

impl Mups {
    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts `mups` with a validated configuration. `http_listen` overrides the
/// configured management address (tests pass port 0).
pub async fn start(cfg: Arc<ApplianceConfig>, http_listen: Option<SocketAddr>) -> Result<Mups, StartError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Metrics::new();
    let (router_tx, router_rx) = mpsc::channel(QUEUE);
    let (pups_tx, pups_rx) = mpsc::channel(QUEUE);
    let mut tasks = Vec::new();
    let m = &cfg.mups;
    let backoff =
        Backoff::new(Duration::from_millis(m.reconnect_min_ms), Duration::from_millis(m.reconnect_max_ms));
    let pair = cfg.vrrp.is_some();
    // A standby appliance keeps its FO links down (see `appliance`).
    let (nodes_enabled, nodes_enabled_rx) = watch::channel(!pair);
    let mut node_txs = Vec::new();
    for (i, node) in cfg.fo_nodes.iter().enumerate() {
        let (tx, rx) = mpsc::channel(QUEUE);
        node_txs.push(tx);
        let link = NodeLinkConfig {
            node: NodeId(i as u16),
            name: node.id.clone(),
            address: node.address,
            link: LinkSettings {
                appliance: cfg.appliance.id.clone(),
                heartbeat_interval: Duration::from_millis(m.node_heartbeat_interval_ms),
                heartbeat_misses: m.node_heartbeat_misses,
                connect_timeout: Duration::from_millis(m.node_connect_timeout_ms),
                backoff,
            },
        };
        tasks.push(tokio::spawn(node_link::run(
            link,
            rx,
            router_tx.clone(),
            nodes_enabled_rx.clone(),
            shutdown_rx.clone(),
        )));
    }
    let local = LocalLinkConfig {
        path: cfg.appliance.local_link.clone(),
        link: LinkSettings {
            appliance: cfg.appliance.id.clone(),
            heartbeat_interval: Duration::from_millis(cfg.pups.heartbeat_interval_ms),
            heartbeat_misses: cfg.pups.heartbeat_misses,
            connect_timeout: Duration::from_millis(m.node_connect_timeout_ms),
            backoff,
        },
    };
    let (handover_tx, handover_rx) = mpsc::channel(1024);
    tasks.push(tokio::spawn(local_link::run(
        local,
        pups_rx,
        router_tx.clone(),
        handover_tx,
        shutdown_rx.clone(),
    )));
    let router = Router::new(cfg.router_config());
    let outputs = Outputs { pups: pups_tx.clone(), nodes: node_txs };
    let (events, _) = broadcast::channel(EVENTS);
    let restored = m.state_dir.as_deref().and_then(persist::load_or_set_aside);
    let (routes, routes_rx) = watch::channel(restored.clone().unwrap_or_default());
    if let Some(dir) = &m.state_dir {
        // Not stopped by `shutdown`: it ends when the driver drops the sender,
        // after writing the driver's last state.
        tasks.push(tokio::spawn(persist::run_writer(dir.clone(), routes_rx.clone())));
    }
    let driver_cfg = DriverConfig {
        switch: proto::switchover::SwitchConfig {
            command_timeout: Duration::from_millis(m.switch_command_timeout_ms),
            drain_timeout: Duration::from_millis(m.drain_timeout_ms),
        },
        auto_failover: m.auto_failover,
        auto_failback: m.auto_failback,
        flap: cfg.flap_policy(),
        bank_names: cfg.banks.iter().map(|b| b.name.clone()).collect(),
        restored,
        routes,
        active: !pair,
        events: events.clone(),
    };
    tasks.push(tokio::spawn(driver::run(
        router,
        driver_cfg,
        router_rx,
        outputs,
        metrics.clone(),
        shutdown_rx.clone(),
    )));

    let (peer_out, peer_events) = match (cfg.appliance.peer_listen, cfg.appliance.peer_address) {
        (Some(listen), Some(twin)) => {
            let (out_tx, out_rx) = mpsc::channel(QUEUE);
            let (ev_tx, ev_rx) = mpsc::channel(QUEUE);
            let peer_cfg = PeerConfig {
                appliance_id: cfg.appliance.id.clone(),
                listen,
                twin,
                heartbeat: Duration::from_millis(100),
                misses: 5,
            };
            tasks.push(peer::start(peer_cfg, out_rx, ev_tx, shutdown_rx.clone()).await?);
            (Some(out_tx), Some(ev_rx))
        }
        _ => (None, None),
    };
    let (appliance_tx, appliance_rx) = mpsc::channel(64);
    let settings = ApplianceSettings {
        appliance_id: cfg.appliance.id.clone(),
        vrrp: cfg.vrrp.clone(),
        has_peer: peer_out.is_some(),
        switch: proto::appliance_switch::ApplianceSwitchConfig::default(),
    };
    let io = ApplianceIo {
        router: router_tx.clone(),
        pups: pups_tx.clone(),
        handovers: handover_rx,
        nodes_enabled,
        routes: routes_rx,
        peer_out,
        peer_events,
        commands: appliance_rx,
    };
    tasks.push(tokio::spawn(appliance::run(settings, io, shutdown_rx.clone())));

    let addr = http_listen.unwrap_or(m.http_listen);
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let parts = http::Parts {
        metrics,
        router: router_tx.clone(),
        events,
        shutdown: shutdown_rx.clone(),
        appliance: appliance_tx,
    };
    let server = http::Server::new(m, parts)?;
    let (app, auth, tls) = (server.app.clone(), server.auth.clone(), server.is_tls());
    tasks.push(tokio::spawn(server.serve(listener, shutdown_rx.clone())));
    info!(%http_addr, tls, nodes = cfg.fo_nodes.len(), banks = cfg.banks.len(), "mups started");
    Ok(Mups { http_addr, router: router_tx, app, auth, tls, shutdown, tasks })
}

/// Runs `mups` until `shutdown` completes.
pub async fn run(cfg: Arc<ApplianceConfig>, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let mups = start(cfg, None).await?;
    shutdown.await;
    info!("mups stopping");
    mups.stop().await;
    Ok(())
}
