//! Session snapshot codec: every valid snapshot and batch survives a round trip
//! byte for byte; truncated, garbage and newer-version input gives a typed error
//! naming the field, never a panic.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use proto::snapshot::{
    KeepAlive, Kind, MAGIC, RepairWindow, SessionSnapshot, SessionState, SignOnState, SnapshotBatch,
    SnapshotError, SocketOptions, TcpSnapshot, VERSION, WindowScale,
};

fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    let v4 = (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p, b, q)| {
        (
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), p)),
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(b), q)),
        )
    });
    let v6 = (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>(), any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(a, p, f, s, b, q)| {
            (
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), p, f, s)),
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(b), q, 0, 0)),
            )
        });
    prop_oneof![v4, v6]
}

fn options() -> impl Strategy<Value = SocketOptions> {
    (
        any::<bool>(),
        proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>())),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u8>()),
    )
        .prop_map(|(nodelay, ka, user_timeout_ms, send_buffer, recv_buffer, mark, tos)| SocketOptions {
            nodelay,
            keepalive: ka.map(|(idle_s, interval_s, count)| KeepAlive { idle_s, interval_s, count }),
            user_timeout_ms,
            send_buffer,
            recv_buffer,
            mark,
            tos,
        })
}

fn tcp() -> impl Strategy<Value = TcpSnapshot> {
    (
        addr_pair(),
        any::<(u32, u32)>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<u16>(),
        proptest::option::of((0..=14u8, 0..=14u8)),
        any::<(bool, bool, u32)>(),
        any::<[u32; 5]>(),
        options(),
    )
        .prop_map(
            |((local, remote), (snd_seq, rcv_seq), sq, unsent, rq, mss, ws, (sack, ts, tsv), w, o)| {
                let send_unsent = if sq.is_empty() { 0 } else { unsent % (sq.len() as u32 + 1) };
                TcpSnapshot {
                    local,
                    remote,
                    snd_seq,
                    rcv_seq,
                    send_queue: sq,
                    send_unsent,
                    recv_queue: rq,
                    mss,
                    window_scale: ws.map(|(snd, rcv)| WindowScale { snd, rcv }),
                    sack_ok: sack,
                    timestamps_ok: ts,
                    timestamp: tsv,
                    window: RepairWindow {
                        snd_wl1: w[0],
                        snd_wnd: w[1],
                        max_window: w[2],
                        rcv_wnd: w[3],
                        rcv_wup: w[4],
                    },
                    options: o,
                }
            },
        )
}

fn app() -> impl Strategy<Value = SessionState> {
    (
        "[a-zA-Z0-9_-]{0,16}",
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..100),
        proptest::option::of(any::<[u8; 5]>()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        0..4u8,
        proptest::collection::vec(any::<u8>(), 0..100),
    )
        .prop_map(|(bank_id, session_id, partial_frame, last_tpdu, last_header, s, matching)| {
            SessionState {
                bank_id,
                session_id,
                partial_frame,
                last_tpdu,
                last_header,
                sign_on: [
                    SignOnState::Unknown,
                    SignOnState::SignedOn,
                    SignOnState::SignedOff,
                    SignOnState::EchoFailing,
                ][usize::from(s)],
                matching,
            }
        })
}

fn session() -> impl Strategy<Value = SessionSnapshot> {
    (tcp(), app()).prop_map(|(tcp, app)| SessionSnapshot { tcp, app })
}

fn batch() -> impl Strategy<Value = SnapshotBatch> {
    ("[a-z0-9-]{0,12}", any::<u64>(), proptest::collection::vec(session(), 0..5)).prop_map(
        |(appliance_id, taken_at_micros, sessions)| SnapshotBatch { appliance_id, taken_at_micros, sessions },
    )
}

fn sample() -> SessionSnapshot {
    SessionSnapshot {
        tcp: TcpSnapshot {
            local: "10.0.0.10:8583".parse().unwrap(),
            remote: "10.0.0.1:40000".parse().unwrap(),
            snd_seq: 1000,
            rcv_seq: 5000,
            send_queue: b"abcdef".to_vec(),
            send_unsent: 2,
            recv_queue: b"xyz".to_vec(),
            mss: 1460,
            window_scale: Some(WindowScale { snd: 7, rcv: 7 }),
            sack_ok: true,
            timestamps_ok: true,
            timestamp: 123_457,
            window: RepairWindow {
                snd_wl1: 4990,
                snd_wnd: 64000,
                max_window: 64000,
                rcv_wnd: 65535,
                rcv_wup: 4990,
            },
            options: SocketOptions { nodelay: true, ..SocketOptions::default() },
        },
        app: SessionState {
            bank_id: "bank-a".into(),
            session_id: 7,
            partial_frame: vec![0, 0x40, 0x30],
            last_tpdu: Some([0x60, 0, 1, 0, 2]),
            last_header: None,
            sign_on: SignOnState::SignedOn,
            matching: vec![1, 2, 3],
        },
    }
}

