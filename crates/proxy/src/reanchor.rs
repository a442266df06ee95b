//! Re-anchoring, the parts that need no proxy state (DESIGN.md "Re-anchoring"): where a
//! request the proxy sends into a dialog goes and how it is built when it impersonates the
//! other party, the SDP each leg is given, the RFC 3261 §14.1 back-off after a 491, and the
//! job records the API shows. The per-call procedure itself runs in the proxy node
//! ([`crate::node`], `node/moves/`), which owns the dialogs, transactions and relay clients it
//! drives.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_sdp::offer_answer::{restrict_codecs, with_origin, OriginIdentity};
use anchorage_sdp::Session;
use anchorage_sip::{Message, Method, RequestBuilder};
use bytes::Bytes;

use crate::dialog::Dialog;
use crate::routing::Target;
use crate::Transport;

/// One side of a dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The party that sent the initial INVITE.
    Caller,
    /// The party that answered it.
    Callee,
}

impl Party {
    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }

    /// Index in `[caller, callee]` arrays.
    pub fn index(self) -> usize {
        match self {
            Party::Caller => 0,
            Party::Callee => 1,
        }
    }

    /// `caller` or `callee`.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
        }
    }
}

/// Where and how a request the proxy sends to one party of a dialog goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegTarget {
    /// Request-URI: the party's remote target (its Contact).
    pub request_uri: String,
    /// Route headers: the Record-Route entries between this proxy and the party, nearest first.
    pub routes: Vec<String>,
    /// The next hop.
    pub destination: SocketAddr,
    /// Its transport.
    pub transport: Transport,
}

/// The route from this proxy to `to` in dialog `d`; `is_us` recognises this proxy's own
/// Record-Route entries. The Record-Route list as the response carried it runs from the callee
/// side to the caller side: the entries above ours lead to the callee (nearest is the last of
/// them), those below ours to the caller.
pub fn leg_target(d: &Dialog, to: Party, is_us: impl Fn(&str) -> bool) -> Option<LegTarget> {
    let rr = &d.record_route;
    let first_ours = rr.iter().position(|r| is_us(r));
    let last_ours = rr.iter().rposition(|r| is_us(r));
    let routes: Vec<String> = match (to, first_ours, last_ours) {
        (Party::Callee, Some(first), _) => rr.get(..first)?.iter().rev().cloned().collect(),
        (Party::Caller, _, Some(last)) => rr.get(last + 1..)?.to_vec(),
        // Not record-routed by us: we only see in-dialog requests if someone routes them here,
        // so send straight to the party.
        _ => Vec::new(),
    };
    let leg = match to {
        Party::Caller => &d.caller,
        Party::Callee => &d.callee,
    };
    let request_uri = leg.remote_target.clone()?;
    let first_hop = routes.first().and_then(|r| route_target(r));
    let (destination, transport) = match first_hop {
        Some(t) => (t.socket_addr()?, t.transport),
        None => straight_to(leg)?,
    };
    Some(LegTarget {
        request_uri,
        routes,
        destination,
        transport,
    })
}

/// Where a request goes straight to a party (no proxy between): its remote target, the Contact
/// it last gave (a target refresh moves it, RFC 3261 §12.2), as written when it is an address
/// reachable over UDP. The address its messages come from instead when the Contact is a private
/// address other than that one (behind NAT, as `behind_nat` does for forwarded requests), a name
/// (this core resolves none), or the party talks over TCP (its connection).
fn straight_to(leg: &crate::dialog::Leg) -> Option<(SocketAddr, Transport)> {
    let source = leg
        .source
        .map(|s| (s, leg.transport.unwrap_or(Transport::Udp)));
    let contact = leg
        .remote_target
        .as_deref()
        .and_then(|t| anchorage_sip::Uri::parse(t.as_bytes()).ok())
        .and_then(|uri| Target::from_uri(&uri))
        .and_then(|t| Some((t.socket_addr()?, t.transport)));
    match (contact, source) {
        (_, Some((s, Transport::Tcp))) => Some((s, Transport::Tcp)),
        (Some((c, _)), Some(s)) if crate::routing::is_private(c.ip()) && c.ip() != s.0.ip() => {
            Some(s)
        }
        (Some(c), _) => Some(c),
        (None, s) => s,
    }
}

