//! Configuration of the FO node simulator: who the node is, where it listens,
//! which banks it serves (and how to read their messages), how it answers, what it
//! originates, and the test hooks it starts with.
//!
//! One serde shape serves a configuration file (JSON or TOML, chosen by the file
//! extension), the library API and the binary's flags, which only add to or
//! override a file. Everything is checked before the node starts, and every
//! problem is reported at once, naming the item: a staging node that refuses to
//! start is better than one that answers garbage.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use proto::fo_link::{self, NackReason};
use proto::iso8583::{Layout, MatchKeyConfig, Mti, RawFieldSpec, Role};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::rules::{Action, Rule};

/// Everything a node needs to run. `Default` is node `A` on `127.0.0.1:0` serving
/// no bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FoNodeConfig {
    /// The node id sent in `HELLO` (`A`, `B`).
    pub node_id: String,
    /// Address to listen on for `mups`; port 0 picks a free port
    /// ([`FoNodeHandle::local_addr`](super::FoNodeHandle::local_addr) says which).
    pub listen: SocketAddr,
    /// The banks the node serves, by bank id.
    pub banks: BTreeMap<String, BankConfig>,
    /// Response rules, in order; the first match wins (see [`Rule`]).
    pub rules: Vec<Rule>,
    /// Traffic the node originates to banks.
    pub originate: Vec<OriginateConfig>,
    /// Send our own `HEARTBEAT`s on each link at this interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Close a link when nothing at all has been received on it for this long
    /// (a lost controller). `None`: wait forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_timeout_ms: Option<u64>,
    /// Close a link whose peer has not sent `HELLO` within this time.
    pub hello_timeout_ms: u64,
    /// Deadline given to received requests (`CONTEXT.deadline_micros` is their
    /// reception time plus this).
    pub request_deadline_ms: u64,
    /// The protocol versions offered in `HELLO`: `[min, max]`. Tests change it to
    /// exercise negotiation; the codec speaks only version
    /// [`fo_link::VERSION`].
    pub versions: [u8; 2],
    /// Software name and version in `HELLO`.
    pub software: String,
    /// The fields that make a request's matching key (sent in `CONTEXT`).
    pub match_key: MatchKeyConfig,
    /// Largest FO link frame accepted (bytes after the length field).
    pub max_frame: usize,
    /// Answer requests taken over by `CONTEXT` when due even before `ACTIVATE`.
    /// Off by default: until `ACTIVATE` the switchover may still be aborted, and
    /// the source would then answer them too.
    pub answer_before_activate: bool,
    /// Test hooks in force at start; changed at run time through the handle.
    pub hooks: Hooks,
}

/// The longest time any `*_ms` setting may say: one day.
pub const MAX_MS: u64 = 86_400_000;

impl Default for FoNodeConfig {
    fn default() -> Self {
        Self {
            node_id: "A".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            banks: BTreeMap::new(),
            rules: Vec::new(),
            originate: Vec::new(),
            heartbeat_interval_ms: None,
            controller_timeout_ms: None,
            hello_timeout_ms: 5_000,
            request_deadline_ms: 30_000,
            versions: [fo_link::MIN_VERSION, fo_link::MAX_VERSION],
            software: concat!("fo-sim ", env!("CARGO_PKG_VERSION")).to_owned(),
            match_key: MatchKeyConfig::default(),
            max_frame: fo_link::DEFAULT_MAX_FRAME,
            answer_before_activate: false,
            hooks: Hooks::default(),
        }
    }
}

/// One bank the node serves. In a file, a bare layout name is short for
/// `{ layout = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BankConfig {
    /// The bank's ISO 8583 layout: a built-in name (`iso87-ascii`, `iso87-binary`,
    /// `iso87-bcd`, `iso87-ebcdic`).
    pub layout: String,
    /// Whether the node serves the bank from the start. A node that is not active
    /// still answers what it receives (routing is `mups`'s decision) but counts it
    /// as `data_while_inactive`, and originates nothing to the bank.
    pub active: bool,
    /// Per-field overrides of the layout, in pyiso8583's vocabulary (keys are field
    /// numbers).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, RawFieldSpec>,
}

