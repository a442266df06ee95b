//! DTLS-SRTP through `anchorage relay` with a real WebRTC peer: aiortc's ICE, DTLS (OpenSSL)
//! and SRTP (libsrtp) transports (`tests/dtls_peer.py`, in the `.venv` that `scripts/test`
//! creates) on one side, a plain RTP socket on the other. The peer completes ICE-lite checks
//! and the DTLS handshake against the relay, and RTP crosses both ways with its bytes intact;
//! a wrong fingerprint fails the handshake and is counted; garbage, stray DTLS and truncated
//! SRTP on the relay's port are dropped and counted while the call goes on.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdin, ChildStdout};
use std::time::Duration;

use anchorage_ng::{Reply, Value};
use anchorage_testkit::media::{hex, unhex};
use anchorage_testkit::{
    free_udp_port, http, ng_request, ng_sdp as sdp_of, AnchorageRelay, LOCALHOST,
};

/// The DTLS peer (`tests/dtls_peer.py`), stopped on drop.
struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    offer: String,
}

const HOW: &str = "aiortc (PyPI) is needed in .venv: run scripts/test, which creates it, or \
                   `python3 -m venv .venv && .venv/bin/pip install aiortc pylibsrtp`";

impl Peer {
    fn start() -> Peer {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let (child, input, output) =
            anchorage_testkit::srtp::venv_python(root, "tests/dtls_peer.py", HOW);
        let mut peer = Peer {
            child,
            input,
            output,
            offer: String::new(),
        };
        let first = peer.read();
        let offer = first
            .strip_prefix("offer ")
            .unwrap_or_else(|| panic!("{first:?}. {HOW}"));
        peer.offer = String::from_utf8(base64_decode(offer)).expect("SDP text");
        peer
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).expect("the peer's answer");
        line.trim_end().to_owned()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").expect("write to the peer");
        self.read()
    }

    fn answer(&mut self, sdp: &str) -> String {
        self.ask(&format!("answer {}", base64_encode(sdp.as_bytes())))
    }

    fn send(&mut self, rtp: &[u8]) {
        assert_eq!(self.ask(&format!("send {}", hex(rtp))), "ok");
    }

    fn recv(&mut self, wait_ms: u64) -> Option<Vec<u8>> {
        let line = self.ask(&format!("recv {wait_ms}"));
        line.strip_prefix("rtp ").map(unhex)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "quit");
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    anchorage_relay_control::sdes::base64_encode(bytes, true)
}

fn base64_decode(text: &str) -> Vec<u8> {
    anchorage_relay_control::sdes::base64_decode(text).expect("base64")
}

/// One ng request to the relay, answered within 2 s.
fn ng(relay: &AnchorageRelay, entries: &[(&str, &str)]) -> Reply {
    ng_request(relay.ng, entries)
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("an m= port")
}

/// An RTP packet (testkit's header) carrying `payload`.
fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = anchorage_testkit::media::rtp(seq, 0x5eed_1e55);
    packet.truncate(12);
    packet.extend_from_slice(payload);
    packet
}

/// A counter of one leg in `query`: `tags.<tag>.medias[0].<section>.<name>`.
fn leg_counter(reply: &Reply, tag: &str, section: &str, name: &str) -> i64 {
    let info = &reply
        .tags
        .as_ref()
        .and_then(|t| t.iter().find(|(k, _)| k == tag))
        .unwrap_or_else(|| panic!("no tag {tag} in {reply:?}"))
        .1;
    let medias = info
        .other
        .iter()
        .find(|(k, _)| k == "medias")
        .map(|(_, v)| v);
    let Some(Value::List(medias)) = medias else {
        panic!("no medias in {info:?}")
    };
    let Some(Value::Dict(media)) = medias.first() else {
        panic!("no media in {medias:?}")
    };
    let Some((_, Value::Dict(counters))) = media.iter().find(|(k, _)| k == section) else {
        panic!("no {section} in {media:?}")
    };
    match counters.iter().find(|(k, _)| k == name) {
        Some((_, Value::Int(v))) => *v,
        other => panic!("{section}.{name}: {other:?}"),
    }
}

