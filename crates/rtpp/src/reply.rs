//! Replies: `COOKIE RESULT\n`.

use std::fmt;
use std::net::IpAddr;

use crate::error::{ErrorCode, ReplyParseError};

/// The base protocol version `V` answers; clients (Kamailio, OpenSIPS) refuse a node that
/// answers anything else.
pub const BASE_VERSION: &str = "20040107";

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `U`/`L`: the relay's port for the other party, and its address (`port addr`, with a
    /// trailing ` 6` for IPv6 as RTPProxy writes it); without an address the client keeps
    /// the one it has.
    Port {
        /// The RTP port (RTCP is the next one).
        port: u16,
        /// The address, if given.
        address: Option<IpAddr>,
    },
    /// A number: `0` (success, or `L` found no session), `1`/`0` for `VF`, a version.
    Number(u64),
    /// `E<code>`.
    Error(ErrorCode),
    /// Text as is: `I`'s statistics, `Q`'s counters, `V`'s version.
    Text(String),
}

impl Reply {
    /// `0`.
    pub fn ok() -> Reply {
        Reply::Number(0)
    }

    /// The datagram answering the command with `cookie`.
    pub fn encode(&self, cookie: &str) -> Vec<u8> {
        let mut out = format!("{cookie} {self}");
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Reads a reply datagram: its cookie and result. A bare number is [`Reply::Number`]
    /// (for `U`/`L`, [`Reply::port`] reads it as a port without address).
    pub fn parse(datagram: &[u8]) -> Result<(String, Reply), ReplyParseError> {
        let text = std::str::from_utf8(datagram).map_err(|_| ReplyParseError::NotText)?;
        let text = text.trim_start_matches(' ');
        let (cookie, body) = text.split_once(' ').ok_or(ReplyParseError::Empty)?;
        if cookie.is_empty() {
            return Err(ReplyParseError::Empty);
        }
        let words: Vec<&str> = body.split_ascii_whitespace().collect();
        let reply = match words.as_slice() {
            [] => return Err(ReplyParseError::Empty),
            [e] if e.starts_with('E') => {
                let code = e[1..]
                    .parse::<u16>()
                    .map_err(|_| ReplyParseError::BadError((*e).to_owned()))?;
                Reply::Error(ErrorCode(code))
            }
            [n] if n.bytes().all(|b| b.is_ascii_digit()) => Reply::Number(
                n.parse::<u64>()
                    .map_err(|_| ReplyParseError::BadPort((*n).to_owned()))?,
            ),
            [port, address] | [port, address, _]
                if port.bytes().all(|b| b.is_ascii_digit())
                    && !body.trim_end().contains('\n')
                    && (address.contains('.') || address.contains(':')) =>
            {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| ReplyParseError::BadPort((*port).to_owned()))?;
                let address = address
                    .parse::<IpAddr>()
                    .map_err(|_| ReplyParseError::BadAddress((*address).to_owned()))?;
                Reply::Port {
                    port,
                    address: Some(address),
                }
            }
            _ => Reply::Text(body.trim_end_matches('\n').to_owned()),
        };
        Ok((cookie.to_owned(), reply))
    }

    /// The port and address of a `U`/`L` reply (`None`: an error, or `0` = no session).
    pub fn port(&self) -> Option<(u16, Option<IpAddr>)> {
        match self {
            Reply::Port { port, address } if *port != 0 => Some((*port, *address)),
            Reply::Number(n) if *n != 0 => u16::try_from(*n).ok().map(|p| (p, None)),
            _ => None,
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Port {
                port,
                address: None,
            } => write!(f, "{port}"),
            Reply::Port {
                port,
                address: Some(IpAddr::V4(ip)),
            } => write!(f, "{port} {ip}"),
            Reply::Port {
                port,
                address: Some(IpAddr::V6(ip)),
            } => write!(f, "{port} {ip} 6"),
            Reply::Number(n) => write!(f, "{n}"),
            Reply::Error(code) => write!(f, "{code}"),
            Reply::Text(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_rtpproxy_does() {
        // The exact bytes RTPProxy 3.x (rtp.io 1.1.1) sends.
        let port = Reply::Port {
            port: 20090,
            address: Some("127.0.0.1".parse().unwrap()),
        };
        assert_eq!(port.encode("c7"), b"c7 20090 127.0.0.1\n");
        let v6 = Reply::Port {
            port: 20090,
            address: Some("2001:db8::1".parse().unwrap()),
        };
        assert_eq!(v6.encode("c"), b"c 20090 2001:db8::1 6\n");
        assert_eq!(Reply::ok().encode("c10"), b"c10 0\n");
        assert_eq!(
            Reply::Error(ErrorCode::SESSION_UNKNOWN).encode("c11"),
            b"c11 E50\n"
        );
        assert_eq!(
            Reply::Text(BASE_VERSION.into()).encode("c1"),
            b"c1 20040107\n"
        );
        let info = Reply::Text("sessions created: 0\nactive sessions: 0\n".into());
        assert_eq!(
            info.encode("c6"),
            b"c6 sessions created: 0\nactive sessions: 0\n"
        );
    }

    #[test]
    fn parses_what_it_encodes() {
        for reply in [
            Reply::Port {
                port: 20090,
                address: Some("127.0.0.1".parse().unwrap()),
            },
            Reply::Port {
                port: 3000,
                address: Some("::1".parse().unwrap()),
            },
            Reply::Number(0),
            Reply::Number(1),
            Reply::Error(ErrorCode(50)),
            Reply::Text("60 0 0 0 0".into()),
            Reply::Text("sessions created: 1\nactive sessions: 1".into()),
        ] {
            let (cookie, back) = Reply::parse(&reply.encode("ck")).unwrap();
            assert_eq!(cookie, "ck");
            assert_eq!(back, reply);
        }
        assert_eq!(
            Reply::parse(b"ck 20000\n").unwrap().1.port(),
            Some((20000, None))
        );
        assert_eq!(Reply::parse(b"ck 0\n").unwrap().1.port(), None);
    }

    #[test]
    fn malformed_replies() {
        assert_eq!(Reply::parse(b"ck"), Err(ReplyParseError::Empty));
        assert_eq!(Reply::parse(b"ck \n"), Err(ReplyParseError::Empty));
        assert!(matches!(
            Reply::parse(b"ck Ex"),
            Err(ReplyParseError::BadError(_))
        ));
        assert!(matches!(
            Reply::parse(b"ck 70000 1.2.3.4"),
            Err(ReplyParseError::BadPort(_))
        ));
        assert!(matches!(
            Reply::parse(b"ck 7000 1.2.3"),
            Err(ReplyParseError::BadAddress(_))
        ));
        assert_eq!(Reply::parse(b"ck \xff"), Err(ReplyParseError::NotText));
    }
}
