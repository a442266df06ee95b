//! `[relay]`: the media node — its ng control socket, media interfaces, port ranges and timeouts.
//! Keys are named after rtpengine's options so operators recognise them.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::ConfigError;

/// `[relay]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// ng control socket (rtpengine's `listen-ng`).
    pub listen_ng: SocketAddr,
    /// Networks (CIDR) whose hosts may send ng commands; commands from anywhere else are
    /// dropped unanswered. Empty: every source, which is allowed only while `listen_ng` is a
    /// loopback address — on any other the relay refuses to start without a list.
    pub control_allow: Vec<IpNet>,
    /// RTPProxy control socket, `"udp:IP:PORT"` (RTPProxy's `-s`): the relay also answers
    /// the commands of Kamailio's and OpenSIPS' `rtpproxy` modules there. None = off.
    /// `control_allow` applies to it as to the ng socket.
    #[serde(deserialize_with = "deserialize_rtpp_listen")]
    pub listen_rtpp: Option<SocketAddr>,
    /// `[[relay.interface]]`: media interfaces. Default: one named `default` on 127.0.0.1.
    pub interface: Vec<Interface>,
    /// Media worker threads; 0 = one per CPU core (rtpengine's `num-threads`).
    pub num_threads: usize,
    /// A session whose media stopped for this long ends, seconds (rtpengine's `timeout`).
    pub timeout_s: u64,
    /// A session offered but never answered ends after this long, seconds (`offer-timeout`).
    pub offer_timeout_s: u64,
    /// Ports of a deleted session are kept this long before reuse, seconds (`delete-delay`).
    pub delete_delay_s: u64,
    /// Most simultaneous sessions; 0 = no limit. Past it an offer gets
    /// "Parallel session limit reached" (rtpengine's `max-sessions`).
    pub max_sessions: u64,
    /// HTTP address for `/metrics`; none = no metrics server.
    pub metrics_listen: Option<SocketAddr>,
    /// IP TOS / traffic class byte of the media packets sent (rtpengine's `tos`), e.g. 184 for
    /// DSCP EF; none = the system default. A request's `TOS` key overrides it per call.
    pub tos: Option<u8>,
    /// Terminate DTLS-SRTP (RFC 5763/5764) on legs converted to or from plain RTP or SDES,
    /// with the relay's own certificate; false: DTLS-SRTP is only passed through untouched.
    pub dtls: bool,
    /// PEM file holding the relay's DTLS certificate followed by its PKCS#8 private key; none =
    /// a self-signed ECDSA P-256 certificate generated at every start.
    pub dtls_certificate: Option<std::path::PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen_ng: SocketAddr::from(([127, 0, 0, 1], 2223)),
            control_allow: Vec::new(),
            listen_rtpp: None,
            interface: vec![Interface::default()],
            num_threads: 0,
            timeout_s: 60,
            offer_timeout_s: 3600,
            delete_delay_s: 30,
            max_sessions: 0,
            metrics_listen: None,
            tos: None,
            dtls: true,
            dtls_certificate: None,
        }
    }
}

/// Reads an RTPProxy control socket as RTPProxy's `-s` and the modules' `rtpproxy_sock`
/// write it: `udp:IP:PORT` (also `udp6:[IPv6]:PORT`, or a bare `IP:PORT`).
pub fn parse_rtpp_listen(text: &str) -> Result<SocketAddr, String> {
    let address = text
        .strip_prefix("udp6:")
        .or_else(|| text.strip_prefix("udp:"))
        .unwrap_or(text);
    if text.starts_with("unix:") {
        return Err(format!(
            "{text:?}: only UDP control sockets are supported (udp:IP:PORT)"
        ));
    }
    address
        .parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not udp:IP:PORT"))
}

fn deserialize_rtpp_listen<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|t| parse_rtpp_listen(&t).map_err(serde::de::Error::custom))
        .transpose()
}

/// One media interface: where media sockets bind, what address the SDP advertises, which ports.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Interface {
    /// Name used by the ng `interface`/`direction` keys.
    pub name: String,
    /// Local address media sockets bind to.
    pub address: IpAddr,
    /// Address written into SDP instead of `address` (public IP behind 1:1 NAT).
    pub advertise: Option<IpAddr>,
    /// Lowest media port (inclusive).
    pub port_min: u16,
    /// Highest media port (inclusive).
    pub port_max: u16,
}

