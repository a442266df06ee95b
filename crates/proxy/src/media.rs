//! Media relays as the proxy drives them over ng (our relay or rtpengine): relay sets, the
//! choice of a node for a new call, one retransmitting ng client per node, and the ng requests
//! built from SIP (offer, answer, delete). Sans-IO: datagrams in and out, `now` injected.
//!
//! A new call goes to the node of its set with the fewest calls per unit of weight — not a hash
//! of the Call-ID, so adding a node never moves existing calls. A node that times out or
//! answers with a capacity error is skipped for that call and the next one is tried.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_config::proxy::{MediaPolicy, RelaySet};
use anchorage_ng::{
    normalise, CallId, Client, ClientConfig, Delete, Event, OfferAnswer, Request, RequestId,
    RequestKind, Tag, Value,
};
use bytes::Bytes;

/// One relay node.
#[derive(Debug)]
pub struct RelayNode {
    /// Its name.
    pub name: String,
    /// Its ng address.
    pub address: SocketAddr,
    /// Its share of new calls.
    pub weight: u32,
    /// Calls anchored on it by this proxy.
    pub calls: usize,
    /// Whether its health checks pass.
    pub up: bool,
    /// Drained by the operator: no new calls.
    pub draining: bool,
    /// When `up` last changed (or the proxy started).
    pub changed_at: Instant,
    /// Why it went down, the last time it did.
    pub down_reason: Option<DownReason>,
    client: Client,
    /// Health pings, on a client of their own: one transmission each, answered or not
    /// within the longest window.
    pinger: Client,
    /// Pings awaiting their pong, with when each was sent (oldest first, bounded).
    pings: VecDeque<(RequestId, Instant)>,
    next_ping: Instant,
    /// The first request sent since the node was last heard from.
    silent_since: Option<Instant>,
    /// When a reply of any kind last came from it.
    last_heard: Option<Instant>,
    /// Smoothed ping round trip and its variation (RFC 6298's estimator).
    srtt: Option<Duration>,
    rttvar: Duration,
    /// Refusals (ICMP port unreachable) in a row, not yet answered by a reply.
    refused: u32,
    /// Pongs in a row (a down node comes back after `up_after`).
    successes: u32,
    /// When the latest answered ping was sent: a ping sent before it that times out later is
    /// old news and does not break the run of pongs.
    last_pong_sent: Option<Instant>,
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
            .saturating_mul(u32::try_from(self.client.pending()).unwrap_or(u32::MAX));
        (base.max(slow) + backlog).min(health.max_window.max(base))
    }

    /// The smoothed round trip of its pings, once one was answered.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// ng requests sent to it that await a reply (health pings aside).
    pub fn pending(&self) -> usize {
        self.client.pending()
    }

    /// Time since it was last heard from (or since the proxy started, if never).
    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard.unwrap_or(self.changed_at))
    }

    /// When its current silence began, if it is silent (a request sent since its last reply):
    /// its last reply, or the first request if it never answered. Pings go out every
    /// interval, so a node that lives answers again within an interval and a round trip.
    fn silence_started(&self) -> Option<Instant> {
        let first_unanswered = self.silent_since?;
        Some(self.last_heard.unwrap_or(first_unanswered))
    }

    /// A request goes to it: the silence clock starts unless one is already running.
    fn asked(&mut self, now: Instant) {
        if self.silent_since.is_none() {
            self.silent_since = Some(now);
        }
    }

    /// A reply came from it: it lives.
    fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        self.silent_since = None;
        self.refused = 0;
    }

    /// One more round-trip sample (RFC 6298 §2).
    fn sample_rtt(&mut self, rtt: Duration) {
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

/// Index of a node in [`Relays`].
pub type NodeId = usize;

/// Extra silence allowed per command awaiting the node's reply. Our relay and rtpengine take
/// well under a millisecond per command on an idle core; two leave room for a loaded one.
const BACKLOG_ALLOWANCE: Duration = Duration::from_millis(2);

/// Pings awaiting their pong per node, at most (a node that answers none is down long before).
const MAX_OUTSTANDING_PINGS: usize = 64;

/// The relay nodes and sets of a proxy.
#[derive(Debug, Default)]
pub struct Relays {
    nodes: Vec<RelayNode>,
    sets: HashMap<String, Vec<NodeId>>,
    health: HealthConfig,
    changes: VecDeque<HealthChange>,
}

/// The prefix of a proxy's ng cookies: its node id (spaces and other characters a cookie cannot
/// hold replaced by `-`) and a per-start epoch drawn from the proxy's seed, e.g. `node1-5f3a9c1e`.
pub fn cookie_prefix(node_id: &str, seed: u64) -> String {
    let id: String = node_id
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '-' })
        .take(32)
        .collect();
    // splitmix64 of the seed: neighbouring seeds give unrelated epochs.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{id}-{:08x}", z as u32)
}

