//! `[proxy]` parsing and its checks.

use crate::parse;
use crate::proxy::RelayEngine;

/// One bad value in each section: each is reported under its key, once, section by
/// section (`ProxyConfig::validate` runs one check per section).
#[test]
fn each_section_reports_its_own_errors() {
    let err = parse(
        "[[proxy.listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\nadvertise = \"a b\"\n\
         [proxy.timers]\nt1_ms = 0\n\
         [proxy.tcp]\nmax_connections = 0\n\
         [proxy.flood]\ndrop_user_agents = [\"\"]\n\
         [proxy.dialog]\nmax_age_s = 0\n\
         [proxy.relay_health]\nup_after = 0\n\
         [proxy.reanchor]\nper_second = 0\nfallback_set = \"nope\"\n\
         [proxy.overload]\nretry_after_s = 4000000000\n\
         [[proxy.relay_set]]\nname = \"m\"\nnodes = []\n\
         [proxy.media]\nset = \"other\"\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.listen[0].advertise",
            "proxy.timers.t1_ms",
            "proxy.tcp.max_connections",
            "proxy.flood.drop_user_agents[0]",
            "proxy.dialog.max_age_s",
            "proxy.relay_health.up_after",
            "proxy.reanchor.per_second",
            "proxy.reanchor.fallback_set",
            "proxy.overload.retry_after_s",
            "proxy.relay_set[0].nodes",
            "proxy.media.set",
        ]
    );
}

#[test]
fn default_listens_on_udp_and_tcp_loopback_5060() {
    let c = parse("").unwrap();
    assert_eq!(c.proxy.listen.len(), 2);
    assert_eq!(c.proxy.listen[0].address.to_string(), "127.0.0.1:5060");
    assert_eq!(c.proxy.timers.t1_ms, 500);
}

#[test]
fn full_rule_parses() {
    let c = parse(
        r#"
[[proxy.listen]]
transport = "udp"
address = "[::1]:5070"
advertise = "sip.example.com:5060"

[[proxy.route]]
name = "pstn"
match = { methods = ["INVITE"], user_prefix = "+1", source = ["192.0.2.0/24"] }
destinations = [
  { host = "192.0.2.10", priority = 1 },
  { host = "gw2.example.com", port = 5080, transport = "tcp", priority = 2, weight = 3 },
]
failover = { on = ["503", "timeout"], timeout_ms = 2000 }

[[proxy.route]]
name = "others"
forward = "request-uri"
"#,
    )
    .unwrap();
    let r = &c.proxy.route[0];
    assert_eq!(r.destinations[1].port, 5080);
    assert_eq!(r.destinations[1].weight, 3);
    assert_eq!(r.failover.timeout_ms, 2000);
    assert_eq!(r.matches.source[0].to_string(), "192.0.2.0/24");
    assert_eq!(
        c.proxy.route[1].forward,
        Some(crate::proxy::ForwardTarget::RequestUri)
    );
}

#[test]
fn flood_limit_parses_and_its_errors_name_the_key() {
    let c = parse(
        "[proxy.flood]\nrequests_per_second = 20\nburst = 50\nblock_s = 30\ntrusted = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    assert_eq!(c.proxy.flood.requests_per_second, 20);
    assert_eq!(c.proxy.flood.burst, 50);
    assert_eq!(c.proxy.flood.trusted[0].to_string(), "10.0.0.0/8");
    assert_eq!(parse("").unwrap().proxy.flood.requests_per_second, 0);
    let err =
        parse("[proxy.flood]\nrequests_per_second = 20\nburst = 5\nblock_s = 0\nmax_sources = 0\n")
            .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.flood.block_s",
            "proxy.flood.burst",
            "proxy.flood.max_sources"
        ]
    );
    let err = parse("[proxy.flood]\ndrop_user_agents = [\"sipvicious\", \" \"]\n").unwrap_err();
    assert_eq!(err.0[0].path, "proxy.flood.drop_user_agents[1]");
    let err = parse("[proxy.flood]\ntrusted = [\"10.0.0.0/33\"]\n").unwrap_err();
    assert!(err.to_string().contains("proxy.flood.trusted"), "{err}");
}

