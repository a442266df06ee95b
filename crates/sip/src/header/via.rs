//! The Via header, [RFC 3261 §20.42](https://www.rfc-editor.org/rfc/rfc3261#section-20.42),
//! with the `received`/`rport` parameters of [RFC 3581](https://www.rfc-editor.org/rfc/rfc3581).
//!
//! ```text
//! via-parm     = sent-protocol LWS sent-by *( SEMI via-params )
//! sent-protocol = protocol-name SLASH protocol-version SLASH transport
//! sent-by      = host [ COLON port ]
//! via-params   = via-ttl / via-maddr / via-received / via-branch / via-extension
//! ```

use super::{gen_value_ok, HeaderName, Params};
use crate::error::ParseError;
use crate::syntax::{is_lws, is_token, text, trim};
use crate::uri::{parse_hostport, Host};
use std::net::Ipv6Addr;

/// RFC 3261 §8.1.1.7: a branch that starts with this cookie is unique per transaction.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value (`SIP/2.0/UDP host:port;branch=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, normally `SIP`.
    pub protocol: &'a str,
    /// Protocol version, normally `2.0`.
    pub version: &'a str,
    /// Transport as written (`UDP`, `tcp`, `TLS`, `WS`…).
    pub transport: &'a str,
    /// The sent-by host.
    pub host: Host<'a>,
    /// The sent-by port, if written.
    pub port: Option<u16>,
    /// All parameters.
    pub params: Params<'a>,
    /// The `branch` value, found while the parameters were checked.
    branch: Option<&'a str>,
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of a comma list).
    pub fn parse(v: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let bad = |what: &str| ParseError::bad(HeaderName::Via, what);
        let v = trim(v);
        let (protocol, version, rest) = match v.get(..8) {
            // Nearly every Via starts so: no slash search, no UTF-8 checks.
            Some(sip) if sip.eq_ignore_ascii_case(b"SIP/2.0/") => {
                let protocol = if &v[..3] == b"SIP" {
                    "SIP"
                } else {
                    text(&v[..3]).ok_or_else(|| bad("protocol"))?
                };
                (protocol, "2.0", &v[8..])
            }
            _ => {
                let (protocol, rest) =
                    take_until_slash(v).ok_or_else(|| bad("no sent-protocol"))?;
                let (version, rest) =
                    take_until_slash(rest).ok_or_else(|| bad("no protocol version"))?;
                if !is_token(protocol) || !is_token(version) {
                    return Err(bad("sent-protocol is not SIP/2.0/transport"));
                }
                let protocol = text(protocol).ok_or_else(|| bad("protocol"))?;
                let version = text(version).ok_or_else(|| bad("version"))?;
                (protocol, version, rest)
            }
        };
        let rest = trim(rest);
        let t_end = rest
            .iter()
            .position(|&b| is_lws(b))
            .ok_or_else(|| bad("no sent-by"))?;
        let transport = match &rest[..t_end] {
            b"UDP" => "UDP",
            b"TCP" => "TCP",
            b"TLS" => "TLS",
            b"SCTP" => "SCTP",
            b"WS" => "WS",
            b"WSS" => "WSS",
            other if is_token(other) => text(other).ok_or_else(|| bad("transport"))?,
            _ => return Err(bad("sent-protocol is not SIP/2.0/transport")),
        };
        let rest = trim(&rest[t_end..]);
        let (sent_by, params) = crate::syntax::split_params(rest);
        // COLON = SWS ":" SWS: white space inside sent-by is dropped (into a stack copy, only
        // when there is any) before parsing host:port.
        let mut hp;
        let compact: &[u8] = if sent_by.iter().any(|&b| is_lws(b)) {
            hp = [0u8; 300];
            let mut n = 0;
            for &b in sent_by.iter().filter(|&&b| !is_lws(b)) {
                *hp.get_mut(n).ok_or_else(|| bad("sent-by too long"))? = b;
                n += 1;
            }
            &hp[..n]
        } else {
            sent_by
        };
        let (host, port) = parse_hostport(compact).map_err(|e| bad(&format!("sent-by: {e}")))?;
        // A domain borrows the copy; re-borrow it from the message.
        let host = match host {
            Host::Domain(_) => {
                let end = sent_by
                    .iter()
                    .position(|&b| b == b':' || is_lws(b))
                    .unwrap_or(sent_by.len());
                Host::Domain(text(&sent_by[..end]).ok_or_else(|| bad("sent-by host"))?)
            }
            Host::Ipv4(a) => Host::Ipv4(a),
            Host::Ipv6(a) => Host::Ipv6(a),
        };
        let params = Params::new(params);
        let mut branch = None;
        // One pass over the parameters checks the generic grammar and the ones with a
        // grammar of their own, and finds the branch.
        params
            .check_with(gen_value_ok, |name, value| {
                let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
                if is("ttl") {
                    value
                        .and_then(|t| crate::syntax::parse_u64(t, 3))
                        .filter(|t| *t <= 255)
                        .ok_or("ttl is not 0-255")?;
                } else if is("rport") {
                    if let Some(p) = value {
                        crate::syntax::parse_u64(p, 5)
                            .filter(|p| *p <= 65535)
                            .ok_or("rport is not a port")?;
                    }
                } else if is("branch") {
                    match value.filter(|b| is_token(b)).and_then(text) {
                        Some(b) if branch.is_none() => branch = Some(b),
                        Some(_) => {}
                        None => return Err("branch is not a token"),
                    }
                } else if is("received") && !value.is_some_and(received_ok) {
                    return Err("received is not an address");
                }
                Ok(())
            })
            .map_err(bad)?;
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
            branch,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// Whether the branch starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_magic_cookie(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(BRANCH_MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten().and_then(text)
    }

    /// The `rport` parameter: `None` if absent, `Some(None)` if present without a value (a
    /// request asking for it), `Some(Some(port))` if filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params.get("rport").map(|v| {
            v.and_then(|p| crate::syntax::parse_u64(p, 5))
                .and_then(|p| u16::try_from(p).ok())
        })
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten().and_then(text)
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|t| crate::syntax::parse_u64(t, 3))
            .and_then(|t| u8::try_from(t).ok())
    }
}

