//! What routing reads from a message: matching keys, network-management codes and
//! response codes, under every layout.

use std::collections::BTreeMap;

use proto::iso8583::{BUILTIN_LAYOUTS, Layout, MatchKeyConfig, Message, NetMgmt, NetMgmtCodes, Role};

fn build(layout: &Layout, mti: &str, fields: &[(u8, &str)]) -> Vec<u8> {
    layout.encode_to_vec(mti, fields.iter().copied()).unwrap()
}

#[test]
fn request_and_response_share_a_key_and_reversals_do_not() {
    let cfg = MatchKeyConfig::default();
    cfg.validate().unwrap();
    for name in BUILTIN_LAYOUTS {
        let l = Layout::builtin(name).unwrap();
        let req = build(l, "0100", &[(2, "4761739001010010"), (11, "000123"), (41, "TERM0001")]);
        let resp = build(l, "0110", &[(11, "000123"), (39, "00"), (41, "TERM0001")]);
        let rev = build(l, "0400", &[(11, "000123"), (41, "TERM0001")]);
        let other_term = build(l, "0110", &[(11, "000123"), (39, "00"), (41, "TERM0002")]);
        let key = |b: &[u8]| cfg.key(&Message::parse(l, b).unwrap());
        assert_eq!(key(&req), key(&resp), "{name}");
        assert_ne!(key(&req), key(&rev), "{name}: a reversal reuses the STAN, not the key");
        assert_ne!(key(&req), key(&other_term), "{name}");
        assert_eq!(key(&req).as_str(), "010|11=000123|41=TERM0001", "{name}");
        // Repeats (4th digit) pair with the original.
        let repeat = build(l, "0101", &[(11, "000123"), (41, "TERM0001")]);
        assert_eq!(key(&repeat), key(&req));
    }
}

#[test]
fn network_management_keys_on_stan_alone() {
    let cfg = MatchKeyConfig::default();
    let l = Layout::builtin("iso87-ascii").unwrap();
    let echo = build(l, "0800", &[(7, "0612153000"), (11, "000124"), (70, "301")]);
    let answer = build(l, "0810", &[(7, "0612153000"), (11, "000124"), (39, "00"), (70, "301")]);
    let e = Message::parse(l, &echo).unwrap();
    let a = Message::parse(l, &answer).unwrap();
    assert_eq!(cfg.key(&e).as_str(), "080|11=000124");
    assert_eq!(cfg.key(&e), cfg.key(&a));
    assert_eq!(e.mti().role(), Role::Request);
    assert_eq!(e.mti().response().unwrap(), a.mti());
}

#[test]
fn key_fields_are_configurable_and_checked() {
    let mut per_mti = BTreeMap::new();
    per_mti.insert("04".to_owned(), vec![11, 41, 90]);
    let cfg = MatchKeyConfig { fields: vec![11, 37], per_mti };
    cfg.validate().unwrap();
    let l = Layout::builtin("iso87-binary").unwrap();
    let auth = build(l, "0200", &[(11, "000001"), (37, "416315000123")]);
    assert_eq!(cfg.key(&Message::parse(l, &auth).unwrap()).as_str(), "020|11=000001|37=416315000123");
    let rev = build(l, "0420", &[(11, "000002"), (41, "T|1\\TERM"), (90, &"0".repeat(42))]);
    let key = cfg.key(&Message::parse(l, &rev).unwrap());
    assert_eq!(key.as_str(), format!("042|11=000002|41=T\\|1\\\\TERM|90={}", "0".repeat(42)));
    // An absent key field is explicit.
    let no_term = build(l, "0420", &[(11, "000002")]);
    assert_eq!(cfg.key(&Message::parse(l, &no_term).unwrap()).as_str(), "042|11=000002|41-|90-");

    let bad = MatchKeyConfig { fields: vec![2, 11, 200], per_mti: [("0x".to_owned(), vec![35])].into() };
    assert_eq!(bad.validate().unwrap_err().len(), 4);
}

#[test]
fn sign_on_sign_off_echo_and_custom_codes() {
    let l = Layout::builtin("iso87-bcd").unwrap();
    let codes = NetMgmtCodes::default();
    let classify = |codes: &NetMgmtCodes, mti: &str, fields: &[(u8, &str)]| {
        let bytes = build(l, mti, fields);
        codes.classify(&Message::parse(l, &bytes).unwrap()).map(Result::unwrap)
    };
    assert_eq!(classify(&codes, "0800", &[(11, "000001"), (70, "001")]), Some(NetMgmt::SignOn));
    assert_eq!(classify(&codes, "0810", &[(11, "000001"), (70, "002")]), Some(NetMgmt::SignOff));
    assert_eq!(classify(&codes, "0800", &[(11, "000001"), (70, "301")]), Some(NetMgmt::Echo));
    assert_eq!(classify(&codes, "0800", &[(11, "000001"), (70, "161")]), Some(NetMgmt::Other("161".into())));
    assert_eq!(classify(&codes, "0800", &[(11, "000001")]), Some(NetMgmt::NoCode));
    assert_eq!(classify(&codes, "0200", &[(11, "000001")]), None);
    let bank = NetMgmtCodes { echo: vec!["301".into(), "270".into()], ..NetMgmtCodes::default() };
    assert_eq!(classify(&bank, "0800", &[(11, "000001"), (70, "270")]), Some(NetMgmt::Echo));
}

#[test]
fn response_code_stays_two_characters() {
    for name in BUILTIN_LAYOUTS {
        let l = Layout::builtin(name).unwrap();
        for code in ["00", "05", "91", "N7"] {
            let bytes = build(l, "0110", &[(11, "000001"), (39, code)]);
            let rc = Message::parse(l, &bytes).unwrap().response_code().unwrap().unwrap();
            assert_eq!(rc.as_str(), code, "{name}");
            assert_eq!(rc.is_approval(), code == "00");
        }
    }
}
