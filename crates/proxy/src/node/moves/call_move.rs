//! One call's move up to its re-INVITEs: waiting until neither leg has an INVITE/UPDATE open,
//! the new node's offer and answer built from the stored SDPs with each leg's own `o=`
//! (DESIGN.md "Re-anchoring" steps 1–4), and a follow-up offer when an answer changed codecs.

use std::time::{Duration, Instant};

use anchorage_sip::Method;
use bytes::Bytes;

use crate::media::{self};
use crate::node::moves::IDLE_POLL;
use crate::reanchor::{
    answer_in_offer_profile, glare_backoff, move_has_dtls, restricted_offer, sdp_for_leg,
    MoveResult, Party,
};

use crate::node::anchoring::MediaWait;
use crate::node::moves::{Awaiting, LegStep, MAX_ATTEMPTS, MAX_IDLE_WAIT};
use crate::node::timers::TimerRef;
use crate::node::{next_random, Proxy};

impl Proxy {
    /// Advances a call's move as far as it can go now.
    pub(in crate::node) fn step_move(&mut self, call_id: &str, now: Instant) {
        let Some(m) = self.calls.moving(call_id) else {
            return;
        };
        match m.awaiting {
            Awaiting::Idle => {
                if self.has_open_offer_transaction(call_id) {
                    if now.saturating_duration_since(m.started) > MAX_IDLE_WAIT {
                        tracing::warn!(%call_id, "re-anchoring: an offer of the parties stayed open too long; the call is not moved");
                        self.finish_move(call_id, MoveResult::NoRelay, now);
                        return;
                    }
                    self.wake_move(call_id, now + IDLE_POLL);
                    return;
                }
                self.send_new_offer(call_id, now);
            }
            Awaiting::Legs(_) => {
                let retries = self
                    .calls
                    .moving_mut(call_id)
                    .map(|m| m.due_retries(now))
                    .unwrap_or_default();
                if !retries.is_empty() {
                    for party in retries {
                        self.send_reinvite(call_id, party, now);
                    }
                    self.write_record_now(call_id);
                }
                // A party that does not answer within the move's time is treated as gone.
                let overdue = self
                    .calls
                    .moving(call_id)
                    .map(|m| m.overdue_legs(now))
                    .unwrap_or_default();
                for party in overdue {
                    self.leg_finished(call_id, party, Err(408), now);
                }
            }
            Awaiting::Saving(_) => {
                // The store did not answer within the move's time: the move goes on from
                // memory rather than leave the parties waiting.
                if self
                    .calls
                    .moving(call_id)
                    .and_then(|m| m.new_node())
                    .is_some()
                    && self.move_deadline_passed(call_id, now)
                {
                    tracing::warn!(%call_id, "re-anchoring: the move's record was not saved in time; sending its re-INVITEs anyway");
                    self.handle_saved(call_id, now);
                }
            }
            Awaiting::Offer { .. } | Awaiting::Answer { .. } => {}
        }
    }

    pub(in crate::node) fn wake_move(&mut self, call_id: &str, at: Instant) {
        if let Some(key) = self.calls.key(call_id) {
            self.timers.push(at, TimerRef::Move(key));
        }
    }

    /// Whether an INVITE or UPDATE of the call is still without a final response.
    pub(in crate::node) fn has_open_offer_transaction(&self, call_id: &str) -> bool {
        self.calls.has_open_offer(call_id)
    }

