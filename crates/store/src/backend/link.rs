//! The connection to Redis: a [`ConnectionManager`] to a standalone server, one to the master
//! that Sentinel names (asked again after a failure), or a Redis Cluster connection. Each is
//! made lazily and remade after connection errors, so a store opened while Redis is down
//! starts writing as soon as it is back.
//!
//! Connecting through Sentinel or to a Cluster takes several round trips and, over TLS, one
//! handshake per server: it can outlast one operation's `cluster.timeout_ms`. So the attempt
//! runs as a task of its own ([`Attempt`]): the operation gives up at its timeout, the attempt
//! goes on, and the next operation takes it up instead of starting over (else a Cluster over
//! TLS on a busy host could be retried forever without ever connecting).

use std::sync::Arc;
use std::time::Duration;

use anchorage_config::cluster::Secret;
use anchorage_config::{StoreKind, StoreLocation};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, TlsCertificates, TlsMode, Value,
};

/// What it takes to reach the deployment.
pub(crate) struct Target {
    /// Where, without the password.
    pub location: StoreLocation,
    /// The password, from the URL or `cluster.password_file`.
    pub password: Option<Secret>,
    /// The CA certificate (PEM) for `rediss://`, if not the system's.
    pub ca: Option<Vec<u8>>,
    /// Connect and response timeout.
    pub timeout: Duration,
}

/// A connection to the deployment, made on first use.
pub(crate) enum Link {
    /// One server.
    Single(ConnectionManager),
    /// The master named by Sentinel.
    Sentinel {
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        manager: Option<ConnectionManager>,
        connecting: Option<Attempt<ConnectionManager>>,
        config: Box<ConnectionManagerConfig>,
        budget: Duration,
    },
    /// A Redis Cluster.
    Cluster {
        client: Box<ClusterClient>,
        connection: Option<ClusterConnection>,
        connecting: Option<Attempt<ClusterConnection>>,
        budget: Duration,
    },
}

/// The longest a connection attempt may go on in the background, in operation timeouts: the
/// Cluster client bounds each connection itself, redis-rs's Sentinel client does not.
const ATTEMPT_TIMEOUTS: u32 = 10;

/// A connection attempt running as a task of its own, so that it survives the operation that
/// started it; aborted when dropped.
pub(crate) struct Attempt<T>(tokio::task::JoinHandle<RedisResult<T>>);

impl<T: Send + 'static> Attempt<T> {
    /// Starts `connect`, given up after `budget`.
    fn spawn(
        budget: Duration,
        connect: impl std::future::Future<Output = RedisResult<T>> + Send + 'static,
    ) -> Attempt<T> {
        Attempt(tokio::spawn(async move {
            tokio::time::timeout(budget, connect)
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from((
                        ErrorKind::Io,
                        "could not connect",
                        format!("no connection within {} ms", budget.as_millis()),
                    )))
                })
        }))
    }

    /// Its outcome. Cancel-safe: if the caller stops waiting, the attempt goes on and may be
    /// waited for again.
    async fn outcome(&mut self) -> RedisResult<T> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(error) => Err(RedisError::from((
                ErrorKind::Io,
                "the connection attempt failed",
                error.to_string(),
            ))),
        }
    }
}

impl<T> Drop for Attempt<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits for the attempt in `connecting` (starting one with `start` if there is none) and
/// forgets it once it has ended, either way.
async fn take_up<T: Send + 'static>(
    connecting: &mut Option<Attempt<T>>,
    start: impl FnOnce() -> Attempt<T>,
) -> RedisResult<T> {
    let attempt = connecting.get_or_insert_with(start);
    let outcome = attempt.outcome().await;
    *connecting = None;
    outcome
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(timeout)
}

fn tls_certs(ca: &Option<Vec<u8>>) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: ca.clone(),
    }
}

fn addr(tls: bool, host: &str, port: u16) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_string(), port)
    }
}

