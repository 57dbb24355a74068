//! axum integration: a route table in which every route declares who may call it, the guard that
//! enforces it, CSRF on cookie-authenticated mutations, security headers and limits, and the
//! `/api/v1` routes for login, users, tokens and the audit log.
//!
//! # Deny by default
//!
//! Routes are added with [`Routes::route`], which takes the method, the path, the handler and an
//! [`Access`], records `(method, path, access)` in a table and wraps the handler in the guard
//! for that access. [`harden`] then refuses (403) any request that reaches a route *not* in the
//! table, so a route added with plain `Router::route` is unreachable rather than open. Tests can
//! enumerate [`Routes::table`].
//!
//! # Authentication
//!
//! A request with an `Authorization` header is authenticated by it alone (`Bearer <token>`:
//! an API token or the configured bootstrap token); its cookies are ignored, so a browser's
//! session can never lend rights to an API call. Otherwise the session cookie
//! [`SESSION_COOKIE`] is used. The guard puts the [`Principal`] and the [`Auth`] into the
//! request's extensions; handlers take them as extractors (`p: Principal`,
//! `Extension(auth): Extension<Auth>`).
//!
//! # CSRF
//!
//! A POST, PUT, PATCH or DELETE authenticated by cookie must carry the session's CSRF token in
//! [`CSRF_HEADER`] (synchronizer token, see [`super::sessions`]), or it gets 403 `csrf`. Bearer
//! requests need none: a browser never adds that header by itself. The session cookie is also
//! `SameSite=Strict`. Login has no session yet; it refuses a cross-site `Origin` or
//! `Sec-Fetch-Site`, and only accepts `application/json`, which a cross-site form cannot send.
//!
//! # Client address
//!
//! Rate limits and the audit log use the TCP peer address, from axum's `ConnectInfo`: serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`. Forwarding headers are not trusted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{MethodFilter, on};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Role;
use super::audit::{self, ExportFormat, Filter, Outcome, Record};
use super::secret;
use super::service::{Auth, AuthError, Principal, UserPatch, Via};

/// Name of the session cookie. The `__Host-` prefix makes browsers accept it only with
/// `Secure`, `Path=/` and no `Domain`, so neither plain HTTP nor a sibling host can plant one.
pub const SESSION_COOKIE: &str = "__Host-mups_session";

/// Header carrying the CSRF token on cookie-authenticated mutations.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone, unauthenticated: only login, health and metrics should be.
    Public,
    /// A principal with at least this role.
    Role(Role),
}

/// One declared route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredRoute {
    /// Method.
    pub method: Method,
    /// Path as given to the router (`/api/v1/users/{name}`).
    pub path: String,
    /// Who may call it.
    pub access: Access,
}

/// A router under construction whose routes each declare an [`Access`].
pub struct Routes<S = ()> {
    auth: Auth,
    router: Router<S>,
    table: Vec<DeclaredRoute>,
}

#[derive(Clone)]
struct Guard {
    auth: Auth,
    access: Access,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// An empty table.
    pub fn new(auth: &Auth) -> Self {
        Self { auth: auth.clone(), router: Router::new(), table: Vec::new() }
    }

    /// Adds `handler` for `method` on `path`, callable as `access` says.
    ///
    /// # Panics
    ///
    /// If `method` is not one axum routes (CONNECT is not), or the same method and path are
    /// declared twice: both are programming errors that must fail at startup.
    pub fn route<H, T>(mut self, method: Method, path: &str, handler: H, access: Access) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        assert!(
            !self.table.iter().any(|r| r.method == method && r.path == path),
            "{method} {path} declared twice"
        );
        let guard = Guard { auth: self.auth.clone(), access };
        let method_router =
            on(filter, handler).route_layer(middleware::from_fn_with_state(guard, guard_layer));
        self.router = self.router.route(path, method_router);
        self.table.push(DeclaredRoute { method, path: path.to_owned(), access });
        self
    }

    /// The routes declared so far.
    pub fn table(&self) -> &[DeclaredRoute] {
        &self.table
    }

    /// The router and its table, for [`harden`] (when other layers go in between).
    pub fn into_parts(self) -> (Router<S>, Arc<[DeclaredRoute]>) {
        (self.router, self.table.into())
    }

    /// The router with [`harden`] applied: the usual end of construction.
    pub fn into_router(self, opts: &HttpOptions) -> Router<S> {
        let (router, table) = self.into_parts();
        harden(router, table, opts)
    }
}

