//! The edit list: exact output bytes for each edit.

use anchorage_sip::{BuildError, HeaderName, Message};
use bytes::Bytes;

const REQ: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa, SIP/2.0/UDP b.example.com;branch=z9hG4bKb\r\n\
VIA: SIP/2.0/UDP c.example.com;branch=z9hG4bKc\r\n\
max-forwards:   7\r\n\
Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n\
Record-Route: <sip:rr.example.com;lr>\r\n\
f: <sip:alice@example.com>;tag=a\r\n\
t: <sip:bob@example.com>\r\n\
i: c@h\r\n\
CSeq:  41 INVITE\r\n\
X-Keep: Me\r\n\
l: 3\r\n\
\r\n\
abc";

fn m() -> Message {
    Message::parse(Bytes::from_static(REQ.as_bytes())).unwrap()
}

fn out(f: impl FnOnce(&mut anchorage_sip::Editor<'_>)) -> String {
    let m = m();
    let mut e = m.edit();
    f(&mut e);
    String::from_utf8(e.finish().to_vec()).unwrap()
}

#[test]
fn unedited_message_is_byte_identical() {
    assert_eq!(out(|_| {}), REQ);
}

#[test]
fn push_via_goes_above_the_top_via() {
    let got = out(|e| {
        e.push_via(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
            .unwrap();
        e.push_via(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2")
            .unwrap();
    });
    let want = REQ.replace(
        "\r\nv: ",
        "\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nv: ",
    );
    assert_eq!(got, want);
    assert!(matches!(
        m().edit().push_via(b"x\r\ny"),
        Err(BuildError::ControlCharacter("header value"))
    ));
}

#[test]
fn pop_via_removes_values_then_lines() {
    let one = out(|e| {
        e.pop_via();
    });
    assert_eq!(
        one,
        REQ.replace("v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa, ", "v: ")
    );
    let two = out(|e| {
        e.pop_via().pop_via();
    });
    assert_eq!(
        two,
        REQ.replace("v: SIP/2.0/UDP a.example.com;branch=z9hG4bKa, SIP/2.0/UDP b.example.com;branch=z9hG4bKb\r\n", "")
    );
    let three = out(|e| {
        e.pop_via().pop_via().pop_via();
    });
    assert!(!three.contains("c.example.com") && !three.contains("VIA"));
    let reparsed = Message::parse(Bytes::from(three)).unwrap();
    assert_eq!(reparsed.vias().count(), 0);
}

#[test]
fn pop_route_handles_a_folded_list() {
    let got = out(|e| {
        e.pop_route();
    });
    assert_eq!(
        got,
        REQ.replace("<sip:p1.example.com;lr>,\r\n <sip:p2", "<sip:p2")
    );
    let m2 = Message::parse(Bytes::from(got)).unwrap();
    let r: Vec<_> = m2.routes().map(|r| r.unwrap().uri_raw.to_vec()).collect();
    assert_eq!(r, [b"sip:p2.example.com;lr".to_vec()]);
}

#[test]
fn record_route_max_forwards_cseq_and_request_uri() {
    let got = out(|e| {
        e.prepend_record_route(b"<sip:192.0.2.1;lr>").unwrap();
        e.set_max_forwards(6);
        e.set_cseq_number(42).unwrap();
        e.set_request_uri(b"sip:bob@192.0.2.7:5062").unwrap();
    });
    let want = REQ
        .replace(
            "Record-Route: <sip:rr",
            "Record-Route: <sip:192.0.2.1;lr>\r\nRecord-Route: <sip:rr",
        )
        .replace("max-forwards:   7", "max-forwards:   6")
        .replace("CSeq:  41 INVITE", "CSeq:  42 INVITE")
        .replace(
            "INVITE sip:bob@example.com SIP",
            "INVITE sip:bob@192.0.2.7:5062 SIP",
        );
    assert_eq!(got, want);
}

#[test]
fn missing_headers_are_added_in_place() {
    let src = "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n";
    let m = Message::parse(Bytes::from_static(src.as_bytes())).unwrap();
    let mut e = m.edit();
    e.set_max_forwards(70);
    e.prepend_record_route(b"<sip:p;lr>").unwrap();
    e.add_header("X-A", b"1").unwrap();
    e.add_header("X-B", b"2").unwrap();
    e.set_body(Bytes::from_static(b"hello"));
    assert_eq!(
        e.finish(),
        "OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nRecord-Route: <sip:p;lr>\r\nMax-Forwards: 70\r\nCall-ID: x\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 5\r\n\r\nhello"
    );
}

#[test]
fn header_value_removal_and_body() {
    let m = m();
    let keep = m.headers().find(|h| h.name() == b"X-Keep").unwrap().index();
    let mut e = m.edit();
    e.set_header_value(keep, b"first").unwrap();
    e.set_header_value(keep, b"second").unwrap();
    e.remove_headers(HeaderName::RecordRoute);
    e.set_body(Bytes::from_static(b"v=0\r\n"));
    let got = e.finish_message().unwrap();
    assert_eq!(
        got.as_bytes(),
        REQ.replace("X-Keep: Me", "X-Keep: second")
            .replace("Record-Route: <sip:rr.example.com;lr>\r\n", "")
            .replace("l: 3\r\n\r\nabc", "l: 5\r\n\r\nv=0\r\n")
            .as_bytes()
    );
    // Removing a header also drops an edit inside it.
    let mut e = m.edit();
    e.set_header_value(keep, b"x").unwrap();
    e.remove_header(keep);
    assert_eq!(e.finish(), REQ.replace("X-Keep: Me\r\n", ""));
}

#[test]
fn write_to_appends() {
    let m = m();
    let mut buf = b"prefix".to_vec();
    m.edit().write_to(&mut buf);
    assert_eq!(&buf[6..], REQ.as_bytes());
}

#[test]
fn request_uri_edit_on_a_response_is_refused() {
    let r = Message::parse(Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n")).unwrap();
    assert!(matches!(
        r.edit().set_request_uri(b"sip:x"),
        Err(BuildError::NotARequest)
    ));
}