/// The ng flags of a media policy, ready to go into requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Relay set.
    pub set: String,
    /// `rtpp-flags` for the SDP sent to the caller.
    pub caller_flags: String,
    /// `rtpp-flags` for the SDP sent to the callee.
    pub callee_flags: String,
}

impl Policy {
    /// The active policy of a configured one (`None`: no anchoring).
    pub fn of(p: &MediaPolicy) -> Option<Policy> {
        use crate::reanchor::{direction_flags, LegOptions};
        if p.disabled {
            return None;
        }
        // The per-leg `type`, `ip` and `iface` become ng options of the SDP that leg gets;
        // the interfaces go into the offer as a `direction` pair.
        let leg = |l: &anchorage_config::proxy::LegMedia| LegOptions {
            flags: None,
            transport: l.transport.clone(),
            ip: l.ip,
            iface: l.iface.clone(),
        };
        let (caller, callee) = (leg(&p.caller), leg(&p.callee));
        let mut callee_flags = callee.applied_to(&p.callee_flags);
        if let Some(direction) = direction_flags(&caller, &callee) {
            callee_flags = format!("{callee_flags} {direction}").trim().to_string();
        }
        Some(Policy {
            set: p.set.clone()?,
            caller_flags: caller.applied_to(&p.caller_flags),
            callee_flags,
        })
    }
}

impl Relays {
    /// The nodes of every set (a node listed in two sets is one node), watched from `now`.
    /// Nodes start up; the first missed pings take them down.
    ///
    /// `cookie_prefix` starts every ng cookie this proxy sends: it must be unique per proxy
    /// node and per process start (see [`cookie_prefix`]), because rtpengine caches replies by
    /// cookie alone for up to a minute: a restarted proxy reusing a cookie would be handed the
    /// reply to an old command.
    pub fn new(
        sets: &[RelaySet],
        client: ClientConfig,
        health: HealthConfig,
        cookie_prefix: &str,
        now: Instant,
    ) -> Relays {
        let mut relays = Relays {
            health,
            ..Relays::default()
        };
        // One transmission per ping; a ping is forgotten after the longest window (a node
        // silent that long is down whatever it answers later).
        let ping_config = ClientConfig {
            first_retransmit: health.max_window,
            max_transmissions: 1,
            timeout: health.max_window.max(health.interval),
            ..client
        };
        for set in sets {
            let mut ids = Vec::new();
            for node in &set.nodes {
                let id = match relays.nodes.iter().position(|n| n.address == node.ng) {
                    Some(id) => id,
                    None => {
                        let n = relays.nodes.len();
                        relays.nodes.push(RelayNode {
                            name: node.name.clone(),
                            address: node.ng,
                            weight: node.weight.max(1),
                            calls: 0,
                            up: true,
                            draining: false,
                            changed_at: now,
                            down_reason: None,
                            client: Client::new(client, &format!("{cookie_prefix}-c{n}")),
                            pinger: Client::new(ping_config, &format!("{cookie_prefix}-p{n}")),
                            pings: VecDeque::new(),
                            next_ping: now,
                            silent_since: None,
                            last_heard: None,
                            srtt: None,
                            rttvar: Duration::ZERO,
                            refused: 0,
                            successes: 0,
                            last_pong_sent: None,
                        });
                        relays.nodes.len() - 1
                    }
                };
                ids.push(id);
            }
            relays.sets.insert(set.name.clone(), ids);
        }
        relays
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RelayNode] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The sets `node` belongs to.
    pub fn sets_of(&self, node: NodeId) -> Vec<String> {
        let mut sets: Vec<String> = self
            .sets
            .iter()
            .filter(|(_, ids)| ids.contains(&node))
            .map(|(name, _)| name.clone())
            .collect();
        sets.sort();
        sets
    }

