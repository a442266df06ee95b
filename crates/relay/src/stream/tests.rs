use std::time::Duration;

use super::*;
use crate::latch::EndpointLearning;
use crate::srtp::{SrtpError, SrtpKeys, SrtpSession};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

const A_LOCAL: &str = "203.0.113.1:30000";
const A_LOCAL_RTCP: &str = "203.0.113.1:30001";
const B_LOCAL: &str = "203.0.113.1:30002";
const B_LOCAL_RTCP: &str = "203.0.113.1:30003";
const A_SDP: &str = "192.0.2.10:4000";
const B_SDP: &str = "198.51.100.20:5000";

fn leg(
    local: &str,
    local_rtcp: Option<&str>,
    remote: Option<&str>,
    flags: StreamFlags,
) -> LegConfig {
    LegConfig {
        local_rtp: addr(local),
        local_rtcp: local_rtcp.map(addr),
        remote: remote.map(|r| SdpPeer::new(addr(r))),
        rtcp_mux: local_rtcp.is_none(),
        flags,
    }
}

fn pair_with(flags: StreamFlags, now: Instant) -> MediaPair {
    MediaPair::new(
        leg(A_LOCAL, Some(A_LOCAL_RTCP), Some(A_SDP), flags),
        leg(B_LOCAL, Some(B_LOCAL_RTCP), Some(B_SDP), flags),
        now,
    )
    .unwrap()
}

fn rtp(seq: u16) -> [u8; 172] {
    let mut p = [0u8; 172];
    p[0] = 0x80;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&0x1111u32.to_be_bytes());
    p
}

/// An RTCP receiver report header (PT 201), 8 bytes.
const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0, 1];

const A_RTP: LocalSocket = LocalSocket {
    side: Side::A,
    kind: SocketKind::Rtp,
};
const A_RTCP: LocalSocket = LocalSocket {
    side: Side::A,
    kind: SocketKind::Rtcp,
};
const B_RTP: LocalSocket = LocalSocket {
    side: Side::B,
    kind: SocketKind::Rtp,
};
const B_RTCP: LocalSocket = LocalSocket {
    side: Side::B,
    kind: SocketKind::Rtcp,
};

fn forward(decision: Decision) -> Forward {
    match decision {
        Decision::Forward(f) => f,
        Decision::Drop(reason) => panic!("dropped: {reason:?}"),
    }
}

#[test]
fn forwards_symmetrically_from_the_port_advertised_to_the_destination() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let f = forward(pair.on_packet(A_RTP, addr(A_SDP), &rtp(1), t0));
    assert_eq!(
        f,
        Forward {
            via: B_RTP,
            from: addr(B_LOCAL),
            to: addr(B_SDP),
            rtcp: false
        }
    );
    let f = forward(pair.on_packet(B_RTP, addr(B_SDP), &rtp(1), t0));
    assert_eq!(
        f,
        Forward {
            via: A_RTP,
            from: addr(A_LOCAL),
            to: addr(A_SDP),
            rtcp: false
        }
    );
}

#[test]
fn delayed_learning_latches_a_nat_source_and_confirms_after_3_s() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let ms = Duration::from_millis;
    // A sends from behind NAT: B's packets follow A's real source at once.
    pair.on_packet(A_RTP, addr("192.0.2.99:61000"), &rtp(1), t0 + ms(500));
    let f = forward(pair.on_packet(B_RTP, addr(B_SDP), &rtp(1), t0 + ms(510)));
    assert_eq!(f.to, addr("192.0.2.99:61000"));
    assert!(!pair.is_confirmed(Side::A));
    // The NAT rebinds within the window: followed again.
    pair.on_packet(A_RTP, addr("192.0.2.99:61002"), &rtp(2), t0 + ms(2_000));
    assert_eq!(
        pair.rtp_destination(Side::A),
        Some(addr("192.0.2.99:61002"))
    );
    // First packet after 3 s confirms.
    pair.on_packet(A_RTP, addr("192.0.2.99:61004"), &rtp(3), t0 + ms(3_020));
    assert!(pair.is_confirmed(Side::A));
    // Confirmed: a new source is forwarded but does not move the destination.
    let f = forward(pair.on_packet(A_RTP, addr("192.0.2.50:7000"), &rtp(4), t0 + ms(3_040)));
    assert_eq!(f.to, addr(B_SDP));
    assert_eq!(
        pair.rtp_destination(Side::A),
        Some(addr("192.0.2.99:61004"))
    );
    assert_eq!(pair.stats(Side::A).rtp.packets(), 4);
}

