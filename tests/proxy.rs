//! `anchorage proxy` against real user agents (SIPp): what each side receives, hop by hop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anchorage_testkit::sipp::{Sipp, SippRun};
use anchorage_testkit::{free_port, free_udp_port, Daemon, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(LOCALHOST, port)
}

/// A running proxy on UDP and TCP `port`, with an optional configuration file.
struct Proxy {
    daemon: Daemon,
    port: u16,
    _config: Option<tempfile::NamedTempFile>,
}

impl Proxy {
    fn start(config: Option<&str>) -> Proxy {
        let port = free_port(LOCALHOST);
        Self::start_on(port, config)
    }

    fn start_on(port: u16, config: Option<&str>) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
        cmd.arg("proxy")
            .args(["--listen", &format!("udp:127.0.0.1:{port}")])
            .args(["--listen", &format!("tcp:127.0.0.1:{port}")])
            .env("RUST_LOG", "info");
        let file = config.map(|text| {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
            cmd.arg("-c").arg(f.path());
            f
        });
        let mut daemon = Daemon::spawn("anchorage-proxy", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("SIP tcp on"));
        Proxy {
            daemon,
            port,
            _config: file,
        }
    }

    fn sip(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A UAS on a free port running `scenario` for `calls` calls.
fn uas(scenario_name: &str, calls: u32) -> (anchorage_testkit::sipp::SippProcess, u16) {
    let port = free_udp_port(LOCALHOST);
    let p = Sipp::new("uas", &scenario(scenario_name), addr(port))
        .args(["-m", &calls.to_string()])
        .spawn();
    // SIPp binds before it reads the scenario's first message; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    (p, port)
}

/// Runs a UAC scenario that targets `sip:service@127.0.0.1:uas_port` through the proxy.
fn uac(scenario_name: &str, proxy: &Proxy, uas_port: u16, extra: &[&str]) -> SippRun {
    let port = free_udp_port(LOCALHOST);
    Sipp::new("uac", &scenario(scenario_name), addr(port))
        .args([
            "-rsa",
            &proxy.sip(),
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .args(extra)
        .run(&format!("127.0.0.1:{uas_port}"), Duration::from_secs(40))
}

/// The values of header `name` in `message`, in order.
fn header_values<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// Whether `branch` is what the proxy generates: z9hG4bK, 16 hex, '.', 16 hex.
fn is_proxy_branch(branch: &str) -> bool {
    let Some(rest) = branch.strip_prefix("z9hG4bK") else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 2
        && parts
            .iter()
            .all(|p| p.len() == 16 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn basic_call_is_record_routed_and_each_hop_sees_the_right_vias() {
    let proxy = Proxy::start(None);
    let (mut callee, uas_port) = uas("uas.xml", 1);
    let caller = uac("uac.xml", &proxy, uas_port, &[]);
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();

    let invite = callee
        .received_starting("INVITE ")
        .expect("INVITE reached the UAS");
    let p = proxy.port;
    assert_eq!(
        header_values(invite, "Record-Route"),
        [format!("<sip:127.0.0.1:{p};lr>")]
    );
    assert_eq!(header_values(invite, "Max-Forwards"), ["69"]);
    let vias = header_values(invite, "Via");
    assert_eq!(vias.len(), 2, "{invite}");
    let (top, params) = vias[0].split_once(';').unwrap();
    assert_eq!(top, format!("SIP/2.0/UDP 127.0.0.1:{p}"));
    let branch = params
        .split(';')
        .find_map(|kv| kv.strip_prefix("branch="))
        .unwrap();
    assert!(is_proxy_branch(branch), "{branch}");
    assert!(params.ends_with(";nid=node1"), "{params}");
    // The caller asked for rport: the proxy filled it with the source port.
    let uac_via = caller.sent[0]
        .lines()
        .find(|l| l.starts_with("Via:"))
        .unwrap();
    let uac_port = uac_via
        .split(':')
        .nth(2)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(
        vias[1].ends_with(&format!(";rport={uac_port}")),
        "{} / {uac_port}",
        vias[1]
    );

    // The caller saw the proxy's Record-Route and sent the ACK and BYE through it; the proxy
    // removed its own Route entry before forwarding them.
    let ok = caller.received_starting("SIP/2.0 200 OK").unwrap();
    assert_eq!(
        header_values(ok, "Record-Route"),
        [format!("<sip:127.0.0.1:{p};lr>")]
    );
    assert_eq!(
        header_values(ok, "Via").len(),
        1,
        "the proxy's Via is gone: {ok}"
    );
    for method in ["ACK ", "BYE "] {
        let m = callee.received_starting(method).unwrap();
        assert!(header_values(m, "Route").is_empty(), "{m}");
        assert_eq!(header_values(m, "Via").len(), 2, "{m}");
        assert!(
            m.starts_with(&format!(
                "{method}sip:callee@127.0.0.1:{uas_port};transport=UDP SIP/2.0"
            )),
            "{m}"
        );
    }
    drop(proxy.daemon);
}

#[test]
fn cancel_while_ringing_is_answered_hop_by_hop() {
    let proxy = Proxy::start(None);
    let (mut callee, uas_port) = uas("uas_cancel.xml", 1);
    let caller = uac("uac_cancel.xml", &proxy, uas_port, &[]);
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    // The CANCEL the UAS got names the INVITE's transaction: the same proxy branch.
    let branch_of = |m: &str| {
        header_values(m, "Via")[0]
            .split(';')
            .find_map(|p| p.strip_prefix("branch="))
            .unwrap()
            .to_string()
    };
    let invite = callee.received_starting("INVITE ").unwrap();
    let cancel = callee.received_starting("CANCEL ").unwrap();
    let ack = callee.received_starting("ACK ").unwrap();
    assert_eq!(branch_of(cancel), branch_of(invite));
    assert_eq!(
        branch_of(ack),
        branch_of(invite),
        "the proxy ACKs the 487 itself"
    );
    assert_eq!(header_values(ack, "Via").len(), 1, "hop-by-hop ACK: {ack}");
    assert_eq!(header_values(cancel, "CSeq"), ["1 CANCEL"]);
}

#[test]
fn busy_callee_gets_its_486_relayed_and_acked_by_the_proxy() {
    let proxy = Proxy::start(None);
    let (mut callee, uas_port) = uas("uas_486.xml", 1);
    let caller = uac("uac_busy.xml", &proxy, uas_port, &[]);
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let busy = caller.received_starting("SIP/2.0 486").unwrap();
    assert_eq!(header_values(busy, "Via").len(), 1);
    let ack = callee.received_starting("ACK ").unwrap();
    assert_eq!(
        header_values(ack, "Via").len(),
        1,
        "the proxy's own ACK: {ack}"
    );
}

fn failover_config(first: u16, second: u16) -> String {
    format!(
        r#"
[[proxy.route]]
name = "pbx"
match = {{ methods = ["INVITE"] }}
destinations = [
  {{ host = "127.0.0.1", port = {first}, priority = 1 }},
  {{ host = "127.0.0.1", port = {second}, priority = 2 }},
]
failover = {{ on = ["timeout", "503"], timeout_ms = 1000 }}
"#
    )
}

#[test]
fn serial_failover_when_the_first_destination_answers_503() {
    let (mut refusing, refusing_port) = uas("uas_503.xml", 1);
    let (mut callee, uas_port) = uas("uas.xml", 1);
    let proxy = Proxy::start(Some(&failover_config(refusing_port, uas_port)));
    // The Request-URI names a host the rule overrides.
    let caller = uac("uac.xml", &proxy, 9, &[]);
    caller.assert_success();
    refusing.finish(Duration::from_secs(10)).assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    assert!(callee.received_starting("INVITE ").is_some());
    assert!(
        caller.received_starting("SIP/2.0 503").is_none(),
        "the 503 is not relayed when a destination is left"
    );
}

#[test]
fn serial_failover_when_the_first_destination_does_not_answer() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (mut callee, uas_port) = uas("uas.xml", 1);
    let proxy = Proxy::start(Some(&failover_config(silent_port, uas_port)));
    let started = std::time::Instant::now();
    let caller = uac("uac.xml", &proxy, 9, &[]);
    caller.assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    // The silent destination got the INVITE (and its retransmission), then the proxy moved on
    // after the configured 1 s.
    silent.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = silent
        .recv_from(&mut buf)
        .expect("the first destination was tried");
    assert!(buf[..n].starts_with(b"INVITE sip:"));
    assert!(started.elapsed() >= Duration::from_millis(1000));
}

#[test]
fn reinvites_from_both_sides_and_bye_from_the_callee() {
    let proxy = Proxy::start(None);
    let (mut callee, uas_port) = uas("uas_reinvite.xml", 1);
    let caller = uac(
        "uac_reinvite.xml",
        &proxy,
        uas_port,
        &["-key", "contact_host", "127.0.0.1"],
    );
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    // The callee's re-INVITE reached the caller through the proxy, without our Route entry.
    let reinvite = caller.received_starting("INVITE ").unwrap();
    assert!(header_values(reinvite, "Route").is_empty(), "{reinvite}");
    assert_eq!(header_values(reinvite, "Via").len(), 2);
    let bye = caller.received_starting("BYE ").unwrap();
    assert_eq!(header_values(bye, "CSeq"), ["2 BYE"]);
}

#[test]
fn a_caller_behind_nat_gets_the_callees_requests_at_its_real_address() {
    // The caller writes a private address in its Contact, as a phone behind NAT does, but its
    // packets come from 127.0.0.1: the callee's re-INVITE and BYE (sent to that Contact) must
    // reach it there, with the Request-URI as the callee wrote it.
    let proxy = Proxy::start(None);
    let (mut callee, uas_port) = uas("uas_reinvite.xml", 1);
    let caller = uac(
        "uac_reinvite.xml",
        &proxy,
        uas_port,
        &["-key", "contact_host", "10.0.0.5"],
    );
    caller.assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    let reinvite = caller.received_starting("INVITE ").unwrap();
    assert!(
        reinvite.starts_with("INVITE sip:caller@10.0.0.5:"),
        "{reinvite}"
    );
    let bye = caller.received_starting("BYE ").unwrap();
    assert!(bye.starts_with("BYE sip:caller@10.0.0.5:"), "{bye}");
}

/// A raw SIP endpoint on a UDP socket, for exchanges SIPp cannot script (talking to two
/// proxies in turn).
struct RawUa {
    socket: std::net::UdpSocket,
}

impl RawUa {
    fn new() -> RawUa {
        RawUa::on("127.0.0.1")
    }

    /// A UA on another loopback address (Linux answers on all of 127/8): another source IP.
    fn on(ip: &str) -> RawUa {
        let socket = std::net::UdpSocket::bind((ip, 0)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        RawUa { socket }
    }

    /// Sends `n` OPTIONS to the proxy itself, each its own transaction, and counts the 200s
    /// that come back within `wait`.
    fn options_answered(&self, proxy: u16, n: usize, wait: Duration) -> usize {
        let local = self.socket.local_addr().unwrap();
        for i in 0..n {
            self.send(
                proxy,
                &format!(
                    "OPTIONS sip:127.0.0.1:{proxy} SIP/2.0\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-o{}-{i}\n\
                     Max-Forwards: 70\nFrom: <sip:mon@example.com>;tag=m\nTo: <sip:127.0.0.1:{proxy}>\n\
                     Call-ID: opt-{}-{i}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
                    local.port(),
                    local.port()
                ),
            );
        }
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 65535];
        let mut answered = 0;
        while let Ok((len, _)) = self.socket.recv_from(&mut buf) {
            answered += usize::from(buf[..len].starts_with(b"SIP/2.0 200 "));
        }
        self.socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        answered
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn send(&self, to: u16, text: &str) {
        let text = text.replace('\n', "\r\n");
        self.socket.send_to(text.as_bytes(), addr(to)).unwrap();
    }

    /// The next message whose start line begins with `start` (others are skipped).
    fn expect(&self, start: &str) -> String {
        let mut buf = [0u8; 65535];
        loop {
            let (n, _) = self
                .socket
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {start:?}: {e}"));
            let text = String::from_utf8_lossy(&buf[..n]).replace("\r\n", "\n");
            if text.starts_with(start) {
                return text;
            }
        }
    }
}

#[test]
fn a_source_over_the_request_rate_is_blocked_while_others_are_served() {
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let mut proxy = Proxy::start(Some(&format!(
        "[api]\nlisten = \"{api}\"\n\n[proxy.flood]\nrequests_per_second = 10\nburst = 10\nblock_s = 6\ntrusted = [\"127.0.0.3/32\"]\n",
    )));
    proxy
        .daemon
        .wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let p = proxy.port;
    let wait = Duration::from_millis(400);
    // A burst of 30 at once: the first 10 are answered, then the source is blocked.
    let flooder = RawUa::on("127.0.0.2");
    let answered = flooder.options_answered(p, 30, wait);
    assert!((10..=11).contains(&answered), "{answered} answered");
    assert_eq!(flooder.options_answered(p, 3, wait), 0, "blocked");
    // Meanwhile another source is served, and a trusted one is never limited.
    assert_eq!(RawUa::on("127.0.0.1").options_answered(p, 5, wait), 5);
    assert_eq!(RawUa::on("127.0.0.3").options_answered(p, 30, wait), 30);
    let log = proxy.daemon.log();
    assert!(
        log.contains("request rate limit exceeded") && log.contains("127.0.0.2"),
        "{log}"
    );
    assert!(
        !log.contains("127.0.0.3"),
        "the trusted source was never blocked:\n{log}"
    );
    let (status, metrics) = anchorage_testkit::http(api, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("anchorage_sip_flood_blocks_total"), 1);
    assert_eq!(
        value("anchorage_sip_flood_dropped_total"),
        (30 - answered as u64) + 3
    );
    // The operator sees the block and ends it (`anchorage ctl blocked` / `unblock`).
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_anchorage"))
            .args(["ctl", "--api", &api.to_string()])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.success(),
            stdout + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, table) = ctl(&["blocked"]);
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("127.0.0.2"))
        .unwrap_or_else(|| panic!("{table}"));
    let left: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(left > 0.0 && left <= 6.0, "{row}");
    assert!(table.contains("1 source(s) blocked"), "{table}");
    let (ok, out) = ctl(&["unblock", "127.0.0.2"]);
    assert!(ok && out.contains("127.0.0.2: no longer blocked"), "{out}");
    assert_eq!(flooder.options_answered(p, 5, wait), 5);
    // Unblocking what is not blocked, or something that is not an address: JSON errors.
    let (status, body) = anchorage_testkit::http(api, "POST", "/v1/flood/127.0.0.2/unblock", "");
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"error":"127.0.0.2 is not blocked"}"#)
    );
    let (status, body) = anchorage_testkit::http(api, "POST", "/v1/flood/nonsense/unblock", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("is not an IP address"), "{body}");
    let (ok, out) = ctl(&["unblock", "127.0.0.9"]);
    assert!(!ok && out.contains("not blocked"), "{out}");
    // A block also ends by itself after block_s.
    let again = flooder.options_answered(p, 30, wait);
    assert!(
        (1..=11).contains(&again),
        "{again} answered: its bucket was partly used"
    );
    assert_eq!(flooder.options_answered(p, 3, wait), 0, "blocked again");
    std::thread::sleep(Duration::from_millis(6100));
    assert_eq!(flooder.options_answered(p, 5, wait), 5);
}

#[test]
fn the_api_token_guards_every_state_change_and_nothing_else() {
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let mut proxy = Proxy::start(Some(&format!(
        "[api]\nlisten = \"{api}\"\ntoken = \"s3cret\"\n"
    )));
    // The API starts after the SIP listeners.
    proxy
        .daemon
        .wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let refused = r#"{"error":"this endpoint needs the API token: Authorization: Bearer <token>"}"#;
    for path in [
        "/v1/reanchor",
        "/v1/calls/c1/reanchor",
        "/v1/relays/r1/drain",
        "/v1/relays/r1/undrain",
        "/v1/rebalance",
        "/v1/flood/192.0.2.1/unblock",
    ] {
        let none = anchorage_testkit::http(api, "POST", path, "");
        assert_eq!((none.0, none.1.as_str()), (401, refused), "{path}");
        let wrong =
            anchorage_testkit::http_with(api, "POST", path, "", &["Authorization: Bearer nope"]);
        assert_eq!(wrong.0, 401, "{path}");
        // With the token the request goes through to what it asks: a job for no calls, or
        // what does not exist here.
        let right =
            anchorage_testkit::http_with(api, "POST", path, "", &["Authorization: Bearer s3cret"]);
        assert!(matches!(right.0, 200 | 400 | 404), "{path}: {right:?}");
        assert!(right.1.starts_with('{'), "{path}: {right:?}");
    }
    for path in [
        "/v1/calls",
        "/v1/relays",
        "/v1/jobs",
        "/v1/flood",
        "/metrics",
    ] {
        assert_eq!(
            anchorage_testkit::http(api, "GET", path, "").0,
            200,
            "{path}"
        );
    }
    // ctl takes the token from --token or ANCHORAGE_API_TOKEN.
    let ctl = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
        cmd.args(["ctl", "--api", &api.to_string(), "unblock", "192.0.2.1"]);
        cmd.env_remove("ANCHORAGE_API_TOKEN");
        if let Some(t) = token {
            cmd.env("ANCHORAGE_API_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };
    assert!(ctl(None).contains("needs the API token"), "{}", ctl(None));
    assert!(
        ctl(Some("s3cret")).contains("192.0.2.1 is not blocked"),
        "{}",
        ctl(Some("s3cret"))
    );
    drop(proxy);
}

fn branch_of(m: &str) -> String {
    header_values(m, "Via")[0]
        .split(';')
        .find_map(|p| p.strip_prefix("branch="))
        .unwrap()
        .to_string()
}

fn invite_text(ua: &RawUa, uas_port: u16, branch: &str) -> String {
    let p = ua.port();
    format!(
        "INVITE sip:bob@127.0.0.1:{uas_port} SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:{p};branch={branch};rport\n\
From: <sip:alice@127.0.0.1:{p}>;tag=alice1\n\
To: <sip:bob@127.0.0.1:{uas_port}>\n\
Call-ID: failover-{branch}\n\
CSeq: 1 INVITE\n\
Contact: <sip:alice@127.0.0.1:{p}>\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n"
    )
}

#[test]
fn cancel_reaches_the_callee_after_the_proxy_that_forwarded_the_invite_died() {
    let (mut callee, uas_port) = uas("uas_cancel.xml", 1);
    let node_a = Proxy::start(None);
    let port = node_a.port;
    let alice = RawUa::new();
    alice.send(port, &invite_text(&alice, uas_port, "z9hG4bK-fo1"));
    alice.expect("SIP/2.0 180");
    // Node A dies; node B takes over its address (the VIP moves) knowing nothing.
    drop(node_a);
    let node_b = Proxy::start_on(port, None);
    let a = alice.port();
    alice.send(
        port,
        &format!(
            "CANCEL sip:bob@127.0.0.1:{uas_port} SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:{a};branch=z9hG4bK-fo1;rport\n\
From: <sip:alice@127.0.0.1:{a}>;tag=alice1\n\
To: <sip:bob@127.0.0.1:{uas_port}>\n\
Call-ID: failover-z9hG4bK-fo1\n\
CSeq: 1 CANCEL\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n"
        ),
    );
    // The callee matched the CANCEL to its INVITE (same branch from both nodes) and answered;
    // node B relayed both responses statelessly by Via.
    let ok = alice.expect("SIP/2.0 200");
    assert_eq!(header_values(&ok, "CSeq"), ["1 CANCEL"]);
    let terminated = alice.expect("SIP/2.0 487");
    alice.send(
        port,
        &format!(
            "ACK sip:bob@127.0.0.1:{uas_port} SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:{a};branch=z9hG4bK-fo1;rport\n\
From: <sip:alice@127.0.0.1:{a}>;tag=alice1\n\
To: {}\n\
Call-ID: failover-z9hG4bK-fo1\n\
CSeq: 1 ACK\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n",
            header_values(&terminated, "To")[0]
        ),
    );
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let invite = callee.received_starting("INVITE ").unwrap();
    let cancel = callee.received_starting("CANCEL ").unwrap();
    let ack = callee.received_starting("ACK ").unwrap();
    assert_eq!(branch_of(cancel), branch_of(invite));
    assert_eq!(branch_of(ack), branch_of(invite));
    drop(node_b);
}

#[test]
fn ack_for_a_failure_reaches_the_callee_after_the_proxy_died() {
    let bob = RawUa::new();
    let node_a = Proxy::start(None);
    let port = node_a.port;
    let alice = RawUa::new();
    alice.send(port, &invite_text(&alice, bob.port(), "z9hG4bK-fo2"));
    let invite = bob.expect("INVITE ");
    // Bob refuses; node A relays the 486 and ACKs it itself, then dies before Alice's ACK.
    let vias: Vec<String> = header_values(&invite, "Via")
        .iter()
        .map(|v| format!("Via: {v}\n"))
        .collect();
    bob.send(
        port,
        &format!(
            "SIP/2.0 486 Busy Here\n{}From: {}\nTo: {};tag=bob1\nCall-ID: {}\nCSeq: 1 INVITE\nContent-Length: 0\n\n",
            vias.concat(),
            header_values(&invite, "From")[0],
            header_values(&invite, "To")[0],
            header_values(&invite, "Call-ID")[0],
        ),
    );
    let busy = alice.expect("SIP/2.0 486");
    let hop_ack = bob.expect("ACK ");
    assert_eq!(branch_of(&hop_ack), branch_of(&invite));
    drop(node_a);
    let node_b = Proxy::start_on(port, None);
    let a = alice.port();
    alice.send(
        port,
        &format!(
            "ACK sip:bob@127.0.0.1:{} SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:{a};branch=z9hG4bK-fo2;rport\n\
From: <sip:alice@127.0.0.1:{a}>;tag=alice1\n\
To: {}\n\
Call-ID: failover-z9hG4bK-fo2\n\
CSeq: 1 ACK\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n",
            bob.port(),
            header_values(&busy, "To")[0]
        ),
    );
    let ack = bob.expect("ACK ");
    assert_eq!(
        branch_of(&ack),
        branch_of(&invite),
        "node B computed the INVITE's branch, so Bob matches the ACK to his transaction"
    );
    assert_eq!(
        header_values(&ack, "Via").len(),
        2,
        "forwarded, not generated: {ack}"
    );
    drop(node_b);
}

/// A request from `ua` with `lines` as its headers after the request line (Via added first).
fn request(ua: &RawUa, start: &str, lines: &str) -> String {
    format!(
        "{start}\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bK-{}\n{lines}\n",
        ua.port(),
        std::process::id()
    )
}

#[test]
fn malformed_and_refused_requests_get_the_rfc_answer_and_calls_still_work() {
    let proxy = Proxy::start(None);
    let p = proxy.port;
    let ua = RawUa::new();
    let common = "From: <sip:a@example.com>;tag=1\nTo: <sip:b@example.com>\nCall-ID: bad-1\n";
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            request(
                &ua,
                "OPTIONS sip:b@127.0.0.1:9 SIP/2.0",
                &format!("{common}CSeq: 1 INVITE\nContent-Length: 0\n"),
            ),
            "SIP/2.0 400 CSeq method INVITE does not match request method OPTIONS",
            vec![],
        ),
        (
            request(
                &ua,
                "OPTIONS sip:b@127.0.0.1:9 SIP/2.0",
                &format!("{common}CSeq: 1 OPTIONS\nMax-Forwards: 0\nContent-Length: 0\n"),
            ),
            "SIP/2.0 483 Too Many Hops",
            vec![],
        ),
        (
            request(
                &ua,
                "OPTIONS sip:b@127.0.0.1:9 SIP/2.0",
                &format!("{common}CSeq: 1 OPTIONS\nProxy-Require: foo, bar\nContent-Length: 0\n"),
            ),
            "SIP/2.0 420 Bad Extension",
            vec!["Unsupported: foo, bar"],
        ),
        (
            request(
                &ua,
                "OPTIONS sip:b@127.0.0.1:9 SIP/3.0",
                &format!("{common}CSeq: 1 OPTIONS\nContent-Length: 0\n"),
            ),
            "SIP/2.0 505",
            vec![],
        ),
        (
            request(
                &ua,
                "OPTIONS im:b@example.com SIP/2.0",
                &format!("{common}CSeq: 1 OPTIONS\nContent-Length: 0\n"),
            ),
            "SIP/2.0 416 Unsupported URI Scheme",
            vec![],
        ),
        (
            request(
                &ua,
                "OPTIONS sip:b@127.0.0.1:9 SIP/2.0",
                &format!("{common}CSeq: 1 OPTIONS\nContent-Length: 400\n"),
            ),
            "SIP/2.0 400 Content-Length 400",
            vec![],
        ),
        (
            // An OPTIONS addressed to the proxy itself (a trunk's or a monitor's keep-alive)
            // is answered by the proxy rather than sent back to itself as a loop.
            request(
                &ua,
                &format!("OPTIONS sip:127.0.0.1:{p} SIP/2.0"),
                &format!("{common}CSeq: 1 OPTIONS\nContent-Length: 0\n"),
            ),
            "SIP/2.0 200 OK",
            vec![
                "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY, SUBSCRIBE, MESSAGE",
                "Accept: application/sdp",
            ],
        ),
        (
            // Any other request for a user at the proxy's own address: nobody is here.
            request(
                &ua,
                &format!("MESSAGE sip:b@127.0.0.1:{p} SIP/2.0"),
                &format!("{common}CSeq: 1 MESSAGE\nContent-Length: 0\n"),
            ),
            "SIP/2.0 404 Not Found",
            vec![],
        ),
    ];
    for (text, expected_start, expected_headers) in &cases {
        ua.send(p, text);
        let reply = ua.expect("SIP/2.0 ");
        assert!(
            reply.starts_with(expected_start),
            "sent:\n{text}\ngot:\n{reply}"
        );
        for h in expected_headers {
            assert!(reply.lines().any(|l| l == *h), "{h} missing in:\n{reply}");
        }
        assert!(reply.contains("\nCall-ID: bad-1\n"), "{reply}");
    }
    // Garbage, a request cut short, and one with no Call-ID cannot be answered: dropped.
    for junk in [
        "hello world\n\n".to_string(),
        "INVITE sip:b@127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\nFrom: <sip:a".to_string(),
        request(&ua, "OPTIONS sip:b@127.0.0.1:9 SIP/2.0", "From: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCSeq: 1 OPTIONS\nContent-Length: 0\n"),
    ] {
        ua.send(p, &junk);
    }
    ua.socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        ua.socket.recv_from(&mut buf).is_err(),
        "nothing answers junk"
    );

    // The proxy still serves calls.
    let (mut callee, uas_port) = uas("uas.xml", 1);
    uac("uac.xml", &proxy, uas_port, &[]).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
}

