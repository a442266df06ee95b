//! Re-anchoring with real peers: two `anchorage relay` processes under `anchorage proxy`,
//! SIPp phones that take the proxy's re-INVITEs, and RTP from the test's own sockets. The
//! tests kill a relay (`kill -9`) or drain it through the API, then check what each phone
//! received (tags, CSeq, `o=` version, the new relay in `c=`/`m=`) and that media flows
//! through the other relay.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::media::{rtp_flows, rtpengine, sdp_media};
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{
    free_udp_port, http, ng_list, AnchorageProxy, AnchorageRelay, Daemon, LOCALHOST,
};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

type Relay = AnchorageRelay;

/// An `anchorage relay` process with 100 media ports of its own.
fn relay() -> Relay {
    AnchorageRelay::start(std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")), &[])
}

type Proxy = AnchorageProxy;

/// `anchorage proxy` anchoring calls on relay-a and relay-b, with its API.
fn proxy(a: &Relay, b: &Relay, extra: &str) -> Proxy {
    AnchorageProxy::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &[a.ng, b.ng],
        extra,
    )
}

/// The `n`-th (from 1) received message starting with `start`, waiting up to `timeout`.
fn nth_received(p: &SippProcess, start: &str, n: usize, timeout: Duration) -> String {
    p.nth_received(start, n, timeout).unwrap_or_else(|| {
        panic!(
            "no {start} number {n} after {timeout:?}; received: {:#?}",
            p.received_so_far()
        )
    })
}

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

/// The `o=` line of a message's SDP.
fn origin(message: &str) -> &str {
    message
        .lines()
        .find(|l| l.trim_start().starts_with("o="))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no o= in\n{message}"))
}

/// A call set up through the proxy with RTP checked both ways; the phones wait for the
/// re-INVITEs, then the caller hangs up after `hold_ms`.
struct Call {
    caller: SippProcess,
    callee: SippProcess,
    caller_rtp: UdpSocket,
    callee_rtp: UdpSocket,
    /// The relay addresses each side was given: (caller's, callee's).
    relay: (SocketAddr, SocketAddr),
    invite_at_callee: String,
    ok_at_caller: String,
}

/// The key and salt (base64, AES_CM_128_HMAC_SHA1_80) a callee that answers SRTP
/// (`uas_reanchor_srtp.xml`) gives in its `a=crypto:5`: 30 bytes of 0xc5.
const CALLEE_SRTP_KEY: &str = "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF";

fn call(proxy: &Proxy, hold_ms: u64) -> Call {
    call_with(proxy, hold_ms, "uac_reanchor.xml", "uas_reanchor.xml")
}

