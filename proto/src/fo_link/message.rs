//! FO link messages: one struct per message type, gathered in [`FoMessage`].
//!
//! ISO 8583 bytes (`message` of [`Data`] and [`Context`]) hold card data: their
//! `Debug` prints only their length, so a message can be logged with `{:?}`.
//! Everything else in these structs is safe to log (matching keys never hold card
//! data; see [`MatchKeyConfig`](crate::iso8583::MatchKeyConfig)).

use std::fmt;
use std::ops::{BitOr, BitOrAssign};

use bytes::Bytes;

/// Which kind of message: the type byte, as a small `Copy` value for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FoKind {
    /// [`Hello`], type `0x01`.
    Hello,
    /// [`Heartbeat`], type `0x02`.
    Heartbeat,
    /// [`HeartbeatAck`], type `0x03`.
    HeartbeatAck,
    /// [`Data`], type `0x10`.
    Data,
    /// [`BankState`], type `0x11`.
    BankState,
    /// [`SyncBegin`], type `0x20`.
    SyncBegin,
    /// [`Context`], type `0x21`.
    Context,
    /// [`SyncEnd`], type `0x22`.
    SyncEnd,
    /// [`Activate`], type `0x23`.
    Activate,
    /// [`Deactivate`], type `0x24`.
    Deactivate,
    /// [`Ack`], type `0x30`.
    Ack,
    /// [`Nack`], type `0x31`.
    Nack,
    /// [`Channel`], type `0x40` (local link only).
    Channel,
    /// [`SessionUp`], type `0x41` (local link only).
    SessionUp,
    /// [`SessionDown`], type `0x42` (local link only).
    SessionDown,
    /// [`InventoryEnd`], type `0x43` (local link only).
    InventoryEnd,
    /// [`CloseSession`], type `0x44` (local link only).
    CloseSession,
    /// [`SessionPause`], type `0x45` (local link only).
    SessionPause,
    /// [`SessionResume`], type `0x46` (local link only).
    SessionResume,
    /// [`Handover`], type `0x47` (local link only).
    Handover,
}

impl FoKind {
    /// Every kind, in type byte order.
    pub const ALL: [Self; 20] = [
        Self::Hello,
        Self::Heartbeat,
        Self::HeartbeatAck,
        Self::Data,
        Self::BankState,
        Self::SyncBegin,
        Self::Context,
        Self::SyncEnd,
        Self::Activate,
        Self::Deactivate,
        Self::Ack,
        Self::Nack,
        Self::Channel,
        Self::SessionUp,
        Self::SessionDown,
        Self::InventoryEnd,
        Self::CloseSession,
        Self::SessionPause,
        Self::SessionResume,
        Self::Handover,
    ];

    /// The type byte on the wire. These values never change within a version.
    pub const fn type_byte(self) -> u8 {
        match self {
            Self::Hello => 0x01,
            Self::Heartbeat => 0x02,
            Self::HeartbeatAck => 0x03,
            Self::Data => 0x10,
            Self::BankState => 0x11,
            Self::SyncBegin => 0x20,
            Self::Context => 0x21,
            Self::SyncEnd => 0x22,
            Self::Activate => 0x23,
            Self::Deactivate => 0x24,
            Self::Ack => 0x30,
            Self::Nack => 0x31,
            Self::Channel => 0x40,
            Self::SessionUp => 0x41,
            Self::SessionDown => 0x42,
            Self::InventoryEnd => 0x43,
            Self::CloseSession => 0x44,
            Self::SessionPause => 0x45,
            Self::SessionResume => 0x46,
            Self::Handover => 0x47,
        }
    }

