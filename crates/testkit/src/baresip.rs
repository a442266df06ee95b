//! baresip (Debian `baresip-core`) as a real SIP phone in the system tests.
//!
//! Each [`Baresip`] runs in a directory of its own (`baresip -f DIR`) holding:
//!
//! * `config`: SIP on 127.0.0.1 at a free port, the SDP address pinned to 127.0.0.1
//!   (`net_interface`), RTP ports from a free block, no audio driver: the `aufile` source
//!   plays a tone written for this phone (`tone.wav`, 8 kHz mono) and the `sndfile` filter
//!   records what the phone sends and what it decodes (`dump-…-enc.wav`, `dump-…-dec.wav`);
//!   codecs `g711` only; media encryption `srtp` and `dtls_srtp`; no STUN, TURN or ICE; the
//!   `ctrl_tcp` module on a free TCP port, through which the test sends commands (`dial`,
//!   `accept`, `hangup`, `quit` of the `menu` module) and receives every event.
//! * `accounts`: one account `<sip:USER@127.0.0.1>;regint=0;answermode=manual`, with
//!   `;mediaenc=…` for [`MediaEnc::Sdes`] (`srtp-mand`) or [`MediaEnc::Dtls`] (`dtls_srtp`),
//!   and `;outbound="sip:PROXY;lr"` when the phone sends every request through a proxy.
//!
//! baresip runs with `-s` (SIP trace): every message it sends or receives is in its log,
//! which [`Baresip::received`] reads. The process is killed with its group on drop; tests
//! hang up and [`Baresip::quit`] first so the recordings are closed properly.
//!
//! Without baresip the test fails naming `baresip` and the package `baresip-core`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::audio::{read_wav, write_tone, Pcm};
use crate::{free_port, free_udp_block, require_tool, Daemon, LOCALHOST};

/// Where Debian's `baresip-core` installs the modules.
pub const MODULE_DIR: &str = "/usr/lib/baresip/modules";

/// The modules a phone loads (all in `baresip-core`).
const MODULES: [&str; 6] = [
    "g711.so",
    "aufile.so",
    "sndfile.so",
    "srtp.so",
    "dtls_srtp.so",
    "menu.so",
];

/// How a phone protects its media (baresip's account parameter `mediaenc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEnc {
    /// Plain RTP (`RTP/AVP`).
    Plain,
    /// SDES-SRTP required (`mediaenc=srtp-mand`: `RTP/SAVP` with `a=crypto`).
    Sdes,
    /// DTLS-SRTP (`mediaenc=dtls_srtp`: `UDP/TLS/RTP/SAVP` with `a=fingerprint`).
    Dtls,
}

impl MediaEnc {
    fn account_param(self) -> &'static str {
        match self {
            MediaEnc::Plain => "",
            MediaEnc::Sdes => ";mediaenc=srtp-mand",
            MediaEnc::Dtls => ";mediaenc=dtls_srtp",
        }
    }
}

/// A phone to start: its user name, media encryption, the tone it sends and its proxy.
#[derive(Debug, Clone)]
pub struct Phone {
    /// The user part of its address of record (`sip:USER@127.0.0.1`).
    pub user: String,
    /// Media encryption.
    pub mediaenc: MediaEnc,
    /// Frequency of the tone it sends, in Hz.
    pub tone_hz: f64,
    /// The proxy every request goes through (`outbound`), or none to send to the
    /// Request-URI directly.
    pub outbound: Option<SocketAddr>,
}

/// A running baresip, controlled over `ctrl_tcp`.
pub struct Baresip {
    daemon: Daemon,
    /// Its SIP address (UDP on 127.0.0.1).
    pub sip: SocketAddr,
    /// Its address of record.
    pub aor: String,
    ctrl: TcpStream,
    inbox: Arc<Mutex<Vec<serde_json::Value>>>,
    next_token: u64,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Starts baresip for `phone` and waits until it is ready and its control socket
    /// answers. Fails naming `baresip` (package `baresip-core`) when it is not installed.
    pub fn start(name: &str, phone: &Phone) -> Baresip {
        Self::start_at(name, phone, None, "")
    }

    /// [`Baresip::start`] on a host of a test LAN: SIP, media and the control socket on the
    /// host's address, its account `<sip:USER@ADDR;transport=TRANSPORT>` (`"udp"` or `"tcp"`:
    /// baresip listens on both, and writes this transport in the Contact of what it sends),
    /// and `outbound` with `;transport=TRANSPORT` too.
    pub fn start_in_lan(
        name: &str,
        phone: &Phone,
        host: &crate::lan::LanHost,
        transport: &str,
    ) -> Baresip {
        Self::start_at(name, phone, Some(host), transport)
    }

