//! Session snapshots: one bank TCP session's checkpoint (kernel TCP state, socket
//! options, and the session's application state), and the batch of them an
//! appliance ships to its twin at a planned switchover (flow F5).
//!
//! The structures are plain data: `pups::sys` fills a [`TcpSnapshot`] from a socket
//! in `TCP_REPAIR` mode and rebuilds a socket from one; `pups` adds the
//! [`SessionState`] it keeps in user space. This module only encodes and decodes
//! them, with no I/O.
//!
//! # Wire format
//!
//! Described byte by byte in `docs/session-snapshot.md`. In short: a 4-byte magic
//! (`PSNP`), a big-endian `u16` format version, a kind byte (one session or a
//! batch), then the fields in a fixed order, every variable-length field preceded
//! by its `u32` length. Decoding checks every length against what is left before
//! allocating, so hostile input cannot make it allocate more than it was given;
//! it never panics and names the field it choked on. A version newer than
//! [`VERSION`] is refused with [`SnapshotError::UnsupportedVersion`]: a newer
//! appliance may have added state that this one would silently drop.
//!
//! The encoding is canonical (booleans are 0 or 1, absent options are one 0 byte,
//! nothing trails): decoding then encoding gives back the same bytes.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use thiserror::Error;

/// The first bytes of every encoded snapshot.
pub const MAGIC: [u8; 4] = *b"PSNP";

/// The format version this build writes, and the newest it reads.
pub const VERSION: u16 = 1;

/// The largest window scale shift TCP allows (RFC 7323 §2.3); the kernel refuses
/// more with `EFBIG`.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// Length of an ISO 8583 TPDU header.
const TPDU_LEN: usize = 5;

/// What an encoded snapshot holds (the byte after the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One [`SessionSnapshot`].
    Session = 1,
    /// A [`SnapshotBatch`].
    Batch = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Session),
            2 => Some(Self::Batch),
            _ => None,
        }
    }
}

/// The kernel's `struct tcp_repair_window`: what `TCP_REPAIR_WINDOW` reads and
/// writes. Sequence numbers are absolute (not relative to the ISN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RepairWindow {
    /// Sequence number of the segment that last updated the send window.
    pub snd_wl1: u32,
    /// The peer's advertised window, in bytes (already scaled).
    pub snd_wnd: u32,
    /// The largest window the peer ever advertised.
    pub max_window: u32,
    /// Our advertised receive window, in bytes.
    pub rcv_wnd: u32,
    /// `rcv_nxt` when the receive window was last advertised.
    pub rcv_wup: u32,
}

/// Window scale shifts negotiated in the SYN exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowScale {
    /// Shift applied to the windows the peer advertises.
    pub snd: u8,
    /// Shift applied to the windows we advertise.
    pub rcv: u8,
}

/// Keepalive settings (`SO_KEEPALIVE` on, with its three parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// `TCP_KEEPIDLE`, seconds.
    pub idle_s: u32,
    /// `TCP_KEEPINTVL`, seconds.
    pub interval_s: u32,
    /// `TCP_KEEPCNT`.
    pub count: u32,
}

/// Socket options that are not part of TCP repair and must be re-applied by hand
/// after a restore. `None` means "left at the kernel default".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketOptions {
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `SO_KEEPALIVE` and its parameters, if keepalive is on.
    pub keepalive: Option<KeepAlive>,
    /// `TCP_USER_TIMEOUT`, milliseconds, if set (non-zero).
    pub user_timeout_ms: Option<u32>,
    /// `SO_SNDBUF` as the kernel reports it (twice the requested value), if the
    /// buffer size was fixed rather than autotuned.
    pub send_buffer: Option<u32>,
    /// `SO_RCVBUF` as the kernel reports it, if fixed.
    pub recv_buffer: Option<u32>,
    /// `SO_MARK`, if set (non-zero).
    pub mark: Option<u32>,
    /// `IP_TOS` (IPv4) or `IPV6_TCLASS` (IPv6), if set (non-zero).
    pub tos: Option<u8>,
}

