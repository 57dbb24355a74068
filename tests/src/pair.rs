//! The appliance pair in network namespaces (root only): the real topology of
//! flow F5, built from the real binaries.
//!
//! ```text
//!   <p>-bank (bank simulators) ─┐
//!   <p>-app1 (pups, mups, keepalived) ─┤
//!   <p>-app2 (pups, mups, keepalived) ─┼─ br0 in <p>-sw ── <p>-h (this host: management)
//!   <p>-fo   (FO node simulators A, B) ─┘
//! ```
//!
//! One /24 (`10.213.<subnet>.0`): bank `.10`, app1 `.1`, app2 `.2`, FO nodes `.20`,
//! the VIP `.100`, this host `.254` (so tests and the operator's browser reach the
//! management API and the console). Every process is started with `ip netns exec`
//! and stopped by PID; namespaces, links and files go away in [`PairLab::down`] (and
//! on drop).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One bank of the pair lab.
#[derive(Debug, Clone)]
pub struct PairBank {
    /// Bank id.
    pub id: String,
    /// Framing name.
    pub framing: &'static str,
    /// TPDU the bank sends, hex.
    pub tpdu: Option<&'static str>,
    /// Layout.
    pub layout: &'static str,
    /// `A` or `B`.
    pub active: &'static str,
    /// Port on the VIP.
    pub port: u16,
    /// FO-originated requests per second from its node.
    pub originate_rate: f64,
}

/// The default banks: every built-in layout, several framings, both nodes.
pub fn pair_banks() -> Vec<PairBank> {
    let b = |id: &str, framing, tpdu, layout, active, port, originate_rate| PairBank {
        id: id.into(),
        framing,
        tpdu,
        layout,
        active,
        port,
        originate_rate,
    };
    vec![
        b("bank-001", "u16be", None, "iso87-binary", "A", 16001, 5.0),
        b("bank-002", "ascii4", Some("6000010000"), "iso87-ascii", "B", 16002, 0.0),
        b("bank-003", "bcd2", None, "iso87-bcd", "A", 16003, 5.0),
        b("bank-004", "u16be-pad2", None, "iso87-ebcdic", "B", 16004, 2.0),
    ]
}

/// How to build the lab.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Names start with this (at most 8 characters: interface names are short).
    pub prefix: String,
    /// Third octet of the lab's /24.
    pub subnet: u8,
    /// Where configurations, logs and reports go (created; removed by `down`
    /// unless `keep_dir`).
    pub dir: PathBuf,
    /// Keep `dir` after `down` (the demo lab).
    pub keep_dir: bool,
    /// Where the binaries are (`pups`, `mups`, `fo-sim`, `bank-sim`).
    pub bin_dir: PathBuf,
    /// The banks.
    pub banks: Vec<PairBank>,
    /// The API token (bootstrap admin).
    pub token: String,
    /// Management listener port on each appliance.
    pub http_port: u16,
    /// Creates the console user `admin` (role admin) on both appliances with this
    /// password (users are per appliance; they are not replicated).
    pub admin_password: Option<String>,
    /// `[pups] hold_queue`: the network lock holds bank packets during a
    /// switchover (and forwards them to the twin) instead of dropping them. Off by
    /// default: a held segment the bank has meanwhile resent arrives as an old
    /// duplicate, which the kernel counts as a PAWS drop.
    pub hold_queue: Option<u16>,
}

impl PairOptions {
    /// Defaults for a test: names and subnet from the process id, binaries next to
    /// the running executable (`target/<profile>`).
    pub fn for_test(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let pid = std::process::id();
        // Several labs of one test process (and of several) must not share names or addresses.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            prefix: format!("p{}{n}", pid % 10_000),
            subnet: 20 + ((pid * 7 + n) % 200) as u8,
            dir: std::env::temp_dir().join(format!("pair-{name}-{pid}")),
            // PAIR_LAB_KEEP=1 keeps configurations and logs for a post-mortem.
            keep_dir: std::env::var("PAIR_LAB_KEEP").is_ok_and(|v| v == "1"),
            bin_dir: bin_dir(),
            banks: pair_banks(),
            token: "pair-token".into(),
            http_port: 9100,
            admin_password: None,
            // Tests run the lock in drop mode, whose counters stay clean however
            // loaded the machine is; in hold mode a freeze longer than the bank's
            // RTO (a CPU hog beside the test made keepalived take 600 ms) brings
            // the bank's resent copies to the twin before the held originals, which
            // PAWS then drops as old (harmless duplicates, but counted). The lab and
            // the bench run in hold mode.
            hold_queue: None,
        }
    }
}

