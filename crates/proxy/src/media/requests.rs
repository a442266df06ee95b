//! The requests the proxy builds from SIP (offer, answer, delete, per fork branch) in
//! engine-neutral terms ([`MediaRequest`]) and their ng translation, the media policy they
//! carry, and the prefix of the proxy's cookies.

use anchorage_config::proxy::MediaPolicy;
use anchorage_ng::{normalise, CallId, Delete, OfferAnswer, Request, RequestKind, Tag, Value};
use bytes::Bytes;
use std::net::IpAddr;

/// The prefix of a proxy's ng cookies: its node id (spaces and other characters a cookie cannot
/// hold replaced by `-`) and a per-start epoch drawn from the proxy's seed, e.g. `node1-5f3a9c1e`.
pub fn cookie_prefix(node_id: &str, seed: u64) -> String {
    let id: String = node_id
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '-' })
        .take(32)
        .collect();
    // splitmix64 of the seed: neighbouring seeds give unrelated epochs.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{id}-{:08x}", z as u32)
}

/// The ng flags of a media policy, ready to go into requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Relay set.
    pub set: String,
    /// `rtpp-flags` for the SDP sent to the caller.
    pub caller_flags: String,
    /// `rtpp-flags` for the SDP sent to the callee.
    pub callee_flags: String,
    /// What an RTPProxy node is told for the SDP sent to the caller.
    pub caller_rtpproxy: RtppLeg,
    /// What an RTPProxy node is told for the SDP sent to the callee.
    pub callee_rtpproxy: RtppLeg,
    /// Why RTPProxy nodes cannot carry these calls (a leg option only an ng node can give),
    /// if so: they are not eligible, and a set with no other node answers 503.
    pub rtpproxy_unfit: Option<String>,
}

/// One leg's options as an RTPProxy node takes them: OpenSIPS flag letters, and the address
/// the proxy writes into that leg's SDP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtppLeg {
    /// The leg's `rtpproxy_flags`, then the `i`/`e` pair of the legs' `iface`s.
    pub letters: String,
    /// `ip`: written into this leg's SDP instead of the node's address.
    pub ip: Option<IpAddr>,
}

impl From<&str> for RtppLeg {
    fn from(letters: &str) -> RtppLeg {
        RtppLeg {
            letters: letters.to_string(),
            ip: None,
        }
    }
}

impl From<&RtppLeg> for RtppLeg {
    fn from(leg: &RtppLeg) -> RtppLeg {
        leg.clone()
    }
}

/// RTPProxy's letter for an interface name: its two bridge-mode interfaces, `internal` (`i`)
/// and `external` (`e`).
fn rtpproxy_iface(name: &str) -> Option<char> {
    match name.to_ascii_lowercase().as_str() {
        "internal" | "i" => Some('i'),
        "external" | "e" => Some('e'),
        _ => None,
    }
}

/// The RTPProxy side of a policy's per-leg options: the letters and addresses of each leg's
/// SDP (`(caller's, callee's)`), or why RTPProxy nodes cannot carry the calls.
///
/// * `type`: RTPProxy relays the packets as they come and never rewrites the profile, so only
///   `RTP/AVP` (plain RTP, what it relays) is possible; SRTP, DTLS and AVPF need an ng node.
/// * `iface`: RTPProxy in bridge mode has an internal and an external interface; each SDP's
///   commands get the pair OpenSIPS users write (`ei`: from the external sender to the
///   internal receiver), a leg that names none being external (the modules' default `ee`).
/// * `ip`: the proxy writes it into that leg's SDP (OpenSIPS' `rtpproxy_offer(flags, ip)`).
fn rtpproxy_legs(p: &MediaPolicy) -> Result<(RtppLeg, RtppLeg), String> {
    for (name, leg) in [("caller", &p.caller), ("callee", &p.callee)] {
        if let Some(t) = &leg.transport {
            if !t.eq_ignore_ascii_case("RTP/AVP") {
                return Err(format!(
                    "the {name} leg's type {t} needs an ng relay: RTPProxy relays RTP/AVP as it comes"
                ));
            }
        }
    }
    let iface = |name: &str, leg: &anchorage_config::proxy::LegMediaOptions| {
        leg.iface
            .as_deref()
            .map(|i| {
                rtpproxy_iface(i).ok_or_else(|| {
                    format!(
                        "the {name} leg's iface {i:?} is not one of RTPProxy's interfaces (internal, external)"
                    )
                })
            })
            .transpose()
    };
    // A leg that names none is on the external interface (the modules' default pair, `ee`).
    let pair = match (iface("caller", &p.caller)?, iface("callee", &p.callee)?) {
        (None, None) => None,
        (a, b) => Some((a.unwrap_or('e'), b.unwrap_or('e'))),
    };
    let letters = |own: &str, from: Option<char>, to: Option<char>| match (from, to) {
        (Some(f), Some(t)) => format!("{own}{f}{t}"),
        _ => own.to_string(),
    };
    Ok((
        RtppLeg {
            letters: letters(
                &p.caller.rtpproxy_flags,
                pair.map(|p| p.1),
                pair.map(|p| p.0),
            ),
            ip: p.caller.ip,
        },
        RtppLeg {
            letters: letters(
                &p.callee.rtpproxy_flags,
                pair.map(|p| p.0),
                pair.map(|p| p.1),
            ),
            ip: p.callee.ip,
        },
    ))
}

