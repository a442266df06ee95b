//! Anchorage's configuration file: one TOML schema for every role.
//!
//! A file has a section per role — `[node]`, `[proxy]`, `[relay]`, `[api]`, `[cluster]` — and each process
//! reads the sections it needs (`anchorage proxy -c FILE` reads `[node]`, `[proxy]` and `[api]`;
//! `anchorage relay -c FILE` reads `[node]` and `[relay]`). Every key has a default, so an
//! empty file is a valid configuration; `docs/configuration.md` documents each key.
//!
//! [`parse`] reports every error it finds with the key path it belongs to
//! (`proxy.route[1].reply.status: 99 is not a final SIP status (300-699)`), and the line for
//! syntax errors, so `anchorage check -c FILE` can list them all at once. Unknown keys are
//! errors: a typo must not silently fall back to a default.
#![warn(missing_docs)]

pub mod cluster;
mod error;
pub mod proxy;
pub mod relay;

use std::path::Path;

use serde::Deserialize;

pub use cluster::{ClusterConfig, ClusterMode, StoreKind, StoreLocation, StoreSpec};
pub use error::{ConfigError, ConfigErrors};
pub use proxy::ProxyConfig;
pub use relay::RelayConfig;

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity of this node.
    pub node: NodeConfig,
    /// The SIP signalling role.
    pub proxy: ProxyConfig,
    /// The media relay role.
    pub relay: RelayConfig,
    /// The management HTTP API.
    pub api: ApiConfig,
    /// The call store shared by the signalling nodes of a cluster.
    pub cluster: ClusterConfig,
}

/// `[node]`: identity of this node within a cluster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node id: carried in the Via branches this node creates so a cluster peer can tell who
    /// owns a transaction. 1–16 characters from `[A-Za-z0-9-]`.
    pub id: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self { id: "node1".into() }
    }
}

/// `[api]`: the management HTTP server (API, metrics, dashboard).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP server listens on; none = no server (`anchorage up` defaults to
    /// 127.0.0.1:7060).
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token required by every request that changes state; none means no check,
    /// which is refused on a non-loopback address unless `allow_unauthenticated` is set.
    pub token: Option<String>,
    /// Lets the server run without a token on a non-loopback address: anyone who reaches it
    /// can move calls and drain relays. Logged as a warning at every start.
    pub allow_unauthenticated: bool,
    /// Most simultaneous HTTP connections from one source address; further ones are closed
    /// at once.
    pub max_connections_per_source: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            allow_unauthenticated: false,
            max_connections_per_source: 64,
        }
    }
}

impl ApiConfig {
    /// Whether a server on `listen` with this configuration would accept state changes from
    /// other hosts without a token while the operator did not ask for it: then the error that
    /// names `api.token`.
    pub fn exposure_error(&self, listen: std::net::SocketAddr) -> Option<String> {
        if self.token.is_some() || self.allow_unauthenticated || is_loopback(listen.ip()) {
            return None;
        }
        Some(format!(
            "the management API on {listen} is not on loopback and has no token: anyone who \
             reaches it could move calls and drain relays. Set `api.token` (or, knowingly, \
             `api.allow_unauthenticated = true`)"
        ))
    }
}

/// Whether `ip` is a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z). The
/// unspecified address (0.0.0.0, ::) binds every interface, so it is not loopback.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        ))
    })?;
    parse(&text)
}

