//! Issue 4 end to end, at scale: 50 banks (the four framing/layout profiles in
//! turn), 3 sessions each, traffic both ways through the real `pups` and `mups`:
//! bank requests (400/s in all) and requests the FO nodes originate (200/s in all,
//! from whichever node is active for the bank). Every bank switches A→B→A ten
//! times (force and drain in turn; the nodes answer half the requests 50 ms late,
//! so switchovers hand requests in flight over), then node A dies under load and every bank
//! fails over to B automatically; A is restarted on its address and `mups`
//! reconnects to it, with no failback.
//!
//! Asserted: every job switched every bank, without rollback; the banks saw no
//! disconnect, no duplicate, no unmatched response, and lost only requests that
//! were in flight on node A when it died, each one counted by `mups` as a timeout
//! (none before the kill); every FO-originated request was answered back to the
//! node that sent it (or took it over in a switchover), except those in flight on
//! the dead node; the nodes saw every switchover command once and no refusal.

use std::time::Duration;

use e2e::{Lab, LabOptions, bank_sim_config, counters_by_bank, generated_banks};
use mups::switching::{AllBanks, BankSelection, Job, SwitchRequest};
use proto::router::app_state_name;
use proto::switchover::Mode;
use sim::bank::{self, BankSimConfig};
use sim::fo_node::{FoNodeHandle, Stats};

const BANKS: usize = 50;
const SESSIONS: u32 = 3;
const PIPELINE: u32 = 4;
/// Bank requests per second, per bank (over its sessions).
const BANK_RATE: f64 = 8.0;
/// FO-originated requests per second, per bank, from its active node.
const ORIGINATE_RATE: f64 = 4.0;
const ROUND_TRIPS: usize = 10;
const JOB_INTERVAL: Duration = Duration::from_millis(200);
/// `request_timeout_ms` of every bank in `mups`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn request(from: &str, to: &str, mode: Mode, round: usize) -> SwitchRequest {
    SwitchRequest {
        banks: BankSelection::All(AllBanks::All),
        from: Some(from.into()),
        to: to.into(),
        mode,
        reason: format!("e2e: 50 banks, round {round}"),
    }
}

/// Every bank of the lab is in the job, moved `from` → `to`, committed, no rollback.
fn assert_all_switched(job: &Job, from: &str, to: &str) {
    assert_eq!(job.banks.len(), BANKS, "job {}: {job:#?}", job.id);
    for (bank, r) in &job.banks {
        assert!(r.skipped.is_none(), "job {} skipped {bank}: {r:?}", job.id);
        assert_eq!((r.from.as_str(), r.to.as_str()), (from, to), "job {}: {bank}", job.id);
        let o = r.outcome.as_ref().unwrap_or_else(|| panic!("job {}: {bank} has no outcome", job.id));
        assert!(o.switched && o.aborted.is_none(), "job {}: {bank} rolled back: {r:?}", job.id);
        assert_eq!(o.rollback_confirmed, None, "job {}: {bank}", job.id);
        assert_eq!(r.phase, "committed", "job {}: {bank}", job.id);
    }
}

