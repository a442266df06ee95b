//! RFC 3261 §16.3 request validation (Max-Forwards → 483, loops → 482, URI scheme → 416,
//! Proxy-Require → 420), `[proxy.overload]` load shedding, and answers sent without a
//! transaction (an error found before one exists, or a message the parser refused: 400).

use std::time::Duration;

use anchorage_sip::{Message, Method, Uri};

use crate::via;

use crate::node::io::{Datagram, Transmit};
use crate::node::response::upstream_destination;
use crate::node::Proxy;

impl Proxy {
    /// §16.3: Max-Forwards, loops, URI scheme. Returns the rejection, if any.
    pub(super) fn check_request(&self, req: &Message) -> Option<(u16, String)> {
        if let Ok(Some(0)) = req.max_forwards() {
            return Some((483, "Too Many Hops".into()));
        }
        if via::is_loop(req, &self.ours) {
            return Some((482, "Loop Detected".into()));
        }
        match req.request_uri() {
            Ok(Uri::Sip(_)) => None,
            Ok(_) if req.routes().next().is_some() => None,
            Ok(_) => Some((416, "Unsupported URI Scheme".into())),
            Err(e) => Some((400, e.reason())),
        }
    }

    /// §16.3 item 6: Proxy-Require lists extensions this proxy must support; it supports none.
    pub(super) fn unsupported_proxy_require(&self, req: &Message) -> Option<String> {
        let list: Vec<&str> = req.proxy_require().collect();
        if list.is_empty() {
            None
        } else {
            Some(list.join(", "))
        }
    }

    /// Which `[proxy.overload]` bound a new call would go over now, if any.
    pub(super) fn overloaded(&self) -> Option<&'static str> {
        let bounds = &self.config.overload;
        if self.servers.len() >= bounds.max_transactions {
            return Some("transactions");
        }
        if bounds.max_queue_delay_ms > 0
            && self.input_delay > Duration::from_millis(bounds.max_queue_delay_ms)
        {
            return Some("input queue delay");
        }
        None
    }

    /// Answers a request without creating a transaction (an error found before one exists).
    pub(super) fn reject(
        &mut self,
        req: &Message,
        d: &Datagram,
        status: u16,
        reason: String,
        extra: &[String],
    ) {
        self.counters.rejected += 1;
        if req.method() == Some(Method::Ack) {
            return;
        }
        let to_tag = format!("{:016x}", via::Fnv::default().feed(req.as_bytes()).finish());
        let mut builder = req.response(status, &reason).to_tag(&to_tag);
        for h in extra {
            if let Some((name, value)) = h.split_once(": ") {
                builder = builder.header(name, value);
            }
        }
        if let Ok(m) = builder.build() {
            self.out.push_back(Transmit {
                data: m.bytes(),
                destination: upstream_destination(req, d.source, d.transport),
                transport: d.transport,
                local: Some(d.local),
            });
        }
    }

    /// A message the parser or validator refused: `400 <reason>` (or 505) when it is a
    /// request with enough to answer, dropped otherwise.
    pub(super) fn reject_unparsable(&mut self, d: &Datagram, e: &anchorage_sip::ParseError) {
        let Ok(lenient) = Message::parse_lenient(d.data.clone()) else {
            self.counters.dropped += 1;
            return;
        };
        if !lenient.is_request() || !lenient.answerable() {
            self.counters.dropped += 1;
            return;
        }
        tracing::info!(call_id = ?lenient.call_id().ok(), source = %d.source, error = %e, "bad request");
        self.reject(&lenient, d, e.status(), e.reason(), &[]);
    }
}
