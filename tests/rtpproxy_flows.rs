//! Call flows through a proxy whose only relay set holds real RTPProxy nodes (sippy's, from
//! the PyPI package `rtp.io`): late offer, reliable 183 with PRACK (answer in the 183, or offer
//! in the 183 and answer in the PRACK), UPDATE, re-INVITEs from either party, hold and resume,
//! 486, CANCEL and a parallel fork. Each test checks what the parties receive (the node's
//! address and ports, direction attributes kept), that RTP goes through the node where media
//! exists (and the node's own counters agree), and that the node holds no session afterwards
//! (its own `I` statistics). Then the per-leg options on RTPProxy nodes: a leg `type` only an
//! ng node can give leaves the node out (503 when no other is left), and a leg's `ip` is the
//! address its SDP names.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anchorage_testkit::media::{rtp_flows, sdp_media};
use anchorage_testkit::rtpproxy::{proxy_config, RtpProxy};
use anchorage_testkit::sipp::{Sipp, SippProcess, SippRun};
use anchorage_testkit::{free_udp_port, AnchorageProxy, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Health checks that tolerate a machine loaded by other tests: these calls are about flows,
/// not failover, and a node declared down mid-call would be moved (3 s of silence, not 0.6 s).
const PATIENT_HEALTH: &str = "\n[proxy.relay_health]\ndown_after = 30\n";

/// `anchorage proxy` anchoring every call on the given RTPProxy nodes, with OpenSIPS' letters
/// per leg (`o`: `o=`'s address too; `c`: the session-level `c=` too), and `extra`
/// configuration.
fn proxy_on(nodes: &[&RtpProxy], extra: &str) -> AnchorageProxy {
    AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &proxy_config(
            nodes,
            "caller = { rtpproxy_flags = \"o\" }\ncallee = { rtpproxy_flags = \"co\" }",
            &format!("{PATIENT_HEALTH}{extra}"),
        ),
    )
}

/// A callee running `uas` on a free port (RTP port key `rtp` if given).
fn callee(uas: &str, rtp: Option<&UdpSocket>) -> (SippProcess, u16) {
    let port = free_udp_port(LOCALHOST);
    let mut sipp =
        Sipp::new("uas", &scenario(uas), SocketAddr::new(LOCALHOST, port)).args(["-m", "1"]);
    if let Some(rtp) = rtp {
        sipp = sipp.args(["-key", "rtp_port", &rtp_port(rtp)]);
    }
    let process = sipp.spawn();
    std::thread::sleep(Duration::from_millis(300));
    (process, port)
}

/// A caller running `uac` through the proxy to the callee at `uas_port`, holding `hold_ms`
/// where the scenario pauses (RTP port key `rtp` if given).
fn caller(
    uac: &str,
    proxy: &AnchorageProxy,
    uas_port: u16,
    rtp: Option<&UdpSocket>,
    hold_ms: u64,
) -> SippProcess {
    let mut sipp = Sipp::new(
        "uac",
        &scenario(uac),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-timeout", "30s", "-timeout_error"])
    .args(["-d", &hold_ms.to_string()])
    .args(["-rsa", &proxy.sip.to_string()])
    .args(["-key", "contact_host", "127.0.0.1"]);
    if let Some(rtp) = rtp {
        sipp = sipp.args(["-key", "rtp_port", &rtp_port(rtp)]);
    }
    sipp.args([format!("127.0.0.1:{uas_port}")]).spawn()
}

fn rtp_port(socket: &UdpSocket) -> String {
    socket.local_addr().unwrap().port().to_string()
}

/// Runs a scenario pair without media sockets to the end; both must succeed.
fn run_pair(uac: &str, uas: &str, proxy: &AnchorageProxy) -> (SippRun, SippRun) {
    let (mut uas, port) = callee(uas, None);
    let uac = caller(uac, proxy, port, None, 0).finish(Duration::from_secs(40));
    let uas = uas.finish(Duration::from_secs(10));
    uac.assert_success();
    uas.assert_success();
    (uac, uas)
}

/// The `n`-th (from 1) message starting with `start` in `messages`.
fn nth<'a>(messages: &'a [String], start: &str, n: usize) -> &'a str {
    messages
        .iter()
        .filter(|m| m.starts_with(start))
        .nth(n - 1)
        .unwrap_or_else(|| panic!("no {start:?} number {n} in {messages:#?}"))
}

/// The media address of a message's SDP, which must be one of `node`'s.
fn on_node(node: &RtpProxy, message: &str, what: &str) -> SocketAddr {
    let addr = sdp_media(message);
    assert!(
        node.owns(addr),
        "{what} must name the RTPProxy ({:?}), got {addr}:\n{message}",
        node.ports
    );
    addr
}

