//! What goes back to the caller of an offer or answer: the SDP rebuilt for the receiving
//! side, the address written into it, ICE-lite credentials, and the warnings about options
//! this relay ignores or does not carry out.

use std::net::IpAddr;

use anchorage_ng::{ErrorReason, Flags, OfferAnswer, Reply};
use anchorage_relay::stun::IceCredentials;
use anchorage_relay::{Interface, Side};
use anchorage_sdp::Session;

use super::{fail, Config, Controller, Handled, MediaAction, Refusal};
use crate::sdp_in::{self, StreamIn};
use crate::sdp_out::{self, Rewrite, StreamOut};
use crate::session::{at, Dialog};

/// The SDP an offer or answer sends on: the sender's, rebuilt for side `to`.
pub(super) struct Outgoing<'a> {
    /// The sender's SDP.
    pub sdp: &'a Session,
    /// Per `m=` line, the relay's ports and keying for `to`.
    pub streams: &'a [Option<StreamOut>],
    /// The command's options.
    pub flags: &'a Flags,
    /// The ICE-lite credentials `to` is given, if any.
    pub ice: Option<IceCredentials>,
    /// The side that receives it.
    pub to: Side,
}

/// The reply to an offer or answer: `out`'s SDP rebuilt for its receiver, on `config`'s
/// interfaces, with the receiver's `o=` state kept in `dialog`.
pub(super) fn rewritten_for(
    config: &Config,
    dialog: &mut Dialog,
    out: Outgoing<'_>,
    actions: Vec<MediaAction>,
) -> Result<Handled, Refusal> {
    let Outgoing {
        sdp,
        streams,
        flags,
        ice,
        to,
    } = out;
    let address = out_address(flags, &config.interfaces, dialog, to);
    let (rewritten, notes) = sdp_out::rewrite_with_notes(
        sdp,
        &Rewrite {
            address,
            streams,
            flags,
            instance: &config.instance,
            ice,
        },
        &mut dialog.origin[at(to)],
    )
    .map_err(|_| fail(ErrorReason::ErrorRewritingSdp))?;
    let mut reply = with_ice_warning(Reply::ok().with_sdp(rewritten), flags);
    if !notes.is_empty() {
        add_warning(&mut reply, notes.join("; "));
    }
    Ok(Handled { reply, actions })
}

impl Controller {
    /// The sender's SDP and what the relay reads from each of its `m=` lines; `None` when
    /// `loop protect` finds this relay's own mark in it (the SDP then goes back unchanged:
    /// [`looped`]).
    pub(super) fn read_sdp(
        &self,
        oa: &OfferAnswer,
        flags: &Flags,
    ) -> Result<Option<(Session, Vec<StreamIn>)>, Refusal> {
        let sdp =
            Session::parse(oa.sdp.clone()).map_err(|_| fail(ErrorReason::FailedToParseSdp))?;
        if flags.loop_protect && sdp_out::is_looped(&sdp, &self.config.instance) {
            return Ok(None);
        }
        let streams_in = sdp_in::read(&sdp, source_override(flags))
            .map_err(|_| fail(ErrorReason::IncompleteSdp))?;
        Ok(Some((sdp, streams_in)))
    }
}

/// The reply to an offer or answer that already passed this relay: its SDP unchanged.
pub(super) fn looped(oa: &OfferAnswer) -> Handled {
    Handled::reply(Reply::ok().with_sdp(oa.sdp.clone()))
}

/// Appends to a reply's warning.
pub(super) fn add_warning(reply: &mut Reply, more: String) {
    reply.warning = Some(match reply.warning.take() {
        Some(w) => format!("{w}; {more}"),
        None => more,
    });
}

/// `SIP source address` with `received-from`: the SIP source address replaces the SDP's.
pub(super) fn source_override(flags: &Flags) -> Option<IpAddr> {
    flags
        .received_from
        .filter(|_| flags.sip_source_address && !flags.trust_address)
}