#[test]
fn strict_source_drops_and_counts_an_error() {
    let t0 = epoch();
    let mut flags = StreamFlags::default();
    flags.learning.learning = EndpointLearning::Immediate;
    flags.learning.strict_source = true;
    let mut pair = pair_with(flags, t0);
    forward(pair.on_packet(A_RTP, addr(A_SDP), &rtp(1), t0));
    assert_eq!(
        pair.on_packet(A_RTP, addr("192.0.2.66:4000"), &rtp(2), t0),
        Decision::Drop(DropReason::StrictSource)
    );
    let stats = &pair.stats(Side::A).rtp;
    assert_eq!(
        (stats.packets(), stats.bytes(), stats.errors()),
        (1, 172, 1)
    );
}

#[test]
fn media_handover_moves_the_destination_after_confirmation() {
    let t0 = epoch();
    let mut flags = StreamFlags::default();
    flags.learning.learning = EndpointLearning::Immediate;
    flags.learning.media_handover = true;
    let mut pair = pair_with(flags, t0);
    pair.on_packet(A_RTP, addr(A_SDP), &rtp(1), t0);
    pair.on_packet(A_RTP, addr("192.0.2.77:9000"), &rtp(2), t0);
    let f = forward(pair.on_packet(B_RTP, addr(B_SDP), &rtp(1), t0));
    assert_eq!(f.to, addr("192.0.2.77:9000"));
}

#[test]
fn asymmetric_leg_is_always_sent_to_its_sdp_address() {
    let t0 = epoch();
    let mut flags = StreamFlags::default();
    flags.learning.asymmetric = true;
    let mut pair = pair_with(flags, t0);
    pair.on_packet(A_RTP, addr("192.0.2.99:61000"), &rtp(1), t0);
    let f = forward(pair.on_packet(B_RTP, addr(B_SDP), &rtp(1), t0));
    assert_eq!(f.to, addr(A_SDP));
}

#[test]
fn rtcp_goes_from_rtcp_port_to_rtcp_port() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let f = forward(pair.on_packet(A_RTCP, addr("192.0.2.10:4001"), &RTCP_RR, t0));
    assert_eq!(
        f,
        Forward {
            via: B_RTCP,
            from: addr(B_LOCAL_RTCP),
            to: addr("198.51.100.20:5001"),
            rtcp: true
        }
    );
    assert_eq!(pair.stats(Side::A).rtcp.packets(), 1);
    assert_eq!(pair.stats(Side::A).rtp.packets(), 0);
}

#[test]
fn rtcp_mux_leg_is_demultiplexed_and_bridged_to_a_non_mux_leg() {
    let t0 = epoch();
    let a = leg(A_LOCAL, None, Some(A_SDP), StreamFlags::default());
    let mut b = leg(B_LOCAL, Some(B_LOCAL_RTCP), None, StreamFlags::default());
    b.remote = Some(SdpPeer::with_rtcp(addr(B_SDP), addr("198.51.100.21:6000")));
    let mut pair = MediaPair::new(a, b, t0).unwrap();
    // RTCP muxed on A's RTP port → B's RTCP port and a=rtcp address.
    let f = forward(pair.on_packet(A_RTP, addr(A_SDP), &RTCP_RR, t0));
    assert_eq!(
        f,
        Forward {
            via: B_RTCP,
            from: addr(B_LOCAL_RTCP),
            to: addr("198.51.100.21:6000"),
            rtcp: true
        }
    );
    // RTP on the same port → B's RTP.
    let f = forward(pair.on_packet(A_RTP, addr(A_SDP), &rtp(1), t0));
    assert_eq!((f.via, f.to, f.rtcp), (B_RTP, addr(B_SDP), false));
    // B's RTCP → A's RTP port and address (A muxes).
    let f = forward(pair.on_packet(B_RTCP, addr("198.51.100.21:6000"), &RTCP_RR, t0));
    assert_eq!(
        f,
        Forward {
            via: A_RTP,
            from: addr(A_LOCAL),
            to: addr(A_SDP),
            rtcp: true
        }
    );
    let a_stats = pair.stats(Side::A);
    assert_eq!((a_stats.rtp.packets(), a_stats.rtcp.packets()), (1, 1));
    // A has no RTCP socket.
    assert_eq!(
        pair.on_packet(A_RTCP, addr(A_SDP), &RTCP_RR, t0),
        Decision::Drop(DropReason::UnknownSocket)
    );
}

