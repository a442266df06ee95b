//! Calls loaded on demand: a message about a call this node does not hold waits while the
//! store is asked for the call's record (`Output::LoadCall`), then is handled as if the node
//! had held the call all along; bounded in count and time, and once per unknown call.

mod support;

use std::time::Duration;

use anchorage_proxy::node::{CallRecord, Output, Proxy, Transmit, MAX_PARKED_PER_CALL};
use anchorage_sip::Method;

use support::scenario::*;

const TWO_RELAYS: &str = "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n";

/// A fresh node with a store (as after a restart whose start-up load missed the call).
fn node_with_store() -> Proxy {
    let mut q = proxy(TWO_RELAYS);
    q.enable_call_records();
    q
}

/// The loads asked for, and the SIP messages sent, now.
fn loads_and_sip(p: &mut Proxy) -> (Vec<String>, Vec<Transmit>) {
    let (mut loads, mut sip) = (Vec::new(), Vec::new());
    while let Some(o) = p.poll_output() {
        match o {
            Output::LoadCall(id) => loads.push(id),
            Output::Sip(t) => sip.push(t),
            _ => {}
        }
    }
    (loads, sip)
}

/// The caller's in-dialog INFO of call c1 (`cseq`, its own branch).
fn info(cseq: u32) -> Req {
    caller_in_dialog(Method::Info, cseq, &format!("z9hG4bK-info{cseq}"))
}

