//! SIP transports (RFC 3261 §18) over tokio: UDP and TCP listeners, stream framing,
//! connection reuse, idle timeout and limits.
//!
//! This crate moves bytes; it does not interpret SIP beyond framing a TCP stream into
//! messages (with [`anchorage_sip::StreamFramer`]). Every received message becomes an
//! [`Inbound`] on the channel given to [`Transports::bind`]; the proxy core answers with
//! [`Outbound`]s passed to [`Transports::send`], which never blocks the caller.
//!
//! TCP connections are keyed by the remote address, whoever opened them, so a response or an
//! in-dialog request to a peer that connected to us reuses its connection (RFC 3261 §18.2.2,
//! RFC 5923's idea without the alias parameter). A connection that sends nothing for the idle
//! timeout is closed, at most `max_connections` are open at once, and a stream whose message
//! exceeds `max_message_bytes` or breaks framing is closed (never a hang waiting for a body
//! that will not come).
//!
//! Against one host taking every slot (issue 18): one source address may hold at most
//! `max_connections_per_source` inbound connections, and a message whose first byte arrived
//! more than `message_timeout` ago and is still incomplete closes its connection (slowloris).
//! Refusals and such closes are counted in [`Stats`] and logged at most once per source per
//! [`REFUSAL_LOG_INTERVAL`] ([`SourceLogLimiter`]), so an attack cannot flood the log either.
#![warn(missing_docs)]

mod log_limit;

pub use log_limit::{LogLine, SourceLogLimiter, REFUSAL_LOG_INTERVAL, REFUSAL_LOG_SOURCES};

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// The SIP transport (one type for the core and the I/O layer).
pub use anchorage_sip::Transport;

/// A socket to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    /// UDP or TCP.
    pub transport: Transport,
    /// Local address; port 0 picks a free one (see [`Transports::local_addrs`]).
    pub address: SocketAddr,
}

/// Limits for stream transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most simultaneous TCP connections, inbound and outbound together.
    pub max_connections: usize,
    /// A connection that receives nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Largest message accepted on a stream.
    pub max_message_bytes: usize,
    /// Most simultaneous inbound TCP connections from one source address.
    pub max_connections_per_source: usize,
    /// A message still incomplete this long after its first byte arrived closes its
    /// connection.
    pub message_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
            max_message_bytes: 65_535,
            max_connections_per_source: 64,
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// A message received from the network.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The whole message (one datagram, or one framed message of a stream).
    pub data: Bytes,
    /// Where it came from (the packet's source, not what the message claims).
    pub source: SocketAddr,
    /// The local socket it arrived on.
    pub local: SocketAddr,
    /// How it arrived.
    pub transport: Transport,
    /// When it was read from the socket: the time it then waits in the channel tells the
    /// proxy how far behind it is.
    pub received: std::time::Instant,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The serialized message.
    pub data: Bytes,
    /// Where to send it.
    pub destination: SocketAddr,
    /// How to send it.
    pub transport: Transport,
    /// Preferred local UDP socket (the one the dialog was reached on); the first UDP listener of
    /// the destination's address family otherwise.
    pub local: Option<SocketAddr>,
}

/// Errors of binding or sending.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A listener could not be bound.
    #[error("cannot listen on {transport:?} {address}: {source}")]
    Bind {
        /// Transport of the listener.
        transport: Transport,
        /// Address of the listener.
        address: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// No UDP listener can reach the destination's address family.
    #[error("no UDP listener for the address family of {0}")]
    NoUdpSocket(SocketAddr),
    /// The connection limit is reached.
    #[error("TCP connection limit ({0}) reached; not connecting to {1}")]
    ConnectionLimit(usize, SocketAddr),
    /// The connection's send queue is full (the peer does not read).
    #[error("send queue to {0} is full")]
    QueueFull(SocketAddr),
    /// A UDP send failed.
    #[error("UDP send to {0} failed: {1}")]
    Udp(SocketAddr, io::Error),
}

/// Counters of the transports, for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received on UDP.
    pub udp_received: AtomicU64,
    /// Messages received on TCP.
    pub tcp_received: AtomicU64,
    /// Messages sent, all transports.
    pub sent: AtomicU64,
    /// TCP connections closed because a message broke framing or exceeded the size limit.
    pub framing_errors: AtomicU64,
    /// TCP connections refused or not opened because of the connection limit.
    pub connections_refused: AtomicU64,
    /// Inbound TCP connections refused because their source already held
    /// `max_connections_per_source`.
    pub connections_refused_per_source: AtomicU64,
    /// TCP connections closed because a message stayed incomplete past `message_timeout`.
    pub message_timeouts: AtomicU64,
    /// TCP connections closed for idleness.
    pub idle_closed: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
    /// UDP sends that found the socket's send buffer full and waited for room.
    pub udp_send_deferred: AtomicU64,
}

