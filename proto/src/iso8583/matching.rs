//! Matching keys: what ties a response to its request.
//!
//! A key is the MTI pairing class (version, class, request/response-folded
//! function; see [`Mti::pairing_class`](super::Mti::pairing_class)) plus the values
//! of configured fields. Defaults as jPOS QMUX: DE11 + DE41; DE11 alone for network
//! management, where DE41 is usually absent.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::charset::Charset;
use super::layout::Encoding;
use super::mask::{Sensitivity, sensitivity};
use super::message::Message;

/// Which fields make the key, per MTI prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchKeyConfig {
    /// Key fields for MTIs no entry of `per_mti` covers.
    pub fields: Vec<u8>,
    /// Key fields by MTI prefix of the pairing class (1 to 3 digits, e.g. `"08"` for
    /// 1987 network management, `"042"` for reversal advices); the longest matching
    /// prefix wins.
    #[serde(default)]
    pub per_mti: BTreeMap<String, Vec<u8>>,
}

impl Default for MatchKeyConfig {
    fn default() -> Self {
        Self {
            fields: vec![11, 41],
            per_mti: ["08", "18", "28"].into_iter().map(|p| (p.to_owned(), vec![11])).collect(),
        }
    }
}

/// A matching key configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MatchKeyConfigError {
    /// A key field is not a data element 2–128.
    #[error("key field {0} is not a data element 2-128")]
    NoSuchField(u8),
    /// A key field holds card data, which would then reach logs.
    #[error("key field {0} holds card data and cannot be part of a matching key")]
    SensitiveField(u8),
    /// A `per_mti` prefix is not 1 to 3 digits.
    #[error("per_mti prefix {0:?} is not 1 to 3 digits")]
    BadPrefix(String),
}

impl MatchKeyConfig {
    /// Checks every field and prefix; reports every problem.
    pub fn validate(&self) -> Result<(), Vec<MatchKeyConfigError>> {
        let mut errors = Vec::new();
        for (prefix, fields) in
            std::iter::once((None, &self.fields)).chain(self.per_mti.iter().map(|(p, f)| (Some(p), f)))
        {
            if let Some(p) = prefix {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    errors.push(MatchKeyConfigError::BadPrefix(p.clone()));
                }
            }
            for &id in fields {
                if !(2..=128).contains(&id) || id == 65 {
                    errors.push(MatchKeyConfigError::NoSuchField(id));
                } else if sensitivity(id) != Sensitivity::Clear {
                    errors.push(MatchKeyConfigError::SensitiveField(id));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The key fields for a pairing class.
    pub fn fields_for(&self, pairing_class: &[u8; 3]) -> &[u8] {
        (1..=3)
            .rev()
            .find_map(|n| std::str::from_utf8(&pairing_class[..n]).ok().and_then(|p| self.per_mti.get(p)))
            .unwrap_or(&self.fields)
    }

    /// The key of a message. A request and its response have equal keys.
    pub fn key(&self, msg: &Message<'_>) -> MatchKey {
        let class = msg.mti().pairing_class();
        let mut key = String::with_capacity(32);
        key.push_str(std::str::from_utf8(&class).expect("digits"));
        for &id in self.fields_for(&class) {
            key.push('|');
            key.push_str(&id.to_string());
            match msg.field(id) {
                None => key.push('-'),
                Some(f) => {
                    key.push('=');
                    // ASCII text is its own value: no decoding, no allocation (the common case).
                    if f.spec.encoding == Encoding::Text(Charset::Ascii) && f.data.iter().all(u8::is_ascii) {
                        push_escaped(&mut key, f.data.iter().map(|&b| char::from(b)));
                    } else {
                        // Undecodable text is keyed by its bytes, so it still matches itself.
                        let value = f.value().unwrap_or_else(|_| super::message::hex_upper(f.data));
                        push_escaped(&mut key, value.chars());
                    }
                }
            }
        }
        MatchKey(key)
    }
}

/// Appends `chars`, escaping the separator `|` and the escape `\\` itself, so that
/// distinct field values can never make equal keys.
fn push_escaped(key: &mut String, chars: impl Iterator<Item = char>) {
    for c in chars {
        if matches!(c, '|' | '\\') {
            key.push('\\');
        }
        key.push(c);
    }
}

/// A matching key, printable as is (key fields are never card data):
/// `010|11=000123|41=TERM0001`. An absent field shows as `41-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MatchKey(String);

impl MatchKey {
    /// A key handed over as text (from the twin appliance's router).
    pub fn from_text(text: String) -> Self {
        Self(text)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatchKey({})", self.0)
    }
}