fn call_with(proxy: &Proxy, hold_ms: u64, uac: &str, uas: &str) -> Call {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas_port = free_udp_port(LOCALHOST);
    let callee = Sipp::new("uas", &scenario(uas), SocketAddr::new(LOCALHOST, uas_port))
        .args(["-m", "1"])
        .args([
            "-key",
            "rtp_port",
            &callee_rtp.local_addr().unwrap().port().to_string(),
        ])
        .args(["-key", "srtp_key", CALLEE_SRTP_KEY])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller = Sipp::new(
        "uac",
        &scenario(uac),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args([
        "-m",
        "1",
        "-d",
        &hold_ms.to_string(),
        "-timeout",
        "60s",
        "-timeout_error",
    ])
    .args([
        "-key",
        "rtp_port",
        &caller_rtp.local_addr().unwrap().port().to_string(),
    ])
    .args(["-rsa", &proxy.sip.to_string()])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn();
    let invite_at_callee = callee.wait_for_received("INVITE ", Duration::from_secs(10));
    let ok_at_caller = caller.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let relay = (sdp_media(&ok_at_caller), sdp_media(&invite_at_callee));
    rtp_flows(&caller_rtp, relay.0, &callee_rtp, relay.1, 0x1111);
    rtp_flows(&callee_rtp, relay.1, &caller_rtp, relay.0, 0x2222);
    Call {
        caller,
        callee,
        caller_rtp,
        callee_rtp,
        relay,
        invite_at_callee,
        ok_at_caller,
    }
}

/// Both phones got the proxy's re-INVITE naming relay `to`; each impersonates the other party
/// with the dialog's tags, the next CSeq and the leg's own `o=`, one version up. Returns the
/// relay addresses (caller's, callee's) and the time both had arrived.
fn assert_moved(c: &Call, to: &Relay) -> (SocketAddr, SocketAddr) {
    let at_callee = nth_received(&c.callee, "INVITE ", 2, Duration::from_secs(10));
    let at_caller = nth_received(&c.caller, "INVITE ", 1, Duration::from_secs(10));
    let moved = (sdp_media(&at_caller), sdp_media(&at_callee));
    for (who, addr) in [("caller", moved.0), ("callee", moved.1)] {
        assert!(
            to.ports.contains(&addr.port()),
            "the {who} was moved to {addr}, not to the other relay ({:?})",
            to.ports
        );
    }
    // Towards the callee the proxy is the caller: the caller's From and tag, the callee's To.
    assert_eq!(
        header(&at_callee, "From"),
        header(&c.invite_at_callee, "From")
    );
    assert_eq!(header(&at_callee, "To"), header(&c.ok_at_caller, "To"));
    assert_eq!(
        header(&at_callee, "Call-ID"),
        header(&c.invite_at_callee, "Call-ID")
    );
    assert_eq!(
        header(&at_callee, "CSeq"),
        "2 INVITE",
        "one above the caller's INVITE"
    );
    // The callee keeps seeing the caller's origin, one version up.
    let first = origin(&c.invite_at_callee).to_string();
    let bumped = first.replacen("caller 1 1 ", "caller 1 2 ", 1);
    assert_ne!(first, bumped, "{first}");
    assert_eq!(origin(&at_callee), bumped);
    // Towards the caller the proxy is the callee, at the caller's Contact.
    assert!(
        at_caller.starts_with("INVITE sip:caller@127.0.0.1:"),
        "{at_caller}"
    );
    assert_eq!(header(&at_caller, "From"), header(&c.ok_at_caller, "To"));
    assert_eq!(
        header(&at_caller, "To"),
        header(&c.invite_at_callee, "From")
    );
    assert_eq!(
        header(&at_caller, "CSeq"),
        "1 INVITE",
        "the callee had sent no request"
    );
    assert_eq!(
        origin(&at_caller),
        origin(&c.ok_at_caller).replacen("callee 1 1 ", "callee 1 2 ", 1)
    );
    moved
}

/// A counter's value on a Prometheus page (0 when the series is absent).
fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn kill_9_of_the_relay_moves_the_call_and_media_resumes_through_the_other() {
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b, "");
    let c = call(&p, 3000);
    let (holder, other) = if a.ports.contains(&c.relay.0.port()) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(holder.ports.contains(&c.relay.1.port()));
    let killed = Instant::now();
    drop(holder.daemon); // SIGKILL
    let moved = assert_moved(&c, &other);
    let move_time = killed.elapsed();
    // Detection (3 pings, 200 ms apart) plus the move: well under two seconds.
    assert!(
        move_time < Duration::from_secs(3),
        "moved after {move_time:?}"
    );
    eprintln!("kill -9 to both re-INVITEs received: {move_time:?}");
    rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, 0x3333);
    rtp_flows(&c.callee_rtp, moved.1, &c.caller_rtp, moved.0, 0x4444);
    // The caller's BYE (its CSeq 2) reaches the callee renumbered after the proxy's 2.
    let Call {
        mut caller,
        mut callee,
        ..
    } = c;
    caller.finish(Duration::from_secs(30)).assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let bye = callee.received_starting("BYE ").expect("the BYE");
    assert_eq!(header(bye, "CSeq"), "3 BYE");
    let (_, page) = http(p.api, "GET", "/metrics", "");
    assert_eq!(
        metric(
            &page,
            "anchorage_reanchor_moves_total{trigger=\"node_down\",result=\"moved\"}"
        ),
        1,
        "{page}"
    );
    let (_, relays) = http(p.api, "GET", "/v1/relays", "");
    assert!(relays.contains("\"state\":\"down\""), "{relays}");
    assert!(!p.daemon.log().contains("panicked"));
}

