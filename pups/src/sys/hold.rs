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

/// Bytes of each held packet copied to us: IPv4 or IPv6 header and a TCP
/// header with options (at most 60 + 60).
const HEADERS_COPIED: u16 = 120;

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
        // The headers only: enough to give a flow's packets their verdicts in the
        // order the bank sent them (`in_send_order`).
        queue.set_copy_range(number, HEADERS_COPIED)?;
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
                    in_send_order(&mut held);
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

/// Reorders held packets so that each TCP flow's go on in the order its sender
/// stamped them (TCP timestamp option), flows keeping their first packet's place.
/// The queue holds them in arrival order, and a bank's retransmission can arrive
/// before its original (the original held on the old appliance, the copy sent
/// straight to the twin): the receiver would take the copy, then drop the older
/// original by PAWS (`TcpExtPAWSEstab`); in send order the copy is the duplicate.
fn in_send_order(held: &mut Vec<Message>) {
    let stamps: Vec<Option<(FlowKey, u32)>> = held.iter().map(|m| flow_and_tsval(m.get_payload())).collect();
    if stamps.iter().all(Option::is_none) {
        return;
    }
    let mut slots: Vec<Option<Message>> = held.drain(..).map(Some).collect();
    held.extend(send_order(&stamps).into_iter().filter_map(|i| slots[i].take()));
}

/// The positions of `stamps` in send order (see [`in_send_order`]).
fn send_order(stamps: &[Option<(FlowKey, u32)>]) -> Vec<usize> {
    // Per flow: where its first packet is, and its first TSval (TSvals wrap:
    // compared as differences from it).
    let mut first: std::collections::HashMap<FlowKey, (usize, u32)> = std::collections::HashMap::new();
    let mut order: Vec<(usize, i64, usize)> = Vec::with_capacity(stamps.len());
    for (i, stamp) in stamps.iter().enumerate() {
        match stamp {
            Some((flow, ts)) => {
                let (at, base) = *first.entry(*flow).or_insert((i, *ts));
                order.push((at, i64::from(ts.wrapping_sub(base) as i32), i));
            }
            None => order.push((i, 0, i)),
        }
    }
    order.sort_unstable();
    order.into_iter().map(|(_, _, i)| i).collect()
}

/// Source and destination address and port.
type FlowKey = (IpAddr, u16, IpAddr, u16);

/// The flow and TSval of an IPv4 or IPv6 TCP segment that carries a timestamp
/// option; `None` for anything else (or too short to tell).
fn flow_and_tsval(packet: &[u8]) -> Option<(FlowKey, u32)> {
    let version = packet.first()? >> 4;
    let (src, dst, tcp) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if *packet.get(9)? != 6 || ihl < 20 {
                return None;
            }
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), packet.get(ihl..)?)
        }
        6 => {
            // No extension headers: a bank's TCP segment carries none.
            if *packet.get(6)? != 6 {
                return None;
            }
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (IpAddr::from(src), IpAddr::from(dst), packet.get(40..)?)
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes(tcp.get(0..2)?.try_into().ok()?);
    let dport = u16::from_be_bytes(tcp.get(2..4)?.try_into().ok()?);
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let mut options = tcp.get(20..data_offset)?;
    while let Some(&kind) = options.first() {
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ => {
                let len = usize::from(*options.get(1)?);
                if len < 2 || len > options.len() {
                    return None;
                }
                if kind == 8 && len == 10 {
                    let tsval = u32::from_be_bytes(options.get(2..6)?.try_into().ok()?);
                    return Some(((src, sport, dst, dport), tsval));
                }
                options = &options[len..];
            }
        }
    }
    None
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

    /// An IPv4 TCP header with NOP, NOP, timestamp options, as Linux sends them.
    fn segment(sport: u16, tsval: u32) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 52, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1];
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&16001u16.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0x01, 0xf5, 0, 0, 0, 0]);
        p.extend_from_slice(&[1, 1, 8, 10]);
        p.extend_from_slice(&tsval.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p
    }

    #[test]
    fn the_flow_and_tsval_of_a_segment_are_read_from_its_headers() {
        let (flow, ts) = flow_and_tsval(&segment(40000, 123_456)).unwrap();
        assert_eq!(flow, ("10.0.0.9".parse().unwrap(), 40000, "10.0.0.1".parse().unwrap(), 16001));
        assert_eq!(ts, 123_456);
        // Truncated, not TCP, no timestamp option: no answer, no panic.
        assert!(flow_and_tsval(&segment(40000, 1)[..30]).is_none());
        let mut udp = segment(40000, 1);
        udp[9] = 17;
        assert!(flow_and_tsval(&udp).is_none());
        let mut no_ts = segment(40000, 1);
        no_ts[42] = 0; // end of options where the timestamp option was
        assert!(flow_and_tsval(&no_ts).is_none());
        assert!(flow_and_tsval(&[]).is_none() && flow_and_tsval(&[0x45]).is_none());
    }

    #[test]
    fn a_flows_packets_go_in_timestamp_order_and_flows_keep_their_place() {
        let flow = |port| ("10.0.0.9".parse().unwrap(), port, "10.0.0.1".parse().unwrap(), 16001);
        // Arrival: flow A's copy (ts 300) before its original (ts 100); flow B in
        // between; one packet with no timestamp; A's TSval wrapping around.
        let stamps =
            [Some((flow(1), 300)), Some((flow(2), 50)), None, Some((flow(1), 100)), Some((flow(2), 40))];
        assert_eq!(send_order(&stamps), vec![3, 0, 4, 1, 2]);
        let wrapping = [Some((flow(1), 5)), Some((flow(1), u32::MAX - 5))];
        assert_eq!(send_order(&wrapping), vec![1, 0], "u32::MAX - 5 was sent before 5");
    }

    #[test]
    fn is_local_knows_the_addresses_of_this_host_only() {
        assert!(is_local(IpAddr::from([127, 0, 0, 1])), "loopback is ours");
        // TEST-NET-3: never assigned here, and a bind test would say "ours" under
        // ip_nonlocal_bind=1.
        assert!(!is_local(IpAddr::from([203, 0, 113, 77])));
    }
}
