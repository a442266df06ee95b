//! The SDP the relay sends on, built the way rtpengine builds it (reference `rtpengine-ng.md`
//! §2.1) but as edits of the sender's SDP, so that whatever the relay does not understand
//! passes byte for byte:
//!
//! * `c=` lines where the sender wrote them, as rtpengine 10.5 writes them: a session-level
//!   `c=` stays at session level with the relay's address and covers every section without a
//!   `c=` of its own (all of them share the relay's address); a section's own `c=` gets the
//!   relay's address too; a sender with no session-level `c=` gets one in every section. A
//!   hold address (`0.0.0.0`/`::`) stays a hold address of the output family unless
//!   `replace zero-address`. Every `m=` gets the relay's port;
//! * an explicit direction attribute in every section (RFC 2543 hold without one becomes
//!   `sendonly`), `a=rtpmap` for static payload types the sender left implicit;
//! * the sender's `a=rtcp`/`a=rtcp-mux` are consumed and ours written (`no rtcp attribute`,
//!   `full rtcp attribute`);
//! * ICE attributes are always removed: this relay does not answer STUN checks, and leaving
//!   the parties' candidates in would let them send media around the relay;
//! * the `m=` profile the controller chose for the receiver (`transport-protocol`), and its
//!   keying: the sender's `a=crypto`/DTLS attributes kept for media passed through untouched,
//!   removed for plain RTP, replaced by the relay's own `a=crypto` lines for SDES-SRTP and by
//!   its `a=setup` and `a=fingerprint` for DTLS-SRTP it terminates;
//! * `o=`: kept by default; `replace origin` puts the relay's address in it; `replace username`
//!   / `origin-full` freeze it per receiving party; `replace SDP-version` makes the relay own
//!   the version (unchanged when the output is unchanged, +1 otherwise), and
//!   `force-increment-sdp-ver` always adds one;
//! * `loop protect` marks the SDP with `a=rtpengine:<instance>`;
//! * `codec-strip` / `codec-except` / `codec-mask` / `codec-offer` remove codecs from the
//!   offer or answer the party receives (with their `rtpmap`/`fmtp`/`rtcp-fb` lines), without
//!   transcoding: media passes as sent. A filter that would leave a section with no codec leaves
//!   it as it was (the reply's warning says so).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anchorage_ng::Flags;
use anchorage_sdp::{Direction, FieldError, Session};
use bytes::Bytes;

/// What the outgoing SDP says about a stream's encryption.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecureOut {
    /// Leave the sender's `a=crypto`, `a=fingerprint`, `a=setup` and `a=tls-id` as they are
    /// (media the relay passes through untouched).
    #[default]
    Keep,
    /// Remove them (plain RTP towards the receiver).
    Strip,
    /// Remove them and write these `a=crypto` values (the relay's SDES keys).
    Crypto(Vec<String>),
    /// Remove them and write the relay's DTLS `a=setup` and `a=fingerprint`.
    Dtls {
        /// `actpass`, `active` or `passive`.
        setup: &'static str,
        /// `sha-256 AB:CD:…`.
        fingerprint: String,
    },
}

/// The DTLS and SDES attributes a relay that terminates the encryption replaces.
const KEYING_ATTRIBUTES: [&str; 4] = ["crypto", "fingerprint", "setup", "tls-id"];

/// The relay's side of one `m=` line in the outgoing SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOut {
    /// The relay's RTP port for the receiving party.
    pub rtp_port: u16,
    /// The relay's RTCP port for the receiving party (RTP + 1).
    pub rtcp_port: u16,
    /// Print `a=rtcp-mux`.
    pub mux: bool,
    /// RTCP only on the RTP port: `a=rtcp:` names the RTP port (an accepted mux, or `require`).
    pub mux_only: bool,
    /// The `m=` profile to write (`RTP/SAVP`, …); `None` keeps the sender's.
    pub profile: Option<&'static str>,
    /// The keying attributes.
    pub secure: SecureOut,
}

