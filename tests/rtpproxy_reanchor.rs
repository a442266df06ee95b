//! Re-anchoring with real RTPProxy nodes (sippy's RTPProxy from the PyPI package `rtp.io`, in
//! the `.venv` that `scripts/test` makes) under `anchorage proxy`, with SIPp phones that take
//! the proxy's re-INVITEs and RTP from the test's own sockets — the seed's OpenSIPS example
//! (`rtp_relay_update engine=rtpproxy set=0 node=udp:… new_node=udp:…`,
//! `rtp_relay_update_callid engine=rtpengine flags='{"callee":{"type":"SRTP"}}'`) run on
//! Anchorage:
//!
//! * every call of node 1 moved to node 2, naming the nodes by their `udp:` address, with the
//!   API and with `anchorage ctl`;
//! * `kill -9` of an RTPProxy node holding calls: they move to the other by themselves;
//! * one call moved from RTPProxy to Debian's rtpengine with SRTP towards the callee, and back.
//!
//! What each test checks comes from the peers themselves: the SDP in the re-INVITEs the
//! phones received, RTP arriving at the test's sockets from the new node's ports, and each
//! RTPProxy's own counters (`I`, `Q`) and rtpengine's `list`.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::media::{rtp_flows, rtpengine_with_ports, sdp_media};
use anchorage_testkit::rtpproxy::RtpProxy;
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{free_udp_port, http, ng_list, AnchorageProxy, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// `udp:127.0.0.1:PORT`: a node named as OpenSIPS names it.
fn address(node: &RtpProxy) -> String {
    format!("udp:127.0.0.1:{}", node.control)
}

/// `anchorage proxy` anchoring every call on the set `main` of the given RTPProxy nodes
/// (`rtpp1`, `rtpp2`, …) with the seed's letters (`o` towards the caller, `co` towards the
/// callee), and `extra` configuration appended. RTPProxy here is a Python process on a
/// shared machine: a stall of a few hundred milliseconds is not death, so a silent node is
/// down after 3 s (`down_after` 15 pings); a killed one is down at once (its port refuses the
/// `V` pings).
fn proxy(nodes: &[&RtpProxy], extra: &str) -> AnchorageProxy {
    let nodes: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  {{ name = \"rtpp{}\", rtpproxy = \"{}\" }},\n",
                i + 1,
                address(n)
            )
        })
        .collect();
    AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n{}]\n\n\
             [proxy.media]\nset = \"main\"\ncaller = {{ rtpproxy_flags = \"o\" }}\n\
             callee = {{ rtpproxy_flags = \"co\" }}\n\n\
             [proxy.relay_health]\ndown_after = 15\nmax_window_ms = 3000\n{extra}",
            nodes.concat()
        ),
    )
}

/// How long the callers hold after the move before they hang up: long enough for the test to
/// check RTP both ways for each call through the new node on a loaded machine.
const HOLD_MS: u64 = 12_000;

/// A call through the proxy with RTP checked both ways through its first node.
struct Call {
    caller: SippProcess,
    callee: SippProcess,
    caller_rtp: UdpSocket,
    callee_rtp: UdpSocket,
    /// The relay addresses each side was given: (caller's, callee's).
    relay: (SocketAddr, SocketAddr),
    call_id: String,
    /// The caller's and the callee's tags.
    tags: (String, String),
}

