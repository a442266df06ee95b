//! The node that takes the VIP carries every call on, whatever failed with the active node
//! (issue #15), on the LAN of `cluster_support` (real keepalived, Redis, two relays, SIPp):
//!
//! * the active proxy frozen (`SIGSTOP`) until the VIP moves, then a relay dies: the new owner
//!   moves the call — each party gets exactly one re-INVITE naming the other relay — and the
//!   frozen node, resumed (`SIGCONT`), finds the VIP gone, releases the call and sends nothing;
//! * a relay and the active proxy killed together, in both orders: the new owner, which never
//!   saw the call, moves it off the dead relay (or completes the move the dead node began),
//!   again with one re-INVITE per party;
//! * a call the active proxy moved (CSeqs renumbered), then that proxy killed: the new owner
//!   carries the renumbering on;
//! * a drain cut short, Redis and the backup dead, and the transactions that straddle the
//!   failover (a late 200, a CANCEL).
//!
//! After each: the re-INVITEs of both parties and the BYE go through the new owner with 200s
//! (the SIPp scenarios check every response), on the relay the call moved to; the relay
//! session and the stored record are gone.

use std::time::Duration;

mod cluster_support;
mod restart_support;
use anchorage_testkit::{http, AnchorageProxy};
use cluster_support::*;
use restart_support::{count_received, eventually, nth_received};

/// What fails, and in which order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// `SIGSTOP` of the active proxy; once the VIP moved, `kill -9` of the call's relay and
    /// `SIGCONT` of the frozen proxy.
    FrozenThenRelay,
    /// `kill -9` of the call's relay, then of the active proxy.
    RelayThenProxy,
    /// `kill -9` of the active proxy, then of the call's relay.
    ProxyThenRelay,
    /// The call moved by the active proxy (its relay drained: CSeqs renumbered), then
    /// `kill -9` of that proxy; no relay dies.
    MovedThenProxy,
    /// The call's relay frozen (`SIGSTOP`): the active proxy moves the call and leaves its
    /// session there to delete; `kill -9` of that proxy; the relay resumed (`SIGCONT`): the
    /// new owner deletes the session the dead node left.
    RelayFrozenThenProxy,
}

/// The SIP messages a proxy sent, from its `/metrics`.
fn sip_sent(cluster: &Cluster, p: &AnchorageProxy) -> u64 {
    let (_, metrics) = cluster
        .lan
        .host("phones")
        .run(|| http(p.api, "GET", "/metrics", ""));
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("anchorage_sip_sent_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no anchorage_sip_sent_total in {metrics}"))
}

