//! SDES-SRTP (RFC 4568) through the control plane: exact SDPs for plain↔SDES in both
//! directions and SDES↔SDES, the keys the data plane is given for each leg, re-keying in a
//! re-offer, the protocol change in an `answer` (as OpenSIPS sends it), and the refusals.
//!
//! The relay's own keys are random: an expected SDP writes them as rtpengine's test
//! placeholders (`CRYPTO128` = 40 base64 characters of AES-128 key and salt, `CRYPTO128S` 38 for
//! AEAD-128, `CRYPTO256` 62, `CRYPTO256S` 59), and [`masked`] returns the keys themselves so
//! the test can check that the data plane encrypts with exactly the key the party was given.

use std::collections::HashSet;

use anchorage_ng::Value;
use anchorage_relay::{MediaPair, Side, SrtpKeys, SrtpSuite};
use anchorage_relay_control::sdes::base64_encode;
use anchorage_relay_control::MediaAction;

mod support;

use support::{answer, audio_port as port, error_of, sdp_of, text};

/// A relay without DTLS.
fn new_relay() -> support::Relay {
    support::Relay::with(support::config(None), 11)
}

fn offer(from: &str, to: Option<&str>, sdp: &str) -> Vec<(&'static str, Value)> {
    let mut entries = vec![
        ("command", text("offer")),
        ("call-id", text("call-1")),
        ("from-tag", text(from)),
        ("sdp", text(sdp)),
    ];
    if let Some(to) = to {
        entries.push(("to-tag", text(to)));
    }
    entries
}

