//! The non-INVITE server transaction: [RFC 3261 §17.2.2](https://www.rfc-editor.org/rfc/rfc3261#section-17.2.2),
//! Figure 8.
//!
//! ```text
//!                               |Request received
//!                               |pass to TU
//!                               V
//!                         +-----------+
//!                         |           |
//!                         | Trying    |-------------+
//!                         |           |             |
//!                         +-----------+             |200-699 from TU
//!                               |                   |send response
//!                               |1xx from TU        |
//!                               |send response      |
//!                               |                   |
//!            Request            V      1xx from TU  |
//!            send response+-----------+send response|
//!                +--------|           |--------+    |
//!                |        | Proceeding|        |    |
//!                +------->|           |<-------+    |
//!         +<--------------|           |             |
//!         |Trnsprt Err    +-----------+             |
//!         |Inform TU            |                   |
//!         |                     |                   |
//!         |                     |200-699 from TU    |
//!         |                     |send response      |
//!         |  Request            V                   |
//!         |  send response+-----------+             |
//!         |      +--------|           |             |
//!         |      |        | Completed |<------------+
//!         |      +------->|           |
//!         +<--------------|           |
//!         |Trnsprt Err    +-----------+
//!         |Inform TU            |
//!         |                     |Timer J fires
//!         |                     |-
//!         |                     |
//!         |                     V
//!         |               +-----------+
//!         |               |           |
//!         +-------------->| Terminated|
//!                         |           |
//!                         +-----------+
//! ```
//!
//! Request retransmissions in `Trying` are discarded. Timer J is 64*T1 on unreliable
//! transports and zero on reliable ones.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::TimerConfig;
use super::{classify, Action, Class, TransactionError};

/// The states of Figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// The request is with the TU; nothing was sent; retransmissions are discarded.
    Trying,
    /// A provisional response was sent; retransmissions get it again.
    Proceeding,
    /// A final response was sent; retransmissions get it again until Timer J.
    Completed,
    /// Done: destroy the transaction.
    Terminated,
}

/// A non-INVITE server transaction (sans-IO).
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerNonInviteState,
    last_status: Option<u16>,
    timer_j: Option<Instant>,
    j_duration: Duration,
    actions: VecDeque<Action>,
}

impl ServerNonInvite {
    /// Starts the transaction in `Trying` at `now` and queues [`Action::PassRequestToTu`].
    pub fn new(_now: Instant, reliable: bool, config: &TimerConfig) -> Self {
        let mut actions = VecDeque::with_capacity(4);
        actions.push_back(Action::PassRequestToTu);
        Self {
            state: ServerNonInviteState::Trying,
            last_status: None,
            timer_j: None,
            j_duration: config.timer_j(reliable),
            actions,
        }
    }

    /// The current state.
    pub fn state(&self) -> ServerNonInviteState {
        self.state
    }

    /// Whether the transaction is terminated (and must be destroyed).
    pub fn is_terminated(&self) -> bool {
        self.state == ServerNonInviteState::Terminated
    }

