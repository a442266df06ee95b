//! A real keepalived (Debian `keepalived`) on a host of a test [`Lan`]: one VRRP instance on
//! the host's LAN interface holding a virtual IP, in the set-up `docs/operations.md` gives
//! operators — every node `state BACKUP` with `nopreempt`, unicast adverts to its peers,
//! VRRPv3 with sub-second adverts, and a health check (`anchorage ctl health`) tracked with
//! no weight, so that a failing check puts the instance in FAULT and releases the VIP.
//!
//! keepalived runs a `vrrp_script` once a second at most (its `interval` is whole seconds), so
//! the check is a small shell script that runs the command [`VrrpNode::checks_per_run`] times
//! within each run and fails at the first failure: a dead proxy is seen within a quarter of a
//! second, not within a second.
//!
//! Each instance has its own temporary directory (configuration, check script, pid files)
//! and runs in the foreground (`-n`) with its log on the console (`-l -D`), kept in a file
//! shown on failure. It is stopped, with its VRRP child, by its pid when dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lan::{Lan, LanHost, DEV};
use crate::{require_tool, Daemon};

/// One node's VRRP settings.
#[derive(Clone, Debug)]
pub struct VrrpNode {
    /// The virtual IP (a `/24` on the LAN interface).
    pub vip: Ipv4Addr,
    /// The VRRP router id shared by the nodes of one VIP (1–255).
    pub virtual_router_id: u8,
    /// This node's priority (1–254): at start, and when the master fails, the highest
    /// priority among the healthy backups takes the VIP (equal ones: the highest address).
    pub priority: u8,
    /// The other nodes' addresses (unicast adverts).
    pub peers: Vec<Ipv4Addr>,
    /// Seconds between adverts: VRRPv3 takes hundredths (`0.1`); a backup takes over after
    /// three missed adverts, or at once when the master leaves (priority 0 advert).
    pub advert_int: f32,
    /// The health check: a program and its arguments (exit 0 = the node can serve), or
    /// none. A failing check releases the VIP (FAULT) until it succeeds again.
    pub check: Option<Vec<String>>,
    /// How many times the check runs within each (one-second) run of the script.
    pub checks_per_run: u32,
}

impl VrrpNode {
    /// A node of `vip` (router id 51, priority 100, adverts every 100 ms) with `peers`, no
    /// check.
    pub fn new(vip: Ipv4Addr, peers: Vec<Ipv4Addr>) -> VrrpNode {
        VrrpNode {
            vip,
            virtual_router_id: 51,
            priority: 100,
            peers,
            advert_int: 0.1,
            check: None,
            checks_per_run: 4,
        }
    }

