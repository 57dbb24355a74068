//! Building the ISO 8583 messages the simulated node sends: responses to a
//! bank's requests, and the requests it originates itself.
//!
//! A response must look like a real node's to `mups` and to the bank: the
//! response MTI, the request's identifying fields echoed so the bank can match it,
//! the response code, and an authorization id on approvals. Echoed fields are
//! copied byte for byte from the request (after a value round trip through the
//! encoder, which fixes the field's length), so a filler nibble or a character
//! the encoder would write differently still comes back as the bank sent it.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::iso8583::{EncodeError, FieldSource, Layout, Message, Mti, ResponseCode, Role};

use crate::civil::civil_from_days;

/// Fields every response echoes from its request, when present.
pub const ECHO_FIELDS: [u8; 12] = [2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49];

/// A response that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The message is not a request or advice: it expects no response.
    #[error("MTI {0} expects no response")]
    NotARequest(Mti),
    /// The layout cannot encode the response (e.g. a response code of the wrong length).
    #[error("cannot encode the {mti} response: {source}")]
    Encode {
        /// The response MTI.
        mti: Mti,
        /// The encoder's error.
        source: EncodeError,
    },
}

/// The fields a response to `mti` echoes: [`ECHO_FIELDS`], plus DE70 for network
/// management and DE90 for reversals (class 4).
pub fn echo_fields(mti: Mti) -> Vec<u8> {
    let mut ids = ECHO_FIELDS.to_vec();
    if mti.is_network_management() {
        ids.push(70);
    }
    if mti.class() == 4 {
        ids.push(90);
    }
    ids
}

/// Whether a response to `mti` with `code` carries an authorization id (DE38):
/// approvals of authorizations and financial requests (classes 1 and 2).
pub fn carries_auth_id(mti: Mti, code: &str) -> bool {
    matches!(mti.class(), 1 | 2) && ResponseCode(code.to_owned()).is_approval()
}

/// The response to `req`: response MTI, echoed fields (see [`echo_fields`]), DE39
/// `code`, and DE38 `auth_id` when [`carries_auth_id`] and the layout defines DE38.
///
/// An echoed field whose value cannot be decoded (a byte outside the field's
/// character set) is left out rather than failing the whole response.
pub fn build_response(
    layout: &Layout,
    req: &Message<'_>,
    code: &str,
    auth_id: &str,
) -> Result<Vec<u8>, ResponseError> {
    let mti = req.mti();
    let resp_mti = match mti.role() {
        Role::Request => mti.response().ok_or(ResponseError::NotARequest(mti))?,
        _ => return Err(ResponseError::NotARequest(mti)),
    };
    // Echoed fields are copied as received (prefix and data), never decoded and
    // re-encoded: cheaper, and byte-exact whatever the field's content.
    let mut fields: Vec<(u8, FieldSource<'_>)> = echo_fields(mti)
        .into_iter()
        .filter_map(|id| req.field(id).map(|f| (id, FieldSource::Wire(f.wire))))
        .collect();
    fields.push((39, FieldSource::Value(code)));
    if carries_auth_id(mti, code) && layout.field(38).is_some() {
        fields.push((38, FieldSource::Value(auth_id)));
    }
    let mut out = Vec::with_capacity(req.bytes().len() + 16);
    layout
        .encode_parts(resp_mti.as_str(), fields, &mut out)
        .map_err(|source| ResponseError::Encode { mti: resp_mti, source })?;
    Ok(out)
}

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
    use proto::iso8583::BUILTIN_LAYOUTS;

    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_718_205_030); // 2024-06-12 15:10:30 UTC
        let ts = Timestamps::at(t);
        assert_eq!((ts.de7.as_str(), ts.de12.as_str(), ts.de13.as_str()), ("0612151030", "151030", "0612"));
    }

    #[test]
    fn response_echoes_bytes_and_adds_codes() {
        for name in BUILTIN_LAYOUTS {
            let l = Layout::builtin(name).unwrap();
            let req = l
                .encode_to_vec(
                    "0200",
                    [
                        (2, "4761739001010010"),
                        (3, "000000"),
                        (4, "000000001000"),
                        (11, "000123"),
                        (41, "TERM0001"),
                    ],
                )
                .unwrap();
            let req = Message::parse(l, &req).unwrap();
            let resp = build_response(l, &req, "00", "A00001").unwrap();
            let resp = Message::parse(l, &resp).unwrap();
            assert_eq!(resp.mti().as_str(), "0210", "{name}");
            for id in [2, 3, 4, 11, 41] {
                assert_eq!(resp.field(id).unwrap().wire, req.field(id).unwrap().wire, "{name} DE{id}");
            }
            assert_eq!(resp.value(39).unwrap().unwrap(), "00");
            assert_eq!(resp.value(38).unwrap().unwrap(), "A00001");
            let decline = build_response(l, &req, "05", "A00001").unwrap();
            assert!(!Message::parse(l, &decline).unwrap().has(38), "{name}");
        }
    }

    #[test]
    fn odd_bcd_filler_is_echoed_as_received() {
        let l = Layout::builtin("iso87-bcd").unwrap();
        let mut req = l.encode_to_vec("0100", [(2, "476173900101001"), (11, "000001")]).unwrap();
        let de2 = Message::parse(l, &req).unwrap().field(2).unwrap();
        // The encoder pads with F; a bank may pad with 0.
        let last = de2.data_offset + de2.data.len() - 1;
        assert_eq!(req[last] & 0x0F, 0x0F);
        req[last] &= 0xF0;
        let req = Message::parse(l, &req).unwrap();
        let resp = build_response(l, &req, "00", "000001").unwrap();
        assert_eq!(Message::parse(l, &resp).unwrap().field(2).unwrap().data, req.field(2).unwrap().data);
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

    #[test]
    fn errors() {
        let l = Layout::builtin("iso87-ascii").unwrap();
        let resp = l.encode_to_vec("0110", [(11, "000001"), (39, "00")]).unwrap();
        let resp = Message::parse(l, &resp).unwrap();
        assert!(matches!(build_response(l, &resp, "00", "1"), Err(ResponseError::NotARequest(_))));
        let req = l.encode_to_vec("0100", [(11, "000001")]).unwrap();
        let req = Message::parse(l, &req).unwrap();
        assert!(matches!(build_response(l, &req, "000", "000001"), Err(ResponseError::Encode { .. })));
    }
}
