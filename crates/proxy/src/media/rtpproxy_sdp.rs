//! The SDP side of the RTPProxy engine: RTPProxy returns a port and an address per stream and
//! never sees the SDP, so the proxy reads the streams to announce (one `U`/`L` per `m=` line,
//! numbered from 1: RTPProxy's medianum) and writes the relay's port and address back in —
//! each stream's `c=`, `m=` port and `a=rtcp`, the session-level `c=` (when a stream relied on
//! it, or with the `c` flag), `o=`'s address with the `o` flag — with `o=` kept stable per sender
//! (its first username and session id, the version one up whenever the SDP changes).

use std::net::IpAddr;

use anchorage_rtpp::LegFlags;
use anchorage_sdp::{FieldError, Session};
use bytes::Bytes;

/// One stream announced to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stream {
    /// Index of its `m=` section.
    pub(super) index: usize,
    /// The party's media address.
    pub(super) address: IpAddr,
    /// The party's RTP port.
    pub(super) port: u16,
}

impl Stream {
    /// RTPProxy's medianum: the `m=` line's number, from 1.
    pub(super) fn medianum(&self) -> u32 {
        u32::try_from(self.index).map_or(u32::MAX, |i| i.saturating_add(1))
    }
}

/// The streams of `sdp` to announce: every `m=` section not rejected (port 0), with the
/// address of its `c=` (its own, else the session's).
pub(super) fn streams(sdp: &Session) -> Result<Vec<Stream>, String> {
    let mut out = Vec::new();
    for (index, section) in sdp.media().iter().enumerate() {
        if section.is_rejected() {
            continue;
        }
        let address = sdp
            .effective_connection(index)
            .map_err(|e| e.to_string())?
            .and_then(|c| c.ip())
            .ok_or_else(|| format!("media stream {} has no c= IP address", index + 1))?;
        out.push(Stream {
            index,
            address,
            port: section.media().port(),
        });
    }
    Ok(out)
}

/// The `o=` a sender's SDPs go out with on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OriginState {
    username: String,
    session_id: String,
    version: u64,
    /// The last SDP sent, its version set to 0: a change bumps the version.
    unversioned: Bytes,
}

