//! The proxy core's call records ([`anchorage_proxy::node::CallRecord`]: its own types, relay
//! nodes by name, times on the wall clock) to and from the store's versioned format
//! ([`anchorage_store::CallRecord`]). Two types on purpose: the core's follows the core, the
//! store's is a wire format that later versions must still read.

use std::time::Instant;

use anchorage_proxy::dialog::{Dialog, DialogId, DialogState, Leg, Renumber};
use anchorage_proxy::media::RtppLeg;
use anchorage_proxy::node::{
    CallRecord as CoreRecord, DialogRecord as CoreDialog, InviteBranch, LegMedia,
    MediaRecord as CoreMedia, MoveRecord as CoreMove, OpenInvite,
};
use anchorage_proxy::Transport;
use anchorage_store as store;
use bytes::Bytes;

/// Why a record could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// An SDP is not UTF-8 text (the store keeps SDP as text).
    #[error(transparent)]
    Record(#[from] store::RecordError),
}

/// The store's record of a call the core exported, owned by node `owner` at `now_unix_ms`.
pub fn to_store(
    r: &CoreRecord,
    owner: &str,
    now_unix_ms: u64,
) -> Result<store::CallRecord, ConvertError> {
    let mut out = store::CallRecord::new(r.call_id.clone(), owner, now_unix_ms);
    out.dialogs = r.dialogs.iter().map(dialog_to_store).collect();
    out.media = r.media.as_ref().map(media_to_store).transpose()?;
    out.moving = r
        .moving
        .as_ref()
        .map(|m| -> Result<store::MoveRecord, ConvertError> {
            Ok(store::MoveRecord {
                job: 0,
                trigger: String::new(),
                old_node: r.media.as_ref().map(|m| m.node.clone()).unwrap_or_default(),
                new_node: Some(m.to.clone()),
                stage: if m.invites_out {
                    store::MoveStage::Legs
                } else {
                    store::MoveStage::Offer
                },
                started_unix_ms: now_unix_ms,
                sdp_for_caller: sdp(&m.sdp_for[0], "the caller's SDP of a move")?,
                sdp_for_callee: sdp(&m.sdp_for[1], "the callee's SDP of a move")?,
                sent_to_caller: m.sent[0],
                sent_to_callee: m.sent[1],
            })
        })
        .transpose()?;
    out.open_invite = (!r.open_invite.is_empty()).then(|| {
        r.open_invite
            .iter()
            .map(|b| store::InviteDestination {
                branch: b.branch.clone(),
                destination: b.destination,
                transport: transport_to_store(b.transport),
            })
            .collect()
    });
    out.open_invite_request = r.open_invite_request.as_ref().and_then(|i| {
        Some(store::OpenInviteRecord {
            // A request that is not UTF-8 is not kept: a response reaching another node is
            // then forwarded without making the dialog, as before.
            request: String::from_utf8(i.request.to_vec()).ok()?,
            source: i.source,
            transport: transport_to_store(i.transport),
            local: i.local,
        })
    });
    // The reservations of the confirmed dialog are the call's.
    if let Some(d) = r
        .dialogs
        .iter()
        .find(|d| d.dialog.state == DialogState::Confirmed)
    {
        out.cseq_reserved = store::CseqReserved {
            to_callee: d.dialog.renumber.reserved_to_callee,
            to_caller: d.dialog.renumber.reserved_to_caller,
        };
    }
    Ok(out)
}

/// The core's record of a call the store gave back; `now` stands in for the dialogs' creation
/// instants, which the core recomputes from their wall-clock times.
pub fn from_store(r: store::CallRecord, now: Instant) -> Result<CoreRecord, ConvertError> {
    let call_id = r.call_id.clone();
    let reserved = r.cseq_reserved;
    let dialogs = r
        .dialogs
        .into_iter()
        .map(|d| {
            let mut d = dialog_from_store(&call_id, d, now);
            d.dialog.renumber.reserved_to_callee = reserved.to_callee;
            d.dialog.renumber.reserved_to_caller = reserved.to_caller;
            d
        })
        .collect();
    let moving = r.moving.and_then(|m| {
        Some(CoreMove {
            to: m.new_node?,
            invites_out: m.stage == store::MoveStage::Legs,
            sdp_for: [
                m.sdp_for_caller.map(Bytes::from),
                m.sdp_for_callee.map(Bytes::from),
            ],
            sent: [m.sent_to_caller, m.sent_to_callee],
        })
    });
    let open_invite = r
        .open_invite
        .unwrap_or_default()
        .into_iter()
        .map(|b| InviteBranch {
            branch: b.branch,
            destination: b.destination,
            transport: transport_from_store(b.transport),
        })
        .collect();
    let open_invite_request = r.open_invite_request.map(|i| OpenInvite {
        request: Bytes::from(i.request),
        source: i.source,
        transport: transport_from_store(i.transport),
        local: i.local,
    });
    Ok(CoreRecord {
        call_id,
        dialogs,
        media: r.media.map(media_from_store),
        moving,
        open_invite,
        open_invite_request,
    })
}

