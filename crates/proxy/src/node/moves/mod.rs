//! Re-anchoring in the proxy node: jobs that move calls between relay nodes, and the per-call
//! procedure of DESIGN.md "Re-anchoring" as one explicit state machine per call:
//!
//! ```text
//!  Awaiting::Idle ──(no INVITE/UPDATE open; a node picked)──► Offer ──(ng ok)──► Answer
//!     ▲  (ng error or timeout: next node)                          │                │
//!     └────────────────────────────────────────────────────────────┘       (ng ok)  ▼
//!  Finished ◄──(both legs answered, or a leg failed: rollback / end call)────── Legs
//! ```
//!
//! In `Awaiting::Legs` both re-INVITEs are out at once, each impersonating the other party with
//! the dialog's tags, the leg's route set and remote target and a renumbered CSeq. A 491 is
//! retried after the RFC 3261 §14.1 back-off; 408/481/no answer mean the party is gone and the
//! call is ended; any other refusal rolls the moved leg back to the old node if it is alive.
//! The old session is deleted only on success and only on a live old node; a failed move
//! deletes the session it created.
//!
//! * `stage.rs`: one call's move as a state machine without I/O (states named after what they
//!   await, each with its own data), unit-tested;
//! * `jobs.rs`: jobs, the management commands and pacing;
//! * `call_move.rs`: one call's move up to its re-INVITEs;
//! * `conclude.rs`: the end of a move — commit, rollback, ending the call;
//! * `own_tx.rs`: the proxy's own in-dialog requests (re-INVITE, BYE) and their 2xx ACK.
//!
//! The pure helpers (leg targets, building a request, `o=` versions, back-off) are in
//! [`crate::reanchor`].

pub(super) mod call_move;
pub(super) mod conclude;
pub(super) mod jobs;
pub(super) mod own_tx;
pub(super) mod stage;

pub(in crate::node) use stage::{Awaiting, CallMove, LegStep};

use std::time::Duration;

use bytes::Bytes;

use crate::reanchor::{JobStatus, MoveResult, MoveTarget, Trigger};

/// A job: calls queued for moving, and its counts.
#[derive(Debug, Clone)]
pub(in crate::node) struct Job {
    pub(in crate::node) status: JobStatus,
    pub(in crate::node) target: MoveTarget,
    pub(in crate::node) queue: std::collections::VecDeque<String>,
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
pub(in crate::node) const DURATION_BOUNDS: [f64; 10] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often a call waiting for its open transactions to end is looked at again.
pub(in crate::node) const IDLE_POLL: Duration = Duration::from_millis(50);

/// Pause before trying another node after a failed attempt.
pub(in crate::node) const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Attempts before a call is given up.
pub(in crate::node) const MAX_ATTEMPTS: u32 = 3;

/// How long a move waits for the parties' own open INVITE/UPDATE (Timer B is 32 s).
pub(in crate::node) const MAX_IDLE_WAIT: Duration = Duration::from_secs(32);

pub(in crate::node) fn carries_body(sdp: &Bytes) -> bool {
    !sdp.is_empty()
}
