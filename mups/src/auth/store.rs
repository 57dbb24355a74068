//! Users and API tokens, persisted in `<state_dir>/users.json`.
//!
//! Every change is applied to a copy, written with [`persist::write_atomic`], and only then
//! becomes the in-memory state, so memory never claims something the disk does not hold.
//! Users carry a `version` that each change increments; a change naming another version is
//! refused with [`StoreError::Conflict`] (HTTP 409), so two admins editing the same user cannot
//! silently overwrite each other. The file can also be edited by `mups user add` while `mups`
//! runs: before each change (and each login) the store re-reads the file if its digest differs
//! from what it last read or wrote.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::Role;
use super::persist::{self, PersistError};
use super::secret::{self, RngError};

/// Version of the file's layout; a file with another one is refused rather than misread.
const FORMAT: u32 = 1;

/// How stale a token's recorded last use may get before a use rewrites the file: the record
/// answers "is this token still used?", for which ten minutes is precise enough, and it keeps
/// a busy automation client from causing a write per request.
pub const LAST_USE_RESOLUTION: time::Duration = time::Duration::minutes(10);

/// Names no user may take: they are actors of their own in the audit log.
const RESERVED_NAMES: &[&str] = &["system"];

/// A user as stored (with the password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Login name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    pub name: String,
    /// Rights.
    pub role: Role,
    /// argon2id PHC string.
    pub password_hash: String,
    /// A disabled user cannot log in, and their sessions and tokens stop working.
    pub disabled: bool,
    /// Incremented by every change.
    pub version: u64,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

/// A user as shown by the API and the CLI (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// Login name.
    pub name: String,
    /// Rights.
    pub role: Role,
    /// Whether the user is disabled.
    pub disabled: bool,
    /// Version to send back with a change.
    pub version: u64,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated: OffsetDateTime,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            role: u.role,
            disabled: u.disabled,
            version: u.version,
            created: u.created,
            updated: u.updated,
        }
    }
}

/// An API token as stored: only the SHA-256 of the secret (see [`secret::digest`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiToken {
    /// Public id (`tok_…`), used to list and revoke it and as the audit actor `token:<id>`.
    pub id: String,
    /// What it is for, as its creator described it.
    pub label: String,
    /// The user it acts for; it stops working when that user is disabled or deleted.
    pub owner: String,
    /// Its rights; never more than the owner's current role.
    pub role: Role,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// After this it is refused.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Last successful use, to [`LAST_USE_RESOLUTION`].
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
}

/// An API token as listed (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Purpose.
    pub label: String,
    /// Owning user.
    pub owner: String,
    /// Rights.
    pub role: Role,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Last use, to [`LAST_USE_RESOLUTION`].
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used: Option<OffsetDateTime>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id.clone(),
            label: t.label.clone(),
            owner: t.owner.clone(),
            role: t.role,
            created: t.created,
            expires: t.expires,
            last_used: t.last_used,
        }
    }
}

/// A token that authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMatch {
    /// Its id.
    pub id: String,
    /// Its owner.
    pub owner: String,
    /// The lower of the token's role and its owner's current role.
    pub role: Role,
    /// The recorded last use moved: the caller should [`Store::save`] (off the request path).
    pub save_due: bool,
}

/// What a user update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    /// New role.
    pub role: Option<Role>,
    /// New argon2id hash (already checked against the policy and hashed by the caller).
    pub password_hash: Option<String>,
    /// Disable or enable.
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Db {
    format: u32,
    users: Vec<User>,
    tokens: Vec<ApiToken>,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The version given is not the current one: someone else changed the object first.
    #[error("{what} was changed by someone else (current version {current}); reload and retry")]
    Conflict {
        /// The object.
        what: String,
        /// Its current version.
        current: u64,
    },
    /// The change would leave no enabled admin, and nobody could manage users any more.
    #[error("the change would leave no enabled admin")]
    LastAdmin,
    /// No such user or token.
    #[error("{0} not found")]
    NotFound(String),
    /// A user with that name exists.
    #[error("user {0:?} already exists")]
    AlreadyExists(String),
    /// A user name outside the allowed alphabet or length, or reserved.
    #[error(
        "invalid user name {0:?}: 1-64 of a-z 0-9 . _ -, starting with a letter or digit; not \"system\""
    )]
    InvalidName(String),
    /// A token may not have more rights than its owner.
    #[error("a token's role ({requested}) cannot exceed its owner's ({owner})")]
    RoleTooHigh {
        /// Asked for.
        requested: Role,
        /// The owner's role.
        owner: Role,
    },
    /// Reading or writing the file failed.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// The file does not parse, or has an unknown format.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The random number generator failed.
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// Users and tokens, loaded from and saved to one file.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    db: Db,
    /// SHA-256 of the file as last read or written; `None` when it did not exist.
    disk_digest: Option<[u8; 32]>,
    by_hash: HashMap<String, usize>,
}

