//! The switchover API over HTTP, as automation uses it: the token, validation,
//! jobs.

use std::time::Duration;

use e2e::{API_TOKEN, Lab, default_banks, http};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_api_needs_the_token_validates_and_reports_jobs() {
    let lab = Lab::start("api", default_banks()).await;
    let body = r#"{"to": "B", "mode": "force", "reason": "maintenance of node A"}"#;
    let path = "/api/v1/banks/bank-bin/switch";
    assert_eq!(http(&lab, "POST", path, None, Some(body)).await.0, 401);
    assert_eq!(http(&lab, "POST", path, Some("wrong"), Some(body)).await.0, 401);
    let (status, err) = http(&lab, "POST", path, Some(API_TOKEN), Some(r#"{"to": "B"}"#)).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = http(&lab, "POST", "/api/v1/banks/nobody/switch", Some(API_TOKEN), Some(body)).await;
    assert_eq!(status, 400);
    assert!(err.contains("no bank"), "{err}");
    let (status, err) =
        http(&lab, "POST", path, Some(API_TOKEN), Some(r#"{"to": "C", "mode": "force", "reason": "x"}"#))
            .await;
    assert_eq!((status, err.contains("no FO node")), (400, true), "{err}");

    let (status, accepted) = http(&lab, "POST", path, Some(API_TOKEN), Some(body)).await;
    assert_eq!(status, 202, "{accepted}");
    let id = serde_json::from_str::<Value>(&accepted).unwrap()["job_id"].as_u64().unwrap();
    let mut job = Value::Null;
    for _ in 0..1000 {
        let (status, text) = http(&lab, "GET", &format!("/api/v1/jobs/{id}"), Some(API_TOKEN), None).await;
        assert_eq!(status, 200);
        job = serde_json::from_str(&text).unwrap();
        if job["state"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["banks"]["bank-bin"]["outcome"]["switched"], true, "{job:#}");
    assert_eq!(job["reason"], "maintenance of node A");

    // Bulk: every bank on B back to A.
    let bulk = r#"{"banks": "all", "from": "B", "to": "A", "mode": "drain", "reason": "back"}"#;
    let (status, text) = http(&lab, "POST", "/api/v1/switch", Some(API_TOKEN), Some(bulk)).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(http(&lab, "GET", "/api/v1/jobs/999", Some(API_TOKEN), None).await.0, 404);
    lab.stop().await;
}

async fn get_json(lab: &Lab, path: &str) -> Value {
    let (status, text) = http(lab, "GET", path, Some(API_TOKEN), None).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Reads server-sent events from `path` until one named `until` whose data
/// satisfies `done`; returns every (event, data) read. `started` runs once the
/// stream is open, so nothing it causes can be missed.
async fn read_events(
    lab: &Lab,
    path: &str,
    started: impl std::future::Future<Output = ()>,
    until: &str,
    done: impl Fn(&Value) -> bool,
) -> Vec<(String, Value)> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut s = tokio::net::TcpStream::connect(lab.mups.http_addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer {API_TOKEN}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(s).lines();
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.contains(" 200 "), "{status}");
    while !lines.next_line().await.unwrap().unwrap().is_empty() {}
    started.await;
    let mut events = Vec::new();
    let mut name = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                let data: Value = serde_json::from_str(data).unwrap();
                let last = name == until && done(&data);
                events.push((std::mem::take(&mut name), data));
                if last {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the awaited event arrives");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banks_nodes_maintenance_and_the_event_stream() {
    let lab = Lab::start("api-banks", default_banks()).await;
    let banks = get_json(&lab, "/api/v1/banks").await;
    let list = banks["banks"].as_array().unwrap();
    assert_eq!(list.len(), lab.banks.len());
    let bin = list.iter().find(|b| b["id"] == "bank-bin").unwrap();
    assert_eq!((bin["active_node"].as_str(), bin["intent_node"].as_str()), (Some("A"), Some("A")), "{bin:#}");
    for key in ["name", "maintenance", "inflight", "rate_per_s", "sessions", "counters", "switching_job"] {
        assert!(bin.get(key).is_some(), "GET /api/v1/banks lacks {key}: {bin:#}");
    }
    assert_eq!(get_json(&lab, "/api/v1/banks/bank-bin").await["id"], "bank-bin");
    assert_eq!(http(&lab, "GET", "/api/v1/banks/nobody", Some(API_TOKEN), None).await.0, 404);
    assert_eq!(http(&lab, "GET", "/api/v1/banks", None, None).await.0, 401);
    let nodes = get_json(&lab, "/api/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["id"], "A");
    assert_eq!(nodes["nodes"][0]["up"], true);
    assert_eq!(nodes["nodes"][0]["banks_active"], 2, "{nodes:#}");

    // A node in maintenance takes no bank; the flag is reported and can be cleared.
    assert_eq!(nodes["nodes"][1]["version"], 0, "{nodes:#}");
    let on = r#"{"maintenance": true, "reason": "patching B", "version": 0}"#;
    assert_eq!(http(&lab, "PUT", "/api/v1/nodes/B/maintenance", Some(API_TOKEN), Some(on)).await.0, 200);
    assert_eq!(http(&lab, "PUT", "/api/v1/nodes/C/maintenance", Some(API_TOKEN), Some(on)).await.0, 404);
    // Another operator's stale copy of node B (version 0) is refused, not applied.
    let (status, err) = http(&lab, "PUT", "/api/v1/nodes/B/maintenance", Some(API_TOKEN), Some(on)).await;
    assert_eq!(status, 409, "{err}");
    assert!(err.contains("\"code\":\"conflict\""), "{err}");
    let no_reason = r#"{"maintenance": true, "reason": " ", "version": 1}"#;
    assert_eq!(
        http(&lab, "PUT", "/api/v1/nodes/B/maintenance", Some(API_TOKEN), Some(no_reason)).await.0,
        400
    );
    let to_b = r#"{"to": "B", "mode": "drain", "reason": "move"}"#;
    let (status, err) =
        http(&lab, "POST", "/api/v1/banks/bank-bin/switch", Some(API_TOKEN), Some(to_b)).await;
    assert_eq!(status, 400);
    assert!(err.contains("maintenance"), "{err}");
    assert_eq!(get_json(&lab, "/api/v1/nodes").await["nodes"][1]["maintenance"], true);
    assert_eq!(get_json(&lab, "/api/v1/nodes").await["nodes"][1]["version"], 1);
    let off = r#"{"maintenance": false, "reason": "patched", "version": 1}"#;
    assert_eq!(http(&lab, "PUT", "/api/v1/nodes/B/maintenance", Some(API_TOKEN), Some(off)).await.0, 200);
    let bank_on = r#"{"maintenance": true, "reason": "bank asked us not to move it", "version": 0}"#;
    assert_eq!(
        http(&lab, "PUT", "/api/v1/banks/bank-bcd/maintenance", Some(API_TOKEN), Some(bank_on)).await.0,
        200
    );
    assert_eq!(get_json(&lab, "/api/v1/banks/bank-bcd").await["maintenance"], true);

    // The event stream shows a job from start to finish, bank by bank.
    let job_id = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let id_slot = job_id.clone();
    let lab_ref = &lab;
    let events = read_events(
        &lab,
        "/api/v1/events",
        async move {
            let (status, text) =
                http(lab_ref, "POST", "/api/v1/banks/bank-bin/switch", Some(API_TOKEN), Some(to_b)).await;
            assert_eq!(status, 202, "{text}");
            let id = serde_json::from_str::<Value>(&text).unwrap()["job_id"].as_u64().unwrap();
            id_slot.store(id, std::sync::atomic::Ordering::SeqCst);
        },
        "job_done",
        |data| data["job"].as_u64() == Some(job_id.load(std::sync::atomic::Ordering::SeqCst)),
    )
    .await;
    let id = job_id.load(std::sync::atomic::Ordering::SeqCst);
    let names: Vec<&str> =
        events.iter().filter(|(_, d)| d["job"].as_u64() == Some(id)).map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"job_started"), "{events:#?}");
    let phases: Vec<&str> = events
        .iter()
        .filter(|(n, d)| n == "job_bank" && d["job"].as_u64() == Some(id))
        .map(|(_, d)| d["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases.last(), Some(&"committed"), "{events:#?}");
    assert!(phases.len() >= 3, "the stream shows the phases on the way: {phases:?}");
    assert!(
        events.iter().any(|(n, d)| n == "route" && d["bank"] == "bank-bin" && d["active"] == "B"),
        "{events:#?}"
    );
    let done = &events.last().unwrap().1;
    assert_eq!(done["summary"]["switched"], 1, "{done:#}");
    let jobs = get_json(&lab, "/api/v1/jobs?limit=5").await;
    assert_eq!(jobs["jobs"][0]["id"].as_u64(), Some(id), "newest first: {jobs:#}");
    assert_eq!(jobs["jobs"][0]["summary"]["switched"], 1);
    lab.stop().await;
}
