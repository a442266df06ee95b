//! The relay's control plane: one [`Controller`] executes ng commands against the call model
//! and says what the data plane must do ([`MediaAction`]). Sans-IO: the time comes in as
//! [`Now`], sockets are probed through a [`PortBinder`] the I/O layer implements (so a port
//! some other process holds is skipped, as rtpengine does), and media counters come back in
//! through [`Controller::observe`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_ng::{
    AddressFamily, Counters, Delete, DeleteTarget, ErrorReason, Flags, OfferAnswer, Outcome, Query,
    Reply, Request, RequestKind, TagInfo, Totals, TransportProtocol, Value,
};
use anchorage_relay::stun::IceCredentials;
use anchorage_relay::{
    EndpointLearning, Expiry, Interface, LearningFlags, LegConfig, Liveness, MediaPair, PortPair,
    PortPool, SdpPeer, Side, StreamFlags, Timeouts,
};
use anchorage_sdp::Session;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{CryptoRng, Rng, SeedableRng};

use crate::sdes::{self, SdesParty, Transport};
use crate::sdp_in::{self, StreamIn};
use crate::sdp_out::{self, OriginState, Rewrite, SecureOut, StreamOut};
use crate::session::{at, local, Call, Dialog, OfferTarget, SessionKey, Stream};

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Media interfaces; the first is the default.
    pub interfaces: Vec<Interface>,
    /// Media and offer timeouts.
    pub timeouts: Timeouts,
    /// How long released ports wait before reuse (`delete-delay`).
    pub port_quarantine: Duration,
    /// Most simultaneous calls; 0 = no limit.
    pub max_sessions: u64,
    /// Default endpoint learning.
    pub learning: EndpointLearning,
    /// This relay's name in `a=rtpengine:` (loop protect).
    pub instance: String,
}

/// A configuration the controller cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No interface.
    #[error("the relay needs at least one media interface")]
    NoInterface,
}

/// The clock, read by the I/O layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub mono: Instant,
    /// Wall-clock time in UNIX microseconds, for `created` and `last signal`.
    pub unix_us: i64,
}

/// Binds the relay's sockets for a port pair, or says it cannot.
pub trait PortBinder {
    /// Binds RTP and RTCP sockets on these local addresses; false if either is taken (the
    /// controller then tries another pair). Sockets bound for a request the controller then
    /// abandons are the binder's to close.
    fn bind(&mut self, rtp: SocketAddr, rtcp: SocketAddr) -> bool;
}

/// What the data plane must do after a command.
// `Update` carries a leg's options by value, SRTP keys included (~200 bytes): a few actions
// per ng command, never per packet, so the size is not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum MediaAction {
    /// Start relaying a new dialog's streams (sockets: the pairs' local addresses).
    Add {
        /// The dialog.
        key: SessionKey,
        /// One per `m=` line.
        pairs: Vec<MediaPair>,
        /// The request's `TOS` for the streams' packets (the relay's default when `None`).
        tos: Option<u8>,
    },
    /// Append streams to a dialog (a re-offer with more `m=` lines).
    Extend {
        /// The dialog.
        key: SessionKey,
        /// The new streams, in `m=` order after the existing ones.
        pairs: Vec<MediaPair>,
        /// The request's `TOS` for the new streams' packets.
        tos: Option<u8>,
    },
    /// Re-signal one leg of one stream.
    Update {
        /// The dialog.
        key: SessionKey,
        /// Stream index.
        media: usize,
        /// The leg.
        side: Side,
        /// Its SDP address.
        remote: Option<SdpPeer>,
        /// Whether its RTP port carries RTCP.
        rtcp_mux: bool,
        /// Learning options.
        flags: StreamFlags,
    },
    /// Stop relaying a dialog and close its sockets.
    Remove {
        /// The dialog.
        key: SessionKey,
    },
}

/// The result of one command.
#[derive(Debug, Clone)]
pub struct Handled {
    /// The ng reply.
    pub reply: Reply,
    /// What the data plane must do, in order.
    pub actions: Vec<MediaAction>,
}

impl Handled {
    fn reply(reply: Reply) -> Handled {
        Handled {
            reply,
            actions: Vec::new(),
        }
    }
}

/// Why a dialog ended without a `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its call.
    pub call_id: String,
    /// The dialog.
    pub key: SessionKey,
    /// No media, no answer, or a delayed delete falling due.
    pub reason: ExpiryReason,
}

/// Why [`Expired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryReason {
    /// No media for the media timeout.
    Media,
    /// No answer for the offer timeout.
    Offer,
    /// A `delete` with `delete delay`.
    DelayedDelete,
}

/// Lifetime counters (ng `statistics`, `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Calls created.
    pub managed_sessions: u64,
    /// Offers refused for capacity (session limit, ports).
    pub rejected_sessions: u64,
    /// Dialogs ended by a timeout.
    pub timeout_sessions: u64,
    /// Commands by kind.
    pub offers: u64,
    /// `answer`s.
    pub answers: u64,
    /// `delete`s.
    pub deletes: u64,
    /// `query`s.
    pub queries: u64,
    /// Commands answered with an error.
    pub errors: u64,
}

/// Port pool occupancy of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUsage {
    /// Interface name.
    pub interface: String,
    /// Pairs in use.
    pub in_use: usize,
    /// Pairs free.
    pub free: usize,
    /// Pairs waiting out the quarantine.
    pub quarantined: usize,
}

/// The relay's control plane.
#[derive(Debug)]
pub struct Controller {
    config: Config,
    pools: Vec<PortPool>,
    calls: HashMap<String, Call>,
    keys: HashMap<SessionKey, String>,
    next_key: u64,
    started: Now,
    statistics: Statistics,
    /// Draws ICE credentials.
    rng: rand::rngs::SmallRng,
    /// Draws SDES keys: a cryptographically secure generator seeded from the one given to
    /// [`Controller::new`].
    key_rng: StdRng,
}