impl Default for Interface {
    fn default() -> Self {
        Self {
            name: "default".into(),
            address: IpAddr::from([127, 0, 0, 1]),
            advertise: None,
            port_min: 30000,
            port_max: 40000,
        }
    }
}

impl RelayConfig {
    /// Checks what the types cannot, appending errors under `at`.
    pub fn validate(&self, at: &str, errors: &mut Vec<ConfigError>) {
        if self.interface.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.interface"),
                "at least one interface is needed",
            ));
        }
        for (i, iface) in self.interface.iter().enumerate() {
            let here = format!("{at}.interface[{i}]");
            if iface.name.is_empty() || iface.name.contains(['/', '!', ' ']) {
                errors.push(ConfigError::new(
                    format!("{here}.name"),
                    format!(
                        "{:?} must be non-empty without '/', '!' or spaces",
                        iface.name
                    ),
                ));
            }
            if iface.port_min == 0 {
                errors.push(ConfigError::new(
                    format!("{here}.port_min"),
                    "must not be 0",
                ));
            }
            // RTP on an even port and RTCP on the next odd one need at least one pair.
            let first_even = iface.port_min + iface.port_min % 2;
            if iface.port_max < iface.port_min || first_even >= iface.port_max {
                errors.push(ConfigError::new(
                    format!("{here}.port_max"),
                    format!(
                        "{}..={} holds no even/odd port pair",
                        iface.port_min, iface.port_max
                    ),
                ));
            }
            if let Some(adv) = iface.advertise {
                if adv.is_unspecified() {
                    errors.push(ConfigError::new(
                        format!("{here}.advertise"),
                        format!("{adv} cannot be advertised to phones"),
                    ));
                }
            }
            for (j, other) in self.interface[..i].iter().enumerate() {
                if other.name == iface.name {
                    errors.push(ConfigError::new(
                        format!("{here}.name"),
                        format!("{:?} is also the name of interface[{j}]", iface.name),
                    ));
                }
                let overlap = iface.port_min <= other.port_max && other.port_min <= iface.port_max;
                if other.address == iface.address && overlap {
                    errors.push(ConfigError::new(
                        here.clone(),
                        format!(
                            "ports {}..={} on {} overlap interface[{j}]",
                            iface.port_min, iface.port_max, iface.address
                        ),
                    ));
                }
            }
        }
        if self.timeout_s == 0 {
            errors.push(ConfigError::new(
                format!("{at}.timeout_s"),
                "must be greater than 0",
            ));
        }
        if self.offer_timeout_s == 0 {
            errors.push(ConfigError::new(
                format!("{at}.offer_timeout_s"),
                "must be greater than 0",
            ));
        }
        match &self.dtls_certificate {
            Some(path) if path.as_os_str().is_empty() => {
                errors.push(ConfigError::new(
                    format!("{at}.dtls_certificate"),
                    "must be a file name (or be left out to generate a certificate)",
                ));
            }
            Some(_) if !self.dtls => {
                errors.push(ConfigError::new(
                    format!("{at}.dtls_certificate"),
                    "has no effect with dtls = false",
                ));
            }
            _ => {}
        }
        for (key, value) in [
            ("timeout_s", self.timeout_s),
            ("offer_timeout_s", self.offer_timeout_s),
            ("delete_delay_s", self.delete_delay_s),
        ] {
            if value > MAX_SECONDS {
                errors.push(ConfigError::new(
                    format!("{at}.{key}"),
                    format!("{value} is more than a year ({MAX_SECONDS} s)"),
                ));
            }
        }
    }
}

impl RelayConfig {
    /// What this section leaves open to strangers, appended under `at`: a control socket off
    /// loopback with no allow-list (the relay will refuse to start unless `--control-allow`
    /// gives one), and media interfaces off loopback, where endpoint learning — on for every
    /// call that does not ask for `strict-source` or `endpoint-learning=off` — lets whoever
    /// sends first to a relay port take that party's media.
    pub fn warnings(&self, at: &str, out: &mut Vec<ConfigError>) {
        if self.control_allow.is_empty() && !crate::is_loopback(self.listen_ng.ip()) {
            out.push(ConfigError::new(
                format!("{at}.control_allow"),
                format!(
                    "listen_ng {} is not loopback and no controller network is listed: \
                     `anchorage relay` refuses to start unless --control-allow gives one",
                    self.listen_ng
                ),
            ));
        }
        if let Some(rtpp) = self.listen_rtpp {
            if self.control_allow.is_empty() && !crate::is_loopback(rtpp.ip()) {
                out.push(ConfigError::new(
                    format!("{at}.control_allow"),
                    format!(
                        "listen_rtpp {rtpp} is not loopback and no controller network is listed: \
                         `anchorage relay` refuses to start unless --control-allow gives one"
                    ),
                ));
            }
        }
        for (i, iface) in self.interface.iter().enumerate() {
            if !crate::is_loopback(iface.address) {
                out.push(ConfigError::new(
                    format!("{at}.interface[{i}].address"),
                    format!(
                        "{} is not loopback and endpoint learning is on (the default of every call \
                         whose flags do not set `endpoint-learning=off` with `strict-source`): \
                         a stranger who sends first to a relay port can be learned as the \
                         party, receive its media and inject their own (docs/relay.md, \
                         \"Who can take a call's media\")",
                        iface.address
                    ),
                ));
            }
        }
    }
}

