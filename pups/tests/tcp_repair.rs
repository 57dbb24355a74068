//! `pups::sys` against the real kernel, in network namespaces (the tests run as
//! root): a bank namespace holding a bridge, and two appliance namespaces
//! plugged into it, the first holding the VIP. A bank client talks to a server
//! socket on the VIP; bytes are left in flight both ways (the bank's ACKs held
//! back by an nft rule, bank bytes left unread), the server socket is
//! checkpointed under a network lock, closed silently and restored — in the same
//! namespace, or in the second appliance, which then takes the VIP — and the
//! stream goes on. Checked: every byte arrives exactly once and in order both
//! ways, the bank never sees an error or EOF, and no RST or PAWS drop is counted
//! in any namespace. The pause after the restore is printed, not asserted.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use proto::snapshot::{SessionSnapshot, SessionState, SignOnState, SnapshotBatch};
use pups::sys::{self, Buffers, CheckpointError};
use socket2::{SockRef, TcpKeepalive};

const BANK_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const APP1_IP: &str = "10.77.0.2/24";
const APP2_IP: &str = "10.77.0.3/24";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
const PORT: u16 = 8583;
const APP2_MAC: &str = "02:77:00:00:00:03";

/// Bound on any wait; reaching it fails the test (it guards against hangs, it
/// measures nothing).
const PATIENCE: Duration = Duration::from_secs(30);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh_stdin(args: &[&str], input: &str) {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}\n{input}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace, deleted on drop (with its links and nft tables).
struct Netns {
    name: String,
}

impl Netns {
    fn new(role: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pupsrep-{}-{}-{role}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
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

    /// Runs `f` on a thread inside the namespace: sockets it creates belong to it.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(format!("/run/netns/{}", self.name)).unwrap();
                setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn nft(&self, table: &str, body: &str) -> NftTable<'_> {
        sh_stdin(
            &["ip", "netns", "exec", &self.name, "nft", "-f", "-"],
            &format!("table inet {table} {{\n{body}\n}}"),
        );
        NftTable { ns: self, table: table.to_owned() }
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

/// An nft table, deleted on drop.
struct NftTable<'a> {
    ns: &'a Netns,
    table: String,
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "nft", "delete", "table", "inet", &self.table])
            .status();
    }
}

/// The bank on a bridge; two appliances on it; the VIP on the first.
struct Lab {
    bank: Netns,
    app1: Netns,
    app2: Netns,
}

impl Lab {
    fn new() -> Self {
        let lab = Self { bank: Netns::new("bank"), app1: Netns::new("app1"), app2: Netns::new("app2") };
        let b = &lab.bank;
        b.ip(&["link", "add", "br0", "type", "bridge"]);
        for (port, app) in [("v1", &lab.app1), ("v2", &lab.app2)] {
            b.ip(&["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &app.name]);
            b.ip(&["link", "set", port, "master", "br0", "up"]);
        }
        b.ip(&["addr", "add", &format!("{BANK_IP}/24"), "dev", "br0"]);
        b.ip(&["link", "set", "br0", "up"]);
        lab.app2.ip(&["link", "set", "eth0", "address", APP2_MAC]);
        for (app, addr) in [(&lab.app1, APP1_IP), (&lab.app2, APP2_IP)] {
            app.ip(&["addr", "add", addr, "dev", "eth0"]);
            app.ip(&["link", "set", "eth0", "up"]);
        }
        lab.app1.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
        lab
    }

    fn all(&self) -> [&Netns; 3] {
        [&self.bank, &self.app1, &self.app2]
    }
}

/// The network lock on an appliance: the session's 4-tuple dropped both ways.
fn lock<'a>(ns: &'a Netns, bank_port: u16) -> NftTable<'a> {
    ns.nft(
        "pups_lock",
        &format!(
            "chain input {{ type filter hook input priority 0; \
               ip saddr {BANK_IP} ip daddr {VIP} tcp sport {bank_port} tcp dport {PORT} drop; }}\n\
             chain output {{ type filter hook output priority 0; \
               ip saddr {VIP} ip daddr {BANK_IP} tcp sport {PORT} tcp dport {bank_port} drop; }}"
        ),
    )
}

