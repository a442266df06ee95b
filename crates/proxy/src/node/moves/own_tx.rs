//! The proxy's own in-dialog requests (RFC 3261 §12.2.1.1): re-INVITEs and BYEs it sends
//! impersonating the other party, on RFC 3261 §17.1 client transactions of their own (`OwnTx`),
//! the ACK of their 2xx (§13.2.2.4, sent again for every retransmitted 2xx), and the 491
//! back-off (§14.1).

use std::time::Instant;

use anchorage_sip::{Message, Method};
use bytes::Bytes;

use crate::dialog::Dialog;
use crate::reanchor::{build_request, leg_target, OwnRequest, Party};
use crate::transaction::{Action, ClientInvite, ClientNonInvite};
use crate::Transport;

use crate::node::io::Transmit;
use crate::node::timers::TimerRef;
use crate::node::{next_random, Proxy};

/// The start of the Via branch of every request the proxy sends itself (re-INVITEs, BYEs and
/// their ACKs): any node recognises a response to one after a restart; the node id follows.
pub(in crate::node) const OWN_BRANCH_PREFIX: &str = "z9hG4bK-anc-own-";

/// One of the proxy's own requests, once stored (found by its branch when a response arrives).
pub(in crate::node) type OwnId = crate::node::slab::Id<OwnTx>;

/// A request the proxy sent itself into a dialog.
pub(in crate::node) struct OwnTx {
    pub(in crate::node) machine: OwnMachine,
    pub(in crate::node) request: Message,
    pub(in crate::node) destination: std::net::SocketAddr,
    pub(in crate::node) transport: Transport,
    pub(in crate::node) local: Option<std::net::SocketAddr>,
    pub(in crate::node) call_id: String,
    pub(in crate::node) party: Party,
    /// The ACK sent for its 2xx, sent again for every retransmitted 2xx.
    pub(in crate::node) ack: Option<Transmit>,
    pub(in crate::node) scheduled: Option<Instant>,
}

pub(in crate::node) enum OwnMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

impl Proxy {
    /// Sends the re-INVITE with the new node's SDP to `party`, impersonating the other party.
    pub(in crate::node) fn send_reinvite(&mut self, call_id: &str, party: Party, now: Instant) {
        let Some(sdp) = self
            .calls
            .moving(call_id)
            .and_then(|m| m.sdp_for(party).cloned())
        else {
            return;
        };
        if self
            .send_own_request(call_id, party, Method::Invite, Some(&sdp), now)
            .is_none()
        {
            self.leg_finished(call_id, party, Err(481), now);
            return;
        }
        if let Some(m) = self.calls.moving_mut(call_id) {
            m.leg_sent(party);
        }
    }

