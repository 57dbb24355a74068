//! Checkpoint and restore of one established TCP socket with `TCP_REPAIR`.

use std::ffi::c_int;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use libc::{IPPROTO_IP, IPPROTO_IPV6, IPPROTO_TCP, SOL_SOCKET};
use proto::snapshot::{KeepAlive, RepairWindow, SocketOptions, TcpSnapshot, WindowScale};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::ffi::*;
use super::sockopt::{disconnect, get, get_int, ioctl_int, peek, send, set, set_int, set_slice, tcp_info};
use super::{CheckpointError, NotSilent, RestoreError};

/// Whether a socket's buffer sizes belong in its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffers {
    /// Left to kernel autotuning (the usual case): not recorded, and the restored
    /// socket autotunes afresh. The kernel cannot tell us which case applies.
    Autotuned,
    /// Fixed with `SO_SNDBUF`/`SO_RCVBUF`: recorded and forced on restore.
    Fixed,
}

fn sys(step: &'static str) -> impl FnOnce(io::Error) -> CheckpointError {
    move |source| CheckpointError::Sys { step, source }
}

fn rsys(step: &'static str) -> impl FnOnce(io::Error) -> RestoreError {
    move |source| RestoreError::Sys { step, source }
}

fn repair(fd: BorrowedFd<'_>, mode: c_int) -> io::Result<()> {
    set_int(fd, IPPROTO_TCP, TCP_REPAIR, mode)
}

fn queue(fd: BorrowedFd<'_>, q: c_int) -> io::Result<()> {
    set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, q)
}

fn enter_repair(fd: BorrowedFd<'_>) -> Result<(), io::Error> {
    repair(fd, TCP_REPAIR_ON)
}

/// Checkpoints an ESTABLISHED TCP socket.
///
/// The socket is put in repair mode and **left there** on success: from then on
/// it sends nothing, and closing it (dropping it, or [`close_silently`]) sends no
/// FIN or RST. The caller either closes it once the snapshot is safe with the
/// twin, or gives up and calls [`leave_repair`] to go on serving it here. On
/// failure the socket is taken out of repair mode again.
///
/// The caller must have stopped traffic on the 4-tuple (the network lock) and
/// must not read or write the socket meanwhile: repair mode does not freeze a
/// socket, and the kernel keeps accepting segments into it. Each queue is peeked
/// one byte beyond its reported length, so a queue that changed anyway is caught
/// ([`CheckpointError::QueueChanged`]) instead of saved short.
pub fn checkpoint(sock: &impl AsFd, buffers: Buffers) -> Result<TcpSnapshot, CheckpointError> {
    let fd = sock.as_fd();
    let info = tcp_info(fd).map_err(sys("TCP_INFO"))?;
    if info.tcpi_state != TCP_ESTABLISHED {
        return Err(CheckpointError::NotEstablished { state: tcp_state_name(info.tcpi_state) });
    }
    enter_repair(fd).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => CheckpointError::NeedsCapability,
        _ => CheckpointError::Sys { step: "TCP_REPAIR on", source: e },
    })?;
    match read_state(fd, buffers) {
        Ok(snap) => Ok(snap),
        Err(e) => {
            // The session must go on here: leave repair without touching the
            // peer. Best effort: the error already says what went wrong.
            let _ = queue(fd, TCP_NO_QUEUE);
            let _ = repair(fd, TCP_REPAIR_OFF_NO_WP);
            Err(e)
        }
    }
}

