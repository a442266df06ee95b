//! The SIP message model: one buffer, the spans of its start line and headers, and typed
//! views parsed on access ([RFC 3261 §7](https://www.rfc-editor.org/rfc/rfc3261#section-7)).
//!
//! ```text
//! generic-message = start-line *message-header CRLF [ message-body ]
//! start-line      = Request-Line / Status-Line
//! Request-Line    = Method SP Request-URI SP SIP-Version CRLF
//! Status-Line     = SIP-Version SP Status-Code SP Reason-Phrase CRLF
//! ```
//!
//! Two levels of checking:
//!
//! * [`Message::parse`] is cheap: start line, an index of header spans (one `memchr` per
//!   line, no allocation per header), Content-Length against the body;
//! * [`Message::validate`] checks what a proxy relies on (mandatory headers, CSeq, the typed
//!   parses of From, To, Via, Route, Record-Route, Contact, the Request-URI, the version).
//!
//! A request that fails either may still carry enough to be answered: see
//! [`Message::parse_lenient`] and [`Message::answerable`].

use crate::edit::Editor;
use crate::error::{lossy, ParseError};
use crate::header::cseq::CSeq;
use crate::header::name_addr::{Contact, NameAddr};
use crate::header::via::Via;
use crate::header::{token_list, Header, HeaderEntry, HeaderName, Span};
use crate::method::Method;
use crate::syntax::{is_token, text, trim, CommaSplit};
use crate::uri::Uri;
use bytes::Bytes;
use smallvec::SmallVec;

/// Header lines indexed inline before the index spills to the heap; a typical INVITE has 10–16.
const INLINE_HEADERS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartLine {
    Request {
        method: Span,
        uri: Span,
        version: Span,
    },
    Response {
        version: Span,
        status: u16,
        reason: Span,
    },
}

/// A parsed SIP request or response over the bytes it came in.
#[derive(Debug, Clone)]
pub struct Message {
    pub(crate) buf: Bytes,
    pub(crate) start: StartLine,
    /// End of the start line including its CRLF: where the first header line starts.
    pub(crate) start_end: u32,
    pub(crate) headers: SmallVec<[HeaderEntry; INLINE_HEADERS]>,
    /// Start of the empty line that ends the headers.
    pub(crate) head_end: u32,
    pub(crate) body: Span,
    pub(crate) content_length: Option<u32>,
}

impl Message {
    /// Parses one message: a UDP datagram or a TCP frame from [`crate::StreamFramer`].
    ///
    /// CRLFs before the start line are skipped. Without a Content-Length the body is the rest
    /// of the input (allowed on UDP, RFC 3261 §18.3); with one, bytes past the declared body
    /// are discarded, and a Content-Length larger than the bytes present is an error.
    pub fn parse(bytes: Bytes) -> Result<Message, ParseError> {
        parse(bytes, false)
    }

