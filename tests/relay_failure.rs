//! The proxy survives the death of the only relay of its set while it carries thousands of
//! calls: real `anchorage relay` and `anchorage proxy` processes, SIPp phones. Before the fix
//! the proxy overflowed its stack about a second after `kill -9` of such a relay.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::sipp::Sipp;
use anchorage_testkit::{free_udp_block, free_udp_port, http, AnchorageProxy, Daemon, LOCALHOST};

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_anchorage"))
}

/// An `anchorage relay` on `ng` with the media ports `ports`.
fn relay(ng: u16, ports: (u16, u16)) -> Daemon {
    let mut cmd = Command::new(bin());
    cmd.args(["relay", "--interface", "127.0.0.1", "--num-threads", "1"])
        .args(["--delete-delay", "0"])
        .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
        .args(["--port-min", &ports.0.to_string()])
        .args(["--port-max", &ports.1.to_string()]);
    let mut daemon = Daemon::spawn("anchorage-relay", &mut cmd);
    daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("ng on udp:"));
    daemon
}

/// A gauge's value on a Prometheus page (0 when absent).
fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    wait_for_state(what, timeout, || (done(), String::new()));
}

/// Waits until `check` says done; its second value (what it saw) goes into the failure.
fn wait_for_state(what: &str, timeout: Duration, mut check: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, seen) = check();
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} (last seen: {seen})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Calls anchored on relay-a and live dialogs, from the proxy's metrics.
fn anchored_and_dialogs(api: SocketAddr) -> (u64, u64) {
    let (_, page) = http(api, "GET", "/metrics", "");
    (
        metric(&page, "anchorage_relay_calls{relay=\"relay-a\"}"),
        metric(&page, "anchorage_dialogs"),
    )
}

/// The relay `relay-a` as `/v1/relays` shows it.
fn relay_view(api: SocketAddr) -> serde_json::Value {
    let (_, body) = http(api, "GET", "/v1/relays", "");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    value["relays"][0].clone()
}

/// Sends `request` (with `\n` line ends) from a socket of its own; returns the first final
/// response.
fn exchange(proxy: SocketAddr, request: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let text = request
        .replace("PORT", &port.to_string())
        .replace('\n', "\r\n");
    socket.send_to(text.as_bytes(), proxy).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .expect("a response from the proxy");
        let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !reply.starts_with("SIP/2.0 1") {
            return reply;
        }
    }
}

fn options(proxy: SocketAddr) -> String {
    exchange(
        proxy,
        &format!(
            "OPTIONS sip:{proxy} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK-opt-{}\n\
             From: <sip:monitor@127.0.0.1>;tag=m1\nTo: <sip:{proxy}>\nCall-ID: options-{}@test\n\
             CSeq: 1 OPTIONS\nMax-Forwards: 70\nContent-Length: 0\n\n",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ),
    )
}

fn new_call(proxy: SocketAddr, callee: u16, id: &str) -> String {
    let sdp = "v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    exchange(
        proxy,
        &format!(
            "INVITE sip:callee@127.0.0.1:{callee} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:PORT;branch=z9hG4bK-{id}\n\
             From: <sip:caller@127.0.0.1>;tag=t-{id}\nTo: <sip:callee@127.0.0.1>\nCall-ID: {id}\n\
             CSeq: 1 INVITE\nContact: <sip:caller@127.0.0.1:PORT>\nMax-Forwards: 70\n\
             Content-Type: application/sdp\nContent-Length: {}\n\n{sdp}",
            sdp.len()
        ),
    )
}