/// `target/<profile>` of the running executable (tests run from `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") { dir.parent().expect("profile dir").to_path_buf() } else { dir }
}

/// A process of the lab, stopped by PID.
struct Proc {
    name: String,
    child: Child,
}

/// A running appliance pair.
pub struct PairLab {
    /// Settings it was built with.
    pub opts: PairOptions,
    procs: Vec<Proc>,
    namespaces: Vec<String>,
    host_link: String,
    up: bool,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

impl PairLab {
    /// The namespace of `which` (`bank`, `app1`, `app2`, `fo`, `sw`).
    pub fn ns(&self, which: &str) -> String {
        format!("{}-{which}", self.opts.prefix)
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.opts.subnet, host)
    }

    /// The VIP.
    pub fn vip(&self) -> Ipv4Addr {
        self.addr(100)
    }

    /// Appliance `n`'s (1 or 2) own address.
    pub fn app_addr(&self, n: usize) -> Ipv4Addr {
        self.addr(n as u8)
    }

    /// Appliance `n`'s management listener.
    pub fn mgmt(&self, n: usize) -> SocketAddr {
        SocketAddr::from((self.app_addr(n), self.opts.http_port))
    }

    /// Builds the namespaces and starts every process; waits until one appliance
    /// is active, the other standby, and they see each other.
    pub fn up(opts: PairOptions) -> Result<Self, String> {
        remove_stale_labs();
        let _ = std::fs::remove_dir_all(&opts.dir);
        std::fs::create_dir_all(&opts.dir).map_err(|e| e.to_string())?;
        let host_link = format!("{}-h", opts.prefix);
        let mut lab = Self { opts, procs: Vec::new(), namespaces: Vec::new(), host_link, up: true };
        lab.register()?;
        lab.network()?;
        lab.start()?;
        lab.wait_pair(Duration::from_secs(30))?;
        Ok(lab)
    }

