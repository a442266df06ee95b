//! Property: any datagram either fails to parse with an error (never a panic), or parses to a
//! command whose encoding parses back to the same command (what the fuzz target checks, run
//! here on every test run).

use anchorage_rtpp::{Command, Reply};
use proptest::prelude::*;

/// Datagrams made of command-like pieces, so that many of them parse.
fn datagram() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("U".to_owned()),
        Just("L".to_owned()),
        Just("D".to_owned()),
        Just("Q".to_owned()),
        Just("V".to_owned()),
        Just("VF".to_owned()),
        Just("I".to_owned()),
        Just("X".to_owned()),
        "[UuLlDdQqIiGgRrCcPpNnSsVvFf]{1,2}[AaSsWwEeIi6NnZzCcLlRrVvBbq0-9,.:\\[\\]{}]{0,12}",
        "[a-z0-9@.;_-]{1,12}",
        "[0-9]{1,6}",
        "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|::1|2001:db8::[0-9])",
        "[a-z]{1,4}(;[0-9]{1,3})?",
        Just("&&".to_owned()),
        ".{0,6}",
    ];
    (
        "[a-z0-9_]{0,8}",
        prop::collection::vec(word, 0..9),
        "[ \t\n]{0,2}",
    )
        .prop_map(|(cookie, words, tail)| format!("{cookie} {}{tail}", words.join(" ")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn commands_round_trip(text in datagram()) {
        match Command::parse(text.as_bytes()) {
            Ok(command) => {
                let back = Command::parse(&command.encode());
                prop_assert_eq!(back, Ok(command));
            }
            Err(error) => {
                if let Some(cookie) = &error.cookie {
                    let _ = Reply::Error(error.code()).encode(cookie);
                }
            }
        }
        if let Ok((cookie, reply)) = Reply::parse(text.as_bytes()) {
            let _ = reply.encode(&cookie);
        }
    }

    #[test]
    fn bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Command::parse(&data);
        let _ = Reply::parse(&data);
    }
}
