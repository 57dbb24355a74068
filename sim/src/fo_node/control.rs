//! The control interface: one-line text commands that pull the same levers as
//! [`FoNodeHandle`]'s methods, answered with one line of JSON.
//!
//! An operator drilling failures in staging, or a script driving the lab, cannot
//! call a Rust API; a line protocol works from a terminal (stdin), from `nc` or
//! `socat` (the binary's `--control` port) and from any language. Commands are
//! case-insensitive words; arguments that are rules or hooks are JSON or the
//! compact rule form. Every reply is one JSON object with `"ok"`: `true` plus the
//! data asked for, or `false` plus `"error"`.
//!
//! | command                          | does                                                      |
//! |----------------------------------|-----------------------------------------------------------|
//! | `help`                           | lists the commands                                        |
//! | `stats`                          | the counters                                              |
//! | `status [BANK]`                  | banks: active, switchover, params, sessions, in flight    |
//! | `inflight`                       | requests in flight (no card data)                         |
//! | `links`                          | open links                                                |
//! | `rules`                          | the rules in force                                        |
//! | `rules set JSON`                 | replaces the rules (a JSON array of rules)                |
//! | `rules add COMPACT`              | appends a rule (`pan=4000,code=05`)                       |
//! | `rules clear`                    | removes every rule (approve everything at once)           |
//! | `hooks`                          | the hooks in force                                        |
//! | `hooks set JSON`                 | replaces the hooks (a JSON object, as in the config file) |
//! | `nack CMD on\|off`               | `NACK` the command (`SYNC_BEGIN`, `CONTEXT`, `ACTIVATE`, `DEACTIVATE`) |
//! | `ignore CMD on\|off`             | swallow the command, no reply                             |
//! | `delay CMD MS`                   | handle the command after MS milliseconds (0: at once)     |
//! | `heartbeats on\|off`             | answer heartbeats or not                                  |
//! | `originate BANK [request\|echo]` | originate one request (default) or echo test now          |
//! | `close-links`                    | close every link, keep listening                          |
//! | `die`                            | stop listening and close every link                       |

use std::str::FromStr;

use serde_json::{Value, json};

use super::{CommandKind, FoNodeHandle, Hooks, OriginKind, Rule};

/// One control command, parsed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControlCommand {
    /// `help`.
    Help,
    /// `stats`.
    Stats,
    /// `status [BANK]`.
    Status(Option<String>),
    /// `inflight`.
    Inflight,
    /// `links`.
    Links,
    /// `rules`.
    Rules,
    /// `rules set JSON`.
    RulesSet(Vec<Rule>),
    /// `rules add COMPACT`.
    RulesAdd(Rule),
    /// `rules clear`.
    RulesClear,
    /// `hooks`.
    Hooks,
    /// `hooks set JSON`.
    HooksSet(Hooks),
    /// `nack CMD on|off`.
    Nack(CommandKind, bool),
    /// `ignore CMD on|off`.
    Ignore(CommandKind, bool),
    /// `delay CMD MS`.
    Delay(CommandKind, u64),
    /// `heartbeats on|off`.
    Heartbeats(bool),
    /// `originate BANK [request|echo]`.
    Originate(String, OriginKind),
    /// `close-links`.
    CloseLinks,
    /// `die`.
    Die,
}

/// The command list, as `help` prints it.
pub const HELP: &[&str] = &[
    "stats",
    "status [BANK]",
    "inflight",
    "links",
    "rules | rules set JSON | rules add COMPACT | rules clear",
    "hooks | hooks set JSON",
    "nack CMD on|off | ignore CMD on|off | delay CMD MS   (CMD: SYNC_BEGIN, CONTEXT, ACTIVATE, DEACTIVATE)",
    "heartbeats on|off",
    "originate BANK [request|echo]",
    "close-links",
    "die",
];

/// A line that is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn on_off(word: Option<&str>) -> Result<bool, ParseError> {
    match word.map(str::to_ascii_lowercase).as_deref() {
        Some("on" | "true" | "yes" | "1") => Ok(true),
        Some("off" | "false" | "no" | "0") => Ok(false),
        other => Err(ParseError(format!("expected on or off, got {other:?}"))),
    }
}

