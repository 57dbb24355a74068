//! nftables set elements changed over nfnetlink, in one transaction, without
//! running `nft`: the network lock's hot path (lock at the checkpoint, unlock at
//! Serve). Spawning `nft -f -` costs 15–30 ms on a loaded host — it forks, reads
//! the kernel's ruleset into its cache, parses, then sends this same batch; over
//! the socket it is well under a millisecond for a thousand sessions.
//!
//! Only what the lock needs is here: add, delete and flush elements of sets whose
//! keys are plain values (no maps, no intervals). Tables, chains and sets are
//! still built with `nft` (rare, and readable in a script). Written by hand: the
//! maintained Rust nftables crates either drive the `nft` binary (what we avoid),
//! need libnftnl, or are GPL.
//!
//! The layout is the kernel's `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`. A batch is BATCH_BEGIN, the set messages (each acknowledged),
//! BATCH_END, sent in one `sendmsg`; the kernel applies all of it or nothing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto, setsockopt,
    socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

// nfnetlink / nf_tables ABI.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_HDRLEN: usize = 16;
/// `nfgenmsg`: family, version, resource id (big-endian).
const NFGENMSG_LEN: usize = 4;
const NFNETLINK_V0: u8 = 0;

/// Elements per set message: keeps each message far below netlink's 64 KiB
/// attribute limit (a nested attribute's length is 16 bits).
const ELEMS_PER_MESSAGE: usize = 512;

/// How long the kernel may take to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A set key as the kernel stores it: concatenated fields, each padded with
/// zeros to a multiple of 4 bytes (nftables' 32-bit registers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetKey(Vec<u8>);