#[test]
fn stray_rtcp_on_the_rtp_port_does_not_confirm_the_endpoint() {
    let t0 = epoch();
    let mut flags = StreamFlags::default();
    flags.learning.learning = EndpointLearning::Immediate;
    let mut pair = pair_with(flags, t0);
    pair.on_packet(A_RTP, addr("192.0.2.5:1111"), &RTCP_RR, t0);
    assert!(!pair.is_confirmed(Side::A));
    assert_eq!(pair.rtp_destination(Side::A), Some(addr(A_SDP)));
    pair.on_packet(A_RTP, addr("192.0.2.6:2222"), &rtp(1), t0);
    assert_eq!(pair.rtp_destination(Side::A), Some(addr("192.0.2.6:2222")));
}

#[test]
fn unanswered_leg_has_no_destination_until_it_is_signalled() {
    let t0 = epoch();
    let mut pair = MediaPair::new(
        leg(
            A_LOCAL,
            Some(A_LOCAL_RTCP),
            Some(A_SDP),
            StreamFlags::default(),
        ),
        leg(B_LOCAL, Some(B_LOCAL_RTCP), None, StreamFlags::default()),
        t0,
    )
    .unwrap();
    assert_eq!(
        pair.on_packet(A_RTP, addr(A_SDP), &rtp(1), t0),
        Decision::Drop(DropReason::NoDestination)
    );
    // B's early media is forwarded to A, but B learns nothing before its SDP is known.
    let f = forward(pair.on_packet(B_RTP, addr("198.51.100.9:7777"), &rtp(1), t0));
    assert_eq!(f.to, addr(A_SDP));
    assert_eq!(pair.rtp_destination(Side::B), None);
    // The answer arrives.
    pair.update_leg(
        Side::B,
        Some(SdpPeer::new(addr(B_SDP))),
        false,
        StreamFlags::default(),
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    let f = forward(pair.on_packet(A_RTP, addr(A_SDP), &rtp(2), t0 + Duration::from_secs(1)));
    assert_eq!(f.to, addr(B_SDP));
    let a = &pair.stats(Side::A).rtp;
    assert_eq!((a.packets(), a.errors(), a.rtp().lost()), (2, 1, 0));
}

#[test]
fn signalling_restarts_learning_on_both_legs() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let late = t0 + Duration::from_secs(10);
    pair.on_packet(A_RTP, addr("192.0.2.99:61000"), &rtp(1), late);
    assert!(pair.is_confirmed(Side::A));
    pair.update_leg(
        Side::B,
        Some(SdpPeer::new(addr(B_SDP))),
        false,
        StreamFlags::default(),
        late,
    )
    .unwrap();
    assert!(!pair.is_confirmed(Side::A));
    pair.on_packet(
        A_RTP,
        addr("192.0.2.99:62000"),
        &rtp(2),
        late + Duration::from_secs(1),
    );
    assert_eq!(
        pair.rtp_destination(Side::A),
        Some(addr("192.0.2.99:62000"))
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let t0 = epoch();
    let mut a = leg(A_LOCAL, None, Some(A_SDP), StreamFlags::default());
    a.rtcp_mux = false;
    let b = leg(
        B_LOCAL,
        Some(B_LOCAL_RTCP),
        Some(B_SDP),
        StreamFlags::default(),
    );
    assert_eq!(
        MediaPair::new(a, b, t0).unwrap_err(),
        LegConfigError::MissingRtcpPort(Side::A)
    );
    let a = leg(
        A_LOCAL,
        Some(B_LOCAL_RTCP),
        Some(A_SDP),
        StreamFlags::default(),
    );
    assert_eq!(
        MediaPair::new(a, b, t0).unwrap_err(),
        LegConfigError::SharedLocalSocket(addr(B_LOCAL_RTCP))
    );
    let a = leg(A_LOCAL, None, Some(A_SDP), StreamFlags::default());
    let mut pair = MediaPair::new(a, b, t0).unwrap();
    assert_eq!(
        pair.update_leg(Side::A, None, false, StreamFlags::default(), t0),
        Err(LegConfigError::MissingRtcpPort(Side::A))
    );
}

#[test]
fn port_latching_keeps_local_ports_when_the_peer_port_changes() {
    let t0 = epoch();
    let pair = pair_with(StreamFlags::default(), t0);
    let moved = Some(SdpPeer::new(addr("198.51.100.20:5010")));
    assert!(pair.keeps_local_ports(Side::B, Some(SdpPeer::new(addr("198.51.100.30:5000")))));
    assert!(!pair.keeps_local_ports(Side::B, moved));
    let flags = StreamFlags {
        port_latching: true,
        ..StreamFlags::default()
    };
    let pair = pair_with(flags, t0);
    assert!(pair.keeps_local_ports(Side::B, moved));
}

#[test]
fn local_sockets_and_lookup_by_address() {
    let t0 = epoch();
    let pair = pair_with(StreamFlags::default(), t0);
    let all: Vec<_> = pair.local_sockets().collect();
    assert_eq!(
        all,
        [
            (A_RTP, addr(A_LOCAL)),
            (A_RTCP, addr(A_LOCAL_RTCP)),
            (B_RTP, addr(B_LOCAL)),
            (B_RTCP, addr(B_LOCAL_RTCP)),
        ]
    );
    assert_eq!(pair.local_socket(addr(B_LOCAL_RTCP)), Some(B_RTCP));
    assert_eq!(pair.local_socket(addr("203.0.113.1:30004")), None);
}

#[test]
fn an_rtcp_port_is_taken_away_under_rtcp_mux_and_given_back_when_mux_ends() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let flags = StreamFlags::default();
    // Without rtcp-mux the RTCP port cannot go.
    assert_eq!(
        pair.set_local_rtcp(Side::A, None),
        Err(LegConfigError::MissingRtcpPort(Side::A))
    );
    // A multiplexes: its RTCP port goes, its RTCP arrives and leaves on the RTP port.
    pair.update_leg(Side::A, Some(SdpPeer::new(addr(A_SDP))), true, flags, t0)
        .unwrap();
    pair.set_local_rtcp(Side::A, None).unwrap();
    assert_eq!(pair.local_sockets().count(), 3);
    assert_eq!(pair.local_socket(addr(A_LOCAL_RTCP)), None);
    let f = forward(pair.on_packet(B_RTCP, addr("198.51.100.20:5001"), &RTCP_RR, t0));
    assert_eq!((f.via, f.to, f.rtcp), (A_RTP, addr(A_SDP), true));
    // A stops multiplexing: without an RTCP port first, that is refused; with one, RTCP
    // goes RTCP to RTCP again.
    assert_eq!(
        pair.update_leg(Side::A, Some(SdpPeer::new(addr(A_SDP))), false, flags, t0),
        Err(LegConfigError::MissingRtcpPort(Side::A))
    );
    assert_eq!(
        pair.set_local_rtcp(Side::A, Some(addr(B_LOCAL_RTCP))),
        Err(LegConfigError::SharedLocalSocket(addr(B_LOCAL_RTCP)))
    );
    pair.set_local_rtcp(Side::A, Some(addr(A_LOCAL_RTCP)))
        .unwrap();
    pair.update_leg(Side::A, Some(SdpPeer::new(addr(A_SDP))), false, flags, t0)
        .unwrap();
    assert_eq!(pair.local_sockets().count(), 4);
    let f = forward(pair.on_packet(B_RTCP, addr("198.51.100.20:5001"), &RTCP_RR, t0));
    assert_eq!(
        (f.via, f.from, f.to),
        (A_RTCP, addr(A_LOCAL_RTCP), addr("192.0.2.10:4001"))
    );
}