/// Limits and transport facts for [`harden`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Served over TLS: send HSTS.
    pub tls: bool,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest time to produce a response head (streams may then run longer).
    pub timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { tls: false, body_limit: 64 * 1024, timeout: Duration::from_secs(30) }
    }
}

/// Applies, to every route of `router`: refusal of routes not in `table`, security headers, a
/// body size limit and a timeout. Add no route after this: it would get none of them.
pub fn harden<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    table: Arc<[DeclaredRoute]>,
    opts: &HttpOptions,
) -> Router<S> {
    let tls = opts.tls;
    router
        .layer(middleware::from_fn_with_state(table, deny_undeclared))
        .layer(middleware::map_response(move |res: Response| async move { security_headers(res, tls) }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(opts.body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            opts.timeout,
        ))
}

async fn deny_undeclared(State(table): State<Arc<[DeclaredRoute]>>, req: Request, next: Next) -> Response {
    let Some(matched) = req.extensions().get::<MatchedPath>() else {
        // No route matched: the router answers 404 or 405 itself.
        return next.run(req).await;
    };
    // axum serves HEAD with the GET handler.
    let method = if req.method() == Method::HEAD { Method::GET } else { req.method().clone() };
    if table.iter().any(|r| r.method == method && r.path == matched.as_str()) {
        next.run(req).await
    } else {
        tracing::error!(method = %req.method(), path = matched.as_str(), "route declares no access; refused");
        AuthError::Forbidden("this route declares no access rule".to_owned()).into_response()
    }
}

fn security_headers(mut res: Response, tls: bool) -> Response {
    let h = res.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, "default-src 'self'; script-src 'self'; frame-ancestors 'none'");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    // API answers carry user lists, tokens and state; no cache should keep them.
    set(header::CACHE_CONTROL, "no-store");
    if tls {
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    res
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Csrf => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut res =
            (status, Json(json!({"code": self.code(), "message": self.to_string()}))).into_response();
        match self {
            Self::Unauthorized => {
                res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited { retry_after } => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            _ => {}
        }
        res
    }
}

/// The client's address (the TCP peer), if the server was started with connect info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    fn of(ext: &axum::http::Extensions) -> Self {
        Self(ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// The guard's principal; 401 on a route that has none (a `Public` one).
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = AuthError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or(AuthError::Unauthorized)
    }
}

/// Appends an audit entry from async code (the write is fsynced, so it runs on a blocking
/// thread); a failure is logged. For route handlers outside this module, e.g. switchovers.
pub async fn record(auth: &Auth, rec: Record) {
    let auth = auth.clone();
    let _ = tokio::task::spawn_blocking(move || auth.record_or_log(rec)).await;
}

/// Runs blocking `f` (argon2, file writes) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuthError> + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AuthError::Internal(format!("worker failed: {e}")))?
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn is_mutation(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

async fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    source: Option<IpAddr>,
) -> Result<Principal, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthError::Unauthorized)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Unauthorized);
        }
        let (a, token) = (auth.clone(), token.trim().to_owned());
        let p = blocking(move || a.authenticate_bearer(&token, source)).await?;
        if auth.take_last_use_dirty() {
            let a = auth.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = a.save_store() {
                    tracing::warn!(error = %e, "recording token last use failed");
                }
            });
        }
        return Ok(p);
    }
    match session_cookie(headers) {
        Some(id) => auth.authenticate_session(id),
        None => Err(AuthError::Unauthorized),
    }
}