/// Whether the SDP of `message` has the attribute line `a=<attr>`.
fn has_attr(message: &str, attr: &str) -> bool {
    message.lines().any(|l| l.trim() == format!("a={attr}"))
}

/// RTP both ways between the test's sockets through the node's ports; the node's own counter
/// of relayed packets grows by at least the 40 sent.
fn rtp_both_ways(
    node: &RtpProxy,
    (caller_rtp, for_caller): (&UdpSocket, SocketAddr),
    (callee_rtp, for_callee): (&UdpSocket, SocketAddr),
    ssrc: u32,
) {
    let before = node.stat("packets transmitted");
    rtp_flows(caller_rtp, for_caller, callee_rtp, for_callee, ssrc);
    rtp_flows(callee_rtp, for_callee, caller_rtp, for_caller, ssrc + 1);
    let after = node.stat("packets transmitted");
    assert!(
        after >= before + 40,
        "RTPProxy relayed {} packets, 40 were sent: {:?}",
        after - before,
        node.command("I")
    );
}

#[test]
fn a_late_offer_in_the_200_is_answered_in_the_ack_through_rtpproxy_with_rtp_both_ways() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    let (caller_rtp, callee_rtp) = (socket(), socket());
    let (mut uas, port) = callee("uas_media.xml", Some(&callee_rtp));
    let mut uac = caller("uac_late_media.xml", &proxy, port, Some(&caller_rtp), 3000);
    // The callee's offer reaches the caller with the node's address, and the caller's answer
    // in the ACK reaches the callee with it too.
    let ok = uac.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let for_caller = on_node(&node, &ok, "the offer in the 200");
    let ack = uas.wait_for_received("ACK ", Duration::from_secs(10));
    let for_callee = on_node(&node, &ack, "the answer in the ACK");
    assert_ne!(for_caller, for_callee);
    rtp_both_ways(
        &node,
        (&caller_rtp, for_caller),
        (&callee_rtp, for_callee),
        0x7100,
    );
    uac.finish(Duration::from_secs(20)).assert_success();
    uas.finish(Duration::from_secs(10)).assert_success();
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    node.wait_empty(&|| proxy.daemon.log());
}

#[test]
fn a_reliable_183_with_prack_and_an_update_putting_the_call_on_hold_go_through_rtpproxy() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    let (uac, uas) = run_pair("uac_prack.xml", "uas_prack.xml", &proxy);
    let invite = on_node(
        &node,
        nth(&uas.received, "INVITE ", 1),
        "the INVITE's offer",
    );
    let answer_183 = on_node(
        &node,
        nth(&uac.received, "SIP/2.0 183", 1),
        "the 183's answer",
    );
    // The UPDATE is a new offer on the same session: the same ports, the hold attribute the
    // caller wrote, and the callee's answer to it with its own.
    let update = nth(&uas.received, "UPDATE ", 1);
    assert_eq!(on_node(&node, update, "the UPDATE's offer"), invite);
    assert!(has_attr(update, "sendonly"), "{update}");
    let update_ok = uac
        .received
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 3 UPDATE"))
        .expect("the 200 to the UPDATE");
    assert_eq!(on_node(&node, update_ok, "the UPDATE's answer"), answer_183);
    assert!(has_attr(update_ok, "recvonly"), "{update_ok}");
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    node.wait_empty(&|| proxy.daemon.log());
}

#[test]
fn an_offer_in_a_reliable_183_is_answered_in_the_prack_through_rtpproxy() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    // The callee's scenario fails if the PRACK reaches it without an SDP.
    let (uac, uas) = run_pair("uac_prack_late.xml", "uas_prack_late.xml", &proxy);
    let offer = on_node(
        &node,
        nth(&uac.received, "SIP/2.0 183", 1),
        "the 183's offer",
    );
    let answer = on_node(&node, nth(&uas.received, "PRACK ", 1), "the PRACK's answer");
    assert_ne!(offer, answer);
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    node.wait_empty(&|| proxy.daemon.log());
}