fn takeover(failure: Failure) {
    let mut cluster = Cluster::start();
    // The caller takes the move's re-INVITE, pauses (-d), then re-INVITEs; the callee then
    // re-INVITEs and hangs up.
    let (mut callee, mut caller) = cluster.call(
        "uas_restart.xml",
        &["-m", "1", "-key", "rtp_port", "6000"],
        "uac_restart.xml",
        &[
            "-m",
            "1",
            "-d",
            "2000",
            "-timeout",
            "60s",
            "-timeout_error",
            "-key",
            "rtp_port",
            "6002",
        ],
    );
    let invite = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    nth_received(&callee, "ACK ", 1, Duration::from_secs(10));
    let (_, port) = media_of(&invite);
    let relay = relay_of_port(port);
    let dead = RELAYS.iter().position(|r| r.0 == relay).expect("a relay");
    let other = RELAYS[1 - dead].0;
    let calls = api_get(&cluster.lan, cluster.proxy("p1"), "/v1/calls");
    let call_id = calls["calls"][0]["call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{calls}"))
        .to_string();
    cluster.store_caught_up("p1");

    let sent_before_freeze = sip_sent(&cluster, cluster.proxy("p1"));
    match failure {
        Failure::FrozenThenRelay => {
            cluster.proxy("p1").daemon.signal(SIGSTOP);
            cluster.wait_vip_on("p2", Duration::from_secs(5));
            // p2 claimed the call when the VIP arrived.
            eventually(Duration::from_secs(5), "p2 holding the call", || {
                api_get(&cluster.lan, cluster.proxy("p2"), "/v1/cluster")["dialogs"] == 1
            });
            cluster.relays[dead].daemon.signal(9);
            cluster.proxy("p1").daemon.signal(SIGCONT);
        }
        Failure::RelayThenProxy => {
            cluster.relays[dead].daemon.signal(9);
            cluster.kill_proxy("p1");
            cluster.wait_vip_on("p2", Duration::from_secs(5));
        }
        Failure::ProxyThenRelay => {
            cluster.kill_proxy("p1");
            cluster.relays[dead].daemon.signal(9);
            cluster.wait_vip_on("p2", Duration::from_secs(5));
        }
        Failure::RelayFrozenThenProxy => {
            cluster.relays[dead].daemon.signal(SIGSTOP);
            nth_received(&callee, "INVITE ", 2, Duration::from_secs(10));
            nth_received(&caller, "INVITE ", 1, Duration::from_secs(10));
            // p1 listed the session left on the frozen relay in the store.
            eventually(
                Duration::from_secs(5),
                "the session to delete in the store",
                || {
                    cluster
                        .redis
                        .cli(&["SMEMBERS", "anc:node:p1:orphans"])
                        .contains(&call_id)
                },
            );
            cluster.kill_proxy("p1");
            cluster.wait_vip_on("p2", Duration::from_secs(5));
            eventually(
                Duration::from_secs(5),
                "p2 took the session to delete",
                || {
                    cluster
                        .redis
                        .cli(&["SMEMBERS", "anc:node:p1:orphans"])
                        .is_empty()
                },
            );
            cluster.relays[dead].daemon.signal(SIGCONT);
            eventually(
                Duration::from_secs(5),
                "the new owner deleted the dead node's session on the resumed relay",
                || !cluster.relay_calls(dead).contains(&call_id),
            );
        }
        Failure::MovedThenProxy => {
            let (status, body) = cluster.post("p1", &format!("/v1/relays/{relay}/drain"));
            assert_eq!(status, 200, "{body}");
            nth_received(&callee, "INVITE ", 2, Duration::from_secs(10));
            nth_received(&caller, "INVITE ", 1, Duration::from_secs(10));
            cluster.fail_over(Duration::from_secs(5));
        }
    }

    // One move, to the other relay: each party gets one re-INVITE naming it (an extra one
    // would break the SIPp scenarios, which expect exactly this sequence).
    let move_at_callee = nth_received(&callee, "INVITE ", 2, Duration::from_secs(15));
    assert_eq!(relay_of_port(media_of(&move_at_callee).1), other);
    let move_at_caller = nth_received(&caller, "INVITE ", 1, Duration::from_secs(15));
    assert_eq!(relay_of_port(media_of(&move_at_caller).1), other);
    // The rest of the call through p2: the caller's re-INVITE, the callee's and its BYE.
    let caller_run = caller.finish(Duration::from_secs(30));
    caller_run.assert_success();
    let callee_run = callee.finish(Duration::from_secs(30));
    callee_run.assert_success();
    assert_eq!(
        count_received(&callee, "INVITE "),
        3,
        "initial, move, caller's"
    );
    assert_eq!(count_received(&caller, "INVITE "), 2, "move, callee's");
    let reinvite = nth_received(&callee, "INVITE ", 3, Duration::from_secs(1));
    assert_eq!(relay_of_port(media_of(&reinvite).1), other, "{reinvite}");

    cluster.assert_p2_took_over();
    if failure == Failure::FrozenThenRelay {
        // The frozen node found the VIP gone before anything else, released the call, and
        // sent nothing since it was frozen.
        let p1 = cluster.proxy("p1");
        let view = api_get(&cluster.lan, p1, "/v1/cluster");
        assert_eq!(view["role"], "passive", "{view}");
        assert_eq!(view["released_calls"], 1, "{view}");
        assert_eq!(view["dialogs"], 0, "{view}");
        assert_eq!(
            sip_sent(&cluster, p1),
            sent_before_freeze,
            "p1 sent SIP after its freeze"
        );
    }
    let live: Vec<usize> = match failure {
        Failure::MovedThenProxy | Failure::RelayFrozenThenProxy => vec![0, 1],
        _ => vec![1 - dead],
    };
    cluster.assert_call_gone(&call_id, &live);
}

#[test]
fn a_session_the_dead_node_left_on_a_frozen_relay_is_deleted_by_the_new_owner_when_it_resumes() {
    takeover(Failure::RelayFrozenThenProxy);
}

#[test]
fn a_frozen_active_proxy_releases_its_calls_and_sends_nothing_while_the_new_owner_moves_them() {
    takeover(Failure::FrozenThenRelay);
}

#[test]
fn a_relay_then_the_active_proxy_killed_the_new_owner_moves_the_call_once() {
    takeover(Failure::RelayThenProxy);
}

#[test]
fn the_active_proxy_then_a_relay_killed_the_new_owner_moves_the_call_once() {
    takeover(Failure::ProxyThenRelay);
}

/// The renumbered CSeqs of a call the dead node moved go on at the new owner: the SIPp
/// scenarios check each party gets its own CSeq back in every response.
#[test]
fn a_call_moved_before_kill_9_of_the_active_proxy_goes_on_with_its_renumbered_cseqs() {
    takeover(Failure::MovedThenProxy);
}