/// Distinct, non-repeating-looking bytes, so a lost, doubled or reordered
/// stretch shows as a mismatch.
fn pattern(stream: u32, range: std::ops::Range<usize>) -> Vec<u8> {
    range.map(|i| ((i as u32).wrapping_mul(2_654_435_761).rotate_left(stream * 5) >> 13) as u8).collect()
}

/// Writes as much of `data` as the socket takes without blocking.
fn write_nonblocking(s: &TcpStream, data: &[u8]) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut n = 0;
    while n < data.len() {
        match (&*s).write(&data[n..]) {
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    n
}

/// Waits until `s` has exactly `n` unread bytes.
fn wait_unread(s: &TcpStream, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = vec![0; n + 1];
    s.set_nonblocking(true).unwrap();
    loop {
        match s.peek(&mut buf) {
            Ok(k) if k == n => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("peek: {e}"),
        }
        assert!(Instant::now() < deadline, "{n} bytes never arrived");
        thread::sleep(Duration::from_millis(5));
    }
    s.set_nonblocking(false).unwrap();
}

/// What the bank's reader saw.
struct BankRead {
    bytes: Vec<u8>,
    first_byte_at: Option<Instant>,
}

/// Reads `total` bytes on the bank side, failing on any error or EOF.
fn bank_reader(mut s: TcpStream, total: usize) -> thread::JoinHandle<BankRead> {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    thread::spawn(move || {
        let mut bytes = Vec::with_capacity(total);
        let mut first_byte_at = None;
        let mut buf = vec![0; 64 * 1024];
        while bytes.len() < total {
            match s.read(&mut buf) {
                Ok(0) => panic!("bank saw EOF after {} of {total} bytes", bytes.len()),
                Ok(n) => {
                    first_byte_at.get_or_insert_with(Instant::now);
                    bytes.extend_from_slice(&buf[..n]);
                }
                Err(e) => panic!("bank read failed after {} of {total} bytes: {e}", bytes.len()),
            }
        }
        BankRead { bytes, first_byte_at }
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// Restore in the namespace the socket came from.
    SameAppliance,
    /// Restore in the twin, before the VIP moves there.
    Twin,
}

fn move_session(target: Target) {
    let lab = Lab::new();
    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();

    let listener = lab.app1.run(|| TcpListener::bind((VIP, PORT)).unwrap());
    let bank = lab.bank.run(|| TcpStream::connect((VIP, PORT)).unwrap());
    let (server, _) = listener.accept().unwrap();
    let bank_port = bank.local_addr().unwrap().port();
    // Options pups would set, to see them come back.
    server.set_nodelay(true).unwrap();
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(5))
        .with_retries(4);
    SockRef::from(&server).set_tcp_keepalive(&keepalive).unwrap();
    // A fixed send buffer big enough that part of what is written is never sent.
    SockRef::from(&server).set_send_buffer_size(256 * 1024).unwrap();
    let mss_before = SockRef::from(&server).tcp_mss().unwrap();

    // Plain traffic first.
    let up1 = pattern(1, 0..1000);
    (&bank).write_all(&up1).unwrap();
    let mut got = vec![0; up1.len()];
    (&server).read_exact(&mut got).unwrap();
    assert_eq!(got, up1);

    // Bytes the server has received and not read.
    let up_all = pattern(3, 0..1 << 20);
    let up2_len = write_nonblocking(&bank, &up_all[..20_000]);
    wait_unread(&server, up2_len);
    // Bytes in flight: everything from the VIP is dropped at the bank, so what
    // the server writes now stays unacknowledged.
    let hold = lab.bank.nft(
        "hold",
        &format!(
            "chain input {{ type filter hook input priority 0; ip saddr {VIP} tcp sport {PORT} drop; }}"
        ),
    );
    let down_all = pattern(2, 0..4 << 20);
    let down2_len = write_nonblocking(&server, &down_all);

    let app2_lock = (target == Target::Twin).then(|| lock(&lab.app2, bank_port));
    let app1_lock = lock(&lab.app1, bank_port);
    drop(hold);

    let taken = Instant::now();
    let tcp = sys::checkpoint(&server, Buffers::Fixed).expect("checkpoint");
    let checkpoint_took = taken.elapsed();
    println!(
        "{target:?}: checkpoint in {checkpoint_took:?}: send queue {} bytes ({} in flight, {} unsent), \
         receive queue {} bytes, mss {}, wscale {:?}, sack {}, timestamps {} (tsval {}), window {:?}",
        tcp.send_queue.len(),
        tcp.send_unacked(),
        tcp.send_unsent,
        tcp.recv_queue.len(),
        tcp.mss,
        tcp.window_scale,
        tcp.sack_ok,
        tcp.timestamps_ok,
        tcp.timestamp,
        tcp.window,
    );
    assert_eq!(tcp.recv_queue, up_all[..up2_len], "receive queue = the bank's unread bytes");
    assert_eq!(tcp.send_queue, down_all[..down2_len], "send queue = every byte the bank did not ack");
    assert!(tcp.send_unacked() > 0 && tcp.send_unsent > 0, "both parts of the send queue are exercised");
    assert_eq!((tcp.local, tcp.remote), (SocketAddr::from((VIP, PORT)), bank.local_addr().unwrap()));
    assert!(tcp.options.nodelay);
    assert!(tcp.options.send_buffer.is_some());

    // Ship it the way the twin would get it.
    let batch = SnapshotBatch {
        appliance_id: "app1".into(),
        taken_at_micros: 1,
        sessions: vec![SessionSnapshot {
            tcp,
            app: SessionState {
                bank_id: "bank-a".into(),
                session_id: 1,
                sign_on: SignOnState::SignedOn,
                ..SessionState::default()
            },
        }],
    };
    let wire = batch.encode().unwrap();
    sys::close_silently(server).expect("silent close");
    drop(listener);
    let batch = SnapshotBatch::decode(&wire).unwrap();
    let snap = &batch.sessions[0].tcp;

    let restored = match target {
        Target::SameAppliance => lab.app1.run(|| sys::restore(snap)).expect("restore"),
        Target::Twin => {
            // The VIP leaves the old appliance; the twin restores before it has
            // the VIP (IP_TRANSPARENT), then takes it. The neighbour entry stands
            // in for keepalived's gratuitous ARP.
            lab.app1.ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
            let r = lab.app2.run(|| sys::restore(snap)).expect("restore before the VIP is local");
            lab.app2.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
            lab.bank.ip(&["neigh", "replace", &VIP.to_string(), "lladdr", APP2_MAC, "dev", "br0"]);
            r
        }
    };
    assert_eq!(restored.pending(), down2_len);

    // The bank reads everything from here on: the held bytes, then new ones.
    let down3 = pattern(4, 0..5000);
    let reader = bank_reader(bank.try_clone().unwrap(), down2_len + down3.len());
    drop(app1_lock);
    drop(app2_lock);
    let resumed = Instant::now();
    let server = restored.resume().expect("resume");

    assert_eq!(SockRef::from(&server).tcp_mss().unwrap(), mss_before, "MSS survives the restore");
    assert!(server.nodelay().unwrap());
    let sref = SockRef::from(&server);
    assert!(sref.keepalive().unwrap());
    assert_eq!(sref.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
    assert_eq!(sref.tcp_keepalive_interval().unwrap(), Duration::from_secs(5));
    assert_eq!(sref.tcp_keepalive_retries().unwrap(), 4);
    assert_eq!(sref.send_buffer_size().unwrap() as u32, snap.options.send_buffer.unwrap());

    (&server).write_all(&down3).unwrap();
    let up3 = pattern(5, 0..5000);
    (&bank).write_all(&up3).unwrap();
    let mut up_seen = vec![0; up2_len + up3.len()];
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    (&server).read_exact(&mut up_seen).unwrap();
    assert_eq!(up_seen[..up2_len], up_all[..up2_len], "the restored receive queue comes first, once");
    assert_eq!(up_seen[up2_len..], up3[..], "then what the bank sent after the restore");

    let read = reader.join().expect("the bank never saw an error or EOF");
    assert_eq!(read.bytes.len(), down2_len + down3.len());
    assert!(read.bytes[..down2_len] == down_all[..down2_len], "held bytes arrive once, in order");
    assert!(read.bytes[down2_len..] == down3[..], "then the new bytes");
    let pause = read.first_byte_at.unwrap().saturating_duration_since(resumed);
    println!(
        "{target:?}: {down2_len} held bytes re-sent; first byte at the bank {pause:?} after resume; \
         {} bytes bank->appliance restored unread",
        up2_len
    );

    // Both ends still talk after all that.
    (&bank).write_all(b"ping").unwrap();
    let mut four = [0; 4];
    (&server).read_exact(&mut four).unwrap();
    assert_eq!(&four, b"ping");

    for (ns, before) in lab.all().iter().zip(&before) {
        let after = ns.counters();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        println!(
            "{target:?}: {}: TcpOutRsts +{}, TcpExtPAWSEstab +{}, TcpEstabResets +{}",
            ns.name,
            delta("TcpOutRsts"),
            delta("TcpExtPAWSEstab"),
            delta("TcpEstabResets")
        );
        assert_eq!(delta("TcpOutRsts"), 0, "{}: no RST sent", ns.name);
        assert_eq!(delta("TcpExtPAWSEstab"), 0, "{}: no PAWS drop", ns.name);
    }
    // The silent close counts as an EstabReset on the old appliance only; the
    // bank's connection was never reset.
    let bank_after = lab.bank.counters();
    assert_eq!(bank_after.get("TcpEstabResets"), before[0].get("TcpEstabResets"));
}

#[test]
fn restore_in_the_same_namespace_keeps_the_stream() {
    move_session(Target::SameAppliance);
}

#[test]
fn restore_in_the_twin_before_the_vip_moves_keeps_the_stream() {
    move_session(Target::Twin);
}

#[test]
fn checkpoint_refuses_a_socket_in_close_wait() {
    let ns = Netns::new("cw");
    let (listener, client) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l, c)
    });
    let (server, _) = listener.accept().unwrap();
    drop(client);
    // EOF seen: the peer's FIN is in, the server is in CLOSE_WAIT.
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!((&server).read(&mut [0; 1]).unwrap(), 0);
    let err = sys::checkpoint(&server, Buffers::Autotuned).unwrap_err();
    assert!(matches!(err, CheckpointError::NotEstablished { state: "CLOSE_WAIT" }), "{err:?}");
    assert!(err.to_string().contains("CLOSE_WAIT"), "{err}");

    let err = sys::checkpoint(&listener, Buffers::Autotuned).unwrap_err();
    assert!(matches!(err, CheckpointError::NotEstablished { state: "LISTEN" }), "{err:?}");
}

