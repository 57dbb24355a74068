//! A minimal switch-side peer: accepts bank sessions and answers every request at
//! once with the response MTI and DE39, nothing else.
//!
//! It exists to calibrate the instrument: pointed at the loopback, the simulator's
//! report shows the simulator's own ceiling (throughput, latency floor) on a given
//! machine, so a later reading against `pups` can be judged against it. To leave
//! the CPU to the simulator it does as little as possible per message: the response
//! is the request's bytes with the MTI rewritten, the DE39 bit set and DE39 spliced
//! in (or overwritten), with no field decoded or re-encoded.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BytesMut};
use proto::frame::{Check, FrameConfig, TPDU_LEN, swap_tpdu};
use proto::iso8583::layout::{BitmapEncoding, MtiEncoding};
use proto::iso8583::{Layout, Message, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::config::ConfigError;

/// The response code field.
const DE39: u8 = 39;

/// Counts over every connection of a [`Loopback`].
#[derive(Debug, Default)]
pub struct LoopbackStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered.
    pub answered: AtomicU64,
    /// Frames that were not requests (responses, notifications, keep-alives) or
    /// did not decode; never answered.
    pub ignored: AtomicU64,
}

/// The answering peer for one framing profile and layout.
#[derive(Debug)]
pub struct Loopback {
    framing: FrameConfig,
    layout: &'static Layout,
    /// DE39 as it goes on the wire (length prefix included, if the layout has one).
    de39: Vec<u8>,
    stats: LoopbackStats,
}

impl Loopback {
    /// A peer answering with DE39 = `response_code`.
    pub fn new(
        framing: FrameConfig,
        layout: &'static Layout,
        response_code: &str,
    ) -> Result<Self, ConfigError> {
        let fail = |reason: String| ConfigError::Message {
            layout: layout.name().to_owned(),
            what: "loopback response".to_owned(),
            reason,
        };
        let probe = layout.encode_to_vec("0110", [(DE39, response_code)]).map_err(|e| fail(e.to_string()))?;
        let msg = Message::parse(layout, &probe).map_err(|e| fail(e.to_string()))?;
        let de39 =
            msg.field(DE39).map(|f| f.wire.to_vec()).ok_or_else(|| fail("DE39 is missing".to_owned()))?;
        Ok(Self { framing, layout, de39, stats: LoopbackStats::default() })
    }

    /// Counts so far.
    pub fn stats(&self) -> &LoopbackStats {
        &self.stats
    }

    /// Appends to `out` the response message (no framing) to `request`, or returns
    /// `false` and leaves `out` alone if `request` is not a request.
    pub fn respond(&self, request: &Message<'_>, out: &mut Vec<u8>) -> bool {
        if request.mti().role() != Role::Request {
            return false;
        }
        let Some(mti) = request.mti().response() else { return false };
        let bytes = request.bytes();
        let start = out.len();
        let (mti_len, bitmap_len) = (
            match self.layout.mti_encoding() {
                MtiEncoding::Text(_) => 4,
                MtiEncoding::Bcd => 2,
            },
            match self.layout.bitmap_encoding() {
                BitmapEncoding::Binary => 8,
                BitmapEncoding::Hex(_) => 16,
            },
        );
        match self.layout.mti_encoding() {
            MtiEncoding::Text(cs) => out.extend(mti.digits().map(|d| cs.digit_byte(d))),
            MtiEncoding::Bcd => {
                let d = mti.digits();
                out.extend([(d[0] << 4) | d[1], (d[2] << 4) | d[3]]);
            }
        }
        out.extend_from_slice(&bytes[mti_len..]);
        // Set bit 39 of the primary bitmap.
        let bitmap = &mut out[start + mti_len..start + mti_len + bitmap_len];
        let bit = usize::from(DE39 - 1);
        match self.layout.bitmap_encoding() {
            BitmapEncoding::Binary => bitmap[bit / 8] |= 0x80 >> (bit % 8),
            BitmapEncoding::Hex(cs) => {
                let nibble = cs.hex_digit(bitmap[bit / 4]).unwrap_or(0) | (0x8 >> (bit % 4));
                bitmap[bit / 4] = cs.digit_byte(nibble);
            }
        }
        match request.field(DE39) {
            Some(f) => {
                let at = start + f.offset;
                out.splice(at..at + f.wire.len(), self.de39.iter().copied());
            }
            None => {
                let at = request.fields().find(|f| f.id > DE39).map_or(bytes.len(), |f| f.offset);
                out.splice(start + at..start + at, self.de39.iter().copied());
            }
        }
        true
    }

