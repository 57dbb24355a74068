//! The tokio codec for a bank session: `proto::frame` over a `BytesMut`.
//!
//! Frames come out as [`BankFrame`]s whose parts are slices of one shared buffer
//! (no copies). The buffer grows only by what the current frame still needs, and
//! never beyond the profile's maximum, because `proto::frame` refuses an oversize
//! length from the header alone.
//!
//! A frame that breaks the profile is handled by the bank's [`BadFramePolicy`]:
//! `Close` makes it an error (the session ends); `Drop` skips exactly that frame
//! when its extent is still known from its length header ([`FrameConfig::extent`])
//! and yields [`BankFrame::Dropped`], discarding the rest of an oversize frame as
//! it arrives instead of buffering it. A length header that is not a length loses
//! the framing: an error under either policy.

use bytes::{Buf, Bytes, BytesMut};
use proto::config::BadFramePolicy;
use proto::frame::{Check, FrameConfig, FrameError, TPDU_LEN};
use proto::iso8583::mask::masked_hexdump;
use tokio_util::codec::{Decoder, Encoder};

/// Most bytes of a dropped frame shown in [`BankFrame::Dropped::dump`].
pub const DUMP_MAX: usize = 256;

/// Bytes that broke the framing, for a log line: at most [`DUMP_MAX`] of them, in
/// hex, with anything that looks like card data masked.
pub fn masked_dump(bytes: &[u8]) -> String {
    masked_hexdump(bytes, None, DUMP_MAX)
}

/// One frame read from a bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankFrame {
    /// A zero-length frame.
    KeepAlive,
    /// A message, with the TPDU and fixed header the profile asks for.
    Message {
        /// The TPDU as received (swap it with `proto::frame::swap_tpdu` to answer).
        tpdu: Option<[u8; TPDU_LEN]>,
        /// The fixed header, empty if the profile has none.
        header: Bytes,
        /// The ISO 8583 message, exactly as received.
        message: Bytes,
    },
    /// A frame that broke the profile and was skipped ([`BadFramePolicy::Drop`]).
    /// Never encoded.
    Dropped {
        /// What was wrong with it.
        error: FrameError,
        /// Its first bytes (at most [`DUMP_MAX`], as far as they had arrived), as a
        /// hex dump with anything that looks like card data masked: safe to log.
        dump: String,
    },
}

/// An error on a bank stream: framing lost, or I/O.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stream does not follow the bank's framing profile; the session cannot go on.
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// [`BankFrame::Dropped`] was given to the encoder.
    #[error("a dropped frame cannot be written")]
    NotAFrame,
}

/// Frames a bank session's byte stream with the bank's profile.
#[derive(Debug, Clone)]
pub struct BankCodec {
    framing: FrameConfig,
    policy: BadFramePolicy,
    /// Bytes of a dropped frame still to discard as they arrive.
    skipping: u64,
}

impl BankCodec {
    /// A codec for one session that ends it on any framing error
    /// ([`BadFramePolicy::Close`]).
    pub fn new(framing: FrameConfig) -> Self {
        Self::with_policy(framing, BadFramePolicy::Close)
    }

    /// A codec for one session with the bank's bad-frame policy.
    pub fn with_policy(framing: FrameConfig, policy: BadFramePolicy) -> Self {
        Self { framing, policy, skipping: 0 }
    }

    /// The profile in use.
    pub fn framing(&self) -> &FrameConfig {
        &self.framing
    }

    /// Bytes of a dropped frame that have not arrived yet and will be discarded.
    pub fn skipping(&self) -> u64 {
        self.skipping
    }