fn transport_to_store(t: Transport) -> store::Transport {
    match t {
        Transport::Udp => store::Transport::Udp,
        Transport::Tcp => store::Transport::Tcp,
    }
}

fn transport_from_store(t: store::Transport) -> Transport {
    match t {
        store::Transport::Udp => Transport::Udp,
        store::Transport::Tcp => Transport::Tcp,
    }
}

fn leg_to_store(l: &Leg) -> store::LegRecord {
    store::LegRecord {
        tag: l.tag.clone(),
        remote_target: l.remote_target.clone(),
        source: l.source,
        transport: l.transport.map(transport_to_store),
        local: l.local,
        last_cseq: l.last_cseq,
    }
}

fn leg_from_store(l: store::LegRecord) -> Leg {
    Leg {
        tag: l.tag,
        remote_target: l.remote_target,
        source: l.source,
        transport: l.transport.map(transport_from_store),
        local: l.local,
        last_cseq: l.last_cseq,
    }
}

fn dialog_to_store(d: &CoreDialog) -> store::DialogRecord {
    let dialog = &d.dialog;
    let n = dialog.renumber;
    store::DialogRecord {
        caller_tag: dialog.id.caller_tag.clone(),
        callee_tag: dialog.id.callee_tag.clone(),
        state: match dialog.state {
            DialogState::Early => store::DialogState::Early,
            DialogState::Confirmed => store::DialogState::Confirmed,
        },
        caller_identity: dialog.caller_identity.clone(),
        callee_identity: dialog.callee_identity.clone(),
        record_route: dialog.record_route.clone(),
        caller: leg_to_store(&dialog.caller),
        callee: leg_to_store(&dialog.callee),
        renumber: store::RenumberRecord {
            to_callee: n.to_callee,
            to_caller: n.to_caller,
            own_to_callee: n.own_to_callee,
            own_to_caller: n.own_to_caller,
            invite_from_caller: n.invite_from_caller.map(|(seq, offset)| [seq, offset]),
            invite_from_callee: n.invite_from_callee.map(|(seq, offset)| [seq, offset]),
        },
        created_unix_ms: u64::try_from(d.created_unix_ms).unwrap_or(0),
    }
}

fn dialog_from_store(call_id: &str, d: store::DialogRecord, now: Instant) -> CoreDialog {
    let n = d.renumber;
    CoreDialog {
        dialog: Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                caller_tag: d.caller_tag,
                callee_tag: d.callee_tag,
            },
            state: match d.state {
                store::DialogState::Early => DialogState::Early,
                store::DialogState::Confirmed => DialogState::Confirmed,
            },
            caller: leg_from_store(d.caller),
            callee: leg_from_store(d.callee),
            record_route: d.record_route,
            created: now,
            caller_identity: d.caller_identity,
            callee_identity: d.callee_identity,
            renumber: Renumber {
                to_callee: n.to_callee,
                to_caller: n.to_caller,
                own_to_callee: n.own_to_callee,
                own_to_caller: n.own_to_caller,
                invite_from_caller: n.invite_from_caller.map(|[seq, offset]| (seq, offset)),
                invite_from_callee: n.invite_from_callee.map(|[seq, offset]| (seq, offset)),
                reserved_to_callee: 0,
                reserved_to_caller: 0,
            },
        },
        created_unix_ms: i64::try_from(d.created_unix_ms).unwrap_or(i64::MAX),
    }
}

fn sdp(body: &Option<Bytes>, what: &'static str) -> Result<Option<String>, ConvertError> {
    body.as_ref()
        .map(|b| store::record::sdp_text(b, what))
        .transpose()
        .map_err(ConvertError::from)
}

fn leg_media_to_store(
    l: &LegMedia,
    who: &'static str,
) -> Result<store::LegMediaRecord, ConvertError> {
    Ok(store::LegMediaRecord {
        received: sdp(&l.received, who)?,
        sent: sdp(&l.sent, who)?,
        origin_sent: l
            .origin_sent
            .as_ref()
            .map(|(username, session_id, version)| store::OriginRecord {
                username: username.clone(),
                session_id: session_id.clone(),
                version: *version,
            }),
    })
}

fn leg_media_from_store(l: store::LegMediaRecord) -> LegMedia {
    LegMedia {
        received: l.received.map(Bytes::from),
        sent: l.sent.map(Bytes::from),
        origin_sent: l.origin_sent.map(|o| (o.username, o.session_id, o.version)),
    }
}

fn rtpp_to_store(l: &RtppLeg) -> store::RtppLegRecord {
    store::RtppLegRecord {
        letters: l.letters.clone(),
        ip: l.ip,
    }
}

fn rtpp_from_store(l: store::RtppLegRecord) -> RtppLeg {
    RtppLeg {
        letters: l.letters,
        ip: l.ip,
    }
}

