//! Re-anchoring through the public seam: both re-INVITEs at once with renumbered CSeqs,
//! rollback, a party gone, a silent new relay, leg interfaces, follow-up offers, glare.

mod support;

use std::time::{Duration, Instant};

use anchorage_proxy::node::{Datagram, Proxy, Transmit};
use anchorage_proxy::Transport;
use anchorage_sip::{Message, Method};
use bytes::Bytes;

use support::scenario::*;

/// Asserts that `out` holds exactly two `method` requests: one to the callee (bob) with CSeq
/// `to_callee`, one to the caller (alice) with CSeq `to_caller`.
fn assert_one_to_each(out: &[Transmit], method: &str, to_callee: u32, to_caller: u32) {
    let sent: Vec<String> = out
        .iter()
        .filter(|t| t.data.starts_with(format!("{method} ").as_bytes()))
        .map(text)
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    for (user, cseq) in [("bob", to_callee), ("alice", to_caller)] {
        assert!(
            sent.iter()
                .any(|m| m.starts_with(&format!("{method} sip:{user}@"))
                    && m.contains(&format!("CSeq: {cseq} {method}"))),
            "{method} to {user} with CSeq {cseq}: {sent:?}"
        );
    }
}

/// Starts moving r1's calls and answers the new node's ng requests; returns the job and
/// the two re-INVITEs (to the callee, to the caller).
fn move_r1_calls(
    p: &mut Proxy,
    now: Instant,
) -> (anchorage_proxy::reanchor::JobId, Transmit, Transmit) {
    // Move every call of r1 (by API).
    let job = move_r1(p, now);
    let offer = relay_at_replies(
        p,
        "127.0.0.1:2224",
        "v=0\r\no=r2 77 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n",
        now,
    );
    let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
        panic!("{offer:?}")
    };
    assert_eq!(tags(o), ("a1", Some("b1")));
    assert_eq!(
        &o.sdp[..],
        OFFER_SDP.as_bytes(),
        "the caller's stored offer"
    );
    let answer = relay_at_replies(
        p,
        "127.0.0.1:2224",
        "v=0\r\no=r2 78 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n",
        now,
    );
    let anchorage_ng::RequestKind::Answer(a) = &answer.kind else {
        panic!("{answer:?}")
    };
    assert_eq!(
        &a.sdp[..],
        ANSWER_SDP.as_bytes(),
        "the callee's stored answer"
    );
    // Both re-INVITEs leave together.
    let (to_callee, to_caller) = reinvites(&drain(p));
    (job, to_callee, to_caller)
}

/// The move's re-INVITEs in `out`: to the callee (port 9), to the caller (port 5070).
fn reinvites(out: &[Transmit]) -> (Transmit, Transmit) {
    let to = |port: u16, whom: &str| {
        out.iter()
            .find(|t| t.destination.port() == port)
            .unwrap_or_else(|| panic!("re-INVITE to the {whom}"))
            .clone()
    };
    (to(9, "callee"), to(5070, "caller"))
}

/// The `(from-tag, to-tag)` of an ng offer or answer.
fn tags(o: &anchorage_ng::OfferAnswer) -> (&str, Option<&str>) {
    (
        o.from_tag.0.as_str(),
        o.to_tag.as_ref().map(|t| t.0.as_str()),
    )
}

