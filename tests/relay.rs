//! System tests of `anchorage relay`, built like rtpengine's own daemon tests (reference
//! `rtpengine-ng.md` §4.2): each test starts a relay node of its own on loopback, drives it
//! over ng from the test (bencode built by hand, as Kamailio sends it), checks the SDP it
//! returns against an expected text, and sends real RTP from UDP sockets standing in for the
//! two parties — A on 127.0.0.2, B on 127.0.0.3 — asserting payload, source port (the relay
//! port advertised to the receiving side: symmetric RTP) and destination.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anchorage_ng::{decode_reply, Outcome, Reply, Value};
use anchorage_testkit::{free_udp_port, Daemon, LOCALHOST};

/// Where party A's sockets live.
const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Where party B's sockets live.
const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// How long a packet may take through the relay before it counts as lost.
const ARRIVAL: Duration = Duration::from_secs(1);
/// How long to listen before deciding that nothing was forwarded.
const SILENCE: Duration = Duration::from_millis(200);

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A number unique in this test process (cookies, call-ids, port blocks).
fn unique() -> u32 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

// ---- bencode, by hand ----------------------------------------------------------------------

fn bencode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        Value::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                bencode(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(entries) => {
            out.push(b'd');
            for (key, item) in entries {
                bencode(&Value::text(key.as_str()), out);
                bencode(item, out);
            }
            out.push(b'e');
        }
    }
}

fn text(s: &str) -> Value {
    Value::text(s)
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| text(s)).collect())
}

/// A request dictionary from `(key, value)` pairs, keys in the given order.
fn dict(entries: &[(&str, Value)]) -> Value {
    Value::Dict(
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

/// `<cookie> <bencode document>`.
fn datagram(cookie: &str, request: &Value) -> Vec<u8> {
    let mut out = format!("{cookie} ").into_bytes();
    bencode(request, &mut out);
    out
}

// ---- the relay under test --------------------------------------------------------------------

/// An even port with `2 * pairs` consecutive UDP ports free on 127.0.0.1, below the kernel's
/// ephemeral range (so no other test's `bind(0)` lands in it).
fn port_block(pairs: u16) -> u16 {
    let count = 2 * pairs;
    for _ in 0..500 {
        let seed = std::process::id()
            .wrapping_mul(7919)
            .wrapping_add(unique().wrapping_mul(104_729));
        let base = 10_000 + (seed % 4_900) as u16 * 2;
        let free = (base..base + count).all(|p| UdpSocket::bind((LOCALHOST, p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {count} free UDP ports in 10000-19999");
}

/// A running `anchorage relay` and an ng client socket.
struct Relay {
    daemon: Daemon,
    ng: SocketAddr,
    client: UdpSocket,
    port_min: u16,
    port_max: u16,
}

impl Relay {
    /// A relay with `pairs` media port pairs (its own range) and `extra` arguments.
    fn start(pairs: u16, extra: &[&str]) -> Relay {
        let port_min = port_block(pairs);
        Self::start_on(port_min, port_min + 2 * pairs - 1, extra)
    }

    /// A relay on media ports `port_min..=port_max`; returns once it answers `ping`.
    fn start_on(port_min: u16, port_max: u16, extra: &[&str]) -> Relay {
        let client = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        for _ in 0..5 {
            let ng = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
            let mut command = Command::new(env!("CARGO_BIN_EXE_anchorage"));
            command
                .arg("relay")
                .args(["--listen-ng", &ng.to_string()])
                .args(["--interface", "127.0.0.1"])
                .args(["--port-min", &port_min.to_string()])
                .args(["--port-max", &port_max.to_string()])
                .args(["--num-threads", "1", "--delete-delay", "0"])
                .args(extra);
            let mut daemon = Daemon::spawn("anchorage-relay", &mut command);
            // Poll ping as rtpengine's harness does, until pong or the process exits.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(reply) = ng_request(&client, ng, &[("command", text("ping"))], 100) {
                    assert_eq!(reply.outcome, Outcome::Pong, "ping");
                    return Relay {
                        daemon,
                        ng,
                        client,
                        port_min,
                        port_max,
                    };
                }
                if !daemon.is_running() {
                    let log = daemon.log();
                    assert!(
                        log.contains("cannot bind the ng socket"),
                        "the relay exited:\n{log}"
                    );
                    break; // the ng port was taken meanwhile: another one
                }
                assert!(
                    Instant::now() < deadline,
                    "the relay does not answer ping:\n{}",
                    daemon.log()
                );
            }
        }
        panic!("the relay could not bind an ng port in 5 tries");
    }

    /// Sends a raw datagram and returns the reply datagram, if one comes within `wait`.
    fn raw(&self, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.client.send_to(datagram, self.ng).unwrap();
        self.client.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 65_536];
        match self.client.recv_from(&mut buf) {
            Ok((n, _)) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    fn try_request(&self, entries: &[(&str, Value)], wait_ms: u64) -> Option<Reply> {
        ng_request(&self.client, self.ng, entries, wait_ms)
    }

    /// Sends a request and returns the reply (which must come within 2 s).
    fn request(&self, entries: &[(&str, Value)]) -> Reply {
        self.try_request(entries, 2_000).unwrap_or_else(|| {
            panic!(
                "no reply to {:?}; relay log:\n{}",
                entries,
                self.daemon.log()
            )
        })
    }

    /// Sends a request that must succeed; returns the reply.
    fn ok(&self, entries: &[(&str, Value)]) -> Reply {
        let reply = self.request(entries);
        assert_eq!(
            reply.outcome,
            Outcome::Ok,
            "{:?} failed: {reply:?}",
            entries.first()
        );
        reply
    }

    /// The Call-IDs the relay holds.
    fn list(&self) -> Vec<String> {
        self.ok(&[("command", text("list"))])
            .calls
            .expect("list reply has calls")
    }

    /// A's offer for `call` with `options` added; returns the SDP sent to B.
    fn offer(&self, call: &CallIds, sdp: &str, options: &[(&str, Value)]) -> String {
        let mut entries = vec![
            ("command", text("offer")),
            ("call-id", text(&call.id)),
            ("from-tag", text(&call.a)),
            ("sdp", text(sdp)),
        ];
        entries.extend(options.iter().cloned());
        sdp_of(&self.ok(&entries))
    }

    /// B's answer for `call` with `options` added; returns the SDP sent to A.
    fn answer(&self, call: &CallIds, sdp: &str, options: &[(&str, Value)]) -> String {
        let mut entries = vec![
            ("command", text("answer")),
            ("call-id", text(&call.id)),
            ("from-tag", text(&call.a)),
            ("to-tag", text(&call.b)),
            ("sdp", text(sdp)),
        ];
        entries.extend(options.iter().cloned());
        sdp_of(&self.ok(&entries))
    }

    fn query(&self, call_id: &str) -> Reply {
        self.request(&[("command", text("query")), ("call-id", text(call_id))])
    }

    fn delete(&self, call_id: &str, flags: &[&str]) -> Reply {
        let mut entries = vec![("command", text("delete")), ("call-id", text(call_id))];
        if !flags.is_empty() {
            entries.push(("flags", list(flags)));
        }
        self.request(&entries)
    }

    fn in_range(&self, port: u16) -> bool {
        (self.port_min..=self.port_max).contains(&port)
    }
}

/// Sends a request from `client` to `ng` and decodes the reply to it (`None` if none came
/// within `wait_ms`).
fn ng_request(
    client: &UdpSocket,
    ng: SocketAddr,
    entries: &[(&str, Value)],
    wait_ms: u64,
) -> Option<Reply> {
    let cookie = format!("{}_{}", std::process::id(), unique());
    let sent = datagram(&cookie, &dict(entries));
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    client.send_to(&sent, ng).unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        client.set_read_timeout(Some(left)).unwrap();
        let Ok((n, _)) = client.recv_from(&mut buf) else {
            return None;
        };
        let (reply_cookie, _, reply) = decode_reply(&buf[..n])
            .unwrap_or_else(|e| panic!("undecodable reply {:?}: {e}", &buf[..n]));
        // A late reply to an earlier request is skipped.
        if reply_cookie.as_bytes() == cookie.as_bytes() {
            return Some(reply);
        }
    }
}

/// The identity of one call: Call-ID, A's tag (caller) and B's tag (callee).
#[derive(Clone)]
struct CallIds {
    id: String,
    a: String,
    b: String,
}

impl CallIds {
    fn new(name: &str) -> CallIds {
        let n = unique();
        let pid = std::process::id();
        CallIds {
            id: format!("{n}-test-callID-{name}-{pid}"),
            a: format!("{n}-test-fromtag-{name}"),
            b: format!("{n}-test-totag-{name}"),
        }
    }
}

fn sdp_of(reply: &Reply) -> String {
    let sdp = reply.sdp.as_ref().expect("the reply has an sdp");
    String::from_utf8(sdp.to_vec()).expect("UTF-8 SDP")
}

/// An SDP as a user agent at `ip:port` sends it, with bare LF line endings (as rtpengine's
/// tests send it): PCMU only, session-level `c=`, plus `extra` media attributes.
fn ua_sdp(ip: IpAddr, port: u16, version: u32, extra: &str) -> String {
    format!(
        "v=0\no=- 1545997027 {version} IN IP4 {ip}\ns=tester\nc=IN IP4 {ip}\nt=0 0\n\
         m=audio {port} RTP/AVP 0\n{extra}"
    )
}

/// The `m=` port of the first media section.
fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio port in\n{sdp}"))
}

/// The `o=` version.
fn origin_version(sdp: &str) -> u64 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("o="))
        .and_then(|o| o.split(' ').nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no o= version in\n{sdp}"))
}

// ---- media -----------------------------------------------------------------------------------

/// A party's media sockets: RTP on some port, RTCP on the next one.
struct Endpoint {
    rtp: UdpSocket,
    rtcp: UdpSocket,
}

impl Endpoint {
    fn bind(ip: IpAddr) -> Endpoint {
        for _ in 0..100 {
            let rtp = UdpSocket::bind((ip, 0)).unwrap();
            let port = rtp.local_addr().unwrap().port();
            if port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind((ip, port + 1)) {
                return Endpoint { rtp, rtcp };
            }
        }
        panic!("no two consecutive free UDP ports on {ip}");
    }

    fn port(&self) -> u16 {
        self.rtp.local_addr().unwrap().port()
    }

    fn ip(&self) -> IpAddr {
        self.rtp.local_addr().unwrap().ip()
    }
}

/// An RTP packet: PCMU, sequence number `seq`, SSRC `ssrc`, 160 bytes of payload.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n((seq % 251) as u8, 160));
    p
}

/// An RTCP sender report (packet type 200) from `ssrc`.
fn rtcp(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 200, 0x00, 0x06];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x11; 20]);
    p
}

