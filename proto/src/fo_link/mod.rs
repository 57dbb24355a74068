//! The FO link protocol: what `mups` and each front-office (FO) node say to each
//! other over their TCP link — bank ISO 8583 messages both ways, heartbeats, bank
//! state, and the commands of an FO switchover. The full description (message
//! table, lifecycle, switchover sequence) is `docs/fo-link-protocol.md`.
//!
//! On the wire a frame is `u32 length | u8 version | u8 type | body`, the length
//! counting every byte after itself. All integers are big-endian; strings are a
//! `u16` length and UTF-8, blobs a `u32` length and bytes, lists a `u16` count and
//! items. The codec is strict: an unknown version or type, a short or long body, an
//! undefined enum value or flag, or bad UTF-8 is an error, never skipped, because
//! both ends ship together and a mismatch means a bug or a wrong peer.
//!
//! Like [`frame`](crate::frame), the codec is sans-IO and keeps no state:
//! [`check`] looks at the start of a buffer and says whether a whole frame is
//! there, refusing an oversize length from the header alone, before the caller
//! buffers (or allocates for) the body; [`decode`] turns one frame into a
//! [`FoMessage`] whose ISO 8583 payloads are slices of the frame's [`Bytes`], not
//! copies; [`FoMessage::encode`] appends a frame to a `Vec`. [`FoLinkDecoder`] is
//! the same over a [`BytesMut`] read buffer, ready to sit inside a tokio codec.
//!
//! The same wire format serves the *local link* between `pups` and `mups` on one
//! appliance (a Unix socket; `PeerRole::Edge` for `pups`), which reuses `HELLO`,
//! the heartbeats and `DATA` and adds messages of its own, type bytes `0x40`–`0x4F`
//! ([`FoKind::is_local_link_only`]). The codec reads and writes every type on any
//! link; the receiver enforces which link a message belongs on.
//!
//! # Type bytes
//!
//! | byte   | message         | byte   | message      | byte   | message (local link) |
//! |--------|-----------------|--------|--------------|--------|----------------------|
//! | `0x01` | `HELLO`         | `0x21` | `CONTEXT`    | `0x40` | `CHANNEL`            |
//! | `0x02` | `HEARTBEAT`     | `0x22` | `SYNC_END`   | `0x41` | `SESSION_UP`         |
//! | `0x03` | `HEARTBEAT_ACK` | `0x23` | `ACTIVATE`   | `0x42` | `SESSION_DOWN`       |
//! | `0x10` | `DATA`          | `0x24` | `DEACTIVATE` | `0x43` | `INVENTORY_END`      |
//! | `0x11` | `BANK_STATE`    | `0x30` | `ACK`        | `0x44` | `CLOSE_SESSION`      |
//! | `0x20` | `SYNC_BEGIN`    | `0x31` | `NACK`       | `0x45` | `SESSION_PAUSE`      |
//! |        |                 |        |              | `0x46` | `SESSION_RESUME`     |

mod error;
mod message;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{Bytes, BytesMut};

pub use error::FoLinkError;
pub use message::{
    Ack, Activate, AppState, BankState, Channel, CloseSession, Context, Data, DataFlags, Deactivate,
    Direction, FoKind, FoMessage, Handover, HandoverOp, Heartbeat, HeartbeatAck, Hello, InventoryEnd,
    LinkChannel, Nack, NackReason, PeerRole, SessionDown, SessionDownReason, SessionPause, SessionResume,
    SessionState, SessionUp, SyncBegin, SyncEnd, SyncRole, TransportState,
};

/// The protocol version this codec speaks (and the only one [`decode`] accepts).
pub const VERSION: u8 = 1;

/// Lowest version this codec speaks, for [`Hello::min_version`].
pub const MIN_VERSION: u8 = 1;

/// Highest version this codec speaks, for [`Hello::max_version`].
pub const MAX_VERSION: u8 = 1;

/// Bytes of the length field.
pub const LENGTH_LEN: usize = 4;

/// Bytes of the whole frame header: length, version and type.
pub const HEADER_LEN: usize = LENGTH_LEN + 2;

