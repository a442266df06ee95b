//! [`Session`]: a whole SDP as ordered raw lines, grouped into the session level and the media
//! sections, serializing byte for byte as it was parsed unless edited.

use std::net::IpAddr;

use bytes::Bytes;

use crate::attribute::Direction;
use crate::error::{shown, FieldError, ParseError};
use crate::fields::{connection_text, parse_origin, parse_timing, Connection, Origin, Timing};
use crate::line::{check_value, kind_of, text, End, Line, LineEnding};
use crate::media::{MLineError, MediaSection};
use crate::section::Section;

/// A parsed SDP.
///
/// Parsing is lenient the way a relay must be (RFC 8866 §5 line order is not enforced, unknown
/// line types such as `y=` are kept, CRLF and LF endings, trailing whitespace and a missing final
/// newline are accepted) and strict only about what makes the input not SDP at all.
#[derive(Debug, Clone)]
pub struct Session {
    session: Section,
    media: Vec<MediaSection>,
    eol: LineEnding,
}

impl Session {
    /// Parses an SDP body without copying it.
    pub fn parse(input: Bytes) -> Result<Self, ParseError> {
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        // The style of the first terminated line is the style of lines we add.
        let eol = match memchr::memchr(b'\n', &input) {
            Some(i) if i > 0 && input.get(i - 1) == Some(&b'\r') => LineEnding::CrLf,
            Some(_) => LineEnding::Lf,
            None => LineEnding::CrLf,
        };
        let mut session = Section::new(eol);
        session.lines.reserve(8);
        let mut media: Vec<MediaSection> = Vec::new();
        let mut pos = 0;
        let mut number = 0;
        while pos < input.len() {
            number += 1;
            let rest = input.get(pos..).unwrap_or_default();
            let (text_end, end, next) = match memchr::memchr(b'\n', rest) {
                Some(i) if i > 0 && rest.get(i - 1) == Some(&b'\r') => {
                    (pos + i - 1, End::CrLf, pos + i + 1)
                }
                Some(i) => (pos + i, End::Lf, pos + i + 1),
                None => (input.len(), End::None, input.len()),
            };
            let text = input.slice(pos..text_end);
            pos = next;
            let kind = kind_of(&text).ok_or_else(|| ParseError::NotATypedLine {
                line: number,
                found: shown(&text),
            })?;
            let line = Line { text, end, kind };
            if kind == b'm' {
                let section = MediaSection::start(line, eol).map_err(|e| match e {
                    MLineError::NotText => ParseError::MediaNotText { line: number },
                    MLineError::NoPort => ParseError::MediaWithoutPort { line: number },
                    MLineError::BadPort(found) => ParseError::MediaBadPort {
                        line: number,
                        found,
                    },
                    MLineError::NoProto => ParseError::MediaWithoutProto { line: number },
                })?;
                media.push(section);
            } else {
                match media.last_mut() {
                    Some(section) => section.lines.push(line),
                    None => session.lines.push(line),
                }
            }
        }
        if session.of_kind(b'v').next().is_none() {
            return Err(ParseError::NoVersionLine);
        }
        Ok(Session {
            session,
            media,
            eol,
        })
    }

    /// Parses an SDP body from a slice (copies it once).
    pub fn parse_slice(input: &[u8]) -> Result<Self, ParseError> {
        Self::parse(Bytes::copy_from_slice(input))
    }