/// Everything the rewrite needs besides the sender's SDP.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite<'a> {
    /// The address written into `c=` (the interface's advertised address, or `media address`).
    pub address: IpAddr,
    /// Per `m=` line, the relay's ports; `None` leaves a rejected stream rejected.
    pub streams: &'a [Option<StreamOut>],
    /// The request's options.
    pub flags: &'a Flags,
    /// This relay's instance name, for `loop protect`.
    pub instance: &'a str,
    /// ICE-lite towards the receiving party (`ICE=force`): its credentials.
    pub ice: Option<anchorage_relay::stun::IceCredentials>,
}

/// What the relay last sent to one party, for `o=` management.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginState {
    /// The `o=` username and session id first sent to this party.
    frozen: Option<(String, String)>,
    /// The version last sent and the SDP it was sent with (with the version zeroed).
    last: Option<(u64, Bytes)>,
}

impl OriginState {
    /// The `o=` version last sent to this party.
    pub fn last_version(&self) -> Option<u64> {
        self.last.as_ref().map(|(v, _)| *v)
    }
}

/// The loop-protect attribute name.
pub const LOOP_ATTRIBUTE: &str = "rtpengine";

/// Whether `sdp` already went through this relay (`loop protect`).
pub fn is_looped(sdp: &Session, instance: &str) -> bool {
    sdp.session_level()
        .attributes_named(LOOP_ATTRIBUTE)
        .any(|a| a.value_str().is_ok_and(|v| v.trim() == instance))
}

fn zero_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Builds the SDP for the receiving party from the sender's `sdp`; `origin` is the receiving
/// party's `o=` state and is updated.
pub fn rewrite(
    sdp: &Session,
    rewrite: &Rewrite<'_>,
    origin: &mut OriginState,
) -> Result<Bytes, FieldError> {
    rewrite_with_notes(sdp, rewrite, origin).map(|(bytes, _)| bytes)
}

