//! [`StoreStatus`]: what `/v1/health` and the metrics show of the store.

use serde::Serialize;

/// The state of the store at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreStatus {
    /// `"memory"` or `"redis"`.
    pub backend: &'static str,
    /// Where the records go (the Redis location without its password), if not in memory.
    pub location: Option<String>,
    /// Whether the last operation on the backend succeeded.
    pub up: bool,
    /// Calls whose latest state (or deletion) is not written yet.
    pub dirty_calls: usize,
    /// Calls this store handle knows to be live (written or loaded, not deleted): what it
    /// writes again when Redis comes back empty.
    pub live_calls: usize,
    /// Records written (puts and deletes) since the start.
    pub records_written: u64,
    /// Failed or timed-out operations since the start.
    pub write_errors: u64,
    /// Times Redis was found to have lost this node's data and every live call was rewritten.
    pub refills: u64,
    /// The last error, without any password.
    pub last_error: Option<String>,
    /// Writes refused because another node owns the call now (this node was fenced).
    pub fenced_writes: u64,
    /// Calls this node took over from the store (at start, on a message, or with the VIP).
    pub claimed_calls: u64,
    /// How long the last `load` or `load_owned` took, in milliseconds.
    pub last_load_ms: Option<f64>,
}