    /// The kind of a type byte, if this version defines it.
    pub const fn from_type_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Hello,
            0x02 => Self::Heartbeat,
            0x03 => Self::HeartbeatAck,
            0x10 => Self::Data,
            0x11 => Self::BankState,
            0x20 => Self::SyncBegin,
            0x21 => Self::Context,
            0x22 => Self::SyncEnd,
            0x23 => Self::Activate,
            0x24 => Self::Deactivate,
            0x30 => Self::Ack,
            0x31 => Self::Nack,
            0x40 => Self::Channel,
            0x41 => Self::SessionUp,
            0x42 => Self::SessionDown,
            0x43 => Self::InventoryEnd,
            0x44 => Self::CloseSession,
            0x45 => Self::SessionPause,
            0x46 => Self::SessionResume,
            0x47 => Self::Handover,
            _ => return None,
        })
    }

    /// The protocol name (`HEARTBEAT_ACK`), as in the protocol document, logs and
    /// metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Heartbeat => "HEARTBEAT",
            Self::HeartbeatAck => "HEARTBEAT_ACK",
            Self::Data => "DATA",
            Self::BankState => "BANK_STATE",
            Self::SyncBegin => "SYNC_BEGIN",
            Self::Context => "CONTEXT",
            Self::SyncEnd => "SYNC_END",
            Self::Activate => "ACTIVATE",
            Self::Deactivate => "DEACTIVATE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Channel => "CHANNEL",
            Self::SessionUp => "SESSION_UP",
            Self::SessionDown => "SESSION_DOWN",
            Self::InventoryEnd => "INVENTORY_END",
            Self::CloseSession => "CLOSE_SESSION",
            Self::SessionPause => "SESSION_PAUSE",
            Self::SessionResume => "SESSION_RESUME",
            Self::Handover => "HANDOVER",
        }
    }

    /// Whether this kind belongs to the local link (`pups` ↔ `mups`) only: type
    /// bytes `0x40`–`0x4F`. The codec reads them on any link; a receiver on the FO
    /// link must treat one as an unknown type and close the link.
    pub const fn is_local_link_only(self) -> bool {
        matches!(self.type_byte(), 0x40..=0x4F)
    }
}

impl fmt::Display for FoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Defines a `u8`-coded enum: wire values, `code()` and `from_code()`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// The byte on the wire.
            pub const fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $value,)+
                }
            }

            /// The value of a wire byte, if defined.
            pub const fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_enum! {
    /// Which end of the link a peer is.
    PeerRole {
        /// `mups`, the side that connects.
        Controller = 1,
        /// An FO processing node (or its simulator).
        Node = 2,
        /// `pups`, the edge proxy owning the banks' TCP sessions: the listening
        /// end of the local link.
        Edge = 3,
    }
}

wire_enum! {
    /// Which of its two local-link connections `mups` is opening, in [`Channel`].
    LinkChannel {
        /// The data channel: `DATA` only, both ways.
        Data = 1,
        /// The control channel: heartbeats, session events and session commands.
        Control = 2,
    }
}

wire_enum! {
    /// Which way an ISO 8583 message travels.
    Direction {
        /// From the bank towards the FO node.
        ToNode = 1,
        /// From the FO node towards the bank.
        ToBank = 2,
    }
}

wire_enum! {
    /// Whether a bank's TCP session is connected.
    TransportState {
        /// Not connected.
        Down = 0,
        /// Connected.
        Up = 1,
    }
}

wire_enum! {
    /// A bank session's application (network management) state.
    AppState {
        /// Not known yet (no sign-on or echo seen since the session came up).
        Unknown = 0,
        /// Signed on.
        SignedOn = 1,
        /// Signed off.
        SignedOff = 2,
        /// Echo tests are failing.
        EchoFailing = 3,
    }
}

wire_enum! {
    /// A node's part in a switchover.
    SyncRole {
        /// The old node: hands its in-flight contexts over.
        Source = 1,
        /// The new node: takes the contexts and then the traffic.
        Target = 2,
    }
}

/// Why a command was refused. Unknown codes are kept as [`NackReason::Other`], so a
/// newer peer's reason still reaches the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackReason {
    /// Code 1: the node is not ready (still starting, or not yet in sync state).
    NotReady,
    /// Code 2: the node does not know the bank.
    UnknownBank,
    /// Code 3: the command does not fit the bank's state (e.g. wrong `switch_id`).
    BadState,
    /// Code 4: the node is busy with another switchover.
    Busy,
    /// Code 5: something the node waited for did not come in time.
    Timeout,
    /// Code 6: an internal error of the node.
    Internal,
    /// A code this version does not name. Encoding `Other` with a named code (1–6)
    /// decodes as the named variant; use [`NackReason::from_code`] to build one.
    Other(u16),
}

impl NackReason {
    /// The code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            Self::NotReady => 1,
            Self::UnknownBank => 2,
            Self::BadState => 3,
            Self::Busy => 4,
            Self::Timeout => 5,
            Self::Internal => 6,
            Self::Other(code) => code,
        }
    }

    /// The reason of a wire code; every code has one.
    pub const fn from_code(code: u16) -> Self {
        match code {
            1 => Self::NotReady,
            2 => Self::UnknownBank,
            3 => Self::BadState,
            4 => Self::Busy,
            5 => Self::Timeout,
            6 => Self::Internal,
            other => Self::Other(other),
        }
    }
}