/// [`rewrite`], also returning what the caller should be warned of (codec filters that were
/// not applied because they would have left a section without codecs).
pub fn rewrite_with_notes(
    sdp: &Session,
    rewrite: &Rewrite<'_>,
    origin: &mut OriginState,
) -> Result<(Bytes, Vec<String>), FieldError> {
    let mut notes = Vec::new();
    let flags = rewrite.flags;
    let mut out = sdp.clone();
    out.remove_ice();
    lower_session_keying(&mut out, rewrite.streams)?;
    let session_direction = out.session_level().direction();
    // A session-level c= stays there (rtpengine keeps each c= where the sender wrote it).
    let session_connection = sdp.session_level().connection().ok().flatten();
    let session_hold = session_connection.is_some_and(|c| c.is_unspecified());
    {
        let session = out.session_level_mut();
        match session_connection {
            Some(_) if session_hold && !flags.replace.zero_address => {
                session.set_connection(zero_of(rewrite.address))
            }
            Some(_) => session.set_connection(rewrite.address),
            None => {
                session.remove_connection();
            }
        }
        session.remove_direction();
        session.remove_attribute(LOOP_ATTRIBUTE);
        if flags.loop_protect {
            session.add_attribute(LOOP_ATTRIBUTE, Some(rewrite.instance))?;
        }
        if rewrite.ice.is_some() {
            session.add_attribute("ice-lite", None)?;
        }
    }
    for index in 0..out.media().len() {
        let zero_in = sdp
            .effective_connection(index)
            .ok()
            .flatten()
            .is_some_and(|c| c.is_unspecified());
        let explicit = sdp
            .media()
            .get(index)
            .and_then(|m| m.section().direction())
            .or(session_direction);
        // A section without its own c= keeps inheriting the session-level one.
        let own_connection = session_connection.is_none()
            || sdp
                .media()
                .get(index)
                .is_some_and(|m| m.section().connection().ok().flatten().is_some());
        let Some(media) = out.media_mut().get_mut(index) else {
            continue;
        };
        let stream = rewrite.streams.get(index).cloned().flatten();
        media.remove_attribute("rtcp");
        media.remove_attribute("rtcp-mux");
        let Some(stream) = stream.filter(|_| !media.is_rejected()) else {
            media.set_port(0);
            if own_connection {
                media.set_connection(zero_of(rewrite.address));
            }
            continue;
        };
        media.set_port(stream.rtp_port);
        let hold = zero_in && !flags.replace.zero_address;
        if own_connection {
            media.set_connection(if hold {
                zero_of(rewrite.address)
            } else {
                rewrite.address
            });
        }
        if let Some(proto) = stream.profile {
            if !media.media().proto().eq_ignore_ascii_case(proto) {
                media.set_proto(proto)?;
            }
        }
        let is_rtp = media.media().transport().is_rtp();
        if is_rtp {
            media.add_static_rtpmaps();
            if let Some(note) = filter_codecs(media, &flags.codec) {
                notes.push(format!("m={index}: {note}"));
            }
        }
        let direction = match explicit {
            Some(d) => d,
            None if zero_in => Direction::SendOnly,
            None => Direction::SendRecv,
        };
        media.set_direction(direction);
        if is_rtp && !flags.no_rtcp_attribute {
            let port = if stream.mux_only {
                stream.rtp_port
            } else {
                stream.rtcp_port
            };
            let address = flags.full_rtcp_attribute.then_some(rewrite.address);
            media.set_rtcp(port, address);
        }
        if is_rtp && stream.mux {
            media.add_attribute("rtcp-mux", None)?;
        }
        if stream.secure != SecureOut::Keep {
            for name in KEYING_ATTRIBUTES {
                media.remove_attribute(name);
            }
        }
        match &stream.secure {
            SecureOut::Crypto(lines) => {
                for line in lines {
                    media.add_attribute("crypto", Some(line))?;
                }
            }
            SecureOut::Dtls { setup, fingerprint } => {
                media.add_attribute("setup", Some(setup))?;
                media.add_attribute("fingerprint", Some(fingerprint))?;
            }
            SecureOut::Keep | SecureOut::Strip => {}
        }
        if let Some(ice) = &rewrite.ice {
            // Host candidates only (RFC 8445 §5.1.2: type preference 126, local 65535).
            media.add_attribute("ice-ufrag", Some(ice.ufrag_str()))?;
            media.add_attribute("ice-pwd", Some(ice.pwd_str()))?;
            let candidate = |component: u8, port: u16| {
                let priority = (126u32 << 24) | (65535 << 8) | (256 - u32::from(component));
                format!(
                    "1 {component} UDP {priority} {} {port} typ host",
                    rewrite.address
                )
            };
            media.add_attribute("candidate", Some(&candidate(1, stream.rtp_port)))?;
            if !stream.mux_only {
                media.add_attribute("candidate", Some(&candidate(2, stream.rtcp_port)))?;
            }
        }
    }
    if flags.replace.origin || flags.replace.origin_full {
        out.set_origin_address(rewrite.address)?;
    }
    manage_origin(&mut out, flags, origin)?;
    Ok((out.to_bytes(), notes))
}

/// Session-level keying attributes (`a=fingerprint`, `a=setup`, `a=tls-id`; baresip writes its
/// DTLS ones there) apply to every media section (RFC 8122 §5, RFC 4145 §4). When the relay
/// terminates the encryption of any section, they cannot stay at session level: a plain or
/// re-keyed section would inherit the sender's fingerprint. They are then moved into each
/// section passed through untouched (which keeps them, unless it has its own) and removed from
/// the session level; the sections the relay terminates drop or replace them as usual.
fn lower_session_keying(
    out: &mut Session,
    streams: &[Option<StreamOut>],
) -> Result<(), FieldError> {
    let session: Vec<(&'static str, String)> = KEYING_ATTRIBUTES
        .iter()
        .flat_map(|name| {
            out.session_level()
                .attributes_named(name)
                .filter_map(|a| a.value_str().ok().map(|v| (*name, v.to_string())))
                .collect::<Vec<_>>()
        })
        .collect();
    let terminated = streams
        .iter()
        .flatten()
        .any(|s| s.secure != SecureOut::Keep);
    if session.is_empty() || !terminated {
        return Ok(());
    }
    for name in KEYING_ATTRIBUTES {
        out.session_level_mut().remove_attribute(name);
    }
    for (index, media) in out.media_mut().iter_mut().enumerate() {
        let kept = streams
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.secure == SecureOut::Keep);
        if !kept {
            continue;
        }
        for name in KEYING_ATTRIBUTES {
            if media.has_attribute(name) {
                continue;
            }
            for (_, value) in session.iter().filter(|(n, _)| *n == name) {
                media.add_attribute(name, Some(value))?;
            }
        }
    }
    Ok(())
}

