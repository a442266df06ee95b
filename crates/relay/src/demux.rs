//! What a datagram that arrived on a media port is, by its first byte
//! ([RFC 7983 §7](https://www.rfc-editor.org/rfc/rfc7983#section-7), updating RFC 5764 §5.1.2):
//!
//! ```text
//!  0–3     STUN        (ICE connectivity checks: crate::stun)
//!  16–19   ZRTP        (not spoken: dropped on a DTLS leg, relayed as-is otherwise)
//!  20–63   DTLS        (crate::dtls, on a leg the relay terminates DTLS for)
//!  64–79   TURN channel
//!  128–191 RTP / RTCP  (RFC 5761 §4 tells them apart: crate::packet)
//! ```
//!
//! A pure function of the bytes, so the data plane's branch for a plain leg stays one compare.

/// The kind of a media-port datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// STUN (first byte 0–3 and the RFC 5389 magic cookie).
    Stun,
    /// ZRTP (16–19).
    Zrtp,
    /// A DTLS record (20–63).
    Dtls,
    /// A TURN ChannelData message (64–79).
    TurnChannel,
    /// RTP or RTCP, SRTP or SRTCP (128–191).
    Rtp,
    /// Anything else (including an empty datagram).
    Other,
}

/// Classifies a datagram by its first byte (STUN also by its magic cookie).
#[inline]
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(0..=3) if crate::stun::is_stun(packet) => PacketKind::Stun,
        Some(16..=19) => PacketKind::Zrtp,
        Some(20..=63) => PacketKind::Dtls,
        Some(64..=79) => PacketKind::TurnChannel,
        Some(128..=191) => PacketKind::Rtp,
        _ => PacketKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges_of_rfc_7983() {
        let mut stun = [0u8; 20];
        stun[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        assert_eq!(classify(&stun), PacketKind::Stun);
        assert_eq!(classify(&[0u8; 20]), PacketKind::Other, "no magic cookie");
        assert_eq!(classify(&[16, 0]), PacketKind::Zrtp);
        for byte in [20u8, 22, 23, 63] {
            assert_eq!(classify(&[byte, 0xfe, 0xfd]), PacketKind::Dtls, "{byte}");
        }
        assert_eq!(classify(&[64]), PacketKind::TurnChannel);
        assert_eq!(classify(&[0x80, 0]), PacketKind::Rtp);
        assert_eq!(classify(&[0xbf]), PacketKind::Rtp);
        assert_eq!(classify(&[0xc0]), PacketKind::Other);
        assert_eq!(classify(&[]), PacketKind::Other);
    }
}
