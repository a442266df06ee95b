//! A request rate limit per source address (`[proxy.flood]`): what Kamailio's `pike` module
//! does for a proxy facing the Internet, where scanners and floods arrive from single
//! addresses.
//!
//! Each source IP has a token bucket: `requests_per_second` tokens a second, at most `burst`
//! saved up; a request takes one. A source that finds its bucket empty is blocked for
//! `block_s`: every request from it is dropped, unanswered (an answer would tell a scanner it
//! found a SIP server, and costs work under a flood). When the block ends the source starts
//! again with a full bucket. Trusted networks are never counted.
//!
//! Memory is bounded by `max_sources`: when more are tracked, the sources in good standing
//! (not blocked) are forgotten, the blocked ones kept; a new source that finds the table full
//! of blocked ones is let through untracked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anchorage_config::proxy::Flood;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Pass,
    /// Drop it: the source is blocked. `newly_blocked` is set for the request that went over
    /// the limit (log it once).
    Drop {
        /// This request started the block.
        newly_blocked: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The per-source limit; sans-IO, the clock is an argument.
#[derive(Debug)]
pub struct FloodGuard {
    config: Flood,
    burst: f64,
    sources: HashMap<IpAddr, Bucket>,
}

impl FloodGuard {
    /// A guard with this configuration (off when `requests_per_second` is 0).
    pub fn new(config: Flood) -> FloodGuard {
        let burst = if config.burst == 0 {
            2.0 * f64::from(config.requests_per_second)
        } else {
            f64::from(config.burst)
        };
        FloodGuard {
            config,
            burst,
            sources: HashMap::new(),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.config.requests_per_second > 0
    }

    /// Counts one request from `source` at `now`.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Verdict {
        if !self.enabled() || self.config.trusted.iter().any(|n| n.contains(&source)) {
            return Verdict::Pass;
        }
        if self.sources.len() >= self.config.max_sources && !self.sources.contains_key(&source) {
            self.forget_good_sources(now);
            if self.sources.len() >= self.config.max_sources {
                // Every tracked source is blocked: this one cannot be tracked, and is let
                // through rather than refused for others' behaviour.
                return Verdict::Pass;
            }
        }
        let rate = f64::from(self.config.requests_per_second);
        let burst = self.burst;
        let bucket = self.sources.entry(source).or_insert(Bucket {
            tokens: burst,
            last: now,
            blocked_until: None,
        });
        if let Some(until) = bucket.blocked_until {
            if now < until {
                return Verdict::Drop {
                    newly_blocked: false,
                };
            }
            bucket.blocked_until = None;
            bucket.tokens = burst;
            bucket.last = now;
        }
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Pass;
        }
        bucket.blocked_until = Some(now + Duration::from_secs(self.config.block_s));
        Verdict::Drop {
            newly_blocked: true,
        }
    }

    /// Sources blocked at `now`.
    pub fn blocked(&self, now: Instant) -> usize {
        self.sources
            .values()
            .filter(|b| b.blocked_until.is_some_and(|u| now < u))
            .count()
    }

    /// The sources blocked at `now`, with the time left, longest first.
    pub fn blocked_sources(&self, now: Instant) -> Vec<(IpAddr, Duration)> {
        let mut list: Vec<(IpAddr, Duration)> = self
            .sources
            .iter()
            .filter_map(|(ip, b)| {
                let until = b.blocked_until.filter(|u| now < *u)?;
                Some((*ip, until - now))
            })
            .collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        list
    }

    /// Ends the block of `source` at once (it starts again with a full bucket); `false` if it
    /// was not blocked.
    pub fn unblock(&mut self, source: IpAddr, now: Instant) -> bool {
        match self.sources.get(&source) {
            Some(b) if b.blocked_until.is_some_and(|u| now < u) => {
                self.sources.remove(&source);
                true
            }
            _ => false,
        }
    }

    /// Sources tracked (blocked or recently seen).
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Drops every source not blocked at `now`: they lose their partly used buckets, which
    /// only favours them.
    fn forget_good_sources(&mut self, now: Instant) {
        self.sources
            .retain(|_, b| b.blocked_until.is_some_and(|u| now < u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(rate: u32, burst: u32, extra: impl FnOnce(&mut Flood)) -> FloodGuard {
        let mut c = Flood {
            requests_per_second: rate,
            burst,
            block_s: 10,
            ..Flood::default()
        };
        extra(&mut c);
        FloodGuard::new(c)
    }

    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
    fn epoch() -> Instant {
        Instant::now()
    }

    fn passes(g: &mut FloodGuard, ip: &str, n: usize, now: Instant) -> usize {
        let ip: IpAddr = ip.parse().unwrap();
        (0..n).filter(|_| g.check(ip, now) == Verdict::Pass).count()
    }

    #[test]
    fn a_burst_passes_then_the_source_is_blocked_for_block_s() {
        let mut g = guard(10, 20, |_| {});
        let t0 = epoch();
        assert_eq!(passes(&mut g, "192.0.2.1", 20, t0), 20);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            g.check(ip, t0),
            Verdict::Drop {
                newly_blocked: true
            }
        );
        assert_eq!(
            g.check(ip, t0),
            Verdict::Drop {
                newly_blocked: false
            }
        );
        assert_eq!(g.blocked(t0), 1);
        // Another source is not affected.
        assert_eq!(passes(&mut g, "192.0.2.2", 5, t0), 5);
        // Still blocked just before the end, even though its bucket would have refilled.
        let almost = t0 + Duration::from_millis(9_999);
        assert_eq!(passes(&mut g, "192.0.2.1", 1, almost), 0);
        // After the block: a full bucket again.
        let after = t0 + Duration::from_secs(10);
        assert_eq!(passes(&mut g, "192.0.2.1", 25, after), 20);
        assert_eq!(g.blocked(after), 1);
        // An operator ends a block early.
        let ip1: IpAddr = "192.0.2.1".parse().unwrap();
        let soon = after + Duration::from_secs(4);
        assert_eq!(g.blocked_sources(soon), vec![(ip1, Duration::from_secs(6))]);
        assert!(g.unblock(ip1, soon));
        assert!(!g.unblock(ip1, soon), "no longer blocked");
        assert!(!g.unblock("192.0.2.2".parse().unwrap(), soon));
        assert_eq!(passes(&mut g, "192.0.2.1", 25, soon), 20);
    }

    #[test]
    fn the_sustained_rate_passes_forever() {
        let mut g = guard(50, 0, |_| {});
        let t0 = epoch();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        // 50 a second for a minute, evenly spread: never blocked.
        for i in 0..3000u64 {
            let now = t0 + Duration::from_millis(i * 20);
            assert_eq!(g.check(ip, now), Verdict::Pass, "request {i}");
        }
        // The default burst is twice the rate.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(passes(&mut g, "2001:db8::1", 150, later), 100);
    }

    #[test]
    fn off_and_trusted_sources_are_never_limited() {
        let t0 = epoch();
        let mut off = guard(0, 0, |_| {});
        assert!(!off.enabled());
        assert_eq!(passes(&mut off, "192.0.2.1", 10_000, t0), 10_000);
        assert_eq!(off.tracked(), 0);
        let mut g = guard(1, 1, |c| c.trusted = vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(passes(&mut g, "10.1.2.3", 1000, t0), 1000);
        assert_eq!(passes(&mut g, "11.1.2.3", 1000, t0), 1);
        assert_eq!(g.tracked(), 1);
    }

    #[test]
    fn memory_stays_bounded_and_blocked_sources_are_kept() {
        let mut g = guard(1, 1, |c| c.max_sources = 100);
        let t0 = epoch();
        // Ten sources get themselves blocked.
        for i in 0..10 {
            passes(&mut g, &format!("192.0.2.{i}"), 2, t0);
        }
        assert_eq!(g.blocked(t0), 10);
        // A spoofed flood from a million addresses, one request each.
        for i in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(g.check(ip, t0), Verdict::Pass);
            assert!(g.tracked() <= 100);
        }
        assert_eq!(g.blocked(t0), 10, "the blocked sources were kept");
        assert_eq!(passes(&mut g, "192.0.2.3", 1, t0), 0);
    }
}
