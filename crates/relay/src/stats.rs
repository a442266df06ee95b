//! Per-stream counters: packets, bytes, errors, last packet time, and for RTP the loss from
//! sequence gaps ([RFC 3550 A.1/A.3](https://www.rfc-editor.org/rfc/rfc3550#appendix-A.1)) and
//! the interarrival jitter ([RFC 3550 A.8](https://www.rfc-editor.org/rfc/rfc3550#appendix-A.8)).
//!
//! Plain integers owned by one worker thread: no atomics on the packet path. A snapshot is a
//! `Clone`.

use std::time::Instant;

use crate::packet::RtpHeader;

/// Default RTP clock rate for jitter, in Hz (PCMU/PCMA/G.722's RTP clock, RFC 3551).
pub const DEFAULT_CLOCK_RATE: u32 = 8000;

/// RFC 3550 A.1: a forward jump of this many sequence numbers or more is not a gap but a
/// possible restart of the sender.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: a packet up to this far behind the highest one is a late (reordered) packet.
const MAX_MISORDER: u16 = 100;
/// How many sequence numbers behind the highest one the duplicate detector remembers.
const SEEN_WINDOW: u16 = 128;

/// Counters for the packets received on one local socket from one leg.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    packets: u64,
    bytes: u64,
    errors: u64,
    last_packet: Option<Instant>,
    rtp: RtpReception,
}

impl StreamStats {
    /// Counters that start at zero; jitter uses `clock_rate` (Hz).
    pub fn with_clock_rate(clock_rate: u32) -> Self {
        Self {
            rtp: RtpReception::new(clock_rate),
            ..Self::default()
        }
    }

    /// Counts an accepted datagram of `len` bytes that is not RTP (RTCP, STUN, anything).
    #[inline]
    pub fn record(&mut self, len: usize, now: Instant) {
        self.packets += 1;
        self.bytes += len as u64;
        self.last_packet = Some(now);
    }

    /// Counts an accepted datagram and, if it has an RTP header, feeds the loss and jitter
    /// estimators.
    #[inline]
    pub fn record_rtp(&mut self, packet: &[u8], now: Instant) {
        self.record(packet.len(), now);
        if let Some(header) = RtpHeader::peek(packet) {
            self.rtp.update(&header, now);
        }
    }

    /// Counts a datagram that was dropped or could not be sent.
    #[inline]
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Datagrams accepted.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes accepted (UDP payload).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Datagrams dropped (strict source, no destination) or that failed to send.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// When the last accepted datagram arrived.
    pub fn last_packet(&self) -> Option<Instant> {
        self.last_packet
    }

    /// The RTP sequence and jitter estimators.
    pub fn rtp(&self) -> &RtpReception {
        &self.rtp
    }
}

/// RTP reception state for one stream: extended highest sequence number, expected vs received,
/// duplicates, reordering and jitter. A new SSRC starts a new sequence; the totals carry over.
#[derive(Debug, Clone)]
pub struct RtpReception {
    clock_rate: u32,
    source: Option<SourceState>,
    /// Expected and received of sources before the current SSRC.
    prior_expected: u64,
    prior_received: u64,
    duplicates: u64,
    reordered: u64,
    /// Packets ignored as a sequence jump not (yet) confirmed by a following packet (A.1).
    jumps: u64,
    /// Jitter × 16 in timestamp units (the A.8 integer form).
    jitter_q4: u64,
}

#[derive(Debug, Clone)]
struct SourceState {
    ssrc: u32,
    base_ext: u64,
    max_seq: u16,
    cycles: u64,
    bad_seq: Option<u16>,
    received: u64,
    /// Bit `i` set: sequence `max_seq - i` was received.
    seen: u128,
    epoch: Instant,
    last_transit: Option<u32>,
}

impl Default for RtpReception {
    fn default() -> Self {
        Self::new(DEFAULT_CLOCK_RATE)
    }
}

