//! Calls with media as the system tests place them: a SIPp caller and callee whose SDPs name
//! test sockets, through a proxy, with RTP checked both ways through the relay.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::media::{rtp_flows, sdp_media};
use crate::sipp::{Sipp, SippProcess};
use crate::{free_udp_port, LOCALHOST};

/// A SIPp caller whose SDP names `rtp` (a socket of the test), calling the UAS at
/// `127.0.0.1:uas_port` through the proxy at `127.0.0.1:sip_port`, holding `hold_ms`.
pub fn media_caller(
    scenarios: &Path,
    sip_port: u16,
    uas_port: u16,
    rtp: &UdpSocket,
    hold_ms: u64,
) -> SippProcess {
    Sipp::new(
        "uac",
        &scenarios.join("uac_media.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args([
        "-m",
        "1",
        "-d",
        &hold_ms.to_string(),
        "-timeout",
        "20s",
        "-timeout_error",
    ])
    .args([
        "-key",
        "rtp_port",
        &rtp.local_addr().unwrap().port().to_string(),
    ])
    .args(["-rsa", &format!("127.0.0.1:{sip_port}")])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn()
}

/// A call anchored on the relay at `ng_port` by the SIP proxy at `127.0.0.1:sip_port` (which
/// must send calls for the Request-URI `sip:service@127.0.0.1:UAS` to that UAS): both SDPs name
/// the relay, RTP flows both ways through it. Returns the relay addresses seen by caller and
/// callee.
pub fn call_through(scenarios: &Path, sip_port: u16, uas_port: u16) -> (SocketAddr, SocketAddr) {
    let caller_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee_rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let callee: SippProcess = Sipp::new(
        "uas",
        &scenarios.join("uas_media.xml"),
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
    let mut caller = media_caller(scenarios, sip_port, uas_port, &caller_rtp, 3000);
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
    (relay_for_caller, relay_for_callee)
}
