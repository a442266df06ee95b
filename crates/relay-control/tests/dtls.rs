//! DTLS-SRTP (RFC 5763/5764) through the control plane: exact SDPs for DTLS on one side and
//! plain RTP or SDES on the other (both directions), DTLS on both sides passed through, the
//! `a=setup` roles (`DTLS=passive|active`), the role and fingerprint the data plane is given
//! for each leg and when, a re-offer with a new fingerprint, and the refusals.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_ng::{Dict, Outcome, Reply, Request, Value};
use anchorage_relay::{DtlsParams, DtlsRole, Fingerprint, Interface, PortRange, Side};
use anchorage_relay_control::{Config, Controller, MediaAction, Now, PortBinder};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Binder;

impl PortBinder for Binder {
    fn bind(&mut self, _rtp: SocketAddr, _rtcp: SocketAddr) -> bool {
        true
    }
}

/// The relay's certificate fingerprint in these tests.
fn relay_fp() -> Fingerprint {
    Fingerprint::of_der(b"the relay's certificate")
}

/// Alice's and Bob's certificate fingerprints.
fn fp(who: &str) -> Fingerprint {
    Fingerprint::of_der(who.as_bytes())
}

struct Relay {
    controller: Controller,
    t0: Instant,
}

impl Relay {
    fn new(dtls: Option<Fingerprint>) -> Relay {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let config = Config {
            interfaces: vec![Interface::parse(
                "10.0.0.1!203.0.113.1",
                PortRange::new(30000, 30999).unwrap(),
            )
            .unwrap()],
            port_quarantine: Duration::ZERO,
            instance: "test-relay".into(),
            dtls,
            ..Config::default()
        };
        let now = Now {
            mono: t0,
            unix_us: 1_800_000_000_000_000,
        };
        let controller = Controller::new(config, &mut StdRng::seed_from_u64(5), now).unwrap();
        Relay { controller, t0 }
    }

    fn send(&mut self, entries: Vec<(&str, Value)>) -> (Reply, Vec<MediaAction>) {
        let dict: Dict = entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let request = Request::from_dict(&dict).unwrap();
        let now = Now {
            mono: self.t0,
            unix_us: 1_800_000_000_000_000,
        };
        let handled = self.controller.handle(&request, now, &mut Binder);
        (handled.reply, handled.actions)
    }
}

fn text(s: &str) -> Value {
    Value::text(s)
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

fn answer(sdp: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("command", text("answer")),
        ("call-id", text("call-1")),
        ("from-tag", text("alice")),
        ("to-tag", text("bob")),
        ("sdp", text(sdp)),
    ]
}

fn sdp_of(reply: &Reply) -> String {
    assert_eq!(reply.outcome, Outcome::Ok, "{reply:?}");
    String::from_utf8(reply.sdp.clone().expect("an SDP").to_vec()).unwrap()
}

fn error_of(reply: &Reply) -> String {
    match &reply.outcome {
        Outcome::Error(reason) => reason.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("an m= port")
}

/// The DTLS options the data plane was given for `side` of the first stream, from `Add` or
/// the last `Update` of that side.
fn dtls_in(actions: &[MediaAction], side: Side) -> Option<DtlsParams> {
    let mut found = None;
    for action in actions {
        match action {
            MediaAction::Add { pairs, .. } => found = Some(pairs[0].dtls(side)),
            MediaAction::Update {
                side: s,
                flags,
                media: 0,
                ..
            } if *s == side => found = Some(flags.dtls),
            _ => {}
        }
    }
    found.unwrap_or_else(|| panic!("nothing for {side:?} in {actions:?}"))
}

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
    let mut relay = Relay::new(Some(relay_fp()));
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    let (reply, actions) = relay.send(offer(&alice, &[("transport-protocol", "RTP/AVPF")]));
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob);
    assert_eq!(
        to_bob,
        format!(
            "v=0\r\n\
             o=alice 1 1 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/AVPF 111\r\n\
             c=IN IP4 203.0.113.1\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             a=rtcp-mux\r\n",
            p + 1
        )
    );
    // Until Alice has the relay's answer, the relay only waits for a ClientHello from her.
    let waiting = DtlsParams {
        role: DtlsRole::Server,
        peer: Some(fp("alice")),
    };
    assert_eq!(dtls_in(&actions, Side::A), Some(waiting));
    assert_eq!(dtls_in(&actions, Side::B), None);
    let (reply, actions) = relay.send(answer(&plain_party("bob", 5000)));
    let to_alice = sdp_of(&reply);
    let pa = port(&to_alice);
    assert_eq!(
        to_alice,
        format!(
            "v=0\r\n\
             o=bob 1 1 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             t=0 0\r\n\
             m=audio {pa} UDP/TLS/RTP/SAVPF 111\r\n\
             c=IN IP4 203.0.113.1\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=sendrecv\r\n\
             a=rtcp:{pa}\r\n\
             a=rtcp-mux\r\n\
             a=setup:active\r\n\
             a=fingerprint:{}\r\n",
            relay_fp().sdp_value()
        )
    );
    // Answered `actpass` with `active`: the relay is the client, now that Alice knows.
    let client = DtlsParams {
        role: DtlsRole::Client,
        peer: Some(fp("alice")),
    };
    assert_eq!(dtls_in(&actions, Side::A), Some(client));
    assert_eq!(dtls_in(&actions, Side::B), None);
}

