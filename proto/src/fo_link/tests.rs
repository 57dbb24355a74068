use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

/// Hex to bytes; spaces are for readability (one field per group).
fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

fn hello() -> FoMessage {
    FoMessage::Hello(Hello {
        node_id: "A".into(),
        role: PeerRole::Node,
        min_version: 1,
        max_version: 1,
        software: "fo-sim 0.1".into(),
    })
}

fn data() -> FoMessage {
    FoMessage::Data(Data {
        bank_id: "BK1".into(),
        session_id: 7,
        direction: Direction::ToNode,
        correlation_id: 0x0102_0304_0506_0708,
        flags: DataFlags::LATE | DataFlags::SYNTHETIC,
        message: Bytes::from_static(b"0800\x82\x20"),
    })
}

fn session_up() -> FoMessage {
    FoMessage::SessionUp(SessionUp {
        session_id: 7,
        bank_id: "BK1".into(),
        peer: "10.0.0.5:40001".into(),
        local: "10.0.0.1:5000".into(),
        opened_at_micros: 1_700_000_000_000_000,
    })
}

fn close_session() -> FoMessage {
    FoMessage::CloseSession(CloseSession { session_id: 7, reason: "bad message".into() })
}

/// One message of every kind, in type byte order.
fn samples() -> Vec<FoMessage> {
    let params = vec![("max_tps".to_owned(), "250".to_owned()), ("mode".to_owned(), "normal".to_owned())];
    vec![
        hello(),
        FoMessage::Heartbeat(Heartbeat { seq: 1, sent_at_micros: 2 }),
        FoMessage::HeartbeatAck(HeartbeatAck { seq: 1, sent_at_micros: 2 }),
        data(),
        FoMessage::BankState(BankState {
            bank_id: "B".into(),
            sessions: vec![
                SessionState {
                    session_id: 1,
                    transport: TransportState::Up,
                    application: AppState::SignedOn,
                },
                SessionState {
                    session_id: 2,
                    transport: TransportState::Down,
                    application: AppState::Unknown,
                },
            ],
        }),
        FoMessage::SyncBegin(SyncBegin {
            cmd_id: 10,
            bank_id: "B".into(),
            switch_id: 3,
            role: SyncRole::Source,
        }),
        FoMessage::Context(Context {
            cmd_id: 10,
            bank_id: "B".into(),
            switch_id: 3,
            correlation_id: 99,
            session_id: 1,
            direction: Direction::ToBank,
            matching_key: "010|11=000123|41=TERM0001".into(),
            received_at_micros: 1_700_000_000_000_000,
            deadline_micros: 1_700_000_030_000_000,
            message: Bytes::from_static(b"0100\x00\x00"),
        }),
        FoMessage::SyncEnd(SyncEnd {
            cmd_id: 9,
            bank_id: "B".into(),
            switch_id: 3,
            context_count: 2,
            params: vec![("k".into(), "v".into())],
        }),
        FoMessage::Activate(Activate { cmd_id: 12, bank_id: "B".into(), switch_id: 3, params }),
        FoMessage::Deactivate(Deactivate { cmd_id: 11, bank_id: "B".into(), switch_id: 3 }),
        FoMessage::Ack(Ack { cmd_id: 11, bank_id: "B".into(), switch_id: 3 }),
        FoMessage::Nack(Nack {
            cmd_id: 9,
            bank_id: "B".into(),
            switch_id: 3,
            reason: NackReason::Busy,
            detail: "x".into(),
        }),
        FoMessage::Channel(Channel { channel: LinkChannel::Control }),
        session_up(),
        FoMessage::SessionDown(SessionDown {
            session_id: 7,
            bank_id: "BK1".into(),
            reason: SessionDownReason::PeerReset,
            detail: "x".into(),
        }),
        FoMessage::InventoryEnd(InventoryEnd { sessions: 2 }),
        close_session(),
        FoMessage::SessionPause(SessionPause { session_id: 7 }),
        FoMessage::SessionResume(SessionResume { session_id: 7 }),
        FoMessage::Handover(Handover {
            switch_id: 9,
            op: HandoverOp::Snapshots,
            count: 2,
            detail: "x".into(),
            payload: Bytes::from_static(b"PSNP"),
        }),
    ]
}

