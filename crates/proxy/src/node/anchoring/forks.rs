//! A parallel fork with media (RFC 3261 §16.6–16.7, DESIGN.md "forking"): one relay session
//! per branch (ng `via-branch`), so each callee gets its own relay ports; a 2xx settles the
//! fork and deletes the losing branches' sessions.

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{Message, Method};
use bytes::Bytes;

use crate::media::{self, NodeId, Policy};
use crate::routing::Target;

use crate::node::anchoring::{carries_sdp, tag_of, ForkBranch, MediaWait};
use crate::node::transactions::ServerId;
use crate::node::Proxy;

/// A fork branch's relay reply, with what its `MediaWait::ForkOffer` held.
pub(in crate::node) struct ForkWait {
    /// The forked INVITE's server transaction.
    pub(in crate::node) key: ServerId,
    /// The branch's destination.
    pub(in crate::node) target: Target,
    /// The relay session's `via-branch`.
    pub(in crate::node) via_branch: String,
    /// The call's media policy.
    pub(in crate::node) policy: Policy,
    /// The relay's SDP for the branch's callee; `None`: refused or unanswered.
    pub(in crate::node) sdp: Option<Bytes>,
}

impl Proxy {
    /// An initial INVITE with SDP forked in parallel to several targets, with media anchored:
    /// one relay offer per target, each with its own `via-branch`, so each callee gets its own
    /// relay ports; each target is forwarded when its offer is back. Returns whether it did.
    pub(in crate::node) fn start_forked_offers(
        &mut self,
        key: ServerId,
        req: &Message,
        source: SocketAddr,
        now: Instant,
    ) -> bool {
        let Some(tx) = self.servers.get(key) else {
            return false;
        };
        let parallel = tx.failover.as_ref().is_some_and(|f| f.parallel);
        let initial = req.to().ok().and_then(|t| t.tag()).is_none();
        // A fork branch is forwarded straight from its relay reply, so every target must be
        // an address: a set with host names takes the one-session path, which resolves them
        // (RFC 3263) before forwarding.
        if !parallel
            || tx.remaining.len() < 2
            || tx.remaining.iter().any(|t| t.socket_addr().is_none())
            || !initial
            || req.method() != Some(Method::Invite)
            || !carries_sdp(req)
        {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        if self.calls.media(call_id).is_some() {
            return false;
        }
        let Some(policy) = self.policy_for(req, source) else {
            return false;
        };
        let Some(node) = self.relays.pick_for(&policy, &[]) else {
            return false;
        };
        let from_tag = tag_of(req.from());
        let targets: Vec<Target> = match self.servers.get_mut(key) {
            Some(tx) => tx.remaining.drain(..).collect(),
            None => return false,
        };
        for (index, target) in targets.into_iter().enumerate() {
            let via_branch = format!("fork{index}");
            let request = media::on_branch(
                media::offer_answer(
                    false,
                    call_id,
                    &from_tag,
                    None,
                    req.body_bytes(),
                    &policy.callee_flags,
                )
                .rtpproxy(&policy.callee_rtpproxy),
                &via_branch,
            );
            if let Some(id) = self.relays.send(node, &request, now) {
                let wait = MediaWait::ForkOffer {
                    key,
                    target,
                    via_branch,
                    policy: policy.clone(),
                };
                self.media_waits.insert((node, id), wait);
            }
        }
        true
    }

    /// One fork branch's offer came back: the call is anchored (on its first), and the target
    /// gets the INVITE with its own relay SDP. A branch that cannot go on gives up its relay
    /// session; the last one left answers the INVITE (every INVITE ends in a final response).
    pub(in crate::node) fn on_fork_offer(&mut self, node: NodeId, wait: ForkWait, now: Instant) {
        let ForkWait {
            key,
            target,
            via_branch,
            policy,
            sdp,
        } = wait;
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        let request = tx.request.clone();
        let (Ok(call_id), from_tag) = (request.call_id(), tag_of(request.from())) else {
            return;
        };
        let call_id = call_id.to_string();
        let Some(sdp) = sdp else {
            tracing::warn!(%call_id, %via_branch, "relay refused or did not answer a fork branch's offer");
            self.answer_if_no_fork_left(key, 503, "Media Relay Failed", now);
            return;
        };
        if tx.cancelled || tx.final_status.is_some() {
            self.send_media_quietly(
                node,
                &media::delete_branch(&call_id, &from_tag, &via_branch),
                now,
            );
            return;
        }
        if self.calls.media(&call_id).is_none() {
            self.anchor_call(
                &call_id,
                node,
                policy,
                from_tag.clone(),
                Some(request.body_bytes()),
            );
        }
        let session = (call_id.as_str(), from_tag.as_str(), via_branch.as_str());
        let Some(destination) = target.socket_addr() else {
            let why = "the target has no address";
            return self.fork_branch_lost(node, key, session, why, now);
        };
        let rewritten = match request.edit().set_body(sdp.clone()).finish_message() {
            Ok(rewritten) => rewritten,
            Err(e) => {
                let why = format!("the relay's SDP: {e}");
                return self.fork_branch_lost(node, key, session, &why, now);
            }
        };
        match self.forward_request(&rewritten, key, &target, destination, now) {
            Ok(branch) => {
                if let Some(call) = self.calls.media_mut(&call_id) {
                    call.forks.push(ForkBranch {
                        via_branch,
                        client_branch: Some(branch.clone()),
                        sent: Some(sdp),
                    });
                }
                if let Some(tx) = self.servers.get_mut(key) {
                    tx.branches.push(branch.clone());
                }
                self.drain_client(&branch, now);
            }
            Err(why) => {
                let session = (call_id.as_str(), from_tag.as_str(), via_branch.as_str());
                self.fork_branch_lost(node, key, session, &why, now);
            }
        }
    }

    /// A fork branch whose relay offer came back but which cannot be forwarded (`why`): its
    /// relay session (`(call_id, from_tag, via_branch)`) is deleted, and if it was the
    /// request's last chance the INVITE is answered `500 Fork Branch Not Forwarded`.
    fn fork_branch_lost(
        &mut self,
        node: NodeId,
        key: ServerId,
        (call_id, from_tag, via_branch): (&str, &str, &str),
        why: &str,
        now: Instant,
    ) {
        tracing::warn!(%call_id, %via_branch, %why, "cannot forward a fork branch");
        let delete = media::delete_branch(call_id, from_tag, via_branch);
        self.send_media_quietly(node, &delete, now);
        self.answer_if_no_fork_left(key, 500, "Fork Branch Not Forwarded", now);
    }

    /// Answers a forked INVITE with `status reason` when nothing else ever will: no branch was
    /// forwarded, no other fork offer is pending, and no final response went out.
    fn answer_if_no_fork_left(&mut self, key: ServerId, status: u16, reason: &str, now: Instant) {
        let pending = self
            .media_waits
            .values()
            .any(|w| matches!(w, MediaWait::ForkOffer { key: k, .. } if *k == key));
        let stranded = self
            .servers
            .get(key)
            .is_some_and(|tx| tx.branches.is_empty() && tx.final_status.is_none());
        if !pending && stranded {
            self.respond(key, status, reason, now);
        }
    }

    /// A 2xx on fork branch `winner`: the other branches' relay sessions are deleted, and the
    /// callee leg's sent SDP is the winner's.
    pub(in crate::node) fn settle_forks(&mut self, call_id: &str, winner: &str, now: Instant) {
        let Some(call) = self.calls.media_mut(call_id) else {
            return;
        };
        let forks = std::mem::take(&mut call.forks);
        let (node, caller_tag) = (call.node, call.caller_tag.clone());
        if let Some(sent) = forks
            .iter()
            .find(|f| f.via_branch == winner)
            .and_then(|f| f.sent.clone())
        {
            call.callee.record_sent(&sent);
        }
        for fork in forks.into_iter().filter(|f| f.via_branch != winner) {
            tracing::debug!(%call_id, via_branch = %fork.via_branch, "deleting a losing fork branch's relay session");
            let delete = media::delete_branch(call_id, &caller_tag, &fork.via_branch);
            self.send_media_quietly(node, &delete, now);
        }
    }

    /// A fork branch failed: its relay session goes.
    pub(in crate::node) fn drop_fork(&mut self, call_id: &str, branch: &str, now: Instant) {
        let Some(call) = self.calls.media_mut(call_id) else {
            return;
        };
        let Some(at) = call
            .forks
            .iter()
            .position(|f| f.client_branch.as_deref() == Some(branch))
        else {
            return;
        };
        let fork = call.forks.remove(at);
        let (node, caller_tag) = (call.node, call.caller_tag.clone());
        let delete = media::delete_branch(call_id, &caller_tag, &fork.via_branch);
        self.send_media_quietly(node, &delete, now);
    }

    /// The fork branch (its `via-branch`) a response on client branch `branch` belongs to.
    pub(in crate::node) fn fork_of(&self, call_id: &str, branch: &str) -> Option<String> {
        self.calls
            .media(call_id)?
            .forks
            .iter()
            .find(|f| f.client_branch.as_deref() == Some(branch))
            .map(|f| f.via_branch.clone())
    }
}
