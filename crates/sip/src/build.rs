//! Building new messages: responses to a request
//! ([RFC 3261 §8.2.6](https://www.rfc-editor.org/rfc/rfc3261#section-8.2.6)) and requests from
//! parts (in-dialog requests, §12.2.1.1). Both produce a [`Message`] by parsing and
//! validating what they wrote, so a built message goes through the same model as a
//! received one.

use crate::error::{BuildError, ParseError};
use crate::header::HeaderName;
use crate::message::Message;
use crate::method::Method;
use bytes::Bytes;

/// Builds a response to a request: the status line, then all Via lines, From, To (with a tag
/// added if one is given and the To has none), Call-ID and CSeq copied as they were written,
/// Timestamp for a `100` (§8.2.6.1), extra headers, Content-Length and the body.
#[derive(Debug)]
pub struct ResponseBuilder<'r> {
    req: &'r Message,
    status: u16,
    reason: &'r str,
    to_tag: Option<&'r str>,
    extra: Vec<u8>,
    body: Option<(&'r str, &'r [u8])>,
    err: Option<BuildError>,
}

impl<'r> ResponseBuilder<'r> {
    /// Starts a response with this status and reason phrase to `req`.
    pub fn new(req: &'r Message, status: u16, reason: &'r str) -> ResponseBuilder<'r> {
        let mut b = ResponseBuilder {
            req,
            status,
            reason,
            to_tag: None,
            extra: Vec::new(),
            body: None,
            err: None,
        };
        if !(100..=699).contains(&status) {
            b.err = Some(BuildError::Status(status));
        } else if has_ctl(reason.as_bytes()) {
            b.err = Some(BuildError::ControlCharacter("reason phrase"));
        }
        b
    }

    /// Adds `;tag=<tag>` to To if the request's To has no tag.
    pub fn to_tag(mut self, tag: &'r str) -> Self {
        if !crate::syntax::is_token(tag.as_bytes()) {
            self.fail(BuildError::ControlCharacter("To tag"));
        }
        self.to_tag = Some(tag);
        self
    }

    /// Adds a header line `name: value` after the copied headers.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Err(e) = push_header(&mut self.extra, name, value) {
            self.fail(e);
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &'r str, body: &'r [u8]) -> Self {
        if has_ctl(content_type.as_bytes()) {
            self.fail(BuildError::ControlCharacter("Content-Type"));
        }
        self.body = Some((content_type, body));
        self
    }

    /// Writes, parses and validates the response.
    pub fn build(self) -> Result<Message, BuildError> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let req = self.req;
        if !req.is_request() {
            return Err(BuildError::NotARequest);
        }
        let mut out = Vec::with_capacity(req.as_bytes().len() / 2 + 128);
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        let mut vias = 0;
        for h in req.headers_of(HeaderName::Via) {
            out.extend_from_slice(h.raw_line());
            vias += 1;
        }
        if vias == 0 {
            return Err(BuildError::Request(ParseError::MissingHeader(
                HeaderName::Via,
            )));
        }
        for name in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            let h = req
                .header(name)
                .ok_or(BuildError::Request(ParseError::MissingHeader(name)))?;
            let line = h.raw_line();
            match self.to_tag {
                Some(tag) if name == HeaderName::To => {
                    let to = req.to().map_err(BuildError::Request)?;
                    if to.tag().is_some() {
                        out.extend_from_slice(line);
                    } else {
                        // Insert the tag right after the value, before the line's CRLF and
                        // any trailing white space.
                        let line_start = req.headers[h.index()].line.start as usize;
                        let value_end = req.headers[h.index()].value.end as usize - line_start;
                        let (head, tail) = line.split_at(value_end.min(line.len()));
                        out.extend_from_slice(head);
                        out.extend_from_slice(b";tag=");
                        out.extend_from_slice(tag.as_bytes());
                        out.extend_from_slice(tail);
                    }
                }
                _ => out.extend_from_slice(line),
            }
        }
        if self.status == 100 {
            for h in req.headers_of(HeaderName::Timestamp) {
                out.extend_from_slice(h.raw_line());
            }
        }
        out.extend_from_slice(&self.extra);
        finish_body(&mut out, self.body);
        let msg = Message::parse(Bytes::from(out)).map_err(BuildError::Parse)?;
        msg.validate().map_err(BuildError::Parse)?;
        Ok(msg)
    }

    fn fail(&mut self, e: BuildError) {
        self.err.get_or_insert(e);
    }
}

