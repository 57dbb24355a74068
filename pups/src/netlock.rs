//! The network lock: nftables rules that silently drop a bank's packets while its
//! TCP session has no live socket on this host, so the kernel never answers them
//! with an RST (and never sends a FIN) — a bank must not notice an appliance
//! switchover.
//!
//! - The **standby** locks the bank ports of the VIPs *before* the VIP can arrive:
//!   keepalived adds the VIP and sends gratuitous ARPs before it tells anyone, so
//!   bank segments can reach this host before the sockets are restored.
//! - The **active** locks each session (its 4-tuple, both directions) before
//!   freezing it with `TCP_REPAIR`: repair mode still receives, so without the lock
//!   the queues would change while being dumped.
//!
//! Everything lives in one table that is ours alone, `inet pups_lock`, built
//! through the `nft` binary (`nft -f -`, one atomic transaction per call; `nft -j`
//! to read it back). Locked ports and sessions are elements of nft sets, so
//! thousands lock in one transaction and each add or remove is one set operation;
//! those changes — a switchover's hot path — go straight over nfnetlink
//! ([`crate::sys::SetBatch`]), not through `nft`.
//! The rules sit before raw (and conntrack) and never reject.
//!
//! Adding elements takes the kernel ~1 ms for a thousand; a transaction that
//! removes even one element is answered only after 8–16 ms on our machines. So a
//! switchover only adds, and the removals happen after it. Ports have three sets,
//! matched in this order after the session locks:
//!
//! - `closing_ports`: locked, open or not — the active's lock at the checkpoint;
//! - `open_ports`: ports served here, exempt from the standing lock — the twin's
//!   unlock at Serve;
//! - `bank_ports`: the standing lock — a standby's, from its start.
//!
//! [`NetLock::fence`] (after `CloseFrozen`, on the old active) and
//! [`NetLock::unlock_all`] (a thaw) remove elements: back to the standing lock
//! alone, or to no lock at all.
//!
//! **Hold mode** (`[pups] hold_queue`): instead of dropping, the lock holds a
//! bank's packets while the VIP is on this host — it marks them ([`HOLD_MARK`]) and
//! one `iptables` rule of ours (chain `PUPS_HOLD` in table `raw`, since this
//! kernel's nftables has no `queue` expression) puts them on an NFQUEUE that
//! `pups` reads (`sys::HoldQueue`) — and forwards them when the VIP is not here
//! ([`FORWARD_MARK`]): to the twin that has it. What the bank sent during a
//! switchover then arrives late instead of being resent on the bank's timer.
//! Forwarding is limited by our own `forward` chain to packets we marked.
//! Packets of a locked (frozen) session are always held, wherever the VIP is:
//! while the VIP is between the appliances a forwarded packet would wait on an
//! ARP nobody answers yet, and while the frozen socket exists TCP early demux
//! ties the packet to it and the kernel refuses to forward it (`ip_forward`
//! drops any packet with a socket attached). They go on at `CloseFrozen`, once
//! the sockets are closed and the twin holds the VIP.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::sys::{SetBatch, SetKey};

/// The table's name (family `inet`).
pub const TABLE: &str = "pups_lock";

/// Packets with this mark (`SO_MARK`) pass the outbound lock: for what our own
/// restore code must send while sessions are still locked. The value is CRIU's
/// (`SOCCR_MARK`), which operators may already know.
pub const PASS_MARK: u32 = 0xC114;

/// Hold mode: a locked bank packet for a VIP on this host, queued until its
/// session is live again.
pub const HOLD_MARK: u32 = 0xC115;

/// Hold mode: a locked bank packet for a VIP no longer (or not yet) on this host,
/// forwarded to where the VIP is.
pub const FORWARD_MARK: u32 = 0xC116;

/// The `iptables` chain (table `raw`) that queues held packets.
pub const HOLD_CHAIN: &str = "PUPS_HOLD";

/// One bank TCP session as this host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionTuple {
    /// Our end (VIP:bank port).
    pub local: SocketAddr,
    /// The bank's end.
    pub peer: SocketAddr,
}

impl fmt::Display for SessionTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<->{}", self.local, self.peer)
    }
}

