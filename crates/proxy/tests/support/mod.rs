//! A test bench for the proxy core through its public seam only: a virtual clock, phones
//! whose messages are built with `anchorage_sip`'s builders, and relay nodes that answer ng
//! requests (or stay silent, or refuse) as the test says.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_proxy::node::{CoreConfig, Datagram, Listener, Proxy, Transmit};
use anchorage_proxy::Transport;
use anchorage_sip::{Message, Method, RequestBuilder};
use bytes::Bytes;

pub mod load;
pub mod scenario;

/// The proxy's address.
pub const PROXY: &str = "127.0.0.1:5060";
/// The caller's address.
pub const CALLER: &str = "127.0.0.1:5070";
/// The callee's address.
pub const CALLEE: &str = "127.0.0.1:9";

/// A caller's SDP.
pub const OFFER_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
/// A callee's SDP.
pub const ANSWER_SDP: &str = "v=0\r\no=bob 9 9 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

/// How a relay node behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// Answers every request at once.
    Answers,
    /// Answers every request after this delay.
    Slow(Duration),
    /// Answers nothing (hung, or its host is gone).
    Silent,
    /// Its port is closed: every datagram draws "connection refused".
    Refuses,
    /// Answers pings and nothing else (a relay whose control plane drops offers).
    PingsOnly,
    /// Answers pings, and every other request with this error (e.g. "Ran out of ports").
    Errors(anchorage_ng::ErrorReason),
}

/// An ng request the proxy sent, as decoded.
#[derive(Debug, Clone)]
pub struct NgSent {
    /// The node it went to.
    pub to: SocketAddr,
    /// The request.
    pub request: anchorage_ng::Request,
}

