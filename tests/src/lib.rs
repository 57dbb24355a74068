//! Helpers for the end-to-end suites in `tests/tests/`: a whole single-appliance
//! lab (two FO node simulators, `pups`, `mups`) started in-process on loopback,
//! with real sockets between every piece.
//!
//! # Layout
//!
//! - [`Lab`]: starts and stops the pieces ([`LabOptions`] for the knobs);
//!   [`LabBank`] describes one bank; [`default_banks`] (four hand-written ones) and
//!   [`generated_banks`] (any number, the same four profiles in turn).
//! - [`Lab::switch`]: an FO switchover job through the router, awaited to its end.
//! - [`http`]: plain HTTP/1.1 to the management listener, with the bootstrap token
//!   [`API_TOKEN`] (an admin bearer token). A lab started with [`LabOptions::tls`] speaks
//!   HTTPS instead; [`Lab::console_url`] is where a browser goes.
//! - [`pair`]: the appliance pair in network namespaces, from the real binaries
//!   (root only): flow F5's topology.
#![forbid(unsafe_code)]

pub mod pair;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proto::config::ApplianceConfig;
use sim::fo_node::{self, FoNodeConfig, FoNodeHandle};

/// The lab's API bearer token: `[mups] api_token`, the admin bootstrap token.
pub const API_TOKEN: &str = "e2e-token";

/// An HTTP/1.1 request to `mups`'s management listener: (status, body).
pub async fn http(
    lab: &Lab,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(lab.mups.http_addr).await.expect("connect");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: e2e\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// One bank of the lab.
#[derive(Debug, Clone)]
pub struct LabBank {
    /// Bank id.
    pub id: String,
    /// Length header name.
    pub framing: &'static str,
    /// TPDU the bank sends, as hex, if its framing has one.
    pub tpdu: Option<&'static str>,
    /// Built-in layout.
    pub layout: &'static str,
    /// `A` or `B`.
    pub active: &'static str,
    /// FO-originated requests per second from the active node.
    pub originate_rate: f64,
}

/// The four bank profiles of [`default_banks`]: (framing, TPDU, layout).
const PROFILES: [(&str, Option<&str>, &str); 4] = [
    ("u16be", None, "iso87-binary"),
    ("ascii4", Some("6000010000"), "iso87-ascii"),
    ("bcd2", None, "iso87-bcd"),
    ("u16be-pad2", None, "iso87-ebcdic"),
];

/// `n` banks `bank-00`, `bank-01`, … (two digits up to 100 banks), all active on
/// node A, cycling through the framings and layouts of [`default_banks`], each
/// originating `originate_rate` requests per second from its active node.
pub fn generated_banks(n: usize, originate_rate: f64) -> Vec<LabBank> {
    let width = n.saturating_sub(1).to_string().len().max(2);
    (0..n)
        .map(|i| {
            let (framing, tpdu, layout) = PROFILES[i % PROFILES.len()];
            LabBank { id: format!("bank-{i:0width$}"), framing, tpdu, layout, active: "A", originate_rate }
        })
        .collect()
}

/// The lab's banks: every built-in layout, several framings, both nodes.
pub fn default_banks() -> Vec<LabBank> {
    vec![
        LabBank {
            id: "bank-bin".into(),
            framing: "u16be",
            tpdu: None,
            layout: "iso87-binary",
            active: "A",
            originate_rate: 20.0,
        },
        LabBank {
            id: "bank-ascii".into(),
            framing: "ascii4",
            tpdu: Some("6000010000"),
            layout: "iso87-ascii",
            active: "B",
            originate_rate: 0.0,
        },
        LabBank {
            id: "bank-bcd".into(),
            framing: "bcd2",
            tpdu: None,
            layout: "iso87-bcd",
            active: "A",
            originate_rate: 20.0,
        },
        LabBank {
            id: "bank-ebcdic".into(),
            framing: "u16be-pad2",
            tpdu: None,
            layout: "iso87-ebcdic",
            active: "B",
            originate_rate: 10.0,
        },
    ]
}

/// A bank simulator aimed at one of the lab's banks, with its framing and layout;
/// tests adjust the load fields.
pub fn bank_sim_config(lab: &Lab, bank: &LabBank, sessions: u32, rate: f64) -> sim::bank::BankSimConfig {
    sim::bank::BankSimConfig {
        target: lab.bank_addr(&bank.id).to_string(),
        sessions,
        framing: bank.framing.parse().expect("lab framing names are valid"),
        tpdu: bank.tpdu.map(str::to_owned),
        layout: bank.layout.to_owned(),
        rate,
        pipeline: 4,
        ..sim::bank::BankSimConfig::default()
    }
}

/// Knobs of a [`Lab`]; [`Default`] is what [`Lab::start`] uses.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Extra `[mups]` lines (e.g. `auto_failback = true`).
    pub mups: String,
    /// Extra lines for every `[[bank]]` (e.g. `on_node_loss = "decline"`).
    pub bank: String,
    /// Keep routes, users and the audit log in this lab's state directory (`[mups] state_dir`).
    pub state_dir: bool,
    /// Serve the management API over HTTPS with a self-signed certificate for `localhost`
    /// and `127.0.0.1` ([`http`] then cannot reach it; browsers can).
    pub tls: bool,
    /// Each bank's reserve node also has the bank's origination entry: it
    /// originates requests to the bank once a switchover activates it there (a node
    /// originates nothing to a bank it is not active for).
    pub originate_on_reserve: bool,
    /// `request_timeout_ms` of every bank (both directions).
    pub request_timeout_ms: u64,
    /// The nodes start with the `pause_origination` hook on: nothing is originated
    /// until the test resumes it ([`FoNodeHandle::pause_origination`]), e.g. once
    /// the banks are connected and signed on.
    pub pause_origination: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            mups: String::new(),
            bank: String::new(),
            state_dir: false,
            tls: false,
            originate_on_reserve: false,
            request_timeout_ms: 10_000,
            pause_origination: false,
        }
    }
}

