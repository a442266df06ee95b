//! The edit list: changes recorded over the original message and applied in one pass.
//!
//! Every edit is a byte range of the original buffer to replace (empty for an insertion, empty
//! replacement for a deletion). [`Editor::finish`] sorts them and copies original slices and
//! inserted bytes into one buffer of the exact final size, so an unedited message comes out
//! byte for byte as it came in — name case, compact forms, folding and header order included —
//! and an edited one differs only where it was edited.
//!
//! Inserted header lines use the long header name and `": "`. Overlapping edits: a
//! replacement of the same range replaces the earlier one; otherwise the edit that starts
//! first wins and an edit inside a range already removed is dropped.

use crate::error::{BuildError, ParseError};
use crate::header::{HeaderName, Span};
use crate::message::{Message, StartLine};
use bytes::Bytes;
use smallvec::SmallVec;

/// One recorded change.
#[derive(Debug, Clone, Copy)]
struct Edit {
    /// Original range replaced (empty = insertion at `span.start`).
    span: Span,
    /// Order among edits at the same offset: lower goes first.
    order: i32,
    /// The replacement bytes in the arena.
    data: Span,
    /// The replacement is the new body rather than arena bytes.
    is_body: bool,
}

/// An edit list over a [`Message`]; create it with [`Message::edit`].
#[derive(Debug)]
pub struct Editor<'m> {
    msg: &'m Message,
    edits: SmallVec<[Edit; 8]>,
    /// Inserted bytes, inline so that a proxy's usual edits do not allocate.
    arena: SmallVec<[u8; 256]>,
    seq: i32,
    via_pops: usize,
    route_pops: usize,
    body: Option<Bytes>,
}

