//! The ISO 8583 frame decoder: any bytes, any profile. Oracles: no panic; every
//! frame found lies inside the input; re-encoding a found frame gives its bytes back
//! (up to the ignored reserved bytes of u16be-pad2 and the case of hex lengths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::frame::{Check, FrameConfig, TPDU_LEN};

const NAMES: [&str; 10] =
    ["u16be", "u16be-incl", "u32be", "u16be-pad2", "ascii4", "ascii4-incl", "hex4", "bcd2", "u24be", "ascii2"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else { return };
    let name = NAMES[usize::from(sel) % NAMES.len()];
    let cfg = FrameConfig {
        tpdu: sel & 0x10 != 0,
        fixed_header: usize::from(sel >> 6),
        trailer: (sel & 0x20 != 0).then_some(0x03),
        max_frame: 4096,
        ..FrameConfig::new(name.parse().expect("known name"))
    };
    let mut rest = stream;
    while let Ok(Check::Frame(f)) = cfg.check(rest) {
        assert!(f.total > 0 && f.total <= rest.len());
        assert!(f.message.end <= f.total);
        if !f.is_keep_alive() {
            let tpdu: Option<[u8; TPDU_LEN]> = f.tpdu.clone().map(|r| rest[r].try_into().unwrap());
            let header = f.header.clone().map_or(&[][..], |r| &rest[r]);
            let mut out = Vec::new();
            cfg.encode(tpdu.as_ref(), header, &rest[f.message.clone()], &mut out).expect("re-encode");
            assert_eq!(out.len(), f.total);
            let canonical = !matches!(name, "u16be-pad2" | "hex4");
            if canonical && !(name.ends_with("-incl") && f.total == cfg.length.size()) {
                assert_eq!(&out[..], &rest[..f.total]);
            }
        }
        rest = &rest[f.total..];
    }
});
