//! One media stream (one `m=` line) relayed between two legs, and the per-packet forwarding
//! decision [`MediaPair::on_packet`].
//!
//! ```text
//!   leg A (caller)            relay                        leg B (callee)
//!   A's address  ──RTP──►  a.local_rtp ─┐      ┌─ b.local_rtp  ──RTP──►  B's destination
//!   A's address  ──RTCP─►  a.local_rtcp ┴──────┴ b.local_rtcp ──RTCP─►  B's RTCP destination
//! ```
//!
//! A packet that arrives on a port advertised to leg A came from A; it goes to leg B, sent
//! **from the port advertised to B** (symmetric RTP: B sees the relay's packets come from the
//! address it sends to), towards B's learned address or, before learning, B's SDP address.
//! RTCP goes RTCP to RTCP: from B's RTCP port to B's RTCP address, or over B's RTP port and
//! address when B uses rtcp-mux. On an RTP port, RTCP is told from RTP by RFC 5761 §4.
//!
//! The type holds plain values (addresses from the SDP, a flags struct) so that a later
//! `Session` (call-id, legs by tag, several media per leg) owns a `MediaPair` per `m=` line.

use std::net::SocketAddr;
use std::time::Instant;

use crate::dtls::{DtlsEvent, DtlsStats};
use crate::latch::{Latch, LearningFlags, Refusal};
use crate::packet;
use crate::srtp::{SrtpError, SrtpKeys, SrtpSession, SrtpStats};
use crate::stats::{StreamStats, DEFAULT_CLOCK_RATE};

/// One of the two legs of a media pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The offerer (ng `from-tag`).
    A,
    /// The answerer (ng `to-tag`).
    B,
}

impl Side {
    /// The other leg.
    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Which of a leg's local sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The even RTP port (also carries RTCP under rtcp-mux).
    Rtp,
    /// The odd RTCP port.
    Rtcp,
}

/// A local socket of a media pair: the port advertised to `side`, of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalSocket {
    /// The leg this socket is advertised to.
    pub side: Side,
    /// RTP or RTCP port.
    pub kind: SocketKind,
}

/// Where a leg's SDP says it receives media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpPeer {
    /// `c=` address and `m=` port.
    pub rtp: SocketAddr,
    /// `a=rtcp:` address and port, or the RTP port + 1 (RFC 3550 §11).
    pub rtcp: SocketAddr,
}

impl SdpPeer {
    /// A peer at `rtp` with RTCP on the next port (no `a=rtcp:` line).
    pub fn new(rtp: SocketAddr) -> Self {
        let mut rtcp = rtp;
        rtcp.set_port(rtp.port().wrapping_add(1));
        Self { rtp, rtcp }
    }

    /// A peer with an explicit `a=rtcp:` address.
    pub fn with_rtcp(rtp: SocketAddr, rtcp: SocketAddr) -> Self {
        Self { rtp, rtcp }
    }
}

/// Per-leg options that the ng flags set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamFlags {
    /// Endpoint learning, strict source, media handover, asymmetric.
    pub learning: LearningFlags,
    /// `port latching`: keep the relay's local ports when a re-offer changes the peer's port.
    pub port_latching: bool,
    /// ICE credentials the relay gave this leg (`ICE=force`): its STUN checks on the leg's
    /// ports are answered ([`crate::stun`]).
    pub ice: Option<crate::stun::IceCredentials>,
    /// The leg is SRTP, keyed with SDES: the relay decrypts what it receives from the leg and
    /// encrypts what it sends to it ([`MediaPair::relay`]). `None`: plain RTP, or SRTP that
    /// passes through untouched.
    pub srtp: Option<SrtpKeys>,
    /// The leg is DTLS-SRTP, terminated by the relay: the data plane runs the handshake
    /// ([`crate::dtls`]) and gives the pair its keys ([`MediaPair::set_dtls_keys`]); until then
    /// the leg's media is dropped, never relayed in clear.
    pub dtls: Option<crate::dtls::DtlsParams>,
}