impl RtpReception {
    /// An estimator with no packets yet; jitter is measured in a `clock_rate` Hz clock.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            source: None,
            prior_expected: 0,
            prior_received: 0,
            duplicates: 0,
            reordered: 0,
            jumps: 0,
            jitter_q4: 0,
        }
    }

    /// Feeds one RTP header that arrived at `now`.
    pub fn update(&mut self, header: &RtpHeader, now: Instant) {
        if self.source.as_ref().map(|s| s.ssrc) != Some(header.ssrc) {
            self.restart(header, now);
        }
        let Some(source) = self.source.as_mut() else {
            return;
        };
        match sequence_step(source, header.sequence) {
            Step::Counted => {}
            Step::Reordered => self.reordered += 1,
            Step::Duplicate => {
                self.duplicates += 1;
                return;
            }
            Step::Jump => {
                self.jumps += 1;
                return;
            }
            Step::Restart => {
                // The packet before this one was counted as a jump and stays out of the
                // sequence; this one starts the new sequence.
                let source = self.restart(header, now);
                let _ = sequence_step(source, header.sequence);
                return;
            }
        }
        // RFC 3550 A.8: transit = arrival - timestamp, both in the RTP clock.
        // In u64 (whole seconds, then the fraction): a u128 division costs more than the
        // rest of the packet's bookkeeping.
        let elapsed = now.saturating_duration_since(source.epoch);
        let rate = u64::from(self.clock_rate);
        let arrival = elapsed
            .as_secs()
            .wrapping_mul(rate)
            .wrapping_add(u64::from(elapsed.subsec_nanos()) * rate / 1_000_000_000)
            as u32;
        let transit = arrival.wrapping_sub(header.timestamp);
        if let Some(last) = source.last_transit {
            let d = u64::from((transit.wrapping_sub(last) as i32).unsigned_abs());
            // J += (|D| - J) / 16, in the integer form of A.8 that keeps J × 16.
            self.jitter_q4 = (self.jitter_q4 + d).saturating_sub((self.jitter_q4 + 8) >> 4);
        }
        source.last_transit = Some(transit);
    }

    fn restart(&mut self, header: &RtpHeader, now: Instant) -> &mut SourceState {
        if let Some(old) = self.source.take() {
            self.prior_expected += old.expected();
            self.prior_received += old.received;
        }
        self.source.insert(SourceState {
            ssrc: header.ssrc,
            base_ext: u64::from(header.sequence),
            max_seq: header.sequence,
            cycles: 0,
            bad_seq: None,
            received: 0,
            seen: 0,
            epoch: now,
            last_transit: None,
        })
    }

    /// Packets expected from the sequence numbers seen: extended highest − base + 1 (A.3),
    /// summed over SSRCs.
    pub fn expected(&self) -> u64 {
        self.prior_expected + self.source.as_ref().map_or(0, SourceState::expected)
    }

    /// Distinct packets received (duplicates not counted).
    pub fn received(&self) -> u64 {
        self.prior_received + self.source.as_ref().map_or(0, |s| s.received)
    }

    /// Packets lost: expected − received, never below zero.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received())
    }

    /// Packets received twice or more (within the last 128 sequence numbers).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets that arrived after a higher sequence number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Packets ignored because their sequence number jumped ≥ 3000 ahead or > 100 behind
    /// (A.1); two such packets in a row restart the sequence.
    pub fn jumps(&self) -> u64 {
        self.jumps
    }

    /// The extended highest sequence number of the current SSRC (cycles × 65536 + highest).
    pub fn extended_max(&self) -> Option<u64> {
        self.source
            .as_ref()
            .map(|s| s.cycles + u64::from(s.max_seq))
    }

    /// Interarrival jitter in timestamp units (A.8).
    pub fn jitter(&self) -> u64 {
        self.jitter_q4 >> 4
    }

    /// Interarrival jitter in microseconds, from the clock rate.
    pub fn jitter_us(&self) -> u64 {
        self.jitter_q4 * 1_000_000 / 16 / u64::from(self.clock_rate)
    }
}

impl SourceState {
    fn expected(&self) -> u64 {
        (self.cycles + u64::from(self.max_seq) + 1).saturating_sub(self.base_ext)
    }
}

enum Step {
    Counted,
    Reordered,
    Duplicate,
    Jump,
    Restart,
}

