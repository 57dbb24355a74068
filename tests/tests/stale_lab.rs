//! A pair lab left behind by a killed test run (root): the next `PairLab::up`
//! removes its daemons, host link and namespaces, and only those of labs whose
//! owner process is gone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::pair::{REGISTRY, remove_stale_labs};

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// A pid no process has now.
fn dead_pid() -> u32 {
    (4_000_000..).find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).unwrap()
}

#[test]
fn a_lab_whose_owner_is_gone_is_removed_and_a_live_ones_is_not() {
    let me = std::process::id();
    let (stale, live) = (format!("pst{me}"), format!("plv{me}"));
    for ns in [&stale, &live] {
        assert!(ip(&["netns", "add", &format!("{ns}-sw")]));
    }
    let host_link = format!("{stale}-h");
    assert!(ip(&["link", "add", &host_link, "type", "veth", "peer", "name", &format!("{stale}-p")]));
    // A daemon of the stale lab, still running in its namespace.
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &format!("{stale}-sw"), "sleep", "600"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::create_dir_all(REGISTRY).unwrap();
    let note = |owner: u32, prefix: &str| format!("{owner}\n{prefix}-h\n{prefix}-sw\n");
    std::fs::write(format!("{REGISTRY}/{stale}"), note(dead_pid(), &stale)).unwrap();
    std::fs::write(format!("{REGISTRY}/{live}"), note(me, &live)).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    remove_stale_labs();

    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(daemon.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon_gone = daemon.try_wait().unwrap().is_some();
    let stale_link = ip(&["link", "show", &format!("{stale}-h")]);
    let (stale_ns, live_ns) = (netns_exists(&format!("{stale}-sw")), netns_exists(&format!("{live}-sw")));
    let stale_note = std::path::Path::new(&format!("{REGISTRY}/{stale}")).exists();
    // Clean up before asserting.
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = ip(&["link", "del", &format!("{stale}-h")]);
    for ns in [&stale, &live] {
        let _ = ip(&["netns", "del", &format!("{ns}-sw")]);
        let _ = std::fs::remove_file(format!("{REGISTRY}/{ns}"));
    }
    assert!(daemon_gone, "the stale lab's daemon still runs");
    assert!(!stale_link && !stale_ns && !stale_note, "the stale lab is still there");
    assert!(live_ns, "a lab whose owner runs was removed");
}
