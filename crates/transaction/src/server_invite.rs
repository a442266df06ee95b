//! The INVITE server transaction: [RFC 3261 §17.2.1](https://www.rfc-editor.org/rfc/rfc3261#section-17.2.1),
//! Figure 7 as updated by [RFC 6026 §7.1](https://www.rfc-editor.org/rfc/rfc6026#section-7.1).
//!
//! ```text
//!                                |INVITE
//!                                |pass INV to TU
//!             INVITE             V send 100 if TU won't in 200 ms
//!             send response+------------+
//!                 +--------|            |--------+ 101-199 from TU
//!                 |        |            |        | send response
//!                 +------->|            |<-------+
//!                          | Proceeding |
//!                          |            |--------+ Transport Err.
//!                          |            |        | Inform TU
//!                          |            |<-------+
//!                          +------------+
//!             300-699 from TU |    |2xx from TU
//!             send response   |    |send response
//!              +--------------+    +------------+
//!              |                                |
//! INVITE       V          Timer G fires         |
//! send response+-----------+ send response      |
//!     +--------|           |--------+           |
//!     |        |           |        |           |
//!     +------->| Completed |<-------+  INVITE   |  Transport Err.
//!              |           |           -        |  Inform TU
//!     +--------|           |----+     +-----+   |  +---+
//!     |        +-----------+    | ACK |     v   v  |   v
//!     |          ^   |          | -   |  +------------+
//!     |          |   |          |     |  |            |---+ ACK
//!     +----------+   |          |     +--|  Accepted  |   | to TU
//!     Transport Err. |          |        |            |<--+
//!     Inform TU      |          V        +------------+
//!                    |      +-----------+   |  ^     |
//!                    |      |           |   |  |     |
//!                    |      | Confirmed |   |  +-----+
//!                    |      |           |   |  2xx from TU
//!      Timer H fires |      +-----------+   |  send response
//!      -             |          |           |
//!                    |          | Timer I   | Timer L fires
//!                    |          | fires -   | -
//!                    |          V           |
//!                    |        +------------+|
//!                    +------->| Terminated |<
//!                             +------------+
//! ```
//!
//! Timer G (unreliable transports only) starts at T1 and doubles up to T2. Timer H fires
//! 64*T1 after the final non-2xx response if no ACK came; the TU is told
//! ([`Action::Timeout`] with [`Timer::H`]). Timer I is T4 (zero on reliable transports),
//! Timer L is 64*T1.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::{Timer, TimerConfig, Trying100};
use super::{classify, earliest, Action, Class, TransactionError};

/// The states of Figure 7 with RFC 6026's `Accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// The INVITE is with the TU; provisional responses go out; retransmissions get the
    /// last provisional response.
    Proceeding,
    /// A 300–699 went out; it is retransmitted (Timer G) until the ACK or Timer H.
    Completed,
    /// The ACK arrived; further ACKs are absorbed until Timer I.
    Confirmed,
    /// RFC 6026: a 2xx went out; INVITE retransmissions are absorbed, the TU's 2xx
    /// retransmissions go out, ACKs go to the TU, until Timer L.
    Accepted,
    /// Done: destroy the transaction.
    Terminated,
}

/// An INVITE server transaction (sans-IO).
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerInviteState,
    /// The status of the last response sent, to answer retransmissions.
    last_status: Option<u16>,
    trying_timer: Option<Instant>,
    timer_g: Option<Instant>,
    g_interval: Duration,
    first_g: Option<Duration>,
    t2: Duration,
    timer_h: Option<Instant>,
    h_duration: Duration,
    timer_i: Option<Instant>,
    i_duration: Duration,
    timer_l: Option<Instant>,
    l_duration: Duration,
    actions: VecDeque<Action>,
}

