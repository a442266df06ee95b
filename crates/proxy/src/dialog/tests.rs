//! Tests of `dialog`.

use super::*;
use bytes::Bytes;

fn msg(text: &str) -> Message {
    Message::parse(Bytes::from(text.replace('\n', "\r\n"))).unwrap()
}

fn invite() -> Message {
    msg("INVITE sip:bob@b.example SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@a.example>;tag=A\nTo: <sip:bob@b.example>\nCall-ID: c1\nCSeq: 10 INVITE\nContact: <sip:alice@192.0.2.1:5070>\nContent-Length: 0\n\n")
}

fn response(status: u16, to_tag: &str, cseq: &str) -> Message {
    msg(&format!("SIP/2.0 {status} X\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1\nFrom: <sip:alice@a.example>;tag=A\nTo: <sip:bob@b.example>;tag={to_tag}\nCall-ID: c1\nCSeq: {cseq}\nContact: <sip:bob@192.0.2.2:5080>\nRecord-Route: <sip:p1.example;lr>\nContent-Length: 0\n\n"))
}

fn in_dialog(method: &str, from_tag: &str, to_tag: &str, cseq: u32) -> Message {
    msg(&format!("{method} sip:x@192.0.2.9 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK9\nFrom: <sip:x@x>;tag={from_tag}\nTo: <sip:y@y>;tag={to_tag}\nCall-ID: c1\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
fn t0() -> Instant {
    Instant::now()
}

/// Applies `response` to `request` as if received from 192.0.2.1:5070 on 127.0.0.1:5060.
fn apply(d: &mut CallDialogs, request: &Message, response: &Message, now: Instant) -> bool {
    d.on_response(
        request,
        addr("192.0.2.1:5070"),
        Transport::Udp,
        addr("127.0.0.1:5060"),
        response,
        now,
    )
}

#[test]
fn forked_early_dialogs_end_when_one_is_confirmed() {
    let now = t0();
    let mut d = CallDialogs::default();
    let inv = invite();
    assert!(apply(&mut d, &inv, &response(180, "B1", "10 INVITE"), now));
    assert!(apply(&mut d, &inv, &response(180, "B2", "10 INVITE"), now));
    assert!(
        !apply(&mut d, &inv, &response(183, "B2", "10 INVITE"), now),
        "known"
    );
    assert_eq!(d.len(), 2);
    assert!(d.confirmed().is_none());
    apply(&mut d, &inv, &response(200, "B2", "10 INVITE"), now);
    assert_eq!(d.len(), 1, "the other early dialog is over");
    let c = d.confirmed().unwrap();
    assert_eq!(
        (c.id.caller_tag.as_str(), c.id.callee_tag.as_str()),
        ("A", "B2")
    );
    assert_eq!(
        c.caller.remote_target.as_deref(),
        Some("sip:alice@192.0.2.1:5070")
    );
    assert_eq!(
        c.callee.remote_target.as_deref(),
        Some("sip:bob@192.0.2.2:5080")
    );
    assert_eq!(c.record_route, vec!["<sip:p1.example;lr>".to_string()]);
    assert_eq!(c.caller.last_cseq, Some(10));
}

#[test]
fn a_failed_invite_ends_its_early_dialogs_and_a_bye_either_way_ends_the_call() {
    let now = t0();
    let mut d = CallDialogs::default();
    let inv = invite();
    apply(&mut d, &inv, &response(180, "B1", "10 INVITE"), now);
    assert!(apply(&mut d, &inv, &response(486, "B1", "10 INVITE"), now));
    assert!(d.is_empty());
    apply(&mut d, &inv, &response(200, "B1", "10 INVITE"), now);
    // The callee hangs up: its BYE goes From B1 To A.
    let bye = in_dialog("BYE", "B1", "A", 1);
    assert!(
        !apply(&mut d, &bye, &response(100, "A", "1 BYE"), now),
        "not final"
    );
    assert!(apply(&mut d, &bye, &response(200, "A", "1 BYE"), now));
    assert!(d.is_empty());
}

#[test]
fn requests_of_the_proxy_renumber_what_the_other_party_sends_after_them() {
    let now = t0();
    let mut d = CallDialogs::default();
    let inv = invite();
    apply(&mut d, &inv, &response(200, "B", "10 INVITE"), now);
    // The callee sent a request of its own with CSeq 7.
    let info = in_dialog("INFO", "B", "A", 7);
    apply(&mut d, &info, &response(200, "A", "7 INFO"), now);
    let dialog = d.confirmed_mut().unwrap();
    assert_eq!(dialog.callee.last_cseq, Some(7));
    // The proxy re-INVITEs the callee as the caller (11), then the caller as the callee (8).
    assert_eq!(dialog.next_cseq_to_callee(), 11);
    assert_eq!(dialog.next_cseq_to_caller(), 8);
    assert_eq!(dialog.next_cseq_to_callee(), 12, "one more each time");
    // The caller's own next request (CSeq 11) reaches the callee as 13.
    assert_eq!(dialog.cseq_offset_from("A"), 2);
    assert_eq!(dialog.cseq_offset_from("B"), 1);
    assert_eq!(dialog.cseq_offset_from("stranger"), 0);
}

#[test]
fn dialogs_at_their_maximum_age_expire() {
    let now = t0();
    let mut d = CallDialogs::default();
    apply(&mut d, &invite(), &response(200, "B", "10 INVITE"), now);
    let hour = Duration::from_secs(3600);
    assert_eq!(d.expire(now + hour - Duration::from_secs(1), hour), 0);
    assert_eq!(d.expire(now + hour, hour), 1);
    assert!(d.is_empty());
}
