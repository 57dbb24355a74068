//! The independent pyiso8583 vectors (`tests/data/`, copied from the shared test
//! data): every message decodes to exactly its listed fields and values and
//! re-encodes byte for byte; every framing vector decodes and encodes exactly.

use std::collections::BTreeMap;

use proto::frame::{Check, FrameConfig};
use proto::iso8583::{Layout, Message};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    profile: String,
    hex: String,
    mti: String,
    fields: BTreeMap<String, String>,
}

fn vectors(layout: &str) -> Vec<Vector> {
    let path = format!("{}/tests/data/{layout}.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(|l| serde_json::from_str(l).expect("vector line")).collect()
}

fn check_layout(name: &str) {
    let layout = Layout::builtin(name).unwrap();
    let all = vectors(name);
    assert_eq!(all.len(), 300, "{name}: expected 300 vectors");
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v.profile, name);
        let bytes = hex::decode(&v.hex).unwrap();
        let msg = Message::parse(layout, &bytes).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
        assert_eq!(msg.mti().as_str(), v.mti, "{name} #{i}");
        let got: BTreeMap<String, String> = msg
            .fields()
            .map(|f| (f.id.to_string(), f.value().unwrap_or_else(|e| panic!("{name} #{i}: {e}"))))
            .collect();
        assert_eq!(got, v.fields, "{name} #{i}: decoded fields differ");
        let fields = v.fields.iter().map(|(k, val)| (k.parse::<u8>().unwrap(), val.as_str()));
        let encoded = layout.encode_to_vec(&v.mti, fields).unwrap_or_else(|e| panic!("{name} #{i}: {e}"));
        assert_eq!(hex::encode(&encoded), v.hex.to_lowercase(), "{name} #{i}: re-encoding differs");
    }
}

#[test]
fn iso87_ascii_vectors() {
    check_layout("iso87-ascii");
}

#[test]
fn iso87_binary_vectors() {
    check_layout("iso87-binary");
}

#[test]
fn iso87_bcd_vectors() {
    check_layout("iso87-bcd");
}

#[test]
fn iso87_ebcdic_vectors() {
    check_layout("iso87-ebcdic");
}

#[derive(Deserialize)]
struct FramingVector {
    framing: String,
    payload_hex: String,
    wire_hex: String,
}

fn framing_vectors() -> Vec<FramingVector> {
    let path = format!("{}/tests/data/framing.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn framing_vectors_decode_and_encode() {
    let all = framing_vectors();
    assert_eq!(all.len(), 64);
    for v in &all {
        let cfg = FrameConfig { max_frame: 1 << 20, ..FrameConfig::new(v.framing.parse().unwrap()) };
        let payload = hex::decode(&v.payload_hex).unwrap();
        let wire = hex::decode(&v.wire_hex).unwrap();
        let Ok(Check::Frame(f)) = cfg.check(&wire) else { panic!("{}: no frame", v.framing) };
        assert_eq!(f.total, wire.len(), "{}", v.framing);
        assert_eq!(&wire[f.message.clone()], &payload[..], "{}", v.framing);
        assert_eq!(f.is_keep_alive(), payload.is_empty());
        let mut out = Vec::new();
        if payload.is_empty() {
            cfg.encode_keep_alive(&mut out);
        } else {
            cfg.encode(None, &[], &payload, &mut out).unwrap();
        }
        assert_eq!(out, wire, "{}: encoding differs", v.framing);
    }
}

/// Feeds `stream` to `cfg` in chunks of `chunk` bytes, the way a socket reader
/// would, and returns the messages (empty for keep-alives) in order.
fn drain_in_chunks(cfg: &FrameConfig, stream: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match cfg.check(&buf).unwrap() {
                Check::Incomplete { needed } => {
                    assert!(needed > 0);
                    break;
                }
                Check::Frame(f) => {
                    frames.push(buf[f.message.clone()].to_vec());
                    buf.drain(..f.total);
                }
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    frames
}

#[test]
fn framing_handles_every_split() {
    let all = framing_vectors();
    let names: std::collections::BTreeSet<&str> = all.iter().map(|v| v.framing.as_str()).collect();
    for name in names {
        let cfg = FrameConfig { max_frame: 1 << 20, ..FrameConfig::new(name.parse().unwrap()) };
        let group: Vec<&FramingVector> = all.iter().filter(|v| v.framing == name).collect();
        let stream: Vec<u8> = group.iter().flat_map(|v| hex::decode(&v.wire_hex).unwrap()).collect();
        let expected: Vec<Vec<u8>> = group.iter().map(|v| hex::decode(&v.payload_hex).unwrap()).collect();
        for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
            assert_eq!(drain_in_chunks(&cfg, &stream, chunk), expected, "{name} in chunks of {chunk}");
        }
    }
}