    /// The same with `check` (program and arguments) as the health check.
    pub fn with_check<S: AsRef<str>>(mut self, check: &[S]) -> VrrpNode {
        self.check = Some(check.iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// The same with `priority`.
    pub fn with_priority(mut self, priority: u8) -> VrrpNode {
        self.priority = priority;
        self
    }
}

/// `keepalived.conf` for a node at `src` on interface `dev`, its check script (if any) at
/// `check_script`.
pub fn keepalived_conf(
    node: &VrrpNode,
    name: &str,
    src: Ipv4Addr,
    dev: &str,
    check_script: &Path,
) -> String {
    let peers: String = node
        .peers
        .iter()
        .map(|p| format!("        {p}\n"))
        .collect();
    let (script, track) = match &node.check {
        Some(_) => (
            format!(
                "vrrp_script anchorage_health {{\n    \
                 script \"{}\"\n    \
                 interval 1\n    \
                 timeout 2\n    \
                 fall 1\n    \
                 rise 1\n\
                 }}\n\n",
                check_script.display()
            ),
            "    track_script {\n        anchorage_health weight 0\n    }\n".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "global_defs {{\n    \
         router_id {name}\n    \
         vrrp_version 3\n    \
         script_user root\n\
         }}\n\n\
         {script}\
         vrrp_instance anchorage {{\n    \
         state BACKUP\n    \
         nopreempt\n    \
         interface {dev}\n    \
         virtual_router_id {vrid}\n    \
         priority {priority}\n    \
         advert_int {advert:.2}\n    \
         unicast_src_ip {src}\n    \
         unicast_peer {{\n{peers}    }}\n    \
         virtual_ipaddress {{\n        {vip}/{prefix} dev {dev}\n    }}\n\
         {track}\
         }}\n",
        vrid = node.virtual_router_id,
        priority = node.priority,
        advert = node.advert_int,
        vip = node.vip,
        prefix = Lan::PREFIX,
    )
}

/// The check script: `command` `runs` times, a quarter of a second apart, failing at the first
/// failure.
pub fn check_script(command: &[String], runs: u32) -> String {
    let quoted: Vec<String> = command
        .iter()
        .map(|word| format!("'{}'", word.replace('\'', r"'\''")))
        .collect();
    let runs = runs.max(1);
    format!(
        "#!/bin/sh\n\
         # keepalived runs this once a second: check {runs} times within it.\n\
         n=0\n\
         while :; do\n    \
         {} >/dev/null 2>&1 || exit 1\n    \
         n=$((n + 1))\n    \
         [ \"$n\" -ge {runs} ] && exit 0\n    \
         sleep 0.2\n\
         done\n",
        quoted.join(" ")
    )
}

/// A running keepalived in a host of a test LAN.
pub struct Keepalived {
    daemon: Daemon,
    host: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Keepalived {
    /// Starts keepalived in `host` with `node`'s settings on the host's LAN interface. Fails
    /// the test naming the Debian package `keepalived` if it is missing, or with its log if
    /// it exits at once (a configuration it refuses).
    pub fn start(host: &LanHost, node: &VrrpNode) -> Keepalived {
        let bin = require_tool("keepalived", "keepalived");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let script = dir.path().join("anchorage-check");
        if let Some(command) = &node.check {
            std::fs::write(&script, check_script(command, node.checks_per_run))
                .expect("the check script written");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .expect("the check script made executable");
        }
        let config = dir.path().join("keepalived.conf");
        std::fs::write(
            &config,
            keepalived_conf(node, host.name(), host.ipv4(), DEV, &script),
        )
        .expect("the configuration written");
        let mut command = host.command(bin);
        command
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            .arg("--use-file")
            .arg(&config)
            .arg("--pid")
            .arg(dir.path().join("keepalived.pid"))
            .arg("--vrrp_pid")
            .arg(dir.path().join("vrrp.pid"));
        let log = dir.path().join("keepalived.log");
        let mut daemon = Daemon::spawn_logged("keepalived", &mut command, &log);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("Startup complete") || d.log().contains("Entering")
        });
        Keepalived {
            daemon,
            host: host.name().to_string(),
            config,
            _dir: dir,
        }
    }

    /// The host it runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Its pid (the parent; its VRRP child is in its process group).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Its configuration.
    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.is_running()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // SIGTERM first: it leaves the VRRP group cleanly (priority 0 advert, VIP removed);
        // the Daemon's drop then kills what is left of its process group.
        self.daemon.signal(libc::SIGTERM);
        self.daemon.wait_exit(Duration::from_secs(2));
    }
}

/// Waits until exactly one host of `lan` holds `vip` and that host is `expected` (any host if
/// `None`); the holder and how long it took. Panics after `timeout` with what each keepalived
/// logged.
pub fn wait_vip(
    lan: &Lan,
    vip: Ipv4Addr,
    expected: Option<&str>,
    timeout: Duration,
    nodes: &[&Keepalived],
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let holders = lan.vip_holders(vip);
        if let [one] = holders.as_slice() {
            if expected.is_none_or(|e| e == *one) {
                return (one.to_string(), start.elapsed());
            }
        }
        if start.elapsed() >= timeout {
            let logs: String = nodes
                .iter()
                .map(|k| format!("--- keepalived on {}:\n{}\n", k.host(), k.log()))
                .collect();
            panic!(
                "{vip} not on {} within {timeout:?}: held by {holders:?}\n{logs}",
                expected.unwrap_or("exactly one host")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_script_quotes_its_words_and_stops_at_the_first_failure() {
        let script = check_script(&["/bin/x y".to_string(), "it's".to_string()], 4);
        assert!(script.contains(r"'/bin/x y' 'it'\''s' >/dev/null 2>&1 || exit 1"));
        assert!(script.contains("[ \"$n\" -ge 4 ] && exit 0"));
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let run = |command: &str| {
            let cmd = vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("echo x >> {}; {command}", count.display()),
            ];
            let path = dir.path().join("check");
            std::fs::write(&path, check_script(&cmd, 3)).unwrap();
            let ok = std::process::Command::new("sh")
                .arg(&path)
                .status()
                .unwrap()
                .success();
            let n = std::fs::read_to_string(&count).unwrap().lines().count();
            std::fs::remove_file(&count).unwrap();
            (ok, n)
        };
        assert_eq!(run("true"), (true, 3));
        assert_eq!(run("false"), (false, 1));
    }

    #[test]
    fn a_two_node_configuration_is_what_operators_get() {
        let node = VrrpNode::new(
            Ipv4Addr::new(10, 88, 0, 100),
            vec![Ipv4Addr::new(10, 88, 0, 12)],
        )
        .with_check(&["anchorage", "ctl", "health"]);
        let conf = keepalived_conf(
            &node,
            "p1",
            Ipv4Addr::new(10, 88, 0, 11),
            "eth0",
            Path::new("/etc/keepalived/anchorage-check"),
        );
        for line in [
            "vrrp_version 3",
            "state BACKUP",
            "nopreempt",
            "advert_int 0.10",
            "unicast_src_ip 10.88.0.11",
            "        10.88.0.12\n",
            "10.88.0.100/24 dev eth0",
            "script \"/etc/keepalived/anchorage-check\"",
            "interval 1",
            "anchorage_health weight 0",
        ] {
            assert!(conf.contains(line), "{line:?} in\n{conf}");
        }
    }

    /// Two real keepalived nodes: one holds the VIP; its check failing moves the VIP to the
    /// other in under a second; when the check passes again the VIP stays (nopreempt).
    #[test]
    fn a_failing_check_moves_the_vip_within_a_second_and_it_does_not_come_back() {
        let lan = Lan::create(&["n1", "n2"]);
        let dir = tempfile::tempdir().unwrap();
        let vip = Ipv4Addr::new(10, 88, 0, 100);
        let node = |me: &str, peer: &str| {
            let flag = dir.path().join(format!("{me}-sick"));
            let check = format!("test ! -e {}", flag.display());
            let node =
                VrrpNode::new(vip, vec![lan.host(peer).ipv4()]).with_check(&["sh", "-c", &check]);
            (node, flag)
        };
        let (node1, sick1) = node("n1", "n2");
        let (node2, _) = node("n2", "n1");
        let k1 = Keepalived::start(lan.host("n1"), &node1);
        let (holder, _) = wait_vip(&lan, vip, Some("n1"), Duration::from_secs(5), &[&k1]);
        assert_eq!(holder, "n1");
        let k2 = Keepalived::start(lan.host("n2"), &node2);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(lan.vip_holder(vip), Some("n1"), "{}", k2.log());
        std::fs::write(&sick1, "").unwrap();
        let (_, took) = wait_vip(&lan, vip, Some("n2"), Duration::from_secs(3), &[&k1, &k2]);
        assert!(
            took < Duration::from_secs(1),
            "the VIP took {took:?} to move"
        );
        std::fs::remove_file(&sick1).unwrap();
        std::thread::sleep(Duration::from_millis(2000));
        assert_eq!(lan.vip_holder(vip), Some("n2"), "{}", k1.log());
        assert!(k1.log().contains("Entering FAULT STATE"), "{}", k1.log());
        drop((k1, k2));
    }
}
