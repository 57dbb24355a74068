//! The FO switchover state machine against scripted nodes, with virtual time:
//! success, drain (by count and by deadline), a NACK at every step, a timeout at
//! every step, a wrong context count, a lost link, cancellation.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::fo_link::{Context, Direction, FoKind, FoMessage, NackReason, SyncEnd, SyncRole};
use proto::router::NodeId;
use proto::switchover::{
    AbortReason, Input, Mode, Outcome, Output, Phase, SwitchConfig, SwitchPlan, Switchover,
};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

/// How a scripted node behaves.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Refuse this kind of command.
    nack_on: Option<FoKind>,
    /// Never answer this kind of command.
    silent_on: Option<FoKind>,
    /// As the old node: requests in flight to hand over.
    contexts: u32,
    /// As the old node: announce this many contexts in SYNC_END instead.
    announce: Option<u32>,
}

struct Run {
    outputs: Vec<Output>,
    sent: Vec<(NodeId, FoKind)>,
    outcome: Outcome,
}

fn plan(mode: Mode) -> SwitchPlan {
    SwitchPlan { switch_id: 7, bank_id: "bank-1".into(), from: A, to: B, mode }
}

fn cfg() -> SwitchConfig {
    SwitchConfig { command_timeout: Duration::from_millis(500), drain_timeout: Duration::from_secs(5) }
}

fn context(cmd_id: u64, i: u32) -> Context {
    Context {
        cmd_id,
        bank_id: "bank-1".into(),
        switch_id: 7,
        correlation_id: 100 + u64::from(i),
        session_id: 1,
        direction: Direction::ToNode,
        matching_key: format!("010|11=00000{i}|41=TERM0001"),
        received_at_micros: 0,
        deadline_micros: 0,
        message: Bytes::from_static(b"0100..."),
    }
}

/// What a node answers to one command (1 ms later).
fn answer(node_id: NodeId, node: &Node, msg: &FoMessage) -> Vec<Input> {
    let kind = msg.kind();
    let cmd_id = msg.cmd_id().unwrap();
    if node.silent_on == Some(kind) {
        return vec![];
    }
    if node.nack_on == Some(kind) {
        return vec![Input::Nack {
            node: node_id,
            cmd_id,
            reason: NackReason::BadState,
            detail: "scripted".into(),
        }];
    }
    let mut out = vec![Input::Ack { node: node_id, cmd_id }];
    if let FoMessage::SyncBegin(sb) = msg {
        if sb.role == SyncRole::Source {
            for i in 0..node.contexts {
                out.push(Input::Context(node_id, context(cmd_id, i)));
            }
            let end = SyncEnd {
                cmd_id,
                bank_id: "bank-1".into(),
                switch_id: 7,
                context_count: node.announce.unwrap_or(node.contexts),
                params: vec![("stan_base".into(), "5000".into())],
            };
            out.push(Input::SyncEnd(node_id, end));
        }
    }
    out
}

/// Drives a switchover to its end. `before` lets a test inject inputs at the start.
fn run(mode: Mode, a: Node, b: Node, before: Vec<(Duration, Input)>) -> Run {
    let t0 = Instant::now();
    let mut now = t0;
    let mut sw = Switchover::start(plan(mode), cfg(), now);
    let mut outputs = Vec::new();
    let mut sent = Vec::new();
    let mut queue: VecDeque<(Instant, Input)> = before.into_iter().map(|(d, i)| (t0 + d, i)).collect();
    for _ in 0..1000 {
        while let Some(o) = sw.poll_output() {
            if let Output::Send { node, message } = &o {
                sent.push((*node, message.kind()));
                let script = if *node == A { &a } else { &b };
                for input in answer(*node, script, message) {
                    queue.push_back((now + Duration::from_millis(1), input));
                }
            }
            if let Output::Finished(outcome) = &o {
                outputs.push(o.clone());
                return Run { outputs, sent, outcome: outcome.clone() };
            }
            outputs.push(o);
        }
        // Next event: the earliest queued input or the machine's deadline.
        let next_input = queue.iter().map(|(t, _)| *t).min();
        match (next_input, sw.poll_timeout()) {
            (Some(t), deadline) if deadline.is_none_or(|d| t <= d) => {
                let pos = queue.iter().position(|(at, _)| *at == t).unwrap();
                let (at, input) = queue.remove(pos).unwrap();
                now = now.max(at);
                sw.handle(now, input);
            }
            (_, Some(d)) => {
                now = now.max(d);
                sw.handle_timeout(now);
            }
            _ => panic!("stuck in {:?}", sw.phase()),
        }
    }
    panic!("did not finish");
}

