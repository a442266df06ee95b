//! The client request tracker under an injected clock: exact retransmission times, cookie
//! matching, timeouts.

use std::time::{Duration, Instant};

use anchorage_ng::*;

#[allow(clippy::disallowed_methods)] // the tests' one epoch
fn epoch() -> Instant {
    Instant::now()
}

fn offsets_ms(t0: Instant, times: &[Instant]) -> Vec<u128> {
    times.iter().map(|t| (*t - t0).as_millis()).collect()
}

/// Drives the client until it has nothing left to do; returns the send times.
fn run_to_completion(client: &mut Client, t0: Instant) -> Vec<Instant> {
    let mut sends = Vec::new();
    while client.poll_transmit().is_some() {
        sends.push(t0);
    }
    while let Some(at) = client.poll_timeout() {
        client.handle_timeout(at);
        while client.poll_transmit().is_some() {
            sends.push(at);
        }
    }
    sends
}

fn ping() -> Request {
    Request::new(RequestKind::Ping)
}

#[test]
fn default_schedule_retransmits_every_200ms_and_times_out_at_1s() {
    let t0 = epoch();
    let mut client = Client::new(ClientConfig::default(), "px1");
    let id = client.send(&ping(), t0);
    let first = client.poll_transmit().unwrap();
    assert_eq!(&first[..], b"px1_0 d7:command4:pinge");
    let mut sends = vec![t0];
    let mut datagrams = vec![first];
    while let Some(at) = client.poll_timeout() {
        client.handle_timeout(at);
        while let Some(d) = client.poll_transmit() {
            sends.push(at);
            datagrams.push(d);
        }
    }
    assert_eq!(offsets_ms(t0, &sends), [0, 200, 400, 600, 800]);
    assert!(
        datagrams.iter().all(|d| d == &datagrams[0]),
        "same cookie, same bytes"
    );
    assert_eq!(client.poll_event(), Some(Event::TimedOut(id)));
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.pending(), 0);
}

#[test]
fn backoff_and_try_limit_are_configurable() {
    let t0 = epoch();
    let config = ClientConfig {
        first_retransmit: Duration::from_millis(100),
        backoff: 2,
        max_transmissions: 10,
        timeout: Duration::from_millis(2_000),
        encoding: Encoding::Bencode,
    };
    let mut client = Client::new(config, "p");
    let id = client.send(&ping(), t0);
    let sends = run_to_completion(&mut client, t0);
    // 100, 200, 400, 800 ms apart; the next (at 3 100 ms) would be past the deadline.
    assert_eq!(offsets_ms(t0, &sends), [0, 100, 300, 700, 1_500]);
    assert_eq!(client.poll_event(), Some(Event::TimedOut(id)));

    let mut client = Client::new(
        ClientConfig {
            max_transmissions: 2,
            ..ClientConfig::default()
        },
        "p",
    );
    let id = client.send(&ping(), t0);
    let sends = run_to_completion(&mut client, t0);
    assert_eq!(offsets_ms(t0, &sends), [0, 200]);
    assert_eq!(client.poll_event(), Some(Event::TimedOut(id)));
}

#[test]
fn reply_is_matched_by_cookie_and_stops_retransmission() {
    let t0 = epoch();
    let mut client = Client::new(ClientConfig::default(), "node-a 7");
    let a = client.send(&ping(), t0);
    let b = client.send(
        &Request::new(RequestKind::Query(Query {
            call_id: CallId::from("c1"),
            from_tag: None,
            to_tag: None,
        })),
        t0,
    );
    assert_eq!(client.cookie(a).unwrap().as_bytes(), b"node-a-7_0");
    assert_eq!(
        &client.poll_transmit().unwrap()[..],
        b"node-a-7_0 d7:command4:pinge"
    );
    assert_eq!(
        &client.poll_transmit().unwrap()[..],
        b"node-a-7_1 d7:call-id2:c17:command5:querye"
    );

    let t1 = t0 + Duration::from_millis(30);
    client.handle_datagram(
        b"node-a-7_1 d12:error-reason15:Unknown call-id6:result5:errore",
        t1,
    );
    client.handle_datagram(b"somebody-else_1 d6:result4:ponge", t1);
    assert_eq!(
        client.poll_event(),
        Some(Event::Reply(b, Reply::error(ErrorReason::UnknownCallId)))
    );
    assert_eq!(client.stray_datagrams(), 1);
    // A late duplicate of the same reply is stray too.
    client.handle_datagram(
        b"node-a-7_1 d12:error-reason15:Unknown call-id6:result5:errore",
        t1,
    );
    assert_eq!(client.stray_datagrams(), 2);
    assert_eq!(client.poll_event(), None);

    // Only the ping is still retransmitted.
    assert_eq!(client.poll_timeout(), Some(t0 + Duration::from_millis(200)));
    client.handle_timeout(t0 + Duration::from_millis(200));
    assert_eq!(
        &client.poll_transmit().unwrap()[..],
        b"node-a-7_0 d7:command4:pinge"
    );
    assert_eq!(client.poll_transmit(), None);
    client.handle_datagram(
        b"node-a-7_0 d6:result4:ponge",
        t0 + Duration::from_millis(210),
    );
    assert_eq!(client.poll_event(), Some(Event::Reply(a, Reply::pong())));
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(client.pending(), 0);
}

#[test]
fn malformed_reply_with_our_cookie_fails_the_request() {
    let t0 = epoch();
    let mut client = Client::new(ClientConfig::default(), "p");
    let id = client.send(&ping(), t0);
    client.handle_datagram(b"p_0 d5:hello5:worlde", t0);
    assert_eq!(
        client.poll_event(),
        Some(Event::Failed(
            id,
            ReplyError::Invalid("no \"result\" key".into())
        ))
    );
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn cancelled_request_is_neither_retransmitted_nor_reported() {
    let t0 = epoch();
    let mut client = Client::new(ClientConfig::default(), "p");
    let id = client.send(&ping(), t0);
    assert!(client.cancel(id));
    assert!(!client.cancel(id));
    assert_eq!(client.poll_timeout(), None);
    client.handle_datagram(b"p_0 d6:result4:ponge", t0);
    assert_eq!(client.poll_event(), None);
    assert_eq!(client.stray_datagrams(), 1);
}

#[test]
fn json_client_and_server_talk_json() {
    let t0 = epoch();
    let mut client = Client::new(
        ClientConfig {
            encoding: Encoding::Json,
            ..ClientConfig::default()
        },
        "j",
    );
    client.send(&ping(), t0);
    let datagram = client.poll_transmit().unwrap();
    assert_eq!(&datagram[..], br#"j_0 {"command":"ping"}"#);
    let incoming = decode_request(&datagram).unwrap();
    let reply = encode_reply(&incoming.cookie, &Reply::pong(), incoming.encoding);
    assert_eq!(&reply[..], br#"j_0 {"result":"pong"}"#);
    client.handle_datagram(&reply, t0);
    assert_eq!(
        client.poll_event(),
        Some(Event::Reply(RequestId(0), Reply::pong()))
    );
}
