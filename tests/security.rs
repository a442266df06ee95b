//! Issue 18: nothing that listens on a network is open by default. Each test runs the real
//! binary on non-loopback addresses inside a network namespace of its own
//! ([`anchorage_testkit::netns::Netns`]: 10.77.0.1 and 10.77.0.2 on a veth pair, nothing on the
//! host's interfaces), drives it from sockets made inside that namespace, and deletes the
//! namespace at the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::netns::Netns;
use anchorage_testkit::sipp::Sipp;
use anchorage_testkit::{free_port, free_udp_block, free_udp_port, http, http_with, Daemon};

const A: std::net::IpAddr = Netns::A;
const B: std::net::IpAddr = Netns::B;
const NS_LOOPBACK: std::net::IpAddr = anchorage_testkit::LOCALHOST;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_anchorage")
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A configuration file that lives as long as the test needs it.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
    f.write_all(text.as_bytes())
        .expect("the configuration written");
    f
}

/// `anchorage ARGS…` inside the namespace, its output in a log.
fn spawn(ns: &Netns, name: &str, args: &[&str]) -> Daemon {
    let mut cmd = ns.command(bin());
    cmd.args(args).env("RUST_LOG", "info");
    Daemon::spawn(name, &mut cmd)
}

/// Waits for a process that must refuse to start; returns its log.
fn refused(mut daemon: Daemon) -> String {
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running after 10 s:\n{}", daemon.log()));
    assert!(!status.success(), "exited {status}:\n{}", daemon.log());
    daemon.log()
}

/// A counter's value (the first line starting with `name` then a space) on a metrics page.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn lines_containing(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn an_api_off_loopback_needs_a_token_or_an_explicit_waiver_and_counts_bad_tokens() {
    let ns = Netns::create();
    let (sip, api) = ns.run(|| (free_port(A), free_port(A)));
    let sip_arg = format!("udp:{A}:{sip}");
    let api_addr = SocketAddr::new(A, api);
    let api_arg = api_addr.to_string();

    // No token: `proxy` and `up` refuse to start, naming the key.
    let log = refused(spawn(
        &ns,
        "proxy-no-token",
        &["proxy", "--listen", &sip_arg, "--api", &api_arg],
    ));
    assert!(log.contains("`api.token`"), "{log}");
    assert!(log.contains("not on loopback"), "{log}");
    let log = refused(spawn(
        &ns,
        "up-no-token",
        &[
            "up",
            "--relays",
            "0",
            "--sip",
            &format!("{A}:{sip}"),
            "--api",
            &api_arg,
        ],
    ));
    assert!(
        log.contains("`api.token`") && log.contains("--api-token"),
        "{log}"
    );
    // The same in a file: `check` and the proxy name the key.
    let open = config_file(&format!("[api]\nlisten = \"{api_arg}\"\n"));
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(open.path())
        .output()
        .expect("anchorage check runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("api.token: the management API"),
        "{out:?}"
    );

    // Waived: it starts, says so at every start, and takes a POST without a token.
    let waived = config_file(&format!(
        "[api]\nlisten = \"{api_arg}\"\nallow_unauthenticated = true\n"
    ));
    let path = waived.path().to_string_lossy().to_string();
    for _ in 0..2 {
        let mut proxy = spawn(
            &ns,
            "proxy-waived",
            &["proxy", "--listen", &sip_arg, "-c", &path],
        );
        proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
        let log = proxy.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("api.allow_unauthenticated = true"))
            .collect();
        assert_eq!(warnings.len(), 1, "one warning per start:\n{log}");
        assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
        let (status, body) = ns.run(|| http(api_addr, "POST", "/v1/relays/nope/undrain", ""));
        assert_eq!(status, 404, "the request ran: {body}");
    }

    // With a token: a POST without it or with a wrong one gets 401 and is counted.
    let guarded = config_file(&format!(
        "[api]\nlisten = \"{api_arg}\"\ntoken = \"s3cret-token\"\n"
    ));
    let path = guarded.path().to_string_lossy().to_string();
    let mut proxy = spawn(
        &ns,
        "proxy-token",
        &["proxy", "--listen", &sip_arg, "-c", &path],
    );
    proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    assert!(
        !proxy.log().contains("allow_unauthenticated"),
        "{}",
        proxy.log()
    );
    let (none, wrong, right, page) = ns.run(|| {
        let path = "/v1/relays/nope/drain";
        let none = http(api_addr, "POST", path, "");
        let wrong = http_with(
            api_addr,
            "POST",
            path,
            "",
            &["Authorization: Bearer s3cret"],
        );
        let right = http_with(
            api_addr,
            "POST",
            path,
            "",
            &["Authorization: Bearer s3cret-token"],
        );
        (none, wrong, right, http(api_addr, "GET", "/metrics", "").1)
    });
    assert_eq!(none.0, 401, "{none:?}");
    assert!(none.1.contains("needs the API token"), "{none:?}");
    assert_eq!(wrong.0, 401, "{wrong:?}");
    assert_eq!(right.0, 404, "the right token goes through: {right:?}");
    assert_eq!(
        metric(&page, "anchorage_api_auth_failures_total"),
        Some(2),
        "{page}"
    );
    drop(proxy);
    drop(ns);
}

