//! Thin safe wrappers over the `getsockopt`/`setsockopt`/`ioctl`/`recv` calls TCP
//! repair needs. Each takes a borrowed fd, so the fd is open for the call.

use std::ffi::c_int;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::ffi::{TcpRepairOpt, TcpRepairWindow};

/// Plain old data: any bit pattern is a valid value, so the kernel may write any
/// bytes into one, and one may be handed to the kernel as bytes.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` types made of integers, with no padding that
/// matters and no pointers.
pub(crate) unsafe trait Pod: Copy {}

// SAFETY: integers.
unsafe impl Pod for c_int {}
// SAFETY: `#[repr(C)]`, five `u32`.
unsafe impl Pod for TcpRepairWindow {}
// SAFETY: `#[repr(C)]`, two `u32`.
unsafe impl Pod for TcpRepairOpt {}
// SAFETY: libc's `#[repr(C)]` mirror of the kernel struct, integers only.
unsafe impl Pod for libc::tcp_info {}

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Reads an option into `T`; returns it with the length the kernel wrote.
fn get_raw<T: Pod>(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<(T, usize)> {
    // SAFETY: `T: Pod`, so all-zero bytes are a valid `T`.
    let mut val: T = unsafe { std::mem::zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live, writable `T` of `len` bytes; the kernel writes at
    // most `len` bytes and stores the length it wrote in `len`.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut val).cast(), &mut len) })?;
    Ok((val, len as usize))
}

/// Reads an option that must fill `T` exactly.
pub(crate) fn get<T: Pod>(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<T> {
    let (val, len) = get_raw::<T>(fd, level, name)?;
    if len != size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("option {level}/{name}: kernel returned {len} bytes, expected {}", size_of::<T>()),
        ));
    }
    Ok(val)
}

/// Reads an `int` option.
pub(crate) fn get_int(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<c_int> {
    get::<c_int>(fd, level, name)
}

/// Sets an option from a slice of `T` (one value is a slice of one).
pub(crate) fn set_slice<T: Pod>(fd: BorrowedFd<'_>, level: c_int, name: c_int, val: &[T]) -> io::Result<()> {
    let len = size_of_val(val) as libc::socklen_t;
    // SAFETY: `val` is `len` readable bytes of plain data; the kernel only reads.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, val.as_ptr().cast(), len) })?;
    Ok(())
}

/// Sets an option to one `T`.
pub(crate) fn set<T: Pod>(fd: BorrowedFd<'_>, level: c_int, name: c_int, val: &T) -> io::Result<()> {
    set_slice(fd, level, name, std::slice::from_ref(val))
}

/// Sets an `int` option.
pub(crate) fn set_int(fd: BorrowedFd<'_>, level: c_int, name: c_int, val: c_int) -> io::Result<()> {
    set(fd, level, name, &val)
}

/// `TCP_INFO`. Older kernels fill less than libc's struct; what they leave out
/// stays zero, and only the leading fields are used here.
pub(crate) fn tcp_info(fd: BorrowedFd<'_>) -> io::Result<libc::tcp_info> {
    let (info, len) = get_raw::<libc::tcp_info>(fd, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    // Up to and including tcpi_snd_rcv_wscale, the fields read here.
    if len < 8 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TCP_INFO too short: {len} bytes")));
    }
    Ok(info)
}

/// An `ioctl` that writes one `int` (the queue-length ioctls).
pub(crate) fn ioctl_int(fd: BorrowedFd<'_>, request: libc::Ioctl) -> io::Result<c_int> {
    let mut val: c_int = 0;
    // SAFETY: these requests write exactly one `int` through the pointer, which
    // points to a live `c_int`.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, &raw mut val) })?;
    Ok(val)
}

/// `recv(MSG_PEEK | MSG_DONTWAIT)` into `buf`; "nothing there" is 0 bytes.
pub(crate) fn peek(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes; the kernel writes at most that.
    let n = unsafe {
        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
    }
    Ok(n as usize)
}

/// `send(buf, 0)`.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes; the kernel only reads them.
    let n = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// `connect(AF_UNSPEC)`: the kernel disconnects the socket at once (for TCP,
/// `tcp_disconnect`), however many references to it are open.
pub(crate) fn disconnect(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: all-zero is a valid `sockaddr`.
    let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
    addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let len = size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: `addr` is a live `sockaddr` of `len` bytes; the kernel only reads it.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), &raw const addr, len) })?;
    Ok(())
}
