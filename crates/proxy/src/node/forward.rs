//! RFC 3261 §16.6: the forwarded request — Route processing, Max-Forwards, Record-Route (two
//! entries when the interface or transport changes, RFC 5658), `received`/`rport` (RFC 3581),
//! our Via with a deterministic branch — and its client transaction; the destination set tried
//! serially (with failover) or in parallel.

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{HeaderName, Message, Method};

use crate::routing::{Target, TargetHost};
use crate::transaction::{ClientInvite, ClientNonInvite};
use crate::via;
use crate::Transport;

use crate::node::calls::{InviteBranch, OpenInvite};
use crate::node::io::{Listener, ResolveQuery};
use crate::node::transactions::{ClientMachine, ClientTx, ServerId};
use crate::node::Proxy;

/// Our Record-Route entry for listener `l`: its address, or the cluster's name (host, port)
/// in an active-active cluster.
/// In a cluster, the entry also names the node that set the call up (`anc-node`): another
/// node forwards the call's requests there without asking the store, while it lives.
pub(super) fn rr_value(
    l: &Listener,
    cluster_name: Option<&(String, u16)>,
    node_id: &str,
) -> String {
    let transport = match l.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    match cluster_name {
        Some((host, port)) => format!(
            "<sip:{host}:{port}{transport};{}={};lr>",
            crate::node::peers::NODE_PARAM,
            crate::node::peers::node_param(node_id)
        ),
        None => format!(
            "<sip:{}:{}{transport};lr>",
            l.advertise_host, l.advertise_port
        ),
    }
}

/// Where a request came in: the previous hop's address, the transport, and our socket.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    /// The packet's source (for `received`/`rport`, RFC 3581).
    pub(super) source: SocketAddr,
    /// The transport it came over.
    pub(super) transport: Transport,
    /// The local socket it arrived on (the inbound listener, for Record-Route).
    pub(super) local: SocketAddr,
}

