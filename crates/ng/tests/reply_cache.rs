//! The server's reply cache under an injected clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_ng::{Begin, Cookie, ReplyCache, ReplyCacheConfig};
use bytes::Bytes;

#[allow(clippy::disallowed_methods)] // the tests' one epoch
fn epoch() -> Instant {
    Instant::now()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn cookie(s: &str) -> Cookie {
    Cookie::new(s.to_owned()).unwrap()
}

const REPLY: &[u8] = b"k_1 d6:result2:oke";

#[test]
fn retransmission_gets_the_cached_bytes_and_in_flight_duplicates_wait() {
    let t0 = epoch();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    let src = addr("192.0.2.10:5060");
    assert_eq!(cache.begin(src, &cookie("k_1"), t0), Begin::New);
    // Two retransmissions while the offer is being executed.
    assert_eq!(
        cache.begin(src, &cookie("k_1"), t0 + Duration::from_millis(200)),
        Begin::InProgress
    );
    assert_eq!(
        cache.begin(src, &cookie("k_1"), t0 + Duration::from_millis(400)),
        Begin::InProgress
    );
    let waited = cache.complete(
        src,
        &cookie("k_1"),
        Bytes::from_static(REPLY),
        t0 + Duration::from_millis(450),
    );
    assert_eq!(waited, 2);
    assert_eq!(
        cache.begin(src, &cookie("k_1"), t0 + Duration::from_millis(600)),
        Begin::Cached(Bytes::from_static(REPLY))
    );
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.bytes(), 3 + REPLY.len());
}

#[test]
fn same_cookie_from_another_source_is_a_new_request() {
    // rtpengine keys by cookie alone (sipwise/rtpengine#1867); we add the source.
    let t0 = epoch();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    assert_eq!(
        cache.begin(addr("192.0.2.10:5060"), &cookie("1_1"), t0),
        Begin::New
    );
    cache.complete(
        addr("192.0.2.10:5060"),
        &cookie("1_1"),
        Bytes::from_static(REPLY),
        t0,
    );
    assert_eq!(
        cache.begin(addr("192.0.2.11:5060"), &cookie("1_1"), t0),
        Begin::New
    );
    assert_eq!(
        cache.begin(addr("192.0.2.10:5061"), &cookie("1_1"), t0),
        Begin::New
    );
    assert_eq!(cache.len(), 3);
}

#[test]
fn entries_expire_after_the_ttl_exactly() {
    let t0 = epoch();
    let config = ReplyCacheConfig {
        ttl: Duration::from_secs(30),
        ..ReplyCacheConfig::default()
    };
    let mut cache = ReplyCache::new(config);
    let src = addr("198.51.100.1:5060");
    cache.begin(src, &cookie("a"), t0);
    cache.complete(src, &cookie("a"), Bytes::from_static(REPLY), t0);
    cache.begin(src, &cookie("b"), t0 + Duration::from_secs(10));
    assert_eq!(cache.poll_timeout(), Some(t0 + Duration::from_secs(30)));

    cache.handle_timeout(t0 + Duration::from_millis(29_999));
    assert_eq!(cache.len(), 2);
    cache.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(cache.len(), 1);
    assert_eq!(cache.poll_timeout(), Some(t0 + Duration::from_secs(40)));
    // "a" is gone: the same cookie is executed again.
    assert_eq!(
        cache.begin(src, &cookie("a"), t0 + Duration::from_secs(31)),
        Begin::New
    );
    // "b" never completed and is still in progress until 40 s.
    assert_eq!(
        cache.begin(src, &cookie("b"), t0 + Duration::from_secs(39)),
        Begin::InProgress
    );
    cache.handle_timeout(t0 + Duration::from_secs(100));
    assert!(cache.is_empty());
    assert_eq!(cache.bytes(), 0);
    assert_eq!(cache.poll_timeout(), None);
}

#[test]
fn memory_is_bounded_by_entries_and_bytes_oldest_first() {
    let t0 = epoch();
    let mut cache = ReplyCache::new(ReplyCacheConfig {
        ttl: Duration::from_secs(60),
        max_entries: 3,
        max_bytes: 1_000,
    });
    let src = addr("192.0.2.1:1");
    for i in 0..5u64 {
        let c = cookie(&format!("c{i}"));
        cache.begin(src, &c, t0 + Duration::from_millis(i));
        cache.complete(
            src,
            &c,
            Bytes::from_static(REPLY),
            t0 + Duration::from_millis(i),
        );
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(
        cache.begin(src, &cookie("c0"), t0 + Duration::from_millis(9)),
        Begin::New
    );
    // c0 re-entered and evicted c2 (c1 had already gone to make room for c4).
    assert_eq!(
        cache.begin(src, &cookie("c3"), t0 + Duration::from_millis(9)),
        Begin::Cached(Bytes::from_static(REPLY))
    );
    assert_eq!(
        cache.begin(src, &cookie("c2"), t0 + Duration::from_millis(9)),
        Begin::New
    );

    // A reply bigger than the byte budget evicts down to what fits.
    let mut small = ReplyCache::new(ReplyCacheConfig {
        ttl: Duration::from_secs(60),
        max_entries: 100,
        max_bytes: 50,
    });
    small.begin(src, &cookie("x"), t0);
    small.complete(src, &cookie("x"), Bytes::from_static(REPLY), t0);
    small.begin(src, &cookie("y"), t0);
    small.complete(src, &cookie("y"), Bytes::from(vec![b'a'; 40]), t0);
    assert_eq!(small.len(), 1);
    assert_eq!(small.bytes(), 41);
    assert!(small.bytes() <= 50);
}

#[test]
fn abandoned_request_is_executed_again() {
    let t0 = epoch();
    let mut cache = ReplyCache::new(ReplyCacheConfig::default());
    let src = addr("192.0.2.1:1");
    cache.begin(src, &cookie("z"), t0);
    cache.abandon(src, &cookie("z"));
    assert_eq!(cache.begin(src, &cookie("z"), t0), Begin::New);
    // Completing something never begun caches nothing.
    assert_eq!(
        cache.complete(src, &cookie("never"), Bytes::from_static(REPLY), t0),
        0
    );
    assert_eq!(cache.len(), 1);
}
