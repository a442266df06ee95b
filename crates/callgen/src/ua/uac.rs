//! The caller (UAC): calls placed at the configured rate and concurrency, the initial
//! INVITE, its CANCEL after the answer timeout, and the responses to the requests we send —
//! the 2xx that sets up the dialog and its end-to-end ACK (RFC 3261 §13.2.2.4, the UA's job,
//! not the transaction's), the ACK of a 300–699 (§17.1.1.3), the §14.1 back-off after a 491,
//! and the BYE's and CANCEL's final responses.

use std::time::{Duration, Instant};

use anchorage_sip::{HeaderName, Message, Method, RequestBuilder};
use rand::Rng;

use crate::sdp::{LocalSdp, RemoteMedia};

use super::{
    contact_uri, header_value, list_values, text, transaction::Request, Agent, Call, CallRecord,
    CallRef, CallTransactions, ClientTx, Deadlines, Event, MediaPorts, Outcome, Side, State,
    UacConfig, ALLOW, USER_AGENT,
};

impl Agent {
    pub(super) fn start_due_calls(&mut self, now: Instant, media: &mut dyn MediaPorts) {
        let Some(uac) = self.config.uac.clone() else {
            return;
        };
        let interval = Duration::from_secs_f64(1.0 / uac.rate.max(0.001));
        while let Some(at) = self.next_call_at {
            if self.placed >= uac.calls {
                self.next_call_at = None;
                break;
            }
            if self.start_blocked() {
                self.blocked = true;
                break;
            }
            if self.blocked {
                // A slot freed: go on from now, do not catch up on the time spent waiting.
                self.blocked = false;
                self.next_call_at = Some(at.max(now));
                continue;
            }
            if at > now {
                break;
            }
            self.next_call_at = Some(at + interval);
            self.place_call(now, &uac, media);
        }
    }

    pub(super) fn place_call(&mut self, now: Instant, uac: &UacConfig, media: &mut dyn MediaPorts) {
        self.placed += 1;
        self.progress.placed += 1;
        let id = self.next_id;
        self.next_id += 1;
        let r = CallRef {
            side: Side::Uac,
            id,
        };
        let call_id = format!("{:012x}-{}@{}", self.run_id, self.placed, uac.local.ip());
        let local_tag = self.token(10);
        let local_party = format!("<sip:callgen@{}>;tag={local_tag}", uac.local);
        let remote_party = format!("<{}>", uac.request_uri);
        let contact = format!("<sip:callgen@{}>", uac.local);
        let hangs_up = self.config.hangup.side(&call_id) == Side::Uac;
        let record = CallRecord::new(call_id.clone(), Side::Uac, now);
        let session_id = self.rng.random_range(1..1u64 << 40);
        let Some(address) = media.allocate(r) else {
            let record = CallRecord {
                reason: Some("no media port".into()),
                ..record
            };
            self.progress.ended += 1;
            self.progress.failed += 1;
            self.events.push_back(Event::Ended { call: r, record });
            return;
        };
        let mut call = Call {
            r,
            call_id: call_id.clone(),
            state: State::Calling,
            local_tag,
            local_party,
            remote_party,
            contact,
            remote_target: None,
            routes: Vec::new(),
            fallback_hop: uac.proxy,
            local_cseq: 1,
            remote_cseq: None,
            sdp: LocalSdp::new(session_id, address),
            remote: None,
            hangs_up,
            send_ready: true,
            invite: None,
            invite_source: uac.proxy,
            tx: CallTransactions::default(),
            deadlines: Deadlines::default(),
            record,
        };
        let branch = self.branch();
        let via = format!("SIP/2.0/UDP {};branch={branch};rport", uac.local);
        let built = RequestBuilder::new(Method::Invite, &uac.request_uri)
            .via(&via)
            .from(&call.local_party)
            .to(&call.remote_party)
            .call_id(&call_id)
            .cseq(1)
            .contact(&call.contact)
            .header("User-Agent", USER_AGENT)
            .header("Allow", ALLOW)
            .body("application/sdp", call.sdp.bytes())
            .build();
        self.live[0] += 1;
        self.by_call_id.insert((Side::Uac, call_id), id);
        match built {
            Ok(invite) => {
                let data = invite.bytes();
                call.invite = Some(invite);
                let request = Request {
                    method: Method::Invite,
                    cseq: 1,
                    branch,
                    data,
                    destination: uac.proxy,
                };
                self.start_client(now, &mut call, request);
            }
            Err(e) => {
                self.end(
                    now,
                    &mut call,
                    Outcome::Failed,
                    None,
                    &format!("INVITE: {e}"),
                );
            }
        }
        self.put_back(call);
    }

