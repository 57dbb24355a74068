//! One bank TCP session: a reader task that frames the bank's byte stream and
//! queues its messages towards `mups`, and a writer task that frames `mups`'s
//! messages (and keep-alive echoes) for the bank.
//!
//! # Reading, and when it stops
//!
//! The reader reads from the socket only while `mups` is attached, the session is
//! not paused (`SESSION_PAUSE`) and its queue towards `mups` has room
//! (`[pups].session_queue` messages). Otherwise it leaves the bytes in the kernel:
//! the bank sees TCP back-pressure, never a disconnect. Frames already read are
//! still framed and queued, in order, and stay queued until the local link writes
//! them (see [`crate::hub`]). The idle timeout only runs while the reader reads:
//! a session is never closed as idle because `pups` was not listening.
//!
//! While `mups` is away the reader still looks, every [`PEER_CHECK`], whether the
//! bank has closed its end (FIN or reset, seen without reading). A bank that has
//! is read to the end — what it sent is queued for the next `mups`, nothing is
//! lost — so its session ends and frees its `max_sessions` slot for the bank's
//! reconnection instead of holding it until `mups` is back. (A paused session is
//! left alone: `mups` holds its traffic on purpose.)
//!
//! # Writing
//!
//! A message from `mups` is framed with the bank's profile: the TPDU is the swap
//! of the last TPDU the bank sent on this session, the fixed header the last one
//! it sent (before the bank has sent any, a TPDU `60 0000 0000` and a zero-filled
//! header). The writer's queue holds [`OUTBOUND_QUEUE`] messages; a bank that lets
//! it fill up is not reading its socket, and its session is closed.
//!
//! # Ending
//!
//! The reader decides the end (EOF, reset, idle, framing, `CLOSE_SESSION`, a write
//! failure, shutdown). The writer then writes what it still has, sends FIN, and the
//! socket is closed; the hub sends `SESSION_DOWN` once every message read from the
//! bank has been written to `mups`.
//!
//! # Holding and freezing (appliance switchover)
//!
//! `Hold` stops reading like a pause, and is acknowledged only once no whole frame
//! is left in the reader's buffer (every message read is queued towards `mups`).
//! `Freeze` ends the tasks *without* ending the session: the writer writes what
//! `mups` sent (bounded by [`FREEZE_GRACE`]; what it could not write is handed
//! back), neither FIN nor `SESSION_DOWN` is sent, and the socket, the reader's
//! partial frame and its command queue are handed to the caller ([`Frozen`]) to be
//! checkpointed; [`thaw`] starts the tasks again on the same session, [`adopt`]
//! starts a session restored from the twin.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use proto::config::{BankConfig, KeepAlivePolicy};
use proto::fo_link::{FoMessage, SessionDown, SessionDownReason, SessionUp};
use proto::frame::{TPDU_LEN, swap_tpdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::codec::{BankCodec, BankFrame, CodecError};
use crate::hub::Hub;
use crate::metrics::{BadFrameAction, KeepAliveDirection, LinkDrop, MessageDirection};

/// Messages from `mups` (and keep-alive echoes) waiting to be written to one bank.
pub(crate) const OUTBOUND_QUEUE: usize = 1024;

/// How long the writer may take to write what it still has once the session ends.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// How long the writer may take, when the session is frozen, to put what `mups`
/// sent into the kernel's send queue. A bank that does not read lets that queue
/// fill; what is left then travels with the snapshot (or is written after a thaw).
pub(crate) const FREEZE_GRACE: Duration = Duration::from_millis(500);

/// How often a session that is not read because `mups` is away checks whether
/// the bank has closed its end.
pub(crate) const PEER_CHECK: Duration = Duration::from_secs(1);

/// Spare room the reader makes in its buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// The TPDU of a reply before the bank has sent one.
const DEFAULT_TPDU: [u8; TPDU_LEN] = [0x60, 0, 0, 0, 0];

/// Locks a mutex, shrugging off poisoning: the data behind these locks is updated
/// in single steps, so a panicking holder cannot leave it half-changed.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the reader is told from outside.
#[derive(Debug)]
pub(crate) enum SessionCmd {
    /// End the session.
    Close {
        /// Reported in `SESSION_DOWN`.
        reason: SessionDownReason,
        /// Free text for the log and `SESSION_DOWN`.
        detail: String,
    },
    /// Stop reading from the socket (`SESSION_PAUSE`).
    Pause,
    /// Read again (`SESSION_RESUME`, or the link was lost).
    Resume,
    /// Stop reading (appliance switchover); `ack` once every whole frame already
    /// read is queued towards `mups`.
    Hold {
        /// Answered when the reader is at rest.
        ack: oneshot::Sender<()>,
    },
    /// Lift a `Hold`.
    Release,
    /// End the tasks without ending the session, and hand the socket over.
    Freeze(oneshot::Sender<Frozen>),
}

/// A session whose tasks were stopped by [`SessionCmd::Freeze`]: everything needed
/// to checkpoint it, or to start its tasks again ([`thaw`]).
#[derive(Debug)]
pub(crate) struct Frozen {
    /// The socket, whole again; FIN was never sent.
    pub(crate) stream: TcpStream,
    /// Bytes read from the bank that do not make a whole frame yet.
    pub(crate) partial: BytesMut,
    /// Framed bytes for the bank the writer could not put in the kernel in time.
    pub(crate) unwritten: Bytes,
    /// Bytes of a bad frame the codec was still skipping (`bad_frame = "drop"`).
    pub(crate) skipping: u64,
    cmds: mpsc::UnboundedReceiver<SessionCmd>,
}

/// What the writer writes.
#[derive(Debug)]
enum Outbound {
    /// A message from `mups`.
    Message(Bytes),
    /// A keep-alive echo.
    KeepAlive,
}

/// Why a message from `mups` was not handed to the session's writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToBankError {
    /// The session has ended (or is ending).
    Gone,
    /// The writer's queue is full: the bank is not reading; the session is closed.
    Full,
}

