//! A proxy cluster behind a virtual IP moved by keepalived (issue #15), on a LAN of network
//! namespaces made by the test (`anchorage_testkit::lan`; nothing on the host's interfaces):
//!
//! * `p1`, `p2`: an `anchorage proxy` each, SIP on the VIP (bound before the host holds it:
//!   `net.ipv4.ip_nonlocal_bind=1`), its API on the host's own address, both writing their
//!   calls to the same Redis; and a real keepalived (unicast VRRPv3, adverts every 100 ms,
//!   `state BACKUP` + `nopreempt`) whose health check is `anchorage ctl health`;
//! * `svc`: `redis-server` and two `anchorage relay` nodes;
//! * `phones`: SIPp caller and callee.
//!
//! The VIP leaves a node whose proxy is killed or stopped within a second, and stays where it
//! went when that proxy is back; a Redis outage does not move it; a call set up through the
//! VIP goes on through the node that took it over, on the same relay.
//!
//! `anchorage ctl health` itself, the check keepalived runs, is tested on loopback first: it
//! passes while the proxy answers, Redis down or not, and fails fast when it does not.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_testkit::lan::LanHost;
use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::{http, AnchorageProxy};

mod cluster_support;
mod restart_support;
use cluster_support::*;
use restart_support::{bin, cseq_number, eventually, nth_received};

