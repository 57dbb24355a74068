//! keepalived's side of the appliance pair, as `mups` sees it: the notify FIFO
//! (state changes, in order) and the track file (how `mups` puts its own side in
//! FAULT).
//!
//! - [`parse_line`]: one FIFO line (`INSTANCE "VI_1" MASTER 100`) to a [`VrrpEvent`].
//! - [`NotifyFifo`]: creates the FIFO if missing, reads events, skips and counts
//!   lines it cannot parse, and re-opens the FIFO when its file is replaced (a
//!   keepalived that created the FIFO removes it when it exits and makes a new one
//!   when it starts again).
//! - [`TrackFile`]: writes the weight-0 track file atomically: 0 = healthy, any
//!   other value = FAULT, which makes keepalived send a priority-0 advert so the twin
//!   takes over within one skew interval.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tracing::{debug, info, warn};

/// Longest FIFO line taken; keepalived's are under 100 bytes (names are ≤ 64).
pub const MAX_LINE: usize = 512;

/// How often [`NotifyFifo`] checks that its path is still the FIFO it has open.
pub const DEFAULT_REOPEN_CHECK: Duration = Duration::from_millis(500);

/// Whether a line is about a VRRP instance or a sync group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `INSTANCE`.
    Instance,
    /// `GROUP` (a `vrrp_sync_group`).
    Group,
}

/// A VRRP state keepalived reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpState {
    /// Holds the VIPs (already added, and gratuitous ARPs sent, when the line
    /// arrives).
    Master,
    /// Does not hold the VIPs.
    Backup,
    /// A tracker failed (for us: a non-zero track file); the instance sent a
    /// priority-0 advert and holds nothing.
    Fault,
    /// The instance stopped (keepalived shutting down or reloading it away).
    Stop,
    /// The instance was removed by a reload.
    Deleted,
}

impl VrrpState {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "MASTER" => Self::Master,
            "BACKUP" => Self::Backup,
            "FAULT" => Self::Fault,
            "STOP" => Self::Stop,
            "DELETED" => Self::Deleted,
            _ => return None,
        })
    }
}

impl fmt::Display for VrrpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Master => "MASTER",
            Self::Backup => "BACKUP",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
            Self::Deleted => "DELETED",
        })
    }
}

/// What a line says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpChange {
    /// A state transition.
    State(VrrpState),
    /// `MASTER_RX_LOWER_PRI`: we are master and heard an advert from a lower
    /// priority — the twin also believes it is master (a partition healed).
    MasterRxLowerPri,
    /// `MASTER_PRIORITY` / `BACKUP_PRIORITY` (with `notify_priority_changes`): the
    /// effective priority changed while in that state.
    Priority(VrrpState),
}

/// One notify FIFO line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpEvent {
    /// Instance or group.
    pub scope: Scope,
    /// Its name, unquoted.
    pub name: String,
    /// What happened.
    pub change: VrrpChange,
    /// The priority keepalived reported (0 when the instance gave up: FAULT, STOP).
    pub priority: u8,
}

impl VrrpEvent {
    /// The state this event puts the instance in, if it is a transition.
    pub fn state(&self) -> Option<VrrpState> {
        match self.change {
            VrrpChange::State(s) => Some(s),
            _ => None,
        }
    }
}

/// Why a FIFO line is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not four fields.
    #[error("expected 4 fields (TYPE \"NAME\" STATE PRIORITY), got {0}")]
    FieldCount(usize),
    /// The first field is not INSTANCE or GROUP (e.g. a checker's VS/RS line).
    #[error("unknown type {0:?}")]
    Type(String),
    /// The name is not in double quotes.
    #[error("name {0:?} is not quoted")]
    Name(String),
    /// Not a state or event keepalived sends.
    #[error("unknown state {0:?}")]
    State(String),
    /// Not a priority (0–255).
    #[error("bad priority {0:?}")]
    Priority(String),
}

