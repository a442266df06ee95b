//! A test LAN of network namespaces, for tests of several machines on one segment (a proxy
//! cluster behind a virtual IP): one namespace holds only a Linux bridge, and each named host
//! is a namespace of its own joined to the bridge by a veth pair. The veth pair is created in
//! the bridge's namespace with its host end placed straight into the host's namespace, so
//! nothing ever appears on the machine's own interfaces.
//!
//! Hosts get `10.88.0.(10 + i)/24` in the order they are named (the first `.11`), `lo` up,
//! and `net.ipv4.ip_nonlocal_bind = 1` (a proxy binds a virtual IP it does not hold yet).
//! Processes run inside with [`LanHost::command`]; the test's own sockets are made inside with
//! [`LanHost::run`]. Dropping the [`Lan`] deletes every namespace: create it before the
//! processes that use it, so they are stopped first.
//!
//! The namespaces are private to the test, so fixed ports (5060, 6379 …) are free in them
//! whatever else runs on the machine, and tests run in parallel (names carry the pid and a
//! sequence number).

use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{delete_netns, run_ip};
use crate::require_tool;

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

const NONLOCAL_BIND: &str = "/proc/sys/net/ipv4/ip_nonlocal_bind";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The host end of each veth pair, inside its host's namespace.
pub const DEV: &str = "eth0";

/// A way to run programs in one network namespace: `ip netns exec NAME program`, which execs
/// the program (the child's pid is the program's). Cheap to clone, so that a process handle
/// (a proxy that is restarted) can keep it.
#[derive(Clone, Debug)]
pub struct NsExec {
    ip: PathBuf,
    ns: String,
}

impl NsExec {
    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(&self.ip);
        command.args(["netns", "exec", &self.ns]).arg(program);
        command
    }

    /// Runs `f` on a thread that joined the namespace: the sockets it creates live there (and
    /// stay there when used from other threads).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        crate::netns::run_in(&self.ns, f)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.ns
    }
}

/// One host of a [`Lan`].
#[derive(Debug)]
pub struct LanHost {
    name: String,
    addr: Ipv4Addr,
    exec: NsExec,
}

impl LanHost {
    /// Its name in the test (`"p1"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the LAN.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }

    /// Its address on the LAN, as IPv4.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its network namespace's name.
    pub fn netns(&self) -> &str {
        &self.exec.ns
    }

    /// How to run programs in it (to keep in a process handle).
    pub fn exec(&self) -> NsExec {
        self.exec.clone()
    }

    /// A command that runs `program` inside the host (`ip netns exec NS program`, which execs
    /// it: the child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.exec.command(program)
    }

    /// Runs `f` on a thread that joined the host's namespace (see [`NsExec::run`]).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.exec.run(f)
    }

    /// The IPv4 addresses on the host's LAN interface now (`ip -n NS -o addr show dev eth0`).
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let out = run_ip(
            &self.exec.ip,
            &["-n", &self.exec.ns, "-o", "-4", "addr", "show", "dev", DEV],
        );
        out.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .collect()
    }

    /// Whether the host's LAN interface has `addr` now.
    pub fn holds(&self, addr: Ipv4Addr) -> bool {
        self.addresses().contains(&addr)
    }
}

/// A LAN of named hosts behind one bridge, every part in a network namespace of this test.
pub struct Lan {
    ip: PathBuf,
    bridge: String,
    hosts: Vec<LanHost>,
}

impl Lan {
    /// The LAN's network, `10.88.0.0/24`.
    pub const NETWORK: &'static str = "10.88.0.0/24";
    /// Its prefix length.
    pub const PREFIX: u8 = 24;

