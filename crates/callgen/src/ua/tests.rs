//! The agent's tests: a UAC and a UAS in one agent, datagrams delivered directly (or lost),
//! and a UAC facing a hand-written proxy for re-INVITEs, 491 and route sets.

use super::*;
use anchorage_sip::Method;
use bytes::Bytes;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

struct Ports(u16);
impl MediaPorts for Ports {
    fn allocate(&mut self, _call: CallRef) -> Option<SocketAddr> {
        self.0 += 2;
        Some(SocketAddr::from(([127, 0, 0, 1], self.0)))
    }
}

const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5090";

fn config(calls: u64, answer: UasAnswer) -> Config {
    let mut c = Config::new(Duration::from_secs(2), 1);
    c.uac = Some(UacConfig {
        local: UAC.parse().unwrap(),
        proxy: UAS.parse().unwrap(),
        request_uri: format!("sip:service@{UAS}"),
        calls,
        rate: 10.0,
        concurrent: u64::MAX,
        answer_timeout: Duration::from_secs(1),
        reinvite_after: None,
    });
    c.uas = Some(UasConfig {
        local: UAS.parse().unwrap(),
        answer,
        answer_delay: Duration::ZERO,
        calls: None,
    });
    c
}

/// Delivers every datagram directly (UAC ↔ UAS, no proxy), optionally dropping some,
/// and runs timers, until the agent is done or `until`.
fn run(
    agent: &mut Agent,
    start: Instant,
    until: Duration,
    drop: &mut dyn FnMut(&Transmit) -> bool,
) -> Vec<Event> {
    let mut ports = Ports(20000);
    let mut now = start;
    let mut events = Vec::new();
    let uac: SocketAddr = UAC.parse().unwrap();
    let uas: SocketAddr = UAS.parse().unwrap();
    agent.handle_timeout(now, &mut ports);
    loop {
        while let Some(t) = agent.poll_transmit() {
            if drop(&t) {
                continue;
            }
            let (to_side, from) = if t.destination == uas {
                (Side::Uas, uac)
            } else {
                (Side::Uac, uas)
            };
            agent.handle_datagram(now, to_side, from, t.data, &mut ports);
        }
        while let Some(e) = agent.poll_event() {
            events.push(e);
        }
        if agent.is_done() || now >= start + until {
            break;
        }
        now = agent
            .poll_timeout()
            .unwrap_or(now + Duration::from_millis(10))
            .max(now);
        agent.handle_timeout(now, &mut ports);
    }
    events
}

