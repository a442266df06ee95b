//! Media anchored by an ng relay under Kamailio's rtpengine module, with RTP sent and checked
//! by the test's own sockets: the SDP each side receives names the relay, and RTP sent to the
//! relay arrives at the other side intact, from the relay port advertised to that side.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{
    free_port, free_udp_block, free_udp_port, require_tool, Daemon, LOCALHOST,
};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Kamailio with the rtpengine module pointed at `ng_port`, forwarding calls addressed to it
/// to the UAS at `uas_port`. Returns the daemon, its SIP port and its run directory guard.
fn kamailio(ng_port: u16, uas_port: u16) -> (Daemon, u16, tempfile::TempDir) {
    let kamailio = require_tool("kamailio", "kamailio");
    let run = tempfile::tempdir().unwrap();
    let sip_port = free_port(LOCALHOST);
    let template = include_str!("kamailio/kamailio.cfg");
    let cfg = template
        .replace("@SIP_PORT@", &sip_port.to_string())
        .replace("@NG_PORT@", &ng_port.to_string())
        .replace("@UAS_PORT@", &uas_port.to_string())
        .replace("@RUN_DIR@", &run.path().display().to_string());
    let cfg_path = run.path().join("kamailio.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = Command::new(kamailio);
    cmd.args(["-DD", "-E", "-m", "64", "-M", "8", "-f"])
        .arg(&cfg_path)
        .arg("-Y")
        .arg(run.path());
    let mut daemon = Daemon::spawn("kamailio", &mut cmd);
    let ctl = run.path().join("kamailio_ctl");
    daemon.wait_until(Duration::from_secs(15), |_| ctl.exists());
    (daemon, sip_port, run)
}

/// Debian's rtpengine in userspace mode on loopback; returns it and its ng port.
fn rtpengine() -> (Daemon, u16) {
    let rtpengine = require_tool("rtpengine", "rtpengine-daemon");
    let ng = free_udp_port(LOCALHOST);
    let ports = free_udp_block(LOCALHOST, 2);
    let mut cmd = Command::new(rtpengine);
    cmd.args([
        "--config-file=none",
        "--foreground",
        "--table=-1",
        "--log-stderr",
    ])
    .args(["--interface=127.0.0.1", "--delete-delay=0", "--log-level=6"])
    .arg(format!("--listen-ng=127.0.0.1:{ng}"))
    // A small range of its own, away from other tests' ports.
    .arg(format!(
        "--port-min={}",
        20000 + (ports % 20000) / 100 * 100
    ))
    .arg(format!(
        "--port-max={}",
        20000 + (ports % 20000) / 100 * 100 + 99
    ));
    let mut daemon = Daemon::spawn("rtpengine", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| {
        d.log().contains("Startup complete")
    });
    (daemon, ng)
}

/// The media address an SDP body names (`c=` and the first `m=audio`).
fn sdp_media(message: &str) -> SocketAddr {
    let ip = message
        .lines()
        .filter_map(|l| l.strip_prefix("c=IN IP4 "))
        .next_back()
        .expect("a c= line");
    let port = message
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next())
        .expect("an m=audio line");
    format!("{ip}:{port}").parse().unwrap()
}

/// An RTP packet: PCMU, the given sequence number and SSRC, 160 bytes of payload.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n((seq % 251) as u8, 160));
    p
}

/// Sends `count` packets from `from` to `relay`, and checks each arrives at `to`, unchanged,
/// from `expected_source`.
fn rtp_flows(
    from: &UdpSocket,
    relay: SocketAddr,
    to: &UdpSocket,
    expected_source: SocketAddr,
    ssrc: u32,
) {
    to.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        let packet = rtp(seq, ssrc);
        from.send_to(&packet, relay).unwrap();
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

/// A call through Kamailio anchored on the relay at `ng_port`: both SDPs name the relay, RTP
/// flows both ways through it. Returns the relay addresses seen by caller and callee.
fn call_with_media(ng_port: u16) -> (SocketAddr, SocketAddr) {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uas_port = free_udp_port(LOCALHOST);
    let (kamailio, sip_port, _run) = kamailio(ng_port, uas_port);
    let callee: SippProcess = Sipp::new(
        "uas",
        &scenario("uas_media.xml"),
        SocketAddr::new(LOCALHOST, uas_port),
    )
    .args([
        "-m",
        "1",
        "-key",
        "rtp_port",
        &callee_rtp.local_addr().unwrap().port().to_string(),
    ])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut caller = Sipp::new(
        "uac",
        &scenario("uac_media.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-d", "3000", "-timeout", "20s", "-timeout_error"])
    .args([
        "-key",
        "rtp_port",
        &caller_rtp.local_addr().unwrap().port().to_string(),
    ])
    .args([format!("127.0.0.1:{sip_port}")])
    .spawn();
    // The callee's INVITE names the relay's port for the callee; the caller's 200 the relay's
    // port for the caller.
    let invite = callee.wait_for_received("INVITE ", Duration::from_secs(10));
    let ok = caller.wait_for_received("SIP/2.0 200", Duration::from_secs(10));
    let relay_for_callee = sdp_media(&invite);
    let relay_for_caller = sdp_media(&ok);
    for (side, addr, own) in [
        ("callee", relay_for_callee, &callee_rtp),
        ("caller", relay_for_caller, &caller_rtp),
    ] {
        assert_ne!(
            addr,
            own.local_addr().unwrap(),
            "the {side} must be given the relay, not the other phone"
        );
    }
    // Latch both sides (delayed learning takes the first packets), then check both ways.
    rtp_flows(
        &caller_rtp,
        relay_for_caller,
        &callee_rtp,
        relay_for_callee,
        0x1111,
    );
    rtp_flows(
        &callee_rtp,
        relay_for_callee,
        &caller_rtp,
        relay_for_caller,
        0x2222,
    );
    caller.finish(Duration::from_secs(20)).assert_success();
    let mut callee = callee;
    callee.finish(Duration::from_secs(10)).assert_success();
    drop(kamailio);
    (relay_for_caller, relay_for_callee)
}

#[test]
fn kamailio_anchors_a_call_on_debian_rtpengine() {
    let (engine, ng) = rtpengine();
    let (a, b) = call_with_media(ng);
    assert_ne!(a.port(), b.port());
    drop(engine);
}
