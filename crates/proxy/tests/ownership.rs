//! A call another node took over is released without a word: no SIP (not even a
//! retransmission of the move's re-INVITE), no ng, no record — the new owner carries it on.

mod support;

use std::time::Duration;

use anchorage_proxy::node::Output;

use support::scenario::*;

#[test]
fn a_call_released_mid_move_sends_nothing_more_ever() {
    let now = epoch();
    let (mut p, reinvites) = reinvites_out(now);
    assert_eq!(
        reinvites
            .iter()
            .filter(|t| t.data.starts_with(b"INVITE "))
            .count(),
        2,
        "the move's re-INVITEs are out"
    );
    assert_eq!(p.calls().len(), 1);

    assert_eq!(
        p.release_calls(&["c1".to_string(), "other".to_string()], now),
        1
    );
    assert_eq!(p.calls().len(), 0);
    assert_eq!(p.anchored_call("c1"), None);
    assert_eq!(p.calls().anchored_count(), 0);
    // Through every retransmission and timeout of the re-INVITEs, and the dialog sweep:
    // nothing at all goes out for c1.
    let mut t = now;
    for _ in 0..80 {
        t += Duration::from_millis(500);
        p.handle_timeout(t);
        let sip = drain(&mut p);
        assert!(sip.is_empty(), "sent after the release: {sip:?}");
        let ng: Vec<_> = ng_requests(&mut p);
        assert!(ng.is_empty(), "ng after the release: {ng:?}");
        while let Some(o) = p.poll_output() {
            assert!(
                !matches!(
                    o,
                    Output::CallChanged(_) | Output::CallEnded(_) | Output::SaveDurable(_)
                ),
                "a record after the release: {o:?}"
            );
        }
    }
    assert_eq!(p.transaction_count(), (0, 0));
    let released: u64 = p
        .reanchor_metrics()
        .results
        .iter()
        .filter(|((_, r), _)| r.as_str() == "released")
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(released, 1);
}

/// The calls this proxy counts on relay r1.
fn calls_on_r1(p: &anchorage_proxy::node::Proxy) -> Option<usize> {
    p.relays()
        .nodes()
        .iter()
        .find(|n| n.name == "r1")
        .map(|n| n.calls)
}

#[test]
fn release_all_calls_forgets_every_call_and_its_relay_count() {
    let now = epoch();
    let mut p = call_on_r1(now);
    assert_eq!(calls_on_r1(&p), Some(1));
    assert_eq!(p.release_all_calls(now), 1);
    assert_eq!(p.calls().len(), 0);
    assert_eq!(calls_on_r1(&p), Some(0));
    assert_eq!(p.release_all_calls(now), 0);
}

/// Sessions another node left to delete: deleted at once on a relay that is up, listed (and
/// written for the store) on one that is down, kept for a call anchored on that relay here.
#[test]
fn sessions_a_dead_node_left_to_delete_are_taken_over() {
    let now = epoch();
    let mut p = call_on_r1(now);
    p.enable_call_records();
    ng_requests(&mut p);
    while p.poll_output().is_some() {}
    let taken = p.adopt_orphans(
        vec![
            ("r2".into(), "ended-call".into()),
            ("r1".into(), "c1".into()),
            ("r9".into(), "elsewhere".into()),
        ],
        now,
    );
    assert_eq!(taken, 1, "c1 is on r1 here; r9 is unknown");
    let ng = ng_requests(&mut p);
    assert_eq!(ng.len(), 1, "{ng:?}");
    assert_eq!(ng[0].0, 2224);
    assert!(is_delete(&ng[0].1));
    assert_eq!(p.orphan_count(), 0);

    // r2 dead (its port refuses): the session waits for it, and the store is told.
    let r2: std::net::SocketAddr = "127.0.0.1:2224".parse().unwrap();
    p.handle_relay_refused(r2, now);
    p.handle_relay_refused(r2, now + Duration::from_millis(10));
    assert!(!p.relays().is_up(1));
    while p.poll_output().is_some() {}
    assert_eq!(p.adopt_orphans(vec![("r2".into(), "gone".into())], now), 1);
    assert_eq!(ng_requests(&mut p), vec![]);
    assert_eq!(p.orphan_count(), 1);
    let told: Vec<Output> = std::iter::from_fn(|| p.poll_output())
        .filter(|o| matches!(o, Output::Orphan(_)))
        .collect();
    assert_eq!(
        told,
        vec![Output::Orphan(anchorage_proxy::node::OrphanChange::Added {
            relay: "r2".into(),
            call_id: "gone".into()
        })]
    );
}