/// Why the lock could not be changed or read.
#[derive(Debug, thiserror::Error)]
pub enum NetLockError {
    /// `nft` could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` refused (nothing of the transaction was applied).
    #[error("{command} failed ({status}): {stderr}")]
    Nft {
        /// What ran.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// A session whose two ends are not of one address family.
    #[error("session {0}: local and peer are of different address families")]
    MixedFamily(SessionTuple),
    /// `iptables` (hold mode) could not be run or refused.
    #[error("{command} failed: {stderr}")]
    Iptables {
        /// What ran.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// The kernel refused a change sent over nfnetlink (nothing of it applied),
    /// or did not answer.
    #[error("nftables set change ({what}) failed: {source}")]
    Netlink {
        /// What was being changed.
        what: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
    /// `nft -j` printed something we do not understand.
    #[error("cannot read the nft listing: {0}")]
    Listing(String),
}

/// What the lock holds now, as read back from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockState {
    /// VIP bank ports under the standing lock.
    pub bank_ports: Vec<(IpAddr, u16)>,
    /// Ports exempt from the standing lock (served here).
    pub open_ports: Vec<(IpAddr, u16)>,
    /// Ports under the closing lock (a checkpoint's: locked even when open).
    pub closing_ports: Vec<(IpAddr, u16)>,
    /// Locked sessions.
    pub sessions: Vec<SessionTuple>,
    /// Packets dropped so far, per rule: `bank-ports-in`, `bank-ports-out`,
    /// `session-in`, `session-out` (IPv4 and IPv6 added up).
    pub dropped: BTreeMap<String, u64>,
}

/// The network lock of one host (or network namespace).
#[derive(Debug, Clone)]
pub struct NetLock {
    /// `nft`, or a command that runs it elsewhere (`ip netns exec NS nft`).
    nft: Vec<String>,
    /// `iptables`, the same way (hold mode only).
    iptables: Vec<String>,
    /// Hold mode: the NFQUEUE held packets wait on.
    hold_queue: Option<u16>,
    /// Set elements change over nfnetlink, not by running `nft` (see
    /// [`crate::sys::SetBatch`]): in this process's network namespace, or in the
    /// named one (its `/run/netns` handle).
    netns: Option<PathBuf>,
}

impl Default for NetLock {
    fn default() -> Self {
        Self::new()
    }
}

impl NetLock {
    /// The lock of this host's network namespace.
    pub fn new() -> Self {
        Self { nft: vec!["nft".into()], iptables: vec!["iptables".into()], hold_queue: None, netns: None }
    }

    /// Hold mode on queue `number` (see the module's documentation).
    pub fn with_hold_queue(mut self, number: u16) -> Self {
        self.hold_queue = Some(number);
        self
    }

    /// The hold queue, in hold mode.
    pub fn hold_queue(&self) -> Option<u16> {
        self.hold_queue
    }

    /// The lock of a named network namespace (`ip netns exec NS nft`).
    pub fn in_netns(ns: &str) -> Self {
        let exec = |tool: &str| ["ip", "netns", "exec", ns, tool].map(String::from).to_vec();
        let netns = Some(PathBuf::from("/run/netns").join(ns));
        Self { nft: exec("nft"), iptables: exec("iptables"), hold_queue: None, netns }
    }

    /// (Re)builds the table in one transaction: an existing one (a previous run's,
    /// with whatever it locked) is replaced, and `bank_ports` are locked from the
    /// first instant — a standby passes its VIP ports so there is no moment without
    /// the lock; an active passes none.
    pub async fn install(&self, bank_ports: &[(IpAddr, u16)]) -> Result<(), NetLockError> {
        // The queue rule goes in first: a marked packet with no rule to queue it would
        // pass straight to a VIP that has no socket for it yet.
        if let Some(queue) = self.hold_queue {
            self.install_hold_chain(queue).await?;
        }
        let mut script = format!("table inet {TABLE}\ndelete table inet {TABLE}\n");
        script.push_str(&ruleset(self.hold_queue.is_some()));
        let mut ports = SetChanges::default();
        ports.add_ports(PortSets::Standing, bank_ports);
        script.push_str(&ports.to_script());
        self.apply(&script).await
    }

    /// Proves at start that set elements can be changed over nfnetlink (what a
    /// switchover relies on), with a change that changes nothing: `bank_ports`
    /// added again to the standing lock `install` put them in.
    pub async fn check_netlink(&self, bank_ports: &[(IpAddr, u16)]) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        changes.add_ports(PortSets::Standing, bank_ports);
        if changes.0.is_empty() {
            // Nothing to add: an empty flush proves the path as well.
            changes.0.push(SetChange::Flush(SetName::ClosingPorts4));
        }
        self.change(changes).await
    }

    /// Deletes the table (clean shutdown), and in hold mode the `iptables` chain.
    /// Neither being there is not an error.
    pub async fn remove(&self) -> Result<(), NetLockError> {
        // nft 1.0.6 has no "destroy": creating first makes the delete always succeed.
        self.apply(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n")).await?;
        if self.hold_queue.is_some() {
            // Each step may find nothing to do.
            let _ = self.iptables(&["-t", "raw", "-D", "PREROUTING", "-j", HOLD_CHAIN]).await;
            let _ = self.iptables(&["-t", "raw", "-F", HOLD_CHAIN]).await;
            let _ = self.iptables(&["-t", "raw", "-X", HOLD_CHAIN]).await;
        }
        Ok(())
    }

    /// (Re)builds `PUPS_HOLD` idempotently: created if missing, emptied, one rule
    /// queueing [`HOLD_MARK`]ed packets, jumped to once from `raw PREROUTING`.
    async fn install_hold_chain(&self, queue: u16) -> Result<(), NetLockError> {
        let _ = self.iptables(&["-t", "raw", "-N", HOLD_CHAIN]).await;
        self.iptables(&["-t", "raw", "-F", HOLD_CHAIN]).await?;
        let (mark, queue) = (format!("{HOLD_MARK:#x}"), queue.to_string());
        self.iptables(&[
            "-t",
            "raw",
            "-A",
            HOLD_CHAIN,
            "-m",
            "mark",
            "--mark",
            &mark,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ])
        .await?;
        if self.iptables(&["-t", "raw", "-C", "PREROUTING", "-j", HOLD_CHAIN]).await.is_err() {
            self.iptables(&["-t", "raw", "-I", "PREROUTING", "1", "-j", HOLD_CHAIN]).await?;
        }
        Ok(())
    }

    async fn iptables(&self, args: &[&str]) -> Result<(), NetLockError> {
        let command = format!("{} {}", self.iptables.join(" "), args.join(" "));
        let out = Command::new(&self.iptables[0])
            .args(&self.iptables[1..])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| NetLockError::Iptables { command: command.clone(), stderr: e.to_string() })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(NetLockError::Iptables { command, stderr });
        }
        Ok(())
    }

