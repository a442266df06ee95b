//! Endpoint learning ("latching") for one local socket: which source address a leg really
//! sends from, and therefore where the relay sends that leg's media.
//!
//! The behaviour follows rtpengine's `endpoint-learning` (see
//! `shared/reference/rtpengine-ng.md` §2.2):
//!
//! ```text
//!                 packet within the window            packet after the window
//!  Learning ───────────────────────────────► Learning ─────────────────────────► Confirmed
//!  (destination = SDP address)    (destination = that source)        (destination fixed)
//!      │                                                                  │
//!      │ Immediate: first packet; Heuristic: source == SDP address        │ media-handover:
//!      └──────────────────────────────────────────────────────────────────►│ new source re-learns
//! ```
//!
//! * The window ([`LearningFlags::window`], 3 s by default) starts at the last signalling event
//!   (offer/answer); each one restarts it and forgets the confirmation.
//! * `Off` confirms the SDP address without learning.
//! * `Heuristic` ranks sources: exact SDP address and port (confirms at once) > same address,
//!   other port > same port, other address > anything; the destination tracks the best seen.
//! * After confirmation every source is still accepted unless `strict_source` is set (then
//!   other sources are dropped), and `media_handover` moves the destination to a new source.
//! * `asymmetric` never changes where the relay sends (the SDP address); the learned address is
//!   still tracked and still used by `strict_source`.
//! * A leg whose SDP address is not known yet forwards what it receives but learns nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long after a signalling event delayed and heuristic learning keep following sources.
pub const LEARNING_WINDOW: Duration = Duration::from_secs(3);

/// The endpoint-learning mode (rtpengine's `endpoint-learning=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointLearning {
    /// Follow each new source during the window; the first packet after it confirms.
    #[default]
    Delayed,
    /// The first packet confirms its source.
    Immediate,
    /// Follow the best-ranked source during the window; a packet from the SDP address confirms.
    Heuristic,
    /// Never learn: always send to the SDP address.
    Off,
}

/// Per-leg learning options (from the ng flags `strict source`, `media handover`, `asymmetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearningFlags {
    /// The learning mode.
    pub learning: EndpointLearning,
    /// The learning window for `Delayed` and `Heuristic`.
    pub window: Duration,
    /// After confirmation, drop packets from any other source (and, while learning
    /// heuristically, packets from sources ranked worse than the best seen).
    pub strict_source: bool,
    /// After confirmation, a packet from a new source moves the destination to it.
    pub media_handover: bool,
    /// Never change the destination from the SDP address.
    pub asymmetric: bool,
}

impl Default for LearningFlags {
    fn default() -> Self {
        Self {
            learning: EndpointLearning::Delayed,
            window: LEARNING_WINDOW,
            strict_source: false,
            media_handover: false,
            asymmetric: false,
        }
    }
}

/// Why a packet was refused by endpoint learning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `strict source`: the source is not the confirmed endpoint.
    NotConfirmedSource,
    /// `strict source` with heuristic learning: a better-ranked source was already seen.
    WorseThanBestSource,
}

/// Learning state of one local socket's peer.
#[derive(Debug, Clone)]
pub struct Latch {
    sdp: Option<SocketAddr>,
    learned: Option<SocketAddr>,
    confirmed: bool,
    window_start: Instant,
    /// Heuristic candidates by rank (0 = exact SDP match, 3 = nothing in common).
    candidates: [Option<SocketAddr>; 4],
}

impl Latch {
    /// A latch for a peer that the SDP placed at `sdp` (if known), signalled at `now`.
    pub fn new(sdp: Option<SocketAddr>, now: Instant) -> Self {
        Self {
            sdp,
            learned: None,
            confirmed: false,
            window_start: now,
            candidates: [None; 4],
        }
    }

    /// A signalling event (offer, answer, re-INVITE) at `now` with the peer's new SDP address:
    /// restart the window and forget the confirmation, keeping the learned address until a
    /// packet replaces it.
    pub fn signalled(&mut self, sdp: Option<SocketAddr>, now: Instant) {
        if sdp != self.sdp {
            self.learned = None;
        }
        self.sdp = sdp;
        self.confirmed = false;
        self.window_start = now;
        self.candidates = [None; 4];
    }

