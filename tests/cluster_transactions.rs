//! Transactions that straddle the failover of the active proxy (issue #15, item 3), on the LAN
//! of `cluster_support` (real keepalived, Redis, two relays): the active proxy `p1` forwards an
//! INVITE and is killed (`kill -9`) before the INVITE has its final response; the VIP moves to
//! `p2`, which holds no transaction for it — only the call's record, with the INVITE and the
//! branches it took.
//!
//! * an error response (486) after the 180: the caller gets it, its ACK reaches the callee
//!   (hop by hop, on the INVITE's branch), the relay session the INVITE made is deleted and
//!   no record is left;
//! * the caller's INVITE retransmitted to `p2` (a UA's Timer A): answered 100 and absorbed —
//!   no second INVITE to the callee, no second relay session — and the callee's 200 then
//!   anchored on the call's relay; ACK and BYE go through, nothing is left.
//!
//! Each also with the message reaching `p2` before the calls it claims on getting the VIP are
//! in (Redis frozen across the failover, as a takeover of many calls takes a while): it waits
//! for its call to be read from the store, with the same outcome.

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

mod cluster_support;
mod restart_support;
use cluster_support::*;
use restart_support::{count_received, cseq, cseq_number, eventually, header, nth_received};

/// The branch of a message's top Via.
fn top_branch(message: &str) -> String {
    header(message, "Via")
        .split(';')
        .find_map(|p| p.trim().strip_prefix("branch="))
        .unwrap_or_else(|| panic!("no branch in {message}"))
        .to_string()
}

/// How many sessions of `call_id` the relays hold, over both.
fn sessions_of(cluster: &Cluster, call_id: &str) -> usize {
    (0..RELAYS.len())
        .map(|i| {
            cluster
                .relay_calls(i)
                .iter()
                .filter(|c| c.as_str() == call_id)
                .count()
        })
        .sum()
}