    /// Drops all traffic to (and from) `vip`'s `ports`, whether or not `vip` is on
    /// this host yet.
    pub async fn lock_all_bank_ports(&self, vip: IpAddr, ports: &[u16]) -> Result<(), NetLockError> {
        let pairs: Vec<_> = ports.iter().map(|&p| (vip, p)).collect();
        self.lock_ports_and_sessions(&pairs, &[]).await
    }

    /// Locks bank ports (any VIPs) — open or not — and these sessions in one
    /// transaction that only adds elements (a switchover's freeze waits for it:
    /// ~1 ms for a thousand sessions). The ports go in the standing lock and in
    /// the closing lock, which comes before the open exception.
    pub async fn lock_ports_and_sessions(
        &self,
        bank_ports: &[(IpAddr, u16)],
        sessions: &[SessionTuple],
    ) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        changes.add_ports(PortSets::Standing, bank_ports);
        changes.add_ports(PortSets::Closing, bank_ports);
        changes.add_sessions(sessions)?;
        self.change(changes).await
    }

    /// Opens these ports of the standing lock (only adds an element: fast). A
    /// closing lock or a session lock still applies; see [`fence`](Self::fence)
    /// and [`unlock_all`](Self::unlock_all) for the ways back to a lock with
    /// neither.
    pub async fn open_ports(&self, bank_ports: &[(IpAddr, u16)]) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        changes.add_ports(PortSets::Open, bank_ports);
        self.change(changes).await
    }

    /// Back to the standby's lock, in one transaction: `bank_ports` locked,
    /// nothing open, no closing lock, and of the session locks only `sessions`
    /// (those still frozen here). Removing elements is slow (8–16 ms: the
    /// kernel's answer waits), so this runs outside the freeze.
    pub async fn fence(
        &self,
        bank_ports: &[(IpAddr, u16)],
        sessions: &[SessionTuple],
    ) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        changes.add_ports(PortSets::Standing, bank_ports);
        for set in [
            SetName::OpenPorts4,
            SetName::OpenPorts6,
            SetName::ClosingPorts4,
            SetName::ClosingPorts6,
            SetName::Sessions4,
            SetName::Sessions6,
        ] {
            changes.0.push(SetChange::Flush(set));
        }
        changes.add_sessions(sessions)?;
        self.change(changes).await
    }

    /// Lifts every lock, ports and sessions, in one transaction (slow, like
    /// [`fence`](Self::fence)).
    pub async fn unlock_all(&self) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        for set in SetName::ALL {
            changes.0.push(SetChange::Flush(set));
        }
        self.change(changes).await
    }

    /// Drops one session's packets in both directions.
    pub async fn lock_session(&self, session: SessionTuple) -> Result<(), NetLockError> {
        self.lock_sessions(&[session]).await
    }

    /// Drops these sessions' packets, all in one transaction.
    pub async fn lock_sessions(&self, sessions: &[SessionTuple]) -> Result<(), NetLockError> {
        let mut changes = SetChanges::default();
        changes.add_sessions(sessions)?;
        self.change(changes).await
    }

    /// Lets one session's packets through again; a session that was not locked is
    /// not an error.
    pub async fn unlock_session(&self, session: SessionTuple) -> Result<(), NetLockError> {
        self.unlock_sessions(&[session]).await
    }

    /// Unlocks these sessions in one transaction (not locked: not an error).
    pub async fn unlock_sessions(&self, sessions: &[SessionTuple]) -> Result<(), NetLockError> {
        self.change(SetChanges::unlock_sessions(sessions)?).await
    }

    /// Applies set changes in one transaction, over nfnetlink, on a blocking
    /// thread: an add is answered in about a millisecond, but a removal only after
    /// 8–16 ms, and a runtime thread blocked that long would hold up whatever
    /// else it runs (the answer `mups` waits for, first of all).
    async fn change(&self, changes: SetChanges) -> Result<(), NetLockError> {
        if changes.0.is_empty() {
            return Ok(());
        }
        let batch = changes.to_netlink();
        let netns = self.netns.clone();
        let committed = tokio::task::spawn_blocking(move || batch.commit(netns.as_deref()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(format!("the netlink thread failed: {e}"))));
        committed.map_err(|source| NetLockError::Netlink { what: changes.describe(), source })
    }

    /// What is locked now and how many packets each rule dropped.
    pub async fn list(&self) -> Result<LockState, NetLockError> {
        let out = self.run(&["-j", "list", "table", "inet", TABLE], None).await?;
        parse_listing(&out)
    }

    async fn apply(&self, script: &str) -> Result<(), NetLockError> {
        if script.is_empty() {
            return Ok(());
        }
        self.run(&["-f", "-"], Some(script)).await.map(drop)
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NetLockError> {
        let command = format!("{} {}", self.nft.join(" "), args.join(" "));
        let spawn_err = |source| NetLockError::Spawn { program: self.nft[0].clone(), source };
        let mut child = Command::new(&self.nft[0])
            .args(&self.nft[1..])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(spawn_err)?;
            // Dropping the pipe closes it: nft reads to end-of-file.
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NetLockError::Nft {
                command,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The table's sets and chains. Inbound filtering sits on prerouting rather than
/// input so that it also catches packets to a VIP this host does not hold yet; both
/// chains run before raw and conntrack, so dropped packets leave no
/// connection-tracking state behind. In hold mode a locked inbound packet is marked
/// instead of dropped: held if its VIP is here, forwarded if not.
fn ruleset(hold: bool) -> String {
    let mark = PASS_MARK;
    let inbound = |matcher: &str, comment: &str| {
        if hold {
            format!(
                "        {matcher} fib daddr type local meta mark set {HOLD_MARK:#x} counter accept comment \"{comment}-held\"\n\
                 \x20       {matcher} meta mark set {FORWARD_MARK:#x} counter accept comment \"{comment}-forwarded\"\n"
            )
        } else {
            format!("        {matcher} counter drop comment \"{comment}\"\n")
        }
    };
    // A locked session's packets: held whether or not the VIP is here (module docs).
    let session_in = |matcher: &str| {
        if hold {
            format!(
                "        {matcher} meta mark set {HOLD_MARK:#x} counter accept comment \"session-in-held\"\n"
            )
        } else {
            format!("        {matcher} counter drop comment \"session-in\"\n")
        }
    };
    let mut inbound_rules = String::new();
    inbound_rules.push_str(&session_in("ip daddr . tcp dport . ip saddr . tcp sport @sessions4"));
    inbound_rules.push_str(&session_in("ip6 daddr . tcp dport . ip6 saddr . tcp sport @sessions6"));
    // The closing lock, then the open exception, then the standing lock: opening
    // and closing only ever add elements (removing them is slow).
    inbound_rules.push_str(&inbound("ip daddr . tcp dport @closing_ports4", "bank-ports-in"));
    inbound_rules.push_str(&inbound("ip6 daddr . tcp dport @closing_ports6", "bank-ports-in"));
    inbound_rules.push_str("        ip daddr . tcp dport @open_ports4 accept\n");
    inbound_rules.push_str("        ip6 daddr . tcp dport @open_ports6 accept\n");
    inbound_rules.push_str(&inbound("ip daddr . tcp dport @bank_ports4", "bank-ports-in"));
    inbound_rules.push_str(&inbound("ip6 daddr . tcp dport @bank_ports6", "bank-ports-in"));
    // Hold mode turns forwarding on: nothing but what we marked may use it.
    let forward = if hold {
        format!(
            "    chain forward {{
        type filter hook forward priority -310; policy accept;
        meta mark {{ {HOLD_MARK:#x}, {FORWARD_MARK:#x} }} counter accept comment \"bank-forwarded\"
        counter drop comment \"not-ours\"
    }}
"
        )
    } else {
        String::new()
    };
    format!(
        "table inet {TABLE} {{
    set bank_ports4 {{ type ipv4_addr . inet_service; }}
    set bank_ports6 {{ type ipv6_addr . inet_service; }}
    set open_ports4 {{ type ipv4_addr . inet_service; }}
    set open_ports6 {{ type ipv6_addr . inet_service; }}
    set closing_ports4 {{ type ipv4_addr . inet_service; }}
    set closing_ports6 {{ type ipv6_addr . inet_service; }}
    set sessions4 {{ type ipv4_addr . inet_service . ipv4_addr . inet_service; }}
    set sessions6 {{ type ipv6_addr . inet_service . ipv6_addr . inet_service; }}
    chain inbound {{
        type filter hook prerouting priority -310; policy accept;
{inbound_rules}    }}
    chain outbound {{
        type filter hook output priority -310; policy accept;
        meta mark {mark:#x} accept
        ip saddr . tcp sport . ip daddr . tcp dport @sessions4 counter drop comment \"session-out\"
        ip6 saddr . tcp sport . ip6 daddr . tcp dport @sessions6 counter drop comment \"session-out\"
        ip saddr . tcp sport @closing_ports4 counter drop comment \"bank-ports-out\"
        ip6 saddr . tcp sport @closing_ports6 counter drop comment \"bank-ports-out\"
        ip saddr . tcp sport @open_ports4 accept
        ip6 saddr . tcp sport @open_ports6 accept
        ip saddr . tcp sport @bank_ports4 counter drop comment \"bank-ports-out\"
        ip6 saddr . tcp sport @bank_ports6 counter drop comment \"bank-ports-out\"
    }}
{forward}}}
"
    )
}

/// The lock's sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetName {
    BankPorts4,
    BankPorts6,
    OpenPorts4,
    OpenPorts6,
    ClosingPorts4,
    ClosingPorts6,
    Sessions4,
    Sessions6,
}

impl SetName {
    const ALL: [Self; 8] = [
        Self::BankPorts4,
        Self::BankPorts6,
        Self::OpenPorts4,
        Self::OpenPorts6,
        Self::ClosingPorts4,
        Self::ClosingPorts6,
        Self::Sessions4,
        Self::Sessions6,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::BankPorts4 => "bank_ports4",
            Self::BankPorts6 => "bank_ports6",
            Self::OpenPorts4 => "open_ports4",
            Self::OpenPorts6 => "open_ports6",
            Self::ClosingPorts4 => "closing_ports4",
            Self::ClosingPorts6 => "closing_ports6",
            Self::Sessions4 => "sessions4",
            Self::Sessions6 => "sessions6",
        }
    }
}

/// The three kinds of port set (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortSets {
    /// `bank_ports`: the standing lock.
    Standing,
    /// `open_ports`: exempt from the standing lock.
    Open,
    /// `closing_ports`: locked whether open or not.
    Closing,
}

