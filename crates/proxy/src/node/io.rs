//! What crosses the proxy node's seam: its configuration ([`CoreConfig`], mapped from the
//! configuration file by [`CoreConfig::from_config`]), the sockets it receives on
//! ([`Listener`]), a message in ([`Datagram`]) and out ([`Transmit`]), a host name to resolve
//! (RFC 3263, [`ResolveQuery`]) and its [`Counters`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::routing::Router;
use crate::transaction::TimerConfig;
use crate::Transport;

/// A socket the proxy receives on, and the address it advertises for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// UDP or TCP.
    pub transport: Transport,
    /// The bound address.
    pub local: SocketAddr,
    /// Host written in Via and Record-Route (the advertised address, or the bound IP).
    pub advertise_host: String,
    /// Port written in Via and Record-Route.
    pub advertise_port: u16,
}

/// Configuration of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This node's id, written in the `nid` Via parameter.
    pub node_id: String,
    /// Listeners; at least one.
    pub listeners: Vec<Listener>,
    /// Transaction timers.
    pub timers: TimerConfig,
    /// Routing rules for initial requests.
    pub router: Router,
    /// Dialogs older than this end.
    pub dialog_max_age: Duration,
    /// Media relay sets.
    pub relay_sets: Vec<anchorage_config::proxy::RelaySet>,
    /// Media policy of calls whose routing rule sets none.
    pub default_media: anchorage_config::proxy::MediaPolicy,
    /// ng client retransmission and timeout.
    pub ng_client: anchorage_ng::ClientConfig,
    /// Relay health checks.
    pub relay_health: crate::media::HealthConfig,
    /// Re-anchoring pacing and fallback.
    pub reanchor: anchorage_config::proxy::Reanchor,
    /// The per-source request rate limit.
    pub flood: anchorage_config::proxy::Flood,
    /// `[proxy.overload]`: load shedding bounds and the `Retry-After` of every 503.
    pub overload: anchorage_config::proxy::Overload,
    /// How long a message about a call not held here waits for the store to load it: twice
    /// `[cluster] timeout_ms`, the store's own bound on a read, so the store's answer (a record
    /// or its timeout) normally comes first and this is the backstop.
    pub load_timeout: Duration,
    /// How long the changes of a call gather before its record comes out of
    /// [`Proxy::poll_output`](crate::node::Proxy::poll_output) (`[cluster] write_delay_ms`;
    /// zero: after every event).
    pub record_delay: Duration,
    /// `[cluster] mode = "active-active"`: the cluster's name (host, port), written in
    /// Record-Route instead of the listener's address so any node gets in-dialog requests.
    pub cluster_name: Option<(String, u16)>,
}

impl CoreConfig {
    /// The core's configuration from a configuration file (`[node]` and `[proxy]`), with the
    /// listeners the I/O layer bound.
    pub fn from_config(config: &anchorage_config::Config, listeners: Vec<Listener>) -> CoreConfig {
        let p = &config.proxy;
        CoreConfig {
            node_id: config.node.id.clone(),
            listeners,
            timers: TimerConfig {
                t1: Duration::from_millis(p.timers.t1_ms),
                t2: Duration::from_millis(p.timers.t2_ms),
                t4: Duration::from_millis(p.timers.t4_ms),
                timer_c: Duration::from_millis(p.timers.timer_c_ms),
                ..TimerConfig::default()
            },
            router: Router::new(p.route.clone()),
            dialog_max_age: Duration::from_secs(p.dialog.max_age_s),
            relay_sets: p.relay_set.clone(),
            default_media: p.media.clone(),
            ng_client: anchorage_ng::ClientConfig::default(),
            relay_health: crate::media::HealthConfig {
                interval: Duration::from_millis(p.relay_health.interval_ms),
                down_after: p.relay_health.down_after,
                up_after: p.relay_health.up_after,
                max_window: Duration::from_millis(p.relay_health.max_window_ms),
                max_pending: p.overload.max_pending_ng,
            },
            reanchor: p.reanchor.clone(),
            flood: p.flood.clone(),
            overload: p.overload.clone(),
            load_timeout: Duration::from_millis(config.cluster.timeout_ms.saturating_mul(2)),
            record_delay: Duration::from_millis(config.cluster.write_delay_ms),
            cluster_name: (config.cluster.mode == anchorage_config::ClusterMode::ActiveActive)
                .then(|| config.cluster.name_parts())
                .flatten(),
        }
    }
}