    /// Builds and sends a request of our own to `party` of the call's confirmed dialog, with
    /// the next renumbered CSeq. Returns its branch.
    pub(in crate::node) fn send_own_request(
        &mut self,
        call_id: &str,
        party: Party,
        method: Method<'static>,
        sdp: Option<&Bytes>,
        now: Instant,
    ) -> Option<String> {
        let ours = self.ours.clone();
        let is_us = |value: &str| crate::via::route_is_ours(value, &ours);
        let dialog: &mut Dialog = self.calls.confirmed_mut(call_id)?;
        let target = leg_target(dialog, party, is_us)?;
        let cseq = match party {
            Party::Callee => dialog.next_cseq_to_callee(),
            Party::Caller => dialog.next_cseq_to_caller(),
        };
        let (from, to, contact) = match party {
            Party::Callee => (
                dialog.caller_identity.clone(),
                dialog.callee_identity.clone(),
                dialog.caller.remote_target.clone(),
            ),
            Party::Caller => (
                dialog.callee_identity.clone(),
                dialog.caller_identity.clone(),
                dialog.callee.remote_target.clone(),
            ),
        };
        let listener = self
            .listener_for(target.transport, target.destination, target.destination)
            .and_then(|i| self.config.listeners.get(i))?
            .clone();
        let branch = self.own_branch();
        let via = format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            listener.transport.via_token(),
            listener.advertise_host,
            listener.advertise_port
        );
        let request = build_request(&OwnRequest {
            method,
            call_id,
            from: &from,
            to: &to,
            contact: contact.as_deref(),
            cseq,
            via: &via,
            target: &target,
            sdp,
        })
        .ok()?;
        let reliable = target.transport.is_reliable();
        let machine = if method == Method::Invite {
            OwnMachine::Invite(ClientInvite::new(now, reliable, &self.config.timers))
        } else {
            OwnMachine::NonInvite(ClientNonInvite::new(now, reliable, &self.config.timers))
        };
        tracing::debug!(%call_id, party = party.as_str(), cseq, method = method.as_str(), "sending our own in-dialog request");
        self.own.insert(
            branch.clone(),
            OwnTx {
                machine,
                request,
                destination: target.destination,
                transport: target.transport,
                local: Some(listener.local),
                call_id: call_id.to_string(),
                party,
                ack: None,
                scheduled: None,
            },
        );
        self.drain_own(&branch, None, now);
        Some(branch)
    }

    /// A fresh Via branch for a request of our own: [`OWN_BRANCH_PREFIX`], this node's id,
    /// a counter and a random part.
    pub(in crate::node) fn own_branch(&mut self) -> String {
        self.own_counter += 1;
        let node: String = self
            .config
            .node_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(32)
            .collect();
        format!(
            "{OWN_BRANCH_PREFIX}{node}-{:x}{:08x}",
            self.own_counter,
            next_random(&mut self.rng_state, u32::MAX)
        )
    }

    /// A 2xx to a re-INVITE of ours whose transaction this node does not hold (it restarted,
    /// or the transaction ended and the party retransmits): ACKed from the call's dialog
    /// (RFC 3261 §13.2.2.4: the 2xx's CSeq number, the party's route set, its Contact as the
    /// Request-URI), so the party does not retransmit for 32 s and hang up.
    pub(in crate::node) fn ack_own_2xx_from_dialog(&mut self, resp: &Message, now: Instant) {
        let (Ok(call_id), Ok(cseq)) = (resp.call_id(), resp.cseq()) else {
            return;
        };
        if cseq.method != Method::Invite {
            return;
        }
        let Some(to_tag) = resp.to().ok().and_then(|t| t.tag()) else {
            return;
        };
        let ours = self.ours.clone();
        let is_us = |value: &str| crate::via::route_is_ours(value, &ours);
        let Some(dialog) = self.calls.confirmed(call_id) else {
            tracing::debug!(%call_id, "2xx to a request of ours for a call this node does not hold");
            return;
        };
        let party = if to_tag == dialog.id.callee_tag {
            Party::Callee
        } else {
            Party::Caller
        };
        let Some(mut target) = leg_target(dialog, party, is_us) else {
            return;
        };
        if let Some(Ok(anchorage_sip::Contact::Address(a))) = resp.contacts().next() {
            target.request_uri = String::from_utf8_lossy(a.uri_raw).into_owned();
        }
        let header = |name| {
            resp.header(name)
                .map(|h| String::from_utf8_lossy(h.value()).trim().to_string())
        };
        let (Some(from), Some(to)) = (
            header(anchorage_sip::HeaderName::From),
            header(anchorage_sip::HeaderName::To),
        ) else {
            return;
        };
        let Some(listener) = self
            .listener_for(target.transport, target.destination, target.destination)
            .and_then(|i| self.config.listeners.get(i))
            .cloned()
        else {
            return;
        };
        let via = format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            listener.transport.via_token(),
            listener.advertise_host,
            listener.advertise_port,
            self.own_branch()
        );
        let Ok(ack) = build_request(&OwnRequest {
            method: Method::Ack,
            call_id,
            from: &from,
            to: &to,
            contact: None,
            cseq: cseq.seq,
            via: &via,
            target: &target,
            sdp: None,
        }) else {
            return;
        };
        tracing::info!(%call_id, party = party.as_str(), cseq = cseq.seq, "2xx to a re-INVITE of ours without its transaction: ACKed from the dialog");
        self.out.push_back(Transmit {
            data: ack.bytes(),
            destination: target.destination,
            transport: target.transport,
            local: Some(listener.local),
        });
        // A move taken over from a node that died: this is the party's answer to its
        // re-INVITE (the one this node may have sent since has its own transaction).
        let awaited = self
            .calls
            .moving(call_id)
            .is_some_and(|m| m.is_taken_over() && m.awaits_leg(party));
        if awaited {
            let call_id = call_id.to_string();
            self.leg_finished(&call_id, party, Ok(resp.body_bytes()), now);
        }
    }

    /// A response to one of our own requests (its Via branch is in `own`).
    pub(in crate::node) fn on_own_response(&mut self, branch: &str, resp: Message, now: Instant) {
        let Some(status) = resp.status() else {
            return;
        };
        let Some(tx) = self.own.get_by_mut(branch) else {
            return;
        };
        let result = match &mut tx.machine {
            OwnMachine::Invite(m) => m.handle_response(now, status),
            OwnMachine::NonInvite(m) => m.handle_response(now, status),
        };
        if result.is_err() {
            return;
        }
        self.drain_own(branch, Some(&resp), now);
    }

    pub(in crate::node) fn drain_own(
        &mut self,
        branch: &str,
        resp: Option<&Message>,
        now: Instant,
    ) {
        loop {
            let Some(tx) = self.own.get_by_mut(branch) else {
                return;
            };
            let action = match &mut tx.machine {
                OwnMachine::Invite(m) => m.poll_action(),
                OwnMachine::NonInvite(m) => m.poll_action(),
            };
            let Some(action) = action else {
                break;
            };
            let send = Transmit {
                data: tx.request.bytes(),
                destination: tx.destination,
                transport: tx.transport,
                local: tx.local,
            };
            let (call_id, party) = (tx.call_id.clone(), tx.party);
            let is_invite = matches!(tx.machine, OwnMachine::Invite(_));
            match action {
                Action::SendRequest | Action::RetransmitRequest => self.out.push_back(send),
                Action::SendAck => {
                    if let Some(ack) =
                        resp.and_then(|r| tx.request.ack(r, None).ok().map(|m| m.bytes()))
                    {
                        self.out.push_back(Transmit { data: ack, ..send });
                    }
                }
                Action::PassResponseToTu(status) => {
                    if !is_invite || status < 200 {
                        continue;
                    }
                    if (200..300).contains(&status) {
                        // ACK every 2xx, the same ACK again for a retransmission.
                        if tx.ack.is_none() {
                            let ack = resp.and_then(|r| self.build_2xx_ack(branch, r));
                            if let Some(tx) = self.own.get_by_mut(branch) {
                                tx.ack = ack;
                            }
                        }
                        if let Some(ack) = self.own.get_by(branch).and_then(|t| t.ack.clone()) {
                            self.out.push_back(ack);
                        }
                        let answer = resp.map(Message::body_bytes).unwrap_or_default();
                        self.leg_finished(&call_id, party, Ok(answer), now);
                    } else {
                        self.leg_finished(&call_id, party, Err(status), now);
                    }
                }
                Action::Timeout(_) if is_invite => {
                    self.leg_finished(&call_id, party, Err(408), now);
                }
                Action::TransportError if is_invite => {
                    self.leg_finished(&call_id, party, Err(503), now);
                }
                Action::Terminated => {
                    self.own.remove_by(branch);
                    return;
                }
                _ => {}
            }
        }
        self.schedule_own(branch);
    }

    pub(in crate::node) fn schedule_own(&mut self, branch: &str) {
        let Some(tx) = self.own.get_by_mut(branch) else {
            return;
        };
        let next = match &tx.machine {
            OwnMachine::Invite(m) => m.poll_timeout(),
            OwnMachine::NonInvite(m) => m.poll_timeout(),
        };
        if let Some(at) = next {
            if tx.scheduled != Some(at) {
                tx.scheduled = Some(at);
                if let Some(id) = self.own.find(branch) {
                    self.timers.push(at, TimerRef::Own(id));
                }
            }
        }
    }

    /// Fires the timers of one of our own transactions.
    pub(in crate::node) fn own_timeout(&mut self, branch: &str, now: Instant) {
        let Some(tx) = self.own.get_by_mut(branch) else {
            return;
        };
        tx.scheduled = None;
        match &mut tx.machine {
            OwnMachine::Invite(m) => m.handle_timeout(now),
            OwnMachine::NonInvite(m) => m.handle_timeout(now),
        }
        self.drain_own(branch, None, now);
    }

    /// The ACK for a 2xx to our re-INVITE (§13.2.2.4): a new transaction-less request with
    /// the INVITE's CSeq number, Route set and Request-URI, and a fresh branch.
    pub(in crate::node) fn build_2xx_ack(
        &mut self,
        branch: &str,
        resp: &Message,
    ) -> Option<Transmit> {
        let tx = self.own.get_by(branch)?;
        // A transaction of its own (§13.2.2.4): our Via with a branch of its own.
        let via = std::str::from_utf8(
            tx.request
                .header(anchorage_sip::HeaderName::Via)?
                .values()
                .next()?,
        )
        .ok()?
        .replace(branch, &format!("{branch}a"));
        let ack = tx.request.ack(resp, Some(&via)).ok()?;
        Some(Transmit {
            data: ack.bytes(),
            destination: tx.destination,
            transport: tx.transport,
            local: tx.local,
        })
    }
}
