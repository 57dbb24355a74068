//! The message type indicator: classification and request/response pairing.
//!
//! Digits: version, class, function, origin. Pairing follows jPOS: a request's
//! function digit is even (0 request, 2 advice), its response's is that plus one;
//! the 4th digit (origin, repeat) is not part of the pairing, so 0421 is answered
//! by 0430. Notifications (function 4) get no response.

use std::fmt;
use std::str::FromStr;

/// A message type indicator: four decimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mti([u8; 4]);

/// What a message is, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A request or advice: expects a response ([`Mti::response`]).
    Request,
    /// A response to a request or advice.
    Response,
    /// A notification (xx4x): no response is expected.
    Notification,
    /// Any other function digit (5–9): forwarded, never matched.
    Other,
}

/// An MTI that is not four decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MTI {0:?} is not four decimal digits")]
pub struct BadMti(pub String);

impl Mti {
    /// From four digit values (each 0–9).
    pub(crate) fn from_digit_values(d: [u8; 4]) -> Self {
        debug_assert!(d.iter().all(|&d| d <= 9));
        Self(d.map(|d| b'0' + d))
    }

    /// The four ASCII digits.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// The MTI as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII digits")
    }

    /// Digit values (0–9): version, class, function, origin.
    #[inline]
    pub fn digits(&self) -> [u8; 4] {
        self.0.map(|d| d - b'0')
    }

    /// The version digit: 0 for ISO 8583:1987, 1 for 1993, 2 for 2003.
    pub fn version(&self) -> u8 {
        self.digits()[0]
    }

    /// The class digit: 1 authorization, 2 financial, 4 reversal, 8 network management, …
    pub fn class(&self) -> u8 {
        self.digits()[1]
    }

    /// The function digit: 0 request, 1 response, 2 advice, 3 advice response, 4 notification.
    pub fn function(&self) -> u8 {
        self.digits()[2]
    }

    /// What the message is, for routing.
    pub fn role(&self) -> Role {
        match self.function() {
            0 | 2 => Role::Request,
            1 | 3 => Role::Response,
            4 => Role::Notification,
            _ => Role::Other,
        }
    }

    /// Whether this is network management (class 8: 0800, 0820, 1804, …).
    pub fn is_network_management(&self) -> bool {
        self.class() == 8
    }

    /// The MTI of the response this request expects, or `None` if it expects none.
    /// The origin digit folds as jPOS's `setResponseMTI` (0/1→0, 2/3→2, 4/5→4, …).
    pub fn response(&self) -> Option<Self> {
        if self.role() != Role::Request {
            return None;
        }
        let [v, c, f, o] = self.digits();
        Some(Self::from_digit_values([v, c, f + 1, o & !1]))
    }

    /// The pairing class: version, class and function with request and response
    /// folded together (`010` for 0100, 0101 and 0110; `042` for 0420/0421/0430).
    /// Part of every matching key, because reversals reuse the original STAN.
    pub fn pairing_class(&self) -> [u8; 3] {
        [self.0[0], self.0[1], b'0' + ((self.0[2] - b'0') & !1)]
    }
}

impl FromStr for Mti {
    type Err = BadMti;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != 4 || !b.iter().all(u8::is_ascii_digit) {
            return Err(BadMti(s.to_owned()));
        }
        Ok(Self([b[0], b[1], b[2], b[3]]))
    }
}

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mti(s: &str) -> Mti {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_as_the_issue_lists() {
        for (req, resp) in [
            ("0100", "0110"),
            ("0101", "0110"),
            ("0120", "0130"),
            ("0121", "0130"),
            ("0200", "0210"),
            ("0400", "0410"),
            ("0420", "0430"),
            ("0421", "0430"),
            ("0800", "0810"),
            ("0820", "0830"),
            ("1804", "1814"),
        ] {
            assert_eq!(mti(req).role(), Role::Request, "{req}");
            assert_eq!(mti(req).response(), Some(mti(resp)), "{req}");
            assert_eq!(mti(resp).role(), Role::Response, "{resp}");
            assert_eq!(mti(req).pairing_class(), mti(resp).pairing_class(), "{req}");
        }
    }

    #[test]
    fn notifications_and_classes() {
        assert_eq!(mti("0140").role(), Role::Notification);
        assert_eq!(mti("0140").response(), None);
        assert_eq!(mti("0110").response(), None);
        assert_ne!(mti("0200").pairing_class(), mti("0400").pairing_class());
        assert_ne!(mti("0400").pairing_class(), mti("0420").pairing_class());
        assert!(mti("0810").is_network_management());
        assert!("01A0".parse::<Mti>().is_err());
        assert!("010".parse::<Mti>().is_err());
    }
}
