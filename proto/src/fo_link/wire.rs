//! Message bodies: a bounds-checked reader over a frame's `Bytes` (blobs come out
//! as slices of it, never copies) and a writer that checks every length prefix.

use bytes::Bytes;

use super::error::FoLinkError;
use super::message::{
    Ack, Activate, AppState, BankState, Channel, CloseSession, Context, Data, DataFlags, Deactivate,
    Direction, FoKind, FoMessage, Handover, HandoverOp, Heartbeat, HeartbeatAck, Hello, InventoryEnd,
    LinkChannel, Nack, NackReason, PeerRole, SessionDown, SessionDownReason, SessionPause, SessionResume,
    SessionState, SessionUp, SyncBegin, SyncEnd, SyncRole, TransportState,
};

/// Reads one body, field by field.
pub(super) struct Reader {
    buf: Bytes,
    pos: usize,
    kind: FoKind,
}

impl Reader {
    pub(super) fn new(kind: FoKind, body: Bytes) -> Self {
        Self { buf: body, pos: 0, kind }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], FoLinkError> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(FoLinkError::Truncated { kind: self.kind, field, needed: n, available });
        }
        self.pos += n;
        Ok(&self.buf[self.pos - n..self.pos])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FoLinkError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FoLinkError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FoLinkError> {
        self.array(field).map(u16::from_be_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FoLinkError> {
        self.array(field).map(u32::from_be_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FoLinkError> {
        self.array(field).map(u64::from_be_bytes)
    }

    fn string(&mut self, field: &'static str) -> Result<String, FoLinkError> {
        let len = usize::from(self.u16(field)?);
        let kind = self.kind;
        let raw = self.take(field, len)?;
        std::str::from_utf8(raw).map(str::to_owned).map_err(|_| FoLinkError::InvalidUtf8 { kind, field })
    }

    fn blob(&mut self, field: &'static str) -> Result<Bytes, FoLinkError> {
        // A u32 always fits: frames are at most u32::MAX bytes, so usize is at least 32 bits here.
        let len = self.u32(field)? as usize;
        self.take(field, len)?;
        Ok(self.buf.slice(self.pos - len..self.pos))
    }

    fn list<T>(
        &mut self,
        field: &'static str,
        mut item: impl FnMut(&mut Self) -> Result<T, FoLinkError>,
    ) -> Result<Vec<T>, FoLinkError> {
        let count = usize::from(self.u16(field)?);
        // Every item takes at least one byte: never reserve more than the body could hold.
        let mut out = Vec::with_capacity(count.min(self.buf.len() - self.pos));
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    fn enumerated<T>(&mut self, field: &'static str, from: fn(u8) -> Option<T>) -> Result<T, FoLinkError> {
        let value = self.u8(field)?;
        from(value).ok_or(FoLinkError::BadEnum { kind: self.kind, field, value })
    }

    fn flags(&mut self, field: &'static str) -> Result<DataFlags, FoLinkError> {
        let bits = self.u16(field)?;
        DataFlags::from_bits(bits).ok_or(FoLinkError::UnknownFlags {
            kind: self.kind,
            field,
            bits: bits & !DataFlags::ALL.bits(),
        })
    }

    fn params(&mut self) -> Result<Vec<(String, String)>, FoLinkError> {
        self.list("params", |r| Ok((r.string("params.name")?, r.string("params.value")?)))
    }

    fn finish(self) -> Result<(), FoLinkError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            count => Err(FoLinkError::TrailingBytes { kind: self.kind, count }),
        }
    }

    /// Reads the whole body as a message of the reader's kind.
    pub(super) fn message(mut self) -> Result<FoMessage, FoLinkError> {
        let r = &mut self;
        let message = match r.kind {
            FoKind::Hello => FoMessage::Hello(Hello {
                node_id: r.string("node_id")?,
                role: r.enumerated("role", PeerRole::from_code)?,
                min_version: r.u8("min_version")?,
                max_version: r.u8("max_version")?,
                software: r.string("software")?,
            }),
            FoKind::Heartbeat => FoMessage::Heartbeat(Heartbeat {
                seq: r.u64("seq")?,
                sent_at_micros: r.u64("sent_at_micros")?,
            }),
            FoKind::HeartbeatAck => FoMessage::HeartbeatAck(HeartbeatAck {
                seq: r.u64("seq")?,
                sent_at_micros: r.u64("sent_at_micros")?,
            }),
            FoKind::Data => FoMessage::Data(Data {
                bank_id: r.string("bank_id")?,
                session_id: r.u64("session_id")?,
                direction: r.enumerated("direction", Direction::from_code)?,
                correlation_id: r.u64("correlation_id")?,
                flags: r.flags("flags")?,
                message: r.blob("message")?,
            }),
            FoKind::BankState => FoMessage::BankState(BankState {
                bank_id: r.string("bank_id")?,
                sessions: r.list("sessions", |r| {
                    Ok(SessionState {
                        session_id: r.u64("sessions.session_id")?,
                        transport: r.enumerated("sessions.transport", TransportState::from_code)?,
                        application: r.enumerated("sessions.application", AppState::from_code)?,
                    })
                })?,
            }),
            FoKind::SyncBegin => FoMessage::SyncBegin(SyncBegin {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
                role: r.enumerated("role", SyncRole::from_code)?,
            }),
            FoKind::Context => FoMessage::Context(Context {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
                correlation_id: r.u64("correlation_id")?,
                session_id: r.u64("session_id")?,
                direction: r.enumerated("direction", Direction::from_code)?,
                matching_key: r.string("matching_key")?,
                received_at_micros: r.u64("received_at_micros")?,
                deadline_micros: r.u64("deadline_micros")?,
                message: r.blob("message")?,
            }),
            FoKind::SyncEnd => FoMessage::SyncEnd(SyncEnd {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
                context_count: r.u32("context_count")?,
                params: r.params()?,
            }),
            FoKind::Activate => FoMessage::Activate(Activate {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
                params: r.params()?,
            }),
            FoKind::Deactivate => FoMessage::Deactivate(Deactivate {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
            }),
            FoKind::Ack => FoMessage::Ack(Ack {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
            }),
            FoKind::Nack => FoMessage::Nack(Nack {
                cmd_id: r.u64("cmd_id")?,
                bank_id: r.string("bank_id")?,
                switch_id: r.u64("switch_id")?,
                reason: NackReason::from_code(r.u16("reason")?),
                detail: r.string("detail")?,
            }),
            FoKind::Channel => {
                FoMessage::Channel(Channel { channel: r.enumerated("channel", LinkChannel::from_code)? })
            }
            FoKind::SessionUp => FoMessage::SessionUp(SessionUp {
                session_id: r.u64("session_id")?,
                bank_id: r.string("bank_id")?,
                peer: r.string("peer")?,
                local: r.string("local")?,
                opened_at_micros: r.u64("opened_at_micros")?,
            }),
            FoKind::SessionDown => FoMessage::SessionDown(SessionDown {
                session_id: r.u64("session_id")?,
                bank_id: r.string("bank_id")?,
                reason: SessionDownReason::from_code(r.u16("reason")?),
                detail: r.string("detail")?,
            }),
            FoKind::InventoryEnd => FoMessage::InventoryEnd(InventoryEnd { sessions: r.u32("sessions")? }),
            FoKind::CloseSession => FoMessage::CloseSession(CloseSession {
                session_id: r.u64("session_id")?,
                reason: r.string("reason")?,
            }),
            FoKind::SessionPause => {
                FoMessage::SessionPause(SessionPause { session_id: r.u64("session_id")? })
            }
            FoKind::SessionResume => {
                FoMessage::SessionResume(SessionResume { session_id: r.u64("session_id")? })
            }
            FoKind::Handover => FoMessage::Handover(Handover {
                switch_id: r.u64("switch_id")?,
                op: r.enumerated("op", HandoverOp::from_code)?,
                count: r.u32("count")?,
                detail: r.string("detail")?,
                payload: r.blob("payload")?,
            }),
        };
        self.finish()?;
        Ok(message)
    }
}

/// Appends one body to a `Vec`, checking every length prefix.
pub(super) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    kind: FoKind,
}

impl<'a> Writer<'a> {
    pub(super) fn new(kind: FoKind, out: &'a mut Vec<u8>) -> Self {
        Self { out, kind }
    }

    fn too_long(&self, field: &'static str, len: usize, max: usize) -> FoLinkError {
        FoLinkError::TooLong { kind: self.kind, field, len, max }
    }

    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    fn count(&mut self, field: &'static str, n: usize) -> Result<(), FoLinkError> {
        let n = u16::try_from(n).map_err(|_| self.too_long(field, n, u16::MAX.into()))?;
        self.u16(n);
        Ok(())
    }

    fn string(&mut self, field: &'static str, s: &str) -> Result<(), FoLinkError> {
        self.count(field, s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn blob(&mut self, field: &'static str, b: &[u8]) -> Result<(), FoLinkError> {
        let len = u32::try_from(b.len()).map_err(|_| self.too_long(field, b.len(), u32::MAX as usize))?;
        self.u32(len);
        self.out.extend_from_slice(b);
        Ok(())
    }

    fn params(&mut self, params: &[(String, String)]) -> Result<(), FoLinkError> {
        self.count("params", params.len())?;
        for (name, value) in params {
            self.string("params.name", name)?;
            self.string("params.value", value)?;
        }
        Ok(())
    }

    /// Appends the body of `message` (whose kind must be the writer's).
    pub(super) fn message(&mut self, message: &FoMessage) -> Result<(), FoLinkError> {
        match message {
            FoMessage::Hello(m) => {
                self.string("node_id", &m.node_id)?;
                self.u8(m.role.code());
                self.u8(m.min_version);
                self.u8(m.max_version);
                self.string("software", &m.software)?;
            }
            FoMessage::Heartbeat(Heartbeat { seq, sent_at_micros })
            | FoMessage::HeartbeatAck(HeartbeatAck { seq, sent_at_micros }) => {
                self.u64(*seq);
                self.u64(*sent_at_micros);
            }
            FoMessage::Data(m) => {
                self.string("bank_id", &m.bank_id)?;
                self.u64(m.session_id);
                self.u8(m.direction.code());
                self.u64(m.correlation_id);
                self.u16(m.flags.bits());
                self.blob("message", &m.message)?;
            }
            FoMessage::BankState(m) => {
                self.string("bank_id", &m.bank_id)?;
                self.count("sessions", m.sessions.len())?;
                for s in &m.sessions {
                    self.u64(s.session_id);
                    self.u8(s.transport.code());
                    self.u8(s.application.code());
                }
            }
            FoMessage::SyncBegin(m) => {
                self.command(m.cmd_id, &m.bank_id, m.switch_id)?;
                self.u8(m.role.code());
            }
            FoMessage::Context(m) => {
                self.command(m.cmd_id, &m.bank_id, m.switch_id)?;
                self.u64(m.correlation_id);
                self.u64(m.session_id);
                self.u8(m.direction.code());
                self.string("matching_key", &m.matching_key)?;
                self.u64(m.received_at_micros);
                self.u64(m.deadline_micros);
                self.blob("message", &m.message)?;
            }
            FoMessage::SyncEnd(m) => {
                self.command(m.cmd_id, &m.bank_id, m.switch_id)?;
                self.u32(m.context_count);
                self.params(&m.params)?;
            }
            FoMessage::Activate(m) => {
                self.command(m.cmd_id, &m.bank_id, m.switch_id)?;
                self.params(&m.params)?;
            }
            FoMessage::Deactivate(Deactivate { cmd_id, bank_id, switch_id })
            | FoMessage::Ack(Ack { cmd_id, bank_id, switch_id }) => {
                self.command(*cmd_id, bank_id, *switch_id)?;
            }
            FoMessage::Nack(m) => {
                self.command(m.cmd_id, &m.bank_id, m.switch_id)?;
                self.u16(m.reason.code());
                self.string("detail", &m.detail)?;
            }
            FoMessage::Channel(m) => self.u8(m.channel.code()),
            FoMessage::SessionUp(m) => {
                self.u64(m.session_id);
                self.string("bank_id", &m.bank_id)?;
                self.string("peer", &m.peer)?;
                self.string("local", &m.local)?;
                self.u64(m.opened_at_micros);
            }
            FoMessage::SessionDown(m) => {
                self.u64(m.session_id);
                self.string("bank_id", &m.bank_id)?;
                self.u16(m.reason.code());
                self.string("detail", &m.detail)?;
            }
            FoMessage::InventoryEnd(m) => self.u32(m.sessions),
            FoMessage::CloseSession(m) => {
                self.u64(m.session_id);
                self.string("reason", &m.reason)?;
            }
            FoMessage::SessionPause(SessionPause { session_id })
            | FoMessage::SessionResume(SessionResume { session_id }) => self.u64(*session_id),
            FoMessage::Handover(m) => {
                self.u64(m.switch_id);
                self.u8(m.op.code());
                self.u32(m.count);
                self.string("detail", &m.detail)?;
                self.blob("payload", &m.payload)?;
            }
        }
        Ok(())
    }

    /// The fields every switchover command and reply starts with.
    fn command(&mut self, cmd_id: u64, bank_id: &str, switch_id: u64) -> Result<(), FoLinkError> {
        self.u64(cmd_id);
        self.string("bank_id", bank_id)?;
        self.u64(switch_id);
        Ok(())
    }
}
