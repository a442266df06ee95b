//! `name-addr / addr-spec` headers: From and To
//! ([RFC 3261 §20.20](https://www.rfc-editor.org/rfc/rfc3261#section-20.20),
//! [§20.39](https://www.rfc-editor.org/rfc/rfc3261#section-20.39)), Contact (§20.10, with `*`),
//! Route and Record-Route (§20.34, §20.30).
//!
//! ```text
//! from-spec  = ( name-addr / addr-spec ) *( SEMI from-param )
//! name-addr  = [ display-name ] LAQUOT addr-spec RAQUOT
//! display-name = *(token LWS) / quoted-string
//! ```
//!
//! In the `addr-spec` form (no angle brackets) everything after the first `;` is a header
//! parameter, not a URI parameter (§20.10).
//!
//! The URI is parsed on access ([`NameAddr::uri`]): a proxy reading a From tag or looking for
//! its own Route entry does not pay for parsing every URI of the message.
//! [`crate::Message::validate`] parses them all.

use super::{gen_value_ok, HeaderName, Params};
use crate::error::ParseError;
use crate::syntax::{is_lws, is_token_char, quoted_end, split_params, text, trim};
use crate::uri::Uri;

/// A name-addr or addr-spec with its header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: a quoted string keeps its quotes; `None` if absent.
    pub display_name: Option<&'a [u8]>,
    /// The URI as written (without `<>`); [`NameAddr::uri`] parses it.
    pub uri_raw: &'a [u8],
    /// The header parameters (`;tag=…`, `;expires=…`, `;q=…`).
    pub params: Params<'a>,
    /// The header this value came from, to name it in errors.
    header: HeaderName,
    /// The `tag` parameter, found while the parameters were checked.
    tag: Option<&'a str>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value of a From, To, Contact, Route or Record-Route header: the display
    /// name, the `<>` and the header parameters. The URI is checked by [`NameAddr::uri`].
    /// `name` names the header in errors.
    pub fn parse(v: &'a [u8], name: HeaderName) -> Result<NameAddr<'a>, ParseError> {
        let bad = |what: &str| ParseError::bad(name, what);
        let v = trim(v);
        if v.is_empty() {
            return Err(bad("empty value"));
        }
        let (display_name, uri_raw, after) = if v[0] == b'"' {
            let end = quoted_end(v).ok_or_else(|| bad("unterminated display name"))?;
            let rest = trim(&v[end..]);
            let (uri, after) = angle(rest).ok_or_else(|| bad("no <URI> after display name"))?;
            (Some(&v[..end]), uri, after)
        } else if let Some(lt) = memchr::memchr(b'<', v) {
            let dn = trim(&v[..lt]);
            if !dn.iter().all(|&b| is_token_char(b) || is_lws(b)) {
                return Err(bad("display name must be tokens or a quoted string"));
            }
            let (uri, after) = angle(&v[lt..]).ok_or_else(|| bad("unterminated <URI>"))?;
            ((!dn.is_empty()).then_some(dn), uri, after)
        } else {
            let (uri, params) = split_params(v);
            let uri = trim(uri);
            (None, uri, params)
        };
        let params = Params::new(after);
        // The first `tag` parameter, as `Params::get` would find it.
        let mut tag = None;
        let mut tag_seen = false;
        params
            .check_with(gen_value_ok, |name, value| {
                if !tag_seen && name.eq_ignore_ascii_case(b"tag") {
                    tag_seen = true;
                    tag = value.and_then(text);
                }
                Ok(())
            })
            .map_err(bad)?;
        Ok(NameAddr {
            display_name,
            uri_raw,
            params,
            header: name,
            tag,
        })
    }

    /// The URI, parsed now (unknown schemes parse as [`Uri::Other`]).
    pub fn uri(&self) -> Result<Uri<'a>, ParseError> {
        Uri::parse(self.uri_raw).map_err(|e| ParseError::bad(self.header, format!("URI: {e}")))
    }

    /// The `tag` parameter (From and To).
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }
}

/// `<uri>` at the start of `s` → (uri, rest after `>`).
fn angle(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = s.strip_prefix(b"<")?;
    let gt = memchr::memchr(b'>', inner)?;
    Some((trim(&inner[..gt]), &inner[gt + 1..]))
}

/// One Contact value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (REGISTER removing all bindings).
    Wildcard,
    /// An address.
    Address(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(v: &'a [u8]) -> Result<Contact<'a>, ParseError> {
        if trim(v) == b"*" {
            Ok(Contact::Wildcard)
        } else {
            NameAddr::parse(v, HeaderName::Contact).map(Contact::Address)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uri::Host;

    #[test]
    fn quoted_display_name_and_tag() {
        let n = NameAddr::parse(
            b"\"Bob \\\"the\\\" <Builder>\" <sip:bob@biloxi.com;transport=tcp> ;tag=a6c85cf",
            HeaderName::To,
        )
        .unwrap();
        assert_eq!(n.display_name, Some(&b"\"Bob \\\"the\\\" <Builder>\""[..]));
        assert_eq!(n.uri_raw, b"sip:bob@biloxi.com;transport=tcp");
        assert_eq!(n.tag(), Some("a6c85cf"));
        assert_eq!(
            n.uri().unwrap().params().get("transport"),
            Some(Some(&b"tcp"[..]))
        );
    }

    #[test]
    fn addr_spec_params_belong_to_the_header() {
        let n = NameAddr::parse(b"sip:alice@atlanta.com;tag=1928301774", HeaderName::From).unwrap();
        assert_eq!(n.display_name, None);
        assert_eq!(n.uri_raw, b"sip:alice@atlanta.com");
        assert_eq!(n.tag(), Some("1928301774"));
        match n.uri().unwrap() {
            Uri::Sip(u) => {
                assert_eq!(u.host, Host::Domain("atlanta.com"));
                assert!(u.params.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_display_name_and_errors() {
        let n = NameAddr::parse(b"Anonymous  Caller <sip:c@192.0.2.3>", HeaderName::From).unwrap();
        assert_eq!(n.display_name, Some(&b"Anonymous  Caller"[..]));
        assert_eq!(
            NameAddr::parse(b"<sip:x@h", HeaderName::To)
                .unwrap_err()
                .to_string(),
            "bad To header: unterminated <URI>"
        );
        assert_eq!(
            NameAddr::parse(b"\"x\" sip:x@h", HeaderName::From)
                .unwrap_err()
                .to_string(),
            "bad From header: no <URI> after display name"
        );
        assert_eq!(
            NameAddr::parse(b"<sip:[::1>", HeaderName::Route)
                .unwrap()
                .uri()
                .unwrap_err()
                .to_string(),
            "bad Route header: URI: bad host"
        );
    }

    #[test]
    fn the_tag_is_the_first_tag_parameter() {
        for (value, tag) in [
            (&b"<sip:a@h>;TAG=x;tag=y"[..], Some("x")),
            (b"<sip:a@h>;tag;tag=y", None),
            (b"<sip:a@h;tag=uri-param>", None),
            (b"sip:a@h;tag=z", Some("z")),
        ] {
            let n = NameAddr::parse(value, HeaderName::To).unwrap();
            assert_eq!(n.tag(), tag, "{}", String::from_utf8_lossy(value));
            assert_eq!(n.tag(), n.params.get("tag").flatten().and_then(text));
        }
    }

    #[test]
    fn contact_wildcard() {
        assert_eq!(Contact::parse(b" * ").unwrap(), Contact::Wildcard);
        assert!(matches!(
            Contact::parse(b"<sip:a@h>;expires=60").unwrap(),
            Contact::Address(_)
        ));
    }
}
