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

//!
//! | file | what it holds |
//! | --- | --- |
//! | `config.rs` | the populations' configuration: [`Config`], [`UacConfig`], [`UasConfig`], [`Hangup`], [`MediaPorts`] |
//! | `output.rs` | what the agent hands out: [`Transmit`], [`Event`], [`CallRecord`], [`Progress`] |
//! | `agent.rs` | the [`Agent`]'s seam (`handle_*`, `poll_*`, `stop`), the dispatch of a datagram to its call, the end of a call |
//! | `uac.rs` | the caller: placing calls at the rate, the INVITE, CANCEL, the responses to our requests, the ACKs |
//! | `uas.rs` | the callee: a new INVITE, the provisional and final responses to it |
//! | `in_dialog.rs` | requests inside a call, both ways: BYE, re-INVITE (with 491 on glare), ACK, CANCEL, OPTIONS |
//! | `timers.rs` | a call's deadlines (one entry per call in the agent's heap) and what each does when it fires |
//! | `transaction.rs` | the RFC 3261 §17 transactions a call runs, on `anchorage-transaction`'s machines |

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_sip::{Header, HeaderName, Host, Message, NameAddr, Uri};
use rand::rngs::SmallRng;

use crate::sdp::{LocalSdp, RemoteMedia};

mod agent;
mod config;
mod in_dialog;
mod output;
mod timers;
mod transaction;
mod uac;
mod uas;

pub use config::{CallRef, Config, Hangup, MediaPorts, Side, UacConfig, UasAnswer, UasConfig};
pub use output::{CallRecord, Event, Outcome, Party, Progress, ReceivedReinvite, Transmit};

use timers::Deadlines;
use transaction::{CallTransactions, ClientTx, ServerTx};

/// A response the UA sends: its status line, extra header fields and SDP body.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    status: u16,
    reason: &'a str,
    extra: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
}

impl<'a> Reply<'a> {
    /// `status reason`, without extra header fields or body.
    fn new(status: u16, reason: &'a str) -> Reply<'a> {
        Reply {
            status,
            reason,
            extra: &[],
            body: None,
        }
    }

    /// With these extra header fields.
    fn extra(self, extra: &'a [(&'a str, &'a str)]) -> Reply<'a> {
        Reply { extra, ..self }
    }

    /// With this SDP body, if any.
    fn body(self, body: Option<&'a [u8]>) -> Reply<'a> {
        Reply { body, ..self }
    }
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
    /// The call's transactions and the responses kept for retransmitted requests.
    tx: CallTransactions,
    /// The call's own deadlines (hang up, CANCEL, re-INVITE, answer, give up, forget).
    deadlines: Deadlines,
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

#[cfg(test)]
mod tests;