fn command_kind(word: Option<&str>) -> Result<CommandKind, ParseError> {
    let word = word.ok_or_else(|| ParseError("missing command name (SYNC_BEGIN, CONTEXT, …)".to_owned()))?;
    word.parse().map_err(|e: super::config::UnknownCommand| ParseError(e.to_string()))
}

impl FromStr for ControlCommand {
    type Err = ParseError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let mut args = rest.split_whitespace();
        let cmd = match word.to_ascii_lowercase().as_str() {
            "help" | "?" => Self::Help,
            "stats" => Self::Stats,
            "status" => Self::Status(args.next().map(str::to_owned)),
            "inflight" => Self::Inflight,
            "links" => Self::Links,
            "rules" => {
                let (sub, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                match sub.to_ascii_lowercase().as_str() {
                    "" => Self::Rules,
                    "clear" => Self::RulesClear,
                    "set" => Self::RulesSet(
                        serde_json::from_str(arg).map_err(|e| ParseError(format!("rules set: {e}")))?,
                    ),
                    "add" => Self::RulesAdd(arg.parse().map_err(|e| ParseError(format!("rules add: {e}")))?),
                    other => return Err(ParseError(format!("rules {other:?}: expected set, add or clear"))),
                }
            }
            "hooks" => {
                let (sub, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                match sub.to_ascii_lowercase().as_str() {
                    "" => Self::Hooks,
                    "set" => Self::HooksSet(
                        serde_json::from_str(arg).map_err(|e| ParseError(format!("hooks set: {e}")))?,
                    ),
                    other => return Err(ParseError(format!("hooks {other:?}: expected set"))),
                }
            }
            "nack" => Self::Nack(command_kind(args.next())?, on_off(args.next())?),
            "ignore" => Self::Ignore(command_kind(args.next())?, on_off(args.next())?),
            "delay" => {
                let kind = command_kind(args.next())?;
                let ms = args.next().and_then(|m| m.parse().ok()).ok_or_else(|| {
                    ParseError("delay CMD MS: MS must be a whole number of milliseconds".to_owned())
                })?;
                Self::Delay(kind, ms)
            }
            "heartbeats" => Self::Heartbeats(on_off(args.next())?),
            "originate" => {
                let bank =
                    args.next().ok_or_else(|| ParseError("originate BANK: missing bank".to_owned()))?;
                let kind = match args.next().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("request") => OriginKind::Request,
                    Some("echo") => OriginKind::Echo,
                    Some(other) => {
                        return Err(ParseError(format!("originate: {other:?} is not request or echo")));
                    }
                };
                Self::Originate(bank.to_owned(), kind)
            }
            "close-links" => Self::CloseLinks,
            "die" => Self::Die,
            other => return Err(ParseError(format!("unknown command {other:?}; try help"))),
        };
        Ok(cmd)
    }
}

fn ok(extra: Value) -> Value {
    let mut reply = json!({"ok": true});
    if let (Some(map), Value::Object(extra)) = (reply.as_object_mut(), extra) {
        map.extend(extra);
    }
    reply
}

fn error(message: impl std::fmt::Display) -> Value {
    json!({"ok": false, "error": message.to_string()})
}

