//! What keeps the network-facing control surfaces closed by default (issue 18):
//!
//! * [`check_api_exposure`]: the management API refuses to start on a non-loopback address
//!   without `api.token`, unless `api.allow_unauthenticated` says otherwise (then
//!   [`warn_if_unauthenticated`] warns at every start);
//! * [`token_matches`]: the token compared in constant time;
//! * [`ApiCounters`]: failed token checks and refused connections, for `/metrics`;
//! * [`LimitedListener`]: the API's TCP listener with a per-source connection limit and an
//!   idle deadline on every connection (axum has neither);
//! * [`ControlGate`]: the relay's ng allow-list, with refusals counted per source under a
//!   bounded number of labels and logged once per source per minute.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anchorage_config::ApiConfig;
use anchorage_sip_transport::{LogLine, SourceLogLimiter, REFUSAL_LOG_INTERVAL};
use ipnet::IpNet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Why a control surface may not start as configured.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    /// The management API would take state changes from anyone who reaches it.
    #[error("{0}")]
    UnauthenticatedApi(String),
    /// The relay's ng socket would take commands from anyone who reaches it.
    #[error(
        "the ng control socket {0} is not on loopback and no controller network is allowed: \
         anyone who reaches it could create, move and delete calls' media. Set \
         `relay.control_allow = [\"CIDR\", …]` (or --control-allow CIDR, repeatable) to the \
         networks of the proxies that drive this relay"
    )]
    OpenControl(SocketAddr),
}

/// Refuses an API on a non-loopback `listen` without a token unless the operator waived it.
pub fn check_api_exposure(listen: SocketAddr, api: &ApiConfig) -> Result<(), ExposureError> {
    match api.exposure_error(listen) {
        Some(message) => Err(ExposureError::UnauthenticatedApi(message)),
        None => Ok(()),
    }
}

/// Logs the waiver `api.allow_unauthenticated` as a warning when it is in use (no token): the
/// API server calls it once at every start.
pub fn warn_if_unauthenticated(listen: SocketAddr, api: &ApiConfig) {
    if api.token.is_none() && api.allow_unauthenticated {
        tracing::warn!(
            %listen,
            "api.allow_unauthenticated = true: the management API has no token, so anyone \
             who reaches {listen} can move calls, drain relays and unblock sources"
        );
    }
}

/// Refuses an ng socket on a non-loopback `listen` with an empty allow-list.
pub fn check_control_exposure(listen: SocketAddr, allow: &[IpNet]) -> Result<(), ExposureError> {
    if allow.is_empty() && !anchorage_config::is_loopback(listen.ip()) {
        return Err(ExposureError::OpenControl(listen));
    }
    Ok(())
}

/// Whether `given` is the configured `token`, compared in constant time (`subtle`): how long
/// the comparison takes says nothing about how many leading bytes were right. Only a length
/// difference returns early, which tells an attacker the length and nothing else.
pub fn token_matches(given: Option<&str>, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    match given {
        Some(given) => bool::from(given.as_bytes().ct_eq(token.as_bytes())),
        None => false,
    }
}

/// Counters of the API server's own defences, shown on its `/metrics`.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// State-changing requests refused for a missing or wrong token.
    pub auth_failures: AtomicU64,
    /// HTTP connections closed at once because their source held its limit.
    pub connections_refused: AtomicU64,
    /// HTTP connections closed because nothing arrived within [`API_IDLE_TIMEOUT`].
    pub idle_closed: AtomicU64,
}

