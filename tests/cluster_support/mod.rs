//! The proxy cluster of the VIP tests (issue #15): a LAN of network namespaces made by the
//! test (`anchorage_testkit::lan`; nothing on the host's interfaces) with
//!
//! * `p1`, `p2`: an `anchorage proxy` each in `[cluster] mode = "vip"`, SIP on the VIP (bound
//!   before the host holds it: `net.ipv4.ip_nonlocal_bind=1`), its API on the host's own
//!   address, both sharing one Redis; and a real keepalived (unicast VRRPv3, adverts every
//!   100 ms, `state BACKUP` + `nopreempt`) whose health check is `anchorage ctl health`;
//! * `svc`: `redis-server` and two `anchorage relay` nodes;
//! * `phones`: SIPp caller and callee.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_testkit::keepalived::{wait_vip, Keepalived, VrrpNode};
use anchorage_testkit::lan::Lan;
use anchorage_testkit::redis::RedisServer;
use anchorage_testkit::sipp::{Sipp, SippProcess};
use anchorage_testkit::{http, AnchorageProxy, AnchorageRelay};

use crate::restart_support::{bin, eventually, scenario};

/// Signals (Linux numbers; the test crate has no libc).
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

/// The virtual IP the proxies share.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 100);
/// The proxies' SIP port (on the VIP) and API port (on their own address). The LAN is the
/// test's own: fixed ports are free there.
pub const SIP_PORT: u16 = 5060;
pub const API_PORT: u16 = 7060;
/// The relays' ng ports on `svc`, and their media ports.
pub const RELAYS: [(&str, u16, u16); 2] = [("relay-a", 2223, 30000), ("relay-b", 2224, 30100)];
/// A token for the API (it listens on a LAN address); GETs, the health check's among them,
/// need none.
pub const API_TOKEN: &str = "cluster-vip-test";

/// The configuration of proxy node `id`: SIP (UDP) on the VIP — so every Via and
/// Record-Route it writes names the VIP — the API on `api`, the calls in the shared Redis
/// `store`, media anchored on the relays at `relays` (`relay-a`, `relay-b`).
pub fn cluster_proxy_config(
    id: &str,
    api: SocketAddr,
    store: &str,
    relays: &[SocketAddr],
    extra: &str,
) -> String {
    let nodes: String = relays
        .iter()
        .zip(RELAYS)
        .map(|(ng, (name, _, _))| format!("  {{ name = \"{name}\", ng = \"{ng}\" }},\n"))
        .collect();
    format!(
        "[node]\n\
         id = \"{id}\"\n\
         \n\
         [[proxy.listen]]\n\
         transport = \"udp\"\n\
         address = \"{vip}:{SIP_PORT}\"\n\
         \n\
         [api]\n\
         listen = \"{api}\"\n\
         token = \"{API_TOKEN}\"\n\
         \n\
         [cluster]\n\
         store = \"{store}\"\n\
         mode = \"vip\"\n\
         vip = \"{vip}\"\n\
         heartbeat_ms = 100\n\
         lease_ms = 500\n\
         \n\
         [[proxy.relay_set]]\n\
         name = \"main\"\n\
         nodes = [\n{nodes}]\n\
         \n\
         [proxy.media]\n\
         set = \"main\"\n\
         caller_flags = \"replace-origin\"\n\
         callee_flags = \"replace-origin\"\n\
         \n\
         # No relay dies here: a long silence window keeps a loaded machine's stalls from\n\
         # looking like a dead relay.\n\
         [proxy.relay_health]\n\
         down_after = 40\n\
         {extra}",
        vip = VIP,
    )
}

/// The LAN with its processes. Fields drop in order: keepalived and the proxies first, then
/// the relays and Redis, the LAN (its namespaces) last.
pub struct Cluster {
    pub keepalived: Vec<Keepalived>,
    /// `p1`'s proxy and `p2`'s.
    pub proxies: Vec<AnchorageProxy>,
    pub relays: Vec<AnchorageRelay>,
    pub redis: RedisServer,
    /// What the killed proxies logged.
    pub killed_logs: String,
    pub lan: Lan,
}

impl Drop for Cluster {
    /// A failed test shows what the proxies and keepalived logged.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- killed proxies logged:\n{}", self.killed_logs);
            for (i, p) in self.proxies.iter().enumerate() {
                eprintln!("--- proxy on p{}:\n{}", i + 1, p.daemon.log());
            }
            for k in &self.keepalived {
                eprintln!("--- keepalived on {}:\n{}", k.host(), k.log());
            }
        }
    }
}

impl Cluster {
    /// Starts Redis and the relays on `svc`, a proxy on `p1` and `p2`, then keepalived on
    /// `p1` (which takes the VIP) and on `p2` (a backup).
    pub fn start() -> Cluster {
        Cluster::start_with("")
    }

    /// [`Cluster::start`] with `extra` configuration for both proxies (TOML appended to
    /// [`cluster_proxy_config`]'s).
    pub fn start_with(extra: &str) -> Cluster {
        Cluster::start_with_hosts(&[], extra)
    }