/// A relay drained with calls on it and the active proxy killed half way through the drain:
/// the node that takes the VIP knows the relay is drained (the store keeps it) and moves the
/// calls the dead node had not moved, each exactly once (the SIPp scenarios take one move's
/// re-INVITE per party, no more); every call then ends through it.
#[test]
fn a_drain_cut_short_by_kill_9_of_the_active_proxy_is_finished_by_the_new_owner() {
    const CALLS: usize = 12;
    let mut cluster = Cluster::start_with("[proxy.reanchor]\nper_second = 6\n");
    // Every call on relay-a: relay-b is drained while they are set up.
    let (status, body) = cluster.post("p1", "/v1/relays/relay-b/drain");
    assert_eq!(status, 200, "{body}");
    let n = CALLS.to_string();
    let (mut callee, mut caller) = cluster.call(
        "uas_restart.xml",
        &["-m", &n, "-key", "rtp_port", "6000"],
        "uac_restart.xml",
        &[
            "-m",
            &n,
            "-r",
            "20",
            "-d",
            "2000",
            "-timeout",
            "90s",
            "-timeout_error",
            "-key",
            "rtp_port",
            "6002",
        ],
    );
    nth_received(&callee, "ACK ", CALLS, Duration::from_secs(15));
    let calls = api_get(&cluster.lan, cluster.proxy("p1"), "/v1/calls");
    let on_a = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| c["media"]["relay"] == "relay-a")
        .count();
    assert_eq!(on_a, CALLS, "{calls}");
    cluster.store_caught_up("p1");

    // Undrain relay-b, drain relay-a: six moves a second; p1 dies about half way.
    let (status, body) = cluster.post("p1", "/v1/relays/relay-b/undrain");
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster.post("p1", "/v1/relays/relay-a/drain");
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(10), "some calls moved", || {
        cluster.relay_calls(1).len() >= CALLS / 3
    });
    cluster.kill_proxy("p1");
    let moved_by_p1 = cluster.relay_calls(1).len();
    cluster.wait_vip_on("p2", Duration::from_secs(5));
    println!("p1 killed with {moved_by_p1} of {CALLS} calls on relay-b");
    assert!(moved_by_p1 < CALLS, "the drain was over before the kill");

    // p2 drains relay-a again and moves the rest; every call then ends normally.
    let caller_run = caller.finish(Duration::from_secs(60));
    caller_run.assert_success();
    let callee_run = callee.finish(Duration::from_secs(30));
    callee_run.assert_success();
    assert_eq!(
        count_received(&caller, "INVITE "),
        2 * CALLS,
        "a move and the callee's each"
    );
    assert_eq!(count_received(&callee, "INVITE "), 3 * CALLS);
    let relays = api_get(&cluster.lan, cluster.proxy("p2"), "/v1/relays");
    let a = relays["relays"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "relay-a"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(a["draining"], true, "{relays}");
    eventually(
        Duration::from_secs(5),
        "no session left on either relay",
        || cluster.relay_calls(0).is_empty() && cluster.relay_calls(1).is_empty(),
    );
    eventually(Duration::from_secs(5), "no record left", || {
        cluster
            .redis
            .cli(&["--scan", "--pattern", "anc:call:*"])
            .trim()
            .is_empty()
    });
}

/// Redis killed with a call up, then the backup proxy killed: the active node, which keeps
/// its calls in memory while the store is away, carries the call to its end with the VIP
/// where it was.
#[test]
fn with_redis_and_the_backup_dead_the_active_node_keeps_its_call() {
    let mut cluster = Cluster::start();
    let (mut callee, mut caller) = cluster.call(
        "uas_reinvite.xml",
        &["-m", "1"],
        "uac_vip.xml",
        &["-m", "1", "-d", "3000", "-timeout", "40s", "-timeout_error"],
    );
    nth_received(&callee, "ACK ", 1, Duration::from_secs(10));
    cluster.redis.kill();
    cluster.kill_proxy("p2");
    eventually(Duration::from_secs(5), "p1 sees the store down", || {
        api_get(&cluster.lan, cluster.proxy("p1"), "/v1/health")["status"] == "degraded"
    });
    let caller_run = caller.finish(Duration::from_secs(30));
    caller_run.assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();
    assert_eq!(
        count_received(&callee, "INVITE "),
        2,
        "the INVITE and the caller's re-INVITE"
    );
    assert_eq!(cluster.lan.vip_holder(VIP), Some("p1"));
    let view = api_get(&cluster.lan, cluster.proxy("p1"), "/v1/cluster");
    assert_eq!(
        (view["role"].as_str(), &view["dialogs"]),
        (Some("active"), &0.into()),
        "{view}"
    );
}

