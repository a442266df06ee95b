//! RTP as a phone sends and checks it (RFC 3550): a [`Sender`] that produces one PCMU packet
//! every 20 ms with consecutive sequence numbers, and a [`Receiver`] that keeps the sequence
//! bookkeeping (loss, duplicates, reordering, foreign SSRCs) and measures media gaps — the
//! time between consecutive received packets, and the gap around each re-INVITE.
//!
//! Both take `now` as an argument; a test drives them with synthetic times.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Packet interval: 20 ms, 50 packets per second.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);
/// Payload length: 20 ms of PCMU at 8 kHz.
pub const PAYLOAD_LEN: usize = 160;
/// RTP timestamp units per packet (8 kHz clock).
pub const SAMPLES_PER_PACKET: u32 = 160;
/// PCMU's static payload type.
pub const PAYLOAD_TYPE_PCMU: u8 = 0;
/// How late a sender may fall behind its 20 ms grid before it stops catching up and starts a
/// new grid from now.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(200);
/// How long after a re-INVITE the receiver waits for the first packet from the new relay
/// before it stops looking.
pub const REINVITE_WINDOW: Duration = Duration::from_secs(10);

const HEADER_LEN: usize = 12;
const WINDOW_BITS: i64 = 1024;

/// The fixed part of an RTP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (0–127).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Parses the fixed header of an RTP packet; `None` if it is not RTP version 2 or is
    /// shorter than its header, CSRC list and extension say.
    pub fn parse(data: &[u8]) -> Option<RtpHeader> {
        if data.len() < HEADER_LEN || data[0] >> 6 != 2 {
            return None;
        }
        let csrcs = usize::from(data[0] & 0x0f);
        let mut len = HEADER_LEN + 4 * csrcs;
        if data[0] & 0x10 != 0 {
            let ext = data.get(len + 2..len + 4)?;
            len += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
        }
        if data.len() < len {
            return None;
        }
        let payload_type = data[1] & 0x7f;
        // RTCP packet types 200–204 collide with payload types 72–76 (RFC 5761 §4).
        if (72..=76).contains(&payload_type) {
            return None;
        }
        Some(RtpHeader {
            payload_type,
            marker: data[1] & 0x80 != 0,
            seq: u16::from_be_bytes([data[2], data[3]]),
            timestamp: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
        })
    }

    /// Writes this header and `payload_len` bytes of payload into `out` (cleared first).
    pub fn write(&self, out: &mut Vec<u8>, payload_len: usize) {
        out.clear();
        out.push(0x80);
        out.push(self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        // PCMU silence with the low byte of the sequence number mixed in, so a packet's
        // payload differs from its neighbours'.
        let fill = 0xff ^ (self.seq as u8 & 0x0f);
        out.resize(HEADER_LEN + payload_len, fill);
    }
}

/// One packet to send.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The packet.
    pub data: &'a [u8],
    /// Where it goes.
    pub destination: SocketAddr,
}

/// Sends PCMU at 50 packets per second to a destination that can change (re-INVITE).
#[derive(Debug)]
pub struct Sender {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    destination: Option<SocketAddr>,
    active: bool,
    next_due: Option<Instant>,
    last_due: Option<Instant>,
    last_sent: Option<Instant>,
    pauses: Vec<(Instant, Duration)>,
    pause_on_retarget: Option<Duration>,
    sent: u64,
    max_late: Duration,
    buf: Vec<u8>,
}

impl Sender {
    /// A stopped sender with this SSRC and first sequence number and timestamp.
    pub fn new(ssrc: u32, first_seq: u16, first_timestamp: u32) -> Sender {
        Sender {
            ssrc,
            seq: first_seq,
            timestamp: first_timestamp,
            destination: None,
            active: false,
            next_due: None,
            last_due: None,
            last_sent: None,
            pauses: Vec::new(),
            pause_on_retarget: None,
            sent: 0,
            max_late: Duration::ZERO,
            buf: Vec::with_capacity(HEADER_LEN + PAYLOAD_LEN),
        }
    }

    /// The SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Starts (or resumes) sending to `destination`, the first packet at `now`.
    pub fn start(&mut self, now: Instant, destination: SocketAddr) {
        self.destination = Some(destination);
        if !self.active {
            self.active = true;
            self.next_due = Some(now);
        }
    }

