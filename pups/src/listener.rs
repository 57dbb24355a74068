//! The bank listeners: one TCP listener per distinct `[[bank]].listen` address
//! (`SO_REUSEADDR`), shared by the banks that name it (port 0: a fresh port per
//! bank, never shared). An accepted connection
//! belongs to the first bank, in file order, whose `allow` matches its source
//! address; with none it is closed at once, unread, and counted; a bank at its
//! `max_sessions` gets the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::PupsError;
use crate::hub::Hub;
use crate::metrics::Rejected;
use crate::session;

/// Pending connections the kernel keeps per listener.
const BACKLOG: u32 = 1024;

/// One bound listener and the banks that share it.
#[derive(Debug)]
pub(crate) struct BankListener {
    /// The address as configured (the port may be 0).
    pub(crate) configured: SocketAddr,
    /// The address actually bound.
    pub(crate) bound: SocketAddr,
    /// Indices of the banks listening here, in file order.
    pub(crate) banks: Vec<usize>,
    listener: TcpListener,
}

/// Binds every distinct `listen` address of the configuration.
/// With `freebind`, an address that is not (yet) on this host can be bound: in an
/// appliance pair the VIP belongs to whichever appliance keepalived chose.
pub(crate) fn bind_all(hub: &Hub, freebind: bool) -> Result<Vec<BankListener>, PupsError> {
    let mut listeners: Vec<BankListener> = Vec::new();
    for (index, bank) in hub.config().banks.iter().enumerate() {
        // Port 0 asks for a fresh port: such a bank never shares a listener.
        let shared = bank.listen.port() != 0;
        if let Some(l) = listeners.iter_mut().find(|l| shared && l.configured == bank.listen) {
            l.banks.push(index);
            continue;
        }
        let listener = bind(bank.listen, freebind)
            .map_err(|source| PupsError::BankListen { addr: bank.listen, source })?;
        let bound =
            listener.local_addr().map_err(|source| PupsError::BankListen { addr: bank.listen, source })?;
        listeners.push(BankListener { configured: bank.listen, bound, banks: vec![index], listener });
    }
    Ok(listeners)
}

fn bind(addr: SocketAddr, freebind: bool) -> std::io::Result<TcpListener> {
    if !freebind {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        return socket.listen(BACKLOG);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Accepts bank connections until `cancel`.
pub(crate) async fn accept_loop(hub: Arc<Hub>, listener: BankListener, cancel: CancellationToken) {
    let names: Vec<&str> = listener.banks.iter().map(|&i| hub.bank(i).id.as_str()).collect();
    info!(listen = %listener.bound, banks = ?names, "listening for banks");
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: wait a little rather than spin.
                error!(listen = %listener.bound, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = peer.ip();
        let Some(&bank) = listener.banks.iter().find(|&&i| hub.bank(i).allows(ip)) else {
            hub.metrics.rejected(Rejected::UnknownSource);
            warn!(listen = %listener.bound, peer = %peer, "connection from a source no bank allows: closed");
            drop(stream);
            continue;
        };
        if !hub.try_reserve(bank) {
            hub.metrics.rejected(Rejected::MaxSessions);
            let cfg = hub.bank(bank);
            warn!(bank = %cfg.id, peer = %peer, max_sessions = cfg.max_sessions,
                "bank already has its maximum of sessions: connection closed");
            drop(stream);
            continue;
        }
        session::spawn(hub.clone(), bank, stream, peer);
    }
    info!(listen = %listener.bound, "no longer accepting bank connections");
}
