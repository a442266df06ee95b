//! The transaction layer: [RFC 3261 §17](https://www.rfc-editor.org/rfc/rfc3261#section-17),
//! as amended by [RFC 6026](https://www.rfc-editor.org/rfc/rfc6026).
//!
//! A crate of its own so that every SIP element of the project runs the same machines: the
//! proxy core (`anchorage-proxy`, as `anchorage_proxy::transaction`) and the call generator's
//! user agents (`anchorage-callgen`).
//!
//! Four sans-IO state machines, one per file and named after the RFC section:
//!
//! | file | RFC | states |
//! | --- | --- | --- |
//! | [`client_invite`] | §17.1.1, Figure 5 + RFC 6026 | `Calling`, `Proceeding`, `Completed`, `Accepted`, `Terminated` |
//! | [`client_non_invite`] | §17.1.2, Figure 6 | `Trying`, `Proceeding`, `Completed`, `Terminated` |
//! | [`server_invite`] | §17.2.1, Figure 7 + RFC 6026 | `Proceeding`, `Completed`, `Confirmed`, `Accepted`, `Terminated` |
//! | [`server_non_invite`] | §17.2.2, Figure 8 | `Trying`, `Proceeding`, `Completed`, `Terminated` |
//!
//! plus [`timers`] (Table 4, Timer C, RFC 6026 Timers L and M). Matching requests and
//! responses to transactions (§17.1.3, §17.2.3) and holding many of them is the transaction
//! user's job: the proxy node keeps its server and client transactions in
//! `node/transactions.rs` and their deadlines in `node/timers.rs`; callgen keeps a call's
//! few transactions in the call.
//!
//! # The grammar
//!
//! The state machines never see a parsed message, a socket or a clock. They take events:
//!
//! * `new(now, reliable, &TimerConfig)` creates a transaction (a client transaction asks at
//!   once for its request to be sent; a server transaction hands its request to the TU);
//! * `handle_*(now, …)`: a response received (its status code), a request retransmission, an
//!   ACK, a response from the TU, a transport error;
//! * `handle_timeout(now)` fires every timer due at `now`.
//!
//! and hand out results:
//!
//! * `poll_action()` returns the next [`Action`] (send this, tell the TU that, terminated);
//! * `poll_timeout()` returns the earliest deadline, when `handle_timeout` must be called.
//!
//! Drain `poll_action()` after every `handle_*` call, then read `poll_timeout()`. Time must not
//! go backwards. The caller owns the messages: it keeps the request it sent (to retransmit it and
//! to build the ACK for a non-2xx final response) and the last response it sent on a server
//! transaction (to retransmit it).

#![warn(missing_docs)]

pub mod client_invite;
pub mod client_non_invite;
pub mod server_invite;
pub mod server_non_invite;
pub mod timers;

use std::time::Instant;

use thiserror::Error;

pub use client_invite::{ClientInvite, ClientInviteState};
pub use client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use server_invite::{ServerInvite, ServerInviteState};
pub use server_non_invite::{ServerNonInvite, ServerNonInviteState};
pub use timers::{Timer, TimerConfig, TimerConfigError, Trying100};

/// What a transaction asks its caller to do. Status codes are the responses' status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Client: send the request for the first time.
    SendRequest,
    /// Client: Timer A or E fired; send the request again, unchanged.
    RetransmitRequest,
    /// Client INVITE: send the ACK for the non-2xx final response just received (§17.1.1.3);
    /// the caller builds it from the original request and that response.
    SendAck,
    /// Server INVITE: send a 100 (Trying) for the request (§17.2.1, §16.2).
    Send100Trying,
    /// Server: send this response the TU just gave the transaction.
    SendResponse(u16),
    /// Server: send again the last response sent, whose status code is given (a request
    /// retransmission arrived, or Timer G fired).
    RetransmitResponse(u16),
    /// Server: hand the request that created the transaction to the TU.
    PassRequestToTu,
    /// Server INVITE in `Accepted` (RFC 6026): hand this ACK (for a 2xx) to the TU.
    PassAckToTu,
    /// Client: hand the response just received, with this status code, to the TU.
    PassResponseToTu(u16),
    /// The transaction failed on a timer: B or F (no final response; a proxy answers 408),
    /// H (no ACK for a non-2xx final response), or [`Timer::CancelWait`] (no final response
    /// 64*T1 after a CANCEL, §9.1).
    Timeout(Timer),
    /// Timer C fired on a proxied INVITE (§16.8). With a provisional response received, the
    /// proxy must CANCEL the branch (the transaction then waits 64*T1 for the final response);
    /// without one, it must behave as if a 408 had been received (the transaction terminates).
    TimerC {
        /// Whether a provisional response had been received.
        provisional_received: bool,
    },
    /// A transport error was reported while the transaction was sending; inform the TU.
    TransportError,
    /// The transaction reached `Terminated`: destroy it (§17.1.1.2, §17.2.1).
    Terminated,
}

/// A TU input a transaction cannot accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TransactionError {
    /// The status code is outside 100–699.
    #[error("status code {0} is outside 100-699")]
    InvalidStatus(u16),
    /// The TU sent a response the state forbids (a response after a non-2xx final response,
    /// or a non-2xx after a 2xx).
    #[error("response {status} not allowed after the final response")]
    ResponseAfterFinal {
        /// The refused status code.
        status: u16,
    },
    /// The transaction is terminated.
    #[error("the transaction is terminated")]
    Terminated,
}

/// The class of a valid status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 100–199.
    Provisional,
    /// 200–299.
    Success,
    /// 300–699.
    Failure,
}

/// Classifies a status code, refusing anything outside 100–699.
pub(crate) fn classify(status: u16) -> Result<Class, TransactionError> {
    match status {
        100..=199 => Ok(Class::Provisional),
        200..=299 => Ok(Class::Success),
        300..=699 => Ok(Class::Failure),
        _ => Err(TransactionError::InvalidStatus(status)),
    }
}

/// The earliest armed deadline among `timers`, with its timer (the first listed wins a tie).
pub(crate) fn earliest<const N: usize>(
    timers: [(Option<Instant>, Timer); N],
) -> Option<(Instant, Timer)> {
    let mut best: Option<(Instant, Timer)> = None;
    for (at, timer) in timers {
        if let Some(at) = at {
            match best {
                Some((b, _)) if b <= at => {}
                _ => best = Some((at, timer)),
            }
        }
    }
    best
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the state machine tests.

    use std::time::{Duration, Instant};

    /// The tests' epoch: the only place the clock is read.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn epoch() -> Instant {
        Instant::now()
    }

    /// Milliseconds since `t0`.
    pub(crate) fn ms(t0: Instant, at: Instant) -> u128 {
        at.duration_since(t0).as_millis()
    }

    /// `t0` plus `ms` milliseconds.
    pub(crate) fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }
}
