//! Response rules: how the simulated node answers a bank's request.
//!
//! Staging and tests need a node that approves most traffic but declines, delays,
//! loses or slams the door on chosen messages, so that `mups`, the banks and the
//! operators see every path. A rule is a set of conditions (all must hold) and an
//! action; the rules are an ordered list and the first match wins. A request no
//! rule matches is approved at once (`00`).
//!
//! Rules are data (serde) for configuration files and the control interface, and
//! have a compact one-line form for the command line (`--rule pan=4000,code=05`,
//! see [`Rule`]'s `FromStr`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use proto::iso8583::Message;
use serde::{Deserialize, Serialize};

/// The DE39 code of an approval, and of a request no rule matches.
pub const APPROVED: &str = "00";

/// The longest delay a rule may ask for: one day.
pub const MAX_DELAY_MS: u64 = 86_400_000;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Answer with the rule's `code` (default `00`) after its `delay_ms`.
    #[default]
    Respond,
    /// Never answer (the request is not kept in flight either).
    Drop,
    /// Close the link the request came on, without answering.
    Close,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Respond => "respond",
            Self::Drop => "drop",
            Self::Close => "close",
        })
    }
}

/// One response rule: conditions (every given one must hold) and an action.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name for the `rule_hits` statistics; `#<index>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// MTI, or a prefix of it (`"01"` matches 0100, 0110, 0120…; `"0200"` only 0200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mti: Option<String>,
    /// Prefix of the PAN (DE2). A message without DE2 does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pan_prefix: Option<String>,
    /// Matches when the amount (DE4, minor units) is strictly over this value. A
    /// message without a numeric DE4 does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_over: Option<u64>,
    /// Matches when the amount (DE4) is strictly under this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_under: Option<u64>,
    /// The bank id the message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<String>,
    /// What to do.
    #[serde(default)]
    pub action: Action,
    /// DE39 of the response (`respond` only); `00` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Delay before the response, in milliseconds (`respond` only). The request is
    /// in flight meanwhile, and is handed over by a switchover.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The outcome of the rules for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer with this DE39 after this delay.
    Respond {
        /// DE39.
        code: String,
        /// Delay before answering.
        delay: Duration,
    },
    /// Do not answer.
    Drop,
    /// Close the link.
    Close,
}

/// A rule that cannot be used, naming the rule and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The MTI condition is not 1 to 4 digits.
    #[error("mti {0:?} is not 1 to 4 digits")]
    BadMti(String),
    /// The PAN prefix is empty or not digits.
    #[error("pan_prefix {0:?} is not 1 to 19 digits")]
    BadPanPrefix(String),
    /// `code` or `delay_ms` given with an action that does not answer.
    #[error("{0} given with action {1}: only respond answers")]
    NotResponding(&'static str, Action),
    /// The response code is empty.
    #[error("code is empty")]
    EmptyCode,
    /// `delay_ms` is over [`MAX_DELAY_MS`].
    #[error("delay_ms {0} is over a day")]
    DelayTooLong(u64),
    /// `amount_over` and `amount_under` can never both hold.
    #[error("amount_over {over} and amount_under {under} exclude every amount")]
    EmptyAmountRange {
        /// `amount_over`.
        over: u64,
        /// `amount_under`.
        under: u64,
    },
    /// The compact form has an unknown key or a bad value.
    #[error("{0}")]
    Syntax(String),
}

