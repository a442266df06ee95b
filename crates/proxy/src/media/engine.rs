//! A node's engine: how the proxy speaks to it. Both engines take the same engine-neutral
//! [`MediaRequest`]s and hand back the same [`MediaReply`]s, with the same client discipline
//! (cookies unique per node and process start, retransmission, timeouts) and health pings on
//! a client of their own:
//!
//! * ng (our relay, rtpengine): one ng request per media request; the relay rewrites the SDP;
//! * RTPProxy (`rtpproxy.rs`): one `U`/`L`/`D` command per stream; the proxy rewrites the SDP.

use std::time::Instant;

use anchorage_ng::{Client, ClientConfig, Outcome, Request, RequestKind};
use bytes::Bytes;

use super::rtpproxy::RtppEngine;
use super::MediaRequest;

/// The kind of a node's engine, as a move or an operator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// rtpengine's ng protocol: our relay or rtpengine.
    Ng,
    /// RTPProxy's control protocol.
    Rtpproxy,
}

/// An engine name that is none of the engines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine {0:?}: \"ng\" (also \"rtpengine\") or \"rtpproxy\"")]
pub struct UnknownEngine(pub String);

impl EngineKind {
    /// `"ng"` or `"rtpproxy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Ng => "ng",
            EngineKind::Rtpproxy => "rtpproxy",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = UnknownEngine;

    /// `ng`, `rtpengine` (OpenSIPS' name of the ng engine) or `rtpproxy`, in any case.
    fn from_str(s: &str) -> Result<EngineKind, UnknownEngine> {
        match s.to_ascii_lowercase().as_str() {
            "ng" | "rtpengine" => Ok(EngineKind::Ng),
            "rtpproxy" => Ok(EngineKind::Rtpproxy),
            _ => Err(UnknownEngine(s.to_string())),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one media request sent to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why a media request got no SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The node answered with an error (its reason).
    Refused(String),
    /// No reply before the deadline.
    TimedOut,
    /// A reply that cannot be read (what is wrong with it).
    Malformed(String),
}

impl MediaError {
    /// Whether the node answered at all (a refusal; a timeout or garbage is no answer).
    pub fn answered(&self) -> bool {
        matches!(self, MediaError::Refused(_))
    }
}

/// The outcome of one media request: the SDP for the other side (none for a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReply {
    /// The request.
    pub id: RequestId,
    /// Its SDP, or why there is none.
    pub result: Result<Option<Bytes>, MediaError>,
}

/// A node's engine. Each node has one for its life; the ng variant's two clients are larger
/// than the boxed RTPProxy engine, which is fine at one per node.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Engine {
    /// rtpengine's ng protocol.
    Ng {
        /// Media requests.
        client: Client,
        /// Health pings: one transmission each.
        pinger: Client,
    },
    /// RTPProxy's control protocol.
    Rtpproxy(Box<RtppEngine>),
}

impl Engine {
    /// An ng engine whose cookies start with `prefix` (`-c<n>` for requests, `-p<n>` for pings).
    pub(super) fn ng(config: ClientConfig, ping: ClientConfig, prefix: &str, n: usize) -> Engine {
        Engine::Ng {
            client: Client::new(config, &format!("{prefix}-c{n}")),
            pinger: Client::new(ping, &format!("{prefix}-p{n}")),
        }
    }

    /// Sends a media request.
    pub(super) fn send(&mut self, request: &MediaRequest, now: Instant) -> RequestId {
        match self {
            Engine::Ng { client, .. } => RequestId(client.send(&request.to_ng(), now).0),
            Engine::Rtpproxy(e) => e.send(request, now),
        }
    }

    /// Sends a health ping; its id comes back from [`Engine::poll_ping`].
    /// A call imported from its record is on this node with `offerer_tag`'s session: an RTPProxy
    /// engine, which deletes only the sessions it knows, takes it on (an ng node deletes by
    /// Call-ID: nothing to do).
    pub(super) fn adopt(&mut self, call_id: &str, offerer_tag: &str) {
        if let Engine::Rtpproxy(e) = self {
            e.adopt(call_id, offerer_tag);
        }
    }

