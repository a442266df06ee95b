//! Encoding and decoding one typical call record (a confirmed dialog with two legs, four SDPs
//! of about 300 bytes: two received, two sent) in JSON. Prints the sizes first.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[path = "../tests/support/sample.rs"]
mod sample;

use anchorage_store::CallRecord;

fn record(c: &mut Criterion) {
    let record = sample::call("a84b4c76e66710@pc33.example.com", "node1");
    let json = record.encode();
    let full = sample::full("a84b4c76e66710@pc33.example.com", "node1").encode();
    println!(
        "typical call record: {} bytes; with an open INVITE and a move: {} bytes",
        json.len(),
        full.len()
    );
    c.bench_function("record_encode_json", |b| {
        b.iter(|| black_box(&record).encode())
    });
    c.bench_function("record_decode_json", |b| {
        b.iter(|| CallRecord::decode(black_box(&json)).expect("decodes"))
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