fn releases(r: &Run) -> Vec<NodeId> {
    r.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Release { to } => Some(*to),
            _ => None,
        })
        .collect()
}

#[test]
fn force_switch_hands_over_every_context_and_releases_to_the_new_node() {
    let r = run(Mode::Force, Node { contexts: 3, ..Node::default() }, Node::default(), vec![]);
    assert!(r.outcome.switched, "{:?}", r.outcome);
    assert_eq!(r.outcome.contexts, 3);
    assert_eq!(r.outputs.first(), Some(&Output::Hold));
    assert_eq!(releases(&r), vec![B]);
    assert_eq!(
        r.sent,
        vec![
            (A, FoKind::SyncBegin),
            (B, FoKind::SyncBegin),
            (B, FoKind::Context),
            (B, FoKind::Context),
            (B, FoKind::Context),
            (A, FoKind::Deactivate),
            (B, FoKind::Activate),
        ]
    );
    // ACTIVATE carries the old node's parameters; relayed contexts carry fresh command ids.
    let activate = r.outputs.iter().find_map(|o| match o {
        Output::Send { message: FoMessage::Activate(a), .. } => Some(a.clone()),
        _ => None,
    });
    assert_eq!(activate.unwrap().params, vec![("stan_base".to_owned(), "5000".to_owned())]);
    // Hold: SYNC_BEGIN ack, contexts, relay acks, deactivate, activate: a few ms of virtual time.
    assert!(r.outcome.hold <= Duration::from_millis(10), "{:?}", r.outcome.hold);
    assert_eq!(r.outcome.hold, r.outcome.total);
}

/// Every command of a switchover, as (what node A, what node B) is sent.
const STEPS: [(Option<FoKind>, Option<FoKind>); 5] = [
    (Some(FoKind::SyncBegin), None),
    (None, Some(FoKind::SyncBegin)),
    (None, Some(FoKind::Context)),
    (Some(FoKind::Deactivate), None),
    (None, Some(FoKind::Activate)),
];

#[test]
fn a_nack_at_any_step_rolls_back_to_the_old_node() {
    let steps = STEPS;
    for (a_nack, b_nack) in steps {
        let a = Node { contexts: 2, nack_on: a_nack, ..Node::default() };
        let b = Node { nack_on: b_nack, ..Node::default() };
        let r = run(Mode::Force, a, b, vec![]);
        let what = format!("A nacks {a_nack:?}, B nacks {b_nack:?}");
        assert!(!r.outcome.switched, "{what}");
        assert!(matches!(r.outcome.aborted, Some(AbortReason::Nack { .. })), "{what}: {:?}", r.outcome);
        assert_eq!(releases(&r), vec![A], "{what}");
        assert_eq!(r.outcome.rollback_confirmed, Some(true), "{what}");
        let tail: Vec<_> = r.sent.iter().rev().take(2).copied().collect();
        assert!(
            tail.contains(&(B, FoKind::Deactivate)) && tail.contains(&(A, FoKind::Activate)),
            "{what}: {:?}",
            r.sent
        );
    }
}

