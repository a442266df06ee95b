//! The control plane driven as Kamailio and OpenSIPS drive rtpengine, with expected SDPs in
//! the style of rtpengine's own tests (reference `rtpengine-ng.md` §4.2): exact output text
//! with the relay's ports filled in, and the media actions the data plane receives.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anchorage_ng::{Outcome, Value};
use anchorage_relay::{Interface, PortRange, Side, Timeouts};
use anchorage_relay_control::{Config, ExpiryReason, MediaAction, PortBinder, SessionKey};

mod support;

use support::{error_of, sdp_of, text};

/// Binds nothing; refuses the ports listed in `taken` (held by "another process").
#[derive(Default)]
struct Binder {
    taken: HashSet<u16>,
    bound: Vec<SocketAddr>,
}

impl PortBinder for Binder {
    fn bind(&mut self, rtp: SocketAddr, rtcp: SocketAddr) -> bool {
        if self.taken.contains(&rtp.port()) || self.taken.contains(&rtcp.port()) {
            return false;
        }
        self.bound.extend([rtp, rtcp]);
        true
    }

    fn bind_rtcp(&mut self, rtcp: SocketAddr) -> bool {
        if self.taken.contains(&rtcp.port()) {
            return false;
        }
        self.bound.push(rtcp);
        true
    }
}

type Relay = support::Relay<Binder>;

fn iface(spec: &str, min: u16, max: u16) -> Interface {
    Interface::parse(spec, PortRange::new(min, max).unwrap()).unwrap()
}

fn relay_with(config: Config) -> Relay {
    Relay::with_binder(config, 7, Binder::default())
}

fn new_relay() -> Relay {
    relay_with(Config {
        interfaces: vec![iface("10.0.0.1!203.0.113.1", 30000, 30999)],
        port_quarantine: Duration::ZERO,
        instance: "test-relay".into(),
        ..Config::default()
    })
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::text(*s)).collect())
}

fn offer(call: &str, from: &str, sdp: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("command", text("offer")),
        ("call-id", text(call)),
        ("from-tag", text(from)),
        ("sdp", text(sdp)),
    ]
}

fn answer(call: &str, from: &str, to: &str, sdp: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("command", text("answer")),
        ("call-id", text(call)),
        ("from-tag", text(from)),
        ("to-tag", text(to)),
        ("sdp", text(sdp)),
    ]
}

