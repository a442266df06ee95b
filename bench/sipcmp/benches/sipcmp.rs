//! anchorage-sip vs rsipstack on the same 906-byte INVITE with SDP and the same proxy
//! operation: parse; read the top Via branch, Call-ID, CSeq number, From tag, To tag,
//! Max-Forwards and the Route list; add a Via on top; add a Record-Route; decrement
//! Max-Forwards; serialize.
//!
//! Before timing, each side's heap allocations for one pass are counted with a global
//! allocator wrapper and printed.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// The same file the anchorage-sip criterion bench uses.
const INVITE: &[u8] = include_bytes!("../../../crates/sip/benches/invite.sip");
const VIA: &str = "SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKa1b2c3d4e5f6;rport";
const RECORD_ROUTE: &str = "<sip:203.0.113.1;lr>";

/// Ours: returns the serialized message and a checksum of what was read. A name-addr's URI
/// is parsed only when asked for, so this reads tags and Route values without parsing their
/// URIs; see [`anchorage_validated`] for the whole check our proxy runs.
fn anchorage(input: &Bytes) -> (Bytes, usize) {
    anchorage_with(input, false)
}

/// Ours with [`anchorage_sip::Message::validate`] first, as our proxy does with every
/// request: every header a proxy relies on parsed, every URI included (more than the
/// rsipstack side does).
fn anchorage_validated(input: &Bytes) -> (Bytes, usize) {
    anchorage_with(input, true)
}

fn anchorage_with(input: &Bytes, validate: bool) -> (Bytes, usize) {
    use anchorage_sip::Message;
    let Ok(m) = Message::parse(input.clone()) else {
        return (Bytes::new(), 0);
    };
    if validate && m.validate().is_err() {
        return (Bytes::new(), 0);
    }
    let mut seen = 0;
    seen += m.top_via().ok().and_then(|v| v.branch()).map_or(0, str::len);
    seen += m.call_id().map_or(0, str::len);
    seen += m.cseq().map_or(0, |c| c.seq as usize);
    seen += m.from().ok().and_then(|f| f.tag()).map_or(0, str::len);
    seen += m.to().ok().and_then(|t| t.tag()).map_or(0, str::len);
    let mf = m.max_forwards().ok().flatten().unwrap_or(70);
    seen += m.routes().filter_map(Result::ok).map(|r| r.uri_raw.len()).sum::<usize>();
    let mut e = m.edit();
    let _ = e.push_via(VIA.as_bytes());
    let _ = e.prepend_record_route(RECORD_ROUTE.as_bytes());
    e.set_max_forwards(mf.saturating_sub(1));
    (e.finish(), seen)
}

/// rsipstack 0.7: the same reads through its typed headers, the same edits on its header
/// list, serialized with `to_bytes`.
fn rsipstack(input: &Bytes) -> (Vec<u8>, usize) {
    use rsipstack::sip::prelude::*;
    use rsipstack::sip::{Header, SipMessage};
    let Ok(SipMessage::Request(mut req)) = SipMessage::try_from(input.clone()) else {
        return (Vec::new(), 0);
    };
    let mut seen = 0;
    seen += req
        .top_via_header()
        .ok()
        .and_then(|v| v.typed().ok())
        .and_then(|v| v.branch().map(|b| b.to_string().len()))
        .unwrap_or(0);
    seen += req.call_id_header().map_or(0, |c| c.value().len());
    seen += req.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(0) as usize;
    seen += req
        .from_header()
        .ok()
        .and_then(|f| f.tag().ok().flatten())
        .map_or(0, |t| t.to_string().len());
    seen += req
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .map_or(0, |t| t.to_string().len());
    let mf = req
        .max_forwards_header()
        .ok()
        .and_then(|m| m.value().trim().parse::<u32>().ok())
        .unwrap_or(70);
    seen += req
        .typed_route_headers()
        .map_or(0, |r| r.iter().map(|r| r.uri.to_string().len()).sum());
    let headers = &mut req.headers_mut().0;
    let top_via = headers
        .iter()
        .position(|h| matches!(h, Header::Via(_)))
        .unwrap_or(0);
    headers.insert(top_via, Header::Via(rsipstack::sip::Via::new(VIA)));
    let rr_at = headers
        .iter()
        .position(|h| matches!(h, Header::RecordRoute(_)))
        .or_else(|| {
            headers
                .iter()
                .rposition(|h| matches!(h, Header::Via(_)))
                .map(|p| p + 1)
        })
        .unwrap_or(0);
    headers.insert(
        rr_at,
        Header::RecordRoute(rsipstack::sip::RecordRoute::new(RECORD_ROUTE)),
    );
    if let Ok(m) = req.max_forwards_header_mut() {
        m.replace(mf.saturating_sub(1).to_string());
    }
    (req.to_bytes(), seen)
}

fn allocations<T>(f: impl FnOnce() -> T) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    black_box(f());
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn bench(c: &mut Criterion) {
    let input = Bytes::from_static(INVITE);
    let (ours, ours_seen) = anchorage(&input);
    assert_eq!(anchorage_validated(&input), (ours.clone(), ours_seen));
    let (theirs, theirs_seen) = rsipstack(&input);
    assert!(ours_seen > 0 && theirs_seen > 0, "both sides read the headers");
    assert!(ours.len() > INVITE.len() && theirs.len() > INVITE.len());
    println!(
        "message: {} bytes; output: anchorage-sip {} bytes, rsipstack {} bytes",
        INVITE.len(),
        ours.len(),
        theirs.len()
    );
    println!(
        "heap allocations per message: anchorage-sip {} (validated: {}), rsipstack {}",
        allocations(|| anchorage(&input)),
        allocations(|| anchorage_validated(&input)),
        allocations(|| rsipstack(&input))
    );
    let mut g = c.benchmark_group("sip_parse_read_edit_serialize");
    g.bench_function("anchorage-sip", |b| b.iter(|| anchorage(black_box(&input))));
    g.bench_function("anchorage-sip-validated", |b| {
        b.iter(|| anchorage_validated(black_box(&input)))
    });
    g.bench_function("rsipstack-0.7", |b| b.iter(|| rsipstack(black_box(&input))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