/// An ng `offer` as Kamailio sends it, bencoded by hand.
fn offer(cookie: &str, call_id: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0\r\n";
    let mut out = format!("{cookie} d7:command5:offer").into_bytes();
    for (key, value) in [
        ("call-id", call_id),
        ("from-tag", "caller-tag"),
        ("sdp", sdp),
    ] {
        out.extend_from_slice(format!("{}:{key}{}:{value}", key.len(), value.len()).as_bytes());
    }
    out.push(b'e');
    out
}

/// Sends `datagram` from `socket` to `to`; the reply, if one comes within `wait`.
fn ng(socket: &UdpSocket, to: SocketAddr, datagram: &[u8], wait: Duration) -> Option<Vec<u8>> {
    socket.send_to(datagram, to).expect("ng request sent");
    socket.set_read_timeout(Some(wait)).expect("read timeout");
    let mut buf = vec![0u8; 65_536];
    match socket.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn a_relay_control_socket_off_loopback_needs_an_allow_list_and_drops_other_sources() {
    let ns = Netns::create();
    let (ng_port, media, metrics_port) = ns.run(|| {
        (
            free_udp_port(A),
            free_udp_block(A, 20),
            free_port(NS_LOOPBACK),
        )
    });
    let ng_addr = SocketAddr::new(A, ng_port);
    let listen = ng_addr.to_string();
    let base = [
        "relay",
        "--listen-ng",
        &listen,
        "--interface",
        "10.77.0.1",
        "--num-threads",
        "1",
    ];
    let ports = [
        "--port-min".to_string(),
        media.to_string(),
        "--port-max".to_string(),
        (media + 19).to_string(),
    ];
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();

    // No allow-list: the relay refuses to start and names the key and the option.
    let log = refused(spawn(&ns, "relay-open", &[&base[..], &ports[..]].concat()));
    assert!(log.contains("`relay.control_allow"), "{log}");
    assert!(log.contains("--control-allow"), "{log}");

    // Only 10.77.0.2 may control it.
    let metrics_addr = SocketAddr::new(NS_LOOPBACK, metrics_port);
    let metrics_arg = metrics_addr.to_string();
    let extra = ["--control-allow", "10.77.0.2/32", "--metrics", &metrics_arg];
    let mut relay = spawn(&ns, "relay", &[&base[..], &ports[..], &extra[..]].concat());
    relay.wait_until(Duration::from_secs(10), |d| d.log().contains("ng on udp:"));
    let (allowed, stranger, stranger_pings) = ns.run(|| {
        let controller = UdpSocket::bind((B, 0)).expect("a socket on B");
        let stranger = UdpSocket::bind((A, 0)).expect("a socket on A");
        let wait = Duration::from_secs(2);
        let allowed = ng(&controller, ng_addr, &offer("c1", "allowed-call"), wait);
        let refused = ng(&stranger, ng_addr, &offer("c2", "stranger-call"), wait);
        let pings = (0..5)
            .filter_map(|i| {
                let ping = format!("p{i} d7:command4:pinge");
                ng(
                    &stranger,
                    ng_addr,
                    ping.as_bytes(),
                    Duration::from_millis(200),
                )
            })
            .count();
        (allowed, refused, pings)
    });
    let allowed = allowed.unwrap_or_else(|| panic!("no answer to the allowed offer"));
    let (_, _, reply) = anchorage_ng::decode_reply(&allowed).expect("an ng reply");
    assert_eq!(reply.outcome, anchorage_ng::Outcome::Ok, "{reply:?}");
    assert!(
        reply
            .sdp
            .as_deref()
            .is_some_and(|s| String::from_utf8_lossy(s).contains("c=IN IP4 10.77.0.1")),
        "{reply:?}"
    );
    assert_eq!(stranger, None, "the stranger's offer was answered");
    assert_eq!(stranger_pings, 0, "the stranger's pings were answered");

    // Counted by source (the relay refreshes its metrics every second), logged once.
    let label = "anchorage_relay_control_refused_total{source=\"10.77.0.1\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = ns.run(|| http(metrics_addr, "GET", "/metrics", "").1);
        if metric(&page, label) == Some(6) || Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&page, label), Some(6), "{page}");
    assert_eq!(metric(&page, "anchorage_relay_offers_total"), Some(1));
    let log = relay.log();
    assert_eq!(lines_containing(&log, "ng command dropped"), 1, "{log}");
    assert!(!log.contains("stranger-call"), "{log}");
    drop(relay);
    drop(ns);
}