impl Proxy {
    /// Sends the request of `key` to its next remaining target, or answers with the best
    /// response (or 408/503) when none is left.
    pub(super) fn try_next_target(&mut self, key: ServerId, now: Instant) {
        loop {
            let Some(tx) = self.servers.get_mut(key) else {
                return;
            };
            if tx.cancelled || tx.final_status.is_some() {
                return;
            }
            let Some(target) = tx.remaining.pop_front() else {
                let (status, body) = match tx.best.take() {
                    Some(best) => best,
                    None => {
                        self.respond(key, 408, "Request Timeout", now);
                        return;
                    }
                };
                self.forward_response_upstream(key, status, body, now);
                return;
            };
            let Some(destination) = target.socket_addr() else {
                // A host name: park the request until the runtime resolved it (RFC 3263).
                if let TargetHost::Name(name) = target.host {
                    let id = self.next_query_id;
                    self.next_query_id += 1;
                    self.waiting_for_resolution.insert(id, key);
                    self.resolve_queries.push_back(ResolveQuery {
                        id,
                        name,
                        port: (!target.srv).then_some(target.port),
                        transport: target.transport,
                    });
                }
                return;
            };
            let request = tx.request.clone();
            let failover = tx.failover.clone();
            let parallel = failover.as_ref().is_some_and(|p| p.parallel);
            match self.forward_request(&request, key, &target, destination, now) {
                Ok(branch) => {
                    if let Some(policy) = failover.filter(|p| p.on_timeout && !p.parallel) {
                        if let Some(c) = self.clients.get_by_mut(&branch) {
                            c.failover_deadline = Some(now + policy.timeout);
                        }
                    }
                    if let Some(tx) = self.servers.get_mut(key) {
                        tx.branches.push(branch.clone());
                        let initial_invite = tx.request.method() == Some(Method::Invite)
                            && tx.request.to().ok().is_some_and(|t| t.tag().is_none());
                        if let (true, Ok(call_id)) = (initial_invite, tx.request.call_id()) {
                            let call_id = call_id.to_string();
                            let received = OpenInvite {
                                request: tx.request.bytes(),
                                source: tx.source,
                                transport: tx.transport,
                                local: tx.local,
                            };
                            self.calls.invite_received(&call_id, received);
                            self.calls.invite_forwarded(
                                &call_id,
                                InviteBranch {
                                    branch: branch.clone(),
                                    destination,
                                    transport: target.transport,
                                },
                            );
                        }
                    }
                    self.drain_client(&branch, now);
                    if parallel
                        && self
                            .servers
                            .get(key)
                            .is_some_and(|s| !s.remaining.is_empty())
                    {
                        continue;
                    }
                    return;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "cannot forward request");
                    self.respond(key, 500, "Server Internal Error", now);
                    return;
                }
            }
        }
    }

    /// §16.6: copies the request, applies the proxy's edits, creates the client transaction.
    pub(super) fn forward_request(
        &mut self,
        req: &Message,
        key: ServerId,
        target: &Target,
        destination: SocketAddr,
        now: Instant,
    ) -> Result<String, String> {
        let Some(tx) = self.servers.get(key) else {
            return Err("server transaction gone".into());
        };
        let (source, in_transport, in_local) = (tx.source, tx.transport, tx.local);
        let method = req.method().ok_or("no method")?;
        let next_hop = format!("{:?}:{destination}", target.transport);
        let branch = via::branch(req, &next_hop);
        let out_listener = self.listener_for(target.transport, destination, in_local);
        let arrival = Arrival {
            source,
            transport: in_transport,
            local: in_local,
        };
        let edited = self.edit_forwarded(req, arrival, out_listener, &branch, true)?;
        let reliable = target.transport.is_reliable();
        let machine = if method == Method::Invite {
            ClientMachine::Invite(ClientInvite::new_proxied(
                now,
                reliable,
                &self.config.timers,
            ))
        } else {
            ClientMachine::NonInvite(ClientNonInvite::new(now, reliable, &self.config.timers))
        };
        self.clients.insert(
            branch.clone(),
            Box::new(ClientTx {
                machine,
                request: edited,
                destination,
                transport: target.transport,
                server: key,
                provisional_received: false,
                cancel_pending: false,
                failover_deadline: None,
                abandoned: false,
                completed: false,
                scheduled: None,
            }),
        );
        Ok(branch)
    }

    /// The listener to send from towards `destination` with `transport`: the inbound one when it
    /// fits (same transport and family), else the first that does.
    pub(super) fn listener_for(
        &self,
        transport: Transport,
        destination: SocketAddr,
        in_local: SocketAddr,
    ) -> Option<usize> {
        let fits =
            |l: &Listener| l.transport == transport && l.local.is_ipv4() == destination.is_ipv4();
        self.config
            .listeners
            .iter()
            .position(|l| l.local == in_local && fits(l))
            .or_else(|| self.config.listeners.iter().position(fits))
    }

    /// Applies §16.6 steps 2–8 to a request: Route processing, Max-Forwards, Record-Route,
    /// `received`/`rport` on the previous Via, and our Via.
    pub(super) fn edit_forwarded(
        &self,
        req: &Message,
        arrival: Arrival,
        out_listener: Option<usize>,
        branch: &str,
        record_route: bool,
    ) -> Result<Message, String> {
        let Arrival {
            source,
            transport: in_transport,
            local: in_local,
        } = arrival;
        let out = out_listener
            .and_then(|i| self.config.listeners.get(i))
            .ok_or("no listener for the destination's transport and address family")?;
        let mut e = req.edit();
        // Previous hop's Via: received / rport (RFC 3581).
        if let (Ok(top), Some(header)) = (req.top_via(), req.header(HeaderName::Via)) {
            if let Some(first) = header.values().next() {
                if let Some(stamped) = via::stamp_received(first, &top, source) {
                    let rest = header.value().get(first.len()..).unwrap_or_default();
                    let mut value = stamped;
                    value.extend_from_slice(rest);
                    e.set_header_value(header.index(), &value)
                        .map_err(|err| err.to_string())?;
                }
            }
        }
        // Our own Route entries (loose routing, §16.4).
        for route in req.routes().filter_map(|r| r.ok()?.uri().ok()) {
            if self.is_us(&route) {
                e.pop_route();
            } else {
                break;
            }
        }
        if let Some(offset) = self.cseq_offset(req).filter(|o| *o > 0) {
            if let Ok(cseq) = req.cseq() {
                e.set_cseq_number(cseq.seq.saturating_add(offset))
                    .map_err(|err| err.to_string())?;
            }
        }
        match req.max_forwards() {
            Ok(Some(n)) => {
                e.set_max_forwards(n.saturating_sub(1));
            }
            _ => {
                e.add_header("Max-Forwards", b"70")
                    .map_err(|err| err.to_string())?;
            }
        }
        let initial = req.to().ok().and_then(|t| t.tag()).is_none();
        let dialog_creating = matches!(
            req.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        );
        if record_route && initial && dialog_creating {
            let inbound = self
                .config
                .listeners
                .iter()
                .find(|l| l.local == in_local && l.transport == in_transport);
            // Two entries when the request leaves on another interface or transport (RFC 5658).
            if let Some(inb) = inbound.filter(|inb| *inb != out) {
                e.prepend_record_route(
                    rr_value(inb, self.config.cluster_name.as_ref(), &self.config.node_id)
                        .as_bytes(),
                )
                .map_err(|err| err.to_string())?;
            }
            e.prepend_record_route(
                rr_value(out, self.config.cluster_name.as_ref(), &self.config.node_id).as_bytes(),
            )
            .map_err(|err| err.to_string())?;
        }
        // What another node said of the request's source is for us alone.
        crate::node::peers::strip_source_header(req, &mut e);
        let via_value = format!(
            "SIP/2.0/{} {}:{};branch={branch};nid={}",
            out.transport.via_token(),
            out.advertise_host,
            out.advertise_port,
            self.config.node_id
        );
        e.push_via(via_value.as_bytes())
            .map_err(|err| err.to_string())?;
        e.finish_message().map_err(|err| err.to_string())
    }
}
