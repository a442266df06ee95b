//! The port pool of one interface: RTP on an even port, RTCP on the odd port above it
//! ([RFC 3550 §11](https://www.rfc-editor.org/rfc/rfc3550#section-11)), handed out in a
//! shuffled order, held back for a delete delay after release.
//!
//! ```text
//!   Free ──allocate──► InUse ──release(now)──► Quarantined ──(now ≥ release + delay)──► Free
//! ```
//!
//! * The unit is a pair (2k, 2k+1). A stream that uses rtcp-mux binds only the even port but
//!   still holds the pair, so that an answer refusing rtcp-mux can open RTCP on port + 1
//!   without moving the RTP port (a moved port breaks peers that need symmetric RTP).
//! * The order is a Fisher–Yates shuffle drawn from the caller's RNG (seeded, so tests and the
//!   simulator are deterministic); freed pairs go to the back, as rtpengine does, so a port is
//!   not reused while late packets of its last call may still arrive.
//! * Allocate, release and reclaim are O(1) (reclaim amortised); exhaustion is an error.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub min: u16,
    /// Highest port.
    pub max: u16,
}

impl PortRange {
    /// rtpengine's default range, 30000–39999.
    pub const DEFAULT: PortRange = PortRange {
        min: 30000,
        max: 39999,
    };

    /// The range `min..=max`, if it holds at least one even/odd pair.
    pub fn new(min: u16, max: u16) -> Result<Self, PortError> {
        let range = Self { min, max };
        if range.pairs() == 0 {
            return Err(PortError::NoPairInRange { min, max });
        }
        Ok(range)
    }

    /// The first even port of the range.
    fn first_even(&self) -> u32 {
        u32::from(self.min) + u32::from(self.min % 2)
    }

    /// How many whole even/odd pairs fit.
    pub fn pairs(&self) -> u32 {
        let first = self.first_even();
        let max = u32::from(self.max);
        if max < first + 1 {
            0
        } else {
            (max - first).div_ceil(2)
        }
    }
}

impl Default for PortRange {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An allocated port pair: RTP on the even port, RTCP on the odd one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    /// Even RTP port.
    pub rtp: u16,
}

impl PortPair {
    /// The odd RTCP port (RTP + 1).
    pub fn rtcp(&self) -> u16 {
        self.rtp.wrapping_add(1)
    }

    /// The RTCP port to open: none under rtcp-mux.
    pub fn rtcp_unless_mux(&self, rtcp_mux: bool) -> Option<u16> {
        (!rtcp_mux).then(|| self.rtcp())
    }
}

/// A port pool error; `Exhausted` is what the ng layer reports as "Ran out of ports".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// Every pair is in use or in quarantine.
    #[error("ran out of ports: all {pairs} port pairs of {min}-{max} are in use or in quarantine")]
    Exhausted {
        /// Lowest port of the range.
        min: u16,
        /// Highest port of the range.
        max: u16,
        /// Pairs in the range.
        pairs: u32,
    },
    /// The range has no even port followed by an odd one.
    #[error("port range {min}-{max} holds no even/odd port pair")]
    NoPairInRange {
        /// Lowest port.
        min: u16,
        /// Highest port.
        max: u16,
    },
    /// Release of a port that is not the even port of a pair of this range.
    #[error("port {0} is not an RTP port of this pool")]
    NotInPool(u16),
    /// Release of a pair that is not allocated (double release).
    #[error("port pair {0} is not allocated")]
    NotAllocated(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    InUse,
    Quarantined,
}

/// The shuffled pool of port pairs of one interface.
#[derive(Debug, Clone)]
pub struct PortPool {
    range: PortRange,
    first: u32,
    delete_delay: Duration,
    slots: Vec<Slot>,
    free: VecDeque<u32>,
    quarantine: VecDeque<(Instant, u32)>,
}