/// Why a command is refused; becomes the error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// rtpengine's text.
    Reason(ErrorReason),
    /// Our own text, for what rtpengine has no string for.
    Text(String),
    /// A capacity limit (`load limit` for clients that support it).
    Limit(ErrorReason, bool),
}

impl Refusal {
    fn into_reply(self) -> Reply {
        match self {
            Refusal::Reason(reason) => Reply::error(reason),
            Refusal::Text(text) => Reply::new(Outcome::Error(text)),
            Refusal::Limit(reason, supported) => Reply::limit(reason, supported),
        }
    }
}

fn fail(reason: ErrorReason) -> Refusal {
    Refusal::Reason(reason)
}

fn fail_text(text: impl Into<String>) -> Refusal {
    Refusal::Text(text.into())
}

const SECOND_US: i64 = 1_000_000;

/// The longest `delete delay` honoured, seconds.
const MAX_DELETE_DELAY_S: u64 = 3600;

impl Controller {
    /// A controller over `config`'s interfaces, their port pools shuffled with `rng`. The
    /// relay's SDES keys come from a generator seeded from `rng`, hence the `CryptoRng` bound:
    /// give it one seeded by the operating system (tests may seed it with a constant).
    pub fn new<R: Rng + CryptoRng + ?Sized>(
        config: Config,
        rng: &mut R,
        now: Now,
    ) -> Result<Self, ConfigError> {
        if config.interfaces.is_empty() {
            return Err(ConfigError::NoInterface);
        }
        let pools = config
            .interfaces
            .iter()
            .map(|i| PortPool::new(i.ports, config.port_quarantine, rng))
            .collect();
        Ok(Self {
            config,
            pools,
            calls: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
            started: now,
            statistics: Statistics::default(),
            rng: <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(rng.random()),
            key_rng: StdRng::from_seed(rng.random()),
        })
    }

    /// Executes one command.
    pub fn handle(&mut self, request: &Request, now: Now, binder: &mut dyn PortBinder) -> Handled {
        let flags = &request.flags;
        let result = match &request.kind {
            RequestKind::Ping => Ok(Handled::reply(Reply::pong())),
            RequestKind::Offer(oa) => {
                self.statistics.offers += 1;
                self.offer(oa, flags, now, binder)
            }
            RequestKind::Answer(oa) => {
                self.statistics.answers += 1;
                self.answer(oa, flags, now)
            }
            RequestKind::Delete(delete) => {
                self.statistics.deletes += 1;
                self.delete(delete, flags, now)
            }
            RequestKind::Query(query) => {
                self.statistics.queries += 1;
                self.query(query).map(Handled::reply)
            }
            RequestKind::List => Ok(Handled::reply(self.list(flags.limit))),
            RequestKind::Statistics => Ok(Handled::reply(self.statistics_reply(now))),
            RequestKind::Other { command, .. } => Err(fail_text(format!(
                "Unsupported command: {} (this relay implements ping, offer, answer, delete, \
                 query, list and statistics)",
                command.as_str()
            ))),
        };
        match result {
            Ok(mut handled) => {
                if handled.reply.outcome == Outcome::Ok {
                    if let Some(more) = ignored_options(flags) {
                        add_warning(&mut handled.reply, more);
                    }
                }
                handled
            }
            Err(refusal) => {
                self.statistics.errors += 1;
                Handled::reply(refusal.into_reply())
            }
        }
    }

    // ---- offer ---------------------------------------------------------------------------

