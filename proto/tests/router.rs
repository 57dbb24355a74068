//! The router with virtual time: every routing path, timeouts, late and unmatched
//! responses, bad messages, and application state from network management.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::fo_link::{AppState, Data, DataFlags, Direction};
use proto::iso8583::Message;
use proto::iso8583::{Layout, MatchKeyConfig, NetMgmtCodes};
use proto::router::{
    Action, BadMessagePolicy, BankIdx, BankSpec, Event, NodeId, NodeLossPolicy, Router, RouterConfig,
    SESSION_WAIT, Side,
};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const BANK: BankIdx = BankIdx(0);

fn layout() -> &'static Layout {
    Layout::builtin("iso87-binary").unwrap()
}

fn router(policy: BadMessagePolicy) -> Router {
    router_with(policy, NodeLossPolicy::Timeout)
}

fn router_with(policy: BadMessagePolicy, on_node_loss: NodeLossPolicy) -> Router {
    let spec = BankSpec {
        id: "bank-1".into(),
        layout: Arc::new(layout().clone()),
        match_key: MatchKeyConfig::default(),
        netmgmt: NetMgmtCodes::default(),
        request_timeout: Duration::from_secs(10),
        active: A,
        reserve: Some(B),
        bad_message: policy,
        on_node_loss,
    };
    let mut r = Router::new(RouterConfig {
        nodes: vec!["A".into(), "B".into()],
        banks: vec![spec],
        late_window: Duration::from_secs(60),
        hold_limit: 3,
    });
    r.node_link(A, true);
    r.node_link(B, true);
    r
}

fn msg(mti: &str, fields: &[(u8, &str)]) -> Bytes {
    Bytes::from(layout().encode_to_vec(mti, fields.iter().copied()).unwrap())
}

fn auth(stan: &str) -> Bytes {
    msg("0100", &[(2, "4761739001010010"), (4, "000000001000"), (11, stan), (41, "TERM0001")])
}

fn auth_resp(stan: &str) -> Bytes {
    msg("0110", &[(11, stan), (39, "00"), (41, "TERM0001")])
}

fn actions(r: &mut Router) -> Vec<Action> {
    std::iter::from_fn(|| r.poll_action()).collect()
}

fn to_bank_data(correlation_id: u64, session_id: u64, message: Bytes) -> Data {
    Data {
        bank_id: "bank-1".into(),
        session_id,
        direction: Direction::ToBank,
        correlation_id,
        flags: DataFlags::empty(),
        message,
    }
}

fn to_node_data(correlation_id: u64, session_id: u64, message: Bytes) -> Data {
    Data { direction: Direction::ToNode, ..to_bank_data(correlation_id, session_id, message) }
}

/// The one ToNode action among `acts`.
fn sent_to_node(acts: &[Action]) -> (NodeId, Data) {
    let mut found = acts.iter().filter_map(|a| match a {
        Action::ToNode { node, data } => Some((*node, data.clone())),
        _ => None,
    });
    let one = found.next().expect("a ToNode action");
    assert!(found.next().is_none(), "exactly one ToNode action");
    one
}

fn sent_to_bank(acts: &[Action]) -> Vec<(u64, Bytes)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::ToBank { session, message, .. } => Some((*session, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn bank_request_goes_to_the_active_node_and_the_response_comes_back() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 7, BANK, "10.0.0.1:5000".into());
    r.session_up(t0, 8, BANK, "10.0.0.1:5001".into());
    let req = auth("000001");
    r.from_bank(t0, BANK, 7, req.clone());
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!(node, A);
    assert_eq!((data.session_id, data.direction, data.message.clone()), (7, Direction::ToNode, req));
    assert!(data.correlation_id != 0);
    assert_eq!(r.inflight(BANK), 1);

    let t1 = t0 + Duration::from_millis(3);
    r.from_node(t1, A, to_bank_data(data.correlation_id, 7, auth_resp("000001")));
    let acts = actions(&mut r);
    assert_eq!(sent_to_bank(&acts), vec![(7, auth_resp("000001"))]);
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Answered { latency, response_code: Some(rc), requester: Side::Bank, .. })
        if *latency == Duration::from_millis(3) && rc == "00")));
    let c = r.counters(BANK);
    assert_eq!((c.requests_to_node, c.responses_to_bank, c.timeouts), (1, 1, 0));
    assert_eq!(r.inflight(BANK), 0);
    // A second response to the same request is a duplicate: dropped, counted, reported.
    r.from_node(t1, A, to_bank_data(data.correlation_id, 7, auth_resp("000001")));
    let acts = actions(&mut r);
    assert!(sent_to_bank(&acts).is_empty());
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Duplicate { node: A, .. }))));
    assert_eq!((r.counters(BANK).duplicates_dropped, r.counters(BANK).unmatched_from_node), (1, 0));
    // A response with a correlation id nobody used is unmatched: delivered and counted.
    r.from_node(t1, A, to_bank_data(999_999, 7, auth_resp("000001")));
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 1);
    assert_eq!(r.counters(BANK).unmatched_from_node, 1);
}

