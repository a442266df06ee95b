//! RFC 3261 §17.1.3 client transaction matching and §16.7 response processing: best-response
//! selection, forwarding every 2xx, cancelling the other branches, serial failover on timeout,
//! 408 and 5xx; stateless forwarding of a response with no transaction (by its Via); and the
//! proxy's own responses (a 503 always with `Retry-After`, RFC 3261 §21.5.4).

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{Message, Method};
use bytes::Bytes;

use crate::node::transactions::offer_call_id;
use crate::routing::default_reason;
use crate::via;
use crate::Transport;

use crate::node::anchoring::tag_of;
use crate::node::io::Transmit;
use crate::node::moves::own_tx::OWN_BRANCH_PREFIX;
use crate::node::transactions::{ClientMachine, ClientTx, ServerId, ServerMachine};
use crate::node::Proxy;

/// §16.7 step 6: 6xx beats everything; otherwise the lowest class wins (first one of a class).
pub(super) fn better_response(new: u16, best: u16) -> bool {
    if best >= 600 {
        return false;
    }
    if new >= 600 {
        return true;
    }
    new / 100 < best / 100
}

/// Where responses to `req` go: over the connection for streams, else by its top Via with
/// `received`/`rport` taken from the packet (§18.2.2, RFC 3581).
pub(in crate::node) fn upstream_destination(
    req: &Message,
    source: SocketAddr,
    transport: Transport,
) -> SocketAddr {
    if transport.is_reliable() {
        return source;
    }
    let Ok(via) = req.top_via() else {
        return source;
    };
    if via.params.get("rport").is_some() {
        return source;
    }
    let port = via.port.unwrap_or(5060);
    SocketAddr::new(source.ip(), port)
}

impl Proxy {
    pub(super) fn on_response(&mut self, resp: Message, now: Instant) {
        let Ok(top) = resp.top_via() else {
            self.counters.dropped += 1;
            return;
        };
        if !via::is_ours(&self.ours, &top.host, top.port) {
            // A party that answers the cluster's address rather than the Via of the node that
            // sent the request: that node gets it, as it is.
            if let Some(node) = self.peer_of_via(&top) {
                self.relay_to_peer(&resp, node);
                return;
            }
            // §18.1.2: a response whose top Via is not ours is discarded.
            self.counters.dropped += 1;
            return;
        }
        let branch = top
            .params
            .get("branch")
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
            .to_string();
        let Some(status) = resp.status() else {
            self.counters.dropped += 1;
            return;
        };
        if self.own.find(&branch).is_some() {
            self.on_own_response(&branch, resp, now);
            return;
        }
        // RFC 3261 §17.1.3: the branch and the CSeq method must both match (a CANCEL shares its
        // INVITE's branch; its responses are recognised below).
        let method_matches = |c: &ClientTx| {
            let (Ok(sent), Ok(got)) = (c.request.cseq(), resp.cseq()) else {
                return false;
            };
            sent.method == got.method || got.method == Method::Cancel
        };
        let Some(client) = self
            .clients
            .get_by_mut(&branch)
            .filter(|c| method_matches(c))
        else {
            if branch.starts_with(OWN_BRANCH_PREFIX) {
                // A response to a request of ours this node no longer holds: never forwarded
                // (the Via below ours is the party's own); a 2xx to a re-INVITE is ACKed.
                if (200..300).contains(&status) {
                    self.ack_own_2xx_from_dialog(&resp, now);
                }
                return;
            }
            if self.answer_stateless(&resp, status, &branch, now) {
                return;
            }
            tracing::debug!(call_id = ?resp.call_id().ok(), %branch, status, "response without a client transaction: forwarded by its Via");
            self.forward_response_stateless(&resp, now);
            return;
        };
        let is_cancel_response = resp.cseq().is_ok_and(|c| c.method == Method::Cancel);
        if is_cancel_response {
            // The 200 to our CANCEL ends nothing; the INVITE's 487 will follow.
            return;
        }
        if (100..200).contains(&status) && status > 100 {
            client.provisional_received = true;
        }
        if status >= 100 {
            client.failover_deadline = None;
        }
        let result = match &mut client.machine {
            ClientMachine::Invite(m) => m.handle_response(now, status),
            ClientMachine::NonInvite(m) => m.handle_response(now, status),
        };
        if result.is_err() {
            self.counters.dropped += 1;
            return;
        }
        let cancel_now = client.cancel_pending && client.provisional_received;
        // Keep the response for the TU actions drained below.
        self.pending_response = Some(resp);
        self.drain_client(&branch, now);
        self.pending_response = None;
        if cancel_now {
            self.cancel_branch(&branch, now);
        }
    }