    /// Whether a set of this name exists.
    pub fn has_set(&self, set: &str) -> bool {
        self.sets.contains_key(set)
    }

    /// Whether `node` is up (health checks pass).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes.get(node).is_some_and(|n| n.up)
    }

    /// Marks a node drained (no new calls) or not.
    pub fn set_draining(&mut self, node: NodeId, draining: bool) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.draining = draining;
        }
    }

    /// The least loaded healthy, undrained node of `set` not in `exclude` and not busy (fewer
    /// ng requests awaiting its reply than the bound).
    pub fn pick(&self, set: &str, exclude: &[NodeId]) -> Option<NodeId> {
        let max_pending = self.health.max_pending;
        self.sets
            .get(set)?
            .iter()
            .copied()
            .filter(|id| !exclude.contains(id))
            .filter(|id| {
                self.nodes
                    .get(*id)
                    .is_some_and(|n| n.up && !n.draining && n.client.pending() < max_pending)
            })
            .min_by(|a, b| {
                let load = |id: &NodeId| {
                    self.nodes
                        .get(*id)
                        .map_or(f64::MAX, |n| n.calls as f64 / f64::from(n.weight))
                };
                load(a).total_cmp(&load(b))
            })
    }

    /// Counts a call onto (`+1`) or off (`-1`) a node.
    pub fn count_call(&mut self, node: NodeId, delta: isize) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.calls = n.calls.saturating_add_signed(delta);
        }
    }

    /// Whether `set` has a node that could take a call now, were it not busy: up and not
    /// drained. (A set whose nodes are all busy is overloaded, not out of relays.)
    pub fn has_live_node(&self, set: &str) -> bool {
        self.sets.get(set).is_some_and(|ids| {
            ids.iter()
                .any(|id| self.nodes.get(*id).is_some_and(|n| n.up && !n.draining))
        })
    }

    /// Sends `request` to `node`.
    pub fn send(&mut self, node: NodeId, request: &Request, now: Instant) -> Option<RequestId> {
        self.nodes.get_mut(node).map(|n| {
            n.asked(now);
            n.client.send(request, now)
        })
    }

    /// The next ng datagram to send, with its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.nodes.iter_mut().find_map(|n| {
            n.client
                .poll_transmit()
                .or_else(|| n.pinger.poll_transmit())
                .map(|d| (n.address, d))
        })
    }

    /// An ng datagram received from `source`. Anything the node sends — a reply to a ping or
    /// to any command, even one we gave up waiting for — shows it lives.
    pub fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.address == source) {
            n.heard(now);
            // Cookies tell the two clients' replies apart; each ignores the other's.
            n.client.handle_datagram(datagram, now);
            n.pinger.handle_datagram(datagram, now);
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
                let ping = n.pinger.send(&Request::new(RequestKind::Ping), now);
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
                    .silence_started()
                    .filter(|_| n.up)
                    .map(|since| since + n.window(&self.health));
                [
                    n.client.poll_timeout(),
                    n.pinger.poll_timeout(),
                    Some(n.next_ping),
                    window_end,
                ]
            })
            .flatten()
            .min()
    }

    /// Fires retransmissions, timeouts and pings due at `now`, and declares down the nodes
    /// silent for longer than their window.
    pub fn handle_timeout(&mut self, now: Instant) {
        for n in &mut self.nodes {
            n.client.handle_timeout(now);
            n.pinger.handle_timeout(now);
        }
        self.collect_pings(now);
        let ping = Request::new(RequestKind::Ping);
        let health = self.health;
        for (id, n) in self.nodes.iter_mut().enumerate() {
            if n.next_ping <= now {
                if n.pings.len() < MAX_OUTSTANDING_PINGS {
                    let request = n.pinger.send(&ping, now);
                    n.pings.push_back((request, now));
                    n.asked(now);
                }
                n.next_ping = now + health.interval;
            }
            let window = n.window(&health);
            if n.up
                && n.silence_started()
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
            while let Some(event) = n.pinger.poll_event() {
                let (request, answered) = match event {
                    Event::Reply(r, reply) => {
                        (r, matches!(reply.outcome, anchorage_ng::Outcome::Pong))
                    }
                    Event::TimedOut(r) | Event::Failed(r, _) => (r, false),
                };
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
        }
    }

    /// The next change of a node's health.
    pub fn poll_health_change(&mut self) -> Option<HealthChange> {
        self.changes.pop_front()
    }

    /// The next reply or timeout, with the node it came from.
    pub fn poll_event(&mut self) -> Option<(NodeId, Event)> {
        self.nodes
            .iter_mut()
            .enumerate()
            .find_map(|(id, n)| n.client.poll_event().map(|e| (id, e)))
    }
}

