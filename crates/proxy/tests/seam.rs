//! The core's seam as the driver uses it: one `poll_output` for everything that leaves the
//! core, and the wall clock beside the monotonic one.

mod support;

use std::time::Duration;

use anchorage_proxy::node::{Now, Output};

use support::scenario::*;

#[test]
fn poll_output_gives_the_relay_request_before_the_100_trying_and_then_nothing() {
    let mut p = proxy(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }]\n\n[proxy.media]\nset = \"m\"\n",
    );
    p.handle_datagram(
        Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"),
        epoch(),
    );
    let out: Vec<Output> = std::iter::from_fn(|| p.poll_output()).collect();
    assert_eq!(out.len(), 2, "{out:?}");
    let Output::Ng { relay, datagram } = &out[0] else {
        panic!("the ng offer first: {out:?}")
    };
    assert_eq!(relay.to_string(), "127.0.0.1:2223");
    let offer = anchorage_ng::decode_request(datagram).unwrap();
    assert!(matches!(
        offer.request.kind,
        anchorage_ng::RequestKind::Offer(_)
    ));
    let Output::Sip(trying) = &out[1] else {
        panic!("then the 100 Trying: {out:?}")
    };
    assert!(trying.data.starts_with(b"SIP/2.0 100 "), "{out:?}");
    assert_eq!(trying.destination.to_string(), "127.0.0.1:5070");
    assert_eq!(p.poll_output(), None);
}

#[test]
fn poll_output_asks_for_a_name_to_be_resolved() {
    let mut p = proxy(
        "[[proxy.route]]\nname = \"b\"\ndestinations = [{ host = \"b.example.com\", port = 5080 }]\n",
    );
    p.handle_datagram(Req::invite().datagram("127.0.0.1:5070"), epoch());
    let resolve = std::iter::from_fn(|| p.poll_output()).find_map(|o| match o {
        Output::Resolve(q) => Some(q),
        _ => None,
    });
    let q = resolve.expect("a name to resolve");
    assert_eq!((q.name.as_str(), q.port), ("b.example.com", Some(5080)));
}

#[test]
fn a_monotonic_instant_is_written_out_on_the_latest_wall_clock_reading() {
    let mut p = proxy("");
    let t0 = epoch();
    let start = 1_800_000_000_000_000;
    p.handle_clock(Now {
        mono: t0,
        unix_us: start,
    });
    let t = t0 + Duration::from_millis(1_500);
    assert_eq!(p.unix_us_at(t), start + 1_500_000);
    assert_eq!(p.unix_us_at(t0), start);
    // The wall clock was stepped back 2 s (NTP) at t: instants are read on the new reading.
    p.handle_clock(Now {
        mono: t,
        unix_us: start + 1_500_000 - 2_000_000,
    });
    assert_eq!(p.unix_us_at(t + Duration::from_secs(1)), start + 500_000);
    assert_eq!(p.unix_us_at(t0), start - 2_000_000);
}
