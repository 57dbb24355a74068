//! Errors that stop `pups` from starting. Once started, nothing stops it but
//! its shutdown: a failing session, connection or link is logged and handled.

use std::net::SocketAddr;
use std::path::PathBuf;

use proto::config::ConfigError;

/// `pups` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PupsError {
    /// The configuration does not validate.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bank listener could not be bound.
    #[error("cannot listen for banks on {addr}: {source}")]
    BankListen {
        /// The `listen` address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The local link socket could not be set up.
    #[error("local link socket {path}: {message}")]
    LocalLink {
        /// `[appliance].local_link`.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The network lock (appliance pair: `[vrrp]`) could not be installed; without
    /// it a bank could get an RST from this appliance, so `pups` does not start.
    #[error("cannot install the network lock on the bank ports: {0}")]
    NetLock(#[from] crate::netlock::NetLockError),
    /// The metrics listener could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        /// `[pups].metrics_listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