/// The session's messages towards `mups`, and how its end is reported.
#[derive(Debug, Default)]
pub(crate) struct ToNodeQueue {
    /// Read from the bank, not yet written to `mups`, in order.
    pub(crate) items: std::collections::VecDeque<Bytes>,
    /// The session is in the hub's ready list (exactly when `items` is not empty).
    pub(crate) scheduled: bool,
    /// The TCP connection has ended, and why.
    pub(crate) ended: Option<(SessionDownReason, String)>,
    /// The end has been reported (or abandoned): the session is gone from the hub.
    pub(crate) finalized: bool,
}

/// The last TPDU and fixed header the bank sent, for framing replies.
#[derive(Debug, Default)]
struct ReplyHeaders {
    tpdu: Option<[u8; TPDU_LEN]>,
    header: Option<Bytes>,
}

/// One bank session, shared by its tasks, the hub and the local link.
#[derive(Debug)]
pub(crate) struct Session {
    /// `pups`'s id, unique for the process lifetime, never 0.
    pub(crate) id: u64,
    /// The bank's index in the configuration.
    pub(crate) bank: usize,
    /// The bank's configuration.
    pub(crate) bank_cfg: Arc<BankConfig>,
    /// The bank's end of the connection.
    pub(crate) peer: SocketAddr,
    /// Our end of the connection.
    pub(crate) local: SocketAddr,
    /// When the connection was accepted, microseconds since the Unix epoch.
    pub(crate) opened_at_micros: u64,
    /// The session's tracing span.
    pub(crate) span: tracing::Span,
    cmds: mpsc::UnboundedSender<SessionCmd>,
    outbound: Mutex<Option<mpsc::Sender<Outbound>>>,
    /// Messages towards `mups` (see [`crate::hub`]).
    pub(crate) queue: Mutex<ToNodeQueue>,
    /// Room left in `queue`: the reader takes a permit per message, the link gives
    /// them back as it writes.
    pub(crate) space: Semaphore,
    last: Mutex<ReplyHeaders>,
    keepalives_in_a_row: AtomicU32,
    /// Set while the tasks are being frozen: the writer hands its half back
    /// instead of sending FIN.
    freezing: AtomicBool,
}

