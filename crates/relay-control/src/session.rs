//! The relay's call model: a [`Call`] (one SIP Call-ID) holds [`Dialog`]s, each the media
//! between two parties — side A, the party that made the first offer, and side B — over one
//! set of relay ports; a dialog holds one [`Stream`] per `m=` line.
//!
//! Parallel forks that the proxy tells apart with `via-branch` get a dialog each (their own
//! ports); without `via-branch`, an answer from another to-tag takes over side B of the dialog
//! (the last answer wins, as the media of a forked call can only go one way).

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_relay::{Liveness, MediaPair, PortPair, SdpPeer, Side, SrtpKeys, StreamFlags};

use crate::dtls::DtlsParty;
use crate::sdes::{SdesParty, Transport};
use crate::sdp_out::OriginState;

/// The relay's handle on a dialog's media, unique for the relay's lifetime; the I/O layer
/// uses it to find the dialog's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// Index of a side in the `[_; 2]` arrays.
pub(crate) fn at(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// One `m=` line relayed between the two sides.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Interface index per side (the ports advertised to that side live on it).
    pub iface: [usize; 2],
    /// Ports per side: `ports[A]` is advertised to A (in the answer to A's offer).
    pub ports: [PortPair; 2],
    /// Where each side receives, from its SDP.
    pub peer: [Option<SdpPeer>; 2],
    /// Whether the relay treats each side's RTP port as carrying RTCP too.
    pub mux: [bool; 2],
    /// Whether the relay holds an RTCP socket for each side. Both are bound with the pair;
    /// a side's closes once its rtcp-mux is settled (its answer accepted the relay's offer of
    /// rtcp-mux, or the relay answered its offer with rtcp-mux) and opens again when it is in
    /// question (a re-offer without rtcp-mux, an offer the relay sends it, an answer that
    /// refuses it). The port pair stays reserved all the while.
    pub rtcp_open: [bool; 2],
    /// The last offer asked for rtcp-mux.
    pub offered_mux: bool,
    /// The last offer's `rtcp-mux` options (`demux`, `accept`) accept the offerer's rtcp-mux
    /// whatever the answer says: rtpengine decides this at the offer, and a proxy passes
    /// the option with the offer only.
    pub mux_accepted: bool,
    /// How the relay carries the stream towards each side: plain RTP, SDES-SRTP it
    /// encrypts, or untouched.
    pub transport: [Transport; 2],
    /// The transport the relay's last offer gave each side: what that side's answer is
    /// checked against. It can differ from `transport` once the side answered plain RTP to
    /// SRTP, and a later answer of the same side (a proxy that replayed the side's previous
    /// SDP while it re-INVITEs it, then sends its real answer) may still take the SRTP offered.
    pub offered: [Transport; 2],
    /// The relay's last SDP to each side was a move's new offer to the party that had
    /// offered (an `answer` with `reanchor`, DTLS towards that party): its answer comes as an
    /// ng `answer` with the tags the other way round, and leaves the other side's rtcp-mux as
    /// it is (the last offer's rtcp-mux was not that side's).
    pub reoffered: [bool; 2],
    /// The SDES keys per side (used when that side's transport is SDES).
    pub sdes: [SdesParty; 2],
    /// The DTLS roles and fingerprints per side (used when that side's transport is DTLS).
    pub dtls: [DtlsParty; 2],
}

impl Stream {
    /// The SRTP keys the data plane uses for `side`: `None` unless the relay encrypts it.
    pub fn srtp_keys(&self, side: Side) -> Option<SrtpKeys> {
        self.transport[at(side)]
            .is_sdes()
            .then(|| self.sdes[at(side)].keys())
    }

    /// The relay's sockets for `side` on this stream: RTP, and RTCP unless it was closed
    /// under rtcp-mux.
    pub fn sockets(&self, side: Side) -> usize {
        1 + usize::from(self.rtcp_open[at(side)])
    }

    /// `base` with the SRTP keys (SDES) or the DTLS role and fingerprint of `side` on this
    /// stream.
    pub fn leg_flags(&self, side: Side, base: StreamFlags) -> StreamFlags {
        StreamFlags {
            srtp: self.srtp_keys(side),
            dtls: self.transport[at(side)]
                .is_dtls()
                .then(|| self.dtls[at(side)].params()),
            ..base
        }
    }
}

