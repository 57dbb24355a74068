//! The network lock with the real `nft` (root), in throwaway network namespaces:
//! `app` (the appliance) and `bank`, joined by a veth pair. Sockets are made inside
//! a namespace by a thread that entered it.
//!
//! Asserts: the table is rebuilt idempotently and removed on shutdown; locked bank
//! ports drop silently (a connect times out — no RST — even once the VIP arrives
//! after the lock); a locked session is frozen both ways while another session on
//! the same port flows, and resumes when unlocked; thousands of sessions lock in one
//! transaction. "No RST" is checked on the kernel counters (`Tcp: OutRsts`) and on
//! the lock's own drop counters. In hold mode (NFQUEUE), a segment the bank sent
//! while its session was locked is held and delivered on release.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pups::netlock::{NetLock, SessionTuple, TABLE};

const APP: &str = "10.214.0.1";
const BANK: &str = "10.214.0.2";
const VIP: &str = "10.214.0.100";

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace (unique name), deleted on drop with all it holds.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("pups-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        let ns = Self(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        run("ip", &[&["-n", self.0.as_str()], args].concat())
    }

    /// Runs `f` on a thread inside this namespace: sockets it makes belong here.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// `Tcp: OutRsts` of this namespace: resets its kernel sent.
    fn out_rsts(&self) -> u64 {
        let snmp = run("ip", &["netns", "exec", &self.0, "cat", "/proc/net/snmp"]);
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
        let i = names.split_whitespace().position(|n| n == "OutRsts").unwrap();
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }

    fn tables(&self) -> String {
        run("ip", &["netns", "exec", &self.0, "nft", "list", "tables"])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

struct Lab {
    app: Netns,
    bank: Netns,
    lock: NetLock,
}

fn lab() -> Lab {
    let app = Netns::new("nla");
    let bank = Netns::new("nlb");
    app.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &bank.0]);
    for (ns, addr) in [(&app, APP), (&bank, BANK)] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let lock = NetLock::in_netns(&app.0);
    Lab { app, bank, lock }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A connect from the bank namespace: `Ok`, refused (an RST came back), or timed
