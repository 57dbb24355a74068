//! Password hashing (argon2id) and the password policy.
//!
//! # Parameters
//!
//! [`HashParams::default`] is argon2id v19 with m = 19 MiB (19,456 KiB), t = 2 passes, p = 1 lane,
//! a 16-byte random salt and a 32-byte output: the OWASP Password Storage Cheat Sheet's minimum,
//! and the `argon2` crate's defaults. Each hash is stored as a PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which carries its own parameters, so raising
//! them later leaves old hashes verifiable; they are re-hashed only when the password changes.
//! One verification costs ~19 MiB and some tens of milliseconds, so callers run it on a blocking
//! thread, and [`super::ratelimit`] bounds how often anyone can make us run it.
//!
//! # Policy
//!
//! Following NIST SP 800-63B: length is what counts, composition rules are not imposed. A
//! password must be 12 to 256 characters, must not contain control characters, and must not
//! contain the user name (when the name has 4 or more characters: a 2-letter name like `op`
//! would otherwise forbid many unrelated passwords). The upper bound keeps one login from costing more than the hash itself.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};

/// Shortest accepted password, in characters.
pub const MIN_LEN: usize = 12;
/// Longest accepted password, in characters.
pub const MAX_LEN: usize = 256;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes over memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self { m_kib: Params::DEFAULT_M_COST, t: Params::DEFAULT_T_COST, p: Params::DEFAULT_P_COST }
    }
}

impl HashParams {
    /// The cheapest parameters argon2 allows: for tests only, where hundreds of hashes must not
    /// take minutes in a debug build. Never for stored passwords.
    pub fn insecure_for_tests() -> Self {
        Self { m_kib: Params::MIN_M_COST, t: 1, p: 1 }
    }
}

/// Hashing failed (bad parameters or the RNG failed); not a wrong password.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// A password that breaks the policy. The message is safe to show to the person choosing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Fewer than [`MIN_LEN`] characters.
    #[error("the password must have at least {MIN_LEN} characters")]
    TooShort,
    /// More than [`MAX_LEN`] characters.
    #[error("the password must have at most {MAX_LEN} characters")]
    TooLong,
    /// Contains a control character (often a paste accident: a newline or tab).
    #[error("the password must not contain control characters")]
    ControlCharacter,
    /// Contains the user name (of 4 or more characters).
    #[error("the password must not contain the user name")]
    ContainsUserName,
}

/// Checks `password` against the policy for user `name`.
pub fn check_policy(name: &str, password: &str) -> Result<(), PolicyError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(PolicyError::TooShort);
    }
    if len > MAX_LEN {
        return Err(PolicyError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PolicyError::ControlCharacter);
    }
    if name.chars().count() >= 4 && password.to_lowercase().contains(&name.to_lowercase()) {
        return Err(PolicyError::ContainsUserName);
    }
    Ok(())
}

/// Hashes and verifies passwords with fixed parameters.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    /// A hash of a random password, verified against when the user does not exist so that an
    /// unknown user costs as much time as a known one and timing does not reveal which names exist.
    dummy: String,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher with `params`; computes the dummy hash once (one argon2 run).
    pub fn new(params: HashParams) -> Result<Self, HashError> {
        let p = Params::new(params.m_kib, params.t, params.p, None).map_err(|e| HashError(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let random = super::secret::random_string().map_err(|e| HashError(e.to_string()))?;
        let dummy = hash_with(&argon2, &random)?;
        Ok(Self { argon2, dummy })
    }

    /// A PHC string for `password`, with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, HashError> {
        hash_with(&self.argon2, password)
    }

    /// Whether `password` matches `phc`. A malformed stored hash counts as a mismatch, so a
    /// corrupted record locks its user out rather than letting anyone in.
    pub fn verify(&self, phc: &str, password: &str) -> bool {
        match PasswordHash::new(phc) {
            Ok(parsed) => self.argon2.verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(_) => false,
        }
    }

    /// Spends the time of one verification and returns `false`: for logins naming no existing
    /// (or a disabled) user.
    pub fn verify_dummy(&self, password: &str) -> bool {
        let _ = self.verify(&self.dummy, password);
        false
    }
}

fn hash_with(argon2: &Argon2<'static>, password: &str) -> Result<String, HashError> {
    let hash: PasswordHash =
        argon2.hash_password(password.as_bytes()).map_err(|e| HashError(e.to_string()))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parameters_are_owasp_argon2id() {
        let p = HashParams::default();
        assert_eq!((p.m_kib, p.t, p.p), (19_456, 2, 1));
        let h = Hasher::new(HashParams::insecure_for_tests()).unwrap();
        assert!(h.hash("correct horse battery").unwrap().starts_with("$argon2id$v=19$"));
    }

    #[test]
    fn verify_accepts_the_password_and_rejects_others() {
        let h = Hasher::new(HashParams::insecure_for_tests()).unwrap();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(h.verify(&phc, "correct horse battery"));
        assert!(!h.verify(&phc, "correct horse battery "));
        assert!(!h.verify("not a phc string", "correct horse battery"));
        assert!(!h.verify_dummy("correct horse battery"));
        // Salted: the same password hashes differently each time.
        assert_ne!(phc, h.hash("correct horse battery").unwrap());
    }

    #[test]
    fn policy() {
        assert_eq!(check_policy("alice", "short"), Err(PolicyError::TooShort));
        assert_eq!(check_policy("alice", "eleven char"), Err(PolicyError::TooShort));
        assert_eq!(check_policy("alice", "twelve chars"), Ok(()));
        assert_eq!(check_policy("alice", &"x".repeat(257)), Err(PolicyError::TooLong));
        assert_eq!(check_policy("alice", "with\nnewline!!"), Err(PolicyError::ControlCharacter));
        assert_eq!(check_policy("alice", "my-ALICE-password"), Err(PolicyError::ContainsUserName));
        assert_eq!(check_policy("op", "operator passphrase"), Ok(()), "short names are not checked");
        // Length counts characters, not bytes.
        assert_eq!(check_policy("bob", "пароль-пароль"), Ok(()));
    }
}