#[test]
fn every_semantic_error_is_reported_with_its_path() {
    let err = parse(
        r#"
[proxy.timers]
t1_ms = 600
t2_ms = 500
timer_c_ms = 1000

[[proxy.route]]
name = "a"
reply = { status = 99, reason = "x\ny" }
forward = "request-uri"
match = { methods = ["invite"] }
failover = { on = ["7xx"] }

[[proxy.route]]
name = "a"
destinations = [{ host = "bad host" }]
"#,
    )
    .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.timers.t2_ms",
            "proxy.timers.timer_c_ms",
            "proxy.route[0]",
            "proxy.route[0].match.methods[0]",
            "proxy.route[0].reply.status",
            "proxy.route[0].reply.reason",
            "proxy.route[0].failover.on[0]",
            "proxy.route[1].destinations[0].host",
            "proxy.route[1].name",
        ]
    );
}

#[test]
fn per_leg_media_options_are_checked() {
    let c = parse(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
         [proxy.media]\nset = \"main\"\ncallee = { type = \"RTP/SAVP\", ip = \"203.0.113.5\", iface = \"pub\" }\n",
    )
    .unwrap();
    assert_eq!(c.proxy.media.callee.transport.as_deref(), Some("RTP/SAVP"));
    let errors = parse(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
         [proxy.media]\nset = \"main\"\ncaller = { type = \"RTP/XYZ\", iface = \"a b\" }\n",
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        keys,
        vec!["proxy.media.caller.type", "proxy.media.caller.iface"]
    );
}

#[test]
fn media_policies_name_existing_relay_sets() {
    let c = parse(
        r#"
[[proxy.relay_set]]
name = "main"
nodes = [{ name = "a", ng = "127.0.0.1:2223" }, { name = "b", ng = "127.0.0.1:2224", weight = 2 }]

[proxy.media]
set = "main"
callee_flags = "replace-origin ICE=remove"
"#,
    )
    .unwrap();
    assert_eq!(c.proxy.relay_set[0].nodes[1].weight, 2);
    assert_eq!(c.proxy.media.set.as_deref(), Some("main"));
    let err = parse(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = []\n\n[proxy.media]\nset = \"other\"\n\n[[proxy.route]]\nname = \"r\"\nforward = \"request-uri\"\nmedia = { set = \"nope\" }\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.relay_set[0].nodes",
            "proxy.media.set",
            "proxy.route[0].media.set"
        ]
    );
}

#[test]
fn tcp_per_source_limit_and_message_deadline() {
    let c = parse("").unwrap();
    assert_eq!(c.proxy.tcp.max_connections_per_source, 64);
    assert_eq!(c.proxy.tcp.message_timeout_s, 10);
    let err =
        parse("[proxy.tcp]\nmax_connections_per_source = 0\nmessage_timeout_s = 0\n").unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "proxy.tcp.max_connections_per_source",
            "proxy.tcp.message_timeout_s"
        ]
    );
}

#[test]
fn bad_enum_value_names_the_key() {
    let err = parse("[[proxy.listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:5060\"\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("proxy.listen[0].transport: "), "{text}");
    assert!(text.contains("sctp"), "{text}");
}

#[test]
fn rtpproxy_nodes_and_their_leg_flags() {
    let c = parse(
        r#"
[[proxy.relay_set]]
name = "main"
nodes = [{ name = "rtpp1", rtpproxy = "udp:127.0.0.1:22222" }, { name = "a", ng = "127.0.0.1:2223" }]

[proxy.media]
set = "main"
callee = { rtpproxy_flags = "co" }
"#,
    )
    .unwrap();
    let nodes = &c.proxy.relay_set[0].nodes;
    assert_eq!(
        nodes[0].engine(),
        Some(RelayEngine::Rtpproxy("127.0.0.1:22222".parse().unwrap()))
    );
    assert_eq!(
        nodes[1].engine(),
        Some(RelayEngine::Ng("127.0.0.1:2223".parse().unwrap()))
    );
    assert_eq!(c.proxy.media.callee.rtpproxy_flags, "co");
    let errors = parse(
        r#"
[[proxy.relay_set]]
name = "main"
nodes = [
  { name = "both", ng = "127.0.0.1:2223", rtpproxy = "udp:127.0.0.1:22222" },
  { name = "none" },
  { name = "unix", rtpproxy = "unix:/var/run/rtpproxy.sock" },
  { name = "bad", rtpproxy = "udp:nowhere" },
]

[proxy.media]
set = "main"
caller = { rtpproxy_flags = "cq" }
"#,
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        keys,
        vec![
            "proxy.relay_set[0].nodes[0]",
            "proxy.relay_set[0].nodes[1]",
            "proxy.relay_set[0].nodes[2].rtpproxy",
            "proxy.relay_set[0].nodes[3].rtpproxy",
            "proxy.media.caller.rtpproxy_flags",
        ]
    );
    assert!(
        errors.to_string().contains("unknown RTPProxy flag 'q'"),
        "{errors}"
    );
}
