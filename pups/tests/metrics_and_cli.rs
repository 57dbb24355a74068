//! `/metrics` and `/healthz` over HTTP, `run` in-process with its shutdown, and
//! the `pups` command line (`check-config`).

mod common;

use std::process::Command;
use std::sync::Arc;

use common::*;
use proto::fo_link::SessionDownReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOOPBACK: &str = r#""127.0.0.0/8""#;

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = within("metrics connect", TcpStream::connect(addr)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: pups\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    within("metrics response", s.read_to_string(&mut out)).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served() {
    let cfg =
        config("metrics", r#"metrics_listen = "127.0.0.1:0""#, &bank("MB", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let addr = pups.metrics_addr().expect("metrics listener");
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("MB").unwrap(), cfg.banks[0].framing.clone()).await;
    mups.session_up().await;
    b.send_raw(b"\x00\x040800").await;
    mups.data().await;
    let health = get(addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let page = get(addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for line in [
        r#"pups_sessions{bank="MB"} 1"#,
        r#"pups_sessions_opened_total{bank="MB"} 1"#,
        r#"pups_messages_total{bank="MB",direction="to_node"} 1"#,
        r#"pups_rejected_connections_total{reason="unknown_source"} 0"#,
        "pups_local_link_attached 1",
        "pups_local_link_attaches_total 1",
    ] {
        assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
    }
    drop(b);
    mups.session_down().await;
    let page = pups.stats().render();
    assert!(page.contains(r#"pups_sessions_closed_total{bank="MB",reason="peer_closed"} 1"#), "{page}");
    pups.shutdown().await;
}

/// `run` serves until its shutdown future completes; shutdown closes bank
/// sessions (SESSION_DOWN Shutdown) and removes the socket file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_shutdown_closes_sessions() {
    let cfg = config("run", "", &bank("R", "127.0.0.1:0", LOOPBACK, ""));
    // `run` binds the configured address; take a free port for the bank first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = Arc::unwrap_or_clone(cfg);
    cfg.banks[0].listen = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = Arc::new(cfg);
    let path = cfg.appliance.local_link.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(pups::run(cfg.clone(), async move {
        let _ = stopped.await;
    }));
    eventually("local link socket", || path.exists()).await;
    let mut mups = FakeMups::attach(&path).await;
    let mut b = Bank::connect(cfg.banks[0].listen, cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    stop.send(()).unwrap();
    b.eof().await;
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (up.session_id, SessionDownReason::Shutdown));
    within("run returns", running).await.unwrap().unwrap();
    assert!(!path.exists());
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = std::env::temp_dir();
    let good = config_text("cli", "", &bank("G", "127.0.0.1:0", LOOPBACK, ""));
    let text = r#"
[appliance]
id = "x"
local_link = "/tmp/unused.sock"

[[fo_node]]
id = "A"
address = "127.0.0.1:7001"

[[bank]]
id = "B1"
listen = "127.0.0.1:6001"
allow = []
framing = { length = "u16be" }
layout = "iso87-binary"
active_node = "Z"
"#;
    let bad_path = dir.join(format!("pups-cli-bad-{}.toml", std::process::id()));
    std::fs::write(&bad_path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pups"))
        .args(["check-config", "--config"])
        .arg(&bad_path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bad_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("bank[0].allow"), "{stderr}");
    assert!(stderr.contains("bank[0].active_node"), "{stderr}");

    let good_path = dir.join(format!("pups-cli-good-{}.toml", std::process::id()));
    std::fs::write(&good_path, good).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pups"))
        .args(["check-config", "--config"])
        .arg(&good_path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&good_path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let out = Command::new(env!("CARGO_BIN_EXE_pups"))
        .args(["check-config", "--config", "/nonexistent/pups.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
}
