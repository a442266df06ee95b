//! The agent's configuration: its populations (callers, callees), how the callee answers,
//! who hangs up, the RFC 3261 timers, and where each call's media socket comes from.

use std::net::SocketAddr;
use std::time::Duration;

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
