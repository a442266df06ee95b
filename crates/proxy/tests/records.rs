//! Calls as records through the public seam: what an event changed comes out as the call's
//! record, and a record taken into a new core (a restarted node) carries the call on — its
//! relay, its CSeq renumbering, its parties' targets.

mod support;

use std::time::{Duration, Instant};

use anchorage_proxy::node::{CallRecord, Output, Proxy};
use anchorage_sip::Method;

use support::scenario::*;

const TWO_RELAYS: &str = "[[proxy.relay_set]]\nname = \"m\"\nnodes = [{ name = \"r1\", ng = \"127.0.0.1:2223\" }, { name = \"r2\", ng = \"127.0.0.1:2224\" }]\n\n[proxy.media]\nset = \"m\"\n";

/// Every output, records kept apart.
fn outputs(p: &mut Proxy) -> (Vec<CallRecord>, Vec<String>) {
    let (mut changed, mut ended) = (Vec::new(), Vec::new());
    while let Some(o) = p.poll_output() {
        match o {
            Output::CallChanged(r) => changed.push(*r),
            Output::CallEnded(id) => ended.push(id),
            _ => {}
        }
    }
    (changed, ended)
}

/// Call c1 on r1, then moved to r2 (both parties accepted): the proxy re-INVITEd the callee
/// as the caller with CSeq 2, so the caller's later requests go up by one.
fn moved_call(now: Instant) -> Proxy {
    let (mut p, out) = reinvites_out(now);
    for t in &out {
        let sdp = if t.destination.port() == 9 {
            ANSWER_SDP
        } else {
            OFFER_SDP
        };
        if t.data.starts_with(b"INVITE ") {
            ok_to(&mut p, t, None, sdp, now);
        }
    }
    drain(&mut p);
    assert_eq!(
        p.anchored_call("c1").map(|c| c.node),
        Some("r2".to_string())
    );
    p
}

#[test]
fn each_event_gives_the_latest_record_of_the_calls_it_changed_and_the_end_of_a_call() {
    let now = epoch();
    let mut p = proxy(TWO_RELAYS);
    p.enable_call_records();
    p.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let r1 = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, now);
    let out = drain(&mut p);
    let (changed, _) = outputs(&mut p);
    assert_eq!(
        changed
            .last()
            .and_then(|r| r.media.as_ref())
            .map(|m| m.node.as_str()),
        Some("r1"),
        "anchored by the relay's reply: {changed:?}"
    );
    let invite = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .unwrap()
        .clone();
    ok_to(&mut p, &invite, Some("b1"), ANSWER_SDP, now);
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, now);
    let (changed, ended) = outputs(&mut p);
    assert!(ended.is_empty());
    let record = changed.last().expect("the call's record").clone();
    assert_eq!(
        changed.iter().filter(|r| r.call_id == "c1").count(),
        changed.len()
    );
    assert_eq!(record.dialogs.len(), 1);
    let d = &record.dialogs[0].dialog;
    assert_eq!(
        (d.id.caller_tag.as_str(), d.id.callee_tag.as_str()),
        ("a1", "b1")
    );
    assert_eq!(
        d.caller.remote_target.as_deref(),
        Some("sip:alice@127.0.0.1:5070")
    );
    assert_eq!(
        d.callee.remote_target.as_deref(),
        Some("sip:bob@127.0.0.1:9")
    );
    // The scenario proxy's wall clock starts at 1_800_000_000_000 ms.
    let created = record.dialogs[0].created_unix_ms;
    assert!(
        (1_799_999_999_000..1_800_000_001_000).contains(&created),
        "{created}"
    );
    let media = record.media.as_ref().expect("anchored");
    assert_eq!((media.node.as_str(), media.set.as_str()), ("r1", "m"));
    assert_eq!(media.caller_tag, "a1");
    assert_eq!(
        media.callee.origin_sent,
        Some(("relay".to_string(), "5".to_string(), 7))
    );
    assert_eq!(record, p.export_call("c1").unwrap());
    // The BYE ends it: the record goes.
    let bye = Req::invite()
        .method(Method::Bye)
        .cseq(2)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-bye");
    let to_callee = forwarded(&mut p, &bye, "127.0.0.1:5070", now);
    let (changed, ended) = outputs(&mut p);
    assert!(
        ended.is_empty(),
        "the dialog lives until the BYE is answered"
    );
    assert!(
        changed.last().is_some_and(|r| r.media.is_none()),
        "{changed:?}"
    );
    ok_to(&mut p, &to_callee, None, "", now);
    drain(&mut p);
    let (_, ended) = outputs(&mut p);
    assert_eq!(ended, vec!["c1".to_string()]);
    assert!(p.export_call("c1").is_none());
}