fn records(events: &[Event]) -> Vec<CallRecord> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Ended { record, .. } => Some(record.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn calls_are_set_up_held_and_hung_up() {
    let start = t0();
    let mut agent = Agent::new(config(3, UasAnswer::Ok), start);
    let events = run(&mut agent, start, Duration::from_secs(60), &mut |_| false);
    let recs = records(&events);
    assert_eq!(recs.len(), 6, "{recs:#?}");
    assert!(
        recs.iter().all(|r| r.outcome == Outcome::Completed),
        "{recs:#?}"
    );
    let uac: Vec<_> = recs.iter().filter(|r| r.side == Side::Uac).collect();
    assert!(uac
        .iter()
        .all(|r| r.setup == Some(Duration::ZERO) && r.status == Some(200)));
    assert!(uac.iter().all(|r| r.remote_media.is_some()));
    // Held for the hold time; placed 100 ms apart (10/s).
    for r in &uac {
        assert_eq!(r.ended - r.established.unwrap(), Duration::from_secs(2));
    }
    assert_eq!(uac[1].started - uac[0].started, Duration::from_millis(100));
    let p = agent.progress();
    // Progress follows the callers.
    assert_eq!(
        (p.placed, p.completed, p.failed, p.dropped, p.up),
        (3, 3, 0, 0, 0)
    );
    // Media was started on both sides and stopped.
    let starts = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Media {
                    send: true,
                    receive: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(starts, 6);
}

#[test]
fn lost_datagrams_are_retransmitted() {
    let start = t0();
    let mut agent = Agent::new(config(1, UasAnswer::Ok), start);
    // Drop the first INVITE, the first 200 and the first BYE.
    let mut seen = HashMap::new();
    let events = run(&mut agent, start, Duration::from_secs(60), &mut |t| {
        let first_line = t
            .data
            .split(|&b| b == b'\r')
            .next()
            .unwrap_or_default()
            .to_vec();
        let key = String::from_utf8_lossy(&first_line[..first_line.len().min(12)]).to_string();
        let n = seen.entry(key).or_insert(0);
        *n += 1;
        *n == 1 && !t.data.starts_with(b"SIP/2.0 100") && !t.data.starts_with(b"ACK")
    });
    let recs = records(&events);
    assert_eq!(recs.len(), 2);
    assert!(
        recs.iter().all(|r| r.outcome == Outcome::Completed),
        "{recs:#?}"
    );
    let uac = recs.iter().find(|r| r.side == Side::Uac).unwrap();
    // INVITE lost (T1), then the 200 lost: the UAS retransmits it after T1.
    assert_eq!(uac.setup, Some(Duration::from_millis(1000)));
}

#[test]
fn busy_and_never_answering_uas() {
    let start = t0();
    let mut agent = Agent::new(config(2, UasAnswer::Busy), start);
    let recs = records(&run(
        &mut agent,
        start,
        Duration::from_secs(60),
        &mut |_| false,
    ));
    assert_eq!(recs.len(), 4);
    assert!(
        recs.iter()
            .all(|r| r.outcome == Outcome::Failed && r.status == Some(486)),
        "{recs:#?}"
    );
    assert!(agent.is_done());

    let mut agent = Agent::new(config(1, UasAnswer::Never), start);
    let recs = records(&run(
        &mut agent,
        start,
        Duration::from_secs(60),
        &mut |_| false,
    ));
    assert_eq!(recs.len(), 2, "{recs:#?}");
    assert!(
        recs.iter()
            .all(|r| r.outcome == Outcome::Failed && r.status == Some(487)),
        "{recs:#?}"
    );
    let uac = recs.iter().find(|r| r.side == Side::Uac).unwrap();
    assert!(
        uac.reason
            .as_deref()
            .unwrap()
            .contains("cancelled after the answer timeout"),
        "{uac:?}"
    );
    assert_eq!(uac.ended - uac.started, Duration::from_secs(1));
}

#[test]
fn the_uas_hangs_up_when_chosen_and_random_splits_by_call_id() {
    let start = t0();
    let mut c = config(4, UasAnswer::Ok);
    c.hangup = Hangup::Uas;
    let mut agent = Agent::new(c, start);
    let recs = records(&run(
        &mut agent,
        start,
        Duration::from_secs(60),
        &mut |_| false,
    ));
    assert!(recs.iter().all(|r| r.outcome == Outcome::Completed));
    assert!(recs.iter().all(|r| r.hangup
        == Some(if r.side == Side::Uas {
            Party::Local
        } else {
            Party::Remote
        })));
    let sides: std::collections::HashSet<Side> = (0..20)
        .map(|i| Hangup::Random.side(&format!("call-{i}@x")))
        .collect();
    assert_eq!(sides.len(), 2);
}

#[test]
fn concurrency_limits_live_calls() {
    let start = t0();
    let mut c = config(4, UasAnswer::Ok);
    if let Some(u) = c.uac.as_mut() {
        u.concurrent = 1;
        u.rate = 100.0;
    }
    let mut agent = Agent::new(c, start);
    let recs = records(&run(
        &mut agent,
        start,
        Duration::from_secs(60),
        &mut |_| false,
    ));
    let mut uac: Vec<_> = recs.into_iter().filter(|r| r.side == Side::Uac).collect();
    uac.sort_by_key(|r| r.started);
    assert_eq!(uac.len(), 4);
    for w in uac.windows(2) {
        assert!(w[1].started >= w[0].ended, "overlap: {w:#?}");
    }
}

/// A proxy-style re-INVITE towards the UAC: the callee's identity, the next CSeq, a new
/// media address. The UAC answers 200 with its unchanged SDP and moves its media.
#[test]
fn a_reinvite_moves_the_media_and_is_answered_with_the_same_sdp() {
    let start = t0();
    let mut c = config(1, UasAnswer::Ok);
    c.uas = None;
    c.hold = Duration::from_secs(10);
    let mut agent = Agent::new(c, start);
    let mut ports = Ports(20000);
    agent.handle_timeout(start, &mut ports);
    let invite = agent.poll_transmit().unwrap();
    let invite_msg = Message::parse(invite.data.clone()).unwrap();
    let uas: SocketAddr = UAS.parse().unwrap();
    let from = header_value(&invite_msg, HeaderName::From).unwrap();
    let call_id = invite_msg.call_id().unwrap().to_string();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nRecord-Route: <sip:127.0.0.1:5060;lr>\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        via = header_value(&invite_msg, HeaderName::Via).unwrap(),
        len = 0,
        sdp = ""
    );
    let sdp = "v=0\r\no=callee 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    let ok = ok.replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
    );
    agent.handle_datagram(start, Side::Uac, uas, Bytes::from(ok), &mut ports);
    let ack = agent.poll_transmit().unwrap();
    assert!(ack
        .data
        .starts_with(format!("ACK sip:callee@{UAS} SIP/2.0").as_bytes()));
    assert_eq!(
        ack.destination.to_string(),
        "127.0.0.1:5060",
        "through the Record-Route"
    );
    let ack_text = String::from_utf8_lossy(&ack.data).to_string();
    assert!(
        ack_text.contains("Route: <sip:127.0.0.1:5060;lr>"),
        "{ack_text}"
    );
    let local_sdp_first = String::from_utf8_lossy(invite_msg.body()).to_string();
    let t = start + Duration::from_secs(3);
    let new_sdp = "v=0\r\no=callee 9 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 35000 RTP/AVP 0\r\n";
    let reinvite = format!(
        "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy1\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
         To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{new_sdp}",
        new_sdp.len()
    );
    let proxy: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    agent.handle_datagram(
        t,
        Side::Uac,
        proxy,
        Bytes::from(reinvite.clone()),
        &mut ports,
    );
    let answer = agent.poll_transmit().unwrap();
    assert_eq!(answer.destination, proxy);
    let answer = Message::parse(answer.data).unwrap();
    assert_eq!(answer.status(), Some(200));
    assert_eq!(
        String::from_utf8_lossy(answer.body()),
        local_sdp_first,
        "same SDP, same o= version"
    );
    let events: Vec<Event> = std::iter::from_fn(|| agent.poll_event()).collect();
    assert!(events.iter().any(|e| matches!(e, Event::Media { reinvite: true, remote: Some(a), .. } if a.port() == 35000)), "{events:?}");
    // A retransmitted re-INVITE gets the same 200; the 200 is retransmitted until the ACK.
    agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(reinvite), &mut ports);
    assert_eq!(agent.poll_transmit().unwrap().data, answer.bytes());
    agent.handle_timeout(t + Duration::from_millis(500), &mut ports);
    assert_eq!(agent.poll_transmit().unwrap().data, answer.bytes());
    let ack = format!(
        "ACK sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy2\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
         To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(ack), &mut ports);
    agent.handle_timeout(t + Duration::from_millis(1600), &mut ports);
    assert!(
        agent.poll_transmit().is_none(),
        "no retransmission after the ACK"
    );
    // A lower CSeq is out of order.
    let stale = format!(
        "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKold\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
         To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 0 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    agent.handle_datagram(t, Side::Uac, proxy, Bytes::from(stale), &mut ports);
    assert!(agent
        .poll_transmit()
        .unwrap()
        .data
        .starts_with(b"SIP/2.0 500"));
    // The BYE at the hold time goes through the route set with CSeq 2.
    agent.handle_timeout(start + Duration::from_secs(10), &mut ports);
    let bye = agent.poll_transmit().unwrap();
    assert_eq!(bye.destination, proxy);
    let bye = Message::parse(bye.data).unwrap();
    assert_eq!(bye.cseq().unwrap().seq, 2);
    assert_eq!(
        bye.request_uri_raw().unwrap(),
        format!("sip:callee@{UAS}").as_bytes()
    );
}

