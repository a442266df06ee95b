//! The user agents: a UAC population that places calls at a rate and a UAS population that
//! answers them, as one sans-IO [`Agent`] driven by `handle_datagram`/`handle_timeout` with an
//! injected `now`, polled for datagrams to send ([`Transmit`]), media instructions and call
//! records ([`Event`]) and its next deadline.
//!
//! Each call is a dialog (RFC 3261 §12) with the client and server transaction behaviour a
//! phone needs over UDP, kept inside the call:
//!
//! * the UAC's INVITE is retransmitted on Timer A (T1, doubling) until a response and fails on
//!   Timer B (64·T1); a 2xx is ACKed end to end through the route set (the 2xx's
//!   Record-Route, reversed, §12.1.2), a non-2xx is ACKed with the INVITE's branch (§17.1.1.3);
//!   2xx retransmissions get the ACK again;
//! * the UAS answers 100, then 200 with its SDP and the Record-Route copied (§12.1.1), and
//!   retransmits the 200 until the ACK (§13.3.1.4: T1 doubling up to T2, BYE after 64·T1);
//!   it may answer 486, or never (then CANCEL gets 200 and the INVITE 487);
//! * in-dialog requests: BYE (Timer E up to T2, Timer F), re-INVITE from either side
//!   answered like a phone (200 with the same SDP, `o=` version up only when it changed,
//!   media sent to the re-INVITE's address from then on), 491 when our own re-INVITE is
//!   pending (§14.2) and a retry after the §14.1 back-off when ours gets 491; retransmitted
//!   requests get the same response again; CSeq below the last one gets 500 (§12.2.2).
//!
//! Who hangs up is chosen per call by `Hangup` (for `Random`, by a hash of the Call-ID, so a
//! UAC and a UAS in separate processes agree).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_sip::{Header, HeaderName, Host, Message, Method, NameAddr, RequestBuilder, Uri};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sdp::{LocalSdp, RemoteMedia};

mod transaction;

use transaction::{ClientTx, Request, ServerTx};

/// Which population a call belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The caller.
    Uac,
    /// The callee.
    Uas,
}

impl Side {
    /// `uac` or `uas`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Uac => "uac",
            Side::Uas => "uas",
        }
    }
}

/// A call of one population (the same Call-ID has a UAC and a UAS call when both run here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallRef {
    /// The population.
    pub side: Side,
    /// Unique within the agent.
    pub id: u64,
}

/// How the UAS answers a new INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UasAnswer {
    /// 200 OK with SDP (after `answer_delay`, with 180 before it).
    Ok,
    /// 486 Busy Here.
    Busy,
    /// 180 Ringing and nothing else, until CANCEL.
    Never,
}

/// Which side sends the BYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hangup {
    /// The caller.
    Uac,
    /// The callee.
    Uas,
    /// Either, chosen per call by a hash of the Call-ID.
    Random,
}

impl Hangup {
    /// The side that hangs up call `call_id`.
    pub fn side(self, call_id: &str) -> Side {
        match self {
            Hangup::Uac => Side::Uac,
            Hangup::Uas => Side::Uas,
            Hangup::Random => {
                // FNV-1a: stable across processes and builds.
                let h = call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                if (h >> 17) & 1 == 0 {
                    Side::Uac
                } else {
                    Side::Uas
                }
            }
        }
    }
}

/// The caller population.
#[derive(Debug, Clone)]
pub struct UacConfig {
    /// Our SIP address (the socket's bound address).
    pub local: SocketAddr,
    /// Where INVITEs, CANCELs and non-2xx ACKs go (the proxy); in-dialog requests follow the
    /// route set.
    pub proxy: SocketAddr,
    /// The Request-URI and To URI of each INVITE (`sip:service@uas-host:port`).
    pub request_uri: String,
    /// Calls to place.
    pub calls: u64,
    /// Calls started per second.
    pub rate: f64,
    /// Most calls alive at once (`u64::MAX`: no limit).
    pub concurrent: u64,
    /// CANCEL an INVITE that had a provisional response but no final one after this long.
    pub answer_timeout: Duration,
    /// Send a re-INVITE (same SDP) this long after the call is set up.
    pub reinvite_after: Option<Duration>,
}

/// The callee population.
#[derive(Debug, Clone)]
pub struct UasConfig {
    /// Our SIP address.
    pub local: SocketAddr,
    /// How new INVITEs are answered.
    pub answer: UasAnswer,
    /// Ring this long (180) before the 200.
    pub answer_delay: Duration,
    /// Stop (be done) after this many calls ended; `None`: run until stopped.
    pub calls: Option<u64>,
}

/// The agent's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The callers, if this agent places calls.
    pub uac: Option<UacConfig>,
    /// The callees, if this agent answers calls.
    pub uas: Option<UasConfig>,
    /// How long a call is held before the BYE.
    pub hold: Duration,
    /// Who sends the BYE.
    pub hangup: Hangup,
    /// RFC 3261 T1 (500 ms).
    pub t1: Duration,
    /// RFC 3261 T2 (4 s).
    pub t2: Duration,
    /// Seed of the RNG (tags, branches, SSRCs, back-offs).
    pub seed: u64,
}

impl Config {
    /// A config with RFC 3261's timers, the UAC hanging up, and no populations.
    pub fn new(hold: Duration, seed: u64) -> Config {
        Config {
            uac: None,
            uas: None,
            hold,
            hangup: Hangup::Uac,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            seed,
        }
    }
}

/// Gives each call the local address its RTP is received on.
pub trait MediaPorts {
    /// A media address for `call` (a bound socket), or `None` if none is left (the call
    /// fails: the UAC does not place it, the UAS answers 503).
    fn allocate(&mut self, call: CallRef) -> Option<SocketAddr>;
}

/// A datagram to send from one population's SIP socket.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The socket (population) to send from.
    pub side: Side,
    /// Where to.
    pub destination: SocketAddr,
    /// The message.
    pub data: Bytes,
}

/// What the media layer must do, and finished calls.
#[derive(Debug, Clone)]
pub enum Event {
    /// The call's media: where to send (`None`: nowhere), whether to send, whether media is
    /// expected from the other side. `reinvite`: the other side's re-INVITE changed it (the
    /// receiver marks it to measure the gap around it).
    Media {
        /// The call.
        call: CallRef,
        /// The other side's media address.
        remote: Option<SocketAddr>,
        /// Whether we send.
        send: bool,
        /// Whether the other side sends.
        receive: bool,
        /// Whether this comes from a re-INVITE we received.
        reinvite: bool,
    },
    /// The call's media ends (BYE sent or received, call failed).
    MediaStop {
        /// The call.
        call: CallRef,
    },
    /// The call is over.
    Ended {
        /// The call.
        call: CallRef,
        /// What happened.
        record: CallRecord,
    },
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Set up, held, ended by a BYE at the hold time.
    Completed,
    /// Set up but ended otherwise: an early BYE from the other side, an in-dialog request
    /// that got 408/481 or no answer, no ACK.
    Dropped,
    /// Never set up: a final error response, a timeout, cancelled.
    Failed,
}

impl Outcome {
    /// `completed`, `dropped` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Dropped => "dropped",
            Outcome::Failed => "failed",
        }
    }
}

/// Which party sent the BYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// This side.
    Local,
    /// The other side (or the proxy for it).
    Remote,
}

/// One re-INVITE this side received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedReinvite {
    /// When it arrived.
    pub at: Instant,
    /// The media address its SDP named.
    pub remote: Option<SocketAddr>,
    /// The `o=` version of its SDP.
    pub sdp_version: Option<u64>,
}

/// The signalling record of one call on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// The Call-ID.
    pub call_id: String,
    /// The population.
    pub side: Side,
    /// How it ended.
    pub outcome: Outcome,
    /// The INVITE's final status (received by the UAC, sent by the UAS); `None`: none.
    pub status: Option<u16>,
    /// Why the call failed or was dropped.
    pub reason: Option<String>,
    /// When the INVITE was sent (UAC) or received (UAS).
    pub started: Instant,
    /// INVITE to 200 (UAC).
    pub setup: Option<Duration>,
    /// When the call was set up (200 received, or ACK received).
    pub established: Option<Instant>,
    /// When the call ended.
    pub ended: Instant,
    /// Who sent the BYE.
    pub hangup: Option<Party>,
    /// The other side's media address from the answer (UAC) or offer (UAS).
    pub remote_media: Option<SocketAddr>,
    /// Re-INVITEs received, in order.
    pub reinvites: Vec<ReceivedReinvite>,
    /// Re-INVITEs this side sent.
    pub reinvites_sent: u32,
    /// Of those, answered 491.
    pub reinvites_491: u32,
    /// Requests answered 491 because our own re-INVITE was pending (glare).
    pub sent_491: u32,
}

