//! One bank session: a single tokio task that owns its socket, its in-flight table
//! and its counters, so nothing on the hot path is shared or locked.
//!
//! The task runs one `select!` loop per connection over the read half, the write
//! half, one timer and the stop signal. Each turn it expires timeouts, appends every
//! request that is due (and fits the pipeline) to one write buffer, and writes as
//! much of the buffer as the socket takes in one syscall: with pipelining, many
//! frames go out per write. Reads are parsed in place in one buffer.
//!
//! Matching follows `pups`: `MatchKeyConfig::default()` over the parsed message.
//! A response whose key is in flight answers it; one whose key was answered
//! recently (within `dup_window`) is a duplicate; anything else is unmatched.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use proto::frame::{Check, FrameConfig, FrameError, TPDU_LEN, swap_tpdu};
use proto::iso8583::{Layout, MatchKey, MatchKeyConfig, Message, Mti, ResponseCode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::{BankSimConfig, ConfigError};
use super::report::{Counters, DisconnectEvent, DisconnectKind, MtiCounters};
use super::wire::{self, Constants, FieldClock, Template, Values, put_digits};

/// Fields echoed from an FO-originated request into the simulator's response.
const ECHOED: [u8; 13] = [2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 70];

/// Acquirer id (DE32) of generated requests, and as a number for DE90.
const ACQUIRER: &str = "123456";
const ACQUIRER_ID: u64 = 123_456;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;

/// Warnings per session and kind before further ones go to debug.
const WARN_BUDGET: u32 = 10;

/// Highest STAN; STANs run 1..=999999.
const MAX_STAN: u32 = 999_999;

/// Far enough to mean "no timer".
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// Counts every session updates (in batches) for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

/// What every session reads: settings, layout, framing, target.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: BankSimConfig,
    pub(crate) layout: &'static Layout,
    pub(crate) framing: FrameConfig,
    pub(crate) tpdu: Option<[u8; TPDU_LEN]>,
    pub(crate) keys: MatchKeyConfig,
    pub(crate) mix: Vec<(Mti, u32)>,
    /// `target` then `more_targets`, resolved: session `i` connects to `addrs[i % len]`.
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) start: Instant,
    pub(crate) start_wall: SystemTime,
    pub(crate) live: Live,
}

impl Shared {
    /// Checks that every message the sessions will build can be built.
    pub(crate) fn new(cfg: BankSimConfig, addrs: Vec<SocketAddr>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let layout = cfg.layout()?;
        let framing = cfg.frame_config();
        let tpdu = cfg.tpdu_bytes()?;
        let mix = cfg.mix_entries()?;
        let fail = |what: &str, e: &dyn std::fmt::Display| ConfigError::Message {
            layout: layout.name().to_owned(),
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let mut probe = Vec::new();
        layout
            .encode("0800", [(7, "0101000000"), (11, "000001"), (70, "001")], &mut probe)
            .map_err(|e| fail("0800", &e))?;
        framing.encode(tpdu.as_ref(), &[], &probe, &mut Vec::new()).map_err(|e| fail("0800 frame", &e))?;
        layout
            .encode("0810", [(11, "000001"), (39, cfg.response_code.as_str())], &mut Vec::new())
            .map_err(|e| fail("response with the configured response code", &e))?;
        Ok(Self {
            cfg,
            layout,
            framing,
            tpdu,
            keys: MatchKeyConfig::default(),
            mix,
            addrs,
            start: Instant::now(),
            start_wall: SystemTime::now(),
            live: Live::default(),
        })
    }

    fn rate_mode(&self) -> bool {
        self.cfg.rate > 0.0
    }
}

/// What a session hands back when it ends.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) id: u32,
    pub(crate) terminal: String,
    pub(crate) connects: u32,
    pub(crate) counters: Counters,
    pub(crate) by_mti: Vec<(Mti, MtiCounters)>,
    pub(crate) codes: Vec<(String, u64)>,
    pub(crate) histogram: Histogram<u64>,
    pub(crate) service: Histogram<u64>,
    pub(crate) events: Vec<DisconnectEvent>,
    pub(crate) ready_at: Option<Instant>,
    pub(crate) last_response: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Load,
    SignOn,
    Echo,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    kind: Kind,
    /// Index into `by_mti`.
    mti: usize,
    intended: Instant,
    sent: Instant,
    timed_out: bool,
}

