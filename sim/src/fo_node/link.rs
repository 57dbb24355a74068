//! The sockets: the listener, and one reader and one writer task per `mups` link.
//!
//! The reader decodes frames with `proto::fo_link::FoLinkDecoder` and hands each
//! message to the node; the writer drains an unbounded channel of encoded frames,
//! so deciding what to send never waits on a socket. Each link has a cancellation
//! token (a child of the node's): cancelling it, from a rule, the control
//! interface or a failed write, ends both tasks and closes the connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proto::fo_link::{self, FoLinkDecoder, FoLinkError, FoMessage, Heartbeat, PeerRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::node::Shared;

/// Accepts `mups` connections until the node dies.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = shared.token.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.count(|s| s.links_accepted += 1);
                let task = tokio::spawn(serve_link(Arc::clone(&shared), stream, peer));
                shared.track(task);
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    info!(node = %shared.cfg.node_id, "stopped listening");
}

/// Why reading a frame stopped.
enum ReadEnd {
    /// The peer closed the connection.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// A frame did not decode: the stream has lost its framing.
    Decode(FoLinkError),
}

/// Reads the next message, or says why there is none.
async fn read_message(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    decoder: &mut FoLinkDecoder,
) -> Result<FoMessage, ReadEnd> {
    loop {
        if let Some(msg) = decoder.decode(buf).map_err(ReadEnd::Decode)? {
            return Ok(msg);
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(_) => {}
            Err(e) => return Err(ReadEnd::Io(e)),
        }
    }
}

/// Encodes and queues a frame built outside the node's lock (our `HELLO` and heartbeats).
fn queue(tx: &UnboundedSender<Vec<u8>>, msg: &FoMessage) -> bool {
    msg.to_vec().is_ok_and(|frame| tx.send(frame).is_ok())
}

