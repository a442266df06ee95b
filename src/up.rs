//! `anchorage up`: the embedded default configuration, built in code so it needs no file.

use std::net::SocketAddr;

use anchorage_config::proxy::{MediaPolicy, RelayNode, RelaySet};
use anchorage_config::Config;
use anchorage_sip_transport::Transport;

use crate::proxy_node::ListenArg;

/// The ng flags of the embedded default: the relay's address replaces the origin and every
/// connection line, and ICE candidates (which would bypass the relay) are removed.
pub const DEFAULT_FLAGS: &str = "replace-origin replace-session-connection ICE=remove";

/// The name of relay node `index`: relay-a, relay-b, …
pub fn relay_name(index: u16) -> String {
    format!("relay-{}", char::from(b'a' + (index % 26) as u8))
}

/// Media ports of built-in relay `index`: 5,000 each from `base` (by default relay-a
/// 30000–34999, relay-b 35000–39999, …), wrapping before the top of the port space.
pub fn relay_ports(index: u16, base: u16) -> (u16, u16) {
    let slots = (u16::MAX - base) / 5000;
    let min = base + (index % slots.max(1)) * 5000;
    (min, min.saturating_add(4999))
}

/// The built-in relay node `index`: ng on 127.0.0.1:`ng_base + index`, media on 127.0.0.1.
pub fn relay_settings(
    index: u16,
    ng_base: u16,
    media_base: u16,
) -> anyhow::Result<crate::relay_node::Settings> {
    let (port_min, port_max) = relay_ports(index, media_base);
    let args = crate::relay_node::RelayArgs {
        listen_ng: Some(SocketAddr::from((
            [127, 0, 0, 1],
            ng_base.saturating_add(index),
        ))),
        interface: vec!["127.0.0.1".into()],
        port_min: Some(port_min),
        port_max: Some(port_max),
        delete_delay: Some(0),
        ..Default::default()
    };
    let mut settings =
        crate::relay_node::settings(&anchorage_config::RelayConfig::default(), &args)?;
    settings.control.instance = relay_name(index);
    Ok(settings)
}

/// The default configuration: media anchored on `relays` ng relays at 127.0.0.1:`ng_base`,
/// `ng_base + 1`, … named relay-a, relay-b, … (built in, or external ones on those ports).
pub fn config(relays: u16, ng_base: u16) -> Config {
    let mut config = Config::default();
    if relays > 0 {
        let nodes = (0..relays)
            .map(|i| RelayNode {
                name: relay_name(i),
                ng: Some(SocketAddr::from((
                    [127, 0, 0, 1],
                    ng_base.saturating_add(i),
                ))),
                rtpproxy: None,
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
            ..MediaPolicy::default()
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
        let c = config(2, 2223);
        let set = &c.proxy.relay_set[0];
        assert_eq!(set.nodes[0].name, "relay-a");
        assert_eq!(set.nodes[1].ng, Some("127.0.0.1:2224".parse().unwrap()));
        assert_eq!(c.proxy.media.set.as_deref(), Some("default"));
        assert!(config(0, 2223).proxy.relay_set.is_empty());
        assert_eq!(relay_ports(0, 30000), (30000, 34999));
        assert_eq!(relay_ports(1, 30000), (35000, 39999));
        let relay_b = relay_settings(1, 2223, 30000).unwrap();
        assert_eq!(relay_b.listen_ng.to_string(), "127.0.0.1:2224");
        assert_eq!(relay_b.control.interfaces[0].ports.min, 35000);
    }
}
