//! Typed views of the `a=` attributes a relay reads or rewrites.
//!
//! Each parser takes the attribute value (after `name:`) and borrows from it.

use crate::error::FieldError;
use crate::fields::{parse_connection, Connection};
use crate::line::text;

/// One `a=<name>[:<value>]` line, kept as bytes (unknown attributes need not be UTF-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The name, e.g. `rtpmap` or `sendrecv`.
    pub name: &'a [u8],
    /// The text after the first `:`, trailing whitespace removed; `None` for a flag.
    pub value: Option<&'a [u8]>,
}

impl<'a> Attribute<'a> {
    pub(crate) fn split(value: &'a [u8]) -> Self {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, rest) = value.split_at(colon);
                Attribute {
                    name,
                    value: Some(rest.get(1..).unwrap_or_default()),
                }
            }
            None => Attribute {
                name: value,
                value: None,
            },
        }
    }

    /// Whether this attribute is called `name` (case-sensitive, as RFC 8866 §5.13 names are).
    pub fn is(&self, name: &str) -> bool {
        self.name == name.as_bytes()
    }

    /// The value as text (`""` for a flag), or an error naming this attribute.
    pub fn value_str(&self) -> Result<&'a str, FieldError> {
        text("a= value", self.value.unwrap_or_default())
    }
}

/// The media direction attributes (RFC 3264 §5.1, §6.1); `sendrecv` when none is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`.
    SendRecv,
    /// `a=sendonly` (how hold is signalled since RFC 3264).
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for, if it is one.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"sendrecv" => Some(Direction::SendRecv),
            b"sendonly" => Some(Direction::SendOnly),
            b"recvonly" => Some(Direction::RecvOnly),
            b"inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The direction seen from the other side: `sendonly` ↔ `recvonly`.
    pub fn reversed(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtpmap<'a> {
    /// RTP payload type, 0–127.
    pub payload_type: u8,
    /// e.g. `PCMU`, `opus`, `telephone-event` (compare case-insensitively).
    pub encoding: &'a str,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channels for audio, e.g. `2` for `opus/48000/2`.
    pub parameters: Option<&'a str>,
}

pub(crate) fn parse_rtpmap(value: &[u8]) -> Result<Rtpmap<'_>, FieldError> {
    const FIELD: &str = "a=rtpmap";
    let value = text(FIELD, value)?;
    let (pt, codec) = value
        .trim()
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| FieldError::malformed(FIELD, "has no encoding", value.as_bytes()))?;
    let payload_type = pt
        .parse::<u8>()
        .ok()
        .filter(|pt| *pt < 128)
        .ok_or_else(|| FieldError::malformed(FIELD, "payload type is not 0-127", pt.as_bytes()))?;
    let mut parts = codec.trim().splitn(3, '/');
    let encoding = parts.next().unwrap_or_default();
    let rate = parts
        .next()
        .ok_or_else(|| FieldError::malformed(FIELD, "has no clock rate", codec.as_bytes()))?;
    let clock_rate = rate
        .parse()
        .map_err(|_| FieldError::malformed(FIELD, "clock rate is not a number", rate.as_bytes()))?;
    Ok(Rtpmap {
        payload_type,
        encoding,
        clock_rate,
        parameters: parts.next(),
    })
}

/// `a=fmtp:<format> <format specific parameters>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmtp<'a> {
    /// The format (payload type) it applies to.
    pub format: &'a str,
    /// Everything after the format, e.g. `0-16` or `mode=20`; may be empty.
    pub parameters: &'a str,
}

pub(crate) fn parse_fmtp(value: &[u8]) -> Result<Fmtp<'_>, FieldError> {
    let value = text("a=fmtp", value)?.trim();
    let (format, parameters) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if format.is_empty() {
        return Err(FieldError::malformed("a=fmtp", "has no format", b""));
    }
    Ok(Fmtp {
        format,
        parameters: parameters.trim_start(),
    })
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp<'a> {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address when it differs from the media's `c=`.
    pub connection: Option<Connection<'a>>,
}