/// Socket buffers asked for on UDP listeners: bursts of thousands of messages per second must
/// not overflow the kernel's defaults (about 200 KiB); the kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`.
const UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A non-blocking UDP socket on `address` with large (4 MiB) buffers, for tokio. Also used
/// for the ng control sockets: a proxy moving hundreds of calls sends hundreds of ng requests
/// at once, and a relay's default 200 KiB receive buffer would drop most of them.
pub fn bind_udp(address: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// Messages that may wait for a TCP connection's writer before sends fail with `QueueFull`.
const TCP_QUEUE: usize = 1024;

struct Connection {
    id: u64,
    writer: mpsc::Sender<Bytes>,
}

struct Shared {
    udp: Vec<Arc<UdpSocket>>,
    connections: Mutex<HashMap<SocketAddr, Connection>>,
    open_connections: AtomicUsize,
    /// Inbound connections per source address; an address is removed at zero, so the map
    /// holds at most `max_connections` entries.
    per_source: Mutex<HashMap<IpAddr, usize>>,
    /// Log lines about refused connections, limited per source.
    refusal_log: Mutex<SourceLogLimiter>,
    /// Log lines about messages that missed their deadline, limited per source.
    timeout_log: Mutex<SourceLogLimiter>,
    next_connection_id: AtomicU64,
    limits: Limits,
    inbound: mpsc::Sender<Inbound>,
    stats: Stats,
}

/// The running transports. Cheap to clone; dropping every clone does not stop the listener
/// tasks (they end with the runtime).
#[derive(Clone)]
pub struct Transports {
    shared: Arc<Shared>,
    local: Vec<(Transport, SocketAddr)>,
}

impl Transports {
    /// Binds every listener and starts receiving; messages go to `inbound`.
    pub async fn bind(
        specs: &[ListenerSpec],
        limits: Limits,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<Transports, TransportError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        let mut local = Vec::new();
        for spec in specs {
            let bind_error = |source| TransportError::Bind {
                transport: spec.transport,
                address: spec.address,
                source,
            };
            match spec.transport {
                Transport::Udp => {
                    let socket = bind_udp(spec.address).map_err(bind_error)?;
                    let addr = socket.local_addr().map_err(bind_error)?;
                    local.push((Transport::Udp, addr));
                    udp.push(Arc::new(socket));
                }
                Transport::Tcp => {
                    let listener = TcpListener::bind(spec.address).await.map_err(bind_error)?;
                    let addr = listener.local_addr().map_err(bind_error)?;
                    local.push((Transport::Tcp, addr));
                    tcp.push(listener);
                }
            }
        }
        let shared = Arc::new(Shared {
            udp,
            connections: Mutex::new(HashMap::new()),
            open_connections: AtomicUsize::new(0),
            per_source: Mutex::new(HashMap::new()),
            refusal_log: Mutex::new(SourceLogLimiter::default()),
            timeout_log: Mutex::new(SourceLogLimiter::default()),
            next_connection_id: AtomicU64::new(1),
            limits,
            inbound,
            stats: Stats::default(),
        });
        for socket in &shared.udp {
            tokio::spawn(udp_receive_loop(shared.clone(), socket.clone()));
        }
        for listener in tcp {
            tokio::spawn(tcp_accept_loop(shared.clone(), listener));
        }
        Ok(Transports { shared, local })
    }

    /// The bound addresses, in the order of the specs.
    pub fn local_addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.local
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Number of open TCP connections.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// Sends a message without waiting: UDP goes out at once; TCP is queued on the connection
    /// to the destination, which is opened if there is none.
    pub fn send(&self, out: Outbound) -> Result<(), TransportError> {
        let result = match out.transport {
            Transport::Udp => self.send_udp(&out),
            Transport::Tcp => self.send_tcp(out.destination, out.data),
        };
        match &result {
            Ok(()) => self.shared.stats.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self
                .shared
                .stats
                .send_errors
                .fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    fn send_udp(&self, out: &Outbound) -> Result<(), TransportError> {
        let by_local = out.local.and_then(|local| {
            self.shared
                .udp
                .iter()
                .find(|s| s.local_addr().ok() == Some(local))
        });
        let socket = by_local
            .or_else(|| {
                self.shared.udp.iter().find(|s| {
                    s.local_addr()
                        .is_ok_and(|a| a.is_ipv4() == out.destination.is_ipv4())
                })
            })
            .ok_or(TransportError::NoUdpSocket(out.destination))?;
        match socket.try_send_to(&out.data, out.destination) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The socket's send buffer is full for a moment (a burst): wait for room
                // instead of losing the message, which would cost a retransmission interval.
                self.shared
                    .stats
                    .udp_send_deferred
                    .fetch_add(1, Ordering::Relaxed);
                let socket = Arc::clone(socket);
                let (data, destination) = (out.data.clone(), out.destination);
                let shared = Arc::clone(&self.shared);
                tokio::spawn(async move {
                    if socket.send_to(&data, destination).await.is_err() {
                        shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
                Ok(())
            }
            Err(e) => Err(TransportError::Udp(out.destination, e)),
        }
    }

    fn send_tcp(&self, destination: SocketAddr, data: Bytes) -> Result<(), TransportError> {
        let shared = &self.shared;
        let mut connections = lock(&shared.connections);
        if let Some(conn) = connections.get(&destination) {
            return conn.writer.try_send(data).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => TransportError::QueueFull(destination),
                mpsc::error::TrySendError::Closed(_) => TransportError::QueueFull(destination),
            });
        }
        if shared.open_connections.load(Ordering::Relaxed) >= shared.limits.max_connections {
            shared
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(TransportError::ConnectionLimit(
                shared.limits.max_connections,
                destination,
            ));
        }
        // Register the connection before it is open so that messages sent meanwhile queue up
        // behind this one instead of opening a second connection.
        let (writer, queue) = mpsc::channel(TCP_QUEUE);
        let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        // Cannot fail: the channel is new and empty.
        let _ = writer.try_send(data);
        let pong = writer.clone();
        connections.insert(destination, Connection { id, writer });
        shared.open_connections.fetch_add(1, Ordering::Relaxed);
        drop(connections);
        let shared = shared.clone();
        tokio::spawn(async move {
            match TcpStream::connect(destination).await {
                Ok(stream) => {
                    run_connection(shared, stream, destination, id, pong, queue, None).await
                }
                Err(e) => {
                    tracing::warn!(%destination, error = %e, "TCP connect failed");
                    shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    forget_connection(&shared, destination, id);
                }
            }
        });
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn udp_receive_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here on some systems; keep receiving.
                tracing::debug!(%local, error = %e, "UDP receive error");
                continue;
            }
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        // RFC 5626 keep-alives and stray CRLFs carry no message.
        if datagram.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
            continue;
        }
        shared.stats.udp_received.fetch_add(1, Ordering::Relaxed);
        let inbound = Inbound {
            data: Bytes::copy_from_slice(datagram),
            source,
            local,
            transport: Transport::Udp,
            received: std::time::Instant::now(),
        };
        if shared.inbound.send(inbound).await.is_err() {
            return;
        }
    }
}

