//! `[proxy]`: the SIP signalling node — listeners, timers, limits, dialogs and routing rules.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::ConfigError;

/// `[proxy]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `[[proxy.listen]]`: sockets to receive SIP on. Default: UDP and TCP on 127.0.0.1:5060.
    pub listen: Vec<Listener>,
    /// `[proxy.timers]`: RFC 3261 timer base values.
    pub timers: Timers,
    /// `[proxy.tcp]`: limits for stream transports.
    pub tcp: TcpLimits,
    /// `[proxy.dialog]`: dialog lifetime.
    pub dialog: DialogConfig,
    /// `[[proxy.route]]`: ordered routing rules; the first that matches a request applies.
    /// With none, every request is forwarded to its Request-URI.
    pub route: Vec<RouteRule>,
    /// `[proxy.dns]`: how host names are resolved (RFC 3263).
    pub dns: DnsConfig,
    /// `[[proxy.relay_set]]`: named sets of media relay nodes driven over ng.
    pub relay_set: Vec<RelaySet>,
    /// `[proxy.media]`: the media policy of calls whose rule sets none.
    pub media: MediaPolicy,
    /// `[proxy.relay_health]`: how relay nodes are watched.
    pub relay_health: RelayHealth,
    /// `[proxy.reanchor]`: how calls are moved between relay nodes.
    pub reanchor: Reanchor,
    /// `[proxy.flood]`: per-source request rate limit (off by default).
    pub flood: Flood,
    /// `[proxy.overload]`: when new calls are turned away with 503 instead of queued.
    pub overload: Overload,
}

/// Load shedding: beyond these bounds a new INVITE (one without a To tag) is answered
/// `503 Service Unavailable` with `Retry-After`, while requests inside dialogs, BYEs, CANCELs
/// and responses are still served. Each bound is checked when the INVITE arrives; the proxy
/// takes new calls again by itself as soon as it is back under them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overload {
    /// Server transactions alive at most (each holds a request until its timers end).
    pub max_transactions: usize,
    /// ng requests awaiting a relay's reply, per relay node, at most: a node with more is
    /// not given new calls (it is busy, not dead).
    pub max_pending_ng: usize,
    /// A message that waited longer than this in the proxy's input queue means the proxy is
    /// behind: new INVITEs are shed until the queue drains. Milliseconds; 0 turns it off.
    pub max_queue_delay_ms: u64,
    /// The `Retry-After` value of every 503 the proxy makes (overload, no relay), seconds.
    pub retry_after_s: u32,
}

impl Default for Overload {
    fn default() -> Self {
        Self {
            max_transactions: 200_000,
            max_pending_ng: 2_000,
            max_queue_delay_ms: 500,
            retry_after_s: 5,
        }
    }
}

/// A request rate limit per source address, against floods and scanners (what Kamailio's
/// `pike` module does): a source that sends more than `requests_per_second` (with bursts up to
/// `burst`) is blocked for `block_s` seconds, during which its requests are dropped without an
/// answer. Responses are never counted. Off while `requests_per_second` is 0.
/// `drop_user_agents` drops requests from scanners that name themselves, at any rate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Flood {
    /// Sustained requests per second allowed from one source IP; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a source may send at once above the sustained rate; 0 means twice the rate.
    pub burst: u32,
    /// How long a source that went over the limit stays blocked, seconds.
    pub block_s: u64,
    /// Networks (CIDR) never limited: trunks, SBCs, your own servers.
    pub trusted: Vec<IpNet>,
    /// Sources tracked at most; beyond it, sources in good standing are forgotten first.
    pub max_sources: usize,
    /// Requests whose User-Agent contains one of these (case-insensitive) are dropped
    /// unanswered, whatever their rate: the names SIP scanners announce themselves with.
    pub drop_user_agents: Vec<String>,
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            requests_per_second: 0,
            burst: 0,
            block_s: 60,
            trusted: Vec::new(),
            max_sources: 100_000,
            drop_user_agents: Vec::new(),
        }
    }
}

/// Relay health checks. Every node gets an ng `ping` every `interval_ms`; any reply from it
/// (to a ping or to any other command) shows it lives. A node is down when it stays silent
/// for its window after a request was sent: at least `down_after` × `interval_ms`, more when
/// the node has shown slow round trips (the window adapts to them, up to `max_window_ms`), so
/// a busy relay is slow, not dead. A refused ping (ICMP port unreachable: no process on the
/// port), confirmed by a second one, takes a node down at once. A down node is up again after
/// `up_after` pings answered in a row.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayHealth {
    /// Ping interval, milliseconds.
    pub interval_ms: u64,
    /// The shortest silence that makes a node down, in ping intervals.
    pub down_after: u32,
    /// Answered pings in a row that make a down node up.
    pub up_after: u32,
    /// The longest silence window, milliseconds, however slow the node has been.
    pub max_window_ms: u64,
}

