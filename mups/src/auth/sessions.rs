//! Browser sessions, in memory only: a restart logs everyone out, which is acceptable on an
//! appliance and means no session secret ever reaches the disk.
//!
//! A session id is 256 random bits, sent to the browser once in a cookie and kept here only as
//! its SHA-256, so a heap dump or a debug print of this map yields nothing that logs anyone in.
//! A session ends after [`SessionConfig::idle`] without a request, or [`SessionConfig::absolute`]
//! after login whatever the activity, or at logout. Each login creates a new id and drops the
//! one the browser presented, so an id planted before login (session fixation) is never promoted.
//!
//! CSRF uses the synchronizer-token pattern: each session has its own random CSRF token, given
//! to the console in the login response (and by `GET /api/v1/me`), never in a cookie; the
//! console sends it back in `X-CSRF-Token` on every mutation. Another origin can make the
//! browser send the cookie but cannot read the token.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use super::secret::{self, RngError};

/// Session lifetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session unused for this long ends.
    pub idle: Duration,
    /// A session ends this long after login, whatever the activity.
    pub absolute: Duration,
    /// Most sessions one user may hold; a new login beyond it ends that user's oldest session.
    pub max_per_user: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { idle: Duration::from_secs(15 * 60), absolute: Duration::from_secs(8 * 3600), max_per_user: 16 }
    }
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    csrf: String,
    created: OffsetDateTime,
    last_seen: OffsetDateTime,
}

/// A session just created: the id goes into the cookie, the CSRF token to the console.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The cookie value.
    pub id: String,
    /// The value for `X-CSRF-Token`.
    pub csrf: String,
    /// When it ends at the latest.
    pub absolute_expiry: OffsetDateTime,
}

/// A session that is valid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSession {
    /// Its user.
    pub user: String,
    /// Its CSRF token.
    pub csrf: String,
}

/// Why a session id was not accepted. All of these are "log in again" to the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Never issued, logged out, or ended for another reason.
    #[error("no such session")]
    Unknown,
    /// Unused for longer than the idle timeout.
    #[error("the session expired after inactivity")]
    IdleExpired,
    /// Older than the absolute timeout.
    #[error("the session reached its maximum lifetime")]
    AbsoluteExpired,
}

/// All live sessions.
#[derive(Debug, Default)]
pub struct SessionStore {
    cfg: SessionConfig,
    by_digest: HashMap<String, Session>,
}

impl SessionStore {
    /// An empty store.
    pub fn new(cfg: SessionConfig) -> Self {
        Self { cfg, by_digest: HashMap::new() }
    }

    /// The lifetimes in force.
    pub fn config(&self) -> SessionConfig {
        self.cfg
    }

    /// Starts a session for `user`. `previous` is the id the browser presented, if any: it is
    /// dropped, so the id always changes at login.
    pub fn create(
        &mut self,
        user: &str,
        previous: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<NewSession, RngError> {
        if let Some(old) = previous {
            self.remove(old);
        }
        self.prune(now);
        let mut mine: Vec<(String, OffsetDateTime)> = self
            .by_digest
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (k.clone(), s.created))
            .collect();
        if mine.len() >= self.cfg.max_per_user {
            mine.sort_by_key(|(_, created)| *created);
            for (k, _) in mine.iter().take(mine.len() + 1 - self.cfg.max_per_user) {
                self.by_digest.remove(k);
            }
        }
        let id = secret::random_string()?;
        let csrf = secret::random_string()?;
        self.by_digest.insert(
            secret::digest(&id),
            Session { user: user.to_owned(), csrf: csrf.clone(), created: now, last_seen: now },
        );
        Ok(NewSession { id, csrf, absolute_expiry: now + self.cfg.absolute })
    }

    /// Checks session `id` at `now` and, if valid, counts this as activity. An expired session
    /// is removed.
    pub fn touch(&mut self, id: &str, now: OffsetDateTime) -> Result<ActiveSession, SessionError> {
        let key = secret::digest(id);
        let s = self.by_digest.get_mut(&key).ok_or(SessionError::Unknown)?;
        let verdict = if now - s.created >= self.cfg.absolute {
            Err(SessionError::AbsoluteExpired)
        } else if now - s.last_seen >= self.cfg.idle {
            Err(SessionError::IdleExpired)
        } else {
            s.last_seen = now;
            Ok(ActiveSession { user: s.user.clone(), csrf: s.csrf.clone() })
        };
        if verdict.is_err() {
            self.by_digest.remove(&key);
        }
        verdict
    }