#[test]
fn held_traffic_is_released_in_order_to_the_new_node_and_answered_once() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    // A request in flight on A before the switch.
    r.from_bank(t0, BANK, 1, auth("000001"));
    let (_, before) = sent_to_node(&actions(&mut r));
    r.hold(BANK);
    for stan in ["000002", "000003", "000004"] {
        r.from_bank(t0, BANK, 1, auth(stan));
    }
    let acts = actions(&mut r);
    assert!(!acts.iter().any(|a| matches!(a, Action::ToNode { .. })), "held requests must not go out");
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::HoldLimit { held: 3, .. }))));
    assert_eq!(r.held(BANK), 3);

    let t1 = t0 + Duration::from_millis(4);
    r.release(t1, BANK, B);
    let acts = actions(&mut r);
    let sent: Vec<(NodeId, Bytes)> = acts
        .iter()
        .filter_map(|a| match a {
            Action::ToNode { node, data } => Some((*node, data.message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![(B, auth("000002")), (B, auth("000003")), (B, auth("000004"))]);
    assert_eq!((r.held(BANK), r.active_node(BANK)), (0, B));

    // The request handed over is answered by B (same correlation id), then A answers it too.
    r.from_node(t1, B, to_bank_data(before.correlation_id, 1, auth_resp("000001")));
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 1);
    r.from_node(t1, A, to_bank_data(before.correlation_id, 1, auth_resp("000001")));
    assert!(sent_to_bank(&actions(&mut r)).is_empty(), "the bank gets one response, not two");
    assert_eq!(r.counters(BANK).duplicates_dropped, 1);
    // Held requests keep their deadline from when the bank sent them (t0, not t1).
    r.handle_timeout(t0 + Duration::from_secs(10));
    actions(&mut r);
    assert_eq!(r.counters(BANK).timeouts, 3);
}

#[test]
fn timeout_then_late_response_is_delivered_and_counted() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    r.from_bank(t0, BANK, 1, auth("000002"));
    let (_, data) = sent_to_node(&actions(&mut r));
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    r.handle_timeout(t0 + Duration::from_secs(9));
    assert!(actions(&mut r).is_empty());
    r.handle_timeout(t0 + Duration::from_secs(10));
    let acts = actions(&mut r);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Event(Event::Timeout { session: 1, requester: Side::Bank, .. })))
    );
    assert_eq!(r.counters(BANK).timeouts, 1);
    assert_eq!(r.inflight(BANK), 0);

    r.from_node(t0 + Duration::from_secs(11), A, to_bank_data(data.correlation_id, 1, auth_resp("000002")));
    let acts = actions(&mut r);
    assert_eq!(sent_to_bank(&acts).len(), 1);
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Late { from: Side::Node, .. }))));
    assert_eq!(r.counters(BANK).late, 1);

    // After the late window, the same response would be unmatched.
    r.from_bank(t0, BANK, 1, auth("000003"));
    let (_, d3) = sent_to_node(&actions(&mut r));
    r.handle_timeout(t0 + Duration::from_secs(100));
    actions(&mut r);
    r.from_node(t0 + Duration::from_secs(100), A, to_bank_data(d3.correlation_id, 1, auth_resp("000003")));
    actions(&mut r);
    assert_eq!((r.counters(BANK).late, r.counters(BANK).unmatched_from_node), (1, 1));
}

