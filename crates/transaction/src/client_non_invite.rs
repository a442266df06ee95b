//! The non-INVITE client transaction: [RFC 3261 §17.1.2](https://www.rfc-editor.org/rfc/rfc3261#section-17.1.2),
//! Figure 6.
//!
//! ```text
//!                                |Request from TU
//!                                |send request
//!            Timer E             V
//!            send request  +-----------+
//!                +---------|           |-------------------+
//!                |         |  Trying   |  Timer F          |
//!                +-------->|           |  or Transport Err.|
//!                          +-----------+  inform TU        |
//!             200-699         |  |                         |
//!             resp. to TU     |  |1xx                      |
//!             +---------------+  |resp. to TU              |
//!             |                  |                         |
//!             |   Timer E        V       Timer F           |
//!             |   send req +-----------+ or Transport Err. |
//!             |  +---------|           | inform TU         |
//!             |  |         |Proceeding |------------------>|
//!             |  +-------->|           |-----+             |
//!             |            +-----------+     |1xx          |
//!             |              |      ^        |resp to TU   |
//!             | 200-699      |      +--------+             |
//!             | resp. to TU  |                             |
//!             |              |                             |
//!             |              V                             |
//!             |            +-----------+                   |
//!             |            |           |                   |
//!             |            | Completed |                   |
//!             |            |           |                   |
//!             |            +-----------+                   |
//!             |              ^   |                         |
//!             |              |   | Timer K                 |
//!             +--------------+   | -                       |
//!                                |                         |
//!                                V                         |
//!                          +-----------+                   |
//!                          |           |                   |
//!                          | Terminated|<------------------+
//!                          |           |
//!                          +-----------+
//! ```
//!
//! Timer E starts at T1 and doubles up to T2 in `Trying`; in `Proceeding` it is reset to T2.
//! On reliable transports there is no Timer E and Timer K is zero.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::{Timer, TimerConfig};
use super::{classify, earliest, Action, Class, TransactionError};

/// The states of Figure 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// The request was sent; no response yet. Timer E retransmits (unreliable transports).
    Trying,
    /// A provisional response arrived; Timer E keeps retransmitting every T2.
    Proceeding,
    /// A final response arrived; its retransmissions are absorbed until Timer K.
    Completed,
    /// Done: destroy the transaction.
    Terminated,
}

/// A non-INVITE client transaction (sans-IO).
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientNonInviteState,
    timer_e: Option<Instant>,
    e_interval: Duration,
    t2: Duration,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
    k_duration: Duration,
    actions: VecDeque<Action>,
}

impl ClientNonInvite {
    /// Starts the transaction in `Trying` at `now`: queues [`Action::SendRequest`], starts
    /// Timer E (unreliable transports only) and Timer F.
    pub fn new(now: Instant, reliable: bool, config: &TimerConfig) -> Self {
        let first_e = config.first_retransmit(reliable);
        let mut actions = VecDeque::with_capacity(4);
        actions.push_back(Action::SendRequest);
        Self {
            state: ClientNonInviteState::Trying,
            timer_e: first_e.map(|d| now + d),
            e_interval: first_e.unwrap_or_default(),
            t2: config.t2.max(first_e.unwrap_or_default()),
            timer_f: Some(now + config.timer_f()),
            timer_k: None,
            k_duration: config.timer_k(reliable),
            actions,
        }
    }

    /// The current state.
    pub fn state(&self) -> ClientNonInviteState {
        self.state
    }

    /// Whether the transaction is terminated (and must be destroyed).
    pub fn is_terminated(&self) -> bool {
        self.state == ClientNonInviteState::Terminated
    }

    /// A response with this status code matched the transaction. Responses in `Completed`
    /// (retransmissions) are absorbed.
    pub fn handle_response(&mut self, now: Instant, status: u16) -> Result<(), TransactionError> {
        let class = classify(status)?;
        match (self.state, class) {
            (
                ClientNonInviteState::Trying | ClientNonInviteState::Proceeding,
                Class::Provisional,
            ) => {
                self.state = ClientNonInviteState::Proceeding;
                self.actions.push_back(Action::PassResponseToTu(status));
            }
            (ClientNonInviteState::Trying | ClientNonInviteState::Proceeding, _) => {
                self.timer_e = None;
                self.timer_f = None;
                self.state = ClientNonInviteState::Completed;
                self.actions.push_back(Action::PassResponseToTu(status));
                if self.k_duration.is_zero() {
                    self.terminate();
                } else {
                    self.timer_k = Some(now + self.k_duration);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The transport reported an error sending the request: in `Trying` and `Proceeding` the
    /// TU is informed and the transaction terminates; elsewhere the report is ignored.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ClientNonInviteState::Trying | ClientNonInviteState::Proceeding
        ) {
            self.actions.push_back(Action::TransportError);
            self.terminate();
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

    /// The earliest deadline at which [`ClientNonInvite::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// The next action for the caller, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        earliest([
            (self.timer_e, Timer::E),
            (self.timer_f, Timer::F),
            (self.timer_k, Timer::K),
        ])
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::E => {
                self.actions.push_back(Action::RetransmitRequest);
                self.e_interval = if self.state == ClientNonInviteState::Proceeding {
                    self.t2
                } else {
                    self.e_interval.saturating_mul(2).min(self.t2)
                };
                self.timer_e = Some(now + self.e_interval);
            }
            Timer::F => {
                self.actions.push_back(Action::Timeout(Timer::F));
                self.terminate();
            }
            _ => self.terminate(),
        }
    }