/// Why a bank session ended, in [`SessionDown`]. Unknown codes are kept as
/// [`SessionDownReason::Other`], so a newer `pups`'s reason still reaches the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionDownReason {
    /// Code 1: the bank closed the connection (orderly FIN).
    PeerClosed,
    /// Code 2: the bank reset the connection.
    PeerReset,
    /// Code 3: nothing was received from the bank for the configured idle time.
    IdleTimeout,
    /// Code 4: the bank's byte stream broke its framing profile.
    FramingError,
    /// Code 5: `mups` asked for it with [`CloseSession`].
    ClosedByController,
    /// Code 6: a socket error other than a reset.
    IoError,
    /// Code 7: `pups` is shutting down.
    Shutdown,
    /// Code 8: the session was handed to the twin appliance (planned switchover);
    /// the bank's TCP connection goes on there.
    HandedOver,
    /// A code this version does not name. Encoding `Other` with a named code (1–8)
    /// decodes as the named variant; use [`SessionDownReason::from_code`] to build one.
    Other(u16),
}

impl SessionDownReason {
    /// The code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            Self::PeerClosed => 1,
            Self::PeerReset => 2,
            Self::IdleTimeout => 3,
            Self::FramingError => 4,
            Self::ClosedByController => 5,
            Self::IoError => 6,
            Self::Shutdown => 7,
            Self::HandedOver => 8,
            Self::Other(code) => code,
        }
    }

    /// The reason of a wire code; every code has one.
    pub const fn from_code(code: u16) -> Self {
        match code {
            1 => Self::PeerClosed,
            2 => Self::PeerReset,
            3 => Self::IdleTimeout,
            4 => Self::FramingError,
            5 => Self::ClosedByController,
            6 => Self::IoError,
            7 => Self::Shutdown,
            8 => Self::HandedOver,
            other => Self::Other(other),
        }
    }
}

/// Flags of a [`Data`] message: a `u16` bit set. Bits this version does not define
/// cannot be built here and are refused on decode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataFlags(u16);

impl DataFlags {
    /// A response that arrived after its request had timed out.
    pub const LATE: Self = Self(0x0001);
    /// A response that no request in flight matches.
    pub const UNMATCHED: Self = Self(0x0002);
    /// Generated by `mups`, not received from the bank (e.g. a decline).
    pub const SYNTHETIC: Self = Self(0x0004);
    /// Every defined bit.
    pub const ALL: Self = Self(0x0007);

    /// No flag set.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The bits on the wire.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// The flags of wire bits, or `None` if an undefined bit is set.
    pub const fn from_bits(bits: u16) -> Option<Self> {
        if bits & !Self::ALL.0 == 0 { Some(Self(bits)) } else { None }
    }

    /// No flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// Clears the flags of `other`.
    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
}

impl BitOr for DataFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for DataFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for DataFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataFlags(")?;
        let mut first = true;
        for (flag, name) in
            [(Self::LATE, "LATE"), (Self::UNMATCHED, "UNMATCHED"), (Self::SYNTHETIC, "SYNTHETIC")]
        {
            if self.contains(flag) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

/// ISO 8583 bytes in `Debug` output: their length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

/// `HELLO`: the first message each way on connect, for version negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's name (`mups`'s instance name, or the node's id such as `A`).
    pub node_id: String,
    /// Which end the sender is.
    pub role: PeerRole,
    /// Lowest protocol version the sender speaks.
    pub min_version: u8,
    /// Highest protocol version the sender speaks.
    pub max_version: u8,
    /// Software name and version, for the log.
    pub software: String,
}

/// `HEARTBEAT`: a liveness probe; answered at once with [`HeartbeatAck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Sender's sequence number, one more for each heartbeat.
    pub seq: u64,
    /// Sender's clock when sent, in microseconds; only the sender reads it.
    pub sent_at_micros: u64,
}

impl Heartbeat {
    /// The answer: the same values, echoed.
    pub fn ack(&self) -> HeartbeatAck {
        HeartbeatAck { seq: self.seq, sent_at_micros: self.sent_at_micros }
    }
}

