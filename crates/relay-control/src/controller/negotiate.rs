//! Per `m=` line, which transport each side gets (plain RTP, SDES-SRTP, DTLS-SRTP, or passed
//! through untouched) and whose keys or fingerprints: from the offer ([`negotiate_offer`]) and
//! from the answer ([`negotiate_answer`]), with the keying attributes the relay then writes
//! ([`secure_out`]).

use anchorage_ng::{Dtls as DtlsOption, Flags, TransportProtocol};
use anchorage_relay::{Fingerprint, Side};
use anchorage_sdp::{MediaSection, Session};
use rand::rngs::StdRng;

use super::{fail_text, Refusal};
use crate::sdes::{self, Transport};
use crate::sdp_out::SecureOut;
use crate::session::{at, Stream};

/// An offer's or answer's SDP and options, and whether the relay can terminate DTLS (it has a
/// certificate and `DTLS=off` was not asked).
#[derive(Clone, Copy)]
pub(super) struct Signal<'a> {
    /// The sender's SDP.
    pub sdp: &'a Session,
    /// The command's options.
    pub flags: &'a Flags,
    /// The relay may terminate DTLS-SRTP.
    pub dtls: bool,
}

impl<'a> Signal<'a> {
    /// `sdp` and `flags` on a relay with a DTLS certificate (`fingerprint`) or without.
    pub fn new(sdp: &'a Session, flags: &'a Flags, fingerprint: Option<Fingerprint>) -> Self {
        Signal {
            sdp,
            flags,
            dtls: fingerprint.is_some() && flags.dtls != Some(DtlsOption::Off),
        }
    }

    /// How a party's `m=` line carries its media, DTLS-SRTP being passed through untouched
    /// when the relay does not terminate it.
    fn transport_of(&self, section: &MediaSection) -> Transport {
        match Transport::of(section) {
            Transport::Dtls { .. } if !self.dtls => Transport::Opaque,
            transport => transport,
        }
    }
}

/// Negotiates one `m=` line of an offer from `offerer` (a new dialog's, a re-offer's, or a
/// new line in a re-offer when `fresh`): the offerer's transport and key come from its SDP; the
/// receiver's transport from `transport-protocol`, else what it had (re-offer), else the
/// offerer's; an SDES receiver is offered the relay's keys, a DTLS receiver its fingerprint.
/// DTLS on both sides is passed through untouched.
pub(super) fn negotiate_offer(
    stream: &mut Stream,
    signal: Signal<'_>,
    index: usize,
    offerer: Side,
    fresh: bool,
    rng: &mut StdRng,
) -> Result<(), Refusal> {
    let Signal { sdp, flags, .. } = signal;
    let Some(section) = sdp.media().get(index) else {
        return Ok(());
    };
    if section.is_rejected() || !section.media().transport().is_rtp() {
        stream.transport = [Transport::Opaque; 2];
        stream.offered = [Transport::Opaque; 2];
        return Ok(());
    }
    let receiver = offerer.other();
    stream.reoffered = [false; 2];
    let sender = signal.transport_of(section);
    let requested = requested_transport(signal, section, index)?;
    let current = stream.transport[at(receiver)];
    // A re-offer without the option keeps whether and how the receiver is encrypted; the
    // feedback profile (AVPF) follows the offerer's.
    let target = match (requested, sender) {
        (Some(target), _) => target,
        (
            None,
            Transport::Rtp { feedback }
            | Transport::Sdes { feedback }
            | Transport::Dtls { feedback },
        ) if !fresh && current != Transport::Opaque => current.with_feedback(feedback),
        (None, _) => sender,
    };
    // DTLS on both sides: passed through untouched, fingerprints end to end.
    let (sender, target) = if sender.is_dtls() && target.is_dtls() {
        (Transport::Opaque, Transport::Opaque)
    } else {
        (sender, target)
    };
    check_conversion(sender, target, section, index)?;
    take_party_key(stream, offerer, sender, section, index, rng)?;
    take_party_dtls(stream, offerer, sender, signal, index, false)?;
    stream.transport[at(offerer)] = sender;
    if target.is_dtls() {
        stream.dtls[at(receiver)].offer_to_party(flags.dtls);
    } else {
        stream.dtls[at(receiver)].clear();
    }
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
    stream.offered[at(receiver)] = target;
    Ok(())
}

