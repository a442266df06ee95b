//! `[cluster]`: where a signalling node keeps its calls' state so another process can carry
//! them on (the call store, `crates/store`).
//!
//! `store` names a Redis deployment by URL; without it the node keeps its calls in memory only
//! (the embedded default). The password may be in the URL or in `password_file`; either way it
//! never appears in a [`StoreLocation`]'s `Display` or `Debug`, nor in the `Debug` of
//! [`ClusterConfig`], so a log line or an `anchorage check` report cannot leak it.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::ConfigError;

/// `[cluster]`: the call store.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis deployment: one URL (`redis://HOST:PORT/DB`, `rediss://…` for TLS,
    /// `redis+sentinel://S1:PORT,S2:PORT/SERVICE/DB` for Sentinel), or a list of URLs of Redis
    /// Cluster nodes. None: calls are kept in memory only.
    pub store: Option<StoreSpec>,
    /// A file whose first line is the Redis password (instead of one in the URL).
    pub password_file: Option<PathBuf>,
    /// A PEM file of the certificate authority that signed the Redis servers' TLS certificates
    /// (`rediss://`); none = the system's trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key the store writes, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Lifetime of a call record that is no longer written: a backstop for calls whose node
    /// died and that nobody took over. Longer than `proxy.dialog.max_age_s`.
    pub record_ttl_s: u64,
    /// How long one Redis operation (a write batch, a load, a reservation) may take before the
    /// store counts it as failed and reports Redis down.
    pub timeout_ms: u64,
    /// How long the store waits after a failed write before it tries again.
    pub retry_ms: u64,
    /// How often the store checks that Redis still holds this node's marker; a missing marker
    /// means Redis lost its data (restarted empty) and every live call is written again.
    pub check_interval_ms: u64,
    /// Most call records written in one pipeline.
    pub max_batch: usize,
    /// How long the changes of a call gather in the proxy before its record goes to the store
    /// (0: after every event). A call set up or ended within that time is written once; a
    /// crash loses at most that much of a call's latest changes (a move's record and the CSeq
    /// numbers the node reserves are written at once, whatever this says).
    pub write_delay_ms: u64,
    /// How the nodes that share the store decide which one acts for a call (`single`, `vip`
    /// or `active-active`).
    pub mode: ClusterMode,
    /// `mode = "vip"`: the virtual IP (moved between the nodes by keepalived). The node that
    /// holds it claims every call from the store and acts for them; the others act for none.
    pub vip: Option<IpAddr>,
    /// `mode = "active-active"`: the name every node puts in Record-Route (`HOST` or
    /// `HOST:PORT`, a DNS name or address that reaches any node, e.g. through DNS or a load
    /// balancer), so that any node receives a call's in-dialog requests.
    pub name: Option<String>,
    /// How often a node writes its heartbeat (its per-start epoch) to the store.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat is older than this is shown dead in `/v1/cluster`.
    pub lease_ms: u64,
}

/// `cluster.mode`: which node acts for a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMode {
    /// One node (the default): it acts for every call it holds, and for any call of the store
    /// whose message reaches it (another start of it, or a node started on its address).
    #[default]
    Single,
    /// Nodes behind a virtual IP: the node that holds `vip` acts for every call (it claims
    /// them from the store when the address arrives); a node without it acts for none.
    Vip,
    /// Nodes reached through DNS or a load balancer, all active: each acts for the calls it
    /// set up, forwards what reaches it for a live node's call to that node, and takes its
    /// share of a node's calls when that node's heartbeat expires.
    ActiveActive,
}

impl ClusterMode {
    /// The name used in the configuration and the API.
    pub fn name(self) -> &'static str {
        match self {
            ClusterMode::Single => "single",
            ClusterMode::Vip => "vip",
            ClusterMode::ActiveActive => "active-active",
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            store: None,
            password_file: None,
            tls_ca_file: None,
            key_prefix: "anc".into(),
            // proxy.dialog.max_age_s (12 h) plus 10 minutes.
            record_ttl_s: 43_800,
            timeout_ms: 500,
            retry_ms: 250,
            check_interval_ms: 1_000,
            max_batch: 512,
            write_delay_ms: 100,
            mode: ClusterMode::Single,
            vip: None,
            name: None,
            heartbeat_ms: 200,
            lease_ms: 1_000,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("store", &self.location().ok().flatten())
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("record_ttl_s", &self.record_ttl_s)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_ms", &self.retry_ms)
            .field("check_interval_ms", &self.check_interval_ms)
            .field("max_batch", &self.max_batch)
            .field("write_delay_ms", &self.write_delay_ms)
            .field("mode", &self.mode)
            .field("vip", &self.vip)
            .field("name", &self.name)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("lease_ms", &self.lease_ms)
            .finish()
    }
}

