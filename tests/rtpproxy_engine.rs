//! The proxy's RTPProxy engine against a real RTPProxy (sippy's, from the PyPI package
//! `rtp.io`, in the `.venv` that `scripts/test` makes): SIPp calls with RTP both ways anchored
//! on an RTPProxy node — the SDP each side gets names the node's ports, RTP arrives through it
//! (its own statistics agree), and its sessions are gone after the BYE; and a new call goes to
//! the node reporting fewer sessions in its `I` statistics.

use std::path::PathBuf;
use std::time::Duration;

use anchorage_testkit::calls::call_through;
use anchorage_testkit::rtpproxy::{proxy_config, RtpProxy};
use anchorage_testkit::{free_udp_port, http, AnchorageProxy, LOCALHOST};

fn scenarios() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// `anchorage proxy` anchoring every call on the set `main` of the given RTPProxy nodes
/// (`rtpp1`, `rtpp2`, …), with OpenSIPS letters per leg.
fn proxy_on(nodes: &[&RtpProxy]) -> AnchorageProxy {
    AnchorageProxy::with_config(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &proxy_config(
            nodes,
            "caller = { rtpproxy_flags = \"o\" }\ncallee = { rtpproxy_flags = \"co\" }",
            // A machine loaded by other tests must not take the node down mid-call (3 s of
            // silence, not 0.6 s): this call is about anchoring, not failover.
            "\n[proxy.relay_health]\ndown_after = 30\n",
        ),
    )
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
    assert_eq!(node.stat("sessions created"), 1, "{:?}", node.command("I"));
    assert!(
        node.stat("packets transmitted") >= 40,
        "{:?}",
        node.command("I")
    );
    node.wait_empty(&|| proxy.daemon.log());
    assert!(
        proxy
            .daemon
            .log()
            .contains("relay rtpp1 (set main) at rtpproxy 127.0.0.1:"),
        "the proxy names the node's engine: {}",
        proxy.daemon.log()
    );
}

/// Opens `n` sessions on `node` as another controller would (`U` straight to it).
fn foreign_sessions(node: &RtpProxy, n: usize, prefix: &str) {
    for i in 0..n {
        let reply = node.command(&format!("U {prefix}-{i} 127.0.0.1 9 other{i};1"));
        assert!(
            reply.as_deref().is_some_and(|r| r.contains("127.0.0.1")),
            "{reply:?}"
        );
    }
}

#[test]
fn a_new_call_goes_to_the_rtpproxy_node_reporting_fewer_sessions() {
    let (busy, idle) = (RtpProxy::start(), RtpProxy::start());
    let proxy = proxy_on(&[&busy, &idle]);
    // rtpp1 carries three sessions of another controller; the proxy reads them from `Ib`
    // (once a second). With no load read, the tie would go to rtpp1, the first node.
    foreign_sessions(&busy, 3, "elsewhere");
    assert_eq!(busy.active_sessions(), Some(3));
    std::thread::sleep(Duration::from_secs(3));
    // What each node reported is shown: by the API and by `anchorage ctl relays`.
    let (_, relays) = http(proxy.api, "GET", "/v1/relays", "");
    let relays: serde_json::Value = serde_json::from_str(&relays).expect("JSON");
    let shown: Vec<(&str, &str, u64, u64)> = relays["relays"]
        .as_array()
        .expect("relays")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["engine"].as_str().unwrap_or(""),
                r["reported_sessions"].as_u64().unwrap_or(99),
                r["load"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [("rtpp1", "rtpproxy", 3, 3), ("rtpp2", "rtpproxy", 0, 0)],
        "{relays}"
    );
    let ctl = std::process::Command::new(env!("CARGO_BIN_EXE_anchorage"))
        .args(["ctl", "--api", &proxy.api.to_string(), "relays"])
        .output()
        .expect("anchorage ctl runs");
    let table = String::from_utf8_lossy(&ctl.stdout).to_string();
    let columns = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let at = |column: &str| {
        header
            .iter()
            .position(|h| *h == column)
            .unwrap_or_else(|| panic!("no {column} column in\n{table}"))
    };
    for (name, sessions) in [("rtpp1", "3"), ("rtpp2", "0")] {
        let row = columns(name);
        assert_eq!(row[at("CALLS")], "0", "{table}");
        assert_eq!(row[at("SESSIONS")], sessions, "{table}");
        assert_eq!(row[at("LOAD")], sessions, "{table}");
    }
    let (a, b) = call_through(&scenarios(), proxy.sip.port(), free_udp_port(LOCALHOST));
    assert!(
        idle.owns(a) && idle.owns(b),
        "the call must go to the idle node {:?}, got {a} and {b}",
        idle.ports
    );
    assert_eq!(idle.stat("sessions created"), 1);
    assert_eq!(busy.stat("sessions created"), 3, "only the foreign ones");
    idle.wait_empty(&|| proxy.daemon.log());
    // Now the other way round: rtpp2 holds five, rtpp1 still its three.
    foreign_sessions(&idle, 5, "elsewhere2");
    std::thread::sleep(Duration::from_secs(3));
    let (a, b) = call_through(&scenarios(), proxy.sip.port(), free_udp_port(LOCALHOST));
    assert!(
        busy.owns(a) && busy.owns(b),
        "the call must go to the node with fewer sessions {:?}, got {a} and {b}",
        busy.ports
    );
    assert_eq!(busy.stat("sessions created"), 4);
}