fn round_trip(m: &FoMessage) -> FoMessage {
    let wire = m.to_vec().unwrap();
    assert_eq!(check(&wire, DEFAULT_MAX_FRAME), Ok(Some(wire.len())), "{m:?}");
    assert_eq!(wire[4], VERSION);
    assert_eq!(wire[5], m.kind().type_byte());
    decode(Bytes::from(wire)).unwrap()
}

#[test]
fn every_kind_round_trips() {
    let samples = samples();
    let kinds: Vec<FoKind> = samples.iter().map(FoMessage::kind).collect();
    assert_eq!(kinds, FoKind::ALL);
    for m in &samples {
        assert_eq!(&round_trip(m), m);
    }
}

#[test]
fn golden_hello() {
    let wire = h("00000014 01 01 \
                  0001 41 \
                  02 \
                  01 01 \
                  000a 666f2d73696d20302e31");
    assert_eq!(hello().to_vec().unwrap(), wire);
    assert_eq!(decode(Bytes::from(wire)).unwrap(), hello());
}

#[test]
fn golden_data() {
    let wire = h("00000024 01 10 \
                  0003 424b31 \
                  0000000000000007 \
                  01 \
                  0102030405060708 \
                  0005 \
                  00000006 303830308220");
    assert_eq!(data().to_vec().unwrap(), wire);
    assert_eq!(decode(Bytes::from(wire)).unwrap(), data());
}

#[test]
fn golden_session_up() {
    let wire = h("00000036 01 41 \
                  0000000000000007 \
                  0003 424b31 \
                  000e 31302e302e302e353a3430303031 \
                  000d 31302e302e302e313a35303030 \
                  00060a24181e4000");
    assert_eq!(session_up().to_vec().unwrap(), wire);
    assert_eq!(decode(Bytes::from(wire)).unwrap(), session_up());
}

#[test]
fn golden_close_session() {
    let wire = h("00000017 01 44 \
                  0000000000000007 \
                  000b 626164206d657373616765");
    assert_eq!(close_session().to_vec().unwrap(), wire);
    assert_eq!(decode(Bytes::from(wire)).unwrap(), close_session());
}

#[test]
fn golden_others() {
    let samples = samples();
    let golden = [
        (1, "00000012 01 02 0000000000000001 0000000000000002"),
        (2, "00000012 01 03 0000000000000001 0000000000000002"),
        (4, "0000001b 01 11 0001 42 0002 0000000000000001 01 01 0000000000000002 00 00"),
        (5, "00000016 01 20 000000000000000a 0001 42 0000000000000003 01"),
        (7, "00000021 01 22 0000000000000009 0001 42 0000000000000003 00000002 0001 0001 6b 0001 76"),
        (9, "00000015 01 24 000000000000000b 0001 42 0000000000000003"),
        (10, "00000015 01 30 000000000000000b 0001 42 0000000000000003"),
        (11, "0000001a 01 31 0000000000000009 0001 42 0000000000000003 0004 0001 78"),
        (12, "00000003 01 40 02"),
        (14, "00000014 01 42 0000000000000007 0003 424b31 0002 0001 78"),
        (15, "00000006 01 43 00000002"),
        (17, "0000000a 01 45 0000000000000007"),
        (18, "0000000a 01 46 0000000000000007"),
    ];
    for (i, hex) in golden {
        assert_eq!(samples[i].to_vec().unwrap(), h(hex), "{:?}", samples[i].kind());
    }
}

#[test]
fn payloads_are_slices_of_the_frame() {
    let frame = Bytes::from(data().to_vec().unwrap());
    let range = frame.as_ptr_range();
    let FoMessage::Data(d) = decode(frame.clone()).unwrap() else { panic!() };
    assert!(range.contains(&d.message.as_ptr()));
    let context = samples().swap_remove(6);
    let frame = Bytes::from(context.to_vec().unwrap());
    let range = frame.as_ptr_range();
    let FoMessage::Context(c) = decode(frame.clone()).unwrap() else { panic!() };
    assert!(range.contains(&c.message.as_ptr()));
}

