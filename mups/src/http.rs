//! The management HTTP server (axum): the operator console (`/`, `/console/*`), `/metrics`,
//! `/healthz`, `/readyz`, and under `/api/v1`: state, banks and nodes, FO switchover jobs,
//! maintenance flags, the event stream, the OpenAPI document, and the access-control routes
//! of [`crate::auth::http`] (login, users, tokens, audit). See `docs/api.md`. Served on the
//! management address, never the bank VIP; HTTPS when `[mups] tls_cert`/`tls_key` are set.
//!
//! Every route is declared through [`crate::auth::http::Routes::route`] with its access
//! rule ([`routes`] is the whole table): viewer reads, operator switches and sets
//! maintenance, admin manages users, tokens and the audit log. Every mutation here is
//! audited with the actor, source, target and reason.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Json, Response};
use futures::Stream;
use proto::config::MupsSection;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::auth::Role;
use crate::auth::audit::{Outcome, Record};
use crate::auth::http::{Access, ClientIp, HttpOptions, Routes, api_routes, harden, record};
use crate::auth::service::{Auth, AuthConfig, OpenError, Principal};
use crate::driver::{BankView, Input, MaintenanceError, MaintenanceRequest, MaintenanceTarget, Snapshot};
use crate::metrics::Metrics;
use crate::switching::{ApiEvent, BankSelection, SwitchRequest};

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Metrics to encode.
    pub metrics: Metrics,
    /// The router's input, for snapshots, jobs and maintenance.
    pub router: mpsc::Sender<Input>,
    /// Job progress, route and node changes, stats, for `GET /api/v1/events`.
    pub events: broadcast::Sender<ApiEvent>,
    /// Ends event streams at shutdown (graceful shutdown waits for open responses).
    pub shutdown: watch::Receiver<bool>,
    /// The appliance pair task.
    pub appliance: mpsc::Sender<crate::appliance::ApplianceCommand>,
    /// Users, sessions, tokens, the audit log.
    pub auth: Auth,
    /// Users and tokens survive a restart (a `[mups] state_dir` is set). Without it they
    /// may not be created: they would vanish at the next start.
    pub durable_users: bool,
}

/// An error of these routes: JSON `{"code", "message"}` with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// No such bank, node or job.
    #[error("{0}")]
    NotFound(String),
    /// Stale `version`, or a state that forbids the change.
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit.
    #[error("the request body is too large")]
    TooLarge,
    /// The router task does not answer (stopping).
    #[error("the router is not running")]
    Unavailable,
}

impl ApiError {
    /// Stable code for API clients (the same vocabulary as the access-control errors).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"code": self.code(), "message": self.to_string()}))).into_response()
    }
}

