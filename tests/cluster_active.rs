//! Three proxy nodes active-active (`[cluster] mode = "active-active"`, issue 15) on one real
//! `redis-server`, two `anchorage relay`s and SIPp phones: every node record-routes the
//! cluster's name, so the caller sends its INVITE, its ACK and its re-INVITE to three
//! different nodes; the two that do not own the call forward to the one that does. Then the
//! owner is killed: the two survivors take its calls, each exactly the share rendezvous
//! hashing gives it, and when the relay of the calls dies each call is moved once — one
//! re-INVITE to each party, from its new owner — and hung up through yet another node. On
//! the way: a relay drained and undrained through one node is drained and undrained on the
//! others, and a node counts the other nodes' calls when it picks the least loaded relay.

use std::time::Duration;

use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::sipp::Sipp;
use anchorage_testkit::{free_udp_port, http, ng_list, AnchorageProxy, AnchorageRelay, LOCALHOST};

mod restart_support;
use restart_support::{
    assert_origin_rules, assert_party_rules, bin, call_ids, count_received, cseq, eventually, get,
    nth_received, scenario,
};

const CALLS: usize = 8;

fn node(redis: &RedisServer, relays: &[u16; 2], id: &str) -> AnchorageProxy {
    AnchorageProxy::start(
        bin(),
        relays,
        &format!(
            "\n[node]\nid = \"{id}\"\n\n[cluster]\nstore = \"{}\"\nmode = \"active-active\"\n\
             name = \"cluster.anchorage.test\"\n",
            redis.url()
        ),
    )
}

fn metric(p: &AnchorageProxy, name: &str) -> u64 {
    let (_, page) = http(p.api, "GET", "/metrics", "");
    page.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}_total "))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn post(p: &AnchorageProxy, path: &str) {
    let (status, body) = http(p.api, "POST", path, "");
    assert_eq!(status, 200, "{path}: {body}");
}

