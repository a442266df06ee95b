//! rtcp-mux (RFC 5761) and the sockets a leg holds: a leg whose rtcp-mux is settled gives up
//! its RTCP socket, a leg whose rtcp-mux is in question (an offer the relay sends it, a
//! re-offer without it, an answer that refuses it) gets it back, and the SDP each party sees
//! is what rtpengine writes. The media actions are applied to real [`MediaPair`]s, as the
//! data plane does, so an opening that came after the update needing it would fail here.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use anchorage_ng::{Reply, Value};
use anchorage_relay::{MediaPair, Side};
use anchorage_relay_control::{MediaAction, PortBinder, SessionKey};

mod support;

use support::{audio_port, config, error_of, sdp_of, text, Relay};

/// Binds every port but those in `taken` (held by "another process").
#[derive(Default)]
struct Binder {
    taken: HashSet<u16>,
}

impl PortBinder for Binder {
    fn bind(&mut self, rtp: SocketAddr, rtcp: SocketAddr) -> bool {
        !self.taken.contains(&rtp.port()) && !self.taken.contains(&rtcp.port())
    }

    fn bind_rtcp(&mut self, rtcp: SocketAddr) -> bool {
        !self.taken.contains(&rtcp.port())
    }
}

/// The data plane as the media workers hold it: each stream's [`MediaPair`], changed by the
/// actions in their order, and the sockets they bind.
#[derive(Default)]
struct Plane {
    pairs: BTreeMap<(SessionKey, usize), MediaPair>,
}

impl Plane {
    fn apply(&mut self, actions: &[MediaAction]) {
        for action in actions {
            match action {
                MediaAction::Add { key, pairs, .. } | MediaAction::Extend { key, pairs, .. } => {
                    let first = self.pairs.keys().filter(|(k, _)| k == key).count();
                    for (i, pair) in pairs.iter().enumerate() {
                        self.pairs.insert((*key, first + i), pair.clone());
                    }
                }
                MediaAction::Update {
                    key,
                    media,
                    side,
                    remote,
                    rtcp_mux,
                    flags,
                } => {
                    let pair = self.pairs.get_mut(&(*key, *media)).expect("a stream");
                    pair.update_leg(*side, *remote, *rtcp_mux, *flags, now())
                        .unwrap_or_else(|e| panic!("{e} in {actions:?}"));
                }
                MediaAction::Rtcp {
                    key,
                    media,
                    side,
                    local,
                    open,
                } => {
                    let pair = self.pairs.get_mut(&(*key, *media)).expect("a stream");
                    pair.set_local_rtcp(*side, open.then_some(*local))
                        .unwrap_or_else(|e| panic!("{e} in {actions:?}"));
                }
                MediaAction::Remove { key } => self.pairs.retain(|(k, _), _| k != key),
            }
        }
    }

    /// Sockets bound for leg `side` of stream `media` of the only dialog.
    fn leg_sockets(&self, media: usize, side: Side) -> usize {
        let (_, pair) = self
            .pairs
            .iter()
            .rfind(|((_, m), _)| *m == media)
            .expect("a stream");
        pair.local_sockets()
            .filter(|(on, _)| on.side == side)
            .count()
    }

    /// Every socket bound.
    fn sockets(&self) -> usize {
        self.pairs.values().map(|p| p.local_sockets().count()).sum()
    }
}

#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

struct Call {
    relay: Relay<Binder>,
    plane: Plane,
}

impl Call {
    fn new() -> Call {
        Call {
            relay: Relay::with_binder(config(None), 11, Binder::default()),
            plane: Plane::default(),
        }
    }

    /// One command, its actions applied to the data plane.
    fn send(&mut self, entries: Vec<(&str, Value)>) -> Reply {
        let (reply, actions) = self.relay.send(entries);
        self.plane.apply(&actions);
        reply
    }

    fn offer(&mut self, from: &str, to: Option<&str>, sdp: &str) -> String {
        let mut o = vec![
            ("command", text("offer")),
            ("call-id", text("call-1")),
            ("from-tag", text(from)),
            ("sdp", text(sdp)),
        ];
        if let Some(to) = to {
            o.push(("to-tag", text(to)));
        }
        sdp_of(&self.send(o))
    }