#[test]
fn reinvites_from_the_caller_and_the_callee_reuse_the_rtpproxy_session_and_its_ports() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    let (uac, uas) = run_pair("uac_reinvite.xml", "uas_reinvite.xml", &proxy);
    let for_callee = on_node(&node, nth(&uas.received, "INVITE ", 1), "the INVITE");
    let for_caller = on_node(&node, nth(&uac.received, "SIP/2.0 200", 1), "the 200");
    // The caller's hold re-INVITE: the same port for the callee, its a=sendonly kept.
    let hold = nth(&uas.received, "INVITE ", 2);
    assert_eq!(on_node(&node, hold, "the caller's re-INVITE"), for_callee);
    assert!(has_attr(hold, "sendonly"), "{hold}");
    // The callee's re-INVITE reaches the caller with the port the caller already has, and
    // its answer reaches the callee with the callee's.
    let from_callee = nth(&uac.received, "INVITE ", 1);
    assert_eq!(
        on_node(&node, from_callee, "the callee's re-INVITE"),
        for_caller
    );
    let answer = uas
        .received
        .iter()
        .rfind(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE") && m.contains("v=0"))
        .expect("the caller's answer to the callee's re-INVITE");
    assert_eq!(on_node(&node, answer, "the caller's answer"), for_callee);
    // One session from start to end, deleted by the callee's BYE.
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    node.wait_empty(&|| proxy.daemon.log());
}

#[test]
fn hold_with_a_null_address_keeps_it_and_resume_brings_rtp_back_through_rtpproxy() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    let (caller_rtp, callee_rtp) = (socket(), socket());
    let (mut uas, port) = callee("uas_hold.xml", Some(&callee_rtp));
    let mut uac = caller("uac_hold.xml", &proxy, port, Some(&caller_rtp), 3000);
    let invite = uas.wait_for_received("INVITE ", Duration::from_secs(10));
    let for_callee = on_node(&node, &invite, "the INVITE");
    let ok = uac.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let for_caller = on_node(&node, &ok, "the 200");
    rtp_both_ways(
        &node,
        (&caller_rtp, for_caller),
        (&callee_rtp, for_callee),
        0x7200,
    );
    // Hold: the callee is told the caller sends only, with the null address kept (as
    // OpenSIPS' and Kamailio's modules keep it) and the node's port; the caller gets the
    // callee's recvonly with the node's address.
    let hold = uas
        .nth_received("INVITE ", 2, Duration::from_secs(10))
        .expect("the hold re-INVITE");
    assert!(hold.contains("c=IN IP4 0.0.0.0"), "{hold}");
    assert!(!hold.contains("c=IN IP4 127.0.0.1"), "{hold}");
    assert!(has_attr(&hold, "sendonly"), "{hold}");
    let hold_port = hold
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse::<u16>().ok());
    assert_eq!(hold_port, Some(for_callee.port()), "{hold}");
    let held = uac
        .nth_received("SIP/2.0 200", 2, Duration::from_secs(10))
        .expect("the 200 to the hold");
    assert_eq!(on_node(&node, &held, "the hold's answer"), for_caller);
    assert!(has_attr(&held, "recvonly"), "{held}");
    // Resume: the node's address again, sendrecv, and RTP flows both ways once more.
    let resume = uas
        .nth_received("INVITE ", 3, Duration::from_secs(10))
        .expect("the resuming re-INVITE");
    assert_eq!(on_node(&node, &resume, "the resume"), for_callee);
    assert!(has_attr(&resume, "sendrecv"), "{resume}");
    let resumed = uac
        .nth_received("SIP/2.0 200", 3, Duration::from_secs(10))
        .expect("the 200 to the resume");
    assert_eq!(on_node(&node, &resumed, "the resume's answer"), for_caller);
    rtp_both_ways(
        &node,
        (&caller_rtp, for_caller),
        (&callee_rtp, for_callee),
        0x7300,
    );
    uac.finish(Duration::from_secs(20)).assert_success();
    uas.finish(Duration::from_secs(10)).assert_success();
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    node.wait_empty(&|| proxy.daemon.log());
}

#[test]
fn a_486_and_a_cancel_leave_no_rtpproxy_session() {
    let node = RtpProxy::start();
    let proxy = proxy_on(&[&node], "");
    for (n, (uac, uas)) in [
        ("uac_busy.xml", "uas_486.xml"),
        ("uac_cancel.xml", "uas_cancel.xml"),
    ]
    .into_iter()
    .enumerate()
    {
        let (_, callee) = run_pair(uac, uas, &proxy);
        // The INVITE was anchored (the callee got the node's port) …
        on_node(&node, nth(&callee.received, "INVITE ", 1), uas);
        assert_eq!(
            node.stat("sessions created"),
            n as u64 + 1,
            "{uac}: {:?}",
            node.command("I")
        );
        // … and the refusal or the CANCEL deleted its session.
        node.wait_empty(&|| proxy.daemon.log());
    }
}