#[test]
fn kill_9_of_the_only_relay_with_5000_calls_keeps_the_proxy_and_every_call() {
    // 5,000 calls, as the issue asks, on one relay process on a machine that caps a process
    // at 20,000 open files (a hard limit even root cannot raise here): the phones offer and
    // answer rtcp-mux, so once a call is answered each leg holds its RTP socket only (RFC
    // 5761), two sockets a call instead of four. `RELAY_FAILURE_CALLS` overrides the number.
    let calls: u32 = std::env::var("RELAY_FAILURE_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    const SURVIVORS: u32 = 5;
    // The ng port is below the media range, out of the ephemeral range: the relay started
    // again after the kill binds it anew, and an ephemeral port may be taken meanwhile.
    let ng = (1_100..2_000)
        .find(|&p| UdpSocket::bind((LOCALHOST, p)).is_ok())
        .expect("a free UDP port in 1100-1999");
    // Two port pairs a call (one per leg; a pair stays reserved under rtcp-mux), in a range
    // below the ephemeral ports that other processes may dot with a few sockets of their own
    // (other tests' relays and SIPp): the relay skips a pair it cannot bind.
    let ports = media_range(2 * calls + 500);
    let relay_a = relay(ng, ports);
    let proxy = AnchorageProxy::start(bin(), &[ng], "");
    let proxy_sip = proxy.sip.to_string();
    // Most calls hang up while the relay is dead; a few stay until it is back.
    let uas_port = free_udp_port(LOCALHOST);
    let uas = Sipp::new(
        "uas",
        &scenario("uas_media_mux.xml"),
        SocketAddr::new(LOCALHOST, uas_port),
    )
    .args(["-key", "rtp_port", "4006"])
    .spawn();
    let survivors_uas_port = free_udp_port(LOCALHOST);
    let survivors_uas = Sipp::new(
        "uas",
        &scenario("uas_reanchor_wait_mux.xml"),
        SocketAddr::new(LOCALHOST, survivors_uas_port),
    )
    .args(["-m", &SURVIVORS.to_string(), "-key", "rtp_port", "4000"])
    .spawn();
    std::thread::sleep(Duration::from_millis(300));
    let mut survivors = Sipp::new(
        "uac",
        &scenario("uac_reanchor_wait_mux.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", &SURVIVORS.to_string(), "-l", "10", "-d", "2000"])
    .args(["-key", "rtp_port", "4002", "-rsa", &proxy_sip])
    .args([format!("127.0.0.1:{survivors_uas_port}")])
    .spawn();
    wait_for_state(
        "the surviving calls confirmed",
        Duration::from_secs(20),
        || {
            let (anchored, dialogs) = anchored_and_dialogs(proxy.api);
            (
                anchored >= u64::from(SURVIVORS) && dialogs >= u64::from(SURVIVORS),
                format!("{anchored} anchored, {dialogs} dialogs"),
            )
        },
    );
    let mut callers = Sipp::new(
        "uac",
        &scenario("uac_media_mux.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", &(calls - SURVIVORS).to_string(), "-r", "500"])
    .args([
        "-d", "25000", "-key", "rtp_port", "4004", "-rsa", &proxy_sip,
    ])
    .args(["-timeout", "120s", "-timeout_error"])
    .args([format!("127.0.0.1:{uas_port}")])
    .spawn();
    wait_for_state("every call confirmed", Duration::from_secs(60), || {
        let (anchored, dialogs) = anchored_and_dialogs(proxy.api);
        (
            anchored >= u64::from(calls) && dialogs >= u64::from(calls),
            format!(
                "{anchored} anchored, {dialogs} dialogs; the callers' SIPp: {}\nthe proxy: {}\n\
                 the relay: {}",
                tail(&callers.daemon().log(), 10),
                tail(&proxy.daemon.log(), 10),
                tail(&relay_a.log(), 10)
            ),
        )
    });
    // Under rtcp-mux the relay holds two media sockets a call (RTP on each leg), besides a
    // few of its own (ng socket, epoll, log): measured on /proc, with the calls answered.
    let mut fds = 0;
    wait_for_state("two media sockets a call", Duration::from_secs(10), || {
        fds = open_files(relay_a.pid());
        (
            fds <= 2 * calls as usize + 64,
            format!("{fds} open files for {calls} calls"),
        )
    });
    eprintln!("relay-a with {calls} answered calls under rtcp-mux: {fds} open files");
    // kill -9 of the only relay: down within a ping interval or so (refused twice).
    let killed = Instant::now();
    relay_a.signal(9);
    wait_for("relay-a down", Duration::from_secs(3), || {
        relay_view(proxy.api)["state"] == "down"
    });
    let detection = killed.elapsed();
    let view = relay_view(proxy.api);
    assert_eq!(view["down_reason"], "refused", "{view}");
    eprintln!("relay-a with {calls} calls killed: down after {detection:?}");
    // The proxy is alive and serving: OPTIONS answered, the calls kept (waiting for a relay,
    // shown by the API and the metric), a new call refused with 503 and Retry-After.
    std::thread::sleep(Duration::from_secs(1));
    assert!(proxy_alive(&proxy), "{}", proxy.daemon.log());
    assert!(options(proxy.sip).starts_with("SIP/2.0 200"));
    wait_for("every call waiting", Duration::from_secs(10), || {
        let (_, page) = http(proxy.api, "GET", "/metrics", "");
        metric(&page, "anchorage_calls_waiting_for_relay") == u64::from(calls)
    });
    let (_, jobs) = http(proxy.api, "GET", "/v1/jobs", "");
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    let job = jobs["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["trigger"] == "node_down"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(job["total"], calls, "{jobs}");
    assert_eq!(job["waiting"], calls, "{jobs}");
    let refused = new_call(proxy.sip, uas_port, "refused-while-dead");
    assert!(refused.starts_with("SIP/2.0 503 "), "{refused}");
    assert!(refused.contains("\r\nRetry-After: 5\r\n"), "{refused}");
    // Every BYE of the calls hanging up now gets its 200 end to end.
    let run = callers.finish(Duration::from_secs(120));
    run.assert_success();
    assert!(proxy_alive(&proxy), "{}", proxy.daemon.log());
    // A relay process on the same ng address (its sessions are gone): new calls are anchored
    // on it and the surviving calls re-anchored to it.
    let _relay_b = relay(ng, ports);
    wait_for("relay-a up again", Duration::from_secs(5), || {
        relay_view(proxy.api)["state"] == "up"
    });
    for n in 1..=SURVIVORS as usize {
        let at_caller = nth_received(&survivors, "INVITE ", n, &proxy);
        let media = anchorage_testkit::media::sdp_media(&at_caller);
        assert!(
            (ports.0..=ports.1).contains(&media.port()),
            "re-INVITE {n} names the relay: {at_caller}"
        );
    }
    let run = survivors.finish(Duration::from_secs(60));
    run.assert_success();
    let mut survivors_uas = survivors_uas;
    survivors_uas
        .finish(Duration::from_secs(30))
        .assert_success();
    let anchored = new_call(proxy.sip, uas_port, "after-recovery");
    assert!(anchored.starts_with("SIP/2.0 200"), "{anchored}");
    let media = anchorage_testkit::media::sdp_media(&anchored);
    assert!((ports.0..=ports.1).contains(&media.port()), "{anchored}");
    let (_, page) = http(proxy.api, "GET", "/metrics", "");
    assert_eq!(metric(&page, "anchorage_calls_waiting_for_relay"), 0);
    assert!(!proxy.daemon.log().contains("panicked"));
    drop(uas);
}

/// A media port range below the kernel's ephemeral range with at least `pairs` even/odd
/// pairs that can be bound now, at most a few percent of its ports held by other processes
/// (searched from 2000 up in steps of 1000).
fn media_range(pairs: u32) -> (u16, u16) {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = (pairs * 2 + pairs / 10).min(ephemeral.saturating_sub(2_000));
    let bindable =
        |port: u32| u16::try_from(port).is_ok_and(|p| UdpSocket::bind((LOCALHOST, p)).is_ok());
    let mut base = 2_000;
    while base + span <= ephemeral {
        let free = (base..base + span)
            .step_by(2)
            .filter(|&p| bindable(p) && bindable(p + 1))
            .count();
        if free as u32 >= pairs {
            let first = u16::try_from(base).unwrap_or(u16::MAX);
            return (first, u16::try_from(base + span - 1).unwrap_or(u16::MAX));
        }
        base += 1_000;
    }
    panic!("no range below {ephemeral} with {pairs} free UDP port pairs");
}

/// The number of files process `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn proxy_alive(proxy: &AnchorageProxy) -> bool {
    let (status, _) = http(proxy.api, "GET", "/v1/relays", "");
    status == 200
}

/// The `n`-th message starting with `start` a SIPp process received, waiting up to 30 s; on
/// failure the proxy's log tells why.
fn nth_received(
    p: &anchorage_testkit::sipp::SippProcess,
    start: &str,
    n: usize,
    proxy: &AnchorageProxy,
) -> String {
    p.nth_received(start, n, Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "no {start} number {n}; the proxy's log ends with:\n{}",
                tail(&proxy.daemon.log(), 40)
            )
        })
}

