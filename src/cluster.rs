//! This node's place among the proxies that share a call store (`[cluster]`).
//!
//! * `mode = "single"`: the node acts for every call it holds, and claims from the store any
//!   call a message brings it (a restart of itself, or a node started on its address).
//! * `mode = "vip"`: keepalived moves a virtual IP between the nodes. The node that holds it is
//!   *active*: on getting it, it claims every call of every node from the store and acts for
//!   them. A node without it is *passive*: it holds no call — on losing the address it releases
//!   every call without a word (`Proxy::release_all_calls`), and it never claims one. Whether
//!   the address is here is read from the host's interfaces (no notify script): every
//!   [`CHECK_EVERY`], and before any event is handled once the last reading is older, so a node
//!   that resumes after `SIGSTOP` learns it lost the address before it sends anything.
//!
//! Whatever this node believes, the store has the last word: a write of a call another node
//! claimed is refused, and the call is released here (`Store::take_fenced`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anchorage_config::{ClusterConfig, ClusterMode};

/// How often the node reads whether it holds the virtual IP.
pub const CHECK_EVERY: Duration = Duration::from_millis(20);

/// What the management API shows of the node's role; shared by the driver and the API.
#[derive(Debug)]
pub struct ClusterState {
    /// This node's `[node] id`.
    pub node: String,
    /// `[cluster] mode`.
    pub mode: ClusterMode,
    /// `[cluster] vip`.
    pub vip: Option<IpAddr>,
    active: AtomicBool,
    /// Unix ms when the node last became active (0: never).
    active_since_ms: AtomicU64,
    takeovers: AtomicU64,
    released: AtomicU64,
    /// A takeover's claims are on their way (from getting the VIP to the drained relays).
    takeover: AtomicBool,
}

impl ClusterState {
    /// The state of node `node` under `config`: active from the start unless in `vip` mode.
    pub fn new(node: &str, config: &ClusterConfig) -> ClusterState {
        let single = config.mode != ClusterMode::Vip;
        ClusterState {
            node: node.to_string(),
            mode: config.mode,
            vip: config.vip,
            active: AtomicBool::new(single),
            active_since_ms: AtomicU64::new(if single { unix_ms() } else { 0 }),
            takeovers: AtomicU64::new(0),
            released: AtomicU64::new(0),
            takeover: AtomicBool::new(false),
        }
    }

    /// Whether this node acts for calls now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Unix ms when the node last became active, if it is.
    pub fn active_since_ms(&self) -> Option<u64> {
        let since = self.active_since_ms.load(Ordering::Relaxed);
        (self.is_active() && since > 0).then_some(since)
    }

    /// Times this node got the virtual IP and claimed the calls.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }

    /// Calls released because the virtual IP left or another node claimed them.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Relaxed)
    }

    /// Counts calls released.
    pub fn count_released(&self, calls: usize) {
        self.released.fetch_add(calls as u64, Ordering::Relaxed);
    }

    /// Whether a takeover's claims are still on their way to the event loop.
    pub fn takeover_running(&self) -> bool {
        self.takeover.load(Ordering::Relaxed)
    }

    /// The takeover's last batch has been taken.
    pub fn takeover_done(&self) {
        self.takeover.store(false, Ordering::Relaxed);
    }

    fn set_active(&self, active: bool) {
        self.active.store(active, Ordering::Relaxed);
        self.takeover.store(active, Ordering::Relaxed);
        if active {
            self.active_since_ms.store(unix_ms(), Ordering::Relaxed);
            self.takeovers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A change of role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// The virtual IP arrived: claim every call.
    Gained,
    /// The virtual IP left: release every call.
    Lost,
}

/// Watches the virtual IP (`mode = "vip"`; in `single` mode it never reports a change).
pub struct VipWatch {
    state: Arc<ClusterState>,
    last_check: Option<Instant>,
}

impl VipWatch {
    /// A watch over `state`'s virtual IP; the first check reads it.
    pub fn new(state: Arc<ClusterState>) -> VipWatch {
        VipWatch {
            state,
            last_check: None,
        }
    }

    /// The role it keeps.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The role it keeps, shared (for a task that must stop when the role goes).
    pub fn shared(&self) -> Arc<ClusterState> {
        self.state.clone()
    }

    /// Reads whether the host has the virtual IP if the last reading is [`CHECK_EVERY`] old
    /// or more, and returns the change of role, if any.
    pub fn check(&mut self, now: Instant) -> Option<RoleChange> {
        self.check_if(now, false)
    }

    /// [`VipWatch::check`], reading the interfaces now whatever the last reading's age when
    /// `now_anyway` (a passive node that got a SIP message on the VIP: the address has just
    /// arrived, and the message must not be handled as by a passive node).
    pub fn check_if(&mut self, now: Instant, now_anyway: bool) -> Option<RoleChange> {
        let vip = match (self.state.mode, self.state.vip) {
            (ClusterMode::Vip, Some(vip)) => vip,
            _ => return None,
        };
        let fresh = self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < CHECK_EVERY);
        if fresh && !now_anyway {
            return None;
        }
        self.last_check = Some(now);
        let here = match host_has(vip) {
            Ok(here) => here,
            Err(error) => {
                // Unreadable interfaces: keep the role we have rather than flap.
                tracing::warn!(%vip, %error, "cannot read the host's addresses");
                return None;
            }
        };
        match (self.state.is_active(), here) {
            (false, true) => {
                self.state.set_active(true);
                tracing::warn!(%vip, "this node holds the virtual IP: taking over every call");
                Some(RoleChange::Gained)
            }
            (true, false) => {
                self.state.set_active(false);
                tracing::warn!(%vip, "the virtual IP left this node: releasing every call");
                Some(RoleChange::Lost)
            }
            _ => None,
        }
    }
}

/// Whether one of the host's interfaces has `address`.
pub fn host_has(address: IpAddr) -> std::io::Result<bool> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addresses.into_iter().any(|a| {
        let Some(sockaddr) = a.address else {
            return false;
        };
        let ip = match (sockaddr.as_sockaddr_in(), sockaddr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return false,
        };
        ip == address
    }))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_and_a_foreign_address_is_not() {
        assert!(host_has("127.0.0.1".parse().unwrap()).unwrap());
        assert!(!host_has("192.0.2.77".parse().unwrap()).unwrap());
    }

    #[test]
    fn a_vip_node_gains_and_loses_its_role_with_the_address_and_reads_it_at_most_every_check() {
        let config = ClusterConfig {
            mode: ClusterMode::Vip,
            // Always here: this host's loopback.
            vip: Some("127.0.0.1".parse().unwrap()),
            ..ClusterConfig::default()
        };
        let state = Arc::new(ClusterState::new("n1", &config));
        assert!(!state.is_active());
        let mut watch = VipWatch::new(state.clone());
        let t = Instant::now();
        assert_eq!(watch.check(t), Some(RoleChange::Gained));
        assert!(state.is_active() && state.active_since_ms().is_some());
        assert_eq!(state.takeovers(), 1);
        assert_eq!(watch.check(t + CHECK_EVERY / 2), None);
        // Forced, it reads at once (still here: no change).
        assert_eq!(watch.check_if(t + CHECK_EVERY / 4, true), None);
        // An address this host does not have: the role goes at the next reading.
        let gone = Arc::new(ClusterState::new(
            "n2",
            &ClusterConfig {
                vip: Some("192.0.2.77".parse().unwrap()),
                ..config
            },
        ));
        gone.set_active(true);
        let mut watch = VipWatch::new(gone.clone());
        assert_eq!(watch.check(t), Some(RoleChange::Lost));
        assert!(!gone.is_active() && gone.active_since_ms().is_none());
        assert_eq!(watch.check(t + CHECK_EVERY), None);
    }

    #[test]
    fn a_single_node_is_always_active_and_never_changes() {
        let state = Arc::new(ClusterState::new("n1", &ClusterConfig::default()));
        assert!(state.is_active());
        assert_eq!(VipWatch::new(state).check(Instant::now()), None);
    }
}
