//! A relay failure never takes the proxy down and never loses a call it could keep: the
//! death of the only relay of a set with many calls, calls waiting for a relay and moved when
//! one comes back, the failure detector (refused, silent, slow but alive), and 503s with
//! Retry-After for new calls it cannot carry.

mod support;

use std::time::{Duration, Instant};

use anchorage_sip::Method;
use support::{Bench, Relay};

const ONE_RELAY: &str = "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }]\n\n[proxy.media]\nset = \"m\"\n";
const TWO_RELAYS: &str = "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n";

fn status_line(m: &anchorage_sip::Message) -> String {
    let bytes = m.bytes();
    let line = bytes.split(|b| *b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(line).into_owned()
}

fn node_up(b: &Bench, name: &str) -> bool {
    b.proxy
        .relays()
        .nodes()
        .iter()
        .any(|n| n.name == name && n.up)
}

/// Advances the clock in `step`s until `name`'s state is `up` (or `limit` passes); returns
/// the time it took.
fn time_until_state(
    b: &mut Bench,
    name: &str,
    up: bool,
    step: Duration,
    limit: Duration,
) -> Duration {
    let start = b.now;
    while node_up(b, name) != up {
        assert!(
            b.now.saturating_duration_since(start) < limit,
            "{name} still {} after {limit:?}",
            if up { "down" } else { "up" }
        );
        b.advance(step);
    }
    b.now.saturating_duration_since(start)
}

/// The relay at `ng` answers again; waits until `name` is up.
fn relay_back(b: &mut Bench, ng: &str, name: &str) {
    b.set_relay(ng, Relay::Answers);
    time_until_state(
        b,
        name,
        true,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
}

/// The relay at `ng` fails as `how`; waits until `name` is down.
fn relay_fails(b: &mut Bench, ng: &str, name: &str, how: Relay) {
    b.set_relay(ng, how);
    time_until_state(
        b,
        name,
        false,
        Duration::from_millis(50),
        Duration::from_secs(2),
    );
}

#[test]
fn the_death_of_the_only_relay_with_100000_calls_keeps_every_call_on_a_flat_stack() {
    // The core runs on a thread with a small stack: a pump that recursed once per queued call
    // (finish → pump → begin → step → offer → finish …) overflowed it with a few thousand.
    let handle = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let calls_env = std::env::var("RELAY_FAILURE_CALLS")
                .ok()
                .and_then(|v| v.parse().ok());
            // RELAY_FAILURE_CALLS runs it smaller while profiling.
            let calls: usize = calls_env.unwrap_or(100_000);
            let mut b = Bench::new(ONE_RELAY);
            for i in 0..calls {
                b.place_call(&format!("c{i}"));
            }
            assert_eq!(b.proxy.relays().nodes()[0].calls, calls);
            b.take_ng();
            let timers_before = b.proxy.timer_queue_len();
            // The relay dies without a word (no ICMP): down after its window.
            b.set_relay("127.0.0.1:2223", Relay::Silent);
            // Wall time of the test itself (not the core's clock), for the report line.
            #[allow(clippy::disallowed_methods)]
            let started = Instant::now();
            let took = time_until_state(
                &mut b,
                "r1",
                false,
                Duration::from_millis(50),
                Duration::from_secs(2),
            );
            assert!(took <= Duration::from_millis(850), "down after {took:?}");
            // The job paces through every call (5,000 per second by default).
            let mut job = None;
            for _ in 0..200 {
                job = b.proxy.jobs().into_iter().find(|j| j.total == calls);
                if job.as_ref().is_some_and(|j| j.finished.is_some()) {
                    break;
                }
                b.advance(Duration::from_millis(250));
            }
            let job = job.expect("a job for the dead node's calls");
            assert!(job.finished.is_some(), "{job:?}");
            assert_eq!(
                (job.done, job.failed, job.waiting),
                (0, 0, calls),
                "{job:?}"
            );
            // Every call is kept, waiting for a relay; nothing was ended or deleted.
            assert_eq!(b.proxy.waiting_calls(), calls);
            assert_eq!(b.proxy.dialogs().len(), calls);
            assert!(b.take_sip().iter().all(|m| m.method() != Some(Method::Bye)));
            assert!(b.take_ng().is_empty(), "nothing is sent to a dead node");
            // Memory stays bounded: the moves left no timer per call behind them.
            let timers_after = b.proxy.timer_queue_len();
            assert!(
                timers_after <= timers_before + 1_000,
                "{timers_before} timers before, {timers_after} after"
            );
            let elapsed = started.elapsed();
            // The relay comes back: every waiting call is moved onto it, in one job.
            b.set_relay("127.0.0.1:2223", Relay::Answers);
            time_until_state(
                &mut b,
                "r1",
                true,
                Duration::from_millis(50),
                Duration::from_secs(2),
            );
            let recovery = b
                .proxy
                .jobs()
                .into_iter()
                .find(|j| j.trigger.as_str() == "relay_available")
                .expect("a job for the waiting calls");
            assert_eq!(recovery.total, calls);
            let offers = b
                .take_ng()
                .iter()
                .filter(|n| matches!(n.request.kind, anchorage_ng::RequestKind::Offer(_)))
                .count();
            assert!(offers > 0 && offers <= 5_000, "paced offers: {offers}");
            elapsed
        })
        .expect("a test thread");
    let elapsed = handle.join().expect("no stack overflow, no panic");
    eprintln!("100,000 calls queued, waited and counted in {elapsed:?}");
}

