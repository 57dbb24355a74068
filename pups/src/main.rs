//! `pups` command line. The bank-facing data path is built on [`pups::codec`]; the
//! listener and the local link to `mups` come with the data-path work.

use clap::Parser;

/// PUPS edge proxy.
#[derive(Parser)]
#[command(version, about = "PUPS edge proxy: owns bank TCP sessions and frames their ISO 8583 streams")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "pups: no runtime yet; this build provides the bank codec library only (see docs/architecture.md)"
    );
    std::process::exit(64);
}
