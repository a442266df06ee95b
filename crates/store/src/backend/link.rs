//! The connection to Redis: a [`ConnectionManager`] to a standalone server, one to the master
//! that Sentinel names (asked again after a failure), or a Redis Cluster connection. Each is
//! made lazily and remade after connection errors, so a store opened while Redis is down
//! starts writing as soon as it is back.

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
        client: Box<SentinelClient>,
        manager: Option<ConnectionManager>,
        config: Box<ConnectionManagerConfig>,
    },
    /// A Redis Cluster.
    Cluster {
        client: Box<ClusterClient>,
        connection: Option<ClusterConnection>,
    },
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
                    client: Box::new(builder.build()?),
                    manager: None,
                    config: Box::new(manager_config(target.timeout)),
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
                })
            }
        }
    }

    /// Makes the connection if there is none.
    pub async fn ensure(&mut self) -> RedisResult<()> {
        match self {
            Link::Single(_) => Ok(()),
            Link::Sentinel {
                client,
                manager,
                config,
            } => {
                if manager.is_none() {
                    let master = client.async_get_client().await?;
                    let mut fresh =
                        ConnectionManager::new_lazy_with_config(master, (**config).clone())?;
                    redis::cmd("PING").query_async::<()>(&mut fresh).await?;
                    *manager = Some(fresh);
                }
                Ok(())
            }
            Link::Cluster { client, connection } => {
                if connection.is_none() {
                    *connection = Some(client.get_async_connection().await?);
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