#[test]
fn a_waiting_call_is_moved_back_onto_its_relay_when_it_returns_and_a_bye_still_goes_through() {
    let mut b = Bench::new(ONE_RELAY);
    let rr1 = b.place_call("w1");
    let rr2 = b.place_call("w2");
    b.take_ng();
    b.set_relay("127.0.0.1:2223", Relay::Refuses);
    // Refused twice (the confirmation ping) → down at once: no silence window.
    let took = time_until_state(
        &mut b,
        "r1",
        false,
        Duration::from_millis(10),
        Duration::from_millis(300),
    );
    assert!(took <= Duration::from_millis(220), "{took:?}");
    let r1 = &b.proxy.relays().nodes()[0];
    assert_eq!(r1.down_reason.map(|r| r.as_str()), Some("refused"));
    b.advance(Duration::from_millis(100));
    assert_eq!(b.proxy.waiting_calls(), 2);
    assert!(b.proxy.waiting_since("w1").is_some());
    // A new call cannot be anchored: 503 with Retry-After, never direct media.
    let finals = b.try_call("new1");
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert_eq!(finals[0].status(), Some(503));
    let retry = finals[0]
        .headers_named(b"Retry-After")
        .next()
        .map(|h| String::from_utf8_lossy(h.value()).into_owned());
    assert_eq!(retry.as_deref(), Some("5"));
    assert!(b.take_ng().iter().all(|n| n.to.port() != 2223));
    // The callee hangs up w2 while it waits: the BYE reaches the caller, nothing goes to the
    // dead relay, and its session there is deleted when it is back.
    let sent = b.callee_bye("w2", &rr2, 2);
    assert!(
        sent.iter()
            .any(|(to, m)| to.port() == 5070 && m.method() == Some(Method::Bye)),
        "{sent:?}"
    );
    assert_eq!(b.proxy.waiting_calls(), 1);
    assert!(b.take_ng().is_empty());
    // The relay process is back (its sessions are gone): w1 gets a new session there and
    // both parties a re-INVITE naming it.
    relay_back(&mut b, "127.0.0.1:2223", "r1");
    b.advance(Duration::from_millis(10));
    let ng = b.take_ng();
    let deletes: Vec<_> = ng
        .iter()
        .filter_map(|n| match &n.request.kind {
            anchorage_ng::RequestKind::Delete(d) => Some(d.call_id.0.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deletes, vec!["w2".to_string()], "{ng:?}");
    let offers: Vec<_> = ng
        .iter()
        .filter_map(|n| match &n.request.kind {
            anchorage_ng::RequestKind::Offer(o) => Some((n.to.port(), o.call_id.0.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(offers, vec![(2223, "w1".to_string())]);
    let sent = b.take_sip_with_destination();
    let reinvites: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.method() == Some(Method::Invite))
        .collect();
    assert_eq!(reinvites.len(), 2, "{sent:?}");
    for (_, m) in &reinvites {
        let body = String::from_utf8_lossy(m.body()).into_owned();
        assert!(
            body.contains("c=IN IP4 127.0.0.1"),
            "names the relay: {body}"
        );
    }
    assert_eq!(b.answer_invites(&sent), 2);
    b.advance(Duration::from_millis(10));
    assert_eq!(b.proxy.waiting_calls(), 0);
    let call = b.proxy.anchored_call("w1").expect("w1 still anchored");
    assert_eq!(call.node, "r1");
    assert!(
        b.take_ng()
            .iter()
            .all(|n| !matches!(n.request.kind, anchorage_ng::RequestKind::Delete(_))),
        "the new session on the same node is not deleted"
    );
    // The caller's BYE after all this still ends the call.
    let _ = rr1;
}

#[test]
fn waiting_calls_go_to_another_node_of_their_set_when_one_comes_up() {
    let mut b = Bench::new(TWO_RELAYS);
    relay_fails(&mut b, "127.0.0.1:2224", "r2", Relay::Silent);
    b.place_call("x1");
    assert_eq!(b.proxy.anchored_call("x1").unwrap().node, "r1");
    b.take_ng();
    relay_fails(&mut b, "127.0.0.1:2223", "r1", Relay::Silent);
    b.advance(Duration::from_millis(100));
    assert_eq!(b.proxy.waiting_calls(), 1);
    relay_back(&mut b, "127.0.0.1:2224", "r2");
    b.advance(Duration::from_millis(10));
    let sent = b.take_sip_with_destination();
    assert_eq!(b.answer_invites(&sent), 2, "{sent:?}");
    b.advance(Duration::from_millis(10));
    assert_eq!(b.proxy.anchored_call("x1").unwrap().node, "r2");
    assert_eq!(b.proxy.waiting_calls(), 0);
}

#[test]
fn waiting_calls_are_ended_after_the_give_up_time_when_one_is_set() {
    let mut b = Bench::new(&format!("{ONE_RELAY}\n[proxy.reanchor]\ngive_up_s = 30\n"));
    b.place_call("g1");
    relay_fails(&mut b, "127.0.0.1:2223", "r1", Relay::Silent);
    b.advance(Duration::from_secs(29));
    assert_eq!(b.proxy.waiting_calls(), 1);
    assert!(b.take_sip().iter().all(|m| m.method() != Some(Method::Bye)));
    b.advance(Duration::from_secs(2));
    assert_eq!(b.proxy.waiting_calls(), 0);
    // One BYE to each party (with its retransmissions, as nobody answers here).
    let mut byes: Vec<(u16, String)> = b
        .take_sip_with_destination()
        .into_iter()
        .filter(|(_, m)| m.method() == Some(Method::Bye))
        .map(|(to, m)| (to.port(), format!("{:?}", m.cseq().map(|c| c.seq))))
        .collect();
    byes.sort();
    byes.dedup();
    assert_eq!(byes.len(), 2, "a BYE to each party: {byes:?}");
    assert!(byes.iter().any(|(p, _)| *p == 9) && byes.iter().any(|(p, _)| *p == 5070));
    assert!(b.proxy.anchored_call("g1").is_none());
}

#[test]
fn a_relay_answering_every_request_late_is_slow_not_dead() {
    let mut b = Bench::new(ONE_RELAY);
    // Replies take 300–500 ms, more than the 200 ms ping interval and close to the 600 ms
    // minimum window: the node lives, its window widens with its round trips.
    for (i, delay) in [300u64, 500, 400, 450, 350, 500, 300, 480]
        .iter()
        .cycle()
        .take(80)
        .enumerate()
    {
        b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(*delay)));
        b.advance(Duration::from_millis(100));
        assert!(
            node_up(&b, "r1"),
            "declared down at step {i} ({delay} ms replies)"
        );
    }
    let r1 = &b.proxy.relays().nodes()[0];
    let window = r1.window(&b.proxy.relay_health());
    assert!(
        window > Duration::from_millis(600),
        "window adapted: {window:?}"
    );
    // New calls still go through it.
    b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(400)));
    b.take_sip();
    assert!(b.try_call("slow1").is_empty());
    b.advance(Duration::from_secs(1));
    assert!(b
        .take_sip_with_destination()
        .iter()
        .any(|(to, m)| to.port() == 9 && m.method() == Some(Method::Invite)));
    assert!(node_up(&b, "r1"));
}

#[test]
fn a_silent_relay_is_down_after_its_window_and_a_late_reply_is_evidence_of_life() {
    let mut b = Bench::new(TWO_RELAYS);
    b.advance(Duration::from_millis(500));
    b.set_relay("127.0.0.1:2223", Relay::Silent);
    let took = time_until_state(
        &mut b,
        "r1",
        false,
        Duration::from_millis(10),
        Duration::from_secs(1),
    );
    // The first unanswered ping leaves within one interval; the window is 3 intervals.
    assert!(
        took >= Duration::from_millis(400) && took <= Duration::from_millis(810),
        "{took:?}"
    );
    let r1 = &b.proxy.relays().nodes()[0];
    assert_eq!(r1.down_reason.map(|r| r.as_str()), Some("timed_out"));
    // r2 answers its pings late, after each has been given up (5 s): still alive, because a
    // late reply is a reply.
    b.set_relay("127.0.0.1:2224", Relay::Slow(Duration::from_millis(550)));
    b.advance(Duration::from_secs(10));
    assert!(node_up(&b, "r2"));
}

#[test]
fn over_the_transaction_bound_a_new_call_gets_503_and_a_call_in_progress_is_served() {
    let mut b = Bench::new(&format!(
        "{ONE_RELAY}\n[proxy.overload]\nmax_transactions = 3\nretry_after_s = 7\n"
    ));
    let rr = b.place_call("o1");
    // o1's INVITE transaction lingers (Timer L): with two more the bound is reached.
    b.place_call("o2");
    b.place_call("o3");
    let finals = b.try_call("o4");
    assert_eq!(finals.len(), 1);
    assert_eq!(finals[0].status(), Some(503));
    assert!(status_line(&finals[0]).ends_with(" Overloaded"));
    let retry = finals[0]
        .headers_named(b"Retry-After")
        .next()
        .map(|h| String::from_utf8_lossy(h.value()).into_owned());
    assert_eq!(retry.as_deref(), Some("7"));
    assert_eq!(b.proxy.counters().overload_rejected, 1);
    // A BYE is still served.
    let sent = b.callee_bye("o1", &rr, 2);
    assert!(sent
        .iter()
        .any(|(to, m)| to.port() == 5070 && m.method() == Some(Method::Bye)));
    // The load drops (transactions end): new calls are taken again.
    b.advance(Duration::from_secs(40));
    b.take_sip();
    let finals = b.try_call("o5");
    assert!(finals.is_empty(), "o5 is being set up: {finals:?}");
}

#[test]
fn a_proxy_far_behind_its_input_sheds_new_calls_only() {
    let mut b = Bench::new(ONE_RELAY);
    let rr = b.place_call("d1");
    b.proxy.set_input_delay(Duration::from_millis(800));
    let finals = b.try_call("d2");
    assert_eq!(finals.first().and_then(|m| m.status()), Some(503));
    let sent = b.callee_bye("d1", &rr, 2);
    assert!(sent
        .iter()
        .any(|(to, m)| to.port() == 5070 && m.method() == Some(Method::Bye)));
    b.proxy.set_input_delay(Duration::from_millis(5));
    assert!(b.try_call("d3").is_empty());
}

#[test]
fn a_busy_relay_gets_no_new_calls_and_they_are_refused_with_503_busy() {
    let mut b = Bench::new(&format!(
        "{ONE_RELAY}\n[proxy.overload]\nmax_pending_ng = 2\n"
    ));
    b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(300)));
    assert!(b.try_call("p1").is_empty());
    assert!(b.try_call("p2").is_empty());
    let finals = b.try_call("p3");
    assert_eq!(finals.first().and_then(|m| m.status()), Some(503));
    assert!(status_line(&finals[0]).ends_with(" Media Relays Busy"));
    b.advance(Duration::from_millis(400));
    assert!(node_up(&b, "r1"), "busy is not dead");
    assert!(b.try_call("p4").is_empty(), "taken again once it caught up");
}

