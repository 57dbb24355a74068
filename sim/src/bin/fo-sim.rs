//! `fo-sim`: the FO node simulator as an operator tool, for staging and the lab.
//!
//! Configuration comes from a file (`--config`, JSON or TOML) and flags for the
//! common cases, which add to or override it. The node is driven at run time by
//! one-line commands on stdin and, with `--control ADDR`, on a TCP port (see
//! `sim::fo_node::control`, plus `restart` and `quit` here). Everything the
//! binary prints on stdout is one JSON object per line with an `"event"`:
//! `listening`, `stats` (periodic with `--stats-interval`, and a final one on
//! SIGTERM, SIGINT or `quit`), `reply` (to a control command) and `restarted`.
//! Logs go to stderr (`RUST_LOG`, default `info`). Details: `docs/fo-node-sim.md`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use sim::fo_node::{self, BankConfig, FoNodeConfig, FoNodeHandle, OriginateConfig, Rule, control};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Exit status for bad usage or configuration (sysexits `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// Exit status when the node cannot start (sysexits `EX_UNAVAILABLE`).
const EX_UNAVAILABLE: u8 = 69;

/// FO node simulator: listens for mups, speaks the FO link protocol, answers the
/// banks' ISO 8583 requests by rules, originates traffic, takes part in switchovers.
#[derive(Debug, Parser)]
#[command(name = "fo-sim", version)]
struct Args {
    /// Configuration file (.json or .toml); the flags below add to it or override it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Node id sent in HELLO (A, B).
    #[arg(long, value_name = "ID")]
    node: Option<String>,
    /// Address to listen on for mups; port 0 picks a free port (printed in the
    /// `listening` event).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// A bank the node serves, and its built-in layout (iso87-ascii, iso87-binary,
    /// iso87-bcd, iso87-ebcdic). Repeatable.
    #[arg(long = "bank", value_name = "BANK=LAYOUT", value_parser = parse_bank)]
    banks: Vec<(String, String)>,
    /// Start inactive for this bank (answer anyway, originate nothing). Repeatable.
    #[arg(long = "inactive", value_name = "BANK")]
    inactive: Vec<String>,
    /// A response rule in compact form (`pan=4000,code=05`, `mti=02,delay=1500`,
    /// `over=100000,drop`, `bank=b1,close`), after the file's rules. Repeatable.
    #[arg(long = "rule", value_name = "RULE")]
    rules: Vec<Rule>,
    /// Originate requests (0100 by default) to a bank at RATE per second. Repeatable.
    #[arg(long = "originate", value_name = "BANK:RATE", value_parser = parse_originate)]
    originate: Vec<(String, f64)>,
    /// Originate an 0800 echo test to a bank every MS milliseconds. Repeatable.
    #[arg(long = "echo", value_name = "BANK:MS", value_parser = parse_echo)]
    echo: Vec<(String, u64)>,
    /// Timeout of originated requests, for every bank.
    #[arg(long, value_name = "MS")]
    originate_timeout_ms: Option<u64>,
    /// Send our own heartbeats on every link at this interval.
    #[arg(long, value_name = "MS")]
    heartbeat_ms: Option<u64>,
    /// Close a link on which nothing has been received for this long.
    #[arg(long, value_name = "MS")]
    controller_timeout_ms: Option<u64>,
    /// Print the counters as a `stats` event every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<u64>,
    /// Also accept control commands on this TCP address (one command a line, one
    /// JSON reply a line). Bind it to localhost: it is not authenticated.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Do not read control commands from stdin.
    #[arg(long)]
    no_stdin: bool,
    /// Print the effective configuration as JSON and exit (a starting point for a file).
    #[arg(long)]
    print_config: bool,
}

fn parse_bank(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((bank, layout)) if !bank.is_empty() && !layout.is_empty() => {
            Ok((bank.to_owned(), layout.to_owned()))
        }
        _ => Err(format!("{s:?}: expected BANK=LAYOUT")),
    }
}

fn parse_originate(s: &str) -> Result<(String, f64), String> {
    let (bank, rate) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected BANK:RATE"))?;
    let rate: f64 = rate.parse().map_err(|_| format!("{s:?}: RATE {rate:?} is not a number"))?;
    Ok((bank.to_owned(), rate))
}