/// Carries out `cmd` on `node`; the reply line's JSON.
pub async fn run(node: &FoNodeHandle, cmd: ControlCommand) -> Value {
    match cmd {
        ControlCommand::Help => ok(json!({"commands": HELP})),
        ControlCommand::Stats => ok(json!({"stats": node.stats()})),
        ControlCommand::Status(None) => ok(json!({"running": node.is_running(), "banks": node.banks()})),
        ControlCommand::Status(Some(bank)) => match node.bank_status(&bank) {
            Some(status) => ok(json!({"bank": status})),
            None => error(format!("unknown bank {bank:?}")),
        },
        ControlCommand::Inflight => ok(json!({"inflight": node.inflight()})),
        ControlCommand::Links => ok(json!({"links": node.links()})),
        ControlCommand::Rules => ok(json!({"rules": node.rules()})),
        ControlCommand::RulesSet(rules) => set_rules(node, rules),
        ControlCommand::RulesAdd(rule) => {
            let mut rules = node.rules();
            rules.push(rule);
            set_rules(node, rules)
        }
        ControlCommand::RulesClear => set_rules(node, Vec::new()),
        ControlCommand::Hooks => ok(json!({"hooks": node.hooks()})),
        ControlCommand::HooksSet(hooks) => {
            node.set_hooks(hooks);
            ok(json!({"hooks": node.hooks()}))
        }
        ControlCommand::Nack(kind, on) => {
            node.nack_on(kind, on);
            ok(json!({"hooks": node.hooks()}))
        }
        ControlCommand::Ignore(kind, on) => {
            node.ignore_on(kind, on);
            ok(json!({"hooks": node.hooks()}))
        }
        ControlCommand::Delay(kind, ms) => {
            node.delay_on(kind, ms);
            ok(json!({"hooks": node.hooks()}))
        }
        ControlCommand::Heartbeats(on) => {
            node.answer_heartbeats(on);
            ok(json!({"hooks": node.hooks()}))
        }
        ControlCommand::Originate(bank, kind) => match node.originate_now(&bank, kind) {
            Ok(corr) => ok(json!({"correlation_id": corr})),
            Err(e) => error(e),
        },
        ControlCommand::CloseLinks => {
            let closed = node.links().len();
            node.close_links();
            ok(json!({"closed": closed}))
        }
        ControlCommand::Die => {
            node.die().await;
            ok(json!({"running": false}))
        }
    }
}

fn set_rules(node: &FoNodeHandle, rules: Vec<Rule>) -> Value {
    match node.set_rules(rules) {
        Ok(()) => ok(json!({"rules": node.rules()})),
        Err(e) => error(e),
    }
}

/// Parses and carries out one line; the reply line's JSON (parse errors included).
pub async fn execute_line(node: &FoNodeHandle, line: &str) -> Value {
    match line.parse::<ControlCommand>() {
        Ok(cmd) => run(node, cmd).await,
        Err(e) => error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        let cases: &[(&str, ControlCommand)] = &[
            ("help", ControlCommand::Help),
            ("  STATS ", ControlCommand::Stats),
            ("status bank-1", ControlCommand::Status(Some("bank-1".into()))),
            ("status", ControlCommand::Status(None)),
            ("rules", ControlCommand::Rules),
            ("rules clear", ControlCommand::RulesClear),
            ("rules add pan=4000,code=05", ControlCommand::RulesAdd("pan=4000,code=05".parse().unwrap())),
            (
                r#"rules set [{"mti": "02", "action": "drop"}]"#,
                ControlCommand::RulesSet(vec!["mti=02,drop".parse().unwrap()]),
            ),
            ("nack activate on", ControlCommand::Nack(CommandKind::Activate, true)),
            ("ignore SYNC_BEGIN off", ControlCommand::Ignore(CommandKind::SyncBegin, false)),
            ("delay sync-begin 500", ControlCommand::Delay(CommandKind::SyncBegin, 500)),
            ("heartbeats off", ControlCommand::Heartbeats(false)),
            ("originate bank-1", ControlCommand::Originate("bank-1".into(), OriginKind::Request)),
            ("originate bank-1 echo", ControlCommand::Originate("bank-1".into(), OriginKind::Echo)),
            ("close-links", ControlCommand::CloseLinks),
            ("die", ControlCommand::Die),
        ];
        for (line, want) in cases {
            assert_eq!(&line.parse::<ControlCommand>().unwrap(), want, "{line}");
        }
        let hooks: ControlCommand =
            r#"hooks set {"nack_on": ["ACTIVATE"], "ignore_heartbeats": true}"#.parse().unwrap();
        let ControlCommand::HooksSet(h) = hooks else { panic!("hooks set") };
        assert!(h.ignore_heartbeats && h.nack_on.contains(&CommandKind::Activate));
        for bad in [
            "reboot",
            "nack FOO on",
            "nack ACTIVATE maybe",
            "delay ACTIVATE soon",
            "rules add colour=red",
            "originate",
        ] {
            assert!(bad.parse::<ControlCommand>().is_err(), "{bad}");
        }
    }
}
