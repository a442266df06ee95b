//! The end of one call's move (DESIGN.md "Re-anchoring" steps 5–6 and failures): both legs
//! answered → commit (stored SDPs updated, the old session deleted if its node is alive); a
//! refused leg → roll back to the old node or try another; a party gone (408, 481, no
//! answer) → end the call with a BYE to the other party.

use std::time::Instant;

use anchorage_sip::Method;
use bytes::Bytes;

use crate::media::{self, NodeId};
use crate::reanchor::{
    has_fingerprint, media_changed, offers_new_dtls, other_party_must_know,
    other_party_must_know_when_terminated, sdp_for_leg, MoveResult, Party,
};

use crate::node::anchoring::MediaWait;
use crate::node::moves::{carries_body, CallMove, DURATION_BOUNDS, MAX_ATTEMPTS, RETRY_PAUSE};
use crate::node::Proxy;

impl Proxy {
    /// Both legs answered (`outcomes`: caller, callee): commit, roll back, retry elsewhere or
    /// end the call.
    pub(in crate::node) fn conclude_move(
        &mut self,
        call_id: &str,
        outcomes: [Result<Bytes, u16>; 2],
        now: Instant,
    ) {
        let Some(m) = self.calls.moving(call_id).cloned() else {
            return;
        };
        let Some(new_node) = m.new_node() else {
            return;
        };
        let gone = outcomes.iter().any(|o| matches!(o, Err(408 | 481)));
        if gone {
            tracing::warn!(%call_id, "re-anchoring: a party is gone (408/481/no answer): ending the call");
            self.end_call(call_id, Some(new_node), m.old_node, now);
            self.finish_move(call_id, MoveResult::CallEnded, now);
            return;
        }
        if let [Ok(caller_answer), Ok(callee_answer)] = &outcomes {
            self.commit_move(call_id, &m, new_node, caller_answer, callee_answer, now);
            self.finish_move(call_id, MoveResult::Moved, now);
            return;
        }
        // A leg refused (488 or another error): its media still goes through the old node.
        self.delete_or_orphan(new_node, call_id, now);
        let old_alive = self.relays.is_up(m.old_node);
        if old_alive {
            tracing::warn!(%call_id, ?outcomes, "re-anchoring refused by a party: rolling back to the old relay");
            for party in [Party::Caller, Party::Callee] {
                if outcomes[party.index()].is_ok() {
                    let old = self.calls.media(call_id).and_then(|c| match party {
                        Party::Caller => c
                            .caller
                            .sent
                            .clone()
                            .map(|s| (s, c.caller.origin_sent.clone())),
                        Party::Callee => c
                            .callee
                            .sent
                            .clone()
                            .map(|s| (s, c.callee.origin_sent.clone())),
                    });
                    if let Some((sdp, origin)) = old {
                        // One version above the move's SDP, which was one above `origin`.
                        let bumped = origin.map(|(u, s, v)| (u, s, v.saturating_add(1)));
                        let sdp = sdp_for_leg(&sdp, bumped.as_ref()).unwrap_or(sdp);
                        if let Some(call) = self.calls.media_mut(call_id) {
                            match party {
                                Party::Caller => call.caller.record_sent(&sdp),
                                Party::Callee => call.callee.record_sent(&sdp),
                            }
                        }
                        self.send_own_request(call_id, party, Method::Invite, Some(&sdp), now);
                    }
                }
            }
            self.finish_move(call_id, MoveResult::RolledBack, now);
            return;
        }
        // The old node is dead: try another node after a pause.
        if m.attempts + 1 >= MAX_ATTEMPTS {
            tracing::warn!(%call_id, "re-anchoring: parties refused every relay and the old one is dead: ending the call");
            self.end_call(call_id, None, m.old_node, now);
            self.finish_move(call_id, MoveResult::CallEnded, now);
            return;
        }
        if let Some(m) = self.calls.moving_mut(call_id) {
            m.retry();
        }
        self.wake_move(call_id, now + RETRY_PAUSE);
    }

