//! Calls outlive the proxy process (`[cluster] store` on a real `redis-server`): a call moved
//! between two `anchorage relay`s (so its CSeqs are renumbered), then `kill -9` of the proxy and
//! a start of the same node: both parties' re-INVITEs and the callee's BYE go through with
//! increasing CSeq numbers (each party gets its own back in the responses, checked by the SIPp
//! scenarios) on the same relay, and the relay session is deleted at the end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::{http, AnchorageProxy, AnchorageRelay, LOCALHOST};

mod restart_support;
use restart_support::{
    bin, cseq, cseq_number, get, nth_received, relay_of, the_call_id, Parties, Platform,
};

#[test]
fn a_moved_call_survives_kill_9_of_the_proxy_with_its_renumbered_cseqs_and_its_relay() {
    let mut platform = Platform::start();
    let p = &platform.p;
    let health = get(p, "/v1/health");
    assert_eq!(health["store"]["backend"], "redis", "{health}");
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

    let parties = Parties::call(
        p.sip,
        "uac_restart.xml",
        &["-d", "6000"],
        "uas_restart.xml",
        &[],
    );
    let call_id = the_call_id(p);

    // Move it to the other relay: the proxy re-INVITEs each party as the other (the callee
    // gets CSeq 2 as the caller, the caller CSeq 1 as the callee).
    let (from, to) = platform.move_call(&call_id);
    let move_at_callee = nth_received(&parties.callee, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_callee), "2 INVITE");
    let move_at_caller = nth_received(&parties.caller, "INVITE ", 1, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_caller), "1 INVITE");
    // Everything written before the crash.
    platform.store_caught_up();

    platform.kill_and_restart_proxy(1);
    // The relay drained before the crash is drained after it: the store keeps it.
    let relays = get(&platform.p, "/v1/relays");
    let draining: Vec<(&str, bool)> = relays["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .map(|r| (r["name"].as_str().unwrap_or(""), r["draining"] == true))
        .collect();
    assert!(draining.contains(&(from, true)), "{relays}");
    assert!(draining.contains(&(to, false)), "{relays}");
    carries_on_after_the_restart(&platform, parties, &call_id, to);
}

/// Another node started on the dead proxy's address (a virtual IP moved; another `[node] id`)
/// holds none of its calls at start: the call's first message makes it load the call from
/// the store, and it carries it on as the node that held it would have.
#[test]
fn a_node_that_did_not_hold_the_call_loads_it_when_its_next_request_arrives() {
    let mut platform = Platform::start();
    let parties = Parties::call(
        platform.p.sip,
        "uac_restart.xml",
        &["-d", "6000"],
        "uas_restart.xml",
        &[],
    );
    let call_id = the_call_id(&platform.p);
    let (_, to) = platform.move_call(&call_id);
    nth_received(&parties.callee, "INVITE ", 2, Duration::from_secs(10));
    nth_received(&parties.caller, "INVITE ", 1, Duration::from_secs(10));
    platform.store_caught_up();
    platform
        .p
        .kill_and_restart_with(|config| config.replace("\"edge-1\"", "\"edge-9\""));
    let p = &platform.p;
    assert!(
        p.daemon.log().contains("0 calls loaded from the store"),
        "{}",
        p.daemon.log()
    );
    let calls = get(p, "/v1/calls");
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(0), "{calls}");
    carries_on_after_the_restart(&platform, parties, &call_id, to);
    // It was loaded once, on demand, by the first message about it.
    let (_, metrics) = http(platform.p.api, "GET", "/metrics", "");
    for line in [
        "anchorage_store_load_requests_total 1",
        "anchorage_store_calls_loaded_total 1",
        "anchorage_store_load_timeouts_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(platform
        .p
        .daemon
        .log()
        .contains("call loaded from the store on demand"));
}

/// After a restart (or a takeover) of the proxy, the moved call goes on on relay `to`: the
/// caller's hold and the callee's re-INVITE and BYE, numbered above what the dead node
/// reserved; then the call is gone everywhere.
fn carries_on_after_the_restart(
    platform: &Platform,
    mut parties: Parties,
    call_id: &str,
    to: &str,
) {
    // After the restart the node's own numbers and the parties' shifted ones start above
    // what it had reserved for its own requests (it may have used them before it died): the
    // caller's hold (CSeq 2) reaches the callee above the move's 2; the callee's re-INVITE
    // (CSeq 1) reaches the caller above the move's 1, and its BYE above that.
    let hold = nth_received(&parties.callee, "INVITE ", 3, Duration::from_secs(20));
    assert_eq!(relay_of(&platform.p, call_id), to);
    assert!(
        cseq_number(&hold) > 2 && cseq(&hold).ends_with(" INVITE"),
        "{hold}"
    );
    let unhold = nth_received(&parties.caller, "INVITE ", 2, Duration::from_secs(10));
    assert!(cseq_number(&unhold) > 1, "{unhold}");
    let bye = nth_received(&parties.caller, "BYE ", 1, Duration::from_secs(10));
    assert!(cseq_number(&bye) > cseq_number(&unhold), "{bye}");
    // Both phones saw their own numbers in the responses (checked in the scenarios) and
    // finished.
    parties.finish(Duration::from_secs(15));
    // The relay session is deleted, and the call is gone from the proxy and the store.
    platform.assert_call_gone(call_id);
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
