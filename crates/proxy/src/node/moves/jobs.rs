//! Re-anchoring jobs (DESIGN.md "Re-anchoring", triggers): the management commands (move a
//! node's or a set's calls, drain, undrain, rebalance), the health monitor's trigger, the job
//! queue and its pacing (`[proxy.reanchor]` jobs in flight and re-INVITEs per second), job
//! records and metrics.

use std::time::{Duration, Instant};

use crate::media::{self, NodeId};
use crate::reanchor::{CommandError, JobId, JobStatus, MoveResult, MoveTarget, Trigger};

use crate::node::io::{OrphanChange, Output};
use crate::node::moves::{CallMove, Job, ReanchorMetrics, DURATION_BOUNDS};
use crate::node::timers::TimerRef;
use crate::node::Proxy;

impl Proxy {
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
    ) -> Result<JobId, CommandError> {
        // A node by its name or its control address (`udp:IP:PORT`), of the command's engine
        // if it names one.
        let find = |name: &str| {
            let node = self
                .relays
                .by_name(name)
                .ok_or_else(|| CommandError::UnknownNode(name.to_string()))?;
            let actual = self.relays.nodes()[node].engine_kind();
            match target.engine {
                Some(asked) if asked != actual => Err(CommandError::WrongEngine {
                    node: name.to_string(),
                    actual,
                    asked,
                }),
                _ => Ok(node),
            }
        };
        // With a one-call move the engine is where the call goes; with a node's or a set's
        // calls, which calls move too (OpenSIPS' `rtp_relay_update engine=…`).
        let node = match from_node {
            Some(name) if call_id.is_none() => Some(find(name)?),
            Some(name) => Some(
                self.relays
                    .by_name(name)
                    .ok_or_else(|| CommandError::UnknownNode(name.to_string()))?,
            ),
            None => None,
        };
        for set in [from_set, target.set.as_deref()].into_iter().flatten() {
            if !self.relays.has_set(set) {
                return Err(CommandError::UnknownSet(set.to_string()));
            }
        }
        if let Some(name) = &target.node {
            find(name)?;
        }
        let engine = target.engine;
        let mut calls: Vec<String> = match call_id {
            Some(id) => {
                if self.calls.media(id).is_none() {
                    return Err(CommandError::UnknownCall(id.to_string()));
                }
                vec![id.to_string()]
            }
            None => self
                .calls
                .anchored()
                .filter(|(_, c)| node.is_none_or(|n| c.node == n))
                .filter(|(_, c)| from_set.is_none_or(|s| c.policy.set == s))
                .filter(|(_, c)| {
                    engine.is_none_or(|e| {
                        self.relays
                            .nodes()
                            .get(c.node)
                            .is_some_and(|n| n.engine_kind() == e)
                    })
                })
                .map(|(id, _)| id.as_str().to_string())
                .collect(),
        };
        calls.sort();
        Ok(self.queue_job(trigger, calls, target, now))
    }

    pub(in crate::node) fn queue_job(
        &mut self,
        trigger: Trigger,
        calls: Vec<String>,
        target: MoveTarget,
        now: Instant,
    ) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        let total = calls.len();
        tracing::info!(
            job = id.0,
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
    pub fn job(&self, id: JobId) -> Option<JobStatus> {
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
    pub fn drain_relay(&mut self, name: &str, now: Instant) -> Result<JobId, CommandError> {
        let node = self
            .relays
            .by_name(name)
            .ok_or_else(|| CommandError::UnknownNode(name.to_string()))?;
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
    pub fn undrain_relay(&mut self, name: &str, now: Instant) -> Result<(), CommandError> {
        let node = self
            .relays
            .by_name(name)
            .ok_or_else(|| CommandError::UnknownNode(name.to_string()))?;
        self.relays.set_draining(node, false);
        tracing::info!(relay = name, "relay undrained");
        self.resume_waiting(now);
        Ok(())
    }

    /// Evens the load of a set: moves calls from nodes above the set's average to the least
    /// loaded nodes until each is within one call of its weighted share.
    pub fn rebalance(&mut self, set: &str, now: Instant) -> Result<JobId, CommandError> {
        if !self.relays.has_set(set) {
            return Err(CommandError::UnknownSet(set.to_string()));
        }
        let members: Vec<NodeId> = (0..self.relays.nodes().len())
            .filter(|&n| self.relays.sets_of(n).iter().any(|s| s == set))
            .filter(|&n| self.relays.is_up(n) && !self.relays.nodes()[n].draining)
            .collect();
        let total_weight: u32 = members.iter().map(|&n| self.relays.nodes()[n].weight).sum();
        let total_calls: usize = self
            .calls
            .anchored()
            .filter(|(_, c)| c.policy.set == set)
            .count();
        let mut to_move = Vec::new();
        for &n in &members {
            let share = total_calls as f64 * f64::from(self.relays.nodes()[n].weight)
                / f64::from(total_weight.max(1));
            let mut on_node: Vec<String> = self
                .calls
                .anchored()
                .filter(|(_, c)| c.node == n && c.policy.set == set)
                .map(|(id, _)| id.as_str().to_string())
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
    pub(in crate::node) fn on_relay_health(&mut self, change: media::HealthChange, now: Instant) {
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
            let had_orphans = !orphans.is_empty();
            for call_id in orphans {
                self.delete_on(change.node, &call_id, now);
            }
            if had_orphans && self.records {
                self.records_out
                    .push_back(Output::Orphan(OrphanChange::Cleared {
                        relay: name.clone(),
                    }));
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
                .calls
                .anchored()
                .filter(|(_, c)| c.node == change.node)
                .map(|(id, _)| id.as_str().to_string())
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
    pub(in crate::node) fn pump_moves(&mut self, now: Instant) {
        self.pump_due = false;
        let per_second = f64::from(self.config.reanchor.per_second.max(1));
        let elapsed = now.saturating_duration_since(self.pace_at).as_secs_f64();
        self.pace_tokens = (self.pace_tokens + elapsed * per_second).min(per_second.max(1.0));
        self.pace_at = now;
        let ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.queue.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            loop {
                if self.calls.move_count() >= self.config.reanchor.max_in_flight {
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

    pub(in crate::node) fn begin_move(
        &mut self,
        job: JobId,
        trigger: Trigger,
        call_id: String,
        target: MoveTarget,
        now: Instant,
    ) {
        let Some(old_node) = self.calls.media(&call_id).map(|c| c.node) else {
            // The call ended while queued: nothing to move.
            self.count_job(job, MoveResult::Moved, now);
            return;
        };
        if self.calls.moving(&call_id).is_some() {
            // One move per call at a time; the running one serves this job too.
            self.count_job(job, MoveResult::Moved, now);
            return;
        }
        // A call that waited for a relay may go back to its old node, if that is the one that
        // came back: its session there is gone (or stale), and the move makes it anew.
        let tried = if self.calls.set_wait(&call_id, None).is_some() {
            Vec::new()
        } else {
            vec![old_node]
        };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.status.in_flight += 1;
        }
        self.calls.start_move(
            &call_id,
            CallMove::new(job, trigger, old_node, target, tried, now),
        );
        self.step_move(&call_id, now);
    }

    pub(in crate::node) fn count_job(&mut self, job: JobId, result: MoveResult, now: Instant) {
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
                    job = job.0,
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
}
