//! The store against a real redis-server on loopback (never a mock): writes, loads, indexes,
//! TTLs, durable reservations, an outage with an empty restart, and passwords.

mod support;

use std::time::Duration;

use anchorage_config::{ClusterConfig, StoreSpec};
use anchorage_store::{CallRecord, CseqReserved, Store, StoreError};
use redis::Commands;
use support::eventually;
use support::redis_server::{connection, RedisServer};
use support::sample;

fn config(url: &str) -> ClusterConfig {
    ClusterConfig {
        store: Some(StoreSpec::One(url.to_string())),
        timeout_ms: 300,
        retry_ms: 50,
        check_interval_ms: 100,
        record_ttl_s: 3_600,
        ..ClusterConfig::default()
    }
}

async fn open(server: &RedisServer, node: &str) -> Store {
    Store::open(&config(&server.url()), node)
        .await
        .expect("the store opens")
}

fn key(call_id: &str) -> String {
    format!("anc:call:{{{call_id}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_call_loads_back_equal() {
    let server = RedisServer::start(None);
    let store = open(&server, "node1").await;
    let record = sample::full("call-1@example.com", "node1");
    store.put(record.clone());
    store.flush().await.unwrap();
    assert_eq!(
        store.load("call-1@example.com").await.unwrap(),
        Some(record)
    );
    assert_eq!(store.load("unknown").await.unwrap(), None);
    let status = store.status();
    assert!(
        status.up && status.dirty_calls == 0 && status.live_calls == 1,
        "{status:?}"
    );
    assert!(status.last_load_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_owned_returns_exactly_the_owners_calls() {
    let server = RedisServer::start(None);
    let a = open(&server, "node-a").await;
    let b = open(&server, "node-b").await;
    for i in 0..30 {
        a.put(sample::call(&format!("a-{i}"), "node-a"));
        b.put(sample::call(&format!("b-{i}"), "node-b"));
    }
    // A call node-b took over from node-a: only node-b owns it now.
    b.put(sample::call("a-0", "node-b"));
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let mut owned: Vec<String> = a
        .load_owned("node-a")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.call_id)
        .collect();
    owned.sort();
    let mut expected: Vec<String> = (1..30).map(|i| format!("a-{i}")).collect();
    expected.sort();
    assert_eq!(owned, expected);
    assert_eq!(b.load_owned("node-b").await.unwrap().len(), 31);
    // The stale index entry of the moved call is repaired.
    let mut c = connection(&server);
    let in_a: bool = c.sismember("anc:owner:node-a", "a-0").unwrap();
    assert!(!in_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_record_and_its_index_entry() {
    let server = RedisServer::start(None);
    let store = open(&server, "node1").await;
    store.put(sample::call("gone", "node1"));
    store.put(sample::call("stays", "node1"));
    store.flush().await.unwrap();
    let mut c = connection(&server);
    assert!(c.exists::<_, bool>(key("gone")).unwrap());
    store.delete("gone");
    store.flush().await.unwrap();
    assert!(!c.exists::<_, bool>(key("gone")).unwrap());
    let members: Vec<String> = c.smembers("anc:owner:node1").unwrap();
    assert_eq!(members, vec!["stays".to_string()]);
    assert_eq!(store.load("gone").await.unwrap(), None);
    assert_eq!(store.status().live_calls, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_has_a_ttl() {
    let server = RedisServer::start(None);
    let store = open(&server, "node1").await;
    store.put(sample::call("t", "node1"));
    store.flush().await.unwrap();
    store
        .reserve_cseq(
            "only-reserved",
            CseqReserved {
                to_callee: 5,
                to_caller: 5,
            },
        )
        .await
        .unwrap();
    let mut c = connection(&server);
    for call in ["t", "only-reserved"] {
        let ttl: i64 = c.ttl(key(call)).unwrap();
        assert!((3_500..=3_600).contains(&ttl), "{call}: ttl {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_cseq_and_put_durable_are_in_redis_when_they_return() {
    let server = RedisServer::start(None);
    let store = open(&server, "node1").await;
    let mut record = sample::call("r", "node1");
    record.cseq_reserved = CseqReserved::default();
    store.put_durable(record.clone()).await.unwrap();
    let mut c = connection(&server);
    let rec: Vec<u8> = c.hget(key("r"), "rec").unwrap();
    assert_eq!(CallRecord::decode(&rec).unwrap(), record);

    let upto = CseqReserved {
        to_callee: 216,
        to_caller: 31,
    };
    store.reserve_cseq("r", upto).await.unwrap();
    let (cse, csr): (u32, u32) = redis::cmd("HMGET")
        .arg(key("r"))
        .arg("cse")
        .arg("csr")
        .query(&mut c)
        .unwrap();
    assert_eq!((cse, csr), (216, 31));
    // A reservation never goes down, and a load carries the highest one.
    store
        .reserve_cseq(
            "r",
            CseqReserved {
                to_callee: 100,
                to_caller: 40,
            },
        )
        .await
        .unwrap();
    let loaded = store.load("r").await.unwrap().unwrap();
    assert_eq!(
        loaded.cseq_reserved,
        CseqReserved {
            to_callee: 216,
            to_caller: 40
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_gets_every_live_call_back() {
    let mut server = RedisServer::start(None);
    let store = open(&server, "node1").await;
    for i in 0..50 {
        store.put(sample::call(&format!("early-{i}"), "node1"));
    }
    store.flush().await.unwrap();

    server.kill();
    // Puts go on during the outage: new calls, changes, and calls that end.
    for i in 0..50 {
        let mut changed = sample::call(&format!("early-{i}"), "node1");
        changed.updated_unix_ms += 1;
        store.put(changed);
    }
    for i in 0..40 {
        store.put(sample::call(&format!("during-{i}"), "node1"));
    }
    for i in 0..10 {
        store.delete(&format!("early-{i}"));
        store.delete(&format!("during-{i}"));
    }
    eventually(Duration::from_secs(5), "status down", || !store.status().up).await;
    let down = store.status();
    assert_eq!(down.dirty_calls, 90, "{down:?}");
    assert!(
        down.write_errors > 0 && down.last_error.is_some(),
        "{down:?}"
    );
    assert!(store
        .put_durable(sample::call("durable", "node1"))
        .await
        .is_err());
    assert_eq!(store.status().dirty_calls, 91);

    server.restart();
    eventually(Duration::from_secs(10), "everything written again", || {
        let s = store.status();
        s.up && s.dirty_calls == 0
    })
    .await;
    let mut c = connection(&server);
    let keys: Vec<String> = c.keys("anc:call:*").unwrap();
    assert_eq!(keys.len(), 40 + 30 + 1, "{keys:?}");
    for i in 10..50 {
        let record = store.load(&format!("early-{i}")).await.unwrap().unwrap();
        assert_eq!(
            record.updated_unix_ms, 1_790_000_000_124,
            "the latest state"
        );
    }
    for i in 0..10 {
        assert_eq!(store.load(&format!("early-{i}")).await.unwrap(), None);
        assert_eq!(store.load(&format!("during-{i}")).await.unwrap(), None);
    }
    assert_eq!(store.load_owned("node1").await.unwrap().len(), 71);
    assert!(store.status().refills >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_while_redis_is_down_writes_once_it_is_up() {
    let mut server = RedisServer::start(None);
    server.kill();
    let store = open(&server, "node1").await;
    store.put(sample::call("early", "node1"));
    eventually(Duration::from_secs(5), "status down", || !store.status().up).await;
    server.restart();
    eventually(Duration::from_secs(10), "written", || {
        store.status().dirty_calls == 0
    })
    .await;
    assert!(store.load("early").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_has_the_same_api() {
    let store = Store::memory("node1");
    store.put(sample::call("m1", "node1"));
    store.put(sample::call("m2", "other"));
    store
        .put_durable(sample::full("m3", "node1"))
        .await
        .unwrap();
    store
        .reserve_cseq(
            "m1",
            CseqReserved {
                to_callee: 999,
                to_caller: 1,
            },
        )
        .await
        .unwrap();
    store.delete("m3");
    store.flush().await.unwrap();
    assert_eq!(
        store
            .load("m1")
            .await
            .unwrap()
            .unwrap()
            .cseq_reserved
            .to_callee,
        999
    );
    assert_eq!(store.load("m3").await.unwrap(), None);
    let owned = store.load_owned("node1").await.unwrap();
    assert_eq!(owned.len(), 1);
    let status = store.status();
    assert_eq!(
        (status.backend, status.up, status.location),
        ("memory", true, None)
    );
}

/// The store's log lines and errors never carry the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_works_and_never_shows() {
    const PASSWORD: &str = "Pa55-w0rd-in-the-url";
    let logs = support::logs::capture();
    let server = RedisServer::start(Some(PASSWORD));
    let store = open(&server, "node1").await;
    store.put(sample::call("p", "node1"));
    store.flush().await.unwrap();
    assert!(store.load("p").await.unwrap().is_some());
    let location = store.status().location.unwrap();
    assert_eq!(
        location,
        format!("redis://:***@127.0.0.1:{}/0", server.port)
    );

    // The same password from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let mut from_file = config(&format!("redis://127.0.0.1:{}/0", server.port));
    from_file.password_file = Some(file);
    let store2 = Store::open(&from_file, "node2").await.unwrap();
    assert!(store2.load("p").await.unwrap().is_some());

    // A wrong password is a clear error at start, naming the URL without the password.
    let wrong = format!("redis://:not-{PASSWORD}@127.0.0.1:{}/0", server.port);
    let error = match Store::open(&config(&wrong), "node3").await {
        Err(error) => error,
        Ok(_) => panic!("a wrong password must not open"),
    };
    assert!(matches!(error, StoreError::Auth { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("redis://:***@127.0.0.1:{}/0", server.port)),
        "{text}"
    );
    // No password at all is refused the same way.
    let none = format!("redis://127.0.0.1:{}/0", server.port);
    let error = Store::open(&config(&none), "node4").await.err().unwrap();
    assert!(matches!(error, StoreError::Auth { .. }), "{error:?}");

    let logged = logs.text();
    assert!(logged.contains("call store: redis://:***@"), "{logged}");
    for shown in [text, error.to_string(), format!("{error:?}"), logged] {
        assert!(!shown.contains(PASSWORD), "password shown in: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password_works_and_an_unknown_ca_is_refused() {
    const PASSWORD: &str = "tls-secret-77";
    let server = support::redis_server::TlsRedisServer::start(PASSWORD);
    let mut tls = config(&format!("rediss://:{PASSWORD}@127.0.0.1:{}/0", server.port));
    tls.tls_ca_file = Some(server.ca_file.clone());
    let store = Store::open(&tls, "node1").await.expect("TLS store opens");
    store.put(sample::full("tls-call", "node1"));
    store.flush().await.unwrap();
    assert_eq!(
        store.load("tls-call").await.unwrap(),
        Some(sample::full("tls-call", "node1"))
    );
    assert_eq!(
        store.status().location.unwrap(),
        format!("rediss://:***@127.0.0.1:{}/0", server.port)
    );
    // Without the CA, the server's certificate is not trusted: the store never comes up.
    tls.tls_ca_file = None;
    let untrusted = Store::open(&tls, "node2").await.expect("opens, down");
    let status = untrusted.status();
    assert!(!status.up, "{status:?}");
    let error = untrusted.load("tls-call").await.unwrap_err().to_string();
    assert!(!error.contains(PASSWORD), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_url_reaches_the_master_it_names() {
    const PASSWORD: &str = "sentinel-pw-5";
    let master = RedisServer::start(Some(PASSWORD));
    let sentinel = support::redis_server::Sentinel::start(master.port, PASSWORD);
    let url = format!(
        "redis+sentinel://:{PASSWORD}@127.0.0.1:{}/mymaster/0",
        sentinel.port
    );
    let store = Store::open(&config(&url), "node1").await.expect("opens");
    store.put(sample::call("via-sentinel", "node1"));
    store.flush().await.unwrap();
    let mut c = connection(&master);
    assert!(c.exists::<_, bool>(key("via-sentinel")).unwrap());
    let status = store.status();
    assert!(status.up, "{status:?}");
    assert_eq!(
        status.location.unwrap(),
        format!(
            "redis+sentinel://:***@127.0.0.1:{}/mymaster/0",
            sentinel.port
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_holds_calls_spread_over_its_slots() {
    let cluster = support::redis_server::RedisCluster::start();
    let config = ClusterConfig {
        store: Some(StoreSpec::Cluster(
            cluster
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
        )),
        ..config("unused")
    };
    let store = Store::open(&config, "node1").await.expect("opens");
    for i in 0..60 {
        store.put(sample::call(&format!("cluster-{i}"), "node1"));
    }
    store.flush().await.unwrap();
    store.delete("cluster-0");
    store
        .reserve_cseq(
            "cluster-1",
            CseqReserved {
                to_callee: 500,
                to_caller: 9,
            },
        )
        .await
        .unwrap();
    store.flush().await.unwrap();
    let owned = store.load_owned("node1").await.unwrap();
    assert_eq!(owned.len(), 59);
    let one = store.load("cluster-1").await.unwrap().unwrap();
    assert_eq!(one.cseq_reserved.to_callee, 500);
    assert_eq!(store.load("cluster-0").await.unwrap(), None);
    assert!(store.status().up);
}

/// Many changes of one call between two batches are one write (checked on a single-threaded
/// runtime, where the store task cannot run while the caller puts).
#[tokio::test]
async fn changes_between_batches_coalesce_into_one_write() {
    let store = Store::memory("node1");
    for t in 0..10_000 {
        let mut record = sample::call("busy", "node1");
        record.updated_unix_ms = t;
        store.put(record);
    }
    assert_eq!(store.status().dirty_calls, 1);
    store.flush().await.unwrap();
    let status = store.status();
    assert_eq!((status.records_written, status.dirty_calls), (1, 0));
    assert_eq!(
        store.load("busy").await.unwrap().unwrap().updated_unix_ms,
        9_999
    );
}