/// A message received from the network.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// The message bytes.
    pub data: Bytes,
    /// The packet's source.
    pub source: SocketAddr,
    /// The local socket it arrived on.
    pub local: SocketAddr,
    /// Its transport.
    pub transport: Transport,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The bytes.
    pub data: Bytes,
    /// Destination.
    pub destination: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Local socket to send from, if it matters.
    pub local: Option<SocketAddr>,
}

/// A moment as both clocks see it: the monotonic clock for every deadline, and the wall clock
/// to write out when things happened (a call's start, a job's start) — what a call record
/// that leaves the process needs. The driver reads both at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub mono: Instant,
    /// Wall-clock time in UNIX microseconds.
    pub unix_us: i64,
}

/// Something the core wants done, from [`Proxy::poll_output`](crate::node::Proxy::poll_output): the driver's one loop over
/// what leaves the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An ng datagram for the relay at `relay` (sent on the socket connected to it).
    Ng {
        /// The relay's ng address.
        relay: SocketAddr,
        /// The datagram.
        datagram: Bytes,
    },
    /// A host name to resolve.
    Resolve(ResolveQuery),
    /// A SIP message to send.
    Sip(Transmit),
    /// A call changed: its latest record, for the store (once per event; only with record
    /// keeping on).
    CallChanged(Box<crate::node::record::CallRecord>),
    /// A call ended: its record goes.
    CallEnded(String),
    /// A call's record that must be in the store before the core goes on (a move about to
    /// send its re-INVITEs, with the CSeq numbers it reserves): write it durably, then call
    /// [`Proxy::handle_saved`](crate::node::Proxy::handle_saved) — also when writing failed.
    SaveDurable(Box<crate::node::record::CallRecord>),
    /// Messages arrived about a call this node does not hold: read its record from the store
    /// and hand it to [`Proxy::handle_loaded`](crate::node::Proxy::handle_loaded) (`None`
    /// when the store has none or cannot be read) — the messages wait for it.
    LoadCall(String),
    /// A relay session to delete when its relay comes back (the relay is down now), or the
    /// relay's list done with: for the store, so a node that takes this node's calls over
    /// deletes them too (only with record keeping on).
    Orphan(OrphanChange),
}

/// A change of the sessions waiting for their relay to come back to be deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrphanChange {
    /// Call `call_id`'s session on relay `relay` is to be deleted when the relay is back.
    Added {
        /// The relay node, by name.
        relay: String,
        /// The call.
        call_id: String,
    },
    /// Relay `relay` is back: its sessions to delete were deleted.
    Cleared {
        /// The relay node, by name.
        relay: String,
    },
}

/// A host name the core needs resolved (RFC 3263): answer with [`Proxy::handle_resolved`](crate::node::Proxy::handle_resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveQuery {
    /// Identifies the query in [`Proxy::handle_resolved`](crate::node::Proxy::handle_resolved).
    pub id: u64,
    /// The host name.
    pub name: String,
    /// The port, if given; `None`: look up SRV (`_sip._udp` / `_sip._tcp`) first, then A/AAAA
    /// with port 5060 (RFC 3263 §4.2).
    pub port: Option<u16>,
    /// The transport of the request.
    pub transport: Transport,
}

/// Counters of the core, for metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Requests received (including retransmissions).
    pub requests: u64,
    /// Responses received.
    pub responses: u64,
    /// Messages dropped because they could not be parsed or answered.
    pub dropped: u64,
    /// Requests answered 4xx/5xx by the proxy itself.
    pub rejected: u64,
    /// Requests forwarded statelessly (CANCEL/ACK without transaction).
    pub stateless_requests: u64,
    /// Responses forwarded statelessly (no client transaction).
    pub stateless_responses: u64,
    /// Requests forwarded to the node that owns their call (active-active).
    pub forwarded_to_owner: u64,
    /// Requests dropped because their source went over the rate limit (`[proxy.flood]`).
    pub flood_dropped: u64,
    /// Times a source was blocked by the rate limit.
    pub flood_blocks: u64,
    /// Requests dropped for their User-Agent (`[proxy.flood] drop_user_agents`).
    pub user_agent_dropped: u64,
    /// New INVITEs answered 503 because the proxy was over a `[proxy.overload]` bound.
    pub overload_rejected: u64,
    /// Calls asked of the store because a message arrived about one not held here.
    pub load_requests: u64,
    /// Calls loaded from the store on demand.
    pub calls_loaded: u64,
    /// Loads the store had no record for (or could not read).
    pub load_misses: u64,
    /// Loads the store did not answer within the load timeout (their messages went on).
    pub load_timeouts: u64,
    /// Messages handled at once because the parking was full.
    pub parking_full: u64,
}