impl Session {
    /// The bank's id.
    pub(crate) fn bank_id(&self) -> &str {
        &self.bank_cfg.id
    }

    /// The `SESSION_UP` announcing this session.
    pub(crate) fn up_message(&self) -> FoMessage {
        FoMessage::SessionUp(SessionUp {
            session_id: self.id,
            bank_id: self.bank_cfg.id.clone(),
            peer: self.peer.to_string(),
            local: self.local.to_string(),
            opened_at_micros: self.opened_at_micros,
        })
    }

    /// The `SESSION_DOWN` reporting this session's end.
    pub(crate) fn down_message(&self, reason: SessionDownReason, detail: &str) -> FoMessage {
        FoMessage::SessionDown(SessionDown {
            session_id: self.id,
            bank_id: self.bank_cfg.id.clone(),
            reason,
            detail: detail.to_owned(),
        })
    }

    /// Tells the reader something; ignored once the session has ended.
    pub(crate) fn command(&self, cmd: SessionCmd) {
        let _ = self.cmds.send(cmd);
    }

    /// Hands a message from `mups` to the writer.
    pub(crate) fn send_to_bank(&self, message: Bytes) -> Result<(), ToBankError> {
        let outbound = lock(&self.outbound);
        let Some(tx) = outbound.as_ref() else { return Err(ToBankError::Gone) };
        match tx.try_send(Outbound::Message(message)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ToBankError::Gone),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.command(SessionCmd::Close {
                    reason: SessionDownReason::IoError,
                    detail: format!("bank is not reading: {OUTBOUND_QUEUE} messages wait to be written"),
                });
                Err(ToBankError::Full)
            }
        }
    }

    /// The last TPDU and fixed header the bank sent (for the snapshot).
    pub(crate) fn reply_headers(&self) -> (Option<[u8; TPDU_LEN]>, Option<Bytes>) {
        let last = lock(&self.last);
        (last.tpdu, last.header.clone())
    }

    fn echo_keep_alive(&self) -> bool {
        lock(&self.outbound).as_ref().is_some_and(|tx| tx.try_send(Outbound::KeepAlive).is_ok())
    }

    /// Stops taking messages for the bank: the writer writes what it has, then ends.
    fn close_outbound(&self) {
        lock(&self.outbound).take();
    }
}

/// Microseconds since the Unix epoch, now.
fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Starts a session on an accepted connection whose bank is `bank` (a slot in the
/// bank's `max_sessions` already taken). Returns at once.
pub(crate) fn spawn(hub: Arc<Hub>, bank: usize, stream: TcpStream, peer: SocketAddr) {
    let id = hub.next_session_id();
    let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if let Err(e) = stream.set_nodelay(true) {
        debug!(session = id, error = %e, "cannot set TCP_NODELAY");
    }
    let (session, cmd_rx) = new_session(&hub, bank, id, peer, local, ReplyHeaders::default());
    let start = Start { partial: BytesMut::new(), unwritten: Bytes::new(), announce: true, adopted: false };
    start_tasks(hub, session, stream, cmd_rx, start);
}

/// Starts a session restored from the twin appliance's snapshot, under the id it
/// had there (a slot of the bank's `max_sessions` already taken). `partial` goes
/// back into the reader's buffer; replies are framed with the restored headers;
/// `unwritten` (what the restored socket did not take yet) is written first.
/// Its `SESSION_UP` is sent as for a new connection.
pub(crate) fn adopt(
    hub: Arc<Hub>,
    bank: usize,
    stream: TcpStream,
    state: &proto::snapshot::SessionState,
    unwritten: Bytes,
) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    let local = stream.local_addr()?;
    let last = ReplyHeaders { tpdu: state.last_tpdu, header: state.last_header.clone().map(Bytes::from) };
    let (session, cmd_rx) = new_session(&hub, bank, state.session_id, peer, local, last);
    let start =
        Start { partial: BytesMut::from(&state.partial_frame[..]), unwritten, announce: true, adopted: true };
    start_tasks(hub, session, stream, cmd_rx, start);
    Ok(())
}