/// The next datagram on `socket` within [`ARRIVAL`], with its source.
fn receive(socket: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    socket.set_read_timeout(Some(ARRIVAL)).unwrap();
    let mut buf = [0u8; 2048];
    socket
        .recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

/// Sends `packet` from `from` to the relay port `to`, and asserts it arrives at `at`
/// unchanged, from the relay port `source`.
fn relays(from: &UdpSocket, packet: &[u8], to: u16, at: &UdpSocket, source: u16) {
    from.send_to(packet, (LOCALHOST, to)).unwrap();
    let (got, sender) = receive(at).unwrap_or_else(|| {
        panic!(
            "nothing from {} via relay port {to} arrived at {}",
            from.local_addr().unwrap(),
            at.local_addr().unwrap()
        )
    });
    assert_eq!(got, packet, "payload changed on the way through the relay");
    assert_eq!(
        sender,
        SocketAddr::new(LOCALHOST, source),
        "the packet must come from the relay port advertised to the receiver"
    );
}

/// Asserts that nothing arrives at `socket` within [`SILENCE`].
fn silent(socket: &UdpSocket, what: &str) {
    socket.set_read_timeout(Some(SILENCE)).unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((n, from)) = socket.recv_from(&mut buf) {
        panic!("{what}: {n} bytes arrived from {from}");
    }
}

/// A's endpoint, a second one on A's address (another source for A: a NAT's, a new network's),
/// and B's.
fn a_twice_and_b() -> (Endpoint, Endpoint, Endpoint) {
    (
        Endpoint::bind(A_IP),
        Endpoint::bind(A_IP),
        Endpoint::bind(B_IP),
    )
}

/// An offer from A and an answer from B with the given options (both carry them, as a
/// proxy's `rtpengine_manage` does); returns (relay port advertised to A, to B).
fn establish(
    relay: &Relay,
    call: &CallIds,
    a: &Endpoint,
    b: &Endpoint,
    options: &[(&str, Value)],
) -> (u16, u16) {
    let to_b = relay.offer(call, &ua_sdp(a.ip(), a.port(), 1, ""), options);
    let to_a = relay.answer(call, &ua_sdp(b.ip(), b.port(), 1, ""), options);
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    assert!(
        relay.in_range(for_a) && relay.in_range(for_b),
        "{for_a} {for_b}"
    );
    assert_ne!(for_a, for_b);
    (for_a, for_b)
}

// ---- 1. SDP ----------------------------------------------------------------------------------

#[test]
fn offer_and_answer_sdp_match_the_expected_text() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdp");
    let options = [
        ("replace", list(&["origin", "SDP-version"])),
        ("ICE", text("remove")),
    ];
    // Bare LF line endings, as rtpengine's tests send; a session-level c=, ICE at both levels,
    // an attribute nobody knows, and a static payload type without its rtpmap.
    let offer = "v=0\no=- 1545997027 1 IN IP4 198.51.100.1\ns=tester\nc=IN IP4 198.51.100.1\n\
                 t=0 0\na=ice-lite\nm=audio 2000 RTP/AVP 0\na=foo:bar\n\
                 a=ice-ufrag:abcdefgh\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\n\
                 a=candidate:1 1 UDP 2130706431 198.51.100.1 2000 typ host\n";
    let to_b = relay.offer(&call, offer, &options);
    let port_a = media_port(&to_b);
    // rtpengine's order: the session-level c= stays there (as Debian's rtpengine 10.5 keeps
    // it), rtpmap, unknown attributes, the direction, a=rtcp (RTP + 1). The output keeps the
    // input's line endings.
    let expected_to_b = "v=0\no=- 1545997027 1 IN IP4 127.0.0.1\ns=tester\nc=IN IP4 127.0.0.1\n\
                         t=0 0\nm=audio PORT RTP/AVP 0\na=rtpmap:0 PCMU/8000\n\
                         a=foo:bar\na=sendrecv\na=rtcp:RTCP\n"
        .replace("PORT", &port_a.to_string())
        .replace("RTCP", &(port_a + 1).to_string());
    assert_eq!(to_b, expected_to_b, "offer SDP sent to B");
    assert!(relay.in_range(port_a) && port_a % 2 == 0, "{port_a}");

    // The answer's c= is in its media section: it stays there.
    let answer = "v=0\no=- 1545997028 1 IN IP4 198.51.100.3\ns=tester\nt=0 0\n\
                  m=audio 2002 RTP/AVP 0\nc=IN IP4 198.51.100.3\na=sendrecv\n";
    let to_a = relay.answer(&call, answer, &options);
    let port_b = media_port(&to_a);
    let expected_to_a = "v=0\no=- 1545997028 1 IN IP4 127.0.0.1\ns=tester\nt=0 0\n\
                         m=audio PORT RTP/AVP 0\nc=IN IP4 127.0.0.1\n\
                         a=rtpmap:0 PCMU/8000\na=sendrecv\na=rtcp:RTCP\n"
        .replace("PORT", &port_b.to_string())
        .replace("RTCP", &(port_b + 1).to_string());
    assert_eq!(to_a, expected_to_a, "answer SDP sent to A");
    assert!(relay.in_range(port_b) && port_b % 2 == 0, "{port_b}");
    assert_ne!(port_a, port_b);

    // SDP-version: a repeated identical offer keeps the version, and so does one where only
    // the sender bumped its own version; a change of the output (hold) bumps it by one.
    let again = relay.offer(&call, offer, &options);
    assert_eq!(
        again, expected_to_b,
        "an identical re-offer changes nothing"
    );
    let bumped_by_sender = offer.replace("1545997027 1 IN", "1545997027 2 IN");
    let again = relay.offer(&call, &bumped_by_sender, &options);
    assert_eq!(
        again, expected_to_b,
        "the sender's version bump alone is not a change"
    );
    let hold = offer.replace("a=foo:bar\n", "a=foo:bar\na=sendonly\n");
    let held = relay.offer(&call, &hold, &options);
    assert_eq!(
        held,
        expected_to_b
            .replace("1545997027 1 IN", "1545997027 2 IN")
            .replace("a=sendrecv", "a=sendonly"),
        "a changed SDP gets the next version (and keeps the relay's ports)"
    );
}