/// An `offer` (when `to_tag` is none or the SDP is a new offer in a dialog) or an `answer`.
pub fn offer_answer(
    answer: bool,
    call_id: &str,
    from_tag: &str,
    to_tag: Option<&str>,
    sdp: Bytes,
    flags: &str,
) -> Request {
    let body = OfferAnswer {
        call_id: CallId(call_id.to_string()),
        from_tag: Tag(from_tag.to_string()),
        to_tag: to_tag.map(|t| Tag(t.to_string())),
        via_branch: None,
        sdp,
    };
    Request {
        kind: if answer {
            RequestKind::Answer(body)
        } else {
            RequestKind::Offer(body)
        },
        flags: flags_of(flags),
    }
}

/// `request` (an offer or answer) for one fork branch (`via-branch`): each branch of a parallel
/// fork gets its own relay ports, and a losing branch can be deleted alone.
pub fn on_branch(mut request: Request, via_branch: &str) -> Request {
    if let RequestKind::Offer(body) | RequestKind::Answer(body) = &mut request.kind {
        body.via_branch = Some(anchorage_ng::Branch(via_branch.to_string()));
    }
    request
}

/// A `delete` of one fork branch's session (`from-tag` + `via-branch`).
pub fn delete_branch(call_id: &str, from_tag: &str, via_branch: &str) -> Request {
    Request {
        kind: RequestKind::Delete(Delete {
            call_id: CallId(call_id.to_string()),
            from_tag: Some(Tag(from_tag.to_string())),
            to_tag: None,
            via_branch: Some(anchorage_ng::Branch(via_branch.to_string())),
        }),
        flags: flags_of(""),
    }
}

/// A `delete` of a whole call.
pub fn delete(call_id: &str) -> Request {
    Request {
        kind: RequestKind::Delete(Delete {
            call_id: CallId(call_id.to_string()),
            from_tag: None,
            to_tag: None,
            via_branch: None,
        }),
        flags: flags_of(""),
    }
}

