//! `mups keepalived render`: the rendered file's key lines, configuration errors,
//! and the real `keepalived --config-test` (root: it runs in a throwaway network
//! namespace that has the configured interface).

mod common;

use std::path::Path;
use std::process::Command;

use common::Netns;
use mups::keepalived::{self, KeepalivedError};
use proto::config::ApplianceConfig;

fn appliance_toml(dir: &Path, vrrp_extra: &str) -> String {
    format!(
        r#"
[appliance]
id = "app-1"
local_link = "{dir}/pups.sock"

[[fo_node]]
id = "A"
address = "127.0.0.1:7001"

[vrrp]
interface = "bank0"
virtual_router_id = 51
vips = ["192.0.2.10/24", "192.0.2.11/24"]
unicast_src_ip = "198.51.100.1"
unicast_peers = ["198.51.100.2"]
state_dir = "{dir}"
{vrrp_extra}
"#,
        dir = dir.display()
    )
}

/// The lines of the block that opens with `header`, trimmed, without the braces.
fn block<'a>(conf: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = conf.lines().map(str::trim).skip_while(|l| *l != format!("{header} {{"));
    lines.next().unwrap_or_else(|| panic!("no block {header:?} in\n{conf}"));
    let mut depth = 1;
    let mut out = Vec::new();
    for l in lines {
        depth += l.matches('{').count();
        depth -= l.matches('}').count();
        if depth == 0 {
            return out;
        }
        if !l.is_empty() && !l.starts_with('#') {
            out.push(l);
        }
    }
    panic!("block {header:?} does not end")
}

#[test]
fn the_rendered_file_has_the_pair_settings() {
    let dir = tempfile::tempdir().unwrap();
    let toml = appliance_toml(dir.path(), "priority = 110\nadvert_int_ms = 50\ninstance = \"VI_BANKS\"");
    let cfg = ApplianceConfig::from_toml_str(&toml).unwrap();
    let conf = keepalived::render(&cfg).unwrap();
    let d = dir.path().display();

    let global = block(&conf, "global_defs");
    assert!(global.contains(&"vrrp_version 3"), "{conf}");
    assert!(global.contains(&"fifo_write_vrrp_states_on_reload"), "{conf}");
    assert!(global.contains(&format!("vrrp_notify_fifo \"{d}/vrrp.fifo\"").as_str()), "{conf}");

    let track = block(&conf, "track_file pups_fault");
    assert_eq!(track, [format!("file \"{d}/vrrp.track\"").as_str(), "weight 0", "init_file 1"]);

    let inst = block(&conf, "vrrp_instance VI_BANKS");
    for line in [
        "state BACKUP",
        "nopreempt",
        "interface bank0",
        "virtual_router_id 51",
        "priority 110",
        "advert_int 0.05",
        "unicast_src_ip 198.51.100.1",
        "check_unicast_src",
    ] {
        assert!(inst.contains(&line), "{line:?} missing from\n{conf}");
    }
    assert!(!inst.iter().any(|l| l.starts_with("state MASTER") || l.starts_with("authentication")));
    assert_eq!(block(&conf, "unicast_peer"), ["198.51.100.2"]);
    assert_eq!(block(&conf, "virtual_ipaddress"), ["192.0.2.10/24 dev bank0", "192.0.2.11/24 dev bank0"]);
    // The instance's track_file block, not the definition above it.
    assert_eq!(block(&conf, "track_file"), ["pups_fault weight 0"]);
    // Nothing forks a script on a state change.
    assert!(!conf.contains("notify_master") && !conf.contains("notify \""), "{conf}");
}