#[test]
fn a_relay_out_of_ports_is_skipped_for_the_next_node_then_the_call_gets_503() {
    let mut b = Bench::new(TWO_RELAYS);
    b.set_relay(
        "127.0.0.1:2223",
        Relay::Errors(anchorage_ng::ErrorReason::RanOutOfPorts),
    );
    // r1 has no ports: the offer goes on to r2 and the call is anchored there.
    b.place_call("q1");
    assert_eq!(b.proxy.anchored_call("q1").unwrap().node, "r2");
    let tried: Vec<u16> = b
        .take_ng()
        .iter()
        .filter(|n| matches!(n.request.kind, anchorage_ng::RequestKind::Offer(_)))
        .map(|n| n.to.port())
        .collect();
    assert!(tried.contains(&2224), "{tried:?}");
    // Neither has ports: 503 with Retry-After, and neither node is taken for dead.
    b.set_relay(
        "127.0.0.1:2224",
        Relay::Errors(anchorage_ng::ErrorReason::RanOutOfPorts),
    );
    let finals = b.try_call("q2");
    assert_eq!(finals.first().and_then(|m| m.status()), Some(503));
    assert!(finals[0].headers_named(b"Retry-After").next().is_some());
    b.advance(Duration::from_secs(2));
    assert!(node_up(&b, "r1") && node_up(&b, "r2"));
}

