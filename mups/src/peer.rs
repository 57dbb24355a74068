//! The peer link to the twin appliance's `mups` (frames: `proto::peer_link`).
//!
//! Both appliances listen on `[appliance] peer_listen`; the one whose listen
//! address sorts lower dials the other's `peer_address`, the other accepts, so
//! there is one connection and no race between two. After HELLO both ways,
//! heartbeats run every [`PeerConfig::heartbeat`]; `misses` unanswered in a row,
//! or any read or write error, and the link is down (reported once), then
//! re-established with backoff.
//!
//! Frames to send while the link is down are dropped: the appliance task re-sends
//! the replicated state when the link comes back, and a switchover treats a lost
//! link as an abort.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use proto::peer_link::{PeerFrame, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

/// Settings of the peer link.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// This appliance's id (HELLO).
    pub appliance_id: String,
    /// Where we listen.
    pub listen: SocketAddr,
    /// Where the twin listens.
    pub twin: SocketAddr,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Unanswered heartbeats before the link is down.
    pub misses: u32,
}

/// What the link tells the appliance task.
#[derive(Debug)]
pub enum PeerEvent {
    /// Connected; the twin's id.
    Up(String),
    /// Lost, and why.
    Down(String),
    /// A frame other than HELLO and heartbeats.
    Frame(PeerFrame),
    /// A heartbeat round trip.
    Rtt(Duration),
}

/// The peer link could not be set up at all.
#[derive(Debug, thiserror::Error)]
#[error("peer link listener {addr}: {source}")]
pub struct PeerListenError {
    /// Address.
    pub addr: SocketAddr,
    /// Cause.
    pub source: std::io::Error,
}

fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Binds the listener (so a bad address fails at start) and runs the link until shutdown.
pub async fn start(
    cfg: PeerConfig,
    outbound: mpsc::Receiver<PeerFrame>,
    events: mpsc::Sender<PeerEvent>,
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, PeerListenError> {
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|source| PeerListenError { addr: cfg.listen, source })?;
    let span = info_span!("peer", twin = %cfg.twin);
    Ok(tokio::spawn(run(cfg, listener, outbound, events, shutdown).instrument(span)))
}

