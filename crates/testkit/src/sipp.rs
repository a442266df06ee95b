//! Running SIPp (Debian `sip-tester`) as user agents, and reading what it received.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{require_tool, Daemon};

/// A SIPp instance to start: a scenario file and its options.
pub struct Sipp {
    command: Command,
    dir: tempfile::TempDir,
    name: String,
}

/// A SIPp process running in the background (a UAS usually).
pub struct SippProcess {
    daemon: Daemon,
    messages: PathBuf,
    _dir: tempfile::TempDir,
}

/// The outcome of a SIPp run.
pub struct SippRun {
    /// SIPp's exit code: 0 = every call succeeded, 1 = some failed, others = error.
    pub code: Option<i32>,
    /// SIPp's screen output and errors.
    pub output: String,
    /// Every message SIPp received, in order.
    pub received: Vec<String>,
    /// Every message SIPp sent, in order.
    pub sent: Vec<String>,
}

impl Sipp {
    /// SIPp with `scenario` (a path to an XML file), bound to `local` for signalling and to a
    /// free block of media ports.
    pub fn new(name: &str, scenario: &Path, local: SocketAddr) -> Sipp {
        let sipp = require_tool("sipp", "sip-tester");
        let media = crate::free_udp_block(local.ip(), 4);
        Self::with_command(name, Command::new(sipp), scenario, local, media)
    }

    /// [`Sipp::new`] inside a test's network namespace (`local` is one of its addresses).
    pub fn in_netns(
        ns: &crate::netns::Netns,
        name: &str,
        scenario: &Path,
        local: SocketAddr,
    ) -> Sipp {
        let sipp = require_tool("sipp", "sip-tester");
        let media = ns.run(|| crate::free_udp_block(local.ip(), 4));
        Self::with_command(name, ns.command(sipp), scenario, local, media)
    }

    /// [`Sipp::new`] on a host of a test LAN (`local` is the host's address).
    pub fn in_lan(
        host: &crate::lan::LanHost,
        name: &str,
        scenario: &Path,
        local: SocketAddr,
    ) -> Sipp {
        let sipp = require_tool("sipp", "sip-tester");
        let media = host.run(|| crate::free_udp_block(local.ip(), 4));
        Self::with_command(name, host.command(sipp), scenario, local, media)
    }

    fn with_command(
        name: &str,
        mut command: Command,
        scenario: &Path,
        local: SocketAddr,
        media: u16,
    ) -> Sipp {
        let dir = tempfile::tempdir().expect("temporary directory");
        command
            .arg("-sf")
            .arg(scenario)
            .args(["-i", &local.ip().to_string()])
            .args(["-p", &local.port().to_string()])
            .args(["-mi", &local.ip().to_string()])
            .args(["-mp", &media.to_string()])
            .args(["-nostdin", "-trace_msg", "-trace_err"])
            .arg("-message_file")
            .arg(dir.path().join("messages.log"))
            .arg("-error_file")
            .arg(dir.path().join("errors.log"));
        Sipp {
            command,
            dir,
            name: name.to_string(),
        }
    }

    /// Adds arguments (e.g. `["-m", "1"]`).
    pub fn args<I, S>(mut self, args: I) -> Sipp
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Starts SIPp in the background.
    pub fn spawn(mut self) -> SippProcess {
        let messages = self.dir.path().join("messages.log");
        let log = self.dir.path().join("sipp.out");
        let daemon = Daemon::spawn_logged(&self.name, &mut self.command, &log);
        SippProcess {
            daemon,
            messages,
            _dir: self.dir,
        }
    }

    /// Runs SIPp to the end (killing it after `timeout`) with `remote` as the target.
    pub fn run(self, remote: &str, timeout: Duration) -> SippRun {
        let mut p = self.args([remote]).spawn();
        p.finish(timeout)
    }
}

impl SippProcess {
    /// The SIPp process itself (its output so far, its pid).
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// Waits for SIPp to exit (killing it after `timeout`) and collects what it exchanged.
    pub fn finish(&mut self, timeout: Duration) -> SippRun {
        let status = self.daemon.wait_exit(timeout);
        let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
        let errors =
            std::fs::read_to_string(self.messages.with_file_name("errors.log")).unwrap_or_default();
        SippRun {
            code: status.and_then(|s| s.code()),
            output: format!("{}\n{errors}", self.daemon.log()),
            received: messages(&text, "received"),
            sent: messages(&text, "sent"),
        }
    }

    /// What SIPp received so far (its message log is written as the call goes).
    pub fn received_so_far(&self) -> Vec<String> {
        messages(
            &std::fs::read_to_string(&self.messages).unwrap_or_default(),
            "received",
        )
    }

    /// Waits until SIPp received a message starting with `start`, and returns it.
    pub fn wait_for_received(&self, start: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(m) = self
                .received_so_far()
                .into_iter()
                .find(|m| m.starts_with(start))
            {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "SIPp received no {start:?} within {timeout:?}; it got {:#?}",
                self.received_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `n`-th (from 1) received message starting with `start`, waiting up to `timeout`;
    /// `None` if it did not come.
    pub fn nth_received(&self, start: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let found = self
                .received_so_far()
                .into_iter()
                .filter(|m| m.starts_with(start))
                .nth(n.saturating_sub(1));
            if found.is_some() || std::time::Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether SIPp still runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }
}

/// The messages of a SIPp `-trace_msg` log that were `received` or `sent`.
fn messages(log: &str, direction: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in log.split("\n----------------------------------------------- ") {
        let mut lines = block.lines();
        let _timestamp = lines.next();
        let Some(kind) = lines.next() else { continue };
        if !kind.contains(&format!("message {direction}")) {
            continue;
        }
        let body: Vec<&str> = lines.skip_while(|l| l.is_empty()).collect();
        out.push(body.join("\n").trim_end().to_string());
    }
    out
}

impl SippRun {
    /// Panics with SIPp's output unless every call succeeded.
    pub fn assert_success(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "SIPp failed:\n{}\nreceived:\n{}",
            self.output,
            self.received.join("\n\n")
        );
    }

    /// The first received message whose start line begins with `start`.
    pub fn received_starting(&self, start: &str) -> Option<&str> {
        self.received
            .iter()
            .find(|m| m.starts_with(start))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::messages;

    #[test]
    fn message_log_is_split_into_messages() {
        let log = "\n----------------------------------------------- 2026-11-23 23:21:49.856886\n\
UDP message sent (10 bytes):\n\nINVITE sip:a SIP/2.0\nVia: x\n\n\n\
----------------------------------------------- 2026-11-23 23:21:49.857864\n\
UDP message received [246] bytes :\n\nSIP/2.0 100 Trying\nVia: y\n\n";
        assert_eq!(messages(log, "sent"), ["INVITE sip:a SIP/2.0\nVia: x"]);
        assert_eq!(messages(log, "received"), ["SIP/2.0 100 Trying\nVia: y"]);
    }
}