#[test]
fn sdp_version_follows_the_output_and_crlf_stays_crlf() {
    // The relay keeps its ports when the sender moves (rtpengine would allocate new ones
    // without `port latching`), so the SDP it sends on is unchanged and so is its version; a
    // change that shows in the output (a second codec) bumps the version by one.
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdpver");
    let options = [("replace", list(&["SDP-version"]))];
    let crlf = |sdp: String| sdp.replace('\n', "\r\n");
    let first = relay.offer(&call, &crlf(ua_sdp(A_IP, 4000, 7, "")), &options);
    assert_eq!(origin_version(&first), 7);
    assert_eq!(
        first.matches("\r\n").count(),
        first.matches('\n').count(),
        "CRLF input, CRLF output:\n{first:?}"
    );
    let moved = relay.offer(&call, &crlf(ua_sdp(A_IP, 4010, 7, "")), &options);
    assert_eq!(moved, first, "same relay port, same SDP, same version");
    let codec = crlf(ua_sdp(A_IP, 4010, 7, "")).replace("RTP/AVP 0\r\n", "RTP/AVP 0 8\r\n");
    let more = relay.offer(&call, &codec, &options);
    assert_eq!(origin_version(&more), 8, "{more}");
    assert!(
        more.contains("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"),
        "{more}"
    );
    assert_eq!(media_port(&more), media_port(&first));
}

// ---- 2. RTP both ways ------------------------------------------------------------------------

#[test]
fn rtp_flows_both_ways_unchanged_from_the_advertised_ports() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("rtp");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &[]);
    for seq in 0..10 {
        relays(&a.rtp, &rtp(seq, 0x1234), for_a, &b.rtp, for_b);
        relays(&b.rtp, &rtp(seq, 0x5678), for_b, &a.rtp, for_a);
    }
    silent(&a.rtcp, "A's RTCP port");
    silent(&b.rtcp, "B's RTCP port");
}

/// The TOS byte of the next packet the relay forwards from `from` (via relay port `to`) to
/// `at`.
fn forwarded_tos(from: &UdpSocket, to: u16, at: &UdpSocket, seq: u16) -> Option<u8> {
    from.send_to(&rtp(seq, 0x70), (LOCALHOST, to)).unwrap();
    at.set_read_timeout(Some(ARRIVAL)).unwrap();
    let (data, tos) = anchorage_testkit::media::recv_with_tos(at)
        .unwrap_or_else(|e| panic!("nothing arrived at {}: {e}", at.local_addr().unwrap()));
    assert_eq!(data, rtp(seq, 0x70));
    tos
}

#[test]
fn media_packets_carry_the_relays_tos_or_the_calls_own() {
    // The relay's default (rtpengine's `--tos`): 184, DSCP EF.
    let relay = Relay::start(4, &["--tos", "184"]);
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_a, for_b) = establish(&relay, &CallIds::new("tos-default"), &a, &b, &[]);
    assert_eq!(forwarded_tos(&a.rtp, for_a, &b.rtp, 1), Some(184));
    assert_eq!(forwarded_tos(&b.rtp, for_b, &a.rtp, 2), Some(184));
    // A request's `TOS` key wins for its call (AF41 = 136).
    let (c, d) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let options = [("TOS", Value::Int(136))];
    let (for_c, for_d) = establish(&relay, &CallIds::new("tos-own"), &c, &d, &options);
    assert_eq!(forwarded_tos(&c.rtp, for_c, &d.rtp, 3), Some(136));
    assert_eq!(forwarded_tos(&d.rtp, for_d, &c.rtp, 4), Some(136));
    // Without either, the system default (0).
    let plain = Relay::start(4, &[]);
    let (e, f) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_e, _) = establish(&plain, &CallIds::new("tos-none"), &e, &f, &[]);
    assert_eq!(forwarded_tos(&e.rtp, for_e, &f.rtp, 5), Some(0));
}

// ---- 3. latching -----------------------------------------------------------------------------

#[test]
fn delayed_learning_sends_to_where_a_party_really_sends_from() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("latch");
    // A's SDP names `a`; A really sends from `a_nat` (a NAT rewrote its port).
    let (a, a_nat, b) = a_twice_and_b();
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &[]);
    // Before A sends anything, the relay can only use the SDP address.
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);
    relays(&a_nat.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    for seq in 2..5 {
        relays(&b.rtp, &rtp(seq, 0xb), for_b, &a_nat.rtp, for_a);
    }
    silent(&a.rtp, "A's SDP address after learning");
}

#[test]
fn strict_source_drops_packets_from_another_source_once_confirmed() {
    let relay = Relay::start(6, &[]);
    let call = CallIds::new("strict");
    let (a, other, b) = a_twice_and_b();
    let options = [
        ("flags", list(&["strict-source"])),
        ("endpoint-learning", text("immediate")),
    ];
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &options);
    // Both options are honoured, so neither is reported as ignored.
    let reoffer = relay.request(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.a)),
        ("sdp", text(&ua_sdp(a.ip(), a.port(), 1, ""))),
        ("flags", list(&["strict-source"])),
        ("endpoint-learning", text("immediate")),
    ]);
    assert_eq!((reoffer.outcome, reoffer.warning), (Outcome::Ok, None));
    // A's first packet confirms A's endpoint.
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    other
        .rtp
        .send_to(&rtp(2, 0xbad), (LOCALHOST, for_a))
        .unwrap();
    silent(
        &b.rtp,
        "a packet from an unconfirmed source under strict-source",
    );
    relays(&a.rtp, &rtp(3, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);
    silent(&other.rtp, "the other source");
    let totals = relay.query(&call.id).totals.expect("totals");
    assert_eq!(
        totals.rtp.errors, 1,
        "the dropped packet counts as an error"
    );

    // The options of an offer are A's: an answer without them (Kamailio's
    // `rtpengine_offer("strict-source")` then `rtpengine_answer()`) leaves them in force.
    let call = CallIds::new("offeronly");
    let (a, other, b) = a_twice_and_b();
    let to_b = relay.offer(&call, &ua_sdp(a.ip(), a.port(), 1, ""), &options);
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &[]);
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    other
        .rtp
        .send_to(&rtp(2, 0xbad), (LOCALHOST, for_a))
        .unwrap();
    silent(
        &b.rtp,
        "strict-source from the offer, after an answer without it",
    );
    relays(&a.rtp, &rtp(3, 0xa), for_a, &b.rtp, for_b);

    // Without strict-source the same packet is forwarded (but does not move A's endpoint).
    let call = CallIds::new("loose");
    let (a, other, b) = a_twice_and_b();
    let options = [("endpoint-learning", text("immediate"))];
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &options);
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    relays(&other.rtp, &rtp(2, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);
    silent(
        &other.rtp,
        "a confirmed endpoint does not move without media-handover",
    );
}

#[test]
fn media_handover_moves_the_endpoint_to_a_new_source() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("handover");
    let (a, moved, b) = a_twice_and_b();
    let options = [
        ("flags", list(&["media-handover"])),
        ("endpoint-learning", text("immediate")),
    ];
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &options);
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);
    // A moves (e.g. Wi-Fi to mobile): its new source takes over at once.
    relays(&moved.rtp, &rtp(2, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(2, 0xb), for_b, &moved.rtp, for_a);
    silent(&a.rtp, "A's old endpoint after the handover");
}

#[test]
fn asymmetric_keeps_sending_to_the_sdp_address() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("asym");
    let (a, a_send, b) = a_twice_and_b();
    let options = [("flags", list(&["asymmetric"]))];
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &options);
    // A sends from one port and receives on another (its SDP's): the relay must not learn.
    for seq in 1..4 {
        relays(&a_send.rtp, &rtp(seq, 0xa), for_a, &b.rtp, for_b);
        relays(&b.rtp, &rtp(seq, 0xb), for_b, &a.rtp, for_a);
    }
    silent(&a_send.rtp, "A's sending port under asymmetric");
}

// ---- 4. rtcp-mux -----------------------------------------------------------------------------

#[test]
fn rtcp_mux_demux_gives_b_a_separate_rtcp_port_and_a_its_mux() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("demux");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    // A (a WebRTC-style client) multiplexes RTCP on its RTP port; B does not know rtcp-mux.
    let offer = ua_sdp(a.ip(), a.port(), 1, "a=rtcp-mux\n");
    let to_b = relay.offer(&call, &offer, &[("rtcp-mux", list(&["demux"]))]);
    let for_b = media_port(&to_b);
    assert!(
        !to_b.contains("a=rtcp-mux"),
        "demux: no rtcp-mux towards B\n{to_b}"
    );
    assert!(
        to_b.contains(&format!("a=rtcp:{}\n", for_b + 1)),
        "B gets a separate RTCP port\n{to_b}"
    );
    // The answer carries no rtcp-mux option: the demux decision was the offer's.
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &[]);
    let for_a = media_port(&to_a);
    assert!(
        to_a.contains("a=rtcp-mux\n"),
        "A's rtcp-mux is accepted\n{to_a}"
    );
    assert!(
        to_a.contains(&format!("a=rtcp:{for_a}\n")),
        "RTCP on A's RTP port\n{to_a}"
    );

    // RTCP from A on the RTP port goes to B's RTCP port, from the relay's RTCP port for B.
    relays(&a.rtp, &rtcp(0xa), for_a, &b.rtcp, for_b + 1);
    // RTP still goes RTP to RTP.
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    // RTCP from B's RTCP port reaches A on its RTP port, from the relay's RTP port for A.
    relays(&b.rtcp, &rtcp(0xb), for_b + 1, &a.rtp, for_a);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);
    silent(&a.rtcp, "A's RTCP port (A muxes)");
    silent(&b.rtp, "B's RTP port (RTCP goes to B's RTCP port)");
}

