//! The stateful proxy node (RFC 3261 §16), sans-IO: the [`Proxy`] struct, its getters and the
//! `handle_*`/`poll_*` seam. Everything else lives in one file per RFC concern:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `mod.rs` | [`Proxy`], its getters, `handle_datagram`/`handle_timeout`/`handle_ng_datagram`/`handle_resolved` and the polls |
//! | `io.rs` | what crosses the seam: [`CoreConfig`], [`Listener`], [`Datagram`], [`Transmit`], [`ResolveQuery`], [`Counters`] |
//! | `inbound.rs` | where a datagram enters (`on_datagram`) and a server transaction is matched (`on_request`, §17.2.3) |
//! | `validate.rs` | §16.3 request validation, load shedding, answers without a transaction |
//! | `route.rs` | §16.4–16.5: Route processing, routing rules, NAT, requests addressed to the proxy itself |
//! | `forward.rs` | §16.6: the forwarded request and its client transaction; serial/parallel targets |
//! | `response.rs` | §17.1.3 client matching, §16.7 response selection, failover, our own responses |
//! | `cancel.rs` | §16.10 CANCEL, and stateless forwarding of what belongs to another node |
//! | `transactions.rs` | the §17 machines wrapped with §16 state, and the Action → transaction user glue |
//! | `dialog_state.rs` | §12 dialog tracking and dialog expiry |
//! | `renumber.rs` | CSeq renumbering of forwarded requests, kept for an INVITE's ACK, undone in responses |
//! | `timers.rs` | [`TimerRef`](timers::TimerRef) and the timer queue |
//! | `anchoring/` | media anchoring: call media state, offer/answer placements, forks, relay replies |
//! | `moves/` | re-anchoring: jobs and pacing, the per-call move, the proxy's own in-dialog requests |
//! | `waiting.rs` | calls waiting for a relay, and [`Proxy::settle`] at the end of every event |
//!
//! Where a datagram enters: [`Proxy::handle_datagram`]. Where a transaction is matched:
//! `on_request` (server side, by `ServerKey`) and `on_response` (client side, by the branch
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

mod anchoring;
mod calls;
mod cancel;
mod dialog_state;
mod forward;
mod inbound;
mod io;
mod loading;
mod moves;
mod orphans;
mod ownership;
mod peers;
mod record;
mod renumber;
mod response;
mod route;
mod slab;
mod timers;
mod transactions;
mod validate;
mod waiting;

pub use anchoring::{AnchoredCall, LegMedia};
pub use calls::{CallId, Calls, Dialogs};
pub use io::{
    CoreConfig, Counters, Datagram, Listener, Now, OrphanChange, Output, ResolveQuery, Transmit,
};
pub use loading::{MAX_PARKED, MAX_PARKED_PER_CALL, MAX_UNKNOWN, UNKNOWN_FOR};
pub use moves::ReanchorMetrics;
pub use peers::{FORWARD_BRANCH_PREFIX, MAX_OWNERS, OWNER_FOR, SOURCE_HEADER};
pub use record::{
    CallRecord, DialogRecord, ImportError, InviteBranch, MediaRecord, MoveRecord, OpenInvite,
    URGENT_DELAY,
};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_sip::Message;
use bytes::Bytes;

use crate::flood::FloodGuard;
use crate::media::{self, NodeId, Relays};
use crate::Transport;
use timers::TimerQueue;

use crate::node::anchoring::MediaWait;
use crate::node::slab::Slab;
use crate::node::timers::TimerRef;
use crate::node::transactions::{
    ClientMachine, ClientTx, ServerId, ServerKey, ServerMachine, ServerTx,
};

