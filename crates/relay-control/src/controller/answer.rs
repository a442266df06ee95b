//! The ng `answer`: the answerer's SDP completes a dialog (its address, rtcp-mux, keys) and
//! the relay's SDP for the offerer is built from it.

use anchorage_ng::{ErrorReason, Flags, OfferAnswer};
use anchorage_relay::stun::IceCredentials;
use anchorage_relay::StreamFlags;

use super::negotiate::{negotiate_answer, secure_out, Signal};
use super::outgoing::{looped, rewritten_for, wants_ice, Outgoing};
use super::streams::{close_muxed_rtcp, reopen_rtcp};
use super::{fail, Controller, Handled, MediaAction, Now, PortBinder, Refusal, SECOND_US};
use crate::sdp_out::StreamOut;
use crate::session::{at, Stream};

impl Controller {
    pub(super) fn answer(
        &mut self,
        oa: &OfferAnswer,
        flags: &Flags,
        now: Now,
        binder: &mut dyn PortBinder,
    ) -> Result<Handled, Refusal> {
        let call_id = oa.call_id.as_str();
        let to = oa
            .to_tag
            .as_ref()
            .map(|t| t.as_str())
            .ok_or_else(|| fail(ErrorReason::NoToTag))?;
        let from = oa.from_tag.as_str();
        let branch = oa.via_branch.as_ref().map(|b| b.as_str());
        let Some((sdp, streams_in)) = self.read_sdp(oa, flags)? else {
            return Ok(looped(oa));
        };
        let stream_flags = self.stream_flags(flags);
        let config = &self.config;
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| fail(ErrorReason::UnknownCallId))?;
        let (index, answerer) = call
            .answer_target(from, to, branch)
            .ok_or_else(|| fail(ErrorReason::InvalidDialogueAssociation))?;
        call.last_signal = now.unix_us / SECOND_US;
        let dialog = call
            .dialogs
            .get_mut(index)
            .ok_or_else(|| fail(ErrorReason::InvalidDialogueAssociation))?;
        let offerer = answerer.other();
        // Answers to a move's new offer to the party that had offered: the other side's
        // rtcp-mux stays as it is.
        let reverse: Vec<bool> = dialog
            .streams
            .iter()
            .map(|s| s.reoffered[at(answerer)])
            .collect();
        let reversed = |media: usize| reverse.get(media).copied().unwrap_or(false);
        // Encryption first, on copies, so that a refusal changes nothing.
        let mut renegotiated: Vec<Stream> = dialog
            .streams
            .iter()
            .take(streams_in.len())
            .cloned()
            .collect();
        let signal = Signal::new(&sdp, flags, config.dtls);
        for (media, stream) in renegotiated.iter_mut().enumerate() {
            negotiate_answer(stream, signal, media, answerer, &mut self.key_rng)?;
        }
        let mux = &flags.rtcp_mux;
        // RTCP sockets closed under rtcp-mux that this answer needs again, bound before
        // anything changes.
        let mut reopen = Vec::new();
        for (media, (stream, s_in)) in renegotiated.iter().zip(&streams_in).enumerate() {
            if !stream.rtcp_open[at(answerer)] && !s_in.rtcp_mux {
                reopen.push((media, answerer));
            }
            let offerer_muxed = if reversed(media) {
                stream.mux[at(offerer)]
            } else {
                offerer_mux(stream, s_in.rtcp_mux, offerer, mux)
            };
            if !stream.rtcp_open[at(offerer)] && !offerer_muxed {
                reopen.push((media, offerer));
            }
        }
        let mut actions = reopen_rtcp(
            &config.interfaces,
            dialog.key,
            &renegotiated,
            &reopen,
            binder,
        )?;
        for (stream, new) in dialog.streams.iter_mut().zip(renegotiated) {
            *stream = new;
        }
        for &(media, side) in &reopen {
            if let Some(stream) = dialog.streams.get_mut(media) {
                stream.rtcp_open[at(side)] = true;
            }
        }
        dialog.tags[at(answerer)] = Some(to.to_owned());
        if let Some(label) = &flags.label {
            dialog.labels[at(answerer)] = Some(label.clone());
        }
        let key = dialog.key;
        if wants_ice(flags) && dialog.ice[at(offerer)].is_none() {
            let creds = IceCredentials::random(&mut self.rng);
            dialog.ice[at(offerer)] = Some(creds);
            dialog.flags[at(offerer)].ice = Some(creds);
        }
        for (media, (stream, s_in)) in dialog.streams.iter_mut().zip(&streams_in).enumerate() {
            stream.peer[at(answerer)] = s_in.peer;
            stream.mux[at(answerer)] = s_in.rtcp_mux;
            if !reversed(media) {
                stream.mux[at(offerer)] = offerer_mux(stream, s_in.rtcp_mux, offerer, mux);
            }
            for side in [answerer, offerer] {
                actions.push(MediaAction::Update {
                    key,
                    media,
                    side,
                    remote: stream.peer[at(side)],
                    rtcp_mux: stream.mux[at(side)],
                    flags: if side == answerer {
                        stream.leg_flags(
                            side,
                            StreamFlags {
                                ice: dialog.ice[at(answerer)],
                                ..stream_flags
                            },
                        )
                    } else {
                        stream.leg_flags(side, dialog.flags[at(offerer)])
                    },
                });
            }
        }
        dialog.flags[at(answerer)] = StreamFlags {
            ice: dialog.ice[at(answerer)],
            ..stream_flags
        };
        dialog.liveness.answered(now.mono);
        // Legs whose rtcp-mux is now settled give up their RTCP sockets (RFC 5761).
        let closes = close_muxed_rtcp(
            &config.interfaces,
            key,
            &mut dialog.streams,
            streams_in.len(),
        );
        actions.extend(closes);
        let out: Vec<Option<StreamOut>> = (0..streams_in.len())
            .map(|i| {
                dialog.streams.get(i).map(|s| StreamOut {
                    rtp_port: s.ports[at(offerer)].rtp,
                    rtcp_port: s.ports[at(offerer)].rtcp(),
                    mux: s.mux[at(offerer)],
                    mux_only: s.mux[at(offerer)],
                    profile: s.transport[at(offerer)].profile(),
                    secure: secure_out(s, offerer, true, flags, config.dtls),
                })
            })
            .collect();
        let ice = wants_ice(flags)
            .then_some(dialog.ice[at(offerer)])
            .flatten();
        let out = Outgoing {
            sdp: &sdp,
            streams: &out,
            flags,
            ice,
            to: offerer,
        };
        rewritten_for(config, dialog, out, actions)
    }
}

/// Whether the relay answers the offerer of `stream` with rtcp-mux: it offered it, and the
/// answer accepted it or the options accept it whatever the answer says (`demux`, `accept`,
/// given with the offer or the answer) and `reject` was not asked. A DTLS offerer's rtcp-mux
/// is accepted whatever the answer: the relay's DTLS runs on the RTP port only.
fn offerer_mux(
    stream: &Stream,
    answer_mux: bool,
    offerer: anchorage_relay::Side,
    mux: &anchorage_ng::RtcpMux,
) -> bool {
    let dtls = stream.transport[at(offerer)].is_dtls();
    stream.offered_mux
        && (answer_mux || stream.mux_accepted || mux.demux || mux.accept || dtls)
        && !mux.reject
}
