//! [`Section`]: the ordered lines of the session level or of one media section, with the views
//! and edits both levels share (`c=`, `b=`, attributes, direction, ICE, RTCP, crypto).

use std::net::IpAddr;

use crate::attribute::{
    parse_candidate, parse_crypto, parse_fingerprint, parse_fmtp, parse_rtcp, parse_rtpmap,
    parse_setup, Attribute, Candidate, Crypto, Direction, Fingerprint, Fmtp, Rtcp, Rtpmap, Setup,
    ICE_ATTRIBUTES,
};
use crate::error::FieldError;
use crate::fields::{connection_text, parse_bandwidth, parse_connection, Bandwidth, Connection};
use crate::line::{check_value, text, End, Line, LineEnding, BLANK};

/// The lines of one level of an SDP, in their original order.
///
/// Edits touch only the lines they are about; every other line keeps its exact bytes.
#[derive(Debug, Clone)]
pub struct Section {
    pub(crate) lines: Vec<Line>,
    pub(crate) eol: LineEnding,
}

impl Section {
    pub(crate) fn new(eol: LineEnding) -> Self {
        Section {
            lines: Vec::new(),
            eol,
        }
    }

    /// Each line's text without its terminator, in order (blank lines included).
    pub fn raw_lines(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.lines.iter().map(|line| &line.text[..])
    }