    fn answer(&mut self, from: &str, to: &str, sdp: &str) -> String {
        sdp_of(&self.send(vec![
            ("command", text("answer")),
            ("call-id", text("call-1")),
            ("from-tag", text(from)),
            ("to-tag", text(to)),
            ("sdp", text(sdp)),
        ]))
    }

    /// The `sockets` of media 1 of `tag` in `query`.
    fn queried_sockets(&mut self, tag: &str) -> i64 {
        let reply = self.send(vec![
            ("command", text("query")),
            ("call-id", text("call-1")),
        ]);
        let tags = reply.tags.expect("tags");
        let (_, info) = tags.iter().find(|(t, _)| t == tag).expect("the tag");
        let Some((_, Value::List(medias))) = info.other.iter().find(|(k, _)| k == "medias") else {
            panic!("no medias: {info:?}")
        };
        let Some(Value::Dict(media)) = medias.first() else {
            panic!("{medias:?}")
        };
        match media.iter().find(|(k, _)| k == "sockets") {
            Some((_, Value::Int(n))) => *n,
            other => panic!("{other:?}"),
        }
    }

    /// Sockets of side A and side B of the first stream, as the data plane binds them; the
    /// count `query` reports agrees.
    fn sockets(&mut self) -> (usize, usize) {
        let counts = (
            self.plane.leg_sockets(0, Side::A),
            self.plane.leg_sockets(0, Side::B),
        );
        assert_eq!(self.queried_sockets("alice"), counts.0 as i64);
        counts
    }
}

fn sdp(owner: &str, ip: &str, port: u16, mux: bool) -> String {
    format!(
        "v=0\r\no={owner} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\n{}",
        if mux { "a=rtcp-mux\r\n" } else { "" }
    )
}

fn alice(mux: bool) -> String {
    sdp("alice", "192.0.2.10", 4000, mux)
}

fn bob(mux: bool) -> String {
    sdp("bob", "198.51.100.20", 5000, mux)
}

/// The relay's SDP for a party: `a=rtcp:` and `a=rtcp-mux` as rtpengine writes them.
fn relay_sdp(owner: &str, ip: &str, port: u16, rtcp: u16, mux: bool) -> String {
    format!(
        "v=0\r\no={owner} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\na=rtcp:{rtcp}\r\n{}",
        if mux { "a=rtcp-mux\r\n" } else { "" }
    )
}

#[test]
fn both_legs_muxed_hold_two_sockets_after_the_answer_and_the_sdps_are_unchanged() {
    let mut call = Call::new();
    let to_bob = call.offer("alice", None, &alice(true));
    let b = audio_port(&to_bob);
    // The offer keeps advertising the RTCP port (RFC 5761 §5.1.1 fallback), whose socket is
    // held until the answer.
    assert_eq!(to_bob, relay_sdp("alice", "192.0.2.10", b, b + 1, true));
    assert_eq!(call.sockets(), (2, 2));
    let to_alice = call.answer("alice", "bob", &bob(true));
    let a = audio_port(&to_alice);
    assert_eq!(to_alice, relay_sdp("bob", "198.51.100.20", a, a, true));
    // rtcp-mux settled on both legs: RTP sockets only.
    assert_eq!(call.sockets(), (1, 1));
    assert_eq!(call.queried_sockets("bob"), 1);
    assert_eq!(call.plane.sockets(), 2);
    // Both pairs stay reserved in the pool (the RTCP ports can be opened again).
    let usage = call.relay.controller.port_usage();
    assert_eq!(usage[0].in_use, 2, "{usage:?}");
}

#[test]
fn an_answerer_refusing_rtcp_mux_keeps_rtcp_sockets_on_both_legs() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(true));
    let to_alice = call.answer("alice", "bob", &bob(false));
    let a = audio_port(&to_alice);
    // The relay answers Alice without rtcp-mux: both legs keep their RTCP sockets.
    assert_eq!(to_alice, relay_sdp("bob", "198.51.100.20", a, a + 1, false));
    assert_eq!(call.sockets(), (2, 2));
}