#[test]
fn three_nodes_active_active_forward_to_the_owner_and_share_a_dead_nodes_calls() {
    let redis = RedisServer::start(None);
    let a = AnchorageRelay::start(bin(), &[]);
    let b = AnchorageRelay::start(bin(), &[]);
    let relays = [a.ng, b.ng];
    let mut p1 = node(&redis, &relays, "p1");
    let p2 = node(&redis, &relays, "p2");
    let p3 = node(&redis, &relays, "p3");
    eventually(
        Duration::from_secs(5),
        "every node sees the others alive",
        || {
            [&p1, &p2, &p3].iter().all(|p| {
                let cluster = get(p, "/v1/cluster");
                cluster["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().filter(|n| n["alive"] == true).count() == 3)
            })
        },
    );
    // Each node learns the others' addresses at its next look at the store (every 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    // Every call on relay-a.
    post(&p1, "/v1/relays/relay-b/drain");

    let rtp = [
        std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket"),
        std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket"),
    ];
    let rtp_port = |i: usize| rtp[i].local_addr().expect("its address").port().to_string();
    let n = CALLS.to_string();
    let callee_addr = std::net::SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let mut callee = Sipp::new("uas", &scenario("uas_active_active.xml"), callee_addr)
        .args(["-m", &n, "-key", "rtp_port", &rtp_port(1)])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller_addr = std::net::SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let mut caller = Sipp::new("uac", &scenario("uac_active_active.xml"), caller_addr)
        .args(["-m", &n, "-r", "10", "-l", &n, "-d", "1000"])
        .args(["-timeout", "90s", "-timeout_error"])
        .args(["-key", "rtp_port", &rtp_port(0)])
        .args(["-key", "p2", &p2.sip.port().to_string()])
        .args(["-key", "p3", &p3.sip.port().to_string()])
        .args(["-rsa", &p1.sip.to_string()])
        .args([callee_addr.to_string()])
        .spawn();

    // Each call set up through p1, its ACK through p2 and the hold through p3: both reach the
    // callee through p1, the owner, and carry the cluster's name in Record-Route.
    let first = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    assert!(
        first.contains("Record-Route: <sip:cluster.anchorage.test:5060;anc-node=p1;lr>"),
        "{first}"
    );
    nth_received(&callee, "ACK ", 2 * CALLS, Duration::from_secs(20));
    assert_eq!(count_received(&callee, "INVITE "), 2 * CALLS);
    assert!(metric(&p2, "anchorage_sip_forwarded_to_owner") >= CALLS as u64);
    assert!(metric(&p3, "anchorage_sip_forwarded_to_owner") >= CALLS as u64);
    let calls = call_ids(&p1);
    assert_eq!(calls.len(), CALLS, "p1 owns every call");
    assert!(call_ids(&p2).is_empty() && call_ids(&p3).is_empty());
    // p1 drained relay-b for the whole cluster, then undrains it: p2 follows both.
    let p2_draining_b = || {
        get(&p2, "/v1/relays")["relays"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "relay-b").cloned())
            .is_some_and(|r| r["draining"] == true)
    };
    assert!(p2_draining_b(), "the drain reached p2");
    post(&p1, "/v1/relays/relay-b/undrain");
    eventually(Duration::from_secs(5), "the undrain reached p2", || {
        !p2_draining_b()
    });
    eventually(Duration::from_secs(5), "p1's store caught up", || {
        get(&p1, "/v1/health")["store"]["dirty_calls"] == 0
    });
    // p1's eight calls count on relay-a for p2 too: a call set up through p2 goes to relay-b.
    std::thread::sleep(Duration::from_millis(600));
    let other_callee = std::net::SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let mut uas = Sipp::new("uas", &scenario("uas.xml"), other_callee)
        .args(["-m", "1"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let other_caller = std::net::SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let mut uac = Sipp::new("uac", &scenario("uac.xml"), other_caller)
        .args(["-m", "1", "-d", "300", "-timeout", "20s", "-timeout_error"])
        .args(["-rsa", &p2.sip.to_string()])
        .args([other_callee.to_string()])
        .spawn();
    let invite = nth_received(&uas, "INVITE ", 1, Duration::from_secs(10));
    let port = anchorage_testkit::media::sdp_media(&invite).port();
    assert!(b.ports.contains(&port), "on relay-b: {port}\n{invite}");
    uac.finish(Duration::from_secs(15)).assert_success();
    uas.finish(Duration::from_secs(15)).assert_success();

    // p1 dies: once its heartbeat expires, p2 and p3 take exactly their shares.
    p1.kill_9();
    let survivors = vec!["p2".to_string(), "p3".to_string()];
    let share = |node: &str| -> Vec<String> {
        let mut mine: Vec<String> = calls
            .iter()
            .filter(|c| anchorage_store::share_of(c, &survivors) == Some(node))
            .cloned()
            .collect();
        mine.sort();
        mine
    };
    let held = |p: &AnchorageProxy| {
        let mut ids = call_ids(p);
        ids.sort();
        ids
    };
    eventually(
        Duration::from_secs(5),
        "the survivors took p1's calls",
        || held(&p2).len() + held(&p3).len() == CALLS,
    );
    assert_eq!(held(&p2), share("p2"));
    assert_eq!(held(&p3), share("p3"));
    println!(
        "p2 took {} calls, p3 took {}",
        share("p2").len(),
        share("p3").len()
    );

    // relay-a dies: each call is moved once, by its new owner.
    a.daemon.signal(9);
    let caller_run = caller.finish(Duration::from_secs(60));
    caller_run.assert_success();
    let callee_run = callee.finish(Duration::from_secs(30));
    callee_run.assert_success();
    assert_eq!(count_received(&caller, "INVITE "), CALLS, "one move each");
    assert_eq!(count_received(&callee, "INVITE "), 3 * CALLS);
    // The callee saw each call's INVITE (1), the hold (2) and the move above them.
    let mut numbers: Vec<u32> = (1..=3 * CALLS)
        .map(|i| {
            restart_support::cseq_number(&nth_received(
                &callee,
                "INVITE ",
                i,
                Duration::from_secs(1),
            ))
        })
        .collect();
    numbers.sort();
    assert!(numbers[..CALLS].iter().all(|c| *c == 1), "{numbers:?}");
    assert!(
        numbers[CALLS..2 * CALLS].iter().all(|c| *c == 2),
        "{numbers:?}"
    );
    assert!(numbers[2 * CALLS..].iter().all(|c| *c > 2), "{numbers:?}");
    let byes = (1..=CALLS)
        .map(|i| nth_received(&callee, "BYE ", i, Duration::from_secs(1)))
        .collect::<Vec<_>>();
    assert!(
        byes.iter().all(|b| restart_support::cseq_number(b) > 3),
        "the BYE renumbered above the move: {:?}",
        byes.iter().map(|b| cseq(b).to_string()).collect::<Vec<_>>()
    );
    // Each call, each party: CSeqs strictly increase, every 2xx ACKed, and the o= it saw kept
    // its username and session id with one version more per change.
    for call in &calls {
        let of_call = |list: &[String]| -> Vec<String> {
            list.iter()
                .filter(|m| restart_support::header(m, "Call-ID") == call.as_str())
                .cloned()
                .collect()
        };
        for (who, run) in [("caller", &caller_run), ("callee", &callee_run)] {
            let (received, sent) = (of_call(&run.received), of_call(&run.sent));
            assert_party_rules(&format!("{who} of {call}"), &received, &sent);
            assert_origin_rules(&format!("{who} of {call}"), &received);
        }
    }
    eventually(Duration::from_secs(1), "no session left on relay-b", || {
        ng_list(b.ng).is_empty()
    });
    eventually(Duration::from_secs(5), "no record left", || {
        restart_support::redis_cli(redis.port, &["--scan", "--pattern", "anc:call:*"]).is_empty()
    });
    drop(rtp);
}