/// The `m=` port of media section `index`.
fn port(sdp: &str, index: usize) -> u16 {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .nth(index)
        .and_then(|m| m.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .expect("an m= port")
}

const ALICE: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=foo:bar\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.10 4000 typ host\r\n";

const BOB: &str = "v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 5000 RTP/AVP 0\r\n";

#[test]
fn offer_and_answer_sdps_are_rebuilt_as_rtpengine_does() {
    let mut relay = new_relay();
    let (reply, actions) = relay.send(offer("c1", "a-tag", ALICE));
    let to_bob = sdp_of(&reply);
    let b_port = port(&to_bob, 0);
    assert_eq!(
        to_bob,
        format!(
            "v=0\r\n\
             o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {b_port} RTP/AVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=foo:bar\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n",
            b_port + 1
        )
    );
    assert_eq!(b_port % 2, 0, "RTP on an even port");
    // Both legs' ports are allocated (and bound) at offer time, on the local address.
    assert_eq!(relay.binder.bound.len(), 4);
    assert!(relay
        .binder
        .bound
        .iter()
        .all(|a| a.ip().to_string() == "10.0.0.1"));
    let [MediaAction::Add { key, pairs, .. }] = &actions[..] else {
        panic!("{actions:?}")
    };
    let pair = &pairs[0];
    assert_eq!(pair.config(Side::B).local_rtp.port(), b_port);
    assert_eq!(
        pair.config(Side::A).remote.map(|p| p.rtp),
        Some("192.0.2.10:4000".parse().unwrap())
    );
    assert_eq!(
        pair.config(Side::B).remote,
        None,
        "B's address comes with the answer"
    );

    let (reply, actions) = relay.send(answer("c1", "a-tag", "b-tag", BOB));
    let to_alice = sdp_of(&reply);
    let a_port = port(&to_alice, 0);
    assert_eq!(a_port, pair.config(Side::A).local_rtp.port());
    assert_eq!(
        to_alice,
        format!(
            "v=0\r\n\
             o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {a_port} RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n",
            a_port + 1
        )
    );
    let updated_b = actions.iter().find_map(|a| match a {
        MediaAction::Update {
            key: k,
            side: Side::B,
            remote,
            ..
        } if k == key => *remote,
        _ => None,
    });
    assert_eq!(
        updated_b.map(|p| p.rtp),
        Some("198.51.100.20:5000".parse().unwrap())
    );
}

#[test]
fn replace_origin_and_sdp_version_follow_the_output_not_the_sender() {
    let mut relay = new_relay();
    let with_flags = |mut entries: Vec<(&'static str, Value)>| {
        entries.push(("replace", list(&["origin", "SDP-version"])));
        entries
    };
    let first = sdp_of(&relay.send(with_flags(offer("c1", "a", ALICE))).0);
    assert!(
        first.contains("o=alice 2890844526 2890844526 IN IP4 203.0.113.1\r\n"),
        "{first}"
    );
    // The same offer again, with the sender's version bumped: nothing changed, ours stays.
    let bumped = ALICE.replace("2890844526 2890844526", "2890844526 2890844527");
    let again = sdp_of(&relay.send(with_flags(offer("c1", "a", &bumped))).0);
    assert!(
        again.contains("o=alice 2890844526 2890844526 IN IP4"),
        "{again}"
    );
    // A real change (hold) without a version bump by the sender: ours goes up by one.
    let hold = ALICE.replace("a=foo:bar", "a=sendonly");
    let held = sdp_of(&relay.send(with_flags(offer("c1", "a", &hold))).0);
    assert!(
        held.contains("o=alice 2890844526 2890844527 IN IP4"),
        "{held}"
    );
    assert!(held.contains("a=sendonly\r\n"));
    // The port did not move: a re-offer keeps the relay's ports.
    assert_eq!(port(&held, 0), port(&first, 0));
    // force-increment-sdp-ver bumps even when nothing changed.
    let mut forced = offer("c1", "a", &hold);
    forced.push(("replace", list(&["force-increment-sdp-ver"])));
    let forced = sdp_of(&relay.send(forced).0);
    assert!(forced.contains(" 2890844528 IN IP4"), "{forced}");
}

#[test]
fn lf_only_input_and_hold_addresses_are_kept() {
    let mut relay = new_relay();
    let lf =
        "v=0\no=- 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 4000 RTP/AVP 8\n";
    let out = sdp_of(&relay.send(offer("c1", "a", lf)).0);
    let p = port(&out, 0);
    assert_eq!(
        out,
        format!(
            "v=0\no=- 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio {p} RTP/AVP 8\n\
             a=rtpmap:8 PCMA/8000\na=sendonly\na=rtcp:{}\n",
            p + 1
        )
    );
}

#[test]
fn a_callee_reoffer_keeps_the_ports_and_updates_the_callees_leg() {
    let mut relay = new_relay();
    let to_bob = sdp_of(&relay.send(offer("c1", "a", ALICE)).0);
    let to_alice = sdp_of(&relay.send(answer("c1", "a", "b", BOB)).0);
    // Bob's re-INVITE: from-tag is Bob's, to-tag Alice's.
    let mut reoffer = offer("c1", "b", &BOB.replace("5000", "5004"));
    reoffer.push(("to-tag", text("a")));
    let (reply, actions) = relay.send(reoffer);
    let reoffer_to_alice = sdp_of(&reply);
    assert_eq!(port(&reoffer_to_alice, 0), port(&to_alice, 0));
    assert!(actions
        .iter()
        .all(|a| matches!(a, MediaAction::Update { side: Side::B, .. })));
    assert!(matches!(
        actions[0],
        MediaAction::Update { remote: Some(p), .. } if p.rtp.port() == 5004
    ));
    // Alice answers Bob's offer: from-tag Bob (the offerer), to-tag Alice.
    let (reply, _) = relay.send(answer("c1", "b", "a", ALICE));
    assert_eq!(port(&sdp_of(&reply), 0), port(&to_bob, 0));
    assert_eq!(relay.controller.session_count(), 1);
}

#[test]
fn a_reoffer_with_a_new_m_line_extends_the_session() {
    let mut relay = new_relay();
    relay.send(offer("c1", "a", ALICE));
    relay.send(answer("c1", "a", "b", BOB));
    let video = format!("{ALICE}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
    let mut reoffer = offer("c1", "a", &video);
    reoffer.push(("to-tag", text("b")));
    let (reply, actions) = relay.send(reoffer);
    let out = sdp_of(&reply);
    assert_ne!(port(&out, 1), port(&out, 0));
    assert!(actions
        .iter()
        .any(|a| matches!(a, MediaAction::Extend { pairs, .. } if pairs.len() == 1)));
}

#[test]
fn forks_on_their_own_via_branch_get_their_own_ports_and_are_deleted_alone() {
    let mut relay = new_relay();
    let fork = |branch: &str| {
        let mut o = offer("c1", "a", ALICE);
        o.push(("via-branch", text(branch)));
        o
    };
    let one = port(&sdp_of(&relay.send(fork("br1")).0), 0);
    let two = port(&sdp_of(&relay.send(fork("br2")).0), 0);
    assert_ne!(one, two);
    let mut answer_two = answer("c1", "a", "b2", BOB);
    answer_two.push(("via-branch", text("br2")));
    sdp_of(&relay.send(answer_two).0);
    assert_eq!(relay.controller.session_count(), 2);
    let (reply, actions) = relay.send(vec![
        ("command", text("delete")),
        ("call-id", text("c1")),
        ("from-tag", text("a")),
        ("via-branch", text("br1")),
    ]);
    assert_eq!(reply.outcome, Outcome::Ok);
    assert_eq!(actions.len(), 1);
    assert_eq!(relay.controller.session_count(), 1);
    assert_eq!(relay.controller.call_count(), 1);
}

#[test]
fn without_via_branch_a_later_answer_from_another_fork_takes_the_callee_side() {
    let mut relay = new_relay();
    let to_b = port(&sdp_of(&relay.send(offer("c1", "a", ALICE)).0), 0);
    let first = port(&sdp_of(&relay.send(answer("c1", "a", "b1", BOB)).0), 0);
    let (reply, actions) = relay.send(answer("c1", "a", "b2", &BOB.replace("5000", "6000")));
    assert_eq!(port(&sdp_of(&reply), 0), first);
    assert!(actions.iter().any(|a| matches!(
        a,
        MediaAction::Update { side: Side::B, remote: Some(p), .. } if p.rtp.port() == 6000
    )));
    assert_eq!(relay.controller.session_count(), 1);
    // Deleting the participant b2 ends the call.
    let mut delete = vec![
        ("command", text("delete")),
        ("call-id", text("c1")),
        ("from-tag", text("b2")),
    ];
    let (reply, _) = relay.send(delete.clone());
    assert_eq!(reply.outcome, Outcome::Ok);
    assert!(reply.warning.is_none(), "{reply:?}");
    assert_eq!(relay.controller.call_count(), 0);
    let _ = to_b;
    // Again: not found is a warning, or an error with `fatal`.
    let (reply, _) = relay.send(delete.clone());
    assert_eq!(
        reply.warning.as_deref(),
        Some("Call-ID not found or tags didn't match")
    );
    delete.push(("flags", list(&["fatal"])));
    let (reply, _) = relay.send(delete);
    assert_eq!(error_of(&reply), "Call-ID not found or tags didn't match");
}

#[test]
fn ports_run_out_cleanly_and_a_port_someone_else_holds_is_skipped() {
    let mut relay = relay_with(Config {
        interfaces: vec![iface("127.0.0.1", 40000, 40007)], // pairs 40000, 40002, 40004, 40006
        port_quarantine: Duration::ZERO,
        ..Config::default()
    });
    relay.binder.taken.insert(40005); // someone holds an RTCP port: pair 40004 is unusable
    let first = sdp_of(&relay.send(offer("c1", "a", ALICE)).0);
    assert_ne!(port(&first, 0), 40004);
    let (reply, actions) = relay.send(offer("c2", "a", ALICE));
    assert_eq!(error_of(&reply), "Ran out of ports");
    assert!(actions.is_empty());
    assert_eq!(
        relay.controller.call_count(),
        1,
        "the failed call is not kept"
    );
    // The first call is intact; once it is deleted its ports serve a new call.
    relay.send(answer("c1", "a", "b", BOB));
    let (reply, _) = relay.send(vec![("command", text("delete")), ("call-id", text("c1"))]);
    assert_eq!(reply.outcome, Outcome::Ok);
    relay.binder.taken.clear();
    sdp_of(&relay.send(offer("c3", "a", ALICE)).0);
    let usage = &relay.controller.port_usage()[0];
    assert_eq!(usage.in_use, 2, "{usage:?}");
}

#[test]
fn the_session_limit_answers_as_rtpengine_does() {
    let mut relay = relay_with(Config {
        interfaces: vec![iface("127.0.0.1", 40000, 40099)],
        max_sessions: 1,
        ..Config::default()
    });
    sdp_of(&relay.send(offer("c1", "a", ALICE)).0);
    let (reply, _) = relay.send(offer("c2", "a", ALICE));
    assert_eq!(error_of(&reply), "Parallel session limit reached");
    let mut supporting = offer("c2", "a", ALICE);
    supporting.push(("supports", list(&["load limit"])));
    let (reply, _) = relay.send(supporting);
    assert!(matches!(reply.outcome, Outcome::LoadLimit(_)), "{reply:?}");
    // A re-offer in the existing call is not a new session.
    sdp_of(&relay.send(offer("c1", "a", ALICE)).0);
}

#[test]
fn rtcp_mux_demux_splits_for_the_callee_and_accepts_for_the_caller() {
    let mut relay = new_relay();
    let muxed = ALICE.replace("a=foo:bar\r\n", "a=rtcp-mux\r\n");
    let mut o = offer("c1", "a", &muxed);
    o.push(("rtcp-mux", list(&["demux"])));
    let to_bob = sdp_of(&relay.send(o).0);
    let b = port(&to_bob, 0);
    assert!(!to_bob.contains("a=rtcp-mux"), "{to_bob}");
    assert!(to_bob.contains(&format!("a=rtcp:{}\r\n", b + 1)));
    let mut a = answer("c1", "a", "b", BOB);
    a.push(("rtcp-mux", list(&["demux"])));
    let (reply, actions) = relay.send(a);
    let to_alice = sdp_of(&reply);
    let p = port(&to_alice, 0);
    assert!(
        to_alice.ends_with(&format!("a=rtcp:{p}\r\na=rtcp-mux\r\n")),
        "{to_alice}"
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        MediaAction::Update {
            side: Side::A,
            rtcp_mux: true,
            ..
        }
    )));
    assert!(actions.iter().any(|a| matches!(
        a,
        MediaAction::Update {
            side: Side::B,
            rtcp_mux: false,
            ..
        }
    )));
}