    /// Sends `request` on a new client transaction, kept in the call's slot for its method.
    pub(super) fn start_client(&mut self, now: Instant, call: &mut Call, request: Request) {
        let (tx, todo) = ClientTx::start(now, request, &self.tx_timers);
        if todo.send {
            self.send(call.r.side, tx.request.destination, tx.request.data.clone());
        }
        match tx.request.method {
            Method::Invite => call.tx.client = Some(tx),
            Method::Bye => call.tx.bye = Some(tx),
            _ => call.tx.cancel = Some(tx),
        }
    }

    pub(super) fn send_cancel(&mut self, now: Instant, call: &mut Call) {
        call.deadlines.cancel_at = None;
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let Some(tx) = call.tx.client.as_ref() else {
            return;
        };
        let (branch, destination) = (tx.request.branch.clone(), tx.request.destination);
        let Some(local) = self.local_sip(Side::Uac) else {
            return;
        };
        let uri = invite.request_uri_raw().map(text).unwrap_or_default();
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let to = header_value(&invite, HeaderName::To).unwrap_or_default();
        let built = RequestBuilder::new(Method::Cancel, &uri)
            .via(&via)
            .from(&call.local_party)
            .to(&to)
            .call_id(&call.call_id)
            .cseq(1)
            .header("User-Agent", USER_AGENT)
            .build();
        if let Ok(m) = built {
            let request = Request {
                method: Method::Cancel,
                cseq: 1,
                branch,
                data: m.bytes(),
                destination,
            };
            self.start_client(now, call, request);
            call.state = State::Cancelling;
        }
    }

