//! Tests of `rtpproxy`.

use super::*;
use std::time::Duration;

const OFFER: &[u8] = b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n";

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn engine(now: Instant) -> RtppEngine {
    let control: SocketAddr = "127.0.0.1:22222".parse().unwrap();
    let mut e = RtppEngine::new(
        control,
        ClientConfig::default(),
        ClientConfig::default(),
        "n1-1",
        0,
        now,
    );
    let vf = e.poll_transmit().unwrap();
    assert_eq!(&vf[..], b"n1-1-c0_0 VF 20050322");
    e.handle_datagram(b"n1-1-c0_0 1\n", now);
    assert_eq!(e.capable(), Some(true));
    e
}

fn offer(call_id: &str) -> MediaRequest {
    super::super::offer_answer(false, call_id, "ft", None, Bytes::from_static(OFFER), "")
        .rtpproxy("z20")
}

/// The commands sent since the last call, as text.
fn sent(e: &mut RtppEngine) -> Vec<String> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|d| String::from_utf8_lossy(&d).to_string())
        .collect()
}

#[test]
fn one_update_per_stream_and_the_sdp_gets_every_port() {
    let now = t0();
    let mut e = engine(now);
    let id = e.send(&offer("c1"), now);
    assert_eq!(
        sent(&mut e),
        vec![
            "n1-1-c0_1 UZ20 c1 192.0.2.1 4000 ft;1",
            "n1-1-c0_2 UZ20 c1 192.0.2.1 4002 ft;2"
        ]
    );
    e.handle_datagram(b"n1-1-c0_2 30002 203.0.113.9\n", now);
    assert_eq!(e.poll_event(), None, "one stream still waits");
    e.handle_datagram(b"n1-1-c0_1 30000\n", now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, id);
    let sdp = String::from_utf8(reply.result.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        sdp.contains("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n"),
        "{sdp}"
    );
    assert!(
        sdp.contains("m=video 30002 RTP/AVP 96\r\nc=IN IP4 203.0.113.9\r\n"),
        "{sdp}"
    );
    // The whole call's delete: one D for the session the offer opened.
    e.send(&super::super::delete("c1"), now);
    assert_eq!(sent(&mut e), vec!["n1-1-c0_3 D c1 ft"]);
    e.handle_datagram(b"n1-1-c0_3 0\n", now);
    assert!(matches!(
        e.poll_event(),
        Some(MediaReply {
            result: Ok(None),
            ..
        })
    ));
}

#[test]
fn malformed_replies_fail_their_request_only() {
    let now = t0();
    let mut e = engine(now);
    let bad = e.send(&offer("bad"), now);
    let good = e.send(&offer("good"), now);
    sent(&mut e);
    // A port out of range for one stream of the first offer: that offer fails with a clear
    // error; its other stream's session is closed again; the second offer is untouched.
    e.handle_datagram(b"n1-1-c0_1 70000 127.0.0.1\n", now);
    e.handle_datagram(b"n1-1-c0_2 30002 127.0.0.1\n", now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, bad);
    assert_eq!(
        reply.result,
        Err(MediaError::Malformed("malformed port `70000`".into()))
    );
    assert_eq!(sent(&mut e), vec!["n1-1-c0_5 D bad ft"]);
    // Garbage with no cookie of ours, and text where a port belongs.
    e.handle_datagram(b"\xff\xfe", now);
    e.handle_datagram(b"n1-1-c0_3 sessions created: 1\n", now);
    e.handle_datagram(b"n1-1-c0_4 E71\n", now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, good);
    assert!(matches!(&reply.result, Err(MediaError::Malformed(m)) if m.contains("not a port")));
    assert_eq!(e.poll_event(), None);
    assert_eq!(sent(&mut e), vec!["n1-1-c0_6 D good ft"]);
    // A refusal is an answer: the next node is tried without waiting.
    let refused = e.send(&offer("r"), now);
    e.handle_datagram(b"n1-1-c0_7 E71\n", now);
    e.handle_datagram(b"n1-1-c0_8 30000 127.0.0.1\n", now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, refused);
    assert_eq!(
        reply.result,
        Err(MediaError::Refused("RTPProxy error E71".into()))
    );
}

#[test]
fn unknown_flags_and_unreadable_sdp_are_refused_at_once() {
    let now = t0();
    let mut e = engine(now);
    let flags = e.send(&offer("c").rtpproxy("cq"), now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, flags);
    assert_eq!(
        reply.result,
        Err(MediaError::Refused("unknown RTPProxy flag 'q'".into()))
    );
    let garbage =
        super::super::offer_answer(false, "c", "ft", None, Bytes::from_static(b"nonsense"), "");
    e.send(&garbage, now);
    assert!(matches!(
        e.poll_event().map(|r| r.result),
        Some(Err(MediaError::Refused(m))) if m.starts_with("unreadable SDP")
    ));
    assert!(sent(&mut e).is_empty(), "nothing goes to the node");
}

