//! A fixed number of SRTP round trips through `MediaPair::relay` (see `benches/srtp.rs`), for
//! instruction counts that do not depend on the machine's load:
//!
//! ```text
//! valgrind --tool=callgrind target/release/examples/srtp_path 10000
//! valgrind --tool=callgrind target/release/examples/srtp_path 20000
//! ```
//!
//! The difference of the two totals divided by 10,000 is the cost of one round trip (one
//! packet encrypted towards the SRTP leg, one decrypted from it), setup excluded. `plain` as a
//! second argument runs the same with both legs plain.

mod setup;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let plain = args.next().as_deref() == Some("plain");
    let mut bench = setup::Bench::new(!plain);
    let mut total = 0usize;
    for _ in 0..count {
        total += if plain {
            bench.plain() + bench.plain()
        } else {
            bench.round_trip()
        };
    }
    println!("{count} round trips, {total} bytes sent");
}