/// Applies `codec-strip`, `-except`, `-offer` and `-mask` to one RTP section: a format goes
/// when `strip` names it (or says `all`) or `mask` names it, unless `except` or `offer` names
/// it. Without transcoding, `mask` (hide from the receiver, still accept) comes to the same as
/// `strip`, and `offer` only keeps a codec the sender offered. Returns a note when the filter
/// would have left no codec (the section is then left as it was).
fn filter_codecs(
    media: &mut anchorage_sdp::MediaSection,
    codec: &anchorage_ng::flags::Codec,
) -> Option<String> {
    if codec.strip.is_empty() && codec.mask.is_empty() {
        return None;
    }
    let formats: Vec<String> = media.media().formats().map(String::from).collect();
    let names = |list: &[String], format: &str| -> bool {
        let rtpmap = media.codec(format);
        list.iter()
            .any(|entry| codec_matches(entry, format, rtpmap.as_ref()))
    };
    let keep: Vec<bool> = formats
        .iter()
        .map(|f| {
            let stripped = codec.strip.iter().any(|s| s.eq_ignore_ascii_case("all"))
                || names(&codec.strip, f)
                || names(&codec.mask, f);
            !stripped || names(&codec.except, f) || names(&codec.offer, f)
        })
        .collect();
    if !keep.iter().any(|k| *k) {
        return Some(format!(
            "the codec filter would remove every codec ({}): left unchanged",
            formats.join(" ")
        ));
    }
    let mut index = 0;
    media.retain_formats(|_| {
        let k = keep.get(index).copied().unwrap_or(true);
        index += 1;
        k
    });
    None
}

/// Whether a codec-list entry names this format: its payload type number, its encoding name
/// (`PCMU`, case-insensitive), or encoding/clock rate[/channels] (`opus/48000/2`).
fn codec_matches(entry: &str, format: &str, rtpmap: Option<&anchorage_sdp::Rtpmap<'_>>) -> bool {
    if entry == format {
        return true;
    }
    let Some(map) = rtpmap else {
        return false;
    };
    let mut parts = entry.split('/');
    let name_ok = parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case(map.encoding));
    let rate_ok = parts
        .next()
        .is_none_or(|r| r.parse::<u32>().is_ok_and(|r| r == map.clock_rate));
    let params_ok = parts
        .next()
        .is_none_or(|p| map.parameters.unwrap_or("1") == p);
    name_ok && rate_ok && params_ok
}