pub(crate) fn parse_rtcp(value: &[u8]) -> Result<Rtcp<'_>, FieldError> {
    const FIELD: &str = "a=rtcp";
    let value = text(FIELD, value)?.trim();
    let (port, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    let port = port
        .parse()
        .map_err(|_| FieldError::malformed(FIELD, "port is not 0-65535", port.as_bytes()))?;
    let rest = rest.trim();
    let connection = if rest.is_empty() {
        None
    } else {
        Some(parse_connection(FIELD, rest)?)
    };
    Ok(Rtcp { port, connection })
}

/// `a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]` (RFC 4568 §9.1, SDES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crypto<'a> {
    /// Identifies this line in the offer; the answer repeats the tag it accepts.
    pub tag: u32,
    /// e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub suite: &'a str,
    /// One or more `;`-separated key parameters, see [`Crypto::keys`].
    pub key_params: &'a str,
    /// Session parameters such as `UNENCRYPTED_SRTCP`, space separated; may be empty.
    pub session_params: &'a str,
}

impl<'a> Crypto<'a> {
    /// The key parameters, each parsed.
    pub fn keys(&self) -> impl Iterator<Item = Result<KeyParam<'a>, FieldError>> + 'a {
        self.key_params.split(';').map(parse_key_param)
    }

    /// The session parameters, one token each.
    pub fn session_param_list(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.session_params.split_ascii_whitespace()
    }
}

/// One `<key-method>:<key-info>`; for `inline` (RFC 4568 §6.1)
/// `<key||salt>[|<lifetime>][|<MKI>:<length>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyParam<'a> {
    /// `inline` in every deployment.
    pub method: &'a str,
    /// The base64 master key and salt (for another method, its whole key info).
    pub key_salt: &'a str,
    /// e.g. `2^20`.
    pub lifetime: Option<&'a str>,
    /// `<MKI value>:<MKI length>`, e.g. `1:4`.
    pub mki: Option<&'a str>,
}

fn parse_key_param(param: &str) -> Result<KeyParam<'_>, FieldError> {
    let param = param.trim();
    let (method, info) = param.split_once(':').ok_or_else(|| {
        FieldError::malformed("a=crypto key", "has no '<method>:'", param.as_bytes())
    })?;
    let mut parts = info.split('|');
    let key_salt = parts.next().unwrap_or_default();
    let (mut lifetime, mut mki) = (None, None);
    for part in parts {
        let slot = if part.contains(':') {
            &mut mki
        } else {
            &mut lifetime
        };
        if slot.replace(part).is_some() {
            return Err(FieldError::malformed(
                "a=crypto key",
                "has a repeated lifetime or MKI",
                param.as_bytes(),
            ));
        }
    }
    Ok(KeyParam {
        method,
        key_salt,
        lifetime,
        mki,
    })
}

pub(crate) fn parse_crypto(value: &[u8]) -> Result<Crypto<'_>, FieldError> {
    const FIELD: &str = "a=crypto";
    let value = text(FIELD, value)?.trim();
    let mut rest = value;
    let mut next = |problem| {
        let trimmed = rest.trim_start();
        let end = trimmed
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(trimmed.len());
        let (token, after) = trimmed.split_at(end);
        rest = after;
        if token.is_empty() {
            Err(FieldError::malformed(FIELD, problem, value.as_bytes()))
        } else {
            Ok(token)
        }
    };
    let tag = next("has no tag")?;
    let suite = next("has no crypto suite")?;
    let key_params = next("has no key parameters")?;
    let tag = tag
        .parse()
        .map_err(|_| FieldError::malformed(FIELD, "tag is not a number", tag.as_bytes()))?;
    Ok(Crypto {
        tag,
        suite,
        key_params,
        session_params: rest.trim(),
    })
}