#[test]
fn fo_originated_request_reaches_a_session_and_its_response_returns_to_the_sender() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    // Node B (not the bank's active node) asks the bank; session 0 = any session.
    r.from_node(t0, B, to_bank_data(900, 0, msg("0800", &[(7, "1122334455"), (11, "000777"), (70, "301")])));
    let acts = actions(&mut r);
    assert_eq!(sent_to_bank(&acts).len(), 1);
    assert_eq!(sent_to_bank(&acts)[0].0, 1);
    r.from_bank(
        t0 + Duration::from_millis(2),
        BANK,
        1,
        msg("0810", &[(7, "1122334455"), (11, "000777"), (39, "00"), (70, "301")]),
    );
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!((node, data.correlation_id, data.flags), (B, 900, DataFlags::empty()));
    assert_eq!(r.counters(BANK).fo_responses_to_node, 1);
    assert!(r.sessions(BANK, t0).iter().all(|s| s.since_echo_secs.is_some()));

    // Unanswered: times out; the late answer still goes to the node that asked, flagged.
    r.from_node(t0, B, to_bank_data(901, 0, msg("0800", &[(7, "1122334455"), (11, "000778"), (70, "301")])));
    actions(&mut r);
    r.handle_timeout(t0 + Duration::from_secs(10));
    let acts = actions(&mut r);
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Timeout { requester: Side::Node, .. }))));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Event(Event::AppStateChanged { state: AppState::EchoFailing, .. })))
    );
    r.from_bank(
        t0 + Duration::from_secs(12),
        BANK,
        1,
        msg("0810", &[(7, "1122334455"), (11, "000778"), (39, "00"), (70, "301")]),
    );
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!((node, data.correlation_id, data.flags), (B, 901, DataFlags::LATE));

    // A bank response nobody asked for goes to the active node, flagged.
    r.from_bank(t0, BANK, 1, msg("0110", &[(11, "123456"), (39, "00"), (41, "TERM0009")]));
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!((node, data.flags), (A, DataFlags::UNMATCHED));
    assert_eq!(r.counters(BANK).unmatched_from_bank, 1);
}

#[test]
fn responses_to_fo_requests_follow_a_switchover_to_the_node_that_took_them_over() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    let fo_auth = |stan: &str| msg("0100", &[(11, stan), (41, "FOSIM001")]);
    let fo_resp = |stan: &str| msg("0110", &[(11, stan), (39, "00"), (41, "FOSIM001")]);
    // A, the active node, has two requests out at the bank; B one of its own.
    r.from_node(t0, A, to_bank_data(11, 0, fo_auth("000011")));
    r.from_node(t0, A, to_bank_data(12, 0, fo_auth("000012")));
    r.from_node(t0, B, to_bank_data(21, 0, fo_auth("000021")));
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 3);

    // The switchover holds the bank: A is handing its requests over to B, so the
    // bank's answer waits, and goes to B once B has the bank.
    r.hold(BANK);
    r.from_bank(t0, BANK, 1, fo_resp("000011"));
    r.from_bank(t0, BANK, 1, fo_resp("000021"));
    let acts = actions(&mut r);
    assert!(!acts.iter().any(|a| matches!(a, Action::ToNode { .. })), "held until the cut");
    assert_eq!((r.held(BANK), r.counters(BANK).fo_responses_to_node), (2, 2));
    r.release(t0, BANK, B);
    let sent: Vec<(NodeId, u64)> = actions(&mut r)
        .iter()
        .filter_map(|a| match a {
            Action::ToNode { node, data } => Some((*node, data.correlation_id)),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![(B, 11), (B, 21)]);
    // After the cut, the answer to A's other request goes to B too.
    r.from_bank(t0, BANK, 1, fo_resp("000012"));
    assert_eq!(sent_to_node(&actions(&mut r)), (B, to_node_data(12, 1, fo_resp("000012"))));

    // A rolled-back switchover (released to the node the bank was on) changes nothing.
    r.from_node(t0, B, to_bank_data(13, 0, fo_auth("000013")));
    actions(&mut r);
    r.hold(BANK);
    r.from_bank(t0, BANK, 1, fo_resp("000013"));
    assert!(!actions(&mut r).iter().any(|a| matches!(a, Action::ToNode { .. })));
    r.release(t0, BANK, B);
    assert_eq!(sent_to_node(&actions(&mut r)), (B, to_node_data(13, 1, fo_resp("000013"))));
    assert_eq!(r.counters(BANK).fo_timeouts, 0);
}

