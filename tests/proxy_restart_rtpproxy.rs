//! A call on an RTPProxy node keeps its per-leg RTPProxy letters across a `kill -9` of the
//! proxy (`[cluster] store` on a real `redis-server`, two real RTPProxy nodes from `rtp.io`):
//! the proxy comes back with a configuration that has no letters at all, and the move of the
//! call to the other node still sends that node the call's own modifiers and writes the
//! call's own `ip` into the re-INVITE — they came from the call's record, not from the
//! configuration. What the nodes received is read from RTPProxy's own debug log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anchorage_testkit::media::sdp_media;
use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::rtpproxy::RtpProxy;
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{free_udp_port, http, AnchorageProxy, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn get(p: &AnchorageProxy, path: &str) -> serde_json::Value {
    let (status, body) = http(p.api, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn eventually(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(p: &AnchorageProxy, path: &str, body: &str) -> String {
    let (status, reply) = http(p.api, "POST", path, body);
    assert_eq!(status, 200, "{path}: {reply}");
    reply
}

/// The caller's letters: asymmetric, re-packetised to 20 ms (modifiers `A`, `Z20`); its SDP
/// names 127.0.0.2 (`ip`). The callee's: `c`, `o` (the proxy's) and `w` (modifier `S`).
const LETTERS: &str = "caller = { rtpproxy_flags = \"az20\", ip = \"127.0.0.2\" }\n\
                       callee = { rtpproxy_flags = \"cow\" }\n";

/// The modifiers of each `U`/`L` command in `commands` (e.g. `UAZ20`, `LS`), in order.
fn offers_and_answers(commands: &[String]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| c.split_whitespace().next())
        .filter(|c| c.starts_with(['U', 'L', 'u', 'l']))
        .map(str::to_string)
        .collect()
}

/// The `n`-th INVITE a phone received.
fn nth_invite(p: &SippProcess, n: usize) -> String {
    p.nth_received("INVITE ", n, Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no INVITE number {n}; received: {:#?}", p.received_so_far()))
}

#[test]
fn a_call_keeps_its_rtpproxy_letters_and_ip_after_kill_9_of_the_proxy() {
    let redis = RedisServer::start(None);
    let n1 = RtpProxy::start_logging_commands();
    let n2 = RtpProxy::start_logging_commands();
    let config = format!(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n  \
         {{ name = \"rtpp1\", rtpproxy = \"udp:127.0.0.1:{}\" }},\n  \
         {{ name = \"rtpp2\", rtpproxy = \"udp:127.0.0.1:{}\" }},\n]\n\n\
         [proxy.media]\nset = \"main\"\n{LETTERS}\n\
         [proxy.relay_health]\ndown_after = 15\nmax_window_ms = 3000\n\n\
         [node]\nid = \"edge-1\"\n\n[cluster]\nstore = \"{}\"\n",
        n1.control,
        n2.control,
        redis.url()
    );
    let mut p = AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &config,
    );
    // The call goes on rtpp1: rtpp2 is drained while it is set up.
    post(&p, "/v1/relays/rtpp2/drain", "");

    let uas_port = free_udp_port(LOCALHOST);
    let mut callee = Sipp::new(
        "uas",
        &scenario("uas_reanchor.xml"),
        SocketAddr::new(LOCALHOST, uas_port),
    )
    .args(["-m", "1", "-key", "rtp_port", "40002"])
    .args([
        "-key",
        "srtp_key",
        "xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF",
    ])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::new(
        "uac",
        &scenario("uac_reanchor.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-d", "25000"])
    .args(["-timeout", "90s", "-timeout_error"])
    .args(["-key", "rtp_port", "40000"])
    .args(["-rsa", &p.sip.to_string()])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn();
    let invite = callee.wait_for_received("INVITE ", Duration::from_secs(10));
    let ok = caller.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let call_id = invite
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID:"))
        .map(|v| v.trim().to_string())
        .expect("a Call-ID");
    // The caller's SDP names its `ip`, with an rtpp1 port; the callee's names rtpp1.
    let at_caller = sdp_media(&ok);
    assert_eq!(at_caller.ip().to_string(), "127.0.0.2", "{ok}");
    assert!(n1.ports.contains(&at_caller.port()), "{ok}");
    assert!(n1.owns(sdp_media(&invite)), "{invite}");
    let first = offers_and_answers(&n1.commands_about(&call_id));
    // The offer is made for the callee's SDP, the answer for the caller's.
    assert_eq!(first, ["US", "LAZ20"], "{:?}", n1.commands_about(&call_id));
    post(&p, "/v1/relays/rtpp2/undrain", "");
    eventually(Duration::from_secs(5), "the store has the call", || {
        get(&p, "/v1/health")["store"]["dirty_calls"] == 0
    });

    // kill -9, and the same node comes back with no letters and no ip in its configuration.
    let before = p.daemon.log();
    p.kill_and_restart_with(|c| c.replace(LETTERS, ""));
    assert!(
        p.daemon.log().contains("1 calls loaded from the store"),
        "{}",
        p.daemon.log()
    );

    // rtp_relay_update engine=rtpproxy set=main node=rtpp1 new_node=rtpp2
    let body = serde_json::json!({"engine": "rtpproxy", "set": "main", "node": "rtpp1", "new_node": "rtpp2"});
    post(&p, "/v1/reanchor", &body.to_string());
    let reinvite_at_caller = nth_invite(&caller, 1);
    let reinvite_at_callee = nth_invite(&callee, 2);
    let moved_caller = sdp_media(&reinvite_at_caller);
    assert_eq!(
        moved_caller.ip().to_string(),
        "127.0.0.2",
        "the caller's re-INVITE still names its ip: {reinvite_at_caller}"
    );
    assert!(
        n2.ports.contains(&moved_caller.port()),
        "{reinvite_at_caller}"
    );
    assert!(
        n2.owns(sdp_media(&reinvite_at_callee)),
        "{reinvite_at_callee}"
    );
    let moved = offers_and_answers(&n2.commands_about(&call_id));
    assert_eq!(
        moved,
        first,
        "rtpp2 gets the call's own modifiers: {:?}\n--- proxy before:\n{before}\n--- after:\n{}",
        n2.commands_about(&call_id),
        p.daemon.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while n1.active_sessions() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "rtpp1's session is deleted by the move: {:?}\n{}",
            n1.commands_about(&call_id),
            p.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    caller.finish(Duration::from_secs(60)).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    n2.wait_empty(&|| p.daemon.log());
    assert!(!p.daemon.log().contains("panicked"), "{}", p.daemon.log());
}