#[test]
fn a_restarted_node_carries_on_an_imported_call_with_its_relay_and_renumbering() {
    let now = epoch();
    let p = moved_call(now);
    let record = p.export_call("c1").expect("the record");
    let d = record.dialogs[0].dialog.clone();
    // Above what the node reserved, and above the last number the callee saw on the caller's
    // side by the margin for requests the record may have missed.
    let seen =
        (d.caller.last_cseq.unwrap_or(0) + d.renumber.to_callee).max(d.renumber.own_to_callee);
    let floor = d
        .renumber
        .reserved_to_callee
        .max(seen + anchorage_proxy::dialog::UNSEEN_CSEQ_MARGIN);
    let last = d.caller.last_cseq.unwrap_or(0);
    assert_eq!(record.media.as_ref().map(|m| m.node.as_str()), Some("r2"));
    assert_eq!(record.dialogs[0].dialog.renumber.to_callee, 1);
    // A new process of the same node: the call comes back from its record.
    let later = now + Duration::from_secs(5);
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record.clone(), later).unwrap();
    assert_eq!(
        q.export_call("c1").map(|r| r.media),
        Some(record.media.clone())
    );
    assert_eq!(q.relays().nodes()[1].calls, 1, "counted on r2");
    assert!(
        q.import_call(record, later).is_err(),
        "a call is imported once"
    );
    // The caller's re-INVITE is the same call on the same relay: an offer to r2 for c1 with
    // both tags, and its CSeq (3) reaches the callee above every number the node reserved for
    // its own requests before it stopped (it may have used them).
    let reinvite = Req::invite()
        .cseq(3)
        .to("<sip:bob@example.com>;tag=b1")
        .branch("z9hG4bK-ri2")
        .route("<sip:127.0.0.1:5060;lr>")
        .sdp(OFFER_SDP);
    q.handle_datagram(reinvite.datagram("127.0.0.1:5070"), later);
    let r2 = "v=0\r\no=r2 77 3 IN IP4 203.0.113.2\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\nc=IN IP4 203.0.113.2\r\n";
    let offer = relay_at_replies(&mut q, "127.0.0.1:2224", r2, later);
    let anchorage_ng::RequestKind::Offer(o) = &offer.kind else {
        panic!("{offer:?}")
    };
    assert_eq!(o.to_tag.as_ref().map(|t| t.0.as_str()), Some("b1"));
    let to_callee = drain(&mut q)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .expect("forwarded");
    assert!(
        // The shift makes the caller's next numbers land just above the floor.
        text(&to_callee).contains(&format!("CSeq: {} INVITE", 3 + floor - last)),
        "floor {floor}: {}",
        text(&to_callee)
    );
    assert_eq!(to_callee.destination.to_string(), "127.0.0.1:9");
}

#[test]
fn a_calls_rtpproxy_letters_travel_in_its_record_and_outlive_a_restart_with_other_settings() {
    let now = epoch();
    let p = call_on_r1_in(
        "caller = { rtpproxy_flags = \"r\" }\ncallee = { rtpproxy_flags = \"co\", ip = \"198.51.100.250\", iface = \"internal\" }\n",
        now,
        OFFER_SDP,
        ANSWER_SDP,
    );
    let record = p.export_call("c1").expect("the record");
    let media = record.media.as_ref().expect("anchored");
    // The callee is internal, the caller external: the callee's SDP is made with `ei`.
    assert_eq!(media.caller_rtpproxy.letters, "rie");
    assert_eq!(media.callee_rtpproxy.letters, "coei");
    assert_eq!(
        media.callee_rtpproxy.ip,
        Some("198.51.100.250".parse().unwrap())
    );
    assert_eq!(media.caller_rtpproxy.ip, None);
    assert_eq!(media.rtpproxy_unfit, None);
    // The node restarts with a configuration without letters: the call keeps its own.
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record.clone(), now + Duration::from_secs(1))
        .unwrap();
    assert_eq!(q.export_call("c1").map(|r| r.media), Some(record.media));

    // A call whose legs RTPProxy cannot give keeps the reason too.
    let p = call_on_r1_in(
        "callee = { type = \"RTP/SAVP\" }\n",
        now,
        OFFER_SDP,
        ANSWER_SDP,
    );
    let record = p.export_call("c1").expect("the record");
    let unfit = record.media.as_ref().and_then(|m| m.rtpproxy_unfit.clone());
    assert!(
        unfit.as_deref().is_some_and(|u| u.contains("RTP/SAVP")),
        "{unfit:?}"
    );
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record.clone(), now).unwrap();
    assert_eq!(q.export_call("c1").map(|r| r.media), Some(record.media));
}