fn read_state(fd: BorrowedFd<'_>, buffers: Buffers) -> Result<TcpSnapshot, CheckpointError> {
    // Read again in repair mode: the state may have moved between the check and
    // entering repair.
    let info = tcp_info(fd).map_err(sys("TCP_INFO"))?;
    if info.tcpi_state != TCP_ESTABLISHED {
        return Err(CheckpointError::NotEstablished { state: tcp_state_name(info.tcpi_state) });
    }
    let sref = SockRef::from(&fd);
    let local = sref.local_addr().map_err(sys("getsockname"))?.as_socket();
    let remote = sref.peer_addr().map_err(sys("getpeername"))?.as_socket();
    let (Some(local), Some(remote)) = (local, remote) else {
        return Err(CheckpointError::NotInet);
    };

    let inq = ioctl_int(fd, SIOCINQ).map_err(sys("SIOCINQ"))? as usize;
    let outq = ioctl_int(fd, SIOCOUTQ).map_err(sys("SIOCOUTQ"))? as usize;
    let unsent = ioctl_int(fd, SIOCOUTQNSD).map_err(sys("SIOCOUTQNSD"))? as usize;
    if unsent > outq {
        return Err(CheckpointError::QueueChanged {
            queue: "send (unsent part)",
            expected: outq,
            found: unsent,
        });
    }

    queue(fd, TCP_RECV_QUEUE).map_err(sys("TCP_REPAIR_QUEUE recv"))?;
    let rcv_seq = get_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ).map_err(sys("TCP_QUEUE_SEQ recv"))? as u32;
    let recv_queue = peek_queue(fd, inq, "receive")?;
    queue(fd, TCP_SEND_QUEUE).map_err(sys("TCP_REPAIR_QUEUE send"))?;
    let snd_seq = get_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ).map_err(sys("TCP_QUEUE_SEQ send"))? as u32;
    let send_queue = peek_queue(fd, outq, "send")?;
    // Nothing below must run with the send queue selected: pushing pending frames
    // then would mark unsent data as sent without transmitting it.
    queue(fd, TCP_NO_QUEUE).map_err(sys("TCP_REPAIR_QUEUE none"))?;

    // In repair mode the kernel reports the negotiated clamp, not the current MSS.
    let mss = get_int(fd, IPPROTO_TCP, libc::TCP_MAXSEG).map_err(sys("TCP_MAXSEG"))?;
    let mss = u16::try_from(mss).map_err(|_| CheckpointError::Sys {
        step: "TCP_MAXSEG",
        source: io::Error::new(io::ErrorKind::InvalidData, format!("MSS {mss} out of range")),
    })?;
    let window_scale = (info.tcpi_options & TCPI_OPT_WSCALE != 0).then(|| {
        let (snd, rcv) = split_wscale(info.tcpi_snd_rcv_wscale);
        WindowScale { snd, rcv }
    });
    let timestamp = get_int(fd, IPPROTO_TCP, TCP_TIMESTAMP).map_err(sys("TCP_TIMESTAMP"))? as u32;
    let w: TcpRepairWindow = get(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW).map_err(sys("TCP_REPAIR_WINDOW"))?;
    let options = read_options(fd, local.is_ipv6(), buffers)?;

    Ok(TcpSnapshot {
        local,
        remote,
        snd_seq,
        rcv_seq,
        send_queue,
        send_unsent: unsent as u32,
        recv_queue,
        mss,
        window_scale,
        sack_ok: info.tcpi_options & TCPI_OPT_SACK != 0,
        timestamps_ok: info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0,
        timestamp,
        window: RepairWindow {
            snd_wl1: w.snd_wl1,
            snd_wnd: w.snd_wnd,
            max_window: w.max_window,
            rcv_wnd: w.rcv_wnd,
            rcv_wup: w.rcv_wup,
        },
        options,
    })
}

/// Peeks the selected queue, asking for one byte more than `len` so a queue that
/// grew is noticed.
fn peek_queue(fd: BorrowedFd<'_>, len: usize, name: &'static str) -> Result<Vec<u8>, CheckpointError> {
    let mut buf = vec![0u8; len + 1];
    let n = peek(fd, &mut buf).map_err(|source| CheckpointError::Sys { step: "peek queue", source })?;
    if n != len {
        return Err(CheckpointError::QueueChanged { queue: name, expected: len, found: n });
    }
    buf.truncate(n);
    Ok(buf)
}