impl Default for RelayHealth {
    fn default() -> Self {
        Self {
            interval_ms: 100,
            down_after: 6,
            up_after: 3,
            max_window_ms: 5_000,
        }
    }
}

/// Re-anchoring: pacing of mass moves and the fallback set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reanchor {
    /// Calls being moved at the same time, at most.
    pub max_in_flight: usize,
    /// Calls whose move starts per second, at most.
    pub per_second: u32,
    /// Seconds to wait for a party's answer to a re-INVITE before the move of that call
    /// fails (RFC 3261 Timer B is 32 s; a move should not hang that long).
    pub invite_timeout_s: u64,
    /// Relay set that takes the calls of a dead node when their own set has no healthy node.
    pub fallback_set: Option<String>,
    /// A call whose relay died while no node could take it waits for one (it is moved as
    /// soon as a node of its set or the fallback set is healthy). After this many seconds of
    /// waiting it is ended with a BYE to both parties; 0 (the default) waits for ever.
    pub give_up_s: u64,
}

impl Default for Reanchor {
    fn default() -> Self {
        Self {
            max_in_flight: 500,
            per_second: 5000,
            invite_timeout_s: 8,
            fallback_set: None,
            give_up_s: 0,
        }
    }
}

/// A named set of relay nodes (our relay or rtpengine: both speak ng).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySet {
    /// Name used by media policies.
    pub name: String,
    /// The nodes; a new call goes to the least loaded (calls / weight).
    pub nodes: Vec<RelayNode>,
}

/// One relay node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayNode {
    /// Name in logs, metrics and the API.
    pub name: String,
    /// Its ng control address.
    pub ng: SocketAddr,
    /// Share of new calls relative to the other nodes of the set.
    #[serde(default = "one")]
    pub weight: u32,
}

/// How a call's media is anchored: which relay set, and the ng flags for the SDP produced for
/// each leg (the rtpengine `rtpp-flags` syntax, e.g. `"replace-origin ICE=remove"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaPolicy {
    /// Relay set; none = media is not anchored.
    pub set: Option<String>,
    /// Flags for the SDP sent to the caller (the answer to its offer).
    pub caller_flags: String,
    /// Flags for the SDP sent to the callee (the offer).
    pub callee_flags: String,
    /// Never anchor media for these calls, whatever `set` says.
    pub disabled: bool,
    /// `caller = { type, ip, iface }`: the media profile, advertised address and relay
    /// interface of the caller's leg.
    pub caller: LegMedia,
    /// `callee = { type, ip, iface }`: the same for the callee's leg.
    pub callee: LegMedia,
}

/// Per-leg media options of a policy (OpenSIPS' `$rtp_relay` keys): each becomes an ng option
/// for the SDP that leg is given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegMedia {
    /// Media profile: `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP` or
    /// `UDP/TLS/RTP/SAVPF` (the relay converts when it can).
    #[serde(rename = "type")]
    pub transport: Option<String>,
    /// Address the relay advertises to this leg (ng `media-address`).
    pub ip: Option<IpAddr>,
    /// Relay interface facing this leg, by name (ng `direction`).
    pub iface: Option<String>,
}

/// The media profiles a leg may be given.
pub const MEDIA_PROFILES: [&str; 6] = [
    "RTP/AVP",
    "RTP/AVPF",
    "RTP/SAVP",
    "RTP/SAVPF",
    "UDP/TLS/RTP/SAVP",
    "UDP/TLS/RTP/SAVPF",
];

/// Name resolution.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// DNS servers (`IP:PORT`) to ask; empty = the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 5060));
        Self {
            listen: vec![
                Listener {
                    transport: Transport::Udp,
                    address: loopback,
                    advertise: None,
                },
                Listener {
                    transport: Transport::Tcp,
                    address: loopback,
                    advertise: None,
                },
            ],
            timers: Timers::default(),
            tcp: TcpLimits::default(),
            dialog: DialogConfig::default(),
            route: Vec::new(),
            dns: DnsConfig::default(),
            relay_set: Vec::new(),
            media: MediaPolicy::default(),
            relay_health: RelayHealth::default(),
            reanchor: Reanchor::default(),
            flood: Flood::default(),
            overload: Overload::default(),
        }
    }
}

