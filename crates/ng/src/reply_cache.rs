//! Server side: the reply cache that makes retransmitted requests idempotent.
//!
//! Clients resend the identical datagram (same cookie) when a reply is late. rtpengine keeps
//! cookie → reply for 30–60 s and answers a duplicate from the cache without executing it
//! again; a duplicate of a request still being processed waits for the original. rtpengine
//! keys by cookie alone, which let two Kamailio boxes with the same `server_id` collide
//! (sipwise/rtpengine#1867); we key by (source address, cookie).
//!
//! ```text
//!   begin(src, cookie) ──New──────────► execute ──► complete(src, cookie, reply) ──► send
//!          │                                                   (entry: Done(reply))
//!          ├─InProgress─► drop the datagram: the original's reply goes to the same source
//!          └─Cached(reply)─► send the cached bytes again
//! ```
//!
//! Entries expire `ttl` after `begin` (rtpengine's two 30 s generations keep a reply 30–60
//! s; our default is 60 s). Memory is bounded by `max_entries` and `max_bytes`: when full,
//! the oldest entries are evicted first.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::Cookie;

/// Reply cache limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCacheConfig {
    /// How long an entry lives after its request arrived. Default 60 s (rtpengine: 30–60 s;
    /// Kamailio retries for up to ~5 s, so anything well above that is enough).
    pub ttl: Duration,
    /// Maximum number of entries. Default 65 536.
    pub max_entries: usize,
    /// Maximum total bytes of cached replies (plus cookies). Default 64 MiB.
    pub max_bytes: usize,
}

impl Default for ReplyCacheConfig {
    fn default() -> Self {
        ReplyCacheConfig {
            ttl: Duration::from_secs(60),
            max_entries: 65_536,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What to do with a request datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First sight: execute it, then call [`ReplyCache::complete`].
    New,
    /// A retransmission of an answered request: send these reply bytes again.
    Cached(Bytes),
    /// A retransmission of a request still being executed: drop it; the original's reply
    /// will be sent to the same source.
    InProgress,
}

#[derive(Debug)]
enum State {
    InProgress { duplicates: usize },
    Done(Bytes),
}

#[derive(Debug)]
struct Entry {
    begun: Instant,
    state: State,
}

type Key = (SocketAddr, Cookie);

/// The reply cache (sans-IO: `now` is passed in).
#[derive(Debug)]
pub struct ReplyCache {
    config: ReplyCacheConfig,
    entries: HashMap<Key, Entry>,
    /// Keys in `begin` order, with their begin time (a key re-begun after expiry appears
    /// again; stale positions are recognised by their time).
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

impl ReplyCache {
    /// An empty cache.
    pub fn new(config: ReplyCacheConfig) -> ReplyCache {
        ReplyCache {
            config,
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Classifies a request datagram from `source` with `cookie`.
    pub fn begin(&mut self, source: SocketAddr, cookie: &Cookie, now: Instant) -> Begin {
        self.handle_timeout(now);
        let key = (source, cookie.clone());
        if let Some(entry) = self.entries.get_mut(&key) {
            return match &mut entry.state {
                State::InProgress { duplicates } => {
                    *duplicates += 1;
                    Begin::InProgress
                }
                State::Done(reply) => Begin::Cached(reply.clone()),
            };
        }
        // Copy the cookie so the cache never pins a whole request datagram in memory.
        let key = (
            source,
            Cookie::from_trusted(Bytes::copy_from_slice(cookie.as_bytes())),
        );
        self.bytes += key.1.as_bytes().len();
        self.entries.insert(
            key.clone(),
            Entry {
                begun: now,
                state: State::InProgress { duplicates: 0 },
            },
        );
        self.order.push_back((now, key));
        self.evict_over_limits();
        Begin::New
    }

    /// Records the reply sent for a request begun with [`Begin::New`]. Returns how many
    /// retransmissions arrived while it was executing (they were told [`Begin::InProgress`]).
    /// A reply for an entry that has expired or been evicted meanwhile is not cached.
    pub fn complete(
        &mut self,
        source: SocketAddr,
        cookie: &Cookie,
        reply: Bytes,
        now: Instant,
    ) -> usize {
        self.handle_timeout(now);
        let key = (source, cookie.clone());
        let Some(entry) = self.entries.get_mut(&key) else {
            return 0;
        };
        let duplicates = match entry.state {
            State::InProgress { duplicates } => duplicates,
            State::Done(_) => 0,
        };
        if let State::Done(old) = &entry.state {
            self.bytes -= old.len();
        }
        self.bytes += reply.len();
        entry.state = State::Done(reply);
        self.evict_over_limits();
        duplicates
    }

    /// Forgets a request that will never be answered (so a retransmission is executed anew).
    pub fn abandon(&mut self, source: SocketAddr, cookie: &Cookie) {
        let key = (source, cookie.clone());
        if let Some(entry) = self.entries.remove(&key) {
            self.bytes -= entry_bytes(&key, &entry);
        }
    }

    /// When the oldest entry expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.order
            .front()
            .map(|(begun, _)| *begun + self.config.ttl)
    }

    /// Drops expired entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((begun, _)) = self.order.front() {
            if *begun + self.config.ttl > now {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Number of entries (in progress and done).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (replies and cookies).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn evict_over_limits(&mut self) {
        while (self.entries.len() > self.config.max_entries || self.bytes > self.config.max_bytes)
            && !self.order.is_empty()
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((begun, key)) = self.order.pop_front() else {
            return;
        };
        // Only remove the entry this position was queued for (not a newer one).
        if self.entries.get(&key).is_some_and(|e| e.begun == begun) {
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= entry_bytes(&key, &entry);
            }
        }
    }
}

fn entry_bytes(key: &Key, entry: &Entry) -> usize {
    key.1.as_bytes().len()
        + match &entry.state {
            State::InProgress { .. } => 0,
            State::Done(reply) => reply.len(),
        }
}