/// The target of a Route/Record-Route value (`<sip:host:port;lr>`), if its host is an address.
fn route_target(value: &str) -> Option<Target> {
    let uri = crate::via::route_uri(value)?;
    Target::from_uri(&uri).filter(|t| t.socket_addr().is_some())
}

/// What the proxy writes into a request it sends to one party.
#[derive(Debug, Clone)]
pub struct OwnRequest<'a> {
    /// INVITE, ACK or BYE.
    pub method: Method<'a>,
    /// The dialog's Call-ID.
    pub call_id: &'a str,
    /// From: the other party's identity (name-addr with its tag).
    pub from: &'a str,
    /// To: the receiving party's identity.
    pub to: &'a str,
    /// Contact: the other party's remote target, so the receiver's target does not change.
    pub contact: Option<&'a str>,
    /// CSeq number.
    pub cseq: u32,
    /// Our Via (with a fresh branch).
    pub via: &'a str,
    /// Where it goes.
    pub target: &'a LegTarget,
    /// SDP body, if any.
    pub sdp: Option<&'a Bytes>,
}

/// Builds a request the proxy sends into a dialog on behalf of the other party.
pub fn build_request(r: &OwnRequest<'_>) -> Result<Message, anchorage_sip::BuildError> {
    let contact = r.contact.map(|c| format!("<{c}>"));
    let mut b = RequestBuilder::new(r.method, &r.target.request_uri)
        .via(r.via)
        .routes(r.target.routes.iter().map(String::as_str))
        .max_forwards(70)
        .from(r.from)
        .to(r.to)
        .call_id(r.call_id)
        .cseq(r.cseq);
    if let Some(contact) = &contact {
        b = b.contact(contact);
    }
    if let Some(sdp) = r.sdp {
        b = b.body("application/sdp", sdp);
    }
    b.build()
}

/// The SDP a leg is given on the new relay: the relay's rewrite with the leg's own `o=`
/// username and session id and the version after the last one it was sent (RFC 3264 §8: the
/// leg must see the same origin, one version up, or it may ignore the change).
pub fn sdp_for_leg(
    rewritten: &Bytes,
    last_sent: Option<&(String, String, u64)>,
) -> Result<Bytes, anchorage_sdp::FieldError> {
    let Ok(session) = Session::parse(rewritten.clone()) else {
        return Ok(rewritten.clone());
    };
    let Some((username, session_id, version)) = last_sent else {
        return Ok(rewritten.clone());
    };
    let identity = OriginIdentity {
        username: username.clone(),
        session_id: session_id.clone(),
    };
    Ok(with_origin(&session, &identity, version.saturating_add(1))?.to_bytes())
}

/// The caller's last offer restricted to the codecs the last negotiation agreed on (with
/// telephone-event and comfort noise kept by `restrict_codecs`), for the new relay's offer.
pub fn restricted_offer(caller_sdp: &Bytes, callee_sdp: &Bytes) -> Bytes {
    match (
        Session::parse(caller_sdp.clone()),
        Session::parse(callee_sdp.clone()),
    ) {
        (Ok(mut offer), Ok(answer)) => {
            restrict_codecs(&mut offer, &answer);
            offer.to_bytes()
        }
        _ => caller_sdp.clone(),
    }
}