/// The longest time any relay setting may name: a year.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

#[cfg(test)]
mod tests {
    use crate::parse;

    #[test]
    fn defaults_match_rtpengine() {
        let c = parse("").unwrap();
        assert_eq!(c.relay.listen_ng.to_string(), "127.0.0.1:2223");
        assert_eq!(c.relay.timeout_s, 60);
        assert_eq!(c.relay.delete_delay_s, 30);
        assert_eq!(c.relay.interface[0].port_min, 30000);
        assert_eq!(c.relay.interface[0].port_max, 40000);
    }

    #[test]
    fn interfaces_are_checked() {
        let err = parse(
            r#"
[[relay.interface]]
name = "pub"
address = "192.0.2.1"
advertise = "0.0.0.0"
port_min = 20001
port_max = 20002

[[relay.interface]]
name = "pub"
address = "192.0.2.1"
port_min = 20000
port_max = 30000
"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "relay.interface[0].port_max",
                "relay.interface[0].advertise",
                "relay.interface[1].name",
                "relay.interface[1]",
            ]
        );
    }

    #[test]
    fn exposed_control_and_media_are_warned_about() {
        let c = parse("").unwrap();
        assert!(crate::warnings(&c).is_empty(), "loopback defaults warn");
        let c = parse(
            "[relay]\nlisten_ng = \"10.0.0.5:2223\"\n[[relay.interface]]\naddress = \"203.0.113.7\"\n",
        )
        .unwrap();
        let paths: Vec<String> = crate::warnings(&c).into_iter().map(|w| w.path).collect();
        assert_eq!(paths, ["relay.control_allow", "relay.interface[0].address"]);
        let c =
            parse("[relay]\nlisten_ng = \"10.0.0.5:2223\"\ncontrol_allow = [\"10.0.0.0/24\"]\n")
                .unwrap();
        assert_eq!(c.relay.control_allow[0].to_string(), "10.0.0.0/24");
        assert!(crate::warnings(&c).is_empty());
        let err = parse("[relay]\ncontrol_allow = [\"10.0.0.1\"]\n").unwrap_err();
        assert!(err.to_string().starts_with("relay.control_allow"), "{err}");
    }

    #[test]
    fn a_bad_address_names_its_key() {
        let err = parse("[[relay.interface]]\naddress = \"not-an-ip\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("relay.interface[0].address: "),
            "{err}"
        );
    }

    #[test]
    fn rtpproxy_control_socket() {
        let c = parse("").unwrap();
        assert_eq!(c.relay.listen_rtpp, None);
        let c = parse("[relay]\nlisten_rtpp = \"udp:127.0.0.1:22222\"\n").unwrap();
        assert_eq!(
            c.relay.listen_rtpp,
            Some("127.0.0.1:22222".parse().unwrap())
        );
        assert!(crate::warnings(&c).is_empty());
        let c = parse("[relay]\nlisten_rtpp = \"udp6:[::1]:22222\"\n").unwrap();
        assert_eq!(c.relay.listen_rtpp, Some("[::1]:22222".parse().unwrap()));
        let c = parse("[relay]\nlisten_rtpp = \"udp:10.0.0.5:22222\"\n").unwrap();
        let paths: Vec<String> = crate::warnings(&c).into_iter().map(|w| w.path).collect();
        assert_eq!(paths, ["relay.control_allow"]);
        for bad in ["unix:/run/rtpp.sock", "udp:nowhere:1", "udp:127.0.0.1"] {
            let err = parse(&format!("[relay]\nlisten_rtpp = \"{bad}\"\n")).unwrap_err();
            assert!(err.to_string().starts_with("relay.listen_rtpp"), "{err}");
        }
    }
}
