//! RFC 3261 §12 glue: dialogs tracked from forwarded responses, and the periodic sweep that
//! ends dialogs at their maximum age (the CSeq renumbering is in `renumber.rs`).

use std::time::{Duration, Instant};

use anchorage_sip::{Message, Method};

use crate::reanchor::Party;

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

    pub(super) fn track_dialog(&mut self, key: ServerId, response: &Message, now: Instant) {
        let Some(server) = self.servers.get(key) else {
            return;
        };
        let Ok(call_id) = server.request.call_id() else {
            return;
        };
        let (source, transport) = server.origin.unwrap_or((server.source, server.transport));
        let (request, local) = (&server.request, server.local);
        let changed = self.calls.update_dialogs(call_id, |d| {
            d.on_response(request, source, transport, local, response, now)
        });
        if changed {
            self.schedule_dialog_sweep(now);
        }
    }
}
