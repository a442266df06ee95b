//! The proxy's RTPProxy engine against a real RTPProxy (sippy's, from the PyPI package
//! `rtp.io`, in the `.venv` that `scripts/test` makes): SIPp calls with RTP both ways anchored
//! on an RTPProxy node — the SDP each side gets names the node's ports, RTP arrives through it
//! (its own statistics agree), and its sessions are gone after the BYE.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anchorage_testkit::calls::call_through;
use anchorage_testkit::rtpproxy::RtpProxy;
use anchorage_testkit::{free_udp_port, AnchorageProxy, Daemon, LOCALHOST};

fn scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// `anchorage proxy` anchoring every call on the set `main` of the given RTPProxy nodes
/// (`rtpp1`, `rtpp2`, …), with OpenSIPS letters per leg.
fn proxy_on(nodes: &[&RtpProxy]) -> AnchorageProxy {
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
    AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n{}]\n\n\
             [proxy.media]\nset = \"main\"\ncaller = {{ rtpproxy_flags = \"o\" }}\n\
             callee = {{ rtpproxy_flags = \"co\" }}\n",
            nodes.concat()
        ),
    )
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
    let proxy = proxy_on(&[&node]);
    let (for_caller, for_callee) =
        call_through(&scenarios(), proxy.sip.port(), free_udp_port(LOCALHOST));
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
    sessions_gone(&node, &proxy.daemon);
    assert!(
        proxy
            .daemon
            .log()
            .contains("relay rtpp1 (set main) at rtpproxy 127.0.0.1:"),
        "the proxy names the node's engine: {}",
        proxy.daemon.log()
    );
}