    /// Sends to `destination` from the next packet on (a re-INVITE moved the media). With a
    /// pause set by [`Sender::pause_on_retarget`], the next packet leaves that long after the
    /// last one (a test's known gap).
    pub fn retarget(&mut self, destination: SocketAddr) {
        self.destination = Some(destination);
        if let (Some(pause), Some(last)) = (self.pause_on_retarget, self.last_sent) {
            if self.active {
                self.next_due = Some(last + pause);
            }
        }
    }

    /// Stops sending (BYE, hold).
    pub fn stop(&mut self) {
        self.active = false;
        self.next_due = None;
    }

    /// Whether the sender is sending.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// At the first packet due at or after `at`, sends nothing and leaves `duration` between
    /// the last packet and the next one: the receiver sees a gap of exactly `duration`.
    pub fn pause_at(&mut self, at: Instant, duration: Duration) {
        self.pauses.push((at, duration));
        self.pauses.sort_by_key(|p| p.0);
    }

    /// Makes every [`Sender::retarget`] leave `duration` between the last packet to the old
    /// destination and the first to the new one.
    pub fn pause_on_retarget(&mut self, duration: Duration) {
        self.pause_on_retarget = Some(duration);
    }

    /// When the next packet is due; `None` when stopped.
    pub fn next_due(&self) -> Option<Instant> {
        self.next_due.filter(|_| self.active)
    }

    /// Packets sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The most a packet left after its due time (how far the generator itself fell behind).
    pub fn max_late(&self) -> Duration {
        self.max_late
    }

    /// The packet due at `now`, if one is; advances the schedule.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing<'_>> {
        let due = self.next_due.filter(|_| self.active)?;
        if now < due {
            return None;
        }
        let destination = self.destination?;
        if let Some(&(at, pause)) = self.pauses.first() {
            if due >= at {
                self.pauses.remove(0);
                if let Some(last) = self.last_sent {
                    self.next_due = Some(last + pause);
                    if last + pause > now {
                        return None;
                    }
                }
            }
        }
        let due = self.next_due.unwrap_or(due);
        let late = now.saturating_duration_since(due);
        self.max_late = self.max_late.max(late);
        // The timestamp follows the media clock: 160 per 20 ms, including across pauses.
        if let Some(last_due) = self.last_due {
            let elapsed = due.saturating_duration_since(last_due);
            let samples = (elapsed.as_micros() * 8 / 1000) as u32;
            self.timestamp = self.timestamp.wrapping_add(samples.max(1));
            self.seq = self.seq.wrapping_add(1);
        }
        self.last_due = Some(due);
        self.last_sent = Some(now);
        self.next_due = Some(if late > MAX_CATCH_UP {
            now + PACKET_INTERVAL
        } else {
            due + PACKET_INTERVAL
        });
        self.sent += 1;
        let header = RtpHeader {
            payload_type: PAYLOAD_TYPE_PCMU,
            marker: self.sent == 1,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        header.write(&mut self.buf, PAYLOAD_LEN);
        Some(Outgoing {
            data: &self.buf,
            destination,
        })
    }
}

/// A re-INVITE as the receiver saw it.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    new_remote: Option<SocketAddr>,
    old_source: Option<SocketAddr>,
    window_start: Option<Instant>,
    max_gap: Duration,
    first_new: Option<Instant>,
    open: bool,
}

/// The last change of the packets' source address (a new relay).
#[derive(Debug, Clone, Copy)]
struct Switch {
    at: Instant,
    to: SocketAddr,
    old_last: Instant,
    max_gap: Duration,
}

/// What a receiver measured around one re-INVITE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReinviteMedia {
    /// When the re-INVITE arrived.
    pub at: Instant,
    /// The media address the re-INVITE's SDP named (where this side now sends).
    pub new_remote: Option<SocketAddr>,
    /// The longest gap between consecutive packets from the last packet before the re-INVITE
    /// (or, if packets had already moved to the new relay, the last one through the old) to
    /// the first packet through the new relay.
    pub gap: Duration,
    /// Time from the re-INVITE to the first packet from the new relay (negative: it came
    /// first); `None` if none came within [`REINVITE_WINDOW`].
    pub to_new_media: Option<SignedDuration>,
}

