//! The call of the SRTP micro-benchmarks: leg A SDES-SRTP or plain, leg B plain, both
//! confirmed, and 172-byte RTP packets (160 bytes of G.711 every 20 ms).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_relay::{
    Decision, LegConfig, LocalSocket, MasterKey, MediaPair, Payload, SdpPeer, Side, SocketKind,
    SrtpKey, SrtpKeys, SrtpSuite, StreamFlags,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

const A_REMOTE: &str = "192.0.2.10:4000";
const B_REMOTE: &str = "198.51.100.20:5000";

fn leg(local: &str, remote: &str, flags: StreamFlags) -> LegConfig {
    LegConfig {
        local_rtp: addr(local),
        local_rtcp: None,
        remote: Some(SdpPeer::new(addr(remote))),
        rtcp_mux: true,
        flags,
    }
}

/// One call and the packets sent through it.
pub struct Bench {
    pair: MediaPair,
    a_remote: SocketAddr,
    b_remote: SocketAddr,
    packet: [u8; 172],
    seq: u16,
    now: Instant,
    /// What the relay sent last.
    out: Vec<u8>,
    /// What it sent last, when sent back to it as a datagram from leg A.
    wire: Vec<u8>,
}

impl Bench {
    /// Leg A encrypted (`srtp`: the same key both ways, see `benches/srtp.rs`) or plain.
    pub fn new(srtp: bool) -> Bench {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let key = SrtpKey {
            suite,
            master: MasterKey::new(suite, &[0x5a; 30]).expect("key length"),
            lifetime: None,
        };
        let a_flags = StreamFlags {
            srtp: srtp.then_some(SrtpKeys {
                inbound: Some(key),
                outbound: Some(key),
            }),
            ..StreamFlags::default()
        };
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let pair = MediaPair::new(
            leg("203.0.113.1:30000", A_REMOTE, a_flags),
            leg("203.0.113.1:30002", B_REMOTE, StreamFlags::default()),
            t0,
        )
        .expect("pair");
        let mut packet = [0u8; 172];
        packet[0] = 0x80;
        packet[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        Bench {
            pair,
            a_remote: addr(A_REMOTE),
            b_remote: addr(B_REMOTE),
            packet,
            seq: 0,
            // Past the learning window: the confirmed path, as in a running call.
            now: t0 + Duration::from_secs(4),
            out: Vec::with_capacity(2048),
            wire: Vec::with_capacity(2048),
        }
    }

    fn sent(decision: Decision, len: usize) -> usize {
        match decision {
            Decision::Forward(_) => len,
            Decision::Drop(reason) => panic!("bench packet dropped: {reason:?}"),
        }
    }

    /// Leg B's next packet relayed towards leg A (encrypted if A is): the bytes sent.
    pub fn encrypt(&mut self) -> usize {
        self.seq = self.seq.wrapping_add(1);
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.packet[4..8].copy_from_slice(&(u32::from(self.seq) * 160).to_be_bytes());
        self.now += Duration::from_millis(20);
        let on = LocalSocket {
            side: Side::B,
            kind: SocketKind::Rtp,
        };
        let relayed = self
            .pair
            .relay(on, self.b_remote, &self.packet, self.now, &mut self.out);
        let len = match relayed.payload {
            Payload::Unchanged => self.packet.len(),
            Payload::Rewritten => self.out.len(),
        };
        Self::sent(relayed.decision, len)
    }

    /// Both legs plain: leg B's next packet relayed towards leg A.
    pub fn plain(&mut self) -> usize {
        self.encrypt()
    }

    /// [`Bench::encrypt`], then the encrypted packet received from leg A and decrypted
    /// towards leg B.
    pub fn round_trip(&mut self) -> usize {
        let sent = self.encrypt();
        std::mem::swap(&mut self.out, &mut self.wire);
        let on = LocalSocket {
            side: Side::A,
            kind: SocketKind::Rtp,
        };
        let relayed = self
            .pair
            .relay(on, self.a_remote, &self.wire, self.now, &mut self.out);
        sent + Self::sent(relayed.decision, self.out.len())
    }
}