impl PortPool {
    /// A pool over `range` whose released pairs wait `delete_delay` before reuse, shuffled
    /// with `rng`.
    pub fn new<R: Rng + ?Sized>(range: PortRange, delete_delay: Duration, rng: &mut R) -> Self {
        let pairs = range.pairs();
        let mut order: Vec<u32> = (0..pairs).collect();
        order.shuffle(rng);
        Self {
            range,
            first: range.first_even(),
            delete_delay,
            slots: vec![Slot::Free; pairs as usize],
            free: order.into(),
            quarantine: VecDeque::new(),
        }
    }

    /// The range this pool covers.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Takes the next free pair, after returning to the free list the quarantined pairs
    /// whose delay has passed at `now`.
    pub fn allocate(&mut self, now: Instant) -> Result<PortPair, PortError> {
        self.reclaim(now);
        let index = self.free.pop_front().ok_or(PortError::Exhausted {
            min: self.range.min,
            max: self.range.max,
            pairs: self.range.pairs(),
        })?;
        if let Some(slot) = self.slots.get_mut(index as usize) {
            *slot = Slot::InUse;
        }
        Ok(PortPair {
            rtp: (self.first + 2 * index) as u16,
        })
    }

    /// Releases `pair` at `now`: it becomes free again once the delete delay has passed.
    pub fn release(&mut self, pair: PortPair, now: Instant) -> Result<(), PortError> {
        let index = self.index_of(pair.rtp)?;
        self.set_released(index, pair.rtp)?;
        if self.delete_delay.is_zero() {
            self.free_slot(index);
        } else {
            if let Some(slot) = self.slots.get_mut(index as usize) {
                *slot = Slot::Quarantined;
            }
            self.quarantine.push_back((now + self.delete_delay, index));
        }
        Ok(())
    }

    /// Releases `pair` with no quarantine: for a pair that was never used (its socket failed
    /// to bind, or the offer failed before any packet).
    pub fn release_unused(&mut self, pair: PortPair) -> Result<(), PortError> {
        let index = self.index_of(pair.rtp)?;
        self.set_released(index, pair.rtp)?;
        self.free_slot(index);
        Ok(())
    }

    /// Returns to the free list every quarantined pair whose delay has passed; how many.
    pub fn reclaim(&mut self, now: Instant) -> usize {
        let mut reclaimed = 0;
        while let Some(&(due, index)) = self.quarantine.front() {
            if due > now {
                break;
            }
            self.quarantine.pop_front();
            self.free_slot(index);
            reclaimed += 1;
        }
        reclaimed
    }

    /// When the next quarantined pair becomes free.
    pub fn next_reclaim(&self) -> Option<Instant> {
        self.quarantine.front().map(|&(due, _)| due)
    }