async fn guard_layer(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(g.auth.clone());
    let Access::Role(required) = g.access else { return next.run(req).await };
    let source = ClientIp::of(req.extensions()).0;
    let p = match authenticate(&g.auth, req.headers(), source).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let target = req.extensions().get::<MatchedPath>().map(|m| format!("{} {}", req.method(), m.as_str()));
    let deny = |why: &str| {
        let mut rec = Auth::record_for(&p, source, "access", target.as_deref(), Outcome::Denied);
        rec.message = Some(why.to_owned());
        rec
    };
    if p.role < required {
        record(&g.auth, deny(&format!("needs role {required}"))).await;
        return AuthError::Forbidden(format!("this needs the {required} role")).into_response();
    }
    if p.via == Via::Session && is_mutation(req.method()) {
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        let ok = matches!((sent, &p.csrf), (Some(s), Some(want)) if secret::secrets_equal(s, want));
        if !ok {
            record(&g.auth, deny("missing or wrong CSRF token")).await;
            return AuthError::Csrf.into_response();
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

/// Adds the access-control API to `routes`:
///
/// | Method | Path | Access |
/// |---|---|---|
/// | POST | `/api/v1/login` | public |
/// | POST | `/api/v1/logout` | viewer |
/// | GET | `/api/v1/me` | viewer |
/// | GET, POST | `/api/v1/users` | admin |
/// | PATCH, DELETE | `/api/v1/users/{name}` | admin |
/// | GET, POST | `/api/v1/tokens` | admin |
/// | DELETE | `/api/v1/tokens/{id}` | admin |
/// | GET | `/api/v1/audit`, `/api/v1/audit/export` | admin |
///
/// The audit log is admin-only (not viewer) because failed logins record the name typed, which
/// is sometimes a password typed in the wrong field.
pub fn api_routes<S: Clone + Send + Sync + 'static>(routes: Routes<S>) -> Routes<S> {
    let admin = Access::Role(Role::Admin);
    let viewer = Access::Role(Role::Viewer);
    routes
        .route(Method::POST, "/api/v1/login", login, Access::Public)
        .route(Method::POST, "/api/v1/logout", logout, viewer)
        .route(Method::GET, "/api/v1/me", me, viewer)
        .route(Method::GET, "/api/v1/users", list_users, admin)
        .route(Method::POST, "/api/v1/users", add_user, admin)
        .route(Method::PATCH, "/api/v1/users/{name}", update_user, admin)
        .route(Method::DELETE, "/api/v1/users/{name}", delete_user, admin)
        .route(Method::GET, "/api/v1/tokens", list_tokens, admin)
        .route(Method::POST, "/api/v1/tokens", create_token, admin)
        .route(Method::DELETE, "/api/v1/tokens/{id}", revoke_token, admin)
        .route(Method::GET, "/api/v1/audit", audit_list, admin)
        .route(Method::GET, "/api/v1/audit/export", audit_export, admin)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, AuthError> {
    body.map(|Json(b)| b).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AuthError::TooLarge
        } else {
            AuthError::BadRequest(e.body_text())
        }
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AuthError> {
    q.map(|Query(q)| q).map_err(|e| AuthError::BadRequest(e.body_text()))
}

/// Body of `POST /api/v1/login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

/// A login from another site (login CSRF: the victim's browser logged into the attacker's
/// account). Absent headers pass: non-browser clients send neither.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match origin {
        None => false,
        Some(o) => {
            let authority = o.split_once("://").map_or(o, |(_, rest)| rest);
            host != Some(authority)
        }
    }
}

fn set_cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .expect("cookie values are base64url")
}

async fn login(
    Extension(auth): Extension<Auth>,
    ClientIp(source): ClientIp,
    headers: HeaderMap,
    body: Result<Json<LoginBody>, JsonRejection>,
) -> Response {
    if cross_site(&headers) {
        return AuthError::Csrf.into_response();
    }
    let body = match json_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let previous = session_cookie(&headers).map(str::to_owned);
    let a = auth.clone();
    let _permit = auth.hash_permit().await;
    let r = blocking(move || a.login(&body.user, &body.password, source, previous.as_deref())).await;
    match r {
        Ok(ok) => {
            let cfg = auth.config().sessions;
            let cookie = set_cookie(&ok.session.id, cfg.absolute.as_secs());
            let body = json!({
                "user": ok.user,
                "role": ok.role,
                "csrf_token": ok.session.csrf,
                "idle_timeout_s": cfg.idle.as_secs(),
                "expires": ok.session.absolute_expiry
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
            ([(header::SET_COOKIE, cookie)], Json(body)).into_response()
        }
        Err(AuthError::Unauthorized) => {
            // One message for every failure: it must not tell whether the user exists.
            let mut res = AuthError::Unauthorized.into_response();
            *res.body_mut() = Json(json!({"code": "unauthorized", "message": "wrong user name or password"}))
                .into_response()
                .into_body();
            res
        }
        Err(e) => e.into_response(),
    }
}

async fn logout(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    headers: HeaderMap,
) -> Response {
    if p.via != Via::Session {
        return AuthError::BadRequest("logout ends a browser session; revoke tokens instead".to_owned())
            .into_response();
    }
    if let Some(id) = session_cookie(&headers).map(str::to_owned) {
        let a = auth.clone();
        let _ = tokio::task::spawn_blocking(move || a.logout(&p, &id, source)).await;
    }
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, set_cookie("", 0))]).into_response()
}

