//! The FO node simulator over real loopback TCP, the test playing `mups` with
//! `proto::fo_link`. No assertion depends on timing: waits are bounded (and
//! generous), and ordering checks use delays far longer than a loopback round trip.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use proto::fo_link::{
    self, Activate, Context, Data, DataFlags, Deactivate, Direction, FoLinkDecoder, FoMessage, Heartbeat,
    Hello, NackReason, PeerRole, SyncBegin, SyncEnd, SyncRole,
};
use proto::iso8583::{BUILTIN_LAYOUTS, Layout, Message};
use sim::fo_node::{
    self, BankConfig, CommandKind, FoNodeConfig, FoNodeHandle, OriginKind, OriginateConfig, Stats, control,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait; only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

/// The test's end of a link: a minimal `mups`.
struct Mups {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FoLinkDecoder,
}

fn controller_hello(min: u8, max: u8) -> Hello {
    Hello {
        node_id: "mups-test".into(),
        role: PeerRole::Controller,
        min_version: min,
        max_version: max,
        software: "test".into(),
    }
}

impl Mups {
    /// Connects without saying anything.
    async fn raw(addr: std::net::SocketAddr) -> Self {
        let stream =
            tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.expect("connect timed out").unwrap();
        Self { stream, buf: BytesMut::new(), decoder: FoLinkDecoder::default() }
    }

    /// Connects and exchanges `HELLO`s; returns the node's.
    async fn connect_with(addr: std::net::SocketAddr, hello: Hello) -> (Self, Hello) {
        let mut m = Self::raw(addr).await;
        m.send(hello).await;
        match m.recv().await {
            Some(FoMessage::Hello(h)) => (m, h),
            other => panic!("expected HELLO, got {other:?}"),
        }
    }

    async fn connect(node: &FoNodeHandle) -> Self {
        Self::connect_with(node.local_addr(), controller_hello(1, 1)).await.0
    }

    async fn send(&mut self, msg: impl Into<FoMessage>) {
        self.stream.write_all(&msg.into().to_vec().unwrap()).await.unwrap();
    }

    /// The next message, or `None` once the node has closed the link.
    async fn recv(&mut self) -> Option<FoMessage> {
        let read = async {
            loop {
                if let Some(m) = self.decoder.decode(&mut self.buf).unwrap() {
                    return Some(m);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(WAIT, read).await.expect("nothing received from the node in time")
    }

    async fn expect(&mut self) -> FoMessage {
        self.recv().await.expect("the node closed the link")
    }

    async fn expect_data(&mut self) -> Data {
        match self.expect().await {
            FoMessage::Data(d) => d,
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    async fn expect_closed(&mut self) {
        if let Some(m) = self.recv().await {
            panic!("expected the link to close, got {m:?}");
        }
    }

    /// Sends a bank's message to the node.
    async fn bank_sends(&mut self, bank: &str, session_id: u64, correlation_id: u64, message: Vec<u8>) {
        self.send(Data {
            bank_id: bank.into(),
            session_id,
            direction: Direction::ToNode,
            correlation_id,
            flags: DataFlags::empty(),
            message: Bytes::from(message),
        })
        .await;
    }

    async fn heartbeat(&mut self, seq: u64) {
        self.send(Heartbeat { seq, sent_at_micros: 1_000 + seq }).await;
    }
}

/// Polls the node's counters until `done` holds (bounded by [`WAIT`]).
async fn wait_for(node: &FoNodeHandle, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let give_up = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = node.stats();
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting for {what}: {stats:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn layout(name: &str) -> &'static Layout {
    Layout::builtin(name).unwrap()
}

/// A typical request of `mti`: the fields a response echoes, plus DE70 for
/// network management and DE90 for reversals.
fn request(l: &Layout, mti: &str, pan: &str, amount: &str, stan: &str) -> Vec<u8> {
    let mut fields = vec![
        (2, pan),
        (3, "000000"),
        (4, amount),
        (7, "0612153000"),
        (11, stan),
        (12, "153000"),
        (13, "0612"),
        (32, "12345"),
        (37, "416315000123"),
        (41, "TERM0001"),
        (42, "MERCHANT0000001"),
        (49, "978"),
    ];
    if mti.starts_with("08") {
        fields = vec![(7, "0612153000"), (11, stan), (70, "301")];
    }
    let original = format!("0100{stan}0612153000{}", "0".repeat(22));
    if mti.starts_with("04") {
        fields.push((90, &original));
    }
    l.encode_to_vec(mti, fields).unwrap()
}

fn auth(l: &Layout, pan: &str, stan: &str) -> Vec<u8> {
    request(l, "0100", pan, "000000001000", stan)
}

fn config(banks: &[(&str, &str)]) -> FoNodeConfig {
    let mut cfg = FoNodeConfig::default();
    for (bank, layout) in banks {
        cfg.banks.insert((*bank).into(), BankConfig::new(layout));
    }
    cfg
}

async fn start(cfg: FoNodeConfig) -> FoNodeHandle {
    fo_node::start(cfg).await.unwrap()
}

#[tokio::test]
async fn hello_exchange_and_version_negotiation() {
    let node = start(config(&[("bank-1", "iso87-ascii")])).await;
    let ours = controller_hello(1, 3);
    let (mut mups, theirs) = Mups::connect_with(node.local_addr(), ours.clone()).await;
    assert_eq!(theirs.node_id, "A");
    assert_eq!(theirs.role, PeerRole::Node);
    assert_eq!((theirs.min_version, theirs.max_version), (fo_link::MIN_VERSION, fo_link::MAX_VERSION));
    assert!(theirs.software.starts_with("fo-sim "), "{}", theirs.software);
    assert_eq!(fo_link::negotiate_version(&ours, &theirs), Some(fo_link::VERSION));
    mups.heartbeat(1).await;
    assert!(matches!(mups.expect().await, FoMessage::HeartbeatAck(_)));
    let stats = wait_for(&node, "link up", |s| s.links_open == 1).await;
    assert_eq!((stats.hello_sent, stats.hello_received), (1, 1));
    assert_eq!(node.links()[0].controller, "mups-test");

    // No common version: the node says HELLO, then closes.
    let (mut newer, _) = Mups::connect_with(node.local_addr(), controller_hello(2, 3)).await;
    newer.expect_closed().await;
    // A first message that is not HELLO.
    let mut rude = Mups::raw(node.local_addr()).await;
    rude.heartbeat(1).await;
    assert!(matches!(rude.expect().await, FoMessage::Hello(_)));
    rude.expect_closed().await;
    // A peer that claims to be a node.
    let impostor = Hello { role: PeerRole::Node, ..controller_hello(1, 1) };
    let (mut impostor, _) = Mups::connect_with(node.local_addr(), impostor).await;
    impostor.expect_closed().await;

    let stats = wait_for(&node, "three failed handshakes", |s| s.handshake_failures == 3).await;
    assert_eq!(stats.links_open, 1);
    assert_eq!(stats.links_accepted, 4);

    // A node offering only a version we do not share refuses too.
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.versions = [2, 2];
    let v2 = start(cfg).await;
    let (mut m, theirs) = Mups::connect_with(v2.local_addr(), controller_hello(1, 1)).await;
    assert_eq!((theirs.min_version, theirs.max_version), (2, 2));
    m.expect_closed().await;
    wait_for(&v2, "refused handshake", |s| s.handshake_failures == 1).await;
}

#[tokio::test]
async fn heartbeats_are_acked_with_the_same_seq_and_timestamp() {
    let mut cfg = config(&[]);
    cfg.heartbeat_interval_ms = Some(20);
    let node = start(cfg).await;
    let mut mups = Mups::connect(&node).await;
    mups.send(Heartbeat { seq: 41, sent_at_micros: 123_456 }).await;
    mups.send(Heartbeat { seq: 42, sent_at_micros: 654_321 }).await;
    let mut acks = Vec::new();
    let mut node_heartbeats = 0;
    while acks.len() < 2 || node_heartbeats < 2 {
        match mups.expect().await {
            FoMessage::HeartbeatAck(a) => acks.push((a.seq, a.sent_at_micros)),
            // The node's own heartbeats: answer them as mups does.
            FoMessage::Heartbeat(hb) => {
                node_heartbeats += 1;
                assert_eq!(hb.seq, node_heartbeats);
                mups.send(hb.ack()).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, [(41, 123_456), (42, 654_321)]);
    let stats = wait_for(&node, "acks of our heartbeats", |s| s.heartbeat_acks_received >= 2).await;
    assert_eq!((stats.heartbeats_received, stats.heartbeat_acks_sent), (2, 2));
    assert!(stats.heartbeats_sent >= 2);
}

#[tokio::test]
async fn every_layout_gets_the_right_responses() {
    let banks: Vec<(String, &str)> = BUILTIN_LAYOUTS.iter().map(|l| (format!("bank-{l}"), *l)).collect();
    let bank_refs: Vec<(&str, &str)> = banks.iter().map(|(b, l)| (b.as_str(), *l)).collect();
    let node = start(config(&bank_refs)).await;
    let mut mups = Mups::connect(&node).await;
    let cases = [
        ("0100", "0110"),
        ("0200", "0210"),
        ("0400", "0410"),
        ("0420", "0430"),
        ("0421", "0430"),
        ("0120", "0130"),
        ("0220", "0230"),
        ("0800", "0810"),
    ];
    let mut corr = 0;
    for (bank, name) in &banks {
        let l = layout(name);
        for (mti, resp_mti) in cases {
            corr += 1;
            let req_bytes = request(l, mti, "4761739001010010", "000000012345", &format!("{corr:06}"));
            mups.bank_sends(bank, 7, corr, req_bytes.clone()).await;
            let d = mups.expect_data().await;
            assert_eq!(
                (d.bank_id.as_str(), d.session_id, d.direction, d.correlation_id, d.flags),
                (bank.as_str(), 7, Direction::ToBank, corr, DataFlags::empty()),
                "{name} {mti}"
            );
            let req = Message::parse(l, &req_bytes).unwrap();
            let resp = Message::parse(l, &d.message).unwrap();
            assert_eq!(resp.mti().as_str(), resp_mti, "{name} {mti}");
            let mut echoed = vec![2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49];
            echoed.extend([70, 90]);
            for id in echoed {
                match req.field(id) {
                    Some(f) => {
                        assert_eq!(resp.field(id).map(|r| r.wire), Some(f.wire), "{name} {mti} DE{id}")
                    }
                    None => assert!(!resp.has(id), "{name} {mti} DE{id} not in the request"),
                }
            }
            assert_eq!(resp.value(39).unwrap().unwrap(), "00", "{name} {mti}");
            let approval_with_auth_id = matches!(&mti[..2], "01" | "02");
            assert_eq!(resp.has(38), approval_with_auth_id, "{name} {mti} DE38");
        }
        // A notification gets nothing: the next response is the echo's.
        let l = layout(name);
        mups.bank_sends(bank, 7, 9000, request(l, "0140", "4761739001010010", "000000000100", "009000"))
            .await;
        mups.bank_sends(bank, 7, 9001, request(l, "0800", "", "", "009001")).await;
        assert_eq!(mups.expect_data().await.correlation_id, 9001);
    }
    let stats = node.stats();
    let per_layout = cases.len() as u64;
    assert_eq!(stats.responses_sent, 4 * (per_layout + 1));
    assert_eq!(stats.notifications, 4);
    assert_eq!(stats.received_by_mti["0100"], 4);
    assert_eq!(stats.received_by_mti["0800"], 8);
    assert_eq!(stats.responses_by_code["00"], stats.responses_sent);
    assert_eq!(stats.data_while_inactive, 0);
}

#[tokio::test]
async fn rule_declines_by_pan_prefix() {
    let mut cfg = config(&[("bank-1", "iso87-bcd")]);
    cfg.rules.push("name=stolen,pan=400000,code=43".parse().unwrap());
    let node = start(cfg).await;
    let l = layout("iso87-bcd");
    let mut mups = Mups::connect(&node).await;
    for (corr, pan, code) in
        [(1, "4000001234567899", "43"), (2, "4000011234567899", "00"), (3, "4000009999999999", "43")]
    {
        mups.bank_sends("bank-1", 1, corr, auth(l, pan, "000001")).await;
        let d = mups.expect_data().await;
        let resp = Message::parse(l, &d.message).unwrap();
        assert_eq!((d.correlation_id, resp.value(39).unwrap().unwrap().as_str()), (corr, code));
        assert_eq!(resp.has(38), code == "00");
    }
    let stats = node.stats();
    assert_eq!(stats.rule_hits["stolen"], 2);
    assert_eq!((stats.responses_by_code["43"], stats.responses_by_code["00"]), (2, 1));
}

#[tokio::test]
async fn delayed_requests_are_in_flight_until_answered() {
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.rules.push("mti=0200,delay=3000".parse().unwrap());
    let node = start(cfg).await;
    let l = layout("iso87-ascii");
    let mut mups = Mups::connect(&node).await;
    mups.bank_sends("bank-1", 3, 1, request(l, "0200", "4761739001010010", "000000001000", "000321")).await;
    mups.bank_sends("bank-1", 3, 2, auth(l, "4761739001010010", "000322")).await;
    // The undelayed one overtakes the delayed one, which waits in flight meanwhile.
    assert_eq!(mups.expect_data().await.correlation_id, 2);
    let inflight = node.inflight();
    assert_eq!(inflight.len(), 1, "{inflight:?}");
    let e = &inflight[0];
    assert_eq!(
        (e.bank_id.as_str(), e.correlation_id, e.session_id, e.direction),
        ("bank-1", 1, 3, "to_node")
    );
    assert_eq!(e.matching_key, "020|11=000321|41=TERM0001");
    assert!(e.owned && e.deadline_micros > e.received_at_micros);
    let d = mups.expect_data().await;
    assert_eq!(d.correlation_id, 1);
    assert_eq!(Message::parse(l, &d.message).unwrap().mti().as_str(), "0210");
    let stats = node.stats();
    assert_eq!((stats.delayed, stats.inflight, stats.responses_sent), (1, 0, 2));
}

#[tokio::test]
async fn drop_rule_never_answers() {
    let mut cfg = config(&[("bank-1", "iso87-ebcdic")]);
    cfg.rules.push("pan=4999,drop".parse().unwrap());
    let node = start(cfg).await;
    let l = layout("iso87-ebcdic");
    let mut mups = Mups::connect(&node).await;
    mups.bank_sends("bank-1", 1, 1, auth(l, "4999001234567899", "000001")).await;
    mups.bank_sends("bank-1", 1, 2, request(l, "0800", "", "", "000002")).await;
    assert_eq!(mups.expect_data().await.correlation_id, 2);
    let stats = node.stats();
    assert_eq!((stats.dropped_by_rule, stats.responses_sent, stats.inflight), (1, 1, 0));
}

#[tokio::test]
async fn close_rule_closes_the_link_and_the_node_keeps_listening() {
    let mut cfg = config(&[("bank-1", "iso87-binary")]);
    cfg.rules.push("over=100000,close".parse().unwrap());
    let node = start(cfg).await;
    let l = layout("iso87-binary");
    let mut mups = Mups::connect(&node).await;
    mups.bank_sends("bank-1", 1, 1, request(l, "0100", "4761739001010010", "000000200000", "000001")).await;
    mups.expect_closed().await;
    wait_for(&node, "link closed", |s| s.closed_by_rule == 1 && s.links_open == 0).await;
    let mut again = Mups::connect(&node).await;
    again.bank_sends("bank-1", 1, 2, auth(l, "4761739001010010", "000002")).await;
    assert_eq!(again.expect_data().await.correlation_id, 2);
    // The handle closes links too (mups would reconnect).
    node.close_links();
    again.expect_closed().await;
    assert!(node.is_running());
}

#[tokio::test]
async fn a_silent_controller_is_dropped() {
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.controller_timeout_ms = Some(300);
    let node = start(cfg).await;
    let mut mups = Mups::connect(&node).await;
    mups.expect_closed().await;
    wait_for(&node, "controller timeout", |s| s.controller_timeouts == 1 && s.links_open == 0).await;
}

#[tokio::test]
async fn originates_at_a_rate_and_counts_answers_and_timeouts() {
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.originate.push(OriginateConfig {
        count: Some(6),
        timeout_ms: 2_000,
        ..OriginateConfig::new("bank-1", 50.0)
    });
    let node = start(cfg).await;
    let l = layout("iso87-ascii");
    let mut mups = Mups::connect(&node).await;
    let mut seen = BTreeSet::new();
    let mut stans = Vec::new();
    for i in 0..6 {
        let d = mups.expect_data().await;
        assert_eq!((d.bank_id.as_str(), d.session_id, d.direction), ("bank-1", 0, Direction::ToBank));
        assert!(d.correlation_id != 0 && seen.insert(d.correlation_id), "fresh correlation ids");
        let req = Message::parse(l, &d.message).unwrap();
        assert_eq!(req.mti().as_str(), "0100");
        stans.push(req.value(11).unwrap().unwrap());
        if i < 4 {
            let resp = sim::fo_node::respond::build_response(l, &req, "00", "123456").unwrap();
            mups.bank_sends("bank-1", 5, d.correlation_id, resp).await;
        }
    }
    assert_eq!(stans, ["000001", "000002", "000003", "000004", "000005", "000006"]);
    // A response to nothing the node sent.
    let stray = l.encode_to_vec("0110", [(11, "999999"), (39, "00"), (41, "TERM0001")]).unwrap();
    mups.bank_sends("bank-1", 5, 424_242, stray).await;
    let stats = wait_for(&node, "answers and timeouts", |s| {
        s.originated_answered == 4 && s.originated_timed_out == 2 && s.unmatched_responses == 1
    })
    .await;
    assert_eq!((stats.originated_sent, stats.originated_inflight), (6, 0));
}

#[tokio::test]
async fn the_pause_origination_hook_skips_scheduled_ticks_only() {
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.originate
        .push(OriginateConfig { echo_interval_ms: Some(20), ..OriginateConfig::new("bank-1", 200.0) });
    cfg.hooks.pause_origination = true;
    let node = start(cfg).await;
    let _mups = Mups::connect(&node).await;
    let s = wait_for(&node, "paused ticks", |s| s.originate_skipped >= 5).await;
    assert_eq!(s.originated_sent, 0, "nothing originated while paused");
    // A one-off origination still goes.
    node.originate_now("bank-1", OriginKind::Request).unwrap();
    assert_eq!(node.stats().originated_sent, 1);
    node.pause_origination(false);
    let s = wait_for(&node, "origination resumed", |s| s.originated_sent >= 5).await;
    let skipped = node.stats().originate_skipped;
    node.pause_origination(true);
    assert!(node.hooks().pause_origination);
    // Once one tick was skipped, no tick that began before the pause is still going.
    let sent = wait_for(&node, "a skipped tick", |s| s.originate_skipped > skipped).await.originated_sent;
    wait_for(&node, "paused again", |s| s.originate_skipped >= skipped + 6).await;
    assert_eq!(node.stats().originated_sent, sent, "nothing originated after the pause ({s:?})");
}

#[tokio::test]
async fn echo_tests_are_originated_periodically() {
    let mut cfg = config(&[("bank-1", "iso87-bcd")]);
    cfg.originate.push(OriginateConfig { echo_interval_ms: Some(50), ..OriginateConfig::new("bank-1", 0.0) });
    let node = start(cfg).await;
    let l = layout("iso87-bcd");
    let mut mups = Mups::connect(&node).await;
    for _ in 0..2 {
        let d = mups.expect_data().await;
        let req = Message::parse(l, &d.message).unwrap();
        assert_eq!((req.mti().as_str(), req.value(70).unwrap().unwrap().as_str()), ("0800", "301"));
        let resp = sim::fo_node::respond::build_response(l, &req, "00", "").unwrap();
        mups.bank_sends("bank-1", 5, d.correlation_id, resp).await;
    }
    wait_for(&node, "answered echoes", |s| s.originated_answered == 2).await;
}

/// Collects a source's switchover output: ACK, CONTEXTs, SYNC_END.
async fn expect_handover(mups: &mut Mups, cmd_id: u64) -> (Vec<Context>, SyncEnd) {
    match mups.expect().await {
        FoMessage::Ack(a) => assert_eq!(a.cmd_id, cmd_id),
        other => panic!("expected ACK, got {other:?}"),
    }
    let mut contexts = Vec::new();
    loop {
        match mups.expect().await {
            FoMessage::Context(c) => contexts.push(c),
            FoMessage::SyncEnd(end) => return (contexts, end),
            other => panic!("expected CONTEXT or SYNC_END, got {other:?}"),
        }
    }
}

async fn expect_ack(mups: &mut Mups, cmd_id: u64) {
    match mups.expect().await {
        FoMessage::Ack(a) => assert_eq!(a.cmd_id, cmd_id),
        other => panic!("expected ACK {cmd_id}, got {other:?}"),
    }
}

async fn expect_nack(mups: &mut Mups, cmd_id: u64, reason: NackReason) {
    match mups.expect().await {
        FoMessage::Nack(n) => assert_eq!((n.cmd_id, n.reason), (cmd_id, reason), "{}", n.detail),
        other => panic!("expected NACK {cmd_id}, got {other:?}"),
    }
}

fn sync_begin(cmd_id: u64, switch_id: u64, role: SyncRole) -> SyncBegin {
    SyncBegin { cmd_id, bank_id: "bank-1".into(), switch_id, role }
}

#[tokio::test]
async fn switchover_hands_in_flight_requests_to_the_target() {
    let l = layout("iso87-ascii");
    let mut cfg_a = config(&[("bank-1", "iso87-ascii")]);
    cfg_a.rules.push("mti=0100,delay=600000".parse().unwrap());
    cfg_a.originate.push(OriginateConfig { timeout_ms: 600_000, ..OriginateConfig::new("bank-1", 0.0) });
    let a = start(cfg_a).await;
    let mut cfg_b = config(&[("bank-1", "iso87-ascii")]);
    cfg_b.node_id = "B".into();
    cfg_b.banks.get_mut("bank-1").unwrap().active = false;
    let b = start(cfg_b).await;
    let mut to_a = Mups::connect(&a).await;
    let mut to_b = Mups::connect(&b).await;

    // In flight at A: a bank request A holds (rule delay), and a request A originated.
    let original = auth(l, "4761739001010010", "000321");
    to_a.bank_sends("bank-1", 7, 42, original.clone()).await;
    wait_for(&a, "request in flight", |s| s.inflight == 1).await;
    let originated = a.originate_now("bank-1", OriginKind::Request).unwrap();
    let sent = to_a.expect_data().await;
    assert_eq!(sent.correlation_id, originated);

    // Source: ACK, one CONTEXT per request in flight, SYNC_END.
    to_a.send(sync_begin(100, 9, SyncRole::Source)).await;
    let (contexts, end) = expect_handover(&mut to_a, 100).await;
    assert_eq!(contexts.len(), 2, "{contexts:?}");
    let held = contexts.iter().find(|c| c.direction == Direction::ToNode).unwrap();
    assert_eq!((held.cmd_id, held.switch_id, held.correlation_id, held.session_id), (100, 9, 42, 7));
    assert_eq!(held.message, Bytes::from(original));
    assert_eq!(held.matching_key, "010|11=000321|41=TERM0001");
    assert!(held.deadline_micros > held.received_at_micros);
    let ours = contexts.iter().find(|c| c.direction == Direction::ToBank).unwrap();
    assert_eq!((ours.correlation_id, &ours.message), (originated, &sent.message));
    assert_eq!((end.cmd_id, end.switch_id, end.context_count), (100, 9, 2));
    assert!(end.params.contains(&("stan_base".to_owned(), "2".to_owned())), "{:?}", end.params);
    assert!(end.params.contains(&("source_node".to_owned(), "A".to_owned())));
    assert_eq!(a.bank_status("bank-1").unwrap().sync.map(|s| s.switch_id), Some(9));
    assert!(a.originate_now("bank-1", OriginKind::Request).is_err(), "no origination while switching");

    // Target: ACK, then an ACK for each relayed CONTEXT (fresh cmd_ids).
    to_b.send(sync_begin(200, 9, SyncRole::Target)).await;
    expect_ack(&mut to_b, 200).await;
    for (i, c) in contexts.iter().enumerate() {
        let cmd_id = 201 + i as u64;
        to_b.send(Context { cmd_id, ..c.clone() }).await;
        expect_ack(&mut to_b, cmd_id).await;
    }
    // Taken over, not activated: B holds them.
    assert!(b.inflight().iter().all(|e| !e.owned));
    assert!(b.originate_now("bank-1", OriginKind::Request).is_err(), "B is not active yet");

    // DEACTIVATE the source: it drops what it handed over.
    to_a.send(Deactivate { cmd_id: 101, bank_id: "bank-1".into(), switch_id: 9 }).await;
    expect_ack(&mut to_a, 101).await;
    assert!(a.inflight().is_empty());
    assert!(!a.bank_status("bank-1").unwrap().active);

    // ACTIVATE the target with the source's parameters: it answers the request itself.
    to_b.send(Activate { cmd_id: 203, bank_id: "bank-1".into(), switch_id: 9, params: end.params.clone() })
        .await;
    expect_ack(&mut to_b, 203).await;
    let d = to_b.expect_data().await;
    assert_eq!((d.correlation_id, d.session_id, d.direction), (42, 7, Direction::ToBank));
    let resp = Message::parse(l, &d.message).unwrap();
    assert_eq!(resp.mti().as_str(), "0110");
    assert_eq!(resp.value(11).unwrap().unwrap(), "000321");
    assert_eq!(resp.value(39).unwrap().unwrap(), "00");

    // Now active, B originates with the source's STAN numbering, and does not reuse the
    // correlation id it took over.
    let status = b.bank_status("bank-1").unwrap();
    assert!(status.active && status.sync.is_none());
    assert_eq!(status.next_stan, 2);
    let fresh = b.originate_now("bank-1", OriginKind::Request).unwrap();
    assert_ne!(fresh, originated);
    let d = to_b.expect_data().await;
    assert_eq!(Message::parse(l, &d.message).unwrap().value(11).unwrap().unwrap(), "000002");

    // The bank's answer to A's originated request reaches B, which matches it.
    let answer = Message::parse(l, &sent.message).unwrap();
    let answer = sim::fo_node::respond::build_response(l, &answer, "00", "654321").unwrap();
    to_b.bank_sends("bank-1", 7, originated, answer).await;
    let sb = wait_for(&b, "taken-over request answered", |s| s.originated_answered == 1).await;
    assert_eq!((sb.contexts_received, sb.acks_sent, sb.responses_sent), (2, 4, 1));
    assert_eq!(sb.commands_received["CONTEXT"], 2);
    let sa = a.stats();
    assert_eq!((sa.contexts_sent, sa.sync_ends_sent, sa.inflight_dropped, sa.responses_sent), (2, 1, 2, 0));
}

#[tokio::test]
async fn aborted_switchover_gives_the_requests_back_to_the_source() {
    let l = layout("iso87-ascii");
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.rules.push("mti=0100,delay=1000".parse().unwrap());
    let a = start(cfg).await;
    let mut mups = Mups::connect(&a).await;
    mups.bank_sends("bank-1", 1, 77, auth(l, "4761739001010010", "000077")).await;
    wait_for(&a, "request in flight", |s| s.inflight == 1).await;
    mups.send(sync_begin(1, 5, SyncRole::Source)).await;
    let (contexts, end) = expect_handover(&mut mups, 1).await;
    assert_eq!((contexts.len(), end.context_count), (1, 1));
    // Well past its due time, the handed-over request is still not answered.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    mups.heartbeat(1).await;
    assert!(matches!(mups.expect().await, FoMessage::HeartbeatAck(_)), "nothing answered while handed over");
    // Rollback: ACTIVATE the source with its own parameters; it answers at once.
    mups.send(Activate { cmd_id: 2, bank_id: "bank-1".into(), switch_id: 5, params: end.params }).await;
    expect_ack(&mut mups, 2).await;
    assert_eq!(mups.expect_data().await.correlation_id, 77);
    assert!(a.bank_status("bank-1").unwrap().sync.is_none());
}

#[tokio::test]
async fn a_target_may_answer_taken_over_requests_before_activate() {
    let l = layout("iso87-bcd");
    let mut cfg = config(&[("bank-1", "iso87-bcd")]);
    cfg.answer_before_activate = true;
    cfg.rules.push("pan=4000,code=51".parse().unwrap());
    let target = start(cfg).await;
    let mut mups = Mups::connect(&target).await;
    mups.send(sync_begin(1, 3, SyncRole::Target)).await;
    expect_ack(&mut mups, 1).await;
    let original = auth(l, "4000001234567899", "000555");
    mups.send(Context {
        cmd_id: 2,
        bank_id: "bank-1".into(),
        switch_id: 3,
        correlation_id: 555,
        session_id: 4,
        direction: Direction::ToNode,
        matching_key: "010|11=000555|41=TERM0001".into(),
        received_at_micros: 1,
        deadline_micros: 2,
        message: Bytes::from(original),
    })
    .await;
    expect_ack(&mut mups, 2).await;
    // Taken over with the target's own rules, answered without waiting for ACTIVATE.
    let d = mups.expect_data().await;
    assert_eq!((d.correlation_id, d.session_id), (555, 4));
    assert_eq!(Message::parse(l, &d.message).unwrap().value(39).unwrap().unwrap(), "51");
}

#[tokio::test]
async fn command_hooks_and_refusals() {
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.hooks.nack_on.insert(CommandKind::Activate);
    let node = start(cfg).await;
    let mut mups = Mups::connect(&node).await;
    let activate = |cmd_id| Activate { cmd_id, bank_id: "bank-1".into(), switch_id: 1, params: vec![] };

    // NACK hook, then off again.
    mups.send(activate(1)).await;
    expect_nack(&mut mups, 1, NackReason::Internal).await;
    node.nack_on(CommandKind::Activate, false);
    mups.send(activate(2)).await;
    expect_ack(&mut mups, 2).await;

    // Delay hook: the command is answered after traffic sent later.
    node.delay_on(CommandKind::SyncBegin, 1_500);
    mups.send(sync_begin(3, 1, SyncRole::Target)).await;
    mups.heartbeat(1).await;
    assert!(matches!(mups.expect().await, FoMessage::HeartbeatAck(_)));
    expect_ack(&mut mups, 3).await;
    node.delay_on(CommandKind::SyncBegin, 0);

    // Refusals by state: another switchover, a context for another one, an unknown bank.
    mups.send(sync_begin(4, 2, SyncRole::Source)).await;
    expect_nack(&mut mups, 4, NackReason::Busy).await;
    let ctx = Context {
        cmd_id: 5,
        bank_id: "bank-1".into(),
        switch_id: 2,
        correlation_id: 9,
        session_id: 1,
        direction: Direction::ToNode,
        matching_key: String::new(),
        received_at_micros: 0,
        deadline_micros: 0,
        message: Bytes::from(auth(layout("iso87-ascii"), "4761739001010010", "000001")),
    };
    mups.send(ctx.clone()).await;
    expect_nack(&mut mups, 5, NackReason::BadState).await;
    mups.send(Context { cmd_id: 6, switch_id: 1, message: Bytes::from_static(b"garbage"), ..ctx.clone() })
        .await;
    expect_nack(&mut mups, 6, NackReason::Internal).await;
    mups.send(Deactivate { cmd_id: 7, bank_id: "bank-9".into(), switch_id: 1 }).await;
    expect_nack(&mut mups, 7, NackReason::UnknownBank).await;

    // Ignore hook: no reply at all.
    node.ignore_on(CommandKind::Deactivate, true);
    mups.send(Deactivate { cmd_id: 8, bank_id: "bank-1".into(), switch_id: 1 }).await;
    mups.heartbeat(2).await;
    assert!(matches!(mups.expect().await, FoMessage::HeartbeatAck(_)));
    let stats = node.stats();
    assert_eq!((stats.acks_sent, stats.nacks_sent, stats.commands_ignored), (2, 5, 1));
    assert_eq!(stats.commands_received["SYNC_BEGIN"], 2);
}

#[tokio::test]
async fn stop_heartbeat_hook_stops_acks() {
    let node = start(config(&[("bank-1", "iso87-ascii")])).await;
    let l = layout("iso87-ascii");
    let mut mups = Mups::connect(&node).await;
    node.answer_heartbeats(false);
    mups.heartbeat(1).await;
    mups.bank_sends("bank-1", 1, 1, request(l, "0800", "", "", "000001")).await;
    assert!(matches!(mups.expect().await, FoMessage::Data(_)), "no ack before the response");
    node.answer_heartbeats(true);
    mups.heartbeat(2).await;
    match mups.expect().await {
        FoMessage::HeartbeatAck(a) => assert_eq!(a.seq, 2),
        other => panic!("expected HEARTBEAT_ACK, got {other:?}"),
    }
    let stats = node.stats();
    assert_eq!((stats.heartbeats_received, stats.heartbeats_ignored, stats.heartbeat_acks_sent), (2, 1, 1));
}

#[tokio::test]
async fn twin_links_then_die_closes_them_and_stops_listening() {
    let l = layout("iso87-ascii");
    let node = start(config(&[("bank-1", "iso87-ascii")])).await;
    let addr = node.local_addr();
    let mut first = Mups::connect(&node).await;
    let mut second = Mups::connect(&node).await;
    first.bank_sends("bank-1", 1, 1, auth(l, "4761739001010010", "000001")).await;
    second.bank_sends("bank-1", 2, 2, auth(l, "4761739001010010", "000002")).await;
    assert_eq!(first.expect_data().await.correlation_id, 1);
    assert_eq!(second.expect_data().await.correlation_id, 2);
    assert_eq!(node.links().len(), 2);

    node.die().await;
    assert!(!node.is_running());
    first.expect_closed().await;
    second.expect_closed().await;
    // The address is free again: a new node binds it and serves.
    let mut cfg = config(&[("bank-1", "iso87-ascii")]);
    cfg.listen = addr;
    let reborn = start(cfg).await;
    let mut again = Mups::connect(&reborn).await;
    again.bank_sends("bank-1", 1, 3, auth(l, "4761739001010010", "000003")).await;
    assert_eq!(again.expect_data().await.correlation_id, 3);
}

#[tokio::test]
async fn bad_traffic_is_counted_and_bad_frames_close_the_link() {
    let l = layout("iso87-ascii");
    let mut cfg = config(&[("bank-1", "iso87-ascii"), ("bank-2", "iso87-ascii")]);
    cfg.banks.get_mut("bank-2").unwrap().active = false;
    let node = start(cfg).await;
    let mut mups = Mups::connect(&node).await;
    mups.bank_sends("bank-9", 1, 1, auth(l, "4761739001010010", "000001")).await;
    mups.bank_sends("bank-1", 1, 2, b"0100 not iso".to_vec()).await;
    mups.send(Data {
        bank_id: "bank-1".into(),
        session_id: 1,
        direction: Direction::ToBank,
        correlation_id: 3,
        flags: DataFlags::empty(),
        message: Bytes::from(auth(l, "4761739001010010", "000003")),
    })
    .await;
    mups.send(controller_hello(1, 1)).await;
    mups.send(fo_link::BankState {
        bank_id: "bank-1".into(),
        sessions: vec![fo_link::SessionState {
            session_id: 7,
            transport: fo_link::TransportState::Up,
            application: fo_link::AppState::SignedOn,
        }],
    })
    .await;
    // Inactive for bank-2: answered anyway, counted.
    mups.bank_sends("bank-2", 1, 4, auth(l, "4761739001010010", "000004")).await;
    assert_eq!(mups.expect_data().await.correlation_id, 4);
    let stats = node.stats();
    assert_eq!((stats.unknown_bank, stats.parse_errors, stats.protocol_errors), (1, 1, 2));
    assert_eq!(stats.data_while_inactive, 1);
    assert_eq!(stats.bank_states_received, 1);
    let sessions = node.bank_status("bank-1").unwrap().sessions;
    assert_eq!((sessions[0].session_id, sessions[0].up, sessions[0].application), (7, true, "signed_on"));
    // A frame that does not decode ends the link.
    mups.stream.write_all(&[0, 0, 0, 2, 1, 0x7f]).await.unwrap();
    mups.expect_closed().await;
    wait_for(&node, "decode error", |s| s.decode_errors == 1 && s.links_open == 0).await;
}

#[tokio::test]
async fn control_lines_drive_the_node() {
    let node = start(config(&[("bank-1", "iso87-ascii")])).await;
    let mut mups = Mups::connect(&node).await;
    let reply = control::execute_line(&node, "nack DEACTIVATE on").await;
    assert_eq!(reply["ok"], true, "{reply}");
    mups.send(Deactivate { cmd_id: 1, bank_id: "bank-1".into(), switch_id: 1 }).await;
    expect_nack(&mut mups, 1, NackReason::Internal).await;
    let reply = control::execute_line(&node, "rules add pan=4761,code=05").await;
    assert_eq!(reply["rules"][0]["code"], "05", "{reply}");
    let reply = control::execute_line(&node, "rules add code=0005").await;
    assert_eq!(reply["ok"], false, "a code that does not fit DE39: {reply}");
    let reply = control::execute_line(&node, "originate bank-1 echo").await;
    let corr = reply["correlation_id"].as_u64().unwrap();
    assert_eq!(mups.expect_data().await.correlation_id, corr);
    let reply = control::execute_line(&node, "stats").await;
    assert_eq!(reply["stats"]["originated_sent"], 1, "{reply}");
    assert_eq!(control::execute_line(&node, "status bank-1").await["bank"]["active"], true);
    assert_eq!(control::execute_line(&node, "frobnicate").await["ok"], false);
    assert_eq!(control::execute_line(&node, "die").await["running"], false);
    mups.expect_closed().await;
}

/// The `fo-sim` binary: flags, the `listening` event, traffic, a control command on
/// stdin, and the final stats on SIGTERM.
#[cfg(unix)]
#[tokio::test]
async fn binary_serves_reports_and_stops_on_sigterm() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fo-sim"))
        .args(["--node", "B", "--listen", "127.0.0.1:0", "--bank", "bank-1=iso87-ascii"])
        .args(["--rule", "pan=4000,code=05", "--control", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_event = async || -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("fo-sim printed nothing");
        serde_json::from_str(&line.unwrap().expect("fo-sim closed stdout")).unwrap()
    };
    let listening = next_event().await;
    assert_eq!((listening["event"].as_str(), listening["node"].as_str()), (Some("listening"), Some("B")));
    let addr = listening["addr"].as_str().unwrap().parse().unwrap();

    let (mut mups, hello) = Mups::connect_with(addr, controller_hello(1, 1)).await;
    assert_eq!(hello.node_id, "B");
    let l = layout("iso87-ascii");
    mups.bank_sends("bank-1", 1, 1, auth(l, "4000001234567899", "000001")).await;
    let d = mups.expect_data().await;
    assert_eq!(Message::parse(l, &d.message).unwrap().value(39).unwrap().unwrap(), "05");

    // stdin control: the reply is an event line on stdout.
    stdin.write_all(b"nack ACTIVATE on\nstats\n").await.unwrap();
    let reply = next_event().await;
    assert_eq!((reply["event"].as_str(), reply["ok"].as_bool()), (Some("reply"), Some(true)), "{reply}");
    let reply = next_event().await;
    assert_eq!(reply["stats"]["responses_by_code"]["05"], 1, "{reply}");
    mups.send(Activate { cmd_id: 1, bank_id: "bank-1".into(), switch_id: 1, params: vec![] }).await;
    expect_nack(&mut mups, 1, NackReason::Internal).await;

    // TCP control: replies on the connection.
    let control_addr: std::net::SocketAddr = listening["control"].as_str().unwrap().parse().unwrap();
    let mut control = TcpStream::connect(control_addr).await.unwrap();
    control.write_all(b"status bank-1\n").await.unwrap();
    let mut reply = BufReader::new(&mut control).lines();
    let reply = tokio::time::timeout(WAIT, reply.next_line()).await.unwrap().unwrap().unwrap();
    let reply: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["bank"]["layout"], "iso87-ascii", "{reply}");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let last = next_event().await;
    assert_eq!((last["event"].as_str(), last["final"].as_bool()), (Some("stats"), Some(true)), "{last}");
    assert_eq!(last["reason"], "SIGTERM");
    assert_eq!(last["stats"]["nacks_sent"], 1);
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    mups.expect_closed().await;
}
