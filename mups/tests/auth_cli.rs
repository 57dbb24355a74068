//! `mups user add|list` and `mups audit verify` as an operator runs them: the real binary.
//! (Hashing uses the production argon2 parameters here: a few runs only.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn state_dir(name: &str) -> Dir {
    let p = std::env::temp_dir().join(format!("mups-auth-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    Dir(p)
}

fn mups(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mups"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn auth_cli_user_add_reads_the_password_from_stdin_or_a_file_and_audit_verify_checks_the_chain() {
    let dir = state_dir("add");
    let sd = s(&dir.0);
    let out = mups(
        &["user", "add", "--state-dir", sd, "--role", "admin", "--name", "root1"],
        "a long passphrase\n",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pw = dir.0.join("pw");
    std::fs::write(&pw, "another long passphrase\n").unwrap();
    let out = mups(
        &["user", "add", "--state-dir", sd, "--role", "viewer", "--name", "eve", "--password-file", s(&pw)],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = mups(&["user", "add", "--state-dir", sd, "--role", "viewer", "--name", "weak"], "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));

    let users = std::fs::read_to_string(dir.0.join("users.json")).unwrap();
    assert!(users.contains("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(!users.contains("a long passphrase"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.0.join("users.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let list = mups(&["user", "list", "--state-dir", sd], "");
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("root1") && list.contains("eve"), "{list}");

    let ok = mups(&["audit", "verify", "--state-dir", sd], "");
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));

    // Delete the first entry: the chain breaks at line 1.
    let log = dir.0.join("audit.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let bad = mups(&["audit", "verify", "--state-dir", sd], "");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("BROKEN at line 1 (expected seq 1)"));
}