/// A proxy whose one rule sends everything over TCP to a SIPp callee listening on TCP.
fn tcp_callee_behind_proxy() -> (Proxy, anchorage_testkit::sipp::SippProcess, u16) {
    let port = free_port(LOCALHOST);
    let proxy = Proxy::start(Some(&format!(
        "[[proxy.route]]\nname = \"tcp\"\ndestinations = [{{ host = \"127.0.0.1\", port = {port}, transport = \"tcp\" }}]\n"
    )));
    let callee = Sipp::new("uas", &scenario("uas.xml"), addr(port))
        .args(["-m", "1", "-t", "t1"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    (proxy, callee, port)
}

#[test]
fn a_call_over_tcp() {
    let (proxy, mut callee, port) = tcp_callee_behind_proxy();
    let caller_port = free_port(LOCALHOST);
    let caller = Sipp::new("uac", &scenario("uac.xml"), addr(caller_port))
        .args([
            "-rsa",
            &proxy.sip(),
            "-m",
            "1",
            "-t",
            "t1",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .run(&format!("127.0.0.1:{port}"), Duration::from_secs(40));
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let invite = callee.received_starting("INVITE ").unwrap();
    let p = proxy.port;
    assert_eq!(
        header_values(invite, "Record-Route"),
        [format!("<sip:127.0.0.1:{p};transport=tcp;lr>")]
    );
    assert!(header_values(invite, "Via")[0].starts_with(&format!("SIP/2.0/TCP 127.0.0.1:{p};")));
}

#[test]
fn two_thousand_calls_at_200_per_second_without_a_failure() {
    let proxy = Proxy::start(None);
    let uas_port = free_udp_port(LOCALHOST);
    let mut callee = Sipp::new("uas", &scenario("uas.xml"), addr(uas_port))
        .args(["-m", "2000"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let port = free_udp_port(LOCALHOST);
    let caller = Sipp::new("uac", &scenario("uac.xml"), addr(port))
        .args([
            "-rsa",
            &proxy.sip(),
            "-m",
            "2000",
            "-r",
            "200",
            "-rp",
            "1000",
        ])
        .args(["-timeout", "60s", "-timeout_error", "-l", "1000"])
        .run(&format!("127.0.0.1:{uas_port}"), Duration::from_secs(90));
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(20));
    callee.assert_success();
    let calls: std::collections::HashSet<&str> = callee
        .received
        .iter()
        .filter(|m| m.starts_with("INVITE "))
        .filter_map(|m| header_values(m, "Call-ID").first().copied())
        .collect();
    assert_eq!(calls.len(), 2000, "every call reached the callee");
    let byes_answered = caller
        .received
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 200") && m.contains("\nCSeq: 2 BYE"))
        .count();
    assert!(byes_answered >= 2000, "{byes_answered} BYEs answered");
}

#[test]
fn parallel_fork_to_two_callees_first_answer_wins_the_other_is_cancelled() {
    let (mut winner, winner_port) = uas("uas_slow.xml", 1);
    let (mut loser, loser_port) = uas("uas_cancel.xml", 1);
    let proxy = Proxy::start(Some(&format!(
        r#"
[[proxy.route]]
name = "fork"
match = {{ methods = ["INVITE"] }}
fork = "parallel"
destinations = [
  {{ host = "127.0.0.1", port = {winner_port} }},
  {{ host = "127.0.0.1", port = {loser_port} }},
]
"#
    )));
    let caller = uac("uac.xml", &proxy, 9, &[]);
    caller.assert_success();
    winner.finish(Duration::from_secs(10)).assert_success();
    let loser = loser.finish(Duration::from_secs(10));
    loser.assert_success();
    // Two early dialogs reached the caller: one 180 per callee, with different To tags.
    let ringing: std::collections::HashSet<String> = caller
        .received
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 180"))
        .map(|m| header_values(m, "To")[0].to_string())
        .collect();
    assert_eq!(ringing.len(), 2, "{ringing:?}");
    assert!(
        caller.received_starting("SIP/2.0 487").is_none(),
        "the loser's 487 stays at the proxy"
    );
    let invite = loser.received_starting("INVITE ").unwrap();
    let cancel = loser.received_starting("CANCEL ").unwrap();
    assert_eq!(branch_of(cancel), branch_of(invite));
}

/// dnsmasq on a loopback port serving `records` (dnsmasq options such as `--srv-host=…`).
fn dns_server(records: &[String]) -> (Daemon, u16) {
    let dnsmasq = anchorage_testkit::require_tool("dnsmasq", "dnsmasq-base");
    let port = free_port(LOCALHOST);
    let mut cmd = Command::new(dnsmasq);
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
    ])
    .args([
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--log-queries",
    ])
    .arg(format!("--port={port}"))
    .args(records);
    let mut daemon = Daemon::spawn("dnsmasq", &mut cmd);
    daemon.wait_until(Duration::from_secs(5), |d| d.log().contains("started"));
    (daemon, port)
}

fn call_by_name(
    ruri: &str,
    records: &[String],
    uas_scenario: &str,
    uas_port: u16,
) -> (SippRun, SippRun, Daemon) {
    let (dns, dns_port) = dns_server(records);
    let callee = Sipp::new("uas", &scenario(uas_scenario), addr(uas_port))
        .args(["-m", "1"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let proxy = Proxy::start(Some(&format!(
        "[proxy.dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n"
    )));
    let port = free_udp_port(LOCALHOST);
    let caller = Sipp::new("uac", &scenario("uac_ruri.xml"), addr(port))
        .args([
            "-rsa",
            &proxy.sip(),
            "-m",
            "1",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .args(["-key", "ruri", ruri])
        .run("127.0.0.1:9", Duration::from_secs(30));
    let mut callee = callee;
    let callee = callee.finish(Duration::from_secs(10));
    (caller, callee, dns)
}

#[test]
fn request_uri_without_port_is_resolved_by_srv_then_a_record() {
    let uas_port = free_udp_port(LOCALHOST);
    let records = [
        format!("--srv-host=_sip._udp.pbx.test,sip1.pbx.test,{uas_port},10,10"),
        "--host-record=sip1.pbx.test,127.0.0.1".to_string(),
    ];
    let (caller, callee, dns) = call_by_name("sip:bob@pbx.test", &records, "uas.xml", uas_port);
    caller.assert_success();
    callee.assert_success();
    let invite = callee.received_starting("INVITE ").unwrap();
    assert!(
        invite.starts_with("INVITE sip:bob@pbx.test SIP/2.0"),
        "{invite}"
    );
    let log = dns.log();
    assert!(log.contains("query[SRV] _sip._udp.pbx.test"), "{log}");
}

#[test]
fn request_uri_with_a_port_is_resolved_by_a_record_only() {
    let uas_port = free_udp_port(LOCALHOST);
    let records = ["--host-record=sip1.pbx.test,127.0.0.1".to_string()];
    let ruri = format!("sip:bob@sip1.pbx.test:{uas_port}");
    let (caller, callee, dns) = call_by_name(&ruri, &records, "uas.xml", uas_port);
    caller.assert_success();
    callee.assert_success();
    let log = dns.log();
    assert!(!log.contains("query[SRV]"), "{log}");
    assert!(log.contains("sip1.pbx.test"), "{log}");
}

#[test]
fn unknown_host_name_is_answered_503() {
    let (dns, dns_port) = dns_server(&[]);
    let proxy = Proxy::start(Some(&format!(
        "[proxy.dns]\nservers = [\"127.0.0.1:{dns_port}\"]\n"
    )));
    let ua = RawUa::new();
    ua.send(
        proxy.port,
        &request(
            &ua,
            "OPTIONS sip:bob@nowhere.test SIP/2.0",
            "From: <sip:a@example.com>;tag=1\nTo: <sip:bob@nowhere.test>\nCall-ID: dns-1\nCSeq: 1 OPTIONS\nContent-Length: 0\n",
        ),
    );
    let reply = ua.expect("SIP/2.0 ");
    assert!(
        reply.starts_with("SIP/2.0 503 Service Unavailable"),
        "{reply}"
    );
    drop(dns);
}

#[test]
fn udp_caller_to_tcp_callee_gets_two_record_routes() {
    let (proxy, mut callee, uas_port) = tcp_callee_behind_proxy();
    let caller = uac("uac.xml", &proxy, uas_port, &[]);
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let p = proxy.port;
    // RFC 3261 §16.6 step 4 / RFC 5658: one entry per side, the outbound (TCP) one on top.
    let invite = callee.received_starting("INVITE ").unwrap();
    assert_eq!(
        header_values(invite, "Record-Route"),
        [
            format!("<sip:127.0.0.1:{p};transport=tcp;lr>"),
            format!("<sip:127.0.0.1:{p};lr>")
        ]
    );
    // In-dialog requests from the caller come back through both entries, and the proxy
    // removes both before forwarding over TCP.
    let bye = callee.received_starting("BYE ").unwrap();
    assert!(header_values(bye, "Route").is_empty(), "{bye}");
    assert!(header_values(bye, "Via")[0].starts_with(&format!("SIP/2.0/TCP 127.0.0.1:{p};")));
}

#[test]
fn a_call_over_ipv6() {
    let v6: std::net::IpAddr = "::1".parse().unwrap();
    let port = free_port(v6);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["proxy", "--listen", &format!("udp:[::1]:{port}")]);
    let mut daemon = Daemon::spawn("anchorage-proxy-v6", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("SIP udp on"));
    let uas_port = free_udp_port(v6);
    let mut callee = Sipp::new("uas", &scenario("uas.xml"), SocketAddr::new(v6, uas_port))
        .args(["-m", "1"])
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller = Sipp::new(
        "uac",
        &scenario("uac.xml"),
        SocketAddr::new(v6, free_udp_port(v6)),
    )
    .args([
        "-rsa",
        &format!("[::1]:{port}"),
        "-m",
        "1",
        "-timeout",
        "20s",
        "-timeout_error",
    ])
    .run(&format!("[::1]:{uas_port}"), Duration::from_secs(30));
    caller.assert_success();
    let callee = callee.finish(Duration::from_secs(10));
    callee.assert_success();
    let invite = callee.received_starting("INVITE ").unwrap();
    assert_eq!(
        header_values(invite, "Record-Route"),
        [format!("<sip:[::1]:{port};lr>")]
    );
    assert!(header_values(invite, "Via")[0].starts_with(&format!("SIP/2.0/UDP [::1]:{port};")));
    drop(daemon);
}

/// A minimal HTTP/1.1 GET: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    anchorage_testkit::http(addr, "GET", path, "")
}

#[test]
fn management_api_lists_live_calls_and_metrics_count_them() {
    let port = free_port(LOCALHOST);
    let api = free_port(LOCALHOST);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    cmd.args(["proxy", "--listen", &format!("udp:127.0.0.1:{port}")])
        .args(["--api", &format!("127.0.0.1:{api}")]);
    let mut daemon = Daemon::spawn("anchorage-proxy-api", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let api = addr(api);
    let (mut callee, uas_port) = uas("uas.xml", 1);
    let caller = Sipp::new("uac", &scenario("uac.xml"), addr(free_udp_port(LOCALHOST)))
        .args([
            "-rsa",
            &format!("127.0.0.1:{port}"),
            "-m",
            "1",
            "-d",
            "1500",
        ])
        .args([
            "-timeout",
            "20s",
            "-timeout_error",
            &format!("127.0.0.1:{uas_port}"),
        ])
        .spawn();
    // While the call is up, it is listed with both legs (first early, after the 180, then
    // confirmed once the 200 went through: wait for that).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let (status, body) = http_get(api, "/v1/calls");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let first = v["calls"].as_array().and_then(|c| c.first()).cloned();
        if let Some(call) = first.filter(|c| c["state"] == "confirmed") {
            break call;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no confirmed call listed: {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["state"], "confirmed");
    assert_eq!(listed["caller"]["transport"], "udp");
    assert!(listed["callee"]["tag"]
        .as_str()
        .unwrap()
        .contains("SIPpTag01"));
    let call_id = listed["call_id"].as_str().unwrap().to_string();
    let (status, body) = http_get(api, &format!("/v1/calls/{call_id}"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(api, "/v1/calls/no-such-call");
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "no call with Call-ID \"no-such-call\""
    );
    let (status, body) = http_get(api, "/v2/nothing");
    assert_eq!(status, 404);
    assert!(body.contains("no such endpoint: /v2/nothing"), "{body}");
    let mut caller = caller;
    caller.finish(Duration::from_secs(20)).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    // After the BYE the call is gone, and the metrics saw it.
    let (_, body) = http_get(api, "/v1/calls");
    assert_eq!(body, r#"{"calls":[]}"#);
    let (status, metrics) = http_get(api, "/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    // INVITE, ACK, BYE from the caller, at the least.
    assert!(value("anchorage_sip_requests_total") >= 3);
    assert_eq!(value("anchorage_dialogs"), 0);
    assert_eq!(value("anchorage_sip_dropped_total"), 0);
    drop(daemon);
}

#[test]
fn up_without_relays_carries_a_call_signalling_only() {
    let port = free_port(LOCALHOST);
    let api = free_port(LOCALHOST);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anchorage"));
    // Signalling only (`--relays 0`): tests/media.rs runs `up` with its built-in relays.
    cmd.args([
        "up",
        "--relays",
        "0",
        "--sip",
        &format!("127.0.0.1:{port}"),
        "--api",
        &format!("127.0.0.1:{api}"),
    ]);
    let mut up = Daemon::spawn("anchorage-up", &mut cmd);
    up.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    assert!(!up.log().contains("anchorage up: relay"), "{}", up.log());
    let proxy = Proxy {
        daemon: up,
        port,
        _config: None,
    };
    let (mut callee, uas_port) = uas("uas.xml", 1);
    uac("uac.xml", &proxy, uas_port, &[]).assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();
    let (status, metrics) = http_get(addr(api), "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("anchorage_sip_requests_total"));
}