/// A duration that may be negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration {
    /// The magnitude.
    pub magnitude: Duration,
    /// Whether it is negative.
    pub negative: bool,
}

impl SignedDuration {
    /// `b - a`.
    pub fn between(a: Instant, b: Instant) -> SignedDuration {
        if b >= a {
            SignedDuration {
                magnitude: b - a,
                negative: false,
            }
        } else {
            SignedDuration {
                magnitude: a - b,
                negative: true,
            }
        }
    }

    /// In milliseconds.
    pub fn as_millis_f64(&self) -> f64 {
        let ms = self.magnitude.as_secs_f64() * 1000.0;
        if self.negative {
            -ms
        } else {
            ms
        }
    }
}

/// The counters and gaps of one receiving direction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReceiverStats {
    /// Valid RTP packets of the stream's SSRC, duplicates included.
    pub received: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers missing between the first and the highest received.
    pub lost: u64,
    /// Packets whose sequence number had already been received.
    pub duplicated: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Packets of another SSRC than the stream's first one (not counted above).
    pub wrong_ssrc: u64,
    /// Datagrams that are not RTP.
    pub invalid: u64,
    /// The longest time without a packet while media was expected (from media start to the
    /// first packet, between packets, from the last packet to the end).
    pub longest_gap: Duration,
    /// When the longest gap ended.
    pub longest_gap_end: Option<Instant>,
    /// When media was first expected.
    pub started: Option<Instant>,
    /// When the first packet arrived.
    pub first_packet: Option<Instant>,
    /// The source address of the last packet.
    pub last_source: Option<SocketAddr>,
    /// Each re-INVITE, in order.
    pub reinvites: Vec<ReinviteMedia>,
}

/// Checks a received stream: SSRC, sequence numbers, and the gaps between packets.
#[derive(Debug)]
pub struct Receiver {
    ssrc: Option<u32>,
    base: i64,
    highest: Option<i64>,
    window: [u64; (WINDOW_BITS / 64) as usize],
    stats: ReceiverStats,
    expecting: bool,
    stopped: bool,
    /// Gaps are measured from here (media start, resume after hold, or the last packet).
    last: Option<Instant>,
    switch: Option<Switch>,
    marks: Vec<Mark>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver::new()
    }
}

impl Receiver {
    /// A receiver that expects no media yet (packets are counted, gaps are not measured).
    pub fn new() -> Receiver {
        Receiver {
            ssrc: None,
            base: 0,
            highest: None,
            window: [0; (WINDOW_BITS / 64) as usize],
            stats: ReceiverStats::default(),
            expecting: false,
            stopped: false,
            last: None,
            switch: None,
            marks: Vec::new(),
        }
    }

    /// Media is expected from `now` on (call answered, or resumed after hold): the time to
    /// the first packet counts as a gap. `false` (hold, inactive) stops measuring gaps.
    pub fn set_expecting(&mut self, now: Instant, expecting: bool) {
        if self.stopped || expecting == self.expecting {
            return;
        }
        if expecting {
            self.stats.started.get_or_insert(now);
            self.last = Some(self.last.map_or(now, |l| l.max(now)));
        } else {
            self.close_gap(now);
        }
        self.expecting = expecting;
    }

    /// The gap in progress at `now`: the time since the last packet (or media start) while
    /// media is expected, else zero.
    pub fn current_gap(&self, now: Instant) -> Duration {
        match self.last {
            Some(last) if self.is_expecting() => now.saturating_duration_since(last),
            _ => Duration::ZERO,
        }
    }

    /// Whether gaps are being measured.
    pub fn is_expecting(&self) -> bool {
        self.expecting && !self.stopped
    }

    /// The media ended at `now` (BYE): the time since the last packet counts as a gap, and
    /// nothing later is measured (late packets are still counted).
    pub fn stop(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if self.expecting {
            self.close_gap(now);
        }
        for m in &mut self.marks {
            m.open = false;
        }
        self.stopped = true;
    }

