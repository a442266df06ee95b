//! A leg's RTCP socket closed under rtcp-mux and opened again when the leg stops
//! multiplexing, with real UDP sockets on 127.0.0.1: the port is really released (another
//! socket can bind it), the worker's socket count follows, and RTCP keeps flowing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use anchorage_net::media::{bind_udp, BoundMedia, CallKey, MediaError, MediaWorkers};
use anchorage_relay::{
    LegConfig, LegConfigError, MediaPair, PortPair, PortPool, PortRange, SdpPeer, Side, StreamFlags,
};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const RTCP_RR: [u8; 8] = [0x80, 201, 0, 1, 0, 0, 0x12, 0x34];
const KEY: CallKey = CallKey(1);

fn at(port: u16) -> SocketAddr {
    SocketAddr::new(LOOPBACK, port)
}

fn phone() -> UdpSocket {
    let socket = UdpSocket::bind((LOOPBACK, 0)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = socket.recv_from(&mut buf).expect("datagram from the relay");
    (buf[..n].to_vec(), from)
}

/// One stream without rtcp-mux on either leg, bound on ports from 30000–31999 (below the
/// usual ephemeral range), its four sockets handed to `workers`.
fn call(workers: &MediaWorkers, a: SdpPeer, b: SdpPeer) -> [PortPair; 2] {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut rng = SmallRng::seed_from_u64(u64::from(std::process::id()));
    let mut pool = PortPool::new(
        PortRange::new(30000, 31999).unwrap(),
        Duration::ZERO,
        &mut rng,
    );
    for _ in 0..50 {
        let ports = [pool.allocate(now).unwrap(), pool.allocate(now).unwrap()];
        let leg = |p: PortPair, remote| LegConfig {
            local_rtp: at(p.rtp),
            local_rtcp: Some(at(p.rtcp())),
            remote: Some(remote),
            rtcp_mux: false,
            flags: StreamFlags::default(),
        };
        let pair = MediaPair::new(leg(ports[0], a), leg(ports[1], b), now).unwrap();
        match BoundMedia::bind(pair) {
            Ok(bound) => {
                let added = workers.add_call(KEY, vec![bound]).unwrap();
                added.blocking_recv().unwrap().unwrap();
                return ports;
            }
            Err(MediaError::Bind { .. }) => continue,
            Err(other) => panic!("{other}"),
        }
    }
    panic!("no free port pairs in 30000-31999");
}

fn sockets(workers: &MediaWorkers) -> usize {
    workers
        .activity(0)
        .unwrap()
        .blocking_recv()
        .unwrap()
        .sockets
}

fn update(workers: &MediaWorkers, side: Side, remote: SdpPeer, mux: bool) {
    let sent = workers.update_leg(KEY, 0, side, Some(remote), mux, StreamFlags::default());
    sent.unwrap().blocking_recv().unwrap().unwrap();
}

fn set_rtcp(
    workers: &MediaWorkers,
    side: Side,
    socket: Option<UdpSocket>,
) -> Result<(), MediaError> {
    let sent = workers.set_rtcp_socket(KEY, 0, side, socket);
    sent.unwrap().blocking_recv().unwrap()
}

#[test]
fn an_rtcp_socket_closes_under_rtcp_mux_and_opens_again_when_mux_ends() {
    let workers = MediaWorkers::start(NonZeroUsize::new(1)).unwrap();
    let (a, a_rtcp, b, b_rtcp) = (phone(), phone(), phone(), phone());
    let peer = |rtp: &UdpSocket, rtcp: &UdpSocket| {
        SdpPeer::with_rtcp(rtp.local_addr().unwrap(), rtcp.local_addr().unwrap())
    };
    let a_muxed = SdpPeer::with_rtcp(a.local_addr().unwrap(), a.local_addr().unwrap());
    let ports = call(&workers, peer(&a, &a_rtcp), peer(&b, &b_rtcp));
    assert_eq!(sockets(&workers), 4);

    // Without rtcp-mux, a leg's RTCP socket cannot go.
    let refused = set_rtcp(&workers, Side::B, None);
    assert!(
        matches!(
            refused,
            Err(MediaError::Leg(LegConfigError::MissingRtcpPort(Side::B)))
        ),
        "{refused:?}"
    );
    assert_eq!(sockets(&workers), 4);

    // A multiplexes: its RTCP socket is closed, the port really free.
    update(&workers, Side::A, a_muxed, true);
    set_rtcp(&workers, Side::A, None).unwrap();
    assert_eq!(sockets(&workers), 3);
    drop(bind_udp(at(ports[0].rtcp())).expect("A's RTCP port is closed"));
    // B's RTCP reaches A on its RTP address, from the relay's RTP port; A's comes back muxed.
    b_rtcp.send_to(&RTCP_RR, at(ports[1].rtcp())).unwrap();
    assert_eq!(recv(&a), (RTCP_RR.to_vec(), at(ports[0].rtp)));
    a.send_to(&RTCP_RR, at(ports[0].rtp)).unwrap();
    assert_eq!(recv(&b_rtcp), (RTCP_RR.to_vec(), at(ports[1].rtcp())));

    // A stops multiplexing: the RTCP socket first, then the update.
    let socket = bind_udp(at(ports[0].rtcp())).unwrap();
    set_rtcp(&workers, Side::A, Some(socket)).unwrap();
    update(&workers, Side::A, peer(&a, &a_rtcp), false);
    assert_eq!(sockets(&workers), 4);
    b_rtcp.send_to(&RTCP_RR, at(ports[1].rtcp())).unwrap();
    assert_eq!(recv(&a_rtcp), (RTCP_RR.to_vec(), at(ports[0].rtcp())));
    a_rtcp.send_to(&RTCP_RR, at(ports[0].rtcp())).unwrap();
    assert_eq!(recv(&b_rtcp), (RTCP_RR.to_vec(), at(ports[1].rtcp())));

    // Removing the call closes what is left.
    let removed = workers.remove_call(KEY).unwrap();
    assert!(removed.blocking_recv().unwrap().is_some());
    assert_eq!(sockets(&workers), 0);
}