    /// The address of the `i`-th host (from 1): `10.88.0.(10 + i)`; free addresses above
    /// `.100` serve as virtual IPs.
    pub fn host_addr(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, 0, 10 + i)
    }

    /// Creates the bridge and one host per name (`Lan::create(&["p1", "p2", "svc"])`). Fails
    /// the test naming `ip` (Debian `iproute2`) if it is missing, or with `ip`'s error. Whatever was created before a failure is deleted.
    pub fn create(names: &[&str]) -> Lan {
        let ip = require_tool("ip", "iproute2");
        assert!(
            !names.is_empty() && names.len() <= 80,
            "a LAN of 1 to 80 hosts"
        );
        let prefix = format!(
            "anch-l{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let bridge = format!("{prefix}-br");
        run_ip(&ip, &["netns", "add", &bridge]);
        // From here on, a failure deletes what exists (Drop).
        let mut lan = Lan {
            ip: ip.clone(),
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        run_ip(&ip, &["-n", &bridge, "link", "set", "lo", "up"]);
        run_ip(
            &ip,
            &["-n", &bridge, "link", "add", "br0", "type", "bridge"],
        );
        run_ip(&ip, &["-n", &bridge, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            assert!(
                lan.hosts.iter().all(|h| h.name != *name),
                "host {name:?} named twice"
            );
            let ns = format!("{prefix}-{i}");
            run_ip(&ip, &["netns", "add", &ns]);
            let addr = Self::host_addr(u8::try_from(i + 1).expect("at most 80 hosts"));
            lan.hosts.push(LanHost {
                name: name.to_string(),
                addr,
                exec: NsExec {
                    ip: ip.clone(),
                    ns: ns.clone(),
                },
            });
            // Made in the bridge's namespace, the host end moved at once into the host's.
            let port = format!("h{i}");
            run_ip(
                &ip,
                &[
                    "-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", DEV,
                    "netns", &ns,
                ],
            );
            run_ip(&ip, &["-n", &bridge, "link", "set", &port, "master", "br0"]);
            run_ip(&ip, &["-n", &bridge, "link", "set", &port, "up"]);
            let cidr = format!("{addr}/{}", Self::PREFIX);
            run_ip(&ip, &["-n", &ns, "addr", "add", &cidr, "dev", DEV]);
            run_ip(&ip, &["-n", &ns, "link", "set", "lo", "up"]);
            run_ip(&ip, &["-n", &ns, "link", "set", DEV, "up"]);
            // `sysctl -w net.ipv4.ip_nonlocal_bind=1` inside: /proc/sys/net shows the
            // namespace of the thread that opens it.
            let set = crate::netns::run_in(&ns, || {
                std::fs::write(NONLOCAL_BIND, "1")?;
                std::fs::read_to_string(NONLOCAL_BIND)
            });
            assert_eq!(
                set.as_ref().map(|v| v.trim()).ok(),
                Some("1"),
                "net.ipv4.ip_nonlocal_bind=1 in {ns}: {set:?}"
            );
        }
        lan
    }

    /// The private network behind a NAT host ([`Lan::add_behind_nat`]): the router's side
    /// is `.1`, the host behind it `.2`.
    pub const NAT_PRIVATE: &'static str = "192.168.77.0/24";
    /// The ports the NAT maps the private host's UDP and TCP flows to on the router's LAN
    /// address (never the private port itself: a party reached at its Contact's port would
    /// not show the NAT).
    pub const NAT_PORTS: std::ops::RangeInclusive<u16> = 40000..=40999;

    /// Adds a host `name` behind a NAT: a namespace of its own with the private address
    /// `192.168.77.2/24`, joined by a veth pair to the LAN host `router` (`192.168.77.1`
    /// there), its default route through `router`, which forwards and masquerades what it
    /// sends onto the LAN (`iptables -t nat … MASQUERADE --to-ports 40000-40999`): on the LAN
    /// its packets come from `router`'s address and a port of [`Lan::NAT_PORTS`], and only
    /// the answers to what it sent get back to it (conntrack). Fails the test naming
    /// `iptables` (Debian `iptables`) if it is missing, or with the command's error. The
    /// host is deleted with the LAN.
    pub fn add_behind_nat(&mut self, name: &str, router: &str) -> &LanHost {
        assert!(
            self.hosts.iter().all(|h| h.name != name),
            "host {name:?} named twice"
        );
        let iptables = require_tool("iptables", "iptables");
        let router_ns = self.host(router).exec.ns.clone();
        let ns = format!(
            "{}-nat{}",
            self.bridge.trim_end_matches("-br"),
            self.hosts.len()
        );
        run_ip(&self.ip, &["netns", "add", &ns]);
        let addr = Ipv4Addr::new(192, 168, 77, 2);
        self.hosts.push(LanHost {
            name: name.to_string(),
            addr,
            exec: NsExec {
                ip: self.ip.clone(),
                ns: ns.clone(),
            },
        });
        let ip = &self.ip;
        // Made in the router's namespace, the private end moved at once into the host's.
        run_ip(
            ip,
            &[
                "-n", &router_ns, "link", "add", "nat0", "type", "veth", "peer", "name", DEV,
                "netns", &ns,
            ],
        );
        run_ip(
            ip,
            &[
                "-n",
                &router_ns,
                "addr",
                "add",
                "192.168.77.1/24",
                "dev",
                "nat0",
            ],
        );
        run_ip(ip, &["-n", &router_ns, "link", "set", "nat0", "up"]);
        run_ip(
            ip,
            &["-n", &ns, "addr", "add", "192.168.77.2/24", "dev", DEV],
        );
        run_ip(ip, &["-n", &ns, "link", "set", "lo", "up"]);
        run_ip(ip, &["-n", &ns, "link", "set", DEV, "up"]);
        run_ip(
            ip,
            &["-n", &ns, "route", "add", "default", "via", "192.168.77.1"],
        );
        let forwarding = crate::netns::run_in(&router_ns, || {
            std::fs::write(IP_FORWARD, "1")?;
            std::fs::read_to_string(IP_FORWARD)
        });
        assert_eq!(
            forwarding.as_ref().map(|v| v.trim()).ok(),
            Some("1"),
            "net.ipv4.ip_forward=1 in {router_ns}: {forwarding:?}"
        );
        let ports = format!("{}-{}", Self::NAT_PORTS.start(), Self::NAT_PORTS.end());
        for proto in ["udp", "tcp"] {
            let rule = [
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                Self::NAT_PRIVATE,
                "-o",
                DEV,
                "-p",
                proto,
                "-j",
                "MASQUERADE",
                "--to-ports",
                &ports,
            ];
            let out = self
                .host(router)
                .command(&iptables)
                .args(rule)
                .output()
                .unwrap_or_else(|e| panic!("cannot run iptables: {e}"));
            assert!(
                out.status.success(),
                "iptables {} in {router_ns} failed: {}",
                rule.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.host(name)
    }

    /// The host named `name`; panics if there is none.
    pub fn host(&self, name: &str) -> &LanHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} on the LAN"))
    }

    /// Every host, in the order they were named.
    pub fn hosts(&self) -> &[LanHost] {
        &self.hosts
    }

    /// The name of the bridge's namespace.
    pub fn bridge_netns(&self) -> &str {
        &self.bridge
    }

    /// Which host's LAN interface has `vip` now (`ip -n NS -o addr`); `None` if no host has
    /// it. Panics if several have it (two VRRP masters).
    pub fn vip_holder(&self, vip: Ipv4Addr) -> Option<&str> {
        let holders = self.vip_holders(vip);
        assert!(
            holders.len() <= 1,
            "{vip} is on several hosts at once: {holders:?}"
        );
        holders.first().copied()
    }

    /// Every host whose LAN interface has `vip` now.
    pub fn vip_holders(&self, vip: Ipv4Addr) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.holds(vip))
            .map(|h| h.name.as_str())
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in &self.hosts {
            delete_netns(&self.ip, &host.exec.ns);
        }
        delete_netns(&self.ip, &self.bridge);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hosts_reach_each_other_over_the_bridge_and_bind_addresses_they_do_not_hold() {
        let lan = Lan::create(&["a", "b"]);
        let (a, b) = (lan.host("a"), lan.host("b"));
        assert_eq!(a.ipv4(), Ipv4Addr::new(10, 88, 0, 11));
        assert_eq!(b.ipv4(), Ipv4Addr::new(10, 88, 0, 12));
        assert_eq!(a.addresses(), [a.ipv4()]);
        let names: Vec<String> = std::iter::once(lan.bridge_netns().to_string())
            .chain(lan.hosts().iter().map(|h| h.netns().to_string()))
            .collect();
        // A socket on an address nobody holds (ip_nonlocal_bind), and one on a's address.
        let vip = Ipv4Addr::new(10, 88, 0, 100);
        let (listener, on_vip) = a.run(|| {
            (
                std::net::UdpSocket::bind((a.ipv4(), 0)).unwrap(),
                std::net::UdpSocket::bind((vip, 0)).unwrap(),
            )
        });
        assert_eq!(lan.vip_holder(vip), None);
        let sender = b.run(|| std::net::UdpSocket::bind((b.ipv4(), 0)).unwrap());
        sender
            .send_to(b"x", listener.local_addr().unwrap())
            .unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4];
        let (n, from) = listener.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"x"[..], b.addr()));
        drop(on_vip);
        // A program inside sees the host's interface and nothing of the machine's.
        let out = a.command("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 2, "lo and {DEV} only: {links}");
        // The address shows up where it is added.
        run_ip(
            &lan.ip,
            &["-n", b.netns(), "addr", "add", "10.88.0.100/24", "dev", DEV],
        );
        assert_eq!(lan.vip_holder(vip), Some("b"));
        drop(lan);
        for name in names {
            assert!(
                !std::path::Path::new(&format!("/run/netns/{name}")).exists(),
                "{name} left behind"
            );
        }
    }

    #[test]
    fn a_host_behind_nat_reaches_the_lan_from_the_routers_address_and_only_answers_come_back() {
        let mut lan = Lan::create(&["router", "server"]);
        lan.add_behind_nat("phone", "router");
        let (router, server, phone) = (
            lan.host("router").ipv4(),
            lan.host("server"),
            lan.host("phone"),
        );
        assert_eq!(phone.ipv4(), Ipv4Addr::new(192, 168, 77, 2));
        let listener = server.run(|| std::net::UdpSocket::bind((server.ipv4(), 5060)).unwrap());
        let private = phone.run(|| std::net::UdpSocket::bind((phone.ipv4(), 5080)).unwrap());
        private
            .send_to(b"ping", listener.local_addr().unwrap())
            .unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 8];
        let (n, public) = listener.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(public.ip(), IpAddr::V4(router));
        assert!(Lan::NAT_PORTS.contains(&public.port()), "{public}");
        listener.send_to(b"pong", public).unwrap();
        private
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (n, from) = private.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"pong"[..], listener.local_addr().unwrap())
        );
        // The private address is not reachable from the LAN.
        let unreachable = listener.send_to(b"x", (phone.ipv4(), 5080));
        assert!(unreachable.is_err(), "{unreachable:?}");
    }
}
