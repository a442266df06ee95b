//! Test support for system tests that drive real peers (SIPp, Kamailio, rtpengine, Redis).
//!
//! * [`require_tool`] fails the test with a message naming the missing tool and the Debian
//!   package that provides it — a test never skips silently.
//! * [`free_udp_port`] / [`free_port`] pick ports nobody uses, so tests run in parallel.
//! * [`netns::Netns`] gives a test non-loopback addresses in a network namespace of its own;
//!   [`lan::Lan`] a LAN of named hosts (namespaces behind a bridge), and [`keepalived`] a real
//!   keepalived moving a virtual IP between them.
//! * [`Daemon`] runs a child process with its output in a log file and kills it (and its
//!   process group) when dropped, so every process a test starts is stopped, even on panic.
#![warn(missing_docs)]

pub mod audio;
pub mod baresip;
pub mod calls;
pub mod keepalived;
pub mod lan;
pub mod media;
pub mod netns;
pub mod redis;
pub mod rtpproxy;
pub mod sipp;
pub mod srtp;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Returns the path of `tool` on `PATH`, or panics naming it and the Debian `package` that
/// provides it. `scripts/test` installs every such package.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    find_on_path(tool).unwrap_or_else(|| {
        panic!(
            "missing tool `{tool}` (Debian package `{package}`): this test drives the real \
             {tool}; run `scripts/test`, which installs it, or `apt-get install {package}`"
        )
    })
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// A UDP port on `ip` that is free at the time of the call.
pub fn free_udp_port(ip: IpAddr) -> u16 {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind an ephemeral UDP port");
    socket.local_addr().expect("local address").port()
}

/// A port on `ip` that is free for both UDP and TCP (a SIP listener uses both).
pub fn free_port(ip: IpAddr) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind an ephemeral UDP port");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on {ip} after 100 tries");
}