/// Parses one line of keepalived's VRRP notify FIFO (keepalived.conf(5),
/// `vrrp_notify_fifo`): `INSTANCE "VI_1" MASTER 100`, `GROUP "G1" BACKUP 0`,
/// `INSTANCE "VI_1" MASTER_RX_LOWER_PRI 100`, `INSTANCE "VI_1" BACKUP_PRIORITY 90`.
pub fn parse_line(line: &str) -> Result<VrrpEvent, ParseError> {
    let line = line.trim_end_matches(['\n', '\r']);
    // Instance names cannot hold spaces (keepalived's tokenizer splits on them), so
    // splitting on white space is exact.
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let &[kind, name, state, priority] = fields.as_slice() else {
        return Err(ParseError::FieldCount(fields.len()));
    };
    let scope = match kind {
        "INSTANCE" => Scope::Instance,
        "GROUP" => Scope::Group,
        other => return Err(ParseError::Type(other.into())),
    };
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .filter(|n| !n.is_empty() && !n.contains('"'))
        .ok_or_else(|| ParseError::Name(name.into()))?;
    let change = match state {
        "MASTER_RX_LOWER_PRI" => VrrpChange::MasterRxLowerPri,
        "MASTER_PRIORITY" => VrrpChange::Priority(VrrpState::Master),
        "BACKUP_PRIORITY" => VrrpChange::Priority(VrrpState::Backup),
        s => VrrpChange::State(VrrpState::parse(s).ok_or_else(|| ParseError::State(s.into()))?),
    };
    let priority = priority.parse().map_err(|_| ParseError::Priority(priority.into()))?;
    Ok(VrrpEvent { scope, name: name.into(), change, priority })
}

/// Why the FIFO or the track file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    /// Something exists at the FIFO's path and it is not a FIFO.
    #[error("{}: exists and is not a FIFO", .0.display())]
    NotAFifo(PathBuf),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VrrpError + '_ {
    move |source| VrrpError::Io { path: path.to_owned(), source }
}

/// Counters of a [`NotifyFifo`], shared so metrics can read them while it runs.
#[derive(Debug, Default)]
pub struct FifoStats {
    /// Events parsed.
    pub events: AtomicU64,
    /// Lines that were not events (garbage, overlong, another program's format):
    /// skipped.
    pub bad_lines: AtomicU64,
    /// Times the FIFO was opened again because its file was replaced.
    pub reopens: AtomicU64,
}

/// The reading end of keepalived's notify FIFO.
///
/// It is opened read-write: a FIFO whose last writer closed reads as end-of-file
/// forever (and polls as ready), so a read-only reader would spin while keepalived
/// restarts. Holding a write end ourselves keeps it quietly empty instead.
#[derive(Debug)]
pub struct NotifyFifo {
    path: PathBuf,
    rx: pipe::Receiver,
    /// (device, inode) of the FIFO we hold.
    id: (u64, u64),
    /// Bytes read and not yet parsed (at most one partial line after parsing).
    buf: BytesMut,
    /// Skipping the rest of an overlong line.
    discarding: bool,
    reopen_check: Duration,
    stats: Arc<FifoStats>,
}

