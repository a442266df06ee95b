//! The SDP a call generator's phone offers and answers (one PCMU audio stream), and what it
//! reads from the other side's SDP (RFC 3264).

use std::net::{IpAddr, SocketAddr};

use anchorage_sdp::{Direction, Session};

/// This side's SDP: one audio stream on `address`, with an `o=` line whose version goes up
/// only when the SDP changes (RFC 3264 §8).
#[derive(Debug, Clone)]
pub struct LocalSdp {
    session_id: u64,
    version: u64,
    address: SocketAddr,
    direction: Direction,
    rendered: Vec<u8>,
}

impl LocalSdp {
    /// A `sendrecv` SDP for media received on `address`.
    pub fn new(session_id: u64, address: SocketAddr) -> LocalSdp {
        let mut sdp = LocalSdp {
            session_id,
            version: 1,
            address,
            direction: Direction::SendRecv,
            rendered: Vec::new(),
        };
        sdp.render();
        sdp
    }

    fn render(&mut self) {
        let ip = self.address.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        self.rendered = format!(
            "v=0\r\no=callgen {id} {version} IN {family} {ip}\r\ns=anchorage callgen\r\n\
             c=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n\
             a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na={direction}\r\n",
            id = self.session_id,
            version = self.version,
            port = self.address.port(),
            direction = self.direction.as_str(),
        )
        .into_bytes();
    }

    /// The SDP as last sent.
    pub fn bytes(&self) -> &[u8] {
        &self.rendered
    }

    /// The `o=` version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Our direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The answer to an offer whose direction is `offered` (`sendonly` → `recvonly`, …):
    /// the same bytes as before if nothing changed, else the new SDP with the version + 1.
    pub fn answer(&mut self, offered: Direction) -> &[u8] {
        let direction = offered.reversed();
        if direction != self.direction {
            self.direction = direction;
            self.version += 1;
            self.render();
        }
        &self.rendered
    }
}

/// What the other side's SDP says about its audio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP; `None` for a held stream (`c=0.0.0.0`) or a rejected one (port 0).
    pub address: Option<SocketAddr>,
    /// The stream's direction as the other side wrote it.
    pub direction: Direction,
}

impl RemoteMedia {
    /// Reads the first audio stream of an SDP body.
    pub fn parse(body: &[u8]) -> Result<RemoteMedia, String> {
        let session = Session::parse_slice(body).map_err(|e| format!("SDP: {e}"))?;
        let index = session
            .media()
            .iter()
            .position(|m| m.media().media() == "audio")
            .ok_or("SDP has no audio stream")?;
        let port = session.media()[index].media().port();
        let connection = session
            .effective_connection(index)
            .map_err(|e| format!("SDP: {e}"))?
            .ok_or("SDP has no c= line for its audio stream")?;
        let ip: IpAddr = connection
            .ip()
            .ok_or_else(|| format!("SDP c= address {} is not an IP", connection.address))?;
        let direction = session
            .effective_direction(index)
            .unwrap_or(Direction::SendRecv);
        let address = (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port));
        Ok(RemoteMedia { address, direction })
    }

    /// Whether the other side sends to us.
    pub fn sends(&self) -> bool {
        self.address.is_some()
            && matches!(self.direction, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the other side wants our media.
    pub fn receives(&self) -> bool {
        self.address.is_some()
            && matches!(self.direction, Direction::SendRecv | Direction::RecvOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_sdp_is_pcmu_sendrecv_and_versions_only_on_change() {
        let mut sdp = LocalSdp::new(77, "127.0.0.1:4000".parse().unwrap());
        let text = String::from_utf8(sdp.bytes().to_vec()).unwrap();
        assert!(
            text.contains("o=callgen 77 1 IN IP4 127.0.0.1\r\n"),
            "{text}"
        );
        assert!(text.contains("m=audio 4000 RTP/AVP 0\r\n"), "{text}");
        let same = sdp.answer(Direction::SendRecv).to_vec();
        assert_eq!(same, text.as_bytes());
        let held = String::from_utf8(sdp.answer(Direction::SendOnly).to_vec()).unwrap();
        assert!(held.contains("o=callgen 77 2 IN IP4"), "{held}");
        assert!(held.contains("a=recvonly"), "{held}");
        assert_eq!(sdp.answer(Direction::SendOnly), held.as_bytes());
        assert_eq!(sdp.version(), 2);
    }

    #[test]
    fn remote_media_address_and_direction() {
        let m = RemoteMedia::parse(
            b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
              m=video 5000 RTP/AVP 96\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\na=sendonly\r\n",
        )
        .unwrap();
        assert_eq!(m.address, Some("10.0.0.2:30000".parse().unwrap()));
        assert!(m.sends() && !m.receives());
        let hold = RemoteMedia::parse(
            b"v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 3000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(hold.address, None);
        assert!(!hold.sends());
        assert!(RemoteMedia::parse(b"v=0\r\n").is_err());
    }
}