impl Rule {
    /// The rule's label in statistics: its name, or `#<index>` (0-based).
    pub fn label(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("#{index}"))
    }

    /// The response code the rule answers with.
    pub fn response_code(&self) -> &str {
        self.code.as_deref().unwrap_or(APPROVED)
    }

    /// Checks the rule on its own (the response code against each bank's layout is
    /// checked with the configuration). Reports every problem.
    pub fn validate(&self) -> Result<(), Vec<RuleError>> {
        let mut errors = Vec::new();
        if let Some(mti) = &self.mti {
            if mti.is_empty() || mti.len() > 4 || !mti.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(RuleError::BadMti(mti.clone()));
            }
        }
        if let Some(pan) = &self.pan_prefix {
            if pan.is_empty() || pan.len() > 19 || !pan.bytes().all(|b| b.is_ascii_digit()) {
                errors.push(RuleError::BadPanPrefix(pan.clone()));
            }
        }
        if let (Some(over), Some(under)) = (self.amount_over, self.amount_under) {
            if under <= over.saturating_add(1) {
                errors.push(RuleError::EmptyAmountRange { over, under });
            }
        }
        if self.action != Action::Respond {
            if self.code.is_some() {
                errors.push(RuleError::NotResponding("code", self.action));
            }
            if self.delay_ms != 0 {
                errors.push(RuleError::NotResponding("delay_ms", self.action));
            }
        } else if self.code.as_deref() == Some("") {
            errors.push(RuleError::EmptyCode);
        }
        if self.delay_ms > MAX_DELAY_MS {
            errors.push(RuleError::DelayTooLong(self.delay_ms));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Whether the rule applies to `msg` of bank `bank`.
    pub fn matches(&self, bank: &str, msg: &Message<'_>) -> bool {
        if self.bank.as_deref().is_some_and(|b| b != bank) {
            return false;
        }
        if self.mti.as_deref().is_some_and(|p| !msg.mti().as_str().starts_with(p)) {
            return false;
        }
        if let Some(prefix) = &self.pan_prefix {
            match msg.value(2) {
                Some(Ok(pan)) if pan.starts_with(prefix.as_str()) => {}
                _ => return false,
            }
        }
        if self.amount_over.is_some() || self.amount_under.is_some() {
            let Some(amount) = amount(msg) else { return false };
            if self.amount_over.is_some_and(|over| amount <= over)
                || self.amount_under.is_some_and(|under| amount >= under)
            {
                return false;
            }
        }
        true
    }

    /// What the rule does, as a [`Decision`].
    pub fn decision(&self) -> Decision {
        match self.action {
            Action::Respond => Decision::Respond {
                code: self.response_code().to_owned(),
                delay: Duration::from_millis(self.delay_ms),
            },
            Action::Drop => Decision::Drop,
            Action::Close => Decision::Close,
        }
    }
}

/// The amount (DE4) as a number, if present and numeric.
fn amount(msg: &Message<'_>) -> Option<u64> {
    msg.value(4)?.ok()?.trim().parse().ok()
}

/// Applies `rules` in order to `msg` of bank `bank`: the first matching rule's
/// decision and its index, or an immediate approval (`None`) if none matches.
pub fn decide(rules: &[Rule], bank: &str, msg: &Message<'_>) -> (Decision, Option<usize>) {
    match rules.iter().position(|r| r.matches(bank, msg)) {
        Some(i) => (rules[i].decision(), Some(i)),
        None => (Decision::Respond { code: APPROVED.to_owned(), delay: Duration::ZERO }, None),
    }
}

