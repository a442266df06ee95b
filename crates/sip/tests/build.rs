//! Building responses (RFC 3261 §8.2.6) and requests from parts.

use anchorage_sip::{BuildError, Message, Method, RequestBuilder};
use bytes::Bytes;

const REQ: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa\r\n\
Via: SIP/2.0/UDP b.example.com;branch=z9hG4bKb;received=192.0.2.2\r\n\
Max-Forwards: 70\r\n\
f: <sip:alice@example.com>;tag=a\r\n\
t: Bob <sip:bob@example.com>  \r\n\
i: c@h\r\n\
Timestamp: 54\r\n\
CSeq: 41 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

fn req() -> Message {
    Message::parse(Bytes::from_static(REQ.as_bytes())).unwrap()
}

#[test]
fn response_copies_headers_and_adds_to_tag() {
    let r = req();
    let resp = r.response(486, "Busy Here").to_tag("xyz").build().unwrap();
    assert_eq!(
        resp.as_bytes(),
        b"SIP/2.0 486 Busy Here\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa\r\n\
Via: SIP/2.0/UDP b.example.com;branch=z9hG4bKb;received=192.0.2.2\r\n\
f: <sip:alice@example.com>;tag=a\r\n\
t: Bob <sip:bob@example.com>;tag=xyz  \r\n\
i: c@h\r\n\
CSeq: 41 INVITE\r\n\
Content-Length: 0\r\n\
\r\n"
    );
    assert_eq!(resp.to().unwrap().tag(), Some("xyz"));
}

#[test]
fn trying_copies_timestamp_and_body_response_has_length() {
    let r = req();
    let trying = r.response(100, "Trying").build().unwrap();
    assert!(trying
        .as_bytes()
        .windows(15)
        .any(|w| w == b"Timestamp: 54\r\n"));
    assert_eq!(trying.to().unwrap().tag(), None);
    let ok = r
        .response(200, "OK")
        .to_tag("t1")
        .header("Contact", "<sip:bob@192.0.2.4>")
        .body("application/sdp", b"v=0\r\n")
        .build()
        .unwrap();
    assert!(ok.as_bytes().ends_with(
        b"CSeq: 41 INVITE\r\nContact: <sip:bob@192.0.2.4>\r\nContent-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n"
    ));
    assert!(!ok.as_bytes().windows(9).any(|w| w == b"Timestamp"));
}

#[test]
fn response_errors() {
    let r = req();
    assert!(matches!(
        r.response(99, "x").build(),
        Err(BuildError::Status(99))
    ));
    assert!(matches!(
        r.response(400, "a\r\nb").build(),
        Err(BuildError::ControlCharacter("reason phrase"))
    ));
    let tagged = r.response(180, "Ringing").to_tag("one").build().unwrap();
    let twice = Message::parse(Bytes::from(
        String::from_utf8(tagged.as_bytes().to_vec())
            .unwrap()
            .replacen("SIP/2.0 180 Ringing", "INVITE sip:x SIP/2.0", 1),
    ))
    .unwrap();
    let again = twice.response(200, "OK").to_tag("two").build().unwrap();
    assert_eq!(again.to().unwrap().tag(), Some("one"));
}

#[test]
fn in_dialog_request_from_parts() {
    let m = RequestBuilder::new(Method::Invite, "sip:bob@192.0.2.4:5060")
        .via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1")
        .route("<sip:p1.example.com;lr>")
        .route("<sip:p2.example.com;lr>")
        .from("<sip:alice@example.com>;tag=a")
        .to("<sip:bob@example.com>;tag=b")
        .call_id("c@h")
        .cseq(7)
        .contact("<sip:alice@192.0.2.3>")
        .header("Supported", "timer")
        .body("application/sdp", b"v=0\r\n")
        .build()
        .unwrap();
    assert_eq!(
        m.as_bytes(),
        b"INVITE sip:bob@192.0.2.4:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKr1\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>\r\n\
Route: <sip:p2.example.com;lr>\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: <sip:bob@example.com>;tag=b\r\n\
Call-ID: c@h\r\n\
CSeq: 7 INVITE\r\n\
Contact: <sip:alice@192.0.2.3>\r\n\
Supported: timer\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 5\r\n\
\r\n\
v=0\r\n"
    );
    assert_eq!(m.cseq().unwrap().method, Method::Invite);
}

