//! Property tests: parse → serialize is the identity on generated SDP, parsing arbitrary bytes
//! never panics, and edited output always parses back to what was written.

use anchorage_sdp::{Direction, Session};
use proptest::prelude::*;

/// Line text bytes: anything but CR and LF (non-UTF-8 included).
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no line break", |b| *b != b'\r' && *b != b'\n'),
        0..30,
    )
}

fn typed_line() -> impl Strategy<Value = Vec<u8>> {
    let letter = prop::sample::select(b"abcikoprstuvyzABX".to_vec());
    (letter, content()).prop_map(|(letter, rest)| {
        let mut line = vec![letter, b'='];
        line.extend(rest);
        line
    })
}

fn m_line() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["audio", "video", "image", "application"]),
        any::<u16>(),
        prop::option::of(1u16..4),
        prop::sample::select(vec![
            "RTP/AVP",
            "RTP/SAVP",
            "UDP/TLS/RTP/SAVPF",
            "udptl",
            "TCP/MRCPv2",
        ]),
        prop::collection::vec(
            prop::sample::select(vec!["0", "8", "9", "13", "18", "101", "111", "t38"]),
            0..5,
        ),
        prop::sample::select(vec!["", " ", "\t", "  "]),
    )
        .prop_map(|(media, port, count, proto, formats, trailing)| {
            let port = match count {
                Some(c) => format!("{port}/{c}"),
                None => port.to_string(),
            };
            let mut line = format!("m={media} {port} {proto}");
            for f in formats {
                line.push(' ');
                line.push_str(f);
            }
            line.push_str(trailing);
            line.into_bytes()
        })
}

fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => typed_line(),
        2 => m_line(),
        1 => prop::sample::select(vec![Vec::new(), b" ".to_vec(), b"\t ".to_vec()]),
    ]
}

/// A generated SDP: `v=` first, then any lines, each with its own ending; maybe no final one.
fn sdp() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any_line(), any::<bool>()), 0..25),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(lines, crlf_first, final_newline)| {
            let mut out = if crlf_first {
                b"v=0\r\n".to_vec()
            } else {
                b"v=0\n".to_vec()
            };
            let count = lines.len();
            for (index, (line, crlf)) in lines.into_iter().enumerate() {
                out.extend(line);
                if index + 1 < count || final_newline {
                    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn generated_sdp_round_trips(input in sdp()) {
        let parsed = Session::parse_slice(&input);
        prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
        prop_assert_eq!(&parsed.unwrap().to_bytes()[..], &input[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_input_round_trips(
        prefix in prop::sample::select(vec![&b""[..], b"v=0\r\n", b"v=0\n"]),
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut input = prefix.to_vec();
        input.extend(rest);
        if let Ok(sdp) = Session::parse_slice(&input) {
            prop_assert_eq!(&sdp.to_bytes()[..], &input[..]);
        }
    }

    #[test]
    fn edited_output_parses_back_to_the_written_values(
        input in sdp(),
        port in any::<u16>(),
        direction in prop::sample::select(vec![
            Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive,
        ]),
        v6 in any::<bool>(),
    ) {
        let mut sdp = Session::parse_slice(&input).unwrap();
        let ip = if v6 { "2001:db8::5".parse().unwrap() } else { "203.0.113.5".parse().unwrap() };
        sdp.remove_ice();
        sdp.session_level_mut().remove_connection();
        for media in sdp.media_mut() {
            media.set_port(port);
            media.set_connection(ip);
            media.set_direction(direction);
            media.set_rtcp(port.wrapping_add(1), None);
            media.add_static_rtpmaps();
        }
        let out = sdp.to_bytes();
        let again = Session::parse(out.clone());
        prop_assert!(again.is_ok(), "{:?} from {:?}", again.err(), out);
        let again = again.unwrap();
        prop_assert_eq!(again.media().len(), sdp.media().len());
        prop_assert_eq!(again.session_level().connection(), Ok(None));
        for index in 0..again.media().len() {
            let media = &again.media()[index];
            prop_assert_eq!(media.media().port(), port);
            prop_assert_eq!(media.connection().unwrap().and_then(|c| c.ip()), Some(ip));
            prop_assert_eq!(media.direction(), Some(direction));
            prop_assert_eq!(media.rtcp().unwrap().map(|r| r.port), Some(port.wrapping_add(1)));
            prop_assert!(!media.has_ice());
        }
        // Serializing the re-parsed output changes nothing.
        prop_assert_eq!(again.to_bytes(), out);
    }
}