/// SIP transport of a listener or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (RFC 3261 §18, one message per datagram).
    Udp,
    /// TCP (RFC 3261 §18, framed by Content-Length).
    Tcp,
}

impl Transport {
    /// Lower-case name as written in config and URIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// `udp` or `tcp`.
    pub transport: Transport,
    /// Local address and port to bind.
    pub address: SocketAddr,
    /// Address written into Via and Record-Route instead of the bound one (a public address
    /// or a keepalived virtual IP): `host` or `host:port`.
    pub advertise: Option<String>,
}

/// RFC 3261 timer values (Appendix A). Everything else (B, D, F, H, I, J, K) derives from these.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    /// T1, round-trip estimate, milliseconds (RFC default 500).
    pub t1_ms: u64,
    /// T2, cap of non-INVITE retransmission interval, milliseconds (RFC default 4000).
    pub t2_ms: u64,
    /// T4, maximum time a message stays in the network, milliseconds (RFC default 5000).
    pub t4_ms: u64,
    /// Timer C, proxy INVITE transaction timeout after the last provisional, milliseconds
    /// (RFC: more than 3 minutes; default 180000).
    pub timer_c_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            timer_c_ms: 180_000,
        }
    }
}

/// Limits for TCP connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpLimits {
    /// Most simultaneous connections; further ones are refused.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed, seconds.
    pub idle_timeout_s: u64,
    /// Largest SIP message accepted on a stream, bytes; a larger one closes the connection.
    pub max_message_bytes: usize,
    /// Most simultaneous connections one source address may open to this node; further ones
    /// are closed at once, so one host cannot take every slot of `max_connections`.
    pub max_connections_per_source: usize,
    /// A message whose first byte arrived this long ago and is still incomplete closes its
    /// connection (against slowloris: a client that sends half a message and stops), seconds.
    pub message_timeout_s: u64,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            idle_timeout_s: 600,
            max_message_bytes: 65_535,
            max_connections_per_source: 64,
            message_timeout_s: 10,
        }
    }
}

/// Dialog lifetime.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialogConfig {
    /// A confirmed dialog older than this ends (its relay sessions are deleted), seconds.
    pub max_age_s: u64,
}

impl Default for DialogConfig {
    fn default() -> Self {
        Self { max_age_s: 43_200 }
    }
}

/// One routing rule: a match and exactly one action (`destinations`, `forward` or `reply`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Name used in logs and metrics.
    pub name: String,
    /// What the request must look like; an empty match matches everything.
    #[serde(rename = "match", default)]
    pub matches: RouteMatch,
    /// Forward to this destination set (priority, then weight; serial failover).
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// `"request-uri"`: forward to the Request-URI (RFC 3263 resolution).
    pub forward: Option<ForwardTarget>,
    /// Answer with this final response instead of forwarding.
    pub reply: Option<Reply>,
    /// When to try the next destination of the set.
    #[serde(default)]
    pub failover: Failover,
    /// `serial` (default): one destination after the other; `parallel`: all at once (forking),
    /// the first 2xx wins and the other branches are cancelled.
    #[serde(default)]
    pub fork: Fork,
    /// Media policy of the calls this rule routes; none = `[proxy.media]`.
    pub media: Option<MediaPolicy>,
}

/// How a destination set is tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fork {
    /// One after the other, moving on per `failover`.
    #[default]
    Serial,
    /// All at once (RFC 3261 §16.6 parallel forking).
    Parallel,
}

/// The conditions of a rule; all given ones must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteMatch {
    /// Request methods (upper case), e.g. `["INVITE"]`; empty = any.
    pub methods: Vec<String>,
    /// Request-URI user part starts with this.
    pub user_prefix: Option<String>,
    /// Request-URI host equals this (case-insensitive).
    pub domain: Option<String>,
    /// The packet's source address lies in one of these networks (CIDR); empty = any.
    pub source: Vec<IpNet>,
}

/// Where `forward` sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardTarget {
    /// Resolve the Request-URI (RFC 3263) and send there.
    RequestUri,
}

/// One member of a destination set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Host name or IP address.
    pub host: String,
    /// Port; default 5060.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Transport; default `udp`.
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// Lower is tried first.
    #[serde(default = "one")]
    pub priority: u32,
    /// Share among destinations of equal priority.
    #[serde(default = "one")]
    pub weight: u32,
}