/// The files the relay process has open (its media sockets among them).
fn open_files(relay: &Relay) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", relay.daemon.pid())).map_or(0, Iterator::count)
}

/// Waits up to a second for the relay to hold `expected` open files (the media workers
/// close sockets just after the ng reply).
fn assert_open_files(relay: &Relay, expected: usize, what: &str) {
    let deadline = Instant::now() + ARRIVAL;
    while open_files(relay) != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(open_files(relay), expected, "{what}");
}

fn sockets_of(relay: &Relay, call: &CallIds, tag: &str) -> Option<Value> {
    media_value(&relay.query(&call.id), tag, "sockets")
}

#[test]
fn rtcp_mux_on_both_legs_closes_the_rtcp_sockets_and_a_reoffer_without_it_reopens_them() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("mux-sockets");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let idle = open_files(&relay);
    let to_b = relay.offer(&call, &ua_sdp(a.ip(), a.port(), 1, "a=rtcp-mux\n"), &[]);
    let for_b = media_port(&to_b);
    assert!(
        to_b.contains(&format!("a=rtcp:{}\na=rtcp-mux\n", for_b + 1)),
        "the offer still names B's RTCP port\n{to_b}"
    );
    assert_open_files(&relay, idle + 4, "both pairs bound at the offer");
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, "a=rtcp-mux\n"), &[]);
    let for_a = media_port(&to_a);
    assert!(
        to_a.contains(&format!("a=rtcp:{for_a}\na=rtcp-mux\n")),
        "{to_a}"
    );
    assert_open_files(&relay, idle + 2, "RTP sockets only under rtcp-mux");
    assert_eq!(sockets_of(&relay, &call, &call.a), Some(Value::Int(1)));
    assert_eq!(sockets_of(&relay, &call, &call.b), Some(Value::Int(1)));
    // RTCP goes muxed both ways; the RTCP ports are really closed.
    relays(&a.rtp, &rtcp(0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtcp(0xb), for_b, &a.rtp, for_a);
    for port in [for_a + 1, for_b + 1] {
        drop(UdpSocket::bind((LOCALHOST, port)).expect("a closed RTCP port"));
    }

    // A re-offers without rtcp-mux: its RTCP socket opens again, B's for the offer it gets.
    let to_b = relay.offer(
        &call,
        &ua_sdp(a.ip(), a.port(), 2, ""),
        &[("to-tag", text(&call.b))],
    );
    assert_eq!(media_port(&to_b), for_b, "same ports");
    assert!(!to_b.contains("a=rtcp-mux"), "{to_b}");
    assert_open_files(&relay, idle + 4, "RTCP sockets again");
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 2, ""), &[]);
    assert!(to_a.contains(&format!("a=rtcp:{}\n", for_a + 1)), "{to_a}");
    assert_open_files(&relay, idle + 4, "no rtcp-mux, four sockets");
    relays(&a.rtcp, &rtcp(0xa), for_a + 1, &b.rtcp, for_b + 1);
    relays(&b.rtcp, &rtcp(0xb), for_b + 1, &a.rtcp, for_a + 1);
    assert_eq!(sockets_of(&relay, &call, &call.a), Some(Value::Int(2)));

    relay.delete(&call.id, &[]);
    assert_open_files(&relay, idle, "every socket closed by the delete");
}

// ---- 5. query and delete ---------------------------------------------------------------------

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn error_text(reply: &Reply) -> &str {
    match &reply.outcome {
        Outcome::Error(reason) => reason,
        other => panic!("expected an error reply, got {other:?}: {reply:?}"),
    }
}

#[test]
fn query_counts_what_was_sent_and_delete_ends_the_call() {
    use anchorage_ng::reason::{CALL_NOT_FOUND, UNKNOWN_CALL_ID};
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("query");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let before = unix_seconds();
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &[]);
    for seq in 0..7 {
        relays(&a.rtp, &rtp(seq, 0xa), for_a, &b.rtp, for_b);
    }
    for seq in 0..5 {
        relays(&b.rtp, &rtp(seq, 0xb), for_b, &a.rtp, for_a);
    }
    relays(&a.rtcp, &rtcp(0xa), for_a + 1, &b.rtcp, for_b + 1);

    let query = relay.query(&call.id);
    assert_eq!(query.outcome, Outcome::Ok, "{query:?}");
    let totals = query.totals.expect("totals");
    assert_eq!(totals.rtp.packets, 12, "{totals:?}");
    assert_eq!(totals.rtp.bytes, 12 * rtp(0, 0).len() as u64, "{totals:?}");
    assert_eq!(totals.rtp.errors, 0, "{totals:?}");
    assert_eq!(totals.rtcp.packets, 1, "{totals:?}");
    let created = query.created.expect("created");
    assert!(
        (before - 1..=unix_seconds() + 1).contains(&created),
        "created {created}, test started {before}"
    );
    let tags: Vec<&str> = query
        .tags
        .as_ref()
        .expect("tags")
        .iter()
        .map(|(key, info)| {
            assert_eq!(*key, info.tag);
            key.as_str()
        })
        .collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(
        tags.contains(&call.a.as_str()) && tags.contains(&call.b.as_str()),
        "{tags:?}"
    );
    assert_eq!(relay.list(), vec![call.id.clone()]);

    let deleted = relay.delete(&call.id, &[]);
    assert_eq!(deleted.outcome, Outcome::Ok, "{deleted:?}");
    assert_eq!(deleted.warning, None);
    assert_eq!(deleted.totals.map(|t| t.rtp.packets), Some(12));
    assert!(relay.list().is_empty());
    assert_eq!(error_text(&relay.query(&call.id)), UNKNOWN_CALL_ID);

    // The ports stop forwarding, and are closed (so free for reuse).
    a.rtp.send_to(&rtp(99, 0xa), (LOCALHOST, for_a)).unwrap();
    b.rtp.send_to(&rtp(99, 0xb), (LOCALHOST, for_b)).unwrap();
    silent(&b.rtp, "B after delete");
    silent(&a.rtp, "A after delete");
    for port in [for_a, for_a + 1, for_b, for_b + 1] {
        UdpSocket::bind((LOCALHOST, port))
            .unwrap_or_else(|e| panic!("relay port {port} still open after delete: {e}"));
    }

    // Deleting what does not exist: a warning, or an error with `fatal`.
    for call_id in [call.id.as_str(), "no-such-call"] {
        let again = relay.delete(call_id, &[]);
        assert_eq!(again.outcome, Outcome::Ok, "{again:?}");
        assert_eq!(again.warning.as_deref(), Some(CALL_NOT_FOUND));
        let fatal = relay.delete(call_id, &["fatal"]);
        assert_eq!(error_text(&fatal), CALL_NOT_FOUND);
    }
}

// ---- 6. port exhaustion ----------------------------------------------------------------------

#[test]
fn ports_run_out_cleanly_and_a_busy_port_is_skipped() {
    use anchorage_ng::reason::RAN_OUT_OF_PORTS;
    // Three pairs, of which another process holds one (its RTCP port): room for one call.
    let base = port_block(3);
    let _busy = UdpSocket::bind((LOCALHOST, base + 5)).unwrap();
    let relay = Relay::start_on(base, base + 5, &[]);
    let usable = [base, base + 2];

    let first = CallIds::new("first");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_a, for_b) = establish(&relay, &first, &a, &b, &[]);
    assert!(
        usable.contains(&for_a) && usable.contains(&for_b),
        "{for_a} {for_b}"
    );

    let second = CallIds::new("second");
    let refused = relay.request(&[
        ("command", text("offer")),
        ("call-id", text(&second.id)),
        ("from-tag", text(&second.a)),
        ("sdp", text(&ua_sdp(A_IP, 4000, 1, ""))),
    ]);
    assert_eq!(error_text(&refused), RAN_OUT_OF_PORTS);
    assert_eq!(
        relay.list(),
        vec![first.id.clone()],
        "the refused call is gone"
    );

    // The first call is untouched.
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);

    // Its ports come back at once with --delete-delay 0.
    assert_eq!(relay.delete(&first.id, &[]).outcome, Outcome::Ok);
    let third = CallIds::new("third");
    let (c, d) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_c, for_d) = establish(&relay, &third, &c, &d, &[]);
    assert!(
        usable.contains(&for_c) && usable.contains(&for_d),
        "{for_c} {for_d}"
    );
    relays(&c.rtp, &rtp(1, 0xc), for_c, &d.rtp, for_d);
    relays(&d.rtp, &rtp(1, 0xd), for_d, &c.rtp, for_c);
}

