//! Edits, asserted on the exact bytes they produce.

mod fixtures;

use std::net::IpAddr;

use anchorage_sdp::{Direction, Session};
use fixtures::{crlf, lf};

fn parse(input: Vec<u8>) -> Session {
    Session::parse_slice(&input).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn text(sdp: &Session) -> String {
    String::from_utf8(sdp.to_bytes().to_vec()).unwrap()
}

fn expect(sdp: &Session, lines: &[&str]) {
    assert_eq!(text(sdp), String::from_utf8(crlf(lines)).unwrap());
}

#[test]
fn relay_rewrite_of_a_g711_offer() {
    // What a relay does to an offer (rtpengine-ng.md §2.1): media-level c=, relay port,
    // a=rtcp, replace-origin, next version.
    let mut sdp = parse(fixtures::g711());
    sdp.session_level_mut().remove_connection();
    sdp.set_origin_address(ip("203.0.113.5")).unwrap();
    sdp.set_origin_version(2890844527).unwrap();
    let audio = &mut sdp.media_mut()[0];
    audio.set_connection(ip("203.0.113.5"));
    audio.set_port(30000);
    audio.set_rtcp(30001, None);
    expect(
        &sdp,
        &[
            "v=0",
            "o=alice 2890844526 2890844527 IN IP4 203.0.113.5",
            "s=-",
            "t=0 0",
            "m=audio 30000 RTP/AVP 0 8 101",
            "c=IN IP4 203.0.113.5",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=maxptime:150",
            "a=sendrecv",
            "a=rtcp:30001",
        ],
    );
    // The edited SDP parses again to the values written.
    let again = Session::parse(sdp.to_bytes()).unwrap();
    assert_eq!(again.media()[0].media().port(), 30000);
    assert_eq!(again.origin().unwrap().session_version, 2890844527);
}

#[test]
fn origin_identity_and_version() {
    let mut sdp = parse(fixtures::ipv6());
    sdp.set_origin("anchorage", "4242", 17).unwrap();
    assert_eq!(sdp.origin().unwrap().username, "anchorage");
    assert!(text(&sdp).contains("\r\no=anchorage 4242 17 IN IP6 2001:db8::7\r\n"));
    assert!(sdp.set_origin("two words", "1", 1).is_err());
    assert!(sdp.set_origin("u", "", 1).is_err());
    let mut no_origin = Session::parse_slice(b"v=0\r\n").unwrap();
    assert_eq!(
        no_origin.set_origin_version(1).unwrap_err().to_string(),
        "no o= line"
    );
}

#[test]
fn connection_inserted_in_rfc_order_when_missing() {
    let mut sdp = parse(fixtures::webrtc());
    sdp.session_level_mut().set_connection(ip("198.51.100.1"));
    let out = text(&sdp);
    assert!(out.starts_with("v=0\r\no=- 4611731400430051336 2 IN IP4 192.0.2.50\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"));
    let mut sdp = parse(fixtures::ipv6());
    sdp.media_mut()[0].set_connection(ip("2001:db8::99"));
    expect(
        &sdp,
        &[
            "v=0",
            "o=- 7 7 IN IP6 2001:db8::7",
            "s=-",
            "c=IN IP6 2001:db8::7",
            "t=0 0",
            "m=audio 5004 RTP/AVP 0",
            "c=IN IP6 2001:db8::99",
        ],
    );
}

#[test]
fn hold_is_representable_and_released() {
    let mut sdp = parse(fixtures::g711());
    sdp.session_level_mut().set_connection(ip("0.0.0.0"));
    sdp.media_mut()[0].set_direction(Direction::SendOnly);
    let held = text(&sdp);
    assert!(held.contains("\r\nc=IN IP4 0.0.0.0\r\n"));
    assert!(held.ends_with("a=maxptime:150\r\na=sendonly\r\n"));
    let reparsed = Session::parse(sdp.to_bytes()).unwrap();
    assert!(reparsed
        .effective_connection(0)
        .unwrap()
        .unwrap()
        .is_unspecified());
    assert_eq!(reparsed.effective_direction(0), Some(Direction::SendOnly));

    // An SDP on hold is kept as it is and can be taken off hold in place.
    let mut hold = parse(fixtures::hold());
    assert_eq!(hold.to_bytes(), fixtures::hold());
    hold.media_mut()[0].set_direction(Direction::SendRecv);
    hold.session_level_mut().set_connection(ip("198.51.100.9"));
    expect(
        &hold,
        &[
            "v=0",
            "o=bob 2808844564 2808844565 IN IP4 198.51.100.9",
            "s=-",
            "c=IN IP4 198.51.100.9",
            "t=0 0",
            "m=audio 49172 RTP/AVP 0 101",
            "a=rtpmap:101 telephone-event/8000",
            "a=sendrecv",
        ],
    );
}

#[test]
fn set_direction_replaces_every_direction_in_place_of_the_first() {
    let mut sdp =
        Session::parse_slice(b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=recvonly\r\na=x\r\na=inactive\r\n")
            .unwrap();
    sdp.media_mut()[0].set_direction(Direction::SendRecv);
    assert_eq!(
        &sdp.to_bytes()[..],
        b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=sendrecv\r\na=x\r\n"
    );
}

#[test]
fn attributes_added_set_and_removed_by_name() {
    let mut sdp = Session::parse_slice(
        b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=ptime:30\r\na=x\r\na=ptime:40\r\n\r\n",
    )
    .unwrap();
    let audio = &mut sdp.media_mut()[0];
    audio.set_attribute("ptime", Some("20")).unwrap();
    audio.add_attribute("rtcp-mux", None).unwrap();
    assert_eq!(audio.remove_attribute("x"), 1);
    assert_eq!(audio.remove_attribute("x"), 0);
    // Added lines go before the trailing blank line, which stays.
    assert_eq!(
        &sdp.to_bytes()[..],
        b"v=0\r\nm=audio 1 RTP/AVP 0\r\na=ptime:20\r\na=rtcp-mux\r\n\r\n"
    );
    let audio = &mut sdp.media_mut()[0];
    assert_eq!(
        audio
            .add_attribute("bad name", None)
            .unwrap_err()
            .to_string(),
        "a= name: contains whitespace or a line break: \"bad name\""
    );
    assert!(audio.add_attribute("x:y", None).is_err());
    assert!(audio.set_attribute("ok", Some("line\r\nbreak")).is_err());
    assert_eq!(audio.retain_attributes(|a| !a.is("rtcp-mux")), 1);
}

#[test]
fn lf_session_without_final_newline_gets_lf_lines() {
    let mut sdp = parse(fixtures::lf_no_final_newline());
    // Replacing the last line keeps it unterminated, as it was.
    sdp.media_mut()[0].set_direction(Direction::SendOnly);
    assert!(text(&sdp).ends_with("a=ptime:20\t\na=sendonly"));
    // Appending after it terminates it with the input's style.
    sdp.media_mut()[0].set_rtcp(4005, Some(ip("192.0.2.31")));
    assert_eq!(
        text(&sdp),
        String::from_utf8(lf(&[
            "v=0",
            "o=- 6 6 IN IP4 192.0.2.31",
            "s=-",
            "c=IN IP4 192.0.2.31 ",
            "t=0 0",
            "m=audio 4004 RTP/AVP 8",
            "a=ptime:20\t",
            "a=sendonly",
            "a=rtcp:4005 IN IP4 192.0.2.31",
        ]))
        .unwrap()
    );
}

#[test]
fn remove_ice_everywhere() {
    let mut sdp = parse(fixtures::ice());
    assert_eq!(sdp.remove_ice(), 6);
    expect(
        &sdp,
        &[
            "v=0",
            "o=- 1425 4 IN IP4 192.0.2.40",
            "s=-",
            "c=IN IP4 192.0.2.40",
            "t=0 0",
            "a=tool:baresip 3.10.1",
            "m=audio 10000 RTP/AVP 111 0 8 101",
            "b=AS:128",
            "a=rtpmap:111 opus/48000/2",
            "a=fmtp:111 stereo=1;sprop-stereo=1",
            "a=rtpmap:101 telephone-event/8000",
            "a=rtcp:10001",
            "a=rtcp-mux",
            "a=sendrecv",
            "a=label:1",
        ],
    );
    assert!(!sdp.media()[0].has_ice());
}

#[test]
fn static_rtpmaps_are_inserted_in_format_order() {
    let mut sdp = parse(fixtures::sdes());
    assert_eq!(sdp.media_mut()[0].add_static_rtpmaps(), 2);
    assert_eq!(sdp.media_mut()[0].add_static_rtpmaps(), 0);
    assert_eq!(sdp.media_mut()[1].add_static_rtpmaps(), 0);
    let out = text(&sdp);
    assert!(out.contains(
        "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    ));
    // Without any rtpmap they go before the first attribute; non-RTP media gets none.
    let mut bare = Session::parse_slice(
        b"v=0\r\nm=audio 1 RTP/AVP 18 0 13\r\nc=IN IP4 192.0.2.1\r\na=sendrecv\r\n",
    )
    .unwrap();
    assert_eq!(bare.media_mut()[0].add_static_rtpmaps(), 3);
    assert_eq!(
        &bare.to_bytes()[..],
        &b"v=0\r\nm=audio 1 RTP/AVP 18 0 13\r\nc=IN IP4 192.0.2.1\r\na=rtpmap:18 G729/8000\r\n\
           a=rtpmap:0 PCMU/8000\r\na=rtpmap:13 CN/8000\r\na=sendrecv\r\n"[..]
    );
    let mut fax = parse(fixtures::t38());
    assert_eq!(fax.media_mut()[0].add_static_rtpmaps(), 0);
    assert_eq!(fax.to_bytes(), fixtures::t38());
}

#[test]
fn srtp_to_rtp_rewrites_proto_and_drops_crypto() {
    let mut sdp = parse(fixtures::sdes());
    let audio = &mut sdp.media_mut()[0];
    audio.set_proto("RTP/AVP").unwrap();
    assert_eq!(audio.remove_attribute("crypto"), 2);
    assert!(audio.set_proto("RTP/AVP x").is_err());
    let out = text(&sdp);
    assert!(
        out.contains("\r\nm=audio 20000 RTP/AVP 9 0 8 101\r\nb=AS:64\r\na=rtpmap:9 G722/8000\r\n")
    );
    assert!(!out.contains("crypto"));
    assert!(out.contains("a=fmtp:101 0-15\r\na=silenceSupp:off - - - -\r\n"));
}

#[test]
fn formats_set_and_retained() {
    let mut sdp = parse(fixtures::webrtc());
    let removed = sdp.media_mut()[0].retain_formats(|f| f == "111" || f == "126");
    assert_eq!(removed, ["63", "9", "0", "8", "13", "110"]);
    let out = text(&sdp);
    assert!(out.contains("\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\n"));
    assert!(out.contains(
        "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=ssrc:"
    ));
    let mut sdp = Session::parse_slice(b"v=0\r\nm=audio 49170/2 RTP/AVP 0 8\r\n").unwrap();
    sdp.media_mut()[0].set_port(30000);
    sdp.media_mut()[0].set_formats(["8", "101"]).unwrap();
    assert_eq!(
        &sdp.to_bytes()[..],
        b"v=0\r\nm=audio 30000/2 RTP/AVP 8 101\r\n"
    );
    assert_eq!(sdp.media()[0].media().port_count(), Some(2));
    assert!(sdp.media_mut()[0].set_formats(["8 9"]).is_err());
    sdp.media_mut()[0].set_port(0);
    assert!(sdp.media()[0].is_rejected());
}
