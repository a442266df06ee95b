//! Anchorage's call store: the state of every call as one versioned [`CallRecord`], kept in
//! memory (the embedded default) or in Redis (`[cluster] store`), so another process can carry
//! the calls on. This is the only crate that talks to Redis.
//!
//! [`Store`] is a cheap, cloneable handle to one task that owns the backend:
//! * [`Store::put`] and [`Store::delete`] never wait: they replace the call's entry in a map of
//!   unwritten changes (latest state wins) and wake the task, which writes whatever is dirty in
//!   one pipeline. The map holds at most one entry per call, however long Redis is away.
//! * [`Store::put_durable`] and [`Store::reserve_cseq`] return once Redis has the change: what the
//!   caller does next (send a re-INVITE, use a CSeq number) may rely on it.
//! * [`Store::load`] and [`Store::load_owned`] read records, within `cluster.timeout_ms`.
//! * When Redis fails, changes accumulate (latest per call) and [`Store::status`] says so; when
//!   it answers again they are written. A Redis that lost this node's marker key (restarted
//!   empty) gets every live call written again.
#![warn(missing_docs)]

mod backend;
mod error;
mod pending;
pub mod record;
mod status;
mod task;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anchorage_config::cluster::Secret;
use anchorage_config::ClusterConfig;
use tokio::sync::{mpsc, oneshot};

use backend::link::Target;
use backend::memory::MemoryBackend;
use backend::redis::RedisBackend;
use backend::Backend;
use pending::{Op, SharedPending};
use task::{Request, Shared, Task, Timing};

pub use backend::ownership::NodeState;
pub use error::StoreError;
pub use record::{
    CallRecord, CseqReserved, DialogRecord, DialogState, InviteDestination, LegMediaRecord,
    LegRecord, MediaRecord, MoveRecord, MoveStage, OpenInviteRecord, OriginRecord, RecordError,
    RenumberRecord, RtppLegRecord, Transport, RECORD_VERSION,
};
pub use status::StoreStatus;

/// Awaited requests waiting for the task at most; a caller beyond that waits its turn.
const REQUEST_QUEUE: usize = 1024;

/// A handle to the call store. Clones share one task; the task ends (after a last attempt to
/// write what is dirty) when every handle is dropped.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    timeout: Duration,
}

