//! The stateful proxy core (RFC 3261 §16), sans-IO.
//!
//! Where a datagram enters: [`Proxy::handle_datagram`]. Where a transaction is matched:
//! `on_request` (server side, by [`ServerKey`]) and `on_response` (client side, by the branch
//! of our Via). What it sends comes out of [`Proxy::poll_transmit`]; when it must be woken,
//! [`Proxy::poll_timeout`], then [`Proxy::handle_timeout`].
//!
//! ```text
//!  UAC ──request──► server tx ──► route (§16.4–16.5) ──► client tx ──request──► next hop
//!  UAC ◄─response── server tx ◄── choose/forward (§16.7) ◄── client tx ◄─response── next hop
//! ```
//!
//! Requests that match no transaction but belong to one elsewhere — a CANCEL or the ACK of a
//! non-2xx response whose INVITE another node forwarded — are forwarded statelessly with the
//! same deterministic branch that node used ([`crate::via`]), and responses with no client
//! transaction are forwarded statelessly by their Via, so calls survive the loss of a node.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_sip::{HeaderName, Host, Message, Method, RequestBuilder, Uri};
use bytes::Bytes;

use crate::dialog::Dialogs;
use crate::flood::{self, FloodGuard};
use crate::media::{self, NodeId, Policy, Relays};

mod reanchor;
mod timers;
mod waiting;
use crate::routing::{
    default_reason, Decision, FailoverPolicy, RequestFacts, Router, Target, TargetHost,
};
use crate::transaction::{
    Action, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TimerConfig,
};
use crate::via;
use crate::Transport;
pub use reanchor::ReanchorMetrics;
use timers::TimerQueue;

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

/// A host name the core needs resolved (RFC 3263): answer with [`Proxy::handle_resolved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveQuery {
    /// Identifies the query in [`Proxy::handle_resolved`].
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
    /// Requests dropped because their source went over the rate limit (`[proxy.flood]`).
    pub flood_dropped: u64,
    /// Times a source was blocked by the rate limit.
    pub flood_blocks: u64,
    /// Requests dropped for their User-Agent (`[proxy.flood] drop_user_agents`).
    pub user_agent_dropped: u64,
    /// New INVITEs answered 503 because the proxy was over a `[proxy.overload]` bound.
    pub overload_rejected: u64,
}

/// The methods this proxy forwards (any method is forwarded; these are the ones it knows),
/// listed in the `Allow` of its answer to an OPTIONS addressed to itself.
const PROXIED_METHODS: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE";

/// The Call-ID of an INVITE or UPDATE (the requests that carry offers a move must wait for).
fn offer_call_id(req: &Message) -> Option<String> {
    matches!(req.method(), Some(Method::Invite | Method::Update))
        .then(|| req.call_id().ok().map(str::to_string))
        .flatten()
}

/// Server transaction key: the top Via's branch and sent-by, and the method (ACK and CANCEL
/// are looked up against their INVITE explicitly).
type ServerKey = (String, String, String);

enum ServerMachine {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerTx {
    machine: ServerMachine,
    /// The request as received.
    request: Message,
    source: SocketAddr,
    local: SocketAddr,
    transport: Transport,
    /// Last response sent upstream, for retransmission.
    last_response: Option<Bytes>,
    /// Status of the final response sent, if any.
    final_status: Option<u16>,
    /// Client branches created for this request (one at a time when serial).
    branches: Vec<String>,
    /// Remaining targets of the destination set.
    remaining: VecDeque<Target>,
    failover: Option<FailoverPolicy>,
    /// Best final response received so far (already without our Via).
    best: Option<(u16, Bytes)>,
    /// A CANCEL was received for this INVITE.
    cancelled: bool,
    /// Version of the scheduled wake-up (lazy deletion in the timer heap).
    scheduled: Option<Instant>,
}

enum ClientMachine {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

struct ClientTx {
    machine: ClientMachine,
    /// The request as sent.
    request: Message,
    destination: SocketAddr,
    transport: Transport,
    server: ServerKey,
    provisional_received: bool,
    /// CANCEL wanted but no provisional response yet (§9.1: wait for one).
    cancel_pending: bool,
    /// No response at all by then: move to the next destination.
    failover_deadline: Option<Instant>,
    /// The branch was given up (failover or cancel); only a 2xx is still forwarded.
    abandoned: bool,
    /// A final response (or a failure standing for one) was received on this branch.
    completed: bool,
    scheduled: Option<Instant>,
}

/// What a deadline in the [`TimerQueue`] is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerRef {
    Server(ServerKey),
    Client(String),
    Dialogs,
    /// One of our own requests (re-anchoring re-INVITEs, BYEs).
    Own(String),
    /// A call being re-anchored (idle wait, 491 back-off, deadline).
    Move(String),
    /// Pacing of queued re-anchoring moves.
    Pace,
    /// Calls waiting for a relay that have waited past `[proxy.reanchor] give_up_s`.
    WaitingGiveUp,
    /// Calls waiting for a relay are looked at again.
    WaitingRetry,
}

/// The proxy core.
pub struct Proxy {
    config: CoreConfig,
    /// Boxed: a transaction holds its request (a few hundred bytes); the maps move only
    /// pointers when they insert and grow.
    servers: HashMap<ServerKey, Box<ServerTx>>,
    clients: HashMap<String, Box<ClientTx>>,
    timers: TimerQueue,
    flood: FloodGuard,
    out: VecDeque<Transmit>,
    dialogs: Dialogs,
    counters: Counters,
    /// Our sent-by values, for loop detection and recognising our Vias.
    ours: Vec<(String, u16)>,
    rng_state: u64,
    dialog_sweep: Option<Instant>,
    /// The response being handled while a client transaction's actions are drained.
    pending_response: Option<Message>,
    /// Host names to resolve, and the requests waiting for them.
    resolve_queries: VecDeque<ResolveQuery>,
    waiting_for_resolution: HashMap<u64, ServerKey>,
    next_query_id: u64,
    /// Media relays, the calls anchored on them, and ng requests awaiting a reply.
    relays: Relays,
    call_media: HashMap<String, CallMedia>,
    media_waits: HashMap<(NodeId, anchorage_ng::RequestId), MediaWait>,
    /// Re-anchoring: calls being moved, jobs, our own transactions, pacing and counters.
    moves: HashMap<String, reanchor::CallMove>,
    jobs: std::collections::BTreeMap<u64, reanchor::Job>,
    next_job: u64,
    own: HashMap<String, reanchor::OwnTx>,
    own_counter: u64,
    move_results: HashMap<(crate::reanchor::Trigger, crate::reanchor::MoveResult), u64>,
    move_durations: Vec<u64>,
    move_duration_sum: f64,
    move_duration_count: u64,
    pace_tokens: f64,
    pace_at: Instant,
    /// Calls moved off a node while it was down: their sessions there are deleted when it is
    /// back up.
    orphans: HashMap<NodeId, Vec<String>>,
    /// A move ended or a slot freed: queued moves are pumped before the event returns. Moves
    /// are never started from inside the code that ends one (no recursion through the queue).
    pump_due: bool,
    /// The pace timer set, if any (one at a time).
    pace_timer: Option<Instant>,
    /// Calls whose relay died while no node could take them, with since when they wait.
    waiting: HashMap<String, Instant>,
    /// The same calls in the order they started waiting (for the give-up time); entries of
    /// calls no longer waiting are skipped when met.
    waiting_order: VecDeque<(Instant, String)>,
    /// The give-up timer set, if any.
    give_up_timer: Option<Instant>,
    /// Calls taken from `waiting` into a job that has not started their move yet.
    resuming: std::collections::HashSet<String>,
    /// The waiting-retry timer set, if any.
    retry_timer: Option<Instant>,
    /// INVITE and UPDATE server transactions without a final response, per Call-ID: a move
    /// waits until its call has none (looked up, never scanned for).
    open_offers: HashMap<String, u32>,
    /// How long the messages of the driver's latest batch waited before the core saw them.
    input_delay: Duration,
}

/// Where a call's media is anchored.
#[derive(Debug, Clone)]
struct CallMedia {
    node: NodeId,
    policy: Policy,
    /// The caller's tag: tells which leg an SDP comes from.
    caller_tag: String,
    caller: LegMedia,
    callee: LegMedia,
    /// A late offer went out in a 2xx: the ACK carries the answer.
    answer_in_ack: bool,
    /// A late offer went out in a reliable provisional response: the PRACK carries the answer
    /// (RFC 3262 §5).
    answer_in_prack: bool,
    /// The branches of a parallel fork, each with its own relay session (`via-branch`), until a
    /// 2xx picks one.
    forks: Vec<ForkBranch>,
}

/// One branch of a forked INVITE with media.
#[derive(Debug, Clone)]
struct ForkBranch {
    /// The `via-branch` given to the relay.
    via_branch: String,
    /// Our client transaction's branch for it.
    client_branch: Option<String>,
    /// The offer SDP this branch's callee got.
    sent: Option<Bytes>,
}

impl CallMedia {
    /// (the leg with `tag`, the other leg).
    fn legs_from(&mut self, tag: &str) -> (&mut LegMedia, &mut LegMedia) {
        if tag == self.caller_tag {
            (&mut self.caller, &mut self.callee)
        } else {
            (&mut self.callee, &mut self.caller)
        }
    }
}

/// What the proxy knows of one leg's media: what re-anchoring needs to rebuild the session on
/// another relay and to give the leg an SDP it will accept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegMedia {
    /// The last SDP received from this leg, as it sent it.
    pub received: Option<Bytes>,
    /// The last SDP sent to this leg (the relay's rewrite).
    pub sent: Option<Bytes>,
    /// The `o=` username, session id and version of `sent`.
    pub origin_sent: Option<(String, String, u64)>,
}

impl LegMedia {
    fn record_sent(&mut self, sdp: &Bytes) {
        self.origin_sent = anchorage_sdp::Session::parse(sdp.clone())
            .ok()
            .and_then(|s| {
                s.origin().ok().map(|o| {
                    (
                        o.username.to_string(),
                        o.session_id.to_string(),
                        o.session_version,
                    )
                })
            });
        self.sent = Some(sdp.clone());
    }
}

/// A call anchored on a relay, as the management API and re-anchoring see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchoredCall {
    /// The relay node's name.
    pub node: String,
    /// The relay set.
    pub set: String,
    /// The caller's media.
    pub caller: LegMedia,
    /// The callee's media.
    pub callee: LegMedia,
}

/// The tag of a From or To header, or "".
fn tag_of(header: Result<anchorage_sip::NameAddr<'_>, anchorage_sip::ParseError>) -> String {
    header.ok().and_then(|h| h.tag()).unwrap_or("").to_string()
}

/// What an ng request was sent for.
enum MediaWait {
    /// An offer for the request of a server transaction; `tried` nodes failed already.
    Offer {
        key: ServerKey,
        policy: Policy,
        tried: Vec<NodeId>,
        initial: bool,
    },
    /// An answer for a response to the request of a server transaction.
    Answer {
        key: ServerKey,
        status: u16,
        response: Box<Message>,
    },
    /// A late offer: the offer in a response to a request without SDP (RFC 3264 §5); the
    /// answer will come in the ACK.
    ResponseOffer {
        key: ServerKey,
        status: u16,
        response: Box<Message>,
        policy: Policy,
        /// The call is anchored by this offer.
        initial: bool,
    },
    /// The answer in the ACK to a late offer, held until the relay rewrote it.
    AckAnswer {
        ack: Box<Message>,
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
    },
    /// A delete (or a relay update); nothing waits for it.
    Delete,
    /// The new node's offer for a call being re-anchored.
    ReanchorOffer { call_id: String },
    /// The new node's answer for a call being re-anchored.
    ReanchorAnswer { call_id: String },
    /// The offer for one target of a parallel fork (its own relay session).
    ForkOffer {
        key: ServerKey,
        target: Target,
        via_branch: String,
        policy: Policy,
    },
    /// A party's answer to a move changed its codecs: the relay's rewrite goes to the other
    /// party in a follow-up offer.
    FollowUp {
        call_id: String,
        party: crate::reanchor::Party,
    },
}

impl Proxy {
    /// A proxy with this configuration, started at `now`; `seed` drives weighted destination
    /// choice.
    pub fn new(config: CoreConfig, seed: u64, now: Instant) -> Proxy {
        let ours = config
            .listeners
            .iter()
            .map(|l| (l.advertise_host.clone(), l.advertise_port))
            .collect();
        let flood = FloodGuard::new(config.flood.clone());
        let relays = Relays::new(
            &config.relay_sets,
            config.ng_client,
            config.relay_health,
            &media::cookie_prefix(&config.node_id, seed),
            now,
        );
        Proxy {
            config,
            servers: HashMap::new(),
            clients: HashMap::new(),
            timers: TimerQueue::default(),
            flood,
            out: VecDeque::new(),
            dialogs: Dialogs::default(),
            counters: Counters::default(),
            ours,
            rng_state: seed | 1,
            dialog_sweep: None,
            pending_response: None,
            resolve_queries: VecDeque::new(),
            waiting_for_resolution: HashMap::new(),
            next_query_id: 1,
            relays,
            call_media: HashMap::new(),
            media_waits: HashMap::new(),
            moves: HashMap::new(),
            jobs: std::collections::BTreeMap::new(),
            next_job: 1,
            own: HashMap::new(),
            own_counter: 0,
            move_results: HashMap::new(),
            move_durations: vec![0; reanchor::DURATION_BOUNDS.len()],
            move_duration_sum: 0.0,
            move_duration_count: 0,
            pace_tokens: 1.0,
            pace_at: now,
            orphans: HashMap::new(),
            pump_due: false,
            pace_timer: None,
            waiting: HashMap::new(),
            waiting_order: VecDeque::new(),
            give_up_timer: None,
            resuming: std::collections::HashSet::new(),
            retry_timer: None,
            open_offers: HashMap::new(),
            input_delay: Duration::ZERO,
        }
    }

    /// The dialogs this node knows (for the management API).
    pub fn dialogs(&self) -> &Dialogs {
        &self.dialogs
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Whether `[proxy.flood]`'s rate limit is on.
    pub fn flood_enabled(&self) -> bool {
        self.flood.enabled()
    }

    /// The sources `[proxy.flood]` blocks at `now`, with the time left.
    pub fn flood_blocked(&self, now: Instant) -> Vec<(std::net::IpAddr, Duration)> {
        self.flood.blocked_sources(now)
    }

    /// Ends the block of a source at once; `false` if it was not blocked.
    pub fn flood_unblock(&mut self, source: std::net::IpAddr, now: Instant) -> bool {
        self.flood.unblock(source, now)
    }

    /// Live server and client transactions.
    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Entries in the timer queue (live deadlines and stale ones not yet popped).
    pub fn timer_queue_len(&self) -> usize {
        self.timers.len()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next host name to resolve.
    pub fn poll_resolve(&mut self) -> Option<ResolveQuery> {
        self.resolve_queries.pop_front()
    }

    /// The addresses of a resolved name, in the order to try them (RFC 3263: SRV priority and
    /// weight, then A/AAAA), or the failure. The request that waited goes on.
    pub fn handle_resolved(
        &mut self,
        id: u64,
        result: Result<Vec<(SocketAddr, Transport)>, String>,
        now: Instant,
    ) {
        let Some(key) = self.waiting_for_resolution.remove(&id) else {
            return;
        };
        self.on_resolved(key, result, now);
        self.settle(now);
    }

    fn on_resolved(
        &mut self,
        key: ServerKey,
        result: Result<Vec<(SocketAddr, Transport)>, String>,
        now: Instant,
    ) {
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                for (addr, transport) in addrs.into_iter().rev() {
                    tx.remaining.push_front(Target {
                        host: TargetHost::Ip(addr.ip()),
                        port: addr.port(),
                        transport,
                        srv: false,
                    });
                }
            }
            Ok(_) | Err(_) => {
                if let Err(reason) = &result {
                    tracing::info!(call_id = tx.request.call_id().unwrap_or(""), %reason, "resolution failed");
                }
                if tx.best.is_none() {
                    tx.best = Some((503, Bytes::new()));
                }
            }
        }
        self.try_next_target(&key, now);
    }

    /// When [`Proxy::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.next_deadline();
        match (own, self.relays.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The relay nodes, with the calls anchored on each.
    pub fn relays(&self) -> &Relays {
        &self.relays
    }

    /// How relay nodes are watched (for [`media::RelayNode::window`]).
    pub fn relay_health(&self) -> media::HealthConfig {
        self.config.relay_health
    }

    /// Where a call's media is anchored and the SDPs of its legs, if it is anchored.
    pub fn anchored_call(&self, call_id: &str) -> Option<AnchoredCall> {
        let call = self.call_media.get(call_id)?;
        Some(AnchoredCall {
            node: self.relays.nodes().get(call.node)?.name.clone(),
            set: call.policy.set.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        })
    }

    /// The next ng datagram to send to a relay.
    pub fn poll_ng_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Bytes)> {
        self.relays.poll_transmit(now)
    }

