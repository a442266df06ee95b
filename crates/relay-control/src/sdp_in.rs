//! What the relay reads from a party's SDP: for each `m=` line, where the party receives RTP
//! and RTCP, whether it multiplexes RTCP (RFC 5761), and whether the stream is usable.

use std::net::{IpAddr, SocketAddr};

use anchorage_relay::SdpPeer;
use anchorage_sdp::Session;

/// One `m=` line of an incoming SDP, as the relay needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamIn {
    /// Where the party receives media; `None` for a rejected stream (port 0) or a hold address
    /// (`0.0.0.0`/`::`): nothing can be sent there.
    pub peer: Option<SdpPeer>,
    /// The party asks for (offer) or accepts (answer) RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// `m=` port 0.
    pub rejected: bool,
    /// The `c=` address is `0.0.0.0`/`::` (RFC 2543 hold).
    pub zero_address: bool,
}

/// Why an SDP cannot be relayed; rtpengine answers these with "Incomplete SDP specification".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncompleteSdp {
    /// No `m=` line at all.
    #[error("the SDP has no media section")]
    NoMedia,
    /// A stream with a port but no usable `c=`.
    #[error("media section {0} has no c= line (neither its own nor at session level)")]
    NoConnection(usize),
    /// A `c=` whose address is not an IP address (a host name) or malformed.
    #[error("media section {index} has an unusable c= address: {reason}")]
    BadConnection {
        /// The media section.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Reads every `m=` line. `source_override` replaces the SDP's address (rtpengine's
/// `SIP source address` with `received-from`, or `media address`).
pub fn read(
    sdp: &Session,
    source_override: Option<IpAddr>,
) -> Result<Vec<StreamIn>, IncompleteSdp> {
    if sdp.media().is_empty() {
        return Err(IncompleteSdp::NoMedia);
    }
    let mut streams = Vec::with_capacity(sdp.media().len());
    for (index, media) in sdp.media().iter().enumerate() {
        let rtcp_mux = media.section().rtcp_mux();
        if media.is_rejected() {
            streams.push(StreamIn {
                peer: None,
                rtcp_mux,
                rejected: true,
                zero_address: false,
            });
            continue;
        }
        let bad = |reason: String| IncompleteSdp::BadConnection { index, reason };
        let connection = sdp
            .effective_connection(index)
            .map_err(|e| bad(e.to_string()))?
            .ok_or(IncompleteSdp::NoConnection(index))?;
        let sdp_ip = connection
            .ip()
            .ok_or_else(|| bad(format!("{:?} is not an IP address", connection.address)))?;
        let zero_address = sdp_ip.is_unspecified();
        let port = media.media().port();
        let peer = if zero_address {
            None
        } else {
            let ip = source_override.unwrap_or(sdp_ip);
            let rtp = SocketAddr::new(ip, port);
            let rtcp = match media.section().rtcp() {
                Ok(Some(rtcp)) => {
                    let rtcp_ip = rtcp
                        .connection
                        .and_then(|c| c.ip())
                        .filter(|_| source_override.is_none())
                        .unwrap_or(ip);
                    SocketAddr::new(rtcp_ip, rtcp.port)
                }
                // A malformed a=rtcp is ignored (RFC 3550's RTP + 1 applies), as rtpengine does.
                Ok(None) | Err(_) => SocketAddr::new(ip, port.wrapping_add(1)),
            };
            Some(SdpPeer::with_rtcp(rtp, if rtcp_mux { rtp } else { rtcp }))
        };
        streams.push(StreamIn {
            peer,
            rtcp_mux,
            rejected: false,
            zero_address,
        });
    }
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(text: &str) -> Session {
        Session::parse_slice(text.as_bytes()).unwrap()
    }

    #[test]
    fn session_connection_rtcp_attribute_and_mux() {
        let s = sdp(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\na=rtcp:4005 IN IP4 192.0.2.9\r\n\
             m=video 5000 RTP/AVP 96\r\na=rtcp-mux\r\n\
             m=audio 0 RTP/AVP 0\r\n",
        );
        let streams = read(&s, None).unwrap();
        assert_eq!(
            streams[0].peer,
            Some(SdpPeer::with_rtcp(
                "192.0.2.1:4000".parse().unwrap(),
                "192.0.2.9:4005".parse().unwrap()
            ))
        );
        assert!(!streams[0].rtcp_mux);
        let mux = streams[1].peer.unwrap();
        assert_eq!(mux.rtcp, mux.rtp);
        assert!(streams[1].rtcp_mux);
        assert!(streams[2].rejected);
        assert_eq!(streams[2].peer, None);
    }

    #[test]
    fn hold_address_has_no_peer_and_override_replaces_the_address() {
        let s = sdp("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n\
             m=audio 4002 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n");
        let streams = read(&s, Some("198.51.100.7".parse().unwrap())).unwrap();
        assert!(streams[0].zero_address);
        assert_eq!(streams[0].peer, None);
        assert_eq!(
            streams[1].peer.unwrap().rtp,
            "198.51.100.7:4002".parse::<std::net::SocketAddr>().unwrap()
        );
    }

    #[test]
    fn incomplete_sdps_are_named() {
        let none = sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n");
        assert_eq!(read(&none, None), Err(IncompleteSdp::NoMedia));
        let no_c =
            sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n");
        assert_eq!(read(&no_c, None), Err(IncompleteSdp::NoConnection(0)));
        let host = sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 host.example.com\r\n");
        assert!(matches!(
            read(&host, None),
            Err(IncompleteSdp::BadConnection { index: 0, .. })
        ));
    }
}