impl PortSets {
    fn names(self) -> [(SetName, bool); 2] {
        match self {
            Self::Standing => [(SetName::BankPorts4, true), (SetName::BankPorts6, false)],
            Self::Open => [(SetName::OpenPorts4, true), (SetName::OpenPorts6, false)],
            Self::Closing => [(SetName::ClosingPorts4, true), (SetName::ClosingPorts6, false)],
        }
    }
}

/// An element of one of the sets: a VIP bank port or a session's 4-tuple
/// (ours first, as the rules match inbound packets: daddr . dport . saddr . sport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Port(IpAddr, u16),
    Session(SessionTuple),
}

impl Element {
    fn fields(self) -> Vec<(IpAddr, u16)> {
        match self {
            Self::Port(ip, port) => vec![(ip, port)],
            Self::Session(s) => vec![(s.local.ip(), s.local.port()), (s.peer.ip(), s.peer.port())],
        }
    }

    /// As `nft` writes it: `10.0.0.1 . 443 . 10.0.0.9 . 40000`.
    fn text(self) -> String {
        let parts: Vec<String> = self.fields().iter().map(|(ip, port)| format!("{ip} . {port}")).collect();
        parts.join(" . ")
    }

    /// As the kernel stores it: each address and port in network byte order,
    /// padded to 4 bytes.
    fn key(self) -> SetKey {
        self.fields().iter().fold(SetKey::new(), |key, (ip, port)| {
            let key = match ip {
                IpAddr::V4(v4) => key.field(&v4.octets()),
                IpAddr::V6(v6) => key.field(&v6.octets()),
            };
            key.field(&port.to_be_bytes())
        })
    }
}

