//! The tokio codec for a bank session: `proto::frame` over a `BytesMut`.
//!
//! Frames come out as [`BankFrame`]s whose parts are slices of one shared buffer
//! (no copies). The buffer grows only by what the current frame still needs, and
//! never beyond the profile's maximum, because `proto::frame` refuses an oversize
//! length from the header alone.

use bytes::{Bytes, BytesMut};
use proto::frame::{Check, FrameConfig, FrameError, TPDU_LEN};
use tokio_util::codec::{Decoder, Encoder};

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
}

/// Frames a bank session's byte stream with the bank's profile.
#[derive(Debug, Clone)]
pub struct BankCodec {
    framing: FrameConfig,
}

impl BankCodec {
    /// A codec for one session.
    pub fn new(framing: FrameConfig) -> Self {
        Self { framing }
    }

    /// The profile in use.
    pub fn framing(&self) -> &FrameConfig {
        &self.framing
    }
}

impl Decoder for BankCodec {
    type Item = BankFrame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BankFrame>, CodecError> {
        match self.framing.check(src)? {
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
}