/// One established TCP connection's kernel state, as `TCP_REPAIR` exposes it.
///
/// The send queue holds every byte written and not yet acknowledged by the peer;
/// its last [`send_unsent`](Self::send_unsent) bytes had not been transmitted at
/// all. A restore re-sends the whole queue as new data (see `pups::sys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSnapshot {
    /// Our end (the VIP and the bank's port).
    pub local: SocketAddr,
    /// The bank's end.
    pub remote: SocketAddr,
    /// `TCP_QUEUE_SEQ` of the send queue: the sequence number after the last byte
    /// written (`write_seq`).
    pub snd_seq: u32,
    /// `TCP_QUEUE_SEQ` of the receive queue: the next sequence number expected
    /// from the peer (`rcv_nxt`).
    pub rcv_seq: u32,
    /// Bytes written and not acknowledged, oldest first.
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never transmitted.
    pub send_unsent: u32,
    /// Bytes received (and acknowledged) that the application had not read.
    pub recv_queue: Vec<u8>,
    /// The MSS clamp negotiated in the SYN exchange.
    pub mss: u16,
    /// Window scaling, if negotiated.
    pub window_scale: Option<WindowScale>,
    /// SACK permitted was negotiated.
    pub sack_ok: bool,
    /// TCP timestamps were negotiated.
    pub timestamps_ok: bool,
    /// `TCP_TIMESTAMP`: the TSval the connection would send now (the clock plus
    /// its offset; since Linux 6.7 the low bit flags microsecond timestamps).
    /// Restoring it keeps TSval from going backwards, which the peer would drop
    /// as PAWS.
    pub timestamp: u32,
    /// `TCP_REPAIR_WINDOW`.
    pub window: RepairWindow,
    /// Options re-applied after the restore.
    pub options: SocketOptions,
}

impl TcpSnapshot {
    /// The sequence number of the first byte of `send_queue` (`snd_una`).
    pub fn send_queue_seq(&self) -> u32 {
        self.snd_seq.wrapping_sub(self.send_queue.len() as u32)
    }

    /// The sequence number of the first byte of `recv_queue`.
    pub fn recv_queue_seq(&self) -> u32 {
        self.rcv_seq.wrapping_sub(self.recv_queue.len() as u32)
    }

    /// Bytes of `send_queue` that were transmitted and not acknowledged.
    pub fn send_unacked(&self) -> usize {
        self.send_queue.len().saturating_sub(self.send_unsent as usize)
    }

    fn validate(&self) -> Result<(), SnapshotError> {
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(invalid("tcp.remote", "address family differs from tcp.local"));
        }
        if self.send_unsent as usize > self.send_queue.len() {
            return Err(invalid("tcp.send_unsent", "larger than the send queue"));
        }
        if let Some(ws) = self.window_scale
            && (ws.snd > MAX_WINDOW_SCALE || ws.rcv > MAX_WINDOW_SCALE)
        {
            return Err(invalid("tcp.window_scale", "shift over 14"));
        }
        Ok(())
    }
}

/// Where the bank stands at the ISO 8583 network-management level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SignOnState {
    /// No sign-on or sign-off seen on this session.
    #[default]
    Unknown = 0,
    /// Signed on (0800/0810 DE70=001).
    SignedOn = 1,
    /// Signed off (DE70=002).
    SignedOff = 2,
    /// Signed on, but echo tests (DE70=301) are failing.
    EchoFailing = 3,
}

impl SignOnState {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Unknown),
            1 => Some(Self::SignedOn),
            2 => Some(Self::SignedOff),
            3 => Some(Self::EchoFailing),
            _ => None,
        }
    }
}

/// What the session keeps in user space: the kernel queues move with the socket,
/// these do not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionState {
    /// The bank's id in the configuration.
    pub bank_id: String,
    /// `pups`'s session id (as announced to `mups` in `SESSION_UP`).
    pub session_id: u64,
    /// Bytes read from the socket that do not yet make a whole frame.
    pub partial_frame: Vec<u8>,
    /// The last TPDU the bank sent, swapped into replies.
    pub last_tpdu: Option<[u8; TPDU_LEN]>,
    /// The last fixed header the bank sent, copied into replies.
    pub last_header: Option<Vec<u8>>,
    /// Sign-on state.
    pub sign_on: SignOnState,
    /// `mups`'s matching state for this session, opaque here.
    pub matching: Vec<u8>,
}