impl NotifyFifo {
    /// Opens the FIFO at `path`, creating it (mode 0600) if missing.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, VrrpError> {
        let path = path.into();
        let (rx, id) = open_fifo(&path)?;
        Ok(Self {
            path,
            rx,
            id,
            buf: BytesMut::with_capacity(MAX_LINE),
            discarding: false,
            reopen_check: DEFAULT_REOPEN_CHECK,
            stats: Arc::default(),
        })
    }

    /// Checks for a replaced FIFO this often instead of [`DEFAULT_REOPEN_CHECK`].
    pub fn with_reopen_check(mut self, every: Duration) -> Self {
        self.reopen_check = every;
        self
    }

    /// The counters.
    pub fn stats(&self) -> Arc<FifoStats> {
        self.stats.clone()
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next event. Lines that do not parse are logged, counted and skipped.
    /// Cancel-safe: no line is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Result<VrrpEvent, VrrpError> {
        let mut check = tokio::time::interval(self.reopen_check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            if let Some(event) = self.parse_buffered() {
                return Ok(event);
            }
            self.buf.reserve(MAX_LINE);
            tokio::select! {
                read = self.rx.read_buf(&mut self.buf) => match read {
                    Ok(0) => {
                        // We hold a write end, so this means the descriptor broke.
                        self.reopen()?;
                    }
                    Ok(_) => {}
                    Err(source) => return Err(VrrpError::Io { path: self.path.clone(), source }),
                },
                _ = check.tick() => {
                    if self.replaced() {
                        self.reopen()?;
                    }
                }
            }
        }
    }

    /// The first event among the complete lines buffered; bad lines before it are
    /// counted and dropped.
    fn parse_buffered(&mut self) -> Option<VrrpEvent> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line = self.buf.split_to(end + 1);
            if std::mem::take(&mut self.discarding) {
                self.bad_line("overlong line", &line);
                continue;
            }
            let parsed = std::str::from_utf8(&line[..end])
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|text| parse_line(text).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => {
                    self.stats.events.fetch_add(1, Ordering::Relaxed);
                    debug!(?event, "keepalived notify");
                    return Some(event);
                }
                Err(why) => self.bad_line(&why, &line),
            }
        }
        if self.buf.len() > MAX_LINE {
            // keepalived never writes this; don't let a stray writer grow the buffer.
            self.discarding = true;
            self.buf.clear();
        }
        None
    }

    fn bad_line(&self, why: &str, line: &[u8]) {
        self.stats.bad_lines.fetch_add(1, Ordering::Relaxed);
        let shown = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]).into_owned();
        warn!(fifo = %self.path.display(), line = %shown.trim_end().escape_debug(), why, "notify FIFO: line skipped");
    }

    /// Whether the path no longer names the FIFO we hold (removed, or a new one).
    fn replaced(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(_) => true,
        }
    }

    fn reopen(&mut self) -> Result<(), VrrpError> {
        // What the old FIFO still holds was written by a keepalived that is gone
        // (often its last STOP); it is true history, so it is read first.
        loop {
            self.buf.reserve(MAX_LINE);
            match self.rx.try_read_buf(&mut self.buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        // A partial last line can never be completed by the next writer.
        if let Some(end) = self.buf.iter().rposition(|&b| b == b'\n') {
            if end + 1 < self.buf.len() {
                let partial = self.buf.split_off(end + 1);
                self.bad_line("partial line from a previous writer", &partial);
            }
        } else if !self.buf.is_empty() {
            let partial = std::mem::take(&mut self.buf);
            self.bad_line("partial line from a previous writer", &partial);
        }
        let (rx, id) = open_fifo(&self.path)?;
        self.rx = rx;
        self.id = id;
        self.discarding = false;
        self.stats.reopens.fetch_add(1, Ordering::Relaxed);
        info!(fifo = %self.path.display(), "notify FIFO replaced (keepalived restarted?): re-opened");
        Ok(())
    }
}

fn open_fifo(path: &Path) -> Result<(pipe::Receiver, (u64, u64)), VrrpError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(VrrpError::NotAFifo(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                // keepalived may have created it in the meantime: fine.
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err(path)(e.into())),
            }
        }
        Err(e) => return Err(io_err(path)(e)),
    }
    let rx = pipe::OpenOptions::new().read_write(true).open_receiver(path).map_err(io_err(path))?;
    // Identify what we opened, not what the path names now.
    let fd = std::os::fd::AsFd::as_fd(&rx).try_clone_to_owned().map_err(io_err(path))?;
    let m = std::fs::File::from(fd).metadata().map_err(io_err(path))?;
    Ok((rx, (m.dev(), m.ino())))
}

/// keepalived's weight-0 track file, written by us.
#[derive(Debug, Clone)]
pub struct TrackFile {
    path: PathBuf,
}

impl TrackFile {
    /// The track file at `path` (not touched until written).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This appliance can serve: keepalived may make it master.
    pub fn healthy(&self) -> Result<(), VrrpError> {
        self.set(0)
    }

    /// Step down now: keepalived goes FAULT, sends a priority-0 advert and drops the
    /// VIPs; the twin takes over after its skew time.
    pub fn fault(&self) -> Result<(), VrrpError> {
        self.set(1)
    }