#[test]
fn loop_protect_marks_our_sdp_and_passes_it_back_untouched() {
    let mut relay = new_relay();
    let mut o = offer("c1", "a", ALICE);
    o.push(("flags", list(&["loop-protect"])));
    let out = sdp_of(&relay.send(o).0);
    assert!(out.contains("a=rtpengine:test-relay\r\n"), "{out}");
    let mut again = offer("c2", "x", &out);
    again.push(("flags", list(&["loop-protect"])));
    let (reply, actions) = relay.send(again);
    assert_eq!(sdp_of(&reply), out);
    assert!(actions.is_empty());
}

#[test]
fn address_family_bridges_ipv4_to_ipv6() {
    let mut relay = relay_with(Config {
        interfaces: vec![
            iface("v4/127.0.0.1", 40000, 40099),
            iface("v6/::1", 40000, 40099),
        ],
        ..Config::default()
    });
    let mut o = offer("c1", "a", ALICE);
    o.push(("address family", text("IP6")));
    let out = sdp_of(&relay.send(o).0);
    assert!(out.contains("c=IN IP6 ::1\r\n"), "{out}");
    let back = sdp_of(
        &relay
            .send(answer(
                "c1",
                "a",
                "b",
                &BOB.replace("IN IP4 198.51.100.20", "IN IP6 2001:db8::20"),
            ))
            .0,
    );
    assert!(back.contains("c=IN IP4 127.0.0.1\r\n"), "{back}");
    let mut named = offer("c2", "a", ALICE);
    named.push(("direction", list(&["v4", "nowhere"])));
    assert_eq!(
        error_of(&relay.send(named).0),
        "Unknown interface name \"nowhere\" in direction"
    );
}

