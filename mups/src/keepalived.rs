//! `keepalived.conf` from the `[vrrp]` section: rendering (askama), checking with
//! the real `keepalived --config-test`, and installing atomically.
//!
//! The shape of the file is fixed by how the appliance pair hands over (see
//! `docs/appliance-pair.md`): VRRPv3 with sub-second adverts, unicast to the twin,
//! `nopreempt` with both sides starting as BACKUP, a notify FIFO instead of
//! scripts, and a weight-0 `track_file` through which `mups` puts its own side in
//! FAULT (a priority-0 advert: the fastest planned handover).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use askama::Template;
use proto::config::{ApplianceConfig, ConfigIssue, VrrpSection};

/// The keepalived binary `--check` runs, unless told otherwise.
pub const KEEPALIVED: &str = "keepalived";

/// The oldest keepalived whose `--config-test -f FILE` we trust. Directives it
/// does not know still fail the test itself ("Unknown keyword").
pub const MIN_VERSION: (u32, u32, u32) = (2, 0, 0);

/// Why a configuration could not be rendered, checked or installed.
#[derive(Debug, thiserror::Error)]
pub enum KeepalivedError {
    /// The appliance configuration has no `[vrrp]` section.
    #[error("the configuration has no [vrrp] section")]
    NoVrrpSection,
    /// The `[vrrp]` section does not validate (the template does no escaping, so
    /// nothing unvalidated is ever rendered).
    #[error("[vrrp] is not valid:{}", .0.iter().map(|i| format!("\n  vrrp.{i}")).collect::<String>())]
    Invalid(Vec<ConfigIssue>),
    /// The template failed (a bug, not a configuration problem).
    #[error("rendering keepalived.conf: {0}")]
    Template(#[from] askama::Error),
    /// keepalived could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `keepalived --version` printed no version we could read.
    #[error("{program} --version printed no \"Keepalived vX.Y.Z\": {output:?}")]
    UnknownVersion {
        /// The program.
        program: String,
        /// What it printed.
        output: String,
    },
    /// keepalived is older than [`MIN_VERSION`].
    #[error("{program} is keepalived {}.{}.{}; at least {}.{}.{} is needed", found.0, found.1, found.2, MIN_VERSION.0, MIN_VERSION.1, MIN_VERSION.2)]
    TooOld {
        /// The program.
        program: String,
        /// Its version.
        found: (u32, u32, u32),
    },
    /// keepalived found the rendered file unusable.
    #[error("keepalived --config-test rejected the configuration ({status}):\n{diagnostics}")]
    Rejected {
        /// keepalived's exit status (see keepalived(8), "Exit status").
        status: std::process::ExitStatus,
        /// What it printed.
        diagnostics: String,
    },
    /// Writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The template's variables. Every value is validated (or produced by us) before it
/// gets here: keepalived's configuration language has no escaping.
#[derive(Template)]
#[template(path = "keepalived.conf.txt", escape = "none")]
struct KeepalivedConf<'a> {
    appliance: &'a str,
    instance: &'a str,
    interface: &'a str,
    virtual_router_id: u8,
    priority: u8,
    advert_int: String,
    unicast_src_ip: String,
    unicast_peers: Vec<String>,
    vips: Vec<String>,
    track_file: String,
    notify_fifo: String,
}

/// Renders `keepalived.conf` for this appliance.
pub fn render(cfg: &ApplianceConfig) -> Result<String, KeepalivedError> {
    let vrrp = cfg.vrrp.as_ref().ok_or(KeepalivedError::NoVrrpSection)?;
    render_section(&cfg.appliance.id, vrrp)
}

/// Renders `keepalived.conf` from a `[vrrp]` section alone (`appliance` names the
/// file's owner in its header comment and must be printable).
pub fn render_section(appliance: &str, vrrp: &VrrpSection) -> Result<String, KeepalivedError> {
    let issues = vrrp.issues();
    if !issues.is_empty() {
        return Err(KeepalivedError::Invalid(issues));
    }
    // The appliance id only lands in a comment, but a newline there would end it.
    let appliance = appliance.lines().next().unwrap_or_default();
    let conf = KeepalivedConf {
        appliance,
        instance: &vrrp.instance,
        interface: &vrrp.interface,
        virtual_router_id: vrrp.virtual_router_id,
        priority: vrrp.priority,
        advert_int: format!("{}.{:02}", vrrp.advert_int_ms / 1000, vrrp.advert_int_ms % 1000 / 10),
        unicast_src_ip: vrrp.unicast_src_ip.to_string(),
        unicast_peers: vrrp.unicast_peers.iter().map(ToString::to_string).collect(),
        vips: vrrp
            .vips
            .iter()
            .map(|vip| {
                // Without -nodad an IPv6 VIP is "tentative" for a second after
                // takeover, and restored sockets could not use it.
                let nodad = if vip.addr().is_ipv6() { " -nodad" } else { "" };
                format!("{vip} dev {}{nodad}", vrrp.interface)
            })
            .collect(),
        track_file: path_str(&vrrp.track_file_path()),
        notify_fifo: path_str(&vrrp.notify_fifo_path()),
    };
    let mut text = conf.render()?;
    // askama drops the template's final newline; a text file ends with one.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

fn path_str(p: &Path) -> String {
    // Validated as UTF-8 by VrrpSection::issues.
    p.to_string_lossy().into_owned()
}

/// What `keepalived --config-test` said about a file it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigTestReport {
    /// Anything it printed although it exited 0 (warnings); usually empty.
    pub warnings: String,
}

/// The version `program --version` reports (keepalived prints it on stderr:
/// `Keepalived v2.2.7 (01/16,2022)`).
pub fn version(program: &str) -> Result<(u32, u32, u32), KeepalivedError> {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|source| KeepalivedError::Spawn { program: program.into(), source })?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    parse_version(&text).ok_or_else(|| KeepalivedError::UnknownVersion {
        program: program.into(),
        output: text.trim().to_owned(),
    })
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "Keepalived")?;
    let mut nums = words.next()?.strip_prefix('v')?.split('.').map(|n| {
        // "2.2.8-r1", "2.3.1+": the leading digits.
        let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((nums.next()??, nums.next().flatten().unwrap_or(0), nums.next().flatten().unwrap_or(0)))
}

/// Runs `program --config-test -f path`, after checking that `program` is
/// keepalived ≥ [`MIN_VERSION`].
///
/// The file must exist: keepalived 2.2.7 reports a missing file but still exits 0,
/// so that case is refused here before keepalived runs.
pub fn config_test(program: &str, path: &Path) -> Result<ConfigTestReport, KeepalivedError> {
    if let Err(source) = std::fs::metadata(path) {
        return Err(KeepalivedError::Io { path: path.to_owned(), source });
    }
    let found = version(program)?;
    if found < MIN_VERSION {
        return Err(KeepalivedError::TooOld { program: program.into(), found });
    }
    // Not `--config-test=FILE`: there FILE is where diagnostics go, and keepalived
    // would test its default configuration instead.
    let out = Command::new(program)
        .arg("--config-test")
        .arg("-f")
        .arg(path)
        .output()
        .map_err(|source| KeepalivedError::Spawn { program: program.into(), source })?;
    let mut diagnostics = String::from_utf8_lossy(&out.stderr).into_owned();
    diagnostics.push_str(&String::from_utf8_lossy(&out.stdout));
    if out.status.success() {
        Ok(ConfigTestReport { warnings: diagnostics })
    } else {
        Err(KeepalivedError::Rejected { status: out.status, diagnostics })
    }
}

/// A rendered configuration in a file of its own next to where it will be
/// installed, removed on drop unless [`Staged::install`] renamed it into place.
#[derive(Debug)]
pub struct Staged {
    temp: PathBuf,
    installed: bool,
}

impl Staged {
    /// Writes `text` to a temporary file in `target`'s directory (so the final rename
    /// stays on one file system) and syncs it.
    pub fn write(target: &Path, text: &str) -> Result<Self, KeepalivedError> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = target.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let io = |source| KeepalivedError::Io { path: temp.clone(), source };
        let mut file = std::fs::File::create(&temp).map_err(io)?;
        let staged = Self { temp: temp.clone(), installed: false };
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(staged)
    }

    /// The temporary file.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Renames the file over `target`: readers see the old file or the new one,
    /// never a half-written one.
    pub fn install(mut self, target: &Path) -> Result<(), KeepalivedError> {
        std::fs::rename(&self.temp, target)
            .map_err(|source| KeepalivedError::Io { path: target.to_owned(), source })?;
        self.installed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// `mups keepalived render`: renders, optionally checks with keepalived, and writes
/// to `output` (atomically, and only once the check passed) or returns the text for
/// standard output.
pub fn render_command(
    cfg: &ApplianceConfig,
    output: Option<&Path>,
    check: Option<&str>,
) -> Result<RenderOutcome, KeepalivedError> {
    let text = render(cfg)?;
    let target = match output {
        Some(p) => p.to_owned(),
        None => std::env::temp_dir().join("mups-keepalived.conf"),
    };
    let staged = match (output, check) {
        (None, None) => return Ok(RenderOutcome { text, report: None, written: None }),
        _ => Staged::write(&target, &text)?,
    };
    let report = match check {
        Some(program) => Some(config_test(program, staged.path())?),
        None => None,
    };
    let written = match output {
        Some(path) => {
            staged.install(path)?;
            Some(path.to_owned())
        }
        None => None,
    };
    Ok(RenderOutcome { text, report, written })
}

/// What [`render_command`] did.
#[derive(Debug)]
pub struct RenderOutcome {
    /// The rendered configuration.
    pub text: String,
    /// keepalived's verdict, when asked for.
    pub report: Option<ConfigTestReport>,
    /// Where the file was installed, if anywhere.
    pub written: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_are_read_from_keepalived_banners() {
        assert_eq!(
            parse_version("Keepalived v2.2.7 (01/16,2022)\n\nCopyright(C) 2001-2022"),
            Some((2, 2, 7))
        );
        assert_eq!(parse_version("Keepalived v2.3.1+ (05/24,2024)"), Some((2, 3, 1)));
        assert_eq!(parse_version("Keepalived v1.3"), Some((1, 3, 0)));
        assert_eq!(parse_version("keepalived: command not found"), None);
        assert_eq!(parse_version("Keepalived vX"), None);
    }
}
