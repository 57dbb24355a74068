//! Per-bank session policies: bad frames (drop, close), keep-alives (echo with
//! the storm guard, ignore), idle timeout; and the controller's session commands
//! (CLOSE_SESSION, SESSION_PAUSE, SESSION_RESUME).

mod common;

use std::time::Duration;

use common::*;
use proto::fo_link::{CloseSession, FoMessage, SessionDownReason, SessionPause, SessionResume};
use pups::codec::BankFrame;
use pups::metrics::{BadFrameAction, KeepAliveDirection};

const LOOPBACK: &str = r#""127.0.0.0/8""#;

/// `bad_frame = "drop"`: an oversize frame is skipped (its body discarded as it
/// arrives) and the next good frame still arrives; a bad trailer too. A length
/// that is not a number loses the framing: the session closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_skips_bad_frames_and_goes_on() {
    let extra = r#"
bad_frame = "drop"
framing = { length = "ascii4", trailer = 3, max_frame = 64 }"#;
    let cfg = config("bad-drop", "", &bank("D", "127.0.0.1:0", LOOPBACK, extra));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("D").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    // 1000 bytes declared, over the maximum of 64, sent in pieces.
    b.send_raw(b"1000").await;
    for _ in 0..10 {
        b.send_raw(&[b'7'; 100]).await;
    }
    b.send_raw(b"00050800\x03").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    // A bad trailer, then a good frame.
    b.send_raw(b"00050200X00050210\x03").await;
    assert_eq!(mups.data().await.message, &b"0210"[..]);
    assert_eq!(stats.bad_frames("D", BadFrameAction::Dropped), 2);
    // Framing lost.
    b.send_raw(b"00x1").await;
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (up.session_id, SessionDownReason::FramingError));
    b.closed().await;
    assert_eq!(stats.bad_frames("D", BadFrameAction::Closed), 1);
    pups.shutdown().await;
}

/// `bad_frame = "close"`: any framing error closes the session, FramingError.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_policy_closes_on_a_bad_frame() {
    let extra = r#"framing = { length = "u16be", max_frame = 64 }"#;
    let cfg = config("bad-close", "", &bank("C", "127.0.0.1:0", LOOPBACK, extra));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("C").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    b.send_raw(b"\x00\x040800\x01\x00").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (up.session_id, SessionDownReason::FramingError));
    assert!(down.detail.contains("over the maximum"), "{}", down.detail);
    b.closed().await;
    assert_eq!(stats.bad_frames("C", BadFrameAction::Closed), 1);
    assert_eq!(stats.sessions_closed("C", SessionDownReason::FramingError), 1);
    pups.shutdown().await;
}

/// `keepalive = "echo"`: keep-alives are echoed, at most `max_keepalives_in_a_row`
/// times without other traffic; a message resets the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_keep_alives_with_storm_guard() {
    let extra = "keepalive = \"echo\"\nmax_keepalives_in_a_row = 2";
    let cfg = config("ka-echo", "", &bank("E", "127.0.0.1:0", LOOPBACK, extra));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("E").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    for _ in 0..3 {
        b.send_keep_alive().await;
    }
    // The message is read after the three keep-alives; the reply is written after
    // any echo of them, so the bank sees exactly two echoes, then the reply.
    b.send(None, b"", b"0800").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    mups.send_to_bank("E", up.session_id, b"0810").await;
    assert_eq!(b.frame().await, BankFrame::KeepAlive);
    assert_eq!(b.frame().await, BankFrame::KeepAlive);
    assert!(matches!(b.frame().await, BankFrame::Message { message, .. } if message == b"0810"[..]));
    assert_eq!(stats.keepalives("E", KeepAliveDirection::Received), 3);
    assert_eq!(stats.keepalives("E", KeepAliveDirection::Echoed), 2);
    assert_eq!(stats.keepalives("E", KeepAliveDirection::Suppressed), 1);
    // Traffic reset the count: the next keep-alive is echoed again.
    b.send_keep_alive().await;
    assert_eq!(b.frame().await, BankFrame::KeepAlive);
    assert_eq!(stats.keepalives("E", KeepAliveDirection::Echoed), 3);
    pups.shutdown().await;
}