    /// Forwards a response with no client transaction by its next Via (§16.7 is skipped). A
    /// failure that ends the initial INVITE of a call held here (the INVITE another node
    /// forwarded) deletes the call's relay session, as the transaction would have.
    pub(in crate::node) fn forward_response_stateless(&mut self, resp: &Message, now: Instant) {
        self.counters.stateless_responses += 1;
        let final_to_invite = resp.status().is_some_and(|s| s >= 200)
            && resp.cseq().is_ok_and(|c| c.method == Method::Invite);
        if let (true, Ok(call_id)) = (final_to_invite, resp.call_id()) {
            // The INVITE another start of the node forwarded has its answer.
            let initial = !self.calls.invite_branches(call_id).is_empty();
            if !self.calls.has_open_offer(call_id) {
                self.calls.invite_done(call_id);
            }
            let failed = resp.status().is_some_and(|s| s >= 300);
            if initial && failed && self.calls.confirmed(call_id).is_none() {
                let call_id = call_id.to_string();
                self.calls.update_dialogs(&call_id, |d| d.drop_early());
                self.delete_media(&call_id, now);
            }
        }
        let popped = resp.edit().pop_via().finish_message();
        let Ok(popped) = popped else {
            self.counters.dropped += 1;
            return;
        };
        let Ok(next) = popped.top_via() else {
            self.counters.dropped += 1;
            return;
        };
        let (Some(destination), Some(transport)) =
            (via::response_destination(&next), via::via_transport(&next))
        else {
            self.counters.dropped += 1;
            return;
        };
        self.out.push_back(Transmit {
            data: popped.bytes(),
            destination,
            transport,
            local: None,
        });
    }

    /// The TU's handling of a response received on a client branch (§16.7).
    pub(super) fn on_branch_response(&mut self, branch: &str, status: u16, now: Instant) {
        let Some(resp) = self.pending_response.clone() else {
            return;
        };
        let Some(client) = self.clients.get_by(branch) else {
            return;
        };
        let key = client.server;
        let abandoned = client.abandoned;
        let Ok(popped) = resp.edit().pop_via().finish_message() else {
            return;
        };
        let popped = self.restore_cseq(key, popped);
        self.track_dialog(key, &popped, now);
        if (101..300).contains(&status) {
            if let (Some(c), Ok(call_id)) = (self.clients.get_by(branch), popped.call_id()) {
                let tag = tag_of(popped.to());
                let (destination, transport) = (c.destination, c.transport);
                self.calls
                    .update_dialogs(call_id, |d| d.set_callee_hop(&tag, destination, transport));
            }
        }
        match status {
            100 => {}
            101..=199 => {
                if !abandoned && !self.start_answer(key, branch, status, &popped, now) {
                    self.forward_response_upstream(key, status, popped.bytes(), now);
                }
            }
            200..=299 => {
                if let Some(c) = self.clients.get_by_mut(branch) {
                    c.completed = true;
                }
                if let Some(s) = self.servers.get_mut(key) {
                    s.succeeded = true;
                }
                // Every 2xx to an INVITE is forwarded, also on a cancelled branch (§16.7 step 5).
                if self.servers.get(key).is_some() {
                    if !self.start_answer(key, branch, status, &popped, now) {
                        self.forward_response_upstream(key, status, popped.bytes(), now);
                    }
                    // §16.7 step 10: the other branches of a fork are cancelled.
                    self.cancel_other_branches(key, branch, now);
                } else {
                    self.forward_response_stateless(&resp, now);
                }
            }
            _ => {
                // A fork branch that failed gives up its relay session.
                if let Ok(call_id) = popped.call_id() {
                    let call_id = call_id.to_string();
                    self.drop_fork(&call_id, branch, now);
                }
                let cancelled = self.servers.get(key).is_some_and(|s| s.cancelled);
                if abandoned && !cancelled && self.superseded(key) {
                    return;
                }
                self.branch_failed(key, branch, status, popped.bytes(), false, now);
            }
        }
    }