/// The normalised flags of an `rtpp-flags` string.
fn flags_of(rtpp_flags: &str) -> anchorage_ng::Flags {
    let dict = if rtpp_flags.trim().is_empty() {
        Vec::new()
    } else {
        vec![("rtpp-flags".to_string(), Value::text(rtpp_flags))]
    };
    normalise(&dict).1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays() -> Relays {
        let cfg = anchorage_config::parse(
            r#"
[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "a", ng = "127.0.0.1:2223" },
  { name = "b", ng = "127.0.0.1:2224", weight = 2 },
]
"#,
        )
        .unwrap();
        Relays::new(
            &cfg.proxy.relay_set,
            ClientConfig::default(),
            HealthConfig::default(),
            "n1-00000001",
            epoch(),
        )
    }

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    /// Answers every ping queued for node `id` with `pong`.
    fn answer_pings(r: &mut Relays, now: Instant) {
        while let Some((to, datagram)) = r.poll_transmit() {
            let text = String::from_utf8_lossy(&datagram).to_string();
            let cookie = text.split(' ').next().unwrap_or("").to_string();
            if text.contains("4:ping") {
                let reply = format!("{cookie} d6:result4:ponge");
                r.handle_datagram(to, reply.as_bytes(), now);
            }
        }
    }

    #[test]
    fn a_node_goes_down_after_three_missed_pings_and_up_after_three_answered() {
        let t0 = epoch();
        let mut r = relays();
        let ms = std::time::Duration::from_millis;
        // Both nodes answer for a while.
        let mut now = t0;
        for _ in 0..5 {
            r.handle_timeout(now);
            answer_pings(&mut r, now);
            now += ms(200);
        }
        assert_eq!(r.poll_health_change(), None);
        // Node b stops answering: pings time out after 200 ms each; down at the third miss.
        let mut changes = Vec::new();
        for _ in 0..4 {
            r.handle_timeout(now);
            while let Some((to, datagram)) = r.poll_transmit() {
                if to.port() == 2223 {
                    let text = String::from_utf8_lossy(&datagram).to_string();
                    let cookie = text.split(' ').next().unwrap_or("").to_string();
                    r.handle_datagram(to, format!("{cookie} d6:result4:ponge").as_bytes(), now);
                }
            }
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
    fn cookies_carry_the_node_id_and_differ_between_process_starts() {
        let a = cookie_prefix("node one", 1);
        let b = cookie_prefix("node one", 2);
        assert!(a.starts_with("node-one-"), "{a}");
        assert_ne!(a, b, "two starts of one node");
        assert_ne!(cookie_prefix("n1", 7), cookie_prefix("n2", 7), "two nodes");
        // What goes on the wire: the prefix, then the client and node, then a counter.
        let mut r = relays();
        r.handle_timeout(epoch());
        let (_, ping) = r.poll_transmit().unwrap();
        let text = String::from_utf8_lossy(&ping).to_string();
        assert!(text.starts_with("n1-00000001-p0_0 "), "{text}");
    }

    #[test]
    fn new_calls_go_to_the_least_loaded_node_by_weight() {
        let mut r = relays();
        assert_eq!(r.pick("main", &[]), Some(0));
        r.count_call(0, 1);
        assert_eq!(r.pick("main", &[]), Some(1));
        r.count_call(1, 1);
        // a: 1 call / weight 1 = 1.0; b: 1 / 2 = 0.5.
        assert_eq!(r.pick("main", &[]), Some(1));
        r.count_call(1, 1);
        assert_eq!(r.pick("main", &[]), Some(0));
        assert_eq!(r.pick("main", &[0]), Some(1));
        assert_eq!(r.pick("main", &[0, 1]), None);
        assert_eq!(r.pick("nope", &[]), None);
    }

    #[test]
    fn per_leg_policy_options_become_ng_options() {
        let cfg = anchorage_config::parse(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
             [proxy.media]\nset = \"main\"\ncallee_flags = \"replace-origin\"\n\
             caller = { ip = \"203.0.113.5\" }\ncallee = { type = \"RTP/SAVP\", iface = \"pub\" }\n",
        )
        .unwrap();
        let policy = Policy::of(&cfg.proxy.media).unwrap();
        let offer = flags_of(&policy.callee_flags);
        assert!(offer.replace.origin);
        assert_eq!(
            offer.transport_protocol,
            Some(anchorage_ng::TransportProtocol::RtpSavp)
        );
        assert_eq!(
            offer.direction,
            vec!["default".to_string(), "pub".to_string()]
        );
        let answer = flags_of(&policy.caller_flags);
        assert_eq!(answer.media_address, Some("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn requests_carry_the_policy_flags() {
        let offer = offer_answer(
            false,
            "c1",
            "ft",
            None,
            Bytes::from_static(b"v=0\r\n"),
            "replace-origin ICE=remove",
        );
        let RequestKind::Offer(body) = &offer.kind else {
            panic!()
        };
        assert_eq!(body.from_tag.0, "ft");
        assert!(
            offer.flags.unrecognised().is_empty(),
            "{:?}",
            offer.flags.unrecognised()
        );
        let dict = offer.to_dict();
        assert!(dict.iter().any(|(k, _)| k == "command"));
    }
}