#[test]
fn an_imported_call_whose_move_was_under_way_loses_the_session_the_move_made() {
    let now = epoch();
    let mut p = call_on_r1(now);
    ng_requests(&mut p);
    move_r1(&mut p, now);
    // The new node's offer is out: the record says so.
    let record = p.export_call("c1").unwrap();
    assert_eq!(
        record
            .moving
            .as_ref()
            .map(|m| (m.to.as_str(), m.invites_out)),
        Some(("r2", false))
    );
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record, now).unwrap();
    let sent = ng_requests(&mut q);
    assert!(
        sent.iter().any(|(port, r)| *port == 2224 && is_delete(r)),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(|(port, _)| *port == 2223),
        "r1 keeps the call"
    );
    assert_eq!(
        q.anchored_call("c1").map(|c| c.node),
        Some("r1".to_string())
    );
}

#[test]
fn a_record_naming_an_unknown_relay_is_refused_with_the_reason() {
    let now = epoch();
    let p = call_on_r1(now);
    let mut record = p.export_call("c1").unwrap();
    if let Some(m) = record.media.as_mut() {
        m.node = "gone".into();
    }
    let mut q = proxy(TWO_RELAYS);
    let err = q.import_call(record, now).unwrap_err();
    assert!(err.to_string().contains("\"gone\""), "{err}");
    assert!(q.export_call("c1").is_none(), "nothing half taken");
}

/// The call is on r2 now, and r1's session was deleted.
fn assert_on_r2_and_r1_deleted(q: &mut Proxy) {
    assert_eq!(
        q.anchored_call("c1").map(|c| c.node),
        Some("r2".to_string())
    );
    let ng = ng_requests(q);
    assert!(
        ng.iter().any(|(port, r)| *port == 2223 && is_delete(r)),
        "{ng:?}"
    );
}

/// The re-INVITEs the core sends, each with its destination port.
fn reinvites(out: &[anchorage_proxy::node::Transmit]) -> Vec<(u16, String)> {
    out.iter()
        .filter(|t| t.data.starts_with(b"INVITE "))
        .map(|t| (t.destination.port(), text(t)))
        .collect()
}

fn cseq_number(message: &str) -> u32 {
    message
        .lines()
        .find_map(|l| l.strip_prefix("CSeq: "))
        .and_then(|v| v.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_node_that_died_right_after_a_moves_re_invites_finishes_the_move_from_the_record() {
    let now = epoch();
    let (record, to_callee) = died_after_reinvites();
    assert!(text(&to_callee).contains("CSeq: 2 INVITE"));
    // The node dies here, before the mark that its re-INVITEs went out was written. Its
    // successor takes the saved record and waits for the parties' answers: both sessions
    // stay until the move is over.
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record, now).unwrap();
    assert_eq!(
        q.anchored_call("c1").map(|c| c.node),
        Some("r1".to_string())
    );
    assert_eq!(ng_requests(&mut q), vec![], "no session deleted yet");
    // The callee had its re-INVITE: its 2xx is ACKed by the successor.
    ok_to(&mut q, &to_callee, None, ANSWER_SDP, now);
    let out = drain(&mut q);
    let acks: Vec<String> = out
        .iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .map(text)
        .collect();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].contains("CSeq: 2 ACK"), "{}", acks[0]);
    assert_eq!(reinvites(&out), vec![]);
    // The caller never answers: it may never have had its re-INVITE. After the wait, the
    // successor sends it the move's SDP itself, numbered above the dead node's reservation;
    // the callee gets nothing more.
    let later = now + Duration::from_millis(1_000);
    q.handle_timeout(later);
    let out = drain(&mut q);
    let sent = reinvites(&out);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (port, to_caller) = &sent[0];
    assert_eq!(*port, 5070, "to the caller: {to_caller}");
    assert!(to_caller.contains("m=audio 40000"), "r2's SDP: {to_caller}");
    assert!(cseq_number(to_caller) > 17, "{to_caller}");
    assert_eq!(
        q.anchored_call("c1").map(|c| c.node),
        Some("r1".to_string())
    );
    // Its 2xx ends the move on r2, and r1's session goes.
    let to_caller = out
        .iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .cloned()
        .unwrap();
    ok_to(&mut q, &to_caller, None, OFFER_SDP, later);
    assert_on_r2_and_r1_deleted(&mut q);
    // Its own numbers resume above what was reserved: the caller's next request (CSeq 2)
    // reaches the callee above the reservation, never at a number the dead node may have used.
    let info = caller_in_dialog(Method::Info, 2, "z9hG4bK-info");
    let out = forwarded(&mut q, &info, "127.0.0.1:5070", later);
    assert!(cseq_number(&text(&out)) > 2 + 16, "{}", text(&out));
}