    pub(in crate::node) fn commit_move(
        &mut self,
        call_id: &str,
        m: &CallMove,
        new_node: NodeId,
        caller_answer: &Bytes,
        callee_answer: &Bytes,
        now: Instant,
    ) {
        // A party the move offered a new DTLS association (`actpass`) with the relay's own
        // certificate must have its answer reach the relay, which takes its DTLS role from it.
        // (DTLS on both sides passes through the relay: the other party's SDP then carries a
        // fingerprint too, and the `actpass` is the other party's own.)
        let is_ng = self
            .relays
            .nodes()
            .get(new_node)
            .is_some_and(|n| n.engine_kind() == media::EngineKind::Ng);
        let new_dtls = |party: Party, answer: &Bytes| {
            is_ng
                && carries_body(answer)
                && m.sdp_for(party).is_some_and(offers_new_dtls)
                && !m.sdp_for(party.other()).is_some_and(has_fingerprint)
        };
        let caller_dtls = new_dtls(Party::Caller, caller_answer);
        let callee_dtls = new_dtls(Party::Callee, callee_answer);
        let dialog_tags = self
            .calls
            .confirmed(call_id)
            .map(|d| (d.id.caller_tag.clone(), d.id.callee_tag.clone()));
        let Some(call) = self.calls.media_mut(call_id) else {
            return;
        };
        // New per-leg options stay with the call: its later offers replay them.
        call.policy.caller_flags = m.target.caller.applied_to(&call.policy.caller_flags);
        call.policy.callee_flags = m.target.callee.applied_to(&call.policy.callee_flags);
        if let Some(set) = &m.target.set {
            call.policy.set = set.clone();
        }
        let policy = call.policy.clone();
        if let Some(sdp) = m.sdp_for(Party::Caller) {
            call.caller.record_sent(sdp);
        }
        if let Some(sdp) = m.sdp_for(Party::Callee) {
            call.callee.record_sent(sdp);
        }
        let caller_changed = carries_body(caller_answer)
            && media_changed(call.caller.received.as_ref(), caller_answer);
        let callee_changed = carries_body(callee_answer)
            && media_changed(call.callee.received.as_ref(), callee_answer);
        // A codec-like change must reach the other party too (a follow-up offer).
        // A party that answered the relay's own DTLS offer keeps its keying to itself.
        let must_know = |dtls: bool, stored: Option<&Bytes>, answer: &Bytes| {
            carries_body(answer)
                && if dtls {
                    other_party_must_know_when_terminated(stored, answer)
                } else {
                    other_party_must_know(stored, answer)
                }
        };
        let tell_caller = must_know(callee_dtls, call.callee.received.as_ref(), callee_answer);
        let tell_callee = must_know(caller_dtls, call.caller.received.as_ref(), caller_answer);
        if carries_body(caller_answer) {
            call.caller.received = Some(caller_answer.clone());
        }
        if carries_body(callee_answer) {
            call.callee.received = Some(callee_answer.clone());
        }
        call.node = new_node;
        let old_node = m.old_node;
        self.relays.count_call(old_node, -1);
        self.relays.count_call(new_node, 1);
        // An answer that moved a party's media: tell the new relay where it now is.
        if let Some((caller_tag, callee_tag)) = dialog_tags {
            if callee_changed || callee_dtls {
                // The callee's new SDP, as an answer: the relay's rewrite is for the caller.
                let r = media::offer_answer(
                    true,
                    call_id,
                    &caller_tag,
                    Some(&callee_tag),
                    callee_answer.clone(),
                    &policy.caller_flags,
                )
                .rtpproxy(&policy.caller_rtpproxy);
                let follow_up = tell_caller.then_some(Party::Caller);
                self.send_moved_sdp(new_node, &r, call_id, follow_up, now);
            }
            if caller_dtls {
                // The caller answered the relay's new offer: an answer with the tags the other
                // way round; the relay's rewrite is for the callee.
                let r = media::offer_answer(
                    true,
                    call_id,
                    &callee_tag,
                    Some(&caller_tag),
                    caller_answer.clone(),
                    &policy.callee_flags,
                );
                let follow_up = tell_callee.then_some(Party::Callee);
                self.send_moved_sdp(new_node, &r, call_id, follow_up, now);
            } else if caller_changed {
                // The caller's new SDP, as a re-offer: the relay's rewrite is for the callee.
                let r = media::offer_answer(
                    false,
                    call_id,
                    &caller_tag,
                    Some(&callee_tag),
                    caller_answer.clone(),
                    &policy.callee_flags,
                )
                .rtpproxy(&policy.callee_rtpproxy);
                let follow_up = tell_callee.then_some(Party::Callee);
                self.send_moved_sdp(new_node, &r, call_id, follow_up, now);
            }
        }
        // The old session goes, unless its node is dead (a delete is never sent elsewhere);
        // then it is deleted if the node comes back. A call that waited for its own node to
        // come back stays on it: nothing to delete.
        if old_node != new_node {
            self.delete_or_orphan(old_node, call_id, now);
        }
        let names = |n: NodeId| {
            self.relays
                .nodes()
                .get(n)
                .map(|n| n.name.clone())
                .unwrap_or_default()
        };
        tracing::info!(%call_id, from = %names(old_node), to = %names(new_node), ms = now.saturating_duration_since(m.started).as_millis() as u64, "call re-anchored");
    }

