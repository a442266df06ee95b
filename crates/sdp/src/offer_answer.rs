//! Offer/answer helpers ([RFC 3264](https://www.rfc-editor.org/rfc/rfc3264)) for the proxy's
//! re-anchoring (DESIGN.md "Re-anchoring", steps 2, 3 and 5):
//!
//! * [`restrict_codecs`]: re-offer only what the last negotiation agreed on;
//! * [`OriginIdentity`] and [`with_origin`]: give an SDP a leg's own `o=` identity and version;
//! * [`compare_media`]: did an answer change the media, ignoring `o=` version noise?

use std::fmt;

use crate::error::FieldError;
use crate::media::MediaSection;
use crate::session::Session;

// ---- o= versioning ---------------------------------------------------------------------------

/// The `o=` username and session id a leg knows its peer by. RFC 3264 §8: in a re-offer they
/// "MUST remain the same as in the previous SDP" and the version must grow by one, so a new relay
/// that cannot know what the old one sent uses the identity stored for the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginIdentity {
    /// `o=` username.
    pub username: String,
    /// `o=` session id.
    pub session_id: String,
}

impl OriginIdentity {
    /// The identity in `sdp`'s `o=` line.
    pub fn of(sdp: &Session) -> Result<Self, FieldError> {
        let origin = sdp.origin()?;
        Ok(OriginIdentity {
            username: origin.username.to_owned(),
            session_id: origin.session_id.to_owned(),
        })
    }
}

/// A copy of `sdp` whose `o=` carries `identity` and `version` (its network and address are
/// kept). For re-anchoring, `version` is the last version sent to the leg plus one.
pub fn with_origin(
    sdp: &Session,
    identity: &OriginIdentity,
    version: u64,
) -> Result<Session, FieldError> {
    let mut out = sdp.clone();
    out.set_origin(&identity.username, &identity.session_id, version)?;
    Ok(out)
}

// ---- codec restriction -----------------------------------------------------------------------

/// A format [`restrict_codecs`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedFormat {
    /// Index of the media section.
    pub media: usize,
    /// The format (payload type) removed from the `m=` line.
    pub format: String,
}

/// Restricts each media section of `offer` to the codecs that `answer` (the answer of an earlier
/// negotiation) accepted, matched by encoding name and clock rate, since dynamic payload numbers
/// may differ between the two sides; `telephone-event` and `CN` are always kept. The removed
/// formats lose their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines as well.
///
/// A section is left as it is when the answer has no section at its index, rejected it (port 0),
/// or agreed on none of its codecs (an `m=` line needs at least one format).
pub fn restrict_codecs(offer: &mut Session, answer: &Session) -> Vec<RemovedFormat> {
    let mut removed = Vec::new();
    for (index, media) in offer.media_mut().iter_mut().enumerate() {
        let Some(answered) = answer.media().get(index) else {
            continue;
        };
        if answered.is_rejected() {
            continue;
        }
        let agreed: Vec<CodecKey> = answered
            .media()
            .formats()
            .map(|f| CodecKey::of(answered, f))
            .collect();
        let keep: Vec<String> = media
            .media()
            .formats()
            .filter(|f| {
                let key = CodecKey::of(media, f);
                key.is_always_kept() || agreed.contains(&key)
            })
            .map(String::from)
            .collect();
        let real_codec_left = keep
            .iter()
            .any(|f| !CodecKey::of(media, f).is_always_kept());
        if !real_codec_left {
            continue;
        }
        removed.extend(
            media
                .retain_formats(|f| keep.iter().any(|k| k == f))
                .into_iter()
                .map(|format| RemovedFormat {
                    media: index,
                    format,
                }),
        );
    }
    removed
}

/// What a format stands for, independent of its payload number.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CodecKey {
    /// An RTP codec: lower-cased encoding name and clock rate.
    Codec { name: String, clock_rate: u32 },
    /// A format without a known codec (non-RTP such as `t38`, or an unmapped dynamic type).
    Format(String),
}

impl CodecKey {
    fn of(media: &MediaSection, format: &str) -> Self {
        match media.codec(format) {
            Some(map) => CodecKey::Codec {
                name: map.encoding.to_ascii_lowercase(),
                clock_rate: map.clock_rate,
            },
            None => CodecKey::Format(format.to_owned()),
        }
    }

    fn is_always_kept(&self) -> bool {
        matches!(self, CodecKey::Codec { name, .. } if name == "telephone-event" || name == "cn")
    }
}

// ---- media-content comparison ----------------------------------------------------------------

