//! Routing of initial requests: the ordered rules of `[[proxy.route]]`.
//!
//! The first rule whose match holds decides: forward to a destination set (ordered by
//! priority, then spread by weight), forward to the Request-URI, or answer with a fixed
//! response. With no rule matching — or no rules at all — the request goes to its Request-URI.
//!
//! Only IP literals are resolved here; a host name is returned as such for the caller to
//! resolve (RFC 3263) — the core stays free of I/O.

use std::net::{IpAddr, SocketAddr};

use anchorage_config::proxy::{Destination, ForwardTarget, RouteRule};
use anchorage_sip::{Host, Uri};

use crate::Transport;

/// An address a party behind NAT writes in its Contact: RFC 1918, RFC 6598 (CGNAT), link-local,
/// and IPv6 unique-local or link-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            a.is_private() || a.is_link_local() || (first == 100 && (64..128).contains(&second))
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The next hop of a request: an address (or a name still to resolve) and a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host as configured or found in the URI.
    pub host: TargetHost,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: Transport,
    /// The port was not given for a host name: RFC 3263 §4.2 looks up SRV records first.
    pub srv: bool,
}

/// A target host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// An IP literal: ready to send.
    Ip(IpAddr),
    /// A domain name that needs RFC 3263 resolution.
    Name(String),
}

impl Target {
    /// The socket address, if the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            TargetHost::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            TargetHost::Name(_) => None,
        }
    }

    /// The target of a SIP URI (RFC 3263 §4 without DNS: `maddr`, then host; the port or the
    /// transport's default; the `transport` parameter, UDP otherwise).
    pub fn from_uri(uri: &Uri<'_>) -> Option<Target> {
        let sip = uri.as_sip()?;
        let transport = match sip.transport() {
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
            Some(_) => return None,
            None => Transport::Udp,
        };
        let host = match sip.maddr() {
            Some(maddr) => host_from_text(std::str::from_utf8(maddr).ok()?),
            None => match sip.host {
                Host::Ipv4(a) => TargetHost::Ip(IpAddr::V4(a)),
                Host::Ipv6(a) => TargetHost::Ip(IpAddr::V6(a)),
                Host::Domain(d) => host_from_text(d),
            },
        };
        let srv = sip.port.is_none() && matches!(host, TargetHost::Name(_));
        Some(Target {
            host,
            port: sip.port.unwrap_or(5060),
            transport,
            srv,
        })
    }

    fn from_destination(d: &Destination) -> Target {
        Target {
            host: host_from_text(&d.host),
            port: d.port,
            transport: match d.transport {
                anchorage_config::proxy::Transport::Udp => Transport::Udp,
                anchorage_config::proxy::Transport::Tcp => Transport::Tcp,
            },
            // A configured destination always has a port (5060 by default): A/AAAA only.
            srv: false,
        }
    }
}

fn host_from_text(text: &str) -> TargetHost {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => TargetHost::Ip(ip),
        Err(_) => TargetHost::Name(text.to_ascii_lowercase()),
    }
}

/// What the rules decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try these targets one after the other (serial failover), first first.
    Destinations {
        /// Name of the rule.
        rule: String,
        /// Ordered targets.
        targets: Vec<Target>,
        /// Failover policy of the rule.
        failover: FailoverPolicy,
    },
    /// Forward to the Request-URI.
    RequestUri,
    /// Answer with this final response.
    Reply {
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// How a destination set is tried: all at once, or one after the other and when to move on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPolicy {
    /// Fork to every destination at once instead of trying them in turn.
    pub parallel: bool,
    /// Codes that move on.
    pub codes: Vec<u16>,
    /// Classes (`5` for 5xx) that move on.
    pub classes: Vec<u16>,
    /// Whether no response at all within `timeout` moves on.
    pub on_timeout: bool,
    /// How long to wait for any response from one destination.
    pub timeout: std::time::Duration,
}

impl FailoverPolicy {
    /// Whether a final response with `status` moves on to the next destination.
    pub fn retries(&self, status: u16) -> bool {
        self.codes.contains(&status) || self.classes.contains(&(status / 100))
    }