    /// Like [`Message::parse`] but a missing, bad or too large Content-Length does not fail:
    /// the body is whatever follows the headers, clipped to the declared length. Use it after
    /// `parse` failed, to see whether the request can still be answered with `400`.
    pub fn parse_lenient(bytes: Bytes) -> Result<Message, ParseError> {
        parse(bytes, true)
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; `None` for a response.
    pub fn method(&self) -> Option<Method<'_>> {
        match self.start {
            // The start-line parser checked the method is a token.
            StartLine::Request { method, .. } => Method::parse(self.slice(method)),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code; `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase as written; `None` for a request.
    pub fn reason_phrase(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(self.slice(reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// The SIP version as written (`SIP/2.0`).
    pub fn version(&self) -> &[u8] {
        match self.start {
            StartLine::Request { version, .. } | StartLine::Response { version, .. } => {
                self.slice(version)
            }
        }
    }

    /// The Request-URI as written; `None` for a response.
    pub fn request_uri_raw(&self) -> Option<&[u8]> {
        match self.start {
            StartLine::Request { uri, .. } => Some(self.slice(uri)),
            StartLine::Response { .. } => None,
        }
    }

    /// The parsed Request-URI. Unknown schemes parse as [`Uri::Other`].
    pub fn request_uri(&self) -> Result<Uri<'_>, ParseError> {
        let raw = self
            .request_uri_raw()
            .ok_or(ParseError::StartLine("a response has no Request-URI"))?;
        Uri::parse(raw).map_err(ParseError::BadRequestUri)
    }

    /// The Call-ID (first Call-ID header), trimmed.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let v = trim(self.first_value(HeaderName::CallId)?);
        // Two counting passes: both vectorize, unlike one loop with two conditions.
        let not_graphic = v.iter().filter(|b| !b.is_ascii_graphic()).count();
        let at_count = v.iter().filter(|&&b| b == b'@').count();
        if v.is_empty() || at_count > 1 || not_graphic > 0 {
            return Err(ParseError::bad(
                HeaderName::CallId,
                "not word[@word] without white space",
            ));
        }
        text(v).ok_or_else(|| ParseError::bad(HeaderName::CallId, "not ASCII"))
    }

    /// The CSeq (first CSeq header).
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        CSeq::parse(self.first_value(HeaderName::CSeq)?)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.first_value(HeaderName::From)?, HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.first_value(HeaderName::To)?, HeaderName::To)
    }

    /// Every Via value, top first, across repeated headers and comma lists.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Via).map(Via::parse)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        match self.vias().next() {
            Some(via) => via,
            None => Err(ParseError::MissingHeader(HeaderName::Via)),
        }
    }

    /// Every Route value in order.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Route)
            .map(|v| NameAddr::parse(v, HeaderName::Route))
    }

    /// Every Record-Route value in order.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::RecordRoute)
            .map(|v| NameAddr::parse(v, HeaderName::RecordRoute))
    }

    /// Every Contact value in order (`*` is [`Contact::Wildcard`]).
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> + '_ {
        self.list_values(HeaderName::Contact).map(Contact::parse)
    }

    /// Max-Forwards: `Ok(None)` if absent.
    pub fn max_forwards(&self) -> Result<Option<u32>, ParseError> {
        match self.header(HeaderName::MaxForwards) {
            None => Ok(None),
            Some(h) => crate::syntax::parse_u64(h.value(), 10)
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| ParseError::bad(HeaderName::MaxForwards, "not a number")),
        }
    }

    /// The Content-Length as declared, if present (checked against the body by `parse`).
    pub fn content_length(&self) -> Option<usize> {
        self.content_length.map(|n| n as usize)
    }

    /// The Content-Type value, trimmed, if present.
    pub fn content_type(&self) -> Option<&[u8]> {
        self.header(HeaderName::ContentType).map(|h| h.value())
    }

    /// The option tags of Require.
    pub fn require(&self) -> impl Iterator<Item = &str> + '_ {
        self.tokens(HeaderName::Require)
    }

    /// The option tags of Proxy-Require.
    pub fn proxy_require(&self) -> impl Iterator<Item = &str> + '_ {
        self.tokens(HeaderName::ProxyRequire)
    }

    /// The option tags of Supported.
    pub fn supported(&self) -> impl Iterator<Item = &str> + '_ {
        self.tokens(HeaderName::Supported)
    }

    /// The methods listed in Allow.
    pub fn allow(&self) -> impl Iterator<Item = &str> + '_ {
        self.tokens(HeaderName::Allow)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.slice(self.body)
    }

    /// The body as a zero-copy slice of the message buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.buf.slice(self.body.range())
    }

    /// The first header with this id.
    pub fn header(&self, name: HeaderName) -> Option<Header<'_>> {
        self.headers_of(name).next()
    }

    /// Every header with this id, in order.
    pub fn headers_of(&self, name: HeaderName) -> impl Iterator<Item = Header<'_>> + '_ {
        self.headers().filter(move |h| h.id() == name)
    }

    /// Every header whose name equals `name` case-insensitively as written (for headers
    /// without an id; compact forms are not expanded here).
    pub fn headers_named<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = Header<'s>> + 's {
        self.headers()
            .filter(move |h| h.name().eq_ignore_ascii_case(name))
    }

    /// Every header line in order.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = Header<'_>> + '_ {
        self.headers
            .iter()
            .enumerate()
            .map(|(i, e)| Header::new(&self.buf, e, i))
    }

    /// The message exactly as received (minus leading CRLFs and bytes past Content-Length).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The message buffer (a cheap clone).
    pub fn bytes(&self) -> Bytes {
        self.buf.clone()
    }

    /// Starts an edit list over this message; see [`Editor`].
    pub fn edit(&self) -> Editor<'_> {
        Editor::new(self)
    }

    /// Checks what a proxy relies on, reporting the first problem:
    ///
    /// 1. the version is `SIP/2.0` ([`ParseError::UnsupportedVersion`] → `505`);
    /// 2. a response's status is 100–699; a request's Request-URI parses (any scheme);
    /// 3. Call-ID, CSeq, From and To are present exactly once and parse (with their URIs);
    ///    Via at least once
    ///    and every value parses; the CSeq method equals the request method;
    /// 4. Max-Forwards and Content-Type appear at most once, Max-Forwards is a number;
    /// 5. every Route, Record-Route and Contact value parses, URI included (`*` only alone);
    /// 6. Require, Proxy-Require, Supported, Unsupported and Allow are token lists.
    pub fn validate(&self) -> Result<(), ParseError> {
        if !self.version().eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(ParseError::UnsupportedVersion(lossy(self.version())));
        }
        match self.start {
            StartLine::Response { status, .. } => {
                if !(100..=699).contains(&status) {
                    return Err(ParseError::StartLine("status code outside 100-699"));
                }
            }
            StartLine::Request { .. } => {
                self.request_uri()?;
            }
        }
        // How often each header appears, in one pass over the index.
        let mut counts = [0u32; HeaderName::Other as usize + 1];
        for e in &self.headers {
            counts[e.id as usize] += 1;
        }
        let count = |name: HeaderName| counts[name as usize];
        for name in [
            HeaderName::CallId,
            HeaderName::CSeq,
            HeaderName::From,
            HeaderName::To,
        ] {
            match count(name) {
                0 => return Err(ParseError::MissingHeader(name)),
                1 => {}
                _ => return Err(ParseError::DuplicateHeader(name)),
            }
        }
        self.call_id()?;
        let cseq = self.cseq()?;
        self.from()?.uri()?;
        self.to()?.uri()?;
        if let Some(method) = self.method() {
            if cseq.method != method {
                return Err(ParseError::CSeqMethodMismatch {
                    cseq: lossy(cseq.method.as_str().as_bytes()),
                    method: lossy(method.as_str().as_bytes()),
                });
            }
        }
        if count(HeaderName::Via) == 0 {
            return Err(ParseError::MissingHeader(HeaderName::Via));
        }
        for via in self.vias() {
            via?;
        }
        for name in [HeaderName::MaxForwards, HeaderName::ContentType] {
            if count(name) > 1 {
                return Err(ParseError::DuplicateHeader(name));
            }
        }
        self.max_forwards()?;
        for r in self.routes().chain(self.record_routes()) {
            r?.uri()?;
        }
        let mut contacts = 0;
        let mut wildcard = false;
        for c in self.contacts() {
            contacts += 1;
            match c? {
                Contact::Wildcard => wildcard = true,
                Contact::Address(a) => {
                    a.uri()?;
                }
            }
        }
        if wildcard && contacts > 1 {
            return Err(ParseError::bad(
                HeaderName::Contact,
                "* must be the only Contact",
            ));
        }
        for e in &self.headers {
            if matches!(
                e.id,
                HeaderName::Require
                    | HeaderName::ProxyRequire
                    | HeaderName::Supported
                    | HeaderName::Unsupported
                    | HeaderName::Allow
            ) {
                token_list::check(&self.buf[e.value.range()], e.id)?;
            }
        }
        Ok(())
    }

    /// Whether this is a request with enough to be answered (RFC 3261 §8.2.6 copies them into
    /// the response): the top Via, From, To, Call-ID and CSeq parse. If not, a proxy drops it.
    pub fn answerable(&self) -> bool {
        self.is_request()
            && self.top_via().is_ok()
            && self.from().is_ok()
            && self.to().is_ok()
            && self.call_id().is_ok()
            && self.cseq().is_ok()
    }

    pub(crate) fn slice(&self, s: Span) -> &[u8] {
        &self.buf[s.range()]
    }

    fn first_value(&self, name: HeaderName) -> Result<&[u8], ParseError> {
        match self.header(name) {
            Some(h) => Ok(h.value()),
            None => Err(ParseError::MissingHeader(name)),
        }
    }

    fn tokens(&self, name: HeaderName) -> impl Iterator<Item = &str> + '_ {
        self.headers_of(name)
            .flat_map(|h| token_list::tokens(h.value()))
    }

    /// Each comma-separated value of every header with this id: (header position, absolute
    /// span of the value).
    pub(crate) fn value_spans(&self, name: HeaderName) -> impl Iterator<Item = (usize, Span)> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, e)| e.id == name)
            .flat_map(move |(i, e)| {
                let base = e.value.start as usize;
                CommaSplit::new(&self.buf[e.value.range()])
                    .map(move |r| (i, Span::new(base + r.start, base + r.end)))
            })
    }

    fn list_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.value_spans(name).map(|(_, s)| self.slice(s))
    }
}

/// Parses the start line, indexes the headers and locates the body.
fn parse(bytes: Bytes, lenient: bool) -> Result<Message, ParseError> {
    let mut skip = 0;
    while bytes.get(skip..skip + 2) == Some(b"\r\n") {
        skip += 2;
    }
    let buf = if skip > 0 { bytes.slice(skip..) } else { bytes };
    if buf.is_empty() {
        return Err(ParseError::Empty);
    }
    if u32::try_from(buf.len()).is_err() {
        return Err(ParseError::TooLarge(buf.len()));
    }
    let b: &[u8] = &buf;
    let lf = ByteFinder::new(b'\n');
    let colon = ByteFinder::new(b':');
    let Some(nl) = lf.find(b) else {
        return Err(ParseError::NoHeaderEnd);
    };
    if nl == 0 || b[nl - 1] != b'\r' {
        return Err(ParseError::LineEnding { line: 1 });
    }
    let start = parse_start_line(&b[..nl - 1])?;
    let start_end = nl + 1;

    let mut headers: SmallVec<[HeaderEntry; INLINE_HEADERS]> = SmallVec::new();
    let mut pos = start_end;
    let mut line_no = 1;
    let body_start = loop {
        line_no += 1;
        // `let else` rather than `ok_or`: building an unused error on every line costs a
        // drop of the enum each time.
        let Some(nl) = lf.find(&b[pos..]).map(|n| pos + n) else {
            return Err(ParseError::NoHeaderEnd);
        };
        if nl == pos || b[nl - 1] != b'\r' {
            return Err(ParseError::LineEnding { line: line_no });
        }
        let line_end = nl - 1;
        if line_end == pos {
            break nl + 1;
        }
        let line = &b[pos..line_end];
        if line[0] == b' ' || line[0] == b'\t' {
            let Some(prev) = headers.last_mut() else {
                return Err(ParseError::HeaderLine {
                    line: line_no,
                    what: "continuation line before the first header",
                });
            };
            let r = crate::syntax::trim_range(line);
            if !r.is_empty() {
                if prev.value.start == prev.value.end {
                    prev.value.start = (pos + r.start) as u32;
                }
                prev.value.end = (pos + r.end) as u32;
            }
            prev.line.end = (nl + 1) as u32;
        } else {
            let Some(colon) = colon.find(line) else {
                return Err(ParseError::HeaderLine {
                    line: line_no,
                    what: "no colon",
                });
            };
            let name_end = line[..colon]
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |p| p + 1);
            let name = &line[..name_end];
            let Ok(name_len) = u16::try_from(name_end) else {
                return Err(ParseError::HeaderLine {
                    line: line_no,
                    what: "header name longer than 65535 bytes",
                });
            };
            let id = HeaderName::from_bytes(name);
            // A known name is a token already; only unknown ones need the byte check.
            if id == HeaderName::Other && !is_token(name) {
                return Err(ParseError::HeaderLine {
                    line: line_no,
                    what: "header name is not a token",
                });
            }
            let vr = crate::syntax::trim_range(&line[colon + 1..]);
            let vstart = pos + colon + 1 + vr.start;
            let vend = pos + colon + 1 + vr.end;
            headers.push(HeaderEntry {
                id,
                name_len,
                line: Span::new(pos, nl + 1),
                value: Span::new(vstart, vend),
            });
        }
        pos = nl + 1;
    };
    let head_end = body_start - 2;

    let available = b.len() - body_start;
    let mut declared: Option<usize> = None;
    for e in headers.iter().filter(|e| e.id == HeaderName::ContentLength) {
        let v = &b[e.value.range()];
        let n = crate::syntax::parse_u64(v, 10).and_then(|n| u32::try_from(n).ok());
        match (n, declared) {
            (None, _) if !lenient => {
                return Err(ParseError::bad(
                    HeaderName::ContentLength,
                    format!("{} is not a number", lossy(v)),
                ))
            }
            (Some(n), Some(d)) if n as usize != d && !lenient => {
                return Err(ParseError::DuplicateHeader(HeaderName::ContentLength))
            }
            (Some(n), None) => declared = Some(n as usize),
            _ => {}
        }
    }
    let body_len = match declared {
        Some(d) if d > available => {
            if !lenient {
                return Err(ParseError::ContentLengthExceedsBody {
                    declared: d,
                    available,
                });
            }
            available
        }
        Some(d) => d,
        None => available,
    };
    let end = body_start + body_len;
    let buf = if end < buf.len() {
        buf.slice(..end)
    } else {
        buf
    };
    Ok(Message {
        buf,
        start,
        start_end: start_end as u32,
        headers,
        head_end: head_end as u32,
        body: Span::new(body_start, end),
        content_length: declared.map(|d| d as u32),
    })
}

/// Finds one byte. The index looks for a line feed and a colon on every header line, in
/// lines of a few dozen bytes, where the call and dispatch of [`memchr::memchr`] cost more than
/// the search: on x86-64 the SSE2 searcher (always present there) is used directly, so it
/// inlines; elsewhere `memchr` as usual.
#[derive(Clone, Copy)]
struct ByteFinder {
    byte: u8,
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::One>,
}

impl ByteFinder {
    fn new(byte: u8) -> ByteFinder {
        ByteFinder {
            byte,
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::One::new(byte),
        }
    }

    #[inline]
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(one) = &self.sse2 {
            return one.find(haystack);
        }
        memchr::memchr(self.byte, haystack)
    }
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    // A method is a token and cannot hold '/', so "SIP/" starts only a Status-Line.
    let is_response = line.len() > 4 && line[..4].eq_ignore_ascii_case(b"SIP/");
    if is_response {
        let sp = memchr::memchr(b' ', line)
            .ok_or(ParseError::StartLine("Status-Line has no status code"))?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        let code = rest.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit));
        let code = code.ok_or(ParseError::StartLine("status code is not three digits"))?;
        let status = code.iter().fold(0u16, |a, &d| a * 10 + u16::from(d - b'0'));
        let reason_start = match rest.get(3) {
            None => sp + 4,
            Some(b' ') => sp + 5,
            Some(_) => return Err(ParseError::StartLine("status code is not three digits")),
        };
        if line[reason_start.min(line.len())..]
            .iter()
            .any(|&b| b < 0x20 && b != b'\t')
        {
            return Err(ParseError::StartLine("control character in reason phrase"));
        }
        return Ok(StartLine::Response {
            version: Span::new(0, sp),
            status,
            reason: Span::new(reason_start.min(line.len()), line.len()),
        });
    }
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::StartLine(
        "Request-Line is not Method SP Request-URI SP SIP-Version",
    ))?;
    let sp2 = memchr::memrchr(b' ', line).unwrap_or(sp1);
    if sp2 == sp1 {
        return Err(ParseError::StartLine(
            "Request-Line is not Method SP Request-URI SP SIP-Version",
        ));
    }
    if !is_token(&line[..sp1]) {
        return Err(ParseError::StartLine("method is not a token"));
    }
    let uri = &line[sp1 + 1..sp2];
    if uri.is_empty() || uri.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::StartLine("Request-URI contains white space"));
    }
    check_version(&line[sp2 + 1..])?;
    Ok(StartLine::Request {
        method: Span::new(0, sp1),
        uri: Span::new(sp1 + 1, sp2),
        version: Span::new(sp2 + 1, line.len()),
    })
}

/// `SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT` ("SIP" case-insensitive).
fn check_version(v: &[u8]) -> Result<(), ParseError> {
    let ok = v.len() > 4 && v[..4].eq_ignore_ascii_case(b"SIP/") && {
        let num = &v[4..];
        match memchr::memchr(b'.', num) {
            Some(dot) => {
                dot > 0
                    && dot + 1 < num.len()
                    && num[..dot].iter().all(u8::is_ascii_digit)
                    && num[dot + 1..].iter().all(u8::is_ascii_digit)
            }
            None => false,
        }
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::StartLine("version is not SIP/x.y"))
    }
}