#[test]
fn draining_a_relay_moves_its_call_deletes_the_old_session_and_sends_new_calls_elsewhere() {
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b, "");
    let c = call(&p, 3000);
    let (holder, holder_name, other) = if a.ports.contains(&c.relay.0.port()) {
        (&a, "relay-a", &b)
    } else {
        (&b, "relay-b", &a)
    };
    // The operator drains with `anchorage ctl`, which follows the job to its end.
    let ctl = std::thread::spawn({
        let api = p.api.to_string();
        let node = holder_name.to_string();
        move || {
            Command::new(env!("CARGO_BIN_EXE_anchorage"))
                .args(["ctl", "--api", &api, "drain", &node])
                .output()
                .unwrap()
        }
    });
    let moved = assert_moved(&c, other);
    let out = ctl.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1/1 moved, 0 failed"), "{stdout}");
    let id: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {stdout}"));
    // Zero gap while the old node lives: media flows through the new one at once.
    rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, 0x5555);
    let deadline = Instant::now() + Duration::from_secs(10);
    let finished = loop {
        let (_, body) = http(p.api, "GET", &format!("/v1/jobs/{id}"), "");
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        if job["finished"] == true || Instant::now() > deadline {
            break job;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        (
            finished["total"].as_u64(),
            finished["done"].as_u64(),
            finished["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{finished}"
    );
    assert_eq!(finished["trigger"], "drain");
    // The job's start on the wall clock: within the last minute.
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let started = finished["started_unix_ms"].as_i64().unwrap_or(0);
    assert!(
        (wall_ms - 60_000..=wall_ms).contains(&started),
        "started_unix_ms {started}, now {wall_ms}: {finished}"
    );
    // The old relay no longer holds the call.
    let listed = ng_list(holder.ng);
    assert!(listed.is_empty(), "left on the drained relay: {listed:?}");
    let (_, relays) = http(p.api, "GET", "/v1/relays", "");
    assert!(relays.contains("\"draining\":true"), "{relays}");
    let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["ctl", "--api", &p.api.to_string(), "relays"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let row = table
        .lines()
        .find(|l| l.starts_with(holder_name))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" up ") && row.contains(" yes "), "{row}");
    let Call {
        mut caller,
        mut callee,
        ..
    } = c;
    caller.finish(Duration::from_secs(30)).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    // Bad API input: JSON errors, nothing changes.
    let (status, body) = http(p.api, "POST", "/v1/relays/nope/drain", "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no relay node named"), "{body}");
    let (status, body) = http(p.api, "POST", "/v1/reanchor", "{\"node\": 5}");
    assert_eq!(status, 400, "{body}");
    let (status, body) = http(p.api, "POST", "/v1/reanchor", "not json");
    assert_eq!(status, 400, "{body}");
    for path in [
        "/v1/reanchor".to_string(),
        format!("/v1/calls/{}/reanchor", "x"),
    ] {
        let (status, body) = http(p.api, "POST", &path, "{\"engine\": \"mediaproxy\"}");
        assert_eq!(
            (status, body.as_str()),
            (
                400,
                r#"{"error":"unknown engine \"mediaproxy\": \"ng\" (also \"rtpengine\") or \"rtpproxy\""}"#
            ),
            "{path}"
        );
    }
    // Our relays are ng nodes: a move naming one as an RTPProxy node is refused.
    let (status, body) = http(
        p.api,
        "POST",
        "/v1/reanchor",
        r#"{"engine": "rtpproxy", "node": "relay-a"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is an ng node, not rtpproxy"), "{body}");
    let (status, _) = http(p.api, "GET", "/v1/jobs/999", "");
    assert_eq!(status, 404);
    // Undrain: the node takes calls again.
    let (status, _) = http(
        p.api,
        "POST",
        &format!("/v1/relays/{holder_name}/undrain"),
        "",
    );
    assert_eq!(status, 200);
}

#[test]
fn a_hung_relay_sigstop_loses_its_calls_to_the_other_and_new_calls_are_not_delayed() {
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b, "");
    let c = call(&p, 2000);
    let (holder, other) = if a.ports.contains(&c.relay.0.port()) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // The relay stops answering anything (ng and media) but its process and sockets live.
    holder.daemon.signal(libc_sigstop());
    let moved = assert_moved(&c, other);
    rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, 0x6666);
    // A new call meanwhile is set up at once on the healthy relay (no ng timeout on the hung
    // one: it is down), and carries media.
    let started = Instant::now();
    let second = call(&p, 500);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(other.ports.contains(&second.relay.0.port()));
    let Call {
        mut caller,
        mut callee,
        ..
    } = c;
    caller.finish(Duration::from_secs(30)).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    // The second call's phones expect a re-INVITE that never comes: they are stopped here.
    drop(second);
    // The relay wakes up: once it answers pings again, the proxy deletes the session it still
    // holds for the call that moved away (rather than leave it to its media timeout).
    holder.daemon.signal(18); // SIGCONT
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ng_list(holder.ng).is_empty() {
        assert!(
            Instant::now() < deadline,
            "stale session left on the relay that came back: {:?}",
            ng_list(holder.ng)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, page) = http(p.api, "GET", "/metrics", "");
    assert_eq!(
        metric(
            &page,
            "anchorage_reanchor_moves_total{trigger=\"node_down\",result=\"moved\"}"
        ),
        1,
        "{page}"
    );
}