/// Polls a node's counters until `done` holds (at most 20 s).
async fn wait_node(node: &FoNodeHandle, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = node.stats();
        if done(&stats) {
            return stats;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting for {what}: {stats:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn command(s: &Stats, name: &str) -> u64 {
    s.commands_received.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_banks_switch_ten_round_trips_then_fail_over_when_node_a_dies() {
    let started = std::time::Instant::now();
    let options = LabOptions {
        originate_on_reserve: true,
        // Requests lost are timed out by mups after this.
        request_timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
        pause_origination: true,
        ..LabOptions::default()
    };
    let mut lab = Lab::start_with("fo-switch-50", generated_banks(BANKS, ORIGINATE_RATE), options).await;

    // Both nodes answer financial requests (0200) 50 ms late, so that a switchover
    // usually finds requests in flight on the old node and hands them over.
    for node in &lab.nodes {
        node.set_rules(vec!["mti=0200,delay=50".parse().unwrap()]).unwrap();
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            sign_on: true,
            // Requests lost with node A wait this long at the bank, then the grace.
            timeout: Duration::from_millis(1_500),
            grace: REQUEST_TIMEOUT,
            ..bank_sim_config(&lab, b, SESSIONS, BANK_RATE)
        };
        let mut stopped = stopped.clone();
        let until = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, until))));
        // Started one after the other, the banks' send schedules spread over a period
        // instead of every bank sending at the same instants.
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    lab.wait_until("every session signed on", |s| {
        s.banks.iter().all(|b| {
            b.sessions.len() == SESSIONS as usize
                && b.sessions.iter().all(|s| app_state_name(s.app_state) == "signed_on")
        })
    })
    .await;
    // Only now do the nodes originate: every request has a signed-on session to go to.
    for node in &lab.nodes {
        node.pause_origination(false);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Ten round trips, force and drain in turn.
    let mut last_job = 0;
    let mut contexts = 0u64;
    let mut hold_max_us = 0u64;
    for round in 0..ROUND_TRIPS {
        let mode = if round % 2 == 0 { Mode::Force } else { Mode::Drain };
        for (from, to) in [("A", "B"), ("B", "A")] {
            // Traffic flows both ways on the new node for a while before the next job.
            tokio::time::sleep(JOB_INTERVAL).await;
            let job = lab.switch(request(from, to, mode, round)).await;
            assert_all_switched(&job, from, to);
            assert!(job.id > last_job);
            last_job = job.id;
            for r in job.banks.values() {
                let o = r.outcome.as_ref().expect("checked");
                contexts += u64::from(o.contexts);
                hold_max_us = hold_max_us.max(o.hold_micros);
            }
            let snap = lab.snapshot().await;
            assert!(snap.banks.iter().all(|b| b.active_node == to), "round {round} → {to}: {snap:#?}");
        }
    }
    let delayed: Vec<u64> = lab.nodes.iter().map(|n| n.stats().delayed).collect();
    assert!(
        contexts > 0,
        "no switchover found a request in flight to hand over (delayed by A, B: {delayed:?})"
    );
    eprintln!(
        "{} jobs of {BANKS} banks done after {:?}; {contexts} contexts handed over; longest hold {hold_max_us} µs",
        2 * ROUND_TRIPS,
        started.elapsed()
    );

    // Nothing lost, late or misrouted so far: every request sent before now has been
    // answered or has timed out in mups by the end of this wait.
    tokio::time::sleep(REQUEST_TIMEOUT + Duration::from_millis(300)).await;
    let before_kill = lab.snapshot().await;
    for b in &before_kill.banks {
        let c = &b.counters;
        assert_eq!(
            (c.timeouts, c.fo_timeouts, c.late, c.no_route, c.undeliverable),
            (0, 0, 0, 0, 0),
            "{} before the kill: {c:?}",
            b.id
        );
        assert_eq!(
            (c.unmatched_from_node, c.unmatched_from_bank, c.duplicates_dropped, c.bad_messages),
            (0, 0, 0, 0),
            "{} before the kill: {c:?}",
            b.id
        );
        assert!(c.requests_to_node > 0 && c.fo_requests_to_bank > 0, "{}: no traffic both ways: {c:?}", b.id);
    }

    // Node A stops answering, so bank requests are surely in flight on it, then dies.
    lab.nodes[0].set_rules(vec!["delay=60000".parse().unwrap()]).unwrap();
    wait_node(&lab.nodes[0], "requests held by node A", |s| s.inflight >= 10).await;
    lab.nodes[0].die().await;
    let a = lab.nodes[0].stats();
    let snap = lab
        .wait_until("every bank on B", |s| !s.nodes[0].up && s.banks.iter().all(|b| b.active_node == "B"))
        .await;
    assert!(snap.nodes[1].up);
    let failover = lab.job(last_job + 1).await.expect("the automatic failover is recorded as a job");
    assert!(failover.reason.contains("automatic failover"), "{failover:#?}");
    assert_all_switched(&failover, "A", "B");

    // A restarted node A: mups reconnects to it; the banks stay on B (no failback).
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(lab.restart_node(0).await);
    let snap = lab.wait_until("node A back up", |s| s.nodes.iter().all(|n| n.up)).await;
    assert!(snap.banks.iter().all(|b| b.active_node == "B"), "a restarted node took banks back: {snap:#?}");
    assert!(lab.job(last_job + 2).await.is_none(), "no job after the failover");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // B stops originating and every request it has out is answered; then the banks stop.
    lab.nodes[1].pause_origination(true);
    // Past one origination period, no tick that began before the pause is under way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_node(&lab.nodes[1], "B's originated requests answered", |s| s.originated_inflight == 0).await;
    stop.send(true).unwrap();
    let mut lost = std::collections::BTreeMap::new();
    let mut fo_answered_by_banks = 0;
    let mut sent = 0;
    for (id, run) in runs {
        let report = run.await.unwrap().unwrap_or_else(|e| panic!("{id}: {e}"));
        let c = &report.counters;
        let pretty = || serde_json::to_string_pretty(&report).unwrap();
        assert_eq!(report.disconnects.total, 0, "{id}: a bank saw a disconnect: {}", pretty());
        assert_eq!((c.duplicates, c.unmatched, c.malformed), (0, 0, 0), "{id}: {}", pretty());
        assert_eq!(c.answered + c.lost, c.sent, "{id}");
        assert_eq!(c.fo_answered, c.fo_requests, "{id}: the bank answers every FO request");
        // Only what was in flight on A when it died can be lost.
        assert!(c.lost <= u64::from(SESSIONS * PIPELINE), "{id}: lost {} of {}", c.lost, c.sent);
        assert!(c.fo_requests > 0, "{id}: no FO-originated request reached the bank");
        lost.insert(id, c.lost);
        fo_answered_by_banks += c.fo_answered;
        sent += c.sent;
    }
    let lost_total: u64 = lost.values().sum();
    eprintln!("banks sent {sent} requests; {lost_total} lost with node A; after {:?}", started.elapsed());
    assert!(lost_total > 0, "the test meant to have requests in flight on node A when it died");

    // mups counted each of them as a timeout, and nothing else timed out.
    let snap = lab
        .wait_until("the lost requests timed out in mups", |s| {
            s.banks.iter().map(|b| b.counters.timeouts).sum::<u64>() >= lost_total
        })
        .await;
    for b in &snap.banks {
        let c = &b.counters;
        assert_eq!(c.timeouts, lost[&b.id], "{}: mups timeouts vs requests lost at the bank: {c:?}", b.id);
        assert_eq!((c.no_route, c.unmatched_from_node, c.duplicates_dropped), (0, 0, 0), "{}: {c:?}", b.id);
    }

    // The FO-originated side: every request answered back to the node that had it.
    let b_stats = lab.nodes[1].stats();
    let a2 = lab.nodes[0].stats();
    assert_eq!(b_stats.originated_inflight, 0, "{b_stats:#?}");
    for (name, s) in [("A", &a), ("B", &b_stats)] {
        assert_eq!(
            (
                s.originated_timed_out,
                s.unmatched_responses,
                s.late_responses,
                s.nacks_sent,
                s.commands_ignored
            ),
            (0, 0, 0, 0, 0),
            "node {name}: {s:#?}"
        );
        // One SYNC_BEGIN per bank per switch job, one ACTIVATE and DEACTIVATE per round trip.
        let per_node = (BANKS * 2 * ROUND_TRIPS) as u64;
        assert_eq!(command(s, "SYNC_BEGIN"), per_node, "node {name}");
        assert_eq!(command(s, "ACTIVATE"), per_node / 2, "node {name}");
        assert_eq!(command(s, "DEACTIVATE"), per_node / 2, "node {name}");
    }
    assert_eq!(a.contexts_sent + b_stats.contexts_sent, contexts, "contexts the jobs reported");
    assert_eq!(a.contexts_received + b_stats.contexts_received, contexts);
    // A's requests out when it died are the only ones without an answer at the node
    // that had them. A response that reaches the node that handed its request over
    // (instead of the one that took it) shows here: answered at the old node, left in
    // flight at the new one.
    let out_on_dead_a = a.originated_inflight;
    assert_eq!(
        a.originated_sent + b_stats.originated_sent,
        a.originated_answered + b_stats.originated_answered + out_on_dead_a,
        "originated requests: A {a:#?} B {b_stats:#?}"
    );
    assert!(
        fo_answered_by_banks >= a.originated_answered + b_stats.originated_answered
            && fo_answered_by_banks <= a.originated_answered + b_stats.originated_answered + out_on_dead_a,
        "banks answered {fo_answered_by_banks} FO requests: A {a:#?} B {b_stats:#?}"
    );
    // The restarted A originates nothing (inactive for every bank); the only answers
    // it may get are those to the dead A's requests, queued by mups while A was down.
    assert_eq!(a2.originated_sent, 0);
    assert!(a2.unmatched_responses <= out_on_dead_a, "{a2:#?}");
    assert!(b_stats.originated_answered > 0 && a.originated_answered > 0);
    let fo_timeouts: u64 = snap.banks.iter().map(|b| b.counters.fo_timeouts).sum();
    assert!(fo_timeouts <= out_on_dead_a, "{:#?}", counters_by_bank(&snap));
    eprintln!(
        "FO side: A originated {} (answered {}, {} out when it died), B {} (answered {}); took {:?}",
        a.originated_sent,
        a.originated_answered,
        out_on_dead_a,
        b_stats.originated_sent,
        b_stats.originated_answered,
        started.elapsed()
    );
    lab.stop().await;
}