#[test]
fn debug_hides_iso_bytes() {
    let card = Bytes::from_static(b"0100\x40\x00\x00\x00\x00\x00\x00\x00164111111111111111");
    let FoMessage::Data(mut d) = data() else { panic!() };
    d.message = card.clone();
    let shown = format!("{:?}", FoMessage::Data(d));
    assert!(!shown.contains("4111") && !shown.contains("52, 49"), "{shown}");
    assert!(shown.contains("message: <30 bytes>"), "{shown}");
    assert!(shown.contains("DataFlags(LATE | SYNTHETIC)"), "{shown}");
    let FoMessage::Context(mut c) = samples().swap_remove(6) else { panic!() };
    c.message = card;
    let shown = format!("{c:?}");
    assert!(!shown.contains("4111") && shown.contains("message: <30 bytes>"), "{shown}");
}

#[test]
fn kinds_and_codes() {
    for kind in FoKind::ALL {
        assert_eq!(FoKind::from_type_byte(kind.type_byte()), Some(kind));
    }
    assert_eq!((0..=255).filter_map(FoKind::from_type_byte).count(), FoKind::ALL.len());
    assert_eq!(FoKind::HeartbeatAck.to_string(), "HEARTBEAT_ACK");
    for code in 0..=u16::MAX {
        assert_eq!(NackReason::from_code(code).code(), code);
    }
    assert_eq!(NackReason::from_code(6), NackReason::Internal);
    assert_eq!(NackReason::from_code(0), NackReason::Other(0));
    assert_eq!(DataFlags::from_bits(0x0008), None);
    let mut f = DataFlags::empty();
    f.insert(DataFlags::UNMATCHED);
    assert!(f.contains(DataFlags::UNMATCHED) && !f.contains(DataFlags::LATE));
    f.remove(DataFlags::UNMATCHED);
    assert!(f.is_empty());
    assert_eq!(samples()[6].cmd_id(), Some(10));
    assert_eq!(samples()[3].bank_id(), Some("BK1"));
    assert_eq!(samples()[0].bank_id(), None);
}

#[test]
fn local_link_kinds_and_codes() {
    // Exactly the 0x40-0x4F kinds are local-link only, and they are the last of ALL.
    let local: Vec<FoKind> = FoKind::ALL.into_iter().filter(|k| k.is_local_link_only()).collect();
    assert_eq!(local, FoKind::ALL[12..]);
    assert!(local.iter().all(|k| (0x40..=0x4f).contains(&k.type_byte())));
    assert_eq!(FoKind::SessionUp.to_string(), "SESSION_UP");
    assert_eq!(FoKind::InventoryEnd.name(), "INVENTORY_END");
    assert_eq!(PeerRole::from_code(3), Some(PeerRole::Edge));
    assert_eq!(PeerRole::Edge.code(), 3);
    assert_eq!(LinkChannel::from_code(1), Some(LinkChannel::Data));
    assert_eq!(LinkChannel::from_code(2), Some(LinkChannel::Control));
    assert_eq!(LinkChannel::from_code(0), None);
    assert_eq!(LinkChannel::from_code(3), None);
    for code in 0..=u16::MAX {
        assert_eq!(SessionDownReason::from_code(code).code(), code);
    }
    assert_eq!(SessionDownReason::from_code(5), SessionDownReason::ClosedByController);
    assert_eq!(SessionDownReason::from_code(7), SessionDownReason::Shutdown);
    assert_eq!(SessionDownReason::from_code(0), SessionDownReason::Other(0));
    assert_eq!(SessionDownReason::from_code(8), SessionDownReason::HandedOver);
    assert_eq!(SessionDownReason::from_code(9), SessionDownReason::Other(9));
    for code in 0..=u8::MAX {
        assert_eq!(
            HandoverOp::from_code(code).map(HandoverOp::code),
            (1..=17).contains(&code).then_some(code)
        );
    }
    // Accessors: SESSION_UP/DOWN name their bank; none of the new messages is a command.
    let samples = samples();
    let banks: Vec<Option<&str>> = samples[12..].iter().map(FoMessage::bank_id).collect();
    assert_eq!(banks, [None, Some("BK1"), Some("BK1"), None, None, None, None, None]);
    assert!(samples[12..].iter().all(|m| m.cmd_id().is_none()));
    let sessions: Vec<Option<u64>> = samples.iter().map(FoMessage::session_id).collect();
    let mut expected = vec![None; 20];
    for i in [3, 6, 13, 14, 16, 17, 18] {
        expected[i] = Some(if i == 6 { 1 } else { 7 });
    }
    assert_eq!(sessions, expected);
}

