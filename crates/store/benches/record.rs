//! Encoding and decoding one typical call record (a confirmed dialog with two legs, four SDPs
//! of about 300 bytes: two received, two sent), in JSON (the format used) and in bencode (the
//! ng protocol's encoding, already in the workspace) for comparison. Prints the sizes first.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[path = "../tests/support/sample.rs"]
mod sample;

use anchorage_store::CallRecord;

fn record(c: &mut Criterion) {
    let record = sample::call("a84b4c76e66710@pc33.example.com", "node1");
    let json = record.encode();
    let bencode = bt_bencode::to_vec(&record).expect("bencode encodes");
    let full = sample::full("a84b4c76e66710@pc33.example.com", "node1").encode();
    println!(
        "typical call record: json {} bytes, bencode {} bytes; with an open INVITE and a move: json {} bytes",
        json.len(),
        bencode.len(),
        full.len()
    );
    c.bench_function("record_encode_json", |b| {
        b.iter(|| black_box(&record).encode())
    });
    c.bench_function("record_decode_json", |b| {
        b.iter(|| CallRecord::decode(black_box(&json)).expect("decodes"))
    });
    c.bench_function("record_encode_bencode", |b| {
        b.iter(|| bt_bencode::to_vec(black_box(&record)).expect("encodes"))
    });
    c.bench_function("record_decode_bencode", |b| {
        b.iter(|| bt_bencode::from_slice::<CallRecord>(black_box(&bencode)).expect("decodes"))
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