    fn from_config(
        f: &anchorage_config::proxy::Failover,
        fork: anchorage_config::proxy::Fork,
    ) -> FailoverPolicy {
        let mut policy = FailoverPolicy {
            parallel: fork == anchorage_config::proxy::Fork::Parallel,
            codes: Vec::new(),
            classes: Vec::new(),
            on_timeout: false,
            timeout: std::time::Duration::from_millis(f.timeout_ms),
        };
        for on in &f.on {
            if on == "timeout" {
                policy.on_timeout = true;
            } else if let Some(class) = on.strip_suffix("xx") {
                if let Ok(c) = class.parse() {
                    policy.classes.push(c);
                }
            } else if let Ok(code) = on.parse() {
                policy.codes.push(code);
            }
        }
        policy
    }
}

/// The facts of a request that rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Method (for a CANCEL or ACK: the method of the INVITE it belongs to).
    pub method: &'a str,
    /// Request-URI user part, unescaped or raw.
    pub user: Option<&'a [u8]>,
    /// Request-URI host as text.
    pub domain: Option<&'a str>,
    /// Source address of the packet.
    pub source: IpAddr,
}

/// The compiled routing rules.
#[derive(Debug, Clone, Default)]
pub struct Router {
    rules: Vec<RouteRule>,
}

impl Router {
    /// Rules as configured (already validated by `anchorage-config`).
    pub fn new(rules: Vec<RouteRule>) -> Router {
        Router { rules }
    }

    /// The media policy of the first rule that matches: `Some(None)` when that rule sets none,
    /// `None` when no rule matches.
    pub fn media_for(
        &self,
        facts: &RequestFacts<'_>,
    ) -> Option<Option<anchorage_config::proxy::MediaPolicy>> {
        self.rules
            .iter()
            .find(|r| matches(r, facts))
            .map(|r| r.media.clone())
    }

    /// Decides for a request. `pick` receives the total weight of a priority group and must
    /// return a number below it (the caller's seeded RNG), so weighted choice stays
    /// deterministic in tests.
    pub fn decide(&self, facts: &RequestFacts<'_>, mut pick: impl FnMut(u32) -> u32) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| matches(r, facts)) else {
            return Decision::RequestUri;
        };
        if let Some(reply) = &rule.reply {
            return Decision::Reply {
                status: reply.status,
                reason: reply
                    .reason
                    .clone()
                    .unwrap_or_else(|| default_reason(reply.status).to_string()),
            };
        }
        if rule.forward == Some(ForwardTarget::RequestUri) || rule.destinations.is_empty() {
            return Decision::RequestUri;
        }
        Decision::Destinations {
            rule: rule.name.clone(),
            targets: order_destinations(&rule.destinations, &mut pick),
            failover: FailoverPolicy::from_config(&rule.failover, rule.fork),
        }
    }
}

fn matches(rule: &RouteRule, facts: &RequestFacts<'_>) -> bool {
    let m = &rule.matches;
    if !m.methods.is_empty() && !m.methods.iter().any(|x| x == facts.method) {
        return false;
    }
    if let Some(prefix) = &m.user_prefix {
        if !facts.user.is_some_and(|u| u.starts_with(prefix.as_bytes())) {
            return false;
        }
    }
    if let Some(domain) = &m.domain {
        if !facts.domain.is_some_and(|d| d.eq_ignore_ascii_case(domain)) {
            return false;
        }
    }
    if !m.source.is_empty() && !m.source.iter().any(|net| net.contains(&facts.source)) {
        return false;
    }
    true
}

/// Orders a destination set: ascending priority; within a priority, a weighted random order
/// (each pick proportional to the weights left).
fn order_destinations(set: &[Destination], pick: &mut impl FnMut(u32) -> u32) -> Vec<Target> {
    let mut priorities: Vec<u32> = set.iter().map(|d| d.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut ordered = Vec::with_capacity(set.len());
    for priority in priorities {
        let mut group: Vec<&Destination> = set.iter().filter(|d| d.priority == priority).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|d| d.weight).sum();
            let index = if total == 0 {
                0
            } else {
                let mut n = pick(total) % total;
                group
                    .iter()
                    .position(|d| {
                        if n < d.weight {
                            true
                        } else {
                            n -= d.weight;
                            false
                        }
                    })
                    .unwrap_or(0)
            };
            ordered.push(Target::from_destination(group.remove(index)));
        }
    }
    ordered
}