/// Builds a request from its parts, e.g. an in-dialog re-INVITE or BYE.
///
/// Output order: Request-Line, Via (in the order given), Max-Forwards (70 unless set),
/// Route (in order), From, To, Call-ID, CSeq (number and the request method), Contact, extra
/// headers, Content-Type, Content-Length, body.
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    method: Method<'a>,
    uri: &'a str,
    vias: Vec<&'a str>,
    routes: Vec<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<u32>,
    contact: Option<&'a str>,
    max_forwards: u32,
    extra: Vec<u8>,
    body: Option<(&'a str, &'a [u8])>,
    err: Option<BuildError>,
}

impl<'a> RequestBuilder<'a> {
    /// Starts a request with this method and Request-URI.
    pub fn new(method: Method<'a>, request_uri: &'a str) -> RequestBuilder<'a> {
        RequestBuilder {
            method,
            uri: request_uri,
            vias: Vec::new(),
            routes: Vec::new(),
            from: None,
            to: None,
            call_id: None,
            cseq: None,
            contact: None,
            max_forwards: 70,
            extra: Vec::new(),
            body: None,
            err: None,
        }
    }

    /// Adds a Via value (call again for more; the first is the top).
    pub fn via(mut self, value: &'a str) -> Self {
        self.vias.push(value);
        self
    }

    /// Adds a Route value (call again for more, in order).
    pub fn route(mut self, value: &'a str) -> Self {
        self.routes.push(value);
        self
    }

    /// Sets the route set at once.
    pub fn routes(mut self, values: impl IntoIterator<Item = &'a str>) -> Self {
        self.routes.extend(values);
        self
    }

    /// Sets the From value (with its tag).
    pub fn from(mut self, value: &'a str) -> Self {
        self.from = Some(value);
        self
    }

    /// Sets the To value.
    pub fn to(mut self, value: &'a str) -> Self {
        self.to = Some(value);
        self
    }

    /// Sets the Call-ID.
    pub fn call_id(mut self, value: &'a str) -> Self {
        self.call_id = Some(value);
        self
    }

    /// Sets the CSeq number (the method is the request's).
    pub fn cseq(mut self, seq: u32) -> Self {
        self.cseq = Some(seq);
        self
    }

    /// Sets the Contact value.
    pub fn contact(mut self, value: &'a str) -> Self {
        self.contact = Some(value);
        self
    }

    /// Sets Max-Forwards (default 70).
    pub fn max_forwards(mut self, n: u32) -> Self {
        self.max_forwards = n;
        self
    }

    /// Adds a header line `name: value` after Contact.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Err(e) = push_header(&mut self.extra, name, value) {
            self.err.get_or_insert(e);
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(mut self, content_type: &'a str, body: &'a [u8]) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Writes, parses and validates the request.
    pub fn build(self) -> Result<Message, BuildError> {
        if let Some(e) = self.err {
            return Err(e);
        }
        if self.vias.is_empty() {
            return Err(BuildError::Missing("Via"));
        }
        let from = self.from.ok_or(BuildError::Missing("From"))?;
        let to = self.to.ok_or(BuildError::Missing("To"))?;
        let call_id = self.call_id.ok_or(BuildError::Missing("Call-ID"))?;
        let cseq = self.cseq.ok_or(BuildError::Missing("CSeq"))?;
        if self.uri.is_empty() || self.uri.bytes().any(|b| b <= b' ') {
            return Err(BuildError::ControlCharacter("Request-URI"));
        }
        let method = self.method.as_str();
        let mut out = Vec::with_capacity(512 + self.body.map_or(0, |(_, b)| b.len()));
        out.extend_from_slice(format!("{method} {} SIP/2.0\r\n", self.uri).as_bytes());
        for v in &self.vias {
            push_header(&mut out, "Via", v)?;
        }
        push_header(&mut out, "Max-Forwards", &self.max_forwards.to_string())?;
        for r in &self.routes {
            push_header(&mut out, "Route", r)?;
        }
        push_header(&mut out, "From", from)?;
        push_header(&mut out, "To", to)?;
        push_header(&mut out, "Call-ID", call_id)?;
        push_header(&mut out, "CSeq", &format!("{cseq} {method}"))?;
        if let Some(c) = self.contact {
            push_header(&mut out, "Contact", c)?;
        }
        out.extend_from_slice(&self.extra);
        finish_body(&mut out, self.body);
        let msg = Message::parse(Bytes::from(out)).map_err(BuildError::Parse)?;
        msg.validate().map_err(BuildError::Parse)?;
        Ok(msg)
    }
}

