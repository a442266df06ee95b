//! The proxy's RTPProxy engine against a real RTPProxy (sippy's, from the PyPI package
//! `rtp.io`, in the `.venv` that `scripts/test` makes): SIPp calls with RTP both ways anchored
//! on an RTPProxy node — the SDP each side gets names the node's ports, RTP arrives through it
//! (its own statistics agree), and its sessions are gone after the BYE.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::calls::call_through;
use anchorage_testkit::rtpproxy::RtpProxy;
use anchorage_testkit::{free_port, free_udp_port, Daemon, LOCALHOST};

fn scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// `anchorage proxy` anchoring every call on the set `main` of the given RTPProxy nodes
/// (`rtpp1`, `rtpp2`, …) with `extra` configuration. Returns it, its SIP port and its config.
fn proxy_on(nodes: &[&RtpProxy], extra: &str) -> (Daemon, u16, tempfile::NamedTempFile) {
    let port = free_port(LOCALHOST);
    let nodes: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  {{ name = \"rtpp{}\", rtpproxy = \"udp:127.0.0.1:{}\" }},\n",
                i + 1,
                n.control
            )
        })
        .collect();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut config,
        format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n{}]\n\n\
             [proxy.media]\nset = \"main\"\ncaller = {{ rtpproxy_flags = \"o\" }}\n\
             callee = {{ rtpproxy_flags = \"co\" }}\n{extra}",
            nodes.concat()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["proxy", "--listen", &format!("udp:127.0.0.1:{port}"), "-c"])
        .arg(config.path());
    let mut daemon = Daemon::spawn("anchorage-proxy", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("SIP udp on"));
    (daemon, port, config)
}

/// Waits until `node` holds no session.
fn sessions_gone(node: &RtpProxy, proxy: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while node.active_sessions() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "sessions left on RTPProxy: {:?}\n{}",
            node.command("I"),
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A number from RTPProxy's `I` statistics.
fn stat(node: &RtpProxy, name: &str) -> u64 {
    node.command("I")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_call_with_rtp_both_ways_is_anchored_on_rtpproxy_and_deleted_on_bye() {
    let node = RtpProxy::start();
    let (proxy, sip_port, _config) = proxy_on(&[&node], "");
    let (for_caller, for_callee) = call_through(&scenarios(), sip_port, free_udp_port(LOCALHOST));
    // Each side was given one of RTPProxy's own ports (two ports of one session).
    for (side, addr) in [("caller", for_caller), ("callee", for_callee)] {
        assert_eq!(addr.ip(), LOCALHOST, "{side}");
        assert!(
            node.ports.contains(&addr.port()),
            "the {side} must be given an RTPProxy port ({:?}), got {addr}",
            node.ports
        );
    }
    assert_ne!(for_caller, for_callee);
    // RTPProxy's own statistics: one session made, the 40 packets relayed, and the BYE
    // deleted it.
    assert_eq!(
        stat(&node, "sessions created"),
        1,
        "{:?}",
        node.command("I")
    );
    assert!(
        stat(&node, "packets transmitted") >= 40,
        "{:?}",
        node.command("I")
    );
    sessions_gone(&node, &proxy);
    assert!(
        proxy
            .log()
            .contains("relay rtpp1 (set main) at rtpproxy 127.0.0.1:"),
        "the proxy names the node's engine: {}",
        proxy.log()
    );
}