/// Whether `name` is acceptable as a user name.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && !RESERVED_NAMES.contains(&name)
}

impl Store {
    /// Opens `<dir>/users.json` (an absent file is an empty store). `dir` must exist.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut s = Self {
            path: dir.join(persist::USERS_FILE),
            db: Db { format: FORMAT, ..Db::default() },
            disk_digest: None,
            by_hash: HashMap::new(),
        };
        s.refresh()?;
        Ok(s)
    }

    /// Re-reads the file if it changed since it was last read or written; returns whether it did.
    pub fn refresh(&mut self) -> Result<bool, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let changed = self.disk_digest.is_some();
                if changed {
                    self.set_db(Db { format: FORMAT, ..Db::default() }, None);
                }
                return Ok(changed);
            }
            Err(e) => return Err(persist::at(&self.path)(e).into()),
        };
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if self.disk_digest == Some(digest) {
            return Ok(false);
        }
        let corrupt = |message: String| StoreError::Corrupt { path: self.path.clone(), message };
        let db: Db = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if db.format != FORMAT {
            return Err(corrupt(format!("unknown format {} (this mups reads {FORMAT})", db.format)));
        }
        self.set_db(db, Some(digest));
        Ok(true)
    }

    fn set_db(&mut self, db: Db, digest: Option<[u8; 32]>) {
        self.by_hash = db.tokens.iter().enumerate().map(|(i, t)| (t.hash.clone(), i)).collect();
        self.db = db;
        self.disk_digest = digest;
    }

    /// Writes the current state (used after [`TokenMatch::save_due`]).
    pub fn save(&mut self) -> Result<(), StoreError> {
        self.commit(self.db.clone())
    }

    fn commit(&mut self, db: Db) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(&db).expect("the store serialises");
        bytes.push(b'\n');
        persist::write_atomic(&self.path, &bytes)?;
        let digest = Sha256::digest(&bytes).into();
        self.set_db(db, Some(digest));
        Ok(())
    }

    /// All users, by name.
    pub fn users(&self) -> Vec<UserView> {
        let mut v: Vec<UserView> = self.db.users.iter().map(UserView::from).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// One user, with the hash.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.db.users.iter().find(|u| u.name == name)
    }

    /// Adds a user. `password_hash` is an argon2id PHC string made by the caller.
    pub fn add_user(
        &mut self,
        name: &str,
        role: Role,
        password_hash: String,
        now: OffsetDateTime,
    ) -> Result<UserView, StoreError> {
        self.refresh()?;
        if !valid_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        if self.user(name).is_some() {
            return Err(StoreError::AlreadyExists(name.to_owned()));
        }
        let user = User {
            name: name.to_owned(),
            role,
            password_hash,
            disabled: false,
            version: 1,
            created: now,
            updated: now,
        };
        let view = UserView::from(&user);
        let mut db = self.db.clone();
        db.users.push(user);
        self.commit(db)?;
        Ok(view)
    }

    fn check_version(&self, name: &str, expected: u64) -> Result<usize, StoreError> {
        let i = self
            .db
            .users
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| StoreError::NotFound(format!("user {name:?}")))?;
        let current = self.db.users[i].version;
        if current != expected {
            return Err(StoreError::Conflict { what: format!("user {name:?}"), current });
        }
        Ok(i)
    }

    fn has_enabled_admin(db: &Db) -> bool {
        db.users.iter().any(|u| u.role == Role::Admin && !u.disabled)
    }

    /// Changes a user if `expected_version` is current; returns the new view.
    pub fn update_user(
        &mut self,
        name: &str,
        expected_version: u64,
        change: UserChange,
        now: OffsetDateTime,
    ) -> Result<UserView, StoreError> {
        self.refresh()?;
        let i = self.check_version(name, expected_version)?;
        let mut db = self.db.clone();
        let u = &mut db.users[i];
        if let Some(role) = change.role {
            u.role = role;
        }
        if let Some(hash) = change.password_hash {
            u.password_hash = hash;
        }
        if let Some(disabled) = change.disabled {
            u.disabled = disabled;
        }
        u.version += 1;
        u.updated = now;
        let view = UserView::from(&*u);
        if Self::has_enabled_admin(&self.db) && !Self::has_enabled_admin(&db) {
            return Err(StoreError::LastAdmin);
        }
        self.commit(db)?;
        Ok(view)
    }

    /// Deletes a user, and their tokens, if `expected_version` is current.
    pub fn delete_user(&mut self, name: &str, expected_version: u64) -> Result<(), StoreError> {
        self.refresh()?;
        let i = self.check_version(name, expected_version)?;
        let mut db = self.db.clone();
        db.users.remove(i);
        db.tokens.retain(|t| t.owner != name);
        if Self::has_enabled_admin(&self.db) && !Self::has_enabled_admin(&db) {
            return Err(StoreError::LastAdmin);
        }
        self.commit(db)
    }

    /// All tokens, by owner then creation.
    pub fn tokens(&self) -> Vec<TokenView> {
        let mut v: Vec<TokenView> = self.db.tokens.iter().map(TokenView::from).collect();
        v.sort_by(|a, b| (&a.owner, a.created).cmp(&(&b.owner, b.created)));
        v
    }

    /// Creates a token for `owner` (an existing, enabled user) with at most the owner's role.
    /// Returns the listing and the secret, which is never stored and cannot be shown again.
    pub fn add_token(
        &mut self,
        owner: &str,
        label: &str,
        role: Role,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(TokenView, String), StoreError> {
        self.refresh()?;
        let owner_role = match self.user(owner) {
            Some(u) if !u.disabled => u.role,
            _ => return Err(StoreError::NotFound(format!("user {owner:?}"))),
        };
        if role > owner_role {
            return Err(StoreError::RoleTooHigh { requested: role, owner: owner_role });
        }
        let secret = secret::new_api_token()?;
        let token = ApiToken {
            id: secret::random_id("tok_")?,
            label: label.to_owned(),
            owner: owner.to_owned(),
            role,
            hash: secret::digest(&secret),
            created: now,
            expires,
            last_used: None,
        };
        let view = TokenView::from(&token);
        let mut db = self.db.clone();
        db.tokens.push(token);
        self.commit(db)?;
        Ok((view, secret))
    }

    /// Deletes a token; it stops working at once.
    pub fn revoke_token(&mut self, id: &str) -> Result<TokenView, StoreError> {
        self.refresh()?;
        let i = self
            .db
            .tokens
            .iter()
            .position(|t| t.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("token {id:?}")))?;
        let mut db = self.db.clone();
        let t = db.tokens.remove(i);
        self.commit(db)?;
        Ok(TokenView::from(&t))
    }

    /// The token whose secret is `secret`, if it is unexpired and its owner is enabled; records
    /// the use in memory.
    ///
    /// The lookup is by the secret's SHA-256, so a timing difference in the map can at most
    /// reveal something about a digest, which does not help find a secret that hashes to it.
    pub fn use_token(&mut self, secret: &str, now: OffsetDateTime) -> Option<TokenMatch> {
        let &i = self.by_hash.get(&secret::digest(secret))?;
        let t = &self.db.tokens[i];
        if now >= t.expires {
            return None;
        }
        let owner = self.db.users.iter().find(|u| u.name == t.owner && !u.disabled)?;
        let role = t.role.min(owner.role);
        let t = &mut self.db.tokens[i];
        let save_due = t.last_used.is_none_or(|last| now - last >= LAST_USE_RESOLUTION);
        if save_due {
            t.last_used = Some(now);
        }
        Some(TokenMatch { id: t.id.clone(), owner: t.owner.clone(), role, save_due })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::{ManualClock, TempDir};

    fn store(dir: &TempDir) -> Store {
        Store::open(dir.path()).unwrap()
    }

    #[test]
    fn names() {
        for ok in ["alice", "a", "ops.bot-1", "9lives", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "-x", ".x", "a b", "a:b", "system", &"x".repeat(65), "ü"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn users_persist_and_versions_detect_stale_updates() {
        let dir = TempDir::new();
        let now = ManualClock::new().now();
        let mut s = store(&dir);
        s.add_user("alice", Role::Admin, "h1".into(), now).unwrap();
        s.add_user("bob", Role::Viewer, "h2".into(), now).unwrap();
        assert!(matches!(
            s.add_user("bob", Role::Viewer, "h".into(), now),
            Err(StoreError::AlreadyExists(_))
        ));
        let v = s.update_user("bob", 1, UserChange { role: Some(Role::Operator), ..Default::default() }, now);
        assert_eq!(v.unwrap().version, 2);
        // A second editor still holding version 1 is refused, and nothing changes.
        let stale = s.update_user("bob", 1, UserChange { disabled: Some(true), ..Default::default() }, now);
        assert!(matches!(stale, Err(StoreError::Conflict { current: 2, .. })));
        assert!(matches!(s.delete_user("bob", 1), Err(StoreError::Conflict { .. })));
        let reopened = store(&dir);
        let bob = reopened.user("bob").unwrap();
        assert_eq!((bob.role, bob.disabled, bob.version), (Role::Operator, false, 2));
        s.delete_user("bob", 2).unwrap();
        assert!(store(&dir).user("bob").is_none());
    }

    #[test]
    fn the_last_enabled_admin_cannot_be_removed() {
        let dir = TempDir::new();
        let now = ManualClock::new().now();
        let mut s = store(&dir);
        s.add_user("root1", Role::Admin, "h".into(), now).unwrap();
        let demote = UserChange { role: Some(Role::Viewer), ..Default::default() };
        assert!(matches!(s.update_user("root1", 1, demote, now), Err(StoreError::LastAdmin)));
        let disable = UserChange { disabled: Some(true), ..Default::default() };
        assert!(matches!(s.update_user("root1", 1, disable.clone(), now), Err(StoreError::LastAdmin)));
        assert!(matches!(s.delete_user("root1", 1), Err(StoreError::LastAdmin)));
        s.add_user("root2", Role::Admin, "h".into(), now).unwrap();
        s.update_user("root1", 1, disable, now).unwrap();
    }

    #[test]
    fn tokens_are_hashed_scoped_expiring_revocable_and_follow_their_owner() {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let now = clock.now();
        let mut s = store(&dir);
        s.add_user("op", Role::Operator, "h".into(), now).unwrap();
        let expires = now + time::Duration::days(1);
        assert!(matches!(
            s.add_token("op", "ci", Role::Admin, expires, now),
            Err(StoreError::RoleTooHigh { requested: Role::Admin, owner: Role::Operator })
        ));
        let (view, secret) = s.add_token("op", "ci", Role::Operator, expires, now).unwrap();
        let file = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(!file.contains(&secret), "the secret itself is never stored");
        assert!(file.contains(&secret::digest(&secret)));

        let m = s.use_token(&secret, now).unwrap();
        assert_eq!(
            (m.id.as_str(), m.owner.as_str(), m.role, m.save_due),
            (view.id.as_str(), "op", Role::Operator, true)
        );
        // Last use is recorded, but rewritten only after LAST_USE_RESOLUTION.
        clock.advance(std::time::Duration::from_secs(60));
        assert!(!s.use_token(&secret, clock.now()).unwrap().save_due);
        clock.advance(std::time::Duration::from_secs(600));
        assert!(s.use_token(&secret, clock.now()).unwrap().save_due);
        assert!(s.use_token("mups_wrong", now).is_none());

        // Demoting the owner lowers what the token can do.
        s.update_user("op", 1, UserChange { role: Some(Role::Viewer), ..Default::default() }, now).unwrap();
        assert_eq!(s.use_token(&secret, now).unwrap().role, Role::Viewer);
        // Disabling the owner stops the token.
        s.update_user("op", 2, UserChange { disabled: Some(true), ..Default::default() }, now).unwrap();
        assert!(s.use_token(&secret, now).is_none());
        s.update_user("op", 3, UserChange { disabled: Some(false), ..Default::default() }, now).unwrap();
        // Expiry.
        assert!(s.use_token(&secret, expires).is_none());
        // Revocation, which survives a reopen.
        s.revoke_token(&view.id).unwrap();
        assert!(s.use_token(&secret, now).is_none());
        assert!(store(&dir).tokens().is_empty());
    }

    #[test]
    fn an_outside_edit_of_the_file_is_picked_up() {
        let dir = TempDir::new();
        let now = ManualClock::new().now();
        let mut running = store(&dir);
        running.add_user("alice", Role::Admin, "h".into(), now).unwrap();
        let mut cli = store(&dir);
        cli.add_user("bob", Role::Viewer, "h".into(), now).unwrap();
        // A change by the running store re-reads the file first, so it keeps bob.
        running.add_user("carol", Role::Viewer, "h".into(), now).unwrap();
        assert_eq!(store(&dir).users().len(), 3);
        cli.add_user("dave", Role::Viewer, "h".into(), now).unwrap();
        assert!(running.refresh().unwrap());
        assert!(running.user("dave").is_some());
        assert!(!running.refresh().unwrap());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_store() {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("users.json"), "{not json").unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { .. })));
    }
}
