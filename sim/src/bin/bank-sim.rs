//! `bank-sim`: the bank simulator / load generator.
//!
//! Opens N bank sessions to a target, sends ISO 8583 requests at a rate (or as fast
//! as the pipeline allows), answers the switch's own requests, and prints a JSON
//! report. Exit status: 0 clean run, 1 not clean (or the report could not be
//! written), 2 bad usage or configuration. Logs and the progress line go to stderr;
//! stdout carries only the report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use proto::frame::LengthHeader;
use sim::bank::{BankSimConfig, Progress, RunError, parse_duration, parse_mix, run_with_progress};
use tracing_subscriber::EnvFilter;

const EXIT_UNCLEAN: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// Bank simulator and load generator: ISO 8583 sessions towards pups.
#[derive(Debug, Parser)]
#[command(name = "bank-sim", version)]
struct Cli {
    /// Target host:port (pups, or any ISO 8583 peer). Repeat it, or give a comma
    /// list, for several targets with the same profile: session i goes to target
    /// i mod (number of targets).
    #[arg(long, short = 't', required = true, value_delimiter = ',')]
    target: Vec<String>,
    /// Number of TCP sessions.
    #[arg(long, short = 'n', default_value_t = 1)]
    sessions: u32,
    /// Length header: u16be, u16be-incl, u32be, ascii4, hex4, bcd2, u16be-pad2, …
    #[arg(long, default_value = "u16be")]
    framing: LengthHeader,
    /// TPDU as 10 hex digits (e.g. 6000010000); omit for no TPDU.
    #[arg(long)]
    tpdu: Option<String>,
    /// Frames end with ETX (0x03).
    #[arg(long)]
    etx: bool,
    /// Message layout: iso87-ascii, iso87-binary, iso87-bcd, iso87-ebcdic.
    #[arg(long, default_value = "iso87-ascii")]
    layout: String,
    /// Total target rate, requests/s over all sessions; 0 = as fast as the pipeline allows.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,
    /// Most financial requests in flight per session.
    #[arg(long, short = 'p', default_value_t = 1)]
    pipeline: u32,
    /// Total financial requests over all sessions.
    #[arg(long, short = 'c')]
    requests: Option<u64>,
    /// How long each session sends (e.g. 30s, 5m). Without --requests or --duration,
    /// sends until Ctrl-C.
    #[arg(long, short = 'd', value_parser = parse_duration)]
    duration: Option<Duration>,
    /// A response after this is late.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    timeout: Duration,
    /// How long in-flight requests are awaited after sending ends before they count as lost.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    grace: Duration,
    /// How long a session keeps reading after its last response, to catch trailing duplicates.
    #[arg(long, value_parser = parse_duration, default_value = "200ms")]
    linger: Duration,
    /// Limit on one TCP connect.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    connect_timeout: Duration,
    /// Sign on (0800 DE70=001) at connect and wait for the 0810 before financial traffic.
    #[arg(long)]
    sign_on: bool,
    /// Send an echo (0800 DE70=301) after this long with nothing sent.
    #[arg(long, value_parser = parse_duration)]
    echo_idle: Option<Duration>,
    /// Request mix, MTI:weight pairs (0400 = reversals with DE90).
    #[arg(long, value_parser = parse_mix, default_value = "0100:1,0200:1")]
    mix: std::collections::BTreeMap<String, u32>,
    /// Start of the terminal ids (DE41); the session number fills the 8 characters.
    #[arg(long, default_value = "SIM")]
    terminal_prefix: String,
    /// DE39 of the answers to the switch's requests.
    #[arg(long, default_value = "00")]
    response_code: String,
    /// Reconnect after a disconnect (each disconnect is still reported).
    #[arg(long)]
    reconnect: bool,
    /// Wait before a reconnect.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    reconnect_delay: Duration,
    /// Answered keys remembered per session, to tell duplicates from unmatched responses.
    #[arg(long, default_value_t = 1 << 14)]
    dup_window: usize,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Pretty-print the JSON report.
    #[arg(long)]
    pretty: bool,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Log filter (RUST_LOG syntax, e.g. info or sim=debug); default: $RUST_LOG, else warn.
    #[arg(long)]
    log: Option<String>,
}

impl Cli {
    fn config(&self) -> BankSimConfig {
        BankSimConfig {
            target: self.target[0].clone(),
            more_targets: self.target[1..].to_vec(),
            sessions: self.sessions,
            framing: self.framing,
            tpdu: self.tpdu.clone(),
            etx: self.etx,
            layout: self.layout.clone(),
            rate: self.rate,
            pipeline: self.pipeline,
            requests: self.requests,
            duration: self.duration,
            timeout: self.timeout,
            grace: self.grace,
            linger: self.linger,
            connect_timeout: self.connect_timeout,
            sign_on: self.sign_on,
            echo_idle: self.echo_idle,
            mix: self.mix.clone(),
            terminal_prefix: self.terminal_prefix.clone(),
            response_code: self.response_code.clone(),
            reconnect: self.reconnect,
            reconnect_delay: self.reconnect_delay,
            dup_window: self.dup_window,
        }
    }
}

fn progress_line(p: &Progress) {
    eprintln!(
        "bank-sim: {:>5.0}s sent={} answered={} in_flight={} rate={:.0}/s connected={} disconnects={}",
        p.elapsed.as_secs_f64(),
        p.sent,
        p.answered,
        p.sent.saturating_sub(p.answered),
        p.rate,
        p.connected,
        p.disconnects
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.log {
        Some(f) => EnvFilter::try_new(f).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cfg = cli.config();
    if let Err(e) = cfg.validate() {
        eprintln!("bank-sim: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bank-sim: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_UNCLEAN);
        }
    };
    let quiet = cli.quiet;
    let result = runtime.block_on(async move {
        let shutdown = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            eprintln!("bank-sim: stopping (Ctrl-C again to abort)");
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("bank-sim: aborted");
                    std::process::exit(i32::from(EXIT_UNCLEAN));
                }
            });
        };
        run_with_progress(cfg, shutdown, |p| {
            if !quiet {
                progress_line(p);
            }
        })
        .await
    });
    let report = match result {
        Ok(r) => r,
        Err(e @ RunError::Session(_)) => {
            eprintln!("bank-sim: {e}");
            return ExitCode::from(EXIT_UNCLEAN);
        }
        Err(e) => {
            eprintln!("bank-sim: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let json =
        if cli.pretty { serde_json::to_string_pretty(&report) } else { serde_json::to_string(&report) };
    let json = match json {
        Ok(j) => j,
        Err(e) => {
            eprintln!("bank-sim: cannot serialize the report: {e}");
            return ExitCode::from(EXIT_UNCLEAN);
        }
    };
    println!("{json}");
    if let Some(path) = &cli.report {
        if let Err(e) = std::fs::write(path, format!("{json}\n")) {
            eprintln!("bank-sim: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_UNCLEAN);
        }
    }
    let c = &report.counters;
    eprintln!(
        "bank-sim: {} sent={} answered={} lost={} late={} duplicates={} unmatched={} disconnects={} \
         throughput={:.0}/s p50={}us p99={}us max={}us",
        if report.clean { "CLEAN" } else { "NOT CLEAN" },
        c.sent,
        c.answered,
        c.lost,
        c.late,
        c.duplicates,
        c.unmatched,
        report.disconnects.total,
        report.throughput.answered_per_s,
        report.latency_us.p50,
        report.latency_us.p99,
        report.latency_us.max
    );
    if report.clean { ExitCode::SUCCESS } else { ExitCode::from(EXIT_UNCLEAN) }
}