#[test]
fn request_builder_errors() {
    let base = || {
        RequestBuilder::new(Method::Bye, "sip:b@h")
            .via("SIP/2.0/UDP h;branch=z9hG4bK1")
            .from("<sip:a@h>;tag=1")
            .to("<sip:b@h>;tag=2")
            .call_id("x")
            .cseq(2)
    };
    assert!(base().build().is_ok());
    assert!(matches!(
        RequestBuilder::new(Method::Bye, "sip:b@h").build(),
        Err(BuildError::Missing("Via"))
    ));
    assert!(matches!(
        base().header("X", "a\nb").build(),
        Err(BuildError::ControlCharacter("header value"))
    ));
    match base().to("not a uri").build() {
        Err(BuildError::Parse(e)) => assert_eq!(
            e.reason(),
            "bad To header: URI: empty or contains whitespace"
        ),
        other => panic!("{other:?}"),
    }
}

/// An INVITE as a proxy forwards it: a Route set, two Vias, compact forms.
const FORWARDED: &str = "INVITE sip:bob@192.0.2.9:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp, SIP/2.0/UDP a.example.com;branch=z9hG4bKa\r\n\
Route: <sip:edge1.example.com;lr>\r\n\
Route: <sip:edge2.example.com;lr>\r\n\
Max-Forwards: 69\r\n\
f: <sip:alice@example.com>;tag=a\r\n\
t: Bob <sip:bob@example.com>\r\n\
i: c@h\r\n\
CSeq: 41 INVITE\r\n\
Content-Length: 0\r\n\
\r\n";

#[test]
fn the_cancel_of_an_invite_copies_what_rfc_3261_section_9_1_lists() {
    let invite = Message::parse(Bytes::from_static(FORWARDED.as_bytes())).unwrap();
    let cancel = invite.cancel().unwrap();
    assert_eq!(
        cancel.as_bytes(),
        b"CANCEL sip:bob@192.0.2.9:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp\r\n\
Max-Forwards: 70\r\n\
Route: <sip:edge1.example.com;lr>\r\n\
Route: <sip:edge2.example.com;lr>\r\n\
From: <sip:alice@example.com>;tag=a\r\n\
To: Bob <sip:bob@example.com>\r\n\
Call-ID: c@h\r\n\
CSeq: 41 CANCEL\r\n\
Content-Length: 0\r\n\
\r\n"
    );
}

#[test]
fn the_ack_of_a_failure_shares_the_invites_via_and_takes_the_responses_to() {
    let invite = Message::parse(Bytes::from_static(FORWARDED.as_bytes())).unwrap();
    let busy = invite
        .response(486, "Busy Here")
        .to_tag("b")
        .build()
        .unwrap();
    let ack = invite.ack(&busy, None).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKp"));
    assert_eq!(ack.to().unwrap().tag(), Some("b"));
    assert_eq!(ack.cseq().unwrap().seq, 41);
    assert_eq!(ack.cseq().unwrap().method, Method::Ack);
    assert_eq!(ack.routes().count(), 2);
}

#[test]
fn the_ack_of_a_2xx_is_a_transaction_of_its_own() {
    let invite = Message::parse(Bytes::from_static(FORWARDED.as_bytes())).unwrap();
    let ok = invite.response(200, "OK").to_tag("b").build().unwrap();
    let ack = invite
        .ack(&ok, Some("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKpa"))
        .unwrap();
    assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bKpa"));
    assert_eq!(ack.headers_of(anchorage_sip::HeaderName::Via).count(), 1);
    assert_eq!(ack.to().unwrap().tag(), Some("b"));
    assert_eq!(ack.request_uri_raw(), Some(&b"sip:bob@192.0.2.9:5060"[..]));
}

#[test]
fn a_response_has_no_cancel() {
    let invite = Message::parse(Bytes::from_static(FORWARDED.as_bytes())).unwrap();
    let ok = invite.response(200, "OK").build().unwrap();
    assert!(matches!(ok.cancel(), Err(BuildError::NotARequest)));
}
