//! How the proxy watches its relay nodes: a ping every interval on a client of its own, a
//! node down when it stays silent longer than its window (a few intervals, stretched by a slow
//! round trip and by the commands it has yet to answer — busy is not dead) or when its address
//! refuses our datagrams twice (ICMP port unreachable), and up again after enough pongs in a
//! row. Every reply of any kind shows a node lives.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::{NodeId, Relays};

/// One relay node.
#[derive(Debug)]
pub struct RelayNode {
    /// Its name.
    pub name: String,
    /// Its control address (ng or RTPProxy).
    pub address: SocketAddr,
    /// Its share of new calls.
    pub weight: u32,
    /// Calls anchored on it by this proxy.
    pub calls: usize,
    /// The sessions the node itself last reported (RTPProxy's `active sessions`), with this
    /// proxy's `calls` at that moment; none for ng nodes.
    pub reported: Option<(u64, usize)>,
    /// Calls the other proxy nodes of an active-active cluster anchored on it, as they last
    /// published them (an ng node reports no sessions of its own).
    pub cluster_calls: u64,
    /// Whether its health checks pass.
    pub up: bool,
    /// Drained by the operator: no new calls.
    pub draining: bool,
    /// When `up` last changed (or the proxy started).
    pub changed_at: Instant,
    /// Why it went down, the last time it did.
    pub down_reason: Option<DownReason>,
    /// How it is spoken to, with its request client and its health pings on a client of
    /// their own (one transmission each, answered or not within the longest window).
    pub(super) engine: Engine,
    /// Pings awaiting their pong, with when each was sent (oldest first, bounded).
    pub(super) pings: VecDeque<(u64, Instant)>,
    pub(super) next_ping: Instant,
    /// The first request sent since the node was last heard from.
    pub(super) silent_since: Option<Instant>,
    /// When a reply of any kind last came from it.
    pub(super) last_heard: Option<Instant>,
    /// Smoothed ping round trip and its variation (RFC 6298's estimator).
    pub(super) srtt: Option<Duration>,
    pub(super) rttvar: Duration,
    /// Refusals (ICMP port unreachable) in a row, not yet answered by a reply.
    pub(super) refused: u32,
    /// Pongs in a row (a down node comes back after `up_after`).
    pub(super) successes: u32,
    /// When the latest answered ping was sent: a ping sent before it that times out later is
    /// old news and does not break the run of pongs.
    pub(super) last_pong_sent: Option<Instant>,
}

/// Why a relay node was declared down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// Its address refused our datagrams twice in a row (ICMP port unreachable: no process
    /// listens there).
    Refused,
    /// It answered nothing for its whole window; `silent` is how long it had been silent.
    TimedOut {
        /// Time since its last reply (or since the first unanswered request).
        silent: Duration,
    },
}

impl DownReason {
    /// The label used in logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DownReason::Refused => "refused",
            DownReason::TimedOut { .. } => "timed_out",
        }
    }
}

impl RelayNode {
    /// Its load for the choice of a node: the calls this proxy anchored on it, plus, when
    /// the node reports its sessions (RTPProxy), those it held beyond this proxy's calls at
    /// its last report (another controller's, or left over) — so a node busy with others'
    /// sessions gets fewer new calls, and calls counted since the report count at once —
    /// else the calls the cluster's other proxy nodes published for it.
    pub fn load(&self) -> u64 {
        let calls = u64::try_from(self.calls).unwrap_or(u64::MAX);
        match self.reported {
            Some((sessions, calls_then)) => {
                let ours_then = u64::try_from(calls_then).unwrap_or(u64::MAX);
                calls.saturating_add(sessions.saturating_sub(ours_then))
            }
            None => calls.saturating_add(self.cluster_calls),
        }
    }

    /// How long this node may stay silent before it is down: `down_after` ping intervals,
    /// or twice its retransmission timeout (SRTT + 4·RTTVAR) when it has been slower, plus an
    /// allowance for the commands it has been sent and not answered yet (a relay working
    /// through a burst of hundreds of deletes answers its pings late: busy, not dead), capped
    /// at the configured maximum.
    pub fn window(&self, health: &HealthConfig) -> Duration {
        let base = health.interval.saturating_mul(health.down_after.max(1));
        let slow = self
            .srtt
            .map_or(Duration::ZERO, |srtt| (srtt + self.rttvar * 4) * 2);
        let backlog = BACKLOG_ALLOWANCE
            .saturating_mul(u32::try_from(self.engine.pending()).unwrap_or(u32::MAX));
        (base.max(slow) + backlog).min(health.max_window.max(base))
    }

    /// The smoothed round trip of its pings, once one was answered.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Requests sent to it that await a reply (health pings aside).
    pub fn pending(&self) -> usize {
        self.engine.pending()
    }