    /// Picks the new node and sends it the offer built from the caller's stored SDP.
    pub(in crate::node) fn send_new_offer(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.calls.media(call_id).cloned() else {
            self.finish_move(call_id, MoveResult::CallEnded, now);
            return;
        };
        let Some(dialog) = self.calls.confirmed(call_id).cloned() else {
            tracing::warn!(%call_id, "re-anchoring: the call has no confirmed dialog yet");
            self.finish_move(call_id, MoveResult::NoRelay, now);
            return;
        };
        let (Some(caller_sdp), Some(callee_sdp)) =
            (call.caller.received.clone(), call.callee.received.clone())
        else {
            tracing::warn!(%call_id, "re-anchoring: the call's SDPs are not both known");
            self.finish_move(call_id, MoveResult::NoRelay, now);
            return;
        };
        let Some(m) = self.calls.moving(call_id) else {
            return;
        };
        let own_set = call.policy.set.clone();
        let set = m.target.set.clone().unwrap_or_else(|| own_set.clone());
        // Nodes of another engine than the move asks for are never picked.
        let mut exclude = m.tried.clone();
        exclude.extend(self.relays.not_of_engine(m.target.engine));
        if call.policy.rtpproxy_unfit.is_some() && m.target.engine.is_none() {
            // Legs an RTPProxy node cannot give (SRTP, AVPF, an interface it lacks): a move
            // picks among the nodes that can, as the call's first offer did.
            exclude.extend(
                self.relays
                    .not_of_engine(Some(crate::media::EngineKind::Ng)),
            );
        }
        let node = match &m.target.node {
            Some(name) => self
                .relays
                .by_name(name)
                .filter(|n| !exclude.contains(n) && self.relays.is_up(*n)),
            None => self.relays.pick(&set, &exclude).or_else(|| {
                // The call's own set has no healthy node left: the fallback set.
                self.config
                    .reanchor
                    .fallback_set
                    .as_deref()
                    .and_then(|fallback| self.relays.pick(fallback, &exclude))
            }),
        };
        let Some(node) = node else {
            let old_node = m.old_node;
            let explicit = m.target.node.is_some();
            if !explicit && !self.relays.is_up(old_node) {
                // Its relay is dead and none can take it: the call is kept, waiting for one.
                self.wait_for_relay(call_id, now);
                return;
            }
            tracing::warn!(%call_id, %set, "re-anchoring: no relay node can take the call");
            self.finish_move(call_id, MoveResult::NoRelay, now);
            return;
        };
        let offer = restricted_offer(&caller_sdp, &callee_sdp);
        let mut callee_flags = m.target.callee.applied_to(&call.policy.callee_flags);
        if let Some(direction) =
            crate::reanchor::direction_flags(&m.target.caller, &m.target.callee)
        {
            callee_flags = format!("{callee_flags} {direction}");
        }
        let request = media::offer_answer(
            false,
            call_id,
            &dialog.id.caller_tag,
            Some(&dialog.id.callee_tag),
            offer,
            &callee_flags,
        )
        .rtpproxy(&call.policy.callee_rtpproxy);
        let Some(id) = self.relays.send(node, &request, now) else {
            self.finish_move(call_id, MoveResult::NoRelay, now);
            return;
        };
        self.media_waits.insert(
            (node, id),
            MediaWait::ReanchorOffer {
                call_id: call_id.to_string(),
            },
        );
        if let Some(m) = self.calls.moving_mut(call_id) {
            m.offer_sent(node);
        }
    }

    /// The new node answered (or not) one of the move's ng requests.
    pub(in crate::node) fn on_reanchor_ng(
        &mut self,
        call_id: &str,
        offer: bool,
        sdp: Option<Bytes>,
        now: Instant,
    ) {
        let Some(m) = self.calls.moving(call_id) else {
            return;
        };
        let Some(node) = m.new_node() else {
            return;
        };
        let Some(sdp) = sdp else {
            // The new node failed: forget its session and try another.
            tracing::warn!(%call_id, node, "re-anchoring: the new relay refused or did not answer");
            self.delete_or_orphan(node, call_id, now);
            if let Some(m) = self.calls.moving_mut(call_id) {
                m.retry();
            }
            let exhausted = self
                .calls
                .moving(call_id)
                .filter(|m| m.attempts >= MAX_ATTEMPTS);
            if let Some(m) = exhausted {
                if !self.relays.is_up(m.old_node) && m.target.node.is_none() {
                    self.wait_for_relay(call_id, now);
                } else {
                    self.finish_move(call_id, MoveResult::NoRelay, now);
                }
            } else {
                self.step_move(call_id, now);
            }
            return;
        };
        let Some(call) = self.calls.media(call_id).cloned() else {
            // The call ended while the new node made its session: that session goes, and the
            // move ends (counted in its job, which would otherwise never complete).
            self.delete_or_orphan(node, call_id, now);
            self.finish_move(call_id, MoveResult::CallEnded, now);
            return;
        };
        if offer {
            // The offer's rewrite goes to the callee.
            let for_callee = sdp_for_leg(&sdp, call.callee.origin_sent.as_ref()).unwrap_or(sdp);
            let (Some(dialog), Some(callee_sdp)) =
                (self.calls.confirmed(call_id), call.callee.received.clone())
            else {
                self.finish_move(call_id, MoveResult::CallEnded, now);
                return;
            };
            // RTPProxy passes the SDP through: the callee's answer as stored may be in a
            // profile only the previous (converting) relay gave its leg.
            let passes_through = self
                .relays
                .nodes()
                .get(node)
                .is_some_and(|n| n.engine_kind() == media::EngineKind::Rtpproxy);
            let callee_sdp = match (&call.caller.received, passes_through) {
                (Some(offer), true) => answer_in_offer_profile(&callee_sdp, offer),
                _ => callee_sdp,
            };
            let mut caller_flags = m.target.caller.applied_to(&call.policy.caller_flags);
            let callee_flags = m.target.callee.applied_to(&call.policy.callee_flags);
            let is_ng = self
                .relays
                .nodes()
                .get(node)
                .is_some_and(|n| n.engine_kind() == media::EngineKind::Ng);
            if is_ng
                && move_has_dtls(
                    [
                        &callee_sdp,
                        call.caller.received.as_ref().unwrap_or(&callee_sdp),
                    ],
                    [&caller_flags, &callee_flags],
                )
            {
                // The SDPs the relay returns are the parties' new offers: a DTLS party gets
                // `actpass`, and the relay's role waits for its answer.
                caller_flags.push_str(" reanchor");
            }
            let request = media::offer_answer(
                true,
                call_id,
                &dialog.id.caller_tag,
                Some(&dialog.id.callee_tag),
                callee_sdp,
                &caller_flags,
            )
            .rtpproxy(&call.policy.caller_rtpproxy);
            if let Some(id) = self.relays.send(node, &request, now) {
                self.media_waits.insert(
                    (node, id),
                    MediaWait::ReanchorAnswer {
                        call_id: call_id.to_string(),
                    },
                );
            }
            if let Some(m) = self.calls.moving_mut(call_id) {
                m.offer_answered(for_callee);
            }
        } else {
            let for_caller = sdp_for_leg(&sdp, call.caller.origin_sent.as_ref()).unwrap_or(sdp);
            let timeout = Duration::from_secs(self.config.reanchor.invite_timeout_s);
            let durable = self.records;
            let inviting = self
                .calls
                .moving_mut(call_id)
                .is_some_and(|m| m.answer_answered(for_caller, now + timeout, durable));
            if !inviting {
                return;
            }
            self.wake_move(call_id, now + timeout);
            if durable {
                // The move, and the CSeq numbers its requests will use, are in the store
                // before a re-INVITE goes out (`handle_saved` sends them).
                self.calls
                    .update_dialogs(call_id, |d| d.confirmed_mut().map(|c| c.reserve_cseq(16)));
                self.save_durably(call_id);
                return;
            }
            self.send_both_reinvites(call_id, now);
        }
    }

