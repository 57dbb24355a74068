//! The planned appliance switchover, `pups`'s side, against the real kernel in
//! network namespaces (the tests run as root): a bank namespace holding a bridge,
//! two appliance namespaces plugged into it, the VIP on the first. Each appliance
//! runs an in-process `Pups` (on a thread that entered its namespace) with a
//! `[vrrp]` section, so both start with their bank ports locked; a small test
//! `mups` on each local link echoes every bank request as its response and drives
//! the `HANDOVER` ops. Bank sessions send requests back to back the whole time.
//!
//! Checked: no bank session ever sees an error, EOF or reset; every request is
//! answered exactly once, in order; `TcpOutRsts` and `TcpExtPAWSEstab` do not move
//! in any namespace; `mups` hears `SESSION_DOWN(HandedOver)` from the old
//! appliance and `SESSION_UP` from the new one under the same ids. The
//! bank-visible pause (the slowest request during each switch) is printed, not
//! asserted.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use nix::sched::{CloneFlags, setns};
use proto::config::ApplianceConfig;
use proto::fo_link::{
    Channel, Data, DataFlags, Direction, FoMessage, Handover, HandoverOp, Hello, LinkChannel, PeerRole,
    SessionDownReason,
};
use pups::local_link::LinkCodec;
use pups::{Pups, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::codec::{Encoder, FramedRead};

const BANK_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const APP_IPS: [&str; 2] = ["10.78.0.2", "10.78.0.3"];
const APP_MACS: [&str; 2] = ["02:78:00:00:00:02", "02:78:00:00:00:03"];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 10);
const PORT: u16 = 8583;
const BANK: &str = "bank-a";

/// Bank sessions.
const SESSIONS: usize = 50;