#[test]
fn counters_loss_and_last_packet_per_leg() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let ms = Duration::from_millis;
    for (i, seq) in [1u16, 2, 4, 5, 5, 3].into_iter().enumerate() {
        pair.on_packet(A_RTP, addr(A_SDP), &rtp(seq), t0 + ms(20 * i as u64));
    }
    pair.record_send_error(Side::A, false);
    let a = &pair.stats(Side::A).rtp;
    assert_eq!((a.packets(), a.bytes(), a.errors()), (6, 6 * 172, 1));
    assert_eq!(
        (
            a.rtp().expected(),
            a.rtp().lost(),
            a.rtp().duplicates(),
            a.rtp().reordered()
        ),
        (5, 0, 1, 1)
    );
    assert_eq!(pair.last_packet(), Some(t0 + ms(100)));
    assert_eq!(pair.stats(Side::B).rtp.packets(), 0);
}

fn srtp_key(fill: u8) -> crate::srtp::SrtpKey {
    let suite = crate::srtp::SrtpSuite::AesCm128HmacSha1_80;
    crate::srtp::SrtpKey {
        suite,
        master: crate::srtp::MasterKey::new(suite, &[fill; 30]).unwrap(),
        lifetime: None,
    }
}

/// A with SDES (A sends under 0xaa, the relay sends to A under 0x11), B plain.
fn srtp_pair(now: Instant) -> MediaPair {
    let a_flags = StreamFlags {
        srtp: Some(SrtpKeys {
            inbound: Some(srtp_key(0xaa)),
            outbound: Some(srtp_key(0x11)),
        }),
        ..StreamFlags::default()
    };
    a_encrypted(a_flags, now)
}

