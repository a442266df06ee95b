//! Media anchored by an ng relay under Kamailio's rtpengine module, with RTP sent and checked
//! by the test's own sockets: the SDP each side receives names the relay, and RTP sent to the
//! relay arrives at the other side intact, from the relay port advertised to that side.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anchorage_testkit::calls;
use anchorage_testkit::media::{rtp_flows, rtpengine, sdp_media};
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{free_port, free_udp_port, require_tool, Daemon, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Kamailio with the rtpengine module pointed at `ng_port`, forwarding calls addressed to it
/// to the UAS at `uas_port`. Returns the daemon, its SIP port and its run directory guard.
/// A port taken by another test between choosing and binding it is retried with another.
fn kamailio(ng_port: u16, uas_port: u16) -> (Daemon, u16, tempfile::TempDir) {
    kamailio_with(include_str!("kamailio/kamailio.cfg"), ng_port, uas_port)
}

/// Kamailio running `template` (its media module pointed at `control_port`).
fn kamailio_with(
    template: &str,
    control_port: u16,
    uas_port: u16,
) -> (Daemon, u16, tempfile::TempDir) {
    let ng_port = control_port;
    let kamailio = require_tool("kamailio", "kamailio");
    for _ in 0..5 {
        let run = tempfile::tempdir().unwrap();
        let sip_port = free_port(LOCALHOST);
        let cfg = template
            .replace("@SIP_PORT@", &sip_port.to_string())
            .replace("@NG_PORT@", &ng_port.to_string())
            .replace("@UAS_PORT@", &uas_port.to_string())
            .replace("@RUN_DIR@", &run.path().display().to_string());
        let cfg_path = run.path().join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut cmd = Command::new(&kamailio);
        cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
            .arg(&cfg_path)
            .arg("-Y")
            .arg(run.path());
        let mut daemon = Daemon::spawn("kamailio", &mut cmd);
        let ctl = run.path().join("kamailio_ctl");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !ctl.exists() && daemon.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if ctl.exists() {
            return (daemon, sip_port, run);
        }
        let log = daemon.log();
        assert!(
            log.contains("Address already in use"),
            "kamailio did not start:\n{log}"
        );
    }
    panic!("kamailio could not bind a free port in 5 tries");
}

/// The Call-IDs a relay holds, asked over ng (`list`).
fn relay_calls(ng_port: u16) -> Vec<String> {
    use anchorage_ng::{Cookie, Encoding, Request, RequestKind};
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = Request {
        kind: RequestKind::List,
        flags: anchorage_ng::normalise(&Vec::new()).1,
    };
    let cookie = Cookie::new(&b"test-list"[..]).unwrap();
    let datagram = anchorage_ng::encode_request(&cookie, &request, Encoding::Bencode);
    socket.send_to(&datagram, ("127.0.0.1", ng_port)).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = socket.recv_from(&mut buf).expect("the relay answers list");
    let (_, _, reply) = anchorage_ng::decode_reply(&buf[..n]).unwrap();
    reply.calls.unwrap_or_default()
}

/// A SIPp caller whose SDP names `rtp`, calling the UAS at `uas_port` through the proxy at
/// `sip_port` (see [`anchorage_testkit::calls::media_caller`]).
fn media_caller(sip_port: u16, uas_port: u16, rtp: &UdpSocket, hold_ms: u64) -> SippProcess {
    calls::media_caller(&scenario(""), sip_port, uas_port, rtp, hold_ms)
}

/// A call with RTP both ways through the proxy at `sip_port` (see
/// [`anchorage_testkit::calls::call_through`]).
fn call_through(sip_port: u16, uas_port: u16) -> (SocketAddr, SocketAddr) {
    calls::call_through(&scenario(""), sip_port, uas_port)
}

#[test]
fn kamailio_anchors_a_call_on_debian_rtpengine() {
    let (engine, ng) = rtpengine();
    let uas_port = free_udp_port(LOCALHOST);
    let (kamailio, sip_port, _run) = kamailio(ng, uas_port);
    let (a, b) = call_through(sip_port, uas_port);
    assert_ne!(a.port(), b.port());
    drop(kamailio);
    drop(engine);
}

/// `anchorage proxy` anchoring every call on the relay set `main` (one node at `ng`).
fn anchorage_proxy_with_relay(ng: u16) -> (Daemon, u16, tempfile::NamedTempFile) {
    anchorage_proxy_with_relay_and(ng, "")
}

/// The same, with more configuration (e.g. routing rules; `$PORT` stands for the proxy's port).
fn anchorage_proxy_with_relay_and(ng: u16, extra: &str) -> (Daemon, u16, tempfile::NamedTempFile) {
    let port = free_port(LOCALHOST);
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut config,
        format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{{ name = \"relay-1\", ng = \"127.0.0.1:{ng}\" }}]\n\n\
             [proxy.media]\nset = \"main\"\ncaller_flags = \"replace-origin\"\ncallee_flags = \"replace-origin\"\n{}",
            extra.replace("$PORT", &port.to_string())
        )
        .as_bytes(),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["proxy", "--listen", &format!("udp:127.0.0.1:{port}"), "-c"])
        .arg(config.path());
    let mut daemon = Daemon::spawn("anchorage-proxy", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("SIP udp on"));
    (daemon, port, config)
}

#[test]
fn anchorage_proxy_anchors_a_call_on_debian_rtpengine_and_deletes_it_on_bye() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    let uas_port = free_udp_port(LOCALHOST);
    let (a, b) = call_through(sip_port, uas_port);
    assert_ne!(a.port(), b.port());
    // The BYE deleted the session on the relay.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !relay_calls(ng).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "session left on rtpengine: {:?}",
            relay_calls(ng)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(proxy);
    drop(engine);
}