#[test]
fn checkpoint_then_leave_repair_keeps_serving_here() {
    let ns = Netns::new("abort");
    let (listener, client) = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l, c)
    });
    let (server, _) = listener.accept().unwrap();
    (&client).write_all(b"abc").unwrap();
    wait_unread(&server, 3);
    let snap = sys::checkpoint(&server, Buffers::Autotuned).unwrap();
    assert_eq!(snap.recv_queue, b"abc");
    assert!(snap.send_queue.is_empty());
    sys::leave_repair(&server).unwrap();
    let mut buf = [0; 3];
    (&server).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"abc");
    (&server).write_all(b"xyz").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    (&client).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"xyz");
}

/// IPv6, on loopback in one namespace: nothing is in flight (loopback acks at
/// once) and the bank side stays quiet between checkpoint and restore, so no
/// lock is needed.
#[test]
fn restore_ipv6_keeps_the_stream() {
    let ns = Netns::new("v6");
    let before = ns.counters();
    let (listener, bank) = ns.run(|| {
        let l = TcpListener::bind("[::1]:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (l, c)
    });
    let (server, _) = listener.accept().unwrap();
    server.set_nodelay(true).unwrap();
    let up = pattern(6, 0..300_000);
    (&bank).write_all(&up[..1000]).unwrap();
    wait_unread(&server, 1000);
    let tcp = sys::checkpoint(&server, Buffers::Autotuned).expect("checkpoint");
    assert!(tcp.local.is_ipv6());
    assert_eq!(tcp.recv_queue, up[..1000]);
    sys::close_silently(server).unwrap();
    let server = ns.run(|| sys::restore(&tcp)).expect("restore").resume().expect("resume");
    // Loopback's clamp (65476 on IPv6) is over what TCP_MAXSEG accepts; the
    // restore caps it at 32767 rather than fall back to 536.
    let mss = SockRef::from(&server).tcp_mss().unwrap();
    println!("IPv6 loopback: MSS clamp {}, restored MSS {mss}", tcp.mss);
    assert_eq!(mss, u32::from(tcp.mss.min(32767)) - 12 * u32::from(tcp.timestamps_ok));

    let down = pattern(7, 0..300_000);
    let reader = bank_reader(bank.try_clone().unwrap(), down.len());
    let writer = {
        let server = server.try_clone().unwrap();
        let down = down.clone();
        thread::spawn(move || (&server).write_all(&down).unwrap())
    };
    (&bank).write_all(&up[1000..]).unwrap();
    let mut seen = vec![0; up.len()];
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    (&server).read_exact(&mut seen).unwrap();
    assert!(seen == up, "bank -> appliance: every byte once, in order");
    writer.join().unwrap();
    assert!(reader.join().unwrap().bytes == down, "appliance -> bank: every byte once, in order");
    let after = ns.counters();
    assert_eq!(after.get("TcpOutRsts"), before.get("TcpOutRsts"));
    assert_eq!(after.get("TcpExtPAWSEstab"), before.get("TcpExtPAWSEstab"));
}

#[test]
fn self_check_passes_as_root() {
    sys::self_check().expect("root with CAP_NET_ADMIN on a kernel with TCP_REPAIR");
}

#[test]
fn check_repair_command_reports_a_missing_capability() {
    let pups = env!("CARGO_BIN_EXE_pups");
    let ok = Command::new(pups).arg("check-repair").output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("TCP_REPAIR: ok"));
    // Root without CAP_NET_ADMIN/CAP_NET_RAW in its bounding set, as a daemon
    // started with dropped privileges would be.
    let out = Command::new("setpriv")
        .args(["--bounding-set=-net_admin,-net_raw", "--inh-caps=-all", pups, "check-repair"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TCP_REPAIR needs CAP_NET_ADMIN"), "{stderr}");
}

#[test]
fn tools_are_installed() {
    for tool in ["ip", "nft", "nstat", "setpriv"] {
        let ok = Command::new("sh").args(["-c", &format!("command -v {tool}")]).status().unwrap().success();
        assert!(ok, "{tool} is needed by these tests (scripts/test installs it)");
    }
}

/// Bytes that reached the bank while its ACKs were being dropped (a lock that
/// went in with data in flight) still count as unacknowledged at the
/// checkpoint, far beyond a restored socket's first flight. Restored as already
/// sent (`InFlight::AsSent`), the bank's next ACK is accepted and the stream goes
/// on; sent again as new data (`InFlight::Resend`) the new socket would ignore
/// every ACK of the bank, acknowledging data it has not sent yet.
#[test]
fn bytes_the_bank_got_while_its_acks_were_dropped_do_not_wedge_the_twin() {
    let lab = Lab::new();
    let before: Vec<_> = lab.all().iter().map(|ns| ns.counters()).collect();
    let listener = lab.app1.run(|| TcpListener::bind((VIP, PORT)).unwrap());
    let bank = lab.bank.run(|| TcpStream::connect((VIP, PORT)).unwrap());
    let (server, _) = listener.accept().unwrap();
    let bank_port = bank.local_addr().unwrap().port();
    let mss = SockRef::from(&server).tcp_mss().unwrap() as usize;

    // Warm-up: the congestion window grows well past ten segments.
    let warm = pattern(9, 0..4 << 20);
    let burst = pattern(10, 0..2 << 20);
    let tail = pattern(11, 0..5000);
    // The bank reads whatever comes, until `expect` bytes are in.
    let expect = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let (mut s, expect, received) = (bank.try_clone().unwrap(), expect.clone(), received.clone());
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut buf = vec![0; 64 * 1024];
            while bytes.len() < expect.load(Ordering::SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => panic!("bank saw EOF after {} bytes", bytes.len()),
                    Ok(n) => bytes.extend_from_slice(&buf[..n]),
                    Err(e) => panic!("bank read failed after {} bytes: {e}", bytes.len()),
                }
                received.store(bytes.len(), Ordering::SeqCst);
            }
            bytes
        })
    };
    (&server).write_all(&warm).unwrap();
    // The warm-up must be read and acknowledged before the ACKs are cut: on a
    // loaded machine the reader can lag, and a bank with a full receive window
    // would leave nothing in flight (its window updates are dropped too).
    let settled = Instant::now();
    while received.load(Ordering::SeqCst) < warm.len() || sys::unacked(&server).unwrap() > 0 {
        assert!(settled.elapsed() < PATIENCE, "the bank never read the warm-up");
        thread::sleep(Duration::from_millis(5));
    }
    // From now on the bank's ACKs are lost on the way to the appliance.
    let deaf = lab.app1.nft(
        "deaf",
        &format!(
            "chain input {{ type filter hook input priority 0; \
               ip saddr {BANK_IP} tcp sport {bank_port} tcp dport {PORT} drop; }}"
        ),
    );
    let burst_len = write_nonblocking(&server, &burst);
    // Let the burst reach the bank (the bank reads and acks; nothing comes back).
    thread::sleep(Duration::from_millis(300));
    let in_flight = sys::unacked(&server).unwrap();
    assert!(in_flight > 10 * mss, "the gap ({in_flight} bytes) exceeds a first flight of 10 segments");

    let app1_lock = lock(&lab.app1, bank_port);
    let app2_lock = lock(&lab.app2, bank_port);
    drop(deaf);
    let tcp = sys::checkpoint(&server, Buffers::Autotuned).expect("checkpoint");
    assert_eq!(tcp.send_unacked(), in_flight);
    sys::close_silently(server).unwrap();
    drop(listener);
    lab.app1.ip(&["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
    let restored = lab.app2.run(|| sys::restore_with(&tcp, sys::InFlight::AsSent)).expect("restore");
    assert_eq!(restored.pending(), tcp.send_queue.len() - in_flight, "only the unsent part is pending");
    lab.app2.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    lab.bank.ip(&["neigh", "replace", &VIP.to_string(), "lladdr", APP2_MAC, "dev", "br0"]);
    drop(app1_lock);
    drop(app2_lock);
    let resumed = Instant::now();
    let server = restored.resume().expect("resume");
    (&server).write_all(&tail).unwrap();
    let total = warm.len() + burst_len + tail.len();
    expect.store(total, Ordering::SeqCst);
    let bytes = reader.join().expect("the bank never saw an error or EOF");
    println!(
        "{in_flight} bytes in flight at the checkpoint ({} segments); the bank had all {total} bytes \
         {:?} after resume",
        in_flight / mss,
        resumed.elapsed()
    );
    assert_eq!(bytes.len(), total);
    assert!(bytes[..warm.len()] == warm[..], "warm-up");
    assert!(bytes[warm.len()..warm.len() + burst_len] == burst[..burst_len], "burst once, in order");
    assert!(bytes[warm.len() + burst_len..] == tail[..], "then the tail");
    for (ns, before) in lab.all().iter().zip(&before) {
        let after = ns.counters();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        assert_eq!(delta("TcpOutRsts"), 0, "{}: no RST sent", ns.name);
        assert_eq!(delta("TcpExtPAWSEstab"), 0, "{}: no PAWS drop", ns.name);
    }
}