fn parse_echo(s: &str) -> Result<(String, u64), String> {
    let (bank, ms) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected BANK:MS"))?;
    let ms: u64 = ms.parse().map_err(|_| format!("{s:?}: MS {ms:?} is not a whole number"))?;
    Ok((bank.to_owned(), ms))
}

/// The file's configuration (or the defaults) with the flags applied.
fn configure(args: &Args) -> Result<FoNodeConfig, String> {
    let mut cfg = match &args.config {
        Some(path) => FoNodeConfig::load(path).map_err(|e| e.to_string())?,
        None => FoNodeConfig::default(),
    };
    if let Some(node) = &args.node {
        cfg.node_id.clone_from(node);
    }
    if let Some(listen) = args.listen {
        cfg.listen = listen;
    }
    for (bank, layout) in &args.banks {
        match cfg.banks.get_mut(bank) {
            Some(b) => b.layout.clone_from(layout),
            None => {
                cfg.banks.insert(bank.clone(), BankConfig::new(layout));
            }
        }
    }
    for bank in &args.inactive {
        cfg.banks.get_mut(bank).ok_or_else(|| format!("--inactive {bank}: no such bank"))?.active = false;
    }
    cfg.rules.extend(args.rules.iter().cloned());
    let mut origin = |bank: &str| -> usize {
        match cfg.originate.iter().position(|o| o.bank == bank) {
            Some(i) => i,
            None => {
                cfg.originate.push(OriginateConfig::new(bank, 0.0));
                cfg.originate.len() - 1
            }
        }
    };
    let mut updates: Vec<(usize, Option<f64>, Option<u64>)> = Vec::new();
    for (bank, rate) in &args.originate {
        updates.push((origin(bank), Some(*rate), None));
    }
    for (bank, ms) in &args.echo {
        updates.push((origin(bank), None, Some(*ms)));
    }
    for (i, rate, echo) in updates {
        let o = &mut cfg.originate[i];
        if let Some(rate) = rate {
            o.rate = rate;
        }
        if echo.is_some() {
            o.echo_interval_ms = echo;
        }
    }
    if let Some(ms) = args.originate_timeout_ms {
        cfg.originate.iter_mut().for_each(|o| o.timeout_ms = ms);
    }
    if args.heartbeat_ms.is_some() {
        cfg.heartbeat_interval_ms = args.heartbeat_ms;
    }
    if args.controller_timeout_ms.is_some() {
        cfg.controller_timeout_ms = args.controller_timeout_ms;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Prints one event line on stdout: `{"event": …, …body}`.
fn emit(event: &str, body: Value) {
    let mut line = json!({"event": event});
    if let (Some(map), Value::Object(body)) = (line.as_object_mut(), body) {
        map.extend(body);
    }
    println!("{line}");
}

/// What the control sources share: the running node (replaced by `restart`) and
/// the token that `quit` cancels.
struct App {
    node: Mutex<FoNodeHandle>,
    cfg: FoNodeConfig,
    quit: CancellationToken,
}

impl App {
    /// Carries out one control line; the reply.
    async fn command(&self, line: &str) -> Value {
        match line.trim().to_ascii_lowercase().as_str() {
            "quit" | "exit" => {
                self.quit.cancel();
                json!({"ok": true, "quitting": true})
            }
            "restart" => {
                let mut node = self.node.lock().await;
                node.die().await;
                let mut cfg = self.cfg.clone();
                cfg.listen = node.local_addr();
                match fo_node::start(cfg).await {
                    Ok(fresh) => {
                        *node = fresh;
                        emit(
                            "restarted",
                            json!({"node": node.node_id(), "addr": node.local_addr().to_string()}),
                        );
                        json!({"ok": true, "running": true})
                    }
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                }
            }
            "help" | "?" => {
                let mut commands: Vec<&str> = control::HELP.to_vec();
                commands.extend(["restart   (fo-sim: die, then start again on the same address)", "quit"]);
                json!({"ok": true, "commands": commands})
            }
            _ => control::execute_line(&*self.node.lock().await, line).await,
        }
    }

    /// Serves control lines from `input`, replies to `output` (or stdout events).
    async fn serve<R, W>(&self, input: R, mut output: Option<W>)
    where
        R: tokio::io::AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut lines = BufReader::new(input).lines();
        loop {
            let line = tokio::select! {
                () = self.quit.cancelled() => return,
                l = lines.next_line() => l,
            };
            let Ok(Some(line)) = line else { return };
            if line.trim().is_empty() {
                continue;
            }
            let reply = self.command(&line).await;
            match &mut output {
                Some(out) => {
                    let text = format!("{reply}\n");
                    if out.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
                None => emit("reply", reply),
            }
        }
    }
}

async fn control_port(app: Arc<App>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = app.quit.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::info!(%peer, "control connection");
                let app = Arc::clone(&app);
                tokio::spawn(async move {
                    let (rd, wr) = stream.into_split();
                    app.serve(rd, Some(wr)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
async fn signalled() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

async fn run(args: Args, cfg: FoNodeConfig) -> ExitCode {
    let node = match fo_node::start(cfg.clone()).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("fo-sim: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let control_listener = match args.control {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("fo-sim: cannot listen for control on {addr}: {e}");
                return ExitCode::from(EX_UNAVAILABLE);
            }
        },
        None => None,
    };
    let control_addr = control_listener.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string());
    emit(
        "listening",
        json!({"node": node.node_id(), "addr": node.local_addr().to_string(), "control": control_addr}),
    );
    let app = Arc::new(App { node: Mutex::new(node), cfg, quit: CancellationToken::new() });
    if let Some(listener) = control_listener {
        tokio::spawn(control_port(Arc::clone(&app), listener));
    }
    if !args.no_stdin {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            app.serve(tokio::io::stdin(), None::<tokio::io::Stdout>).await;
            tracing::debug!("stdin closed: no more control commands from it");
        });
    }
    if let Some(secs) = args.stats_interval.filter(|s| *s > 0) {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let every = Duration::from_secs(secs);
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    () = app.quit.cancelled() => return,
                    _ = ticks.tick() => emit("stats", json!({"stats": app.node.lock().await.stats()})),
                }
            }
        });
    }
    let reason = tokio::select! {
        s = signalled() => s,
        () = app.quit.cancelled() => "quit",
    };
    app.quit.cancel();
    let node = app.node.lock().await;
    emit("stats", json!({"final": true, "reason": reason, "stats": node.stats()}));
    node.die().await;
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = match configure(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("fo-sim: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if args.print_config {
        match serde_json::to_string_pretty(&cfg) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("fo-sim: {e}"),
        }
        return ExitCode::SUCCESS;
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(run(args, cfg));
            // A blocking stdin read may still be pending: do not wait for it.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("fo-sim: cannot start the runtime: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("fo-sim").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn flags_build_a_config() {
        let cfg = configure(&args(&[
            "--node",
            "B",
            "--listen",
            "127.0.0.1:7002",
            "--bank",
            "bank-1=iso87-ascii",
            "--bank",
            "bank-2=iso87-bcd",
            "--inactive",
            "bank-2",
            "--rule",
            "pan=4000,code=05",
            "--rule",
            "mti=02,delay=100",
            "--originate",
            "bank-1:50",
            "--echo",
            "bank-1:1000",
            "--echo",
            "bank-2:500",
            "--originate-timeout-ms",
            "3000",
            "--heartbeat-ms",
            "200",
        ]))
        .unwrap();
        assert_eq!(cfg.node_id, "B");
        assert_eq!(cfg.listen.port(), 7002);
        assert!(cfg.banks["bank-1"].active && !cfg.banks["bank-2"].active);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.originate.len(), 2);
        let o = &cfg.originate[0];
        assert_eq!(
            (o.bank.as_str(), o.rate, o.echo_interval_ms, o.timeout_ms),
            ("bank-1", 50.0, Some(1000), 3000)
        );
        assert_eq!((cfg.originate[1].rate, cfg.originate[1].echo_interval_ms), (0.0, Some(500)));
        assert_eq!(cfg.heartbeat_interval_ms, Some(200));
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(Args::try_parse_from(["fo-sim", "--bank", "bank-1"]).is_err());
        assert!(Args::try_parse_from(["fo-sim", "--originate", "bank-1:fast"]).is_err());
        assert!(Args::try_parse_from(["fo-sim", "--rule", "colour=red"]).is_err());
        assert!(configure(&args(&["--inactive", "bank-1"])).unwrap_err().contains("no such bank"));
        assert!(configure(&args(&["--bank", "b=iso87-nope"])).unwrap_err().contains("unknown layout"));
        assert!(configure(&args(&["--originate", "b:5"])).unwrap_err().contains("unknown bank"));
    }
}