/// One bank session's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The socket.
    pub tcp: TcpSnapshot,
    /// The session's user-space state.
    pub app: SessionState,
}

impl SessionSnapshot {
    /// Encodes the snapshot on its own (kind [`Kind::Session`]).
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut w = Writer::header(Kind::Session);
        w.session(self)?;
        Ok(w.buf)
    }

    /// Decodes a whole buffer holding one snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader::header(bytes, Kind::Session)?;
        let s = r.session()?;
        r.finish()?;
        Ok(s)
    }
}

/// The snapshots an appliance ships to its twin in one go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotBatch {
    /// The appliance the sessions come from.
    pub appliance_id: String,
    /// When the batch was taken, microseconds since the Unix epoch (the taker's
    /// clock; for logs and for ageing timestamps in a crash restore).
    pub taken_at_micros: u64,
    /// The sessions.
    pub sessions: Vec<SessionSnapshot>,
}

impl SnapshotBatch {
    /// Encodes the batch (kind [`Kind::Batch`]).
    pub fn encode(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut w = Writer::header(Kind::Batch);
        w.string("batch.appliance_id", &self.appliance_id)?;
        w.u64(self.taken_at_micros);
        w.len("batch.sessions", self.sessions.len())?;
        for s in &self.sessions {
            // Each session is length-prefixed so a reader can skip or report one
            // without understanding the next.
            let mut inner = Writer { buf: Vec::new() };
            inner.session(s)?;
            w.bytes("batch.session", &inner.buf)?;
        }
        Ok(w.buf)
    }

    /// Decodes a whole buffer holding one batch.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader::header(bytes, Kind::Batch)?;
        let appliance_id = r.string("batch.appliance_id")?;
        let taken_at_micros = r.u64("batch.taken_at_micros")?;
        let count = r.u32("batch.sessions")?;
        // Each session takes far more than one byte, so a count beyond what is
        // left is a lie; checked before reserving room for it.
        if count as usize > r.remaining() {
            return Err(SnapshotError::Truncated {
                field: "batch.sessions",
                needed: u64::from(count),
                available: r.remaining(),
            });
        }
        let mut sessions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let body = r.bytes("batch.session")?;
            let mut inner = Reader { buf: body, pos: 0 };
            sessions.push(inner.session()?);
            inner.finish()?;
        }
        r.finish()?;
        Ok(Self { appliance_id, taken_at_micros, sessions })
    }
}