/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`
/// (RFC 8839 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Foundation.
    pub foundation: &'a str,
    /// 1 for RTP, 2 for RTCP.
    pub component: u16,
    /// `UDP` (or `TCP`).
    pub transport: &'a str,
    /// Priority.
    pub priority: u32,
    /// Connection address.
    pub address: &'a str,
    /// Port.
    pub port: u16,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: &'a str,
    /// Everything after the type (`raddr ... rport ... generation ...`).
    pub extensions: &'a str,
}

pub(crate) fn parse_candidate(value: &[u8]) -> Result<Candidate<'_>, FieldError> {
    const FIELD: &str = "a=candidate";
    let value = text(FIELD, value)?.trim();
    let mut tokens = value.splitn(9, |c: char| c.is_ascii_whitespace());
    let mut next = |problem| {
        tokens
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FieldError::malformed(FIELD, problem, value.as_bytes()))
    };
    let foundation = next("has no foundation")?;
    let component = next("has no component")?;
    let transport = next("has no transport")?;
    let priority = next("has no priority")?;
    let address = next("has no address")?;
    let port = next("has no port")?;
    let typ = next("has no 'typ'")?;
    let kind = next("has no candidate type")?;
    let extensions = tokens.next().unwrap_or_default().trim();
    let bad = |problem| FieldError::malformed(FIELD, problem, value.as_bytes());
    if typ != "typ" {
        return Err(bad("has no 'typ'"));
    }
    Ok(Candidate {
        foundation,
        component: component
            .parse()
            .map_err(|_| bad("component is not a number"))?,
        transport,
        priority: priority
            .parse()
            .map_err(|_| bad("priority is not a number"))?,
        address,
        port: port.parse().map_err(|_| bad("port is not 0-65535"))?,
        kind,
        extensions,
    })
}

/// The attribute names that belong to ICE (RFC 8839 §5), removed together.
pub const ICE_ATTRIBUTES: [&str; 9] = [
    "candidate",
    "remote-candidates",
    "end-of-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
];

/// `a=setup` (RFC 4145 §4): which side opens the DTLS/TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `active`.
    Active,
    /// `passive`.
    Passive,
    /// `actpass`.
    ActPass,
    /// `holdconn`.
    HoldConn,
}

pub(crate) fn parse_setup(value: &[u8]) -> Result<Setup, FieldError> {
    match value.trim_ascii() {
        b"active" => Ok(Setup::Active),
        b"passive" => Ok(Setup::Passive),
        b"actpass" => Ok(Setup::ActPass),
        b"holdconn" => Ok(Setup::HoldConn),
        other => Err(FieldError::malformed(
            "a=setup",
            "is not a known role",
            other,
        )),
    }
}

/// `a=fingerprint:<hash function> <fingerprint>` (RFC 8122 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint<'a> {
    /// e.g. `sha-256`.
    pub hash_function: &'a str,
    /// Colon-separated hex bytes.
    pub value: &'a str,
}

pub(crate) fn parse_fingerprint(value: &[u8]) -> Result<Fingerprint<'_>, FieldError> {
    const FIELD: &str = "a=fingerprint";
    let value = text(FIELD, value)?.trim();
    let (hash_function, fingerprint) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| FieldError::malformed(FIELD, "has no fingerprint", value.as_bytes()))?;
    Ok(Fingerprint {
        hash_function,
        value: fingerprint.trim(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_key_with_lifetime_and_mki() {
        let c = parse_crypto(b"1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:4 UNENCRYPTED_SRTCP")
            .unwrap();
        assert_eq!((c.tag, c.suite), (1, "AES_CM_128_HMAC_SHA1_80"));
        assert_eq!(c.session_params, "UNENCRYPTED_SRTCP");
        let keys: Vec<_> = c.keys().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            keys,
            vec![KeyParam {
                method: "inline",
                key_salt: "KEY",
                lifetime: Some("2^20"),
                mki: Some("1:4")
            }]
        );
        assert!(parse_crypto(b"x AES inline:K").is_err());
        assert!(parse_crypto(b"1 AES").is_err());
    }

    #[test]
    fn rtpmap_shapes() {
        let r = parse_rtpmap(b"111 opus/48000/2").unwrap();
        assert_eq!(
            (r.payload_type, r.encoding, r.clock_rate, r.parameters),
            (111, "opus", 48000, Some("2"))
        );
        assert!(parse_rtpmap(b"128 x/8000").is_err());
        assert!(parse_rtpmap(b"0 PCMU").is_err());
    }

    #[test]
    fn attribute_split() {
        let a = Attribute::split(b"rtpmap:0 PCMU/8000");
        assert_eq!(
            (a.name, a.value),
            (&b"rtpmap"[..], Some(&b"0 PCMU/8000"[..]))
        );
        let a = Attribute::split(b"sendonly");
        assert_eq!((a.name, a.value), (&b"sendonly"[..], None));
    }
}