fn media_to_store(m: &CoreMedia) -> Result<store::MediaRecord, ConvertError> {
    Ok(store::MediaRecord {
        node: m.node.clone(),
        set: m.set.clone(),
        caller_flags: m.caller_flags.clone(),
        callee_flags: m.callee_flags.clone(),
        caller_rtpproxy: rtpp_to_store(&m.caller_rtpproxy),
        callee_rtpproxy: rtpp_to_store(&m.callee_rtpproxy),
        rtpproxy_unfit: m.rtpproxy_unfit.clone(),
        caller_tag: m.caller_tag.clone(),
        caller: leg_media_to_store(&m.caller, "the caller's SDP")?,
        callee: leg_media_to_store(&m.callee, "the callee's SDP")?,
        answer_in_ack: m.answer_in_ack,
        answer_in_prack: m.answer_in_prack,
    })
}

fn media_from_store(m: store::MediaRecord) -> CoreMedia {
    CoreMedia {
        node: m.node,
        set: m.set,
        caller_flags: m.caller_flags,
        callee_flags: m.callee_flags,
        caller_rtpproxy: rtpp_from_store(m.caller_rtpproxy),
        callee_rtpproxy: rtpp_from_store(m.callee_rtpproxy),
        rtpproxy_unfit: m.rtpproxy_unfit,
        caller_tag: m.caller_tag,
        caller: leg_media_from_store(m.caller),
        callee: leg_media_from_store(m.callee),
        answer_in_ack: m.answer_in_ack,
        answer_in_prack: m.answer_in_prack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn now() -> Instant {
        Instant::now()
    }

    fn core_record(now: Instant) -> CoreRecord {
        let leg = |tag: &str, port: u16| Leg {
            tag: tag.into(),
            remote_target: Some(format!("sip:{tag}@192.0.2.1:{port}")),
            source: Some(format!("192.0.2.1:{port}").parse().unwrap()),
            transport: Some(Transport::Udp),
            local: Some("127.0.0.1:5060".parse().unwrap()),
            last_cseq: Some(3),
        };
        CoreRecord {
            call_id: "c1".into(),
            dialogs: vec![CoreDialog {
                dialog: Dialog {
                    id: DialogId {
                        call_id: "c1".into(),
                        caller_tag: "a".into(),
                        callee_tag: "b".into(),
                    },
                    state: DialogState::Confirmed,
                    caller: leg("a", 5070),
                    callee: leg("b", 5080),
                    record_route: vec!["<sip:127.0.0.1:5060;lr>".into()],
                    created: now,
                    caller_identity: "<sip:a@x>;tag=a".into(),
                    callee_identity: "<sip:b@x>;tag=b".into(),
                    renumber: Renumber {
                        to_callee: 2,
                        to_caller: 1,
                        own_to_callee: 5,
                        own_to_caller: 2,
                        invite_from_caller: Some((3, 1)),
                        invite_from_callee: None,
                        reserved_to_callee: 21,
                        reserved_to_caller: 18,
                    },
                },
                created_unix_ms: 1_800_000_000_123,
            }],
            media: Some(CoreMedia {
                node: "r2".into(),
                set: "m".into(),
                caller_flags: "replace-origin".into(),
                callee_flags: "RTP/SAVP".into(),
                caller_rtpproxy: "r".into(),
                callee_rtpproxy: RtppLeg {
                    letters: "coei".into(),
                    ip: Some("198.51.100.250".parse().unwrap()),
                },
                rtpproxy_unfit: Some("the callee leg's type RTP/SAVP needs an ng relay".into()),
                caller_tag: "a".into(),
                caller: LegMedia {
                    received: Some(Bytes::from_static(b"v=0\r\n")),
                    sent: None,
                    origin_sent: Some(("relay".into(), "5".into(), 7)),
                },
                callee: LegMedia::default(),
                answer_in_ack: false,
                answer_in_prack: true,
            }),
            moving: Some(CoreMove {
                to: "r3".into(),
                invites_out: true,
                sdp_for: [Some(Bytes::from_static(b"v=0\r\n")), None],
                sent: [true, false],
            }),
            open_invite: vec![InviteBranch {
                branch: "z9hG4bK-anc-x".into(),
                destination: "192.0.2.7:5080".parse().unwrap(),
                transport: Transport::Tcp,
            }],
            open_invite_request: Some(OpenInvite {
                request: Bytes::from_static(b"INVITE sip:b@x SIP/2.0\r\nCall-ID: c1\r\n\r\n"),
                source: "192.0.2.1:5070".parse().unwrap(),
                transport: Transport::Udp,
                local: "127.0.0.1:5060".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn a_record_goes_to_the_store_format_and_comes_back_equal() {
        let now = now();
        let core = core_record(now);
        let stored = to_store(&core, "n1", 1_800_000_001_000).unwrap();
        assert_eq!(
            (stored.owner.as_str(), stored.v),
            ("n1", store::RECORD_VERSION)
        );
        let bytes = stored.encode();
        let back = from_store(store::CallRecord::decode(&bytes).unwrap(), now).unwrap();
        assert_eq!(back, core);
    }

    #[test]
    fn an_sdp_that_is_not_text_is_refused_with_the_leg_it_belongs_to() {
        let mut core = core_record(now());
        if let Some(m) = core.media.as_mut() {
            m.callee.sent = Some(Bytes::from_static(b"\xff\xfe"));
        }
        let err = to_store(&core, "n1", 0).unwrap_err();
        assert!(err.to_string().contains("callee"), "{err}");
    }
}
