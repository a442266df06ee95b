//! DTLS-SRTP (RFC 5763/5764) through the control plane: exact SDPs for DTLS on one side and
//! plain RTP or SDES on the other (both directions), DTLS on both sides passed through, the
//! `a=setup` roles (`DTLS=passive|active`), the role and fingerprint the data plane is given
//! for each leg and when, a re-offer with a new fingerprint, and the refusals.

use anchorage_ng::{Reply, Value};
use anchorage_relay::{DtlsParams, DtlsRole, Fingerprint, Side};
use anchorage_relay_control::MediaAction;

/// The relay's certificate fingerprint in these tests.
fn relay_fp() -> Fingerprint {
    Fingerprint::of_der(b"the relay's certificate")
}

/// Alice's and Bob's certificate fingerprints.
fn fp(who: &str) -> Fingerprint {
    Fingerprint::of_der(who.as_bytes())
}

mod support;

use support::{answer, answer_from, audio_port as port, error_of, sdp_of, text, Relay};

/// A relay with DTLS (`relay_fp`) or without.
fn new_relay(dtls: Option<Fingerprint>) -> Relay {
    Relay::with(support::config(dtls), 5)
}

fn offer(sdp: &str, options: &[(&'static str, &str)]) -> Vec<(&'static str, Value)> {
    let mut entries = vec![
        ("command", text("offer")),
        ("call-id", text("call-1")),
        ("from-tag", text("alice")),
        ("sdp", text(sdp)),
    ];
    entries.extend(options.iter().map(|(k, v)| (*k, text(v))));
    entries
}

/// What the data plane should run for a leg: the relay's `role`, `who`'s certificate.
fn leg(role: DtlsRole, who: Option<&str>) -> Option<DtlsParams> {
    Some(DtlsParams {
        role,
        peer: who.map(fp),
    })
}

/// The DTLS options the data plane was given for `side` of the first stream.
fn dtls_in(actions: &[MediaAction], side: Side) -> Option<DtlsParams> {
    support::leg_flags(actions, side).dtls
}

/// What the relay sends on: the sender's `o=` (`who`, `ip`), the relay's address at session
/// level where the sender's was, the relay's `port` and `profile`, then `rest`.
fn from_relay(who: &str, ip: &str, port: u16, profile: &str, rest: &str) -> String {
    format!(
        "v=0\r\no={who} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n\
         m=audio {port} {profile} 111\r\n{rest}"
    )
}

/// Checks that the SDP of `reply` is what the relay sends on (`from_relay`) with Alice's and
/// Bob's codec, `a=sendrecv` and `a=rtcp:` at the relay's port plus `rtcp_offset`, then
/// `rest`.
fn assert_from_relay(
    reply: &Reply,
    (who, ip): (&str, &str),
    profile: &str,
    rtcp_offset: u16,
    rest: &str,
) {
    let sdp = sdp_of(reply);
    let p = port(&sdp);
    let rtcp = p + rtcp_offset;
    assert_eq!(
        sdp,
        from_relay(
            who,
            ip,
            p,
            profile,
            &format!("a=rtpmap:111 opus/48000/2\r\na=sendrecv\r\na=rtcp:{rtcp}\r\n{rest}"),
        )
    );
}

/// `a=rtcp-mux`, then the relay's own `a=setup:{setup}` and certificate fingerprint.
fn mux_and_relay_dtls(setup: &str) -> String {
    format!(
        "a=rtcp-mux\r\na=setup:{setup}\r\na=fingerprint:{}\r\n",
        relay_fp().sdp_value()
    )
}

/// Bob's answer to the relay's offer in a move (with `reanchor`, as the proxy replays it).
fn reanchor_answer(sdp: &str) -> Vec<(&'static str, Value)> {
    let mut replay = answer(sdp);
    replay.push(("flags", Value::List(vec![text("reanchor")])));
    replay
}

/// The SDES key Alice or Bob offers or answers with.
const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

/// An SDES party's SDP: `who` at `ip`, `port`, `profile`, its crypto attribute with `tag`.
fn sdes_party(who: &str, ip: &str, port: u16, profile: &str, tag: u8) -> String {
    format!(
        "v=0\r\no={who} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {profile} 111\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
    )
}

/// Alice and Bob as DTLS parties (`dtls_party`) and as plain ones (`plain_party`): name and IP.
const DTLS_ALICE: (&str, &str) = ("alice", "192.0.2.10");
const DTLS_BOB: (&str, &str) = ("bob", "192.0.2.10");
const PLAIN_ALICE: (&str, &str) = ("alice", "198.51.100.20");
const PLAIN_BOB: (&str, &str) = ("bob", "198.51.100.20");

fn dtls_party(who: &str, port: u16, profile: &str, setup: &str) -> String {
    format!(
        "v=0\r\n\
         o={who} 1 1 IN IP4 192.0.2.10\r\n\
         s=-\r\n\
         c=IN IP4 192.0.2.10\r\n\
         t=0 0\r\n\
         m=audio {port} {profile} 111\r\n\
         a=rtpmap:111 opus/48000/2\r\n\
         a=rtcp-mux\r\n\
         a=setup:{setup}\r\n\
         a=fingerprint:{}\r\n",
        fp(who).sdp_value()
    )
}

fn plain_party(who: &str, port: u16) -> String {
    format!(
        "v=0\r\n\
         o={who} 1 1 IN IP4 198.51.100.20\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.20\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 111\r\n\
         a=rtpmap:111 opus/48000/2\r\n"
    )
}

#[test]
fn dtls_offerer_and_plain_answerer() {
    let mut relay = new_relay(Some(relay_fp()));
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    let (reply, actions) = relay.send(offer(&alice, &[("transport-protocol", "RTP/AVPF")]));
    assert_from_relay(&reply, DTLS_ALICE, "RTP/AVPF", 1, "a=rtcp-mux\r\n");
    // Until Alice has the relay's answer, the relay only waits for a ClientHello from her.
    let waiting = leg(DtlsRole::Server, Some("alice"));
    assert_eq!(dtls_in(&actions, Side::A), waiting);
    assert_eq!(dtls_in(&actions, Side::B), None);
    let (reply, actions) = relay.send(answer(&plain_party("bob", 5000)));
    let dtls = mux_and_relay_dtls("active");
    assert_from_relay(&reply, PLAIN_BOB, "UDP/TLS/RTP/SAVPF", 0, &dtls);
    // Answered `actpass` with `active`: the relay is the client, now that Alice knows.
    let client = leg(DtlsRole::Client, Some("alice"));
    assert_eq!(dtls_in(&actions, Side::A), client);
    assert_eq!(dtls_in(&actions, Side::B), None);
}

#[test]
fn plain_offerer_and_dtls_answerer_with_the_protocol_in_the_offer() {
    let mut relay = new_relay(Some(relay_fp()));
    let (reply, actions) = relay.send(offer(
        &plain_party("alice", 4000),
        &[("transport-protocol", "UDP/TLS/RTP/SAVPF")],
    ));
    let dtls = mux_and_relay_dtls("actpass");
    assert_from_relay(&reply, PLAIN_ALICE, "UDP/TLS/RTP/SAVPF", 1, &dtls);
    // Bob's side is encrypted, with no fingerprint to expect yet: nothing passes.
    let pending = leg(DtlsRole::Server, None);
    assert_eq!(dtls_in(&actions, Side::B), pending);
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "active");
    let (reply, actions) = relay.send(answer(&bob));
    assert_from_relay(&reply, DTLS_BOB, "RTP/AVP", 1, "");
    // Bob is active: the relay is the server and expects Bob's certificate.
    let server = leg(DtlsRole::Server, Some("bob"));
    assert_eq!(dtls_in(&actions, Side::B), server);
    assert_eq!(dtls_in(&actions, Side::A), None);
}

#[test]
fn a_passive_answerer_makes_the_relay_the_client() {
    let mut relay = new_relay(Some(relay_fp()));
    relay.send(offer(
        &plain_party("alice", 4000),
        &[("transport-protocol", "UDP/TLS/RTP/SAVP")],
    ));
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVP", "passive");
    let (reply, actions) = relay.send(answer(&bob));
    sdp_of(&reply);
    assert_eq!(
        dtls_in(&actions, Side::B),
        leg(DtlsRole::Client, Some("bob"))
    );
}

#[test]
fn dtls_offerer_and_sdes_answerer_and_dtls_passive() {
    let mut relay = new_relay(Some(relay_fp()));
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVP", "actpass");
    let (reply, _) = relay.send(offer(
        &alice,
        &[("transport-protocol", "RTP/SAVP"), ("DTLS", "passive")],
    ));
    let to_bob = sdp_of(&reply);
    assert!(to_bob.contains(" RTP/SAVP 111\r\n"), "{to_bob}");
    assert!(
        to_bob.contains("a=crypto:1 AEAD_AES_256_GCM inline:"),
        "{to_bob}"
    );
    assert!(!to_bob.contains("a=setup") && !to_bob.contains("a=fingerprint"));
    let bob = sdes_party("bob", "198.51.100.20", 5000, "RTP/SAVP", 5);
    let (reply, actions) = relay.send(answer(&bob));
    let to_alice = sdp_of(&reply);
    let pa = port(&to_alice);
    assert!(
        to_alice.ends_with(&format!(
            "c=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio {pa} UDP/TLS/RTP/SAVP 111\r\n\
             a=sendrecv\r\n\
             a=rtcp:{pa}\r\n\
             {}",
            mux_and_relay_dtls("passive")
        )),
        "{to_alice}"
    );
    // `DTLS=passive`: the relay waits for Alice's ClientHello; Bob's leg is SDES.
    assert_eq!(
        dtls_in(&actions, Side::A),
        leg(DtlsRole::Server, Some("alice"))
    );
    assert!(actions.iter().any(|a| matches!(a,
        MediaAction::Update { side: Side::B, flags, .. } if flags.srtp.is_some() && flags.dtls.is_none())));
}

#[test]
fn sdes_offerer_and_dtls_answerer() {
    let mut relay = new_relay(Some(relay_fp()));
    let alice = sdes_party("alice", "192.0.2.10", 4000, "RTP/SAVPF", 1);
    let (reply, _) = relay.send(offer(
        &alice,
        &[
            ("transport-protocol", "UDP/TLS/RTP/SAVPF"),
            ("DTLS", "active"),
        ],
    ));
    let to_bob = sdp_of(&reply);
    assert!(to_bob.contains(" UDP/TLS/RTP/SAVPF 111\r\n"), "{to_bob}");
    assert!(to_bob.contains("a=setup:active\r\n"), "{to_bob}");
    assert!(!to_bob.contains("a=crypto"), "{to_bob}");
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "passive");
    let (reply, actions) = relay.send(answer(&bob));
    let to_alice = sdp_of(&reply);
    assert!(to_alice.contains(" RTP/SAVPF 111\r\n"), "{to_alice}");
    assert!(to_alice.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(!to_alice.contains("a=fingerprint"));
    assert_eq!(
        dtls_in(&actions, Side::B),
        leg(DtlsRole::Client, Some("bob"))
    );
}

#[test]
fn dtls_on_both_sides_is_passed_through_untouched() {
    let mut relay = new_relay(Some(relay_fp()));
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    let (reply, actions) = relay.send(offer(&alice, &[]));
    let to_bob = sdp_of(&reply);
    assert!(to_bob.contains("a=setup:actpass\r\n"));
    assert!(to_bob.contains(&format!("a=fingerprint:{}\r\n", fp("alice").sdp_value())));
    assert_eq!(dtls_in(&actions, Side::A), None);
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "active");
    let (reply, actions) = relay.send(answer(&bob));
    let to_alice = sdp_of(&reply);
    assert!(to_alice.contains(&format!("a=fingerprint:{}\r\n", fp("bob").sdp_value())));
    assert_eq!(dtls_in(&actions, Side::B), None);
}