impl Policy {
    /// The active policy of a configured one (`None`: no anchoring).
    pub fn of(p: &MediaPolicy) -> Option<Policy> {
        use crate::reanchor::{direction_flags, LegOptions};
        if p.disabled {
            return None;
        }
        // The per-leg `type`, `ip` and `iface` become ng options of the SDP that leg gets;
        // the interfaces go into the offer as a `direction` pair.
        let leg = |l: &anchorage_config::proxy::LegMediaOptions| LegOptions {
            flags: None,
            transport: l.transport.clone(),
            ip: l.ip,
            iface: l.iface.clone(),
        };
        let (caller, callee) = (leg(&p.caller), leg(&p.callee));
        let mut callee_flags = callee.applied_to(&p.callee_flags);
        if let Some(direction) = direction_flags(&caller, &callee) {
            callee_flags = format!("{callee_flags} {direction}").trim().to_string();
        }
        let (caller_rtpproxy, callee_rtpproxy, rtpproxy_unfit) = match rtpproxy_legs(p) {
            Ok((a, b)) => (a, b, None),
            Err(why) => (
                p.caller.rtpproxy_flags.as_str().into(),
                p.callee.rtpproxy_flags.as_str().into(),
                Some(why),
            ),
        };
        Some(Policy {
            set: p.set.clone()?,
            caller_flags: caller.applied_to(&p.caller_flags),
            callee_flags,
            caller_rtpproxy,
            callee_rtpproxy,
            rtpproxy_unfit,
        })
    }
}

/// One leg's SDP for the relay: an offer or an answer, engine-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct SdpLeg {
    /// The Call-ID.
    pub call_id: String,
    /// The offerer's tag (in an answer too: the tag of the party that made the offer).
    pub from_tag: String,
    /// The answerer's tag, once known.
    pub to_tag: Option<String>,
    /// A fork branch's own session.
    pub via_branch: Option<String>,
    /// The SDP as the party sent it.
    pub sdp: Bytes,
    /// ng `rtpp-flags` for the SDP the other party gets (ng nodes).
    pub flags: String,
    /// OpenSIPS flag letters for it (RTPProxy nodes).
    pub rtpproxy_flags: String,
    /// The address an RTPProxy node's SDP names instead of the node's own (RTPProxy nodes).
    pub rtpproxy_ip: Option<IpAddr>,
}

/// What the proxy asks of a relay node, whatever its engine: each call leg's SDP in, the SDP
/// for the other side out; or the end of sessions.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaRequest {
    /// An offer (from `from_tag`).
    Offer(SdpLeg),
    /// The answer to the offer of `from_tag` (from `to_tag`).
    Answer(SdpLeg),
    /// The end of a call's sessions: all of them, or one fork branch's.
    Delete {
        /// The Call-ID.
        call_id: String,
        /// With `via_branch`: the offerer's tag.
        from_tag: Option<String>,
        /// One fork branch only.
        via_branch: Option<String>,
    },
}

impl MediaRequest {
    /// The OpenSIPS flag letters and advertised address for the SDP this request produces
    /// (RTPProxy nodes).
    pub fn rtpproxy(mut self, leg: impl Into<RtppLeg>) -> MediaRequest {
        let options = leg.into();
        if let MediaRequest::Offer(leg) | MediaRequest::Answer(leg) = &mut self {
            leg.rtpproxy_flags = options.letters;
            leg.rtpproxy_ip = options.ip;
        }
        self
    }

    /// The ng request of this request.
    pub fn to_ng(&self) -> Request {
        match self {
            MediaRequest::Offer(leg) | MediaRequest::Answer(leg) => {
                let body = OfferAnswer {
                    call_id: CallId(leg.call_id.clone()),
                    from_tag: Tag(leg.from_tag.clone()),
                    to_tag: leg.to_tag.as_ref().map(|t| Tag(t.clone())),
                    via_branch: leg
                        .via_branch
                        .as_ref()
                        .map(|b| anchorage_ng::Branch(b.clone())),
                    sdp: leg.sdp.clone(),
                };
                Request {
                    kind: if matches!(self, MediaRequest::Answer(_)) {
                        RequestKind::Answer(body)
                    } else {
                        RequestKind::Offer(body)
                    },
                    flags: flags_of(&leg.flags),
                }
            }
            MediaRequest::Delete {
                call_id,
                from_tag,
                via_branch,
            } => Request {
                kind: RequestKind::Delete(Delete {
                    call_id: CallId(call_id.clone()),
                    from_tag: from_tag.as_ref().map(|t| Tag(t.clone())),
                    to_tag: None,
                    via_branch: via_branch.as_ref().map(|b| anchorage_ng::Branch(b.clone())),
                }),
                flags: flags_of(""),
            },
        }
    }
}