impl ServerInvite {
    /// Starts the transaction in `Proceeding` at `now`: queues [`Action::PassRequestToTu`]
    /// and, per [`TimerConfig::trying_100`], [`Action::Send100Trying`] at once or after the
    /// configured delay if the TU has not responded by then.
    pub fn new(now: Instant, reliable: bool, config: &TimerConfig) -> Self {
        let first_g = config.timer_g(reliable);
        let mut tx = Self {
            state: ServerInviteState::Proceeding,
            last_status: None,
            trying_timer: None,
            timer_g: None,
            g_interval: first_g.unwrap_or_default(),
            first_g,
            t2: config.t2.max(first_g.unwrap_or_default()),
            timer_h: None,
            h_duration: config.timer_h(),
            timer_i: None,
            i_duration: config.timer_i(reliable),
            timer_l: None,
            l_duration: config.timer_l(),
            actions: VecDeque::with_capacity(4),
        };
        tx.actions.push_back(Action::PassRequestToTu);
        match config.trying_100 {
            Trying100::Immediate => tx.send_100(),
            Trying100::Delayed(delay) => tx.trying_timer = Some(now + delay),
        }
        tx
    }

    /// The current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// Whether the transaction is terminated (and must be destroyed).
    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }

    /// A retransmission of the INVITE arrived. In `Proceeding` the last provisional
    /// response is sent again (a 100 Trying if none was sent yet); in `Completed` the final
    /// response; in `Confirmed` and `Accepted` it is absorbed.
    pub fn handle_request_retransmission(&mut self, _now: Instant) {
        match self.state {
            ServerInviteState::Proceeding | ServerInviteState::Completed => {
                match self.last_status {
                    Some(status) => self.actions.push_back(Action::RetransmitResponse(status)),
                    None => self.send_100(),
                }
            }
            _ => {}
        }
    }

    /// An ACK matched the transaction. In `Completed` it confirms the non-2xx final response;
    /// in `Accepted` it goes to the TU (RFC 6026); elsewhere it is absorbed.
    pub fn handle_ack(&mut self, now: Instant) {
        match self.state {
            ServerInviteState::Completed => {
                self.timer_g = None;
                self.timer_h = None;
                self.state = ServerInviteState::Confirmed;
                if self.i_duration.is_zero() {
                    self.terminate();
                } else {
                    self.timer_i = Some(now + self.i_duration);
                }
            }
            ServerInviteState::Accepted => self.actions.push_back(Action::PassAckToTu),
            _ => {}
        }
    }

    /// The TU gives the transaction a response with this status code to send.
    ///
    /// In `Proceeding`: 1xx are sent; a 2xx is sent and the transaction enters `Accepted`
    /// (Timer L); a 300–699 is sent and the transaction enters `Completed` (Timers G and H).
    /// In `Accepted` further 2xx (the TU's retransmissions) are sent. Anything else is an
    /// error.
    pub fn send_response(&mut self, now: Instant, status: u16) -> Result<(), TransactionError> {
        let class = classify(status)?;
        match (self.state, class) {
            (ServerInviteState::Proceeding, Class::Provisional) => {
                self.trying_timer = None;
                self.last_status = Some(status);
                self.actions.push_back(Action::SendResponse(status));
            }
            (ServerInviteState::Proceeding, Class::Success) => {
                self.trying_timer = None;
                self.last_status = Some(status);
                self.state = ServerInviteState::Accepted;
                self.timer_l = Some(now + self.l_duration);
                self.actions.push_back(Action::SendResponse(status));
            }
            (ServerInviteState::Proceeding, Class::Failure) => {
                self.trying_timer = None;
                self.last_status = Some(status);
                self.state = ServerInviteState::Completed;
                self.g_interval = self.first_g.unwrap_or_default();
                self.timer_g = self.first_g.map(|g| now + g);
                self.timer_h = Some(now + self.h_duration);
                self.actions.push_back(Action::SendResponse(status));
            }
            (ServerInviteState::Accepted, Class::Success) => {
                self.actions.push_back(Action::SendResponse(status));
            }
            (ServerInviteState::Terminated, _) => return Err(TransactionError::Terminated),
            _ => return Err(TransactionError::ResponseAfterFinal { status }),
        }
        Ok(())
    }

    /// The transport reported an error sending a response. In `Proceeding` and `Accepted`
    /// the TU is informed and the transaction stays (RFC 6026); in `Completed` the TU is
    /// informed and the transaction terminates.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        match self.state {
            ServerInviteState::Proceeding | ServerInviteState::Accepted => {
                self.actions.push_back(Action::TransportError);
            }
            ServerInviteState::Completed => {
                self.actions.push_back(Action::TransportError);
                self.terminate();
            }
            _ => {}
        }
    }

    /// Fires every timer due at `now`, earliest first.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, timer)) = self.next_timer() {
            if at > now {
                break;
            }
            self.fire(timer, now);
        }
    }

    /// The earliest deadline at which [`ServerInvite::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// The next action for the caller, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        earliest([
            (self.trying_timer, Timer::Trying100),
            (self.timer_g, Timer::G),
            (self.timer_h, Timer::H),
            (self.timer_i, Timer::I),
            (self.timer_l, Timer::L),
        ])
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Trying100 => {
                self.trying_timer = None;
                self.send_100();
            }
            Timer::G => {
                if let Some(status) = self.last_status {
                    self.actions.push_back(Action::RetransmitResponse(status));
                }
                self.g_interval = self.g_interval.saturating_mul(2).min(self.t2);
                self.timer_g = Some(now + self.g_interval);
            }
            Timer::H => {
                self.actions.push_back(Action::Timeout(Timer::H));
                self.terminate();
            }
            // I and L: the wait is over.
            _ => self.terminate(),
        }
    }

    fn send_100(&mut self) {
        self.last_status = Some(100);
        self.actions.push_back(Action::Send100Trying);
    }

    fn terminate(&mut self) {
        self.trying_timer = None;
        self.timer_g = None;
        self.timer_h = None;
        self.timer_i = None;
        self.timer_l = None;
        self.state = ServerInviteState::Terminated;
        self.actions.push_back(Action::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, epoch, ms};

    fn drain(tx: &mut ServerInvite) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll_action()).collect()
    }

    fn run(tx: &mut ServerInvite, t0: Instant) -> Vec<(u128, Action)> {
        let mut log = Vec::new();
        while let Some(when) = tx.poll_timeout() {
            tx.handle_timeout(when);
            for a in drain(tx) {
                log.push((ms(t0, when), a));
            }
        }
        log
    }

    #[test]
    fn new_passes_request_to_tu_and_sends_100_at_once() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        assert_eq!(tx.state(), ServerInviteState::Proceeding);
        assert_eq!(
            drain(&mut tx),
            [Action::PassRequestToTu, Action::Send100Trying]
        );
        assert_eq!(tx.poll_timeout(), None);
        // A retransmitted INVITE gets the 100 again.
        tx.handle_request_retransmission(at(t0, 500));
        assert_eq!(drain(&mut tx), [Action::RetransmitResponse(100)]);
    }

    #[test]
    fn delayed_100_is_sent_after_200_ms_unless_the_tu_answered() {
        let t0 = epoch();
        let config = TimerConfig {
            trying_100: Trying100::Delayed(Duration::from_millis(200)),
            ..TimerConfig::default()
        };
        let mut tx = ServerInvite::new(t0, false, &config);
        assert_eq!(drain(&mut tx), [Action::PassRequestToTu]);
        assert_eq!(run(&mut tx, t0), [(200, Action::Send100Trying)]);

        let mut tx = ServerInvite::new(t0, false, &config);
        drain(&mut tx);
        tx.send_response(at(t0, 150), 180).unwrap();
        assert_eq!(drain(&mut tx), [Action::SendResponse(180)]);
        assert_eq!(tx.poll_timeout(), None);

        // A retransmission before the delay: answered with a 100 at once.
        let mut tx = ServerInvite::new(t0, false, &config);
        drain(&mut tx);
        tx.handle_request_retransmission(at(t0, 100));
        assert_eq!(drain(&mut tx), [Action::Send100Trying]);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 200)));
        tx.handle_timeout(at(t0, 200));
        assert_eq!(drain(&mut tx), [Action::Send100Trying]);
    }

    #[test]
    fn provisional_from_tu_is_sent_and_retransmitted_on_request_retransmission() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(at(t0, 10), 180).unwrap();
        tx.send_response(at(t0, 20), 183).unwrap();
        assert_eq!(
            drain(&mut tx),
            [Action::SendResponse(180), Action::SendResponse(183)]
        );
        tx.handle_request_retransmission(at(t0, 500));
        assert_eq!(drain(&mut tx), [Action::RetransmitResponse(183)]);
        assert_eq!(tx.state(), ServerInviteState::Proceeding);
    }

    #[test]
    fn failure_over_udp_retransmits_on_timer_g_capped_at_t2_then_timer_h() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(t0, 486).unwrap();
        assert_eq!(tx.state(), ServerInviteState::Completed);
        assert_eq!(drain(&mut tx), [Action::SendResponse(486)]);
        let log = run(&mut tx, t0);
        let sends: Vec<u128> = log
            .iter()
            .filter(|(_, a)| *a == Action::RetransmitResponse(486))
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(
            sends,
            [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
        );
        assert_eq!(
            log[log.len() - 2..],
            [
                (32_000, Action::Timeout(Timer::H)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn failure_over_reliable_never_retransmits() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(t0, 404).unwrap();
        drain(&mut tx);
        assert_eq!(
            run(&mut tx, t0),
            [
                (32_000, Action::Timeout(Timer::H)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn completed_answers_invite_retransmission_with_the_final_response() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 603).unwrap();
        drain(&mut tx);
        tx.handle_request_retransmission(at(t0, 100));
        assert_eq!(drain(&mut tx), [Action::RetransmitResponse(603)]);
    }

    #[test]
    fn ack_confirms_then_timer_i_over_udp() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 486).unwrap();
        drain(&mut tx);
        tx.handle_ack(at(t0, 700));
        assert_eq!(tx.state(), ServerInviteState::Confirmed);
        assert_eq!(drain(&mut tx), []);
        // ACK retransmissions and INVITE retransmissions are absorbed.
        tx.handle_ack(at(t0, 800));
        tx.handle_request_retransmission(at(t0, 800));
        assert_eq!(drain(&mut tx), []);
        // Timer I = T4 = 5 s; Timer G stopped.
        assert_eq!(run(&mut tx, t0), [(5_700, Action::Terminated)]);
    }

    #[test]
    fn ack_over_reliable_terminates_at_once() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, true, &TimerConfig::default());
        tx.send_response(t0, 486).unwrap();
        drain(&mut tx);
        tx.handle_ack(at(t0, 50));
        assert_eq!(drain(&mut tx), [Action::Terminated]);
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn success_enters_accepted_until_timer_l() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.send_response(at(t0, 1_000), 200).unwrap();
        assert_eq!(tx.state(), ServerInviteState::Accepted);
        assert_eq!(drain(&mut tx), [Action::SendResponse(200)]);
        // INVITE retransmissions absorbed; the TU's 2xx retransmissions go out; ACK to TU.
        tx.handle_request_retransmission(at(t0, 1_100));
        assert_eq!(drain(&mut tx), []);
        tx.send_response(at(t0, 1_500), 200).unwrap();
        tx.handle_ack(at(t0, 1_600));
        assert_eq!(
            drain(&mut tx),
            [Action::SendResponse(200), Action::PassAckToTu]
        );
        // Non-2xx after a 2xx is refused.
        assert_eq!(
            tx.send_response(at(t0, 1_700), 500),
            Err(TransactionError::ResponseAfterFinal { status: 500 })
        );
        assert_eq!(run(&mut tx, t0), [(33_000, Action::Terminated)]);
        assert_eq!(
            tx.send_response(at(t0, 40_000), 200),
            Err(TransactionError::Terminated)
        );
    }

    #[test]
    fn transport_errors_follow_rfc_6026() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError]);
        assert_eq!(tx.state(), ServerInviteState::Proceeding);

        tx.send_response(t0, 200).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError]);
        assert_eq!(tx.state(), ServerInviteState::Accepted);

        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 480).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);
    }

    #[test]
    fn responses_after_a_non_2xx_final_are_refused() {
        let t0 = epoch();
        let mut tx = ServerInvite::new(t0, false, &TimerConfig::default());
        tx.send_response(t0, 486).unwrap();
        assert_eq!(
            tx.send_response(t0, 200),
            Err(TransactionError::ResponseAfterFinal { status: 200 })
        );
        assert_eq!(
            tx.send_response(t0, 42),
            Err(TransactionError::InvalidStatus(42))
        );
    }
}
