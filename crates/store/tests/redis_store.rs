//! The store against a real redis-server on loopback (never a mock): writes, loads, indexes,
//! TTLs, durable reservations, an outage with an empty restart, and passwords.

mod support;

use std::time::Duration;

use anchorage_config::{ClusterConfig, StoreSpec};
use anchorage_store::{CallRecord, CseqReserved, Store, StoreError};
use redis::Commands;
use support::eventually;
use support::redis_server::{connection, make_ca, RedisServer, TlsRedisCluster, TlsSentinel};
use support::sample;

/// The tests that kill, restart or fail over Redis servers, or start Sentinels and Clusters
/// (many processes, TLS handshakes), run one at a time: side by side on a loaded 2-core host
/// their outages and failovers ran into each other's timing (a restarted server was found
/// empty after the store said it had written to it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    // node-a's writes land first; then node-b takes a-0 over, and only
    // node-b owns it now. (Each store writes in the background, so the
    // order of the two stores' writes is set by flushing, not by `put`.)
    a.flush().await.unwrap();
    assert!(b.claim("a-0").await.unwrap().is_some());
    b.put(sample::call("a-0", "node-b"));
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
        Ok(store) => panic!("a wrong password must not open: {store:?}"),
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
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
    let _serial = SERIAL.lock().await;
    let cluster = support::redis_server::RedisCluster::start();
    let config = ClusterConfig {
        store: Some(StoreSpec::Cluster(
            cluster
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect(),
        )),
        // Two nodes below: writes are fenced.
        mode: anchorage_config::ClusterMode::Vip,
        vip: Some("10.0.0.100".parse().unwrap()),
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
    // Another node takes them over across the slots; the first is fenced from then on.
    let other = Store::open(&config, "node2").await.expect("opens");
    let taken = other.claim_of("node1").await.unwrap();
    assert_eq!(taken.len(), 59);
    assert!(taken.iter().all(|r| r.owner == "node2"));
    assert_eq!(other.load_owned("node2").await.unwrap().len(), 59);
    store.put(sample::call("cluster-5", "node1"));
    store.flush().await.unwrap();
    assert_eq!(store.take_fenced(), vec!["cluster-5".to_string()]);
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

/// [`config`] with room for TLS: a handshake (one per server, and a Cluster or Sentinel client
/// makes several) takes longer than 300 ms in a debug build on a busy shared host.
fn tls_config(url: &str) -> ClusterConfig {
    ClusterConfig {
        timeout_ms: 2_000,
        ..config(url)
    }
}

/// Loads `call_id` until it is there, for at most `within`.
async fn load_eventually(store: &Store, call_id: &str, within: Duration) -> CallRecord {
    let deadline = std::time::Instant::now() + within;
    loop {
        match store.load(call_id).await {
            Ok(Some(record)) => return record,
            Ok(None) | Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{call_id} not loaded within {within:?}: {other:?}"),
        }
    }
}

/// The log line saying why the store at `location` was not reachable at its start.
fn start_refusal(logged: &str, location: &str) -> String {
    logged
        .lines()
        .find(|line| line.contains(&format!("call store {location} not reachable at start")))
        .unwrap_or_default()
        .to_string()
}

/// Asserts that none of `shown` holds `password`.
fn never_shows(password: &str, shown: &[String]) {
    for text in shown {
        assert!(!text.contains(password), "password shown in: {text}");
    }
}

/// Master, replica and Sentinel all speak only TLS and all want the password: the store finds
/// the master through the Sentinel, writes and reads a record, and after the master is killed
/// follows the Sentinel to the promoted replica. A CA that did not sign the servers'
/// certificates and a wrong password are refused with errors that say so; the password shows
/// nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_with_a_password_follows_a_failover_and_never_shows_it() {
    let _serial = SERIAL.lock().await;
    const PASSWORD: &str = "sentinel-tls-pw-31";
    let logs = support::logs::capture();
    let mut set = TlsSentinel::start(PASSWORD);
    let url = format!(
        "rediss+sentinel://:{PASSWORD}@127.0.0.1:{}/mymaster/0",
        set.sentinel_port
    );
    let mut tls = tls_config(&url);
    tls.tls_ca_file = Some(set.certs.ca.clone());
    let store = Store::open(&tls, "node1")
        .await
        .expect("the store opens through the TLS Sentinel");
    let record = sample::full("sentinel-tls-call", "node1");
    store.put_durable(record.clone()).await.unwrap();
    assert_eq!(
        store.load("sentinel-tls-call").await.unwrap(),
        Some(record.clone())
    );
    let status = store.status();
    assert!(status.up, "{status:?}");
    let location = format!(
        "rediss+sentinel://:***@127.0.0.1:{}/mymaster/0",
        set.sentinel_port
    );
    assert_eq!(status.location.as_deref(), Some(location.as_str()));

    // The record is on the master Sentinel named: read it on its replica, over TLS.
    let mut on_replica = tls_config(&format!(
        "rediss://:{PASSWORD}@127.0.0.1:{}/0",
        set.replica_port
    ));
    on_replica.tls_ca_file = Some(set.certs.ca.clone());
    let replica = Store::open(&on_replica, "reader").await.expect("opens");
    assert_eq!(
        load_eventually(&replica, "sentinel-tls-call", Duration::from_secs(5)).await,
        record
    );

    // The master dies; the Sentinel promotes the replica, and the store follows it.
    set.kill_master_and_wait_for_failover();
    assert!(
        set.sentinel_says().contains(&set.replica_port.to_string()),
        "{}",
        set.sentinel_says()
    );
    store.put(sample::call("after-failover", "node1"));
    load_eventually(&store, "after-failover", Duration::from_secs(20)).await;
    assert_eq!(
        store.load("sentinel-tls-call").await.unwrap(),
        Some(record.clone())
    );
    assert!(
        replica.load("after-failover").await.unwrap().is_some(),
        "written on the promoted replica"
    );
    let after = store.status();
    assert!(after.up && after.dirty_calls == 0, "{after:?}");

    // A CA that did not sign the servers' certificates: the store never comes up, and its
    // error says why.
    let other_ca = make_ca(set.dir.path(), "other-ca", "not-the-redis-ca");
    let mut untrusted = tls.clone();
    untrusted.tls_ca_file = Some(other_ca);
    let refused = Store::open(&untrusted, "node2").await;
    let refusal = match &refused {
        Err(error) => error.to_string(),
        Ok(store) => {
            // Opened down, with the reason in the log line of its start (the status keeps the
            // latest error, which on a busy host may be a later timeout); later operations
            // fail too.
            let status = store.status();
            assert!(!status.up && status.last_error.is_some(), "{status:?}");
            let later = store
                .load("sentinel-tls-call")
                .await
                .unwrap_err()
                .to_string();
            assert!(!later.contains(PASSWORD), "{later}");
            start_refusal(&logs.text(), &location)
        }
    };
    assert!(
        refusal.contains(&location) && refusal.to_lowercase().contains("certificate"),
        "{refusal}"
    );

    // A wrong password is a clear error at start.
    let mut wrong = tls_config(&format!(
        "rediss+sentinel://:not-{PASSWORD}@127.0.0.1:{}/mymaster/0",
        set.sentinel_port
    ));
    wrong.tls_ca_file = Some(set.certs.ca.clone());
    let error = match Store::open(&wrong, "node3").await {
        Err(error) => error,
        Ok(store) => panic!("a wrong password must not open: {store:?}"),
    };
    assert!(matches!(error, StoreError::Auth { .. }), "{error:?}");

    let logged = logs.text();
    assert!(
        logged.contains(&format!("call store: {location}")),
        "{logged}"
    );
    never_shows(
        PASSWORD,
        &[
            format!("{store:?}"),
            format!("{:?}", store.status()),
            format!("{tls:?}"),
            format!("{:?}", tls.location()),
            refusal,
            format!("{refused:?}"),
            error.to_string(),
            format!("{error:?}"),
            logged,
        ],
    );
}