// ---- 7. retransmissions ----------------------------------------------------------------------

/// `controlstatistics.offercount` of a `statistics` reply.
fn offer_count(relay: &Relay) -> i64 {
    let reply = relay.ok(&[("command", text("statistics"))]);
    let statistics = reply.statistics.expect("statistics");
    statistics
        .as_dict()
        .and_then(|d| anchorage_ng::value::get(d, "controlstatistics"))
        .and_then(Value::as_dict)
        .and_then(|d| anchorage_ng::value::get(d, "offercount"))
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no offercount in {statistics:?}"))
}

#[test]
fn a_retransmitted_offer_gets_the_same_reply_and_creates_one_call() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("retrans");
    let offer = dict(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.a)),
        ("sdp", text(&ua_sdp(A_IP, 4000, 1, ""))),
    ]);
    let sent = datagram("retransmitted-cookie", &offer);
    let first = relay.raw(&sent, Duration::from_secs(2)).expect("a reply");
    let second = relay.raw(&sent, Duration::from_secs(2)).expect("a reply");
    assert_eq!(first, second, "a retransmission gets the cached reply");
    let (cookie, _, reply) = decode_reply(&first).unwrap();
    assert_eq!(cookie.as_bytes(), b"retransmitted-cookie");
    let port = media_port(&sdp_of(&reply));
    assert_eq!(
        offer_count(&relay),
        1,
        "the retransmission was not executed again"
    );
    assert_eq!(relay.list(), vec![call.id.clone()]);
    // The same offer under a new cookie is a repeated offer of the same dialog: same port.
    let repeated = relay.ok(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.a)),
        ("sdp", text(&ua_sdp(A_IP, 4000, 1, ""))),
    ]);
    assert_eq!(media_port(&sdp_of(&repeated)), port);
    assert_eq!(offer_count(&relay), 2);
    assert_eq!(relay.list(), vec![call.id.clone()]);
}

// ---- 8. bad input ----------------------------------------------------------------------------

