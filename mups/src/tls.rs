//! TLS for the management listener (rustls with the ring provider: no OpenSSL, and no C
//! toolchain beyond what ring needs), and `mups tls self-signed` for labs.
//!
//! The console's session cookie is `Secure` with the `__Host-` prefix, so a browser keeps it
//! only over HTTPS (or on `localhost`): any management address reached over a network needs
//! `[mups] tls_cert` and `tls_key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// File.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the generated files failed.
    #[error("{path}: {source}")]
    Write {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// A rustls server configuration from a PEM chain and key, offering HTTP/1.1 only (the
/// server speaks nothing else: axum is built with `http1`).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |path: &Path, message: String| TlsError::Pem { path: path.to_owned(), message };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no CERTIFICATE block".to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Files written by [`self_signed`].
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// `cert.pem`.
    pub cert: PathBuf,
    /// `key.pem` (mode 0600).
    pub key: PathBuf,
}

/// Writes a self-signed certificate for `hosts` (DNS names or IP addresses) and its key to
/// `dir/cert.pem` and `dir/key.pem`. For labs and tests: browsers warn about it, and
/// production appliances get a certificate from the operator's CA.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<SelfSigned, TlsError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).map_err(write_err(&cert))?;
    write_private(&key, certified.key_pair.serialize_pem().as_bytes()).map_err(write_err(&key))?;
    Ok(SelfSigned { cert, key })
}

/// Creates (or truncates) `path` with mode 0600 before any byte of the key is in it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_and_a_missing_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let mode = std::fs::metadata(&files.key).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let cfg = server_config(&files.cert, &files.key).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let missing = dir.path().join("nothing.pem");
        let err = server_config(&files.cert, &missing).unwrap_err();
        assert!(err.to_string().contains("nothing.pem"), "{err}");
        let err = server_config(&files.key, &files.key).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }
}