impl Link {
    /// Builds the client for `target`; nothing is connected yet.
    pub fn new(target: &Target) -> RedisResult<Link> {
        let loc = &target.location;
        if loc.tls {
            // redis-rs builds its TLS configuration with the process-wide provider; ring is
            // the one compiled in, and naming it keeps TLS working should another crate ever
            // enable a second provider. (Deprecated in rustls 0.23.48 for lacking
            // post-quantum key exchange, which Redis servers do not offer either.) An error
            // only says a provider is already installed.
            #[allow(deprecated)]
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let password = target.password.as_ref().map(Secret::expose);
        match &loc.kind {
            StoreKind::Standalone => {
                let (host, port) = &loc.hosts[0];
                let mut redis = redis::RedisConnectionInfo::default().set_db(loc.db);
                if let Some(user) = &loc.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = password {
                    redis = redis.set_password(password);
                }
                let info = addr(loc.tls, host, *port)
                    .into_connection_info()?
                    .set_redis_settings(redis);
                let client = if loc.tls && target.ca.is_some() {
                    Client::build_with_tls(info, tls_certs(&target.ca))?
                } else {
                    Client::open(info)?
                };
                let manager = ConnectionManager::new_lazy_with_config(
                    client,
                    manager_config(target.timeout),
                )?;
                Ok(Link::Single(manager))
            }
            StoreKind::Sentinel { service } => {
                let sentinels = loc.hosts.iter().map(|(h, p)| addr(loc.tls, h, *p));
                let mut builder =
                    SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)?
                        .set_client_to_redis_db(loc.db);
                if loc.tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if target.ca.is_some() {
                        builder = builder
                            .set_client_to_redis_certificates(tls_certs(&target.ca))
                            .set_client_to_sentinel_certificates(tls_certs(&target.ca));
                    }
                }
                if let Some(user) = &loc.username {
                    builder = builder
                        .set_client_to_redis_username(user)
                        .set_client_to_sentinel_username(user);
                }
                if let Some(password) = password {
                    builder = builder
                        .set_client_to_redis_password(password)
                        .set_client_to_sentinel_password(password);
                }
                Ok(Link::Sentinel {
                    client: Arc::new(tokio::sync::Mutex::new(builder.build()?)),
                    manager: None,
                    connecting: None,
                    config: Box::new(manager_config(target.timeout)),
                    budget: target.timeout * ATTEMPT_TIMEOUTS,
                })
            }
            StoreKind::Cluster => {
                let nodes: Vec<ConnectionAddr> = loc
                    .hosts
                    .iter()
                    .map(|(h, p)| addr(loc.tls, h, *p))
                    .collect();
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(target.timeout)
                    .response_timeout(target.timeout)
                    .retries(1);
                if loc.tls {
                    builder = builder.tls(TlsMode::Secure);
                    if target.ca.is_some() {
                        builder = builder.certs(tls_certs(&target.ca));
                    }
                }
                if let Some(user) = &loc.username {
                    builder = builder.username(user);
                }
                if let Some(password) = password {
                    builder = builder.password(password);
                }
                Ok(Link::Cluster {
                    client: Box::new(builder.build()?),
                    connection: None,
                    connecting: None,
                    budget: target.timeout * ATTEMPT_TIMEOUTS,
                })
            }
        }
    }

    /// Makes the connection if there is none, or takes up the attempt under way.
    pub async fn ensure(&mut self) -> RedisResult<()> {
        match self {
            Link::Single(_) => Ok(()),
            Link::Sentinel {
                client,
                manager,
                connecting,
                config,
                budget,
            } => {
                if manager.is_none() {
                    let start = || {
                        let client = client.clone();
                        let config = (**config).clone();
                        Attempt::spawn(*budget, async move {
                            let master = client.lock().await.async_get_client().await?;
                            let mut fresh =
                                ConnectionManager::new_lazy_with_config(master, config)?;
                            redis::cmd("PING").query_async::<()>(&mut fresh).await?;
                            Ok(fresh)
                        })
                    };
                    *manager = Some(take_up(connecting, start).await?);
                }
                Ok(())
            }
            Link::Cluster {
                client,
                connection,
                connecting,
                budget,
            } => {
                if connection.is_none() {
                    let start = || {
                        let client = (**client).clone();
                        Attempt::spawn(*budget, async move { client.get_async_connection().await })
                    };
                    *connection = Some(take_up(connecting, start).await?);
                }
                Ok(())
            }
        }
    }

    /// Forgets a Sentinel master or a cluster connection after `error`, so the next operation
    /// asks Sentinel again or rediscovers the cluster. (A standalone manager reconnects itself.)
    pub fn after_error(&mut self, error: &RedisError) {
        let lost = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_refusal()
            || error.is_unrecoverable_error()
            || error.code() == Some("READONLY");
        match self {
            Link::Sentinel { manager, .. } if lost => *manager = None,
            Link::Cluster { connection, .. } if lost => *connection = None,
            _ => {}
        }
    }

    /// Whether commands on different keys must go in different pipelines (Redis Cluster
    /// refuses a pipeline whose keys are in several slots).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster { .. })
    }

    /// A handle to the cluster connection, to send pipelines side by side.
    pub fn cluster_connection(&self) -> Option<ClusterConnection> {
        match self {
            Link::Cluster { connection, .. } => connection.clone(),
            _ => None,
        }
    }

    fn active(&mut self) -> Option<&mut (dyn ConnectionLike + Send)> {
        match self {
            Link::Single(m) => Some(m),
            Link::Sentinel { manager, .. } => manager.as_mut().map(|m| m as _),
            Link::Cluster { connection, .. } => connection.as_mut().map(|c| c as _),
        }
    }
}

/// The error of an operation without a connection.
pub(crate) fn not_connected() -> RedisError {
    RedisError::from((ErrorKind::Io, "not connected"))
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self.active() {
            Some(c) => c.req_packed_command(cmd),
            None => Box::pin(async { Err(not_connected()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self.active() {
            Some(c) => c.req_packed_commands(pipeline, offset, count),
            None => Box::pin(async { Err(not_connected()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(m) => m.get_db(),
            Link::Sentinel { manager, .. } => manager.as_ref().map_or(0, |m| m.get_db()),
            Link::Cluster { .. } => 0,
        }
    }
}