/// Negotiates one `m=` line of an answer from `answerer`: its transport and key from its SDP
/// (it must answer what the relay's last offer gave it, or plain RTP to an SDES offer; an
/// SDES answer to a plain offer is taken as plain RTP, its `a=crypto` ignored: a proxy that
/// moves a call to a new relay and changes that party's profile replays the party's previous
/// SDP as the answer, and the party's real answer follows); the offerer's from
/// `transport-protocol` in the answer (`accept`: the answerer's profile), else unchanged.
/// A plain offerer that the answer makes SDES is given the relay's lines to choose from (the
/// protocol change OpenSIPS sends in the answer); its key comes with its next SDP. An
/// offerer whose DTLS the relay terminates now knows the relay's role (settled).
pub(super) fn negotiate_answer(
    stream: &mut Stream,
    signal: Signal<'_>,
    index: usize,
    answerer: Side,
    rng: &mut StdRng,
) -> Result<(), Refusal> {
    let flags = signal.flags;
    let Some(section) = signal.sdp.media().get(index) else {
        return Ok(());
    };
    let offerer = answerer.other();
    let offered = stream.offered[at(answerer)];
    stream.reoffered[at(answerer)] = false;
    if section.is_rejected() || offered == Transport::Opaque {
        return Ok(());
    }
    let answered = match signal.transport_of(section) {
        Transport::Sdes { feedback } if !offered.is_sdes() && !offered.is_dtls() => {
            Transport::Rtp { feedback }
        }
        answered => answered,
    };
    match (offered.is_sdes(), answered) {
        (_, Transport::Dtls { .. }) if !offered.is_dtls() => {
            return Err(fail_text(format!(
                "the answer's media section {} is {} but {} was offered",
                index + 1,
                section.media().proto(),
                offered.profile().unwrap_or_default()
            )))
        }
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
    take_party_dtls(stream, answerer, answered, signal, index, true)?;
    stream.transport[at(answerer)] = answered;
    let current = stream.transport[at(offerer)];
    let target = match flags.transport_protocol {
        Some(TransportProtocol::Accept) => match answered {
            Transport::Opaque => current,
            answered => answered,
        },
        Some(_) => requested_transport(signal, section, index)?.unwrap_or(current),
        None => current,
    };
    if target == current {
        if current.is_dtls() && flags.reanchor {
            // A move: the offerer gets this SDP as a new offer, and answers it.
            stream.dtls[at(offerer)].reoffer_to_party(flags.dtls);
            stream.offered[at(offerer)] = current;
            stream.reoffered[at(offerer)] = true;
        } else if current.is_dtls() {
            stream.dtls[at(offerer)].settle();
        }
        return Ok(());
    }
    if target.is_dtls() || current.is_dtls() {
        return Err(fail_text(format!(
            "DTLS-SRTP conversion of media section {} towards the offerer in an answer is not              supported ({} to {}): ask for it in the offer",
            index + 1,
            current.profile().unwrap_or_default(),
            target.profile().unwrap_or_default()
        )));
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
    stream.offered[at(offerer)] = target;
    Ok(())
}

/// The transport `transport-protocol` asks for; without DTLS termination,
/// `UDP/TLS/RTP/SAVP(F)` only to pass the same DTLS-SRTP through.
fn requested_transport(
    signal: Signal<'_>,
    section: &MediaSection,
    index: usize,
) -> Result<Option<Transport>, Refusal> {
    let Some(protocol) = signal.flags.transport_protocol else {
        return Ok(None);
    };
    match Transport::requested(protocol, signal.dtls) {
        Ok(target) => Ok(target),
        Err(name) if section.media().proto().eq_ignore_ascii_case(name) => {
            Ok(Some(Transport::Opaque))
        }
        Err(name) => Err(fail_text(format!(
            "transport-protocol {name} for media section {} ({}) is not supported: this relay \
             has no DTLS certificate or DTLS=off was asked (it converts between RTP/AVP(F) and \
             SDES RTP/SAVP(F))",
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
    section: &MediaSection,
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
    section: &MediaSection,
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

/// Takes `party`'s DTLS fingerprint and setup from its SDP (its offer, or its `answer` to the
/// relay's offer) when the relay terminates DTLS towards it; forgets them otherwise.
fn take_party_dtls(
    stream: &mut Stream,
    party: Side,
    transport: Transport,
    signal: Signal<'_>,
    index: usize,
    answer: bool,
) -> Result<(), Refusal> {
    let dtls = &mut stream.dtls[at(party)];
    let Some(section) = signal
        .sdp
        .media()
        .get(index)
        .filter(|_| transport.is_dtls())
    else {
        dtls.clear();
        return Ok(());
    };
    let taken = if answer && signal.flags.reanchor {
        dtls.replayed_by_party(signal.sdp, section)
    } else if answer {
        dtls.answered_by_party(signal.sdp, section)
    } else {
        dtls.offered_by_party(signal.sdp, section, signal.flags.dtls)
    };
    taken.map_err(|reason| fail_text(format!("DTLS: media section {}: {reason}", index + 1)))
}

/// The keying attributes of `stream` written to `to`: the relay's `a=crypto` lines (one
/// answering `to`'s own line in an `answer`), its `a=setup` and `a=fingerprint` for DTLS,
/// none for plain RTP, the sender's for media passed through.
pub(super) fn secure_out(
    stream: &Stream,
    to: Side,
    answer: bool,
    flags: &Flags,
    fingerprint: Option<Fingerprint>,
) -> SecureOut {
    match (stream.transport[at(to)], fingerprint) {
        (Transport::Sdes { .. }, _) => {
            SecureOut::Crypto(stream.sdes[at(to)].lines(answer, flags.sdes.pad || flags.pad_crypto))
        }
        (Transport::Dtls { .. }, Some(fingerprint)) => SecureOut::Dtls {
            setup: stream.dtls[at(to)]
                .setup_out
                .unwrap_or(crate::dtls::Setup::ActPass)
                .as_str(),
            fingerprint: fingerprint.sdp_value(),
        },
        (Transport::Rtp { .. } | Transport::Dtls { .. }, _) => SecureOut::Strip,
        (Transport::Opaque, _) => SecureOut::Keep,
    }
}
