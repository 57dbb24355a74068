//! The peer link between the two appliances' `mups`: hello, heartbeats, the
//! continuously replicated admin state (routes, intent, maintenance flags), and
//! the planned switchover (its messages, the session snapshots, and the router's
//! in-flight tables handed over).
//!
//! A frame is a big-endian `u32` length, then the body: a type byte and the
//! type's fields. Lengths are checked against [`MAX_FRAME`] before anything is
//! allocated; every error names the field. JSON bodies (state, switchover
//! messages, router tables) are versioned by their own `version` fields and kept
//! opaque here, so this codec never has to change when they grow.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame body: a batch of snapshots of many sessions with full queues.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The peer link protocol version.
pub const VERSION: u8 = 1;

/// One peer link message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrame {
    /// First frame each way: who we are.
    Hello {
        /// `[appliance] id`.
        appliance_id: String,
        /// [`VERSION`].
        version: u8,
    },
    /// Liveness, answered by [`PeerFrame::HeartbeatAck`].
    Heartbeat {
        /// Sequence.
        seq: u64,
        /// Sender's clock, microseconds (echoed for the round trip).
        sent_micros: u64,
    },
    /// Answer to a heartbeat.
    HeartbeatAck {
        /// The heartbeat's sequence.
        seq: u64,
        /// Its `sent_micros`, echoed.
        sent_micros: u64,
    },
    /// The active's admin state, replicated (JSON).
    State {
        /// Increases with every change.
        seq: u64,
        /// The state, as JSON.
        json: Bytes,
    },
    /// The twin applied the state up to `seq`.
    StateAck {
        /// Applied sequence.
        seq: u64,
    },
    /// A planned switchover message (`appliance_switch::PeerMessage`, JSON).
    Switch {
        /// The message, as JSON.
        json: Bytes,
    },
    /// Session snapshots of a switchover (a `snapshot` batch).
    Snapshots {
        /// The switchover.
        switch_id: u64,
        /// The batch's bytes.
        batch: Bytes,
    },
    /// The router's in-flight tables handed over in a switchover (JSON).
    RouterState {
        /// The switchover.
        switch_id: u64,
        /// The tables, as JSON.
        json: Bytes,
    },
    /// A node's DATA that reached the old active after its sessions were frozen,
    /// for the new active's router (in order, after [`PeerFrame::RouterState`]).
    Relay {
        /// The switchover.
        switch_id: u64,
        /// The node, by its index in the configuration (both appliances list the
        /// same nodes).
        node: u16,
        /// The DATA frame as the FO link encodes it.
        frame: Bytes,
    },
}

/// A frame that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFrameError {
    /// The length is over [`MAX_FRAME`].
    #[error("peer frame of {len} bytes is over the {MAX_FRAME}-byte limit")]
    TooLong {
        /// Announced length.
        len: usize,
    },
    /// Fewer bytes than a field needs.
    #[error("peer frame truncated in {field}")]
    Truncated {
        /// The field.
        field: &'static str,
    },
    /// A type byte this version does not know.
    #[error("unknown peer frame type 0x{0:02x}")]
    UnknownType(u8),
    /// Text that is not UTF-8.
    #[error("{field} is not UTF-8")]
    BadUtf8 {
        /// The field.
        field: &'static str,
    },
    /// Bytes after the last field.
    #[error("{0} bytes after the end of a peer frame")]
    Trailing(usize),
}

impl PeerFrame {
    fn type_byte(&self) -> u8 {
        match self {
            Self::Hello { .. } => 0x01,
            Self::Heartbeat { .. } => 0x02,
            Self::HeartbeatAck { .. } => 0x03,
            Self::State { .. } => 0x10,
            Self::StateAck { .. } => 0x11,
            Self::Switch { .. } => 0x20,
            Self::Snapshots { .. } => 0x21,
            Self::RouterState { .. } => 0x22,
            Self::Relay { .. } => 0x23,
        }
    }