/// The address written into the SDP for `side`: `media address`, else its interface's
/// advertised address.
fn out_address(flags: &Flags, interfaces: &[Interface], dialog: &Dialog, side: Side) -> IpAddr {
    flags.media_address.unwrap_or_else(|| {
        dialog
            .streams
            .first()
            .and_then(|s| interfaces.get(s.iface[at(side)]))
            .or_else(|| interfaces.first())
            .map_or(IpAddr::from([127, 0, 0, 1]), |i| i.advertised)
    })
}

/// The warning about ignored options: what `anchorage-ng` does not model, except the keys
/// this relay reads itself (`endpoint-learning`, see [`Controller::stream_flags`]).
pub(super) fn ignored_options(flags: &Flags) -> Option<String> {
    let honoured = |key: &str| {
        anchorage_ng::normalise_key(key) == anchorage_ng::normalise_key("endpoint-learning")
    };
    let unknown = if flags.other_keys.iter().any(|(k, _)| honoured(k)) {
        let mut shown = flags.clone();
        shown.other_keys.retain(|(k, _)| !honoured(k));
        shown.warning()
    } else {
        flags.warning()
    };
    let unapplied = unapplied_options(flags);
    match (unknown, unapplied.is_empty()) {
        (None, true) => None,
        (Some(w), true) => Some(w),
        (unknown, false) => {
            let known = format!("Not applied by this relay: {}", unapplied.join(", "));
            Some(match unknown {
                Some(w) => format!("{w}; {known}"),
                None => known,
            })
        }
    }
}

/// Options this relay understands but does not carry out (so the caller is told, not misled):
/// transcoding, recording, and `no port latching` (ports are always kept).
/// (`codec-strip`/`except`/`mask`/`offer` are applied: see `sdp_out`.)
fn unapplied_options(flags: &Flags) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !flags.codec.transcode.is_empty() {
        out.push("codec-transcode");
    }
    if flags.record_call == Some(true) {
        out.push("record-call");
    }
    if flags.no_port_latching {
        out.push("no-port-latching");
    }
    let sdes = &flags.sdes;
    for (set, name) in [
        (sdes.unencrypted_srtp, "SDES-unencrypted_srtp"),
        (sdes.unencrypted_srtcp, "SDES-unencrypted_srtcp"),
        (sdes.unauthenticated_srtp, "SDES-unauthenticated_srtp"),
        (sdes.prefer, "SDES-prefer"),
    ] {
        if set {
            out.push(name);
        }
    }
    out
}

pub(super) fn with_ice_warning(reply: Reply, flags: &Flags) -> Reply {
    use anchorage_ng::Ice;
    match flags.ice {
        Some(Ice::ForceRelay | Ice::Optional) => reply.with_warning(
            "ICE force-relay and optional are not supported by this relay: the parties' ICE \
             attributes were removed (ICE=force gives them the relay as an ICE-lite peer)",
        ),
        _ => reply,
    }
}

/// `ICE=force`: the relay takes part in ICE as an ICE-lite agent with host candidates.
pub(super) fn wants_ice(flags: &Flags) -> bool {
    flags.ice == Some(anchorage_ng::Ice::Force)
}

/// Gives `side` ICE credentials: remembered, and handed to the data plane with the leg's
/// options so its connectivity checks are answered.
pub(super) fn give_ice(
    dialog: &mut Dialog,
    side: Side,
    creds: IceCredentials,
    actions: &mut Vec<MediaAction>,
) {
    dialog.ice[at(side)] = Some(creds);
    dialog.flags[at(side)].ice = Some(creds);
    for (media, stream) in dialog.streams.iter().enumerate() {
        actions.push(MediaAction::Update {
            key: dialog.key,
            media,
            side,
            remote: stream.peer[at(side)],
            rtcp_mux: stream.mux[at(side)],
            flags: stream.leg_flags(side, dialog.flags[at(side)]),
        });
    }
}
