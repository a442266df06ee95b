//! RTP as the system tests send and check it: test sockets play the phones' media.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use crate::{free_udp_port, require_tool, Daemon, LOCALHOST};

/// Debian's rtpengine in userspace mode on loopback, with 100 media ports of its own;
/// returns it and its ng port.
pub fn rtpengine() -> (Daemon, u16) {
    let (daemon, ng, _) = rtpengine_with_ports();
    (daemon, ng)
}

/// [`rtpengine`], also returning its media ports: a block of 100 that is free when it starts
/// (not a fixed range: the machine may run other engineers' rtpengines and relays). A start
/// that fails (its ng port taken meanwhile) is tried again, up to 3 times.
pub fn rtpengine_with_ports() -> (Daemon, u16, std::ops::RangeInclusive<u16>) {
    let rtpengine = require_tool("rtpengine", "rtpengine-daemon");
    let mut last_log = String::new();
    for _ in 0..3 {
        let ng = free_udp_port(LOCALHOST);
        let base = crate::free_udp_block(LOCALHOST, 100);
        let mut cmd = Command::new(&rtpengine);
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while daemon.is_running() && std::time::Instant::now() < deadline {
            if daemon.log().contains("Startup complete") {
                return (daemon, ng, base..=base + 99);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        last_log = daemon.log();
    }
    panic!("rtpengine did not start in 3 tries; its last log:\n{last_log}");
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

/// Lower-case hex of `bytes` (how the tests' Python peers exchange packets).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower-case or upper-case hex text; panics on anything else (test input).
pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| {
            text.get(2 * i..2 * i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .expect("hex")
        })
        .collect()
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

/// Receives one datagram on an IPv4 socket together with the IP TOS byte it arrived with
/// (`IP_RECVTOS`); the socket's read timeout applies. `None` for the TOS when the kernel
/// gave none.
pub fn recv_with_tos(socket: &std::net::UdpSocket) -> std::io::Result<(Vec<u8>, Option<u8>)> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value is a c_int that outlives the call.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_RECVTOS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut data = vec![0u8; 65_536];
    let mut control = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty header; the pointers set below point into
    // `iov` and `control`, which live until the end of this function.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len() as _;
    // SAFETY: `msg` describes buffers we own for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    data.truncate(n as usize);
    let mut tos = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; IP_TOS data is one byte.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_TOS {
                tos = Some(*libc::CMSG_DATA(cmsg));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((data, tos))
}
