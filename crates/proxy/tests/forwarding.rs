//! RFC 3261 §16 forwarding through the public seam: requests addressed to the proxy itself,
//! NAT, the `[proxy.flood]` limits, state returning to empty, parallel forking.

mod support;

use std::time::{Duration, Instant};

use anchorage_proxy::node::{Datagram, Proxy, Transmit};
use anchorage_proxy::Transport;
use anchorage_sip::{HeaderName, Message, Method};

use support::scenario::*;

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

/// A `method` request for `ruri` with `id` as its Call-ID and in its branch (its own
/// transaction).
fn request(method: &'static str, ruri: &str, id: &str) -> Req {
    let method = Method::parse(method.as_bytes()).expect("a method");
    Req::new(method, ruri, id)
}

/// Final responses among `out`, as (status, message).
fn finals(out: &[Transmit]) -> Vec<(u16, Message)> {
    out.iter()
        .filter_map(|t| Message::parse(t.data.clone()).ok())
        .filter_map(|m| m.status().filter(|s| *s >= 200).map(|s| (s, m)))
        .collect()
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
    let invite = request("INVITE", "sip:bob@127.0.0.1:9", call_id).contact(Some(caller_contact));
    p.handle_datagram(invite.datagram(caller_source), now);
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
    method_cseq: &'static str,
    ruri: &str,
    via: &str,
    route: &str,
    from: (&str, &str),
    to: (&str, &str),
    call_id: &str,
) -> Req {
    let (method, cseq) = method_cseq.split_once(' ').unwrap();
    request(method, ruri, call_id)
        .sent_by(via)
        .branch(&format!("z9hG4bK-{call_id}-{cseq}"))
        .route(route)
        .from(&format!("<sip:{}@example.com>;tag={}", from.0, from.1))
        .to(&format!("<sip:{}@example.com>;tag={}", to.0, to.1))
        .cseq(cseq.parse().unwrap())
        .contact(None)
}

#[test]
fn a_request_addressed_to_the_proxy_itself_is_answered_not_looped() {
    let mut p = proxy("");
    let now = epoch();
    // A keep-alive OPTIONS from a trunk or a monitor: 200 with what we take.
    let options = request("OPTIONS", "sip:127.0.0.1:5060", "self");
    p.handle_datagram(options.datagram("127.0.0.1:5070"), now);
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
        let req = request(method, ruri, &format!("self{i}"));
        p.handle_datagram(req.datagram("127.0.0.1:5070"), now);
        let out = drain(&mut p);
        assert!(out.iter().all(|t| t.destination.port() == 5070), "{method}");
        let expected = if method == "OPTIONS" { 200 } else { 404 };
        let statuses: Vec<u16> = finals(&out).iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, vec![expected], "{method} {ruri}");
    }
    // Inside a dialog this node does not know: 481.
    let bye =
        request("BYE", "sip:bob@127.0.0.1:5060", "selfbye").to("<sip:bob@example.com>;tag=b1");
    p.handle_datagram(bye.datagram("127.0.0.1:5070"), now);
    let statuses: Vec<u16> = finals(&drain(&mut p)).iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, vec![481]);
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
fn a_scanner_announcing_itself_is_dropped_unanswered() {
    let mut p = proxy("[proxy.flood]\ndrop_user_agents = [\"friendly-scanner\", \"sipvicious\"]\n");
    let t0 = epoch();
    let options = |ua: &str, i: usize| {
        request("OPTIONS", "sip:127.0.0.1:5060", &format!("ua{i}"))
            .header("User-Agent", ua)
            .datagram("127.0.0.1:5070")
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
        request("OPTIONS", "sip:127.0.0.1:5060", &format!("flood{port}-{i}"))
            .sent_by(&format!("127.0.0.1:{port}"))
            .contact(Some(&format!("<sip:alice@127.0.0.1:{port}>")))
            .datagram(&format!("192.0.2.{}:{port}", port - 5000))
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
        let req = request(method, "sip:bob@127.0.0.1:9", &format!("c{i}"));
        p.handle_datagram(req.datagram("127.0.0.1:5070"), now);
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
    let expiry = now + Duration::from_secs(3601);
    p.handle_timeout(expiry);
    assert_eq!(p.dialogs().len(), 0);
    // Each expired call is ended with a BYE of ours: to the caller here (the callee's 200
    // carried no Contact, so it has no target a request could be sent to).
    let byes: Vec<_> = drain(&mut p)
        .into_iter()
        .filter(|t| t.data.starts_with(b"BYE "))
        .collect();
    assert_eq!(byes.len(), 2_500);
    assert!(byes.iter().all(|t| t.destination.port() == 5070));
    // Unanswered, the BYEs time out (Timer F, 64*T1) and nothing is left.
    for step in 1..=40 {
        p.handle_timeout(expiry + Duration::from_secs(step));
        drain(&mut p);
    }
    assert_eq!(p.transaction_count(), (0, 0));
    assert_eq!(p.timer_queue_len(), 0, "no sweep without dialogs");
}

#[test]
fn parallel_fork_sends_to_every_destination_at_once() {
    let mut p = proxy(
        "[[proxy.route]]\nname = \"f\"\nfork = \"parallel\"\n\
         destinations = [{ host = \"127.0.0.1\", port = 16001 }, { host = \"127.0.0.1\", port = 16002 }]\n",
    );
    p.handle_datagram(Req::invite().datagram("127.0.0.1:5070"), epoch());
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
