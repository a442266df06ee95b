//! RTP as the system tests send and check it: test sockets play the phones' media.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

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