#[derive(Debug, Clone)]
enum SetChange {
    Add(SetName, Vec<Element>),
    Delete(SetName, Vec<Element>),
    Flush(SetName),
}

/// Changes to the sets that go in one transaction, in order.
#[derive(Debug, Default)]
struct SetChanges(Vec<SetChange>);

impl SetChanges {
    fn add_ports(&mut self, sets: PortSets, ports: &[(IpAddr, u16)]) {
        for (set, v4) in sets.names() {
            let elems: Vec<Element> = ports
                .iter()
                .filter(|(ip, _)| ip.is_ipv4() == v4)
                .map(|&(ip, p)| Element::Port(ip, p))
                .collect();
            if !elems.is_empty() {
                self.0.push(SetChange::Add(set, elems));
            }
        }
    }

    fn add_sessions(&mut self, sessions: &[SessionTuple]) -> Result<(), NetLockError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for s in sessions {
            match (s.local.is_ipv4(), s.peer.is_ipv4()) {
                (true, true) => v4.push(Element::Session(*s)),
                (false, false) => v6.push(Element::Session(*s)),
                _ => return Err(NetLockError::MixedFamily(*s)),
            }
        }
        for (set, elems) in [(SetName::Sessions4, v4), (SetName::Sessions6, v6)] {
            if !elems.is_empty() {
                self.0.push(SetChange::Add(set, elems));
            }
        }
        Ok(())
    }

    /// Removes these sessions. Deleting an absent element fails the whole
    /// transaction, and nft 1.0.6 has no "destroy element": adding first makes
    /// the delete always succeed.
    fn unlock_sessions(sessions: &[SessionTuple]) -> Result<Self, NetLockError> {
        let mut changes = Self::default();
        changes.add_sessions(sessions)?;
        let deletes: Vec<SetChange> = changes
            .0
            .iter()
            .filter_map(|c| match c {
                SetChange::Add(set, elems) => Some(SetChange::Delete(*set, elems.clone())),
                _ => None,
            })
            .collect();
        changes.0.extend(deletes);
        Ok(changes)
    }

    /// An `nft -f` script.
    fn to_script(&self) -> String {
        let mut script = String::new();
        for change in &self.0 {
            let (verb, set, elems) = match change {
                SetChange::Add(set, elems) => ("add", set, elems),
                SetChange::Delete(set, elems) => ("delete", set, elems),
                SetChange::Flush(set) => {
                    let _ = writeln!(script, "flush set inet {TABLE} {}", set.as_str());
                    continue;
                }
            };
            let text: Vec<String> = elems.iter().map(|e| e.text()).collect();
            let _ =
                writeln!(script, "{verb} element inet {TABLE} {} {{ {} }}", set.as_str(), text.join(", "));
        }
        script
    }

    /// The same as one nfnetlink batch.
    fn to_netlink(&self) -> SetBatch {
        let mut batch = SetBatch::new(TABLE, libc::NFPROTO_INET as u8);
        for change in &self.0 {
            match change {
                SetChange::Add(set, elems) => {
                    batch.add(set.as_str(), &elems.iter().map(|e| e.key()).collect::<Vec<_>>());
                }
                SetChange::Delete(set, elems) => {
                    batch.delete(set.as_str(), &elems.iter().map(|e| e.key()).collect::<Vec<_>>());
                }
                SetChange::Flush(set) => batch.flush(set.as_str()),
            }
        }
        batch
    }

    /// For an error message: what was being changed.
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|c| match c {
                SetChange::Add(set, e) => format!("add {} to {}", e.len(), set.as_str()),
                SetChange::Delete(set, e) => format!("delete {} from {}", e.len(), set.as_str()),
                SetChange::Flush(set) => format!("flush {}", set.as_str()),
            })
            .collect();
        parts.join(", ")
    }
}

