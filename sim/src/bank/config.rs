//! What a run does: the target, the sessions, the wire profile, the load shape and
//! the limits. One serde struct, so a run's exact settings travel inside its report
//! and a test or benchmark can build one in code; the binary maps its flags onto it.

use std::collections::BTreeMap;
use std::time::Duration;

use proto::frame::{ETX, FrameConfig, LengthHeader, TPDU_LEN};
use proto::iso8583::{Layout, LayoutError, Mti, Role};
use serde::{Deserialize, Serialize};

/// Settings of one bank simulator run. Durations are written in seconds (`*_s`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BankSimConfig {
    /// Where `pups` (or any ISO 8583 peer) listens: `host:port`.
    pub target: String,
    /// More targets with the same wire profile (e.g. many banks' ports): the
    /// sessions are spread over `target` and these in turn (session `i` connects to
    /// target `i mod (1 + more_targets.len())`), one report over all of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_targets: Vec<String>,
    /// Number of TCP sessions, each with its own terminal id (DE41) and STAN range.
    pub sessions: u32,
    /// The length header, by `proto::frame` name (`u16be`, `ascii4`, `bcd2`, …).
    pub framing: LengthHeader,
    /// The TPDU put in front of every request, as 10 hex digits (`6000010000`);
    /// `None` for a profile without TPDU.
    pub tpdu: Option<String>,
    /// Every frame ends with ETX (0x03).
    pub etx: bool,
    /// Message layout, one of `proto::iso8583::BUILTIN_LAYOUTS`.
    pub layout: String,
    /// Total target rate over all sessions, requests per second; 0 sends as fast
    /// as the pipeline allows (saturation).
    pub rate: f64,
    /// Most financial requests in flight per session.
    pub pipeline: u32,
    /// Total financial requests over all sessions; `None` for no count limit.
    pub requests: Option<u64>,
    /// How long each session sends, from the moment it is ready; `None` for no
    /// time limit. Without `requests` or `duration` the run sends until shutdown.
    #[serde(rename = "duration_s", with = "opt_secs")]
    pub duration: Option<Duration>,
    /// A response after this is counted late (it still answers its request); the
    /// request stops holding a pipeline slot.
    #[serde(rename = "timeout_s", with = "secs")]
    pub timeout: Duration,
    /// After sending ends, how long requests still in flight are waited for before
    /// they count as lost.
    #[serde(rename = "grace_s", with = "secs")]
    pub grace: Duration,
    /// After every request is answered, how long the session keeps reading (to see
    /// trailing duplicates or unsolicited messages) before it closes.
    #[serde(rename = "linger_s", with = "secs")]
    pub linger: Duration,
    /// Limit on one TCP connect.
    #[serde(rename = "connect_timeout_s", with = "secs")]
    pub connect_timeout: Duration,
    /// Sign on at connect (0800, DE70 = 001) and wait for the 0810 before any
    /// financial request.
    pub sign_on: bool,
    /// Send an echo (0800, DE70 = 301) after this long without sending anything.
    #[serde(rename = "echo_idle_s", with = "opt_secs")]
    pub echo_idle: Option<Duration>,
    /// Request MTIs and their weights (`{"0100": 1, "0200": 1}`). Classes 1
    /// (authorization), 2 (financial) and 4 (reversal, with DE90) are supported.
    pub mix: BTreeMap<String, u32>,
    /// Start of every terminal id (DE41); the session number fills the rest of the
    /// 8 characters (`SIM00001`).
    pub terminal_prefix: String,
    /// DE39 of the responses the simulator gives to requests the switch sends it.
    pub response_code: String,
    /// Reconnect (and sign on again) after a disconnect. Off by default, so that a
    /// disconnect ends its session and can never go unnoticed.
    pub reconnect: bool,
    /// Wait before a reconnect.
    #[serde(rename = "reconnect_delay_s", with = "secs")]
    pub reconnect_delay: Duration,
    /// Answered keys remembered per session (the most recent ones) to tell a
    /// duplicate response from an unmatched one; about 40 bytes each.
    pub dup_window: usize,
}

