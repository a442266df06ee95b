//! Media sockets: one non-blocking UDP socket per local port, bound with `socket2` in the
//! caller's thread so that "address already in use" reaches the control plane at offer time
//! (it then takes another pair from the pool, as rtpengine does).

use std::net::{SocketAddr, UdpSocket};

use anchorage_relay::{LocalSocket, MediaPair};
use socket2::{Domain, Protocol, Socket, Type};

use super::MediaError;

/// Binds a non-blocking UDP socket to `local`.
///
/// No `SO_REUSEADDR`/`SO_REUSEPORT`: a port that someone else holds must fail here, not
/// silently share traffic.
pub fn bind_udp(local: SocketAddr) -> Result<UdpSocket, MediaError> {
    let bind = || -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
        if local.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&local.into())?;
        Ok(socket.into())
    };
    bind().map_err(|source| MediaError::Bind { local, source })
}

/// One media stream with its sockets bound, ready to hand to a worker.
#[derive(Debug)]
pub struct BoundMedia {
    pub(crate) pair: MediaPair,
    pub(crate) sockets: Vec<(LocalSocket, UdpSocket)>,
}

impl BoundMedia {
    /// Binds every local socket of `pair` (RTP and, unless muxed, RTCP, for both legs).
    /// On failure nothing stays bound and the error names the address.
    pub fn bind(pair: MediaPair) -> Result<Self, MediaError> {
        let sockets = pair
            .local_sockets()
            .map(|(on, local)| bind_udp(local).map(|socket| (on, socket)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { pair, sockets })
    }

    /// Like [`BoundMedia::bind`], but takes the sockets already bound for these addresses
    /// from `bound` (the control plane binds while it picks ports) and binds only the rest.
    pub fn with_sockets(
        pair: MediaPair,
        bound: &mut std::collections::HashMap<SocketAddr, UdpSocket>,
    ) -> Result<Self, MediaError> {
        let sockets = pair
            .local_sockets()
            .map(|(on, local)| match bound.remove(&local) {
                Some(socket) => Ok((on, socket)),
                None => bind_udp(local).map(|socket| (on, socket)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { pair, sockets })
    }

    /// The media pair.
    pub fn pair(&self) -> &MediaPair {
        &self.pair
    }
}