/// A call with the scenarios `uac`/`uas`; the caller hangs up `hold_ms` after the move when
/// its scenario does.
fn call(proxy: &AnchorageProxy, hold_ms: u64, uac: &str, uas: &str) -> Call {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").expect("a caller RTP socket");
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").expect("a callee RTP socket");
    let port = |s: &UdpSocket| s.local_addr().expect("a local address").port().to_string();
    let uas_port = free_udp_port(LOCALHOST);
    let callee = Sipp::new("uas", &scenario(uas), SocketAddr::new(LOCALHOST, uas_port))
        .args(["-m", "1", "-key", "rtp_port", &port(&callee_rtp)])
        .args(["-key", "srtp_key", CALLEE_SRTP_KEY])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller = Sipp::new(
        "uac",
        &scenario(uac),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-d", &hold_ms.to_string()])
    .args(["-timeout", "60s", "-timeout_error"])
    .args(["-key", "rtp_port", &port(&caller_rtp)])
    .args(["-rsa", &proxy.sip.to_string()])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn();
    let invite = callee.wait_for_received("INVITE ", Duration::from_secs(10));
    let ok = caller.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let relay = (sdp_media(&ok), sdp_media(&invite));
    rtp_flows(&caller_rtp, relay.0, &callee_rtp, relay.1, 0x1111);
    rtp_flows(&callee_rtp, relay.1, &caller_rtp, relay.0, 0x2222);
    Call {
        call_id: header(&invite, "Call-ID").to_string(),
        tags: (tag(header(&invite, "From")), tag(header(&ok, "To"))),
        caller,
        callee,
        caller_rtp,
        callee_rtp,
        relay,
    }
}

/// The key and salt (base64, AES_CM_128_HMAC_SHA1_80) the callee of
/// `uas_reanchor_srtp_any_tag.xml` answers an RTP/SAVP offer with: 30 bytes of 0xc5.
const CALLEE_SRTP_KEY: &str = "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF";

/// A header's value in a message.
fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in\n{message}"))
}

/// The `tag` parameter of a From/To value.
fn tag(value: &str) -> String {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .unwrap_or_else(|| panic!("no tag in {value}"))
        .to_string()
}

