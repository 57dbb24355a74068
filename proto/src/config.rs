//! The appliance configuration, shared by `pups` and `mups`: one TOML file that
//! names the FO nodes, the banks (how they connect, how they frame and lay out
//! their messages, where they are routed) and each process's own settings.
//!
//! Parsing is pure ([`ApplianceConfig::from_toml_str`]); validation reports every
//! problem at once, each with its key path (`bank[2].framing.length: …`), before
//! anything starts. Unknown keys are errors: a typo must not silently change
//! behaviour.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::frame::FrameConfig;
use crate::iso8583::{Layout, MatchKeyConfig, NetMgmtCodes, RawFieldSpec};
use crate::router::{BadMessagePolicy, BankSpec, NodeId, NodeLossPolicy, RouterConfig};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceConfig {
    /// This appliance.
    pub appliance: ApplianceSection,
    /// `pups` settings.
    #[serde(default)]
    pub pups: PupsSection,
    /// `mups` settings.
    #[serde(default)]
    pub mups: MupsSection,
    /// FO nodes, in order; banks name them by id.
    #[serde(rename = "fo_node", default)]
    pub fo_nodes: Vec<FoNodeConfig>,
    /// Banks.
    #[serde(rename = "bank", default)]
    pub banks: Vec<BankConfig>,
    /// The VRRP instance (keepalived) this appliance shares with its twin; absent on a
    /// single appliance.
    #[serde(default)]
    pub vrrp: Option<VrrpSection>,
}

/// `[appliance]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplianceSection {
    /// This appliance's name (logs, API).
    pub id: String,
    /// The local link's Unix socket: `pups` listens, `mups` connects.
    pub local_link: PathBuf,
    /// Where this appliance's `mups` listens for its twin (the peer link), on the
    /// appliances' own network. Without it (and `peer_address`) there is no twin to
    /// replicate to or hand sessions over to.
    #[serde(default)]
    pub peer_listen: Option<SocketAddr>,
    /// Where the twin's `mups` listens for us.
    #[serde(default)]
    pub peer_address: Option<SocketAddr>,
}

/// `[pups]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PupsSection {
    /// Heartbeat interval on the local link's control channel, milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Missed heartbeats after which `mups` is considered gone (bank sessions stay
    /// open; reading from them pauses until `mups` is back).
    pub heartbeat_misses: u32,
    /// Messages queued per bank session towards `mups` before reading pauses.
    pub session_queue: usize,
    /// Where `pups` serves `/metrics` and `/healthz` (management address), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Runtime threads: 0 = one per core, 1 = a single thread (no cross-thread wake-ups).
    pub worker_threads: usize,
    /// Appliance pair: the NFQUEUE number on which the network lock holds bank
    /// packets during a switchover instead of dropping them (needs `iptables` with
    /// the NFQUEUE target; turns IPv4 forwarding on for packets whose VIP has moved).
    /// Unset: they are dropped and the banks resend them on their own timers.
    pub hold_queue: Option<u16>,
}

impl Default for PupsSection {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 200,
            heartbeat_misses: 5,
            session_queue: 256,
            metrics_listen: None,
            worker_threads: 0,
            hold_queue: None,
        }
    }
}

