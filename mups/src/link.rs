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

/// Messages waiting to be written, encoded once into one buffer. When a write
/// fails, the frames not wholly written stay queued, byte for byte, for the next
/// connection: nothing is lost, and nothing that reached the socket is sent twice.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Offset in `buf` where each queued frame ends.
    ends: VecDeque<usize>,
    /// Bytes of `buf` already written.
    written: usize,
    /// End of the last frame wholly written.
    done: usize,
}

impl Outbox {
    /// Queues a message.
    pub fn push(&mut self, msg: impl Into<FoMessage>) -> Result<(), FoLinkError> {
        msg.into().encode(&mut self.buf)?;
        self.ends.push_back(self.buf.len());
        Ok(())
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Writes everything queued. On error, the frames not wholly written are kept.
    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        while self.written < self.buf.len() {
            let n = w.write(&self.buf[self.written..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
            while let Some(&end) = self.ends.front().filter(|&&end| end <= self.written) {
                self.done = end;
                self.ends.pop_front();
            }
        }
        self.buf.clear();
        (self.written, self.done) = (0, 0);
        w.flush().await
    }

    /// After a failed connection: what was not wholly written goes first on the next.
    pub fn reset(&mut self) {
        self.buf.drain(..self.done);
        for end in &mut self.ends {
            *end -= self.done;
        }
        (self.written, self.done) = (0, 0);
    }
}

/// Microseconds on a monotonic clock private to this process (heartbeat RTTs).
pub fn micros_since_start() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// What every `mups` link needs to connect and to know its peer is alive.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Our name in HELLO.
    pub appliance: String,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Unanswered heartbeats after which the link is dropped (and re-established).
    pub heartbeat_misses: u32,
    /// Connect and HELLO timeout.
    pub connect_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: Backoff,
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use proto::fo_link::{Data, DataFlags, Direction};

    use super::*;

    /// Accepts `budget` bytes (in pieces of at most 7), then fails.
    struct Flaky {
        got: Vec<u8>,
        budget: usize,
    }

    impl AsyncWrite for Flaky {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.budget == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let n = buf.len().min(7).min(self.budget);
            self.budget -= n;
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn data(i: u64) -> Data {
        Data {
            bank_id: "b".into(),
            session_id: i,
            direction: Direction::ToBank,
            correlation_id: i,
            flags: DataFlags::empty(),
            message: Bytes::from(vec![i as u8; 20 + i as usize]),
        }
    }

    fn decode_all(bytes: &[u8]) -> Vec<u64> {
        let mut buf = BytesMut::from(bytes);
        let mut dec = FoLinkDecoder::default();
        let mut out = Vec::new();
        while let Some(FoMessage::Data(d)) = dec.decode(&mut buf).unwrap() {
            out.push(d.session_id);
        }
        out
    }

    /// Whatever point a connection breaks at, the next one gets exactly the frames
    /// not wholly written before, whole and in order.
    #[tokio::test]
    async fn a_broken_write_loses_and_repeats_nothing() {
        let total: usize = (0..5).map(|i| data(i).message.len() + 40).sum();
        for budget in 0..total {
            let mut outbox = Outbox::default();
            for i in 0..5 {
                outbox.push(data(i)).unwrap();
            }
            let mut first = Flaky { got: Vec::new(), budget };
            let broke = outbox.flush(&mut first).await.is_err();
            outbox.reset();
            let mut second = Flaky { got: Vec::new(), budget: usize::MAX };
            outbox.flush(&mut second).await.unwrap();
            // Frames whole on the first connection, then everything else on the second.
            let mut delivered: Vec<u64> = decode_all(&first.got[..]).into_iter().collect();
            if !broke {
                assert!(second.got.is_empty());
            }
            delivered.extend(decode_all(&second.got));
            assert_eq!(delivered, vec![0, 1, 2, 3, 4], "budget {budget}");
        }
    }
}
