//! The ng `offer`: a new dialog (ports for both sides, the offerer's keys, the SDP for the
//! answerer) or a re-offer in an existing one (new `m=` lines get ports; every line is
//! renegotiated on copies first, so that a refusal changes nothing).

use anchorage_ng::{ErrorReason, Flags, OfferAnswer};
use anchorage_relay::stun::IceCredentials;
use anchorage_relay::{Liveness, Side, StreamFlags};
use anchorage_sdp::Session;

use super::negotiate::{negotiate_offer, secure_out, Signal};
use super::outgoing::{give_ice, looped, rewritten_for, wants_ice, Outgoing};
use super::streams::reopen_rtcp;
use super::{fail, Controller, Handled, MediaAction, Now, PortBinder, Refusal, SECOND_US};
use crate::sdp_in::StreamIn;
use crate::sdp_out::{OriginState, StreamOut};
use crate::session::{at, Call, Dialog, OfferTarget, SessionKey, Stream};

/// A re-offer in an existing dialog: which dialog and side, and what the offer says.
struct Reoffer<'a> {
    call_id: &'a str,
    /// The dialog's index in its call.
    index: usize,
    /// The offerer.
    side: Side,
    to: Option<&'a str>,
    sdp: &'a Session,
    streams_in: &'a [StreamIn],
    flags: &'a Flags,
    stream_flags: StreamFlags,
}