    /// Both re-INVITEs at once: the media gap is one round trip, not two.
    pub(in crate::node) fn send_both_reinvites(&mut self, call_id: &str, now: Instant) {
        self.send_reinvite(call_id, Party::Callee, now);
        self.send_reinvite(call_id, Party::Caller, now);
        self.write_record_now(call_id);
    }

    fn move_deadline_passed(&self, call_id: &str, now: Instant) -> bool {
        match self.calls.moving(call_id).map(|m| &m.awaiting) {
            Some(Awaiting::Saving(i)) => i.deadline <= now,
            _ => false,
        }
    }

    /// A leg's re-INVITE got its final answer.
    pub(in crate::node) fn leg_finished(
        &mut self,
        call_id: &str,
        party: Party,
        outcome: Result<Bytes, u16>,
        now: Instant,
    ) {
        // Drawn only for a glare, so that other answers leave the generator where it was.
        let backoff = if outcome == Err(491) {
            glare_backoff(party, next_random(&mut self.rng_state, 1000))
        } else {
            Duration::ZERO
        };
        let Some(m) = self.calls.moving_mut(call_id) else {
            return;
        };
        match m.leg_answered(party, outcome, now, backoff) {
            LegStep::RetryAt(at) => {
                tracing::info!(%call_id, party = party.as_str(), ms = backoff.as_millis() as u64, "re-INVITE met glare (491): retrying after the back-off");
                self.wake_move(call_id, at);
            }
            LegStep::BothAnswered(outcomes) => self.conclude_move(call_id, outcomes, now),
            LegStep::Waiting | LegStep::Ignored => {}
        }
    }

    /// After a move, a party's answer changed its codecs: the other party gets the relay's
    /// rewrite of it in a re-INVITE of ours (its own `o=`, one version up).
    pub(in crate::node) fn send_follow_up_offer(
        &mut self,
        call_id: &str,
        party: Party,
        sdp: Bytes,
        now: Instant,
    ) {
        let Some(call) = self.calls.media_mut(call_id) else {
            return;
        };
        let leg = match party {
            Party::Caller => &mut call.caller,
            Party::Callee => &mut call.callee,
        };
        if !crate::reanchor::follow_up_needed(leg.sent.as_ref(), &sdp) {
            // A relay that converts (SRTP towards one leg only) gives this party the same
            // media as the move's re-INVITE did: nothing to tell it.
            tracing::debug!(%call_id, party = party.as_str(), "no follow-up offer: the relay's SDP for the party is unchanged");
            return;
        }
        let sdp = sdp_for_leg(&sdp, leg.origin_sent.as_ref()).unwrap_or(sdp);
        leg.record_sent(&sdp);
        tracing::info!(%call_id, party = party.as_str(), "follow-up offer after a move: the other party's codecs changed");
        self.send_own_request(call_id, party, Method::Invite, Some(&sdp), now);
    }

    /// A BYE ended a call being moved: the session the move created goes too.
    pub(in crate::node) fn abandon_move(&mut self, call_id: &str, now: Instant) {
        if let Some(node) = self.calls.moving(call_id).and_then(|m| m.new_node()) {
            let current = self.calls.media(call_id).map(|c| c.node);
            if current != Some(node) {
                self.delete_or_orphan(node, call_id, now);
            }
        }
        self.finish_move(call_id, MoveResult::CallEnded, now);
    }

    /// Whether a UA's own offer must wait (491) because the call is being moved.
    pub(in crate::node) fn move_in_progress(&self, call_id: &str) -> bool {
        self.calls.moving(call_id).is_some_and(|m| m.is_active())
    }
}