/// `via-received = "received" EQUAL (IPv4address / IPv6address)`: RFC 3261 writes an IPv6
/// address without brackets, many implementations with them (an `IPv6reference`), and
/// RFC 5118 §4.5 says to accept both. A host name is accepted as before.
fn received_ok(r: &[u8]) -> bool {
    crate::uri::parse_host(r).is_ok() || text(r).is_some_and(|t| t.parse::<Ipv6Addr>().is_ok())
}

/// `token SWS "/"` → (token, rest after the slash).
fn take_until_slash(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = memchr::memchr(b'/', s)?;
    Some((trim(&s[..slash]), &s[slash + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_all_parameters() {
        let v = Via::parse(
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;received=192.0.2.1;rport=5070;maddr=224.2.0.1;ttl=16",
        )
        .unwrap();
        assert_eq!((v.protocol, v.version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!(v.host, Host::Domain("pc33.atlanta.com"));
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert!(v.has_magic_cookie());
        assert_eq!(v.received(), Some("192.0.2.1"));
        assert_eq!(v.rport(), Some(Some(5070)));
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(v.ttl(), Some(16));
    }

    #[test]
    fn via_with_folding_and_spaces_around_slashes() {
        let v = Via::parse(b"SIP / 2.0\r\n /UDP\r\n    192.0.2.2 : 5060 ;rport ; branch=z9hG4bK1")
            .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::Ipv4("192.0.2.2".parse().unwrap()));
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn via_ipv6_sent_by_and_received() {
        let v = Via::parse(
            b"SIP/2.0/TCP [2001:db8::9:1]:5061;received=[2001:db8::9:255];branch=z9hG4bKas3",
        )
        .unwrap();
        assert_eq!(v.host, Host::Ipv6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.received(), Some("[2001:db8::9:255]"));
        // RFC 3261's own grammar: no brackets (RFC 5118 §4.5).
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bK2")
            .unwrap();
        assert_eq!(v.received(), Some("2001:db8::9:255"));
        let e = Via::parse(b"SIP/2.0/UDP h;received=2001:db8::g;branch=z9hG4bK3").unwrap_err();
        assert_eq!(e.to_string(), "bad Via header: received is not an address");
    }

    #[test]
    fn via_sent_protocol_in_any_case_and_the_first_branch() {
        let v = Via::parse(b"sip/2.0/udp h;branch=z9hG4bKa;branch=z9hG4bKb").unwrap();
        assert_eq!((v.protocol, v.version, v.transport), ("sip", "2.0", "udp"));
        assert_eq!(v.branch(), Some("z9hG4bKa"));
        assert_eq!(v.branch(), v.params.get("branch").flatten().and_then(text));
        let v = Via::parse(b"SIP/2.0/WSS h").unwrap();
        assert_eq!((v.transport, v.branch()), ("WSS", None));
        let v = Via::parse(b"SIP/3.0/X-NEW h;BRANCH=z9hG4bK1").unwrap();
        assert_eq!((v.version, v.transport), ("3.0", "X-NEW"));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        let e = Via::parse(b"SIP/2.0/U{P h").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad Via header: sent-protocol is not SIP/2.0/transport"
        );
    }

    #[test]
    fn via_errors_name_the_problem() {
        let e = Via::parse(b"SIP/2.0/UDP").unwrap_err();
        assert_eq!(e.to_string(), "bad Via header: no sent-by");
        let e = Via::parse(b"SIP/2.0/UDP host:70000").unwrap_err();
        assert_eq!(e.to_string(), "bad Via header: sent-by: bad port");
        let e = Via::parse(b"SIP/2.0/UDP host;ttl=300").unwrap_err();
        assert_eq!(e.to_string(), "bad Via header: ttl is not 0-255");
        let e = Via::parse(b"SIP/2.0/UDP host;branch").unwrap_err();
        assert_eq!(e.to_string(), "bad Via header: branch is not a token");
    }
}
