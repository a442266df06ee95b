//! System tests of `anchorage relay --listen-rtpp`: RTPProxy's control protocol, sent as raw
//! datagrams the way Kamailio's `rtpproxy` module writes them, against a relay node of the
//! test's own; RTP from real UDP sockets standing in for the parties — A on 127.0.0.2, B on
//! 127.0.0.3. The expected replies are RTPProxy's own (checked against RTPProxy 3 from the
//! `rtp.io` package: `c 20040107`, `c 1`, `c 20090 127.0.0.1`, `c 0`, `c E50`, `c E0`, …).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anchorage_testkit::rtpproxy::RtpProxy;
use anchorage_testkit::{free_udp_block_below_ephemeral, free_udp_port, Daemon, LOCALHOST};

const A_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const B_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

fn unique() -> u32 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A running relay answering RTPProxy commands.
struct Relay {
    daemon: Daemon,
    rtpp: SocketAddr,
    client: UdpSocket,
}

impl Relay {
    fn start(extra: &[&str]) -> Relay {
        Self::start_on(&["127.0.0.1"], extra)
    }

    /// A relay with these `--interface`s.
    fn start_on(interfaces: &[&str], extra: &[&str]) -> Relay {
        let client = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        let port_min = free_udp_block_below_ephemeral(40);
        for _ in 0..5 {
            let ng = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
            let rtpp = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
            let mut command = Command::new(env!("CARGO_BIN_EXE_anchorage"));
            command
                .arg("relay")
                .args(["--listen-ng", &ng.to_string()])
                .args(["--listen-rtpp", &format!("udp:{rtpp}")])
                .args(interfaces.iter().flat_map(|i| ["--interface", i]))
                .args(["--port-min", &port_min.to_string()])
                .args(["--port-max", &(port_min + 39).to_string()])
                .args(["--num-threads", "1", "--delete-delay", "0"])
                .args(extra);
            let daemon = Daemon::spawn("anchorage-relay", &mut command);
            let mut relay = Relay {
                daemon,
                rtpp,
                client: client.try_clone().unwrap(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if relay.try_command("start V", 100).is_some() {
                    return relay;
                }
                if !relay.daemon.is_running() {
                    let log = relay.daemon.log();
                    assert!(log.contains("cannot bind"), "the relay exited:\n{log}");
                    break; // a control port was taken meanwhile: others
                }
                assert!(
                    Instant::now() < deadline,
                    "no answer to V:\n{}",
                    relay.daemon.log()
                );
            }
        }
        panic!("the relay could not bind its control ports in 5 tries");
    }

    fn raw(&self, datagram: &[u8], wait_ms: u64) -> Option<String> {
        self.client.send_to(datagram, self.rtpp).unwrap();
        self.client
            .set_read_timeout(Some(Duration::from_millis(wait_ms)))
            .unwrap();
        let mut buf = vec![0u8; 65_536];
        match self.client.recv_from(&mut buf) {
            Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    fn try_command(&self, command: &str, wait_ms: u64) -> Option<String> {
        self.raw(command.as_bytes(), wait_ms)
    }

    /// Sends `COOKIE command` and returns the reply after the cookie (the newline kept).
    fn command(&self, command: &str) -> String {
        let cookie = format!("{}_{}", std::process::id(), unique());
        let reply = self
            .try_command(&format!("{cookie} {command}"), 2_000)
            .unwrap_or_else(|| panic!("no reply to {command}; log:\n{}", self.daemon.log()));
        reply
            .strip_prefix(&format!("{cookie} "))
            .unwrap_or_else(|| panic!("reply {reply:?} does not start with the cookie"))
            .to_owned()
    }

    /// A `U`/`L` reply's port, checking the address is the relay's.
    fn port(&self, command: &str) -> u16 {
        let reply = self.command(command);
        let words: Vec<&str> = reply.split_whitespace().collect();
        assert_eq!(words.len(), 2, "{command} -> {reply:?}");
        assert_eq!(words[1], "127.0.0.1", "{command} -> {reply:?}");
        assert!(reply.ends_with('\n'));
        words[0].parse().unwrap()
    }
}

fn party(ip: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket
}

/// An RTP packet (version 2, PCMU) with `seq`.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Sends from `from` to the relay's `port`; `to` must receive it from `expected_source`.
fn relayed(from: &UdpSocket, port: u16, to: &UdpSocket, expected_source: u16, seq: u16) {
    from.send_to(&rtp(seq), (LOCALHOST, port)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, source) = to
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("packet {seq} to relay port {port} not relayed: {e}"));
    assert_eq!(&buf[..n], &rtp(seq)[..]);
    assert_eq!(source, SocketAddr::new(LOCALHOST, expected_source));
}

#[test]
fn version_capabilities_and_info_as_rtpproxy() {
    let relay = Relay::start(&[]);
    assert_eq!(relay.command("V"), "20040107\n");
    assert_eq!(relay.command("VF 20050322"), "1\n"); // Kamailio's and OpenSIPS' requirement
    assert_eq!(relay.command("VF 20081102"), "1\n");
    assert_eq!(relay.command("VF 20071116"), "0\n"); // re-packetisation: not done
    assert_eq!(relay.command("VF 20999999"), "0\n");
    let info = relay.command("I");
    assert!(
        info.starts_with("sessions created: 0\nactive sessions: 0\n"),
        "{info:?}"
    );
    assert!(relay.command("Ib").contains("active streams: 0\n"));
}

#[test]
fn offer_answer_relays_rtp_then_delete_and_query_say_gone() {
    let relay = Relay::start(&[]);
    let a = party(A_IP);
    let b = party(B_IP);
    let a_port = a.local_addr().unwrap().port();
    let b_port = b.local_addr().unwrap().port();
    let call = format!("call-{}@test", unique());
    // Kamailio's offer: the codec list as a modifier, tags with the medianum.
    let offer = format!(
        "{}_u Uc0,101 {call} 127.0.0.2 {a_port} ft;1\n",
        std::process::id()
    );
    let reply = relay.raw(offer.as_bytes(), 2_000).expect("reply to U");
    let to_b: u16 = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    // A retransmission (same cookie, same source) gets the same reply, no second session.
    assert_eq!(
        relay.raw(offer.as_bytes(), 2_000).as_deref(),
        Some(reply.as_str())
    );
    let to_a = relay.port(&format!("L {call} 127.0.0.3 {b_port} ft;1 tt;1"));
    assert_ne!(to_a, to_b);
    // A re-offer from the caller keeps its ports.
    assert_eq!(
        relay.port(&format!("U {call} 127.0.0.2 {a_port} ft;1 tt;1")),
        to_b
    );
    assert!(relay.command("I").contains("active sessions: 1\n"));
    // RTP both ways, symmetric: each party hears the port it sends to.
    for seq in 0..3 {
        relayed(&a, to_a, &b, to_b, seq);
        relayed(&b, to_b, &a, to_a, 100 + seq);
    }
    // Q: ttl, packets from ft, packets from tt, relayed, dropped.
    let q = relay.command(&format!("Q {call} ft tt"));
    let numbers: Vec<u64> = q.split_whitespace().map(|n| n.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 5, "{q:?}");
    assert_eq!(numbers[0], 60, "ttl is the media timeout: {q:?}");
    assert_eq!((numbers[1], numbers[2], numbers[3]), (3, 3, 6), "{q:?}");
    let qv = relay.command(&format!("Qv {call} ft;1 tt;1 npkts_ina nrelayed"));
    assert_eq!(qv, "npkts_ina=3 nrelayed=6\n");
    assert_eq!(relay.command(&format!("Q {call} ft tt rtpa_jmax")), "E62\n");
    // D (Kamailio's rtpproxy_destroy: no medianum) ends every stream of the call.
    assert_eq!(relay.command(&format!("D {call} ft tt")), "0\n");
    assert_eq!(relay.command(&format!("Q {call} ft tt")), "E50\n");
    assert_eq!(relay.command(&format!("D {call} ft tt")), "E50\n");
    assert_eq!(
        relay.command(&format!("L {call} 127.0.0.3 {b_port} ft;1 tt;1")),
        "0\n"
    );
    assert!(relay.command("I").contains("active sessions: 0\n"));
    // Its ports forward nothing any more.
    a.send_to(&rtp(9), (LOCALHOST, to_a)).unwrap();
    b.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(b.recv_from(&mut [0u8; 2048]).is_err(), "relayed after D");
}

#[test]
fn each_medianum_is_a_stream_of_its_own() {
    let relay = Relay::start(&[]);
    let call = format!("call-{}@test", unique());
    let (a1, a2, b1, b2) = (party(A_IP), party(A_IP), party(B_IP), party(B_IP));
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let to_b1 = relay.port(&format!("U {call} 127.0.0.2 {} ft;1", port(&a1)));
    let to_b2 = relay.port(&format!("U {call} 127.0.0.2 {} ft;2", port(&a2)));
    let to_a1 = relay.port(&format!("L {call} 127.0.0.3 {} ft;1 tt;1", port(&b1)));
    let to_a2 = relay.port(&format!("L {call} 127.0.0.3 {} ft;2 tt;2", port(&b2)));
    let all = [to_b1, to_b2, to_a1, to_a2];
    for (i, p) in all.iter().enumerate() {
        assert!(!all[..i].contains(p), "ports reused: {all:?}");
    }
    relayed(&a1, to_a1, &b1, to_b1, 1);
    relayed(&a2, to_a2, &b2, to_b2, 2);
    relayed(&b2, to_b2, &a2, to_a2, 3);
    // D of one medianum leaves the other.
    assert_eq!(relay.command(&format!("D {call} ft;2 tt;2")), "0\n");
    assert_eq!(relay.command(&format!("Q {call} ft;2 tt;2")), "E50\n");
    relayed(&b1, to_b1, &a1, to_a1, 4);
    assert_eq!(relay.command(&format!("D {call} ft")), "0\n");
    assert_eq!(relay.command(&format!("Q {call} ft tt")), "E50\n");
}

#[test]
fn malformed_commands_get_errors_and_disturb_nothing() {
    let relay = Relay::start(&[]);
    let (a, b) = (party(A_IP), party(B_IP));
    let call = format!("call-{}@test", unique());
    let to_b = relay.port(&format!(
        "U {call} 127.0.0.2 {} ft;1",
        a.local_addr().unwrap().port()
    ));
    let to_a = relay.port(&format!(
        "L {call} 127.0.0.3 {} ft;1 tt;1",
        b.local_addr().unwrap().port()
    ));
    for (command, expected) in [
        ("FOO", "E0\n"),                             // unknown command
        ("U", "E1\n"),                               // arguments missing
        ("Vx", "E2\n"),                              // V takes no modifiers
        ("U c 127.0.0.2 4000 ft && Q c ft", "E3\n"), // sub-commands
        ("U c nowhere 4000 ft", "E37\n"),            // not an address
        ("U c 127.0.0.2 99999 ft", "E37\n"),         // not a port
        ("U c 127.0.0.2 4000 ft;x", "E37\n"),        // bad medianum
        ("UZ0 c 127.0.0.2 4000 ft", "E13\n"),        // bad ptime
        ("Uq c 127.0.0.2 4000 ft", "E35\n"),         // unknown modifier
        ("UZ20 c 127.0.0.2 4000 ft", "E35\n"),       // re-packetisation: not done
        ("UEIE c 127.0.0.2 4000 ft", "E11\n"),       // a third bridging letter
        ("UIEI c 127.0.0.2 4000 ft", "E12\n"),       // a third bridging letter
        ("R c ft", "E0\n"),                          // recording: not done
        ("D nosuchcall ft", "E50\n"),
        ("Q nosuchcall ft tt", "E50\n"),
    ] {
        assert_eq!(relay.command(command), expected, "{command}");
    }
    // Not text after the cookie: an error to the cookie; nothing at all: no reply.
    assert_eq!(
        relay.raw(b"bin1 U \xff\xfe", 2_000).as_deref(),
        Some("bin1 E1\n")
    );
    assert_eq!(relay.raw(b"   ", 300), None);
    // The call is untouched and the relay still takes new ones.
    relayed(&a, to_a, &b, to_b, 7);
    relayed(&b, to_b, &a, to_a, 8);
    assert!(relay.command("I").contains("active sessions: 1\n"));
    let other = format!("call-{}@test", unique());
    relay.port(&format!("U {other} 127.0.0.2 5000 x;1"));
}

#[test]
fn the_control_allow_list_applies_to_the_rtpproxy_socket() {
    let client = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let rtpp = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let port_min = free_udp_block_below_ephemeral(4);
    let mut command = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    command
        .arg("relay")
        .args([
            "--listen-ng",
            &format!("127.0.0.1:{}", free_udp_port(LOCALHOST)),
        ])
        .args(["--listen-rtpp", &format!("udp:{rtpp}")])
        .args(["--control-allow", "192.0.2.0/24"])
        .args(["--interface", "127.0.0.1"])
        .args(["--port-min", &port_min.to_string()])
        .args(["--port-max", &(port_min + 3).to_string()]);
    let mut daemon = Daemon::spawn("anchorage-relay", &mut command);
    daemon.wait_until(Duration::from_secs(10), |d| {
        d.log().contains("RTPProxy control protocol")
    });
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..3 {
        client.send_to(b"c1 V", rtpp).unwrap();
        assert!(
            client.recv_from(&mut [0u8; 256]).is_err(),
            "a source outside relay.control_allow was answered"
        );
    }
    assert!(daemon.is_running());
}

#[test]
fn an_rtpproxy_socket_off_loopback_needs_an_allow_list() {
    let port_min = free_udp_block_below_ephemeral(4);
    let mut command = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    command
        .arg("relay")
        .args([
            "--listen-ng",
            &format!("127.0.0.1:{}", free_udp_port(LOCALHOST)),
        ])
        .args(["--listen-rtpp", "udp:0.0.0.0:22222"])
        .args(["--interface", "127.0.0.1"])
        .args(["--port-min", &port_min.to_string()])
        .args(["--port-max", &(port_min + 3).to_string()]);
    let mut daemon = Daemon::spawn("anchorage-relay", &mut command);
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("the relay must refuse to start");
    assert!(!status.success());
    let log = daemon.log();
    assert!(
        log.contains("rtpproxy control socket 0.0.0.0:22222")
            && log.contains("relay.control_allow"),
        "{log}"
    );
}

/// The `PORT ADDRESS` of a `U`/`L` reply (RTPProxy's or ours), or the error as it is.
fn port_address(reply: &str) -> Result<(u16, IpAddr), String> {
    let words: Vec<&str> = reply.split_whitespace().collect();
    match words[..] {
        [port, address] => Ok((
            port.parse().map_err(|_| reply.to_string())?,
            address.parse().map_err(|_| reply.to_string())?,
        )),
        _ => Err(reply.trim_end().to_string()),
    }
}

/// Sends RTP from `from` to `to`, which `party` must receive from `source`.
fn relayed_between(
    from: &UdpSocket,
    to: (IpAddr, u16),
    party: &UdpSocket,
    source: (IpAddr, u16),
    seq: u16,
) {
    from.send_to(&rtp(seq), to).unwrap();
    let mut buf = [0u8; 2048];
    let (n, came_from) = party
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("packet {seq} to {to:?} not relayed: {e}"));
    assert_eq!(&buf[..n], &rtp(seq)[..]);
    assert_eq!(came_from, SocketAddr::new(source.0, source.1));
}

/// RTPProxy's bridging letters: the first names the interface facing the command's sender,
/// the second the one facing the other party, a side not named is on the internal interface,
/// and a third letter is an error. Our relay with interfaces `internal` (127.0.0.1) and
/// `external` (127.0.0.4) answers every `U`/`L` pair with the addresses a real RTPProxy in
/// bridge mode (`-l 127.0.0.1/127.0.0.4`: internal first) answers, and relays RTP between
/// the two.
#[test]
fn bridging_letters_pick_the_internal_and_external_interface_as_rtpproxy_in_bridge_mode() {
    const INTERNAL: &str = "127.0.0.1";
    const EXTERNAL: &str = "127.0.0.4";
    let relay = Relay::start_on(
        &[
            &format!("internal/{INTERNAL}"),
            &format!("external/{EXTERNAL}"),
        ],
        &[],
    );
    let rtpproxy = RtpProxy::start_with(&["-l", &format!("{INTERNAL}/{EXTERNAL}")]);
    // (U's letters, L's letters, the U's address (given to the callee), the L's (given to
    // the caller)).
    let cases = [
        ("", "", INTERNAL, INTERNAL),
        ("E", "", INTERNAL, EXTERNAL),
        ("I", "", INTERNAL, INTERNAL),
        ("EI", "EI", INTERNAL, EXTERNAL),
        ("IE", "IE", EXTERNAL, INTERNAL),
        ("EE", "", EXTERNAL, EXTERNAL),
        // An `L` finds the sockets its `U` made: its own letters change nothing.
        ("II", "EE", INTERNAL, INTERNAL),
    ];
    for (n, (u, l, to_callee, to_caller)) in cases.into_iter().enumerate() {
        let (a, b) = (party(A_IP), party(B_IP));
        let call = format!("bridge-{n}-{}", unique());
        let offer = format!("U{u} {call} {A_IP} {} ft;1", a.local_addr().unwrap().port());
        let answer = format!(
            "L{l} {call} {B_IP} {} ft;1 tt;1",
            b.local_addr().unwrap().port()
        );
        let theirs = (
            port_address(&rtpproxy.command(&offer).unwrap_or_default()),
            port_address(&rtpproxy.command(&answer).unwrap_or_default()),
        );
        let ours = (
            port_address(&relay.command(&offer)),
            port_address(&relay.command(&answer)),
        );
        let expected = (to_callee.parse().unwrap(), to_caller.parse().unwrap());
        for (who, (u_reply, l_reply)) in [("RTPProxy", &theirs), ("our relay", &ours)] {
            let addresses = (u_reply.clone().map(|r| r.1), l_reply.clone().map(|r| r.1));
            assert_eq!(
                addresses,
                (Ok(expected.0), Ok(expected.1)),
                "{who}: {offer} / {answer}"
            );
        }
        // RTP both ways between the two interfaces of our relay.
        let ((to_b, _), (to_a, _)) = (ours.0.unwrap(), ours.1.unwrap());
        relayed_between(&a, (expected.1, to_a), &b, (expected.0, to_b), 1);
        relayed_between(&b, (expected.0, to_b), &a, (expected.1, to_a), 2);
        assert_eq!(relay.command(&format!("D {call} ft")), "0\n");
        assert_eq!(
            rtpproxy.command(&format!("D {call} ft")).as_deref(),
            Some("0")
        );
    }
    for (command, code) in [
        ("UEIE c 127.0.0.2 4000 ft;1", "E11"),
        ("UIEI c 127.0.0.2 4000 ft;1", "E12"),
    ] {
        assert_eq!(
            rtpproxy.command(command).as_deref(),
            Some(code),
            "RTPProxy: {command}"
        );
        assert_eq!(relay.command(command), format!("{code}\n"), "{command}");
    }
}

/// A relay with one interface takes the bridging letters too (a real RTPProxy started with
/// one address refuses them with `E11`/`E12`): both sides get its one address.
#[test]
fn a_relay_with_one_interface_takes_bridging_letters_and_uses_its_address() {
    let relay = Relay::start(&[]);
    let (a, b) = (party(A_IP), party(B_IP));
    let call = format!("one-{}", unique());
    let to_b = relay.port(&format!(
        "UEI {call} 127.0.0.2 {} ft;1",
        a.local_addr().unwrap().port()
    ));
    let to_a = relay.port(&format!(
        "LIE {call} 127.0.0.3 {} ft;1 tt;1",
        b.local_addr().unwrap().port()
    ));
    relayed(&a, to_a, &b, to_b, 1);
    relayed(&b, to_b, &a, to_a, 2);
    for u in ["E", "I", "EE", "II", "IE"] {
        let other = format!("one-{u}-{}", unique());
        relay.port(&format!("U{u} {other} 127.0.0.2 4000 x;1"));
    }
    assert_eq!(relay.command("UEEE c 127.0.0.2 4000 ft;1"), "E11\n");
}