/// RFC 3550 A.1 `update_seq`, without the probation (a relay counts from the first packet),
/// plus a 128-entry window that tells duplicates from late packets.
fn sequence_step(source: &mut SourceState, seq: u16) -> Step {
    if source.received == 0 {
        source.received = 1;
        source.seen = 1;
        return Step::Counted;
    }
    let ahead = seq.wrapping_sub(source.max_seq);
    if ahead == 0 {
        return Step::Duplicate;
    }
    if ahead < MAX_DROPOUT {
        if seq < source.max_seq {
            source.cycles += 1 << 16;
        }
        source.seen = if ahead >= SEEN_WINDOW {
            1
        } else {
            (source.seen << ahead) | 1
        };
        source.max_seq = seq;
        source.bad_seq = None;
        source.received += 1;
        return Step::Counted;
    }
    let behind = source.max_seq.wrapping_sub(seq);
    if behind <= MAX_MISORDER {
        let bit = 1u128 << behind;
        if source.seen & bit != 0 {
            return Step::Duplicate;
        }
        source.seen |= bit;
        source.received += 1;
        let ext = (source.cycles + u64::from(source.max_seq)).saturating_sub(u64::from(behind));
        source.base_ext = source.base_ext.min(ext);
        return Step::Reordered;
    }
    if source.bad_seq == Some(seq) {
        return Step::Restart;
    }
    source.bad_seq = Some(seq.wrapping_add(1));
    Step::Jump
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn header(sequence: u16, timestamp: u32) -> RtpHeader {
        RtpHeader {
            payload_type: 0,
            sequence,
            timestamp,
            ssrc: 0x1234,
        }
    }

    fn feed(seqs: &[u16]) -> RtpReception {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rtp = RtpReception::default();
        for (i, &seq) in seqs.iter().enumerate() {
            rtp.update(&header(seq, i as u32 * 160), t0);
        }
        rtp
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let rtp = feed(&[1, 2, 3, 4, 5]);
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (5, 5, 0));
    }

    #[test]
    fn gaps_are_lost_packets() {
        let rtp = feed(&[1, 2, 3, 5, 6, 9]);
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (9, 6, 3));
    }

    #[test]
    fn duplicates_are_not_received_twice() {
        let rtp = feed(&[1, 2, 2, 3, 2]);
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (3, 3, 0));
        assert_eq!(rtp.duplicates(), 2);
    }

    #[test]
    fn reordering_fills_the_gap() {
        let rtp = feed(&[1, 3, 2, 4]);
        assert_eq!((rtp.expected(), rtp.lost(), rtp.reordered()), (4, 0, 1));
        // A late packet older than the first one seen extends the base.
        let rtp = feed(&[10, 11, 9, 12]);
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (4, 4, 0));
    }

    #[test]
    fn wrap_around_counts_a_cycle() {
        let rtp = feed(&[65534, 65535, 0, 1]);
        assert_eq!((rtp.expected(), rtp.lost()), (4, 0));
        assert_eq!(rtp.extended_max(), Some(65536 + 1));
        let rtp = feed(&[65534, 65535, 1]);
        assert_eq!((rtp.expected(), rtp.lost()), (4, 1));
    }

    #[test]
    fn one_big_jump_is_ignored_two_restart_the_sequence() {
        let rtp = feed(&[1, 2, 20_000, 3]);
        assert_eq!((rtp.expected(), rtp.received(), rtp.jumps()), (3, 3, 1));
        let rtp = feed(&[1, 2, 20_000, 20_001, 20_002]);
        // Source restarted at 20 001: the old sequence (1..2) and the new one (20 001..20 002).
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (4, 4, 0));
        assert_eq!(rtp.jumps(), 1);
    }

    #[test]
    fn new_ssrc_starts_new_sequence_and_keeps_totals() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rtp = RtpReception::default();
        for seq in [1u16, 2, 4] {
            rtp.update(&header(seq, 0), t0);
        }
        let other = RtpHeader {
            ssrc: 99,
            ..header(500, 0)
        };
        rtp.update(&other, t0);
        assert_eq!((rtp.expected(), rtp.received(), rtp.lost()), (5, 4, 1));
    }

    #[test]
    fn jitter_follows_rfc3550_a8() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rtp = RtpReception::new(8000);
        let ms = Duration::from_millis;
        // 20 ms packets, 160 timestamp units apart: constant transit, zero jitter.
        for i in 0..5u32 {
            rtp.update(&header(i as u16, i * 160), t0 + ms(20 * u64::from(i)));
        }
        assert_eq!(rtp.jitter(), 0);
        // One packet 10 ms (80 units) late: J = 80/16 = 5.
        rtp.update(&header(5, 800), t0 + ms(110));
        assert_eq!(rtp.jitter(), 5);
        // The next on time: |D| = 80 again; J×16 = 80 + 80 - 5 = 155 → 9.
        rtp.update(&header(6, 960), t0 + ms(120));
        assert_eq!(rtp.jitter(), 9);
        assert_eq!(rtp.jitter_us(), 155 * 1_000_000 / 16 / 8000);
    }

    #[test]
    fn stream_stats_count_bytes_and_rtp() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut stats = StreamStats::default();
        let mut packet = [0u8; 172];
        packet[0] = 0x80;
        stats.record_rtp(&packet, t0);
        packet[3] = 2;
        stats.record_rtp(&packet, t0 + Duration::from_millis(40));
        stats.record(60, t0 + Duration::from_millis(50));
        stats.record_error();
        assert_eq!(
            (stats.packets(), stats.bytes(), stats.errors()),
            (3, 404, 1)
        );
        assert_eq!(stats.rtp().lost(), 1);
        assert_eq!(stats.last_packet(), Some(t0 + Duration::from_millis(50)));
    }
}