impl From<MaintenanceError> for ApiError {
    fn from(e: MaintenanceError) -> Self {
        match e {
            MaintenanceError::NotFound { .. } => Self::NotFound(e.to_string()),
            MaintenanceError::Conflict { .. } => Self::Conflict(e.to_string()),
        }
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Every route with its access rule. The table ([`Routes::table`]) is what the tests and
/// the OpenAPI check enumerate.
pub fn routes(auth: &Auth) -> Routes<AppState> {
    let public = Access::Public;
    let viewer = Access::Role(Role::Viewer);
    let operator = Access::Role(Role::Operator);
    let routes = Routes::new(auth)
        .route(Method::GET, "/", console_index, public)
        .route(Method::GET, "/console/{file}", console_file, public)
        .route(Method::GET, "/metrics", metrics, public)
        .route(Method::GET, "/healthz", healthz, public)
        .route(Method::GET, "/readyz", readyz, public)
        .route(Method::GET, "/api/v1/openapi.json", openapi, public)
        .route(Method::GET, "/api/v1/state", api_state, viewer)
        .route(Method::GET, "/api/v1/banks", banks, viewer)
        .route(Method::GET, "/api/v1/banks/{id}", bank, viewer)
        .route(Method::GET, "/api/v1/nodes", nodes, viewer)
        .route(Method::GET, "/api/v1/jobs", jobs, viewer)
        .route(Method::GET, "/api/v1/jobs/{id}", job, viewer)
        .route(Method::GET, "/api/v1/events", events, viewer)
        .route(Method::POST, "/api/v1/banks/{id}/switch", switch_bank, operator)
        .route(Method::POST, "/api/v1/switch", switch_bulk, operator)
        .route(Method::PUT, "/api/v1/banks/{id}/maintenance", bank_maintenance, operator)
        .route(Method::PUT, "/api/v1/nodes/{id}/maintenance", node_maintenance, operator)
        .route(Method::GET, "/api/v1/appliance", appliance_status, viewer)
        .route(Method::POST, "/api/v1/appliance/switchover", appliance_switchover, operator)
        .route(Method::PUT, "/api/v1/appliance/maintenance", appliance_maintenance, operator);
    api_routes(routes)
}

/// The whole HTTP surface, hardened (undeclared routes refused, security headers, body
/// limit, timeout).
pub fn app(state: AppState, opts: &HttpOptions) -> Router {
    let (router, table) = routes(&state.auth).into_parts();
    let router = router.layer(middleware::from_fn_with_state(state.clone(), refuse_volatile_users));
    harden(router, table, opts).with_state(state)
}

/// Without a state directory, users and tokens would live in a temporary directory and
/// vanish at the next start, silently locking operators out or resurrecting nothing: refuse
/// to create them (the bootstrap token still works for automation).
async fn refuse_volatile_users(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let creates =
        req.method() == Method::POST && matches!(req.uri().path(), "/api/v1/users" | "/api/v1/tokens");
    if creates && !state.durable_users {
        return ApiError::Conflict(
            "users and API tokens need [mups] state_dir (they would be lost at restart)".to_owned(),
        )
        .into_response();
    }
    next.run(req).await
}

/// The management listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Users, tokens or the audit log could not be opened.
    #[error("access control state: {0}")]
    Auth(#[from] OpenError),
    /// The temporary access-control directory could not be made.
    #[error("temporary access control directory: {0}")]
    TempDir(std::io::Error),
    /// TLS certificate or key.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The listener could not be handed to the TLS server.
    #[error("management listener: {0}")]
    Listener(std::io::Error),
}

/// What [`start`] needs from the rest of `mups`.
pub struct Parts {
    /// Metrics to encode.
    pub metrics: Metrics,
    /// The router's input.
    pub router: mpsc::Sender<Input>,
    /// The event stream.
    pub events: broadcast::Sender<ApiEvent>,
    /// Set to `true` at shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// The appliance pair task.
    pub appliance: mpsc::Sender<crate::appliance::ApplianceCommand>,
}

/// A management server ready to serve.
pub struct Server {
    /// The application (tests call it in-process with `tower::ServiceExt::oneshot`).
    pub app: Router,
    /// Access control (tests create users through it).
    pub auth: Auth,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Kept until the server ends: the access-control directory when no state_dir is set.
    temp_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Opens access control (in `[mups] state_dir`, or a private temporary directory without
    /// one), loads TLS if configured, and builds the application.
    pub fn new(cfg: &MupsSection, parts: Parts) -> Result<Self, HttpError> {
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let (dir, temp_dir) = match &cfg.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t =
                    tempfile::Builder::new().prefix("mups-auth-").tempdir().map_err(HttpError::TempDir)?;
                tracing::warn!(dir = %t.path().display(),
                    "no [mups] state_dir: users and API tokens cannot be created, and the audit log \
                     is temporary; only the bootstrap token (api_token) works");
                (t.path().to_owned(), Some(t))
            }
        };
        let auth =
            Auth::open(&dir, AuthConfig { bootstrap_token: cfg.api_token.clone(), ..AuthConfig::default() })?;
        let state = AppState {
            metrics: parts.metrics,
            router: parts.router,
            events: parts.events,
            shutdown: parts.shutdown,
            appliance: parts.appliance,
            auth: auth.clone(),
            durable_users: cfg.state_dir.is_some(),
        };
        let opts = HttpOptions { tls: tls.is_some(), ..HttpOptions::default() };
        Ok(Self { app: app(state, &opts), auth, tls, temp_dir })
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves on `listener` until `stop` turns `true`; open requests get a moment to finish.
    pub async fn serve(self, listener: tokio::net::TcpListener, mut stop: watch::Receiver<bool>) {
        let service = self.app.into_make_service_with_connect_info::<SocketAddr>();
        let served = match self.tls {
            None => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|&s| s).await;
                    })
                    .await
            }
            Some(cfg) => {
                let handle = axum_server::Handle::new();
                let h = handle.clone();
                tokio::spawn(async move {
                    let _ = stop.wait_for(|&s| s).await;
                    h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
                });
                let config = axum_server::tls_rustls::RustlsConfig::from_config(cfg);
                match listener.into_std().and_then(|l| axum_server::from_tcp_rustls(l, config)) {
                    Ok(server) => server.handle(handle).serve(service).await,
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "management HTTP server failed");
        }
        drop(self.temp_dir);
    }
}