/// `count` consecutive UDP ports on `ip`, starting at an even port, all free now (SIPp and
/// media endpoints bind RTP and RTCP side by side).
pub fn free_udp_block(ip: IpAddr, count: u16) -> u16 {
    // Below the ephemeral range first: there, only what asked for fixed ports binds, whereas
    // a thousand ephemeral sockets of a busy machine (a soak or a benchmark holding thousands
    // of ports, SIPp's media) leave no run of free ports among the ephemeral ones. The scan
    // starts from a point that differs per process and call, so that concurrent tests rarely
    // probe the same blocks.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (low, step) = (10_000u32, u32::from(count.max(2)).next_multiple_of(2));
    let slots = u32::from(ephemeral_start()).saturating_sub(low + step) / step;
    let first = (std::process::id().wrapping_mul(7_919) + n.wrapping_mul(104_729)) % slots.max(1);
    for i in 0..slots {
        let base = low + ((first + i) % slots) * step;
        let Ok(base) = u16::try_from(base) else {
            continue;
        };
        if (base..base + count).all(|p| UdpSocket::bind(SocketAddr::new(ip, p)).is_ok()) {
            return base;
        }
    }
    for _ in 0..200 {
        let base = free_udp_port(ip) & !1;
        if base < 1024 || base > 65535 - count {
            continue;
        }
        let all_free =
            (base..base + count).all(|p| UdpSocket::bind(SocketAddr::new(ip, p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no block of {count} free UDP ports on {ip}");
}

/// The first port of the kernel's ephemeral range (32768 by default).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
}

/// `count` consecutive free UDP ports on loopback below the kernel's ephemeral range (32768
/// by default), so that no ephemeral port another test or tool binds meanwhile lands inside:
/// for relays that need thousands of media ports.
pub fn free_udp_block_below_ephemeral(count: u16) -> u16 {
    let ephemeral_start = ephemeral_start();
    let mut base: u16 = 2_000;
    while u32::from(base) + u32::from(count) <= u32::from(ephemeral_start) {
        let free = (base..base + count).all(|p| UdpSocket::bind((LOCALHOST, p)).is_ok());
        if free {
            return base;
        }
        base += 1_000;
    }
    panic!("no block of {count} free UDP ports below {ephemeral_start}");
}

/// 127.0.0.1.
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A child process that is killed, with its whole process group, when dropped.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Daemon {
    /// Starts `command` in a process group of its own with stdout and stderr written to a log
    /// file in a fresh temporary directory.
    pub fn spawn(name: &str, command: &mut Command) -> Daemon {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = dir.path().join(format!("{name}.log"));
        let mut daemon = Self::spawn_logged(name, command, &log);
        daemon._dir = Some(dir);
        daemon
    }

    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn_logged(name: &str, command: &mut Command, log: &Path) -> Daemon {
        use std::os::unix::process::CommandExt;
        let out = File::create(log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            _dir: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `libc::SIGSTOP`) to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we own; no memory is involved.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits until `ready` (given the daemon, e.g. to read its log) returns true, panicking
    /// with the log after `timeout`, or at once if the process exits.
    pub fn wait_until(&mut self, timeout: Duration, ready: impl FnMut(&Daemon) -> bool) {
        if let Err(why) = self.ready_within(timeout, ready) {
            panic!("{why}");
        }
    }

    /// Waits until `ready` returns true; the reason with the log if the process exits first
    /// or `timeout` passes.
    pub fn ready_within(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&Daemon) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} not ready after {timeout:?}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself, killing it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: signals to the process group we created for the child.
        unsafe {
            libc::kill(-pid, libc::SIGCONT);
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a TCP connection to `addr` succeeds now.
pub fn tcp_accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
}

/// One HTTP/1.1 request (a JSON body when `body` is not empty); returns the status and the
/// body. For the management API and `/metrics` of the servers under test.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, body, &[])
}

/// [`http`] with extra request header lines (`"Authorization: Bearer x"`).
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[&str],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap_or_else(|e| panic!("cannot send to {addr}: {e}"));
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("cannot read from {addr}: {e}"));
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// An `anchorage relay` process with 100 media ports of its own (a free block on loopback),
/// one worker thread and no delete delay; stopped on drop.
pub struct AnchorageRelay {
    /// The process.
    pub daemon: Daemon,
    /// Its ng port on 127.0.0.1 (on its host's address for a relay on a host of a test LAN,
    /// [`AnchorageRelay::start_in`]).
    pub ng: u16,
    /// Its media ports.
    pub ports: std::ops::RangeInclusive<u16>,
}

impl AnchorageRelay {
    /// Starts `bin relay …` with `extra` arguments and waits until its ng socket is bound.
    /// Its ng port is picked free, then bound by the relay: on a busy machine another process
    /// may take it in between, so a start that finds it taken is tried again on other ports.
    pub fn start(bin: &std::path::Path, extra: &[&str]) -> AnchorageRelay {
        let mut tries = 0;
        loop {
            tries += 1;
            let ng = free_udp_port(LOCALHOST);
            let base = free_udp_block(LOCALHOST, 100);
            let ports = base..=base + 99;
            let mut cmd = std::process::Command::new(bin);
            cmd.args(["relay", "--interface", "127.0.0.1", "--num-threads", "1"])
                .args(["--delete-delay", "0"])
                .args(["--listen-ng", &format!("127.0.0.1:{ng}")])
                .args(["--port-min", &ports.start().to_string()])
                .args(["--port-max", &ports.end().to_string()])
                .args(extra);
            let mut daemon = Daemon::spawn("anchorage-relay", &mut cmd);
            match daemon.ready_within(Duration::from_secs(10), |d| d.log().contains("ng on udp:")) {
                Ok(()) => return AnchorageRelay { daemon, ng, ports },
                Err(why) if tries < 3 && why.contains("Address already in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Starts `bin relay …` on a host of a test LAN: ng on `HOST:ng` (commands accepted from
    /// the LAN), media on `ports` of the host's address, one worker thread, no delete delay;
    /// waits until its ng socket is bound. The host's namespace is the test's own, so the
    /// ports are free.
    pub fn start_in(
        host: &lan::LanHost,
        bin: &std::path::Path,
        ng: u16,
        ports: std::ops::RangeInclusive<u16>,
        extra: &[&str],
    ) -> AnchorageRelay {
        let ip = host.addr();
        let mut cmd = host.command(bin);
        cmd.args([
            "relay",
            "--interface",
            &ip.to_string(),
            "--num-threads",
            "1",
        ])
        .args(["--delete-delay", "0"])
        .args(["--listen-ng", &SocketAddr::new(ip, ng).to_string()])
        .args(["--control-allow", lan::Lan::NETWORK])
        .args(["--port-min", &ports.start().to_string()])
        .args(["--port-max", &ports.end().to_string()])
        .args(extra);
        let mut daemon = Daemon::spawn("anchorage-relay", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| d.log().contains("ng on udp:"));
        AnchorageRelay { daemon, ng, ports }
    }
}

/// One ng request of `entries` (every value a string, bencoded) to the ng relay (`anchorage
/// relay` or rtpengine) on 127.0.0.1:`port`, with a cookie of its own; its reply, waited for
/// up to 2 s.
pub fn ng_request(port: u16, entries: &[(&str, &str)]) -> anchorage_ng::Reply {
    use anchorage_ng::{Dict, Encoding, Value};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let client = UdpSocket::bind((LOCALHOST, 0)).expect("a UDP socket");
    let dict: Dict = entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::text(*v)))
        .collect();
    let (_, document) = anchorage_ng::encode_document(&dict, Encoding::Bencode);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut datagram = format!("ng-{}-{n} ", std::process::id()).into_bytes();
    datagram.extend_from_slice(&document);
    client
        .send_to(&datagram, (LOCALHOST, port))
        .expect("send ng");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    let mut buf = vec![0u8; 65_536];
    let (n, _) = client.recv_from(&mut buf).expect("an ng reply");
    anchorage_ng::decode_reply(&buf[..n]).expect("a reply").2
}

/// The SDP of an ng reply, which must be a success.
pub fn ng_sdp(reply: &anchorage_ng::Reply) -> String {
    assert_eq!(reply.outcome, anchorage_ng::Outcome::Ok, "{reply:?}");
    String::from_utf8(reply.sdp.clone().expect("an SDP").to_vec()).expect("SDP text")
}

/// The Call-IDs an ng relay (`anchorage relay` or rtpengine) on 127.0.0.1:`port` holds, by
/// its `list` command.
/// A relay starved of CPU on a loaded machine may take seconds: the command is sent again
/// (with a new cookie) up to three times, 2 s apart.
pub fn ng_list(port: u16) -> Vec<String> {
    ng_list_at(SocketAddr::new(LOCALHOST, port))
}

/// [`ng_list`] of the relay at `addr` (from a thread inside its LAN for a relay on a test LAN:
/// `host.run(|| ng_list_at(addr))`).
pub fn ng_list_at(addr: SocketAddr) -> Vec<String> {
    let local = if addr.ip().is_loopback() {
        "127.0.0.1:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = std::net::UdpSocket::bind(local).expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    // A cookie of its own each time: rtpengine answers a cookie it has seen with its cached
    // reply, so a second `list-1` would show the calls of the first.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut buf = [0u8; 65535];
    for _ in 0..3 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let command = format!("list-{}-{n} d7:command4:liste", std::process::id());
        socket
            .send_to(command.as_bytes(), addr)
            .expect("the list command sent");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let (_, _, reply) = anchorage_ng::decode_reply(&buf[..n]).expect("an ng reply");
            return reply.calls.unwrap_or_default();
        }
    }
    panic!("the relay at ng {addr} did not answer list within 6 s");
}

/// A running `anchorage proxy` with its management API, anchoring every call on a relay set
/// `main` of the given ng ports (nodes `relay-a`, `relay-b`, …), with `replace-origin` both ways.
pub struct AnchorageProxy {
    /// The process.
    pub daemon: Daemon,
    /// Its SIP address (UDP on 127.0.0.1).
    pub sip: SocketAddr,
    /// Its API address.
    pub api: SocketAddr,
    bin: std::path::PathBuf,
    exec: Option<lan::NsExec>,
    _config: tempfile::NamedTempFile,
}

impl AnchorageProxy {
    /// Starts `bin proxy` on free ports with relays at `relay_ng` ports and `extra`
    /// configuration appended; waits until its API serves.
    pub fn start(bin: &std::path::Path, relay_ng: &[u16], extra: &str) -> AnchorageProxy {
        let nodes: Vec<String> = relay_ng
            .iter()
            .enumerate()
            .map(|(i, ng)| {
                let name = char::from(b'a' + i as u8);
                format!("  {{ name = \"relay-{name}\", ng = \"127.0.0.1:{ng}\" }},\n")
            })
            .collect();
        Self::with_config(
            bin,
            &format!(
                "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n{}]\n\n\
                 [proxy.media]\nset = \"main\"\ncaller_flags = \"replace-origin\"\ncallee_flags = \"replace-origin\"\n{extra}",
                nodes.concat()
            ),
        )
    }

    /// Starts `bin proxy` on free ports with `config` as its whole configuration; waits until
    /// its API serves.
    /// Like a relay's, its ports are tried again if another process took one meanwhile.
    pub fn with_config(bin: &std::path::Path, config_text: &str) -> AnchorageProxy {
        let mut config = tempfile::NamedTempFile::new().expect("a temporary file");
        std::io::Write::write_all(&mut config, config_text.as_bytes())
            .expect("the configuration written");
        let mut tries = 0;
        loop {
            tries += 1;
            let sip = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
            let api = SocketAddr::new(LOCALHOST, free_port(LOCALHOST));
            match Self::try_spawn(bin, None, sip, api, config.path()) {
                Ok(daemon) => {
                    return AnchorageProxy {
                        daemon,
                        sip,
                        api,
                        bin: bin.to_path_buf(),
                        exec: None,
                        _config: config,
                    }
                }
                Err(why) if tries < 3 && why.contains("in use") => continue,
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Starts `bin proxy` on a host of a test LAN with `config` as its whole configuration,
    /// SIP on UDP and TCP `sip` (a virtual IP the host need not hold: the LAN's hosts bind
    /// addresses they do not have) and the API on `api`; waits until its API serves. Restarts
    /// ([`AnchorageProxy::start_again`]) run it on the same host.
    pub fn in_lan(
        host: &lan::LanHost,
        bin: &std::path::Path,
        sip: SocketAddr,
        api: SocketAddr,
        config_text: &str,
    ) -> AnchorageProxy {
        let mut config = tempfile::NamedTempFile::new().expect("a temporary file");
        std::io::Write::write_all(&mut config, config_text.as_bytes())
            .expect("the configuration written");
        let exec = host.exec();
        let daemon = Self::spawn(bin, Some(&exec), sip, api, config.path());
        AnchorageProxy {
            daemon,
            sip,
            api,
            bin: bin.to_path_buf(),
            exec: Some(exec),
            _config: config,
        }
    }

    fn spawn(
        bin: &std::path::Path,
        exec: Option<&lan::NsExec>,
        sip: SocketAddr,
        api: SocketAddr,
        config: &Path,
    ) -> Daemon {
        Self::try_spawn(bin, exec, sip, api, config).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_spawn(
        bin: &std::path::Path,
        exec: Option<&lan::NsExec>,
        sip: SocketAddr,
        api: SocketAddr,
        config: &Path,
    ) -> Result<Daemon, String> {
        let mut cmd = match exec {
            Some(exec) => exec.command(bin),
            None => std::process::Command::new(bin),
        };
        cmd.args(["proxy", "--listen", &format!("udp:{sip}")]);
        if exec.is_some() {
            // On a test LAN the address is the test's own: TCP on it too (a TCP party).
            cmd.args(["--listen", &format!("tcp:{sip}")]);
        }
        cmd.args(["--api", &api.to_string(), "-c"]).arg(config);
        let mut daemon = Daemon::spawn("anchorage-proxy", &mut cmd);
        daemon.ready_within(Duration::from_secs(10), |d| d.log().contains("/metrics on"))?;
        Ok(daemon)
    }

    /// `kill -9` of the process, then the same proxy started again (same configuration, SIP
    /// and API addresses), as a supervisor would restart it.
    pub fn kill_and_restart(&mut self) {
        self.kill_9();
        self.start_again();
    }

    /// `kill -9` of the process, then a proxy started on the same SIP and API addresses with
    /// its configuration changed by `edit` — another node (another `[node] id`) taking the
    /// address over, as after a virtual IP moved.
    pub fn kill_and_restart_with(&mut self, edit: impl FnOnce(&str) -> String) {
        self.kill_9();
        let path = self._config.path();
        let config = std::fs::read_to_string(path).expect("the proxy's configuration read");
        std::fs::write(path, edit(&config)).expect("the proxy's configuration written");
        self.start_again();
    }

    /// `kill -9` of the process (and waits for it to exit); [`AnchorageProxy::start_again`]
    /// starts it again.
    pub fn kill_9(&mut self) {
        self.daemon.signal(9);
        self.daemon.wait_exit(Duration::from_secs(5));
    }

    /// Starts the proxy again with the same configuration, SIP and API addresses (after
    /// [`AnchorageProxy::kill_9`]); waits until its API serves.
    pub fn start_again(&mut self) {
        self.daemon = Self::spawn(
            &self.bin,
            self.exec.as_ref(),
            self.sip,
            self.api,
            self._config.path(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "missing tool `anchorage-no-such-tool` (Debian package `nope`)")]
    fn a_missing_tool_fails_naming_it() {
        require_tool("anchorage-no-such-tool", "nope");
    }

    #[test]
    fn a_present_tool_is_found() {
        assert!(require_tool("sh", "dash").is_file());
    }

    /// Whether a process of group `pgid` exists that is not a zombie.
    fn group_has_live_member(pgid: i32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // Fields after the command name: state ppid pgrp ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
    }

    #[test]
    fn free_port_is_bindable_for_udp_and_tcp() {
        let port = free_port(LOCALHOST);
        UdpSocket::bind((LOCALHOST, port)).unwrap();
        TcpListener::bind((LOCALHOST, port)).unwrap();
    }

    #[test]
    fn dropping_a_daemon_kills_it_and_its_children() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 300 & echo started; wait"]);
        let mut daemon = Daemon::spawn("sleeper", &mut cmd);
        daemon.wait_until(Duration::from_secs(5), |d| d.log().contains("started"));
        let pgid = daemon.pid() as i32;
        drop(daemon);
        // The orphaned `sleep` is reaped by init; allow it a moment. A zombie still counts
        // for kill(0), so look at the process state instead.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && group_has_live_member(pgid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !group_has_live_member(pgid),
            "process group {pgid} survived the drop"
        );
    }
}