/// Starts a frozen session's tasks again, here: same id, same state, no
/// `SESSION_UP` (`mups` never heard it was down).
pub(crate) fn thaw(hub: Arc<Hub>, session: Arc<Session>, frozen: Frozen) {
    session.freezing.store(false, Ordering::SeqCst);
    let Frozen { stream, partial, unwritten, cmds, .. } = frozen;
    start_tasks(hub, session, stream, cmds, Start { partial, unwritten, announce: false, adopted: false });
}

fn new_session(
    hub: &Hub,
    bank: usize,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    last: ReplyHeaders,
) -> (Arc<Session>, mpsc::UnboundedReceiver<SessionCmd>) {
    let bank_cfg = hub.bank(bank).clone();
    let span = tracing::info_span!("session", bank = %bank_cfg.id, session = id, peer = %peer);
    let (cmds, cmd_rx) = mpsc::unbounded_channel();
    let session = Arc::new(Session {
        id,
        bank,
        peer,
        local,
        opened_at_micros: now_micros(),
        span,
        cmds,
        outbound: Mutex::new(None),
        queue: Mutex::new(ToNodeQueue::default()),
        space: Semaphore::new(hub.config().pups.session_queue),
        last: Mutex::new(last),
        keepalives_in_a_row: AtomicU32::new(0),
        freezing: AtomicBool::new(false),
        bank_cfg,
    });
    (session, cmd_rx)
}

/// How a session's tasks start.
struct Start {
    /// The reader's buffer to begin with.
    partial: BytesMut,
    /// Bytes the writer writes before anything else.
    unwritten: Bytes,
    /// A new session for this process: count it and send `SESSION_UP`.
    announce: bool,
    /// Restored from the twin's snapshot (logged at debug).
    adopted: bool,
}

