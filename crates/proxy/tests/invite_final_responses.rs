//! Every INVITE the proxy takes ends in a final response, whatever fails on the way: a fork
//! branch that cannot be forwarded after its relay offer (no address, no listener for it), a
//! fork whose every offer is refused, a fork to host names, and a CANCEL that arrives while
//! the INVITE still waits for its relay or after its branch went silent, and a branch that
//! Timer C cancelled. None of them leaves a relay session behind.

mod support;

use std::time::Duration;

use anchorage_sip::Method;
use support::{cancel, finals, invite, Bench, Relay, CALLEE, CALLER};

const RELAY: &str = "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }]\n\n[proxy.media]\nset = \"m\"\n";

/// [`RELAY`] with a rule forking every request in parallel to `destinations` (TOML inline
/// tables).
fn forking_to(destinations: &str) -> String {
    format!(
        "{RELAY}\n[[proxy.route]]\nname = \"f\"\nfork = \"parallel\"\ndestinations = [{destinations}]\n"
    )
}

/// The `via-branch`es of the ng deletes among `sent` (retransmissions counted once).
fn branch_deletes(sent: &[support::NgSent]) -> Vec<String> {
    let mut deleted: Vec<String> = sent
        .iter()
        .filter_map(|n| match &n.request.kind {
            anchorage_ng::RequestKind::Delete(d) => d.via_branch.as_ref().map(|b| b.0.clone()),
            _ => None,
        })
        .collect();
    deleted.sort();
    deleted.dedup();
    deleted
}

/// Whether any ng delete of the whole call (no `via-branch`) is among `sent`.
fn call_deleted(sent: &[support::NgSent]) -> bool {
    sent.iter().any(|n| {
        matches!(&n.request.kind, anchorage_ng::RequestKind::Delete(d) if d.via_branch.is_none())
    })
}

/// The distinct final responses among what the proxy sent (over UDP a final response is
/// retransmitted until its ACK).
fn distinct_finals(sent: &[anchorage_sip::Message]) -> Vec<(u16, String, String)> {
    let mut all = finals(sent);
    all.sort();
    all.dedup();
    all
}

fn calls_on_relays(b: &Bench) -> usize {
    b.proxy.relays().nodes().iter().map(|n| n.calls).sum()
}

#[test]
fn a_fork_whose_every_branch_has_no_listener_is_answered_500_and_leaves_no_session() {
    // IPv6 destinations, and the proxy listens on IPv4 only: neither branch can be forwarded
    // once its relay offer is back.
    let mut b = Bench::new(&forking_to(
        "{ host = \"2001:db8::5\", port = 5060 }, { host = \"2001:db8::6\", port = 5060 }",
    ));
    b.receive(&invite("f1"), CALLER);
    let sent = b.take_sip();
    assert!(!sent.iter().any(|m| m.method() == Some(Method::Invite)));
    assert_eq!(
        distinct_finals(&sent),
        [(500, "INVITE".into(), "Fork Branch Not Forwarded".into())]
    );
    let ng = b.take_ng();
    assert_eq!(branch_deletes(&ng), ["fork0", "fork1"]);
    assert!(call_deleted(&ng), "the failed call's session is deleted");
    assert_eq!(calls_on_relays(&b), 0);
}

#[test]
fn a_fork_branch_without_a_listener_gives_up_its_session_and_the_other_branch_goes_on() {
    let mut b = Bench::new(&forking_to(
        "{ host = \"127.0.0.1\", port = 9 }, { host = \"2001:db8::6\", port = 5060 }",
    ));
    b.receive(&invite("f2"), CALLER);
    let sent = b.take_sip_with_destination();
    let invites: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.method() == Some(Method::Invite))
        .map(|(to, _)| to.to_string())
        .collect();
    assert_eq!(invites, [CALLEE]);
    let messages: Vec<_> = sent.into_iter().map(|(_, m)| m).collect();
    assert!(
        distinct_finals(&messages).is_empty(),
        "the other branch answers"
    );
    assert_eq!(branch_deletes(&b.take_ng()), ["fork1"]);
    assert_eq!(calls_on_relays(&b), 1);
}