/// Bound on any wait; reaching it fails the test (a guard against hangs, not a
/// measurement).
const PATIENCE: Duration = Duration::from_secs(30);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop (with its links and nft tables).
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pupsho-{}-{}-{role}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `f` on a thread inside the namespace: sockets it creates belong to it.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                setns(File::open(self.path()).unwrap(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Absolute SNMP counters (`nstat -asz`, which leaves nstat's history alone).
    fn counters(&self) -> HashMap<String, u64> {
        sh(&["ip", "netns", "exec", &self.name, "nstat", "-asz"])
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// The bank on a bridge, two appliances on it, the VIP on the first.
struct Lab {
    bank: Netns,
    apps: [Netns; 2],
}

impl Lab {
    fn new() -> Self {
        let lab = Self { bank: Netns::new("bank"), apps: [Netns::new("app1"), Netns::new("app2")] };
        let b = &lab.bank;
        b.ip(&["link", "add", "br0", "type", "bridge"]);
        for (i, app) in lab.apps.iter().enumerate() {
            let port = format!("v{i}");
            b.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &app.name]);
            b.ip(&["link", "set", &port, "master", "br0", "up"]);
            app.ip(&["link", "set", "eth0", "address", APP_MACS[i]]);
            app.ip(&["addr", "add", &format!("{}/24", APP_IPS[i]), "dev", "eth0"]);
            app.ip(&["link", "set", "eth0", "up"]);
        }
        b.ip(&["addr", "add", &format!("{BANK_IP}/24"), "dev", "br0"]);
        b.ip(&["link", "set", "br0", "up"]);
        lab.apps[0].ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
        lab
    }

    /// Moves the VIP from appliance `from` to `to`; the neighbour entry stands in
    /// for keepalived's gratuitous ARP.
    fn move_vip(&self, from: usize, to: usize) {
        self.apps[from].ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
        self.apps[to].ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
        self.bank.ip(&["neigh", "replace", &VIP.to_string(), "lladdr", APP_MACS[to], "dev", "br0"]);
    }

    fn all(&self) -> [&Netns; 3] {
        [&self.bank, &self.apps[0], &self.apps[1]]
    }
}

/// The configuration of appliance `i` (0 or 1) of the pair.
fn config(i: usize, state_dir: &std::path::Path) -> Arc<ApplianceConfig> {
    let bank = common::bank(
        BANK,
        &format!("{VIP}:{PORT}"),
        &format!("\"{BANK_IP}/32\""),
        &format!("max_sessions = {}", SESSIONS * 2),
    );
    let text = common::config_text(&format!("handover-app{i}"), "", &bank)
        .replace("id = \"test-appliance\"", &format!("id = \"app{}\"", i + 1));
    let text = format!(
        "{text}\n[vrrp]\ninterface = \"eth0\"\nvirtual_router_id = 78\nvips = [\"{VIP}/24\"]\n\
         unicast_src_ip = \"{}\"\nunicast_peers = [\"{}\"]\nstate_dir = \"{}\"\n",
        APP_IPS[i],
        APP_IPS[1 - i],
        state_dir.display()
    );
    Arc::new(ApplianceConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// A `Pups` running on its own thread inside an appliance namespace; shut down
/// (and joined) on drop.
struct Appliance {
    stats: Stats,
    link: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Appliance {
    fn start(ns: &Netns, cfg: Arc<ApplianceConfig>) -> Self {
        let ns_path = ns.path();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            setns(File::open(ns_path).unwrap(), CloneFlags::CLONE_NEWNET).expect("setns");
            // Built after setns: its threads, and the nft it runs, are in the namespace.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let pups = Pups::start(cfg).await.expect("pups starts");
                ready_tx.send((pups.stats(), pups.local_link_path().to_owned())).unwrap();
                let _ = stop_rx.await;
                pups.shutdown().await;
            });
        });
        let (stats, link) = ready_rx.recv_timeout(PATIENCE).expect("pups started");
        Self { stats, link, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn send(writer: &Mutex<OwnedWriteHalf>, message: FoMessage) {
    let mut buf = BytesMut::new();
    LinkCodec::default().encode(message, &mut buf).unwrap();
    writer.lock().await.write_all(&buf).await.expect("local link write");
}

/// A test `mups`: echoes each bank request as its response (MTI `xx0x` → `xx1x`),
/// hands `HANDOVER` answers and session events to the test.
struct TestMups {
    data: Arc<Mutex<OwnedWriteHalf>>,
    control: Arc<Mutex<OwnedWriteHalf>>,
    handover_rx: mpsc::UnboundedReceiver<Handover>,
    events_rx: mpsc::UnboundedReceiver<FoMessage>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestMups {
    async fn attach(path: &std::path::Path) -> Self {
        let (data_rd, data_wr) = open(path, LinkChannel::Data).await;
        let (control_rd, control_wr) = open(path, LinkChannel::Control).await;
        let data = Arc::new(Mutex::new(data_wr));
        let control = Arc::new(Mutex::new(control_wr));
        let (handover_tx, handover_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut rd = data_rd;
        let writer = data.clone();
        let data_task = tokio::spawn(async move {
            while let Some(Ok(m)) = rd.next().await {
                match m {
                    FoMessage::Data(d) => {
                        let mut message = d.message.to_vec();
                        message[2] += 1;
                        let reply = Data {
                            bank_id: d.bank_id,
                            session_id: d.session_id,
                            direction: Direction::ToBank,
                            correlation_id: 0,
                            flags: DataFlags::empty(),
                            message: Bytes::from(message),
                        };
                        send(&writer, FoMessage::Data(reply)).await;
                    }
                    FoMessage::Handover(h) => {
                        let _ = handover_tx.send(h);
                    }
                    other => panic!("unexpected on the data channel: {other:?}"),
                }
            }
        });
        let mut rd = control_rd;
        let writer = control.clone();
        let control_task = tokio::spawn(async move {
            while let Some(Ok(m)) = rd.next().await {
                match m {
                    FoMessage::Heartbeat(h) => send(&writer, FoMessage::HeartbeatAck(h.ack())).await,
                    FoMessage::HeartbeatAck(_) => {}
                    other => {
                        let _ = events_tx.send(other);
                    }
                }
            }
        });
        let mut mups = Self { data, control, handover_rx, events_rx, tasks: vec![data_task, control_task] };
        match mups.event().await {
            FoMessage::InventoryEnd(end) => assert_eq!(end.sessions, 0),
            other => panic!("expected an empty inventory, got {other:?}"),
        }
        mups
    }

    async fn event(&mut self) -> FoMessage {
        tokio::time::timeout(PATIENCE, self.events_rx.recv())
            .await
            .expect("a session event in time")
            .expect("control channel open")
    }

    /// Sends a message to a bank session (`DATA` `ToBank`).
    async fn send_to_bank(&self, session_id: u64, message: Vec<u8>) {
        let data = Data {
            bank_id: BANK.into(),
            session_id,
            direction: Direction::ToBank,
            correlation_id: 0,
            flags: DataFlags::empty(),
            message: Bytes::from(message),
        };
        send(&self.data, FoMessage::Data(data)).await;
    }

    /// Sends a `HANDOVER` request on the control channel, as `mups` does.
    async fn request(&self, op: HandoverOp, count: u32, payload: Bytes) {
        let h = Handover { switch_id: 7, op, count, detail: String::new(), payload };
        send(&self.control, FoMessage::Handover(h)).await;
    }

    /// The next `HANDOVER` answer, which must be `op` (a `Failed` fails the test).
    async fn answer(&mut self, op: HandoverOp) -> Handover {
        let h = tokio::time::timeout(PATIENCE, self.handover_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no answer to {op:?} in time"))
            .expect("data channel open");
        assert_eq!(h.switch_id, 7);
        assert_eq!(h.op, op, "answer: {h:?}");
        h
    }

    async fn ask(&mut self, op: HandoverOp, count: u32, expect: HandoverOp) -> Handover {
        self.request(op, count, Bytes::new()).await;
        self.answer(expect).await
    }
}

impl Drop for TestMups {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn open(
    path: &std::path::Path,
    channel: LinkChannel,
) -> (FramedRead<tokio::net::unix::OwnedReadHalf, LinkCodec>, OwnedWriteHalf) {
    let stream = UnixStream::connect(path).await.expect("connect to the local link");
    let (rd, wr) = stream.into_split();
    let wr = Mutex::new(wr);
    let mut rd = FramedRead::new(rd, LinkCodec::default());
    let hello = Hello {
        node_id: "test-mups".into(),
        role: PeerRole::Controller,
        min_version: 1,
        max_version: 1,
        software: "test".into(),
    };
    send(&wr, FoMessage::Hello(hello)).await;
    match rd.next().await {
        Some(Ok(FoMessage::Hello(h))) => assert_eq!(h.role, PeerRole::Edge),
        other => panic!("expected HELLO, got {other:?}"),
    }
    send(&wr, FoMessage::Channel(Channel { channel })).await;
    (rd, wr.into_inner())
}

/// The bank side: sessions sending requests back to back, each waiting for its
/// response.
struct Banks {
    stop: Arc<AtomicBool>,
    /// Requests answered, per session.
    answered: Arc<Vec<AtomicU64>>,
    /// The slowest request since the last reset, microseconds.
    slowest: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<Result<u64, String>>>,
}

/// One request: MTI 0200, then the session index and sequence number.
fn request(session: usize, seq: u64) -> Vec<u8> {
    format!("0200{session:04}{seq:010}").into_bytes()
}

impl Banks {
    /// Connects `n` sessions from the bank namespace (the sockets stay in it).
    async fn start(lab: &Lab, n: usize) -> Self {
        let streams = lab.bank.run(|| {
            (0..n)
                .map(|_| {
                    let s =
                        std::net::TcpStream::connect(SocketAddr::from((VIP, PORT))).expect("bank connects");
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect::<Vec<_>>()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let slowest = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for (i, s) in streams.into_iter().enumerate() {
            let mut s = tokio::net::TcpStream::from_std(s).unwrap();
            let (stop, answered, slowest) = (stop.clone(), answered.clone(), slowest.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut seq = 0u64;
                loop {
                    let last = stop.load(Ordering::SeqCst);
                    // The last request is a marker: a duplicate answer to any
                    // earlier one would arrive before its answer.
                    let req = request(i, if last { u64::MAX / 2 } else { seq });
                    let mut frame = (req.len() as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(&req);
                    let sent = Instant::now();
                    s.write_all(&frame).await.map_err(|e| format!("session {i}: write: {e}"))?;
                    let len = loop {
                        if buf.len() >= 2 {
                            let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                            if buf.len() >= 2 + len {
                                break len;
                            }
                        }
                        match tokio::time::timeout(PATIENCE, s.read_buf(&mut buf)).await {
                            Err(_) => return Err(format!("session {i}: no answer to request {seq}")),
                            Ok(Ok(0)) => return Err(format!("session {i}: EOF after {seq} answers")),
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => return Err(format!("session {i}: read after {seq} answers: {e}")),
                        }
                    };
                    let _ = buf.split_to(2);
                    let got = buf.split_to(len);
                    let mut want = req.clone();
                    want[2] = b'1';
                    if got[..] != want[..] {
                        return Err(format!(
                            "session {i}: expected {:?}, got {:?}",
                            String::from_utf8_lossy(&want),
                            String::from_utf8_lossy(&got)
                        ));
                    }
                    slowest.fetch_max(sent.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if last {
                        return Ok(seq);
                    }
                    seq += 1;
                    answered[i].store(seq, Ordering::SeqCst);
                }
            }));
        }
        Self { stop, answered, slowest, tasks }
    }

    /// Waits until every session has had `more` more requests answered.
    async fn progress(&self, more: u64) {
        let base: Vec<u64> = self.answered.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let deadline = Instant::now() + PATIENCE;
        while self.answered.iter().zip(&base).any(|(a, b)| a.load(Ordering::SeqCst) < b + more) {
            for t in &self.tasks {
                assert!(!t.is_finished(), "a bank session stopped early");
            }
            assert!(Instant::now() < deadline, "the banks did not make progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops and checks every session; returns the requests answered in all.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for t in self.tasks {
            total += t.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
        }
        total
    }
}

fn deltas(lab: &Lab, before: &[HashMap<String, u64>]) {
    for (ns, before) in lab.all().iter().zip(before) {
        let after = ns.counters();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        println!(
            "{}: TcpOutRsts +{}, TcpExtPAWSEstab +{}, TcpEstabResets +{}",
            ns.name,
            delta("TcpOutRsts"),
            delta("TcpExtPAWSEstab"),
            delta("TcpEstabResets")
        );
        assert_eq!(delta("TcpOutRsts"), 0, "{}: no RST sent", ns.name);
        assert_eq!(delta("TcpExtPAWSEstab"), 0, "{}: no PAWS drop", ns.name);
    }
    // A silent close counts as an EstabReset where it happens; the bank's own
    // connections were never reset.
    let bank = lab.bank.counters();
    assert_eq!(bank.get("TcpEstabResets"), before[0].get("TcpEstabResets"), "bank: no reset");
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// One planned switchover from appliance `from` to `to`, driven as `mups` would.
/// `early` is a message the new active's `mups` sends to a session after it is
/// restored but before `Serve` (an FO node's request, routed as soon as the new
/// `mups` took over the node links). Returns the session ids `to` now serves.
async fn switch(
    lab: &Lab,
    mups: &mut [TestMups; 2],
    (from, to): (usize, usize),
    n: usize,
    early: Option<(u64, Vec<u8>)>,
) -> BTreeSet<u64> {
    let started = Instant::now();
    mups[to].ask(HandoverOp::Lock, 0, HandoverOp::Locked).await;
    let q = mups[from].ask(HandoverOp::Quiesce, 0, HandoverOp::Quiesced).await;
    assert_eq!(q.count as usize, n);
    let quiet = Instant::now();

    mups[from].request(HandoverOp::Checkpoint, 0, Bytes::new()).await;
    let mut batches = Vec::new();
    let (checkpointed, in_batches) = loop {
        let h = tokio::time::timeout(PATIENCE, mups[from].handover_rx.recv()).await.unwrap().unwrap();
        match h.op {
            HandoverOp::Snapshots => batches.push(h),
            HandoverOp::Checkpointed => break (h, batches.iter().map(|b| b.count).sum::<u32>()),
            _ => panic!("unexpected answer to Checkpoint: {h:?}"),
        }
    };
    assert_eq!(checkpointed.count as usize, n, "{checkpointed:?}");
    assert_eq!(in_batches, checkpointed.count, "every frozen session is in a batch");
    assert!(checkpointed.detail.is_empty(), "nothing refused: {}", checkpointed.detail);
    let frozen = Instant::now();

    for b in &batches {
        mups[to].request(HandoverOp::Restore, b.count, b.payload.clone()).await;
    }
    let restored = mups[to].ask(HandoverOp::RestoreEnd, in_batches, HandoverOp::Restored).await;
    assert_eq!(restored.count, in_batches, "{restored:?}");
    assert!(restored.detail.is_empty(), "no restore failure: {}", restored.detail);
    let restored_at = Instant::now();

    lab.move_vip(from, to);

    let closed = mups[from].ask(HandoverOp::CloseFrozen, 0, HandoverOp::Closed).await;
    assert_eq!(closed.count, in_batches);
    let mut handed = BTreeSet::new();
    while handed.len() < n {
        match mups[from].event().await {
            FoMessage::SessionDown(d) => {
                assert_eq!(d.reason, SessionDownReason::HandedOver, "{d:?}");
                handed.insert(d.session_id);
            }
            other => panic!("expected SESSION_DOWN(HandedOver), got {other:?}"),
        }
    }
    let closed_at = Instant::now();
    if let Some((session, message)) = early {
        mups[to].send_to_bank(session, message).await;
    }
    let serving = mups[to].ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    let served_at = Instant::now();
    assert_eq!(serving.count, in_batches, "{serving:?}");
    let mut up = BTreeSet::new();
    while up.len() < n {
        match mups[to].event().await {
            FoMessage::SessionUp(u) => {
                assert_eq!(u.bank_id, BANK);
                up.insert(u.session_id);
            }
            other => panic!("expected SESSION_UP, got {other:?}"),
        }
    }
    assert_eq!(up, handed, "the twin serves the sessions under the ids they had");
    println!(
        "switch app{} -> app{}: quiesce {:?}, checkpoint {:?} ({} batch(es), {} bytes), restore {:?}, \
         vip+close {:?}, serve {:?}, total {:?}",
        from + 1,
        to + 1,
        quiet - started,
        frozen - quiet,
        batches.len(),
        batches.iter().map(|b| b.payload.len()).sum::<usize>(),
        restored_at - frozen,
        closed_at - restored_at,
        served_at - closed_at,
        served_at - started,
    );
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_move_to_the_twin_and_back_without_a_bank_noticing() {
    init_logs();
    let lab = Lab::new();
    let state = tempfile::tempdir().unwrap();
    let apps = [
        Appliance::start(&lab.apps[0], config(0, state.path())),
        Appliance::start(&lab.apps[1], config(1, state.path())),
    ];
    let mut mups = [TestMups::attach(&apps[0].link).await, TestMups::attach(&apps[1].link).await];
    // Both started locked; the first serves.
    let serving = mups[0].ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    assert_eq!(serving.count, 0);
    mups[1].ask(HandoverOp::Lock, 0, HandoverOp::Locked).await;

    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();
    let banks = Banks::start(&lab, SESSIONS).await;
    // One more session, idle but for a request whose frame is split across the
    // first switch: its first bytes are read by the first appliance (a partial
    // frame in the snapshot) or wait in its kernel queue; either way they must
    // reach mups once, whole.
    let mut half = lab.bank.run(|| std::net::TcpStream::connect(SocketAddr::from((VIP, PORT))).unwrap());
    half.set_read_timeout(Some(PATIENCE)).unwrap();
    let split = request(9999, 1);
    let mut split_frame = (split.len() as u16).to_be_bytes().to_vec();
    split_frame.extend_from_slice(&split);
    std::io::Write::write_all(&mut half, &split_frame[..7]).unwrap();
    let n = SESSIONS + 1;
    let mut ids = BTreeSet::new();
    let half_addr = half.local_addr().unwrap().to_string();
    let mut half_id = None;
    for _ in 0..n {
        match mups[0].event().await {
            FoMessage::SessionUp(u) => {
                if u.peer == half_addr {
                    half_id = Some(u.session_id);
                }
                ids.insert(u.session_id)
            }
            other => panic!("expected SESSION_UP, got {other:?}"),
        };
    }
    let half_id = half_id.expect("the idle session came up");
    banks.progress(20).await;
    println!("before any switch: slowest request {} µs", banks.slowest.swap(0, Ordering::SeqCst));
    let half_answer = |half: &mut std::net::TcpStream, req: &[u8]| {
        let mut got = vec![0; 2 + req.len()];
        std::io::Read::read_exact(half, &mut got).expect("the split request is answered");
        let mut want = req.to_vec();
        want[2] = b'1';
        assert_eq!(got[2..], want[..], "the split request is answered, once");
    };

    // An FO node's request for the idle session, routed by the new active's mups
    // before its pups serves the restored sessions: it must reach the bank once.
    let early = b"0800FO-ORIGINATED".to_vec();
    for (round, (from, to)) in [(0, 1), (1, 0), (0, 1)].into_iter().enumerate() {
        let before_serve = (round == 1).then(|| (half_id, early.clone()));
        let moved = switch(&lab, &mut mups, (from, to), n, before_serve).await;
        assert_eq!(moved, ids, "round {round}: the same sessions, the same ids");
        if round == 0 {
            std::io::Write::write_all(&mut half, &split_frame[7..]).unwrap();
            half_answer(&mut half, &split);
        }
        if round == 1 {
            let mut got = vec![0; 2 + early.len()];
            std::io::Read::read_exact(&mut half, &mut got).expect("the early message reaches the bank");
            assert_eq!(got[..2], (early.len() as u16).to_be_bytes(), "framed for the bank");
            assert_eq!(got[2..], early[..], "the message sent before Serve, once");
        }
        banks.progress(20).await;
        println!(
            "round {round}: app{} -> app{}: bank-visible pause (slowest request) {} µs",
            from + 1,
            to + 1,
            banks.slowest.swap(0, Ordering::SeqCst)
        );
    }

    // The idle session, moved twice more, still works.
    let last = request(9999, 2);
    let mut frame = (last.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&last);
    std::io::Write::write_all(&mut half, &frame).unwrap();
    half_answer(&mut half, &last);

    deltas(&lab, &before);
    let total = banks.finish().await;
    println!("{total} requests answered, each once, in order, on {SESSIONS} sessions");
    for (i, app) in apps.iter().enumerate() {
        let s = &app.stats;
        println!(
            "app{}: handed over {}, adopted {}, refused {}, restore failures {}, frozen now {}, \
             restored pending {}",
            i + 1,
            s.handed_over(),
            s.adopted(),
            s.handover_refused(),
            s.restore_failures(),
            s.handover_frozen(),
            s.handover_restored()
        );
        assert_eq!(s.handover_refused(), 0);
        assert_eq!(s.restore_failures(), 0);
        assert_eq!(s.handover_frozen(), 0);
        assert_eq!(s.sessions_closed(BANK, SessionDownReason::PeerReset), 0);
        assert_eq!(s.sessions_closed(BANK, SessionDownReason::IoError), 0);
    }
    // app1 handed over twice and adopted once; app2 the other way round.
    let n = n as u64;
    assert_eq!((apps[0].stats.handed_over(), apps[0].stats.adopted()), (2 * n, n));
    assert_eq!((apps[1].stats.handed_over(), apps[1].stats.adopted()), (n, 2 * n));
    assert!(apps[1].stats.render().contains("pups_handover_op_duration_seconds_bucket"));
    drop(mups);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_switchover_thaws_the_sessions_in_place() {
    init_logs();
    let lab = Lab::new();
    let state = tempfile::tempdir().unwrap();
    let app = Appliance::start(&lab.apps[0], config(0, state.path()));
    let mut mups = TestMups::attach(&app.link).await;
    mups.ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    // On the data channel too; answers always come on the data channel.
    let thaw = Handover {
        switch_id: 9,
        op: HandoverOp::Thaw,
        count: 0,
        detail: String::new(),
        payload: Bytes::new(),
    };
    send(&mups.data, FoMessage::Handover(thaw)).await;
    let h = tokio::time::timeout(PATIENCE, mups.handover_rx.recv()).await.unwrap().unwrap();
    assert_eq!((h.switch_id, h.op, h.count), (9, HandoverOp::Thawed, 0));

    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();
    let banks = Banks::start(&lab, SESSIONS).await;
    for _ in 0..SESSIONS {
        assert!(matches!(mups.event().await, FoMessage::SessionUp(_)));
    }
    banks.progress(20).await;
    banks.slowest.store(0, Ordering::SeqCst);

    for round in 0..2 {
        mups.ask(HandoverOp::Quiesce, 0, HandoverOp::Quiesced).await;
        mups.request(HandoverOp::Checkpoint, 0, Bytes::new()).await;
        let mut snapshots = 0;
        let checkpointed = loop {
            let h = tokio::time::timeout(PATIENCE, mups.handover_rx.recv()).await.unwrap().unwrap();
            match h.op {
                HandoverOp::Snapshots => snapshots += h.count,
                HandoverOp::Checkpointed => break h,
                _ => panic!("unexpected answer to Checkpoint: {h:?}"),
            }
        };
        assert_eq!((checkpointed.count, snapshots), (SESSIONS as u32, SESSIONS as u32), "{checkpointed:?}");
        assert_eq!(app.stats.handover_frozen(), SESSIONS as i64);
        // Ops that do not fit the state are refused, and change nothing.
        let refused = mups.ask(HandoverOp::Checkpoint, 0, HandoverOp::Failed).await;
        assert!(refused.detail.contains("frozen already"), "{refused:?}");
        let refused = mups.ask(HandoverOp::Serve, 0, HandoverOp::Failed).await;
        assert!(refused.detail.contains("frozen here"), "{refused:?}");
        let thawed = mups.ask(HandoverOp::Thaw, 0, HandoverOp::Thawed).await;
        assert_eq!(thawed.count, SESSIONS as u32, "{thawed:?}");
        banks.progress(20).await;
        println!("abort round {round}: bank-visible pause {} µs", banks.slowest.swap(0, Ordering::SeqCst));
    }

    // mups fences a demoted active with Lock: the sessions stay, unreachable,
    // and go on at Serve.
    mups.ask(HandoverOp::Lock, 0, HandoverOp::Locked).await;
    mups.ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    banks.progress(5).await;

    deltas(&lab, &before);
    // mups still knows every session: nothing went down or came up again (checked
    // before the banks hang up, which does end their sessions).
    if let Ok(event) = mups.events_rx.try_recv() {
        panic!("no SESSION_DOWN/SESSION_UP churn, got {event:?}");
    }
    banks.finish().await;
    assert_eq!(app.stats.sessions_opened(BANK), SESSIONS as u64);
    assert_eq!(app.stats.handed_over(), 0);
}

#[test]
fn tools_are_installed() {
    for tool in ["ip", "nft", "nstat"] {
        let ok = Command::new("sh").args(["-c", &format!("command -v {tool}")]).status().unwrap().success();
        assert!(ok, "{tool} is needed by these tests (scripts/test installs it)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_pups_with_frozen_sessions_sends_the_banks_nothing() {
    init_logs();
    let lab = Lab::new();
    let state = tempfile::tempdir().unwrap();
    let app = Appliance::start(&lab.apps[0], config(0, state.path()));
    let mut mups = TestMups::attach(&app.link).await;
    mups.ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();
    let banks: Vec<std::net::TcpStream> = lab.bank.run(|| {
        (0..5).map(|_| std::net::TcpStream::connect(SocketAddr::from((VIP, PORT))).unwrap()).collect()
    });
    for _ in 0..banks.len() {
        assert!(matches!(mups.event().await, FoMessage::SessionUp(_)));
    }
    mups.ask(HandoverOp::Quiesce, 0, HandoverOp::Quiesced).await;
    mups.request(HandoverOp::Checkpoint, 0, Bytes::new()).await;
    loop {
        let h = tokio::time::timeout(PATIENCE, mups.handover_rx.recv()).await.unwrap().unwrap();
        if h.op == HandoverOp::Checkpointed {
            assert_eq!(h.count, 5, "{h:?}");
            break;
        }
    }
    // The switchover never finishes: pups stops with the sessions frozen.
    drop(mups);
    drop(app);
    for (i, bank) in banks.iter().enumerate() {
        bank.set_nonblocking(true).unwrap();
        match std::io::Read::read(&mut &*bank, &mut [0; 16]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("bank session {i}: expected nothing at all, got {other:?}"),
        }
    }
    deltas(&lab, &before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_bank_has_not_read_follows_it_to_the_twin() {
    not_reading(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_bank_has_not_read_is_written_after_a_thaw() {
    not_reading(false).await;
}

/// A bank that does not read while `mups` sends it more than the kernel takes:
/// part of it is still with the session's writer at the checkpoint. It moves with
/// the snapshot (`twin`) or is written after the thaw.
async fn not_reading(twin: bool) {
    init_logs();
    let lab = Lab::new();
    let state = tempfile::tempdir().unwrap();
    let apps = [
        Appliance::start(&lab.apps[0], config(0, state.path())),
        Appliance::start(&lab.apps[1], config(1, state.path())),
    ];
    let mut mups = [TestMups::attach(&apps[0].link).await, TestMups::attach(&apps[1].link).await];
    mups[0].ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();
    // Two banks with a small receive window that do not read for now.
    let banks: Vec<std::net::TcpStream> = lab.bank.run(|| {
        (0..2)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                s.set_recv_buffer_size(4096).unwrap();
                s.connect(&SocketAddr::from((VIP, PORT)).into()).unwrap();
                std::net::TcpStream::from(s)
            })
            .collect()
    });
    let mut ids = HashMap::new();
    for _ in 0..banks.len() {
        match mups[0].event().await {
            FoMessage::SessionUp(u) => ids.insert(u.peer.parse::<SocketAddr>().unwrap(), u.session_id),
            other => panic!("expected SESSION_UP, got {other:?}"),
        };
    }
    // More than the kernel takes while a bank does not read: part of it is still
    // with the session's writer when the checkpoint comes. Two such sessions do
    // not fit one local link frame: the snapshots come in several batches.
    let messages: Vec<Vec<u8>> = (0..200u8)
        .map(|i| {
            let mut m = format!("0210{i:04}").into_bytes();
            m.extend((0..3_000u32).map(|k| (k.wrapping_mul(31) as u8) ^ i));
            m
        })
        .collect();
    for bank in &banks {
        let id = ids[&bank.local_addr().unwrap()];
        for m in &messages {
            mups[0].send_to_bank(id, m.clone()).await;
        }
    }
    let n = banks.len() as u32;
    mups[1].ask(HandoverOp::Lock, 0, HandoverOp::Locked).await;
    mups[0].ask(HandoverOp::Quiesce, 0, HandoverOp::Quiesced).await;
    mups[0].request(HandoverOp::Checkpoint, 0, Bytes::new()).await;
    let mut batches = Vec::new();
    let checkpointed = loop {
        let h = tokio::time::timeout(PATIENCE, mups[0].handover_rx.recv()).await.unwrap().unwrap();
        match h.op {
            HandoverOp::Snapshots => batches.push(h),
            HandoverOp::Checkpointed => break h,
            _ => panic!("unexpected answer to Checkpoint: {h:?}"),
        }
    };
    assert_eq!(checkpointed.count, n, "{checkpointed:?}");
    let sizes: Vec<usize> = batches.iter().map(|b| b.payload.len()).collect();
    println!("non-reading banks: snapshot batches of {sizes:?} bytes");
    assert!(sizes.len() >= 2 && sizes.iter().all(|&s| s < proto::fo_link::DEFAULT_MAX_FRAME));
    if twin {
        for b in &batches {
            mups[1].request(HandoverOp::Restore, b.count, b.payload.clone()).await;
        }
        let restored = mups[1].ask(HandoverOp::RestoreEnd, n, HandoverOp::Restored).await;
        assert_eq!((restored.count, restored.detail.as_str()), (n, ""));
        lab.move_vip(0, 1);
        mups[0].ask(HandoverOp::CloseFrozen, 0, HandoverOp::Closed).await;
        let serving = mups[1].ask(HandoverOp::Serve, 0, HandoverOp::Serving).await;
        assert_eq!((serving.count, serving.detail.as_str()), (n, ""));
    } else {
        let thawed = mups[0].ask(HandoverOp::Thaw, 0, HandoverOp::Thawed).await;
        assert_eq!((thawed.count, thawed.detail.as_str()), (n, ""));
    }

    // Now the banks read: every message once, in order, then talk on.
    for (b, bank) in banks.iter().enumerate() {
        bank.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut reader = bank;
        for (i, m) in messages.iter().enumerate() {
            let mut len = [0; 2];
            let mut got = Vec::new();
            let read = std::io::Read::read_exact(&mut reader, &mut len).and_then(|()| {
                got = vec![0; u16::from_be_bytes(len) as usize];
                std::io::Read::read_exact(&mut reader, &mut got)
            });
            if let Err(e) = read {
                // What TCP thinks, for whoever has to find out why.
                for ns in lab.all() {
                    println!("{}:\n{}", ns.name, sh(&["ip", "netns", "exec", &ns.name, "ss", "-tinoe"]));
                }
                panic!("bank {b}, message {i}: {e}");
            }
            assert!(got == *m, "bank {b}: message {i} arrives whole and in order");
        }
        let req = request(b, 1);
        let mut frame = (req.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&req);
        std::io::Write::write_all(&mut reader, &frame).unwrap();
        let mut got = vec![0; frame.len()];
        std::io::Read::read_exact(&mut reader, &mut got).unwrap();
        assert_eq!(&got[6..], &req[4..], "mups answers");
    }
    deltas(&lab, &before);
}