    /// Its engine: `"ng"` or `"rtpproxy"`.
    pub fn engine_name(&self) -> &'static str {
        self.engine.kind().as_str()
    }

    /// Its engine's kind.
    pub fn engine_kind(&self) -> super::EngineKind {
        self.engine.kind()
    }

    /// Time since it was last heard from (or since the proxy started, if never).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard.unwrap_or(self.changed_at))
    }

    /// When its current silence began, if it is silent (a request sent since its last reply):
    /// its last reply — pings go out every `interval`, so a node that lives answers again
    /// within an interval and a round trip — but never earlier than one interval before the
    /// first request since that reply. While the proxy's own loop stalls (a loaded host) it
    /// sends nothing, and a node that was not asked cannot have failed to answer: counting that
    /// time made a stall of the proxy look like the death of every relay at once.
    pub(super) fn silence_started(&self, interval: Duration) -> Option<Instant> {
        let first_unanswered = self.silent_since?;
        let asked_from = first_unanswered
            .checked_sub(interval)
            .unwrap_or(first_unanswered);
        Some(
            self.last_heard
                .map_or(first_unanswered, |heard| heard.max(asked_from)),
        )
    }

    /// A request goes to it: the silence clock starts unless one is already running.
    pub(super) fn asked(&mut self, now: Instant) {
        if self.silent_since.is_none() {
            self.silent_since = Some(now);
        }
    }

    /// A reply came from it: it lives.
    pub(super) fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        self.silent_since = None;
        self.refused = 0;
    }

    /// One more round-trip sample (RFC 6298 §2).
    pub(super) fn sample_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }
}

/// How relay nodes are watched (`[proxy.relay_health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Ping interval.
    pub interval: Duration,
    /// The shortest silence that makes a node down, in ping intervals.
    pub down_after: u32,
    /// Answered pings in a row that make a down node up.
    pub up_after: u32,
    /// The longest silence window, however slow the node has been.
    pub max_window: Duration,
    /// ng requests awaiting a reply from one node beyond which it gets no new calls.
    pub max_pending: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            down_after: 6,
            up_after: 3,
            max_window: Duration::from_secs(5),
            max_pending: 2_000,
        }
    }
}

/// A node's health changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    /// The node.
    pub node: NodeId,
    /// Its new state.
    pub up: bool,
}

/// Extra silence allowed per command awaiting the node's reply. Our relay and rtpengine take
/// well under a millisecond per command on an idle core; two leave room for a loaded one.
const BACKLOG_ALLOWANCE: Duration = Duration::from_millis(2);

/// Pings awaiting their pong per node, at most (a node that answers none is down long before).
const MAX_OUTSTANDING_PINGS: usize = 64;