/// out (silence).
fn bank_connect(lab: &Lab, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    lab.bank.enter(move || TcpStream::connect_timeout(&to, timeout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_rebuilt_idempotently_and_removed_on_shutdown() {
    let lab = lab();
    let vip: IpAddr = VIP.parse().unwrap();
    lab.lock.install(&[(vip, 6001)]).await.unwrap();
    let first = lab.lock.list().await.unwrap();
    assert_eq!(first.bank_ports, [(vip, 6001)]);
    lab.lock.lock_session(SessionTuple { local: addr(APP, 6001), peer: addr(BANK, 40000) }).await.unwrap();
    // Again over a table that holds locks: the same fresh table, one of it.
    lab.lock.install(&[(vip, 6001)]).await.unwrap();
    assert_eq!(lab.lock.list().await.unwrap(), first);
    assert_eq!(lab.app.tables().matches(TABLE).count(), 1, "{}", lab.app.tables());
    lab.lock.remove().await.unwrap();
    assert!(!lab.app.tables().contains(TABLE), "{}", lab.app.tables());
    // Removing what is gone, and reading it, are clean answers.
    lab.lock.remove().await.unwrap();
    assert!(lab.lock.list().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_bank_ports_drop_silently_even_when_the_vip_arrives_after_the_lock() {
    let lab = lab();
    // The control: with no lock and no listener, the kernel answers with an RST.
    let rsts = lab.app.out_rsts();
    let refused = bank_connect(&lab, addr(APP, 6001), Duration::from_secs(5)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert!(lab.app.out_rsts() > rsts);

    // The standby: the lock goes in before the VIP exists on this host.
    let vip: IpAddr = VIP.parse().unwrap();
    lab.lock.install(&[]).await.unwrap();
    lab.lock.lock_all_bank_ports(vip, &[6001, 6002]).await.unwrap();
    lab.app.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    let rsts = lab.app.out_rsts();
    for port in [6001, 6002] {
        let err = bank_connect(&lab, addr(VIP, port), Duration::from_millis(600)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "port {port}: {err}");
    }
    // A listener (a restored socket would be one) sees nothing either.
    let listener = lab.app.enter(|| TcpListener::bind(addr(VIP, 6001)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let err = bank_connect(&lab, addr(VIP, 6001), Duration::from_millis(600)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut);
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(lab.app.out_rsts(), rsts, "the app sent an RST through the lock");
    let state = lab.lock.list().await.unwrap();
    assert_eq!(state.bank_ports, [(vip, 6001), (vip, 6002)]);
    assert!(state.dropped["bank-ports-in"] >= 3, "{state:?}");

    // Unlocked, the same connect goes through.
    lab.lock.unlock_all().await.unwrap();
    assert!(lab.lock.list().await.unwrap().bank_ports.is_empty());
    let _client = bank_connect(&lab, addr(VIP, 6001), Duration::from_secs(5)).unwrap();
    listener.set_nonblocking(false).unwrap();
    listener.accept().unwrap();
    lab.lock.remove().await.unwrap();
}

fn read_some(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(timeout))?;
    let mut buf = [0; 64];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].to_vec())
}

fn is_timeout(r: &std::io::Result<Vec<u8>>) -> bool {
    matches!(r, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_session_is_frozen_both_ways_and_resumes_when_unlocked() {
    let lab = lab();
    lab.lock.install(&[]).await.unwrap();
    let listener = lab.app.enter(|| TcpListener::bind(addr(APP, 6003)).unwrap());
    let mut bank1 = bank_connect(&lab, addr(APP, 6003), Duration::from_secs(5)).unwrap();
    let (mut app1, peer1) = listener.accept().unwrap();
    let mut bank2 = bank_connect(&lab, addr(APP, 6003), Duration::from_secs(5)).unwrap();
    let (mut app2, _) = listener.accept().unwrap();
    let session = SessionTuple { local: addr(APP, 6003), peer: peer1 };
    let rsts = (lab.app.out_rsts(), lab.bank.out_rsts());

    lab.lock.lock_session(session).await.unwrap();
    assert_eq!(lab.lock.list().await.unwrap().sessions, [session]);
    bank1.write_all(b"0200 request").unwrap();
    app1.write_all(b"0210 response").unwrap();
    assert!(is_timeout(&read_some(&mut app1, Duration::from_millis(500))), "a bank byte passed the lock");
    assert!(is_timeout(&read_some(&mut bank1, Duration::from_millis(500))), "an app byte passed the lock");
    // The lock is per session: the bank's other session on the same port flows.
    bank2.write_all(b"0800 echo").unwrap();
    assert_eq!(read_some(&mut app2, Duration::from_secs(5)).unwrap(), b"0800 echo");
    let state = lab.lock.list().await.unwrap();
    assert!(state.dropped["session-in"] >= 1 && state.dropped["session-out"] >= 1, "{state:?}");

    // Unlocked, TCP retransmits what was held, in both directions; nobody reset.
    lab.lock.unlock_session(session).await.unwrap();
    assert!(lab.lock.list().await.unwrap().sessions.is_empty());
    assert_eq!(read_some(&mut app1, Duration::from_secs(20)).unwrap(), b"0200 request");
    assert_eq!(read_some(&mut bank1, Duration::from_secs(20)).unwrap(), b"0210 response");
    assert_eq!((lab.app.out_rsts(), lab.bank.out_rsts()), rsts);
    // Unlocking again is not an error.
    lab.lock.unlock_session(session).await.unwrap();
    lab.lock.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_lock_and_unlock_in_one_transaction_each() {
    let lab = lab();
    lab.lock.install(&[]).await.unwrap();
    let sessions: Vec<SessionTuple> = (0..5000u16)
        .map(|i| SessionTuple {
            local: addr(VIP, 6000 + i % 4),
            peer: SocketAddr::new(IpAddr::from([10, 215, (i / 250) as u8, (i % 250) as u8 + 1]), 30000 + i),
        })
        .chain([SessionTuple {
            local: "[2001:db8::100]:6001".parse().unwrap(),
            peer: "[2001:db8::7]:5".parse().unwrap(),
        }])
        .collect();
    lab.lock.lock_sessions(&sessions).await.unwrap();
    let mut listed = lab.lock.list().await.unwrap().sessions;
    let mut want = sessions.clone();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    lab.lock.unlock_sessions(&sessions[..4000]).await.unwrap();
    assert_eq!(lab.lock.list().await.unwrap().sessions.len(), 1001);
    lab.lock.unlock_all().await.unwrap();
    assert!(lab.lock.list().await.unwrap().sessions.is_empty());
    lab.lock.remove().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_hold_mode_what_the_bank_sent_while_locked_is_delivered_on_release() {
    let mut lab = lab();
    let queue = 40 + (std::process::id() % 1000) as u16;
    lab.lock = NetLock::in_netns(&lab.app.0).with_hold_queue(queue);
    lab.lock.install(&[]).await.unwrap();
    let hold = lab.app.enter(move || pups::sys::HoldQueue::open(queue).unwrap());
    let listener = lab.app.enter(|| TcpListener::bind(addr(APP, 6005)).unwrap());
    let mut bank = bank_connect(&lab, addr(APP, 6005), Duration::from_secs(5)).unwrap();
    let (mut app, peer) = listener.accept().unwrap();
    let session = SessionTuple { local: addr(APP, 6005), peer };
    let rsts = (lab.app.out_rsts(), lab.bank.out_rsts());

    lab.lock.lock_session(session).await.unwrap();
    bank.write_all(b"0200 sent while locked").unwrap();
    assert!(is_timeout(&read_some(&mut app, Duration::from_millis(100))), "a bank byte passed the lock");
    let state = lab.lock.list().await.unwrap();
    assert!(state.dropped["session-in-held"] >= 1, "the segment was not held: {state:?}");
    // Held, not dropped: nothing is counted as dropped inbound.
    assert!(!state.dropped.contains_key("session-in"), "{state:?}");

    // The session is live again: unlock, then let the held segment go on.
    lab.lock.unlock_session(session).await.unwrap();
    let released = tokio::task::spawn_blocking(move || {
        let n = hold.release(pups::sys::Release::Accept).unwrap();
        (n, hold)
    });
    let (n, hold) = released.await.unwrap();
    assert!(n >= 1, "nothing was released");
    assert_eq!(read_some(&mut app, Duration::from_secs(20)).unwrap(), b"0200 sent while locked");
    assert_eq!((lab.app.out_rsts(), lab.bank.out_rsts()), rsts);
    // The bank's stack saw its segment acknowledged: nothing of it is outstanding.
    bank.write_all(b"0200 after").unwrap();
    assert_eq!(read_some(&mut app, Duration::from_secs(5)).unwrap(), b"0200 after");
    drop(hold);
    lab.lock.remove().await.unwrap();
    let raw = run("ip", &["netns", "exec", &lab.app.0, "iptables", "-t", "raw", "-S"]);
    assert!(!raw.contains(pups::netlock::HOLD_CHAIN), "the hold chain outlived remove(): {raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_kernel_refuses_is_a_clear_error() {
    let lab = lab();
    // No table: nftables answers ENOENT to the set change sent over netlink.
    let session = SessionTuple { local: addr(APP, 6001), peer: addr(BANK, 40000) };
    let err = lab.lock.lock_session(session).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, pups::netlock::NetLockError::Netlink { .. }), "{err:?}");
    assert!(text.contains("add 1 to sessions4") && text.contains("No such file"), "{text}");
    assert!(lab.lock.check_netlink(&[]).await.is_err(), "the start-up check passed with no table");
    // And with the table there, the same call goes through.
    lab.lock.install(&[]).await.unwrap();
    lab.lock.check_netlink(&[]).await.unwrap();
    let vip: IpAddr = VIP.parse().unwrap();
    lab.lock.check_netlink(&[(vip, 6001)]).await.unwrap();
    lab.lock.lock_session(session).await.unwrap();
    let state = lab.lock.list().await.unwrap();
    assert_eq!(
        (state.sessions.as_slice(), state.bank_ports.as_slice()),
        (&[session][..], &[(vip, 6001)][..])
    );
    lab.lock.remove().await.unwrap();
}

/// A switchover only adds elements (removing one makes the kernel's answer wait
/// 8–16 ms): the twin opens its standing lock with `open_ports`, the active locks
/// with the closing set, which wins over an open port; `fence` goes back to the
/// standing lock alone, keeping the session locks it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_closing_and_fence_move_between_the_locks_without_a_gap() {
    let lab = lab();
    let vip: IpAddr = VIP.parse().unwrap();
    lab.app.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "eth0"]);
    let listener = lab.app.enter(|| TcpListener::bind(addr(VIP, 6007)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let rsts = lab.app.out_rsts();
    let ports = [(vip, 6007)];
    let blocked = |lab: &Lab| {
        let err = bank_connect(lab, addr(VIP, 6007), Duration::from_millis(400)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    };

    // The standby: the standing lock from the first instant.
    lab.lock.install(&ports).await.unwrap();
    blocked(&lab);
    // Serve on the twin: one add opens it.
    lab.lock.open_ports(&ports).await.unwrap();
    let state = lab.lock.list().await.unwrap();
    assert_eq!((state.bank_ports.as_slice(), state.open_ports.as_slice()), (&ports[..], &ports[..]));
    let _first = bank_connect(&lab, addr(VIP, 6007), Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (_app_side, peer) = listener.accept().unwrap();
    let session = SessionTuple { local: addr(VIP, 6007), peer };

    // The checkpoint on the active: the closing lock wins over the open port.
    lab.lock.lock_ports_and_sessions(&ports, &[session]).await.unwrap();
    assert_eq!(lab.lock.list().await.unwrap().closing_ports, ports);
    blocked(&lab);

    // After CloseFrozen: the standing lock alone (the still-frozen session kept).
    lab.lock.fence(&ports, &[session]).await.unwrap();
    let state = lab.lock.list().await.unwrap();
    assert_eq!(state.bank_ports, ports);
    assert!(state.open_ports.is_empty() && state.closing_ports.is_empty(), "{state:?}");
    assert_eq!(state.sessions, [session]);
    blocked(&lab);
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock);
    assert_eq!(lab.app.out_rsts(), rsts, "the app sent an RST through the lock");
    lab.lock.remove().await.unwrap();
}
