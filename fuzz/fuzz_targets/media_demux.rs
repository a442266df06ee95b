//! Fuzz the media port demultiplexer of a DTLS-SRTP leg (RFC 7983): every datagram is
//! classified by its first byte; a DTLS one goes to the leg's handshake (the relay as DTLS
//! server), anything else through `MediaPair::relay` of a stream whose DTLS leg has no keys
//! yet. Must never panic; no datagram may complete a handshake (none can hold the party's
//! private key) and nothing may cross the relay from or to a DTLS leg without keys.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anchorage_relay::demux::{classify, PacketKind};
use anchorage_relay::{
    Decision, DtlsEvent, DtlsIdentity, DtlsParams, DtlsRole, DtlsSession, Fingerprint, LegConfig,
    LocalSocket, MediaPair, SdpPeer, Side, SocketKind, StreamFlags,
};
use libfuzzer_sys::fuzz_target;

/// The relay's certificate, made once (a key pair per run would be all the fuzzer measures).
fn identity() -> &'static DtlsIdentity {
    static IDENTITY: OnceLock<DtlsIdentity> = OnceLock::new();
    IDENTITY.get_or_init(|| DtlsIdentity::generate().unwrap_or_else(|_| unreachable!()))
}

fn leg(local: &str, remote: &str, dtls: Option<DtlsParams>) -> LegConfig {
    let addr = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
    LegConfig {
        local_rtp: addr(local),
        local_rtcp: None,
        remote: Some(SdpPeer::new(addr(remote))),
        rtcp_mux: true,
        flags: StreamFlags {
            dtls,
            ..StreamFlags::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let params = DtlsParams {
        role: DtlsRole::Server,
        peer: Some(Fingerprint::of_der(b"the party")),
    };
    let Ok(mut session) = DtlsSession::new(identity(), params, t0) else {
        return;
    };
    let Ok(mut pair) = MediaPair::new(
        leg("203.0.113.1:30000", "192.0.2.10:4000", Some(params)),
        leg("203.0.113.1:30002", "198.51.100.20:5000", None),
        t0,
    ) else {
        return;
    };
    let mut out = Vec::new();
    // Datagrams are length-prefixed: one byte of length, then that many bytes.
    let mut rest = data;
    let mut n = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;
        n += 1;
        let now = t0 + Duration::from_millis(20 * n);
        let kind = classify(datagram);
        match (datagram.first(), kind) {
            (Some(20..=63), k) => assert_eq!(k, PacketKind::Dtls),
            (Some(128..=191), k) => assert_eq!(k, PacketKind::Rtp),
            _ => {}
        }
        if kind == PacketKind::Dtls {
            let event = session.handle_datagram(now, datagram);
            assert!(!matches!(event, DtlsEvent::Keys(_)), "keys from garbage");
            while session.poll_transmit().is_some() {}
            let _ = session.handle_timeout(now + Duration::from_secs(2));
            continue;
        }
        for side in [Side::A, Side::B] {
            let on = LocalSocket {
                side,
                kind: SocketKind::Rtp,
            };
            let source = pair.rtp_destination(side).unwrap_or_else(|| unreachable!());
            let relayed = pair.relay(on, source, datagram, now, &mut out);
            assert!(
                matches!(relayed.decision, Decision::Drop(_)),
                "relayed across a DTLS leg without keys"
            );
        }
    }
});
