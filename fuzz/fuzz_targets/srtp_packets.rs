//! Fuzz the media packet path with SRTP: any datagram arriving on a relay port of a stream
//! whose legs are SDES-SRTP, plain RTP, or one of each goes through `MediaPair::relay` —
//! authentication and decryption of what an encrypted leg sends, the forwarding decision,
//! encryption towards an encrypted leg. Must never panic. Datagrams are tried as they come and
//! also encrypted first with the sender's key, so that the paths after a successful
//! authentication (RTP, RTCP, replays, re-keying) are reached as well.
#![no_main]

use std::time::{Duration, Instant};

use anchorage_relay::srtp::SrtpSession;
use anchorage_relay::{
    Decision, LegConfig, LocalSocket, MasterKey, MediaPair, Payload, SdpPeer, Side, SocketKind,
    SrtpKey, SrtpKeys, SrtpSuite, StreamFlags,
};
use libfuzzer_sys::fuzz_target;

fn key(suite: SrtpSuite, fill: u8) -> SrtpKey {
    let bytes = [fill; anchorage_relay::srtp::MAX_MASTER_LEN];
    SrtpKey {
        suite,
        master: MasterKey::new(suite, &bytes[..suite.master_len()])
            .unwrap_or_else(|_| unreachable!()),
        lifetime: None,
    }
}

fn leg(local: &str, rtcp: &str, remote: &str, srtp: Option<SrtpKeys>) -> LegConfig {
    let addr = |s: &str| s.parse().unwrap_or_else(|_| unreachable!());
    LegConfig {
        local_rtp: addr(local),
        local_rtcp: Some(addr(rtcp)),
        remote: Some(SdpPeer::new(addr(remote))),
        rtcp_mux: false,
        flags: StreamFlags {
            srtp,
            ..StreamFlags::default()
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let suite = SrtpSuite::PREFERENCE[usize::from(selector) % SrtpSuite::PREFERENCE.len()];
    let sdes = |on: bool, fill: u8| {
        on.then(|| SrtpKeys {
            inbound: Some(key(suite, fill)),
            outbound: Some(key(suite, fill.wrapping_add(1))),
        })
    };
    let a_keys = sdes(selector & 0x10 != 0, 0xa0);
    let b_keys = sdes(selector & 0x20 != 0, 0xb0);
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let Ok(mut pair) = MediaPair::new(
        leg("203.0.113.1:30000", "203.0.113.1:30001", "192.0.2.10:4000", a_keys),
        leg("203.0.113.1:30002", "203.0.113.1:30003", "198.51.100.20:5000", b_keys),
        t0,
    ) else {
        return;
    };
    // What each party encrypts with: its own (inbound) key.
    let mut senders = [a_keys, b_keys].map(|keys| keys.and_then(|k| k.inbound).map(SrtpSession::new));
    let mut out = Vec::new();
    let mut now = t0;
    // Datagrams: one control byte (socket, encrypt first), one length byte, the bytes.
    while let [control, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(20);
        let side = if control & 1 == 0 { Side::A } else { Side::B };
        let kind = if control & 2 == 0 { SocketKind::Rtp } else { SocketKind::Rtcp };
        let on = LocalSocket { side, kind };
        let source = match side {
            Side::A => "192.0.2.10:4000",
            Side::B => "198.51.100.20:5000",
        }
        .parse()
        .unwrap_or_else(|_| unreachable!());
        let sender = &mut senders[usize::from(side == Side::B)];
        let encrypted = match sender {
            Some(session) if control & 4 != 0 => session.protect(datagram, kind == SocketKind::Rtcp).ok(),
            _ => None,
        };
        let packet = encrypted.as_deref().unwrap_or(datagram);
        let relayed = pair.relay(on, source, packet, now, &mut out);
        if let (Decision::Forward(_), Payload::Rewritten) = (relayed.decision, relayed.payload) {
            assert!(!out.is_empty());
        }
        if control & 8 != 0 {
            // Replay the same datagram: it must never be decrypted twice.
            let again = pair.relay(on, source, packet, now, &mut out);
            if relayed.decrypted.is_some() && kind == SocketKind::Rtp {
                assert!(again.decrypted.is_none());
            }
        }
    }
    let _ = pair.stats(Side::A).srtp;
});