    /// Under [`BadFramePolicy::Drop`], skips the refused frame at the start of `src`
    /// if its extent is known; otherwise gives the error back.
    fn drop_frame(&mut self, src: &mut BytesMut, error: FrameError) -> Result<BankFrame, CodecError> {
        let (BadFramePolicy::Drop, Some(extent)) = (self.policy, self.framing.extent(src)) else {
            return Err(error.into());
        };
        let available = src.len() as u64;
        let shown = extent.min(available) as usize;
        let dump = masked_dump(&src[..shown]);
        if extent <= available {
            src.advance(extent as usize);
        } else {
            src.clear();
            self.skipping = extent - available;
        }
        Ok(BankFrame::Dropped { error, dump })
    }
}

impl Decoder for BankCodec {
    type Item = BankFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BankFrame>, CodecError> {
        if self.skipping > 0 {
            let n = self.skipping.min(src.len() as u64);
            src.advance(n as usize);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        let check = match self.framing.check(src) {
            Ok(check) => check,
            Err(error) => return self.drop_frame(src, error).map(Some),
        };
        match check {
            Check::Incomplete { needed } => {
                src.reserve(needed);
                Ok(None)
            }
            Check::Frame(info) if info.is_keep_alive() => {
                let _ = src.split_to(info.total);
                Ok(Some(BankFrame::KeepAlive))
            }
            Check::Frame(info) => {
                let frame = src.split_to(info.total).freeze();
                let tpdu = info.tpdu.map(|r| frame[r].try_into().expect("TPDU is 5 bytes"));
                let header = info.header.map_or_else(Bytes::new, |r| frame.slice(r));
                Ok(Some(BankFrame::Message { tpdu, header, message: frame.slice(info.message) }))
            }
        }
    }
}

impl Encoder<BankFrame> for BankCodec {
    type Error = CodecError;

    fn encode(&mut self, item: BankFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        // proto encodes into a Vec: one extra copy per outbound frame, to revisit with
        // the data-path benchmark.
        let mut out = Vec::new();
        match item {
            BankFrame::KeepAlive => self.framing.encode_keep_alive(&mut out),
            BankFrame::Message { tpdu, header, message } => {
                self.framing.encode(tpdu.as_ref(), &header, &message, &mut out)?;
            }
            BankFrame::Dropped { .. } => return Err(CodecError::NotAFrame),
        }
        dst.extend_from_slice(&out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use proto::frame::ETX;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{FramedRead, FramedWrite};

    use super::*;

    fn profile() -> FrameConfig {
        FrameConfig { tpdu: true, trailer: Some(ETX), ..FrameConfig::new("ascii4".parse().unwrap()) }
    }

    fn msg(tpdu: [u8; 5], m: &'static [u8]) -> BankFrame {
        BankFrame::Message { tpdu: Some(tpdu), header: Bytes::new(), message: Bytes::from_static(m) }
    }

    /// Frames written through the encoder come back out of the decoder when the
    /// bytes arrive one at a time.
    #[tokio::test]
    async fn frames_survive_one_byte_reads() {
        let frames = vec![
            msg([0x60, 0, 1, 0, 2], b"0800 echo"),
            BankFrame::KeepAlive,
            msg([0x60, 0, 3, 0, 4], b"0100 auth"),
        ];
        let mut wire = Vec::new();
        {
            let mut w = FramedWrite::new(&mut wire, BankCodec::new(profile()));
            for f in frames.clone() {
                w.send(f).await.unwrap();
            }
        }
        assert_eq!(&wire[..4], b"0015");
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in wire {
                tx.write_all(&[b]).await.unwrap();
            }
        });
        let got: Vec<BankFrame> =
            FramedRead::new(rx, BankCodec::new(profile())).map(|r| r.unwrap()).collect().await;
        writer.await.unwrap();
        assert_eq!(got, frames);
    }

    #[test]
    fn oversize_length_fails_without_buffering_the_body() {
        let mut codec =
            BankCodec::new(FrameConfig { max_frame: 100, ..FrameConfig::new("u16be".parse().unwrap()) });
        let mut buf = BytesMut::from(&[0x01, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Frame(FrameError::TooLarge { len: 256, .. }))
        ));
        assert!(buf.capacity() < 256);
    }