/// `HEARTBEAT_ACK`: the answer to a [`Heartbeat`], echoing its values so the
/// sender can compute the round trip time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// The heartbeat's `seq`.
    pub seq: u64,
    /// The heartbeat's `sent_at_micros`.
    pub sent_at_micros: u64,
}

/// `DATA`: one ISO 8583 message of a bank, carried verbatim.
#[derive(Clone, PartialEq, Eq)]
pub struct Data {
    /// The bank.
    pub bank_id: String,
    /// The bank's TCP session the message came from or goes to.
    pub session_id: u64,
    /// Which way the message travels.
    pub direction: Direction,
    /// Ties a request to its response across the link.
    pub correlation_id: u64,
    /// What `mups` knows about the message.
    pub flags: DataFlags,
    /// The ISO 8583 message, without framing. Holds card data: never logged.
    pub message: Bytes,
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("bank_id", &self.bank_id)
            .field("session_id", &self.session_id)
            .field("direction", &self.direction)
            .field("correlation_id", &self.correlation_id)
            .field("flags", &self.flags)
            .field("message", &Redacted(self.message.len()))
            .finish()
    }
}

/// The state of one bank TCP session, in [`BankState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// The session.
    pub session_id: u64,
    /// Whether it is connected.
    pub transport: TransportState,
    /// Its network management state.
    pub application: AppState,
}

/// `BANK_STATE`: the state of every session of a bank (a snapshot, not a delta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankState {
    /// The bank.
    pub bank_id: String,
    /// Every session of the bank.
    pub sessions: Vec<SessionState>,
}

/// `SYNC_BEGIN`: the node enters sync state for the bank (first step of a switchover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBegin {
    /// Command id, chosen by `mups`; the reply carries it back.
    pub cmd_id: u64,
    /// The bank being switched.
    pub bank_id: String,
    /// The switchover this command belongs to.
    pub switch_id: u64,
    /// The node's part in it.
    pub role: SyncRole,
}

/// `CONTEXT`: one request in flight at the old node, handed over to the new one.
#[derive(Clone, PartialEq, Eq)]
pub struct Context {
    /// Command id: from the old node, its `SYNC_BEGIN`'s; relayed to the new node,
    /// a fresh one its `ACK` carries back.
    pub cmd_id: u64,
    /// The bank being switched.
    pub bank_id: String,
    /// The switchover this context belongs to.
    pub switch_id: u64,
    /// The request's correlation id (as in its [`Data`]).
    pub correlation_id: u64,
    /// The bank session the request belongs to.
    pub session_id: u64,
    /// Which way the request travelled.
    pub direction: Direction,
    /// The request's matching key (never card data).
    pub matching_key: String,
    /// When the request was received, microseconds since the Unix epoch.
    pub received_at_micros: u64,
    /// When the request times out, microseconds since the Unix epoch.
    pub deadline_micros: u64,
    /// The request's ISO 8583 bytes. Holds card data: never logged.
    pub message: Bytes,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("cmd_id", &self.cmd_id)
            .field("bank_id", &self.bank_id)
            .field("switch_id", &self.switch_id)
            .field("correlation_id", &self.correlation_id)
            .field("session_id", &self.session_id)
            .field("direction", &self.direction)
            .field("matching_key", &self.matching_key)
            .field("received_at_micros", &self.received_at_micros)
            .field("deadline_micros", &self.deadline_micros)
            .field("message", &Redacted(self.message.len()))
            .finish()
    }
}

/// `SYNC_END`: the old node has sent all its contexts; here are its runtime parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEnd {
    /// Its `SYNC_BEGIN`'s command id.
    pub cmd_id: u64,
    /// The bank being switched.
    pub bank_id: String,
    /// The switchover.
    pub switch_id: u64,
    /// How many `CONTEXT`s the node sent.
    pub context_count: u32,
    /// Runtime parameters of the bank at the old node, in order, as `(name, value)`.
    pub params: Vec<(String, String)>,
}

/// `ACTIVATE`: the node takes (or takes back) the bank's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activate {
    /// Command id, chosen by `mups`.
    pub cmd_id: u64,
    /// The bank.
    pub bank_id: String,
    /// The switchover.
    pub switch_id: u64,
    /// Runtime parameters to apply (from the old node's `SYNC_END`), as `(name, value)`.
    pub params: Vec<(String, String)>,
}

