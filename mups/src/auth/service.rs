//! [`Auth`]: the one object the HTTP layer and the CLI use. It ties users, tokens, sessions,
//! the login limiter and the audit log together, reads the clock (everything below it takes
//! `now`), and records every login, failure, denial and change in the audit log.
//!
//! Methods that run argon2 or write files block; async callers run them with
//! `tokio::task::spawn_blocking` (the [`super::http`] handlers do).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::audit::{self, AuditError, AuditLog, Entry, Outcome, Record};
use super::password::{self, HashParams, Hasher};
use super::persist::{self, PersistError};
use super::ratelimit::{LimitConfig, LoginLimiter};
use super::sessions::{NewSession, SessionConfig, SessionError, SessionStore};
use super::store::{Store, StoreError, TokenView, UserChange, UserView};
use super::{Role, secret};

/// Where the time comes from: the system clock in service, a hand-moved one in tests.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The audit actor of the configured bootstrap token.
pub const BOOTSTRAP_ACTOR: &str = "token:config";

/// Settings.
#[derive(Clone)]
pub struct AuthConfig {
    /// Session lifetimes.
    pub sessions: SessionConfig,
    /// Login throttling.
    pub limits: LimitConfig,
    /// argon2id cost.
    pub hash: HashParams,
    /// `[mups] api_token` from the configuration: an admin bearer token for automation and for
    /// bootstrapping (creating the first users). `None` disables it.
    pub bootstrap_token: Option<String>,
    /// Lifetime of an API token when the request names none.
    pub token_default_lifetime: Duration,
    /// Longest lifetime an API token may be given.
    pub token_max_lifetime: Duration,
    /// Most argon2 runs at once (each takes ~19 MiB and a core).
    pub max_concurrent_hashes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            sessions: SessionConfig::default(),
            limits: LimitConfig::default(),
            hash: HashParams::default(),
            bootstrap_token: None,
            token_default_lifetime: Duration::from_secs(90 * 86_400),
            token_max_lifetime: Duration::from_secs(365 * 86_400),
            max_concurrent_hashes: 2,
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("sessions", &self.sessions)
            .field("limits", &self.limits)
            .field("hash", &self.hash)
            .field("bootstrap_token", &self.bootstrap_token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Browser session cookie.
    Session,
    /// `Authorization: Bearer` token.
    Token,
}

/// Who is making a request, and with which rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The audit actor: a user name, `token:<id>`, or `token:config`.
    pub actor: String,
    /// The user acting (the token's owner for a token); `None` for the bootstrap token.
    pub user: Option<String>,
    /// Effective role.
    pub role: Role,
    /// Session or token.
    pub via: Via,
    /// The session's CSRF token (sessions only); never serialised with the principal.
    #[serde(skip)]
    pub csrf: Option<String>,
}

/// Why an operation was refused. [`AuthError::code`] is the stable API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No valid credentials.
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// A cookie-authenticated mutation without the session's CSRF token.
    #[error("missing or wrong X-CSRF-Token header")]
    Csrf,
    /// Stale version, or the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// Invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// No such user or token.
    #[error("{0}")]
    NotFound(String),
    /// Too many failed attempts.
    #[error("too many attempts; retry in {} s", retry_after.as_secs())]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// The request body is over the limit.
    #[error("the request body is too large")]
    TooLarge,
    /// Our fault: I/O, RNG.
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    /// Stable error code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Csrf => "csrf",
            Self::Conflict(_) => "conflict",
            Self::BadRequest(_) => "bad_request",
            Self::NotFound(_) => "not_found",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } | StoreError::LastAdmin | StoreError::AlreadyExists(_) => {
                Self::Conflict(e.to_string())
            }
            StoreError::NotFound(_) => Self::NotFound(e.to_string()),
            StoreError::InvalidName(_) => Self::BadRequest(e.to_string()),
            StoreError::RoleTooHigh { .. } => Self::Forbidden(e.to_string()),
            StoreError::Persist(_) | StoreError::Corrupt { .. } | StoreError::Rng(_) => {
                tracing::error!(error = %e, "user store");
                Self::Internal("the user store failed; see the log".to_owned())
            }
        }
    }
}

