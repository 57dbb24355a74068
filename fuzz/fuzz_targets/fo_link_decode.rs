//! The FO link decoder. Oracles: no panic; a frame that decodes re-encodes to the
//! same bytes (the encoding is canonical).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use proto::fo_link::{self, FoLinkDecoder};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = fo_link::check(data, 1 << 16) {
        let frame = Bytes::copy_from_slice(&data[..n]);
        if let Ok(msg) = fo_link::decode(frame.clone()) {
            assert_eq!(msg.to_vec().expect("decoded message encodes"), frame.to_vec());
        }
    }
    let mut buf = BytesMut::from(data);
    let mut decoder = FoLinkDecoder::new(1 << 16);
    while let Ok(Some(_)) = decoder.decode(&mut buf) {}
});
