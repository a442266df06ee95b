//! What a proxy does to each INVITE it forwards: parse a 906-byte INVITE with SDP, read the
//! headers a proxy reads (top Via branch, Call-ID, CSeq, From tag, To tag, Max-Forwards,
//! Route), apply the proxy's edits (push Via, prepend Record-Route, decrement Max-Forwards)
//! and serialize. Before the timing it prints the heap allocations of one such pass, counted
//! by a global allocator wrapper.

use anchorage_sip::Message;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The INVITE, shared with bench/sipcmp.
const INVITE: &[u8] = include_bytes!("invite.sip");

/// Parse, read, edit, serialize; returns the output and a checksum of what was read.
fn proxy_pass(input: &Bytes) -> (Bytes, usize) {
    let Ok(m) = Message::parse(input.clone()) else {
        return (Bytes::new(), 0);
    };
    let mut seen = 0;
    if let Ok(via) = m.top_via() {
        seen += via.branch().map_or(0, str::len);
    }
    seen += m.call_id().map_or(0, str::len);
    seen += m.cseq().map_or(0, |c| c.seq as usize);
    seen += m.from().ok().and_then(|f| f.tag()).map_or(0, str::len);
    seen += m.to().ok().and_then(|t| t.tag()).map_or(0, str::len);
    let mf = m.max_forwards().ok().flatten().unwrap_or(70);
    seen += m
        .routes()
        .filter_map(Result::ok)
        .map(|r| r.uri_raw.len())
        .sum::<usize>();
    let mut e = m.edit();
    let _ = e.push_via(b"SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKa1b2c3d4e5f6;rport");
    let _ = e.prepend_record_route(b"<sip:203.0.113.1;lr>");
    e.set_max_forwards(mf.saturating_sub(1));
    (e.finish(), seen)
}

fn bench(c: &mut Criterion) {
    let input = Bytes::from_static(INVITE);
    let (out, seen) = proxy_pass(&input);
    assert!(seen > 0 && out.len() > INVITE.len());
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    black_box(proxy_pass(black_box(&input)));
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    println!(
        "sip proxy pass: {} bytes in, {} bytes out, {allocs} heap allocation(s) per message",
        INVITE.len(),
        out.len()
    );
    c.bench_function("sip_parse_read_edit_serialize_invite", |b| {
        b.iter(|| proxy_pass(black_box(&input)))
    });
    c.bench_function("sip_parse_only_invite", |b| {
        b.iter(|| Message::parse(black_box(input.clone())).map(|m| m.headers().len()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
