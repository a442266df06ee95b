//! Re-anchoring in the proxy core: jobs that move calls between relay nodes, and the per-call
//! procedure of DESIGN.md "Re-anchoring" as one explicit state machine per call:
//!
//! ```text
//!  WaitIdle ──(no INVITE/UPDATE open; a node picked)──► Offer ──(ng offer ok)──► Answer
//!     ▲  (ng error or timeout: next node)                    │                      │
//!     └──────────────────────────────────────────────────────┘      (ng answer ok)  ▼
//!  Finished ◄──(both legs answered, or a leg failed: rollback / end call)── Inviting
//! ```
//!
//! In `Inviting` both re-INVITEs are out at once, each impersonating the other party with
//! the dialog's tags, the leg's route set and remote target and a renumbered CSeq. A 491 is
//! retried after the RFC 3261 §14.1 back-off; 408/481/no answer mean the party is gone and the
//! call is ended; any other refusal rolls the moved leg back to the old node if it is alive.
//! The old session is deleted only on success and only on a live old node; a failed move
//! deletes the session it created.

use std::time::{Duration, Instant};

use anchorage_sip::{Message, Method, Uri};
use bytes::Bytes;

use super::{next_random, ClientInvite, ClientNonInvite, MediaWait, Proxy, TimerRef, Transmit};
use crate::dialog::Dialog;
use crate::media::{self, NodeId};
use crate::reanchor::{
    build_request, glare_backoff, leg_target, media_changed, other_party_must_know,
    restricted_offer, sdp_for_leg, JobStatus, MoveResult, MoveTarget, OwnRequest, Party, Trigger,
};
use crate::transaction::Action;
use crate::Transport;

/// A job: calls queued for moving, and its counts.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) status: JobStatus,
    target: MoveTarget,
    queue: std::collections::VecDeque<String>,
}

/// Where one call's move stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    WaitIdle,
    Offer,
    Answer,
    Inviting,
}

/// A leg's re-INVITE.
#[derive(Debug, Clone, Default)]
struct LegMove {
    /// Branch of the re-INVITE in flight.
    branch: Option<String>,
    /// Its final outcome: the answer SDP, or the failure status.
    done: Option<Result<Bytes, u16>>,
    /// A 491 asked us to try again at this time.
    retry_at: Option<Instant>,
}

/// One call being moved.
#[derive(Debug, Clone)]
pub(super) struct CallMove {
    job: u64,
    trigger: Trigger,
    old_node: NodeId,
    target: MoveTarget,
    tried: Vec<NodeId>,
    new_node: Option<NodeId>,
    stage: Stage,
    started: Instant,
    /// The SDP each party gets from the new node (caller, callee), with its own `o=`.
    sdp_for: [Option<Bytes>; 2],
    legs: [LegMove; 2],
    /// When the legs must have answered.
    deadline: Option<Instant>,
    /// The previous step failed this many times (ng errors, a refused leg with a dead old node).
    attempts: u32,
}

/// A request the proxy sent itself into a dialog.
pub(super) struct OwnTx {
    machine: OwnMachine,
    request: Message,
    destination: std::net::SocketAddr,
    transport: Transport,
    local: Option<std::net::SocketAddr>,
    call_id: String,
    party: Party,
    /// The ACK sent for its 2xx, sent again for every retransmitted 2xx.
    ack: Option<Transmit>,
    scheduled: Option<Instant>,
}

enum OwnMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

/// Re-anchoring counters for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReanchorMetrics {
    /// Calls whose move ended, by trigger and result.
    pub results: Vec<((Trigger, MoveResult), u64)>,
    /// Move durations: upper bounds in seconds and cumulative counts (a histogram).
    pub duration_buckets: Vec<(f64, u64)>,
    /// Sum of move durations, seconds.
    pub duration_sum: f64,
    /// Moves timed.
    pub duration_count: u64,
}

/// Histogram bounds of move durations, seconds.
pub(super) const DURATION_BOUNDS: [f64; 10] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often a call waiting for its open transactions to end is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Pause before trying another node after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Attempts before a call is given up.
const MAX_ATTEMPTS: u32 = 3;
/// How long a move waits for the parties' own open INVITE/UPDATE (Timer B is 32 s).
const MAX_IDLE_WAIT: Duration = Duration::from_secs(32);

impl Proxy {
    // ---- jobs ----------------------------------------------------------------------------