/// Opening the state failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// State directory.
    #[error(transparent)]
    Dir(#[from] PersistError),
    /// `users.json`.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `audit.jsonl`.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// argon2 parameters or RNG.
    #[error(transparent)]
    Hash(#[from] password::HashError),
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOk {
    /// The new session (cookie value and CSRF token).
    pub session: NewSession,
    /// The user.
    pub user: String,
    /// Their role.
    pub role: Role,
}

/// A change to a user through the API.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New role.
    pub role: Option<Role>,
    /// New password, in clear; checked against the policy and hashed here.
    pub password: Option<String>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

/// A token just created: the secret is in here and nowhere else.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    /// The listing.
    #[serde(flatten)]
    pub view: TokenView,
    /// The secret, to show once.
    pub token: String,
}

struct Inner {
    cfg: AuthConfig,
    clock: Clock,
    state_dir: PathBuf,
    hasher: Hasher,
    store: Mutex<Store>,
    sessions: Mutex<SessionStore>,
    limiter: Mutex<LoginLimiter>,
    audit: AuditLog,
    last_use_dirty: AtomicBool,
    hash_slots: tokio::sync::Semaphore,
}

/// Access control state, shared (cheap to clone).
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("state_dir", &self.0.state_dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these leaves consistent data (every change is applied
    // whole), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    /// Opens the state in `state_dir` (created 0700 if absent) with the system clock.
    pub fn open(state_dir: &Path, cfg: AuthConfig) -> Result<Self, OpenError> {
        Self::open_with_clock(state_dir, cfg, Arc::new(OffsetDateTime::now_utc))
    }

    /// Opens the state with the given clock (tests).
    pub fn open_with_clock(state_dir: &Path, cfg: AuthConfig, clock: Clock) -> Result<Self, OpenError> {
        persist::ensure_dir(state_dir)?;
        let store = Store::open(state_dir)?;
        let audit = AuditLog::open(state_dir, clock())?;
        let hasher = Hasher::new(cfg.hash)?;
        let hash_slots = tokio::sync::Semaphore::new(cfg.max_concurrent_hashes.max(1));
        Ok(Self(Arc::new(Inner {
            sessions: Mutex::new(SessionStore::new(cfg.sessions)),
            limiter: Mutex::new(LoginLimiter::new(cfg.limits)),
            cfg,
            clock,
            state_dir: state_dir.to_owned(),
            hasher,
            store: Mutex::new(store),
            audit,
            last_use_dirty: AtomicBool::new(false),
            hash_slots,
        })))
    }

    /// The current time by this instance's clock.
    pub fn now(&self) -> OffsetDateTime {
        (self.0.clock)()
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.0.cfg
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.0.state_dir
    }

    /// The audit log (for [`audit::query`] on its path, or direct records).
    pub fn audit_log(&self) -> &AuditLog {
        &self.0.audit
    }

    /// Appends `rec` to the audit log, stamped now. Blocks for an fsync.
    pub fn record(&self, rec: Record) -> Result<Entry, AuditError> {
        self.0.audit.record(rec, self.now())
    }

    /// Like [`Self::record`], but a failure is logged rather than returned: for records made
    /// after the action already happened, where failing the request would misreport it.
    pub fn record_or_log(&self, rec: Record) {
        if let Err(e) = self.record(rec) {
            tracing::error!(error = %e, "audit log write failed");
        }
    }

    /// A record for an action by `p`, from `source`.
    pub fn record_for(
        p: &Principal,
        source: Option<IpAddr>,
        action: &str,
        target: Option<&str>,
        result: Outcome,
    ) -> Record {
        Record {
            role: Some(p.role),
            source: source.map(|s| s.to_string()),
            target: target.map(str::to_owned),
            ..Record::new(p.actor.clone(), action, result)
        }
    }

    /// Waits for one of the argon2 slots, so a burst of logins cannot take all memory and cores.
    pub async fn hash_permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.0.hash_slots.acquire().await.expect("the semaphore is never closed")
    }

    /// Checks a user name and password; on success starts a session (dropping `previous`, the
    /// session id the browser presented, if any). Blocks for one argon2 run. Every outcome is
    /// audited; the error never says whether the user exists.
    pub fn login(
        &self,
        name: &str,
        password: &str,
        source: Option<IpAddr>,
        previous: Option<&str>,
    ) -> Result<LoginOk, AuthError> {
        let now = self.now();
        let rec = |result, message: &str| Record {
            source: source.map(|s| s.to_string()),
            target: Some(name.to_owned()),
            message: Some(message.to_owned()),
            ..Record::new(name, "login", result)
        };
        if let Err(l) = lock(&self.0.limiter).check(source, name, now) {
            self.record_or_log(rec(Outcome::Denied, "rate limited"));
            return Err(AuthError::RateLimited { retry_after: l.retry_after });
        }
        let user = {
            let mut store = lock(&self.0.store);
            if let Err(e) = store.refresh() {
                tracing::error!(error = %e, "re-reading the user store failed; using the copy in memory");
            }
            store.user(name).cloned()
        };
        let (ok, why) = match &user {
            None => (self.0.hasher.verify_dummy(password), "unknown user"),
            Some(u) if u.disabled => (self.0.hasher.verify_dummy(password), "user disabled"),
            Some(u) => (self.0.hasher.verify(&u.password_hash, password), "wrong password"),
        };
        let user = match user {
            Some(u) if ok => u,
            _ => {
                lock(&self.0.limiter).failure(source, name, now);
                self.record_or_log(rec(Outcome::Failed, why));
                return Err(AuthError::Unauthorized);
            }
        };
        lock(&self.0.limiter).success(name);
        let session = lock(&self.0.sessions)
            .create(&user.name, previous, now)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        self.record_or_log(Record { role: Some(user.role), ..rec(Outcome::Ok, "session started") });
        Ok(LoginOk { session, user: user.name, role: user.role })
    }

    /// Ends a session.
    pub fn logout(&self, p: &Principal, session_id: &str, source: Option<IpAddr>) {
        lock(&self.0.sessions).remove(session_id);
        self.record_or_log(Self::record_for(p, source, "logout", None, Outcome::Ok));
    }

    /// The principal of a session cookie. The role is the user's current one, so a role change
    /// or a disable takes effect on the next request. Expiry is not audited: it is routine, and
    /// a polling console would fill the log.
    pub fn authenticate_session(&self, id: &str) -> Result<Principal, AuthError> {
        let now = self.now();
        let active = lock(&self.0.sessions).touch(id, now).map_err(|e: SessionError| {
            tracing::debug!(reason = %e, "session refused");
            AuthError::Unauthorized
        })?;
        let role = match lock(&self.0.store).user(&active.user) {
            Some(u) if !u.disabled => u.role,
            _ => {
                lock(&self.0.sessions).remove(id);
                return Err(AuthError::Unauthorized);
            }
        };
        Ok(Principal {
            actor: active.user.clone(),
            user: Some(active.user),
            role,
            via: Via::Session,
            csrf: Some(active.csrf),
        })
    }

    /// The principal of a bearer token. A bad token is audited (unless its address is already
    /// throttled, so a flood cannot fill the log) and counts against the address's login budget.
    pub fn authenticate_bearer(&self, token: &str, source: Option<IpAddr>) -> Result<Principal, AuthError> {
        let now = self.now();
        let bootstrap = self.0.cfg.bootstrap_token.as_deref();
        if bootstrap.is_some_and(|boot| secret::secrets_equal(boot, token)) {
            return Ok(Principal {
                actor: BOOTSTRAP_ACTOR.to_owned(),
                user: None,
                role: Role::Admin,
                via: Via::Token,
                csrf: None,
            });
        }
        if let Some(m) = lock(&self.0.store).use_token(token, now) {
            if m.save_due {
                self.0.last_use_dirty.store(true, Ordering::Relaxed);
            }
            return Ok(Principal {
                actor: format!("token:{}", m.id),
                user: Some(m.owner),
                role: m.role,
                via: Via::Token,
                csrf: None,
            });
        }
        let mut limiter = lock(&self.0.limiter);
        // Keyed under a name no user can have, so bad tokens do not slow any account's logins.
        if let Err(l) = limiter.check(source, ":token", now) {
            return Err(AuthError::RateLimited { retry_after: l.retry_after });
        }
        limiter.failure(source, ":token", now);
        drop(limiter);
        let prefix: String = token.chars().take(secret::TOKEN_PREFIX.len() + 4).collect();
        self.record_or_log(Record {
            source: source.map(|s| s.to_string()),
            message: Some(format!("unknown, expired or revoked token ({prefix}…)")),
            ..Record::new("anonymous", "auth.token", Outcome::Denied)
        });
        Err(AuthError::Unauthorized)
    }

    /// Whether a token's last use moved since the last save; clears the flag.
    pub fn take_last_use_dirty(&self) -> bool {
        self.0.last_use_dirty.swap(false, Ordering::Relaxed)
    }

    /// Writes the user store (for token last-use times). Blocks.
    pub fn save_store(&self) -> Result<(), AuthError> {
        Ok(lock(&self.0.store).save()?)
    }

    /// All users.
    pub fn users(&self) -> Vec<UserView> {
        lock(&self.0.store).users()
    }

    /// All API tokens.
    pub fn tokens(&self) -> Vec<TokenView> {
        lock(&self.0.store).tokens()
    }

    fn audited<T>(
        &self,
        mut rec: Record,
        detail: impl FnOnce(&T) -> Option<String>,
        r: Result<T, AuthError>,
    ) -> Result<T, AuthError> {
        match &r {
            Ok(v) => {
                rec.message = detail(v);
            }
            Err(e) => {
                rec.result = match e {
                    AuthError::Forbidden(_) => Outcome::Denied,
                    _ => Outcome::Failed,
                };
                rec.message = Some(format!("{}: {e}", e.code()));
            }
        }
        self.record_or_log(rec);
        r
    }

    /// Creates a user. Blocks for argon2 and a file write.
    pub fn add_user(
        &self,
        by: &Principal,
        source: Option<IpAddr>,
        name: &str,
        role: Role,
        password: &str,
    ) -> Result<UserView, AuthError> {
        let rec = Self::record_for(by, source, "user.add", Some(name), Outcome::Ok);
        let r = self
            .new_hash(name, password)
            .and_then(|hash| Ok(lock(&self.0.store).add_user(name, role, hash, self.now())?));
        self.audited(rec, |_| Some(format!("role {role}")), r)
    }

    fn new_hash(&self, name: &str, password: &str) -> Result<String, AuthError> {
        password::check_policy(name, password).map_err(|e| AuthError::BadRequest(e.to_string()))?;
        self.0.hasher.hash(password).map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Changes a user if `version` is current. A new password, a disable or a role change ends
    /// the user's sessions. Blocks.
    pub fn update_user(
        &self,
        by: &Principal,
        source: Option<IpAddr>,
        name: &str,
        version: u64,
        patch: UserPatch,
    ) -> Result<UserView, AuthError> {
        let rec = Self::record_for(by, source, "user.update", Some(name), Outcome::Ok);
        let mut what = Vec::new();
        if let Some(r) = patch.role {
            what.push(format!("role {r}"));
        }
        if patch.password.is_some() {
            what.push("password changed".to_owned());
        }
        if let Some(d) = patch.disabled {
            what.push(if d { "disabled" } else { "enabled" }.to_owned());
        }
        let r = (|| {
            if what.is_empty() {
                return Err(AuthError::BadRequest("nothing to change".to_owned()));
            }
            let password_hash = patch.password.as_deref().map(|p| self.new_hash(name, p)).transpose()?;
            let change = UserChange { role: patch.role, password_hash, disabled: patch.disabled };
            let v = lock(&self.0.store).update_user(name, version, change, self.now())?;
            // A role change takes effect per request anyway; ending the sessions makes a
            // demoted user's open console reload with the new rights rather than fail piecemeal.
            lock(&self.0.sessions).remove_user(name);
            Ok(v)
        })();
        self.audited(rec, |_| Some(what.join(", ")), r)
    }

    /// Deletes a user and their tokens, if `version` is current; ends their sessions.
    pub fn delete_user(
        &self,
        by: &Principal,
        source: Option<IpAddr>,
        name: &str,
        version: u64,
    ) -> Result<(), AuthError> {
        let rec = Self::record_for(by, source, "user.delete", Some(name), Outcome::Ok);
        let r = lock(&self.0.store).delete_user(name, version).map_err(AuthError::from);
        if r.is_ok() {
            lock(&self.0.sessions).remove_user(name);
        }
        self.audited(rec, |_| None, r)
    }

    /// Creates an API token owned by `by`'s user, with at most their role. `lifetime` defaults
    /// to [`AuthConfig::token_default_lifetime`] and may not exceed the maximum.
    pub fn create_token(
        &self,
        by: &Principal,
        source: Option<IpAddr>,
        label: &str,
        role: Role,
        lifetime: Option<Duration>,
    ) -> Result<CreatedToken, AuthError> {
        let rec = Self::record_for(by, source, "token.create", None, Outcome::Ok);
        let r = (|| {
            let owner = by.user.as_deref().ok_or_else(|| {
                AuthError::Forbidden(
                    "the configured bootstrap token cannot own tokens: create a user and use it".to_owned(),
                )
            })?;
            if role > by.role {
                return Err(AuthError::Forbidden(format!(
                    "a token's role ({role}) cannot exceed your own ({})",
                    by.role
                )));
            }
            let lifetime = lifetime.unwrap_or(self.0.cfg.token_default_lifetime);
            if lifetime.is_zero() || lifetime > self.0.cfg.token_max_lifetime {
                return Err(AuthError::BadRequest(format!(
                    "a token lives between 1 second and {} days",
                    self.0.cfg.token_max_lifetime.as_secs() / 86_400
                )));
            }
            if label.trim().is_empty() || label.chars().count() > 200 {
                return Err(AuthError::BadRequest("a token needs a label of 1 to 200 characters".to_owned()));
            }
            let now = self.now();
            let (view, token) = lock(&self.0.store).add_token(owner, label, role, now + lifetime, now)?;
            Ok(CreatedToken { view, token })
        })();
        let mut rec = rec;
        if let Ok(t) = &r {
            rec.target = Some(format!("token:{}", t.view.id));
        }
        self.audited(
            rec,
            |t: &CreatedToken| {
                Some(format!(
                    "owner {}, role {}, label {:?}, expires {}",
                    t.view.owner, t.view.role, t.view.label, t.view.expires
                ))
            },
            r,
        )
    }

    /// Revokes an API token.
    pub fn revoke_token(
        &self,
        by: &Principal,
        source: Option<IpAddr>,
        id: &str,
    ) -> Result<TokenView, AuthError> {
        let rec = Self::record_for(by, source, "token.revoke", Some(&format!("token:{id}")), Outcome::Ok);
        let r = lock(&self.0.store).revoke_token(id).map_err(AuthError::from);
        self.audited(rec, |t: &TokenView| Some(format!("owner {}", t.owner)), r)
    }

    /// Audit entries matching `filter`. Blocks (reads the file).
    pub fn audit_query(&self, filter: &audit::Filter) -> Result<Vec<Entry>, AuthError> {
        audit::query(self.0.audit.path(), filter).map_err(|e| AuthError::Internal(e.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::testutil::{ManualClock, TempDir};

    pub(crate) fn test_config() -> AuthConfig {
        AuthConfig { hash: HashParams::insecure_for_tests(), ..AuthConfig::default() }
    }

    pub(crate) fn open(dir: &TempDir, clock: &ManualClock, cfg: AuthConfig) -> Auth {
        let c = clock.clone();
        Auth::open_with_clock(dir.path(), cfg, Arc::new(move || c.now())).unwrap()
    }

    pub(crate) fn admin_principal() -> Principal {
        Principal {
            actor: "root".into(),
            user: Some("root".into()),
            role: Role::Admin,
            via: Via::Session,
            csrf: None,
        }
    }

    fn ip() -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, 7]))
    }

    #[test]
    fn login_success_and_failures_are_audited_without_revealing_which_failed() {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let auth = open(&dir, &clock, test_config());
        auth.add_user(&admin_principal(), ip(), "alice", Role::Operator, "a long passphrase").unwrap();
        assert_eq!(auth.login("alice", "wrong password!", ip(), None).unwrap_err(), AuthError::Unauthorized);
        assert_eq!(auth.login("nobody", "wrong password!", ip(), None).unwrap_err(), AuthError::Unauthorized);
        let ok = auth.login("alice", "a long passphrase", ip(), None).unwrap();
        assert_eq!((ok.user.as_str(), ok.role), ("alice", Role::Operator));
        let p = auth.authenticate_session(&ok.session.id).unwrap();
        assert_eq!((p.actor.as_str(), p.role, p.via), ("alice", Role::Operator, Via::Session));

        let log =
            auth.audit_query(&audit::Filter { action: Some("login".into()), ..Default::default() }).unwrap();
        let got: Vec<(Outcome, Option<&str>)> =
            log.iter().map(|e| (e.result, e.message.as_deref())).collect();
        assert_eq!(
            got,
            [
                (Outcome::Failed, Some("wrong password")),
                (Outcome::Failed, Some("unknown user")),
                (Outcome::Ok, Some("session started"))
            ]
        );
        assert_eq!(log[0].source.as_deref(), Some("192.0.2.7"));
    }

    #[test]
    fn disabling_or_changing_a_password_ends_sessions_and_tokens() {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let auth = open(&dir, &clock, test_config());
        let root = admin_principal();
        auth.add_user(&root, None, "root", Role::Admin, "correct horse battery").unwrap();
        auth.add_user(&root, None, "bob", Role::Operator, "bob's passphrase").unwrap();
        let s = auth.login("bob", "bob's passphrase", None, None).unwrap().session;
        let bob = auth.authenticate_session(&s.id).unwrap();
        let t = auth.create_token(&bob, None, "ci", Role::Viewer, None).unwrap();
        assert_eq!(auth.authenticate_bearer(&t.token, None).unwrap().role, Role::Viewer);
        auth.update_user(&root, None, "bob", 1, UserPatch { disabled: Some(true), ..Default::default() })
            .unwrap();
        assert_eq!(auth.authenticate_session(&s.id), Err(AuthError::Unauthorized));
        assert_eq!(auth.authenticate_bearer(&t.token, None), Err(AuthError::Unauthorized));
        assert_eq!(auth.login("bob", "bob's passphrase", None, None).unwrap_err(), AuthError::Unauthorized);
        auth.update_user(&root, None, "bob", 2, UserPatch { disabled: Some(false), ..Default::default() })
            .unwrap();
        let s = auth.login("bob", "bob's passphrase", None, None).unwrap().session;
        let patch = UserPatch { password: Some("a new passphrase".into()), ..Default::default() };
        auth.update_user(&root, None, "bob", 3, patch).unwrap();
        assert_eq!(auth.authenticate_session(&s.id), Err(AuthError::Unauthorized));
        assert!(auth.login("bob", "a new passphrase", None, None).is_ok());
    }

    #[test]
    fn token_creation_rules() {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let auth =
            open(&dir, &clock, AuthConfig { bootstrap_token: Some("boot-secret".into()), ..test_config() });
        let boot = auth.authenticate_bearer("boot-secret", None).unwrap();
        assert_eq!((boot.actor.as_str(), boot.role, boot.user.clone()), (BOOTSTRAP_ACTOR, Role::Admin, None));
        assert!(matches!(
            auth.create_token(&boot, None, "x", Role::Viewer, None),
            Err(AuthError::Forbidden(_))
        ));
        auth.add_user(&boot, None, "op", Role::Operator, "operator passphrase").unwrap();
        let op = Principal {
            actor: "op".into(),
            user: Some("op".into()),
            role: Role::Operator,
            via: Via::Session,
            csrf: None,
        };
        assert!(matches!(auth.create_token(&op, None, "x", Role::Admin, None), Err(AuthError::Forbidden(_))));
        let too_long = Some(Duration::from_secs(400 * 86_400));
        assert!(matches!(
            auth.create_token(&op, None, "x", Role::Viewer, too_long),
            Err(AuthError::BadRequest(_))
        ));
        let t = auth.create_token(&op, None, "deploy", Role::Operator, None).unwrap();
        assert_eq!(t.view.expires, clock.now() + Duration::from_secs(90 * 86_400));
        let p = auth.authenticate_bearer(&t.token, None).unwrap();
        assert_eq!(
            (p.actor, p.user.as_deref(), p.via),
            (format!("token:{}", t.view.id), Some("op"), Via::Token)
        );
        assert!(auth.take_last_use_dirty());
        auth.save_store().unwrap();
        assert!(!auth.take_last_use_dirty());
        auth.revoke_token(&boot, None, &t.view.id).unwrap();
        assert_eq!(auth.authenticate_bearer(&t.token, None), Err(AuthError::Unauthorized));
        let denied = auth
            .audit_query(&audit::Filter { action: Some("auth.token".into()), ..Default::default() })
            .unwrap();
        assert_eq!(denied.len(), 1);
        assert!(!denied[0].message.as_ref().unwrap().contains(&t.token), "the secret is never logged");
    }
}
