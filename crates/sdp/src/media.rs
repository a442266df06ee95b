//! [`MediaSection`]: one `m=` line and the lines after it, up to the next `m=`.

use std::ops::{Deref, DerefMut, Range};

use crate::attribute::{Attribute, Rtpmap};
use crate::error::FieldError;
use crate::line::{check_value, token_ranges, Line, LineEnding};
use crate::section::Section;
use crate::static_payload::static_rtpmap;

/// One media section. It dereferences to [`Section`] for the views and edits it shares with the
/// session level (`c=`, attributes, direction, ...); the `m=` line itself is only changed
/// through the methods here, so it always stays well-formed.
#[derive(Debug, Clone)]
pub struct MediaSection {
    section: Section,
    m: MLine,
}

/// The transport protocol of an `m=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Proto {
    /// `RTP/AVP` (RFC 3551).
    RtpAvp,
    /// `RTP/AVPF` (RFC 4585).
    RtpAvpf,
    /// `RTP/SAVP` (RFC 3711, SDES keys).
    RtpSavp,
    /// `RTP/SAVPF` (RFC 5124).
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP` (DTLS-SRTP, RFC 5764).
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF` (WebRTC).
    UdpTlsRtpSavpf,
    /// `udptl` (T.38 fax, `m=image`).
    Udptl,
    /// Anything else; see [`Media::proto`] for the text.
    Other,
}

impl Proto {
    /// Classifies a protocol token (case-insensitively: `UDPTL` is seen in the wild).
    pub fn of(proto: &str) -> Self {
        const KNOWN: [(&str, Proto); 7] = [
            ("RTP/AVP", Proto::RtpAvp),
            ("RTP/AVPF", Proto::RtpAvpf),
            ("RTP/SAVP", Proto::RtpSavp),
            ("RTP/SAVPF", Proto::RtpSavpf),
            ("UDP/TLS/RTP/SAVP", Proto::UdpTlsRtpSavp),
            ("UDP/TLS/RTP/SAVPF", Proto::UdpTlsRtpSavpf),
            ("udptl", Proto::Udptl),
        ];
        KNOWN
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(proto))
            .map_or(Proto::Other, |(_, p)| *p)
    }

    /// Whether the formats are RTP payload types.
    pub fn is_rtp(self) -> bool {
        !matches!(self, Proto::Udptl | Proto::Other)
    }

    /// Whether the media is SRTP (SDES or DTLS keyed).
    pub fn is_srtp(self) -> bool {
        matches!(
            self,
            Proto::RtpSavp | Proto::RtpSavpf | Proto::UdpTlsRtpSavp | Proto::UdpTlsRtpSavpf
        )
    }
}

/// A view of `m=<media> <port>[/<count>] <proto> <fmt> ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media<'a> {
    media: &'a str,
    port: u16,
    port_count: Option<u16>,
    proto: &'a str,
    formats: &'a str,
}

impl<'a> Media<'a> {
    /// `audio`, `video`, `image`, `application`, ...
    pub fn media(&self) -> &'a str {
        self.media
    }

    /// The transport port; 0 means the stream is rejected or disabled (RFC 3264 §6).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `/<count>` after the port, if given.
    pub fn port_count(&self) -> Option<u16> {
        self.port_count
    }

    /// The protocol text, e.g. `RTP/SAVP`.
    pub fn proto(&self) -> &'a str {
        self.proto
    }

    /// The protocol, classified.
    pub fn transport(&self) -> Proto {
        Proto::of(self.proto)
    }

    /// The formats (payload types for RTP), in order of preference.
    pub fn formats(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.formats.split_ascii_whitespace()
    }
}

impl MediaSection {
    /// A section starting with `m_line`; `Err` says what is wrong with it.
    pub(crate) fn start(m_line: Line, eol: LineEnding) -> Result<Self, MLineError> {
        let m = parse_m_line(&m_line.text)?;
        let mut section = Section::new(eol);
        section.lines.push(m_line);
        Ok(MediaSection { section, m })
    }

    /// The section's lines (the `m=` line first) for the views it shares with the session level.
    pub fn section(&self) -> &Section {
        &self.section
    }

