//! Calls outlive failures of the proxy and of its store (issue 14), on real peers: the proxy
//! `kill -9`ed between a move's re-INVITE and the party's 2xx (the restarted node ACKs the 2xx
//! from the call's record and completes the move, leaving one relay session), and Redis
//! `kill -9`ed under load, restarted empty and refilled, then a proxy restart that still finds
//! every call.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_testkit::media::sdp_media;
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{free_udp_port, ng_list, LOCALHOST};

mod restart_support;
use restart_support::{
    call_ids, cseq, eventually, floors, get, nth_received, relay_of, scenario, the_call_id,
    Parties, Platform,
};

#[test]
fn kill_9_of_the_proxy_right_after_a_moves_re_invite_completes_the_move_on_one_relay() {
    let mut platform = Platform::start();
    // The callee answers the move's re-INVITE 2 s late; the caller hangs up 8 s after the
    // move (-d).
    let mut parties = Parties::call(
        platform.p.sip,
        "uac_restart_bye.xml",
        &["-d", "8000"],
        "uas_restart_slow_move.xml",
        &[],
    );
    let call_id = the_call_id(&platform.p);
    let [(from, old), (to, new)] = platform.move_relays(&call_id);
    let (old, new, new_ports) = (old.ng, new.ng, new.ports.clone());
    assert!(ng_list(old).contains(&call_id));
    platform.drain(from);
    let move_at_callee = nth_received(&parties.callee, "INVITE ", 2, Duration::from_secs(10));
    // The record says both re-INVITEs went out (written at once after them).
    eventually(
        Duration::from_secs(2),
        "the move's re-INVITEs marked sent in the store",
        || {
            let (record, _, _) = platform.stored(&call_id);
            record["moving"]["sent_to_caller"] == true && record["moving"]["sent_to_callee"] == true
        },
    );
    // The proxy dies before the callee's 200 (it has both re-INVITEs out and a session on
    // each relay).
    platform.kill_proxy();
    assert_eq!(cseq(&move_at_callee), "2 INVITE");
    let move_at_caller = nth_received(&parties.caller, "INVITE ", 1, Duration::from_secs(5));
    assert_eq!(cseq(&move_at_caller), "1 INVITE");
    // Both parties were offered the new relay.
    for offer in [&move_at_callee, &move_at_caller] {
        let media = sdp_media(offer);
        assert!(new_ports.contains(&media.port()), "{offer}");
    }
    assert!(ng_list(old).contains(&call_id));
    assert!(ng_list(new).contains(&call_id));
    let (record, reserved_to_callee, reserved_to_caller) = platform.stored(&call_id);
    let (floor_to_callee, _) = floors(&record, reserved_to_callee, reserved_to_caller);
    assert_eq!(record["moving"]["new_node"], to, "{record}");

    platform.start_proxy_again(1);
    assert!(
        platform.p.daemon.log().contains("its move is completed"),
        "{}",
        platform.p.daemon.log()
    );
    // The callee's 200 (sent to the dead node or retransmitted to the new one) is ACKed with
    // the re-INVITE's CSeq; so is the caller's.
    let ack = nth_received(&parties.callee, "ACK ", 2, Duration::from_secs(15));
    assert_eq!(cseq(&ack), "2 ACK", "{ack}");
    let ack = nth_received(&parties.caller, "ACK ", 1, Duration::from_secs(5));
    assert_eq!(cseq(&ack), "1 ACK", "{ack}");
    // The media is on the new relay alone.
    assert_eq!(relay_of(&platform.p, &call_id), to);
    eventually(
        Duration::from_secs(5),
        "the old relay's session deleted",
        || !ng_list(old).contains(&call_id),
    );
    assert!(ng_list(new).contains(&call_id));
    // The caller's BYE (CSeq 2) reaches the callee just above what the dead node had
    // reserved for its own requests to the callee.
    let bye = nth_received(&parties.callee, "BYE ", 1, Duration::from_secs(20));
    assert_eq!(cseq(&bye), format!("{} BYE", floor_to_callee + 1), "{bye}");
    let (_, callee) = parties.finish(Duration::from_secs(15));
    // The callee's 200 to the move was ACKed without a long run of retransmissions.
    let sent_200 = callee
        .sent
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 200") && cseq(m) == "2 INVITE")
        .count();
    assert!(
        (1..=3).contains(&sent_200),
        "{sent_200} times: {:#?}",
        callee.sent
    );
    platform.assert_call_gone(&call_id);
}