    /// A branch ended without a 2xx: a final response (`body` holds it), or a timeout or
    /// transport error (`timed_out`; `body` empty: the proxy answers itself if it is chosen).
    /// Serial sets move on per the failover policy; a fork waits for its other branches; then
    /// the best response goes upstream (§16.7 steps 4–6).
    pub(super) fn branch_failed(
        &mut self,
        key: ServerId,
        branch: &str,
        status: u16,
        body: Bytes,
        timed_out: bool,
        now: Instant,
    ) {
        if let Some(c) = self.clients.get_by_mut(branch) {
            c.completed = true;
        }
        let Some(server) = self.servers.get_mut(key) else {
            return;
        };
        let better = match &server.best {
            None => true,
            Some((best, _)) => better_response(status, *best),
        };
        if better {
            server.best = Some((status, body));
        }
        let policy = server.failover.clone();
        let parallel = policy.as_ref().is_some_and(|p| p.parallel);
        let retry = !parallel
            && !server.cancelled
            && status < 600
            && !server.remaining.is_empty()
            && policy
                .as_ref()
                .is_some_and(|p| p.retries(status) || (timed_out && p.on_timeout));
        if retry {
            self.try_next_target(key, now);
            return;
        }
        if parallel && status >= 600 {
            // A 6xx ends the search: no other branch may succeed (§16.7 step 5).
            self.cancel_other_branches(key, branch, now);
        } else if self.pending_branches(key) > 0 {
            return;
        }
        if let Some((best, body)) = self.servers.get_mut(key).and_then(|s| s.best.take()) {
            self.forward_response_upstream(key, best, body, now);
        }
    }

    /// Whether the failure of a branch given up (failover, Timer C, the losers of a fork) no
    /// longer concerns its request: the request has its final response, a branch got a 2xx
    /// (whose forwarding may wait for the relay's answer), or it went on to another target (a
    /// live branch, targets left, or one being resolved). A branch cancelled by Timer C was
    /// replaced by nothing: its 487 (or timeout) is the request's answer (§16.8).
    fn superseded(&self, key: ServerId) -> bool {
        let Some(server) = self.servers.get(key) else {
            return true;
        };
        server.final_status.is_some()
            || server.succeeded
            || !server.remaining.is_empty()
            || self.pending_branches(key) > 0
            || self.waiting_for_resolution.values().any(|k| *k == key)
    }

    /// Branches of a request still waiting for a final response.
    pub(super) fn pending_branches(&self, key: ServerId) -> usize {
        self.servers.get(key).map_or(0, |s| {
            s.branches
                .iter()
                .filter_map(|b| self.clients.get_by(b))
                .filter(|c| !c.completed && !c.abandoned)
                .count()
        })
    }

    pub(super) fn cancel_other_branches(&mut self, key: ServerId, except: &str, now: Instant) {
        let Some(server) = self.servers.get_mut(key) else {
            return;
        };
        server.remaining.clear();
        let others: Vec<String> = server
            .branches
            .iter()
            .filter(|b| b.as_str() != except)
            .cloned()
            .collect();
        for b in others {
            if self.clients.get_by(&b).is_some_and(|c| !c.completed) {
                self.cancel_branch(&b, now);
            }
        }
    }

    pub(super) fn on_failover_timeout(&mut self, branch: &str, now: Instant) {
        let Some(client) = self.clients.get_by_mut(branch) else {
            return;
        };
        client.failover_deadline = None;
        let key = client.server;
        let has_more = self
            .servers
            .get(key)
            .is_some_and(|s| !s.remaining.is_empty() && !s.cancelled && s.final_status.is_none());
        if has_more {
            tracing::info!(%branch, "no response from destination; trying the next one");
            if let Some(c) = self.clients.get_by_mut(branch) {
                c.abandoned = true;
            }
            self.try_next_target(key, now);
        }
    }

