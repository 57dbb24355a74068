//! The system calls behind moving a live bank TCP session between appliances:
//! `TCP_REPAIR` checkpoint and restore. This is the only module of the project
//! allowed `unsafe` and raw `libc` calls; everything it exports is safe.
//!
//! - [`self_check`]: at startup, whether this kernel and these privileges can do
//!   it at all, with an error that says what is missing.
//! - [`checkpoint`]: an ESTABLISHED socket → [`proto::snapshot::TcpSnapshot`],
//!   leaving the socket in repair mode; then [`close_silently`] (or
//!   [`leave_repair`] to keep serving it here).
//! - [`restore`]: a snapshot → a socket in this network namespace
//!   ([`Restored`]), then [`Restored::resume`] once the network lock is lifted;
//!   [`restore_with`] restores bytes in flight as sent instead ([`InFlight`]).
//! - [`unacked`]: bytes in flight, to take the checkpoint when there are none.
//! - [`HoldQueue`]: the NFQUEUE reader of the network lock's hold mode, with
//!   [`is_local`] and [`enable_forwarding`] for where held packets go.
//! - [`SetBatch`]: nftables set elements added, deleted or flushed over
//!   nfnetlink in one transaction — the network lock's fast path.
//!
//! Background, the measured restore order and the pitfalls it avoids:
//! `shared/notes/tcp-repair.md`. The kernel floor is 4.18
//! (`TCP_REPAIR_OFF_NO_WP`; `TCP_REPAIR_WINDOW` came in 4.8).

mod ffi;
mod hold;
mod nftset;
mod repair;
mod sockopt;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use libc::IPPROTO_TCP;
use socket2::{Domain, Protocol, Socket, Type};

pub use hold::{HoldQueue, QUEUE_MAX_LEN, Release, enable_forwarding, is_local};
pub use nftset::{SetBatch, SetKey};
pub use repair::{
    Buffers, InFlight, Restored, checkpoint, close_silently, leave_repair, restore, restore_with, unacked,
};

/// Why a socket could not be checkpointed. The socket is out of repair mode
/// again and can go on serving the bank.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Only ESTABLISHED sockets are moved: half-closed ones would need their FIN
    /// forged on the twin, and a bank that closed is reconnecting anyway.
    #[error("socket is {state}, not ESTABLISHED: only established sessions are checkpointed")]
    NotEstablished {
        /// The kernel's name of the state (`CLOSE_WAIT`, `FIN_WAIT1`, …).
        state: &'static str,
    },
    /// `TCP_REPAIR` was refused.
    #[error("TCP_REPAIR needs CAP_NET_ADMIN (in the user namespace owning this network namespace)")]
    NeedsCapability,
    /// Not an IPv4 or IPv6 socket.
    #[error("not an IPv4/IPv6 TCP socket")]
    NotInet,
    /// A queue held more or fewer bytes than the kernel reported: traffic reached
    /// the socket during the checkpoint.
    #[error(
        "{queue} queue changed during the checkpoint (reported {expected} bytes, read {found}); \
         is the network lock in place and the session quiet?"
    )]
    QueueChanged {
        /// Which queue.
        queue: &'static str,
        /// Length reported by the kernel.
        expected: usize,
        /// Length read (or, for the unsent part, its reported length).
        found: usize,
    },
    /// A system call failed.
    #[error("checkpoint: {step}: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
}

/// Why a snapshot could not be restored. Nothing was sent to the peer: the
/// half-built socket is closed in repair mode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// `TCP_REPAIR` was refused.
    #[error("TCP_REPAIR needs CAP_NET_ADMIN (in the user namespace owning this network namespace)")]
    NeedsCapability,
    /// The 4-tuple is taken on this host (an earlier restore, a TIME_WAIT, or an
    /// ephemeral port).
    #[error("cannot restore {local} -> {remote}: the 4-tuple is already in use here ({source})")]
    TupleInUse {
        /// Our end.
        local: SocketAddr,
        /// The bank's end.
        remote: SocketAddr,
        /// The error from `connect`.
        source: io::Error,
    },
    /// A system call failed.
    #[error("restore: {step}: {source}")]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Re-sending the unacknowledged bytes failed after `sent` of them.
    #[error("restore: re-sending unacknowledged bytes failed after {sent}: {source}")]
    Resend {
        /// Bytes sent before the failure.
        sent: usize,
        /// The error.
        source: io::Error,
    },
}

/// [`close_silently`] could not enter repair mode, so it did not close: a plain
/// close would send FIN (or RST) to the bank. The fd is handed back.
#[derive(Debug, thiserror::Error)]
#[error("cannot close the socket silently (TCP_REPAIR refused: {source}); it is left open")]
pub struct NotSilent {
    /// The socket, still open.
    pub fd: OwnedFd,
    /// Why repair mode was refused.
    pub source: io::Error,
}

/// What [`self_check`] found missing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfCheckError {
    /// Cannot even create a TCP socket.
    #[error("self-check: cannot create a TCP socket: {0}")]
    Socket(io::Error),
    /// The kernel does not know `TCP_REPAIR`.
    #[error("kernel lacks TCP_REPAIR (Linux 3.5 or later needed): {0}")]
    NoRepair(io::Error),
    /// `TCP_REPAIR` was refused for lack of privilege.
    #[error("TCP_REPAIR needs CAP_NET_ADMIN (in the user namespace owning this network namespace)")]
    NeedsCapability,
    /// The kernel does not know `TCP_REPAIR_WINDOW`.
    #[error("kernel lacks TCP_REPAIR_WINDOW (Linux 4.8 or later needed): {0}")]
    NoRepairWindow(io::Error),
    /// The kernel does not know `TCP_REPAIR_OFF_NO_WP`.
    #[error("kernel lacks TCP_REPAIR_OFF_NO_WP (Linux 4.18 or later needed): {0}")]
    NoRepairOffNoWp(io::Error),
    /// `IP_TRANSPARENT`, needed to restore before the VIP is local, was refused.
    #[error("IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW: {0}")]
    NoTransparent(io::Error),
}

/// Checks, on a scratch socket, that this kernel and these privileges support
/// what [`checkpoint`] and [`restore`] do: repair mode, the 20-byte
/// `TCP_REPAIR_WINDOW`, `TCP_REPAIR_OFF_NO_WP`, and `IP_TRANSPARENT`. Run it at
/// startup so a missing capability is reported then, not at the first switchover.
pub fn self_check() -> Result<(), SelfCheckError> {
    let sock =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(SelfCheckError::Socket)?;
    let fd = sock.as_fd();
    sockopt::set_int(fd, IPPROTO_TCP, ffi::TCP_REPAIR, ffi::TCP_REPAIR_ON).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EPERM) => SelfCheckError::NeedsCapability,
            _ => SelfCheckError::NoRepair(e),
        }
    })?;
    let w: ffi::TcpRepairWindow =
        sockopt::get(fd, IPPROTO_TCP, ffi::TCP_REPAIR_WINDOW).map_err(SelfCheckError::NoRepairWindow)?;
    sockopt::set(fd, IPPROTO_TCP, ffi::TCP_REPAIR_WINDOW, &w).map_err(SelfCheckError::NoRepairWindow)?;
    sockopt::set_int(fd, libc::IPPROTO_IP, libc::IP_TRANSPARENT, 1).map_err(SelfCheckError::NoTransparent)?;
    sockopt::set_int(fd, IPPROTO_TCP, ffi::TCP_REPAIR, ffi::TCP_REPAIR_OFF_NO_WP)
        .map_err(SelfCheckError::NoRepairOffNoWp)?;
    Ok(())
}
