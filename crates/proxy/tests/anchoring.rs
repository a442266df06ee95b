//! Media anchoring through the public seam: each leg's SDP recorded as it flows through a
//! relay, and a dialog at its maximum age taking its relay session with it.

mod support;

use std::time::{Duration, Instant};

use anchorage_proxy::node::{Datagram, Proxy};
use anchorage_proxy::Transport;
use anchorage_sip::{Message, Method};
use bytes::Bytes;

use support::scenario::*;

/// Takes the ng request the proxy sent and answers it as a relay would, with `sdp`.
fn relay_replies(p: &mut Proxy, sdp: &str, now: Instant) -> anchorage_ng::Request {
    let (to, datagram) = p.poll_ng_transmit().expect("an ng request to the relay");
    assert_eq!(to.to_string(), "127.0.0.1:2223");
    let incoming = anchorage_ng::decode_request(&datagram).unwrap();
    let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
    let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
    p.handle_ng_datagram(to, &bytes, now);
    incoming.request
}

#[test]
fn media_flow_through_a_relay_records_each_legs_sdp() {
    let mut p = proxy(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }]\n\n[proxy.media]\nset = \"m\"\ncallee_flags = \"replace-origin\"\n",
    );
    let now = epoch();
    p.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    // Only the 100 Trying goes out: the INVITE waits for the relay.
    let out = drain(&mut p);
    assert!(out.iter().all(|t| !t.data.starts_with(b"INVITE ")));
    let relay_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    let offer = relay_replies(&mut p, relay_offer, now);
    let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
        panic!("{offer:?}")
    };
    assert_eq!((o.call_id.0.as_str(), o.from_tag.0.as_str()), ("c1", "a1"));
    assert_eq!(&o.sdp[..], OFFER_SDP.as_bytes());
    let out = drain(&mut p);
    let forwarded = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .expect("INVITE sent on");
    assert!(forwarded.data.ends_with(relay_offer.as_bytes()));
    // The callee answers; the 200 waits for the relay's answer.
    let req = Message::parse(forwarded.data.clone()).unwrap();
    let ok = req
        .response(200, "OK")
        .to_tag("b1")
        .body("application/sdp", ANSWER_SDP.as_bytes())
        .build()
        .unwrap();
    p.handle_datagram(
        Datagram {
            data: ok.bytes(),
            source: "127.0.0.1:9".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
    assert!(drain(&mut p)
        .iter()
        .all(|t| !t.data.starts_with(b"SIP/2.0 200")));
    let relay_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\n";
    let answer = relay_replies(&mut p, relay_answer, now);
    let anchorage_ng::RequestKind::Answer(a) = &answer.kind else {
        panic!("{answer:?}")
    };
    assert_eq!(a.to_tag.as_ref().map(|t| t.0.as_str()), Some("b1"));
    let out = drain(&mut p);
    let to_caller = out
        .iter()
        .find(|t| t.data.starts_with(b"SIP/2.0 200"))
        .expect("200 sent on");
    assert!(to_caller.data.ends_with(relay_answer.as_bytes()));
    let call = p.anchored_call("c1").unwrap();
    assert_eq!(call.node, "r1");
    assert_eq!(call.caller.received.as_deref(), Some(OFFER_SDP.as_bytes()));
    assert_eq!(call.callee.sent.as_deref(), Some(relay_offer.as_bytes()));
    assert_eq!(
        call.callee.origin_sent,
        Some(("relay".into(), "5".into(), 7))
    );
    assert_eq!(call.callee.received.as_deref(), Some(ANSWER_SDP.as_bytes()));
    assert_eq!(call.caller.sent.as_deref(), Some(relay_answer.as_bytes()));
    assert_eq!(
        call.caller.origin_sent,
        Some(("relay".into(), "6".into(), 3))
    );
    assert_eq!(p.relays().nodes()[0].calls, 1);
    // A BYE deletes the session.
    let bye = Req::invite()
        .method(Method::Bye)
        .cseq(2)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-2");
    p.handle_datagram(bye.datagram("127.0.0.1:5070"), now);
    let (_, delete) = p.poll_ng_transmit().expect("a delete");
    let delete = anchorage_ng::decode_request(&delete).unwrap().request;
    assert!(
        matches!(delete.kind, anchorage_ng::RequestKind::Delete(_)),
        "{delete:?}"
    );
    assert!(p.anchored_call("c1").is_none());
    assert_eq!(p.relays().nodes()[0].calls, 0);
}

#[test]
fn a_dialog_at_its_maximum_age_takes_its_relay_session_with_it() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    assert!(p.anchored_call("c1").is_some());
    // The test proxy's dialogs live an hour.
    let later = now + Duration::from_secs(3601);
    p.handle_timeout(later);
    assert!(p.dialogs().is_empty());
    assert!(p.anchored_call("c1").is_none());
    let sent = ng_requests(&mut p);
    assert!(
        sent.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
        "{sent:?}"
    );
    assert_eq!(p.relays().nodes()[0].calls, 0);
}