impl Default for BankSimConfig {
    fn default() -> Self {
        Self {
            target: "127.0.0.1:7000".to_owned(),
            more_targets: Vec::new(),
            sessions: 1,
            framing: LengthHeader {
                encoding: proto::frame::LengthEncoding::Binary { bytes: 2 },
                includes_self: false,
            },
            tpdu: None,
            etx: false,
            layout: "iso87-ascii".to_owned(),
            rate: 0.0,
            pipeline: 1,
            requests: None,
            duration: None,
            timeout: Duration::from_secs(30),
            grace: Duration::from_secs(5),
            linger: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(5),
            sign_on: false,
            echo_idle: None,
            mix: [("0100".to_owned(), 1), ("0200".to_owned(), 1)].into_iter().collect(),
            terminal_prefix: "SIM".to_owned(),
            response_code: "00".to_owned(),
            reconnect: false,
            reconnect_delay: Duration::from_secs(1),
            dup_window: 1 << 14,
        }
    }
}

/// A configuration that cannot run. Names the setting and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The layout name is not a built-in layout.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The TPDU is not 10 hex digits.
    #[error("tpdu {0:?} is not 10 hex digits (5 bytes)")]
    BadTpdu(String),
    /// `sessions` or `pipeline` is 0.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The rate is negative or not a number.
    #[error("rate {0} is not a number >= 0")]
    BadRate(f64),
    /// A mix entry is not a supported request MTI, or every weight is 0.
    #[error("mix: {0}")]
    BadMix(String),
    /// The terminal prefix leaves too few digits for the session numbers.
    #[error(
        "terminal prefix {prefix:?} leaves {digits} digits for the session number, \
         too few for {sessions} sessions (DE41 is 8 characters)"
    )]
    TerminalIds {
        /// The prefix.
        prefix: String,
        /// Digits left.
        digits: usize,
        /// Sessions asked for.
        sessions: u32,
    },
    /// A message cannot be built under this layout (field values do not fit).
    #[error("layout {layout}: cannot build {what}: {reason}")]
    Message {
        /// Layout name.
        layout: String,
        /// Which message.
        what: String,
        /// Encoder's reason.
        reason: String,
    },
    /// A duration is zero where it must not be.
    #[error("{0} must be above zero")]
    ZeroDuration(&'static str),
}

/// Request MTIs the simulator can generate.
pub(crate) fn supported_request(mti: &Mti) -> bool {
    mti.role() == Role::Request && matches!(mti.class(), 1 | 2 | 4) && mti.version() == 0
}

impl BankSimConfig {
    /// The framing profile: length header, optional TPDU and ETX trailer.
    pub fn frame_config(&self) -> FrameConfig {
        FrameConfig {
            tpdu: self.tpdu.is_some(),
            trailer: self.etx.then_some(ETX),
            ..FrameConfig::new(self.framing)
        }
    }

    /// The TPDU as bytes, if configured.
    pub fn tpdu_bytes(&self) -> Result<Option<[u8; TPDU_LEN]>, ConfigError> {
        let Some(hex) = &self.tpdu else { return Ok(None) };
        let bad = || ConfigError::BadTpdu(hex.clone());
        if hex.len() != 2 * TPDU_LEN || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; TPDU_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Some(out))
    }

    /// The layout, if the name is a built-in one.
    pub fn layout(&self) -> Result<&'static Layout, ConfigError> {
        Ok(Layout::builtin(&self.layout)?)
    }

    /// The request MTIs with a weight above zero, in MTI order.
    pub fn mix_entries(&self) -> Result<Vec<(Mti, u32)>, ConfigError> {
        let mut out = Vec::new();
        for (name, &weight) in &self.mix {
            let mti: Mti =
                name.parse().map_err(|_| ConfigError::BadMix(format!("{name:?} is not an MTI")))?;
            if !supported_request(&mti) {
                return Err(ConfigError::BadMix(format!(
                    "{name} is not a supported request (1987 authorization, financial or reversal \
                     request or advice: 01x0, 02x0, 04x0 with x 0 or 2)"
                )));
            }
            if weight > 0 {
                out.push((mti, weight));
            }
        }
        if out.is_empty() {
            return Err(ConfigError::BadMix("no MTI with a weight above 0".to_owned()));
        }
        Ok(out)
    }

    /// Digits of DE41 left for the session number.
    pub(crate) fn terminal_digits(&self) -> usize {
        8usize.saturating_sub(self.terminal_prefix.chars().count())
    }

    /// The terminal id (DE41) of session `index` (0-based): prefix and the 1-based
    /// session number, zero-padded to 8 characters.
    pub fn terminal_id(&self, index: u32) -> String {
        let digits = self.terminal_digits();
        format!("{}{:0digits$}", self.terminal_prefix, u64::from(index) + 1)
    }

    /// Checks every setting that can be checked without the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.layout()?;
        self.tpdu_bytes()?;
        self.mix_entries()?;
        if self.sessions == 0 {
            return Err(ConfigError::Zero("sessions"));
        }
        if self.pipeline == 0 {
            return Err(ConfigError::Zero("pipeline"));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(ConfigError::BadRate(self.rate));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("timeout"));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroDuration("connect_timeout"));
        }
        if self.echo_idle.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::ZeroDuration("echo_idle"));
        }
        let digits = self.terminal_digits();
        let fits = digits >= 1 && (digits >= 10 || u64::from(self.sessions) < 10u64.pow(digits as u32));
        if !fits || self.terminal_prefix.chars().count() > 8 {
            return Err(ConfigError::TerminalIds {
                prefix: self.terminal_prefix.clone(),
                digits,
                sessions: self.sessions,
            });
        }
        Ok(())
    }
}

