//! URIs: SIP and SIPS ([RFC 3261 §19.1](https://www.rfc-editor.org/rfc/rfc3261#section-19.1)),
//! TEL ([RFC 3966](https://www.rfc-editor.org/rfc/rfc3966)), and any other absolute URI kept
//! opaque so a proxy can forward it.
//!
//! ```text
//! SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]
//! userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
//! hostport = host [ ":" port ]
//! host     = hostname / IPv4address / IPv6reference
//! ```
//!
//! A [`Uri`] borrows the bytes it was parsed from; escapes stay escaped (see
//! [`crate::unescape`]).

use crate::error::UriError;
use crate::header::Params;
use crate::syntax::{is_escaped_run, text, UriClass};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A parsed URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:`.
    Tel(TelUri<'a>),
    /// Any other scheme, kept as written.
    Other {
        /// The scheme, as written.
        scheme: &'a str,
        /// Everything after `scheme:`.
        rest: &'a [u8],
    },
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `true` for `sips:`.
    pub secure: bool,
    /// The user part, still escaped.
    pub user: Option<&'a [u8]>,
    /// The password, still escaped.
    pub password: Option<&'a [u8]>,
    /// The host.
    pub host: Host<'a>,
    /// The port, if written.
    pub port: Option<u16>,
    /// The `;params`.
    pub params: Params<'a>,
    /// The `?headers` part without the `?`, still escaped.
    pub headers: Option<&'a [u8]>,
}

/// A `tel:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    /// The number as written (`+1-201-555-0123`), with visual separators.
    pub number: &'a str,
    /// The `;params`.
    pub params: Params<'a>,
}

/// A host: domain name, IPv4 address or IPv6 reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name as written.
    Domain(&'a str),
    /// A dotted-quad IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference (`[2001:db8::1]`), the address without brackets.
    Ipv6(Ipv6Addr),
}

impl std::fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

impl<'a> Uri<'a> {
    /// Parses a URI. Whitespace anywhere is an error (the caller trims LWS first).
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        // A fold rather than `any`: no early exit, so it vectorizes.
        let blank = s
            .iter()
            .fold(false, |seen, &b| seen | (b <= b' ' || b == 0x7f));
        if s.is_empty() || blank {
            return Err(UriError::Whitespace);
        }
        let colon = memchr::memchr(b':', s).ok_or(UriError::NoScheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        if scheme.is_empty()
            || !scheme[0].is_ascii_alphabetic()
            || !scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError::NoScheme);
        }
        if scheme.eq_ignore_ascii_case(b"sip") {
            SipUri::parse_rest(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            SipUri::parse_rest(rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            TelUri::parse_rest(rest).map(Uri::Tel)
        } else {
            let scheme = text(scheme).ok_or(UriError::NoScheme)?;
            if rest.is_empty() {
                return Err(UriError::Host);
            }
            Ok(Uri::Other { scheme, rest })
        }
    }

    /// The SIP/SIPS URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The URI's parameters (empty for an opaque URI).
    pub fn params(&self) -> Params<'a> {
        match self {
            Uri::Sip(u) => u.params,
            Uri::Tel(t) => t.params,
            Uri::Other { .. } => Params::default(),
        }
    }
}

impl<'a> SipUri<'a> {
    fn parse_rest(s: &'a [u8], secure: bool) -> Result<SipUri<'a>, UriError> {
        // user and password cannot hold an unescaped '@', nor can hostport, params or
        // headers, so the first '@' ends the userinfo.
        let (user, password, rest) = match memchr::memchr(b'@', s) {
            Some(at) => {
                let info = &s[..at];
                let (user, password) = match memchr::memchr(b':', info) {
                    Some(c) => (&info[..c], Some(&info[c + 1..])),
                    None => (info, None),
                };
                if user.is_empty() || !is_escaped_run(user, UriClass::USER) {
                    return Err(UriError::User);
                }
                if let Some(p) = password {
                    if !is_escaped_run(p, UriClass::PASSWORD) {
                        return Err(UriError::Password);
                    }
                }
                (Some(user), password, &s[at + 1..])
            }
            None => (None, None, s),
        };
        let end = rest
            .iter()
            .position(|&b| b == b';' || b == b'?')
            .unwrap_or(rest.len());
        let (host, port) = parse_hostport(&rest[..end])?;
        let tail = &rest[end..];
        let (params, headers) = match memchr::memchr(b'?', tail) {
            Some(q) => (&tail[..q], Some(&tail[q + 1..])),
            None => (tail, None),
        };
        for p in params.split(|&b| b == b';').skip(1) {
            let name = p.split(|&b| b == b'=').next().unwrap_or_default();
            if name.is_empty() || !is_escaped_run(p, UriClass::PARAM) {
                return Err(UriError::Param);
            }
        }
        if let Some(h) = headers {
            if h.is_empty() || !is_escaped_run(h, UriClass::HEADER) {
                return Err(UriError::Headers);
            }
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params: Params::new(params),
            headers,
        })
    }

    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&'a [u8]> {
        self.params.get("transport").flatten()
    }

    /// Whether the URI carries the `lr` (loose routing) parameter.
    pub fn lr(&self) -> bool {
        self.params.get("lr").is_some()
    }

    /// The `maddr` parameter, if any.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.get("maddr").flatten()
    }
}

