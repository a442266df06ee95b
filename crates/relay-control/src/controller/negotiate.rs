//! Per `m=` line, which transport each side gets (plain RTP, SDES-SRTP, or passed through
//! untouched) and whose keys: from the offer ([`negotiate_offer`]) and from the answer
//! ([`negotiate_answer`]), with the keying attributes the relay then writes
//! ([`secure_out`]).

use anchorage_ng::{Flags, TransportProtocol};
use anchorage_relay::Side;
use anchorage_sdp::Session;
use rand::rngs::StdRng;

use super::{fail_text, Refusal};
use crate::sdes::{self, Transport};
use crate::sdp_out::SecureOut;
use crate::session::{at, Stream};

/// Negotiates one `m=` line of an offer from `offerer` (a new dialog's, a re-offer's, or a
/// new line in a re-offer when `fresh`): the offerer's transport and key come from its SDP; the
/// receiver's transport from `transport-protocol`, else what it had (re-offer), else the
/// offerer's; an SDES receiver is offered the relay's keys.
pub(super) fn negotiate_offer(
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
pub(super) fn negotiate_answer(
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
pub(super) fn secure_out(stream: &Stream, to: Side, answer: bool, flags: &Flags) -> SecureOut {
    match stream.transport[at(to)] {
        Transport::Sdes { .. } => {
            SecureOut::Crypto(stream.sdes[at(to)].lines(answer, flags.sdes.pad || flags.pad_crypto))
        }
        Transport::Rtp { .. } => SecureOut::Strip,
        Transport::Opaque => SecureOut::Keep,
    }
}