impl Relays {
    /// An ng datagram received from `source`. Anything the node sends — a reply to a ping or
    /// to any command, even one we gave up waiting for — shows it lives.
    pub fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.address == source) {
            n.heard(now);
            n.engine.handle_datagram(datagram, now);
        }
        self.collect_pings(now);
    }

    /// Sending to or receiving from `address` failed with "connection refused": an ICMP
    /// port unreachable came back, so no process listens there. The first refusal is
    /// confirmed by a ping sent at once; a second one in a row takes the node down.
    pub fn handle_refused(&mut self, address: SocketAddr, now: Instant) {
        let Some((id, n)) = self
            .nodes
            .iter_mut()
            .enumerate()
            .find(|(_, n)| n.address == address)
        else {
            return;
        };
        n.refused = n.refused.saturating_add(1);
        n.successes = 0;
        if n.refused == 1 {
            if n.pings.len() < MAX_OUTSTANDING_PINGS {
                let ping = n.engine.send_ping(now);
                n.pings.push_back((ping, now));
                n.asked(now);
            }
        } else if n.up {
            Self::mark_down(&mut self.changes, id, n, DownReason::Refused, now);
        }
    }

    /// The earliest retransmission, timeout, ping or end of a silence window.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .flat_map(|n| {
                let window_end = n
                    .silence_started(self.health.interval)
                    .filter(|_| n.up)
                    .map(|since| since + n.window(&self.health));
                [n.engine.poll_timeout(), Some(n.next_ping), window_end]
            })
            .flatten()
            .min()
    }

    /// Fires retransmissions, timeouts and pings due at `now`, and declares down the nodes
    /// silent for longer than their window.
    pub fn handle_timeout(&mut self, now: Instant) {
        for n in &mut self.nodes {
            n.engine.handle_timeout(now);
        }
        self.collect_pings(now);
        let health = self.health;
        for (id, n) in self.nodes.iter_mut().enumerate() {
            if n.next_ping <= now {
                if n.pings.len() < MAX_OUTSTANDING_PINGS {
                    let request = n.engine.send_ping(now);
                    n.pings.push_back((request, now));
                    n.asked(now);
                }
                n.next_ping = now + health.interval;
            }
            let window = n.window(&health);
            if n.up
                && n.silence_started(health.interval)
                    .is_some_and(|since| now >= since + window)
            {
                let silent = n.silent_for(now);
                Self::mark_down(
                    &mut self.changes,
                    id,
                    n,
                    DownReason::TimedOut { silent },
                    now,
                );
            }
        }
    }

    fn mark_down(
        changes: &mut VecDeque<HealthChange>,
        id: NodeId,
        n: &mut RelayNode,
        reason: DownReason,
        now: Instant,
    ) {
        n.up = false;
        n.changed_at = now;
        n.successes = 0;
        n.down_reason = Some(reason);
        changes.push_back(HealthChange {
            node: id,
            up: false,
        });
    }

    /// Takes the pongs (round-trip samples; a down node comes back after enough in a row)
    /// and the pings given up.
    fn collect_pings(&mut self, now: Instant) {
        for (id, n) in self.nodes.iter_mut().enumerate() {
            while let Some((request, answered)) = n.engine.poll_ping() {
                let Some(at) = n.pings.iter().position(|(r, _)| *r == request) else {
                    continue;
                };
                let sent = n.pings.remove(at).map_or(now, |(_, sent)| sent);
                if !answered {
                    if n.last_pong_sent.is_none_or(|pong| sent > pong) {
                        n.successes = 0;
                    }
                    continue;
                }
                n.last_pong_sent = Some(n.last_pong_sent.map_or(sent, |p| p.max(sent)));
                n.sample_rtt(now.saturating_duration_since(sent));
                n.successes = n.successes.saturating_add(1);
                if !n.up && n.successes >= self.health.up_after {
                    n.up = true;
                    n.changed_at = now;
                    self.changes.push_back(HealthChange { node: id, up: true });
                }
            }
            if let Some(sessions) = n.engine.poll_load() {
                n.reported = Some((sessions, n.calls));
            }
        }
    }

    /// The next change of a node's health.
    pub fn poll_health_change(&mut self) -> Option<HealthChange> {
        self.changes.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{answer_pings, epoch, relays};
    use super::*;

    /// Both nodes answer their pings for a second; the time after.
    fn answered_for_a_while(r: &mut Relays, t0: Instant) -> Instant {
        let mut now = t0;
        for _ in 0..5 {
            r.handle_timeout(now);
            answer_pings(r, now);
            now += std::time::Duration::from_millis(200);
        }
        now
    }

    /// Node a (port 2223) answers its pings; node b is silent.
    fn answer_only_a(r: &mut Relays, now: Instant) {
        while let Some((to, datagram)) = r.poll_transmit() {
            if to.port() == 2223 {
                let text = String::from_utf8_lossy(&datagram).to_string();
                let cookie = text.split(' ').next().unwrap_or("").to_string();
                r.handle_datagram(to, format!("{cookie} d6:result4:ponge").as_bytes(), now);
            }
        }
    }

    #[test]
    fn a_node_goes_down_after_three_missed_pings_and_up_after_three_answered() {
        let t0 = epoch();
        let mut r = relays();
        let ms = std::time::Duration::from_millis;
        // Both nodes answer for a while.
        let mut now = answered_for_a_while(&mut r, t0);
        assert_eq!(r.poll_health_change(), None);
        // Node b stops answering: pings time out after 200 ms each; down at the third miss.
        let mut changes = Vec::new();
        for _ in 0..4 {
            r.handle_timeout(now);
            answer_only_a(&mut r, now);
            now += ms(200);
            r.handle_timeout(now);
            changes.extend(std::iter::from_fn(|| r.poll_health_change()));
        }
        assert_eq!(changes, vec![HealthChange { node: 1, up: false }]);
        assert!(!r.is_up(1));
        assert_eq!(r.pick("main", &[]), Some(0), "a down node gets no calls");
        // b answers again: up after three answered pings.
        for _ in 0..4 {
            r.handle_timeout(now);
            answer_pings(&mut r, now);
            now += ms(200);
        }
        assert_eq!(
            r.poll_health_change(),
            Some(HealthChange { node: 1, up: true })
        );
        r.set_draining(1, true);
        r.count_call(0, 5);
        assert_eq!(r.pick("main", &[]), Some(0), "a drained node gets no calls");
    }

    #[test]
    fn a_stall_of_the_proxy_itself_is_not_the_silence_of_its_relays() {
        let t0 = epoch();
        let mut r = relays();
        let ms = std::time::Duration::from_millis;
        let mut now = answered_for_a_while(&mut r, t0);
        // The proxy's loop does not run for 3 s (no ping goes out, none can be answered).
        now += ms(3000);
        r.handle_timeout(now);
        assert_eq!(r.poll_health_change(), None, "not asked, not silent");
        assert!(r.is_up(0) && r.is_up(1));
        // They answer the pings sent after the stall: still up.
        answer_pings(&mut r, now);
        r.handle_timeout(now + ms(100));
        assert_eq!(r.poll_health_change(), None);
        // A node that does not answer what it was asked after the stall goes down as ever.
        let mut later = now + ms(100);
        let mut changes = Vec::new();
        for _ in 0..20 {
            r.handle_timeout(later);
            answer_only_a(&mut r, later);
            changes.extend(std::iter::from_fn(|| r.poll_health_change()));
            later += ms(100);
        }
        assert_eq!(changes, vec![HealthChange { node: 1, up: false }]);
    }
}
