//! What both of `mups`'s links (to FO nodes, to `pups`) share: the FO link wire
//! format over a tokio stream, the HELLO exchange, and a batching writer that
//! knows exactly which messages reached the socket when a write fails.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use proto::fo_link::{self, FoLinkDecoder, FoLinkError, FoMessage, Hello, PeerRole};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, FramedRead};

/// Errors of one connection; the link task logs them and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not the FO link protocol; the link closes.
    #[error("protocol: {0}")]
    Protocol(#[from] FoLinkError),
    /// The peer broke the protocol's rules.
    #[error("{0}")]
    Rules(String),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// Connecting or the HELLO exchange took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Too many heartbeats went unanswered.
    #[error("{0} heartbeats unanswered")]
    HeartbeatLost(u32),
}

/// The FO link protocol as a tokio decoder.
#[derive(Debug)]
pub struct FoCodec(pub FoLinkDecoder);

impl Decoder for FoCodec {
    type Item = FoMessage;
    type Error = LinkError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FoMessage>, LinkError> {
        Ok(self.0.decode(src)?)
    }
}

/// A framed reader of FO link messages.
pub type FoReader<R> = FramedRead<R, FoCodec>;

/// Wraps a read half.
pub fn reader<R: AsyncRead>(r: R) -> FoReader<R> {
    FramedRead::with_capacity(r, FoCodec(FoLinkDecoder::new(fo_link::DEFAULT_MAX_FRAME)), 64 * 1024)
}

/// The next message, or why there is none.
pub async fn next<R: AsyncRead + Unpin>(r: &mut FoReader<R>) -> Result<FoMessage, LinkError> {
    r.next().await.unwrap_or(Err(LinkError::Closed))
}

/// Our HELLO.
pub fn our_hello(name: &str) -> Hello {
    Hello {
        node_id: name.to_owned(),
        role: PeerRole::Controller,
        min_version: fo_link::MIN_VERSION,
        max_version: fo_link::MAX_VERSION,
        software: concat!("mups ", env!("CARGO_PKG_VERSION")).to_owned(),
    }
}

/// Sends our HELLO and waits for the peer's; checks its role and the version.
pub async fn hello<R, W>(
    r: &mut FoReader<R>,
    w: &mut W,
    ours: &Hello,
    expect: PeerRole,
    within: Duration,
) -> Result<Hello, LinkError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    w.write_all(&FoMessage::Hello(ours.clone()).to_vec()?).await?;
    let theirs = match tokio::time::timeout(within, next(r)).await {
        Err(_) => return Err(LinkError::Timeout("waiting for HELLO")),
        Ok(Ok(FoMessage::Hello(h))) => h,
        Ok(Ok(other)) => return Err(LinkError::Rules(format!("expected HELLO, got {}", other.kind()))),
        Ok(Err(e)) => return Err(e),
    };
    if theirs.role != expect {
        return Err(LinkError::Rules(format!("peer is {:?}, expected {:?}", theirs.role, expect)));
    }
    if fo_link::negotiate_version(ours, &theirs).is_none() {
        return Err(LinkError::Rules(format!(
            "no common protocol version (ours {}-{}, theirs {}-{})",
            ours.min_version, ours.max_version, theirs.min_version, theirs.max_version
        )));
    }
    Ok(theirs)
}

/// Messages waiting to be written, encoded into one buffer. When a write fails, the
/// messages not yet wholly written stay queued for the next connection: nothing is
/// lost, and nothing that reached the socket is sent twice.
#[derive(Debug)]
pub struct Outbox<T> {
    buf: BytesMut,
    /// Each queued item with the offset in `buf` where its bytes end.
    items: VecDeque<(usize, T)>,
    written: usize,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self { buf: BytesMut::new(), items: VecDeque::new(), written: 0 }
    }
}

impl<T: Clone + Into<FoMessage>> Outbox<T> {
    /// Queues an item.
    pub fn push(&mut self, item: T) -> Result<(), FoLinkError> {
        let mut bytes = Vec::new();
        item.clone().into().encode(&mut bytes)?;
        self.buf.extend_from_slice(&bytes);
        self.items.push_back((self.written + self.buf.len(), item));
        Ok(())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Writes everything queued. On error, the items not wholly written are kept.
    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        while !self.buf.is_empty() {
            match w.write_buf(&mut self.buf).await {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    while self.items.front().is_some_and(|(end, _)| *end <= self.written) {
                        self.items.pop_front();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        w.flush().await
    }

    /// After a failed connection: re-encode what is left for the next one.
    pub fn reset(&mut self) {
        let items: Vec<T> = self.items.drain(..).map(|(_, item)| item).collect();
        self.buf.clear();
        self.written = 0;
        for item in items {
            // Encoding succeeded once; it succeeds again.
            let _ = self.push(item);
        }
    }
}

/// Microseconds on a monotonic clock private to this process (heartbeat RTTs).
pub fn micros_since_start() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// Reconnect backoff: doubles from `min` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Our side of a heartbeat exchange: one heartbeat per tick; the link is lost when
/// `misses` go unanswered in a row.
#[derive(Debug)]
pub struct HeartbeatClock {
    misses: u32,
    seq: u64,
    unanswered: u32,
}

impl HeartbeatClock {
    /// A clock that tolerates `misses` unanswered heartbeats.
    pub fn new(misses: u32) -> Self {
        Self { misses, seq: 0, unanswered: 0 }
    }

    /// The heartbeat to send on this tick, or the error that ends the link.
    pub fn tick(&mut self) -> Result<proto::fo_link::Heartbeat, LinkError> {
        if self.unanswered >= self.misses {
            return Err(LinkError::HeartbeatLost(self.unanswered));
        }
        self.seq += 1;
        self.unanswered += 1;
        Ok(proto::fo_link::Heartbeat { seq: self.seq, sent_at_micros: micros_since_start() })
    }

    /// An acknowledgement arrived.
    pub fn acked(&mut self) {
        self.unanswered = 0;
    }

    /// A ticker for the interval, skipping missed ticks rather than bursting.
    pub fn ticker(interval: Duration) -> tokio::time::Interval {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    }
}