/// An offer (when `to_tag` is none or the SDP is a new offer in a dialog) or an answer.
pub fn offer_answer(
    answer: bool,
    call_id: &str,
    from_tag: &str,
    to_tag: Option<&str>,
    sdp: Bytes,
    flags: &str,
) -> MediaRequest {
    let leg = SdpLeg {
        call_id: call_id.to_string(),
        from_tag: from_tag.to_string(),
        to_tag: to_tag.map(str::to_string),
        via_branch: None,
        sdp,
        flags: flags.to_string(),
        rtpproxy_flags: String::new(),
        rtpproxy_ip: None,
    };
    if answer {
        MediaRequest::Answer(leg)
    } else {
        MediaRequest::Offer(leg)
    }
}

/// `request` (an offer or answer) for one fork branch (`via-branch`): each branch of a parallel
/// fork gets its own relay ports, and a losing branch can be deleted alone.
pub fn on_branch(mut request: MediaRequest, via_branch: &str) -> MediaRequest {
    if let MediaRequest::Offer(leg) | MediaRequest::Answer(leg) = &mut request {
        leg.via_branch = Some(via_branch.to_string());
    }
    request
}

/// A `delete` of one fork branch's session (`from-tag` + `via-branch`).
pub fn delete_branch(call_id: &str, from_tag: &str, via_branch: &str) -> MediaRequest {
    MediaRequest::Delete {
        call_id: call_id.to_string(),
        from_tag: Some(from_tag.to_string()),
        via_branch: Some(via_branch.to_string()),
    }
}

/// A `delete` of a whole call.
pub fn delete(call_id: &str) -> MediaRequest {
    MediaRequest::Delete {
        call_id: call_id.to_string(),
        from_tag: None,
        via_branch: None,
    }
}

/// The normalised flags of an `rtpp-flags` string.
fn flags_of(rtpp_flags: &str) -> anchorage_ng::Flags {
    let dict = if rtpp_flags.trim().is_empty() {
        Vec::new()
    } else {
        vec![("rtpp-flags".to_string(), Value::text(rtpp_flags))]
    };
    normalise(&dict).1
}

#[cfg(test)]
mod tests {
    use super::super::tests::{epoch, relays};
    use super::*;

    #[test]
    fn cookies_carry_the_node_id_and_differ_between_process_starts() {
        let a = cookie_prefix("node one", 1);
        let b = cookie_prefix("node one", 2);
        assert!(a.starts_with("node-one-"), "{a}");
        assert_ne!(a, b, "two starts of one node");
        assert_ne!(cookie_prefix("n1", 7), cookie_prefix("n2", 7), "two nodes");
        // What goes on the wire: the prefix, then the client and node, then a counter.
        let mut r = relays();
        r.handle_timeout(epoch());
        let (_, ping) = r.poll_transmit().unwrap();
        let text = String::from_utf8_lossy(&ping).to_string();
        assert!(text.starts_with("n1-00000001-p0_0 "), "{text}");
    }

    #[test]
    fn per_leg_policy_options_become_ng_options() {
        let cfg = anchorage_config::parse(
            "[[proxy.relay_set]]\nname = \"main\"\nnodes = [{ name = \"a\", ng = \"127.0.0.1:2223\" }]\n\n\
             [proxy.media]\nset = \"main\"\ncallee_flags = \"replace-origin\"\n\
             caller = { ip = \"203.0.113.5\" }\ncallee = { type = \"RTP/SAVP\", iface = \"pub\" }\n",
        )
        .unwrap();
        let policy = Policy::of(&cfg.proxy.media).unwrap();
        let offer = flags_of(&policy.callee_flags);
        assert!(offer.replace.origin);
        assert_eq!(
            offer.transport_protocol,
            Some(anchorage_ng::TransportProtocol::RtpSavp)
        );
        assert_eq!(
            offer.direction,
            vec!["default".to_string(), "pub".to_string()]
        );
        let answer = flags_of(&policy.caller_flags);
        assert_eq!(answer.media_address, Some("203.0.113.5".parse().unwrap()));
    }

    #[test]
    fn requests_carry_the_policy_flags() {
        let offer = offer_answer(
            false,
            "c1",
            "ft",
            None,
            Bytes::from_static(b"v=0\r\n"),
            "replace-origin ICE=remove",
        );
        let offer = offer.to_ng();
        let RequestKind::Offer(body) = &offer.kind else {
            panic!()
        };
        assert_eq!(body.from_tag.0, "ft");
        assert!(
            offer.flags.unrecognised().is_empty(),
            "{:?}",
            offer.flags.unrecognised()
        );
        let dict = offer.to_dict();
        assert!(dict.iter().any(|(k, _)| k == "command"));
    }
}
