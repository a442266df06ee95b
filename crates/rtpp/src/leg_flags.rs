//! The per-leg flag letters of OpenSIPS' `rtpproxy_offer`/`rtpproxy_answer` and `$rtp_relay`
//! (`"co"`, `"az20"`, `"l192.0.2.1"`), split into what goes to the node as command modifiers
//! and what the controller (the proxy) does to the SDP itself.
//!
//! | letter | meaning | where |
//! | --- | --- | --- |
//! | `a` | the party does not do symmetric RTP | modifier `A` |
//! | `w` | force symmetric RTP (RTPProxy's default) | modifier `S` |
//! | `i`, `e` | this side is on the internal / external interface (bridging) | modifiers `I`, `E` |
//! | `z<ms>` | re-packetise to this packetisation time | modifier `Z<ms>` |
//! | `l<ip>`, `l[<ipv6>]` | allocate on this local address | modifier `L<ip>` |
//! | `l` alone | force lookup: an offer only updates an existing session (`L`, never `U`) | command |
//! | `r` | trust the SDP's address (the proxy always does) | accepted |
//! | `s` | swap create/confirm (the proxy knows offer from answer by SIP) | accepted |
//! | `c` | also rewrite the session-level `c=` when media sections have their own | SDP |
//! | `o` | also put the relay's address in `o=` | SDP |
//!
//! Any other letter is an error naming it: a flag is never dropped silently.

use crate::modifier::{take_address, take_ptime, Modifier, Modifiers, PTIME_EXPECTED};

/// The meaning of one leg's flag letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegFlags {
    /// Modifiers for the node's `U`/`L` commands.
    pub modifiers: Modifiers,
    /// `l` alone: an offer only looks up an existing session.
    pub force_lookup: bool,
    /// `c`: rewrite the session-level `c=` too.
    pub session_connection: bool,
    /// `o`: put the relay's address in `o=`.
    pub origin: bool,
}

/// A flag string that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegFlagError {
    /// A letter with no meaning for an RTPProxy leg.
    #[error("unknown RTPProxy flag {0:?}")]
    Unknown(char),
    /// A letter whose argument is wrong.
    #[error("RTPProxy flag {letter:?}: {reason}")]
    BadArgument {
        /// The letter.
        letter: char,
        /// What is wrong.
        reason: &'static str,
    },
}

impl LegFlags {
    /// Reads a flag string (letters are case-insensitive; spaces are ignored).
    pub fn parse(text: &str) -> Result<LegFlags, LegFlagError> {
        let mut out = LegFlags::default();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            match c.to_ascii_lowercase() {
                ' ' | '\t' | 'r' | 's' => {}
                'a' => out.modifiers.0.push(Modifier::Asymmetric),
                'w' => out.modifiers.0.push(Modifier::Symmetric),
                'i' => out.modifiers.0.push(Modifier::Internal),
                'e' => out.modifiers.0.push(Modifier::External),
                'c' => out.session_connection = true,
                'o' => out.origin = true,
                'z' => {
                    let (ms, after) = take_ptime(rest).ok_or(LegFlagError::BadArgument {
                        letter: c,
                        reason: PTIME_EXPECTED,
                    })?;
                    rest = after;
                    out.modifiers.0.push(Modifier::Ptime(ms));
                }
                'l' => match take_address(rest) {
                    Some((ip, after)) => {
                        rest = after;
                        out.modifiers.0.push(Modifier::LocalAddress(ip));
                    }
                    None if rest.starts_with(|ch: char| ch.is_ascii_digit() || ch == '[') => {
                        return Err(LegFlagError::BadArgument {
                            letter: c,
                            reason: "expected an IPv4 address or a bracketed IPv6 address",
                        });
                    }
                    None => out.force_lookup = true,
                },
                other => return Err(LegFlagError::Unknown(other)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_modifiers_and_sdp_flags_are_told_apart() {
        let f = LegFlags::parse("coaz20l192.0.2.1e").unwrap();
        assert!(f.session_connection && f.origin && !f.force_lookup);
        assert_eq!(
            f.modifiers.0,
            vec![
                Modifier::Asymmetric,
                Modifier::Ptime(20),
                Modifier::LocalAddress("192.0.2.1".parse().unwrap()),
                Modifier::External,
            ]
        );
        assert_eq!(f.modifiers.to_string(), "AZ20L192.0.2.1E");
        let f = LegFlags::parse("rswil[2001:db8::1]").unwrap();
        assert_eq!(f.modifiers.0.len(), 3);
        assert!(LegFlags::parse("l").unwrap().force_lookup);
        assert_eq!(LegFlags::parse("").unwrap(), LegFlags::default());
    }

    #[test]
    fn unknown_letters_and_bad_arguments_are_errors() {
        assert_eq!(LegFlags::parse("cq"), Err(LegFlagError::Unknown('q')));
        assert!(matches!(
            LegFlags::parse("z"),
            Err(LegFlagError::BadArgument { letter: 'z', .. })
        ));
        assert!(matches!(
            LegFlags::parse("l1.2.3"),
            Err(LegFlagError::BadArgument { letter: 'l', .. })
        ));
        assert_eq!(
            LegFlags::parse("x").unwrap_err().to_string(),
            "unknown RTPProxy flag 'x'"
        );
    }
}
