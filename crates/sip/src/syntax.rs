//! Character classes and small grammar helpers from RFC 3261 §25.1.
//!
//! Written by hand rather than with a parser-combinator crate: each helper is a few lines over
//! byte slices, allocates nothing and keeps the offsets the edit list needs.

use std::ops::Range;

/// `token` characters: alphanum and `-.!%*_+\`'~`.
pub(crate) fn is_token_char(b: u8) -> bool {
    TOKEN[b as usize]
}

/// Lookup table for [`is_token_char`]: one load per byte on the header-name hot path.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// Whether `s` is a non-empty `token`.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Linear white space inside a header value: SP, HTAB, and the CR LF of a folded line.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `s` without leading and trailing LWS.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let r = trim_range(s);
    &s[r]
}

/// The range of `s` left after trimming LWS on both sides.
pub(crate) fn trim_range(s: &[u8]) -> Range<usize> {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    start..end
}

/// Character class of a URI part: the characters allowed besides `unreserved` and escapes.
#[derive(Clone, Copy)]
pub(crate) struct UriClass(u8);

impl UriClass {
    /// `user`: `& = + $ , ; ? /`.
    pub(crate) const USER: UriClass = UriClass(2);
    /// `password`: `& = + $ ,`.
    pub(crate) const PASSWORD: UriClass = UriClass(4);
    /// `uri-parameter` with its `=`: `[ ] / : & + $ =`.
    pub(crate) const PARAM: UriClass = UriClass(8);
    /// `headers` with `=` and `&`: `[ ] / ? : + $ = &`.
    pub(crate) const HEADER: UriClass = UriClass(16);
}

/// One bit per class and bit 0 for `unreserved`, so each byte costs one load.
static URI_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut bits = 0;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            bits |= 1;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            bits |= 2;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            bits |= 4;
        }
        if matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b'=') {
            bits |= 8;
        }
        if matches!(
            b,
            b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        ) {
            bits |= 16;
        }
        t[i] = bits;
        i += 1;
    }
    t
};

/// Whether every byte of `s` is unreserved, allowed by `class`, or part of a valid `%HH`.
pub(crate) fn is_escaped_run(s: &[u8], class: UriClass) -> bool {
    let allowed = 1 | class.0;
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if URI_CLASS[b as usize] & allowed != 0 {
            i += 1;
        } else if b == b'%' {
            match (s.get(i + 1), s.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else {
            return false;
        }
    }
    true
}

/// The index just past the closing quote of a quoted string that opens at `s[0]`, honouring
/// `\` escapes; `None` if it never closes.
pub(crate) fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Iterator over the comma-separated elements of a header value, as trimmed ranges into it.
/// Commas inside quoted strings and `<...>` do not split. Empty elements are yielded (as
/// empty ranges) so a validator can reject them.
pub(crate) struct CommaSplit<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> CommaSplit<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        CommaSplit {
            s,
            pos: 0,
            done: false,
        }
    }
}

impl Iterator for CommaSplit<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        let mut i = start;
        let mut in_angle = false;
        // Jump from one byte that matters to the next: a comma (outside `<>`), a quote, an
        // angle bracket.
        while i < s.len() {
            let rest = &s[i..];
            let hit = if in_angle {
                memchr::memchr2(b'>', b'"', rest)
            } else {
                memchr::memchr3(b',', b'"', b'<', rest)
            };
            let Some(off) = hit else {
                i = s.len();
                break;
            };
            i += off;
            match s[i] {
                b'"' => match quoted_end(&s[i..]) {
                    Some(n) => i += n,
                    None => i = s.len(),
                },
                b'<' => {
                    in_angle = true;
                    i += 1;
                }
                b'>' => {
                    in_angle = false;
                    i += 1;
                }
                _ => break,
            }
        }
        let end = i.min(s.len());
        if i >= s.len() {
            self.done = true;
        } else {
            self.pos = i + 1;
        }
        let r = trim_range(&s[start..end]);
        Some(start + r.start..start + r.end)
    }
}

/// Splits `s` at the first `;` outside a quoted string: (before, from the `;` on).
pub(crate) fn split_params(s: &[u8]) -> (&[u8], &[u8]) {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' => match quoted_end(&s[i..]) {
                Some(n) => i += n,
                None => return (s, &[]),
            },
            b';' => return (&s[..i], &s[i..]),
            _ => i += 1,
        }
    }
    (s, &[])
}

/// Parses an unsigned decimal with no sign and at most `max_digits` digits after trimming LWS.
pub(crate) fn parse_u64(s: &[u8], max_digits: usize) -> Option<u64> {
    let s = trim(s);
    if s.is_empty() || s.len() > max_digits || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        s.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

/// `s` as text, if it is UTF-8. Callers pass bytes whose grammar they checked (tokens, hosts,
/// digits), which are ASCII; one validation pass, no second ASCII scan.
pub(crate) fn text(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(s).ok()
}

/// Decodes `%HH` escapes; bytes that are not a valid escape are kept as they are.
pub fn unescape(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|&c| hex(c)),
                s.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &[u8]) -> Vec<&[u8]> {
        CommaSplit::new(s).map(|r| &s[r]).collect()
    }

    #[test]
    fn comma_split_respects_quotes_and_angles() {
        let v = b"\"a, b\" <sip:x@h;p=1,2>;q=1 , <sip:y@h>,sip:z@h";
        assert_eq!(
            parts(v),
            vec![
                &b"\"a, b\" <sip:x@h;p=1,2>;q=1"[..],
                &b"<sip:y@h>"[..],
                &b"sip:z@h"[..]
            ]
        );
        assert_eq!(parts(b"a,,b"), vec![&b"a"[..], &b""[..], &b"b"[..]]);
        assert_eq!(parts(b"\"unterminated, x"), vec![&b"\"unterminated, x"[..]]);
    }

    #[test]
    fn unescape_decodes_valid_escapes_only() {
        assert_eq!(&*unescape(b"a%20b%zz%4"), b"a b%zz%4");
        assert_eq!(&*unescape(b"plain"), b"plain");
    }

    #[test]
    fn parse_u64_rejects_signs_and_overlong() {
        assert_eq!(parse_u64(b" 42 ", 10), Some(42));
        assert_eq!(parse_u64(b"-1", 10), None);
        assert_eq!(parse_u64(b"12345678901", 10), None);
        assert_eq!(parse_u64(b"", 10), None);
    }
}
