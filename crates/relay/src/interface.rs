//! Named media interfaces: where the media sockets bind, which address the SDP advertises,
//! and which ports they use. Parses rtpengine's `--interface [NAME/]IP[!ADVERTISED]` syntax.

use std::fmt;
use std::net::IpAddr;

use crate::ports::PortRange;

/// The interface name rtpengine uses when a spec has none.
pub const DEFAULT_INTERFACE: &str = "default";

/// One media interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name used by ng's `interface`/`direction` keys.
    pub name: String,
    /// Address media sockets bind to.
    pub local: IpAddr,
    /// Address written into the SDP (a public address behind 1:1 NAT); `local` if not set.
    pub advertised: IpAddr,
    /// Ports of this interface.
    pub ports: PortRange,
}

/// An interface spec that cannot be used; the text names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InterfaceError {
    /// Nothing to parse.
    #[error("interface spec is empty")]
    Empty,
    /// `/IP` with nothing before the slash.
    #[error("interface name before '/' is empty in {0:?}")]
    EmptyName(String),
    /// The local address is not an IP address.
    #[error("interface local address {address:?} is not an IP address in {spec:?}")]
    BadLocal {
        /// The text that failed.
        address: String,
        /// The whole spec.
        spec: String,
    },
    /// The advertised address (after `!`) is not an IP address.
    #[error("interface advertised address {address:?} is not an IP address in {spec:?}")]
    BadAdvertised {
        /// The text that failed.
        address: String,
        /// The whole spec.
        spec: String,
    },
    /// Local and advertised addresses are of different families.
    #[error("interface {name:?}: advertised address {advertised} is not of the same family as local address {local}")]
    FamilyMismatch {
        /// Interface name.
        name: String,
        /// Local address.
        local: IpAddr,
        /// Advertised address.
        advertised: IpAddr,
    },
    /// A wildcard (0.0.0.0, ::) cannot be written into an SDP.
    #[error("interface {name:?}: address {address} is a wildcard and cannot be advertised; add !ADVERTISED")]
    UnspecifiedAdvertised {
        /// Interface name.
        name: String,
        /// The wildcard address.
        address: IpAddr,
    },
}

impl Interface {
    /// Parses `[NAME/]IP[!ADVERTISED]` (e.g. `pub/10.0.0.5!203.0.113.5`, `192.0.2.1`,
    /// `v6/2001:db8::1`) with the interface's port range.
    pub fn parse(spec: &str, ports: PortRange) -> Result<Self, InterfaceError> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(InterfaceError::Empty);
        }
        let (name, rest) = match spec.split_once('/') {
            Some(("", _)) => return Err(InterfaceError::EmptyName(spec.to_owned())),
            Some((name, rest)) => (name, rest),
            None => (DEFAULT_INTERFACE, spec),
        };
        let (local_text, advertised_text) = match rest.split_once('!') {
            Some((local, advertised)) => (local, Some(advertised)),
            None => (rest, None),
        };
        let local: IpAddr = parse_ip(local_text).ok_or_else(|| InterfaceError::BadLocal {
            address: local_text.to_owned(),
            spec: spec.to_owned(),
        })?;
        let advertised = match advertised_text {
            None => local,
            Some(text) => parse_ip(text).ok_or_else(|| InterfaceError::BadAdvertised {
                address: text.to_owned(),
                spec: spec.to_owned(),
            })?,
        };
        Self::new(name, local, advertised, ports)
    }

    /// An interface from plain values (as the config crate holds them), checked.
    pub fn new(
        name: &str,
        local: IpAddr,
        advertised: IpAddr,
        ports: PortRange,
    ) -> Result<Self, InterfaceError> {
        if local.is_ipv4() != advertised.is_ipv4() {
            return Err(InterfaceError::FamilyMismatch {
                name: name.to_owned(),
                local,
                advertised,
            });
        }
        if advertised.is_unspecified() {
            return Err(InterfaceError::UnspecifiedAdvertised {
                name: name.to_owned(),
                address: advertised,
            });
        }
        Ok(Self {
            name: name.to_owned(),
            local,
            advertised,
            ports,
        })
    }
}

/// An IP address, accepting IPv6 in brackets too (`[2001:db8::1]`).
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse().ok()
}

impl fmt::Display for Interface {
    /// The spec form: `NAME/LOCAL[!ADVERTISED]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.local)?;
        if self.advertised != self.local {
            write!(f, "!{}", self.advertised)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Interface, InterfaceError> {
        Interface::parse(spec, PortRange::DEFAULT)
    }

    #[test]
    fn parses_every_form() {
        let i = parse("192.0.2.1").unwrap();
        assert_eq!(
            (i.name.as_str(), i.local, i.advertised),
            (
                "default",
                "192.0.2.1".parse().unwrap(),
                "192.0.2.1".parse().unwrap()
            )
        );
        let i = parse("pub/10.0.0.5!203.0.113.5").unwrap();
        assert_eq!(i.name, "pub");
        assert_eq!(i.local, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(i.advertised, "203.0.113.5".parse::<IpAddr>().unwrap());
        assert_eq!(i.to_string(), "pub/10.0.0.5!203.0.113.5");
        let i = parse("v6/[2001:db8::1]").unwrap();
        assert_eq!(i.local, "2001:db8::1".parse::<IpAddr>().unwrap());
        let i = parse("0.0.0.0!198.51.100.7").unwrap();
        assert_eq!(i.advertised, "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(parse(" "), Err(InterfaceError::Empty));
        assert_eq!(
            parse("/192.0.2.1").unwrap_err().to_string(),
            "interface name before '/' is empty in \"/192.0.2.1\""
        );
        assert_eq!(
            parse("pub/192.0.2.x").unwrap_err().to_string(),
            "interface local address \"192.0.2.x\" is not an IP address in \"pub/192.0.2.x\""
        );
        assert_eq!(
            parse("pub/192.0.2.1!nat").unwrap_err().to_string(),
            "interface advertised address \"nat\" is not an IP address in \"pub/192.0.2.1!nat\""
        );
        assert!(matches!(
            parse("192.0.2.1!2001:db8::1"),
            Err(InterfaceError::FamilyMismatch { .. })
        ));
        assert!(matches!(
            parse("0.0.0.0"),
            Err(InterfaceError::UnspecifiedAdvertised { .. })
        ));
    }
}