/// The proxy, its clock and its relays.
pub struct Bench {
    /// The core under test.
    pub proxy: Proxy,
    /// The virtual clock.
    pub now: Instant,
    /// How each relay node behaves, by ng address.
    pub relays: HashMap<SocketAddr, Relay>,
    /// Replies of slow relays, due at their time.
    delayed: Vec<(Instant, SocketAddr, Bytes)>,
    /// Every ng request sent (pings aside) since the test last took them.
    pub ng_sent: Vec<NgSent>,
    /// Every SIP message sent since the test last took them.
    pub sip_sent: Vec<Transmit>,
    /// Relay ports handed out, to make each SDP distinct.
    next_port: u16,
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

impl Bench {
    /// A proxy with `config` (TOML) whose relays all answer.
    pub fn new(config: &str) -> Bench {
        let cfg = anchorage_config::parse(config).expect("a valid test configuration");
        let listeners = vec![Listener {
            transport: Transport::Udp,
            local: PROXY.parse().unwrap(),
            advertise_host: "127.0.0.1".into(),
            advertise_port: 5060,
        }];
        let relays = cfg
            .proxy
            .relay_set
            .iter()
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter_map(|n| n.ng.map(|a| (a, Relay::Answers)))
            })
            .collect();
        let now = epoch();
        Bench {
            proxy: Proxy::new(
                CoreConfig::from_config(&cfg, listeners),
                7,
                anchorage_proxy::node::Now {
                    mono: now,
                    unix_us: 1_800_000_000_000_000,
                },
            ),
            now,
            relays,
            delayed: Vec::new(),
            ng_sent: Vec::new(),
            sip_sent: Vec::new(),
            next_port: 30_000,
        }
    }

    /// Sets how the node at `ng` behaves from now on.
    pub fn set_relay(&mut self, ng: &str, behaviour: Relay) {
        self.relays.insert(ng.parse().unwrap(), behaviour);
    }

    /// Hands a SIP message from `from` to the proxy and lets the relays answer.
    pub fn receive(&mut self, message: &Message, from: &str) {
        self.proxy.handle_datagram(
            Datagram {
                data: message.bytes(),
                source: from.parse().unwrap(),
                local: PROXY.parse().unwrap(),
                transport: Transport::Udp,
            },
            self.now,
        );
        self.settle();
    }

    /// Lets the relays answer what the proxy sent them, and collects what it sent to phones,
    /// until nothing more happens at `now`.
    pub fn settle(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.proxy.poll_transmit() {
                self.sip_sent.push(t);
            }
            while let Some((to, datagram)) = self.proxy.poll_ng_transmit() {
                progressed = true;
                self.relay_gets(to, &datagram);
            }
            let due: Vec<_> = {
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) =
                    self.delayed.drain(..).partition(|(at, _, _)| *at <= now);
                self.delayed = later;
                due
            };
            for (_, from, reply) in due {
                progressed = true;
                self.proxy.handle_ng_datagram(from, &reply, self.now);
            }
            if !progressed {
                while let Some(t) = self.proxy.poll_transmit() {
                    self.sip_sent.push(t);
                }
                return;
            }
        }
    }

    fn relay_gets(&mut self, to: SocketAddr, datagram: &[u8]) {
        let incoming = anchorage_ng::decode_request(datagram).expect("a valid ng request");
        let is_ping = matches!(incoming.request.kind, anchorage_ng::RequestKind::Ping);
        if !is_ping {
            self.ng_sent.push(NgSent {
                to,
                request: incoming.request.clone(),
            });
        }
        let behaviour = self.relays.get(&to).copied().unwrap_or(Relay::Silent);
        let reply = match &incoming.request.kind {
            anchorage_ng::RequestKind::Ping => anchorage_ng::Reply::pong(),
            _ if matches!(behaviour, Relay::Errors(_)) => {
                let Relay::Errors(reason) = behaviour else {
                    unreachable!("matched above")
                };
                anchorage_ng::Reply::error(reason)
            }
            anchorage_ng::RequestKind::Offer(_) | anchorage_ng::RequestKind::Answer(_) => {
                self.next_port = self.next_port.wrapping_add(2).max(1024);
                let sdp = format!(
                    "v=0\r\no=relay 5 7 IN IP4 {ip}\r\ns=-\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\nc=IN IP4 {ip}\r\n",
                    ip = to.ip(),
                    port = self.next_port
                );
                anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp))
            }
            _ => anchorage_ng::Reply::ok(),
        };
        let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
        match behaviour {
            Relay::Answers | Relay::Errors(_) => self.delayed.push((self.now, to, bytes)),
            Relay::Slow(delay) => self.delayed.push((self.now + delay, to, bytes)),
            Relay::Silent => {}
            Relay::PingsOnly => {
                if is_ping {
                    self.delayed.push((self.now, to, bytes));
                }
            }
            Relay::Refuses => self.proxy.handle_relay_refused(to, self.now),
        }
    }

    /// Moves the clock forward by `by`, firing every timer on the way (and the replies of slow
    /// relays at their time).
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next_reply = self.delayed.iter().map(|(at, _, _)| *at).min();
            let next = [self.proxy.poll_timeout(), next_reply]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.settle();
                    self.proxy.handle_timeout(self.now);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
        self.proxy.handle_timeout(self.now);
        self.settle();
    }

    /// Takes the SIP messages sent so far.
    pub fn take_sip(&mut self) -> Vec<Message> {
        self.sip_sent
            .drain(..)
            .filter_map(|t| Message::parse(t.data).ok())
            .collect()
    }

    /// Takes the SIP messages sent so far, with where they went.
    pub fn take_sip_with_destination(&mut self) -> Vec<(SocketAddr, Message)> {
        self.sip_sent
            .drain(..)
            .filter_map(|t| Message::parse(t.data).ok().map(|m| (t.destination, m)))
            .collect()
    }

    /// Takes the ng requests sent so far (pings aside).
    pub fn take_ng(&mut self) -> Vec<NgSent> {
        std::mem::take(&mut self.ng_sent)
    }

    /// Places call `id` from the caller to the callee with SDP both ways, and confirms it
    /// (INVITE, 200, ACK). Returns the Record-Route the proxy put in the INVITE.
    pub fn place_call(&mut self, id: &str) -> String {
        let from = format!("<sip:alice@example.com>;tag=a-{id}");
        self.receive(&invite(id), CALLER);
        let forwarded = self
            .take_sip()
            .into_iter()
            .find(|m| m.method() == Some(Method::Invite))
            .unwrap_or_else(|| panic!("the INVITE of {id} forwarded"));
        let rr = String::from_utf8_lossy(
            forwarded
                .header(anchorage_sip::HeaderName::RecordRoute)
                .expect("a Record-Route")
                .value(),
        )
        .into_owned();
        let ok = forwarded
            .response(200, "OK")
            .to_tag("b1")
            .header("Contact", "<sip:bob@127.0.0.1:9>")
            .header("Record-Route", &rr)
            .body("application/sdp", ANSWER_SDP.as_bytes())
            .build()
            .expect("a 200");
        self.receive(&ok, CALLEE);
        let to = "<sip:bob@example.com>;tag=b1";
        let ack_via = format!("SIP/2.0/UDP {CALLER};branch=z9hG4bK-{id}-ack");
        let ack = RequestBuilder::new(Method::Ack, "sip:bob@127.0.0.1:9")
            .via(&ack_via)
            .route(&rr)
            .from(&from)
            .to(to)
            .call_id(id)
            .cseq(1)
            .max_forwards(70)
            .build()
            .expect("an ACK");
        self.receive(&ack, CALLER);
        self.sip_sent.clear();
        rr
    }

    /// A new INVITE with SDP for call `id`; returns the final responses the caller got.
    pub fn try_call(&mut self, id: &str) -> Vec<Message> {
        let invite = invite(id);
        self.receive(&invite, CALLER);
        self.take_sip()
            .into_iter()
            .filter(|m| m.status().is_some_and(|s| s >= 200))
            .collect()
    }

    /// The callee's BYE for call `id` (placed with [`Bench::place_call`]) with CSeq `cseq`;
    /// returns what the proxy sent.
    pub fn callee_bye(&mut self, id: &str, rr: &str, cseq: u32) -> Vec<(SocketAddr, Message)> {
        let via = format!("SIP/2.0/UDP {CALLEE};branch=z9hG4bK-bye-{id}");
        let bye = RequestBuilder::new(Method::Bye, "sip:alice@127.0.0.1:5070")
            .via(&via)
            .route(rr)
            .from("<sip:bob@example.com>;tag=b1")
            .to(&format!("<sip:alice@example.com>;tag=a-{id}"))
            .call_id(id)
            .cseq(cseq)
            .max_forwards(70)
            .build()
            .expect("a BYE");
        self.receive(&bye, CALLEE);
        self.take_sip_with_destination()
    }

    /// Answers every INVITE among `sent` with a 200 carrying the party's own SDP (as a phone
    /// answers a re-INVITE); returns how many were answered.
    pub fn answer_invites(&mut self, sent: &[(SocketAddr, Message)]) -> usize {
        let mut answered = 0;
        for (to, m) in sent {
            if m.method() != Some(Method::Invite) {
                continue;
            }
            let (sdp, contact, from) = if to.port() == 9 {
                (ANSWER_SDP, "<sip:bob@127.0.0.1:9>", CALLEE)
            } else {
                (OFFER_SDP, "<sip:alice@127.0.0.1:5070>", CALLER)
            };
            let ok = m
                .response(200, "OK")
                .header("Contact", contact)
                .body("application/sdp", sdp.as_bytes())
                .build()
                .expect("a 200");
            self.receive(&ok, from);
            answered += 1;
        }
        answered
    }
}

