//! Transaction table throughput: create, match and complete one transaction per iteration,
//! under a virtual clock that advances 1 ms per iteration (so timers run as under load).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use anchorage_proxy::transaction::{
    ClientKey, RequestFields, ServerKey, TimerConfig, TransactionTable,
};
use criterion::{criterion_group, criterion_main, Criterion};

struct Bench {
    table: TransactionTable,
    now: Instant,
    n: u64,
    branch: Vec<u8>,
}

impl Bench {
    fn new() -> Self {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            table: TransactionTable::new(TimerConfig::default()).unwrap(),
            now,
            n: 0,
            branch: Vec::with_capacity(32),
        }
    }

    /// Advances the clock, fires due timers, drains actions, and makes a fresh branch.
    fn step(&mut self, prefix: &str) {
        self.n += 1;
        self.now += Duration::from_millis(1);
        self.table.handle_timeouts(self.now);
        while let Some(action) = self.table.poll_action() {
            black_box(action);
        }
        self.branch.clear();
        write!(self.branch, "z9hG4bK{prefix}{}", self.n).unwrap();
    }

    fn drain(&mut self) {
        while let Some(action) = self.table.poll_action() {
            black_box(action);
        }
    }
}

fn transactions(c: &mut Criterion) {
    let mut group = c.benchmark_group("transaction_table");

    // Non-INVITE client over UDP: send, match the 200, Completed; Timer K (5 s) ends it.
    let mut b = Bench::new();
    group.bench_function("non_invite_client_udp", |bench| {
        bench.iter(|| {
            b.step("n");
            let now = b.now;
            let key = ClientKey::new(&b.branch, b"OPTIONS");
            let id = b.table.insert_client_non_invite(now, &key, false).unwrap();
            let found = b.table.lookup_client(&key).unwrap();
            b.table.handle_response(now, found, 200).unwrap();
            b.drain();
            black_box(id);
        })
    });
    black_box(b.table.len());

    // INVITE server over UDP: 100 Trying, a retransmission matched, 486, the ACK matched,
    // Confirmed; Timer I (5 s) ends it.
    let mut b = Bench::new();
    group.bench_function("invite_server_udp", |bench| {
        bench.iter(|| {
            b.step("i");
            let now = b.now;
            let invite = RequestFields {
                method: b"INVITE",
                branch: Some(&b.branch),
                sent_by: b"192.0.2.1:5060",
                ..RequestFields::default()
            };
            let key = ServerKey::from_request(&invite);
            let id = b.table.insert_server_invite(now, &key, false).unwrap();
            let again = b.table.lookup_server(&key).unwrap();
            b.table.handle_request_retransmission(now, again).unwrap();
            b.table.send_response(now, id, 486).unwrap();
            let ack = RequestFields {
                method: b"ACK",
                ..invite
            };
            let acked = b
                .table
                .lookup_server(&ServerKey::from_request(&ack))
                .unwrap();
            b.table.handle_ack(now, acked).unwrap();
            b.drain();
        })
    });
    black_box(b.table.len());

    // INVITE client over TCP, proxied: send, 180 matched, 486 matched and ACKed:
    // terminated at once (Timer D = 0).
    let mut b = Bench::new();
    group.bench_function("invite_client_tcp", |bench| {
        bench.iter(|| {
            b.step("c");
            let now = b.now;
            let key = ClientKey::new(&b.branch, b"INVITE");
            b.table.insert_client_invite(now, &key, true, true).unwrap();
            let id = b.table.lookup_client(&key).unwrap();
            b.table.handle_response(now, id, 180).unwrap();
            let id = b.table.lookup_client(&key).unwrap();
            b.table.handle_response(now, id, 486).unwrap();
            b.drain();
        })
    });
    black_box(b.table.len());
    group.finish();
}

criterion_group!(benches, transactions);
criterion_main!(benches);