/// The `n`-th (from 1) INVITE a phone received, waiting up to 10 s.
fn nth_invite(p: &SippProcess, n: usize) -> String {
    p.nth_received("INVITE ", n, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no INVITE number {n}; received: {:#?}", p.received_so_far()))
}

/// A number from an RTPProxy's `I` statistics.
fn stat(node: &RtpProxy, name: &str) -> u64 {
    node.command("I")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in RTPProxy's I: {:?}", node.command("I")))
}

/// Packets a node relayed for the call's session, from its own `Q` (its reply: ttl, packets
/// from each side, relayed, dropped); `None` when it has no such session.
fn relayed(node: &RtpProxy, c: &Call) -> Option<u64> {
    let reply = node.command(&format!("Q {} {};1 {};1", c.call_id, c.tags.0, c.tags.1))?;
    let words: Vec<u64> = reply
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (words.len() == 5).then(|| words[3])
}

/// Waits until `node` holds no session (its `I`), naming what is left.
fn no_session_left(node: &RtpProxy, proxy: &AnchorageProxy) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.active_sessions() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "sessions left on RTPProxy {}: {:?}\n{}",
            address(node),
            node.command("I"),
            proxy.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a job to finish; returns it.
fn finished_job(proxy: &AnchorageProxy, job: &str) -> serde_json::Value {
    let job: serde_json::Value = serde_json::from_str(job).unwrap_or_else(|e| panic!("{e}: {job}"));
    let id = job["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id in {job}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = http(proxy.api, "GET", &format!("/v1/jobs/{id}"), "");
        let job: serde_json::Value = serde_json::from_str(&body).expect("a job as JSON");
        if job["finished"] == true {
            return job;
        }
        assert!(Instant::now() < deadline, "job not finished: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both phones of `c` got a re-INVITE (the `n`-th INVITE at the callee, `n - 1`-th at the
/// caller) naming ports of `to`; returns the new relay addresses (caller's, callee's).
fn moved_to(c: &Call, n: usize, to: &RtpProxy) -> (SocketAddr, SocketAddr) {
    let at_callee = nth_invite(&c.callee, n);
    let at_caller = nth_invite(&c.caller, n - 1);
    let moved = (sdp_media(&at_caller), sdp_media(&at_callee));
    for (who, addr, invite) in [
        ("caller", moved.0, &at_caller),
        ("callee", moved.1, &at_callee),
    ] {
        assert_eq!(addr.ip(), LOCALHOST, "{invite}");
        assert!(
            to.ports.contains(&addr.port()),
            "the {who}'s re-INVITE must name a port of {} ({:?}): {invite}",
            address(to),
            to.ports
        );
        assert_eq!(header(invite, "Call-ID"), c.call_id);
    }
    moved
}

/// Places `count` calls (scenarios `uac`/`uas`) all on `on` — the other nodes drained while
/// they are set up, then undrained.
fn calls_on(
    p: &AnchorageProxy,
    on: &RtpProxy,
    others: &[&str],
    count: usize,
    hold_ms: u64,
    (uac, uas): (&str, &str),
) -> Vec<Call> {
    for name in others {
        let (status, body) = http(p.api, "POST", &format!("/v1/relays/{name}/drain"), "");
        assert_eq!(status, 200, "{body}");
    }
    let calls: Vec<Call> = (0..count).map(|_| call(p, hold_ms, uac, uas)).collect();
    for name in others {
        let (status, body) = http(p.api, "POST", &format!("/v1/relays/{name}/undrain"), "");
        assert_eq!(status, 200, "{body}");
    }
    for c in &calls {
        assert!(
            on.ports.contains(&c.relay.0.port()) && on.ports.contains(&c.relay.1.port()),
            "{:?} not on {:?}",
            c.relay,
            on.ports
        );
    }
    assert_eq!(on.active_sessions(), Some(count as u64));
    calls
}

/// After every call of `from` was moved to `to`: each phone's re-INVITE names `to`, RTP flows
/// both ways through it (its own `Q` counts the packets of each call, its `I` the total), the
/// calls' sessions are gone from `from`, and the calls end with their BYE leaving no session.
fn assert_all_moved_then_ended(
    p: &AnchorageProxy,
    calls: Vec<Call>,
    from: &RtpProxy,
    to: &RtpProxy,
) {
    let before = stat(to, "packets transmitted");
    for (i, c) in calls.iter().enumerate() {
        let moved = moved_to(c, 2, to);
        let ssrc = 0x3000 + 2 * i as u32;
        rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, ssrc);
        rtp_flows(&c.callee_rtp, moved.1, &c.caller_rtp, moved.0, ssrc + 1);
        let counted = relayed(to, c);
        assert!(
            counted.is_some_and(|n| n >= 40),
            "the new node's Q for call {} must count the 40 packets: {counted:?}",
            c.call_id
        );
    }
    assert!(
        stat(to, "packets transmitted") >= before + 40 * calls.len() as u64,
        "the new node's I: {:?}",
        to.command("I")
    );
    // The old node's sessions were deleted by the move, not left to time out.
    no_session_left(from, p);
    for c in &calls {
        assert_eq!(relayed(from, c), None, "Q on the old node: session gone");
    }
    for c in calls {
        let Call {
            mut caller,
            mut callee,
            ..
        } = c;
        caller.finish(Duration::from_secs(30)).assert_success();
        callee.finish(Duration::from_secs(10)).assert_success();
    }
    no_session_left(to, p);
    assert!(!p.daemon.log().contains("panicked"), "{}", p.daemon.log());
}

#[test]
fn every_call_of_rtpproxy_node_1_moves_to_node_2_named_by_address_through_the_api() {
    let n1 = RtpProxy::start();
    let n2 = RtpProxy::start();
    let p = proxy(&[&n1, &n2], "");
    let calls = calls_on(
        &p,
        &n1,
        &["rtpp2"],
        3,
        HOLD_MS,
        ("uac_reanchor.xml", "uas_reanchor.xml"),
    );
    // OpenSIPS: rtp_relay_update engine=rtpproxy set=0 node=udp:… new_node=udp:…
    let body = serde_json::json!({
        "engine": "rtpproxy",
        "set": "main",
        "node": address(&n1),
        "new_node": address(&n2),
    });
    let (status, job) = http(p.api, "POST", "/v1/reanchor", &body.to_string());
    assert_eq!(status, 200, "{job}");
    let job = finished_job(&p, &job);
    assert_eq!(
        (
            job["total"].as_u64(),
            job["done"].as_u64(),
            job["failed"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{job}\n{}",
        p.daemon.log()
    );
    assert_all_moved_then_ended(&p, calls, &n1, &n2);
    // The nodes named by address elsewhere too, and a wrong engine or address refused.
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["ctl", "--api", &p.api.to_string(), "drain", &address(&n1)])
        .output()
        .expect("anchorage ctl runs");
    assert!(out.status.success(), "drain by address: {out:?}");
    let (_, relays) = http(p.api, "GET", "/v1/relays", "");
    assert!(relays.contains("\"draining\":true"), "{relays}");
    let (status, body) = http(
        p.api,
        "POST",
        "/v1/reanchor",
        &serde_json::json!({ "engine": "ng", "node": address(&n1) }).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("rtpproxy"), "{body}");
    let (status, body) = http(
        p.api,
        "POST",
        "/v1/reanchor",
        r#"{"node": "udp:127.0.0.1:1"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no relay node named"), "{body}");
    let (status, body) = http(p.api, "POST", "/v1/reanchor", r#"{"engine": "mediaproxy"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("mediaproxy"), "{body}");
}

#[test]
fn every_call_of_rtpproxy_node_1_moves_to_node_2_with_anchorage_ctl() {
    let n1 = RtpProxy::start();
    let n2 = RtpProxy::start();
    let p = proxy(&[&n1, &n2], "");
    let calls = calls_on(
        &p,
        &n1,
        &["rtpp2"],
        2,
        HOLD_MS,
        ("uac_reanchor.xml", "uas_reanchor.xml"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["ctl", "--api", &p.api.to_string(), "reanchor"])
        .args(["--engine", "rtpproxy", "--set", "main"])
        .args(["--node", &address(&n1), "--to-node", &address(&n2)])
        .output()
        .expect("anchorage ctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}\n{}", p.daemon.log());
    assert!(stdout.contains("2/2 moved, 0 failed"), "{stdout}");
    assert_all_moved_then_ended(&p, calls, &n1, &n2);
}

#[test]
fn kill_9_of_an_rtpproxy_node_moves_its_calls_to_the_other_by_themselves() {
    let n1 = RtpProxy::start();
    let n2 = RtpProxy::start();
    let p = proxy(&[&n1, &n2], "");
    let calls = calls_on(
        &p,
        &n1,
        &["rtpp2"],
        2,
        HOLD_MS,
        ("uac_reanchor.xml", "uas_reanchor.xml"),
    );
    let killed = Instant::now();
    n1.daemon.signal(9); // its pid: RTPProxy runs inside this Python process
    for c in &calls {
        moved_to(c, 2, &n2);
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "moved after {took:?}");
    eprintln!("kill -9 of RTPProxy to the last re-INVITE received: {took:?}");
    let before = stat(&n2, "packets transmitted");
    for (i, c) in calls.iter().enumerate() {
        let moved = moved_to(c, 2, &n2);
        let ssrc = 0x5000 + 2 * i as u32;
        rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, ssrc);
        rtp_flows(&c.callee_rtp, moved.1, &c.caller_rtp, moved.0, ssrc + 1);
        assert!(
            relayed(&n2, c).is_some_and(|n| n >= 40),
            "{:?}",
            relayed(&n2, c)
        );
    }
    assert!(stat(&n2, "packets transmitted") >= before + 80);
    let (_, relays) = http(p.api, "GET", "/v1/relays", "");
    let relays: serde_json::Value = serde_json::from_str(&relays).expect("relays as JSON");
    let rtpp1 = relays["relays"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "rtpp1"))
        .unwrap_or_else(|| panic!("{relays}"));
    assert_eq!(rtpp1["state"], "down", "{rtpp1}");
    assert_eq!(rtpp1["engine"], "rtpproxy", "{rtpp1}");
    for c in calls {
        let Call {
            mut caller,
            mut callee,
            ..
        } = c;
        caller.finish(Duration::from_secs(30)).assert_success();
        callee.finish(Duration::from_secs(10)).assert_success();
    }
    no_session_left(&n2, &p);
    assert!(!p.daemon.log().contains("panicked"), "{}", p.daemon.log());
}

/// Sends 20 RTP packets from `from` to `relay` and counts those arriving at `to` from
/// `source` as SRTP with an 80-bit tag (AES_CM_128_HMAC_SHA1_80, which the callee chose): ten
/// bytes longer than the RTP sent, and not equal to it.
fn arriving(from: &UdpSocket, relay: SocketAddr, to: &UdpSocket, source: SocketAddr) -> usize {
    to.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a read timeout");
    let mut buf = [0u8; 2048];
    let mut got = 0;
    for seq in 0..20u16 {
        let packet = anchorage_testkit::media::rtp(seq, 0x7000);
        from.send_to(&packet, relay).expect("RTP sent");
        if let Ok((n, s)) = to.recv_from(&mut buf) {
            if s == source && n == packet.len() + 10 && buf[..packet.len()] != packet[..] {
                got += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    got
}

#[test]
fn one_call_moves_from_rtpproxy_to_rtpengine_with_srtp_towards_the_callee_and_back() {
    let n1 = RtpProxy::start();
    let (engine, engine_ng, engine_ports) = rtpengine_with_ports();
    let extra = format!(
        "\n[[proxy.relay_set]]\nname = \"srtp\"\nnodes = [{{ name = \"rtpengine\", ng = \"127.0.0.1:{engine_ng}\" }}]\n"
    );
    let p = proxy(&[&n1], &extra);
    let c = call(
        &p,
        0,
        "uac_reanchor_loop.xml",
        "uas_reanchor_srtp_any_tag.xml",
    );
    assert!(n1.ports.contains(&c.relay.0.port()), "{:?}", c.relay);

    // OpenSIPS: rtp_relay_update_callid engine=rtpengine flags='{"callee":{"type":"SRTP"}}'
    let body = r#"{"engine": "rtpengine", "set": "srtp", "callee": {"type": "RTP/SAVP"}}"#;
    move_one_call(&p, &c.call_id, body);
    let at_callee = nth_invite(&c.callee, 2);
    let at_caller = nth_invite(&c.caller, 1);
    assert!(
        at_callee.contains(" RTP/SAVP ") && at_callee.contains("a=crypto:"),
        "SRTP towards the callee: {at_callee}"
    );
    assert!(
        at_caller.contains(" RTP/AVP ") && !at_caller.contains("a=crypto"),
        "the caller stays plain: {at_caller}"
    );
    let on_engine = (sdp_media(&at_caller), sdp_media(&at_callee));
    for addr in [on_engine.0, on_engine.1] {
        assert!(
            engine_ports.contains(&addr.port()),
            "{addr} is not rtpengine's"
        );
    }
    // The plain side's RTP goes through rtpengine to the callee, encrypted.
    let through = arriving(&c.caller_rtp, on_engine.0, &c.callee_rtp, on_engine.1);
    assert!(
        through >= 15,
        "{through} of 20 packets through rtpengine as SRTP\n{at_caller}\n{at_callee}"
    );
    assert!(ng_list(engine_ng).contains(&c.call_id));
    // The call left RTPProxy: its session there is deleted.
    no_session_left(&n1, &p);

    // And back to RTPProxy, plain RTP towards the callee.
    let body = r#"{"engine": "rtpproxy", "set": "main", "callee": {"type": "RTP/AVP"}}"#;
    move_one_call(&p, &c.call_id, body);
    let back = moved_to(&c, 3, &n1);
    let at_callee = nth_invite(&c.callee, 3);
    assert!(
        at_callee.contains(" RTP/AVP ") && !at_callee.contains("a=crypto"),
        "plain RTP towards the callee again: {at_callee}"
    );
    let at_caller = nth_invite(&c.caller, 2);
    assert!(!at_caller.contains("a=crypto"), "{at_caller}");
    rtp_flows(&c.caller_rtp, back.0, &c.callee_rtp, back.1, 0x7171);
    rtp_flows(&c.callee_rtp, back.1, &c.caller_rtp, back.0, 0x7272);
    assert!(
        relayed(&n1, &c).is_some_and(|n| n >= 40),
        "{:?}",
        relayed(&n1, &c)
    );
    // rtpengine's session was deleted when the call came back.
    let deadline = Instant::now() + Duration::from_secs(3);
    while ng_list(engine_ng).contains(&c.call_id) {
        assert!(
            Instant::now() < deadline,
            "session left on rtpengine\n{}",
            p.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n1.active_sessions(), Some(1));
    assert!(!p.daemon.log().contains("panicked"), "{}", p.daemon.log());
    drop(engine);
}

/// `POST /v1/calls/{call_id}/reanchor` with `body`: the job ends with the call moved.
fn move_one_call(p: &AnchorageProxy, call_id: &str, body: &str) {
    let (status, job) = http(
        p.api,
        "POST",
        &format!("/v1/calls/{call_id}/reanchor"),
        body,
    );
    assert_eq!(status, 200, "{job}");
    let job = finished_job(p, &job);
    assert_eq!(
        (job["done"].as_u64(), job["failed"].as_u64()),
        (Some(1), Some(0)),
        "{job}"
    );
}
