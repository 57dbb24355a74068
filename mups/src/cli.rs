//! The `mups` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// MUPS controller and operator tools.
#[derive(Debug, Parser)]
#[command(version, about = "MUPS controller and operator tools")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(ConfigArgs),
    /// Check a configuration file; print every problem with its key path.
    CheckConfig(ConfigArgs),
    /// ISO 8583 tools.
    #[command(subcommand)]
    Iso(IsoCommand),
    /// Users of the management API and console.
    #[command(subcommand)]
    User(UserCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// keepalived integration (the appliance pair's VIP).
    #[command(subcommand)]
    Keepalived(KeepalivedCommand),
    /// TLS for the management listener.
    #[command(subcommand)]
    Tls(TlsCommand),
}

/// `mups tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600) for the
    /// given host names and addresses: for labs and tests. Browsers warn about it; use a
    /// certificate from your CA in production. Point [mups] tls_cert and tls_key at the files.
    SelfSigned(SelfSignedArgs),
}

/// Arguments of `mups tls self-signed`.
#[derive(Debug, Args)]
pub struct SelfSignedArgs {
    /// Directory to write cert.pem and key.pem into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name or IP address the certificate is for; repeat for several.
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
}

/// `mups keepalived …`
#[derive(Debug, Subcommand)]
pub enum KeepalivedCommand {
    /// Render keepalived.conf from the [vrrp] section of the appliance configuration.
    ///
    /// Without --output the file goes to stdout. With --check, keepalived itself
    /// tests it (`keepalived --config-test`) first; nothing is written or printed if it
    /// fails. --output replaces the file atomically (temporary file + rename).
    Render(RenderArgs),
}

/// Arguments of `mups keepalived render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The appliance configuration (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Write here instead of stdout, e.g. /etc/keepalived/keepalived.conf.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Test the rendered file with `keepalived --config-test` before writing it.
    #[arg(long)]
    pub check: bool,
    /// The keepalived binary --check runs.
    #[arg(long, default_value = crate::keepalived::KEEPALIVED, requires = "check")]
    pub keepalived: String,
}

/// `mups iso …`
#[derive(Debug, Subcommand)]
pub enum IsoCommand {
    /// Decode hex messages (one per line on stdin) to JSON (one object per line on stdout).
    ///
    /// Without --framing each line is one bare message; with it, each line is a wire
    /// stream of length-framed messages. Sensitive fields (PAN, track data, PIN block,
    /// ICC data) are masked unless --reveal is given. A line that does not decode gives
    /// {"error": ..., "offset": N}; the exit status is 1 if any line failed.
    Decode(DecodeArgs),
}

/// Arguments of `mups iso decode`.
#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Message layout: a built-in name (iso87-ascii, iso87-binary, iso87-bcd, iso87-ebcdic)
    /// or the path of a layout file in pyiso8583's vocabulary (*.json).
    #[arg(long)]
    pub layout: String,
    /// Length header of a wire stream: u16be, u16be-incl, u32be, u16be-pad2, ascii4,
    /// ascii4-incl, hex4, bcd2 (and u8be, u24be, asciiN, hexN, bcdN).
    #[arg(long)]
    pub framing: Option<String>,
    /// With --framing: a 5-byte TPDU follows the length header.
    #[arg(long, requires = "framing")]
    pub tpdu: bool,
    /// With --framing: bytes of fixed header after the length (and TPDU).
    #[arg(long, requires = "framing", default_value_t = 0)]
    pub header: usize,
    /// With --framing: frames end with ETX (0x03).
    #[arg(long, requires = "framing")]
    pub etx: bool,
    /// With --framing: largest frame accepted.
    #[arg(long, requires = "framing", default_value_t = proto::frame::DEFAULT_MAX_FRAME)]
    pub max_frame: usize,
    /// Show sensitive fields in clear. For an authorised operator on a secure terminal only.
    #[arg(long)]
    pub reveal: bool,
    /// Read from this file instead of stdin.
    #[arg(long)]
    pub input: Option<PathBuf>,
}

/// A configuration file.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The appliance configuration (TOML), shared with pups.
    #[arg(long, short)]
    pub config: PathBuf,
}

/// `mups user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is read from --password-file, or else as one line from stdin;
    /// never from the command line, where other users could see it in the process list.
    Add(UserAddArgs),
    /// List users.
    List(StateDirArgs),
}

/// Arguments of `mups user add`.
#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// State directory of mups (users.json, audit.jsonl).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// viewer, operator or admin.
    #[arg(long)]
    pub role: crate::auth::Role,
    /// Login name: 1-64 of a-z 0-9 . _ -
    #[arg(long)]
    pub name: String,
    /// Read the password from the first line of this file instead of stdin.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// `mups audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain: exit 0 if it holds, 1 and the first bad entry if not.
    Verify(StateDirArgs),
}

/// A state directory.
#[derive(Debug, Args)]
pub struct StateDirArgs {
    /// State directory of mups (users.json, audit.jsonl).
    #[arg(long)]
    pub state_dir: PathBuf,
}
