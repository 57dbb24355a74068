//! Node loss policies end to end, through the real `pups` and `mups`:
//! - the decline policy: requests in flight on a node that dies are answered at
//!   once with DE39 91, so the banks lose nothing and wait for nothing;
//! - automatic failback (opt-in): banks return to their admin intent once the node
//!   is back and stable, and not while it flaps;
//! - routes, admin intent and maintenance flags survive a `mups` restart.

use std::time::Duration;

use e2e::{API_TOKEN, Lab, LabOptions, bank_sim_config, default_banks, http};
use sim::bank::{self, BankSimConfig};

const DECLINE: &str = "on_node_loss = \"decline\"\ndecline_code = \"91\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_decline_policy_a_dead_node_s_requests_are_answered_91_and_nothing_is_lost() {
    let options = LabOptions { bank: DECLINE.into(), ..Default::default() };
    let lab = Lab::start_with("decline", default_banks(), options).await;
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            duration: Some(Duration::from_secs(3)),
            timeout: Duration::from_secs(2),
            grace: Duration::from_secs(4),
            ..bank_sim_config(&lab, b, 2, 200.0)
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, std::future::pending::<()>()))));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Node A holds its answers, then dies: requests are surely in flight on it.
    lab.nodes[0].set_rules(vec!["delay=60000".parse().unwrap()]).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    lab.nodes[0].die().await;
    lab.wait_until("every bank on B", |s| s.banks.iter().all(|b| b.active_node == "B")).await;

    let mut declined_at_banks = 0;
    for (id, run) in runs {
        let report = run.await.unwrap().unwrap();
        let c = &report.counters;
        assert_eq!(report.disconnects.total, 0, "{id}: a bank saw a disconnect");
        assert_eq!((c.lost, c.duplicates, c.unmatched), (0, 0, 0), "{id}: {c:?}");
        assert!(c.answered > c.sent / 2, "{id}: traffic did not go on after the failover");
        declined_at_banks += report.response_codes.get("91").copied().unwrap_or(0);
    }
    assert!(declined_at_banks > 0, "the test meant to have requests in flight on the dead node");
    let snap = lab.snapshot().await;
    let declined: u64 = snap.banks.iter().map(|b| b.counters.declined).sum();
    let timeouts: u64 = snap.banks.iter().map(|b| b.counters.timeouts).sum();
    assert_eq!((declined, timeouts), (declined_at_banks, 0), "every decline counted, none timed out");
    let (_, metrics) = http(&lab, "GET", "/metrics", None, None).await;
    assert!(metrics.contains("mups_declined_total{bank=\"bank-bin\",node=\"A\"}"), "{metrics}");
    lab.stop().await;
}