fn manage_origin(
    out: &mut Session,
    flags: &Flags,
    state: &mut OriginState,
) -> Result<(), FieldError> {
    let sent_version = out.origin()?.session_version;
    if flags.replace.username || flags.replace.origin_full {
        let o = out.origin()?;
        let current = (o.username.to_owned(), o.session_id.to_owned());
        let (username, session_id) = state.frozen.get_or_insert(current).clone();
        let session_id = if flags.replace.origin_full {
            session_id
        } else {
            out.origin()?.session_id.to_owned()
        };
        out.set_origin(&username, &session_id, sent_version)?;
    }
    let managed = flags.replace.sdp_version
        || flags.replace.origin_full
        || flags.replace.force_increment_sdp_version;
    // The SDP without its version, to tell "changed" from "the sender bumped its version".
    let mut unversioned = out.clone();
    unversioned.set_origin_version(0)?;
    let body = unversioned.to_bytes();
    let version = match (&state.last, managed) {
        (Some((last, previous)), true) => {
            if flags.replace.force_increment_sdp_version || *previous != body {
                last.wrapping_add(1)
            } else {
                *last
            }
        }
        _ => sent_version,
    };
    if version != sent_version {
        out.set_origin_version(version)?;
    }
    state.last = Some((version, body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// baresip's DTLS offer: `a=setup` and `a=fingerprint` at session level.
    const BARESIP_DTLS: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=setup:actpass\r\na=fingerprint:SHA-256 AA:BB\r\n\
        m=audio 18046 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\n";

    fn out(secure: SecureOut, profile: Option<&'static str>) -> Option<StreamOut> {
        Some(StreamOut {
            rtp_port: 30000,
            rtcp_port: 30001,
            mux: false,
            mux_only: false,
            profile,
            secure,
        })
    }

    fn rewritten(sdp: &str, stream: Option<StreamOut>) -> String {
        let sdp = Session::parse_slice(sdp.as_bytes()).unwrap();
        let flags = Flags::default();
        let streams = [stream];
        let rw = Rewrite {
            address: "127.0.0.1".parse().unwrap(),
            streams: &streams,
            flags: &flags,
            instance: "relay",
            ice: None,
        };
        let bytes = rewrite(&sdp, &rw, &mut OriginState::default()).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn session_level_dtls_attributes_do_not_reach_a_plain_receiver() {
        let plain = rewritten(BARESIP_DTLS, out(SecureOut::Strip, Some("RTP/AVP")));
        assert!(plain.contains("m=audio 30000 RTP/AVP 0\r\n"), "{plain}");
        assert!(
            !plain.contains("a=setup") && !plain.contains("a=fingerprint"),
            "{plain}"
        );
    }

    #[test]
    fn session_level_dtls_attributes_give_way_to_the_relays_own() {
        let dtls = rewritten(
            BARESIP_DTLS,
            out(
                SecureOut::Dtls {
                    setup: "actpass",
                    fingerprint: "sha-256 CC:DD".into(),
                },
                None,
            ),
        );
        assert_eq!(dtls.matches("a=fingerprint:").count(), 1, "{dtls}");
        assert!(dtls.contains("a=fingerprint:sha-256 CC:DD\r\n"), "{dtls}");
        assert_eq!(dtls.matches("a=setup:").count(), 1, "{dtls}");
    }

    #[test]
    fn session_level_dtls_attributes_stay_for_media_passed_through() {
        // Nothing terminated: the SDP keeps its session-level attributes where they were.
        let kept = rewritten(BARESIP_DTLS, out(SecureOut::Keep, None));
        let session = kept.split("m=audio").next().unwrap();
        assert!(
            session.contains("a=setup:actpass\r\na=fingerprint:SHA-256 AA:BB\r\n"),
            "{kept}"
        );
        // One section terminated, another passed through: the passed one gets them.
        let two = format!(
            "{BARESIP_DTLS}m=video 18048 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 127.0.0.1\r\n\
             a=rtpmap:96 VP8/90000\r\n"
        );
        let sdp = Session::parse_slice(two.as_bytes()).unwrap();
        let flags = Flags::default();
        let streams = [
            out(SecureOut::Strip, Some("RTP/AVP")),
            out(SecureOut::Keep, None),
        ];
        let rw = Rewrite {
            address: "127.0.0.1".parse().unwrap(),
            streams: &streams,
            flags: &flags,
            instance: "relay",
            ice: None,
        };
        let text = String::from_utf8(
            rewrite(&sdp, &rw, &mut OriginState::default())
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        let (audio, video) = text.split_once("m=video").unwrap();
        assert!(!audio.contains("a=fingerprint"), "{text}");
        assert!(
            video.contains("a=setup:actpass") && video.contains("a=fingerprint:SHA-256 AA:BB"),
            "{text}"
        );
    }
}
