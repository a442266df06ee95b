//! Requests inside a call, in both directions: the next hop through the route set, the
//! in-dialog requests we send (BYE, re-INVITE), and those we receive — retransmissions
//! answered again, CSeq order (RFC 3261 §12.2.2), ACK, CANCEL, a re-INVITE answered like a
//! phone (491 while ours is pending, §14.2), BYE, OPTIONS.

use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{HeaderName, Message, Method, RequestBuilder, Uri};
use bytes::Bytes;

use crate::sdp::RemoteMedia;

use super::{
    contact_uri, name_addr_uri, sdp_version, text, transaction::Request, uri_address, Agent, Call,
    Event, Outcome, Party, ReceivedReinvite, Reply, ServerTx, Side, State, ALLOW, HOLD_SLACK,
    USER_AGENT,
};

impl Agent {
    /// The next hop of in-dialog requests: the first Route, else the remote target, else
    /// where the dialog came from.
    pub(super) fn next_hop(call: &Call) -> SocketAddr {
        let from_route = call
            .routes
            .first()
            .and_then(|r| name_addr_uri(r, HeaderName::Route));
        let uri = from_route.or_else(|| call.remote_target.clone());
        uri.and_then(|u| Uri::parse(u.as_bytes()).ok().and_then(|u| uri_address(&u)))
            .unwrap_or(call.fallback_hop)
    }

    pub(super) fn in_dialog_request(
        &mut self,
        call: &mut Call,
        method: Method<'static>,
        cseq: u32,
        branch: &str,
        body: Option<&[u8]>,
    ) -> Option<Bytes> {
        let local = self.local_sip(call.r.side)?;
        let target = call.remote_target.clone().or_else(|| {
            call.invite
                .as_ref()
                .and_then(|i| i.request_uri_raw().map(text))
        })?;
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let mut b = RequestBuilder::new(method, &target)
            .via(&via)
            .routes(call.routes.iter().map(String::as_str))
            .from(&call.local_party)
            .to(&call.remote_party)
            .call_id(&call.call_id)
            .cseq(cseq)
            .header("User-Agent", USER_AGENT);
        if method == Method::Invite {
            b = b.contact(&call.contact);
        }
        if let Some(body) = body {
            b = b.body("application/sdp", body);
        }
        b.build().ok().map(|m| m.bytes())
    }

    pub(super) fn send_bye(&mut self, now: Instant, call: &mut Call) {
        call.deadlines.hangup_at = None;
        call.deadlines.reinvite_at = None;
        call.local_cseq += 1;
        let cseq = call.local_cseq;
        let branch = self.branch();
        match self.in_dialog_request(call, Method::Bye, cseq, &branch, None) {
            Some(data) => {
                let destination = Self::next_hop(call);
                let request = Request {
                    method: Method::Bye,
                    cseq,
                    branch,
                    data,
                    destination,
                };
                self.start_client(now, call, request);
                call.state = State::Ending;
                call.record.hangup.get_or_insert(Party::Local);
                self.events.push_back(Event::MediaStop { call: call.r });
            }
            None => self.end(now, call, Outcome::Dropped, None, "could not build the BYE"),
        }
    }

