//! The audit log: `<state_dir>/audit.jsonl`, one JSON object per line, append-only and
//! hash-chained.
//!
//! # Entry
//!
//! `seq` (1, 2, …), `time` (RFC 3339 UTC, milliseconds), `actor` (a user name, `token:<id>`,
//! `token:config` for the configured bootstrap token, or `system`), `role`, `source` (client
//! address), `action` (e.g. `login`, `user.update`), `target`, `reason`, `result`
//! (`ok`/`denied`/`failed`), `message`, `prev_hash` and `hash`.
//!
//! # Chain
//!
//! `hash` is the hex SHA-256 of the entry's canonical form: the compact JSON of every field
//! except `hash`, in the order above, absent values as `null`. `prev_hash` is the previous
//! entry's `hash` (64 zeros for the first). Editing a line breaks its own hash; deleting or
//! reordering lines breaks `seq` and `prev_hash`. [`verify`] reports the first entry where
//! either fails. What a chain cannot show is the loss of the *last* entries: compare the count
//! and last hash with a copy kept elsewhere (the same entries also go to the journal through
//! `tracing`, target `mups::audit`).
//!
//! # Durability
//!
//! Each entry is written with one `write` and `fdatasync`ed before [`AuditLog::record`]
//! returns, so an action that was answered is on disk. Entries are rare (logins and changes),
//! so the cost of a sync each is small. A crash mid-write can leave a partial last line; on
//! open it is cut off and an `audit.torn_tail` entry says how many bytes were lost.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Role;
use super::persist::{self, PersistError};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest text kept in a free-text field, in characters: entries stay one small line.
const MAX_FIELD: usize = 1024;

/// How far back from the end of the file to look for the last entry.
const TAIL_WINDOW: u64 = 64 * 1024;

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Refused: no right to do it, bad credentials, throttled.
    Denied,
    /// Allowed but did not succeed (conflict, bad input, I/O error).
    Failed,
}

impl Outcome {
    /// `ok`, `denied` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Failed => "failed",
        }
    }
}

/// What to record; [`AuditLog::record`] adds `seq`, `time` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Who.
    pub actor: String,
    /// With which role, when known.
    pub role: Option<Role>,
    /// From where (client address).
    pub source: Option<String>,
    /// What, as `noun.verb` or a single word (`login`).
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Why, as the actor said (ticket, reason).
    pub reason: Option<String>,
    /// How it ended.
    pub result: Outcome,
    /// Detail: an error, what changed.
    pub message: Option<String>,
}

impl Record {
    /// A record with only the required fields; set the others with struct update syntax.
    pub fn new(actor: impl Into<String>, action: impl Into<String>, result: Outcome) -> Self {
        Self {
            actor: actor.into(),
            role: None,
            source: None,
            action: action.into(),
            target: None,
            reason: None,
            result,
            message: None,
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position, from 1, without gaps.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds. Kept as the written text so that hashing re-uses it
    /// exactly rather than a re-formatting of it.
    pub time: String,
    /// Who.
    pub actor: String,
    /// Role.
    pub role: Option<Role>,
    /// Client address.
    pub source: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// How it ended.
    pub result: Outcome,
    /// Detail.
    pub message: Option<String>,
    /// Previous entry's hash.
    pub prev_hash: String,
    /// SHA-256 of this entry's canonical form.
    pub hash: String,
}

/// The canonical form: every field but `hash`, in a fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a str,
    role: Option<Role>,
    source: Option<&'a str>,
    action: &'a str,
    target: Option<&'a str>,
    reason: Option<&'a str>,
    result: Outcome,
    message: Option<&'a str>,
    prev_hash: &'a str,
}

impl Entry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let c = Canonical {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            role: self.role,
            source: self.source.as_deref(),
            action: &self.action,
            target: self.target.as_deref(),
            reason: self.reason.as_deref(),
            result: self.result,
            message: self.message.as_deref(),
            prev_hash: &self.prev_hash,
        };
        hex::encode(Sha256::digest(serde_json::to_vec(&c).expect("an entry serialises")))
    }

    /// The entry's time, if it parses.
    pub fn parsed_time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.time, &Rfc3339).ok()
    }
}

