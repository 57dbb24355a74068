//! `mups` goes away and comes back: bank sessions stay open, are not read while
//! it is away (TCP back-pressure, no disconnect), and every message reaches the
//! next `mups`, in order, once.

mod common;

use std::time::Duration;

use common::*;
use proto::fo_link::{FoMessage, SessionDownReason, SessionPause};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

const LOOPBACK: &str = r#""127.0.0.0/8""#;

fn frame(i: usize, len: usize) -> Vec<u8> {
    let mut message = format!("m{i:07}").into_bytes();
    message.resize(len, b'.');
    let mut out = (message.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&message);
    out
}

fn index(message: &[u8]) -> usize {
    std::str::from_utf8(&message[1..8]).unwrap().parse().unwrap()
}

/// The fake mups drops both connections; the bank keeps sending; its socket is
/// not closed; the next mups gets the session in its inventory and every message,
/// in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mups_goes_away_and_nothing_is_lost() {
    let cfg = config("goes-away", "", &bank("L", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("L").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    b.send_raw(&frame(0, 20)).await;
    assert_eq!(index(&mups.data().await.message), 0);

    mups.crash();
    attached(&stats, false).await;
    const N: usize = 50;
    for i in 1..=N {
        b.send_raw(&frame(i, 20)).await;
    }
    // Not closed: no EOF, no reset, and pups still counts the session.
    let mut probe = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), b.stream.peek(&mut probe)).await;
    assert!(read.is_err(), "the bank's socket saw {read:?} while mups was away");
    assert_eq!(stats.sessions("L"), 1);

    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    let listed = &mups.inventory[0];
    assert_eq!(
        (listed.session_id, &listed.peer, listed.opened_at_micros),
        (up.session_id, &up.peer, up.opened_at_micros)
    );
    for i in 1..=N {
        let d = mups.data().await;
        assert_eq!((d.session_id, index(&d.message)), (up.session_id, i));
    }
    assert!(mups.data_within(Duration::from_millis(200)).await.is_none(), "a message came twice");
    // The session works both ways with the new mups.
    mups.send_to_bank("L", up.session_id, b"0810").await;
    assert_eq!(b.read_raw(6).await, b"\x00\x040810");
    assert_eq!(stats.link_attaches(), 2);
    pups.shutdown().await;
}

/// While detached, a bank that sends a lot is held back by TCP (its write does
/// not complete) rather than anything being dropped; after reattach the write
/// completes and every message arrives, in order. The session queue is larger
/// than the whole write, so only pups not reading can hold the bank back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_bank_sees_back_pressure_and_loses_nothing() {
    let cfg = config("back-pressure", "session_queue = 100000", &bank("BP", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(64 * 1024).unwrap();
    let mut stream = socket.connect(pups.bank_addr("BP").unwrap()).await.unwrap();
    let up = mups.session_up().await;
    mups.crash();
    attached(&stats, false).await;

    // 8 MB of frames: far more than the kernel buffers on both ends hold.
    const N: usize = 8000;
    let wire: Vec<u8> = (0..N).flat_map(|i| frame(i, 1000)).collect();
    let mut writer = tokio::spawn(async move { stream.write_all(&wire).await.map(|()| stream) });
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err(),
        "the bank's write completed while nobody could read it"
    );
    assert_eq!(stats.sessions("BP"), 1);

    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    assert_eq!(mups.inventory[0].session_id, up.session_id);
    for i in 0..N {
        let d = mups.data().await;
        assert_eq!((d.session_id, index(&d.message), d.message.len()), (up.session_id, i, 1000));
    }
    let _stream = within("the bank's write", writer).await.unwrap().expect("written whole");
    assert!(mups.data_within(Duration::from_millis(200)).await.is_none(), "a message came twice");
    pups.shutdown().await;
}