    /// Writes `value` (temporary file, then rename over the track file), so
    /// keepalived never reads a half-written number — an empty read would count as
    /// 0, healthy.
    pub fn set(&self, value: i64) -> Result<(), VrrpError> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = self.path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&temp)?;
            writeln!(f, "{value}")?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&temp);
            return Err(io_err(&temp)(e));
        }
        std::fs::rename(&temp, &self.path).map_err(io_err(&self.path))
    }

    /// The value in the file now (a missing file reads as `None`).
    pub fn get(&self) -> Result<Option<i64>, VrrpError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| io_err(&self.path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn ev(scope: Scope, name: &str, change: VrrpChange, priority: u8) -> VrrpEvent {
        VrrpEvent { scope, name: name.into(), change, priority }
    }

    #[test]
    fn keepalived_lines_parse_to_events() {
        use VrrpChange::*;
        use VrrpState::*;
        let cases = [
            ("INSTANCE \"VI_1\" MASTER 100", ev(Scope::Instance, "VI_1", State(Master), 100)),
            ("INSTANCE \"VI_1\" BACKUP 100\n", ev(Scope::Instance, "VI_1", State(Backup), 100)),
            ("INSTANCE \"PUPS\" FAULT 0\r\n", ev(Scope::Instance, "PUPS", State(Fault), 0)),
            ("INSTANCE \"PUPS\" STOP 0", ev(Scope::Instance, "PUPS", State(Stop), 0)),
            ("INSTANCE \"old\" DELETED 0", ev(Scope::Instance, "old", State(Deleted), 0)),
            ("GROUP \"G1\" BACKUP 0", ev(Scope::Group, "G1", State(Backup), 0)),
            ("INSTANCE \"VI_1\" MASTER_RX_LOWER_PRI 100", ev(Scope::Instance, "VI_1", MasterRxLowerPri, 100)),
            ("INSTANCE \"VI_0\" MASTER_PRIORITY 220", ev(Scope::Instance, "VI_0", Priority(Master), 220)),
            ("INSTANCE \"VI_0\" BACKUP_PRIORITY 254", ev(Scope::Instance, "VI_0", Priority(Backup), 254)),
            ("INSTANCE \"a.b-c\" MASTER 255", ev(Scope::Instance, "a.b-c", State(Master), 255)),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Ok(want), "{line:?}");
        }
        assert_eq!(parse_line("INSTANCE \"VI_1\" FAULT 0").unwrap().state(), Some(Fault));
        assert_eq!(parse_line("INSTANCE \"VI_1\" MASTER_RX_LOWER_PRI 9").unwrap().state(), None);
    }

    #[test]
    fn garbage_lines_are_errors_never_panics() {
        let cases = [
            ("", ParseError::FieldCount(0)),
            ("INSTANCE \"VI_1\" MASTER", ParseError::FieldCount(3)),
            ("INSTANCE \"VI 1\" MASTER 100", ParseError::FieldCount(5)),
            ("VS [192.168.201.15]:tcp:80 UP x", ParseError::Type("VS".into())),
            ("instance \"VI_1\" MASTER 100", ParseError::Type("instance".into())),
            ("INSTANCE VI_1 MASTER 100", ParseError::Name("VI_1".into())),
            ("INSTANCE \"\" MASTER 100", ParseError::Name("\"\"".into())),
            ("INSTANCE \"VI_1 MASTER 100", ParseError::Name("\"VI_1".into())),
            ("INSTANCE \"VI_1\" PRIMARY 100", ParseError::State("PRIMARY".into())),
            ("INSTANCE \"VI_1\" MASTER 256", ParseError::Priority("256".into())),
            ("INSTANCE \"VI_1\" MASTER -1", ParseError::Priority("-1".into())),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line), Err(want), "{line:?}");
        }
        // Arbitrary bytes (a fixed pseudo-random sequence): an error or an event, no panic.
        let alphabet = b"INSTANCEGROUP\" MASTERBACKUPFAULT_0123456789 \t\xff";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let mut bytes = Vec::new();
            for _ in 0..(x % 48) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse_line(&String::from_utf8_lossy(&bytes));
        }
    }

    fn write_to(path: &Path, bytes: &[u8]) {
        // The reader holds a write end, so opening for writing does not block.
        let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        w.write_all(bytes).unwrap();
    }

    async fn next(fifo: &mut NotifyFifo) -> VrrpEvent {
        tokio::time::timeout(Duration::from_secs(10), fifo.next_event()).await.expect("an event").unwrap()
    }

    #[tokio::test]
    async fn the_reader_creates_the_fifo_and_skips_and_counts_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.fifo");
        let mut fifo = NotifyFifo::open(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().file_type().is_fifo());
        let mut garbage = b"INSTANCE \"PUPS\" BACKUP 100\nhello\n\n".to_vec();
        garbage.extend_from_slice(&[b'x'; 3 * MAX_LINE]);
        garbage.extend_from_slice(b" still the overlong line\nINSTANCE \"\xff\" MASTER 1\n");
        garbage.extend_from_slice(b"INSTANCE \"PUPS\" MASTER 100\nINSTANCE \"PUPS\" FAU");
        write_to(&path, &garbage);
        assert_eq!(next(&mut fifo).await.state(), Some(VrrpState::Backup));
        assert_eq!(next(&mut fifo).await.state(), Some(VrrpState::Master));
        // The rest of a line written in two pieces.
        write_to(&path, b"LT 0\n");
        let e = next(&mut fifo).await;
        assert_eq!((e.state(), e.priority), (Some(VrrpState::Fault), 0));
        let stats = fifo.stats();
        assert_eq!(stats.events.load(Ordering::Relaxed), 3);
        // "hello", the empty line, the overlong line, the non-UTF-8 line.
        assert_eq!(stats.bad_lines.load(Ordering::Relaxed), 4);
        assert_eq!(stats.reopens.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_replaced_fifo_is_reopened_after_the_old_one_is_read_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.fifo");
        let mut fifo = NotifyFifo::open(&path).unwrap().with_reopen_check(Duration::from_millis(20));
        // A keepalived that created the FIFO writes its last line, removes the FIFO
        // on exit, and its successor makes a new one.
        write_to(&path, b"INSTANCE \"PUPS\" STOP 0\nINSTANCE \"PUPS\" BAC");
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(next(&mut fifo).await.state(), Some(VrrpState::Stop));
        let stats = fifo.stats();
        let mut fifo_next = std::pin::pin!(fifo.next_event());
        // Nobody else reads the new FIFO: give the reader time to switch to it
        // before writing (a writer's open would otherwise block).
        let got = loop {
            tokio::select! {
                e = &mut fifo_next => break e.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if let Ok(mut w) = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                        .open(&path)
                    {
                        w.write_all(b"INSTANCE \"PUPS\" MASTER 100\n").unwrap();
                    }
                }
            }
        };
        assert_eq!(got.state(), Some(VrrpState::Master));
        assert_eq!(stats.reopens.load(Ordering::Relaxed), 1);
        // The half line the old writer left behind.
        assert_eq!(stats.bad_lines.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_path_that_is_not_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        std::fs::write(&path, "").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let err = rt.block_on(async { NotifyFifo::open(&path).unwrap_err() });
        assert!(matches!(err, VrrpError::NotAFifo(_)), "{err}");
    }

    #[test]
    fn the_track_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let track = TrackFile::new(dir.path().join("vrrp.track"));
        assert_eq!(track.get().unwrap(), None);
        track.fault().unwrap();
        assert_eq!(std::fs::read_to_string(track.path()).unwrap(), "1\n");
        track.healthy().unwrap();
        assert_eq!(track.get().unwrap(), Some(0));
        track.set(-20).unwrap();
        assert_eq!(track.get().unwrap(), Some(-20));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["vrrp.track"], "no temporary file is left");
        let missing = TrackFile::new(dir.path().join("no/such/dir/track"));
        assert!(matches!(missing.fault(), Err(VrrpError::Io { .. })));
    }
}
