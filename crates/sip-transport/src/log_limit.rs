//! At most one log line per source address per interval, in bounded memory.
//!
//! A host that opens thousands of connections, or sends thousands of refused commands, must not
//! write thousands of log lines: the first event from a source is logged, the next ones within
//! the interval are only counted and reported with its next line. The table holds at most
//! `capacity` sources; when it is full of sources logged within the interval, events from new
//! sources share one "other sources" line per interval instead, so a spread-out attack still
//! writes a bounded number of lines (at most `capacity + 1` per interval).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The interval of the refusal logs: one line per source per minute.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Sources a refusal log follows individually at once.
pub const REFUSAL_LOG_SOURCES: usize = 1024;

/// A line to write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine {
    /// The source it is about; `None` for the shared line of the sources the table could not
    /// hold.
    pub source: Option<IpAddr>,
    /// Events of the same source (or of the other sources) not logged since its last line.
    pub suppressed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    logged: Instant,
    suppressed: u64,
}

/// Decides which events are logged; see the module documentation.
#[derive(Debug)]
pub struct SourceLogLimiter {
    interval: Duration,
    capacity: usize,
    sources: HashMap<IpAddr, Entry>,
    others: Option<Entry>,
}

impl Default for SourceLogLimiter {
    /// One line per source per [`REFUSAL_LOG_INTERVAL`], [`REFUSAL_LOG_SOURCES`] sources.
    fn default() -> Self {
        Self::new(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_SOURCES)
    }
}

impl SourceLogLimiter {
    /// A limiter of one line per source per `interval`, following `capacity` sources (at
    /// least one).
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            capacity: capacity.max(1),
            sources: HashMap::new(),
            others: None,
        }
    }

    /// An event from `source` at `now`: the line to log, if one is due.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Option<LogLine> {
        let source = source.to_canonical();
        let interval = self.interval;
        let due = |entry: &Entry| now.saturating_duration_since(entry.logged) >= interval;
        if let Some(entry) = self.sources.get_mut(&source) {
            return if due(entry) {
                let line = LogLine {
                    source: Some(source),
                    suppressed: entry.suppressed,
                };
                *entry = Entry {
                    logged: now,
                    suppressed: 0,
                };
                Some(line)
            } else {
                entry.suppressed = entry.suppressed.saturating_add(1);
                None
            };
        }
        if self.sources.len() >= self.capacity {
            // Sources logged long enough ago can be forgotten: their next event is due anyway.
            self.sources.retain(|_, e| !due(e));
        }
        if self.sources.len() < self.capacity {
            self.sources.insert(
                source,
                Entry {
                    logged: now,
                    suppressed: 0,
                },
            );
            return Some(LogLine {
                source: Some(source),
                suppressed: 0,
            });
        }
        match &mut self.others {
            Some(entry) if !due(entry) => {
                entry.suppressed = entry.suppressed.saturating_add(1);
                None
            }
            slot => {
                let suppressed = slot.map_or(0, |e| e.suppressed);
                *slot = Some(Entry {
                    logged: now,
                    suppressed: 0,
                });
                Some(LogLine {
                    source: None,
                    suppressed,
                })
            }
        }
    }

    /// Sources followed now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is followed.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_line_per_source_per_interval_with_the_count_of_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = SourceLogLimiter::new(s(60), 8);
        assert_eq!(
            log.check(ip(1), t0),
            Some(LogLine {
                source: Some(ip(1)),
                suppressed: 0
            })
        );
        for i in 1..=500 {
            assert_eq!(log.check(ip(1), t0 + Duration::from_millis(i)), None);
        }
        assert!(log.check(ip(2), t0 + s(1)).is_some(), "another source");
        assert_eq!(log.check(ip(1), t0 + s(59)), None);
        assert_eq!(
            log.check(ip(1), t0 + s(60)),
            Some(LogLine {
                source: Some(ip(1)),
                suppressed: 501
            })
        );
    }

    #[test]
    fn a_full_table_shares_one_line_among_new_sources_and_memory_stays_bounded() {
        let t0 = Instant::now();
        let mut log = SourceLogLimiter::new(Duration::from_secs(60), 4);
        let lines = (0..=255u8)
            .filter(|&i| log.check(ip(i), t0).is_some())
            .count();
        assert_eq!(lines, 4 + 1, "four sources, then one line for the others");
        assert_eq!(log.len(), 4);
        // A minute later the old entries make room again.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            log.check(ip(200), later),
            Some(LogLine {
                source: Some(ip(200)),
                suppressed: 0
            })
        );
        assert_eq!(log.len(), 1);
        // IPv4-mapped IPv6 is the same source as its IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.200".parse().unwrap();
        assert_eq!(log.check(mapped, later), None);
    }

    #[test]
    fn the_others_line_reports_what_it_held_back() {
        let t0 = Instant::now();
        let mut log = SourceLogLimiter::new(Duration::from_secs(10), 1);
        assert!(log.check(ip(1), t0).is_some());
        assert_eq!(
            log.check(ip(2), t0),
            Some(LogLine {
                source: None,
                suppressed: 0
            })
        );
        assert_eq!(log.check(ip(3), t0), None);
        assert_eq!(log.check(ip(4), t0), None);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(log.check(ip(5), later), None);
        // Ten seconds on, ip(1)'s entry is due and gives its place to ip(6).
        let due = t0 + Duration::from_secs(10);
        assert!(log.check(ip(6), due).is_some());
        assert_eq!(
            log.check(ip(7), due),
            Some(LogLine {
                source: None,
                suppressed: 3
            })
        );
    }
}
