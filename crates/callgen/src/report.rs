//! The report: each call's two sides joined by Call-ID, the summary (counts, percentiles,
//! totals), the thresholds given on the command line, the final table and the JSON shape
//! (`--json`, serialized by the caller with serde).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::millis;
use crate::rtp::ReceiverStats;
use crate::ua::{CallRecord, Outcome, Party, Side};

/// What one side's media measured.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaData {
    /// Packets this side sent.
    pub sent: u64,
    /// The most a packet left after its due time.
    pub max_send_late: Duration,
    /// What this side received.
    pub received: ReceiverStats,
}

/// Nearest-rank percentiles of a set of values (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `values` (any order).
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> Option<f64> {
            if v.is_empty() {
                return None;
            }
            let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v.get(i.clamp(1, v.len()) - 1).copied()
        };
        Percentiles {
            count: v.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v.last().copied(),
        }
    }
}

/// One re-INVITE a side received, and the media around it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReinviteReport {
    /// When it arrived, from the start of the run.
    pub at_ms: f64,
    /// The media address it named.
    pub remote: Option<String>,
    /// Its SDP's `o=` version.
    pub sdp_version: Option<u64>,
    /// The longest gap between packets from the last packet before it (through the old
    /// relay) to the first through the new relay.
    pub gap_ms: Option<f64>,
    /// From the re-INVITE to the first packet from the new relay (negative: before it).
    pub to_new_media_ms: Option<f64>,
}

/// What one side received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MediaReport {
    /// Packets this side sent.
    pub sent: u64,
    /// Packets received (duplicates included).
    pub received: u64,
    /// Packets lost: sequence numbers missing between the first and the highest received
    /// (RFC 3550 §6.4.1's cumulative loss). Packets before the first or after the last one
    /// received are not counted: the time to the first packet and the trailing gap show them.
    pub lost: u64,
    /// Duplicates.
    pub duplicated: u64,
    /// Out of order.
    pub reordered: u64,
    /// Packets of a foreign SSRC.
    pub wrong_ssrc: u64,
    /// Datagrams that were not RTP.
    pub invalid: u64,
    /// The longest time without a packet while media was expected.
    pub longest_gap_ms: f64,
    /// When that gap ended, from the start of the run.
    pub longest_gap_at_ms: Option<f64>,
    /// From media start (answer) to the first packet.
    pub first_packet_ms: Option<f64>,
    /// How late this side's sender was at worst (the generator's own contribution).
    pub max_send_late_ms: f64,
}

/// One side of a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideReport {
    /// `completed`, `dropped` or `failed`.
    pub outcome: &'static str,
    /// The INVITE's final status.
    pub status: Option<u16>,
    /// Why it failed or was dropped.
    pub reason: Option<String>,
    /// When the call started, from the start of the run.
    pub start_ms: f64,
    /// INVITE → 200 (UAC).
    pub setup_ms: Option<f64>,
    /// How long the call was up.
    pub held_ms: Option<f64>,
    /// `local` or `remote`: who sent the BYE.
    pub hangup: Option<&'static str>,
    /// The other side's media address at setup.
    pub remote_media: Option<String>,
    /// Re-INVITEs received, with the media gap around each.
    pub reinvites: Vec<ReinviteReport>,
    /// Re-INVITEs this side sent.
    pub reinvites_sent: u32,
    /// Of those, answered 491.
    pub reinvites_491: u32,
    /// 491s this side sent (glare).
    pub sent_491: u32,
    /// The media this side received; `None` with `--no-media` or when the call had none.
    pub media: Option<MediaReport>,
}

/// One call: both sides when both run in this process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallReport {
    /// The Call-ID.
    pub call_id: String,
    /// The worse of the two sides' outcomes.
    pub outcome: &'static str,
    /// The reason of the side that did worse.
    pub reason: Option<String>,
    /// INVITE → 200 at the caller.
    pub setup_ms: Option<f64>,
    /// The longest media gap of either direction.
    pub longest_gap_ms: Option<f64>,
    /// Re-INVITEs received by either side.
    pub reinvites: usize,
    /// The caller.
    pub uac: Option<SideReport>,
    /// The callee.
    pub uas: Option<SideReport>,
}

/// Call counts.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct CallCounts {
    /// Calls in the report.
    pub total: u64,
    /// Set up (200 received or sent and ACKed).
    pub set_up: u64,
    /// Set up and ended normally.
    pub completed: u64,
    /// Never set up.
    pub failed: u64,
    /// Set up, then ended abnormally.
    pub dropped: u64,
    /// Calls whose media was expected but never arrived (in some direction).
    pub without_media: u64,
}