fn metric(metrics: SocketAddr, name: &str) -> u64 {
    let (status, body) = http(metrics, "GET", "/metrics", "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
}

/// A relay with `/metrics`, the peer's offer made plain for B, B's plain answer (with
/// `reanchor` when it is a move's replay); returns the relay, its metrics address, B's socket,
/// the relay's port for B, and the SDP for the peer.
fn call(peer_offer: &str, reanchor: bool) -> (AnchorageRelay, SocketAddr, UdpSocket, u16, String) {
    let metrics = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let relay = AnchorageRelay::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &["--metrics", &metrics.to_string()],
    );
    let to_b = sdp_of(&ng(
        &relay,
        &[
            ("command", "offer"),
            ("call-id", "dtls-call"),
            ("from-tag", "webrtc"),
            ("sdp", peer_offer),
            ("ICE", "force"),
            ("transport-protocol", "RTP/AVP"),
        ],
    ));
    assert!(to_b.contains(" RTP/AVP 0\r\n"), "{to_b}");
    assert!(!to_b.contains("a=fingerprint") && !to_b.contains("a=crypto"));
    let b = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let b_port = b.local_addr().unwrap().port();
    let b_sdp = format!(
        "v=0\r\no=plain 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {b_port} RTP/AVP 0\r\na=sendrecv\r\n"
    );
    let mut answer = vec![
        ("command", "answer"),
        ("call-id", "dtls-call"),
        ("from-tag", "webrtc"),
        ("to-tag", "plain"),
        ("sdp", b_sdp.as_str()),
        ("ICE", "force"),
    ];
    if reanchor {
        answer.push(("flags", "reanchor"));
    }
    let to_peer = sdp_of(&ng(&relay, &answer));
    // The relay answers the peer's offer as the client; a move's replay makes it a new offer.
    let setup = if reanchor {
        "a=setup:actpass"
    } else {
        "a=setup:active"
    };
    for line in [
        setup,
        "a=fingerprint:sha-256 ",
        "a=ice-ufrag:",
        "a=ice-lite",
    ] {
        assert!(to_peer.contains(line), "{line} in {to_peer}");
    }
    (relay, metrics, b, media_port(&to_b), to_peer)
}

