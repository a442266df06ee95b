//! Dialog state through the public seam (RFC 3261 §12): target refresh, the ACK of a
//! renumbered re-INVITE, and a dialog at its maximum age ended with a BYE to both parties.

mod support;

use std::time::{Duration, Instant};

use anchorage_proxy::node::{Datagram, Proxy, Transmit};
use anchorage_proxy::Transport;
use anchorage_sip::{Message, Method};

use support::scenario::*;

/// A final response from `source` to a request the proxy forwarded, with extra headers.
fn answer(p: &mut Proxy, request: &Transmit, status: u16, headers: &[(&str, &str)], now: Instant) {
    let req = Message::parse(request.data.clone()).unwrap();
    let mut b = req.response(status, "X");
    for (name, value) in headers {
        b = b.header(name, value);
    }
    p.handle_datagram(
        Datagram {
            data: b.build().unwrap().bytes(),
            source: request.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
}

/// The proxy's BYEs to both parties after the dialog's maximum age (an hour here).
fn byes_at_expiry(p: &mut Proxy, now: Instant) -> Vec<String> {
    p.handle_timeout(now + Duration::from_secs(3601));
    drain(p)
        .iter()
        .filter(|t| t.data.starts_with(b"BYE "))
        .map(|t| format!("{} {}", t.destination, text(t)))
        .collect()
}

#[test]
fn a_2xx_to_an_update_refreshes_both_targets_and_a_new_source_is_the_partys_nat_address() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    // The caller moved (new Contact, new source) and tells with an UPDATE without SDP.
    let update = caller_in_dialog(Method::Update, 2, "z9hG4bK-u1")
        .contact(Some("<sip:alice@127.0.0.1:5072>"))
        .sent_by("127.0.0.1:5072");
    let out = forwarded(&mut p, &update, "127.0.0.1:5072", now);
    answer(
        &mut p,
        &out,
        200,
        &[("Contact", "<sip:bob@127.0.0.1:19>")],
        now,
    );
    drain(&mut p);
    let d = p.dialogs().confirmed("c1").cloned().expect("the dialog");
    assert_eq!(
        d.caller.remote_target.as_deref(),
        Some("sip:alice@127.0.0.1:5072")
    );
    assert_eq!(d.caller.source, Some("127.0.0.1:5072".parse().unwrap()));
    assert_eq!(
        d.callee.remote_target.as_deref(),
        Some("sip:bob@127.0.0.1:19")
    );
    // The proxy's own requests go to the new targets.
    let byes = byes_at_expiry(&mut p, now);
    assert_eq!(byes.len(), 2, "{byes:?}");
    assert!(
        byes.iter()
            .any(|b| b.starts_with("127.0.0.1:5072 BYE sip:alice@127.0.0.1:5072 ")),
        "{byes:?}"
    );
    assert!(
        byes.iter()
            .any(|b| b.contains(" BYE sip:bob@127.0.0.1:19 ")),
        "{byes:?}"
    );
}

#[test]
fn a_refused_update_refreshes_no_target() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let update = caller_in_dialog(Method::Update, 2, "z9hG4bK-u2")
        .contact(Some("<sip:alice@127.0.0.1:5072>"));
    let out = forwarded(&mut p, &update, "127.0.0.1:5070", now);
    answer(&mut p, &out, 488, &[], now);
    drain(&mut p);
    let d = p.dialogs().confirmed("c1").cloned().expect("the dialog");
    assert_eq!(
        d.caller.remote_target.as_deref(),
        Some("sip:alice@127.0.0.1:5070")
    );
    assert_eq!(d.caller.last_cseq, Some(2));
}

#[test]
fn the_ack_of_a_re_invite_keeps_its_cseq_when_a_move_renumbers_the_dialog_before_it() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    let r1 = "v=0\r\no=relay 5 8 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    // The caller's re-INVITE (CSeq 2) with an offer; the callee answers 200.
    let reinvite = caller_in_dialog(Method::Invite, 2, "z9hG4bK-ri").sdp(OFFER_SDP);
    p.handle_datagram(reinvite.datagram("127.0.0.1:5070"), now);
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, now);
    let to_callee = drain(&mut p)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .expect("the re-INVITE forwarded");
    assert!(text(&to_callee).contains("CSeq: 2 INVITE"));
    ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, now);
    drain(&mut p);
    // Before the caller's ACK, the call is moved: the proxy re-INVITEs the callee as the
    // caller (CSeq 3), so the caller's later requests go up by one.
    move_c1_to_r2(&mut p, now);
    let own = drain(&mut p);
    assert!(
        own.iter()
            .any(|t| t.destination.port() == 9 && text(t).contains("CSeq: 3 INVITE")),
        "{:?}",
        own.iter().map(text).collect::<Vec<_>>()
    );
    // The caller's ACK of its re-INVITE (CSeq 2) reaches the callee as the ACK of CSeq 2.
    let ack = caller_in_dialog(Method::Ack, 2, "z9hG4bK-ri-ack");
    p.handle_datagram(ack.datagram("127.0.0.1:5070"), now);
    let acks: Vec<String> = drain(&mut p)
        .iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .map(text)
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].contains("CSeq: 2 ACK"), "{}", acks[0]);
    // A later request of the caller is renumbered as before.
    let info = caller_in_dialog(Method::Info, 3, "z9hG4bK-info");
    let out = forwarded(&mut p, &info, "127.0.0.1:5070", now);
    assert!(text(&out).contains("CSeq: 4 INFO"), "{}", text(&out));
}