/// A party's stored answer as the move's answer for an engine that does not convert between
/// the legs (RTPProxy only rewrites addresses and ports): in the profile of `offer`, the SDP
/// the same move re-offers that party. A call that was on a converting relay (SRTP towards
/// the callee only) stored the callee's SRTP answer; the callee is now offered the caller's
/// plain RTP and will answer in it, so the caller must not be handed the callee's old
/// `RTP/SAVP` and keys. Per media section whose profile differs: the offer's `m=` profile,
/// and no `a=crypto` (or `a=fingerprint`/`a=setup`) the offer's section lacks. An SDP that
/// cannot be read is returned as it is.
pub fn answer_in_offer_profile(answer: &Bytes, offer: &Bytes) -> Bytes {
    let (Ok(mut answer_sdp), Ok(offer_sdp)) = (
        Session::parse(answer.clone()),
        Session::parse(offer.clone()),
    ) else {
        return answer.clone();
    };
    let mut changed = false;
    for (a, o) in answer_sdp.media_mut().iter_mut().zip(offer_sdp.media()) {
        let proto = o.media().proto();
        if a.media().proto() == proto || a.set_proto(proto).is_err() {
            continue;
        }
        changed = true;
        if !o.has_attribute("crypto") {
            a.remove_attribute("crypto");
        }
        if !o.has_attribute("fingerprint") {
            a.remove_attribute("fingerprint");
            a.remove_attribute("setup");
        }
    }
    if changed {
        answer_sdp.to_bytes()
    } else {
        answer.clone()
    }
}

/// Whether a move's call has a DTLS-SRTP party or gives one a DTLS leg: a stored SDP with
/// `a=fingerprint`, or a leg's options asking for `UDP/TLS/RTP/SAVP(F)`. Then the move's
/// `answer` to an ng node carries `reanchor`, so that each DTLS party is offered a new
/// association with `a=setup:actpass` (RFC 5763 §5).
pub fn move_has_dtls(sdps: [&Bytes; 2], flags: [&str; 2]) -> bool {
    sdps.iter()
        .any(|s| contains_ignore_case(s, b"a=fingerprint:"))
        || flags
            .iter()
            .any(|f| contains_ignore_case(f.as_bytes(), b"UDP/TLS/"))
}

/// Whether a move's SDP for a party offers it a new DTLS association (`a=setup:actpass`):
/// the party's answer then sets the relay's role, so it goes to the relay even when its
/// media did not change.
pub fn offers_new_dtls(sdp: &Bytes) -> bool {
    contains_ignore_case(sdp, b"a=setup:actpass")
}

/// Whether an SDP carries an `a=fingerprint` (DTLS-SRTP).
pub fn has_fingerprint(sdp: &Bytes) -> bool {
    contains_ignore_case(sdp, b"a=fingerprint:")
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether an answer changed what the relay must know (addresses, ports, codecs, crypto),
/// ignoring `o=` version noise (real clients bump it on every SDP).
pub fn media_changed(stored: Option<&Bytes>, answer: &Bytes) -> bool {
    let Some(stored) = stored else {
        return true;
    };
    match (
        Session::parse(stored.clone()),
        Session::parse(answer.clone()),
    ) {
        (Ok(old), Ok(new)) => !anchorage_sdp::offer_answer::compare_media(&old, &new).is_empty(),
        _ => stored != answer,
    }
}

/// Whether an answer changed what the *other* party must know: formats, codecs, crypto,
/// direction or media sections (an address or port change stays between the party and the
/// relay). Then the other party needs a follow-up offer.
pub fn other_party_must_know(stored: Option<&Bytes>, answer: &Bytes) -> bool {
    other_party_must_know_of(stored, answer, true)
}

/// [`other_party_must_know`] for a party whose encryption the relay terminates (it answered
/// a move's new DTLS offer from the relay): its profile, keys and DTLS setup stay between it
/// and the relay, only its formats, codecs, direction and media sections reach the other.
pub fn other_party_must_know_when_terminated(stored: Option<&Bytes>, answer: &Bytes) -> bool {
    other_party_must_know_of(stored, answer, false)
}

fn other_party_must_know_of(stored: Option<&Bytes>, answer: &Bytes, keying: bool) -> bool {
    use anchorage_sdp::offer_answer::{compare_media, MediaAspect};
    let Some(stored) = stored else {
        return false;
    };
    let (Ok(old), Ok(new)) = (
        Session::parse(stored.clone()),
        Session::parse(answer.clone()),
    ) else {
        return false;
    };
    compare_media(&old, &new).iter().any(|c| {
        matches!(
            c.aspect,
            MediaAspect::Added
                | MediaAspect::Removed
                | MediaAspect::Kind
                | MediaAspect::Formats
                | MediaAspect::Codecs
                | MediaAspect::Direction
        ) || (keying
            && matches!(
                c.aspect,
                MediaAspect::Proto | MediaAspect::Crypto | MediaAspect::Dtls
            ))
    })
}

/// Whether a party must get a follow-up offer of `new` (the relay's SDP for it, made from the
/// other party's answer to a move) when it was last sent `sent`: only if its media differ
/// (`o=` aside). A relay that converts between the legs (RTP towards one, SRTP towards the
/// other) often gives the party exactly what the move's re-INVITE gave it, though the other
/// party's answer changed its profile and keys.
pub fn follow_up_needed(sent: Option<&Bytes>, new: &Bytes) -> bool {
    media_changed(sent, new)
}

/// RFC 3261 §14.1: after a 491, the owner of the Call-ID (towards the callee we act for the
/// caller, who chose it) waits 2.1–4 s, the other 0–2 s, in 10 ms steps. `random` is any
/// number (the caller's RNG).
pub fn glare_backoff(towards: Party, random: u32) -> Duration {
    let steps = u64::from(random % 200);
    match towards {
        Party::Callee => Duration::from_millis(2100 + steps * 10).min(Duration::from_secs(4)),
        Party::Caller => Duration::from_millis(steps * 10),
    }
}

/// What started a re-anchoring job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// A relay node failed its health checks.
    NodeDown,
    /// `POST /v1/reanchor` or `/v1/calls/{id}/reanchor`.
    Api,
    /// `POST /v1/relays/{node}/drain`.
    Drain,
    /// `POST /v1/rebalance`.
    Rebalance,
    /// A relay node became available to calls that were waiting for one.
    RelayAvailable,
    /// A move whose re-INVITEs a node that died (or restarted) had sent, or was about to:
    /// finished by the node that took its calls over.
    Takeover,
}