/// A running single-appliance lab.
pub struct Lab {
    /// The FO node simulators, `A` then `B`.
    pub nodes: Vec<FoNodeHandle>,
    /// `pups`.
    pub pups: pups::Pups,
    /// `mups`.
    pub mups: mups::runtime::Mups,
    /// The banks.
    pub banks: Vec<LabBank>,
    /// The configuration both processes read.
    pub config: Arc<ApplianceConfig>,
    node_configs: Vec<FoNodeConfig>,
    dir: PathBuf,
}

/// The FO node simulator configuration of node `id` for `banks`.
pub fn node_config(id: &str, banks: &[LabBank]) -> FoNodeConfig {
    let mut cfg =
        FoNodeConfig { node_id: id.into(), listen: "127.0.0.1:0".parse().unwrap(), ..Default::default() };
    for b in banks {
        cfg.banks.insert(b.id.clone(), fo_node::config::BankConfig::new(b.layout));
        if b.active == id && b.originate_rate > 0.0 {
            cfg.originate.push(fo_node::config::OriginateConfig::new(&b.id, b.originate_rate));
        }
    }
    cfg
}

impl Lab {
    /// Starts everything and waits until `pups` is attached and both nodes are up.
    pub async fn start(name: &str, banks: Vec<LabBank>) -> Self {
        Self::start_with(name, banks, LabOptions::default()).await
    }