    fn offer(
        &mut self,
        oa: &OfferAnswer,
        flags: &Flags,
        now: Now,
        binder: &mut dyn PortBinder,
    ) -> Result<Handled, Refusal> {
        let sdp =
            Session::parse(oa.sdp.clone()).map_err(|_| fail(ErrorReason::FailedToParseSdp))?;
        if flags.loop_protect && sdp_out::is_looped(&sdp, &self.config.instance) {
            return Ok(Handled::reply(Reply::ok().with_sdp(oa.sdp.clone())));
        }
        let streams_in = sdp_in::read(&sdp, source_override(flags))
            .map_err(|_| fail(ErrorReason::IncompleteSdp))?;
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
                    let negotiated = negotiate_offer(
                        &mut stream,
                        &sdp,
                        index,
                        Side::A,
                        flags,
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
                self.reoffer(
                    call_id,
                    index,
                    side,
                    to,
                    &sdp,
                    &streams_in,
                    flags,
                    stream_flags,
                    now,
                    binder,
                    &mut actions,
                )?;
                (index, side)
            }
        };
        let answerer = offerer.other();
        let instance = self.config.instance.clone();
        let interfaces = &self.config.interfaces;
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
                let forward_mux =
                    (s.offered_mux && !mux.demux && !mux.reject) || mux.offer || mux.require;
                Some(StreamOut {
                    rtp_port: s.ports[at(answerer)].rtp,
                    rtcp_port: s.ports[at(answerer)].rtcp(),
                    mux: forward_mux,
                    mux_only: mux.require,
                    profile: s.transport[at(answerer)].profile(),
                    secure: secure_out(s, answerer, false, flags),
                })
            })
            .collect();
        rewritten_for(
            &sdp, &out, flags, interfaces, &instance, ice, dialog, answerer, actions,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn reoffer(
        &mut self,
        call_id: &str,
        index: usize,
        side: Side,
        to: Option<&str>,
        sdp: &Session,
        streams_in: &[StreamIn],
        flags: &Flags,
        stream_flags: StreamFlags,
        now: Now,
        binder: &mut dyn PortBinder,
        actions: &mut Vec<MediaAction>,
    ) -> Result<(), Refusal> {
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
            let negotiated = negotiate_offer(
                &mut stream,
                sdp,
                media,
                side,
                flags,
                true,
                &mut self.key_rng,
            );
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
                negotiate_offer(stream, sdp, media, side, flags, false, &mut self.key_rng)
            {
                release(self, &added);
                return Err(refusal);
            }
        }
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
        let other = side.other();
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

    // ---- answer --------------------------------------------------------------------------

    fn answer(&mut self, oa: &OfferAnswer, flags: &Flags, now: Now) -> Result<Handled, Refusal> {
        let call_id = oa.call_id.as_str();
        let to = oa
            .to_tag
            .as_ref()
            .map(|t| t.as_str())
            .ok_or_else(|| fail(ErrorReason::NoToTag))?;
        let from = oa.from_tag.as_str();
        let branch = oa.via_branch.as_ref().map(|b| b.as_str());
        let sdp =
            Session::parse(oa.sdp.clone()).map_err(|_| fail(ErrorReason::FailedToParseSdp))?;
        if flags.loop_protect && sdp_out::is_looped(&sdp, &self.config.instance) {
            return Ok(Handled::reply(Reply::ok().with_sdp(oa.sdp.clone())));
        }
        let streams_in = sdp_in::read(&sdp, source_override(flags))
            .map_err(|_| fail(ErrorReason::IncompleteSdp))?;
        let stream_flags = self.stream_flags(flags);
        let instance = self.config.instance.clone();
        let interfaces = &self.config.interfaces;
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
        // Encryption first, on copies, so that a refusal changes nothing.
        let mut renegotiated: Vec<Stream> = dialog
            .streams
            .iter()
            .take(streams_in.len())
            .cloned()
            .collect();
        for (media, stream) in renegotiated.iter_mut().enumerate() {
            negotiate_answer(stream, &sdp, media, answerer, flags, &mut self.key_rng)?;
        }
        for (stream, new) in dialog.streams.iter_mut().zip(renegotiated) {
            *stream = new;
        }
        dialog.tags[at(answerer)] = Some(to.to_owned());
        if let Some(label) = &flags.label {
            dialog.labels[at(answerer)] = Some(label.clone());
        }
        let mux = &flags.rtcp_mux;
        let key = dialog.key;
        let mut actions = Vec::new();
        if wants_ice(flags) && dialog.ice[at(offerer)].is_none() {
            let creds = IceCredentials::random(&mut self.rng);
            dialog.ice[at(offerer)] = Some(creds);
            dialog.flags[at(offerer)].ice = Some(creds);
        }
        for (media, (stream, s_in)) in dialog.streams.iter_mut().zip(&streams_in).enumerate() {
            stream.peer[at(answerer)] = s_in.peer;
            stream.mux[at(answerer)] = s_in.rtcp_mux;
            stream.mux[at(offerer)] = stream.offered_mux
                && (s_in.rtcp_mux || stream.mux_accepted || mux.demux || mux.accept)
                && !mux.reject;
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
        let out: Vec<Option<StreamOut>> = (0..streams_in.len())
            .map(|i| {
                dialog.streams.get(i).map(|s| StreamOut {
                    rtp_port: s.ports[at(offerer)].rtp,
                    rtcp_port: s.ports[at(offerer)].rtcp(),
                    mux: s.mux[at(offerer)],
                    mux_only: s.mux[at(offerer)],
                    profile: s.transport[at(offerer)].profile(),
                    secure: secure_out(s, offerer, true, flags),
                })
            })
            .collect();
        let ice = wants_ice(flags)
            .then_some(dialog.ice[at(offerer)])
            .flatten();
        rewritten_for(
            &sdp, &out, flags, interfaces, &instance, ice, dialog, offerer, actions,
        )
    }

    // ---- delete, query, list, statistics ---------------------------------------------------

    fn delete(&mut self, delete: &Delete, flags: &Flags, now: Now) -> Result<Handled, Refusal> {
        let not_found = || {
            if flags.fatal {
                Err(fail(ErrorReason::CallNotFound))
            } else {
                Ok(Handled::reply(
                    Reply::ok().with_warning(anchorage_ng::reason::CALL_NOT_FOUND),
                ))
            }
        };
        let call_id = delete.call_id.as_str();
        let Some(call) = self.calls.get(call_id) else {
            return not_found();
        };
        let target = delete.target(flags);
        let chosen: Vec<usize> = call
            .dialogs
            .iter()
            .enumerate()
            .filter(|(_, d)| match target {
                DeleteTarget::Call => true,
                DeleteTarget::Dialogue { from_tag, to_tag } => d
                    .side_of(from_tag.as_str())
                    .is_some_and(|s| d.tag(s.other()) == Some(to_tag.as_str())),
                DeleteTarget::Branch {
                    from_tag,
                    via_branch,
                } => {
                    d.tag(Side::A) == Some(from_tag.as_str())
                        && d.branch.as_deref() == Some(via_branch.as_str())
                }
                DeleteTarget::Participant(tag) => d.side_of(tag.as_str()).is_some(),
            })
            .map(|(i, _)| i)
            .collect();
        if chosen.is_empty() {
            return not_found();
        }
        let mut reply = if flags.fast {
            Reply::ok()
        } else {
            self.call_report(call_id, None, None)
                .unwrap_or_else(Reply::ok)
        };
        let whole_call = chosen.len() == call.dialogs.len();
        // At most an hour: a session kept longer only holds ports (and a huge value must not
        // overflow the clock).
        let delay = flags
            .delete_delay
            .filter(|&d| d > 0)
            .map(|d| d.min(MAX_DELETE_DELAY_S));
        if let (true, Some(seconds)) = (whole_call, delay) {
            if let Some(call) = self.calls.get_mut(call_id) {
                call.delete_at = Some(now.mono + Duration::from_secs(seconds));
            }
            reply.warning = None;
            return Ok(Handled::reply(reply));
        }
        let actions = self.remove_dialogs(call_id, &chosen, now.mono);
        Ok(Handled { reply, actions })
    }

    fn query(&self, query: &Query) -> Result<Reply, Refusal> {
        self.call_report(
            query.call_id.as_str(),
            query.from_tag.as_ref().map(|t| t.as_str()),
            query.to_tag.as_ref().map(|t| t.as_str()),
        )
        .ok_or_else(|| fail(ErrorReason::UnknownCallId))
    }

    /// `created`, `last signal`, `totals` and `tags` of a call, restricted to the dialogs of
    /// `from` (and `to`) when given.
    fn call_report(&self, call_id: &str, from: Option<&str>, to: Option<&str>) -> Option<Reply> {
        let call = self.calls.get(call_id)?;
        let mut reply = Reply::ok();
        reply.created = Some(call.created_us / SECOND_US);
        reply.created_us = Some(call.created_us % SECOND_US);
        reply.last_signal = Some(call.last_signal);
        let mut totals = Totals::default();
        let mut tags: Vec<(String, TagInfo)> = Vec::new();
        let wanted = |d: &Dialog| {
            from.is_none_or(|f| d.side_of(f).is_some()) && to.is_none_or(|t| d.side_of(t).is_some())
        };
        let mut untagged = 0;
        for dialog in call.dialogs.iter().filter(|d| wanted(d)) {
            for pair in &dialog.snapshot {
                for side in [Side::A, Side::B] {
                    let stats = pair.stats(side);
                    add(
                        &mut totals.rtp,
                        stats.rtp.packets(),
                        stats.rtp.bytes(),
                        stats.rtp.errors(),
                    );
                    add(
                        &mut totals.rtcp,
                        stats.rtcp.packets(),
                        stats.rtcp.bytes(),
                        stats.rtcp.errors(),
                    );
                }
            }
            for side in [Side::A, Side::B] {
                let name = match dialog.tag(side) {
                    Some(tag) => tag.to_owned(),
                    None => {
                        untagged += 1;
                        format!("<untagged {untagged}>")
                    }
                };
                if tags.iter().any(|(k, _)| *k == name) {
                    continue;
                }
                let info = TagInfo {
                    tag: dialog.tag(side).unwrap_or_default().to_owned(),
                    label: dialog.labels[at(side)].clone(),
                    created: Some(dialog.created_us / SECOND_US),
                    via_branch: dialog.branch.clone(),
                    other: vec![("medias".into(), Value::List(self.medias(dialog, side)))],
                };
                tags.push((name, info));
            }
        }
        reply.totals = Some(totals);
        reply.tags = Some(tags);
        Some(reply)
    }

    /// The `medias` list of one side of a dialog: per stream, the relay's port for that side,
    /// where the relay sends to it, and what it received from it.
    fn medias(&self, dialog: &Dialog, side: Side) -> Vec<Value> {
        dialog
            .streams
            .iter()
            .enumerate()
            .map(|(index, stream)| {
                let iface = self.config.interfaces.get(stream.iface[at(side)]);
                let pair = dialog.snapshot.get(index);
                let endpoint = pair
                    .and_then(|p| p.rtp_destination(side))
                    .or(stream.peer[at(side)].map(|p| p.rtp));
                let mut entry = vec![
                    ("index".to_owned(), Value::Int(index as i64 + 1)),
                    (
                        "local port".to_owned(),
                        Value::Int(i64::from(stream.ports[at(side)].rtp)),
                    ),
                ];
                if let Some(iface) = iface {
                    entry.push((
                        "local address".into(),
                        Value::text(iface.advertised.to_string()),
                    ));
                }
                if let Some(endpoint) = endpoint {
                    entry.push(("endpoint".into(), endpoint_value(endpoint)));
                }
                let sdes = stream.transport[at(side)].is_sdes();
                if let Some(suite) = stream.sdes[at(side)].suite().filter(|_| sdes) {
                    entry.push(("crypto suite".into(), Value::text(suite.name())));
                }
                if let Some(pair) = pair {
                    let rtp = &pair.stats(side).rtp;
                    entry.push((
                        "stats".into(),
                        Value::Dict(vec![
                            ("packets".into(), Value::Int(rtp.packets() as i64)),
                            ("bytes".into(), Value::Int(rtp.bytes() as i64)),
                            ("errors".into(), Value::Int(rtp.errors() as i64)),
                        ]),
                    ));
                    if sdes {
                        entry.push(("SRTP".into(), srtp_value(&pair.stats(side).srtp)));
                    }
                    let mut flags = vec![Value::text("RTP")];
                    if sdes {
                        flags.push(Value::text("SDES"));
                    }
                    if pair.is_confirmed(side) {
                        flags.push(Value::text("confirmed"));
                    }
                    entry.push(("flags".into(), Value::List(flags)));
                }
                Value::Dict(entry)
            })
            .collect()
    }

    fn list(&self, limit: Option<u64>) -> Reply {
        let limit = limit.unwrap_or(32) as usize;
        let mut calls: Vec<String> = self.calls.keys().cloned().collect();
        calls.sort();
        calls.truncate(limit);
        let mut reply = Reply::ok();
        reply.calls = Some(calls);
        reply
    }

    fn statistics_reply(&self, now: Now) -> Reply {
        let s = &self.statistics;
        let int = |v: u64| Value::Int(v as i64);
        let sessions = self.calls.len() as u64;
        let uptime = now
            .mono
            .saturating_duration_since(self.started.mono)
            .as_secs();
        let statistics = Value::Dict(vec![
            (
                "currentstatistics".into(),
                Value::Dict(vec![
                    ("sessionsown".into(), int(sessions)),
                    ("sessionsforeign".into(), int(0)),
                    ("sessionstotal".into(), int(sessions)),
                    ("transcodedmedia".into(), int(0)),
                ]),
            ),
            (
                "totalstatistics".into(),
                Value::Dict(vec![
                    ("uptime".into(), int(uptime)),
                    ("managedsessions".into(), int(s.managed_sessions)),
                    ("rejectedsessions".into(), int(s.rejected_sessions)),
                    ("timeoutsessions".into(), int(s.timeout_sessions)),
                ]),
            ),
            (
                "controlstatistics".into(),
                Value::Dict(vec![
                    ("offercount".into(), int(s.offers)),
                    ("answercount".into(), int(s.answers)),
                    ("deletecount".into(), int(s.deletes)),
                    ("querycount".into(), int(s.queries)),
                    ("errorcount".into(), int(s.errors)),
                ]),
            ),
        ]);
        let mut reply = Reply::ok();
        reply.statistics = Some(statistics);
        reply
    }

    // ---- data plane feedback and timers ----------------------------------------------------

    /// The dialogs of a call (to refresh their counters before a `query` or `delete`).
    pub fn sessions_of(&self, call_id: &str) -> Vec<SessionKey> {
        self.calls
            .get(call_id)
            .map(|c| c.dialogs.iter().map(|d| d.key).collect())
            .unwrap_or_default()
    }

    /// Every dialog.
    pub fn sessions(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.keys.keys().copied()
    }

    /// The data plane's current state of a dialog's streams.
    pub fn observe(&mut self, key: SessionKey, snapshot: Vec<MediaPair>) {
        if let Some(dialog) = self.dialog_mut(key) {
            dialog.last_packet = snapshot.iter().filter_map(MediaPair::last_packet).max();
            dialog.snapshot = snapshot;
        }
    }

    /// The last packet the data plane saw on a dialog.
    pub fn observe_activity(&mut self, key: SessionKey, last_packet: Option<Instant>) {
        if let Some(dialog) = self.dialog_mut(key) {
            dialog.last_packet = dialog.last_packet.max(last_packet);
        }
    }

    fn dialog_mut(&mut self, key: SessionKey) -> Option<&mut Dialog> {
        let call_id = self.keys.get(&key)?;
        self.calls
            .get_mut(call_id)?
            .dialogs
            .iter_mut()
            .find(|d| d.key == key)
    }

    /// Ends what timed out by `now` and what a delayed `delete` scheduled; the I/O layer
    /// removes each expired dialog's media.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut due: Vec<(String, Vec<usize>, Vec<ExpiryReason>)> = Vec::new();
        for (call_id, call) in &self.calls {
            let mut indexes = Vec::new();
            let mut reasons = Vec::new();
            for (i, dialog) in call.dialogs.iter().enumerate() {
                let reason = if call.delete_at.is_some_and(|at| at <= now) {
                    Some(ExpiryReason::DelayedDelete)
                } else {
                    match dialog.liveness.check(now, dialog.last_packet) {
                        Some(Expiry::Media) => Some(ExpiryReason::Media),
                        Some(Expiry::Offer) => Some(ExpiryReason::Offer),
                        None => None,
                    }
                };
                if let Some(reason) = reason {
                    indexes.push(i);
                    reasons.push(reason);
                }
            }
            if !indexes.is_empty() {
                due.push((call_id.clone(), indexes, reasons));
            }
        }
        let mut expired = Vec::new();
        for (call_id, indexes, reasons) in due {
            let actions = self.remove_dialogs(&call_id, &indexes, now);
            for (action, reason) in actions.into_iter().zip(reasons) {
                if let MediaAction::Remove { key } = action {
                    if reason != ExpiryReason::DelayedDelete {
                        self.statistics.timeout_sessions += 1;
                    }
                    expired.push(Expired {
                        call_id: call_id.clone(),
                        key,
                        reason,
                    });
                }
            }
        }
        for pool in &mut self.pools {
            pool.reclaim(now);
        }
        expired
    }

    /// Lifetime counters.
    pub fn statistics(&self) -> Statistics {
        self.statistics
    }

    /// Calls in progress.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Dialogs in progress (each with its own ports).
    pub fn session_count(&self) -> usize {
        self.keys.len()
    }

    /// Port pool occupancy per interface.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        self.config
            .interfaces
            .iter()
            .zip(&self.pools)
            .map(|(iface, pool)| PortUsage {
                interface: iface.name.clone(),
                in_use: pool.in_use(),
                free: pool.free(),
                quarantined: pool.quarantined(),
            })
            .collect()
    }

    // ---- internals -----------------------------------------------------------------------

    fn remove_dialogs(
        &mut self,
        call_id: &str,
        indexes: &[usize],
        now: Instant,
    ) -> Vec<MediaAction> {
        let Some(call) = self.calls.get_mut(call_id) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for &i in indexes.iter().rev() {
            if i < call.dialogs.len() {
                removed.push(call.dialogs.remove(i));
            }
        }
        removed.reverse();
        if call.dialogs.is_empty() {
            self.calls.remove(call_id);
        }
        let mut actions = Vec::with_capacity(removed.len());
        for dialog in removed {
            for (iface, pair) in dialog.port_pairs() {
                if let Some(pool) = self.pools.get_mut(iface) {
                    let _ = pool.release(pair, now);
                }
            }
            self.keys.remove(&dialog.key);
            actions.push(MediaAction::Remove { key: dialog.key });
        }
        actions
    }

    fn release_unused(&mut self, stream: &Stream) {
        for side in [Side::A, Side::B] {
            if let Some(pool) = self.pools.get_mut(stream.iface[at(side)]) {
                let _ = pool.release_unused(stream.ports[at(side)]);
            }
        }
    }

    /// A stream for a new `m=` line offered by `offerer`: ports for both sides.
    fn new_stream(
        &mut self,
        ifaces: [usize; 2],
        s: &StreamIn,
        offerer: Side,
        now: Instant,
        binder: &mut dyn PortBinder,
    ) -> Result<Stream, Refusal> {
        let first = self.allocate(ifaces[0], now, binder)?;
        let second = match self.allocate(ifaces[1], now, binder) {
            Ok(pair) => pair,
            Err(reply) => {
                if let Some(pool) = self.pools.get_mut(ifaces[0]) {
                    let _ = pool.release_unused(first);
                }
                return Err(reply);
            }
        };
        let mut peer = [None, None];
        let mut mux = [false, false];
        peer[at(offerer)] = s.peer;
        mux[at(offerer)] = s.rtcp_mux;
        Ok(Stream {
            iface: ifaces,
            ports: [first, second],
            peer,
            mux,
            offered_mux: s.rtcp_mux,
            mux_accepted: false,
            transport: [Transport::default(); 2],
            sdes: [SdesParty::default(), SdesParty::default()],
        })
    }

    /// A port pair on interface `iface` whose sockets the binder could bind. Pairs someone
    /// else holds go to quarantine and the next is tried.
    fn allocate(
        &mut self,
        iface: usize,
        now: Instant,
        binder: &mut dyn PortBinder,
    ) -> Result<PortPair, Refusal> {
        const MOST_TRIES: usize = 64;
        let ip = self
            .config
            .interfaces
            .get(iface)
            .map(|i| i.local)
            .ok_or_else(|| fail(ErrorReason::RanOutOfPorts))?;
        let pool = self
            .pools
            .get_mut(iface)
            .ok_or_else(|| fail(ErrorReason::RanOutOfPorts))?;
        let mut taken = Vec::new();
        let mut result = Err(fail(ErrorReason::RanOutOfPorts));
        for _ in 0..MOST_TRIES {
            let Ok(pair) = pool.allocate(now) else {
                break;
            };
            if binder.bind(local(ip, pair.rtp), local(ip, pair.rtcp())) {
                result = Ok(pair);
                break;
            }
            taken.push(pair);
        }
        for pair in taken {
            let _ = pool.release(pair, now);
        }
        result
    }

    fn media_pairs(
        &self,
        streams: &[Stream],
        side_flags: [StreamFlags; 2],
        now: Instant,
    ) -> Result<Vec<MediaPair>, Refusal> {
        streams
            .iter()
            .map(|s| {
                let leg = |side: Side| -> Result<LegConfig, Refusal> {
                    let i = at(side);
                    let ip = self
                        .config
                        .interfaces
                        .get(s.iface[i])
                        .map(|iface| iface.local)
                        .ok_or_else(|| fail(ErrorReason::ErrorRewritingSdp))?;
                    Ok(LegConfig {
                        local_rtp: local(ip, s.ports[i].rtp),
                        local_rtcp: Some(local(ip, s.ports[i].rtcp())),
                        remote: s.peer[i],
                        rtcp_mux: s.mux[i],
                        flags: s.leg_flags(side, side_flags[i]),
                    })
                };
                MediaPair::new(leg(Side::A)?, leg(Side::B)?, now)
                    .map_err(|_| fail(ErrorReason::ErrorRewritingSdp))
            })
            .collect()
    }

    fn stream_flags(&self, flags: &Flags) -> StreamFlags {
        let learning = flags
            .other_keys
            .iter()
            .find(|(k, _)| {
                anchorage_ng::normalise_key(k) == anchorage_ng::normalise_key("endpoint-learning")
            })
            .and_then(|(_, v)| v.as_text())
            .and_then(|v| match v.to_ascii_lowercase().as_str() {
                "delayed" => Some(EndpointLearning::Delayed),
                "immediate" => Some(EndpointLearning::Immediate),
                "heuristic" => Some(EndpointLearning::Heuristic),
                "off" => Some(EndpointLearning::Off),
                _ => None,
            })
            .unwrap_or(self.config.learning);
        StreamFlags {
            learning: LearningFlags {
                learning,
                strict_source: flags.strict_source,
                media_handover: flags.media_handover,
                asymmetric: flags.asymmetric,
                ..LearningFlags::default()
            },
            port_latching: flags.port_latching,
            ice: None,
            srtp: None,
        }
    }

    /// Interfaces for (offerer, answerer) of a new dialog: `direction` names them; otherwise
    /// the offerer's is the first of its SDP's address family and the answerer's the first of
    /// `address family` (IPv4/IPv6 bridging), else the same family.
    fn pick_interfaces(&self, flags: &Flags, streams: &[StreamIn]) -> Result<[usize; 2], Refusal> {
        let ifaces = &self.config.interfaces;
        let by_name = |name: &str| ifaces.iter().position(|i| i.name == name);
        let by_family = |v6: bool| ifaces.iter().position(|i| i.local.is_ipv6() == v6);
        let offer_v6 = streams.iter().find_map(|s| s.peer).map(|p| p.rtp.is_ipv6());
        let mut chosen = [None, None];
        for (slot, name) in chosen.iter_mut().zip(&flags.direction) {
            *slot = by_name(name);
            if slot.is_none() && !matches!(name.as_str(), "internal" | "external") {
                return Err(fail_text(format!(
                    "Unknown interface name \"{name}\" in direction"
                )));
            }
        }
        let offerer = chosen[0]
            .or_else(|| offer_v6.and_then(by_family))
            .unwrap_or(0);
        let answerer = match (chosen[1], flags.address_family) {
            (Some(i), _) => i,
            (None, Some(family)) => by_family(family == AddressFamily::Ip6).ok_or_else(|| {
                fail_text(format!(
                    "No interface of address family {} for the address-family request",
                    if family == AddressFamily::Ip6 {
                        "IP6"
                    } else {
                        "IP4"
                    }
                ))
            })?,
            (None, None) => offerer,
        };
        Ok([offerer, answerer])
    }
}

