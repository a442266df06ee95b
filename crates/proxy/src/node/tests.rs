//! The core's scenario tests (to move to `crates/proxy/tests/`).

use super::route::is_private;
use super::*;
use crate::routing::Router;
use crate::transaction::TimerConfig;
use anchorage_sip::{HeaderName, Message, Method};

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn proxy(config: &str) -> Proxy {
    let cfg = anchorage_config::parse(config).unwrap();
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    Proxy::new(
        CoreConfig {
            node_id: "n1".into(),
            listeners: vec![Listener {
                transport: Transport::Udp,
                local,
                advertise_host: "127.0.0.1".into(),
                advertise_port: 5060,
            }],
            timers: TimerConfig::default(),
            router: Router::new(cfg.proxy.route),
            dialog_max_age: Duration::from_secs(3600),
            relay_sets: cfg.proxy.relay_set,
            default_media: cfg.proxy.media,
            ng_client: anchorage_ng::ClientConfig::default(),
            relay_health: crate::media::HealthConfig::default(),
            reanchor: cfg.proxy.reanchor,
            flood: cfg.proxy.flood,
            overload: cfg.proxy.overload,
        },
        7,
        epoch(),
    )
}

fn datagram(text: &str, from: &str) -> Datagram {
    Datagram {
        data: Bytes::from(text.replace('\n', "\r\n")),
        source: from.parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn drain(p: &mut Proxy) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

const INVITE: &str = "INVITE sip:bob@127.0.0.1:9 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\n\
From: <sip:alice@example.com>;tag=a1\n\
To: <sip:bob@example.com>\n\
Call-ID: c1\n\
CSeq: 1 INVITE\n\
Contact: <sip:alice@127.0.0.1:5070>\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n";

/// Answers every request in `out` that went to the callee with `status`, as the callee.
fn answer_all(p: &mut Proxy, out: &[Transmit], status: u16, now: Instant) {
    for t in out.iter().filter(|t| t.destination.port() == 9) {
        let req = Message::parse(t.data.clone()).unwrap();
        if req.method() == Some(Method::Ack) {
            continue;
        }
        let resp = req.response(status, "X").to_tag("callee").build().unwrap();
        p.handle_datagram(
            Datagram {
                data: resp.bytes(),
                source: "127.0.0.1:9".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
            now,
        );
    }
}

/// The [`INVITE`] template as a `method` request for `ruri`, with `id` in its branch and
/// Call-ID (its own transaction).
fn request_text(method: &str, ruri: &str, id: &str) -> String {
    INVITE
        .replace("INVITE sip:bob@127.0.0.1:9", &format!("{method} {ruri}"))
        .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"))
        .replace("z9hG4bK-1", &format!("z9hG4bK-{id}"))
        .replace("Call-ID: c1", &format!("Call-ID: {id}"))
}

/// Final responses among `out`, as (status, message).
fn finals(out: &[Transmit]) -> Vec<(u16, Message)> {
    out.iter()
        .filter_map(|t| Message::parse(t.data.clone()).ok())
        .filter_map(|m| m.status().filter(|s| *s >= 200).map(|s| (s, m)))
        .collect()
}

#[test]
fn a_request_addressed_to_the_proxy_itself_is_answered_not_looped() {
    let mut p = proxy("");
    let now = epoch();
    // A keep-alive OPTIONS from a trunk or a monitor: 200 with what we take.
    let options = request_text("OPTIONS", "sip:127.0.0.1:5060", "self");
    p.handle_datagram(datagram(&options, "127.0.0.1:5070"), now);
    let out = drain(&mut p);
    assert_eq!(out.len(), 1, "answered, nothing forwarded");
    assert_eq!(out[0].destination, "127.0.0.1:5070".parse().unwrap());
    let (status, ok) = finals(&out).remove(0);
    assert_eq!(status, 200);
    assert_eq!(ok.cseq().unwrap().method, Method::Options);
    assert!(ok.to().unwrap().tag().is_some());
    let allow: Vec<&str> = ok.allow().collect();
    assert!(
        allow.contains(&"INVITE") && allow.contains(&"OPTIONS"),
        "{allow:?}"
    );
    let accept = ok.headers_named(b"Accept").next().map(|h| h.value());
    assert_eq!(accept, Some(&b"application/sdp"[..]));
    // An OPTIONS with a user part is answered the same; an INVITE for a user at our
    // address finds nobody here (404). Nothing is sent back to ourselves.
    for (i, (method, ruri)) in [
        ("OPTIONS", "sip:ping@127.0.0.1:5060"),
        ("INVITE", "sip:bob@127.0.0.1:5060"),
    ]
    .into_iter()
    .enumerate()
    {
        let req = request_text(method, ruri, &format!("self{i}"));
        p.handle_datagram(datagram(&req, "127.0.0.1:5070"), now);
        let out = drain(&mut p);
        assert!(out.iter().all(|t| t.destination.port() == 5070), "{method}");
        let expected = if method == "OPTIONS" { 200 } else { 404 };
        let statuses: Vec<u16> = finals(&out).iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, vec![expected], "{method} {ruri}");
    }
    // Inside a dialog this node does not know: 481.
    let bye = request_text("BYE", "sip:bob@127.0.0.1:5060", "selfbye").replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=b1",
    );
    p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
    let statuses: Vec<u16> = finals(&drain(&mut p)).iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![481]);
}