/// A final response with `status` (no body) from the party a request went to.
fn reply_to(p: &mut Proxy, request: &Transmit, status: u16, now: Instant) {
    let req = Message::parse(request.data.clone()).unwrap();
    let resp = req.response(status, "Refused").build().unwrap();
    p.handle_datagram(
        Datagram {
            data: resp.bytes(),
            source: request.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
}

#[test]
fn a_call_is_reanchored_with_both_reinvites_at_once_and_renumbered_cseqs() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
    let callee_text = text(&to_callee);
    assert!(
        callee_text.starts_with("INVITE sip:bob@127.0.0.1:9 SIP/2.0\r\n"),
        "{callee_text}"
    );
    assert!(
        callee_text.contains("\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"),
        "{callee_text}"
    );
    assert!(
        callee_text.contains("\r\nTo: <sip:bob@example.com>;tag=b1\r\n"),
        "{callee_text}"
    );
    assert!(
        callee_text.contains("\r\nCSeq: 2 INVITE\r\n"),
        "{callee_text}"
    );
    assert!(callee_text.contains("\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"));
    assert!(
        !callee_text.contains("\r\nRoute:"),
        "only this proxy record-routed"
    );
    // The callee keeps the origin it knows, one version up; the media is on r2.
    assert!(
        callee_text.contains("o=relay 5 8 IN IP4 203.0.113.2\r\n"),
        "{callee_text}"
    );
    assert!(callee_text.contains("m=audio 40000 "));
    let caller_text = text(&to_caller);
    assert!(
        caller_text.starts_with("INVITE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"),
        "{caller_text}"
    );
    assert!(
        caller_text.contains("\r\nFrom: <sip:bob@example.com>;tag=b1\r\n"),
        "{caller_text}"
    );
    assert!(
        caller_text.contains("\r\nTo: <sip:alice@example.com>;tag=a1\r\n"),
        "{caller_text}"
    );
    assert!(
        caller_text.contains("\r\nCSeq: 1 INVITE\r\n"),
        "{caller_text}"
    );
    assert!(
        caller_text.contains("o=relay 6 4 IN IP4 203.0.113.2\r\n"),
        "{caller_text}"
    );
    assert!(caller_text.contains("m=audio 40002 "));
    // A UA's own re-INVITE meanwhile: 491.
    let glare = Req::invite()
        .cseq(2)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-glare");
    p.handle_datagram(glare.datagram("127.0.0.1:5070"), now);
    assert!(drain(&mut p)
        .iter()
        .any(|t| t.data.starts_with(b"SIP/2.0 491")));
    // Both answer: each gets its ACK, the old session goes.
    ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    let out = drain(&mut p);
    assert_one_to_each(&out, "ACK", 2, 1);
    let (to, delete) = p.poll_ng_transmit().expect("the old session's delete");
    assert_eq!(to.to_string(), "127.0.0.1:2223");
    assert!(matches!(
        anchorage_ng::decode_request(&delete).unwrap().request.kind,
        anchorage_ng::RequestKind::Delete(_)
    ));
    let call = p.anchored_call("c1").unwrap();
    assert_eq!(call.node, "r2");
    assert_eq!(
        call.callee.origin_sent,
        Some(("relay".into(), "5".into(), 8))
    );
    let status = p.job(job).unwrap();
    assert_eq!(
        (status.total, status.done, status.failed, status.in_flight),
        (1, 1, 0, 0)
    );
    assert!(status.finished.is_some());
    // A retransmitted 200 gets the same ACK again and nothing else.
    ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
    let again: Vec<Transmit> = drain(&mut p);
    assert_eq!(
        again.len(),
        1,
        "{:?}",
        again.iter().map(text).collect::<Vec<_>>()
    );
    assert!(again[0].data.starts_with(b"ACK "));
    assert!(p.poll_ng_transmit().is_none());
    // The caller's BYE (its CSeq 2) reaches the callee as 3: the callee saw our 2.
    let bye = caller_in_dialog(Method::Bye, 2, "z9hG4bK-bye");
    p.handle_datagram(bye.datagram("127.0.0.1:5070"), now);
    let out = drain(&mut p);
    let forwarded = out
        .iter()
        .find(|t| t.data.starts_with(b"BYE "))
        .expect("BYE forwarded")
        .clone();
    assert!(
        text(&forwarded).contains("\r\nCSeq: 3 BYE\r\n"),
        "{}",
        text(&forwarded)
    );
    ok_to(&mut p, &forwarded, None, "", now);
    let out = drain(&mut p);
    let upstream = out
        .iter()
        .find(|t| t.data.starts_with(b"SIP/2.0 200"))
        .expect("200 upstream");
    assert!(
        text(upstream).contains("\r\nCSeq: 2 BYE\r\n"),
        "{}",
        text(upstream)
    );
    let (to, _) = p.poll_ng_transmit().expect("the new session's delete");
    assert_eq!(to.to_string(), "127.0.0.1:2224");
}

#[test]
fn a_refused_move_rolls_the_moved_leg_back_to_the_live_old_relay() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
    reply_to(&mut p, &to_callee, 488, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    let out = drain(&mut p);
    // The 488 is ACKed by its transaction, the caller's 200 by us; then the caller, who
    // took the new relay, is given the old one back, one version up again.
    assert!(out
        .iter()
        .any(|t| t.destination.port() == 9 && t.data.starts_with(b"ACK ")));
    let rollback = out
        .iter()
        .find(|t| t.destination.port() == 5070 && t.data.starts_with(b"INVITE "))
        .expect("a rollback re-INVITE to the caller");
    let rollback = text(rollback);
    assert!(rollback.contains("\r\nCSeq: 2 INVITE\r\n"), "{rollback}");
    assert!(rollback.contains("m=audio 30002 "), "{rollback}");
    assert!(
        rollback.contains("o=relay 6 5 IN IP4 203.0.113.1\r\n"),
        "{rollback}"
    );
    let ng = ng_requests(&mut p);
    assert_eq!(ng.len(), 1, "{ng:?}");
    assert!(
        ng[0].0 == 2224 && is_delete(&ng[0].1),
        "the new session goes: {ng:?}"
    );
    assert_eq!(p.anchored_call("c1").unwrap().node, "r1");
    let status = p.job(job).unwrap();
    assert_eq!((status.done, status.failed), (0, 1));
}

#[test]
fn a_party_that_never_answers_ends_the_call_and_leaves_no_session() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let (job, _to_callee, to_caller) = move_r1_calls(&mut p, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    drain(&mut p);
    ng_requests(&mut p);
    // The callee stays silent past the move's deadline (8 s by default).
    let later = now + Duration::from_secs(8);
    p.handle_timeout(later);
    let out = drain(&mut p);
    assert_one_to_each(&out, "BYE", 3, 2);
    let mut deleted: Vec<u16> = ng_requests(&mut p)
        .into_iter()
        .filter(|(_, r)| is_delete(r))
        .map(|(port, _)| port)
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec![2223, 2224], "both sessions deleted");
    assert!(p.anchored_call("c1").is_none());
    assert!(p.dialogs().is_empty());
    assert_eq!(p.relays().nodes().iter().map(|n| n.calls).sum::<usize>(), 0);
    assert_eq!(p.job(job).unwrap().failed, 1);
}