/// Counts for the progress line, of the UAC population when there is one, else of the UAS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Calls placed (UAC) or received (UAS only).
    pub placed: u64,
    /// Calls set up now.
    pub up: u64,
    /// Calls ended so far.
    pub ended: u64,
    /// Of those, completed.
    pub completed: u64,
    /// Of those, failed.
    pub failed: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Datagrams that were not SIP.
    pub bad_messages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// UAC: INVITE sent, nothing back. UAS: INVITE received, not answered.
    Calling,
    /// UAC: a provisional came.
    Proceeding,
    /// UAC: CANCEL sent.
    Cancelling,
    /// UAS: 200 sent, waiting for the ACK.
    Answered,
    /// Set up.
    Established,
    /// Our BYE is out.
    Ending,
    /// Over; the call lingers to answer retransmissions.
    Ended,
}

#[derive(Debug)]
struct Call {
    r: CallRef,
    call_id: String,
    state: State,
    local_tag: String,
    /// Our From (UAC) or To (UAS) value, with our tag.
    local_party: String,
    /// The other side's To (UAC) or From (UAS) value, with its tag once known.
    remote_party: String,
    contact: String,
    remote_target: Option<String>,
    routes: Vec<String>,
    /// Where requests go before the dialog gives a route (proxy or the INVITE's source).
    fallback_hop: SocketAddr,
    local_cseq: u32,
    remote_cseq: Option<u32>,
    sdp: LocalSdp,
    remote: Option<RemoteMedia>,
    hangs_up: bool,
    /// Whether we send media yet: the UAC from the 2xx, the UAS from the ACK (RTP sent with
    /// the 200 can reach the relay before the proxy has told it the answer).
    send_ready: bool,
    /// UAC: the INVITE as first sent (CANCEL and non-2xx ACK copy it).
    invite: Option<Message>,
    /// UAS: the initial INVITE (responses are built from it) and where it came from.
    invite_source: SocketAddr,
    client: Option<ClientTx>,
    bye: Option<ClientTx>,
    cancel: Option<ClientTx>,
    server: Option<ServerTx>,
    /// The last ACK we sent and its CSeq, for 2xx/non-2xx retransmissions.
    ack: Option<(u32, Bytes, SocketAddr)>,
    /// The last response to an INVITE: (CSeq, response, where).
    invite_response: Option<(u32, Bytes, SocketAddr)>,
    /// The last response to another request: (CSeq, method, response, where).
    other_response: Option<(u32, String, Bytes, SocketAddr)>,
    hangup_at: Option<Instant>,
    cancel_at: Option<Instant>,
    reinvite_at: Option<Instant>,
    answer_at: Option<Instant>,
    abandon_at: Option<Instant>,
    linger_until: Option<Instant>,
    record: CallRecord,
}

/// The user agents of one call generator process.
pub struct Agent {
    config: Config,
    /// The transaction timers (T1 and T2 from the config).
    tx_timers: anchorage_transaction::TimerConfig,
    rng: SmallRng,
    calls: HashMap<u64, Call>,
    by_call_id: HashMap<(Side, String), u64>,
    next_id: u64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    run_id: u64,
    placed: u64,
    next_call_at: Option<Instant>,
    blocked: bool,
    live: [u64; 2],
    uas_ended: u64,
    stopping: bool,
    progress: Progress,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("calls", &self.calls.len())
            .field("progress", &self.progress)
            .finish()
    }
}

const USER_AGENT: &str = "anchorage-callgen";
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";
/// How long an ended call lingers to answer retransmissions (Timer J: 64·T1).
const LINGER_T1S: u32 = 64;
/// A BYE from the other side this much before the hold time is still a normal end.
const HOLD_SLACK: Duration = Duration::from_millis(500);
/// A UAS call nobody answers or cancels is abandoned after this long.
const UAS_ABANDON: Duration = Duration::from_secs(200);