proptest! {
    #[test]
    fn snapshot_round_trips(s in session()) {
        let bytes = s.encode().unwrap();
        let back = SessionSnapshot::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn snapshot_batch_round_trips(b in batch()) {
        let bytes = b.encode().unwrap();
        let back = SnapshotBatch::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    /// Every strict prefix of a valid encoding is refused as truncated.
    #[test]
    fn snapshot_prefixes_are_truncated(b in batch(), cut in any::<prop::sample::Index>()) {
        let bytes = b.encode().unwrap();
        let n = cut.index(bytes.len());
        match SnapshotBatch::decode(&bytes[..n]) {
            Err(SnapshotError::Truncated { .. } | SnapshotError::BadMagic(_)) => {}
            other => prop_assert!(false, "prefix of {} bytes gave {:?}", n, other),
        }
    }

    /// Garbage never panics, whatever it decodes to.
    #[test]
    fn snapshot_garbage_never_panics(mut g in proptest::collection::vec(any::<u8>(), 0..400), header in any::<bool>()) {
        if header && g.len() >= 7 {
            g[..4].copy_from_slice(&MAGIC);
            g[4..6].copy_from_slice(&VERSION.to_be_bytes());
        }
        let _ = SessionSnapshot::decode(&g);
        let _ = SnapshotBatch::decode(&g);
    }

    /// Flipping any byte of a valid snapshot gives either an error or a snapshot
    /// that itself round-trips.
    #[test]
    fn snapshot_corruption_is_caught_or_consistent(s in session(), at in any::<prop::sample::Index>(), x in 1..=255u8) {
        let mut bytes = s.encode().unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        if let Ok(d) = SessionSnapshot::decode(&bytes) {
            prop_assert_eq!(SessionSnapshot::decode(&d.encode().unwrap()).unwrap(), d);
        }
    }
}

#[test]
fn snapshot_newer_version_is_refused() {
    let mut bytes = sample().encode().unwrap();
    bytes[4..6].copy_from_slice(&(VERSION + 1).to_be_bytes());
    let err = SessionSnapshot::decode(&bytes).unwrap_err();
    assert_eq!(err, SnapshotError::UnsupportedVersion { found: VERSION + 1, supported: VERSION });
    assert!(err.to_string().contains("upgrade"), "{err}");
}

#[test]
fn snapshot_bad_magic_and_kind() {
    assert!(matches!(SessionSnapshot::decode(b"HTTP/1.1 200"), Err(SnapshotError::BadMagic(_))));
    assert!(matches!(SessionSnapshot::decode(b""), Err(SnapshotError::BadMagic(_))));
    let bytes = sample().encode().unwrap();
    assert_eq!(
        SnapshotBatch::decode(&bytes).unwrap_err(),
        SnapshotError::WrongKind { expected: Kind::Batch, found: Kind::Session as u8 }
    );
}

#[test]
fn snapshot_truncation_names_the_field() {
    let bytes = sample().encode().unwrap();
    // magic 4, version 2, kind 1, local 7, remote 7, snd_seq 4, rcv_seq 4,
    // send_queue length 4: cut two bytes into the send queue's data.
    let cut = 4 + 2 + 1 + 7 + 7 + 4 + 4 + 4 + 2;
    let err = SessionSnapshot::decode(&bytes[..cut]).unwrap_err();
    assert_eq!(err, SnapshotError::Truncated { field: "tcp.send_queue", needed: 6, available: 2 });
    assert!(err.to_string().contains("tcp.send_queue"));
}

#[test]
fn snapshot_huge_length_is_refused_without_allocating() {
    let mut bytes = sample().encode().unwrap();
    let at = 4 + 2 + 1 + 7 + 7 + 4 + 4;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        SessionSnapshot::decode(&bytes),
        Err(SnapshotError::Truncated { field: "tcp.send_queue", needed: 0xFFFF_FFFF, .. })
    ));
    let b = SnapshotBatch { appliance_id: "a".into(), taken_at_micros: 1, sessions: vec![] };
    let mut bytes = b.encode().unwrap();
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        SnapshotBatch::decode(&bytes),
        Err(SnapshotError::Truncated { field: "batch.sessions", .. })
    ));
}

#[test]
fn snapshot_invalid_values_are_named() {
    let mut s = sample();
    s.tcp.send_unsent = 7;
    assert_eq!(
        s.encode().unwrap_err(),
        SnapshotError::Invalid { field: "tcp.send_unsent", reason: "larger than the send queue" }
    );
    let mut s = sample();
    s.tcp.window_scale = Some(WindowScale { snd: 15, rcv: 0 });
    assert!(matches!(s.encode(), Err(SnapshotError::Invalid { field: "tcp.window_scale", .. })));
    let mut s = sample();
    s.tcp.remote = "[::1]:1".parse().unwrap();
    assert!(matches!(s.encode(), Err(SnapshotError::Invalid { field: "tcp.remote", .. })));

    // A boolean byte of 2 (sack_ok sits after mss and the window scale).
    let bytes = sample().encode().unwrap();
    let sack_at = 4 + 2 + 1 + 7 + 7 + 4 + 4 + (4 + 6) + 4 + (4 + 3) + 2 + 3;
    assert_eq!(bytes[sack_at], 1);
    let mut bad = bytes.clone();
    bad[sack_at] = 2;
    assert!(matches!(
        SessionSnapshot::decode(&bad),
        Err(SnapshotError::Invalid { field: "tcp.sack_ok", .. })
    ));

    let mut bad = bytes.clone();
    bad.push(0);
    assert_eq!(SessionSnapshot::decode(&bad).unwrap_err(), SnapshotError::TrailingBytes { count: 1 });
}

#[test]
fn snapshot_queue_sequence_helpers() {
    let s = sample().tcp;
    assert_eq!(s.send_queue_seq(), 994);
    assert_eq!(s.recv_queue_seq(), 4997);
    assert_eq!(s.send_unacked(), 4);
    let mut w = s.clone();
    w.snd_seq = 3;
    assert_eq!(w.send_queue_seq(), 3u32.wrapping_sub(6));
}
