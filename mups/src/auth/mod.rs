//! Access control for the management API and console (issue 6): who may do what, how they
//! prove it, and a tamper-evident record of what they did.
//!
//! # Layout
//!
//! - [`Role`] (here): viewer < operator < admin; each role includes the rights of the ones before.
//! - [`password`]: argon2id hashing (parameters documented there) and the password policy.
//! - [`secret`]: random secrets (session ids, CSRF tokens, API tokens) and their SHA-256 digests.
//! - [`store`]: users and API tokens, with optimistic concurrency (`version`), persisted by [`persist`].
//! - [`persist`]: the state directory and atomic 0600 file writes.
//! - [`sessions`]: browser sessions in memory: idle and absolute expiry, CSRF token, rotation.
//! - [`ratelimit`]: login throttling per source address and per account.
//! - [`audit`]: the append-only, hash-chained JSON-lines audit log; `verify`, query, export.
//! - [`service`]: [`service::Auth`], the facade the HTTP layer and the CLI use (login, authenticate,
//!   user and token changes, each audited).
//! - [`http`]: axum integration: the route table that declares an access rule per route (deny by
//!   default), the authenticating guard, CSRF, security headers and limits, and the `/api/v1`
//!   routes for login, users, tokens and the audit log.
//! - [`admin_cli`]: `mups user add|list` and `mups audit verify`.
//!
//! Everything that depends on time takes `now` as a parameter (sans-IO); only [`service::Auth`]
//! reads a clock, and tests give it one they move by hand.

pub mod admin_cli;
pub mod audit;
pub mod http;
pub mod password;
pub mod persist;
pub mod ratelimit;
pub mod secret;
pub mod service;
pub mod sessions;
pub mod store;

#[cfg(test)]
pub(crate) mod testutil;

use serde::{Deserialize, Serialize};

pub use service::{Auth, AuthConfig};

/// What a principal may do. Ordered: a higher role includes every right of the lower ones, so a
/// guard is a single comparison (`principal.role >= required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read state, metrics, jobs.
    Viewer,
    /// Viewer, plus switch, drain and planned switchover.
    Operator,
    /// Operator, plus users, tokens, configuration and the audit log.
    Admin,
}

impl Role {
    /// The lowercase name used in the API, the CLI and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `viewer`, `operator`, `admin`.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?} (expected viewer, operator or admin)")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_are_ordered_so_higher_includes_lower() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
