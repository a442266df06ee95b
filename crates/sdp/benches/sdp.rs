//! The relay's SDP hot path: parse a typical ~300-byte offer, rewrite c=/m=/o= the way a relay
//! does, serialize.

use std::hint::black_box;
use std::net::IpAddr;

use anchorage_sdp::Session;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

const OFFER: &[u8] = b"v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=X-nat:0\r\n\
a=sendrecv\r\n";

fn rewrite(input: Bytes, relay: IpAddr) -> Bytes {
    let Ok(mut sdp) = Session::parse(input) else {
        return Bytes::new();
    };
    sdp.session_level_mut().remove_connection();
    let _ = sdp.set_origin_address(relay);
    let _ = sdp.set_origin_version(2890844527);
    for media in sdp.media_mut() {
        media.set_port(30000);
        media.set_connection(relay);
        media.set_rtcp(30001, None);
    }
    sdp.to_bytes()
}

fn benches(c: &mut Criterion) {
    let input = Bytes::from_static(OFFER);
    let relay: IpAddr = "203.0.113.5"
        .parse()
        .unwrap_or(IpAddr::from([203, 0, 113, 5]));
    c.bench_function(&format!("parse {} bytes", OFFER.len()), |b| {
        b.iter(|| Session::parse(black_box(input.clone())))
    });
    c.bench_function("parse, rewrite c=/m=/o=, serialize", |b| {
        b.iter(|| rewrite(black_box(input.clone()), relay))
    });
    let parsed = Session::parse(input.clone());
    c.bench_function("serialize unedited", |b| {
        b.iter(|| parsed.as_ref().map(|s| black_box(s).to_bytes()))
    });
}

criterion_group!(sdp, benches);
criterion_main!(sdp);
