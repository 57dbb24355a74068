//! `mups` entry point: parses the command line and runs the command.

use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;

use std::sync::Arc;

use clap::Parser;
use mups::cli::{
    Cli, Command, ConfigArgs, DecodeArgs, IsoCommand, KeepalivedCommand, RenderArgs, TlsCommand,
};
use mups::iso_tool::{self, DecodeOptions};
use proto::config::ApplianceConfig;
use proto::frame::{ETX, FrameConfig};

/// Exit status for bad usage or configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Iso(IsoCommand::Decode(args)) => iso_decode(args),
        Command::CheckConfig(args) => load_config(&args).map(|cfg| {
            println!(
                "{}: OK ({} FO nodes, {} banks)",
                args.config.display(),
                cfg.fo_nodes.len(),
                cfg.banks.len()
            );
            ExitCode::SUCCESS
        }),
        Command::Run(args) => run(&args),
        Command::Keepalived(KeepalivedCommand::Render(args)) => keepalived_render(&args),
        Command::User(cmd) => mups::auth::admin_cli::user(cmd),
        Command::Audit(cmd) => mups::auth::admin_cli::audit(cmd),
        Command::Tls(TlsCommand::SelfSigned(args)) => mups::tls::self_signed(&args.out, &args.hosts)
            .map(|files| {
                println!("{}\n{}", files.cert.display(), files.key.display());
                ExitCode::SUCCESS
            })
            .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mups: {e:#}");
            ExitCode::from(EX_USAGE)
        }
    }
}

fn iso_decode(args: DecodeArgs) -> anyhow::Result<ExitCode> {
    let layout = iso_tool::load_layout(&args.layout)?;
    let framing = match &args.framing {
        None => None,
        Some(name) => Some(FrameConfig {
            length: name.parse()?,
            tpdu: args.tpdu,
            fixed_header: args.header,
            trailer: args.etx.then_some(ETX),
            max_frame: args.max_frame,
        }),
    };
    let opts = DecodeOptions { layout: &layout, framing, reveal: args.reveal };
    let stdout = std::io::stdout().lock();
    let ok = match &args.input {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            iso_tool::decode(&opts, BufReader::new(file), stdout)?
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("mups iso decode: reading hex lines from the terminal; end with Ctrl-D");
            }
            iso_tool::decode(&opts, stdin.lock(), stdout)?
        }
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn keepalived_render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&ConfigArgs { config: args.config.clone() })?;
    let check = args.check.then_some(args.keepalived.as_str());
    match mups::keepalived::render_command(&cfg, args.output.as_deref(), check) {
        Ok(done) => {
            if let Some(report) = &done.report {
                eprintln!("keepalived --config-test: OK");
                if !report.warnings.trim().is_empty() {
                    eprintln!("{}", report.warnings.trim_end());
                }
            }
            match &done.written {
                Some(path) => eprintln!("{}: written", path.display()),
                None => print!("{}", done.text),
            }
            Ok(ExitCode::SUCCESS)
        }
        // keepalived's verdict is not a usage error: exit 1, as --config-test does.
        Err(e @ mups::keepalived::KeepalivedError::Rejected { .. }) => {
            eprintln!("mups: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", args.config.display())),
    }
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<ApplianceConfig> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    ApplianceConfig::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))
}

fn run(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let cfg = Arc::new(load_config(args)?);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match cfg.mups.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
        n => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build()?,
    };
    runtime.block_on(async {
        mups::runtime::run(cfg, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