/// Reads `nft -j list table inet pups_lock`.
fn parse_listing(json: &str) -> Result<LockState, NetLockError> {
    use serde_json::Value;
    let bad = |what: &str| NetLockError::Listing(what.to_owned());
    let doc: Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
    let items = doc.get("nftables").and_then(Value::as_array).ok_or_else(|| bad("no \"nftables\" array"))?;
    let mut state = LockState::default();
    for item in items {
        if let Some(set) = item.get("set") {
            let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
            for elem in set.get("elem").and_then(Value::as_array).into_iter().flatten() {
                let parts = elem
                    .get("concat")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad(&format!("set {name}: element {elem} is not a concatenation")))?;
                let ip = |i: usize| -> Result<IpAddr, NetLockError> {
                    parts.get(i).and_then(Value::as_str).and_then(|s| s.parse().ok()).ok_or_else(|| {
                        bad(&format!("set {name}: element {elem}: field {i} is not an address"))
                    })
                };
                let port =
                    |i: usize| -> Result<u16, NetLockError> {
                        parts.get(i).and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).ok_or_else(
                            || bad(&format!("set {name}: element {elem}: field {i} is not a port")),
                        )
                    };
                if name.starts_with("bank_ports") {
                    state.bank_ports.push((ip(0)?, port(1)?));
                } else if name.starts_with("open_ports") {
                    state.open_ports.push((ip(0)?, port(1)?));
                } else if name.starts_with("closing_ports") {
                    state.closing_ports.push((ip(0)?, port(1)?));
                } else if name.starts_with("sessions") {
                    state.sessions.push(SessionTuple {
                        local: SocketAddr::new(ip(0)?, port(1)?),
                        peer: SocketAddr::new(ip(2)?, port(3)?),
                    });
                }
            }
        } else if let Some(rule) = item.get("rule") {
            let Some(comment) = rule.get("comment").and_then(Value::as_str) else { continue };
            let packets = rule
                .get("expr")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|e| e.get("counter")?.get("packets")?.as_u64())
                .unwrap_or(0);
            *state.dropped.entry(comment.to_owned()).or_default() += packets;
        }
    }
    state.bank_ports.sort();
    state.open_ports.sort();
    state.closing_ports.sort();
    state.sessions.sort();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(local: &str, peer: &str) -> SessionTuple {
        SessionTuple { local: local.parse().unwrap(), peer: peer.parse().unwrap() }
    }

    #[test]
    fn sessions_go_to_the_set_of_their_family_in_one_statement_each() {
        let mut changes = SetChanges::default();
        changes
            .add_sessions(&[
                s("10.0.0.1:6001", "10.9.0.1:40000"),
                s("[2001:db8::1]:6001", "[2001:db8::9]:5"),
                s("10.0.0.1:6001", "10.9.0.2:1"),
            ])
            .unwrap();
        assert_eq!(
            changes.to_script(),
            "add element inet pups_lock sessions4 { 10.0.0.1 . 6001 . 10.9.0.1 . 40000, 10.0.0.1 . 6001 . 10.9.0.2 . 1 }\n\
             add element inet pups_lock sessions6 { 2001:db8::1 . 6001 . 2001:db8::9 . 5 }\n"
        );
        let mixed = s("10.0.0.1:6001", "[2001:db8::9]:5");
        assert!(matches!(
            SetChanges::default().add_sessions(&[mixed]),
            Err(NetLockError::MixedFamily(m)) if m == mixed
        ));
    }

    #[test]
    fn netlink_keys_are_the_fields_in_network_order_each_padded_to_four_bytes() {
        let v4 = Element::Session(s("10.0.0.1:6001", "10.9.0.1:40000")).key();
        assert_eq!(v4.as_bytes(), &[10, 0, 0, 1, 0x17, 0x71, 0, 0, 10, 9, 0, 1, 0x9c, 0x40, 0, 0]);
        let port6 = Element::Port("2001:db8::1".parse().unwrap(), 6001).key();
        assert_eq!(port6.as_bytes().len(), 20);
        assert_eq!(&port6.as_bytes()[16..], &[0x17, 0x71, 0, 0]);
    }

    #[test]
    fn unlocking_adds_then_deletes_so_an_absent_session_is_no_error() {
        let changes = SetChanges::unlock_sessions(&[s("10.0.0.1:6001", "10.9.0.1:40000")]).unwrap();
        assert_eq!(changes.describe(), "add 1 to sessions4, delete 1 from sessions4");
        assert_eq!(
            changes.to_script(),
            "add element inet pups_lock sessions4 { 10.0.0.1 . 6001 . 10.9.0.1 . 40000 }\n\
             delete element inet pups_lock sessions4 { 10.0.0.1 . 6001 . 10.9.0.1 . 40000 }\n"
        );
    }

    #[test]
    fn the_ruleset_only_drops() {
        let rules = ruleset(false);
        assert!(!rules.contains("reject") && rules.matches(" drop ").count() == 12, "{rules}");
        // Closing lock, open exception, standing lock: in this order both ways.
        for dir in ["daddr . tcp dport", "saddr . tcp sport"] {
            let at = |set: &str| rules.find(&format!("ip {dir} @{set}")).unwrap();
            assert!(
                at("closing_ports4") < at("open_ports4") && at("open_ports4") < at("bank_ports4"),
                "{rules}"
            );
        }
        assert!(rules.contains("meta mark 0xc114 accept"));
        assert!(!rules.contains("forward"), "{rules}");
    }

    #[test]
    fn in_hold_mode_session_packets_are_held_and_bank_port_packets_held_or_forwarded() {
        let rules = ruleset(true);
        assert!(!rules.contains("reject"), "{rules}");
        // Outbound still drops (6 rules); only the forward chain's catch-all drops besides.
        assert_eq!(rules.matches(" drop ").count(), 7, "{rules}");
        // Bank ports (closing and standing lock): held when the VIP is here,
        // forwarded when not.
        assert_eq!(rules.matches("fib daddr type local meta mark set 0xc115").count(), 4, "{rules}");
        assert_eq!(rules.matches("meta mark set 0xc116 counter accept").count(), 4, "{rules}");
        // A locked session's packets: always held, and matched first.
        assert_eq!(rules.matches("@sessions4 meta mark set 0xc115 counter accept").count(), 1, "{rules}");
        assert_eq!(rules.matches("@sessions6 meta mark set 0xc115 counter accept").count(), 1, "{rules}");
        assert!(rules.find("@sessions4").unwrap() < rules.find("@bank_ports4 fib").unwrap(), "{rules}");
        assert!(rules.contains("hook forward"), "{rules}");
    }

    #[test]
    fn a_listing_gives_elements_and_per_rule_counters() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"set": {"name": "sessions4", "elem": [{"concat": ["10.0.0.1", 6001, "10.0.0.2", 40000]}]}},
          {"set": {"name": "bank_ports6", "elem": [{"concat": ["2001:db8::10", 6001]}]}},
          {"rule": {"comment": "session-in", "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
          {"rule": {"comment": "session-in", "expr": [{"counter": {"packets": 2, "bytes": 160}}, {"drop": null}]}},
          {"rule": {"expr": [{"accept": null}]}}]}"#;
        let state = parse_listing(json).unwrap();
        assert_eq!(state.sessions, [s("10.0.0.1:6001", "10.0.0.2:40000")]);
        assert_eq!(state.bank_ports, [("2001:db8::10".parse().unwrap(), 6001)]);
        assert_eq!(state.dropped.get("session-in"), Some(&5));
        assert!(matches!(parse_listing("{}"), Err(NetLockError::Listing(_))));
        let bad = r#"{"nftables": [{"set": {"name": "sessions4", "elem": [{"concat": ["x", 1, "10.0.0.2", 2]}]}}]}"#;
        assert!(matches!(parse_listing(bad), Err(NetLockError::Listing(_))));
    }
}
