//! The static RTP payload types of the RTP/AVP profile
//! ([RFC 3551 §6](https://www.rfc-editor.org/rfc/rfc3551#section-6), Tables 4 and 5; CN from
//! RFC 3389), which an SDP may use without an `a=rtpmap`.

use crate::attribute::Rtpmap;

/// `(payload type, encoding, clock rate, channels)`.
const TABLE: [(u8, &str, u32, Option<&str>); 24] = [
    (0, "PCMU", 8000, None),
    (3, "GSM", 8000, None),
    (4, "G723", 8000, None),
    (5, "DVI4", 8000, None),
    (6, "DVI4", 16000, None),
    (7, "LPC", 8000, None),
    (8, "PCMA", 8000, None),
    (9, "G722", 8000, None),
    (10, "L16", 44100, Some("2")),
    (11, "L16", 44100, None),
    (12, "QCELP", 8000, None),
    (13, "CN", 8000, None),
    (14, "MPA", 90000, None),
    (15, "G728", 8000, None),
    (16, "DVI4", 11025, None),
    (17, "DVI4", 22050, None),
    (18, "G729", 8000, None),
    (25, "CelB", 90000, None),
    (26, "JPEG", 90000, None),
    (28, "nv", 90000, None),
    (31, "H261", 90000, None),
    (32, "MPV", 90000, None),
    (33, "MP2T", 90000, None),
    (34, "H263", 90000, None),
];

/// The codec a static payload type stands for, e.g. `0` → `PCMU/8000`.
pub fn static_rtpmap(payload_type: u8) -> Option<Rtpmap<'static>> {
    TABLE.iter().find(|(pt, ..)| *pt == payload_type).map(
        |&(payload_type, encoding, clock_rate, parameters)| Rtpmap {
            payload_type,
            encoding,
            clock_rate,
            parameters,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries() {
        let g722 = static_rtpmap(9).unwrap();
        assert_eq!((g722.encoding, g722.clock_rate), ("G722", 8000));
        assert_eq!(static_rtpmap(10).unwrap().parameters, Some("2"));
        assert_eq!(static_rtpmap(2), None);
        assert_eq!(static_rtpmap(19), None);
        assert_eq!(static_rtpmap(96), None);
    }
}
