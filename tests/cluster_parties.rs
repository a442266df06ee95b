//! `kill -9` of the active proxy of the cluster behind a virtual IP, mid-call, with the
//! parties that are hard to reach again (issue #15), on the LAN of `cluster_support` (real
//! keepalived, Redis, two `anchorage relay` nodes):
//!
//! * a caller behind a real NAT (a namespace with a private address, masqueraded by a router
//!   namespace with iptables, its ports remapped) calling a phone on the LAN;
//! * a callee on SIP over TCP (baresip), called by a phone on UDP: its connection to the dead
//!   node is gone, and the new owner must open one to its Contact.
//!
//! Each call is moved to the other relay (the relay drained) before the kill, so the new
//! owner carries renumbered CSeqs; after the VIP moved, both parties' re-INVITEs and the BYE
//! go through the new owner on the relay the call moved to. After each: the BYE answered 200
//! on both sides, the CSeqs each party received strictly increasing, every 2xx ACKed, the `o=`
//! each party received with one username and session id and its version up by one per SDP,
//! no relay session and no media port held a second after the BYE, no stored record left.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod cluster_support;
mod restart_support;
use anchorage_testkit::baresip::{Baresip, MediaEnc, Phone};
use anchorage_testkit::lan::Lan;
use anchorage_testkit::sipp::Sipp;
use cluster_support::*;
use restart_support::{
    assert_origin_rules, assert_party_rules, count_received, cseq_of, header, nth_received,
    request_uri, scenario,
};

/// The BYE `hanging_up` sent reached `other`, which answered it 200, and that 200 came back.
fn assert_bye_ended(
    (hanging_up, hu_received, hu_sent): (&str, &[String], &[String]),
    (other, o_received, o_sent): (&str, &[String], &[String]),
) {
    let sent = hu_sent.iter().filter(|m| m.starts_with("BYE ")).count();
    assert_eq!(sent, 1, "{hanging_up} sent {sent} BYEs");
    let bye = o_received
        .iter()
        .find(|m| m.starts_with("BYE "))
        .unwrap_or_else(|| panic!("{other} received no BYE: {o_received:#?}"));
    let n = cseq_of(bye).0;
    let answered = |list: &[String]| {
        list.iter()
            .any(|m| m.starts_with("SIP/2.0 200") && cseq_of(m) == (n, "BYE".to_string()))
    };
    assert!(answered(o_sent), "{other} did not answer its BYE 200");
    let n = cseq_of(
        hu_sent
            .iter()
            .find(|m| m.starts_with("BYE "))
            .expect("a BYE"),
    )
    .0;
    assert!(
        hu_received
            .iter()
            .any(|m| m.starts_with("SIP/2.0 200") && cseq_of(m) == (n, "BYE".to_string())),
        "{hanging_up} got no 200 to its BYE: {hu_received:#?}"
    );
}

/// Whether every media port of both relays is free again (bindable on `svc`: a relay holds a
/// session's ports open until the session is deleted).
fn relay_ports_free(cluster: &Cluster) -> bool {
    let svc = cluster.lan.host("svc");
    let ip = svc.addr();
    svc.run(|| {
        RELAYS.iter().all(|(_, _, base)| {
            (*base..base + 100).all(|port| std::net::UdpSocket::bind((ip, port)).is_ok())
        })
    })
}