/// Parses and validates configuration text, returning every error found.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let config: Config = decode(text)?;
    let mut errors = Vec::new();
    validate_node(&config.node, &mut errors);
    config.proxy.validate("proxy", &mut errors);
    config.relay.validate("relay", &mut errors);
    config.cluster.validate("cluster", &mut errors);
    if let Some(token) = &config.api.token {
        if token.is_empty() {
            errors.push(ConfigError::new(
                "api.token",
                "must not be empty (leave it out for no token)",
            ));
        }
    }
    if let Some(message) = config.api.listen.and_then(|l| config.api.exposure_error(l)) {
        errors.push(ConfigError::new("api.token", message));
    }
    if config.api.max_connections_per_source == 0 {
        errors.push(ConfigError::new(
            "api.max_connections_per_source",
            "must be greater than 0",
        ));
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// What a valid configuration leaves open to strangers: each warning names its key path.
/// `anchorage check` prints them; none stops a process from starting.
pub fn warnings(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if let Some(listen) = config.api.listen {
        if config.api.token.is_none()
            && config.api.allow_unauthenticated
            && !is_loopback(listen.ip())
        {
            out.push(ConfigError::new(
                "api.allow_unauthenticated",
                format!(
                    "the management API on {listen} takes state changes from anyone who reaches \
                     it (no api.token)"
                ),
            ));
        }
    }
    config.relay.warnings("relay", &mut out);
    out
}

/// Deserializes TOML with the key path of the first type error, and the line of a syntax error.
fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ConfigErrors> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| ConfigErrors::one(ConfigError::from_toml("", &e, text)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigErrors::one(ConfigError::from_toml(&path, e.inner(), text))
    })
}

fn validate_node(node: &NodeConfig, errors: &mut Vec<ConfigError>) {
    let ok = !node.id.is_empty()
        && node.id.len() <= 16
        && node
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        errors.push(ConfigError::new(
            "node.id",
            format!(
                "{:?} must be 1-16 characters of letters, digits and '-'",
                node.id
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_configuration() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_its_path() {
        let err = parse("[proxy.timers]\nt1_msec = 400\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "proxy.timers.t1_msec: unknown field `t1_msec`, expected one of `t1_ms`, `t2_ms`, \
             `t4_ms`, `timer_c_ms` (line 2)"
        );
    }

    #[test]
    fn wrong_type_names_its_path() {
        let err = parse("[[proxy.route]]\nname = \"a\"\n[proxy.route.match]\nmethods = [1]\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("proxy.route[0].match.methods[0]: "),
            "{text}"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = parse("[proxy\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn bad_node_id_is_reported() {
        let err = parse("[node]\nid = \"a b\"\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "node.id");
    }

    #[test]
    fn empty_token_is_reported() {
        let err = parse("[api]\ntoken = \"\"\n").unwrap_err();
        assert_eq!(err.0[0].path, "api.token");
    }

    #[test]
    fn an_api_off_loopback_needs_a_token_or_an_explicit_waiver() {
        let err = parse("[api]\nlisten = \"10.0.0.1:7060\"\n").unwrap_err();
        assert_eq!(err.0[0].path, "api.token");
        assert!(
            err.0[0].message.contains("api.allow_unauthenticated"),
            "{err}"
        );
        assert!(parse("[api]\nlisten = \"0.0.0.0:7060\"\n").is_err());
        let ok = parse("[api]\nlisten = \"127.0.0.1:7060\"\n").unwrap();
        assert!(warnings(&ok).is_empty());
        let ok = parse("[api]\nlisten = \"[::ffff:127.0.0.1]:7060\"\n").unwrap();
        assert!(warnings(&ok).is_empty());
        let ok = parse("[api]\nlisten = \"10.0.0.1:7060\"\ntoken = \"t\"\n").unwrap();
        assert!(warnings(&ok).is_empty());
        let waived =
            parse("[api]\nlisten = \"10.0.0.1:7060\"\nallow_unauthenticated = true\n").unwrap();
        assert_eq!(warnings(&waived)[0].path, "api.allow_unauthenticated");
        assert_eq!(waived.api.max_connections_per_source, 64);
        let err = parse("[api]\nmax_connections_per_source = 0\n").unwrap_err();
        assert_eq!(err.0[0].path, "api.max_connections_per_source");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = load(Path::new("/nonexistent/anchorage.toml")).unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot read /nonexistent/anchorage.toml"));
    }
}
