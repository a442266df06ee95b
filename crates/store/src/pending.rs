//! The calls whose latest state is not written yet: a map from Call-ID to the newest record
//! (or a deletion), shared by the [`crate::Store`] handles and the store task.
//!
//! It is the store's only queue. A put replaces the call's entry, so the map never holds more
//! than one entry per call, however long Redis is away: it is bounded by the live calls (plus
//! the calls that ended during an outage), not by the number of changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::record::CallRecord;

/// What is to be written for one call.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Its newest record.
    Put(Arc<CallRecord>),
    /// It ended.
    Delete,
}

/// One call's unwritten change.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// What to write.
    pub op: Op,
    /// The sequence number of the oldest change folded into this entry: a waiter for a change
    /// numbered `n` is satisfied once no entry has `oldest <= n`.
    pub oldest: u64,
}

/// The dirty map and the sequence counter.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    entries: HashMap<String, Entry>,
    next_seq: u64,
}

/// [`Pending`] behind a mutex held only for map operations (never across an await).
#[derive(Debug, Default)]
pub(crate) struct SharedPending(Mutex<Pending>);

impl SharedPending {
    pub fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is
        // one insert or remove), so a poisoned lock is still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Pending {
    /// Records `op` for `call_id`, replacing an older unwritten change; returns its sequence
    /// number.
    pub fn set(&mut self, call_id: &str, op: Op) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        match self.entries.get_mut(call_id) {
            Some(entry) => entry.op = op,
            None => {
                self.entries
                    .insert(call_id.to_string(), Entry { op, oldest: seq });
            }
        }
        seq
    }

    /// The current sequence number (the last one handed out).
    pub fn seq(&self) -> u64 {
        self.next_seq
    }

    /// Number of calls with an unwritten change.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes up to `max` entries out, those of `first` before any other.
    pub fn take(&mut self, first: &[String], max: usize) -> Vec<(String, Entry)> {
        let mut out = Vec::with_capacity(max.min(self.entries.len()));
        for call_id in first {
            if out.len() >= max {
                break;
            }
            if let Some(entry) = self.entries.remove(call_id) {
                out.push((call_id.clone(), entry));
            }
        }
        let rest: Vec<String> = self
            .entries
            .keys()
            .take(max.saturating_sub(out.len()))
            .cloned()
            .collect();
        for call_id in rest {
            if let Some(entry) = self.entries.remove(&call_id) {
                out.push((call_id, entry));
            }
        }
        out
    }

    /// Puts back entries whose write failed. A change made meanwhile wins, but keeps the older
    /// sequence number so that waiters for the failed change go on waiting.
    pub fn restore(&mut self, failed: Vec<(String, Entry)>) {
        for (call_id, entry) in failed {
            match self.entries.get_mut(&call_id) {
                Some(newer) => newer.oldest = newer.oldest.min(entry.oldest),
                None => {
                    self.entries.insert(call_id, entry);
                }
            }
        }
    }

    /// Marks `call_id` to be written again with `record` unless it already has a change.
    pub fn refill(&mut self, call_id: &str, record: Arc<CallRecord>) {
        if !self.entries.contains_key(call_id) {
            self.set(call_id, Op::Put(record));
        }
    }

    /// Whether every change numbered `seq` or lower (of `call_id` only, if given) is written.
    pub fn written(&self, call_id: Option<&str>, seq: u64) -> bool {
        match call_id {
            Some(call_id) => self.entries.get(call_id).is_none_or(|e| e.oldest > seq),
            None => self.entries.values().all(|e| e.oldest > seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(p: &mut Pending, call: &str, t: u64) -> u64 {
        p.set(call, Op::Put(Arc::new(CallRecord::new(call, "n1", t))))
    }

    #[test]
    fn latest_state_wins_and_the_map_holds_one_entry_per_call() {
        let mut p = Pending::default();
        for t in 0..1000 {
            put(&mut p, "a", t);
            put(&mut p, "b", t);
        }
        p.set("b", Op::Delete);
        assert_eq!(p.len(), 2);
        let batch = p.take(&[], 10);
        assert_eq!(batch.len(), 2);
        for (call, entry) in batch {
            match (call.as_str(), entry.op) {
                ("a", Op::Put(r)) => assert_eq!(r.updated_unix_ms, 999),
                ("b", Op::Delete) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn a_failed_write_keeps_waiters_waiting_until_a_newer_state_is_written() {
        let mut p = Pending::default();
        let s1 = put(&mut p, "a", 1);
        let batch = p.take(&[], 10);
        assert!(p.written(Some("a"), s1));
        let s2 = put(&mut p, "a", 2);
        p.restore(batch);
        assert!(!p.written(Some("a"), s1));
        assert!(!p.written(None, s1));
        let batch = p.take(&["a".to_string()], 1);
        match &batch[0].1.op {
            Op::Put(r) => assert_eq!(r.updated_unix_ms, 2),
            Op::Delete => panic!("expected the newer put"),
        }
        assert!(p.written(Some("a"), s2));
        assert!(p.written(None, s2));
    }
}
