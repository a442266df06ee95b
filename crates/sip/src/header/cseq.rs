//! The CSeq header, [RFC 3261 §20.16](https://www.rfc-editor.org/rfc/rfc3261#section-20.16):
//! `CSeq = 1*DIGIT LWS Method`, the number below 2**31 (§8.1.1.5).

use super::HeaderName;
use crate::error::ParseError;
use crate::method::Method;
use crate::syntax::{is_lws, parse_u64, trim};

/// A parsed CSeq value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses a CSeq value.
    pub fn parse(v: &'a [u8]) -> Result<CSeq<'a>, ParseError> {
        let bad = |what: &str| ParseError::bad(HeaderName::CSeq, what);
        let v = trim(v);
        let sp = v
            .iter()
            .position(|&b| is_lws(b))
            .ok_or_else(|| bad("no method after the number"))?;
        let seq = parse_u64(&v[..sp], 10)
            .filter(|n| *n < 1 << 31)
            .ok_or_else(|| bad("sequence number is not a number below 2**31"))?;
        let method = Method::parse(trim(&v[sp..])).ok_or_else(|| bad("method is not a token"))?;
        Ok(CSeq {
            seq: seq as u32,
            method,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq_parses_number_and_method() {
        assert_eq!(
            CSeq::parse(b"  4711 \r\n INVITE ").unwrap(),
            CSeq {
                seq: 4711,
                method: Method::Invite
            }
        );
        assert_eq!(CSeq::parse(b"1 FOO").unwrap().method, Method::Other("FOO"));
        for (v, what) in [
            (&b"INVITE"[..], "no method after the number"),
            (b"-1 INVITE", "sequence number is not a number below 2**31"),
            (
                b"2147483648 INVITE",
                "sequence number is not a number below 2**31",
            ),
            (b"1 INV ITE", "method is not a token"),
        ] {
            assert_eq!(
                CSeq::parse(v).unwrap_err().to_string(),
                format!("bad CSeq header: {what}")
            );
        }
    }
}