impl Collector for ApiCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = [
            (
                "anchorage_api_auth_failures",
                "API requests refused for a missing or wrong token",
                &self.auth_failures,
            ),
            (
                "anchorage_api_connections_refused",
                "API connections closed because their source held api.max_connections_per_source",
                &self.connections_refused,
            ),
            (
                "anchorage_api_idle_closed",
                "API connections closed after 30 s without a byte received",
                &self.idle_closed,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// A connection of the API that sends nothing for this long is closed (also a request
/// trickled in slower than a byte per 30 s: hyper has no header deadline without a timer).
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections per source address, shared by a listener and its connections.
#[derive(Debug)]
struct SourceCounts {
    limit: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl SourceCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Single inserts and removals: a poisoned map is still consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection's place in its source's count, given back when dropped.
#[derive(Debug)]
struct Slot {
    counts: Arc<SourceCounts>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

/// The API's listener for `axum::serve`: a source at its limit has further connections closed
/// at once (counted, logged once per source per minute), and each accepted connection is
/// closed after [`API_IDLE_TIMEOUT`] without a byte received.
pub struct LimitedListener {
    listener: TcpListener,
    counts: Arc<SourceCounts>,
    counters: Arc<ApiCounters>,
    log: SourceLogLimiter,
}

impl LimitedListener {
    /// Wraps a bound listener: at most `per_source` connections from one address.
    pub fn new(listener: TcpListener, per_source: usize, counters: Arc<ApiCounters>) -> Self {
        Self {
            listener,
            counts: Arc::new(SourceCounts {
                limit: per_source.max(1),
                counts: Mutex::new(HashMap::new()),
            }),
            counters,
            log: SourceLogLimiter::default(),
        }
    }

    fn take_slot(&self, source: IpAddr) -> Option<Slot> {
        let source = source.to_canonical();
        let mut counts = self.counts.lock();
        let count = counts.entry(source).or_insert(0);
        if *count >= self.counts.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            counts: self.counts.clone(),
            source,
        })
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = self.take_slot(peer.ip()) else {
                self.counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                match self.log.check(peer.ip(), Instant::now()) {
                    Some(LogLine {
                        source: Some(source),
                        suppressed,
                    }) => tracing::warn!(
                        %source,
                        limit = self.counts.limit,
                        suppressed,
                        "API connection refused: api.max_connections_per_source is reached \
                         (one line per source per {} s)",
                        REFUSAL_LOG_INTERVAL.as_secs()
                    ),
                    Some(LogLine {
                        source: None,
                        suppressed,
                    }) => tracing::warn!(
                        suppressed,
                        "API connections refused from more sources than the log follows"
                    ),
                    None => {}
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let connection = LimitedConnection {
                stream,
                _slot: slot,
                idle: Box::pin(tokio::time::sleep(API_IDLE_TIMEOUT)),
                counters: self.counters.clone(),
            };
            return (connection, peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// An accepted API connection: its source's slot is held until it is dropped, and a read
/// that waits longer than [`API_IDLE_TIMEOUT`] fails.
pub struct LimitedConnection {
    stream: TcpStream,
    _slot: Slot,
    idle: Pin<Box<tokio::time::Sleep>>,
    counters: Arc<ApiCounters>,
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + API_IDLE_TIMEOUT);
                Poll::Ready(result)
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.counters.idle_closed.fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nothing received for 30 s",
                    )))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Distinct source labels of `anchorage_relay_control_refused_total`; refusals from further
/// sources are counted under `source="other"`.
pub const REFUSED_SOURCE_LABELS: usize = 64;

/// The relay's ng allow-list: commands from a source outside it are dropped unanswered,
/// counted per source (at most [`REFUSED_SOURCE_LABELS`] labels, then `other`) and logged
/// once per source per minute.
#[derive(Debug)]
pub struct ControlGate {
    allow: Vec<IpNet>,
    refused: BTreeMap<String, u64>,
    log: SourceLogLimiter,
}

impl ControlGate {
    /// A gate letting in `allow`; an empty list lets every source in (the relay refuses to
    /// start that way off loopback, see [`check_control_exposure`]).
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow,
            refused: BTreeMap::new(),
            log: SourceLogLimiter::default(),
        }
    }

    /// Whether a command from `source` may be handled; a refusal is counted and maybe logged.
    pub fn admits(&mut self, source: SocketAddr, now: Instant) -> bool {
        let ip = source.ip().to_canonical();
        if self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        let label = ip.to_string();
        let label =
            if self.refused.contains_key(&label) || self.refused.len() < REFUSED_SOURCE_LABELS {
                label
            } else {
                "other".to_string()
            };
        *self.refused.entry(label).or_insert(0) += 1;
        match self.log.check(ip, now) {
            Some(LogLine {
                source: Some(source),
                suppressed,
            }) => tracing::warn!(
                %source,
                suppressed,
                "ng command dropped: the source is not in relay.control_allow (one line per \
                 source per {} s)",
                REFUSAL_LOG_INTERVAL.as_secs()
            ),
            Some(LogLine {
                source: None,
                suppressed,
            }) => tracing::warn!(
                suppressed,
                "ng commands dropped from more sources outside relay.control_allow than the \
                 log follows"
            ),
            None => {}
        }
        false
    }

    /// Refused commands by source label.
    pub fn refused(&self) -> &BTreeMap<String, u64> {
        &self.refused
    }
}

/// `anchorage_relay_control_refused_total{source}` from the gate's counts.
pub fn encode_refused(
    encoder: &mut DescriptorEncoder,
    refused: &BTreeMap<String, u64>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "anchorage_relay_control_refused",
        "ng commands dropped unanswered because their source is not in relay.control_allow",
        None,
        MetricType::Counter,
    )?;
    for (source, count) in refused {
        let counter = ConstCounter::new(*count);
        counter.encode(family.encode_family(&[("source", source.as_str())])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"));
        assert!(!token_matches(Some("s3cretX"), "s3cret"));
        assert!(!token_matches(Some("S3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }

    #[test]
    fn the_api_needs_a_token_off_loopback() {
        let api = ApiConfig::default();
        let public: SocketAddr = "10.1.2.3:7060".parse().unwrap();
        let err = check_api_exposure(public, &api).unwrap_err().to_string();
        assert!(err.contains("`api.token`"), "{err}");
        assert!(check_api_exposure("127.0.0.1:7060".parse().unwrap(), &api).is_ok());
        assert!(check_api_exposure("[::1]:7060".parse().unwrap(), &api).is_ok());
        assert!(check_api_exposure("0.0.0.0:7060".parse().unwrap(), &api).is_err());
        let waived = ApiConfig {
            allow_unauthenticated: true,
            ..ApiConfig::default()
        };
        assert!(check_api_exposure(public, &waived).is_ok());
        let token = ApiConfig {
            token: Some("t".into()),
            ..ApiConfig::default()
        };
        assert!(check_api_exposure(public, &token).is_ok());
    }

    #[test]
    fn the_control_socket_needs_an_allow_list_off_loopback() {
        let public: SocketAddr = "10.1.2.3:2223".parse().unwrap();
        let err = check_control_exposure(public, &[]).unwrap_err().to_string();
        assert!(err.contains("relay.control_allow"), "{err}");
        assert!(err.contains("--control-allow"), "{err}");
        assert!(check_control_exposure("127.0.0.1:2223".parse().unwrap(), &[]).is_ok());
        let allow = ["10.0.0.0/8".parse().unwrap()];
        assert!(check_control_exposure(public, &allow).is_ok());
    }

    #[test]
    fn the_gate_counts_refusals_under_a_bounded_set_of_labels() {
        let mut gate = ControlGate::new(vec!["10.0.0.0/24".parse().unwrap()]);
        let now = Instant::now();
        assert!(gate.admits("10.0.0.7:5000".parse().unwrap(), now));
        assert!(gate.admits("[::ffff:10.0.0.8]:5000".parse().unwrap(), now));
        for i in 0..200u8 {
            let source = SocketAddr::from(([192, 0, 2, i], 4000));
            assert!(!gate.admits(source, now));
        }
        assert!(!gate.admits("192.0.2.0:1".parse().unwrap(), now));
        let refused = gate.refused();
        assert_eq!(refused.len(), REFUSED_SOURCE_LABELS + 1);
        assert_eq!(refused.get("192.0.2.0"), Some(&2));
        assert_eq!(refused.get("other"), Some(&(200 - 64)));
        assert_eq!(refused.values().sum::<u64>(), 201);
    }
}