    /// [`Cluster::start_with`] on a LAN with hosts `more` besides `p1`, `p2`, `svc` and
    /// `phones` (after them: `10.88.0.15` on).
    pub fn start_with_hosts(more: &[&str], extra: &str) -> Cluster {
        let names: Vec<&str> = ["p1", "p2", "svc", "phones"]
            .iter()
            .chain(more)
            .copied()
            .collect();
        let lan = Lan::create(&names);
        let svc = lan.host("svc");
        let redis = RedisServer::start_in(svc);
        let relays: Vec<AnchorageRelay> = RELAYS
            .iter()
            .map(|(_, ng, base)| AnchorageRelay::start_in(svc, bin(), *ng, *base..=base + 99, &[]))
            .collect();
        let relay_ng: Vec<SocketAddr> = RELAYS
            .iter()
            .map(|(_, ng, _)| SocketAddr::new(svc.addr(), *ng))
            .collect();
        let proxies: Vec<AnchorageProxy> = ["p1", "p2"]
            .iter()
            .map(|name| {
                let host = lan.host(name);
                let api = SocketAddr::new(host.addr(), API_PORT);
                let config = cluster_proxy_config(name, api, &redis.url(), &relay_ng, extra);
                AnchorageProxy::in_lan(host, bin(), sip(), api, &config)
            })
            .collect();
        for (i, name) in ["p1", "p2"].iter().enumerate() {
            let health = api_get(&lan, &proxies[i], "/v1/health");
            assert_eq!(health["store"]["up"], true, "{name}: {health}");
            assert_eq!(health["relays_up"], 2, "{name}: {health}");
        }
        let mut cluster = Cluster {
            keepalived: Vec::new(),
            proxies,
            relays,
            redis,
            killed_logs: String::new(),
            lan,
        };
        let started = Instant::now();
        let k1 = Keepalived::start(cluster.lan.host("p1"), &cluster.vrrp_node("p1", "p2"));
        cluster.keepalived.push(k1);
        cluster.wait_vip_on("p1", Duration::from_secs(10));
        let k2 = Keepalived::start(cluster.lan.host("p2"), &cluster.vrrp_node("p2", "p1"));
        cluster.keepalived.push(k2);
        let k2 = &cluster.keepalived[1];
        eventually(Duration::from_secs(5), "p2's keepalived a backup", || {
            k2.log().contains("Entering BACKUP STATE")
        });
        println!(
            "keepalived: the VIP on p1, p2 a backup, after {:?}",
            started.elapsed()
        );
        cluster
    }

    /// Node `me`'s VRRP settings, `peer` the other node; the check is `anchorage ctl health`
    /// of its own proxy. As in `docs/operations.md`.
    pub fn vrrp_node(&self, me: &str, peer: &str) -> VrrpNode {
        let api = format!("http://{}:{API_PORT}", self.lan.host(me).addr());
        // p1 first (as operators number them): when p1 comes back after a failover, only
        // nopreempt keeps the VIP where it went.
        let priority = if me == "p1" { 100 } else { 99 };
        VrrpNode::new(VIP, vec![self.lan.host(peer).ipv4()])
            .with_priority(priority)
            .with_check(&[
                bin().to_str().expect("a UTF-8 path"),
                "ctl",
                "--api",
                &api,
                "health",
                "--timeout-ms",
                "300",
            ])
    }

    /// The proxy on `p1` or `p2`.
    pub fn proxy(&self, name: &str) -> &AnchorageProxy {
        &self.proxies[index(name)]
    }

    /// Waits until the VIP is on `name` only; how long that took.
    pub fn wait_vip_on(&self, name: &str, timeout: Duration) -> Duration {
        let nodes: Vec<&Keepalived> = self.keepalived.iter().collect();
        wait_vip(&self.lan, VIP, Some(name), timeout, &nodes).1
    }