/// `anchorage ctl --api http://API health …` run on `host` (any host of the LAN when `None`:
/// on this machine); its success, stdout and stderr, and how long it took.
fn ctl_health(
    host: Option<&LanHost>,
    api: SocketAddr,
    extra: &[&str],
) -> (bool, String, String, Duration) {
    let mut cmd = match host {
        Some(host) => host.command(bin()),
        None => std::process::Command::new(bin()),
    };
    cmd.args(["ctl", "--api", &format!("http://{api}"), "health"])
        .args(extra);
    let start = Instant::now();
    let out = cmd.output().expect("anchorage ctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// The check keepalived runs: it passes while the proxy answers — also with its Redis down,
/// the node then `degraded` (a Redis outage must not move the VIP) — and fails within its
/// timeout when the proxy is stopped (SIGSTOP: the kernel still accepts the connection) and
/// at once when it is dead.
#[test]
fn ctl_health_passes_with_redis_down_and_fails_fast_when_the_proxy_is_stopped_or_dead() {
    let mut redis = RedisServer::start(None);
    let mut p = AnchorageProxy::with_config(
        bin(),
        &format!(
            "[node]\nid = \"edge-1\"\n\n[cluster]\nstore = \"{}\"\n",
            redis.url()
        ),
    );
    let (ok, out, err, _) = ctl_health(None, p.api, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("ok; store redis redis://127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains(" up: 0 calls not yet written"), "{out}");

    redis.kill();
    eventually(Duration::from_secs(10), "the store seen down", || {
        let (status, body) = http(p.api, "GET", "/v1/health", "");
        status == 200 && body.contains("\"status\":\"degraded\"")
    });
    let (ok, out, err, _) = ctl_health(None, p.api, &[]);
    assert!(ok, "a Redis outage fails the check: {out}{err}");
    assert!(out.contains(" DOWN: "), "{out}");

    p.daemon.signal(SIGSTOP);
    let (ok, out, err, took) = ctl_health(None, p.api, &["--timeout-ms", "300"]);
    p.daemon.signal(SIGCONT);
    assert!(!ok, "a stopped proxy passes the check: {out}");
    assert!(err.contains("no answer from the API"), "{err}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "the check took {took:?}"
    );
    // The default timeout is as short.
    p.daemon.signal(SIGSTOP);
    let (ok, _, _, took) = ctl_health(None, p.api, &[]);
    p.daemon.signal(SIGCONT);
    assert!(!ok && took < Duration::from_secs(2), "took {took:?}");
    let (ok, out, err, _) = ctl_health(None, p.api, &[]);
    assert!(ok, "after SIGCONT: {out}{err}");

    p.kill_9();
    let (ok, _, err, took) = ctl_health(None, p.api, &[]);
    assert!(!ok);
    assert!(err.contains("cannot reach the API"), "{err}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// The VIP is on one node; `kill -9` of its proxy moves it to the other within a second;
/// the killed proxy started again does not take it back (nopreempt). A Redis outage moves
/// nothing.
#[test]
fn kill_9_of_the_active_proxy_moves_the_vip_within_a_second_and_a_redis_outage_does_not() {
    let mut cluster = Cluster::start();
    assert_eq!(cluster.lan.vip_holders(VIP), ["p1"]);
    cluster.vip_stays_on("p1", Duration::from_millis(500));

    any_phase();
    let killed = Instant::now();
    cluster.kill_proxy("p1");
    let moved = cluster.wait_vip_on("p2", Duration::from_secs(5));
    let took = killed.elapsed();
    println!("kill -9 of p1's proxy: the VIP on p2 after {took:?} (seen {moved:?} after the kill returned)");
    assert!(
        took < Duration::from_secs(1),
        "the VIP took {took:?} to move"
    );
    assert!(
        cluster.keepalived[0].log().contains("Entering FAULT STATE"),
        "{}",
        cluster.keepalived[0].log()
    );

    // p1's proxy back: its check passes, p1 is a backup again, the VIP stays on p2.
    cluster.proxies[0].start_again();
    let k1 = &cluster.keepalived[0];
    eventually(Duration::from_secs(5), "p1 a backup again", || {
        k1.log().matches("Entering BACKUP STATE").count() >= 2
    });
    cluster.vip_stays_on("p2", Duration::from_millis(1500));

    // Redis down: both proxies degraded, their checks pass, the VIP stays.
    cluster.redis.kill();
    eventually(Duration::from_secs(10), "p2's store seen down", || {
        api_get(&cluster.lan, cluster.proxy("p2"), "/v1/health")["status"] == "degraded"
    });
    let (ok, out, err, _) = ctl_health(Some(cluster.lan.host("p2")), cluster.proxy("p2").api, &[]);
    assert!(ok && out.contains(" DOWN: "), "{out}{err}");
    cluster.vip_stays_on("p2", Duration::from_millis(2500));
    assert!(
        !cluster.keepalived[1].log().contains("FAULT"),
        "{}",
        cluster.keepalived[1].log()
    );
}

/// SIGSTOP of the active proxy: its check times out, the VIP moves within a second; SIGCONT:
/// the VIP stays where it went (nopreempt).
#[test]
fn sigstop_of_the_active_proxy_moves_the_vip_and_sigcont_does_not_move_it_back() {
    let cluster = Cluster::start();
    any_phase();
    let stopped = Instant::now();
    cluster.proxy("p1").daemon.signal(SIGSTOP);
    let moved = cluster.wait_vip_on("p2", Duration::from_secs(5));
    let took = stopped.elapsed();
    println!("SIGSTOP of p1's proxy: the VIP on p2 after {took:?} ({moved:?})");
    cluster.proxy("p1").daemon.signal(SIGCONT);
    assert!(
        took < Duration::from_secs(1),
        "the VIP took {took:?} to move"
    );
    let k1 = &cluster.keepalived[0];
    eventually(Duration::from_secs(5), "p1 a backup again", || {
        k1.log().matches("Entering BACKUP STATE").count() >= 2
    });
    cluster.vip_stays_on("p2", Duration::from_millis(1500));
    // Both proxies answer.
    for name in ["p1", "p2"] {
        let (ok, out, err, _) =
            ctl_health(Some(cluster.lan.host(name)), cluster.proxy(name).api, &[]);
        assert!(ok, "{name}: {out}{err}");
    }
}

/// A call set up through the VIP (on `p1`), `kill -9` of `p1`'s proxy, the VIP moves: the
/// caller's re-INVITE, the callee's re-INVITE and BYE go through `p2` with 200s, on the relay
/// the call had (`p2` loads the call from Redis when its first request arrives), and the relay
/// session and the stored record are deleted at the end.
#[test]
fn a_call_through_the_vip_goes_on_through_the_other_node_after_kill_9_on_the_same_relay() {
    let mut cluster = Cluster::start();
    // The caller pauses after its ACK (-d) while the test kills the active node.
    let (mut callee, mut caller) = cluster.call(
        "uas_reinvite.xml",
        &["-m", "1"],
        "uac_vip.xml",
        &["-m", "1", "-d", "3000", "-timeout", "40s", "-timeout_error"],
    );
    let invite = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    nth_received(&callee, "ACK ", 1, Duration::from_secs(10));
    // Through the VIP, on a relay.
    assert!(
        invite.contains(&format!("Record-Route: <sip:{VIP}")),
        "{invite}"
    );
    let (media_ip, port) = media_of(&invite);
    assert_eq!(media_ip, cluster.lan.host("svc").addr().to_string());
    let relay = relay_of_port(port);
    let relay_index = RELAYS.iter().position(|r| r.0 == relay).expect("a relay");
    let calls = api_get(&cluster.lan, cluster.proxy("p1"), "/v1/calls");
    let call_id = calls["calls"][0]["call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{calls}"))
        .to_string();
    assert_eq!(calls["calls"][0]["media"]["relay"], relay, "{calls}");
    assert!(cluster.relay_calls(relay_index).contains(&call_id));
    cluster.store_caught_up("p1");

    let killed = Instant::now();
    cluster.kill_proxy("p1");
    cluster.wait_vip_on("p2", Duration::from_secs(5));
    println!(
        "kill -9 of p1's proxy mid-call: the VIP on p2 after {:?}",
        killed.elapsed()
    );

    // The caller's re-INVITE reaches the callee through p2, anchored on the same relay.
    let reinvite = nth_received(&callee, "INVITE ", 2, Duration::from_secs(15));
    assert!(cseq_number(&reinvite) >= 2, "{reinvite}");
    let (_, port) = media_of(&reinvite);
    assert_eq!(relay_of_port(port), relay, "{reinvite}");
    // The callee's re-INVITE and BYE reach the caller, and every transaction got its 200
    // (both scenarios wait for them).
    let callee_invite = nth_received(&caller, "INVITE ", 1, Duration::from_secs(15));
    let (_, port) = media_of(&callee_invite);
    assert_eq!(relay_of_port(port), relay, "{callee_invite}");
    let bye = nth_received(&caller, "BYE ", 1, Duration::from_secs(15));
    assert!(cseq_number(&bye) > cseq_number(&callee_invite), "{bye}");
    let caller_run = caller.finish(Duration::from_secs(15));
    caller_run.assert_success();
    let callee_run = callee.finish(Duration::from_secs(15));
    callee_run.assert_success();
    for (who, run, responses) in [
        ("caller", &caller_run, 2), // INVITE, re-INVITE
        ("callee", &callee_run, 2), // re-INVITE, BYE
    ] {
        let ok = run
            .received
            .iter()
            .filter(|m| m.starts_with("SIP/2.0 200"))
            .count();
        assert_eq!(ok, responses, "{who} got {ok} 200s: {:#?}", run.received);
    }

    // p2 served it, having claimed it from Redis when the VIP arrived (or, had the caller's
    // re-INVITE come first, when that arrived): once either way.
    let p2 = cluster.proxy("p2");
    let view = api_get(&cluster.lan, p2, "/v1/cluster");
    assert_eq!(view["role"], "active", "{view}");
    assert_eq!(view["takeovers"], 1, "{view}");
    let (_, metrics) = cluster
        .lan
        .host("phones")
        .run(|| http(p2.api, "GET", "/metrics", ""));
    assert!(
        metrics.contains("anchorage_store_claimed_calls_total 1"),
        "{metrics}"
    );
    // No relay session, no call in p2, no record in Redis.
    cluster.assert_call_gone(&call_id, &[0, 1]);
    let calls = api_get(&cluster.lan, p2, "/v1/calls");
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(0), "{calls}");
}