#[test]
fn version_negotiation() {
    let hello = |min_version, max_version| Hello {
        node_id: "x".into(),
        role: PeerRole::Node,
        min_version,
        max_version,
        software: String::new(),
    };
    assert_eq!(negotiate_version(&hello(1, 1), &hello(1, 1)), Some(1));
    assert_eq!(negotiate_version(&hello(1, 3), &hello(2, 5)), Some(3));
    assert_eq!(negotiate_version(&hello(1, 1), &hello(2, 2)), None);
    assert_eq!(negotiate_version(&hello(1, 3), &hello(3, 2)), None);
}

/// Feeds `chunks` to a decoder in turn, collecting every message.
fn stream(chunks: impl IntoIterator<Item = Vec<u8>>) -> Vec<FoMessage> {
    let mut decoder = FoLinkDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        while let Some(m) = decoder.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn streaming_one_byte_at_a_time() {
    let samples = samples();
    let mut wire = Vec::new();
    for m in &samples {
        m.encode(&mut wire).unwrap();
    }
    assert_eq!(stream(wire.iter().map(|&b| vec![b])), samples);
    assert_eq!(stream([wire]), samples);
}

#[test]
fn decoder_reserves_room_and_refuses_oversize() {
    let mut decoder = FoLinkDecoder::new(100);
    let mut buf = BytesMut::from(&h("00000064 01 10")[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.capacity() >= 104);
    let mut buf = BytesMut::from(&h("00000065")[..]);
    assert_eq!(decoder.decode(&mut buf), Err(FoLinkError::TooLarge { len: 101, max: 100 }));
}

#[test]
fn header_errors() {
    assert_eq!(check(&[], 10), Ok(None));
    assert_eq!(check(&h("000000"), 10), Ok(None));
    assert_eq!(check(&h("0000000a"), 10), Ok(None));
    assert_eq!(check(&h("0000000b"), 10), Err(FoLinkError::TooLarge { len: 11, max: 10 }));
    assert_eq!(
        check(&h("ffffffff"), DEFAULT_MAX_FRAME),
        Err(FoLinkError::TooLarge { len: 0xffff_ffff, max: DEFAULT_MAX_FRAME })
    );
    assert_eq!(check(&h("00000001"), 10), Err(FoLinkError::BadLength(1)));
    assert_eq!(check(&h("00000000"), 10), Err(FoLinkError::BadLength(0)));
    // Version and type are refused as soon as they arrive, before the body.
    assert_eq!(check(&h("00000009 02"), 10), Err(FoLinkError::UnsupportedVersion(2)));
    assert_eq!(check(&h("00000009 00"), 10), Err(FoLinkError::UnsupportedVersion(0)));
    assert_eq!(check(&h("00000009 01 7f"), 10), Err(FoLinkError::UnknownType(0x7f)));
    assert_eq!(check(&h("00000009 01 00"), 10), Err(FoLinkError::UnknownType(0)));
    assert_eq!(check(&h("00000009 01 02"), 10), Ok(None));
    assert_eq!(decode(Bytes::from(h("00000002 02 02"))), Err(FoLinkError::UnsupportedVersion(2)));
    assert_eq!(decode(Bytes::from(h("00000002 01 ff"))), Err(FoLinkError::UnknownType(0xff)));
}

#[test]
fn decode_wants_exactly_one_frame() {
    let mut wire = data().to_vec().unwrap();
    let len = wire.len();
    assert_eq!(
        decode(Bytes::copy_from_slice(&wire[..len - 1])),
        Err(FoLinkError::Incomplete { available: len - 1 })
    );
    assert_eq!(decode(Bytes::copy_from_slice(&wire[..3])), Err(FoLinkError::Incomplete { available: 3 }));
    wire.push(0);
    assert_eq!(decode(Bytes::from(wire)), Err(FoLinkError::ExtraBytes { frame: len, buffer: len + 1 }));
}

#[test]
fn body_errors() {
    let d = |hex: &str| decode(Bytes::from(h(hex)));
    // Truncated: a heartbeat one byte short, with a length that says so.
    assert_eq!(
        d("00000011 01 02 0000000000000001 00000000000002"),
        Err(FoLinkError::Truncated {
            kind: FoKind::Heartbeat,
            field: "sent_at_micros",
            needed: 8,
            available: 7
        })
    );
    // Truncated inside a string, and inside a string's length prefix.
    assert_eq!(
        d("00000005 01 01 0005 41"),
        Err(FoLinkError::Truncated { kind: FoKind::Hello, field: "node_id", needed: 5, available: 1 })
    );
    assert_eq!(
        d("00000003 01 01 00"),
        Err(FoLinkError::Truncated { kind: FoKind::Hello, field: "node_id", needed: 2, available: 1 })
    );
    // Truncated blob: DATA says 6 message bytes, has 2.
    assert_eq!(
        d("00000020 01 10 0003 424b31 0000000000000007 01 0102030405060708 0000 00000006 3038"),
        Err(FoLinkError::Truncated { kind: FoKind::Data, field: "message", needed: 6, available: 2 })
    );
    // Truncated list: two sessions announced, one sent.
    assert_eq!(
        d("00000011 01 11 0001 42 0002 0000000000000001 01 01"),
        Err(FoLinkError::Truncated {
            kind: FoKind::BankState,
            field: "sessions.session_id",
            needed: 8,
            available: 0
        })
    );
    // Empty body.
    assert_eq!(
        d("00000002 01 30"),
        Err(FoLinkError::Truncated { kind: FoKind::Ack, field: "cmd_id", needed: 8, available: 0 })
    );
    // Trailing bytes after a whole body.
    assert_eq!(
        d("00000013 01 02 0000000000000001 0000000000000002 00"),
        Err(FoLinkError::TrailingBytes { kind: FoKind::Heartbeat, count: 1 })
    );
    // Bad enum values.
    assert_eq!(
        d("00000024 01 10 0003 424b31 0000000000000007 03 0102030405060708 0000 00000006 303830308220"),
        Err(FoLinkError::BadEnum { kind: FoKind::Data, field: "direction", value: 3 })
    );
    assert_eq!(
        d("00000011 01 11 0001 42 0001 0000000000000001 02 01"),
        Err(FoLinkError::BadEnum { kind: FoKind::BankState, field: "sessions.transport", value: 2 })
    );
    assert_eq!(
        d("00000011 01 11 0001 42 0001 0000000000000001 01 04"),
        Err(FoLinkError::BadEnum { kind: FoKind::BankState, field: "sessions.application", value: 4 })
    );
    assert_eq!(
        d("0000000a 01 01 0001 41 00 01 01 0000"),
        Err(FoLinkError::BadEnum { kind: FoKind::Hello, field: "role", value: 0 })
    );
    assert_eq!(
        d("0000000a 01 01 0001 41 04 01 01 0000"),
        Err(FoLinkError::BadEnum { kind: FoKind::Hello, field: "role", value: 4 })
    );
    let FoMessage::Hello(edge) = d("0000000a 01 01 0001 41 03 01 01 0000").unwrap() else { panic!() };
    assert_eq!(edge.role, PeerRole::Edge);
    for value in [0, 3, 0xff] {
        assert_eq!(
            decode(Bytes::from(h(&format!("00000003 01 40 {value:02x}")))),
            Err(FoLinkError::BadEnum { kind: FoKind::Channel, field: "channel", value })
        );
    }
    assert_eq!(
        d("00000016 01 20 000000000000000a 0001 42 0000000000000003 03"),
        Err(FoLinkError::BadEnum { kind: FoKind::SyncBegin, field: "role", value: 3 })
    );
    // Undefined flag bits.
    assert_eq!(
        d("00000024 01 10 0003 424b31 0000000000000007 01 0102030405060708 8001 00000006 303830308220"),
        Err(FoLinkError::UnknownFlags { kind: FoKind::Data, field: "flags", bits: 0x8000 })
    );
    // Invalid UTF-8, in the first string and in a list item.
    assert_eq!(
        d("0000000a 01 01 0001 ff 02 01 01 0000"),
        Err(FoLinkError::InvalidUtf8 { kind: FoKind::Hello, field: "node_id" })
    );
    assert_eq!(
        d("0000001e 01 23 000000000000000c 0001 42 0000000000000003 0001 0001 6b 0002 c328"),
        Err(FoLinkError::InvalidUtf8 { kind: FoKind::Activate, field: "params.value" })
    );
    // An unknown NACK code is kept, not refused.
    let FoMessage::Nack(n) =
        d("0000001a 01 31 0000000000000009 0001 42 0000000000000003 03e7 0001 78").unwrap()
    else {
        panic!()
    };
    assert_eq!(n.reason, NackReason::Other(999));
    // Likewise an unknown SESSION_DOWN reason, and it re-encodes to the same bytes.
    let wire = "00000014 01 42 0000000000000007 0003 424b31 03e7 0001 78";
    let m = d(wire).unwrap();
    let FoMessage::SessionDown(down) = &m else { panic!() };
    assert_eq!(down.reason, SessionDownReason::Other(999));
    assert_eq!(m.to_vec().unwrap(), h(wire));
    // Local-link bodies are as strict as the others.
    assert_eq!(
        d("00000004 01 40 02 00"),
        Err(FoLinkError::TrailingBytes { kind: FoKind::Channel, count: 1 })
    );
    assert_eq!(
        d("00000002 01 40"),
        Err(FoLinkError::Truncated { kind: FoKind::Channel, field: "channel", needed: 1, available: 0 })
    );
    assert_eq!(
        d("00000005 01 43 000002"),
        Err(FoLinkError::Truncated {
            kind: FoKind::InventoryEnd,
            field: "sessions",
            needed: 4,
            available: 3
        })
    );
    assert_eq!(
        d("00000012 01 41 0000000000000007 0003 424b31 0001 ff"),
        Err(FoLinkError::InvalidUtf8 { kind: FoKind::SessionUp, field: "peer" })
    );
    assert_eq!(
        d("0000000e 01 44 0000000000000007 0003 4142"),
        Err(FoLinkError::Truncated { kind: FoKind::CloseSession, field: "reason", needed: 3, available: 2 })
    );
}

#[test]
fn errors_read_well() {
    let e = FoLinkError::Truncated { kind: FoKind::Data, field: "bank_id", needed: 5, available: 2 };
    assert_eq!(e.to_string(), "DATA.bank_id: truncated, needs 5 bytes, 2 left");
    assert_eq!(FoLinkError::UnknownType(0x7f).to_string(), "unknown FO link message type 0x7f");
}

#[test]
fn encode_refuses_what_the_wire_cannot_say() {
    let mut out = vec![0xAA];
    let long = FoMessage::Ack(Ack { cmd_id: 1, bank_id: "x".repeat(70_000), switch_id: 2 });
    assert_eq!(
        long.encode(&mut out),
        Err(FoLinkError::TooLong { kind: FoKind::Ack, field: "bank_id", len: 70_000, max: 65_535 })
    );
    assert_eq!(out, [0xAA]);
    let many = FoMessage::BankState(BankState {
        bank_id: "B".into(),
        sessions: vec![
            SessionState {
                session_id: 0,
                transport: TransportState::Up,
                application: AppState::Unknown
            };
            65_536
        ],
    });
    assert!(matches!(many.encode(&mut out), Err(FoLinkError::TooLong { field: "sessions", .. })));
    assert_eq!(out, [0xAA]);
    // The longest string the prefix can say is fine.
    let max = FoMessage::Ack(Ack { cmd_id: 1, bank_id: "x".repeat(65_535), switch_id: 2 });
    assert_eq!(round_trip(&max), max);
}

fn text() -> impl Strategy<Value = String> {
    any::<String>()
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((text(), text()), 0..4)
}

fn direction() -> impl Strategy<Value = Direction> {
    proptest::sample::select(Direction::ALL)
}

fn message() -> impl Strategy<Value = FoMessage> {
    use proptest::sample::select;
    let hello = (text(), select(PeerRole::ALL), any::<u8>(), any::<u8>(), text()).prop_map(
        |(node_id, role, min_version, max_version, software)| Hello {
            node_id,
            role,
            min_version,
            max_version,
            software,
        },
    );
    let data = (text(), any::<u64>(), direction(), any::<u64>(), 0..=DataFlags::ALL.bits(), blob()).prop_map(
        |(bank_id, session_id, direction, correlation_id, flags, message)| Data {
            bank_id,
            session_id,
            direction,
            correlation_id,
            flags: DataFlags::from_bits(flags).unwrap(),
            message,
        },
    );
    let session = (any::<u64>(), select(TransportState::ALL), select(AppState::ALL))
        .prop_map(|(session_id, transport, application)| SessionState { session_id, transport, application });
    let bank_state = (text(), proptest::collection::vec(session, 0..5))
        .prop_map(|(bank_id, sessions)| BankState { bank_id, sessions });
    let cmd = || (any::<u64>(), text(), any::<u64>());
    let context =
        (cmd(), any::<u64>(), any::<u64>(), direction(), text(), any::<u64>(), any::<u64>(), blob())
            .prop_map(
                |(
                    (cmd_id, bank_id, switch_id),
                    correlation_id,
                    session_id,
                    direction,
                    matching_key,
                    received_at_micros,
                    deadline_micros,
                    message,
                )| Context {
                    cmd_id,
                    bank_id,
                    switch_id,
                    correlation_id,
                    session_id,
                    direction,
                    matching_key,
                    received_at_micros,
                    deadline_micros,
                    message,
                },
            );
    let session_up = (any::<u64>(), text(), text(), text(), any::<u64>()).prop_map(
        |(session_id, bank_id, peer, local, opened_at_micros)| SessionUp {
            session_id,
            bank_id,
            peer,
            local,
            opened_at_micros,
        },
    );
    prop_oneof![
        hello.prop_map(FoMessage::Hello),
        (any::<u64>(), any::<u64>())
            .prop_map(|(seq, sent_at_micros)| FoMessage::Heartbeat(Heartbeat { seq, sent_at_micros })),
        (any::<u64>(), any::<u64>())
            .prop_map(|(seq, sent_at_micros)| FoMessage::HeartbeatAck(HeartbeatAck { seq, sent_at_micros })),
        data.prop_map(FoMessage::Data),
        bank_state.prop_map(FoMessage::BankState),
        (cmd(), select(SyncRole::ALL)).prop_map(|((cmd_id, bank_id, switch_id), role)| {
            FoMessage::SyncBegin(SyncBegin { cmd_id, bank_id, switch_id, role })
        }),
        context.prop_map(FoMessage::Context),
        (cmd(), any::<u32>(), params()).prop_map(|((cmd_id, bank_id, switch_id), context_count, params)| {
            FoMessage::SyncEnd(SyncEnd { cmd_id, bank_id, switch_id, context_count, params })
        }),
        (cmd(), params()).prop_map(|((cmd_id, bank_id, switch_id), params)| {
            FoMessage::Activate(Activate { cmd_id, bank_id, switch_id, params })
        }),
        cmd().prop_map(|(cmd_id, bank_id, switch_id)| {
            FoMessage::Deactivate(Deactivate { cmd_id, bank_id, switch_id })
        }),
        cmd().prop_map(|(cmd_id, bank_id, switch_id)| FoMessage::Ack(Ack { cmd_id, bank_id, switch_id })),
        (cmd(), any::<u16>(), text()).prop_map(|((cmd_id, bank_id, switch_id), reason, detail)| {
            FoMessage::Nack(Nack {
                cmd_id,
                bank_id,
                switch_id,
                reason: NackReason::from_code(reason),
                detail,
            })
        }),
        select(LinkChannel::ALL).prop_map(|channel| FoMessage::Channel(Channel { channel })),
        session_up.prop_map(FoMessage::SessionUp),
        (any::<u64>(), text(), any::<u16>(), text()).prop_map(|(session_id, bank_id, reason, detail)| {
            FoMessage::SessionDown(SessionDown {
                session_id,
                bank_id,
                reason: SessionDownReason::from_code(reason),
                detail,
            })
        }),
        any::<u32>().prop_map(|sessions| FoMessage::InventoryEnd(InventoryEnd { sessions })),
        (any::<u64>(), text())
            .prop_map(|(session_id, reason)| FoMessage::CloseSession(CloseSession { session_id, reason })),
        any::<u64>().prop_map(|session_id| FoMessage::SessionPause(SessionPause { session_id })),
        any::<u64>().prop_map(|session_id| FoMessage::SessionResume(SessionResume { session_id })),
        (any::<u64>(), 1u8..=17, any::<u32>(), text(), proptest::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(switch_id, op, count, detail, payload)| {
                FoMessage::Handover(Handover {
                    switch_id,
                    op: HandoverOp::from_code(op).expect("1..=17 are ops"),
                    count,
                    detail,
                    payload: Bytes::from(payload),
                })
            }),
    ]
}

/// Valid headers over arbitrary bodies: exercises every body reader on garbage.
fn frame_with_garbage_body() -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(FoKind::ALL.to_vec()), proptest::collection::vec(any::<u8>(), 0..80)).prop_map(
        |(kind, body)| {
            let mut frame = ((body.len() + 2) as u32).to_be_bytes().to_vec();
            frame.extend([VERSION, kind.type_byte()]);
            frame.extend(body);
            frame
        },
    )
}

