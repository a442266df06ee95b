//! Anchorage's configuration file: one TOML schema for every role.
//!
//! A file has a section per role — `[node]`, `[proxy]`, `[relay]`, `[api]` — and each process
//! reads the sections it needs (`anchorage proxy -c FILE` reads `[node]`, `[proxy]` and `[api]`;
//! `anchorage relay -c FILE` reads `[node]` and `[relay]`). Every key has a default, so an
//! empty file is a valid configuration; `docs/configuration.md` documents each key.
//!
//! [`parse`] reports every error it finds with the key path it belongs to
//! (`proxy.route[1].reply.status: 99 is not a final SIP status (300-699)`), and the line for
//! syntax errors, so `anchorage check -c FILE` can list them all at once. Unknown keys are
//! errors: a typo must not silently fall back to a default.
#![warn(missing_docs)]

mod error;
pub mod proxy;
pub mod relay;

use std::path::Path;

use serde::Deserialize;

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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP server listens on; none = no server (`anchorage up` defaults to
    /// 127.0.0.1:7060).
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token required by every request that changes state; none means no check
    /// (only sensible on loopback).
    pub token: Option<String>,
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
    if let Some(token) = &config.api.token {
        if token.is_empty() {
            errors.push(ConfigError::new(
                "api.token",
                "must not be empty (leave it out for no token)",
            ));
        }
    }
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
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
    fn missing_file_is_a_clear_error() {
        let err = load(Path::new("/nonexistent/anchorage.toml")).unwrap_err();
        assert!(err
            .to_string()
            .contains("cannot read /nonexistent/anchorage.toml"));
    }
}
