//! The management HTTP server (axum): `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/state`, and FO switchover jobs (`POST /api/v1/banks/{id}/switch`,
//! `POST /api/v1/switch`, `GET /api/v1/jobs/{id}`). Served on the management address, never the bank VIP.
//! Every `/api` route needs the configured bearer token; without a configured
//! token, `/api` refuses every request.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Input, Snapshot};
use crate::metrics::Metrics;
use crate::switching::{BankSelection, SwitchRequest};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Metrics to encode.
    pub metrics: Metrics,
    /// The router's input, for snapshots.
    pub router: mpsc::Sender<Input>,
    /// The `/api` bearer token.
    pub api_token: Option<Arc<str>>,
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/state", get(api_state))
        .route("/api/v1/banks/{id}/switch", post(switch_bank))
        .route("/api/v1/switch", post(switch_bulk))
        .route("/api/v1/jobs/{id}", get(job))
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
