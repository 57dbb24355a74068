//! The local link server: `pups`'s end of the Unix socket `mups` attaches to
//! (`docs/fo-link-protocol.md`, "Local link (pups ↔ mups)").
//!
//! `mups` connects twice. On each connection both sides send `HELLO` at once
//! (`pups` with role `Edge`), then `mups` says which channel it is (`CHANNEL`).
//! Once both the data and the control channel are in, `mups` is *attached*: the
//! inventory is queued on the control channel (see the `hub` module), the sessions
//! start reading, and `DATA` flows on the data channel. One `mups` at a time: a
//! connection for a channel while attached is refused. A channel waiting for its
//! twin is replaced by a newer connection for the same channel (the older one
//! belonged to a `mups` that went away before finishing its attach).
//!
//! Heartbeats run both ways on the control channel. Any connection lost, a
//! message that does not decode or belongs to the FO link only, or `mups` missing
//! `[pups].heartbeat_misses` heartbeats in a row detaches it: both connections are
//! closed, the sessions stay open but stop reading, and what they read stays
//! queued for the next `mups`.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use proto::fo_link::{
    self, Data, DataFlags, Direction, FoLinkDecoder, FoLinkError, FoMessage, Hello, LinkChannel, PeerRole,
    SessionDownReason,
};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::error::PupsError;
use crate::handover::Request;
use crate::hub::{Hub, ToBankRoute};
use crate::metrics::LinkDrop;
use crate::session::{OUTBOUND_QUEUE, SessionCmd, ToBankError, lock};

/// How long a new connection has to send `HELLO` and `CHANNEL`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the control channel may take to write its last events at shutdown.
const CONTROL_FLUSH: Duration = Duration::from_secs(1);

/// Most `DATA` frames written in one batch (all of one session).
const DATA_BATCH: usize = 64;

/// An error on the local link: a frame that does not decode, or I/O.
#[derive(Debug, thiserror::Error)]
pub enum LinkCodecError {
    /// The peer sent something the FO link codec refuses; the link cannot go on.
    #[error("{0}")]
    Frame(#[from] FoLinkError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The FO link codec ([`proto::fo_link`]) as a tokio codec, for the local link.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkCodec {
    decoder: FoLinkDecoder,
}

impl Decoder for LinkCodec {
    type Item = FoMessage;
    type Error = LinkCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<FoMessage>, LinkCodecError> {
        Ok(self.decoder.decode(src)?)
    }
}

impl Encoder<FoMessage> for LinkCodec {
    type Error = LinkCodecError;

    fn encode(&mut self, item: FoMessage, dst: &mut BytesMut) -> Result<(), LinkCodecError> {
        dst.extend_from_slice(&item.to_vec()?);
        Ok(())
    }
}

/// Binds the local link socket: a stale socket file (nobody listening) is
/// removed first; permissions are set to 0660.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, PupsError> {
    let fail = |message: String| PupsError::LocalLink { path: path.to_owned(), message };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(fail("exists and is not a socket; not removing it".into()));
        }
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail("another process is listening on it (is pups already running?)".into()));
            }
            std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
            info!(path = %path.display(), "removed a stale local link socket");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| fail(format!("cannot set permissions: {e}")))?;
    Ok(listener)
}

/// A `mups` connection past its handshake.
struct Conn {
    /// Connection number, for the log.
    no: u64,
    /// `mups`'s instance name from its `HELLO`.
    name: String,
    reader: FramedRead<OwnedReadHalf, LinkCodec>,
    writer: OwnedWriteHalf,
}

/// What the link manager hears.
enum Event {
    /// A connection has said which channel it is.
    Channel(LinkChannel, Conn),
    /// A task of attachment `epoch` lost its connection or the link.
    Lost { epoch: u64, why: String },
}

/// Reports the loss of the link of one attachment.
#[derive(Clone)]
struct Lost {
    epoch: u64,
    tx: mpsc::UnboundedSender<Event>,
}

impl Lost {
    fn report(&self, why: impl Into<String>) {
        let _ = self.tx.send(Event::Lost { epoch: self.epoch, why: why.into() });
    }
}

/// Serves the local link until `cancel`: accepts `mups` connections and attaches
/// and detaches `mups`. At the end, the control channel gets a moment to write the
/// last session events.
pub(crate) async fn serve(hub: Arc<Hub>, listener: UnixListener, cancel: CancellationToken) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let accept = tokio::spawn(accept_loop(hub.clone(), listener, events_tx.clone(), cancel.clone()));
    manage(hub, events, events_tx, cancel).await;
    let _ = accept.await;
}

