//! Where records go: [`memory::MemoryBackend`] (one process) or [`redis::RedisBackend`]. The
//! store task owns exactly one and calls it one operation at a time.

pub(crate) mod link;
pub(crate) mod memory;
pub(crate) mod ownership;
pub(crate) mod redis;

use std::time::Duration;

use ownership::NodeState;

use crate::error::StoreError;
use crate::pending::Op;
use crate::record::{CallRecord, CseqReserved};

/// One change to write.
pub(crate) struct Write<'a> {
    /// The call.
    pub call_id: &'a str,
    /// Its newest record, or its deletion.
    pub op: &'a Op,
    /// The node whose index holds the call after this change (for a deletion: the node whose
    /// index to remove it from).
    pub owner: &'a str,
    /// A node whose index held the call before, if the owner changed.
    pub old_owner: Option<&'a str>,
}

/// A backend.
pub(crate) enum Backend {
    /// In this process only.
    Memory(memory::MemoryBackend),
    /// In Redis.
    Redis(Box<redis::RedisBackend>),
}

impl Backend {
    /// Writes a batch of changes; all or none count as written. For each change, whether it
    /// was done (false: another node owns the call, the change was refused).
    pub async fn write(&mut self, batch: &[Write<'_>]) -> Result<Vec<bool>, StoreError> {
        match self {
            Backend::Memory(m) => {
                m.write(batch);
                Ok(vec![true; batch.len()])
            }
            Backend::Redis(r) => r.write(batch).await,
        }
    }

    /// Raises the call's reserved CSeq numbers to at least `upto`, durably; false when another
    /// node owns the call.
    pub async fn reserve(&mut self, call_id: &str, upto: CseqReserved) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(m) => {
                m.reserve(call_id, upto);
                Ok(true)
            }
            Backend::Redis(r) => r.reserve(call_id, upto).await,
        }
    }

    /// Takes the call for `me`, whoever owned it: its record, if stored.
    pub async fn claim(
        &mut self,
        call_id: &str,
        me: &str,
    ) -> Result<Option<CallRecord>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.claim(call_id, me)),
            Backend::Redis(r) => r.claim(call_id).await,
        }
    }

    /// Takes for `me` every call `node` owns (`node` may be `me`: its previous start's), or
    /// only `me`'s share of them among the live nodes `share`.
    pub async fn claim_of(
        &mut self,
        node: &str,
        me: &str,
        share: Option<&[String]>,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let mine =
            |call_id: &str| share.is_none_or(|nodes| crate::share_of(call_id, nodes) == Some(me));
        match self {
            Backend::Memory(m) => Ok(m.claim_of(node, me, mine)),
            Backend::Redis(r) => r.claim_of(node, mine).await,
        }
    }

    /// Notes a session to delete when its relay comes back (this node's list).
    pub async fn add_orphan(&mut self, relay: &str, call_id: &str) -> Result<(), StoreError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.add_orphan(relay, call_id).await,
        }
    }

    /// Relay `relay`'s sessions to delete were deleted (this node's list).
    pub async fn clear_orphans(&mut self, relay: &str) -> Result<(), StoreError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.clear_orphans(relay).await,
        }
    }

    /// Takes `node`'s sessions to delete (only `me`'s share among `share`, if given).
    pub async fn take_orphans_of(
        &mut self,
        node: &str,
        me: &str,
        share: Option<&[String]>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mine =
            |call_id: &str| share.is_none_or(|nodes| crate::share_of(call_id, nodes) == Some(me));
        match self {
            Backend::Memory(_) => Ok(Vec::new()),
            Backend::Redis(r) => r.take_orphans_of(node, mine).await,
        }
    }

    /// Publishes this node's calls per relay, alive for `lease`.
    pub async fn publish_relay_calls(
        &mut self,
        calls: &[(String, u64)],
        lease: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.publish_relay_calls(calls, lease).await,
        }
    }

    /// The calls `nodes` published per relay, summed.
    pub async fn relay_calls_of(
        &mut self,
        nodes: &[String],
    ) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        match self {
            Backend::Memory(_) => Ok(Default::default()),
            Backend::Redis(r) => r.relay_calls_of(nodes).await,
        }
    }

    /// The token of the node start that owns `call_id`, if any.
    pub async fn owner(&mut self, call_id: &str) -> Result<Option<String>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.owner(call_id)),
            Backend::Redis(r) => r.owner(call_id).await,
        }
    }

    /// Writes this node's heartbeat (and its SIP address, if known), alive for `lease`.
    pub async fn heartbeat(
        &mut self,
        lease: Duration,
        sip: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.heartbeat(lease, sip).await,
        }
    }

    /// Records that relay `relay` is drained (or not) for every node.
    pub async fn set_drained(&mut self, relay: &str, drained: bool) -> Result<(), StoreError> {
        match self {
            Backend::Memory(m) => {
                m.set_drained(relay, drained);
                Ok(())
            }
            Backend::Redis(r) => r.set_drained(relay, drained).await,
        }
    }

    /// The relays drained for every node, sorted.
    pub async fn drained(&mut self) -> Result<Vec<String>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.drained()),
            Backend::Redis(r) => r.drained().await,
        }
    }

    /// The nodes that share the store (none in memory).
    pub async fn nodes(&mut self) -> Result<Vec<NodeState>, StoreError> {
        match self {
            Backend::Memory(_) => Ok(Vec::new()),
            Backend::Redis(r) => r.nodes().await,
        }
    }

    /// The call's record, if stored.
    pub async fn load(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.load(call_id)),
            Backend::Redis(r) => r.load(call_id).await,
        }
    }

    /// Every stored record owned by `node`.
    pub async fn load_owned(&mut self, node: &str) -> Result<Vec<CallRecord>, StoreError> {
        match self {
            Backend::Memory(m) => Ok(m.load_owned(node)),
            Backend::Redis(r) => r.load_owned(node).await,
        }
    }

    /// Whether the backend still holds this node's marker (false: it lost its data). Sets the
    /// marker again when it was missing.
    pub async fn check_marker(&mut self) -> Result<bool, StoreError> {
        match self {
            Backend::Memory(_) => Ok(true),
            Backend::Redis(r) => r.check_marker().await,
        }
    }
}
