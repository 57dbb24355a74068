//! `pups` command line: `pups run --config FILE` runs the edge proxy until SIGTERM
//! or SIGINT; `pups check-config --config FILE` validates a configuration and
//! prints every problem with its key path; `pups check-repair` says whether this
//! kernel and these privileges can move sessions to the twin (`TCP_REPAIR`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use proto::config::ApplianceConfig;
use tracing::{error, info};

/// Exit code for a configuration with problems (EX_USAGE).
const EXIT_CONFIG: u8 = 64;
/// Exit code for a configuration file that cannot be read (EX_NOINPUT).
const EXIT_NO_INPUT: u8 = 66;
/// Exit code when `TCP_REPAIR` is not usable here (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

/// PUPS edge proxy.
#[derive(Parser)]
#[command(
    version,
    about = "PUPS edge proxy: owns bank TCP sessions and passes their ISO 8583 messages to mups"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge proxy until SIGTERM or SIGINT.
    Run {
        /// The appliance configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration: print every problem with its key path (exit 64 if any).
    CheckConfig {
        /// The appliance configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check that sessions can be handed to the twin appliance: the kernel has
    /// TCP_REPAIR and what goes with it, and we hold CAP_NET_ADMIN (exit 69 if not).
    CheckRepair,
}

/// Why a configuration could not be loaded.
enum LoadError {
    Unreadable(anyhow::Error),
    Invalid(proto::config::ConfigError),
}

fn load(path: &Path) -> Result<ApplianceConfig, LoadError> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(LoadError::Unreadable)?;
    ApplianceConfig::from_toml_str(&text).map_err(LoadError::Invalid)
}

/// Prints why a configuration cannot be used; returns the exit code.
fn report(path: &Path, e: &LoadError) -> ExitCode {
    match e {
        LoadError::Unreadable(e) => {
            eprintln!("pups: {e:#}");
            ExitCode::from(EXIT_NO_INPUT)
        }
        LoadError::Invalid(e) => {
            eprintln!("{}: {} configuration problem(s):", path.display(), e.issues.len());
            for issue in &e.issues {
                eprintln!("  {issue}");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckRepair => match pups::sys::self_check() {
            Ok(()) => {
                println!(
                    "TCP_REPAIR: ok (repair mode, TCP_REPAIR_WINDOW, TCP_REPAIR_OFF_NO_WP, IP_TRANSPARENT)"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pups: {e}");
                ExitCode::from(EXIT_UNAVAILABLE)
            }
        },
        Command::CheckConfig { config } => match load(&config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} bank(s), {} FO node(s), local link {})",
                    config.display(),
                    cfg.banks.len(),
                    cfg.fo_nodes.len(),
                    cfg.appliance.local_link.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => report(&config, &e),
        },
        Command::Run { config } => {
            let cfg = match load(&config) {
                Ok(cfg) => cfg,
                Err(e) => return report(&config, &e),
            };
            init_logging();
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e:#}");
                    eprintln!("pups: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

fn run(cfg: ApplianceConfig) -> anyhow::Result<()> {
    let runtime = match cfg.pups.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
    .context("tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        pups::run(Arc::new(cfg), shutdown).await.context("pups")
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "stop requested: no longer accepting bank connections; closing sessions");
    })
}