impl Trigger {
    /// The label used in the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::NodeDown => "node_down",
            Trigger::Api => "api",
            Trigger::Drain => "drain",
            Trigger::Rebalance => "rebalance",
            Trigger::RelayAvailable => "relay_available",
            Trigger::Takeover => "takeover",
        }
    }
}

/// Where a job moves calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoveTarget {
    /// A relay set (default: each call's own set).
    pub set: Option<String>,
    /// A node (default: the least loaded healthy node of the set, other than the current).
    pub node: Option<String>,
    /// Only nodes of this engine: the new node is one (an engine change when the call is on
    /// another), and a job over a node's or a set's calls takes only calls on nodes of it —
    /// OpenSIPS' `engine` of `rtp_relay_update_callid` and `rtp_relay_update`.
    pub engine: Option<crate::media::EngineKind>,
    /// New options for the SDP the caller is given (one call's move only).
    pub caller: LegOptions,
    /// New options for the SDP the callee is given (one call's move only).
    pub callee: LegOptions,
}

/// Per-leg media options of a move (the `$rtp_relay` keys of OpenSIPS): they are added to the
/// call's policy flags for that leg and kept for the rest of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegOptions {
    /// More ng flags, in `rtpp-flags` syntax.
    pub flags: Option<String>,
    /// Media profile for this leg: `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`,
    /// `UDP/TLS/RTP/SAVP` or `UDP/TLS/RTP/SAVPF` (the relay converts, e.g. RTP to SRTP).
    pub transport: Option<String>,
    /// Address the relay advertises to this leg (ng `media-address`).
    pub ip: Option<std::net::IpAddr>,
    /// The relay interface that faces this leg (ng `direction`, by interface name).
    pub iface: Option<String>,
}

/// The ng `direction` pair for a new session whose legs ask for interfaces (`caller`,
/// `callee`): the sender's (the caller's) interface first; a leg that names none gets the
/// relay's unnamed interface, `default` (the name rtpengine and our relay give it).
pub fn direction_flags(caller: &LegOptions, callee: &LegOptions) -> Option<String> {
    if caller.iface.is_none() && callee.iface.is_none() {
        return None;
    }
    let name = |o: &LegOptions| o.iface.clone().unwrap_or_else(|| "default".into());
    Some(format!(
        "direction={} direction={}",
        name(caller),
        name(callee)
    ))
}

