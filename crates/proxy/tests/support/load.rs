//! A load of transactions through the proxy core's public seam, for the many-transactions
//! test and the `transactions` bench: a caller at 127.0.0.1:5070 and a callee at 127.0.0.1:9
//! that answer at once, on a virtual clock, so what is measured is the store production runs
//! (the node's server and client transaction maps and its timer queue), not a model of it.
//!
//! Three flows, each one request end to end over UDP:
//!
//! | flow | transactions in the proxy | what keeps them after the final response |
//! | --- | --- | --- |
//! | [`Load::options`] | server + client non-INVITE | Timer J (64·T1), Timer K (T4) |
//! | [`Load::invite_rejected`] | server + client INVITE, 486 | ACK → Timer I (T4); Timer D (32 s) |
//! | [`Load::invite_answered`] | server + client INVITE, 200; then a BYE | Timers L and M (64·T1); J and K |
//!
//! Included by path from `benches/transactions.rs`, so it depends on nothing else in
//! `support/`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_proxy::node::{CoreConfig, Datagram, Listener, Proxy, Transmit};
use anchorage_proxy::Transport;
use anchorage_sip::{HeaderName, Message, Method, RequestBuilder};

const PROXY: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5070";
const CALLEE: &str = "127.0.0.1:9";

/// What the phones got from the proxy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Requests forwarded to the callee (ACKs included).
    pub requests: u64,
    /// 100 Trying sent to the caller.
    pub trying: u64,
    /// 2xx final responses forwarded to the caller.
    pub ok: u64,
    /// 486 final responses forwarded to the caller.
    pub busy: u64,
    /// Anything else (another status; a message the phones could not read).
    pub other: u64,
}

/// The proxy under load, its virtual clock and the phones' counters.
pub struct Load {
    /// The core under test.
    pub proxy: Proxy,
    /// The virtual clock.
    pub now: Instant,
    /// What came out of the proxy.
    pub tally: Tally,
    /// Requests made so far (each has its own Call-ID and branch).
    n: u64,
    caller: SocketAddr,
    callee: SocketAddr,
    local: SocketAddr,
    /// Messages sent by the proxy, reused between flows.
    out: Vec<Transmit>,
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn address(text: &str) -> SocketAddr {
    text.parse().expect("a literal socket address")
}

impl Load {
    /// A proxy with the default configuration (no routing rules: requests go to their
    /// Request-URI; no media relays) on a UDP listener at 127.0.0.1:5060.
    pub fn new() -> Load {
        let config = anchorage_config::parse("").expect("the empty configuration is valid");
        let listeners = vec![Listener {
            transport: Transport::Udp,
            local: address(PROXY),
            advertise_host: "127.0.0.1".into(),
            advertise_port: 5060,
        }];
        let now = epoch();
        Load {
            proxy: Proxy::new(
                CoreConfig::from_config(&config, listeners),
                7,
                anchorage_proxy::node::Now {
                    mono: now,
                    unix_us: 1_800_000_000_000_000,
                },
            ),
            now,
            tally: Tally::default(),
            n: 0,
            caller: address(CALLER),
            callee: address(CALLEE),
            local: address(PROXY),
            out: Vec::new(),
        }
    }

    /// Moves the clock forward by `by` and fires every timer due.
    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        self.proxy.handle_timeout(self.now);
        self.collect();
    }

    /// Live transactions, server and client together.
    pub fn live(&self) -> usize {
        let (servers, clients) = self.proxy.transaction_count();
        servers + clients
    }

    /// An OPTIONS from the caller, answered 200 by the callee.
    pub fn options(&mut self) {
        let req = self.request(Method::Options, "o", None);
        self.caller_sends(&req);
        if let Some(fwd) = self.forwarded(Method::Options) {
            self.answer(&fwd, 200, None);
        }
    }

    /// An INVITE from the caller, answered 486 by the callee; the proxy ACKs the 486, the
    /// caller ACKs it hop by hop (the proxy's server transaction absorbs that ACK).
    pub fn invite_rejected(&mut self) {
        let req = self.request(Method::Invite, "r", None);
        self.caller_sends(&req);
        if let Some(fwd) = self.forwarded(Method::Invite) {
            self.answer(&fwd, 486, None);
        }
        let ack = self.ack_for(&req, "b", None);
        self.caller_sends(&ack);
    }

    /// An INVITE answered 200, the caller's ACK through the Record-Route (forwarded without
    /// a transaction), then the caller's BYE answered 200: the dialog is over.
    pub fn invite_answered(&mut self) {
        let req = self.request(Method::Invite, "a", None);
        self.caller_sends(&req);
        let Some(fwd) = self.forwarded(Method::Invite) else {
            return;
        };
        let rr = fwd
            .header(HeaderName::RecordRoute)
            .map(|h| String::from_utf8_lossy(h.value()).into_owned());
        self.answer(&fwd, 200, rr.as_deref());
        let ack = self.ack_for(&req, "b", rr.as_deref());
        self.caller_sends(&ack);
        let call = req.call_id().map(str::to_string).unwrap_or_default();
        let bye = self.in_dialog(Method::Bye, &call, rr.as_deref());
        self.caller_sends(&bye);
        if let Some(fwd) = self.forwarded(Method::Bye) {
            self.answer(&fwd, 200, None);
        }
    }