fn start_tasks(
    hub: Arc<Hub>,
    session: Arc<Session>,
    stream: TcpStream,
    cmd_rx: mpsc::UnboundedReceiver<SessionCmd>,
    start: Start,
) {
    let (out_tx, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    *lock(&session.outbound) = Some(out_tx);
    if start.announce {
        // Now, not in the task: a caller that answers mups next (Serving) has
        // queued the SESSION_UP before its answer.
        hub.metrics.session_opened(session.bank_id());
        if start.adopted {
            // Thousands at once at a switchover: the worker logs the sum.
            debug!(parent: &session.span, local = %session.local, "session adopted from the twin appliance");
        } else {
            info!(parent: &session.span, local = %session.local, "session opened");
        }
        hub.session_up(&session);
    }
    let span = session.span.clone();
    tokio::spawn(run(hub, session, stream, cmd_rx, out_rx, start).instrument(span));
}

async fn run(
    hub: Arc<Hub>,
    session: Arc<Session>,
    stream: TcpStream,
    cmds: mpsc::UnboundedReceiver<SessionCmd>,
    out_rx: mpsc::Receiver<Outbound>,
    start: Start,
) {
    let (rd, wr) = stream.into_split();
    if !start.announce {
        debug!("session thawed: serving it here again");
    }
    let stop_writer = CancellationToken::new();
    let mut writer = tokio::spawn(
        write_loop(hub.clone(), session.clone(), wr, out_rx, start.unwritten, stop_writer.clone())
            .in_current_span(),
    );
    let mut reader = Reader::new(hub.clone(), session.clone(), rd, cmds, start.partial);
    // Whether the writer task has already been awaited to its end.
    let (reason, detail, writer_done) = match reader.run().await {
        Stop::Closed(reason, detail) => (reason, detail, false),
        Stop::Freeze => {
            session.freezing.store(true, Ordering::SeqCst);
            session.close_outbound();
            let end = match tokio::time::timeout(FREEZE_GRACE, &mut writer).await {
                Ok(end) => end,
                Err(_) => {
                    stop_writer.cancel();
                    (&mut writer).await
                }
            };
            match end {
                Ok(WriterEnd::Frozen { wr, unwritten }) => {
                    let reply = reader.freeze.take();
                    let Reader { rd, buf, cmds, codec, .. } = reader;
                    // Both halves come from one stream: reunite cannot fail.
                    let Ok(stream) = rd.reunite(wr) else { unreachable!("halves of one stream") };
                    let frozen = Frozen { stream, partial: buf, unwritten, skipping: codec.skipping(), cmds };
                    // Per session at debug: a switchover freezes thousands at once,
                    // and the handover worker logs the sum.
                    debug!(
                        unwritten = frozen.unwritten.len(),
                        partial = frozen.partial.len(),
                        "session frozen"
                    );
                    match reply.map(|tx| tx.send(frozen)) {
                        Some(Ok(())) => {}
                        // Nobody waits for it any more: serve it on here.
                        Some(Err(frozen)) => thaw(hub, session, frozen),
                        None => unreachable!("Stop::Freeze comes with its reply"),
                    }
                    return;
                }
                Ok(WriterEnd::Done) | Err(_) => {
                    session.freezing.store(false, Ordering::SeqCst);
                    let detail = "writing to the bank failed while freezing".to_owned();
                    (SessionDownReason::IoError, detail, true)
                }
            }
        }
    };
    session.close_outbound();
    if !writer_done && tokio::time::timeout(WRITER_GRACE, &mut writer).await.is_err() {
        warn!("bank did not take the last messages in time; closing anyway");
        writer.abort();
    }
    drop(reader);
    hub.release(session.bank);
    hub.metrics.session_closed(session.bank_id(), reason);
    info!(?reason, detail = %detail, "session closed");
    hub.session_ended(&session, reason, detail);
}

/// The reader's side of a session.
struct Reader {
    hub: Arc<Hub>,
    session: Arc<Session>,
    rd: OwnedReadHalf,
    cmds: mpsc::UnboundedReceiver<SessionCmd>,
    codec: BankCodec,
    buf: BytesMut,
    paused: bool,
    /// Held for an appliance switchover (`Hold`), not reading.
    held: bool,
    /// `Hold`s to acknowledge once no whole frame is left in `buf`.
    hold_acks: Vec<oneshot::Sender<()>>,
    /// A `Freeze` to carry out once no whole frame is left in `buf`.
    freeze: Option<oneshot::Sender<Frozen>>,
    /// The bank has closed its end: read what it sent even while `mups` is away.
    peer_gone: bool,
    idle: Option<Duration>,
    /// When the session times out as idle, while reading; `None` restarts the clock.
    deadline: Option<Instant>,
}

/// Why the reader's loop stops.
enum Stop {
    /// The session ends.
    Closed(SessionDownReason, String),
    /// The tasks end, the session does not (`SessionCmd::Freeze`).
    Freeze,
}

impl From<(SessionDownReason, String)> for Stop {
    fn from((reason, detail): (SessionDownReason, String)) -> Self {
        Self::Closed(reason, detail)
    }
}

/// How the reader's loop goes on.
type Step = Result<(), Stop>;

impl Reader {
    fn new(
        hub: Arc<Hub>,
        session: Arc<Session>,
        rd: OwnedReadHalf,
        cmds: mpsc::UnboundedReceiver<SessionCmd>,
        mut buf: BytesMut,
    ) -> Self {
        let bank = &session.bank_cfg;
        let codec = BankCodec::with_policy(bank.framing.clone(), bank.bad_frame);
        let idle = (bank.idle_timeout_s > 0).then(|| Duration::from_secs(bank.idle_timeout_s));
        buf.reserve(READ_CHUNK);
        let held = hub.held();
        Self {
            hub,
            session,
            rd,
            cmds,
            codec,
            buf,
            paused: false,
            held,
            hold_acks: Vec::new(),
            freeze: None,
            peer_gone: false,
            idle,
            deadline: None,
        }
    }

    async fn run(&mut self) -> Stop {
        match self.run_inner().await {
            Ok(()) => Stop::Closed(SessionDownReason::Shutdown, "hub gone".into()),
            Err(end) => end,
        }
    }

    fn on_command(&mut self, cmd: Option<SessionCmd>) -> Step {
        match cmd {
            Some(SessionCmd::Close { reason, detail }) => Err(Stop::Closed(reason, detail)),
            Some(SessionCmd::Pause) => {
                if !self.paused {
                    info!("session paused: not reading from the bank");
                }
                self.paused = true;
                Ok(())
            }
            Some(SessionCmd::Resume) => {
                if self.paused {
                    info!("session resumed");
                }
                self.paused = false;
                Ok(())
            }
            Some(SessionCmd::Hold { ack }) => {
                self.held = true;
                self.hold_acks.push(ack);
                Ok(())
            }
            Some(SessionCmd::Release) => {
                self.held = false;
                Ok(())
            }
            Some(SessionCmd::Freeze(reply)) => {
                self.freeze = Some(reply);
                Ok(())
            }
            // The session holds a sender: cannot happen.
            None => Err(Stop::Closed(SessionDownReason::Shutdown, "command channel closed".into())),
        }
    }

    async fn run_inner(&mut self) -> Step {
        let mut attached = self.hub.attached_rx();
        let mut peer_check = tokio::time::interval(PEER_CHECK);
        peer_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Frames already read are handled whatever the link does.
            loop {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => self.on_frame(frame).await?,
                    Ok(None) => break,
                    Err(CodecError::Frame(e)) => {
                        self.hub.metrics.bad_frame(self.session.bank_id(), BadFrameAction::Closed);
                        let dump = crate::codec::masked_dump(&self.buf);
                        warn!(error = %e, dump = %dump, "framing lost: closing the session");
                        return Err(Stop::Closed(SessionDownReason::FramingError, e.to_string()));
                    }
                    Err(e) => return Err(Stop::Closed(SessionDownReason::IoError, e.to_string())),
                }
            }
            // No whole frame is left: every message read is queued towards mups.
            for ack in self.hold_acks.drain(..) {
                let _ = ack.send(());
            }
            if self.freeze.is_some() {
                return Err(Stop::Freeze);
            }
            let link_up = *attached.borrow_and_update();
            let reading = (link_up || self.peer_gone) && !self.paused && !self.held;
            if !reading {
                self.deadline = None;
            } else if self.deadline.is_none() {
                self.deadline = self.idle.map(|idle| Instant::now() + idle);
            }
            self.buf.reserve(READ_CHUNK);
            let idle_at = self.deadline.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => self.on_command(cmd)?,
                changed = attached.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Closed(SessionDownReason::Shutdown, "pups is stopping".into()));
                    }
                }
                read = self.rd.read_buf(&mut self.buf), if reading => match read {
                    Ok(0) => {
                        let detail = if self.buf.is_empty() && self.codec.skipping() == 0 {
                            "bank closed the connection".to_owned()
                        } else {
                            format!("bank closed the connection inside a frame ({} bytes discarded)", self.buf.len())
                        };
                        return Err(Stop::Closed(SessionDownReason::PeerClosed, detail));
                    }
                    Ok(_) => self.deadline = self.idle.map(|idle| Instant::now() + idle),
                    Err(e) => return Err(io_end(&e).into()),
                },
                _ = peer_check.tick(), if !link_up && !self.peer_gone && !self.paused && !self.held => {
                    // Not a read: the readiness the kernel last reported, without waiting.
                    match self.rd.ready(Interest::READABLE).now_or_never() {
                        Some(Ok(ready)) if ready.is_read_closed() => {
                            info!("bank closed its end while mups is away: reading what it sent, then closing");
                            self.peer_gone = true;
                        }
                        Some(Err(e)) => return Err(io_end(&e).into()),
                        _ => {}
                    }
                }
                () = tokio::time::sleep_until(idle_at), if reading && self.deadline.is_some() => {
                    let secs = self.idle.map_or(0, |d| d.as_secs());
                    info!(idle_s = secs, "nothing received from the bank: idle timeout");
                    return Err(Stop::Closed(
                        SessionDownReason::IdleTimeout,
                        format!("nothing received for {secs} s"),
                    ));
                }
            }
        }
    }

    async fn on_frame(&mut self, frame: BankFrame) -> Step {
        let bank = self.session.bank_id().to_owned();
        match frame {
            BankFrame::Message { tpdu, header, message } => {
                {
                    let mut last = lock(&self.session.last);
                    if tpdu.is_some() {
                        last.tpdu = tpdu;
                    }
                    if !header.is_empty() {
                        last.header = Some(header);
                    }
                }
                self.session.keepalives_in_a_row.store(0, Ordering::Relaxed);
                self.wait_for_room().await?;
                debug!(len = message.len(), "message from the bank");
                self.hub.metrics.messages(&bank, MessageDirection::ToNode, 1);
                self.hub.push(&self.session, message);
            }
            BankFrame::KeepAlive => {
                self.hub.metrics.keepalive(&bank, KeepAliveDirection::Received);
                let cfg = &self.session.bank_cfg;
                match cfg.keepalive {
                    KeepAlivePolicy::Ignore => debug!("keep-alive from the bank"),
                    KeepAlivePolicy::Echo => {
                        let in_a_row = self.session.keepalives_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                        if in_a_row <= cfg.max_keepalives_in_a_row && self.session.echo_keep_alive() {
                            debug!(in_a_row, "keep-alive from the bank, echoed");
                            self.hub.metrics.keepalive(&bank, KeepAliveDirection::Echoed);
                        } else {
                            debug!(in_a_row, "keep-alive from the bank, not echoed (storm guard)");
                            self.hub.metrics.keepalive(&bank, KeepAliveDirection::Suppressed);
                        }
                    }
                }
            }
            BankFrame::Dropped { error, dump } => {
                self.hub.metrics.bad_frame(&bank, BadFrameAction::Dropped);
                warn!(error = %error, dump = %dump, "bad frame dropped");
            }
        }
        Ok(())
    }

    /// Takes room for one message in the queue towards `mups`, waiting (and not
    /// reading) while it is full; commands are still obeyed meanwhile.
    async fn wait_for_room(&mut self) -> Step {
        if let Ok(permit) = self.session.space.try_acquire() {
            permit.forget();
            return Ok(());
        }
        debug!("queue towards mups is full: not reading");
        self.deadline = None;
        let session = self.session.clone();
        loop {
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => self.on_command(cmd)?,
                permit = session.space.acquire() => {
                    // The semaphore is never closed.
                    if let Ok(permit) = permit {
                        permit.forget();
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// The reason and detail of a socket error.
fn io_end(e: &std::io::Error) -> (SessionDownReason, String) {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let reason = match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => SessionDownReason::PeerReset,
        _ => SessionDownReason::IoError,
    };
    (reason, e.to_string())
}

/// Most frames written to the bank in one system call.
const WRITE_BATCH: usize = 64;

/// How the writer ended.
enum WriterEnd {
    /// The session ends (FIN sent), or writing failed (the reader was told).
    Done,
    /// The session is being frozen: the half, and what it could not write in time.
    Frozen { wr: OwnedWriteHalf, unwritten: Bytes },
}

async fn write_loop(
    hub: Arc<Hub>,
    session: Arc<Session>,
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outbound>,
    unwritten: Bytes,
    stop: CancellationToken,
) -> WriterEnd {
    let framing = session.bank_cfg.framing.clone();
    let mut codec = BankCodec::new(framing.clone());
    let bank = session.bank_id().to_owned();
    // What a frozen writer could not write goes first, before anything newer.
    let mut buf = BytesMut::from(&unwritten[..]);
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let mut messages = 0;
        if buf.is_empty() {
            if rx.recv_many(&mut batch, WRITE_BATCH).await == 0 {
                break;
            }
            messages = encode_batch(&hub, &session, &mut codec, batch.drain(..), &mut buf);
        }
        let mut off = 0;
        while off < buf.len() {
            // `write` is cancel-safe: on `stop` nothing is half-written.
            let written = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    let mut rest = buf.split_off(off);
                    rx.close();
                    let mut left = Vec::new();
                    while let Ok(item) = rx.try_recv() {
                        left.push(item);
                    }
                    encode_batch(&hub, &session, &mut codec, left.into_iter(), &mut rest);
                    warn!(bytes = rest.len(), "bank is not taking its bytes: they are kept with the frozen session");
                    return WriterEnd::Frozen { wr, unwritten: rest.freeze() };
                }
                written = wr.write(&buf[off..]) => written,
            };
            match written {
                Ok(0) => {
                    let detail = "bank socket took no bytes".to_owned();
                    session.command(SessionCmd::Close { reason: SessionDownReason::IoError, detail });
                    return WriterEnd::Done;
                }
                Ok(n) => off += n,
                Err(e) => {
                    let (reason, detail) = io_end(&e);
                    session.command(SessionCmd::Close { reason, detail });
                    return WriterEnd::Done;
                }
            }
        }
        buf.clear();
        if messages > 0 {
            session.keepalives_in_a_row.store(0, Ordering::Relaxed);
            hub.metrics.messages(&bank, MessageDirection::ToBank, messages);
        }
    }
    if session.freezing.load(Ordering::SeqCst) {
        // Everything is in the kernel's send queue; the socket goes on elsewhere.
        return WriterEnd::Frozen { wr, unwritten: Bytes::new() };
    }
    // Every sender is gone: the session is ending. FIN after the last frame.
    let _ = wr.shutdown().await;
    WriterEnd::Done
}