#[test]
fn a_parallel_fork_gives_each_branch_its_own_rtpproxy_session_and_the_loser_is_deleted() {
    let node = RtpProxy::start();
    let (winner_port, loser_port) = (free_udp_port(LOCALHOST), free_udp_port(LOCALHOST));
    let proxy = proxy_on(
        &[&node],
        &format!(
            "\n[[proxy.route]]\nname = \"fork\"\nmatch = {{ methods = [\"INVITE\"] }}\n\
             fork = \"parallel\"\ndestinations = [{{ host = \"127.0.0.1\", port = {winner_port} }}, \
             {{ host = \"127.0.0.1\", port = {loser_port} }}]\n"
        ),
    );
    let (caller_rtp, callee_rtp) = (socket(), socket());
    let mut winner = Sipp::new(
        "uas",
        &scenario("uas_media.xml"),
        SocketAddr::new(LOCALHOST, winner_port),
    )
    .args(["-m", "1", "-key", "rtp_port", &rtp_port(&callee_rtp)])
    .spawn();
    let mut loser = Sipp::new(
        "uas",
        &scenario("uas_cancel.xml"),
        SocketAddr::new(LOCALHOST, loser_port),
    )
    .args(["-m", "1"])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut uac = caller(
        "uac_media.xml",
        &proxy,
        winner_port,
        Some(&caller_rtp),
        8000,
    );
    let at_winner = winner.wait_for_received("INVITE ", Duration::from_secs(10));
    let at_loser = loser.wait_for_received("INVITE ", Duration::from_secs(10));
    let for_winner = on_node(&node, &at_winner, "the winner's INVITE");
    let for_loser = on_node(&node, &at_loser, "the loser's INVITE");
    assert_ne!(for_winner, for_loser, "each branch has its own ports");
    let ok = uac.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let for_caller = on_node(&node, &ok, "the winner's 200");
    rtp_both_ways(
        &node,
        (&caller_rtp, for_caller),
        (&callee_rtp, for_winner),
        0x7400,
    );
    // Two sessions were made, one per branch; the loser's is gone while the call goes on.
    assert_eq!(node.stat("sessions created"), 2, "{:?}", node.command("I"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.active_sessions() != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the losing branch's session must go: {:?}\n{}",
            node.command("I"),
            proxy.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    uac.finish(Duration::from_secs(20)).assert_success();
    winner.finish(Duration::from_secs(10)).assert_success();
    loser.finish(Duration::from_secs(10)).assert_success();
    node.wait_empty(&|| proxy.daemon.log());
}

fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sends an INVITE with an SDP to the proxy from a socket of the test and returns the first
/// final response.
fn raw_invite_final(proxy: &AnchorageProxy, call_id: &str) -> String {
    let ua = socket();
    ua.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = ua.local_addr().unwrap();
    let callee = free_udp_port(LOCALHOST);
    let sdp = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";
    let invite = format!(
        "INVITE sip:service@127.0.0.1:{callee} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{call_id};rport\r\n\
         From: <sip:caller@{local}>;tag=t-{call_id}\r\nTo: <sip:service@127.0.0.1:{callee}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{local}>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    ua.send_to(invite.as_bytes(), proxy.sip).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = ua
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no final response: {e}\n{}", proxy.daemon.log()));
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

#[test]
fn a_leg_type_rtpproxy_cannot_give_leaves_its_node_out_and_the_call_gets_503() {
    let node = RtpProxy::start();
    let proxy = AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &proxy_config(&[&node], "callee = { type = \"RTP/SAVP\" }", PATIENT_HEALTH),
    );
    let response = raw_invite_final(&proxy, "srtp-on-rtpproxy");
    assert!(
        response.starts_with("SIP/2.0 503 No Media Relay Available"),
        "{response}"
    );
    assert_eq!(node.stat("sessions created"), 0, "the node was never asked");
    let log = proxy.daemon.log();
    assert!(
        log.contains("the callee leg's type RTP/SAVP needs an ng relay"),
        "the proxy says why: {log}"
    );
}

#[test]
fn a_legs_ip_is_the_address_its_sdp_names_with_the_rtpproxy_port() {
    let node = RtpProxy::start();
    let proxy = AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &proxy_config(
            &[&node],
            "caller = { ip = \"203.0.113.9\", rtpproxy_flags = \"o\" }",
            PATIENT_HEALTH,
        ),
    );
    let (uac, uas) = run_pair("uac.xml", "uas.xml", &proxy);
    // The callee gets the node's address; the caller the configured one, with the node's port.
    on_node(
        &node,
        nth(&uas.received, "INVITE ", 1),
        "the callee's INVITE",
    );
    let ok = nth(&uac.received, "SIP/2.0 200", 1);
    let for_caller = sdp_media(ok);
    assert_eq!(for_caller.ip().to_string(), "203.0.113.9", "{ok}");
    assert!(node.ports.contains(&for_caller.port()), "{ok}");
    assert!(ok.contains("o=callee 1 1 IN IP4 203.0.113.9"), "{ok}");
    node.wait_empty(&|| proxy.daemon.log());
}