/// Opens a TCP connection from `from` to `to`; `None` if the connect itself fails.
fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .ok()?;
    socket.bind(&SocketAddr::new(from, 0).into()).ok()?;
    socket
        .connect_timeout(&to.into(), Duration::from_secs(2))
        .ok()?;
    Some(socket.into())
}

/// Whether the peer closed `stream` (EOF or reset) within `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn one_tcp_source_cannot_take_every_connection_nor_hold_them_with_half_messages() {
    let ns = Netns::create();
    let (sip, api, uas_port, uac_port) = ns.run(|| {
        (
            free_port(A),
            free_port(NS_LOOPBACK),
            free_udp_port(A),
            free_port(A),
        )
    });
    let proxy_addr = SocketAddr::new(A, sip);
    let api_addr = SocketAddr::new(NS_LOOPBACK, api);
    // The node's limit is small enough that one source could take it all without the
    // per-source limit.
    let config = config_file(&format!(
        "[proxy.tcp]\nmax_connections = 12\nmax_connections_per_source = 4\nmessage_timeout_s = 2\n\
         [api]\nlisten = \"{api_addr}\"\n"
    ));
    let path = config.path().to_string_lossy().to_string();
    let mut proxy = spawn(
        &ns,
        "proxy",
        &[
            "proxy",
            "--listen",
            &format!("udp:{proxy_addr}"),
            "--listen",
            &format!("tcp:{proxy_addr}"),
            "-c",
            &path,
        ],
    );
    proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));

    // Source B opens 10 connections: 4 are kept, 6 are closed at once.
    let (mut kept, closed) = ns.run(|| {
        let streams: Vec<TcpStream> = (0..10)
            .map(|_| connect_from(B, proxy_addr).expect("the kernel accepts the connection"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut kept = Vec::new();
        let mut closed = 0;
        for mut s in streams {
            if closed_within(&mut s, Duration::from_millis(300)) {
                closed += 1;
            } else {
                kept.push(s);
            }
        }
        (kept, closed)
    });
    assert_eq!((kept.len(), closed), (4, 6), "{}", proxy.log());

    // The 4 it holds send half an INVITE and stop.
    let half = format!(
        "INVITE sip:x@{A}:{uas_port} SIP/2.0\r\nVia: SIP/2.0/TCP {B}:5999;branch=z9hG4bK-half\r\n\
         From: <sip:a@{B}>;tag=1\r\nTo: <sip:x@{A}>\r\nCall-ID: half\r\n"
    );
    let sent_at = Instant::now();
    for s in &mut kept {
        s.write_all(half.as_bytes()).expect("half a message sent");
    }

    // Meanwhile another source's TCP call goes through.
    let mut callee = Sipp::in_netns(
        &ns,
        "uas",
        &scenario("uas.xml"),
        SocketAddr::new(A, uas_port),
    )
    .args(["-m", "1"])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let caller = Sipp::in_netns(
        &ns,
        "uac",
        &scenario("uac.xml"),
        SocketAddr::new(A, uac_port),
    )
    .args([
        "-rsa",
        &proxy_addr.to_string(),
        "-t",
        "t1",
        "-m",
        "1",
        "-timeout",
        "20s",
        "-timeout_error",
    ])
    .run(&format!("{A}:{uas_port}"), Duration::from_secs(30));
    caller.assert_success();
    callee.finish(Duration::from_secs(10)).assert_success();

    // The half messages hit their 2 s deadline (not the 600 s idle timeout).
    for s in &mut kept {
        assert!(
            closed_within(s, Duration::from_secs(5)),
            "a half message was kept {:?}",
            sent_at.elapsed()
        );
    }
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );

    // A burst of 200 more from B: refused (its 4 slots are free again, so 4 are kept).
    let kept_again = ns.run(|| {
        let streams: Vec<TcpStream> = (0..200)
            .filter_map(|_| connect_from(B, proxy_addr))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        streams
            .into_iter()
            .filter_map(|mut s| (!closed_within(&mut s, Duration::from_millis(50))).then_some(s))
            .count()
    });
    assert_eq!(kept_again, 4, "{}", proxy.log());

    let page = ns.run(|| http(api_addr, "GET", "/metrics", "").1);
    let refused = metric(&page, "anchorage_sip_tcp_refused_total{limit=\"source\"}");
    assert!(refused.is_some_and(|r| r >= 6 + 190), "{page}");
    assert_eq!(
        metric(&page, "anchorage_sip_tcp_message_timeouts_total"),
        Some(4),
        "{page}"
    );
    // Hundreds of refusals and four deadline closes: one line each for source B.
    let log = proxy.log();
    assert_eq!(lines_containing(&log, "TCP connection refused"), 1, "{log}");
    assert_eq!(lines_containing(&log, "still incomplete"), 1, "{log}");
    assert!(log.lines().count() < 40, "{log}");
    drop(proxy);
    drop(ns);
}

