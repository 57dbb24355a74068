//! The management API in-process (`tower::ServiceExt::oneshot` on the real application of a
//! running `mups`): every declared route's access rule, CSRF, validation and error codes,
//! optimistic concurrency on maintenance flags, audit of mutations, the console's files,
//! the OpenAPI document against the route table, and HTTPS on the real listener.
//!
//! No FO node or `pups` runs: the router answers from its configuration, which is all these
//! routes need.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use mups::auth::Role;
use mups::auth::http::{Access, CSRF_HEADER, SESSION_COOKIE};
use mups::runtime::{self, Mups};
use proto::config::ApplianceConfig;
use serde_json::{Value, json};
use tower::ServiceExt;

const BOOT: &str = "bootstrap-token-for-tests";
const PASSWORD: &str = "correct horse battery";

/// A configuration whose one FO node address refuses connections and whose `pups` never
/// comes: the router runs on its configuration alone.
fn config(dir: &std::path::Path, extra: &str) -> Arc<ApplianceConfig> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = format!(
        r#"
[appliance]
id = "test"
local_link = "{sock}"
[mups]
api_token = "{BOOT}"
# Both nodes are unreachable: no automatic jobs, so every job in a test is the test's own.
auto_failover = false
{extra}
[[fo_node]]
id = "A"
address = "{closed}"
[[fo_node]]
id = "B"
address = "{closed}"
[[bank]]
id = "bank-1"
listen = "127.0.0.1:1"
allow = ["127.0.0.0/8"]
framing = {{ length = "u16be" }}
layout = "iso87-binary"
active_node = "A"
reserve_node = "B"
"#,
        sock = dir.join("pups.sock").display()
    );
    Arc::new(ApplianceConfig::from_toml_str(&text).unwrap())
}

struct Setup {
    mups: Mups,
    dir: tempfile::TempDir,
}

async fn start(with_state_dir: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let extra = if with_state_dir {
        format!("state_dir = \"{}\"", dir.path().join("state").display())
    } else {
        String::new()
    };
    let mups =
        runtime::start(config(dir.path(), &extra), Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    Setup { mups, dir }
}

/// How a request authenticates.
#[derive(Clone)]
enum Who {
    Anonymous,
    Bearer(String),
    /// Cookie, and the CSRF token to send (or not) on mutations.
    Session {
        cookie: String,
        csrf: Option<String>,
    },
}

async fn call(
    mups: &Mups,
    method: Method,
    path: &str,
    who: &Who,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, _, bytes) = call_raw(mups, method, path, who, body.map(|b| b.to_string())).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn call_raw(
    mups: &Mups,
    method: Method,
    path: &str,
    who: &Who,
    body: Option<String>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method.clone()).uri(path).header(header::HOST, "mgmt");
    match who {
        Who::Anonymous => {}
        Who::Bearer(t) => req = req.header(header::AUTHORIZATION, format!("Bearer {t}")),
        Who::Session { cookie, csrf } => {
            req = req.header(header::COOKIE, format!("{SESSION_COOKIE}={cookie}"));
            if let Some(c) = csrf {
                req = req.header(CSRF_HEADER, c);
            }
        }
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
    let res = mups.app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    // Event streams never end: a status and headers are all a test needs from them.
    let bytes = if parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "text/event-stream") {
        Vec::new()
    } else {
        axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec()
    };
    (parts.status, parts.headers, bytes)
}