    /// Starts a job moving every anchored call that matches: on `node` (by name) and/or in
    /// `set`, or the one call `call_id`. Returns the job id, or why nothing can start.
    pub fn start_reanchor(
        &mut self,
        trigger: Trigger,
        from_node: Option<&str>,
        from_set: Option<&str>,
        call_id: Option<&str>,
        target: MoveTarget,
        now: Instant,
    ) -> Result<u64, String> {
        let node = match from_node {
            Some(name) => Some(
                self.relays
                    .by_name(name)
                    .ok_or_else(|| format!("no relay node named {name:?}"))?,
            ),
            None => None,
        };
        for set in [from_set, target.set.as_deref()].into_iter().flatten() {
            if !self.relays.has_set(set) {
                return Err(format!("no relay set named {set:?}"));
            }
        }
        if let Some(name) = &target.node {
            if self.relays.by_name(name).is_none() {
                return Err(format!("no relay node named {name:?}"));
            }
        }
        let mut calls: Vec<String> = match call_id {
            Some(id) => {
                if !self.call_media.contains_key(id) {
                    return Err(format!("no anchored call with Call-ID {id:?}"));
                }
                vec![id.to_string()]
            }
            None => self
                .call_media
                .iter()
                .filter(|(_, c)| node.is_none_or(|n| c.node == n))
                .filter(|(_, c)| from_set.is_none_or(|s| c.policy.set == s))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        calls.sort();
        Ok(self.queue_job(trigger, calls, target, now))
    }

    pub(super) fn queue_job(
        &mut self,
        trigger: Trigger,
        calls: Vec<String>,
        target: MoveTarget,
        now: Instant,
    ) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        let total = calls.len();
        tracing::info!(
            job = id,
            trigger = trigger.as_str(),
            calls = total,
            "re-anchoring job started"
        );
        let job = Job {
            status: JobStatus {
                id,
                trigger,
                total,
                done: 0,
                failed: 0,
                waiting: 0,
                in_flight: 0,
                started: now,
                finished: (total == 0).then_some(now),
            },
            target,
            queue: calls.into(),
        };
        self.jobs.insert(id, job);
        // Forget the oldest finished jobs beyond a hundred.
        while self.jobs.len() > 100 {
            let oldest = self
                .jobs
                .iter()
                .find(|(_, j)| j.status.finished.is_some())
                .map(|(id, _)| *id);
            match oldest {
                Some(old) => {
                    self.jobs.remove(&old);
                }
                None => break,
            }
        }
        self.pump_due = true;
        self.settle(now);
        id
    }

    /// A job's progress.
    pub fn job(&self, id: u64) -> Option<JobStatus> {
        self.jobs.get(&id).map(|j| j.status.clone())
    }