/// The console's files, compiled in: no build step, no CDN, nothing to install.
const CONSOLE: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../console/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("../console/style.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../console/api.js")),
    ("banks.js", "text/javascript; charset=utf-8", include_str!("../console/banks.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_str!("../console/pages.js")),
    ("util.js", "text/javascript; charset=utf-8", include_str!("../console/util.js")),
];

fn console_response(name: &str) -> Response {
    match CONSOLE.iter().find(|(n, _, _)| *n == name) {
        Some((_, ctype, body)) => {
            let mut res = ([(header::CONTENT_TYPE, *ctype)], *body).into_response();
            // The files change only with the binary; revalidating each time is cheap on a
            // management network and never shows a stale console after an upgrade.
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        None => ApiError::NotFound(format!("no console file {name:?}")).into_response(),
    }
}

async fn console_index() -> Response {
    console_response("index.html")
}

async fn console_file(Path(file): Path<String>) -> Response {
    console_response(&file)
}

/// The OpenAPI 3.1 document of every route (hand-written; a test checks it against [`routes`]).
pub const OPENAPI: &str = include_str!("../api/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
}

/// The router's state, or `None` if the router does not answer.
pub async fn snapshot(router: &mpsc::Sender<Input>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    router.send(Input::Snapshot(tx)).await.ok()?;
    rx.await.ok()
}

async fn snapshot_or_503(state: &AppState) -> Result<Snapshot, ApiError> {
    snapshot(&state.router).await.ok_or(ApiError::Unavailable)
}

async fn api_state(State(state): State<AppState>) -> Result<Json<Snapshot>, ApiError> {
    snapshot_or_503(&state).await.map(Json)
}

/// Ready when `pups` is attached and every bank's active node is up.
async fn readyz(State(state): State<AppState>) -> Response {
    let s = match snapshot_or_503(&state).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
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

fn describe(req: &SwitchRequest) -> (String, String) {
    let target = match &req.banks {
        BankSelection::All(_) => "banks:all".to_owned(),
        BankSelection::Some(ids) => format!("banks:{}", ids.join(",")),
    };
    let from = req.from.as_deref().map(|f| format!(" from {f}")).unwrap_or_default();
    let mode = match req.mode {
        proto::switchover::Mode::Drain => "drain",
        proto::switchover::Mode::Force => "force",
    };
    (target, format!("to {}{from}, {mode}", req.to))
}

/// Starts a job and audits it twice: `switch.start` when the router accepts or refuses it,
/// `switch.done` with the per-bank counts when the last bank has finished.
async fn start_job(state: &AppState, p: Principal, source: ClientIp, req: SwitchRequest) -> Response {
    let (target, what) = describe(&req);
    let reason = req.reason.clone();
    let audit = |result: Outcome, message: String| Record {
        reason: Some(reason.clone()),
        message: Some(message),
        ..Auth::record_for(&p, source.0, "switch.start", Some(&target), result)
    };
    // Subscribed before the job exists, so its `job_done` cannot be missed.
    let mut done_rx = state.events.subscribe();
    let (tx, rx) = oneshot::channel();
    if state.router.send(Input::Switch(req, tx)).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    match rx.await {
        Ok(Ok(id)) => {
            record(&state.auth, audit(Outcome::Ok, format!("job {id}: {what}"))).await;
            let mut rec = audit(Outcome::Ok, String::new());
            rec.action = "switch.done".to_owned();
            let (auth, router, mut stop) = (state.auth.clone(), state.router.clone(), state.shutdown.clone());
            tokio::spawn(async move {
                let summary = loop {
                    tokio::select! {
                        ev = done_rx.recv() => match ev {
                            Ok(ApiEvent::JobDone { job, summary }) if job == id => break Some(summary),
                            Ok(_) => {}
                            // Fell behind: the job itself still has the outcome.
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                if let Some(job) = job_of(&router, id).await.filter(|j| j.state == "done") {
                                    break Some(job.summary);
                                }
                            }
                            Err(broadcast::error::RecvError::Closed) => break None,
                        },
                        () = stopped(&mut stop) => break None,
                    }
                };
                let Some(s) = summary else { return };
                rec.result = if s.rolled_back > 0 { Outcome::Failed } else { Outcome::Ok };
                rec.message = Some(format!(
                    "job {id}: {} switched, {} rolled back, {} skipped of {}; hold max {} µs",
                    s.switched, s.rolled_back, s.skipped, s.banks, s.hold_max_micros
                ));
                record(&auth, rec).await;
            });
            (StatusCode::ACCEPTED, Json(json!({"job_id": id}))).into_response()
        }
        Ok(Err(message)) => {
            record(&state.auth, audit(Outcome::Failed, format!("{what}: {message}"))).await;
            ApiError::BadRequest(message).into_response()
        }
        Err(_) => ApiError::Unavailable.into_response(),
    }
}

/// Resolves once shutdown has begun (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

async fn switch_bank(
    State(state): State<AppState>,
    p: Principal,
    source: ClientIp,
    Path(id): Path<String>,
    body: Result<Json<SwitchOne>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let req = SwitchRequest {
        banks: BankSelection::Some(vec![id]),
        from: None,
        to: body.to,
        mode: body.mode,
        reason: body.reason,
    };
    start_job(&state, p, source, req).await
}

async fn switch_bulk(
    State(state): State<AppState>,
    p: Principal,
    source: ClientIp,
    body: Result<Json<SwitchRequest>, JsonRejection>,
) -> Response {
    match json_body(body) {
        Ok(req) => start_job(&state, p, source, req).await,
        Err(e) => e.into_response(),
    }
}

async fn job_of(router: &mpsc::Sender<Input>, id: u64) -> Option<crate::switching::Job> {
    let (tx, rx) = oneshot::channel();
    router.send(Input::Job(id, tx)).await.ok()?;
    rx.await.ok().flatten()
}

async fn job(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return ApiError::BadRequest(format!("job id {id:?} is not a number")).into_response();
    };
    let (tx, rx) = oneshot::channel();
    if state.router.send(Input::Job(id, tx)).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    match rx.await {
        Ok(Some(job)) => Json(job).into_response(),
        Ok(None) => ApiError::NotFound("no such job".to_owned()).into_response(),
        Err(_) => ApiError::Unavailable.into_response(),
    }
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
        "version": b.version,
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

async fn banks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = snapshot_or_503(&state).await?;
    Ok(Json(json!({"banks": s.banks.iter().map(bank_json).collect::<Vec<_>>()})).into_response())
}

async fn bank(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let s = snapshot_or_503(&state).await?;
    match s.banks.iter().find(|b| b.id == id) {
        Some(b) => Ok(Json(bank_json(b)).into_response()),
        None => Err(ApiError::NotFound(format!("no bank {id:?}"))),
    }
}

async fn nodes(State(state): State<AppState>) -> Result<Response, ApiError> {
    let s = snapshot_or_503(&state).await?;
    Ok(Json(json!({"nodes": s.nodes})).into_response())
}

/// `GET /api/v1/jobs?limit=N`: the most recent jobs, newest first (default 50, at most 1,000).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    limit: Option<usize>,
}

