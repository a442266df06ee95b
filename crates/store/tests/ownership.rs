//! Who may write a call, against a real `redis-server`: a claim moves a call to another node
//! and fences the old owner (its writes, deletions and reservations are refused and reported),
//! a restarted node claims its previous start's calls, a deleted call cannot be brought back by
//! a fenced node, and heartbeats show which nodes are alive.

mod support;

use std::time::Duration;

use anchorage_config::{ClusterConfig, ClusterMode, StoreSpec};
use anchorage_store::{CseqReserved, Store, StoreError};
use support::redis_server::RedisServer;
use support::sample;

async fn open(server: &RedisServer, node: &str) -> Store {
    let config = ClusterConfig {
        store: Some(StoreSpec::One(server.url())),
        timeout_ms: 300,
        retry_ms: 50,
        heartbeat_ms: 50,
        lease_ms: 300,
        // Several nodes: writes are fenced.
        mode: ClusterMode::Vip,
        vip: Some("10.0.0.100".parse().unwrap()),
        ..ClusterConfig::default()
    };
    Store::open(&config, node).await.expect("the store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_call_fences_its_old_owner() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    a.put(sample::call("c1", "node-a"));
    a.flush().await.unwrap();

    let taken = b.claim("c1").await.unwrap().expect("the record");
    assert_eq!(taken.owner, "node-b");
    assert_eq!(b.status().claimed_calls, 1);
    assert_eq!(b.claim("unknown").await.unwrap(), None);

    // node-a does not know yet: its next write is refused, and said.
    let mut late = sample::call("c1", "node-a");
    late.updated_unix_ms += 1_000;
    a.put(late);
    a.flush().await.unwrap();
    assert_eq!(a.take_fenced(), vec!["c1".to_string()]);
    assert!(a.take_fenced().is_empty(), "said once");
    let reserve = a
        .reserve_cseq(
            "c1",
            CseqReserved {
                to_callee: 90,
                to_caller: 90,
            },
        )
        .await;
    assert!(
        matches!(reserve, Err(StoreError::Fenced { ref call_id }) if call_id == "c1"),
        "{reserve:?}"
    );
    assert_eq!(a.take_fenced(), vec!["c1".to_string()]);
    a.delete("c1");
    a.flush().await.unwrap();
    assert_eq!(a.take_fenced(), vec!["c1".to_string()]);
    // A durable put (a move's record, before its re-INVITEs) says it did not happen.
    let durable = a.put_durable(sample::call("c1", "node-a")).await;
    assert!(
        matches!(durable, Err(StoreError::Fenced { ref call_id }) if call_id == "c1"),
        "{durable:?}"
    );
    assert_eq!(a.take_fenced(), vec!["c1".to_string()]);
    let status = a.status();
    assert_eq!(status.fenced_writes, 4, "{status:?}");
    assert!(status.up, "fencing is not a failure: {status:?}");

    // What node-b holds is untouched, and node-b goes on writing it.
    let stored = b.load("c1").await.unwrap().expect("still there");
    assert_eq!(stored.owner, "node-b");
    assert_eq!(stored.updated_unix_ms, taken.updated_unix_ms);
    assert_eq!(stored.cseq_reserved, taken.cseq_reserved);
    let mut next = taken.clone();
    next.updated_unix_ms += 5;
    b.put(next.clone());
    b.flush().await.unwrap();
    assert!(b.take_fenced().is_empty());
    assert_eq!(b.load("c1").await.unwrap(), Some(next));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_of_takes_a_dead_nodes_calls_once_and_moves_them_to_the_claimers_index() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    for i in 0..300 {
        a.put(sample::call(&format!("a-{i}"), "node-a"));
    }
    a.flush().await.unwrap();
    let b = open(&server, "node-b").await;
    let c = open(&server, "node-c").await;
    let taken = b.claim_of("node-a").await.unwrap();
    assert_eq!(taken.len(), 300);
    assert!(taken.iter().all(|r| r.owner == "node-b"));
    assert!(c.claim_of("node-a").await.unwrap().is_empty(), "taken once");
    // Claiming its own index again takes nothing and keeps every entry.
    assert!(b.claim_of("node-b").await.unwrap().is_empty());
    assert_eq!(b.status().claimed_calls, 300);
    assert_eq!(b.load_owned("node-b").await.unwrap().len(), 300);
    assert!(b.load_owned("node-a").await.unwrap().is_empty());
    assert_eq!(b.status().live_calls, 300, "claimed calls are live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_claims_its_previous_starts_calls_and_fences_that_start() {
    let server = RedisServer::start(None);
    let before = open(&server, "node-a").await;
    for i in 0..5 {
        before.put(sample::call(&format!("r-{i}"), "node-a"));
    }
    before.flush().await.unwrap();
    // Another node took one of them meanwhile: the restart does not get it back.
    let other = open(&server, "node-b").await;
    assert!(other.claim("r-4").await.unwrap().is_some());

    let after = open(&server, "node-a").await;
    let mut mine: Vec<String> = after
        .claim_of("node-a")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.call_id)
        .collect();
    mine.sort();
    assert_eq!(mine, ["r-0", "r-1", "r-2", "r-3"]);
    // The index no longer lists the call node-b took.
    assert_eq!(after.load_owned("node-a").await.unwrap().len(), 4);
    before.put(sample::call("r-0", "node-a"));
    before.flush().await.unwrap();
    assert_eq!(before.take_fenced(), vec!["r-0".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_cannot_bring_back_a_call_the_new_owner_ended() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    a.put(sample::call("ended", "node-a"));
    a.flush().await.unwrap();
    assert!(b.claim("ended").await.unwrap().is_some());
    b.delete("ended");
    b.flush().await.unwrap();
    assert_eq!(b.status().write_errors, 0);
    // What is left is a tombstone with the owner's token, for a minute at most.
    let mut c = support::redis_server::connection(&server);
    let token: String = redis::Commands::get(&mut c, "anc:gone:{ended}").unwrap();
    assert!(token.starts_with("node-b/"), "{token}");
    let ttl: i64 = redis::Commands::pttl(&mut c, "anc:gone:{ended}").unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    a.put(sample::call("ended", "node-a"));
    a.flush().await.unwrap();
    assert_eq!(a.take_fenced(), vec!["ended".to_string()]);
    assert_eq!(b.load("ended").await.unwrap(), None);
    assert!(b.claim("ended").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_show_each_node_alive_until_its_lease_ends() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    a.put(sample::call("x", "node-a"));
    a.flush().await.unwrap();
    let mut nodes = Vec::new();
    for _ in 0..50 {
        nodes = a.nodes().await.unwrap();
        if nodes.iter().filter(|n| n.alive).count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(
        nodes.iter().all(|n| n.alive && n.epoch.is_some()),
        "{nodes:?}"
    );
    assert_eq!((nodes[0].id.as_str(), nodes[0].calls), ("node-a", 1));
    assert_eq!((nodes[1].id.as_str(), nodes[1].calls), ("node-b", 0));
    let epoch_b = nodes[1].epoch.clone();

    // node-b stops beating (its store ends with its last handle): dead once its lease ends.
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let nodes = a.nodes().await.unwrap();
        if !nodes[1].alive {
            assert!(nodes[0].alive, "node-a still beats: {nodes:?}");
            assert_eq!(nodes[1].epoch, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{nodes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new start of node-b beats with a new epoch.
    let b = open(&server, "node-b").await;
    let mut again = None;
    for _ in 0..50 {
        let nodes = b.nodes().await.unwrap();
        if nodes[1].alive {
            again = nodes[1].epoch.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some() && again != epoch_b, "{again:?} {epoch_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_relay_is_drained_for_every_node_until_undrained() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    a.set_drained("r2", true).await.unwrap();
    a.set_drained("r1", true).await.unwrap();
    assert_eq!(b.drained().await.unwrap(), ["r1", "r2"]);
    b.set_drained("r2", false).await.unwrap();
    assert_eq!(a.drained().await.unwrap(), ["r1"]);
    let memory = Store::memory("m");
    memory.set_drained("x", true).await.unwrap();
    assert_eq!(memory.drained().await.unwrap(), ["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_when_redis_forgot_the_scripts() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    a.put(sample::call("s1", "node-a"));
    a.flush().await.unwrap();
    // A Redis that lost its script cache (restarted, failed over, SCRIPT FLUSH): the write
    // that meets NOSCRIPT is retried with the script's text, and the scripts are loaded again.
    let mut c = support::redis_server::connection(&server);
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let mut changed = sample::call("s1", "node-a");
    changed.updated_unix_ms += 7;
    a.put(changed.clone());
    a.put(sample::call("s2", "node-a"));
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if a.flush().await.is_ok() && a.load("s2").await.ok().flatten().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("written within 5 s");
    assert_eq!(a.load("s1").await.unwrap(), Some(changed));
    assert!(a.status().up, "{:?}", a.status());
}

/// A node's relay sessions to delete are its own list; a node that takes its calls takes the
/// list too, all of it or, among several survivors, its share by call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_to_delete_go_with_the_calls_to_the_node_that_takes_them() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    for i in 0..20 {
        a.add_orphan("relay-x", &format!("c{i}")).await.unwrap();
    }
    a.add_orphan("relay-y", "cy").await.unwrap();
    a.clear_orphans("relay-y").await.unwrap();
    let live = vec!["node-b".to_string(), "node-c".to_string()];
    let mut share = b
        .take_orphans_of("node-a", Some(live.clone()))
        .await
        .unwrap();
    share.sort();
    let mut expected: Vec<(String, String)> = (0..20)
        .map(|i| format!("c{i}"))
        .filter(|c| anchorage_store::share_of(c, &live) == Some("node-b"))
        .map(|c| ("relay-x".to_string(), c))
        .collect();
    expected.sort();
    assert_eq!(share, expected);
    assert!(
        !share.is_empty() && share.len() < 20,
        "a share: {}",
        share.len()
    );
    // The rest, to a node that takes everything (the VIP holder); nothing is left, and the
    // cleared relay's entry is not among them.
    let rest = b.take_orphans_of("node-a", None).await.unwrap();
    assert_eq!(rest.len() + share.len(), 20);
    assert!(rest.iter().all(|(relay, _)| relay == "relay-x"));
    assert_eq!(b.take_orphans_of("node-a", None).await.unwrap(), vec![]);
}