/// The compact one-line form, for `--rule` and the control interface: comma
/// separated `key=value` items, in any order.
///
/// | key      | field          | example          |
/// |----------|----------------|------------------|
/// | `name`   | `name`         | `name=stolen`    |
/// | `mti`    | `mti`          | `mti=02`         |
/// | `pan`    | `pan_prefix`   | `pan=400000`     |
/// | `over`   | `amount_over`  | `over=100000`    |
/// | `under`  | `amount_under` | `under=100`      |
/// | `bank`   | `bank`         | `bank=bank-1`    |
/// | `code`   | `code`         | `code=05`        |
/// | `delay`  | `delay_ms`     | `delay=1500`     |
/// | `action` | `action`       | `action=drop`    |
///
/// `drop`, `close` and `respond` alone are short for `action=…`. Example:
/// `mti=0100,pan=4000,code=05`.
impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut rule = Self::default();
        let number = |key: &str, v: &str| {
            v.parse::<u64>().map_err(|_| RuleError::Syntax(format!("{key}={v:?}: not a whole number")))
        };
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => ("action", item),
            };
            match key {
                "name" => rule.name = Some(value.to_owned()),
                "mti" => rule.mti = Some(value.to_owned()),
                "pan" | "pan_prefix" => rule.pan_prefix = Some(value.to_owned()),
                "over" | "amount_over" => rule.amount_over = Some(number(key, value)?),
                "under" | "amount_under" => rule.amount_under = Some(number(key, value)?),
                "bank" => rule.bank = Some(value.to_owned()),
                "code" => rule.code = Some(value.to_owned()),
                "delay" | "delay_ms" => rule.delay_ms = number(key, value)?,
                "action" => {
                    rule.action = match value {
                        "respond" => Action::Respond,
                        "drop" => Action::Drop,
                        "close" => Action::Close,
                        other => {
                            return Err(RuleError::Syntax(format!(
                                "action {other:?}: expected respond, drop or close"
                            )));
                        }
                    }
                }
                other => {
                    return Err(RuleError::Syntax(format!(
                        "unknown rule key {other:?}: expected name, mti, pan, over, under, bank, code, \
                         delay or action"
                    )));
                }
            }
        }
        match rule.validate() {
            Ok(()) => Ok(rule),
            Err(mut errors) => Err(errors.swap_remove(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::iso8583::Layout;

    use super::*;

    fn msg(mti: &str, fields: &[(u8, &str)]) -> Vec<u8> {
        Layout::builtin("iso87-ascii").unwrap().encode_to_vec(mti, fields.iter().copied()).unwrap()
    }

    fn check(rules: &[Rule], bank: &str, bytes: &[u8]) -> (Decision, Option<usize>) {
        let layout = Layout::builtin("iso87-ascii").unwrap();
        decide(rules, bank, &Message::parse(layout, bytes).unwrap())
    }

    #[test]
    fn first_match_wins_and_default_approves() {
        let rules: Vec<Rule> = ["pan=4000,code=05", "pan=40,code=51", "mti=02,delay=250", "over=1000,drop"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let auth = |pan: &str, amount: &str| msg("0100", &[(2, pan), (4, amount), (11, "000001")]);
        assert_eq!(
            check(&rules, "b", &auth("4000123412341234", "000000000100")),
            (Decision::Respond { code: "05".into(), delay: Duration::ZERO }, Some(0))
        );
        assert_eq!(check(&rules, "b", &auth("4012123412341234", "000000000100")).1, Some(1));
        assert_eq!(
            check(&rules, "b", &msg("0200", &[(2, "5100000000000001"), (4, "000000000100")])),
            (Decision::Respond { code: "00".into(), delay: Duration::from_millis(250) }, Some(2))
        );
        assert_eq!(check(&rules, "b", &auth("5100000000000001", "000000001001")), (Decision::Drop, Some(3)));
        assert_eq!(check(&rules, "b", &auth("5100000000000001", "000000001000")).1, None);
        // No DE2: a PAN rule never matches; no DE4: an amount rule never matches.
        assert_eq!(check(&rules, "b", &msg("0100", &[(11, "000001")])).1, None);
    }

    #[test]
    fn bank_mti_and_amount_conditions() {
        let rule: Rule = "bank=bk1,mti=0400,under=500,over=100,close".parse().unwrap();
        let rev = |amount: &str| msg("0400", &[(4, amount), (11, "000001")]);
        assert!(rule.matches(
            "bk1",
            &Message::parse(Layout::builtin("iso87-ascii").unwrap(), &rev("000000000200")).unwrap()
        ));
        for (bank, bytes) in
            [("bk2", rev("000000000200")), ("bk1", rev("000000000100")), ("bk1", rev("000000000500"))]
        {
            assert_eq!(check(std::slice::from_ref(&rule), bank, &bytes).1, None);
        }
        assert_eq!(check(&[rule], "bk1", &rev("000000000499")).0, Decision::Close);
    }

    #[test]
    fn compact_form_is_checked() {
        assert!(matches!("mti=01x".parse::<Rule>(), Err(RuleError::BadMti(_))));
        assert!(matches!("pan=4a".parse::<Rule>(), Err(RuleError::BadPanPrefix(_))));
        assert!(matches!(
            "drop,code=05".parse::<Rule>(),
            Err(RuleError::NotResponding("code", Action::Drop))
        ));
        assert!(matches!("colour=red".parse::<Rule>(), Err(RuleError::Syntax(_))));
        assert!(matches!("delay=soon".parse::<Rule>(), Err(RuleError::Syntax(_))));
        assert!(matches!("over=10,under=11".parse::<Rule>(), Err(RuleError::EmptyAmountRange { .. })));
        assert!(matches!("delay=86400001".parse::<Rule>(), Err(RuleError::DelayTooLong(_))));
        let rule: Rule = " name = slow , mti=0200 , delay=5 ".parse().unwrap();
        assert_eq!(rule.label(3), "slow");
        assert_eq!(Rule::default().label(3), "#3");
    }

    #[test]
    fn serde_shape() {
        let rule: Rule =
            serde_json::from_str(r#"{"pan_prefix": "4000", "code": "05", "delay_ms": 10}"#).unwrap();
        assert_eq!(rule, "pan=4000,code=05,delay=10".parse().unwrap());
        assert!(serde_json::from_str::<Rule>(r#"{"pan": "4000"}"#).is_err());
        let back: Rule = serde_json::from_value(serde_json::to_value(&rule).unwrap()).unwrap();
        assert_eq!(back, rule);
    }
}