/// The parts of a media section [`compare_media`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaAspect {
    /// The section exists only in the new SDP.
    Added,
    /// The section exists only in the old SDP.
    Removed,
    /// The media type (`audio`, `video`, ...).
    Kind,
    /// The effective `c=` address (media level, else session level).
    Address,
    /// The `m=` port (and port count).
    Port,
    /// The `m=` protocol.
    Proto,
    /// The `m=` format list, in order.
    Formats,
    /// What each format maps to (`rtpmap`, static table) and its `fmtp`.
    Codecs,
    /// The `a=crypto` lines (SDES keys).
    Crypto,
    /// The `a=setup` and `a=fingerprint` lines (DTLS).
    Dtls,
    /// The effective direction.
    Direction,
    /// `a=rtcp` and `a=rtcp-mux`.
    Rtcp,
}

/// One difference found by [`compare_media`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChange {
    /// Index of the media section.
    pub media: usize,
    /// What differs.
    pub aspect: MediaAspect,
    /// The old value, normalised (whitespace collapsed), `""` if absent.
    pub old: String,
    /// The new value, normalised, `""` if absent.
    pub new: String,
}

impl fmt::Display for MediaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "media {} {:?}: {:?} -> {:?}",
            self.media, self.aspect, self.old, self.new
        )
    }
}

/// Compares two SDPs by media content, section by section: address, port, protocol, formats and
/// codecs, crypto, DTLS, direction and RTCP. Everything else is noise and ignored: the `o=` line
/// (real clients such as baresip bump the version on every SDP), `s=`, `t=`, line order and
/// endings, whitespace, ICE and unknown attributes. An empty result means the media is the same.
pub fn compare_media(old: &Session, new: &Session) -> Vec<MediaChange> {
    let mut changes = Vec::new();
    let count = old.media().len().max(new.media().len());
    for index in 0..count {
        match (describe(old, index), describe(new, index)) {
            (Some(before), Some(after)) => {
                for ((aspect, old), (_, new)) in before.into_iter().zip(after) {
                    if old != new {
                        changes.push(MediaChange {
                            media: index,
                            aspect,
                            old,
                            new,
                        });
                    }
                }
            }
            (Some(_), None) => changes.push(MediaChange {
                media: index,
                aspect: MediaAspect::Removed,
                old: m_line_text(old, index),
                new: String::new(),
            }),
            (None, Some(_)) => changes.push(MediaChange {
                media: index,
                aspect: MediaAspect::Added,
                old: String::new(),
                new: m_line_text(new, index),
            }),
            (None, None) => {}
        }
    }
    changes
}

fn m_line_text(sdp: &Session, index: usize) -> String {
    sdp.media()
        .get(index)
        .and_then(|m| m.raw_lines().next())
        .map(squash)
        .unwrap_or_default()
}

/// The aspects of media section `index`, in a fixed order.
fn describe(sdp: &Session, index: usize) -> Option<Vec<(MediaAspect, String)>> {
    let media = sdp.media().get(index)?;
    let m = media.media();
    let address = match sdp.effective_connection(index) {
        Ok(Some(c)) => format!("{} {} {}", c.network_type, c.address_type, c.address),
        Ok(None) => String::new(),
        Err(e) => e.to_string(),
    };
    let port = match m.port_count() {
        Some(count) => format!("{}/{count}", m.port()),
        None => m.port().to_string(),
    };
    let formats: Vec<&str> = m.formats().collect();
    let codecs: Vec<String> = formats
        .iter()
        .map(|f| {
            let mut text = (*f).to_owned();
            if let Some(map) = media.codec(f) {
                text.push_str(&format!(" {}/{}", map.encoding, map.clock_rate));
                if let Some(p) = map.parameters {
                    text.push('/');
                    text.push_str(p);
                }
            }
            if let Some(fmtp) = media.fmtp(f) {
                text.push(' ');
                text.push_str(&squash(fmtp.parameters.as_bytes()));
            }
            text
        })
        .collect();
    let values = |names: &[&str]| -> String {
        // Grouped by name in the order given, so moving `a=rtcp-mux` above `a=rtcp` is noise.
        names
            .iter()
            .flat_map(|name| media.attributes_named(name))
            .map(|a| {
                let name = String::from_utf8_lossy(a.name);
                match a.value {
                    Some(v) => format!("{name}:{}", squash(v)),
                    None => name.into_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let direction = sdp
        .effective_direction(index)
        .map(|d| d.as_str().to_owned())
        .unwrap_or_default();
    Some(vec![
        (MediaAspect::Kind, m.media().to_owned()),
        (MediaAspect::Address, address),
        (MediaAspect::Port, port),
        (MediaAspect::Proto, m.proto().to_owned()),
        (MediaAspect::Formats, formats.join(" ")),
        (MediaAspect::Codecs, codecs.join("; ")),
        (MediaAspect::Crypto, values(&["crypto"])),
        (MediaAspect::Dtls, values(&["setup", "fingerprint"])),
        (MediaAspect::Direction, direction),
        (MediaAspect::Rtcp, values(&["rtcp", "rtcp-mux"])),
    ])
}

/// Lossy text with runs of whitespace collapsed to one space.
fn squash(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_ascii_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
