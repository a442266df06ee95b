//! The callee (UAS): a new INVITE becomes a call (a media port, 100 Trying), answered as
//! configured — 200 with the SDP answer and the Record-Route copied (RFC 3261 §12.1.1) after
//! the ring time, 486, or only 180 until CANCEL — and the provisional and final responses to
//! it.

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{HeaderName, Message};
use rand::Rng;

use crate::sdp::{LocalSdp, RemoteMedia};

use super::{
    contact_uri, header_value, list_values, Agent, Call, CallRecord, CallRef, CallTransactions,
    Deadlines, MediaPorts, Outcome, Reply, ServerTx, Side, State, UasAnswer, ALLOW, UAS_ABANDON,
    USER_AGENT,
};

impl Agent {
    pub(super) fn new_uas_call(
        &mut self,
        now: Instant,
        msg: &Message,
        source: SocketAddr,
        local_tag: String,
        media: &mut dyn MediaPorts,
    ) {
        let Some(uas) = self.config.uas.clone() else {
            return;
        };
        let (Ok(call_id), Ok(cseq)) = (msg.call_id(), msg.cseq()) else {
            return;
        };
        let call_id = call_id.to_string();
        let (Some(from_value), Some(to_value)) = (
            header_value(msg, HeaderName::From),
            header_value(msg, HeaderName::To),
        ) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let r = CallRef {
            side: Side::Uas,
            id,
        };
        if self.counts_up(Side::Uas) {
            self.progress.placed += 1;
        }
        let remote = if msg.body().is_empty() {
            None
        } else {
            match RemoteMedia::parse(msg.body()) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.respond(
                        Side::Uas,
                        msg,
                        source,
                        &local_tag,
                        Reply::new(488, "Not Acceptable Here"),
                    );
                    self.count_unplaced_uas_failure();
                    return;
                }
            }
        };
        let Some(address) = media.allocate(r) else {
            self.respond(
                Side::Uas,
                msg,
                source,
                &local_tag,
                Reply::new(503, "Service Unavailable"),
            );
            self.count_unplaced_uas_failure();
            return;
        };
        let session_id = self.rng.random_range(1..1u64 << 40);
        let hangs_up = self.config.hangup.side(&call_id) == Side::Uas;
        let routes = list_values(msg, HeaderName::RecordRoute);
        let mut call = Call {
            r,
            call_id: call_id.clone(),
            state: State::Calling,
            local_party: format!("{to_value};tag={local_tag}"),
            local_tag,
            remote_party: from_value,
            contact: format!("<sip:callgen@{}>", uas.local),
            remote_target: contact_uri(msg),
            routes,
            fallback_hop: source,
            local_cseq: 0,
            remote_cseq: Some(cseq.seq),
            sdp: LocalSdp::new(session_id, address),
            remote,
            hangs_up,
            send_ready: false,
            invite: Some(msg.clone()),
            invite_source: source,
            tx: CallTransactions::default(),
            deadlines: Deadlines {
                abandon_at: Some(now + UAS_ABANDON),
                ..Deadlines::default()
            },
            record: CallRecord {
                remote_media: remote.and_then(|m| m.address),
                ..CallRecord::new(call_id.clone(), Side::Uas, now)
            },
        };
        self.live[1] += 1;
        self.by_call_id.insert((Side::Uas, call_id), id);
        self.uas_provisional(&mut call, 100, "Trying");
        match uas.answer {
            UasAnswer::Ok if uas.answer_delay.is_zero() => self.uas_answer(now, &mut call),
            UasAnswer::Ok => {
                self.uas_provisional(&mut call, 180, "Ringing");
                call.deadlines.answer_at = Some(now + uas.answer_delay);
            }
            UasAnswer::Busy => {
                self.uas_final(now, &mut call, 486, "Busy Here");
                self.end(
                    now,
                    &mut call,
                    Outcome::Failed,
                    Some(486),
                    "answered 486 (--uas-answer 486)",
                );
            }
            UasAnswer::Never => self.uas_provisional(&mut call, 180, "Ringing"),
        }
        self.put_back(call);
    }

    pub(super) fn count_unplaced_uas_failure(&mut self) {
        if self.counts_up(Side::Uas) {
            self.progress.ended += 1;
            self.progress.failed += 1;
        }
        self.uas_ended += 1;
    }

    pub(super) fn uas_provisional(&mut self, call: &mut Call, status: u16, reason: &str) {
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let tag = call.local_tag.clone();
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let contact = call.contact.clone();
        let extra: Vec<(&str, &str)> = if status > 100 {
            vec![("Contact", contact.as_str())]
        } else {
            Vec::new()
        };
        if let Some(data) = self.respond(
            Side::Uas,
            &invite,
            call.invite_source,
            &tag,
            Reply::new(status, reason).extra(&extra),
        ) {
            call.tx.invite_response = Some((cseq, data, call.invite_source));
        }
    }

    /// A final response to the initial INVITE, retransmitted until the ACK.
    pub(super) fn uas_final(
        &mut self,
        now: Instant,
        call: &mut Call,
        status: u16,
        reason: &str,
    ) -> bool {
        let Some(invite) = call.invite.clone() else {
            return false;
        };
        let tag = call.local_tag.clone();
        let cseq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        let record_routes = list_values(&invite, HeaderName::RecordRoute);
        let contact = call.contact.clone();
        let mut extra: Vec<(&str, &str)> = record_routes
            .iter()
            .map(|v| ("Record-Route", v.as_str()))
            .collect();
        let success = (200..300).contains(&status);
        if success {
            extra.push(("Contact", contact.as_str()));
            extra.push(("Allow", ALLOW));
        }
        extra.push(("User-Agent", USER_AGENT));
        let body = if success {
            let offered = call
                .remote
                .map(|r| r.direction)
                .unwrap_or(anchorage_sdp::Direction::SendRecv);
            Some(call.sdp.answer(offered).to_vec())
        } else {
            None
        };
        let Some(data) = self.respond(
            Side::Uas,
            &invite,
            call.invite_source,
            &tag,
            Reply::new(status, reason)
                .extra(&extra)
                .body(body.as_deref()),
        ) else {
            return false;
        };
        call.tx.invite_response = Some((cseq, data.clone(), call.invite_source));
        call.record.status = Some(status);
        let (destination, timers) = (call.invite_source, &self.tx_timers);
        call.tx.server = Some(ServerTx::sent(now, cseq, status, data, destination, timers));
        true
    }

    pub(super) fn uas_answer(&mut self, now: Instant, call: &mut Call) {
        call.deadlines.answer_at = None;
        call.deadlines.abandon_at = None;
        if !self.uas_final(now, call, 200, "OK") {
            self.end(now, call, Outcome::Failed, None, "could not build the 200");
            return;
        }
        call.state = State::Answered;
        self.media_event(call, false);
    }
}