impl<'a> TelUri<'a> {
    fn parse_rest(s: &'a [u8]) -> Result<TelUri<'a>, UriError> {
        let end = memchr::memchr(b';', s).unwrap_or(s.len());
        let number = &s[..end];
        let digits = number.strip_prefix(b"+").unwrap_or(number);
        if digits.is_empty()
            || !digits
                .iter()
                .any(|b| b.is_ascii_hexdigit() || *b == b'*' || *b == b'#')
            || !digits.iter().all(|&b| {
                b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')')
            })
        {
            return Err(UriError::TelNumber);
        }
        let params = &s[end..];
        for p in params.split(|&b| b == b';').skip(1) {
            if p.is_empty() || !is_escaped_run(p, UriClass::PARAM) {
                return Err(UriError::Param);
            }
        }
        Ok(TelUri {
            number: text(number).ok_or(UriError::TelNumber)?,
            params: Params::new(params),
        })
    }
}

/// Parses `host [":" port]` with no surrounding white space.
pub(crate) fn parse_hostport(s: &[u8]) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if s.first() == Some(&b'[') {
        let close = memchr::memchr(b']', s).ok_or(UriError::Host)?;
        let host = parse_host(&s[..=close])?;
        match &s[close + 1..] {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(parse_port(port)?)),
            _ => return Err(UriError::Host),
        }
    } else {
        match memchr::memchr(b':', s) {
            Some(c) => (parse_host(&s[..c])?, Some(parse_port(&s[c + 1..])?)),
            None => (parse_host(s)?, None),
        }
    };
    Ok((host, port))
}

fn parse_port(s: &[u8]) -> Result<u16, UriError> {
    crate::syntax::parse_u64(s, 5)
        .filter(|_| !s.is_empty() && s.iter().all(u8::is_ascii_digit))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(UriError::Port)
}

/// Parses a host: `[IPv6]`, a dotted quad, or a domain name (RFC 3261 `hostname`).
pub(crate) fn parse_host(s: &[u8]) -> Result<Host<'_>, UriError> {
    if let Some(inner) = s.strip_prefix(b"[").and_then(|r| r.strip_suffix(b"]")) {
        return text(inner)
            .and_then(parse_ipv6)
            .map(Host::Ipv6)
            .ok_or(UriError::Host);
    }
    // A dotted quad goes to the IPv4 parser; anything else must be a hostname: labels of
    // alphanum, `-`, `_`, not starting or ending with `-`; the top label starts with a letter;
    // one trailing dot allowed.
    if s.is_empty() {
        return Err(UriError::Host);
    }
    if s[0].is_ascii_digit() {
        if let Some(a) = parse_ipv4(s) {
            return Ok(Host::Ipv4(a));
        }
        // Not a dotted quad: a name whose top label starts with a letter, or nothing.
    }
    let name = s.strip_suffix(b".").unwrap_or(s);
    // The characters first (a tight loop), then the labels' ends (a few per name).
    if name.is_empty()
        || !name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(UriError::Host);
    }
    let mut top_first = 0u8;
    for label in name.split(|&b| b == b'.') {
        match (label.first(), label.last()) {
            (Some(&first), Some(&last)) if first != b'-' && last != b'-' => top_first = first,
            _ => return Err(UriError::Host),
        }
    }
    if !top_first.is_ascii_alphabetic() {
        return Err(UriError::Host);
    }
    text(s).map(Host::Domain).ok_or(UriError::Host)
}

/// An IPv6 address, or the form RFC 3261's ABNF allows by mistake — a `hexpart` ending in
/// `::`, then `":" IPv4address` (`2001:db8:::192.0.2.1`) — which RFC 5118 §4.10 says to
/// tolerate; it is read without the extra colon.
fn parse_ipv6(t: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = t.parse() {
        return Some(a);
    }
    let p = t.find(":::")?;
    let v4 = &t[p + 3..];
    if v4.contains(':') || !v4.contains('.') {
        return None;
    }
    format!("{}::{v4}", &t[..p]).parse().ok()
}