    fn network(&mut self) -> Result<(), String> {
        let sw = self.ns("sw");
        ip(&["netns", "add", &sw])?;
        self.namespaces.push(sw.clone());
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for (which, host) in [("bank", 10u8), ("app1", 1), ("app2", 2), ("fo", 20)] {
            let ns = self.ns(which);
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let port = format!("v-{which}");
            ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.addr(host)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for app in ["app1", "app2"] {
            // Bank listeners bind the VIP before it is ours.
            run(Command::new("ip").args([
                "netns",
                "exec",
                &self.ns(app),
                "sysctl",
                "-qw",
                "net.ipv4.ip_nonlocal_bind=1",
            ]))?;
        }
        ip(&["link", "add", &self.host_link, "type", "veth", "peer", "name", "v-host", "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", "v-host", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.addr(254)), "dev", &self.host_link])?;
        ip(&["link", "set", &self.host_link, "up"])?;
        // keepalived on a link without carrier starts in FAULT: wait for the links.
        let deadline = Instant::now() + Duration::from_secs(5);
        for app in ["app1", "app2"] {
            while !ip(&["-n", &self.ns(app), "-br", "link", "show", "eth0"])?.contains(" UP ") {
                if Instant::now() > deadline {
                    return Err(format!("{app}'s eth0 never came up"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, name: &str, ns: &str, program: &Path, args: &[String]) -> Result<(), String> {
        let log =
            std::fs::File::create(self.opts.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let out =
            std::fs::File::create(self.opts.dir.join(format!("{name}.out"))).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("RUST_LOG", std::env::var("PAIR_LAB_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        // `ip netns exec` execs the program: the child's PID is the program's.
        self.procs.push(Proc { name: name.to_owned(), child });
        Ok(())
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.opts.bin_dir.join(name)
    }

    /// Appliance `n`'s configuration file.
    pub fn config_path(&self, n: usize) -> PathBuf {
        self.opts.dir.join(format!("app{n}.toml"))
    }

    fn config(&self, n: usize) -> String {
        let me = self.app_addr(n);
        let twin = self.app_addr(3 - n);
        let dir = self.opts.dir.join(format!("app{n}"));
        let mut out = format!(
            "[appliance]\nid = \"app{n}\"\nlocal_link = \"{dir}/pups.sock\"\npeer_listen = \"{me}:9200\"\npeer_address = \"{twin}:9200\"\n\n\
             [mups]\nhttp_listen = \"{me}:{http}\"\napi_token = \"{token}\"\nstate_dir = \"{dir}/state\"\n\
             tls_cert = \"{tls}/cert.pem\"\ntls_key = \"{tls}/key.pem\"\n\n\
             [vrrp]\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\nvips = [\"{vip}/24\"]\nunicast_src_ip = \"{me}\"\n\
             unicast_peers = [\"{twin}\"]\npriority = {prio}\nadvert_int_ms = 100\nstate_dir = \"{dir}\"\n\n",
            dir = dir.display(),
            tls = self.opts.dir.join("tls").display(),
            http = self.opts.http_port,
            token = self.opts.token,
            vrid = 100 + u32::from(self.opts.subnet) % 150,
            vip = self.vip(),
            // High on both: the skew time after a priority-0 advert is part of the freeze.
            prio = if n == 1 { 254 } else { 250 },
        );
        if let Some(queue) = self.opts.hold_queue {
            out += &format!("[pups]\nhold_queue = {queue}\n\n");
        }
        for node in ["A", "B"] {
            let port = if node == "A" { 7001 } else { 7002 };
            out += &format!("[[fo_node]]\nid = \"{node}\"\naddress = \"{}:{port}\"\n\n", self.addr(20));
        }
        for b in &self.opts.banks {
            let reserve = if b.active == "A" { "B" } else { "A" };
            out += &format!(
                "[[bank]]\nid = \"{id}\"\nlisten = \"{vip}:{port}\"\nallow = [\"10.213.{subnet}.0/24\"]\nmax_sessions = 256\n\
                 framing = {{ length = \"{framing}\", tpdu = {tpdu} }}\nlayout = \"{layout}\"\nactive_node = \"{active}\"\n\
                 reserve_node = \"{reserve}\"\nrequest_timeout_ms = 10000\n\n",
                id = b.id,
                vip = self.vip(),
                port = b.port,
                subnet = self.opts.subnet,
                framing = b.framing,
                tpdu = b.tpdu.is_some(),
                layout = b.layout,
                active = b.active,
            );
        }
        out
    }

    fn start(&mut self) -> Result<(), String> {
        // FO nodes.
        for node in ["A", "B"] {
            let port = if node == "A" { 7001 } else { 7002 };
            let mut args: Vec<String> = vec![
                "--node".into(),
                node.into(),
                "--listen".into(),
                format!("{}:{port}", self.addr(20)),
                "--no-stdin".into(),
                // Counters on stdout every second: tests read them (`fo_stats`).
                "--stats-interval".into(),
                "1".into(),
            ];
            for b in &self.opts.banks {
                args.push("--bank".into());
                args.push(format!("{}={}", b.id, b.layout));
                if b.active == node && b.originate_rate > 0.0 {
                    args.push("--originate".into());
                    args.push(format!("{}:{}", b.id, b.originate_rate));
                }
            }
            let fo = self.ns("fo");
            self.spawn(&format!("fo-{node}"), &fo, &self.bin("fo-sim"), &args)?;
        }
        // One self-signed certificate for both management listeners.
        let tls = self.opts.dir.join("tls");
        run(Command::new(self.bin("mups")).args(["tls", "self-signed", "--out"]).arg(&tls).args([
            "--host",
            &self.app_addr(1).to_string(),
            "--host",
            &self.app_addr(2).to_string(),
        ]))?;
        // Appliances: pups (locks the bank ports at start), mups (opens the notify
        // FIFO), then keepalived.
        for n in [1, 2] {
            let dir = self.opts.dir.join(format!("app{n}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(self.config_path(n), self.config(n)).map_err(|e| e.to_string())?;
            let ns = self.ns(&format!("app{n}"));
            let cfg = self.config_path(n).display().to_string();
            if let Some(password) = &self.opts.admin_password {
                let file = dir.join("admin.password");
                std::fs::write(&file, format!("{password}\n")).map_err(|e| e.to_string())?;
                run(Command::new(self.bin("mups"))
                    .args(["user", "add", "--role", "admin", "--name", "admin", "--state-dir"])
                    .arg(dir.join("state"))
                    .arg("--password-file")
                    .arg(&file))?;
                let _ = std::fs::remove_file(&file);
            }
            self.spawn(
                &format!("app{n}-pups"),
                &ns,
                &self.bin("pups"),
                &["run".into(), "--config".into(), cfg.clone()],
            )?;
            self.spawn(
                &format!("app{n}-mups"),
                &ns,
                &self.bin("mups"),
                &["run".into(), "--config".into(), cfg.clone()],
            )?;
            let conf = dir.join("keepalived.conf");
            run(Command::new(self.bin("mups"))
                .args(["keepalived", "render", "--config", &cfg, "--output"])
                .arg(&conf))?;
        }
        // mups must have the FIFO open before keepalived writes to it.
        let deadline = Instant::now() + Duration::from_secs(10);
        for n in [1, 2] {
            while self.http(n, "GET", "/healthz", None).map(|(s, _)| s) != Ok(200) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "app{n}'s mups did not come up: {}",
                        self.log(&format!("app{n}-mups"))
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for n in [1, 2] {
            let dir = self.opts.dir.join(format!("app{n}"));
            let file = |ext: &str| dir.join(format!("keepalived.{ext}")).display().to_string();
            let args = ["--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp", "-f"]
                .iter()
                .map(|s| (*s).to_owned())
                .chain([
                    file("conf"),
                    "-p".into(),
                    file("pid"),
                    "-r".into(),
                    file("vrrp.pid"),
                    "-c".into(),
                    file("checkers.pid"),
                    "-b".into(),
                    file("bfd.pid"),
                ])
                .collect::<Vec<_>>();
            let ns = self.ns(&format!("app{n}"));
            self.spawn(&format!("app{n}-keepalived"), &ns, Path::new("keepalived"), &args)?;
        }
        Ok(())
    }

    /// FO node `node`'s (`A` or `B`) latest counters, as its simulator printed
    /// them (every second): `sim::fo_node::Stats` as JSON.
    pub fn fo_stats(&self, node: &str) -> Option<serde_json::Value> {
        let out = std::fs::read_to_string(self.opts.dir.join(format!("fo-{node}.out"))).ok()?;
        out.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "stats")
            .map(|v| v["stats"].clone())
    }

    /// The log of process `name`.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.opts.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// An HTTPS request to appliance `n`'s management listener, with the token
    /// (curl; the lab's certificate is self-signed).
    pub fn http(
        &self,
        n: usize,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "--max-time", "10", "-X", method, "-w", "\n%{http_code}"])
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", self.opts.token))
            .args(["-H", "Content-Type: application/json"]);
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(b);
        }
        cmd.arg(format!("https://{}{path}", self.mgmt(n)));
        let out = cmd.output().map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "curl {method} {path}: exit {:?}, {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            )),
            Ok(status) => Ok((status, body.to_owned())),
        }
    }

    /// `GET /api/v1/appliance` of appliance `n`.
    pub fn appliance(&self, n: usize) -> Result<serde_json::Value, String> {
        let (status, body) = self.http(n, "GET", "/api/v1/appliance", None)?;
        if status != 200 {
            return Err(format!("status {status}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| e.to_string())
    }

    /// Which appliance is active (1 or 2), if exactly one is and the other is a
    /// connected standby.
    pub fn active(&self) -> Option<usize> {
        let roles: Vec<(String, bool)> = [1, 2]
            .iter()
            .map(|&n| {
                self.appliance(n).map_or((String::new(), false), |a| {
                    (a["role"].as_str().unwrap_or("").to_owned(), a["twin"]["connected"] == true)
                })
            })
            .collect();
        match (roles[0].0.as_str(), roles[1].0.as_str()) {
            ("active", "standby") if roles[0].1 && roles[1].1 => Some(1),
            ("standby", "active") if roles[0].1 && roles[1].1 => Some(2),
            _ => None,
        }
    }

    /// Waits until the pair has settled (one active, one connected standby, both
    /// FO nodes up on the active).
    pub fn wait_pair(&self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(n) = self.active() {
                let ready = self.http(n, "GET", "/readyz", None).map(|(s, _)| s == 200).unwrap_or(false);
                if ready {
                    return Ok(n);
                }
            }
            if Instant::now() > deadline {
                let states: Vec<String> =
                    [1, 2].iter().map(|&n| format!("app{n}: {:?}", self.appliance(n))).collect();
                return Err(format!("the pair did not settle: {}", states.join("; ")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `sessions` bank sessions per bank from the bank namespace, `rate`
    /// requests/s per bank, for `duration`; returns the report files.
    pub fn start_bank_sims(
        &mut self,
        sessions: u32,
        rate: f64,
        duration: Duration,
    ) -> Result<Vec<PathBuf>, String> {
        let mut reports = Vec::new();
        let banks = self.opts.banks.clone();
        for (i, b) in banks.iter().enumerate() {
            let report = self.opts.dir.join(format!("{}.report.json", b.id));
            let mut args: Vec<String> = vec![
                "-t".into(),
                format!("{}:{}", self.vip(), b.port),
                "-n".into(),
                sessions.to_string(),
                "--framing".into(),
                b.framing.into(),
                "--layout".into(),
                b.layout.into(),
                "-r".into(),
                rate.to_string(),
                "-p".into(),
                "4".into(),
                "-d".into(),
                format!("{}ms", duration.as_millis()),
                "--sign-on".into(),
                "--terminal-prefix".into(),
                format!("P{i}"),
                "--report".into(),
                report.display().to_string(),
                "-q".into(),
            ];
            if let Some(t) = b.tpdu {
                args.push("--tpdu".into());
                args.push(t.into());
            }
            let bank_ns = self.ns("bank");
            self.spawn(&format!("bank-sim-{}", b.id), &bank_ns, &self.bin("bank-sim"), &args)?;
            reports.push(report);
        }
        Ok(reports)
    }

    /// Waits for the bank simulators to finish; their reports, by bank.
    pub fn bank_reports(&mut self, within: Duration) -> Result<BTreeMap<String, serde_json::Value>, String> {
        let deadline = Instant::now() + within;
        let mut out = BTreeMap::new();
        for p in self.procs.iter_mut().filter(|p| p.name.starts_with("bank-sim-")) {
            loop {
                match p.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    _ => return Err(format!("{} did not finish", p.name)),
                }
            }
            let bank = p.name.trim_start_matches("bank-sim-").to_owned();
            let file = self.opts.dir.join(format!("{bank}.report.json"));
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            out.insert(bank, serde_json::from_str(&text).map_err(|e| e.to_string())?);
        }
        self.procs.retain(|p| !p.name.starts_with("bank-sim-"));
        Ok(out)
    }

    /// `nstat -az` counters of namespace `which` (absolute values).
    pub fn nstat(&self, which: &str) -> Result<BTreeMap<String, u64>, String> {
        let text = run(Command::new("ip").args(["netns", "exec", &self.ns(which), "nstat", "-az", "-j"]))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        if let Some(map) = v["kernel"].as_object() {
            for (k, v) in map {
                out.insert(k.clone(), v.as_u64().unwrap_or(0));
            }
        }
        Ok(out)
    }

    /// Starts counting, in namespace `which`, the TCP segments with RST and with FIN
    /// that it sends to the bank namespace (a table of the test's own, gone with the
    /// namespace). Unlike `TcpOutRsts`, this leaves out the resets an appliance may
    /// send its FO nodes, its twin or an HTTP client.
    pub fn watch_bank_resets(&self, which: &str) -> Result<(), String> {
        let bank = self.addr(10);
        let script = format!(
            "table inet e2e_watch {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  \
             ip daddr {bank} tcp flags & rst == rst counter comment \"rst\"\n  \
             ip daddr {bank} tcp flags & fin == fin counter comment \"fin\"\n }}\n}}\n"
        );
        let path = self.opts.dir.join(format!("watch-{which}.nft"));
        std::fs::write(&path, script).map_err(|e| e.to_string())?;
        let ns = self.ns(which);
        run(Command::new("ip").args(["netns", "exec", &ns, "nft", "-f"]).arg(&path)).map(drop)
    }

    /// What [`PairLab::watch_bank_resets`] counted: (RST, FIN) segments to the bank.
    pub fn bank_resets(&self, which: &str) -> Result<(u64, u64), String> {
        let ns = self.ns(which);
        let text = run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "nft",
            "-j",
            "list",
            "table",
            "inet",
            "e2e_watch",
        ]))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let (mut rst, mut fin) = (0, 0);
        for item in v["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            let packets = rule["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| e["counter"]["packets"].as_u64())
                .unwrap_or(0);
            match rule["comment"].as_str() {
                Some("rst") => rst += packets,
                Some("fin") => fin += packets,
                _ => {}
            }
        }
        Ok((rst, fin))
    }

    /// Limits the peer link traffic (TCP port 9200, either way) that namespace
    /// `which` sends to `rate` (a `tc` rate, e.g. `256kbit`), or lifts the limit
    /// (`None`): to make a transfer last long enough for a test to act in the middle
    /// of it. Everything else (VRRP adverts, FO links, banks) keeps its pace.
    pub fn shape(&self, which: &str, rate: Option<&str>) -> Result<(), String> {
        let ns = self.ns(which);
        let tc = |args: &[&str]| run(Command::new("tc").arg("-n").arg(&ns).args(args)).map(drop);
        let Some(rate) = rate else { return tc(&["qdisc", "del", "dev", "eth0", "root"]) };
        // htb (this kernel has no prio qdisc): everything in a fast default class,
        // the peer link in a slow one.
        tc(&[
            "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10", "r2q",
            "100000",
        ])?;
        tc(&["class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"])?;
        tc(&[
            "class", "add", "dev", "eth0", "parent", "1:", "classid", "1:30", "htb", "rate", rate, "ceil",
            rate,
        ])?;
        for side in ["dport", "sport"] {
            tc(&[
                "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "u32", "match", "ip", side,
                "9200", "0xffff", "flowid", "1:30",
            ])?;
        }
        Ok(())
    }

    /// Sends `signal` (`-9`, `-STOP`, `-CONT`, …) to process `name`. For keepalived,
    /// its VRRP child gets it first (the parent alone going away makes the child
    /// hand the VIP over gracefully, which is not what a test of a stuck or dead
    /// appliance wants).
    pub fn signal(&self, name: &str, signal: &str) -> Result<(), String> {
        let p = self.procs.iter().find(|p| p.name == name).ok_or_else(|| format!("no process {name}"))?;
        if let Some(app) = name.strip_suffix("-keepalived") {
            let pid_file = self.opts.dir.join(app).join("keepalived.vrrp.pid");
            let child =
                std::fs::read_to_string(&pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
            run(Command::new("kill").arg(signal).arg(child.trim()))?;
        }
        run(Command::new("kill").arg(signal).arg(p.child.id().to_string())).map(drop)
    }

    /// Stops everything and removes the namespaces (and the directory, unless kept).
    pub fn down(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        for p in self.procs.iter_mut().rev() {
            let _ = Command::new("kill").arg(p.child.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.procs {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        let _ = ip(&["link", "del", &self.host_link]);
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_file(self.registration());
        if !self.opts.keep_dir {
            let _ = std::fs::remove_dir_all(&self.opts.dir);
        }
    }

    /// Forgets the processes and namespaces without stopping them (the demo lab
    /// hands them to `scripts/lab down`).
    pub fn detach(mut self) -> Vec<(String, u32)> {
        self.up = false;
        // `scripts/lab down` owns it now: not stale when this process exits.
        let _ = std::fs::remove_file(self.registration());
        self.procs.iter().map(|p| (p.name.clone(), p.child.id())).collect()
    }
}

/// Where each running lab notes its owner and what to remove: a test run that
/// was killed leaves namespaces, a host link and daemons behind, and the next
/// run removes them (`remove_stale_labs`).
pub const REGISTRY: &str = "/run/pups-pair-labs";

impl PairLab {
    fn registration(&self) -> PathBuf {
        Path::new(REGISTRY).join(&self.opts.prefix)
    }

    /// Notes this lab (owner pid, host link, namespaces) before building it.
    fn register(&self) -> Result<(), String> {
        std::fs::create_dir_all(REGISTRY).map_err(|e| format!("{REGISTRY}: {e}"))?;
        let names = ["sw", "bank", "app1", "app2", "fo"].map(|w| self.ns(w)).join(" ");
        let text = format!("{}\n{}\n{names}\n", std::process::id(), self.host_link);
        std::fs::write(self.registration(), text).map_err(|e| format!("{REGISTRY}: {e}"))
    }
}

/// Removes the labs whose owner process is gone: their daemons (by namespace,
/// `ip netns pids`, so a reused pid is never hit), host link and namespaces.
pub fn remove_stale_labs() {
    let Ok(entries) = std::fs::read_dir(REGISTRY) else { return };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let mut lines = text.lines();
        let Some(owner) = lines.next().and_then(|l| l.trim().parse::<u32>().ok()) else { continue };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let host_link = lines.next().unwrap_or_default().trim().to_owned();
        let namespaces: Vec<String> =
            lines.next().unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        eprintln!("pair lab: removing a stale lab of process {owner} ({})", namespaces.join(", "));
        for ns in &namespaces {
            for pid in ip(&["netns", "pids", ns]).unwrap_or_default().split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        if !host_link.is_empty() {
            let _ = ip(&["link", "del", &host_link]);
        }
        for ns in namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

impl Drop for PairLab {
    fn drop(&mut self) {
        self.teardown();
    }
}
