//! Streams and their resources: port pairs bound through the [`PortBinder`], released or
//! quarantined when dialogs end, the data plane's [`MediaPair`]s built from streams, the
//! interfaces a dialog's sides use, and the per-leg options read from the ng flags.

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_ng::{AddressFamily, ErrorReason, Flags};
use anchorage_relay::{
    EndpointLearning, Interface, LearningFlags, LegConfig, MediaPair, PortPair, Side, StreamFlags,
};

use super::{fail, fail_text, Controller, MediaAction, PortBinder, Refusal};
use crate::dtls::DtlsParty;
use crate::sdes::{SdesParty, Transport};
use crate::sdp_in::StreamIn;
use crate::session::{at, local, SessionKey, Stream};

impl Controller {
    pub(super) fn remove_dialogs(
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

    pub(super) fn release_unused(&mut self, stream: &Stream) {
        for side in [Side::A, Side::B] {
            if let Some(pool) = self.pools.get_mut(stream.iface[at(side)]) {
                let _ = pool.release_unused(stream.ports[at(side)]);
            }
        }
    }

    /// A stream for a new `m=` line offered by `offerer`: ports for both sides.
    pub(super) fn new_stream(
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
            rtcp_open: [true, true],
            offered_mux: s.rtcp_mux,
            mux_accepted: false,
            transport: [Transport::default(); 2],
            offered: [Transport::default(); 2],
            reoffered: [false; 2],
            sdes: [SdesParty::default(), SdesParty::default()],
            dtls: [DtlsParty::default(); 2],
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

    pub(super) fn media_pairs(
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
                        local_rtcp: s.rtcp_open[i].then(|| local(ip, s.ports[i].rtcp())),
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

    pub(super) fn stream_flags(&self, flags: &Flags) -> StreamFlags {
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
            dtls: None,
        }
    }

    /// Interfaces for (offerer, answerer) of a new dialog: `direction` names them; otherwise
    /// the offerer's is the first of its SDP's address family and the answerer's the first of
    /// `address family` (IPv4/IPv6 bridging), else the same family.
    pub(super) fn pick_interfaces(
        &self,
        flags: &Flags,
        streams: &[StreamIn],
    ) -> Result<[usize; 2], Refusal> {
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

/// The local address of the RTCP port of `side` on `stream`.
fn rtcp_local(
    interfaces: &[Interface],
    stream: &Stream,
    side: Side,
) -> Result<SocketAddr, Refusal> {
    interfaces
        .get(stream.iface[at(side)])
        .map(|i| local(i.local, stream.ports[at(side)].rtcp()))
        .ok_or_else(|| fail(ErrorReason::ErrorRewritingSdp))
}

/// Binds again the RTCP ports of the legs in `wanted` (stream index and side; their
/// sockets were closed under rtcp-mux) and returns the actions that open them. Nothing
/// changes in the dialog: the caller marks the sockets open once the command cannot fail
/// any more. A port someone else took meanwhile refuses the command.
pub(super) fn reopen_rtcp(
    interfaces: &[Interface],
    key: SessionKey,
    streams: &[Stream],
    wanted: &[(usize, Side)],
    binder: &mut dyn PortBinder,
) -> Result<Vec<MediaAction>, Refusal> {
    let mut actions = Vec::with_capacity(wanted.len());
    for &(media, side) in wanted {
        let stream = streams
            .get(media)
            .ok_or_else(|| fail(ErrorReason::ErrorRewritingSdp))?;
        let local = rtcp_local(interfaces, stream, side)?;
        if !binder.bind_rtcp(local) {
            return Err(fail_text(format!(
                "cannot open the RTCP port {local} of media section {} again (its party \
                 stops using rtcp-mux): it is in use by another process",
                media + 1
            )));
        }
        actions.push(MediaAction::Rtcp {
            key,
            media,
            side,
            local,
            open: true,
        });
    }
    Ok(actions)
}

/// Closes the RTCP sockets of the legs of `streams[..count]` that multiplex RTCP on their
/// RTP port (RFC 5761); returns the actions that close them, to come after the command's
/// `Update`s.
pub(super) fn close_muxed_rtcp(
    interfaces: &[Interface],
    key: SessionKey,
    streams: &mut [Stream],
    count: usize,
) -> Vec<MediaAction> {
    let mut actions = Vec::new();
    for (media, stream) in streams.iter_mut().enumerate().take(count) {
        for side in [Side::A, Side::B] {
            if !(stream.rtcp_open[at(side)] && stream.mux[at(side)]) {
                continue;
            }
            let Ok(local) = rtcp_local(interfaces, stream, side) else {
                continue;
            };
            stream.rtcp_open[at(side)] = false;
            actions.push(MediaAction::Rtcp {
                key,
                media,
                side,
                local,
                open: false,
            });
        }
    }
    actions
}