    fn close_gap(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            self.record_gap(gap, now);
            for m in self.marks.iter_mut().filter(|m| m.open) {
                m.max_gap = m.max_gap.max(gap);
            }
        }
    }

    fn record_gap(&mut self, gap: Duration, end: Instant) {
        if gap > self.stats.longest_gap {
            self.stats.longest_gap = gap;
            self.stats.longest_gap_end = Some(end);
        }
    }

    /// A re-INVITE arrived at `now` naming `new_remote` as where this side sends from now on
    /// (the relay, which sends to us from the same address).
    pub fn mark_reinvite(&mut self, now: Instant, new_remote: Option<SocketAddr>) {
        let mut mark = Mark {
            at: now,
            new_remote,
            old_source: self.stats.last_source,
            window_start: self.last,
            max_gap: Duration::ZERO,
            first_new: None,
            open: !self.stopped,
        };
        // Packets may already come through the new relay (the other party was re-INVITEd a
        // moment earlier): then the switch is what this re-INVITE is about.
        if let Some(s) = self.switch {
            if Some(s.to) == new_remote
                && self.stats.last_source == new_remote
                && now.saturating_duration_since(s.at) < REINVITE_WINDOW
            {
                mark.window_start = Some(s.old_last);
                mark.max_gap = s.max_gap;
                mark.first_new = Some(s.at);
                mark.open = false;
            }
        }
        self.marks.push(mark);
    }

    /// A datagram arrived at `now` from `source`.
    pub fn on_packet(&mut self, now: Instant, data: &[u8], source: SocketAddr) {
        let Some(header) = RtpHeader::parse(data) else {
            self.stats.invalid += 1;
            return;
        };
        match self.ssrc {
            None => self.ssrc = Some(header.ssrc),
            Some(s) if s != header.ssrc => {
                self.stats.wrong_ssrc += 1;
                return;
            }
            Some(_) => {}
        }
        self.stats.received += 1;
        self.sequence(header.seq);
        if !self.stopped {
            self.timing(now, source);
        }
        self.stats.first_packet.get_or_insert(now);
        self.stats.last_source = Some(source);
    }

    fn timing(&mut self, now: Instant, source: SocketAddr) {
        let previous = self.last;
        let gap = previous.map(|p| now.saturating_duration_since(p));
        if let (true, Some(gap)) = (self.expecting, gap) {
            self.record_gap(gap, now);
        }
        // Source changes: remember the last one for a re-INVITE that arrives after it.
        match (&mut self.switch, self.stats.last_source, previous) {
            (_, Some(old), Some(prev)) if old != source => {
                self.switch = Some(Switch {
                    at: now,
                    to: source,
                    old_last: prev,
                    max_gap: gap.unwrap_or_default(),
                });
            }
            (Some(s), _, _) if s.to == source => {
                if let Some(gap) = gap {
                    s.max_gap = s.max_gap.max(gap);
                }
            }
            _ => {}
        }
        for m in self.marks.iter_mut().filter(|m| m.open) {
            if now.saturating_duration_since(m.at) > REINVITE_WINDOW {
                m.open = false;
                continue;
            }
            if let (Some(gap), Some(prev)) = (gap, previous) {
                if m.window_start.is_none_or(|w| prev >= w) {
                    m.max_gap = m.max_gap.max(gap);
                }
            }
            let from_new = Some(source) == m.new_remote || m.old_source != Some(source);
            if from_new {
                m.first_new = Some(now);
                m.open = false;
            }
        }
        self.last = Some(now);
    }

    fn sequence(&mut self, seq: u16) {
        let ext = match self.highest {
            None => {
                self.base = i64::from(seq);
                self.highest = Some(self.base);
                self.set_bit(self.base);
                self.stats.unique += 1;
                return;
            }
            Some(h) => {
                let mut ext = (h & !0xffff) | i64::from(seq);
                if ext - h > 0x8000 {
                    ext -= 0x1_0000;
                } else if h - ext > 0x8000 {
                    ext += 0x1_0000;
                }
                ext
            }
        };
        let h = self.highest.unwrap_or(ext);
        if ext > h {
            let advance = ext - h;
            if advance >= WINDOW_BITS {
                self.window = [0; (WINDOW_BITS / 64) as usize];
            } else {
                for e in h + 1..=ext {
                    self.clear_bit(e);
                }
            }
            self.highest = Some(ext);
            self.set_bit(ext);
            self.stats.unique += 1;
        } else if ext > h - WINDOW_BITS {
            if self.bit(ext) {
                self.stats.duplicated += 1;
            } else {
                self.set_bit(ext);
                self.stats.unique += 1;
                self.stats.reordered += 1;
            }
        } else if ext >= self.base {
            // Too old to tell a duplicate from a late packet.
            self.stats.reordered += 1;
            self.stats.unique += 1;
        } else {
            // Before the first packet: a late one; the stream starts earlier than we thought.
            self.base = ext;
            self.stats.reordered += 1;
            self.stats.unique += 1;
        }
    }

    fn bit(&self, ext: i64) -> bool {
        let i = ext.rem_euclid(WINDOW_BITS) as usize;
        self.window[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_bit(&mut self, ext: i64) {
        let i = ext.rem_euclid(WINDOW_BITS) as usize;
        self.window[i / 64] |= 1 << (i % 64);
    }

    fn clear_bit(&mut self, ext: i64) {
        let i = ext.rem_euclid(WINDOW_BITS) as usize;
        self.window[i / 64] &= !(1 << (i % 64));
    }

    /// The counters and gaps so far.
    pub fn stats(&self) -> ReceiverStats {
        let mut stats = self.stats.clone();
        if let Some(h) = self.highest {
            let expected = (h - self.base + 1).max(0) as u64;
            stats.lost = expected.saturating_sub(stats.unique);
        }
        stats.reinvites = self
            .marks
            .iter()
            .map(|m| ReinviteMedia {
                at: m.at,
                new_remote: m.new_remote,
                gap: m.max_gap,
                to_new_media: m.first_new.map(|f| SignedDuration::between(m.at, f)),
            })
            .collect();
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn packet(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut out = Vec::new();
        RtpHeader {
            payload_type: 0,
            marker: false,
            seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
        }
        .write(&mut out, PAYLOAD_LEN);
        out
    }

    /// Feeds packets `seqs` at 20 ms intervals from `start`; returns the time after the last.
    fn feed(r: &mut Receiver, start: Instant, seqs: impl IntoIterator<Item = u16>) -> Instant {
        let mut t = start;
        for s in seqs {
            r.on_packet(t, &packet(s, 7), addr(4000));
            t += PACKET_INTERVAL;
        }
        t
    }

    #[test]
    fn header_round_trip() {
        let p = packet(513, 0xdead_beef);
        assert_eq!(p.len(), 172);
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!((h.seq, h.timestamp, h.ssrc), (513, 513 * 160, 0xdead_beef));
        assert_eq!(h.payload_type, 0);
        assert!(RtpHeader::parse(&p[..11]).is_none());
        // RTCP (sender report, PT 200) is not RTP.
        assert!(RtpHeader::parse(&[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn a_steady_stream_has_20_ms_gaps_and_no_loss() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let end = feed(&mut r, t + ms(20), 100..200);
        r.stop(end - ms(15));
        let s = r.stats();
        assert_eq!((s.received, s.unique, s.lost), (100, 100, 0));
        assert_eq!((s.duplicated, s.reordered, s.wrong_ssrc), (0, 0, 0));
        assert_eq!(s.longest_gap, ms(20));
        assert_eq!(s.first_packet, Some(t + ms(20)));
    }

    #[test]
    fn a_700_ms_pause_reads_700_ms() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let after = feed(&mut r, t, 0..50);
        let last = after - PACKET_INTERVAL;
        let resume = last + ms(700);
        let end = feed(&mut r, resume, 50..100);
        r.stop(end);
        let s = r.stats();
        assert_eq!(s.longest_gap, ms(700));
        assert_eq!(s.longest_gap_end, Some(resume));
        assert_eq!(s.lost, 0, "a pause is not loss");
    }

    #[test]
    fn loss_duplicates_and_reordering_are_counted() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        // 0..10, then 12 and 11 swapped, 13 twice, 14..16 missing, 17..20.
        let seqs = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 11, 13, 13, 17, 18, 19, 20];
        feed(&mut r, t, seqs);
        let s = r.stats();
        assert_eq!(s.received, 18);
        assert_eq!(s.unique, 17);
        assert_eq!(s.duplicated, 1);
        assert_eq!(s.reordered, 1);
        assert_eq!(s.lost, 4, "10, 14, 15, 16");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        feed(&mut r, t, (65530..=65535).chain(0..10));
        let s = r.stats();
        assert_eq!((s.unique, s.lost, s.reordered, s.duplicated), (16, 0, 0, 0));
        // A repeat from before the wrap is a duplicate, not a jump back.
        r.on_packet(t + ms(400), &packet(65533, 7), addr(4000));
        assert_eq!(r.stats().duplicated, 1);
    }

    #[test]
    fn a_foreign_ssrc_is_counted_apart() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        feed(&mut r, t, 0..5);
        r.on_packet(t + ms(100), &packet(5, 99), addr(4000));
        r.on_packet(t + ms(101), b"not rtp", addr(4000));
        let s = r.stats();
        assert_eq!((s.received, s.wrong_ssrc, s.invalid), (5, 1, 1));
    }

    #[test]
    fn time_to_first_packet_and_the_tail_count_as_gaps() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        r.on_packet(t + ms(300), &packet(1, 7), addr(4000));
        r.stop(t + ms(350));
        assert_eq!(r.stats().longest_gap, ms(300));
        // No packet at all: the whole call is one gap.
        let mut silent = Receiver::new();
        silent.set_expecting(t, true);
        assert_eq!(silent.current_gap(t + ms(1200)), ms(1200));
        silent.stop(t + ms(5000));
        assert_eq!(silent.current_gap(t + ms(6000)), Duration::ZERO);
        assert_eq!(silent.stats().longest_gap, ms(5000));
        // After stop, late packets count but do not make gaps.
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let end = feed(&mut r, t, 0..10);
        r.stop(end);
        r.on_packet(end + ms(900), &packet(10, 7), addr(4000));
        assert_eq!(r.stats().received, 11);
        assert_eq!(r.stats().longest_gap, ms(20));
    }

    #[test]
    fn hold_is_not_a_gap() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let after = feed(&mut r, t, 0..10);
        r.set_expecting(after, false);
        let resumed = after + ms(3000);
        r.set_expecting(resumed, true);
        let end = feed(&mut r, resumed + ms(20), 10..20);
        r.stop(end);
        assert_eq!(r.stats().longest_gap, ms(20));
    }

    #[test]
    fn the_gap_around_a_reinvite_that_moves_the_media() {
        // Relay dies at 1 s; the re-INVITE comes 780 ms later; the new relay's first packet
        // 30 ms after that.
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let old = addr(30000);
        let new = addr(35000);
        for i in 0..50u16 {
            r.on_packet(t + ms(20) * u32::from(i), &packet(i, 7), old);
        }
        let last_old = t + ms(980);
        let reinvite = t + ms(1780);
        r.mark_reinvite(reinvite, Some(new));
        let first_new = reinvite + ms(30);
        for i in 0..20u16 {
            r.on_packet(first_new + ms(20) * u32::from(i), &packet(50 + i, 7), new);
        }
        let s = r.stats();
        assert_eq!(s.longest_gap, first_new - last_old);
        assert_eq!(s.reinvites.len(), 1);
        let m = s.reinvites[0];
        assert_eq!(m.gap, ms(830));
        assert_eq!(m.to_new_media.unwrap().as_millis_f64(), 30.0);
        assert_eq!(s.lost, 0);
    }

    #[test]
    fn a_reinvite_after_media_already_moved_keeps_the_switch_gap() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let (old, new) = (addr(30000), addr(35000));
        for i in 0..10u16 {
            r.on_packet(t + ms(20) * u32::from(i), &packet(i, 7), old);
        }
        // Last old packet at 180 ms; the first new one 500 ms later; our re-INVITE after it.
        r.on_packet(t + ms(680), &packet(10, 7), new);
        r.on_packet(t + ms(700), &packet(11, 7), new);
        r.mark_reinvite(t + ms(710), Some(new));
        let m = r.stats().reinvites[0];
        assert_eq!(m.gap, ms(500));
        assert_eq!(m.to_new_media.unwrap().as_millis_f64(), -30.0);
    }

    #[test]
    fn a_drain_reinvite_with_media_flowing_has_a_small_gap() {
        let t = t0();
        let mut r = Receiver::new();
        r.set_expecting(t, true);
        let (old, new) = (addr(30000), addr(35000));
        for i in 0..10u16 {
            r.on_packet(t + ms(20) * u32::from(i), &packet(i, 7), old);
        }
        r.mark_reinvite(t + ms(185), Some(new));
        r.on_packet(t + ms(200), &packet(10, 7), old);
        r.on_packet(t + ms(221), &packet(11, 7), new);
        let m = r.stats().reinvites[0];
        assert_eq!(m.gap, ms(21));
        assert_eq!(m.to_new_media.unwrap().as_millis_f64(), 36.0);
    }

    #[test]
    fn the_sender_keeps_a_20_ms_grid_and_numbers_packets() {
        let t = t0();
        let mut s = Sender::new(42, 65535, 1000);
        assert!(s.poll_transmit(t).is_none(), "stopped");
        s.start(t, addr(5000));
        let mut seqs = Vec::new();
        let mut stamps = Vec::new();
        for i in 0..5u32 {
            let now = t + ms(20) * i + ms(1);
            let p = s.poll_transmit(now).unwrap();
            assert_eq!(p.destination, addr(5000));
            let h = RtpHeader::parse(p.data).unwrap();
            seqs.push(h.seq);
            stamps.push(h.timestamp);
            assert!(s.poll_transmit(now).is_none(), "one packet per 20 ms");
        }
        assert_eq!(seqs, [65535, 0, 1, 2, 3]);
        assert_eq!(stamps, [1000, 1160, 1320, 1480, 1640]);
        assert_eq!(s.next_due(), Some(t + ms(100)));
        assert_eq!(s.max_late(), ms(1));
        assert_eq!(s.sent(), 5);
    }

    #[test]
    fn a_sender_pause_makes_an_exact_gap_at_the_receiver() {
        let t = t0();
        let mut s = Sender::new(7, 0, 0);
        let mut r = Receiver::new();
        s.start(t, addr(5000));
        r.set_expecting(t, true);
        s.pause_at(t + ms(1000), ms(700));
        let mut now = t;
        while now < t + ms(3000) {
            while let Some(p) = s.poll_transmit(now) {
                let data = p.data.to_vec();
                r.on_packet(now, &data, addr(6000));
            }
            now += ms(1);
        }
        r.stop(now);
        let stats = r.stats();
        assert_eq!(stats.longest_gap, ms(700));
        assert_eq!(stats.lost, 0);
        // 980 ms → 1680 ms pause, then on the grid again.
        assert_eq!(stats.longest_gap_end, Some(t + ms(1680)));
    }

    #[test]
    fn a_late_sender_catches_up_then_resyncs() {
        let t = t0();
        let mut s = Sender::new(7, 0, 0);
        s.start(t, addr(5000));
        assert!(s.poll_transmit(t).is_some());
        // 50 ms late: the missed packets leave at once.
        let now = t + ms(70);
        let mut n = 0;
        while s.poll_transmit(now).is_some() {
            n += 1;
        }
        assert_eq!(n, 3, "20, 40, 60 ms");
        // 1 s late: one packet, then a new grid.
        let now = t + ms(1100);
        assert!(s.poll_transmit(now).is_some());
        assert_eq!(s.next_due(), Some(now + ms(20)));
    }

    #[test]
    fn retarget_with_a_pause_delays_the_first_packet_to_the_new_address() {
        let t = t0();
        let mut s = Sender::new(7, 0, 0);
        s.pause_on_retarget(ms(700));
        s.start(t, addr(5000));
        assert!(s.poll_transmit(t).is_some());
        s.retarget(addr(6000));
        assert!(s.poll_transmit(t + ms(20)).is_none());
        let p = s.poll_transmit(t + ms(700)).unwrap();
        assert_eq!(p.destination, addr(6000));
    }
}