/// Three masters that speak only TLS, on the cluster bus too, with a password: records of
/// calls spread over the slots of every node are written, reserved, deleted and read back; a
/// second store with the password in `password_file` reads them too. An unknown CA and a
/// wrong password are refused; the password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_with_a_password_holds_calls_and_never_shows_it() {
    let _serial = SERIAL.lock().await;
    const PASSWORD: &str = "cluster-tls-pw-58";
    let logs = support::logs::capture();
    let cluster = TlsRedisCluster::start(PASSWORD);
    let urls = |password: &str| {
        cluster
            .ports
            .iter()
            .map(|p| format!("rediss://{password}127.0.0.1:{p}"))
            .collect::<Vec<_>>()
    };
    let tls = ClusterConfig {
        store: Some(StoreSpec::Cluster(urls(&format!(":{PASSWORD}@")))),
        tls_ca_file: Some(cluster.certs.ca.clone()),
        ..tls_config("unused")
    };
    let store = Store::open(&tls, "node1")
        .await
        .expect("the store opens on the TLS cluster");
    let calls: Vec<String> = (0..200).map(|i| format!("tls-cluster-{i}@h")).collect();
    for call_id in &calls {
        store.put(sample::call(call_id, "node1"));
    }
    store.put(sample::full("tls-cluster-full", "node1"));
    store.flush().await.unwrap();
    let keys = cluster.keys_per_node(PASSWORD);
    assert!(
        keys.iter().all(|&n| n > 20) && keys.iter().sum::<u64>() >= 201,
        "records on every node: {keys:?}"
    );
    store.delete(&calls[0]);
    store
        .reserve_cseq(
            &calls[1],
            CseqReserved {
                to_callee: 700,
                to_caller: 12,
            },
        )
        .await
        .unwrap();
    store.flush().await.unwrap();
    for call_id in &calls[1..] {
        let loaded = store.load(call_id).await.unwrap();
        assert_eq!(loaded.map(|r| r.call_id).as_deref(), Some(call_id.as_str()));
    }
    assert_eq!(store.load(&calls[0]).await.unwrap(), None);
    assert_eq!(
        store.load("tls-cluster-full").await.unwrap(),
        Some(sample::full("tls-cluster-full", "node1"))
    );
    assert_eq!(store.load_owned("node1").await.unwrap().len(), 200);
    let status = store.status();
    assert!(status.up && status.dirty_calls == 0, "{status:?}");
    let location = format!(
        "redis cluster [rediss://:***@{}]",
        cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_eq!(status.location.as_deref(), Some(location.as_str()));

    // The password from a file instead of the URLs.
    let file = cluster.dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let from_file = ClusterConfig {
        store: Some(StoreSpec::Cluster(urls(""))),
        password_file: Some(file),
        ..tls.clone()
    };
    let second = Store::open(&from_file, "node2").await.expect("opens");
    let reserved = second.load(&calls[1]).await.unwrap().unwrap();
    assert_eq!(reserved.cseq_reserved.to_callee, 700);

    // A CA that did not sign the nodes' certificates.
    let other_ca = make_ca(cluster.dir.path(), "other-ca", "not-the-redis-ca");
    let untrusted = ClusterConfig {
        tls_ca_file: Some(other_ca),
        ..tls.clone()
    };
    let refused = Store::open(&untrusted, "node3").await;
    let refusal = match &refused {
        Err(error) => error.to_string(),
        Ok(store) => {
            // Opened down, with the reason in the log line of its start (the status keeps the
            // latest error, which on a busy host may be a later timeout); later operations
            // fail too.
            let status = store.status();
            assert!(!status.up && status.last_error.is_some(), "{status:?}");
            let later = store.load(&calls[1]).await.unwrap_err().to_string();
            assert!(!later.contains(PASSWORD), "{later}");
            start_refusal(&logs.text(), &location)
        }
    };
    assert!(
        refusal.contains(&location) && refusal.to_lowercase().contains("certificate"),
        "{refusal}"
    );

    // A wrong password is a clear error at start.
    let wrong = ClusterConfig {
        store: Some(StoreSpec::Cluster(urls(&format!(":not-{PASSWORD}@")))),
        ..tls.clone()
    };
    let error = match Store::open(&wrong, "node4").await {
        Err(error) => error,
        Ok(store) => panic!("a wrong password must not open: {store:?}"),
    };
    assert!(matches!(error, StoreError::Auth { .. }), "{error:?}");

    let logged = logs.text();
    assert!(
        logged.contains(&format!("call store: {location}")),
        "{logged}"
    );
    never_shows(
        PASSWORD,
        &[
            format!("{store:?}"),
            format!("{:?}", store.status()),
            format!("{second:?}"),
            format!("{tls:?}"),
            format!("{:?}", tls.location()),
            refusal,
            format!("{refused:?}"),
            error.to_string(),
            format!("{error:?}"),
            logged,
        ],
    );
}