fn has_ctl(v: &[u8]) -> bool {
    v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) -> Result<(), BuildError> {
    if !crate::syntax::is_token(name.as_bytes()) {
        return Err(BuildError::ControlCharacter("header name"));
    }
    if has_ctl(value.as_bytes()) {
        return Err(BuildError::ControlCharacter("header value"));
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

fn finish_body(out: &mut Vec<u8>, body: Option<(&str, &[u8])>) {
    match body {
        Some((ct, b)) => {
            out.extend_from_slice(
                format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n", b.len()).as_bytes(),
            );
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
    }
}

impl Message {
    /// Starts a response to this request (RFC 3261 §8.2.6); see [`ResponseBuilder`].
    pub fn response<'r>(&'r self, status: u16, reason: &'r str) -> ResponseBuilder<'r> {
        ResponseBuilder::new(self, status, reason)
    }

    /// The CANCEL of this INVITE (RFC 3261 §9.1): the same Request-URI, top Via, From, To,
    /// Call-ID, CSeq number and Route set, method CANCEL, Max-Forwards 70.
    pub fn cancel(&self) -> Result<Message, BuildError> {
        self.invite_follow_up(Method::Cancel, None, None)
    }

    /// The ACK of a final `response` to this INVITE: its Request-URI, From, Call-ID, CSeq
    /// number and Route set, with the response's To (the callee's tag). For a non-2xx
    /// response (`via` `None`, RFC 3261 §17.1.1.3) the ACK belongs to the INVITE's transaction
    /// and carries its top Via; for a 2xx (RFC 3261 §13.2.2.4) it is a transaction of its own
    /// and `via` is its new top Via.
    pub fn ack(&self, response: &Message, via: Option<&str>) -> Result<Message, BuildError> {
        self.invite_follow_up(Method::Ack, Some(response), via)
    }

    /// The one builder of the requests RFC 3261 derives from an INVITE: [`Message::cancel`]
    /// and [`Message::ack`].
    fn invite_follow_up(
        &self,
        method: Method<'_>,
        response: Option<&Message>,
        via: Option<&str>,
    ) -> Result<Message, BuildError> {
        fn text<'m>(value: &'m [u8], what: &'static str) -> Result<&'m str, BuildError> {
            std::str::from_utf8(value).map_err(|_| BuildError::Missing(what))
        }
        let uri = text(
            self.request_uri_raw().ok_or(BuildError::NotARequest)?,
            "Request-URI",
        )?;
        let top_via = match via {
            Some(via) => via,
            None => text(
                self.header(HeaderName::Via)
                    .and_then(|h| h.values().next())
                    .ok_or(BuildError::Missing("Via"))?,
                "Via",
            )?,
        };
        fn value<'m>(
            m: &'m Message,
            name: HeaderName,
            what: &'static str,
        ) -> Result<&'m str, BuildError> {
            text(
                m.header(name).ok_or(BuildError::Missing(what))?.value(),
                what,
            )
        }
        let from = value(self, HeaderName::From, "From")?;
        let to = value(response.unwrap_or(self), HeaderName::To, "To")?;
        let call_id = self.call_id().map_err(BuildError::Request)?;
        let seq = self.cseq().map_err(BuildError::Request)?.seq;
        let routes: Vec<&str> = self
            .headers_of(HeaderName::Route)
            .filter_map(|h| std::str::from_utf8(h.value()).ok())
            .collect();
        RequestBuilder::new(method, uri)
            .via(top_via)
            .from(from)
            .to(to)
            .call_id(call_id)
            .cseq(seq)
            .routes(routes)
            .max_forwards(70)
            .build()
    }
}