#[test]
fn bad_requests_get_rtpengines_errors_and_change_nothing() {
    use anchorage_ng::reason::{
        BAD_BENCODE, BAD_JSON, FAILED_TO_PARSE_SDP, INVALID_FORMAT, NO_SDP_BODY, UNKNOWN_CALL_ID,
        UNRECOGNIZED_COMMAND,
    };
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("survivor");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &[]);
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);

    let raw_error = |datagram: &[u8], cookie: &str| -> String {
        let reply = relay
            .raw(datagram, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no reply to {:?}", String::from_utf8_lossy(datagram)));
        let (got, _, reply) = decode_reply(&reply).unwrap();
        assert_eq!(got.as_bytes(), cookie.as_bytes());
        error_text(&reply).to_owned()
    };
    assert_eq!(raw_error(b"bad1 d7:command5:offer", "bad1"), BAD_BENCODE);
    assert_eq!(raw_error(b"bad2 d4:pinge", "bad2"), BAD_BENCODE);
    assert_eq!(raw_error(b"bad5 l4:pinge", "bad5"), INVALID_FORMAT);
    assert_eq!(raw_error(b"bad3 {\"command\": ", "bad3"), BAD_JSON);
    assert_eq!(
        raw_error(b"bad4 d7:command13:no-such-thinge", "bad4"),
        UNRECOGNIZED_COMMAND
    );
    // No cookie at all: dropped without a reply, as rtpengine does.
    assert_eq!(relay.raw(b"d7:command4:pinge", SILENCE), None);

    let offer_without_sdp = relay.request(&[
        ("command", text("offer")),
        ("call-id", text("bad-offer")),
        ("from-tag", text("x")),
    ]);
    assert_eq!(error_text(&offer_without_sdp), NO_SDP_BODY);
    let garbage = relay.request(&[
        ("command", text("offer")),
        ("call-id", text("bad-offer")),
        ("from-tag", text("x")),
        ("sdp", text("this is not an SDP body\r\nat all\r\n")),
    ]);
    assert_eq!(error_text(&garbage), FAILED_TO_PARSE_SDP);
    let answer = relay.request(&[
        ("command", text("answer")),
        ("call-id", text("never-offered")),
        ("from-tag", text("x")),
        ("to-tag", text("y")),
        ("sdp", text(&ua_sdp(B_IP, 4000, 1, ""))),
    ]);
    assert_eq!(error_text(&answer), UNKNOWN_CALL_ID);

    // Still alive, nothing created, and the existing call still relays.
    assert_eq!(
        relay.request(&[("command", text("ping"))]).outcome,
        Outcome::Pong
    );
    assert_eq!(relay.list(), vec![call.id.clone()]);
    relays(&a.rtp, &rtp(2, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(2, 0xb), for_b, &a.rtp, for_a);
}

// ---- 9. re-INVITE from the callee ------------------------------------------------------------

#[test]
fn a_re_offer_from_the_callee_keeps_the_ports_and_follows_its_new_address() {
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("reinvite");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (for_a, for_b) = establish(&relay, &call, &a, &b, &[]);
    relays(&a.rtp, &rtp(1, 0xa), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xb), for_b, &a.rtp, for_a);

    // B sends a re-INVITE with a new media port: from-tag is B's, to-tag A's.
    let b2 = Endpoint::bind(B_IP);
    let to_a = sdp_of(&relay.ok(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.b)),
        ("to-tag", text(&call.a)),
        ("sdp", text(&ua_sdp(b2.ip(), b2.port(), 2, ""))),
    ]));
    assert_eq!(
        media_port(&to_a),
        for_a,
        "A keeps talking to the same relay port"
    );
    let to_b = sdp_of(&relay.ok(&[
        ("command", text("answer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.b)),
        ("to-tag", text(&call.a)),
        ("sdp", text(&ua_sdp(a.ip(), a.port(), 2, ""))),
    ]));
    assert_eq!(
        media_port(&to_b),
        for_b,
        "B keeps talking to the same relay port"
    );
    assert_eq!(relay.list(), vec![call.id.clone()]);

    for seq in 2..5 {
        relays(&a.rtp, &rtp(seq, 0xa), for_a, &b2.rtp, for_b);
        relays(&b2.rtp, &rtp(seq, 0xb), for_b, &a.rtp, for_a);
    }
    silent(&b.rtp, "B's old media port");
}

// ---- 10. media timeout -----------------------------------------------------------------------

#[test]
fn a_call_without_media_times_out_and_one_with_media_does_not() {
    let relay = Relay::start(4, &["--timeout", "2"]);
    let idle = CallIds::new("idle");
    let busy = CallIds::new("busy");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let (c, d) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    establish(&relay, &idle, &a, &b, &[]);
    let answered = Instant::now();
    let (for_c, _) = establish(&relay, &busy, &c, &d, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let socket = c.rtp.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                socket.send_to(&rtp(seq, 0xc), (LOCALHOST, for_c)).unwrap();
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let deadline = answered + Duration::from_secs(10);
    while relay.list().contains(&idle.id) {
        assert!(Instant::now() < deadline, "the idle call did not time out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = answered.elapsed();
    let still = relay.list();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert!(
        after >= Duration::from_millis(1800),
        "timed out after {after:?}, before the 2 s timeout"
    );
    assert_eq!(still, vec![busy.id.clone()], "the call with media stays");
    assert!(receive(&d.rtp).is_some(), "the busy call relayed");
}

// ---- ICE-lite ----------------------------------------------------------------------------

/// An attribute line's value in an SDP.
fn sdp_attribute<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(&format!("a={name}:")))
        .unwrap_or_else(|| panic!("no a={name} in\n{sdp}"))
}

#[test]
fn ice_force_answers_the_parties_connectivity_checks_and_media_still_flows() {
    use anchorage_relay::stun;
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("ice");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let options = [("ICE", text("force"))];
    let to_b = relay.offer(&call, &ua_sdp(a.ip(), a.port(), 1, ""), &options);
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &options);
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    assert!(to_b.contains("a=ice-lite") && to_a.contains("a=ice-lite"));
    // B checks the candidate it was given, with the credentials it was given.
    let (ufrag, pwd) = (
        sdp_attribute(&to_b, "ice-ufrag"),
        sdp_attribute(&to_b, "ice-pwd"),
    );
    let candidate = sdp_attribute(&to_b, "candidate");
    assert!(
        candidate.contains(&format!(" {for_b} typ host")),
        "{candidate}"
    );
    let request = stun::binding_request(ufrag, pwd.as_bytes(), [9; 12]);
    b.rtp.send_to(&request, (LOCALHOST, for_b)).unwrap();
    let (response, from) = receive(&b.rtp).expect("a STUN response");
    assert_eq!(
        from.port(),
        for_b,
        "answered from the port that was checked"
    );
    assert_eq!(&response[0..2], &[0x01, 0x01], "Binding Success");
    assert_eq!(&response[8..20], &[9; 12], "same transaction");
    // XOR-MAPPED-ADDRESS: B's own address.
    let port = u16::from_be_bytes([response[26], response[27]]) ^ 0x2112;
    assert_eq!(port, b.port());
    // A check with A's credentials on B's port, or a wrong password, gets nothing.
    let (a_ufrag, a_pwd) = (
        sdp_attribute(&to_a, "ice-ufrag"),
        sdp_attribute(&to_a, "ice-pwd"),
    );
    assert_ne!(a_ufrag, ufrag);
    b.rtp
        .send_to(
            &stun::binding_request(a_ufrag, a_pwd.as_bytes(), [1; 12]),
            (LOCALHOST, for_b),
        )
        .unwrap();
    b.rtp
        .send_to(
            &stun::binding_request(ufrag, b"0123456789012345678901ab", [2; 12]),
            (LOCALHOST, for_b),
        )
        .unwrap();
    silent(&b.rtp, "a check with the wrong credentials");
    silent(&a.rtp, "a STUN check is not relayed");
    // A's check on its own port works too, and RTP flows both ways afterwards.
    a.rtp
        .send_to(
            &stun::binding_request(a_ufrag, a_pwd.as_bytes(), [3; 12]),
            (LOCALHOST, for_a),
        )
        .unwrap();
    let (response, _) = receive(&a.rtp).expect("A's check answered");
    assert_eq!(&response[0..2], &[0x01, 0x01]);
    relays(&a.rtp, &rtp(1, 0xA1), for_a, &b.rtp, for_b);
    relays(&b.rtp, &rtp(1, 0xB1), for_b, &a.rtp, for_a);
}

// ---- 11. SDES-SRTP, checked with libsrtp ------------------------------------------------------

use anchorage_testkit::srtp::{crypto_key, Libsrtp};

/// The libsrtp peer of this repository (`tests/srtp_peer.py` in `.venv`).
fn libsrtp() -> Libsrtp {
    Libsrtp::start(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// An SDES party's SDP at `ip:port` offering or answering `a=crypto:<tag> <suite> inline:<key>`.
fn sdes_sdp(ip: IpAddr, port: u16, tag: u32, suite: &str, key: &str) -> String {
    format!(
        "v=0\no=- 1545997027 1 IN IP4 {ip}\ns=tester\nc=IN IP4 {ip}\nt=0 0\n\
         m=audio {port} RTP/SAVP 0\na=crypto:{tag} {suite} inline:{key}\n"
    )
}

/// Base64 of `len` bytes of `fill`.
fn b64_key(len: usize, fill: u8) -> String {
    anchorage_relay_control::sdes::base64_encode(&vec![fill; len], false)
}

/// Receives on `at` (from relay port `source`) and returns the datagram.
fn arrival(at: &UdpSocket, source: u16, what: &str) -> Vec<u8> {
    let (got, sender) = receive(at).unwrap_or_else(|| panic!("{what}: nothing arrived"));
    assert_eq!(
        sender,
        SocketAddr::new(LOCALHOST, source),
        "{what}: symmetric"
    );
    got
}

/// A medias entry's value of `key` for `tag` in a query reply.
fn media_value(reply: &Reply, tag: &str, key: &str) -> Option<Value> {
    let (_, info) = reply.tags.as_ref()?.iter().find(|(t, _)| t == tag)?;
    let (_, Value::List(medias)) = info.other.iter().find(|(k, _)| k == "medias")? else {
        return None;
    };
    let Value::Dict(entries) = medias.first()? else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn srtp_counter(reply: &Reply, tag: &str, counter: &str) -> i64 {
    match media_value(reply, tag, "SRTP") {
        Some(Value::Dict(entries)) => match entries.iter().find(|(k, _)| k == counter) {
            Some((_, Value::Int(n))) => *n,
            other => panic!("{counter}: {other:?}"),
        },
        other => panic!("no SRTP counters for {tag}: {other:?}"),
    }
}

#[test]
fn plain_caller_and_sdes_callee_exchange_libsrtp_packets_through_the_relay() {
    let mut peer = libsrtp();
    let metrics = SocketAddr::new(LOCALHOST, anchorage_testkit::free_port(LOCALHOST));
    let relay = Relay::start(4, &["--metrics", &metrics.to_string()]);
    let call = CallIds::new("sdes-b");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    // OpenSIPS/Kamailio ask for SRTP towards the callee in the offer.
    let to_b = relay.offer(
        &call,
        &ua_sdp(a.ip(), a.port(), 1, ""),
        &[("transport-protocol", text("RTP/SAVP"))],
    );
    assert!(to_b.contains(" RTP/SAVP 0\n"), "{to_b}");
    // B accepts the relay's AES_CM_128_HMAC_SHA1_80 line (tag 5) with its own key.
    let (suite, relay_key) = crypto_key(&to_b, 5);
    assert_eq!(suite, "AES_CM_128_HMAC_SHA1_80");
    let b_key = b64_key(30, 0xb5);
    let to_a = relay.answer(&call, &sdes_sdp(b.ip(), b.port(), 5, &suite, &b_key), &[]);
    assert!(
        to_a.contains(" RTP/AVP 0\n") && !to_a.contains("crypto"),
        "{to_a}"
    );
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    peer.session("b_send", "outbound", &suite, &b_key);
    peer.session("b_recv", "inbound", &suite, &relay_key);

    for seq in 0..5 {
        // A's plain RTP reaches B as SRTP that libsrtp decrypts to exactly A's packet.
        let plain = rtp(seq, 0xa1);
        a.rtp.send_to(&plain, (LOCALHOST, for_a)).unwrap();
        let secured = arrival(&b.rtp, for_b, "A's RTP at B");
        assert_eq!(secured.len(), plain.len() + 10, "an 80-bit tag");
        assert_ne!(secured[12..], plain[12..], "encrypted");
        assert_eq!(peer.unprotect("b_recv", false, &secured), Ok(plain));
        // B's SRTP from libsrtp reaches A as exactly the RTP B protected.
        let plain = rtp(seq, 0xb1);
        let secured = peer.protect("b_send", false, &plain);
        b.rtp.send_to(&secured, (LOCALHOST, for_b)).unwrap();
        assert_eq!(arrival(&a.rtp, for_a, "B's RTP at A"), plain);
    }
    // SRTCP both ways on the RTCP ports.
    let report = rtcp(0xa1);
    a.rtcp.send_to(&report, (LOCALHOST, for_a + 1)).unwrap();
    let secured = arrival(&b.rtcp, for_b + 1, "A's RTCP at B");
    assert_eq!(peer.unprotect("b_recv", true, &secured), Ok(report));
    let report = rtcp(0xb1);
    let secured = peer.protect("b_send", true, &report);
    b.rtcp.send_to(&secured, (LOCALHOST, for_b + 1)).unwrap();
    assert_eq!(arrival(&a.rtcp, for_a + 1, "B's RTCP at A"), report);

    // A tampered packet is dropped and counted; so is a replayed one. Media goes on.
    let mut tampered = peer.protect("b_send", false, &rtp(100, 0xb1));
    tampered[20] ^= 0x01;
    b.rtp.send_to(&tampered, (LOCALHOST, for_b)).unwrap();
    silent(&a.rtp, "a tampered SRTP packet");
    let good = peer.protect("b_send", false, &rtp(101, 0xb1));
    b.rtp.send_to(&good, (LOCALHOST, for_b)).unwrap();
    assert_eq!(
        arrival(&a.rtp, for_a, "after the tampered one"),
        rtp(101, 0xb1)
    );
    b.rtp.send_to(&good, (LOCALHOST, for_b)).unwrap();
    silent(&a.rtp, "a replayed SRTP packet");

    let query = relay.query(&call.id);
    assert_eq!(srtp_counter(&query, &call.b, "decrypted packets"), 7);
    assert_eq!(srtp_counter(&query, &call.b, "encrypted packets"), 6);
    assert_eq!(srtp_counter(&query, &call.b, "authentication failures"), 1);
    assert_eq!(srtp_counter(&query, &call.b, "replayed"), 1);
    assert_eq!(
        media_value(&query, &call.b, "crypto suite"),
        Some(text("AES_CM_128_HMAC_SHA1_80"))
    );
    assert_eq!(media_value(&query, &call.a, "SRTP"), None, "A is plain");

    // The same counts in /metrics (refreshed once a second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = anchorage_testkit::http(metrics, "GET", "/metrics", "");
        assert_eq!(status, 200);
        let has = |line: &str| body.lines().any(|l| l == line);
        // And by kind of leg: B's is an SDES leg on AES_CM_128_HMAC_SHA1_80.
        let b_leg = |outcome: &str, value: u64| {
            has(&format!(
                "anchorage_relay_srtp_leg_packets_total{{keying=\"sdes\",\
                 suite=\"AES_CM_128_HMAC_SHA1_80\",outcome=\"{outcome}\"}} {value}"
            ))
        };
        if has("anchorage_relay_srtp_decrypted_packets_total 7")
            && has("anchorage_relay_srtp_encrypted_packets_total 6")
            && has("anchorage_relay_srtp_auth_failures_total 1")
            && has("anchorage_relay_srtp_replayed_packets_total 1")
            && b_leg("decrypted", 7)
            && b_leg("encrypted", 6)
            && b_leg("auth_failure", 1)
            && b_leg("replayed", 1)
            && b_leg("failed", 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sdes_caller_and_plain_callee_exchange_libsrtp_packets_through_the_relay() {
    let mut peer = libsrtp();
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdes-a");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let suite = "AES_CM_128_HMAC_SHA1_32";
    let a_key = b64_key(30, 0xa3);
    let to_b = relay.offer(
        &call,
        &sdes_sdp(a.ip(), a.port(), 7, suite, &a_key),
        &[("transport-protocol", text("RTP/AVP"))],
    );
    assert!(
        to_b.contains(" RTP/AVP 0\n") && !to_b.contains("crypto"),
        "{to_b}"
    );
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &[]);
    let (answered_suite, relay_key) = crypto_key(&to_a, 7);
    assert_eq!(answered_suite, suite);
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    peer.session("a_send", "outbound", suite, &a_key);
    peer.session("a_recv", "inbound", suite, &relay_key);
    for seq in 0..5 {
        let plain = rtp(seq, 0xa2);
        let secured = peer.protect("a_send", false, &plain);
        assert_eq!(secured.len(), plain.len() + 4, "a 32-bit tag");
        a.rtp.send_to(&secured, (LOCALHOST, for_a)).unwrap();
        assert_eq!(arrival(&b.rtp, for_b, "A's RTP at B"), plain);
        let plain = rtp(seq, 0xb2);
        b.rtp.send_to(&plain, (LOCALHOST, for_b)).unwrap();
        let secured = arrival(&a.rtp, for_a, "B's RTP at A");
        assert_eq!(peer.unprotect("a_recv", false, &secured), Ok(plain));
    }
    // Garbage and a packet keyed for someone else are dropped and counted.
    a.rtp.send_to(&rtp(50, 0xa2), (LOCALHOST, for_a)).unwrap();
    silent(&b.rtp, "plain RTP on an SRTP leg");
    peer.session("stranger", "outbound", suite, &b64_key(30, 0x55));
    let forged = peer.protect("stranger", false, &rtp(51, 0xa2));
    a.rtp.send_to(&forged, (LOCALHOST, for_a)).unwrap();
    silent(&b.rtp, "SRTP under another key");
    let query = relay.query(&call.id);
    assert_eq!(srtp_counter(&query, &call.a, "authentication failures"), 2);
    assert_eq!(srtp_counter(&query, &call.a, "decrypted packets"), 5);
}

#[test]
fn sdes_on_both_legs_is_decrypted_and_encrypted_again_with_other_keys() {
    let mut peer = libsrtp();
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdes-ab");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let a_suite = "AEAD_AES_128_GCM";
    let a_key = b64_key(28, 0xa4);
    let to_b = relay.offer(&call, &sdes_sdp(a.ip(), a.port(), 1, a_suite, &a_key), &[]);
    // B takes the relay's AES_CM_128_HMAC_SHA1_80 line, whatever its tag.
    let tag = to_b
        .lines()
        .find_map(|l| {
            l.strip_prefix("a=crypto:")
                .filter(|l| l.contains(" AES_CM_128_HMAC_SHA1_80 "))
        })
        .and_then(|l| l.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{to_b}"));
    let (b_suite, relay_key_b) = crypto_key(&to_b, tag);
    let b_key = b64_key(30, 0xb4);
    let to_a = relay.answer(
        &call,
        &sdes_sdp(b.ip(), b.port(), tag, &b_suite, &b_key),
        &[],
    );
    let (_, relay_key_a) = crypto_key(&to_a, 1);
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    peer.session("a_send", "outbound", a_suite, &a_key);
    peer.session("a_recv", "inbound", a_suite, &relay_key_a);
    peer.session("b_send", "outbound", &b_suite, &b_key);
    peer.session("b_recv", "inbound", &b_suite, &relay_key_b);
    for seq in 0..5 {
        let plain = rtp(seq, 0xa4);
        let secured = peer.protect("a_send", false, &plain);
        a.rtp.send_to(&secured, (LOCALHOST, for_a)).unwrap();
        let at_b = arrival(&b.rtp, for_b, "A's SRTP at B");
        assert_ne!(at_b, secured, "re-encrypted with another key");
        assert_eq!(peer.unprotect("b_recv", false, &at_b), Ok(plain));
        let plain = rtp(seq, 0xb4);
        let secured = peer.protect("b_send", false, &plain);
        b.rtp.send_to(&secured, (LOCALHOST, for_b)).unwrap();
        let at_a = arrival(&a.rtp, for_a, "B's SRTP at A");
        assert_eq!(peer.unprotect("a_recv", false, &at_a), Ok(plain));
    }
}

#[test]
fn a_reoffer_with_a_new_key_is_followed_at_once() {
    let mut peer = libsrtp();
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdes-rekey");
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let suite = "AES_CM_128_HMAC_SHA1_80";
    let options = [("transport-protocol", text("RTP/AVP"))];
    let first = b64_key(30, 0x01);
    let to_b = relay.offer(
        &call,
        &sdes_sdp(a.ip(), a.port(), 1, suite, &first),
        &options,
    );
    let for_b = media_port(&to_b);
    let to_a = relay.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &[]);
    let for_a = media_port(&to_a);
    peer.session("old", "outbound", suite, &first);
    let plain = rtp(1, 0xa5);
    a.rtp
        .send_to(&peer.protect("old", false, &plain), (LOCALHOST, for_a))
        .unwrap();
    assert_eq!(arrival(&b.rtp, for_b, "under the first key"), plain);
    // A re-INVITE with a new key: the old key no longer passes, the new one does.
    let second = b64_key(30, 0x02);
    let reoffer = relay.request(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.a)),
        ("to-tag", text(&call.b)),
        ("sdp", text(&sdes_sdp(a.ip(), a.port(), 1, suite, &second))),
        ("transport-protocol", text("RTP/AVP")),
    ]);
    assert_eq!(reoffer.outcome, Outcome::Ok, "{reoffer:?}");
    assert_eq!(media_port(&sdp_of(&reoffer)), for_b);
    peer.session("new", "outbound", suite, &second);
    a.rtp
        .send_to(
            &peer.protect("old", false, &rtp(2, 0xa5)),
            (LOCALHOST, for_a),
        )
        .unwrap();
    silent(&b.rtp, "the old key after the re-offer");
    let plain = rtp(3, 0xa5);
    a.rtp
        .send_to(&peer.protect("new", false, &plain), (LOCALHOST, for_a))
        .unwrap();
    assert_eq!(arrival(&b.rtp, for_b, "under the new key"), plain);
}

/// A plain offer from A, B's plain answer with `transport-protocol RTP/SAVP` (the offerer's
/// leg made SDES in the answer, as OpenSIPS asks); returns A, B, the SDPs for B and for A.
fn srtp_asked_in_the_answer(relay: &Relay, call: &CallIds) -> (Endpoint, Endpoint, String, String) {
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let to_b = relay.offer(call, &ua_sdp(a.ip(), a.port(), 1, ""), &[]);
    let to_a = relay.answer(
        call,
        &ua_sdp(b.ip(), b.port(), 1, ""),
        &[("transport-protocol", text("RTP/SAVP"))],
    );
    assert!(to_b.contains(" RTP/AVP 0\n"), "{to_b}");
    assert!(to_a.contains(" RTP/SAVP 0\n"), "{to_a}");
    (a, b, to_b, to_a)
}

#[test]
fn the_protocol_change_in_the_answer_makes_a_working_encrypted_leg() {
    // As OpenSIPS sends it: the offerer's leg becomes SRTP in the `answer`; its next SDP
    // (its answer to the re-INVITE, sent to the relay as its re-offer) brings its key.
    let mut peer = libsrtp();
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("sdes-in-answer");
    let (a, b, to_b, to_a) = srtp_asked_in_the_answer(&relay, &call);
    let (suite, relay_key) = crypto_key(&to_a, 5);
    let a_key = b64_key(30, 0xa6);
    let reoffer = relay.request(&[
        ("command", text("offer")),
        ("call-id", text(&call.id)),
        ("from-tag", text(&call.a)),
        ("to-tag", text(&call.b)),
        ("sdp", text(&sdes_sdp(a.ip(), a.port(), 5, &suite, &a_key))),
    ]);
    assert_eq!(reoffer.outcome, Outcome::Ok, "{reoffer:?}");
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    peer.session("a_send", "outbound", &suite, &a_key);
    peer.session("a_recv", "inbound", &suite, &relay_key);
    let plain = rtp(1, 0xa6);
    a.rtp
        .send_to(&peer.protect("a_send", false, &plain), (LOCALHOST, for_a))
        .unwrap();
    assert_eq!(arrival(&b.rtp, for_b, "A's SRTP at B"), plain);
    let plain = rtp(1, 0xb6);
    b.rtp.send_to(&plain, (LOCALHOST, for_b)).unwrap();
    let secured = arrival(&a.rtp, for_a, "B's RTP at A");
    assert_eq!(peer.unprotect("a_recv", false, &secured), Ok(plain));
}

#[test]
fn under_opensips_the_callee_made_sdes_in_the_answer_is_half_keyed_until_its_sdp_comes() {
    // OpenSIPS 3.5.9's rtp_relay_update_callid with {"callee":{"type":"SRTP"}}, as measured
    // (../shared/reference/opensips-reanchor-measured.md) and as its source reads
    // (modules/rtp_relay/rtp_relay_ctx.c): `offer` of the callee's last SDP with the tags
    // reversed (here A is the callee), the caller's 200 as `answer` with `transport-protocol`
    // for the callee, and the callee's 200 to its re-INVITE never handed to the relay. The
    // relay gives the callee every suite and encrypts with the first; a callee that takes the
    // first line hears the caller; what the callee sends cannot be decrypted (its key is in
    // the SDP OpenSIPS keeps to itself): dropped and counted, never relayed in clear.
    let mut peer = libsrtp();
    let relay = Relay::start(4, &[]);
    let call = CallIds::new("opensips-srtp");
    let (callee, caller, to_caller, to_callee) = srtp_asked_in_the_answer(&relay, &call);
    let (suite, relay_key) = crypto_key(&to_callee, 1);
    assert_eq!(suite, "AEAD_AES_256_GCM");
    let (for_callee, for_caller) = (media_port(&to_callee), media_port(&to_caller));
    peer.session("callee_recv", "inbound", &suite, &relay_key);
    peer.session("callee_send", "outbound", &suite, &b64_key(44, 0xa7));
    let plain = rtp(1, 0xb7);
    caller.rtp.send_to(&plain, (LOCALHOST, for_caller)).unwrap();
    let secured = arrival(&callee.rtp, for_callee, "the caller's RTP at the callee");
    assert_eq!(peer.unprotect("callee_recv", false, &secured), Ok(plain));
    let sent = peer.protect("callee_send", false, &rtp(1, 0xa7));
    callee.rtp.send_to(&sent, (LOCALHOST, for_callee)).unwrap();
    silent(&caller.rtp, "the callee's SRTP before its key is known");
    let query = relay.query(&call.id);
    assert_eq!(srtp_counter(&query, &call.a, "other failures"), 1);
    assert_eq!(srtp_counter(&query, &call.a, "decrypted packets"), 0);
}

// ---- 12. Interop: our relay and rtpengine on the two sides of an SRTP hop -------------------

impl Relay {
    /// Debian's rtpengine in userspace on loopback (`anchorage_testkit::media::rtpengine`),
    /// driven through the same ng helpers.
    fn rtpengine() -> Relay {
        let (daemon, ng, ports) = anchorage_testkit::media::rtpengine_with_ports();
        let relay = Relay {
            daemon,
            ng: SocketAddr::new(LOCALHOST, ng),
            client: UdpSocket::bind((LOCALHOST, 0)).unwrap(),
            port_min: *ports.start(),
            port_max: *ports.end(),
        };
        assert_eq!(
            relay.request(&[("command", text("ping"))]).outcome,
            Outcome::Pong
        );
        relay
    }
}

/// A call from plain A through `first` (which makes the hop SRTP) and `second` (which makes it
/// plain again) to plain B: every SDP checked for its profile and keys, then 10 RTP packets
/// each way arrive with exact payloads at the far ends from the advertised ports. Returns the
/// SDP of the hop as `first` offered it and as `second` answered it.
fn srtp_hop(first: &Relay, second: &Relay, name: &str) -> (String, String) {
    let call = CallIds::new(name);
    let (a, b) = (Endpoint::bind(A_IP), Endpoint::bind(B_IP));
    let savp = [("transport-protocol", text("RTP/SAVP"))];
    let avp = [("transport-protocol", text("RTP/AVP"))];
    let hop = first.offer(&call, &ua_sdp(a.ip(), a.port(), 1, ""), &savp);
    assert!(
        hop.contains(" RTP/SAVP 0") && hop.contains("a=crypto:"),
        "{hop}"
    );
    let to_b = second.offer(&call, &hop, &avp);
    assert!(
        to_b.contains(" RTP/AVP 0") && !to_b.contains("a=crypto"),
        "{to_b}"
    );
    let hop_back = second.answer(&call, &ua_sdp(b.ip(), b.port(), 1, ""), &[]);
    assert_eq!(
        hop_back.matches("a=crypto:").count(),
        1,
        "one line answered: {hop_back}"
    );
    let to_a = first.answer(&call, &hop_back, &[]);
    assert!(
        to_a.contains(" RTP/AVP 0") && !to_a.contains("a=crypto"),
        "{to_a}"
    );
    let (for_a, for_b) = (media_port(&to_a), media_port(&to_b));
    assert!(first.in_range(for_a) && second.in_range(for_b));
    for seq in 0..10 {
        relays(&a.rtp, &rtp(seq, 0xa8), for_a, &b.rtp, for_b);
        relays(&b.rtp, &rtp(seq, 0xb8), for_b, &a.rtp, for_a);
    }
    (hop, hop_back)
}

#[test]
fn our_relay_encrypts_an_srtp_hop_that_rtpengine_decrypts_and_back() {
    let ours = Relay::start(4, &[]);
    let engine = Relay::rtpengine();
    let (_, answered) = srtp_hop(&ours, &engine, "interop-ours-first");
    // rtpengine took the first suite our relay offered.
    assert!(
        answered.contains("a=crypto:1 AEAD_AES_256_GCM inline:"),
        "{answered}"
    );
    // Our relay really encrypted and decrypted the hop (its callee side).
    let (query, hop) = srtp_leg(&ours);
    assert_eq!(srtp_counter(&query, &hop, "encrypted packets"), 10);
    assert_eq!(srtp_counter(&query, &hop, "decrypted packets"), 10);
}

/// The only call on `relay`: its `query` and the tag of its one SRTP leg.
fn srtp_leg(relay: &Relay) -> (Reply, String) {
    let call_id = relay.list().pop().expect("the call");
    let query = relay.query(&call_id);
    let tags: Vec<String> = query
        .tags
        .iter()
        .flatten()
        .map(|(tag, _)| tag.clone())
        .filter(|tag| media_value(&query, tag, "SRTP").is_some())
        .collect();
    assert_eq!(tags.len(), 1, "one SRTP leg: {query:?}");
    let tag = tags[0].clone();
    (query, tag)
}

#[test]
fn rtpengine_encrypts_an_srtp_hop_that_our_relay_decrypts_and_back() {
    let engine = Relay::rtpengine();
    let ours = Relay::start(4, &[]);
    let (offered, answered) = srtp_hop(&engine, &ours, "interop-engine-first");
    // Our relay answered rtpengine's first line with its own key.
    let first_line = offered
        .lines()
        .find(|l| l.starts_with("a=crypto:"))
        .and_then(|l| l.split(" inline:").next())
        .unwrap_or_else(|| panic!("{offered}"))
        .to_string();
    assert!(
        answered.contains(&format!("{first_line} inline:")),
        "{first_line}\n{answered}"
    );
    let (query, hop) = srtp_leg(&ours);
    assert_eq!(srtp_counter(&query, &hop, "decrypted packets"), 10);
    assert_eq!(srtp_counter(&query, &hop, "encrypted packets"), 10);
}