/// The RFC 3261 §21 reason phrase for a status code.
pub fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => match status / 100 {
            1 => "Progress",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml: &str) -> Router {
        Router::new(anchorage_config::parse(toml).unwrap().proxy.route)
    }

    fn facts<'a>(method: &'a str, user: &'a [u8], source: &str) -> RequestFacts<'a> {
        RequestFacts {
            method,
            user: Some(user),
            domain: Some("example.com"),
            source: source.parse().unwrap(),
        }
    }

    const RULES: &str = r#"
[[proxy.route]]
name = "block"
match = { methods = ["MESSAGE"] }
reply = { status = 403 }

[[proxy.route]]
name = "pstn"
match = { methods = ["INVITE"], user_prefix = "+1", source = ["192.0.2.0/24"] }
destinations = [
  { host = "192.0.2.20", priority = 2 },
  { host = "192.0.2.10", priority = 1, weight = 1 },
  { host = "192.0.2.11", priority = 1, weight = 3 },
]
failover = { on = ["503", "6xx", "timeout"], timeout_ms = 1500 }
"#;

    #[test]
    fn first_matching_rule_decides_and_orders_by_priority_then_weight() {
        let r = router(RULES);
        // pick(4) = 0 selects the first of the priority-1 group (weight 1 covers 0).
        let d = r.decide(&facts("INVITE", b"+15551234", "192.0.2.7"), |_| 0);
        let Decision::Destinations {
            rule,
            targets,
            failover,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(rule, "pstn");
        let hosts: Vec<String> = targets
            .iter()
            .map(|t| t.socket_addr().unwrap().ip().to_string())
            .collect();
        assert_eq!(hosts, ["192.0.2.10", "192.0.2.11", "192.0.2.20"]);
        // pick = 1 falls in the weight-3 destination's share.
        let Decision::Destinations { targets, .. } =
            r.decide(&facts("INVITE", b"+15551234", "192.0.2.7"), |_| 1)
        else {
            panic!()
        };
        assert_eq!(
            targets[0].socket_addr().unwrap().to_string(),
            "192.0.2.11:5060"
        );
        assert!(failover.retries(503));
        assert!(failover.retries(603));
        assert!(!failover.retries(486));
        assert!(failover.on_timeout);
        assert_eq!(failover.timeout, std::time::Duration::from_millis(1500));
    }

    #[test]
    fn non_matching_requests_go_to_the_request_uri() {
        let r = router(RULES);
        assert_eq!(
            r.decide(&facts("INVITE", b"+15551234", "198.51.100.1"), |_| 0),
            Decision::RequestUri
        );
        assert_eq!(
            r.decide(&facts("INVITE", b"+4930", "192.0.2.7"), |_| 0),
            Decision::RequestUri
        );
        assert_eq!(
            Router::default().decide(&facts("INVITE", b"x", "192.0.2.7"), |_| 0),
            Decision::RequestUri
        );
    }

    #[test]
    fn reply_rule_uses_the_rfc_reason_by_default() {
        let r = router(RULES);
        assert_eq!(
            r.decide(&facts("MESSAGE", b"a", "192.0.2.7"), |_| 0),
            Decision::Reply {
                status: 403,
                reason: "Forbidden".into()
            }
        );
    }

    #[test]
    fn target_of_a_uri() {
        let t = |s: &str| Target::from_uri(&Uri::parse(s.as_bytes()).unwrap());
        assert_eq!(
            t("sip:bob@192.0.2.1:5080;transport=tcp").unwrap(),
            Target {
                host: TargetHost::Ip("192.0.2.1".parse().unwrap()),
                port: 5080,
                transport: Transport::Tcp,
                srv: false,
            }
        );
        assert_eq!(
            t("sip:[2001:db8::1]")
                .unwrap()
                .socket_addr()
                .unwrap()
                .to_string(),
            "[2001:db8::1]:5060"
        );
        assert_eq!(
            t("sip:bob@Example.COM;maddr=192.0.2.9")
                .unwrap()
                .socket_addr()
                .unwrap()
                .to_string(),
            "192.0.2.9:5060"
        );
        assert_eq!(
            t("sip:bob@Example.COM").unwrap().host,
            TargetHost::Name("example.com".into())
        );
        assert!(t("sip:bob@example.com").unwrap().srv);
        assert!(!t("sip:bob@example.com:5080").unwrap().srv);
        assert!(t("sip:bob@example.com;transport=sctp").is_none());
        assert!(t("tel:+15551234").is_none());
    }
}
