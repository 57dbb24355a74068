//! Masking of sensitive data for logs and operator tools.
//!
//! PAN (DE2, and DE34, the extended PAN): first 6 and last 4 shown, the rest `*`.
//! Track data (DE35, DE36, DE45), PIN block (DE52) and ICC data (DE55): every
//! character replaced by `*`, so only the length shows. Everything that logs a
//! message goes through [`Masked`] (it is also `Message`'s `Debug`).

use std::borrow::Cow;
use std::fmt;

use super::charset::Charset;
use super::layout::{Encoding, Layout};
use super::message::Message;

/// How much of a field may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Shown as is.
    Clear,
    /// A primary account number: first 6 and last 4 shown.
    Pan,
    /// Nothing shown but the length.
    Secret,
}

/// The sensitivity of data element `id`.
pub fn sensitivity(id: u8) -> Sensitivity {
    match id {
        2 | 34 => Sensitivity::Pan,
        35 | 36 | 45 | 52 | 55 => Sensitivity::Secret,
        _ => Sensitivity::Clear,
    }
}

/// `value` of field `id` as it may be shown.
pub fn mask_value(id: u8, value: &str) -> Cow<'_, str> {
    match sensitivity(id) {
        Sensitivity::Clear => Cow::Borrowed(value),
        Sensitivity::Secret => Cow::Owned("*".repeat(value.chars().count())),
        Sensitivity::Pan => {
            let n = value.chars().count();
            // Below 13 digits, 6 + 4 would reveal most of the number: hide it all.
            if n < 13 {
                return Cow::Owned("*".repeat(n));
            }
            let masked =
                value.chars().enumerate().map(|(i, c)| if i < 6 || i >= n - 4 { c } else { '*' }).collect();
            Cow::Owned(masked)
        }
    }
}

/// A message rendered for logs, sensitive fields masked:
/// `0100 DE2=476173******0010 DE3=000000 DE35=*****…`.
pub struct Masked<'m, 'a>(pub &'m Message<'a>);

impl fmt::Display for Masked<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.mti())?;
        for field in self.0.fields() {
            match field.value() {
                Ok(v) => write!(f, " DE{}={}", field.id, mask_value(field.id, &v))?,
                Err(_) => write!(f, " DE{}=<{} undecodable bytes>", field.id, field.data.len())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pan_shows_first_six_and_last_four() {
        assert_eq!(mask_value(2, "4761739001010010"), "476173******0010");
        assert_eq!(mask_value(2, "476173900101"), "************");
        assert_eq!(mask_value(35, "4761739001010010D2512"), "*********************");
        assert_eq!(mask_value(11, "000123"), "000123");
    }
}

/// A hex dump of bytes that did not decode, safe for logs: any run that looks like
/// card data is replaced by `**` per byte. Card data here means 12 or more decimal
/// digits in a row in ASCII (`0x30`–`0x39`) or EBCDIC (`0xF0`–`0xF9`), or 6 or
/// more bytes in a row of packed decimal (both nibbles 0–9) — a PAN or the account
/// part of track data in any of our encodings. Track separators (`=`, `D`, `^`)
/// break runs, so each side of one is judged alone. With a layout, only the
/// encodings the layout uses are looked for (packed decimal would otherwise swallow
/// most ASCII text); without one (a frame that never reached a layout), all three.
/// Output is capped at `max_bytes`.
pub fn masked_hexdump(bytes: &[u8], layout: Option<&Layout>, max_bytes: usize) -> String {
    let (mut ascii, mut ebcdic, mut bcd) = (layout.is_none(), layout.is_none(), layout.is_none());
    if let Some(layout) = layout {
        for spec in (2..=128).filter_map(|id| layout.field(id)) {
            match spec.encoding {
                Encoding::Text(Charset::Ascii) => ascii = true,
                Encoding::Text(Charset::Ebcdic) => ebcdic = true,
                Encoding::Bcd => bcd = true,
                Encoding::Binary => {}
            }
        }
    }
    let shown = &bytes[..bytes.len().min(max_bytes)];
    let mut hide = vec![false; shown.len()];
    let mut mark_runs = |is_member: &dyn Fn(u8) -> bool, min_run: usize| {
        let mut start = 0;
        while start < shown.len() {
            if !is_member(shown[start]) {
                start += 1;
                continue;
            }
            let end = start + shown[start..].iter().take_while(|&&b| is_member(b)).count();
            // Judge the run on the whole input, so a cut at max_bytes does not unmask it.
            let full_end = start + bytes[start..].iter().take_while(|&&b| is_member(b)).count();
            if full_end - start >= min_run {
                hide[start..end].iter_mut().for_each(|h| *h = true);
            }
            start = end;
        }
    };
    if ascii {
        mark_runs(&|b| b.is_ascii_digit(), 12);
    }
    if ebcdic {
        mark_runs(&|b| (0xF0..=0xF9).contains(&b), 12);
    }
    if bcd {
        mark_runs(&|b| b >> 4 <= 9 && b & 0x0F <= 9, 6);
    }
    let mut out = String::with_capacity(shown.len() * 2 + 16);
    for (b, hidden) in shown.iter().zip(&hide) {
        if *hidden {
            out.push_str("**");
        } else {
            out.push_str(&format!("{b:02x}"));
        }
    }
    if bytes.len() > shown.len() {
        out.push_str(&format!("..(+{} bytes)", bytes.len() - shown.len()));
    }
    out
}

#[cfg(test)]
mod hexdump_tests {
    use super::masked_hexdump;
    use crate::iso8583::Layout;

    #[test]
    fn digit_runs_are_hidden_in_every_encoding() {
        let ascii = b"0100\x72\x3816476173900101001012";
        let dump = masked_hexdump(ascii, Some(Layout::builtin("iso87-binary").unwrap()), 256);
        assert!(dump.starts_with("30313030"), "a 4-digit MTI is not card data: {dump}");
        assert!(!dump.contains("3437363137"), "{dump}");
        let bcd = [0x01, 0x00, 0x16, 0x47, 0x61, 0x73, 0x90, 0x01, 0x01, 0x00, 0x10, 0xAB];
        assert_eq!(masked_hexdump(&bcd, None, 256), format!("{}ab", "**".repeat(11)));
        let bcd_layout = Layout::builtin("iso87-bcd").unwrap();
        assert_eq!(masked_hexdump(&bcd, Some(bcd_layout), 256), format!("{}ab", "**".repeat(11)));
        let ebcdic: Vec<u8> = "4761739001010010".bytes().map(|d| 0xF0 + (d - b'0')).collect();
        assert_eq!(
            masked_hexdump(&ebcdic, Some(Layout::builtin("iso87-ebcdic").unwrap()), 256),
            "**".repeat(16)
        );
        assert_eq!(masked_hexdump(b"\xaa\xbb\xcc\xdd\xee\xff", None, 3), "aabbcc..(+3 bytes)");
    }
}
