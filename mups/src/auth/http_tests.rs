//! In-process API tests: requests go through `tower::ServiceExt::oneshot`, time through a
//! hand-moved clock.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::auth::service::AuthConfig;
use crate::auth::service::tests::{open, test_config};
use crate::auth::testutil::{ManualClock, TempDir};

const BOOT: &str = "bootstrap-secret-for-tests";
const MIN: Duration = Duration::from_secs(60);

struct Api {
    _dir: TempDir,
    clock: ManualClock,
    auth: Auth,
    app: Router,
}

fn routes(auth: &Auth) -> Routes {
    let routes = Routes::new(auth)
        .route(Method::GET, "/t/viewer", |p: Principal| async move { p.actor }, Access::Role(Role::Viewer))
        .route(Method::POST, "/t/operator", || async { "operated" }, Access::Role(Role::Operator))
        .route(Method::POST, "/t/admin", || async { "administered" }, Access::Role(Role::Admin))
        .route(Method::GET, "/t/public", || async { "hello" }, Access::Public);
    api_routes(routes)
}

fn api_with(cfg: AuthConfig, opts: HttpOptions) -> Api {
    let dir = TempDir::new();
    let clock = ManualClock::new();
    let auth = open(&dir, &clock, AuthConfig { bootstrap_token: Some(BOOT.into()), ..cfg });
    let app = routes(&auth).into_router(&opts);
    Api { _dir: dir, clock, auth, app }
}