impl Store {
    /// Opens the store that `config` names for node `node` (its `[node] id`): Redis if
    /// `cluster.store` is set, else memory. Must run inside a tokio runtime.
    ///
    /// Fails on a bad location, an unreadable password or CA file, or credentials that Redis
    /// refuses. A Redis that cannot be reached is not an error: the store starts down, keeps
    /// the changes and writes them once Redis answers.
    pub async fn open(config: &ClusterConfig, node: &str) -> Result<Store, StoreError> {
        let Some(location) = config.location().map_err(StoreError::Config)? else {
            return Ok(Store::memory(node));
        };
        let password = match (&location.password, &config.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(read_password(path)?),
            (None, None) => None,
        };
        let ca = match &config.tls_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| StoreError::File {
                key: "cluster.tls_ca_file",
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let target = Target {
            location: location.clone(),
            password,
            ca,
            timeout,
        };
        let mut redis = RedisBackend::new(
            &target,
            &config.key_prefix,
            node,
            new_marker(),
            Duration::from_secs(config.record_ttl_s),
            config.mode != anchorage_config::ClusterMode::Single,
        )?;
        let started = match redis.connect().await {
            Ok(()) => redis.set_marker().await,
            Err(error) => Err(error),
        };
        let last_error = match started {
            Ok(()) => None,
            Err(error @ StoreError::Auth { .. }) => return Err(error),
            Err(error) => {
                tracing::warn!("call store {location} not reachable at start: {error}");
                Some(error.to_string())
            }
        };
        tracing::info!("call store: {location} (node {node})");
        let status = StoreStatus {
            backend: "redis",
            location: Some(location.to_string()),
            up: last_error.is_none(),
            last_error,
            ..empty_status("redis")
        };
        Ok(Store::start(
            Backend::Redis(Box::new(redis)),
            status,
            node,
            config,
            timeout,
        ))
    }

    /// A memory store for node `node` (the embedded default). Must run inside a tokio runtime.
    pub fn memory(node: &str) -> Store {
        Store::start(
            Backend::Memory(MemoryBackend::default()),
            empty_status("memory"),
            node,
            &ClusterConfig::default(),
            Duration::from_millis(ClusterConfig::default().timeout_ms),
        )
    }

    fn start(
        backend: Backend,
        status: StoreStatus,
        node: &str,
        config: &ClusterConfig,
        timeout: Duration,
    ) -> Store {
        let shared = Arc::new(Shared {
            pending: SharedPending::default(),
            wake: tokio::sync::Notify::new(),
            status: Mutex::new(status),
            sip: Mutex::new(None),
            fenced: Mutex::new(Vec::new()),
            fenced_wake: tokio::sync::Notify::new(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE);
        let task = Task {
            shared: shared.clone(),
            backend,
            requests: receiver,
            node: node.to_string(),
            timing: Timing {
                retry: Duration::from_millis(config.retry_ms),
                check_interval: Duration::from_millis(config.check_interval_ms),
                max_batch: config.max_batch,
                heartbeat: Duration::from_millis(config.heartbeat_ms),
                lease: Duration::from_millis(config.lease_ms),
            },
            live: HashMap::new(),
            fenced_upto: HashMap::new(),
        };
        tokio::spawn(task.run());
        Store {
            shared,
            requests,
            timeout,
        }
    }

    /// Records the call's latest state; written asynchronously, coalesced with any unwritten
    /// earlier state of the same call. Never waits.
    pub fn put(&self, record: CallRecord) {
        let call_id = record.call_id.clone();
        self.shared
            .pending
            .lock()
            .set(&call_id, Op::Put(Arc::new(record)));
        self.shared.wake.notify_one();
    }

    /// Records that the call ended: its record and index entry are removed asynchronously.
    /// Never waits.
    pub fn delete(&self, call_id: &str) {
        self.shared.pending.lock().set(call_id, Op::Delete);
        self.shared.wake.notify_one();
    }

    /// Records the call's latest state and returns once it is written (e.g. a move before its
    /// re-INVITEs go out). On an error the state stays queued and is written when Redis is back.
    pub async fn put_durable(&self, record: CallRecord) -> Result<(), StoreError> {
        let call_id = record.call_id.clone();
        let seq = self
            .shared
            .pending
            .lock()
            .set(&call_id, Op::Put(Arc::new(record)));
        self.ask(|reply| Request::Flush {
            call_id: Some(call_id),
            seq,
            reply,
        })
        .await
    }

    /// Returns once every change made before the call is written (or the first failure).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let seq = self.shared.pending.lock().seq();
        self.ask(|reply| Request::Flush {
            call_id: None,
            seq,
            reply,
        })
        .await
    }

    /// Raises the CSeq numbers reserved for the owner's own requests in this call to at least
    /// `upto`, and returns once that is durable: only then may the owner send a request with
    /// a CSeq up to it. Reservations never go down.
    pub async fn reserve_cseq(&self, call_id: &str, upto: CseqReserved) -> Result<(), StoreError> {
        self.ask(|reply| Request::Reserve {
            call_id: call_id.to_string(),
            upto,
            reply,
        })
        .await
    }

    /// The stored record of a call (none if unknown), with its latest reservations.
    pub async fn load(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.ask(|reply| Request::Load {
            call_id: call_id.to_string(),
            reply,
        })
        .await
    }

    /// Every stored call owned by `node` (at start: the calls this node held before). The
    /// records are taken as live: they are written again if Redis loses its data.
    pub async fn load_owned(&self, node: &str) -> Result<Vec<CallRecord>, StoreError> {
        self.ask(|reply| Request::LoadOwned {
            node: node.to_string(),
            reply,
        })
        .await
    }

    /// Takes the call for this node, whoever owned it (a message about it reached this node,
    /// which acts for it from now on): its record with its latest reservations, or none if
    /// the store has none. The other node's later writes of it are refused.
    pub async fn claim(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        self.ask(|reply| Request::Claim {
            call_id: call_id.to_string(),
            reply,
        })
        .await
    }

    /// Takes for this node every call that `node` owns (this node's own id: the calls of its
    /// previous start). The records are live from now on.
    pub async fn claim_of(&self, node: &str) -> Result<Vec<CallRecord>, StoreError> {
        self.ask(|reply| Request::ClaimOf {
            node: node.to_string(),
            share: None,
            reply,
        })
        .await
    }

    /// Takes for this node its share of the calls `node` (a dead node) owns: the calls for
    /// which [`share_of`] among the live nodes `live` names this node. Each live node takes
    /// its own share; the others stay listed under `node` for them.
    pub async fn claim_share_of(
        &self,
        node: &str,
        live: Vec<String>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        self.ask(|reply| Request::ClaimOf {
            node: node.to_string(),
            share: Some(live),
            reply,
        })
        .await
    }

    /// Notes, on this node's list, that call `call_id`'s session on relay `relay` is to be
    /// deleted when the relay comes back (it is down now): a node that takes this node's calls
    /// over deletes it then.
    pub async fn add_orphan(&self, relay: &str, call_id: &str) -> Result<(), StoreError> {
        self.ask(|reply| Request::AddOrphan {
            relay: relay.to_string(),
            call_id: call_id.to_string(),
            reply,
        })
        .await
    }

    /// Relay `relay` came back and this node deleted its sessions: off this node's list.
    pub async fn clear_orphans(&self, relay: &str) -> Result<(), StoreError> {
        self.ask(|reply| Request::ClearOrphans {
            relay: relay.to_string(),
            reply,
        })
        .await
    }

    /// Takes node `node`'s list of sessions to delete (every entry, or with `live` only this
    /// node's [`share_of`] them by call among the live nodes), as (relay, call).
    pub async fn take_orphans_of(
        &self,
        node: &str,
        live: Option<Vec<String>>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.ask(|reply| Request::TakeOrphans {
            node: node.to_string(),
            share: live,
            reply,
        })
        .await
    }

    /// Publishes the calls this node anchored on each relay (by name), alive for the lease:
    /// the other nodes of an active-active cluster add them to theirs when they pick the
    /// least loaded relay.
    pub async fn publish_relay_calls(&self, calls: Vec<(String, u64)>) -> Result<(), StoreError> {
        self.ask(|reply| Request::PublishRelayCalls { calls, reply })
            .await
    }

    /// The calls `nodes` published per relay, summed by relay.
    pub async fn relay_calls_of(
        &self,
        nodes: Vec<String>,
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        self.ask(|reply| Request::RelayCallsOf { nodes, reply })
            .await
    }

    /// The token (`NODE/EPOCH`) of the node start that owns `call_id`, if it has a record.
    pub async fn owner(&self, call_id: &str) -> Result<Option<String>, StoreError> {
        self.ask(|reply| Request::Owner {
            call_id: call_id.to_string(),
            reply,
        })
        .await
    }

    /// Gives this node's SIP address to the other nodes with its heartbeats (they forward
    /// the messages of its calls there).
    pub fn set_sip_address(&self, address: std::net::SocketAddr) {
        *self.shared.sip.lock().unwrap_or_else(|p| p.into_inner()) = Some(address.to_string());
    }

    /// Records, for every node sharing the store, that an operator drained relay `relay` (or
    /// undrained it): a node that takes the calls over goes on draining it.
    pub async fn set_drained(&self, relay: &str, drained: bool) -> Result<(), StoreError> {
        self.ask(|reply| Request::SetDrained {
            relay: relay.to_string(),
            drained,
            reply,
        })
        .await
    }

    /// The relays drained for every node sharing the store, sorted by name.
    pub async fn drained(&self) -> Result<Vec<String>, StoreError> {
        self.ask(|reply| Request::Drained { reply }).await
    }

    /// The nodes sharing the store, with their heartbeats (none for the memory store).
    pub async fn nodes(&self) -> Result<Vec<NodeState>, StoreError> {
        self.ask(|reply| Request::Nodes { reply }).await
    }

    /// The calls whose writes were refused since the last call (another node owns them now):
    /// this node must act no more for them.
    pub fn take_fenced(&self) -> Vec<String> {
        std::mem::take(&mut *self.shared.fenced.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves once a write has been refused (then [`Store::take_fenced`] has the calls).
    pub async fn fenced(&self) {
        self.shared.fenced_wake.notified().await;
    }

    /// The store's state now, for `/v1/health` and the metrics.
    pub fn status(&self) -> StoreStatus {
        let mut status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Written once on the wire and back: the batch in flight is not written yet.
        status.dirty_calls = self.shared.pending.lock().len()
            + self
                .shared
                .in_flight
                .load(std::sync::atomic::Ordering::Relaxed);
        status
    }

    /// Sends the request `make` builds around a reply channel and waits for its answer, at
    /// most a few timeouts (the task may be busy with a batch first).
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let limit = self.timeout * 4;
        let location = self.status().location.unwrap_or_else(|| "memory".into());
        let timed_out = || StoreError::Timeout {
            location: location.clone(),
            timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        };
        tokio::time::timeout(limit, self.requests.send(make(reply)))
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| StoreError::Stopped)?;
        tokio::time::timeout(limit, answer)
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| StoreError::Stopped)?
    }
}

/// Shows the store's state ([`Store::status`]): backend, location without the password, up or
/// down, counters. Never the password.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.status())
            .finish()
    }
}

