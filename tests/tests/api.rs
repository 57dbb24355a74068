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
