//! Attach and inventory, sessions, and messages both ways with several framings;
//! who may connect (source address, shared listeners, `max_sessions`).

mod common;

use std::collections::HashSet;
use std::net::IpAddr;

use common::*;
use proto::fo_link::{BankState, DataFlags, Direction, FoMessage, LinkChannel, SessionDownReason};
use pups::metrics::{LinkDrop, MessageDirection, Rejected};

const LOOPBACK: &str = r#""127.0.0.0/8""#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Empty inventory at attach; SESSION_UP for each bank connection; every framing
/// delivers the exact message bytes as DATA, and DATA ToBank is framed with the
/// bank's profile, the TPDU swapped and the last fixed header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways_with_each_framing() {
    let banks = [
        bank("B16", "127.0.0.1:0", LOOPBACK, ""),
        bank("A4", "127.0.0.2:0", LOOPBACK, r#"framing = { length = "ascii4", tpdu = true }"#),
        bank(
            "BCD",
            "127.0.0.3:0",
            LOOPBACK,
            r#"framing = { length = "bcd2", fixed_header = 2, trailer = 3 }"#,
        ),
    ]
    .concat();
    let cfg = config("framings", "", &banks);
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert!(mups.inventory.is_empty());
    let mut ids = HashSet::new();

    // u16be: three frames in one write come out as three DATA, in order.
    let mut b16 = Bank::connect(pups.bank_addr("B16").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    assert_eq!(up.bank_id, "B16");
    assert_eq!(up.peer, b16.stream.local_addr().unwrap().to_string());
    assert_eq!(up.local, b16.stream.peer_addr().unwrap().to_string());
    assert!(up.opened_at_micros > 1_600_000_000_000_000);
    ids.insert(up.session_id);
    b16.send_raw(b"\x00\x0b0800\x82\x20\x00\x00\x00\x00\x00\x00\x040200\x00\x020\x00").await;
    for expected in [&b"0800\x82\x20\x00\x00\x00\x00\x00"[..], b"0200", b"0\x00"] {
        let d = mups.data().await;
        assert_eq!(d.message, expected);
        assert_eq!((d.bank_id.as_str(), d.session_id), ("B16", up.session_id));
        assert_eq!((d.direction, d.correlation_id, d.flags), (Direction::ToNode, 0, DataFlags::empty()));
    }
    mups.send_to_bank("B16", up.session_id, b"0810reply").await;
    assert_eq!(b16.read_raw(11).await, b"\x00\x090810reply");

    // ascii4 with a TPDU: the reply's TPDU is the request's, swapped.
    let mut a4 = Bank::connect(pups.bank_addr("A4").unwrap(), cfg.banks[1].framing.clone()).await;
    let up = mups.session_up().await;
    assert_eq!(up.bank_id, "A4");
    ids.insert(up.session_id);
    a4.send_raw(b"0009\x60\x00\x01\x00\x020800").await;
    let d = mups.data().await;
    assert_eq!((d.message.as_ref(), d.session_id), (&b"0800"[..], up.session_id));
    mups.send_to_bank("A4", up.session_id, b"0810").await;
    assert_eq!(a4.read_raw(13).await, b"0009\x60\x00\x02\x00\x010810");

    // bcd2 with a fixed header and ETX: replies carry the last header received.
    let mut bcd = Bank::connect(pups.bank_addr("BCD").unwrap(), cfg.banks[2].framing.clone()).await;
    let up = mups.session_up().await;
    assert_eq!(up.bank_id, "BCD");
    ids.insert(up.session_id);
    bcd.send_raw(b"\x00\x07HH0800\x03").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    mups.send_to_bank("BCD", up.session_id, b"0810").await;
    assert_eq!(bcd.read_raw(9).await, b"\x00\x07HH0810\x03");
    bcd.send_raw(b"\x00\x18KK0200 0123456789\x03").await;
    assert_eq!(mups.data().await.message, &b"0200 0123456789"[..]);
    mups.send_to_bank("BCD", up.session_id, b"0210").await;
    assert_eq!(bcd.read_raw(9).await, b"\x00\x07KK0210\x03");

    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&0));
    assert_eq!(stats.messages("B16", MessageDirection::ToNode), 3);
    assert_eq!(stats.messages("B16", MessageDirection::ToBank), 1);
    assert_eq!(stats.sessions("BCD"), 1);

    // A bank that hangs up: SESSION_DOWN PeerClosed.
    drop(a4);
    let down = mups.session_down().await;
    assert_eq!((down.bank_id.as_str(), down.reason), ("A4", SessionDownReason::PeerClosed));
    eventually("A4 closed counted", || stats.sessions_closed("A4", SessionDownReason::PeerClosed) == 1).await;
    pups.shutdown().await;
}