fn empty_status(backend: &'static str) -> StoreStatus {
    StoreStatus {
        backend,
        location: None,
        up: true,
        dirty_calls: 0,
        live_calls: 0,
        records_written: 0,
        write_errors: 0,
        refills: 0,
        fenced_writes: 0,
        claimed_calls: 0,
        last_error: None,
        last_load_ms: None,
    }
}

/// The first line of `path`.
fn read_password(path: &Path) -> Result<Secret, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| StoreError::File {
        key: "cluster.password_file",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Secret::new(text.lines().next().unwrap_or("").trim_end()))
}

/// A value unique to this start of the process.
fn new_marker() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hasher.write_u128(now);
    format!("{:016x}", hasher.finish())
}

/// Which of `nodes` takes `call_id` when its owner died: the node with the highest hash of
/// the pair (rendezvous hashing), so every survivor computes the same answer from the same
/// list and the calls spread evenly; `None` for an empty list.
pub fn share_of<'a>(call_id: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| {
            // FNV-1a over the call, a separator and the node (stable across processes and
            // builds, unlike std's hasher), then a 64-bit finaliser so that node ids that
            // differ in their last byte still compare by well-mixed high bits.
            let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
            for b in call_id.bytes().chain([0xff]).chain(node.bytes()) {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
            hash ^= hash >> 33;
            hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            hash ^= hash >> 33;
            (hash, node.as_str())
        })
        .map(String::as_str)
}

#[cfg(test)]
mod share_tests {
    use super::share_of;

    #[test]
    fn every_survivor_computes_the_same_owner_and_the_calls_spread_evenly() {
        let nodes: Vec<String> = ["p1", "p2", "p3"].iter().map(|s| s.to_string()).collect();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let call = format!("{i}-call@198.51.100.1");
            let owner = share_of(&call, &nodes).unwrap();
            assert_eq!(
                share_of(&call, &reversed),
                Some(owner),
                "order does not matter"
            );
            counts[nodes.iter().position(|n| n == owner).unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_eq!(share_of("c", &[]), None);
        // A node leaving moves only its own calls.
        let two = &nodes[..2];
        for i in 0..300 {
            let call = format!("{i}");
            let before = share_of(&call, &nodes).unwrap();
            if before != "p3" {
                assert_eq!(share_of(&call, two), Some(before));
            }
        }
    }
}
