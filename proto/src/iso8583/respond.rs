//! Responses built from their request: what a node answers, and what `mups`
//! answers itself when a request cannot reach a node (a synthetic decline).
//!
//! A response must look like a real node's to the bank: the response MTI, the
//! request's identifying fields echoed so the bank can match it, the response code,
//! and an authorization id on approvals. Echoed fields are copied byte for byte
//! (prefix and data) from the request, never decoded and re-encoded, so a filler
//! nibble or a character the encoder would write differently comes back as the
//! bank sent it.

use super::{EncodeError, FieldSource, Layout, Message, Mti, ResponseCode, Role};

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

/// A decline `mups` sends in a node's place (the node died with the request in
/// flight, or no node can take it): the response MTI, the echoed fields plus
/// `also_echo` (the bank's matching-key fields, so the bank can match it whatever
/// its key), and DE39 `code`. Card data (track, PIN block, ICC) is never echoed: a
/// response needs none of it, and a copy is one more place for it to leak.
pub fn build_decline(
    layout: &Layout,
    req: &Message<'_>,
    code: &str,
    also_echo: &[u8],
) -> Result<Vec<u8>, ResponseError> {
    let mti = req.mti();
    let resp_mti = mti.response().ok_or(ResponseError::NotARequest(mti))?;
    let mut ids = echo_fields(mti);
    ids.extend(also_echo.iter().copied().filter(|&id| {
        super::mask::sensitivity(id) != super::mask::Sensitivity::Secret && !matches!(id, 39 | 64 | 128)
    }));
    ids.sort_unstable();
    ids.dedup();
    let mut fields: Vec<(u8, FieldSource<'_>)> =
        ids.into_iter().filter_map(|id| req.field(id).map(|f| (id, FieldSource::Wire(f.wire)))).collect();
    fields.push((39, FieldSource::Value(code)));
    let mut out = Vec::with_capacity(req.bytes().len() + 8);
    layout
        .encode_parts(resp_mti.as_str(), fields, &mut out)
        .map_err(|source| ResponseError::Encode { mti: resp_mti, source })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::BUILTIN_LAYOUTS;
    use super::*;

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
    fn errors() {
        let l = Layout::builtin("iso87-ascii").unwrap();
        let resp = l.encode_to_vec("0110", [(11, "000001"), (39, "00")]).unwrap();
        let resp = Message::parse(l, &resp).unwrap();
        assert!(matches!(build_response(l, &resp, "00", "1"), Err(ResponseError::NotARequest(_))));
        let req = l.encode_to_vec("0100", [(11, "000001")]).unwrap();
        let req = Message::parse(l, &req).unwrap();
        assert!(matches!(build_response(l, &req, "000", "000001"), Err(ResponseError::Encode { .. })));
    }

    #[test]
    fn a_decline_echoes_the_key_and_never_card_data() {
        for name in BUILTIN_LAYOUTS {
            let l = Layout::builtin(name).unwrap();
            let req = l
                .encode_to_vec(
                    "0200",
                    [
                        (2, "4761739001010010"),
                        (11, "000123"),
                        (35, "4761739001010010D2512"),
                        (41, "TERM0001"),
                        (48, "KEY"),
                    ],
                )
                .unwrap();
            let req = Message::parse(l, &req).unwrap();
            let resp = build_decline(l, &req, "91", &[11, 35, 48]).unwrap();
            let resp = Message::parse(l, &resp).unwrap();
            assert_eq!(resp.mti().as_str(), "0210", "{name}");
            assert_eq!(resp.value(39).unwrap().unwrap(), "91");
            assert_eq!(resp.field(48).unwrap().wire, req.field(48).unwrap().wire, "{name}");
            assert!(!resp.has(35) && !resp.has(38), "{name}");
        }
        let l = Layout::builtin("iso87-ascii").unwrap();
        let advice = l.encode_to_vec("0120", [(11, "000001")]).unwrap();
        let resp = build_decline(l, &Message::parse(l, &advice).unwrap(), "91", &[]).unwrap();
        assert_eq!(Message::parse(l, &resp).unwrap().mti().as_str(), "0130");
    }
}