/// Why a snapshot could not be decoded (or encoded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The buffer does not start with [`MAGIC`]: not a snapshot at all.
    #[error("not a session snapshot: bad magic {0:02x?}")]
    BadMagic(Vec<u8>),
    /// Written by a newer format than this build reads.
    #[error(
        "session snapshot format version {found} is not supported (this build reads versions 1 to {supported}); \
         upgrade this appliance to match its twin"
    )]
    UnsupportedVersion {
        /// Version in the buffer.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// A session was given where a batch was expected, or the reverse.
    #[error("snapshot kind {found} where kind {expected:?} was expected")]
    WrongKind {
        /// What the caller asked for.
        expected: Kind,
        /// The kind byte found.
        found: u8,
    },
    /// The buffer ends inside a field.
    #[error("snapshot truncated in {field}: {needed} bytes needed, {available} left")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: u64,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid snapshot field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes follow the last field.
    #[error("{count} unexpected bytes after the snapshot")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A field is too long for its `u32` length (encoding only).
    #[error("snapshot field {field} is too long to encode ({len} bytes)")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

fn invalid(field: &'static str, reason: &'static str) -> SnapshotError {
    SnapshotError::Invalid { field, reason }
}

struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn header(kind: Kind) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&VERSION.to_be_bytes());
        buf.push(kind as u8);
        Self { buf }
    }

    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    fn len(&mut self, field: &'static str, len: usize) -> Result<(), SnapshotError> {
        let n = u32::try_from(len).map_err(|_| SnapshotError::TooLong { field, len })?;
        self.u32(n);
        Ok(())
    }

    fn bytes(&mut self, field: &'static str, v: &[u8]) -> Result<(), SnapshotError> {
        self.len(field, v.len())?;
        self.buf.extend_from_slice(v);
        Ok(())
    }

    fn string(&mut self, field: &'static str, v: &str) -> Result<(), SnapshotError> {
        self.bytes(field, v.as_bytes())
    }

    fn opt_u32(&mut self, v: Option<u32>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }

    fn addr(&mut self, a: &SocketAddr) {
        match a {
            SocketAddr::V4(a) => {
                self.u8(4);
                self.buf.extend_from_slice(&a.ip().octets());
                self.u16(a.port());
            }
            SocketAddr::V6(a) => {
                self.u8(6);
                self.buf.extend_from_slice(&a.ip().octets());
                self.u16(a.port());
                self.u32(a.flowinfo());
                self.u32(a.scope_id());
            }
        }
    }

    fn session(&mut self, s: &SessionSnapshot) -> Result<(), SnapshotError> {
        let t = &s.tcp;
        t.validate()?;
        self.addr(&t.local);
        self.addr(&t.remote);
        self.u32(t.snd_seq);
        self.u32(t.rcv_seq);
        self.bytes("tcp.send_queue", &t.send_queue)?;
        self.u32(t.send_unsent);
        self.bytes("tcp.recv_queue", &t.recv_queue)?;
        self.u16(t.mss);
        match t.window_scale {
            None => self.u8(0),
            Some(ws) => {
                self.u8(1);
                self.u8(ws.snd);
                self.u8(ws.rcv);
            }
        }
        self.bool(t.sack_ok);
        self.bool(t.timestamps_ok);
        self.u32(t.timestamp);
        let w = &t.window;
        for v in [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup] {
            self.u32(v);
        }
        let o = &t.options;
        self.bool(o.nodelay);
        match o.keepalive {
            None => self.u8(0),
            Some(k) => {
                self.u8(1);
                self.u32(k.idle_s);
                self.u32(k.interval_s);
                self.u32(k.count);
            }
        }
        self.opt_u32(o.user_timeout_ms);
        self.opt_u32(o.send_buffer);
        self.opt_u32(o.recv_buffer);
        self.opt_u32(o.mark);
        match o.tos {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u8(v);
            }
        }
        let a = &s.app;
        self.string("app.bank_id", &a.bank_id)?;
        self.u64(a.session_id);
        self.bytes("app.partial_frame", &a.partial_frame)?;
        match a.last_tpdu {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.buf.extend_from_slice(&t);
            }
        }
        match &a.last_header {
            None => self.u8(0),
            Some(h) => {
                self.u8(1);
                self.bytes("app.last_header", h)?;
            }
        }
        self.u8(a.sign_on as u8);
        self.bytes("app.matching", &a.matching)?;
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn header(buf: &'a [u8], expected: Kind) -> Result<Self, SnapshotError> {
        let mut r = Self { buf, pos: 0 };
        let magic = r.take("magic", MAGIC.len()).map_err(|_| SnapshotError::BadMagic(buf.to_vec()))?;
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic(magic.to_vec()));
        }
        let version = r.u16("version")?;
        if version == 0 || version > VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version, supported: VERSION });
        }
        let kind = r.u8("kind")?;
        if Kind::from_u8(kind) != Some(expected) {
            return Err(SnapshotError::WrongKind { expected, found: kind });
        }
        Ok(r)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn finish(&self) -> Result<(), SnapshotError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(SnapshotError::TrailingBytes { count }),
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], SnapshotError> {
        let available = self.remaining();
        if n > available {
            return Err(SnapshotError::Truncated { field, needed: n as u64, available });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SnapshotError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(field, N)?);
        Ok(a)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, SnapshotError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, SnapshotError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, SnapshotError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(invalid(field, "boolean is neither 0 nor 1")),
        }
    }

    /// Reads an option's presence byte.
    fn present(&mut self, field: &'static str) -> Result<bool, SnapshotError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(invalid(field, "presence byte is neither 0 nor 1")),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], SnapshotError> {
        let len = self.u32(field)?;
        self.take(field, len as usize)
    }

    fn string(&mut self, field: &'static str) -> Result<String, SnapshotError> {
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| invalid(field, "not UTF-8"))
    }

    fn opt_u32(&mut self, field: &'static str) -> Result<Option<u32>, SnapshotError> {
        Ok(if self.present(field)? { Some(self.u32(field)?) } else { None })
    }

    fn addr(&mut self, field: &'static str) -> Result<SocketAddr, SnapshotError> {
        match self.u8(field)? {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>(field)?);
                let port = self.u16(field)?;
                Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>(field)?);
                let port = self.u16(field)?;
                let flowinfo = self.u32(field)?;
                let scope_id = self.u32(field)?;
                Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, flowinfo, scope_id)))
            }
            _ => Err(invalid(field, "address family is neither 4 nor 6")),
        }
    }

    fn session(&mut self) -> Result<SessionSnapshot, SnapshotError> {
        let local = self.addr("tcp.local")?;
        let remote = self.addr("tcp.remote")?;
        let snd_seq = self.u32("tcp.snd_seq")?;
        let rcv_seq = self.u32("tcp.rcv_seq")?;
        let send_queue = self.bytes("tcp.send_queue")?.to_vec();
        let send_unsent = self.u32("tcp.send_unsent")?;
        let recv_queue = self.bytes("tcp.recv_queue")?.to_vec();
        let mss = self.u16("tcp.mss")?;
        let window_scale = if self.present("tcp.window_scale")? {
            Some(WindowScale { snd: self.u8("tcp.window_scale")?, rcv: self.u8("tcp.window_scale")? })
        } else {
            None
        };
        let sack_ok = self.bool("tcp.sack_ok")?;
        let timestamps_ok = self.bool("tcp.timestamps_ok")?;
        let timestamp = self.u32("tcp.timestamp")?;
        let window = RepairWindow {
            snd_wl1: self.u32("tcp.window.snd_wl1")?,
            snd_wnd: self.u32("tcp.window.snd_wnd")?,
            max_window: self.u32("tcp.window.max_window")?,
            rcv_wnd: self.u32("tcp.window.rcv_wnd")?,
            rcv_wup: self.u32("tcp.window.rcv_wup")?,
        };
        let nodelay = self.bool("tcp.options.nodelay")?;
        let keepalive = if self.present("tcp.options.keepalive")? {
            Some(KeepAlive {
                idle_s: self.u32("tcp.options.keepalive.idle_s")?,
                interval_s: self.u32("tcp.options.keepalive.interval_s")?,
                count: self.u32("tcp.options.keepalive.count")?,
            })
        } else {
            None
        };
        let user_timeout_ms = self.opt_u32("tcp.options.user_timeout_ms")?;
        let send_buffer = self.opt_u32("tcp.options.send_buffer")?;
        let recv_buffer = self.opt_u32("tcp.options.recv_buffer")?;
        let mark = self.opt_u32("tcp.options.mark")?;
        let tos = if self.present("tcp.options.tos")? { Some(self.u8("tcp.options.tos")?) } else { None };
        let tcp = TcpSnapshot {
            local,
            remote,
            snd_seq,
            rcv_seq,
            send_queue,
            send_unsent,
            recv_queue,
            mss,
            window_scale,
            sack_ok,
            timestamps_ok,
            timestamp,
            window,
            options: SocketOptions {
                nodelay,
                keepalive,
                user_timeout_ms,
                send_buffer,
                recv_buffer,
                mark,
                tos,
            },
        };
        tcp.validate()?;
        let bank_id = self.string("app.bank_id")?;
        let session_id = self.u64("app.session_id")?;
        let partial_frame = self.bytes("app.partial_frame")?.to_vec();
        let last_tpdu = if self.present("app.last_tpdu")? {
            Some(self.array::<TPDU_LEN>("app.last_tpdu")?)
        } else {
            None
        };
        let last_header = if self.present("app.last_header")? {
            Some(self.bytes("app.last_header")?.to_vec())
        } else {
            None
        };
        let sign_on = SignOnState::from_u8(self.u8("app.sign_on")?)
            .ok_or_else(|| invalid("app.sign_on", "unknown sign-on state"))?;
        let matching = self.bytes("app.matching")?.to_vec();
        let app =
            SessionState { bank_id, session_id, partial_frame, last_tpdu, last_header, sign_on, matching };
        Ok(SessionSnapshot { tcp, app })
    }
}