/// `keepalive = "ignore"`: counted, never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_keep_alives_are_counted_only() {
    let cfg = config("ka-ignore", "", &bank("I", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("I").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    b.send_keep_alive().await;
    b.send_keep_alive().await;
    b.send(None, b"", b"0800").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    mups.send_to_bank("I", up.session_id, b"0810").await;
    assert!(matches!(b.frame().await, BankFrame::Message { message, .. } if message == b"0810"[..]));
    assert_eq!(stats.keepalives("I", KeepAliveDirection::Received), 2);
    assert_eq!(stats.keepalives("I", KeepAliveDirection::Echoed), 0);
    pups.shutdown().await;
}

/// A bank that sends nothing for `idle_timeout_s` is closed, IdleTimeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let cfg = config("idle", "", &bank("S", "127.0.0.1:0", LOOPBACK, "idle_timeout_s = 1"));
    let pups = start(cfg.clone()).await;
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("S").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    b.eof().await;
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (up.session_id, SessionDownReason::IdleTimeout));
    pups.shutdown().await;
}

/// CLOSE_SESSION: the bank sees EOF, mups gets SESSION_DOWN ClosedByController
/// with the command's reason; other sessions go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_closes_gracefully() {
    let cfg = config("close-session", "", &bank("K", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let addr = pups.bank_addr("K").unwrap();
    let mut doomed = Bank::connect(addr, cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    let mut other = Bank::connect(addr, cfg.banks[0].framing.clone()).await;
    let other_up = mups.session_up().await;
    mups.send_control(FoMessage::CloseSession(CloseSession {
        session_id: up.session_id,
        reason: "bad message".into(),
    }))
    .await;
    doomed.eof().await;
    let down = mups.session_down().await;
    assert_eq!(
        (down.session_id, down.reason, down.detail.as_str()),
        (up.session_id, SessionDownReason::ClosedByController, "bad message")
    );
    // Unknown sessions are ignored.
    mups.send_control(FoMessage::CloseSession(CloseSession { session_id: 424_242, reason: "x".into() }))
        .await;
    other.send_raw(b"\x00\x040800").await;
    let d = mups.data().await;
    assert_eq!((d.session_id, d.message.as_ref()), (other_up.session_id, &b"0800"[..]));
    pups.shutdown().await;
}

/// SESSION_PAUSE stops forwarding (pups stops reading; nothing is lost), while
/// DATA ToBank is still written; SESSION_RESUME delivers what waited, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let cfg = config("pause", "", &bank("P", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("P").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    mups.send_control(FoMessage::SessionPause(SessionPause { session_id: up.session_id })).await;
    mups.send_control(FoMessage::SessionPause(SessionPause { session_id: up.session_id })).await;
    mups.sync().await;
    b.send_raw(b"\x00\x040801\x00\x040802").await;
    assert!(mups.data_within(Duration::from_millis(300)).await.is_none(), "a paused session was read");
    mups.send_to_bank("P", up.session_id, b"0810").await;
    assert_eq!(b.read_raw(6).await, b"\x00\x040810");
    mups.send_control(FoMessage::SessionResume(SessionResume { session_id: up.session_id })).await;
    assert_eq!(mups.data().await.message, &b"0801"[..]);
    assert_eq!(mups.data().await.message, &b"0802"[..]);
    pups.shutdown().await;
}

/// A bank that stops reading while mups keeps sending: once its write queue is
/// full the session is closed (IoError) and the extra DATA counted; another
/// session of the same bank is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_that_does_not_read_is_closed_alone() {
    let cfg = config(
        "not-reading",
        "",
        &bank("NR", "127.0.0.1:0", LOOPBACK, r#"framing = { length = "u16be", max_frame = 2048 }"#),
    );
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let addr = pups.bank_addr("NR").unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let _deaf = socket.connect(addr).await.unwrap();
    let deaf = mups.session_up().await;
    let mut good = Bank::connect(addr, cfg.banks[0].framing.clone()).await;
    let good_up = mups.session_up().await;
    let big = vec![b'x'; 2000];
    let mut down = None;
    for _ in 0..20_000 {
        mups.send_to_bank("NR", deaf.session_id, &big).await;
        if stats.link_dropped(pups::metrics::LinkDrop::BankNotReading) > 0 {
            down = Some(mups.session_down().await);
            break;
        }
    }
    let down = down.expect("the deaf bank's session was closed");
    assert_eq!((down.session_id, down.reason), (deaf.session_id, SessionDownReason::IoError));
    assert!(down.detail.contains("not reading"), "{}", down.detail);
    good.send_raw(b"\x00\x040800").await;
    assert_eq!(mups.data().await.session_id, good_up.session_id);
    mups.send_to_bank("NR", good_up.session_id, b"0810").await;
    assert_eq!(good.read_raw(6).await, b"\x00\x040810");
    pups.shutdown().await;
}
