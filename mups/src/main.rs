//! `mups` entry point: parses the command line and runs the command.

use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use mups::cli::{Cli, Command, DecodeArgs, IsoCommand};
use mups::iso_tool::{self, DecodeOptions};
use proto::frame::{ETX, FrameConfig};

/// Exit status for bad usage or configuration (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Iso(IsoCommand::Decode(args)) => iso_decode(args),
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