/// Frames `items` for the bank into `buf`; returns how many were messages.
fn encode_batch(
    hub: &Hub,
    session: &Session,
    codec: &mut BankCodec,
    items: impl Iterator<Item = Outbound>,
    buf: &mut BytesMut,
) -> u64 {
    let framing = &session.bank_cfg.framing;
    let mut messages = 0;
    for item in items {
        let frame = match item {
            Outbound::KeepAlive => BankFrame::KeepAlive,
            Outbound::Message(message) => {
                let last = lock(&session.last);
                let tpdu = framing.tpdu.then(|| last.tpdu.as_ref().map_or(DEFAULT_TPDU, swap_tpdu));
                let header =
                    last.header.clone().unwrap_or_else(|| Bytes::from(vec![0; framing.fixed_header]));
                BankFrame::Message { tpdu, header, message }
            }
        };
        let is_message = matches!(frame, BankFrame::Message { .. });
        let len = buf.len();
        match codec.encode(frame, buf) {
            Ok(()) if is_message => {
                messages += 1;
                debug!(len = buf.len() - len, "message to the bank");
            }
            Ok(()) => debug!("keep-alive to the bank"),
            Err(e) => {
                buf.truncate(len);
                hub.metrics.link_dropped(LinkDrop::Unencodable);
                warn!(error = %e, "message from mups cannot be framed for this bank: dropped");
            }
        }
    }
    messages
}