#[test]
fn a_node_without_the_capability_is_not_capable_and_pings_want_the_base_version() {
    let now = t0();
    let control: SocketAddr = "127.0.0.1:22222".parse().unwrap();
    let mut e = RtppEngine::new(
        control,
        ClientConfig::default(),
        ClientConfig::default(),
        "p",
        3,
        now,
    );
    sent(&mut e);
    e.handle_datagram(b"p-c3_0 0\n", now);
    assert_eq!(e.capable(), Some(false));
    let ping = e.send_ping(now);
    assert_eq!(sent(&mut e), vec!["p-p3_0 V", "p-p3_1 Ib"]);
    e.handle_datagram(b"p-p3_0 20040107\n", now);
    assert_eq!(e.poll_ping(), Some((ping, true)));
    // The statistics are still awaited: the next ping goes alone.
    let ping = e.send_ping(now);
    assert_eq!(sent(&mut e), vec!["p-p3_2 V"]);
    e.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(e.poll_ping(), Some((ping, false)));
    assert_eq!(e.poll_load(), None, "an unanswered Ib gives no load");
}

#[test]
fn the_load_is_read_from_ib_at_most_once_a_second_and_a_bad_reply_keeps_the_last() {
    let now = t0();
    let mut e = engine(now);
    e.send_ping(now);
    assert_eq!(sent(&mut e), vec!["n1-1-p0_0 V", "n1-1-p0_1 Ib"]);
    e.handle_datagram(
        b"n1-1-p0_1 sessions created: 9\nactive sessions: 4\nactive streams: 8\n",
        now,
    );
    assert_eq!(e.poll_ping(), None, "the Ib reply is no ping outcome");
    assert_eq!(e.poll_load(), Some(4));
    assert_eq!(e.poll_load(), None, "taken once");
    // Not again within the second; then again, and garbage leaves the last load alone.
    e.send_ping(now + Duration::from_millis(500));
    assert_eq!(sent(&mut e), vec!["n1-1-p0_2 V"]);
    let later = now + LOAD_INTERVAL;
    e.send_ping(later);
    assert_eq!(sent(&mut e), vec!["n1-1-p0_3 V", "n1-1-p0_4 Ib"]);
    e.handle_datagram(b"n1-1-p0_4 E1\n", later);
    assert_eq!(e.poll_load(), None);
}

#[test]
fn a_new_call_goes_to_the_rtpproxy_node_reporting_fewer_sessions() {
    use super::super::{HealthConfig, Relays};
    let cfg = anchorage_config::parse(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n\
         { name = \"a\", rtpproxy = \"udp:127.0.0.1:22222\" },\n\
         { name = \"b\", rtpproxy = \"udp:127.0.0.1:22223\" },\n]\n",
    )
    .unwrap();
    let now = t0();
    let mut r = Relays::new(
        &cfg.proxy.relay_set,
        anchorage_ng::ClientConfig::default(),
        HealthConfig::default(),
        "n1",
        now,
    );
    // Both nodes answer VF, V and Ib: a holds 5 sessions (another controller's), b 2.
    let answer = |r: &mut Relays, sessions: [u64; 2], at: Instant| {
        r.handle_timeout(at);
        while let Some((to, datagram)) = r.poll_transmit() {
            let text = String::from_utf8_lossy(&datagram).to_string();
            let (cookie, command) = text.split_once(' ').unwrap();
            let n = usize::from(to.port() == 22223);
            let reply = match command {
                "V" => "20040107".to_string(),
                "Ib" => format!("sessions created: 9\nactive sessions: {}\n", sessions[n]),
                _ => "1".to_string(),
            };
            r.handle_datagram(to, format!("{cookie} {reply}\n").as_bytes(), at);
        }
    };
    assert_eq!(
        r.pick("main", &[]),
        Some(0),
        "no report yet: the first node"
    );
    answer(&mut r, [5, 2], now);
    assert_eq!((r.nodes()[0].load(), r.nodes()[1].load()), (5, 2));
    assert_eq!(r.pick("main", &[]), Some(1));
    // Calls this proxy puts on b count at once: after four, b (2 + 4) is busier than a (5).
    r.count_call(1, 4);
    assert_eq!(r.nodes()[1].load(), 6);
    assert_eq!(r.pick("main", &[]), Some(0));
    // The next report counts b's sessions with this proxy's four calls in them.
    answer(&mut r, [5, 6], now + LOAD_INTERVAL);
    assert_eq!(r.nodes()[1].load(), 6);
    r.count_call(1, -4);
    assert_eq!(
        r.nodes()[1].load(),
        2,
        "ended calls leave with their sessions"
    );
}

/// The policy of a `[proxy.media]` whose set `main` holds `nodes`.
fn policy(nodes: &str, media: &str) -> (super::super::Policy, super::super::Relays) {
    let cfg = anchorage_config::parse(&format!(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{nodes}]\n\n[proxy.media]\nset = \"main\"\n{media}"
    ))
    .unwrap();
    let relays = super::super::Relays::new(
        &cfg.proxy.relay_set,
        anchorage_ng::ClientConfig::default(),
        super::super::HealthConfig::default(),
        "n1",
        t0(),
    );
    (super::super::Policy::of(&cfg.proxy.media).unwrap(), relays)
}

