//! Typed views of the session- and media-level lines other than `a=` and `m=`:
//! `o=`, `c=`, `t=`, `b=` ([RFC 8866 §5](https://www.rfc-editor.org/rfc/rfc8866#section-5)).
//!
//! Views borrow from the session and are parsed when asked for; nothing is cached.

use std::net::IpAddr;

use crate::error::FieldError;
use crate::line::text;

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The user's login, or `-`.
    pub username: &'a str,
    /// A numeric string that stays the same for the whole session.
    pub session_id: &'a str,
    /// Increased by the sender whenever the SDP changes (RFC 3264 §8).
    pub session_version: u64,
    /// `IN`.
    pub network_type: &'a str,
    /// `IP4` or `IP6`.
    pub address_type: &'a str,
    /// The originator's address (or a host name).
    pub address: &'a str,
}

pub(crate) fn parse_origin(value: &[u8]) -> Result<Origin<'_>, FieldError> {
    const FIELD: &str = "o=";
    let value = text(FIELD, value)?;
    let mut tokens = value.split_ascii_whitespace();
    let mut next = |problem| {
        tokens
            .next()
            .ok_or_else(|| FieldError::malformed(FIELD, problem, value.as_bytes()))
    };
    let username = next("has no username")?;
    let session_id = next("has no session id")?;
    let version = next("has no session version")?;
    let network_type = next("has no network type")?;
    let address_type = next("has no address type")?;
    let address = next("has no address")?;
    let session_version = version.parse().map_err(|_| {
        FieldError::malformed("o= session version", "is not a number", version.as_bytes())
    })?;
    Ok(Origin {
        username,
        session_id,
        session_version,
        network_type,
        address_type,
        address,
    })
}

/// `c=<nettype> <addrtype> <connection-address>` (RFC 8866 §5.7), at session or media level,
/// also used by `a=rtcp` (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// `IN`.
    pub network_type: &'a str,
    /// `IP4` or `IP6`.
    pub address_type: &'a str,
    /// The address without a `/ttl` or `/count` suffix.
    pub address: &'a str,
    /// IPv4 multicast TTL (`224.2.1.1/127`).
    pub ttl: Option<u8>,
    /// Number of multicast addresses (`224.2.1.1/127/3`, `ff15::101/3`).
    pub count: Option<u32>,
}

impl Connection<'_> {
    /// The address as an IP address, if it is one (it may be a host name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }

    /// `0.0.0.0` or `::`: the RFC 2543 way to put a stream on hold, still sent by real phones.
    pub fn is_unspecified(&self) -> bool {
        self.ip().is_some_and(|ip| ip.is_unspecified())
    }
}

pub(crate) fn parse_connection<'a>(
    field: &'static str,
    value: &'a str,
) -> Result<Connection<'a>, FieldError> {
    let mut tokens = value.split_ascii_whitespace();
    let mut next = |problem| {
        tokens
            .next()
            .ok_or_else(|| FieldError::malformed(field, problem, value.as_bytes()))
    };
    let network_type = next("has no network type")?;
    let address_type = next("has no address type")?;
    let full = next("has no address")?;
    let mut parts = full.split('/');
    let address = parts.next().unwrap_or(full);
    let number = |part: &str| {
        part.parse::<u32>()
            .map_err(|_| FieldError::malformed(field, "has a bad /ttl or /count", full.as_bytes()))
    };
    let (first, second) = (parts.next(), parts.next());
    if parts.next().is_some() {
        return Err(FieldError::malformed(
            field,
            "has too many '/' parts",
            full.as_bytes(),
        ));
    }
    let (ttl, count) = if address_type.eq_ignore_ascii_case("IP4") {
        let ttl = first
            .map(|t| {
                number(t)?.try_into().map_err(|_| {
                    FieldError::malformed(field, "has a TTL above 255", full.as_bytes())
                })
            })
            .transpose()?;
        (ttl, second.map(number).transpose()?)
    } else {
        if second.is_some() {
            return Err(FieldError::malformed(
                field,
                "has too many '/' parts",
                full.as_bytes(),
            ));
        }
        (None, first.map(number).transpose()?)
    };
    Ok(Connection {
        network_type,
        address_type,
        address,
        ttl,
        count,
    })
}

/// `c=` text for an IP address: `IN IP4 192.0.2.1` or `IN IP6 2001:db8::1`.
pub(crate) fn connection_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IN IP4 {v4}"),
        IpAddr::V6(v6) => format!("IN IP6 {v6}"),
    }
}

/// `t=<start-time> <stop-time>` (NTP seconds; `0 0` is an unbounded session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Start time, 0 for "now".
    pub start: u64,
    /// Stop time, 0 for unbounded.
    pub stop: u64,
}

pub(crate) fn parse_timing(value: &[u8]) -> Result<Timing, FieldError> {
    const FIELD: &str = "t=";
    let value = text(FIELD, value)?;
    let mut tokens = value.split_ascii_whitespace();
    let mut next = || -> Result<u64, FieldError> {
        tokens
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| FieldError::malformed(FIELD, "needs two numbers", value.as_bytes()))
    };
    Ok(Timing {
        start: next()?,
        stop: next()?,
    })
}

/// `b=<bwtype>:<bandwidth>`, e.g. `b=AS:64` (kbit/s) or `b=TIAS:64000` (bit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth<'a> {
    /// `AS`, `CT`, `TIAS`, `RS`, `RR`, ...
    pub kind: &'a str,
    /// The number, in the unit `kind` defines.
    pub value: u64,
}

pub(crate) fn parse_bandwidth(value: &[u8]) -> Result<Bandwidth<'_>, FieldError> {
    const FIELD: &str = "b=";
    let value = text(FIELD, value)?;
    let (kind, number) = value
        .split_once(':')
        .ok_or_else(|| FieldError::malformed(FIELD, "has no ':'", value.as_bytes()))?;
    let value = number.trim().parse().map_err(|_| {
        FieldError::malformed(FIELD, "bandwidth is not a number", number.as_bytes())
    })?;
    Ok(Bandwidth {
        kind: kind.trim(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_suffixes() {
        let c = parse_connection("c=", "IN IP4 224.2.1.1/127/3").unwrap();
        assert_eq!(
            (c.address, c.ttl, c.count),
            ("224.2.1.1", Some(127), Some(3))
        );
        let c = parse_connection("c=", "IN IP6 ff15::101/3").unwrap();
        assert_eq!((c.address, c.ttl, c.count), ("ff15::101", None, Some(3)));
        assert!(parse_connection("c=", "IN IP4 224.2.1.1/300").is_err());
        assert!(parse_connection("c=", "IN IP4").is_err());
    }

    #[test]
    fn origin_version_must_be_a_number() {
        let err = parse_origin(b"- 1 x IN IP4 192.0.2.1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "o= session version: is not a number: \"x\""
        );
    }
}