/// Sets up call `call_id` from a caller at `caller_source` whose Contact is
/// `caller_contact`, answered by the callee (reached at 127.0.0.1:9) with `callee_contact`
/// in its 200; returns the Route set the parties use (our Record-Route).
fn call_with_contacts(
    p: &mut Proxy,
    call_id: &str,
    caller_source: &str,
    caller_contact: &str,
    callee_contact: &str,
    now: Instant,
) -> String {
    let invite = request_text("INVITE", "sip:bob@127.0.0.1:9", call_id)
        .replace("<sip:alice@127.0.0.1:5070>", caller_contact);
    p.handle_datagram(datagram(&invite, caller_source), now);
    let out = drain(p);
    let forwarded = out.iter().find(|t| t.data.starts_with(b"INVITE ")).unwrap();
    let req = Message::parse(forwarded.data.clone()).unwrap();
    let rr =
        String::from_utf8_lossy(req.header(HeaderName::RecordRoute).unwrap().value()).into_owned();
    let ok = req
        .response(200, "OK")
        .to_tag("b1")
        .header("Contact", callee_contact)
        .header("Record-Route", &rr)
        .build()
        .unwrap();
    p.handle_datagram(
        Datagram {
            data: ok.bytes(),
            source: forwarded.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
    drain(p);
    rr
}

/// An in-dialog request: `method_cseq` is e.g. `"BYE 7"`; `from`/`to` are (user, tag).
fn in_dialog(
    method_cseq: &str,
    ruri: &str,
    via: &str,
    route: &str,
    from: (&str, &str),
    to: (&str, &str),
    call_id: &str,
) -> String {
    let (method, cseq) = method_cseq.split_once(' ').unwrap();
    format!(
        "{method} {ruri} SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{call_id}-{cseq}\n\
         Route: {route}\nFrom: <sip:{}@example.com>;tag={}\nTo: <sip:{}@example.com>;tag={}\n\
         Call-ID: {call_id}\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContent-Length: 0\n\n",
        from.0, from.1, to.0, to.1
    )
}

/// Hands `text` from `source` to the proxy; returns the request it forwarded (same method).
fn forwarded(p: &mut Proxy, text: &str, source: &str, now: Instant) -> Transmit {
    let method = text.split(' ').next().unwrap_or("").as_bytes().to_vec();
    p.handle_datagram(datagram(text, source), now);
    drain(p)
        .into_iter()
        .find(|t| t.data.starts_with(&method))
        .expect("the request forwarded")
}

#[test]
fn in_dialog_requests_reach_a_party_behind_nat_at_its_real_address() {
    let mut p = proxy("");
    let now = epoch();
    // The caller is behind NAT: its Contact says 10.0.0.5:5062, its packets come from
    // 203.0.113.7:40000. The callee's Contact is private too; it is reached at 127.0.0.1:9.
    let rr = call_with_contacts(
        &mut p,
        "nat1",
        "203.0.113.7:40000",
        "<sip:alice@10.0.0.5:5062>",
        "<sip:bob@192.168.1.20:5060>",
        now,
    );
    // The callee's BYE to the caller.
    let bye_to_alice = |call_id: &str| {
        let route = &rr;
        in_dialog(
            "BYE 7",
            "sip:alice@10.0.0.5:5062",
            "127.0.0.1:9",
            route,
            ("bob", "b1"),
            ("alice", "a1"),
            call_id,
        )
    };
    let sent = forwarded(&mut p, &bye_to_alice("nat1"), "127.0.0.1:9", now);
    assert_eq!(sent.destination, "203.0.113.7:40000".parse().unwrap());
    assert!(sent
        .data
        .starts_with(b"BYE sip:alice@10.0.0.5:5062 SIP/2.0\r\n"));
    // The caller's ACK for the 2xx goes to where the callee's 200 came from.
    let ack = in_dialog(
        "ACK 1",
        "sip:bob@192.168.1.20:5060",
        "10.0.0.5:5062",
        &rr,
        ("alice", "a1"),
        ("bob", "b1"),
        "nat1",
    );
    let sent = forwarded(&mut p, &ack, "203.0.113.7:40000", now);
    assert_eq!(sent.destination, "127.0.0.1:9".parse().unwrap());

    // A party on the proxy's own LAN (Contact = where it sends from) is reached as
    // written.
    let lan_rr = call_with_contacts(
        &mut p,
        "lan1",
        "10.0.0.5:5062",
        "<sip:alice@10.0.0.5:5062>",
        "<sip:bob@127.0.0.1:9>",
        now,
    );
    assert_eq!(lan_rr, rr, "one proxy, one Record-Route");
    let sent = forwarded(&mut p, &bye_to_alice("lan1"), "127.0.0.1:9", now);
    assert_eq!(sent.destination, "10.0.0.5:5062".parse().unwrap());
}

#[test]
fn private_addresses_are_the_ones_nat_hides() {
    for ip in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "fd00::1",
        "fe80::1",
    ] {
        assert!(is_private(ip.parse().unwrap()), "{ip}");
    }
    for ip in [
        "203.0.113.7",
        "100.128.0.1",
        "127.0.0.1",
        "172.32.0.1",
        "2001:db8::1",
        "::1",
    ] {
        assert!(!is_private(ip.parse().unwrap()), "{ip}");
    }
}

#[test]
fn a_scanner_announcing_itself_is_dropped_unanswered() {
    let mut p = proxy("[proxy.flood]\ndrop_user_agents = [\"friendly-scanner\", \"sipvicious\"]\n");
    let t0 = epoch();
    let options = |ua: &str, i: usize| {
        datagram(
            &request_text("OPTIONS", "sip:127.0.0.1:5060", &format!("ua{i}")).replace(
                "Max-Forwards: 70\n",
                &format!("Max-Forwards: 70\nUser-Agent: {ua}\n"),
            ),
            "127.0.0.1:5070",
        )
    };
    p.handle_datagram(options("Friendly-Scanner", 0), t0);
    p.handle_datagram(options("sipvicious 0.3.4", 1), t0);
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.counters().user_agent_dropped, 2);
    p.handle_datagram(options("Yealink SIP-T46S", 2), t0);
    assert_eq!(finals(&drain(&mut p)).len(), 1);
    assert_eq!(p.counters().user_agent_dropped, 2);
}