    /// [`Lab::start`] with options. Each node starts active for the banks whose
    /// active node it is, inactive for the others.
    pub async fn start_with(name: &str, banks: Vec<LabBank>, options: LabOptions) -> Self {
        let dir = std::env::temp_dir().join(format!("e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut nodes = Vec::new();
        let mut node_configs = Vec::new();
        for id in ["A", "B"] {
            let mut cfg = FoNodeConfig {
                node_id: id.into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            };
            cfg.hooks.pause_origination = options.pause_origination;
            for b in &banks {
                let mut bank = fo_node::config::BankConfig::new(b.layout);
                bank.active = b.active == id;
                cfg.banks.insert(b.id.clone(), bank);
                if (b.active == id || options.originate_on_reserve) && b.originate_rate > 0.0 {
                    cfg.originate.push(fo_node::config::OriginateConfig::new(&b.id, b.originate_rate));
                }
            }
            let node = fo_node::start(cfg.clone()).await.expect("FO node simulator starts");
            cfg.listen = node.local_addr();
            node_configs.push(cfg);
            nodes.push(node);
        }
        let toml = config_toml(&dir, &nodes, &banks, &options);
        let config = Arc::new(ApplianceConfig::from_toml_str(&toml).expect("lab config"));
        let pups = pups::Pups::start(Arc::clone(&config)).await.expect("pups starts");
        let mups = mups::runtime::start(Arc::clone(&config), Some("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("mups starts");
        let lab = Self { nodes, pups, mups, banks, config, node_configs, dir };
        lab.wait_until("pups attached and both nodes up", |s| {
            s.pups_attached && s.nodes.iter().all(|n| n.up)
        })
        .await;
        lab
    }

    /// The state directory, if the lab has one ([`LabOptions::state_dir`]).
    pub fn state_dir(&self) -> Option<PathBuf> {
        self.config.mups.state_dir.clone()
    }

    /// The console's address.
    pub fn console_url(&self) -> String {
        let scheme = if self.mups.tls { "https" } else { "http" };
        format!("{scheme}://{}/", self.mups.http_addr)
    }

    /// Starts a fresh simulator for node `index` (0 = `A`) on the address it had, as
    /// an operator restarting a crashed node: same banks and origination entries,
    /// counters from zero, and inactive for every bank (it serves nothing until a
    /// switchover activates it), no hook in force. Returns the old handle (its
    /// counters stay readable). Kill the old one first ([`FoNodeHandle::die`]), or
    /// the address is taken.
    pub async fn restart_node(&mut self, index: usize) -> FoNodeHandle {
        let mut cfg = self.node_configs[index].clone();
        cfg.hooks = fo_node::Hooks::default();
        for bank in cfg.banks.values_mut() {
            bank.active = false;
        }
        let node = fo_node::start(cfg).await.expect("FO node simulator restarts on its address");
        std::mem::replace(&mut self.nodes[index], node)
    }

    /// A switchover job (also the automatic failover's), as `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: u64) -> Option<mups::switching::Job> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.mups.router.send(mups::driver::Input::Job(id, tx)).await.expect("router runs");
        rx.await.expect("router answers")
    }

    /// Runs an FO switchover job through the router (as `POST /api/v1/switch`
    /// does) and polls it (every 10 ms, at most 60 s) until it is done.
    pub async fn switch(&self, req: mups::switching::SwitchRequest) -> mups::switching::Job {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.mups.router.send(mups::driver::Input::Switch(req, tx)).await.expect("router runs");
        let id = rx.await.expect("router answers").expect("job accepted");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.job(id).await.expect("job exists");
            if job.state == "done" {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job not done: {job:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Where a bank connects.
    pub fn bank_addr(&self, bank: &str) -> SocketAddr {
        self.pups.bank_addr(bank).expect("bank is configured")
    }

    /// The router's state.
    pub async fn snapshot(&self) -> mups::driver::Snapshot {
        mups::http::snapshot(&self.mups.router).await.expect("router answers")
    }

    /// Waits (at most 20 s) until `pred` holds for the router's state.
    pub async fn wait_until(
        &self,
        what: &str,
        mut pred: impl FnMut(&mups::driver::Snapshot) -> bool,
    ) -> mups::driver::Snapshot {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let snap = self.snapshot().await;
            if pred(&snap) {
                return snap;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {snap:#?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops `mups` and starts it again with the same configuration (bank sessions
    /// stay in `pups`); waits until it is attached and sees both nodes up.
    pub async fn restart_mups(self) -> Self {
        let Self { nodes, pups, mups, banks, config, node_configs, dir } = self;
        mups.stop().await;
        let mups = mups::runtime::start(Arc::clone(&config), Some("127.0.0.1:0".parse().unwrap()))
            .await
            .expect("mups starts again");
        let lab = Self { nodes, pups, mups, banks, config, node_configs, dir };
        lab.wait_until("pups attached again and nodes up", |s| {
            s.pups_attached && s.nodes.iter().filter(|n| n.up).count() >= 1
        })
        .await;
        lab
    }

    /// Starts a new simulator for node `index` (after it died) on the same port, so
    /// `mups` reconnects to it.
    pub async fn revive_node(&mut self, index: usize) {
        let id = ["A", "B"][index];
        let mut cfg = node_config(id, &self.banks);
        cfg.listen = self.config.fo_nodes[index].address;
        // The old listener's port may linger briefly after the kill.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match fo_node::start(cfg.clone()).await {
                Ok(node) => {
                    self.nodes[index] = node;
                    return;
                }
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "node {id} cannot restart: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Stops everything and removes the temporary files.
    pub async fn stop(self) {
        self.mups.stop().await;
        self.pups.shutdown().await;
        for node in self.nodes {
            node.die().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_toml(
    dir: &std::path::Path,
    nodes: &[FoNodeHandle],
    banks: &[LabBank],
    options: &LabOptions,
) -> String {
    let state_dir = if options.state_dir {
        format!("state_dir = \"{}\"\n", dir.join("state").display())
    } else {
        String::new()
    };
    let tls = if options.tls {
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let files = mups::tls::self_signed(&dir.join("tls"), &hosts).expect("self-signed certificate");
        format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", files.cert.display(), files.key.display())
    } else {
        String::new()
    };
    let mut out = format!(
        "[appliance]\nid = \"e2e\"\nlocal_link = \"{}\"\n\n[mups]\nnode_heartbeat_interval_ms = 100\napi_token = \"{API_TOKEN}\"\n{state_dir}{tls}{}\n\n",
        dir.join("pups.sock").display(),
        options.mups,
    );
    for node in nodes {
        out += &format!("[[fo_node]]\nid = \"{}\"\naddress = \"{}\"\n\n", node.node_id(), node.local_addr());
    }
    for b in banks {
        let reserve = if b.active == "A" { "B" } else { "A" };
        let tpdu = b.tpdu.is_some();
        out += &format!(
            "[[bank]]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\nmax_sessions = 16\n\
             framing = {{ length = \"{framing}\", tpdu = {tpdu} }}\nlayout = \"{layout}\"\n\
             active_node = \"{active}\"\nreserve_node = \"{reserve}\"\nrequest_timeout_ms = {timeout}\n{extra}\n\n",
            extra = options.bank,
            id = b.id,
            framing = b.framing,
            layout = b.layout,
            active = b.active,
            timeout = options.request_timeout_ms,
        );
    }
    out
}

/// Field-order-independent map of counters, for failure messages.
pub fn counters_by_bank(snap: &mups::driver::Snapshot) -> BTreeMap<String, proto::router::BankCounters> {
    snap.banks.iter().map(|b| (b.id.clone(), b.counters.clone())).collect()
}