#[test]
fn an_anchored_invite_routed_back_to_the_proxy_is_a_loop() {
    let (engine, ng) = rtpengine();
    // Every request goes to the proxy's own address: a routing rule that loops.
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay_and(
        ng,
        "[[proxy.route]]\nname = \"loop\"\ndestinations = [{ host = \"127.0.0.1\", port = $PORT }]\n",
    );
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let caller = Sipp::new(
        "uac",
        &scenario("uac_media.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-timeout", "5s"])
    .args([
        "-key",
        "rtp_port",
        &caller_rtp.local_addr().unwrap().port().to_string(),
    ])
    .run(&format!("127.0.0.1:{sip_port}"), Duration::from_secs(15));
    assert!(
        caller
            .received_starting("SIP/2.0 482 Loop Detected")
            .is_some(),
        "{:#?}\n{}",
        caller.received,
        proxy.log()
    );
    assert!(!proxy.log().contains("Message too long"), "{}", proxy.log());
    // The loop's relay session was deleted with the failed INVITE.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !relay_calls(ng).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "session left: {:?}",
            relay_calls(ng)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(engine);
}

/// Runs a caller scenario through the proxy at `sip_port` against a callee scenario.
fn run_pair(uac: &str, uas: &str, sip_port: u16) {
    let uas_port = free_udp_port(LOCALHOST);
    let mut callee = Sipp::new("uas", &scenario(uas), SocketAddr::new(LOCALHOST, uas_port))
        .args(["-m", "1"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    Sipp::new(
        "uac",
        &scenario(uac),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-timeout", "20s", "-timeout_error"])
    .args(["-rsa", &format!("127.0.0.1:{sip_port}")])
    .args(["-key", "contact_host", "127.0.0.1"])
    .run(&format!("127.0.0.1:{uas_port}"), Duration::from_secs(30))
    .assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
}

/// The body of an HTTP GET that must answer 200.
fn http_body(addr: SocketAddr, path: &str) -> String {
    let (status, body) = anchorage_testkit::http(addr, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Asserts how many offers and answers a relay received (rtpengine's log).
fn assert_offers_answers(engine: &Daemon, offers: usize, answers: usize) {
    let log = engine.log();
    assert_eq!(
        log.matches("Received command 'offer'").count(),
        offers,
        "{log}"
    );
    assert_eq!(
        log.matches("Received command 'answer'").count(),
        answers,
        "{log}"
    );
}

/// Waits until the relay holds no session.
fn relay_empties(ng: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !relay_calls(ng).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "session left: {:?}",
            relay_calls(ng)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn relay_session_is_deleted_when_the_callee_refuses_or_the_caller_cancels() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    for (uac, uas) in [
        ("uac_busy.xml", "uas_486.xml"),
        ("uac_cancel.xml", "uas_cancel.xml"),
    ] {
        let offers_before = engine.log().matches("Received command 'offer'").count();
        run_pair(uac, uas, sip_port);
        assert_eq!(
            engine.log().matches("Received command 'offer'").count(),
            offers_before + 1,
            "{uac}: the INVITE's SDP was anchored"
        );
        relay_empties(ng);
    }
    drop(proxy);
}

#[test]
fn a_relay_node_that_does_not_answer_is_found_by_health_checks_and_skipped() {
    let (engine, ng) = rtpengine();
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    let port = free_port(LOCALHOST);
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut config,
        format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n  {{ name = \"dead\", ng = \"127.0.0.1:{dead_port}\" }},\n  {{ name = \"alive\", ng = \"127.0.0.1:{ng}\" }},\n]\n\n[proxy.media]\nset = \"main\"\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["proxy", "--listen", &format!("udp:127.0.0.1:{port}"), "-c"])
        .arg(config.path());
    let mut proxy = Daemon::spawn("anchorage-proxy", &mut cmd);
    proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("SIP udp on"));
    // The health checks find the dead node (three unanswered pings, 200 ms apart) before
    // the call; without them the offer would have waited for the 1 s ng timeout.
    proxy.wait_until(Duration::from_secs(5), |d| {
        d.log().contains("relay node is down")
    });
    let started = std::time::Instant::now();
    let (a, b) = call_through(port, free_udp_port(LOCALHOST));
    assert_ne!(a.port(), b.port());
    assert!(started.elapsed() < Duration::from_secs(10));
    // The dead node was pinged but never offered the call.
    dead.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    while let Ok((n, _)) = dead.recv_from(&mut buf) {
        assert!(
            !buf[..n].windows(5).any(|w| w == b"offer"),
            "a down node got an offer"
        );
        pings += usize::from(buf[..n].windows(4).any(|w| w == b"ping"));
    }
    assert!(pings >= 3, "{pings} pings");
    assert!(!proxy
        .log()
        .contains("relay refused or did not answer an offer"));
    drop(engine);
}

#[test]
fn reinvites_from_both_sides_are_anchored_with_the_senders_tag() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    run_pair("uac_reinvite.xml", "uas_reinvite.xml", sip_port);
    let log = engine.log();
    // Initial INVITE, the caller's hold re-INVITE and the callee's re-INVITE: three offers and
    // three answers, all on the one relay.
    assert_offers_answers(&engine, 3, 3);
    // The callee's offer names the callee as offerer: its tag (SIPpTag01…) is the from-tag.
    let offers: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Dump for 'offer'"))
        .collect();
    assert_eq!(offers.len(), 3);
    assert!(
        offers[0].contains(r#""from-tag": ""#) && offers[0].contains("SIPpTag00"),
        "{}",
        offers[0]
    );
    let from_tag = |l: &str| {
        l.split(r#""from-tag": ""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    assert!(from_tag(offers[0]).contains("SIPpTag00"));
    assert!(
        from_tag(offers[1]).contains("SIPpTag00"),
        "the caller's re-INVITE"
    );
    assert!(
        from_tag(offers[2]).contains("SIPpTag01"),
        "the callee's re-INVITE: {}",
        offers[2]
    );
    // The callee's BYE deleted the session.
    relay_empties(ng);
    drop(proxy);
}

#[test]
fn late_offer_in_the_200_and_answer_in_the_ack_are_anchored() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    let uas_port = free_udp_port(LOCALHOST);
    let mut callee = Sipp::new(
        "uas",
        &scenario("uas.xml"),
        SocketAddr::new(LOCALHOST, uas_port),
    )
    .args(["-m", "1"])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller = Sipp::new(
        "uac",
        &scenario("uac_late.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-timeout", "20s", "-timeout_error"])
    .args(["-rsa", &format!("127.0.0.1:{sip_port}")])
    .run(&format!("127.0.0.1:{uas_port}"), Duration::from_secs(30));
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    // The callee's offer reached the caller rewritten by the relay, and the caller's answer
    // reached the callee rewritten too: neither side sees the other's address.
    let ok = caller.received_starting("SIP/2.0 200 OK").unwrap();
    let offered_by_callee = callee
        .sent
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .unwrap();
    assert_ne!(sdp_media(ok), sdp_media(offered_by_callee), "{ok}");
    let ack = callee.received_starting("ACK ").unwrap();
    let answered_by_caller = caller.sent.iter().find(|m| m.starts_with("ACK ")).unwrap();
    assert_ne!(sdp_media(ack), sdp_media(answered_by_caller), "{ack}");
    assert_offers_answers(&engine, 1, 1);
    relay_empties(ng);
    drop(proxy);
}

#[test]
fn reliable_183_with_prack_and_an_update_are_anchored() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    run_pair("uac_prack.xml", "uas_prack.xml", sip_port);
    // The INVITE's offer and the UPDATE's offer; the 183's answer and the UPDATE 200's answer.
    // The 200 to the INVITE carries no SDP and the PRACK none either: nothing to anchor.
    assert_offers_answers(&engine, 2, 2);
    relay_empties(ng);
    drop(proxy);
}

#[test]
fn up_with_external_relays_anchors_calls_on_them() {
    let (engine, ng) = rtpengine();
    let port = free_port(LOCALHOST);
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["up", "--external-relays", "--relays", "1"])
        .args(["--ng-base", &ng.to_string()])
        .args(["--sip", &format!("127.0.0.1:{port}")])
        .args(["--api", &api.to_string()]);
    let mut up = Daemon::spawn("anchorage-up", &mut cmd);
    up.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    assert!(
        up.log()
            .contains(&format!("relay relay-a (set default) at ng 127.0.0.1:{ng}")),
        "{}",
        up.log()
    );
    let (a, b) = call_through(port, free_udp_port(LOCALHOST));
    assert_ne!(a.port(), b.port());
    relay_empties(ng);
    // The API lists the relay; the call ended, so none is anchored on it now.
    let relays: serde_json::Value = serde_json::from_str(&http_body(api, "/v1/relays")).unwrap();
    let relay = &relays["relays"][0];
    assert_eq!(relay["name"], "relay-a", "{relays}");
    assert_eq!(relay["ng"], format!("127.0.0.1:{ng}"));
    assert_eq!(
        (relay["weight"].as_u64(), relay["calls"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(relay["state"], "up", "rtpengine answers the health pings");
    assert_eq!(relay["draining"], false);
    assert!(http_body(api, "/metrics").contains("anchorage_relay_calls{relay=\"relay-a\"} 0"));
    drop(up);
    drop(engine);
}

/// Our own relay node (`anchorage relay`) on loopback, one worker thread, ports released at
/// once; returns it, its ng port, its /metrics address and its media port range.
fn anchorage_relay() -> (Daemon, u16, SocketAddr, std::ops::RangeInclusive<u16>) {
    let metrics = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let relay = anchorage_testkit::AnchorageRelay::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &["--metrics", &metrics.to_string()],
    );
    (relay.daemon, relay.ng, metrics, relay.ports)
}

/// A counter or gauge from a Prometheus text page.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

/// Waits (up to 5 s: the relay refreshes its metrics every second) until `name` reaches `at_least`.
fn wait_for_metric(addr: SocketAddr, name: &str, at_least: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(&http_body(addr, "/metrics"), name);
        if value >= at_least || std::time::Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kamailio_anchors_a_call_on_the_anchorage_relay() {
    let (relay, ng, metrics, range) = anchorage_relay();
    let uas_port = free_udp_port(LOCALHOST);
    let (kamailio, sip_port, _run) = kamailio(ng, uas_port);
    let (a, b) = call_through(sip_port, uas_port);
    // Both parties were given our relay's ports…
    for addr in [a, b] {
        assert_eq!(addr.ip(), LOCALHOST);
        assert!(
            range.contains(&addr.port()),
            "{addr} is not our relay's port"
        );
    }
    assert_ne!(a.port(), b.port());
    // …and our relay carried the 20 + 20 packets the phones exchanged (call_through checked
    // each one arrived, intact, from the right relay port).
    let forwarded = wait_for_metric(metrics, "anchorage_relay_forwarded_packets_total", 40);
    assert!(forwarded >= 40, "relay forwarded {forwarded} packets");
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_offers_total", 1),
        1
    );
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_answers_total", 1),
        1
    );
    // Kamailio's rtpengine_delete() on the BYE deleted the session.
    relay_empties(ng);
    assert_eq!(
        metric(
            &http_body(metrics, "/metrics"),
            "anchorage_relay_ng_errors_total"
        ),
        0
    );
    drop(kamailio);
    drop(relay);
}

#[test]
fn kamailio_rtpproxy_module_anchors_a_call_on_the_anchorage_relay() {
    // Our relay answering RTPProxy's protocol, driven by Kamailio's `rtpproxy` module
    // (rtpproxy_manage: U for the INVITE's SDP, L for the 200's, D on the BYE).
    let metrics = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let rtpp = free_udp_port(LOCALHOST);
    let ng = free_udp_port(LOCALHOST);
    // Media ports below the ephemeral range: a block of 100 among the ephemeral ports can be
    // hard to find on a busy host.
    let base = anchorage_testkit::free_udp_block_below_ephemeral(100);
    let ports = base..=base + 99;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["relay", "--interface", "127.0.0.1", "--num-threads", "1"])
        .args(["--delete-delay", "0"])
        .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
        .args(["--listen-rtpp", &format!("udp:127.0.0.1:{rtpp}")])
        .args(["--metrics", &metrics.to_string()])
        .args(["--port-min", &ports.start().to_string()])
        .args(["--port-max", &ports.end().to_string()]);
    let mut daemon = Daemon::spawn("anchorage-relay", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| {
        d.log().contains("rtpproxy on udp:")
    });
    let relay = anchorage_testkit::AnchorageRelay { daemon, ng, ports };
    let uas_port = free_udp_port(LOCALHOST);
    let (kamailio, sip_port, _run) = kamailio_with(
        include_str!("kamailio/kamailio-rtpproxy.cfg"),
        rtpp,
        uas_port,
    );
    let (a, b) = call_through(sip_port, uas_port);
    // Both parties were given our relay's ports…
    for addr in [a, b] {
        assert_eq!(addr.ip(), LOCALHOST);
        assert!(
            relay.ports.contains(&addr.port()),
            "{addr} is not our relay's port:\n{}",
            kamailio.log()
        );
    }
    assert_ne!(a.port(), b.port());
    // …and our relay carried the 20 + 20 packets the phones exchanged.
    let forwarded = wait_for_metric(metrics, "anchorage_relay_forwarded_packets_total", 40);
    assert!(forwarded >= 40, "relay forwarded {forwarded} packets");
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_offers_total", 1),
        1
    );
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_answers_total", 1),
        1
    );
    // The BYE's rtpproxy_destroy() deleted the session.
    relay_empties(relay.ng);
    let page = http_body(metrics, "/metrics");
    assert_eq!(
        metric(&page, "anchorage_relay_ng_errors_total"),
        0,
        "{page}"
    );
    let log = relay.daemon.log();
    assert!(!log.contains("rtpproxy command failed"), "{log}");
    assert!(!log.contains("malformed rtpproxy command"), "{log}");
    drop(kamailio);
    drop(relay);
}

#[test]
fn anchorage_proxy_and_anchorage_relay_carry_a_call_and_both_sides_reinvites() {
    let (relay, ng, metrics, range) = anchorage_relay();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    let uas_port = free_udp_port(LOCALHOST);
    let (a, b) = call_through(sip_port, uas_port);
    assert!(range.contains(&a.port()) && range.contains(&b.port()));
    relay_empties(ng);
    // Re-INVITEs from the caller (hold) and the callee: three offers and three answers on the
    // same relay session, then the callee's BYE deletes it.
    run_pair("uac_reinvite.xml", "uas_reinvite.xml", sip_port);
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_offers_total", 4),
        4
    );
    assert_eq!(
        wait_for_metric(metrics, "anchorage_relay_answers_total", 4),
        4
    );
    relay_empties(ng);
    let page = http_body(metrics, "/metrics");
    assert_eq!(
        metric(&page, "anchorage_relay_ng_errors_total"),
        0,
        "{page}"
    );
    assert_eq!(
        metric(&page, "anchorage_relay_sessions_managed_total"),
        2,
        "{page}"
    );
    drop(proxy);
    drop(relay);
}

#[test]
fn up_with_zero_config_anchors_a_call_with_rtp_on_its_built_in_relays() {
    let port = free_port(LOCALHOST);
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    // Two ng ports and media ranges of our own so this can run beside other tests.
    let ng_base = loop {
        let p = free_udp_port(LOCALHOST);
        if UdpSocket::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let media_base = 44000 + (std::process::id() % 20) as u16 * 10;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["up", "--sip", &format!("127.0.0.1:{port}")])
        .args(["--api", &api.to_string()])
        .args(["--ng-base", &ng_base.to_string()])
        .args(["--media-base", &media_base.to_string()]);
    let mut up = Daemon::spawn("anchorage-up", &mut cmd);
    up.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let log = up.log();
    assert!(
        log.contains(&format!("relay relay-a with ng on udp:127.0.0.1:{ng_base}"))
            && log.contains(&format!(
                "relay relay-b with ng on udp:127.0.0.1:{}",
                ng_base + 1
            )),
        "{log}"
    );
    let (a, b) = call_through(port, free_udp_port(LOCALHOST));
    // Both sides were given ports of one built-in relay (the least loaded: relay-a or relay-b).
    let relay_range = |p: u16| (p - media_base) / 5000;
    assert_eq!(relay_range(a.port()), relay_range(b.port()), "{a} {b}");
    assert!(a.port() >= media_base && a.port() < media_base + 10000);
    let ng = ng_base + relay_range(a.port());
    relay_empties(ng);
    let relays: serde_json::Value = serde_json::from_str(&http_body(api, "/v1/relays")).unwrap();
    assert_eq!(
        relays["relays"].as_array().map(Vec::len),
        Some(2),
        "{relays}"
    );
    drop(up);
}

#[test]
fn a_late_offer_in_a_reliable_183_is_answered_in_the_prack_through_the_relay() {
    let (engine, ng) = rtpengine();
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay(ng);
    run_pair("uac_prack_late.xml", "uas_prack_late.xml", sip_port);
    // The callee's offer (in the 183) and the caller's answer (in the PRACK) both went through
    // the relay; the callee's scenario fails if the PRACK reached it without an SDP.
    assert_offers_answers(&engine, 1, 1);
    let log = engine.log();
    let answer = log
        .lines()
        .find(|l| l.contains("Dump for 'answer'"))
        .expect("the answer");
    let from_tag = answer
        .split(r#""from-tag": ""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("");
    assert!(
        from_tag.contains("SIPpTag01"),
        "from-tag is the offerer's (the callee's): {answer}"
    );
    relay_empties(ng);
    drop(proxy);
}

#[test]
fn a_parallel_fork_gives_each_callee_its_own_relay_ports_and_the_loser_is_deleted() {
    let (relay, ng, metrics, range) = anchorage_relay();
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (winner_port, loser_port) = (free_udp_port(LOCALHOST), free_udp_port(LOCALHOST));
    let (proxy, sip_port, _config) = anchorage_proxy_with_relay_and(
        ng,
        &format!(
            "\n[[proxy.route]]\nname = \"fork\"\nmatch = {{ methods = [\"INVITE\"] }}\n\
             fork = \"parallel\"\ndestinations = [{{ host = \"127.0.0.1\", port = {winner_port} }}, \
             {{ host = \"127.0.0.1\", port = {loser_port} }}]\n"
        ),
    );
    let mut winner = Sipp::new(
        "uas",
        &scenario("uas_media.xml"),
        SocketAddr::new(LOCALHOST, winner_port),
    )
    .args([
        "-m",
        "1",
        "-key",
        "rtp_port",
        &callee_rtp.local_addr().unwrap().port().to_string(),
    ])
    .spawn();
    let mut loser = Sipp::new(
        "uas",
        &scenario("uas_cancel.xml"),
        SocketAddr::new(LOCALHOST, loser_port),
    )
    .args(["-m", "1"])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    // A hold long enough for the check below on a loaded machine (the BYE deletes the rest).
    let mut caller = media_caller(sip_port, winner_port, &caller_rtp, 8000);
    let at_winner = winner.wait_for_received("INVITE ", Duration::from_secs(10));
    let at_loser = loser.wait_for_received("INVITE ", Duration::from_secs(10));
    let (winner_relay, loser_relay) = (sdp_media(&at_winner), sdp_media(&at_loser));
    assert_ne!(
        winner_relay, loser_relay,
        "each fork branch has its own relay ports"
    );
    assert!(range.contains(&winner_relay.port()) && range.contains(&loser_relay.port()));
    let ok = caller.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let caller_relay = sdp_media(&ok);
    rtp_flows(&caller_rtp, caller_relay, &callee_rtp, winner_relay, 0x5151);
    rtp_flows(&callee_rtp, winner_relay, &caller_rtp, caller_relay, 0x5252);
    // The losing branch's session is gone: one dialog left on the relay.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = http_body(metrics, "/metrics");
        if metric(&page, "anchorage_relay_active_sessions") == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    caller.finish(Duration::from_secs(20)).assert_success();
    winner.finish(Duration::from_secs(10)).assert_success();
    loser.finish(Duration::from_secs(10)).assert_success();
    relay_empties(ng);
    drop(proxy);
    drop(relay);
}