#[test]
fn bad_messages_follow_the_bank_policy() {
    let t0 = Instant::now();
    for (policy, closes) in [(BadMessagePolicy::Drop, false), (BadMessagePolicy::Close, true)] {
        let mut r = router(policy);
        r.session_up(t0, 1, BANK, "bank".into());
        let mut bad = auth("000001").to_vec();
        bad.truncate(25);
        r.from_bank(t0, BANK, 1, Bytes::from(bad));
        let acts = actions(&mut r);
        let event = acts
            .iter()
            .find_map(|a| match a {
                Action::Event(Event::BadMessage { dump, closed, error, .. }) => {
                    Some((dump.clone(), *closed, error.clone()))
                }
                _ => None,
            })
            .expect("a BadMessage event");
        assert_eq!(event.1, closes);
        assert!(!event.0.contains("34373631373339"), "the PAN must not be in the dump: {}", event.0);
        assert!(event.2.to_string().starts_with("DE2 at byte 14: truncated"), "{}", event.2);
        assert_eq!(acts.iter().any(|a| matches!(a, Action::CloseSession { session: 1, .. })), closes);
        assert!(!acts.iter().any(|a| matches!(a, Action::ToNode { .. })));
        assert_eq!(r.counters(BANK).bad_messages, 1);
    }
}

#[test]
fn node_down_means_no_route_and_a_closed_session_means_undeliverable() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    r.node_link(A, false);
    r.from_bank(t0, BANK, 1, auth("000001"));
    let acts = actions(&mut r);
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::NoRoute { node: A, .. }))));
    assert_eq!(r.counters(BANK).no_route, 1);

    r.set_active_node(BANK, B);
    r.from_bank(t0, BANK, 1, auth("000002"));
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!(node, B);
    r.session_down(1);
    r.from_node(t0, B, to_bank_data(data.correlation_id, 1, auth_resp("000002")));
    // The bank has no session left: the response waits for one, in vain.
    assert!(actions(&mut r).is_empty());
    r.handle_timeout(t0 + SESSION_WAIT);
    let acts = actions(&mut r);
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Undeliverable { session: Some(1), .. }))));
    assert_eq!(r.counters(BANK).undeliverable, 1);
}

#[test]
fn sign_on_and_sign_off_set_the_application_state() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    assert_eq!(r.sessions(BANK, t0)[0].app_state, AppState::Unknown);
    for (code, state) in [("001", AppState::SignedOn), ("002", AppState::SignedOff)] {
        r.from_bank(t0, BANK, 1, msg("0800", &[(7, "1122334455"), (11, "000010"), (70, code)]));
        let (_, data) = sent_to_node(&actions(&mut r));
        r.from_node(
            t0,
            A,
            to_bank_data(
                data.correlation_id,
                1,
                msg("0810", &[(7, "1122334455"), (11, "000010"), (39, "00"), (70, code)]),
            ),
        );
        let acts = actions(&mut r);
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Event(Event::AppStateChanged { state: s, .. }) if *s == state))
        );
        assert_eq!(r.sessions(BANK, t0)[0].app_state, state);
    }
    // A declined sign-on leaves the state alone.
    r.from_bank(t0, BANK, 1, msg("0800", &[(7, "1122334455"), (11, "000011"), (70, "001")]));
    let (_, data) = sent_to_node(&actions(&mut r));
    r.from_node(
        t0,
        A,
        to_bank_data(
            data.correlation_id,
            1,
            msg("0810", &[(7, "1122334455"), (11, "000011"), (39, "05"), (70, "001")]),
        ),
    );
    actions(&mut r);
    assert_eq!(r.sessions(BANK, t0)[0].app_state, AppState::SignedOff);
}