/// The original a reversal refers to (DE90).
#[derive(Debug, Clone, Copy)]
struct Original {
    mti: Mti,
    stan: [u8; 6],
    de7: [u8; 10],
}

/// Why a connection ended before its work was done.
#[derive(Debug)]
struct Failure {
    kind: DisconnectKind,
    error: Option<String>,
}

impl Failure {
    fn io(e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionReset => DisconnectKind::Rst,
            io::ErrorKind::UnexpectedEof => DisconnectKind::Fin,
            _ => DisconnectKind::IoError,
        };
        Self { kind, error: Some(e.to_string()) }
    }

    fn framing(e: &FrameError) -> Self {
        Self { kind: DisconnectKind::FramingError, error: Some(e.to_string()) }
    }
}

/// Keys answered recently, to tell duplicates from unmatched responses. Holds
/// 64-bit fingerprints, in a ring of `cap` entries.
#[derive(Debug)]
struct AnsweredWindow {
    cap: usize,
    ring: VecDeque<(u64, u64)>,
    latest: HashMap<u64, u64>,
    next: u64,
}

impl AnsweredWindow {
    fn new(cap: usize) -> Self {
        Self { cap, ring: VecDeque::new(), latest: HashMap::new(), next: 0 }
    }

    fn fingerprint(key: &MatchKey) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    fn insert(&mut self, key: &MatchKey) {
        if self.cap == 0 {
            return;
        }
        let fp = Self::fingerprint(key);
        self.next += 1;
        self.latest.insert(fp, self.next);
        self.ring.push_back((fp, self.next));
        if self.ring.len() > self.cap {
            if let Some((old, n)) = self.ring.pop_front() {
                if self.latest.get(&old) == Some(&n) {
                    self.latest.remove(&old);
                }
            }
        }
    }

    fn contains(&self, key: &MatchKey) -> bool {
        self.latest.contains_key(&Self::fingerprint(key))
    }
}

/// One session's whole state, across reconnects.
pub(crate) struct Session {
    sh: Arc<Shared>,
    id: u32,
    terminal: String,
    templates: Vec<Template>,
    weights: Vec<i64>,
    current: Vec<i64>,
    counters: Counters,
    by_mti: Vec<(Mti, MtiCounters)>,
    netmgmt_index: usize,
    codes: Vec<(Option<Vec<u8>>, String, u64)>,
    histogram: Histogram<u64>,
    service: Histogram<u64>,
    events: Vec<DisconnectEvent>,
    connects: u32,
    inflight: HashMap<MatchKey, InFlight>,
    deadlines: VecDeque<(Instant, u64, MatchKey)>,
    answered: AnsweredWindow,
    seq: u64,
    outstanding: u32,
    stan: u32,
    remaining: Option<u64>,
    interval: Option<Duration>,
    next_due: Option<Instant>,
    ready_at: Option<Instant>,
    end_at: Option<Instant>,
    last_sent: Instant,
    sending_done: Option<Instant>,
    stopped: bool,
    signed_on: bool,
    last_response: Option<Instant>,
    last_original: Option<Original>,
    clock: FieldClock,
    values: Values,
    wbuf: Vec<u8>,
    wpos: usize,
    scratch: Vec<u8>,
    flushed: (u64, u64),
    warnings: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("id", &self.id).field("terminal", &self.terminal).finish()
    }
}

