//! The link to one FO node: connect, HELLO, heartbeats, DATA both ways, reconnect
//! with backoff. A node is up from its HELLO until its heartbeats go unanswered
//! `misses` times in a row (default 3 × 100 ms) or the connection fails.

use std::time::Duration;

use proto::fo_link::{FoMessage, PeerRole};
use proto::router::NodeId;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::driver::Input;
use crate::link::{self, Backoff, HeartbeatClock, LinkError, LinkSettings, Outbox};

/// Most messages written in one go.
const MAX_BATCH: usize = 256;

/// How long a link closed because this appliance became standby goes on reading
/// what the node had already sent (see `close_for_standby`).
const STANDBY_LINGER: Duration = Duration::from_secs(2);

/// Settings of one node link.
#[derive(Debug, Clone)]
pub struct NodeLinkConfig {
    /// Router index of the node.
    pub node: NodeId,
    /// Node id (`A`).
    pub name: String,
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// HELLO name, heartbeats, timeouts, backoff.
    pub link: LinkSettings,
}

/// Runs the link until shutdown. Messages for the node arrive on `outbound`; what the
/// node sends goes to the router as [`Input`]s. The link is kept only while
/// `enabled` is true (a standby appliance does not talk to the nodes).
pub async fn run(
    cfg: NodeLinkConfig,
    mut outbound: mpsc::Receiver<FoMessage>,
    to_router: mpsc::Sender<Input>,
    mut enabled: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("node", node = %cfg.name, address = %cfg.address);
    async move {
        let mut backoff = cfg.link.backoff;
        let mut outbox = Outbox::default();
        loop {
            if !*enabled.borrow_and_update() {
                // Standby: what was queued for the nodes is not ours to send any more.
                outbox.reset();
                while outbound.try_recv().is_ok() {}
                tokio::select! {
                    r = enabled.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            let result = tokio::select! {
                r = serve(&cfg, &mut outbound, &mut outbox, &to_router, &mut backoff, &mut enabled) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = &result {
                warn!(error = %e, queued = outbox.len(), "link to node lost");
            }
            let _ = to_router.send(Input::NodeDown(cfg.node)).await;
            outbox.reset();
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(
    cfg: &NodeLinkConfig,
    outbound: &mut mpsc::Receiver<FoMessage>,
    outbox: &mut Outbox,
    to_router: &mpsc::Sender<Input>,
    backoff: &mut Backoff,
    enabled: &mut watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let standby = || LinkError::Rules("standby: link closed".into());
    let connect = async {
        let stream = tokio::time::timeout(cfg.link.connect_timeout, TcpStream::connect(cfg.address))
            .await
            .map_err(|_| LinkError::Timeout("connecting"))??;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        let mut r = link::reader(r);
        let theirs = link::hello(
            &mut r,
            &mut w,
            &link::our_hello(&cfg.link.appliance),
            PeerRole::Node,
            cfg.link.connect_timeout,
        )
        .await?;
        Ok::<_, LinkError>((r, w, theirs))
    };
    // Before the node has said HELLO it has sent nothing of its own: just go.
    let (mut r, mut w, theirs) = tokio::select! {
        c = connect => c?,
        () = until_standby(enabled) => return Err(standby()),
    };
    info!(peer = %theirs.node_id, software = %theirs.software, "node link up");
    backoff.reset();
    let _ = to_router.send(Input::NodeUp(cfg.node)).await;
    // DATA queued while the link was down goes first, in order.
    outbox.flush(&mut w).await?;

    let mut ticker = HeartbeatClock::ticker(cfg.link.heartbeat_interval);
    let mut heartbeats = HeartbeatClock::new(cfg.link.heartbeat_misses);
    loop {
        tokio::select! {
            msg = link::next(&mut r) => match msg? {
                FoMessage::Data(data) => {
                    let _ = to_router.send(Input::NodeData(cfg.node, data)).await;
                }
                FoMessage::HeartbeatAck(ack) => {
                    heartbeats.acked();
                    let rtt = Duration::from_micros(link::micros_since_start().saturating_sub(ack.sent_at_micros));
                    let _ = to_router.send(Input::NodeRtt(cfg.node, rtt)).await;
                }
                FoMessage::Heartbeat(hb) => {
                    send_now(&mut w, FoMessage::HeartbeatAck(hb.ack())).await?;
                }
                other if other.kind().is_local_link_only() => {
                    return Err(LinkError::Rules(format!("{} is not valid on an FO link", other.kind())));
                }
                msg @ (FoMessage::Ack(_) | FoMessage::Nack(_) | FoMessage::Context(_) | FoMessage::SyncEnd(_)) => {
                    let _ = to_router.send(Input::NodeControl(cfg.node, msg)).await;
                }
                other => debug!(kind = %other.kind(), "message a node does not send to mups: ignored"),
            },
            Some(data) = outbound.recv() => {
                outbox.push(data)?;
                // Batch what is already waiting: one write for many messages under load.
                while outbox.len() < MAX_BATCH {
                    let Ok(more) = outbound.try_recv() else { break };
                    outbox.push(more)?;
                }
                outbox.flush(&mut w).await?;
            }
            _ = ticker.tick() => {
                send_now(&mut w, FoMessage::Heartbeat(heartbeats.tick()?)).await?;
            }
            () = until_standby(enabled) => {
                close_for_standby(cfg, &mut r, &mut w, to_router).await;
                return Err(standby());
            }
        }
    }
}

/// Resolves once this appliance is standby (or the flag's sender is gone).
async fn until_standby(enabled: &mut watch::Receiver<bool>) {
    let _ = enabled.wait_for(|on| !on).await;
}

/// This appliance became standby: the new active has (or is opening) its own link
/// to the node. Closing at once would throw away whatever the node had already
/// sent on this link — an FO-originated request among it — and answer it with an
/// RST. Instead: a FIN, so the node sends no more here, then read until the node
/// closes its side (or `STANDBY_LINGER`); its DATA goes to the router, which
/// relays it to the new active during a switchover.
async fn close_for_standby(
    cfg: &NodeLinkConfig,
    r: &mut link::FoReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    to_router: &mpsc::Sender<Input>,
) {
    use tokio::io::AsyncWriteExt;
    let _ = w.shutdown().await;
    let linger = tokio::time::sleep(STANDBY_LINGER);
    tokio::pin!(linger);
    let mut relayed = 0u32;
    loop {
        tokio::select! {
            msg = link::next(r) => match msg {
                Ok(FoMessage::Data(data)) => {
                    relayed += 1;
                    let _ = to_router.send(Input::NodeData(cfg.node, data)).await;
                }
                Ok(_) => {}
                Err(_) => break,
            },
            () = &mut linger => {
                warn!(after = ?STANDBY_LINGER, "the node did not close its side of the link: closing it");
                break;
            }
        }
    }
    if relayed > 0 {
        info!(messages = relayed, "DATA the node sent as the link closed: passed on");
    }
}

async fn send_now<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, msg: FoMessage) -> Result<(), LinkError> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&msg.to_vec()?).await?;
    Ok(())
}