#[test]
fn fo_requests_prefer_signed_on_sessions_and_unknown_banks_are_reported() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    for s in [1, 2, 3] {
        r.session_up(t0, s, BANK, format!("bank:{s}"));
    }
    // Sign session 2 on.
    r.from_bank(t0, BANK, 2, msg("0800", &[(7, "1122334455"), (11, "000010"), (70, "001")]));
    let (_, data) = sent_to_node(&actions(&mut r));
    r.from_node(
        t0,
        A,
        to_bank_data(
            data.correlation_id,
            2,
            msg("0810", &[(7, "1122334455"), (11, "000010"), (39, "00"), (70, "001")]),
        ),
    );
    actions(&mut r);
    for i in 0..4 {
        let stan = format!("{:06}", 500 + i);
        r.from_node(t0, A, to_bank_data(1000 + i, 0, msg("0100", &[(11, &stan), (41, "SWITCH01")])));
        assert_eq!(sent_to_bank(&actions(&mut r))[0].0, 2);
    }
    let mut data = to_bank_data(1, 0, auth_resp("000001"));
    data.bank_id = "nobody".into();
    r.from_node(t0, A, data);
    assert!(actions(&mut r).iter().any(|a| matches!(a, Action::Event(Event::Protocol { node: A, .. }))));
}

#[test]
fn answered_requests_do_not_leave_timers_behind() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_micros(u64::from(i));
        let stan = format!("{:06}", i % 1_000_000);
        r.from_bank(now, BANK, 1, auth(&stan));
        let (_, data) = sent_to_node(&actions(&mut r));
        r.from_node(now, A, to_bank_data(data.correlation_id, 1, auth_resp(&stan)));
        actions(&mut r);
    }
    assert_eq!(r.counters(BANK).responses_to_bank, 10_000);
    assert!(r.timers_armed() < 10, "{} timers armed for nothing in flight", r.timers_armed());
}

#[test]
fn a_node_request_whose_correlation_id_equals_one_of_ours_is_still_a_request() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    r.from_bank(t0, BANK, 1, auth("000001"));
    let (_, ours) = sent_to_node(&actions(&mut r));
    // The node's own request happens to carry the same number as our pending one.
    r.from_node(
        t0,
        A,
        to_bank_data(ours.correlation_id, 0, msg("0100", &[(11, "777777"), (41, "SWITCH01")])),
    );
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 1);
    assert_eq!(
        (r.counters(BANK).fo_requests_to_bank, r.inflight(BANK)),
        (1, 1),
        "our request is still pending"
    );
    // Our request is then answered normally, and answering it does not make the
    // node's next request with that number a "duplicate".
    r.from_node(t0, A, to_bank_data(ours.correlation_id, 1, auth_resp("000001")));
    assert_eq!(r.counters(BANK).responses_to_bank, 1);
    r.from_node(
        t0,
        A,
        to_bank_data(ours.correlation_id, 0, msg("0100", &[(11, "777778"), (41, "SWITCH01")])),
    );
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 2);
    assert_eq!(r.counters(BANK).duplicates_dropped, 0);
}

#[test]
fn with_the_decline_policy_a_lost_node_s_requests_are_declined_at_once_and_never_twice() {
    let t0 = Instant::now();
    let decline = NodeLossPolicy::Decline { code: "91".into() };
    let mut r = router_with(BadMessagePolicy::Drop, decline);
    r.session_up(t0, 1, BANK, "bank".into());
    r.from_bank(t0, BANK, 1, auth("000001"));
    let (_, first) = sent_to_node(&actions(&mut r));
    r.from_bank(t0, BANK, 1, auth("000002"));
    let (_, second) = sent_to_node(&actions(&mut r));
    // The first one is answered before the node dies.
    r.from_node(t0, A, to_bank_data(first.correlation_id, 1, auth_resp("000001")));
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 1);

    r.node_link(A, false);
    let acts = actions(&mut r);
    let answers = sent_to_bank(&acts);
    assert_eq!(answers.len(), 1, "only the request still in flight is declined");
    let decline = Message::parse(layout(), &answers[0].1).unwrap();
    assert_eq!(decline.mti().as_str(), "0110");
    assert_eq!(decline.value(11).unwrap().unwrap(), "000002");
    assert_eq!(decline.value(41).unwrap().unwrap(), "TERM0001");
    assert_eq!(decline.value(39).unwrap().unwrap(), "91");
    assert!(
        acts.iter().any(|a| matches!(a, Action::Event(Event::Declined { node: A, was_in_flight: true, .. })))
    );
    assert_eq!((r.counters(BANK).declined, r.inflight(BANK)), (1, 0));

    // The node comes back and answers after all: the bank already has its answer.
    r.node_link(A, true);
    r.from_node(t0, A, to_bank_data(second.correlation_id, 1, auth_resp("000002")));
    assert!(sent_to_bank(&actions(&mut r)).is_empty());
    assert_eq!(r.counters(BANK).duplicates_dropped, 1);

    // No node up: a new request is declined at once instead of waiting for the bank's timer.
    r.node_link(A, false);
    r.from_bank(t0, BANK, 1, auth("000003"));
    let acts = actions(&mut r);
    assert!(!acts.iter().any(|a| matches!(a, Action::ToNode { .. })));
    let answers = sent_to_bank(&acts);
    assert_eq!(Message::parse(layout(), &answers[0].1).unwrap().value(11).unwrap().unwrap(), "000003");
    assert!(acts.iter().any(|a| matches!(a, Action::Event(Event::Declined { was_in_flight: false, .. }))));
    assert_eq!((r.counters(BANK).declined, r.counters(BANK).no_route), (2, 0));
}

