//! The requests the proxy builds from SIP (offer, answer, delete, per fork branch) in
//! engine-neutral terms ([`MediaRequest`]) and their ng translation, the media policy they
//! carry, and the prefix of the proxy's cookies.

use anchorage_config::proxy::MediaPolicy;
use anchorage_ng::{normalise, CallId, Delete, OfferAnswer, Request, RequestKind, Tag, Value};
use bytes::Bytes;

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
    /// OpenSIPS flag letters for the SDP sent to the caller (RTPProxy nodes).
    pub caller_rtpproxy: String,
    /// OpenSIPS flag letters for the SDP sent to the callee (RTPProxy nodes).
    pub callee_rtpproxy: String,
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
        Some(Policy {
            set: p.set.clone()?,
            caller_flags: caller.applied_to(&p.caller_flags),
            callee_flags,
            caller_rtpproxy: p.caller.rtpproxy_flags.clone(),
            callee_rtpproxy: p.callee.rtpproxy_flags.clone(),
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
    /// The OpenSIPS flag letters for the SDP this request produces (RTPProxy nodes).
    pub fn rtpproxy(mut self, letters: &str) -> MediaRequest {
        if let MediaRequest::Offer(leg) | MediaRequest::Answer(leg) = &mut self {
            leg.rtpproxy_flags = letters.to_string();
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