/// An audit log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing.
    #[error(transparent)]
    Io(#[from] PersistError),
    /// The last complete entry does not parse, so the chain cannot be continued. Verify the
    /// file, move it aside, and start a new one.
    #[error("{}: the last entry does not parse ({message}); run `mups audit verify` and move the file aside", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Parse error.
        message: String,
    },
}

#[derive(Debug)]
struct Writer {
    file: File,
    seq: u64,
    last_hash: String,
}

/// The open audit log. Shared by reference; appends are serialised by an internal lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
}

fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(t.millisecond() as u32 * 1_000_000).expect("milliseconds are valid");
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).expect("a UTC time formats")
}

fn clip(s: Option<String>) -> Option<String> {
    s.map(|s| if s.chars().count() > MAX_FIELD { s.chars().take(MAX_FIELD).collect() } else { s })
}

impl AuditLog {
    /// Opens (or creates, mode 0600) `<dir>/audit.jsonl` and finds where the chain ends. `dir`
    /// must exist. `now` stamps the `audit.torn_tail` entry if one is needed.
    pub fn open(dir: &Path, now: OffsetDateTime) -> Result<Self, AuditError> {
        let path = dir.join(persist::AUDIT_FILE);
        let at = |e| PersistError { path: path.clone(), source: e };
        let mut file =
            OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(&path).map_err(at)?;
        persist::match_dir_owner(&path, dir)?;
        let len = file.metadata().map_err(at)?.len();
        let start = len.saturating_sub(TAIL_WINDOW);
        file.seek(SeekFrom::Start(start)).map_err(at)?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail).map_err(at)?;
        let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = tail.len() - complete;
        if torn > 0 {
            file.set_len(start + complete as u64).map_err(at)?;
            file.sync_data().map_err(at)?;
        }
        let body = &tail[..complete];
        let last_line =
            body[..body.len().saturating_sub(1)].rsplit(|&b| b == b'\n').next().unwrap_or_default();
        let (seq, last_hash) = if last_line.is_empty() {
            (0, GENESIS.to_owned())
        } else {
            let e: Entry = serde_json::from_slice(last_line)
                .map_err(|e| AuditError::Corrupt { path: path.clone(), message: e.to_string() })?;
            (e.seq, e.hash)
        };
        let log = Self { path, writer: Mutex::new(Writer { file, seq, last_hash }) };
        if torn > 0 {
            log.record(
                Record {
                    message: Some(format!("{torn} bytes of a partly written entry were cut off")),
                    ..Record::new("system", "audit.torn_tail", Outcome::Ok)
                },
                now,
            )?;
        }
        Ok(log)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `rec` at time `now` and syncs it to disk; returns the entry as written.
    pub fn record(&self, rec: Record, now: OffsetDateTime) -> Result<Entry, AuditError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = Entry {
            seq: w.seq + 1,
            time: format_time(now),
            actor: clip(Some(rec.actor)).unwrap_or_default(),
            role: rec.role,
            source: clip(rec.source),
            action: clip(Some(rec.action)).unwrap_or_default(),
            target: clip(rec.target),
            reason: clip(rec.reason),
            result: rec.result,
            message: clip(rec.message),
            prev_hash: w.last_hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let mut line = serde_json::to_vec(&entry).expect("an entry serialises");
        line.push(b'\n');
        let at = |e| PersistError { path: self.path.clone(), source: e };
        // One write call for the whole line, so concurrent readers never see half of one.
        w.file.write_all(&line).map_err(at)?;
        w.file.sync_data().map_err(at)?;
        w.seq = entry.seq;
        w.last_hash.clone_from(&entry.hash);
        tracing::info!(
            target: "mups::audit",
            seq = entry.seq,
            actor = %entry.actor,
            action = %entry.action,
            target_ = entry.target.as_deref().unwrap_or(""),
            result = entry.result.as_str(),
            message = entry.message.as_deref().unwrap_or(""),
            "audit"
        );
        Ok(entry)
    }
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries that checked out before the first bad one (all of them if none is bad).
    pub good: u64,
    /// Hash of the last good entry (the chain head if all are good).
    pub head: String,
    /// The first bad entry, if any.
    pub first_bad: Option<BadEntry>,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// Line number, from 1.
    pub line: u64,
    /// The sequence number expected at that line (`good + 1`).
    pub expected_seq: u64,
    /// What is wrong.
    pub problem: String,
}

