//! Framing SIP messages on a stream transport (TCP), [RFC 3261 §18.3](https://www.rfc-editor.org/rfc/rfc3261#section-18.3):
//! the headers end at the first empty line and Content-Length, mandatory on streams, gives
//! the body's length. CRLFs between messages are skipped; a double CRLF is an RFC 5626 §4.4.1
//! keep-alive ping that the transport answers with a single CRLF pong (see
//! [`StreamFramer::take_pings`]).
//!
//! A missing or bad Content-Length, headers that never end, or a body above the limit is a
//! [`FramingError`]: the connection cannot be resynchronised and must be closed. The framer
//! then keeps returning the same error.

use crate::error::FramingError;
use crate::syntax::{parse_u64, trim};
use bytes::{Buf, Bytes, BytesMut};

/// Default limit on the header section of one message.
pub const DEFAULT_MAX_HEADERS: usize = 64 * 1024;
/// Default limit on the body of one message.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Cuts a byte stream into SIP messages.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_headers: usize,
    max_body: usize,
    pings: usize,
    /// Where to resume looking for the empty line (bytes before it were scanned).
    scanned: usize,
    /// The length of the message at the front once its headers are complete.
    pending_total: Option<usize>,
    failed: Option<FramingError>,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new()
    }
}

impl StreamFramer {
    /// A framer with the default limits (64 KiB of headers, 1 MiB of body).
    pub fn new() -> StreamFramer {
        StreamFramer::with_limits(DEFAULT_MAX_HEADERS, DEFAULT_MAX_BODY)
    }

    /// A framer with these limits in bytes.
    pub fn with_limits(max_headers: usize, max_body: usize) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::new(),
            max_headers,
            max_body,
            pings: 0,
            scanned: 0,
            pending_total: None,
            failed: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffered bytes hold the start of a message that is not complete yet
    /// (keep-alive CRLFs waiting to be told apart do not count). A stream transport puts a
    /// deadline on such a message (slowloris).
    pub fn in_message(&self) -> bool {
        self.failed.is_none() && self.buf.iter().any(|&b| b != b'\r' && b != b'\n')
    }

    /// How many double-CRLF keep-alive pings were seen since the last call; answer each with
    /// `\r\n` (RFC 5626 §4.4.1).
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an error after which
    /// the connection must be closed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.next_inner() {
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf.clear();
                Err(e)
            }
            ok => ok,
        }
    }

    fn next_inner(&mut self) -> Result<Option<Bytes>, FramingError> {
        if let Some(total) = self.pending_total {
            return Ok(self.take(total));
        }
        // Keep-alives: "\r\n\r\n" is a ping, a lone "\r\n" a pong.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.pings += 1;
                self.buf.advance(4);
            } else if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                // Possibly a ping still arriving.
                return Ok(None);
            } else if self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
            } else {
                break;
            }
            self.scanned = 0;
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let from = self.scanned.saturating_sub(3);
        let Some(pos) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n") else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max_headers {
                return Err(FramingError::HeadersTooLarge(self.max_headers));
            }
            return Ok(None);
        };
        let head_end = from + pos + 4;
        if head_end > self.max_headers {
            return Err(FramingError::HeadersTooLarge(self.max_headers));
        }
        let body_len = content_length(&self.buf[..head_end])?;
        if body_len > self.max_body {
            return Err(FramingError::BodyTooLarge {
                declared: body_len,
                limit: self.max_body,
            });
        }
        self.pending_total = Some(head_end + body_len);
        Ok(self.take(head_end + body_len))
    }

    /// The message of `total` bytes at the front, once it is all there.
    fn take(&mut self, total: usize) -> Option<Bytes> {
        if self.buf.len() < total {
            return None;
        }
        self.scanned = 0;
        self.pending_total = None;
        Some(self.buf.split_to(total).freeze())
    }
}

/// The Content-Length of a header section (start line, headers, empty line).
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let mut found: Option<u64> = None;
    // Skip the start line; a Content-Length is never folded in practice, but a folded value
    // is still read in full because continuation lines are joined below.
    let mut lines = head.split(|&b| b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let name = trim(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut value = trim(&line[colon + 1..]);
        // A folded Content-Length: the number continues on the next line only if this one
        // is empty.
        if value.is_empty() {
            if let Some(next) = lines
                .peek()
                .filter(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))
            {
                value = trim(next);
            }
        }
        let n = parse_u64(value, 10).ok_or(FramingError::BadContentLength)?;
        match found {
            Some(prev) if prev != n => return Err(FramingError::BadContentLength),
            _ => found = Some(n),
        }
    }
    let n = found.ok_or(FramingError::MissingContentLength)?;
    usize::try_from(n).map_err(|_| FramingError::BadContentLength)
}