    /// Pairs ready to allocate.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Pairs waiting out the delete delay.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Pairs allocated.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len() - self.quarantine.len()
    }

    fn index_of(&self, rtp: u16) -> Result<u32, PortError> {
        let port = u32::from(rtp);
        if port < self.first || port % 2 != 0 || (port - self.first) / 2 >= self.range.pairs() {
            return Err(PortError::NotInPool(rtp));
        }
        Ok((port - self.first) / 2)
    }

    fn set_released(&mut self, index: u32, rtp: u16) -> Result<(), PortError> {
        match self.slots.get(index as usize) {
            Some(Slot::InUse) => Ok(()),
            _ => Err(PortError::NotAllocated(rtp)),
        }
    }

    fn free_slot(&mut self, index: u32) {
        if let Some(slot) = self.slots.get_mut(index as usize) {
            *slot = Slot::Free;
            self.free.push_back(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn pool(min: u16, max: u16, delay: u64, seed: u64) -> PortPool {
        let mut rng = SmallRng::seed_from_u64(seed);
        PortPool::new(
            PortRange::new(min, max).unwrap(),
            Duration::from_secs(delay),
            &mut rng,
        )
    }

    fn drain(pool: &mut PortPool, now: Instant) -> Vec<u16> {
        std::iter::from_fn(|| pool.allocate(now).ok().map(|p| p.rtp)).collect()
    }

    #[test]
    fn pairs_are_even_rtp_and_odd_rtcp_inside_the_range() {
        let t0 = epoch();
        let mut pool = pool(30001, 30010, 30, 1);
        // 30001 is odd and 30010 has no odd neighbour: pairs 30002..30008.
        let ports = drain(&mut pool, t0);
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [30002, 30004, 30006, 30008]);
        for rtp in ports {
            let pair = PortPair { rtp };
            assert_eq!((rtp % 2, pair.rtcp()), (0, rtp + 1));
        }
    }

    #[test]
    fn same_seed_same_order_other_seed_other_order() {
        let t0 = epoch();
        let a = drain(&mut pool(30000, 39999, 30, 7), t0);
        let b = drain(&mut pool(30000, 39999, 30, 7), t0);
        let c = drain(&mut pool(30000, 39999, 30, 8), t0);
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let sequential: Vec<u16> = (0..5000).map(|i| 30000 + 2 * i).collect();
        assert_ne!(a, sequential, "shuffled");
    }

    #[test]
    fn exhaustion_is_an_error_and_quarantine_holds_ports_for_the_delay() {
        let t0 = epoch();
        let mut pool = pool(40000, 40005, 30, 3);
        let pairs: Vec<PortPair> = (0..3).map(|_| pool.allocate(t0).unwrap()).collect();
        assert_eq!(
            pool.allocate(t0),
            Err(PortError::Exhausted {
                min: 40000,
                max: 40005,
                pairs: 3
            })
        );
        pool.release(pairs[1], t0).unwrap();
        assert_eq!((pool.in_use(), pool.quarantined(), pool.free()), (2, 1, 0));
        assert_eq!(pool.next_reclaim(), Some(t0 + Duration::from_secs(30)));
        assert!(pool.allocate(t0 + Duration::from_millis(29_999)).is_err());
        assert_eq!(pool.allocate(t0 + Duration::from_secs(30)), Ok(pairs[1]));
    }

    #[test]
    fn allocate_all_free_all_allocate_all_again_leaks_nothing() {
        let t0 = epoch();
        let mut pool = pool(30000, 30999, 30, 11);
        let first = drain(&mut pool, t0);
        assert_eq!(first.len(), 500);
        for &rtp in &first {
            pool.release(PortPair { rtp }, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(30);
        let second = drain(&mut pool, later);
        // Freed pairs return at the back in release order.
        assert_eq!(second, first);
        assert_eq!(second.iter().collect::<HashSet<_>>().len(), 500);
        assert_eq!(
            (pool.in_use(), pool.free(), pool.quarantined()),
            (500, 0, 0)
        );
    }

    #[test]
    fn bad_releases_are_typed_errors() {
        let t0 = epoch();
        let mut pool = pool(30000, 30009, 0, 5);
        let pair = pool.allocate(t0).unwrap();
        assert_eq!(
            pool.release(PortPair { rtp: 30001 }, t0),
            Err(PortError::NotInPool(30001))
        );
        assert_eq!(
            pool.release(PortPair { rtp: 31000 }, t0),
            Err(PortError::NotInPool(31000))
        );
        pool.release(pair, t0).unwrap();
        assert_eq!(
            pool.release(pair, t0),
            Err(PortError::NotAllocated(pair.rtp))
        );
        assert_eq!(
            pool.release_unused(pair),
            Err(PortError::NotAllocated(pair.rtp))
        );
        // Zero delay: free at once, at the back.
        assert_eq!((pool.free(), pool.quarantined()), (5, 0));
    }

    #[test]
    fn empty_range_is_refused() {
        assert_eq!(
            PortRange::new(30001, 30001),
            Err(PortError::NoPairInRange {
                min: 30001,
                max: 30001
            })
        );
        assert_eq!(PortRange::new(65534, 65535).map(|r| r.pairs()), Ok(1));
    }
}