#[test]
fn a_reoffer_with_a_new_fingerprint_gives_the_data_plane_a_new_one() {
    let mut relay = new_relay(Some(relay_fp()));
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    relay.send(offer(&alice, &[("transport-protocol", "RTP/AVP")]));
    relay.send(answer(&plain_party("bob", 5000)));
    // The same SDP again: the same role and fingerprint (no new handshake).
    let (reply, actions) = relay.send(offer(&alice, &[("to-tag", "bob")]));
    let again = sdp_of(&reply);
    assert!(
        again.contains(" RTP/AVPF 111\r\n"),
        "the conversion is kept: {again}"
    );
    let client = leg(DtlsRole::Client, Some("alice"));
    assert_eq!(dtls_in(&actions, Side::A), client);
    // A new certificate (say, the call moved to another device or relay).
    let moved = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass")
        .replace(&fp("alice").sdp_value(), &fp("alice's new").sdp_value());
    let (_, actions) = relay.send(offer(&moved, &[("to-tag", "bob")]));
    let new = dtls_in(&actions, Side::A).and_then(|p| p.peer);
    assert_eq!(new, Some(fp("alice's new")));
    let (reply, actions) = relay.send(answer(&plain_party("bob", 5000)));
    assert!(sdp_of(&reply).contains("a=setup:active\r\n"));
    assert_eq!(
        dtls_in(&actions, Side::A),
        leg(DtlsRole::Client, Some("alice's new"))
    );
}