async fn tcp_accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let limits = &shared.limits;
        if shared.open_connections.load(Ordering::Relaxed) >= limits.max_connections {
            shared
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            log_refusal(&shared, peer, "the node's limit", limits.max_connections);
            drop(stream);
            continue;
        }
        let Some(slot) = SourceSlot::take(&shared, peer.ip()) else {
            shared
                .stats
                .connections_refused_per_source
                .fetch_add(1, Ordering::Relaxed);
            log_refusal(
                &shared,
                peer,
                "the per-source limit",
                limits.max_connections_per_source,
            );
            drop(stream);
            continue;
        };
        let (writer, queue) = mpsc::channel(TCP_QUEUE);
        let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let pong = writer.clone();
        lock(&shared.connections).insert(peer, Connection { id, writer });
        shared.open_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run_connection(
            shared.clone(),
            stream,
            peer,
            id,
            pong,
            queue,
            Some(slot),
        ));
    }
}

/// One WARN line for a refused connection, unless its source had one within the interval.
fn log_refusal(shared: &Shared, peer: SocketAddr, which: &str, limit: usize) {
    let line = lock(&shared.refusal_log).check(peer.ip(), Instant::now());
    match line {
        Some(LogLine {
            source: Some(source),
            suppressed,
        }) => tracing::warn!(
            %source,
            limit,
            suppressed,
            "TCP connection refused: {which} is reached (one line per source per {} s)",
            REFUSAL_LOG_INTERVAL.as_secs()
        ),
        Some(LogLine {
            source: None,
            suppressed,
        }) => tracing::warn!(
            suppressed,
            "TCP connections refused from more sources than the log follows"
        ),
        None => {}
    }
}