/// Walks the chain in `path` and reports the first entry that does not fit.
pub fn verify(path: &Path) -> Result<Verification, PersistError> {
    let file = File::open(path).map_err(persist::at(path))?;
    let mut prev = GENESIS.to_owned();
    let mut good = 0u64;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(persist::at(path))?;
        let bad = |problem: String| BadEntry { line: i as u64 + 1, expected_seq: good + 1, problem };
        let e: Entry = match serde_json::from_slice(&line) {
            Ok(e) => e,
            Err(e) => {
                return Ok(Verification {
                    good,
                    head: prev,
                    first_bad: Some(bad(format!("unreadable: {e}"))),
                });
            }
        };
        let problem = if e.seq != good + 1 {
            Some(format!("seq {} where {} was expected (entries deleted or reordered)", e.seq, good + 1))
        } else if e.prev_hash != prev {
            Some("prev_hash does not match the previous entry (entries deleted or reordered)".to_owned())
        } else if e.hash != e.compute_hash() {
            Some("hash does not match the content (entry edited)".to_owned())
        } else {
            None
        };
        if let Some(p) = problem {
            return Ok(Verification { good, head: prev, first_bad: Some(bad(p)) });
        }
        good = e.seq;
        prev = e.hash;
    }
    Ok(Verification { good, head: prev, first_bad: None })
}

/// Which entries a query returns. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`user.` matches `user.add`, `user.delete`).
    pub action: Option<String>,
    /// Outcome.
    pub result: Option<Outcome>,
    /// At or after this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Before this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// At most this many, the most recent (default and ceiling [`MAX_QUERY`]).
    pub limit: Option<usize>,
}

/// Most entries one query returns.
pub const MAX_QUERY: usize = 10_000;

impl Filter {
    /// Whether `e` matches.
    pub fn matches(&self, e: &Entry) -> bool {
        let action_ok = match &self.action {
            None => true,
            Some(a) if a.ends_with('.') => e.action.starts_with(a.as_str()),
            Some(a) => &e.action == a,
        };
        let time_ok = if self.since.is_some() || self.until.is_some() {
            e.parsed_time()
                .is_some_and(|t| self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u))
        } else {
            true
        };
        action_ok
            && time_ok
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && self.result.is_none_or(|r| e.result == r)
    }
}

/// The most recent entries of `path` matching `filter`, oldest first. Lines that do not parse
/// are skipped here; [`verify`] is where they are reported.
pub fn query(path: &Path, filter: &Filter) -> Result<Vec<Entry>, PersistError> {
    let limit = filter.limit.unwrap_or(MAX_QUERY).min(MAX_QUERY);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(persist::at(path)(e)),
    };
    let mut out = std::collections::VecDeque::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(persist::at(path))?;
        let Ok(e) = serde_json::from_slice::<Entry>(&line) else { continue };
        if filter.matches(&e) {
            if out.len() == limit {
                out.pop_front();
            }
            out.push_back(e);
        }
    }
    Ok(out.into())
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// The entries as stored, one JSON object per line; [`verify`] can check a full export.
    Jsonl,
    /// A header and one row per entry, for spreadsheets.
    Csv,
}

