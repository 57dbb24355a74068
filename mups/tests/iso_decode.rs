//! `mups iso decode` as an operator runs it: the real binary, hex on stdin, JSON out.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

fn run(args: &[&str], input: &str) -> (bool, Vec<Value>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mups"))
        .args(["iso", "decode"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Write from another thread: a large input and output would fill both pipes.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines = stdout.lines().map(|l| serde_json::from_str(l).expect("each output line is JSON")).collect();
    (out.status.success(), lines)
}

fn vectors(layout: &str) -> Vec<Value> {
    let path = format!("{}/../proto/tests/data/{layout}.jsonl", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_vector_decodes_to_its_fields_with_reveal() {
    for layout in ["iso87-ascii", "iso87-binary", "iso87-bcd", "iso87-ebcdic"] {
        let vs = vectors(layout);
        let input: String = vs.iter().map(|v| format!("{}\n", v["hex"].as_str().unwrap())).collect();
        let (ok, out) = run(&["--layout", layout, "--reveal"], &input);
        assert!(ok, "{layout}");
        assert_eq!(out.len(), vs.len());
        for (got, want) in out.iter().zip(&vs) {
            assert_eq!(got, &json!({"mti": want["mti"], "fields": want["fields"]}), "{layout}");
        }
    }
}

#[test]
fn sensitive_fields_are_masked_by_default() {
    let vs = vectors("iso87-binary");
    let with_card = vs
        .iter()
        .find(|v| {
            v["fields"].get("52").is_some()
                && v["fields"].get("2").is_some_and(|p| p.as_str().unwrap().len() >= 13)
        })
        .unwrap();
    let (ok, out) = run(&["--layout", "iso87-binary"], with_card["hex"].as_str().unwrap());
    assert!(ok);
    let pan = with_card["fields"]["2"].as_str().unwrap();
    let shown = out[0]["fields"]["2"].as_str().unwrap();
    assert_eq!(shown.len(), pan.len());
    assert_eq!(&shown[..6], &pan[..6]);
    assert_eq!(&shown[pan.len() - 4..], &pan[pan.len() - 4..]);
    assert!(shown[6..pan.len() - 4].chars().all(|c| c == '*'));
    assert!(out[0]["fields"]["52"].as_str().unwrap().chars().all(|c| c == '*'));
    assert_eq!(out[0]["fields"]["11"], with_card["fields"]["11"]);
}

#[test]
fn framed_streams_with_keepalives_and_tpdu() {
    // 0800 echo, pyiso8583 `default` spec (our iso87-binary), 39 bytes.
    let echo = "303830308220000000000000040000000000000030363132313533303030303030313234333031";
    let line = format!("0000 0027{echo} 002c6000010002{echo}");
    let (ok, out) = run(&["--layout", "iso87-binary", "--framing", "u16be"], &format!("{line}\n"));
    // The TPDU'd frame is not readable without --tpdu: its "message" starts with 60 00.
    assert!(!ok);
    assert_eq!(out[0], json!({"keepalive": true}));
    assert_eq!(out[1]["fields"]["70"], "301");
    assert!(out[2]["error"].as_str().unwrap().contains("MTI"), "{}", out[2]);
    assert_eq!(out[2]["offset"], 2 + 2 + 39 + 2);

    let line = format!("002c6000010002{echo}002c6000020001{echo}");
    let (ok, out) = run(&["--layout", "iso87-binary", "--framing", "u16be", "--tpdu"], &line);
    assert!(ok);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["tpdu"], "6000010002");
    assert_eq!(out[1]["tpdu"], "6000020001");
    assert_eq!(out[1]["mti"], "0800");
}

#[test]
fn bad_lines_report_error_and_offset_and_the_tool_goes_on() {
    let echo = "303830308220000000000000040000000000000030363132313533303030303030313234333031";
    let truncated = &echo[..echo.len() - 4];
    let input = format!("{echo}\nzz{echo}\n{truncated}\n\n{echo}00\n{echo}\n");
    let (ok, out) = run(&["--layout", "iso87-binary"], &input);
    assert!(!ok, "exit status must be 1 when a line fails");
    assert_eq!(out.len(), 5, "{out:?}");
    assert_eq!(out[0]["mti"], "0800");
    assert_eq!(out[1], json!({"error": "invalid hex digit", "offset": 0}));
    assert_eq!(out[2]["offset"], 36);
    assert!(out[2]["error"].as_str().unwrap().starts_with("DE70 at byte 36: truncated"), "{}", out[2]);
    assert_eq!(out[3]["offset"], 39);
    assert!(out[3]["error"].as_str().unwrap().contains("after the last field"));
    assert_eq!(out[4]["fields"]["11"], "000124");

    let (ok, out) = run(&["--layout", "iso87-binary", "--framing", "ascii4"], "30307839\n30303339\n");
    assert!(!ok);
    assert!(out[0]["error"].as_str().unwrap().starts_with("framing: bad length header"));
    assert!(out[1]["error"].as_str().unwrap().contains("39 more bytes needed"));
}

#[test]
fn unknown_layout_or_framing_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_mups"))
        .args(["iso", "decode", "--layout", "iso99-foo"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown layout"));
    let out = Command::new(env!("CARGO_BIN_EXE_mups"))
        .args(["iso", "decode", "--layout", "iso87-ascii", "--framing", "u17be"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown framing"));
}
