//! A loopback peer for `bank-sim`: answers every request at once (response MTI,
//! DE39 = 00). Used to calibrate and benchmark the simulator:
//!
//! ```text
//! cargo run -p sim --release --example bank_loopback -- --listen 127.0.0.1:7000
//! cargo run -p sim --release --bin bank-sim -- -t 127.0.0.1:7000 -n 100 -p 32 -d 10s
//! ```
//!
//! Prints `listening on ADDR` on stdout, then the counts every second on stderr.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use proto::frame::{ETX, FrameConfig, LengthHeader};
use proto::iso8583::Layout;
use sim::bank::loopback::Loopback;

/// Loopback ISO 8583 peer for bank-sim.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// Length header.
    #[arg(long, default_value = "u16be")]
    framing: LengthHeader,
    /// Frames carry a TPDU (swapped in responses).
    #[arg(long)]
    tpdu: bool,
    /// Frames end with ETX.
    #[arg(long)]
    etx: bool,
    /// Message layout.
    #[arg(long, default_value = "iso87-ascii")]
    layout: String,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let framing =
        FrameConfig { tpdu: args.tpdu, trailer: args.etx.then_some(ETX), ..FrameConfig::new(args.framing) };
    let layout = Layout::builtin(&args.layout)?;
    let loopback = Arc::new(Loopback::new(framing, layout, "00")?);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let stats = Arc::clone(&loopback);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = stats.stats().answered.load(Ordering::Relaxed);
                if n != last {
                    eprintln!(
                        "bank_loopback: connections={} answered={} (+{}/s)",
                        stats.stats().connections.load(Ordering::Relaxed),
                        n,
                        n - last
                    );
                    last = n;
                }
            }
        });
        tokio::select! {
            r = loopback.serve(listener) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        anyhow::Ok(())
    })
}