#[test]
fn what_cannot_be_honoured_is_refused_with_a_reason() {
    let mut relay = new_relay(Some(relay_fp()));
    let no_fp = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass").replace(
        &format!("a=fingerprint:{}\r\n", fp("alice").sdp_value()),
        "",
    );
    let reply = relay
        .send(offer(&no_fp, &[("transport-protocol", "RTP/AVP")]))
        .0;
    assert_eq!(error_of(&reply), "DTLS: media section 1: no a=fingerprint");
    let sha1 = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass")
        .replace(&fp("alice").sdp_value(), "sha-1 00:11");
    let reply = relay
        .send(offer(&sha1, &[("transport-protocol", "RTP/AVP")]))
        .0;
    assert!(error_of(&reply).contains("sha-256"), "{reply:?}");
    let reply = relay
        .send(offer(
            &plain_party("alice", 4000),
            &[("transport-protocol", "UDP/TLS/RTP/SAVPF"), ("DTLS", "off")],
        ))
        .0;
    assert!(error_of(&reply).contains("DTLS=off"), "{reply:?}");
    relay.send(offer(
        &plain_party("alice", 4000),
        &[("transport-protocol", "UDP/TLS/RTP/SAVPF")],
    ));
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "actpass");
    let reply = relay.send(answer(&bob)).0;
    assert!(
        error_of(&reply).contains("actpass in an answer"),
        "{reply:?}"
    );
    // Without a certificate the relay still refuses to convert DTLS, as before.
    let mut bare = new_relay(None);
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    let reply = bare
        .send(offer(&alice, &[("transport-protocol", "RTP/AVP")]))
        .0;
    assert!(error_of(&reply).contains("not supported"), "{reply:?}");
}

