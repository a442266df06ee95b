//! The media fast path with real UDP sockets on 127.0.0.1: two test phones send RTP/RTCP
//! through the relay's workers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anchorage_net::media::{bind_udp, BoundMedia, CallKey, MediaError, MediaWorkers};
use anchorage_relay::srtp::SrtpSession;
use anchorage_relay::{
    EndpointLearning, LegConfig, MasterKey, MediaPair, PortPair, PortPool, PortRange, SdpPeer,
    Side, SrtpKey, SrtpKeys, SrtpSuite, StreamFlags,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn phone() -> UdpSocket {
    let socket = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK, port)
}

fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 0];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    packet.extend_from_slice(&0xabcd_u32.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0x12, 0x34];

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("datagram from the relay");
    (buf[..n].to_vec(), from)
}

fn assert_silent(socket: &UdpSocket) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(socket.recv_from(&mut buf).is_err(), "expected nothing");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
}

/// The relay's side of one call as a test sets it up: ports from a pool over a range that the
/// kernel does not hand out as ephemeral ports, rebinding on "address in use".
struct Relay {
    pool: PortPool,
}

impl Relay {
    fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(std::process::id()));
        let range = PortRange::new(20000, 29999).unwrap();
        Self {
            pool: PortPool::new(range, Duration::ZERO, &mut rng),
        }
    }

    /// Allocates both legs' ports and binds them; `mux[side]` drops that leg's RTCP port.
    fn media(
        &mut self,
        remote_a: Option<SdpPeer>,
        remote_b: Option<SdpPeer>,
        mux: [bool; 2],
        flags: StreamFlags,
    ) -> (BoundMedia, [PortPair; 2]) {
        self.media_with(remote_a, remote_b, mux, [flags, flags])
    }

    /// [`Relay::media`] with options per leg.
    fn media_with(
        &mut self,
        remote_a: Option<SdpPeer>,
        remote_b: Option<SdpPeer>,
        mux: [bool; 2],
        flags: [StreamFlags; 2],
    ) -> (BoundMedia, [PortPair; 2]) {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        for _ in 0..50 {
            let ports = [
                self.pool.allocate(now).unwrap(),
                self.pool.allocate(now).unwrap(),
            ];
            let leg = |i: usize, remote| LegConfig {
                local_rtp: at(ports[i].rtp),
                local_rtcp: ports[i].rtcp_unless_mux(mux[i]).map(at),
                remote,
                rtcp_mux: mux[i],
                flags: flags[i],
            };
            let pair = MediaPair::new(leg(0, remote_a), leg(1, remote_b), now).unwrap();
            match BoundMedia::bind(pair) {
                Ok(bound) => return (bound, ports),
                Err(MediaError::Bind { .. }) => continue, // in use by someone else: next pair
                Err(other) => panic!("{other}"),
            }
        }
        panic!("no free port pairs in 20000-29999");
    }
}

fn workers(threads: usize) -> MediaWorkers {
    MediaWorkers::start(NonZeroUsize::new(threads)).unwrap()
}

fn add(workers: &MediaWorkers, key: u64, media: Vec<BoundMedia>) {
    workers
        .add_call(CallKey(key), media)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
}

fn snapshot(workers: &MediaWorkers, key: u64) -> MediaPair {
    let pairs = workers
        .snapshot(CallKey(key))
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    pairs.into_iter().next().unwrap()
}

#[test]
fn rtp_is_relayed_both_ways_intact_from_the_port_advertised_to_each_leg() {
    let (a, b) = (phone(), phone());
    let mut relay = Relay::new(1);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [false, false],
        StreamFlags::default(),
    );
    let workers = workers(2);
    add(&workers, 7, vec![media]);

    let hello = rtp(1, b"hello from A");
    a.send_to(&hello, at(ports[0].rtp)).unwrap();
    let (got, from) = recv(&b);
    assert_eq!((got, from), (hello, at(ports[1].rtp)));

    let reply = rtp(1, b"and hello from B");
    b.send_to(&reply, at(ports[1].rtp)).unwrap();
    let (got, from) = recv(&a);
    assert_eq!((got, from), (reply, at(ports[0].rtp)));

    let pair = snapshot(&workers, 7);
    let a_stats = &pair.stats(Side::A).rtp;
    assert_eq!(
        (a_stats.packets(), a_stats.bytes(), a_stats.errors()),
        (1, 24, 0)
    );
    assert_eq!(pair.stats(Side::B).rtp.bytes(), 28);
}

