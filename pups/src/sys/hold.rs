//! Holding bank packets instead of dropping them while their session has no live
//! socket here (the network lock's hold mode, `netlock`): the kernel queues them
//! on an NFQUEUE, and we give each its verdict once the session is live again —
//! here (the sockets were restored or thawed), or on the twin (the packets are
//! forwarded to the VIP's new home). A bank that sent during a switchover then
//! sees its segment arrive late instead of resending it on its own timer
//! (≥ 200 ms; `shared/notes/measurements.md`).
//!
//! The queue is read by one thread that owns the netlink socket (`nfq`); it only
//! collects packet ids and gives verdicts when asked. Packets wait in the kernel
//! (up to [`QUEUE_MAX_LEN`]; beyond that the kernel drops them, as the drop-mode
//! lock would have).

use std::io;
use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use nfq::{Message, Queue, Verdict};

/// Packets the kernel keeps waiting for a verdict on our queue.
pub const QUEUE_MAX_LEN: u32 = 8192;

/// How often the reader empties the netlink socket while nobody asks for a
/// verdict, so that it never overflows (its buffer holds about a thousand).
const DRAIN_EVERY: Duration = Duration::from_millis(5);

/// What to do with the held packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Let them go on: to a live socket here, or forwarded if the address they
    /// are for is no longer on this host.
    Accept,
    /// Drop them (the bank resends on its timer).
    Drop,
}

enum Command {
    Release(Release, mpsc::Sender<io::Result<u64>>),
    Stop,
}

/// The reader of one NFQUEUE. Dropping it stops the thread; packets still held
/// are then dropped by the kernel (no listener, no bypass).
#[derive(Debug)]
pub struct HoldQueue {
    number: u16,
    commands: mpsc::Sender<Command>,
}

impl HoldQueue {
    /// Binds queue `number` (one reader per queue in a network namespace).
    pub fn open(number: u16) -> io::Result<Self> {
        let mut queue = Queue::open()?;
        queue.bind(number)?;
        // Only the id matters: no payload copied to us.
        queue.set_copy_range(number, 0)?;
        queue.set_queue_max_len(number, QUEUE_MAX_LEN)?;
        queue.set_nonblocking(true);
        let (commands, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("hold-queue-{number}"))
            .spawn(move || read(queue, number, rx))?;
        Ok(Self { number, commands })
    }

    /// The queue's number.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// Gives every packet held so far `release`; returns how many there were.
    /// Blocking (it waits for the reader thread): call it from a blocking context.
    pub fn release(&self, release: Release) -> io::Result<u64> {
        let (tx, rx) = mpsc::channel();
        let gone = || io::Error::other("the hold queue's reader has stopped");
        self.commands.send(Command::Release(release, tx)).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for HoldQueue {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

fn read(mut queue: Queue, number: u16, commands: mpsc::Receiver<Command>) {
    let mut held: Vec<Message> = Vec::new();
    loop {
        let command = commands.recv_timeout(DRAIN_EVERY);
        let drained = drain(&mut queue, &mut held);
        match command {
            Ok(Command::Release(release, reply)) => {
                let result = drained.and_then(|()| {
                    let n = held.len() as u64;
                    let verdict = match release {
                        Release::Accept => Verdict::Accept,
                        Release::Drop => Verdict::Drop,
                    };
                    for mut msg in held.drain(..) {
                        msg.set_verdict(verdict);
                        queue.verdict(msg)?;
                    }
                    Ok(n)
                });
                let _ = reply.send(result);
            }
            Ok(Command::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = drained {
                    tracing::warn!(queue = number, error = %e, "cannot read the hold queue");
                }
            }
        }
    }
    let _ = queue.unbind(number);
}

fn drain(queue: &mut Queue, held: &mut Vec<Message>) -> io::Result<()> {
    loop {
        match queue.recv() {
            Ok(msg) => held.push(msg),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Whether `ip` is an address of this host (network namespace) now: assigned to
/// one of its interfaces. A test bind would not do: keepalived hosts often run
/// with `ip_nonlocal_bind=1`, where binding any address succeeds. If the
/// interfaces cannot be listed, the address counts as here (held packets are
/// then dropped, never sent towards an address that may still be ours).
pub fn is_local(ip: IpAddr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return true };
    addrs.filter_map(|ifa| ifa.address).any(|addr| {
        let here = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return false,
        };
        here == ip
    })
}

/// What hold mode needs of the kernel's IPv4 settings in this network namespace:
/// forwarding on (held packets whose VIP has left go on to the twin), and no ICMP
/// redirects (the bank must keep sending to the VIP, not learn a route to the
/// twin's own address). Returns the forwarding setting as it was.
pub fn enable_forwarding() -> io::Result<bool> {
    let was = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?.trim() == "1";
    for entry in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
        let path = entry?.path().join("send_redirects");
        std::fs::write(&path, "0")?;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    Ok(was)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_local_knows_the_addresses_of_this_host_only() {
        assert!(is_local(IpAddr::from([127, 0, 0, 1])), "loopback is ours");
        // TEST-NET-3: never assigned here, and a bind test would say "ours" under
        // ip_nonlocal_bind=1.
        assert!(!is_local(IpAddr::from([203, 0, 113, 77])));
    }
}