    /// The values of the lines of type `letter` (e.g. `b'i'`), trailing whitespace removed.
    pub fn values_of(&self, letter: u8) -> impl Iterator<Item = &[u8]> + '_ {
        self.of_kind(letter).map(Line::value)
    }

    // ---- c= and b= ---------------------------------------------------------------------------

    /// The first `c=` line of this level, if any.
    pub fn connection(&self) -> Result<Option<Connection<'_>>, FieldError> {
        self.of_kind(b'c')
            .next()
            .map(|line| parse_connection("c=", text("c=", line.value())?))
            .transpose()
    }

    /// Replaces the `c=` line(s) of this level by `c=IN IP4|IP6 <ip>` (`0.0.0.0` puts the stream
    /// on hold the RFC 2543 way), adding one in RFC 8866 order if there was none.
    pub fn set_connection(&mut self, ip: IpAddr) {
        let new = format!("c={}", connection_text(ip)).into_bytes();
        if self.lines.iter().any(|l| l.kind == b'c') {
            self.set_line(new, |l| l.kind == b'c');
        } else {
            // Session level: after v= o= s= i= u= e= p=; media level: after m= i=.
            let at = self
                .lines
                .iter()
                .rposition(|l| b"vosiuepm".contains(&l.kind))
                .map_or(0, |i| i + 1);
            self.insert(at, new);
        }
    }

    /// Removes every `c=` line of this level; returns how many.
    pub fn remove_connection(&mut self) -> usize {
        self.remove_where(|line| line.kind == b'c')
    }

    /// The `b=` lines of this level.
    pub fn bandwidths(&self) -> impl Iterator<Item = Result<Bandwidth<'_>, FieldError>> + '_ {
        self.values_of(b'b').map(parse_bandwidth)
    }

    // ---- attributes --------------------------------------------------------------------------

    /// All `a=` lines of this level, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> + '_ {
        self.values_of(b'a').map(Attribute::split)
    }

    /// The `a=` lines called `name`, in order.
    pub fn attributes_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = Attribute<'s>> + 's {
        self.attributes().filter(move |a| a.is(name))
    }

    /// The first `a=` line called `name`.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        self.attributes().find(|a| a.is(name))
    }

    /// Whether an `a=` line called `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// Appends `a=<name>[:<value>]` after the last line of this level.
    pub fn add_attribute(&mut self, name: &str, value: Option<&str>) -> Result<(), FieldError> {
        let line = attribute_line(name, value)?;
        let at = self.end_position();
        self.insert(at, line);
        Ok(())
    }

    /// Sets the attribute `name`: the first such line is replaced in place and any others are
    /// removed; if there was none, it is added.
    pub fn set_attribute(&mut self, name: &str, value: Option<&str>) -> Result<(), FieldError> {
        let new = attribute_line(name, value)?;
        self.set_line(new, |l| {
            l.kind == b'a' && Attribute::split(l.value()).is(name)
        });
        Ok(())
    }

    /// Removes every attribute called `name`; returns how many.
    pub fn remove_attribute(&mut self, name: &str) -> usize {
        self.retain_attributes(|a| !a.is(name))
    }

    /// Keeps only the attributes for which `keep` is true; returns how many were removed.
    pub fn retain_attributes(&mut self, mut keep: impl FnMut(&Attribute<'_>) -> bool) -> usize {
        self.remove_where(|line| line.kind == b'a' && !keep(&Attribute::split(line.value())))
    }

    // ---- direction ---------------------------------------------------------------------------

    /// The direction attribute given at this level, if any (the first one, if several).
    pub fn direction(&self) -> Option<Direction> {
        self.attributes().find_map(|a| Direction::from_name(a.name))
    }

    /// Makes `direction` the only direction attribute of this level, in the place of the first
    /// existing one, or appended.
    pub fn set_direction(&mut self, direction: Direction) {
        let line = format!("a={}", direction.as_str()).into_bytes();
        self.set_line(line, |l| {
            l.kind == b'a' && Direction::from_name(Attribute::split(l.value()).name).is_some()
        });
    }

    /// Removes every direction attribute of this level; returns how many.
    pub fn remove_direction(&mut self) -> usize {
        self.retain_attributes(|a| Direction::from_name(a.name).is_none())
    }

    // ---- codecs ------------------------------------------------------------------------------

    /// The `a=rtpmap` lines.
    pub fn rtpmaps(&self) -> impl Iterator<Item = Result<Rtpmap<'_>, FieldError>> + '_ {
        self.attribute_values("rtpmap").map(parse_rtpmap)
    }

    /// The well-formed `a=rtpmap` for `payload_type`, if any.
    pub fn rtpmap(&self, payload_type: u8) -> Option<Rtpmap<'_>> {
        self.rtpmaps()
            .flatten()
            .find(|r| r.payload_type == payload_type)
    }

    /// The `a=fmtp` lines.
    pub fn fmtps(&self) -> impl Iterator<Item = Result<Fmtp<'_>, FieldError>> + '_ {
        self.attribute_values("fmtp").map(parse_fmtp)
    }

    /// The well-formed `a=fmtp` for `format`, if any.
    pub fn fmtp(&self, format: &str) -> Option<Fmtp<'_>> {
        self.fmtps().flatten().find(|f| f.format == format)
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Result<Option<u32>, FieldError> {
        self.number_attribute("ptime", "a=ptime")
    }

    /// `a=maxptime` in milliseconds.
    pub fn maxptime(&self) -> Result<Option<u32>, FieldError> {
        self.number_attribute("maxptime", "a=maxptime")
    }

    // ---- RTCP --------------------------------------------------------------------------------

    /// `a=rtcp` (RFC 3605).
    pub fn rtcp(&self) -> Result<Option<Rtcp<'_>>, FieldError> {
        self.attribute_values("rtcp")
            .next()
            .map(parse_rtcp)
            .transpose()
    }

    /// Sets `a=rtcp:<port>` or, with an address, `a=rtcp:<port> IN IP4|IP6 <address>`.
    pub fn set_rtcp(&mut self, port: u16, address: Option<IpAddr>) {
        let value = match address {
            Some(ip) => format!("{port} {}", connection_text(ip)),
            None => port.to_string(),
        };
        // Only our own well-formed text goes in, so this cannot fail.
        let _ = self.set_attribute("rtcp", Some(&value));
    }

    /// Whether `a=rtcp-mux` (RFC 5761) is present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }

    // ---- security ----------------------------------------------------------------------------

    /// The `a=crypto` lines (SDES, RFC 4568), in order.
    pub fn cryptos(&self) -> impl Iterator<Item = Result<Crypto<'_>, FieldError>> + '_ {
        self.attribute_values("crypto").map(parse_crypto)
    }

    /// `a=setup` (DTLS role).
    pub fn setup(&self) -> Result<Option<Setup>, FieldError> {
        self.attribute_values("setup")
            .next()
            .map(parse_setup)
            .transpose()
    }

    /// The `a=fingerprint` lines (DTLS certificate hashes).
    pub fn fingerprints(&self) -> impl Iterator<Item = Result<Fingerprint<'_>, FieldError>> + '_ {
        self.attribute_values("fingerprint").map(parse_fingerprint)
    }

    // ---- ICE ---------------------------------------------------------------------------------

    /// The `a=candidate` lines.
    pub fn candidates(&self) -> impl Iterator<Item = Result<Candidate<'_>, FieldError>> + '_ {
        self.attribute_values("candidate").map(parse_candidate)
    }

    /// `a=ice-ufrag`.
    pub fn ice_ufrag(&self) -> Result<Option<&str>, FieldError> {
        self.text_attribute("ice-ufrag", "a=ice-ufrag")
    }

    /// `a=ice-pwd`.
    pub fn ice_pwd(&self) -> Result<Option<&str>, FieldError> {
        self.text_attribute("ice-pwd", "a=ice-pwd")
    }

    /// `a=ice-options`, e.g. `trickle`.
    pub fn ice_options(&self) -> Result<Option<&str>, FieldError> {
        self.text_attribute("ice-options", "a=ice-options")
    }

    /// Whether any ICE attribute ([`ICE_ATTRIBUTES`]) is present at this level.
    pub fn has_ice(&self) -> bool {
        self.attributes()
            .any(|a| ICE_ATTRIBUTES.iter().any(|name| a.is(name)))
    }

    /// Removes every ICE attribute of this level; returns how many.
    pub fn remove_ice(&mut self) -> usize {
        self.retain_attributes(|a| !ICE_ATTRIBUTES.iter().any(|name| a.is(name)))
    }

    // ---- identification ----------------------------------------------------------------------

    /// `a=label` (RFC 4574).
    pub fn label(&self) -> Result<Option<&str>, FieldError> {
        self.text_attribute("label", "a=label")
    }

    /// `a=mid` (RFC 5888).
    pub fn mid(&self) -> Result<Option<&str>, FieldError> {
        self.text_attribute("mid", "a=mid")
    }

    // ---- internals ---------------------------------------------------------------------------

    pub(crate) fn of_kind(&self, letter: u8) -> impl Iterator<Item = &Line> + '_ {
        self.lines.iter().filter(move |l| l.kind == letter)
    }

    pub(crate) fn attribute_values<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s [u8]> + 's {
        self.attributes_named(name)
            .map(|a| a.value.unwrap_or_default())
    }

    fn text_attribute(&self, name: &str, field: &'static str) -> Result<Option<&str>, FieldError> {
        self.attribute(name)
            .map(|a| text(field, a.value.unwrap_or_default().trim_ascii()))
            .transpose()
    }

    fn number_attribute(&self, name: &str, field: &'static str) -> Result<Option<u32>, FieldError> {
        self.text_attribute(name, field)?
            .map(|v| {
                v.parse()
                    .map_err(|_| FieldError::malformed(field, "is not a number", v.as_bytes()))
            })
            .transpose()
    }

    /// Where a line goes to be last in this level: before any trailing blank lines.
    pub(crate) fn end_position(&self) -> usize {
        self.lines
            .iter()
            .rposition(|l| l.kind != BLANK)
            .map_or(self.lines.len(), |i| i + 1)
    }

    pub(crate) fn insert(&mut self, at: usize, text: Vec<u8>) {
        let at = at.min(self.lines.len());
        self.lines
            .insert(at, Line::built(text, End::from(self.eol)));
    }

    /// Replaces a line's text, keeping the terminator it had.
    pub(crate) fn replace(&mut self, index: usize, text: Vec<u8>) {
        if let Some(line) = self.lines.get_mut(index) {
            *line = Line::built(text, line.end);
        }
    }

    /// Replaces the first line matching `is_target` by `text` (keeping its terminator) and
    /// removes the other matching lines; appends `text` if none matched.
    fn set_line(&mut self, text: Vec<u8>, is_target: impl Fn(&Line) -> bool) {
        match self.lines.iter().position(&is_target) {
            Some(first) => {
                self.replace(first, text);
                let mut index = 0;
                self.lines.retain(|l| {
                    let keep = index == first || !is_target(l);
                    index += 1;
                    keep
                });
            }
            None => {
                let at = self.end_position();
                self.insert(at, text);
            }
        }
    }

    pub(crate) fn remove_where(&mut self, mut remove: impl FnMut(&Line) -> bool) -> usize {
        let before = self.lines.len();
        self.lines.retain(|line| !remove(line));
        before - self.lines.len()
    }
}

fn attribute_line(name: &str, value: Option<&str>) -> Result<Vec<u8>, FieldError> {
    check_value("a= name", name, true)?;
    if name.contains(':') {
        return Err(FieldError::malformed(
            "a= name",
            "contains ':'",
            name.as_bytes(),
        ));
    }
    let mut line = format!("a={name}");
    if let Some(value) = value {
        check_value("a= value", value, false)?;
        line.push(':');
        line.push_str(value);
    }
    Ok(line.into_bytes())
}