/// A pair whose leg A has `a_flags` (SRTP or DTLS) and whose leg B is plain.
fn a_encrypted(a_flags: StreamFlags, now: Instant) -> MediaPair {
    MediaPair::new(
        leg(A_LOCAL, Some(A_LOCAL_RTCP), Some(A_SDP), a_flags),
        leg(
            B_LOCAL,
            Some(B_LOCAL_RTCP),
            Some(B_SDP),
            StreamFlags::default(),
        ),
        now,
    )
    .unwrap()
}

#[test]
fn relay_without_srtp_forwards_the_datagram_itself() {
    let t0 = epoch();
    let mut pair = pair_with(StreamFlags::default(), t0);
    let mut out = Vec::new();
    let relayed = pair.relay(A_RTP, addr(A_SDP), &rtp(1), t0, &mut out);
    assert_eq!(relayed.payload, Payload::Unchanged);
    assert_eq!(forward(relayed.decision).to, addr(B_SDP));
    assert!(out.is_empty());
}

#[test]
fn relay_decrypts_an_sdes_leg_and_encrypts_towards_it() {
    let t0 = epoch();
    let mut pair = srtp_pair(t0);
    let mut a_sends = SrtpSession::new(srtp_key(0xaa));
    let mut a_receives = SrtpSession::new(srtp_key(0x11));
    let mut out = Vec::new();
    let secured = a_sends.protect(&rtp(1), false).unwrap();
    let relayed = pair.relay(A_RTP, addr(A_SDP), &secured, t0, &mut out);
    assert_eq!(relayed.payload, Payload::Rewritten);
    assert_eq!(relayed.decrypted, Some(secured.len()));
    assert_eq!(out, rtp(1));
    assert_eq!(forward(relayed.decision).to, addr(B_SDP));
    let relayed = pair.relay(B_RTP, addr(B_SDP), &rtp(2), t0, &mut out);
    assert_eq!(relayed.encrypted, Some(out.len()));
    assert_eq!(a_receives.unprotect(&out, false).unwrap(), rtp(2));
    // SRTCP on the RTCP port, plain RTCP back.
    let secured = a_sends.protect(&RTCP_RR, true).unwrap();
    let relayed = pair.relay(A_RTCP, addr("192.0.2.10:4001"), &secured, t0, &mut out);
    assert_eq!(forward(relayed.decision).via, B_RTCP);
    assert_eq!(out, RTCP_RR);
    pair.relay(B_RTCP, addr("198.51.100.20:5001"), &RTCP_RR, t0, &mut out);
    assert_eq!(a_receives.unprotect(&out, true).unwrap(), RTCP_RR);
    let srtp = pair.stats(Side::A).srtp;
    assert_eq!((srtp.decrypted_packets, srtp.encrypted_packets), (2, 2));
}

#[test]
fn a_packet_that_fails_authentication_teaches_the_latch_nothing() {
    let t0 = epoch();
    let mut pair = srtp_pair(t0);
    let mut stranger = SrtpSession::new(srtp_key(0x66));
    let mut out = Vec::new();
    // Within the learning window a stranger's packet would move A's destination; a forged
    // or plain one is dropped first.
    let forged = stranger.protect(&rtp(1), false).unwrap();
    let relayed = pair.relay(A_RTP, addr("192.0.2.99:6000"), &forged, t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::Authentication))
    );
    let relayed = pair.relay(A_RTP, addr("192.0.2.99:6000"), &rtp(2), t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::Authentication))
    );
    assert_eq!(pair.rtp_destination(Side::A), Some(addr(A_SDP)));
    let stats = pair.stats(Side::A);
    assert_eq!(
        (
            stats.srtp.auth_failures,
            stats.rtp.errors(),
            stats.rtp.packets()
        ),
        (2, 2, 0)
    );
    // A replay of a good packet is dropped as one.
    let mut a_sends = SrtpSession::new(srtp_key(0xaa));
    let good = a_sends.protect(&rtp(3), false).unwrap();
    forward(pair.relay(A_RTP, addr(A_SDP), &good, t0, &mut out).decision);
    let again = pair.relay(A_RTP, addr(A_SDP), &good, t0, &mut out);
    assert_eq!(
        again.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::Replay))
    );
    assert_eq!(pair.stats(Side::A).srtp.replayed, 1);
}

