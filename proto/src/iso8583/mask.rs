//! Masking of sensitive data for logs and operator tools.
//!
//! PAN (DE2, and DE34, the extended PAN): first 6 and last 4 shown, the rest `*`.
//! Track data (DE35, DE36, DE45), PIN block (DE52) and ICC data (DE55): every
//! character replaced by `*`, so only the length shows. Everything that logs a
//! message goes through [`Masked`] (it is also `Message`'s `Debug`).

use std::borrow::Cow;
use std::fmt;

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