fn read_options(fd: BorrowedFd<'_>, v6: bool, buffers: Buffers) -> Result<SocketOptions, CheckpointError> {
    let int = |level, name, step| get_int(fd, level, name).map_err(sys(step));
    let nonzero = |v: c_int| (v != 0).then_some(v as u32);
    let keepalive = if int(SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE")? != 0 {
        Some(KeepAlive {
            idle_s: int(IPPROTO_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE")? as u32,
            interval_s: int(IPPROTO_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL")? as u32,
            count: int(IPPROTO_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT")? as u32,
        })
    } else {
        None
    };
    let (send_buffer, recv_buffer) = match buffers {
        Buffers::Autotuned => (None, None),
        Buffers::Fixed => (
            Some(int(SOL_SOCKET, libc::SO_SNDBUF, "SO_SNDBUF")? as u32),
            Some(int(SOL_SOCKET, libc::SO_RCVBUF, "SO_RCVBUF")? as u32),
        ),
    };
    let tos = if v6 {
        int(IPPROTO_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS")?
    } else {
        int(IPPROTO_IP, libc::IP_TOS, "IP_TOS")?
    };
    Ok(SocketOptions {
        nodelay: int(IPPROTO_TCP, libc::TCP_NODELAY, "TCP_NODELAY")? != 0,
        keepalive,
        user_timeout_ms: nonzero(int(IPPROTO_TCP, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT")?),
        send_buffer,
        recv_buffer,
        mark: nonzero(int(SOL_SOCKET, SO_MARK, "SO_MARK")?),
        tos: (tos != 0).then_some(tos as u8),
    })
}

/// Bytes sent on the socket and not yet acknowledged by the peer (`SIOCOUTQ`
/// minus `SIOCOUTQNSD`).
///
/// A checkpoint should be taken with this at zero: once the network lock drops
/// the peer's ACKs, bytes it received and acknowledged still count as unacked
/// here, and the restored socket, which sends them again from `snd_una` within
/// its first flight, would see the peer acknowledge data it has not sent yet
/// (the kernel ignores such ACKs) whenever that gap exceeds the first flight.
pub fn unacked(sock: &impl AsFd) -> io::Result<usize> {
    let fd = sock.as_fd();
    let outq = ioctl_int(fd, SIOCOUTQ)?;
    let unsent = ioctl_int(fd, SIOCOUTQNSD)?;
    Ok(outq.saturating_sub(unsent).max(0) as usize)
}

/// Closes a socket without a FIN or RST reaching the peer: in repair mode the
/// kernel just drops the connection (the peer's side stays ESTABLISHED, to be
/// taken over by the restored socket). Locally `TcpEstabResets` goes up by one;
/// `TcpOutRsts` does not.
///
/// If repair mode cannot be entered the fd is handed back unclosed, since a
/// plain close would tell the bank the session is over.
///
/// The connection is dropped before the fd is closed, so its 4-tuple is free
/// when this returns even if other references to the socket are still open (a
/// `dup`, or a child forked by another thread that has not yet reached `exec`,
/// holding the fd until its close-on-exec): a restore on this same host would
/// otherwise fail with EADDRNOTAVAIL (seen in the tests).
pub fn close_silently(sock: impl Into<OwnedFd>) -> Result<(), NotSilent> {
    let fd: OwnedFd = sock.into();
    if let Err(source) = enter_repair(fd.as_fd()) {
        return Err(NotSilent { fd, source });
    }
    // In repair mode the disconnect sends nothing (`tcp_disconnect` only sets
    // ECONNABORTED locally). If it fails, closing in repair mode is still silent.
    let _ = disconnect(fd.as_fd());
    drop(fd);
    Ok(())
}

/// Takes a checkpointed socket out of repair mode, to go on serving it here
/// (the checkpoint was abandoned). No window probe is sent: nothing changed.
pub fn leave_repair(sock: &impl AsFd) -> io::Result<()> {
    let fd = sock.as_fd();
    queue(fd, TCP_NO_QUEUE)?;
    repair(fd, TCP_REPAIR_OFF_NO_WP)
}

/// A socket rebuilt by [`restore`], out of repair mode, whose outbound bytes are
/// not yet re-sent.
///
/// Dropped without [`resume`](Self::resume), it is closed silently (repair mode
/// again), so the bank never sees a FIN from a half-done restore.
#[derive(Debug)]
pub struct Restored {
    stream: Option<TcpStream>,
    pending: Vec<u8>,
    /// Bytes were restored as in flight (`InFlight::AsSent`): a window probe
    /// makes the bank acknowledge them at once, which a full congestion window
    /// would otherwise wait a retransmission timeout for.
    probe: bool,
    /// With nothing to send, probe anyway (see [`Restored::without_idle_probe`]).
    idle_probe: bool,
}

impl Restored {
    /// No window probe at resume when there is nothing to send and nothing was
    /// in flight. For the lock's hold mode: what the bank sent meanwhile is
    /// delivered anyway, and the bank's answer to a probe carries a newer
    /// timestamp, after which a held segment that arrives late is dropped by
    /// PAWS. It also saves a packet and two system calls per session.
    pub fn without_idle_probe(mut self) -> Self {
        self.idle_probe = false;
        self
    }

    /// Bytes the bank sent that wait in the receive queue (`SIOCINQ`): what the
    /// old appliance had not read, and what the lock held and let go. Sessions
    /// with a request waiting are served first. 0 if it cannot be read.
    pub fn bytes_to_read(&self) -> usize {
        self.stream
            .as_ref()
            .and_then(|s| ioctl_int(s.as_fd(), libc::FIONREAD).ok())
            .map_or(0, |n| n.max(0) as usize)
    }

    /// Bytes [`resume`](Self::resume) will send: every byte the old socket had
    /// written and the bank had not acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Sends the pending bytes and hands over the socket. Call it once traffic
    /// on the 4-tuple flows again (network lock removed): the bytes leave at
    /// once, instead of waiting for a retransmission timer.
    ///
    /// With nothing to send (or bytes restored as in flight), a window probe is
    /// sent first, so the bank answers with its current ACK and window (and TSval
    /// to echo) straight away.
    pub fn resume(mut self) -> Result<TcpStream, RestoreError> {
        let Some(stream) = self.stream.take() else { unreachable!("a Restored always holds its stream") };
        match resend(&stream, &self.pending, self.wants_probe()) {
            Ok(()) => Ok(stream),
            Err(e) => {
                // A plain close would send FIN (or RST) to the bank: the session
                // is lost here, but the bank must not be told so by us.
                let _ = close_silently(stream);
                Err(e)
            }
        }
    }
}

impl Restored {
    /// Bytes in flight restored as sent always want the bank's ACK at once; an
    /// idle socket gets a probe unless told otherwise.
    fn wants_probe(&self) -> bool {
        self.probe || (self.pending.is_empty() && self.idle_probe)
    }

    /// [`resume`](Self::resume) without blocking: sends what the socket takes now
    /// and hands back the rest, to be written as the bank reads. Restoring many
    /// sessions, one bank not reading (or a send queue larger than the new
    /// socket's buffer) must not hold up the others. The socket is returned in
    /// non-blocking mode.
    pub fn resume_nonblocking(mut self) -> Result<(TcpStream, Vec<u8>), RestoreError> {
        let Some(stream) = self.stream.take() else { unreachable!("a Restored always holds its stream") };
        match resend_some(&stream, &self.pending, self.wants_probe()) {
            Ok(sent) => {
                let rest = self.pending.split_off(sent);
                Ok((stream, rest))
            }
            Err(e) => {
                // As in `resume`: never a FIN from a half-done restore.
                let _ = close_silently(stream);
                Err(e)
            }
        }
    }
}

fn resend_some(stream: &TcpStream, pending: &[u8], probe: bool) -> Result<usize, RestoreError> {
    stream.set_nonblocking(true).map_err(rsys("O_NONBLOCK"))?;
    let fd = stream.as_fd();
    if probe {
        window_probe(fd)?;
    }
    let mut sent = 0;
    while sent < pending.len() {
        match send(fd, &pending[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(source) => return Err(RestoreError::Resend { sent, source }),
        }
    }
    Ok(sent)
}

fn window_probe(fd: BorrowedFd<'_>) -> Result<(), RestoreError> {
    // Leaving repair with TCP_REPAIR_OFF sends the probe.
    repair(fd, TCP_REPAIR_ON).map_err(rsys("TCP_REPAIR on (probe)"))?;
    repair(fd, TCP_REPAIR_OFF).map_err(rsys("TCP_REPAIR off (probe)"))
}

fn resend(stream: &TcpStream, pending: &[u8], probe: bool) -> Result<(), RestoreError> {
    let fd = stream.as_fd();
    if probe {
        window_probe(fd)?;
    }
    {
        // Blocking: the bytes fitted the old socket's buffer; the bank acks them
        // as usual if the new one is smaller.
        let mut rest = pending;
        while !rest.is_empty() {
            match send(fd, rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(RestoreError::Resend { sent: pending.len() - rest.len(), source }),
            }
        }
    }
    Ok(())
}

impl Drop for Restored {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = close_silently(stream);
        }
    }
}

/// Rebuilds an established socket from a snapshot, in the current network
/// namespace, without sending anything to the peer.
///
/// The order is the one measured to work (`shared/notes/tcp-repair.md`, design
/// implications §1), which differs from CRIU's:
///
/// 1. socket, `SO_REUSEADDR`, `TCP_REPAIR` on; fixed buffer sizes forced now so
///    the receive queue fits;
/// 2. `IP_TRANSPARENT`: the VIP may not be local yet (keepalived adds it after
///    we are told to take over, or we restore before it moves); with
///    `IP_FREEBIND` instead, `bind` works but `connect` fails with ENETUNREACH;
/// 3. `bind(local)`;
/// 4. queue sequence numbers, before any data and before `connect` (the kernel
///    refuses them after): receive at `rcv_seq − len(recv_queue)`, send at
///    `snd_una` — the whole send queue is sent again later as new data;
/// 5. `TCP_MAXSEG` = the MSS clamp (at most 32767, the kernel's limit), before
///    `connect`, or the socket keeps a 536-based MSS (524) for life;
/// 6. `connect(remote)`: in repair mode no SYN, the socket is ESTABLISHED;
/// 7. `TCP_REPAIR_OPTIONS` (only allowed before any byte is sent), then
///    `TCP_TIMESTAMP`, so our TSval does not go back (the peer would drop our
///    segments as PAWS);
/// 8. receive-queue bytes, as received;
/// 9. queue selection back to none, then `TCP_REPAIR_WINDOW` (after `connect`,
///    which resets the window fields);
/// 10. socket options;
/// 11. `TCP_REPAIR_OFF_NO_WP`: no probe now, since the network lock is still up.
///
/// Unacknowledged bytes are not restored as "sent": the kernel would only
/// retransmit them on a fresh 1 s RTO (measured 1–4 s stalls). [`Restored::resume`]
/// sends them as new data once the lock is gone; the peer drops what it had.
pub fn restore(snap: &TcpSnapshot) -> Result<Restored, RestoreError> {
    restore_with(snap, InFlight::Resend)
}

/// What [`restore_with`] does with the bytes that were in flight at the
/// checkpoint (sent, not acknowledged: `TcpSnapshot::send_unacked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    /// Sent again as new data, with the unsent rest, by
    /// [`Restored::resume`] (what [`restore`] does): the bank gets them at once
    /// if they never reached it. But if the bank did receive them and its ACKs
    /// were dropped (the network lock), its next ACK may lie beyond the restored
    /// socket's first flight; the kernel ignores an ACK of data it has not sent,
    /// and the session stalls for good.
    Resend,
    /// Restored as already sent (CRIU's way), only the unsent rest left for
    /// `resume`: the bank's ACK of them is always accepted; bytes it never got
    /// are retransmitted by the kernel, after a retransmission timeout (about
    /// 1 s, the restored socket has no RTT estimate). With nothing in flight it
    /// is the same as `Resend`.
    AsSent,
}

/// [`restore`], choosing what becomes of the bytes in flight.
pub fn restore_with(snap: &TcpSnapshot, in_flight: InFlight) -> Result<Restored, RestoreError> {
    let sock = Socket::new(Domain::for_address(snap.local), Type::STREAM, Some(Protocol::TCP))
        .map_err(rsys("socket"))?;
    sock.set_reuse_address(true).map_err(rsys("SO_REUSEADDR"))?;
    let fd = sock.as_fd();
    enter_repair(fd).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => RestoreError::NeedsCapability,
        _ => RestoreError::Sys { step: "TCP_REPAIR on", source: e },
    })?;
    let o = &snap.options;
    // The kernel doubles what it is given; the snapshot holds the doubled value.
    if let Some(v) = o.send_buffer {
        set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, (v / 2) as c_int).map_err(rsys("SO_SNDBUFFORCE"))?;
    }
    if let Some(v) = o.recv_buffer {
        set_int(fd, SOL_SOCKET, SO_RCVBUFFORCE, (v / 2) as c_int).map_err(rsys("SO_RCVBUFFORCE"))?;
    }
    let v6 = snap.local.is_ipv6();
    if v6 {
        set_int(fd, IPPROTO_IPV6, libc::IPV6_TRANSPARENT, 1).map_err(rsys("IPV6_TRANSPARENT"))?;
    } else {
        set_int(fd, IPPROTO_IP, libc::IP_TRANSPARENT, 1).map_err(rsys("IP_TRANSPARENT"))?;
    }
    sock.bind(&snap.local.into()).map_err(rsys("bind"))?;

    queue(fd, TCP_RECV_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE recv"))?;
    set_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, snap.recv_queue_seq() as c_int)
        .map_err(rsys("TCP_QUEUE_SEQ recv"))?;
    queue(fd, TCP_SEND_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE send"))?;
    set_int(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, snap.send_queue_seq() as c_int)
        .map_err(rsys("TCP_QUEUE_SEQ send"))?;
    queue(fd, TCP_NO_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE none"))?;
    // The kernel refuses a user MSS above MAX_TCP_WINDOW (EINVAL). Only loopback
    // negotiates more (65495); capped, the MSS there is still far from 524.
    let user_mss = snap.mss.min(MAX_USER_MSS);
    set_int(fd, IPPROTO_TCP, libc::TCP_MAXSEG, c_int::from(user_mss)).map_err(rsys("TCP_MAXSEG"))?;

    sock.connect(&snap.remote.into()).map_err(|source| match source.raw_os_error() {
        Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => {
            RestoreError::TupleInUse { local: snap.local, remote: snap.remote, source }
        }
        _ => RestoreError::Sys { step: "connect", source },
    })?;

    let mut opts = vec![TcpRepairOpt { opt_code: TCPOPT_MSS, opt_val: u32::from(snap.mss) }];
    if let Some(ws) = snap.window_scale {
        opts.push(TcpRepairOpt {
            opt_code: TCPOPT_WINDOW,
            opt_val: u32::from(ws.snd) | (u32::from(ws.rcv) << 16),
        });
    }
    if snap.sack_ok {
        opts.push(TcpRepairOpt { opt_code: TCPOPT_SACK_PERM, opt_val: 0 });
    }
    if snap.timestamps_ok {
        opts.push(TcpRepairOpt { opt_code: TCPOPT_TIMESTAMP, opt_val: 0 });
    }
    set_slice(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, &opts).map_err(rsys("TCP_REPAIR_OPTIONS"))?;
    if snap.timestamps_ok {
        set_int(fd, IPPROTO_TCP, TCP_TIMESTAMP, snap.timestamp as c_int).map_err(rsys("TCP_TIMESTAMP"))?;
    }

    if !snap.recv_queue.is_empty() {
        queue(fd, TCP_RECV_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE recv"))?;
        fill_queue(fd, &snap.recv_queue, "receive queue data")?;
        queue(fd, TCP_NO_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE none"))?;
    }

    let sent = match in_flight {
        InFlight::Resend => 0,
        InFlight::AsSent => snap.send_unacked(),
    };
    if sent > 0 {
        // In repair mode a write waits for buffer space that nothing would free
        // (nothing is acknowledged): make room for all of it first.
        let have = get_int(fd, SOL_SOCKET, libc::SO_SNDBUF).map_err(rsys("SO_SNDBUF"))?;
        let need = c_int::try_from(sent + QUEUE_CHUNK).unwrap_or(c_int::MAX);
        if have / 2 < need {
            set_int(fd, SOL_SOCKET, SO_SNDBUFFORCE, need).map_err(rsys("SO_SNDBUFFORCE"))?;
        }
        // With the send queue selected, the kernel marks what is written as sent
        // (from `snd_una`, set above) without transmitting it.
        queue(fd, TCP_SEND_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE send"))?;
        fill_queue(fd, &snap.send_queue[..sent], "send queue data")?;
        queue(fd, TCP_NO_QUEUE).map_err(rsys("TCP_REPAIR_QUEUE none"))?;
    }

    let w = &snap.window;
    let window = TcpRepairWindow {
        snd_wl1: w.snd_wl1,
        snd_wnd: w.snd_wnd,
        max_window: w.max_window,
        rcv_wnd: w.rcv_wnd,
        rcv_wup: w.rcv_wup,
    };
    set(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &window).map_err(rsys("TCP_REPAIR_WINDOW"))?;

    apply_options(fd, o, v6)?;
    repair(fd, TCP_REPAIR_OFF_NO_WP).map_err(rsys("TCP_REPAIR off"))?;
    Ok(Restored {
        stream: Some(sock.into()),
        pending: snap.send_queue[sent..].to_vec(),
        probe: sent > 0,
        idle_probe: true,
    })
}

/// The largest `TCP_MAXSEG` the kernel accepts (`MAX_TCP_WINDOW`).
pub(crate) const MAX_USER_MSS: u16 = 32767;

/// Chunk size for queue writes; halved on ENOMEM, as libsoccr does: the kernel
/// builds one linear skb per write and large ones may not be allocatable.
const QUEUE_CHUNK: usize = 64 * 1024;
const MIN_QUEUE_CHUNK: usize = 512;

fn fill_queue(fd: BorrowedFd<'_>, mut data: &[u8], step: &'static str) -> Result<(), RestoreError> {
    let mut chunk = QUEUE_CHUNK;
    while !data.is_empty() {
        let n = chunk.min(data.len());
        match send(fd, &data[..n]) {
            Ok(sent) => data = &data[sent..],
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && chunk > MIN_QUEUE_CHUNK => chunk /= 2,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(RestoreError::Sys { step, source }),
        }
    }
    Ok(())
}

fn apply_options(fd: BorrowedFd<'_>, o: &SocketOptions, v6: bool) -> Result<(), RestoreError> {
    let int = |level, name, v: c_int, step| set_int(fd, level, name, v).map_err(rsys(step));
    int(IPPROTO_TCP, libc::TCP_NODELAY, c_int::from(o.nodelay), "TCP_NODELAY")?;
    if let Some(k) = o.keepalive {
        int(IPPROTO_TCP, libc::TCP_KEEPIDLE, k.idle_s as c_int, "TCP_KEEPIDLE")?;
        int(IPPROTO_TCP, libc::TCP_KEEPINTVL, k.interval_s as c_int, "TCP_KEEPINTVL")?;
        int(IPPROTO_TCP, libc::TCP_KEEPCNT, k.count as c_int, "TCP_KEEPCNT")?;
        int(SOL_SOCKET, libc::SO_KEEPALIVE, 1, "SO_KEEPALIVE")?;
    }
    if let Some(v) = o.user_timeout_ms {
        int(IPPROTO_TCP, libc::TCP_USER_TIMEOUT, v as c_int, "TCP_USER_TIMEOUT")?;
    }
    if let Some(v) = o.mark {
        int(SOL_SOCKET, SO_MARK, v as c_int, "SO_MARK")?;
    }
    if let Some(v) = o.tos {
        if v6 {
            int(IPPROTO_IPV6, libc::IPV6_TCLASS, c_int::from(v), "IPV6_TCLASS")?;
        } else {
            int(IPPROTO_IP, libc::IP_TOS, c_int::from(v), "IP_TOS")?;
        }
    }
    Ok(())
}