#[test]
fn a_source_over_the_rate_limit_is_dropped_and_others_are_served() {
    let mut p = proxy("[proxy.flood]\nrequests_per_second = 5\nburst = 5\nblock_s = 2\n");
    let t0 = epoch();
    let options = |i: usize, port: u16| {
        datagram(
            &request_text("OPTIONS", "sip:127.0.0.1:5060", &format!("flood{port}-{i}"))
                .replace("127.0.0.1:5070", &format!("127.0.0.1:{port}")),
            &format!("192.0.2.{}:{port}", port - 5000),
        )
    };
    // 192.0.2.70 sends 8 at once: 5 answered, the 6th blocks it, nothing more answered.
    let mut answered = 0;
    for i in 0..8 {
        p.handle_datagram(options(i, 5070), t0);
        answered += finals(&drain(&mut p)).len();
    }
    assert_eq!(answered, 5);
    assert_eq!(
        (p.counters().flood_dropped, p.counters().flood_blocks),
        (3, 1)
    );
    // Garbage from it is dropped too, unanswered; responses are not requests and pass.
    p.handle_datagram(datagram("OPTIONS nonsense\n\n", "192.0.2.70:5070"), t0);
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.counters().flood_dropped, 4);
    let responses = p.counters().responses;
    p.handle_datagram(
        datagram(
            "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: r\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
            "192.0.2.70:5070",
        ),
        t0,
    );
    assert_eq!(p.counters().responses, responses + 1);
    // Another source is served meanwhile.
    p.handle_datagram(options(0, 5071), t0);
    assert_eq!(finals(&drain(&mut p)).len(), 1);
    // After block_s the first source is served again.
    let later = t0 + Duration::from_secs(2);
    p.handle_datagram(options(100, 5070), later);
    assert_eq!(finals(&drain(&mut p)).len(), 1);
}

