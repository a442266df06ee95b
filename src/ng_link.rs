//! The proxy's ng sockets: one UDP socket **connected** to each relay node.
//!
//! A connected UDP socket is what lets the proxy see a dead relay process in one round trip:
//! the kernel answers a datagram sent to a closed port with an ICMP port unreachable, and
//! only a connected socket turns that into an error (`ECONNREFUSED`) on its next receive or
//! send. An unconnected socket shared by all nodes never learns of it, and a dead relay could
//! only be found by waiting out its ping window. A hung relay (SIGSTOP, a blackholed host)
//! sends no ICMP; the core's silence window still catches it.
//!
//! Each socket has a reader task that hands replies and refusals to the proxy task on one
//! bounded channel; sending is synchronous (`try_send`) from the proxy task.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a reader task saw on a relay's socket.
#[derive(Debug)]
pub enum NgInput {
    /// A datagram from the relay.
    Datagram(SocketAddr, Bytes),
    /// The relay's address refused a datagram (ICMP port unreachable).
    Refused(SocketAddr),
}

/// Replies and refusals queued at most before the reader tasks wait for the proxy task.
const INPUT_QUEUE: usize = 8_192;

/// One connected socket per relay node, and their reader tasks (stopped on drop).
pub struct NgLinks {
    sockets: HashMap<SocketAddr, Arc<UdpSocket>>,
    readers: Vec<JoinHandle<()>>,
}

impl NgLinks {
    /// Connects a socket to each relay address; returns the links and the channel of what
    /// comes back.
    pub fn connect(
        relays: impl IntoIterator<Item = SocketAddr>,
    ) -> io::Result<(NgLinks, mpsc::Receiver<NgInput>)> {
        let (tx, rx) = mpsc::channel(INPUT_QUEUE);
        let mut links = NgLinks {
            sockets: HashMap::new(),
            readers: Vec::new(),
        };
        for relay in relays {
            if links.sockets.contains_key(&relay) {
                continue;
            }
            let local = local_address_for(relay);
            let std_socket = std::net::UdpSocket::bind(local)?;
            std_socket.connect(relay)?;
            std_socket.set_nonblocking(true)?;
            let socket = Arc::new(UdpSocket::from_std(std_socket)?);
            links.readers.push(tokio::spawn(read_replies(
                relay,
                socket.clone(),
                tx.clone(),
            )));
            links.sockets.insert(relay, socket);
        }
        Ok((links, rx))
    }

    /// Sends a datagram to a relay now. `Err(Refused)`-kind errors mean the relay's port is
    /// closed (an earlier datagram drew an ICMP port unreachable).
    pub fn send(&self, relay: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        match self.sockets.get(&relay) {
            Some(socket) => socket.try_send(datagram).map(|_| ()),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no ng socket for {relay}"),
            )),
        }
    }
}

impl NgLinks {
    /// Reads what the sockets already hold, without waiting: replies (and refusals) that
    /// arrived but that a busy reader task has not passed on yet. The proxy task calls this
    /// before its timers run, so a silence window never ends while a reply sits unread.
    pub fn take_ready(&self, mut each: impl FnMut(NgInput)) {
        let mut buf = vec![0u8; 65_535];
        for (relay, socket) in &self.sockets {
            // Bounded: a flood cannot keep the proxy task here.
            for _ in 0..256 {
                match socket.try_recv(&mut buf) {
                    Ok(n) => each(NgInput::Datagram(
                        *relay,
                        Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()),
                    )),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        each(NgInput::Refused(*relay))
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

impl Drop for NgLinks {
    fn drop(&mut self) {
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// Loopback for a loopback relay, else the wildcard address of its family (the kernel picks
/// the source address by route).
fn local_address_for(relay: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = match (relay.is_ipv6(), relay.ip().is_loopback()) {
        (false, true) => std::net::Ipv4Addr::LOCALHOST.into(),
        (false, false) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (true, true) => std::net::Ipv6Addr::LOCALHOST.into(),
        (true, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

async fn read_replies(relay: SocketAddr, socket: Arc<UdpSocket>, tx: mpsc::Sender<NgInput>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let input = match socket.recv(&mut buf).await {
            Ok(n) => NgInput::Datagram(
                relay,
                Bytes::copy_from_slice(buf.get(..n).unwrap_or_default()),
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => NgInput::Refused(relay),
            Err(e) => {
                tracing::debug!(%relay, error = %e, "ng receive failed");
                // Paced: an error that repeats must not spin the task.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}
