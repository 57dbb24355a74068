//! Building the ISO 8583 messages the simulated node sends: responses to a
//! bank's requests (built by `proto::iso8583::respond`, shared with `mups`'s
//! synthetic declines), and the requests it originates itself.

use std::time::{SystemTime, UNIX_EPOCH};

pub use proto::iso8583::respond::{ECHO_FIELDS, ResponseError, build_response, carries_auth_id, echo_fields};
use proto::iso8583::{EncodeError, Layout};

use crate::civil::civil_from_days;

/// Date and time fields of a message sent now (UTC): DE7 `MMDDhhmmss`, DE12
/// `hhmmss`, DE13 `MMDD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamps {
    /// DE7, transmission date and time.
    pub de7: String,
    /// DE12, local transaction time.
    pub de12: String,
    /// DE13, local transaction date.
    pub de13: String,
}

impl Timestamps {
    /// The fields for `t`.
    pub fn at(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (_, month, day) = civil_from_days((secs / 86_400) as i64);
        let s = secs % 86_400;
        let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
        Self {
            de7: format!("{month:02}{day:02}{h:02}{m:02}{sec:02}"),
            de12: format!("{h:02}{m:02}{sec:02}"),
            de13: format!("{month:02}{day:02}"),
        }
    }
}

/// What the node originates to a bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    /// A request of the configured MTI (default 0100), the bank as issuer.
    Request,
    /// A network management echo test: 0800 with DE70 `301`.
    Echo,
}

/// Fields of a request the node originates, before the configured overrides:
/// test card, zero processing code, amount 10.00, the node's acquirer and terminal.
pub const DEFAULT_REQUEST_FIELDS: [(u8, &str); 8] = [
    (2, "4761739001010010"),
    (3, "000000"),
    (4, "000000001000"),
    (32, "123456"),
    (41, "FOSIM001"),
    (42, "FOSIMMERCHANT01"),
    (49, "840"),
    (18, "6011"),
];

/// A request the node originates: `kind` with STAN `stan` (DE11), built at `now`.
///
/// [`OriginKind::Request`] is `mti` with [`DEFAULT_REQUEST_FIELDS`], then
/// `overrides` (field, value; a later value wins), plus the date and time fields,
/// DE11 and a retrieval reference number (DE37) made of DE13 and the STAN.
/// [`OriginKind::Echo`] is 0800 with DE7, DE11 and DE70 `301`.
pub fn build_request(
    layout: &Layout,
    kind: OriginKind,
    mti: &str,
    overrides: &[(u8, String)],
    stan: u32,
    now: SystemTime,
) -> Result<Vec<u8>, EncodeError> {
    let ts = Timestamps::at(now);
    let stan = format!("{:06}", stan % 1_000_000);
    match kind {
        OriginKind::Echo => layout.encode_to_vec("0800", [(7, ts.de7.as_str()), (11, &stan), (70, "301")]),
        OriginKind::Request => {
            let rrn = format!("{:0>6}{stan}", ts.de13);
            let mut fields: Vec<(u8, &str)> = DEFAULT_REQUEST_FIELDS
                .iter()
                .copied()
                .filter(|(id, _)| layout.field(*id).is_some())
                .collect();
            fields.extend([(7, ts.de7.as_str()), (11, &stan), (12, &ts.de12), (13, &ts.de13), (37, &rrn)]);
            fields.extend(overrides.iter().map(|(id, v)| (*id, v.as_str())));
            layout.encode_to_vec(mti, fields)
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::iso8583::{BUILTIN_LAYOUTS, Message};

    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_718_205_030); // 2024-06-12 15:10:30 UTC
        let ts = Timestamps::at(t);
        assert_eq!((ts.de7.as_str(), ts.de12.as_str(), ts.de13.as_str()), ("0612151030", "151030", "0612"));
    }

    #[test]
    fn originated_requests_parse_under_every_layout() {
        for name in BUILTIN_LAYOUTS {
            let l = Layout::builtin(name).unwrap();
            let now = SystemTime::now();
            let req =
                build_request(l, OriginKind::Request, "0100", &[(49, "978".into())], 1_000_042, now).unwrap();
            let req = Message::parse(l, &req).unwrap();
            assert_eq!(req.mti().as_str(), "0100");
            assert_eq!(req.value(11).unwrap().unwrap(), "000042", "{name}");
            assert_eq!(req.value(49).unwrap().unwrap(), "978", "{name}");
            assert_eq!(req.value(37).unwrap().unwrap().len(), 12, "{name}");
            let echo = build_request(l, OriginKind::Echo, "0100", &[], 7, now).unwrap();
            let echo = Message::parse(l, &echo).unwrap();
            assert_eq!((echo.mti().as_str(), echo.value(70).unwrap().unwrap().as_str()), ("0800", "301"));
        }
    }
}
