//! Header names, the header index entries and the generic `;param` list.
//!
//! The typed views of single headers live in the submodules, one per grammar of RFC 3261 §20:
//! [`via`], [`name_addr`] (From, To, Contact, Route, Record-Route), [`cseq`] and
//! [`token_list`] (Require, Proxy-Require, Supported, Allow, Unsupported).

pub mod cseq;
pub mod name_addr;
pub mod token_list;
pub mod via;

use crate::syntax::{quoted_end, trim, CommaSplit};
use std::fmt;

/// The canonical identity of a header name, covering the compact forms of RFC 3261 §7.3.3
/// and the RFCs that add compact forms (`v f t i m l c k s e o r x u b`).
///
/// Names are matched case-insensitively. A name this layer does not know is [`HeaderName::Other`];
/// its spelling is read from the message with [`Header::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// `Via` / `v`.
    Via,
    /// `From` / `f`.
    From,
    /// `To` / `t`.
    To,
    /// `Call-ID` / `i`.
    CallId,
    /// `CSeq`.
    CSeq,
    /// `Max-Forwards`.
    MaxForwards,
    /// `Route`.
    Route,
    /// `Record-Route`.
    RecordRoute,
    /// `Contact` / `m`.
    Contact,
    /// `Content-Length` / `l`.
    ContentLength,
    /// `Content-Type` / `c`.
    ContentType,
    /// `Content-Encoding` / `e`.
    ContentEncoding,
    /// `Supported` / `k`.
    Supported,
    /// `Require`.
    Require,
    /// `Proxy-Require`.
    ProxyRequire,
    /// `Unsupported`.
    Unsupported,
    /// `Allow`.
    Allow,
    /// `Subject` / `s`.
    Subject,
    /// `Event` / `o` (RFC 6665).
    Event,
    /// `Allow-Events` / `u` (RFC 6665).
    AllowEvents,
    /// `Refer-To` / `r` (RFC 3515).
    ReferTo,
    /// `Referred-By` / `b` (RFC 3892).
    ReferredBy,
    /// `Session-Expires` / `x` (RFC 4028).
    SessionExpires,
    /// `Timestamp`.
    Timestamp,
    /// `Expires`.
    Expires,
    /// `Path` (RFC 3327).
    Path,
    /// `Authorization`.
    Authorization,
    /// `Proxy-Authorization`.
    ProxyAuthorization,
    /// `WWW-Authenticate`.
    WwwAuthenticate,
    /// `Proxy-Authenticate`.
    ProxyAuthenticate,
    /// Any other header.
    Other,
}

impl HeaderName {
    /// The id of a header name as written (long or compact form, any case).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'e' => HeaderName::ContentEncoding,
                b'k' => HeaderName::Supported,
                b's' => HeaderName::Subject,
                b'o' => HeaderName::Event,
                b'u' => HeaderName::AllowEvents,
                b'r' => HeaderName::ReferTo,
                b'b' => HeaderName::ReferredBy,
                b'x' => HeaderName::SessionExpires,
                _ => HeaderName::Other,
            };
        }
        // Dispatch on length and first letter so a name costs at most one or two
        // case-insensitive comparisons instead of a walk over the table.
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        let candidate = match (name.len(), first) {
            (3, b'v') => HeaderName::Via,
            (4, b'f') => HeaderName::From,
            (2, b't') => HeaderName::To,
            (7, b'c') if name.get(4) == Some(&b'-') => HeaderName::CallId,
            (7, b'c') => HeaderName::Contact,
            (4, b'c') => HeaderName::CSeq,
            (12, b'm') => HeaderName::MaxForwards,
            (5, b'r') => HeaderName::Route,
            (12, b'r') => HeaderName::RecordRoute,
            (14, b'c') => HeaderName::ContentLength,
            (12, b'c') => HeaderName::ContentType,
            (16, b'c') => HeaderName::ContentEncoding,
            (9, b's') => HeaderName::Supported,
            (7, b'r') => HeaderName::Require,
            (13, b'p') => HeaderName::ProxyRequire,
            (11, b'u') => HeaderName::Unsupported,
            (5, b'a') => HeaderName::Allow,
            (7, b's') => HeaderName::Subject,
            (5, b'e') => HeaderName::Event,
            (12, b'a') => HeaderName::AllowEvents,
            (8, b'r') => HeaderName::ReferTo,
            (11, b'r') => HeaderName::ReferredBy,
            (15, b's') => HeaderName::SessionExpires,
            (9, b't') => HeaderName::Timestamp,
            (7, b'e') => HeaderName::Expires,
            (4, b'p') => HeaderName::Path,
            (13, b'a') => HeaderName::Authorization,
            (19, b'p') => HeaderName::ProxyAuthorization,
            (16, b'w') => HeaderName::WwwAuthenticate,
            (18, b'p') => HeaderName::ProxyAuthenticate,
            _ => return HeaderName::Other,
        };
        if eq_canonical(name, candidate.as_str().as_bytes()) {
            candidate
        } else {
            HeaderName::Other
        }
    }

    /// The canonical long name (`"Call-ID"`), or `"(other)"` for [`HeaderName::Other`].
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::Supported => "Supported",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Subject => "Subject",
            HeaderName::Event => "Event",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::Expires => "Expires",
            HeaderName::Path => "Path",
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::Other => "(other)",
        }
    }

    /// Whether the header's grammar is a comma-separated list, so that one header line may
    /// carry several values (`Via: a, b`). Those headers are addressed value by value.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Contact
                | HeaderName::Supported
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::ContentEncoding
                | HeaderName::Path
        )
    }
}