fn relay_to_b(b: &UdpSocket) -> Option<Vec<u8>> {
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    b.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn a_webrtc_peer_completes_ice_and_dtls_and_exchanges_exact_rtp_with_a_plain_party() {
    let mut peer = Peer::start();
    let offer = peer.offer.clone();
    let (relay, metrics, b, for_b, to_peer) = call(&offer, false);
    let connected = peer.answer(&to_peer);
    assert_eq!(connected, "connected", "relay log:\n{}", relay.daemon.log());
    // Peer → plain party: decrypted by the relay, the RTP bytes exactly as the peer made them.
    let mut got_one = false;
    for seq in 1..=5u16 {
        let packet = rtp(seq, &[seq as u8; 160]);
        peer.send(&packet);
        let arrived = relay_to_b(&b).expect("RTP at the plain party");
        assert_eq!(arrived, packet);
        got_one = true;
    }
    assert!(got_one);
    // Plain party → peer: encrypted by the relay, decrypted by libsrtp in the peer.
    for seq in 100..105u16 {
        let packet = rtp(seq, b"from the plain side, byte for byte");
        b.send_to(&packet, (LOCALHOST, for_b)).unwrap();
        assert_eq!(peer.recv(2000), Some(packet));
    }
    // Bad input on the peer's relay port, from elsewhere: garbage, a stray DTLS record, a
    // truncated SRTP packet. Each is dropped and counted; the call goes on.
    let for_peer = media_port(&to_peer);
    let stranger = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let garbage: [&[u8]; 4] = [
        &[0xff; 40],
        &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
        &[0x80, 0, 0, 9, 0, 0, 0, 0],
        &rtp(7, &[0; 160]),
    ];
    for datagram in garbage {
        stranger.send_to(datagram, (LOCALHOST, for_peer)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(b.recv_from(&mut buf).is_err(), "nothing bad reaches B");
    let packet = rtp(6, b"still here");
    peer.send(&packet);
    assert_eq!(relay_to_b(&b), Some(packet));
    let packet = rtp(200, b"and back");
    b.send_to(&packet, (LOCALHOST, for_b)).unwrap();
    assert_eq!(peer.recv(2000), Some(packet));
    // Counted: the handshake, what was decrypted and encrypted, what was dropped.
    std::thread::sleep(Duration::from_millis(1200));
    let query = ng(&relay, &[("command", "query"), ("call-id", "dtls-call")]);
    assert_eq!(leg_counter(&query, "webrtc", "DTLS", "handshakes"), 1);
    assert_eq!(
        leg_counter(&query, "webrtc", "DTLS", "failed handshakes"),
        0
    );
    assert_eq!(leg_counter(&query, "webrtc", "DTLS", "dropped"), 1);
    assert_eq!(
        leg_counter(&query, "webrtc", "SRTP", "decrypted packets"),
        6
    );
    assert_eq!(
        leg_counter(&query, "webrtc", "SRTP", "encrypted packets"),
        6
    );
    assert!(leg_counter(&query, "webrtc", "SRTP", "authentication failures") >= 1);
    assert!(leg_counter(&query, "webrtc", "SRTP", "other failures") >= 1);
    assert_eq!(metric(metrics, "anchorage_relay_dtls_handshakes_total"), 1);
    assert_eq!(metric(metrics, "anchorage_relay_dtls_dropped_total"), 1);
    assert_eq!(
        metric(metrics, "anchorage_relay_srtp_decrypted_packets_total"),
        6
    );
    // The same by kind of leg: all of it on a DTLS-keyed leg, none on SDES.
    let by_kind = |outcome: &str| {
        let (_, body) = http(metrics, "GET", "/metrics", "");
        let sum = |keying: &str| -> u64 {
            let prefix = format!("anchorage_relay_srtp_leg_packets_total{{keying=\"{keying}\",");
            let outcome = format!(",outcome=\"{outcome}\"}} ");
            body.lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| l.split_once(&outcome)?.1.parse::<u64>().ok())
                .sum()
        };
        (sum("dtls"), sum("sdes"))
    };
    assert_eq!(by_kind("decrypted"), (6, 0));
    assert_eq!(by_kind("encrypted"), (6, 0));
}

#[test]
fn a_wrong_fingerprint_fails_the_handshake_and_is_counted() {
    let mut peer = Peer::start();
    // The offer carries another certificate's fingerprint than the one the peer holds.
    let offer = peer.offer.clone();
    let at = offer.find("a=fingerprint:sha-256 ").expect("a fingerprint") + 22;
    let mut wrong = offer.clone();
    let first = if &offer[at..at + 1] == "0" { "1" } else { "0" };
    wrong.replace_range(at..at + 1, first);
    let (relay, metrics, b, for_b, to_peer) = call(&wrong, false);
    let outcome = peer.answer(&to_peer);
    assert!(outcome.starts_with("failed"), "{outcome}");
    b.send_to(&rtp(1, b"x"), (LOCALHOST, for_b)).unwrap();
    assert_eq!(peer.recv(500), None, "no media without a handshake");
    std::thread::sleep(Duration::from_millis(1200));
    let query = ng(&relay, &[("command", "query"), ("call-id", "dtls-call")]);
    assert!(leg_counter(&query, "webrtc", "DTLS", "wrong fingerprint") >= 1);
    assert_eq!(leg_counter(&query, "webrtc", "DTLS", "handshakes"), 0);
    assert!(metric(metrics, "anchorage_relay_dtls_wrong_fingerprint_total") >= 1);
}

/// Sends `packet` from the peer until it arrives at the plain party `b` (the first may come
/// before the relay has the keys): what arrived, if anything did after 10 tries.
fn peer_to(peer: &mut Peer, b: &UdpSocket, packet: &[u8]) -> Option<Vec<u8>> {
    for _ in 0..10 {
        peer.send(packet);
        if let Some(arrived) = relay_to_b(b) {
            return Some(arrived);
        }
    }
    None
}

/// What a move does to a DTLS leg, as the proxy drives it: the party's last SDP replayed on
/// the new relay as the offer, the plain party's as the answer with `reanchor`, and the
/// party re-INVITEd with the new relay's SDP, which offers a new association
/// (`a=setup:actpass`, RFC 5763 §5) with the new relay's own fingerprint. The party answers
/// `role`; its answer goes to the new relay as an ng `answer` with the tags the other way
/// round (the proxy's commit), the relay takes the other role, ICE and DTLS run again, and
/// media flows both ways. The party is aiortc's transports made anew (aiortc has no ICE
/// restart).
fn a_dtls_leg_moved_to_another_relay(role: &str) {
    let mut peer = Peer::start();
    let offer = peer.offer.clone();
    let (first, _, b, _, to_peer) = call(&offer, false);
    assert_eq!(peer.answer(&to_peer), "connected", "{}", first.daemon.log());
    let packet = rtp(1, &[1; 160]);
    assert_eq!(
        peer_to(&mut peer, &b, &packet),
        Some(packet),
        "through the first relay"
    );
    let fingerprint = |sdp: &str| {
        sdp.lines()
            .find_map(|l| l.trim().strip_prefix("a=fingerprint:sha-256 "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no fingerprint in {sdp}"))
    };
    let (second, metrics, b2, for_b2, moved) = call(&offer, true);
    assert_ne!(
        fingerprint(&moved),
        fingerprint(&to_peer),
        "the new relay's own fingerprint"
    );
    drop(first);
    let line = peer.ask(&format!(
        "restart {} {role}",
        base64_encode(moved.as_bytes())
    ));
    let answer = line
        .strip_prefix("offer ")
        .map(|b| String::from_utf8(base64_decode(b)).expect("SDP text"))
        .unwrap_or_else(|| panic!("{line}"));
    assert_eq!(
        fingerprint(&answer),
        fingerprint(&offer),
        "same certificate"
    );
    assert!(answer.contains(&format!("a=setup:{role}\r\n")), "{answer}");
    let to_b2 = sdp_of(&ng(
        &second,
        &[
            ("command", "answer"),
            ("call-id", "dtls-call"),
            ("from-tag", "plain"),
            ("to-tag", "webrtc"),
            ("sdp", &answer),
        ],
    ));
    assert_eq!(media_port(&to_b2), for_b2, "the plain party's port stays");
    assert!(!to_b2.contains("a=setup"), "{to_b2}");
    assert_eq!(peer.read(), "connected", "{}", second.daemon.log());
    for seq in 2..=6u16 {
        let packet = rtp(seq, &[seq as u8; 160]);
        assert_eq!(
            peer_to(&mut peer, &b2, &packet),
            Some(packet),
            "peer -> plain party through the second relay"
        );
        let back = rtp(seq, &[0xb0; 160]);
        b2.send_to(&back, (LOCALHOST, for_b2)).unwrap();
        assert_eq!(peer.recv(2000), Some(back), "plain party -> peer");
    }
    // One handshake on the new relay (its /metrics are refreshed once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while metric(metrics, "anchorage_relay_dtls_handshakes_total") != 1 {
        assert!(std::time::Instant::now() < deadline, "no handshake counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_dtls_leg_moved_to_another_relay_answering_active_makes_it_the_server_and_media_goes_on() {
    a_dtls_leg_moved_to_another_relay("active");
}

#[test]
fn a_dtls_leg_moved_to_another_relay_answering_passive_makes_it_the_client_and_media_goes_on() {
    a_dtls_leg_moved_to_another_relay("passive");
}