/// A SIPp caller of `calls` calls (`uac.xml`: INVITE, ACK, BYE after `hold_ms`) through the
/// proxy at `proxy` to the UAS at `uas`, all set up within a second.
fn callers(proxy: SocketAddr, uas: SocketAddr, calls: u32, hold_ms: u32) -> Sipp {
    Sipp::new(
        "uac",
        &scenario("uac.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", &calls.to_string(), "-r", &calls.to_string()])
    .args(["-l", &calls.to_string(), "-d", &hold_ms.to_string()])
    .args(["-timeout", "90s", "-timeout_error"])
    .args(["-rsa", &proxy.to_string()])
    .args([uas.to_string()])
}

/// Waits up to 15 s until the proxy holds `n` calls; else fails with what the SIPp runs said.
fn calls_up<const N: usize>(platform: &Platform, n: usize, sipps: [&mut SippProcess; N]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = call_ids(&platform.p).len();
        if up == n {
            return;
        }
        if Instant::now() > deadline {
            let said: Vec<String> = sipps
                .into_iter()
                .map(|s| s.finish(Duration::from_millis(10)).output)
                .collect();
            panic!(
                "{up} calls up, not {n}, after 15 s; SIPp said:\n{}",
                said.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn calls_outlive_a_redis_outage_an_empty_redis_and_then_a_proxy_restart() {
    let mut platform = Platform::start();
    let uas = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let mut callee = Sipp::new("uas", &scenario("uas.xml"), uas).spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut first = callers(platform.p.sip, uas, 20, 25_000).spawn();
    calls_up(&platform, 20, [&mut first, &mut callee]);
    platform.store_caught_up();
    assert_eq!(platform.stored_calls(), 20);

    // Redis dies: the proxy notices, and calls are still set up (from memory).
    platform.redis.kill();
    eventually(Duration::from_secs(5), "the store down", || {
        let h = get(&platform.p, "/v1/health");
        h["store"]["up"] == false && h["status"] == "degraded"
    });
    let mut second = callers(platform.p.sip, uas, 5, 15_000).spawn();
    calls_up(&platform, 25, [&mut second, &mut callee]);
    let health = get(&platform.p, "/v1/health");
    assert!(
        health["store"]["dirty_calls"].as_u64() >= Some(5),
        "{health}"
    );

    // An empty Redis on the same port: the proxy writes every live call again.
    platform.redis.restart();
    eventually(Duration::from_secs(10), "the store refilled", || {
        let h = get(&platform.p, "/v1/health");
        h["store"]["up"] == true
            && h["store"]["dirty_calls"] == 0
            && h["store"]["refills"].as_u64() >= Some(1)
            && h["store"]["live_calls"] == 25
    });
    assert_eq!(platform.stored_calls(), 25);

    // Then the proxy dies: the restarted node finds all of them, also the ones set up while
    // Redis was away.
    let before: BTreeSet<String> = call_ids(&platform.p).into_iter().collect();
    platform.kill_and_restart_proxy(25);
    let after: BTreeSet<String> = call_ids(&platform.p).into_iter().collect();
    assert_eq!(before, after);

    // Every call ends with a BYE answered 200 end to end (SIPp's verdict), and nothing is
    // left: no relay session, no call, no record.
    first.finish(Duration::from_secs(60)).assert_success();
    second.finish(Duration::from_secs(60)).assert_success();
    eventually(Duration::from_secs(5), "no call left", || {
        call_ids(&platform.p).is_empty()
    });
    eventually(Duration::from_secs(5), "no relay session left", || {
        ng_list(platform.a.ng).is_empty() && ng_list(platform.b.ng).is_empty()
    });
    eventually(Duration::from_secs(5), "no record left", || {
        let h = get(&platform.p, "/v1/health");
        h["store"]["live_calls"] == 0 && h["store"]["dirty_calls"] == 0
    });
    assert_eq!(platform.stored_calls(), 0);
    let _ = callee.finish(Duration::from_millis(100));
}