async fn accept_loop(
    hub: Arc<Hub>,
    listener: UnixListener,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let mut next = 0u64;
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                next += 1;
                let span = info_span!("local_link", conn = next);
                tokio::spawn(
                    handshake(hub.clone(), stream, next, events.clone(), cancel.clone()).instrument(span),
                );
            }
            Err(e) => {
                error!(error = %e, "local link accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn our_hello(hub: &Hub) -> Hello {
    Hello {
        node_id: hub.config().appliance.id.clone(),
        role: PeerRole::Edge,
        min_version: fo_link::MIN_VERSION,
        max_version: fo_link::MAX_VERSION,
        software: concat!("pups ", env!("CARGO_PKG_VERSION")).to_owned(),
    }
}

async fn handshake(
    hub: Arc<Hub>,
    stream: UnixStream,
    no: u64,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let (rd, mut writer) = stream.into_split();
    let mut reader = FramedRead::new(rd, LinkCodec::default());
    let ours = our_hello(&hub);
    let hello = FoMessage::Hello(ours.clone()).to_vec().expect("our HELLO fits the wire");
    if let Err(e) = writer.write_all(&hello).await {
        warn!(error = %e, "mups connection lost before the handshake");
        return;
    }
    let exchange = async {
        let theirs = match reader.next().await {
            Some(Ok(FoMessage::Hello(h))) => h,
            Some(Ok(other)) => return Err(format!("first frame is {} instead of HELLO", other.kind())),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before HELLO".to_owned()),
        };
        if theirs.role != PeerRole::Controller {
            return Err(format!("peer {:?} has role {:?}, not Controller", theirs.node_id, theirs.role));
        }
        let Some(version) = fo_link::negotiate_version(&ours, &theirs) else {
            return Err(format!(
                "no common version: ours {}-{}, theirs {}-{}",
                ours.min_version, ours.max_version, theirs.min_version, theirs.max_version
            ));
        };
        let channel = match reader.next().await {
            Some(Ok(FoMessage::Channel(c))) => c.channel,
            Some(Ok(other)) => {
                return Err(format!("first frame after HELLO is {} instead of CHANNEL", other.kind()));
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed before CHANNEL".to_owned()),
        };
        Ok((theirs, version, channel))
    };
    let outcome = tokio::select! {
        () = cancel.cancelled() => return,
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange) => outcome,
    };
    match outcome {
        Err(_) => {
            warn!(timeout_s = HANDSHAKE_TIMEOUT.as_secs(), "no HELLO and CHANNEL in time: connection closed")
        }
        Ok(Err(why)) => warn!(why = %why, "mups connection refused"),
        Ok(Ok((hello, version, channel))) => {
            info!(mups = %hello.node_id, software = %hello.software, version, ?channel, "mups connected");
            let _ = events.send(Event::Channel(channel, Conn { no, name: hello.node_id, reader, writer }));
        }
    }
}

/// One attachment of `mups`: its tasks and how to stop them.
struct Attached {
    epoch: u64,
    mups: String,
    /// Stops the readers, the heartbeat and the data writer.
    cancel: CancellationToken,
    /// Stops the control writer (separately, so it can flush at shutdown).
    writer_cancel: CancellationToken,
    tasks: JoinSet<()>,
}

async fn manage(
    hub: Arc<Hub>,
    mut events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let mut data: Option<Conn> = None;
    let mut control: Option<Conn> = None;
    let mut current: Option<Attached> = None;
    let mut epoch = 0;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = events.recv() => event,
        };
        match event {
            None => break,
            Some(Event::Channel(channel, conn)) => {
                if let Some(a) = &current {
                    warn!(conn = conn.no, ?channel, mups = %conn.name, attached = %a.mups,
                        "mups connection refused: a mups is already attached");
                    continue;
                }
                let slot = match channel {
                    LinkChannel::Data => &mut data,
                    LinkChannel::Control => &mut control,
                };
                if let Some(old) = slot.replace(conn) {
                    warn!(
                        conn = old.no,
                        ?channel,
                        "a newer connection replaces one still waiting for its twin"
                    );
                }
                if data.is_some() && control.is_some() {
                    epoch += 1;
                    let (d, c) = (data.take().expect("checked"), control.take().expect("checked"));
                    current = Some(attach(&hub, d, c, epoch, &events_tx));
                }
            }
            Some(Event::Lost { epoch: lost, why }) => {
                if current.as_ref().is_some_and(|a| a.epoch == lost) {
                    detach(&hub, current.take().expect("checked"), &why).await;
                }
            }
        }
    }
    if let Some(a) = current.take() {
        shut_down(&hub, a).await;
    }
}