#[test]
fn bad_requests_get_rtpengines_errors_and_change_nothing() {
    let mut relay = new_relay();
    assert_eq!(
        error_of(&relay.send(answer("nope", "a", "b", BOB)).0),
        "Unknown call-id"
    );
    assert_eq!(
        error_of(&relay.send(offer("c1", "a", "garbage")).0),
        "Failed to parse SDP"
    );
    let no_media = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
    assert_eq!(
        error_of(&relay.send(offer("c1", "a", no_media)).0),
        "Incomplete SDP specification"
    );
    let mut dtls = offer("c1", "a", ALICE);
    dtls.push(("transport-protocol", text("UDP/TLS/RTP/SAVPF")));
    assert!(error_of(&relay.send(dtls).0).contains("has no DTLS certificate"));
    sdp_of(&relay.send(offer("c1", "a", ALICE)).0);
    assert_eq!(
        error_of(&relay.send(answer("c1", "zz", "b", BOB)).0),
        "Invalid dialogue association"
    );
    let (reply, _) = relay.send(vec![("command", text("query")), ("call-id", text("none"))]);
    assert_eq!(error_of(&reply), "Unknown call-id");
    assert_eq!(relay.controller.call_count(), 1);
    assert_eq!(relay.controller.statistics().errors, 6);
}