/// The value of `cluster.store`: one URL, or the URLs of Redis Cluster nodes.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum StoreSpec {
    /// A standalone Redis or a Sentinel deployment.
    One(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// A password that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which kind of Redis deployment a store URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// One Redis server (`redis://`, `rediss://`).
    Standalone,
    /// Sentinels that name the master of `service` (`redis+sentinel://`).
    Sentinel {
        /// The monitored master's name.
        service: String,
    },
    /// A Redis Cluster reached through these seed nodes (a list of URLs).
    Cluster,
}

/// A parsed `cluster.store`: everything needed to connect, with the password kept secret.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreLocation {
    /// Standalone, Sentinel or Cluster.
    pub kind: StoreKind,
    /// TLS to every server (`rediss`).
    pub tls: bool,
    /// (host, port) of the server, the sentinels, or the cluster seed nodes.
    pub hosts: Vec<(String, u16)>,
    /// Database number (always 0 for Redis Cluster).
    pub db: i64,
    /// ACL user name, if any.
    pub username: Option<String>,
    /// The password from the URL, if any.
    pub password: Option<Secret>,
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (&self.kind, self.tls) {
            (StoreKind::Sentinel { .. }, false) => "redis+sentinel",
            (StoreKind::Sentinel { .. }, true) => "rediss+sentinel",
            (_, false) => "redis",
            (_, true) => "rediss",
        };
        let auth = match (&self.username, &self.password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (Some(user), None) => format!("{user}@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(host, port)| {
                if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                }
            })
            .collect();
        match &self.kind {
            StoreKind::Standalone => write!(f, "{scheme}://{auth}{}/{}", hosts[0], self.db),
            StoreKind::Sentinel { service } => write!(
                f,
                "{scheme}://{auth}{}/{service}/{}",
                hosts.join(","),
                self.db
            ),
            StoreKind::Cluster => {
                write!(f, "redis cluster [{scheme}://{auth}{}]", hosts.join(", "))
            }
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

impl ClusterConfig {
    /// `name` as host and port (5060 when none is given), if it is well-formed.
    pub fn name_parts(&self) -> Option<(String, u16)> {
        let name = self.name.as_deref()?.trim();
        let (host, port) = match name.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') || host.starts_with('[') => {
                (host, port.parse().ok().filter(|p| *p != 0)?)
            }
            _ => (name, 5060),
        };
        let ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
        ok.then(|| (host.to_string(), port))
    }

    /// The parsed `store`, or none for the memory store. The error is one line that never
    /// contains the password.
    pub fn location(&self) -> Result<Option<StoreLocation>, String> {
        match &self.store {
            None => Ok(None),
            Some(StoreSpec::One(url)) => parse_url(url, false).map(Some),
            Some(StoreSpec::Cluster(urls)) => {
                if urls.is_empty() {
                    return Err("a Redis Cluster needs at least one node URL".into());
                }
                let mut nodes = Vec::with_capacity(urls.len());
                for (i, url) in urls.iter().enumerate() {
                    nodes.push(parse_url(url, true).map_err(|e| format!("node {i}: {e}"))?);
                }
                let first = nodes[0].clone();
                if nodes.iter().any(|n| n.tls != first.tls) {
                    return Err("mixes redis:// and rediss:// nodes".into());
                }
                Ok(Some(StoreLocation {
                    kind: StoreKind::Cluster,
                    tls: first.tls,
                    hosts: nodes.iter().map(|n| n.hosts[0].clone()).collect(),
                    db: 0,
                    username: nodes.iter().find_map(|n| n.username.clone()),
                    password: nodes.iter().find_map(|n| n.password.clone()),
                }))
            }
        }
    }

    /// Adds every error of this section to `errors`, with key paths under `path`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match self.location() {
            Err(message) => errors.push(ConfigError::new(format!("{path}.store"), message)),
            Ok(Some(location)) => {
                if location.password.is_some() && self.password_file.is_some() {
                    errors.push(ConfigError::new(
                        format!("{path}.password_file"),
                        "the store URL already has a password: give it in one place only",
                    ));
                }
                if self.tls_ca_file.is_some() && !location.tls {
                    errors.push(ConfigError::new(
                        format!("{path}.tls_ca_file"),
                        "is only used with rediss:// URLs",
                    ));
                }
            }
            Ok(None) => {}
        }
        let prefix_ok = !self.key_prefix.is_empty()
            && self
                .key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !prefix_ok {
            errors.push(ConfigError::new(
                format!("{path}.key_prefix"),
                format!("{:?} must be letters, digits, '-' or '_'", self.key_prefix),
            ));
        }
        for (key, value) in [
            ("record_ttl_s", self.record_ttl_s),
            ("timeout_ms", self.timeout_ms),
            ("retry_ms", self.retry_ms),
            ("check_interval_ms", self.check_interval_ms),
            ("max_batch", self.max_batch as u64),
            ("heartbeat_ms", self.heartbeat_ms),
        ] {
            if value == 0 {
                errors.push(ConfigError::new(
                    format!("{path}.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if self.write_delay_ms > 10_000 {
            errors.push(ConfigError::new(
                format!("{path}.write_delay_ms"),
                "must be at most 10000 (a crash loses up to this much of a call's changes)",
            ));
        }
        if self.lease_ms <= self.heartbeat_ms {
            errors.push(ConfigError::new(
                format!("{path}.lease_ms"),
                format!(
                    "must be longer than heartbeat_ms ({}): a node would look dead between beats",
                    self.heartbeat_ms
                ),
            ));
        }
        match (self.mode, self.vip) {
            (ClusterMode::Vip, None) => errors.push(ConfigError::new(
                format!("{path}.vip"),
                "mode = \"vip\" needs the virtual IP address",
            )),
            (ClusterMode::Single | ClusterMode::ActiveActive, Some(_)) => errors.push(
                ConfigError::new(format!("{path}.vip"), "is only used with mode = \"vip\""),
            ),
            _ => {}
        }
        match (self.mode, &self.name) {
            (ClusterMode::ActiveActive, None) => errors.push(ConfigError::new(
                format!("{path}.name"),
                "mode = \"active-active\" needs the cluster's name for Record-Route (HOST or HOST:PORT)",
            )),
            (ClusterMode::ActiveActive, Some(name)) if self.name_parts().is_none() => {
                errors.push(ConfigError::new(
                    format!("{path}.name"),
                    format!("{name:?} is not HOST or HOST:PORT"),
                ))
            }
            (ClusterMode::Single | ClusterMode::Vip, Some(_)) => errors.push(ConfigError::new(
                format!("{path}.name"),
                "is only used with mode = \"active-active\"",
            )),
            _ => {}
        }
        if self.mode != ClusterMode::Single && self.store.is_none() {
            errors.push(ConfigError::new(
                format!("{path}.mode"),
                format!(
                    "{:?} needs a shared store (cluster.store): the calls move between nodes through it",
                    self.mode.name()
                ),
            ));
        }
    }
}

/// Parses one store URL. `cluster_node`: an element of a cluster list (no path but a db of 0).
fn parse_url(url: &str, cluster_node: bool) -> Result<StoreLocation, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "is not a URL (expected redis://HOST:PORT/DB)".to_string())?;
    let (kind_sentinel, tls) = match scheme {
        "redis" => (false, false),
        "rediss" => (false, true),
        "redis+sentinel" if !cluster_node => (true, false),
        "rediss+sentinel" if !cluster_node => (true, true),
        other => {
            return Err(format!(
                "unknown scheme {other:?}: use redis, rediss{}",
                if cluster_node {
                    " (cluster nodes)"
                } else {
                    ", redis+sentinel or rediss+sentinel"
                }
            ))
        }
    };
    // The user info ends at the last '@' (a password may hold '/' or ':' unescaped).
    let (userinfo, after) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (hostlist, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i + 1..]),
        None => (after, ""),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = percent_decode(user).ok_or("bad %-escape in the user name")?;
            let pass = match pass {
                Some(p) => Some(Secret(
                    percent_decode(p).ok_or("bad %-escape in the password")?,
                )),
                None => None,
            };
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let mut hosts = Vec::new();
    for part in hostlist.split(',') {
        hosts.push(parse_host(part, if kind_sentinel { 26379 } else { 6379 })?);
    }
    if hosts.len() > 1 && !kind_sentinel {
        return Err("several hosts in one URL: list Redis Cluster nodes as an array".into());
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (kind, db) = if kind_sentinel {
        let service = segments
            .first()
            .ok_or("a Sentinel URL needs the service name: redis+sentinel://HOST:PORT/SERVICE")?;
        let db = segments
            .get(1)
            .map(|d| parse_db(d))
            .transpose()?
            .unwrap_or(0);
        if segments.len() > 2 {
            return Err("extra path after /SERVICE/DB".into());
        }
        (
            StoreKind::Sentinel {
                service: (*service).to_string(),
            },
            db,
        )
    } else {
        let db = segments
            .first()
            .map(|d| parse_db(d))
            .transpose()?
            .unwrap_or(0);
        if segments.len() > 1 {
            return Err("extra path after /DB".into());
        }
        if cluster_node && db != 0 {
            return Err("Redis Cluster has only database 0".into());
        }
        (StoreKind::Standalone, db)
    };
    Ok(StoreLocation {
        kind,
        tls,
        hosts,
        db,
        username,
        password,
    })
}