async fn add_user(mups: &Mups, name: &str, role: &str) {
    let body = json!({"name": name, "role": role, "password": PASSWORD});
    let (status, v) = call(mups, Method::POST, "/api/v1/users", &Who::Bearer(BOOT.into()), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
}

/// Logs in; the session's cookie and CSRF token.
async fn login(mups: &Mups, name: &str) -> Who {
    let body = json!({"user": name, "password": PASSWORD}).to_string();
    let (status, headers, bytes) =
        call_raw(mups, Method::POST, "/api/v1/login", &Who::Anonymous, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("Secure") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    Who::Session { cookie, csrf: v["csrf_token"].as_str().map(str::to_owned) }
}

/// A concrete path for a declared one (`{id}` and friends filled in).
fn concrete(path: &str) -> String {
    path.replace("{id}", "bank-1").replace("{name}", "nobody").replace("{file}", "app.js")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_route_enforces_its_role_and_only_login_and_static_routes_are_public() {
    let s = start(true).await;
    let m = &s.mups;
    for (name, role) in [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")] {
        add_user(m, name, role).await;
    }
    let sessions = [
        (Role::Viewer, login(m, "vera").await),
        (Role::Operator, login(m, "otto").await),
        (Role::Admin, login(m, "ada").await),
    ];
    let table = mups::http::routes(&m.auth).table().to_vec();
    assert!(table.len() >= 29, "{table:?}");
    let public: BTreeSet<String> = table
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let expected_public = [
        "GET /",
        "GET /console/{file}",
        "GET /metrics",
        "GET /healthz",
        "GET /readyz",
        "GET /api/v1/openapi.json",
        "POST /api/v1/login",
    ];
    assert_eq!(public, expected_public.iter().map(|s| s.to_string()).collect());
    // Logout ends the caller's session: it goes last.
    let mut order = table.clone();
    order.sort_by_key(|r| r.path == "/api/v1/logout");
    for route in &order {
        let path = concrete(&route.path);
        let what = format!("{} {}", route.method, route.path);
        let (anon, _) = call(m, route.method.clone(), &path, &Who::Anonymous, None).await;
        let Access::Role(required) = route.access else {
            assert!(anon != StatusCode::UNAUTHORIZED && anon != StatusCode::FORBIDDEN, "{what}: {anon}");
            continue;
        };
        assert_eq!(anon, StatusCode::UNAUTHORIZED, "{what} anonymous");
        for (role, who) in &sessions {
            let (status, body) = call(m, route.method.clone(), &path, who, None).await;
            if *role < required {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}: {body}");
                assert_eq!(body["code"], "forbidden", "{what} as {role}");
            } else {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {role}: {status} {body}"
                );
            }
        }
    }
    // The role rules the issue names, spelled out.
    let access =
        |m: &str, p: &str| table.iter().find(|r| r.method.as_str() == m && r.path == p).unwrap().access;
    for p in ["/api/v1/state", "/api/v1/banks", "/api/v1/nodes", "/api/v1/jobs", "/api/v1/events"] {
        assert_eq!(access("GET", p), Access::Role(Role::Viewer), "{p}");
    }
    assert_eq!(access("POST", "/api/v1/switch"), Access::Role(Role::Operator));
    assert_eq!(access("PUT", "/api/v1/nodes/{id}/maintenance"), Access::Role(Role::Operator));
    assert_eq!(access("GET", "/api/v1/audit"), Access::Role(Role::Admin));
    // Nothing mutates on GET: every declared GET is a read (the rest of the table is POST,
    // PUT, PATCH or DELETE, which CSRF guards for cookies).
    for r in &table {
        assert!(["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&r.method.as_str()), "{r:?}");
    }
    s.mups.stop().await;
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_mutations_need_the_csrf_token_and_bearer_ones_do_not() {
    let s = start(true).await;
    let m = &s.mups;
    add_user(m, "otto", "operator").await;
    let Who::Session { cookie, csrf } = login(m, "otto").await else { unreachable!() };
    let body = json!({"maintenance": true, "reason": "csrf test", "version": 0});
    let path = "/api/v1/banks/bank-1/maintenance";
    let without = Who::Session { cookie: cookie.clone(), csrf: None };
    let (status, v) = call(m, Method::PUT, path, &without, Some(body.clone())).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")), "{v}");
    let wrong = Who::Session { cookie: cookie.clone(), csrf: Some("not-the-token".into()) };
    assert_eq!(call(m, Method::PUT, path, &wrong, Some(body.clone())).await.0, StatusCode::FORBIDDEN);
    // A refused request changed nothing: version 0 still applies.
    let right = Who::Session { cookie: cookie.clone(), csrf };
    let (status, v) = call(m, Method::PUT, path, &right, Some(body)).await;
    assert_eq!((status, v["version"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    // Reads need no token.
    assert_eq!(call(m, Method::GET, "/api/v1/banks", &without, None).await.0, StatusCode::OK);
    // A bearer request ignores cookies and needs no CSRF header.
    let body = json!({"maintenance": false, "reason": "bearer", "version": 1});
    assert_eq!(call(m, Method::PUT, path, &Who::Bearer(BOOT.into()), Some(body)).await.0, StatusCode::OK);
    // The refusals are in the audit log.
    let (_, audit) =
        call(m, Method::GET, "/api/v1/audit?action=access", &Who::Bearer(BOOT.into()), None).await;
    let denied = audit["entries"].as_array().unwrap();
    assert!(
        denied.iter().any(|e| e["actor"] == "otto" && e["message"].as_str().unwrap().contains("CSRF")),
        "{audit}"
    );
    s.mups.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_needs_the_current_version_and_a_stale_one_gets_409() {
    let s = start(true).await;
    let m = &s.mups;
    let boot = Who::Bearer(BOOT.into());
    let (_, banks) = call(m, Method::GET, "/api/v1/banks", &boot, None).await;
    assert_eq!(banks["banks"][0]["version"], 0, "{banks}");
    let (_, nodes) = call(m, Method::GET, "/api/v1/nodes", &boot, None).await;
    assert_eq!(nodes["nodes"][1]["version"], 0, "{nodes}");

    let on = json!({"maintenance": true, "reason": "CHG-1 patch B", "version": 0});
    let (status, v) = call(m, Method::PUT, "/api/v1/nodes/B/maintenance", &boot, Some(on.clone())).await;
    assert_eq!((status, v["version"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    // A second operator working from the same read is refused, not silently applied.
    let (status, v) = call(m, Method::PUT, "/api/v1/nodes/B/maintenance", &boot, Some(on)).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("current version is 1"), "{v}");
    let (_, nodes) = call(m, Method::GET, "/api/v1/nodes", &boot, None).await;
    assert_eq!(
        (nodes["nodes"][1]["maintenance"].as_bool(), nodes["nodes"][1]["version"].as_u64()),
        (Some(true), Some(1))
    );

    // Missing version, unknown keys, empty reason: 400; unknown node: 404.
    for bad in [
        json!({"maintenance": true, "reason": "x"}),
        json!({"maintenance": true, "reason": "x", "version": 1, "force": true}),
        json!({"maintenance": true, "reason": " ", "version": 1}),
    ] {
        let (status, v) = call(m, Method::PUT, "/api/v1/nodes/B/maintenance", &boot, Some(bad.clone())).await;
        assert_eq!(
            (status, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{bad}: {v}"
        );
    }
    let body = json!({"maintenance": true, "reason": "x", "version": 0});
    let (status, v) = call(m, Method::PUT, "/api/v1/nodes/C/maintenance", &boot, Some(body)).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{v}");

    // A switch is an admin change of the bank's intent: its version moves too.
    let switch = json!({"to": "B", "mode": "force", "reason": "CHG-2"});
    let (status, v) = call(m, Method::POST, "/api/v1/banks/bank-1/switch", &boot, Some(switch)).await;
    // Node B is in maintenance: refused, and the bank's version is untouched.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (_, bank) = call(m, Method::GET, "/api/v1/banks/bank-1", &boot, None).await;
    assert_eq!(bank["version"], 0, "{bank}");

    // Both outcomes are audited with actor, target, reason and result.
    let (_, audit) = call(m, Method::GET, "/api/v1/audit?action=node.", &boot, None).await;
    let entries = audit["entries"].as_array().unwrap();
    let results: Vec<&str> = entries.iter().map(|e| e["result"].as_str().unwrap()).collect();
    assert!(results.starts_with(&["ok", "failed"]), "{audit}");
    assert_eq!(entries[0]["actor"], "token:config");
    assert_eq!(entries[0]["target"], "node:B");
    assert_eq!(entries[0]["reason"], "CHG-1 patch B");
    let (_, audit) = call(m, Method::GET, "/api/v1/audit?action=switch.", &boot, None).await;
    let e = &audit["entries"][0];
    assert_eq!(
        (e["action"].as_str(), e["result"].as_str()),
        (Some("switch.start"), Some("failed")),
        "{audit}"
    );
    assert_eq!((e["target"].as_str(), e["reason"].as_str()), (Some("banks:bank-1"), Some("CHG-2")));
    assert!(e["message"].as_str().unwrap().contains("to B, force"), "{e}");
    s.mups.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_with_stable_codes() {
    let s = start(true).await;
    let m = &s.mups;
    let boot = Who::Bearer(BOOT.into());
    let cases: [(Method, &str, Option<&str>, StatusCode, &str); 9] = [
        (Method::GET, "/api/v1/banks/nobody", None, StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/jobs/seven", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/api/v1/jobs/999", None, StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/v1/jobs?limit=many", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::GET, "/api/v1/events?job=x", None, StatusCode::BAD_REQUEST, "bad_request"),
        (Method::POST, "/api/v1/switch", Some("{not json"), StatusCode::BAD_REQUEST, "bad_request"),
        (
            Method::POST,
            "/api/v1/banks/bank-1/switch",
            Some(r#"{"to": "B", "mode": "gently", "reason": "x"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::POST,
            "/api/v1/banks/nobody/switch",
            Some(r#"{"to": "B", "mode": "drain", "reason": "x"}"#),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (Method::GET, "/console/nothing.js", None, StatusCode::NOT_FOUND, "not_found"),
    ];
    for (method, path, body, want, code) in cases {
        let (status, headers, bytes) =
            call_raw(m, method.clone(), path, &boot, body.map(str::to_owned)).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!((status, v["code"].as_str()), (want, Some(code)), "{method} {path}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {v}");
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "application/json", "{method} {path}");
    }
    let big = format!(r#"{{"to": "B", "mode": "drain", "reason": "{}"}}"#, "x".repeat(70 * 1024));
    let (status, _, bytes) = call_raw(m, Method::POST, "/api/v1/switch", &boot, Some(big)).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, v["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")), "{v}");
    // Mutations are never done on GET: a GET of a mutating path is refused (the guard
    // answers 403 for a method the route does not declare), and no job exists.
    let (status, _, _) = call_raw(m, Method::GET, "/api/v1/switch", &boot, None).await;
    assert!(status.is_client_error(), "{status}");
    let (_, jobs) = call(m, Method::GET, "/api/v1/jobs", &boot, None).await;
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    s.mups.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_state_dir_users_are_refused_and_the_bootstrap_token_works() {
    let s = start(false).await;
    let m = &s.mups;
    let boot = Who::Bearer(BOOT.into());
    let body = json!({"name": "ada", "role": "admin", "password": PASSWORD});
    let (status, v) = call(m, Method::POST, "/api/v1/users", &boot, Some(body)).await;
    assert_eq!((status, v["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("state_dir"), "{v}");
    let (status, me) = call(m, Method::GET, "/api/v1/me", &boot, None).await;
    assert_eq!(
        (status, me["role"].as_str(), me["actor"].as_str()),
        (StatusCode::OK, Some("admin"), Some("token:config"))
    );
    assert_eq!(call(m, Method::GET, "/api/v1/banks", &boot, None).await.0, StatusCode::OK);
    s.mups.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_plain_http_sends_no_hsts() {
    let s = start(false).await;
    let m = &s.mups;
    let (status, headers, body) = call_raw(m, Method::GET, "/", &Who::Anonymous, None).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains(r#"<script type="module" src="/console/app.js">"#), "{html}");
    // No inline script or style: the CSP forbids them, and the page must not need them.
    assert!(!html.contains("style=") && !html.contains("<style") && !html.contains("onclick="));
    assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "text/html; charset=utf-8");
    let csp = headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(headers.get(header::STRICT_TRANSPORT_SECURITY).is_none());
    for (file, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("banks.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, body) =
            call_raw(m, Method::GET, &format!("/console/{file}"), &Who::Anonymous, None).await;
        assert_eq!(
            (status, headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap()),
            (StatusCode::OK, ctype)
        );
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("innerHTML"), "{file} must build DOM from text, never markup");
    }
    s.mups.stop().await;
}

#[test]
fn the_openapi_document_covers_exactly_the_declared_routes_with_their_access() {
    let doc: Value = serde_json::from_str(mups::http::OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let access = op["x-access"].as_str().unwrap_or_else(|| panic!("{method} {path}: no x-access"));
            documented.insert((method.to_uppercase(), path.clone(), access.to_owned()));
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}");
            if access != "public" {
                assert!(
                    op["responses"]["401"].is_object() && op["responses"]["403"].is_object(),
                    "{method} {path}"
                );
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let auth = runtime
        .block_on(async { mups::auth::Auth::open(dir.path(), mups::auth::AuthConfig::default()).unwrap() });
    let declared: BTreeSet<(String, String, String)> = mups::http::routes(&auth)
        .table()
        .iter()
        .map(|r| {
            let access = match r.access {
                Access::Public => "public".to_owned(),
                Access::Role(role) => role.to_string(),
            };
            (r.method.to_string(), r.path.clone(), access)
        })
        .collect();
    let missing: Vec<_> = declared.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not documented: {missing:?}\nnot declared: {extra:?}");
    // Every schema referenced exists.
    let text = mups::http::OPENAPI;
    for piece in text.split("\"#/components/").skip(1) {
        let target = piece.split('"').next().unwrap();
        let mut parts = target.split('/');
        let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(doc["components"][kind][name].is_object(), "dangling $ref {target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_listener_speaks_https_and_sends_hsts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let files = mups::tls::self_signed(&dir.path().join("tls"), &["localhost".into()]).unwrap();
    let extra = format!("tls_cert = \"{}\"\ntls_key = \"{}\"", files.cert.display(), files.key.display());
    let mups =
        runtime::start(config(dir.path(), &extra), Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    assert!(mups.tls);

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&files.cert).unwrap();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(mups.http_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the configured certificate");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("strict-transport-security: max-age=31536000"), "{text}");

    // Plain HTTP on the TLS port gets no answer a browser would take.
    let mut plain = tokio::net::TcpStream::connect(mups.http_addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    mups.stop().await;
}