    /// Accepts sessions until the listener fails, each served on its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(e) = this.serve_connection(stream).await {
                    tracing::debug!("loopback session ended: {e}");
                }
            });
        }
    }

    /// Serves one session until the peer closes it.
    pub async fn serve_connection(&self, stream: TcpStream) -> io::Result<()> {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut wbuf = Vec::with_capacity(64 * 1024);
        let mut scratch = Vec::with_capacity(1024);
        loop {
            if rbuf.capacity() - rbuf.len() < 16 * 1024 {
                rbuf.reserve(64 * 1024);
            }
            if rd.read_buf(&mut rbuf).await? == 0 {
                return Ok(());
            }
            loop {
                let info = match self.framing.check(&rbuf) {
                    Ok(Check::Incomplete { .. }) => break,
                    Ok(Check::Frame(info)) => info,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                };
                let tpdu = info.tpdu.clone().and_then(|r| <[u8; TPDU_LEN]>::try_from(&rbuf[r]).ok());
                scratch.clear();
                let answered = !info.is_keep_alive()
                    && Message::parse(self.layout, &rbuf[info.message.clone()])
                        .is_ok_and(|msg| self.respond(&msg, &mut scratch));
                if answered {
                    let tpdu = tpdu.map(|t| swap_tpdu(&t));
                    self.framing
                        .encode(tpdu.as_ref(), &[], &scratch, &mut wbuf)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    self.stats.answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats.ignored.fetch_add(1, Ordering::Relaxed);
                }
                rbuf.advance(info.total);
            }
            if !wbuf.is_empty() {
                wr.write_all(&wbuf).await?;
                wbuf.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::iso8583::BUILTIN_LAYOUTS;

    use super::*;

    /// The spliced response equals the encoder's response, for every layout, with
    /// DE39 absent (inserted between fields or at the end) or present (replaced).
    #[test]
    fn responses_equal_the_encoder() {
        for name in BUILTIN_LAYOUTS {
            let layout = Layout::builtin(name).unwrap();
            let lb = Loopback::new(FrameConfig::new("u16be".parse().unwrap()), layout, "00").unwrap();
            type Case = (&'static str, &'static str, Vec<(u8, &'static str)>);
            let cases: [Case; 4] = [
                (
                    "0200",
                    "0210",
                    vec![(2, "4761739001010010"), (11, "000001"), (41, "TERM0001"), (49, "840")],
                ),
                ("0800", "0810", vec![(7, "0101120000"), (11, "000002"), (70, "301")]),
                ("0100", "0110", vec![(11, "000003"), (39, "05"), (41, "TERM0001")]),
                ("0101", "0110", vec![(11, "000004"), (37, "000000000004")]),
            ];
            for (req, resp, fields) in cases {
                let request = layout.encode_to_vec(req, fields.iter().copied()).unwrap();
                let msg = Message::parse(layout, &request).unwrap();
                let mut out = vec![0xEE];
                assert!(lb.respond(&msg, &mut out), "{name} {req}");
                let mut expected: Vec<(u8, &str)> = fields.iter().copied().filter(|f| f.0 != 39).collect();
                expected.push((39, "00"));
                let want = layout.encode_to_vec(resp, expected).unwrap();
                assert_eq!(&out[1..], &want[..], "{name} {req}");
            }
            let response = layout.encode_to_vec("0110", [(11, "000001")]).unwrap();
            let mut out = Vec::new();
            assert!(!lb.respond(&Message::parse(layout, &response).unwrap(), &mut out));
            assert!(out.is_empty());
        }
    }
}