#[test]
fn without_the_partys_key_its_packets_are_dropped_and_a_lifetime_is_honoured() {
    let t0 = epoch();
    let no_key = StreamFlags {
        srtp: Some(SrtpKeys {
            inbound: None,
            outbound: Some(srtp_key(0x11)),
        }),
        ..StreamFlags::default()
    };
    let mut pair = a_encrypted(no_key, t0);
    let mut out = Vec::new();
    let relayed = pair.relay(A_RTP, addr(A_SDP), &rtp(1), t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::NoKey))
    );
    // The failure is A's, an SDES leg whose suite is its relay key's.
    assert_eq!(relayed.srtp_failed_on, Some(Side::A));
    assert_eq!(
        pair.srtp_kind(Side::A),
        (
            crate::Keying::Sdes,
            Some(crate::srtp::SrtpSuite::AesCm128HmacSha1_80)
        )
    );
    // The key arrives with a lifetime of two packets.
    let key = crate::srtp::SrtpKey {
        lifetime: Some(2),
        ..srtp_key(0xaa)
    };
    let keyed = StreamFlags {
        srtp: Some(SrtpKeys {
            inbound: Some(key),
            outbound: Some(srtp_key(0x11)),
        }),
        ..StreamFlags::default()
    };
    pair.update_leg(Side::A, Some(SdpPeer::new(addr(A_SDP))), false, keyed, t0)
        .unwrap();
    let mut a_sends = SrtpSession::new(srtp_key(0xaa));
    for seq in 2..4 {
        let secured = a_sends.protect(&rtp(seq), false).unwrap();
        forward(
            pair.relay(A_RTP, addr(A_SDP), &secured, t0, &mut out)
                .decision,
        );
    }
    let secured = a_sends.protect(&rtp(4), false).unwrap();
    let relayed = pair.relay(A_RTP, addr(A_SDP), &secured, t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::KeyExhausted))
    );
    assert_eq!(pair.stats(Side::A).srtp.other_failures, 2);
}

#[test]
fn a_dtls_leg_relays_nothing_in_clear_until_its_handshake_keys_it() {
    let t0 = epoch();
    let params = crate::dtls::DtlsParams {
        role: crate::dtls::DtlsRole::Server,
        peer: Some(crate::dtls::Fingerprint::of_der(b"party")),
    };
    let a_flags = StreamFlags {
        dtls: Some(params),
        ..StreamFlags::default()
    };
    let mut pair = a_encrypted(a_flags, t0);
    let mut out = Vec::new();
    // Before the handshake: neither direction passes.
    let relayed = pair.relay(B_RTP, addr(B_SDP), &rtp(1), t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::NoKey))
    );
    let relayed = pair.relay(A_RTP, addr(A_SDP), &rtp(1), t0, &mut out);
    assert_eq!(
        relayed.decision,
        Decision::Drop(DropReason::Srtp(SrtpError::NoKey))
    );
    // The handshake's keys, then a re-signal of the same leg without keys keeps them.
    pair.set_dtls_keys(
        Side::A,
        SrtpKeys {
            inbound: Some(srtp_key(0xaa)),
            outbound: Some(srtp_key(0x11)),
        },
    );
    pair.update_leg(Side::A, Some(SdpPeer::new(addr(A_SDP))), false, a_flags, t0)
        .unwrap();
    let mut a_sends = SrtpSession::new(srtp_key(0xaa));
    let mut a_receives = SrtpSession::new(srtp_key(0x11));
    let secured = a_sends.protect(&rtp(2), false).unwrap();
    pair.relay(A_RTP, addr(A_SDP), &secured, t0, &mut out);
    assert_eq!(out, rtp(2));
    pair.relay(B_RTP, addr(B_SDP), &rtp(3), t0, &mut out);
    assert_eq!(a_receives.unprotect(&out, false).unwrap(), rtp(3));
    // The leg made plain by signalling forgets the keys.
    pair.update_leg(
        Side::A,
        Some(SdpPeer::new(addr(A_SDP))),
        false,
        StreamFlags::default(),
        t0,
    )
    .unwrap();
    let relayed = pair.relay(B_RTP, addr(B_SDP), &rtp(4), t0, &mut out);
    assert_eq!(relayed.payload, Payload::Unchanged);
}