/// Packet totals over every measured direction.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct PacketTotals {
    /// Sent.
    pub sent: u64,
    /// Received.
    pub received: u64,
    /// Lost.
    pub lost: u64,
    /// Duplicated.
    pub duplicated: u64,
    /// Reordered.
    pub reordered: u64,
    /// Foreign SSRC.
    pub wrong_ssrc: u64,
}

/// Re-INVITE totals.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ReinviteTotals {
    /// Re-INVITEs received (both sides).
    pub received: u64,
    /// Calls that received at least one.
    pub calls: u64,
    /// Re-INVITEs sent.
    pub sent: u64,
    /// Of those, answered 491.
    pub answered_491: u64,
}

/// Thresholds from the command line; broken ones make the exit status non-zero.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Thresholds {
    /// `--max-gap-ms`: the longest gap of any call.
    pub max_gap_ms: Option<f64>,
    /// `--max-failed`: failed plus dropped calls.
    pub max_failed: Option<u64>,
    /// `--max-loss`: packets lost in total.
    pub max_loss: Option<u64>,
    /// What was broken, one sentence each.
    pub broken: Vec<String>,
}

/// What the run was asked to do (echoed in the report).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RunOptions {
    /// `both`, `uac` or `uas`.
    pub mode: String,
    /// Calls to place.
    pub calls: u64,
    /// Calls per second.
    pub rate: f64,
    /// Hold time.
    pub hold_ms: f64,
    /// Concurrency limit.
    pub concurrent: Option<u64>,
    /// Whether RTP was sent.
    pub media: bool,
    /// How the UAS answered.
    pub uas_answer: String,
    /// Who hung up.
    pub bye_by: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The options.
    pub options: RunOptions,
    /// Wall time of the run.
    pub duration_s: f64,
    /// Call counts.
    pub calls: CallCounts,
    /// Failed and dropped calls by reason.
    pub failures: BTreeMap<String, u64>,
    /// INVITE → 200.
    pub setup_ms: Percentiles,
    /// Per call, the longest gap of either direction.
    pub longest_gap_ms: Percentiles,
    /// Per re-INVITE, the gap around it.
    pub reinvite_gap_ms: Percentiles,
    /// Per re-INVITE, the time to the first packet from the new relay.
    pub reinvite_to_media_ms: Percentiles,
    /// Packet totals.
    pub packets: PacketTotals,
    /// Re-INVITE totals.
    pub reinvites: ReinviteTotals,
    /// How late the generator's own senders were at worst.
    pub max_send_late_ms: f64,
    /// SIP datagrams that could not be parsed.
    pub bad_messages: u64,
    /// Thresholds and what was broken.
    pub thresholds: Thresholds,
    /// Every call.
    pub call_list: Vec<CallReport>,
}

#[derive(Debug, Default)]
struct Entry {
    uac: Option<(CallRecord, Option<MediaData>)>,
    uas: Option<(CallRecord, Option<MediaData>)>,
}

/// Collects finished calls and builds the [`Report`].
#[derive(Debug)]
pub struct ReportBuilder {
    epoch: Instant,
    entries: HashMap<String, Entry>,
}

fn at_ms(epoch: Instant, t: Instant) -> f64 {
    if t >= epoch {
        millis(t - epoch)
    } else {
        -millis(epoch - t)
    }
}

fn addr(a: Option<SocketAddr>) -> Option<String> {
    a.map(|a| a.to_string())
}

impl ReportBuilder {
    /// Times in the report count from `epoch` (the start of the run).
    pub fn new(epoch: Instant) -> ReportBuilder {
        ReportBuilder {
            epoch,
            entries: HashMap::new(),
        }
    }

    /// A finished call side and its media measurement.
    pub fn add(&mut self, record: CallRecord, media: Option<MediaData>) {
        let entry = self.entries.entry(record.call_id.clone()).or_default();
        match record.side {
            Side::Uac => entry.uac = Some((record, media)),
            Side::Uas => entry.uas = Some((record, media)),
        }
    }