#[test]
fn one_source_holds_at_most_its_share_of_api_connections() {
    let ns = Netns::create();
    let (sip, api) = ns.run(|| (free_port(A), free_port(A)));
    let api_addr = SocketAddr::new(A, api);
    let config = config_file(&format!(
        "[api]\nlisten = \"{api_addr}\"\ntoken = \"t0ken\"\nmax_connections_per_source = 2\n"
    ));
    let path = config.path().to_string_lossy().to_string();
    let mut proxy = spawn(
        &ns,
        "proxy",
        &["proxy", "--listen", &format!("udp:{A}:{sip}"), "-c", &path],
    );
    proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let (third_closed, refused_later, held_answer, page) = ns.run(|| {
        let mut held: Vec<TcpStream> = (0..2)
            .map(|_| connect_from(B, api_addr).expect("connected"))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut third = connect_from(B, api_addr).expect("the kernel accepts the connection");
        let third_closed = closed_within(&mut third, Duration::from_secs(2));
        let refused_later = (0..20)
            .filter(|_| {
                connect_from(B, api_addr)
                    .is_some_and(|mut s| closed_within(&mut s, Duration::from_secs(2)))
            })
            .count();
        // The connections it holds still work.
        let mut answer = String::new();
        let first = &mut held[0];
        first
            .write_all(b"GET /v1/relays HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .expect("request sent");
        let _ = first.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = first.read_to_string(&mut answer);
        // Another source is served.
        let page = http(api_addr, "GET", "/metrics", "").1;
        (third_closed, refused_later, answer, page)
    });
    assert!(third_closed, "the third connection was kept");
    assert_eq!(refused_later, 20);
    assert!(held_answer.starts_with("HTTP/1.1 200"), "{held_answer}");
    assert_eq!(
        metric(&page, "anchorage_api_connections_refused_total"),
        Some(21),
        "{page}"
    );
    let log = proxy.log();
    assert_eq!(lines_containing(&log, "API connection refused"), 1, "{log}");
    drop(proxy);
    drop(ns);
}