#[test]
fn a_fork_whose_every_offer_goes_unanswered_is_answered_503() {
    let mut b = Bench::new(&forking_to(
        "{ host = \"127.0.0.1\", port = 9 }, { host = \"127.0.0.1\", port = 10 }",
    ));
    b.set_relay("127.0.0.1:2223", Relay::Silent);
    b.receive(&invite("f3"), CALLER);
    b.advance(Duration::from_secs(30));
    let sent = b.take_sip();
    assert!(!sent.iter().any(|m| m.method() == Some(Method::Invite)));
    assert_eq!(
        distinct_finals(&sent),
        [(503, "INVITE".into(), "Media Relay Failed".into())]
    );
    assert_eq!(calls_on_relays(&b), 0);
}

#[test]
fn a_fork_to_host_names_is_resolved_and_forwarded_not_stranded() {
    // A fork branch is forwarded straight from its relay reply, which cannot wait for DNS: a
    // set with names takes the one-session path, which resolves them (RFC 3263).
    let mut b = Bench::new(&forking_to(
        "{ host = \"a.example.com\", port = 5060 }, { host = \"b.example.com\", port = 5060 }",
    ));
    b.receive(&invite("f4"), CALLER);
    let query = b.proxy.poll_resolve().expect("a.example.com is resolved");
    assert_eq!(query.name, "a.example.com");
    let now = b.now;
    b.proxy.handle_resolved(
        query.id,
        Ok(vec![(
            CALLEE.parse().unwrap(),
            anchorage_proxy::Transport::Udp,
        )]),
        now,
    );
    b.settle();
    let sent = b.take_sip_with_destination();
    assert!(sent
        .iter()
        .any(|(to, m)| m.method() == Some(Method::Invite) && to.to_string() == CALLEE));
}

#[test]
fn an_invite_cancelled_while_its_relay_offer_is_pending_is_answered_487_and_leaves_no_session() {
    let mut b = Bench::new(RELAY);
    b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(300)));
    b.receive(&invite("c1"), CALLER);
    b.receive(&cancel("c1"), CALLER);
    assert_eq!(
        distinct_finals(&b.take_sip()),
        [
            (200, "CANCEL".into(), "OK".into()),
            (487, "INVITE".into(), "Request Terminated".into())
        ]
    );
    // The relay's late reply: its session goes, and nothing is forwarded.
    b.advance(Duration::from_secs(1));
    assert!(!b
        .take_sip()
        .iter()
        .any(|m| m.method() == Some(Method::Invite)));
    assert!(call_deleted(&b.take_ng()));
    assert_eq!(calls_on_relays(&b), 0);
}

#[test]
fn a_fork_cancelled_while_its_offers_are_pending_is_answered_487_and_deletes_every_branch() {
    let mut b = Bench::new(&forking_to(
        "{ host = \"127.0.0.1\", port = 9 }, { host = \"127.0.0.1\", port = 10 }",
    ));
    b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(300)));
    b.receive(&invite("c2"), CALLER);
    b.receive(&cancel("c2"), CALLER);
    assert!(distinct_finals(&b.take_sip()).contains(&(
        487,
        "INVITE".into(),
        "Request Terminated".into()
    )));
    b.advance(Duration::from_secs(1));
    assert!(!b
        .take_sip()
        .iter()
        .any(|m| m.method() == Some(Method::Invite)));
    assert_eq!(branch_deletes(&b.take_ng()), ["fork0", "fork1"]);
}