    /// Where the relay sends this peer's media: the learned address, else the SDP address
    /// (always the SDP address when `asymmetric`).
    #[inline]
    pub fn destination(&self, flags: &LearningFlags) -> Option<SocketAddr> {
        if flags.asymmetric {
            self.sdp
        } else {
            self.learned.or(self.sdp)
        }
    }

    /// The address from the SDP.
    pub fn sdp(&self) -> Option<SocketAddr> {
        self.sdp
    }

    /// The address learned from packets, if any.
    pub fn learned(&self) -> Option<SocketAddr> {
        self.learned
    }

    /// Whether the endpoint is confirmed (fixed unless `media_handover`).
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Feeds the source of a packet that arrived at `now`. `learnable` is false for RTCP that
    /// arrived on an RTP port (it never confirms an RTP endpoint: rtpengine GH#697).
    /// `Err` means drop the packet.
    #[inline]
    pub fn observe(
        &mut self,
        flags: &LearningFlags,
        source: SocketAddr,
        learnable: bool,
        now: Instant,
    ) -> Result<(), Refusal> {
        let Some(sdp) = self.sdp else {
            return Ok(());
        };
        if flags.learning == EndpointLearning::Off {
            self.confirmed = true;
        }
        if self.confirmed {
            if self.learned.or(self.sdp) == Some(source) {
                return Ok(());
            }
            if flags.media_handover {
                self.learned = Some(source);
                return Ok(());
            }
            return if flags.strict_source {
                Err(Refusal::NotConfirmedSource)
            } else {
                Ok(())
            };
        }
        if !learnable {
            return Ok(());
        }
        let in_window = now.saturating_duration_since(self.window_start) <= flags.window;
        match flags.learning {
            EndpointLearning::Immediate => self.confirm(source),
            EndpointLearning::Heuristic => {
                let rank = usize::from(source.port() != sdp.port())
                    | usize::from(source.ip() != sdp.ip()) << 1;
                if let Some(slot) = self.candidates.get_mut(rank) {
                    *slot = Some(source);
                }
                let (best_rank, best) = self
                    .candidates
                    .iter()
                    .enumerate()
                    .find_map(|(i, c)| c.map(|c| (i, c)))
                    .unwrap_or((rank, source));
                if rank == 0 {
                    self.confirm(source);
                } else if flags.strict_source && best_rank < rank {
                    return Err(Refusal::WorseThanBestSource);
                } else if in_window {
                    self.learned = Some(best);
                } else {
                    self.confirm(best);
                }
            }
            EndpointLearning::Delayed if in_window => self.learned = Some(source),
            EndpointLearning::Delayed | EndpointLearning::Off => self.confirm(source),
        }
        Ok(())
    }

    fn confirm(&mut self, endpoint: SocketAddr) {
        self.learned = Some(endpoint);
        self.confirmed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn flags(learning: EndpointLearning) -> LearningFlags {
        LearningFlags {
            learning,
            ..LearningFlags::default()
        }
    }

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    const SDP: &str = "192.0.2.10:4000";

    #[test]
    fn delayed_follows_sources_for_3_s_then_confirms_the_next() {
        let t0 = epoch();
        let f = flags(EndpointLearning::Delayed);
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        assert_eq!(latch.destination(&f), Some(addr(SDP)));
        let ms = Duration::from_millis;
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0 + ms(100))
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:5000")));
        latch
            .observe(&f, addr("198.51.100.2:5002"), true, t0 + ms(3000))
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.2:5002")));
        assert!(!latch.is_confirmed(), "3.000 s is still inside the window");
        latch
            .observe(&f, addr("198.51.100.3:5004"), true, t0 + ms(3001))
            .unwrap();
        assert!(latch.is_confirmed());
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.3:5004")));
        // Confirmed: another source is still accepted but does not move the destination.
        latch
            .observe(&f, addr("203.0.113.9:7000"), true, t0 + ms(4000))
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.3:5004")));
    }

    #[test]
    fn immediate_confirms_the_first_packet() {
        let t0 = epoch();
        let f = flags(EndpointLearning::Immediate);
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        latch
            .observe(&f, addr("198.51.100.2:5000"), true, t0)
            .unwrap();
        assert!(latch.is_confirmed());
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:5000")));
    }

