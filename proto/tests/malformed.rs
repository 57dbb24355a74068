//! Malformed messages give a typed error naming the part and byte offset, never a
//! panic. Built from the jPOS-guide/pyiso8583 0100 and 0800 examples of the notes.

use proto::iso8583::{DecodeError, DecodeErrorKind, Layout, Message, Part};

/// pyiso8583 `default_ascii` 0100 (131 bytes): fields 2 3 4 7 11 12 13 22 32 37 41 42 49.
const AUTH_ASCII: &str = "3031303037323338303430313038433038303030313634373631373339303031303130303130303030303030303030303030303031303030303631323135333030303030303132333135333030303036313230353130363132333435363431363331353030303132335445524d303030314d45524348414e5430303030303031393738";

fn ascii() -> &'static Layout {
    Layout::builtin("iso87-ascii").unwrap()
}

fn auth() -> Vec<u8> {
    hex::decode(AUTH_ASCII).unwrap()
}

fn err(layout: &Layout, bytes: &[u8]) -> DecodeError {
    Message::parse(layout, bytes).expect_err("must not decode")
}

#[test]
fn the_example_decodes() {
    let bytes = auth();
    let msg = Message::parse(ascii(), &bytes).unwrap();
    assert_eq!(msg.mti().as_str(), "0100");
    assert_eq!(msg.value(2).unwrap().unwrap(), "4761739001010010");
    assert_eq!(msg.value(41).unwrap().unwrap(), "TERM0001");
    let de2 = msg.field(2).unwrap();
    assert_eq!((de2.offset, de2.data_offset, de2.units), (20, 22, 16));
    assert!(!format!("{msg:?}").contains("4761739001010010"), "Debug must mask the PAN");
    assert!(format!("{}", msg.masked()).contains("DE2=476173******0010"));
}

#[test]
fn truncated_names_the_field_and_offset() {
    let bytes = auth();
    // pyiso8583 on the same cut: "Field data is 0 bytes, expecting 3: field 49 pos 128".
    let e = err(ascii(), &bytes[..bytes.len() - 3]);
    assert_eq!(e.part, Part::Field(49));
    assert_eq!(e.offset, 128);
    assert_eq!(e.kind, DecodeErrorKind::Truncated { needed: 3, available: 0 });
    assert_eq!(e.to_string(), "DE49 at byte 128: truncated: needs 3 bytes, 0 left");
    // Cut inside the MTI and inside the bitmap.
    assert_eq!(err(ascii(), &bytes[..2]).part, Part::Mti);
    assert_eq!(err(ascii(), &bytes[..10]).part, Part::PrimaryBitmap);
    // Every prefix fails cleanly.
    for n in 0..bytes.len() {
        assert!(Message::parse(ascii(), &bytes[..n]).is_err(), "prefix {n}");
    }
}

#[test]
fn bad_bitmap_and_mti() {
    let mut bytes = auth();
    bytes[7] = b'G';
    let e = err(ascii(), &bytes);
    assert_eq!((e.part, e.offset, e.kind), (Part::PrimaryBitmap, 7, DecodeErrorKind::BadBitmap));
    let mut bytes = auth();
    bytes[1] = b'X';
    assert_eq!(err(ascii(), &bytes).kind, DecodeErrorKind::BadMti);
    let bcd = Layout::builtin("iso87-bcd").unwrap();
    assert_eq!(err(bcd, &[0x0A, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).kind, DecodeErrorKind::BadMti);
}

#[test]
fn non_digit_and_over_max_length_prefix() {
    let mut bytes = auth();
    bytes[21] = b'x'; // second digit of DE2's LL
    let e = err(ascii(), &bytes);
    assert_eq!((e.part, e.offset, e.kind), (Part::Field(2), 20, DecodeErrorKind::BadLengthPrefix));
    let mut bytes = auth();
    bytes[20..22].copy_from_slice(b"20"); // DE2 max is 19
    let e = err(ascii(), &bytes);
    assert_eq!(e.part, Part::Field(2));
    assert_eq!(e.kind, DecodeErrorKind::LengthOverMax { len: 20, max: 19 });
    // BCD prefix with a non-decimal nibble.
    let bcd = Layout::builtin("iso87-bcd").unwrap();
    let msg = bcd.encode_to_vec("0100", [(2, "4761739001010010"), (11, "000123")]).unwrap();
    let mut bad = msg.clone();
    bad[10] = 0x1A;
    assert_eq!(err(bcd, &bad).kind, DecodeErrorKind::BadLengthPrefix);
}

#[test]
fn tertiary_bitmap_is_refused() {
    let binary = Layout::builtin("iso87-binary").unwrap();
    let mut msg = b"0800".to_vec();
    msg.extend([0x80, 0, 0, 0, 0, 0, 0, 0]); // secondary bitmap present
    msg.extend([0x80, 0, 0, 0, 0, 0, 0, 0]); // bit 65: tertiary
    let e = err(binary, &msg);
    assert_eq!((e.part, e.offset, e.kind), (Part::SecondaryBitmap, 12, DecodeErrorKind::TertiaryBitmap));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = auth();
    bytes.extend_from_slice(b"XY");
    let e = err(ascii(), &bytes);
    assert_eq!((e.part, e.offset, e.kind), (Part::End, 131, DecodeErrorKind::TrailingBytes { count: 2 }));
}

#[test]
fn field_missing_from_layout_is_refused() {
    use std::collections::BTreeMap;
    let json = r#"{"t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4},
                   "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8},
                   "11": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 6}}"#;
    let small = Layout::from_json("small", json).unwrap();
    let binary = Layout::builtin("iso87-binary").unwrap();
    let msg = binary.encode_to_vec("0800", [(7, "0612153000"), (11, "000124")]).unwrap();
    let e = err(&small, &msg);
    assert_eq!((e.part, e.kind), (Part::Field(7), DecodeErrorKind::UndefinedField));
    assert!(small.with_overrides("x", &BTreeMap::new()).is_ok());
}

#[test]
fn text_outside_the_charset_is_an_error_on_read_not_on_walk() {
    let mut bytes = auth();
    bytes[125] = 0xC3; // inside DE42
    let msg = Message::parse(ascii(), &bytes).unwrap();
    let e = msg.value(42).unwrap().unwrap_err();
    assert_eq!((e.part, e.offset), (Part::Field(42), 125));
    assert!(format!("{msg}", msg = msg.masked()).contains("DE42=<15 undecodable bytes>"));
}

#[test]
fn a_message_over_the_walker_limit_is_refused() {
    let bytes = vec![b'0'; proto::iso8583::message::MAX_MESSAGE + 1];
    let e = err(ascii(), &bytes);
    assert_eq!(e.kind, DecodeErrorKind::LengthOverMax { len: bytes.len(), max: 65_535 });
}
