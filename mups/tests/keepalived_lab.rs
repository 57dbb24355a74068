//! Two appliances with real keepalived (root): network namespaces `A` and `B`
//! joined by a veth pair, each running keepalived with a configuration rendered by
//! `mups::keepalived` (VRRPv3, advert_int 0.1, unicast peers, nopreempt), and our
//! notify FIFO reader on each side.
//!
//! It checks that exactly one side becomes master and holds the VIP, that a fault
//! written to the master's track file moves the VIP to the other side, that the
//! healed side does not take it back (nopreempt), and that a stopped master hands
//! over too. Handover times are printed, never asserted.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Netns;
use mups::vrrp::{NotifyFifo, TrackFile, VrrpEvent, VrrpState};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto::config::VrrpSection;
use tokio::sync::mpsc;

const VIP: &str = "10.213.0.100";
/// Generous: keepalived starts, waits 3 advert intervals plus skew, and this
/// machine is shared with other builds.
const EVENT_WAIT: Duration = Duration::from_secs(20);

/// One keepalived process, stopped (by PID) on drop.
struct Keepalived {
    child: Child,
    vrrp_pid_file: PathBuf,
    log: PathBuf,
}

impl Keepalived {
    fn start(ns: &Netns, conf: &Path, dir: &Path, side: &str) -> Self {
        let file = |ext: &str| dir.join(format!("keepalived-{side}.{ext}"));
        let log = file("log");
        let out = File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "keepalived", "--dont-fork", "--log-console", "--log-detail"])
            .args(["--no-syslog", "--vrrp", "-f"])
            .arg(conf)
            // Our own pid files: other keepalived processes may run on this host.
            .arg("-p")
            .arg(file("pid"))
            .arg("-r")
            .arg(file("vrrp.pid"))
            .arg("-c")
            .arg(file("checkers.pid"))
            .arg("-b")
            .arg(file("bfd.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("keepalived");
        // `ip netns exec` execs keepalived: the child's PID is keepalived's.
        Self { child, vrrp_pid_file: file("vrrp.pid"), log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as systemd stops it: the VRRP child sends a priority-0 advert.
    fn terminate(&self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Stuck: kill the VRRP child too, or it would outlive its parent.
        if let Some(pid) =
            std::fs::read_to_string(&self.vrrp_pid_file).ok().and_then(|s| s.trim().parse().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Side {
    name: &'static str,
    ns: Netns,
    track: TrackFile,
}

impl Side {
    fn has_vip(&self) -> bool {
        self.ns.addrs("eth0").split_whitespace().any(|a| a.split('/').next() == Some(VIP))
    }
}

fn section(dir: &Path, side: &str, src: &str, peer: &str, priority: u8) -> VrrpSection {
    let toml = format!(
        r#"
interface = "eth0"
virtual_router_id = 213
vips = ["{VIP}/24"]
unicast_src_ip = "{src}"
unicast_peers = ["{peer}"]
priority = {priority}
advert_int_ms = 100
instance = "PUPS"
state_dir = "{}"
track_file = "{}/{side}.track"
notify_fifo = "{}/{side}.fifo"
"#,
        dir.display(),
        dir.display(),
        dir.display()
    );
    toml::from_str(&toml).unwrap()
}

type Seen = (&'static str, Instant, VrrpEvent);

/// Waits for `side` to report `state` at or after `since`; returns when it arrived.
/// Every event is kept in `log`.
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    log: &mut Vec<Seen>,
    (side, state, since): (&str, VrrpState, Instant),
    context: &dyn Fn() -> String,
) -> Instant {
    let hit = |seen: &Seen| seen.0 == side && seen.2.state() == Some(state) && seen.1 >= since;
    if let Some(seen) = log.iter().find(|seen| hit(seen)) {
        return seen.1;
    }
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(seen)) => {
                let (found, at) = (hit(&seen), seen.1);
                log.push(seen);
                if found {
                    return at;
                }
            }
            _ => panic!("{side} never reported {state}; events so far: {log:#?}\n{}", context()),
        }
    }
}

/// Everything reported within `window` (a quiet period to observe that nothing
/// unexpected happens).
async fn collect(rx: &mut mpsc::UnboundedReceiver<Seen>, log: &mut Vec<Seen>, window: Duration) -> Vec<Seen> {
    let until = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(seen)) = tokio::time::timeout_at(until, rx.recv()).await {
        got.push(seen.clone());
        log.push(seen);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vip_moves_between_two_real_keepalived_appliances() {
    let dir = tempfile::tempdir().unwrap();
    let a = Side { name: "A", ns: Netns::new("kla"), track: TrackFile::new(dir.path().join("A.track")) };
    let b = Side { name: "B", ns: Netns::new("klb"), track: TrackFile::new(dir.path().join("B.track")) };
    a.ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b.ns.name]);
    for (side, addr) in [(&a, "10.213.0.1/24"), (&b, "10.213.0.2/24")] {
        side.ns.ip(&["addr", "add", addr, "dev", "eth0"]);
        side.ns.ip(&["link", "set", "eth0", "up"]);
    }

    // A has the higher priority, so it wins the start; nopreempt must keep it from
    // taking the VIP back later.
    let sections = [
        (&a, section(dir.path(), "A", "10.213.0.1", "10.213.0.2", 254)),
        (&b, section(dir.path(), "B", "10.213.0.2", "10.213.0.1", 250)),
    ];
    // keepalived that starts on a link without carrier begins in FAULT; start on a
    // settled link so the first transitions are the ones under test.
    for side in [&a, &b] {
        let up = Instant::now();
        while !side.ns.ip(&["-br", "link", "show", "eth0"]).stdout.windows(4).any(|w| w == b" UP ") {
            assert!(up.elapsed() < EVENT_WAIT, "{}'s eth0 never came up", side.name);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let mut daemons = Vec::new();
    let mut readers = Vec::new();
    for (side, vrrp) in &sections {
        let conf = dir.path().join(format!("keepalived-{}.conf", side.name));
        std::fs::write(&conf, mups::keepalived::render_section(side.name, vrrp).unwrap()).unwrap();
        // Healthy before keepalived starts: a missing track file starts in FAULT.
        side.track.healthy().unwrap();
        let mut fifo = NotifyFifo::open(vrrp.notify_fifo_path()).unwrap();
        let (tx, name) = (tx.clone(), side.name);
        readers.push(tokio::spawn(async move {
            while let Ok(event) = fifo.next_event().await {
                if tx.send((name, Instant::now(), event)).is_err() {
                    break;
                }
            }
        }));
        daemons.push(Keepalived::start(&side.ns, &conf, dir.path(), side.name));
    }
    let context = || {
        let logs: String = daemons.iter().map(|d| format!("--- {}\n{}", d.log.display(), d.logs())).collect();
        format!("A: {}B: {}{logs}", a.ns.addrs("eth0"), b.ns.addrs("eth0"))
    };
    let mut log = Vec::new();

    // Exactly one master, and it holds the VIP.
    let first = tokio::time::timeout(EVENT_WAIT, async {
        loop {
            let seen = rx.recv().await.unwrap();
            let master = (seen.2.state() == Some(VrrpState::Master)).then_some(seen.0);
            log.push(seen);
            if let Some(m) = master {
                break m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no side became MASTER: {log:#?}\n{}", context()));
    let (master, backup) = if first == "A" { (&a, &b) } else { (&b, &a) };
    wait_for(&mut rx, &mut log, (backup.name, VrrpState::Backup, start), &context).await;
    let settle = collect(&mut rx, &mut log, Duration::from_millis(500)).await;
    assert!(settle.iter().all(|(_, _, e)| e.state() != Some(VrrpState::Master)), "{settle:#?}");
    assert!(master.has_vip() && !backup.has_vip(), "{}", context());
    let event = &log.iter().find(|(s, _, _)| *s == master.name).unwrap().2;
    assert_eq!(event.name, "PUPS");

    // Planned handover: the master's track file says FAULT.
    let t0 = Instant::now();
    master.track.fault().unwrap();
    let new_master_at = wait_for(&mut rx, &mut log, (backup.name, VrrpState::Master, t0), &context).await;
    let fault_at = wait_for(&mut rx, &mut log, (master.name, VrrpState::Fault, t0), &context).await;
    let vip_seen = loop {
        if backup.has_vip() {
            break Instant::now();
        }
        assert!(t0.elapsed() < EVENT_WAIT, "the VIP never reached {}: {}", backup.name, context());
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(!master.has_vip(), "the faulted side kept the VIP: {}", context());

    // Healed, the old master (higher priority) stays BACKUP: nopreempt.
    let healed = Instant::now();
    master.track.healthy().unwrap();
    wait_for(&mut rx, &mut log, (master.name, VrrpState::Backup, healed), &context).await;
    let settle = collect(&mut rx, &mut log, Duration::from_secs(1)).await;
    assert!(settle.iter().all(|(_, _, e)| e.state() != Some(VrrpState::Master)), "{settle:#?}");
    assert!(backup.has_vip() && !master.has_vip(), "{}", context());

    // The current master stops (SIGTERM, as in a package upgrade): STOP on its FIFO,
    // and the other side takes over from its priority-0 advert.
    let stopping = if backup.name == "A" { 0 } else { 1 };
    let t1 = Instant::now();
    daemons[stopping].terminate();
    let stop_at = wait_for(&mut rx, &mut log, (backup.name, VrrpState::Stop, t1), &context).await;
    let back_at = wait_for(&mut rx, &mut log, (master.name, VrrpState::Master, t1), &context).await;
    assert!(master.has_vip(), "{}", context());

    println!(
        "handover by track file FAULT (advert_int 0.1): new master's MASTER event after {:.1} ms, \
         VIP seen there after {:.1} ms, old master's FAULT event after {:.1} ms",
        ms(new_master_at - t0),
        ms(vip_seen - t0),
        ms(fault_at.saturating_duration_since(t0)),
    );
    println!(
        "handover by stopping keepalived (SIGTERM): STOP event after {:.1} ms, new MASTER event after {:.1} ms",
        ms(stop_at.saturating_duration_since(t1)),
        ms(back_at - t1),
    );
    for r in readers {
        r.abort();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
