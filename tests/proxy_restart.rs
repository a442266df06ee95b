//! Calls outlive the proxy process (`[cluster] store` on a real `redis-server`): a call moved
//! between two `anchorage relay`s (so its CSeqs are renumbered), then `kill -9` of the proxy and
//! a start of the same node: both parties' re-INVITEs and the callee's BYE go through with
//! increasing CSeq numbers (each party gets its own back in the responses, checked by the SIPp
//! scenarios) on the same relay, and the relay session is deleted at the end.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{free_udp_port, http, ng_list, AnchorageProxy, AnchorageRelay, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_anchorage"))
}

/// The `n`-th (from 1) received message starting with `start`.
fn nth_received(p: &SippProcess, start: &str, n: usize, timeout: Duration) -> String {
    p.nth_received(start, n, timeout).unwrap_or_else(|| {
        panic!(
            "no {start} number {n} after {timeout:?}; received: {:#?}",
            p.received_so_far()
        )
    })
}

/// The CSeq header's value in a message.
fn cseq(message: &str) -> &str {
    message
        .lines()
        .find_map(|l| l.strip_prefix("CSeq:"))
        .map(str::trim)
        .unwrap_or("")
}

/// The JSON a GET of the API answers.
fn get(p: &AnchorageProxy, path: &str) -> serde_json::Value {
    let (status, body) = http(p.api, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The relay a call's media is anchored on, as `/v1/calls/{id}` shows it.
fn relay_of(p: &AnchorageProxy, call_id: &str) -> String {
    let call = get(p, &format!("/v1/calls/{call_id}"));
    call["dialogs"][0]["media"]["relay"]
        .as_str()
        .unwrap_or_else(|| panic!("{call}"))
        .to_string()
}

/// Waits until `ready` holds.
fn eventually(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_moved_call_survives_kill_9_of_the_proxy_with_its_renumbered_cseqs_and_its_relay() {
    let _ = a_moved_call_survives(|p| {
        p.kill_and_restart();
        assert!(
            p.daemon.log().contains("1 calls loaded from the store"),
            "{}",
            p.daemon.log()
        );
    });
}

/// Another node started on the dead proxy's address (a virtual IP moved) holds none of its
/// calls at start: the first message of the call makes it load the call from the store.
#[test]
fn a_node_that_did_not_hold_the_call_loads_it_when_its_next_request_arrives() {
    let p = a_moved_call_survives(|p| {
        p.kill_and_restart_with(|config| config.replace("\"edge-1\"", "\"edge-9\""));
        assert!(
            p.daemon.log().contains("0 calls loaded from the store"),
            "{}",
            p.daemon.log()
        );
        let calls = get(p, "/v1/calls");
        assert_eq!(calls["calls"].as_array().map(Vec::len), Some(0), "{calls}");
    });
    // It was loaded once, on demand, by the first message about it.
    let (_, metrics) = http(p.api, "GET", "/metrics", "");
    for line in [
        "anchorage_store_load_requests_total 1",
        "anchorage_store_calls_loaded_total 1",
        "anchorage_store_load_timeouts_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(p
        .daemon
        .log()
        .contains("call loaded from the store on demand"));
}

/// A call moved between two relays (so its CSeqs are renumbered), then `restart` of the
/// proxy: re-INVITEs both ways and the callee's BYE go through on the same relay with the
/// right numbers; the session and the record are deleted at the end. Returns the proxy.
fn a_moved_call_survives(restart: impl FnOnce(&mut AnchorageProxy)) -> AnchorageProxy {
    let redis = RedisServer::start(None);
    let a = AnchorageRelay::start(bin(), &[]);
    let b = AnchorageRelay::start(bin(), &[]);
    let mut p = AnchorageProxy::start(
        bin(),
        &[a.ng, b.ng],
        &format!(
            "\n[node]\nid = \"edge-1\"\n\n[cluster]\nstore = \"{}\"\n",
            redis.url()
        ),
    );
    let health = get(&p, "/v1/health");
    assert_eq!(health["store"]["backend"], "redis", "{health}");
    assert_eq!(health["store"]["up"], true, "{health}");
    assert_eq!(health["relays_up"], 2, "{health}");
    let ctl = std::process::Command::new(bin())
        .args(["ctl", "--api", &p.api.to_string(), "health"])
        .output()
        .expect("anchorage ctl runs");
    let said = String::from_utf8_lossy(&ctl.stdout);
    assert!(ctl.status.success(), "{said}");
    assert!(
        said.starts_with("ok; store redis redis://127.0.0.1:"),
        "{said}"
    );
    assert!(said.contains(" up: 0 calls not yet written"), "{said}");

    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas_port = free_udp_port(LOCALHOST);
    let mut callee = Sipp::new(
        "uas",
        &scenario("uas_restart.xml"),
        SocketAddr::new(LOCALHOST, uas_port),
    )
    .args(["-m", "1"])
    .args([
        "-key",
        "rtp_port",
        &callee_rtp.local_addr().unwrap().port().to_string(),
    ])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::new(
        "uac",
        &scenario("uac_restart.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-d", "6000", "-timeout", "60s", "-timeout_error"])
    .args([
        "-key",
        "rtp_port",
        &caller_rtp.local_addr().unwrap().port().to_string(),
    ])
    .args(["-rsa", &p.sip.to_string()])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn();
    callee.wait_for_received("ACK ", Duration::from_secs(10));
    let calls = get(&p, "/v1/calls");
    let call_id = calls["calls"][0]["call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{calls}"))
        .to_string();

    // Move it to relay-b: the proxy re-INVITEs each party as the other (the callee gets
    // CSeq 2 as the caller, the caller CSeq 1 as the callee).
    let (status, body) = http(p.api, "POST", "/v1/relays/relay-a/drain", "");
    assert_eq!(status, 200, "{body}");
    let move_at_callee = nth_received(&callee, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_callee), "2 INVITE");
    let move_at_caller = nth_received(&caller, "INVITE ", 1, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_caller), "1 INVITE");
    eventually(Duration::from_secs(10), "the call on relay-b", || {
        relay_of(&p, &call_id) == "relay-b"
    });
    // Everything written before the crash.
    eventually(Duration::from_secs(5), "the store caught up", || {
        get(&p, "/v1/health")["store"]["dirty_calls"] == 0
    });

    restart(&mut p);

    // After the restart the node's own numbers and the parties' shifted ones start above
    // what it had reserved for its own requests (it may have used them before it died): the
    // caller's hold (CSeq 2) reaches the callee above the move's 2; the callee's re-INVITE
    // (CSeq 1) reaches the caller above the move's 1, and its BYE above that.
    let number = |m: &str| -> u32 {
        cseq(m)
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no CSeq number in {m}"))
    };
    let hold = nth_received(&callee, "INVITE ", 3, Duration::from_secs(20));
    assert_eq!(relay_of(&p, &call_id), "relay-b");
    assert!(
        number(&hold) > 2 && cseq(&hold).ends_with(" INVITE"),
        "{hold}"
    );
    let unhold = nth_received(&caller, "INVITE ", 2, Duration::from_secs(10));
    assert!(number(&unhold) > 1, "{unhold}");
    let bye = nth_received(&caller, "BYE ", 1, Duration::from_secs(10));
    assert!(number(&bye) > number(&unhold), "{bye}");
    // Both phones saw their own numbers in the responses (checked in the scenarios) and
    // finished.
    caller.finish(Duration::from_secs(15)).assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();
    // The session on relay-b is deleted, and the call is gone from the proxy and the store.
    eventually(Duration::from_secs(5), "relay-b's session deleted", || {
        !ng_list(b.ng).contains(&call_id)
    });
    eventually(Duration::from_secs(5), "the record deleted", || {
        let h = get(&p, "/v1/health");
        h["store"]["live_calls"] == 0 && h["store"]["dirty_calls"] == 0
    });
    let (status, _) = http(p.api, "GET", &format!("/v1/calls/{call_id}"), "");
    assert_eq!(status, 404);
    p
}