    #[test]
    fn off_never_learns_and_strict_source_holds_to_the_sdp_address() {
        let t0 = epoch();
        let mut f = flags(EndpointLearning::Off);
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr(SDP)));
        f.strict_source = true;
        assert_eq!(
            latch.observe(&f, addr("198.51.100.1:5000"), true, t0),
            Err(Refusal::NotConfirmedSource)
        );
        assert_eq!(latch.observe(&f, addr(SDP), true, t0), Ok(()));
    }

    #[test]
    fn strict_source_drops_other_sources_after_confirmation() {
        let t0 = epoch();
        let f = LearningFlags {
            strict_source: true,
            ..flags(EndpointLearning::Immediate)
        };
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(
            latch.observe(&f, addr("198.51.100.66:5000"), true, t0),
            Err(Refusal::NotConfirmedSource)
        );
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:5000")));
    }

    #[test]
    fn media_handover_moves_the_confirmed_destination() {
        let t0 = epoch();
        let f = LearningFlags {
            media_handover: true,
            ..flags(EndpointLearning::Immediate)
        };
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        latch
            .observe(&f, addr("198.51.100.2:6000"), true, t0)
            .unwrap();
        assert!(latch.is_confirmed());
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.2:6000")));
    }

    #[test]
    fn asymmetric_learns_but_keeps_sending_to_the_sdp_address() {
        let t0 = epoch();
        let f = LearningFlags {
            asymmetric: true,
            ..flags(EndpointLearning::Immediate)
        };
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(latch.learned(), Some(addr("198.51.100.1:5000")));
        assert_eq!(latch.destination(&f), Some(addr(SDP)));
    }

    #[test]
    fn heuristic_ranks_sources_and_confirms_the_sdp_address() {
        let t0 = epoch();
        let f = LearningFlags {
            strict_source: true,
            ..flags(EndpointLearning::Heuristic)
        };
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:5000")));
        // Same address, other port ranks better.
        latch
            .observe(&f, addr("192.0.2.10:4002"), true, t0)
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("192.0.2.10:4002")));
        // Strict source: a worse-ranked source is now dropped.
        assert_eq!(
            latch.observe(&f, addr("198.51.100.1:5000"), true, t0),
            Err(Refusal::WorseThanBestSource)
        );
        // The exact SDP address confirms at once.
        latch.observe(&f, addr(SDP), true, t0).unwrap();
        assert!(latch.is_confirmed());
        assert_eq!(latch.destination(&f), Some(addr(SDP)));
    }

    #[test]
    fn heuristic_confirms_the_best_candidate_after_the_window() {
        let t0 = epoch();
        let f = flags(EndpointLearning::Heuristic);
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        latch
            .observe(&f, addr("198.51.100.1:4000"), true, t0)
            .unwrap();
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:4000")));
        latch
            .observe(
                &f,
                addr("198.51.100.7:5000"),
                true,
                t0 + Duration::from_secs(4),
            )
            .unwrap();
        assert!(latch.is_confirmed());
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.1:4000")));
    }

    #[test]
    fn signalling_restarts_the_window_and_unlearned_rtcp_does_not_confirm() {
        let t0 = epoch();
        let f = flags(EndpointLearning::Delayed);
        let mut latch = Latch::new(Some(addr(SDP)), t0);
        let late = t0 + Duration::from_secs(10);
        latch
            .observe(&f, addr("198.51.100.1:5000"), false, late)
            .unwrap();
        assert!(!latch.is_confirmed(), "stray RTCP never confirms");
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, late)
            .unwrap();
        assert!(latch.is_confirmed());
        latch.signalled(Some(addr(SDP)), late);
        assert!(!latch.is_confirmed());
        latch
            .observe(
                &f,
                addr("198.51.100.2:5000"),
                true,
                late + Duration::from_secs(1),
            )
            .unwrap();
        assert_eq!(latch.destination(&f), Some(addr("198.51.100.2:5000")));
        assert!(!latch.is_confirmed());
    }

    #[test]
    fn unknown_sdp_address_learns_nothing() {
        let t0 = epoch();
        let f = flags(EndpointLearning::Immediate);
        let mut latch = Latch::new(None, t0);
        latch
            .observe(&f, addr("198.51.100.1:5000"), true, t0)
            .unwrap();
        assert_eq!(latch.destination(&f), None);
    }
}
