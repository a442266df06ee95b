//! The INVITE client transaction: [RFC 3261 §17.1.1](https://www.rfc-editor.org/rfc/rfc3261#section-17.1.1),
//! Figure 5 as updated by [RFC 6026 §7.2](https://www.rfc-editor.org/rfc/rfc6026#section-7.2),
//! with Timer C for proxied INVITEs ([§16.6 step 11, §16.7, §16.8](https://www.rfc-editor.org/rfc/rfc3261#section-16.8)).
//!
//! ```text
//!                               |INVITE from TU
//!             Timer A fires     |INVITE sent       Timer B fires
//!             Reset A,          V                  or Transport Err.
//!             INVITE sent +-----------+            inform TU
//!               +---------|           |---------------------------+
//!               |         |  Calling  |                           |
//!               +-------->|           |-----------+               |
//! 300-699                 +-----------+ 2xx       |               |
//! ACK sent                   |  |       2xx to TU |               |
//! resp. to TU                |  |1xx              |               |
//! +--------------------------+  |1xx to TU        |               |
//! |                             |                 |               |
//! |                1xx          V                 |               |
//! |                1xx to TU +-----------+        |               |
//! |                +---------|           |        |               |
//! |                |         |Proceeding |        |               |
//! |                +-------->|           |        |               |
//! |                          +-----------+ 2xx    |               |
//! |         300-699             |    |   2xx to TU|               |
//! |         ACK sent,           |    +----------->|               |
//! |         resp. to TU         |                 |               |
//! |  +--------------------------+                 |               |
//! |  |                                            V               |
//! |  |  300-699                             +-----------+         |
//! |  |  ACK sent                            |           |---+ 2xx |
//! |  |  +---------+                         | Accepted  |   | 2xx |
//! |  |  |         |                         |           |<--+ to TU
//! V  V  V         |                         +-----------+         |
//! +-----------+   |                               |               |
//! |           |---+                               |Timer M fires  |
//! | Completed |                                   |-              |
//! |           |                                   |               |
//! +-----------+                                   |               |
//!   |  Timer D fires                              |               |
//!   |  or Transport Err.                          |               |
//!   |  inform TU (Transport Err. only)            |               |
//!   V                                             V               |
//! +-------------------------------------------------------------+ |
//! |                         Terminated                          |<+
//! +-------------------------------------------------------------+
//! ```
//!
//! Timer C (only for [`ClientInvite::new_proxied`]): started with the transaction, reset on
//! each provisional response from 101 to 199, stopped by a final response. When it fires in
//! `Proceeding` the proxy must CANCEL the branch ([`Action::TimerC`] with
//! `provisional_received: true`) and the transaction waits [`Timer::CancelWait`] (64*T1, §9.1)
//! for the final response; in `Calling` the proxy must act as if a 408 had arrived and the
//! transaction terminates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::timers::{Timer, TimerConfig};
use super::{classify, earliest, Action, Class, TransactionError};

/// The states of Figure 5 with RFC 6026's `Accepted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// The INVITE was sent; no response yet. Timer A retransmits (unreliable transports).
    Calling,
    /// A provisional response arrived; no more retransmissions.
    Proceeding,
    /// A 300–699 arrived and was ACKed; its retransmissions are ACKed again until Timer D.
    Completed,
    /// RFC 6026: a 2xx arrived; further 2xx (retransmissions, forks) go to the TU until Timer M.
    Accepted,
    /// Done: destroy the transaction.
    Terminated,
}

/// An INVITE client transaction (sans-IO).
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientInviteState,
    provisional_received: bool,
    timer_a: Option<Instant>,
    a_interval: Duration,
    timer_b: Option<Instant>,
    timer_c: Option<Instant>,
    /// Timer C's duration; `None` when the INVITE is not proxied.
    c_duration: Option<Duration>,
    timer_d: Option<Instant>,
    d_duration: Duration,
    timer_m: Option<Instant>,
    m_duration: Duration,
    cancel_wait: Option<Instant>,
    cancel_wait_duration: Duration,
    actions: VecDeque<Action>,
}

impl ClientInvite {
    /// Starts the transaction in `Calling` at `now`: queues [`Action::SendRequest`], starts
    /// Timer A (unreliable transports only) and Timer B.
    pub fn new(now: Instant, reliable: bool, config: &TimerConfig) -> Self {
        let first_a = config.first_retransmit(reliable);
        let mut actions = VecDeque::with_capacity(4);
        actions.push_back(Action::SendRequest);
        Self {
            state: ClientInviteState::Calling,
            provisional_received: false,
            timer_a: first_a.map(|d| now + d),
            a_interval: first_a.unwrap_or_default(),
            timer_b: Some(now + config.timer_b()),
            timer_c: None,
            c_duration: None,
            timer_d: None,
            d_duration: config.timer_d(reliable),
            timer_m: None,
            m_duration: config.timer_m(),
            cancel_wait: None,
            cancel_wait_duration: config.cancel_wait(),
            actions,
        }
    }