    /// The `m=` line.
    pub fn media(&self) -> Media<'_> {
        let text = self
            .section
            .lines
            .first()
            .and_then(|l| std::str::from_utf8(&l.text).ok())
            .unwrap_or_default();
        let part = |range: &Range<usize>| text.get(range.clone()).unwrap_or_default();
        Media {
            media: part(&self.m.media),
            port: self.m.port,
            port_count: self.m.port_count,
            proto: part(&self.m.proto),
            formats: part(&self.m.formats),
        }
    }

    /// Whether the port is 0 (a rejected or disabled stream).
    pub fn is_rejected(&self) -> bool {
        self.m.port == 0
    }

    /// Sets the `m=` port, keeping any port count.
    pub fn set_port(&mut self, port: u16) {
        let media = self.media();
        let line = m_line(
            media.media,
            port,
            media.port_count,
            media.proto,
            media.formats,
        );
        self.rewrite(line);
    }

    /// Sets the `m=` protocol, e.g. `RTP/AVP` when a relay terminates SRTP.
    pub fn set_proto(&mut self, proto: &str) -> Result<(), FieldError> {
        check_value("m= proto", proto, true)?;
        let media = self.media();
        let line = m_line(
            media.media,
            media.port,
            media.port_count,
            proto,
            media.formats,
        );
        self.rewrite(line);
        Ok(())
    }

    /// Sets the `m=` formats; `rtpmap`/`fmtp` lines are left alone (see
    /// [`MediaSection::retain_formats`] to remove formats with their lines).
    pub fn set_formats<'f>(
        &mut self,
        formats: impl IntoIterator<Item = &'f str>,
    ) -> Result<(), FieldError> {
        let mut list = String::new();
        for format in formats {
            check_value("m= format", format, true)?;
            if !list.is_empty() {
                list.push(' ');
            }
            list.push_str(format);
        }
        let media = self.media();
        let line = m_line(
            media.media,
            media.port,
            media.port_count,
            media.proto,
            &list,
        );
        self.rewrite(line);
        Ok(())
    }

    /// Keeps only the formats for which `keep` is true, removing the others from the `m=` line
    /// together with their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines. Returns the removed
    /// formats. Removing every format leaves an `m=` line without formats, which RFC 8866
    /// forbids: callers keep at least one.
    pub fn retain_formats(&mut self, mut keep: impl FnMut(&str) -> bool) -> Vec<String> {
        let (kept, removed): (Vec<&str>, Vec<&str>) = self.media().formats().partition(|f| keep(f));
        if removed.is_empty() {
            return Vec::new();
        }
        let removed: Vec<String> = removed.into_iter().map(String::from).collect();
        let kept = kept.join(" ");
        let media = self.media();
        let line = m_line(
            media.media,
            media.port,
            media.port_count,
            media.proto,
            &kept,
        );
        self.rewrite(line);
        self.section.retain_attributes(|a| {
            !(["rtpmap", "fmtp", "rtcp-fb"].iter().any(|n| a.is(n))
                && removed.iter().any(|f| first_token(a) == f.as_bytes()))
        });
        removed
    }

    /// The codec a format stands for: its `a=rtpmap`, else the RFC 3551 static table (RTP only).
    pub fn codec(&self, format: &str) -> Option<Rtpmap<'_>> {
        let pt = format.parse::<u8>().ok()?;
        if !self.media().transport().is_rtp() {
            return None;
        }
        self.section.rtpmap(pt).or_else(|| static_rtpmap(pt))
    }

    /// Adds `a=rtpmap` for every static payload type of the `m=` line that has none, as
    /// rtpengine does (`m=audio 2000 RTP/AVP 0` gains `a=rtpmap:0 PCMU/8000`), in format order
    /// among the existing rtpmaps. Returns how many were added.
    pub fn add_static_rtpmaps(&mut self) -> usize {
        if !self.media().transport().is_rtp() {
            return 0;
        }
        let formats: Vec<String> = self.media().formats().map(String::from).collect();
        let mut added = 0;
        for (index, format) in formats.iter().enumerate() {
            let Some(map) = format.parse::<u8>().ok().and_then(static_rtpmap) else {
                continue;
            };
            if self.rtpmap_line(format).is_some() {
                continue;
            }
            let later = formats.iter().skip(index + 1);
            let earlier = formats.iter().take(index).rev();
            let at = later
                .filter_map(|f| self.rtpmap_line(f))
                .next()
                .or_else(|| {
                    earlier
                        .filter_map(|f| self.rtpmap_line(f))
                        .next()
                        .map(|i| i + 1)
                })
                .or_else(|| self.section.lines.iter().position(|l| l.kind == b'a'))
                .unwrap_or_else(|| self.section.end_position());
            let mut text = format!(
                "a=rtpmap:{} {}/{}",
                map.payload_type, map.encoding, map.clock_rate
            );
            if let Some(channels) = map.parameters {
                text.push('/');
                text.push_str(channels);
            }
            self.section.insert(at, text.into_bytes());
            added += 1;
        }
        added
    }

    fn rtpmap_line(&self, format: &str) -> Option<usize> {
        self.section.lines.iter().position(|l| {
            let a = Attribute::split(l.value());
            l.kind == b'a' && a.is("rtpmap") && first_token(&a) == format.as_bytes()
        })
    }

    /// Replaces the `m=` line by text built from already-validated parts.
    fn rewrite(&mut self, line: String) {
        if let Ok(m) = parse_m_line(line.as_bytes()) {
            self.section.replace(0, line.into_bytes());
            self.m = m;
        }
    }
}