/// Case-insensitive equality of a header name with a canonical name made of letters and `-`.
/// Written out because it runs once per header line, and compares eight (or four) bytes at a
/// time: a letter matches either case (`b | 0x20` equals the lowercase letter only for that
/// letter's two cases), `-` matches only itself. The tail is compared by an overlapping load.
fn eq_canonical(name: &[u8], canonical: &[u8]) -> bool {
    let n = name.len();
    if n != canonical.len() {
        return false;
    }
    // Letters have bit 0x40 and `-` does not, so `(c & 0x40) >> 1` is the case bit to fold
    // for each byte of the canonical word.
    let same = |a: u64, c: u64| {
        let fold = (c & 0x4040_4040_4040_4040) >> 1;
        a | fold == c | fold
    };
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            if !same(word::<8>(&name[i..]), word::<8>(&canonical[i..])) {
                return false;
            }
            i += 8;
        }
        i == n || same(word::<8>(&name[n - 8..]), word::<8>(&canonical[n - 8..]))
    } else if n >= 4 {
        same(word::<4>(name), word::<4>(canonical))
            && same(word::<4>(&name[n - 4..]), word::<4>(&canonical[n - 4..]))
    } else {
        name.iter()
            .zip(canonical)
            .all(|(&a, &c)| same(u64::from(a), u64::from(c)))
    }
}

/// The first `N` (4 or 8) bytes of `s` as a little-endian number; callers check the length.
fn word<const N: usize>(s: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    if let Some(head) = s.get(..N) {
        w[..N].copy_from_slice(head);
    }
    u64::from_le_bytes(w)
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span `start..end` into the message buffer, as `u32` to keep the index small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        // Message::parse rejects buffers longer than u32::MAX, so these never truncate.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One header line of the index: where its line, name and value are in the buffer. Kept
/// small (20 bytes): the index lives inline in every [`crate::Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderEntry {
    pub(crate) id: HeaderName,
    /// The length of the name as written; the name starts the line.
    pub(crate) name_len: u16,
    /// The whole line(s) including the final CRLF.
    pub(crate) line: Span,
    /// The value, without surrounding LWS, with any folding inside it.
    pub(crate) value: Span,
}

impl HeaderEntry {
    /// The name as written.
    pub(crate) fn name(&self) -> Span {
        Span {
            start: self.line.start,
            end: self.line.start + u32::from(self.name_len),
        }
    }
}

/// A view of one header line: name and value as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    id: HeaderName,
    index: usize,
    name: &'a [u8],
    value: &'a [u8],
    line: &'a [u8],
}

impl<'a> Header<'a> {
    pub(crate) fn new(buf: &'a [u8], e: &HeaderEntry, index: usize) -> Header<'a> {
        Header {
            id: e.id,
            index,
            name: &buf[e.name().range()],
            value: &buf[e.value.range()],
            line: &buf[e.line.range()],
        }
    }

    /// The canonical id of the name.
    pub fn id(&self) -> HeaderName {
        self.id
    }

    /// The position of this header among all headers of the message (0 = first), as used by
    /// [`crate::Editor::set_header_value`] and [`crate::Editor::remove_header`].
    pub fn index(&self) -> usize {
        self.index
    }

    /// The name exactly as written (`v`, `VIA`, `X-Foo`).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The value without surrounding white space; a folded value keeps its CRLF and indent.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The whole header line(s) as written, including the final CRLF.
    pub fn raw_line(&self) -> &'a [u8] {
        self.line
    }

    /// The comma-separated values of this line, respecting quoted strings and `<...>`.
    pub fn values(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let v = self.value;
        CommaSplit::new(v).map(move |r| &v[r])
    }
}

/// A `;name[=value]` parameter list as written, starting at its first `;` (or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a [u8],
}