/// What the relay knows about one leg of a media pair when it is created or re-signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegConfig {
    /// Local (bind) address of the RTP port advertised to this leg.
    pub local_rtp: SocketAddr,
    /// Local address of the RTCP port advertised to this leg; `None` only with rtcp-mux.
    pub local_rtcp: Option<SocketAddr>,
    /// The leg's SDP addresses, once its SDP is known (the answerer's arrives with the answer).
    pub remote: Option<SdpPeer>,
    /// The leg multiplexes RTCP on its RTP port (RFC 5761).
    pub rtcp_mux: bool,
    /// Learning and port options.
    pub flags: StreamFlags,
}

/// A leg configuration that cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegConfigError {
    /// Without rtcp-mux a leg needs an RTCP port.
    #[error("leg {0:?} has no local RTCP port and does not use rtcp-mux")]
    MissingRtcpPort(Side),
    /// The two legs may not share a local socket.
    #[error("legs A and B use the same local address {0}")]
    SharedLocalSocket(SocketAddr),
}

/// Why a packet is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `strict source`: the source is not the leg's confirmed endpoint.
    StrictSource,
    /// `strict source` while learning heuristically: a better-ranked source was seen.
    StrictSourceLearning,
    /// The other leg has no address yet (no SDP, nothing learned).
    NoDestination,
    /// The packet's local socket is not part of this pair.
    UnknownSocket,
    /// SRTP: the packet from an encrypted leg did not decrypt, or the packet for an encrypted
    /// leg could not be encrypted (counted in the leg's [`SrtpStats`]).
    Srtp(SrtpError),
}

/// Send the datagram unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The local socket to send from (the port advertised to the destination leg).
    pub via: LocalSocket,
    /// That socket's local address.
    pub from: SocketAddr,
    /// The destination.
    pub to: SocketAddr,
    /// The datagram is RTCP.
    pub rtcp: bool,
}

/// Which bytes to send for a datagram that [`MediaPair::relay`] forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The datagram as it arrived (no SRTP on either leg).
    Unchanged,
    /// The buffer given to [`MediaPair::relay`]: the datagram decrypted, encrypted, or both.
    Rewritten,
}

/// The outcome of [`MediaPair::relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Where the datagram goes, or why it is dropped.
    pub decision: Decision,
    /// Which bytes to send when it is forwarded.
    pub payload: Payload,
    /// The datagram was authenticated and decrypted (its length as received).
    pub decrypted: Option<usize>,
    /// The datagram was encrypted for its destination (the length sent).
    pub encrypted: Option<usize>,
    /// The leg whose SRTP failed on this datagram (decrypting what it sent, or encrypting
    /// towards it), when the datagram was dropped for SRTP.
    pub srtp_failed_on: Option<Side>,
}

impl Relayed {
    fn plain(decision: Decision) -> Relayed {
        Relayed {
            decision,
            payload: Payload::Unchanged,
            decrypted: None,
            encrypted: None,
            srtp_failed_on: None,
        }
    }
}

/// The outcome of [`MediaPair::on_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send the packet.
    Forward(Forward),
    /// Drop it (already counted as an error on the receiving stream).
    Drop(DropReason),
}

/// Counters of one leg: what the relay received from it.
#[derive(Debug, Clone, Default)]
pub struct LegStats {
    /// RTP received from the leg.
    pub rtp: StreamStats,
    /// RTCP received from the leg (on the RTCP port, or demultiplexed from the RTP port).
    pub rtcp: StreamStats,
    /// SRTP: what was decrypted from the leg and encrypted towards it, and the failures.
    pub srtp: SrtpStats,
    /// DTLS: handshakes completed and failed, records dropped.
    pub dtls: DtlsStats,
}

impl LegStats {
    /// Counts a dropped datagram on the RTP or RTCP counters.
    fn record_error(&mut self, rtcp: bool) {
        if rtcp {
            self.rtcp.record_error();
        } else {
            self.rtp.record_error();
        }
    }

    /// The later of the RTP and RTCP last-packet times.
    pub fn last_packet(&self) -> Option<Instant> {
        self.rtp.last_packet().max(self.rtcp.last_packet())
    }
}

#[derive(Debug, Clone)]
struct Leg {
    config: LegConfig,
    rtp: Latch,
    rtcp: Latch,
    stats: LegStats,
    /// Decrypts what the leg sends (its own key).
    srtp_in: Option<SrtpSession>,
    /// Encrypts what the relay sends to the leg (the relay's key for it).
    srtp_out: Option<SrtpSession>,
}

