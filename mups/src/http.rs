//! The management HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, and under
//! `/api/v1`: state, banks and nodes, FO switchover jobs (`POST /banks/{id}/switch`,
//! `POST /switch`, `GET /jobs`, `GET /jobs/{id}`), maintenance flags, and the event
//! stream (`GET /events`, server-sent events). See `docs/api.md`. Served on the
//! management address, never the bank VIP.
//! Every `/api` route needs the configured bearer token; without a configured
//! token, `/api` refuses every request.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post, put};
use futures::Stream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::driver::{BankView, Input, MaintenanceRequest, MaintenanceTarget, Snapshot};
use crate::metrics::Metrics;
use crate::switching::{ApiEvent, BankSelection, SwitchRequest};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Metrics to encode.
    pub metrics: Metrics,
    /// The router's input, for snapshots.
    pub router: mpsc::Sender<Input>,
    /// The `/api` bearer token.
    pub api_token: Option<Arc<str>>,
    /// Job progress, route and node changes, for `GET /api/v1/events`.
    pub events: broadcast::Sender<ApiEvent>,
    /// Ends event streams at shutdown (graceful shutdown waits for open responses).
    pub shutdown: watch::Receiver<bool>,
    /// The appliance pair task.
    pub appliance: mpsc::Sender<crate::appliance::ApplianceCommand>,
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/state", get(api_state))
        .route("/api/v1/banks/{id}/switch", post(switch_bank))
        .route("/api/v1/switch", post(switch_bulk))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/banks", get(banks))
        .route("/api/v1/banks/{id}", get(bank))
        .route("/api/v1/banks/{id}/maintenance", put(bank_maintenance))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{id}/maintenance", put(node_maintenance))
        .route("/api/v1/events", get(events))
        .route("/api/v1/appliance", get(appliance_status))
        .route("/api/v1/appliance/switchover", post(appliance_switchover))
        .route("/api/v1/appliance/maintenance", put(appliance_maintenance))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(api)
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let ok = match (&state.api_token, given.and_then(|v| v.strip_prefix("Bearer "))) {
        (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
        _ => false,
    };
    if ok {
        next.run(req).await
    } else {
        let body = Json(json!({"code": "unauthorized", "message": "a valid bearer token is required"}));
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
}

/// The router's state, or 503 if the router does not answer.
pub async fn snapshot(router: &mpsc::Sender<Input>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    router.send(Input::Snapshot(tx)).await.ok()?;
    rx.await.ok()
}

async fn api_state(State(state): State<AppState>) -> Response {
    match snapshot(&state.router).await {
        Some(s) => Json(s).into_response(),
        None => unavailable("the router is not running"),
    }
}

fn unavailable(message: &str) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": "unavailable", "message": message})))
        .into_response()
}

/// Ready when `pups` is attached and every bank's active node is up.
async fn readyz(State(state): State<AppState>) -> Response {
    let Some(s) = snapshot(&state.router).await else { return unavailable("the router is not running") };
    let down: Vec<&str> = s
        .banks
        .iter()
        .filter(|b| !s.nodes.iter().any(|n| n.id == b.active_node && n.up))
        .map(|b| b.id.as_str())
        .collect();
    if s.pups_attached && down.is_empty() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "pups_attached": s.pups_attached,
            "banks_without_node": down})),
        )
            .into_response()
    }
}

/// Body of `POST /api/v1/banks/{id}/switch`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchOne {
    to: String,
    mode: proto::switchover::Mode,
    reason: String,
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"code": "bad_request", "message": message}))).into_response()
}

async fn start_job(state: &AppState, req: SwitchRequest) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.router.send(Input::Switch(req, tx)).await.is_err() {
        return unavailable("the router is not running");
    }
    match rx.await {
        Ok(Ok(id)) => (StatusCode::ACCEPTED, Json(json!({"job_id": id}))).into_response(),
        Ok(Err(message)) => bad_request(&message),
        Err(_) => unavailable("the router is not running"),
    }
}

async fn switch_bank(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<SwitchOne>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    let req = SwitchRequest {
        banks: BankSelection::Some(vec![id]),
        from: None,
        to: body.to,
        mode: body.mode,
        reason: body.reason,
    };
    start_job(&state, req).await
}

async fn switch_bulk(
    State(state): State<AppState>,
    body: Result<Json<SwitchRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(req)) => start_job(&state, req).await,
        Err(e) => bad_request(&e.body_text()),
    }
}

async fn job(State(state): State<AppState>, Path(id): Path<u64>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.router.send(Input::Job(id, tx)).await.is_err() {
        return unavailable("the router is not running");
    }
    match rx.await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"code": "not_found", "message": "no such job"})))
            .into_response(),
        Err(_) => unavailable("the router is not running"),
    }
}

fn not_found(message: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"code": "not_found", "message": message}))).into_response()
}

/// One bank as `GET /api/v1/banks` shows it: sessions with their transport and
/// application state side by side.
fn bank_json(b: &BankView) -> serde_json::Value {
    let sessions: Vec<serde_json::Value> = b
        .sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "peer": s.peer,
                // pups reports live TCP sessions only: a listed session is up.
                "transport": "up",
                "application": proto::router::app_state_name(s.app_state),
                "inflight": s.inflight,
                "idle_secs": s.idle_secs,
                "since_echo_secs": s.since_echo_secs,
            })
        })
        .collect();
    json!({
        "id": b.id,
        "name": b.name,
        "active_node": b.active_node,
        "intent_node": b.intent_node,
        "maintenance": b.maintenance,
        "switching_job": b.switching_job,
        "inflight": b.inflight,
        "rate_per_s": (b.rate_per_s * 10.0).round() / 10.0,
        "sessions": sessions,
        "counters": b.counters,
    })
}