#[test]
fn latches_to_a_source_other_than_the_sdp_address() {
    // A's SDP names one socket (as baresip bound to 0.0.0.0 would), but A sends from another.
    let (a_sdp, a_real, b) = (phone(), phone(), phone());
    let mut relay = Relay::new(2);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a_sdp.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [false, false],
        StreamFlags::default(),
    );
    let workers = workers(1);
    add(&workers, 1, vec![media]);

    // Before A sends, B's media goes to A's SDP address.
    b.send_to(&rtp(1, b"early"), at(ports[1].rtp)).unwrap();
    assert_eq!(recv(&a_sdp).0, rtp(1, b"early"));

    a_real.send_to(&rtp(1, b"a"), at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b).0, rtp(1, b"a"));
    b.send_to(&rtp(2, b"latched"), at(ports[1].rtp)).unwrap();
    let (got, from) = recv(&a_real);
    assert_eq!((got, from), (rtp(2, b"latched"), at(ports[0].rtp)));
    assert_silent(&a_sdp);
    assert_eq!(
        snapshot(&workers, 1).rtp_destination(Side::A),
        Some(a_real.local_addr().unwrap())
    );
}

#[test]
fn strict_source_drops_an_intruder_and_counts_it() {
    let (a, b, intruder) = (phone(), phone(), phone());
    let mut flags = StreamFlags::default();
    flags.learning.learning = EndpointLearning::Immediate;
    flags.learning.strict_source = true;
    let mut relay = Relay::new(3);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [false, false],
        flags,
    );
    let workers = workers(1);
    add(&workers, 3, vec![media]);

    a.send_to(&rtp(1, b"legit"), at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b).0, rtp(1, b"legit"));
    intruder
        .send_to(&rtp(2, b"spoof"), at(ports[0].rtp))
        .unwrap();
    assert_silent(&b);
    let stats = snapshot(&workers, 3);
    let a_stats = &stats.stats(Side::A).rtp;
    assert_eq!((a_stats.packets(), a_stats.errors()), (1, 1));
}

#[test]
fn rtcp_mux_leg_is_bridged_to_a_plain_rtcp_leg() {
    let (a, b, b_rtcp) = (phone(), phone(), phone());
    let mut relay = Relay::new(4);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::with_rtcp(
            b.local_addr().unwrap(),
            b_rtcp.local_addr().unwrap(),
        )),
        [true, false],
        StreamFlags::default(),
    );
    let workers = workers(1);
    add(&workers, 4, vec![media]);

    // A muxes RTCP onto its RTP port; B gets it on its RTCP socket from the relay's RTCP port.
    a.send_to(&RTCP_RR, at(ports[0].rtp)).unwrap();
    let (got, from) = recv(&b_rtcp);
    assert_eq!((got.as_slice(), from), (&RTCP_RR[..], at(ports[1].rtcp())));
    // RTP on the same port still goes to B's RTP.
    a.send_to(&rtp(1, b"voice"), at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b), (rtp(1, b"voice"), at(ports[1].rtp)));
    // B's RTCP comes back to A muxed, from A's RTP port.
    b_rtcp.send_to(&RTCP_RR, at(ports[1].rtcp())).unwrap();
    let (got, from) = recv(&a);
    assert_eq!((got.as_slice(), from), (&RTCP_RR[..], at(ports[0].rtp)));

    let pair = snapshot(&workers, 4);
    assert_eq!(
        (
            pair.stats(Side::A).rtp.packets(),
            pair.stats(Side::A).rtcp.packets()
        ),
        (1, 1)
    );
    assert_eq!(pair.stats(Side::B).rtcp.packets(), 1);
}

#[test]
fn counters_count_loss_from_sequence_gaps() {
    let (a, b) = (phone(), phone());
    let mut relay = Relay::new(5);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [true, true],
        StreamFlags::default(),
    );
    let workers = workers(1);
    add(&workers, 5, vec![media]);
    for seq in [10u16, 11, 13, 14, 17] {
        a.send_to(&rtp(seq, &[0xd5; 160]), at(ports[0].rtp))
            .unwrap();
        assert_eq!(recv(&b).0.len(), 172);
    }
    let pair = snapshot(&workers, 5);
    let stats = &pair.stats(Side::A).rtp;
    assert_eq!((stats.packets(), stats.bytes()), (5, 5 * 172));
    assert_eq!((stats.rtp().expected(), stats.rtp().lost()), (8, 3));
    assert!(stats.last_packet().is_some());
}