fn with(
    mut entries: Vec<(&'static str, Value)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, Value)> {
    entries.push((key, text(value)));
    entries
}

/// The SDP with every `inline:` key replaced by its placeholder, and the keys (decoded) in
/// order.
fn masked(sdp: &str) -> (String, Vec<Vec<u8>>) {
    let mut keys = Vec::new();
    let mut out = String::new();
    let mut rest = sdp;
    while let Some(at) = rest.find("inline:") {
        let (before, after) = rest.split_at(at + "inline:".len());
        out.push_str(before);
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
            .unwrap_or(after.len());
        let key = &after[..end];
        out.push_str(match key.trim_end_matches('=').len() {
            40 => "CRYPTO128",
            38 => "CRYPTO128S",
            62 => "CRYPTO256",
            59 => "CRYPTO256S",
            other => panic!("an inline key of {other} characters: {key}"),
        });
        keys.push(anchorage_relay_control::sdes::base64_decode(key).expect("base64"));
        rest = &after[end..];
    }
    out.push_str(rest);
    (out, keys)
}

/// 30 bytes of AES-128 key and salt, all `byte`, in base64.
fn key128(byte: u8) -> String {
    base64_encode(&[byte; 30], false)
}

const ALICE_PLAIN: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

const BOB_PLAIN: &str = "v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 5000 RTP/AVP 0\r\n";

/// Alice offering SDES: a line with an MKI the relay cannot honour, then two usable ones.
fn alice_sdes(key: &str) -> String {
    format!(
        "v=0\r\n\
         o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
         s=-\r\n\
         c=IN IP4 192.0.2.10\r\n\
         t=0 0\r\n\
         m=audio 4000 RTP/SAVP 0\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4\r\n\
         a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{key}|2^31\r\n\
         a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n"
    )
}

fn bob_sdes(tag: u32, suite: &str, key: &str) -> String {
    format!(
        "v=0\r\n\
         o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
         s=-\r\n\
         c=IN IP4 198.51.100.20\r\n\
         t=0 0\r\n\
         m=audio 5000 RTP/SAVP 0\r\n\
         a=crypto:{tag} {suite} inline:{key}\r\n"
    )
}

/// Every suite the relay offers to a plain party made SDES, tags 1..6, rtpengine's order.
const OFFERED: &str = "a=crypto:1 AEAD_AES_256_GCM inline:CRYPTO256S\r\n\
a=crypto:2 AEAD_AES_128_GCM inline:CRYPTO128S\r\n\
a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:CRYPTO256\r\n\
a=crypto:4 AES_256_CM_HMAC_SHA1_32 inline:CRYPTO256\r\n\
a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:CRYPTO128\r\n\
a=crypto:6 AES_CM_128_HMAC_SHA1_32 inline:CRYPTO128\r\n";

/// The keys the data plane was given for `side` of the first stream.
fn keys_in(actions: &[MediaAction], side: Side) -> Option<SrtpKeys> {
    support::leg_flags(actions, side).srtp
}

fn pairs_of(actions: &[MediaAction]) -> Vec<MediaPair> {
    match actions.first() {
        Some(MediaAction::Add { pairs, .. }) => pairs.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_offerer_and_sdes_answerer_with_the_protocol_in_the_offer() {
    let mut relay = new_relay();
    let (reply, actions) = relay.send(with(
        offer("alice", None, ALICE_PLAIN),
        "transport-protocol",
        "RTP/SAVP",
    ));
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob);
    let (text, offered_keys) = masked(&to_bob);
    assert_eq!(
        text,
        format!(
            "v=0\r\n\
             o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/SAVP 0 101\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             {OFFERED}",
            p + 1
        )
    );
    assert_eq!(
        offered_keys.iter().collect::<HashSet<_>>().len(),
        6,
        "a key per suite"
    );
    // Alice stays plain; towards Bob the relay encrypts with its first suite until he answers.
    assert_eq!(keys_in(&actions, Side::A), None);
    let bob = keys_in(&actions, Side::B).expect("Bob's leg is SRTP");
    assert_eq!(bob.inbound, None);
    let out = bob.outbound.unwrap();
    assert_eq!(out.suite, SrtpSuite::AeadAes256Gcm);
    assert_eq!(out.master.as_bytes(), &offered_keys[0][..]);

    // Bob accepts tag 5 with his own key.
    let (reply, actions) = relay.send(answer(&bob_sdes(
        5,
        "AES_CM_128_HMAC_SHA1_80",
        &key128(0xb0),
    )));
    let to_alice = sdp_of(&reply);
    let p = port(&to_alice);
    assert_eq!(
        to_alice,
        format!(
            "v=0\r\n\
             o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n",
            p + 1
        )
    );
    bob_keyed_on_tag_5(&actions, 0xb0, &offered_keys);
}

/// Bob's leg is SRTP on AES_CM_128_HMAC_SHA1_80: his key (30 bytes of `bob_key`) decrypts,
/// the relay's key offered under tag 5 (`offered[4]`) encrypts; Alice's leg is plain.
fn bob_keyed_on_tag_5(actions: &[MediaAction], bob_key: u8, offered: &[Vec<u8>]) {
    let bob = keys_in(actions, Side::B).expect("Bob's leg is SRTP");
    let inbound = bob.inbound.unwrap();
    assert_eq!(inbound.suite, SrtpSuite::AesCm128HmacSha1_80);
    assert_eq!(inbound.master.as_bytes(), &[bob_key; 30]);
    let outbound = bob.outbound.unwrap();
    assert_eq!(outbound.suite, SrtpSuite::AesCm128HmacSha1_80);
    assert_eq!(
        outbound.master.as_bytes(),
        &offered[4][..],
        "the key written under tag 5"
    );
    assert_eq!(keys_in(actions, Side::A), None);
}

#[test]
fn sdes_offerer_and_plain_answerer_with_the_protocol_in_the_offer() {
    let mut relay = new_relay();
    let (reply, actions) = relay.send(with(
        offer("alice", None, &alice_sdes(&key128(0xa1))),
        "transport-protocol",
        "RTP/AVP",
    ));
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob);
    assert_eq!(
        to_bob,
        format!(
            "v=0\r\n\
             o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n",
            p + 1
        )
    );
    // Alice's first usable line is tag 2 (tag 1 has an MKI), with its lifetime.
    let alice = keys_in(&actions, Side::A).unwrap();
    let inbound = alice.inbound.unwrap();
    assert_eq!(inbound.suite, SrtpSuite::AesCm128HmacSha1_32);
    assert_eq!(inbound.master.as_bytes(), &[0xa1; 30]);
    assert_eq!(inbound.lifetime, Some(1 << 31));
    assert_eq!(keys_in(&actions, Side::B), None);

    let (reply, actions) = relay.send(answer(BOB_PLAIN));
    let to_alice = sdp_of(&reply);
    let p = port(&to_alice);
    let (text, keys) = masked(&to_alice);
    assert_eq!(
        text,
        format!(
            "v=0\r\n\
             o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/SAVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:CRYPTO128\r\n",
            p + 1
        )
    );
    let alice = keys_in(&actions, Side::A).unwrap();
    assert_eq!(alice.outbound.unwrap().master.as_bytes(), &keys[0][..]);
    assert_eq!(
        alice.outbound.unwrap().suite,
        SrtpSuite::AesCm128HmacSha1_32
    );
    assert_ne!(keys[0], vec![0xa1; 30]);
    assert_eq!(keys_in(&actions, Side::B), None);
}

#[test]
fn sdes_on_both_sides_gets_the_relays_keys_on_each() {
    let mut relay = new_relay();
    let (reply, actions) = relay.send(offer("alice", None, &alice_sdes(&key128(0xa1))));
    let to_bob = sdp_of(&reply);
    let p = port(&to_bob);
    let (text, offered) = masked(&to_bob);
    // The offerer's usable suites first, with its tags; then the others.
    assert_eq!(
        text,
        format!(
            "v=0\r\n\
             o=alice 2890844526 2890844527 IN IP4 192.0.2.10\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/SAVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:CRYPTO128\r\n\
             a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:CRYPTO128\r\n\
             a=crypto:4 AEAD_AES_256_GCM inline:CRYPTO256S\r\n\
             a=crypto:5 AEAD_AES_128_GCM inline:CRYPTO128S\r\n\
             a=crypto:6 AES_256_CM_HMAC_SHA1_80 inline:CRYPTO256\r\n\
             a=crypto:7 AES_256_CM_HMAC_SHA1_32 inline:CRYPTO256\r\n",
            p + 1
        )
    );
    assert!(offered.iter().all(|k| k[..] != [0xa1; 30][..]), "new keys");
    assert_eq!(
        keys_in(&actions, Side::B).unwrap().outbound.unwrap().suite,
        SrtpSuite::AesCm128HmacSha1_32
    );
    let (reply, actions) = relay.send(answer(&bob_sdes(
        3,
        "AES_CM_128_HMAC_SHA1_80",
        &key128(0xb0),
    )));
    let (text, answered) = masked(&sdp_of(&reply));
    assert!(
        text.ends_with("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:CRYPTO128\r\n"),
        "{text}"
    );
    let alice = keys_in(&actions, Side::A).unwrap();
    let bob = keys_in(&actions, Side::B).unwrap();
    assert_eq!(alice.inbound.unwrap().master.as_bytes(), &[0xa1; 30]);
    assert_eq!(alice.outbound.unwrap().master.as_bytes(), &answered[0][..]);
    assert_eq!(bob.inbound.unwrap().master.as_bytes(), &[0xb0; 30]);
    assert_eq!(bob.outbound.unwrap().master.as_bytes(), &offered[1][..]);
    assert_eq!(bob.outbound.unwrap().suite, SrtpSuite::AesCm128HmacSha1_80);
    let four: HashSet<Vec<u8>> = [alice, bob]
        .iter()
        .flat_map(|k| [k.inbound.unwrap(), k.outbound.unwrap()])
        .map(|k| k.master.as_bytes().to_vec())
        .collect();
    assert_eq!(
        four.len(),
        4,
        "a different key in each direction of each leg"
    );
}

#[test]
fn a_reoffer_with_a_new_key_rekeys_that_leg_and_keeps_the_relays_keys() {
    let mut relay = new_relay();
    let first = with(
        offer("alice", None, &alice_sdes(&key128(0xa1))),
        "transport-protocol",
        "RTP/AVP",
    );
    sdp_of(&relay.send(first).0);
    let (reply, _) = relay.send(answer(BOB_PLAIN));
    let (_, before) = masked(&sdp_of(&reply));
    // Alice re-offers the same suites with a new key; the relay's answer to her keeps its key.
    let reoffer = with(
        offer("alice", Some("bob"), &alice_sdes(&key128(0xa2))),
        "transport-protocol",
        "RTP/AVP",
    );
    let (reply, actions) = relay.send(reoffer);
    sdp_of(&reply);
    let alice = keys_in(&actions, Side::A).unwrap();
    assert_eq!(alice.inbound.unwrap().master.as_bytes(), &[0xa2; 30]);
    assert_eq!(alice.outbound.unwrap().master.as_bytes(), &before[0][..]);
    let (reply, _) = relay.send(answer(BOB_PLAIN));
    let (_, after) = masked(&sdp_of(&reply));
    assert_eq!(after, before);
}

#[test]
fn the_protocol_change_in_the_answer_gives_the_offerer_an_encrypted_leg() {
    // OpenSIPS asks for the encrypted leg in the answer: the offerer's SDP was plain, the
    // relay offers it every suite in the answer, and its next SDP brings its key.
    let mut relay = new_relay();
    sdp_of(&relay.send(offer("alice", None, ALICE_PLAIN)).0);
    let (reply, actions) = relay.send(with(answer(BOB_PLAIN), "transport-protocol", "RTP/SAVP"));
    let to_alice = sdp_of(&reply);
    let p = port(&to_alice);
    let (text, offered) = masked(&to_alice);
    assert_eq!(
        text,
        format!(
            "v=0\r\n\
             o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n\
             s=-\r\n\
             c=IN IP4 203.0.113.1\r\n\
             t=0 0\r\n\
             m=audio {p} RTP/SAVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=sendrecv\r\n\
             a=rtcp:{}\r\n\
             {OFFERED}",
            p + 1
        )
    );
    let alice = keys_in(&actions, Side::A).unwrap();
    assert_eq!(alice.inbound, None, "Alice's key is not known yet");
    assert_eq!(alice.outbound.unwrap().master.as_bytes(), &offered[0][..]);
    // Alice's re-INVITE answer arrives as her re-offer, accepting tag 6.
    let alice_accepts = format!(
        "v=0\r\n\
         o=alice 2890844526 2890844528 IN IP4 192.0.2.10\r\n\
         s=-\r\n\
         c=IN IP4 192.0.2.10\r\n\
         t=0 0\r\n\
         m=audio 4000 RTP/SAVP 0 101\r\n\
         a=crypto:6 AES_CM_128_HMAC_SHA1_32 inline:{}\r\n",
        key128(0xa6)
    );
    let (reply, actions) = relay.send(offer("alice", Some("bob"), &alice_accepts));
    let to_bob = sdp_of(&reply);
    assert!(
        to_bob.contains(" RTP/AVP 0 101\r\n"),
        "Bob stays plain: {to_bob}"
    );
    assert!(!to_bob.contains("a=crypto"), "{to_bob}");
    let alice = keys_in(&actions, Side::A).unwrap();
    assert_eq!(alice.inbound.unwrap().master.as_bytes(), &[0xa6; 30]);
    let outbound = alice.outbound.unwrap();
    assert_eq!(outbound.suite, SrtpSuite::AesCm128HmacSha1_32);
    assert_eq!(outbound.master.as_bytes(), &offered[5][..], "tag 6's key");
    // The answer back to Alice is her one line, with the key she already has.
    let (reply, _) = relay.send(answer(BOB_PLAIN));
    let (text, keys) = masked(&sdp_of(&reply));
    assert!(
        text.ends_with("a=crypto:6 AES_CM_128_HMAC_SHA1_32 inline:CRYPTO128\r\n"),
        "{text}"
    );
    assert_eq!(keys, vec![offered[5].clone()]);
}

#[test]
fn keys_the_relay_cannot_honour_are_refused_with_a_reason() {
    let mut relay = new_relay();
    let mki_only = format!(
        "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 RTP/SAVP 0\r\n\
         a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4\r\n",
        key128(1)
    );
    let reason = error_of(&relay.send(offer("alice", None, &mki_only)).0);
    assert_eq!(
        reason,
        "SDES: no usable a=crypto line in media section 1 (RTP/SAVP): AES_CM_128_HMAC_SHA1_80 \
         with an MKI (1:4) is not supported by this relay"
    );
    let f8 = format!(
        "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 RTP/SAVP 0\r\n\
         a=crypto:1 F8_128_HMAC_SHA1_80 inline:{}\r\n",
        key128(1)
    );
    let reason = error_of(&relay.send(offer("alice", None, &f8)).0);
    assert!(
        reason.contains("F8_128_HMAC_SHA1_80 is not supported"),
        "{reason}"
    );
    assert_eq!(relay.controller.call_count(), 0, "nothing kept");
    // SDES=off leaves an SRTP leg without keys.
    let off = with(
        with(
            offer("alice", None, ALICE_PLAIN),
            "transport-protocol",
            "RTP/SAVP",
        ),
        "SDES",
        "off",
    );
    assert!(error_of(&relay.send(off).0).starts_with("SDES=off"));
    // DTLS-SRTP is passed through untouched, and converts to nothing.
    let dtls = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n\
         a=setup:actpass\r\n\
         a=fingerprint:sha-256 AB:CD\r\n";
    let converted = with(offer("alice", None, dtls), "transport-protocol", "RTP/AVP");
    assert!(error_of(&relay.send(converted).0).contains("does not terminate DTLS-SRTP"));
    let through = sdp_of(&relay.send(offer("alice", None, dtls)).0);
    assert!(through.contains("UDP/TLS/RTP/SAVPF 0\r\n"), "{through}");
    assert!(
        through.contains("a=fingerprint:sha-256 AB:CD\r\n"),
        "{through}"
    );
    assert!(through.contains("a=setup:actpass\r\n"), "{through}");
}

#[test]
fn a_move_that_makes_the_callee_sdes_takes_its_real_answer_after_the_replayed_one() {
    // A proxy moving a call to this relay with SRTP towards the callee: the offer asks for
    // RTP/SAVP, the answer replays the callee's previous (plain) SDP, and the callee's real
    // answer to the re-INVITE, with its key, follows as a second answer.
    let mut relay = new_relay();
    let (reply, _) = relay.send(with(
        offer("alice", None, ALICE_PLAIN),
        "transport-protocol",
        "RTP/SAVP",
    ));
    let (_, offered) = masked(&sdp_of(&reply));
    let (reply, actions) = relay.send(answer(BOB_PLAIN));
    assert!(!sdp_of(&reply).contains("a=crypto"));
    assert_eq!(keys_in(&actions, Side::B), None, "plain until Bob answers");
    let (reply, actions) = relay.send(answer(&bob_sdes(
        5,
        "AES_CM_128_HMAC_SHA1_80",
        &key128(0xb5),
    )));
    assert!(
        sdp_of(&reply).contains(" RTP/AVP 0\r\n"),
        "Alice stays plain"
    );
    bob_keyed_on_tag_5(&actions, 0xb5, &offered);
}

#[test]
fn a_move_back_to_plain_takes_the_replayed_sdes_answer_as_plain() {
    // The move back: the callee is offered plain RTP, and the answer replays its previous SDP,
    // which was SDES: the callee is plain (what it is offered), its a=crypto ignored.
    let mut relay = new_relay();
    sdp_of(
        &relay
            .send(with(
                offer("alice", None, ALICE_PLAIN),
                "transport-protocol",
                "RTP/AVP",
            ))
            .0,
    );
    let (reply, actions) = relay.send(answer(&bob_sdes(1, "AES_CM_128_HMAC_SHA1_80", &key128(2))));
    let to_alice = sdp_of(&reply);
    assert!(
        to_alice.contains(" RTP/AVP 0\r\n") && !to_alice.contains("a=crypto"),
        "{to_alice}"
    );
    assert_eq!(keys_in(&actions, Side::B), None, "Bob is plain");
    assert_eq!(keys_in(&actions, Side::A), None);
    let (_, actions) = relay.send(answer(BOB_PLAIN));
    assert_eq!(keys_in(&actions, Side::B), None);
}

#[test]
fn sdes_options_shape_the_offer() {
    let mut relay = new_relay();
    let request = with(
        with(offer("alice", None, ALICE_PLAIN), "transport-protocol", "RTP/SAVPF"),
        "rtpp-flags",
        "SDES-only-AES_CM_128_HMAC_SHA1_80 SDES-only-AES_CM_128_HMAC_SHA1_32 SDES-pad SDES-lifetime",
    );
    let to_bob = sdp_of(&relay.send(request).0);
    let lines: Vec<&str> = to_bob
        .lines()
        .filter(|l| l.starts_with("a=crypto"))
        .collect();
    assert_eq!(lines.len(), 2, "{to_bob}");
    assert!(to_bob.contains(" RTP/SAVPF 0 101\r\n"), "{to_bob}");
    assert!(lines[0].starts_with("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"));
    assert!(lines[0].ends_with("|2^31"), "{}", lines[0]);
    // 30 bytes are 40 characters either way; padding shows on AEAD keys only.
    let inline = lines[1].split("inline:").nth(1).unwrap();
    assert_eq!(inline.len(), 40 + "|2^31".len());
}

#[test]
fn query_reports_the_suite_and_the_srtp_counters_per_leg() {
    let mut relay = new_relay();
    let (_, actions) = relay.send(with(
        offer("alice", None, ALICE_PLAIN),
        "transport-protocol",
        "RTP/SAVP",
    ));
    let key = match actions.first() {
        Some(MediaAction::Add { key, .. }) => *key,
        other => panic!("{other:?}"),
    };
    relay.controller.observe(key, pairs_of(&actions));
    let (reply, _) = relay.send(vec![
        ("command", text("query")),
        ("call-id", text("call-1")),
    ]);
    let tags = reply.tags.expect("tags");
    let medias = |tag: usize| -> Vec<(String, Value)> {
        let Some(Value::List(medias)) = tags[tag]
            .1
            .other
            .iter()
            .find(|(k, _)| k == "medias")
            .map(|(_, v)| v.clone())
        else {
            panic!("no medias")
        };
        match &medias[0] {
            Value::Dict(entries) => entries.clone(),
            other => panic!("{other:?}"),
        }
    };
    let get = |entries: &[(String, Value)], key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let alice = medias(0);
    assert_eq!(get(&alice, "crypto suite"), None);
    assert_eq!(get(&alice, "SRTP"), None);
    let bob = medias(1);
    assert_eq!(
        get(&bob, "crypto suite"),
        Some(Value::text("AEAD_AES_256_GCM"))
    );
    let Some(Value::Dict(srtp)) = get(&bob, "SRTP") else {
        panic!("{bob:?}")
    };
    let names: Vec<&str> = srtp.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "decrypted packets",
            "decrypted bytes",
            "encrypted packets",
            "encrypted bytes",
            "authentication failures",
            "replayed",
            "other failures"
        ]
    );
    assert_eq!(
        get(&bob, "flags"),
        Some(Value::List(vec![Value::text("RTP"), Value::text("SDES")]))
    );
}