fn api() -> Api {
    api_with(test_config(), HttpOptions::default())
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

/// A request builder with the pieces these tests vary.
#[derive(Default, Clone)]
struct Req {
    bearer: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
    ip: Option<[u8; 4]>,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn bearer(t: &str) -> Self {
        Self { bearer: Some(t.to_owned()), ..Self::default() }
    }
    fn session(s: &Session) -> Self {
        Self { cookie: Some(s.cookie.clone()), csrf: Some(s.csrf.clone()), ..Self::default() }
    }
    fn no_csrf(mut self) -> Self {
        self.csrf = None;
        self
    }
}

impl Api {
    async fn call(&self, method: Method, uri: &str, req: Req, body: Option<Value>) -> Reply {
        let mut b = Request::builder().method(method).uri(uri).header(header::HOST, "mups.example");
        if let Some(t) = &req.bearer {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(c) = &req.cookie {
            b = b.header(header::COOKIE, format!("theme=dark; {SESSION_COOKIE}={c}"));
        }
        if let Some(c) = &req.csrf {
            b = b.header(CSRF_HEADER, c);
        }
        for (k, v) in &req.headers {
            b = b.header(*k, v);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut request = b.body(body).unwrap();
        let ip = req.ip.unwrap_or([192, 0, 2, 10]);
        request.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40_000))));
        let res = self.app.clone().oneshot(request).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    async fn login_raw(&self, user: &str, password: &str, req: Req) -> Reply {
        self.call(Method::POST, "/api/v1/login", req, Some(json!({"user": user, "password": password}))).await
    }

    async fn login(&self, user: &str, password: &str) -> Session {
        let r = self.login_raw(user, password, Req::default()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        Session::from_reply(&r)
    }

    async fn add_user(&self, name: &str, role: Role, password: &str) {
        let r = self
            .call(
                Method::POST,
                "/api/v1/users",
                Req::bearer(BOOT),
                Some(json!({"name": name, "role": role, "password": password})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    /// A logged-in user of each role.
    async fn with_users(&self) -> (Session, Session, Session) {
        self.add_user("vera", Role::Viewer, "viewer passphrase").await;
        self.add_user("otto", Role::Operator, "operator passphrase").await;
        self.add_user("ada", Role::Admin, "admin passphrase!").await;
        (
            self.login("vera", "viewer passphrase").await,
            self.login("otto", "operator passphrase").await,
            self.login("ada", "admin passphrase!").await,
        )
    }
}

struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

impl Session {
    fn from_reply(r: &Reply) -> Self {
        let set_cookie = r.headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
        let value = set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
        Self { cookie: value, csrf: r.body["csrf_token"].as_str().unwrap().to_owned(), set_cookie }
    }
}

#[tokio::test]
async fn no_credentials_is_401_with_a_json_code() {
    let api = api();
    let r = api.call(Method::GET, "/t/viewer", Req::default(), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    let r = api.call(Method::GET, "/t/viewer", Req::bearer("mups_not-a-token"), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let basic = Req { headers: vec![("authorization", "Basic YTpi".into())], ..Req::default() };
    assert_eq!(api.call(Method::GET, "/t/viewer", basic, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.call(Method::GET, "/t/public", Req::default(), None).await.text, "hello");
}

#[tokio::test]
async fn each_role_reaches_its_routes_and_no_higher_ones() {
    let api = api();
    let (viewer, operator, admin) = api.with_users().await;
    let cases = [
        (&viewer, [StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::FORBIDDEN]),
        (&operator, [StatusCode::OK, StatusCode::OK, StatusCode::FORBIDDEN]),
        (&admin, [StatusCode::OK, StatusCode::OK, StatusCode::OK]),
    ];
    for (s, want) in cases {
        let got = [
            api.call(Method::GET, "/t/viewer", Req::session(s), None).await,
            api.call(Method::POST, "/t/operator", Req::session(s), None).await,
            api.call(Method::POST, "/t/admin", Req::session(s), None).await,
        ];
        assert_eq!(got.each_ref().map(|r| r.status), want);
        for r in got.iter().filter(|r| r.status == StatusCode::FORBIDDEN) {
            assert_eq!(r.code(), "forbidden");
        }
    }
    let r = api.call(Method::GET, "/t/viewer", Req::session(&viewer), None).await;
    assert_eq!(r.text, "vera", "handlers get the principal");
    // Denials are audited.
    let denied =
        api.auth.audit_query(&Filter { action: Some("access".into()), ..Filter::default() }).unwrap();
    assert_eq!(denied.len(), 3);
    assert_eq!(denied[0].actor, "vera");
    assert_eq!(denied[0].target.as_deref(), Some("POST /t/operator"));
    assert_eq!(denied[0].result, Outcome::Denied);
    assert_eq!(denied[0].source.as_deref(), Some("192.0.2.10"));
}

#[tokio::test]
async fn cookie_mutations_need_the_csrf_token() {
    let api = api();
    let (_, operator, admin) = api.with_users().await;
    let r = api.call(Method::POST, "/t/operator", Req::session(&operator).no_csrf(), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf"));
    let wrong = Req { csrf: Some(admin.csrf.clone()), ..Req::session(&operator) };
    let r = api.call(Method::POST, "/t/operator", wrong, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "csrf"), "another session's token is wrong");
    let r = api.call(Method::POST, "/t/operator", Req::session(&operator), None).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "operated"));
    // Reads need none.
    let r = api.call(Method::GET, "/t/viewer", Req::session(&operator).no_csrf(), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // Logout is a mutation too.
    let r = api.call(Method::POST, "/api/v1/logout", Req::session(&operator).no_csrf(), None).await;
    assert_eq!(r.code(), "csrf");
    // /me gives the token back to a reloaded console.
    let r = api.call(Method::GET, "/api/v1/me", Req::session(&operator).no_csrf(), None).await;
    assert_eq!(r.body["csrf_token"], operator.csrf.as_str());
    assert_eq!(r.body["via"], "session");
}

#[tokio::test]
async fn a_bearer_token_ignores_cookies_and_needs_no_csrf() {
    let api = api();
    let (_, _, admin) = api.with_users().await;
    let r = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            Req::session(&admin),
            Some(json!({"label": "ro", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let viewer_token = r.body["token"].as_str().unwrap().to_owned();
    // An admin's cookie does not lift a viewer token.
    let both = Req { bearer: Some(viewer_token.clone()), ..Req::session(&admin) };
    let r = api.call(Method::POST, "/t/admin", both, None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    // A bad token with a good cookie is still refused.
    let bad = Req { bearer: Some("mups_bogus".into()), ..Req::session(&admin) };
    assert_eq!(api.call(Method::GET, "/t/viewer", bad, None).await.status, StatusCode::UNAUTHORIZED);
    // Token mutations need no CSRF header.
    let r = api.call(Method::POST, "/t/admin", Req::bearer(BOOT), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = api.call(Method::GET, "/api/v1/me", Req::bearer(&viewer_token), None).await;
    assert_eq!(
        (r.body["role"].as_str(), r.body["via"].as_str(), r.body["user"].as_str()),
        (Some("viewer"), Some("token"), Some("ada"))
    );
    assert!(r.body["actor"].as_str().unwrap().starts_with("token:tok_"));
    assert!(r.body["csrf_token"].is_null());
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_limit() {
    let api = api();
    let (viewer, _, _) = api.with_users().await;
    api.clock.advance(14 * MIN);
    assert_eq!(api.call(Method::GET, "/t/viewer", Req::session(&viewer), None).await.status, StatusCode::OK);
    api.clock.advance(15 * MIN);
    assert_eq!(
        api.call(Method::GET, "/t/viewer", Req::session(&viewer), None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let s = api.login("vera", "viewer passphrase").await;
    assert!(s.set_cookie.contains("Max-Age=28800"), "{}", s.set_cookie);
    for _ in 0..(8 * 6 - 1) {
        api.clock.advance(10 * MIN);
        assert_eq!(api.call(Method::GET, "/t/viewer", Req::session(&s), None).await.status, StatusCode::OK);
    }
    api.clock.advance(10 * MIN);
    assert_eq!(
        api.call(Method::GET, "/t/viewer", Req::session(&s), None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn login_sets_a_hardened_cookie_and_rotates_the_id() {
    let api = api();
    let (first, _, _) = api.with_users().await;
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(first.set_cookie.split("; ").any(|a| a == attr), "{attr} missing from {}", first.set_cookie);
    }
    assert!(first.set_cookie.starts_with(SESSION_COOKIE));
    // Logging in again from the same browser presents the old cookie: it is dropped.
    let r = api.login_raw("vera", "viewer passphrase", Req::session(&first)).await;
    let second = Session::from_reply(&r);
    assert_ne!(second.cookie, first.cookie);
    assert_eq!(
        api.call(Method::GET, "/t/viewer", Req::session(&first), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.call(Method::GET, "/t/viewer", Req::session(&second), None).await.status, StatusCode::OK);
    // Logout ends it and clears the cookie.
    let r = api.call(Method::POST, "/api/v1/logout", Req::session(&second), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.headers[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        api.call(Method::GET, "/t/viewer", Req::session(&second), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(api.call(Method::POST, "/api/v1/logout", Req::bearer(BOOT), None).await.code(), "bad_request");
}

#[tokio::test]
async fn login_failures_are_generic_and_throttled() {
    let api = api();
    api.with_users().await;
    let unknown = api.login_raw("nobody", "some passphrase", Req::default()).await;
    let wrong = api.login_raw("vera", "some passphrase", Req::default()).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.text, wrong.text, "the answer must not tell whether the user exists");
    assert_eq!(unknown.headers.get(header::SET_COOKIE), None);

    // Per address: 10 failures (2 above and 8 more), then 429 even with the right password.
    for i in 0..8 {
        assert_eq!(
            api.login_raw(&format!("spray{i}"), "x", Req::default()).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = api.login_raw("vera", "viewer passphrase", Req::default()).await;
    assert_eq!((r.status, r.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert_eq!(r.headers[header::RETRY_AFTER], "6");
    // Another address is not affected; the bucket refills.
    let other = Req { ip: Some([198, 51, 100, 1]), ..Req::default() };
    assert_eq!(api.login_raw("vera", "viewer passphrase", other).await.status, StatusCode::OK);
    api.clock.advance(6 * Duration::from_secs(1));
    assert_eq!(api.login_raw("vera", "viewer passphrase", Req::default()).await.status, StatusCode::OK);

    // Per account, from many addresses: after 6 failures the account backs off.
    for i in 0..6u8 {
        let from = Req { ip: Some([203, 0, 113, i]), ..Req::default() };
        assert_eq!(api.login_raw("otto", "guess", from).await.status, StatusCode::UNAUTHORIZED);
    }
    let from = Req { ip: Some([203, 0, 113, 99]), ..Req::default() };
    assert_eq!(api.login_raw("otto", "operator passphrase", from.clone()).await.code(), "rate_limited");
    api.clock.advance(Duration::from_secs(1));
    assert_eq!(api.login_raw("otto", "operator passphrase", from).await.status, StatusCode::OK);

    let audit = api.auth.audit_query(&Filter { action: Some("login".into()), ..Filter::default() }).unwrap();
    assert!(
        audit.iter().any(|e| e.result == Outcome::Denied && e.message.as_deref() == Some("rate limited"))
    );
    assert!(audit.iter().any(|e| e.target.as_deref() == Some("nobody") && e.result == Outcome::Failed));
}

#[tokio::test]
async fn login_refuses_cross_site_requests_and_bad_bodies() {
    let api = api();
    api.with_users().await;
    let evil = Req { headers: vec![("origin", "https://evil.example".into())], ..Req::default() };
    assert_eq!(api.login_raw("vera", "viewer passphrase", evil).await.code(), "csrf");
    let fetch = Req { headers: vec![("sec-fetch-site", "cross-site".into())], ..Req::default() };
    assert_eq!(api.login_raw("vera", "viewer passphrase", fetch).await.code(), "csrf");
    let same = Req { headers: vec![("origin", "https://mups.example".into())], ..Req::default() };
    assert_eq!(api.login_raw("vera", "viewer passphrase", same).await.status, StatusCode::OK);
    let r = api.call(Method::POST, "/api/v1/login", Req::default(), Some(json!({"user": "vera"}))).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "bad_request"));
}

#[tokio::test]
async fn user_updates_with_a_stale_version_get_409() {
    let api = api();
    let (_, _, admin) = api.with_users().await;
    let list = api.call(Method::GET, "/api/v1/users", Req::session(&admin), None).await;
    let vera = list.body["users"].as_array().unwrap().iter().find(|u| u["name"] == "vera").unwrap().clone();
    assert_eq!(vera["version"], 1);
    assert!(vera.get("password_hash").is_none());
    let r = api
        .call(
            Method::PATCH,
            "/api/v1/users/vera",
            Req::session(&admin),
            Some(json!({"version": 1, "role": "operator"})),
        )
        .await;
    assert_eq!((r.status, r.body["version"].as_u64()), (StatusCode::OK, Some(2)), "{}", r.text);
    let r = api
        .call(
            Method::PATCH,
            "/api/v1/users/vera",
            Req::session(&admin),
            Some(json!({"version": 1, "disabled": true})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::CONFLICT, "conflict"));
    let r = api.call(Method::DELETE, "/api/v1/users/vera?version=1", Req::session(&admin), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = api.call(Method::DELETE, "/api/v1/users/vera", Req::session(&admin), None).await;
    assert_eq!(r.code(), "bad_request", "a delete must name the version");
    let r = api.call(Method::DELETE, "/api/v1/users/vera?version=2", Req::session(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = api.call(Method::DELETE, "/api/v1/users/vera?version=2", Req::session(&admin), None).await;
    assert_eq!(r.code(), "not_found");
    // Policy errors are 400 with the reason.
    let r = api
        .call(
            Method::POST,
            "/api/v1/users",
            Req::session(&admin),
            Some(json!({"name": "x1", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_eq!(r.code(), "bad_request");
    assert!(r.body["message"].as_str().unwrap().contains("12"));
    let audit = api.auth.audit_query(&Filter { action: Some("user.".into()), ..Filter::default() }).unwrap();
    let conflicts = audit.iter().filter(|e| {
        e.result == Outcome::Failed && e.message.as_deref().unwrap_or("").starts_with("conflict")
    });
    assert_eq!(conflicts.count(), 2);
}

#[tokio::test]
async fn tokens_are_shown_once_listed_without_secret_and_revocable() {
    let api = api();
    let (_, _, admin) = api.with_users().await;
    let r = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            Req::session(&admin),
            Some(json!({"label": "deploy", "role": "operator", "expires_in_days": 7})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.body["token"].as_str().unwrap().to_owned();
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mups_"));
    let list = api.call(Method::GET, "/api/v1/tokens", Req::bearer(BOOT), None).await;
    assert!(!list.text.contains(&secret));
    assert_eq!(list.body["tokens"][0]["owner"], "ada");
    assert_eq!(
        api.call(Method::POST, "/t/operator", Req::bearer(&secret), None).await.status,
        StatusCode::OK
    );
    let later = api.call(Method::GET, "/api/v1/tokens", Req::bearer(BOOT), None).await;
    assert!(later.body["tokens"][0]["last_used"].is_string());
    let r = api.call(Method::DELETE, &format!("/api/v1/tokens/{id}"), Req::session(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.call(Method::POST, "/t/operator", Req::bearer(&secret), None).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Expiry.
    let r = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            Req::session(&admin),
            Some(json!({"label": "short", "role": "viewer", "expires_in_days": 1})),
        )
        .await;
    let short = r.body["token"].as_str().unwrap().to_owned();
    api.clock.advance(24 * 60 * MIN);
    assert_eq!(
        api.call(Method::GET, "/t/viewer", Req::bearer(&short), None).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn audit_api_filters_and_exports() {
    let api = api();
    let (viewer, _, admin) = api.with_users().await;
    let r = api.call(Method::GET, "/api/v1/audit?action=login&result=ok", Req::session(&admin), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let actors: Vec<&str> =
        r.body["entries"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(actors, ["vera", "otto", "ada"]);
    let r =
        api.call(Method::GET, "/api/v1/audit?actor=token:config&limit=1", Req::session(&admin), None).await;
    assert_eq!(r.body["entries"][0]["action"], "user.add");
    assert_eq!(r.body["entries"][0]["target"], "ada");
    let since = "2026-03-01T12:00:00Z";
    let r = api
        .call(Method::GET, &format!("/api/v1/audit?since={since}&until={since}"), Req::session(&admin), None)
        .await;
    assert_eq!(r.body["entries"].as_array().unwrap().len(), 0);
    let r = api.call(Method::GET, "/api/v1/audit?nonsense=1", Req::session(&admin), None).await;
    assert_eq!(r.code(), "bad_request");
    assert_eq!(api.call(Method::GET, "/api/v1/audit", Req::session(&viewer), None).await.code(), "forbidden");

    let r = api
        .call(Method::GET, "/api/v1/audit/export?format=csv&action=login", Req::session(&admin), None)
        .await;
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(r.headers[header::CONTENT_DISPOSITION], "attachment; filename=\"audit.csv\"");
    assert_eq!(r.text.lines().count(), 4);
    let r = api.call(Method::GET, "/api/v1/audit/export?format=jsonl", Req::session(&admin), None).await;
    assert_eq!(r.text, std::fs::read_to_string(api.auth.audit_log().path()).unwrap());
}

#[tokio::test]
async fn every_declared_route_has_access_and_refuses_anonymous_callers() {
    let api = api();
    let table = routes(&api.auth).table().to_vec();
    let public: Vec<&str> =
        table.iter().filter(|r| r.access == Access::Public).map(|r| r.path.as_str()).collect();
    assert_eq!(public, ["/t/public", "/api/v1/login"], "nothing else may be public");
    for r in table.iter().filter(|r| r.access != Access::Public) {
        let uri = r.path.replace("{name}", "someone").replace("{id}", "tok_0");
        let reply = api.call(r.method.clone(), &uri, Req::default(), Some(json!({}))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{} {}", r.method, r.path);
        assert_eq!(reply.code(), "unauthorized");
    }
    let mutating = table.iter().filter(|r| is_mutation(&r.method) && r.access != Access::Public);
    for r in mutating {
        assert!(matches!(r.access, Access::Role(_)), "{} {}", r.method, r.path);
    }
}

#[tokio::test]
async fn routes_added_outside_the_table_are_refused() {
    let api = api();
    let (router, table) = routes(&api.auth).into_parts();
    let router = router.route("/t/sneaky", axum::routing::post(|| async { "should not run" }));
    let app = harden(router, table, &HttpOptions::default());
    let sneaky = Api { app, ..api };
    let r = sneaky.call(Method::POST, "/t/sneaky", Req::bearer(BOOT), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    // Declared ones still work, and unknown paths are a plain 404.
    assert_eq!(sneaky.call(Method::GET, "/t/viewer", Req::bearer(BOOT), None).await.status, StatusCode::OK);
    assert_eq!(
        sneaky.call(Method::GET, "/nowhere", Req::default(), None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[test]
#[should_panic(expected = "declared twice")]
fn a_route_cannot_be_declared_twice() {
    let dir = TempDir::new();
    let auth = open(&dir, &ManualClock::new(), test_config());
    let _ = Routes::<()>::new(&auth).route(Method::GET, "/x", || async {}, Access::Role(Role::Viewer)).route(
        Method::GET,
        "/x",
        || async {},
        Access::Public,
    );
}

#[tokio::test]
async fn security_headers_body_limit_and_hsts() {
    let api = api();
    let r = api.call(Method::GET, "/t/public", Req::default(), None).await;
    assert_eq!(
        r.headers[header::CONTENT_SECURITY_POLICY],
        "default-src 'self'; script-src 'self'; frame-ancestors 'none'"
    );
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(r.headers[header::REFERRER_POLICY], "no-referrer");
    assert!(r.headers.get(header::STRICT_TRANSPORT_SECURITY).is_none(), "no HSTS over plain HTTP");
    let r = api.call(Method::GET, "/t/viewer", Req::default(), None).await;
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "errors get them too");

    let tls = api_with(test_config(), HttpOptions { tls: true, body_limit: 1024, ..HttpOptions::default() });
    let r = tls.call(Method::GET, "/t/public", Req::default(), None).await;
    assert_eq!(r.headers[header::STRICT_TRANSPORT_SECURITY], "max-age=31536000");
    let big = json!({"user": "x".repeat(4096), "password": "y"});
    let r = tls.call(Method::POST, "/api/v1/login", Req::default(), Some(big.clone())).await;
    assert_eq!((r.status, r.code()), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    // With a Content-Length, as real clients send, the layer refuses before reading.
    let with_len =
        Req { headers: vec![("content-length", big.to_string().len().to_string())], ..Req::default() };
    let r = tls.call(Method::POST, "/api/v1/login", with_len, Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn the_bootstrap_token_is_admin_and_audited_as_such() {
    let api = api();
    let r = api.call(Method::GET, "/api/v1/me", Req::bearer(BOOT), None).await;
    assert_eq!((r.body["actor"].as_str(), r.body["role"].as_str()), (Some("token:config"), Some("admin")));
    api.add_user("ada", Role::Admin, "admin passphrase!").await;
    let e = api.auth.audit_query(&Filter { action: Some("user.add".into()), ..Filter::default() }).unwrap();
    assert_eq!((e[0].actor.as_str(), e[0].role), ("token:config", Some(Role::Admin)));
    let r = api
        .call(
            Method::POST,
            "/api/v1/tokens",
            Req::bearer(BOOT),
            Some(json!({"label": "x", "role": "viewer"})),
        )
        .await;
    assert_eq!(r.code(), "forbidden", "the bootstrap token owns nothing");
}