    /// Asserts that the VIP stays on `name` for `period`.
    pub fn vip_stays_on(&self, name: &str, period: Duration) {
        let end = Instant::now() + period;
        while Instant::now() < end {
            assert_eq!(self.lan.vip_holder(VIP), Some(name), "the VIP left {name}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of the proxy on `name` (keeping what it logged).
    pub fn kill_proxy(&mut self, name: &str) {
        let p = &mut self.proxies[index(name)];
        p.kill_9();
        self.killed_logs
            .push_str(&format!("--- proxy on {name}:\n{}", p.daemon.log()));
    }

    /// `p1` (the active node) writes everything, is killed (`kill -9`), and the VIP reaches
    /// `p2` within `within`.
    pub fn fail_over(&mut self, within: Duration) {
        self.store_caught_up("p1");
        self.kill_proxy("p1");
        self.wait_vip_on("p2", within);
    }

    /// Waits until the proxy on `name` has written every change of its calls to Redis.
    pub fn store_caught_up(&self, name: &str) {
        eventually(Duration::from_secs(5), "the store caught up", || {
            api_get(&self.lan, self.proxy(name), "/v1/health")["store"]["dirty_calls"] == 0
        });
    }

    /// A POST of the API of the proxy on `name` (with the token), from the `phones` host:
    /// the status and the JSON body.
    pub fn post(&self, name: &str, path: &str) -> (u16, serde_json::Value) {
        let p = self.proxy(name);
        let auth = format!("Authorization: Bearer {API_TOKEN}");
        let (status, body) = self
            .lan
            .host("phones")
            .run(|| anchorage_testkit::http_with(p.api, "POST", path, "", &[&auth]));
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A SIPp callee (scenario `uas` with `uas_args`) on `phones:5070` and, once it listens, a
    /// SIPp caller (`uac` with `uac_args`) on `phones:5080` calling it through the VIP:
    /// (callee, caller).
    pub fn call(
        &self,
        uas: &str,
        uas_args: &[&str],
        uac: &str,
        uac_args: &[&str],
    ) -> (SippProcess, SippProcess) {
        self.call_between("phones", uas, uas_args, "phones", uac, uac_args)
    }

    /// [`Cluster::call`] with the callee on `callee_host:5070` and the caller on
    /// `caller_host:5080` (any hosts of the LAN, one behind a NAT too).
    pub fn call_between(
        &self,
        callee_host: &str,
        uas: &str,
        uas_args: &[&str],
        caller_host: &str,
        uac: &str,
        uac_args: &[&str],
    ) -> (SippProcess, SippProcess) {
        let (callee_host, caller_host) = (self.lan.host(callee_host), self.lan.host(caller_host));
        let callee_addr = SocketAddr::new(callee_host.addr(), 5070);
        let caller_addr = SocketAddr::new(caller_host.addr(), 5080);
        let callee = Sipp::in_lan(callee_host, "uas", &scenario(uas), callee_addr)
            .args(uas_args)
            .spawn();
        std::thread::sleep(Duration::from_millis(300));
        let caller = Sipp::in_lan(caller_host, "uac", &scenario(uac), caller_addr)
            .args(uac_args)
            .args(["-rsa", &sip().to_string()])
            .args([callee_addr.to_string()])
            .spawn();
        (callee, caller)
    }

    /// Waits until none of the relays `live` (by index) holds a session of `call_id` and
    /// Redis has no record of it.
    pub fn assert_call_gone(&self, call_id: &str, live: &[usize]) {
        eventually(Duration::from_secs(5), "the relay sessions deleted", || {
            live.iter()
                .all(|i| !self.relay_calls(*i).contains(&call_id.to_string()))
        });
        eventually(Duration::from_secs(5), "the record deleted", || {
            self.redis
                .cli(&["EXISTS", &format!("anc:call:{{{call_id}}}")])
                == "0"
        });
    }

    /// `p2` took the calls over once and serves as the active node.
    pub fn assert_p2_took_over(&self) {
        let view = api_get(&self.lan, self.proxy("p2"), "/v1/cluster");
        assert_eq!(
            (view["role"].as_str(), &view["takeovers"]),
            (Some("active"), &1.into()),
            "{view}"
        );
    }

    /// The Call-IDs a relay (by index) holds.
    pub fn relay_calls(&self, i: usize) -> Vec<String> {
        let ng = SocketAddr::new(self.lan.host("svc").addr(), self.relays[i].ng);
        self.lan
            .host("svc")
            .run(|| anchorage_testkit::ng_list_at(ng))
    }
}

/// Sleeps up to a second, an amount that differs from run to run: keepalived runs its check
/// once a second from its start, so a failure at a fixed time after the start would always
/// meet the check at the same point of its cycle.
pub fn any_phase() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::thread::sleep(Duration::from_millis(u64::from(nanos % 1000)));
}

/// The proxies' SIP address, the VIP.
pub fn sip() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(VIP), SIP_PORT)
}

pub fn index(name: &str) -> usize {
    match name {
        "p1" => 0,
        "p2" => 1,
        other => panic!("no proxy {other}"),
    }
}

/// A GET of a proxy's API from inside the LAN (from `phones`): the JSON it answers.
pub fn api_get(lan: &Lan, p: &AnchorageProxy, path: &str) -> serde_json::Value {
    let (status, body) = lan.host("phones").run(|| http(p.api, "GET", path, ""));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The media ports of the relay whose first port is `base`.
pub fn relay_of_port(port: u16) -> &'static str {
    RELAYS
        .iter()
        .find(|(_, _, base)| (*base..base + 100).contains(&port))
        .map(|(name, _, _)| *name)
        .unwrap_or_else(|| panic!("port {port} is on no relay"))
}

/// The `m=audio` port and `c=` address of a message's SDP.
pub fn media_of(message: &str) -> (String, u16) {
    let c = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= in {message}"));
    let port = message
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {message}"));
    (c.trim().to_string(), port)
}

/// The Call-ID of a SIP message (as SIPp logged it).
pub fn call_id_of(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.trim().strip_prefix("Call-ID: "))
        .unwrap_or_else(|| panic!("no Call-ID in {message}"))
        .trim()
        .to_string()
}