/// The media profiles a leg may be given.
pub const TRANSPORTS: [&str; 6] = [
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
];

impl LegOptions {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.flags.is_none()
            && self.transport.is_none()
            && self.ip.is_none()
            && self.iface.is_none()
    }

    /// `base` (the policy's flags) with these options added, in `rtpp-flags` syntax.
    pub fn applied_to(&self, base: &str) -> String {
        let mut words: Vec<String> = base.split_whitespace().map(str::to_string).collect();
        if let Some(flags) = &self.flags {
            words.extend(flags.split_whitespace().map(str::to_string));
        }
        if let Some(transport) = &self.transport {
            words.retain(|w| !TRANSPORTS.contains(&w.as_str()));
            words.push(transport.clone());
        }
        if let Some(ip) = self.ip {
            words.retain(|w| !w.starts_with("media-address="));
            words.push(format!("media-address={ip}"));
        }
        words.join(" ")
    }
}

/// A re-anchoring job's id: numbered from 1 on each node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a management command (re-anchoring, drain, rebalance) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No relay node has this name.
    #[error("no relay node named {0:?}")]
    UnknownNode(String),
    /// No relay set has this name.
    #[error("no relay set named {0:?}")]
    UnknownSet(String),
    /// A node named in the command is not of the command's engine.
    #[error("relay node {node:?} is an {actual} node, not {asked}")]
    WrongEngine {
        /// The node as the command named it.
        node: String,
        /// Its engine.
        actual: crate::media::EngineKind,
        /// The command's engine.
        asked: crate::media::EngineKind,
    },
    /// No call with this Call-ID is anchored on this node.
    #[error("no anchored call with Call-ID {0:?}")]
    UnknownCall(String),
}

/// A re-anchoring job as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// Job id.
    pub id: JobId,
    /// What started it.
    pub trigger: Trigger,
    /// Calls to move.
    pub total: usize,
    /// Calls moved.
    pub done: usize,
    /// Calls that could not be moved.
    pub failed: usize,
    /// Calls left waiting for a relay: their node is dead and no node could take them; they
    /// move, in a job of their own, as soon as one can.
    pub waiting: usize,
    /// Calls being moved now.
    pub in_flight: usize,
    /// When it started.
    pub started: Instant,
    /// When the last call finished.
    pub finished: Option<Instant>,
}

/// The result of one call's move, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveResult {
    /// Both legs moved.
    Moved,
    /// The old relay was kept (a leg refused the move).
    RolledBack,
    /// A party was gone: the call was ended.
    CallEnded,
    /// No relay could take the call (its old relay still carries it).
    NoRelay,
    /// Its relay is dead and no node could take it: it waits for one.
    Waiting,
    /// Another node took the call over mid-move (this node acts no more for it).
    Released,
}

impl MoveResult {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveResult::Moved => "moved",
            MoveResult::RolledBack => "rolled_back",
            MoveResult::CallEnded => "call_ended",
            MoveResult::NoRelay => "no_relay",
            MoveResult::Waiting => "waiting",
            MoveResult::Released => "released",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::{DialogId, DialogState, Leg, Renumber};

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    fn dialog(record_route: &[&str]) -> Dialog {
        let leg = |tag: &str, target: &str, source: &str| Leg {
            tag: tag.into(),
            remote_target: Some(target.into()),
            source: Some(source.parse().unwrap()),
            transport: Some(Transport::Udp),
            local: None,
            last_cseq: Some(1),
        };
        Dialog {
            id: DialogId {
                call_id: "c1".into(),
                caller_tag: "a".into(),
                callee_tag: "b".into(),
            },
            state: DialogState::Confirmed,
            caller: leg("a", "sip:alice@192.0.2.1:5070", "192.0.2.1:5070"),
            callee: leg("b", "sip:bob@198.51.100.2:5080", "198.51.100.2:5080"),
            record_route: record_route.iter().map(|s| s.to_string()).collect(),
            created: epoch(),
            caller_identity: "<sip:alice@example.com>;tag=a".into(),
            callee_identity: "<sip:bob@example.com>;tag=b".into(),
            renumber: Renumber::default(),
        }
    }

