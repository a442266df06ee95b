//! The store task: the one owner of the backend (the Redis connection). It writes the dirty
//! calls in batches, answers the awaited requests, retries after failures and refills an empty
//! Redis from the live calls it knows.
//!
//! Batching needs no timer: whatever became dirty while the previous batch was on the wire
//! goes out in the next one, so under load each call's many changes coalesce into one write,
//! and at rest a change goes out at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::backend::ownership::NodeState;
use crate::backend::{Backend, Write};
use crate::error::StoreError;
use crate::pending::{Op, SharedPending};
use crate::record::{CallRecord, CseqReserved};
use crate::status::StoreStatus;

/// Most refused calls remembered for their durable puts (then forgotten all at once).
const MAX_FENCED_REMEMBERED: usize = 4096;

/// A request that the caller awaits.
pub(crate) enum Request {
    /// Reply once the changes numbered up to `seq` (of `call_id`, or of every call) are written.
    Flush {
        call_id: Option<String>,
        seq: u64,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Raise the call's reserved CSeq numbers durably.
    Reserve {
        call_id: String,
        upto: CseqReserved,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Read one call.
    Load {
        call_id: String,
        reply: oneshot::Sender<Result<Option<CallRecord>, StoreError>>,
    },
    /// Read every call of a node.
    LoadOwned {
        node: String,
        reply: oneshot::Sender<Result<Vec<CallRecord>, StoreError>>,
    },
    /// Take one call for this node, whoever owns it.
    Claim {
        call_id: String,
        reply: oneshot::Sender<Result<Option<CallRecord>, StoreError>>,
    },
    /// Take every call a node owns.
    ClaimOf {
        node: String,
        /// Only this node's share among these live nodes (rendezvous), if given.
        share: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Vec<CallRecord>, StoreError>>,
    },
    /// A session to delete when its relay comes back.
    AddOrphan {
        relay: String,
        call_id: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A relay's sessions to delete were deleted.
    ClearOrphans {
        relay: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Take a node's sessions to delete.
    TakeOrphans {
        node: String,
        share: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Vec<(String, String)>, StoreError>>,
    },
    /// Publish this node's calls per relay.
    PublishRelayCalls {
        calls: Vec<(String, u64)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The calls other nodes published per relay, summed.
    RelayCallsOf {
        nodes: Vec<String>,
        reply: oneshot::Sender<Result<std::collections::HashMap<String, u64>, StoreError>>,
    },
    /// Which node start owns a call.
    Owner {
        call_id: String,
        reply: oneshot::Sender<Result<Option<String>, StoreError>>,
    },
    /// Record a relay drained or undrained.
    SetDrained {
        relay: String,
        drained: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// The relays drained cluster-wide.
    Drained {
        reply: oneshot::Sender<Result<Vec<String>, StoreError>>,
    },
    /// The nodes sharing the store.
    Nodes {
        reply: oneshot::Sender<Result<Vec<NodeState>, StoreError>>,
    },
}

/// State shared by the handles and the task.
pub(crate) struct Shared {
    /// The unwritten changes.
    pub pending: SharedPending,
    /// Wakes the task after a put or delete.
    pub wake: Notify,
    /// What `status()` returns, but for `dirty_calls`.
    pub status: Mutex<StoreStatus>,
    /// This node's SIP address, written with its heartbeat (other nodes forward to it).
    pub sip: Mutex<Option<String>>,
    /// Calls whose writes the store refused since the last look: another node owns them.
    pub fenced: Mutex<Vec<String>>,
    /// Calls of the batch on the wire now (taken from `pending`, not yet written).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Wakes whoever waits for fenced calls.
    pub fenced_wake: Notify,
}

struct Waiter {
    call_id: Option<String>,
    seq: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Timing settings of the task.
pub(crate) struct Timing {
    pub retry: Duration,
    pub check_interval: Duration,
    pub max_batch: usize,
    /// How often the heartbeat is written, and how long it lives.
    pub heartbeat: Duration,
    pub lease: Duration,
}

pub(crate) struct Task {
    pub shared: Arc<Shared>,
    pub backend: Backend,
    pub requests: mpsc::Receiver<Request>,
    pub node: String,
    pub timing: Timing,
    /// The latest record of every live call this handle wrote or loaded.
    pub live: HashMap<String, Arc<CallRecord>>,
    /// Calls whose writes were refused, with the last change number the refusal covers: a
    /// durable put waiting for one of those changes is answered [`StoreError::Fenced`].
    pub fenced_upto: HashMap<String, u64>,
}

impl Task {
    fn update_status(&self, f: impl FnOnce(&mut StoreStatus)) {
        let mut status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut status);
        status.live_calls = self.live.len();
    }

    fn failed(&self, error: &StoreError) {
        let text = error.to_string();
        let was_up = self.shared.status.lock().map(|s| s.up).unwrap_or(true);
        if was_up {
            tracing::warn!("call store down: {text}");
        }
        self.update_status(|s| {
            s.up = false;
            s.write_errors += 1;
            s.last_error = Some(text);
        });
    }

    fn succeeded(&self) {
        let was_up = self.shared.status.lock().map(|s| s.up).unwrap_or(true);
        if !was_up {
            tracing::info!("call store up again");
        }
        self.update_status(|s| s.up = true);
    }

    /// Runs until every handle is dropped, then writes what is left (once).
    pub async fn run(mut self) {
        let mut waiters: Vec<Waiter> = Vec::new();
        let mut retry_at: Option<Instant> = None;
        let mut next_check = Instant::now() + self.timing.check_interval;
        let mut next_beat = Instant::now();
        let mut was_down = false;
        let mut open = true;
        while open || self.shared.pending.lock().len() > 0 {
            let now = Instant::now();
            if now >= next_check || (was_down && retry_at.is_none_or(|t| now >= t)) {
                next_check = now + self.timing.check_interval;
                if self.check_marker().await {
                    was_down = false;
                    retry_at = None;
                } else {
                    was_down = true;
                    retry_at = Some(now + self.timing.retry);
                }
            }
            if now >= next_beat && !was_down {
                // A beat says the node is alive with its data: Redis must still have its
                // marker (else the live calls are written again first).
                next_beat = now + self.timing.heartbeat;
                if self.check_marker().await {
                    let sip = self
                        .shared
                        .sip
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    let result = self
                        .backend
                        .heartbeat(self.timing.lease, sip.as_deref())
                        .await;
                    self.outcome(&result);
                } else {
                    was_down = true;
                    retry_at = Some(now + self.timing.retry);
                }
            }
            let dirty = self.shared.pending.lock().len() > 0;
            let may_write = retry_at.is_none_or(|t| Instant::now() >= t);
            if dirty && may_write {
                match self.write_batch(&waiters).await {
                    Ok(()) => {
                        retry_at = None;
                        self.answer_waiters(&mut waiters);
                    }
                    Err(error) => {
                        retry_at = Some(Instant::now() + self.timing.retry);
                        was_down = true;
                        for w in waiters.drain(..) {
                            let _ = w.reply.send(Err(clone_error(&error)));
                        }
                        if !open {
                            break;
                        }
                    }
                }
                // Serve requests between batches, without waiting.
                while let Ok(request) = self.requests.try_recv() {
                    self.handle(request, &mut waiters).await;
                }
                continue;
            }
            self.answer_waiters(&mut waiters);
            if !open {
                break;
            }
            let wake_at = match retry_at {
                Some(t) if dirty || was_down => t.min(next_check),
                _ => next_check,
            }
            .min(next_beat);
            tokio::select! {
                () = self.shared.wake.notified() => {}
                request = self.requests.recv() => match request {
                    Some(request) => self.handle(request, &mut waiters).await,
                    None => open = false,
                },
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
    }

    async fn handle(&mut self, request: Request, waiters: &mut Vec<Waiter>) {
        match request {
            Request::Flush {
                call_id,
                seq,
                reply,
            } => waiters.push(Waiter {
                call_id,
                seq,
                reply,
            }),
            Request::Reserve {
                call_id,
                upto,
                reply,
            } => {
                let result = self.backend.reserve(&call_id, upto).await;
                self.outcome(&result);
                let result = match result {
                    Ok(true) => {
                        if let Some(record) = self.live.get_mut(&call_id) {
                            let merged = record.cseq_reserved.max(upto);
                            Arc::make_mut(record).cseq_reserved = merged;
                        }
                        Ok(())
                    }
                    Ok(false) => {
                        self.fence(vec![call_id.clone()]);
                        Err(StoreError::Fenced { call_id })
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            Request::Load { call_id, reply } => {
                let started = Instant::now();
                let result = self.backend.load(&call_id).await;
                self.loaded(started, &result);
                let _ = reply.send(result);
            }
            Request::LoadOwned { node, reply } => {
                let started = Instant::now();
                let result = self.backend.load_owned(&node).await;
                self.loaded(started, &result);
                if let Ok(records) = &result {
                    for record in records {
                        self.live
                            .insert(record.call_id.clone(), Arc::new(record.clone()));
                    }
                    self.update_status(|_| {});
                }
                let _ = reply.send(result);
            }
            Request::Claim { call_id, reply } => {
                let started = Instant::now();
                let result = self.backend.claim(&call_id, &self.node).await;
                self.loaded(started, &result);
                if let Ok(Some(record)) = &result {
                    self.claimed(std::slice::from_ref(record));
                }
                let _ = reply.send(result);
            }
            Request::ClaimOf { node, share, reply } => {
                let started = Instant::now();
                let result = self
                    .backend
                    .claim_of(&node, &self.node, share.as_deref())
                    .await;
                self.loaded(started, &result);
                if let Ok(records) = &result {
                    self.claimed(records);
                }
                let _ = reply.send(result);
            }
            Request::SetDrained {
                relay,
                drained,
                reply,
            } => {
                let result = self.backend.set_drained(&relay, drained).await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::Drained { reply } => {
                let result = self.backend.drained().await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::AddOrphan {
                relay,
                call_id,
                reply,
            } => {
                let result = self.backend.add_orphan(&relay, &call_id).await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::ClearOrphans { relay, reply } => {
                let result = self.backend.clear_orphans(&relay).await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::TakeOrphans { node, share, reply } => {
                let result = self
                    .backend
                    .take_orphans_of(&node, &self.node, share.as_deref())
                    .await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::PublishRelayCalls { calls, reply } => {
                let result = self
                    .backend
                    .publish_relay_calls(&calls, self.timing.lease)
                    .await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::RelayCallsOf { nodes, reply } => {
                let result = self.backend.relay_calls_of(&nodes).await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::Owner { call_id, reply } => {
                let result = self.backend.owner(&call_id).await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
            Request::Nodes { reply } => {
                let result = self.backend.nodes().await;
                self.outcome(&result);
                let _ = reply.send(result);
            }
        }
    }

    /// Calls this node now owns: live (written again if Redis loses its data), counted.
    fn claimed(&mut self, records: &[CallRecord]) {
        for record in records {
            self.live
                .insert(record.call_id.clone(), Arc::new(record.clone()));
        }
        let count = records.len() as u64;
        self.update_status(|s| s.claimed_calls += count);
    }

    /// Calls another node owns now: forgotten here, counted, and told to the node's core.
    fn fence(&mut self, call_ids: Vec<String>) {
        for call_id in &call_ids {
            self.live.remove(call_id);
            tracing::warn!(%call_id, "another node owns this call now: this node's write was refused");
        }
        let count = call_ids.len() as u64;
        self.update_status(|s| s.fenced_writes += count);
        self.shared
            .fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(call_ids);
        self.shared.fenced_wake.notify_one();
    }

    fn outcome<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(error),
        }
    }

    fn loaded<T>(&self, started: Instant, result: &Result<T, StoreError>) {
        self.outcome(result);
        let ms = started.elapsed().as_secs_f64() * 1e3;
        self.update_status(|s| s.last_load_ms = Some(ms));
    }

    /// Checks that the backend still has this node's marker; if not, every live call becomes
    /// dirty so the next batches write it again.
    async fn check_marker(&mut self) -> bool {
        match self.backend.check_marker().await {
            Ok(true) => {
                self.succeeded();
                true
            }
            Ok(false) if self.live.is_empty() => {
                self.succeeded();
                true
            }
            Ok(false) => {
                tracing::warn!(
                    calls = self.live.len(),
                    "Redis lost this node's data (restarted empty?): writing every live call again"
                );
                let mut pending = self.shared.pending.lock();
                for (call_id, record) in &self.live {
                    pending.refill(call_id, record.clone());
                }
                drop(pending);
                self.succeeded();
                self.update_status(|s| s.refills += 1);
                true
            }
            Err(error) => {
                self.failed(&error);
                false
            }
        }
    }

    /// Writes one batch of dirty calls, the waiters' first.
    async fn write_batch(&mut self, waiters: &[Waiter]) -> Result<(), StoreError> {
        let first: Vec<String> = waiters.iter().filter_map(|w| w.call_id.clone()).collect();
        let batch = self
            .shared
            .pending
            .lock()
            .take(&first, self.timing.max_batch);
        if batch.is_empty() {
            return Ok(());
        }
        let seq_at_take = self.shared.pending.lock().seq();
        // Still unwritten while on the wire: `status()` counts them as dirty.
        let in_flight = &self.shared.in_flight;
        in_flight.store(batch.len(), std::sync::atomic::Ordering::Relaxed);
        let owners: Vec<(&str, Option<&str>)> = batch
            .iter()
            .map(|(call_id, entry)| {
                let known = self.live.get(call_id).map(|r| r.owner.as_str());
                match &entry.op {
                    Op::Put(record) => (
                        record.owner.as_str(),
                        known.filter(|old| *old != record.owner),
                    ),
                    Op::Delete => (known.unwrap_or(self.node.as_str()), None),
                }
            })
            .collect();
        let writes: Vec<Write<'_>> = batch
            .iter()
            .zip(&owners)
            .map(|((call_id, entry), (owner, old_owner))| Write {
                call_id,
                op: &entry.op,
                owner,
                old_owner: *old_owner,
            })
            .collect();
        let result = self.backend.write(&writes).await;
        drop(writes);
        drop(owners);
        let clear_in_flight = |shared: &Shared| {
            shared
                .in_flight
                .store(0, std::sync::atomic::Ordering::Relaxed)
        };
        match result {
            Ok(done) => {
                let count = batch.len() as u64;
                let mut fenced = Vec::new();
                for ((call_id, entry), done) in batch.into_iter().zip(done) {
                    match entry.op {
                        _ if !done => fenced.push(call_id),
                        Op::Put(record) => {
                            self.live.insert(call_id, record);
                        }
                        Op::Delete => {
                            self.live.remove(&call_id);
                        }
                    }
                }
                if !fenced.is_empty() {
                    if self.fenced_upto.len() + fenced.len() > MAX_FENCED_REMEMBERED {
                        self.fenced_upto.clear();
                    }
                    for call_id in &fenced {
                        self.fenced_upto.insert(call_id.clone(), seq_at_take);
                    }
                    self.fence(fenced);
                }
                clear_in_flight(&self.shared);
                self.succeeded();
                self.update_status(|s| s.records_written += count);
                Ok(())
            }
            Err(error) => {
                self.shared.pending.lock().restore(batch);
                clear_in_flight(&self.shared);
                self.failed(&error);
                Err(error)
            }
        }
    }

    fn answer_waiters(&self, waiters: &mut Vec<Waiter>) {
        let pending = self.shared.pending.lock();
        let mut i = 0;
        while i < waiters.len() {
            let refused = waiters[i].call_id.as_ref().filter(|c| {
                self.fenced_upto
                    .get(c.as_str())
                    .is_some_and(|upto| waiters[i].seq <= *upto)
            });
            if let Some(call_id) = refused {
                // A durable put of a call another node owns did not happen: its caller must
                // not go on as if it had.
                let call_id = call_id.clone();
                let w = waiters.swap_remove(i);
                let _ = w.reply.send(Err(StoreError::Fenced { call_id }));
            } else if pending.written(waiters[i].call_id.as_deref(), waiters[i].seq) {
                let w = waiters.swap_remove(i);
                let _ = w.reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
    }
}

/// A copy of `error` for each waiter of a failed batch.
fn clone_error(error: &StoreError) -> StoreError {
    match error {
        StoreError::Auth { location, detail } => StoreError::Auth {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::Timeout {
            location,
            timeout_ms,
        } => StoreError::Timeout {
            location: location.clone(),
            timeout_ms: *timeout_ms,
        },
        StoreError::Redis { location, detail } => StoreError::Redis {
            location: location.clone(),
            detail: detail.clone(),
        },
        StoreError::Fenced { call_id } => StoreError::Fenced {
            call_id: call_id.clone(),
        },
        other => StoreError::Redis {
            location: String::new(),
            detail: other.to_string(),
        },
    }
}
