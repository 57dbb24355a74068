//! `mups iso decode`: what an operator runs on a hexdump from a log.
//!
//! Input: hex, one message (or, with a framing, one wire stream) per line;
//! whitespace inside a line is ignored, empty lines are skipped. Output: one JSON
//! object per message, with the vector conventions (binary fields as upper-case
//! hex, BCD numerics as digit strings) and field numbers in numeric order:
//!
//! - `{"mti": "0800", "fields": {"7": "...", "11": "..."}}`, plus `"tpdu"` and
//!   `"header"` (hex) when the framing has them;
//! - `{"keepalive": true}` for a zero-length frame;
//! - `{"error": "...", "offset": N}` for what does not decode: `N` is the byte
//!   offset in the message (bare) or in the line's stream (framed). After a framing
//!   error the rest of the line is skipped (the stream has lost its framing); after
//!   a message error inside a good frame, decoding goes on with the next frame.

use std::io::{BufRead, Write};

use proto::frame::{Check, FrameConfig};
use proto::iso8583::mask::mask_value;
use proto::iso8583::{Layout, Message};
use serde_json::{Map, Value, json};

/// What `decode` needs besides its input.
#[derive(Debug)]
pub struct DecodeOptions<'a> {
    /// Layout of the messages.
    pub layout: &'a Layout,
    /// Framing of each line, or `None` for bare messages.
    pub framing: Option<FrameConfig>,
    /// Show sensitive fields in clear.
    pub reveal: bool,
}

/// Loads a layout: a built-in name, or a `.json` file in pyiso8583's vocabulary.
pub fn load_layout(name_or_path: &str) -> anyhow::Result<Layout> {
    let path = std::path::Path::new(name_or_path);
    if path.extension().is_some_and(|e| e == "json") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("layout file {}: {e}", path.display()))?;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("custom");
        return Ok(Layout::from_json(name, &text)?);
    }
    Ok(Layout::builtin(name_or_path)?.clone())
}

/// Decodes every line of `input` to `output`. Returns whether every line decoded.
pub fn decode(
    opts: &DecodeOptions<'_>,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<bool> {
    let mut all_ok = true;
    for line in input.lines() {
        let line = line?;
        let hex: String = line.chars().filter(|c| !c.is_whitespace()).collect();
        if hex.is_empty() {
            continue;
        }
        let objects = match decode_hex(&hex) {
            Err(offset) => vec![error("invalid hex digit", offset)],
            Ok(bytes) => match &opts.framing {
                None => vec![message_json(opts, &bytes, 0, None, None)],
                Some(framing) => frames_json(opts, framing, &bytes),
            },
        };
        for obj in objects {
            all_ok &= obj.get("error").is_none();
            serde_json::to_writer(&mut output, &obj)?;
            output.write_all(b"\n")?;
        }
    }
    output.flush()?;
    Ok(all_ok)
}

/// Bytes of a hex string, or the byte offset of the first bad digit.
fn decode_hex(hex: &str) -> Result<Vec<u8>, usize> {
    let digits = hex.as_bytes();
    if let Some(i) = digits.iter().position(|b| !b.is_ascii_hexdigit()) {
        return Err(i / 2);
    }
    if digits.len() % 2 == 1 {
        return Err(digits.len() / 2);
    }
    Ok(digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect())
}

fn error(message: impl std::fmt::Display, offset: usize) -> Value {
    json!({ "error": message.to_string(), "offset": offset })
}

fn frames_json(opts: &DecodeOptions<'_>, framing: &FrameConfig, bytes: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        match framing.check(rest) {
            Err(e) => {
                out.push(error(format!("framing: {e}"), pos));
                break;
            }
            Ok(Check::Incomplete { needed }) => {
                out.push(error(format!("framing: incomplete frame, {needed} more bytes needed"), pos));
                break;
            }
            Ok(Check::Frame(f)) if f.is_keep_alive() => {
                out.push(json!({ "keepalive": true }));
                pos += f.total;
            }
            Ok(Check::Frame(f)) => {
                let tpdu = f.tpdu.map(|r| &rest[r]);
                let header = f.header.map(|r| &rest[r]);
                out.push(message_json(opts, &rest[f.message.clone()], pos + f.message.start, tpdu, header));
                pos += f.total;
            }
        }
    }
    out
}

fn message_json(
    opts: &DecodeOptions<'_>,
    bytes: &[u8],
    base: usize,
    tpdu: Option<&[u8]>,
    header: Option<&[u8]>,
) -> Value {
    let msg = match Message::parse(opts.layout, bytes) {
        Ok(m) => m,
        Err(e) => return error(&e, base + e.offset),
    };
    let mut fields = Map::new();
    for f in msg.fields() {
        let value = match f.value() {
            Ok(v) => v,
            Err(e) => return error(&e, base + e.offset),
        };
        let shown = if opts.reveal { value } else { mask_value(f.id, &value).into_owned() };
        fields.insert(f.id.to_string(), Value::String(shown));
    }
    let mut obj = Map::new();
    if let Some(t) = tpdu {
        obj.insert("tpdu".into(), Value::String(hex_upper(t)));
    }
    if let Some(h) = header {
        obj.insert("header".into(), Value::String(hex_upper(h)));
    }
    obj.insert("mti".into(), Value::String(msg.mti().to_string()));
    obj.insert("fields".into(), Value::Object(fields));
    Value::Object(obj)
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