#[test]
fn rtcp_mux_demux_closes_the_callers_rtcp_socket_only() {
    let mut call = Call::new();
    let to_bob = sdp_of(&call.send(vec![
        ("command", text("offer")),
        ("call-id", text("call-1")),
        ("from-tag", text("alice")),
        ("sdp", text(&alice(true))),
        ("rtcp-mux", Value::List(vec![text("demux")])),
    ]));
    assert!(!to_bob.contains("a=rtcp-mux"), "{to_bob}");
    call.answer("alice", "bob", &bob(false));
    // Alice muxes (accepted by demux), Bob gets RTCP on its own port.
    assert_eq!(call.sockets(), (1, 2));
}

#[test]
fn without_rtcp_mux_every_leg_keeps_four_sockets_a_stream() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(false));
    call.answer("alice", "bob", &bob(false));
    assert_eq!(call.sockets(), (2, 2));
    assert_eq!(call.plane.sockets(), 4);
}

#[test]
fn a_reoffer_opens_the_receivers_rtcp_socket_until_its_answer() {
    let mut call = Call::new();
    let first = call.offer("alice", None, &alice(true));
    let b = audio_port(&first);
    call.answer("alice", "bob", &bob(true));
    assert_eq!(call.sockets(), (1, 1));
    // Alice re-offers with rtcp-mux: Bob is offered the same ports and his RTCP port again
    // (as rtpengine does), so his RTCP socket is open until he answers.
    let to_bob = call.offer("alice", Some("bob"), &alice(true).replace(" 1 1 ", " 1 2 "));
    assert_eq!(audio_port(&to_bob), b);
    assert!(
        to_bob.contains(&format!("a=rtcp:{}\r\na=rtcp-mux\r\n", b + 1)),
        "{to_bob}"
    );
    assert_eq!(call.sockets(), (1, 2));
    call.answer("alice", "bob", &bob(true).replace(" 1 1 ", " 1 2 "));
    assert_eq!(call.sockets(), (1, 1));
    // Bob re-offers (a callee re-INVITE): Alice's RTCP socket opens for the offer.
    let to_alice = call.offer("bob", Some("alice"), &bob(true).replace(" 1 1 ", " 1 3 "));
    let a = audio_port(&to_alice);
    assert!(
        to_alice.contains(&format!("a=rtcp:{}\r\na=rtcp-mux\r\n", a + 1)),
        "{to_alice}"
    );
    assert_eq!(call.sockets(), (2, 1));
    call.answer("bob", "alice", &alice(true).replace(" 1 1 ", " 1 3 "));
    assert_eq!(call.sockets(), (1, 1));
}

#[test]
fn a_party_that_drops_rtcp_mux_in_a_reoffer_gets_its_rtcp_socket_back() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(true));
    call.answer("alice", "bob", &bob(true));
    assert_eq!(call.sockets(), (1, 1));
    // Alice re-offers without rtcp-mux: her RTCP socket opens at once (the data plane
    // stops multiplexing towards her), Bob's for the offer he is sent.
    let to_bob = call.offer(
        "alice",
        Some("bob"),
        &alice(false).replace(" 1 1 ", " 1 2 "),
    );
    assert!(!to_bob.contains("a=rtcp-mux"), "{to_bob}");
    assert_eq!(call.sockets(), (2, 2));
    let to_alice = call.answer("alice", "bob", &bob(false).replace(" 1 1 ", " 1 2 "));
    let a = audio_port(&to_alice);
    assert_eq!(
        to_alice,
        relay_sdp("bob", "198.51.100.20", a, a + 1, false).replace(" 1 1 ", " 1 2 ")
    );
    assert_eq!(call.sockets(), (2, 2));
    // And back to rtcp-mux: closed again after the answer.
    call.offer("alice", Some("bob"), &alice(true).replace(" 1 1 ", " 1 3 "));
    assert_eq!(call.sockets(), (2, 2));
    call.answer("alice", "bob", &bob(true).replace(" 1 1 ", " 1 3 "));
    assert_eq!(call.sockets(), (1, 1));
}

