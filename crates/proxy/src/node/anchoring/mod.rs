//! Media anchoring (DESIGN.md "Media anchoring"): where a call's media is anchored
//! (`CallMedia`, one [`LegMedia`] per leg), what each ng request in flight was sent for
//! (`MediaWait`, one continuation per request), and deleting a call's relay session.
//!
//! * `offer_answer.rs`: every RFC 3264 offer/answer placement — INVITE/200, 200/ACK (late
//!   offer), reliable 18x with PRACK (RFC 3262), re-INVITE and UPDATE (RFC 3311) from either side;
//! * `forks.rs`: a parallel fork with one relay session per branch (RFC 3261 §16.7);
//! * `relay_replies.rs`: the dispatch of ng replies to their `MediaWait`.

pub(super) mod forks;
pub(super) mod offer_answer;
pub(super) mod relay_replies;
pub(super) mod stateless;

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::Message;
use bytes::Bytes;

use crate::media::{NodeId, Policy};
use crate::routing::Target;
use crate::Transport;

use crate::node::transactions::ServerId;
use crate::node::Proxy;

/// Where a call's media is anchored.
#[derive(Debug, Clone)]
pub(in crate::node) struct CallMedia {
    pub(in crate::node) node: NodeId,
    pub(in crate::node) policy: Policy,
    /// The caller's tag: tells which leg an SDP comes from.
    pub(in crate::node) caller_tag: String,
    pub(in crate::node) caller: LegMedia,
    pub(in crate::node) callee: LegMedia,
    /// A late offer went out in a 2xx: the ACK carries the answer.
    pub(in crate::node) answer_in_ack: bool,
    /// A late offer went out in a reliable provisional response: the PRACK carries the answer
    /// (RFC 3262 §5).
    pub(in crate::node) answer_in_prack: bool,
    /// The branches of a parallel fork, each with its own relay session (`via-branch`), until a
    /// 2xx picks one.
    pub(in crate::node) forks: Vec<ForkBranch>,
}

/// One branch of a forked INVITE with media.
#[derive(Debug, Clone)]
pub(in crate::node) struct ForkBranch {
    /// The `via-branch` given to the relay.
    pub(in crate::node) via_branch: String,
    /// Our client transaction's branch for it.
    pub(in crate::node) client_branch: Option<String>,
    /// The offer SDP this branch's callee got.
    pub(in crate::node) sent: Option<Bytes>,
}

impl Proxy {
    /// The call is anchored on `node` (its first relay session there): counted on the node
    /// and recorded with the caller's tag and, if known, the caller's SDP.
    pub(in crate::node) fn anchor_call(
        &mut self,
        call_id: &str,
        node: NodeId,
        policy: Policy,
        caller_tag: String,
        caller_sdp: Option<bytes::Bytes>,
    ) {
        self.relays.count_call(node, 1);
        self.calls.set_media(
            call_id,
            CallMedia {
                node,
                policy,
                caller_tag,
                caller: LegMedia {
                    received: caller_sdp,
                    ..LegMedia::default()
                },
                callee: LegMedia::default(),
                answer_in_ack: false,
                answer_in_prack: false,
                forks: Vec::new(),
            },
        );
    }
}

impl CallMedia {
    /// (the leg with `tag`, the other leg).
    pub(in crate::node) fn legs_from(&mut self, tag: &str) -> (&mut LegMedia, &mut LegMedia) {
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
    pub(in crate::node) fn record_sent(&mut self, sdp: &Bytes) {
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
pub(in crate::node) fn tag_of(
    header: Result<anchorage_sip::NameAddr<'_>, anchorage_sip::ParseError>,
) -> String {
    header.ok().and_then(|h| h.tag()).unwrap_or("").to_string()
}

/// What an ng request was sent for.
pub(in crate::node) enum MediaWait {
    /// An offer for the request of a server transaction; `tried` nodes failed already.
    Offer {
        key: ServerId,
        policy: Policy,
        tried: Vec<NodeId>,
        initial: bool,
    },
    /// An answer for a response to the request of a server transaction.
    Answer {
        key: ServerId,
        status: u16,
        response: Box<Message>,
    },
    /// A late offer: the offer in a response to a request without SDP (RFC 3264 §5); the
    /// answer will come in the ACK.
    ResponseOffer {
        key: ServerId,
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
    /// The answer in a response to an INVITE another node forwarded (no transaction here).
    StatelessAnswer { response: Box<Message> },
    /// A delete (or a relay update); nothing waits for it.
    Delete,
    /// The new node's offer for a call being re-anchored.
    ReanchorOffer { call_id: String },
    /// The new node's answer for a call being re-anchored.
    ReanchorAnswer { call_id: String },
    /// The offer for one target of a parallel fork (its own relay session).
    ForkOffer {
        key: ServerId,
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

/// Whether a message carries an SDP body.
pub(in crate::node) fn carries_sdp(m: &Message) -> bool {
    !m.body().is_empty()
        && m.content_type()
            .is_some_and(|t| t.len() >= 15 && t[..15].eq_ignore_ascii_case(b"application/sdp"))
}

impl Proxy {
    /// Sends a media request whose reply nobody waits for.
    pub(in crate::node) fn send_media_quietly(
        &mut self,
        node: NodeId,
        request: &crate::media::MediaRequest,
        now: Instant,
    ) {
        if let Some(id) = self.relays.send(node, request, now) {
            self.media_waits.insert((node, id), MediaWait::Delete);
        }
    }

    /// Deletes a call's relay session (BYE, failed INVITE); nothing waits for the reply.
    pub(in crate::node) fn delete_media(&mut self, call_id: &str, now: Instant) {
        let Some(call) = self.calls.take_media(call_id) else {
            tracing::debug!(%call_id, "no relay session to delete");
            return;
        };
        tracing::debug!(%call_id, node = call.node, "deleting the relay session");
        self.relays.count_call(call.node, -1);
        self.calls.set_wait(call_id, None);
        self.delete_or_orphan(call.node, call_id, now);
    }
}