    /// Sends `request` (a party's SDP from its answer to the move) to the call's new relay
    /// `node`; the relay's rewrite goes to `follow_up` as a follow-up offer, if any (else
    /// nobody waits for the reply).
    fn send_moved_sdp(
        &mut self,
        node: NodeId,
        request: &media::MediaRequest,
        call_id: &str,
        follow_up: Option<Party>,
        now: Instant,
    ) {
        let wait = match follow_up {
            Some(party) => MediaWait::FollowUp {
                call_id: call_id.to_string(),
                party,
            },
            None => MediaWait::Delete,
        };
        if let Some(id) = self.relays.send(node, request, now) {
            self.media_waits.insert((node, id), wait);
        }
    }

    /// Ends a call the proxy can no longer carry: BYE to both parties, relay sessions deleted.
    pub(in crate::node) fn end_call(
        &mut self,
        call_id: &str,
        new_node: Option<NodeId>,
        old_node: NodeId,
        now: Instant,
    ) {
        for party in [Party::Caller, Party::Callee] {
            self.send_own_request(call_id, party, Method::Bye, None, now);
        }
        if let Some(node) = new_node {
            self.delete_or_orphan(node, call_id, now);
        }
        if let Some(call) = self.calls.take_media(call_id) {
            self.relays.count_call(call.node, -1);
        }
        self.calls.set_wait(call_id, None);
        self.delete_or_orphan(old_node, call_id, now);
        self.calls.update_dialogs(call_id, |d| d.remove_confirmed());
    }

    /// Deletes the call's session on `node` if it is up; a down node's session is deleted
    /// when it comes back (a delete is never sent to a dead node, nor elsewhere).
    pub(in crate::node) fn delete_or_orphan(&mut self, node: NodeId, call_id: &str, now: Instant) {
        if self.relays.is_up(node) {
            self.delete_on(node, call_id, now);
        } else {
            self.add_orphan(node, call_id);
        }
    }

    pub(in crate::node) fn delete_on(&mut self, node: NodeId, call_id: &str, now: Instant) {
        if let Some(id) = self.relays.send(node, &media::delete(call_id), now) {
            self.media_waits.insert((node, id), MediaWait::Delete);
        }
    }

    pub(in crate::node) fn finish_move(&mut self, call_id: &str, result: MoveResult, now: Instant) {
        let Some(m) = self.calls.take_move(call_id) else {
            return;
        };
        if let Some(j) = self.jobs.get_mut(&m.job) {
            j.status.in_flight = j.status.in_flight.saturating_sub(1);
        }
        *self.move_results.entry((m.trigger, result)).or_default() += 1;
        let seconds = now.saturating_duration_since(m.started).as_secs_f64();
        if let Some(slot) = DURATION_BOUNDS.iter().position(|b| seconds <= *b) {
            if let Some(count) = self.move_durations.get_mut(slot) {
                *count += 1;
            }
        }
        self.move_duration_sum += seconds;
        self.move_duration_count += 1;
        self.count_job(m.job, result, now);
        // A slot is free: the queue is pumped when this event ends, not from here.
        self.pump_due = true;
    }
}
