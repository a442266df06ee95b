//! Transaction timers: [RFC 3261 §17 and Table 4](https://www.rfc-editor.org/rfc/rfc3261#appendix-A),
//! Timer C from [§16.6 step 11](https://www.rfc-editor.org/rfc/rfc3261#section-16.6), and
//! Timers L and M from [RFC 6026 §8.11](https://www.rfc-editor.org/rfc/rfc6026#section-8.11).
//!
//! Timers are data: [`TimerConfig`] holds the base values (T1, T2, T4, Timer C, Timer D) and
//! derives every other timer from them, per transport reliability. The state machines keep
//! deadlines (`Instant`s) and never read a clock.

use std::time::Duration;

use thiserror::Error;

/// The transaction timers. One line each from RFC 3261 Table 4, RFC 6026 for L and M.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE request retransmit interval, for UDP only; starts at T1 and doubles.
    A,
    /// INVITE transaction timeout timer: 64*T1.
    B,
    /// Proxy INVITE transaction timeout (§16.6): more than 3 minutes, reset by 101–199.
    C,
    /// Wait time for response retransmits: at least 32 s for UDP, 0 for TCP/SCTP.
    D,
    /// Non-INVITE request retransmit interval, UDP only; starts at T1, doubles, caps at T2.
    E,
    /// Non-INVITE transaction timeout timer: 64*T1.
    F,
    /// INVITE response retransmit interval; starts at T1, doubles, caps at T2.
    G,
    /// Wait time for ACK receipt: 64*T1.
    H,
    /// Wait time for ACK retransmits: T4 for UDP, 0 for TCP/SCTP.
    I,
    /// Wait time for non-INVITE request retransmits: 64*T1 for UDP, 0 for TCP/SCTP.
    J,
    /// Wait time for response retransmits: T4 for UDP, 0 for TCP/SCTP.
    K,
    /// RFC 6026: wait time for accepted INVITE request retransmits: 64*T1.
    L,
    /// RFC 6026: wait time for retransmission of 2xx to INVITE or additional 2xx from other
    /// branches of a forked INVITE: 64*T1.
    M,
    /// §17.2.1: the 200 ms after which a server INVITE transaction sends 100 Trying itself
    /// when configured with [`Trying100::Delayed`].
    Trying100,
    /// §9.1: after a CANCEL, how long (64*T1) a client INVITE transaction waits for the final
    /// response before it considers the INVITE cancelled and is destroyed.
    CancelWait,
}

/// When a server INVITE transaction sends 100 Trying (RFC 3261 §17.2.1, §16.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trying100 {
    /// Send it as soon as the transaction is created: what a proxy does (§16.2).
    Immediate,
    /// Send it only if the TU has not sent a response within this delay (the RFC's 200 ms
    /// variant for a TU known to answer quickly).
    Delayed(Duration),
}

/// Timer configuration of the transaction layer, with the RFC 3261 defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// T1, the RTT estimate: 500 ms.
    pub t1: Duration,
    /// T2, the maximum retransmit interval for non-INVITE requests and INVITE responses: 4 s.
    pub t2: Duration,
    /// T4, the maximum duration a message remains in the network: 5 s.
    pub t4: Duration,
    /// Timer C for proxied INVITEs: must be more than 3 minutes (§16.6 step 11); 181 s.
    pub timer_c: Duration,
    /// Timer D on unreliable transports: at least 32 s (§17.1.1.2); 32 s.
    pub timer_d: Duration,
    /// When a server INVITE transaction sends 100 Trying.
    pub trying_100: Trying100,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
            timer_d: Duration::from_secs(32),
            trying_100: Trying100::Immediate,
        }
    }
}

/// A [`TimerConfig`] that breaks an RFC rule the state machines rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TimerConfigError {
    /// T1 is zero: retransmissions would never back off.
    #[error("T1 must be greater than zero")]
    ZeroT1,
    /// T2 is below T1: the retransmission cap would be below the first interval.
    #[error("T2 ({t2:?}) must not be below T1 ({t1:?})")]
    T2BelowT1 {
        /// The configured T1.
        t1: Duration,
        /// The configured T2.
        t2: Duration,
    },
    /// Timer C is 3 minutes or less (RFC 3261 §16.6 step 11 requires more).
    #[error("Timer C ({0:?}) must be greater than 3 minutes")]
    TimerCTooShort(Duration),
}

/// 64*T1 without overflow.
fn times_64(t1: Duration) -> Duration {
    t1.saturating_mul(64)
}