/// The proxy core.
pub struct Proxy {
    config: CoreConfig,
    /// Boxed: a transaction holds its request (a few hundred bytes); the maps move only
    /// pointers when they insert and grow.
    servers: Slab<ServerKey, Box<ServerTx>>,
    clients: Slab<String, Box<ClientTx>>,
    timers: TimerQueue,
    flood: FloodGuard,
    out: VecDeque<Transmit>,
    /// Every call's dialogs, media anchor, move and waiting state (one aggregate per call).
    calls: Calls,
    counters: Counters,
    /// Our sent-by values, for loop detection and recognising our Vias.
    ours: Vec<(String, u16)>,
    rng_state: u64,
    dialog_sweep: Option<Instant>,
    /// The response being handled while a client transaction's actions are drained.
    pending_response: Option<Message>,
    /// Host names to resolve, and the requests waiting for them.
    resolve_queries: VecDeque<ResolveQuery>,
    waiting_for_resolution: HashMap<u64, ServerId>,
    next_query_id: u64,
    /// Media relays, the calls anchored on them, and ng requests awaiting a reply.
    relays: Relays,
    media_waits: HashMap<(NodeId, media::RequestId), MediaWait>,
    /// Re-anchoring: calls being moved, jobs, our own transactions, pacing and counters.
    jobs: std::collections::BTreeMap<crate::reanchor::JobId, moves::Job>,
    next_job: u64,
    own: Slab<String, moves::own_tx::OwnTx>,
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
    /// The calls waiting for a relay in the order they started waiting (for the give-up time); entries of
    /// calls no longer waiting are skipped when met.
    waiting_order: VecDeque<(Instant, String)>,
    /// The give-up timer set, if any.
    give_up_timer: Option<Instant>,
    /// The waiting-retry timer set, if any.
    retry_timer: Option<Instant>,
    /// How long the messages of the driver's latest batch waited before the core saw them.
    input_delay: Duration,
    /// The latest reading of both clocks, to turn a monotonic instant into wall-clock time.
    clock: Now,
    /// Whether changed calls come out as records (a store is configured).
    records: bool,
    /// Whether the driver is still claiming the calls of a takeover (see
    /// [`Proxy::set_taking_over`]).
    taking_over: bool,
    /// Records of changed calls, waiting for `poll_output`.
    records_out: VecDeque<Output>,
    /// Messages waiting for their call to be loaded from the store.
    parking: loading::Parking,
    peers: peers::Peers,
    /// The record-delay timer set, if any (one at a time).
    record_flush: Option<Instant>,
    /// The urgent-records timer set, if any (one at a time).
    urgent_flush: Option<Instant>,
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

impl Proxy {
    /// A proxy with this configuration, started at `clock`; `seed` drives weighted destination
    /// choice and the ng cookie epoch.
    pub fn new(config: CoreConfig, seed: u64, clock: Now) -> Proxy {
        let now = clock.mono;
        let ours = config
            .listeners
            .iter()
            .map(|l| (l.advertise_host.clone(), l.advertise_port))
            .chain(config.cluster_name.clone())
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
            servers: Slab::default(),
            clients: Slab::default(),
            timers: TimerQueue::default(),
            flood,
            out: VecDeque::new(),
            calls: Calls::default(),
            counters: Counters::default(),
            ours,
            rng_state: seed | 1,
            dialog_sweep: None,
            pending_response: None,
            resolve_queries: VecDeque::new(),
            waiting_for_resolution: HashMap::new(),
            next_query_id: 1,
            relays,
            media_waits: HashMap::new(),
            jobs: std::collections::BTreeMap::new(),
            next_job: 1,
            own: Slab::default(),
            own_counter: 0,
            move_results: HashMap::new(),
            move_durations: vec![0; moves::DURATION_BOUNDS.len()],
            move_duration_sum: 0.0,
            move_duration_count: 0,
            pace_tokens: 1.0,
            pace_at: now,
            orphans: HashMap::new(),
            pump_due: false,
            pace_timer: None,
            waiting_order: VecDeque::new(),
            give_up_timer: None,
            retry_timer: None,
            input_delay: Duration::ZERO,
            clock,
            records: false,
            taking_over: false,
            records_out: VecDeque::new(),
            parking: loading::Parking::default(),
            peers: peers::Peers::default(),
            record_flush: None,
            urgent_flush: None,
        }
    }