fn attach(
    hub: &Arc<Hub>,
    data: Conn,
    control: Conn,
    epoch: u64,
    events: &mpsc::UnboundedSender<Event>,
) -> Attached {
    let span = info_span!("mups", epoch, mups = %control.name);
    let cancel = CancellationToken::new();
    let writer_cancel = CancellationToken::new();
    let lost = Lost { epoch, tx: events.clone() };
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let inventory = hub.attach(control_tx.clone());
    info!(parent: &span, data_conn = data.no, control_conn = control.no, inventory,
        "mups attached: inventory queued, sessions read again");
    let mut tasks = JoinSet::new();
    tasks.spawn(
        control_writer(control_rx, control.writer, writer_cancel.clone(), lost.clone())
            .instrument(span.clone()),
    );
    let (barrier_tx, barrier_rx) = mpsc::unbounded_channel();
    tasks.spawn(
        control_reader(hub.clone(), control.reader, control_tx, barrier_tx, cancel.clone(), lost.clone())
            .instrument(span.clone()),
    );
    tasks.spawn(data_writer(hub.clone(), data.writer, cancel.clone(), lost.clone()).instrument(span.clone()));
    tasks.spawn(data_reader(hub.clone(), data.reader, barrier_rx, cancel.clone(), lost).instrument(span));
    Attached { epoch, mups: control.name, cancel, writer_cancel, tasks }
}

async fn detach(hub: &Hub, mut a: Attached, why: &str) {
    a.cancel.cancel();
    a.writer_cancel.cancel();
    while a.tasks.join_next().await.is_some() {}
    // After the tasks: no command of the old link can come after the resumes.
    hub.detach();
    warn!(mups = %a.mups, why = %why,
        "mups detached: both channels closed; bank sessions stay open and are not read until mups is back");
}

async fn shut_down(hub: &Hub, mut a: Attached) {
    a.cancel.cancel();
    hub.detach();
    // The control writer ends once it has written everything queued.
    if tokio::time::timeout(CONTROL_FLUSH, async { while a.tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        a.writer_cancel.cancel();
        while a.tasks.join_next().await.is_some() {}
    }
    info!(mups = %a.mups, "local link closed (shutdown)");
}

async fn control_writer(
    mut rx: mpsc::UnboundedReceiver<FoMessage>,
    mut writer: OwnedWriteHalf,
    cancel: CancellationToken,
    lost: Lost,
) {
    let mut batch = Vec::with_capacity(64);
    let mut buf = Vec::new();
    loop {
        let n = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            n = rx.recv_many(&mut batch, 64) => n,
        };
        if n == 0 {
            let _ = writer.shutdown().await;
            return;
        }
        buf.clear();
        for message in batch.drain(..) {
            if let Err(e) = message.encode(&mut buf) {
                error!(error = %e, kind = %message.kind(), "control message cannot be encoded: not sent");
            }
        }
        let written = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            written = writer.write_all(&buf) => written,
        };
        if let Err(e) = written {
            lost.report(format!("control channel: {e}"));
            return;
        }
    }
}

