//! The relay's control plane: one [`Controller`] executes ng commands against the call model
//! and says what the data plane must do ([`MediaAction`]). Sans-IO: the time comes in as
//! [`Now`], sockets are probed through a [`PortBinder`] the I/O layer implements (so a port
//! some other process holds is skipped, as rtpengine does), and media counters come back in
//! through [`Controller::observe`].
//!
//! | file | what |
//! | --- | --- |
//! | this one | the types of the seam, [`Controller::new`] and [`Controller::handle`] |
//! | `offer`, `answer` | the two commands that negotiate media |
//! | `negotiate` | per `m=` line: each side's transport (plain, SDES, passed through) and keys |
//! | `outgoing` | the SDP and the warnings sent back |
//! | `report` | `delete`, `query`, `list`, `statistics` |
//! | `feedback` | counters from the data plane, timers, getters for `/metrics` |
//! | `streams` | ports, the data plane's media pairs, interfaces, per-leg options |

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_ng::{ErrorReason, Outcome, Reply, Request, RequestKind};
use anchorage_relay::{
    EndpointLearning, Interface, MediaPair, PortPool, SdpPeer, Side, StreamFlags, Timeouts,
};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{CryptoRng, Rng, SeedableRng};

use crate::session::{Call, SessionKey};

mod answer;
mod feedback;
mod negotiate;
mod offer;
mod outgoing;
mod report;
mod streams;

use outgoing::{add_warning, ignored_options};

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Media interfaces; the first is the default.
    pub interfaces: Vec<Interface>,
    /// Media and offer timeouts.
    pub timeouts: Timeouts,
    /// How long released ports wait before reuse (`delete-delay`).
    pub port_quarantine: Duration,
    /// Most simultaneous calls; 0 = no limit.
    pub max_sessions: u64,
    /// Default endpoint learning.
    pub learning: EndpointLearning,
    /// This relay's name in `a=rtpengine:` (loop protect).
    pub instance: String,
    /// The fingerprint of the relay's DTLS certificate: the relay terminates DTLS-SRTP (and
    /// writes this into `a=fingerprint`); `None`: DTLS-SRTP is only passed through.
    pub dtls: Option<anchorage_relay::Fingerprint>,
}

/// A configuration the controller cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No interface.
    #[error("the relay needs at least one media interface")]
    NoInterface,
}

/// The clock, read by the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub mono: Instant,
    /// Wall-clock time in UNIX microseconds, for `created` and `last signal`.
    pub unix_us: i64,
}

/// Binds the relay's sockets for a port pair, or says it cannot.
pub trait PortBinder {
    /// Binds RTP and RTCP sockets on these local addresses; false if either is taken (the
    /// controller then tries another pair). Sockets bound for a request the controller then
    /// abandons are the binder's to close.
    fn bind(&mut self, rtp: SocketAddr, rtcp: SocketAddr) -> bool;

    /// Binds the RTCP socket of a pair the relay already holds, whose RTCP socket was closed
    /// under rtcp-mux and is needed again (the leg stops multiplexing, or is sent an offer
    /// that advertises the RTCP port); false if the port is taken.
    fn bind_rtcp(&mut self, rtcp: SocketAddr) -> bool;
}

/// What the data plane must do after a command.
// `Update` carries a leg's options by value, SRTP keys included (~200 bytes): a few actions
// per ng command, never per packet, so the size is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MediaAction {
    /// Start relaying a new dialog's streams (sockets: the pairs' local addresses).
    Add {
        /// The dialog.
        key: SessionKey,
        /// One per `m=` line.
        pairs: Vec<MediaPair>,
        /// The request's `TOS` for the streams' packets (the relay's default when `None`).
        tos: Option<u8>,
    },
    /// Append streams to a dialog (a re-offer with more `m=` lines).
    Extend {
        /// The dialog.
        key: SessionKey,
        /// The new streams, in `m=` order after the existing ones.
        pairs: Vec<MediaPair>,
        /// The request's `TOS` for the new streams' packets.
        tos: Option<u8>,
    },
    /// Re-signal one leg of one stream.
    Update {
        /// The dialog.
        key: SessionKey,
        /// Stream index.
        media: usize,
        /// The leg.
        side: Side,
        /// Its SDP address.
        remote: Option<SdpPeer>,
        /// Whether its RTP port carries RTCP.
        rtcp_mux: bool,
        /// Learning options.
        flags: StreamFlags,
    },
    /// Open (`open`: on the socket the [`PortBinder`] bound for `local` in this command) or
    /// close the RTCP socket of one leg of one stream. A leg that multiplexes RTCP on its RTP
    /// port (RFC 5761) holds none; its port pair stays reserved so that the same RTCP port
    /// can be opened again. Openings come before the `Update`s of the command, closings
    /// after them.
    Rtcp {
        /// The dialog.
        key: SessionKey,
        /// Stream index.
        media: usize,
        /// The leg.
        side: Side,
        /// The RTCP port's local address.
        local: SocketAddr,
        /// Open (true) or close (false).
        open: bool,
    },
    /// Stop relaying a dialog and close its sockets.
    Remove {
        /// The dialog.
        key: SessionKey,
    },
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The ng reply.
    pub reply: Reply,
    /// What the data plane must do, in order.
    pub actions: Vec<MediaAction>,
}

impl Handled {
    fn reply(reply: Reply) -> Handled {
        Handled {
            reply,
            actions: Vec::new(),
        }
    }
}