    pub(super) fn on_response(&mut self, now: Instant, call: &mut Call, msg: &Message) {
        let (Some(status), Ok(cseq)) = (msg.status(), msg.cseq()) else {
            return;
        };
        let branch = msg
            .top_via()
            .ok()
            .and_then(|v| v.branch())
            .map(str::to_string);
        match cseq.method {
            Method::Invite => self.on_invite_response(now, call, msg, status, cseq.seq, branch),
            Method::Bye => {
                let Some(tx) = call.tx.bye.as_mut().filter(|t| t.request.cseq == cseq.seq) else {
                    return;
                };
                tx.handle_response(now, status);
                if status < 200 {
                    return;
                }
                call.tx.bye = None;
                let dropped = call.record.reason.is_some() || !(200..300).contains(&status);
                if dropped {
                    let reason = call
                        .record
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("BYE answered {status}"));
                    self.end(now, call, Outcome::Dropped, None, &reason);
                } else {
                    self.end(now, call, Outcome::Completed, None, "");
                }
            }
            Method::Cancel => {
                if status >= 200 {
                    call.tx.cancel = None;
                } else if let Some(tx) = call.tx.cancel.as_mut() {
                    tx.handle_response(now, status);
                }
            }
            _ => {}
        }
    }

    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        status: u16,
        cseq: u32,
        branch: Option<String>,
    ) {
        let matches =
            call.tx.client.as_ref().is_some_and(|t| {
                t.request.cseq == cseq && Some(&t.request.branch) == branch.as_ref()
            });
        if !matches {
            // A retransmitted final response: ACK it again. For a 2xx this is the UA's job
            // (RFC 3261 §13.2.2.4); for a 300-699 it is what the client transaction does in
            // `Completed` until Timer D, done here from the ACK the call keeps (for as long as
            // the call lingers) since the UA drops the transaction at the final response.
            if status >= 200 {
                if let Some((seq, data, dest)) = call.tx.ack.clone() {
                    if seq == cseq {
                        self.send(call.r.side, dest, data);
                    }
                }
            }
            return;
        }
        let initial = cseq == 1 && call.r.side == Side::Uac && call.record.established.is_none();
        if status < 200 {
            if let Some(tx) = call.tx.client.as_mut() {
                // Timer B no longer applies once a provisional came; the CANCEL timeout does.
                tx.handle_response(now, status);
            }
            if initial && call.state == State::Calling {
                call.state = State::Proceeding;
                let timeout = self.config.uac.as_ref().map(|u| u.answer_timeout);
                call.deadlines.cancel_at = timeout.map(|t| now + t);
            }
            return;
        }
        // The final response ends the client transaction for the UA: retransmissions of it
        // are answered from `call.tx.ack`. A 2xx is the UA's (§13.2.2.4: it ACKs end to end);
        // the machine asks for the ACK of a 300–699 (§17.1.1.3).
        let todo = call
            .tx
            .client
            .take()
            .map(|mut tx| tx.handle_response(now, status))
            .unwrap_or_default();
        if (200..300).contains(&status) {
            self.on_2xx(now, call, msg, cseq, initial);
        } else {
            if todo.ack {
                self.ack_non_2xx(call, msg, cseq, branch.unwrap_or_default());
            }
            if initial {
                let reason = format!(
                    "answered {status} {}",
                    text(msg.reason_phrase().unwrap_or_default())
                );
                let reason = if call.state == State::Cancelling {
                    format!("cancelled after the answer timeout ({reason})")
                } else {
                    reason
                };
                self.end(now, call, Outcome::Failed, Some(status), &reason);
            } else if status == 491 {
                call.record.reinvites_491 += 1;
                // §14.1: we own the Call-ID (UAC): 2.1–4 s.
                let ms = self.rng.random_range(2100..=4000);
                call.deadlines.reinvite_at = Some(now + Duration::from_millis(ms));
            } else if status == 408 || status == 481 {
                call.record.reason = Some(format!("re-INVITE answered {status}"));
                self.send_bye(now, call);
            }
        }
    }

    pub(super) fn on_2xx(
        &mut self,
        now: Instant,
        call: &mut Call,
        msg: &Message,
        cseq: u32,
        initial: bool,
    ) {
        if initial {
            call.record.status = msg.status();
            call.record.setup = Some(now.saturating_duration_since(call.record.started));
            if let Some(to) = header_value(msg, HeaderName::To) {
                call.remote_party = to;
            }
            let mut routes = list_values(msg, HeaderName::RecordRoute);
            routes.reverse();
            call.routes = routes;
            call.remote_target = contact_uri(msg).or(call.remote_target.take());
            call.deadlines.cancel_at = None;
        } else if let Some(c) = contact_uri(msg) {
            call.remote_target = Some(c);
        }
        // ACK: end to end, a new branch, through the route set.
        let branch = self.branch();
        let hop = Self::next_hop(call);
        if let Some(ack) = self.in_dialog_request(call, Method::Ack, cseq, &branch, None) {
            self.send(call.r.side, hop, ack.clone());
            call.tx.ack = Some((cseq, ack, hop));
        }
        if !msg.body().is_empty() {
            if let Ok(remote) = RemoteMedia::parse(msg.body()) {
                call.remote = Some(remote);
                if initial {
                    call.record.remote_media = remote.address;
                }
            }
        }
        if initial {
            if call.state == State::Cancelling || self.stopping {
                // Answered after our CANCEL (or while stopping): hang up at once.
                call.record.established = Some(now);
                call.state = State::Established;
                call.record.reason = Some("answered after CANCEL".into());
                self.send_bye(now, call);
                return;
            }
            self.establish(now, call);
            self.media_event(call, false);
        } else {
            self.media_event(call, false);
        }
    }

    pub(super) fn ack_non_2xx(
        &mut self,
        call: &mut Call,
        msg: &Message,
        cseq: u32,
        branch: String,
    ) {
        let Some(local) = self.local_sip(call.r.side) else {
            return;
        };
        let uri = call
            .invite
            .as_ref()
            .and_then(|i| i.request_uri_raw().map(text))
            .or_else(|| call.remote_target.clone())
            .unwrap_or_default();
        let to = header_value(msg, HeaderName::To).unwrap_or_default();
        let via = format!("SIP/2.0/UDP {local};branch={branch};rport");
        let initial = cseq == 1;
        let routes: Vec<String> = if initial {
            Vec::new()
        } else {
            call.routes.clone()
        };
        let built = RequestBuilder::new(Method::Ack, &uri)
            .via(&via)
            .routes(routes.iter().map(String::as_str))
            .from(&call.local_party)
            .to(&to)
            .call_id(&call.call_id)
            .cseq(cseq)
            .build();
        let dest = if initial {
            call.fallback_hop
        } else {
            Self::next_hop(call)
        };
        if let Ok(m) = built {
            let data = m.bytes();
            self.send(call.r.side, dest, data.clone());
            call.tx.ack = Some((cseq, data, dest));
        }
    }
}
