//! DTLS-SRTP handshakes in a media worker: the sans-IO [`DtlsSession`] of each leg the relay
//! terminates DTLS on, fed the DTLS datagrams of the leg's RTP port (told from STUN and SRTP by
//! their first byte, RFC 7983) and its retransmission timers; a completed handshake keys the
//! leg's SRTP contexts ([`anchorage_relay::MediaPair::set_dtls_keys`]).
//!
//! Nothing here runs for a leg without DTLS: the packet path tests one byte and one option
//! before [`anchorage_relay::MediaPair::relay`], and the poll timeout is computed only while
//! handshakes are in progress.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_relay::{
    DtlsEvent, DtlsIdentity, DtlsRole, DtlsSession, DtlsState, DtlsStats, Side, SocketKind,
};

use super::{kind_index, side_index, Worker};

/// One leg's handshake, and the party's address once it spoke DTLS.
pub(super) struct Handshake {
    session: DtlsSession,
    party: Option<SocketAddr>,
}

/// The worker's DTLS state: the relay's certificate and the legs' handshakes, by (call slot,
/// stream index, side).
#[derive(Default)]
pub(super) struct Handshakes {
    identity: Option<DtlsIdentity>,
    legs: HashMap<(usize, usize, usize), Handshake>,
    /// Counters of every leg of this worker.
    pub(super) totals: DtlsStats,
}

impl Handshakes {
    pub(super) fn new(identity: Option<DtlsIdentity>) -> Self {
        Handshakes {
            identity,
            ..Handshakes::default()
        }
    }

    /// Whether any handshake waits for a timer.
    pub(super) fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.legs
            .values()
            .filter_map(|h| h.session.poll_timeout())
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Forgets the handshakes of a removed call.
    pub(super) fn remove_call(&mut self, slot: usize) {
        self.legs.retain(|(call, _, _), _| *call != slot);
    }
}

impl Worker {
    /// After a leg was re-signalled: a new handshake when its DTLS role or the party's
    /// fingerprint changed (a re-offer with a new certificate), none when it is not DTLS.
    pub(super) fn dtls_signalled(&mut self, call: usize, media: usize, side: Side, now: Instant) {
        let key = (call, media, side_index(side));
        let params = self
            .calls
            .get(call)
            .and_then(Option::as_ref)
            .and_then(|c| c.media.get(media))
            .and_then(|m| m.pair.dtls(side))
            .filter(|p| p.peer.is_some());
        let (Some(params), Some(identity)) = (params, self.dtls.identity.as_ref()) else {
            self.dtls.legs.remove(&key);
            return;
        };
        let running = self
            .dtls
            .legs
            .get(&key)
            .filter(|h| h.session.state() != DtlsState::Failed)
            .map(|h| h.session.params());
        if running == Some(params) {
            return;
        }
        match DtlsSession::new(identity, params, now) {
            Ok(session) => {
                self.dtls.legs.insert(
                    key,
                    Handshake {
                        session,
                        party: None,
                    },
                );
                self.dtls_flush(call, media, side, None);
            }
            Err(error) => {
                let event = DtlsEvent::Failed(error);
                self.dtls_record(call, media, side, &event);
                self.dtls.legs.remove(&key);
            }
        }
    }

    /// A verified ICE check from leg `side`'s party: the relay's client handshake that failed
    /// (retransmissions exhausted, say before the party's ICE completed) starts again.
    pub(super) fn dtls_retry(&mut self, call: usize, media: usize, side: Side, now: Instant) {
        let failed_client = self
            .dtls
            .legs
            .get(&(call, media, side_index(side)))
            .is_some_and(|h| {
                h.session.state() == DtlsState::Failed
                    && h.session.params().role == DtlsRole::Client
            });
        if failed_client {
            self.dtls_signalled(call, media, side, now);
        }
    }

    /// A DTLS datagram on leg `side`'s RTP port. False when the leg has no handshake (the
    /// caller relays the datagram as any other).
    pub(super) fn dtls_datagram(
        &mut self,
        call: usize,
        media: usize,
        side: Side,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> bool {
        let key = (call, media, side_index(side));
        let Some(handshake) = self.dtls.legs.get_mut(&key) else {
            return false;
        };
        // One party per leg: the first address that speaks DTLS, until a new handshake.
        if handshake.party.is_some_and(|p| p != source) {
            self.dtls.totals.dropped += 1;
            if let Some(entry) = self.media_entry(call, media) {
                entry.pair.record_dtls_dropped(side);
            }
            return true;
        }
        handshake.party = Some(source);
        let event = handshake.session.handle_datagram(now, datagram);
        self.dtls_event(call, media, side, event);
        self.dtls_flush(call, media, side, Some(source));
        true
    }

    /// Retransmissions due by `now`.
    pub(super) fn dtls_timers(&mut self, now: Instant) {
        let due: Vec<(usize, usize, usize)> = self
            .dtls
            .legs
            .iter()
            .filter(|(_, h)| h.session.poll_timeout().is_some_and(|at| at <= now))
            .map(|(key, _)| *key)
            .collect();
        for (call, media, side) in due {
            let side = if side == 0 { Side::A } else { Side::B };
            let Some(handshake) = self.dtls.legs.get_mut(&(call, media, side_index(side))) else {
                continue;
            };
            let event = handshake.session.handle_timeout(now);
            let party = handshake.party;
            self.dtls_event(call, media, side, event);
            self.dtls_flush(call, media, side, party);
        }
    }

    fn dtls_event(&mut self, call: usize, media: usize, side: Side, event: DtlsEvent) {
        if let DtlsEvent::Keys(keys) = &event {
            if let Some(entry) = self.media_entry(call, media) {
                entry.pair.set_dtls_keys(side, *keys);
            }
        }
        if let DtlsEvent::Failed(_) = &event {
            // The next attempt may come from anywhere the party is.
            if let Some(handshake) = self.dtls.legs.get_mut(&(call, media, side_index(side))) {
                handshake.party = None;
            }
        }
        self.dtls_record(call, media, side, &event);
    }

    fn dtls_record(&mut self, call: usize, media: usize, side: Side, event: &DtlsEvent) {
        self.dtls.totals.record(event);
        if let Some(entry) = self.media_entry(call, media) {
            entry.pair.record_dtls(side, event);
        }
    }

    /// Sends what the leg's handshake has queued, from the leg's RTP port, to `to` or else
    /// to where the leg's RTP goes.
    fn dtls_flush(&mut self, call: usize, media: usize, side: Side, to: Option<SocketAddr>) {
        let Some(entry) = self.media_entry(call, media) else {
            return;
        };
        let to = to.or_else(|| entry.pair.rtp_destination(side));
        let token = entry
            .tokens
            .get(side_index(side))
            .and_then(|kinds| kinds.get(kind_index(SocketKind::Rtp)))
            .copied()
            .flatten();
        let Some(handshake) = self.dtls.legs.get_mut(&(call, media, side_index(side))) else {
            return;
        };
        let socket = token
            .and_then(|t| self.sockets.get(t.0))
            .and_then(Option::as_ref);
        while let Some(datagram) = handshake.session.poll_transmit() {
            if let (Some(socket), Some(to)) = (socket, to) {
                let _ = socket.socket.send_to(&datagram, to);
            }
        }
    }
}
