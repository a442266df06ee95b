//! The call generator's core (sans-IO): user agents that place and answer calls through a
//! proxy, the RTP each call sends and checks, the measurement of every media gap, and the
//! report.
//!
//! * [`ua::Agent`]: the UAC and UAS populations — dialogs with UDP retransmissions, route
//!   sets, re-INVITEs answered like a phone, 491 and BYE handling; it is fed datagrams and
//!   timeouts with `now` and hands out datagrams, media instructions and call records.
//! * [`rtp`]: a [`rtp::Sender`] (PCMU, 50 packets/s, a per-call SSRC) and a
//!   [`rtp::Receiver`] (sequence bookkeeping, the longest gap between packets, the gap around
//!   each re-INVITE and the time to the first packet from the new relay).
//! * [`Stream`]: one call side's sender and receiver, updated from the agent's
//!   [`ua::Event::Media`].
//! * [`report`]: per-call records joined by Call-ID, percentiles, totals, thresholds, the
//!   table and the JSON shape.
//!
//! Nothing here opens a socket or reads the clock; `anchorage callgen` (the binary) does.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod report;
pub mod rtp;
pub mod sdp;
pub mod ua;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The media of one call side: what it sends and what it receives.
#[derive(Debug)]
pub struct Stream {
    /// Our RTP.
    pub sender: rtp::Sender,
    /// The other side's RTP as we receive it.
    pub receiver: rtp::Receiver,
    /// Where we send (the last address the other side's SDP named).
    pub remote: Option<SocketAddr>,
    started: bool,
}

impl Stream {
    /// A stream sending with this SSRC, first sequence number and timestamp.
    pub fn new(ssrc: u32, first_seq: u16, first_timestamp: u32) -> Stream {
        Stream {
            sender: rtp::Sender::new(ssrc, first_seq, first_timestamp),
            receiver: rtp::Receiver::new(),
            remote: None,
            started: false,
        }
    }

    /// Applies the agent's [`ua::Event::Media`]. Returns whether the sender was (re)started
    /// and needs scheduling.
    pub fn apply(
        &mut self,
        now: Instant,
        remote: Option<SocketAddr>,
        send: bool,
        receive: bool,
        reinvite: bool,
    ) -> bool {
        if reinvite {
            self.receiver.mark_reinvite(now, remote);
        }
        let was_active = self.sender.is_active();
        match (send, remote) {
            (true, Some(to)) if was_active && self.remote != Some(to) => self.sender.retarget(to),
            (true, Some(to)) => self.sender.start(now, to),
            _ => self.sender.stop(),
        }
        self.remote = remote;
        self.receiver.set_expecting(now, receive);
        let started = !was_active && self.sender.is_active();
        self.started |= started;
        started
    }

    /// Whether the sender ever started.
    pub fn ever_sent(&self) -> bool {
        self.started
    }

    /// The media ended at `now`.
    pub fn stop(&mut self, now: Instant) {
        self.sender.stop();
        self.receiver.stop(now);
    }

    /// What this side measured.
    pub fn measurement(&self) -> report::MediaData {
        report::MediaData {
            sent: self.sender.sent(),
            max_send_late: self.sender.max_late(),
            received: self.receiver.stats(),
        }
    }
}

/// `d` in milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_stream_follows_media_events() {
        let t = t0();
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut s = Stream::new(1, 0, 0);
        assert!(s.apply(t, Some(a), true, true, false));
        assert_eq!(s.sender.poll_transmit(t).unwrap().destination, a);
        assert!(!s.apply(t, Some(b), true, true, true), "already sending");
        let due = s.sender.next_due().unwrap();
        assert_eq!(s.sender.poll_transmit(due).unwrap().destination, b);
        assert_eq!(s.receiver.stats().reinvites.len(), 1);
        // Hold: stop sending, no gaps measured.
        s.apply(t, None, false, false, true);
        assert!(s.sender.next_due().is_none());
        assert!(!s.receiver.is_expecting());
        s.stop(t);
        assert_eq!(s.measurement().sent, 2);
    }
}