impl Session {
    /// Session `id` (0-based) of the run: its terminal id, PAN, STAN range,
    /// request share and templates.
    pub(crate) fn new(sh: Arc<Shared>, id: u32) -> Result<Self, ConfigError> {
        let cfg = &sh.cfg;
        let terminal = cfg.terminal_id(id);
        let pan = wire::test_pan(id);
        let merchant = format!("MERCHANT{:07}", u64::from(id) + 1);
        let constants = Constants { pan: &pan, acquirer: ACQUIRER, terminal: &terminal, merchant: &merchant };
        let templates = sh
            .mix
            .iter()
            .map(|&(mti, _)| Template::new(sh.layout, &sh.framing, sh.tpdu.as_ref(), mti, &constants))
            .collect::<Result<Vec<_>, _>>()?;
        let weights: Vec<i64> = sh.mix.iter().map(|&(_, w)| i64::from(w)).collect();
        let mut by_mti: Vec<(Mti, MtiCounters)> =
            sh.mix.iter().map(|&(m, _)| (m, MtiCounters::default())).collect();
        let netmgmt: Mti = "0800".parse().expect("a valid MTI");
        by_mti.push((netmgmt, MtiCounters::default()));
        let sessions = u64::from(cfg.sessions);
        let remaining =
            cfg.requests.map(|total| total / sessions + u64::from(u64::from(id) < total % sessions));
        let stride = (u64::from(MAX_STAN) / sessions).max(1);
        let stan = (u64::from(id) * stride % u64::from(MAX_STAN)) as u32 + 1;
        let interval = (cfg.rate > 0.0).then(|| Duration::from_secs_f64(sessions as f64 / cfg.rate));
        // 1 µs to 1 h, 3 significant digits.
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
        let mut values = Values {
            amount: [b'0'; 12],
            de7: [b'0'; 10],
            stan: [b'0'; 6],
            de12: [b'0'; 6],
            de13: [b'0'; 4],
            rrn: [b'0'; 12],
            de90: [b'0'; 42],
        };
        put_digits(&mut values.rrn[..6], u64::from(id));
        Ok(Self {
            id,
            terminal,
            current: vec![0; templates.len()],
            templates,
            weights,
            counters: Counters::default(),
            netmgmt_index: by_mti.len() - 1,
            by_mti,
            codes: Vec::new(),
            service: histogram.clone(),
            histogram,
            events: Vec::new(),
            connects: 0,
            inflight: HashMap::new(),
            deadlines: VecDeque::new(),
            answered: AnsweredWindow::new(cfg.dup_window),
            seq: 0,
            outstanding: 0,
            stan,
            remaining,
            interval,
            next_due: None,
            ready_at: None,
            end_at: None,
            last_sent: Instant::now(),
            sending_done: None,
            stopped: false,
            signed_on: false,
            last_response: None,
            last_original: None,
            clock: FieldClock::new(),
            values,
            wbuf: Vec::with_capacity(READ_CHUNK),
            wpos: 0,
            scratch: Vec::with_capacity(512),
            flushed: (0, 0),
            warnings: 0,
            sh,
        })
    }

