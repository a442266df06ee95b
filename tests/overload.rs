//! Overload is shed, not suffered: SIPp places calls with media at twice the highest rate the
//! release build passes cleanly on this kind of machine (2,000/s measured by
//! `bench/cps.sh --media`) for 30 s. The proxy must live through it, shed what it cannot carry
//! with 503s, never take its living relay for dead, stay under a memory bound, and carry the
//! next step at 1,000/s with zero failed calls.
//!
//! It runs the **release** binary: the debug build's capacity is a fraction of it and says
//! nothing about the product's. `scripts/test` builds it first and names it in
//! `ANCHORAGE_RELEASE_BIN`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::{
    free_port, free_udp_block_below_ephemeral, free_udp_port, http, require_tool, Daemon, LOCALHOST,
};

/// The proxy's resident memory must stay under this through the overload (the transaction
/// bound, `[proxy.overload] max_transactions` = 200,000, is what holds it).
const RSS_BOUND_MIB: u64 = 1_024;

fn release_bin() -> PathBuf {
    let path = std::env::var("ANCHORAGE_RELEASE_BIN").unwrap_or_else(|_| {
        panic!(
            "ANCHORAGE_RELEASE_BIN is not set: this test needs the release build of anchorage \
             (scripts/test builds it and sets it; or `cargo build --release` and point the \
             variable at target/release/anchorage)"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "ANCHORAGE_RELEASE_BIN names no file: {}",
        path.display()
    );
    path
}

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// One SIPp caller step without message tracing (hundreds of thousands of messages): returns
/// its exit code.
fn caller_step(sipp: &Path, proxy: SocketAddr, uas: u16, rate: u32, seconds: u32) -> Option<i32> {
    let port = free_udp_port(LOCALHOST);
    let mut cmd = Command::new(sipp);
    cmd.arg("-sf")
        .arg(scenario("uac_media.xml"))
        .args(["-key", "rtp_port", "4000", "-i", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-rsa", &proxy.to_string()])
        .args(["-m", &(rate * seconds).to_string(), "-r", &rate.to_string()])
        .args(["-rp", "1000", "-d", "1000", "-l", &(rate * 4).to_string()])
        .args(["-buff_size", "4194304", "-nostdin", "-timeout", "90s"])
        .arg(format!("127.0.0.1:{uas}"));
    let mut daemon = Daemon::spawn("sipp-uac", &mut cmd);
    daemon
        .wait_exit(Duration::from_secs(u64::from(seconds) + 100))
        .and_then(|s| s.code())
}

#[test]
fn twice_the_clean_rate_for_30_s_is_shed_and_the_next_step_at_1000_per_s_passes() {
    let sipp = require_tool("sipp", "sip-tester");
    let bin = release_bin();
    let ng = free_udp_port(LOCALHOST);
    let media = free_udp_block_below_ephemeral(20_000);
    let mut relay_cmd = Command::new(&bin);
    relay_cmd
        .args(["relay", "--interface", "127.0.0.1", "--delete-delay", "0"])
        .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
        .args(["--port-min", &media.to_string()])
        .args(["--port-max", &(media + 19_999).to_string()]);
    let mut relay = Daemon::spawn("anchorage-relay", &mut relay_cmd);
    relay.wait_until(Duration::from_secs(10), |d| d.log().contains("ng on udp:"));
    let sip = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{{ name = \"relay\", ng = \"127.0.0.1:{ng}\" }}]\n\n\
             [proxy.media]\nset = \"main\"\ncaller_flags = \"replace-origin\"\ncallee_flags = \"replace-origin\"\n"
        ),
    )
    .unwrap();
    let mut proxy_cmd = Command::new(&bin);
    proxy_cmd
        .args(["proxy", "--listen", &format!("udp:{sip}")])
        .args(["--api", &api.to_string(), "-c"])
        .arg(config.path());
    let mut proxy = Daemon::spawn("anchorage-proxy", &mut proxy_cmd);
    proxy.wait_until(Duration::from_secs(10), |d| d.log().contains("/metrics on"));
    let uas_port = free_udp_port(LOCALHOST);
    let mut uas_cmd = Command::new(&sipp);
    uas_cmd
        .arg("-sf")
        .arg(scenario("uas_media.xml"))
        .args(["-key", "rtp_port", "4002", "-i", "127.0.0.1"])
        .args([
            "-p",
            &uas_port.to_string(),
            "-buff_size",
            "4194304",
            "-nostdin",
        ]);
    let _uas = Daemon::spawn("sipp-uas", &mut uas_cmd);
    std::thread::sleep(Duration::from_millis(500));

    // 4,000 calls/s for 30 s, the proxy's memory sampled meanwhile.
    let pid = proxy.pid();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_mib(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    let started = Instant::now();
    let overload = caller_step(&sipp, sip, uas_port, 4_000, 30);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "overload step: SIPp exit {overload:?} after {:?}, proxy peak RSS {peak} MiB",
        started.elapsed()
    );
    assert!(proxy.is_running(), "the proxy died:\n{}", proxy.log());
    assert!(relay.is_running(), "the relay died:\n{}", relay.log());
    assert!(peak > 0 && peak < RSS_BOUND_MIB, "peak RSS {peak} MiB");
    let (status, page) = http(api, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let shed: u64 = page
        .lines()
        .filter(|l| l.starts_with("anchorage_sip_rejected_total "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    eprintln!("calls refused with an error by the proxy during the overload: {shed}");
    assert!(
        !proxy.log().contains("relay node is down"),
        "the living relay was declared dead:\n{}",
        proxy.log()
    );
    // The load drops: the next step at 1,000/s passes with zero failed calls.
    std::thread::sleep(Duration::from_secs(3));
    let recovery = caller_step(&sipp, sip, uas_port, 1_000, 10);
    assert_eq!(
        recovery,
        Some(0),
        "the 1,000/s step after the overload failed calls"
    );
    assert!(proxy.is_running());
    assert!(!proxy.log().contains("panicked"));
}
