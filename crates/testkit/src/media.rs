//! RTP as the system tests send and check it: test sockets play the phones' media.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::{free_udp_port, require_tool, Daemon, LOCALHOST};

/// Debian's rtpengine in userspace mode on loopback, with 100 media ports of its own (per
/// process and per instance in it, from 20000); returns it and its ng port.
pub fn rtpengine() -> (Daemon, u16) {
    let rtpengine = require_tool("rtpengine", "rtpengine-daemon");
    static INSTANCE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let ng = free_udp_port(LOCALHOST);
    let instance = INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
    let base = 20000 + (std::process::id() % 10) as u16 * 1000 + instance * 100;
    let mut cmd = Command::new(rtpengine);
    cmd.args([
        "--config-file=none",
        "--foreground",
        "--table=-1",
        "--log-stderr",
    ])
    .args(["--interface=127.0.0.1", "--delete-delay=0", "--log-level=7"])
    .arg(format!("--listen-ng=127.0.0.1:{ng}"))
    .arg(format!("--port-min={base}"))
    .arg(format!("--port-max={}", base + 99));
    let mut daemon = Daemon::spawn("rtpengine", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| {
        d.log().contains("Startup complete")
    });
    (daemon, ng)
}

/// The media address an SDP (or a whole SIP message carrying one) names: the last `c=IN IP4`
/// line and the first `m=audio` port.
pub fn sdp_media(message: &str) -> SocketAddr {
    let ip = message
        .lines()
        .filter_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .next_back()
        .expect("a c= line");
    let port = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .expect("an m=audio line");
    format!("{ip}:{port}")
        .parse()
        .expect("an IPv4 media address")
}

/// An RTP packet: PCMU, the given sequence number and SSRC, 160 bytes of payload.
pub fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n((seq % 251) as u8, 160));
    p
}

/// Sends 20 packets, 20 ms apart, from `from` to `relay`, and checks each arrives at `to`,
/// unchanged, from `expected_source` (the relay port advertised to the receiver).
pub fn rtp_flows(
    from: &UdpSocket,
    relay: SocketAddr,
    to: &UdpSocket,
    expected_source: SocketAddr,
    ssrc: u32,
) {
    to.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        let packet = rtp(seq, ssrc);
        from.send_to(&packet, relay).expect("RTP sent");
        let (n, source) = to
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("RTP {seq} from {relay} did not arrive: {e}"));
        assert_eq!(&buf[..n], &packet[..], "payload of packet {seq}");
        assert_eq!(
            source, expected_source,
            "packet {seq} must come from the relay port advertised to this side"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
