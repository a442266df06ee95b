//! RFC 3263 §4 resolution of SIP host names for the proxy core, with `hickory-resolver`:
//! SRV (`_sip._udp` / `_sip._tcp`) ordered by priority and weight when no port was given, then
//! A/AAAA. The core asks through [`anchorage_proxy::node::ResolveQuery`] and gets the ordered
//! addresses back; it never waits on DNS, so a slow server delays only the requests that need it.

use std::net::SocketAddr;

use anchorage_proxy::node::ResolveQuery;
use anchorage_proxy::Transport;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// Builds the resolver: the given servers, or the system's configuration.
pub fn resolver(servers: &[SocketAddr]) -> anyhow::Result<TokioResolver> {
    if servers.is_empty() {
        return Ok(TokioResolver::builder_tokio()?.build()?);
    }
    let mut config = ResolverConfig::default();
    for server in servers {
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for connection in &mut ns.connections {
            connection.port = server.port();
        }
        config.add_name_server(ns);
    }
    Ok(TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).build()?)
}

/// Resolves one query into the addresses to try, in order.
pub async fn resolve(
    resolver: &TokioResolver,
    query: &ResolveQuery,
) -> Result<Vec<(SocketAddr, Transport)>, String> {
    let name = query.name.trim_end_matches('.');
    if let Some(port) = query.port {
        return addresses(resolver, name, port, query.transport).await;
    }
    let service = match query.transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
    };
    if let Ok(lookup) = resolver.srv_lookup(format!("{service}.{name}.")).await {
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        // RFC 2782: lower priority first; heavier weight first within a priority (a
        // deterministic simplification of the weighted random order).
        records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
        let mut out = Vec::new();
        for srv in records {
            let target = srv.target.to_utf8();
            if let Ok(mut addrs) = addresses(
                resolver,
                target.trim_end_matches('.'),
                srv.port,
                query.transport,
            )
            .await
            {
                out.append(&mut addrs);
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
    }
    addresses(resolver, name, 5060, query.transport).await
}

async fn addresses(
    resolver: &TokioResolver,
    name: &str,
    port: u16,
    transport: Transport,
) -> Result<Vec<(SocketAddr, Transport)>, String> {
    let lookup = resolver
        .lookup_ip(format!("{name}."))
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let addrs: Vec<_> = lookup
        .iter()
        .map(|ip| (SocketAddr::new(ip, port), transport))
        .collect();
    if addrs.is_empty() {
        Err(format!("{name}: no address"))
    } else {
        Ok(addrs)
    }
}
