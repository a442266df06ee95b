//! Parse → serialize is the identity on realistic SDPs, and input that is not SDP is refused
//! with an error that says why.

mod fixtures;

use anchorage_sdp::{LineEnding, ParseError, Session};
use bytes::Bytes;

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    for (name, input) in fixtures::all() {
        let sdp =
            Session::parse(Bytes::from(input.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sdp.to_bytes(), Bytes::from(input), "{name}");
    }
}

#[test]
fn sections_are_split_at_each_m_line() {
    let sdp = Session::parse_slice(&fixtures::sdes()).unwrap();
    assert_eq!(sdp.session_level().raw_lines().count(), 7);
    let sizes: Vec<usize> = sdp.media().iter().map(|m| m.raw_lines().count()).collect();
    assert_eq!(sizes, [9, 2]);
    let y = Session::parse_slice(&fixtures::out_of_order()).unwrap();
    let unknown: Vec<&[u8]> = y.session_level().values_of(b'y').collect();
    assert_eq!(unknown, [&b"0123456789"[..]]);
}

#[test]
fn line_ending_style_is_remembered() {
    let crlf = Session::parse_slice(&fixtures::g711()).unwrap();
    assert_eq!(crlf.line_ending(), LineEnding::CrLf);
    let lf = Session::parse_slice(&fixtures::lf_no_final_newline()).unwrap();
    assert_eq!(lf.line_ending(), LineEnding::Lf);
}

fn error_of(input: &[u8]) -> String {
    Session::parse_slice(input).unwrap_err().to_string()
}

#[test]
fn input_that_is_not_sdp_is_refused_with_the_reason() {
    assert_eq!(Session::parse_slice(b"").unwrap_err(), ParseError::Empty);
    assert_eq!(
        error_of(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nhello world\r\n"),
        "line 4: expected '<letter>=' but found \"hello world\""
    );
    assert_eq!(
        error_of(b"INVITE sip:bob@example.com SIP/2.0\r\n"),
        "line 1: expected '<letter>=' but found \"INVITE sip:bob@example.com SIP/2.0\""
    );
    assert_eq!(
        error_of(b"o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"),
        "no v= line"
    );
    // v= inside a media section does not count.
    assert_eq!(error_of(b"m=audio 1 RTP/AVP 0\r\nv=0\r\n"), "no v= line");
    assert_eq!(
        error_of(b"v=0\r\nm=audio\r\n"),
        "line 2: m= line has no port"
    );
    assert_eq!(
        error_of(b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n"),
        "line 2: m= line port \"70000\" is not a number from 0 to 65535"
    );
    assert_eq!(
        error_of(b"v=0\r\nm=audio 4000/x RTP/AVP 0\r\n"),
        "line 2: m= line port \"4000/x\" is not a number from 0 to 65535"
    );
    assert_eq!(
        error_of(b"v=0\r\nm=audio 4000\r\n"),
        "line 2: m= line has no transport protocol"
    );
    assert_eq!(
        error_of(b"v=0\r\nm=audio \xff 4000\r\n"),
        "line 2: m= line is not text"
    );
}

#[test]
fn lenient_shapes_are_accepted_and_kept() {
    for input in [
        &b"v=0"[..],                        // one line, no newline
        b"\r\nv=0\r\n",                     // leading blank line
        b"v=0\r\n\r\n\r\n",                 // trailing blank lines
        b"v=0\r\nm=audio 4000 RTP/AVP\r\n", // m= without formats
        b"v=0\r\nx=\r\nA=upper\r\n",        // unknown and upper-case types
        b"v=0\r\na=trailing  \t \r\n",      // trailing whitespace
        b"v=0\ra=bare-cr-is-not-a-break\n", // a lone CR stays inside the line
    ] {
        let sdp = Session::parse_slice(input).unwrap();
        assert_eq!(&sdp.to_bytes()[..], input);
    }
}