    /// Appends the SDP to `out`: the original bytes for every unedited line, the original
    /// line-ending style for edited and added ones.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines = self.all_lines();
        let total = lines.clone().count();
        for (index, line) in lines.enumerate() {
            out.extend_from_slice(&line.text);
            match line.end {
                End::CrLf => out.extend_from_slice(b"\r\n"),
                End::Lf => out.push(b'\n'),
                // A line that was last in the input but is no longer last after an edit.
                End::None if index + 1 < total => out.extend_from_slice(self.eol.as_bytes()),
                End::None => {}
            }
        }
    }

    /// The SDP as bytes (see [`Session::write_to`]).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.all_lines().map(|l| l.text.len() + 2).sum());
        self.write_to(&mut out);
        Bytes::from(out)
    }

    /// The line-ending style of the input (of its first terminated line), used for new lines.
    pub fn line_ending(&self) -> LineEnding {
        self.eol
    }

    /// The session level: every line before the first `m=`.
    pub fn session_level(&self) -> &Section {
        &self.session
    }

    /// The session level, for editing (`c=`, attributes, direction, ...).
    pub fn session_level_mut(&mut self) -> &mut Section {
        &mut self.session
    }

    /// The media sections in order (their index is the RFC 3264 m-line index).
    pub fn media(&self) -> &[MediaSection] {
        &self.media
    }

    /// The media sections, for editing.
    pub fn media_mut(&mut self) -> &mut [MediaSection] {
        &mut self.media
    }

    // ---- session-level views -----------------------------------------------------------------

    /// `v=`, the protocol version (0).
    pub fn version(&self) -> Result<u32, FieldError> {
        let value = self.session_value(b'v', "v=")?;
        let value = text("v=", value)?;
        value
            .parse()
            .map_err(|_| FieldError::malformed("v=", "is not a number", value.as_bytes()))
    }

    /// `o=`.
    pub fn origin(&self) -> Result<Origin<'_>, FieldError> {
        parse_origin(self.session_value(b'o', "o=")?)
    }

    /// `s=`, the session name (any bytes; `-` or a space is common).
    pub fn name(&self) -> Result<&[u8], FieldError> {
        self.session_value(b's', "s=")
    }

    /// The first `t=`.
    pub fn timing(&self) -> Result<Timing, FieldError> {
        parse_timing(self.session_value(b't', "t=")?)
    }

    /// The `c=` that applies to media section `index`: its own, else the session-level one.
    /// `Ok(None)` if there is neither (or no such section).
    pub fn effective_connection(&self, index: usize) -> Result<Option<Connection<'_>>, FieldError> {
        let Some(media) = self.media.get(index) else {
            return Ok(None);
        };
        match media.connection()? {
            Some(c) => Ok(Some(c)),
            None => self.session.connection(),
        }
    }

    /// The direction of media section `index`: its own attribute, else the session-level one,
    /// else `sendrecv` (RFC 3264 §5.1). `None` if there is no such section.
    pub fn effective_direction(&self, index: usize) -> Option<Direction> {
        let media = self.media.get(index)?;
        Some(
            media
                .direction()
                .or_else(|| self.session.direction())
                .unwrap_or(Direction::SendRecv),
        )
    }

    // ---- edits -------------------------------------------------------------------------------

    /// Sets the `o=` username, session id and version, keeping its network and address.
    pub fn set_origin(
        &mut self,
        username: &str,
        session_id: &str,
        version: u64,
    ) -> Result<(), FieldError> {
        check_value("o= username", username, true)?;
        check_value("o= session id", session_id, true)?;
        let o = self.origin()?;
        let line = format!(
            "o={username} {session_id} {version} {} {} {}",
            o.network_type, o.address_type, o.address
        );
        self.replace_origin(line);
        Ok(())
    }

    /// Sets only the `o=` version.
    pub fn set_origin_version(&mut self, version: u64) -> Result<(), FieldError> {
        let o = self.origin()?;
        let line = format!(
            "o={} {} {version} {} {} {}",
            o.username, o.session_id, o.network_type, o.address_type, o.address
        );
        self.replace_origin(line);
        Ok(())
    }

    /// Sets the `o=` address (rtpengine's `replace-origin`).
    pub fn set_origin_address(&mut self, ip: IpAddr) -> Result<(), FieldError> {
        let o = self.origin()?;
        let line = format!(
            "o={} {} {} {}",
            o.username,
            o.session_id,
            o.session_version,
            connection_text(ip)
        );
        self.replace_origin(line);
        Ok(())
    }

    /// Removes every ICE attribute at the session level and in every media section; returns
    /// how many lines went.
    pub fn remove_ice(&mut self) -> usize {
        self.session.remove_ice() + self.media.iter_mut().map(|m| m.remove_ice()).sum::<usize>()
    }

    // ---- internals ---------------------------------------------------------------------------

    fn all_lines(&self) -> impl Iterator<Item = &Line> + Clone + '_ {
        self.session
            .lines
            .iter()
            .chain(self.media.iter().flat_map(|m| m.lines.iter()))
    }

    fn session_value(&self, letter: u8, field: &'static str) -> Result<&[u8], FieldError> {
        self.session
            .values_of(letter)
            .next()
            .ok_or(FieldError::Missing(field))
    }

    fn replace_origin(&mut self, line: String) {
        if let Some(index) = self.session.lines.iter().position(|l| l.kind == b'o') {
            self.session.replace(index, line.into_bytes());
        }
    }
}