/// Writes `entries` as JSON lines.
pub fn export_jsonl(entries: &[Entry], mut w: impl Write) -> io::Result<()> {
    for e in entries {
        serde_json::to_writer(&mut w, e)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// CSV header.
const CSV_COLUMNS: &[&str] = &[
    "seq",
    "time",
    "actor",
    "role",
    "source",
    "action",
    "target",
    "reason",
    "result",
    "message",
    "prev_hash",
    "hash",
];

/// Writes `entries` as CSV (RFC 4180, every field quoted).
///
/// A field beginning with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, so a spreadsheet
/// shows it as text instead of running it as a formula (user names and messages come from
/// outside). The JSON-lines export is the exact, verifiable form.
pub fn export_csv(entries: &[Entry], mut w: impl Write) -> io::Result<()> {
    fn field(s: &str) -> String {
        let guarded =
            if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() };
        format!("\"{}\"", guarded.replace('"', "\"\""))
    }
    writeln!(w, "{}", CSV_COLUMNS.join(","))?;
    for e in entries {
        let seq = e.seq.to_string();
        let cols = [
            seq.as_str(),
            &e.time,
            &e.actor,
            e.role.map_or("", |r| r.as_str()),
            e.source.as_deref().unwrap_or(""),
            &e.action,
            e.target.as_deref().unwrap_or(""),
            e.reason.as_deref().unwrap_or(""),
            e.result.as_str(),
            e.message.as_deref().unwrap_or(""),
            &e.prev_hash,
            &e.hash,
        ];
        let row: Vec<String> = cols.iter().map(|c| field(c)).collect();
        w.write_all(row.join(",").as_bytes())?;
        w.write_all(b"\r\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::testutil::{ManualClock, TempDir};

    fn log_with(n: u64) -> (TempDir, ManualClock, AuditLog) {
        let dir = TempDir::new();
        let clock = ManualClock::new();
        let log = AuditLog::open(dir.path(), clock.now()).unwrap();
        for i in 1..=n {
            clock.advance(Duration::from_secs(1));
            let rec = Record {
                target: Some(format!("user{i}")),
                source: Some("192.0.2.1".into()),
                role: Some(Role::Admin),
                ..Record::new("alice", if i % 2 == 0 { "user.add" } else { "login" }, Outcome::Ok)
            };
            log.record(rec, clock.now()).unwrap();
        }
        (dir, clock, log)
    }

    fn lines(log: &AuditLog) -> Vec<String> {
        std::fs::read_to_string(log.path()).unwrap().lines().map(str::to_owned).collect()
    }

    fn write_lines(log: &AuditLog, lines: &[String]) {
        std::fs::write(log.path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn entries_are_chained_and_verify() {
        let (_dir, _clock, log) = log_with(5);
        let v = verify(log.path()).unwrap();
        assert_eq!((v.good, v.first_bad.clone()), (5, None));
        let entries = query(log.path(), &Filter::default()).unwrap();
        assert_eq!(entries[0].prev_hash, GENESIS);
        assert_eq!(entries[0].time, "2026-03-01T12:00:01.000Z");
        for pair in entries.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
            assert_eq!(pair[1].seq, pair[0].seq + 1);
        }
        assert_eq!(v.head, entries[4].hash);
    }

    #[test]
    fn verify_detects_an_edited_line() {
        let (_dir, _clock, log) = log_with(5);
        let mut l = lines(&log);
        l[2] = l[2].replace("\"user3\"", "\"mallory\"");
        write_lines(&log, &l);
        let bad = verify(log.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.line, bad.expected_seq), (3, 3));
        assert!(bad.problem.contains("edited"), "{}", bad.problem);
    }

    #[test]
    fn verify_detects_a_deleted_line() {
        let (_dir, _clock, log) = log_with(5);
        let mut l = lines(&log);
        l.remove(1);
        write_lines(&log, &l);
        let v = verify(log.path()).unwrap();
        assert_eq!(v.good, 1);
        let bad = v.first_bad.unwrap();
        assert_eq!((bad.line, bad.expected_seq), (2, 2));
    }

    #[test]
    fn verify_detects_a_deleted_line_even_when_seq_is_renumbered() {
        let (_dir, _clock, log) = log_with(5);
        let mut entries = query(log.path(), &Filter::default()).unwrap();
        entries.remove(1);
        for (i, e) in entries.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
            e.hash = e.compute_hash();
        }
        let mut buf = Vec::new();
        export_jsonl(&entries, &mut buf).unwrap();
        std::fs::write(log.path(), buf).unwrap();
        let bad = verify(log.path()).unwrap().first_bad.unwrap();
        assert_eq!(bad.line, 2);
        assert!(bad.problem.contains("prev_hash"), "{}", bad.problem);
    }

    #[test]
    fn verify_detects_reordered_lines() {
        let (_dir, _clock, log) = log_with(5);
        let mut l = lines(&log);
        l.swap(2, 3);
        write_lines(&log, &l);
        let bad = verify(log.path()).unwrap().first_bad.unwrap();
        assert_eq!((bad.line, bad.expected_seq), (3, 3));
    }

    #[test]
    fn verify_detects_an_added_field_and_garbage() {
        let (_dir, _clock, log) = log_with(3);
        let mut l = lines(&log);
        l[1] = l[1].replacen('{', "{\"extra\":1,", 1);
        write_lines(&log, &l);
        assert_eq!(verify(log.path()).unwrap().first_bad.unwrap().line, 2);
        l[1] = "garbage".into();
        write_lines(&log, &l);
        assert!(verify(log.path()).unwrap().first_bad.unwrap().problem.starts_with("unreadable"));
    }

    #[test]
    fn reopening_continues_the_chain() {
        let (dir, clock, log) = log_with(3);
        drop(log);
        let log = AuditLog::open(dir.path(), clock.now()).unwrap();
        assert_eq!(log.record(Record::new("system", "start", Outcome::Ok), clock.now()).unwrap().seq, 4);
        assert_eq!(
            verify(log.path()).unwrap(),
            Verification {
                good: 4,
                head: query(log.path(), &Filter::default()).unwrap()[3].hash.clone(),
                first_bad: None
            }
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_and_recorded() {
        let (dir, clock, log) = log_with(3);
        drop(log);
        let path = dir.path().join(persist::AUDIT_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ti").unwrap();
        drop(f);
        let log = AuditLog::open(dir.path(), clock.now()).unwrap();
        let v = verify(log.path()).unwrap();
        assert_eq!((v.good, v.first_bad), (4, None));
        let last = query(log.path(), &Filter { limit: Some(1), ..Filter::default() }).unwrap();
        assert_eq!(last[0].action, "audit.torn_tail");
        assert_eq!(last[0].message.as_deref(), Some("12 bytes of a partly written entry were cut off"));
    }

    #[test]
    fn query_filters() {
        let (_dir, clock, log) = log_with(6);
        log.record(Record::new("bob", "login", Outcome::Denied), clock.now()).unwrap();
        let q = |f: Filter| query(log.path(), &f).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(q(Filter { actor: Some("bob".into()), ..Filter::default() }), [7]);
        assert_eq!(q(Filter { action: Some("user.".into()), ..Filter::default() }), [2, 4, 6]);
        assert_eq!(q(Filter { action: Some("user".into()), ..Filter::default() }), Vec::<u64>::new());
        assert_eq!(q(Filter { result: Some(Outcome::Denied), ..Filter::default() }), [7]);
        let t0 = ManualClock::new().now();
        let since = Some(t0 + Duration::from_secs(2));
        let until = Some(t0 + Duration::from_secs(4));
        assert_eq!(q(Filter { since, until, ..Filter::default() }), [2, 3]);
        assert_eq!(q(Filter { limit: Some(2), ..Filter::default() }), [6, 7]);
    }

    #[test]
    fn exports() {
        let (_dir, clock, log) = log_with(1);
        let rec = Record {
            message: Some("=HYPERLINK(\"x\")".into()),
            ..Record::new("bob", "login", Outcome::Failed)
        };
        log.record(rec, clock.now()).unwrap();
        let entries = query(log.path(), &Filter::default()).unwrap();
        let mut jsonl = Vec::new();
        export_jsonl(&entries, &mut jsonl).unwrap();
        assert_eq!(jsonl, std::fs::read(log.path()).unwrap(), "the JSON-lines export is the file itself");
        let mut csv = Vec::new();
        export_csv(&entries, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows[0], CSV_COLUMNS.join(","));
        assert!(
            rows[1].starts_with(
                "\"1\",\"2026-03-01T12:00:01.000Z\",\"alice\",\"admin\",\"192.0.2.1\",\"login\""
            )
        );
        assert!(rows[2].contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{}", rows[2]);
    }

    #[test]
    fn long_fields_are_clipped() {
        let (_dir, clock, log) = log_with(0);
        let rec = Record { message: Some("x".repeat(5000)), ..Record::new("a", "b", Outcome::Ok) };
        let e = log.record(rec, clock.now()).unwrap();
        assert_eq!(e.message.unwrap().len(), MAX_FIELD);
    }
}