impl SetKey {
    /// An empty key, to push fields onto.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one field (network byte order), padded to 4 bytes.
    pub fn field(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Set element changes in one table, applied in one transaction by [`commit`](Self::commit).
#[derive(Debug)]
pub struct SetBatch {
    table: String,
    family: u8,
    buf: Vec<u8>,
    seq: u32,
    /// Sequence numbers of the messages the kernel acknowledges.
    acks: Vec<u32>,
}

impl SetBatch {
    /// A batch for `table` of nftables family `family` (`libc::NFPROTO_INET`, …).
    pub fn new(table: &str, family: u8) -> Self {
        let mut batch = Self { table: table.to_owned(), family, buf: Vec::new(), seq: 0, acks: Vec::new() };
        let begin = batch.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        batch.finish_message(begin);
        batch
    }

    /// Nothing but the batch's frame.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }

    /// Adds `keys` to `set` (already there: not an error).
    pub fn add(&mut self, set: &str, keys: &[SetKey]) {
        for chunk in keys.chunks(ELEMS_PER_MESSAGE) {
            self.elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, set, Some(chunk));
        }
    }

    /// Removes `keys` from `set`; a key that is not there fails the whole batch
    /// (the kernel's ENOENT), so callers add first when unsure.
    pub fn delete(&mut self, set: &str, keys: &[SetKey]) {
        for chunk in keys.chunks(ELEMS_PER_MESSAGE) {
            self.elements(NFT_MSG_DELSETELEM, 0, set, Some(chunk));
        }
    }

    /// Empties `set` (a DELSETELEM without elements).
    pub fn flush(&mut self, set: &str) {
        self.elements(NFT_MSG_DELSETELEM, 0, set, None);
    }

    /// Sends the batch — to this process's network namespace, or to the one
    /// whose handle is at `netns` (`/run/netns/NAME`) — and waits for the kernel's
    /// verdict: every message acknowledged, or the first error.
    pub fn commit(mut self, netns: Option<&Path>) -> io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let end = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.finish_message(end);
        let fd = match netns {
            None => netlink_socket()?,
            Some(path) => {
                // A netlink socket talks to the namespace it was made in: make it
                // on a thread that entered the other one.
                let path = path.to_owned();
                std::thread::spawn(move || {
                    let ns = std::fs::File::open(&path)?;
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    netlink_socket()
                })
                .join()
                .map_err(|_| io::Error::other("netlink: the thread entering the namespace panicked"))??
            }
        };
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // The kernel refuses a message longer than the send buffer.
        let want = self.buf.len() * 2 + 4096;
        if want > 200 * 1024 {
            setsockopt(&fd, sockopt::SndBufForce, &want)?;
        }
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(ANSWER_WAIT.as_millis() as i64))?;
        let sent = sendto(fd.as_raw_fd(), &self.buf, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        if sent != self.buf.len() {
            return Err(io::Error::other(format!("netlink: sent {sent} of {} bytes", self.buf.len())));
        }
        let mut pending = self.acks.clone();
        let mut answer = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            let n = match recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "nftables did not answer {} of {} set messages",
                            pending.len(),
                            self.acks.len()
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            for (seq, error) in parse_acks(&answer[..n])? {
                if error != 0 {
                    let e = io::Error::from_raw_os_error(-error);
                    return Err(io::Error::new(e.kind(), format!("nftables refused the set change: {e}")));
                }
                pending.retain(|&s| s != seq);
            }
        }
        Ok(())
    }

    fn elements(&mut self, kind: u16, flags: u16, set: &str, keys: Option<&[SetKey]>) {
        self.seq += 1;
        let seq = self.seq;
        let start = self.header(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            self.family,
            0,
        );
        let table = self.table.clone();
        self.attr_str(NFTA_SET_ELEM_LIST_TABLE, &table);
        self.attr_str(NFTA_SET_ELEM_LIST_SET, set);
        if let Some(keys) = keys {
            let list = self.nest_start(NFTA_SET_ELEM_LIST_ELEMENTS);
            for key in keys {
                let elem = self.nest_start(NFTA_LIST_ELEM);
                let k = self.nest_start(NFTA_SET_ELEM_KEY);
                self.attr(NFTA_DATA_VALUE, key.as_bytes());
                self.nest_end(k);
                self.nest_end(elem);
            }
            self.nest_end(list);
        }
        self.finish_message(start);
        self.acks.push(seq);
    }

    /// Starts a message (length 0 until [`finish_message`](Self::finish_message));
    /// returns where it starts.
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let (start, seq) = (self.buf.len(), self.seq);
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish_message
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        self.buf.extend_from_slice(&[family, NFNETLINK_V0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        debug_assert_eq!(self.buf.len() - start, NLMSG_HDRLEN + NFGENMSG_LEN);
        start
    }

    /// Sets the length of the message that starts at `start`.
    fn finish_message(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    fn attr_str(&mut self, kind: u16, s: &str) {
        let mut bytes = Vec::with_capacity(s.len() + 1);
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        self.attr(kind, &bytes);
    }

    fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

fn netlink_socket() -> io::Result<OwnedFd> {
    Ok(socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?)
}

/// The (sequence number, error) of each NLMSG_ERROR in a datagram; 0 is an ACK.
fn parse_acks(mut datagram: &[u8]) -> io::Result<Vec<(u32, i32)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "netlink: truncated answer");
    let mut out = Vec::new();
    while datagram.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().map_err(|_| bad())?) as usize;
        if len < NLMSG_HDRLEN || len > datagram.len() {
            return Err(bad());
        }
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if kind == NLMSG_ERROR {
            let body = &datagram[NLMSG_HDRLEN..len];
            let error = i32::from_ne_bytes(body.get(0..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            // The header of the message this answers follows: its sequence number.
            let seq = u32::from_ne_bytes(body.get(12..16).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
            out.push((seq, error));
        }
        datagram = &datagram[len.next_multiple_of(4).min(datagram.len())..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pad_each_field_to_four_bytes() {
        let key = SetKey::new().field(&[10, 0, 0, 1]).field(&443u16.to_be_bytes()).field(&[10, 0, 0, 2]);
        assert_eq!(key.as_bytes(), &[10, 0, 0, 1, 0x01, 0xbb, 0, 0, 10, 0, 0, 2]);
    }

    #[test]
    fn a_batch_frames_each_message_with_its_length_and_sequence() {
        let mut batch = SetBatch::new("t", libc::NFPROTO_INET as u8);
        batch.add("s", &[SetKey::new().field(&[1, 2, 3, 4])]);
        batch.flush("s");
        let end = batch.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        batch.finish_message(end);
        let mut at = 0;
        let mut seen = Vec::new();
        while at < batch.buf.len() {
            let b = &batch.buf[at..];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([b[4], b[5]]);
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            seen.push((kind, seq));
            assert_eq!(len % 4, 0);
            at += len;
        }
        assert_eq!(at, batch.buf.len());
        assert_eq!(
            seen,
            vec![
                (NFNL_MSG_BATCH_BEGIN, 0),
                ((10 << 8) | NFT_MSG_NEWSETELEM, 1),
                ((10 << 8) | NFT_MSG_DELSETELEM, 2),
                (NFNL_MSG_BATCH_END, 2)
            ]
        );
        assert_eq!(batch.acks, vec![1, 2]);
    }

    #[test]
    fn acks_and_errors_are_read_with_the_sequence_they_answer() {
        let mut datagram = Vec::new();
        for (seq, error) in [(1u32, 0i32), (2, -2)] {
            datagram.extend_from_slice(&36u32.to_ne_bytes());
            datagram.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            datagram.extend_from_slice(&0u16.to_ne_bytes());
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&0u32.to_ne_bytes());
            datagram.extend_from_slice(&error.to_ne_bytes());
            // The answered header: length, type, flags, seq, pid.
            datagram.extend_from_slice(&[0; 8]);
            datagram.extend_from_slice(&seq.to_ne_bytes());
            datagram.extend_from_slice(&0u32.to_ne_bytes());
        }
        assert_eq!(parse_acks(&datagram).unwrap(), vec![(1, 0), (2, -2)]);
        assert!(parse_acks(&datagram[..20]).is_err(), "a message longer than the datagram");
    }
}