    /// Every job still known, oldest first.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs.values().map(|j| j.status.clone()).collect()
    }

    /// Re-anchoring counters.
    pub fn reanchor_metrics(&self) -> ReanchorMetrics {
        let mut results: Vec<_> = self.move_results.iter().map(|(k, v)| (*k, *v)).collect();
        results.sort_by_key(|((t, r), _)| (t.as_str(), r.as_str()));
        let mut cumulative = 0;
        let duration_buckets = DURATION_BOUNDS
            .iter()
            .zip(&self.move_durations)
            .map(|(bound, count)| {
                cumulative += count;
                (*bound, cumulative)
            })
            .collect();
        ReanchorMetrics {
            results,
            duration_buckets,
            duration_sum: self.move_duration_sum,
            duration_count: self.move_duration_count,
        }
    }

    /// Drains a node: no new calls, and a job moving its calls away.
    pub fn drain_relay(&mut self, name: &str, now: Instant) -> Result<u64, String> {
        let node = self
            .relays
            .by_name(name)
            .ok_or_else(|| format!("no relay node named {name:?}"))?;
        self.relays.set_draining(node, true);
        tracing::info!(relay = name, "relay drained: no new calls");
        self.start_reanchor(
            Trigger::Drain,
            Some(name),
            None,
            None,
            MoveTarget::default(),
            now,
        )
    }

    /// Gives a drained node new calls again.
    pub fn undrain_relay(&mut self, name: &str, now: Instant) -> Result<(), String> {
        let node = self
            .relays
            .by_name(name)
            .ok_or_else(|| format!("no relay node named {name:?}"))?;
        self.relays.set_draining(node, false);
        tracing::info!(relay = name, "relay undrained");
        self.resume_waiting(now);
        Ok(())
    }

    /// Evens the load of a set: moves calls from nodes above the set's average to the least
    /// loaded nodes until each is within one call of its weighted share.
    pub fn rebalance(&mut self, set: &str, now: Instant) -> Result<u64, String> {
        if !self.relays.has_set(set) {
            return Err(format!("no relay set named {set:?}"));
        }
        let members: Vec<NodeId> = (0..self.relays.nodes().len())
            .filter(|&n| self.relays.sets_of(n).iter().any(|s| s == set))
            .filter(|&n| self.relays.is_up(n) && !self.relays.nodes()[n].draining)
            .collect();
        let total_weight: u32 = members.iter().map(|&n| self.relays.nodes()[n].weight).sum();
        let total_calls: usize = self
            .call_media
            .values()
            .filter(|c| c.policy.set == set)
            .count();
        let mut to_move = Vec::new();
        for &n in &members {
            let share = total_calls as f64 * f64::from(self.relays.nodes()[n].weight)
                / f64::from(total_weight.max(1));
            let mut on_node: Vec<String> = self
                .call_media
                .iter()
                .filter(|(_, c)| c.node == n && c.policy.set == set)
                .map(|(id, _)| id.clone())
                .collect();
            on_node.sort();
            let excess = (on_node.len() as f64 - share.ceil()).max(0.0) as usize;
            to_move.extend(on_node.into_iter().take(excess));
        }
        Ok(self.queue_job(
            Trigger::Rebalance,
            to_move,
            MoveTarget {
                set: Some(set.to_string()),
                ..MoveTarget::default()
            },
            now,
        ))
    }

    /// A node's health changed: when it went down, every call on it moves.
    pub(super) fn on_relay_health(&mut self, change: media::HealthChange, now: Instant) {
        let name = self
            .relays
            .nodes()
            .get(change.node)
            .map(|n| n.name.clone())
            .unwrap_or_default();
        if change.up {
            let orphans = self.orphans.remove(&change.node).unwrap_or_default();
            tracing::info!(relay = %name, stale_sessions = orphans.len(), "relay node is up");
            // Sessions of calls moved away while it was down: deleted now, not left to time out.
            for call_id in orphans {
                self.delete_on(change.node, &call_id, now);
            }
            self.resume_waiting(now);
            return;
        }
        let (reason, silent_ms) = self
            .relays
            .nodes()
            .get(change.node)
            .and_then(|n| n.down_reason)
            .map_or(("unknown", 0), |r| match r {
                media::DownReason::Refused => (r.as_str(), 0),
                media::DownReason::TimedOut { silent } => (r.as_str(), silent.as_millis() as u64),
            });
        let (rtt_ms, window_ms, pending) =
            self.relays
                .nodes()
                .get(change.node)
                .map_or((None, 0, 0), |n| {
                    (
                        n.rtt().map(|r| r.as_secs_f64() * 1000.0),
                        n.window(&self.config.relay_health).as_millis() as u64,
                        n.pending(),
                    )
                });
        tracing::warn!(relay = %name, reason, silent_ms, ?rtt_ms, window_ms, pending, "relay node is down: moving its calls");
        let calls: Vec<String> = {
            let mut c: Vec<String> = self
                .call_media
                .iter()
                .filter(|(_, c)| c.node == change.node)
                .map(|(id, _)| id.clone())
                .collect();
            c.sort();
            c
        };
        self.queue_job(Trigger::NodeDown, calls, MoveTarget::default(), now);
    }

    /// Starts queued moves while the pacing and the in-flight bound allow. Runs only at the
    /// end of an event ([`Proxy::settle`]), never from inside a move's own code, so that a
    /// move ending at once (no node can take the call) frees its slot for the next one in
    /// this loop rather than in a nested call: the stack stays flat however long the queue.
    pub(super) fn pump_moves(&mut self, now: Instant) {
        self.pump_due = false;
        let per_second = f64::from(self.config.reanchor.per_second.max(1));
        let elapsed = now.saturating_duration_since(self.pace_at).as_secs_f64();
        self.pace_tokens = (self.pace_tokens + elapsed * per_second).min(per_second.max(1.0));
        self.pace_at = now;
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.queue.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            loop {
                if self.moves.len() >= self.config.reanchor.max_in_flight {
                    return;
                }
                if self.pace_tokens < 1.0 {
                    let wait = Duration::from_secs_f64((1.0 - self.pace_tokens) / per_second);
                    if self.pace_timer.is_none() {
                        self.pace_timer = Some(now + wait);
                        self.timers.push(now + wait, TimerRef::Pace);
                    }
                    return;
                }
                let Some(job) = self.jobs.get_mut(&id) else {
                    break;
                };
                let Some(call_id) = job.queue.pop_front() else {
                    break;
                };
                let target = job.target.clone();
                let trigger = job.status.trigger;
                self.pace_tokens -= 1.0;
                self.begin_move(id, trigger, call_id, target, now);
            }
        }
    }

    fn begin_move(
        &mut self,
        job: u64,
        trigger: Trigger,
        call_id: String,
        target: MoveTarget,
        now: Instant,
    ) {
        let resumed = self.resuming.remove(&call_id);
        let Some(old_node) = self.call_media.get(&call_id).map(|c| c.node) else {
            // The call ended while queued: nothing to move.
            self.count_job(job, MoveResult::Moved, now);
            return;
        };
        if self.moves.contains_key(&call_id) {
            // One move per call at a time; the running one serves this job too.
            self.count_job(job, MoveResult::Moved, now);
            return;
        }
        // A call that waited for a relay may go back to its old node, if that is the one that
        // came back: its session there is gone (or stale), and the move makes it anew.
        let tried = if resumed || self.waiting.remove(&call_id).is_some() {
            Vec::new()
        } else {
            vec![old_node]
        };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.status.in_flight += 1;
        }
        self.moves.insert(
            call_id.clone(),
            CallMove {
                job,
                trigger,
                old_node,
                target,
                tried,
                new_node: None,
                stage: Stage::WaitIdle,
                started: now,
                sdp_for: [None, None],
                legs: [LegMove::default(), LegMove::default()],
                deadline: None,
                attempts: 0,
            },
        );
        self.step_move(&call_id, now);
    }

    fn count_job(&mut self, job: u64, result: MoveResult, now: Instant) {
        if let Some(j) = self.jobs.get_mut(&job) {
            match result {
                MoveResult::Moved => j.status.done += 1,
                MoveResult::Waiting => j.status.waiting += 1,
                _ => j.status.failed += 1,
            }
            let counted = j.status.done + j.status.failed + j.status.waiting;
            if counted >= j.status.total && j.status.finished.is_none() {
                j.status.finished = Some(now);
                tracing::info!(
                    job,
                    done = j.status.done,
                    failed = j.status.failed,
                    waiting = j.status.waiting,
                    seconds = now
                        .saturating_duration_since(j.status.started)
                        .as_secs_f64(),
                    "re-anchoring job finished"
                );
            }
        }
    }

    // ---- one call --------------------------------------------------------------------------

    /// Advances a call's move as far as it can go now.
    pub(super) fn step_move(&mut self, call_id: &str, now: Instant) {
        let Some(m) = self.moves.get(call_id) else {
            return;
        };
        match m.stage {
            Stage::WaitIdle => {
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
            Stage::Inviting => {
                let retries: Vec<Party> = [Party::Caller, Party::Callee]
                    .into_iter()
                    .filter(|p| m.legs[p.index()].retry_at.is_some_and(|at| at <= now))
                    .collect();
                let overdue = m.deadline.is_some_and(|d| d <= now);
                for party in retries {
                    if let Some(m) = self.moves.get_mut(call_id) {
                        m.legs[party.index()].retry_at = None;
                    }
                    self.send_reinvite(call_id, party, now);
                }
                if overdue {
                    // A party that does not answer within the move's time is treated as gone.
                    for party in [Party::Caller, Party::Callee] {
                        let pending = self
                            .moves
                            .get(call_id)
                            .is_some_and(|m| m.legs[party.index()].done.is_none());
                        if pending {
                            self.leg_finished(call_id, party, Err(408), now);
                        }
                    }
                }
            }
            Stage::Offer | Stage::Answer => {}
        }
    }

    fn wake_move(&mut self, call_id: &str, at: Instant) {
        self.timers.push(at, TimerRef::Move(call_id.to_string()));
    }

    /// Whether an INVITE or UPDATE of the call is still without a final response.
    fn has_open_offer_transaction(&self, call_id: &str) -> bool {
        self.open_offers.contains_key(call_id)
    }

    /// Picks the new node and sends it the offer built from the caller's stored SDP.
    fn send_new_offer(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.call_media.get(call_id).cloned() else {
            self.finish_move(call_id, MoveResult::CallEnded, now);
            return;
        };
        let Some(dialog) = self.dialogs.confirmed(call_id).cloned() else {
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
        let Some(m) = self.moves.get(call_id) else {
            return;
        };
        let own_set = call.policy.set.clone();
        let set = m.target.set.clone().unwrap_or_else(|| own_set.clone());
        let node = match &m.target.node {
            Some(name) => self
                .relays
                .by_name(name)
                .filter(|n| !m.tried.contains(n) && self.relays.is_up(*n)),
            None => self.relays.pick(&set, &m.tried).or_else(|| {
                // The call's own set has no healthy node left: the fallback set.
                self.config
                    .reanchor
                    .fallback_set
                    .as_deref()
                    .and_then(|fallback| self.relays.pick(fallback, &m.tried))
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
        );
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
        if let Some(m) = self.moves.get_mut(call_id) {
            m.new_node = Some(node);
            m.tried.push(node);
            m.stage = Stage::Offer;
        }
    }

    /// The new node answered (or not) one of the move's ng requests.
    pub(super) fn on_reanchor_ng(
        &mut self,
        call_id: &str,
        offer: bool,
        sdp: Option<Bytes>,
        now: Instant,
    ) {
        let Some(m) = self.moves.get(call_id) else {
            return;
        };
        let Some(node) = m.new_node else {
            return;
        };
        let Some(sdp) = sdp else {
            // The new node failed: forget its session and try another.
            tracing::warn!(%call_id, node, "re-anchoring: the new relay refused or did not answer");
            self.delete_on(node, call_id, now);
            if let Some(m) = self.moves.get_mut(call_id) {
                m.stage = Stage::WaitIdle;
                m.new_node = None;
                m.attempts += 1;
            }
            let exhausted = self
                .moves
                .get(call_id)
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
        let Some(call) = self.call_media.get(call_id).cloned() else {
            self.delete_on(node, call_id, now);
            self.moves.remove(call_id);
            return;
        };
        if offer {
            // The offer's rewrite goes to the callee.
            let for_callee = sdp_for_leg(&sdp, call.callee.origin_sent.as_ref()).unwrap_or(sdp);
            let (Some(dialog), Some(callee_sdp)) = (
                self.dialogs.confirmed(call_id),
                call.callee.received.clone(),
            ) else {
                self.finish_move(call_id, MoveResult::CallEnded, now);
                return;
            };
            let caller_flags = m.target.caller.applied_to(&call.policy.caller_flags);
            let request = media::offer_answer(
                true,
                call_id,
                &dialog.id.caller_tag,
                Some(&dialog.id.callee_tag),
                callee_sdp,
                &caller_flags,
            );
            if let Some(id) = self.relays.send(node, &request, now) {
                self.media_waits.insert(
                    (node, id),
                    MediaWait::ReanchorAnswer {
                        call_id: call_id.to_string(),
                    },
                );
            }
            if let Some(m) = self.moves.get_mut(call_id) {
                m.sdp_for[Party::Callee.index()] = Some(for_callee);
                m.stage = Stage::Answer;
            }
        } else {
            let for_caller = sdp_for_leg(&sdp, call.caller.origin_sent.as_ref()).unwrap_or(sdp);
            let timeout = Duration::from_secs(self.config.reanchor.invite_timeout_s);
            if let Some(m) = self.moves.get_mut(call_id) {
                m.sdp_for[Party::Caller.index()] = Some(for_caller);
                m.stage = Stage::Inviting;
                m.legs = [LegMove::default(), LegMove::default()];
                m.deadline = Some(now + timeout);
            }
            self.wake_move(call_id, now + timeout);
            // Both re-INVITEs at once: the media gap is one round trip, not two.
            self.send_reinvite(call_id, Party::Callee, now);
            self.send_reinvite(call_id, Party::Caller, now);
        }
    }

    /// Sends the re-INVITE with the new node's SDP to `party`, impersonating the other party.
    fn send_reinvite(&mut self, call_id: &str, party: Party, now: Instant) {
        let Some(sdp) = self
            .moves
            .get(call_id)
            .and_then(|m| m.sdp_for[party.index()].clone())
        else {
            return;
        };
        match self.send_own_request(call_id, party, Method::Invite, Some(&sdp), now) {
            Some(branch) => {
                if let Some(m) = self.moves.get_mut(call_id) {
                    m.legs[party.index()].branch = Some(branch);
                }
            }
            None => self.leg_finished(call_id, party, Err(481), now),
        }
    }

    /// Builds and sends a request of our own to `party` of the call's confirmed dialog, with
    /// the next renumbered CSeq. Returns its branch.
    fn send_own_request(
        &mut self,
        call_id: &str,
        party: Party,
        method: Method<'static>,
        sdp: Option<&Bytes>,
        now: Instant,
    ) -> Option<String> {
        let ours = self.ours.clone();
        let is_us = |value: &str| route_is_us(value, &ours);
        let dialog: &mut Dialog = self.dialogs.confirmed_mut(call_id)?;
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
        self.own_counter += 1;
        let branch = format!(
            "z9hG4bKra{:08x}{:08x}",
            self.own_counter,
            next_random(&mut self.rng_state, u32::MAX)
        );
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

    /// A response to one of our own requests (its Via branch is in `own`).
    pub(super) fn on_own_response(&mut self, branch: &str, resp: Message, now: Instant) {
        let Some(status) = resp.status() else {
            return;
        };
        let Some(tx) = self.own.get_mut(branch) else {
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

    fn drain_own(&mut self, branch: &str, resp: Option<&Message>, now: Instant) {
        loop {
            let Some(tx) = self.own.get_mut(branch) else {
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
                    if let Some(ack) = resp.and_then(|r| super::build_ack(&tx.request, r)) {
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
                            if let Some(tx) = self.own.get_mut(branch) {
                                tx.ack = ack;
                            }
                        }
                        if let Some(ack) = self.own.get(branch).and_then(|t| t.ack.clone()) {
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
                    self.own.remove(branch);
                    return;
                }
                _ => {}
            }
        }
        self.schedule_own(branch);
    }

    pub(super) fn schedule_own(&mut self, branch: &str) {
        let Some(tx) = self.own.get_mut(branch) else {
            return;
        };
        let next = match &tx.machine {
            OwnMachine::Invite(m) => m.poll_timeout(),
            OwnMachine::NonInvite(m) => m.poll_timeout(),
        };
        if let Some(at) = next {
            if tx.scheduled != Some(at) {
                tx.scheduled = Some(at);
                self.timers.push(at, TimerRef::Own(branch.to_string()));
            }
        }
    }

    /// Fires the timers of one of our own transactions.
    pub(super) fn own_timeout(&mut self, branch: &str, now: Instant) {
        let Some(tx) = self.own.get_mut(branch) else {
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
    fn build_2xx_ack(&mut self, branch: &str, resp: &Message) -> Option<Transmit> {
        let tx = self.own.get(branch)?;
        let invite = &tx.request;
        let uri = std::str::from_utf8(invite.request_uri_raw()?).ok()?;
        let via = std::str::from_utf8(
            invite
                .header(anchorage_sip::HeaderName::Via)?
                .values()
                .next()?,
        )
        .ok()?
        .replace(branch, &format!("{branch}a"));
        let from =
            std::str::from_utf8(invite.header(anchorage_sip::HeaderName::From)?.value()).ok()?;
        let to = std::str::from_utf8(resp.header(anchorage_sip::HeaderName::To)?.value()).ok()?;
        let routes: Vec<&str> = invite
            .headers_of(anchorage_sip::HeaderName::Route)
            .filter_map(|h| std::str::from_utf8(h.value()).ok())
            .collect();
        let ack = anchorage_sip::RequestBuilder::new(Method::Ack, uri)
            .via(&via)
            .routes(routes)
            .max_forwards(70)
            .from(from)
            .to(to)
            .call_id(invite.call_id().ok()?)
            .cseq(invite.cseq().ok()?.seq)
            .build()
            .ok()?;
        Some(Transmit {
            data: ack.bytes(),
            destination: tx.destination,
            transport: tx.transport,
            local: tx.local,
        })
    }

    /// A leg's re-INVITE got its final answer.
    fn leg_finished(
        &mut self,
        call_id: &str,
        party: Party,
        outcome: Result<Bytes, u16>,
        now: Instant,
    ) {
        let Some(m) = self.moves.get_mut(call_id) else {
            return;
        };
        if m.stage != Stage::Inviting || m.legs[party.index()].done.is_some() {
            return;
        }
        if outcome == Err(491) {
            let wait = glare_backoff(party, next_random(&mut self.rng_state, 1000));
            tracing::info!(%call_id, party = party.as_str(), ms = wait.as_millis() as u64, "re-INVITE met glare (491): retrying after the back-off");
            if let Some(m) = self.moves.get_mut(call_id) {
                m.legs[party.index()].retry_at = Some(now + wait);
                m.legs[party.index()].branch = None;
                // The back-off may outlast the move's deadline.
                if let Some(deadline) = m.deadline.as_mut() {
                    *deadline = (*deadline).max(now + wait + Duration::from_secs(4));
                }
            }
            self.wake_move(call_id, now + wait);
            return;
        }
        m.legs[party.index()].done = Some(outcome);
        let both = m.legs.iter().all(|l| l.done.is_some());
        if both {
            self.conclude_move(call_id, now);
        }
    }

    /// Both legs answered: commit, roll back, retry elsewhere or end the call.
    fn conclude_move(&mut self, call_id: &str, now: Instant) {
        let Some(m) = self.moves.get(call_id).cloned() else {
            return;
        };
        let Some(new_node) = m.new_node else {
            return;
        };
        let outcomes = [
            m.legs[0].done.clone().unwrap_or(Err(500)),
            m.legs[1].done.clone().unwrap_or(Err(500)),
        ];
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
        self.delete_on(new_node, call_id, now);
        let old_alive = self.relays.is_up(m.old_node);
        if old_alive {
            tracing::warn!(%call_id, ?outcomes, "re-anchoring refused by a party: rolling back to the old relay");
            for party in [Party::Caller, Party::Callee] {
                if outcomes[party.index()].is_ok() {
                    let old = self.call_media.get(call_id).and_then(|c| match party {
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
                        if let Some(call) = self.call_media.get_mut(call_id) {
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
        if let Some(m) = self.moves.get_mut(call_id) {
            m.attempts += 1;
            m.stage = Stage::WaitIdle;
            m.new_node = None;
        }
        self.wake_move(call_id, now + RETRY_PAUSE);
    }

    fn commit_move(
        &mut self,
        call_id: &str,
        m: &CallMove,
        new_node: NodeId,
        caller_answer: &Bytes,
        callee_answer: &Bytes,
        now: Instant,
    ) {
        let dialog_tags = self
            .dialogs
            .confirmed(call_id)
            .map(|d| (d.id.caller_tag.clone(), d.id.callee_tag.clone()));
        let Some(call) = self.call_media.get_mut(call_id) else {
            return;
        };
        // New per-leg options stay with the call: its later offers replay them.
        call.policy.caller_flags = m.target.caller.applied_to(&call.policy.caller_flags);
        call.policy.callee_flags = m.target.callee.applied_to(&call.policy.callee_flags);
        if let Some(set) = &m.target.set {
            call.policy.set = set.clone();
        }
        let policy = call.policy.clone();
        if let Some(sdp) = &m.sdp_for[Party::Caller.index()] {
            call.caller.record_sent(sdp);
        }
        if let Some(sdp) = &m.sdp_for[Party::Callee.index()] {
            call.callee.record_sent(sdp);
        }
        let caller_changed = carries_body(caller_answer)
            && media_changed(call.caller.received.as_ref(), caller_answer);
        let callee_changed = carries_body(callee_answer)
            && media_changed(call.callee.received.as_ref(), callee_answer);
        // A codec-like change must reach the other party too (a follow-up offer).
        let tell_caller = carries_body(callee_answer)
            && other_party_must_know(call.callee.received.as_ref(), callee_answer);
        let tell_callee = carries_body(caller_answer)
            && other_party_must_know(call.caller.received.as_ref(), caller_answer);
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
            if callee_changed {
                // The callee's new SDP, as an answer: the relay's rewrite is for the caller.
                let r = media::offer_answer(
                    true,
                    call_id,
                    &caller_tag,
                    Some(&callee_tag),
                    callee_answer.clone(),
                    &policy.caller_flags,
                );
                if let Some(id) = self.relays.send(new_node, &r, now) {
                    let wait = if tell_caller {
                        MediaWait::FollowUp {
                            call_id: call_id.to_string(),
                            party: Party::Caller,
                        }
                    } else {
                        MediaWait::Delete
                    };
                    self.media_waits.insert((new_node, id), wait);
                }
            }
            if caller_changed {
                // The caller's new SDP, as a re-offer: the relay's rewrite is for the callee.
                let r = media::offer_answer(
                    false,
                    call_id,
                    &caller_tag,
                    Some(&callee_tag),
                    caller_answer.clone(),
                    &policy.callee_flags,
                );
                if let Some(id) = self.relays.send(new_node, &r, now) {
                    let wait = if tell_callee {
                        MediaWait::FollowUp {
                            call_id: call_id.to_string(),
                            party: Party::Callee,
                        }
                    } else {
                        MediaWait::Delete
                    };
                    self.media_waits.insert((new_node, id), wait);
                }
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

    /// Ends a call the proxy can no longer carry: BYE to both parties, relay sessions deleted.
    pub(super) fn end_call(
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
            self.delete_on(node, call_id, now);
        }
        if let Some(call) = self.call_media.remove(call_id) {
            self.relays.count_call(call.node, -1);
        }
        self.waiting.remove(call_id);
        self.resuming.remove(call_id);
        self.delete_or_orphan(old_node, call_id, now);
        if let Some(id) = self.dialogs.confirmed(call_id).map(|d| d.id.clone()) {
            self.dialogs.remove(&id);
        }
    }

    /// Deletes the call's session on `node` if it is up; a down node's session is deleted
    /// when it comes back (a delete is never sent to a dead node, nor elsewhere).
    pub(super) fn delete_or_orphan(&mut self, node: NodeId, call_id: &str, now: Instant) {
        if self.relays.is_up(node) {
            self.delete_on(node, call_id, now);
        } else {
            self.orphans
                .entry(node)
                .or_default()
                .push(call_id.to_string());
        }
    }

    fn delete_on(&mut self, node: NodeId, call_id: &str, now: Instant) {
        if let Some(id) = self.relays.send(node, &media::delete(call_id), now) {
            self.media_waits.insert((node, id), MediaWait::Delete);
        }
    }

    pub(super) fn finish_move(&mut self, call_id: &str, result: MoveResult, now: Instant) {
        let Some(m) = self.moves.remove(call_id) else {
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

    /// After a move, a party's answer changed its codecs: the other party gets the relay's
    /// rewrite of it in a re-INVITE of ours (its own `o=`, one version up).
    pub(super) fn send_follow_up_offer(
        &mut self,
        call_id: &str,
        party: Party,
        sdp: Bytes,
        now: Instant,
    ) {
        let Some(call) = self.call_media.get_mut(call_id) else {
            return;
        };
        let leg = match party {
            Party::Caller => &mut call.caller,
            Party::Callee => &mut call.callee,
        };
        let sdp = sdp_for_leg(&sdp, leg.origin_sent.as_ref()).unwrap_or(sdp);
        leg.record_sent(&sdp);
        tracing::info!(%call_id, party = party.as_str(), "follow-up offer after a move: the other party's codecs changed");
        self.send_own_request(call_id, party, Method::Invite, Some(&sdp), now);
    }

    /// A BYE ended a call being moved: the session the move created goes too.
    pub(super) fn abandon_move(&mut self, call_id: &str, now: Instant) {
        if let Some(node) = self.moves.get(call_id).and_then(|m| m.new_node) {
            let current = self.call_media.get(call_id).map(|c| c.node);
            if current != Some(node) {
                self.delete_on(node, call_id, now);
            }
        }
        self.finish_move(call_id, MoveResult::CallEnded, now);
    }

    /// Whether a UA's own offer must wait (491) because the call is being moved.
    pub(super) fn move_in_progress(&self, call_id: &str) -> bool {
        self.moves
            .get(call_id)
            .is_some_and(|m| m.stage != Stage::WaitIdle)
    }
}

fn carries_body(sdp: &Bytes) -> bool {
    !sdp.is_empty()
}

/// Whether a Route/Record-Route value names this proxy.
fn route_is_us(value: &str, ours: &[(String, u16)]) -> bool {
    let inner = value
        .trim()
        .strip_prefix('<')
        .and_then(|v| v.split_once('>'))
        .map_or(value.trim(), |(uri, _)| uri);
    let Ok(uri) = Uri::parse(inner.as_bytes()) else {
        return false;
    };
    let Some(sip) = uri.as_sip() else {
        return false;
    };
    let host = sip.host.to_string();
    let port = sip.port.unwrap_or(5060);
    ours.iter()
        .any(|(h, p)| h.eq_ignore_ascii_case(&host) && *p == port)
}