    /// A new request from the caller: Call-ID and branch `<prefix><n>`.
    fn request(&mut self, method: Method<'static>, prefix: &str, route: Option<&str>) -> Message {
        self.n += 1;
        let id = format!("{prefix}{}", self.n);
        caller_request(method, &id, &format!("z9hG4bK-{id}"), None, 1, route)
    }

    /// The caller's request in the dialog of call `call` (callee tag `b`), CSeq 2.
    fn in_dialog(&mut self, method: Method<'static>, call: &str, route: Option<&str>) -> Message {
        let branch = format!("z9hG4bK-{call}-{}", method.as_str());
        caller_request(method, call, &branch, Some("b"), 2, route)
    }

    /// The caller's ACK for the final response to `invite` (tag `tag`): hop by hop (same
    /// branch) without `route`, end to end (a new branch, through the route) with it.
    fn ack_for(&mut self, invite: &Message, tag: &str, route: Option<&str>) -> Message {
        let call = invite.call_id().unwrap_or_default();
        let branch = match route {
            Some(_) => format!("z9hG4bK-{call}-ack"),
            None => format!("z9hG4bK-{call}"),
        };
        caller_request(Method::Ack, call, &branch, Some(tag), 1, route)
    }

    fn caller_sends(&mut self, message: &Message) {
        self.deliver(message, self.caller);
    }

    fn deliver(&mut self, message: &Message, source: SocketAddr) {
        let datagram = Datagram {
            data: message.bytes(),
            source,
            local: self.local,
            transport: Transport::Udp,
        };
        self.proxy.handle_datagram(datagram, self.now);
        self.collect();
    }

    /// The callee answers `request` with `status` (tag `b`; a 2xx with a Contact and the
    /// Record-Route copied).
    fn answer(&mut self, request: &Message, status: u16, record_route: Option<&str>) {
        let mut b = request.response(status, "X").to_tag("b");
        if status < 300 && request.method() == Some(Method::Invite) {
            b = b.header("Contact", "<sip:bob@127.0.0.1:9>");
        }
        if let Some(rr) = record_route {
            b = b.header("Record-Route", rr);
        }
        let response = b.build().expect("a valid response");
        self.deliver(&response, self.callee);
    }

    /// The last `method` request the proxy sent to the callee, parsed.
    fn forwarded(&mut self, method: Method<'_>) -> Option<Message> {
        let prefix = format!("{} ", method.as_str());
        let t = self
            .out
            .iter()
            .rev()
            .find(|t| t.destination == self.callee && t.data.starts_with(prefix.as_bytes()))?;
        Message::parse(t.data.clone()).ok()
    }

    /// Takes what the proxy sent and counts it.
    fn collect(&mut self) {
        self.out.clear();
        while let Some(t) = self.proxy.poll_transmit() {
            let tally = &mut self.tally;
            if t.destination == self.callee {
                tally.requests += 1;
            } else if t.data.starts_with(b"SIP/2.0 100 ") {
                tally.trying += 1;
            } else if t.data.starts_with(b"SIP/2.0 2") {
                tally.ok += 1;
            } else if t.data.starts_with(b"SIP/2.0 486 ") {
                tally.busy += 1;
            } else {
                tally.other += 1;
            }
            self.out.push(t);
        }
    }
}

/// A request from the caller (alice, tag `a<call>`) to bob in call `call`: an initial one
/// (with a Contact) without `to_tag`, one in the dialog with it.
fn caller_request(
    method: Method<'static>,
    call: &str,
    branch: &str,
    to_tag: Option<&str>,
    cseq: u32,
    route: Option<&str>,
) -> Message {
    let via = format!("SIP/2.0/UDP {CALLER};branch={branch}");
    let from = format!("<sip:alice@example.com>;tag=a{call}");
    let to = match to_tag {
        Some(tag) => format!("<sip:bob@example.com>;tag={tag}"),
        None => "<sip:bob@example.com>".to_string(),
    };
    let mut b = RequestBuilder::new(method, "sip:bob@127.0.0.1:9")
        .via(&via)
        .routes(route)
        .from(&from)
        .to(&to)
        .call_id(call)
        .cseq(cseq)
        .max_forwards(70);
    if to_tag.is_none() {
        b = b.contact("<sip:alice@127.0.0.1:5070>");
    }
    b.build().expect("a valid request")
}
