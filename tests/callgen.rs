//! `anchorage callgen` with real peers: against itself through `anchorage up`, through
//! `anchorage proxy` with two `anchorage relay` processes while a relay is killed (`kill -9`)
//! or drained, with known pauses of its own sending to check the gap it reports, and its UAS
//! re-INVITEd by SIPp. Each test reads callgen's `--json` report.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchorage_testkit::sipp::Sipp;
use anchorage_testkit::{
    free_port, free_udp_block, free_udp_port, AnchorageProxy, AnchorageRelay, Daemon, LOCALHOST,
};
use serde_json::Value;

fn anchorage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anchorage"))
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// Runs callgen to its end and returns its exit code, its JSON report and its stderr.
fn callgen(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = anchorage()
        .arg("callgen")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{stdout}\n{stderr}"));
    (out.status.code(), report, stderr)
}

/// Callgen in the background, stopped on drop; [`Background::report`] waits for its end.
struct Background {
    daemon: Daemon,
}

impl Background {
    fn start(args: &[&str]) -> Background {
        let mut cmd = anchorage();
        cmd.arg("callgen").args(args).arg("--json");
        let mut daemon = Daemon::spawn("callgen", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("anchorage callgen: U")
        });
        Background { daemon }
    }

    fn report(mut self, timeout: Duration) -> (Option<i32>, Value) {
        let status = self.daemon.wait_exit(timeout);
        let log = self.daemon.log();
        assert!(
            status.is_some(),
            "callgen still running after {timeout:?}:\n{log}"
        );
        // The JSON report is the block from a line `{` to a line `}`; stderr lines are apart.
        let start = log
            .find("\n{\n")
            .map(|i| i + 1)
            .or_else(|| log.starts_with("{\n").then_some(0));
        let start = start.unwrap_or_else(|| panic!("no JSON report in:\n{log}"));
        let end = log[start..]
            .find("\n}\n")
            .map(|i| start + i + 2)
            .unwrap_or(log.len());
        let report = serde_json::from_str(&log[start..end])
            .unwrap_or_else(|e| panic!("bad JSON report ({e}):\n{log}"));
        (status.and_then(|s| s.code()), report)
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn calls(report: &Value) -> &Vec<Value> {
    report["call_list"].as_array().unwrap()
}

fn port_of(v: &Value) -> u16 {
    v.as_str()
        .and_then(|s| s.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// An `anchorage relay` with 100 media ports of its own.
type Relay = AnchorageRelay;

fn relay() -> Relay {
    AnchorageRelay::start(std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")), &[])
}

/// `anchorage proxy` anchoring calls on relay-a and relay-b.
type Proxy = AnchorageProxy;

fn proxy(a: &Relay, b: &Relay) -> Proxy {
    AnchorageProxy::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_anchorage")),
        &[a.ng, b.ng],
        "",
    )
}

/// An HTTP request; returns the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    anchorage_testkit::http(addr, method, path, "")
}

/// POSTs a drain or undrain and waits for its job to finish.
fn relay_job(p: &Proxy, path: &str) {
    let (status, body) = http(p.api, "POST", path);
    assert_eq!(status, 200, "{path}: {body}");
    let job: Value = serde_json::from_str(&body).unwrap();
    let Some(id) = job["id"].as_u64() else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let (_, body) = http(p.api, "GET", &format!("/v1/jobs/{id}"));
        let job: Value = serde_json::from_str(&body).unwrap();
        if job["finished"] == true {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("job {id} of {path} did not finish");
}

/// Two relays and a proxy, with relay-b drained so every new call is anchored on relay-a.
struct Cluster {
    a: Relay,
    b: Relay,
    p: Proxy,
}

fn cluster_on_relay_a() -> Cluster {
    let a = relay();
    let b = relay();
    let p = proxy(&a, &b);
    relay_job(&p, "/v1/relays/relay-b/drain");
    Cluster { a, b, p }
}

/// Callgen's options for calls through `proxy` to a UAS on a free port.
fn through(proxy: SocketAddr) -> Vec<String> {
    let uas = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    vec![
        "--proxy".into(),
        proxy.to_string(),
        "--uas".into(),
        uas.to_string(),
        "--media-ip".into(),
        "127.0.0.1".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn twenty_calls_through_anchorage_up_have_no_loss_and_20_ms_gaps() {
    let sip = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let ng = free_udp_block(LOCALHOST, 2);
    let mut up = anchorage();
    // Media ports 10000–19999, away from the ephemeral range the other tests' relays use.
    up.args(["up", "--sip", &sip.to_string(), "--api", &api.to_string()])
        .args(["--ng-base", &ng.to_string(), "--media-base", "10000"]);
    let mut up = Daemon::spawn("anchorage-up", &mut up);
    up.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let mut args = through(sip);
    args.extend(
        [
            "--calls",
            "20",
            "--rate",
            "20",
            "--hold",
            "3s",
            "--max-gap-ms",
            "100",
            "--max-failed",
            "0",
            "--max-loss",
            "0",
        ]
        .map(String::from),
    );
    let (code, report, stderr) = callgen(&strs(&args));
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(u(&report["calls"]["completed"]), 20, "{report:#}");
    assert_eq!(u(&report["packets"]["lost"]), 0);
    assert_eq!(u(&report["packets"]["wrong_ssrc"]), 0);
    // 3 s at 50 packets/s, both ways, every call.
    assert!(
        u(&report["packets"]["received"]) >= 20 * 2 * 145,
        "{report:#}"
    );
    let worst = f(&report["longest_gap_ms"]["max"]);
    assert!(worst < 100.0, "longest gap {worst} ms");
    eprintln!(
        "anchorage up, 20 calls: longest gap p50 {} ms, max {worst} ms; setup p50 {} ms",
        report["longest_gap_ms"]["p50"], report["setup_ms"]["p50"]
    );
    for call in calls(&report) {
        // Media went through the relays of `up` (10000–19999), not end to end.
        let relay = port_of(&call["uac"]["remote_media"]);
        assert!((10000..20000).contains(&relay), "{call:#}");
        assert_eq!(call["uac"]["media"]["lost"], 0);
        assert_eq!(call["uas"]["media"]["lost"], 0);
    }
    assert!(!up.log().contains("panicked"));
}

#[test]
fn a_700_ms_pause_of_the_callers_sending_is_reported_as_700_ms() {
    let c = cluster_on_relay_a();
    let mut args = through(c.p.sip);
    args.extend(
        [
            "--calls",
            "2",
            "--rate",
            "10",
            "--hold",
            "3s",
            "--pause-uac-media-ms",
            "700",
            "--pause-after-ms",
            "1000",
        ]
        .map(String::from),
    );
    let (code, report, stderr) = callgen(&strs(&args));
    assert_eq!(code, Some(0), "{report:#}\n{stderr}");
    assert_eq!(u(&report["calls"]["completed"]), 2, "{report:#}");
    for call in calls(&report) {
        // The callee measured the caller's pause; the caller's direction has no gap.
        let paused = f(&call["uas"]["media"]["longest_gap_ms"]);
        let other = f(&call["uac"]["media"]["longest_gap_ms"]);
        eprintln!("pause of 700 ms measured as {paused:.1} ms (other direction {other:.1} ms)");
        assert!((660.0..=740.0).contains(&paused), "{call:#}");
        assert!(other < 100.0, "{call:#}");
        // A pause is not loss: the sequence numbers go on.
        assert_eq!(call["uas"]["media"]["lost"], 0, "{call:#}");
        // It ended about 1.7 s after the callee's media started.
        let at = f(&call["uas"]["media"]["longest_gap_at_ms"]) - f(&call["uas"]["start_ms"]);
        assert!((1600.0..2000.0).contains(&at), "{call:#}");
    }
    drop(c);
}

#[test]
fn a_reinvite_that_moves_the_media_with_a_known_700_ms_pause_is_measured_around_the_reinvite() {
    let c = cluster_on_relay_a();
    let mut args = through(c.p.sip);
    args.extend(
        [
            "--calls",
            "2",
            "--rate",
            "10",
            "--hold",
            "5s",
            "--pause-on-reinvite-ms",
            "700",
        ]
        .map(String::from),
    );
    let run = Background::start(&strs(&args));
    std::thread::sleep(Duration::from_millis(1000));
    relay_job(&c.p, "/v1/relays/relay-b/undrain");
    std::thread::sleep(Duration::from_millis(500));
    relay_job(&c.p, "/v1/relays/relay-a/drain");
    let (code, report) = run.report(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(u(&report["calls"]["completed"]), 2, "{report:#}");
    for call in calls(&report) {
        let (uac, uas) = (&call["uac"], &call["uas"]);
        assert_eq!(uac["reinvites"].as_array().unwrap().len(), 1, "{call:#}");
        assert_eq!(uas["reinvites"].as_array().unwrap().len(), 1, "{call:#}");
        // The caller paused 700 ms between its last packet to relay-a and its first to
        // relay-b: the callee sees that gap around its re-INVITE.
        let around = &uas["reinvites"][0];
        let gap = f(&around["gap_ms"]);
        eprintln!(
            "re-INVITE with a 700 ms pause: gap {gap:.1} ms, to new media {} ms",
            around["to_new_media_ms"]
        );
        assert!((660.0..=740.0).contains(&gap), "{call:#}");
        assert!(port_of(&around["remote"]) != port_of(&uas["remote_media"]));
        assert!(c.b.ports.contains(&port_of(&around["remote"])), "{call:#}");
        assert!(f(&around["to_new_media_ms"]) < 800.0, "{call:#}");
        let longest = f(&uas["media"]["longest_gap_ms"]);
        assert!((660.0..=740.0).contains(&longest), "{call:#}");
        // The callee did not pause: the caller's gap is the drain's, small.
        assert!(f(&uac["media"]["longest_gap_ms"]) < 100.0, "{call:#}");
    }
}

/// 10 calls held 8 s, all anchored on relay-a; ~3 s in, relay-a is killed (`kill -9`) or
/// drained. Returns the report.
fn ten_calls_then(c: &Cluster, action: impl FnOnce()) -> Value {
    let mut args = through(c.p.sip);
    args.extend(["--calls", "10", "--rate", "10", "--hold", "8s"].map(String::from));
    let run = Background::start(&strs(&args));
    std::thread::sleep(Duration::from_millis(1500));
    // relay-b takes calls again: it is where they move.
    relay_job(&c.p, "/v1/relays/relay-b/undrain");
    std::thread::sleep(Duration::from_millis(1500));
    action();
    let (code, report) = run.report(Duration::from_secs(40));
    assert_eq!(code, Some(0), "{report:#}");
    let counts = &report["calls"];
    assert_eq!(u(&counts["completed"]), 10, "{report:#}");
    assert_eq!((u(&counts["failed"]), u(&counts["dropped"])), (0, 0));
    for call in calls(&report) {
        for side in ["uac", "uas"] {
            let s = &call[side];
            assert!(c.a.ports.contains(&port_of(&s["remote_media"])), "{call:#}");
            let reinvites = s["reinvites"].as_array().unwrap();
            assert_eq!(reinvites.len(), 1, "{side}: {call:#}");
            assert!(
                c.b.ports.contains(&port_of(&reinvites[0]["remote"])),
                "{call:#}"
            );
            // The proxy kept the side's o= and went one version up.
            assert_eq!(reinvites[0]["sdp_version"], 2, "{call:#}");
            assert_eq!(s["hangup"], if side == "uac" { "local" } else { "remote" });
        }
    }
    report
}

#[test]
fn every_call_survives_kill_9_of_its_relay_with_one_reinvite_and_a_gap_under_1_5_s() {
    let c = cluster_on_relay_a();
    let report = ten_calls_then(&c, || c.a.daemon.signal(9));
    assert!(!c.p.daemon.log().contains("panicked"));
    let worst = f(&report["longest_gap_ms"]["max"]);
    let p50 = f(&report["longest_gap_ms"]["p50"]);
    eprintln!(
        "kill -9: longest gap p50 {p50:.0} ms, max {worst:.0} ms; gap around re-INVITE p50 {} ms; \
         re-INVITE to new media p50 {} ms; packets lost {}",
        report["reinvite_gap_ms"]["p50"],
        report["reinvite_to_media_ms"]["p50"],
        report["packets"]["lost"]
    );
    // Media stopped (the relay died) and came back within 1.5 s: detection by the refused
    // health ping (ICMP port unreachable on the connected ng socket, confirmed by a second),
    // at most one ping interval after the kill, plus the re-INVITEs. Detection can be as quick
    // as one lost 20 ms packet, so "media stopped" is: packets were lost, and every side saw a
    // gap longer than one packet interval around its re-INVITE.
    assert!(worst < 1500.0, "longest gap {worst} ms");
    assert!(
        p50 > 25.0,
        "a relay died: media must have stopped ({p50} ms)"
    );
    assert!(u(&report["packets"]["lost"]) >= 1, "{report:#}");
    for call in calls(&report) {
        for side in ["uac", "uas"] {
            let r = &call[side]["reinvites"][0];
            assert!(f(&r["gap_ms"]) > 25.0, "{call:#}");
            assert!(f(&r["to_new_media_ms"]) < 500.0, "{call:#}");
        }
    }
}

#[test]
fn draining_the_relay_moves_every_call_with_a_gap_under_100_ms() {
    let c = cluster_on_relay_a();
    let report = ten_calls_then(&c, || relay_job(&c.p, "/v1/relays/relay-a/drain"));
    let worst = f(&report["longest_gap_ms"]["max"]);
    eprintln!(
        "drain: longest gap p50 {} ms, max {worst:.1} ms; gap around re-INVITE max {} ms; \
         re-INVITE to new media p50 {} ms; packets lost {}",
        report["longest_gap_ms"]["p50"],
        report["reinvite_gap_ms"]["max"],
        report["reinvite_to_media_ms"]["p50"],
        report["packets"]["lost"]
    );
    assert!(worst < 100.0, "longest gap {worst} ms");
    assert_eq!(u(&report["packets"]["lost"]), 0, "{report:#}");
}

/// Records the RTP arriving on a socket and sends each packet back where it came from (so
/// callgen measures its own packets as the other side's media).
struct Reflector {
    socket: Arc<UdpSocket>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reflector {
    fn new() -> Reflector {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, arrivals, stop) = (socket.clone(), arrivals.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        arrivals.lock().unwrap().push(Instant::now());
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        Reflector {
            socket,
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn callgens_uas_answers_sipps_reinvites_and_moves_its_media() {
    let (a, b) = (Reflector::new(), Reflector::new());
    let uas = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let run = Background::start(&[
        "--uas-only",
        "--uas",
        &uas.to_string(),
        "--calls",
        "1",
        "--hold",
        "3s",
    ]);
    let sipp = Sipp::new(
        "sipp-uac",
        &scenario("callgen_uac_reinvite.xml"),
        SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST)),
    )
    .args(["-m", "1", "-timeout", "30s", "-timeout_error"])
    .args(["-key", "rtp_a", &a.port().to_string()])
    .args(["-key", "rtp_b", &b.port().to_string()])
    .run(&uas.to_string(), Duration::from_secs(30));
    sipp.assert_success();
    let (code, report) = run.report(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{report:#}");
    let call = &calls(&report)[0];
    let s = &call["uas"];
    assert_eq!(s["outcome"], "completed", "{call:#}");
    assert_eq!(s["hangup"], "remote");
    let reinvites = s["reinvites"].as_array().unwrap();
    assert_eq!(reinvites.len(), 2, "{call:#}");
    assert_eq!(port_of(&reinvites[0]["remote"]), b.port());
    assert_eq!(reinvites[0]["sdp_version"], 2);
    assert_eq!(reinvites[1]["sdp_version"], 3);
    // Its own packets came back from the new address soon after the re-INVITE.
    let to_new = f(&reinvites[0]["to_new_media_ms"]);
    assert!((0.0..200.0).contains(&to_new), "{call:#}");
    // RTP went to rtp_a until the first re-INVITE, then to rtp_b, and stopped at the
    // inactive re-INVITE: 1.5 s each at 50 packets/s.
    let (at_a, at_b) = (a.arrivals(), b.arrivals());
    assert!(
        (60..=90).contains(&at_a.len()),
        "{} packets at rtp_a",
        at_a.len()
    );
    assert!(
        (60..=90).contains(&at_b.len()),
        "{} packets at rtp_b",
        at_b.len()
    );
    assert!(
        at_a.last().unwrap() < at_b.first().unwrap(),
        "no packet to rtp_a after the move"
    );
    let m = &s["media"];
    assert_eq!(m["lost"], 0, "{call:#}");
    // Hold (inactive) is not a gap; the move is a small one.
    assert!(f(&m["longest_gap_ms"]) < 200.0, "{call:#}");
    eprintln!(
        "SIPp re-INVITE: callgen's own media back from the new address after {to_new:.1} ms; \
         longest gap {} ms",
        m["longest_gap_ms"]
    );
}

#[test]
fn a_busy_or_silent_uas_fails_calls_and_breaks_max_failed() {
    let uas = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let direct = [
        "--proxy".to_string(),
        uas.to_string(),
        "--uas".to_string(),
        uas.to_string(),
    ];
    let mut args = direct.to_vec();
    args.extend(
        [
            "--calls",
            "3",
            "--rate",
            "50",
            "--uas-answer",
            "486",
            "--max-failed",
            "0",
        ]
        .map(String::from),
    );
    let (code, report, stderr) = callgen(&strs(&args));
    assert_eq!(code, Some(1), "a broken threshold exits 1: {report:#}");
    assert!(
        stderr.contains("threshold broken: 3 calls failed or dropped"),
        "{stderr}"
    );
    assert_eq!(u(&report["calls"]["failed"]), 3);
    assert!(calls(&report).iter().all(|c| c["uac"]["status"] == 486));
    assert_eq!(report["thresholds"]["broken"].as_array().unwrap().len(), 1);

    let mut args = direct.to_vec();
    args.extend(
        [
            "--calls",
            "2",
            "--rate",
            "50",
            "--uas-answer",
            "none",
            "--answer-timeout",
            "500ms",
            "--no-media",
        ]
        .map(String::from),
    );
    let (code, report, _) = callgen(&strs(&args));
    assert_eq!(code, Some(0), "no threshold given: {report:#}");
    assert_eq!(u(&report["calls"]["failed"]), 2);
    for call in calls(&report) {
        assert_eq!(call["uac"]["status"], 487, "{call:#}");
        assert_eq!(call["uas"]["status"], 487, "{call:#}");
        assert!(
            call["uac"]["reason"]
                .as_str()
                .unwrap()
                .contains("cancelled"),
            "{call:#}"
        );
    }
    assert_eq!(report["options"]["media"], false);
}

#[test]
fn uac_and_uas_in_separate_processes_with_the_uas_hanging_up() {
    let uas = SocketAddr::new(LOCALHOST, free_udp_port(LOCALHOST));
    let server = Background::start(&[
        "--uas-only",
        "--uas",
        &uas.to_string(),
        "--calls",
        "3",
        "--hold",
        "2s",
        "--bye-by",
        "uas",
    ]);
    let (code, client, stderr) = callgen(&[
        "--uac-only",
        "--proxy",
        &uas.to_string(),
        "--uas",
        &uas.to_string(),
        "--calls",
        "3",
        "--rate",
        "20",
        "--hold",
        "2s",
        "--bye-by",
        "uas",
        "--max-failed",
        "0",
        "--max-gap-ms",
        "100",
    ]);
    assert_eq!(code, Some(0), "{client:#}\n{stderr}");
    let (code, server) = server.report(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{server:#}");
    for (report, side, hangup) in [(&client, "uac", "remote"), (&server, "uas", "local")] {
        assert_eq!(report["options"]["mode"], side);
        assert_eq!(u(&report["calls"]["completed"]), 3, "{report:#}");
        for call in calls(report) {
            assert_eq!(call[side]["hangup"], hangup, "{call:#}");
            assert!(call[if side == "uac" { "uas" } else { "uac" }].is_null());
            let m = &call[side]["media"];
            assert!(u(&m["received"]) >= 90, "{call:#}");
            assert_eq!(m["lost"], 0, "{call:#}");
        }
    }
}