    /// Calls collected so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no call was collected.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn side(&self, record: &CallRecord, data: Option<&MediaData>) -> SideReport {
        let e = self.epoch;
        let media = data.map(|m| {
            let r = &m.received;
            MediaReport {
                sent: m.sent,
                received: r.received,
                lost: r.lost,
                duplicated: r.duplicated,
                reordered: r.reordered,
                wrong_ssrc: r.wrong_ssrc,
                invalid: r.invalid,
                longest_gap_ms: millis(r.longest_gap),
                longest_gap_at_ms: r.longest_gap_end.map(|t| at_ms(e, t)),
                first_packet_ms: r.first_packet.zip(r.started).map(|(f, s)| at_ms(s, f)),
                max_send_late_ms: millis(m.max_send_late),
            }
        });
        let measured = media_reinvites(record, e, data);
        SideReport {
            outcome: record.outcome.as_str(),
            status: record.status,
            reason: record.reason.clone(),
            start_ms: at_ms(e, record.started),
            setup_ms: record.setup.map(millis),
            held_ms: record
                .established
                .map(|s| millis(record.ended.saturating_duration_since(s))),
            hangup: record.hangup.map(|p| match p {
                Party::Local => "local",
                Party::Remote => "remote",
            }),
            remote_media: addr(record.remote_media),
            reinvites: measured,
            reinvites_sent: record.reinvites_sent,
            reinvites_491: record.reinvites_491,
            sent_491: record.sent_491,
            media,
        }
    }

    /// The report of the run that ended at `end`, checked against `thresholds`.
    pub fn finish(
        self,
        options: RunOptions,
        end: Instant,
        mut thresholds: Thresholds,
        bad_messages: u64,
    ) -> Report {
        let mut calls: Vec<CallReport> = Vec::with_capacity(self.entries.len());
        let mut counts = CallCounts::default();
        let mut failures = BTreeMap::new();
        let mut packets = PacketTotals::default();
        let mut reinvites = ReinviteTotals::default();
        let mut setups = Vec::new();
        let mut gaps = Vec::new();
        let mut reinvite_gaps = Vec::new();
        let mut to_media = Vec::new();
        let mut max_late: f64 = 0.0;
        let mut order: Vec<(&String, &Entry)> = self.entries.iter().collect();
        order.sort_by(|a, b| {
            let start = |e: &Entry| e.uac.as_ref().or(e.uas.as_ref()).map(|(r, _)| r.started);
            start(a.1).cmp(&start(b.1)).then(a.0.cmp(b.0))
        });
        for (call_id, entry) in order {
            let uac = entry.uac.as_ref().map(|(r, m)| self.side(r, m.as_ref()));
            let uas = entry.uas.as_ref().map(|(r, m)| self.side(r, m.as_ref()));
            let records = [entry.uac.as_ref(), entry.uas.as_ref()];
            let worst = records
                .iter()
                .flatten()
                .max_by_key(|(r, _)| r.outcome)
                .map(|(r, _)| r);
            let outcome = worst.map(|r| r.outcome).unwrap_or(Outcome::Failed);
            let reason = worst.and_then(|r| r.reason.clone());
            let set_up = records
                .iter()
                .flatten()
                .any(|(r, _)| r.established.is_some());
            counts.total += 1;
            if set_up {
                counts.set_up += 1;
            }
            match outcome {
                Outcome::Completed => counts.completed += 1,
                Outcome::Dropped => counts.dropped += 1,
                Outcome::Failed => counts.failed += 1,
            }
            if outcome != Outcome::Completed {
                let key = reason.clone().unwrap_or_else(|| "unknown".into());
                *failures.entry(key).or_insert(0u64) += 1;
            }
            let setup_ms = uac.as_ref().and_then(|s| s.setup_ms);
            if let Some(s) = setup_ms {
                setups.push(s);
            }
            let sides = [uac.as_ref(), uas.as_ref()];
            let mut longest: Option<f64> = None;
            let mut n_reinvites = 0;
            let mut no_media = false;
            for s in sides.iter().flatten() {
                n_reinvites += s.reinvites.len();
                reinvites.sent += u64::from(s.reinvites_sent);
                reinvites.answered_491 += u64::from(s.reinvites_491);
                for r in &s.reinvites {
                    if let Some(g) = r.gap_ms {
                        reinvite_gaps.push(g);
                    }
                    if let Some(t) = r.to_new_media_ms {
                        to_media.push(t);
                    }
                }
                if let Some(m) = &s.media {
                    packets.sent += m.sent;
                    packets.received += m.received;
                    packets.lost += m.lost;
                    packets.duplicated += m.duplicated;
                    packets.reordered += m.reordered;
                    packets.wrong_ssrc += m.wrong_ssrc;
                    max_late = max_late.max(m.max_send_late_ms);
                    longest = Some(longest.map_or(m.longest_gap_ms, |l| l.max(m.longest_gap_ms)));
                    if m.received == 0 && s.held_ms.is_some() {
                        no_media = true;
                    }
                }
            }
            if no_media {
                counts.without_media += 1;
            }
            reinvites.received += n_reinvites as u64;
            if n_reinvites > 0 {
                reinvites.calls += 1;
            }
            if let Some(g) = longest {
                gaps.push(g);
            }
            calls.push(CallReport {
                call_id: call_id.clone(),
                outcome: outcome.as_str(),
                reason,
                setup_ms,
                longest_gap_ms: longest,
                reinvites: n_reinvites,
                uac,
                uas,
            });
        }
        let longest_gap_ms = Percentiles::of(&gaps);
        if let (Some(limit), Some(worst)) = (thresholds.max_gap_ms, longest_gap_ms.max) {
            if worst > limit {
                thresholds.broken.push(format!(
                    "longest media gap {worst:.1} ms is above --max-gap-ms {limit}"
                ));
            }
        }
        if let Some(limit) = thresholds.max_failed {
            let bad = counts.failed + counts.dropped;
            if bad > limit {
                thresholds.broken.push(format!(
                    "{bad} calls failed or dropped, above --max-failed {limit}"
                ));
            }
        }
        if let Some(limit) = thresholds.max_loss {
            if packets.lost > limit {
                thresholds.broken.push(format!(
                    "{} packets lost, above --max-loss {limit}",
                    packets.lost
                ));
            }
        }
        Report {
            options,
            duration_s: end.saturating_duration_since(self.epoch).as_secs_f64(),
            calls: counts,
            failures,
            setup_ms: Percentiles::of(&setups),
            longest_gap_ms,
            reinvite_gap_ms: Percentiles::of(&reinvite_gaps),
            reinvite_to_media_ms: Percentiles::of(&to_media),
            packets,
            reinvites,
            max_send_late_ms: max_late,
            bad_messages,
            thresholds,
            call_list: calls,
        }
    }
}