#[test]
fn a_cancelled_branch_that_never_answers_ends_in_a_487() {
    // No media: the INVITE goes to the callee at once; the callee says nothing at all, so no
    // CANCEL can be sent (§9.1) and no 487 will come from it.
    let mut b = Bench::new("");
    b.receive(&invite("c3"), CALLER);
    assert!(b
        .take_sip()
        .iter()
        .any(|m| m.method() == Some(Method::Invite)));
    b.receive(&cancel("c3"), CALLER);
    assert_eq!(
        distinct_finals(&b.take_sip()),
        [(200, "CANCEL".into(), "OK".into())]
    );
    b.advance(Duration::from_secs(40));
    assert_eq!(
        distinct_finals(&b.take_sip()),
        [(487, "INVITE".into(), "Request Terminated".into())]
    );
}

#[test]
fn a_branch_cancelled_by_timer_c_passes_its_487_upstream() {
    // RFC 3261 §16.8: Timer C fires on a branch that rang and never answered; the proxy
    // CANCELs it, and the callee's 487 is the INVITE's final response.
    let mut b = Bench::new("[proxy.timers]\ntimer_c_ms = 200000\n");
    b.receive(&invite("t1"), CALLER);
    let forwarded = b
        .take_sip()
        .into_iter()
        .find(|m| m.method() == Some(Method::Invite))
        .expect("the INVITE forwarded");
    let ringing = forwarded
        .response(180, "Ringing")
        .to_tag("b1")
        .build()
        .unwrap();
    b.receive(&ringing, CALLEE);
    b.take_sip();
    b.advance(Duration::from_secs(201));
    let sent = b.take_sip();
    assert!(
        sent.iter().any(|m| m.method() == Some(Method::Cancel)),
        "Timer C cancels the branch"
    );
    let terminated = forwarded
        .response(487, "Request Terminated")
        .to_tag("b1")
        .build()
        .unwrap();
    b.receive(&terminated, CALLEE);
    assert_eq!(
        distinct_finals(&b.take_sip()),
        [(487, "INVITE".into(), "Request Terminated".into())]
    );
}

#[test]
fn a_fork_losers_487_does_not_beat_the_winners_2xx_waiting_for_the_relay() {
    // The winner's 200 waits for the relay's answer; meanwhile the loser is cancelled and
    // its 487 comes back. The caller gets the 200, never the 487.
    let mut b = Bench::new(&forking_to(
        "{ host = \"127.0.0.1\", port = 9 }, { host = \"127.0.0.1\", port = 10 }",
    ));
    b.receive(&invite("w1"), CALLER);
    let invites: Vec<_> = b
        .take_sip_with_destination()
        .into_iter()
        .filter(|(_, m)| m.method() == Some(Method::Invite))
        .collect();
    assert_eq!(invites.len(), 2);
    b.set_relay("127.0.0.1:2223", Relay::Slow(Duration::from_millis(300)));
    let (winner, loser) = if invites[0].0.port() == 9 {
        (&invites[0].1, &invites[1].1)
    } else {
        (&invites[1].1, &invites[0].1)
    };
    // The loser rings (a CANCEL waits for a provisional, §9.1).
    let ringing = loser
        .response(180, "Ringing")
        .to_tag("lose")
        .build()
        .unwrap();
    b.receive(&ringing, "127.0.0.1:10");
    b.take_sip();
    let ok = winner
        .response(200, "OK")
        .to_tag("win")
        .header("Contact", "<sip:bob@127.0.0.1:9>")
        .body("application/sdp", support::ANSWER_SDP.as_bytes())
        .build()
        .unwrap();
    b.receive(&ok, CALLEE);
    assert!(b
        .take_sip()
        .iter()
        .any(|m| m.method() == Some(Method::Cancel)));
    let terminated = loser
        .response(487, "Request Terminated")
        .to_tag("lose")
        .build()
        .unwrap();
    b.receive(&terminated, "127.0.0.1:10");
    assert!(distinct_finals(&b.take_sip()).is_empty());
    b.advance(Duration::from_secs(1));
    assert_eq!(
        distinct_finals(&b.take_sip()),
        [(200, "INVITE".into(), "OK".into())]
    );
    assert_eq!(calls_on_relays(&b), 1);
}
