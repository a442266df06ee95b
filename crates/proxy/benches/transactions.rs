//! Transaction paths through the proxy core, as production runs them: each iteration hands
//! the node one request end to end over UDP through its public seam (`handle_datagram`,
//! `poll_transmit`, `handle_timeout`) — parse, match or create the server transaction,
//! route, create the client transaction, forward, match the callee's response, forward it —
//! under a virtual clock that advances 1 ms per iteration, so the store fills to its steady
//! state and timers expire as under load. The phones' side (building the requests and the
//! responses, parsing what the proxy forwarded) is inside the measurement too.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "../tests/support/load.rs"]
mod load;

use load::Load;

/// A flow: one request end to end through the proxy.
type Flow = fn(&mut Load);

fn transactions(c: &mut Criterion) {
    let mut group = c.benchmark_group("proxy_transactions");
    let flows: [(&str, Flow); 3] = [
        // Server and client non-INVITE: OPTIONS, 200.
        ("options_udp", Load::options),
        // Server and client INVITE: INVITE, 100, 486, the proxy's ACK, the caller's ACK.
        ("invite_486_udp", Load::invite_rejected),
        // INVITE, 100, 200, the ACK through the Record-Route, then BYE and its 200.
        ("invite_200_bye_udp", Load::invite_answered),
    ];
    for (name, flow) in flows {
        let mut load = Load::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                load.tick(Duration::from_millis(1));
                flow(&mut load);
            })
        });
        black_box(load.live());
    }
    group.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
