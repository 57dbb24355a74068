//! `mups user add|list` and `mups audit verify`: for bootstrapping the first admin and for
//! checking the audit log offline.
//!
//! `mups user add` edits `users.json` directly. A running mups notices the change at the next
//! login or change (it re-reads the file when its digest moved), so the CLI can be used while it
//! runs; the API (`POST /api/v1/users`) remains the way to manage users day to day.

use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::process::ExitCode;

use anyhow::Context;

use super::audit::{self, AuditLog, Outcome, Record};
use super::password::{self, HashParams, Hasher};
use super::persist;
use super::store::Store;
use crate::cli::{AuditCommand, StateDirArgs, UserAddArgs, UserCommand};

/// Runs `mups user …`.
pub fn user(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add(args) => {
            let password = match &args.password_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
                    first_line(text.as_bytes())?
                }
                None => {
                    let stdin = std::io::stdin();
                    if std::io::IsTerminal::is_terminal(&stdin) {
                        eprintln!(
                            "password for {} (one line; it is echoed, so check who can see the screen):",
                            args.name
                        );
                    }
                    first_line(stdin.lock())?
                }
            };
            let user = user_add(&args, &password, HashParams::default(), time::OffsetDateTime::now_utc())?;
            println!("added {} ({})", user.name, user.role);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::List(args) => {
            user_list(&args, std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `mups audit …`.
pub fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(args) => {
            let ok = audit_verify(&args, std::io::stdout().lock())?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// The first line of `r`, without its line ending.
fn first_line(mut r: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line).context("reading the password")?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Adds a user and audits it as `system` (with the OS user id in the message).
pub fn user_add(
    args: &UserAddArgs,
    password: &str,
    params: HashParams,
    now: time::OffsetDateTime,
) -> anyhow::Result<super::store::UserView> {
    password::check_policy(&args.name, password)?;
    persist::ensure_dir(&args.state_dir)?;
    let hash = Hasher::new(params)?.hash(password)?;
    let mut store = Store::open(&args.state_dir)?;
    let log = AuditLog::open(&args.state_dir, now)?;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid().to_string()).unwrap_or_else(|_| "?".into());
    let mut rec = Record {
        target: Some(args.name.clone()),
        message: Some(format!("mups user add (uid {uid}), role {}", args.role)),
        ..Record::new("system", "user.add", Outcome::Ok)
    };
    let r = store.add_user(&args.name, args.role, hash, now);
    if let Err(e) = &r {
        rec.result = Outcome::Failed;
        rec.message = Some(format!("mups user add (uid {uid}): {e}"));
    }
    log.record(rec, now)?;
    Ok(r?)
}

/// Prints the users as a table.
pub fn user_list(args: &StateDirArgs, mut out: impl Write) -> anyhow::Result<()> {
    let store = Store::open(&args.state_dir)?;
    writeln!(out, "{:<24} {:<9} {:<9} {:>7}  UPDATED", "NAME", "ROLE", "STATE", "VERSION")?;
    for u in store.users() {
        let state = if u.disabled { "disabled" } else { "enabled" };
        let updated = u.updated.format(&time::format_description::well_known::Rfc3339)?;
        writeln!(out, "{:<24} {:<9} {:<9} {:>7}  {updated}", u.name, u.role.as_str(), state, u.version)?;
    }
    Ok(())
}

/// Verifies the chain; prints the result; returns whether it holds.
pub fn audit_verify(args: &StateDirArgs, mut out: impl Write) -> anyhow::Result<bool> {
    let path = args.state_dir.join(persist::AUDIT_FILE);
    let v = audit::verify(&path)?;
    match &v.first_bad {
        None => {
            writeln!(out, "{}: OK, {} entries, head {}", path.display(), v.good, v.head)?;
            Ok(true)
        }
        Some(bad) => {
            writeln!(
                out,
                "{}: BROKEN at line {} (expected seq {}): {}; the {} entries before it verify",
                path.display(),
                bad.line,
                bad.expected_seq,
                bad.problem,
                v.good
            )?;
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use crate::auth::testutil::{ManualClock, TempDir};

    #[test]
    fn add_list_and_verify() {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let state = dir.path().join("state");
        let args = UserAddArgs {
            state_dir: state.clone(),
            role: Role::Admin,
            name: "root1".into(),
            password_file: None,
        };
        let fast = HashParams::insecure_for_tests();
        assert!(user_add(&args, "short", fast, clock.now()).is_err(), "the policy applies");
        user_add(&args, "a long enough passphrase", fast, clock.now()).unwrap();
        assert!(user_add(&args, "a long enough passphrase", fast, clock.now()).is_err(), "no duplicates");

        let sd = StateDirArgs { state_dir: state.clone() };
        let mut out = Vec::new();
        user_list(&sd, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.lines().nth(1).unwrap().starts_with("root1"), "{out}");
        assert!(out.contains("admin") && out.contains("enabled"));

        // The failed duplicate add is audited too.
        let mut out = Vec::new();
        assert!(audit_verify(&sd, &mut out).unwrap());
        assert!(String::from_utf8(out).unwrap().contains("OK, 2 entries"));
        let path = state.join(persist::AUDIT_FILE);
        let text = std::fs::read_to_string(&path).unwrap().replace("\"ok\"", "\"failed\"");
        std::fs::write(&path, text).unwrap();
        let mut out = Vec::new();
        assert!(!audit_verify(&sd, &mut out).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("BROKEN at line 1 (expected seq 1)"), "{out}");
    }

    #[test]
    fn first_line_strips_the_line_ending_only() {
        assert_eq!(first_line(&b" pass word \r\nsecond"[..]).unwrap(), " pass word ");
        assert_eq!(first_line(&b"no newline"[..]).unwrap(), "no newline");
    }
}