#[test]
fn state_returns_to_empty_after_many_transactions() {
    let mut p = proxy("");
    let t0 = epoch();
    let mut now = t0;
    let (mut peak_timers, mut peak_live) = (0, 0);
    for i in 0..10_000u32 {
        let method = if i % 2 == 0 { "OPTIONS" } else { "INVITE" };
        let text = request_text(method, "sip:bob@127.0.0.1:9", &format!("c{i}"));
        p.handle_datagram(datagram(&text, "127.0.0.1:5070"), now);
        let out = drain(&mut p);
        // Half the INVITEs succeed, half fail; OPTIONS get 200.
        let status = if method == "INVITE" && i % 4 == 1 {
            486
        } else {
            200
        };
        answer_all(&mut p, &out, status, now);
        drain(&mut p);
        now += Duration::from_micros(200);
        p.handle_timeout(now);
        drain(&mut p);
        peak_timers = peak_timers.max(p.timer_queue_len());
        let (servers, clients) = p.transaction_count();
        peak_live = peak_live.max(servers + clients);
    }
    // Let every timer run out: Timer B/D/H/I/J/K/L/M are all below 64*T1 + 32 s.
    for step in 1..=80 {
        p.handle_timeout(now + Duration::from_secs(step));
        drain(&mut p);
    }
    assert_eq!(p.transaction_count(), (0, 0));
    // Only the once-a-second dialog sweep is left.
    assert_eq!(p.timer_queue_len(), 1);
    // The timer queue follows the live transactions (deadlines re-armed as states change
    // leave a stale entry or two until popped), not the total ever created.
    assert!(
        peak_timers <= 3 * peak_live,
        "timer queue peaked at {peak_timers} for {peak_live} live transactions"
    );
    // INVITEs answered 200 left confirmed dialogs; they end at the maximum age (1 h here).
    assert_eq!(p.dialogs().len(), 2_500);
    p.handle_timeout(now + Duration::from_secs(3601));
    assert_eq!(p.dialogs().len(), 0);
    p.handle_timeout(now + Duration::from_secs(3603));
    assert_eq!(p.timer_queue_len(), 0, "no sweep without dialogs");
}

const OFFER_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
const ANSWER_SDP: &str = "v=0\r\no=bob 9 9 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

/// Takes the ng request the proxy sent and answers it as a relay would, with `sdp`.
fn relay_replies(p: &mut Proxy, sdp: &str, now: Instant) -> anchorage_ng::Request {
    let (to, datagram) = p.poll_ng_transmit(now).expect("an ng request to the relay");
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
    // The SDP is written with LF here; datagram() turns every LF into CRLF.
    let invite = INVITE.replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: application/sdp\nContent-Length: {}\n\n{}",
            OFFER_SDP.len(),
            OFFER_SDP.replace("\r\n", "\n")
        ),
    );
    p.handle_datagram(datagram(&invite, "127.0.0.1:5070"), now);
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
    let bye = INVITE
        .replace("INVITE sip:", "BYE sip:")
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        )
        .replace("z9hG4bK-1", "z9hG4bK-2");
    p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
    let (_, delete) = p.poll_ng_transmit(now).expect("a delete");
    let delete = anchorage_ng::decode_request(&delete).unwrap().request;
    assert!(
        matches!(delete.kind, anchorage_ng::RequestKind::Delete(_)),
        "{delete:?}"
    );
    assert!(p.anchored_call("c1").is_none());
    assert_eq!(p.relays().nodes()[0].calls, 0);
}