/// The active proxy forwards an INVITE, the callee rings, and the proxy dies before the
/// callee answers: the 200 reaches the node that took the VIP, which holds no transaction for
/// it. It makes the dialog from the INVITE stored with the call and anchors the answer on the
/// call's relay — the caller gets the relay's address — and the ACK and the BYE go through.
#[test]
fn a_200_long_after_the_180_reaches_the_new_owner_and_is_anchored_on_the_calls_relay() {
    let mut cluster = Cluster::start();
    let (mut callee, mut caller) = cluster.call(
        "uas_late_answer.xml",
        &["-m", "1", "-d", "2500"],
        "uac.xml",
        &["-m", "1", "-d", "500", "-timeout", "30s", "-timeout_error"],
    );
    let invite = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    let (relay_ip, port) = media_of(&invite);
    let relay = relay_of_port(port);
    nth_received(&caller, "SIP/2.0 180", 1, Duration::from_secs(5));
    cluster.fail_over(Duration::from_secs(2));

    let ok = nth_received(&caller, "SIP/2.0 200", 1, Duration::from_secs(10));
    let (ip, port) = media_of(&ok);
    assert_eq!(
        (ip.as_str(), relay_of_port(port)),
        (relay_ip.as_str(), relay),
        "{ok}"
    );
    caller.finish(Duration::from_secs(15)).assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();
    assert_eq!(count_received(&callee, "ACK "), 1);
    let p2 = cluster.proxy("p2");
    assert!(
        p2.daemon
            .log()
            .contains("a response to an INVITE another node forwarded"),
        "{}",
        p2.daemon.log()
    );
    cluster.assert_call_gone(&call_id_of(&ok), &[0, 1]);
}

/// The active proxy forwards an INVITE, the callee rings, the proxy dies, and the caller gives
/// up: its CANCEL reaches the node that took the VIP, which has no transaction for the INVITE
/// but the branches stored with the call — the CANCEL reaches the ringing callee, the 487
/// comes back, its ACK follows, and no relay session or record is left.
#[test]
fn a_cancel_for_an_invite_the_dead_node_forwarded_reaches_the_ringing_callee() {
    let mut cluster = Cluster::start();
    let (mut callee, mut caller) = cluster.call(
        "uas_cancel.xml",
        &["-m", "1"],
        "uac_cancel_late.xml",
        &["-m", "1", "-d", "2500", "-timeout", "30s", "-timeout_error"],
    );
    let invite = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    nth_received(&caller, "SIP/2.0 180", 1, Duration::from_secs(5));
    cluster.fail_over(Duration::from_secs(2));

    caller.finish(Duration::from_secs(15)).assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();
    assert_eq!(count_received(&callee, "CANCEL "), 1);
    assert_eq!(count_received(&callee, "ACK "), 1);
    cluster.assert_call_gone(&call_id_of(&invite), &[0, 1]);
}

/// Redis frozen when the VIP moves: the new owner cannot claim the calls yet, and tries again
/// until Redis answers — then it holds the call without any message of the call having come,
/// and carries it to its end.
#[test]
fn a_takeover_while_redis_is_frozen_claims_the_calls_once_redis_answers() {
    let mut cluster = Cluster::start();
    let (mut callee, mut caller) = cluster.call(
        "uas_reinvite.xml",
        &["-m", "1"],
        "uac_vip.xml",
        &["-m", "1", "-d", "9000", "-timeout", "40s", "-timeout_error"],
    );
    nth_received(&callee, "ACK ", 1, Duration::from_secs(10));
    cluster.store_caught_up("p1");
    cluster.redis.signal(SIGSTOP);
    cluster.kill_proxy("p1");
    cluster.wait_vip_on("p2", Duration::from_secs(5));
    let p2 = cluster.proxy("p2");
    std::thread::sleep(Duration::from_millis(1500));
    let view = api_get(&cluster.lan, p2, "/v1/cluster");
    assert_eq!(
        (view["role"].as_str(), &view["dialogs"]),
        (Some("active"), &0.into()),
        "{view}"
    );
    cluster.redis.signal(SIGCONT);
    // Before the caller's re-INVITE (9 s after its ACK): the claim, not a message, brought it.
    eventually(Duration::from_secs(4), "p2 holding the call", || {
        api_get(&cluster.lan, p2, "/v1/cluster")["dialogs"] == 1
    });
    caller.finish(Duration::from_secs(30)).assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();
    assert!(
        p2.daemon
            .log()
            .contains("could not list the cluster's nodes: trying again")
            || p2
                .daemon
                .log()
                .contains("could not claim a node's calls: trying again"),
        "{}",
        p2.daemon.log()
    );
}