#[test]
fn with_the_timeout_policy_a_lost_node_s_requests_wait_for_their_deadline() {
    let t0 = Instant::now();
    let mut r = router(BadMessagePolicy::Drop);
    r.session_up(t0, 1, BANK, "bank".into());
    r.from_bank(t0, BANK, 1, auth("000001"));
    let _ = actions(&mut r);
    r.node_link(A, false);
    assert!(sent_to_bank(&actions(&mut r)).is_empty());
    assert_eq!(r.inflight(BANK), 1);
    r.handle_timeout(t0 + Duration::from_secs(10));
    assert!(actions(&mut r).iter().any(|a| matches!(a, Action::Event(Event::Timeout { node: A, .. }))));
    assert_eq!((r.counters(BANK).timeouts, r.counters(BANK).declined), (1, 0));
}

#[test]
fn requests_handed_over_in_a_switchover_are_not_declined_when_the_old_node_dies() {
    let t0 = Instant::now();
    let mut r = router_with(BadMessagePolicy::Drop, NodeLossPolicy::Decline { code: "91".into() });
    r.session_up(t0, 1, BANK, "bank".into());
    r.from_bank(t0, BANK, 1, auth("000001"));
    let (node, handed_over) = sent_to_node(&actions(&mut r));
    assert_eq!(node, A);
    r.hold(BANK);
    r.release(t0, BANK, B);
    let _ = actions(&mut r);
    r.node_link(A, false);
    assert!(sent_to_bank(&actions(&mut r)).is_empty(), "B has the request now: no decline");
    assert_eq!((r.counters(BANK).declined, r.inflight(BANK)), (0, 1));
    // B answers it.
    r.from_node(t0, B, to_bank_data(handed_over.correlation_id, 1, auth_resp("000001")));
    assert_eq!(sent_to_bank(&actions(&mut r)).len(), 1);
    assert_eq!(r.inflight(BANK), 0);
}