/// Why a dialog ended without a `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its call.
    pub call_id: String,
    /// The dialog.
    pub key: SessionKey,
    /// No media, no answer, or a delayed delete falling due.
    pub reason: ExpiryReason,
}

/// Why [`Expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryReason {
    /// No media for the media timeout.
    Media,
    /// No answer for the offer timeout.
    Offer,
    /// A `delete` with `delete delay`.
    DelayedDelete,
}

/// Lifetime counters (ng `statistics`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Calls created.
    pub managed_sessions: u64,
    /// Offers refused for capacity (session limit, ports).
    pub rejected_sessions: u64,
    /// Dialogs ended by a timeout.
    pub timeout_sessions: u64,
    /// Commands by kind.
    pub offers: u64,
    /// `answer`s.
    pub answers: u64,
    /// `delete`s.
    pub deletes: u64,
    /// `query`s.
    pub queries: u64,
    /// Commands answered with an error.
    pub errors: u64,
}

/// Port pool occupancy of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUsage {
    /// Interface name.
    pub interface: String,
    /// Pairs in use.
    pub in_use: usize,
    /// Pairs free.
    pub free: usize,
    /// Pairs waiting out the quarantine.
    pub quarantined: usize,
}

/// The relay's control plane.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    pools: Vec<PortPool>,
    calls: HashMap<String, Call>,
    keys: HashMap<SessionKey, String>,
    next_key: u64,
    started: Now,
    statistics: Statistics,
    /// Draws ICE credentials.
    rng: rand::rngs::SmallRng,
    /// Draws SDES keys: a cryptographically secure generator seeded from the one given to
    /// [`Controller::new`].
    key_rng: StdRng,
}

/// Why a command is refused; becomes the error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// rtpengine's text.
    Reason(ErrorReason),
    /// Our own text, for what rtpengine has no string for.
    Text(String),
    /// A capacity limit (`load limit` for clients that support it).
    Limit(ErrorReason, bool),
}

impl Refusal {
    fn into_reply(self) -> Reply {
        match self {
            Refusal::Reason(reason) => Reply::error(reason),
            Refusal::Text(text) => Reply::new(Outcome::Error(text)),
            Refusal::Limit(reason, supported) => Reply::limit(reason, supported),
        }
    }
}

fn fail(reason: ErrorReason) -> Refusal {
    Refusal::Reason(reason)
}

fn fail_text(text: impl Into<String>) -> Refusal {
    Refusal::Text(text.into())
}

const SECOND_US: i64 = 1_000_000;

/// The longest `delete delay` honoured, seconds.
const MAX_DELETE_DELAY_S: u64 = 3600;

impl Controller {
    /// A controller over `config`'s interfaces, their port pools shuffled with `rng`. The
    /// relay's SDES keys come from a generator seeded from `rng`, hence the `CryptoRng` bound:
    /// give it one seeded by the operating system (tests may seed it with a constant).
    pub fn new<R: Rng + CryptoRng + ?Sized>(
        config: Config,
        rng: &mut R,
        now: Now,
    ) -> Result<Self, ConfigError> {
        if config.interfaces.is_empty() {
            return Err(ConfigError::NoInterface);
        }
        let pools = config
            .interfaces
            .iter()
            .map(|i| PortPool::new(i.ports, config.port_quarantine, rng))
            .collect();
        Ok(Self {
            config,
            pools,
            calls: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
            started: now,
            statistics: Statistics::default(),
            rng: <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(rng.random()),
            key_rng: StdRng::from_seed(rng.random()),
        })
    }

    /// Executes one command.
    pub fn handle(&mut self, request: &Request, now: Now, binder: &mut dyn PortBinder) -> Handled {
        let flags = &request.flags;
        let result = match &request.kind {
            RequestKind::Ping => Ok(Handled::reply(Reply::pong())),
            RequestKind::Offer(oa) => {
                self.statistics.offers += 1;
                self.offer(oa, flags, now, binder)
            }
            RequestKind::Answer(oa) => {
                self.statistics.answers += 1;
                self.answer(oa, flags, now, binder)
            }
            RequestKind::Delete(delete) => {
                self.statistics.deletes += 1;
                self.delete(delete, flags, now)
            }
            RequestKind::Query(query) => {
                self.statistics.queries += 1;
                self.query(query).map(Handled::reply)
            }
            RequestKind::List => Ok(Handled::reply(self.list(flags.limit))),
            RequestKind::Statistics => Ok(Handled::reply(self.statistics_reply(now))),
            RequestKind::Other { command, .. } => Err(fail_text(format!(
                "Unsupported command: {} (this relay implements ping, offer, answer, delete, \
                 query, list and statistics)",
                command.as_str()
            ))),
        };
        match result {
            Ok(mut handled) => {
                if handled.reply.outcome == Outcome::Ok {
                    if let Some(more) = ignored_options(flags) {
                        add_warning(&mut handled.reply, more);
                    }
                }
                handled
            }
            Err(refusal) => {
                self.statistics.errors += 1;
                Handled::reply(refusal.into_reply())
            }
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            timeouts: Timeouts::default(),
            port_quarantine: Duration::from_secs(30),
            max_sessions: 0,
            learning: EndpointLearning::Delayed,
            instance: "anchorage".into(),
            dtls: None,
        }
    }
}

/// A `Bytes` SDP body, for tests and callers that build requests.
pub fn body(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}