#[test]
fn removing_a_call_closes_its_sockets_and_reports_final_counters() {
    let (a, b) = (phone(), phone());
    let mut relay = Relay::new(6);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [false, false],
        StreamFlags::default(),
    );
    let workers = workers(2);
    add(&workers, 6, vec![media]);
    a.send_to(&rtp(1, b"x"), at(ports[0].rtp)).unwrap();
    recv(&b);

    let final_state = workers
        .remove_call(CallKey(6))
        .unwrap()
        .blocking_recv()
        .unwrap()
        .expect("call was known");
    assert_eq!(final_state[0].stats(Side::A).rtp.packets(), 1);
    for port in [ports[0].rtp, ports[0].rtcp(), ports[1].rtp, ports[1].rtcp()] {
        bind_udp(at(port)).expect("port is free again after remove");
    }
    assert!(workers
        .remove_call(CallKey(6))
        .unwrap()
        .blocking_recv()
        .unwrap()
        .is_none());
}

#[test]
fn calls_spread_over_workers_and_duplicates_are_refused() {
    let workers = workers(3);
    let mut relay = Relay::new(7);
    let mut phones = Vec::new();
    for key in 0..3u64 {
        let (a, b) = (phone(), phone());
        let (media, ports) = relay.media(
            Some(SdpPeer::new(a.local_addr().unwrap())),
            Some(SdpPeer::new(b.local_addr().unwrap())),
            [true, true],
            StreamFlags::default(),
        );
        add(&workers, key, vec![media]);
        phones.push((a, b, ports));
    }
    for key in 0..3 {
        let calls = workers.calls_on(key).unwrap().blocking_recv().unwrap();
        assert_eq!(calls, [CallKey(key as u64)]);
    }
    for (i, (a, b, ports)) in phones.iter().enumerate() {
        let payload = rtp(i as u16, format!("call {i}").as_bytes());
        a.send_to(&payload, at(ports[0].rtp)).unwrap();
        assert_eq!(recv(b), (payload, at(ports[1].rtp)));
    }
    let (media, _) = relay.media(None, None, [true, true], StreamFlags::default());
    let refused = workers
        .add_call(CallKey(1), vec![media])
        .unwrap()
        .blocking_recv()
        .unwrap();
    assert!(matches!(
        refused,
        Err(MediaError::DuplicateCall(CallKey(1)))
    ));
}

#[test]
fn update_leg_answers_the_call_and_unknown_calls_are_errors() {
    let (a, b) = (phone(), phone());
    let mut relay = Relay::new(8);
    // Offer only: B's SDP is not known yet.
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        None,
        [true, true],
        StreamFlags::default(),
    );
    let workers = workers(1);
    add(&workers, 8, vec![media]);
    a.send_to(&rtp(1, b"too early"), at(ports[0].rtp)).unwrap();
    assert_silent(&b);
    workers
        .update_leg(
            CallKey(8),
            0,
            Side::B,
            Some(SdpPeer::new(b.local_addr().unwrap())),
            true,
            StreamFlags::default(),
        )
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    a.send_to(&rtp(2, b"answered"), at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b), (rtp(2, b"answered"), at(ports[1].rtp)));
    let stats = snapshot(&workers, 8);
    assert_eq!(
        stats.stats(Side::A).rtp.errors(),
        1,
        "the early packet had no destination"
    );

    let unknown = workers
        .update_leg(CallKey(99), 0, Side::A, None, true, StreamFlags::default())
        .unwrap()
        .blocking_recv()
        .unwrap();
    assert!(matches!(unknown, Err(MediaError::UnknownCall(CallKey(99)))));
    let no_media = workers
        .update_leg(CallKey(8), 3, Side::A, None, true, StreamFlags::default())
        .unwrap()
        .blocking_recv()
        .unwrap();
    assert!(matches!(
        no_media,
        Err(MediaError::UnknownMedia { media: 3, .. })
    ));
}