/// `[mups]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MupsSection {
    /// Management HTTP listener (metrics, health, API). Never the bank VIP.
    pub http_listen: SocketAddr,
    /// Heartbeat interval towards FO nodes, milliseconds.
    pub node_heartbeat_interval_ms: u64,
    /// Missed heartbeats after which a node is down.
    pub node_heartbeat_misses: u32,
    /// FO node connect timeout, milliseconds.
    pub node_connect_timeout_ms: u64,
    /// Reconnect backoff: first delay and cap, milliseconds.
    pub reconnect_min_ms: u64,
    /// Reconnect backoff cap, milliseconds.
    pub reconnect_max_ms: u64,
    /// How long a timed-out request is remembered to recognise its late response, seconds.
    pub late_window_s: u64,
    /// Bearer token every `/api` request must carry; `None` refuses every `/api` request.
    pub api_token: Option<String>,
    /// Runtime threads: 0 = one per core, 1 = a single thread (no cross-thread wake-ups).
    pub worker_threads: usize,
    /// Messages held per bank during an FO switchover before it is aborted.
    pub hold_limit: usize,
    /// Longest wait for a node's answer to a switchover command, milliseconds.
    pub switch_command_timeout_ms: u64,
    /// Longest wait for a bank's requests in flight to reach zero in drain mode, milliseconds.
    pub drain_timeout_ms: u64,
    /// When a node goes down, move every bank active on it to its reserve (if up).
    pub auto_failover: bool,
    /// Move banks back to the node the operator chose for them (their admin
    /// intent) once it is stable again. Off by default: a failback is a second
    /// interruption, and operators usually want to choose its moment.
    pub auto_failback: bool,
    /// How long a node must have been up, without a break, before banks fail back to it, seconds.
    pub failback_after_s: u64,
    /// Window over which a node's down events are counted, seconds.
    pub flap_window_s: u64,
    /// Down events within the window that make a node flapping (no failback to it; reported).
    pub flap_max_downs: usize,
    /// Where routes, admin intent and maintenance flags are kept across restarts
    /// (`routes.json`, written atomically). `None`: nothing is kept; the
    /// configuration's `active_node` applies at every start.
    pub state_dir: Option<PathBuf>,
    /// PEM certificate chain of the management listener: with `tls_key`, it serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback `http_listen`. Off by default: passwords, session
    /// cookies and tokens would cross the network in clear. For a TLS-terminating proxy in
    /// front, or an isolated test network.
    pub allow_plain_http: bool,
}

impl Default for MupsSection {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            node_heartbeat_interval_ms: 100,
            node_heartbeat_misses: 3,
            node_connect_timeout_ms: 1000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2000,
            late_window_s: 120,
            api_token: None,
            worker_threads: 0,
            hold_limit: 10_000,
            switch_command_timeout_ms: 500,
            drain_timeout_ms: 10_000,
            auto_failover: true,
            auto_failback: false,
            failback_after_s: 30,
            flap_window_s: 300,
            flap_max_downs: 3,
            state_dir: None,
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
        }
    }
}

/// `[vrrp]`: the keepalived instance that moves the bank VIP between the two
/// appliances. `mups keepalived render` turns it into `keepalived.conf`.
///
/// The values end up unquoted in keepalived's configuration language, so the
/// validation below is also what keeps the rendered file well-formed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSection {
    /// The VRRP instance name (keepalived `vrrp_instance`), also the name in notify
    /// FIFO lines.
    #[serde(default = "default_vrrp_instance")]
    pub instance: String,
    /// The interface that carries the adverts and the VIPs.
    pub interface: String,
    /// VRRP router id, 1–255, the same on both appliances and unique on the LAN.
    pub virtual_router_id: u8,
    /// The bank VIPs with their prefix (`192.0.2.10/24`), all of one address family.
    pub vips: Vec<IpNet>,
    /// This appliance's own address on `interface`, the source of its adverts.
    pub unicast_src_ip: IpAddr,
    /// The twin's address(es): adverts go there by unicast, and only adverts from
    /// them are accepted.
    pub unicast_peers: Vec<IpAddr>,
    /// VRRP priority, 1–254. With `nopreempt` it only decides who wins when both
    /// start together; but it also sets how long the backup waits after the
    /// master's priority-0 advert before it takes the VIP (VRRPv3 skew time,
    /// (256 − priority) × advert interval / 256): 61 ms at 100, 2.3 ms at 250. That
    /// wait is part of every planned switchover's freeze, so keep it high on both.
    #[serde(default = "default_vrrp_priority")]
    pub priority: u8,
    /// Advert interval, milliseconds: a multiple of 10 (VRRPv3 counts centiseconds),
    /// 10–40950. The backup declares the master dead after about 3.6 intervals.
    #[serde(default = "default_advert_int_ms")]
    pub advert_int_ms: u32,
    /// Directory for the VRRP runtime files; `track_file` and `notify_fifo` default
    /// to files in it.
    #[serde(default = "default_vrrp_state_dir")]
    pub state_dir: PathBuf,
    /// keepalived `track_file` with weight 0: 0 in it = healthy, anything else puts
    /// the instance in FAULT (a planned handover writes it on the master). Default
    /// `<state_dir>/vrrp.track`.
    #[serde(default)]
    pub track_file: Option<PathBuf>,
    /// The FIFO keepalived writes state changes to and our daemons read. Default
    /// `<state_dir>/vrrp.fifo`.
    #[serde(default)]
    pub notify_fifo: Option<PathBuf>,
}