/// Answers the UAC's INVITE as a proxy would relay the callee's 200 (no Record-Route),
/// and takes the ACK. Returns (From value, Call-ID).
fn answered_uac_call(agent: &mut Agent, ports: &mut Ports, now: Instant) -> (String, String) {
    agent.handle_timeout(now, ports);
    let invite = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
    let from = header_value(&invite, HeaderName::From).unwrap();
    let call_id = invite.call_id().unwrap().to_string();
    let sdp = "v=0\r\no=callee 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n";
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@{UAS}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        header_value(&invite, HeaderName::Via).unwrap(),
        sdp.len()
    );
    agent.handle_datagram(now, Side::Uac, UAS.parse().unwrap(), Bytes::from(ok), ports);
    assert!(agent.poll_transmit().unwrap().data.starts_with(b"ACK "));
    (from, call_id)
}

#[test]
fn our_reinvite_backs_off_on_491_and_glare_gets_491() {
    let start = t0();
    let mut c = config(1, UasAnswer::Ok);
    c.uas = None;
    c.hold = Duration::from_secs(30);
    if let Some(u) = c.uac.as_mut() {
        u.reinvite_after = Some(Duration::from_secs(1));
    }
    let mut agent = Agent::new(c, start);
    let mut ports = Ports(20000);
    let (from, call_id) = answered_uac_call(&mut agent, &mut ports, start);
    let uas: SocketAddr = UAS.parse().unwrap();
    // Our re-INVITE at 1 s, CSeq 2, same SDP.
    let t = start + Duration::from_secs(1);
    agent.handle_timeout(t, &mut ports);
    let reinvite = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
    assert_eq!(reinvite.cseq().unwrap().seq, 2);
    let busy = format!(
        "SIP/2.0 491 Request Pending\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
         Call-ID: {call_id}\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
        header_value(&reinvite, HeaderName::Via).unwrap()
    );
    agent.handle_datagram(t, Side::Uac, uas, Bytes::from(busy), &mut ports);
    let ack = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
    assert_eq!(ack.method(), Some(Method::Ack));
    assert_eq!(
        ack.top_via().unwrap().branch(),
        reinvite.top_via().unwrap().branch(),
        "a non-2xx ACK keeps the INVITE's branch"
    );
    // The retry comes 2.1–4 s later (RFC 3261 §14.1, Call-ID owner), CSeq 3.
    agent.handle_timeout(t + Duration::from_millis(2099), &mut ports);
    assert!(agent.poll_transmit().is_none());
    agent.handle_timeout(t + Duration::from_secs(4), &mut ports);
    let retry = Message::parse(agent.poll_transmit().unwrap().data).unwrap();
    assert_eq!(retry.cseq().unwrap().seq, 3);
    // Glare: the other side's re-INVITE while ours is pending gets 491.
    let theirs = format!(
        "INVITE sip:callgen@{UAC} SIP/2.0\r\nVia: SIP/2.0/UDP {UAS};branch=z9hG4bKtheirs\r\nFrom: <sip:service@{UAS}>;tag=callee\r\n\
         To: {from}\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let t = t + Duration::from_secs(4);
    agent.handle_datagram(t, Side::Uac, uas, Bytes::from(theirs), &mut ports);
    assert!(agent
        .poll_transmit()
        .unwrap()
        .data
        .starts_with(b"SIP/2.0 491"));
    // The BYE at the hold time; the record counts it all.
    agent.handle_timeout(start + Duration::from_secs(30), &mut ports);
    let bye = std::iter::from_fn(|| agent.poll_transmit())
        .map(|t| Message::parse(t.data).unwrap())
        .find(|m| m.method() == Some(Method::Bye))
        .unwrap();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {from}\r\nTo: <sip:service@{UAS}>;tag=callee\r\n\
         Call-ID: {call_id}\r\nCSeq: {} BYE\r\nContent-Length: 0\r\n\r\n",
        header_value(&bye, HeaderName::Via).unwrap(),
        bye.cseq().unwrap().seq
    );
    agent.handle_datagram(
        start + Duration::from_secs(30),
        Side::Uac,
        uas,
        Bytes::from(ok),
        &mut ports,
    );
    let record = std::iter::from_fn(|| agent.poll_event())
        .find_map(|e| match e {
            Event::Ended { record, .. } => Some(record),
            _ => None,
        })
        .unwrap();
    // The retried re-INVITE never got an answer; the BYE ended the call.
    assert_eq!(record.reinvites_sent, 2);
    assert_eq!(record.reinvites_491, 1);
    assert_eq!(record.sent_491, 1);
    assert_eq!(record.outcome, Outcome::Completed, "{record:?}");
}

#[test]
fn in_dialog_requests_for_unknown_calls_get_481() {
    let start = t0();
    let mut agent = Agent::new(config(0, UasAnswer::Ok), start);
    let mut ports = Ports(20000);
    let bye = "BYE sip:callgen@127.0.0.1:5090 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n\
               From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: nope\r\nCSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n";
    let proxy: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    agent.handle_datagram(start, Side::Uas, proxy, Bytes::from(bye), &mut ports);
    let t = agent.poll_transmit().unwrap();
    assert_eq!(t.destination, proxy);
    assert!(t.data.starts_with(b"SIP/2.0 481"));
    agent.handle_datagram(
        start,
        Side::Uas,
        proxy,
        Bytes::from_static(b"garbage"),
        &mut ports,
    );
    assert_eq!(agent.progress().bad_messages, 1);
    assert!(agent.is_done(), "no UAC calls, UAS with others");
}