#[test]
fn a_dialog_at_its_maximum_age_is_ended_with_a_bye_to_each_party() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    let byes = byes_at_expiry(&mut p, now);
    assert_eq!(byes.len(), 2, "{byes:?}");
    // To the callee as the caller (one above the caller's CSeq 1), to the caller as the
    // callee (its first request).
    assert!(
        byes.iter()
            .any(|b| b.starts_with("127.0.0.1:9 BYE sip:bob@127.0.0.1:9 ")
                && b.contains("CSeq: 2 BYE")
                && b.contains("tag=a1")),
        "{byes:?}"
    );
    assert!(
        byes.iter().any(
            |b| b.starts_with("127.0.0.1:5070 BYE sip:alice@127.0.0.1:5070 ")
                && b.contains("CSeq: 1 BYE")
        ),
        "{byes:?}"
    );
    assert!(p.dialogs().is_empty());
    assert!(p.anchored_call("c1").is_none());
    assert!(ng_requests(&mut p)
        .iter()
        .any(|(port, r)| *port == 2223 && is_delete(r)));
}

#[test]
fn a_2xx_to_a_re_invite_of_ours_is_acked_from_the_dialog_when_its_transaction_is_gone() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    move_c1_to_r2(&mut p, now);
    let out = drain(&mut p);
    let to_callee = out
        .iter()
        .find(|t| t.destination.port() == 9)
        .expect("our re-INVITE to the callee")
        .clone();
    // Our own requests carry a branch any node recognises, with this node's id.
    assert!(
        text(&to_callee).contains(";branch=z9hG4bK-anc-own-n1-"),
        "{}",
        text(&to_callee)
    );
    // The callee's 200, kept to be retransmitted later.
    let req = Message::parse(to_callee.data.clone()).unwrap();
    let ok = req
        .response(200, "OK")
        .header("Contact", "<sip:bob@127.0.0.1:9>")
        .body("application/sdp", ANSWER_SDP.as_bytes())
        .build()
        .unwrap();
    let ok = Datagram {
        data: ok.bytes(),
        source: "127.0.0.1:9".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    };
    p.handle_datagram(ok.clone(), now);
    let first: Vec<Transmit> = drain(&mut p)
        .into_iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .collect();
    assert_eq!(first.len(), 1, "ACKed by its transaction");
    // The caller accepts too: the move is done and the call goes on.
    let to_caller = out
        .iter()
        .find(|t| t.destination.port() == 5070)
        .expect("our re-INVITE to the caller");
    ok_to(&mut p, to_caller, None, OFFER_SDP, now);
    drain(&mut p);
    assert_eq!(
        p.anchored_call("c1").map(|c| c.node),
        Some("r2".to_string())
    );
    // Long after, the transaction is gone (as after a restart): a retransmitted 2xx is still
    // ACKed, from the dialog, and never forwarded.
    let later = now + Duration::from_secs(40);
    p.handle_timeout(later);
    drain(&mut p);
    p.handle_datagram(ok, later);
    let out = drain(&mut p);
    assert_eq!(
        out.len(),
        1,
        "{:?}",
        out.iter().map(text).collect::<Vec<_>>()
    );
    let ack = text(&out[0]);
    assert_eq!(out[0].destination.to_string(), "127.0.0.1:9");
    assert!(
        ack.starts_with("ACK sip:bob@127.0.0.1:9 SIP/2.0\r\n"),
        "{ack}"
    );
    assert!(ack.contains("CSeq: 2 ACK"), "{ack}");
    assert!(ack.contains(";branch=z9hG4bK-anc-own-n1-"), "{ack}");
    let ack = Message::parse(out[0].data.clone()).unwrap();
    assert_eq!(ack.from().unwrap().tag(), Some("a1"));
    assert_eq!(ack.to().unwrap().tag(), Some("b1"));
}
