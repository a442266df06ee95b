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

/// A named set of relay nodes: ng nodes (our relay or rtpengine) and RTPProxy nodes, mixed as
/// the operator likes (each node has its own engine; a call stays on one node's engine).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySet {
    /// Name used by media policies.
    pub name: String,
    /// The nodes; a new call goes to the least loaded (calls / weight).
    pub nodes: Vec<RelayNode>,
}

/// One relay node: exactly one of `ng` and `rtpproxy` names its control socket and engine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayNode {
    /// Name in logs, metrics and the API.
    pub name: String,
    /// Its ng control address (our relay or rtpengine).
    #[serde(default)]
    pub ng: Option<SocketAddr>,
    /// Its RTPProxy control socket, `udp:IP:PORT` (RTPProxy's `-s` syntax; `udp6:` too).
    #[serde(default)]
    pub rtpproxy: Option<String>,
    /// Share of new calls relative to the other nodes of the set.
    #[serde(default = "one")]
    pub weight: u32,
}

/// The engine and control address of a relay node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEngine {
    /// rtpengine's ng protocol (bencode over UDP).
    Ng(SocketAddr),
    /// RTPProxy's control protocol (text over UDP).
    Rtpproxy(SocketAddr),
}

impl RelayEngine {
    /// The control address.
    pub fn address(self) -> SocketAddr {
        match self {
            RelayEngine::Ng(a) | RelayEngine::Rtpproxy(a) => a,
        }
    }

    /// `"ng"` or `"rtpproxy"`.
    pub fn name(self) -> &'static str {
        match self {
            RelayEngine::Ng(_) => "ng",
            RelayEngine::Rtpproxy(_) => "rtpproxy",
        }
    }
}

impl RelayNode {
    /// Its engine and control address; `None` when the node names neither or both, or its
    /// `rtpproxy` socket does not parse (validation reports these).
    pub fn engine(&self) -> Option<RelayEngine> {
        match (&self.ng, &self.rtpproxy) {
            (Some(ng), None) => Some(RelayEngine::Ng(*ng)),
            (None, Some(socket)) => rtpproxy_socket(socket).ok().map(RelayEngine::Rtpproxy),
            _ => None,
        }
    }
}

/// Reads an RTPProxy control socket: `udp:IP:PORT` or `udp6:[IP]:PORT` (RTPProxy's `-s`
/// syntax; a bare `IP:PORT` is taken as UDP). Unix sockets are not supported by the proxy.
pub fn rtpproxy_socket(text: &str) -> Result<SocketAddr, String> {
    let rest = text
        .strip_prefix("udp:")
        .or_else(|| text.strip_prefix("udp6:"))
        .unwrap_or(text);
    if text.starts_with("unix:") || text.starts_with('/') {
        return Err(format!(
            "{text:?}: unix sockets are not supported, give udp:IP:PORT"
        ));
    }
    match rest.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        _ => Err(format!("{text:?} is not udp:IP:PORT")),
    }
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
    pub caller: LegMediaOptions,
    /// `callee = { type, ip, iface }`: the same for the callee's leg.
    pub callee: LegMediaOptions,
}

/// Per-leg media options of a policy (OpenSIPS' `$rtp_relay` keys): each becomes an ng option
/// for the SDP that leg is given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegMediaOptions {
    /// Media profile: `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVP` or
    /// `UDP/TLS/RTP/SAVPF` (the relay converts when it can).
    #[serde(rename = "type")]
    pub transport: Option<String>,
    /// Address the relay advertises to this leg (ng `media-address`).
    pub ip: Option<IpAddr>,
    /// Relay interface facing this leg, by name (ng `direction`).
    pub iface: Option<String>,
    /// OpenSIPS' `rtpproxy_offer`/`$rtp_relay` flag letters for this leg's SDP when the call is
    /// on an RTPProxy node (e.g. `"co"`, `"z20"`, `"l192.0.2.1"`); ng nodes ignore them.
    pub rtpproxy_flags: String,
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

#[cfg(test)]
mod tests;
mod validate;