    #[test]
    fn routes_towards_each_party_start_after_our_own_entry() {
        let d = dialog(&[
            "<sip:10.0.0.9:5060;lr>",
            "<sip:127.0.0.1:5060;lr>",
            "<sip:10.0.0.1:5062;lr>",
        ]);
        let us = |r: &str| r.contains("127.0.0.1:5060");
        let callee = leg_target(&d, Party::Callee, us).unwrap();
        assert_eq!(callee.routes, vec!["<sip:10.0.0.9:5060;lr>"]);
        assert_eq!(callee.destination, "10.0.0.9:5060".parse().unwrap());
        assert_eq!(callee.request_uri, "sip:bob@198.51.100.2:5080");
        let caller = leg_target(&d, Party::Caller, us).unwrap();
        assert_eq!(caller.routes, vec!["<sip:10.0.0.1:5062;lr>"]);
        assert_eq!(caller.destination, "10.0.0.1:5062".parse().unwrap());
        // Only us on the path: straight to where each party is.
        let d = dialog(&["<sip:127.0.0.1:5060;lr>"]);
        let callee = leg_target(&d, Party::Callee, us).unwrap();
        assert!(callee.routes.is_empty());
        assert_eq!(callee.destination, "198.51.100.2:5080".parse().unwrap());
    }

    #[test]
    fn our_requests_go_to_a_refreshed_contact_unless_it_is_a_private_address_behind_nat() {
        let us = |r: &str| r.contains("127.0.0.1:5060");
        let mut d = dialog(&["<sip:127.0.0.1:5060;lr>"]);
        // The callee gave a new Contact in a re-INVITE (RFC 3261 §12.2) and still sends from
        // its old address: requests of ours go to the new one.
        d.callee.remote_target = Some("sip:bob@198.51.100.2:6000;transport=udp".into());
        let callee = leg_target(&d, Party::Callee, us).unwrap();
        assert_eq!(callee.destination, "198.51.100.2:6000".parse().unwrap());
        assert_eq!(
            callee.request_uri,
            "sip:bob@198.51.100.2:6000;transport=udp"
        );
        // A private Contact other than where the party's packets come from: behind NAT, so
        // the address they come from.
        d.caller.remote_target = Some("sip:alice@10.0.0.1:5060".into());
        let caller = leg_target(&d, Party::Caller, us).unwrap();
        assert_eq!(caller.destination, "192.0.2.1:5070".parse().unwrap());
        assert_eq!(caller.request_uri, "sip:alice@10.0.0.1:5060");
        // A name (not resolved here) or a party on TCP: where it is.
        d.callee.remote_target = Some("sip:bob@phone.example.com".into());
        let callee = leg_target(&d, Party::Callee, us).unwrap();
        assert_eq!(callee.destination, "198.51.100.2:5080".parse().unwrap());
        d.callee.remote_target = Some("sip:bob@198.51.100.2:6000".into());
        d.callee.transport = Some(Transport::Tcp);
        let callee = leg_target(&d, Party::Callee, us).unwrap();
        assert_eq!(
            (callee.destination, callee.transport),
            ("198.51.100.2:5080".parse().unwrap(), Transport::Tcp)
        );
    }

    #[test]
    fn the_leg_keeps_its_origin_one_version_up() {
        let relay = Bytes::from_static(
            b"v=0\r\no=- 99 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n",
        );
        let out = sdp_for_leg(&relay, Some(&("bob".into(), "555".into(), 41))).unwrap();
        assert!(out.starts_with(b"v=0\r\no=bob 555 42 IN IP4 203.0.113.1\r\n"));
    }