/// Parses a duration written as a number and a unit: `250ms`, `30s`, `5m`, `1h`,
/// `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 250ms, 30s, 5m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses a mix written as `MTI:WEIGHT` pairs: `0100:45,0200:45,0400:10`.
pub fn parse_mix(s: &str) -> Result<BTreeMap<String, u32>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (mti, weight) = pair.split_once(':').unwrap_or((pair, "1"));
            let weight =
                weight.trim().parse().map_err(|_| format!("mix weight {weight:?} is not a count"))?;
            Ok((mti.trim().to_owned(), weight))
        })
        .collect()
}

/// A `Duration` as seconds (a float) in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Duration::try_from_secs_f64(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An optional `Duration` as seconds (a float) or `null` in JSON.
mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_mix_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("3 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        let mix = parse_mix("0100:45, 0200:45,0400:10").unwrap();
        assert_eq!(mix.get("0400"), Some(&10));
        assert!(parse_mix("0100:x").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = BankSimConfig::default();
        ok.validate().unwrap();
        let with = |f: fn(&mut BankSimConfig)| {
            let mut c = BankSimConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(matches!(with(|c| c.layout = "nope".into()), Err(ConfigError::Layout(_))));
        assert!(matches!(with(|c| c.tpdu = Some("60000100".into())), Err(ConfigError::BadTpdu(_))));
        assert!(matches!(with(|c| c.tpdu = Some("60000100zz".into())), Err(ConfigError::BadTpdu(_))));
        assert!(matches!(with(|c| c.sessions = 0), Err(ConfigError::Zero("sessions"))));
        assert!(matches!(with(|c| c.rate = -1.0), Err(ConfigError::BadRate(_))));
        assert!(matches!(with(|c| c.mix = parse_mix("0110:1").unwrap()), Err(ConfigError::BadMix(_))));
        assert!(matches!(with(|c| c.mix = parse_mix("0100:0").unwrap()), Err(ConfigError::BadMix(_))));
        assert!(matches!(
            with(|c| {
                c.terminal_prefix = "TERMIN".into();
                c.sessions = 100;
            }),
            Err(ConfigError::TerminalIds { digits: 2, .. })
        ));
        let c = BankSimConfig { tpdu: Some("6000010000".into()), ..BankSimConfig::default() };
        assert_eq!(c.tpdu_bytes().unwrap(), Some([0x60, 0, 1, 0, 0]));
        assert_eq!(c.terminal_id(0), "SIM00001");
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = BankSimConfig {
            duration: Some(Duration::from_millis(1500)),
            echo_idle: Some(Duration::from_secs(30)),
            ..BankSimConfig::default()
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"timeout_s\":30.0"), "{json}");
        assert!(json.contains("\"framing\":\"u16be\""), "{json}");
        let back: BankSimConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let partial: BankSimConfig = serde_json::from_str(r#"{"sessions": 4, "rate": 100}"#).unwrap();
        assert_eq!(partial.sessions, 4);
        assert_eq!(partial.timeout, Duration::from_secs(30));
    }
}
