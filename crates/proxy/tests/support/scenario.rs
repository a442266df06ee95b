//! Helpers of the proxy node's scenario tests (`forwarding.rs`, `anchoring.rs`,
//! `reanchoring.rs`): a proxy on a 127.0.0.1 listener built from a TOML configuration, on a
//! wall-clock epoch with time advanced by hand; datagrams from text; relays answered by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_proxy::node::{CoreConfig, Datagram, Listener, Proxy, Transmit};
use anchorage_proxy::routing::Router;
use anchorage_proxy::transaction::TimerConfig;
use anchorage_proxy::Transport;
use anchorage_sip::{HeaderName, Message};
use bytes::Bytes;

pub use super::{ANSWER_SDP, OFFER_SDP};

/// The tests' time origin (the only wall-clock read; every later time is derived from it).
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// A proxy with the `[proxy]` sections of `config` (TOML), node id `n1`, one UDP listener on
/// 127.0.0.1:5060, default timers, seed 7, started at [`epoch`].
pub fn proxy(config: &str) -> Proxy {
    let cfg = anchorage_config::parse(config).unwrap();
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    Proxy::new(
        CoreConfig {
            node_id: "n1".into(),
            listeners: vec![Listener {
                transport: Transport::Udp,
                local,
                advertise_host: "127.0.0.1".into(),
                advertise_port: 5060,
            }],
            timers: TimerConfig::default(),
            router: Router::new(cfg.proxy.route),
            dialog_max_age: Duration::from_secs(3600),
            relay_sets: cfg.proxy.relay_set,
            default_media: cfg.proxy.media,
            ng_client: anchorage_ng::ClientConfig::default(),
            relay_health: anchorage_proxy::media::HealthConfig::default(),
            reanchor: cfg.proxy.reanchor,
            flood: cfg.proxy.flood,
            overload: cfg.proxy.overload,
        },
        7,
        epoch(),
    )
}

/// `text` (LF line ends, turned into CRLF) received over UDP from `from` on the proxy's listener.
pub fn datagram(text: &str, from: &str) -> Datagram {
    Datagram {
        data: Bytes::from(text.replace('\n', "\r\n")),
        source: from.parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        transport: Transport::Udp,
    }
}

/// Everything the proxy has to send now.
pub fn drain(p: &mut Proxy) -> Vec<Transmit> {
    std::iter::from_fn(|| p.poll_transmit()).collect()
}

/// An initial INVITE from alice (127.0.0.1:5070) to bob (127.0.0.1:9), without a body.
pub const INVITE: &str = "INVITE sip:bob@127.0.0.1:9 SIP/2.0\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\n\
From: <sip:alice@example.com>;tag=a1\n\
To: <sip:bob@example.com>\n\
Call-ID: c1\n\
CSeq: 1 INVITE\n\
Contact: <sip:alice@127.0.0.1:5070>\n\
Max-Forwards: 70\n\
Content-Length: 0\n\n";

/// Hands `text` from `source` to the proxy; returns the request it forwarded (same method).
pub fn forwarded(p: &mut Proxy, text: &str, source: &str, now: Instant) -> Transmit {
    let method = text.split(' ').next().unwrap_or("").as_bytes().to_vec();
    p.handle_datagram(datagram(text, source), now);
    drain(p)
        .into_iter()
        .find(|t| t.data.starts_with(&method))
        .expect("the request forwarded")
}

/// Answers the next ng request, which must go to `node`, with `sdp`.
pub fn relay_at_replies(
    p: &mut Proxy,
    node: &str,
    sdp: &str,
    now: Instant,
) -> anchorage_ng::Request {
    let (to, datagram) = p.poll_ng_transmit(now).expect("an ng request");
    assert_eq!(to.to_string(), node);
    let incoming = anchorage_ng::decode_request(&datagram).unwrap();
    let reply = anchorage_ng::Reply::ok().with_sdp(Bytes::from(sdp.to_string()));
    let bytes = anchorage_ng::encode_reply(&incoming.cookie, &reply, incoming.encoding);
    p.handle_ng_datagram(to, &bytes, now);
    incoming.request
}

/// A sent message as text.
pub fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.data).into_owned()
}

/// A 200 with `sdp` from the party a request went to (the proxy's Via popped by it).
pub fn ok_to(p: &mut Proxy, request: &Transmit, to_tag: Option<&str>, sdp: &str, now: Instant) {
    let req = Message::parse(request.data.clone()).unwrap();
    let mut b = req.response(200, "OK");
    if let Some(tag) = to_tag {
        b = b.to_tag(tag);
    }
    let contact = if request.destination.port() == 9 {
        "Contact: <sip:bob@127.0.0.1:9>"
    } else {
        "Contact: <sip:alice@127.0.0.1:5070>"
    };
    let (name, value) = contact.split_once(": ").unwrap();
    let rr: Vec<String> = req
        .headers_of(HeaderName::RecordRoute)
        .map(|h| String::from_utf8_lossy(h.value()).into_owned())
        .collect();
    b = b.header(name, value);
    for r in &rr {
        b = b.header("Record-Route", r);
    }
    if !sdp.is_empty() {
        b = b.body("application/sdp", sdp.as_bytes());
    }
    let ok = b.build().unwrap();
    p.handle_datagram(
        Datagram {
            data: ok.bytes(),
            source: request.destination,
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        },
        now,
    );
}

/// A proxy with relays r1 and r2 and a confirmed call c1 anchored on r1 (caller a1 at
/// 127.0.0.1:5070, callee b1 at 127.0.0.1:9).
pub fn call_on_r1(now: Instant) -> Proxy {
    let mut p = proxy(
        "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n",
    );
    let invite = INVITE.replace(
        "Content-Length: 0\n\n",
        &format!(
            "Content-Type: application/sdp\nContent-Length: {}\n\n{}",
            OFFER_SDP.len(),
            OFFER_SDP.replace("\r\n", "\n")
        ),
    );
    p.handle_datagram(datagram(&invite, "127.0.0.1:5070"), now);
    drain(&mut p);
    let r1_offer = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_offer, now);
    let out = drain(&mut p);
    let forwarded = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .unwrap()
        .clone();
    ok_to(&mut p, &forwarded, Some("b1"), ANSWER_SDP, now);
    let r1_answer = "v=0\r\no=relay 6 3 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1_answer, now);
    drain(&mut p);
    let ack = INVITE
        .replace("INVITE sip:bob@127.0.0.1:9", "ACK sip:bob@127.0.0.1:9")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=b1",
        )
        .replace("z9hG4bK-1", "z9hG4bK-ack")
        .replace(
            "Max-Forwards: 70\n",
            "Max-Forwards: 70\nRoute: <sip:127.0.0.1:5060;lr>\n",
        );
    p.handle_datagram(datagram(&ack, "127.0.0.1:5070"), now);
    drain(&mut p);

    p
}

/// Every ng request sent now other than health pings, with its destination port.
pub fn ng_requests(p: &mut Proxy, now: Instant) -> Vec<(u16, anchorage_ng::Request)> {
    std::iter::from_fn(|| p.poll_ng_transmit(now))
        .map(|(to, d)| (to.port(), anchorage_ng::decode_request(&d).unwrap().request))
        .filter(|(_, r)| !matches!(r.kind, anchorage_ng::RequestKind::Ping))
        .collect()
}

/// Whether an ng request is a `delete`.
pub fn is_delete(r: &anchorage_ng::Request) -> bool {
    matches!(r.kind, anchorage_ng::RequestKind::Delete(_))
}
