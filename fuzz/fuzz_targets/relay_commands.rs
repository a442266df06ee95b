//! Fuzz the relay's control plane with ng datagrams: each input is split on NUL bytes into a
//! sequence of datagrams given to one controller (so offers, answers, deletes and queries of
//! the same calls meet), with time moving on between them. Must never panic, and the port
//! pool must come back empty once every call is deleted.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_relay::{Interface, PortRange};
use anchorage_relay_control::{Config, Controller, Now, PortBinder};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

struct Binder;

impl PortBinder for Binder {
    fn bind(&mut self, rtp: SocketAddr, _rtcp: SocketAddr) -> bool {
        // Some ports are "taken by another process".
        rtp.port() % 7 != 0
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(range) = PortRange::new(40000, 40063) else {
        return;
    };
    let Ok(iface) = Interface::parse("127.0.0.1", range) else {
        return;
    };
    let t0 = Instant::now();
    let config = Config {
        interfaces: vec![iface],
        port_quarantine: Duration::ZERO,
        ..Config::default()
    };
    let Ok(mut controller) = Controller::new(
        config,
        &mut rand::rngs::StdRng::seed_from_u64(1),
        Now { mono: t0, unix_us: 0 },
    ) else {
        return;
    };
    let mut now = t0;
    for datagram in data.split(|b| *b == 0) {
        now += Duration::from_millis(100);
        if let Ok(incoming) = anchorage_ng::decode_request(datagram) {
            let handled = controller.handle(
                &incoming.request,
                Now { mono: now, unix_us: 1 },
                &mut Binder,
            );
            let _ = anchorage_ng::encode_reply(&incoming.cookie, &handled.reply, incoming.encoding);
        }
        let _ = controller.expire(now);
    }
    // Everything ends: no port may stay allocated.
    let _ = controller.expire(now + Duration::from_secs(7200));
    assert_eq!(controller.call_count(), 0);
    assert!(controller.port_usage().iter().all(|u| u.in_use == 0));
});