impl<'a> Params<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> Params<'a> {
        Params { raw }
    }

    /// The parameters as written, starting at the first `;` (empty if there are none).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        trim(self.raw).is_empty()
    }

    /// The parameters in order as `(name, value)`; `value` is `None` for a bare `;lr`.
    /// Names and values are trimmed of LWS; quoted values keep their quotes.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.raw }
    }

    /// The first parameter named `name` (case-insensitive): `Some(None)` for a bare flag,
    /// `Some(Some(v))` for `name=v`, `None` if absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Checks every parameter — `name` a token, value a token, host or quoted string — and
    /// hands each `(name, value)` to `each` in the same pass.
    pub(crate) fn check_with(
        &self,
        value_ok: fn(&[u8]) -> bool,
        mut each: impl FnMut(&'a [u8], Option<&'a [u8]>) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        let mut rest = trim(self.raw);
        while !rest.is_empty() {
            let Some(after) = rest.strip_prefix(b";") else {
                return Err("text after the parameters");
            };
            let (item, next) = next_param(after);
            let item = trim(item);
            let (name, value) = split_eq(item);
            if !crate::syntax::is_token(name) {
                return Err("parameter name is not a token");
            }
            if let Some(v) = value {
                if v.is_empty() || !(v.starts_with(b"\"") || value_ok(v)) {
                    return Err("bad parameter value");
                }
                if v.starts_with(b"\"") && quoted_end(v) != Some(v.len()) {
                    return Err("unterminated quoted parameter value");
                }
            }
            each(name, value)?;
            rest = trim(next);
        }
        Ok(())
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let r = trim(self.rest);
            let after = r.strip_prefix(b";")?;
            let (item, next) = next_param(after);
            self.rest = next;
            let item = trim(item);
            if item.is_empty() {
                continue;
            }
            return Some(split_eq(item));
        }
    }
}

/// Splits at the next `;` outside quotes: (this item, rest starting at that `;`).
fn next_param(s: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => i += quoted_end(&s[i..]).unwrap_or(s.len() - i),
            b';' => return (&s[..i], &s[i..]),
            _ => i += 1,
        }
    }
    (s, &[])
}

/// `name = value` with LWS around `=`.
fn split_eq(item: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b'=', item) {
        Some(p) => (trim(&item[..p]), Some(trim(&item[p + 1..]))),
        None => (item, None),
    }
}

/// A generic-param value: token, or host (which adds `:` `[` `]` for IPv6).
pub(crate) fn gen_value_ok(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| crate::syntax::is_token_char(b) || matches!(b, b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[HeaderName] = &[
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Contact,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::ContentEncoding,
        HeaderName::Supported,
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Unsupported,
        HeaderName::Allow,
        HeaderName::Subject,
        HeaderName::Event,
        HeaderName::AllowEvents,
        HeaderName::ReferTo,
        HeaderName::ReferredBy,
        HeaderName::SessionExpires,
        HeaderName::Timestamp,
        HeaderName::Expires,
        HeaderName::Path,
        HeaderName::Authorization,
        HeaderName::ProxyAuthorization,
        HeaderName::WwwAuthenticate,
        HeaderName::ProxyAuthenticate,
    ];

    #[test]
    fn compact_and_long_names_map_to_one_id() {
        for (n, id) in [
            (&b"v"[..], HeaderName::Via),
            (b"VIA", HeaderName::Via),
            (b"i", HeaderName::CallId),
            (b"call-id", HeaderName::CallId),
            (b"L", HeaderName::ContentLength),
            (b"x", HeaderName::SessionExpires),
            (b"u", HeaderName::AllowEvents),
            (b"max-FORWARDS", HeaderName::MaxForwards),
            (b"X-Custom", HeaderName::Other),
            (b"q", HeaderName::Other),
        ] {
            assert_eq!(
                HeaderName::from_bytes(n),
                id,
                "{}",
                String::from_utf8_lossy(n)
            );
        }
        assert_eq!(HeaderName::CallId.to_string(), "Call-ID");
        for id in ALL {
            let long = id.as_str();
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), *id, "{long}");
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_lowercase().as_bytes()),
                *id
            );
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_uppercase().as_bytes()),
                *id
            );
        }
        assert_eq!(HeaderName::from_bytes(b"Contacts"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call_ID"), HeaderName::Other);
    }

    #[test]
    fn a_name_matches_only_with_each_letter_in_either_case() {
        for id in ALL {
            let canonical = id.as_str().as_bytes();
            for pos in 0..canonical.len() {
                for b in 0..=255u8 {
                    let mut name = canonical.to_vec();
                    name[pos] = b;
                    let c = canonical[pos];
                    let should = if c == b'-' {
                        b == b'-'
                    } else {
                        b.eq_ignore_ascii_case(&c)
                    };
                    assert_eq!(
                        eq_canonical(&name, canonical),
                        should,
                        "{} with {b:#x} at {pos}",
                        id.as_str()
                    );
                }
            }
        }
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Max\rForwards"), HeaderName::Other);
    }

    #[test]
    fn params_iterate_and_lookup_case_insensitively() {
        let p = Params::new(b" ; branch = z9hG4bK1 ;lr; x=\"a;b\" ;RPORT");
        let all: Vec<_> = p.iter().collect();
        assert_eq!(
            all,
            vec![
                (&b"branch"[..], Some(&b"z9hG4bK1"[..])),
                (&b"lr"[..], None),
                (&b"x"[..], Some(&b"\"a;b\""[..])),
                (&b"RPORT"[..], None),
            ]
        );
        assert_eq!(p.get("rport"), Some(None));
        assert_eq!(p.get("Branch"), Some(Some(&b"z9hG4bK1"[..])));
        assert_eq!(p.get("maddr"), None);
        let check = |p: Params<'_>| p.check_with(gen_value_ok, |_, _| Ok(()));
        assert!(check(p).is_ok());
        assert!(check(Params::new(b";a b=c")).is_err());
        assert!(check(Params::new(b";a=\"open")).is_err());
    }
}