fn default_vrrp_instance() -> String {
    "PUPS".into()
}

fn default_vrrp_priority() -> u8 {
    250
}

fn default_advert_int_ms() -> u32 {
    100
}

fn default_vrrp_state_dir() -> PathBuf {
    PathBuf::from("/run/mups")
}

impl VrrpSection {
    /// The track file keepalived watches.
    pub fn track_file_path(&self) -> PathBuf {
        self.track_file.clone().unwrap_or_else(|| self.state_dir.join("vrrp.track"))
    }

    /// The notify FIFO keepalived writes to.
    pub fn notify_fifo_path(&self) -> PathBuf {
        self.notify_fifo.clone().unwrap_or_else(|| self.state_dir.join("vrrp.fifo"))
    }

    /// The advert interval.
    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(self.advert_int_ms.into())
    }

    /// Every problem in this section, keys relative to it (`interface`, `vips[1]`).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |path: &str, message: String| issues.push(ConfigIssue { path: path.into(), message });
        if !is_config_word(&self.instance, 64) {
            issue("instance", format!("{:?} must be 1-64 of A-Z a-z 0-9 _ - .", self.instance));
        }
        // IFNAMSIZ - 1; '/' and ':' are refused by the kernel or mean an alias.
        if !is_config_word(&self.interface, 15) {
            issue(
                "interface",
                format!("{:?} is not an interface name (1-15 of A-Z a-z 0-9 _ - .)", self.interface),
            );
        }
        if self.virtual_router_id == 0 {
            issue("virtual_router_id", "must be 1-255".into());
        }
        if !(1..=254).contains(&self.priority) {
            issue("priority", "must be 1-254 (255 is the address owner, which trackers cannot move)".into());
        }
        if self.advert_int_ms % 10 != 0 || !(10..=40_950).contains(&self.advert_int_ms) {
            issue("advert_int_ms", format!("{} must be a multiple of 10 in 10-40950", self.advert_int_ms));
        }
        let v4 = self.unicast_src_ip.is_ipv4();
        let family =
            |ip: IpAddr| if ip.is_ipv4() == v4 { None } else { Some("not the family of unicast_src_ip") };
        if self.vips.is_empty() {
            issue("vips", "at least one VIP is needed".into());
        }
        let mut seen = HashSet::new();
        for (i, vip) in self.vips.iter().enumerate() {
            if let Some(m) = family(vip.addr()) {
                issue(&format!("vips[{i}]"), format!("{vip}: {m}"));
            } else if !seen.insert(vip.addr()) {
                issue(&format!("vips[{i}]"), format!("{vip}: listed twice"));
            } else if vip.addr() == self.unicast_src_ip {
                issue(
                    &format!("vips[{i}]"),
                    format!("{vip}: is unicast_src_ip, the appliance's own address"),
                );
            }
        }
        if self.unicast_src_ip.is_unspecified() || self.unicast_src_ip.is_multicast() {
            issue("unicast_src_ip", format!("{} is not a unicast address", self.unicast_src_ip));
        }
        if self.unicast_peers.is_empty() {
            issue("unicast_peers", "at least the twin appliance's address is needed".into());
        }
        for (i, peer) in self.unicast_peers.iter().enumerate() {
            let at = format!("unicast_peers[{i}]");
            if let Some(m) = family(*peer) {
                issue(&at, format!("{peer}: {m}"));
            } else if *peer == self.unicast_src_ip {
                issue(&at, format!("{peer}: is unicast_src_ip; the peer is the twin appliance"));
            } else if peer.is_unspecified() || peer.is_multicast() {
                issue(&at, format!("{peer} is not a unicast address"));
            }
        }
        for (key, path) in [
            ("state_dir", Some(&self.state_dir)),
            ("track_file", self.track_file.as_ref()),
            ("notify_fifo", self.notify_fifo.as_ref()),
        ] {
            if let Some(m) = path.and_then(|p| config_path_problem(p).map(|m| (p, m))) {
                issue(key, format!("{}: {}", m.0.display(), m.1));
            }
        }
        if self.track_file_path() == self.notify_fifo_path() {
            issue("notify_fifo", "is the same file as track_file".into());
        }
        issues
    }
}

