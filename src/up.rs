//! `anchorage up`: the embedded default configuration, built in code so it needs no file.

use std::net::SocketAddr;

use anchorage_config::proxy::{MediaPolicy, RelayNode, RelaySet};
use anchorage_config::Config;
use anchorage_sip_transport::Transport;

use crate::proxy_node::ListenArg;

/// The ng flags of the embedded default: the relay's address replaces the origin and every
/// connection line, and ICE candidates (which would bypass the relay) are removed.
pub const DEFAULT_FLAGS: &str = "replace-origin replace-session-connection ICE=remove";

/// The default configuration; with `external_relays`, media is anchored on `relays` ng relays
/// at 127.0.0.1:`ng_base`, `ng_base + 1`, … named relay-a, relay-b, …
pub fn config(relays: u16, external_relays: bool, ng_base: u16) -> Config {
    let mut config = Config::default();
    if external_relays {
        let nodes = (0..relays)
            .map(|i| RelayNode {
                name: format!("relay-{}", char::from(b'a' + (i % 26) as u8)),
                ng: SocketAddr::from(([127, 0, 0, 1], ng_base.saturating_add(i))),
                weight: 1,
            })
            .collect();
        config.proxy.relay_set = vec![RelaySet {
            name: "default".into(),
            nodes,
        }];
        config.proxy.media = MediaPolicy {
            set: Some("default".into()),
            caller_flags: DEFAULT_FLAGS.into(),
            callee_flags: DEFAULT_FLAGS.into(),
            disabled: false,
        };
    }
    config
}

/// UDP and TCP on the SIP address.
pub fn listeners(sip: SocketAddr) -> Vec<ListenArg> {
    vec![
        ListenArg {
            transport: Transport::Udp,
            address: sip,
        },
        ListenArg {
            transport: Transport::Tcp,
            address: sip,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_relays_form_the_default_set() {
        let c = config(2, true, 2223);
        let set = &c.proxy.relay_set[0];
        assert_eq!(set.nodes[0].name, "relay-a");
        assert_eq!(set.nodes[1].ng.to_string(), "127.0.0.1:2224");
        assert_eq!(c.proxy.media.set.as_deref(), Some("default"));
        assert!(config(2, false, 2223).proxy.relay_set.is_empty());
    }
}
