//! Property tests: for generated messages under every built-in layout,
//! decode(encode(x)) == x and encode(decode(bytes)) == bytes; arbitrary bytes never
//! make the walker or the framer panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proto::frame::{Check, FrameConfig};
use proto::iso8583::layout::Encoding;
use proto::iso8583::{BUILTIN_LAYOUTS, Charset, FieldSource, FieldSpec, Layout, Message};

fn value_for(spec: &FieldSpec) -> BoxedStrategy<String> {
    let max = usize::from(spec.max_len);
    let len = if spec.prefix.is_some() { (0..=max).boxed() } else { Just(max).boxed() };
    match spec.encoding {
        Encoding::Text(Charset::Ascii) => len
            .prop_flat_map(|n| proptest::collection::vec(0x20u8..0x7F, n))
            .prop_map(|v| v.into_iter().map(char::from).collect())
            .boxed(),
        Encoding::Text(Charset::Ebcdic) => len
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
            .prop_map(|v| v.into_iter().map(char::from).collect())
            .boxed(),
        Encoding::Binary => len
            .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
            .prop_map(|v| v.iter().map(|b| format!("{b:02X}")).collect())
            .boxed(),
        Encoding::Bcd => len
            .prop_flat_map(|n| proptest::collection::vec(0u8..16, n))
            .prop_map(|v| v.iter().map(|d| format!("{d:X}")).collect())
            .boxed(),
    }
}

fn message(layout: &'static Layout) -> impl Strategy<Value = (String, BTreeMap<u8, String>)> {
    let fields: Vec<BoxedStrategy<Option<(u8, String)>>> = (2..=128u8)
        .filter_map(|id| layout.field(id).map(|spec| (id, spec)))
        .map(|(id, spec)| {
            proptest::option::weighted(0.15, value_for(spec).prop_map(move |v| (id, v))).boxed()
        })
        .collect();
    let mti = (0u8..3, 1u8..9, 0u8..5, 0u8..6).prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}"));
    (mti, fields).prop_map(|(mti, fields)| (mti, fields.into_iter().flatten().collect()))
}

fn layout_and_message() -> impl Strategy<Value = (&'static Layout, String, BTreeMap<u8, String>)> {
    proptest::sample::select(BUILTIN_LAYOUTS.to_vec()).prop_flat_map(|name| {
        let layout = Layout::builtin(name).unwrap();
        message(layout).prop_map(move |(mti, fields)| (layout, mti, fields))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity((layout, mti, fields) in layout_and_message()) {
        let bytes = layout.encode_to_vec(&mti, fields.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        let msg = Message::parse(layout, &bytes).unwrap();
        prop_assert_eq!(msg.mti().to_string(), mti.clone());
        let decoded: BTreeMap<u8, String> = msg.fields().map(|f| (f.id, f.value().unwrap())).collect();
        prop_assert_eq!(&decoded, &fields);
        let again = layout.encode_to_vec(&mti, decoded.iter().map(|(k, v)| (*k, v.as_str()))).unwrap();
        prop_assert_eq!(&again, &bytes);
        // Splicing every field's wire bytes rebuilds the same message.
        let mut spliced = Vec::new();
        layout.encode_parts(&mti, msg.fields().map(|f| (f.id, FieldSource::Wire(f.wire))), &mut spliced).unwrap();
        prop_assert_eq!(spliced, bytes);
    }

    #[test]
    fn walker_never_panics(name in proptest::sample::select(BUILTIN_LAYOUTS.to_vec()),
                           bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let layout = Layout::builtin(name).unwrap();
        if let Ok(msg) = Message::parse(layout, &bytes) {
            for f in msg.fields() {
                let _ = f.value();
            }
            let _ = format!("{:?}", msg);
        }
    }

    #[test]
    fn framer_never_panics(name in proptest::sample::select(
                               vec!["u16be", "u16be-incl", "u32be", "u16be-pad2", "ascii4", "ascii4-incl", "hex4", "bcd2"]),
                           tpdu in any::<bool>(), trailer in any::<bool>(),
                           bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let cfg = FrameConfig { tpdu, trailer: trailer.then_some(3), max_frame: 256,
                                ..FrameConfig::new(name.parse().unwrap()) };
        let mut rest = &bytes[..];
        while let Ok(Check::Frame(f)) = cfg.check(rest) {
            prop_assert!(f.total <= rest.len() && f.total > 0);
            rest = &rest[f.total..];
        }
    }
}