impl BankConfig {
    /// An active bank with a built-in layout.
    pub fn new(layout: &str) -> Self {
        Self { layout: layout.to_owned(), active: true, fields: BTreeMap::new() }
    }

    /// The bank's layout, overrides applied.
    pub fn resolve_layout(&self, bank: &str) -> Result<Layout, Vec<String>> {
        let base = Layout::builtin(&self.layout).map_err(|e| vec![e.to_string()])?;
        if self.fields.is_empty() {
            return Ok(base.clone());
        }
        base.with_overrides(&format!("{}+{bank}", self.layout), &self.fields)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }
}

/// The table form of [`BankConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BankTable {
    layout: String,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    fields: BTreeMap<String, RawFieldSpec>,
}

fn yes() -> bool {
    true
}

impl<'de> Deserialize<'de> for BankConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BankVisitor;

        impl<'de> Visitor<'de> for BankVisitor {
            type Value = BankConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a layout name, or a table with layout, active and fields")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<BankConfig, E> {
                Ok(BankConfig::new(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BankConfig, A::Error> {
                let t = BankTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(BankConfig { layout: t.layout, active: t.active, fields: t.fields })
            }
        }

        d.deserialize_any(BankVisitor)
    }
}

/// Traffic the node originates to one bank: requests at a rate, echo tests, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateConfig {
    /// The bank (issuer) the requests go to.
    pub bank: String,
    /// Requests per second; 0 sends none (echo tests only).
    #[serde(default)]
    pub rate: f64,
    /// MTI of the requests.
    #[serde(default = "default_origin_mti")]
    pub mti: String,
    /// Stop after this many requests (echo tests not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// An originated request (or echo) not answered within this time is counted as
    /// timed out.
    #[serde(default = "default_origin_timeout")]
    pub timeout_ms: u64,
    /// Send an 0800 echo test (DE70 `301`) at this interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval_ms: Option<u64>,
    /// Field values replacing or adding to the defaults (keys are field numbers,
    /// values in the encoder's conventions: text, hex for binary, digits for BCD).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

fn default_origin_mti() -> String {
    "0100".to_owned()
}

fn default_origin_timeout() -> u64 {
    5_000
}

impl OriginateConfig {
    /// Requests to `bank` at `rate` per second, defaults otherwise.
    pub fn new(bank: &str, rate: f64) -> Self {
        Self {
            bank: bank.to_owned(),
            rate,
            mti: default_origin_mti(),
            count: None,
            timeout_ms: default_origin_timeout(),
            echo_interval_ms: None,
            fields: BTreeMap::new(),
        }
    }

    /// The field overrides as numbers; keys that are not field numbers are skipped
    /// (validation reports them).
    pub(crate) fn field_overrides(&self) -> Vec<(u8, String)> {
        self.fields.iter().filter_map(|(k, v)| Some((k.parse().ok()?, v.clone()))).collect()
    }
}

/// A switchover command, as named by the hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandKind {
    /// `SYNC_BEGIN`.
    SyncBegin,
    /// `CONTEXT` (to a target node).
    Context,
    /// `ACTIVATE`.
    Activate,
    /// `DEACTIVATE`.
    Deactivate,
}

impl CommandKind {
    /// Every command.
    pub const ALL: [Self; 4] = [Self::SyncBegin, Self::Context, Self::Activate, Self::Deactivate];

