//! Starting: the local link socket file (stale one replaced, permissions, a live
//! one or a regular file refused) and bank listeners.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use pups::{Pups, PupsError};

const LOOPBACK: &str = r#""127.0.0.0/8""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_link_socket_file() {
    let cfg = config("startup", "", &bank("S", "127.0.0.1:0", LOOPBACK, ""));
    let path = cfg.appliance.local_link.clone();

    // A stale socket (nobody listening) is replaced; the new one is 0660.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let pups = start(cfg.clone()).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let _mups = FakeMups::attach(&path).await;

    // A second pups on the same socket is refused while the first listens.
    let mut other = (*cfg).clone();
    other.banks[0].listen = "127.0.0.1:0".parse().unwrap();
    let err = Pups::start(std::sync::Arc::new(other)).await.unwrap_err();
    assert!(matches!(err, PupsError::LocalLink { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
    pups.shutdown().await;
    assert!(!path.exists());

    // A regular file is not removed.
    std::fs::write(&path, b"not a socket").unwrap();
    let err = Pups::start(cfg.clone()).await.unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_bank_port_is_a_start_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = config("taken", "", &bank("T", &addr.to_string(), LOOPBACK, ""));
    let err = Pups::start(cfg).await.unwrap_err();
    assert!(matches!(err, PupsError::BankListen { addr: a, .. } if a == addr), "{err}");
}