/// A fixed final response.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// Status code, 300–699.
    pub status: u16,
    /// Reason phrase; default the RFC's phrase for the code.
    pub reason: Option<String>,
}

/// Serial failover policy of a destination set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// Responses that move to the next destination: codes (`"503"`), classes (`"5xx"`), or
    /// `"timeout"` (no response within `timeout_ms`).
    pub on: Vec<String>,
    /// How long to wait for any response from one destination, milliseconds.
    pub timeout_ms: u64,
}

impl Default for Failover {
    fn default() -> Self {
        Self {
            on: vec!["timeout".into(), "408".into(), "5xx".into()],
            timeout_ms: 5000,
        }
    }
}

fn default_sip_port() -> u16 {
    5060
}
fn default_transport() -> Transport {
    Transport::Udp
}
fn one() -> u32 {
    1
}

/// A SIP method token (RFC 3261 §25.1 `token`).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Whether `s` is `host` or `host:port` with a plausible host.
fn is_host_port(s: &str) -> bool {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return addr.port() != 0;
    }
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    host_ok && port_ok
}

/// Appends "must be greater than 0" under `{at}.{key}` for each `(key, value)` that is zero.
fn check_positive(at: &str, values: &[(&str, u64)], errors: &mut Vec<ConfigError>) {
    for (key, value) in values {
        if *value == 0 {
            errors.push(ConfigError::new(
                format!("{at}.{key}"),
                "must be greater than 0",
            ));
        }
    }
}

/// Appends "is more than a year" under `{at}.{key}` for each `(key, seconds)` over a year.
fn check_within_a_year(at: &str, values: &[(&str, u64)], errors: &mut Vec<ConfigError>) {
    for (key, seconds) in values {
        if *seconds > 365 * 24 * 3600 {
            errors.push(ConfigError::new(
                format!("{at}.{key}"),
                "is more than a year",
            ));
        }
    }
}

/// Appends an error under `path` when `name` is empty or an earlier `what` (relay set, rule)
/// has it already.
fn check_name<'a>(
    path: &str,
    name: &str,
    mut earlier: impl Iterator<Item = &'a str>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) {
    if name.is_empty() {
        errors.push(ConfigError::new(path, "must not be empty"));
    } else if earlier.any(|o| o == name) {
        errors.push(ConfigError::new(
            path,
            format!("{name:?} is used by an earlier {what}"),
        ));
    }
}