/// One link, from accept to close.
async fn serve_link(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let token = shared.token.child_token();
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut writer = tokio::spawn(write_loop(wr, rx, token.clone()));
    let ours = shared.hello();
    if queue(&tx, &FoMessage::Hello(ours.clone())) {
        shared.count(|s| s.hello_sent += 1);
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut decoder = FoLinkDecoder::new(shared.cfg.max_frame);

    let hello_timeout = Duration::from_millis(shared.cfg.hello_timeout_ms);
    let first = tokio::select! {
        () = token.cancelled() => None,
        r = tokio::time::timeout(hello_timeout, read_message(&mut rd, &mut buf, &mut decoder)) => Some(r),
    };
    let refusal = match first {
        None => Some("node stopping".to_owned()),
        Some(Err(_)) => Some(format!("no HELLO within {} ms", shared.cfg.hello_timeout_ms)),
        Some(Ok(Err(ReadEnd::Eof))) => Some("closed before HELLO".to_owned()),
        Some(Ok(Err(ReadEnd::Io(e)))) => Some(format!("i/o error before HELLO: {e}")),
        Some(Ok(Err(ReadEnd::Decode(e)))) => Some(format!("first frame does not decode: {e}")),
        Some(Ok(Ok(FoMessage::Hello(theirs)))) => {
            shared.count(|s| s.hello_received += 1);
            let version = fo_link::negotiate_version(&ours, &theirs);
            let ranges = format!(
                "ours {}-{}, theirs {}-{}",
                ours.min_version, ours.max_version, theirs.min_version, theirs.max_version
            );
            if theirs.role != PeerRole::Controller {
                Some(format!("peer {:?} says it is a {:?}, not the controller", theirs.node_id, theirs.role))
            } else {
                match version {
                    None => Some(format!("no common protocol version ({ranges})")),
                    Some(v) if v != fo_link::VERSION => {
                        Some(format!("negotiated version {v} is not one this codec speaks ({ranges})"))
                    }
                    Some(v) => {
                        let link =
                            shared.register_link(tx.clone(), token.clone(), peer, theirs.node_id.clone());
                        info!(
                            node = %shared.cfg.node_id, link, %peer, controller = %theirs.node_id,
                            software = %theirs.software, version = v, "link up"
                        );
                        run_link(&shared, link, &mut rd, &mut buf, &mut decoder, &tx, &token).await;
                        shared.unregister_link(link);
                        info!(node = %shared.cfg.node_id, link, %peer, "link down");
                        None
                    }
                }
            }
        }
        Some(Ok(Ok(other))) => Some(format!("first message is {}, not HELLO", other.kind())),
    };
    if let Some(reason) = refusal {
        shared.count(|s| s.handshake_failures += 1);
        warn!(node = %shared.cfg.node_id, %peer, %reason, "handshake failed; closing");
        // Let our HELLO reach the peer first (its version range is in it), but do not
        // wait on a peer that does not read.
        drop(tx);
        if tokio::time::timeout(Duration::from_secs(1), &mut writer).await.is_ok() {
            return;
        }
    }
    token.cancel();
    let _ = writer.await;
}

/// The established link: heartbeats out if configured, messages in until the end.
async fn run_link(
    shared: &Arc<Shared>,
    link: u64,
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    decoder: &mut FoLinkDecoder,
    tx: &UnboundedSender<Vec<u8>>,
    token: &CancellationToken,
) {
    if let Some(ms) = shared.cfg.heartbeat_interval_ms.filter(|ms| *ms > 0) {
        tokio::spawn(heartbeat_loop(
            Arc::clone(shared),
            tx.clone(),
            token.clone(),
            Duration::from_millis(ms),
        ));
    }
    let silence = shared.cfg.controller_timeout_ms.map(Duration::from_millis);
    loop {
        let read = async {
            match silence {
                Some(limit) => tokio::time::timeout(limit, read_message(rd, buf, decoder)).await.ok(),
                None => Some(read_message(rd, buf, decoder).await),
            }
        };
        let next = tokio::select! {
            biased;
            () = token.cancelled() => return,
            r = read => r,
        };
        match next {
            Some(Ok(msg)) => shared.on_message(link, msg),
            Some(Err(ReadEnd::Eof)) => return,
            Some(Err(ReadEnd::Io(e))) => {
                warn!(link, error = %e, "link read failed");
                return;
            }
            Some(Err(ReadEnd::Decode(e))) => {
                shared.count(|s| s.decode_errors += 1);
                warn!(link, error = %e, "undecodable frame; closing the link");
                return;
            }
            None => {
                shared.count(|s| s.controller_timeouts += 1);
                warn!(link, "nothing received from mups for controller_timeout_ms; closing the link");
                return;
            }
        }
    }
}

/// Our own heartbeats on one link.
async fn heartbeat_loop(
    shared: Arc<Shared>,
    tx: UnboundedSender<Vec<u8>>,
    token: CancellationToken,
    every: Duration,
) {
    let mut ticks = tokio::time::interval_at(super::node::later(Instant::now(), every).into(), every);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        seq += 1;
        let hb = FoMessage::Heartbeat(Heartbeat { seq, sent_at_micros: shared.monotonic_micros() });
        if !queue(&tx, &hb) {
            return;
        }
        shared.count(|s| s.heartbeats_sent += 1);
    }
}

/// Writes queued frames until the link is cancelled or the channel closes. Frames
/// already queued go out together in one write (one syscall for many responses
/// under load, instead of one each).
async fn write_loop(mut wr: OwnedWriteHalf, mut rx: UnboundedReceiver<Vec<u8>>, token: CancellationToken) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        let frame = tokio::select! {
            biased;
            () = token.cancelled() => break,
            f = rx.recv() => f,
        };
        let Some(frame) = frame else { break };
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < 256 * 1024 {
            let Ok(more) = rx.try_recv() else { break };
            batch.extend_from_slice(&more);
        }
        let written = tokio::select! {
            () = token.cancelled() => break,
            r = wr.write_all(&batch) => r,
        };
        if written.is_err() {
            token.cancel();
            break;
        }
    }
}
