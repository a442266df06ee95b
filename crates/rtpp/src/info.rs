//! `I`'s statistics, read by a controller: RTPProxy answers `I` (and `Ib`, brief) with lines
//! `name: value`, e.g.
//!
//! ```text
//! sessions created: 12
//! active sessions: 2
//! active streams: 4
//! packets received: 3061
//! packets transmitted: 3061
//! ```
//!
//! and, without `b`, one more line per session (its Call-ID, tags and counters). Only the
//! `name: number` lines are read; the others are skipped. `active sessions` must be there:
//! it is the node's load.

use crate::error::InfoParseError;

/// The numbers of an `I` reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Info {
    /// `active sessions`: sessions the node holds now (one per Call-ID, tags and medianum).
    pub active_sessions: u64,
    /// `active streams`, if given.
    pub active_streams: Option<u64>,
    /// `sessions created` since the node started, if given.
    pub sessions_created: Option<u64>,
    /// `packets received`, if given.
    pub packets_received: Option<u64>,
    /// `packets transmitted`, if given.
    pub packets_transmitted: Option<u64>,
}

impl Info {
    /// Reads the text of an `I` reply.
    pub fn parse(text: &str) -> Result<Info, InfoParseError> {
        let mut info = Info::default();
        let mut active = None;
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let slot = match name.trim() {
                "active sessions" => &mut active,
                "active streams" => &mut info.active_streams,
                "sessions created" => &mut info.sessions_created,
                "packets received" => &mut info.packets_received,
                "packets transmitted" => &mut info.packets_transmitted,
                _ => continue,
            };
            let value = value.trim();
            let n = value
                .parse::<u64>()
                .map_err(|_| InfoParseError::BadNumber {
                    name: name.trim().to_owned(),
                    value: value.to_owned(),
                })?;
            *slot = Some(n);
        }
        info.active_sessions = active.ok_or(InfoParseError::NoActiveSessions)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reply;

    #[test]
    fn reads_rtpproxys_statistics_and_skips_the_session_lines() {
        // As RTPProxy 3.x (rtp.io 1.1.1) answers `I`, with one session listed.
        let (_, reply) = Reply::parse(
            b"c9 sessions created: 3\nactive sessions: 1\nactive streams: 2\n\
              packets received: 40\npackets transmitted: 38\n\
              Call-id: abc;z9hG4bK1, tag: ft;1, ttl: 60, ...\n",
        )
        .unwrap();
        let Reply::Text(text) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            Info::parse(&text),
            Ok(Info {
                active_sessions: 1,
                active_streams: Some(2),
                sessions_created: Some(3),
                packets_received: Some(40),
                packets_transmitted: Some(38),
            })
        );
        // Brief and minimal: only the load is needed.
        assert_eq!(
            Info::parse("active sessions: 7").map(|i| i.active_sessions),
            Ok(7)
        );
    }

    #[test]
    fn a_reply_without_the_load_or_with_a_bad_number_is_an_error() {
        assert_eq!(Info::parse("E1"), Err(InfoParseError::NoActiveSessions));
        assert_eq!(Info::parse(""), Err(InfoParseError::NoActiveSessions));
        assert_eq!(
            Info::parse("sessions created: 1\nactive sessions: -2\n"),
            Err(InfoParseError::BadNumber {
                name: "active sessions".into(),
                value: "-2".into()
            })
        );
        assert!(matches!(
            Info::parse("active sessions: 99999999999999999999999"),
            Err(InfoParseError::BadNumber { .. })
        ));
    }
}
