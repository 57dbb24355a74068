//! Kernel ABI for TCP repair that the `libc` crate lacks on Linux (libc 0.2.191
//! has the socket option numbers `TCP_REPAIR` … `TCP_REPAIR_WINDOW`, which are
//! re-exported here, but not the values, queue ids, option codes or structs).
//! Taken from `include/uapi/linux/tcp.h`.

use std::ffi::c_int;

pub(crate) use libc::{
    TCP_QUEUE_SEQ, TCP_REPAIR, TCP_REPAIR_OPTIONS, TCP_REPAIR_QUEUE, TCP_REPAIR_WINDOW, TCP_TIMESTAMP,
};

/// `TCP_REPAIR` values.
pub(crate) const TCP_REPAIR_ON: c_int = 1;
pub(crate) const TCP_REPAIR_OFF: c_int = 0;
/// Leave repair mode without the window probe `TCP_REPAIR_OFF` sends (Linux 4.18).
pub(crate) const TCP_REPAIR_OFF_NO_WP: c_int = -1;

/// `TCP_REPAIR_QUEUE` values.
pub(crate) const TCP_NO_QUEUE: c_int = 0;
pub(crate) const TCP_RECV_QUEUE: c_int = 1;
pub(crate) const TCP_SEND_QUEUE: c_int = 2;

/// Option codes understood by `TCP_REPAIR_OPTIONS` (the TCP option kinds).
pub(crate) const TCPOPT_MSS: u32 = 2;
pub(crate) const TCPOPT_WINDOW: u32 = 3;
pub(crate) const TCPOPT_SACK_PERM: u32 = 4;
pub(crate) const TCPOPT_TIMESTAMP: u32 = 8;

/// `tcp_info.tcpi_options` bits.
pub(crate) const TCPI_OPT_TIMESTAMPS: u8 = 1;
pub(crate) const TCPI_OPT_SACK: u8 = 2;
pub(crate) const TCPI_OPT_WSCALE: u8 = 4;

/// `ioctl`s giving queue lengths: unread bytes, unacknowledged bytes, unsent bytes.
pub(crate) const SIOCINQ: libc::Ioctl = libc::FIONREAD;
pub(crate) const SIOCOUTQ: libc::Ioctl = libc::TIOCOUTQ;
pub(crate) const SIOCOUTQNSD: libc::Ioctl = libc::SIOCOUTQNSD as libc::Ioctl;

/// `SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`/`SO_MARK` (asm-generic/socket.h; the same on
/// x86 and arm; mips, sparc and parisc differ and are not targets).
pub(crate) const SO_SNDBUFFORCE: c_int = 32;
pub(crate) const SO_RCVBUFFORCE: c_int = 33;
pub(crate) const SO_MARK: c_int = 36;

/// `struct tcp_repair_opt`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpRepairOpt {
    pub(crate) opt_code: u32,
    pub(crate) opt_val: u32,
}

/// `struct tcp_repair_window`, the 20-byte layout. Newer kernels may append
/// fields but still accept exactly this length, and refuse any other length
/// with `EINVAL`, so it must never grow here.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TcpRepairWindow {
    pub(crate) snd_wl1: u32,
    pub(crate) snd_wnd: u32,
    pub(crate) max_window: u32,
    pub(crate) rcv_wnd: u32,
    pub(crate) rcv_wup: u32,
}

const _: () = assert!(size_of::<TcpRepairWindow>() == 20);
const _: () = assert!(size_of::<TcpRepairOpt>() == 8);

/// `tcp_info.tcpi_state` values (`include/net/tcp_states.h`).
pub(crate) const TCP_ESTABLISHED: u8 = 1;

/// The name of a `tcpi_state` value, for errors.
pub(crate) fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Splits `tcpi_snd_rcv_wscale`, the C bitfields `tcpi_snd_wscale:4,
/// tcpi_rcv_wscale:4`, whose order follows the target's bit order.
pub(crate) fn split_wscale(b: u8) -> (u8, u8) {
    if cfg!(target_endian = "little") { (b & 0x0F, b >> 4) } else { (b >> 4, b & 0x0F) }
}