proptest! {
    #[test]
    fn prop_round_trip(m in message()) {
        let wire = m.to_vec().unwrap();
        prop_assert_eq!(check(&wire, DEFAULT_MAX_FRAME), Ok(Some(wire.len())));
        prop_assert_eq!(decode(Bytes::from(wire)), Ok(m));
    }

    #[test]
    fn prop_streaming_in_any_chunks(ms in proptest::collection::vec(message(), 1..6), cut in 1usize..40) {
        let mut wire = Vec::new();
        for m in &ms {
            m.encode(&mut wire).unwrap();
        }
        prop_assert_eq!(stream(wire.chunks(cut).map(<[u8]>::to_vec)), ms);
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = check(&bytes, DEFAULT_MAX_FRAME);
        let _ = check(&bytes, 0);
        let _ = decode(Bytes::from(bytes.clone()));
        let _ = FoLinkDecoder::new(64).decode(&mut BytesMut::from(&bytes[..]));
    }

    #[test]
    fn prop_garbage_bodies_never_panic(frame in frame_with_garbage_body()) {
        prop_assert_eq!(check(&frame, DEFAULT_MAX_FRAME), Ok(Some(frame.len())));
        // Either an error or a message that encodes back to the same bytes.
        if let Ok(m) = decode(Bytes::from(frame.clone())) {
            prop_assert_eq!(m.to_vec().unwrap(), frame);
        }
    }

    #[test]
    fn prop_damaged_frames_never_panic(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let wire = m.to_vec().unwrap();
        let i = at.index(wire.len());
        // Cut short: never a whole frame.
        prop_assert_eq!(check(&wire[..i], DEFAULT_MAX_FRAME), Ok(None));
        prop_assert!(decode(Bytes::copy_from_slice(&wire[..i])).is_err());
        // One byte changed: anything but a panic.
        let mut damaged = wire.clone();
        damaged[i] = byte;
        let _ = check(&damaged, DEFAULT_MAX_FRAME);
        let _ = decode(Bytes::from(damaged));
    }
}