/// Answers the next ng request, which must go to `node`, with `sdp`.
fn relay_at_replies(p: &mut Proxy, node: &str, sdp: &str, now: Instant) -> anchorage_ng::Request {
    let (to, datagram) = p.poll_ng_transmit(now).expect("an ng request");
    assert_eq!(to.to_string(), node);
    let incoming = anchorage_ng::decode_request(&datagram).unwrap();
    let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
    let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
    p.handle_ng_datagram(to, &bytes, now);
    incoming.request
}

fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.data).into_owned()
}

/// A 200 with `sdp` from the party a request went to (the proxy's Via popped by it).
fn ok_to(p: &mut Proxy, request: &Transmit, to_tag: Option<&str>, sdp: &str, now: Instant) {
    let req = Message::parse(request.data.clone()).unwrap();
    let mut b = req.response(200, "OK");
    if let Some(tag) = to_tag {
        b = b.to_tag(tag);
    }
    let contact = if request.destination.port() == 9 {
        "Contact: <sip:bob@127.0.0.1:9>"
    } else {
        "Contact: <sip:alice@127.0.0.1:5070>"
    };
    let (name, value) = contact.split_once(": ").unwrap();
    let rr: Vec<String> = req
        .headers_of(HeaderName::RecordRoute)
        .map(|h| String::from_utf8_lossy(h.value()).into_owned())
        .collect();
    b = b.header(name, value);
    for r in &rr {
        b = b.header("Record-Route", r);
    }
    if !sdp.is_empty() {
        b = b.body("application/sdp", sdp.as_bytes());
    }
    let ok = b.build().unwrap();
    p.handle_datagram(
        Datagram {
            data: ok.bytes(),
            source: request.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
}

/// A proxy with relays r1 and r2 and a confirmed call c1 anchored on r1 (caller a1 at
/// 127.0.0.1:5070, callee b1 at 127.0.0.1:9).
fn call_on_r1(now: Instant) -> Proxy {
    let mut p = proxy(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n",
    );
    let invite = INVITE.replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: application/sdp\nContent-Length: {}\n\n{}",
            OFFER_SDP.len(),
            OFFER_SDP.replace("\r\n", "\n")
        ),
    );
    p.handle_datagram(datagram(&invite, "127.0.0.1:5070"), now);
    drain(&mut p);
    let r1_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_offer, now);
    let out = drain(&mut p);
    let forwarded = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .unwrap()
        .clone();
    ok_to(&mut p, &forwarded, Some("b1"), ANSWER_SDP, now);
    let r1_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_answer, now);
    drain(&mut p);
    let ack = INVITE
        .replace("INVITE sip:bob@127.0.0.1:9", "ACK sip:bob@127.0.0.1:9")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        )
        .replace("z9hG4bK-1", "z9hG4bK-ack")
        .replace(
            "Max-Forwards: 70\n",
            "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5060;lr>\n",
        );
    p.handle_datagram(datagram(&ack, "127.0.0.1:5070"), now);
    drain(&mut p);

    p
}

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
fn move_r1_calls(p: &mut Proxy, now: Instant) -> (u64, Transmit, Transmit) {
    // Move every call of r1 (by API).
    let job = p
        .start_reanchor(
            crate::reanchor::Trigger::Api,
            Some("r1"),
            None,
            None,
            Default::default(),
            now,
        )
        .unwrap();
    let offer = relay_at_replies(
        p,
        "127.0.0.1:2224",
        "v=0\r\no=r2 77 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n",
        now,
    );
    let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
        panic!("{offer:?}")
    };
    assert_eq!(
        (
            o.from_tag.0.as_str(),
            o.to_tag.as_ref().map(|t| t.0.as_str())
        ),
        ("a1", Some("b1"))
    );
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
    let out = drain(p);
    let to_callee = out
        .iter()
        .find(|t| t.destination.port() == 9)
        .expect("re-INVITE to the callee")
        .clone();
    let to_caller = out
        .iter()
        .find(|t| t.destination.port() == 5070)
        .expect("re-INVITE to the caller")
        .clone();
    (job, to_callee, to_caller)
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
    let glare = INVITE
        .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        )
        .replace("z9hG4bK-1", "z9hG4bK-glare");
    p.handle_datagram(datagram(&glare, "127.0.0.1:5070"), now);
    assert!(drain(&mut p)
        .iter()
        .any(|t| t.data.starts_with(b"SIP/2.0 491")));
    // Both answer: each gets its ACK, the old session goes.
    ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
    ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
    let out = drain(&mut p);
    assert_one_to_each(&out, "ACK", 2, 1);
    let (to, delete) = p.poll_ng_transmit(now).expect("the old session's delete");
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
    assert!(p.poll_ng_transmit(now).is_none());
    // The caller's BYE (its CSeq 2) reaches the callee as 3: the callee saw our 2.
    let bye = INVITE
        .replace("INVITE sip:bob@127.0.0.1:9", "BYE sip:bob@127.0.0.1:9")
        .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        )
        .replace("z9hG4bK-1", "z9hG4bK-bye")
        .replace(
            "Max-Forwards: 70\n",
            "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5060;lr>\n",
        );
    p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
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
    let (to, _) = p.poll_ng_transmit(now).expect("the new session's delete");
    assert_eq!(to.to_string(), "127.0.0.1:2224");
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