    pub(super) fn send_reinvite(&mut self, now: Instant, call: &mut Call) {
        call.deadlines.reinvite_at = None;
        if call.state != State::Established || call.tx.client.is_some() {
            return;
        }
        call.local_cseq += 1;
        let cseq = call.local_cseq;
        let branch = self.branch();
        let body = call.sdp.bytes().to_vec();
        if let Some(data) = self.in_dialog_request(call, Method::Invite, cseq, &branch, Some(&body))
        {
            let destination = Self::next_hop(call);
            call.record.reinvites_sent += 1;
            let request = Request {
                method: Method::Invite,
                cseq,
                branch,
                data,
                destination,
            };
            self.start_client(now, call, request);
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
    ) {
        let Some(method) = msg.method() else { return };
        let Ok(cseq) = msg.cseq() else { return };
        let tag = call.local_tag.clone();
        // Retransmissions get the same response again: what a server transaction does
        // (RFC 3261 §17.2.1, §17.2.2), done from the last response the call keeps, matched by
        // CSeq (one request of each kind at a time in a call) rather than by branch.
        if method == Method::Invite {
            if let Some((seq, data, dest)) = call.tx.invite_response.clone() {
                if seq == cseq.seq {
                    self.send(call.r.side, dest, data);
                    return;
                }
            }
        } else if method != Method::Ack && method != Method::Cancel {
            if let Some((seq, m, data, dest)) = call.tx.other_response.clone() {
                if seq == cseq.seq && m == method.as_str() {
                    self.send(call.r.side, dest, data);
                    return;
                }
            }
        }
        match method {
            Method::Ack => self.on_ack(now, call, msg, cseq.seq),
            Method::Cancel => self.on_cancel(now, call, msg, source),
            _ => {
                // §12.2.2: a CSeq below the last one is out of order.
                if call.remote_cseq.is_some_and(|last| cseq.seq <= last) {
                    self.respond(
                        call.r.side,
                        msg,
                        source,
                        &tag,
                        Reply::new(500, "Server Internal Error"),
                    );
                    return;
                }
                let to_tag = msg.to().ok().and_then(|t| t.tag().map(str::to_string));
                if to_tag.as_deref() != Some(call.local_tag.as_str())
                    || call.state == State::Ended && method != Method::Bye
                {
                    self.respond(
                        call.r.side,
                        msg,
                        source,
                        &tag,
                        Reply::new(481, "Call/Transaction Does Not Exist"),
                    );
                    return;
                }
                call.remote_cseq = Some(cseq.seq);
                match method {
                    Method::Invite => self.on_reinvite(now, call, msg, source, cseq.seq),
                    Method::Bye => self.on_bye(now, call, msg, source, cseq.seq),
                    Method::Options => {
                        self.respond_other(
                            call,
                            msg,
                            source,
                            cseq.seq,
                            Reply::new(200, "OK").extra(&[("Allow", ALLOW)]),
                        );
                    }
                    _ => {
                        self.respond_other(
                            call,
                            msg,
                            source,
                            cseq.seq,
                            Reply::new(501, "Not Implemented").extra(&[("Allow", ALLOW)]),
                        );
                    }
                }
            }
        }
    }

    /// Answers `msg` (neither INVITE, ACK nor CANCEL; CSeq `cseq`) with `reply`, kept for
    /// its retransmissions.
    pub(super) fn respond_other(
        &mut self,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
        reply: Reply<'_>,
    ) {
        let tag = call.local_tag.clone();
        if let Some(data) = self.respond(call.r.side, msg, source, &tag, reply) {
            let method = msg
                .method()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            call.tx.other_response = Some((cseq, method, data, source));
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, call: &mut Call, msg: &Message, cseq: u32) {
        let Some(server) = call.tx.server.as_ref().filter(|s| s.cseq == cseq) else {
            return;
        };
        let success = server.success();
        call.tx.server = None;
        if !success {
            return;
        }
        if !msg.body().is_empty() {
            // The answer to the offer in our 200 (a re-INVITE without SDP).
            if let Ok(remote) = RemoteMedia::parse(msg.body()) {
                call.remote = Some(remote);
                self.media_event(call, true);
            }
        }
        if call.state == State::Answered {
            self.establish(now, call);
        }
    }

    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
    ) {
        let tag = call.local_tag.clone();
        self.respond(call.r.side, msg, source, &tag, Reply::new(200, "OK"));
        if call.r.side == Side::Uas && call.state == State::Calling {
            self.uas_final(now, call, 487, "Request Terminated");
            self.end(
                now,
                call,
                Outcome::Failed,
                Some(487),
                "cancelled by the caller",
            );
        }
    }

    pub(super) fn on_reinvite(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
    ) {
        if call.tx.client.is_some() {
            // §14.2: our own re-INVITE is pending.
            call.record.sent_491 += 1;
            self.respond_invite(
                now,
                call,
                msg,
                source,
                cseq,
                Reply::new(491, "Request Pending"),
            );
            return;
        }
        if call.state == State::Answered {
            // The ACK was lost; this request proves the dialog is up.
            call.tx.server = None;
            self.establish(now, call);
        }
        if !matches!(call.state, State::Established | State::Ending) {
            self.respond_invite(
                now,
                call,
                msg,
                source,
                cseq,
                Reply::new(500, "Server Internal Error"),
            );
            return;
        }
        let offer = if msg.body().is_empty() {
            None
        } else {
            match RemoteMedia::parse(msg.body()) {
                Ok(m) => Some(m),
                Err(_) => {
                    self.respond_invite(
                        now,
                        call,
                        msg,
                        source,
                        cseq,
                        Reply::new(488, "Not Acceptable Here"),
                    );
                    return;
                }
            }
        };
        if let Some(c) = contact_uri(msg) {
            call.remote_target = Some(c);
        }
        let body = match offer {
            Some(o) => call.sdp.answer(o.direction).to_vec(),
            None => call.sdp.bytes().to_vec(),
        };
        call.record.reinvites.push(ReceivedReinvite {
            at: now,
            remote: offer.and_then(|o| o.address),
            sdp_version: sdp_version(msg.body()),
        });
        self.respond_invite(
            now,
            call,
            msg,
            source,
            cseq,
            Reply::new(200, "OK").body(Some(&body)),
        );
        if let Some(o) = offer {
            call.remote = Some(o);
            if call.state == State::Established {
                self.media_event(call, true);
            }
        }
    }

    /// Answers an INVITE in the dialog (CSeq `cseq`) with the final response `reply`, with
    /// our Contact; kept for retransmissions of the INVITE and retransmitted until the ACK.
    pub(super) fn respond_invite(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
        reply: Reply<'_>,
    ) {
        let tag = call.local_tag.clone();
        let contact = call.contact.clone();
        let extra = [("Contact", contact.as_str()), ("User-Agent", USER_AGENT)];
        let Some(data) = self.respond(call.r.side, msg, source, &tag, reply.extra(&extra)) else {
            return;
        };
        call.tx.invite_response = Some((cseq, data.clone(), source));
        let timers = &self.tx_timers;
        call.tx.server = Some(ServerTx::sent(
            now,
            cseq,
            reply.status,
            data,
            source,
            timers,
        ));
    }

    pub(super) fn on_bye(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        source: SocketAddr,
        cseq: u32,
    ) {
        self.respond_other(call, msg, source, cseq, Reply::new(200, "OK"));
        match call.state {
            State::Established | State::Answered | State::Ending => {
                let ours_pending = call.state == State::Ending;
                call.record.hangup.get_or_insert(Party::Remote);
                call.tx.server = call.tx.server.take().filter(|s| !s.success());
                let early = call
                    .record
                    .established
                    .is_some_and(|e| now + HOLD_SLACK < e + self.config.hold);
                if call.record.reason.is_some() {
                    let reason = call.record.reason.clone().unwrap_or_default();
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else if early && !ours_pending {
                    let held = call
                        .record
                        .established
                        .map(|e| now.saturating_duration_since(e))
                        .unwrap_or_default();
                    let reason = format!(
                        "BYE from the other side after {:.1} s of {:.1} s",
                        held.as_secs_f64(),
                        self.config.hold.as_secs_f64()
                    );
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else {
                    self.end(now, call, Outcome::Completed, None, "");
                }
            }
            _ => {}
        }
    }
}
