//! A private network namespace for tests that need non-loopback addresses without touching
//! the host's interfaces: a veth pair with both ends inside it, [`Netns::A`] on one end and
//! [`Netns::B`] on the other (and `lo` up). Processes run inside with [`Netns::command`];
//! the test's own sockets are made inside with [`Netns::run`]. Dropping it deletes the
//! namespace (create it before the processes that use it, so they are stopped first).

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::require_tool;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A network namespace of this test process; deleted when dropped.
pub struct Netns {
    name: String,
    ip: PathBuf,
}

impl Netns {
    /// The address of the first veth end.
    pub const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));
    /// The address of the second veth end.
    pub const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));

    /// Creates the namespace with its veth pair (both ends inside) and addresses. Fails the
    /// test naming `ip` (Debian `iproute2`) if it is missing, or with `ip`'s error.
    pub fn create() -> Netns {
        let ip = require_tool("ip", "iproute2");
        let name = format!(
            "anch-t{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns { name, ip };
        ns.ip(&["netns", "add", &ns.name]);
        let n = ns.name.clone();
        // Created inside the namespace: the veth names never meet the host's.
        ns.ip(&[
            "-n", &n, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b",
        ]);
        ns.ip(&["-n", &n, "addr", "add", "10.77.0.1/24", "dev", "veth-a"]);
        ns.ip(&["-n", &n, "addr", "add", "10.77.0.2/24", "dev", "veth-b"]);
        for dev in ["lo", "veth-a", "veth-b"] {
            ns.ip(&["-n", &n, "link", "set", dev, "up"]);
        }
        ns
    }

    fn ip(&self, args: &[&str]) {
        run_ip(&self.ip, args);
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`,
    /// which execs it: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `f` on a thread that joined the namespace: the sockets it creates live there
    /// (and stay there when used from other threads).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        run_in(&self.name, f)
    }
}

/// Runs `ip` (the program at `ip`) with `args`; its standard output. Fails the test with
/// `ip`'s error if it cannot run or does not succeed.
pub(crate) fn run_ip(ip: &Path, args: &[&str]) -> String {
    let out = Command::new(ip)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that joined the network namespace `name` (`/run/netns/NAME`): the
/// sockets it creates live there (and stay there when used from other threads).
pub(crate) fn run_in<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> R {
    let path = format!("/run/netns/{name}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                use std::os::fd::AsRawFd;
                let file = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                // SAFETY: setns(2) on a namespace file we hold open; it changes only this
                // thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete_netns(&self.ip, &self.name);
    }
}

/// Deletes the network namespace `name` with `ip` (the program at `ip`), whatever comes of it
/// (for `Drop`: it may be gone already).
pub(crate) fn delete_netns(ip: &Path, name: &str) {
    let _ = Command::new(ip).args(["netns", "del", name]).output();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_made_inside_see_the_namespace_addresses_and_it_is_deleted_on_drop() {
        let ns = Netns::create();
        let name = ns.name().to_string();
        let (a, b) = ns.run(|| {
            let a = std::net::UdpSocket::bind((Netns::A, 0)).unwrap();
            let b = std::net::UdpSocket::bind((Netns::B, 0)).unwrap();
            (a, b)
        });
        // Used from this thread, the sockets still talk inside the namespace.
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 4];
        a.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"x"[..], Netns::B));
        assert!(
            std::net::UdpSocket::bind((Netns::A, 0)).is_err(),
            "the host has no such address"
        );
        let out = ns.command("true").status().unwrap();
        assert!(out.success());
        drop(ns);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
}