/// Within a second of `bye` (when the BYE reached its recipient) neither relay holds a
/// session or a port.
fn assert_relays_free_a_second_after(cluster: &Cluster, bye: Instant) {
    let deadline = bye + Duration::from_secs(1);
    loop {
        let sessions = [cluster.relay_calls(0), cluster.relay_calls(1)];
        if sessions.iter().all(Vec::is_empty) && relay_ports_free(cluster) {
            println!("the relays free {:?} after the BYE", bye.elapsed());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "relay sessions or ports left a second after the BYE: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// No call record left in Redis, no call on `p2`.
fn assert_no_call_left(cluster: &Cluster) {
    restart_support::eventually(Duration::from_secs(5), "no record left", || {
        cluster
            .redis
            .cli(&["--scan", "--pattern", "anc:call:*"])
            .trim()
            .is_empty()
    });
    let calls = api_get(&cluster.lan, cluster.proxy("p2"), "/v1/calls");
    assert_eq!(calls["calls"].as_array().map(Vec::len), Some(0), "{calls}");
}

/// The caller's leg as a node shows it (`/v1/calls/{id}`).
fn caller_leg(cluster: &Cluster, node: &str, call_id: &str) -> serde_json::Value {
    let view = api_get(
        &cluster.lan,
        cluster.proxy(node),
        &format!("/v1/calls/{call_id}"),
    );
    view["dialogs"][0]["caller"].clone()
}

/// Drains the relay a call is on (through `p1`): the call moves to the other one. Its name.
fn drain(cluster: &Cluster, relay: &str) {
    let (status, body) = cluster.post("p1", &format!("/v1/relays/{relay}/drain"));
    assert_eq!(status, 200, "{body}");
}

fn other_relay(relay: &str) -> &'static str {
    RELAYS
        .iter()
        .find(|r| r.0 != relay)
        .map(|r| r.0)
        .expect("two relays")
}

/// A caller behind a NAT (private `192.168.77.2`, its packets leaving from the `nat` router's
/// LAN address on a remapped port) calls a phone on the LAN through the VIP. The call moves to
/// the other relay, the active proxy is `kill -9`ed, the VIP moves; the callee speaks first:
/// its re-INVITE reaches the NATed caller — whose Contact, a private address, no node can
/// route to — at its public address, which the new owner only knows from Redis. Then the
/// caller's re-INVITE and the callee's BYE go through the new owner, on the relay the call
/// moved to.
#[test]
fn a_caller_behind_nat_is_reached_at_its_public_address_by_the_new_owner_after_kill_9() {
    let mut cluster = Cluster::start_with_hosts(&["nat"], "");
    cluster.lan.add_behind_nat("natphone", "nat");
    let public_ip = cluster.lan.host("nat").addr();
    let private = SocketAddr::new(cluster.lan.host("natphone").addr(), 5080);
    // The callee waits after the move (-d) while the test kills the active node.
    let (mut callee, mut caller) = cluster.call_between(
        "phones",
        "uas_vip_first.xml",
        &["-m", "1", "-d", "3000", "-key", "rtp_port", "6000"],
        "natphone",
        "uac_vip_second.xml",
        &[
            "-m",
            "1",
            "-timeout",
            "60s",
            "-timeout_error",
            "-key",
            "rtp_port",
            "6002",
        ],
    );
    let invite = callee
        .nth_received("INVITE ", 1, Duration::from_secs(10))
        .unwrap_or_else(|| {
            let run = caller.finish(Duration::from_secs(1));
            panic!("no INVITE reached the callee; the caller: {}", run.output)
        });
    nth_received(&callee, "ACK ", 1, Duration::from_secs(10));
    // The caller wrote its private address; the proxy marked where it really came from.
    let caller_via = invite
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("via:"))
        .unwrap_or_else(|| panic!("no Via in {invite}"));
    assert!(
        caller_via.contains(&format!("SIP/2.0/UDP {private}")),
        "{caller_via}"
    );
    assert!(
        caller_via.contains(&format!("received={public_ip}")),
        "{caller_via}"
    );
    let public_port: u16 = caller_via
        .split(';')
        .find_map(|p| p.trim().strip_prefix("rport="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no rport value in {caller_via}"));
    assert!(Lan::NAT_PORTS.contains(&public_port), "{caller_via}");
    let public = SocketAddr::new(public_ip, public_port);
    let call_id = call_id_of(&invite);
    let relay = relay_of_port(media_of(&invite).1);
    let moved_to = other_relay(relay);
    assert!(!relay_ports_free(&cluster), "the call's ports look free");
    let leg = caller_leg(&cluster, "p1", &call_id);
    assert_eq!(leg["source"], public.to_string(), "{leg}");
    let contact = leg["remote_target"].as_str().unwrap_or("").to_string();
    assert!(
        contact.starts_with(&format!("sip:caller@{private}")),
        "{leg}"
    );

    // The move, through the NAT to the caller.
    drain(&cluster, relay);
    let move_at_callee = nth_received(&callee, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(relay_of_port(media_of(&move_at_callee).1), moved_to);
    let move_at_caller = nth_received(&caller, "INVITE ", 1, Duration::from_secs(10));
    assert_eq!(request_uri(&move_at_caller), contact);
    assert_eq!(relay_of_port(media_of(&move_at_caller).1), moved_to);
    nth_received(&caller, "ACK ", 1, Duration::from_secs(10));
    nth_received(&callee, "ACK ", 2, Duration::from_secs(10));
    cluster.store_caught_up("p1");
    cluster.kill_proxy("p1");
    assert_eq!(
        count_received(&caller, "INVITE "),
        1,
        "the callee spoke before the kill"
    );
    cluster.wait_vip_on("p2", Duration::from_secs(5));

    // The callee's re-INVITE reaches the caller through the NAT: p2 sent it to the public
    // address (its private Contact is not routable from the LAN).
    let reinvite = nth_received(&caller, "INVITE ", 2, Duration::from_secs(15));
    assert_eq!(request_uri(&reinvite), contact, "{reinvite}");
    assert_eq!(relay_of_port(media_of(&reinvite).1), moved_to, "{reinvite}");
    assert_eq!(
        caller_leg(&cluster, "p2", &call_id)["source"],
        public.to_string()
    );
    // The caller's re-INVITE reaches the callee, on the same relay; the BYE the caller.
    let caller_reinvite = nth_received(&callee, "INVITE ", 3, Duration::from_secs(15));
    assert_eq!(
        relay_of_port(media_of(&caller_reinvite).1),
        moved_to,
        "{caller_reinvite}"
    );
    let bye = nth_received(&caller, "BYE ", 1, Duration::from_secs(15));
    assert_relays_free_a_second_after(&cluster, Instant::now());
    assert_eq!(request_uri(&bye), contact, "{bye}");
    let caller_run = caller.finish(Duration::from_secs(15));
    caller_run.assert_success();
    let callee_run = callee.finish(Duration::from_secs(15));
    callee_run.assert_success();

    assert_party_rules("caller", &caller_run.received, &caller_run.sent);
    assert_party_rules("callee", &callee_run.received, &callee_run.sent);
    assert_origin_rules("caller", &caller_run.received);
    assert_origin_rules("callee", &callee_run.received);
    assert_bye_ended(
        ("callee", &callee_run.received, &callee_run.sent),
        ("caller", &caller_run.received, &caller_run.sent),
    );
    cluster.assert_p2_took_over();
    assert_no_call_left(&cluster);
}

/// A phone on UDP calls a baresip on SIP over TCP through the VIP. The call moves to the other
/// relay (p1 sends the callee its re-INVITE on the connection it opened for the INVITE), the
/// active proxy is `kill -9`ed — the callee's connection to it is gone — and the VIP moves.
/// The caller's re-INVITE reaches the callee over a new connection the new owner opens to its
/// Contact; the callee's re-INVITE (hold) reaches the caller over a connection it opens to the
/// VIP; the caller's BYE reaches it, all on the relay the call moved to.
#[test]
fn a_callee_on_tcp_is_reached_over_a_new_connection_from_the_new_owner_after_kill_9() {
    let mut cluster = Cluster::start_with_hosts(&["tcpphone"], "");
    let p2_addr = cluster.lan.host("p2").addr();
    let mut bob = Baresip::start_in_lan(
        "bob",
        &Phone {
            user: "bob".into(),
            mediaenc: MediaEnc::Plain,
            tone_hz: 440.0,
            outbound: None,
        },
        cluster.lan.host("tcpphone"),
        "tcp",
    );
    let callee_uri = format!("sip:bob@{};transport=tcp", bob.sip);
    let phones = cluster.lan.host("phones");
    let mut caller = Sipp::in_lan(
        phones,
        "uac",
        &scenario("uac_vip_tcp_callee.xml"),
        SocketAddr::new(phones.addr(), 5080),
    )
    .args(["-m", "1", "-d", "3000", "-timeout", "60s", "-timeout_error"])
    .args([
        "-key",
        "callee_uri",
        &callee_uri,
        "-key",
        "rtp_port",
        "6002",
    ])
    .args([sip().to_string()])
    .spawn();
    bob.wait_event("CALL_INCOMING", 1, Duration::from_secs(10));
    bob.accept();
    nth_received(&caller, "SIP/2.0 200", 1, Duration::from_secs(10));
    bob.wait_received("ACK ", 1, Duration::from_secs(10));
    let trace = bob.trace();
    let invite = trace
        .iter()
        .find(|t| t.message.starts_with("INVITE "))
        .expect("the INVITE in baresip's trace");
    assert_eq!(invite.transport, "TCP", "{invite:?}");
    assert!(
        header(&invite.message, "Via").starts_with(&format!("SIP/2.0/TCP {VIP}:{SIP_PORT}")),
        "{invite:?}"
    );
    let call_id = call_id_of(&invite.message);
    let relay = relay_of_port(media_of(&invite.message).1);
    let moved_to = other_relay(relay);
    assert!(!relay_ports_free(&cluster), "the call's ports look free");

    drain(&cluster, relay);
    let move_at_bob = bob.wait_received("INVITE ", 2, Duration::from_secs(10));
    assert_eq!(relay_of_port(media_of(&move_at_bob).1), moved_to);
    nth_received(&caller, "INVITE ", 1, Duration::from_secs(10));
    bob.wait_received("ACK ", 2, Duration::from_secs(10));
    nth_received(&caller, "ACK ", 1, Duration::from_secs(10));
    cluster.store_caught_up("p1");
    let before_kill = bob.trace().len();
    cluster.kill_proxy("p1");
    assert_eq!(
        count_received(&caller, "SIP/2.0 200"),
        1,
        "the caller spoke before the kill"
    );
    cluster.wait_vip_on("p2", Duration::from_secs(5));

    // The caller's re-INVITE, over a connection p2 opened to the callee's Contact.
    let reinvite = bob.wait_received("INVITE ", 3, Duration::from_secs(15));
    assert_eq!(relay_of_port(media_of(&reinvite).1), moved_to, "{reinvite}");
    let over = bob
        .trace()
        .into_iter()
        .skip(before_kill)
        .find(|t| t.message.starts_with("INVITE "))
        .expect("the re-INVITE in baresip's trace");
    assert_eq!(
        (over.transport.as_str(), over.from.ip(), over.to),
        ("TCP", p2_addr, bob.sip),
        "{over:?}"
    );
    nth_received(&caller, "SIP/2.0 200", 2, Duration::from_secs(10));
    bob.wait_received("ACK ", 3, Duration::from_secs(10));
    // The callee's re-INVITE (hold), then the caller's BYE.
    bob.command("hold", "");
    let hold = nth_received(&caller, "INVITE ", 2, Duration::from_secs(15));
    assert_eq!(relay_of_port(media_of(&hold).1), moved_to, "{hold}");
    let sent_hold = bob
        .trace()
        .into_iter()
        .skip(before_kill)
        .find(|t| t.message.starts_with("INVITE ") && t.from.ip() == bob.sip.ip())
        .expect("the hold in baresip's trace");
    assert_eq!(
        (sent_hold.transport.as_str(), sent_hold.to),
        ("TCP", sip()),
        "{sent_hold:?}"
    );
    let bye = bob.wait_received("BYE ", 1, Duration::from_secs(15));
    assert_relays_free_a_second_after(&cluster, Instant::now());
    assert_eq!(call_id_of(&bye), call_id);
    bob.wait_event("CALL_CLOSED", 1, Duration::from_secs(10));
    let caller_run = caller.finish(Duration::from_secs(15));
    caller_run.assert_success();

    let bob_trace = bob.trace();
    let bob_ip = bob.sip.ip();
    let of = |received: bool| -> Vec<String> {
        bob_trace
            .iter()
            .filter(|t| (if received { t.to.ip() } else { t.from.ip() }) == bob_ip)
            .map(|t| t.message.clone())
            .collect()
    };
    let (bob_received, bob_sent) = (of(true), of(false));
    assert!(
        bob_trace.iter().all(|t| t.transport == "TCP"),
        "baresip used UDP: {bob_trace:#?}"
    );
    assert_party_rules("caller", &caller_run.received, &caller_run.sent);
    assert_party_rules("callee", &bob_received, &bob_sent);
    assert_origin_rules("caller", &caller_run.received);
    assert_origin_rules("callee", &bob_received);
    assert_bye_ended(
        ("caller", &caller_run.received, &caller_run.sent),
        ("callee", &bob_received, &bob_sent),
    );
    cluster.assert_p2_took_over();
    assert_no_call_left(&cluster);
    bob.quit();
}