async fn me(p: Principal) -> Response {
    Json(json!({
        "actor": p.actor,
        "user": p.user,
        "role": p.role,
        "via": p.via,
        "csrf_token": p.csrf,
    }))
    .into_response()
}

async fn list_users(Extension(auth): Extension<Auth>) -> Response {
    Json(json!({"users": auth.users()})).into_response()
}

/// Body of `POST /api/v1/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: Role,
    password: String,
}

async fn add_user(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Response {
    let r = async {
        let b = json_body(body)?;
        let _permit = auth.hash_permit().await;
        let a = auth.clone();
        blocking(move || a.add_user(&p, source, &b.name, b.role, &b.password)).await
    }
    .await;
    match r {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Body of `PATCH /api/v1/users/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    version: u64,
    role: Option<Role>,
    password: Option<String>,
    disabled: Option<bool>,
}

async fn update_user(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    Path(name): Path<String>,
    body: Result<Json<UserUpdate>, JsonRejection>,
) -> Response {
    let r = async {
        let b = json_body(body)?;
        let _permit = auth.hash_permit().await;
        let a = auth.clone();
        let patch = UserPatch { role: b.role, password: b.password, disabled: b.disabled };
        blocking(move || a.update_user(&p, source, &name, b.version, patch)).await
    }
    .await;
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query of `DELETE /api/v1/users/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: u64,
}

async fn delete_user(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    Path(name): Path<String>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Response {
    let r = async {
        let version = query(q)?.version;
        let a = auth.clone();
        blocking(move || a.delete_user(&p, source, &name, version)).await
    }
    .await;
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_tokens(Extension(auth): Extension<Auth>) -> Response {
    Json(json!({"tokens": auth.tokens()})).into_response()
}

/// Body of `POST /api/v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    label: String,
    role: Role,
    expires_in_days: Option<u32>,
}

async fn create_token(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    body: Result<Json<NewToken>, JsonRejection>,
) -> Response {
    let r = async {
        let b = json_body(body)?;
        let lifetime = b.expires_in_days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        let a = auth.clone();
        blocking(move || a.create_token(&p, source, &b.label, b.role, lifetime)).await
    }
    .await;
    match r {
        Ok(t) => (StatusCode::CREATED, Json(t)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_token(
    Extension(auth): Extension<Auth>,
    p: Principal,
    ClientIp(source): ClientIp,
    Path(id): Path<String>,
) -> Response {
    let a = auth.clone();
    match blocking(move || a.revoke_token(&p, source, &id)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn audit_list(Extension(auth): Extension<Auth>, q: Result<Query<Filter>, QueryRejection>) -> Response {
    let r = async {
        let filter = query(q)?;
        blocking(move || auth.audit_query(&filter)).await
    }
    .await;
    match r {
        Ok(entries) => Json(json!({"entries": entries})).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Query of `GET /api/v1/audit/export`: the [`Filter`] fields plus `format`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: ExportFormat,
    actor: Option<String>,
    action: Option<String>,
    result: Option<Outcome>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<time::OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    until: Option<time::OffsetDateTime>,
    limit: Option<usize>,
}

async fn audit_export(
    Extension(auth): Extension<Auth>,
    q: Result<Query<ExportQuery>, QueryRejection>,
) -> Response {
    let r = async {
        let q = query(q)?;
        let filter = Filter {
            actor: q.actor,
            action: q.action,
            result: q.result,
            since: q.since,
            until: q.until,
            limit: q.limit,
        };
        let format = q.format;
        blocking(move || {
            let entries = auth.audit_query(&filter)?;
            let mut out = Vec::new();
            match format {
                ExportFormat::Jsonl => audit::export_jsonl(&entries, &mut out),
                ExportFormat::Csv => audit::export_csv(&entries, &mut out),
            }
            .map_err(|e| AuthError::Internal(e.to_string()))?;
            Ok((format, out))
        })
        .await
    }
    .await;
    match r {
        Ok((format, body)) => {
            let (ctype, name) = match format {
                ExportFormat::Jsonl => ("application/jsonl", "audit.jsonl"),
                ExportFormat::Csv => ("text/csv; charset=utf-8", "audit.csv"),
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            ([(header::CONTENT_TYPE, ctype.to_owned()), (header::CONTENT_DISPOSITION, disposition)], body)
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
