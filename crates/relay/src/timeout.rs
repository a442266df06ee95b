//! When a relay session ends by itself: no media for too long after the answer (rtpengine's
//! `timeout`, 60 s), or no answer for too long after the offer (`offer-timeout`, 3600 s).
//!
//! ```text
//!   offer ──(no answer for `offer`)──► Expired(Offer)
//!     │ answer
//!     ▼
//!   answered ──(no packet for `media` since max(answer, last packet))──► Expired(Media)
//! ```

use std::time::{Duration, Instant};

/// The timeouts of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// No packet on any stream for this long after the answer ends the session.
    pub media: Duration,
    /// An offer not answered for this long ends the session.
    pub offer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            media: Duration::from_secs(60),
            offer: Duration::from_secs(3600),
        }
    }
}

/// Why a session expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No media for [`Timeouts::media`].
    Media,
    /// No answer for [`Timeouts::offer`].
    Offer,
}

/// Liveness of one session: offer and answer times; the last packet time is an input because
/// the media streams own it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    timeouts: Timeouts,
    offered_at: Instant,
    answered_at: Option<Instant>,
}

impl Liveness {
    /// A session offered at `now`.
    pub fn new(timeouts: Timeouts, now: Instant) -> Self {
        Self {
            timeouts,
            offered_at: now,
            answered_at: None,
        }
    }

    /// The answer arrived at `now` (a re-answer moves the media reference forward).
    pub fn answered(&mut self, now: Instant) {
        self.answered_at = Some(now);
    }

    /// Whether the session has been answered.
    pub fn is_answered(&self) -> bool {
        self.answered_at.is_some()
    }

    /// When the session expires unless something happens first, given the last packet time.
    pub fn deadline(&self, last_packet: Option<Instant>) -> Instant {
        match self.answered_at {
            None => self.offered_at + self.timeouts.offer,
            Some(answered) => answered.max(last_packet.unwrap_or(answered)) + self.timeouts.media,
        }
    }

    /// Whether the session has expired at `now`.
    pub fn check(&self, now: Instant, last_packet: Option<Instant>) -> Option<Expiry> {
        if now < self.deadline(last_packet) {
            return None;
        }
        Some(match self.answered_at {
            None => Expiry::Offer,
            Some(_) => Expiry::Media,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn unanswered_offer_expires_after_3600_s() {
        let t0 = epoch();
        let live = Liveness::new(Timeouts::default(), t0);
        assert_eq!(live.check(t0 + S(3599), None), None);
        assert_eq!(live.check(t0 + S(3600), None), Some(Expiry::Offer));
        // Early media does not stop the offer timeout.
        assert_eq!(
            live.check(t0 + S(3600), Some(t0 + S(3599))),
            Some(Expiry::Offer)
        );
    }

    #[test]
    fn media_timeout_counts_from_the_last_packet_or_the_answer() {
        let t0 = epoch();
        let mut live = Liveness::new(Timeouts::default(), t0);
        live.answered(t0 + S(5));
        assert_eq!(live.check(t0 + S(64), None), None);
        assert_eq!(live.check(t0 + S(65), None), Some(Expiry::Media));
        let last = Some(t0 + S(30));
        assert_eq!(live.deadline(last), t0 + S(90));
        assert_eq!(live.check(t0 + S(89), last), None);
        assert_eq!(live.check(t0 + S(90), last), Some(Expiry::Media));
    }
}