/// A dotted quad of decimal octets (no leading `+`, at most three digits each). By hand
/// because the standard library's generic address parser costs several times more than this
/// loop on every Via and URI host.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    // The current octet's value and digit count.
    let mut value = 0u16;
    let mut digits = 0;
    for &b in s {
        if b == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = u8::try_from(value).ok()?;
            n += 1;
            value = 0;
            digits = 0;
        } else if b.is_ascii_digit() && digits < 3 && !(digits == 1 && value == 0) {
            value = value * 10 + u16::from(b - b'0');
            digits += 1;
        } else {
            return None;
        }
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s.as_bytes()) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn sip_uri_with_every_part() {
        let u = sip("sips:al%20ice:pa$$@Example.COM:5061;transport=tcp;lr?subject=hi&x=%41");
        assert!(u.secure);
        assert_eq!(u.user, Some(&b"al%20ice"[..]));
        assert_eq!(u.password, Some(&b"pa$$"[..]));
        assert_eq!(u.host, Host::Domain("Example.COM"));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert!(u.lr());
        assert_eq!(u.headers, Some(&b"subject=hi&x=%41"[..]));
        assert_eq!(&*crate::unescape(u.user.unwrap()), b"al ice");
    }

    #[test]
    fn ipv6_and_ipv4_hosts() {
        let u = sip("sip:[2001:db8::10]:5070;maddr=192.0.2.1");
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.maddr(), Some(&b"192.0.2.1"[..]));
        let u = sip("sip:user;par=x@192.0.2.4");
        assert_eq!(u.user, Some(&b"user;par=x"[..]));
        assert_eq!(u.host, Host::Ipv4(Ipv4Addr::new(192, 0, 2, 4)));
        let u = sip("sip:[2001:db8::1]");
        assert_eq!(u.port, None);
        // RFC 5118 §4.10: the three-colon form of RFC 3261's ABNF is tolerated.
        let u = sip("sip:[2001:db8:::192.0.2.1]:5060");
        assert_eq!(u.host, Host::Ipv6("2001:db8::192.0.2.1".parse().unwrap()));
        assert_eq!(u.port, Some(5060));
    }

    #[test]
    fn rejects_malformed_sip_uris() {
        for (s, e) in [
            ("sip:2001:db8::1", UriError::Host),
            ("sip:[2001:db8:::1]", UriError::Host),
            ("sip:[2001:db8::::192.0.2.1]", UriError::Host),
            ("sip:host:99999", UriError::Port),
            ("sip:host:", UriError::Port),
            ("sip:us er@host", UriError::Whitespace),
            ("sip:user@", UriError::Host),
            ("sip:a@b@c", UriError::Host),
            ("sip:1.2.3.256", UriError::Host),
            ("sip:-bad.example.com", UriError::Host),
            ("sip:us<er@host", UriError::User),
            ("sip:host;=x", UriError::Param),
            ("sip:host?", UriError::Headers),
            ("nocolon", UriError::NoScheme),
        ] {
            assert_eq!(Uri::parse(s.as_bytes()), Err(e), "{s}");
        }
    }

    #[test]
    fn dotted_quads() {
        assert_eq!(
            parse_ipv4(b"192.0.2.255"),
            Some(Ipv4Addr::new(192, 0, 2, 255))
        );
        for bad in [
            &b"1.2.3"[..],
            b"1.2.3.4.5",
            b"1.2.3.256",
            b"01.2.3.4",
            b"1..3.4",
            b"1.2.3.4.",
            b".1.2.3",
            b"1.2.3.4444",
            b"1.2.3.00",
            b"1.2.3.-4",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_ipv4(b"0.0.0.0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(
            parse_ipv4(b"10.0.100.9"),
            Some(Ipv4Addr::new(10, 0, 100, 9))
        );
        assert_eq!(Uri::parse(b"sip:1.2.3.4."), Err(UriError::Host));
        // Digits first but no dotted quad: a host name only if the top label is one.
        for bad in [&b"sip:1.2.3"[..], b"sip:999.1.1.1", b"sip:10.0.0.1x"] {
            assert_eq!(Uri::parse(bad), Err(UriError::Host));
        }
        assert_eq!(
            parse_host(b"3com.example"),
            Ok(Host::Domain("3com.example"))
        );
    }

    #[test]
    fn tel_and_opaque_uris() {
        match Uri::parse(b"tel:+1-201-555-0123;ext=1") {
            Ok(Uri::Tel(t)) => {
                assert_eq!(t.number, "+1-201-555-0123");
                assert_eq!(t.params.get("ext"), Some(Some(&b"1"[..])));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(Uri::parse(b"tel:+"), Err(UriError::TelNumber));
        assert_eq!(
            Uri::parse(b"urn:service:sos"),
            Ok(Uri::Other {
                scheme: "urn",
                rest: b"service:sos"
            })
        );
    }
}