#[test]
fn timeouts_and_delayed_deletes_end_sessions() {
    let mut relay = relay_with(Config {
        interfaces: vec![iface("127.0.0.1", 40000, 40099)],
        timeouts: Timeouts {
            media: Duration::from_secs(60),
            offer: Duration::from_secs(300),
        },
        ..Config::default()
    });
    relay.send(offer("unanswered", "a", ALICE));
    relay.send(offer("silent", "a", ALICE));
    relay.send(answer("silent", "a", "b", BOB));
    relay.send(offer("talking", "a", ALICE));
    relay.send(answer("talking", "a", "b", BOB));
    relay.send(offer("deleted", "a", ALICE));
    let (reply, actions) = relay.send(vec![
        ("command", text("delete")),
        ("call-id", text("deleted")),
        ("delete delay", Value::Int(10)),
    ]);
    assert_eq!(reply.outcome, Outcome::Ok);
    assert!(
        actions.is_empty(),
        "a delayed delete keeps the media until it falls due"
    );
    let talking: SessionKey = relay.controller.sessions_of("talking")[0];
    let t0 = relay.t0;
    assert_eq!(relay.controller.expire(t0 + Duration::from_secs(9)), vec![]);
    let due = relay.controller.expire(t0 + Duration::from_secs(10));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].reason, ExpiryReason::DelayedDelete);
    relay
        .controller
        .observe_activity(talking, Some(t0 + Duration::from_secs(50)));
    let due = relay.controller.expire(t0 + Duration::from_secs(61));
    assert_eq!(
        due.iter()
            .map(|e| (e.call_id.as_str(), e.reason))
            .collect::<Vec<_>>(),
        vec![("silent", ExpiryReason::Media)]
    );
    let due = relay.controller.expire(t0 + Duration::from_secs(300));
    let mut ended: Vec<_> = due.iter().map(|e| (e.call_id.as_str(), e.reason)).collect();
    ended.sort_by_key(|(call, _)| *call);
    assert_eq!(
        ended,
        vec![
            ("talking", ExpiryReason::Media),
            ("unanswered", ExpiryReason::Offer)
        ]
    );
    assert_eq!(relay.controller.call_count(), 0);
    assert_eq!(relay.controller.statistics().timeout_sessions, 3);
    assert_eq!(relay.controller.port_usage()[0].in_use, 0);
}

#[test]
fn query_list_and_statistics_report_the_calls() {
    let mut relay = new_relay();
    relay.send(offer("c1", "a", ALICE));
    relay.send(answer("c1", "a", "b", BOB));
    relay.send(offer("c2", "a", ALICE));
    let (reply, _) = relay.send(vec![("command", text("query")), ("call-id", text("c1"))]);
    assert_eq!(reply.created, Some(1_800_000_000));
    let tags: Vec<&str> = reply
        .tags
        .as_ref()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(tags, vec!["a", "b"]);
    assert_eq!(reply.totals.unwrap().rtp.packets, 0);
    let (reply, _) = relay.send(vec![("command", text("list"))]);
    assert_eq!(reply.calls, Some(vec!["c1".to_string(), "c2".to_string()]));
    let (reply, _) = relay.send(vec![("command", text("statistics"))]);
    let text = format!("{:?}", reply.statistics);
    assert!(text.contains("managedsessions"), "{text}");
}