impl ProxyConfig {
    /// Checks what the types cannot, appending errors under `at`: one check per section, in
    /// the order of the sections in `docs/configuration.md`.
    pub fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        self.validate_listen(at, errors);
        self.timers.validate(&format!("{at}.timers"), errors);
        self.tcp.validate(&format!("{at}.tcp"), errors);
        self.flood.validate(&format!("{at}.flood"), errors);
        self.dialog.validate(&format!("{at}.dialog"), errors);
        self.relay_health
            .validate(&format!("{at}.relay_health"), errors);
        self.validate_reanchor(at, errors);
        self.overload.validate(&format!("{at}.overload"), errors);
        self.validate_relay_sets(at, errors);
        self.validate_media(at, errors);
        self.validate_routes(at, errors);
    }

    /// `[[proxy.listen]]`: at least one, each advertised address well formed, none twice.
    fn validate_listen(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.listen.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.listen"),
                "at least one listener is needed",
            ));
        }
        for (i, l) in self.listen.iter().enumerate() {
            if let Some(adv) = &l.advertise {
                if !is_host_port(adv) {
                    errors.push(ConfigError::new(
                        format!("{at}.listen[{i}].advertise"),
                        format!("{adv:?} is not a host or host:port"),
                    ));
                }
            }
            if self.listen[..i]
                .iter()
                .any(|o| o.transport == l.transport && o.address == l.address)
            {
                errors.push(ConfigError::new(
                    format!("{at}.listen[{i}]"),
                    format!("{} {} is listed twice", l.transport.as_str(), l.address),
                ));
            }
        }
    }

    /// `[proxy.reanchor]`: positive limits, times within a year, a fallback set that exists.
    fn validate_reanchor(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let r = &self.reanchor;
        let here = format!("{at}.reanchor");
        check_within_a_year(
            &here,
            &[
                ("invite_timeout_s", r.invite_timeout_s),
                ("give_up_s", r.give_up_s),
            ],
            errors,
        );
        check_positive(
            &here,
            &[
                ("max_in_flight", r.max_in_flight as u64),
                ("per_second", u64::from(r.per_second)),
                ("invite_timeout_s", r.invite_timeout_s),
            ],
            errors,
        );
        if let Some(set) = &r.fallback_set {
            if !self.relay_set.iter().any(|s| &s.name == set) {
                errors.push(ConfigError::new(
                    format!("{here}.fallback_set"),
                    format!("no relay set named {set:?}"),
                ));
            }
        }
    }

    /// `[[proxy.relay_set]]`: unique non-empty names, at least one node, positive weights.
    fn validate_relay_sets(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (i, set) in self.relay_set.iter().enumerate() {
            let here = format!("{at}.relay_set[{i}]");
            let earlier = self.relay_set[..i].iter().map(|o| o.name.as_str());
            check_name(
                &format!("{here}.name"),
                &set.name,
                earlier,
                "relay set",
                errors,
            );
            if set.nodes.is_empty() {
                errors.push(ConfigError::new(
                    format!("{here}.nodes"),
                    "a relay set needs at least one node",
                ));
            }
            for (j, node) in set.nodes.iter().enumerate() {
                if node.weight == 0 {
                    errors.push(ConfigError::new(
                        format!("{here}.nodes[{j}].weight"),
                        "must be greater than 0",
                    ));
                }
            }
        }
    }

    /// `[proxy.media]`: the default media policy.
    fn validate_media(&self, at: &str, errors: &mut Vec<ConfigError>) {
        self.validate_policy(&self.media, &format!("{at}.media"), errors);
    }

    /// `[[proxy.route]]`: each rule (its media policy first), unique non-empty names.
    fn validate_routes(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (i, rule) in self.route.iter().enumerate() {
            if let Some(policy) = &rule.media {
                self.validate_policy(policy, &format!("{at}.route[{i}].media"), errors);
            }
            rule.validate(&format!("{at}.route[{i}]"), errors);
            let earlier = self.route[..i].iter().map(|o| o.name.as_str());
            check_name(
                &format!("{at}.route[{i}].name"),
                &rule.name,
                earlier,
                "rule",
                errors,
            );
        }
    }

    /// A media policy under `path`: its relay set exists, each leg's profile and interface
    /// are well formed.
    fn validate_policy(&self, policy: &MediaPolicy, path: &str, errors: &mut Vec<ConfigError>) {
        if let Some(set) = &policy.set {
            if !self.relay_set.iter().any(|s| &s.name == set) {
                errors.push(ConfigError::new(
                    format!("{path}.set"),
                    format!("no relay set named {set:?}"),
                ));
            }
        }
        for (leg, options) in [("caller", &policy.caller), ("callee", &policy.callee)] {
            if let Some(t) = &options.transport {
                if !MEDIA_PROFILES.contains(&t.as_str()) {
                    errors.push(ConfigError::new(
                        format!("{path}.{leg}.type"),
                        format!("{t:?} is not one of {}", MEDIA_PROFILES.join(", ")),
                    ));
                }
            }
            if let Some(iface) = &options.iface {
                let ok = !iface.is_empty()
                    && iface
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    errors.push(ConfigError::new(
                        format!("{path}.{leg}.iface"),
                        format!("{iface:?} is not an interface name (letters, digits, - _ .)"),
                    ));
                }
            }
        }
    }
}

impl Timers {
    /// `[proxy.timers]` under `at`: each timer positive and within a day once multiplied by
    /// 64, T2 ≥ T1, Timer C over 3 minutes.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        for (key, value) in [
            ("t1_ms", self.t1_ms),
            ("t2_ms", self.t2_ms),
            ("t4_ms", self.t4_ms),
            ("timer_c_ms", self.timer_c_ms),
        ] {
            check_positive(at, &[(key, value)], errors);
            // Timer B and friends are 64 * T1: keep every timer within a day.
            if value > 86_400_000 / 64 {
                errors.push(ConfigError::new(
                    format!("{at}.{key}"),
                    format!("{value} ms is too long (at most {} ms)", 86_400_000 / 64),
                ));
            }
        }
        if self.t2_ms < self.t1_ms {
            errors.push(ConfigError::new(
                format!("{at}.t2_ms"),
                format!(
                    "{} must not be less than t1_ms ({})",
                    self.t2_ms, self.t1_ms
                ),
            ));
        }
        if self.timer_c_ms < 180_000 {
            errors.push(ConfigError::new(
                format!("{at}.timer_c_ms"),
                format!(
                    "{} is below RFC 3261's minimum of 3 minutes (180000)",
                    self.timer_c_ms
                ),
            ));
        }
    }
}