    /// Runs the session to its end: connects, drives each connection, reconnects
    /// if configured.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Outcome {
        let sh = Arc::clone(&self.sh);
        let cfg = &sh.cfg;
        self.stopped = *stop.borrow();
        loop {
            if self.stopped {
                break;
            }
            let addr = sh.addrs[self.id as usize % sh.addrs.len()];
            let connect = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr));
            let result = tokio::select! {
                r = connect => Some(r),
                _ = stop.changed() => None,
            };
            let failure = match result {
                None => {
                    self.stopped = true;
                    break;
                }
                Some(Ok(Ok(stream))) => {
                    self.connects += 1;
                    sh.live.connected.fetch_add(1, Ordering::Relaxed);
                    info!(session = self.id, terminal = %self.terminal, "connected to {addr}");
                    let end = self.drive(stream, &mut stop).await;
                    sh.live.connected.fetch_sub(1, Ordering::Relaxed);
                    self.flush_live();
                    match end {
                        Ok(()) => break,
                        Err(f) => f,
                    }
                }
                Some(Ok(Err(e))) => {
                    Failure { kind: DisconnectKind::ConnectFailed, error: Some(e.to_string()) }
                }
                Some(Err(_)) => Failure {
                    kind: DisconnectKind::ConnectFailed,
                    error: Some(format!("connect timed out after {:?}", cfg.connect_timeout)),
                },
            };
            self.record(failure);
            if !cfg.reconnect || self.sending_done.is_some() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(cfg.reconnect_delay) => {}
                _ = stop.changed() => self.stopped = true,
            }
        }
        self.finish()
    }

    fn record(&mut self, f: Failure) {
        let event = DisconnectEvent {
            kind: f.kind,
            elapsed_ms: self.sh.start.elapsed().as_millis() as u64,
            at: wire::rfc3339(SystemTime::now()),
            error: f.error,
            in_flight: self.inflight.len() as u64,
        };
        warn!(
            session = self.id,
            terminal = %self.terminal,
            kind = ?event.kind,
            in_flight = event.in_flight,
            "session failure: {}",
            event.error.as_deref().unwrap_or("-")
        );
        self.sh.live.disconnects.fetch_add(1, Ordering::Relaxed);
        self.events.push(event);
        // Their connection is gone: nothing can answer them any more (a response
        // on a later connection counts as unmatched), and they must not hold
        // pipeline slots after a reconnect.
        self.abandon_in_flight();
    }

    /// Counts every request still in flight as lost.
    fn abandon_in_flight(&mut self) {
        for (_, e) in self.inflight.drain() {
            self.counters.lost += 1;
            self.by_mti[e.mti].1.lost += 1;
        }
        self.deadlines.clear();
        self.outstanding = 0;
    }

    fn finish(mut self) -> Outcome {
        self.abandon_in_flight();
        if self.counters.lost > 0 {
            warn!(session = self.id, lost = self.counters.lost, "requests never answered");
        }
        self.flush_live();
        Outcome {
            id: self.id,
            terminal: self.terminal,
            connects: self.connects,
            counters: self.counters,
            by_mti: self.by_mti,
            codes: self.codes.into_iter().map(|(_, name, n)| (name, n)).collect(),
            histogram: self.histogram,
            service: self.service,
            events: self.events,
            ready_at: self.ready_at,
            last_response: self.last_response,
        }
    }

    /// Publishes counts for the progress line.
    fn flush_live(&mut self) {
        let (sent, answered) = (self.counters.sent, self.counters.answered);
        let live = &self.sh.live;
        if sent != self.flushed.0 {
            live.sent.fetch_add(sent - self.flushed.0, Ordering::Relaxed);
        }
        if answered != self.flushed.1 {
            live.answered.fetch_add(answered - self.flushed.1, Ordering::Relaxed);
        }
        self.flushed = (sent, answered);
    }

    /// One connection, until the session's work is done (`Ok`) or the connection
    /// fails.
    async fn drive(&mut self, stream: TcpStream, stop: &mut watch::Receiver<bool>) -> Result<(), Failure> {
        let sh = Arc::clone(&self.sh);
        let cfg = &sh.cfg;
        // Nagle would hold back the tail of each batch; latency matters here.
        stream.set_nodelay(true).map_err(|e| Failure::io(&e))?;
        let (mut rd, mut wr) = stream.into_split();
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        self.wbuf.clear();
        self.wpos = 0;
        self.signed_on = false;
        let now = Instant::now();
        if cfg.sign_on {
            self.send_netmgmt("001", Kind::SignOn, now);
        } else {
            self.on_ready(now);
        }
        let mut linger_until: Option<Instant> = None;
        let sleep = tokio::time::sleep_until(now + IDLE_WAKE);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            self.expire(now)?;
            if linger_until.is_none() {
                self.pump(now);
            }
            self.flush_live();
            if self.wpos == self.wbuf.len() {
                if let Some(until) = linger_until {
                    if now >= until {
                        break;
                    }
                } else if let Some(done) = self.sending_done {
                    if self.inflight.is_empty() {
                        if cfg.linger.is_zero() {
                            break;
                        }
                        linger_until = Some(now + cfg.linger);
                    } else if now >= done + cfg.grace {
                        break;
                    }
                }
            }
            let wake = self.next_wake(now, linger_until);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            let pending_write = self.wpos < self.wbuf.len();
            tokio::select! {
                biased;
                r = rd.read_buf(&mut rbuf) => match r {
                    Ok(0) => {
                        return Err(Failure { kind: DisconnectKind::Fin, error: Some("peer closed the connection".into()) });
                    }
                    Ok(_) => self.on_bytes(&mut rbuf)?,
                    Err(e) => return Err(Failure::io(&e)),
                },
                r = wr.write(&self.wbuf[self.wpos..]), if pending_write => match r {
                    Ok(n) => {
                        self.wpos += n;
                        if self.wpos == self.wbuf.len() {
                            self.wbuf.clear();
                            self.wpos = 0;
                        }
                    }
                    Err(e) => return Err(Failure::io(&e)),
                },
                () = &mut sleep => {}
                _ = stop.changed(), if !self.stopped => self.stopped = true,
            }
        }
        debug!(session = self.id, "closing");
        let _ = wr.shutdown().await;
        Ok(())
    }

    /// The session may send financial traffic from now on.
    fn on_ready(&mut self, now: Instant) {
        self.signed_on = true;
        if self.ready_at.is_some() {
            return;
        }
        self.ready_at = Some(now);
        self.end_at = self.sh.cfg.duration.map(|d| now + d);
        if let Some(iv) = self.interval {
            // Spread the sessions' sends evenly over one interval.
            let phase = iv.mul_f64(f64::from(self.id) / f64::from(self.sh.cfg.sessions));
            self.next_due = Some(now + phase);
        }
    }

    fn next_wake(&self, now: Instant, linger_until: Option<Instant>) -> Instant {
        let cfg = &self.sh.cfg;
        let mut wake = now + IDLE_WAKE;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        at(self.deadlines.front().map(|d| d.0));
        at(linger_until);
        match self.sending_done {
            Some(done) => at(Some(done + cfg.grace)),
            None if self.signed_on => {
                if self.outstanding < cfg.pipeline && self.remaining != Some(0) {
                    at(self.next_due);
                }
                at(self.end_at);
                at(cfg.echo_idle.map(|idle| self.last_sent + idle));
            }
            None => {}
        }
        wake
    }

    /// Marks requests past their deadline as timed out, and drops deadlines of
    /// requests already answered from the front of the queue (responses mostly
    /// come in order, so the queue stays about as long as the in-flight table).
    fn expire(&mut self, now: Instant) -> Result<(), Failure> {
        while let Some((deadline, seq, key)) = self.deadlines.front() {
            let live = self.inflight.get(key).is_some_and(|e| e.seq == *seq && !e.timed_out);
            if live && *deadline > now {
                break;
            }
            let Some((_, _, key)) = self.deadlines.pop_front() else { break };
            if !live {
                continue;
            }
            let Some(e) = self.inflight.get_mut(&key) else { continue };
            e.timed_out = true;
            self.counters.timeouts += 1;
            match e.kind {
                Kind::Load => self.outstanding -= 1,
                Kind::SignOn => {
                    return Err(Failure {
                        kind: DisconnectKind::SignOnTimeout,
                        error: Some(format!("no sign-on response within {:?}", self.sh.cfg.timeout)),
                    });
                }
                Kind::Echo => {}
            }
            if self.warnings < WARN_BUDGET {
                self.warnings += 1;
                warn!(session = self.id, key = %key, "request timed out");
            }
        }
        Ok(())
    }

    /// Sends what is due: financial requests within the pipeline and schedule,
    /// and an echo if the session has been idle.
    fn pump(&mut self, now: Instant) {
        let pipeline = self.sh.cfg.pipeline;
        if self.sending_done.is_none()
            && (self.stopped || self.remaining == Some(0) || self.end_at.is_some_and(|e| now >= e))
        {
            self.sending_done = Some(now);
            debug!(session = self.id, sent = self.counters.sent, "sending done");
        }
        if !self.signed_on || self.sending_done.is_some() {
            return;
        }
        let mut ticked = false;
        while self.outstanding < pipeline && self.remaining != Some(0) {
            let intended = match (self.interval, self.next_due) {
                (Some(iv), Some(due)) => {
                    if due > now || self.end_at.is_some_and(|e| due >= e) {
                        break;
                    }
                    self.next_due = Some(due + iv);
                    due
                }
                _ => now,
            };
            if !ticked {
                self.clock.tick();
                ticked = true;
            }
            self.send_load(intended, now);
            if let Some(r) = &mut self.remaining {
                *r -= 1;
            }
        }
        if let Some(idle) = self.sh.cfg.echo_idle {
            if now >= self.last_sent + idle {
                self.send_netmgmt("301", Kind::Echo, now);
            }
        }
    }

    fn next_stan(&mut self) -> u32 {
        let stan = self.stan;
        self.stan = if stan >= MAX_STAN { 1 } else { stan + 1 };
        stan
    }

    /// Smooth weighted round robin: exact shares, evenly spread, deterministic.
    fn pick(&mut self) -> usize {
        let total: i64 = self.weights.iter().sum();
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }

    fn send_load(&mut self, intended: Instant, now: Instant) {
        let idx = self.pick();
        let stan = self.next_stan();
        self.seq += 1;
        let v = &mut self.values;
        put_digits(&mut v.stan, u64::from(stan));
        put_digits(&mut v.amount, 100 + self.seq.wrapping_mul(7919) % 100_000);
        v.de7 = self.clock.de7;
        v.de12 = self.clock.de12();
        v.de13 = self.clock.de13();
        put_digits(&mut v.rrn[6..], u64::from(stan));
        let mti = self.templates[idx].mti();
        if mti.class() == 4 {
            v.de90 = [b'0'; 42];
            if let Some(o) = self.last_original {
                v.de90[..4].copy_from_slice(o.mti.as_bytes());
                v.de90[4..10].copy_from_slice(&o.stan);
                v.de90[10..20].copy_from_slice(&o.de7);
                put_digits(&mut v.de90[20..31], ACQUIRER_ID);
            }
        } else {
            self.last_original = Some(Original { mti, stan: v.stan, de7: v.de7 });
        }
        let range = self.templates[idx].append(&self.values, &mut self.wbuf);
        let key = match Message::parse(self.sh.layout, &self.wbuf[range]) {
            Ok(msg) => self.sh.keys.key(&msg),
            // Templates are checked against the encoder when built; this is a bug.
            Err(e) => {
                warn!(session = self.id, "generated request does not decode: {e}");
                return;
            }
        };
        self.register(key, Kind::Load, idx, intended, now);
    }

    /// Sends an 0800 with DE70 = `code`.
    fn send_netmgmt(&mut self, code: &str, kind: Kind, now: Instant) {
        self.clock.tick();
        let stan = self.next_stan();
        let mut digits = [0u8; 6];
        put_digits(&mut digits, u64::from(stan));
        let de7 = self.clock.de7;
        let fields = [
            (7, std::str::from_utf8(&de7).unwrap_or_default()),
            (11, std::str::from_utf8(&digits).unwrap_or_default()),
            (70, code),
        ];
        self.scratch.clear();
        // Both encodings were checked when the run was prepared.
        if let Err(e) = self.sh.layout.encode("0800", fields, &mut self.scratch) {
            warn!(session = self.id, "cannot encode 0800: {e}");
            return;
        }
        if let Err(e) = self.sh.framing.encode(self.sh.tpdu.as_ref(), &[], &self.scratch, &mut self.wbuf) {
            warn!(session = self.id, "cannot frame 0800: {e}");
            return;
        }
        let key = match Message::parse(self.sh.layout, &self.scratch) {
            Ok(msg) => self.sh.keys.key(&msg),
            Err(e) => {
                warn!(session = self.id, "generated 0800 does not decode: {e}");
                return;
            }
        };
        debug!(session = self.id, code, stan, "sent 0800");
        self.register(key, kind, self.netmgmt_index, now, now);
    }

    fn register(&mut self, key: MatchKey, kind: Kind, mti: usize, intended: Instant, now: Instant) {
        self.seq += 1;
        let entry = InFlight { seq: self.seq, kind, mti, intended, sent: now, timed_out: false };
        self.deadlines.push_back((now + self.sh.cfg.timeout, self.seq, key.clone()));
        if let Some(old) = self.inflight.insert(key, entry) {
            // The key came round again (STAN wrap) while the old request was still
            // unanswered: that one can no longer be matched.
            self.counters.lost += 1;
            self.by_mti[old.mti].1.lost += 1;
            if old.kind == Kind::Load && !old.timed_out {
                self.outstanding -= 1;
            }
        }
        self.counters.sent += 1;
        self.by_mti[mti].1.sent += 1;
        if kind == Kind::Load {
            self.outstanding += 1;
        }
        self.last_sent = now;
    }

    /// Handles every whole frame in `rbuf`.
    fn on_bytes(&mut self, rbuf: &mut BytesMut) -> Result<(), Failure> {
        let now = Instant::now();
        loop {
            let info = match self.sh.framing.check(rbuf) {
                Ok(Check::Incomplete { .. }) => return Ok(()),
                Ok(Check::Frame(info)) => info,
                Err(e) => return Err(Failure::framing(&e)),
            };
            if info.is_keep_alive() {
                self.counters.keep_alives += 1;
            } else {
                let tpdu = info.tpdu.clone().and_then(|r| <[u8; TPDU_LEN]>::try_from(&rbuf[r]).ok());
                self.on_message(&rbuf[info.message.clone()], tpdu, now)?;
            }
            rbuf.advance(info.total);
        }
    }

    fn on_message(
        &mut self,
        bytes: &[u8],
        tpdu: Option<[u8; TPDU_LEN]>,
        now: Instant,
    ) -> Result<(), Failure> {
        let msg = match Message::parse(self.sh.layout, bytes) {
            Ok(msg) => msg,
            Err(e) => {
                self.counters.malformed += 1;
                warn!(session = self.id, "malformed message ({} bytes): {e}", bytes.len());
                return Ok(());
            }
        };
        match msg.mti().role() {
            Role::Response => self.on_response(&msg, now),
            Role::Request => {
                self.answer(&msg, tpdu, now);
                Ok(())
            }
            Role::Notification | Role::Other => {
                self.counters.ignored += 1;
                debug!(session = self.id, "ignored {}", msg.masked());
                Ok(())
            }
        }
    }

    fn count_code(&mut self, msg: &Message<'_>) {
        let raw = msg.field(39).map(|f| f.data);
        if let Some(entry) = self.codes.iter_mut().find(|(r, _, _)| r.as_deref() == raw) {
            entry.2 += 1;
            return;
        }
        let name = match msg.response_code() {
            None => "none".to_owned(),
            Some(Ok(code)) => code.0,
            Some(Err(_)) => "undecodable".to_owned(),
        };
        self.codes.push((raw.map(<[u8]>::to_vec), name, 1));
    }

    fn on_response(&mut self, msg: &Message<'_>, now: Instant) -> Result<(), Failure> {
        self.last_response = Some(now);
        self.count_code(msg);
        let key = self.sh.keys.key(msg);
        let Some(e) = self.inflight.remove(&key) else {
            if self.answered.contains(&key) {
                self.counters.duplicates += 1;
                if self.warnings < WARN_BUDGET {
                    self.warnings += 1;
                    warn!(session = self.id, key = %key, "duplicate response");
                }
            } else {
                self.counters.unmatched += 1;
                if self.warnings < WARN_BUDGET {
                    self.warnings += 1;
                    warn!(session = self.id, "unmatched response {}", msg.masked());
                }
            }
            return Ok(());
        };
        self.answered.insert(&key);
        self.counters.answered += 1;
        self.by_mti[e.mti].1.answered += 1;
        let timeout = self.sh.cfg.timeout;
        if e.timed_out || now.duration_since(e.sent) > timeout {
            self.counters.late += 1;
            self.by_mti[e.mti].1.late += 1;
            if !e.timed_out {
                self.counters.timeouts += 1;
            }
        }
        match e.kind {
            Kind::Load => {
                if !e.timed_out {
                    self.outstanding -= 1;
                }
                let micros = |since: Instant| {
                    u64::try_from(now.duration_since(since).as_micros()).unwrap_or(u64::MAX).max(1)
                };
                let service = micros(e.sent);
                self.service.saturating_record(service);
                let latency = if self.sh.rate_mode() { micros(e.intended) } else { service };
                self.histogram.saturating_record(latency);
            }
            Kind::SignOn => {
                let code = msg.response_code();
                let approved = code.as_ref().is_some_and(|c| c.as_ref().is_ok_and(ResponseCode::is_approval));
                if !approved {
                    let shown = match code {
                        Some(Ok(c)) => c.0,
                        Some(Err(_)) => "undecodable".to_owned(),
                        None => "none".to_owned(),
                    };
                    return Err(Failure {
                        kind: DisconnectKind::SignOnRejected,
                        error: Some(format!("sign-on answered with DE39 {shown}")),
                    });
                }
                info!(session = self.id, "signed on");
                self.on_ready(now);
            }
            Kind::Echo => debug!(session = self.id, "echo answered"),
        }
        Ok(())
    }

    /// Answers a request the switch sent: response MTI, the usual fields echoed,
    /// DE39 as configured.
    fn answer(&mut self, msg: &Message<'_>, tpdu: Option<[u8; TPDU_LEN]>, now: Instant) {
        self.counters.fo_requests += 1;
        debug!(session = self.id, "FO request {}", msg.masked());
        let Some(mti) = msg.mti().response() else { return };
        let mut values: Vec<(u8, String)> = ECHOED
            .iter()
            .filter_map(|&id| match msg.value(id)? {
                Ok(v) => Some((id, v)),
                Err(e) => {
                    warn!(session = self.id, "FO request DE{id} does not decode: {e}");
                    None
                }
            })
            .collect();
        values.push((39, self.sh.cfg.response_code.clone()));
        self.scratch.clear();
        let fields = values.iter().map(|(id, v)| (*id, v.as_str()));
        if let Err(e) = self.sh.layout.encode(mti.as_str(), fields, &mut self.scratch) {
            warn!(session = self.id, "cannot answer FO request {}: {e}", msg.masked());
            return;
        }
        let reply_tpdu = tpdu.map(|t| swap_tpdu(&t)).or(self.sh.tpdu);
        if let Err(e) = self.sh.framing.encode(reply_tpdu.as_ref(), &[], &self.scratch, &mut self.wbuf) {
            warn!(session = self.id, "cannot frame the answer to an FO request: {e}");
            return;
        }
        self.counters.fo_answered += 1;
        self.last_sent = now;
    }
}