    /// The protocol name (`SYNC_BEGIN`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::SyncBegin => "SYNC_BEGIN",
            Self::Context => "CONTEXT",
            Self::Activate => "ACTIVATE",
            Self::Deactivate => "DEACTIVATE",
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A command name that is not one of [`CommandKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown command {0:?}: expected SYNC_BEGIN, CONTEXT, ACTIVATE or DEACTIVATE")]
pub struct UnknownCommand(pub String);

impl FromStr for CommandKind {
    type Err = UnknownCommand;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase().replace('-', "_");
        Self::ALL.into_iter().find(|k| k.name() == upper).ok_or_else(|| UnknownCommand(s.to_owned()))
    }
}

/// Misbehaviour on demand, for tests and failure drills. Applies to every link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Commands answered with `NACK` (reason [`Hooks::nack_reason`]) instead of
    /// being carried out.
    pub nack_on: BTreeSet<CommandKind>,
    /// Commands swallowed: neither carried out nor answered (to exercise `mups`'s
    /// command timeout).
    pub ignore_on: BTreeSet<CommandKind>,
    /// Commands handled only after this many milliseconds (then as the other hooks
    /// say). Traffic and heartbeats are not held up meanwhile.
    pub delay_ms_on: BTreeMap<CommandKind, u64>,
    /// The reason code of hooked `NACK`s (6, `Internal`, by default).
    pub nack_reason: u16,
    /// Stop answering `HEARTBEAT`s (a stalled node, as `mups` sees it).
    pub ignore_heartbeats: bool,
    /// Skip the scheduled origination ticks (requests and echo tests; counted in
    /// `originate_skipped`), e.g. until the banks are connected, or so that a test
    /// can wait for every originated request to be answered. One-off `originate`
    /// commands still go.
    pub pause_origination: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            nack_on: BTreeSet::new(),
            ignore_on: BTreeSet::new(),
            delay_ms_on: BTreeMap::new(),
            nack_reason: NackReason::Internal.code(),
            ignore_heartbeats: false,
            pause_origination: false,
        }
    }
}

/// A configuration that cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (line and column included).
        message: String,
    },
    /// The file name does not end in `.json` or `.toml`.
    #[error("{0}: configuration files end in .json or .toml")]
    UnknownFormat(String),
    /// The configuration parses but does not make sense; every problem is listed.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl FoNodeConfig {
    /// Reads a configuration file: JSON if its name ends in `.json`, TOML if `.toml`.
    /// The result is not validated yet ([`FoNodeConfig::validate`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: name.clone(), source })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                Self::from_json(&text).map_err(|message| ConfigError::Parse { path: name, message })
            }
            Some("toml") => {
                Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: name, message })
            }
            _ => Err(ConfigError::UnknownFormat(name)),
        }
    }

    /// Parses JSON text; the error is the parser's message.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// Parses TOML text; the error is the parser's message.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks everything the node will rely on; lists every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(|_| ())
    }

    /// The banks' layouts, once every check has passed.
    pub(crate) fn resolve(&self) -> Result<BTreeMap<String, Layout>, ConfigError> {
        let mut errors = Vec::new();
        if self.node_id.is_empty() {
            errors.push("node_id is empty".to_owned());
        }
        let [min, max] = self.versions;
        if min > max {
            errors.push(format!("versions [{min}, {max}]: min is over max"));
        }
        if let Err(e) = self.match_key.validate() {
            errors.extend(e.iter().map(|e| format!("match_key: {e}")));
        }
        let durations = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("controller_timeout_ms", self.controller_timeout_ms),
            ("hello_timeout_ms", Some(self.hello_timeout_ms)),
            ("request_deadline_ms", Some(self.request_deadline_ms)),
        ];
        let hooked = self.hooks.delay_ms_on.iter().map(|(k, v)| (k.name(), Some(*v)));
        for (name, ms) in durations.into_iter().chain(hooked) {
            if ms.is_some_and(|ms| ms > MAX_MS) {
                errors.push(format!("{name}: {} ms is over a day", ms.unwrap_or_default()));
            }
        }
        if self.max_frame < fo_link::HEADER_LEN {
            errors.push(format!("max_frame {} is below a frame header", self.max_frame));
        }
        let mut layouts = BTreeMap::new();
        for (bank, cfg) in &self.banks {
            if bank.is_empty() {
                errors.push("a bank id is empty".to_owned());
            }
            match cfg.resolve_layout(bank) {
                Ok(layout) => {
                    layouts.insert(bank.clone(), layout);
                }
                Err(e) => errors.extend(e.into_iter().map(|e| format!("bank {bank}: {e}"))),
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let label = rule.label(i);
            if let Err(e) = rule.validate() {
                errors.extend(e.iter().map(|e| format!("rule {label}: {e}")));
            }
            if let Some(bank) = &rule.bank {
                if !self.banks.contains_key(bank) {
                    errors.push(format!("rule {label}: unknown bank {bank:?}"));
                }
            }
            if rule.action == Action::Respond {
                for (bank, layout) in
                    layouts.iter().filter(|(b, _)| rule.bank.as_ref().is_none_or(|r| r == *b))
                {
                    if let Err(e) = layout.encode_to_vec("0110", [(39, rule.response_code())]) {
                        errors.push(format!(
                            "rule {label}: code {:?} does not fit bank {bank}'s DE39: {e}",
                            rule.response_code()
                        ));
                    }
                }
            }
        }
        for o in &self.originate {
            let what = format!("originate to {}", o.bank);
            if !self.banks.contains_key(&o.bank) {
                errors.push(format!("{what}: unknown bank"));
            }
            if !o.rate.is_finite() || o.rate < 0.0 || o.rate > 100_000.0 {
                errors.push(format!("{what}: rate {} is not between 0 and 100000 per second", o.rate));
            }
            match o.mti.parse::<Mti>() {
                Ok(mti) if mti.role() == Role::Request => {}
                _ => errors.push(format!("{what}: mti {:?} is not a request MTI", o.mti)),
            }
            if o.timeout_ms == 0 || o.timeout_ms > MAX_MS {
                errors.push(format!("{what}: timeout_ms {} is not between 1 ms and a day", o.timeout_ms));
            }
            if let Some(ms) = o.echo_interval_ms.filter(|ms| *ms == 0 || *ms > MAX_MS) {
                errors.push(format!("{what}: echo_interval_ms {ms} is not between 1 ms and a day"));
            }
            for key in o.fields.keys() {
                if !matches!(key.parse::<u8>(), Ok(2..=128)) {
                    errors.push(format!("{what}: field key {key:?} is not 2-128"));
                }
            }
            if let Some(layout) = layouts.get(&o.bank) {
                let probe = super::respond::build_request(
                    layout,
                    super::respond::OriginKind::Request,
                    &o.mti,
                    &o.field_overrides(),
                    1,
                    std::time::SystemTime::now(),
                );
                if let Err(e) = probe {
                    errors.push(format!("{what}: the request cannot be encoded: {e}"));
                }
            }
        }
        if errors.is_empty() { Ok(layouts) } else { Err(ConfigError::Invalid(errors)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
node_id = "B"
listen = "127.0.0.1:7002"
heartbeat_interval_ms = 500

[banks]
bank-1 = "iso87-ascii"
bank-2 = { layout = "iso87-bcd", active = false }

[[rules]]
name = "stolen"
pan_prefix = "400000"
code = "43"

[[rules]]
mti = "02"
delay_ms = 1500

[[rules]]
amount_over = 99999999
action = "close"

[[originate]]
bank = "bank-1"
rate = 50
echo_interval_ms = 1000
fields = { "49" = "978" }

[hooks]
nack_on = ["ACTIVATE"]
delay_ms_on = { SYNC_BEGIN = 500 }
"#;

    #[test]
    fn toml_and_json_give_the_same_config() {
        let cfg = FoNodeConfig::from_toml(TOML).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.node_id, "B");
        assert_eq!(cfg.banks["bank-1"], BankConfig::new("iso87-ascii"));
        assert!(!cfg.banks["bank-2"].active);
        assert_eq!(cfg.rules.len(), 3);
        assert_eq!(cfg.rules[2].action, Action::Close);
        assert_eq!(cfg.originate[0].mti, "0100");
        assert_eq!(cfg.originate[0].field_overrides(), vec![(49, "978".to_owned())]);
        assert!(cfg.hooks.nack_on.contains(&CommandKind::Activate));
        assert_eq!(cfg.hooks.delay_ms_on[&CommandKind::SyncBegin], 500);
        assert_eq!(cfg.hello_timeout_ms, 5_000);

        let json = serde_json::to_string_pretty(&cfg).unwrap();
        assert_eq!(FoNodeConfig::from_json(&json).unwrap(), cfg);
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fo-sim.example.toml");
        let cfg = FoNodeConfig::load(&path).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.banks.len(), cfg.rules.len(), cfg.originate.len()), (3, 4, 1));
        assert!(matches!(FoNodeConfig::load(Path::new("x.yaml")), Err(ConfigError::Io { .. })));
        let dir = std::env::temp_dir().join(format!("fo-sim-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("c.yaml");
        std::fs::write(&yaml, "node_id: A").unwrap();
        assert!(matches!(FoNodeConfig::load(&yaml), Err(ConfigError::UnknownFormat(_))));
        let json = dir.join("c.json");
        std::fs::write(&json, "{\"node_id\": 3}").unwrap();
        assert!(matches!(FoNodeConfig::load(&json), Err(ConfigError::Parse { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
node_id = ""
versions = [2, 1]
[banks]
bank-1 = "iso87-nope"
bank-2 = "iso87-ascii"
[[rules]]
code = "000"
[[rules]]
bank = "bank-9"
[[rules]]
action = "drop"
delay_ms = 5
[hooks]
delay_ms_on = { ACTIVATE = 86400001 }
[[originate]]
bank = "bank-3"
rate = -1
echo_interval_ms = 0
mti = "0110"
fields = { "x" = "1" }
"#;
        let cfg = FoNodeConfig::from_toml(text).unwrap();
        let Err(ConfigError::Invalid(errors)) = cfg.validate() else { panic!("must be invalid") };
        let all = errors.join("\n");
        for needle in [
            "node_id is empty",
            "versions [2, 1]",
            "bank bank-1: unknown layout",
            "rule #0: code \"000\" does not fit bank bank-2",
            "rule #1: unknown bank \"bank-9\"",
            "rule #2: delay_ms given with action drop",
            "originate to bank-3: unknown bank",
            "rate -1",
            "mti \"0110\" is not a request MTI",
            "field key \"x\"",
            "ACTIVATE: 86400001 ms is over a day",
            "echo_interval_ms 0",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_keys_and_shapes_are_refused() {
        assert!(FoNodeConfig::from_toml("node = \"A\"").unwrap_err().contains("unknown field"));
        assert!(FoNodeConfig::from_toml("[banks]\nb = 3").is_err());
        assert!(FoNodeConfig::from_json(r#"{"banks": {"b": {"layout": "iso87-ascii", "x": 1}}}"#).is_err());
        assert!(FoNodeConfig::from_json(r#"{"hooks": {"nack_on": ["REBOOT"]}}"#).is_err());
        assert_eq!("sync-begin".parse::<CommandKind>(), Ok(CommandKind::SyncBegin));
        assert!("reboot".parse::<CommandKind>().is_err());
    }

    #[test]
    fn layout_overrides_are_applied_and_checked() {
        let json = r#"{"banks": {"b": {"layout": "iso87-ascii",
            "fields": {"48": {"data_enc": "ascii", "len_type": 3, "max_len": 500}}}}}"#;
        let cfg = FoNodeConfig::from_json(json).unwrap();
        let layouts = cfg.resolve().unwrap();
        assert_eq!(layouts["b"].field(48).unwrap().max_len, 500);
        let bad = json.replace("\"len_type\": 3", "\"len_type\": 2");
        assert!(FoNodeConfig::from_json(&bad).unwrap().validate().is_err());
    }
}