impl TcpLimits {
    /// `[proxy.tcp]` under `at`: positive connection limits, a message timeout of 1 s to an
    /// hour, room for a SIP message.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_positive(
            at,
            &[
                ("max_connections", self.max_connections as u64),
                (
                    "max_connections_per_source",
                    self.max_connections_per_source as u64,
                ),
            ],
            errors,
        );
        if self.message_timeout_s == 0 || self.message_timeout_s > 3600 {
            errors.push(ConfigError::new(
                format!("{at}.message_timeout_s"),
                format!("{} is not 1 to 3600 seconds", self.message_timeout_s),
            ));
        }
        if self.max_message_bytes < 1024 {
            errors.push(ConfigError::new(
                format!("{at}.max_message_bytes"),
                format!(
                    "{} is too small for SIP (at least 1024)",
                    self.max_message_bytes
                ),
            ));
        }
    }
}

impl Flood {
    /// `[proxy.flood]` under `at`: when on, a block time of 1 s to a day, a burst of at
    /// least a second's worth, room for sources; no empty User-Agent to drop.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.requests_per_second > 0 {
            if self.block_s == 0 || self.block_s > 86_400 {
                errors.push(ConfigError::new(
                    format!("{at}.block_s"),
                    format!("{} is not 1 to 86400 seconds", self.block_s),
                ));
            }
            if self.burst != 0 && self.burst < self.requests_per_second {
                errors.push(ConfigError::new(
                    format!("{at}.burst"),
                    format!(
                        "{} is below requests_per_second ({}): a source could never send a second's worth",
                        self.burst, self.requests_per_second
                    ),
                ));
            }
            check_positive(at, &[("max_sources", self.max_sources as u64)], errors);
        }
        for (i, ua) in self.drop_user_agents.iter().enumerate() {
            if ua.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.drop_user_agents[{i}]"),
                    "is empty: it would drop every request with a User-Agent",
                ));
            }
        }
    }
}

impl DialogConfig {
    /// `[proxy.dialog]` under `at`: a maximum age of a second to a year.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(at, &[("max_age_s", self.max_age_s)], errors);
        check_positive(at, &[("max_age_s", self.max_age_s)], errors);
    }
}

impl RelayHealth {
    /// `[proxy.relay_health]` under `at`: positive settings within a year, and a window that
    /// can hold `down_after` pings.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(
            at,
            &[
                ("interval_ms", self.interval_ms / 1000),
                ("max_window_ms", self.max_window_ms / 1000),
            ],
            errors,
        );
        check_positive(
            at,
            &[
                ("interval_ms", self.interval_ms),
                ("down_after", u64::from(self.down_after)),
                ("up_after", u64::from(self.up_after)),
            ],
            errors,
        );
        let shortest = self.interval_ms.saturating_mul(u64::from(self.down_after));
        if self.max_window_ms < shortest {
            errors.push(ConfigError::new(
                format!("{at}.max_window_ms"),
                format!(
                    "{} is below down_after x interval_ms ({shortest}): the window could never be that short",
                    self.max_window_ms
                ),
            ));
        }
    }
}

impl Overload {
    /// `[proxy.overload]` under `at`: positive bounds, delays within a year.
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        check_within_a_year(
            at,
            &[
                ("max_queue_delay_ms", self.max_queue_delay_ms / 1000),
                ("retry_after_s", u64::from(self.retry_after_s)),
            ],
            errors,
        );
        check_positive(
            at,
            &[
                ("max_transactions", self.max_transactions as u64),
                ("max_pending_ng", self.max_pending_ng as u64),
            ],
            errors,
        );
    }
}