impl Leg {
    fn new(config: LegConfig, now: Instant) -> Self {
        let keys = config.flags.srtp.unwrap_or_default();
        Self {
            rtp: Latch::new(config.remote.map(|r| r.rtp), now),
            rtcp: Latch::new(config.remote.map(|r| r.rtcp), now),
            stats: LegStats {
                rtp: StreamStats::with_clock_rate(DEFAULT_CLOCK_RATE),
                rtcp: StreamStats::default(),
                srtp: SrtpStats::default(),
                dtls: DtlsStats::default(),
            },
            srtp_in: keys.inbound.map(SrtpSession::new),
            srtp_out: keys.outbound.map(SrtpSession::new),
            config,
        }
    }

    /// New keys from signalling: a direction whose key is unchanged keeps its context (its
    /// rollover counter and replay window); a new key starts a new one.
    fn rekey(&mut self, keys: Option<SrtpKeys>) {
        let keys = keys.unwrap_or_default();
        let keep = |session: &mut Option<SrtpSession>, key: Option<crate::srtp::SrtpKey>| {
            if session.as_ref().map(|s| *s.key()) != key {
                *session = key.map(SrtpSession::new);
            }
        };
        keep(&mut self.srtp_in, keys.inbound);
        keep(&mut self.srtp_out, keys.outbound);
    }

    /// Whether the relay encrypts this leg (SDES keys, or DTLS-SRTP with or without keys yet).
    #[inline]
    fn encrypted(&self) -> bool {
        self.config.flags.srtp.is_some() || self.config.flags.dtls.is_some()
    }

    fn local(&self, kind: SocketKind) -> Option<SocketAddr> {
        match kind {
            SocketKind::Rtp => Some(self.config.local_rtp),
            SocketKind::Rtcp => self.config.local_rtcp,
        }
    }
}

/// One media stream relayed between leg A and leg B.
#[derive(Debug, Clone)]
pub struct MediaPair {
    legs: [Leg; 2],
}

impl MediaPair {
    /// A pair from both legs' configurations, signalled at `now` (this starts the learning
    /// window).
    pub fn new(a: LegConfig, b: LegConfig, now: Instant) -> Result<Self, LegConfigError> {
        for (side, leg) in [(Side::A, &a), (Side::B, &b)] {
            if leg.local_rtcp.is_none() && !leg.rtcp_mux {
                return Err(LegConfigError::MissingRtcpPort(side));
            }
        }
        let a_locals = [Some(a.local_rtp), a.local_rtcp];
        for local in [Some(b.local_rtp), b.local_rtcp].into_iter().flatten() {
            if a_locals.contains(&Some(local)) {
                return Err(LegConfigError::SharedLocalSocket(local));
            }
        }
        Ok(Self {
            legs: [Leg::new(a, now), Leg::new(b, now)],
        })
    }

    #[inline]
    fn leg(&self, side: Side) -> &Leg {
        match side {
            Side::A => &self.legs[0],
            Side::B => &self.legs[1],
        }
    }

    #[inline]
    fn leg_mut(&mut self, side: Side) -> &mut Leg {
        match side {
            Side::A => &mut self.legs[0],
            Side::B => &mut self.legs[1],
        }
    }

    /// The configuration of a leg.
    pub fn config(&self, side: Side) -> &LegConfig {
        &self.leg(side).config
    }

    /// The counters of what the relay received from a leg.
    pub fn stats(&self, side: Side) -> &LegStats {
        &self.leg(side).stats
    }

    /// Where the relay currently sends a leg's RTP.
    pub fn rtp_destination(&self, side: Side) -> Option<SocketAddr> {
        let leg = self.leg(side);
        leg.rtp.destination(&leg.config.flags.learning)
    }

    /// Where the relay currently sends a leg's RTCP (its RTP destination under rtcp-mux).
    pub fn rtcp_destination(&self, side: Side) -> Option<SocketAddr> {
        let leg = self.leg(side);
        if leg.config.rtcp_mux {
            leg.rtp.destination(&leg.config.flags.learning)
        } else {
            leg.rtcp.destination(&leg.config.flags.learning)
        }
    }