#[test]
fn plain_offerer_and_dtls_answerer_with_the_protocol_in_the_offer() {
    let mut relay = Relay::new(Some(relay_fp()));
    let (reply, actions) = relay.send(offer(
        &plain_party("alice", 4000),
        &[("transport-protocol", "UDP/TLS/RTP/SAVPF")],
    ));
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob);
    assert_eq!(
        to_bob,
        format!(
            "v=0\r\n\
             o=alice 1 1 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             t=0 0\r\n\
             m=audio {p} UDP/TLS/RTP/SAVPF 111\r\n\
             c=IN IP4 203.0.113.1\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             a=rtcp-mux\r\n\
             a=setup:actpass\r\n\
             a=fingerprint:{}\r\n",
            p + 1,
            relay_fp().sdp_value()
        )
    );
    // Bob's side is encrypted, with no fingerprint to expect yet: nothing passes.
    let pending = DtlsParams {
        role: DtlsRole::Server,
        peer: None,
    };
    assert_eq!(dtls_in(&actions, Side::B), Some(pending));
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVPF", "active");
    let (reply, actions) = relay.send(answer(&bob));
    let to_alice = sdp_of(&reply);
    let pa = port(&to_alice);
    assert_eq!(
        to_alice,
        format!(
            "v=0\r\n\
             o=bob 1 1 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             t=0 0\r\n\
             m=audio {pa} RTP/AVP 111\r\n\
             c=IN IP4 203.0.113.1\r\n\
             a=rtpmap:111 opus/48000/2\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n",
            pa + 1
        )
    );
    // Bob is active: the relay is the server and expects Bob's certificate.
    let server = DtlsParams {
        role: DtlsRole::Server,
        peer: Some(fp("bob")),
    };
    assert_eq!(dtls_in(&actions, Side::B), Some(server));
    assert_eq!(dtls_in(&actions, Side::A), None);
}

#[test]
fn a_passive_answerer_makes_the_relay_the_client() {
    let mut relay = Relay::new(Some(relay_fp()));
    relay.send(offer(
        &plain_party("alice", 4000),
        &[("transport-protocol", "UDP/TLS/RTP/SAVP")],
    ));
    let bob = dtls_party("bob", 5000, "UDP/TLS/RTP/SAVP", "passive");
    let (reply, actions) = relay.send(answer(&bob));
    sdp_of(&reply);
    assert_eq!(
        dtls_in(&actions, Side::B),
        Some(DtlsParams {
            role: DtlsRole::Client,
            peer: Some(fp("bob")),
        })
    );
}

#[test]
fn dtls_offerer_and_sdes_answerer_and_dtls_passive() {
    let mut relay = Relay::new(Some(relay_fp()));
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
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let bob = format!(
        "v=0\r\no=bob 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
         m=audio 5000 RTP/SAVP 111\r\na=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    );
    let (reply, actions) = relay.send(answer(&bob));
    let to_alice = sdp_of(&reply);
    let pa = port(&to_alice);
    assert!(
        to_alice.ends_with(&format!(
            "m=audio {pa} UDP/TLS/RTP/SAVP 111\r\n\
             c=IN IP4 203.0.113.1\r\n\
             a=sendrecv\r\n\
             a=rtcp:{pa}\r\n\
             a=rtcp-mux\r\n\
             a=setup:passive\r\n\
             a=fingerprint:{}\r\n",
            relay_fp().sdp_value()
        )),
        "{to_alice}"
    );
    // `DTLS=passive`: the relay waits for Alice's ClientHello; Bob's leg is SDES.
    assert_eq!(
        dtls_in(&actions, Side::A),
        Some(DtlsParams {
            role: DtlsRole::Server,
            peer: Some(fp("alice")),
        })
    );
    assert!(actions.iter().any(|a| matches!(a,
        MediaAction::Update { side: Side::B, flags, .. } if flags.srtp.is_some() && flags.dtls.is_none())));
}

#[test]
fn sdes_offerer_and_dtls_answerer() {
    let mut relay = Relay::new(Some(relay_fp()));
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let alice = format!(
        "v=0\r\no=alice 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 RTP/SAVPF 111\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    );
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
        Some(DtlsParams {
            role: DtlsRole::Client,
            peer: Some(fp("bob")),
        })
    );
}

#[test]
fn dtls_on_both_sides_is_passed_through_untouched() {
    let mut relay = Relay::new(Some(relay_fp()));
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
    let mut relay = Relay::new(Some(relay_fp()));
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
    let client = DtlsParams {
        role: DtlsRole::Client,
        peer: Some(fp("alice")),
    };
    assert_eq!(dtls_in(&actions, Side::A), Some(client));
    // A new certificate (say, the call moved to another device or relay).
    let moved = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass")
        .replace(&fp("alice").sdp_value(), &fp("alice's new").sdp_value());
    let (_, actions) = relay.send(offer(&moved, &[("to-tag", "bob")]));
    let new = dtls_in(&actions, Side::A).unwrap();
    assert_eq!(new.peer, Some(fp("alice's new")));
    let (reply, actions) = relay.send(answer(&plain_party("bob", 5000)));
    assert!(sdp_of(&reply).contains("a=setup:active\r\n"));
    assert_eq!(
        dtls_in(&actions, Side::A),
        Some(DtlsParams {
            role: DtlsRole::Client,
            peer: Some(fp("alice's new")),
        })
    );
}

#[test]
fn what_cannot_be_honoured_is_refused_with_a_reason() {
    let mut relay = Relay::new(Some(relay_fp()));
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
    let mut bare = Relay::new(None);
    let alice = dtls_party("alice", 4000, "UDP/TLS/RTP/SAVPF", "actpass");
    let reply = bare
        .send(offer(&alice, &[("transport-protocol", "RTP/AVP")]))
        .0;
    assert!(error_of(&reply).contains("not supported"), "{reply:?}");
}
