//! Just enough of the RTP fixed header ([RFC 3550 §5.1](https://www.rfc-editor.org/rfc/rfc3550#section-5.1))
//! and of RTP/RTCP demultiplexing ([RFC 5761 §4](https://www.rfc-editor.org/rfc/rfc5761#section-4))
//! for a relay to count and route a datagram.
//!
//! Hand-written on purpose: the relay needs four fields at fixed offsets of the 12-byte
//! header (the second byte, sequence number, timestamp, SSRC) and must forward datagrams it
//! cannot fully parse (SRTP, odd padding, header extensions it does not know). A full parser
//! such as `rtp-types` validates CSRC lists, extensions and padding we never look at, so this
//! reads the bytes it needs and nothing else, without allocating or failing on the rest.

/// Length of the RTP fixed header (RFC 3550 §5.1), the least a datagram needs to be counted as RTP.
pub const RTP_HEADER_LEN: usize = 12;

/// The fields of an RTP fixed header that the relay's counters use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp, in the payload's clock.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Reads the fixed header of `packet`, or `None` if it is shorter than 12 bytes or its
    /// version is not 2.
    #[inline]
    pub fn peek(packet: &[u8]) -> Option<Self> {
        let header: &[u8; RTP_HEADER_LEN] = packet.get(..RTP_HEADER_LEN)?.try_into().ok()?;
        if header[0] >> 6 != 2 {
            return None;
        }
        Some(Self {
            payload_type: header[1] & 0x7f,
            sequence: u16::from_be_bytes([header[2], header[3]]),
            timestamp: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
            ssrc: u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        })
    }
}

/// Whether a datagram received on an RTP port is RTCP, by RFC 5761 §4: the second byte of
/// an RTCP packet is its packet type, and types 192–223 never collide with an RTP
/// marker-bit + payload-type byte as long as RTP avoids payload types 64–95.
#[inline]
pub fn is_rtcp(packet: &[u8]) -> bool {
    matches!(packet.get(1), Some(192..=223)) && packet.len() >= 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_reads_fixed_header_fields() {
        let packet = [
            0x80,
            0x80 | 8,
            0x12,
            0x34,
            0,
            0,
            0x01,
            0x40,
            0xde,
            0xad,
            0xbe,
            0xef,
            0xff,
        ];
        let header = RtpHeader::peek(&packet).unwrap();
        assert_eq!(
            header,
            RtpHeader {
                payload_type: 8,
                sequence: 0x1234,
                timestamp: 320,
                ssrc: 0xdead_beef
            }
        );
    }

    #[test]
    fn peek_refuses_short_or_wrong_version() {
        assert_eq!(RtpHeader::peek(&[0x80; 11]), None);
        assert_eq!(RtpHeader::peek(&[0x40; 12]), None);
    }

    #[test]
    fn rfc5761_demux_splits_on_the_second_byte() {
        // RTCP sender report (200), receiver report (201), and the edges of the range.
        for pt in [192u8, 200, 201, 223] {
            assert!(is_rtcp(&[0x80, pt, 0, 1, 0, 0, 0, 0]), "{pt}");
        }
        // RTP PCMU with and without the marker bit, dynamic 96 with marker (0xe0 = 224).
        for byte in [0u8, 0x80, 96, 0x80 | 96, 191] {
            assert!(!is_rtcp(&[0x80, byte, 0, 1, 0, 0, 0, 0]), "{byte}");
        }
        assert!(!is_rtcp(&[0x80, 200]), "too short for an RTCP header");
    }
}