fn parse_host(part: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = part.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in host {part:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match part.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (part, None),
        }
    };
    if host.is_empty() {
        return Err("a host is missing".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("bad port {p:?} for host {host}"))?,
    };
    Ok((host.to_string(), port))
}

fn parse_db(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|d| *d >= 0)
        .ok_or_else(|| format!("database {text:?} is not a number"))
}

/// Decodes `%XX` escapes (a password may contain `@`, `:` or `/`).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(store: &str) -> ClusterConfig {
        ClusterConfig {
            store: Some(StoreSpec::One(store.into())),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn standalone_url_with_password_prints_without_it() {
        let location = config("redis://app:s3cr%40t@10.0.0.5:6380/2")
            .location()
            .unwrap()
            .unwrap();
        assert_eq!(location.kind, StoreKind::Standalone);
        assert_eq!(location.hosts, vec![("10.0.0.5".to_string(), 6380)]);
        assert_eq!(location.db, 2);
        assert_eq!(location.username.as_deref(), Some("app"));
        assert_eq!(location.password.as_ref().unwrap().expose(), "s3cr@t");
        let shown = format!("{location} {location:?}");
        assert_eq!(location.to_string(), "redis://app:***@10.0.0.5:6380/2");
        assert!(!shown.contains("s3cr"), "{shown}");
        let debug = format!("{:?}", config("redis://:hunter2@h/0"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn defaults_tls_sentinel_and_cluster() {
        let l = config("rediss://h").location().unwrap().unwrap();
        assert!(l.tls);
        assert_eq!((l.hosts[0].1, l.db), (6379, 0));
        let l = config("redis+sentinel://:pw@s1,s2:26380,[::1]:26381/mymaster/3")
            .location()
            .unwrap()
            .unwrap();
        assert_eq!(
            l.kind,
            StoreKind::Sentinel {
                service: "mymaster".into()
            }
        );
        assert_eq!(l.hosts.len(), 3);
        assert_eq!(l.hosts[0].1, 26379);
        assert_eq!(l.hosts[2], ("::1".to_string(), 26381));
        assert_eq!(
            l.to_string(),
            "redis+sentinel://:***@s1:26379,s2:26380,[::1]:26381/mymaster/3"
        );
        let c = ClusterConfig {
            store: Some(StoreSpec::Cluster(vec![
                "redis://:pw@a:7000".into(),
                "redis://b:7001".into(),
            ])),
            ..ClusterConfig::default()
        };
        let l = c.location().unwrap().unwrap();
        assert_eq!(l.kind, StoreKind::Cluster);
        assert_eq!(l.hosts.len(), 2);
        assert!(!l.to_string().contains("pw"));
    }

    #[test]
    fn bad_values_are_reported_with_their_key_path() {
        for (text, key) in [
            ("[cluster]\nstore = \"http://h\"\n", "cluster.store"),
            ("[cluster]\nstore = \"redis://h:0\"\n", "cluster.store"),
            ("[cluster]\nstore = \"redis://a,b\"\n", "cluster.store"),
            (
                "[cluster]\nstore = \"redis+sentinel://s1\"\n",
                "cluster.store",
            ),
            ("[cluster]\nstore = []\n", "cluster.store"),
            ("[cluster]\nstore = [\"redis://a/1\"]\n", "cluster.store"),
            (
                "[cluster]\nstore = \"redis://:p@h\"\npassword_file = \"/p\"\n",
                "cluster.password_file",
            ),
            (
                "[cluster]\nstore = \"redis://h\"\ntls_ca_file = \"/ca\"\n",
                "cluster.tls_ca_file",
            ),
            ("[cluster]\nkey_prefix = \"a b\"\n", "cluster.key_prefix"),
            ("[cluster]\ntimeout_ms = 0\n", "cluster.timeout_ms"),
        ] {
            let err = crate::parse(text).unwrap_err();
            assert_eq!(err.0[0].path, key, "{text}: {err}");
        }
        for url in [
            "redis://:topsecret@h:x",
            "redis://:top/secret@h:x",
            "redis://u:topsecret@",
        ] {
            let err = crate::parse(&format!("[cluster]\nstore = \"{url}\"\n")).unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn active_active_needs_a_store_and_a_well_formed_name() {
        let store = "store = \"redis://127.0.0.1:6379/0\"\n";
        let ok = crate::parse(&format!(
            "[cluster]\n{store}mode = \"active-active\"\nname = \"sip.example.net\"\n"
        ))
        .unwrap();
        assert_eq!(ok.cluster.mode, ClusterMode::ActiveActive);
        assert_eq!(
            ok.cluster.name_parts(),
            Some(("sip.example.net".to_string(), 5060))
        );
        let with_port = crate::parse(&format!(
            "[cluster]\n{store}mode = \"active-active\"\nname = \"198.51.100.7:5080\"\n"
        ))
        .unwrap();
        assert_eq!(
            with_port.cluster.name_parts(),
            Some(("198.51.100.7".to_string(), 5080))
        );
        for (text, key) in [
            (
                format!("[cluster]\n{store}mode = \"active-active\"\n"),
                "cluster.name",
            ),
            (
                format!("[cluster]\n{store}mode = \"active-active\"\nname = \"a b\"\n"),
                "cluster.name",
            ),
            (
                format!("[cluster]\n{store}mode = \"active-active\"\nname = \"h:0\"\n"),
                "cluster.name",
            ),
            (
                format!("[cluster]\n{store}name = \"sip.example.net\"\n"),
                "cluster.name",
            ),
            (
                "[cluster]\nmode = \"active-active\"\nname = \"n\"\n".to_string(),
                "cluster.mode",
            ),
        ] {
            let err = crate::parse(&text).unwrap_err();
            assert_eq!(err.0[0].path, key, "{text}: {err}");
        }
    }

    #[test]
    fn no_store_is_the_memory_store() {
        let config = crate::parse("").unwrap();
        assert_eq!(config.cluster.location(), Ok(None));
        let config = crate::parse("[cluster]\nstore = \"redis://127.0.0.1:6379/0\"\n").unwrap();
        assert!(config.cluster.location().unwrap().is_some());
    }

    #[test]
    fn vip_mode_needs_an_address_and_a_store_and_a_lease_longer_than_a_beat() {
        let errors = |c: &ClusterConfig| {
            let mut e = Vec::new();
            c.validate("cluster", &mut e);
            e.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        };
        let vip = ClusterConfig {
            mode: ClusterMode::Vip,
            ..ClusterConfig::default()
        };
        let said = errors(&vip).join("\n");
        assert!(said.contains("cluster.vip"), "{said}");
        assert!(said.contains("cluster.mode"), "{said}");
        let good = ClusterConfig {
            mode: ClusterMode::Vip,
            vip: Some("10.0.0.100".parse().unwrap()),
            ..config("redis://h")
        };
        assert!(errors(&good).is_empty(), "{:?}", errors(&good));
        let stray = ClusterConfig {
            vip: Some("10.0.0.100".parse().unwrap()),
            ..config("redis://h")
        };
        assert!(errors(&stray)[0].starts_with("cluster.vip"));
        let short = ClusterConfig {
            lease_ms: 200,
            ..ClusterConfig::default()
        };
        assert!(errors(&short)[0].starts_with("cluster.lease_ms"));
        let parsed: ClusterConfig =
            toml::from_str("mode = \"vip\"\nvip = \"10.1.2.3\"\nheartbeat_ms = 100").unwrap();
        assert_eq!((parsed.mode, parsed.heartbeat_ms), (ClusterMode::Vip, 100));
    }
}