async fn jobs(State(state): State<AppState>, q: Result<Query<JobsQuery>, QueryRejection>) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = oneshot::channel();
    let limit = q.limit.unwrap_or(50).min(1_000);
    if state.router.send(Input::Jobs(limit, tx)).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    match rx.await {
        Ok(jobs) => Json(json!({"jobs": jobs})).into_response(),
        Err(_) => ApiError::Unavailable.into_response(),
    }
}

/// Body of the maintenance routes. `version` is required: a flag set on a state the
/// operator has not seen (another operator changed it meanwhile) would undo their change.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    maintenance: bool,
    reason: String,
    version: u64,
}

async fn set_maintenance(
    state: &AppState,
    p: Principal,
    source: ClientIp,
    target: MaintenanceTarget,
    body: Result<Json<MaintenanceBody>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if body.reason.trim().is_empty() {
        return ApiError::BadRequest("a reason is required".to_owned()).into_response();
    }
    let (kind, id) = match &target {
        MaintenanceTarget::Bank(id) => ("bank", id.clone()),
        MaintenanceTarget::Node(id) => ("node", id.clone()),
    };
    let (tx, rx) = oneshot::channel();
    let req = MaintenanceRequest {
        target,
        on: body.maintenance,
        reason: body.reason.clone(),
        version: Some(body.version),
    };
    if state.router.send(Input::Maintenance(req, tx)).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    let result = match rx.await {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiError::Unavailable),
    };
    let (outcome, message) = match &result {
        Ok(v) => (Outcome::Ok, format!("maintenance {} (version {} → {v})", body.maintenance, body.version)),
        Err(e) => (Outcome::Failed, format!("maintenance {}: {e}", body.maintenance)),
    };
    let rec = Record {
        reason: Some(body.reason),
        message: Some(message),
        ..Auth::record_for(
            &p,
            source.0,
            &format!("{kind}.maintenance"),
            Some(&format!("{kind}:{id}")),
            outcome,
        )
    };
    record(&state.auth, rec).await;
    match result {
        Ok(version) => Json(json!({"maintenance": body.maintenance, "version": version})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn bank_maintenance(
    State(state): State<AppState>,
    p: Principal,
    source: ClientIp,
    Path(id): Path<String>,
    body: Result<Json<MaintenanceBody>, JsonRejection>,
) -> Response {
    set_maintenance(&state, p, source, MaintenanceTarget::Bank(id), body).await
}

async fn node_maintenance(
    State(state): State<AppState>,
    p: Principal,
    source: ClientIp,
    Path(id): Path<String>,
    body: Result<Json<MaintenanceBody>, JsonRejection>,
) -> Response {
    set_maintenance(&state, p, source, MaintenanceTarget::Node(id), body).await
}

/// `GET /api/v1/events?job=N`: only that job's events.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    job: Option<u64>,
}

/// Server-sent events: each [`ApiEvent`] as one event named by its type, its JSON
/// as data. A reader that falls behind gets a `lagged` event with how many it
/// missed (it should re-read the jobs it follows), never a stalled driver.
async fn events(State(state): State<AppState>, q: Result<Query<EventsQuery>, QueryRejection>) -> Response {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    event_stream(state, q.job).into_response()
}

fn event_stream(
    state: AppState,
    job: Option<u64>,
) -> Sse<impl Stream<Item = Result<sse::Event, std::convert::Infallible>>> {
    let rx = state.events.subscribe();
    let stream = futures::stream::unfold((rx, state.shutdown), move |(mut rx, mut stop)| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = stop.wait_for(|&s| s) => return None,
            };
            let event = match received {
                Ok(e) if job.is_some() && e.job() != job => continue,
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
        return ApiError::Unavailable.into_response();
    }
    match rx.await {
        Ok(status) => Json(status).into_response(),
        Err(_) => ApiError::Unavailable.into_response(),
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
    p: Principal,
    source: ClientIp,
    body: Result<Json<SwitchoverBody>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if body.reason.trim().is_empty() {
        return ApiError::BadRequest("a reason is required".to_owned()).into_response();
    }
    let (tx, rx) = oneshot::channel();
    let cmd = crate::appliance::ApplianceCommand::Switchover { reason: body.reason.clone(), reply: tx };
    if state.appliance.send(cmd).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    let result = match rx.await {
        Ok(r) => r.map_err(ApiError::Conflict),
        Err(_) => Err(ApiError::Unavailable),
    };
    let (outcome, message) = match &result {
        Ok(id) => (Outcome::Ok, format!("switchover {id} started")),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    let rec = Record {
        reason: Some(body.reason),
        message: Some(message),
        ..Auth::record_for(&p, source.0, "appliance.switchover", Some("appliance"), outcome)
    };
    record(&state.auth, rec).await;
    match result {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({"switch_id": id}))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Body of `PUT /api/v1/appliance/maintenance`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplianceMaintenanceBody {
    maintenance: bool,
    reason: String,
}

async fn appliance_maintenance(
    State(state): State<AppState>,
    p: Principal,
    source: ClientIp,
    body: Result<Json<ApplianceMaintenanceBody>, JsonRejection>,
) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if body.reason.trim().is_empty() {
        return ApiError::BadRequest("a reason is required".to_owned()).into_response();
    }
    let cmd =
        crate::appliance::ApplianceCommand::Maintenance { on: body.maintenance, reason: body.reason.clone() };
    if state.appliance.send(cmd).await.is_err() {
        return ApiError::Unavailable.into_response();
    }
    let rec = Record {
        reason: Some(body.reason),
        message: Some(format!("maintenance {}", body.maintenance)),
        ..Auth::record_for(&p, source.0, "appliance.maintenance", Some("appliance"), Outcome::Ok)
    };
    record(&state.auth, rec).await;
    Json(json!({"maintenance": body.maintenance})).into_response()
}
