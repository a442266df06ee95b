//! RFC 3264 offer/answer through the relay: where an SDP offer or answer is found (the request,
//! a response to a request without SDP — RFC 3264 §5 —, the ACK, a reliable provisional and its
//! PRACK — RFC 3262 §5 —, an UPDATE — RFC 3311) and the ng request each one becomes. The
//! message waits in a `MediaWait` until the relay's rewrite comes back (`relay_replies.rs`).

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{Message, Method};

use crate::media::{self, NodeId, Policy};
use crate::routing::RequestFacts;

use crate::node::anchoring::{carries_sdp, tag_of, MediaWait};
use crate::node::io::Datagram;
use crate::node::transactions::ServerId;
use crate::node::Proxy;

impl Proxy {
    /// Sends the SDP offer of a request to its relay, if its call is (or must be) anchored;
    /// the request waits for the reply. Returns whether it waits.
    pub(in crate::node) fn start_offer(
        &mut self,
        key: ServerId,
        req: &Message,
        source: SocketAddr,
        now: Instant,
    ) -> bool {
        if !carries_sdp(req)
            || !matches!(
                req.method(),
                Some(Method::Invite | Method::Update | Method::Prack)
            )
        {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let from_tag = req
            .from()
            .ok()
            .and_then(|f| f.tag())
            .unwrap_or("")
            .to_string();
        let to_tag = req.to().ok().and_then(|t| t.tag()).map(str::to_string);
        if let Some(call) = self.calls.media(call_id).cloned() {
            if req.method() == Some(Method::Prack) && call.answer_in_prack {
                // The answer to a late offer made in a reliable 1xx: its from-tag is the
                // offerer's, the PRACK's To.
                let request = media::offer_answer(
                    true,
                    call_id,
                    &tag_of(req.to()),
                    Some(&from_tag),
                    req.body_bytes(),
                    &call.policy.callee_flags,
                )
                .rtpproxy(&call.policy.callee_rtpproxy);
                if let Some(c) = self.calls.media_mut(call_id) {
                    c.answer_in_prack = false;
                }
                return self.send_reoffer(key, call.node, call.policy, &request, now);
            }
            // A new offer in an anchored call, from either side (a callee's offer carries its
            // own tag as from-tag).
            let (flags, letters) = if from_tag == call.caller_tag {
                (&call.policy.callee_flags, &call.policy.callee_rtpproxy)
            } else {
                (&call.policy.caller_flags, &call.policy.caller_rtpproxy)
            };
            let request = media::offer_answer(
                false,
                call_id,
                &from_tag,
                to_tag.as_deref(),
                req.body_bytes(),
                flags,
            )
            .rtpproxy(letters);
            return self.send_reoffer(key, call.node, call.policy, &request, now);
        }
        // An initial offer; or an offer in a dialog this node does not know (another proxy
        // node set the call up and this one took over its address): it is anchored as a new
        // call rather than let through, so media never goes direct by accident.
        let Some(policy) = self.policy_for(req, source) else {
            return false;
        };
        if to_tag.is_some() {
            tracing::info!(%call_id, "anchoring an offer in a dialog this node did not set up");
        }
        self.send_offer(key, req, policy, Vec::new(), now);
        true
    }

    /// Sends an offer in an anchored call to the node holding it; the request of `key` waits
    /// for the reply. Returns whether it was sent.
    pub(in crate::node) fn send_reoffer(
        &mut self,
        key: ServerId,
        node: NodeId,
        policy: Policy,
        request: &crate::media::MediaRequest,
        now: Instant,
    ) -> bool {
        let Some(id) = self.relays.send(node, request, now) else {
            return false;
        };
        let wait = MediaWait::Offer {
            key,
            policy,
            tried: vec![node],
            initial: false,
        };
        self.media_waits.insert((node, id), wait);
        true
    }

    /// The media policy of an initial request: its rule's, else the default.
    pub(in crate::node) fn policy_for(&self, req: &Message, source: SocketAddr) -> Option<Policy> {
        let uri = req.request_uri().ok();
        let sip = uri.as_ref().and_then(|u| u.as_sip());
        let domain = sip.map(|s| s.host.to_string());
        let facts = RequestFacts {
            method: req.method().map(|m| m.as_str()).unwrap_or(""),
            user: sip.and_then(|s| s.user),
            domain: domain.as_deref(),
            source: source.ip(),
        };
        match self.config.router.media_for(&facts) {
            Some(Some(rule_policy)) => Policy::of(&rule_policy),
            _ => Policy::of(&self.config.default_media),
        }
    }

    /// Sends an initial offer to the least loaded node of the policy's set not yet tried, or
    /// answers 503 when none is left (never falls back to direct media).
    pub(in crate::node) fn send_offer(
        &mut self,
        key: ServerId,
        req: &Message,
        policy: Policy,
        tried: Vec<NodeId>,
        now: Instant,
    ) {
        let Some(node) = self.relays.pick_for(&policy, &tried) else {
            let reason = if self.relays.has_live_node_for(&policy) {
                "Media Relays Busy"
            } else {
                "No Media Relay Available"
            };
            // Why RTPProxy nodes were passed over, if they were.
            let unfit = policy.rtpproxy_unfit.as_deref().unwrap_or("");
            tracing::warn!(call_id = ?req.call_id().ok(), set = %policy.set, reason, rtpproxy_unfit = unfit, "no media relay can take the call");
            self.respond(key, 503, reason, now);
            return;
        };
        let Ok(call_id) = req.call_id() else {
            // Never reached: a request without a Call-ID does not pass validation.
            self.respond(key, 400, "Missing Call-ID", now);
            return;
        };
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        let request = media::offer_answer(
            false,
            call_id,
            from_tag,
            None,
            req.body_bytes(),
            &policy.callee_flags,
        )
        .rtpproxy(&policy.callee_rtpproxy);
        if let Some(id) = self.relays.send(node, &request, now) {
            let mut tried = tried;
            tried.push(node);
            let wait = MediaWait::Offer {
                key,
                policy,
                tried,
                initial: true,
            };
            self.media_waits.insert((node, id), wait);
        }
    }

    /// Sends the SDP answer of a response to the call's relay; the response waits for the
    /// reply. Returns whether it waits.
    pub(in crate::node) fn start_answer(
        &mut self,
        key: ServerId,
        branch: &str,
        status: u16,
        response: &Message,
        now: Instant,
    ) -> bool {
        if !carries_sdp(response) {
            return false;
        }
        let Some(server) = self.servers.get(key) else {
            return false;
        };
        let req = &server.request;
        if !matches!(
            req.method(),
            Some(Method::Invite | Method::Update | Method::Prack)
        ) {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        if !carries_sdp(req) {
            // An offer in a response: to an INVITE or UPDATE without SDP (RFC 3264 §5). A
            // PRACK's response never carries an offer.
            if req.method() == Some(Method::Prack) {
                return false;
            }
            return self.start_response_offer(key, status, response, now);
        }
        let Some(call) = self.calls.media(call_id).cloned() else {
            return false;
        };
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        let to_tag = response.to().ok().and_then(|t| t.tag());
        // The answer goes back to whoever made the offer.
        let (flags, letters) = if from_tag == call.caller_tag {
            (&call.policy.caller_flags, &call.policy.caller_rtpproxy)
        } else {
            (&call.policy.callee_flags, &call.policy.callee_rtpproxy)
        };
        let request = media::offer_answer(
            true,
            call_id,
            from_tag,
            to_tag,
            response.body_bytes(),
            flags,
        )
        .rtpproxy(letters);
        // A fork branch answers on its own relay session; its 2xx ends the other branches'.
        let call_id = call_id.to_string();
        let call_id = call_id.as_str();
        let fork = self.fork_of(call_id, branch);
        let request = match &fork {
            Some(via_branch) => media::on_branch(request, via_branch),
            None => request,
        };
        if let (Some(winner), true) = (&fork, (200..300).contains(&status)) {
            self.settle_forks(call_id, winner, now);
        }
        match self.relays.send(call.node, &request, now) {
            Some(id) => {
                let wait = MediaWait::Answer {
                    key,
                    status,
                    response: Box::new(response.clone()),
                };
                self.media_waits.insert((call.node, id), wait);
                true
            }
            None => false,
        }
    }

    /// A late offer (RFC 3264 §5: a request without SDP, the offer in its response): sent to
    /// the call's relay — or, for an initial INVITE, to a node chosen by its policy — with the
    /// responder as offerer. The response waits; the answer will come in the ACK.
    pub(in crate::node) fn start_response_offer(
        &mut self,
        key: ServerId,
        status: u16,
        response: &Message,
        now: Instant,
    ) -> bool {
        let Some(server) = self.servers.get(key) else {
            return false;
        };
        let (req, source) = (server.request.clone(), server.source);
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let offerer = tag_of(response.to());
        let requester = tag_of(req.from());
        let (node, policy, initial) = match self.calls.media(call_id) {
            Some(c) => (c.node, c.policy.clone(), false),
            None => {
                if req.to().ok().and_then(|t| t.tag()).is_some() {
                    return false;
                }
                let Some(policy) = self.policy_for(&req, source) else {
                    return false;
                };
                let Some(node) = self.relays.pick_for(&policy, &[]) else {
                    return false;
                };
                (node, policy, true)
            }
        };
        // The SDP produced goes to the requester.
        let caller_is_requester = self
            .calls
            .media(call_id)
            .is_none_or(|c| c.caller_tag == requester);
        let (flags, letters) = if caller_is_requester {
            (&policy.caller_flags, &policy.caller_rtpproxy)
        } else {
            (&policy.callee_flags, &policy.callee_rtpproxy)
        };
        let request =
            media::offer_answer(false, call_id, &offerer, None, response.body_bytes(), flags)
                .rtpproxy(letters);
        match self.relays.send(node, &request, now) {
            Some(id) => {
                let wait = MediaWait::ResponseOffer {
                    key,
                    status,
                    response: Box::new(response.clone()),
                    policy,
                    initial,
                };
                self.media_waits.insert((node, id), wait);
                true
            }
            None => false,
        }
    }

    /// An ACK carrying the answer to a late offer: sent to the relay; the ACK waits.
    pub(in crate::node) fn start_ack_answer(
        &mut self,
        ack: &Message,
        d: &Datagram,
        now: Instant,
    ) -> bool {
        if !carries_sdp(ack) {
            return false;
        }
        let Ok(call_id) = ack.call_id() else {
            return false;
        };
        let Some(call) = self.calls.media(call_id).filter(|c| c.answer_in_ack) else {
            return false;
        };
        let (node, flags, letters) = (
            call.node,
            call.policy.callee_flags.clone(),
            call.policy.callee_rtpproxy.clone(),
        );
        // The offer came from the ACK's To party; the ACK's sender answers.
        let request = media::offer_answer(
            true,
            call_id,
            &tag_of(ack.to()),
            Some(&tag_of(ack.from())),
            ack.body_bytes(),
            &flags,
        )
        .rtpproxy(&letters);
        match self.relays.send(node, &request, now) {
            Some(id) => {
                let wait = MediaWait::AckAnswer {
                    ack: Box::new(ack.clone()),
                    source: d.source,
                    local: d.local,
                    transport: d.transport,
                };
                self.media_waits.insert((node, id), wait);
                true
            }
            None => false,
        }
    }
}