impl<'m> Editor<'m> {
    pub(crate) fn new(msg: &'m Message) -> Editor<'m> {
        Editor {
            msg,
            edits: SmallVec::new(),
            arena: SmallVec::new(),
            seq: 0,
            via_pops: 0,
            route_pops: 0,
            body: None,
        }
    }

    /// Adds a Via line above the topmost Via (a second push goes above the first).
    /// `value` is the Via value, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK…`.
    pub fn push_via(&mut self, value: &[u8]) -> Result<&mut Self, BuildError> {
        let at = self.first_line_of(HeaderName::Via);
        self.insert_line(at, HeaderName::Via, value, true)?;
        Ok(self)
    }

    /// Removes the topmost Via value (the first element of the first Via header); repeated
    /// calls remove the next ones. A header line left with no values is removed.
    pub fn pop_via(&mut self) -> &mut Self {
        self.via_pops += 1;
        self
    }

    /// Removes the topmost Route value, like [`Editor::pop_via`].
    pub fn pop_route(&mut self) -> &mut Self {
        self.route_pops += 1;
        self
    }

    /// Adds a Record-Route line above the first Record-Route (or after the last Via if there
    /// is none). `value` is e.g. `<sip:192.0.2.1;lr>`.
    pub fn prepend_record_route(&mut self, value: &[u8]) -> Result<&mut Self, BuildError> {
        let at = match self.msg.header(HeaderName::RecordRoute) {
            Some(_) => self.first_line_of(HeaderName::RecordRoute),
            None => self.after_last_via(),
        };
        self.insert_line(at, HeaderName::RecordRoute, value, true)?;
        Ok(self)
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, uri: &[u8]) -> Result<&mut Self, BuildError> {
        let StartLine::Request { uri: span, .. } = self.msg.start else {
            return Err(BuildError::NotARequest);
        };
        if uri.is_empty() || uri.iter().any(|&b| b <= b' ') {
            return Err(BuildError::ControlCharacter("Request-URI"));
        }
        self.replace(span, uri);
        Ok(self)
    }

    /// Sets Max-Forwards, adding the header after the last Via if it is absent.
    pub fn set_max_forwards(&mut self, n: u32) -> &mut Self {
        let mut num = [0u8; 10];
        let digits = format_u32(n, &mut num);
        match self.msg.header(HeaderName::MaxForwards) {
            Some(h) => {
                let span = self.msg.headers[h.index()].value;
                self.replace(span, digits);
            }
            None => {
                let at = self.after_last_via();
                // Digits never hold control characters.
                let _ = self.insert_line(at, HeaderName::MaxForwards, digits, false);
            }
        }
        self
    }

    /// Replaces the number of the (first) CSeq, keeping the method and spacing.
    pub fn set_cseq_number(&mut self, n: u32) -> Result<&mut Self, BuildError> {
        let h = self
            .msg
            .header(HeaderName::CSeq)
            .ok_or(BuildError::Missing("CSeq"))?;
        let v = self.msg.headers[h.index()].value;
        let digits_len = h.value().iter().take_while(|b| b.is_ascii_digit()).count();
        if digits_len == 0 {
            return Err(BuildError::Request(ParseError::bad(
                HeaderName::CSeq,
                "no number to replace",
            )));
        }
        let mut num = [0u8; 10];
        let digits = format_u32(n, &mut num);
        self.replace(
            Span::new(v.start as usize, v.start as usize + digits_len),
            digits,
        );
        Ok(self)
    }

    /// Replaces the whole value of the header at `index` (its position in
    /// [`Message::headers`]); the name and the text up to the value are kept.
    pub fn set_header_value(
        &mut self,
        index: usize,
        value: &[u8],
    ) -> Result<&mut Self, BuildError> {
        check_value(value)?;
        let e = self
            .msg
            .headers
            .get(index)
            .ok_or(BuildError::Missing("header at that index"))?;
        let span = e.value;
        self.replace(span, value);
        Ok(self)
    }

    /// Removes the header line at `index` (its position in [`Message::headers`]).
    pub fn remove_header(&mut self, index: usize) -> &mut Self {
        if let Some(e) = self.msg.headers.get(index) {
            let span = e.line;
            self.replace(span, b"");
        }
        self
    }

    /// Removes every header line with this id.
    pub fn remove_headers(&mut self, name: HeaderName) -> &mut Self {
        let spans: SmallVec<[Span; 4]> = self
            .msg
            .headers
            .iter()
            .filter(|e| e.id == name)
            .map(|e| e.line)
            .collect();
        for s in spans {
            self.replace(s, b"");
        }
        self
    }

    /// Appends a header line after the last header (`name: value`).
    pub fn add_header(&mut self, name: &str, value: &[u8]) -> Result<&mut Self, BuildError> {
        if !crate::syntax::is_token(name.as_bytes()) {
            return Err(BuildError::ControlCharacter("header name"));
        }
        check_value(value)?;
        let at = self.msg.head_end as usize;
        let start = self.arena.len();
        self.arena.extend_from_slice(name.as_bytes());
        self.arena.extend_from_slice(b": ");
        self.arena.extend_from_slice(value);
        self.arena.extend_from_slice(b"\r\n");
        self.push(Span::new(at, at), false, Span::new(start, self.arena.len()));
        Ok(self)
    }

    /// Replaces the body; every Content-Length is set to its length (one is added before the
    /// empty line if there is none).
    pub fn set_body(&mut self, body: Bytes) -> &mut Self {
        let mut num = [0u8; 10];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let digits = format_u32(len, &mut num);
        let spans: SmallVec<[Span; 2]> = self
            .msg
            .headers
            .iter()
            .filter(|e| e.id == HeaderName::ContentLength)
            .map(|e| e.value)
            .collect();
        if spans.is_empty() {
            let at = self.msg.head_end as usize;
            let _ = self.insert_line(at, HeaderName::ContentLength, digits, false);
        }
        for s in spans {
            self.replace(s, digits);
        }
        self.body = Some(body);
        self
    }

    /// Serializes the edited message into a new buffer of the exact size.
    pub fn finish(&self) -> Bytes {
        let plan = self.plan();
        let len = self.output_len(&plan);
        let mut out = Vec::with_capacity(len);
        self.write(&plan, &mut out);
        Bytes::from(out)
    }

    /// Serializes the edited message and parses the result.
    pub fn finish_message(&self) -> Result<Message, ParseError> {
        Message::parse(self.finish())
    }

    /// Appends the edited message to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let plan = self.plan();
        out.reserve(self.output_len(&plan));
        self.write(&plan, out);
    }

    fn insert_line(
        &mut self,
        at: usize,
        name: HeaderName,
        value: &[u8],
        prepend: bool,
    ) -> Result<(), BuildError> {
        check_value(value)?;
        let start = self.arena.len();
        self.arena.extend_from_slice(name.as_str().as_bytes());
        self.arena.extend_from_slice(b": ");
        self.arena.extend_from_slice(value);
        self.arena.extend_from_slice(b"\r\n");
        self.push(
            Span::new(at, at),
            prepend,
            Span::new(start, self.arena.len()),
        );
        Ok(())
    }