async fn control_reader(
    hub: Arc<Hub>,
    mut reader: FramedRead<OwnedReadHalf, LinkCodec>,
    tx: mpsc::UnboundedSender<FoMessage>,
    barrier: mpsc::UnboundedSender<oneshot::Sender<()>>,
    cancel: CancellationToken,
    lost: Lost,
) {
    let pups = &hub.config().pups;
    let misses = pups.heartbeat_misses;
    let mut ticker = tokio::time::interval(Duration::from_millis(pups.heartbeat_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let (mut seq, mut sent, mut acked, mut missed) = (0u64, false, false, 0u32);
    loop {
        let frame = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {
                missed = if sent && !acked { missed + 1 } else { 0 };
                if missed >= misses {
                    lost.report(format!("mups missed {missed} heartbeats in a row"));
                    return;
                }
                seq += 1;
                let sent_at_micros = started.elapsed().as_micros() as u64;
                let _ = tx.send(FoMessage::Heartbeat(fo_link::Heartbeat { seq, sent_at_micros }));
                (sent, acked) = (true, false);
                continue;
            }
            frame = reader.next() => frame,
        };
        let message = match frame {
            Some(Ok(message)) => message,
            Some(Err(e)) => return lost.report(format!("control channel: {e}")),
            None => return lost.report("control channel closed by mups"),
        };
        match message {
            FoMessage::Heartbeat(h) => {
                let _ = tx.send(FoMessage::HeartbeatAck(h.ack()));
            }
            FoMessage::HeartbeatAck(_) => acked = true,
            FoMessage::CloseSession(c) => match hub.session(c.session_id) {
                Some(session) => {
                    info!(parent: &session.span, reason = %c.reason, "CLOSE_SESSION from mups");
                    session.command(SessionCmd::Close {
                        reason: SessionDownReason::ClosedByController,
                        detail: c.reason,
                    });
                }
                None => {
                    info!(session = c.session_id, "CLOSE_SESSION for a session pups does not have: ignored")
                }
            },
            FoMessage::SessionPause(p) => match hub.session(p.session_id) {
                Some(session) => session.command(SessionCmd::Pause),
                None => {
                    info!(session = p.session_id, "SESSION_PAUSE for a session pups does not have: ignored")
                }
            },
            FoMessage::SessionResume(r) => match hub.session(r.session_id) {
                Some(session) => session.command(SessionCmd::Resume),
                None => {
                    info!(session = r.session_id, "SESSION_RESUME for a session pups does not have: ignored")
                }
            },
            FoMessage::Handover(h) if crate::handover::is_request(h.op) => {
                // mups wrote the DATA it sent before this request to the data
                // channel first: they are in that socket now, and go to their
                // sessions before the request is carried out.
                let (ack, done) = oneshot::channel();
                let _ = barrier.send(ack);
                hub.handover(Request { handover: h, barrier: Some(done) });
            }
            other => {
                if let Err(why) = unexpected(&hub, &other, "control") {
                    return lost.report(why);
                }
            }
        }
    }
}

/// A message that decodes but does not belong where it came: an FO-link-only
/// message ends the link (as an unknown type would), anything else is a protocol
/// error, logged, counted and dropped.
fn unexpected(hub: &Hub, message: &FoMessage, channel: &str) -> Result<(), String> {
    use FoMessage::{Ack, Activate, BankState, Context, Deactivate, Nack, SyncBegin, SyncEnd};
    if matches!(
        message,
        BankState(_)
            | SyncBegin(_)
            | Context(_)
            | SyncEnd(_)
            | Activate(_)
            | Deactivate(_)
            | Ack(_)
            | Nack(_)
    ) {
        let kind = message.kind();
        error!(%kind, type_byte = kind.type_byte(), "FO link message on the local link: unknown type, closing");
        return Err(format!("unknown type {kind} on the {channel} channel"));
    }
    hub.metrics.link_dropped(LinkDrop::Protocol);
    warn!(kind = %message.kind(), channel, "message does not belong on this channel or goes the wrong way: dropped");
    Ok(())
}

async fn data_reader(
    hub: Arc<Hub>,
    mut reader: FramedRead<OwnedReadHalf, LinkCodec>,
    mut barriers: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    cancel: CancellationToken,
    lost: Lost,
) {
    loop {
        let frame = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            Some(ack) = barriers.recv() => {
                // Everything already in the socket, without waiting for more.
                while let Some(frame) = reader.next().now_or_never() {
                    if let Err(why) = data_frame(&hub, frame) {
                        return lost.report(why);
                    }
                }
                let _ = ack.send(());
                continue;
            }
            frame = reader.next() => frame,
        };
        if let Err(why) = data_frame(&hub, frame) {
            return lost.report(why);
        }
    }
}