/// Every ng request sent now other than health pings, with its destination port.
fn ng_requests(p: &mut Proxy, now: Instant) -> Vec<(u16, anchorage_ng::Request)> {
    std::iter::from_fn(|| p.poll_ng_transmit(now))
        .map(|(to, d)| (to.port(), anchorage_ng::decode_request(&d).unwrap().request))
        .filter(|(_, r)| !matches!(r.kind, anchorage_ng::RequestKind::Ping))
        .collect()
}

fn is_delete(r: &anchorage_ng::Request) -> bool {
    matches!(r.kind, anchorage_ng::RequestKind::Delete(_))
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
    let ng = ng_requests(&mut p, now);
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
    ng_requests(&mut p, now);
    // The callee stays silent past the move's deadline (8 s by default).
    let later = now + Duration::from_secs(8);
    p.handle_timeout(later);
    let out = drain(&mut p);
    assert_one_to_each(&out, "BYE", 3, 2);
    let mut deleted: Vec<u16> = ng_requests(&mut p, later)
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
    let job = p
        .start_reanchor(
            crate::reanchor::Trigger::Api,
            Some("r1"),
            None,
            None,
            Default::default(),
            now,
        )
        .unwrap();
    let sent = ng_requests(&mut p, now);
    assert!(sent
        .iter()
        .any(|(port, r)| *port == 2224 && matches!(r.kind, anchorage_ng::RequestKind::Offer(_))));
    // r2 dies before answering: after the ng timeout (1 s) the move gives r2 up; the set
    // has no other node, so the call stays where it is.
    let later = now + Duration::from_millis(1100);
    p.handle_timeout(later);
    let sent = ng_requests(&mut p, later);
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
    let target = crate::reanchor::MoveTarget {
        callee: crate::reanchor::LegOptions {
            iface: Some("pub".into()),
            transport: Some("RTP/SAVP".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    p.start_reanchor(
        crate::reanchor::Trigger::Api,
        None,
        None,
        Some("c1"),
        target,
        now,
    )
    .unwrap();
    let sent = ng_requests(&mut p, now);
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
    while let Some((to, datagram)) = p.poll_ng_transmit(now) {
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
fn a_dialog_at_its_maximum_age_takes_its_relay_session_with_it() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p, now);
    assert!(p.anchored_call("c1").is_some());
    // The test proxy's dialogs live an hour.
    let later = now + Duration::from_secs(3601);
    p.handle_timeout(later);
    assert!(p.dialogs().is_empty());
    assert!(p.anchored_call("c1").is_none());
    let sent = ng_requests(&mut p, later);
    assert!(
        sent.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
        "{sent:?}"
    );
    assert_eq!(p.relays().nodes()[0].calls, 0);
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

#[test]
fn parallel_fork_sends_to_every_destination_at_once() {
    let mut p = proxy(
        "[[proxy.route]]\nname = \"f\"\nfork = \"parallel\"\n\
         destinations = [{ host = \"127.0.0.1\", port = 16001 }, { host = \"127.0.0.1\", port = 16002 }]\n",
    );
    p.handle_datagram(datagram(INVITE, "127.0.0.1:5070"), epoch());
    let out = drain(&mut p);
    let mut invites: Vec<u16> = out
        .iter()
        .filter(|t| t.data.starts_with(b"INVITE "))
        .map(|t| t.destination.port())
        .collect();
    invites.sort_unstable();
    assert_eq!(invites, [16001, 16002]);
    assert!(out.iter().any(|t| t.data.starts_with(b"SIP/2.0 100 ")));
}
