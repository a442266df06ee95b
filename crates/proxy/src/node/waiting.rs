//! Calls waiting for a relay: their relay node died while no node of their set (nor the
//! fallback set) could take them. They are kept — not ended, not dropped — with their dialog
//! state, so BYEs and in-dialog requests still go through, and moved as soon as a node becomes
//! available, the dead one included once it is back (its sessions are gone, so the call gets a
//! new session there through the normal re-anchoring procedure). An optional give-up time
//! (`[proxy.reanchor] give_up_s`, off by default) ends those that waited too long with a BYE
//! to both parties.
//!
//! Also here: [`Proxy::settle`], the end of every event, where queued moves are pumped.

use std::time::{Duration, Instant};

use super::calls::Wait;
use super::timers::TimerRef;
use super::Proxy;
use crate::reanchor::{MoveResult, MoveTarget, Trigger};

/// Calls given up per give-up timer; the rest wait for the next one, set at once.
const GIVE_UP_BATCH: usize = 1_000;
/// How often waiting calls are looked at again, besides when a node comes up.
const WAITING_RETRY: Duration = Duration::from_secs(1);

impl Proxy {
    /// The end of an event: queued moves start if a slot or the pace allows. Never called
    /// from inside a move's own code (see [`Proxy::pump_moves`]).
    pub(super) fn settle(&mut self, now: Instant) {
        if self.pump_due {
            self.pump_moves(now);
        }
        self.flush_call_records(now);
    }

    /// The call's relay is dead and no node can take it: its move ends as "waiting" and the
    /// call is kept until a node can.
    pub(super) fn wait_for_relay(&mut self, call_id: &str, now: Instant) {
        tracing::warn!(%call_id, "re-anchoring: no relay node can take the call; it waits for one");
        self.finish_move(call_id, MoveResult::Waiting, now);
        self.start_waiting(call_id, now);
    }

    /// The call waits for a relay from `now` (kept, with a retry timer and the give-up time).
    pub(super) fn start_waiting(&mut self, call_id: &str, now: Instant) {
        if matches!(self.calls.wait(call_id), Some(Wait::Since(_))) {
            return;
        }
        self.calls.set_wait(call_id, Some(Wait::Since(now)));
        self.waiting_order.push_back((now, call_id.to_string()));
        if self.retry_timer.is_none() {
            self.retry_timer = Some(now + WAITING_RETRY);
            self.timers
                .push(now + WAITING_RETRY, TimerRef::WaitingRetry);
        }
        let give_up = self.config.reanchor.give_up_s;
        if give_up > 0 && self.give_up_timer.is_none() {
            let at = now + Duration::from_secs(give_up);
            self.give_up_timer = Some(at);
            self.timers.push(at, TimerRef::WaitingGiveUp);
        }
    }

    /// The retry timer: waiting calls are looked at again (a node may have become able to
    /// take them without changing state, e.g. no longer busy); set again while any wait.
    pub(super) fn on_waiting_retry(&mut self, now: Instant) {
        self.retry_timer = None;
        self.resume_waiting(now);
        if self.calls.waiting_count() > 0 {
            self.retry_timer = Some(now + WAITING_RETRY);
            self.timers
                .push(now + WAITING_RETRY, TimerRef::WaitingRetry);
        }
    }

    /// A node became available (up, or undrained): every waiting call whose set (or the
    /// fallback set) can take calls now is moved, in one job. Costs one look at each set
    /// when none can, so the retry timer is cheap while every relay is down.
    pub(super) fn resume_waiting(&mut self, now: Instant) {
        if self.calls.waiting_count() == 0 {
            return;
        }
        let fallback_open = self
            .config
            .reanchor
            .fallback_set
            .as_deref()
            .is_some_and(|set| self.relays.pick(set, &[]).is_some());
        let open_sets: std::collections::HashSet<&str> = self
            .config
            .relay_sets
            .iter()
            .map(|s| s.name.as_str())
            .filter(|set| self.relays.pick(set, &[]).is_some())
            .collect();
        if !fallback_open && open_sets.is_empty() {
            return;
        }
        let mut calls: Vec<String> = self
            .calls
            .waiting_ids()
            .filter(|(_, call)| {
                fallback_open
                    || call
                        .media
                        .as_ref()
                        .is_some_and(|c| open_sets.contains(c.policy.set.as_str()))
            })
            .map(|(id, _)| id.as_str().to_string())
            .collect();
        if calls.is_empty() {
            return;
        }
        calls.sort();
        // Taken out of the waiting list while their job runs (so the retry timer does not
        // queue them twice); a call no node can take after all waits again.
        for call_id in &calls {
            self.calls.set_wait(call_id, Some(Wait::Resuming));
        }
        tracing::info!(
            calls = calls.len(),
            "a relay node is available: moving the calls that waited for one"
        );
        self.queue_job(Trigger::RelayAvailable, calls, MoveTarget::default(), now);
    }

    /// Ends the calls that have waited for a relay longer than the give-up time.
    pub(super) fn give_up_waiting(&mut self, now: Instant) {
        let limit = Duration::from_secs(self.config.reanchor.give_up_s);
        let mut ended = 0;
        while let Some((since, call_id)) = self.waiting_order.front().cloned() {
            // Entries of calls that stopped waiting (moved, ended) or waited again later.
            if self.calls.wait(&call_id) != Some(Wait::Since(since)) {
                self.waiting_order.pop_front();
                continue;
            }
            if now.saturating_duration_since(since) < limit {
                self.set_give_up_timer(since + limit);
                return;
            }
            if ended == GIVE_UP_BATCH {
                self.set_give_up_timer(now);
                return;
            }
            self.waiting_order.pop_front();
            ended += 1;
            tracing::warn!(%call_id, waited_s = now.saturating_duration_since(since).as_secs(), "no relay came back for the call in time: ending it");
            let node = self.calls.media(&call_id).map(|c| c.node);
            if let Some(node) = node {
                self.end_call(&call_id, None, node, now);
            }
            self.calls.set_wait(&call_id, None);
            *self
                .move_results
                .entry((Trigger::NodeDown, MoveResult::CallEnded))
                .or_default() += 1;
        }
    }

    fn set_give_up_timer(&mut self, at: Instant) {
        if self.give_up_timer.is_none() {
            self.give_up_timer = Some(at);
            self.timers.push(at, TimerRef::WaitingGiveUp);
        }
    }

    /// Calls waiting for a relay.
    pub fn waiting_calls(&self) -> usize {
        self.calls.waiting_count()
    }

    /// Since when `call_id` waits for a relay, if it does.
    pub fn waiting_since(&self, call_id: &str) -> Option<Instant> {
        match self.calls.wait(call_id) {
            Some(Wait::Since(since)) => Some(since),
            _ => None,
        }
    }
}
