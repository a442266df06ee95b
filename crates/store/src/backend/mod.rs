//! Where records go: [`memory::MemoryBackend`] (one process) or [`redis::RedisBackend`]. The
//! store task owns exactly one and calls it one operation at a time.

pub(crate) mod link;
pub(crate) mod memory;
pub(crate) mod redis;

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
    /// Writes a batch of changes; all or none count as written.
    pub async fn write(&mut self, batch: &[Write<'_>]) -> Result<(), StoreError> {
        match self {
            Backend::Memory(m) => {
                m.write(batch);
                Ok(())
            }
            Backend::Redis(r) => r.write(batch).await,
        }
    }

    /// Raises the call's reserved CSeq numbers to at least `upto`, durably.
    pub async fn reserve(&mut self, call_id: &str, upto: CseqReserved) -> Result<(), StoreError> {
        match self {
            Backend::Memory(m) => {
                m.reserve(call_id, upto);
                Ok(())
            }
            Backend::Redis(r) => r.reserve(call_id, upto).await,
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