/// The re-INVITEs a side received, joined with what its receiver measured around each (in
/// order: each re-INVITE with an SDP made one receiver mark).
fn media_reinvites(
    record: &CallRecord,
    epoch: Instant,
    media: Option<&MediaData>,
) -> Vec<ReinviteReport> {
    let marks = media
        .map(|m| m.received.reinvites.as_slice())
        .unwrap_or_default();
    let mut marks = marks.iter();
    record
        .reinvites
        .iter()
        .map(|r| {
            let mark = marks.next();
            ReinviteReport {
                at_ms: at_ms(epoch, r.at),
                remote: addr(r.remote),
                sdp_version: r.sdp_version,
                gap_ms: mark.map(|m| millis(m.gap)),
                to_new_media_ms: mark.and_then(|m| m.to_new_media.map(|d| d.as_millis_f64())),
            }
        })
        .collect()
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

impl Report {
    /// Whether any threshold was broken.
    pub fn broken(&self) -> bool {
        !self.thresholds.broken.is_empty()
    }

    /// The final report as a table for a terminal.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let _ = writeln!(
            out,
            "anchorage callgen: {} calls in {:.1} s ({} side{}, rate {}/s, hold {:.1} s{})",
            self.calls.total,
            self.duration_s,
            o.mode,
            if o.mode == "both" { "s" } else { "" },
            o.rate,
            o.hold_ms / 1000.0,
            if o.media { "" } else { ", no media" }
        );
        let c = &self.calls;
        let _ = writeln!(
            out,
            "calls            set up {}  completed {}  failed {}  dropped {}  without media {}",
            c.set_up, c.completed, c.failed, c.dropped, c.without_media
        );
        for (reason, n) in &self.failures {
            let _ = writeln!(out, "  {n:>6} × {reason}");
        }
        let _ = writeln!(
            out,
            "{:<26}{:>10}{:>10}{:>10}{:>10}{:>8}",
            "", "p50", "p90", "p99", "max", "n"
        );
        for (name, p) in [
            ("setup (ms)", &self.setup_ms),
            ("longest gap (ms)", &self.longest_gap_ms),
            ("re-INVITE gap (ms)", &self.reinvite_gap_ms),
            ("re-INVITE to media (ms)", &self.reinvite_to_media_ms),
        ] {
            let _ = writeln!(
                out,
                "{name:<26}{:>10}{:>10}{:>10}{:>10}{:>8}",
                opt(p.p50),
                opt(p.p90),
                opt(p.p99),
                opt(p.max),
                p.count
            );
        }
        let p = &self.packets;
        if o.media {
            let _ = writeln!(
                out,
                "packets          sent {}  received {}  lost {}  duplicated {}  reordered {}  wrong SSRC {}",
                p.sent, p.received, p.lost, p.duplicated, p.reordered, p.wrong_ssrc
            );
            let _ = writeln!(
                out,
                "sender lateness  max {:.1} ms (the generator's own delay)",
                self.max_send_late_ms
            );
        }
        let r = &self.reinvites;
        let _ = writeln!(
            out,
            "re-INVITEs       received {} (in {} calls)  sent {}  answered 491 {}",
            r.received, r.calls, r.sent, r.answered_491
        );
        let t = &self.thresholds;
        if t.max_gap_ms.is_some() || t.max_failed.is_some() || t.max_loss.is_some() {
            if t.broken.is_empty() {
                let _ = writeln!(out, "thresholds       ok");
            }
            for b in &t.broken {
                let _ = writeln!(out, "thresholds       BROKEN: {b}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{ReinviteMedia, SignedDuration};
    use crate::ua::ReceivedReinvite;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50, one.p99, one.count), (Some(7.0), Some(7.0), 1));
        assert_eq!(Percentiles::of(&[]).max, None);
    }

    fn record(side: Side, t: Instant, outcome: Outcome) -> CallRecord {
        CallRecord {
            call_id: "c1".into(),
            side,
            outcome,
            status: Some(200),
            reason: (outcome != Outcome::Completed).then(|| "BYE from the other side".into()),
            started: t,
            setup: (side == Side::Uac).then(|| ms(3)),
            established: Some(t + ms(3)),
            ended: t + ms(5003),
            hangup: Some(Party::Local),
            remote_media: Some("127.0.0.1:30000".parse().unwrap()),
            reinvites: vec![ReceivedReinvite {
                at: t + ms(2000),
                remote: Some("127.0.0.1:35000".parse().unwrap()),
                sdp_version: Some(2),
            }],
            reinvites_sent: 0,
            reinvites_491: 0,
            sent_491: 0,
        }
    }

    fn media(t: Instant, sent: u64, unique: u64, gap: u64) -> MediaData {
        MediaData {
            sent,
            max_send_late: ms(1),
            received: ReceiverStats {
                received: unique,
                unique,
                longest_gap: ms(gap),
                longest_gap_end: Some(t + ms(2800)),
                started: Some(t),
                first_packet: Some(t + ms(15)),
                reinvites: vec![ReinviteMedia {
                    at: t + ms(2000),
                    new_remote: Some("127.0.0.1:35000".parse().unwrap()),
                    gap: ms(gap),
                    to_new_media: Some(SignedDuration::between(t + ms(2000), t + ms(2020))),
                }],
                ..ReceiverStats::default()
            },
        }
    }

    #[test]
    fn both_sides_join_by_call_id_and_thresholds_break() {
        let t = t0();
        let mut b = ReportBuilder::new(t);
        let mut lossy = media(t, 250, 245, 800);
        lossy.received.lost = 5;
        b.add(record(Side::Uac, t, Outcome::Completed), Some(lossy));
        b.add(
            record(Side::Uas, t, Outcome::Dropped),
            Some(media(t, 250, 250, 20)),
        );
        let thresholds = Thresholds {
            max_gap_ms: Some(500.0),
            max_failed: Some(0),
            max_loss: Some(10),
            broken: Vec::new(),
        };
        let r = b.finish(RunOptions::default(), t + ms(6000), thresholds, 0);
        assert_eq!(r.calls.total, 1);
        assert_eq!((r.calls.dropped, r.calls.set_up), (1, 1));
        let call = &r.call_list[0];
        assert_eq!(call.outcome, "dropped");
        assert_eq!(call.longest_gap_ms, Some(800.0));
        assert_eq!(call.setup_ms, Some(3.0));
        assert_eq!(call.uac.as_ref().unwrap().media.as_ref().unwrap().lost, 5);
        assert_eq!(r.packets.lost, 5);
        let re = &call.uac.as_ref().unwrap().reinvites[0];
        assert_eq!(
            (re.at_ms, re.gap_ms, re.to_new_media_ms),
            (2000.0, Some(800.0), Some(20.0))
        );
        assert_eq!(r.reinvites.received, 2);
        assert_eq!(r.thresholds.broken.len(), 2, "{:?}", r.thresholds.broken);
        assert!(r.broken());
        let table = r.table();
        assert!(
            table.contains("BROKEN: longest media gap 800.0 ms"),
            "{table}"
        );
        assert!(table.contains("dropped 1"), "{table}");
    }
}