/// Handles one frame of the data channel; `Err` ends the link.
fn data_frame(hub: &Hub, frame: Option<Result<FoMessage, LinkCodecError>>) -> Result<(), String> {
    {
        match frame {
            Some(Ok(FoMessage::Data(data))) if data.direction == Direction::ToBank => to_bank(hub, data),
            // In the stream's order: every DATA before it has reached its session's writer.
            Some(Ok(FoMessage::Handover(h))) if crate::handover::is_request(h.op) => {
                hub.handover(Request { handover: h, barrier: None });
            }
            Some(Ok(other)) => unexpected(hub, &other, "data")?,
            Some(Err(e)) => return Err(format!("data channel: {e}")),
            None => return Err("data channel closed by mups".into()),
        }
    }
    Ok(())
}

/// Hands a `DATA` from `mups` to its session's writer.
fn to_bank(hub: &Hub, data: Data) {
    let (session, message) = match hub.route_to_bank(data.session_id, &data.bank_id, data.message) {
        ToBankRoute::Session(session, message) => (session, message),
        ToBankRoute::Parked => {
            debug!(session = data.session_id, bank = %data.bank_id, "DATA for a restored session kept until it serves");
            return;
        }
        ToBankRoute::ParkFull(message) => {
            hub.metrics.link_dropped(LinkDrop::BankNotReading);
            warn!(session = data.session_id, bank = %data.bank_id, len = message.len(),
                "DATA for a restored session that is not serving yet, with {OUTBOUND_QUEUE} kept already: dropped");
            return;
        }
        ToBankRoute::Unknown(message) => {
            hub.metrics.link_dropped(LinkDrop::UnknownSession);
            warn!(session = data.session_id, bank = %data.bank_id, len = message.len(),
                "DATA for a session pups does not have: dropped");
            return;
        }
    };
    if session.bank_id() != data.bank_id {
        hub.metrics.link_dropped(LinkDrop::Protocol);
        warn!(parent: &session.span, data_bank = %data.bank_id, "DATA names another bank than its session's: dropped");
        return;
    }
    let len = message.len();
    match session.send_to_bank(message) {
        Ok(()) => debug!(parent: &session.span, len, "message from mups"),
        Err(ToBankError::Gone) => {
            hub.metrics.link_dropped(LinkDrop::UnknownSession);
            warn!(parent: &session.span, len, "DATA for a session that has ended: dropped");
        }
        Err(ToBankError::Full) => {
            hub.metrics.link_dropped(LinkDrop::BankNotReading);
            warn!(parent: &session.span, len, "bank is not reading: DATA dropped, session closing");
        }
    }
}

async fn data_writer(hub: Arc<Hub>, mut writer: OwnedWriteHalf, cancel: CancellationToken, lost: Lost) {
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(DATA_BATCH);
    loop {
        if let Some(message) = hub.next_data_out() {
            buf.clear();
            if let Err(e) = message.encode(&mut buf) {
                error!(error = %e, kind = %message.kind(), "message cannot be encoded: not sent");
                continue;
            }
            let written = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                written = writer.write_all(&buf) => written,
            };
            if let Err(e) = written {
                return lost.report(format!("data channel: {e}"));
            }
            continue;
        }
        let Some(session) = hub.next_ready() else {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = hub.ready_notified() => continue,
            }
        };
        // From here on, `written` must be called whatever happens.
        let batch: Vec<Bytes> = lock(&session.queue).items.iter().take(DATA_BATCH).cloned().collect();
        buf.clear();
        ends.clear();
        for message in batch {
            let data = FoMessage::Data(Data {
                bank_id: session.bank_id().to_owned(),
                session_id: session.id,
                direction: Direction::ToNode,
                correlation_id: 0,
                flags: DataFlags::empty(),
                message,
            });
            if let Err(e) = data.encode(&mut buf) {
                // Only a message over 4 GiB could: the bank's framing never lets one in.
                error!(parent: &session.span, error = %e, "message cannot be put in DATA: dropped");
            }
            ends.push(buf.len());
        }
        let mut off = 0;
        let failure = loop {
            if off == buf.len() {
                break None;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break Some(None),
                w = writer.write(&buf[off..]) => match w {
                    Ok(0) => break Some(Some("data channel: write returned 0".to_owned())),
                    Ok(n) => off += n,
                    Err(e) => break Some(Some(format!("data channel: {e}"))),
                },
            }
        };
        let done = ends.iter().take_while(|&&end| end <= off).count();
        if done > 0 {
            debug!(parent: &session.span, messages = done, "messages written to mups");
        }
        hub.written(&session, done, failure.is_some());
        match failure {
            None => {}
            Some(None) => return,
            Some(Some(why)) => return lost.report(why),
        }
    }
}
