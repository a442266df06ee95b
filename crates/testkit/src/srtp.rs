//! SRTP made by an independent implementation: libsrtp through the PyPI package `pylibsrtp`
//! (`tests/srtp_peer.py`), run from the repository's `.venv`, which `scripts/test` creates.
//! Without it a test fails and says how to get it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use crate::media::{hex, unhex};

/// A libsrtp peer process: sessions by name, each protecting (`outbound`) or unprotecting
/// (`inbound`) with one key; killed on drop.
pub struct Libsrtp {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Libsrtp {
    /// Starts `tests/srtp_peer.py` of the repository at `root` with `root/.venv/bin/python`.
    pub fn start(root: &Path) -> Libsrtp {
        let how = "pylibsrtp (PyPI) is needed in .venv: run scripts/test, which creates it, or \
                   `python3 -m venv .venv && .venv/bin/pip install pylibsrtp`";
        let (child, input, mut output) = venv_python(root, "tests/srtp_peer.py", how);
        let mut ready = String::new();
        output.read_line(&mut ready).expect("the peer's first line");
        assert!(ready.starts_with("ready "), "{ready:?}. {how}");
        Libsrtp {
            child,
            input,
            output,
        }
    }

    fn ask(&mut self, command: &str) -> Result<Vec<u8>, String> {
        writeln!(self.input, "{command}").expect("write to the peer");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("the peer's answer");
        let line = line.trim_end();
        match line.strip_prefix("ok") {
            Some(hex) => Ok(unhex(hex.trim())),
            None => Err(line.to_owned()),
        }
    }

    /// A session `name` with `key` (base64 key‖salt of `suite`): `outbound` protects what the
    /// party sends, `inbound` unprotects what it receives.
    pub fn session(&mut self, name: &str, direction: &str, suite: &str, key: &str) {
        self.ask(&format!("session {name} {direction} {suite} {key}"))
            .unwrap_or_else(|e| panic!("libsrtp session {name}: {e}"));
    }

    /// `packet` (RTP, or RTCP when `rtcp`) protected by session `name`.
    pub fn protect(&mut self, name: &str, rtcp: bool, packet: &[u8]) -> Vec<u8> {
        let kind = if rtcp { "rtcp" } else { "rtp" };
        self.ask(&format!("protect {name} {kind} {}", hex(packet)))
            .unwrap_or_else(|e| panic!("libsrtp protect: {e}"))
    }

    /// `packet` unprotected by session `name`, or libsrtp's reason for refusing it.
    pub fn unprotect(&mut self, name: &str, rtcp: bool, packet: &[u8]) -> Result<Vec<u8>, String> {
        let kind = if rtcp { "rtcp" } else { "rtp" };
        self.ask(&format!("unprotect {name} {kind} {}", hex(packet)))
    }
}

/// Runs `script` (a path under `root`) with `root/.venv/bin/python`, its stdin and stdout
/// piped; panics with `how` (how to get the Python packages) when the `.venv` is missing.
pub fn venv_python(
    root: &Path,
    script: &str,
    how: &str,
) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "{} is missing. {how}", python.display());
    let mut child = Command::new(&python)
        .arg(root.join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}. {how}", python.display()));
    let input = child.stdin.take().expect("stdin");
    let output = BufReader::new(child.stdout.take().expect("stdout"));
    (child, input, output)
}

impl Drop for Libsrtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The suite and `inline:` key (without lifetime or MKI) of the `a=crypto` line tagged `tag`
/// in an SDP or a SIP message carrying one; panics naming the tag when there is none.
pub fn crypto_key(sdp: &str, tag: u32) -> (String, String) {
    let prefix = format!("a=crypto:{tag} ");
    let line = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no a=crypto:{tag} in\n{sdp}"));
    let mut words = line.split(' ');
    let suite = words.next().expect("suite").to_owned();
    let key = words
        .next()
        .and_then(|k| k.strip_prefix("inline:"))
        .expect("inline key");
    (suite, key.split('|').next().unwrap_or(key).to_owned())
}