#[test]
fn an_offerer_whose_muxed_reoffer_is_refused_mux_gets_its_rtcp_socket_back_at_the_answer() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(true));
    call.answer("alice", "bob", &bob(true));
    // Alice re-offers with rtcp-mux, Bob now answers without: the relay answers Alice
    // without rtcp-mux, on her RTCP port, which opens again.
    call.offer("alice", Some("bob"), &alice(true).replace(" 1 1 ", " 1 2 "));
    assert_eq!(call.sockets(), (1, 2));
    let to_alice = call.answer("alice", "bob", &bob(false).replace(" 1 1 ", " 1 2 "));
    let a = audio_port(&to_alice);
    assert!(
        to_alice.ends_with(&format!("a=rtcp:{}\r\n", a + 1)),
        "{to_alice}"
    );
    assert_eq!(call.sockets(), (2, 2));
}

#[test]
fn an_rtcp_port_taken_meanwhile_refuses_the_reoffer_and_changes_nothing() {
    let mut call = Call::new();
    let to_bob = call.offer("alice", None, &alice(true));
    let b = audio_port(&to_bob);
    let to_alice = call.answer("alice", "bob", &bob(true));
    let a = audio_port(&to_alice);
    // Another process binds Alice's closed RTCP port; her re-offer without rtcp-mux needs it.
    call.relay.binder.taken.insert(a + 1);
    let (reply, actions) = call.relay.send(vec![
        ("command", text("offer")),
        ("call-id", text("call-1")),
        ("from-tag", text("alice")),
        ("to-tag", text("bob")),
        ("sdp", text(&alice(false).replace(" 1 1 ", " 1 2 "))),
    ]);
    assert!(error_of(&reply).contains("RTCP port"), "{reply:?}");
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(call.sockets(), (1, 1));
    // Once free, the same re-offer goes through on the same ports.
    call.relay.binder.taken.clear();
    let to_bob = call.offer(
        "alice",
        Some("bob"),
        &alice(false).replace(" 1 1 ", " 1 2 "),
    );
    assert_eq!(audio_port(&to_bob), b);
    assert_eq!(call.sockets(), (2, 2));
}

#[test]
fn a_new_m_line_in_a_reoffer_and_the_delete_account_for_every_socket() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(true));
    call.answer("alice", "bob", &bob(true));
    let video = |s: String, port: u16| format!("{s}m=video {port} RTP/AVP 96\r\na=rtcp-mux\r\n");
    call.offer(
        "alice",
        Some("bob"),
        &video(alice(true).replace(" 1 1 ", " 1 2 "), 4002),
    );
    // Audio: Alice 1, Bob 2 (offered); video: 2 and 2 (new pairs, bound whole).
    assert_eq!(call.plane.sockets(), 3 + 4);
    call.answer(
        "alice",
        "bob",
        &video(bob(true).replace(" 1 1 ", " 1 2 "), 5002),
    );
    assert_eq!(call.plane.sockets(), 4);
    call.send(vec![
        ("command", text("delete")),
        ("call-id", text("call-1")),
        ("from-tag", text("alice")),
    ]);
    assert_eq!(call.plane.sockets(), 0);
    let usage = call.relay.controller.port_usage();
    assert_eq!(usage[0].in_use, 0, "{usage:?}");
}

#[test]
fn a_later_fork_answering_without_rtcp_mux_gets_the_callee_sides_rtcp_socket_back() {
    let mut call = Call::new();
    call.offer("alice", None, &alice(true));
    call.answer("alice", "bob", &bob(true));
    assert_eq!(call.plane.sockets(), 2);
    // Without via-branch, an answer from another to-tag takes over the callee side: Carol
    // does not multiplex, so that side needs its RTCP socket again, and so does Alice, whom
    // the relay now answers without rtcp-mux.
    let to_alice = call.answer(
        "alice",
        "carol",
        &sdp("carol", "198.51.100.30", 6000, false),
    );
    let a = audio_port(&to_alice);
    assert!(
        to_alice.ends_with(&format!("a=rtcp:{}\r\n", a + 1)),
        "{to_alice}"
    );
    assert_eq!(call.sockets(), (2, 2));
    assert_eq!(call.queried_sockets("carol"), 2);
}
