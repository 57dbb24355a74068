//! Flow F4 end to end: node A dies under load; its banks move to node B at once
//! (heartbeat loss, default detection 3 × 100 ms); banks see no disconnect; the
//! requests that were in flight on A time out and are counted; traffic goes on
//! through B.

use std::time::Duration;

use e2e::{Lab, bank_sim_config, default_banks};
use sim::bank::{self, BankSimConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_s_banks_move_to_the_reserve_and_sessions_stay_up() {
    let lab = Lab::start("failover", default_banks()).await;
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            duration: Some(Duration::from_secs(3)),
            // Requests lost with node A wait this long at the bank.
            timeout: Duration::from_secs(2),
            grace: Duration::from_secs(4),
            ..bank_sim_config(&lab, b, 2, 200.0)
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, std::future::pending::<()>()))));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Node A stops answering just before it dies, so requests are surely in flight on it.
    lab.nodes[0].set_rules(vec!["delay=60000".parse().unwrap()]).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    lab.nodes[0].die().await;
    let snap = lab
        .wait_until("every bank on B", |s| s.banks.iter().all(|b| b.active_node == "B") && !s.nodes[0].up)
        .await;
    assert!(snap.nodes[1].up);

    let mut lost_at_banks = 0;
    for (id, run) in runs {
        let report = run.await.unwrap().unwrap();
        let c = &report.counters;
        assert_eq!(report.disconnects.total, 0, "{id}: a bank saw a disconnect");
        assert_eq!((c.duplicates, c.unmatched), (0, 0), "{id}");
        // Only requests that were on A when it died may be missing, and only for A's banks.
        let on_a = ["bank-bin", "bank-bcd"].contains(&id.as_str());
        assert!(on_a || c.lost == 0, "{id} was on B and lost {}", c.lost);
        assert!(c.lost <= 2 * 4, "{id}: more lost ({}) than could be in flight", c.lost);
        assert!(c.answered > c.sent / 2, "{id}: traffic did not go on after the failover");
        lost_at_banks += c.lost;
    }
    assert!(lost_at_banks > 0, "the test meant to have requests in flight on the dead node");
    // mups counted every one of them as a timeout (none silently dropped).
    let snap = lab
        .wait_until("timeouts counted", |s| {
            s.banks.iter().map(|b| b.counters.timeouts).sum::<u64>() >= lost_at_banks
        })
        .await;
    let timeouts: u64 = snap.banks.iter().map(|b| b.counters.timeouts).sum();
    assert_eq!(timeouts, lost_at_banks);
    lab.stop().await;
}
