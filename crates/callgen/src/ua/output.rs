//! What the agent hands out: datagrams to send, media instructions, the record of each
//! finished call, and the counts of the progress line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{CallRef, Side};

/// A datagram to send from one population's SIP socket.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The socket (population) to send from.
    pub side: Side,
    /// Where to.
    pub destination: SocketAddr,
    /// The message.
    pub data: Bytes,
}

/// What the media layer must do, and finished calls.
#[derive(Debug, Clone)]
pub enum Event {
    /// The call's media: where to send (`None`: nowhere), whether to send, whether media is
    /// expected from the other side. `reinvite`: the other side's re-INVITE changed it (the
    /// receiver marks it to measure the gap around it).
    Media {
        /// The call.
        call: CallRef,
        /// The other side's media address.
        remote: Option<SocketAddr>,
        /// Whether we send.
        send: bool,
        /// Whether the other side sends.
        receive: bool,
        /// Whether this comes from a re-INVITE we received.
        reinvite: bool,
    },
    /// The call's media ends (BYE sent or received, call failed).
    MediaStop {
        /// The call.
        call: CallRef,
    },
    /// The call is over.
    Ended {
        /// The call.
        call: CallRef,
        /// What happened.
        record: CallRecord,
    },
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Set up, held, ended by a BYE at the hold time.
    Completed,
    /// Set up but ended otherwise: an early BYE from the other side, an in-dialog request
    /// that got 408/481 or no answer, no ACK.
    Dropped,
    /// Never set up: a final error response, a timeout, cancelled.
    Failed,
}

impl Outcome {
    /// `completed`, `dropped` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Dropped => "dropped",
            Outcome::Failed => "failed",
        }
    }
}

/// Which party sent the BYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// This side.
    Local,
    /// The other side (or the proxy for it).
    Remote,
}

/// One re-INVITE this side received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedReinvite {
    /// When it arrived.
    pub at: Instant,
    /// The media address its SDP named.
    pub remote: Option<SocketAddr>,
    /// The `o=` version of its SDP.
    pub sdp_version: Option<u64>,
}

/// The signalling record of one call on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The Call-ID.
    pub call_id: String,
    /// The population.
    pub side: Side,
    /// How it ended.
    pub outcome: Outcome,
    /// The INVITE's final status (received by the UAC, sent by the UAS); `None`: none.
    pub status: Option<u16>,
    /// Why the call failed or was dropped.
    pub reason: Option<String>,
    /// When the INVITE was sent (UAC) or received (UAS).
    pub started: Instant,
    /// INVITE to 200 (UAC).
    pub setup: Option<Duration>,
    /// When the call was set up (200 received, or ACK received).
    pub established: Option<Instant>,
    /// When the call ended.
    pub ended: Instant,
    /// Who sent the BYE.
    pub hangup: Option<Party>,
    /// The other side's media address from the answer (UAC) or offer (UAS).
    pub remote_media: Option<SocketAddr>,
    /// Re-INVITEs received, in order.
    pub reinvites: Vec<ReceivedReinvite>,
    /// Re-INVITEs this side sent.
    pub reinvites_sent: u32,
    /// Of those, answered 491.
    pub reinvites_491: u32,
    /// Requests answered 491 because our own re-INVITE was pending (glare).
    pub sent_491: u32,
}

impl CallRecord {
    /// The record of call `call_id` on `side`, started at `now`: failed until it is set up.
    pub(super) fn new(call_id: String, side: Side, now: Instant) -> CallRecord {
        CallRecord {
            call_id,
            side,
            outcome: Outcome::Failed,
            status: None,
            reason: None,
            started: now,
            setup: None,
            established: None,
            ended: now,
            hangup: None,
            remote_media: None,
            reinvites: Vec::new(),
            reinvites_sent: 0,
            reinvites_491: 0,
            sent_491: 0,
        }
    }
}

/// Counts for the progress line, of the UAC population when there is one, else of the UAS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Calls placed (UAC) or received (UAS only).
    pub placed: u64,
    /// Calls set up now.
    pub up: u64,
    /// Calls ended so far.
    pub ended: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Datagrams that were not SIP.
    pub bad_messages: u64,
}