#[test]
fn the_default_advert_interval_is_sub_second_and_ipv6_vips_skip_dad() {
    let dir = tempfile::tempdir().unwrap();
    let toml = appliance_toml(dir.path(), "")
        .replace(r#"["192.0.2.10/24", "192.0.2.11/24"]"#, r#"["2001:db8::10/64"]"#)
        .replace("198.51.100.1", "2001:db8::1")
        .replace("198.51.100.2", "2001:db8::2");
    let conf = keepalived::render(&ApplianceConfig::from_toml_str(&toml).unwrap()).unwrap();
    let inst = block(&conf, "vrrp_instance PUPS");
    assert!(inst.contains(&"advert_int 0.10"), "{conf}");
    assert_eq!(block(&conf, "virtual_ipaddress"), ["2001:db8::10/64 dev bank0 -nodad"]);
}

#[test]
fn invalid_or_missing_vrrp_settings_are_refused_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ApplianceConfig::from_toml_str(&appliance_toml(dir.path(), "")).unwrap();
    let mut vrrp = cfg.vrrp.clone().unwrap();
    // What a programmatic caller could build past the TOML validation: a name that
    // would inject configuration.
    vrrp.instance = "PUPS {\n  priority 255".into();
    vrrp.unicast_peers.clear();
    let err = keepalived::render_section("app-1", &vrrp).unwrap_err();
    let KeepalivedError::Invalid(issues) = &err else { panic!("{err}") };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["instance", "unicast_peers"], "{err}");
    assert!(err.to_string().contains("vrrp.instance"), "{err}");

    cfg.vrrp = None;
    assert!(matches!(keepalived::render(&cfg), Err(KeepalivedError::NoVrrpSection)));

    // Through the command line: the TOML error names file and key; exit status 64.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        appliance_toml(dir.path(), "").replace("virtual_router_id = 51", "virtual_router_id = 0"),
    )
    .unwrap();
    let out = mups_cmd().args(["keepalived", "render", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml") && stderr.contains("vrrp.virtual_router_id"), "{stderr}");
    assert!(out.stdout.is_empty());
}

fn mups_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mups"))
}

/// A keepalived that runs inside `ns`, so its config test sees `ns`'s interfaces.
fn keepalived_in(ns: &Netns, dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("keepalived-in-ns");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec ip netns exec {} keepalived \"$@\"\n", ns.name))
        .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn keepalived_accepts_the_rendered_file_and_output_is_replaced_only_after_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("kr");
    ns.ip(&["link", "add", "bank0", "type", "veth", "peer", "name", "bank1"]);
    let wrapper = keepalived_in(&ns, dir.path());
    let config = dir.path().join("appliance.toml");
    std::fs::write(&config, appliance_toml(dir.path(), "")).unwrap();
    let output = dir.path().join("keepalived.conf");
    std::fs::write(&output, "# the previous file\n").unwrap();

    let out = mups_cmd()
        .args(["keepalived", "render", "--check", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&output)
        .arg("--keepalived")
        .arg(&wrapper)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("keepalived --config-test: OK"), "{stderr}");
    let cfg = ApplianceConfig::from_toml_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), keepalived::render(&cfg).unwrap());
    // The same check through the library, on the installed file.
    keepalived::config_test(wrapper.to_str().unwrap(), &output).unwrap();

    // An interface this host does not have: our validation cannot know, keepalived
    // does. The installed file stays as it was and no temporary file is left.
    std::fs::write(&config, appliance_toml(dir.path(), "").replace("bank0", "nosuch0")).unwrap();
    let before = std::fs::read_to_string(&output).unwrap();
    let out = mups_cmd()
        .args(["keepalived", "render", "--check", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&output)
        .arg("--keepalived")
        .arg(&wrapper)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected") && stderr.contains("nosuch0"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), before);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    left.sort();
    assert_eq!(left, ["appliance.toml", "keepalived-in-ns", "keepalived.conf"]);

    // Without --output, a checked file goes to stdout.
    std::fs::write(&config, appliance_toml(dir.path(), "")).unwrap();
    let out = mups_cmd()
        .args(["keepalived", "render", "--check", "--config"])
        .arg(&config)
        .arg("--keepalived")
        .arg(&wrapper)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), keepalived::render(&cfg).unwrap());
}

#[test]
fn the_installed_keepalived_is_new_enough_and_an_old_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let found = keepalived::version(keepalived::KEEPALIVED).unwrap();
    assert!(found >= keepalived::MIN_VERSION, "{found:?}");

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("keepalived-1");
    std::fs::write(&old, "#!/bin/sh\necho 'Keepalived v1.3.5 (03/19,2017)' >&2\nexit 0\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = dir.path().join("keepalived.conf");
    std::fs::write(&conf, "").unwrap();
    let err = keepalived::config_test(old.to_str().unwrap(), &conf).unwrap_err();
    assert!(matches!(err, KeepalivedError::TooOld { found: (1, 3, 5), .. }), "{err}");
}