/// mups stops answering heartbeats: pups detaches (closes both channels); the
/// session stays open, its pause is lifted, and the next mups gets it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_mups_is_detached_and_pauses_do_not_outlive_the_link() {
    let pups_keys = "heartbeat_interval_ms = 100\nheartbeat_misses = 5";
    let cfg = config("silent", pups_keys, &bank("H", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("H").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    mups.send_control(FoMessage::SessionPause(SessionPause { session_id: up.session_id })).await;
    mups.sync().await;
    mups.answer_heartbeats.store(false, std::sync::atomic::Ordering::Relaxed);
    mups.closed_by_pups().await;
    attached(&stats, false).await;
    assert_eq!(stats.sessions("H"), 1);

    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    b.send_raw(&frame(7, 20)).await;
    assert_eq!(index(&mups.data().await.message), 7);
    pups.shutdown().await;
}

/// A bank that sends and hangs up while mups is away: pups sees the hang-up
/// without mups, reads what the bank sent, and the session's TCP end is counted;
/// its messages and then its SESSION_DOWN reach the next mups, after the
/// session's SESSION_UP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_while_detached_still_delivers() {
    let cfg = config("ends-detached", "", &bank("G", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("G").unwrap(), cfg.banks[0].framing.clone()).await;
    eventually("session up", || stats.sessions("G") == 1).await;
    mups.crash();
    attached(&stats, false).await;
    for i in 0..3 {
        b.send_raw(&frame(i, 20)).await;
    }
    drop(b);
    eventually("hang-up seen while detached", || {
        stats.sessions_closed("G", SessionDownReason::PeerClosed) == 1
    })
    .await;
    assert_eq!(stats.sessions("G"), 0);
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    let id = mups.inventory[0].session_id;
    for i in 0..3 {
        let d = mups.data().await;
        assert_eq!((d.session_id, index(&d.message)), (id, i));
    }
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (id, SessionDownReason::PeerClosed));
    pups.shutdown().await;
}

/// mups crashes while DATA streams to it: what the next mups gets follows, in
/// order and without repeats, what the first one read. (Bytes the first mups had
/// not read when it died are gone with its socket: the local link has no
/// acknowledgements; see docs/fo-link-protocol.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_stream_never_repeats_or_reorders() {
    let cfg = config("mid-stream", "", &bank("MS", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut stream = tokio::net::TcpStream::connect(pups.bank_addr("MS").unwrap()).await.unwrap();
    let up = mups.session_up().await;
    const N: usize = 2000;
    let writer = tokio::spawn(async move {
        for i in 0..N {
            stream.write_all(&frame(i, 100)).await.unwrap();
        }
        stream
    });
    let mut last = None;
    for expected in 0..100 {
        let i = index(&mups.data().await.message);
        assert_eq!(i, expected);
        last = Some(i);
    }
    mups.crash();
    attached(&stats, false).await;
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory[0].session_id, up.session_id);
    let first = index(&mups.data().await.message);
    assert!(Some(first) > last, "message {first} came again after {last:?}");
    for expected in first + 1..N {
        assert_eq!(index(&mups.data().await.message), expected);
    }
    let _stream = within("the bank's writes", writer).await.unwrap();
    assert!(mups.data_within(Duration::from_millis(200)).await.is_none(), "a message came twice");
    pups.shutdown().await;
}

/// A bank that hangs up while mups is away frees its `max_sessions` slot, so its
/// reconnection is accepted; the dead session, with nothing queued, is not in the
/// next inventory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_while_detached_is_not_refused() {
    let cfg = config("reconnect", "", &bank("RC", "127.0.0.1:0", LOOPBACK, "max_sessions = 1"));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let addr = pups.bank_addr("RC").unwrap();
    let first = Bank::connect(addr, cfg.banks[0].framing.clone()).await;
    let old = mups.session_up().await;
    mups.crash();
    attached(&stats, false).await;
    drop(first);
    eventually("hang-up seen while detached", || stats.sessions("RC") == 0).await;
    let mut second = Bank::connect(addr, cfg.banks[0].framing.clone()).await;
    eventually("reconnection accepted", || stats.sessions_opened("RC") == 2).await;
    second.send_raw(&frame(1, 20)).await;
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    assert_ne!(mups.inventory[0].session_id, old.session_id);
    assert_eq!(index(&mups.data().await.message), 1);
    assert_eq!(stats.rejected(pups::metrics::Rejected::MaxSessions), 0);
    pups.shutdown().await;
}
