//! The local link to `pups`, from `mups`'s side: two Unix-socket connections
//! (control and data; see `docs/fo-link-protocol.md`, "Local link"), attached
//! together, heartbeats on control, reattached with backoff when lost. Bank
//! sessions live in `pups`; losing this link never closes one.

use std::path::PathBuf;

use proto::fo_link::{
    Channel, CloseSession, Data, FoMessage, Handover, LinkChannel, PeerRole, SessionPause, SessionResume,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::driver::Input;
use crate::link::{self, Backoff, HeartbeatClock, LinkError, LinkSettings, Outbox};

/// Most messages written in one go.
const MAX_BATCH: usize = 256;

/// Something for `pups`.
#[derive(Debug, Clone)]
pub enum ToPups {
    /// A message for a bank session (data channel).
    Data(Data),
    /// Close a session (control channel).
    Close(CloseSession),
    /// Stop reading a session (control channel).
    Pause(SessionPause),
    /// Read a session again (control channel).
    Resume(SessionResume),
    /// A step of an appliance switchover (control channel).
    Handover(Handover),
}

/// Settings of the local link.
#[derive(Debug, Clone)]
pub struct LocalLinkConfig {
    /// `pups`'s socket.
    pub path: PathBuf,
    /// HELLO name, heartbeats, timeouts, backoff.
    pub link: LinkSettings,
}

/// Runs the link until shutdown.
pub async fn run(
    cfg: LocalLinkConfig,
    mut outbound: mpsc::Receiver<ToPups>,
    to_router: mpsc::Sender<Input>,
    handovers: mpsc::Sender<Handover>,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("pups_link", path = %cfg.path.display());
    async move {
        let mut backoff = cfg.link.backoff;
        let mut data_out: Outbox = Outbox::default();
        let mut control_out: Outbox = Outbox::default();
        let mut was_attached = false;
        loop {
            let result = tokio::select! {
                r = serve(&cfg, &mut outbound, &mut data_out, &mut control_out, &to_router, &handovers,
                          &mut backoff, &mut was_attached) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = &result {
                if was_attached {
                    warn!(error = %e, queued = data_out.len(), "local link to pups lost; reattaching");
                } else {
                    tracing::debug!(error = %e, "pups not reachable yet");
                }
            }
            if was_attached {
                let _ = to_router.send(Input::PupsDetached).await;
                was_attached = false;
            }
            data_out.reset();
            // Pauses and closes are not replayed: pups forgets pauses when the link drops
            // (the protocol says so), and a close for a session is re-decided by the router.
            control_out = Outbox::default();
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

async fn connect(
    cfg: &LocalLinkConfig,
    channel: LinkChannel,
) -> Result<(link::FoReader<tokio::net::unix::OwnedReadHalf>, tokio::net::unix::OwnedWriteHalf), LinkError> {
    let stream = tokio::time::timeout(cfg.link.connect_timeout, UnixStream::connect(&cfg.path))
        .await
        .map_err(|_| LinkError::Timeout("connecting"))??;
    let (r, mut w) = stream.into_split();
    let mut r = link::reader(r);
    link::hello(
        &mut r,
        &mut w,
        &link::our_hello(&cfg.link.appliance),
        PeerRole::Edge,
        cfg.link.connect_timeout,
    )
    .await?;
    w.write_all(&FoMessage::Channel(Channel { channel }).to_vec()?).await?;
    Ok((r, w))
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    cfg: &LocalLinkConfig,
    outbound: &mut mpsc::Receiver<ToPups>,
    data_out: &mut Outbox,
    control_out: &mut Outbox,
    to_router: &mpsc::Sender<Input>,
    handovers: &mpsc::Sender<Handover>,
    backoff: &mut Backoff,
    attached: &mut bool,
) -> Result<(), LinkError> {
    let (mut control_r, mut control_w) = connect(cfg, LinkChannel::Control).await?;
    let (mut data_r, mut data_w) = connect(cfg, LinkChannel::Data).await?;
    info!("attached to pups");
    backoff.reset();
    *attached = true;
    let _ = to_router.send(Input::PupsAttached).await;
    data_out.flush(&mut data_w).await?;

    let mut ticker = HeartbeatClock::ticker(cfg.link.heartbeat_interval);
    let mut heartbeats = HeartbeatClock::new(cfg.link.heartbeat_misses);
    loop {
        tokio::select! {
            msg = link::next(&mut control_r) => match msg? {
                FoMessage::SessionUp(up) => { let _ = to_router.send(Input::SessionUp(up)).await; }
                FoMessage::SessionDown(down) => { let _ = to_router.send(Input::SessionDown(down)).await; }
                FoMessage::InventoryEnd(end) => { let _ = to_router.send(Input::InventoryEnd(end)).await; }
                FoMessage::Heartbeat(hb) => {
                    control_out.push(FoMessage::HeartbeatAck(hb.ack()))?;
                    control_out.flush(&mut control_w).await?;
                }
                FoMessage::HeartbeatAck(_) => heartbeats.acked(),
                FoMessage::Handover(h) => { let _ = handovers.send(h).await; }
                other => return Err(LinkError::Rules(format!("{} is not valid on the control channel", other.kind()))),
            },
            msg = link::next(&mut data_r) => match msg? {
                FoMessage::Data(data) => { let _ = to_router.send(Input::BankData(data)).await; }
                // On the data channel, a HANDOVER reply (QUIESCED) comes after every
                // DATA read before it: the router has them when the reply arrives.
                FoMessage::Handover(h) => { let _ = handovers.send(h).await; }
                other => return Err(LinkError::Rules(format!("{} is not valid on the data channel", other.kind()))),
            },
            Some(first) = outbound.recv() => {
                let mut item = Some(first);
                let mut n = 0;
                while let Some(next) = item.take() {
                    match next {
                        ToPups::Data(d) => data_out.push(d)?,
                        ToPups::Close(c) => control_out.push(FoMessage::CloseSession(c))?,
                        ToPups::Pause(p) => control_out.push(FoMessage::SessionPause(p))?,
                        ToPups::Resume(r) => control_out.push(FoMessage::SessionResume(r))?,
                        ToPups::Handover(h) => control_out.push(FoMessage::Handover(h))?,
                    }
                    n += 1;
                    if n < MAX_BATCH {
                        item = outbound.try_recv().ok();
                    }
                }
                data_out.flush(&mut data_w).await?;
                control_out.flush(&mut control_w).await?;
            }
            _ = ticker.tick() => {
                control_out.push(FoMessage::Heartbeat(heartbeats.tick()?))?;
                control_out.flush(&mut control_w).await?;
            }
        }
    }
}