#[test]
fn a_new_relay_that_does_not_answer_is_given_up_and_the_call_stays_on_the_old_one() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let job = move_r1(&mut p, now);
    let sent = ng_requests(&mut p);
    assert!(sent
        .iter()
        .any(|(port, r)| *port == 2224 && matches!(r.kind, anchorage_ng::RequestKind::Offer(_))));
    // r2 dies before answering: after the ng timeout (1 s) the move gives r2 up; the set
    // has no other node, so the call stays where it is.
    let later = now + Duration::from_millis(1100);
    p.handle_timeout(later);
    let sent = ng_requests(&mut p);
    assert!(
        sent.iter().any(|(port, r)| *port == 2224 && is_delete(r)),
        "whatever r2 may hold is deleted there: {sent:?}"
    );
    assert!(
        !sent.iter().any(|(port, _)| *port == 2223),
        "nothing is sent to the live old relay: {sent:?}"
    );
    assert!(!drain(&mut p).iter().any(|t| t.data.starts_with(b"INVITE ")));
    assert_eq!(p.anchored_call("c1").unwrap().node, "r1");
    let status = p.job(job).unwrap();
    assert_eq!((status.done, status.failed, status.in_flight), (0, 1, 0));
}

#[test]
fn a_move_with_a_leg_interface_names_it_in_the_new_relays_offer() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let target = anchorage_proxy::reanchor::MoveTarget {
        callee: anchorage_proxy::reanchor::LegOptions {
            iface: Some("pub".into()),
            transport: Some("RTP/SAVP".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    p.start_reanchor(
        anchorage_proxy::reanchor::Trigger::Api,
        None,
        None,
        Some("c1"),
        target,
        now,
    )
    .unwrap();
    let sent = ng_requests(&mut p);
    let offer = sent
        .iter()
        .find(|(port, r)| *port == 2224 && matches!(r.kind, anchorage_ng::RequestKind::Offer(_)))
        .map(|(_, r)| r)
        .expect("the new relay's offer");
    assert_eq!(
        offer.flags.direction,
        vec!["default".to_string(), "pub".to_string()]
    );
    assert_eq!(
        offer.flags.transport_protocol,
        Some(anchorage_ng::TransportProtocol::RtpSavp)
    );
}

#[test]
fn an_answer_with_other_codecs_after_a_move_gets_the_other_party_a_follow_up_offer() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let (_job, to_callee, to_caller) = move_r1_calls(&mut p, now);
    // The callee now answers with PCMA only; the caller answers as before.
    let pcma = ANSWER_SDP.replace("RTP/AVP 0", "RTP/AVP 8");
    ok_to(&mut p, &to_callee, None, &pcma, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    drain(&mut p);
    // The new relay learns the callee's new answer; its rewrite is for the caller.
    let rewrite = "v=0\r\no=r2 78 2 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40002 RTP/AVP 8\r\nc=IN IP4 203.0.113.2\r\n";
    let mut answered = false;
    while let Some((to, datagram)) = p.poll_ng_transmit() {
        let incoming = anchorage_ng::decode_request(&datagram).unwrap();
        if let anchorage_ng::RequestKind::Answer(a) = &incoming.request.kind {
            assert_eq!(to.port(), 2224);
            assert_eq!(&a.sdp[..], pcma.as_bytes());
            let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(rewrite));
            let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
            p.handle_ng_datagram(to, &bytes, now);
            answered = true;
        }
    }
    assert!(answered, "no ng answer for the callee's new SDP");
    let out = drain(&mut p);
    let follow_up = out
        .iter()
        .find(|t| t.destination.port() == 5070 && t.data.starts_with(b"INVITE "))
        .expect("a follow-up re-INVITE to the caller");
    let text = text(follow_up);
    assert!(text.contains("\r\nCSeq: 2 INVITE\r\n"), "{text}");
    assert!(text.contains("m=audio 40002 RTP/AVP 8\r\n"), "{text}");
    // The caller's origin, one above the move's (which was 4).
    assert!(
        text.contains("o=relay 6 5 IN IP4 203.0.113.2\r\n"),
        "{text}"
    );
    // A new address alone would not have needed one: nothing went to the callee.
    assert!(!out
        .iter()
        .any(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE ")));
}

#[test]
fn glare_491_is_retried_after_the_rfc_3261_backoff() {
    let now = epoch();
    let mut p = call_on_r1(now);
    let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
    reply_to(&mut p, &to_callee, 491, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    let out = drain(&mut p);
    assert!(!out
        .iter()
        .any(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE ")));
    // Towards the callee we act for the caller, the Call-ID's owner: 2.1 to 4 s.
    p.handle_timeout(now + Duration::from_millis(2000));
    assert!(!drain(&mut p).iter().any(|t| t.data.starts_with(b"INVITE ")));
    p.handle_timeout(now + Duration::from_secs(4));
    let out = drain(&mut p);
    let retry = out
        .iter()
        .find(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE "))
        .expect("the re-INVITE is retried")
        .clone();
    assert!(
        text(&retry).contains("\r\nCSeq: 3 INVITE\r\n"),
        "{}",
        text(&retry)
    );
    ok_to(
        &mut p,
        &retry,
        None,
        ANSWER_SDP,
        now + Duration::from_secs(4),
    );
    assert_eq!(p.anchored_call("c1").unwrap().node, "r2");
    assert_eq!(p.job(job).unwrap().done, 1);
}

/// Answers every ng request to `node` now with `sdp`; returns the other datagrams sent (their
/// destination and text), pings and RTPProxy commands included.
fn answer_ng(p: &mut Proxy, node: &str, sdp: &str, now: Instant) -> Vec<(String, String)> {
    let mut others = Vec::new();
    while let Some((to, datagram)) = p.poll_ng_transmit() {
        if to.to_string() != node {
            others.push((
                to.to_string(),
                String::from_utf8_lossy(&datagram).into_owned(),
            ));
            continue;
        }
        let Ok(incoming) = anchorage_ng::decode_request(&datagram) else {
            continue;
        };
        let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
        let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
        p.handle_ng_datagram(to, &bytes, now);
    }
    others
}

#[test]
fn a_move_never_puts_an_srtp_leg_on_an_rtpproxy_node() {
    let now = epoch();
    let mut p = proxy(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"p1\", rtpproxy = \"udp:127.0.0.1:2225\" }]\n\n[proxy.media]\nset = \"m\"\n\n[proxy.media.callee]\ntype = \"RTP/SAVP\"\n",
    );
    let r1 = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/SAVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    p.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let mut to_p1 = answer_ng(&mut p, "127.0.0.1:2223", r1, now);
    let invite = drain(&mut p)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .expect("anchored on r1, the only node that can make the callee's leg SRTP");
    ok_to(&mut p, &invite, Some("b1"), ANSWER_SDP, now);
    to_p1.extend(answer_ng(&mut p, "127.0.0.1:2223", r1, now));
    drain(&mut p);
    assert_eq!(p.anchored_call("c1").map(|c| c.node), Some("r1".into()));
    // r1 drained: p1 is up but cannot give the call's legs, so the call stays on r1.
    p.drain_relay("r1", now).expect("a job");
    to_p1.extend(answer_ng(&mut p, "127.0.0.1:2223", r1, now));
    p.handle_timeout(now + Duration::from_secs(1));
    to_p1.extend(answer_ng(&mut p, "127.0.0.1:2223", r1, now));
    let offers: Vec<&(String, String)> = to_p1
        .iter()
        .filter(|(to, text)| {
            to == "127.0.0.1:2225" && text.split(' ').nth(1).is_some_and(|c| c.starts_with('U'))
        })
        .collect();
    assert!(offers.is_empty(), "{offers:?}");
    assert_eq!(p.anchored_call("c1").map(|c| c.node), Some("r1".into()));
    assert!(
        !drain(&mut p).iter().any(|t| t.data.starts_with(b"INVITE ")),
        "no re-INVITE naming p1"
    );
}

/// A DTLS-SRTP caller moved to another ng relay: the move's `answer` asks the relay for new
/// offers (`reanchor`), so the caller's re-INVITE offers a new association with
/// `a=setup:actpass` (RFC 5763 §5); the caller's answer (`passive`, its media otherwise
/// unchanged) goes to the new relay as an ng `answer` with the tags the other way round, from
/// which the relay takes its role, and the plain callee is not re-INVITEd again for it.
#[test]
fn a_dtls_callers_answer_to_the_moves_actpass_offer_reaches_the_new_relay_as_an_answer() {
    let now = epoch();
    let dtls = |setup: &str| {
        format!(
            "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\na=setup:{setup}\r\n\
             a=fingerprint:sha-256 AA:BB\r\n"
        )
    };
    let mut p = call_on_r1_with(now, &dtls("actpass"), ANSWER_SDP);
    move_r1(&mut p, now);
    let offer = relay_at_replies(&mut p, "127.0.0.1:2224", R2_SDP, now);
    assert!(
        !offer.flags.reanchor,
        "the offer is the caller's, as before"
    );
    let for_caller = "v=0\r\no=r2 78 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\n\
                      m=audio 40002 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 203.0.113.2\r\n\
                      a=setup:actpass\r\na=fingerprint:sha-256 CC:DD\r\n";
    let answer = relay_at_replies(&mut p, "127.0.0.1:2224", for_caller, now);
    let anchorage_ng::RequestKind::Answer(a) = &answer.kind else {
        panic!("{answer:?}")
    };
    assert!(answer.flags.reanchor, "{:?}", answer.flags);
    assert_eq!(&a.sdp[..], ANSWER_SDP.as_bytes());
    let (to_callee, to_caller) = reinvites(&drain(&mut p));
    assert!(
        text(&to_caller).contains("a=setup:actpass\r\na=fingerprint:sha-256 CC:DD\r\n"),
        "{}",
        text(&to_caller)
    );
    ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
    let passive = dtls("passive");
    ok_to(&mut p, &to_caller, None, &passive, now);
    drain(&mut p);
    let sent: Vec<_> = ng_requests(&mut p)
        .into_iter()
        .filter(|(port, r)| *port == 2224 && !is_delete(r))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let anchorage_ng::RequestKind::Answer(a) = &sent[0].1.kind else {
        panic!("the caller's answer as an ng answer: {sent:?}")
    };
    assert_eq!(tags(a), ("b1", Some("a1")), "tags the other way round");
    assert_eq!(&a.sdp[..], passive.as_bytes());
    assert!(!sent[0].1.flags.reanchor);
    assert_eq!(p.anchored_call("c1").unwrap().node, "r2");
    assert!(
        !drain(&mut p)
            .iter()
            .any(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE ")),
        "no follow-up offer to the plain callee for the caller's DTLS role"
    );
}