/// A connection from a source no bank allows is closed unread and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_is_closed_unread() {
    let cfg = config("unknown-source", "", &bank("ONLY1", "127.0.0.1:0", r#""127.0.0.1/32""#, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let addr = pups.bank_addr("ONLY1").unwrap();
    let mut stranger = Bank::connect_from(Some(ip("127.0.0.2")), addr, cfg.banks[0].framing.clone()).await;
    // pups may already have closed it: a failed write is fine.
    use tokio::io::AsyncWriteExt;
    let _ = stranger.stream.write_all(b"\x00\x040800").await;
    stranger.closed().await;
    eventually("rejection counted", || stats.rejected(Rejected::UnknownSource) == 1).await;
    assert_eq!(stats.sessions_opened("ONLY1"), 0);
    assert_eq!(stats.messages("ONLY1", MessageDirection::ToNode), 0);
    // The allowed source still gets in.
    let _ok = Bank::connect_from(Some(ip("127.0.0.1")), addr, cfg.banks[0].framing.clone()).await;
    assert_eq!(mups.session_up().await.bank_id, "ONLY1");
    pups.shutdown().await;
}

/// Banks sharing a listener: the first bank in file order whose `allow` matches
/// owns the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_listener_picks_the_first_matching_bank() {
    // A fixed port: port 0 gives every bank a fresh port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let banks = [bank("X", &listen, r#""127.0.0.2/32""#, ""), bank("Y", &listen, LOOPBACK, "")].concat();
    let cfg = config("shared", "", &banks);
    let pups = start(cfg.clone()).await;
    let addr = pups.bank_addr("X").unwrap();
    assert_eq!(pups.bank_addr("Y"), Some(addr));
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let _x = Bank::connect_from(Some(ip("127.0.0.2")), addr, cfg.banks[0].framing.clone()).await;
    assert_eq!(mups.session_up().await.bank_id, "X");
    let _y = Bank::connect_from(Some(ip("127.0.0.1")), addr, cfg.banks[1].framing.clone()).await;
    assert_eq!(mups.session_up().await.bank_id, "Y");
    pups.shutdown().await;
}

/// A bank at `max_sessions` gets further connections closed and counted; a slot
/// freed by a closed session can be taken again, under a new session id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions_is_enforced() {
    let cfg = config("max-sessions", "", &bank("M", "127.0.0.1:0", LOOPBACK, "max_sessions = 1"));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let addr = pups.bank_addr("M").unwrap();
    let framing = cfg.banks[0].framing.clone();
    let first = Bank::connect(addr, framing.clone()).await;
    let up1 = mups.session_up().await;
    let mut second = Bank::connect(addr, framing.clone()).await;
    second.closed().await;
    eventually("rejection counted", || stats.rejected(Rejected::MaxSessions) == 1).await;
    drop(first);
    let down = mups.session_down().await;
    assert_eq!((down.session_id, down.reason), (up1.session_id, SessionDownReason::PeerClosed));
    let mut third = Bank::connect(addr, framing).await;
    let up3 = mups.session_up().await;
    assert_ne!(up3.session_id, up1.session_id);
    third.send_raw(b"\x00\x040800").await;
    assert_eq!(mups.data().await.session_id, up3.session_id);
    assert_eq!(stats.sessions("M"), 1);
    pups.shutdown().await;
}

/// A second `mups` is refused while one is attached; DATA for a session pups does
/// not have is counted and dropped; neither disturbs the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_mups_and_unknown_sessions_do_not_disturb_the_link() {
    let cfg = config("second-mups", "", &bank("B", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    assert!(refused(pups.local_link_path(), LinkChannel::Data).await);
    assert!(refused(pups.local_link_path(), LinkChannel::Control).await);
    mups.send_to_bank("B", 999_999, b"0810").await;
    eventually("unknown session counted", || stats.link_dropped(LinkDrop::UnknownSession) == 1).await;
    let mut b = Bank::connect(pups.bank_addr("B").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    b.send_raw(b"\x00\x040800").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    mups.send_to_bank("B", up.session_id, b"0810").await;
    assert_eq!(b.read_raw(6).await, b"\x00\x040810");
    assert_eq!(stats.link_attaches(), 1);
    pups.shutdown().await;
}

/// Messages that decode but break the local link's rules: a SESSION_UP from mups
/// (the wrong way) is counted and dropped; an FO-link-only message (BANK_STATE) is handled as
/// an unknown type and detaches mups; bank sessions stay open throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_on_the_local_link() {
    let cfg = config("protocol", "", &bank("PE", "127.0.0.1:0", LOOPBACK, ""));
    let pups = start(cfg.clone()).await;
    let stats = pups.stats();
    let mut mups = FakeMups::attach(pups.local_link_path()).await;
    let mut b = Bank::connect(pups.bank_addr("PE").unwrap(), cfg.banks[0].framing.clone()).await;
    let up = mups.session_up().await;
    // A SESSION_UP from mups goes the wrong way.
    mups.send_control(FoMessage::SessionUp(up.clone())).await;
    mups.sync().await;
    assert_eq!(stats.link_dropped(LinkDrop::Protocol), 1);
    b.send_raw(b"\x00\x040800").await;
    assert_eq!(mups.data().await.message, &b"0800"[..]);
    mups.send_control(FoMessage::BankState(BankState { bank_id: "PE".into(), sessions: vec![] })).await;
    mups.closed_by_pups().await;
    attached(&stats, false).await;
    let mups = FakeMups::attach(pups.local_link_path()).await;
    assert_eq!(mups.inventory.len(), 1);
    assert_eq!(mups.inventory[0].session_id, up.session_id);
    pups.shutdown().await;
}