    /// A client branch failed without a response (Timer B/F, Timer C, transport error).
    pub(super) fn on_branch_failure(&mut self, branch: &str, status: u16, now: Instant) {
        let Some(client) = self.clients.get_by(branch) else {
            return;
        };
        let key = client.server;
        let cancelled = self.servers.get(key).is_some_and(|s| s.cancelled);
        if client.abandoned && !cancelled && self.superseded(key) {
            // Given up for the next target, which answers instead.
            return;
        }
        // A CANCELled branch that never answered (no 487 will come): it stands for a 487, so
        // the INVITE still ends in a final response.
        let status = if cancelled { 487 } else { status };
        self.branch_failed(key, branch, status, Bytes::new(), true, now);
    }

    /// Sends a response (already without our Via) upstream through the server transaction.
    /// An empty `body` means: generate the response ourselves with this status.
    pub(super) fn forward_response_upstream(
        &mut self,
        key: ServerId,
        status: u16,
        data: Bytes,
        now: Instant,
    ) {
        if status >= 300 {
            // A failed initial INVITE ends the call's media (a failed re-INVITE does not).
            let failed_call = self.servers.get(key).and_then(|s| {
                let initial = s.request.to().ok().and_then(|t| t.tag()).is_none();
                (initial && s.request.method() == Some(Method::Invite))
                    .then(|| s.request.call_id().ok().map(str::to_string))
                    .flatten()
            });
            if let Some(call_id) = failed_call {
                self.delete_media(&call_id, now);
            }
        }
        if data.is_empty() {
            self.respond(key, status, default_reason(status), now);
            return;
        }
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let result = match &mut tx.machine {
            ServerMachine::Invite(m) => m.send_response(now, status),
            ServerMachine::NonInvite(m) => m.send_response(now, status),
        };
        if result.is_err() {
            // E.g. a second 2xx after the first: forward it statelessly (§16.7 step 5).
            if (200..300).contains(&status) {
                self.send_upstream(key, data);
            }
            return;
        }
        tx.last_response = Some(data);
        if status >= 200 && tx.final_status.is_none() {
            tx.final_status = Some(status);
            if let Some(call_id) = offer_call_id(&tx.request) {
                self.offer_closed(&call_id);
            }
        }
        self.drain_server(key, now);
    }

    /// The proxy's own response on a server transaction.
    pub(super) fn respond(&mut self, key: ServerId, status: u16, reason: &str, now: Instant) {
        if status == 503 {
            // Every 503 of ours says when to come back (RFC 3261 §21.5.4).
            let retry = self.config.overload.retry_after_s.to_string();
            self.respond_with(key, status, reason, &[("Retry-After", &retry)], now);
        } else {
            self.respond_with(key, status, reason, &[], now);
        }
    }

    /// An INVITE or UPDATE of the call got its final response (or its transaction ended).
    pub(super) fn offer_closed(&mut self, call_id: &str) {
        self.calls.close_offer(call_id);
        if !self.calls.has_open_offer(call_id) {
            // The initial INVITE has its final response: no CANCEL will follow its branches.
            self.calls.invite_done(call_id);
        }
    }

    /// [`Proxy::respond`] with extra header fields.
    pub(super) fn respond_with(
        &mut self,
        key: ServerId,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
        now: Instant,
    ) {
        let branch = self
            .servers
            .key_of(key)
            .map(|k| k.branch.clone())
            .unwrap_or_default();
        let branch_hash_input = branch.as_bytes();
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let to_tag = format!(
            "{:016x}",
            via::Fnv::default().feed(branch_hash_input).finish()
        );
        let mut builder = tx.request.response(status, reason).to_tag(&to_tag);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let built = builder.build().map(|m| m.bytes());
        let Ok(data) = built else {
            return;
        };
        if status >= 300 {
            self.counters.rejected += 1;
        }
        self.forward_response_upstream(key, status, data, now);
    }

    pub(super) fn send_upstream(&mut self, key: ServerId, data: Bytes) {
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        let destination = upstream_destination(&tx.request, tx.source, tx.transport);
        self.out.push_back(Transmit {
            data,
            destination,
            transport: tx.transport,
            local: Some(tx.local),
        });
    }
}
