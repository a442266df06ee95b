//! Fuzz the relay's STUN check parser (ICE-lite): any datagram arriving on a media port that
//! looks like STUN goes through it. Must never panic; a response is only ever built for a
//! request that carries our ufrag and a valid MESSAGE-INTEGRITY.
#![no_main]

use anchorage_relay::stun::{answer_binding_request, is_stun, IceCredentials};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ours = IceCredentials {
        ufrag: *b"Ab3dEf6h",
        pwd: *b"0123456789abcdefghijklmn",
    };
    let source = "192.0.2.1:4000".parse().unwrap_or_else(|_| unreachable!());
    let _ = is_stun(data);
    if let Ok(response) = answer_binding_request(data, source, &ours) {
        assert!(is_stun(&response));
    }
});