impl Controller {
    pub(super) fn offer(
        &mut self,
        oa: &OfferAnswer,
        flags: &Flags,
        now: Now,
        binder: &mut dyn PortBinder,
    ) -> Result<Handled, Refusal> {
        let Some((sdp, streams_in)) = self.read_sdp(oa, flags)? else {
            return Ok(looped(oa));
        };
        let call_id = oa.call_id.as_str();
        let from = oa.from_tag.as_str();
        let to = oa.to_tag.as_ref().map(|t| t.as_str());
        let branch = oa.via_branch.as_ref().map(|b| b.as_str());
        let is_new_call = !self.calls.contains_key(call_id);
        if is_new_call
            && self.config.max_sessions > 0
            && self.calls.len() as u64 >= self.config.max_sessions
        {
            self.statistics.rejected_sessions += 1;
            return Err(Refusal::Limit(
                ErrorReason::ParallelSessionLimit,
                flags.supports_load_limit,
            ));
        }
        let target = match self.calls.get(call_id) {
            Some(call) => call.offer_target(from, to, branch),
            None => OfferTarget::New,
        };
        let stream_flags = self.stream_flags(flags);
        let mut actions = Vec::new();
        let (index, offerer) = match target {
            OfferTarget::New => {
                let ifaces = self.pick_interfaces(flags, &streams_in)?;
                let mut streams = Vec::with_capacity(streams_in.len());
                for (index, s) in streams_in.iter().enumerate() {
                    let mut stream = match self.new_stream(ifaces, s, Side::A, now.mono, binder) {
                        Ok(stream) => stream,
                        Err(reply) => {
                            for stream in &streams {
                                self.release_unused(stream);
                            }
                            self.statistics.rejected_sessions += 1;
                            return Err(reply);
                        }
                    };
                    let signal = Signal::new(&sdp, flags, self.config.dtls);
                    let negotiated = negotiate_offer(
                        &mut stream,
                        signal,
                        index,
                        Side::A,
                        true,
                        &mut self.key_rng,
                    );
                    streams.push(stream);
                    if let Err(refusal) = negotiated {
                        for stream in &streams {
                            self.release_unused(stream);
                        }
                        return Err(refusal);
                    }
                }
                // `ICE=force`: the answerer gets our ICE credentials with the offer.
                let answerer_ice = wants_ice(flags).then(|| IceCredentials::random(&mut self.rng));
                let side_flags = [
                    stream_flags,
                    StreamFlags {
                        ice: answerer_ice,
                        ..stream_flags
                    },
                ];
                let pairs = self.media_pairs(&streams, side_flags, now.mono)?;
                let key = SessionKey(self.next_key);
                self.next_key += 1;
                let dialog = Dialog {
                    key,
                    tags: [Some(from.to_owned()), to.map(str::to_owned)],
                    branch: branch.map(str::to_owned),
                    labels: [flags.label.clone(), None],
                    streams,
                    offerer: Side::A,
                    liveness: Liveness::new(self.config.timeouts, now.mono),
                    origin: [OriginState::default(), OriginState::default()],
                    flags: side_flags,
                    ice: [None, answerer_ice],
                    created_us: now.unix_us,
                    snapshot: Vec::new(),
                    last_packet: None,
                };
                actions.push(MediaAction::Add {
                    key,
                    pairs,
                    tos: flags.tos,
                });
                self.keys.insert(key, call_id.to_owned());
                if is_new_call {
                    self.statistics.managed_sessions += 1;
                }
                let call = self
                    .calls
                    .entry(call_id.to_owned())
                    .or_insert_with(|| Call {
                        created_us: now.unix_us,
                        last_signal: now.unix_us / SECOND_US,
                        dialogs: Vec::new(),
                        delete_at: None,
                    });
                call.dialogs.push(dialog);
                (call.dialogs.len() - 1, Side::A)
            }
            OfferTarget::Existing { index, side } => {
                let reoffer = Reoffer {
                    call_id,
                    index,
                    side,
                    to,
                    sdp: &sdp,
                    streams_in: &streams_in,
                    flags,
                    stream_flags,
                };
                self.reoffer(reoffer, now, binder, &mut actions)?;
                (index, side)
            }
        };
        let answerer = offerer.other();
        let config = &self.config;
        let call = self
            .calls
            .get_mut(call_id)
            .ok_or_else(|| fail(ErrorReason::UnknownCallId))?;
        call.last_signal = now.unix_us / SECOND_US;
        call.delete_at = None;
        let dialog = call
            .dialogs
            .get_mut(index)
            .ok_or_else(|| fail(ErrorReason::InvalidDialogueAssociation))?;
        let mux = &flags.rtcp_mux;
        for s in &mut dialog.streams {
            s.mux_accepted = s.offered_mux && (mux.demux || mux.accept);
        }
        if wants_ice(flags) && dialog.ice[at(answerer)].is_none() {
            let creds = IceCredentials::random(&mut self.rng);
            give_ice(dialog, answerer, creds, &mut actions);
        }
        let ice = wants_ice(flags)
            .then_some(dialog.ice[at(answerer)])
            .flatten();
        let out: Vec<Option<StreamOut>> = dialog
            .streams
            .iter()
            .map(|s| {
                // DTLS-SRTP runs on the RTP port only: a DTLS receiver is offered rtcp-mux.
                let forward_mux = (s.offered_mux && !mux.demux && !mux.reject)
                    || mux.offer
                    || mux.require
                    || s.transport[at(answerer)].is_dtls();
                Some(StreamOut {
                    rtp_port: s.ports[at(answerer)].rtp,
                    rtcp_port: s.ports[at(answerer)].rtcp(),
                    mux: forward_mux,
                    mux_only: mux.require,
                    profile: s.transport[at(answerer)].profile(),
                    secure: secure_out(s, answerer, false, flags, config.dtls),
                })
            })
            .collect();
        let out = Outgoing {
            sdp: &sdp,
            streams: &out,
            flags,
            ice,
            to: answerer,
        };
        rewritten_for(config, dialog, out, actions)
    }

