//! Media relays as the proxy drives them — over ng (our relay or rtpengine) or RTPProxy's
//! protocol: relay sets, the choice of a node for a new call, one engine per node with its
//! retransmitting clients, and the engine-neutral requests built from SIP (offer, answer,
//! delete). Sans-IO: datagrams in and out, `now` injected.
//!
//! A new call goes to the node of its set with the least load per unit of weight — not a hash
//! of the Call-ID, so adding a node never moves existing calls. The load is the calls this
//! proxy anchored on the node, plus, for an RTPProxy node, the sessions it reported (`Ib`)
//! beyond those ([`RelayNode::load`]). A node that times out or
//! answers with a capacity error is skipped for that call and the next one is tried.
//!
//! * `health.rs`: how a node is watched — pings, the adaptive silence window, refusals —
//!   and its health changes;
//! * `requests.rs`: the engine-neutral requests built from SIP and their ng form, the media
//!   policy and the cookie prefix;
//! * `engine.rs`: a node's engine (ng or RTPProxy) behind one interface, and the replies;
//! * `rtpproxy.rs`, `rtpproxy_sdp.rs`: the RTPProxy engine — one command per stream — and the
//!   SDP rewrite the proxy does for it.

mod engine;
mod health;
mod requests;
mod rtpproxy;
mod rtpproxy_sdp;

pub use engine::{EngineKind, MediaError, MediaReply, RequestId, UnknownEngine};
pub use health::{DownReason, HealthChange, HealthConfig, RelayNode};
pub use requests::{
    cookie_prefix, delete, delete_branch, offer_answer, on_branch, MediaRequest, Policy, RtppLeg,
    SdpLeg,
};
pub use rtpproxy::MULTI_STREAM_CAPABILITY;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_config::proxy::{RelayEngine, RelaySet};
use anchorage_ng::ClientConfig;
use bytes::Bytes;

use engine::Engine;

/// Index of a node in [`Relays`].
pub type NodeId = usize;

