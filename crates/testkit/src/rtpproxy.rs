//! A real RTPProxy for the tests: sippy's RTPProxy as embedded in the PyPI package `rtp.io`,
//! run from the repository's `.venv` (which `scripts/test` makes) with its normal command line.
//! A test that needs it and cannot find it fails naming `rtp.io`.

use std::net::UdpSocket;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{free_udp_block, free_udp_port, Daemon, LOCALHOST};

/// A running RTPProxy node on 127.0.0.1.
pub struct RtpProxy {
    /// The process (killed, by its process group, when dropped).
    pub daemon: Daemon,
    /// Its control port (`udp:127.0.0.1:PORT`).
    pub control: u16,
    /// Its media ports.
    pub ports: RangeInclusive<u16>,
}

/// The `.venv` Python with `rtp.io`, or a failure naming the package.
fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import rtp.io"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "rtp.io (PyPI, sippy's RTPProxy) is needed in .venv: run scripts/test, which creates it, \
         or `python3 -m venv .venv && .venv/bin/pip install rtp.io`"
    );
    python
}

impl RtpProxy {
    /// Starts RTPProxy with 100 media ports of its own and waits until it answers `V`. Ports
    /// are picked free, but on a crowded host another process may take one before RTPProxy
    /// binds it: then it is started again on new ports (three tries).
    pub fn start() -> RtpProxy {
        Self::start_with(&[])
    }

    /// [`RtpProxy::start`] with RTPProxy's debug log (`-d DBUG`): it then logs every command
    /// it receives, which [`RtpProxy::commands_about`] reads.
    pub fn start_logging_commands() -> RtpProxy {
        Self::start_with(&["-d", "DBUG"])
    }

    /// [`RtpProxy::start`] with `extra` command-line arguments (an `-l` among them replaces
    /// the media address 127.0.0.1).
    pub fn start_with(extra: &[&str]) -> RtpProxy {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(extra) {
                Ok(node) => return node,
                Err(log) => last_log = log,
            }
        }
        panic!("RTPProxy did not start in 3 tries; its last log:\n{last_log}");
    }

    /// One start: the node, or its log when it exited because a port was taken meanwhile.
    fn try_start(extra: &[&str]) -> Result<RtpProxy, String> {
        let python = python();
        let control = free_udp_port(LOCALHOST);
        let base = free_udp_block(LOCALHOST, 100);
        let ports = base..=base + 99;
        // Its media on 127.0.0.1, unless `extra` gives its own `-l` (bridging: `-l A/B`).
        let listen = if extra.contains(&"-l") {
            ""
        } else {
            ", '-l', '127.0.0.1'"
        };
        let script = format!(
            "import time\nfrom rtp.io import rtpproxy\n\
             r = rtpproxy(extra_args=['-F', '-s', 'udp:127.0.0.1:{control}'{listen}, \
             '-m', '{}', '-M', '{}'{}])\nprint('rtpproxy ready', flush=True)\n\
             while True:\n    time.sleep(3600)\n",
            ports.start(),
            ports.end(),
            extra.iter().map(|a| format!(", '{a}'")).collect::<String>()
        );
        let mut cmd = Command::new(python);
        // RTPProxy writes an accounting file in its working directory: not in the tree.
        cmd.args(["-u", "-c", &script])
            .current_dir(std::env::temp_dir());
        let mut daemon = Daemon::spawn("rtpproxy", &mut cmd);
        let started = std::time::Instant::now();
        while !daemon.log().contains("rtpproxy ready") {
            if !daemon.is_running() {
                let log = daemon.log();
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("rtpproxy exited before it was ready:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "rtpproxy not ready after 15 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let node = RtpProxy {
            daemon,
            control,
            ports,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while node.command("V").as_deref() != Some("20040107") {
            assert!(
                std::time::Instant::now() < deadline,
                "RTPProxy does not answer V:\n{}",
                node.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(node)
    }

    /// Sends one control command (without cookie) and returns the reply after its cookie, or
    /// `None` if none came within a second. Each command has a cookie of its own: RTPProxy
    /// answers a cookie it has seen with its cached reply.
    pub fn command(&self, command: &str) -> Option<String> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cookie = format!("test{}_{n}", std::process::id());
        let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        socket
            .send_to(
                format!("{cookie} {command}").as_bytes(),
                (LOCALHOST, self.control),
            )
            .ok()?;
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.strip_prefix(&format!("{cookie} "))
            .map(|r| r.trim_end().to_string())
    }

    /// The commands it received (without their cookies) that name `word` (a Call-ID), in
    /// order, as its debug log shows them (started with [`RtpProxy::start_logging_commands`]).
    pub fn commands_about(&self, word: &str) -> Vec<String> {
        self.daemon
            .log()
            .lines()
            .filter_map(|l| l.split_once("received command \"").map(|(_, c)| c))
            .map(|c| c.trim_end_matches('"'))
            .filter(|c| c.split_whitespace().any(|w| w == word))
            .map(|c| c.split_once(' ').map_or(c, |(_, rest)| rest).to_string())
            .collect()
    }

    /// `active sessions` from its `I` statistics.
    pub fn active_sessions(&self) -> Option<u64> {
        self.command("I")?
            .lines()
            .find_map(|l| l.strip_prefix("active sessions: "))
            .and_then(|n| n.trim().parse().ok())
    }
}

impl RtpProxy {
    /// A number from its `I` statistics (`sessions created`, `packets transmitted`, …), 0 when
    /// the line is absent.
    pub fn stat(&self, name: &str) -> u64 {
        self.command("I")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits (3 s at most) until the node holds no session; panics with its statistics and
    /// `context` (say, the proxy's log) if one is left.
    pub fn wait_empty(&self, context: &dyn Fn() -> String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while self.active_sessions() != Some(0) {
            assert!(
                std::time::Instant::now() < deadline,
                "sessions left on the RTPProxy at {}: {:?}\n{}",
                self.control,
                self.command("I"),
                context()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `addr` is one of this node's media addresses.
    pub fn owns(&self, addr: std::net::SocketAddr) -> bool {
        addr.ip() == LOCALHOST && self.ports.contains(&addr.port())
    }
}

/// A proxy configuration whose only relay set, `main`, holds the given RTPProxy nodes
/// (`rtpp1`, `rtpp2`, …), with `media` as the rest of `[proxy.media]` (per-leg options) and
/// `extra` appended.
pub fn proxy_config(nodes: &[&RtpProxy], media: &str, extra: &str) -> String {
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
    format!(
        "[[proxy.relay_set]]\nname = \"main\"\nnodes = [\n{}]\n\n\
         [proxy.media]\nset = \"main\"\n{media}\n{extra}",
        nodes.concat()
    )
}