/// Node names of `(ng address, name)` pairs, for readable assertions.
pub fn names(pairs: &[(&str, &str)]) -> HashMap<SocketAddr, String> {
    pairs
        .iter()
        .map(|(a, n)| (a.parse().unwrap(), n.to_string()))
        .collect()
}

/// Distinct values.
pub fn distinct<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> usize {
    items.into_iter().collect::<HashSet<_>>().len()
}

/// The caller's initial INVITE with SDP for call `id` (branch `z9hG4bK-<id>`, from-tag
/// `a-<id>`), to bob at the callee's address.
pub fn invite(id: &str) -> Message {
    let from = format!("<sip:alice@example.com>;tag=a-{id}");
    let via = format!("SIP/2.0/UDP {CALLER};branch=z9hG4bK-{id}");
    RequestBuilder::new(Method::Invite, "sip:bob@127.0.0.1:9")
        .via(&via)
        .from(&from)
        .to("<sip:bob@example.com>")
        .call_id(id)
        .cseq(1)
        .contact("<sip:alice@127.0.0.1:5070>")
        .max_forwards(70)
        .body("application/sdp", OFFER_SDP.as_bytes())
        .build()
        .expect("an INVITE")
}

/// The caller's CANCEL of [`invite`]`(id)` (RFC 3261 §9.1: same Request-URI, top Via, From,
/// To, Call-ID and CSeq number).
pub fn cancel(id: &str) -> Message {
    let from = format!("<sip:alice@example.com>;tag=a-{id}");
    let via = format!("SIP/2.0/UDP {CALLER};branch=z9hG4bK-{id}");
    RequestBuilder::new(Method::Cancel, "sip:bob@127.0.0.1:9")
        .via(&via)
        .from(&from)
        .to("<sip:bob@example.com>")
        .call_id(id)
        .cseq(1)
        .max_forwards(70)
        .build()
        .expect("a CANCEL")
}

/// The final responses among `sent`, as (status, CSeq method, reason phrase).
pub fn finals(sent: &[Message]) -> Vec<(u16, String, String)> {
    sent.iter()
        .filter_map(|m| {
            let status = m.status().filter(|s| *s >= 200)?;
            let method = m.cseq().ok()?.method.as_str().to_string();
            let reason = String::from_utf8_lossy(m.reason_phrase()?).into_owned();
            Some((status, method, reason))
        })
        .collect()
}
