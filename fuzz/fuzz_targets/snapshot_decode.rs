//! The session snapshot decoder. Oracles: no panic; whatever decodes re-encodes,
//! decodes to the same value, and (the encoding being canonical) to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::snapshot::{SessionSnapshot, SnapshotBatch};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SessionSnapshot::decode(data) {
        let bytes = s.encode().expect("a decoded snapshot encodes");
        assert_eq!(SessionSnapshot::decode(&bytes).expect("re-encoded snapshot decodes"), s);
        assert_eq!(bytes, data);
    }
    if let Ok(b) = SnapshotBatch::decode(data) {
        let bytes = b.encode().expect("a decoded batch encodes");
        assert_eq!(SnapshotBatch::decode(&bytes).expect("re-encoded batch decodes"), b);
        assert_eq!(bytes, data);
    }
});
