//! The demo lab's appliance pair (`scripts/lab up` as root): builds the network
//! namespaces of `e2e::pair`, starts everything, starts the bank simulators, and
//! writes `lab.json`; `down` stops it all.
//!
//! ```text
//! pair-lab up   --dir lab/out [--subnet 10] [--token T] [--rate 25] [--sessions 2]
//!               [--admin-password-file F]
//! pair-lab down --dir lab/out
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use e2e::pair::{PairLab, PairOptions, bin_dir, pair_banks};
use serde_json::json;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        eprintln!(
            "usage: pair-lab up|down --dir DIR [--subnet N] [--token T] [--rate R] [--sessions N] [--hold-queue N]"
        );
        return ExitCode::from(64);
    };
    let dir = PathBuf::from(arg(&args, "--dir").unwrap_or_else(|| "lab/out".into()));
    let prefix = "lab".to_owned();
    match cmd.as_str() {
        "up" => up(&args, dir, prefix),
        "down" => down(&dir, &prefix),
        other => {
            eprintln!("pair-lab: unknown command {other:?}");
            ExitCode::from(64)
        }
    }
}

fn up(args: &[String], dir: PathBuf, prefix: String) -> ExitCode {
    let subnet: u8 = arg(args, "--subnet").and_then(|s| s.parse().ok()).unwrap_or(10);
    let token = arg(args, "--token").unwrap_or_else(|| "lab-token".into());
    let rate: f64 = arg(args, "--rate").and_then(|s| s.parse().ok()).unwrap_or(25.0);
    let sessions: u32 = arg(args, "--sessions").and_then(|s| s.parse().ok()).unwrap_or(2);
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    let opts = PairOptions {
        prefix,
        subnet,
        dir: dir.clone(),
        keep_dir: true,
        bin_dir: bin_dir(),
        banks: pair_banks(),
        token: token.clone(),
        http_port: 9100,
        admin_password: arg(args, "--admin-password-file")
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim_end().to_owned()),
        // `--hold-queue N`: the network lock holds bank packets instead of dropping them.
        hold_queue: arg(args, "--hold-queue").and_then(|s| s.parse().ok()),
    };
    let mut lab = match PairLab::up(opts) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("pair-lab: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A long run: the demo lab keeps its banks busy until `down`.
    if let Err(e) = lab.start_bank_sims(sessions, rate, Duration::from_secs(7 * 24 * 3600)) {
        eprintln!("pair-lab: {e}");
        return ExitCode::FAILURE;
    }
    let active = lab.wait_pair(Duration::from_secs(30)).unwrap_or(0);
    let appliances: Vec<_> = [1, 2]
        .iter()
        .map(|&n| {
            json!({
                "id": format!("app{n}"),
                "netns": lab.ns(&format!("app{n}")),
                "address": lab.app_addr(n).to_string(),
                "management_url": format!("https://{}", lab.mgmt(n)),
                "config": lab.config_path(n).display().to_string(),
                "active": n == active,
            })
        })
        .collect();
    let banks: Vec<_> = lab
        .opts
        .banks
        .iter()
        .map(|b| {
            json!({"id": b.id, "host": lab.vip().to_string(), "port": b.port, "framing": b.framing,
                   "tpdu": b.tpdu, "layout": b.layout, "active_node": b.active, "netns": lab.ns("bank")})
        })
        .collect();
    let namespaces: Vec<String> = ["sw", "bank", "app1", "app2", "fo"].iter().map(|w| lab.ns(w)).collect();
    let description = json!({
        "vip": lab.vip().to_string(),
        "api": {"token": token, "urls": [format!("https://{}", lab.mgmt(1)), format!("https://{}", lab.mgmt(2))],
                "ca_cert": lab.opts.dir.join("tls/cert.pem").display().to_string()},
        "appliances": appliances,
        "banks": banks,
        "fo_nodes": [{"id": "A", "address": format!("10.213.{subnet}.20:7001")},
                     {"id": "B", "address": format!("10.213.{subnet}.20:7002")}],
        "namespaces": namespaces,
        "host_link": format!("{}-h", lab.opts.prefix),
    });
    let pids = lab.detach();
    let _ = std::fs::write(dir.join("pids.json"), json!(pids).to_string());
    let _ =
        std::fs::write(dir.join("lab.json"), serde_json::to_string_pretty(&description).unwrap_or_default());
    println!("{}", serde_json::to_string_pretty(&description).unwrap_or_default());
    ExitCode::SUCCESS
}

fn down(dir: &std::path::Path, prefix: &str) -> ExitCode {
    if let Ok(text) = std::fs::read_to_string(dir.join("pids.json")) {
        let pids: Vec<(String, u32)> = serde_json::from_str(&text).unwrap_or_default();
        // Bank simulators first: SIGINT makes them write their reports.
        for (name, pid) in &pids {
            let sig = if name.starts_with("bank-sim-") { "-INT" } else { "-TERM" };
            let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
        }
        std::thread::sleep(Duration::from_secs(2));
        for (_, pid) in &pids {
            let _ = Command::new("kill")
                .arg("-9")
                .arg(pid.to_string())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_file(dir.join("pids.json"));
    }
    let _ = Command::new("ip").args(["link", "del", &format!("{prefix}-h")]).status();
    for which in ["fo", "app2", "app1", "bank", "sw"] {
        let _ = Command::new("ip").args(["netns", "del", &format!("{prefix}-{which}")]).status();
    }
    ExitCode::SUCCESS
}