    /// An ng datagram received from a relay.
    pub fn handle_ng_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        self.relays.handle_datagram(source, datagram, now);
        self.drain_relay_events(now);
        self.settle(now);
    }

    /// Sending to or receiving from the relay at `address` failed with "connection refused"
    /// (the driver sends ng on a socket connected to each relay, so the ICMP port unreachable
    /// of a dead relay process comes back as this error). Confirmed by a second refusal, the
    /// node is down at once.
    pub fn handle_relay_refused(&mut self, address: SocketAddr, now: Instant) {
        self.relays.handle_refused(address, now);
        self.drain_relay_events(now);
        self.settle(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.relays.handle_timeout(now);
        self.drain_relay_events(now);
        while let Some(which) = self.timers.pop_due(now) {
            match which {
                TimerRef::Server(key) => {
                    let Some(tx) = self.servers.get_mut(&key) else {
                        continue;
                    };
                    tx.scheduled = None;
                    match &mut tx.machine {
                        ServerMachine::Invite(m) => m.handle_timeout(now),
                        ServerMachine::NonInvite(m) => m.handle_timeout(now),
                    }
                    self.drain_server(&key, now);
                }
                TimerRef::Client(branch) => {
                    let Some(tx) = self.clients.get_mut(&branch) else {
                        continue;
                    };
                    tx.scheduled = None;
                    let failover_due = tx.failover_deadline.is_some_and(|d| d <= now);
                    match &mut tx.machine {
                        ClientMachine::Invite(m) => m.handle_timeout(now),
                        ClientMachine::NonInvite(m) => m.handle_timeout(now),
                    }
                    if failover_due {
                        self.on_failover_timeout(&branch, now);
                    }
                    self.drain_client(&branch, now);
                }
                TimerRef::Dialogs => {
                    self.dialog_sweep = None;
                    // A dialog at its maximum age ends, and so does its call's relay session.
                    for call_id in self.dialogs.expire(now, self.config.dialog_max_age) {
                        if self.call_media.contains_key(&call_id) {
                            tracing::info!(%call_id, "dialog reached its maximum age: deleting its relay session");
                            self.delete_media(&call_id, now);
                        }
                    }
                    self.schedule_dialog_sweep(now);
                }
                TimerRef::Own(branch) => self.own_timeout(&branch, now),
                TimerRef::Move(call_id) => self.step_move(&call_id, now),
                TimerRef::Pace => {
                    self.pace_timer = None;
                    self.pump_due = true;
                }
                TimerRef::WaitingGiveUp => {
                    self.give_up_timer = None;
                    self.give_up_waiting(now);
                }
                TimerRef::WaitingRetry => self.on_waiting_retry(now),
            }
        }
        self.settle(now);
    }

    /// How long the messages now being handed in waited in the driver's input queue (from
    /// the socket read to [`Proxy::handle_datagram`]). Over `[proxy.overload]
    /// max_queue_delay_ms`, new INVITEs are answered 503 until the queue catches up.
    pub fn set_input_delay(&mut self, delay: Duration) {
        self.input_delay = delay;
    }

    /// Handles one received message.
    pub fn handle_datagram(&mut self, d: Datagram, now: Instant) {
        self.on_datagram(d, now);
        self.settle(now);
    }

    fn on_datagram(&mut self, d: Datagram, now: Instant) {
        let parsed = Message::parse(d.data.clone());
        // Everything but a response counts against its source's rate, garbage included.
        let response = matches!(&parsed, Ok(m) if !m.is_request());
        if !response && !self.flood_allows(&d, now) {
            return;
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.reject_unparsable(&d, &e);
                return;
            }
        };
        if msg.is_request() {
            self.counters.requests += 1;
            if self.dropped_user_agent(&msg) {
                self.counters.user_agent_dropped += 1;
                return;
            }
            if let Err(e) = msg.validate() {
                self.reject_unparsable(&d, &e);
                return;
            }
            self.on_request(msg, &d, now);
        } else {
            self.counters.responses += 1;
            if msg.validate().is_err() {
                self.counters.dropped += 1;
                return;
            }
            self.on_response(msg, now);
        }
    }

    /// The `[proxy.flood]` verdict for a request from `d`'s source: counted, and logged once
    /// when the source gets blocked.
    fn flood_allows(&mut self, d: &Datagram, now: Instant) -> bool {
        match self.flood.check(d.source.ip(), now) {
            flood::Verdict::Pass => true,
            flood::Verdict::Drop { newly_blocked } => {
                self.counters.flood_dropped += 1;
                if newly_blocked {
                    self.counters.flood_blocks += 1;
                    tracing::warn!(
                        source = %d.source.ip(),
                        block_s = self.config.flood.block_s,
                        "request rate limit exceeded: dropping this source's requests"
                    );
                }
                false
            }
        }
    }

    /// Whether the request's User-Agent names one of `[proxy.flood] drop_user_agents`.
    fn dropped_user_agent(&self, msg: &Message) -> bool {
        let names = &self.config.flood.drop_user_agents;
        if names.is_empty() {
            return false;
        }
        msg.headers_named(b"User-Agent").any(|h| {
            let ua = String::from_utf8_lossy(h.value()).to_ascii_lowercase();
            names
                .iter()
                .any(|n| ua.contains(&n.trim().to_ascii_lowercase()))
        })
    }

    // ---------------------------------------------------------------- requests

    fn on_request(&mut self, req: Message, d: &Datagram, now: Instant) {
        let Some(method) = req.method() else {
            self.counters.dropped += 1;
            return;
        };
        let Some(key) = server_key(&req, method_key(&method)) else {
            self.counters.dropped += 1;
            return;
        };
        // Retransmission, or ACK of a non-2xx response sent by this transaction.
        if method == Method::Ack {
            let invite_key = (key.0.clone(), key.1.clone(), "INVITE".to_string());
            if let Some(tx) = self.servers.get_mut(&invite_key) {
                if let ServerMachine::Invite(m) = &mut tx.machine {
                    if tx.final_status.is_some_and(|s| s >= 300) {
                        m.handle_ack(now);
                        self.drain_server(&invite_key, now);
                        return;
                    }
                }
            }
            if !self.start_ack_answer(&req, d, now) {
                self.forward_stateless(req, d, now);
            }
            return;
        }
        if let Some(tx) = self.servers.get_mut(&key) {
            match &mut tx.machine {
                ServerMachine::Invite(m) => m.handle_request_retransmission(now),
                ServerMachine::NonInvite(m) => m.handle_request_retransmission(now),
            }
            self.drain_server(&key, now);
            return;
        }
        if method == Method::Cancel {
            self.on_cancel(req, key, d, now);
            return;
        }
        // §16.3 request validation.
        if let Some((status, reason)) = self.check_request(&req) {
            self.reject(&req, d, status, reason, &[]);
            return;
        }
        if let Some(unsupported) = self.unsupported_proxy_require(&req) {
            let header = format!("Unsupported: {unsupported}");
            self.reject(&req, d, 420, "Bad Extension".into(), &[header]);
            return;
        }
        if method == Method::Invite && req.to().ok().is_none_or(|t| t.tag().is_none()) {
            if let Some(why) = self.overloaded() {
                self.counters.overload_rejected += 1;
                tracing::debug!(
                    call_id = req.call_id().unwrap_or(""),
                    why,
                    "overloaded: new call refused"
                );
                let retry = format!("Retry-After: {}", self.config.overload.retry_after_s);
                self.reject(&req, d, 503, "Overloaded".into(), &[retry]);
                return;
            }
        }
        if method == Method::Bye {
            if let Ok(call_id) = req.call_id() {
                let call_id = call_id.to_string();
                if self.moves.contains_key(&call_id) {
                    self.abandon_move(&call_id, now);
                }
                self.delete_media(&call_id, now);
            }
        }
        // A new server transaction.
        if matches!(method, Method::Invite | Method::Update) {
            if let Ok(call_id) = req.call_id() {
                *self.open_offers.entry(call_id.to_string()).or_default() += 1;
            }
        }
        let reliable = d.transport.is_reliable();
        let machine = if method == Method::Invite {
            ServerMachine::Invite(ServerInvite::new(now, reliable, &self.config.timers))
        } else {
            ServerMachine::NonInvite(ServerNonInvite::new(now, reliable, &self.config.timers))
        };
        self.servers.insert(
            key.clone(),
            Box::new(ServerTx {
                machine,
                request: req,
                source: d.source,
                local: d.local,
                transport: d.transport,
                last_response: None,
                final_status: None,
                branches: Vec::new(),
                remaining: VecDeque::new(),
                failover: None,
                best: None,
                cancelled: false,
                scheduled: None,
            }),
        );
        self.drain_server(&key, now);
    }

    /// §16.3: Max-Forwards, loops, URI scheme. Returns the rejection, if any.
    fn check_request(&self, req: &Message) -> Option<(u16, String)> {
        if let Ok(Some(0)) = req.max_forwards() {
            return Some((483, "Too Many Hops".into()));
        }
        if via::is_loop(req, &self.ours) {
            return Some((482, "Loop Detected".into()));
        }
        match req.request_uri() {
            Ok(Uri::Sip(_)) => None,
            Ok(_) if req.routes().next().is_some() => None,
            Ok(_) => Some((416, "Unsupported URI Scheme".into())),
            Err(e) => Some((400, e.reason())),
        }
    }

    /// §16.3 item 6: Proxy-Require lists extensions this proxy must support; it supports none.
    fn unsupported_proxy_require(&self, req: &Message) -> Option<String> {
        let list: Vec<&str> = req.proxy_require().collect();
        if list.is_empty() {
            None
        } else {
            Some(list.join(", "))
        }
    }

    /// Routes and forwards the request of a new server transaction (called on PassRequestToTu).
    fn route_new_request(&mut self, key: &ServerKey, now: Instant) {
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        let req = tx.request.clone();
        let source = tx.source;
        let has_to_tag = req.to().ok().and_then(|t| t.tag()).is_some();
        // A party's own offer while the proxy moves its call's media: glare (RFC 3261 §14.2).
        if has_to_tag
            && matches!(req.method(), Some(Method::Invite | Method::Update))
            && req.call_id().is_ok_and(|c| self.move_in_progress(c))
        {
            self.respond(key, 491, "Request Pending", now);
            return;
        }
        let route = match self.next_hop_by_route(&req) {
            Some(route) => route,
            None if has_to_tag => RouteChoice::RequestUri,
            None => {
                let method = req.method().map(|m| m.as_str()).unwrap_or("");
                let uri = req.request_uri().ok();
                let sip = uri.as_ref().and_then(|u| u.as_sip());
                let domain = sip.map(|s| s.host.to_string());
                let facts = RequestFacts {
                    method,
                    user: sip.and_then(|s| s.user),
                    domain: domain.as_deref(),
                    source: source.ip(),
                };
                let rng = &mut self.rng_state;
                match self.config.router.decide(&facts, |n| next_random(rng, n)) {
                    Decision::Reply { status, reason } => {
                        self.respond(key, status, &reason, now);
                        return;
                    }
                    Decision::RequestUri => RouteChoice::RequestUri,
                    Decision::Destinations {
                        targets, failover, ..
                    } => RouteChoice::Set(targets, failover),
                }
            }
        };
        let targets = match route {
            RouteChoice::RequestUri => {
                let uri = req.request_uri().ok();
                if uri.as_ref().is_some_and(|u| self.is_us(u)) {
                    self.answer_for_ourselves(key, &req, has_to_tag, now);
                    return;
                }
                let nat = has_to_tag.then(|| self.behind_nat(&req)).flatten();
                match nat.or_else(|| uri.as_ref().and_then(Target::from_uri)) {
                    Some(t) => VecDeque::from([t]),
                    None => {
                        self.respond(key, 416, "Unsupported URI Scheme", now);
                        return;
                    }
                }
            }
            RouteChoice::Route(t) => VecDeque::from([t]),
            RouteChoice::Set(targets, failover) => {
                if let Some(tx) = self.servers.get_mut(key) {
                    tx.failover = Some(failover);
                }
                targets.into()
            }
        };
        if let Some(tx) = self.servers.get_mut(key) {
            tx.remaining = targets;
        }
        if self.start_forked_offers(key, &req, source, now)
            || self.start_offer(key, &req, source, now)
        {
            return;
        }
        self.try_next_target(key, now);
    }

    /// An initial INVITE with SDP forked in parallel to several targets, with media anchored:
    /// one relay offer per target, each with its own `via-branch`, so each callee gets its own
    /// relay ports; each target is forwarded when its offer is back. Returns whether it did.
    fn start_forked_offers(
        &mut self,
        key: &ServerKey,
        req: &Message,
        source: SocketAddr,
        now: Instant,
    ) -> bool {
        let Some(tx) = self.servers.get(key) else {
            return false;
        };
        let parallel = tx.failover.as_ref().is_some_and(|f| f.parallel);
        let initial = req.to().ok().and_then(|t| t.tag()).is_none();
        if !parallel
            || tx.remaining.len() < 2
            || !initial
            || req.method() != Some(Method::Invite)
            || !carries_sdp(req)
        {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        if self.call_media.contains_key(call_id) {
            return false;
        }
        let Some(policy) = self.policy_for(req, source) else {
            return false;
        };
        let Some(node) = self.relays.pick(&policy.set, &[]) else {
            return false;
        };
        let from_tag = tag_of(req.from());
        let targets: Vec<Target> = match self.servers.get_mut(key) {
            Some(tx) => tx.remaining.drain(..).collect(),
            None => return false,
        };
        for (index, target) in targets.into_iter().enumerate() {
            let via_branch = format!("fork{index}");
            let request = media::on_branch(
                media::offer_answer(
                    false,
                    call_id,
                    &from_tag,
                    None,
                    req.body_bytes(),
                    &policy.callee_flags,
                ),
                &via_branch,
            );
            if let Some(id) = self.relays.send(node, &request, now) {
                let wait = MediaWait::ForkOffer {
                    key: key.clone(),
                    target,
                    via_branch,
                    policy: policy.clone(),
                };
                self.media_waits.insert((node, id), wait);
            }
        }
        true
    }

    /// One fork branch's offer came back: the call is anchored (on its first), and the target
    /// gets the INVITE with its own relay SDP.
    #[allow(clippy::too_many_arguments)]
    fn on_fork_offer(
        &mut self,
        node: NodeId,
        key: ServerKey,
        target: Target,
        via_branch: String,
        policy: Policy,
        sdp: Option<Bytes>,
        now: Instant,
    ) {
        let Some(tx) = self.servers.get(&key) else {
            return;
        };
        let request = tx.request.clone();
        let call_id = request.call_id().unwrap_or("").to_string();
        let Some(sdp) = sdp else {
            tracing::warn!(%call_id, %via_branch, "relay refused or did not answer a fork branch's offer");
            let pending = self
                .media_waits
                .values()
                .any(|w| matches!(w, MediaWait::ForkOffer { key: k, .. } if *k == key));
            if !pending && tx.branches.is_empty() {
                self.respond(&key, 503, "Media Relay Failed", now);
            }
            return;
        };
        if tx.cancelled || tx.final_status.is_some() {
            let from_tag = tag_of(request.from());
            self.send_ng_quietly(
                node,
                &media::delete_branch(&call_id, &from_tag, &via_branch),
                now,
            );
            return;
        }
        if !self.call_media.contains_key(&call_id) {
            self.relays.count_call(node, 1);
            self.call_media.insert(
                call_id.clone(),
                CallMedia {
                    node,
                    policy,
                    caller_tag: tag_of(request.from()),
                    caller: LegMedia {
                        received: Some(request.body_bytes()),
                        ..LegMedia::default()
                    },
                    callee: LegMedia::default(),
                    answer_in_ack: false,
                    answer_in_prack: false,
                    forks: Vec::new(),
                },
            );
        }
        let Some(destination) = target.socket_addr() else {
            return;
        };
        let Ok(rewritten) = request.edit().set_body(sdp.clone()).finish_message() else {
            return;
        };
        match self.forward_request(&rewritten, &key, &target, destination, now) {
            Ok(branch) => {
                if let Some(call) = self.call_media.get_mut(&call_id) {
                    call.forks.push(ForkBranch {
                        via_branch,
                        client_branch: Some(branch.clone()),
                        sent: Some(sdp),
                    });
                }
                if let Some(tx) = self.servers.get_mut(&key) {
                    tx.branches.push(branch.clone());
                }
                self.drain_client(&branch, now);
            }
            Err(reason) => tracing::warn!(%reason, "cannot forward a fork branch"),
        }
    }

    /// Sends an ng request whose reply nobody waits for.
    fn send_ng_quietly(&mut self, node: NodeId, request: &anchorage_ng::Request, now: Instant) {
        if let Some(id) = self.relays.send(node, request, now) {
            self.media_waits.insert((node, id), MediaWait::Delete);
        }
    }

    /// A 2xx on fork branch `winner`: the other branches' relay sessions are deleted, and the
    /// callee leg's sent SDP is the winner's.
    fn settle_forks(&mut self, call_id: &str, winner: &str, now: Instant) {
        let Some(call) = self.call_media.get_mut(call_id) else {
            return;
        };
        let forks = std::mem::take(&mut call.forks);
        let (node, caller_tag) = (call.node, call.caller_tag.clone());
        if let Some(sent) = forks
            .iter()
            .find(|f| f.via_branch == winner)
            .and_then(|f| f.sent.clone())
        {
            call.callee.record_sent(&sent);
        }
        for fork in forks.into_iter().filter(|f| f.via_branch != winner) {
            tracing::debug!(%call_id, via_branch = %fork.via_branch, "deleting a losing fork branch's relay session");
            let delete = media::delete_branch(call_id, &caller_tag, &fork.via_branch);
            self.send_ng_quietly(node, &delete, now);
        }
    }

    /// A fork branch failed: its relay session goes.
    fn drop_fork(&mut self, call_id: &str, branch: &str, now: Instant) {
        let Some(call) = self.call_media.get_mut(call_id) else {
            return;
        };
        let Some(at) = call
            .forks
            .iter()
            .position(|f| f.client_branch.as_deref() == Some(branch))
        else {
            return;
        };
        let fork = call.forks.remove(at);
        let (node, caller_tag) = (call.node, call.caller_tag.clone());
        let delete = media::delete_branch(call_id, &caller_tag, &fork.via_branch);
        self.send_ng_quietly(node, &delete, now);
    }

    /// The fork branch (its `via-branch`) a response on client branch `branch` belongs to.
    fn fork_of(&self, call_id: &str, branch: &str) -> Option<String> {
        self.call_media
            .get(call_id)?
            .forks
            .iter()
            .find(|f| f.client_branch.as_deref() == Some(branch))
            .map(|f| f.via_branch.clone())
    }

    /// Sends the SDP offer of a request to its relay, if its call is (or must be) anchored;
    /// the request waits for the reply. Returns whether it waits.
    fn start_offer(
        &mut self,
        key: &ServerKey,
        req: &Message,
        source: SocketAddr,
        now: Instant,
    ) -> bool {
        if !carries_sdp(req)
            || !matches!(
                req.method(),
                Some(Method::Invite | Method::Update | Method::Prack)
            )
        {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let from_tag = req
            .from()
            .ok()
            .and_then(|f| f.tag())
            .unwrap_or("")
            .to_string();
        let to_tag = req.to().ok().and_then(|t| t.tag()).map(str::to_string);
        if let Some(call) = self.call_media.get(call_id).cloned() {
            if req.method() == Some(Method::Prack) && call.answer_in_prack {
                // The answer to a late offer made in a reliable 1xx: its from-tag is the
                // offerer's, the PRACK's To.
                let request = media::offer_answer(
                    true,
                    call_id,
                    &tag_of(req.to()),
                    Some(&from_tag),
                    req.body_bytes(),
                    &call.policy.callee_flags,
                );
                if let Some(c) = self.call_media.get_mut(call_id) {
                    c.answer_in_prack = false;
                }
                return self.send_reoffer(key, call.node, call.policy, &request, now);
            }
            // A new offer in an anchored call, from either side (a callee's offer carries its
            // own tag as from-tag).
            let flags = if from_tag == call.caller_tag {
                &call.policy.callee_flags
            } else {
                &call.policy.caller_flags
            };
            let request = media::offer_answer(
                false,
                call_id,
                &from_tag,
                to_tag.as_deref(),
                req.body_bytes(),
                flags,
            );
            return self.send_reoffer(key, call.node, call.policy, &request, now);
        }
        // An initial offer; or an offer in a dialog this node does not know (another proxy
        // node set the call up and this one took over its address): it is anchored as a new
        // call rather than let through, so media never goes direct by accident.
        let Some(policy) = self.policy_for(req, source) else {
            return false;
        };
        if to_tag.is_some() {
            tracing::info!(%call_id, "anchoring an offer in a dialog this node did not set up");
        }
        self.send_offer(key, req, policy, Vec::new(), now);
        true
    }

    /// Sends an offer in an anchored call to the node holding it; the request of `key` waits
    /// for the reply. Returns whether it was sent.
    fn send_reoffer(
        &mut self,
        key: &ServerKey,
        node: NodeId,
        policy: Policy,
        request: &anchorage_ng::Request,
        now: Instant,
    ) -> bool {
        let Some(id) = self.relays.send(node, request, now) else {
            return false;
        };
        let wait = MediaWait::Offer {
            key: key.clone(),
            policy,
            tried: vec![node],
            initial: false,
        };
        self.media_waits.insert((node, id), wait);
        true
    }

    /// The media policy of an initial request: its rule's, else the default.
    fn policy_for(&self, req: &Message, source: SocketAddr) -> Option<Policy> {
        let uri = req.request_uri().ok();
        let sip = uri.as_ref().and_then(|u| u.as_sip());
        let domain = sip.map(|s| s.host.to_string());
        let facts = RequestFacts {
            method: req.method().map(|m| m.as_str()).unwrap_or(""),
            user: sip.and_then(|s| s.user),
            domain: domain.as_deref(),
            source: source.ip(),
        };
        match self.config.router.media_for(&facts) {
            Some(Some(rule_policy)) => Policy::of(&rule_policy),
            _ => Policy::of(&self.config.default_media),
        }
    }

    /// Sends an initial offer to the least loaded node of the policy's set not yet tried, or
    /// answers 503 when none is left (never falls back to direct media).
    fn send_offer(
        &mut self,
        key: &ServerKey,
        req: &Message,
        policy: Policy,
        tried: Vec<NodeId>,
        now: Instant,
    ) {
        let Some(node) = self.relays.pick(&policy.set, &tried) else {
            let reason = if self.relays.has_live_node(&policy.set) {
                "Media Relays Busy"
            } else {
                "No Media Relay Available"
            };
            tracing::warn!(call_id = req.call_id().unwrap_or(""), set = %policy.set, reason, "no media relay can take the call");
            self.respond(key, 503, reason, now);
            return;
        };
        let call_id = req.call_id().unwrap_or("");
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        let request = media::offer_answer(
            false,
            call_id,
            from_tag,
            None,
            req.body_bytes(),
            &policy.callee_flags,
        );
        if let Some(id) = self.relays.send(node, &request, now) {
            let mut tried = tried;
            tried.push(node);
            let wait = MediaWait::Offer {
                key: key.clone(),
                policy,
                tried,
                initial: true,
            };
            self.media_waits.insert((node, id), wait);
        }
    }

    /// Sends the SDP answer of a response to the call's relay; the response waits for the
    /// reply. Returns whether it waits.
    fn start_answer(
        &mut self,
        key: &ServerKey,
        branch: &str,
        status: u16,
        response: &Message,
        now: Instant,
    ) -> bool {
        if !carries_sdp(response) {
            return false;
        }
        let Some(server) = self.servers.get(key) else {
            return false;
        };
        let req = &server.request;
        if !matches!(
            req.method(),
            Some(Method::Invite | Method::Update | Method::Prack)
        ) {
            return false;
        }
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        if !carries_sdp(req) {
            // An offer in a response: to an INVITE or UPDATE without SDP (RFC 3264 §5). A
            // PRACK's response never carries an offer.
            if req.method() == Some(Method::Prack) {
                return false;
            }
            return self.start_response_offer(key, status, response, now);
        }
        let Some(call) = self.call_media.get(call_id).cloned() else {
            return false;
        };
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        let to_tag = response.to().ok().and_then(|t| t.tag());
        // The answer goes back to whoever made the offer.
        let flags = if from_tag == call.caller_tag {
            &call.policy.caller_flags
        } else {
            &call.policy.callee_flags
        };
        let request = media::offer_answer(
            true,
            call_id,
            from_tag,
            to_tag,
            response.body_bytes(),
            flags,
        );
        // A fork branch answers on its own relay session; its 2xx ends the other branches'.
        let call_id = call_id.to_string();
        let call_id = call_id.as_str();
        let fork = self.fork_of(call_id, branch);
        let request = match &fork {
            Some(via_branch) => media::on_branch(request, via_branch),
            None => request,
        };
        if let (Some(winner), true) = (&fork, (200..300).contains(&status)) {
            self.settle_forks(call_id, winner, now);
        }
        match self.relays.send(call.node, &request, now) {
            Some(id) => {
                let wait = MediaWait::Answer {
                    key: key.clone(),
                    status,
                    response: Box::new(response.clone()),
                };
                self.media_waits.insert((call.node, id), wait);
                true
            }
            None => false,
        }
    }

    /// A late offer (RFC 3264 §5: a request without SDP, the offer in its response): sent to
    /// the call's relay — or, for an initial INVITE, to a node chosen by its policy — with the
    /// responder as offerer. The response waits; the answer will come in the ACK.
    fn start_response_offer(
        &mut self,
        key: &ServerKey,
        status: u16,
        response: &Message,
        now: Instant,
    ) -> bool {
        let Some(server) = self.servers.get(key) else {
            return false;
        };
        let (req, source) = (server.request.clone(), server.source);
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let offerer = tag_of(response.to());
        let requester = tag_of(req.from());
        let (node, policy, initial) = match self.call_media.get(call_id) {
            Some(c) => (c.node, c.policy.clone(), false),
            None => {
                if req.to().ok().and_then(|t| t.tag()).is_some() {
                    return false;
                }
                let Some(policy) = self.policy_for(&req, source) else {
                    return false;
                };
                let Some(node) = self.relays.pick(&policy.set, &[]) else {
                    return false;
                };
                (node, policy, true)
            }
        };
        // The SDP produced goes to the requester.
        let caller_is_requester = self
            .call_media
            .get(call_id)
            .is_none_or(|c| c.caller_tag == requester);
        let flags = if caller_is_requester {
            &policy.caller_flags
        } else {
            &policy.callee_flags
        };
        let request =
            media::offer_answer(false, call_id, &offerer, None, response.body_bytes(), flags);
        match self.relays.send(node, &request, now) {
            Some(id) => {
                let wait = MediaWait::ResponseOffer {
                    key: key.clone(),
                    status,
                    response: Box::new(response.clone()),
                    policy,
                    initial,
                };
                self.media_waits.insert((node, id), wait);
                true
            }
            None => false,
        }
    }

    /// An ACK carrying the answer to a late offer: sent to the relay; the ACK waits.
    fn start_ack_answer(&mut self, ack: &Message, d: &Datagram, now: Instant) -> bool {
        if !carries_sdp(ack) {
            return false;
        }
        let Ok(call_id) = ack.call_id() else {
            return false;
        };
        let Some(call) = self.call_media.get(call_id).filter(|c| c.answer_in_ack) else {
            return false;
        };
        let (node, flags) = (call.node, call.policy.callee_flags.clone());
        // The offer came from the ACK's To party; the ACK's sender answers.
        let request = media::offer_answer(
            true,
            call_id,
            &tag_of(ack.to()),
            Some(&tag_of(ack.from())),
            ack.body_bytes(),
            &flags,
        );
        match self.relays.send(node, &request, now) {
            Some(id) => {
                let wait = MediaWait::AckAnswer {
                    ack: Box::new(ack.clone()),
                    source: d.source,
                    local: d.local,
                    transport: d.transport,
                };
                self.media_waits.insert((node, id), wait);
                true
            }
            None => false,
        }
    }

    /// Deletes a call's relay session (BYE, failed INVITE); nothing waits for the reply.
    fn delete_media(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.call_media.remove(call_id) else {
            tracing::debug!(%call_id, "no relay session to delete");
            return;
        };
        tracing::debug!(%call_id, node = call.node, "deleting the relay session");
        self.relays.count_call(call.node, -1);
        self.waiting.remove(call_id);
        self.resuming.remove(call_id);
        self.delete_or_orphan(call.node, call_id, now);
    }

    /// Acts on relay replies and timeouts.
    fn drain_relay_events(&mut self, now: Instant) {
        while let Some(change) = self.relays.poll_health_change() {
            self.on_relay_health(change, now);
        }
        while let Some((node, event)) = self.relays.poll_event() {
            let (id, reply) = match event {
                anchorage_ng::Event::Reply(id, reply) => (id, Some(reply)),
                anchorage_ng::Event::TimedOut(id) | anchorage_ng::Event::Failed(id, _) => {
                    (id, None)
                }
            };
            let Some(wait) = self.media_waits.remove(&(node, id)) else {
                continue;
            };
            let sdp = reply
                .as_ref()
                .filter(|r| matches!(r.outcome, anchorage_ng::Outcome::Ok))
                .and_then(|r| r.sdp.clone());
            match (wait, sdp) {
                (MediaWait::Delete, _) => {}
                (MediaWait::ReanchorOffer { call_id }, sdp) => {
                    self.on_reanchor_ng(&call_id, true, sdp, now);
                }
                (MediaWait::ReanchorAnswer { call_id }, sdp) => {
                    self.on_reanchor_ng(&call_id, false, sdp, now);
                }
                (MediaWait::FollowUp { call_id, party }, Some(sdp)) => {
                    self.send_follow_up_offer(&call_id, party, sdp, now);
                }
                (MediaWait::FollowUp { .. }, None) => {}
                (
                    MediaWait::ForkOffer {
                        key,
                        target,
                        via_branch,
                        policy,
                    },
                    sdp,
                ) => {
                    self.on_fork_offer(node, key, target, via_branch, policy, sdp, now);
                }
                (
                    MediaWait::ResponseOffer {
                        key,
                        status,
                        response,
                        policy,
                        initial,
                    },
                    Some(sdp),
                ) => {
                    let call_id = response.call_id().unwrap_or("").to_string();
                    if initial {
                        let caller_tag = self
                            .servers
                            .get(&key)
                            .map(|s| tag_of(s.request.from()))
                            .unwrap_or_default();
                        tracing::debug!(%call_id, node, "call anchored by a late offer");
                        self.relays.count_call(node, 1);
                        self.call_media.insert(
                            call_id.clone(),
                            CallMedia {
                                node,
                                policy,
                                caller_tag,
                                caller: LegMedia::default(),
                                callee: LegMedia::default(),
                                answer_in_ack: false,
                                answer_in_prack: false,
                                forks: Vec::new(),
                            },
                        );
                    }
                    if let Some(call) = self.call_media.get_mut(&call_id) {
                        call.answer_in_ack = status >= 200;
                        call.answer_in_prack = status < 200;
                        let (from, to) = call.legs_from(&tag_of(response.to()));
                        from.received = Some(response.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = response.edit().set_body(sdp).finish_message() {
                        self.forward_response_upstream(&key, status, rewritten.bytes(), now);
                    }
                }
                (MediaWait::ResponseOffer { key, status, .. }, None) => {
                    tracing::warn!("relay refused or did not answer a late offer; the response is not relayed unanchored");
                    if status >= 200 {
                        self.respond(&key, 502, "Media Relay Failed", now);
                    }
                }
                (
                    MediaWait::AckAnswer {
                        ack,
                        source,
                        local,
                        transport,
                    },
                    Some(sdp),
                ) => {
                    let call_id = ack.call_id().unwrap_or("").to_string();
                    if let Some(call) = self.call_media.get_mut(&call_id) {
                        call.answer_in_ack = false;
                        let (from, to) = call.legs_from(&tag_of(ack.from()));
                        from.received = Some(ack.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = ack.edit().set_body(sdp).finish_message() {
                        let d = Datagram {
                            data: rewritten.bytes(),
                            source,
                            local,
                            transport,
                        };
                        self.forward_stateless(rewritten, &d, now);
                    }
                }
                (MediaWait::AckAnswer { ack, .. }, None) => {
                    tracing::warn!(call_id = ack.call_id().unwrap_or(""), "relay refused or did not answer the answer in an ACK; the ACK is not relayed unanchored");
                }
                (
                    MediaWait::Offer {
                        key,
                        policy,
                        initial,
                        ..
                    },
                    Some(sdp),
                ) => {
                    let Some(tx) = self.servers.get_mut(&key) else {
                        continue;
                    };
                    let offered = tx.request.body_bytes();
                    let offerer = tag_of(tx.request.from());
                    if let Ok(rewritten) = tx.request.edit().set_body(sdp.clone()).finish_message()
                    {
                        tx.request = rewritten;
                    }
                    let call_id = tx.request.call_id().unwrap_or("").to_string();
                    if initial {
                        tracing::debug!(%call_id, node, "call anchored");
                        self.relays.count_call(node, 1);
                        self.call_media.insert(
                            call_id.clone(),
                            CallMedia {
                                node,
                                policy,
                                caller_tag: offerer.clone(),
                                caller: LegMedia::default(),
                                callee: LegMedia::default(),
                                answer_in_ack: false,
                                answer_in_prack: false,
                                forks: Vec::new(),
                            },
                        );
                    }
                    if let Some(call) = self.call_media.get_mut(&call_id) {
                        let (from, to) = call.legs_from(&offerer);
                        from.received = Some(offered);
                        to.record_sent(&sdp);
                    }
                    self.try_next_target(&key, now);
                }
                (
                    MediaWait::Offer {
                        key,
                        policy,
                        tried,
                        initial,
                    },
                    None,
                ) => {
                    let reason = reply
                        .as_ref()
                        .and_then(|r| r.error_reason().map(|e| e.to_string()));
                    let name = self
                        .relays
                        .nodes()
                        .get(node)
                        .map(|n| n.name.clone())
                        .unwrap_or_default();
                    tracing::warn!(relay = %name, ?reason, "relay refused or did not answer an offer");
                    match (initial, self.servers.get(&key).map(|t| t.request.clone())) {
                        (true, Some(req)) => self.send_offer(&key, &req, policy, tried, now),
                        _ => self.respond(&key, 503, "Media Relay Failed", now),
                    }
                }
                (
                    MediaWait::Answer {
                        key,
                        status,
                        response,
                    },
                    Some(sdp),
                ) => {
                    let call_id = response.call_id().unwrap_or("").to_string();
                    if let Some(call) = self.call_media.get_mut(&call_id) {
                        // The answer comes from the leg the offer went to.
                        let (from, to) = call.legs_from(&tag_of(response.to()));
                        from.received = Some(response.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = response.edit().set_body(sdp).finish_message() {
                        self.forward_response_upstream(&key, status, rewritten.bytes(), now);
                    }
                }
                (MediaWait::Answer { key, status, .. }, None) => {
                    tracing::warn!("relay refused or did not answer an answer; the response is not relayed unanchored");
                    if status >= 200 {
                        self.respond(&key, 502, "Media Relay Failed", now);
                    }
                }
            }
        }
    }

    /// The next hop named by the Route set after removing our own entries, if any (§16.4,
    /// §16.6 step 6–7), with strict-route compatibility.
    fn next_hop_by_route(&self, req: &Message) -> Option<RouteChoice> {
        let routes: Vec<_> = req.routes().filter_map(|r| r.ok()?.uri().ok()).collect();
        let first_foreign = routes.iter().find(|uri| !self.is_us(uri))?;
        Target::from_uri(first_foreign).map(RouteChoice::Route)
    }

    /// Where an in-dialog request really reaches its recipient when the recipient is behind
    /// NAT: its Request-URI (the leg's Contact) holds a private address (RFC 1918, CGNAT,
    /// link-local, IPv6 ULA) other than the address the leg's messages come from. The request
    /// then goes to that address — the NAT binding the leg keeps open — as Kamailio's nathelper
    /// does with `fix_nated_contact`. `None` when the Contact is reachable as written.
    fn behind_nat(&self, req: &Message) -> Option<Target> {
        let uri = req.request_uri().ok()?;
        let sip = uri.as_sip()?;
        let contact_ip = match sip.host {
            Host::Ipv4(a) => IpAddr::V4(a),
            Host::Ipv6(a) => IpAddr::V6(a),
            Host::Domain(_) => return None,
        };
        if !is_private(contact_ip) {
            return None;
        }
        let call_id = req.call_id().ok()?;
        let from_tag = req.from().ok()?.tag()?;
        let to_tag = req.to().ok()?.tag()?;
        let dialog = self.dialogs.between(call_id, from_tag, to_tag)?;
        let leg = if dialog.id.caller_tag == to_tag {
            &dialog.caller
        } else {
            &dialog.callee
        };
        let source = leg.source?;
        if source.ip() == contact_ip {
            return None;
        }
        Some(Target {
            host: TargetHost::Ip(source.ip()),
            port: source.port(),
            transport: leg.transport.unwrap_or(Transport::Udp),
            srv: false,
        })
    }

    fn is_us(&self, uri: &Uri<'_>) -> bool {
        uri.as_sip()
            .is_some_and(|sip| via::is_ours(&self.ours, &sip.host, sip.port))
    }

    /// A request addressed to this proxy itself, with nothing to route it elsewhere: forwarding
    /// it by its Request-URI would send it back here (482). An OPTIONS is a keep-alive or
    /// capability query (a trunk, an SBC, a monitor): answered 200 with what we accept
    /// (RFC 3261 §11.2). Anything else has no user here: 481 inside a dialog, 404 otherwise.
    fn answer_for_ourselves(
        &mut self,
        key: &ServerKey,
        req: &Message,
        in_dialog: bool,
        now: Instant,
    ) {
        if req.method() == Some(Method::Options) {
            self.respond_with(
                key,
                200,
                "OK",
                &[("Allow", PROXIED_METHODS), ("Accept", "application/sdp")],
                now,
            );
        } else if in_dialog {
            self.respond(key, 481, "Call/Transaction Does Not Exist", now);
        } else {
            self.respond(key, 404, "Not Found", now);
        }
    }

    /// Sends the request of `key` to its next remaining target, or answers with the best
    /// response (or 408/503) when none is left.
    fn try_next_target(&mut self, key: &ServerKey, now: Instant) {
        loop {
            let Some(tx) = self.servers.get_mut(key) else {
                return;
            };
            if tx.cancelled || tx.final_status.is_some() {
                return;
            }
            let Some(target) = tx.remaining.pop_front() else {
                let (status, body) = match tx.best.take() {
                    Some(best) => best,
                    None => {
                        self.respond(key, 408, "Request Timeout", now);
                        return;
                    }
                };
                self.forward_response_upstream(key, status, body, now);
                return;
            };
            let Some(destination) = target.socket_addr() else {
                // A host name: park the request until the runtime resolved it (RFC 3263).
                if let TargetHost::Name(name) = target.host {
                    let id = self.next_query_id;
                    self.next_query_id += 1;
                    self.waiting_for_resolution.insert(id, key.clone());
                    self.resolve_queries.push_back(ResolveQuery {
                        id,
                        name,
                        port: (!target.srv).then_some(target.port),
                        transport: target.transport,
                    });
                }
                return;
            };
            let request = tx.request.clone();
            let failover = tx.failover.clone();
            let parallel = failover.as_ref().is_some_and(|p| p.parallel);
            match self.forward_request(&request, key, &target, destination, now) {
                Ok(branch) => {
                    if let Some(policy) = failover.filter(|p| p.on_timeout && !p.parallel) {
                        if let Some(c) = self.clients.get_mut(&branch) {
                            c.failover_deadline = Some(now + policy.timeout);
                        }
                    }
                    if let Some(tx) = self.servers.get_mut(key) {
                        tx.branches.push(branch.clone());
                    }
                    self.drain_client(&branch, now);
                    if parallel
                        && self
                            .servers
                            .get(key)
                            .is_some_and(|s| !s.remaining.is_empty())
                    {
                        continue;
                    }
                    return;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "cannot forward request");
                    self.respond(key, 500, "Server Internal Error", now);
                    return;
                }
            }
        }
    }

    /// §16.6: copies the request, applies the proxy's edits, creates the client transaction.
    fn forward_request(
        &mut self,
        req: &Message,
        key: &ServerKey,
        target: &Target,
        destination: SocketAddr,
        now: Instant,
    ) -> Result<String, String> {
        let Some(tx) = self.servers.get(key) else {
            return Err("server transaction gone".into());
        };
        let (source, in_transport, in_local) = (tx.source, tx.transport, tx.local);
        let method = req.method().ok_or("no method")?;
        let next_hop = format!("{:?}:{destination}", target.transport);
        let branch = via::branch(req, &next_hop);
        let out_listener = self.listener_for(target.transport, destination, in_local);
        let edited = self.edit_forwarded(
            req,
            source,
            in_transport,
            in_local,
            out_listener,
            &branch,
            true,
        )?;
        let reliable = target.transport.is_reliable();
        let machine = if method == Method::Invite {
            ClientMachine::Invite(ClientInvite::new_proxied(
                now,
                reliable,
                &self.config.timers,
            ))
        } else {
            ClientMachine::NonInvite(ClientNonInvite::new(now, reliable, &self.config.timers))
        };
        self.clients.insert(
            branch.clone(),
            Box::new(ClientTx {
                machine,
                request: edited,
                destination,
                transport: target.transport,
                server: key.clone(),
                provisional_received: false,
                cancel_pending: false,
                failover_deadline: None,
                abandoned: false,
                completed: false,
                scheduled: None,
            }),
        );
        Ok(branch)
    }

    /// The listener to send from towards `destination` with `transport`: the inbound one when it
    /// fits (same transport and family), else the first that does.
    fn listener_for(
        &self,
        transport: Transport,
        destination: SocketAddr,
        in_local: SocketAddr,
    ) -> Option<usize> {
        let fits =
            |l: &Listener| l.transport == transport && l.local.is_ipv4() == destination.is_ipv4();
        self.config
            .listeners
            .iter()
            .position(|l| l.local == in_local && fits(l))
            .or_else(|| self.config.listeners.iter().position(fits))
    }

    /// Applies §16.6 steps 2–8 to a request: Route processing, Max-Forwards, Record-Route,
    /// `received`/`rport` on the previous Via, and our Via.
    #[allow(clippy::too_many_arguments)]
    fn edit_forwarded(
        &self,
        req: &Message,
        source: SocketAddr,
        in_transport: Transport,
        in_local: SocketAddr,
        out_listener: Option<usize>,
        branch: &str,
        record_route: bool,
    ) -> Result<Message, String> {
        let out = out_listener
            .and_then(|i| self.config.listeners.get(i))
            .ok_or("no listener for the destination's transport and address family")?;
        let mut e = req.edit();
        // Previous hop's Via: received / rport (RFC 3581).
        if let (Ok(top), Some(header)) = (req.top_via(), req.header(HeaderName::Via)) {
            if let Some(first) = header.values().next() {
                if let Some(stamped) = via::stamp_received(first, &top, source) {
                    let rest = header.value().get(first.len()..).unwrap_or_default();
                    let mut value = stamped;
                    value.extend_from_slice(rest);
                    e.set_header_value(header.index(), &value)
                        .map_err(|err| err.to_string())?;
                }
            }
        }
        // Our own Route entries (loose routing, §16.4).
        for route in req.routes().filter_map(|r| r.ok()?.uri().ok()) {
            if self.is_us(&route) {
                e.pop_route();
            } else {
                break;
            }
        }
        if let Some(offset) = self.cseq_offset(req).filter(|o| *o > 0) {
            if let Ok(cseq) = req.cseq() {
                e.set_cseq_number(cseq.seq.saturating_add(offset))
                    .map_err(|err| err.to_string())?;
            }
        }
        match req.max_forwards() {
            Ok(Some(n)) => {
                e.set_max_forwards(n.saturating_sub(1));
            }
            _ => {
                e.add_header("Max-Forwards", b"70")
                    .map_err(|err| err.to_string())?;
            }
        }
        let initial = req.to().ok().and_then(|t| t.tag()).is_none();
        let dialog_creating = matches!(
            req.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        );
        if record_route && initial && dialog_creating {
            let inbound = self
                .config
                .listeners
                .iter()
                .find(|l| l.local == in_local && l.transport == in_transport);
            // Two entries when the request leaves on another interface or transport (RFC 5658).
            if let Some(inb) = inbound.filter(|inb| *inb != out) {
                e.prepend_record_route(rr_value(inb).as_bytes())
                    .map_err(|err| err.to_string())?;
            }
            e.prepend_record_route(rr_value(out).as_bytes())
                .map_err(|err| err.to_string())?;
        }
        let via_value = format!(
            "SIP/2.0/{} {}:{};branch={branch};nid={}",
            out.transport.via_token(),
            out.advertise_host,
            out.advertise_port,
            self.config.node_id
        );
        e.push_via(via_value.as_bytes())
            .map_err(|err| err.to_string())?;
        e.finish_message().map_err(|err| err.to_string())
    }

    /// §16.10: CANCEL. With the INVITE's transaction: 200 to the CANCEL, CANCEL every pending
    /// branch. Without (another node forwarded the INVITE): forward statelessly.
    fn on_cancel(&mut self, req: Message, key: ServerKey, d: &Datagram, now: Instant) {
        let invite_key = (key.0.clone(), key.1.clone(), "INVITE".to_string());
        if !self.servers.contains_key(&invite_key) {
            self.forward_stateless(req, d, now);
            return;
        }
        // The CANCEL's own transaction, answered 200 at once.
        let mut machine = ServerNonInvite::new(now, d.transport.is_reliable(), &self.config.timers);
        let _ = machine.send_response(now, 200);
        let ok = req
            .response(200, "OK")
            .build()
            .map(|m| m.bytes())
            .unwrap_or_default();
        self.servers.insert(
            key.clone(),
            Box::new(ServerTx {
                machine: ServerMachine::NonInvite(machine),
                request: req,
                source: d.source,
                local: d.local,
                transport: d.transport,
                last_response: Some(ok),
                final_status: Some(200),
                branches: Vec::new(),
                remaining: VecDeque::new(),
                failover: None,
                best: None,
                cancelled: false,
                scheduled: None,
            }),
        );
        self.drain_server(&key, now);
        let Some(invite) = self.servers.get_mut(&invite_key) else {
            return;
        };
        if invite.final_status.is_some() {
            return;
        }
        invite.cancelled = true;
        invite.remaining.clear();
        for branch in invite.branches.clone() {
            self.cancel_branch(&branch, now);
        }
    }

    /// Sends a CANCEL for a client INVITE branch once it has seen a provisional (§9.1).
    fn cancel_branch(&mut self, branch: &str, now: Instant) {
        let Some(c) = self.clients.get_mut(branch) else {
            return;
        };
        c.abandoned = true;
        if !c.provisional_received {
            c.cancel_pending = true;
            return;
        }
        c.cancel_pending = false;
        if let ClientMachine::Invite(m) = &mut c.machine {
            m.handle_cancel_sent(now);
        }
        if let Some(cancel) = build_cancel(&c.request) {
            let t = Transmit {
                data: cancel,
                destination: c.destination,
                transport: c.transport,
                local: None,
            };
            self.out.push_back(t);
        }
        self.drain_client(branch, now);
    }

    /// Forwards a request that has no transaction here (ACK, CANCEL): routed like its INVITE,
    /// with the same deterministic branch, so the next hop matches it.
    fn forward_stateless(&mut self, req: Message, d: &Datagram, _now: Instant) {
        self.counters.stateless_requests += 1;
        let method = req.method().map(|m| m.as_str()).unwrap_or("");
        let target = match self.next_hop_by_route(&req) {
            Some(RouteChoice::Route(t)) => Some(t),
            _ => {
                let uri = req.request_uri().ok();
                let sip = uri.as_ref().and_then(|u| u.as_sip());
                // A CANCEL, or the ACK of a non-2xx response, belongs to an initial INVITE:
                // route it as that INVITE was routed. An ACK for a 2xx is in-dialog: it carries
                // our Record-Route as Route and goes to its Request-URI (the remote target).
                let in_dialog = method == "ACK"
                    && req
                        .routes()
                        .filter_map(|r| r.ok()?.uri().ok())
                        .any(|uri| self.is_us(&uri));
                let initial = !in_dialog;
                let decision = if initial {
                    let domain = sip.map(|s| s.host.to_string());
                    let facts = RequestFacts {
                        method: "INVITE",
                        user: sip.and_then(|s| s.user),
                        domain: domain.as_deref(),
                        source: d.source.ip(),
                    };
                    // The first destination of the set is where the INVITE went first; with no
                    // state we cannot know of a failover that happened on the dead node.
                    self.config.router.decide(&facts, |_| 0)
                } else {
                    Decision::RequestUri
                };
                match decision {
                    Decision::Destinations { targets, .. } => targets.into_iter().next(),
                    Decision::RequestUri => self
                        .behind_nat(&req)
                        .filter(|_| in_dialog)
                        .or_else(|| uri.as_ref().and_then(Target::from_uri)),
                    Decision::Reply { .. } => None,
                }
            }
        };
        let Some(target) = target else {
            self.counters.dropped += 1;
            return;
        };
        let Some(destination) = target.socket_addr() else {
            self.counters.dropped += 1;
            return;
        };
        let next_hop = format!("{:?}:{destination}", target.transport);
        let branch = via::branch(&req, &next_hop);
        let out_listener = self.listener_for(target.transport, destination, d.local);
        match self.edit_forwarded(
            &req,
            d.source,
            d.transport,
            d.local,
            out_listener,
            &branch,
            false,
        ) {
            Ok(m) => self.out.push_back(Transmit {
                data: m.bytes(),
                destination,
                transport: target.transport,
                local: out_listener
                    .and_then(|i| self.config.listeners.get(i))
                    .map(|l| l.local),
            }),
            Err(_) => self.counters.dropped += 1,
        }
    }

    // --------------------------------------------------------------- responses

    fn on_response(&mut self, resp: Message, now: Instant) {
        let Ok(top) = resp.top_via() else {
            self.counters.dropped += 1;
            return;
        };
        if !via::is_ours(&self.ours, &top.host, top.port) {
            // §18.1.2: a response whose top Via is not ours is discarded.
            self.counters.dropped += 1;
            return;
        }
        let branch = top
            .params
            .get("branch")
            .flatten()
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
            .to_string();
        let Some(status) = resp.status() else {
            self.counters.dropped += 1;
            return;
        };
        if self.own.contains_key(&branch) {
            self.on_own_response(&branch, resp, now);
            return;
        }
        // RFC 3261 §17.1.3: the branch and the CSeq method must both match (a CANCEL shares its
        // INVITE's branch; its responses are recognised below).
        let method_matches = |c: &ClientTx| {
            let (Ok(sent), Ok(got)) = (c.request.cseq(), resp.cseq()) else {
                return false;
            };
            sent.method == got.method || got.method == Method::Cancel
        };
        let Some(client) = self.clients.get_mut(&branch).filter(|c| method_matches(c)) else {
            tracing::debug!(call_id = resp.call_id().unwrap_or(""), %branch, status, "response without a client transaction: forwarded by its Via");
            self.forward_response_stateless(&resp);
            return;
        };
        let is_cancel_response = resp.cseq().is_ok_and(|c| c.method == Method::Cancel);
        if is_cancel_response {
            // The 200 to our CANCEL ends nothing; the INVITE's 487 will follow.
            return;
        }
        if (100..200).contains(&status) && status > 100 {
            client.provisional_received = true;
        }
        if status >= 100 {
            client.failover_deadline = None;
        }
        let result = match &mut client.machine {
            ClientMachine::Invite(m) => m.handle_response(now, status),
            ClientMachine::NonInvite(m) => m.handle_response(now, status),
        };
        if result.is_err() {
            self.counters.dropped += 1;
            return;
        }
        let cancel_now = client.cancel_pending && client.provisional_received;
        // Keep the response for the TU actions drained below.
        self.pending_response = Some(resp);
        self.drain_client(&branch, now);
        self.pending_response = None;
        if cancel_now {
            self.cancel_branch(&branch, now);
        }
    }

    /// Forwards a response with no client transaction by its next Via (§16.7 is skipped).
    fn forward_response_stateless(&mut self, resp: &Message) {
        self.counters.stateless_responses += 1;
        let popped = resp.edit().pop_via().finish_message();
        let Ok(popped) = popped else {
            self.counters.dropped += 1;
            return;
        };
        let Ok(next) = popped.top_via() else {
            self.counters.dropped += 1;
            return;
        };
        let (Some(destination), Some(transport)) =
            (via::response_destination(&next), via::via_transport(&next))
        else {
            self.counters.dropped += 1;
            return;
        };
        self.out.push_back(Transmit {
            data: popped.bytes(),
            destination,
            transport,
            local: None,
        });
    }

    /// The TU's handling of a response received on a client branch (§16.7).
    fn on_branch_response(&mut self, branch: &str, status: u16, now: Instant) {
        let Some(resp) = self.pending_response.clone() else {
            return;
        };
        let Some(client) = self.clients.get(branch) else {
            return;
        };
        let key = client.server.clone();
        let abandoned = client.abandoned;
        let Ok(popped) = resp.edit().pop_via().finish_message() else {
            return;
        };
        let popped = self.restore_cseq(&key, popped);
        self.track_dialog(&key, &popped, now);
        if (101..300).contains(&status) {
            if let (Some(c), Ok(call_id)) = (self.clients.get(branch), popped.call_id()) {
                let tag = tag_of(popped.to());
                let (destination, transport) = (c.destination, c.transport);
                self.dialogs
                    .set_callee_hop(call_id, &tag, destination, transport);
            }
        }
        match status {
            100 => {}
            101..=199 => {
                if !abandoned && !self.start_answer(&key, branch, status, &popped, now) {
                    self.forward_response_upstream(&key, status, popped.bytes(), now);
                }
            }
            200..=299 => {
                if let Some(c) = self.clients.get_mut(branch) {
                    c.completed = true;
                }
                // Every 2xx to an INVITE is forwarded, also on a cancelled branch (§16.7 step 5).
                if self.servers.contains_key(&key) {
                    if !self.start_answer(&key, branch, status, &popped, now) {
                        self.forward_response_upstream(&key, status, popped.bytes(), now);
                    }
                    // §16.7 step 10: the other branches of a fork are cancelled.
                    self.cancel_other_branches(&key, branch, now);
                } else {
                    self.forward_response_stateless(&resp);
                }
            }
            _ => {
                // A fork branch that failed gives up its relay session.
                if let Ok(call_id) = popped.call_id() {
                    let call_id = call_id.to_string();
                    self.drop_fork(&call_id, branch, now);
                }
                if abandoned && !self.servers.get(&key).is_some_and(|s| s.cancelled) {
                    return;
                }
                self.branch_failed(&key, branch, status, popped.bytes(), false, now);
            }
        }
    }

    /// A branch ended without a 2xx: a final response (`body` holds it), or a timeout or
    /// transport error (`timed_out`; `body` empty: the proxy answers itself if it is chosen).
    /// Serial sets move on per the failover policy; a fork waits for its other branches; then
    /// the best response goes upstream (§16.7 steps 4–6).
    fn branch_failed(
        &mut self,
        key: &ServerKey,
        branch: &str,
        status: u16,
        body: Bytes,
        timed_out: bool,
        now: Instant,
    ) {
        if let Some(c) = self.clients.get_mut(branch) {
            c.completed = true;
        }
        let Some(server) = self.servers.get_mut(key) else {
            return;
        };
        let better = match &server.best {
            None => true,
            Some((best, _)) => better_response(status, *best),
        };
        if better {
            server.best = Some((status, body));
        }
        let policy = server.failover.clone();
        let parallel = policy.as_ref().is_some_and(|p| p.parallel);
        let retry = !parallel
            && !server.cancelled
            && status < 600
            && !server.remaining.is_empty()
            && policy
                .as_ref()
                .is_some_and(|p| p.retries(status) || (timed_out && p.on_timeout));
        if retry {
            self.try_next_target(key, now);
            return;
        }
        if parallel && status >= 600 {
            // A 6xx ends the search: no other branch may succeed (§16.7 step 5).
            self.cancel_other_branches(key, branch, now);
        } else if self.pending_branches(key) > 0 {
            return;
        }
        if let Some((best, body)) = self.servers.get_mut(key).and_then(|s| s.best.take()) {
            self.forward_response_upstream(key, best, body, now);
        }
    }

    /// Branches of a request still waiting for a final response.
    fn pending_branches(&self, key: &ServerKey) -> usize {
        self.servers.get(key).map_or(0, |s| {
            s.branches
                .iter()
                .filter_map(|b| self.clients.get(b))
                .filter(|c| !c.completed && !c.abandoned)
                .count()
        })
    }

    fn cancel_other_branches(&mut self, key: &ServerKey, except: &str, now: Instant) {
        let Some(server) = self.servers.get_mut(key) else {
            return;
        };
        server.remaining.clear();
        let others: Vec<String> = server
            .branches
            .iter()
            .filter(|b| b.as_str() != except)
            .cloned()
            .collect();
        for b in others {
            if self.clients.get(&b).is_some_and(|c| !c.completed) {
                self.cancel_branch(&b, now);
            }
        }
    }

    fn on_failover_timeout(&mut self, branch: &str, now: Instant) {
        let Some(client) = self.clients.get_mut(branch) else {
            return;
        };
        client.failover_deadline = None;
        let key = client.server.clone();
        let has_more = self
            .servers
            .get(&key)
            .is_some_and(|s| !s.remaining.is_empty() && !s.cancelled && s.final_status.is_none());
        if has_more {
            tracing::info!(%branch, "no response from destination; trying the next one");
            if let Some(c) = self.clients.get_mut(branch) {
                c.abandoned = true;
            }
            self.try_next_target(&key, now);
        }
    }

    /// A client branch failed without a response (Timer B/F, Timer C, transport error).
    fn on_branch_failure(&mut self, branch: &str, status: u16, now: Instant) {
        let Some(client) = self.clients.get(branch) else {
            return;
        };
        if client.abandoned {
            return;
        }
        let key = client.server.clone();
        self.branch_failed(&key, branch, status, Bytes::new(), true, now);
    }

    /// Sends a response (already without our Via) upstream through the server transaction.
    /// An empty `body` means: generate the response ourselves with this status.
    fn forward_response_upstream(
        &mut self,
        key: &ServerKey,
        status: u16,
        data: Bytes,
        now: Instant,
    ) {
        if status >= 300 {
            // A failed initial INVITE ends the call's media (a failed re-INVITE does not).
            let failed_call = self.servers.get(key).and_then(|s| {
                let initial = s.request.to().ok().and_then(|t| t.tag()).is_none();
                (initial && s.request.method() == Some(Method::Invite))
                    .then(|| s.request.call_id().unwrap_or("").to_string())
            });
            if let Some(call_id) = failed_call {
                self.delete_media(&call_id, now);
            }
        }
        if data.is_empty() {
            self.respond(key, status, default_reason(status), now);
            return;
        }
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let result = match &mut tx.machine {
            ServerMachine::Invite(m) => m.send_response(now, status),
            ServerMachine::NonInvite(m) => m.send_response(now, status),
        };
        if result.is_err() {
            // E.g. a second 2xx after the first: forward it statelessly (§16.7 step 5).
            if (200..300).contains(&status) {
                self.send_upstream(key, data);
            }
            return;
        }
        tx.last_response = Some(data);
        if status >= 200 && tx.final_status.is_none() {
            tx.final_status = Some(status);
            if let Some(call_id) = offer_call_id(&tx.request) {
                self.offer_closed(&call_id);
            }
        }
        self.drain_server(key, now);
    }

    /// The proxy's own response on a server transaction.
    fn respond(&mut self, key: &ServerKey, status: u16, reason: &str, now: Instant) {
        if status == 503 {
            // Every 503 of ours says when to come back (RFC 3261 §21.5.4).
            let retry = self.config.overload.retry_after_s.to_string();
            self.respond_with(key, status, reason, &[("Retry-After", &retry)], now);
        } else {
            self.respond_with(key, status, reason, &[], now);
        }
    }

    /// An INVITE or UPDATE of the call got its final response (or its transaction ended).
    fn offer_closed(&mut self, call_id: &str) {
        if let Some(open) = self.open_offers.get_mut(call_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.open_offers.remove(call_id);
            }
        }
    }

    /// Which `[proxy.overload]` bound a new call would go over now, if any.
    fn overloaded(&self) -> Option<&'static str> {
        let bounds = &self.config.overload;
        if self.servers.len() >= bounds.max_transactions {
            return Some("transactions");
        }
        if bounds.max_queue_delay_ms > 0
            && self.input_delay > Duration::from_millis(bounds.max_queue_delay_ms)
        {
            return Some("input queue delay");
        }
        None
    }

    /// [`Proxy::respond`] with extra header fields.
    fn respond_with(
        &mut self,
        key: &ServerKey,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
        now: Instant,
    ) {
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let to_tag = format!(
            "{:016x}",
            via::Fnv::default().feed(key.0.as_bytes()).finish()
        );
        let mut builder = tx.request.response(status, reason).to_tag(&to_tag);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let built = builder.build().map(|m| m.bytes());
        let Ok(data) = built else {
            return;
        };
        if status >= 300 {
            self.counters.rejected += 1;
        }
        self.forward_response_upstream(key, status, data, now);
    }

    fn send_upstream(&mut self, key: &ServerKey, data: Bytes) {
        let Some(tx) = self.servers.get(key) else {
            return;
        };
        let destination = upstream_destination(&tx.request, tx.source, tx.transport);
        self.out.push_back(Transmit {
            data,
            destination,
            transport: tx.transport,
            local: Some(tx.local),
        });
    }

    /// Answers a request without creating a transaction (an error found before one exists).
    fn reject(
        &mut self,
        req: &Message,
        d: &Datagram,
        status: u16,
        reason: String,
        extra: &[String],
    ) {
        self.counters.rejected += 1;
        if req.method() == Some(Method::Ack) {
            return;
        }
        let to_tag = format!("{:016x}", via::Fnv::default().feed(req.as_bytes()).finish());
        let mut builder = req.response(status, &reason).to_tag(&to_tag);
        for h in extra {
            if let Some((name, value)) = h.split_once(": ") {
                builder = builder.header(name, value);
            }
        }
        if let Ok(m) = builder.build() {
            self.out.push_back(Transmit {
                data: m.bytes(),
                destination: upstream_destination(req, d.source, d.transport),
                transport: d.transport,
                local: Some(d.local),
            });
        }
    }

    /// A message the parser or validator refused: `400 <reason>` (or 505) when it is a
    /// request with enough to answer, dropped otherwise.
    fn reject_unparsable(&mut self, d: &Datagram, e: &anchorage_sip::ParseError) {
        let Ok(lenient) = Message::parse_lenient(d.data.clone()) else {
            self.counters.dropped += 1;
            return;
        };
        if !lenient.is_request() || !lenient.answerable() {
            self.counters.dropped += 1;
            return;
        }
        tracing::info!(call_id = lenient.call_id().unwrap_or(""), source = %d.source, error = %e, "bad request");
        self.reject(&lenient, d, e.status(), e.reason(), &[]);
    }

    // ------------------------------------------------------------------- drain

    fn drain_server(&mut self, key: &ServerKey, now: Instant) {
        loop {
            let Some(tx) = self.servers.get_mut(key) else {
                return;
            };
            let action = match &mut tx.machine {
                ServerMachine::Invite(m) => m.poll_action(),
                ServerMachine::NonInvite(m) => m.poll_action(),
            };
            let Some(action) = action else {
                break;
            };
            match action {
                Action::Send100Trying => {
                    if let Ok(m) = tx.request.response(100, "Trying").build() {
                        let data = m.bytes();
                        self.send_upstream(key, data);
                    }
                }
                Action::SendResponse(_) | Action::RetransmitResponse(_) => {
                    if let Some(data) = tx.last_response.clone() {
                        self.send_upstream(key, data);
                    }
                }
                Action::PassRequestToTu => self.route_new_request(key, now),
                Action::Terminated => {
                    if let Some(tx) = self.servers.remove(key) {
                        if tx.final_status.is_none() {
                            if let Some(call_id) = offer_call_id(&tx.request) {
                                self.offer_closed(&call_id);
                            }
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
        self.schedule_server(key);
    }

    fn drain_client(&mut self, branch: &str, now: Instant) {
        loop {
            let Some(c) = self.clients.get_mut(branch) else {
                return;
            };
            let action = match &mut c.machine {
                ClientMachine::Invite(m) => m.poll_action(),
                ClientMachine::NonInvite(m) => m.poll_action(),
            };
            let Some(action) = action else {
                break;
            };
            let send = Transmit {
                data: c.request.bytes(),
                destination: c.destination,
                transport: c.transport,
                local: None,
            };
            match action {
                Action::SendRequest | Action::RetransmitRequest => self.out.push_back(send),
                Action::SendAck => {
                    if let Some(resp) = &self.pending_response {
                        if let Some(ack) = build_ack(&c.request, resp) {
                            self.out.push_back(Transmit { data: ack, ..send });
                        }
                    }
                }
                Action::PassResponseToTu(status) => self.on_branch_response(branch, status, now),
                Action::Timeout(_) => self.on_branch_failure(branch, 408, now),
                Action::TimerC {
                    provisional_received,
                } => {
                    if provisional_received {
                        self.cancel_branch(branch, now);
                    } else {
                        self.on_branch_failure(branch, 408, now);
                    }
                }
                Action::TransportError => self.on_branch_failure(branch, 503, now),
                Action::Terminated => {
                    self.clients.remove(branch);
                    return;
                }
                _ => {}
            }
        }
        self.schedule_client(branch);
    }

    fn schedule_server(&mut self, key: &ServerKey) {
        let Some(tx) = self.servers.get_mut(key) else {
            return;
        };
        let next = match &tx.machine {
            ServerMachine::Invite(m) => m.poll_timeout(),
            ServerMachine::NonInvite(m) => m.poll_timeout(),
        };
        if let Some(at) = next {
            if tx.scheduled != Some(at) {
                tx.scheduled = Some(at);
                self.timers.push(at, TimerRef::Server(key.clone()));
            }
        }
    }

    fn schedule_client(&mut self, branch: &str) {
        let Some(c) = self.clients.get_mut(branch) else {
            return;
        };
        let machine_next = match &c.machine {
            ClientMachine::Invite(m) => m.poll_timeout(),
            ClientMachine::NonInvite(m) => m.poll_timeout(),
        };
        let next = match (machine_next, c.failover_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            if c.scheduled != Some(at) {
                c.scheduled = Some(at);
                self.timers.push(at, TimerRef::Client(branch.to_string()));
            }
        }
    }

    fn schedule_dialog_sweep(&mut self, now: Instant) {
        if self.dialog_sweep.is_none() && !self.dialogs.is_empty() {
            let at = now + Duration::from_secs(1);
            self.dialog_sweep = Some(at);
            self.timers.push(at, TimerRef::Dialogs);
        }
    }

    /// How much the CSeq of an in-dialog request must grow after requests of our own
    /// (DESIGN.md "Dialogs": CSeq renumbering).
    fn cseq_offset(&self, req: &Message) -> Option<u32> {
        let to_tag = req.to().ok()?.tag()?.to_string();
        let from_tag = tag_of(req.from());
        let dialog = self
            .dialogs
            .between(req.call_id().ok()?, &from_tag, &to_tag)?;
        Some(dialog.cseq_offset_from(&from_tag))
    }

    /// A response to a renumbered request goes back with the number its sender used.
    fn restore_cseq(&self, key: &ServerKey, response: Message) -> Message {
        let Some(server) = self.servers.get(key) else {
            return response;
        };
        match (server.request.cseq(), response.cseq()) {
            (Ok(sent), Ok(got)) if sent.seq != got.seq => {
                let mut e = response.edit();
                if e.set_cseq_number(sent.seq).is_err() {
                    return response;
                }
                e.finish_message().unwrap_or(response)
            }
            _ => response,
        }
    }

    fn track_dialog(&mut self, key: &ServerKey, response: &Message, now: Instant) {
        let Some(server) = self.servers.get(key) else {
            return;
        };
        let changed = self.dialogs.on_response(
            &server.request,
            server.source,
            server.transport,
            server.local,
            response,
            now,
        );
        if changed {
            self.schedule_dialog_sweep(now);
        }
    }
}

enum RouteChoice {
    RequestUri,
    Route(Target),
    Set(Vec<Target>, FailoverPolicy),
}

/// Whether a message carries an SDP body.
fn carries_sdp(m: &Message) -> bool {
    !m.body().is_empty()
        && m.content_type()
            .is_some_and(|t| t.len() >= 15 && t[..15].eq_ignore_ascii_case(b"application/sdp"))
}

/// §16.7 step 6: 6xx beats everything; otherwise the lowest class wins (first one of a class).
fn better_response(new: u16, best: u16) -> bool {
    if best >= 600 {
        return false;
    }
    if new >= 600 {
        return true;
    }
    new / 100 < best / 100
}

/// An address a party behind NAT writes in its Contact: RFC 1918, RFC 6598 (CGNAT), link-local,
/// and IPv6 unique-local or link-local.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            a.is_private() || a.is_link_local() || (first == 100 && (64..128).contains(&second))
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

fn method_key<'a>(method: &Method<'a>) -> &'a str {
    method.as_str()
}

fn server_key(req: &Message, method: &str) -> Option<ServerKey> {
    let via = req.top_via().ok()?;
    let branch = via.branch().unwrap_or("");
    let branch = if branch.starts_with(anchorage_sip::BRANCH_MAGIC_COOKIE) {
        branch.to_string()
    } else {
        // RFC 2543 fallback: no unique branch; identify by dialog fields and CSeq.
        format!(
            "2543:{}:{}:{}:{}",
            req.request_uri_raw()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            req.from().ok().and_then(|f| f.tag()).unwrap_or(""),
            req.call_id().unwrap_or(""),
            req.cseq().map(|c| c.seq).unwrap_or(0)
        )
    };
    let sent_by = format!("{}:{}", via.host, via.port.unwrap_or(5060));
    Some((branch, sent_by, method.to_string()))
}

/// Where responses to `req` go: over the connection for streams, else by its top Via with
/// `received`/`rport` taken from the packet (§18.2.2, RFC 3581).
fn upstream_destination(req: &Message, source: SocketAddr, transport: Transport) -> SocketAddr {
    if transport.is_reliable() {
        return source;
    }
    let Ok(via) = req.top_via() else {
        return source;
    };
    if via.params.get("rport").is_some() {
        return source;
    }
    let port = via.port.unwrap_or(5060);
    SocketAddr::new(source.ip(), port)
}

fn rr_value(l: &Listener) -> String {
    let transport = match l.transport {
        Transport::Udp => "",
        Transport::Tcp => ";transport=tcp",
    };
    format!(
        "<sip:{}:{}{};lr>",
        l.advertise_host, l.advertise_port, transport
    )
}

/// §9.1: a CANCEL for a forwarded INVITE: same Request-URI, Call-ID, To, From, CSeq number,
/// Route and top Via as the INVITE.
fn build_cancel(invite: &Message) -> Option<Bytes> {
    let uri = std::str::from_utf8(invite.request_uri_raw()?).ok()?;
    let via = std::str::from_utf8(invite.header(HeaderName::Via)?.values().next()?).ok()?;
    let from = std::str::from_utf8(invite.header(HeaderName::From)?.value()).ok()?;
    let to = std::str::from_utf8(invite.header(HeaderName::To)?.value()).ok()?;
    let seq = invite.cseq().ok()?.seq;
    let routes: Vec<&str> = invite
        .headers_of(HeaderName::Route)
        .filter_map(|h| std::str::from_utf8(h.value()).ok())
        .collect();
    RequestBuilder::new(Method::Cancel, uri)
        .via(via)
        .from(from)
        .to(to)
        .call_id(invite.call_id().ok()?)
        .cseq(seq)
        .routes(routes)
        .max_forwards(70)
        .build()
        .ok()
        .map(|m| m.bytes())
}

/// §17.1.1.3: the ACK for a non-2xx final response: Request-URI, Call-ID, From, CSeq number,
/// top Via and Route of the INVITE; To of the response.
fn build_ack(invite: &Message, response: &Message) -> Option<Bytes> {
    let uri = std::str::from_utf8(invite.request_uri_raw()?).ok()?;
    let via = std::str::from_utf8(invite.header(HeaderName::Via)?.values().next()?).ok()?;
    let from = std::str::from_utf8(invite.header(HeaderName::From)?.value()).ok()?;
    let to = std::str::from_utf8(response.header(HeaderName::To)?.value()).ok()?;
    let seq = invite.cseq().ok()?.seq;
    let routes: Vec<&str> = invite
        .headers_of(HeaderName::Route)
        .filter_map(|h| std::str::from_utf8(h.value()).ok())
        .collect();
    RequestBuilder::new(Method::Ack, uri)
        .via(via)
        .from(from)
        .to(to)
        .call_id(invite.call_id().ok()?)
        .cseq(seq)
        .routes(routes)
        .max_forwards(70)
        .build()
        .ok()
        .map(|m| m.bytes())
}

/// xorshift64*: a small deterministic generator for weighted choice (seeded by the caller).
fn next_random(state: &mut u64, below: u32) -> u32 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
    if below == 0 {
        0
    } else {
        (r % u64::from(below)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn proxy(config: &str) -> Proxy {
        let cfg = anchorage_config::parse(config).unwrap();
        let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        Proxy::new(
            CoreConfig {
                node_id: "n1".into(),
                listeners: vec![Listener {
                    transport: Transport::Udp,
                    local,
                    advertise_host: "127.0.0.1".into(),
                    advertise_port: 5060,
                }],
                timers: TimerConfig::default(),
                router: Router::new(cfg.proxy.route),
                dialog_max_age: Duration::from_secs(3600),
                relay_sets: cfg.proxy.relay_set,
                default_media: cfg.proxy.media,
                ng_client: anchorage_ng::ClientConfig::default(),
                // These scenarios jump the clock by seconds without answering health pings:
                // pings once an hour keep every relay up (the detector has its own tests).
                relay_health: crate::media::HealthConfig {
                    interval: Duration::from_secs(3600),
                    max_window: Duration::from_secs(6 * 3600),
                    ..crate::media::HealthConfig::default()
                },
                reanchor: cfg.proxy.reanchor,
                flood: cfg.proxy.flood,
                overload: cfg.proxy.overload,
            },
            7,
            epoch(),
        )
    }

    fn datagram(text: &str, from: &str) -> Datagram {
        Datagram {
            data: Bytes::from(text.replace('\n', "\r\n")),
            source: from.parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        }
    }

    fn drain(p: &mut Proxy) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
    }

    const INVITE: &str = "INVITE sip:bob@127.0.0.1:9 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\n\
From: <sip:alice@example.com>;tag=a1\n\
To: <sip:bob@example.com>\n\
Call-ID: c1\n\
CSeq: 1 INVITE\n\
Contact: <sip:alice@127.0.0.1:5070>\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n";

    /// Answers every request in `out` that went to the callee with `status`, as the callee.
    fn answer_all(p: &mut Proxy, out: &[Transmit], status: u16, now: Instant) {
        for t in out.iter().filter(|t| t.destination.port() == 9) {
            let req = Message::parse(t.data.clone()).unwrap();
            if req.method() == Some(Method::Ack) {
                continue;
            }
            let resp = req.response(status, "X").to_tag("callee").build().unwrap();
            p.handle_datagram(
                Datagram {
                    data: resp.bytes(),
                    source: "127.0.0.1:9".parse().unwrap(),
                    local: "127.0.0.1:5060".parse().unwrap(),
                    transport: Transport::Udp,
                },
                now,
            );
        }
    }

    /// The [`INVITE`] template as a `method` request for `ruri`, with `id` in its branch and
    /// Call-ID (its own transaction).
    fn request_text(method: &str, ruri: &str, id: &str) -> String {
        INVITE
            .replace("INVITE sip:bob@127.0.0.1:9", &format!("{method} {ruri}"))
            .replace("CSeq: 1 INVITE", &format!("CSeq: 1 {method}"))
            .replace("z9hG4bK-1", &format!("z9hG4bK-{id}"))
            .replace("Call-ID: c1", &format!("Call-ID: {id}"))
    }

    /// Final responses among `out`, as (status, message).
    fn finals(out: &[Transmit]) -> Vec<(u16, Message)> {
        out.iter()
            .filter_map(|t| Message::parse(t.data.clone()).ok())
            .filter_map(|m| m.status().filter(|s| *s >= 200).map(|s| (s, m)))
            .collect()
    }

    #[test]
    fn a_request_addressed_to_the_proxy_itself_is_answered_not_looped() {
        let mut p = proxy("");
        let now = epoch();
        // A keep-alive OPTIONS from a trunk or a monitor: 200 with what we take.
        let options = request_text("OPTIONS", "sip:127.0.0.1:5060", "self");
        p.handle_datagram(datagram(&options, "127.0.0.1:5070"), now);
        let out = drain(&mut p);
        assert_eq!(out.len(), 1, "answered, nothing forwarded");
        assert_eq!(out[0].destination, "127.0.0.1:5070".parse().unwrap());
        let (status, ok) = finals(&out).remove(0);
        assert_eq!(status, 200);
        assert_eq!(ok.cseq().unwrap().method, Method::Options);
        assert!(ok.to().unwrap().tag().is_some());
        let allow: Vec<&str> = ok.allow().collect();
        assert!(
            allow.contains(&"INVITE") && allow.contains(&"OPTIONS"),
            "{allow:?}"
        );
        let accept = ok.headers_named(b"Accept").next().map(|h| h.value());
        assert_eq!(accept, Some(&b"application/sdp"[..]));
        // An OPTIONS with a user part is answered the same; an INVITE for a user at our
        // address finds nobody here (404). Nothing is sent back to ourselves.
        for (i, (method, ruri)) in [
            ("OPTIONS", "sip:ping@127.0.0.1:5060"),
            ("INVITE", "sip:bob@127.0.0.1:5060"),
        ]
        .into_iter()
        .enumerate()
        {
            let req = request_text(method, ruri, &format!("self{i}"));
            p.handle_datagram(datagram(&req, "127.0.0.1:5070"), now);
            let out = drain(&mut p);
            assert!(out.iter().all(|t| t.destination.port() == 5070), "{method}");
            let expected = if method == "OPTIONS" { 200 } else { 404 };
            let statuses: Vec<u16> = finals(&out).iter().map(|(s, _)| *s).collect();
            assert_eq!(statuses, vec![expected], "{method} {ruri}");
        }
        // Inside a dialog this node does not know: 481.
        let bye = request_text("BYE", "sip:bob@127.0.0.1:5060", "selfbye").replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        );
        p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
        let statuses: Vec<u16> = finals(&drain(&mut p)).iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, vec![481]);
    }

    /// Sets up call `call_id` from a caller at `caller_source` whose Contact is
    /// `caller_contact`, answered by the callee (reached at 127.0.0.1:9) with `callee_contact`
    /// in its 200; returns the Route set the parties use (our Record-Route).
    fn call_with_contacts(
        p: &mut Proxy,
        call_id: &str,
        caller_source: &str,
        caller_contact: &str,
        callee_contact: &str,
        now: Instant,
    ) -> String {
        let invite = request_text("INVITE", "sip:bob@127.0.0.1:9", call_id)
            .replace("<sip:alice@127.0.0.1:5070>", caller_contact);
        p.handle_datagram(datagram(&invite, caller_source), now);
        let out = drain(p);
        let forwarded = out.iter().find(|t| t.data.starts_with(b"INVITE ")).unwrap();
        let req = Message::parse(forwarded.data.clone()).unwrap();
        let rr = String::from_utf8_lossy(req.header(HeaderName::RecordRoute).unwrap().value())
            .into_owned();
        let ok = req
            .response(200, "OK")
            .to_tag("b1")
            .header("Contact", callee_contact)
            .header("Record-Route", &rr)
            .build()
            .unwrap();
        p.handle_datagram(
            Datagram {
                data: ok.bytes(),
                source: forwarded.destination,
                local: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
            now,
        );
        drain(p);
        rr
    }

    /// An in-dialog request: `method_cseq` is e.g. `"BYE 7"`; `from`/`to` are (user, tag).
    fn in_dialog(
        method_cseq: &str,
        ruri: &str,
        via: &str,
        route: &str,
        from: (&str, &str),
        to: (&str, &str),
        call_id: &str,
    ) -> String {
        let (method, cseq) = method_cseq.split_once(' ').unwrap();
        format!(
            "{method} {ruri} SIP/2.0\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{call_id}-{cseq}\n\
             Route: {route}\nFrom: <sip:{}@example.com>;tag={}\nTo: <sip:{}@example.com>;tag={}\n\
             Call-ID: {call_id}\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContent-Length: 0\n\n",
            from.0, from.1, to.0, to.1
        )
    }

    /// Hands `text` from `source` to the proxy; returns the request it forwarded (same method).
    fn forwarded(p: &mut Proxy, text: &str, source: &str, now: Instant) -> Transmit {
        let method = text.split(' ').next().unwrap_or("").as_bytes().to_vec();
        p.handle_datagram(datagram(text, source), now);
        drain(p)
            .into_iter()
            .find(|t| t.data.starts_with(&method))
            .expect("the request forwarded")
    }

    #[test]
    fn in_dialog_requests_reach_a_party_behind_nat_at_its_real_address() {
        let mut p = proxy("");
        let now = epoch();
        // The caller is behind NAT: its Contact says 10.0.0.5:5062, its packets come from
        // 203.0.113.7:40000. The callee's Contact is private too; it is reached at 127.0.0.1:9.
        let rr = call_with_contacts(
            &mut p,
            "nat1",
            "203.0.113.7:40000",
            "<sip:alice@10.0.0.5:5062>",
            "<sip:bob@192.168.1.20:5060>",
            now,
        );
        // The callee's BYE to the caller.
        let bye_to_alice = |call_id: &str| {
            let route = &rr;
            in_dialog(
                "BYE 7",
                "sip:alice@10.0.0.5:5062",
                "127.0.0.1:9",
                route,
                ("bob", "b1"),
                ("alice", "a1"),
                call_id,
            )
        };
        let sent = forwarded(&mut p, &bye_to_alice("nat1"), "127.0.0.1:9", now);
        assert_eq!(sent.destination, "203.0.113.7:40000".parse().unwrap());
        assert!(sent
            .data
            .starts_with(b"BYE sip:alice@10.0.0.5:5062 SIP/2.0\r\n"));
        // The caller's ACK for the 2xx goes to where the callee's 200 came from.
        let ack = in_dialog(
            "ACK 1",
            "sip:bob@192.168.1.20:5060",
            "10.0.0.5:5062",
            &rr,
            ("alice", "a1"),
            ("bob", "b1"),
            "nat1",
        );
        let sent = forwarded(&mut p, &ack, "203.0.113.7:40000", now);
        assert_eq!(sent.destination, "127.0.0.1:9".parse().unwrap());

        // A party on the proxy's own LAN (Contact = where it sends from) is reached as
        // written.
        let lan_rr = call_with_contacts(
            &mut p,
            "lan1",
            "10.0.0.5:5062",
            "<sip:alice@10.0.0.5:5062>",
            "<sip:bob@127.0.0.1:9>",
            now,
        );
        assert_eq!(lan_rr, rr, "one proxy, one Record-Route");
        let sent = forwarded(&mut p, &bye_to_alice("lan1"), "127.0.0.1:9", now);
        assert_eq!(sent.destination, "10.0.0.5:5062".parse().unwrap());
    }

    #[test]
    fn private_addresses_are_the_ones_nat_hides() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.7",
            "100.128.0.1",
            "127.0.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "::1",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_scanner_announcing_itself_is_dropped_unanswered() {
        let mut p =
            proxy("[proxy.flood]\ndrop_user_agents = [\"friendly-scanner\", \"sipvicious\"]\n");
        let t0 = epoch();
        let options = |ua: &str, i: usize| {
            datagram(
                &request_text("OPTIONS", "sip:127.0.0.1:5060", &format!("ua{i}")).replace(
                    "Max-Forwards: 70\n",
                    &format!("Max-Forwards: 70\nUser-Agent: {ua}\n"),
                ),
                "127.0.0.1:5070",
            )
        };
        p.handle_datagram(options("Friendly-Scanner", 0), t0);
        p.handle_datagram(options("sipvicious 0.3.4", 1), t0);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.counters().user_agent_dropped, 2);
        p.handle_datagram(options("Yealink SIP-T46S", 2), t0);
        assert_eq!(finals(&drain(&mut p)).len(), 1);
        assert_eq!(p.counters().user_agent_dropped, 2);
    }

    #[test]
    fn a_source_over_the_rate_limit_is_dropped_and_others_are_served() {
        let mut p = proxy("[proxy.flood]\nrequests_per_second = 5\nburst = 5\nblock_s = 2\n");
        let t0 = epoch();
        let options = |i: usize, port: u16| {
            datagram(
                &request_text("OPTIONS", "sip:127.0.0.1:5060", &format!("flood{port}-{i}"))
                    .replace("127.0.0.1:5070", &format!("127.0.0.1:{port}")),
                &format!("192.0.2.{}:{port}", port - 5000),
            )
        };
        // 192.0.2.70 sends 8 at once: 5 answered, the 6th blocks it, nothing more answered.
        let mut answered = 0;
        for i in 0..8 {
            p.handle_datagram(options(i, 5070), t0);
            answered += finals(&drain(&mut p)).len();
        }
        assert_eq!(answered, 5);
        assert_eq!(
            (p.counters().flood_dropped, p.counters().flood_blocks),
            (3, 1)
        );
        // Garbage from it is dropped too, unanswered; responses are not requests and pass.
        p.handle_datagram(datagram("OPTIONS nonsense\n\n", "192.0.2.70:5070"), t0);
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.counters().flood_dropped, 4);
        let responses = p.counters().responses;
        p.handle_datagram(
            datagram(
                "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\nFrom: <sip:a@h>;tag=1\nTo: <sip:b@h>;tag=2\nCall-ID: r\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
                "192.0.2.70:5070",
            ),
            t0,
        );
        assert_eq!(p.counters().responses, responses + 1);
        // Another source is served meanwhile.
        p.handle_datagram(options(0, 5071), t0);
        assert_eq!(finals(&drain(&mut p)).len(), 1);
        // After block_s the first source is served again.
        let later = t0 + Duration::from_secs(2);
        p.handle_datagram(options(100, 5070), later);
        assert_eq!(finals(&drain(&mut p)).len(), 1);
    }

    #[test]
    fn state_returns_to_empty_after_many_transactions() {
        let mut p = proxy("");
        let t0 = epoch();
        let mut now = t0;
        let (mut peak_timers, mut peak_live) = (0, 0);
        for i in 0..10_000u32 {
            let method = if i % 2 == 0 { "OPTIONS" } else { "INVITE" };
            let text = request_text(method, "sip:bob@127.0.0.1:9", &format!("c{i}"));
            p.handle_datagram(datagram(&text, "127.0.0.1:5070"), now);
            let out = drain(&mut p);
            // Half the INVITEs succeed, half fail; OPTIONS get 200.
            let status = if method == "INVITE" && i % 4 == 1 {
                486
            } else {
                200
            };
            answer_all(&mut p, &out, status, now);
            drain(&mut p);
            now += Duration::from_micros(200);
            p.handle_timeout(now);
            drain(&mut p);
            peak_timers = peak_timers.max(p.timer_queue_len());
            let (servers, clients) = p.transaction_count();
            peak_live = peak_live.max(servers + clients);
        }
        // Let every timer run out: Timer B/D/H/I/J/K/L/M are all below 64*T1 + 32 s.
        for step in 1..=80 {
            p.handle_timeout(now + Duration::from_secs(step));
            drain(&mut p);
        }
        assert_eq!(p.transaction_count(), (0, 0));
        // Only the once-a-second dialog sweep is left.
        assert_eq!(p.timer_queue_len(), 1);
        // The timer queue follows the live transactions (deadlines re-armed as states change
        // leave a stale entry or two until popped), not the total ever created.
        assert!(
            peak_timers <= 3 * peak_live,
            "timer queue peaked at {peak_timers} for {peak_live} live transactions"
        );
        // INVITEs answered 200 left confirmed dialogs; they end at the maximum age (1 h here).
        assert_eq!(p.dialogs().len(), 2_500);
        p.handle_timeout(now + Duration::from_secs(3601));
        assert_eq!(p.dialogs().len(), 0);
        p.handle_timeout(now + Duration::from_secs(3603));
        assert_eq!(p.timer_queue_len(), 0, "no sweep without dialogs");
    }

    const OFFER_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const ANSWER_SDP: &str = "v=0\r\no=bob 9 9 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

    /// Takes the ng request the proxy sent and answers it as a relay would, with `sdp`.
    fn relay_replies(p: &mut Proxy, sdp: &str, now: Instant) -> anchorage_ng::Request {
        let (to, datagram) = p.poll_ng_transmit(now).expect("an ng request to the relay");
        assert_eq!(to.to_string(), "127.0.0.1:2223");
        let incoming = anchorage_ng::decode_request(&datagram).unwrap();
        let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
        let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
        p.handle_ng_datagram(to, &bytes, now);
        incoming.request
    }

    #[test]
    fn media_flow_through_a_relay_records_each_legs_sdp() {
        let mut p = proxy(
            "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }]\n\n[proxy.media]\nset = \"m\"\ncallee_flags = \"replace-origin\"\n",
        );
        let now = epoch();
        // The SDP is written with LF here; datagram() turns every LF into CRLF.
        let invite = INVITE.replace(
            "Content-Length: 0\n\n",
            &format!(
                "Content-Type: application/sdp\nContent-Length: {}\n\n{}",
                OFFER_SDP.len(),
                OFFER_SDP.replace("\r\n", "\n")
            ),
        );
        p.handle_datagram(datagram(&invite, "127.0.0.1:5070"), now);
        // Only the 100 Trying goes out: the INVITE waits for the relay.
        let out = drain(&mut p);
        assert!(out.iter().all(|t| !t.data.starts_with(b"INVITE ")));
        let relay_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        let offer = relay_replies(&mut p, relay_offer, now);
        let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
            panic!("{offer:?}")
        };
        assert_eq!((o.call_id.0.as_str(), o.from_tag.0.as_str()), ("c1", "a1"));
        assert_eq!(&o.sdp[..], OFFER_SDP.as_bytes());
        let out = drain(&mut p);
        let forwarded = out
            .iter()
            .find(|t| t.data.starts_with(b"INVITE "))
            .expect("INVITE sent on");
        assert!(forwarded.data.ends_with(relay_offer.as_bytes()));
        // The callee answers; the 200 waits for the relay's answer.
        let req = Message::parse(forwarded.data.clone()).unwrap();
        let ok = req
            .response(200, "OK")
            .to_tag("b1")
            .body("application/sdp", ANSWER_SDP.as_bytes())
            .build()
            .unwrap();
        p.handle_datagram(
            Datagram {
                data: ok.bytes(),
                source: "127.0.0.1:9".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
            now,
        );
        assert!(drain(&mut p)
            .iter()
            .all(|t| !t.data.starts_with(b"SIP/2.0 200")));
        let relay_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\n";
        let answer = relay_replies(&mut p, relay_answer, now);
        let anchorage_ng::RequestKind::Answer(a) = &answer.kind else {
            panic!("{answer:?}")
        };
        assert_eq!(a.to_tag.as_ref().map(|t| t.0.as_str()), Some("b1"));
        let out = drain(&mut p);
        let to_caller = out
            .iter()
            .find(|t| t.data.starts_with(b"SIP/2.0 200"))
            .expect("200 sent on");
        assert!(to_caller.data.ends_with(relay_answer.as_bytes()));
        let call = p.anchored_call("c1").unwrap();
        assert_eq!(call.node, "r1");
        assert_eq!(call.caller.received.as_deref(), Some(OFFER_SDP.as_bytes()));
        assert_eq!(call.callee.sent.as_deref(), Some(relay_offer.as_bytes()));
        assert_eq!(
            call.callee.origin_sent,
            Some(("relay".into(), "5".into(), 7))
        );
        assert_eq!(call.callee.received.as_deref(), Some(ANSWER_SDP.as_bytes()));
        assert_eq!(call.caller.sent.as_deref(), Some(relay_answer.as_bytes()));
        assert_eq!(
            call.caller.origin_sent,
            Some(("relay".into(), "6".into(), 3))
        );
        assert_eq!(p.relays().nodes()[0].calls, 1);
        // A BYE deletes the session.
        let bye = INVITE
            .replace("INVITE sip:", "BYE sip:")
            .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
            .replace(
                "To: <sip:bob@example.com>",
                "To: <sip:bob@example.com>;tag=b1",
            )
            .replace("z9hG4bK-1", "z9hG4bK-2");
        p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
        let (_, delete) = p.poll_ng_transmit(now).expect("a delete");
        let delete = anchorage_ng::decode_request(&delete).unwrap().request;
        assert!(
            matches!(delete.kind, anchorage_ng::RequestKind::Delete(_)),
            "{delete:?}"
        );
        assert!(p.anchored_call("c1").is_none());
        assert_eq!(p.relays().nodes()[0].calls, 0);
    }

    /// Answers the next ng request, which must go to `node`, with `sdp`.
    fn relay_at_replies(
        p: &mut Proxy,
        node: &str,
        sdp: &str,
        now: Instant,
    ) -> anchorage_ng::Request {
        let (to, datagram) = p.poll_ng_transmit(now).expect("an ng request");
        assert_eq!(to.to_string(), node);
        let incoming = anchorage_ng::decode_request(&datagram).unwrap();
        let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
        let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
        p.handle_ng_datagram(to, &bytes, now);
        incoming.request
    }

    fn text(t: &Transmit) -> String {
        String::from_utf8_lossy(&t.data).into_owned()
    }

    /// A 200 with `sdp` from the party a request went to (the proxy's Via popped by it).
    fn ok_to(p: &mut Proxy, request: &Transmit, to_tag: Option<&str>, sdp: &str, now: Instant) {
        let req = Message::parse(request.data.clone()).unwrap();
        let mut b = req.response(200, "OK");
        if let Some(tag) = to_tag {
            b = b.to_tag(tag);
        }
        let contact = if request.destination.port() == 9 {
            "Contact: <sip:bob@127.0.0.1:9>"
        } else {
            "Contact: <sip:alice@127.0.0.1:5070>"
        };
        let (name, value) = contact.split_once(": ").unwrap();
        let rr: Vec<String> = req
            .headers_of(HeaderName::RecordRoute)
            .map(|h| String::from_utf8_lossy(h.value()).into_owned())
            .collect();
        b = b.header(name, value);
        for r in &rr {
            b = b.header("Record-Route", r);
        }
        if !sdp.is_empty() {
            b = b.body("application/sdp", sdp.as_bytes());
        }
        let ok = b.build().unwrap();
        p.handle_datagram(
            Datagram {
                data: ok.bytes(),
                source: request.destination,
                local: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
            now,
        );
    }

    /// A proxy with relays r1 and r2 and a confirmed call c1 anchored on r1 (caller a1 at
    /// 127.0.0.1:5070, callee b1 at 127.0.0.1:9).
    fn call_on_r1(now: Instant) -> Proxy {
        let mut p = proxy(
            "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n",
        );
        let invite = INVITE.replace(
            "Content-Length: 0\n\n",
            &format!(
                "Content-Type: application/sdp\nContent-Length: {}\n\n{}",
                OFFER_SDP.len(),
                OFFER_SDP.replace("\r\n", "\n")
            ),
        );
        p.handle_datagram(datagram(&invite, "127.0.0.1:5070"), now);
        drain(&mut p);
        let r1_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
        relay_at_replies(&mut p, "127.0.0.1:2223", r1_offer, now);
        let out = drain(&mut p);
        let forwarded = out
            .iter()
            .find(|t| t.data.starts_with(b"INVITE "))
            .unwrap()
            .clone();
        ok_to(&mut p, &forwarded, Some("b1"), ANSWER_SDP, now);
        let r1_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
        relay_at_replies(&mut p, "127.0.0.1:2223", r1_answer, now);
        drain(&mut p);
        let ack = INVITE
            .replace("INVITE sip:bob@127.0.0.1:9", "ACK sip:bob@127.0.0.1:9")
            .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
            .replace(
                "To: <sip:bob@example.com>",
                "To: <sip:bob@example.com>;tag=b1",
            )
            .replace("z9hG4bK-1", "z9hG4bK-ack")
            .replace(
                "Max-Forwards: 70\n",
                "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5060;lr>\n",
            );
        p.handle_datagram(datagram(&ack, "127.0.0.1:5070"), now);
        drain(&mut p);

        p
    }

    /// Asserts that `out` holds exactly two `method` requests: one to the callee (bob) with CSeq
    /// `to_callee`, one to the caller (alice) with CSeq `to_caller`.
    fn assert_one_to_each(out: &[Transmit], method: &str, to_callee: u32, to_caller: u32) {
        let sent: Vec<String> = out
            .iter()
            .filter(|t| t.data.starts_with(format!("{method} ").as_bytes()))
            .map(text)
            .collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        for (user, cseq) in [("bob", to_callee), ("alice", to_caller)] {
            assert!(
                sent.iter()
                    .any(|m| m.starts_with(&format!("{method} sip:{user}@"))
                        && m.contains(&format!("CSeq: {cseq} {method}"))),
                "{method} to {user} with CSeq {cseq}: {sent:?}"
            );
        }
    }

    /// Starts moving r1's calls and answers the new node's ng requests; returns the job and
    /// the two re-INVITEs (to the callee, to the caller).
    fn move_r1_calls(p: &mut Proxy, now: Instant) -> (u64, Transmit, Transmit) {
        // Move every call of r1 (by API).
        let job = p
            .start_reanchor(
                crate::reanchor::Trigger::Api,
                Some("r1"),
                None,
                None,
                Default::default(),
                now,
            )
            .unwrap();
        let offer = relay_at_replies(
            p,
            "127.0.0.1:2224",
            "v=0\r\no=r2 77 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n",
            now,
        );
        let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
            panic!("{offer:?}")
        };
        assert_eq!(
            (
                o.from_tag.0.as_str(),
                o.to_tag.as_ref().map(|t| t.0.as_str())
            ),
            ("a1", Some("b1"))
        );
        assert_eq!(
            &o.sdp[..],
            OFFER_SDP.as_bytes(),
            "the caller's stored offer"
        );
        let answer = relay_at_replies(
            p,
            "127.0.0.1:2224",
            "v=0\r\no=r2 78 1 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n",
            now,
        );
        let anchorage_ng::RequestKind::Answer(a) = &answer.kind else {
            panic!("{answer:?}")
        };
        assert_eq!(
            &a.sdp[..],
            ANSWER_SDP.as_bytes(),
            "the callee's stored answer"
        );
        // Both re-INVITEs leave together.
        let out = drain(p);
        let to_callee = out
            .iter()
            .find(|t| t.destination.port() == 9)
            .expect("re-INVITE to the callee")
            .clone();
        let to_caller = out
            .iter()
            .find(|t| t.destination.port() == 5070)
            .expect("re-INVITE to the caller")
            .clone();
        (job, to_callee, to_caller)
    }

    #[test]
    fn a_call_is_reanchored_with_both_reinvites_at_once_and_renumbered_cseqs() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
        let callee_text = text(&to_callee);
        assert!(
            callee_text.starts_with("INVITE sip:bob@127.0.0.1:9 SIP/2.0\r\n"),
            "{callee_text}"
        );
        assert!(
            callee_text.contains("\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"),
            "{callee_text}"
        );
        assert!(
            callee_text.contains("\r\nTo: <sip:bob@example.com>;tag=b1\r\n"),
            "{callee_text}"
        );
        assert!(
            callee_text.contains("\r\nCSeq: 2 INVITE\r\n"),
            "{callee_text}"
        );
        assert!(callee_text.contains("\r\nContact: <sip:alice@127.0.0.1:5070>\r\n"));
        assert!(
            !callee_text.contains("\r\nRoute:"),
            "only this proxy record-routed"
        );
        // The callee keeps the origin it knows, one version up; the media is on r2.
        assert!(
            callee_text.contains("o=relay 5 8 IN IP4 203.0.113.2\r\n"),
            "{callee_text}"
        );
        assert!(callee_text.contains("m=audio 40000 "));
        let caller_text = text(&to_caller);
        assert!(
            caller_text.starts_with("INVITE sip:alice@127.0.0.1:5070 SIP/2.0\r\n"),
            "{caller_text}"
        );
        assert!(
            caller_text.contains("\r\nFrom: <sip:bob@example.com>;tag=b1\r\n"),
            "{caller_text}"
        );
        assert!(
            caller_text.contains("\r\nTo: <sip:alice@example.com>;tag=a1\r\n"),
            "{caller_text}"
        );
        assert!(
            caller_text.contains("\r\nCSeq: 1 INVITE\r\n"),
            "{caller_text}"
        );
        assert!(
            caller_text.contains("o=relay 6 4 IN IP4 203.0.113.2\r\n"),
            "{caller_text}"
        );
        assert!(caller_text.contains("m=audio 40002 "));
        // A UA's own re-INVITE meanwhile: 491.
        let glare = INVITE
            .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
            .replace(
                "To: <sip:bob@example.com>",
                "To: <sip:bob@example.com>;tag=b1",
            )
            .replace("z9hG4bK-1", "z9hG4bK-glare");
        p.handle_datagram(datagram(&glare, "127.0.0.1:5070"), now);
        assert!(drain(&mut p)
            .iter()
            .any(|t| t.data.starts_with(b"SIP/2.0 491")));
        // Both answer: each gets its ACK, the old session goes.
        ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
        ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
        let out = drain(&mut p);
        assert_one_to_each(&out, "ACK", 2, 1);
        let (to, delete) = p.poll_ng_transmit(now).expect("the old session's delete");
        assert_eq!(to.to_string(), "127.0.0.1:2223");
        assert!(matches!(
            anchorage_ng::decode_request(&delete).unwrap().request.kind,
            anchorage_ng::RequestKind::Delete(_)
        ));
        let call = p.anchored_call("c1").unwrap();
        assert_eq!(call.node, "r2");
        assert_eq!(
            call.callee.origin_sent,
            Some(("relay".into(), "5".into(), 8))
        );
        let status = p.job(job).unwrap();
        assert_eq!(
            (status.total, status.done, status.failed, status.in_flight),
            (1, 1, 0, 0)
        );
        assert!(status.finished.is_some());
        // A retransmitted 200 gets the same ACK again and nothing else.
        ok_to(&mut p, &to_callee, None, ANSWER_SDP, now);
        let again: Vec<Transmit> = drain(&mut p);
        assert_eq!(
            again.len(),
            1,
            "{:?}",
            again.iter().map(text).collect::<Vec<_>>()
        );
        assert!(again[0].data.starts_with(b"ACK "));
        assert!(p.poll_ng_transmit(now).is_none());
        // The caller's BYE (its CSeq 2) reaches the callee as 3: the callee saw our 2.
        let bye = INVITE
            .replace("INVITE sip:bob@127.0.0.1:9", "BYE sip:bob@127.0.0.1:9")
            .replace("CSeq: 1 INVITE", "CSeq: 2 BYE")
            .replace(
                "To: <sip:bob@example.com>",
                "To: <sip:bob@example.com>;tag=b1",
            )
            .replace("z9hG4bK-1", "z9hG4bK-bye")
            .replace(
                "Max-Forwards: 70\n",
                "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5060;lr>\n",
            );
        p.handle_datagram(datagram(&bye, "127.0.0.1:5070"), now);
        let out = drain(&mut p);
        let forwarded = out
            .iter()
            .find(|t| t.data.starts_with(b"BYE "))
            .expect("BYE forwarded")
            .clone();
        assert!(
            text(&forwarded).contains("\r\nCSeq: 3 BYE\r\n"),
            "{}",
            text(&forwarded)
        );
        ok_to(&mut p, &forwarded, None, "", now);
        let out = drain(&mut p);
        let upstream = out
            .iter()
            .find(|t| t.data.starts_with(b"SIP/2.0 200"))
            .expect("200 upstream");
        assert!(
            text(upstream).contains("\r\nCSeq: 2 BYE\r\n"),
            "{}",
            text(upstream)
        );
        let (to, _) = p.poll_ng_transmit(now).expect("the new session's delete");
        assert_eq!(to.to_string(), "127.0.0.1:2224");
    }

    /// A final response with `status` (no body) from the party a request went to.
    fn reply_to(p: &mut Proxy, request: &Transmit, status: u16, now: Instant) {
        let req = Message::parse(request.data.clone()).unwrap();
        let resp = req.response(status, "Refused").build().unwrap();
        p.handle_datagram(
            Datagram {
                data: resp.bytes(),
                source: request.destination,
                local: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
            },
            now,
        );
    }

    /// Every ng request sent now other than health pings, with its destination port.
    fn ng_requests(p: &mut Proxy, now: Instant) -> Vec<(u16, anchorage_ng::Request)> {
        std::iter::from_fn(|| p.poll_ng_transmit(now))
            .map(|(to, d)| (to.port(), anchorage_ng::decode_request(&d).unwrap().request))
            .filter(|(_, r)| !matches!(r.kind, anchorage_ng::RequestKind::Ping))
            .collect()
    }

    fn is_delete(r: &anchorage_ng::Request) -> bool {
        matches!(r.kind, anchorage_ng::RequestKind::Delete(_))
    }

    #[test]
    fn a_refused_move_rolls_the_moved_leg_back_to_the_live_old_relay() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
        reply_to(&mut p, &to_callee, 488, now);
        ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
        let out = drain(&mut p);
        // The 488 is ACKed by its transaction, the caller's 200 by us; then the caller, who
        // took the new relay, is given the old one back, one version up again.
        assert!(out
            .iter()
            .any(|t| t.destination.port() == 9 && t.data.starts_with(b"ACK ")));
        let rollback = out
            .iter()
            .find(|t| t.destination.port() == 5070 && t.data.starts_with(b"INVITE "))
            .expect("a rollback re-INVITE to the caller");
        let rollback = text(rollback);
        assert!(rollback.contains("\r\nCSeq: 2 INVITE\r\n"), "{rollback}");
        assert!(rollback.contains("m=audio 30002 "), "{rollback}");
        assert!(
            rollback.contains("o=relay 6 5 IN IP4 203.0.113.1\r\n"),
            "{rollback}"
        );
        let ng = ng_requests(&mut p, now);
        assert_eq!(ng.len(), 1, "{ng:?}");
        assert!(
            ng[0].0 == 2224 && is_delete(&ng[0].1),
            "the new session goes: {ng:?}"
        );
        assert_eq!(p.anchored_call("c1").unwrap().node, "r1");
        let status = p.job(job).unwrap();
        assert_eq!((status.done, status.failed), (0, 1));
    }

    #[test]
    fn a_party_that_never_answers_ends_the_call_and_leaves_no_session() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let (job, _to_callee, to_caller) = move_r1_calls(&mut p, now);
        ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
        drain(&mut p);
        ng_requests(&mut p, now);
        // The callee stays silent past the move's deadline (8 s by default).
        let later = now + Duration::from_secs(8);
        p.handle_timeout(later);
        let out = drain(&mut p);
        assert_one_to_each(&out, "BYE", 3, 2);
        let mut deleted: Vec<u16> = ng_requests(&mut p, later)
            .into_iter()
            .filter(|(_, r)| is_delete(r))
            .map(|(port, _)| port)
            .collect();
        deleted.sort();
        assert_eq!(deleted, vec![2223, 2224], "both sessions deleted");
        assert!(p.anchored_call("c1").is_none());
        assert!(p.dialogs().is_empty());
        assert_eq!(p.relays().nodes().iter().map(|n| n.calls).sum::<usize>(), 0);
        assert_eq!(p.job(job).unwrap().failed, 1);
    }

    #[test]
    fn a_new_relay_that_does_not_answer_is_given_up_and_the_call_stays_on_the_old_one() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let job = p
            .start_reanchor(
                crate::reanchor::Trigger::Api,
                Some("r1"),
                None,
                None,
                Default::default(),
                now,
            )
            .unwrap();
        let sent = ng_requests(&mut p, now);
        assert!(sent.iter().any(
            |(port, r)| *port == 2224 && matches!(r.kind, anchorage_ng::RequestKind::Offer(_))
        ));
        // r2 dies before answering: after the ng timeout (1 s) the move gives r2 up; the set
        // has no other node, so the call stays where it is.
        let later = now + Duration::from_millis(1100);
        p.handle_timeout(later);
        let sent = ng_requests(&mut p, later);
        assert!(
            sent.iter().any(|(port, r)| *port == 2224 && is_delete(r)),
            "whatever r2 may hold is deleted there: {sent:?}"
        );
        assert!(
            !sent.iter().any(|(port, _)| *port == 2223),
            "nothing is sent to the live old relay: {sent:?}"
        );
        assert!(!drain(&mut p).iter().any(|t| t.data.starts_with(b"INVITE ")));
        assert_eq!(p.anchored_call("c1").unwrap().node, "r1");
        let status = p.job(job).unwrap();
        assert_eq!((status.done, status.failed, status.in_flight), (0, 1, 0));
    }

    #[test]
    fn a_move_with_a_leg_interface_names_it_in_the_new_relays_offer() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let target = crate::reanchor::MoveTarget {
            callee: crate::reanchor::LegOptions {
                iface: Some("pub".into()),
                transport: Some("RTP/SAVP".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        p.start_reanchor(
            crate::reanchor::Trigger::Api,
            None,
            None,
            Some("c1"),
            target,
            now,
        )
        .unwrap();
        let sent = ng_requests(&mut p, now);
        let offer = sent
            .iter()
            .find(|(port, r)| {
                *port == 2224 && matches!(r.kind, anchorage_ng::RequestKind::Offer(_))
            })
            .map(|(_, r)| r)
            .expect("the new relay's offer");
        assert_eq!(
            offer.flags.direction,
            vec!["default".to_string(), "pub".to_string()]
        );
        assert_eq!(
            offer.flags.transport_protocol,
            Some(anchorage_ng::TransportProtocol::RtpSavp)
        );
    }

    #[test]
    fn an_answer_with_other_codecs_after_a_move_gets_the_other_party_a_follow_up_offer() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let (_job, to_callee, to_caller) = move_r1_calls(&mut p, now);
        // The callee now answers with PCMA only; the caller answers as before.
        let pcma = ANSWER_SDP.replace("RTP/AVP 0", "RTP/AVP 8");
        ok_to(&mut p, &to_callee, None, &pcma, now);
        ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
        drain(&mut p);
        // The new relay learns the callee's new answer; its rewrite is for the caller.
        let rewrite = "v=0\r\no=r2 78 2 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40002 RTP/AVP 8\r\nc=IN IP4 203.0.113.2\r\n";
        let mut answered = false;
        while let Some((to, datagram)) = p.poll_ng_transmit(now) {
            let incoming = anchorage_ng::decode_request(&datagram).unwrap();
            if let anchorage_ng::RequestKind::Answer(a) = &incoming.request.kind {
                assert_eq!(to.port(), 2224);
                assert_eq!(&a.sdp[..], pcma.as_bytes());
                let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(rewrite));
                let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
                p.handle_ng_datagram(to, &bytes, now);
                answered = true;
            }
        }
        assert!(answered, "no ng answer for the callee's new SDP");
        let out = drain(&mut p);
        let follow_up = out
            .iter()
            .find(|t| t.destination.port() == 5070 && t.data.starts_with(b"INVITE "))
            .expect("a follow-up re-INVITE to the caller");
        let text = text(follow_up);
        assert!(text.contains("\r\nCSeq: 2 INVITE\r\n"), "{text}");
        assert!(text.contains("m=audio 40002 RTP/AVP 8\r\n"), "{text}");
        // The caller's origin, one above the move's (which was 4).
        assert!(
            text.contains("o=relay 6 5 IN IP4 203.0.113.2\r\n"),
            "{text}"
        );
        // A new address alone would not have needed one: nothing went to the callee.
        assert!(!out
            .iter()
            .any(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE ")));
    }

    #[test]
    fn a_dialog_at_its_maximum_age_takes_its_relay_session_with_it() {
        let now = epoch();
        let mut p = call_on_r1(now);
        ng_requests(&mut p, now);
        assert!(p.anchored_call("c1").is_some());
        // The test proxy's dialogs live an hour.
        let later = now + Duration::from_secs(3601);
        p.handle_timeout(later);
        assert!(p.dialogs().is_empty());
        assert!(p.anchored_call("c1").is_none());
        let sent = ng_requests(&mut p, later);
        assert!(
            sent.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
            "{sent:?}"
        );
        assert_eq!(p.relays().nodes()[0].calls, 0);
    }

    #[test]
    fn glare_491_is_retried_after_the_rfc_3261_backoff() {
        let now = epoch();
        let mut p = call_on_r1(now);
        let (job, to_callee, to_caller) = move_r1_calls(&mut p, now);
        reply_to(&mut p, &to_callee, 491, now);
        ok_to(&mut p, &to_caller, None, OFFER_SDP, now);
        let out = drain(&mut p);
        assert!(!out
            .iter()
            .any(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE ")));
        // Towards the callee we act for the caller, the Call-ID's owner: 2.1 to 4 s.
        p.handle_timeout(now + Duration::from_millis(2000));
        assert!(!drain(&mut p).iter().any(|t| t.data.starts_with(b"INVITE ")));
        p.handle_timeout(now + Duration::from_secs(4));
        let out = drain(&mut p);
        let retry = out
            .iter()
            .find(|t| t.destination.port() == 9 && t.data.starts_with(b"INVITE "))
            .expect("the re-INVITE is retried")
            .clone();
        assert!(
            text(&retry).contains("\r\nCSeq: 3 INVITE\r\n"),
            "{}",
            text(&retry)
        );
        ok_to(
            &mut p,
            &retry,
            None,
            ANSWER_SDP,
            now + Duration::from_secs(4),
        );
        assert_eq!(p.anchored_call("c1").unwrap().node, "r2");
        assert_eq!(p.job(job).unwrap().done, 1);
    }

    #[test]
    fn parallel_fork_sends_to_every_destination_at_once() {
        let mut p = proxy(
            "[[proxy.route]]\nname = \"f\"\nfork = \"parallel\"\n\
             destinations = [{ host = \"127.0.0.1\", port = 16001 }, { host = \"127.0.0.1\", port = 16002 }]\n",
        );
        p.handle_datagram(datagram(INVITE, "127.0.0.1:5070"), epoch());
        let out = drain(&mut p);
        let mut invites: Vec<u16> = out
            .iter()
            .filter(|t| t.data.starts_with(b"INVITE "))
            .map(|t| t.destination.port())
            .collect();
        invites.sort_unstable();
        assert_eq!(invites, [16001, 16002]);
        assert!(out.iter().any(|t| t.data.starts_with(b"SIP/2.0 100 ")));
    }
}