/// A bare word in keepalived's configuration language (names, interfaces).
fn is_config_word(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Why a path cannot be written into keepalived.conf (quoted), if it cannot.
fn config_path_problem(p: &std::path::Path) -> Option<&'static str> {
    let Some(s) = p.to_str() else { return Some("must be UTF-8") };
    if !p.is_absolute() {
        Some("must be absolute (keepalived does not run in our working directory)")
    } else if s.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '#' | '!')) {
        // keepalived's tokenizer has no escapes; '#' and '!' start comments.
        Some("must not contain white space, quotes, backslashes, '#' or '!'")
    } else {
        None
    }
}

/// `[[fo_node]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FoNodeConfig {
    /// `A`, `B`, …
    pub id: String,
    /// Where the node listens for `mups`.
    pub address: SocketAddr,
}

/// What `pups` does with a frame that breaks the bank's framing profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadFramePolicy {
    /// Skip the frame when its extent is known (oversize, bad trailer), count and log
    /// it; close the session only when the framing itself is lost (unreadable length).
    Drop,
    /// Close the session on any framing error.
    #[default]
    Close,
}

/// What `pups` does with a zero-length (keep-alive) frame from the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KeepAlivePolicy {
    /// Count it and do nothing.
    #[default]
    Ignore,
    /// Answer with a keep-alive, at most `max_keepalives_in_a_row` times without
    /// other traffic in between (guards against echo storms between two echoing ends).
    Echo,
}

/// `[[bank]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankConfig {
    /// Stable id (API, metrics, FO link).
    pub id: String,
    /// Human name.
    #[serde(default)]
    pub name: String,
    /// Where the bank connects (VIP:port). Banks may share a listener; the source
    /// address then tells them apart (first bank in file order whose `allow` matches).
    pub listen: SocketAddr,
    /// Source networks allowed to connect as this bank.
    pub allow: Vec<IpNet>,
    /// Most sessions at once; further connections are closed and counted.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Framing profile.
    pub framing: FrameConfig,
    /// Built-in layout name.
    pub layout: String,
    /// Single-field overrides on top of `layout`.
    #[serde(default)]
    pub layout_overrides: BTreeMap<String, RawFieldSpec>,
    /// The FO node the bank is routed to.
    pub active_node: String,
    /// Its reserve node.
    #[serde(default)]
    pub reserve_node: Option<String>,
    /// Request timeout, milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Close a session after this many seconds without a byte from the bank; 0 = never.
    #[serde(default)]
    pub idle_timeout_s: u64,
    /// Framing errors.
    #[serde(default)]
    pub bad_frame: BadFramePolicy,
    /// Messages that do not decode under the layout.
    #[serde(default)]
    pub bad_message: BadMessagePolicy,
    /// Keep-alive frames.
    #[serde(default)]
    pub keepalive: KeepAlivePolicy,
    /// Echo-storm guard for `keepalive = "echo"`.
    #[serde(default = "default_max_keepalives")]
    pub max_keepalives_in_a_row: u32,
    /// Matching key fields.
    #[serde(default)]
    pub match_key: MatchKeyConfig,
    /// Network-management codes.
    #[serde(default)]
    pub netmgmt: NetMgmtCodes,
    /// Requests whose node is lost: `timeout` (the bank's timer runs out) or
    /// `decline` (answered at once with `decline_code`).
    #[serde(default)]
    pub on_node_loss: NodeLossKind,
    /// DE39 of the synthetic decline, for `on_node_loss = "decline"`.
    #[serde(default = "default_decline_code")]
    pub decline_code: String,
}

/// `on_node_loss`: see [`NodeLossPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NodeLossKind {
    /// Let the bank's requests time out.
    #[default]
    Timeout,
    /// Answer them with a decline.
    Decline,
}

fn default_decline_code() -> String {
    "91".into()
}

fn default_max_sessions() -> usize {
    4
}

fn default_request_timeout_ms() -> u64 {
    30_000
}

fn default_max_keepalives() -> u32 {
    3
}

