//! Per-packet cost of the relay step on a call with one leg SDES-SRTP
//! (`AES_CM_128_HMAC_SHA1_80`) and the other plain, as `bench/relay.sh --srtp` loads it:
//! `MediaPair::relay` with its decision, counters and SRTP, no sockets.
//!
//! * `plain_172B`: both legs plain (the reference: the decision alone);
//! * `encrypt_172B`: B's plain RTP encrypted towards A;
//! * `round_trip_172B`: one packet each way, as every call of the benchmark does: B's plain
//!   RTP encrypted towards A, then that SRTP packet received from A, authenticated and
//!   decrypted towards B. Leg A's inbound and outbound keys are the same here so that the
//!   relay's own output is a valid packet from A (no generator in the measured loop).
//!
//! `cargo run --release -p anchorage-relay --example srtp_path` runs the same round trip a
//! fixed number of times, for instruction counts under callgrind.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "../examples/srtp_path/setup.rs"]
mod setup;

fn srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("srtp");
    group.throughput(Throughput::Elements(1));

    let mut bench = setup::Bench::new(false);
    group.bench_function("plain_172B", |b| b.iter(|| black_box(bench.plain())));

    let mut bench = setup::Bench::new(true);
    group.bench_function("encrypt_172B", |b| b.iter(|| black_box(bench.encrypt())));

    let mut bench = setup::Bench::new(true);
    group.bench_function("round_trip_172B", |b| {
        b.iter(|| black_box(bench.round_trip()))
    });
    group.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