/// The relay nodes and sets of a proxy.
#[derive(Debug, Default)]
pub struct Relays {
    nodes: Vec<RelayNode>,
    sets: HashMap<String, Vec<NodeId>>,
    health: HealthConfig,
    changes: VecDeque<HealthChange>,
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
                // Validation guarantees one engine per node; a node without is skipped.
                let Some(engine) = node.engine() else {
                    continue;
                };
                let address = engine.address();
                let id = match relays.nodes.iter().position(|n| n.address == address) {
                    Some(id) => id,
                    None => {
                        let n = relays.nodes.len();
                        let engine = match engine {
                            RelayEngine::Ng(_) => Engine::ng(client, ping_config, cookie_prefix, n),
                            RelayEngine::Rtpproxy(_) => {
                                let rtpp = |c: ClientConfig| anchorage_rtpp::ClientConfig {
                                    retransmit: c.first_retransmit,
                                    max_transmissions: c.max_transmissions,
                                    timeout: c.timeout,
                                };
                                Engine::Rtpproxy(Box::new(rtpproxy::RtppEngine::new(
                                    address,
                                    rtpp(client),
                                    rtpp(ping_config),
                                    cookie_prefix,
                                    n,
                                    now,
                                )))
                            }
                        };
                        relays.nodes.push(RelayNode {
                            name: node.name.clone(),
                            address,
                            weight: node.weight.max(1),
                            calls: 0,
                            reported: None,
                            cluster_calls: 0,
                            up: true,
                            draining: false,
                            changed_at: now,
                            down_reason: None,
                            engine,
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

    /// The node named `name`, or else the node at that control address as OpenSIPS names
    /// nodes (`udp:IP:PORT`, `udp6:[IPv6]:PORT`, or `IP:PORT`).
    pub fn by_name(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name).or_else(|| {
            let bare = ["udp:", "udp6:"]
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .unwrap_or(name);
            let address: SocketAddr = bare.parse().ok()?;
            self.nodes.iter().position(|n| n.address == address)
        })
    }

    /// The nodes whose engine is not `engine` (none without `engine`): those a move to that
    /// engine must not pick.
    pub fn not_of_engine(&self, engine: Option<EngineKind>) -> Vec<NodeId> {
        let Some(engine) = engine else {
            return Vec::new();
        };
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].engine_kind() != engine)
            .collect()
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

    /// The calls the cluster's other proxy nodes anchored on each relay (by name; a relay
    /// not named has none), from what they publish in the store.
    pub fn set_cluster_calls(&mut self, calls: &std::collections::HashMap<String, u64>) {
        for n in &mut self.nodes {
            n.cluster_calls = calls.get(&n.name).copied().unwrap_or(0);
        }
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
        self.pick_where(set, exclude, |_| true)
    }

    /// As [`Relays::pick`] in the policy's set, among the nodes whose engine can give the
    /// policy's per-leg options (an RTPProxy node cannot make a leg SRTP, for one).
    pub fn pick_for(&self, policy: &Policy, exclude: &[NodeId]) -> Option<NodeId> {
        self.pick_where(&policy.set, exclude, |n| self.fits(n, policy))
    }

    /// Whether `node`'s engine can give `policy`'s per-leg options.
    pub fn fits(&self, node: NodeId, policy: &Policy) -> bool {
        self.nodes.get(node).is_some_and(|n| match n.engine.kind() {
            engine::EngineKind::Rtpproxy => policy.rtpproxy_unfit.is_none(),
            engine::EngineKind::Ng => true,
        })
    }

    /// Whether the policy's set has a node that could take its calls now, were it not busy:
    /// up, not drained, and able to give its per-leg options.
    pub fn has_live_node_for(&self, policy: &Policy) -> bool {
        self.sets.get(&policy.set).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.fits(*id, policy) && self.nodes.get(*id).is_some_and(|n| n.up && !n.draining)
            })
        })
    }

    fn pick_where(
        &self,
        set: &str,
        exclude: &[NodeId],
        eligible: impl Fn(NodeId) -> bool,
    ) -> Option<NodeId> {
        let max_pending = self.health.max_pending;
        self.sets
            .get(set)?
            .iter()
            .copied()
            .filter(|id| !exclude.contains(id) && eligible(*id))
            .filter(|id| {
                self.nodes.get(*id).is_some_and(|n| {
                    n.up && !n.draining && n.engine.capable() && n.engine.pending() < max_pending
                })
            })
            .min_by(|a, b| {
                let load = |id: &NodeId| {
                    self.nodes
                        .get(*id)
                        .map_or(f64::MAX, |n| n.load() as f64 / f64::from(n.weight))
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

    /// Sends `request` to `node`, in its engine's terms.
    pub fn send(
        &mut self,
        node: NodeId,
        request: &MediaRequest,
        now: Instant,
    ) -> Option<RequestId> {
        self.nodes.get_mut(node).map(|n| {
            n.asked(now);
            n.engine.send(request, now)
        })
    }

    /// A call imported from its record has its session on `node` (see `Engine::adopt`).
    pub fn adopt(&mut self, node: NodeId, call_id: &str, offerer_tag: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.engine.adopt(call_id, offerer_tag);
        }
    }

    /// The next control datagram to send, with its destination.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.nodes
            .iter_mut()
            .find_map(|n| n.engine.poll_transmit().map(|d| (n.address, d)))
    }

    /// The next reply or failure of a media request, with the node it came from.
    pub fn poll_event(&mut self) -> Option<(NodeId, MediaReply)> {
        self.nodes
            .iter_mut()
            .enumerate()
            .find_map(|(id, n)| n.engine.poll_event().map(|e| (id, e)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) fn relays() -> Relays {
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
    pub(super) fn epoch() -> Instant {
        Instant::now()
    }

    /// Answers every ping queued for node `id` with `pong`.
    pub(super) fn answer_pings(r: &mut Relays, now: Instant) {
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
    fn a_node_is_found_by_its_name_or_its_control_address_as_opensips_writes_it() {
        let r = relays();
        assert_eq!(r.by_name("b"), Some(1));
        assert_eq!(r.by_name("udp:127.0.0.1:2224"), Some(1));
        assert_eq!(r.by_name("127.0.0.1:2223"), Some(0));
        assert_eq!(r.by_name("udp:127.0.0.1:9"), None);
        assert_eq!(r.by_name("udp:nonsense"), None);
        assert_eq!(r.by_name("c"), None);
        assert_eq!(r.not_of_engine(Some(EngineKind::Ng)), Vec::<NodeId>::new());
        assert_eq!(r.not_of_engine(Some(EngineKind::Rtpproxy)), vec![0, 1]);
        assert_eq!(r.not_of_engine(None), Vec::<NodeId>::new());
        assert_eq!("RTPengine".parse(), Ok(EngineKind::Ng));
        assert_eq!("rtpproxy".parse(), Ok(EngineKind::Rtpproxy));
        assert!("mediaproxy".parse::<EngineKind>().is_err());
    }
}
