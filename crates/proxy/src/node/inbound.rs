//! Where a datagram enters the proxy node and a server transaction is matched (RFC 3261
//! §17.2.3): parsing, the `[proxy.flood]` rate limit and User-Agent filter, retransmissions,
//! the ACK of a non-2xx, CANCEL, §16.3 validation and the creation of a new server transaction.

use std::collections::VecDeque;
use std::time::Instant;

use anchorage_sip::{Message, Method};

use crate::flood::{self};
use crate::transaction::{ServerInvite, ServerNonInvite};

use crate::node::io::Datagram;
use crate::node::transactions::{method_key, server_key, ServerMachine, ServerTx};
use crate::node::Proxy;

impl Proxy {
    pub(super) fn on_datagram(&mut self, d: Datagram, now: Instant) {
        let parsed = Message::parse(d.data.clone());
        // Everything but a response counts against its source's rate, garbage included.
        let response = matches!(&parsed, Ok(m) if !m.is_request());
        if !response && !self.flood_allows(&d, now) {
            return;
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.reject_unparsable(&d, &e);
                return;
            }
        };
        if msg.is_request() {
            self.counters.requests += 1;
            if self.dropped_user_agent(&msg) {
                self.counters.user_agent_dropped += 1;
                return;
            }
            if let Err(e) = msg.validate() {
                self.reject_unparsable(&d, &e);
                return;
            }
        } else {
            self.counters.responses += 1;
            if msg.validate().is_err() {
                self.counters.dropped += 1;
                return;
            }
        }
        // About a call another live node owns (active-active): the request goes there.
        if let Some(owner) = self.owner_elsewhere(&msg, now) {
            if !self.is_forwarded_by_peer(&msg, &d) {
                self.forward_to_owner(&msg, &d, owner);
                return;
            }
        }
        // About a call another start of this node (or another node) held: load it first.
        if let Some(call_id) = self.call_to_load(&msg, now) {
            self.park(call_id, msg, d, now);
            return;
        }
        self.dispatch(msg, &d, now);
    }

    /// A parsed, valid message to its handler (also a parked one, once its call is loaded).
    pub(super) fn dispatch(&mut self, msg: Message, d: &Datagram, now: Instant) {
        if msg.is_request() {
            self.on_request(msg, d, now);
        } else {
            self.on_response(msg, now);
        }
    }

    /// The `[proxy.flood]` verdict for a request from `d`'s source: counted, and logged once
    /// when the source gets blocked.
    pub(super) fn flood_allows(&mut self, d: &Datagram, now: Instant) -> bool {
        match self.flood.check(d.source.ip(), now) {
            flood::Verdict::Pass => true,
            flood::Verdict::Drop { newly_blocked } => {
                self.counters.flood_dropped += 1;
                if newly_blocked {
                    self.counters.flood_blocks += 1;
                    tracing::warn!(
                        source = %d.source.ip(),
                        block_s = self.config.flood.block_s,
                        "request rate limit exceeded: dropping this source's requests"
                    );
                }
                false
            }
        }
    }

    /// Whether the request's User-Agent names one of `[proxy.flood] drop_user_agents`.
    pub(super) fn dropped_user_agent(&self, msg: &Message) -> bool {
        let names = &self.config.flood.drop_user_agents;
        if names.is_empty() {
            return false;
        }
        msg.headers_named(b"User-Agent").any(|h| {
            let ua = String::from_utf8_lossy(h.value()).to_ascii_lowercase();
            names
                .iter()
                .any(|n| ua.contains(&n.trim().to_ascii_lowercase()))
        })
    }

    pub(super) fn on_request(&mut self, req: Message, d: &Datagram, now: Instant) {
        let Some(method) = req.method() else {
            self.counters.dropped += 1;
            return;
        };
        let Some(key) = server_key(&req, method_key(&method)) else {
            self.counters.dropped += 1;
            return;
        };
        // Retransmission, or ACK of a non-2xx response sent by this transaction.
        if method == Method::Ack {
            let invite = self.servers.find(&key.invite());
            if let Some(tx) = invite.and_then(|id| self.servers.get_mut(id)) {
                if let (ServerMachine::Invite(m), Some(id)) = (&mut tx.machine, invite) {
                    if tx.final_status.is_some_and(|s| s >= 300) {
                        m.handle_ack(now);
                        self.drain_server(id, now);
                        return;
                    }
                }
            }
            if !self.start_ack_answer(&req, d, now) {
                self.forward_stateless(req, d, now);
            }
            return;
        }
        if let Some(id) = self.servers.find(&key) {
            if let Some(tx) = self.servers.get_mut(id) {
                match &mut tx.machine {
                    ServerMachine::Invite(m) => m.handle_request_retransmission(now),
                    ServerMachine::NonInvite(m) => m.handle_request_retransmission(now),
                }
            }
            self.drain_server(id, now);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(req, key, d, now);
            return;
        }
        if method == Method::Invite && self.absorb_forwarded_invite(&req, d) {
            return;
        }
        // §16.3 request validation.
        if let Some((status, reason)) = self.check_request(&req) {
            self.reject(&req, d, status, reason, &[]);
            return;
        }
        if let Some(unsupported) = self.unsupported_proxy_require(&req) {
            let header = format!("Unsupported: {unsupported}");
            self.reject(&req, d, 420, "Bad Extension".into(), &[header]);
            return;
        }
        if method == Method::Invite && req.to().ok().is_none_or(|t| t.tag().is_none()) {
            if let Some(why) = self.overloaded() {
                self.counters.overload_rejected += 1;
                tracing::debug!(
                    call_id = ?req.call_id().ok(),
                    why,
                    "overloaded: new call refused"
                );
                let retry = format!("Retry-After: {}", self.config.overload.retry_after_s);
                self.reject(&req, d, 503, "Overloaded".into(), &[retry]);
                return;
            }
        }
        if method == Method::Bye {
            if let Ok(call_id) = req.call_id() {
                let call_id = call_id.to_string();
                if self.calls.moving(&call_id).is_some() {
                    self.abandon_move(&call_id, now);
                }
                self.delete_media(&call_id, now);
            }
        }
        // A new server transaction.
        if matches!(method, Method::Invite | Method::Update) {
            if let Ok(call_id) = req.call_id() {
                self.calls.open_offer(call_id);
            }
        }
        if method == Method::Invite {
            self.note_in_dialog_invite(&req);
        }
        let reliable = d.transport.is_reliable();
        let machine = if method == Method::Invite {
            ServerMachine::Invite(ServerInvite::new(now, reliable, &self.config.timers))
        } else {
            ServerMachine::NonInvite(ServerNonInvite::new(now, reliable, &self.config.timers))
        };
        let id = self.servers.insert(
            key,
            Box::new(ServerTx {
                machine,
                origin: if self.peers.trusts(d.source.ip()) {
                    crate::node::peers::forwarded_source(&req)
                } else {
                    None
                },
                request: req,
                source: d.source,
                local: d.local,
                transport: d.transport,
                last_response: None,
                final_status: None,
                branches: Vec::new(),
                remaining: VecDeque::new(),
                failover: None,
                best: None,
                cancelled: false,
                succeeded: false,
                scheduled: None,
            }),
        );
        self.drain_server(id, now);
    }
}