fn job_reasons(jobs: &serde_json::Value) -> Vec<String> {
    jobs["jobs"].as_array().unwrap().iter().map(|j| j["reason"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_waits_for_a_stable_node_and_a_flapping_node_gets_no_bank_back() {
    let options = LabOptions {
        mups: "auto_failback = true\nfailback_after_s = 1\nflap_max_downs = 2\nflap_window_s = 120".into(),
        bank: DECLINE.into(),
        ..Default::default()
    };
    let mut lab = Lab::start_with("failback", default_banks(), options).await;
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            duration: Some(Duration::from_secs(7)),
            grace: Duration::from_secs(4),
            ..bank_sim_config(&lab, b, 1, 50.0)
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, std::future::pending::<()>()))));
    }
    let on_a: Vec<String> = lab.banks.iter().filter(|b| b.active == "A").map(|b| b.id.clone()).collect();

    // First loss: the banks go to B, and come back once A is up again for 1 s.
    lab.nodes[0].die().await;
    lab.wait_until("A's banks on B", |s| s.banks.iter().all(|b| b.active_node == "B")).await;
    let snap = lab.snapshot().await;
    for b in snap.banks.iter().filter(|b| on_a.contains(&b.id)) {
        assert_eq!(b.intent_node, "A", "a failover does not change the admin intent");
    }
    lab.revive_node(0).await;
    let back = lab
        .wait_until("A's banks back on A", |s| {
            s.banks.iter().filter(|b| on_a.contains(&b.id)).all(|b| b.active_node == "A")
        })
        .await;
    let a = &back.nodes[0];
    assert!(a.up_for_secs.unwrap() >= 1.0, "failback came before the node was stable: {a:?}");
    let (_, jobs) = http(&lab, "GET", "/api/v1/jobs", Some(API_TOKEN), None).await;
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    assert!(job_reasons(&jobs).iter().any(|r| r == "automatic failback to node A"), "{jobs:#}");
    let failback =
        jobs["jobs"].as_array().unwrap().iter().find(|j| j["reason"] == "automatic failback to node A");
    assert_eq!(failback.unwrap()["summary"]["switched"], 2, "{jobs:#}");

    // Second loss within the window: A is flapping. Back up, it gets no bank.
    lab.nodes[0].die().await;
    lab.wait_until("A's banks on B again", |s| s.banks.iter().all(|b| b.active_node == "B")).await;
    lab.revive_node(0).await;
    lab.wait_until("A up again", |s| s.nodes[0].up).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let snap = lab.snapshot().await;
    assert!(snap.nodes[0].flapping, "{:?}", snap.nodes[0]);
    assert_eq!(snap.nodes[0].recent_down_events, 2);
    assert!(snap.banks.iter().all(|b| b.active_node == "B"), "no failback to a flapping node: {snap:#?}");
    let (_, metrics) = http(&lab, "GET", "/metrics", None, None).await;
    assert!(metrics.contains("mups_node_flapping{node=\"A\"} 1"), "{metrics}");

    for (id, run) in runs {
        let report = run.await.unwrap().unwrap();
        let c = &report.counters;
        assert_eq!(report.disconnects.total, 0, "{id}: a bank saw a disconnect");
        assert_eq!((c.lost, c.duplicates, c.unmatched), (0, 0, 0), "{id}: {c:?}");
    }
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_intent_and_maintenance_survive_a_mups_restart() {
    let options = LabOptions { state_dir: true, ..Default::default() };
    let lab = Lab::start_with("persist", default_banks(), options).await;
    let to_b = r#"{"to": "B", "mode": "force", "reason": "move before restart"}"#;
    let (status, text) =
        http(&lab, "POST", "/api/v1/banks/bank-bin/switch", Some(API_TOKEN), Some(to_b)).await;
    assert_eq!(status, 202, "{text}");
    lab.wait_until("bank-bin on B", |s| s.banks.iter().any(|b| b.id == "bank-bin" && b.active_node == "B"))
        .await;
    // Neither has had an admin change yet: both are at version 0.
    let on = r#"{"maintenance": true, "reason": "keep it where it is", "version": 0}"#;
    assert_eq!(
        http(&lab, "PUT", "/api/v1/banks/bank-bcd/maintenance", Some(API_TOKEN), Some(on)).await.0,
        200
    );
    assert_eq!(http(&lab, "PUT", "/api/v1/nodes/A/maintenance", Some(API_TOKEN), Some(on)).await.0, 200);

    let lab = lab.restart_mups().await;
    let snap = lab.wait_until("both nodes up", |s| s.nodes.iter().all(|n| n.up)).await;
    let bank = |id: &str| snap.banks.iter().find(|b| b.id == id).unwrap();
    assert_eq!((bank("bank-bin").active_node.as_str(), bank("bank-bin").intent_node.as_str()), ("B", "B"));
    assert!(bank("bank-bcd").maintenance);
    assert!(!bank("bank-ascii").maintenance);
    assert!(snap.nodes[0].maintenance && !snap.nodes[1].maintenance);
    lab.stop().await;
}
