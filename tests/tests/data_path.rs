//! Flows F1 and F2 end to end: banks with four layouts and four framings send
//! requests through the real `pups` and `mups` to FO node simulators and back, while
//! the nodes send FO-originated requests the other way. Nothing may be lost,
//! duplicated or unmatched, and no bank may see a disconnect.

use std::time::Duration;

use e2e::{Lab, bank_sim_config, counters_by_bank, default_banks};
use sim::bank::{self, BankSimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_both_ways_through_every_layout_and_framing() {
    let lab = Lab::start("data-path", default_banks()).await;
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            requests: Some(900),
            sign_on: true,
            echo_idle: Some(Duration::from_millis(300)),
            grace: Duration::from_secs(10),
            ..bank_sim_config(&lab, b, 3, 400.0)
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, std::future::pending::<()>()))));
    }
    let mut total_fo = 0;
    for (id, run) in runs {
        let report = run.await.unwrap().unwrap_or_else(|e| panic!("{id}: {e}"));
        let c = &report.counters;
        assert!(report.clean, "{id}: not clean: {}", serde_json::to_string_pretty(&report).unwrap());
        // 900 financial requests plus each session's sign-on (and echoes when idle).
        assert!(c.sent >= 900, "{id}: sent {}", c.sent);
        assert_eq!((c.answered, c.lost, c.duplicates, c.unmatched), (c.sent, 0, 0, 0), "{id}");
        assert_eq!(report.disconnects.total, 0, "{id}: a bank saw a disconnect");
        assert_eq!(c.fo_requests, c.fo_answered, "{id}: FO-originated requests not all answered");
        total_fo += c.fo_answered;
    }
    assert!(total_fo > 0, "the nodes originated nothing");

    let snap = lab.snapshot().await;
    for b in &snap.banks {
        let c = &b.counters;
        assert_eq!(
            (c.timeouts, c.late, c.unmatched_from_node, c.unmatched_from_bank, c.bad_messages, c.no_route),
            (0, 0, 0, 0, 0, 0),
            "{}: {:#?}",
            b.id,
            counters_by_bank(&snap)
        );
        assert!(c.requests_to_node >= 900, "{}: {c:?}", b.id);
    }
    for node in &lab.nodes {
        let s = node.stats();
        assert_eq!(
            (s.unmatched_responses, s.parse_errors, s.protocol_errors),
            (0, 0, 0),
            "node {}",
            s.node_id
        );
    }
    lab.stop().await;
}