/// Runs `anchorage proxy` with `config` until it exits (at most 10 s); its exit success and
/// everything it printed.
fn proxy_exit(config: &std::path::Path) -> (bool, String) {
    let sip = SocketAddr::new(LOCALHOST, anchorage_testkit::free_port(LOCALHOST));
    let mut child = std::process::Command::new(bin())
        .args(["proxy", "--listen", &format!("udp:{sip}"), "-c"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("anchorage proxy starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("its status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a wrong store password must stop the proxy at start, not hang it");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("its output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.success(), text)
}

#[test]
fn a_password_protected_store_is_used_and_its_password_shows_nowhere() {
    let secret = "s3cret-Pass-4-store";
    let redis = RedisServer::start(Some(secret));
    let a = AnchorageRelay::start(bin(), &[]);
    let store = format!(
        "\n[node]\nid = \"edge-2\"\n\n[cluster]\nstore = \"{}\"\n",
        redis.url()
    );
    let p = AnchorageProxy::start(bin(), &[a.ng], &store);
    let health = get(&p, "/v1/health");
    assert_eq!(health["store"]["up"], true, "{health}");
    let location = health["store"]["location"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        location.contains("***") && !location.contains(secret),
        "{location}"
    );
    for path in ["/v1/health", "/v1/relays", "/v1/calls", "/metrics"] {
        let (_, body) = http(p.api, "GET", path, "");
        assert!(!body.contains(secret), "{path}: {body}");
    }
    let ctl = std::process::Command::new(bin())
        .args(["ctl", "--api", &p.api.to_string(), "health"])
        .output()
        .expect("anchorage ctl runs");
    assert!(!String::from_utf8_lossy(&ctl.stdout).contains(secret));
    // The configuration file itself, checked, and a wrong password: a clear error at start
    // naming the store without its password.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{{ name = \"relay-a\", ng = \"127.0.0.1:{}\" }}]\n{store}",
            a.ng
        ),
    )
    .unwrap();
    let check = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .expect("anchorage check runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{said}");
    assert!(!said.contains(secret), "{said}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace(secret, "not-the-password"),
    )
    .unwrap();
    let (ok, out) = proxy_exit(&bad);
    assert!(!ok, "{out}");
    assert!(out.contains("cluster") || out.contains("store"), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{}", redis.port)), "{out}");
    assert!(
        !out.contains("not-the-password") && !out.contains(secret),
        "{out}"
    );
    // Nothing the proxy logged carried the password either.
    assert!(!p.daemon.log().contains(secret));
}