    /// The SRTP keys of a leg, if the relay encrypts it.
    pub fn srtp(&self, side: Side) -> Option<SrtpKeys> {
        self.leg(side).config.flags.srtp
    }

    /// How a leg is keyed (DTLS if the relay runs DTLS on it, else SDES) and its suite (the
    /// relay's outbound key's, else the party's; `None` before any key): the labels of the
    /// SRTP counters in `/metrics`.
    pub fn srtp_kind(&self, side: Side) -> (crate::Keying, Option<crate::SrtpSuite>) {
        let config = &self.leg(side).config.flags;
        let keying = if config.dtls.is_some() {
            crate::Keying::Dtls
        } else {
            crate::Keying::Sdes
        };
        let suite = config
            .srtp
            .and_then(|keys| keys.outbound.or(keys.inbound))
            .map(|key| key.suite);
        (keying, suite)
    }

    /// Whether a leg's RTP endpoint is confirmed.
    pub fn is_confirmed(&self, side: Side) -> bool {
        self.leg(side).rtp.is_confirmed()
    }

    /// Every local socket of the pair with its address (what the I/O layer binds).
    pub fn local_sockets(&self) -> impl Iterator<Item = (LocalSocket, SocketAddr)> + '_ {
        [Side::A, Side::B].into_iter().flat_map(move |side| {
            [SocketKind::Rtp, SocketKind::Rtcp]
                .into_iter()
                .filter_map(move |kind| {
                    Some((LocalSocket { side, kind }, self.leg(side).local(kind)?))
                })
        })
    }

    /// Which local socket has address `local`, if any.
    pub fn local_socket(&self, local: SocketAddr) -> Option<LocalSocket> {
        self.local_sockets()
            .find(|(_, addr)| *addr == local)
            .map(|(s, _)| s)
    }

    /// The last packet received on either leg.
    pub fn last_packet(&self) -> Option<Instant> {
        self.legs[0]
            .stats
            .last_packet()
            .max(self.legs[1].stats.last_packet())
    }

    /// A signalling event for leg `side` at `now` (its SDP in an offer, answer or re-INVITE):
    /// new SDP addresses, rtcp-mux and flags. Every signalling event restarts the learning
    /// window of both legs, as rtpengine ties it to the call's last signal.
    pub fn update_leg(
        &mut self,
        side: Side,
        remote: Option<SdpPeer>,
        rtcp_mux: bool,
        flags: StreamFlags,
        now: Instant,
    ) -> Result<(), LegConfigError> {
        let leg = self.leg_mut(side);
        if leg.config.local_rtcp.is_none() && !rtcp_mux {
            return Err(LegConfigError::MissingRtcpPort(side));
        }
        let mut flags = flags;
        if flags.dtls.is_some() && flags.srtp.is_none() {
            // DTLS keys come from the handshake, not from signalling: they stay until a new
            // handshake replaces them (the data plane runs it when the fingerprint changes).
            flags.srtp = leg
                .config
                .flags
                .srtp
                .filter(|_| leg.config.flags.dtls.is_some());
        }
        leg.rekey(flags.srtp);
        leg.config.remote = remote;
        leg.config.rtcp_mux = rtcp_mux;
        leg.config.flags = flags;
        for leg in &mut self.legs {
            let remote = leg.config.remote;
            leg.rtp.signalled(remote.map(|r| r.rtp), now);
            leg.rtcp.signalled(remote.map(|r| r.rtcp), now);
        }
        Ok(())
    }

    /// Gives leg `side` an RTCP port at `local_rtcp`, or takes its RTCP port away (`None`):
    /// under rtcp-mux (RFC 5761) the leg's RTCP arrives and leaves on its RTP port, so the
    /// I/O layer may close the RTCP socket; a leg that stops multiplexing needs one again,
    /// given before the [`MediaPair::update_leg`] that ends its rtcp-mux. Refused when it
    /// would leave a leg without rtcp-mux without an RTCP port.
    pub fn set_local_rtcp(
        &mut self,
        side: Side,
        local_rtcp: Option<SocketAddr>,
    ) -> Result<(), LegConfigError> {
        if let Some(local) = local_rtcp {
            let other = self.leg(side.other());
            if [Some(other.config.local_rtp), other.config.local_rtcp].contains(&Some(local)) {
                return Err(LegConfigError::SharedLocalSocket(local));
            }
        }
        let leg = self.leg_mut(side);
        if local_rtcp.is_none() && !leg.config.rtcp_mux {
            return Err(LegConfigError::MissingRtcpPort(side));
        }
        leg.config.local_rtcp = local_rtcp;
        Ok(())
    }

    /// The DTLS role and expected fingerprint of leg `side`, if the relay terminates DTLS there.
    pub fn dtls(&self, side: Side) -> Option<crate::dtls::DtlsParams> {
        self.leg(side).config.flags.dtls
    }

    /// The keys a completed DTLS handshake on leg `side` exported: the leg's SRTP contexts are
    /// rekeyed (a direction whose key is unchanged keeps its context).
    pub fn set_dtls_keys(&mut self, side: Side, keys: SrtpKeys) {
        let leg = self.leg_mut(side);
        leg.rekey(Some(keys));
        leg.config.flags.srtp = Some(keys);
    }

    /// Counts what a DTLS datagram or timer did on leg `side`.
    pub fn record_dtls(&mut self, side: Side, event: &DtlsEvent) {
        self.leg_mut(side).stats.dtls.record(event);
    }

    /// Counts a DTLS datagram dropped on leg `side` (no DTLS there, or from a stranger).
    pub fn record_dtls_dropped(&mut self, side: Side) {
        self.leg_mut(side).stats.dtls.dropped += 1;
    }

    /// The ICE credentials the relay gave leg `side`, if any.
    pub fn ice(&self, side: Side) -> Option<crate::stun::IceCredentials> {
        self.leg(side).config.flags.ice
    }

    /// Whether a re-offer that moves leg `side` to `new_remote` may keep the relay's local
    /// ports: always with `port latching`; otherwise only if the peer's RTP port is unchanged
    /// (rtpengine's default allocates new ports when the remote port changes).
    pub fn keeps_local_ports(&self, side: Side, new_remote: Option<SdpPeer>) -> bool {
        let leg = self.leg(side);
        leg.config.flags.port_latching
            || leg.config.remote.map(|r| r.rtp.port()) == new_remote.map(|r| r.rtp.port())
    }

    /// Counts a send failure for the datagram that `forward` described (on the stream it
    /// came from).
    pub fn record_send_error(&mut self, from: Side, rtcp: bool) {
        self.leg_mut(from).stats.record_error(rtcp);
    }

    /// The whole relay step for one datagram: for a leg the relay encrypts, first authenticate
    /// and decrypt what it sent (a packet that fails is dropped and counted **before** it can
    /// teach the latch anything), then [`MediaPair::on_packet`] decides where it goes, then it
    /// is encrypted for the destination leg if that leg is encrypted. The bytes to send are
    /// the datagram itself ([`Payload::Unchanged`]) or `out` ([`Payload::Rewritten`]).
    pub fn relay(
        &mut self,
        on: LocalSocket,
        source: SocketAddr,
        packet: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Relayed {
        let ingress_srtp = self.leg(on.side).encrypted();
        let egress_srtp = self.leg(on.side.other()).encrypted();
        if !ingress_srtp && !egress_srtp {
            return Relayed::plain(self.on_packet(on, source, packet, now));
        }
        let rtcp = on.kind == SocketKind::Rtcp || packet::is_rtcp(packet);
        // The plain packet of an encrypted ingress leg goes straight into `out`.
        let decrypted = if ingress_srtp {
            let leg = self.leg_mut(on.side);
            let result = match leg.srtp_in.as_mut() {
                Some(session) => session.unprotect_into(packet, rtcp, out),
                None => Err(SrtpError::NoKey),
            };
            match result {
                Ok(()) => {
                    leg.stats.srtp.decrypted_packets += 1;
                    leg.stats.srtp.decrypted_bytes += packet.len() as u64;
                    Some(packet.len())
                }
                Err(error) => {
                    leg.stats.srtp.record_failure(error);
                    leg.stats.record_error(rtcp);
                    return Relayed {
                        srtp_failed_on: Some(on.side),
                        ..Relayed::plain(Decision::Drop(DropReason::Srtp(error)))
                    };
                }
            }
        } else {
            None
        };
        let forward = match self.on_packet(on, source, packet, now) {
            Decision::Forward(forward) => forward,
            drop @ Decision::Drop(_) => {
                return Relayed {
                    decrypted,
                    ..Relayed::plain(drop)
                }
            }
        };
        if !egress_srtp {
            if decrypted.is_none() {
                return Relayed::plain(Decision::Forward(forward));
            }
            return Relayed {
                decision: Decision::Forward(forward),
                payload: Payload::Rewritten,
                decrypted,
                encrypted: None,
                srtp_failed_on: None,
            };
        }
        // Both legs encrypted: the plain packet moves out of `out` so that `out` can take the
        // encrypted one.
        let plain;
        let clear = if decrypted.is_some() {
            plain = std::mem::take(out);
            &plain[..]
        } else {
            packet
        };
        let egress = self.leg_mut(forward.via.side);
        let result = match egress.srtp_out.as_mut() {
            Some(session) => session.protect_into(clear, forward.rtcp, out),
            None => Err(SrtpError::NoKey),
        };
        match result {
            Ok(()) => {
                egress.stats.srtp.encrypted_packets += 1;
                egress.stats.srtp.encrypted_bytes += out.len() as u64;
                Relayed {
                    decision: Decision::Forward(forward),
                    payload: Payload::Rewritten,
                    decrypted,
                    encrypted: Some(out.len()),
                    srtp_failed_on: None,
                }
            }
            Err(error) => {
                egress.stats.srtp.record_failure(error);
                self.leg_mut(on.side).stats.record_error(forward.rtcp);
                Relayed {
                    decrypted,
                    srtp_failed_on: Some(forward.via.side),
                    ..Relayed::plain(Decision::Drop(DropReason::Srtp(error)))
                }
            }
        }
    }

    /// The forwarding decision for one datagram of `packet` that arrived at `now` from
    /// `source` on local socket `on`: learn, count, and say where to send it. It does not
    /// apply SRTP: the data plane calls [`MediaPair::relay`], which does.
    #[inline]
    pub fn on_packet(
        &mut self,
        on: LocalSocket,
        source: SocketAddr,
        packet: &[u8],
        now: Instant,
    ) -> Decision {
        let ingress = self.leg_mut(on.side);
        let rtcp = match on.kind {
            SocketKind::Rtcp => {
                if ingress.config.local_rtcp.is_none() {
                    return Decision::Drop(DropReason::UnknownSocket);
                }
                true
            }
            SocketKind::Rtp => packet::is_rtcp(packet),
        };
        let flags = ingress.config.flags.learning;
        let latch = match on.kind {
            SocketKind::Rtp => &mut ingress.rtp,
            SocketKind::Rtcp => &mut ingress.rtcp,
        };
        let learnable = !(rtcp && on.kind == SocketKind::Rtp);
        let stats = if rtcp {
            &mut ingress.stats.rtcp
        } else {
            &mut ingress.stats.rtp
        };
        if let Err(refusal) = latch.observe(&flags, source, learnable, now) {
            stats.record_error();
            return Decision::Drop(match refusal {
                Refusal::NotConfirmedSource => DropReason::StrictSource,
                Refusal::WorseThanBestSource => DropReason::StrictSourceLearning,
            });
        }
        if rtcp {
            stats.record(packet.len(), now);
        } else {
            stats.record_rtp(packet, now);
        }

        let side = on.side.other();
        let egress = self.leg(side);
        let egress_flags = &egress.config.flags.learning;
        let (kind, from, to) = if !rtcp || egress.config.rtcp_mux {
            (
                SocketKind::Rtp,
                Some(egress.config.local_rtp),
                egress.rtp.destination(egress_flags),
            )
        } else {
            (
                SocketKind::Rtcp,
                egress.config.local_rtcp,
                egress.rtcp.destination(egress_flags),
            )
        };
        match (from, to) {
            (Some(from), Some(to)) => Decision::Forward(Forward {
                via: LocalSocket { side, kind },
                from,
                to,
                rtcp,
            }),
            _ => {
                let ingress = self.leg_mut(on.side);
                let stats = if rtcp {
                    &mut ingress.stats.rtcp
                } else {
                    &mut ingress.stats.rtp
                };
                stats.record_error();
                Decision::Drop(DropReason::NoDestination)
            }
        }
    }
}

#[cfg(test)]
mod tests;