#[test]
fn in_flight_tables_move_to_the_twin_router_and_answers_still_match() {
    let t0 = Instant::now();
    let mut old = router(BadMessagePolicy::Drop);
    old.session_up(t0, 1, BANK, "10.0.0.1:5000".into());
    // Signed on.
    old.from_bank(t0, BANK, 1, msg("0800", &[(7, "1122334455"), (11, "000010"), (70, "001")]));
    let (_, signon) = sent_to_node(&actions(&mut old));
    old.from_node(
        t0,
        A,
        to_bank_data(
            signon.correlation_id,
            1,
            msg("0810", &[(7, "1122334455"), (11, "000010"), (39, "00"), (70, "001")]),
        ),
    );
    let _ = actions(&mut old);
    // A bank request waiting for node A, and an FO-originated one waiting for the bank.
    old.from_bank(t0, BANK, 1, auth("000001"));
    let (_, bank_req) = sent_to_node(&actions(&mut old));
    let mut fo_req = to_bank_data(77, 1, auth("000900"));
    fo_req.direction = Direction::ToBank;
    old.from_node(t0, A, fo_req);
    let _ = actions(&mut old);

    let t1 = t0 + Duration::from_secs(4);
    let tables = old.export_inflight(t1);
    assert_eq!((tables.requests.len(), tables.fo_requests.len(), tables.sessions.len()), (1, 1, 1));
    assert_eq!(tables.requests[0].remaining_ms, 6_000);
    let json = serde_json::to_string(&tables).unwrap();

    let mut new = router(BadMessagePolicy::Drop);
    let t2 = t1 + Duration::from_millis(50);
    assert_eq!(new.import_inflight(t2, &serde_json::from_str(&json).unwrap()), 0);
    assert_eq!(new.sessions(BANK, t2)[0].app_state, AppState::SignedOn);
    assert_eq!(new.inflight(BANK), 1);
    // The node's answer, now arriving at the new router, matches.
    new.from_node(t2, A, to_bank_data(bank_req.correlation_id, 1, auth_resp("000001")));
    let acts = actions(&mut new);
    assert_eq!(sent_to_bank(&acts), vec![(1, auth_resp("000001"))]);
    assert_eq!((new.counters(BANK).unmatched_from_node, new.inflight(BANK)), (0, 0));
    // The bank's answer to the FO-originated request goes to node A with A's id.
    new.from_bank(t2, BANK, 1, msg("0110", &[(11, "000900"), (39, "00"), (41, "TERM0001")]));
    let (node, data) = sent_to_node(&actions(&mut new));
    assert_eq!((node, data.correlation_id, data.flags), (A, 77, DataFlags::empty()));
    // New requests get ids above the old router's.
    new.from_bank(t2, BANK, 1, auth("000002"));
    let (_, next) = sent_to_node(&actions(&mut new));
    assert!(next.correlation_id > bank_req.correlation_id);
}

#[test]
fn a_handed_over_request_times_out_when_its_time_is_up_not_a_whole_timeout_later() {
    let t0 = Instant::now();
    let mut old = router(BadMessagePolicy::Drop);
    old.session_up(t0, 1, BANK, "bank".into());
    old.from_bank(t0, BANK, 1, auth("000001"));
    let _ = actions(&mut old);
    let tables = old.export_inflight(t0 + Duration::from_secs(9));
    let mut new = router(BadMessagePolicy::Drop);
    let t1 = t0 + Duration::from_secs(9);
    new.import_inflight(t1, &tables);
    new.handle_timeout(t1 + Duration::from_millis(999));
    assert_eq!(new.counters(BANK).timeouts, 0);
    new.handle_timeout(t1 + Duration::from_secs(1));
    assert_eq!(new.counters(BANK).timeouts, 1);
}

#[test]
fn node_messages_for_a_bank_without_a_session_wait_for_one() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut r = router(BadMessagePolicy::Drop);
    // An FO-originated request while the bank has no session (a new active
    // appliance takes its sessions over only after its FO links are up).
    r.from_node(t0, A, to_bank_data(77, 0, auth("000009")));
    assert!(actions(&mut r).is_empty(), "nothing delivered, nothing dropped yet");
    r.session_up(t0 + ms(300), 3, BANK, "bank".into());
    let delivered = sent_to_bank(&actions(&mut r));
    assert_eq!(delivered, [(3, auth("000009"))], "delivered once the session is up");
    assert_eq!(r.counters(BANK).fo_requests_to_bank, 1);
    // Its response goes back to the node that sent it.
    r.from_bank(t0 + ms(310), BANK, 3, auth_resp("000009"));
    let (node, data) = sent_to_node(&actions(&mut r));
    assert_eq!((node, data.correlation_id), (A, 77));

    // One that waits in vain is undeliverable once SESSION_WAIT is over, not before.
    r.session_down(3);
    let t1 = t0 + ms(1000);
    r.from_node(t1, A, to_bank_data(78, 0, auth("000010")));
    r.handle_timeout(t1 + SESSION_WAIT - ms(1));
    assert!(actions(&mut r).is_empty());
    r.handle_timeout(t1 + SESSION_WAIT);
    let acts = actions(&mut r);
    assert!(
        acts.iter().any(|a| matches!(a, Action::Event(Event::Undeliverable { bank: BANK, .. }))),
        "{acts:?}"
    );
    assert_eq!(r.counters(BANK).undeliverable, 1);
    // A session coming up later finds nothing left to deliver.
    r.session_up(t1 + SESSION_WAIT + ms(1), 4, BANK, "bank".into());
    assert!(sent_to_bank(&actions(&mut r)).is_empty());
}