    fn terminate(&mut self) {
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
        self.state = ClientNonInviteState::Terminated;
        self.actions.push_back(Action::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, epoch, ms};

    fn drain(tx: &mut ClientNonInvite) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll_action()).collect()
    }

    fn run(tx: &mut ClientNonInvite, t0: Instant) -> Vec<(u128, Action)> {
        let mut log = Vec::new();
        while let Some(when) = tx.poll_timeout() {
            tx.handle_timeout(when);
            for a in drain(tx) {
                log.push((ms(t0, when), a));
            }
        }
        log
    }

    fn retransmissions(log: &[(u128, Action)]) -> Vec<u128> {
        log.iter()
            .filter(|(_, a)| *a == Action::RetransmitRequest)
            .map(|(t, _)| *t)
            .collect()
    }

    #[test]
    fn udp_retransmissions_cap_at_t2_then_timer_f() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        assert_eq!(drain(&mut tx), [Action::SendRequest]);
        let log = run(&mut tx, t0);
        assert_eq!(
            retransmissions(&log),
            [500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
        );
        assert_eq!(
            log[log.len() - 2..],
            [
                (32_000, Action::Timeout(Timer::F)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        assert_eq!(
            run(&mut tx, t0),
            [
                (32_000, Action::Timeout(Timer::F)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn provisional_resets_timer_e_to_t2() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_timeout(at(t0, 500));
        assert_eq!(drain(&mut tx), [Action::RetransmitRequest]);
        tx.handle_response(at(t0, 1_000), 100).unwrap();
        assert_eq!(tx.state(), ClientNonInviteState::Proceeding);
        assert_eq!(drain(&mut tx), [Action::PassResponseToTu(100)]);
        let log = run(&mut tx, t0);
        // The pending E (at 1.5 s) fires, then every T2 = 4 s.
        assert_eq!(
            retransmissions(&log),
            [1_500, 5_500, 9_500, 13_500, 17_500, 21_500, 25_500, 29_500]
        );
        assert_eq!(log.last(), Some(&(32_000, Action::Terminated)));
    }

    #[test]
    fn final_response_completes_then_timer_k_over_udp() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 100), 180).unwrap();
        tx.handle_response(at(t0, 200), 200).unwrap();
        assert_eq!(tx.state(), ClientNonInviteState::Completed);
        assert_eq!(
            drain(&mut tx),
            [Action::PassResponseToTu(180), Action::PassResponseToTu(200)]
        );
        // Retransmissions absorbed.
        tx.handle_response(at(t0, 300), 200).unwrap();
        tx.handle_response(at(t0, 300), 100).unwrap();
        assert_eq!(drain(&mut tx), []);
        // Timer K = T4 = 5 s.
        assert_eq!(run(&mut tx, t0), [(5_200, Action::Terminated)]);
    }

    #[test]
    fn final_response_from_trying_over_reliable_terminates_at_once() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 100), 404).unwrap();
        assert_eq!(
            drain(&mut tx),
            [Action::PassResponseToTu(404), Action::Terminated]
        );
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn timer_f_in_proceeding_times_out() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, true, &TimerConfig::default());
        tx.handle_response(at(t0, 100), 183).unwrap();
        drain(&mut tx);
        assert_eq!(
            run(&mut tx, t0),
            [
                (32_000, Action::Timeout(Timer::F)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn transport_error_in_trying_and_proceeding_informs_tu() {
        let t0 = epoch();
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        tx.handle_response(t0, 100).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);
        let mut tx = ClientNonInvite::new(t0, false, &TimerConfig::default());
        tx.handle_response(t0, 200).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), []);
        assert_eq!(tx.state(), ClientNonInviteState::Completed);
    }

    #[test]
    fn t2_cap_follows_configuration() {
        let t0 = epoch();
        let config = TimerConfig {
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(300),
            ..TimerConfig::default()
        };
        let mut tx = ClientNonInvite::new(t0, false, &config);
        drain(&mut tx);
        let log = run(&mut tx, t0);
        // 100, 200, 300, 300, ... until F = 6.4 s.
        let sends = retransmissions(&log);
        assert_eq!(sends[..5], [100, 300, 600, 900, 1_200]);
        assert_eq!(log.last(), Some(&(6_400, Action::Terminated)));
    }
}