/// `DEACTIVATE`: the node gives up the bank's traffic (or, on a target, leaves
/// sync state and drops the contexts it took).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivate {
    /// Command id, chosen by `mups`.
    pub cmd_id: u64,
    /// The bank.
    pub bank_id: String,
    /// The switchover.
    pub switch_id: u64,
}

/// `ACK`: a command was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The command's id.
    pub cmd_id: u64,
    /// The command's bank.
    pub bank_id: String,
    /// The command's switchover.
    pub switch_id: u64,
}

/// `NACK`: a command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The command's id.
    pub cmd_id: u64,
    /// The command's bank.
    pub bank_id: String,
    /// The command's switchover.
    pub switch_id: u64,
    /// Why.
    pub reason: NackReason,
    /// Free text for the log.
    pub detail: String,
}

/// `CHANNEL` (local link): `mups`'s first frame after the handshake on each of its
/// two connections to `pups`, saying which one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Which connection this is.
    pub channel: LinkChannel,
}

/// `SESSION_UP` (local link, `pups` → `mups`): a bank session is open — a new one,
/// or, in the inventory after an attach, one that already was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUp {
    /// `pups`'s id for the session, as in [`Data::session_id`].
    pub session_id: u64,
    /// The bank.
    pub bank_id: String,
    /// The bank's end of the TCP connection, `ip:port`.
    pub peer: String,
    /// Our end of the TCP connection, `ip:port`.
    pub local: String,
    /// When the connection was opened, microseconds since the Unix epoch.
    pub opened_at_micros: u64,
}

/// `SESSION_DOWN` (local link, `pups` → `mups`): a bank session has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDown {
    /// The session.
    pub session_id: u64,
    /// Its bank.
    pub bank_id: String,
    /// Why it ended.
    pub reason: SessionDownReason,
    /// Free text for the log (e.g. the socket error).
    pub detail: String,
}

/// `INVENTORY_END` (local link, `pups` → `mups`): the `SESSION_UP`s of the inventory
/// that follows an attach have all been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryEnd {
    /// How many `SESSION_UP`s the inventory held.
    pub sessions: u32,
}

/// `CLOSE_SESSION` (local link, `mups` → `pups`): close a bank session's TCP
/// connection; `pups` answers with [`SessionDown`] (`ClosedByController`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseSession {
    /// The session.
    pub session_id: u64,
    /// Why, for `pups`'s log.
    pub reason: String,
}

/// `SESSION_PAUSE` (local link, `mups` → `pups`): stop reading from a bank session's
/// socket; the bank sees TCP back-pressure, not a disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPause {
    /// The session.
    pub session_id: u64,
}

/// `SESSION_RESUME` (local link, `mups` → `pups`): read from a paused session's
/// socket again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionResume {
    /// The session.
    pub session_id: u64,
}

/// A step of a planned appliance switchover between `mups` and its `pups` (local
/// link only): `mups` asks (`Quiesce`, `Checkpoint`, `Thaw`, `CloseFrozen`, `Lock`,
/// `Restore` + `RestoreEnd`, `Serve`), `pups` answers (`Quiesced`, `Snapshots`,
/// `Checkpointed`, `Thawed`, `Closed`, `Locked`, `Restored`, `Serving`, `Failed`).
/// See `docs/appliance-pair.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverOp {
    /// Stop reading every bank session; answer once what was read is with `mups`.
    Quiesce,
    /// Every session is quiet.
    Quiesced,
    /// Lock, checkpoint and freeze every session (kept in repair mode).
    Checkpoint,
    /// A batch of snapshots (`payload`: a `proto::snapshot` batch).
    Snapshots,
    /// Every session is frozen; `count` of them (`detail`: those refused and why).
    Checkpointed,
    /// Unfreeze: repair off, unlock, read again (the switchover was aborted).
    Thaw,
    /// Done thawing.
    Thawed,
    /// The twin serves the sessions: close the frozen copies silently, lock the ports.
    CloseFrozen,
    /// Done closing.
    Closed,
    /// Drop bank traffic to the VIP's bank ports (standby).
    Lock,
    /// The lock is in place.
    Locked,
    /// Snapshots to restore (`payload`: a batch).
    Restore,
    /// No more snapshots: `count` were sent; restore them (ports stay locked).
    RestoreEnd,
    /// Restored `count` sessions (`detail`: the failures and why).
    Restored,
    /// Unlock, send what the sessions held, read the banks: this appliance is active.
    Serve,
    /// Serving; `count` sessions.
    Serving,
    /// A step failed (`detail`).
    Failed,
}

