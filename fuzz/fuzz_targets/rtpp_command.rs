//! Fuzz the RTPProxy control protocol: command parsing (cookie, command word, modifiers,
//! tags, addresses), reply parsing, and the `I` statistics a controller reads from a reply.
//! Must never panic; a command that parses must encode to a datagram that parses back to the
//! same command.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(info) = anchorage_rtpp::Info::parse(text) {
            let _ = info.active_sessions;
        }
    }
    match anchorage_rtpp::Command::parse(data) {
        Ok(command) => {
            let again = command.encode();
            let back = anchorage_rtpp::Command::parse(&again);
            assert_eq!(back.as_ref(), Ok(&command), "re-encoded command differs");
        }
        Err(error) => {
            if let Some(cookie) = &error.cookie {
                let _ = anchorage_rtpp::Reply::Error(error.code()).encode(cookie);
            }
        }
    }
    if let Ok((cookie, reply)) = anchorage_rtpp::Reply::parse(data) {
        let _ = reply.encode(&cookie);
        let _ = reply.port();
        if let anchorage_rtpp::Reply::Text(text) = &reply {
            let _ = anchorage_rtpp::Info::parse(text);
        }
    }
});
