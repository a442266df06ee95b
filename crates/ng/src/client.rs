//! Client side: one request tracker per relay node (destination), quinn-proto style.
//!
//! ```text
//!  send(request, now) ─► poll_transmit() ─► (socket) ─► relay
//!        │                                                  │
//!        │   poll_timeout() / handle_timeout(now):          │
//!        │   resend the identical datagram (same cookie)    │
//!        │   at the retransmit times, until the deadline    ▼
//!        └─ poll_event(): Reply(id, reply) ◄─ handle_datagram(bytes, now)
//!                         TimedOut(id)    ◄─ deadline passed
//!                         Failed(id, err) ◄─ a reply with our cookie that does not decode
//! ```
//!
//! With the default [`ClientConfig`] a request goes out at t = 0, 200, 400, 600 and 800 ms
//! and times out at 1 000 ms (Kamailio and OpenSIPS wait 1 s per try; our health monitor
//! pings every 200 ms, so a dead node must be noticed within about a second).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{decode_reply, encode_request, split_cookie, Cookie, Encoding};
use crate::error::ReplyError;
use crate::reply::Reply;
use crate::request::Request;

/// Retransmission schedule and encoding of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Delay from the first transmission to the first retransmission. Default 200 ms.
    pub first_retransmit: Duration,
    /// Each later delay is the previous one times this factor (1 = a fixed interval).
    /// Default 1.
    pub backoff: u32,
    /// Transmissions in all, the first included. Default 5.
    pub max_transmissions: u32,
    /// Time from the first transmission after which the request is given up. Default 1 s.
    pub timeout: Duration,
    /// Document encoding of requests. Default bencode (what rtpengine, Kamailio and OpenSIPS
    /// speak; JSON requests whose SDP is not UTF-8 go out in bencode anyway).
    pub encoding: Encoding,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            first_retransmit: Duration::from_millis(200),
            backoff: 1,
            max_transmissions: 5,
            timeout: Duration::from_secs(1),
            encoding: Encoding::Bencode,
        }
    }
}

/// Identifies one request sent through a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What happened to a request.
// Events are consumed right after `poll_event`; boxing the reply would only add an
// allocation per reply.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The relay answered (the reply may be `result: error`; see [`Reply::outcome`]).
    Reply(RequestId, Reply),
    /// No reply before the deadline.
    TimedOut(RequestId),
    /// A datagram with this request's cookie arrived but is not a valid reply.
    Failed(RequestId, ReplyError),
}

#[derive(Debug)]
struct Pending {
    cookie: Cookie,
    datagram: Bytes,
    transmissions: u32,
    /// The delay that led to the latest retransmission time.
    interval: Duration,
    deadline: Instant,
    /// The instant this request's timer is armed for (its key in `timers`).
    timer: Instant,
}

/// The request tracker for one relay node (sans-IO).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    cookie_prefix: String,
    next_id: u64,
    pending: HashMap<RequestId, Pending>,
    by_cookie: BTreeMap<Cookie, RequestId>,
    timers: BTreeSet<(Instant, RequestId)>,
    transmits: VecDeque<Bytes>,
    events: VecDeque<Event>,
    stray: u64,
}

impl Client {
    /// A tracker. Cookies are `<prefix>_<n>`; the prefix must make them unique across the
    /// proxy's processes and restarts (e.g. node id and a random number drawn by the caller),
    /// and spaces in it are replaced by `-` so that cookies frame.
    pub fn new(config: ClientConfig, cookie_prefix: &str) -> Client {
        Client {
            config,
            cookie_prefix: cookie_prefix.replace(' ', "-"),
            next_id: 0,
            pending: HashMap::new(),
            by_cookie: BTreeMap::new(),
            timers: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stray: 0,
        }
    }

    /// Queues a request for transmission now and tracks it.
    pub fn send(&mut self, request: &Request, now: Instant) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let text = if self.cookie_prefix.is_empty() {
            id.0.to_string()
        } else {
            format!("{}_{}", self.cookie_prefix, id.0)
        };
        // Never empty (it ends in a number) and space-free (see `new`).
        let cookie = Cookie::from_trusted(Bytes::from(text));
        let datagram = encode_request(&cookie, request, self.config.encoding);
        self.transmits.push_back(datagram.clone());
        let deadline = now + self.config.timeout;
        let mut pending = Pending {
            cookie: cookie.clone(),
            datagram,
            transmissions: 1,
            interval: self.config.first_retransmit,
            deadline,
            timer: deadline,
        };
        pending.timer = self.next_timer(&pending, now + self.config.first_retransmit);
        self.timers.insert((pending.timer, id));
        self.by_cookie.insert(cookie, id);
        self.pending.insert(id, pending);
        id
    }

    /// The next datagram to send to the relay.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// When [`Client::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Retransmits and times out what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            let Some(mut p) = self.pending.remove(&id) else {
                continue;
            };
            if at >= p.deadline {
                self.by_cookie.remove(&p.cookie);
                self.events.push_back(Event::TimedOut(id));
                continue;
            }
            self.transmits.push_back(p.datagram.clone());
            p.transmissions += 1;
            p.interval = p.interval.saturating_mul(self.config.backoff.max(1));
            p.timer = self.next_timer(&p, at + p.interval);
            self.timers.insert((p.timer, id));
            self.pending.insert(id, p);
        }
    }

    /// Takes a datagram received from the relay. Replies whose cookie matches no pending
    /// request (late duplicates, replies to given-up requests) are counted and dropped.
    pub fn handle_datagram(&mut self, datagram: &[u8], _now: Instant) {
        let Some(id) = split_cookie(datagram)
            .and_then(|(cookie, _)| Cookie::new(Bytes::copy_from_slice(cookie)))
            .and_then(|cookie| self.by_cookie.get(&cookie).copied())
        else {
            self.stray += 1;
            return;
        };
        let Some(p) = self.pending.remove(&id) else {
            self.stray += 1;
            return;
        };
        self.by_cookie.remove(&p.cookie);
        self.timers.remove(&(p.timer, id));
        self.events.push_back(match decode_reply(datagram) {
            Ok((_, _, reply)) => Event::Reply(id, reply),
            Err(e) => Event::Failed(id, e),
        });
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Stops tracking a request (its reply, if any, will count as stray). Returns whether it
    /// was pending.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        match self.pending.remove(&id) {
            Some(p) => {
                self.by_cookie.remove(&p.cookie);
                self.timers.remove(&(p.timer, id));
                true
            }
            None => false,
        }
    }

    /// The cookie of a pending request.
    pub fn cookie(&self, id: RequestId) -> Option<&Cookie> {
        self.pending.get(&id).map(|p| &p.cookie)
    }

    /// Number of requests awaiting a reply.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Number of datagrams that matched no pending request.
    pub fn stray_datagrams(&self) -> u64 {
        self.stray
    }

    /// The timer after a transmission: the next retransmission at `retransmit_at` if tries
    /// are left and it comes before the deadline, else the deadline.
    fn next_timer(&self, p: &Pending, retransmit_at: Instant) -> Instant {
        if p.transmissions < self.config.max_transmissions && retransmit_at < p.deadline {
            retransmit_at
        } else {
            p.deadline
        }
    }
}