/// An offer with four codecs (two static without rtpmap), DTMF and an fmtp.
const CAROL: &str = "v=0\r\n\
o=carol 1 1 IN IP4 192.0.2.30\r\n\
s=-\r\n\
c=IN IP4 192.0.2.30\r\n\
t=0 0\r\n\
m=audio 6000 RTP/AVP 96 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n";

/// The `m=` formats and the `a=rtpmap`/`a=fmtp` lines of the single section of `sdp`.
fn codec_lines(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .filter(|l| l.starts_with("m=") || l.starts_with("a=rtpmap") || l.starts_with("a=fmtp"))
        .map(|l| {
            if l.starts_with("m=") {
                l.splitn(4, ' ').nth(3).unwrap_or("")
            } else {
                l
            }
        })
        .collect()
}

#[test]
fn codec_strip_except_mask_and_offer_filter_what_the_receiver_gets() {
    let cases: &[(&[&str], &[&str])] = &[
        // rtpp-flags words, as Kamailio sends them.
        (
            &["codec-strip-PCMA"],
            &[
                "96 0 101",
                "a=rtpmap:96 opus/48000/2",
                "a=fmtp:96 useinbandfec=1",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
            ],
        ),
        (
            &[
                "codec-strip-all",
                "codec-except-pcmu",
                "codec-except-telephone-event",
            ],
            &[
                "0 101",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
            ],
        ),
        (
            &["codec-mask-opus/48000/2", "codec-strip-101"],
            &["0 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000"],
        ),
        // `offer` keeps a codec the sender has; G722 it does not have is not added.
        (
            &["codec-strip-all", "codec-offer-PCMA", "codec-offer-G722"],
            &["8", "a=rtpmap:8 PCMA/8000"],
        ),
        // A clock rate that does not match names nothing.
        (
            &["codec-strip-opus/16000"],
            &[
                "96 0 8 101",
                "a=rtpmap:96 opus/48000/2",
                "a=fmtp:96 useinbandfec=1",
                "a=rtpmap:0 PCMU/8000",
                "a=rtpmap:8 PCMA/8000",
                "a=rtpmap:101 telephone-event/8000",
                "a=fmtp:101 0-16",
            ],
        ),
    ];
    for (words, expected) in cases {
        let mut relay = new_relay();
        let mut o = offer("c1", "a", CAROL);
        o.push(("flags", list(words)));
        let (reply, _) = relay.send(o);
        let to_bob = sdp_of(&reply);
        assert_eq!(codec_lines(&to_bob), *expected, "{words:?}:\n{to_bob}");
        assert!(reply.warning.is_none(), "{words:?}: {:?}", reply.warning);
    }
    // The same through the `codec` dictionary, and in an answer (towards the offerer).
    let mut relay = new_relay();
    relay.send(offer("c2", "a", ALICE));
    let mut a = answer("c2", "a", "b", CAROL);
    a.push((
        "codec",
        Value::Dict(
            [("strip".to_string(), list(&["opus", "PCMU"]))]
                .into_iter()
                .collect(),
        ),
    ));
    let (reply, _) = relay.send(a);
    let to_alice = sdp_of(&reply);
    assert_eq!(
        codec_lines(&to_alice),
        [
            "8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16"
        ],
        "{to_alice}"
    );
}

#[test]
fn a_codec_filter_that_would_leave_no_codec_leaves_the_section_and_says_so() {
    let mut relay = new_relay();
    let mut o = offer("c1", "a", CAROL);
    o.push(("flags", list(&["codec-strip-all", "bogus-flag"])));
    let (reply, _) = relay.send(o);
    let to_bob = sdp_of(&reply);
    assert!(to_bob.contains(" RTP/AVP 96 0 8 101\r\n"), "{to_bob}");
    let warning = reply.warning.unwrap_or_default();
    assert!(
        warning.contains(
            "m=0: the codec filter would remove every codec (96 0 8 101): left unchanged"
        ),
        "{warning}"
    );
    assert!(warning.contains("bogus-flag"), "both warnings: {warning}");
    // Transcoding is not done, and said.
    let mut relay = new_relay();
    let mut o = offer("c1", "a", CAROL);
    o.push(("flags", list(&["codec-transcode-G729"])));
    let (reply, _) = relay.send(o);
    assert!(reply
        .warning
        .unwrap_or_default()
        .contains("Not applied by this relay: codec-transcode"),);
}