#[test]
fn a_burst_larger_than_one_turn_is_relayed_completely_and_in_order() {
    let (a, b) = (phone(), phone());
    let (c, d) = (phone(), phone());
    let mut relay = Relay::new(9);
    let (media, ports) = relay.media(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [true, true],
        StreamFlags::default(),
    );
    let (other, other_ports) = relay.media(
        Some(SdpPeer::new(c.local_addr().unwrap())),
        Some(SdpPeer::new(d.local_addr().unwrap())),
        [true, true],
        StreamFlags::default(),
    );
    let workers = workers(1);
    add(&workers, 10, vec![media]);
    add(&workers, 11, vec![other]);
    // 150 datagrams: more than two turns of 64 on one socket.
    for seq in 0..150u16 {
        a.send_to(&rtp(seq, b"burst"), at(ports[0].rtp)).unwrap();
    }
    c.send_to(&rtp(0, b"other call"), at(other_ports[0].rtp))
        .unwrap();
    for seq in 0..150u16 {
        assert_eq!(recv(&b).0, rtp(seq, b"burst"));
    }
    assert_eq!(recv(&d).0, rtp(0, b"other call"));
    let pair = snapshot(&workers, 10);
    assert_eq!(
        (
            pair.stats(Side::A).rtp.packets(),
            pair.stats(Side::A).rtp.rtp().lost()
        ),
        (150, 0)
    );
}

fn srtp_key(fill: u8) -> SrtpKey {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    SrtpKey {
        suite,
        master: MasterKey::new(suite, &[fill; 30]).unwrap(),
        lifetime: None,
    }
}

#[test]
fn an_sdes_leg_is_decrypted_towards_a_plain_leg_and_encrypted_back() {
    let (a, b) = (phone(), phone());
    let mut relay = Relay::new(9);
    // A encrypts with its key 0xaa; the relay encrypts towards A with its own key 0x11.
    let a_flags = StreamFlags {
        srtp: Some(SrtpKeys {
            inbound: Some(srtp_key(0xaa)),
            outbound: Some(srtp_key(0x11)),
        }),
        ..StreamFlags::default()
    };
    let (media, ports) = relay.media_with(
        Some(SdpPeer::new(a.local_addr().unwrap())),
        Some(SdpPeer::new(b.local_addr().unwrap())),
        [true, true],
        [a_flags, StreamFlags::default()],
    );
    let workers = workers(1);
    add(&workers, 21, vec![media]);
    let mut a_sends = SrtpSession::new(srtp_key(0xaa));
    let mut a_receives = SrtpSession::new(srtp_key(0x11));
    for seq in 0..3 {
        let plain = rtp(seq, b"srtp-to-plain");
        a.send_to(&a_sends.protect(&plain, false).unwrap(), at(ports[0].rtp))
            .unwrap();
        assert_eq!(recv(&b), (plain, at(ports[1].rtp)));
        let plain = rtp(seq, b"plain-to-srtp");
        b.send_to(&plain, at(ports[1].rtp)).unwrap();
        let (secured, from) = recv(&a);
        assert_eq!(from, at(ports[0].rtp));
        assert_eq!(a_receives.unprotect(&secured, false).unwrap(), plain);
    }
    // SRTCP muxed on A's RTP port arrives as plain RTCP (muxed on B's RTP port too).
    a.send_to(&a_sends.protect(&RTCP_RR, true).unwrap(), at(ports[0].rtp))
        .unwrap();
    assert_eq!(recv(&b).0, RTCP_RR.to_vec());
    // A tampered packet and a replayed one are dropped and counted.
    let mut tampered = a_sends.protect(&rtp(10, b"x"), false).unwrap();
    tampered[12] ^= 0xff;
    a.send_to(&tampered, at(ports[0].rtp)).unwrap();
    let good = a_sends.protect(&rtp(11, b"y"), false).unwrap();
    a.send_to(&good, at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b).0, rtp(11, b"y"));
    a.send_to(&good, at(ports[0].rtp)).unwrap();
    assert_silent(&b);
    let srtp = snapshot(&workers, 21).stats(Side::A).srtp;
    assert_eq!(
        (
            srtp.decrypted_packets,
            srtp.encrypted_packets,
            srtp.auth_failures,
            srtp.replayed
        ),
        (5, 3, 1, 1)
    );
    let totals = workers.activity(0).unwrap().blocking_recv().unwrap().totals;
    assert_eq!(totals.srtp.auth_failures, 1);
    assert_eq!(totals.srtp.replayed, 1);
    assert_eq!(totals.srtp.decrypted_packets, 5);
    assert_eq!(totals.srtp.encrypted_packets, 3);
}