    /// Ends session `id` (logout); returns its user.
    pub fn remove(&mut self, id: &str) -> Option<String> {
        self.by_digest.remove(&secret::digest(id)).map(|s| s.user)
    }

    /// Ends every session of `user` (password changed, disabled, deleted); returns how many.
    pub fn remove_user(&mut self, user: &str) -> usize {
        let before = self.by_digest.len();
        self.by_digest.retain(|_, s| s.user != user);
        before - self.by_digest.len()
    }

    /// Drops expired sessions, so abandoned ones do not accumulate.
    pub fn prune(&mut self, now: OffsetDateTime) {
        let cfg = self.cfg;
        self.by_digest.retain(|_, s| now - s.created < cfg.absolute && now - s.last_seen < cfg.idle);
    }

    /// Live sessions (including expired ones not yet pruned).
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::ManualClock;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn idle_expiry_resets_on_activity() {
        let clock = ManualClock::new();
        let mut s = SessionStore::new(SessionConfig::default());
        let new = s.create("alice", None, clock.now()).unwrap();
        for _ in 0..10 {
            clock.advance(14 * MIN);
            assert_eq!(s.touch(&new.id, clock.now()).unwrap().user, "alice");
        }
        clock.advance(15 * MIN);
        assert_eq!(s.touch(&new.id, clock.now()), Err(SessionError::IdleExpired));
        assert_eq!(s.touch(&new.id, clock.now()), Err(SessionError::Unknown), "removed once expired");
    }

    #[test]
    fn absolute_expiry_ends_an_active_session() {
        let clock = ManualClock::new();
        let mut s = SessionStore::new(SessionConfig::default());
        let new = s.create("alice", None, clock.now()).unwrap();
        assert_eq!(new.absolute_expiry, clock.now() + 8 * 60 * MIN);
        for _ in 0..(8 * 60 / 10 - 1) {
            clock.advance(10 * MIN);
            s.touch(&new.id, clock.now()).unwrap();
        }
        clock.advance(10 * MIN);
        assert_eq!(s.touch(&new.id, clock.now()), Err(SessionError::AbsoluteExpired));
    }

    #[test]
    fn login_rotates_the_id_and_logout_ends_it() {
        let clock = ManualClock::new();
        let mut s = SessionStore::new(SessionConfig::default());
        let first = s.create("alice", None, clock.now()).unwrap();
        let second = s.create("alice", Some(&first.id), clock.now()).unwrap();
        assert_ne!(first.id, second.id);
        assert_ne!(first.csrf, second.csrf);
        assert_eq!(s.touch(&first.id, clock.now()), Err(SessionError::Unknown));
        assert_eq!(s.touch(&second.id, clock.now()).unwrap().csrf, second.csrf);
        assert_eq!(s.remove(&second.id).as_deref(), Some("alice"));
        assert_eq!(s.touch(&second.id, clock.now()), Err(SessionError::Unknown));
    }

    #[test]
    fn per_user_cap_and_remove_user() {
        let clock = ManualClock::new();
        let mut s = SessionStore::new(SessionConfig { max_per_user: 2, ..SessionConfig::default() });
        let a = s.create("alice", None, clock.now()).unwrap();
        clock.advance(MIN);
        let b = s.create("alice", None, clock.now()).unwrap();
        clock.advance(MIN);
        let c = s.create("alice", None, clock.now()).unwrap();
        let bob = s.create("bob", None, clock.now()).unwrap();
        assert_eq!(s.touch(&a.id, clock.now()), Err(SessionError::Unknown), "the oldest made room");
        assert!(s.touch(&b.id, clock.now()).is_ok() && s.touch(&c.id, clock.now()).is_ok());
        assert_eq!(s.remove_user("alice"), 2);
        assert!(s.touch(&bob.id, clock.now()).is_ok());
        assert_eq!(s.len(), 1);
    }
}
