//! RFC 3261 §16.10 CANCEL (200 at once, then a CANCEL per pending branch once it has seen a
//! provisional, §9.1), and the stateless forwarding of a CANCEL or ACK whose INVITE another
//! node forwarded — routed as that INVITE was, with the same deterministic branch.

use std::collections::VecDeque;
use std::time::Instant;

use anchorage_sip::Message;

use crate::routing::{Decision, RequestFacts, Target};
use crate::transaction::ServerNonInvite;
use crate::via;

use crate::node::forward::Arrival;
use crate::node::io::{Datagram, Transmit};
use crate::node::route::RouteChoice;
use crate::node::transactions::{ClientMachine, ServerKey, ServerMachine, ServerTx};
use crate::node::Proxy;

impl Proxy {
    /// §16.10: CANCEL. With the INVITE's transaction: 200 to the CANCEL, CANCEL every pending
    /// branch. Without (another node forwarded the INVITE): forward statelessly.
    pub(super) fn on_cancel(&mut self, req: Message, key: ServerKey, d: &Datagram, now: Instant) {
        let Some(invite) = self.servers.find(&key.invite()) else {
            self.forward_stateless(req, d, now);
            return;
        };
        // The CANCEL's own transaction, answered 200 at once.
        let mut machine = ServerNonInvite::new(now, d.transport.is_reliable(), &self.config.timers);
        let _ = machine.send_response(now, 200);
        let ok = req
            .response(200, "OK")
            .build()
            .map(|m| m.bytes())
            .unwrap_or_default();
        let cancel = self.servers.insert(
            key,
            Box::new(ServerTx {
                machine: ServerMachine::NonInvite(machine),
                request: req,
                source: d.source,
                local: d.local,
                transport: d.transport,
                origin: None,
                last_response: Some(ok),
                final_status: Some(200),
                branches: Vec::new(),
                remaining: VecDeque::new(),
                failover: None,
                best: None,
                cancelled: false,
                succeeded: false,
                scheduled: None,
            }),
        );
        self.drain_server(cancel, now);
        let Some(tx) = self.servers.get_mut(invite) else {
            return;
        };
        if tx.final_status.is_some() {
            return;
        }
        tx.cancelled = true;
        tx.remaining.clear();
        let branches = tx.branches.clone();
        let live = self.pending_branches(invite);
        for branch in branches {
            self.cancel_branch(&branch, now);
        }
        if live == 0 {
            // No branch will answer with a 487 (the INVITE still waits for its relay, a fork
            // offer or DNS, or its branches are done): the proxy answers it itself (§9.2), so
            // every INVITE ends in a final response.
            self.respond(invite, 487, "Request Terminated", now);
        }
    }

    /// Sends a CANCEL for a client INVITE branch once it has seen a provisional (§9.1).
    pub(super) fn cancel_branch(&mut self, branch: &str, now: Instant) {
        let Some(c) = self.clients.get_by_mut(branch) else {
            return;
        };
        c.abandoned = true;
        if !c.provisional_received {
            c.cancel_pending = true;
            return;
        }
        c.cancel_pending = false;
        if let ClientMachine::Invite(m) = &mut c.machine {
            m.handle_cancel_sent(now);
        }
        if let Ok(cancel) = c.request.cancel().map(|m| m.bytes()) {
            let t = Transmit {
                data: cancel,
                destination: c.destination,
                transport: c.transport,
                local: None,
            };
            self.out.push_back(t);
        }
        self.drain_client(branch, now);
    }

    /// Forwards a request that has no transaction here (ACK, CANCEL): along the branches its
    /// INVITE took when this node holds them (from the call's record: the node that forwarded
    /// it died, or its transaction is gone), else routed like its INVITE, with the same
    /// deterministic branch, so the next hop matches it.
    pub(super) fn forward_stateless(&mut self, req: Message, d: &Datagram, _now: Instant) {
        self.counters.stateless_requests += 1;
        let method = req.method().map(|m| m.as_str()).unwrap_or("");
        let to_tagged = req.to().ok().is_some_and(|t| t.tag().is_some());
        let dialog_ack = method == "ACK"
            && to_tagged
            && req.call_id().ok().is_some_and(|id| {
                let (from, to) = (req.from().ok(), req.to().ok());
                let tags = from
                    .as_ref()
                    .and_then(|f| f.tag())
                    .zip(to.as_ref().and_then(|t| t.tag()));
                tags.is_some_and(|(a, b)| {
                    self.calls
                        .between(id, a, b)
                        .is_some_and(|d| d.state == crate::dialog::DialogState::Confirmed)
                })
            });
        let branches = match req.call_id() {
            Ok(id) if !dialog_ack => self.calls.invite_branches(id).to_vec(),
            _ => Vec::new(),
        };
        if !branches.is_empty() {
            for b in branches {
                self.send_stateless(&req, d, b.transport, b.destination, &b.branch);
            }
            return;
        }
        let target = match self.next_hop_by_route(&req) {
            Some(RouteChoice::Route(t)) => Some(t),
            _ => {
                let uri = req.request_uri().ok();
                let sip = uri.as_ref().and_then(|u| u.as_sip());
                // A CANCEL, or the ACK of a non-2xx response, belongs to an initial INVITE:
                // route it as that INVITE was routed. An ACK for a 2xx is in-dialog: it carries
                // our Record-Route as Route and goes to its Request-URI (the remote target).
                let in_dialog = method == "ACK"
                    && req
                        .routes()
                        .filter_map(|r| r.ok()?.uri().ok())
                        .any(|uri| self.is_us(&uri));
                let initial = !in_dialog;
                let decision = if initial {
                    let domain = sip.map(|s| s.host.to_string());
                    let facts = RequestFacts {
                        method: "INVITE",
                        user: sip.and_then(|s| s.user),
                        domain: domain.as_deref(),
                        source: d.source.ip(),
                    };
                    // The first destination of the set is where the INVITE went first; with no
                    // state we cannot know of a failover that happened on the dead node.
                    self.config.router.decide(&facts, |_| 0)
                } else {
                    Decision::RequestUri
                };
                match decision {
                    Decision::Destinations { targets, .. } => targets.into_iter().next(),
                    Decision::RequestUri => self
                        .behind_nat(&req)
                        .filter(|_| in_dialog)
                        .or_else(|| uri.as_ref().and_then(Target::from_uri)),
                    Decision::Reply { .. } => None,
                }
            }
        };
        let Some(target) = target else {
            self.counters.dropped += 1;
            return;
        };
        let Some(destination) = target.socket_addr() else {
            self.counters.dropped += 1;
            return;
        };
        let next_hop = format!("{:?}:{destination}", target.transport);
        let branch = via::branch(&req, &next_hop);
        self.send_stateless(&req, d, target.transport, destination, &branch);
    }

    /// Sends `req` on to `destination` with our Via on `branch` (§16.6 edits, no transaction).
    fn send_stateless(
        &mut self,
        req: &Message,
        d: &Datagram,
        transport: crate::Transport,
        destination: std::net::SocketAddr,
        branch: &str,
    ) {
        let out_listener = self.listener_for(transport, destination, d.local);
        let arrival = Arrival {
            source: d.source,
            transport: d.transport,
            local: d.local,
        };
        match self.edit_forwarded(req, arrival, out_listener, branch, false) {
            Ok(m) => self.out.push_back(Transmit {
                data: m.bytes(),
                destination,
                transport,
                local: out_listener
                    .and_then(|i| self.config.listeners.get(i))
                    .map(|l| l.local),
            }),
            Err(_) => self.counters.dropped += 1,
        }
    }
}