impl BankConfig {
    /// Whether `ip` may connect as this bank.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The node-loss policy.
    pub fn node_loss_policy(&self) -> NodeLossPolicy {
        match self.on_node_loss {
            NodeLossKind::Timeout => NodeLossPolicy::Timeout,
            NodeLossKind::Decline => NodeLossPolicy::Decline { code: self.decline_code.clone() },
        }
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The bank's layout: the built-in with the overrides applied.
    pub fn build_layout(&self) -> Result<Layout, Vec<String>> {
        let base = Layout::builtin(&self.layout).map_err(|e| vec![e.to_string()])?;
        if self.layout_overrides.is_empty() {
            return Ok(base.clone());
        }
        base.with_overrides(&format!("{}+{}", self.layout, self.id), &self.layout_overrides)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }
}

/// One configuration problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Key path, e.g. `bank[2].framing.length`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A configuration that cannot be used: every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", issues.len(), issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems.
    pub issues: Vec<ConfigIssue>,
}

impl ApplianceConfig {
    /// Parses and validates a configuration file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| ConfigError {
            issues: vec![ConfigIssue { path: "(syntax)".into(), message: e.to_string() }],
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every semantic problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        let mut issue = |path: String, message: String| issues.push(ConfigIssue { path, message });
        if self.fo_nodes.is_empty() {
            issue("fo_node".into(), "at least one FO node is needed".into());
        }
        let mut node_ids = HashSet::new();
        for (i, n) in self.fo_nodes.iter().enumerate() {
            if n.id.is_empty() || !node_ids.insert(n.id.as_str()) {
                issue(format!("fo_node[{i}].id"), format!("{:?} is empty or not unique", n.id));
            }
        }
        if self.mups.node_heartbeat_interval_ms == 0 || self.mups.node_heartbeat_misses == 0 {
            issue("mups.node_heartbeat_interval_ms".into(), "interval and misses must be above 0".into());
        }
        if self.pups.heartbeat_interval_ms == 0 || self.pups.heartbeat_misses == 0 {
            issue("pups.heartbeat_interval_ms".into(), "interval and misses must be above 0".into());
        }
        if self.mups.flap_max_downs == 0 || self.mups.flap_window_s == 0 {
            issue("mups.flap_max_downs".into(), "flap_max_downs and flap_window_s must be above 0".into());
        }
        match (&self.mups.tls_cert, &self.mups.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                issue("mups.tls_cert".into(), "tls_cert and tls_key go together".into());
            }
            (None, None) if !self.mups.http_listen.ip().is_loopback() && !self.mups.allow_plain_http => {
                issue(
                    "mups.http_listen".into(),
                    format!(
                        "{} is not a loopback address: set tls_cert and tls_key (HTTPS), or \
                         allow_plain_http = true behind a TLS-terminating proxy",
                        self.mups.http_listen
                    ),
                );
            }
            _ => {}
        }
        if self.pups.session_queue == 0 {
            issue("pups.session_queue".into(), "must be above 0".into());
        }
        let mut bank_ids = HashSet::new();
        for (i, b) in self.banks.iter().enumerate() {
            let at = |key: &str| format!("bank[{i}].{key}");
            if b.id.is_empty() || !bank_ids.insert(b.id.as_str()) {
                issue(at("id"), format!("{:?} is empty or not unique", b.id));
            }
            if b.allow.is_empty() {
                issue(at("allow"), "no source network allowed: the bank could never connect".into());
            }
            if b.max_sessions == 0 {
                issue(at("max_sessions"), "must be above 0".into());
            }
            if b.framing.max_frame == 0 {
                issue(at("framing.max_frame"), "must be above 0".into());
            }
            if let Err(errors) = b.build_layout() {
                for e in errors {
                    issue(at("layout"), e);
                }
            }
            for node in std::iter::once(&b.active_node).chain(&b.reserve_node) {
                if !node_ids.contains(node.as_str()) {
                    issue(at("active_node"), format!("no fo_node has id {node:?}"));
                }
            }
            if b.on_node_loss == NodeLossKind::Decline {
                if let Ok(layout) = b.build_layout() {
                    if let Err(e) = probe_decline(&layout, &b.decline_code) {
                        issue(at("decline_code"), e);
                    }
                }
            }
            if b.request_timeout_ms == 0 {
                issue(at("request_timeout_ms"), "must be above 0".into());
            }
            if let Err(errors) = b.match_key.validate() {
                for e in errors {
                    issue(at("match_key"), e.to_string());
                }
            }
        }
        if let Some(vrrp) = &self.vrrp {
            for i in vrrp.issues() {
                issue(format!("vrrp.{}", i.path), i.message);
            }
        }
        if issues.is_empty() { Ok(()) } else { Err(ConfigError { issues }) }
    }

    /// When a node is flapping and when banks may fail back to it.
    pub fn flap_policy(&self) -> crate::node_health::FlapPolicy {
        crate::node_health::FlapPolicy {
            window: Duration::from_secs(self.mups.flap_window_s),
            max_downs: self.mups.flap_max_downs,
            failback_after: Duration::from_secs(self.mups.failback_after_s),
        }
    }

    /// The index of an FO node id.
    pub fn node_id(&self, id: &str) -> Option<NodeId> {
        self.fo_nodes.iter().position(|n| n.id == id).map(|i| NodeId(i as u16))
    }

    /// The router's configuration. Call on a validated configuration.
    pub fn router_config(&self) -> RouterConfig {
        RouterConfig {
            nodes: self.fo_nodes.iter().map(|n| n.id.clone()).collect(),
            banks: self
                .banks
                .iter()
                .map(|b| BankSpec {
                    id: b.id.clone(),
                    layout: Arc::new(b.build_layout().expect("validated")),
                    match_key: b.match_key.clone(),
                    netmgmt: b.netmgmt.clone(),
                    request_timeout: b.request_timeout(),
                    active: self.node_id(&b.active_node).expect("validated"),
                    reserve: b.reserve_node.as_deref().and_then(|n| self.node_id(n)),
                    bad_message: b.bad_message,
                    on_node_loss: b.node_loss_policy(),
                })
                .collect(),
            late_window: Duration::from_secs(self.mups.late_window_s),
            hold_limit: self.mups.hold_limit,
        }
    }
}