impl Deref for MediaSection {
    type Target = Section;

    fn deref(&self) -> &Section {
        &self.section
    }
}

impl DerefMut for MediaSection {
    fn deref_mut(&mut self) -> &mut Section {
        &mut self.section
    }
}

/// The first whitespace-separated token of an attribute value (the format of rtpmap/fmtp).
fn first_token<'a>(a: &Attribute<'a>) -> &'a [u8] {
    let value = a.value.unwrap_or_default().trim_ascii_start();
    let end = value
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(value.len());
    value.get(..end).unwrap_or_default()
}

fn m_line(media: &str, port: u16, count: Option<u16>, proto: &str, formats: &str) -> String {
    let mut line = format!("m={media} {port}");
    if let Some(count) = count {
        line.push_str(&format!("/{count}"));
    }
    line.push(' ');
    line.push_str(proto);
    if !formats.is_empty() {
        line.push(' ');
        line.push_str(formats);
    }
    line
}

/// Where the parts of an `m=` line are, as byte ranges of the line text.
#[derive(Debug, Clone)]
struct MLine {
    media: Range<usize>,
    port: u16,
    port_count: Option<u16>,
    proto: Range<usize>,
    formats: Range<usize>,
}

/// What is wrong with an `m=` line (turned into a [`ParseError`](crate::ParseError) with the
/// line number).
#[derive(Debug)]
pub(crate) enum MLineError {
    NotText,
    NoPort,
    BadPort(String),
    NoProto,
}

fn parse_m_line(text: &[u8]) -> Result<MLine, MLineError> {
    let line = std::str::from_utf8(text).map_err(|_| MLineError::NotText)?;
    let value = line.get(2..).unwrap_or_default().trim_end();
    let shift = |r: Range<usize>| r.start + 2..r.end + 2;
    let mut tokens = token_ranges(value.as_bytes()).map(shift);
    let media = tokens.next().ok_or(MLineError::NoPort)?;
    let port_range = tokens.next().ok_or(MLineError::NoPort)?;
    let port_text = line.get(port_range).unwrap_or_default();
    let bad_port = || MLineError::BadPort(port_text.to_owned());
    let (port, port_count) = match port_text.split_once('/') {
        Some((port, count)) => (port, Some(count.parse().map_err(|_| bad_port())?)),
        None => (port_text, None),
    };
    let port = port.parse().map_err(|_| bad_port())?;
    let proto = tokens.next().ok_or(MLineError::NoProto)?;
    let end = value.len() + 2;
    let formats = tokens.next().map_or(end..end, |first| first.start..end);
    Ok(MLine {
        media,
        port,
        port_count,
        proto,
        formats,
    })
}