    /// A retransmission of the request arrived: discarded in `Trying`, answered with the last
    /// response sent in `Proceeding` and `Completed`.
    pub fn handle_request_retransmission(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed
        ) {
            if let Some(status) = self.last_status {
                self.actions.push_back(Action::RetransmitResponse(status));
            }
        }
    }

    /// The TU gives the transaction a response with this status code to send. A 1xx moves
    /// `Trying` to `Proceeding`; a 200–699 moves to `Completed` and starts Timer J. After the
    /// final response, further responses are refused.
    pub fn send_response(&mut self, now: Instant, status: u16) -> Result<(), TransactionError> {
        let class = classify(status)?;
        match self.state {
            ServerNonInviteState::Trying | ServerNonInviteState::Proceeding => {
                self.last_status = Some(status);
                self.actions.push_back(Action::SendResponse(status));
                if class == Class::Provisional {
                    self.state = ServerNonInviteState::Proceeding;
                } else {
                    self.state = ServerNonInviteState::Completed;
                    if self.j_duration.is_zero() {
                        self.terminate();
                    } else {
                        self.timer_j = Some(now + self.j_duration);
                    }
                }
                Ok(())
            }
            ServerNonInviteState::Completed => Err(TransactionError::ResponseAfterFinal { status }),
            ServerNonInviteState::Terminated => Err(TransactionError::Terminated),
        }
    }

    /// The transport reported an error sending a response: in `Proceeding` and `Completed`
    /// the TU is informed and the transaction terminates.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ServerNonInviteState::Proceeding | ServerNonInviteState::Completed
        ) {
            self.actions.push_back(Action::TransportError);
            self.terminate();
        }
    }

    /// Fires Timer J if due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timer_j.is_some_and(|at| at <= now) {
            self.terminate();
        }
    }

    /// The deadline at which [`ServerNonInvite::handle_timeout`] must be called (Timer J).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    /// The next action for the caller, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn terminate(&mut self) {
        self.timer_j = None;
        self.state = ServerNonInviteState::Terminated;
        self.actions.push_back(Action::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, epoch};

    fn drain(tx: &mut ServerNonInvite) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll_action()).collect()
    }

    #[test]
    fn trying_discards_retransmissions() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        assert_eq!(tx.state(), ServerNonInviteState::Trying);
        assert_eq!(drain(&mut tx), [Action::PassRequestToTu]);
        tx.handle_request_retransmission(at(t0, 500));
        assert_eq!(drain(&mut tx), []);
        // Nothing was sent: a transport error cannot concern this transaction.
        tx.handle_transport_error(at(t0, 500));
        assert_eq!(drain(&mut tx), []);
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn proceeding_resends_the_provisional_response() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(at(t0, 10), 100).unwrap();
        assert_eq!(tx.state(), ServerNonInviteState::Proceeding);
        tx.send_response(at(t0, 20), 182).unwrap();
        tx.handle_request_retransmission(at(t0, 500));
        assert_eq!(
            drain(&mut tx),
            [
                Action::SendResponse(100),
                Action::SendResponse(182),
                Action::RetransmitResponse(182)
            ]
        );
    }

    #[test]
    fn final_over_udp_completes_and_waits_timer_j() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(at(t0, 100), 200).unwrap();
        assert_eq!(tx.state(), ServerNonInviteState::Completed);
        tx.handle_request_retransmission(at(t0, 600));
        assert_eq!(
            drain(&mut tx),
            [Action::SendResponse(200), Action::RetransmitResponse(200)]
        );
        assert_eq!(
            tx.send_response(at(t0, 700), 500),
            Err(TransactionError::ResponseAfterFinal { status: 500 })
        );
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_100)));
        tx.handle_timeout(at(t0, 32_099));
        assert_eq!(drain(&mut tx), []);
        tx.handle_timeout(at(t0, 32_100));
        assert_eq!(drain(&mut tx), [Action::Terminated]);
        assert_eq!(
            tx.send_response(at(t0, 40_000), 200),
            Err(TransactionError::Terminated)
        );
    }

    #[test]
    fn final_from_proceeding_over_reliable_terminates_at_once() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(t0, 100).unwrap();
        tx.send_response(t0, 404).unwrap();
        assert_eq!(
            drain(&mut tx),
            [
                Action::SendResponse(100),
                Action::SendResponse(404),
                Action::Terminated
            ]
        );
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn transport_error_in_proceeding_and_completed_terminates() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 100).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 200).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);
    }

    #[test]
    fn invalid_status_is_refused() {
        let t0 = epoch();
        let mut tx = ServerNonInvite::new(t0, false, &TimerConfig::default());
        assert_eq!(
            tx.send_response(t0, 0),
            Err(TransactionError::InvalidStatus(0))
        );
        assert_eq!(tx.state(), ServerNonInviteState::Trying);
    }
}