/// `sdp` with the relay's `(section index, port, address)` for each announced stream.
pub(super) fn rewrite(
    sdp: &Session,
    relayed: &[(usize, u16, IpAddr)],
    flags: &LegFlags,
    origin: &mut Option<OriginState>,
) -> Result<Bytes, FieldError> {
    let mut out = sdp.clone();
    let mut relied_on_session = false;
    // A stream on hold the RFC 2543 way (`c=` 0.0.0.0 or `::`) keeps its null address, in the
    // node's address family: the other party must not send to it (OpenSIPS and Kamailio keep
    // it too). The port is the node's all the same.
    let held = |index: usize, address: IpAddr| -> Result<IpAddr, FieldError> {
        let null = sdp
            .effective_connection(index)?
            .and_then(|c| c.ip())
            .is_some_and(|ip| ip.is_unspecified());
        Ok(match (null, address) {
            (false, _) => address,
            (true, IpAddr::V4(_)) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            (true, IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        })
    };
    for &(index, port, address) in relayed {
        let address = held(index, address)?;
        let Some(section) = out.media_mut().get_mut(index) else {
            continue;
        };
        relied_on_session |= section.connection()?.is_none();
        section.set_port(port);
        section.set_connection(address);
        if section.rtcp()?.is_some() {
            section.set_rtcp(port.saturating_add(1), Some(address));
        }
    }
    if let Some(&(index, _, address)) = relayed.first() {
        let has_session_c = out.session_level().connection()?.is_some();
        if has_session_c && (relied_on_session || flags.session_connection) {
            out.session_level_mut()
                .set_connection(held(index, address)?);
        }
        if flags.origin {
            // `o=` names the node even when the streams are held.
            out.set_origin_address(address)?;
        }
    }
    let mut unversioned = out.clone();
    unversioned.set_origin_version(0)?;
    let unversioned = unversioned.to_bytes();
    let state = match origin.take() {
        None => {
            let o = out.origin()?;
            OriginState {
                username: o.username.to_owned(),
                session_id: o.session_id.to_owned(),
                version: o.session_version,
                unversioned,
            }
        }
        Some(mut state) => {
            let mut same = out.clone();
            same.set_origin(&state.username, &state.session_id, 0)?;
            if same.to_bytes() != state.unversioned {
                state.version = state.version.saturating_add(1);
            }
            state.unversioned = same.to_bytes();
            state
        }
    };
    out.set_origin(&state.username, &state.session_id, state.version)?;
    *origin = Some(state);
    Ok(out.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str =
        "v=0\r\no=alice 42 7 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 101\r\na=rtcp:4001\r\na=rtpmap:101 telephone-event/8000\r\n\
        m=video 0 RTP/AVP 96\r\n\
        m=audio 4002 RTP/AVP 8\r\nc=IN IP4 192.0.2.11\r\n";

    fn offer() -> Session {
        Session::parse(Bytes::from_static(OFFER.as_bytes())).unwrap()
    }

    #[test]
    fn every_stream_but_the_rejected_one_is_announced() {
        let s = streams(&offer()).unwrap();
        let got: Vec<(u32, String, u16)> = s
            .iter()
            .map(|s| (s.medianum(), s.address.to_string(), s.port))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "192.0.2.10".into(), 4000),
                (3, "192.0.2.11".into(), 4002)
            ]
        );
        let bare = Session::parse(Bytes::from_static(
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
        ))
        .unwrap();
        assert_eq!(
            streams(&bare).unwrap_err(),
            "media stream 1 has no c= IP address"
        );
    }

    #[test]
    fn ports_addresses_and_rtcp_are_the_relays_and_o_stays_stable() {
        let relay: IpAddr = "203.0.113.1".parse().unwrap();
        let relayed = [(0, 20000, relay), (2, 20002, relay)];
        let flags = LegFlags::parse("o").unwrap();
        let mut origin = None;
        let out = rewrite(&offer(), &relayed, &flags, &mut origin).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.contains("o=alice 42 7 IN IP4 203.0.113.1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nc=IN IP4 203.0.113.1\r\nt=0"), "{text}");
        assert!(text.contains("m=audio 20000 RTP/AVP 0 101\r\nc=IN IP4 203.0.113.1\r\na=rtcp:20001 IN IP4 203.0.113.1\r\n"), "{text}");
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"), "{text}");
        assert!(
            text.contains("m=audio 20002 RTP/AVP 8\r\nc=IN IP4 203.0.113.1\r\n"),
            "{text}"
        );
        assert!(!text.contains("192.0.2."), "{text}");
        // The same SDP again: same version; a new port: one up, whatever the party wrote.
        let again = rewrite(&offer(), &relayed, &flags, &mut origin).unwrap();
        assert_eq!(again, out);
        let moved = [(0, 30000, relay), (2, 30002, relay)];
        let next = rewrite(&offer(), &moved, &flags, &mut origin).unwrap();
        assert!(String::from_utf8_lossy(&next).contains("o=alice 42 8 IN IP4"));
        let other_party = offer_with_origin("o=bob 9 1 IN IP4 192.0.2.10");
        let kept = rewrite(&other_party, &moved, &flags, &mut origin).unwrap();
        assert!(
            String::from_utf8_lossy(&kept).contains("o=alice 42 8 IN IP4"),
            "same SDP otherwise: identity and version kept"
        );
    }

    #[test]
    fn a_null_address_on_hold_is_kept_with_the_relays_port() {
        let held = Session::parse(Bytes::from(
            OFFER.replace("c=IN IP4 192.0.2.10\r\nt=0", "c=IN IP4 0.0.0.0\r\nt=0"),
        ))
        .unwrap();
        let relay: IpAddr = "203.0.113.1".parse().unwrap();
        let relayed = [(0, 20000, relay), (2, 20002, relay)];
        let flags = LegFlags::parse("co").unwrap();
        let out = rewrite(&held, &relayed, &flags, &mut None).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        // The first stream relied on the session's null address: it keeps it, with the
        // relay's ports; the third had its own address and gets the relay's.
        assert!(text.contains("\r\nc=IN IP4 0.0.0.0\r\nt=0"), "{text}");
        assert!(
            text.contains("m=audio 20000 RTP/AVP 0 101\r\nc=IN IP4 0.0.0.0\r\na=rtcp:20001 IN IP4 0.0.0.0\r\n"),
            "{text}"
        );
        assert!(
            text.contains("m=audio 20002 RTP/AVP 8\r\nc=IN IP4 203.0.113.1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("o=alice 42 7 IN IP4 203.0.113.1\r\n"),
            "{text}"
        );
    }

    fn offer_with_origin(o: &str) -> Session {
        let text = OFFER.replace("o=alice 42 7 IN IP4 192.0.2.10", o);
        Session::parse(Bytes::from(text)).unwrap()
    }
}