impl HandoverOp {
    /// The code on the wire.
    pub const fn code(self) -> u8 {
        match self {
            Self::Quiesce => 1,
            Self::Quiesced => 2,
            Self::Checkpoint => 3,
            Self::Snapshots => 4,
            Self::Checkpointed => 5,
            Self::Thaw => 6,
            Self::Thawed => 7,
            Self::CloseFrozen => 8,
            Self::Closed => 9,
            Self::Lock => 10,
            Self::Locked => 11,
            Self::Restore => 12,
            Self::RestoreEnd => 13,
            Self::Restored => 14,
            Self::Serve => 15,
            Self::Serving => 16,
            Self::Failed => 17,
        }
    }

    /// The op of a code.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Quiesce,
            2 => Self::Quiesced,
            3 => Self::Checkpoint,
            4 => Self::Snapshots,
            5 => Self::Checkpointed,
            6 => Self::Thaw,
            7 => Self::Thawed,
            8 => Self::CloseFrozen,
            9 => Self::Closed,
            10 => Self::Lock,
            11 => Self::Locked,
            12 => Self::Restore,
            13 => Self::RestoreEnd,
            14 => Self::Restored,
            15 => Self::Serve,
            16 => Self::Serving,
            17 => Self::Failed,
            _ => return None,
        })
    }
}

/// `HANDOVER` (local link): one step of a planned appliance switchover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The switchover (0 for `Lock`/`Serve` outside one, e.g. at start).
    pub switch_id: u64,
    /// The step.
    pub op: HandoverOp,
    /// A count, where the op has one.
    pub count: u32,
    /// Free text: failures and their reasons.
    pub detail: String,
    /// Snapshot batch bytes, for `Snapshots` and `Restore`.
    pub payload: Bytes,
}

/// One FO link message.
///
/// Not `#[non_exhaustive]` on purpose: a new message type should break every
/// `match` that has to handle it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoMessage {
    /// `HELLO`.
    Hello(Hello),
    /// `HEARTBEAT`.
    Heartbeat(Heartbeat),
    /// `HEARTBEAT_ACK`.
    HeartbeatAck(HeartbeatAck),
    /// `DATA`.
    Data(Data),
    /// `BANK_STATE`.
    BankState(BankState),
    /// `SYNC_BEGIN`.
    SyncBegin(SyncBegin),
    /// `CONTEXT`.
    Context(Context),
    /// `SYNC_END`.
    SyncEnd(SyncEnd),
    /// `ACTIVATE`.
    Activate(Activate),
    /// `DEACTIVATE`.
    Deactivate(Deactivate),
    /// `ACK`.
    Ack(Ack),
    /// `NACK`.
    Nack(Nack),
    /// `CHANNEL` (local link only).
    Channel(Channel),
    /// `SESSION_UP` (local link only).
    SessionUp(SessionUp),
    /// `SESSION_DOWN` (local link only).
    SessionDown(SessionDown),
    /// `INVENTORY_END` (local link only).
    InventoryEnd(InventoryEnd),
    /// `CLOSE_SESSION` (local link only).
    CloseSession(CloseSession),
    /// `SESSION_PAUSE` (local link only).
    SessionPause(SessionPause),
    /// `SESSION_RESUME` (local link only).
    SessionResume(SessionResume),
    /// `HANDOVER` (local link only).
    Handover(Handover),
}

impl FoMessage {
    /// Which kind of message this is.
    pub fn kind(&self) -> FoKind {
        match self {
            Self::Hello(_) => FoKind::Hello,
            Self::Heartbeat(_) => FoKind::Heartbeat,
            Self::HeartbeatAck(_) => FoKind::HeartbeatAck,
            Self::Data(_) => FoKind::Data,
            Self::BankState(_) => FoKind::BankState,
            Self::SyncBegin(_) => FoKind::SyncBegin,
            Self::Context(_) => FoKind::Context,
            Self::SyncEnd(_) => FoKind::SyncEnd,
            Self::Activate(_) => FoKind::Activate,
            Self::Deactivate(_) => FoKind::Deactivate,
            Self::Ack(_) => FoKind::Ack,
            Self::Nack(_) => FoKind::Nack,
            Self::Channel(_) => FoKind::Channel,
            Self::SessionUp(_) => FoKind::SessionUp,
            Self::SessionDown(_) => FoKind::SessionDown,
            Self::InventoryEnd(_) => FoKind::InventoryEnd,
            Self::CloseSession(_) => FoKind::CloseSession,
            Self::SessionPause(_) => FoKind::SessionPause,
            Self::SessionResume(_) => FoKind::SessionResume,
            Self::Handover(_) => FoKind::Handover,
        }
    }