/// A move of a call with a DTLS caller to this relay (DESIGN.md "Re-anchoring" step 2): the
/// caller's stored SDP (its answer to the old relay, `passive`) as the offer, the plain
/// callee's as the answer with `reanchor`. The caller's re-INVITE offers a new DTLS
/// association, so it carries `actpass` (RFC 5763 §5), and the relay's role follows the
/// caller's real answer, `passive` or `active`.
#[test]
fn a_move_offers_the_dtls_caller_actpass_and_its_answer_sets_the_role() {
    // `actpass` is what baresip answers as a caller (it repeats its first `a=setup`): taken
    // as the offer it repeats, the relay being the client.
    for (answered, role) in [
        ("passive", DtlsRole::Client),
        ("active", DtlsRole::Server),
        ("actpass", DtlsRole::Client),
    ] {
        let mut relay = new_relay(Some(relay_fp()));
        let stored = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "passive");
        let (reply, _) = relay.send(offer(
            &stored,
            &[("to-tag", "bob"), ("transport-protocol", "RTP/AVPF")],
        ));
        sdp_of(&reply);
        let (reply, actions) = relay.send(reanchor_answer(&plain_party("bob", 5000)));
        let dtls = mux_and_relay_dtls("actpass");
        assert_from_relay(&reply, PLAIN_BOB, "UDP/TLS/RTP/SAVPF", 0, &dtls);
        // Until Alice answers, the relay only waits for her ClientHello.
        assert_eq!(
            dtls_in(&actions, Side::A),
            leg(DtlsRole::Server, Some("alice"))
        );
        let real = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", answered);
        let (reply, actions) = relay.send(answer_from("alice", "bob", &real));
        // Bob keeps what he has (plain RTP/AVP, no rtcp-mux), as the proxy discards this.
        assert_from_relay(&reply, DTLS_ALICE, "RTP/AVP", 1, "");
        assert_eq!(dtls_in(&actions, Side::A), leg(role, Some("alice")));
        assert_eq!(dtls_in(&actions, Side::B), None);
    }
}

/// The same for a DTLS callee whose stored SDP was its own offer (`actpass`, a re-INVITE of
/// its own): replayed as the move's answer it is not refused, the callee is offered `actpass`,
/// and its real answer sets the role.
#[test]
fn a_move_offers_the_dtls_callee_actpass_and_its_answer_sets_the_role() {
    for (answered, role) in [("passive", DtlsRole::Client), ("active", DtlsRole::Server)] {
        let mut relay = new_relay(Some(relay_fp()));
        let (reply, _) = relay.send(offer(
            &plain_party("alice", 4000),
            &[
                ("to-tag", "bob"),
                ("transport-protocol", "UDP/TLS/RTP/SAVPF"),
            ],
        ));
        let dtls = mux_and_relay_dtls("actpass");
        assert_from_relay(&reply, PLAIN_ALICE, "UDP/TLS/RTP/SAVPF", 1, &dtls);
        let stored = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "actpass");
        let (reply, actions) = relay.send(reanchor_answer(&stored));
        let to_alice = sdp_of(&reply);
        assert!(to_alice.contains(" RTP/AVP 111\r\n"), "{to_alice}");
        assert_eq!(
            dtls_in(&actions, Side::B),
            leg(DtlsRole::Server, Some("bob"))
        );
        let real = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", answered);
        let (reply, actions) = relay.send(answer(&real));
        sdp_of(&reply);
        assert_eq!(dtls_in(&actions, Side::B), leg(role, Some("bob")));
    }
}