const RTPP: &str = "{ name = \"r\", rtpproxy = \"udp:127.0.0.1:22222\" }";
const NG: &str = "{ name = \"n\", ng = \"127.0.0.1:2223\" }";

#[test]
fn iface_becomes_the_opensips_letter_pair_and_ip_goes_with_each_leg() {
    let (p, relays) = policy(
        RTPP,
        "caller = { iface = \"external\", ip = \"203.0.113.7\", rtpproxy_flags = \"o\" }\n\
         callee = { iface = \"internal\", type = \"RTP/AVP\", rtpproxy_flags = \"co\" }",
    );
    assert_eq!(p.rtpproxy_unfit, None);
    // The caller's offer goes from the external caller to the internal callee: `ei`; the
    // callee's answer the other way: `ie`.
    assert_eq!(p.callee_rtpproxy.letters, "coei");
    assert_eq!(p.caller_rtpproxy.letters, "oie");
    assert_eq!(p.caller_rtpproxy.ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(p.callee_rtpproxy.ip, None);
    assert_eq!(relays.pick_for(&p, &[]), Some(0));
    // A leg naming no interface is on the external one.
    let (one, _) = policy(RTPP, "callee = { iface = \"internal\" }");
    assert_eq!(
        (
            one.callee_rtpproxy.letters.as_str(),
            one.caller_rtpproxy.letters.as_str()
        ),
        ("ei", "ie")
    );
    // On the wire: the pair after the other modifiers, and the caller's SDP names its `ip`.
    let now = t0();
    let mut e = engine(now);
    let answer =
        super::super::offer_answer(true, "c1", "ft", Some("tt"), Bytes::from_static(OFFER), "")
            .rtpproxy(&p.caller_rtpproxy);
    let id = e.send(&answer, now);
    assert_eq!(
        sent(&mut e),
        vec![
            "n1-1-c0_1 LIE c1 192.0.2.1 4000 ft;1 tt;1",
            "n1-1-c0_2 LIE c1 192.0.2.1 4002 ft;2 tt;2"
        ]
    );
    e.handle_datagram(b"n1-1-c0_1 30000 127.0.0.1\n", now);
    e.handle_datagram(b"n1-1-c0_2 30002 127.0.0.1\n", now);
    let reply = e.poll_event().unwrap();
    assert_eq!(reply.id, id);
    let sdp = String::from_utf8(reply.result.unwrap().unwrap().to_vec()).unwrap();
    assert!(sdp.contains("o=a 1 1 IN IP4 203.0.113.7\r\n"), "{sdp}");
    assert!(
        sdp.contains("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.7\r\n"),
        "{sdp}"
    );
    assert!(!sdp.contains("127.0.0.1"), "{sdp}");
}

#[test]
fn what_rtpproxy_cannot_give_makes_its_nodes_ineligible_and_names_why() {
    for (media, why) in [
        (
            "callee = { type = \"RTP/SAVP\" }",
            "the callee leg's type RTP/SAVP needs an ng relay",
        ),
        (
            "caller = { type = \"UDP/TLS/RTP/SAVPF\" }",
            "the caller leg's type UDP/TLS/RTP/SAVPF needs an ng relay",
        ),
        (
            "callee = { iface = \"pub\" }",
            "iface \"pub\" is not one of RTPProxy's interfaces",
        ),
    ] {
        let (p, relays) = policy(RTPP, media);
        let unfit = p.rtpproxy_unfit.clone().unwrap_or_default();
        assert!(unfit.contains(why), "{media}: {unfit}");
        assert_eq!(relays.pick_for(&p, &[]), None, "{media}");
        assert!(!relays.has_live_node_for(&p), "{media}: the call gets 503");
        // Beside an ng node, the call goes to the ng node.
        let (p, relays) = policy(&format!("{RTPP}, {NG}"), media);
        assert_eq!(relays.pick_for(&p, &[]), Some(1), "{media}");
        assert!(relays.has_live_node_for(&p));
        assert_eq!(relays.pick("main", &[]), Some(0), "the set's plain choice");
    }
}

#[test]
fn a_call_imported_from_its_record_is_deleted_by_its_offerers_tag() {
    let now = t0();
    let mut e = engine(now);
    // Nothing known of c9 (another start of the proxy opened it): its delete sends nothing.
    e.send(&super::super::delete("c9"), now);
    assert!(sent(&mut e).is_empty());
    // Taken on from its record: the delete reaches the node, once.
    e.adopt("c9", "a73");
    e.adopt("c9", "other");
    e.send(&super::super::delete("c9"), now);
    assert_eq!(sent(&mut e), vec!["n1-1-c0_1 D c9 a73"]);
    // A call this engine opened keeps its own sessions.
    e.send(&offer("c1"), now);
    sent(&mut e);
    e.adopt("c1", "someone-else");
    e.send(&super::super::delete("c1"), now);
    assert_eq!(sent(&mut e), vec!["n1-1-c0_4 D c1 ft"]);
}
