//! The ISO 8583 walker under every built-in layout. Oracles: no panic; a message
//! that walks and whose values all decode re-encodes to a message that walks to the
//! same MTI and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::iso8583::{BUILTIN_LAYOUTS, Layout, Message};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let layout = Layout::builtin(BUILTIN_LAYOUTS[usize::from(sel) % BUILTIN_LAYOUTS.len()]).unwrap();
    let Ok(msg) = Message::parse(layout, bytes) else { return };
    let _ = format!("{msg:?}");
    let Ok(values) = msg.fields().map(|f| f.value().map(|v| (f.id, v))).collect::<Result<Vec<_>, _>>() else {
        return;
    };
    let again = layout
        .encode_to_vec(msg.mti().as_str(), values.iter().map(|(id, v)| (*id, v.as_str())))
        .expect("decoded values re-encode");
    let msg2 = Message::parse(layout, &again).expect("re-encoded message walks");
    assert_eq!(msg2.mti(), msg.mti());
    let values2: Vec<(u8, String)> = msg2.fields().map(|f| (f.id, f.value().unwrap())).collect();
    assert_eq!(values2, values);
});