#[test]
fn an_offer_given_up_on_is_deleted_on_its_node_when_the_call_goes_to_another() {
    let mut b = Bench::new(TWO_RELAYS);
    // r1 answers its pings but drops offers: the proxy gives up after the ng timeout (1 s) and
    // tries r2. r1 may still carry the offer out late: a delete for the call follows it there.
    b.set_relay("127.0.0.1:2223", Relay::PingsOnly);
    assert!(b.try_call("late1").is_empty());
    b.advance(Duration::from_millis(1_100));
    let ng = b.take_ng();
    let kinds: Vec<(u16, &'static str)> = ng
        .iter()
        .map(|n| {
            let kind = match n.request.kind {
                anchorage_ng::RequestKind::Offer(_) => "offer",
                anchorage_ng::RequestKind::Delete(_) => "delete",
                _ => "other",
            };
            (n.to.port(), kind)
        })
        .collect();
    // The first offer to r1 (retransmitted), then the delete to r1, then the offer to r2.
    assert!(kinds.contains(&(2223, "delete")), "{kinds:?}");
    assert!(kinds.contains(&(2224, "offer")), "{kinds:?}");
    let delete_at = kinds.iter().position(|k| *k == (2223, "delete"));
    let last_offer_to_r1 = kinds.iter().rposition(|k| *k == (2223, "offer"));
    assert!(delete_at > last_offer_to_r1, "{kinds:?}");
    assert!(node_up(&b, "r1"), "dropping offers is not being dead");
    let sent = b.take_sip_with_destination();
    assert!(
        sent.iter()
            .any(|(to, m)| to.port() == 9 && m.method() == Some(Method::Invite)),
        "the call went on through r2"
    );
}

#[test]
fn a_move_whose_new_node_dies_under_it_deletes_that_session_only_once_the_node_is_back() {
    let mut b = Bench::new(TWO_RELAYS);
    b.place_call("m1");
    assert_eq!(
        b.proxy.anchored_call("m1").map(|c| c.node),
        Some("r1".to_string())
    );
    b.take_ng();
    // r2 drops the move's offer and then dies: the move fails, and the session r2 may have
    // made is not deleted into the void while r2 is down.
    b.set_relay("127.0.0.1:2224", Relay::PingsOnly);
    let now = b.now;
    b.proxy.drain_relay("r1", now).unwrap();
    b.advance(Duration::from_millis(50));
    relay_fails(&mut b, "127.0.0.1:2224", "r2", Relay::Refuses);
    b.advance(Duration::from_millis(1_500));
    let is_delete_to_r2 = |n: &support::NgSent| {
        n.to.port() == 2224 && matches!(n.request.kind, anchorage_ng::RequestKind::Delete(_))
    };
    let sent = b.take_ng();
    assert!(
        sent.iter().any(|n| n.to.port() == 2224
            && matches!(n.request.kind, anchorage_ng::RequestKind::Offer(_))),
        "the move's offer went to r2"
    );
    assert!(
        !sent.iter().any(is_delete_to_r2),
        "no delete to a dead node"
    );
    assert_eq!(
        b.proxy.anchored_call("m1").map(|c| c.node),
        Some("r1".to_string()),
        "the call stays on its (drained, living) relay"
    );
    // r2 is back: the delete follows.
    relay_back(&mut b, "127.0.0.1:2224", "r2");
    b.advance(Duration::from_millis(100));
    assert!(b.take_ng().iter().any(is_delete_to_r2));
}