    /// A re-offer in an existing dialog: the data plane's changes go to `actions`.
    fn reoffer(
        &mut self,
        reoffer: Reoffer<'_>,
        now: Now,
        binder: &mut dyn PortBinder,
        actions: &mut Vec<MediaAction>,
    ) -> Result<(), Refusal> {
        let Reoffer {
            call_id,
            index,
            side,
            to,
            sdp,
            streams_in,
            flags,
            stream_flags,
        } = reoffer;
        let signal = Signal::new(sdp, flags, self.config.dtls);
        let (existing, ifaces, key, ice) = {
            let dialog = self
                .calls
                .get(call_id)
                .and_then(|c| c.dialogs.get(index))
                .ok_or_else(|| fail(ErrorReason::InvalidDialogueAssociation))?;
            let ifaces = dialog.streams.first().map_or([0, 0], |s| s.iface);
            (dialog.streams.len(), ifaces, dialog.key, dialog.ice)
        };
        // The ICE credentials each side was given stay with it.
        let side_flags = [
            StreamFlags {
                ice: ice[0],
                ..stream_flags
            },
            StreamFlags {
                ice: ice[1],
                ..stream_flags
            },
        ];
        // New m= lines first, so that running out of ports changes nothing.
        let mut added: Vec<Stream> = Vec::new();
        let release = |this: &mut Self, added: &[Stream]| {
            for stream in added {
                this.release_unused(stream);
            }
        };
        for (media, s) in streams_in.iter().enumerate().skip(existing) {
            let mut stream = match self.new_stream(ifaces, s, side, now.mono, binder) {
                Ok(stream) => stream,
                Err(reply) => {
                    release(self, &added);
                    return Err(reply);
                }
            };
            let negotiated =
                negotiate_offer(&mut stream, signal, media, side, true, &mut self.key_rng);
            added.push(stream);
            if let Err(refusal) = negotiated {
                release(self, &added);
                return Err(refusal);
            }
        }
        // The existing streams are negotiated on copies, so that a refusal changes nothing.
        let mut renegotiated: Vec<Stream> = self
            .calls
            .get(call_id)
            .and_then(|c| c.dialogs.get(index))
            .map(|d| d.streams.iter().take(streams_in.len()).cloned().collect())
            .unwrap_or_default();
        for (media, stream) in renegotiated.iter_mut().enumerate() {
            if let Err(refusal) =
                negotiate_offer(stream, signal, media, side, false, &mut self.key_rng)
            {
                release(self, &added);
                return Err(refusal);
            }
        }
        // RTCP sockets closed under rtcp-mux that this re-offer needs again: the offerer's if
        // it stops multiplexing, the receiver's since the relay's offer advertises its RTCP
        // port (unless `rtcp-mux require`) until the answer settles rtcp-mux again.
        let other = side.other();
        let mut reopen = Vec::new();
        for (media, (stream, s_in)) in renegotiated.iter().zip(streams_in).enumerate() {
            if !stream.rtcp_open[at(side)] && !s_in.rtcp_mux {
                reopen.push((media, side));
            }
            if !stream.rtcp_open[at(other)] && !flags.rtcp_mux.require {
                reopen.push((media, other));
            }
        }
        let opens = match reopen_rtcp(&self.config.interfaces, key, &renegotiated, &reopen, binder)
        {
            Ok(opens) => opens,
            Err(refusal) => {
                release(self, &added);
                return Err(refusal);
            }
        };
        let pairs = match self.media_pairs(&added, side_flags, now.mono) {
            Ok(pairs) => pairs,
            Err(refusal) => {
                release(self, &added);
                return Err(refusal);
            }
        };
        let dialog = self
            .calls
            .get_mut(call_id)
            .and_then(|c| c.dialogs.get_mut(index))
            .ok_or_else(|| fail(ErrorReason::InvalidDialogueAssociation))?;
        actions.extend(opens);
        for (media, (stream, (s_in, new))) in dialog
            .streams
            .iter_mut()
            .zip(streams_in.iter().zip(renegotiated))
            .enumerate()
        {
            let other_keys_changed = stream.srtp_keys(other) != new.srtp_keys(other);
            *stream = new;
            stream.peer[at(side)] = s_in.peer;
            stream.mux[at(side)] = s_in.rtcp_mux;
            stream.offered_mux = s_in.rtcp_mux;
            actions.push(MediaAction::Update {
                key,
                media,
                side,
                remote: s_in.peer,
                rtcp_mux: s_in.rtcp_mux,
                flags: stream.leg_flags(side, side_flags[at(side)]),
            });
            if other_keys_changed {
                actions.push(MediaAction::Update {
                    key,
                    media,
                    side: other,
                    remote: stream.peer[at(other)],
                    rtcp_mux: stream.mux[at(other)],
                    flags: stream.leg_flags(other, dialog.flags[at(other)]),
                });
            }
        }
        for &(media, side) in &reopen {
            if let Some(stream) = dialog.streams.get_mut(media) {
                stream.rtcp_open[at(side)] = true;
            }
        }
        dialog.streams.extend(added);
        if !pairs.is_empty() {
            actions.push(MediaAction::Extend {
                key,
                pairs,
                tos: flags.tos,
            });
        }
        if let Some(to) = to {
            let other = &mut dialog.tags[at(side.other())];
            if other.is_none() {
                *other = Some(to.to_owned());
            }
        }
        if let Some(label) = &flags.label {
            dialog.labels[at(side)] = Some(label.clone());
        }
        dialog.offerer = side;
        dialog.flags[at(side)] = side_flags[at(side)];
        Ok(())
    }
}