impl RouteRule {
    fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        let actions = usize::from(!self.destinations.is_empty())
            + usize::from(self.forward.is_some())
            + usize::from(self.reply.is_some());
        if actions != 1 {
            errors.push(ConfigError::new(
                at,
                format!(
                    "needs exactly one of `destinations`, `forward` or `reply` (found {actions})"
                ),
            ));
        }
        for (j, m) in self.matches.methods.iter().enumerate() {
            if !is_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                errors.push(ConfigError::new(
                    format!("{at}.match.methods[{j}]"),
                    format!("{m:?} is not an upper-case SIP method"),
                ));
            }
        }
        if let Some(domain) = &self.matches.domain {
            if domain.is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.match.domain"),
                    "must not be empty",
                ));
            }
        }
        for (j, d) in self.destinations.iter().enumerate() {
            if !is_host_port(&d.host) || d.host.contains(':') && d.host.parse::<IpAddr>().is_err() {
                errors.push(ConfigError::new(
                    format!("{at}.destinations[{j}].host"),
                    format!("{:?} is not a host name or IP address", d.host),
                ));
            }
            if d.port == 0 {
                errors.push(ConfigError::new(
                    format!("{at}.destinations[{j}].port"),
                    "must not be 0",
                ));
            }
        }
        if let Some(reply) = &self.reply {
            if !(300..=699).contains(&reply.status) {
                errors.push(ConfigError::new(
                    format!("{at}.reply.status"),
                    format!("{} is not a final SIP status (300-699)", reply.status),
                ));
            }
            if let Some(reason) = &reply.reason {
                if reason.is_empty() || reason.bytes().any(|b| b == b'\r' || b == b'\n') {
                    errors.push(ConfigError::new(
                        format!("{at}.reply.reason"),
                        "must be one non-empty line",
                    ));
                }
            }
        }
        for (j, on) in self.failover.on.iter().enumerate() {
            let ok = on == "timeout"
                || on.parse::<u16>().is_ok_and(|c| (300..=699).contains(&c))
                || (on.len() == 3
                    && on.ends_with("xx")
                    && matches!(on.as_bytes().first(), Some(b'3'..=b'6')));
            if !ok {
                errors.push(ConfigError::new(
                    format!("{at}.failover.on[{j}]"),
                    format!("{on:?} is not a status (\"503\"), a class (\"5xx\") or \"timeout\""),
                ));
            }
        }
        if self.failover.timeout_ms == 0 {
            errors.push(ConfigError::new(
                format!("{at}.failover.timeout_ms"),
                "must be greater than 0",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    /// One bad value in each section: each is reported under its key, once, section by
    /// section (`ProxyConfig::validate` runs one check per section).
    #[test]
    fn each_section_reports_its_own_errors() {
        let err = parse(
            "[[proxy.listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\nadvertise = \"a b\"\n\
             [proxy.timers]\nt1_ms = 0\n\
             [proxy.tcp]\nmax_connections = 0\n\
             [proxy.flood]\ndrop_user_agents = [\"\"]\n\
             [proxy.dialog]\nmax_age_s = 0\n\
             [proxy.relay_health]\nup_after = 0\n\
             [proxy.reanchor]\nper_second = 0\nfallback_set = \"nope\"\n\
             [proxy.overload]\nretry_after_s = 4000000000\n\
             [[proxy.relay_set]]\nname = \"m\"\nnodes = []\n\
             [proxy.media]\nset = \"other\"\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "proxy.listen[0].advertise",
                "proxy.timers.t1_ms",
                "proxy.tcp.max_connections",
                "proxy.flood.drop_user_agents[0]",
                "proxy.dialog.max_age_s",
                "proxy.relay_health.up_after",
                "proxy.reanchor.per_second",
                "proxy.reanchor.fallback_set",
                "proxy.overload.retry_after_s",
                "proxy.relay_set[0].nodes",
                "proxy.media.set",
            ]
        );
    }

    #[test]
    fn default_listens_on_udp_and_tcp_loopback_5060() {
        let c = parse("").unwrap();
        assert_eq!(c.proxy.listen.len(), 2);
        assert_eq!(c.proxy.listen[0].address.to_string(), "127.0.0.1:5060");
        assert_eq!(c.proxy.timers.t1_ms, 500);
    }

    #[test]
    fn full_rule_parses() {
        let c = parse(
            r#"
[[proxy.listen]]
transport = "udp"
address = "[::1]:5070"
advertise = "sip.example.com:5060"

[[proxy.route]]
name = "pstn"
match = { methods = ["INVITE"], user_prefix = "+1", source = ["192.0.2.0/24"] }
destinations = [
  { host = "192.0.2.10", priority = 1 },
  { host = "gw2.example.com", port = 5080, transport = "tcp", priority = 2, weight = 3 },
]
failover = { on = ["503", "timeout"], timeout_ms = 2000 }

[[proxy.route]]
name = "others"
forward = "request-uri"
"#,
        )
        .unwrap();
        let r = &c.proxy.route[0];
        assert_eq!(r.destinations[1].port, 5080);
        assert_eq!(r.destinations[1].weight, 3);
        assert_eq!(r.failover.timeout_ms, 2000);
        assert_eq!(r.matches.source[0].to_string(), "192.0.2.0/24");
        assert_eq!(
            c.proxy.route[1].forward,
            Some(crate::proxy::ForwardTarget::RequestUri)
        );
    }

    #[test]
    fn flood_limit_parses_and_its_errors_name_the_key() {
        let c = parse(
            "[proxy.flood]\nrequests_per_second = 20\nburst = 50\nblock_s = 30\ntrusted = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        assert_eq!(c.proxy.flood.requests_per_second, 20);
        assert_eq!(c.proxy.flood.burst, 50);
        assert_eq!(c.proxy.flood.trusted[0].to_string(), "10.0.0.0/8");
        assert_eq!(parse("").unwrap().proxy.flood.requests_per_second, 0);
        let err = parse(
            "[proxy.flood]\nrequests_per_second = 20\nburst = 5\nblock_s = 0\nmax_sources = 0\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "proxy.flood.block_s",
                "proxy.flood.burst",
                "proxy.flood.max_sources"
            ]
        );
        let err = parse("[proxy.flood]\ndrop_user_agents = [\"sipvicious\", \" \"]\n").unwrap_err();
        assert_eq!(err.0[0].path, "proxy.flood.drop_user_agents[1]");
        let err = parse("[proxy.flood]\ntrusted = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.to_string().contains("proxy.flood.trusted"), "{err}");
    }

    #[test]
    fn every_semantic_error_is_reported_with_its_path() {
        let err = parse(
            r#"
[proxy.timers]
t1_ms = 600
t2_ms = 500
timer_c_ms = 1000

[[proxy.route]]
name = "a"
reply = { status = 99, reason = "x\ny" }
forward = "request-uri"
match = { methods = ["invite"] }
failover = { on = ["7xx"] }

[[proxy.route]]
name = "a"
destinations = [{ host = "bad host" }]
"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "proxy.timers.t2_ms",
                "proxy.timers.timer_c_ms",
                "proxy.route[0]",
                "proxy.route[0].match.methods[0]",
                "proxy.route[0].reply.status",
                "proxy.route[0].reply.reason",
                "proxy.route[0].failover.on[0]",
                "proxy.route[1].destinations[0].host",
                "proxy.route[1].name",
            ]
        );
    }

    #[test]
    fn per_leg_media_options_are_checked() {
        let c = parse(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
             [proxy.media]\nset = \"main\"\ncallee = { type = \"RTP/SAVP\", ip = \"203.0.113.5\", iface = \"pub\" }\n",
        )
        .unwrap();
        assert_eq!(c.proxy.media.callee.transport.as_deref(), Some("RTP/SAVP"));
        let errors = parse(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
             [proxy.media]\nset = \"main\"\ncaller = { type = \"RTP/XYZ\", iface = \"a b\" }\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            keys,
            vec!["proxy.media.caller.type", "proxy.media.caller.iface"]
        );
    }

    #[test]
    fn media_policies_name_existing_relay_sets() {
        let c = parse(
            r#"
[[proxy.relay_set]]
name = "main"
nodes = [{ name = "a", ng = "127.0.0.1:2223" }, { name = "b", ng = "127.0.0.1:2224", weight = 2 }]

[proxy.media]
set = "main"
callee_flags = "replace-origin ICE=remove"
"#,
        )
        .unwrap();
        assert_eq!(c.proxy.relay_set[0].nodes[1].weight, 2);
        assert_eq!(c.proxy.media.set.as_deref(), Some("main"));
        let err = parse(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = []\n\n[proxy.media]\nset = \"other\"\n\n[[proxy.route]]\nname = \"r\"\nforward = \"request-uri\"\nmedia = { set = \"nope\" }\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "proxy.relay_set[0].nodes",
                "proxy.media.set",
                "proxy.route[0].media.set"
            ]
        );
    }

    #[test]
    fn tcp_per_source_limit_and_message_deadline() {
        let c = parse("").unwrap();
        assert_eq!(c.proxy.tcp.max_connections_per_source, 64);
        assert_eq!(c.proxy.tcp.message_timeout_s, 10);
        let err = parse("[proxy.tcp]\nmax_connections_per_source = 0\nmessage_timeout_s = 0\n")
            .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "proxy.tcp.max_connections_per_source",
                "proxy.tcp.message_timeout_s"
            ]
        );
    }

    #[test]
    fn bad_enum_value_names_the_key() {
        let err = parse("[[proxy.listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:5060\"\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("proxy.listen[0].transport: "), "{text}");
        assert!(text.contains("sctp"), "{text}");
    }
}