    #[test]
    fn leg_options_add_to_the_policy_flags() {
        let o = LegOptions {
            flags: Some("strict-source".into()),
            transport: Some("RTP/SAVP".into()),
            ip: Some("203.0.113.9".parse().unwrap()),
            iface: None,
        };
        assert_eq!(
            o.applied_to("replace-origin RTP/AVP"),
            "replace-origin strict-source RTP/SAVP media-address=203.0.113.9"
        );
        assert_eq!(LegOptions::default().applied_to("a  b"), "a b");
        let callee = LegOptions {
            iface: Some("pub".into()),
            ..LegOptions::default()
        };
        assert_eq!(
            direction_flags(&LegOptions::default(), &callee).as_deref(),
            Some("direction=default direction=pub")
        );
        assert_eq!(
            direction_flags(&LegOptions::default(), &LegOptions::default()),
            None
        );
    }

    #[test]
    fn only_codec_like_changes_need_a_follow_up_offer() {
        let stored = Bytes::from_static(
            b"v=0\r\no=b 1 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 8\r\n",
        );
        let moved = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8\r\n",
        );
        let fewer = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\n",
        );
        assert!(!other_party_must_know(Some(&stored), &moved));
        assert!(other_party_must_know(Some(&stored), &fewer));
        assert!(!other_party_must_know(None, &fewer));
    }

    #[test]
    fn a_stale_srtp_answer_takes_the_profile_of_the_plain_offer_for_a_non_converting_engine() {
        let offer = Bytes::from_static(
            b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let srtp = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF\r\n",
        );
        let fixed = answer_in_offer_profile(&srtp, &offer);
        assert_eq!(
            std::str::from_utf8(&fixed).unwrap(),
            "v=0\r\no=b 1 2 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        );
        // Same profile: untouched, byte for byte; an SRTP offer keeps an SRTP answer's keys.
        let plain = answer_in_offer_profile(&fixed, &offer);
        assert_eq!(plain, fixed);
        assert_eq!(answer_in_offer_profile(&srtp, &srtp), srtp);
        // Unreadable: as it is.
        let junk = Bytes::from_static(b"not sdp");
        assert_eq!(answer_in_offer_profile(&junk, &offer), junk);
    }

    #[test]
    fn a_follow_up_offer_goes_only_when_the_partys_own_media_would_change() {
        let sent = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\n",
        );
        // The same media, another `o=` version: the converting relay's rewrite of an SRTP
        // answer for a plain party.
        let same = Bytes::from_static(
            b"v=0\r\no=b 1 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\n",
        );
        let savp = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 RTP/SAVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXF\r\n",
        );
        let fewer = Bytes::from_static(
            b"v=0\r\no=b 1 2 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
        );
        assert!(!follow_up_needed(Some(&sent), &same));
        assert!(follow_up_needed(Some(&savp), &same), "the profile changes");
        assert!(follow_up_needed(Some(&sent), &fewer), "the codecs change");
        assert!(follow_up_needed(None, &same));
    }

    #[test]
    fn glare_backoff_follows_rfc_3261_14_1() {
        for r in [0, 1, 199, 200, 12345] {
            let callee = glare_backoff(Party::Callee, r);
            assert!(callee >= Duration::from_millis(2100) && callee <= Duration::from_secs(4));
            assert!(glare_backoff(Party::Caller, r) < Duration::from_secs(2));
        }
    }

    #[test]
    fn an_in_dialog_invite_impersonates_the_other_party() {
        let d = dialog(&["<sip:127.0.0.1:5060;lr>"]);
        let target = leg_target(&d, Party::Callee, |r| r.contains("127.0.0.1:5060")).unwrap();
        let sdp = Bytes::from_static(b"v=0\r\n");
        let m = build_request(&OwnRequest {
            method: Method::Invite,
            call_id: "c1",
            from: &d.caller_identity,
            to: &d.callee_identity,
            contact: d.caller.remote_target.as_deref(),
            cseq: 2,
            via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKra1",
            target: &target,
            sdp: Some(&sdp),
        })
        .unwrap();
        let text = String::from_utf8(m.bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("INVITE sip:bob@198.51.100.2:5080 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("From: <sip:alice@example.com>;tag=a\r\n"));
        assert!(text.contains("To: <sip:bob@example.com>;tag=b\r\n"));
        assert!(text.contains("CSeq: 2 INVITE\r\n"));
        assert!(text.contains("Contact: <sip:alice@192.0.2.1:5070>\r\n"));
        assert!(!text.contains("Route:"));
    }
}