/// The reply to an offer or answer: the SDP rebuilt for `to` from the sender's `sdp`.
#[allow(clippy::too_many_arguments)]
fn rewritten_for(
    sdp: &Session,
    streams: &[Option<StreamOut>],
    flags: &Flags,
    interfaces: &[Interface],
    instance: &str,
    ice: Option<IceCredentials>,
    dialog: &mut Dialog,
    to: Side,
    actions: Vec<MediaAction>,
) -> Result<Handled, Refusal> {
    let address = out_address(flags, interfaces, dialog, to);
    let (rewritten, notes) = sdp_out::rewrite_with_notes(
        sdp,
        &Rewrite {
            address,
            streams,
            flags,
            instance,
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

/// Appends to a reply's warning.
fn add_warning(reply: &mut Reply, more: String) {
    reply.warning = Some(match reply.warning.take() {
        Some(w) => format!("{w}; {more}"),
        None => more,
    });
}

fn add(counters: &mut Counters, packets: u64, bytes: u64, errors: u64) {
    counters.packets += packets;
    counters.bytes += bytes;
    counters.errors += errors;
}

/// A leg's SRTP counters in `query`.
fn srtp_value(srtp: &anchorage_relay::SrtpStats) -> Value {
    let int = |v: u64| Value::Int(v as i64);
    Value::Dict(vec![
        ("decrypted packets".into(), int(srtp.decrypted_packets)),
        ("decrypted bytes".into(), int(srtp.decrypted_bytes)),
        ("encrypted packets".into(), int(srtp.encrypted_packets)),
        ("encrypted bytes".into(), int(srtp.encrypted_bytes)),
        ("authentication failures".into(), int(srtp.auth_failures)),
        ("replayed".into(), int(srtp.replayed)),
        ("other failures".into(), int(srtp.other_failures)),
    ])
}

fn endpoint_value(endpoint: SocketAddr) -> Value {
    Value::Dict(vec![
        (
            "family".into(),
            Value::text(if endpoint.is_ipv6() { "IPv6" } else { "IPv4" }),
        ),
        ("address".into(), Value::text(endpoint.ip().to_string())),
        ("port".into(), Value::Int(i64::from(endpoint.port()))),
    ])
}

/// `SIP source address` with `received-from`: the SIP source address replaces the SDP's.
fn source_override(flags: &Flags) -> Option<IpAddr> {
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

/// Negotiates one `m=` line of an offer from `offerer` (a new dialog's, a re-offer's, or a
/// new line in a re-offer when `fresh`): the offerer's transport and key come from its SDP; the
/// receiver's transport from `transport-protocol`, else what it had (re-offer), else the
/// offerer's; an SDES receiver is offered the relay's keys.
fn negotiate_offer(
    stream: &mut Stream,
    sdp: &Session,
    index: usize,
    offerer: Side,
    flags: &Flags,
    fresh: bool,
    rng: &mut StdRng,
) -> Result<(), Refusal> {
    let Some(section) = sdp.media().get(index) else {
        return Ok(());
    };
    if section.is_rejected() || !section.media().transport().is_rtp() {
        stream.transport = [Transport::Opaque; 2];
        return Ok(());
    }
    let receiver = offerer.other();
    let sender = Transport::of(section);
    let requested = requested_transport(flags, section, index)?;
    let current = stream.transport[at(receiver)];
    // A re-offer without the option keeps whether the receiver is encrypted; the feedback
    // profile (AVPF) follows the offerer's.
    let target = match (requested, sender) {
        (Some(target), _) => target,
        (None, Transport::Rtp { feedback } | Transport::Sdes { feedback }) if !fresh => {
            match current {
                Transport::Sdes { .. } => Transport::Sdes { feedback },
                Transport::Rtp { .. } => Transport::Rtp { feedback },
                Transport::Opaque => sender,
            }
        }
        (None, _) => sender,
    };
    check_conversion(sender, target, section, index)?;
    take_party_key(stream, offerer, sender, section, index, rng)?;
    stream.transport[at(offerer)] = sender;
    if target.is_sdes() {
        if flags.sdes.off {
            return Err(fail_text(format!(
                "SDES=off leaves media section {} ({}) without keys: this relay keys SRTP \
                 with SDES only",
                index + 1,
                target.profile().unwrap_or_default()
            )));
        }
        let peer: Vec<sdes::CryptoLine> = if sender.is_sdes() {
            sdes::read_lines(section)
                .into_iter()
                .filter_map(Result::ok)
                .collect()
        } else {
            Vec::new()
        };
        stream.sdes[at(receiver)]
            .offer(&peer, &flags.sdes, rng)
            .map_err(|reason| fail_text(format!("SDES: media section {}: {reason}", index + 1)))?;
    } else {
        stream.sdes[at(receiver)].clear();
    }
    stream.transport[at(receiver)] = target;
    Ok(())
}

/// Negotiates one `m=` line of an answer from `answerer`: its transport and key from its SDP
/// (it must answer what it was offered, or plain RTP to an SDES offer); the offerer's from
/// `transport-protocol` in the answer (`accept`: the answerer's profile), else unchanged.
/// A plain offerer that the answer makes SDES is given the relay's lines to choose from (the
/// protocol change OpenSIPS sends in the answer); its key comes with its next SDP.
fn negotiate_answer(
    stream: &mut Stream,
    sdp: &Session,
    index: usize,
    answerer: Side,
    flags: &Flags,
    rng: &mut StdRng,
) -> Result<(), Refusal> {
    let Some(section) = sdp.media().get(index) else {
        return Ok(());
    };
    let offerer = answerer.other();
    let offered = stream.transport[at(answerer)];
    if section.is_rejected() || offered == Transport::Opaque {
        return Ok(());
    }
    let answered = Transport::of(section);
    match (offered.is_sdes(), answered) {
        (_, Transport::Opaque) => {
            return Err(fail_text(format!(
                "the answer's media section {} is {} but {} was offered",
                index + 1,
                section.media().proto(),
                offered.profile().unwrap_or_default()
            )))
        }
        (false, Transport::Sdes { .. }) => {
            return Err(fail_text(format!(
                "the answer's media section {} is {} with a=crypto but {} was offered",
                index + 1,
                section.media().proto(),
                offered.profile().unwrap_or_default()
            )))
        }
        _ => {}
    }
    take_party_key(stream, answerer, answered, section, index, rng)?;
    stream.transport[at(answerer)] = answered;
    let current = stream.transport[at(offerer)];
    let target = match flags.transport_protocol {
        Some(TransportProtocol::Accept) => match answered {
            Transport::Sdes { feedback } => Transport::Sdes { feedback },
            Transport::Rtp { feedback } => Transport::Rtp { feedback },
            Transport::Opaque => current,
        },
        Some(_) => requested_transport(flags, section, index)?.unwrap_or(current),
        None => current,
    };
    if target == current {
        return Ok(());
    }
    if current == Transport::Opaque {
        return Err(fail_text(format!(
            "RTP/SRTP conversion of media section {} towards the offerer is not supported: it \
             is passed through untouched (DTLS-SRTP or SRTP without a=crypto)",
            index + 1
        )));
    }
    if target.is_sdes() && !current.is_sdes() {
        if flags.sdes.off {
            return Err(fail_text(format!(
                "SDES=off leaves media section {} without keys: this relay keys SRTP with SDES \
                 only",
                index + 1
            )));
        }
        stream.sdes[at(offerer)]
            .offer(&[], &flags.sdes, rng)
            .map_err(|reason| fail_text(format!("SDES: media section {}: {reason}", index + 1)))?;
    } else if !target.is_sdes() {
        stream.sdes[at(offerer)].clear();
    }
    stream.transport[at(offerer)] = target;
    Ok(())
}

/// The transport `transport-protocol` asks for; `UDP/TLS/RTP/SAVP(F)` only to pass the same
/// DTLS-SRTP through.
fn requested_transport(
    flags: &Flags,
    section: &anchorage_sdp::MediaSection,
    index: usize,
) -> Result<Option<Transport>, Refusal> {
    let Some(protocol) = flags.transport_protocol else {
        return Ok(None);
    };
    match Transport::requested(protocol) {
        Ok(target) => Ok(target),
        Err(name) if section.media().proto().eq_ignore_ascii_case(name) => {
            Ok(Some(Transport::Opaque))
        }
        Err(name) => Err(fail_text(format!(
            "transport-protocol {name} for media section {} ({}) is not supported: this relay \
             does not terminate DTLS-SRTP (it converts between RTP/AVP(F) and SDES \
             RTP/SAVP(F))",
            index + 1,
            section.media().proto()
        ))),
    }
}

/// Plain RTP and SDES convert both ways; what the relay passes through untouched (DTLS-SRTP,
/// SRTP without `a=crypto`) converts to nothing else.
fn check_conversion(
    sender: Transport,
    target: Transport,
    section: &anchorage_sdp::MediaSection,
    index: usize,
) -> Result<(), Refusal> {
    if (sender == Transport::Opaque) == (target == Transport::Opaque) {
        return Ok(());
    }
    Err(fail_text(format!(
        "RTP/SRTP conversion of media section {} ({} to {}) is not supported: this relay does \
         not terminate DTLS-SRTP or SRTP without a=crypto (it converts between RTP/AVP(F) and \
         SDES RTP/SAVP(F))",
        index + 1,
        section.media().proto(),
        target.profile().unwrap_or("the same profile")
    )))
}

/// Takes `party`'s key from its SDP when it uses SDES; forgets it otherwise.
fn take_party_key(
    stream: &mut Stream,
    party: Side,
    transport: Transport,
    section: &anchorage_sdp::MediaSection,
    index: usize,
    rng: &mut StdRng,
) -> Result<(), Refusal> {
    if !transport.is_sdes() {
        stream.sdes[at(party)].clear();
        return Ok(());
    }
    let lines = sdes::read_lines(section);
    stream.sdes[at(party)]
        .accept(&lines, rng)
        .map_err(|reason| {
            fail_text(format!(
                "SDES: no usable a=crypto line in media section {} ({}): {reason}",
                index + 1,
                section.media().proto()
            ))
        })?;
    stream.transport[at(party)] = transport;
    Ok(())
}

/// The keying attributes of `stream` written to `to`: the relay's `a=crypto` lines (one
/// answering `to`'s own line in an `answer`), none for plain RTP, the sender's for media
/// passed through.
fn secure_out(stream: &Stream, to: Side, answer: bool, flags: &Flags) -> SecureOut {
    match stream.transport[at(to)] {
        Transport::Sdes { .. } => {
            SecureOut::Crypto(stream.sdes[at(to)].lines(answer, flags.sdes.pad || flags.pad_crypto))
        }
        Transport::Rtp { .. } => SecureOut::Strip,
        Transport::Opaque => SecureOut::Keep,
    }
}

/// The warning about ignored options: what `anchorage-ng` does not model, except the keys
/// this relay reads itself (`endpoint-learning`, see [`Controller::stream_flags`]).
fn ignored_options(flags: &Flags) -> Option<String> {
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

fn with_ice_warning(reply: Reply, flags: &Flags) -> Reply {
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
fn wants_ice(flags: &Flags) -> bool {
    flags.ice == Some(anchorage_ng::Ice::Force)
}

/// Gives `side` ICE credentials: remembered, and handed to the data plane with the leg's
/// options so its connectivity checks are answered.
fn give_ice(
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

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            timeouts: Timeouts::default(),
            port_quarantine: Duration::from_secs(30),
            max_sessions: 0,
            learning: EndpointLearning::Delayed,
            instance: "anchorage".into(),
        }
    }
}

/// A `Bytes` SDP body, for tests and callers that build requests.
pub fn body(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}