#[test]
fn options_understood_but_not_carried_out_are_named_in_the_warning() {
    let mut relay = new_relay();
    let mut o = offer("c1", "a", ALICE);
    o.push(("flags", list(&["no-port-latching", "bogus-flag"])));
    o.push(("TOS", Value::Int(184)));
    let (reply, _) = relay.send(o);
    let warning = reply.warning.clone().unwrap_or_default();
    assert!(warning.contains("bogus-flag"), "{warning}");
    assert!(
        warning.contains("Not applied by this relay: no-port-latching"),
        "{warning}"
    );
    assert!(!warning.contains("TOS"), "TOS is applied: {warning}");
    assert_eq!(reply.outcome, Outcome::Ok);
}

#[test]
fn a_huge_delete_delay_is_capped_at_an_hour() {
    let mut relay = new_relay();
    relay.send(offer("c1", "a", ALICE));
    let (reply, _) = relay.send(vec![
        ("command", text("delete")),
        ("call-id", text("c1")),
        ("delete delay", Value::Int(i64::MAX)),
    ]);
    assert_eq!(reply.outcome, Outcome::Ok);
    let t0 = relay.t0;
    assert!(relay
        .controller
        .expire(t0 + Duration::from_secs(3599))
        .is_empty());
    assert_eq!(
        relay
            .controller
            .expire(t0 + Duration::from_secs(3600))
            .len(),
        1
    );
}

#[test]
fn ice_force_makes_the_relay_an_ice_lite_peer_of_each_side() {
    let mut relay = new_relay();
    let mut o = offer("c1", "a", ALICE);
    o.push(("ICE", text("force")));
    let (reply, actions) = relay.send(o);
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob, 0);
    assert!(to_bob.contains("a=ice-lite\r\n"), "{to_bob}");
    assert!(
        !to_bob.contains("a=ice-ufrag:F7gI"),
        "Alice's own ICE lines are gone: {to_bob}"
    );
    let ufrag = to_bob
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("our ufrag");
    let pwd = to_bob
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-pwd:"))
        .expect("our pwd");
    assert_eq!((ufrag.len(), pwd.len()), (8, 24));
    assert!(to_bob.contains(&format!(
        "a=candidate:1 1 UDP 2130706431 203.0.113.1 {p} typ host\r\n"
    )));
    assert!(to_bob.contains(&format!(
        "a=candidate:1 2 UDP 2130706430 203.0.113.1 {} typ host\r\n",
        p + 1
    )));
    // The data plane knows the credentials given to Bob (leg B) and none for Alice yet.
    let [MediaAction::Add { pairs, .. }] = &actions[..] else {
        panic!("{actions:?}")
    };
    let given = pairs[0].ice(Side::B).expect("B's credentials");
    assert_eq!((given.ufrag_str(), given.pwd_str()), (ufrag, pwd));
    assert_eq!(pairs[0].ice(Side::A), None);
    // The answer with ICE=force gives Alice credentials of her own.
    let mut a = answer("c1", "a", "b", BOB);
    a.push(("ICE", text("force")));
    let (reply, actions) = relay.send(a);
    let to_alice = sdp_of(&reply);
    let alice_ufrag = to_alice
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("Alice's ufrag");
    assert_ne!(alice_ufrag, ufrag);
    assert!(actions.iter().any(|a| matches!(
        a,
        MediaAction::Update { side: Side::A, flags, .. }
            if flags.ice.is_some_and(|c| c.ufrag_str() == alice_ufrag)
    )));
    assert!(
        actions.iter().any(|a| matches!(
            a,
            MediaAction::Update { side: Side::B, flags, .. } if flags.ice == Some(given)
        )),
        "B keeps its credentials: {actions:?}"
    );
    // Without the flag ICE is removed, as before.
    let plain = sdp_of(&relay.send(offer("c2", "a", ALICE)).0);
    assert!(
        !plain.contains("a=ice") && !plain.contains("a=candidate"),
        "{plain}"
    );
}
