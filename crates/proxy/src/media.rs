//! Media relays as the proxy drives them over ng (our relay or rtpengine): relay sets, the
//! choice of a node for a new call, one retransmitting ng client per node, and the ng requests
//! built from SIP (offer, answer, delete). Sans-IO: datagrams in and out, `now` injected.
//!
//! A new call goes to the node of its set with the fewest calls per unit of weight — not a hash
//! of the Call-ID, so adding a node never moves existing calls. A node that times out or
//! answers with a capacity error is skipped for that call and the next one is tried.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

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
    client: Client,
    /// Health pings, on a client of their own: one transmission, the interval as timeout.
    pinger: Client,
    ping: Option<RequestId>,
    next_ping: Instant,
    misses: u32,
    successes: u32,
}

/// How relay nodes are watched (`[proxy.relay_health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Ping interval and ping timeout.
    pub interval: std::time::Duration,
    /// Missed pings in a row that make a node down.
    pub down_after: u32,
    /// Answered pings in a row that make a down node up.
    pub up_after: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: std::time::Duration::from_millis(200),
            down_after: 3,
            up_after: 3,
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

/// The relay nodes and sets of a proxy.
#[derive(Debug, Default)]
pub struct Relays {
    nodes: Vec<RelayNode>,
    sets: HashMap<String, Vec<NodeId>>,
    health: HealthConfig,
    changes: std::collections::VecDeque<HealthChange>,
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
    pub fn new(
        sets: &[RelaySet],
        client: ClientConfig,
        health: HealthConfig,
        now: Instant,
    ) -> Relays {
        let mut relays = Relays {
            health,
            ..Relays::default()
        };
        let ping_config = ClientConfig {
            first_retransmit: health.interval,
            max_transmissions: 1,
            timeout: health.interval,
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
                            client: Client::new(client, &format!("anc{n}")),
                            pinger: Client::new(ping_config, &format!("anp{n}")),
                            ping: None,
                            next_ping: now,
                            misses: 0,
                            successes: 0,
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

    /// The least loaded healthy, undrained node of `set` not in `exclude`.
    pub fn pick(&self, set: &str, exclude: &[NodeId]) -> Option<NodeId> {
        self.sets
            .get(set)?
            .iter()
            .copied()
            .filter(|id| !exclude.contains(id))
            .filter(|id| self.nodes.get(*id).is_some_and(|n| n.up && !n.draining))
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

    /// Sends `request` to `node`.
    pub fn send(&mut self, node: NodeId, request: &Request, now: Instant) -> Option<RequestId> {
        self.nodes
            .get_mut(node)
            .map(|n| n.client.send(request, now))
    }

    /// The next ng datagram to send, with its destination.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Bytes)> {
        self.nodes.iter_mut().find_map(|n| {
            n.client
                .poll_transmit(now)
                .or_else(|| n.pinger.poll_transmit(now))
                .map(|d| (n.address, d))
        })
    }

    /// An ng datagram received from `source`.
    pub fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.address == source) {
            // Cookies tell the two clients' replies apart; each ignores the other's.
            n.client.handle_datagram(datagram, now);
            n.pinger.handle_datagram(datagram, now);
        }
        self.collect_pings(now);
    }

    /// The earliest retransmission, timeout or ping.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .flat_map(|n| {
                [
                    n.client.poll_timeout(),
                    n.pinger.poll_timeout(),
                    Some(n.next_ping),
                ]
            })
            .flatten()
            .min()
    }

    /// Fires retransmissions, timeouts and pings due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for n in &mut self.nodes {
            n.client.handle_timeout(now);
            n.pinger.handle_timeout(now);
        }
        self.collect_pings(now);
        let ping = Request::new(RequestKind::Ping);
        for n in &mut self.nodes {
            if n.ping.is_none() && n.next_ping <= now {
                n.ping = Some(n.pinger.send(&ping, now));
                n.next_ping = now + self.health.interval;
            }
        }
    }

    /// Counts ping replies and misses; queues health changes.
    fn collect_pings(&mut self, now: Instant) {
        for (id, n) in self.nodes.iter_mut().enumerate() {
            while let Some(event) = n.pinger.poll_event() {
                let (request, answered) = match event {
                    Event::Reply(r, reply) => {
                        (r, matches!(reply.outcome, anchorage_ng::Outcome::Pong))
                    }
                    Event::TimedOut(r) | Event::Failed(r, _) => (r, false),
                };
                if n.ping != Some(request) {
                    continue;
                }
                n.ping = None;
                if answered {
                    n.misses = 0;
                    n.successes = n.successes.saturating_add(1);
                    if !n.up && n.successes >= self.health.up_after {
                        n.up = true;
                        n.changed_at = now;
                        self.changes.push_back(HealthChange { node: id, up: true });
                    }
                } else {
                    n.successes = 0;
                    n.misses = n.misses.saturating_add(1);
                    if n.up && n.misses >= self.health.down_after {
                        n.up = false;
                        n.changed_at = now;
                        self.changes.push_back(HealthChange {
                            node: id,
                            up: false,
                        });
                    }
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
            epoch(),
        )
    }

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    /// Answers every ping queued for node `id` with `pong`.
    fn answer_pings(r: &mut Relays, now: Instant) {
        while let Some((to, datagram)) = r.poll_transmit(now) {
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
            while let Some((to, datagram)) = r.poll_transmit(now) {
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