/// SIGSTOP (19 on Linux).
fn libc_sigstop() -> i32 {
    19
}

/// Waits for a job to finish; returns it.
fn finished_job(api: SocketAddr, job: &str) -> serde_json::Value {
    let job: serde_json::Value = serde_json::from_str(job).unwrap();
    let id = job["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id in {job}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = http(api, "GET", &format!("/v1/jobs/{id}"), "");
        let job: serde_json::Value = serde_json::from_str(&body).unwrap();
        if job["finished"] == true {
            return job;
        }
        assert!(Instant::now() < deadline, "job not finished: {job}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Moves one call through the API with `body` and asserts the move succeeded.
fn move_call(p: &Proxy, call_id: &str, body: &str) {
    let (status, job) = http(
        p.api,
        "POST",
        &format!("/v1/calls/{call_id}/reanchor"),
        body,
    );
    assert_eq!(status, 200, "{job}");
    assert_done_failed(&finished_job(p.api, &job), 1, 0);
}

/// A finished job moved `done` calls and failed `failed`.
fn assert_done_failed(job: &serde_json::Value, done: u64, failed: u64) {
    assert_eq!(
        (job["done"].as_u64(), job["failed"].as_u64()),
        (Some(done), Some(failed)),
        "{job}"
    );
}

/// `POST /v1/relays/{name}/{action}` (`drain`, `undrain`): asserts 200, returns the body.
fn relay_action(p: &Proxy, name: &str, action: &str) -> String {
    let (status, body) = http(p.api, "POST", &format!("/v1/relays/{name}/{action}"), "");
    assert_eq!(status, 200, "{action} {name}: {body}");
    body
}

/// Our relays a and b (relay set `main`), rtpengine as the proxy's relay set `srtp`, and a
/// call through the proxy between `uac_reanchor_loop.xml` and a callee scenario. Dropped,
/// rtpengine stops first, then the call's phones, the proxy and the relays.
struct WithRtpengine {
    _engine: Daemon,
    c: Call,
    p: Proxy,
    b: Relay,
    a: Relay,
    engine_ng: u16,
    call_id: String,
}

impl WithRtpengine {
    fn start(uas: &str) -> WithRtpengine {
        let a = relay();
        let b = relay();
        let (engine, engine_ng) = rtpengine();
        let extra = format!(
            "\n[[proxy.relay_set]]\nname = \"srtp\"\nnodes = [{{ name = \"rtpengine\", ng = \"127.0.0.1:{engine_ng}\" }}]\n"
        );
        let p = proxy(&a, &b, &extra);
        let c = call_with(&p, 0, "uac_reanchor_loop.xml", uas);
        let call_id = header(&c.invite_at_callee, "Call-ID").to_string();
        WithRtpengine {
            _engine: engine,
            c,
            p,
            b,
            a,
            engine_ng,
            call_id,
        }
    }

    /// Whether `port` is a media port of our relays.
    fn ours(&self, port: u16) -> bool {
        self.a.ports.contains(&port) || self.b.ports.contains(&port)
    }

    /// Moves the call with `body` for the `nth` time (from 1); returns the re-INVITEs it
    /// sent, the callee's (its `nth` + 1st INVITE) and the caller's (its `nth`).
    fn move_nth(&self, body: &str, nth: usize) -> (String, String) {
        move_call(&self.p, &self.call_id, body);
        let at_callee = nth_received(&self.c.callee, "INVITE ", nth + 1, Duration::from_secs(5));
        let at_caller = nth_received(&self.c.caller, "INVITE ", nth, Duration::from_secs(5));
        (at_callee, at_caller)
    }

    /// Waits up to 3 s for the call's session on rtpengine to be deleted.
    fn assert_left_rtpengine(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while ng_list(self.engine_ng).contains(&self.call_id) {
            assert!(Instant::now() < deadline, "session left on rtpengine");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn one_call_moves_to_rtpengine_with_srtp_towards_the_callee_and_back() {
    let t = WithRtpengine::start("uas_reanchor_loop.xml");
    let (a, b, p, c, call_id) = (&t.a, &t.b, &t.p, &t.c, &t.call_id);
    // To rtpengine, SRTP towards the callee only.
    let (at_callee, at_caller) =
        t.move_nth(r#"{"set": "srtp", "callee": {"type": "RTP/SAVP"}}"#, 1);
    assert!(at_callee.contains("RTP/SAVP"), "{at_callee}");
    assert!(at_callee.contains("a=crypto:"), "{at_callee}");
    assert!(!t.ours(sdp_media(&at_callee).port()), "{at_callee}");
    assert!(
        at_caller.contains("RTP/AVP") && !at_caller.contains("a=crypto"),
        "{at_caller}"
    );
    assert!(!t.ours(sdp_media(&at_caller).port()));
    assert!(!ng_list(a.ng).contains(call_id) && !ng_list(b.ng).contains(call_id));
    // And back to our relays, plain RTP again; media flows through them.
    let (at_callee, at_caller) = t.move_nth(r#"{"set": "main", "callee": {"type": "RTP/AVP"}}"#, 2);
    assert!(
        at_callee.contains("RTP/AVP") && !at_callee.contains("a=crypto"),
        "{at_callee}"
    );
    assert_eq!(
        header(&at_callee, "CSeq"),
        "3 INVITE",
        "one per move after the caller's 1"
    );
    assert_eq!(header(&at_caller, "CSeq"), "2 INVITE");
    let moved = (sdp_media(&at_caller), sdp_media(&at_callee));
    assert!(
        t.ours(moved.0.port()) && t.ours(moved.1.port()),
        "{moved:?}"
    );
    rtp_flows(&c.caller_rtp, moved.0, &c.callee_rtp, moved.1, 0x7777);
    rtp_flows(&c.callee_rtp, moved.1, &c.caller_rtp, moved.0, 0x8888);
    // rtpengine's session was deleted when the call left it.
    t.assert_left_rtpengine();
    // Bad per-leg options are refused with a JSON message and change nothing.
    let (status, body) = http(
        p.api,
        "POST",
        &format!("/v1/calls/{call_id}/reanchor"),
        r#"{"callee": {"type": "RTP/XYZ"}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not one of"), "{body}");
    let (status, _) = http(p.api, "POST", "/v1/calls/no-such-call/reanchor", "");
    assert_eq!(status, 404);
}

#[test]
fn a_callee_refusing_the_move_488_keeps_the_call_on_the_old_relay_with_media() {
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b, "");
    let c = call_with(&p, 0, "uac_reanchor_loop.xml", "uas_reanchor_488.xml");
    let (holder_name, holder) = if a.ports.contains(&c.relay.0.port()) {
        ("relay-a", &a)
    } else {
        ("relay-b", &b)
    };
    let body = relay_action(&p, holder_name, "drain");
    assert_done_failed(&finished_job(p.api, &body), 0, 1);
    // The caller took the move, then was given the old relay back (one more o= version).
    let moved = nth_received(&c.caller, "INVITE ", 1, Duration::from_secs(5));
    let back = nth_received(&c.caller, "INVITE ", 2, Duration::from_secs(5));
    assert!(!holder.ports.contains(&sdp_media(&moved).port()), "{moved}");
    assert_eq!(
        sdp_media(&back),
        c.relay.0,
        "the caller is back on its old relay port"
    );
    assert_eq!(header(&back, "CSeq"), "2 INVITE");
    assert!(origin(&back).contains("callee 1 3 "), "{back}");
    // The callee never left: media flows through the old relay both ways.
    rtp_flows(&c.caller_rtp, c.relay.0, &c.callee_rtp, c.relay.1, 0x9999);
    rtp_flows(&c.callee_rtp, c.relay.1, &c.caller_rtp, c.relay.0, 0xAAAA);
    // The session the move made on the other relay is gone; the old one stays.
    let other = if holder_name == "relay-a" { &b } else { &a };
    let call_id = header(&c.invite_at_callee, "Call-ID").to_string();
    assert!(!ng_list(other.ng).contains(&call_id));
    assert!(ng_list(holder.ng).contains(&call_id));
}

/// The `(tag, suite)` of every `a=crypto` line in a message, in order, each key checked to be
/// base64 of the suite's key and salt length.
fn crypto_lines(message: &str) -> Vec<(u32, String)> {
    message
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=crypto:"))
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            let tag = words[0].parse().expect("a numeric tag");
            let key = words[2].strip_prefix("inline:").expect("an inline key");
            let expected = match words[1] {
                "AEAD_AES_256_GCM" => 59,
                "AEAD_AES_128_GCM" => 38,
                "AES_256_CM_HMAC_SHA1_80" | "AES_256_CM_HMAC_SHA1_32" => 62,
                "AES_192_CM_HMAC_SHA1_80" | "AES_192_CM_HMAC_SHA1_32" => 51,
                _ => 40,
            };
            assert_eq!(key.trim_end_matches('=').len(), expected, "{line}");
            (tag, words[1].to_string())
        })
        .collect()
}

/// Sends RTP `seq` from `from` to `relay` until a packet arrives at `to` (the encrypted
/// leg's key reaches the new relay with the party's answer, just after the move commits);
/// returns what arrived, its source, and the packet sent.
fn first_arrival(
    from: &UdpSocket,
    relay: SocketAddr,
    to: &UdpSocket,
    make: &mut dyn FnMut(u16) -> Vec<u8>,
) -> (Vec<u8>, SocketAddr, u16) {
    to.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..25u16 {
        from.send_to(&make(seq), relay).unwrap();
        if let Ok((n, source)) = to.recv_from(&mut buf) {
            return (buf[..n].to_vec(), source, seq);
        }
    }
    panic!("no packet from {relay} arrived in 5 s");
}

/// The INVITEs (with SDP) a phone received so far, in order.
fn invites(p: &SippProcess) -> Vec<String> {
    p.received_so_far()
        .into_iter()
        .filter(|m| m.starts_with("INVITE ") && m.contains("m=audio "))
        .collect()
}

/// The last INVITE a phone received after its first `seen` ones whose SDP names a port of
/// `relay`, waiting up to 5 s for one (earlier INVITEs may name the same relay: a call that
/// comes back to it).
fn invite_naming(p: &SippProcess, relay: &Relay, seen: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = invites(p)
            .into_iter()
            .skip(seen)
            .rfind(|m| relay.ports.contains(&sdp_media(m).port()));
        if let Some(invite) = found {
            return invite;
        }
        assert!(
            Instant::now() < deadline,
            "no INVITE naming {:?} after the first {seen}: {:#?}",
            relay.ports,
            p.received_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tag of the `AES_CM_128_HMAC_SHA1_80` line of an SDP (5 in our relay's offers, 7 in
/// rtpengine's): the suite the SRTP callees of these tests answer with.
fn aes_cm_80_tag(sdp: &str) -> u32 {
    crypto_lines(sdp)
        .into_iter()
        .find(|(_, suite)| suite == "AES_CM_128_HMAC_SHA1_80")
        .map(|(tag, _)| tag)
        .unwrap_or_else(|| panic!("no AES_CM_128_HMAC_SHA1_80 offered in\n{sdp}"))
}

/// A callee on SDES through `relay`: checks that RTP flows both ways with exact payloads, the
/// callee's side SRTP made and checked by libsrtp (its sessions `recv` keyed with the relay's
/// `AES_CM_128_HMAC_SHA1_80` key advertised in `at_callee`, `send` with [`CALLEE_SRTP_KEY`],
/// which the callee answered with), the caller's
/// side plain; every packet through `relay`'s ports (`moved`: caller's, callee's). `first`
/// is the first sequence number used.
fn srtp_flows_to_the_callee(
    c: &Call,
    srtp: &mut anchorage_testkit::srtp::Libsrtp,
    at_callee: &str,
    moved: (SocketAddr, SocketAddr),
    first: u16,
) {
    use anchorage_testkit::media::rtp;
    let (suite, relay_key) =
        anchorage_testkit::srtp::crypto_key(at_callee, aes_cm_80_tag(at_callee));
    srtp.session("recv", "inbound", &suite, &relay_key);
    srtp.session("send", "outbound", &suite, CALLEE_SRTP_KEY);
    // Callee → caller: libsrtp's SRTP arrives at the caller as exactly the RTP protected (its
    // key reaches the new relay with its answer, just after the move commits).
    let (got, source, seq) = first_arrival(&c.callee_rtp, moved.1, &c.caller_rtp, &mut |seq| {
        srtp.protect("send", false, &rtp(first + seq, 0xc0))
    });
    assert_eq!(source, moved.0, "through the new relay");
    assert_eq!(got, rtp(first + seq, 0xc0), "decrypted to the exact RTP");
    let mut buf = [0u8; 2048];
    for seq in first + seq + 1..first + seq + 11 {
        let sent = srtp.protect("send", false, &rtp(seq, 0xc0));
        c.callee_rtp.send_to(&sent, moved.1).unwrap();
        let (n, source) = c.caller_rtp.recv_from(&mut buf).expect("SRTP relayed");
        assert_eq!((&buf[..n], source), (&rtp(seq, 0xc0)[..], moved.0));
    }
    // Caller → callee: plain RTP arrives as SRTP that libsrtp decrypts to the exact packet.
    c.callee_rtp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for seq in first..first + 10 {
        let plain = rtp(seq, 0xa0);
        c.caller_rtp.send_to(&plain, moved.0).unwrap();
        let (n, source) = c.callee_rtp.recv_from(&mut buf).expect("RTP relayed");
        assert_eq!(source, moved.1, "through the new relay");
        assert_eq!(n, plain.len() + 10, "an 80-bit tag");
        assert_eq!(
            srtp.unprotect("recv", false, &buf[..n]),
            Ok(plain),
            "libsrtp decrypts with the advertised key"
        );
    }
}

/// The relay's name in the proxy's configuration.
fn name_of(relay: &Relay, a: &Relay) -> &'static str {
    if std::ptr::eq(relay, a) {
        "relay-a"
    } else {
        "relay-b"
    }
}

#[test]
fn one_call_moves_to_srtp_towards_the_callee_on_our_relays_is_drained_with_new_keys_and_back() {
    let mut srtp =
        anchorage_testkit::srtp::Libsrtp::start(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b, "");
    let c = call_with(&p, 0, "uac_reanchor_loop.xml", "uas_reanchor_srtp.xml");
    let call_id = header(&c.invite_at_callee, "Call-ID").to_string();
    let (first, other) = if a.ports.contains(&c.relay.0.port()) {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // The seed's scenario on our relay alone: SRTP towards the callee only.
    move_call(&p, &call_id, r#"{"callee": {"type": "RTP/SAVP"}}"#);
    let at_callee = nth_received(&c.callee, "INVITE ", 2, Duration::from_secs(5));
    assert!(at_callee.contains(" RTP/SAVP 0 101"), "{at_callee}");
    assert_eq!(
        crypto_lines(&at_callee),
        [
            (1, "AEAD_AES_256_GCM"),
            (2, "AEAD_AES_128_GCM"),
            (3, "AES_256_CM_HMAC_SHA1_80"),
            (4, "AES_256_CM_HMAC_SHA1_32"),
            (5, "AES_CM_128_HMAC_SHA1_80"),
            (6, "AES_CM_128_HMAC_SHA1_32"),
        ]
        .map(|(t, s)| (t, s.to_string())),
        "every suite the new relay offers, in rtpengine's order: {at_callee}"
    );
    let at_caller = invite_naming(&c.caller, other, 0);
    assert!(
        at_caller.contains(" RTP/AVP 0 101") && !at_caller.contains("a=crypto"),
        "the caller stays plain: {at_caller}"
    );
    let moved = (sdp_media(&at_caller), sdp_media(&at_callee));
    assert!(other.ports.contains(&moved.1.port()), "{at_callee}");
    srtp_flows_to_the_callee(&c, &mut srtp, &at_callee, moved, 0);
    assert!(!ng_list(first.ng).contains(&call_id), "old session deleted");

    // A drain of the relay holding the SDES call: the re-INVITE gives the callee new keys
    // from the new relay, and media goes on with them.
    let seen = (invites(&c.caller).len(), invites(&c.callee).len());
    let job = relay_action(&p, name_of(other, &a), "drain");
    assert_done_failed(&finished_job(p.api, &job), 1, 0);
    let drained = invite_naming(&c.callee, first, seen.1);
    assert!(drained.contains(" RTP/SAVP 0 101"), "{drained}");
    assert_eq!(crypto_lines(&drained), crypto_lines(&at_callee));
    assert_ne!(
        anchorage_testkit::srtp::crypto_key(&drained, 5),
        anchorage_testkit::srtp::crypto_key(&at_callee, 5),
        "new keys from the new relay"
    );
    let at_caller = invite_naming(&c.caller, first, seen.0);
    let drained_to = (sdp_media(&at_caller), sdp_media(&drained));
    srtp_flows_to_the_callee(&c, &mut srtp, &drained, drained_to, 1000);
    assert!(!ng_list(other.ng).contains(&call_id), "drained");

    // And back to plain RTP on the other relay, undrained.
    relay_action(&p, name_of(other, &a), "undrain");
    let seen = (invites(&c.caller).len(), invites(&c.callee).len());
    move_call(&p, &call_id, r#"{"callee": {"type": "RTP/AVP"}}"#);
    let at_callee = invite_naming(&c.callee, other, seen.1);
    assert!(
        at_callee.contains(" RTP/AVP 0 101") && !at_callee.contains("a=crypto"),
        "{at_callee}"
    );
    let at_caller = invite_naming(&c.caller, other, seen.0);
    let back = (sdp_media(&at_caller), sdp_media(&at_callee));
    rtp_flows(&c.caller_rtp, back.0, &c.callee_rtp, back.1, 0x7171);
    rtp_flows(&c.callee_rtp, back.1, &c.caller_rtp, back.0, 0x7272);
    assert!(
        !ng_list(first.ng).contains(&call_id),
        "SRTP session deleted"
    );
    assert!(!p.daemon.log().contains("panicked"));
}

/// A call moved to Debian's rtpengine with SRTP towards the callee, then back to our relays
/// still with SRTP towards the callee: both times libsrtp checks the media with the keys of
/// the re-INVITE the callee got — rtpengine's, then our relay's — and the callee's own key,
/// exact RTP payloads both ways. rtpengine's session is deleted when the call comes back.
#[test]
fn a_call_moved_to_rtpengine_with_srtp_comes_back_to_our_relay_with_srtp_checked_by_libsrtp() {
    let mut srtp =
        anchorage_testkit::srtp::Libsrtp::start(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let t = WithRtpengine::start("uas_reanchor_srtp_any_tag.xml");
    let c = &t.c;
    // To rtpengine, SRTP towards the callee only.
    let (at_callee, at_caller) =
        t.move_nth(r#"{"set": "srtp", "callee": {"type": "RTP/SAVP"}}"#, 1);
    assert!(at_callee.contains(" RTP/SAVP "), "{at_callee}");
    assert!(
        at_caller.contains(" RTP/AVP ") && !at_caller.contains("a=crypto"),
        "{at_caller}"
    );
    let on_engine = (sdp_media(&at_caller), sdp_media(&at_callee));
    assert!(!t.ours(on_engine.0.port()) && !t.ours(on_engine.1.port()));
    srtp_flows_to_the_callee(c, &mut srtp, &at_callee, on_engine, 0);

    // Back to our relays, SRTP towards the callee kept: our relay's own keys.
    let (at_callee, at_caller) =
        t.move_nth(r#"{"set": "main", "callee": {"type": "RTP/SAVP"}}"#, 2);
    assert!(at_callee.contains(" RTP/SAVP 0 101"), "{at_callee}");
    assert_eq!(aes_cm_80_tag(&at_callee), 5, "{at_callee}");
    assert!(
        at_caller.contains(" RTP/AVP 0 101") && !at_caller.contains("a=crypto"),
        "{at_caller}"
    );
    let back = (sdp_media(&at_caller), sdp_media(&at_callee));
    assert!(t.ours(back.0.port()) && t.ours(back.1.port()), "{back:?}");
    srtp_flows_to_the_callee(c, &mut srtp, &at_callee, back, 2000);
    t.assert_left_rtpengine();
    assert!(!t.p.daemon.log().contains("panicked"));
}
