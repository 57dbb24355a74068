//! Random secrets and their digests.
//!
//! Every secret comes from the operating system's CSPRNG (`getrandom`), never from a seeded or
//! thread-local generator, so a process fork or a predictable seed cannot repeat one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every API token, so a leaked one is recognisable by secret scanners and in logs.
pub const TOKEN_PREFIX: &str = "mups_";

/// Bytes of randomness in session ids, CSRF tokens and API tokens: 256 bits, far past the 128
/// that makes guessing hopeless, and the same for all so there is one rule to audit.
pub const SECRET_BYTES: usize = 32;

/// The operating system's random source failed; nothing safe can be issued.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed: {0}")]
pub struct RngError(String);

/// `n` random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RngError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| RngError(e.to_string()))?;
    Ok(buf)
}

/// A random opaque string (base64url, no padding) of [`SECRET_BYTES`] bytes: session ids, CSRF tokens.
pub fn random_string() -> Result<String, RngError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>()?))
}

/// A new API token: `mups_` + 43 base64url characters.
pub fn new_api_token() -> Result<String, RngError> {
    Ok(format!("{TOKEN_PREFIX}{}", random_string()?))
}

/// A short public identifier (token ids): 64 random bits in hex. Not a secret; it names a
/// token in lists, audit entries and `DELETE /api/v1/tokens/{id}`.
pub fn random_id(prefix: &str) -> Result<String, RngError> {
    Ok(format!("{prefix}{}", hex::encode(random_bytes::<8>()?)))
}

/// SHA-256 of a secret, hex-encoded.
///
/// High-entropy secrets (API tokens, session ids) are stored as a plain SHA-256, not argon2:
/// a slow hash only helps when the input can be guessed, and 256 random bits cannot be, while an
/// argon2 run on every API request would cost ~20 MiB and tens of milliseconds per call. Users'
/// passwords, which can be guessed, use argon2id (see [`super::password`]).
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two secrets, so the time of a comparison does not tell an
/// attacker how many leading bytes were right.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    // Comparing digests gives equal lengths, so not even the length leaks.
    Sha256::digest(a.as_bytes()).ct_eq(&Sha256::digest(b.as_bytes())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_tokens_have_the_prefix_and_256_bits() {
        let t = new_api_token().unwrap();
        assert!(t.starts_with(TOKEN_PREFIX));
        let body = URL_SAFE_NO_PAD.decode(&t[TOKEN_PREFIX.len()..]).unwrap();
        assert_eq!(body.len(), SECRET_BYTES);
        assert_ne!(t, new_api_token().unwrap());
    }

    #[test]
    fn digests_are_hex_sha256_and_comparison_is_exact() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(secrets_equal("same", "same"));
        assert!(!secrets_equal("same", "Same"));
        assert!(!secrets_equal("same", "same-but-longer"));
        assert!(random_id("tok_").unwrap().starts_with("tok_"));
    }
}