    /// Appends the frame, length prefix included.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u32(0);
        out.put_u8(self.type_byte());
        match self {
            Self::Hello { appliance_id, version } => {
                blob(out, appliance_id.as_bytes());
                out.put_u8(*version);
            }
            Self::Heartbeat { seq, sent_micros } | Self::HeartbeatAck { seq, sent_micros } => {
                out.put_u64(*seq);
                out.put_u64(*sent_micros);
            }
            Self::State { seq, json } => {
                out.put_u64(*seq);
                blob(out, json);
            }
            Self::StateAck { seq } => out.put_u64(*seq),
            Self::Switch { json } => blob(out, json),
            Self::Snapshots { switch_id, batch: bytes } | Self::RouterState { switch_id, json: bytes } => {
                out.put_u64(*switch_id);
                blob(out, bytes);
            }
            Self::Relay { switch_id, node, frame } => {
                out.put_u64(*switch_id);
                out.put_u16(*node);
                blob(out, frame);
            }
        }
        let len = u32::try_from(out.len() - start - 4).expect("frames stay far below 4 GiB");
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }

    /// Takes one whole frame off the front of `buf`: `Ok(None)` until it has arrived.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Self>, PeerFrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(PeerFrameError::TooLong { len });
        }
        if buf.len() < 4 + len {
            buf.reserve(4 + len - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let mut body = buf.split_to(len).freeze();
        Self::decode_body(&mut body).map(Some)
    }

    fn decode_body(b: &mut Bytes) -> Result<Self, PeerFrameError> {
        let kind = u8_(b, "type")?;
        let frame = match kind {
            0x01 => {
                let id = take_blob(b, "appliance_id")?;
                let appliance_id = String::from_utf8(id.to_vec())
                    .map_err(|_| PeerFrameError::BadUtf8 { field: "appliance_id" })?;
                Self::Hello { appliance_id, version: u8_(b, "version")? }
            }
            0x02 => Self::Heartbeat { seq: u64_(b, "seq")?, sent_micros: u64_(b, "sent_micros")? },
            0x03 => Self::HeartbeatAck { seq: u64_(b, "seq")?, sent_micros: u64_(b, "sent_micros")? },
            0x10 => Self::State { seq: u64_(b, "seq")?, json: take_blob(b, "json")? },
            0x11 => Self::StateAck { seq: u64_(b, "seq")? },
            0x20 => Self::Switch { json: take_blob(b, "json")? },
            0x21 => Self::Snapshots { switch_id: u64_(b, "switch_id")?, batch: take_blob(b, "batch")? },
            0x22 => Self::RouterState { switch_id: u64_(b, "switch_id")?, json: take_blob(b, "json")? },
            0x23 => Self::Relay {
                switch_id: u64_(b, "switch_id")?,
                node: {
                    if b.remaining() < 2 {
                        return Err(PeerFrameError::Truncated { field: "node" });
                    }
                    b.get_u16()
                },
                frame: take_blob(b, "frame")?,
            },
            other => return Err(PeerFrameError::UnknownType(other)),
        };
        if b.has_remaining() {
            return Err(PeerFrameError::Trailing(b.remaining()));
        }
        Ok(frame)
    }
}

fn blob(out: &mut BytesMut, data: &[u8]) {
    out.put_u32(u32::try_from(data.len()).expect("fields stay far below 4 GiB"));
    out.put_slice(data);
}

fn u8_(b: &mut Bytes, field: &'static str) -> Result<u8, PeerFrameError> {
    if b.remaining() < 1 {
        return Err(PeerFrameError::Truncated { field });
    }
    Ok(b.get_u8())
}

fn u64_(b: &mut Bytes, field: &'static str) -> Result<u64, PeerFrameError> {
    if b.remaining() < 8 {
        return Err(PeerFrameError::Truncated { field });
    }
    Ok(b.get_u64())
}

fn take_blob(b: &mut Bytes, field: &'static str) -> Result<Bytes, PeerFrameError> {
    if b.remaining() < 4 {
        return Err(PeerFrameError::Truncated { field });
    }
    let len = b.get_u32() as usize;
    if b.remaining() < len {
        return Err(PeerFrameError::Truncated { field });
    }
    Ok(b.split_to(len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn frames() -> impl Strategy<Value = PeerFrame> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
        prop_oneof![
            ("[a-z0-9-]{0,20}", any::<u8>())
                .prop_map(|(appliance_id, version)| PeerFrame::Hello { appliance_id, version }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(seq, sent_micros)| PeerFrame::Heartbeat { seq, sent_micros }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(seq, sent_micros)| PeerFrame::HeartbeatAck { seq, sent_micros }),
            (any::<u64>(), bytes()).prop_map(|(seq, json)| PeerFrame::State { seq, json }),
            any::<u64>().prop_map(|seq| PeerFrame::StateAck { seq }),
            bytes().prop_map(|json| PeerFrame::Switch { json }),
            (any::<u64>(), bytes()).prop_map(|(switch_id, batch)| PeerFrame::Snapshots { switch_id, batch }),
            (any::<u64>(), bytes()).prop_map(|(switch_id, json)| PeerFrame::RouterState { switch_id, json }),
            (any::<u64>(), any::<u16>(), bytes()).prop_map(|(switch_id, node, frame)| PeerFrame::Relay {
                switch_id,
                node,
                frame
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(list in proptest::collection::vec(frames(), 1..8), chunk in 1usize..50) {
            let mut wire = BytesMut::new();
            for f in &list {
                f.encode(&mut wire);
            }
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = PeerFrame::decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            prop_assert_eq!(out, list);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = PeerFrame::decode(&mut buf) {}
        }
    }

    #[test]
    fn bad_frames_are_named() {
        let mut huge = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        assert!(matches!(PeerFrame::decode(&mut huge), Err(PeerFrameError::TooLong { .. })));
        let mut unknown = BytesMut::from(&[0, 0, 0, 1, 0x7f][..]);
        assert_eq!(PeerFrame::decode(&mut unknown), Err(PeerFrameError::UnknownType(0x7f)));
        let mut short = BytesMut::from(&[0, 0, 0, 3, 0x11, 0, 0][..]);
        assert_eq!(PeerFrame::decode(&mut short), Err(PeerFrameError::Truncated { field: "seq" }));
        let mut trailing = BytesMut::from(&[0, 0, 0, 10, 0x11, 0, 0, 0, 0, 0, 0, 0, 1, 9][..]);
        assert_eq!(PeerFrame::decode(&mut trailing), Err(PeerFrameError::Trailing(1)));
        let mut blob_over = BytesMut::from(&[0, 0, 0, 5, 0x20, 0, 0, 0, 9][..]);
        assert_eq!(PeerFrame::decode(&mut blob_over), Err(PeerFrameError::Truncated { field: "json" }));
    }
}