/// Whether the layout can write a decline with `code` in DE39 (its length and
/// characters), tried on a minimal request so a bad code fails at start, not when
/// a node is lost.
fn probe_decline(layout: &Layout, code: &str) -> Result<(), String> {
    let request = layout.encode_to_vec("0100", [(11, "000001")]).map_err(|e| e.to_string())?;
    let request = crate::iso8583::Message::parse(layout, &request).map_err(|e| e.to_string())?;
    crate::iso8583::respond::build_decline(layout, &request, code, &[])
        .map(drop)
        .map_err(|e| format!("{code:?} cannot be written as DE39: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[appliance]
id = "app-1"
local_link = "/tmp/pups.sock"

[[fo_node]]
id = "A"
address = "127.0.0.1:7001"

[[fo_node]]
id = "B"
address = "127.0.0.1:7002"

[[bank]]
id = "bank-1"
listen = "127.0.0.1:6001"
allow = ["127.0.0.0/8"]
framing = { length = "u16be" }
layout = "iso87-binary"
active_node = "A"
reserve_node = "B"

[[bank]]
id = "bank-2"
listen = "127.0.0.1:6001"
allow = ["10.0.0.0/8", "::1/128"]
framing = { length = "ascii4", tpdu = true, max_frame = 4096 }
layout = "iso87-ascii"
layout_overrides = { "48" = { data_enc = "ascii", len_enc = "ascii", len_type = 3, max_len = 500 } }
active_node = "B"
bad_message = "close"
match_key = { fields = [11, 41, 42] }
"#;

    #[test]
    fn a_good_file_parses_and_builds_the_router_config() {
        let cfg = ApplianceConfig::from_toml_str(GOOD).unwrap();
        assert_eq!(cfg.banks.len(), 2);
        assert!(cfg.banks[0].allows("127.0.0.9".parse().unwrap()));
        assert!(!cfg.banks[0].allows("10.0.0.9".parse().unwrap()));
        assert!(cfg.banks[1].allows("::1".parse().unwrap()));
        assert!(cfg.banks[0].allows("::ffff:127.0.0.1".parse().unwrap()));
        let rc = cfg.router_config();
        assert_eq!(rc.banks[1].active, NodeId(1));
        assert_eq!(rc.banks[1].layout.field(48).unwrap().max_len, 500);
        assert_eq!(cfg.mups.node_heartbeat_interval_ms, 100);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = GOOD
            .replace(r#"active_node = "B""#, r#"active_node = "C""#)
            .replace(r#"allow = ["127.0.0.0/8"]"#, "allow = []")
            .replace("max_len = 500", "max_len = 5000")
            .replace("[11, 41, 42]", "[11, 35]")
            .replace(
                "reserve_node = \"B\"",
                "reserve_node = \"B\"\non_node_loss = \"decline\"\ndecline_code = \"9\"",
            );
        let err = ApplianceConfig::from_toml_str(&bad).unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bank[0].allow",
                "bank[0].decline_code",
                "bank[1].layout",
                "bank[1].active_node",
                "bank[1].match_key"
            ],
            "{err}"
        );
        assert!(err.to_string().contains("no fo_node has id \"C\""));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_syntax_errors() {
        let err = ApplianceConfig::from_toml_str(&GOOD.replace("max_frame = 4096", "max_frmae = 4096"))
            .unwrap_err();
        assert!(err.to_string().contains("max_frmae"), "{err}");
        let err = ApplianceConfig::from_toml_str(&GOOD.replace("u16be", "u17be")).unwrap_err();
        assert!(err.to_string().contains("unknown framing"), "{err}");
    }

    const VRRP: &str = r#"
[vrrp]
interface = "bond0"
virtual_router_id = 51
vips = ["192.0.2.10/24"]
unicast_src_ip = "10.1.0.1"
unicast_peers = ["10.1.0.2"]
"#;

    #[test]
    fn the_vrrp_section_is_optional_and_has_sub_second_defaults() {
        assert!(ApplianceConfig::from_toml_str(GOOD).unwrap().vrrp.is_none());
        let cfg = ApplianceConfig::from_toml_str(&format!("{GOOD}{VRRP}")).unwrap();
        let v = cfg.vrrp.unwrap();
        assert_eq!(v.instance, "PUPS");
        assert_eq!((v.priority, v.advert_int_ms), (250, 100));
        assert_eq!(v.advert_interval(), Duration::from_millis(100));
        assert_eq!(v.track_file_path(), PathBuf::from("/run/mups/vrrp.track"));
        assert_eq!(v.notify_fifo_path(), PathBuf::from("/run/mups/vrrp.fifo"));
    }

    #[test]
    fn every_vrrp_problem_is_reported_with_its_path() {
        let bad = format!("{GOOD}{VRRP}")
            .replace(r#"interface = "bond0""#, r#"interface = "bond0 garp""#)
            .replace("virtual_router_id = 51", "virtual_router_id = 0")
            .replace(
                r#"vips = ["192.0.2.10/24"]"#,
                r#"vips = ["192.0.2.10/24", "2001:db8::10/64", "192.0.2.10/32"]"#,
            )
            .replace(r#"unicast_peers = ["10.1.0.2"]"#, r#"unicast_peers = ["10.1.0.1"]"#)
            + "priority = 255\nadvert_int_ms = 105\ntrack_file = \"run/x\"\nnotify_fifo = \"/run/a\\\"b\"\n";
        let err = ApplianceConfig::from_toml_str(&bad).unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "vrrp.interface",
                "vrrp.virtual_router_id",
                "vrrp.priority",
                "vrrp.advert_int_ms",
                "vrrp.vips[1]",
                "vrrp.vips[2]",
                "vrrp.unicast_peers[0]",
                "vrrp.track_file",
                "vrrp.notify_fifo",
            ],
            "{err}"
        );
        let err = ApplianceConfig::from_toml_str(&format!("{GOOD}{VRRP}").replace("vips = [", "vips = [] #"))
            .unwrap_err();
        assert_eq!(err.issues[0].path, "vrrp.vips", "{err}");
        let err = ApplianceConfig::from_toml_str(&format!("{GOOD}{VRRP}advret_int_ms = 100\n")).unwrap_err();
        assert!(err.to_string().contains("advret_int_ms"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_packaged_example_is_valid() {
        let text = include_str!("../../packaging/examples/appliance.toml");
        super::ApplianceConfig::from_toml_str(text).unwrap();
    }
}