/// A UDP forwarder in front of a relay's ng port that delays every reply by 300–500 ms (a relay
/// answering slowly under load). Returns the address the proxy is to use; runs until the test
/// process ends.
fn slow_ng_front(relay_ng: u16) -> u16 {
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(("127.0.0.1", relay_ng)).unwrap();
    let controller = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    {
        let (front, back, controller) = (
            front.try_clone().unwrap(),
            back.try_clone().unwrap(),
            controller.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_535];
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                if let Ok(mut c) = controller.lock() {
                    *c = Some(from);
                }
                let _ = back.send(&buf[..n]);
            }
        });
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 65_535];
        let mut turn = 0u64;
        while let Ok(n) = back.recv(&mut buf) {
            let Some(to) = controller.lock().ok().and_then(|c| *c) else {
                continue;
            };
            turn += 1;
            let delay = Duration::from_millis(300 + (turn * 67) % 201);
            let reply = buf[..n].to_vec();
            let front = front.try_clone().unwrap();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = front.send_to(&reply, to);
            });
        }
    });
    port
}

#[test]
fn a_killed_relay_is_down_within_300_ms_a_hung_one_within_its_window_and_a_slow_one_never() {
    let relay_ports = |n: u16| {
        let base = free_udp_block(LOCALHOST, n);
        (base, base + n - 1)
    };
    let (ng_a, ng_b, ng_c) = (
        free_udp_port(LOCALHOST),
        free_udp_port(LOCALHOST),
        free_udp_port(LOCALHOST),
    );
    let mut relay_a = relay(ng_a, relay_ports(100));
    let relay_b = relay(ng_b, relay_ports(100));
    let _relay_c = relay(ng_c, relay_ports(100));
    let slow = slow_ng_front(ng_c);
    let proxy = AnchorageProxy::start(bin(), &[ng_a, ng_b, slow], "");
    let state = |name: &str| {
        let (_, body) = http(proxy.api, "GET", "/v1/relays", "");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        value["relays"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    // Everything up and answering (the slow one too) before anything happens.
    std::thread::sleep(Duration::from_secs(2));
    for name in ["relay-a", "relay-b", "relay-c"] {
        assert_eq!(state(name)["state"], "up", "{name}: {}", state(name));
    }
    assert!(
        state("relay-c")["rtt_ms"].as_f64().unwrap_or(0.0) >= 250.0,
        "{}",
        state("relay-c")
    );
    // kill -9: the ICMP path (refused twice).
    let killed = Instant::now();
    relay_a.signal(9);
    let _ = relay_a.wait_exit(Duration::from_secs(2));
    wait_for("relay-a down", Duration::from_secs(2), || {
        state("relay-a")["state"] == "down"
    });
    let took = killed.elapsed();
    assert_eq!(state("relay-a")["down_reason"], "refused");
    assert!(
        took <= Duration::from_millis(300),
        "kill -9 found after {took:?}"
    );
    // SIGSTOP: no ICMP; down after its window (600 ms by default, a little more with the ping
    // phase and the API's polling).
    let stopped = Instant::now();
    relay_b.signal(19);
    wait_for("relay-b down", Duration::from_secs(3), || {
        state("relay-b")["state"] == "down"
    });
    let took = stopped.elapsed();
    relay_b.signal(18);
    let b = state("relay-b");
    assert_eq!(b["down_reason"], "timed_out", "{b}");
    assert!(
        took >= Duration::from_millis(500) && took <= Duration::from_millis(1200),
        "SIGSTOP found after {took:?}"
    );
    // The slow relay was never marked down, all along and for a while more.
    for _ in 0..20 {
        let c = state("relay-c");
        assert_eq!(c["state"], "up", "{c}");
        assert!(c["down_reason"].is_null(), "{c}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!proxy.daemon.log().contains("panicked"));
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