    /// The bank the message is about, if it names one: every message but `HELLO`,
    /// heartbeats, and the local-link messages other than `SESSION_UP` and
    /// `SESSION_DOWN` (the others name a session only, or nothing).
    pub fn bank_id(&self) -> Option<&str> {
        match self {
            Self::Hello(_)
            | Self::Heartbeat(_)
            | Self::HeartbeatAck(_)
            | Self::Channel(_)
            | Self::InventoryEnd(_)
            | Self::CloseSession(_)
            | Self::SessionPause(_)
            | Self::SessionResume(_)
            | Self::Handover(_) => None,
            Self::Data(m) => Some(&m.bank_id),
            Self::BankState(m) => Some(&m.bank_id),
            Self::SyncBegin(m) => Some(&m.bank_id),
            Self::Context(m) => Some(&m.bank_id),
            Self::SyncEnd(m) => Some(&m.bank_id),
            Self::Activate(m) => Some(&m.bank_id),
            Self::Deactivate(m) => Some(&m.bank_id),
            Self::Ack(m) => Some(&m.bank_id),
            Self::Nack(m) => Some(&m.bank_id),
            Self::SessionUp(m) => Some(&m.bank_id),
            Self::SessionDown(m) => Some(&m.bank_id),
        }
    }

    /// The one bank session the message is about, if any: `DATA`, `CONTEXT` and the
    /// local-link session messages (`BANK_STATE` lists several and gives `None`).
    pub fn session_id(&self) -> Option<u64> {
        match self {
            Self::Hello(_)
            | Self::Heartbeat(_)
            | Self::HeartbeatAck(_)
            | Self::BankState(_)
            | Self::SyncBegin(_)
            | Self::SyncEnd(_)
            | Self::Activate(_)
            | Self::Deactivate(_)
            | Self::Ack(_)
            | Self::Nack(_)
            | Self::Channel(_)
            | Self::InventoryEnd(_)
            | Self::Handover(_) => None,
            Self::Data(m) => Some(m.session_id),
            Self::Context(m) => Some(m.session_id),
            Self::SessionUp(m) => Some(m.session_id),
            Self::SessionDown(m) => Some(m.session_id),
            Self::CloseSession(m) => Some(m.session_id),
            Self::SessionPause(m) => Some(m.session_id),
            Self::SessionResume(m) => Some(m.session_id),
        }
    }

    /// The command id, for switchover commands and their replies (the local-link
    /// messages carry none).
    pub fn cmd_id(&self) -> Option<u64> {
        match self {
            Self::Hello(_)
            | Self::Heartbeat(_)
            | Self::HeartbeatAck(_)
            | Self::Data(_)
            | Self::BankState(_)
            | Self::Channel(_)
            | Self::SessionUp(_)
            | Self::SessionDown(_)
            | Self::InventoryEnd(_)
            | Self::CloseSession(_)
            | Self::SessionPause(_)
            | Self::SessionResume(_)
            | Self::Handover(_) => None,
            Self::SyncBegin(m) => Some(m.cmd_id),
            Self::Context(m) => Some(m.cmd_id),
            Self::SyncEnd(m) => Some(m.cmd_id),
            Self::Activate(m) => Some(m.cmd_id),
            Self::Deactivate(m) => Some(m.cmd_id),
            Self::Ack(m) => Some(m.cmd_id),
            Self::Nack(m) => Some(m.cmd_id),
        }
    }
}

macro_rules! from_variant {
    ($($variant:ident),+) => {
        $(impl From<$variant> for FoMessage {
            fn from(m: $variant) -> Self {
                Self::$variant(m)
            }
        })+
    };
}

from_variant!(
    Hello,
    Heartbeat,
    HeartbeatAck,
    Data,
    BankState,
    SyncBegin,
    Context,
    SyncEnd,
    Activate,
    Deactivate,
    Ack,
    Nack,
    Channel,
    SessionUp,
    SessionDown,
    InventoryEnd,
    CloseSession,
    SessionPause,
    SessionResume,
    Handover
);
