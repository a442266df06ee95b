//! RFC 3261 §12 glue: dialogs tracked from forwarded responses, the CSeq renumbering applied
//! to forwarded requests and undone on their responses (DESIGN.md "Dialogs"), and the
//! periodic sweep that ends dialogs at their maximum age.

use std::time::{Duration, Instant};

use anchorage_sip::{Message, Method};

use crate::reanchor::Party;

use crate::node::anchoring::tag_of;
use crate::node::timers::TimerRef;
use crate::node::transactions::ServerId;
use crate::node::Proxy;

impl Proxy {
    /// Dialogs at their maximum age end: a confirmed one with a BYE of ours to both parties
    /// (they are told, not forgotten), and the call's relay session is deleted with it.
    pub(super) fn expire_dialogs(&mut self, now: Instant) {
        let max_age = self.config.dialog_max_age;
        let old = |d: &crate::dialog::Dialog| now.saturating_duration_since(d.created) >= max_age;
        for call_id in self.calls.with_dialogs_older_than(now, max_age) {
            let call_id = call_id.as_str();
            if self.calls.confirmed(call_id).is_some_and(old) {
                tracing::info!(%call_id, "dialog reached its maximum age: ending the call with a BYE to both parties");
                if self.calls.moving(call_id).is_some() {
                    self.abandon_move(call_id, now);
                }
                match self.calls.media(call_id).map(|c| c.node) {
                    Some(node) => self.end_call(call_id, None, node, now),
                    None => {
                        for party in [Party::Caller, Party::Callee] {
                            self.send_own_request(call_id, party, Method::Bye, None, now);
                        }
                        self.calls.update_dialogs(call_id, |d| d.remove_confirmed());
                    }
                }
            }
            let left = self.calls.update_dialogs(call_id, |d| {
                d.expire(now, max_age);
                d.len()
            });
            if left == 0 && self.calls.media(call_id).is_some() {
                self.delete_media(call_id, now);
            }
        }
    }

    pub(super) fn schedule_dialog_sweep(&mut self, now: Instant) {
        if self.dialog_sweep.is_none() && self.calls.dialog_count() > 0 {
            let at = now + Duration::from_secs(1);
            self.dialog_sweep = Some(at);
            self.timers.push(at, TimerRef::Dialogs);
        }
    }

    /// How much the CSeq of an in-dialog request must grow after requests of our own
    /// (DESIGN.md "Dialogs": CSeq renumbering); an ACK grows as its INVITE did.
    pub(super) fn cseq_offset(&self, req: &Message) -> Option<u32> {
        let to_tag = req.to().ok()?.tag()?.to_string();
        let from_tag = tag_of(req.from());
        let dialog = self
            .calls
            .between(req.call_id().ok()?, &from_tag, &to_tag)?;
        let seq = req.cseq().ok()?.seq;
        let is_ack = req.method() == Some(anchorage_sip::Method::Ack);
        Some(dialog.cseq_offset_for(&from_tag, is_ack, seq))
    }

    /// An in-dialog INVITE gets its server transaction: the offset it goes out with is kept
    /// for its ACK (no move starts while it is open, so the offset cannot change before it is
    /// forwarded).
    pub(super) fn note_in_dialog_invite(&mut self, req: &Message) {
        let (Ok(call_id), Ok(cseq)) = (req.call_id(), req.cseq()) else {
            return;
        };
        let Some(to_tag) = req.to().ok().and_then(|t| t.tag()).map(str::to_string) else {
            return;
        };
        let from_tag = tag_of(req.from());
        self.calls.update_dialogs(call_id, |d| {
            if let Some(dialog) = d.between_mut(&from_tag, &to_tag) {
                dialog.note_invite(&from_tag, cseq.seq);
            }
        });
    }

    /// A response to a renumbered request goes back with the number its sender used.
    pub(super) fn restore_cseq(&self, key: ServerId, response: Message) -> Message {
        let Some(server) = self.servers.get(key) else {
            return response;
        };
        match (server.request.cseq(), response.cseq()) {
            (Ok(sent), Ok(got)) if sent.seq != got.seq => {
                let mut e = response.edit();
                if e.set_cseq_number(sent.seq).is_err() {
                    return response;
                }
                e.finish_message().unwrap_or(response)
            }
            _ => response,
        }
    }

    pub(super) fn track_dialog(&mut self, key: ServerId, response: &Message, now: Instant) {
        let Some(server) = self.servers.get(key) else {
            return;
        };
        let Ok(call_id) = server.request.call_id() else {
            return;
        };
        let (request, source, transport, local) = (
            &server.request,
            server.source,
            server.transport,
            server.local,
        );
        let changed = self.calls.update_dialogs(call_id, |d| {
            d.on_response(request, source, transport, local, response, now)
        });
        if changed {
            self.schedule_dialog_sweep(now);
        }
    }
}
