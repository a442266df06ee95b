//! Parse arbitrary text as an Anchorage configuration file. Must never panic: a bad file gives
//! errors that each name a key path or say what is wrong; a file that passes validation must
//! also start a proxy core (timers from the file's values, routing rules, media policy, rate
//! limit) and run its timers a day ahead without overflowing.
#![no_main]

use std::time::{Duration, Instant};

use anchorage_proxy::core::{CoreConfig, Listener, Proxy};
use anchorage_proxy::routing::Router;
use anchorage_proxy::transaction::TimerConfig;
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
    let p = &config.proxy;
    let local = "127.0.0.1:5060".parse().expect("a literal address");
    let core = CoreConfig {
        node_id: config.node.id.clone(),
        listeners: vec![Listener {
            transport: Transport::Udp,
            local,
            advertise_host: "127.0.0.1".into(),
            advertise_port: 5060,
        }],
        timers: TimerConfig {
            t1: Duration::from_millis(p.timers.t1_ms),
            t2: Duration::from_millis(p.timers.t2_ms),
            t4: Duration::from_millis(p.timers.t4_ms),
            timer_c: Duration::from_millis(p.timers.timer_c_ms),
            ..TimerConfig::default()
        },
        router: Router::new(p.route.clone()),
        dialog_max_age: Duration::from_secs(p.dialog.max_age_s),
        relay_sets: p.relay_set.clone(),
        default_media: p.media.clone(),
        ng_client: anchorage_ng::ClientConfig::default(),
        relay_health: anchorage_proxy::media::HealthConfig {
            interval: Duration::from_millis(p.relay_health.interval_ms),
            down_after: p.relay_health.down_after,
            up_after: p.relay_health.up_after,
        },
        reanchor: p.reanchor.clone(),
        flood: p.flood.clone(),
    };
    let now = Instant::now();
    let mut proxy = Proxy::new(core, 1, now);
    for ahead in [1, 60, 3600, 86_400] {
        proxy.handle_timeout(now + Duration::from_secs(ahead));
        while proxy.poll_transmit().is_some() {}
        while proxy.poll_ng_transmit(now).is_some() {}
    }
});