#[test]
fn a_successor_that_knows_both_re_invites_went_out_completes_the_move_and_sends_none() {
    let now = epoch();
    let (mut p, out) = reinvites_out(now);
    let sent = reinvites(&out);
    assert_eq!(sent.len(), 2, "{sent:?}");
    // The mark that both went out is written at once, without the write delay.
    let (changed, _) = outputs(&mut p);
    let record = changed
        .into_iter()
        .last()
        .expect("the record after the re-INVITEs");
    let m = record.moving.clone().expect("the move");
    assert_eq!(m.sent, [true, true], "{m:?}");
    // The node dies. Its successor completes the move at once (a party may have answered the
    // dead node, which ACKed it: nothing more would come), and sends no re-INVITE.
    let mut q = proxy(TWO_RELAYS);
    q.import_call(record, now).unwrap();
    assert_eq!(
        q.anchored_call("c1").map(|c| c.node),
        Some("r2".to_string())
    );
    q.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(reinvites(&drain(&mut q)), vec![]);
    // The parties' 2xx to the dead node's re-INVITEs are ACKed.
    let later = now + Duration::from_secs(3);
    for t in out.iter().filter(|t| t.data.starts_with(b"INVITE ")) {
        let sdp = if t.destination.port() == 9 {
            ANSWER_SDP
        } else {
            OFFER_SDP
        };
        ok_to(&mut q, t, None, sdp, later);
    }
    let acks = drain(&mut q)
        .iter()
        .filter(|t| t.data.starts_with(b"ACK "))
        .count();
    assert_eq!(acks, 2);
    assert_on_r2_and_r1_deleted(&mut q);
}

/// With a write delay, a call's changes gather — but the moments another node taking over must
/// not miss wait only `URGENT_DELAY`: the dialog confirmed (the call is up, with the relay's
/// answer that the 200 waits for in the same record) and the call's end.
#[test]
fn with_a_write_delay_changes_gather_but_a_call_coming_up_or_ending_goes_out_within_the_urgent_delay(
) {
    let now = epoch();
    let mut config = core_config(TWO_RELAYS);
    config.record_delay = Duration::from_millis(100);
    let mut p = proxy_with(config);
    p.enable_call_records();
    // The INVITE and the relay's offer reply: within the delay, no record yet.
    p.handle_datagram(Req::invite().sdp(OFFER_SDP).datagram("127.0.0.1:5070"), now);
    let r1 = "v=0\r\no=relay 5 7 IN IP4 203.0.113.1\r\ns=-\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n";
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, now);
    let invite = drain(&mut p)
        .into_iter()
        .find(|t| t.data.starts_with(b"INVITE "))
        .unwrap();
    assert_eq!(
        outputs(&mut p),
        (vec![], vec![]),
        "nothing before the delay"
    );
    // The 200 confirms the dialog, and the relay answers: the call's record, with both, goes
    // out URGENT_DELAY later, not after the whole delay.
    let later = now + Duration::from_millis(40);
    ok_to(&mut p, &invite, Some("b1"), ANSWER_SDP, later);
    relay_at_replies(&mut p, "127.0.0.1:2223", r1, later);
    assert_eq!(outputs(&mut p), (vec![], vec![]));
    p.handle_timeout(later + anchorage_proxy::node::URGENT_DELAY);
    let (changed, ended) = outputs(&mut p);
    assert!(ended.is_empty());
    assert_eq!(changed.len(), 1, "the call is up: {changed:?}");
    assert_eq!(changed[0], p.export_call("c1").unwrap(), "its latest state");
    assert!(changed[0].dialogs[0].dialog.state == anchorage_proxy::dialog::DialogState::Confirmed);
    // The record-delay timer then finds nothing more to write.
    p.handle_timeout(now + Duration::from_millis(100));
    assert_eq!(outputs(&mut p), (vec![], vec![]));
    // Stopping: what changed since the last records goes out at once.
    let t = now + Duration::from_secs(1);
    let bye = caller_in_dialog(Method::Bye, 2, "z9hG4bK-bye");
    let to_callee = forwarded(&mut p, &bye, "127.0.0.1:5070", t);
    assert_eq!(outputs(&mut p), (vec![], vec![]));
    p.flush_records();
    let (changed, _) = outputs(&mut p);
    assert!(
        changed
            .iter()
            .any(|r| r.call_id == "c1" && r.media.is_none()),
        "the BYE's change, flushed: {changed:?}"
    );
    // The BYE's 200 ends the call: its end goes out within URGENT_DELAY.
    ok_to(&mut p, &to_callee, None, "", t);
    assert_eq!(outputs(&mut p), (vec![], vec![]));
    p.handle_timeout(t + anchorage_proxy::node::URGENT_DELAY);
    assert_eq!(outputs(&mut p), (vec![], vec!["c1".to_string()]));
}