/// Default maximum frame length (bytes after the length field): 1 MiB, far above
/// any ISO 8583 message and any bank state, small enough to refuse garbage early.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Looks for a frame at the start of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, and `Ok(Some(n))` when the first
/// `n` bytes (header included) are one whole frame. `max_frame` bounds the length
/// field (the bytes after it) and is checked as soon as the length is in; the
/// version and type bytes are checked as soon as they are in, so a wrong peer is
/// refused before its body is buffered. The body itself is only checked by
/// [`decode`].
pub fn check(buf: &[u8], max_frame: usize) -> Result<Option<usize>, FoLinkError> {
    let Some(&[a, b, c, d]) = buf.get(..LENGTH_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]);
    if len < 2 {
        return Err(FoLinkError::BadLength(len));
    }
    if u64::from(len) > max_frame as u64 {
        return Err(FoLinkError::TooLarge { len: len.into(), max: max_frame });
    }
    if let Some(&version) = buf.get(LENGTH_LEN) {
        if version != VERSION {
            return Err(FoLinkError::UnsupportedVersion(version));
        }
    }
    if let Some(&kind) = buf.get(LENGTH_LEN + 1) {
        if FoKind::from_type_byte(kind).is_none() {
            return Err(FoLinkError::UnknownType(kind));
        }
    }
    // len <= max_frame, a usize: the sum only overflows if max_frame is within 4 of usize::MAX.
    let total = (len as usize).saturating_add(LENGTH_LEN);
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes one frame: `frame` must hold exactly one frame, header included, as
/// [`check`] delimits it. Payloads ([`Data::message`], [`Context::message`]) are
/// slices of `frame`.
///
/// The length is not checked against a maximum here; [`check`] does that before
/// the frame is buffered.
pub fn decode(frame: Bytes) -> Result<FoMessage, FoLinkError> {
    let Some(total) = check(&frame, usize::MAX)? else {
        return Err(FoLinkError::Incomplete { available: frame.len() });
    };
    if total != frame.len() {
        return Err(FoLinkError::ExtraBytes { frame: total, buffer: frame.len() });
    }
    // check() has verified the type byte and that the frame holds a whole header.
    let type_byte = frame[LENGTH_LEN + 1];
    let kind = FoKind::from_type_byte(type_byte).ok_or(FoLinkError::UnknownType(type_byte))?;
    wire::Reader::new(kind, frame.slice(HEADER_LEN..)).message()
}

impl FoMessage {
    /// Appends this message as one frame (version [`VERSION`]) to `out`.
    ///
    /// Fails, leaving `out` as it was, if a string is over 65 535 bytes, a list over
    /// 65 535 items, or a blob or the frame over 4 GiB. It does not know the peer's
    /// maximum frame length; a frame over it is refused by the peer's [`check`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FoLinkError> {
        let start = out.len();
        let kind = self.kind();
        out.extend_from_slice(&[0; LENGTH_LEN]);
        out.push(VERSION);
        out.push(kind.type_byte());
        let result = wire::Writer::new(kind, out).message(self).and_then(|()| {
            let len = out.len() - start - LENGTH_LEN;
            u32::try_from(len).map_err(|_| FoLinkError::TooLong {
                kind,
                field: "frame",
                len,
                max: u32::MAX as usize,
            })
        });
        match result {
            Ok(len) => {
                out[start..start + LENGTH_LEN].copy_from_slice(&len.to_be_bytes());
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// This message as one frame, in a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<u8>, FoLinkError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// The link version two `HELLO`s agree on: the highest version both speak, or
/// `None` if they share none (the link is then closed, with both ranges logged).
/// A range whose minimum is over its maximum shares nothing.
pub fn negotiate_version(ours: &Hello, theirs: &Hello) -> Option<u8> {
    let low = ours.min_version.max(theirs.min_version);
    let high = ours.max_version.min(theirs.max_version);
    (low <= high).then_some(high)
}

/// Splits frames off a read buffer and decodes them: [`check`] and [`decode`] over
/// a [`BytesMut`], so a tokio `Decoder` only has to call [`FoLinkDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoLinkDecoder {
    /// Largest accepted length field (bytes after it).
    pub max_frame: usize,
}

impl Default for FoLinkDecoder {
    fn default() -> Self {
        Self { max_frame: DEFAULT_MAX_FRAME }
    }
}

impl FoLinkDecoder {
    /// A decoder refusing frames longer than `max_frame` (after the length field).
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// Decodes the first frame of `buf`, removing its bytes, or returns `Ok(None)`
    /// (leaving `buf` as it was, but with room reserved for the rest of a frame whose
    /// header is in) if no whole frame is there yet.
    ///
    /// After an error the stream has lost its framing: close the link.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<FoMessage>, FoLinkError> {
        match check(buf, self.max_frame)? {
            Some(total) => decode(buf.split_to(total).freeze()).map(Some),
            None => {
                if let Some(&[a, b, c, d]) = buf.get(..LENGTH_LEN) {
                    // check() has bounded the length by max_frame.
                    let total = LENGTH_LEN.saturating_add(u32::from_be_bytes([a, b, c, d]) as usize);
                    buf.reserve(total.saturating_sub(buf.len()));
                }
                Ok(None)
            }
        }
    }
}