fn cseq_of(t: &Transmit) -> u32 {
    text(t)
        .lines()
        .find_map(|l| l.strip_prefix("CSeq: "))
        .and_then(|v| v.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_response_to_a_dead_nodes_reinvite_waits_for_the_call_then_is_acked_and_numbers_go_on() {
    let now = epoch();
    let (record, to_callee) = died_after_reinvites();
    let mut q = node_with_store();
    // The callee's 2xx reaches a node that does not hold c1: nothing is sent yet, the store
    // is asked once.
    ok_to(&mut q, &to_callee, None, ANSWER_SDP, now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert_eq!(loads, vec!["c1".to_string()]);
    assert!(sip.is_empty(), "nothing before the record: {sip:?}");
    assert_eq!(q.parked_messages(), 1);
    // Its retransmission waits with it, without a second lookup.
    ok_to(&mut q, &to_callee, None, ANSWER_SDP, now);
    assert_eq!(loads_and_sip(&mut q), (vec![], vec![]));
    // The record arrives: the move is taken over (its re-INVITEs were out; it ends on r2 once
    // the caller answers too), and both 2xx are ACKed with the re-INVITE's CSeq.
    let later = now + Duration::from_millis(20);
    q.handle_loaded("c1", Some(record), later);
    assert_eq!(q.parked_messages(), 0);
    assert_eq!(q.anchored_call("c1").map(|c| c.node), Some("r1".into()));
    let (loads, sip) = loads_and_sip(&mut q);
    assert!(loads.is_empty());
    let acks: Vec<String> = sip
        .iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .map(text)
        .collect();
    assert_eq!(acks.len(), 2, "{sip:?}");
    assert!(acks.iter().all(|a| a.contains("CSeq: 2 ACK")), "{acks:?}");
    assert_eq!(q.counters().calls_loaded, 1);
    // Held now: the caller's next request goes at once, numbered above what the dead node
    // reserved for its own requests.
    let out = forwarded(&mut q, &info(2), "127.0.0.1:5070", later);
    assert!(cseq_of(&out) > 2 + 16, "{}", text(&out));
    assert_eq!(q.counters().load_requests, 1);
}

#[test]
fn an_in_dialog_request_waits_for_its_call_and_goes_on_renumbered() {
    let now = epoch();
    let (record, _) = died_after_reinvites();
    let d = record.dialogs[0].dialog.clone();
    let reserved = d.renumber.reserved_to_callee;
    // The highest number the record says the callee has seen on the caller's side.
    let seen =
        (d.caller.last_cseq.unwrap_or(0) + d.renumber.to_callee).max(d.renumber.own_to_callee);
    let mut q = node_with_store();
    q.handle_datagram(info(2).datagram("127.0.0.1:5070"), now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert_eq!((loads, sip.len()), (vec!["c1".to_string()], 0));
    q.handle_loaded("c1", Some(record), now);
    let (_, sip) = loads_and_sip(&mut q);
    let info_out = sip
        .iter()
        .find(|t| t.data.starts_with(b"INFO "))
        .expect("the INFO forwarded once its call is loaded");
    assert_eq!(info_out.destination.to_string(), "127.0.0.1:9");
    // Above the dead node's reservation, and above the callee's last number seen by the
    // margin for requests the record may have missed.
    let floor = reserved.max(seen + anchorage_proxy::dialog::UNSEEN_CSEQ_MARGIN);
    let last_in_record = d.caller.last_cseq.unwrap_or(0);
    assert_eq!(
        cseq_of(info_out),
        2 + floor - last_in_record,
        "{}",
        text(info_out)
    );
}

#[test]
fn a_call_the_store_does_not_know_goes_on_without_it_and_is_not_asked_for_again_at_once() {
    let now = epoch();
    let mut q = node_with_store();
    let bye = caller_in_dialog(Method::Bye, 5, "z9hG4bK-bye");
    q.handle_datagram(bye.datagram("127.0.0.1:5070"), now);
    assert_eq!(loads_and_sip(&mut q).0, vec!["c1".to_string()]);
    q.handle_loaded("c1", None, now);
    let (_, sip) = loads_and_sip(&mut q);
    let out = sip
        .iter()
        .find(|t| t.data.starts_with(b"BYE "))
        .expect("forwarded as without a store");
    assert_eq!(cseq_of(out), 5, "not renumbered: nothing is known");
    assert_eq!(q.counters().load_misses, 1);
    // The next message about c1 within a few seconds goes at once.
    let cancel = Req::invite().method(Method::Cancel).branch("z9hG4bK-x");
    q.handle_datagram(cancel.datagram("127.0.0.1:5070"), now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert!(loads.is_empty());
    assert!(
        sip.iter().any(|t| t.data.starts_with(b"CANCEL ")),
        "{sip:?}"
    );
    // Later it is asked again (the call may have been recorded since).
    q.handle_datagram(
        info(6).datagram("127.0.0.1:5070"),
        now + Duration::from_secs(6),
    );
    assert_eq!(loads_and_sip(&mut q).0, vec!["c1".to_string()]);
}

#[test]
fn a_store_that_does_not_answer_holds_messages_only_until_the_load_timeout() {
    let now = epoch();
    let mut q = node_with_store();
    q.handle_datagram(info(2).datagram("127.0.0.1:5070"), now);
    assert_eq!(loads_and_sip(&mut q).0.len(), 1);
    // The scenario's load timeout is 1 s.
    q.handle_timeout(now + Duration::from_millis(999));
    assert!(loads_and_sip(&mut q).1.is_empty(), "still waiting");
    q.handle_timeout(now + Duration::from_secs(1));
    let (_, sip) = loads_and_sip(&mut q);
    assert_eq!(
        sip.iter().filter(|t| t.data.starts_with(b"INFO ")).count(),
        1,
        "handled without its record: {sip:?}"
    );
    assert_eq!(q.counters().load_timeouts, 1);
    assert_eq!(q.parked_messages(), 0);
    // A late answer finds nothing parked: nothing is sent twice.
    q.handle_loaded("c1", None, now + Duration::from_secs(2));
    assert!(loads_and_sip(&mut q).1.is_empty());
}

#[test]
fn parking_is_bounded_per_call_and_a_node_without_a_store_never_parks() {
    let now = epoch();
    let mut q = node_with_store();
    for n in 0..MAX_PARKED_PER_CALL as u32 {
        q.handle_datagram(info(10 + n).datagram("127.0.0.1:5070"), now);
    }
    assert_eq!(q.parked_messages(), MAX_PARKED_PER_CALL);
    assert_eq!(loads_and_sip(&mut q).0.len(), 1);
    q.handle_datagram(info(100).datagram("127.0.0.1:5070"), now);
    let (_, sip) = loads_and_sip(&mut q);
    assert_eq!(sip.len(), 1, "over the bound: handled at once");
    assert_eq!(q.counters().parking_full, 1);
    let mut plain = proxy(TWO_RELAYS);
    plain.handle_datagram(info(2).datagram("127.0.0.1:5070"), now);
    let (loads, sip) = loads_and_sip(&mut plain);
    assert!(loads.is_empty());
    assert_eq!(sip.len(), 1);
}

/// A rule forking call c1's INVITE in parallel to 127.0.0.1:16001 and :16002.
const FORK: &str = "[[proxy.route]]\nname = \"f\"\nfork = \"parallel\"\n\
     destinations = [{ host = \"127.0.0.1\", port = 16001 }, { host = \"127.0.0.1\", port = 16002 }]\n";

/// The branch parameter of a sent request's top Via.
fn top_branch(t: &Transmit) -> String {
    let m = anchorage_sip::Message::parse(t.data.clone()).unwrap();
    let via = m.top_via().unwrap();
    via.branch().unwrap_or("").to_string()
}

#[test]
fn a_cancel_reaching_a_node_without_the_invite_follows_every_branch_the_record_names() {
    let now = epoch();
    let mut p = proxy(FORK);
    p.enable_call_records();
    p.handle_datagram(Req::invite().datagram("127.0.0.1:5070"), now);
    let mut record = None;
    let mut invites = Vec::new();
    while let Some(o) = p.poll_output() {
        match o {
            Output::CallChanged(r) => record = Some(*r),
            Output::Sip(t) if t.data.starts_with(b"INVITE ") => invites.push(t),
            _ => {}
        }
    }
    let record = record.expect("the open INVITE makes a record");
    let mut recorded: Vec<(u16, String)> = record
        .open_invite
        .iter()
        .map(|b| (b.destination.port(), b.branch.clone()))
        .collect();
    let mut sent: Vec<(u16, String)> = invites
        .iter()
        .map(|t| (t.destination.port(), top_branch(t)))
        .collect();
    recorded.sort();
    sent.sort();
    assert_eq!(recorded, sent, "the record names each branch as sent");
    assert_eq!(sent.len(), 2);
    // The node dies. The caller's CANCEL reaches another node, which loads the call and
    // cancels both branches with the branches they were sent with (a router alone would
    // know only the first destination).
    let mut q = node_with_store();
    let cancel = Req::invite().method(Method::Cancel);
    q.handle_datagram(cancel.datagram("127.0.0.1:5070"), now);
    assert_eq!(loads_and_sip(&mut q).0, vec!["c1".to_string()]);
    q.handle_loaded("c1", Some(record.clone()), now);
    let (_, out) = loads_and_sip(&mut q);
    let mut cancels: Vec<(u16, String)> = out
        .iter()
        .filter(|t| t.data.starts_with(b"CANCEL "))
        .map(|t| (t.destination.port(), top_branch(t)))
        .collect();
    cancels.sort();
    assert_eq!(cancels, sent, "{out:?}");
    // The ACK of 16002's 487 goes where its INVITE went, with its branch.
    let ack = Req::invite()
        .method(Method::Ack)
        .to("<sip:bob@example.com>;tag=x2");
    q.handle_datagram(ack.datagram("127.0.0.1:5070"), now);
    let (_, out) = loads_and_sip(&mut q);
    let acks: Vec<(u16, String)> = out
        .iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .map(|t| (t.destination.port(), top_branch(t)))
        .collect();
    assert!(acks.contains(&sent[1]), "{acks:?}");
    // On the first node, the INVITE's final response ends the branches in the record.
    ok_to(&mut p, &invites[0], Some("b1"), "", now);
    let mut last = None;
    while let Some(o) = p.poll_output() {
        if let Output::CallChanged(r) = o {
            last = Some(*r);
        }
    }
    assert_eq!(last.map(|r| r.open_invite), Some(Vec::new()));
}

#[test]
fn the_ack_of_a_failure_never_waits_for_a_call_only_the_ack_of_a_2xx_does() {
    let now = epoch();
    let mut q = node_with_store();
    // The ACK of a 503 this node (or another) sent: no Route through us, nothing to load.
    let failure_ack = Req::invite()
        .method(Method::Ack)
        .to("<sip:bob@example.com>;tag=ffee");
    q.handle_datagram(failure_ack.datagram("127.0.0.1:5070"), now);
    let (loads, _) = loads_and_sip(&mut q);
    assert!(loads.is_empty(), "{loads:?}");
    assert_eq!(q.parked_messages(), 0);
    // The ACK of a 2xx travels the route set: the call it belongs to is loaded first.
    let dialog_ack = Req::invite()
        .method(Method::Ack)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-ack2")
        .route("<sip:127.0.0.1:5060;lr>");
    q.handle_datagram(dialog_ack.datagram("127.0.0.1:5070"), now);
    assert_eq!(loads_and_sip(&mut q).0, vec!["c1".to_string()]);
}

/// Call c1's INVITE anchored on r1 and forwarded to the callee by a node that then died: its
/// record (with the INVITE as it arrived and its branch) and the INVITE the callee got.
fn invite_forwarded_by_a_node_that_died() -> (CallRecord, Transmit) {
    let now = epoch();
    let mut p = node_with_store();
    p.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    drain(&mut p);
    let r1_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_offer, now);
    let to_callee = drain(&mut p)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .expect("the INVITE forwarded");
    let record = p.export_call("c1").expect("the call's record");
    assert!(record.open_invite_request.is_some() && !record.open_invite.is_empty());
    (record, to_callee)
}

/// The node that forwarded an INVITE dies before its 200 comes: the 200 reaches a node that
/// holds the call (loaded from the store, with the INVITE as it arrived) but no transaction.
/// It makes the dialog and sends the callee's answer through the call's relay, so the caller
/// gets the relay's SDP, never the callee's; the caller's ACK then follows the dialog.
#[test]
fn a_200_to_an_invite_another_node_forwarded_is_anchored_on_the_calls_relay_and_confirms_the_dialog(
) {
    let now = epoch();
    let (record, to_callee) = invite_forwarded_by_a_node_that_died();

    // Another node gets the callee's 200 before it holds the call: it waits while the call
    // is loaded, then is handled as below.
    let mut q = node_with_store();
    ok_to(&mut q, &to_callee, Some("b1"), ANSWER_SDP, now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert_eq!((loads, sip.len()), (vec!["c1".to_string()], 0));
    q.handle_loaded("c1", Some(record), now);
    assert!(drain(&mut q).is_empty(), "the 200 waits for the relay");
    // The caller's INVITE, retransmitted to this node meanwhile: a 100, no second anchoring,
    // nothing forwarded.
    q.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let out = drain(&mut q);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].data.starts_with(b"SIP/2.0 100 "));
    assert_eq!(out[0].destination.to_string(), "127.0.0.1:5070");
    let r1_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    let answer = relay_at_replies(&mut q, "127.0.0.1:2223", r1_answer, now);
    match &answer.kind {
        anchorage_ng::RequestKind::Answer(leg) => {
            assert_eq!(
                (
                    leg.from_tag.as_str(),
                    leg.to_tag.as_ref().map(|t| t.as_str())
                ),
                ("a1", Some("b1"))
            );
        }
        other => panic!("not an answer: {other:?}"),
    }
    let out = drain(&mut q);
    let ok = out
        .iter()
        .find(|t| t.data.starts_with(b"SIP/2.0 200"))
        .expect("the 200 forwarded");
    assert_eq!(ok.destination.to_string(), "127.0.0.1:5070");
    let ok = text(ok);
    assert!(ok.contains("m=audio 30002 "), "the relay's SDP: {ok}");
    assert!(!ok.contains("192.0.2.2"), "never the callee's: {ok}");
    assert!(
        q.dialogs().confirmed("c1").is_some(),
        "the dialog confirmed"
    );
    // The caller's ACK goes to the callee's Contact, through the dialog.
    let ack = Req::invite()
        .method(Method::Ack)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-ack")
        .route("<sip:127.0.0.1:5060;lr>");
    q.handle_datagram(ack.datagram("127.0.0.1:5070"), now);
    let acks: Vec<Transmit> = drain(&mut q)
        .into_iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].destination.port(), 9, "to bob's Contact");
}

/// The callee answers the INVITE another node forwarded (`to_callee`) with 486.
fn busy_from_callee(q: &mut Proxy, to_callee: &Transmit, now: std::time::Instant) {
    let invite = anchorage_sip::Message::parse(to_callee.data.clone()).unwrap();
    let busy = invite
        .response(486, "Busy Here")
        .to_tag("b1")
        .build()
        .unwrap();
    q.handle_datagram(
        anchorage_proxy::node::Datagram {
            data: busy.bytes(),
            source: to_callee.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: anchorage_proxy::Transport::Udp,
        },
        now,
    );
}

/// The same, with a failure: a 486 to the INVITE another node forwarded goes to the caller,
/// and the call's relay session and early dialog go with it (the record is deleted).
#[test]
fn a_failure_to_an_invite_another_node_forwarded_deletes_the_calls_relay_session() {
    let now = epoch();
    let (record, to_callee) = invite_forwarded_by_a_node_that_died();
    let mut q = node_with_store();
    q.import_call(record, now).expect("imported");
    busy_from_callee(&mut q, &to_callee, now);
    let out = drain(&mut q);
    assert!(
        out.iter()
            .any(|t| t.data.starts_with(b"SIP/2.0 486") && t.destination.port() == 5070),
        "{out:?}"
    );
    let ng = ng_requests(&mut q);
    assert!(
        ng.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
        "{ng:?}"
    );
    assert_eq!(q.calls().len(), 0);
    let ended = std::iter::from_fn(|| q.poll_output())
        .any(|o| matches!(o, Output::CallEnded(ref c) if c == "c1"));
    assert!(ended, "the record is deleted");
}

/// A node that took the virtual IP and is still claiming the calls (`set_taking_over`) gets
/// the caller's INVITE, retransmitted, before the call it belongs to: the INVITE waits while
/// the call is loaded — nothing sent, nothing anchored — and is then absorbed with a 100. A
/// new INVITE once the takeover is over is not looked up.
#[test]
fn an_invite_retransmitted_during_a_takeover_waits_for_its_call_and_is_absorbed() {
    let now = epoch();
    let (record, _) = invite_forwarded_by_a_node_that_died();
    let mut q = node_with_store();
    q.set_taking_over(true);
    q.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert_eq!(loads, vec!["c1".to_string()]);
    assert!(sip.is_empty(), "nothing before the record: {sip:?}");
    assert!(ng_requests(&mut q).is_empty(), "not anchored");
    q.handle_loaded("c1", Some(record), now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert!(loads.is_empty());
    assert_eq!(sip.len(), 1, "{sip:?}");
    assert!(sip[0].data.starts_with(b"SIP/2.0 100 "), "{sip:?}");
    assert_eq!(sip[0].destination.to_string(), "127.0.0.1:5070");
    assert!(ng_requests(&mut q).is_empty(), "not anchored a second time");

    // The takeover over: a new call's INVITE goes straight on.
    let mut r = node_with_store();
    r.set_taking_over(false);
    r.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let (loads, _) = loads_and_sip(&mut r);
    assert!(loads.is_empty(), "{loads:?}");
    assert_eq!(r.parked_messages(), 0);
}

/// A failure to the INVITE another node forwarded, reaching a node that does not hold the call
/// yet (its takeover's claims not in): it waits while the call is loaded, then goes to the
/// caller, and the call's relay session and record go with it — not left behind for the claim
/// to bring back.
#[test]
fn a_failure_to_an_invite_another_node_forwarded_waits_for_the_call_then_deletes_its_session() {
    let now = epoch();
    let (record, to_callee) = invite_forwarded_by_a_node_that_died();
    let mut q = node_with_store();
    busy_from_callee(&mut q, &to_callee, now);
    let (loads, sip) = loads_and_sip(&mut q);
    assert_eq!(loads, vec!["c1".to_string()]);
    assert!(sip.is_empty(), "nothing before the record: {sip:?}");
    q.handle_loaded("c1", Some(record), now);
    let out = drain(&mut q);
    assert!(
        out.iter()
            .any(|t| t.data.starts_with(b"SIP/2.0 486") && t.destination.port() == 5070),
        "{out:?}"
    );
    let ng = ng_requests(&mut q);
    assert!(
        ng.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
        "{ng:?}"
    );
    assert_eq!(q.calls().len(), 0);
}
