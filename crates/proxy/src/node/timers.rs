//! The proxy node's deadlines: what is due next, cheaply.
//!
//! The heap holds only `(deadline, sequence, slot)`: 24 bytes, compared by deadline and then
//! by the order the timers were set (a timer set earlier fires first among equal deadlines).
//! What a timer is for lives in a slab beside it. Keeping the [`TimerRef`] (with its transaction
//! keys as strings) in the heap itself made every sift move the strings and, whenever two
//! deadlines were equal — timers set in the same event share their `now` — compare them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::transactions::ServerId;

/// What a deadline in the [`TimerQueue`] is for: copyable ids, never keys or strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerRef {
    Server(ServerId),
    Client(super::transactions::ClientId),
    Dialogs,
    /// One of our own requests (re-anchoring re-INVITEs, BYEs).
    Own(super::moves::own_tx::OwnId),
    /// A call being re-anchored (idle wait, 491 back-off, deadline).
    Move(super::calls::CallKey),
    /// Pacing of queued re-anchoring moves.
    Pace,
    /// Calls waiting for a relay that have waited past `[proxy.reanchor] give_up_s`.
    WaitingGiveUp,
    /// Calls waiting for a relay are looked at again.
    WaitingRetry,
    /// Messages parked for a call being loaded from the store have waited long enough.
    Parking,
    /// The changed calls' records go out (`record_delay`).
    RecordFlush,
    /// The records of calls that came up or ended go out (shortly: what else the same
    /// exchange changes — the relay's answer after a 200 — joins them).
    UrgentFlush,
    /// The branches of an imported call's initial INVITE are kept no longer.
    InviteBranches(super::calls::CallKey),
}

/// Deadlines and what each is for.
#[derive(Default)]
pub(super) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    slots: Vec<Option<TimerRef>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl TimerQueue {
    /// Sets a timer. Setting a new deadline for the same thing leaves the old entry, which its
    /// owner recognises as stale when it fires (lazy deletion).
    pub(super) fn push(&mut self, at: Instant, what: TimerRef) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(what);
                slot
            }
            None => {
                self.slots.push(Some(what));
                // The slab holds one slot per pending timer; more than 2^32 cannot be pending.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.next_seq += 1;
        self.heap.push(Reverse((at, self.next_seq, slot)));
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns a timer due at `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerRef> {
        loop {
            let Reverse((at, _, slot)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            let what = self.slots.get_mut(slot as usize).and_then(Option::take);
            self.free.push(slot);
            if what.is_some() {
                return what;
            }
        }
    }

    /// Pending entries (live deadlines and stale ones not yet popped).
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::super::calls::{Call, CallId};
    use super::super::slab::Slab;
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
    fn due_timers_come_out_by_deadline_then_in_the_order_they_were_set() {
        let t0 = Instant::now();
        let mut calls: Slab<CallId, Call> = Slab::default();
        let mut id = |name: &str| TimerRef::Move(calls.insert(name.into(), Call::default()));
        let (late, a, b) = (id("late"), id("a"), id("b"));
        let mut q = TimerQueue::default();
        q.push(t0 + Duration::from_millis(20), late);
        q.push(t0 + Duration::from_millis(10), b);
        q.push(t0 + Duration::from_millis(10), a);
        q.push(t0 + Duration::from_millis(10), TimerRef::Pace);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.pop_due(t0), None);
        let due: Vec<_> =
            std::iter::from_fn(|| q.pop_due(t0 + Duration::from_millis(10))).collect();
        assert_eq!(due, vec![b, a, TimerRef::Pace]);
        assert_eq!(q.len(), 1);
        // Freed slots are reused: the slab stays at the peak of pending timers.
        for _ in 0..3 {
            q.push(t0 + Duration::from_millis(30), TimerRef::WaitingRetry);
        }
        assert_eq!(q.slots.len(), 4);
        assert_eq!(q.pop_due(t0 + Duration::from_millis(20)), Some(late));
        assert_eq!(q.len(), 3);
    }
}
