//! Fuzz the ng decoder: framing, bencode, JSON, typed requests and replies, the flag
//! normaliser (including the `rtpp-flags` mini-language) and error replies. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match anchorage_ng::decode_request(data) {
        Ok(incoming) => {
            // Whatever decoded must re-encode and decode to the same request.
            let again = anchorage_ng::encode_request(
                &incoming.cookie,
                &incoming.request,
                incoming.encoding,
            );
            let back = anchorage_ng::decode_request(&again);
            assert!(back.is_ok(), "re-encoded request failed to decode");
            let _ = incoming.request.flags.warning();
        }
        Err(e) => {
            let _ = e.error_reply();
        }
    }
    if let Ok((cookie, encoding, reply)) = anchorage_ng::decode_reply(data) {
        let _ = anchorage_ng::encode_reply(&cookie, &reply, encoding);
    }
    // The document alone, as the TCP and HTTP transports carry it.
    let _ = anchorage_ng::decode_document(data);
});