    pub(super) fn send_ping(&mut self, now: Instant) -> u64 {
        match self {
            Engine::Ng { pinger, .. } => pinger.send(&Request::new(RequestKind::Ping), now).0,
            Engine::Rtpproxy(e) => e.send_ping(now),
        }
    }

    /// The next ping outcome: `(ping, answered as a healthy node answers)`.
    pub(super) fn poll_ping(&mut self) -> Option<(u64, bool)> {
        match self {
            Engine::Ng { pinger, .. } => pinger.poll_event().map(|event| match event {
                anchorage_ng::Event::Reply(r, reply) => (r.0, reply.outcome == Outcome::Pong),
                anchorage_ng::Event::TimedOut(r) | anchorage_ng::Event::Failed(r, _) => {
                    (r.0, false)
                }
            }),
            Engine::Rtpproxy(e) => e.poll_ping(),
        }
    }

    /// A datagram from the node.
    pub(super) fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        match self {
            Engine::Ng { client, pinger } => {
                // Cookies tell the two clients' replies apart; each ignores the other's.
                client.handle_datagram(datagram, now);
                pinger.handle_datagram(datagram, now);
            }
            Engine::Rtpproxy(e) => e.handle_datagram(datagram, now),
        }
    }

    /// Retransmissions and timeouts due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Engine::Ng { client, pinger } => {
                client.handle_timeout(now);
                pinger.handle_timeout(now);
            }
            Engine::Rtpproxy(e) => e.handle_timeout(now),
        }
    }

    /// The next retransmission or timeout.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Engine::Ng { client, pinger } => [client.poll_timeout(), pinger.poll_timeout()]
                .into_iter()
                .flatten()
                .min(),
            Engine::Rtpproxy(e) => e.poll_timeout(),
        }
    }

    /// The next datagram to send.
    pub(super) fn poll_transmit(&mut self) -> Option<Bytes> {
        match self {
            Engine::Ng { client, pinger } => {
                client.poll_transmit().or_else(|| pinger.poll_transmit())
            }
            Engine::Rtpproxy(e) => e.poll_transmit(),
        }
    }

    /// The next media reply.
    pub(super) fn poll_event(&mut self) -> Option<MediaReply> {
        match self {
            Engine::Ng { client, .. } => client.poll_event().map(|event| match event {
                anchorage_ng::Event::Reply(id, reply) => MediaReply {
                    id: RequestId(id.0),
                    result: match &reply.outcome {
                        Outcome::Ok => Ok(reply.sdp.clone()),
                        _ => Err(MediaError::Refused(
                            reply
                                .error_reason()
                                .map_or_else(|| "error".to_string(), |r| r.to_string()),
                        )),
                    },
                },
                anchorage_ng::Event::TimedOut(id) => MediaReply {
                    id: RequestId(id.0),
                    result: Err(MediaError::TimedOut),
                },
                anchorage_ng::Event::Failed(id, e) => MediaReply {
                    id: RequestId(id.0),
                    result: Err(MediaError::Malformed(e.to_string())),
                },
            }),
            Engine::Rtpproxy(e) => e.poll_event(),
        }
    }

    /// The node's own count of its sessions, when it reported one since the last call (an
    /// RTPProxy node's `active sessions`; ng nodes report none: their load is the proxy's
    /// count of its calls).
    pub(super) fn poll_load(&mut self) -> Option<u64> {
        match self {
            Engine::Ng { .. } => None,
            Engine::Rtpproxy(e) => e.poll_load(),
        }
    }

    /// Media requests awaiting the node's reply (pings aside).
    pub(super) fn pending(&self) -> usize {
        match self {
            Engine::Ng { client, .. } => client.pending(),
            Engine::Rtpproxy(e) => e.pending(),
        }
    }

    /// Whether the node can take calls as far as its capabilities go (an RTPProxy node that
    /// said it lacks one cannot).
    pub(super) fn capable(&self) -> bool {
        match self {
            Engine::Ng { .. } => true,
            Engine::Rtpproxy(e) => e.capable() != Some(false),
        }
    }

    /// Its kind.
    pub(super) fn kind(&self) -> EngineKind {
        match self {
            Engine::Ng { .. } => EngineKind::Ng,
            Engine::Rtpproxy(_) => EngineKind::Rtpproxy,
        }
    }
}
