//! Per-packet cost of the forwarding decision with its counters: `MediaPair::on_packet` on a
//! confirmed RTP stream (learning, RFC 5761 demux, loss and jitter update, destination).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_relay::{
    Decision, LegConfig, LocalSocket, MediaPair, SdpPeer, Side, SocketKind, StreamFlags,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn leg(local: &str, rtcp: &str, remote: &str) -> LegConfig {
    LegConfig {
        local_rtp: addr(local),
        local_rtcp: Some(addr(rtcp)),
        remote: Some(SdpPeer::new(addr(remote))),
        rtcp_mux: false,
        flags: StreamFlags::default(),
    }
}

fn decision(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    let mut pair = MediaPair::new(
        leg("203.0.113.1:30000", "203.0.113.1:30001", "192.0.2.10:4000"),
        leg(
            "203.0.113.1:30002",
            "203.0.113.1:30003",
            "198.51.100.20:5000",
        ),
        t0,
    )
    .expect("pair");
    let source = addr("192.0.2.10:4000");
    let on = LocalSocket {
        side: Side::A,
        kind: SocketKind::Rtp,
    };
    let mut packet = [0u8; 172];
    packet[0] = 0x80;
    let mut seq: u16 = 0;
    let mut now = t0 + Duration::from_secs(4); // past the learning window: confirmed path
    let mut group = c.benchmark_group("decision");
    group.throughput(Throughput::Elements(1));
    group.bench_function("on_packet_rtp_172B", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            now += Duration::from_millis(20);
            match pair.on_packet(on, source, black_box(&packet), now) {
                Decision::Forward(f) => black_box(f.to),
                Decision::Drop(_) => unreachable!("bench stream is never dropped"),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
