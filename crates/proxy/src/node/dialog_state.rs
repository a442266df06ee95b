//! RFC 3261 §12 glue: dialogs tracked from forwarded responses, the CSeq renumbering applied
//! to forwarded requests and undone on their responses (DESIGN.md "Dialogs"), and the
//! periodic sweep that ends dialogs at their maximum age.

use std::time::{Duration, Instant};

use anchorage_sip::Message;

use crate::node::anchoring::tag_of;
use crate::node::timers::TimerRef;
use crate::node::transactions::ServerId;
use crate::node::Proxy;

impl Proxy {
    pub(super) fn schedule_dialog_sweep(&mut self, now: Instant) {
        if self.dialog_sweep.is_none() && self.calls.dialog_count() > 0 {
            let at = now + Duration::from_secs(1);
            self.dialog_sweep = Some(at);
            self.timers.push(at, TimerRef::Dialogs);
        }
    }

    /// How much the CSeq of an in-dialog request must grow after requests of our own
    /// (DESIGN.md "Dialogs": CSeq renumbering).
    pub(super) fn cseq_offset(&self, req: &Message) -> Option<u32> {
        let to_tag = req.to().ok()?.tag()?.to_string();
        let from_tag = tag_of(req.from());
        let dialog = self
            .calls
            .between(req.call_id().ok()?, &from_tag, &to_tag)?;
        Some(dialog.cseq_offset_from(&from_tag))
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
