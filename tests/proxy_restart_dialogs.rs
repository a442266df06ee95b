//! Calls outlive the proxy process, with the dialog state that is easy to lose (issue 14): a
//! caller behind NAT, reachable only at the address its packets come from, and a callee that
//! changed its Contact in a re-INVITE (target refresh, RFC 3261 §12.2). Each call is moved
//! first (so its CSeqs are renumbered), its record in a real `redis-server` is checked against
//! what `/v1/calls/{id}` shows, then the proxy is `kill -9`ed and started again: the record
//! comes back as it was, and the next requests reach the right address with the right CSeq.

use std::time::Duration;

mod restart_support;
use restart_support::{
    assert_record_is_view, call_view, count_received, cseq, header, nth_received, relay_of,
    request_uri, resumed, the_call_id, Parties, Platform, UdpEndpoint,
};

#[test]
fn a_caller_behind_nat_is_reached_at_its_source_after_kill_9_of_the_proxy() {
    let mut platform = Platform::start();
    // The caller's Via, Contact and SDP say 10.0.0.1:5060; its packets come from SIPp's
    // address on 127.0.0.1. The callee speaks first after the restart (-d: its pause).
    let mut parties = Parties::call(
        platform.p.sip,
        "uac_restart_nat.xml",
        &[],
        "uas_restart_first.xml",
        &["-d", "6000"],
    );
    let call_id = the_call_id(&platform.p);
    let (_, to) = platform.move_call(&call_id);
    let move_at_callee = nth_received(&parties.callee, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_callee), "2 INVITE");
    let move_at_caller = nth_received(&parties.caller, "INVITE ", 1, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_caller), "1 INVITE");
    assert_eq!(request_uri(&move_at_caller), "sip:caller@10.0.0.1:5060");
    nth_received(&parties.caller, "ACK ", 1, Duration::from_secs(10));
    nth_received(&parties.callee, "ACK ", 2, Duration::from_secs(10));
    platform.store_caught_up();

    let before = call_view(&platform.p, &call_id);
    let caller = &before["dialogs"][0]["caller"];
    assert_eq!(
        caller["remote_target"], "sip:caller@10.0.0.1:5060",
        "{before}"
    );
    assert_eq!(
        caller["source"],
        parties.caller_addr.to_string(),
        "{before}"
    );
    let (record, reserved_to_callee, reserved_to_caller) = platform.stored(&call_id);
    assert_record_is_view(&record, &before);

    platform.kill_and_restart_proxy(1);
    // The restarted node holds what the record says, its own CSeqs above its reservations.
    let resumed = resumed(&record, reserved_to_callee, reserved_to_caller);
    assert_record_is_view(&resumed, &call_view(&platform.p, &call_id));
    assert_eq!(relay_of(&platform.p, &call_id), to);

    // The callee's re-INVITE (CSeq 1) and BYE (CSeq 2) reach the caller, which sent nothing
    // since the restart, at its source: numbered just above what the dead node had reserved
    // for its own requests to the caller.
    let reinvite = nth_received(&parties.caller, "INVITE ", 2, Duration::from_secs(20));
    assert_eq!(request_uri(&reinvite), "sip:caller@10.0.0.1:5060");
    assert_eq!(
        cseq(&reinvite),
        format!("{} INVITE", reserved_to_caller + 1),
        "{reinvite}"
    );
    let bye = nth_received(&parties.caller, "BYE ", 1, Duration::from_secs(10));
    assert_eq!(
        cseq(&bye),
        format!("{} BYE", reserved_to_caller + 2),
        "{bye}"
    );
    // The callee got its own numbers back (checked by its scenario) and both finished.
    parties.finish(Duration::from_secs(15));
    platform.assert_call_gone(&call_id);
}

#[test]
fn a_callee_that_changed_its_contact_before_kill_9_of_the_proxy_is_reached_there() {
    let mut platform = Platform::start();
    // The callee's second address: its re-INVITE names it as its Contact.
    let new_contact = UdpEndpoint::bind();
    let new_target = format!("sip:callee@{}", new_contact.addr());
    let mut parties = Parties::call(
        platform.p.sip,
        "uac_restart_refresh.xml",
        &["-key", "new_target", &new_target],
        "uas_restart_refresh.xml",
        &["-key", "new_target", &new_target, "-d", "10000"],
    );
    let call_id = the_call_id(&platform.p);
    let (first, moved_to) = platform.move_call(&call_id);
    let move_at_callee = nth_received(&parties.callee, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(cseq(&move_at_callee), "2 INVITE");
    // The callee's target refresh reaches the caller above the move's CSeq 1.
    let refresh = nth_received(&parties.caller, "INVITE ", 2, Duration::from_secs(10));
    assert_eq!(cseq(&refresh), "2 INVITE", "{refresh}");
    assert_eq!(header(&refresh, "Contact"), format!("<{new_target}>"));
    nth_received(&parties.caller, "ACK ", 2, Duration::from_secs(10));
    let before = call_view(&platform.p, &call_id);
    assert_eq!(
        before["dialogs"][0]["callee"]["remote_target"], new_target,
        "{before}"
    );
    platform.store_caught_up();
    let (record, reserved_to_callee, reserved_to_caller) = platform.stored(&call_id);
    assert_record_is_view(&record, &before);

    platform.kill_and_restart_proxy(1);
    let resumed = resumed(&record, reserved_to_callee, reserved_to_caller);
    assert_record_is_view(&resumed, &call_view(&platform.p, &call_id));

    // A move back (the first relay, drained before the crash and still drained after it, is
    // given calls again): the proxy's own re-INVITE to the callee goes to its new Contact,
    // numbered above what the dead node had reserved.
    platform.undrain(first);
    platform.drain(moved_to);
    let (invite, from) = new_contact.request("INVITE ", Duration::from_secs(10));
    assert_eq!(request_uri(&invite), new_target);
    assert_eq!(
        cseq(&invite),
        format!("{} INVITE", reserved_to_callee + 1),
        "{invite}"
    );
    new_contact.answer_offer(&invite, from, &new_target);
    let (ack, _) = new_contact.request("ACK ", Duration::from_secs(10));
    assert_eq!(
        cseq(&ack),
        format!("{} ACK", reserved_to_callee + 1),
        "{ack}"
    );
    platform.wait_relay(&call_id, first);
    // The caller's BYE (CSeq 2, to the new Contact) arrives there above the move's number.
    let (bye, from) = new_contact.request("BYE ", Duration::from_secs(10));
    assert_eq!(request_uri(&bye), new_target);
    assert_eq!(
        cseq(&bye),
        format!("{} BYE", reserved_to_callee + 2),
        "{bye}"
    );
    new_contact.respond(&bye, from, "200 OK");
    // Nothing more reached the callee's old address: the initial INVITE and the first move.
    assert_eq!(count_received(&parties.callee, "INVITE "), 2);
    assert_eq!(count_received(&parties.callee, "BYE "), 0);
    parties.finish(Duration::from_secs(20));
    platform.assert_call_gone(&call_id);
}