/// The media between two parties of a call.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Media handle.
    pub key: SessionKey,
    /// Tags per side (B's is unknown until the answer, or a re-offer names it).
    pub tags: [Option<String>; 2],
    /// `via-branch` of the offer that created it.
    pub branch: Option<String>,
    /// `label` per side.
    pub labels: [Option<String>; 2],
    /// One per `m=` line.
    pub streams: Vec<Stream>,
    /// The side whose offer is the latest.
    pub offerer: Side,
    /// Offer/answer times for the timeouts.
    pub liveness: Liveness,
    /// `o=` state of what was sent to each side.
    pub origin: [OriginState; 2],
    /// Learning options per side, from the command that carried that side's SDP (as in
    /// rtpengine, an offer's `strict source` is the offerer's and survives the answer).
    pub flags: [StreamFlags; 2],
    /// ICE credentials the relay gave each side (`ICE=force`).
    pub ice: [Option<anchorage_relay::stun::IceCredentials>; 2],
    /// Creation time, UNIX µs.
    pub created_us: i64,
    /// The media state last read from the data plane (counters, learned addresses).
    pub snapshot: Vec<MediaPair>,
    /// The last packet the data plane saw on any stream.
    pub last_packet: Option<Instant>,
}

impl Dialog {
    /// The tag of `side`.
    pub fn tag(&self, side: Side) -> Option<&str> {
        self.tags[at(side)].as_deref()
    }

    /// The side tagged `tag`.
    pub fn side_of(&self, tag: &str) -> Option<Side> {
        [Side::A, Side::B]
            .into_iter()
            .find(|&s| self.tag(s) == Some(tag))
    }

    /// Every port pair with its interface.
    pub fn port_pairs(&self) -> impl Iterator<Item = (usize, PortPair)> + '_ {
        self.streams
            .iter()
            .flat_map(|s| [(s.iface[0], s.ports[0]), (s.iface[1], s.ports[1])])
    }
}

/// One Call-ID.
#[derive(Debug, Clone)]
pub struct Call {
    /// Creation time, UNIX µs.
    pub created_us: i64,
    /// Time of the last offer or answer, UNIX s.
    pub last_signal: i64,
    /// The dialogs.
    pub dialogs: Vec<Dialog>,
    /// A `delete` with `delete delay` scheduled the end of the call.
    pub delete_at: Option<Instant>,
}

/// Where an `offer` goes in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferTarget {
    /// A re-offer in dialog `index` from `side`.
    Existing {
        /// Dialog index.
        index: usize,
        /// The offering side.
        side: Side,
    },
    /// A new dialog.
    New,
}

impl Call {
    /// Where an offer from `from` (to `to`, on `branch`) belongs: the dialog both tags name
    /// (either direction: a callee's re-INVITE offers from B), else the dialog this party
    /// offered on this branch (a retransmitted or repeated initial offer), else a new one.
    pub fn offer_target(&self, from: &str, to: Option<&str>, branch: Option<&str>) -> OfferTarget {
        if let Some(to) = to {
            for (index, d) in self.dialogs.iter().enumerate() {
                if let Some(side) = d.side_of(from) {
                    if d.tag(side.other()) == Some(to) {
                        return OfferTarget::Existing { index, side };
                    }
                }
            }
        }
        for (index, d) in self.dialogs.iter().enumerate() {
            let to_fits = match (to, d.tag(Side::B)) {
                (Some(to), Some(b)) => to == b,
                _ => true,
            };
            if d.tag(Side::A) == Some(from) && d.branch.as_deref() == branch && to_fits {
                return OfferTarget::Existing {
                    index,
                    side: Side::A,
                };
            }
        }
        OfferTarget::New
    }

    /// The dialog and answering side of an `answer` from `to` to the offer of `from`.
    pub fn answer_target(
        &self,
        from: &str,
        to: &str,
        branch: Option<&str>,
    ) -> Option<(usize, Side)> {
        for (index, d) in self.dialogs.iter().enumerate() {
            if let Some(side) = d.side_of(from) {
                if d.tag(side.other()) == Some(to) {
                    return Some((index, side.other()));
                }
            }
        }
        let offered_here = |d: &Dialog| {
            d.tag(Side::A) == Some(from) && (branch.is_none() || d.branch.as_deref() == branch)
        };
        // An unanswered dialog first, then (a fork answering after another) any.
        self.dialogs
            .iter()
            .position(|d| offered_here(d) && d.tag(Side::B).is_none())
            .or_else(|| self.dialogs.iter().position(offered_here))
            .map(|index| (index, Side::B))
    }
}

/// The local address of a port on an interface address.
pub(crate) fn local(ip: std::net::IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}