impl TimerConfig {
    /// Checks the RFC constraints: T1 > 0, T2 ≥ T1, Timer C > 3 min.
    pub fn validate(&self) -> Result<(), TimerConfigError> {
        if self.t1.is_zero() {
            return Err(TimerConfigError::ZeroT1);
        }
        if self.t2 < self.t1 {
            return Err(TimerConfigError::T2BelowT1 {
                t1: self.t1,
                t2: self.t2,
            });
        }
        if self.timer_c <= Duration::from_secs(180) {
            return Err(TimerConfigError::TimerCTooShort(self.timer_c));
        }
        Ok(())
    }

    /// First interval of Timer A (INVITE) or E (non-INVITE): T1 on unreliable transports,
    /// none on reliable ones. Never below 1 ms, so a zero T1 cannot spin.
    pub fn first_retransmit(&self, reliable: bool) -> Option<Duration> {
        (!reliable).then(|| self.t1.max(Duration::from_millis(1)))
    }

    /// First interval of Timer G: T1, on unreliable transports only. Never below 1 ms.
    pub fn timer_g(&self, reliable: bool) -> Option<Duration> {
        self.first_retransmit(reliable)
    }

    /// Timer B: 64*T1.
    pub fn timer_b(&self) -> Duration {
        times_64(self.t1)
    }

    /// Timer D: [`TimerConfig::timer_d`] on unreliable transports, zero on reliable ones.
    pub fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timer_d
        }
    }

    /// Timer F: 64*T1.
    pub fn timer_f(&self) -> Duration {
        times_64(self.t1)
    }

    /// Timer H: 64*T1.
    pub fn timer_h(&self) -> Duration {
        times_64(self.t1)
    }

    /// Timer I: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_i(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer J: 64*T1 on unreliable transports, zero on reliable ones.
    pub fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            times_64(self.t1)
        }
    }

    /// Timer K: T4 on unreliable transports, zero on reliable ones.
    pub fn timer_k(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }

    /// Timer L (RFC 6026): 64*T1.
    pub fn timer_l(&self) -> Duration {
        times_64(self.t1)
    }

    /// Timer M (RFC 6026): 64*T1.
    pub fn timer_m(&self) -> Duration {
        times_64(self.t1)
    }

    /// The §9.1 wait for a final response after CANCEL: 64*T1.
    pub fn cancel_wait(&self) -> Duration {
        times_64(self.t1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_rfc_values() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.timer_b(), Duration::from_secs(32));
        assert_eq!(c.timer_f(), Duration::from_secs(32));
        assert_eq!(c.timer_h(), Duration::from_secs(32));
        assert_eq!(c.timer_j(false), Duration::from_secs(32));
        assert_eq!(c.timer_j(true), Duration::ZERO);
        assert_eq!(c.timer_d(false), Duration::from_secs(32));
        assert_eq!(c.timer_d(true), Duration::ZERO);
        assert_eq!(c.timer_i(false), Duration::from_secs(5));
        assert_eq!(c.timer_i(true), Duration::ZERO);
        assert_eq!(c.timer_k(false), Duration::from_secs(5));
        assert_eq!(c.timer_k(true), Duration::ZERO);
        assert_eq!(c.timer_l(), Duration::from_secs(32));
        assert_eq!(c.timer_m(), Duration::from_secs(32));
        assert!(c.timer_c > Duration::from_secs(180));
        assert_eq!(c.first_retransmit(false), Some(Duration::from_millis(500)));
        assert_eq!(c.first_retransmit(true), None);
        assert_eq!(c.timer_g(true), None);
        assert_eq!(c.trying_100, Trying100::Immediate);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_what_the_rfc_forbids() {
        let zero = TimerConfig {
            t1: Duration::ZERO,
            ..TimerConfig::default()
        };
        assert_eq!(zero.validate(), Err(TimerConfigError::ZeroT1));
        let low_t2 = TimerConfig {
            t2: Duration::from_millis(100),
            ..TimerConfig::default()
        };
        assert!(matches!(
            low_t2.validate(),
            Err(TimerConfigError::T2BelowT1 { .. })
        ));
        let short_c = TimerConfig {
            timer_c: Duration::from_secs(180),
            ..TimerConfig::default()
        };
        assert_eq!(
            short_c.validate(),
            Err(TimerConfigError::TimerCTooShort(Duration::from_secs(180)))
        );
    }
}