    fn replace(&mut self, span: Span, data: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(data);
        let d = Span::new(start, self.arena.len());
        if let Some(e) = self
            .edits
            .iter_mut()
            .find(|e| e.span == span && span.start != span.end)
        {
            e.data = d;
            return;
        }
        self.push(span, false, d);
    }

    fn push(&mut self, span: Span, prepend: bool, data: Span) {
        self.seq += 1;
        let order = if prepend { -self.seq } else { self.seq };
        self.edits.push(Edit {
            span,
            order,
            data,
            is_body: false,
        });
    }

    fn first_line_of(&self, name: HeaderName) -> usize {
        self.msg
            .headers
            .iter()
            .find(|e| e.id == name)
            .map_or(self.msg.start_end as usize, |e| e.line.start as usize)
    }

    fn after_last_via(&self) -> usize {
        self.msg
            .headers
            .iter()
            .rev()
            .find(|e| e.id == HeaderName::Via)
            .map_or(self.msg.start_end as usize, |e| e.line.end as usize)
    }

    /// The pops turned into deletions.
    fn pop_spans(&self, name: HeaderName, pops: usize, out: &mut SmallVec<[Span; 4]>) {
        if pops == 0 {
            return;
        }
        let values: SmallVec<[(usize, Span); 8]> = self.msg.value_spans(name).collect();
        let mut i = 0;
        while i < pops.min(values.len()) {
            let (hdr, first) = values[i];
            let mut j = i;
            while j + 1 < pops.min(values.len()) && values[j + 1].0 == hdr {
                j += 1;
            }
            let line_has_more = values.get(j + 1).is_some_and(|(h, _)| *h == hdr);
            if line_has_more {
                let next = values[j + 1].1;
                out.push(Span::new(first.start as usize, next.start as usize));
            } else {
                // `first` is this line's first value (values of one line are consecutive)
                // and its last was popped too: the whole line goes.
                out.push(self.msg.headers[hdr].line);
            }
            i = j + 1;
        }
    }

    /// The edits to apply, sorted, overlaps dropped.
    fn plan(&self) -> SmallVec<[Edit; 12]> {
        let mut all: SmallVec<[Edit; 12]> = self.edits.iter().copied().collect();
        let mut pops: SmallVec<[Span; 4]> = SmallVec::new();
        self.pop_spans(HeaderName::Via, self.via_pops, &mut pops);
        self.pop_spans(HeaderName::Route, self.route_pops, &mut pops);
        for p in pops {
            all.push(Edit {
                span: p,
                order: 0,
                data: Span::default(),
                is_body: false,
            });
        }
        if self.body.is_some() {
            all.push(Edit {
                span: self.msg.body,
                order: i32::MAX,
                data: Span::default(),
                is_body: true,
            });
        }
        all.sort_by_key(|e| (e.span.start, e.span.start != e.span.end, e.order));
        let mut cursor = 0u32;
        all.retain(|e| {
            let keep = e.span.start >= cursor;
            if keep {
                cursor = cursor.max(e.span.end);
            }
            keep
        });
        all
    }

    fn data(&self, e: &Edit) -> &[u8] {
        if e.is_body {
            return self.body.as_deref().unwrap_or_default();
        }
        &self.arena[e.data.range()]
    }

    fn output_len(&self, plan: &[Edit]) -> usize {
        let mut len = self.msg.buf.len();
        for e in plan {
            len = len + self.data(e).len() - (e.span.end - e.span.start) as usize;
        }
        len
    }

    fn write(&self, plan: &[Edit], out: &mut Vec<u8>) {
        let src: &[u8] = &self.msg.buf;
        let mut cursor = 0usize;
        for e in plan {
            out.extend_from_slice(&src[cursor..e.span.start as usize]);
            out.extend_from_slice(self.data(e));
            cursor = e.span.end as usize;
        }
        out.extend_from_slice(&src[cursor..]);
    }
}

/// A header value to insert: no CR, LF or NUL (this layer never generates folding).
fn check_value(v: &[u8]) -> Result<(), BuildError> {
    if memchr::memchr3(b'\r', b'\n', 0, v).is_some() {
        return Err(BuildError::ControlCharacter("header value"));
    }
    Ok(())
}

/// Decimal digits of `n` without allocating (by hand: `write!` costs more than the rest of a
/// Max-Forwards edit).
fn format_u32(mut n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}
