//! Flow F3 end to end: FO switchovers of every bank, A→B and back, force and drain,
//! while the bank simulators send traffic both ways through the real `pups` and
//! `mups`. The banks must see no disconnect, no loss, no duplicate.

use std::time::Duration;

use e2e::{Lab, bank_sim_config, default_banks};
use mups::driver::Input;
use mups::switching::{AllBanks, BankSelection, Job, SwitchRequest};
use proto::switchover::Mode;
use sim::bank::{self, BankSimConfig};
use tokio::sync::oneshot;

async fn switch(lab: &Lab, banks: BankSelection, from: Option<&str>, to: &str, mode: Mode) -> Job {
    let req = SwitchRequest {
        banks,
        from: from.map(str::to_owned),
        to: to.into(),
        mode,
        reason: "e2e test".into(),
    };
    let (tx, rx) = oneshot::channel();
    lab.mups.router.send(Input::Switch(req, tx)).await.unwrap();
    let id = rx.await.unwrap().expect("job accepted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (tx, rx) = oneshot::channel();
        lab.mups.router.send(Input::Job(id, tx)).await.unwrap();
        let job = rx.await.unwrap().expect("job exists");
        if job.state == "done" {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job not done: {job:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bank_switches_back_and_forth_under_load_without_loss() {
    let lab = Lab::start("fo-switch", default_banks()).await;
    let mut runs = Vec::new();
    for b in &lab.banks {
        let cfg = BankSimConfig {
            duration: Some(Duration::from_secs(4)),
            sign_on: true,
            grace: Duration::from_secs(10),
            ..bank_sim_config(&lab, b, 2, 200.0)
        };
        runs.push((b.id.clone(), tokio::spawn(bank::run(cfg, std::future::pending::<()>()))));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = || BankSelection::All(AllBanks::All);
    let mut switched = 0;
    for round in 0..3 {
        let mode = if round % 2 == 0 { Mode::Force } else { Mode::Drain };
        for to in ["B", "A"] {
            let job = switch(&lab, all(), None, to, mode).await;
            for (bank, r) in &job.banks {
                if r.skipped.is_some() {
                    continue;
                }
                let outcome = r.outcome.as_ref().unwrap();
                assert!(outcome.switched, "round {round}, {bank} → {to}: {job:#?}");
                switched += 1;
            }
            let snap = lab.snapshot().await;
            assert!(snap.banks.iter().all(|b| b.active_node == to), "{snap:#?}");
        }
    }
    assert_eq!(switched, 6 * 4 - 2, "every bank but the two already on B switched each time");

    for (id, run) in runs {
        let report = run.await.unwrap().unwrap();
        let c = &report.counters;
        assert!(report.clean, "{id}: {}", serde_json::to_string_pretty(&report).unwrap());
        assert_eq!((c.answered, c.lost, c.duplicates, c.unmatched), (c.sent, 0, 0, 0), "{id}");
        assert_eq!(report.disconnects.total, 0, "{id}");
    }
    let snap = lab.snapshot().await;
    for b in &snap.banks {
        let c = &b.counters;
        assert_eq!(
            (c.timeouts, c.unmatched_from_node, c.no_route, c.duplicates_dropped),
            (0, 0, 0, 0),
            "{}: {c:?}",
            b.id
        );
    }
    lab.stop().await;
}