fn side_index(side: Side) -> usize {
    match side {
        Side::Uac => 0,
        Side::Uas => 1,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The IP and port of a SIP URI (5060 when none is written); `None` for a host name.
fn uri_address(uri: &Uri<'_>) -> Option<SocketAddr> {
    let sip = uri.as_sip()?;
    let port = sip.port.unwrap_or(5060);
    let ip: IpAddr = match sip.host {
        Host::Ipv4(a) => a.into(),
        Host::Ipv6(a) => a.into(),
        Host::Domain(d) => d.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// The URI inside a name-addr value (`<sip:…;lr>`), as written.
fn name_addr_uri(value: &str, name: HeaderName) -> Option<String> {
    NameAddr::parse(value.as_bytes(), name)
        .ok()
        .map(|n| text(n.uri_raw))
}

fn header_value(msg: &Message, name: HeaderName) -> Option<String> {
    msg.header(name).map(|h| text(h.value()))
}

/// Every comma-separated value of every `name` header, in order.
fn list_values(msg: &Message, name: HeaderName) -> Vec<String> {
    msg.headers_of(name)
        .flat_map(|h: Header<'_>| h.values().map(text).collect::<Vec<_>>())
        .collect()
}

fn contact_uri(msg: &Message) -> Option<String> {
    msg.contacts().find_map(|c| match c {
        Ok(anchorage_sip::Contact::Address(n)) => Some(text(n.uri_raw)),
        _ => None,
    })
}

fn sdp_version(body: &[u8]) -> Option<u64> {
    anchorage_sdp::Session::parse_slice(body)
        .ok()
        .and_then(|s| s.origin().ok().map(|o| o.session_version))
}

impl Agent {
    /// An agent starting at `now`; the UAC places its first call at once.
    pub fn new(config: Config, now: Instant) -> Agent {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let run_id = rng.random::<u64>() & 0xffff_ffff_ffff;
        let next_call_at = config.uac.as_ref().filter(|u| u.calls > 0).map(|_| now);
        Agent {
            tx_timers: transaction::timer_config(config.t1, config.t2),
            config,
            rng,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            next_id: 0,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            run_id,
            placed: 0,
            next_call_at,
            blocked: false,
            live: [0; 2],
            uas_ended: 0,
            stopping: false,
            progress: Progress::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts for a progress line.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// A datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// A media instruction or a finished call, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let next_call = self.next_call_at.filter(|_| !self.start_blocked());
        match (timer, next_call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn start_blocked(&self) -> bool {
        self.stopping
            || self
                .config
                .uac
                .as_ref()
                .is_none_or(|u| self.live[0] >= u.concurrent)
    }

    /// Whether every call is placed and over (UAS only: the configured number of calls
    /// ended, or stopped with none left).
    pub fn is_done(&self) -> bool {
        let uac_done = match &self.config.uac {
            Some(u) => (self.stopping || self.placed >= u.calls) && self.live[0] == 0,
            None => true,
        };
        let uas_done = match &self.config.uas {
            Some(u) if self.config.uac.is_none() => {
                self.live[1] == 0 && (self.stopping || u.calls.is_some_and(|n| self.uas_ended >= n))
            }
            Some(_) => self.live[1] == 0,
            None => true,
        };
        uac_done && uas_done
    }

    /// Live calls of a population.
    pub fn live(&self, side: Side) -> u64 {
        self.live[side_index(side)]
    }

    /// Stops placing calls and ends every live one: BYE for set-up calls, CANCEL for ringing
    /// ones, 480 for unanswered incoming ones.
    pub fn stop(&mut self, now: Instant) {
        self.stopping = true;
        self.next_call_at = None;
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            match (call.r.side, call.state) {
                (_, State::Established) | (Side::Uas, State::Answered) => {
                    self.send_bye(now, &mut call);
                }
                (Side::Uac, State::Proceeding) => self.send_cancel(now, &mut call),
                (Side::Uas, State::Calling) => {
                    self.uas_final(now, &mut call, 480, "Temporarily Unavailable");
                    self.end(now, &mut call, Outcome::Failed, Some(480), "stopped");
                }
                _ => {}
            }
            self.put_back(call);
        }
    }

    /// Forgets every call at once (the last call of a run after its deadline).
    pub fn abandon(&mut self, now: Instant) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(mut call) = self.calls.remove(&id) {
                if call.state != State::Ended {
                    let outcome = if call.record.established.is_some() {
                        Outcome::Dropped
                    } else {
                        Outcome::Failed
                    };
                    self.end(now, &mut call, outcome, None, "still running at the end");
                }
            }
        }
        self.by_call_id.clear();
        self.timers.clear();
    }

    fn schedule(&mut self, call: &Call) {
        let deadlines = [
            call.client.as_ref().and_then(ClientTx::poll_timeout),
            call.bye.as_ref().and_then(ClientTx::poll_timeout),
            call.cancel.as_ref().and_then(ClientTx::poll_timeout),
            call.server.as_ref().and_then(ServerTx::poll_timeout),
            call.hangup_at,
            call.cancel_at,
            call.reinvite_at,
            call.answer_at,
            call.abandon_at,
            call.linger_until,
        ];
        if let Some(t) = deadlines.into_iter().flatten().min() {
            self.timers.push(Reverse((t, call.r.id)));
        }
    }

    fn put_back(&mut self, call: Call) {
        self.schedule(&call);
        self.calls.insert(call.r.id, call);
    }

    fn send(&mut self, side: Side, destination: SocketAddr, data: Bytes) {
        self.transmits.push_back(Transmit {
            side,
            destination,
            data,
        });
    }

    fn token(&mut self, len: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(HEX[self.rng.random_range(0..16)]))
            .collect()
    }

    fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token(16))
    }

    fn local_sip(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::Uac => self.config.uac.as_ref().map(|u| u.local),
            Side::Uas => self.config.uas.as_ref().map(|u| u.local),
        }
    }

    /// Runs the timers due at `now` and starts the calls due.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut dyn MediaPorts) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(mut call) = self.calls.remove(&id) {
                let remove = self.on_call_timer(now, &mut call);
                if remove {
                    self.by_call_id.remove(&(call.r.side, call.call_id.clone()));
                } else {
                    self.put_back(call);
                }
            }
        }
        self.start_due_calls(now, media);
    }

    fn start_due_calls(&mut self, now: Instant, media: &mut dyn MediaPorts) {
        let Some(uac) = self.config.uac.clone() else {
            return;
        };
        let interval = Duration::from_secs_f64(1.0 / uac.rate.max(0.001));
        while let Some(at) = self.next_call_at {
            if self.placed >= uac.calls {
                self.next_call_at = None;
                break;
            }
            if self.start_blocked() {
                self.blocked = true;
                break;
            }
            if self.blocked {
                // A slot freed: go on from now, do not catch up on the time spent waiting.
                self.blocked = false;
                self.next_call_at = Some(at.max(now));
                continue;
            }
            if at > now {
                break;
            }
            self.next_call_at = Some(at + interval);
            self.place_call(now, &uac, media);
        }
    }

    fn place_call(&mut self, now: Instant, uac: &UacConfig, media: &mut dyn MediaPorts) {
        self.placed += 1;
        self.progress.placed += 1;
        let id = self.next_id;
        self.next_id += 1;
        let r = CallRef {
            side: Side::Uac,
            id,
        };
        let call_id = format!("{:012x}-{}@{}", self.run_id, self.placed, uac.local.ip());
        let local_tag = self.token(10);
        let local_party = format!("<sip:callgen@{}>;tag={local_tag}", uac.local);
        let remote_party = format!("<{}>", uac.request_uri);
        let contact = format!("<sip:callgen@{}>", uac.local);
        let hangs_up = self.config.hangup.side(&call_id) == Side::Uac;
        let record = CallRecord {
            call_id: call_id.clone(),
            side: Side::Uac,
            outcome: Outcome::Failed,
            status: None,
            reason: None,
            started: now,
            setup: None,
            established: None,
            ended: now,
            hangup: None,
            remote_media: None,
            reinvites: Vec::new(),
            reinvites_sent: 0,
            reinvites_491: 0,
            sent_491: 0,
        };
        let session_id = self.rng.random_range(1..1u64 << 40);
        let Some(address) = media.allocate(r) else {
            let record = CallRecord {
                reason: Some("no media port".into()),
                ..record
            };
            self.progress.ended += 1;
            self.progress.failed += 1;
            self.events.push_back(Event::Ended { call: r, record });
            return;
        };
        let mut call = Call {
            r,
            call_id: call_id.clone(),
            state: State::Calling,
            local_tag,
            local_party,
            remote_party,
            contact,
            remote_target: None,
            routes: Vec::new(),
            fallback_hop: uac.proxy,
            local_cseq: 1,
            remote_cseq: None,
            sdp: LocalSdp::new(session_id, address),
            remote: None,
            hangs_up,
            send_ready: true,
            invite: None,
            invite_source: uac.proxy,
            client: None,
            bye: None,
            cancel: None,
            server: None,
            ack: None,
            invite_response: None,
            other_response: None,
            hangup_at: None,
            cancel_at: None,
            reinvite_at: None,
            answer_at: None,
            abandon_at: None,
            linger_until: None,
            record,
        };
        let branch = self.branch();
        let via = format!("SIP/2.0/UDP {};branch={branch};rport", uac.local);
        let built = RequestBuilder::new(Method::Invite, &uac.request_uri)
            .via(&via)
            .from(&call.local_party)
            .to(&call.remote_party)
            .call_id(&call_id)
            .cseq(1)
            .contact(&call.contact)
            .header("User-Agent", USER_AGENT)
            .header("Allow", ALLOW)
            .body("application/sdp", call.sdp.bytes())
            .build();
        self.live[0] += 1;
        self.by_call_id.insert((Side::Uac, call_id), id);
        match built {
            Ok(invite) => {
                let data = invite.bytes();
                call.invite = Some(invite);
                let request = Request {
                    method: Method::Invite,
                    cseq: 1,
                    branch,
                    data,
                    destination: uac.proxy,
                };
                self.start_client(now, &mut call, request);
            }
            Err(e) => {
                self.end(
                    now,
                    &mut call,
                    Outcome::Failed,
                    None,
                    &format!("INVITE: {e}"),
                );
            }
        }
        self.put_back(call);
    }

    /// Sends `request` on a new client transaction, kept in the call's slot for its method.
    fn start_client(&mut self, now: Instant, call: &mut Call, request: Request) {
        let (tx, todo) = ClientTx::start(now, request, &self.tx_timers);
        if todo.send {
            self.send(call.r.side, tx.request.destination, tx.request.data.clone());
        }
        match tx.request.method {
            Method::Invite => call.client = Some(tx),
            Method::Bye => call.bye = Some(tx),
            _ => call.cancel = Some(tx),
        }
    }

    /// A datagram arrived on one population's SIP socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        side: Side,
        source: SocketAddr,
        data: Bytes,
        media: &mut dyn MediaPorts,
    ) {
        let msg = match Message::parse(data) {
            Ok(m) if m.validate().is_ok() => m,
            _ => {
                self.progress.bad_messages += 1;
                return;
            }
        };
        let Ok(call_id) = msg.call_id().map(str::to_string) else {
            self.progress.bad_messages += 1;
            return;
        };
        let id = self.by_call_id.get(&(side, call_id)).copied();
        if msg.is_request() {
            match id.and_then(|id| self.calls.remove(&id)) {
                Some(mut call) => {
                    self.on_request(now, &mut call, &msg, source);
                    self.put_back(call);
                }
                None => self.on_new_request(now, side, &msg, source, media),
            }
        } else if let Some(mut call) = id.and_then(|id| self.calls.remove(&id)) {
            self.on_response(now, &mut call, &msg);
            self.put_back(call);
        }
        self.start_due_calls(now, media);
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        side: Side,
        req: &Message,
        destination: SocketAddr,
        status: u16,
        reason: &str,
        tag: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Option<Bytes> {
        let mut b = req.response(status, reason).to_tag(tag);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        let data = b.build().ok()?.bytes();
        self.send(side, destination, data.clone());
        Some(data)
    }

    fn on_new_request(
        &mut self,
        now: Instant,
        side: Side,
        msg: &Message,
        source: SocketAddr,
        media: &mut dyn MediaPorts,
    ) {
        let method = msg.method().unwrap_or(Method::Other("?"));
        let has_to_tag = msg.to().ok().and_then(|t| t.tag()).is_some();
        let tag = self.token(10);
        match method {
            Method::Ack => {}
            Method::Invite if side == Side::Uas && !has_to_tag && self.config.uas.is_some() => {
                if self.stopping {
                    self.respond(
                        side,
                        msg,
                        source,
                        480,
                        "Temporarily Unavailable",
                        &tag,
                        &[],
                        None,
                    );
                } else {
                    self.new_uas_call(now, msg, source, tag, media);
                }
            }
            Method::Options => {
                self.respond(
                    side,
                    msg,
                    source,
                    200,
                    "OK",
                    &tag,
                    &[("Allow", ALLOW)],
                    None,
                );
            }
            _ => {
                self.respond(
                    side,
                    msg,
                    source,
                    481,
                    "Call/Transaction Does Not Exist",
                    &tag,
                    &[],
                    None,
                );
            }
        }
    }

    fn new_uas_call(
        &mut self,
        now: Instant,
        msg: &Message,
        source: SocketAddr,
        local_tag: String,
        media: &mut dyn MediaPorts,
    ) {
        let Some(uas) = self.config.uas.clone() else {
            return;
        };
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return;
        };
        let call_id = call_id.to_string();
        let (Some(from_value), Some(to_value)) = (
            header_value(msg, HeaderName::From),
            header_value(msg, HeaderName::To),
        ) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let r = CallRef {
            side: Side::Uas,
            id,
        };
        if self.counts_up(Side::Uas) {
            self.progress.placed += 1;
        }
        let remote = if msg.body().is_empty() {
            None
        } else {
            match RemoteMedia::parse(msg.body()) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.respond(
                        Side::Uas,
                        msg,
                        source,
                        488,
                        "Not Acceptable Here",
                        &local_tag,
                        &[],
                        None,
                    );
                    self.count_unplaced_uas_failure();
                    return;
                }
            }
        };
        let Some(address) = media.allocate(r) else {
            self.respond(
                Side::Uas,
                msg,
                source,
                503,
                "Service Unavailable",
                &local_tag,
                &[],
                None,
            );
            self.count_unplaced_uas_failure();
            return;
        };
        let session_id = self.rng.random_range(1..1u64 << 40);
        let hangs_up = self.config.hangup.side(&call_id) == Side::Uas;
        let routes = list_values(msg, HeaderName::RecordRoute);
        let mut call = Call {
            r,
            call_id: call_id.clone(),
            state: State::Calling,
            local_party: format!("{to_value};tag={local_tag}"),
            local_tag,
            remote_party: from_value,
            contact: format!("<sip:callgen@{}>", uas.local),
            remote_target: contact_uri(msg),
            routes,
            fallback_hop: source,
            local_cseq: 0,
            remote_cseq: Some(cseq.seq),
            sdp: LocalSdp::new(session_id, address),
            remote,
            hangs_up,
            send_ready: false,
            invite: Some(msg.clone()),
            invite_source: source,
            client: None,
            bye: None,
            cancel: None,
            server: None,
            ack: None,
            invite_response: None,
            other_response: None,
            hangup_at: None,
            cancel_at: None,
            reinvite_at: None,
            answer_at: None,
            abandon_at: Some(now + UAS_ABANDON),
            linger_until: None,
            record: CallRecord {
                call_id: call_id.clone(),
                side: Side::Uas,
                outcome: Outcome::Failed,
                status: None,
                reason: None,
                started: now,
                setup: None,
                established: None,
                ended: now,
                hangup: None,
                remote_media: remote.and_then(|m| m.address),
                reinvites: Vec::new(),
                reinvites_sent: 0,
                reinvites_491: 0,
                sent_491: 0,
            },
        };
        self.live[1] += 1;
        self.by_call_id.insert((Side::Uas, call_id), id);
        self.uas_provisional(&mut call, 100, "Trying");
        match uas.answer {
            UasAnswer::Ok if uas.answer_delay.is_zero() => self.uas_answer(now, &mut call),
            UasAnswer::Ok => {
                self.uas_provisional(&mut call, 180, "Ringing");
                call.answer_at = Some(now + uas.answer_delay);
            }
            UasAnswer::Busy => {
                self.uas_final(now, &mut call, 486, "Busy Here");
                self.end(
                    now,
                    &mut call,
                    Outcome::Failed,
                    Some(486),
                    "answered 486 (--uas-answer 486)",
                );
            }
            UasAnswer::Never => self.uas_provisional(&mut call, 180, "Ringing"),
        }
        self.put_back(call);
    }

    fn count_unplaced_uas_failure(&mut self) {
        if self.counts_up(Side::Uas) {
            self.progress.ended += 1;
            self.progress.failed += 1;
        }
        self.uas_ended += 1;
    }

    fn uas_provisional(&mut self, call: &mut Call, status: u16, reason: &str) {
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let tag = call.local_tag.clone();
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let contact = call.contact.clone();
        let extra: Vec<(&str, &str)> = if status > 100 {
            vec![("Contact", contact.as_str())]
        } else {
            Vec::new()
        };
        if let Some(data) = self.respond(
            Side::Uas,
            &invite,
            call.invite_source,
            status,
            reason,
            &tag,
            &extra,
            None,
        ) {
            call.invite_response = Some((cseq, data, call.invite_source));
        }
    }

    /// A final response to the initial INVITE, retransmitted until the ACK.
    fn uas_final(&mut self, now: Instant, call: &mut Call, status: u16, reason: &str) -> bool {
        let Some(invite) = call.invite.clone() else {
            return false;
        };
        let tag = call.local_tag.clone();
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let record_routes = list_values(&invite, HeaderName::RecordRoute);
        let contact = call.contact.clone();
        let mut extra: Vec<(&str, &str)> = record_routes
            .iter()
            .map(|v| ("Record-Route", v.as_str()))
            .collect();
        let success = (200..300).contains(&status);
        if success {
            extra.push(("Contact", contact.as_str()));
            extra.push(("Allow", ALLOW));
        }
        extra.push(("User-Agent", USER_AGENT));
        let body = if success {
            let offered = call
                .remote
                .map(|r| r.direction)
                .unwrap_or(anchorage_sdp::Direction::SendRecv);
            Some(call.sdp.answer(offered).to_vec())
        } else {
            None
        };
        let Some(data) = self.respond(
            Side::Uas,
            &invite,
            call.invite_source,
            status,
            reason,
            &tag,
            &extra,
            body.as_deref(),
        ) else {
            return false;
        };
        call.invite_response = Some((cseq, data.clone(), call.invite_source));
        call.record.status = Some(status);
        let (destination, timers) = (call.invite_source, &self.tx_timers);
        call.server = Some(ServerTx::sent(now, cseq, status, data, destination, timers));
        true
    }

    fn uas_answer(&mut self, now: Instant, call: &mut Call) {
        call.answer_at = None;
        call.abandon_at = None;
        if !self.uas_final(now, call, 200, "OK") {
            self.end(now, call, Outcome::Failed, None, "could not build the 200");
            return;
        }
        call.state = State::Answered;
        self.media_event(call, false);
    }

    fn media_event(&mut self, call: &Call, reinvite: bool) {
        let remote = call.remote.unwrap_or(RemoteMedia {
            address: None,
            direction: anchorage_sdp::Direction::Inactive,
        });
        let ours = call.sdp.direction();
        let we_send = matches!(
            ours,
            anchorage_sdp::Direction::SendRecv | anchorage_sdp::Direction::SendOnly
        );
        let we_receive = matches!(
            ours,
            anchorage_sdp::Direction::SendRecv | anchorage_sdp::Direction::RecvOnly
        );
        self.events.push_back(Event::Media {
            call: call.r,
            remote: remote.address,
            send: we_send && remote.receives() && call.send_ready,
            receive: we_receive && remote.sends(),
            reinvite,
        });
    }

    /// The next hop of in-dialog requests: the first Route, else the remote target, else
    /// where the dialog came from.
    fn next_hop(call: &Call) -> SocketAddr {
        let from_route = call
            .routes
            .first()
            .and_then(|r| name_addr_uri(r, HeaderName::Route));
        let uri = from_route.or_else(|| call.remote_target.clone());
        uri.and_then(|u| Uri::parse(u.as_bytes()).ok().and_then(|u| uri_address(&u)))
            .unwrap_or(call.fallback_hop)
    }

    fn in_dialog_request(
        &mut self,
        call: &mut Call,
        method: Method<'static>,
        cseq: u32,
        branch: &str,
        body: Option<&[u8]>,
    ) -> Option<Bytes> {
        let local = self.local_sip(call.r.side)?;
        let target = call.remote_target.clone().or_else(|| {
            call.invite
                .as_ref()
                .and_then(|i| i.request_uri_raw().map(text))
        })?;
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let mut b = RequestBuilder::new(method, &target)
            .via(&via)
            .routes(call.routes.iter().map(String::as_str))
            .from(&call.local_party)
            .to(&call.remote_party)
            .call_id(&call.call_id)
            .cseq(cseq)
            .header("User-Agent", USER_AGENT);
        if method == Method::Invite {
            b = b.contact(&call.contact);
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        b.build().ok().map(|m| m.bytes())
    }

    fn send_bye(&mut self, now: Instant, call: &mut Call) {
        call.hangup_at = None;
        call.reinvite_at = None;
        call.local_cseq += 1;
        let cseq = call.local_cseq;
        let branch = self.branch();
        match self.in_dialog_request(call, Method::Bye, cseq, &branch, None) {
            Some(data) => {
                let destination = Self::next_hop(call);
                let request = Request {
                    method: Method::Bye,
                    cseq,
                    branch,
                    data,
                    destination,
                };
                self.start_client(now, call, request);
                call.state = State::Ending;
                call.record.hangup.get_or_insert(Party::Local);
                self.events.push_back(Event::MediaStop { call: call.r });
            }
            None => self.end(now, call, Outcome::Dropped, None, "could not build the BYE"),
        }
    }

    fn send_reinvite(&mut self, now: Instant, call: &mut Call) {
        call.reinvite_at = None;
        if call.state != State::Established || call.client.is_some() {
            return;
        }
        call.local_cseq += 1;
        let cseq = call.local_cseq;
        let branch = self.branch();
        let body = call.sdp.bytes().to_vec();
        if let Some(data) = self.in_dialog_request(call, Method::Invite, cseq, &branch, Some(&body))
        {
            let destination = Self::next_hop(call);
            call.record.reinvites_sent += 1;
            let request = Request {
                method: Method::Invite,
                cseq,
                branch,
                data,
                destination,
            };
            self.start_client(now, call, request);
        }
    }

    fn send_cancel(&mut self, now: Instant, call: &mut Call) {
        call.cancel_at = None;
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let Some(tx) = call.client.as_ref() else {
            return;
        };
        let (branch, destination) = (tx.request.branch.clone(), tx.request.destination);
        let Some(local) = self.local_sip(Side::Uac) else {
            return;
        };
        let uri = invite.request_uri_raw().map(text).unwrap_or_default();
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let to = header_value(&invite, HeaderName::To).unwrap_or_default();
        let built = RequestBuilder::new(Method::Cancel, &uri)
            .via(&via)
            .from(&call.local_party)
            .to(&to)
            .call_id(&call.call_id)
            .cseq(1)
            .header("User-Agent", USER_AGENT)
            .build();
        if let Ok(m) = built {
            let request = Request {
                method: Method::Cancel,
                cseq: 1,
                branch,
                data: m.bytes(),
                destination,
            };
            self.start_client(now, call, request);
            call.state = State::Cancelling;
        }
    }

    /// Ends the call: records the outcome, stops the media, counts it, and lets it linger.
    fn end(
        &mut self,
        now: Instant,
        call: &mut Call,
        outcome: Outcome,
        status: Option<u16>,
        reason: &str,
    ) {
        if call.state == State::Ended {
            return;
        }
        let was_up = matches!(
            call.state,
            State::Established | State::Answered | State::Ending
        );
        call.state = State::Ended;
        call.record.outcome = outcome;
        if status.is_some() {
            call.record.status = status;
        }
        if outcome != Outcome::Completed && call.record.reason.is_none() {
            call.record.reason = Some(reason.to_string());
        }
        call.record.ended = now;
        call.hangup_at = None;
        call.cancel_at = None;
        call.reinvite_at = None;
        call.answer_at = None;
        call.abandon_at = None;
        call.linger_until = Some(now + self.config.t1 * LINGER_T1S);
        call.client = None;
        call.bye = None;
        call.cancel = None;
        let i = side_index(call.r.side);
        self.live[i] = self.live[i].saturating_sub(1);
        if call.r.side == Side::Uas {
            self.uas_ended += 1;
        }
        if self.counts_up(call.r.side) {
            if was_up && call.record.established.is_some() {
                self.progress.up = self.progress.up.saturating_sub(1);
            }
            self.progress.ended += 1;
            match outcome {
                Outcome::Completed => self.progress.completed += 1,
                Outcome::Dropped => self.progress.dropped += 1,
                Outcome::Failed => self.progress.failed += 1,
            }
        }
        self.events.push_back(Event::MediaStop { call: call.r });
        self.events.push_back(Event::Ended {
            call: call.r,
            record: call.record.clone(),
        });
    }

    fn establish(&mut self, now: Instant, call: &mut Call) {
        call.state = State::Established;
        call.record.established = Some(now);
        if !call.send_ready {
            call.send_ready = true;
            self.media_event(call, false);
        }
        if self.counts_up(call.r.side) {
            self.progress.up += 1;
        }
        let hold = self.config.hold;
        call.hangup_at = Some(if call.hangs_up {
            now + hold
        } else {
            now + hold + self.config.t1 * 64
        });
        if call.r.side == Side::Uac {
            if let Some(after) = self.config.uac.as_ref().and_then(|u| u.reinvite_after) {
                call.reinvite_at = Some(now + after);
            }
        }
    }

    /// The up-count follows the UAC when there is one, else the UAS.
    fn counts_up(&self, side: Side) -> bool {
        side == Side::Uac || self.config.uac.is_none()
    }

    fn on_call_timer(&mut self, now: Instant, call: &mut Call) -> bool {
        if call.linger_until.is_some_and(|t| t <= now) {
            return true;
        }
        // Client transactions: retransmit, or give up.
        for which in [Method::Invite, Method::Bye, Method::Cancel] {
            let slot = match which {
                Method::Invite => &mut call.client,
                Method::Bye => &mut call.bye,
                _ => &mut call.cancel,
            };
            let Some(tx) = slot.as_mut() else { continue };
            let todo = tx.handle_timeout(now);
            if todo.timed_out {
                if let Some(tx) = slot.take() {
                    self.client_timeout(now, call, tx);
                }
                continue;
            }
            if todo.send {
                let (dest, data) = (tx.request.destination, tx.request.data.clone());
                self.send(call.r.side, dest, data);
            }
        }
        if let Some(s) = call.server.as_mut() {
            let todo = s.handle_timeout(now);
            if todo.timed_out {
                let success = s.success();
                call.server = None;
                if success && call.state == State::Answered {
                    // RFC 3261 §13.3.1.4: no ACK — end the dialog with a BYE.
                    call.record.reason = Some("no ACK for the 200".into());
                    call.record.established = Some(now);
                    self.send_bye(now, call);
                }
            } else if todo.send {
                let (dest, data) = (s.destination, s.data.clone());
                self.send(call.r.side, dest, data);
            }
        }
        // Each timer that passed is consumed, acted on or not, so none fires twice.
        let due = |t: &mut Option<Instant>| t.take_if(|t| *t <= now).is_some();
        if due(&mut call.answer_at) && call.state == State::Calling {
            self.uas_answer(now, call);
        }
        if due(&mut call.abandon_at) && call.state == State::Calling {
            self.uas_final(now, call, 480, "Temporarily Unavailable");
            self.end(
                now,
                call,
                Outcome::Failed,
                Some(480),
                "never answered nor cancelled",
            );
        }
        if due(&mut call.cancel_at) && call.state == State::Proceeding {
            self.send_cancel(now, call);
        }
        if due(&mut call.reinvite_at) {
            self.send_reinvite(now, call);
        }
        if due(&mut call.hangup_at) && call.state == State::Established {
            if !call.hangs_up {
                call.record.reason = Some("no BYE from the other side at the hold time".into());
            }
            self.send_bye(now, call);
        }
        false
    }

    fn client_timeout(&mut self, now: Instant, call: &mut Call, tx: ClientTx) {
        match tx.request.method {
            Method::Invite if call.state == State::Established => {
                // Our re-INVITE timed out: the other side is gone (§14.1: like 408).
                call.record.reason = Some("re-INVITE timed out".into());
                self.send_bye(now, call);
            }
            Method::Invite => {
                self.end(now, call, Outcome::Failed, Some(408), "INVITE timed out");
            }
            Method::Bye => {
                let reason = call
                    .record
                    .reason
                    .clone()
                    .unwrap_or_else(|| "BYE timed out".into());
                self.end(now, call, Outcome::Dropped, None, &reason);
            }
            _ => {}
        }
    }

    fn on_response(&mut self, now: Instant, call: &mut Call, msg: &Message) {
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else {
            return;
        };
        let branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .map(str::to_string);
        match cseq.method {
            Method::Invite => self.on_invite_response(now, call, msg, status, cseq.seq, branch),
            Method::Bye => {
                let Some(tx) = call.bye.as_mut().filter(|t| t.request.cseq == cseq.seq) else {
                    return;
                };
                tx.handle_response(now, status);
                if status < 200 {
                    return;
                }
                call.bye = None;
                let dropped = call.record.reason.is_some() || !(200..300).contains(&status);
                if dropped {
                    let reason = call
                        .record
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("BYE answered {status}"));
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else {
                    self.end(now, call, Outcome::Completed, None, "");
                }
            }
            Method::Cancel => {
                if status >= 200 {
                    call.cancel = None;
                } else if let Some(tx) = call.cancel.as_mut() {
                    tx.handle_response(now, status);
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        status: u16,
        cseq: u32,
        branch: Option<String>,
    ) {
        let matches = call
            .client
            .as_ref()
            .is_some_and(|t| t.request.cseq == cseq && Some(&t.request.branch) == branch.as_ref());
        if !matches {
            // A retransmitted final response: ACK it again.
            if status >= 200 {
                if let Some((seq, data, dest)) = call.ack.clone() {
                    if seq == cseq {
                        self.send(call.r.side, dest, data);
                    }
                }
            }
            return;
        }
        let initial = cseq == 1 && call.r.side == Side::Uac && call.record.established.is_none();
        if status < 200 {
            if let Some(tx) = call.client.as_mut() {
                // Timer B no longer applies once a provisional came; the CANCEL timeout does.
                tx.handle_response(now, status);
            }
            if initial && call.state == State::Calling {
                call.state = State::Proceeding;
                let timeout = self.config.uac.as_ref().map(|u| u.answer_timeout);
                call.cancel_at = timeout.map(|t| now + t);
            }
            return;
        }
        // The final response ends the client transaction for the UA: retransmissions of it
        // are answered from `call.ack`. A 2xx is the UA's (§13.2.2.4: it ACKs end to end);
        // the machine asks for the ACK of a 300–699 (§17.1.1.3).
        let todo = call
            .client
            .take()
            .map(|mut tx| tx.handle_response(now, status))
            .unwrap_or_default();
        if (200..300).contains(&status) {
            self.on_2xx(now, call, msg, cseq, initial);
        } else {
            if todo.ack {
                self.ack_non_2xx(call, msg, cseq, branch.unwrap_or_default());
            }
            if initial {
                let reason = format!(
                    "answered {status} {}",
                    text(msg.reason_phrase().unwrap_or_default())
                );
                let reason = if call.state == State::Cancelling {
                    format!("cancelled after the answer timeout ({reason})")
                } else {
                    reason
                };
                self.end(now, call, Outcome::Failed, Some(status), &reason);
            } else if status == 491 {
                call.record.reinvites_491 += 1;
                // §14.1: we own the Call-ID (UAC): 2.1–4 s.
                let ms = self.rng.random_range(2100..=4000);
                call.reinvite_at = Some(now + Duration::from_millis(ms));
            } else if status == 408 || status == 481 {
                call.record.reason = Some(format!("re-INVITE answered {status}"));
                self.send_bye(now, call);
            }
        }
    }

    fn on_2xx(&mut self, now: Instant, call: &mut Call, msg: &Message, cseq: u32, initial: bool) {
        if initial {
            call.record.status = msg.status();
            call.record.setup = Some(now.saturating_duration_since(call.record.started));
            if let Some(to) = header_value(msg, HeaderName::To) {
                call.remote_party = to;
            }
            let mut routes = list_values(msg, HeaderName::RecordRoute);
            routes.reverse();
            call.routes = routes;
            call.remote_target = contact_uri(msg).or(call.remote_target.take());
            call.cancel_at = None;
        } else if let Some(c) = contact_uri(msg) {
            call.remote_target = Some(c);
        }
        // ACK: end to end, a new branch, through the route set.
        let branch = self.branch();
        let hop = Self::next_hop(call);
        if let Some(ack) = self.in_dialog_request(call, Method::Ack, cseq, &branch, None) {
            self.send(call.r.side, hop, ack.clone());
            call.ack = Some((cseq, ack, hop));
        }
        if !msg.body().is_empty() {
            if let Ok(remote) = RemoteMedia::parse(msg.body()) {
                call.remote = Some(remote);
                if initial {
                    call.record.remote_media = remote.address;
                }
            }
        }
        if initial {
            if call.state == State::Cancelling || self.stopping {
                // Answered after our CANCEL (or while stopping): hang up at once.
                call.record.established = Some(now);
                call.state = State::Established;
                call.record.reason = Some("answered after CANCEL".into());
                self.send_bye(now, call);
                return;
            }
            self.establish(now, call);
            self.media_event(call, false);
        } else {
            self.media_event(call, false);
        }
    }

    fn ack_non_2xx(&mut self, call: &mut Call, msg: &Message, cseq: u32, branch: String) {
        let Some(local) = self.local_sip(call.r.side) else {
            return;
        };
        let uri = call
            .invite
            .as_ref()
            .and_then(|i| i.request_uri_raw().map(text))
            .or_else(|| call.remote_target.clone())
            .unwrap_or_default();
        let to = header_value(msg, HeaderName::To).unwrap_or_default();
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let initial = cseq == 1;
        let routes: Vec<String> = if initial {
            Vec::new()
        } else {
            call.routes.clone()
        };
        let built = RequestBuilder::new(Method::Ack, &uri)
            .via(&via)
            .routes(routes.iter().map(String::as_str))
            .from(&call.local_party)
            .to(&to)
            .call_id(&call.call_id)
            .cseq(cseq)
            .build();
        let dest = if initial {
            call.fallback_hop
        } else {
            Self::next_hop(call)
        };
        if let Ok(m) = built {
            let data = m.bytes();
            self.send(call.r.side, dest, data.clone());
            call.ack = Some((cseq, data, dest));
        }
    }

    fn on_request(&mut self, now: Instant, call: &mut Call, msg: &Message, source: SocketAddr) {
        let Some(method) = msg.method() else { return };
        let Ok(cseq) = msg.cseq() else { return };
        let tag = call.local_tag.clone();
        // Retransmissions get the same response again.
        if method == Method::Invite {
            if let Some((seq, data, dest)) = call.invite_response.clone() {
                if seq == cseq.seq {
                    self.send(call.r.side, dest, data);
                    return;
                }
            }
        } else if method != Method::Ack && method != Method::Cancel {
            if let Some((seq, m, data, dest)) = call.other_response.clone() {
                if seq == cseq.seq && m == method.as_str() {
                    self.send(call.r.side, dest, data);
                    return;
                }
            }
        }
        match method {
            Method::Ack => self.on_ack(now, call, msg, cseq.seq),
            Method::Cancel => self.on_cancel(now, call, msg, source),
            _ => {
                // §12.2.2: a CSeq below the last one is out of order.
                if call.remote_cseq.is_some_and(|last| cseq.seq <= last) {
                    self.respond(
                        call.r.side,
                        msg,
                        source,
                        500,
                        "Server Internal Error",
                        &tag,
                        &[],
                        None,
                    );
                    return;
                }
                let to_tag = msg.to().ok().and_then(|t| t.tag().map(str::to_string));
                if to_tag.as_deref() != Some(call.local_tag.as_str())
                    || call.state == State::Ended && method != Method::Bye
                {
                    self.respond(
                        call.r.side,
                        msg,
                        source,
                        481,
                        "Call/Transaction Does Not Exist",
                        &tag,
                        &[],
                        None,
                    );
                    return;
                }
                call.remote_cseq = Some(cseq.seq);
                match method {
                    Method::Invite => self.on_reinvite(now, call, msg, source, cseq.seq),
                    Method::Bye => self.on_bye(now, call, msg, source, cseq.seq),
                    Method::Options => {
                        self.respond_other(
                            call,
                            msg,
                            source,
                            cseq.seq,
                            200,
                            "OK",
                            &[("Allow", ALLOW)],
                        );
                    }
                    _ => {
                        self.respond_other(
                            call,
                            msg,
                            source,
                            cseq.seq,
                            501,
                            "Not Implemented",
                            &[("Allow", ALLOW)],
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond_other(
        &mut self,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
    ) {
        let tag = call.local_tag.clone();
        if let Some(data) =
            self.respond(call.r.side, msg, source, status, reason, &tag, extra, None)
        {
            let method = msg
                .method()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            call.other_response = Some((cseq, method, data, source));
        }
    }

    fn on_ack(&mut self, now: Instant, call: &mut Call, msg: &Message, cseq: u32) {
        let Some(server) = call.server.as_ref().filter(|s| s.cseq == cseq) else {
            return;
        };
        let success = server.success();
        call.server = None;
        if !success {
            return;
        }
        if !msg.body().is_empty() {
            // The answer to the offer in our 200 (a re-INVITE without SDP).
            if let Ok(remote) = RemoteMedia::parse(msg.body()) {
                call.remote = Some(remote);
                self.media_event(call, true);
            }
        }
        if call.state == State::Answered {
            self.establish(now, call);
        }
    }

    fn on_cancel(&mut self, now: Instant, call: &mut Call, msg: &Message, source: SocketAddr) {
        let tag = call.local_tag.clone();
        self.respond(call.r.side, msg, source, 200, "OK", &tag, &[], None);
        if call.r.side == Side::Uas && call.state == State::Calling {
            self.uas_final(now, call, 487, "Request Terminated");
            self.end(
                now,
                call,
                Outcome::Failed,
                Some(487),
                "cancelled by the caller",
            );
        }
    }

    fn on_reinvite(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
    ) {
        if call.client.is_some() {
            // §14.2: our own re-INVITE is pending.
            call.record.sent_491 += 1;
            self.respond_invite(now, call, msg, source, cseq, 491, "Request Pending", None);
            return;
        }
        if call.state == State::Answered {
            // The ACK was lost; this request proves the dialog is up.
            call.server = None;
            self.establish(now, call);
        }
        if !matches!(call.state, State::Established | State::Ending) {
            self.respond_invite(
                now,
                call,
                msg,
                source,
                cseq,
                500,
                "Server Internal Error",
                None,
            );
            return;
        }
        let offer = if msg.body().is_empty() {
            None
        } else {
            match RemoteMedia::parse(msg.body()) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.respond_invite(
                        now,
                        call,
                        msg,
                        source,
                        cseq,
                        488,
                        "Not Acceptable Here",
                        None,
                    );
                    return;
                }
            }
        };
        if let Some(c) = contact_uri(msg) {
            call.remote_target = Some(c);
        }
        let body = match offer {
            Some(o) => call.sdp.answer(o.direction).to_vec(),
            None => call.sdp.bytes().to_vec(),
        };
        call.record.reinvites.push(ReceivedReinvite {
            at: now,
            remote: offer.and_then(|o| o.address),
            sdp_version: sdp_version(msg.body()),
        });
        self.respond_invite(now, call, msg, source, cseq, 200, "OK", Some(&body));
        if let Some(o) = offer {
            call.remote = Some(o);
            if call.state == State::Established {
                self.media_event(call, true);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn respond_invite(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
        status: u16,
        reason: &str,
        body: Option<&[u8]>,
    ) {
        let tag = call.local_tag.clone();
        let contact = call.contact.clone();
        let extra = [("Contact", contact.as_str()), ("User-Agent", USER_AGENT)];
        let Some(data) = self.respond(call.r.side, msg, source, status, reason, &tag, &extra, body)
        else {
            return;
        };
        call.invite_response = Some((cseq, data.clone(), source));
        let timers = &self.tx_timers;
        call.server = Some(ServerTx::sent(now, cseq, status, data, source, timers));
    }

    fn on_bye(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
    ) {
        self.respond_other(call, msg, source, cseq, 200, "OK", &[]);
        match call.state {
            State::Established | State::Answered | State::Ending => {
                let ours_pending = call.state == State::Ending;
                call.record.hangup.get_or_insert(Party::Remote);
                call.server = call.server.take().filter(|s| !s.success());
                let early = call
                    .record
                    .established
                    .is_some_and(|e| now + HOLD_SLACK < e + self.config.hold);
                if call.record.reason.is_some() {
                    let reason = call.record.reason.clone().unwrap_or_default();
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else if early && !ours_pending {
                    let held = call
                        .record
                        .established
                        .map(|e| now.saturating_duration_since(e))
                        .unwrap_or_default();
                    let reason = format!(
                        "BYE from the other side after {:.1} s of {:.1} s",
                        held.as_secs_f64(),
                        self.config.hold.as_secs_f64()
                    );
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else {
                    self.end(now, call, Outcome::Completed, None, "");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    struct Ports(u16);
    impl MediaPorts for Ports {
        fn allocate(&mut self, _call: CallRef) -> Option<SocketAddr> {
            self.0 += 2;
            Some(SocketAddr::from(([127, 0, 0, 1], self.0)))
        }
    }

    const UAC: &str = "127.0.0.1:5070";
    const UAS: &str = "127.0.0.1:5090";

    fn config(calls: u64, answer: UasAnswer) -> Config {
        let mut c = Config::new(Duration::from_secs(2), 1);
        c.uac = Some(UacConfig {
            local: UAC.parse().unwrap(),
            proxy: UAS.parse().unwrap(),
            request_uri: format!("sip:service@{UAS}"),
            calls,
            rate: 10.0,
            concurrent: u64::MAX,
            answer_timeout: Duration::from_secs(1),
            reinvite_after: None,
        });
        c.uas = Some(UasConfig {
            local: UAS.parse().unwrap(),
            answer,
            answer_delay: Duration::ZERO,
            calls: None,
        });
        c
    }

    /// Delivers every datagram directly (UAC ↔ UAS, no proxy), optionally dropping some,
    /// and runs timers, until the agent is done or `until`.
    fn run(
        agent: &mut Agent,
        start: Instant,
        until: Duration,
        drop: &mut dyn FnMut(&Transmit) -> bool,
    ) -> Vec<Event> {
        let mut ports = Ports(20000);
        let mut now = start;
        let mut events = Vec::new();
        let uac: SocketAddr = UAC.parse().unwrap();
        let uas: SocketAddr = UAS.parse().unwrap();
        agent.handle_timeout(now, &mut ports);
        loop {
            while let Some(t) = agent.poll_transmit() {
                if drop(&t) {
                    continue;
                }
                let (to_side, from) = if t.destination == uas {
                    (Side::Uas, uac)
                } else {
                    (Side::Uac, uas)
                };
                agent.handle_datagram(now, to_side, from, t.data, &mut ports);
            }
            while let Some(e) = agent.poll_event() {
                events.push(e);
            }
            if agent.is_done() || now >= start + until {
                break;
            }
            now = agent
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(10))
                .max(now);
            agent.handle_timeout(now, &mut ports);
        }
        events
    }

    fn records(events: &[Event]) -> Vec<CallRecord> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Ended { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn calls_are_set_up_held_and_hung_up() {
        let start = t0();
        let mut agent = Agent::new(config(3, UasAnswer::Ok), start);
        let events = run(&mut agent, start, Duration::from_secs(60), &mut |_| false);
        let recs = records(&events);
        assert_eq!(recs.len(), 6, "{recs:#?}");
        assert!(
            recs.iter().all(|r| r.outcome == Outcome::Completed),
            "{recs:#?}"
        );
        let uac: Vec<_> = recs.iter().filter(|r| r.side == Side::Uac).collect();
        assert!(uac
            .iter()
            .all(|r| r.setup == Some(Duration::ZERO) && r.status == Some(200)));
        assert!(uac.iter().all(|r| r.remote_media.is_some()));
        // Held for the hold time; placed 100 ms apart (10/s).
        for r in &uac {
            assert_eq!(r.ended - r.established.unwrap(), Duration::from_secs(2));
        }
        assert_eq!(uac[1].started - uac[0].started, Duration::from_millis(100));
        let p = agent.progress();
        // Progress follows the callers.
        assert_eq!(
            (p.placed, p.completed, p.failed, p.dropped, p.up),
            (3, 3, 0, 0, 0)
        );
        // Media was started on both sides and stopped.
        let starts = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Media {
                        send: true,
                        receive: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(starts, 6);
    }

    #[test]
    fn lost_datagrams_are_retransmitted() {
        let start = t0();
        let mut agent = Agent::new(config(1, UasAnswer::Ok), start);
        // Drop the first INVITE, the first 200 and the first BYE.
        let mut seen = HashMap::new();
        let events = run(&mut agent, start, Duration::from_secs(60), &mut |t| {
            let first_line = t
                .data
                .split(|&b| b == b'\r')
                .next()
                .unwrap_or_default()
                .to_vec();
            let key = String::from_utf8_lossy(&first_line[..first_line.len().min(12)]).to_string();
            let n = seen.entry(key).or_insert(0);
            *n += 1;
            *n == 1 && !t.data.starts_with(b"SIP/2.0 100") && !t.data.starts_with(b"ACK")
        });
        let recs = records(&events);
        assert_eq!(recs.len(), 2);
        assert!(
            recs.iter().all(|r| r.outcome == Outcome::Completed),
            "{recs:#?}"
        );
        let uac = recs.iter().find(|r| r.side == Side::Uac).unwrap();
        // INVITE lost (T1), then the 200 lost: the UAS retransmits it after T1.
        assert_eq!(uac.setup, Some(Duration::from_millis(1000)));
    }

    #[test]
    fn busy_and_never_answering_uas() {
        let start = t0();
        let mut agent = Agent::new(config(2, UasAnswer::Busy), start);
        let recs = records(&run(
            &mut agent,
            start,
            Duration::from_secs(60),
            &mut |_| false,
        ));
        assert_eq!(recs.len(), 4);
        assert!(
            recs.iter()
                .all(|r| r.outcome == Outcome::Failed && r.status == Some(486)),
            "{recs:#?}"
        );
        assert!(agent.is_done());

        let mut agent = Agent::new(config(1, UasAnswer::Never), start);
        let recs = records(&run(
            &mut agent,
            start,
            Duration::from_secs(60),
            &mut |_| false,
        ));
        assert_eq!(recs.len(), 2, "{recs:#?}");
        assert!(
            recs.iter()
                .all(|r| r.outcome == Outcome::Failed && r.status == Some(487)),
            "{recs:#?}"
        );
        let uac = recs.iter().find(|r| r.side == Side::Uac).unwrap();
        assert!(
            uac.reason
                .as_deref()
                .unwrap()
                .contains("cancelled after the answer timeout"),
            "{uac:?}"
        );
        assert_eq!(uac.ended - uac.started, Duration::from_secs(1));
    }

    #[test]
    fn the_uas_hangs_up_when_chosen_and_random_splits_by_call_id() {
        let start = t0();
        let mut c = config(4, UasAnswer::Ok);
        c.hangup = Hangup::Uas;
        let mut agent = Agent::new(c, start);
        let recs = records(&run(
            &mut agent,
            start,
            Duration::from_secs(60),
            &mut |_| false,
        ));
        assert!(recs.iter().all(|r| r.outcome == Outcome::Completed));
        assert!(recs.iter().all(|r| r.hangup
            == Some(if r.side == Side::Uas {
                Party::Local
            } else {
                Party::Remote
            })));
        let sides: std::collections::HashSet<Side> = (0..20)
            .map(|i| Hangup::Random.side(&format!("call-{i}@x")))
            .collect();
        assert_eq!(sides.len(), 2);
    }

    #[test]
    fn concurrency_limits_live_calls() {
        let start = t0();
        let mut c = config(4, UasAnswer::Ok);
        if let Some(u) = c.uac.as_mut() {
            u.concurrent = 1;
            u.rate = 100.0;
        }
        let mut agent = Agent::new(c, start);
        let recs = records(&run(
            &mut agent,
            start,
            Duration::from_secs(60),
            &mut |_| false,
        ));
        let mut uac: Vec<_> = recs.into_iter().filter(|r| r.side == Side::Uac).collect();
        uac.sort_by_key(|r| r.started);
        assert_eq!(uac.len(), 4);
        for w in uac.windows(2) {
            assert!(w[1].started >= w[0].ended, "overlap: {w:#?}");
        }
    }

    /// A proxy-style re-INVITE towards the UAC: the callee's identity, the next CSeq, a new
    /// media address. The UAC answers 200 with its unchanged SDP and moves its media.
    #[test]
    fn a_reinvite_moves_the_media_and_is_answered_with_the_same_sdp() {
        let start = t0();
        let mut c = config(1, UasAnswer::Ok);
        c.uas = None;
        c.hold = Duration::from_secs(10);
        let mut agent = Agent::new(c, start);
        let mut ports = Ports(20000);
        agent.handle_timeout(start, &mut ports);
        let invite = agent.poll_transmit().unwrap();
        let invite_msg = Message::parse(invite.data.clone()).unwrap();
        let uas: SocketAddr = UAS.parse().unwrap();
        let from = header_value(&invite_msg, HeaderName::From).unwrap();
        let call_id = invite_msg.call_id().unwrap().to_string();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {via}\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            via = header_value(&invite_msg, HeaderName::Via).unwrap(),
            len = 0,
            sdp = ""
        );
        let sdp = "v=0\r\no=callee 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        let ok = ok.replace(
            "Content-Length: 0\r\n\r\n",
            &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
        );
        agent.handle_datagram(start, Side::Uac, uas, Bytes::from(ok), &mut ports);
        let ack = agent.poll_transmit().unwrap();
        assert!(ack
            .data
            .starts_with(format!("ACK sip:callee@{UAS} SIP/2.0").as_bytes()));
        assert_eq!(
            ack.destination.to_string(),
            "127.0.0.1:5060",
            "through the Record-Route"
        );
        let ack_text = String::from_utf8_lossy(&ack.data).to_string();
        assert!(
            ack_text.contains("Route: <sip:127.0.0.1:5060;lr>"),
            "{ack_text}"
        );
        let local_sdp_first = String::from_utf8_lossy(invite_msg.body()).to_string();
        let t = start + Duration::from_secs(3);
        let new_sdp = "v=0\r\no=callee 9 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 35000 RTP/AVP 0\r\n";
        let reinvite = format!(
            "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy1\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
             To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{new_sdp}",
            new_sdp.len()
        );
        let proxy: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        agent.handle_datagram(
            t,
            Side::Uac,
            proxy,
            Bytes::from(reinvite.clone()),
            &mut ports,
        );
        let answer = agent.poll_transmit().unwrap();
        assert_eq!(answer.destination, proxy);
        let answer = Message::parse(answer.data).unwrap();
        assert_eq!(answer.status(), Some(200));
        assert_eq!(
            String::from_utf8_lossy(answer.body()),
            local_sdp_first,
            "same SDP, same o= version"
        );
        let events: Vec<Event> = std::iter::from_fn(|| agent.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(e, Event::Media { reinvite: true, remote: Some(a), .. } if a.port() == 35000)), "{events:?}");
        // A retransmitted re-INVITE gets the same 200; the 200 is retransmitted until the ACK.
        agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(reinvite), &mut ports);
        assert_eq!(agent.poll_transmit().unwrap().data, answer.bytes());
        agent.handle_timeout(t + Duration::from_millis(500), &mut ports);
        assert_eq!(agent.poll_transmit().unwrap().data, answer.bytes());
        let ack = format!(
            "ACK sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy2\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
             To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(ack), &mut ports);
        agent.handle_timeout(t + Duration::from_millis(1600), &mut ports);
        assert!(
            agent.poll_transmit().is_none(),
            "no retransmission after the ACK"
        );
        // A lower CSeq is out of order.
        let stale = format!(
            "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKold\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
             To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 0 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(stale), &mut ports);
        assert!(agent
            .poll_transmit()
            .unwrap()
            .data
            .starts_with(b"SIP/2.0 500"));
        // The BYE at the hold time goes through the route set with CSeq 2.
        agent.handle_timeout(start + Duration::from_secs(10), &mut ports);
        let bye = agent.poll_transmit().unwrap();
        assert_eq!(bye.destination, proxy);
        let bye = Message::parse(bye.data).unwrap();
        assert_eq!(bye.cseq().unwrap().seq, 2);
        assert_eq!(
            bye.request_uri_raw().unwrap(),
            format!("sip:callee@{UAS}").as_bytes()
        );
    }

    /// Answers the UAC's INVITE as a proxy would relay the callee's 200 (no Record-Route),
    /// and takes the ACK. Returns (From value, Call-ID).
    fn answered_uac_call(agent: &mut Agent, ports: &mut Ports, now: Instant) -> (String, String) {
        agent.handle_timeout(now, ports);
        let invite = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
        let from = header_value(&invite, HeaderName::From).unwrap();
        let call_id = invite.call_id().unwrap().to_string();
        let sdp = "v=0\r\no=callee 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            header_value(&invite, HeaderName::Via).unwrap(),
            sdp.len()
        );
        agent.handle_datagram(now, Side::Uac, UAS.parse().unwrap(), Bytes::from(ok), ports);
        assert!(agent.poll_transmit().unwrap().data.starts_with(b"ACK "));
        (from, call_id)
    }

    #[test]
    fn our_reinvite_backs_off_on_491_and_glare_gets_491() {
        let start = t0();
        let mut c = config(1, UasAnswer::Ok);
        c.uas = None;
        c.hold = Duration::from_secs(30);
        if let Some(u) = c.uac.as_mut() {
            u.reinvite_after = Some(Duration::from_secs(1));
        }
        let mut agent = Agent::new(c, start);
        let mut ports = Ports(20000);
        let (from, call_id) = answered_uac_call(&mut agent, &mut ports, start);
        let uas: SocketAddr = UAS.parse().unwrap();
        // Our re-INVITE at 1 s, CSeq 2, same SDP.
        let t = start + Duration::from_secs(1);
        agent.handle_timeout(t, &mut ports);
        let reinvite = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
        assert_eq!(reinvite.cseq().unwrap().seq, 2);
        let busy = format!(
            "SIP/2.0 491 Request Pending\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
             Call-ID: {call_id}\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
            header_value(&reinvite, HeaderName::Via).unwrap()
        );
        agent.handle_datagram(t, Side::Uac, uas, Bytes::from(busy), &mut ports);
        let ack = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
        assert_eq!(ack.method(), Some(Method::Ack));
        assert_eq!(
            ack.top_via().unwrap().branch(),
            reinvite.top_via().unwrap().branch(),
            "a non-2xx ACK keeps the INVITE's branch"
        );
        // The retry comes 2.1–4 s later (RFC 3261 §14.1, Call-ID owner), CSeq 3.
        agent.handle_timeout(t + Duration::from_millis(2099), &mut ports);
        assert!(agent.poll_transmit().is_none());
        agent.handle_timeout(t + Duration::from_secs(4), &mut ports);
        let retry = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
        assert_eq!(retry.cseq().unwrap().seq, 3);
        // Glare: the other side's re-INVITE while ours is pending gets 491.
        let theirs = format!(
            "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP {UAS};branch=z9hG4bKtheirs\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
             To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let t = t + Duration::from_secs(4);
        agent.handle_datagram(t, Side::Uac, uas, Bytes::from(theirs), &mut ports);
        assert!(agent
            .poll_transmit()
            .unwrap()
            .data
            .starts_with(b"SIP/2.0 491"));
        // The BYE at the hold time; the record counts it all.
        agent.handle_timeout(start + Duration::from_secs(30), &mut ports);
        let bye = std::iter::from_fn(|| agent.poll_transmit())
            .map(|t| Message::parse(t.data).unwrap())
            .find(|m| m.method() == Some(Method::Bye))
            .unwrap();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
             Call-ID: {call_id}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
            header_value(&bye, HeaderName::Via).unwrap(),
            bye.cseq().unwrap().seq
        );
        agent.handle_datagram(
            start + Duration::from_secs(30),
            Side::Uac,
            uas,
            Bytes::from(ok),
            &mut ports,
        );
        let record = std::iter::from_fn(|| agent.poll_event())
            .find_map(|e| match e {
                Event::Ended { record, .. } => Some(record),
                _ => None,
            })
            .unwrap();
        // The retried re-INVITE never got an answer; the BYE ended the call.
        assert_eq!(record.reinvites_sent, 2);
        assert_eq!(record.reinvites_491, 1);
        assert_eq!(record.sent_491, 1);
        assert_eq!(record.outcome, Outcome::Completed, "{record:?}");
    }

    #[test]
    fn in_dialog_requests_for_unknown_calls_get_481() {
        let start = t0();
        let mut agent = Agent::new(config(0, UasAnswer::Ok), start);
        let mut ports = Ports(20000);
        let bye = "BYE sip:callgen@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
                   From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: nope\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n";
        let proxy: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        agent.handle_datagram(start, Side::Uas, proxy, Bytes::from(bye), &mut ports);
        let t = agent.poll_transmit().unwrap();
        assert_eq!(t.destination, proxy);
        assert!(t.data.starts_with(b"SIP/2.0 481"));
        agent.handle_datagram(
            start,
            Side::Uas,
            proxy,
            Bytes::from_static(b"garbage"),
            &mut ports,
        );
        assert_eq!(agent.progress().bad_messages, 1);
        assert!(agent.is_done(), "no UAC calls, UAS with others");
    }
}