    fn drop_codec(framing: FrameConfig) -> BankCodec {
        BankCodec::with_policy(framing, BadFramePolicy::Drop)
    }

    fn decode_all(codec: &mut BankCodec, buf: &mut BytesMut) -> Vec<BankFrame> {
        std::iter::from_fn(|| codec.decode(buf).unwrap()).collect()
    }

    /// An oversize frame is dropped from its header alone; its body is discarded as
    /// it arrives, never buffered, and the next frame comes out whole.
    #[test]
    fn drop_skips_an_oversize_frame_as_it_arrives() {
        let mut codec =
            drop_codec(FrameConfig { max_frame: 10, ..FrameConfig::new("u16be".parse().unwrap()) });
        let mut buf = BytesMut::from(&[0x00, 0x20, b'x', b'x'][..]);
        let Some(BankFrame::Dropped { error, dump }) = codec.decode(&mut buf).unwrap() else { panic!() };
        assert_eq!(error, FrameError::TooLarge { len: 32, max: 10 });
        assert!(dump.starts_with("00207878"), "{dump}");
        assert!(buf.is_empty());
        assert_eq!(codec.skipping(), 30);
        // 29 more body bytes: discarded, nothing kept.
        buf.extend_from_slice(&[b'y'; 29]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        assert_eq!(codec.skipping(), 1);
        // The last body byte and the next frame in one read.
        buf.extend_from_slice(&[b'y', 0x00, 0x04]);
        buf.extend_from_slice(b"0800");
        let got = decode_all(&mut codec, &mut buf);
        assert_eq!(
            got,
            [BankFrame::Message { tpdu: None, header: Bytes::new(), message: Bytes::from_static(b"0800") }]
        );
        assert!(buf.is_empty());
    }

    /// A bad trailer and a too-short frame are skipped exactly; a length that is not
    /// a number loses the framing even under `Drop`.
    #[test]
    fn drop_skips_bad_trailer_and_too_short_but_not_bad_length() {
        let mut codec = drop_codec(profile());
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"0010\x60\x00\x01\x00\x020800X"); // trailer X, not ETX
        buf.extend_from_slice(b"0003ab"); // too short for TPDU and trailer, one byte missing
        let got = decode_all(&mut codec, &mut buf);
        assert!(
            matches!(
                &got[..],
                [
                    BankFrame::Dropped { error: FrameError::BadTrailer { .. }, .. },
                    BankFrame::Dropped { error: FrameError::TooShort { .. }, .. },
                ]
            ),
            "{got:?}"
        );
        assert_eq!(codec.skipping(), 1);
        buf.extend_from_slice(b"c0015\x60\x00\x01\x00\x020800 echo\x03");
        assert_eq!(decode_all(&mut codec, &mut buf), [msg([0x60, 0, 1, 0, 2], b"0800 echo")]);
        let mut buf = BytesMut::from(&b"00x1rest"[..]);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Frame(FrameError::BadLength { .. }))));
        let mut close = BankCodec::new(profile());
        let mut buf = BytesMut::from(&b"0010\x60\x00\x01\x00\x020800X"[..]);
        assert!(matches!(close.decode(&mut buf), Err(CodecError::Frame(FrameError::BadTrailer { .. }))));
    }

    /// Dumps of dropped frames never show card data.
    #[test]
    fn dropped_dumps_are_masked() {
        let mut codec =
            drop_codec(FrameConfig { trailer: Some(ETX), ..FrameConfig::new("ascii4".parse().unwrap()) });
        let mut buf = BytesMut::from(&b"00230200 4761739001010010 X"[..]);
        let Some(BankFrame::Dropped { dump, .. }) = codec.decode(&mut buf).unwrap() else { panic!() };
        assert!(!dump.contains("34373631"), "{dump}");
        assert!(dump.contains("****"), "{dump}");
        assert!(buf.is_empty());
    }
}