/// The call records Redis holds (`anc:call:*` keys).
fn stored_calls(cluster: &Cluster) -> Vec<String> {
    cluster
        .redis
        .cli(&["--scan", "--pattern", "anc:call:*"])
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `kill -9` of the active proxy `p1` (the test's failure): first a check that the VIP is
/// still there — on a loaded machine keepalived's health check can time out and move the VIP
/// before the test kills anything, which this test does not cover.
fn kill_active_proxy(cluster: &mut Cluster) {
    assert_eq!(
        cluster.lan.vip_holder(VIP),
        Some("p1"),
        "the VIP left p1 before the kill (keepalived's check failed: see its log)"
    );
    cluster.kill_proxy("p1");
}

/// The proxy on `p1` forwards the INVITE and the callee rings; `p1` dies before the callee
/// refuses the call (486). The 486 reaches `p2`, which has no transaction for it: it goes on
/// to the caller by its Via, the caller's ACK reaches the callee on the INVITE's branch (the
/// callee's transaction matches it) with the INVITE's CSeq number, the relay session the
/// INVITE made is deleted within a second or so, and no record is left in Redis.
#[test]
fn an_error_response_after_the_failover_reaches_the_caller_and_its_ack_the_callee() {
    error_response(false);
}

/// The same, with the 486 reaching `p2` before the calls it claims when it gets the VIP are
/// in (Redis frozen across the failover until just after the 486, as a takeover of many
/// calls takes a while): the 486 waits for its call, so the relay session and the record
/// still go with it.
#[test]
fn an_error_response_before_the_takeovers_claims_are_in_still_ends_the_call() {
    error_response(true);
}

/// The 486 after the failover (see the tests above); with `claims_delayed`, Redis is frozen
/// from before `p1`'s death until 150 ms after the callee sends its 486.
fn error_response(claims_delayed: bool) {
    let mut cluster = Cluster::start();
    // The callee refuses 2.5 s after its 180.
    let (mut callee, mut caller) = cluster.call(
        "uas_ring_then_busy.xml",
        &["-m", "1", "-d", "2500"],
        "uac_busy_late.xml",
        &["-m", "1", "-timeout", "30s", "-timeout_error"],
    );
    let invite = nth_received(&callee, "INVITE ", 1, Duration::from_secs(10));
    let call_id = call_id_of(&invite);
    nth_received(&caller, "SIP/2.0 180", 1, Duration::from_secs(5));
    let ringing = Instant::now();
    assert_eq!(sessions_of(&cluster, &call_id), 1, "the INVITE anchored");
    cluster.store_caught_up("p1");
    if claims_delayed {
        cluster.redis.signal(SIGSTOP);
    }
    kill_active_proxy(&mut cluster);
    cluster.wait_vip_on("p2", Duration::from_secs(2));
    if claims_delayed {
        let resume = ringing + Duration::from_millis(2650);
        std::thread::sleep(resume.saturating_duration_since(Instant::now()));
        cluster.redis.signal(SIGCONT);
    }

    let busy = nth_received(&caller, "SIP/2.0 486", 1, Duration::from_secs(10));
    assert_eq!(call_id_of(&busy), call_id);
    let refused = Instant::now();
    eventually(
        Duration::from_millis(1500),
        "the relay session deleted after the 486",
        || (0..RELAYS.len()).all(|i| cluster.relay_calls(i).is_empty()),
    );
    println!(
        "relay session deleted {:?} after the 486",
        refused.elapsed()
    );
    caller.finish(Duration::from_secs(15)).assert_success();
    callee.finish(Duration::from_secs(15)).assert_success();

    // One ACK at the callee: the caller's, forwarded hop by hop on the INVITE's branch.
    assert_eq!(count_received(&callee, "ACK "), 1);
    let ack = nth_received(&callee, "ACK ", 1, Duration::from_secs(1));
    assert_eq!(cseq_number(&ack), cseq_number(&invite), "{ack}");
    assert!(cseq(&ack).ends_with("ACK"), "{ack}");
    assert_eq!(top_branch(&ack), top_branch(&invite), "{ack}\n{invite}");
    // The INVITE came once (or again from p1's own transaction, the same top Via).
    let via = header(&invite, "Via");
    assert!(
        callee
            .received_so_far()
            .iter()
            .filter(|m| m.starts_with("INVITE "))
            .all(|m| header(m, "Via") == via),
        "{:#?}",
        callee.received_so_far()
    );
    assert_eq!(count_received(&caller, "SIP/2.0 486"), 1);
    eventually(Duration::from_secs(2), "no call record left", || {
        stored_calls(&cluster).is_empty()
    });
    let p2 = cluster.proxy("p2");
    let view = api_get(&cluster.lan, p2, "/v1/cluster");
    assert_eq!(
        (view["role"].as_str(), &view["dialogs"]),
        (Some("active"), &0.into()),
        "{view}"
    );
    if claims_delayed {
        let log = p2.daemon.log();
        assert!(
            log.contains("call loaded from the store on demand"),
            "{log}"
        );
    }
}

/// A bare UDP SIP party on the `phones` host (a socket made in its namespace), keeping every
/// message it received.
struct Phone {
    socket: UdpSocket,
    addr: SocketAddr,
    received: RefCell<Vec<String>>,
}

impl Phone {
    fn bind(cluster: &Cluster, port: u16) -> Phone {
        let host = cluster.lan.host("phones");
        let addr = SocketAddr::new(host.addr(), port);
        let socket = host.run(|| UdpSocket::bind(addr).expect("a UDP socket on phones"));
        Phone {
            socket,
            addr,
            received: RefCell::new(Vec::new()),
        }
    }

    fn send(&self, data: &str, to: SocketAddr) {
        self.socket.send_to(data.as_bytes(), to).expect("sent");
    }

    /// The next message starting with `start` within `timeout` (anything else received
    /// meanwhile is kept too), and its source; `None` on timeout.
    fn try_expect(&self, start: &str, timeout: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65535];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket.set_read_timeout(Some(left)).expect("a timeout");
            let Ok((n, from)) = self.socket.recv_from(&mut buf) else {
                return None;
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.received.borrow_mut().push(m.clone());
            if m.starts_with(start) {
                return Some((m, from));
            }
        }
    }

    fn expect(&self, start: &str, timeout: Duration) -> (String, SocketAddr) {
        self.try_expect(start, timeout).unwrap_or_else(|| {
            panic!(
                "no {start} at {} within {timeout:?}; received {:#?}",
                self.addr,
                self.received.borrow()
            )
        })
    }

    /// Takes whatever arrives for `period`.
    fn listen(&self, period: Duration) {
        let _ = self.try_expect("\u{0}never", period);
    }

    fn count(&self, start: &str) -> usize {
        self.received
            .borrow()
            .iter()
            .filter(|m| m.starts_with(start))
            .count()
    }

    /// A response to `request` copying its Vias, Record-Routes, From, To (with `to_tag` when
    /// it has none), Call-ID and CSeq, then `rest` (headers, blank line, body).
    fn response(request: &str, status: &str, to_tag: &str, rest: &str) -> String {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in request.lines().skip(1) {
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let name = line.split(':').next().unwrap_or("").trim();
            let is = |h: &str| name.eq_ignore_ascii_case(h);
            if is("To") && !line.contains(";tag=") {
                out.push_str(&format!("{line};tag={to_tag}\r\n"));
            } else if ["Via", "Record-Route", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|h| is(h))
            {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.push_str(rest);
        out
    }
}

/// Every INVITE `callee` received is `first` (the INVITE `p1` forwarded) or a retransmission
/// of it by `p1` (the same top Via: `p1`'s branch and node id) — none forwarded by `p2`.
fn assert_forwarded_once(callee: &Phone, first: &str) {
    let via = header(first, "Via").to_string();
    assert!(via.contains("nid=p1"), "{first}");
    let received = callee.received.borrow();
    let invites: Vec<&String> = received
        .iter()
        .filter(|m| m.starts_with("INVITE "))
        .collect();
    assert!(
        invites.iter().all(|m| header(m, "Via") == via),
        "an INVITE at the callee not from p1's transaction: {invites:#?}"
    );
}

/// The Record-Route entries of a response, in order.
fn record_routes(message: &str) -> Vec<String> {
    message
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case("Record-Route").then(|| {
                v.split(',')
                    .map(|r| r.trim().to_string())
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect()
}

/// The URI in a Contact header's `<…>`.
fn contact_uri(message: &str) -> String {
    let c = header(message, "Contact");
    c.split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(uri, _)| uri.to_string())
        .unwrap_or_else(|| panic!("no Contact in {message}"))
}

/// The caller sends its INVITE to `p1`, which answers 100 and forwards it (anchored on a
/// relay); the callee stays silent. `p1` dies, the VIP moves, and the caller's INVITE — the
/// same bytes, as its Timer A would send them — reaches `p2`, once right after the VIP moved
/// and once a second later: `p2` answers 100 and forwards nothing — the callee gets no
/// INVITE from `p2`, the relays hold one session for the call. The callee's 200 is anchored by `p2` on
/// the call's relay (the caller gets the relay's address and port), and the ACK and the BYE
/// go through; at the end no relay session and no record are left.
#[test]
fn an_invite_retransmitted_to_the_new_node_is_absorbed_not_anchored_again() {
    retransmitted_invite(false);
}

/// The same, with the first retransmission reaching `p2` before the calls it claims when it
/// gets the VIP are in (Redis frozen across the failover, as a takeover of many calls takes a
/// while): `p2` holds the INVITE — no 100, nothing forwarded — until the store answers for
/// its call, then absorbs it.
#[test]
fn an_invite_retransmitted_before_the_takeovers_claims_are_in_waits_for_its_call() {
    retransmitted_invite(true);
}

/// The INVITE retransmitted to `p2` (see the tests above); with `claims_delayed`, Redis is
/// frozen from before `p1`'s death until 150 ms after the first retransmission.
fn retransmitted_invite(claims_delayed: bool) {
    let mut cluster = Cluster::start();
    let caller = Phone::bind(&cluster, 5080);
    let callee = Phone::bind(&cluster, 5070);
    let phones = cluster.lan.host("phones").addr();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let call_id = format!("retrans-{nonce}@{phones}");
    let sdp = format!(
        "v=0\r\no=caller 1 1 IN IP4 {phones}\r\ns=-\r\nc=IN IP4 {phones}\r\nt=0 0\r\n\
         m=audio 6002 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n"
    );
    let from = format!("From: <sip:caller@{phones}:5080>;tag=caller-{nonce}\r\n");
    let invite = format!(
        "INVITE sip:callee@{callee_addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {caller_addr};branch=z9hG4bK-invite-{nonce};rport\r\n\
         {from}\
         To: <sip:callee@{callee_addr}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{caller_addr}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        callee_addr = callee.addr,
        caller_addr = caller.addr,
        len = sdp.len(),
    );
    caller.send(&invite, sip());
    caller.expect("SIP/2.0 100", Duration::from_secs(2));
    let (forwarded, hop) = callee.expect("INVITE ", Duration::from_secs(5));
    let (relay_ip, relay_port) = media_of(&forwarded);
    let relay = relay_of_port(relay_port);
    eventually(Duration::from_secs(2), "the INVITE anchored", || {
        sessions_of(&cluster, &call_id) == 1
    });
    cluster.store_caught_up("p1");
    if claims_delayed {
        cluster.redis.signal(SIGSTOP);
    }
    kill_active_proxy(&mut cluster);
    cluster.wait_vip_on("p2", Duration::from_secs(2));

    // Timer A: the same bytes again, at once and a second later.
    for n in 0..2 {
        caller.send(&invite, sip());
        if claims_delayed && n == 0 {
            // Held until the store answers for the call (well within the store's timeout).
            let early = caller.try_expect("SIP/2.0 100", Duration::from_millis(150));
            assert!(
                early.is_none(),
                "answered before its call was in: {early:?}"
            );
            cluster.redis.signal(SIGCONT);
        }
        let (trying, source) = caller.expect("SIP/2.0 100", Duration::from_secs(2));
        assert_eq!(source, sip(), "{trying}");
        assert_eq!(header(&trying, "Call-ID"), call_id, "{trying}");
        callee.listen(Duration::from_secs(1));
    }
    // The callee got p1's INVITE only: p1's own Timer A may have sent it again while the
    // callee was silent (the same top Via, p1's branch), but p2 forwarded nothing.
    assert_forwarded_once(&callee, &forwarded);
    assert_eq!(
        caller
            .received
            .borrow()
            .iter()
            .filter(|m| !m.starts_with("SIP/2.0 100"))
            .count(),
        0,
        "only 100s before the callee answers: {:#?}",
        caller.received.borrow()
    );
    assert_eq!(sessions_of(&cluster, &call_id), 1, "anchored a second time");
    let p2 = cluster.proxy("p2");
    let log = p2.daemon.log();
    assert!(
        log.contains("the INVITE another node forwarded, retransmitted here"),
        "{log}"
    );
    if claims_delayed {
        assert!(
            log.contains("call loaded from the store on demand"),
            "{log}"
        );
    }

    // The callee answers (retransmitting its 200 until the caller has it, as Timer G would).
    let answer_sdp = format!(
        "v=0\r\no=callee 1 1 IN IP4 {phones}\r\ns=-\r\nc=IN IP4 {phones}\r\nt=0 0\r\n\
         m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n"
    );
    let callee_tag = format!("callee-{nonce}");
    let ok_from_callee = Phone::response(
        &forwarded,
        "200 OK",
        &callee_tag,
        &format!(
            "Contact: <sip:callee@{}>\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\n\r\n{answer_sdp}",
            callee.addr,
            answer_sdp.len()
        ),
    );
    let mut ok = None;
    for _ in 0..6 {
        callee.send(&ok_from_callee, hop);
        ok = caller.try_expect("SIP/2.0 200", Duration::from_millis(500));
        if ok.is_some() {
            break;
        }
    }
    let (ok, _) = ok.unwrap_or_else(|| panic!("no 200 at the caller: {}", p2.daemon.log()));
    let (ip, port) = media_of(&ok);
    assert_eq!(
        (ip.as_str(), relay_of_port(port)),
        (relay_ip.as_str(), relay),
        "the 200 not anchored on the call's relay: {ok}"
    );
    assert_eq!(sessions_of(&cluster, &call_id), 1);

    // ACK and BYE along the route set the 200 brought.
    let routes: String = record_routes(&ok)
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    assert!(!routes.is_empty(), "no Record-Route in {ok}");
    let target = contact_uri(&ok);
    let to = format!("To: {}\r\n", header(&ok, "To"));
    let request = |method: &str, n: u32, branch: &str| {
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {caller_addr};branch=z9hG4bK-{branch}-{nonce};rport\r\n\
             {routes}{from}{to}\
             Call-ID: {call_id}\r\n\
             CSeq: {n} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            caller_addr = caller.addr,
        )
    };
    caller.send(&request("ACK", 1, "ack"), sip());
    let (ack, _) = callee.expect("ACK ", Duration::from_secs(5));
    assert_eq!(cseq_number(&ack), 1, "{ack}");
    std::thread::sleep(Duration::from_millis(300));
    caller.send(&request("BYE", 2, "bye"), sip());
    let (bye, bye_hop) = callee.expect("BYE ", Duration::from_secs(5));
    callee.send(
        &Phone::response(&bye, "200 OK", &callee_tag, "Content-Length: 0\r\n\r\n"),
        bye_hop,
    );
    let (bye_ok, _) = caller.expect("SIP/2.0 200", Duration::from_secs(5));
    assert_eq!(cseq(&bye_ok), "2 BYE", "{bye_ok}");

    assert_forwarded_once(&callee, &forwarded);
    assert_eq!(callee.count("ACK "), 1);
    cluster.assert_call_gone(&call_id, &[0, 1]);
    eventually(Duration::from_secs(2), "no call record left", || {
        stored_calls(&cluster).is_empty()
    });
}