#[test]
fn silence_at_any_step_times_out_and_rolls_back() {
    let steps = STEPS;
    for (a_silent, b_silent) in steps {
        let a = Node { contexts: 2, silent_on: a_silent, ..Node::default() };
        let b = Node { silent_on: b_silent, ..Node::default() };
        let r = run(Mode::Force, a, b, vec![]);
        let what = format!("A silent on {a_silent:?}, B silent on {b_silent:?}");
        assert!(matches!(r.outcome.aborted, Some(AbortReason::Timeout { .. })), "{what}: {:?}", r.outcome);
        assert_eq!(releases(&r), vec![A], "{what}");
        // The timeout is the configured command timeout, not longer.
        assert!(
            r.outcome.hold >= Duration::from_millis(500) && r.outcome.hold < Duration::from_millis(520),
            "{what}: {:?}",
            r.outcome.hold
        );
    }
}

#[test]
fn a_wrong_context_count_aborts() {
    let a = Node { contexts: 2, announce: Some(3), ..Node::default() };
    let r = run(Mode::Force, a, Node::default(), vec![]);
    assert_eq!(r.outcome.aborted, Some(AbortReason::ContextCount { announced: 3, relayed: 2 }));
    assert_eq!(releases(&r), vec![A]);
    // The old node is reactivated with its own parameters.
    let reactivate = r.outputs.iter().rev().find_map(|o| match o {
        Output::Send { node, message: FoMessage::Activate(a) } if *node == A => Some(a.params.clone()),
        _ => None,
    });
    assert_eq!(reactivate.unwrap(), vec![("stan_base".to_owned(), "5000".to_owned())]);
}

#[test]
fn drain_waits_for_zero_in_flight_then_cuts() {
    let before = vec![
        (Duration::from_millis(20), Input::Inflight(3)),
        (Duration::from_millis(40), Input::Inflight(0)),
    ];
    let r = run(Mode::Drain, Node::default(), Node::default(), before);
    assert!(r.outcome.switched);
    assert!(!r.outcome.drain_deadline_reached);
    assert!(r.outcome.hold >= Duration::from_millis(40), "{:?}", r.outcome.hold);
    assert_eq!(r.sent[0], (A, FoKind::SyncBegin));
}

#[test]
fn drain_deadline_hands_over_what_is_left() {
    let before = vec![(Duration::from_millis(20), Input::Inflight(3))];
    let r = run(Mode::Drain, Node { contexts: 3, ..Node::default() }, Node::default(), before);
    assert!(r.outcome.switched);
    assert!(r.outcome.drain_deadline_reached);
    assert_eq!(r.outcome.contexts, 3);
    assert!(r.outcome.hold >= Duration::from_secs(5));
}

#[test]
fn a_lost_link_mid_switch_rolls_back() {
    // B's link drops while A's contexts are being relayed.
    let before = vec![(Duration::from_micros(1500), Input::LinkDown(B))];
    let r = run(Mode::Force, Node { contexts: 2, ..Node::default() }, Node::default(), before);
    assert_eq!(r.outcome.aborted, Some(AbortReason::LinkDown { node: B }));
    assert_eq!(releases(&r), vec![A]);
}

#[test]
fn cancel_rolls_back_and_a_finished_switch_ignores_late_input() {
    let before = vec![(Duration::from_micros(500), Input::Cancel)];
    let r = run(Mode::Force, Node::default(), Node::default(), before);
    assert_eq!(r.outcome.aborted, Some(AbortReason::Cancelled));
    assert_eq!(releases(&r), vec![A]);

    let t0 = Instant::now();
    let mut sw = Switchover::start(plan(Mode::Force), cfg(), t0);
    sw.handle(t0, Input::Cancel);
    while sw.poll_output().is_some() {}
    // Nobody answers the rollback: it ends unconfirmed, traffic back on the old node.
    sw.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(sw.phase(), Phase::RolledBack);
    let rest: Vec<Output> = std::iter::from_fn(|| sw.poll_output()).collect();
    assert_eq!(rest[0], Output::Release { to: A });
    assert!(matches!(&rest[1], Output::Finished(o) if o.rollback_confirmed == Some(false)));
    // An ACK for a command of another switchover changes nothing.
    sw.handle(t0, Input::Ack { node: A, cmd_id: 1 });
    assert!(sw.poll_output().is_none());
}
