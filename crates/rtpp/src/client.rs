//! A controller's side of the protocol (the proxy driving RTPProxy nodes): one tracker per node
//! that gives each command a unique cookie, sends it again at a fixed interval until a reply
//! with that cookie comes or the deadline passes, and hands out what happened. Sans-IO.
//!
//! ```text
//! send(modifiers, kind, now) ─► poll_transmit() ─► node
//! handle_timeout(now): resend the same datagram, or TimedOut at the deadline
//! handle_datagram(bytes): Reply(id, reply) | Failed(id, error) for a malformed one
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::command::{Command, CommandKind};
use crate::error::ReplyParseError;
use crate::modifier::Modifiers;
use crate::reply::Reply;

/// When a command is sent again and given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Interval between transmissions.
    pub retransmit: Duration,
    /// Transmissions in all, the first included.
    pub max_transmissions: u32,
    /// Time from the first transmission after which the command is given up.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retransmit: Duration::from_millis(200),
            max_transmissions: 5,
            timeout: Duration::from_secs(1),
        }
    }
}

/// One command sent through a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What happened to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The node answered (possibly with `E<code>`).
    Reply(RequestId, Reply),
    /// No reply before the deadline.
    TimedOut(RequestId),
    /// A datagram with this command's cookie that is not a reply.
    Failed(RequestId, ReplyParseError),
}

#[derive(Debug)]
struct InFlight {
    id: RequestId,
    datagram: Vec<u8>,
    sent: u32,
    next: Instant,
    deadline: Instant,
}

/// The command tracker for one node.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    prefix: String,
    counter: u64,
    in_flight: BTreeMap<String, InFlight>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stray: u64,
}

impl Client {
    /// A tracker whose cookies are `<prefix>_<n>` (whitespace in the prefix becomes `-`, so
    /// that cookies stay one word); the prefix must be unique per controller process.
    pub fn new(config: ClientConfig, prefix: &str) -> Client {
        Client {
            config,
            prefix: prefix
                .chars()
                .map(|c| if c.is_ascii_whitespace() { '-' } else { c })
                .collect(),
            counter: 0,
            in_flight: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stray: 0,
        }
    }

    /// Queues a command for transmission now.
    pub fn send(&mut self, modifiers: Modifiers, kind: CommandKind, now: Instant) -> RequestId {
        let id = RequestId(self.counter);
        self.counter += 1;
        let cookie = format!("{}_{}", self.prefix, id.0);
        let datagram = Command {
            cookie: cookie.clone(),
            modifiers,
            kind,
        }
        .encode();
        self.transmits.push_back(datagram.clone());
        let deadline = now + self.config.timeout;
        self.in_flight.insert(
            cookie,
            InFlight {
                id,
                datagram,
                sent: 1,
                next: (now + self.config.retransmit).min(deadline),
                deadline,
            },
        );
        id
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When [`Client::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.values().map(|f| f.next).min()
    }

    /// Resends and gives up what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let config = self.config;
        let mut given_up = Vec::new();
        for (cookie, f) in self.in_flight.iter_mut().filter(|(_, f)| f.next <= now) {
            if now >= f.deadline {
                given_up.push(cookie.clone());
                continue;
            }
            if f.sent < config.max_transmissions {
                f.sent += 1;
                self.transmits.push_back(f.datagram.clone());
                f.next = (now + config.retransmit).min(f.deadline);
            } else {
                f.next = f.deadline;
            }
        }
        for cookie in given_up {
            if let Some(f) = self.in_flight.remove(&cookie) {
                self.events.push_back(Event::TimedOut(f.id));
            }
        }
    }

    /// A datagram from the node. One that names no command in flight is counted and dropped;
    /// a malformed one that names a command fails that command.
    pub fn handle_datagram(&mut self, datagram: &[u8]) {
        let parsed = Reply::parse(datagram);
        let cookie = match &parsed {
            Ok((cookie, _)) => Some(cookie.clone()),
            Err(_) => datagram
                .split(|b| b.is_ascii_whitespace())
                .find(|w| !w.is_empty())
                .and_then(|w| std::str::from_utf8(w).ok())
                .map(str::to_owned),
        };
        let Some(f) = cookie.and_then(|c| self.in_flight.remove(&c)) else {
            self.stray += 1;
            return;
        };
        self.events.push_back(match parsed {
            Ok((_, reply)) => Event::Reply(f.id, reply),
            Err(e) => Event::Failed(f.id, e),
        });
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Commands awaiting a reply.
    pub fn pending(&self) -> usize {
        self.in_flight.len()
    }

    /// Datagrams that named no command in flight.
    pub fn stray_datagrams(&self) -> u64 {
        self.stray
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn retransmits_then_times_out() {
        let now = t0();
        let mut c = Client::new(ClientConfig::default(), "n1 x");
        let id = c.send(Modifiers::default(), CommandKind::Version, now);
        assert_eq!(c.poll_transmit().unwrap(), b"n1-x_0 V");
        let ms = Duration::from_millis;
        for step in 1..=4 {
            c.handle_timeout(now + ms(200 * step));
            assert_eq!(
                c.poll_transmit().unwrap(),
                b"n1-x_0 V",
                "retransmission {step}"
            );
        }
        c.handle_timeout(now + ms(900));
        assert_eq!(c.poll_transmit(), None);
        c.handle_timeout(now + ms(1000));
        assert_eq!(c.poll_event(), Some(Event::TimedOut(id)));
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn replies_and_malformed_replies_go_to_their_command_only() {
        let now = t0();
        let mut c = Client::new(ClientConfig::default(), "p");
        let a = c.send(Modifiers::default(), CommandKind::Version, now);
        let b = c.send(Modifiers::default(), CommandKind::Info, now);
        c.handle_datagram(b"p_1 70000 1.2.3.4\n");
        assert!(matches!(
            c.poll_event(),
            Some(Event::Failed(id, ReplyParseError::BadPort(_))) if id == b
        ));
        c.handle_datagram(b"nobody 0\n");
        c.handle_datagram(b"\xff\xfe");
        assert_eq!(c.stray_datagrams(), 2);
        assert_eq!(c.pending(), 1, "the other command still waits");
        c.handle_datagram(b"p_0 20040107\n");
        assert_eq!(
            c.poll_event(),
            Some(Event::Reply(a, Reply::Number(20040107)))
        );
        c.handle_datagram(b"p_0 20040107\n");
        assert_eq!(c.stray_datagrams(), 3, "a duplicate reply is stray");
    }
}
