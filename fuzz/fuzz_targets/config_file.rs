//! Parse arbitrary text as an Anchorage configuration file. Must never panic: a bad file gives
//! errors that each name a key path or say what is wrong; a file that passes validation must
//! also start a proxy core (timers from the file's values, routing rules, media policy, rate
//! limit) and run its timers a day ahead without overflowing.
#![no_main]

use std::time::{Duration, Instant};

use anchorage_proxy::node::{CoreConfig, Listener, Proxy};
use anchorage_proxy::Transport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match anchorage_config::parse(text) {
        Ok(c) => c,
        Err(errors) => {
            assert!(!errors.to_string().is_empty());
            for e in &errors.0 {
                assert!(!e.to_string().is_empty());
            }
            return;
        }
    };
    let local = "127.0.0.1:5060".parse().expect("a literal address");
    let listeners = vec![Listener {
        transport: Transport::Udp,
        local,
        advertise_host: "127.0.0.1".into(),
        advertise_port: 5060,
    }];
    let core = CoreConfig::from_config(&config, listeners);
    let now = Instant::now();
    let mut proxy = Proxy::new(core, 1, now);
    for ahead in [1, 60, 3600, 86_400] {
        proxy.handle_timeout(now + Duration::from_secs(ahead));
        while proxy.poll_transmit().is_some() {}
        while proxy.poll_ng_transmit(now).is_some() {}
    }
});