    /// [`Baresip::start`] on `host` (this machine's loopback when `None`), with a transport
    /// parameter for the account (none when empty).
    fn start_at(
        name: &str,
        phone: &Phone,
        host: Option<&crate::lan::LanHost>,
        transport: &str,
    ) -> Baresip {
        let binary = require_tool("baresip", "baresip-core");
        for module in MODULES {
            let path = Path::new(MODULE_DIR).join(module);
            assert!(
                path.is_file(),
                "missing {} (Debian package `baresip-core`): this test drives the real baresip; \
                 run `scripts/test`, which installs it, or `apt-get install baresip-core`",
                path.display()
            );
        }
        let mut last_log = String::new();
        // A port chosen free can be taken before baresip binds it: a few tries.
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let ip = host.map_or(LOCALHOST, |h| h.addr());
            let in_host = |f: &(dyn Fn() -> u16 + Sync)| match host {
                Some(h) => h.run(f),
                None => f(),
            };
            let sip = SocketAddr::new(ip, in_host(&|| free_port(ip)));
            let ctrl = SocketAddr::new(ip, in_host(&|| free_port(ip)));
            let rtp = in_host(&|| free_udp_block(ip, 20));
            let tone = dir.path().join("tone.wav");
            // Two minutes of tone at about -12 dBFS; aufile loads it whole and stops at its end.
            write_tone(&tone, phone.tone_hz, 8000, 120, 8000).expect("the tone file written");
            let transport_param = if transport.is_empty() {
                String::new()
            } else {
                format!(";transport={transport}")
            };
            let aor = format!("sip:{}@{ip}{transport_param}", phone.user);
            std::fs::write(
                dir.path().join("config"),
                config(dir.path(), sip, ctrl, rtp, &tone),
            )
            .expect("the config written");
            let outbound = phone
                .outbound
                .map(|p| format!(";outbound=\"sip:{p}{transport_param};lr\""))
                .unwrap_or_default();
            std::fs::write(
                dir.path().join("accounts"),
                format!(
                    "<{aor}>;regint=0;answermode=manual{}{outbound}\n",
                    phone.mediaenc.account_param()
                ),
            )
            .expect("the accounts written");
            let mut command = match host {
                Some(h) => h.command(&binary),
                None => Command::new(&binary),
            };
            command.arg("-f").arg(dir.path()).arg("-s");
            let mut daemon =
                Daemon::spawn_logged(name, &mut command, &dir.path().join("baresip.log"));
            let deadline = Instant::now() + Duration::from_secs(10);
            while daemon.is_running()
                && !daemon.log().contains("baresip is ready.")
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            let connected = if daemon.is_running() && daemon.log().contains("baresip is ready.") {
                let connect = || TcpStream::connect_timeout(&ctrl, Duration::from_secs(2)).ok();
                match host {
                    Some(h) => h.run(connect),
                    None => connect(),
                }
            } else {
                None
            };
            let Some(stream) = connected else {
                last_log = daemon.log();
                continue;
            };
            let inbox = Arc::new(Mutex::new(Vec::new()));
            let reader = stream
                .try_clone()
                .expect("a second handle on the control socket");
            let sink = Arc::clone(&inbox);
            std::thread::spawn(move || read_netstrings(reader, &sink));
            return Baresip {
                daemon,
                sip,
                aor,
                ctrl: stream,
                inbox,
                next_token: 0,
                dir,
            };
        }
        panic!("{name}: baresip did not start in 3 tries; its last log:\n{last_log}");
    }

    /// Runs a `ctrl_tcp` command (`dial`, `accept`, `hangup`, `quit`, …) and returns its
    /// response; panics if baresip does not answer within 5 s or answers with an error.
    pub fn command(&mut self, command: &str, params: &str) -> serde_json::Value {
        self.next_token += 1;
        let token = format!("t{}", self.next_token);
        let message =
            serde_json::json!({"command": command, "params": params, "token": token}).to_string();
        self.ctrl
            .write_all(format!("{}:{message},", message.len()).as_bytes())
            .unwrap_or_else(|e| panic!("cannot send {command} to baresip: {e}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self
                .inbox
                .lock()
                .map(|m| {
                    m.iter()
                        .find(|v| v["response"] == true && v["token"] == token.as_str())
                        .cloned()
                })
                .unwrap_or_default();
            if let Some(answer) = answer {
                assert_eq!(
                    answer["ok"],
                    true,
                    "baresip refused {command} {params}: {answer}\n{}",
                    self.log()
                );
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "baresip did not answer {command} {params}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Calls `uri`.
    pub fn dial(&mut self, uri: &str) {
        self.command("dial", uri);
    }

    /// Answers the incoming call.
    pub fn accept(&mut self) {
        self.command("accept", "");
    }

    /// Hangs up the current call.
    pub fn hangup(&mut self) {
        self.command("hangup", "");
    }

    /// Asks baresip to quit and gives it 2 s to exit (baresip 1.0 may wait for its SIP transactions; drop kills it). A call hung up has closed its recordings already.
    pub fn quit(&mut self) {
        // The answer may not come: baresip can close the socket as it quits.
        let message = r#"{"command":"quit","params":"","token":"quit"}"#;
        let _ = self
            .ctrl
            .write_all(format!("{}:{message},", message.len()).as_bytes());
        self.daemon.wait_exit(Duration::from_secs(2));
    }

    /// Every event received so far (`{"event":true,"type":"CALL_ESTABLISHED",…}`), in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.inbox
            .lock()
            .map(|m| m.iter().filter(|v| v["event"] == true).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until `count` events of `kind` arrived (e.g. `CALL_ESTABLISHED`) and returns
    /// the last of them; panics with the log after `timeout`.
    pub fn wait_event(&self, kind: &str, count: usize, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<_> = self
                .events()
                .into_iter()
                .filter(|e| e["type"] == kind)
                .collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "baresip had {} {kind} events of {count} after {timeout:?}; events: {:#?}\nlog:\n{}",
                found.len(),
                self.events(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every SIP message baresip received so far, in order (from its SIP trace).
    pub fn received(&self) -> Vec<String> {
        trace_messages(&self.log(), self.sip, true)
    }

    /// Every SIP message baresip sent so far, in order.
    pub fn sent(&self) -> Vec<String> {
        trace_messages(&self.log(), self.sip, false)
    }

    /// Every SIP message of its trace so far, sent or received, with its transport and
    /// addresses: also those of the TCP connections baresip opens itself (from a port other
    /// than its SIP port, which [`Baresip::sent`] and [`Baresip::received`] leave out).
    pub fn trace(&self) -> Vec<Traced> {
        trace_entries(&self.log())
    }

    /// The received messages whose start line begins with `start` (`"INVITE "`, `"SIP/2.0 200"`).
    pub fn received_starting(&self, start: &str) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|m| m.starts_with(start))
            .collect()
    }

    /// Waits until baresip received `n` (from 1) messages starting with `start` and returns
    /// the `n`-th; panics with what it received after `timeout`.
    pub fn wait_received(&self, start: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.received_starting(start).into_iter().nth(n - 1) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "baresip received no {start:?} number {n} within {timeout:?}; it got {:#?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// baresip's version, from the banner it prints at start (`baresip v1.0.0 Copyright …`).
    pub fn version(&self) -> (u32, u32, u32) {
        parse_version(&self.log())
            .unwrap_or_else(|| panic!("no version in baresip's banner:\n{}", self.log()))
    }

    /// Everything baresip wrote so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Whether baresip still runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The recordings of the audio this phone decoded from the network (`dec`) or sent
    /// (`enc`), oldest first: one file per audio stream start.
    pub fn recordings(&self, direction: &str) -> Vec<PathBuf> {
        let suffix = format!("-{direction}.wav");
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("dump-") && n.ends_with(&suffix))
                    })
                    .map(|p| {
                        let created = std::fs::metadata(&p)
                            .and_then(|m| m.created().or_else(|_| m.modified()))
                            .unwrap_or(std::time::UNIX_EPOCH);
                        (created, p)
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.into_iter().map(|(_, p)| p).collect()
    }

    /// What this phone received and decoded: its latest `dec` recording, read now.
    pub fn heard(&self) -> Pcm {
        let files = self.recordings("dec");
        let last = files
            .last()
            .unwrap_or_else(|| panic!("baresip recorded nothing it received:\n{}", self.log()));
        read_wav(last).unwrap_or_else(|e| panic!("the recording {e}"))
    }
}

/// The `config` of a phone in `dir`.
fn config(dir: &Path, sip: SocketAddr, ctrl: SocketAddr, rtp: u16, tone: &Path) -> String {
    let modules: String = MODULES
        .iter()
        .filter(|m| **m != "menu.so")
        .map(|m| format!("module\t\t{m}\n"))
        .collect();
    format!(
        "# written by anchorage-testkit\n\
         poll_method\t\tepoll\n\
         sip_listen\t\t{sip}\n\
         net_interface\t\t{}\n\
         call_local_timeout\t120\n\
         call_max_calls\t\t4\n\
         audio_source\t\taufile,{}\n\
         audio_alert\t\tnil\n\
         ausrc_srate\t\t8000\n\
         ausrc_channels\t\t1\n\
         rtp_ports\t\t{rtp}-{}\n\
         rtcp_mux\t\tno\n\
         jitter_buffer_delay\t1-10\n\
         module_path\t\t{MODULE_DIR}\n\
         {modules}\
         module_tmp\t\taccount.so\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         ctrl_tcp_listen\t\t{ctrl}\n\
         snd_path\t\t{}\n",
        sip.ip(),
        tone.display(),
        rtp + 19,
        dir.display(),
    )
}

/// The version in baresip's banner `baresip vX.Y.Z …`.
fn parse_version(log: &str) -> Option<(u32, u32, u32)> {
    let rest = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("baresip v"))?;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Reads netstrings (`LEN:JSON,`) from baresip's control socket into `inbox` until it closes.
fn read_netstrings(mut stream: TcpStream, inbox: &Mutex<Vec<serde_json::Value>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        while let Some((value, used)) = next_netstring(&buffer) {
            let json = serde_json::from_slice(value).ok();
            buffer.drain(..used);
            if let (Some(json), Ok(mut m)) = (json, inbox.lock()) {
                m.push(json);
            }
        }
    }
}

/// The first complete netstring in `buffer`: its payload and the bytes it took.
fn next_netstring(buffer: &[u8]) -> Option<(&[u8], usize)> {
    let colon = buffer.iter().position(|&b| b == b':')?;
    let len: usize = std::str::from_utf8(&buffer[..colon]).ok()?.parse().ok()?;
    let end = colon + 1 + len;
    (buffer.len() > end && buffer[end] == b',').then(|| (&buffer[colon + 1..end], end + 1))
}

/// One SIP message of baresip's `-s` trace: how it went and what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// `UDP` or `TCP`.
    pub transport: String,
    /// Where it came from.
    pub from: SocketAddr,
    /// Where it went.
    pub to: SocketAddr,
    /// The message.
    pub message: String,
}

/// The SIP messages of a baresip `-s` trace that `own` received (`received`) or sent. The
/// trace prints each as a line `UDP FROM -> TO` followed by the message, inside colour codes.
fn trace_messages(log: &str, own: SocketAddr, received: bool) -> Vec<String> {
    trace_entries(log)
        .into_iter()
        .filter(|t| if received { t.to == own } else { t.from == own })
        .map(|t| t.message)
        .collect()
}

/// Every SIP message of a baresip `-s` trace, in order.
fn trace_entries(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((from, to)) = trace_header(line) else {
            continue;
        };
        let mut message = Vec::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("\u{1b}[;m") || trace_header(next).is_some() {
                break;
            }
            message.push(*next);
            lines.next();
        }
        out.push(Traced {
            transport: line[..3].to_string(),
            from,
            to,
            message: message.join("\n").trim_end().to_string(),
        });
    }
    out
}