    /// As [`ClientInvite::new`], for an INVITE forwarded by a proxy: also starts Timer C.
    pub fn new_proxied(now: Instant, reliable: bool, config: &TimerConfig) -> Self {
        let mut tx = Self::new(now, reliable, config);
        tx.c_duration = Some(config.timer_c);
        tx.timer_c = Some(now + config.timer_c);
        tx
    }

    /// The current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// Whether the transaction is terminated (and must be destroyed).
    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }

    /// A response with this status code matched the transaction. Retransmitted final
    /// responses are absorbed (a 300–699 is ACKed again); in `Accepted` every 2xx goes to
    /// the TU (RFC 6026).
    pub fn handle_response(&mut self, now: Instant, status: u16) -> Result<(), TransactionError> {
        let class = classify(status)?;
        match (self.state, class) {
            (ClientInviteState::Calling | ClientInviteState::Proceeding, Class::Provisional) => {
                self.state = ClientInviteState::Proceeding;
                self.provisional_received = true;
                self.timer_a = None;
                self.timer_b = None;
                if status >= 101 {
                    if let Some(c) = self.c_duration {
                        if self.timer_c.is_some() {
                            self.timer_c = Some(now + c);
                        }
                    }
                }
                self.actions.push_back(Action::PassResponseToTu(status));
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, Class::Success) => {
                self.stop_timers();
                self.state = ClientInviteState::Accepted;
                self.timer_m = Some(now + self.m_duration);
                self.actions.push_back(Action::PassResponseToTu(status));
            }
            (ClientInviteState::Calling | ClientInviteState::Proceeding, Class::Failure) => {
                self.stop_timers();
                self.state = ClientInviteState::Completed;
                self.actions.push_back(Action::SendAck);
                self.actions.push_back(Action::PassResponseToTu(status));
                if self.d_duration.is_zero() {
                    self.terminate();
                } else {
                    self.timer_d = Some(now + self.d_duration);
                }
            }
            (ClientInviteState::Completed, Class::Failure) => {
                self.actions.push_back(Action::SendAck);
            }
            (ClientInviteState::Accepted, Class::Success) => {
                self.actions.push_back(Action::PassResponseToTu(status));
            }
            // Anything else is a late or stray response: absorbed.
            _ => {}
        }
        Ok(())
    }

    /// The transport reported an error sending the INVITE or the ACK: in `Calling` and
    /// `Completed` the TU is informed and the transaction terminates. Elsewhere nothing is
    /// being sent and the report is ignored.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if matches!(
            self.state,
            ClientInviteState::Calling | ClientInviteState::Completed
        ) {
            self.actions.push_back(Action::TransportError);
            self.terminate();
        }
    }

    /// The TU sent a CANCEL for this INVITE (§9.1): if no final response arrives within
    /// 64*T1 the transaction times out with [`Timer::CancelWait`] and terminates.
    pub fn handle_cancel_sent(&mut self, now: Instant) {
        if matches!(
            self.state,
            ClientInviteState::Calling | ClientInviteState::Proceeding
        ) && self.cancel_wait.is_none()
        {
            self.cancel_wait = Some(now + self.cancel_wait_duration);
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

    /// The earliest deadline at which [`ClientInvite::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(at, _)| at)
    }

    /// The next action for the caller, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    fn next_timer(&self) -> Option<(Instant, Timer)> {
        earliest([
            (self.timer_a, Timer::A),
            (self.timer_b, Timer::B),
            (self.timer_c, Timer::C),
            (self.timer_d, Timer::D),
            (self.timer_m, Timer::M),
            (self.cancel_wait, Timer::CancelWait),
        ])
    }

    fn fire(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::A => {
                self.actions.push_back(Action::RetransmitRequest);
                self.a_interval = self.a_interval.saturating_mul(2);
                self.timer_a = Some(now + self.a_interval);
            }
            Timer::B => {
                self.actions.push_back(Action::Timeout(Timer::B));
                self.terminate();
            }
            Timer::C => {
                self.timer_c = None;
                let provisional_received = self.provisional_received;
                self.actions.push_back(Action::TimerC {
                    provisional_received,
                });
                if provisional_received {
                    if self.cancel_wait.is_none() {
                        self.cancel_wait = Some(now + self.cancel_wait_duration);
                    }
                } else {
                    self.terminate();
                }
            }
            Timer::CancelWait => {
                self.actions.push_back(Action::Timeout(Timer::CancelWait));
                self.terminate();
            }
            // D, M and anything else: the wait is over.
            _ => self.terminate(),
        }
    }

    fn stop_timers(&mut self) {
        self.timer_a = None;
        self.timer_b = None;
        self.timer_c = None;
        self.timer_d = None;
        self.timer_m = None;
        self.cancel_wait = None;
    }

    fn terminate(&mut self) {
        self.stop_timers();
        self.state = ClientInviteState::Terminated;
        self.actions.push_back(Action::Terminated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{at, epoch, ms};

    fn drain(tx: &mut ClientInvite) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll_action()).collect()
    }

    /// Runs the transaction's timers until it stops, recording when each action happened.
    fn run(tx: &mut ClientInvite, t0: Instant) -> Vec<(u128, Action)> {
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
    fn udp_retransmits_on_timer_a_then_times_out_on_timer_b() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        assert_eq!(drain(&mut tx), [Action::SendRequest]);
        let log = run(&mut tx, t0);
        assert_eq!(
            log,
            [
                (500, Action::RetransmitRequest),
                (1_500, Action::RetransmitRequest),
                (3_500, Action::RetransmitRequest),
                (7_500, Action::RetransmitRequest),
                (15_500, Action::RetransmitRequest),
                (31_500, Action::RetransmitRequest),
                (32_000, Action::Timeout(Timer::B)),
                (32_000, Action::Terminated),
            ]
        );
        assert_eq!(tx.state(), ClientInviteState::Terminated);
    }

    #[test]
    fn reliable_transport_never_retransmits() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, true, &TimerConfig::default());
        assert_eq!(drain(&mut tx), [Action::SendRequest]);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_000)));
        assert_eq!(
            run(&mut tx, t0),
            [
                (32_000, Action::Timeout(Timer::B)),
                (32_000, Action::Terminated)
            ]
        );
    }

    #[test]
    fn late_wakeup_fires_due_timers_in_order_without_a_burst() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        // Woken 40 s late: A fires once, then B.
        tx.handle_timeout(at(t0, 40_000));
        assert_eq!(
            drain(&mut tx),
            [
                Action::RetransmitRequest,
                Action::Timeout(Timer::B),
                Action::Terminated
            ]
        );
    }

    #[test]
    fn provisional_moves_to_proceeding_and_stops_retransmissions() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_timeout(at(t0, 500));
        assert_eq!(drain(&mut tx), [Action::RetransmitRequest]);
        tx.handle_response(at(t0, 600), 100).unwrap();
        assert_eq!(tx.state(), ClientInviteState::Proceeding);
        assert_eq!(drain(&mut tx), [Action::PassResponseToTu(100)]);
        tx.handle_response(at(t0, 700), 180).unwrap();
        assert_eq!(drain(&mut tx), [Action::PassResponseToTu(180)]);
        // No Timer A, no Timer B in Proceeding (Figure 5); a UA's TU decides.
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn failure_in_calling_acks_and_waits_timer_d_over_udp() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 100), 486).unwrap();
        assert_eq!(tx.state(), ClientInviteState::Completed);
        assert_eq!(
            drain(&mut tx),
            [Action::SendAck, Action::PassResponseToTu(486)]
        );
        // A retransmitted final response is ACKed again, not passed up.
        tx.handle_response(at(t0, 600), 486).unwrap();
        assert_eq!(drain(&mut tx), [Action::SendAck]);
        // Provisional and 2xx are absorbed in Completed.
        tx.handle_response(at(t0, 700), 180).unwrap();
        tx.handle_response(at(t0, 700), 200).unwrap();
        assert_eq!(drain(&mut tx), []);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_100)));
        assert_eq!(run(&mut tx, t0), [(32_100, Action::Terminated)]);
    }

    #[test]
    fn failure_in_proceeding_over_reliable_terminates_at_once() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 10), 183).unwrap();
        drain(&mut tx);
        tx.handle_response(at(t0, 20), 603).unwrap();
        assert_eq!(
            drain(&mut tx),
            [
                Action::SendAck,
                Action::PassResponseToTu(603),
                Action::Terminated
            ]
        );
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn success_enters_accepted_passes_every_2xx_until_timer_m() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 200), 200).unwrap();
        assert_eq!(tx.state(), ClientInviteState::Accepted);
        assert_eq!(drain(&mut tx), [Action::PassResponseToTu(200)]);
        // RFC 6026: 2xx retransmissions and 2xx from other forks go to the TU.
        tx.handle_response(at(t0, 700), 200).unwrap();
        tx.handle_response(at(t0, 800), 202).unwrap();
        // Non-2xx is absorbed.
        tx.handle_response(at(t0, 900), 487).unwrap();
        assert_eq!(
            drain(&mut tx),
            [Action::PassResponseToTu(200), Action::PassResponseToTu(202)]
        );
        assert_eq!(tx.poll_timeout(), Some(at(t0, 32_200)));
        assert_eq!(run(&mut tx, t0), [(32_200, Action::Terminated)]);
    }

    #[test]
    fn success_from_proceeding_enters_accepted() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, true, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_response(at(t0, 10), 180).unwrap();
        tx.handle_response(at(t0, 5_000), 200).unwrap();
        assert_eq!(
            drain(&mut tx),
            [Action::PassResponseToTu(180), Action::PassResponseToTu(200)]
        );
        assert_eq!(tx.state(), ClientInviteState::Accepted);
        // Timer M is 64*T1 on reliable transports too.
        assert_eq!(tx.poll_timeout(), Some(at(t0, 37_000)));
    }

    #[test]
    fn transport_error_in_calling_and_completed_informs_tu() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        tx.handle_transport_error(t0);
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);

        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        tx.handle_response(at(t0, 50), 404).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(at(t0, 60));
        assert_eq!(drain(&mut tx), [Action::TransportError, Action::Terminated]);

        // In Proceeding nothing is being sent: ignored.
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        tx.handle_response(at(t0, 50), 180).unwrap();
        drain(&mut tx);
        tx.handle_transport_error(at(t0, 60));
        assert_eq!(drain(&mut tx), []);
        assert_eq!(tx.state(), ClientInviteState::Proceeding);
    }

    #[test]
    fn invalid_status_is_refused() {
        let t0 = epoch();
        let mut tx = ClientInvite::new(t0, false, &TimerConfig::default());
        drain(&mut tx);
        assert_eq!(
            tx.handle_response(t0, 99),
            Err(TransactionError::InvalidStatus(99))
        );
        assert_eq!(
            tx.handle_response(t0, 700),
            Err(TransactionError::InvalidStatus(700))
        );
        assert_eq!(tx.state(), ClientInviteState::Calling);
    }

    #[test]
    fn timer_c_is_reset_by_101_to_199_and_asks_for_cancel() {
        let t0 = epoch();
        let mut tx = ClientInvite::new_proxied(t0, true, &TimerConfig::default());
        drain(&mut tx);
        // 100 does not reset Timer C (§16.7 step 2).
        tx.handle_response(at(t0, 1_000), 100).unwrap();
        assert_eq!(tx.poll_timeout(), Some(at(t0, 181_000)));
        tx.handle_response(at(t0, 60_000), 180).unwrap();
        assert_eq!(tx.poll_timeout(), Some(at(t0, 241_000)));
        tx.handle_response(at(t0, 120_000), 183).unwrap();
        drain(&mut tx);
        assert_eq!(tx.poll_timeout(), Some(at(t0, 301_000)));
        tx.handle_timeout(at(t0, 301_000));
        assert_eq!(
            drain(&mut tx),
            [Action::TimerC {
                provisional_received: true
            }]
        );
        assert_eq!(tx.state(), ClientInviteState::Proceeding);
        // The proxy sends CANCEL; the 487 arrives and is ACKed.
        tx.handle_cancel_sent(at(t0, 301_000));
        assert_eq!(tx.poll_timeout(), Some(at(t0, 333_000)));
        tx.handle_response(at(t0, 301_100), 487).unwrap();
        assert_eq!(
            drain(&mut tx),
            [
                Action::SendAck,
                Action::PassResponseToTu(487),
                Action::Terminated
            ]
        );
    }

    #[test]
    fn timer_c_then_no_final_response_times_out_after_64_t1() {
        let t0 = epoch();
        let mut tx = ClientInvite::new_proxied(t0, true, &TimerConfig::default());
        tx.handle_response(at(t0, 10), 180).unwrap();
        drain(&mut tx);
        assert_eq!(
            run(&mut tx, t0),
            [
                (
                    181_010,
                    Action::TimerC {
                        provisional_received: true
                    }
                ),
                (213_010, Action::Timeout(Timer::CancelWait)),
                (213_010, Action::Terminated),
            ]
        );
    }

    #[test]
    fn timer_c_without_provisional_acts_as_408() {
        let t0 = epoch();
        // A Timer B longer than Timer C: only then can C fire in Calling.
        let config = TimerConfig {
            t1: Duration::from_secs(4),
            t2: Duration::from_secs(4),
            ..TimerConfig::default()
        };
        let mut tx = ClientInvite::new_proxied(t0, true, &config);
        drain(&mut tx);
        assert_eq!(
            run(&mut tx, t0),
            [
                (
                    181_000,
                    Action::TimerC {
                        provisional_received: false
                    }
                ),
                (181_000, Action::Terminated),
            ]
        );
    }

    #[test]
    fn final_response_stops_timer_c() {
        let t0 = epoch();
        let mut tx = ClientInvite::new_proxied(t0, false, &TimerConfig::default());
        tx.handle_response(at(t0, 10), 180).unwrap();
        tx.handle_response(at(t0, 20), 200).unwrap();
        drain(&mut tx);
        assert_eq!(run(&mut tx, t0), [(32_020, Action::Terminated)]);
    }
}