/// An inbound connection's place in its source's count, given back when dropped.
struct SourceSlot {
    shared: Arc<Shared>,
    source: IpAddr,
}

impl SourceSlot {
    /// Counts one more connection from `source`, or `None` if it already has its limit.
    fn take(shared: &Arc<Shared>, source: IpAddr) -> Option<SourceSlot> {
        let source = source.to_canonical();
        let mut counts = lock(&shared.per_source);
        let count = counts.entry(source).or_insert(0);
        if *count >= shared.limits.max_connections_per_source {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            shared: shared.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.shared.per_source);
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// Reads and writes one TCP connection until it closes, fails, idles out or breaks framing.
async fn run_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    pong: mpsc::Sender<Bytes>,
    mut queue: mpsc::Receiver<Bytes>,
    // Held until the connection ends: its source's count goes down then.
    _slot: Option<SourceSlot>,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        forget_connection(&shared, peer, id);
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let write_task = tokio::spawn(async move {
        while let Some(data) = queue.recv().await {
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let max = shared.limits.max_message_bytes;
    let mut framer = anchorage_sip::StreamFramer::with_limits(max, max);
    let mut buf = vec![0u8; 16 * 1024];
    // When the first byte of the message still incomplete arrived.
    let mut started: Option<Instant> = None;
    loop {
        let limits = &shared.limits;
        let wait = match started {
            Some(at) => limits
                .message_timeout
                .saturating_sub(at.elapsed())
                .min(limits.idle_timeout),
            None => limits.idle_timeout,
        };
        let read = tokio::time::timeout(wait, reader.read(&mut buf)).await;
        let n = match read {
            Err(_) => {
                match started {
                    Some(at) if at.elapsed() >= limits.message_timeout => {
                        shared
                            .stats
                            .message_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        log_message_timeout(&shared, peer);
                    }
                    _ => {
                        shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TCP connection idle; closing");
                    }
                }
                break;
            }
            Ok(Err(_)) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
        };
        let arrived = Instant::now();
        framer.push(buf.get(..n).unwrap_or_default());
        let mut broken = false;
        loop {
            match framer.next_message() {
                Ok(Some(data)) => {
                    // What is left belongs to a later message, begun in this read at most.
                    started = None;
                    if data.len() > shared.limits.max_message_bytes {
                        broken = true;
                        break;
                    }
                    shared.stats.tcp_received.fetch_add(1, Ordering::Relaxed);
                    let inbound = Inbound {
                        data,
                        source: peer,
                        local,
                        transport: Transport::Tcp,
                        received: std::time::Instant::now(),
                    };
                    if shared.inbound.send(inbound).await.is_err() {
                        broken = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing TCP connection: bad framing");
                    broken = true;
                    break;
                }
            }
        }
        // RFC 5626 §4.4.1: answer each double-CRLF ping with a single CRLF pong.
        for _ in 0..framer.take_pings() {
            let _ = pong.try_send(Bytes::from_static(b"\r\n"));
        }
        if broken {
            shared.stats.framing_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        started = if framer.in_message() {
            Some(started.unwrap_or(arrived))
        } else {
            None
        };
    }
    forget_connection(&shared, peer, id);
    write_task.abort();
}

/// One INFO line for a connection closed for a message that missed its deadline, unless its
/// source had one within the interval.
fn log_message_timeout(shared: &Shared, peer: SocketAddr) {
    let line = lock(&shared.timeout_log).check(peer.ip(), Instant::now());
    let limit_s = shared.limits.message_timeout.as_secs_f64();
    match line {
        Some(LogLine {
            source: Some(source),
            suppressed,
        }) => tracing::warn!(
            %source,
            suppressed,
            "closing TCP connection: a message is still incomplete {limit_s} s after its first \
             byte (one line per source per {} s)",
            REFUSAL_LOG_INTERVAL.as_secs()
        ),
        Some(LogLine {
            source: None,
            suppressed,
        }) => tracing::warn!(
            suppressed,
            "closing TCP connections with incomplete messages from more sources than the log \
             follows"
        ),
        None => {}
    }
}

fn forget_connection(shared: &Shared, peer: SocketAddr, id: u64) {
    let mut connections = lock(&shared.connections);
    if connections.get(&peer).is_some_and(|c| c.id == id) {
        connections.remove(&peer);
    }
    shared.open_connections.fetch_sub(1, Ordering::Relaxed);
}