    /// A new reading of both clocks (the driver gives one now and then, so that wall-clock
    /// steps — NTP — are followed).
    pub fn handle_clock(&mut self, clock: Now) {
        self.clock = clock;
    }

    /// The wall-clock time, in UNIX microseconds, of a monotonic instant of this core (a job's
    /// start, a dialog's creation), by the latest clock reading.
    pub fn unix_us_at(&self, at: Instant) -> i64 {
        let (mono, unix) = (self.clock.mono, self.clock.unix_us);
        if at >= mono {
            let ahead = at.duration_since(mono).as_micros();
            unix.saturating_add(i64::try_from(ahead).unwrap_or(i64::MAX))
        } else {
            let behind = mono.duration_since(at).as_micros();
            unix.saturating_sub(i64::try_from(behind).unwrap_or(i64::MAX))
        }
    }

    /// The dialogs this node knows (for the management API).
    pub fn dialogs(&self) -> Dialogs<'_> {
        Dialogs::new(&self.calls)
    }

    /// The calls this node holds state for.
    pub fn calls(&self) -> &Calls {
        &self.calls
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

    /// The next thing the core wants done — an ng request first (a relay's answer is what
    /// SIP waits for), then a name to resolve, then a SIP message — or `None` when there is
    /// nothing. The driver calls it until `None` after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some((relay, datagram)) = self.relays.poll_transmit() {
            return Some(Output::Ng { relay, datagram });
        }
        if let Some(query) = self.resolve_queries.pop_front() {
            return Some(Output::Resolve(query));
        }
        if let Some(t) = self.out.pop_front() {
            return Some(Output::Sip(t));
        }
        self.records_out.pop_front()
    }

    /// The next SIP message to send (the SIP part of [`Proxy::poll_output`], for tests that
    /// look at one kind of output at a time).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next host name to resolve (the DNS part of [`Proxy::poll_output`]).
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
        let call = self.calls.media(call_id)?;
        Some(AnchoredCall {
            node: self.relays.nodes().get(call.node)?.name.clone(),
            set: call.policy.set.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
        })
    }

    /// The next ng datagram to send to a relay (the ng part of [`Proxy::poll_output`]).
    pub fn poll_ng_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.relays.poll_transmit()
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
                    let Some(tx) = self.servers.get_mut(key) else {
                        continue;
                    };
                    tx.scheduled = None;
                    match &mut tx.machine {
                        ServerMachine::Invite(m) => m.handle_timeout(now),
                        ServerMachine::NonInvite(m) => m.handle_timeout(now),
                    }
                    self.drain_server(key, now);
                }
                TimerRef::Client(id) => {
                    let Some(branch) = self.clients.key_of(id).cloned() else {
                        continue;
                    };
                    let Some(tx) = self.clients.get_mut(id) else {
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
                    self.expire_dialogs(now);
                    self.schedule_dialog_sweep(now);
                }
                TimerRef::Own(id) => {
                    if let Some(branch) = self.own.key_of(id).cloned() {
                        self.own_timeout(&branch, now);
                    }
                }
                TimerRef::Move(key) => {
                    if let Some(call_id) = self.calls.id_of(key).cloned() {
                        self.step_move(call_id.as_str(), now);
                    }
                }
                TimerRef::Pace => {
                    self.pace_timer = None;
                    self.pump_due = true;
                }
                TimerRef::WaitingGiveUp => {
                    self.give_up_timer = None;
                    self.give_up_waiting(now);
                }
                TimerRef::WaitingRetry => self.on_waiting_retry(now),
                TimerRef::Parking => self.on_parking_timeout(now),
                TimerRef::RecordFlush => self.on_record_flush(),
                TimerRef::UrgentFlush => self.on_urgent_flush(),
                TimerRef::InviteBranches(key) => {
                    if let Some(call_id) = self.calls.id_of(key).cloned() {
                        if !self.calls.has_open_offer(call_id.as_str()) {
                            self.calls.invite_done(call_id.as_str());
                        }
                    }
                }
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
}
