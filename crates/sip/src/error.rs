//! Typed errors of the SIP layer.
//!
//! Every variant names what is wrong, so that a proxy can put [`ParseError::reason`] in the
//! reason phrase of a `400` (or `505`) response and a log line says the same thing.

use crate::header::HeaderName;

/// Why a SIP message could not be parsed or failed [`crate::Message::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The datagram or frame held no bytes (or only CRLFs).
    #[error("empty message")]
    Empty,
    /// The message is larger than this layer indexes (4 GiB).
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("bad start line: {0}")]
    StartLine(&'static str),
    /// The SIP version is not `SIP/2.0` (a proxy answers `505 Version Not Supported`).
    #[error("unsupported SIP version {0}")]
    UnsupportedVersion(String),
    /// A line ends with a bare LF, or the message holds a NUL or bare CR in its head.
    #[error("bad line ending in line {line}")]
    LineEnding {
        /// 1-based line number.
        line: usize,
    },
    /// A header line has no colon or an empty or non-token name.
    #[error("malformed header line {line}: {what}")]
    HeaderLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The empty line that ends the headers is missing.
    #[error("missing empty line after the headers")]
    NoHeaderEnd,
    /// A mandatory header is absent.
    #[error("missing {0}")]
    MissingHeader(HeaderName),
    /// A header that must appear once appears more than once.
    #[error("more than one {0} header")]
    DuplicateHeader(HeaderName),
    /// A header's value does not follow its grammar.
    #[error("bad {name} header: {what}")]
    BadHeader {
        /// Which header.
        name: HeaderName,
        /// What is wrong with its value.
        what: String,
    },
    /// The Request-URI does not parse.
    #[error("bad Request-URI: {0}")]
    BadRequestUri(UriError),
    /// The CSeq method differs from the request method.
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMethodMismatch {
        /// Method named in CSeq.
        cseq: String,
        /// Method of the Request-Line.
        method: String,
    },
    /// Content-Length declares more bytes than the datagram carries after the headers.
    #[error("Content-Length {declared} exceeds datagram body of {available} bytes")]
    ContentLengthExceedsBody {
        /// The declared Content-Length.
        declared: usize,
        /// The bytes present after the empty line.
        available: usize,
    },
}

impl ParseError {
    /// The error as one line of printable ASCII (no CR/LF, at most 120 characters), fit for
    /// the reason phrase of a `400 <reason>` response.
    pub fn reason(&self) -> String {
        sanitize_reason(&self.to_string())
    }

    /// The status a proxy answers a request with this error with: `505` for an unsupported
    /// SIP version, `400` otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::UnsupportedVersion(_) => 505,
            _ => 400,
        }
    }

    pub(crate) fn bad(name: HeaderName, what: impl Into<String>) -> ParseError {
        ParseError::BadHeader {
            name,
            what: what.into(),
        }
    }
}

/// Why a URI does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` prefix.
    #[error("no scheme")]
    NoScheme,
    /// The URI is empty or holds whitespace.
    #[error("empty or contains whitespace")]
    Whitespace,
    /// The host part is missing or malformed.
    #[error("bad host")]
    Host,
    /// The port is not a number from 0 to 65535.
    #[error("bad port")]
    Port,
    /// The user part has a character that must be escaped, or a bad escape.
    #[error("bad user part")]
    User,
    /// The password has a character that must be escaped, or a bad escape.
    #[error("bad password")]
    Password,
    /// A `;param` is malformed.
    #[error("bad URI parameter")]
    Param,
    /// The `?headers` part is malformed.
    #[error("bad URI headers")]
    Headers,
    /// A tel: URI's number is empty or holds a character outside RFC 3966's set.
    #[error("bad telephone number")]
    TelNumber,
}

/// Why the TCP stream framer gave up; the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A message on a stream has no Content-Length (RFC 3261 §18.3 makes it mandatory).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not a decimal number, or two Content-Length headers disagree.
    #[error("bad Content-Length on a stream transport")]
    BadContentLength,
    /// The headers grew past the framer's limit without an empty line.
    #[error("headers longer than {0} bytes")]
    HeadersTooLarge(usize),
    /// Content-Length is larger than the framer's limit.
    #[error("Content-Length {declared} exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The declared Content-Length.
        declared: usize,
        /// The framer's limit.
        limit: usize,
    },
}

/// Why a [`crate::build`] builder could not produce a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A value or name given to the builder contains CR, LF or NUL (header injection).
    #[error("{0} contains CR, LF or NUL")]
    ControlCharacter(&'static str),
    /// A mandatory part was not given.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A status code outside 100..=699.
    #[error("status code {0} outside 100..=699")]
    Status(u16),
    /// The request a response is built for is missing a header a response copies.
    #[error("cannot answer: {0}")]
    Request(ParseError),
    /// The edit applies to requests only (e.g. a Request-URI rewrite on a response).
    #[error("not a request")]
    NotARequest,
    /// The built message did not parse back (a value broke the grammar).
    #[error("built message does not parse: {0}")]
    Parse(ParseError),
}

/// Printable ASCII, one line, at most 120 characters.
pub(crate) fn sanitize_reason(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(120));
    for c in s.chars().take(120) {
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.push('?');
        }
    }
    out
}

/// Lossy, bounded text of bytes taken from the network for an error message.
pub(crate) fn lossy(b: &[u8]) -> String {
    let cut = &b[..b.len().min(64)];
    sanitize_reason(&String::from_utf8_lossy(cut))
}