async fn banks(State(state): State<AppState>) -> Response {
    match snapshot(&state.router).await {
        Some(s) => Json(json!({"banks": s.banks.iter().map(bank_json).collect::<Vec<_>>()})).into_response(),
        None => unavailable("the router is not running"),
    }
}

async fn bank(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(s) = snapshot(&state.router).await else { return unavailable("the router is not running") };
    match s.banks.iter().find(|b| b.id == id) {
        Some(b) => Json(bank_json(b)).into_response(),
        None => not_found("no such bank"),
    }
}

async fn nodes(State(state): State<AppState>) -> Response {
    match snapshot(&state.router).await {
        Some(s) => Json(json!({"nodes": s.nodes})).into_response(),
        None => unavailable("the router is not running"),
    }
}

/// `GET /api/v1/jobs?limit=N`: the most recent jobs, newest first (default 50, at most 1,000).
#[derive(Debug, serde::Deserialize)]
struct JobsQuery {
    limit: Option<usize>,
}

async fn jobs(State(state): State<AppState>, Query(q): Query<JobsQuery>) -> Response {
    let (tx, rx) = oneshot::channel();
    let limit = q.limit.unwrap_or(50).min(1_000);
    if state.router.send(Input::Jobs(limit, tx)).await.is_err() {
        return unavailable("the router is not running");
    }
    match rx.await {
        Ok(jobs) => Json(json!({"jobs": jobs})).into_response(),
        Err(_) => unavailable("the router is not running"),
    }
}

/// Body of the maintenance routes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    maintenance: bool,
    reason: String,
}

async fn set_maintenance(
    state: &AppState,
    target: MaintenanceTarget,
    body: Result<Json<MaintenanceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    if body.reason.trim().is_empty() {
        return bad_request("a reason is required");
    }
    let (tx, rx) = oneshot::channel();
    let req = MaintenanceRequest { target, on: body.maintenance, reason: body.reason };
    if state.router.send(Input::Maintenance(req, tx)).await.is_err() {
        return unavailable("the router is not running");
    }
    match rx.await {
        Ok(Ok(())) => Json(json!({"maintenance": body.maintenance})).into_response(),
        Ok(Err(message)) => not_found(&message),
        Err(_) => unavailable("the router is not running"),
    }
}

async fn bank_maintenance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<MaintenanceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    set_maintenance(&state, MaintenanceTarget::Bank(id), body).await
}

async fn node_maintenance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<MaintenanceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    set_maintenance(&state, MaintenanceTarget::Node(id), body).await
}

/// `GET /api/v1/events?job=N`: only that job's events.
#[derive(Debug, serde::Deserialize)]
struct EventsQuery {
    job: Option<u64>,
}

/// Server-sent events: each [`ApiEvent`] as one event named by its type, its JSON
/// as data. A reader that falls behind gets a `lagged` event with how many it
/// missed (it should re-read the jobs it follows), never a stalled driver.
async fn events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>>> {
    let rx = state.events.subscribe();
    let stream = futures::stream::unfold((rx, state.shutdown), move |(mut rx, mut stop)| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = stop.wait_for(|&s| s) => return None,
            };
            let event = match received {
                Ok(e) if q.job.is_some() && e.job() != q.job => continue,
                Ok(e) => sse::Event::default()
                    .event(e.name())
                    .json_data(&e)
                    .unwrap_or_else(|_| sse::Event::default().event("error")),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    sse::Event::default().event("lagged").data(format!("{{\"missed\":{missed}}}"))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            return Some((Ok(event), (rx, stop)));
        }
    });
    Sse::new(stream).keep_alive(sse::KeepAlive::default())
}

async fn appliance_status(State(state): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    let cmd = crate::appliance::ApplianceCommand::Status(tx);
    if state.appliance.send(cmd).await.is_err() {
        return unavailable("the appliance task is not running");
    }
    match rx.await {
        Ok(status) => Json(status).into_response(),
        Err(_) => unavailable("the appliance task is not running"),
    }
}

/// Body of `POST /api/v1/appliance/switchover`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    reason: String,
}

async fn appliance_switchover(
    State(state): State<AppState>,
    body: Result<Json<SwitchoverBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    if body.reason.trim().is_empty() {
        return bad_request("a reason is required");
    }
    let (tx, rx) = oneshot::channel();
    let cmd = crate::appliance::ApplianceCommand::Switchover { reason: body.reason, reply: tx };
    if state.appliance.send(cmd).await.is_err() {
        return unavailable("the appliance task is not running");
    }
    match rx.await {
        Ok(Ok(id)) => (StatusCode::ACCEPTED, Json(json!({"switch_id": id}))).into_response(),
        Ok(Err(message)) => {
            (StatusCode::CONFLICT, Json(json!({"code": "conflict", "message": message}))).into_response()
        }
        Err(_) => unavailable("the appliance task is not running"),
    }
}

async fn appliance_maintenance(
    State(state): State<AppState>,
    body: Result<Json<MaintenanceBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(&e.body_text()),
    };
    if body.reason.trim().is_empty() {
        return bad_request("a reason is required");
    }
    let cmd = crate::appliance::ApplianceCommand::Maintenance { on: body.maintenance, reason: body.reason };
    if state.appliance.send(cmd).await.is_err() {
        return unavailable("the appliance task is not running");
    }
    Json(json!({"maintenance": body.maintenance})).into_response()
}