async fn run(
    cfg: PeerConfig,
    listener: TcpListener,
    mut outbound: mpsc::Receiver<PeerFrame>,
    events: mpsc::Sender<PeerEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let dial = cfg.listen < cfg.twin;
    let mut delay = Duration::from_millis(50);
    loop {
        let stream = tokio::select! {
            s = connect(&cfg, &listener, dial) => s,
            _ = shutdown.changed() => return,
            // Nothing to send to while down: keep the queue from filling up.
            Some(_) = outbound.recv() => continue,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "peer link not up yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        delay = Duration::from_millis(50);
        let reason = tokio::select! {
            r = serve(&cfg, stream, &mut outbound, &events) => r,
            _ = shutdown.changed() => return,
        };
        warn!(reason = %reason, "peer link lost");
        let _ = events.send(PeerEvent::Down(reason)).await;
    }
}

async fn connect(cfg: &PeerConfig, listener: &TcpListener, dial: bool) -> std::io::Result<TcpStream> {
    let stream = if dial {
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(cfg.twin))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??
    } else {
        let (s, from) = listener.accept().await?;
        debug!(%from, "peer connected");
        s
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn serve(
    cfg: &PeerConfig,
    stream: TcpStream,
    outbound: &mut mpsc::Receiver<PeerFrame>,
    events: &mpsc::Sender<PeerEvent>,
) -> String {
    let (mut rd, mut wr) = stream.into_split();
    let hello = PeerFrame::Hello { appliance_id: cfg.appliance_id.clone(), version: VERSION };
    if let Err(e) = wr.write_all(&hello.to_bytes()).await {
        return format!("writing HELLO: {e}");
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let twin = match tokio::time::timeout(Duration::from_secs(2), read_frame(&mut rd, &mut buf)).await {
        Ok(Ok(PeerFrame::Hello { appliance_id, version })) if version == VERSION => appliance_id,
        Ok(Ok(PeerFrame::Hello { version, .. })) => {
            return format!("twin speaks peer link version {version}");
        }
        Ok(Ok(other)) => return format!("expected HELLO, got {other:?}"),
        Ok(Err(e)) => return e,
        Err(_) => return "no HELLO from the twin".into(),
    };
    info!(twin = %twin, "peer link up");
    let _ = events.send(PeerEvent::Up(twin)).await;
    let mut ticker = tokio::time::interval(cfg.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let mut unanswered = 0u32;
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            frame = read_frame(&mut rd, &mut buf) => match frame {
                Ok(PeerFrame::Heartbeat { seq, sent_micros }) => {
                    out.clear();
                    PeerFrame::HeartbeatAck { seq, sent_micros }.encode(&mut out);
                    if let Err(e) = wr.write_all(&out).await {
                        return format!("write: {e}");
                    }
                }
                Ok(PeerFrame::HeartbeatAck { sent_micros, .. }) => {
                    unanswered = 0;
                    let rtt = Duration::from_micros(now_micros().saturating_sub(sent_micros));
                    let _ = events.try_send(PeerEvent::Rtt(rtt));
                }
                Ok(PeerFrame::Hello { .. }) => return "second HELLO".into(),
                Ok(frame) => {
                    let _ = events.send(PeerEvent::Frame(frame)).await;
                }
                Err(e) => return e,
            },
            Some(first) = outbound.recv() => {
                out.clear();
                first.encode(&mut out);
                // Take what is queued too: one write for a burst of snapshot batches.
                while out.len() < 4 * 1024 * 1024 {
                    let Ok(next) = outbound.try_recv() else { break };
                    next.encode(&mut out);
                }
                if let Err(e) = wr.write_all(&out).await {
                    return format!("write: {e}");
                }
            }
            _ = ticker.tick() => {
                if unanswered >= cfg.misses {
                    return format!("{unanswered} heartbeats unanswered");
                }
                unanswered += 1;
                seq += 1;
                out.clear();
                PeerFrame::Heartbeat { seq, sent_micros: now_micros() }.encode(&mut out);
                if let Err(e) = wr.write_all(&out).await {
                    return format!("write: {e}");
                }
            }
        }
    }
}

/// Reads until one whole frame is buffered. Cancel-safe: bytes read stay in `buf`.
async fn read_frame(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<PeerFrame, String> {
    loop {
        match PeerFrame::decode(buf) {
            Ok(Some(frame)) => return Ok(frame),
            Ok(None) => {}
            Err(e) => return Err(format!("bad frame from the twin: {e}")),
        }
        buf.reserve(64 * 1024);
        match rd.read_buf(buf).await {
            Ok(0) => return Err("the twin closed the link".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addr() -> SocketAddr {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[tokio::test]
    async fn two_ends_connect_exchange_frames_and_see_a_loss() {
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let cfg = |me: &str, listen, twin| PeerConfig {
            appliance_id: me.into(),
            listen,
            twin,
            heartbeat: Duration::from_millis(20),
            misses: 3,
        };
        let (stop_tx, stop) = watch::channel(false);
        let (a_out, a_rx) = mpsc::channel(16);
        let (a_ev_tx, mut a_ev) = mpsc::channel(64);
        let a = start(cfg("app-a", a_addr, b_addr), a_rx, a_ev_tx, stop.clone()).await.unwrap();
        let (_b_out, b_rx) = mpsc::channel(16);
        let (b_ev_tx, mut b_ev) = mpsc::channel(64);
        let (b_stop_tx, b_stop) = watch::channel(false);
        let b = start(cfg("app-b", b_addr, a_addr), b_rx, b_ev_tx, b_stop).await.unwrap();

        let up = |ev: Option<PeerEvent>| match ev {
            Some(PeerEvent::Up(id)) => id,
            other => panic!("expected Up, got {other:?}"),
        };
        assert_eq!(up(a_ev.recv().await), "app-b");
        assert_eq!(up(b_ev.recv().await), "app-a");
        a_out.send(PeerFrame::StateAck { seq: 42 }).await.unwrap();
        loop {
            match b_ev.recv().await {
                Some(PeerEvent::Frame(f)) => {
                    assert_eq!(f, PeerFrame::StateAck { seq: 42 });
                    break;
                }
                Some(PeerEvent::Rtt(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        // The twin goes away: A notices.
        b_stop_tx.send(true).unwrap();
        b.await.unwrap();
        loop {
            match a_ev.recv().await {
                Some(PeerEvent::Down(_)) => break,
                Some(PeerEvent::Rtt(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        stop_tx.send(true).unwrap();
        a.await.unwrap();
    }
}