/// `UDP 127.0.0.1:1 -> 127.0.0.1:2` → the two addresses.
fn trace_header(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line
        .strip_prefix("UDP ")
        .or_else(|| line.strip_prefix("TCP "))?;
    let (from, to) = rest.split_once(" -> ")?;
    Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstrings_are_split_and_partial_ones_wait() {
        let buffer = b"7:{\"a\":1},3:abc";
        let (value, used) = next_netstring(buffer).unwrap();
        assert_eq!((value, used), (&b"{\"a\":1}"[..], 10));
        assert_eq!(
            next_netstring(&buffer[used..]),
            None,
            "no closing comma yet"
        );
        assert_eq!(next_netstring(b"x:"), None);
    }

    #[test]
    fn the_version_is_read_from_the_banner() {
        let log = "baresip v1.0.0 Copyright (C) 2010 - 2020 Alfred E. Heggestad et al.\n";
        assert_eq!(parse_version(log), Some((1, 0, 0)));
        assert_eq!(parse_version("baresip v3.12.1 Copyright"), Some((3, 12, 1)));
        assert_eq!(parse_version("nothing"), None);
    }

    #[test]
    fn the_sip_trace_is_split_by_direction() {
        let log = "call: connecting\n\u{1b}[36;1m#\nUDP 127.0.0.1:5000 -> 127.0.0.1:6000\n\
                   INVITE sip:b@x SIP/2.0\nVia: a\n\nv=0\n\u{1b}[;m\nother\n\u{1b}[36;1m#\n\
                   UDP 127.0.0.1:6000 -> 127.0.0.1:5000\nSIP/2.0 200 OK\nVia: a\n\n\u{1b}[;m\n";
        let me: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            trace_messages(log, me, false),
            ["INVITE sip:b@x SIP/2.0\nVia: a\n\nv=0"]
        );
        assert_eq!(trace_messages(log, me, true), ["SIP/2.0 200 OK\nVia: a"]);
    }
}
