//! Calls this node no longer acts for: another node owns them now (it took the virtual IP, or
//! claimed them in the store and this node's writes were refused). [`Proxy::release_calls`]
//! forgets them without a word — no SIP, no ng, no record — so a node that was frozen and comes
//! back never fights the node that took over: the new owner ends, moves and deletes them.

use std::collections::HashSet;
use std::time::Instant;

use crate::node::io::Output;
use crate::node::Proxy;
use crate::reanchor::MoveResult;

impl Proxy {
    /// Forgets `call_ids` silently: their dialogs, media anchors, moves (counted
    /// `released`), waits, parked messages, relay sessions to delete later, and every
    /// transaction of theirs (no retransmission goes out). Returns how many it held. One walk
    /// over the transactions for the whole batch.
    pub fn release_calls(&mut self, call_ids: &[String], now: Instant) -> usize {
        let set: HashSet<&str> = call_ids.iter().map(String::as_str).collect();
        let mut released = 0;
        for call_id in call_ids {
            if !self.calls.holds(call_id) {
                continue;
            }
            released += 1;
            if self.calls.moving(call_id).is_some() {
                self.finish_move(call_id, MoveResult::Released, now);
            }
            if let Some(media) = self.calls.take_media(call_id) {
                self.relays.count_call(media.node, -1);
            }
            self.calls.set_wait(call_id, None);
            self.calls.invite_done(call_id);
            self.calls.forget_offers(call_id);
            self.calls.update_dialogs(call_id, |d| d.clear());
            self.parking.drop_call(call_id);
        }
        for list in self.orphans.values_mut() {
            list.retain(|c| !set.contains(c.as_str()));
        }
        let of_released =
            |msg: &anchorage_sip::Message| msg.call_id().ok().is_some_and(|c| set.contains(c));
        self.clients.remove_where(|_, tx| of_released(&tx.request));
        self.servers.remove_where(|_, tx| of_released(&tx.request));
        self.own
            .remove_where(|_, tx| set.contains(tx.call_id.as_str()));
        for call_id in call_ids {
            // The new owner writes them from now on.
            self.calls.take_changed(call_id);
        }
        self.records_out.retain(|o| match o {
            Output::CallChanged(r) | Output::SaveDurable(r) => !set.contains(r.call_id.as_str()),
            Output::CallEnded(c) | Output::LoadCall(c) => !set.contains(c.as_str()),
            _ => true,
        });
        if released > 0 {
            tracing::info!(
                calls = released,
                "calls released: another node acts for them now"
            );
        }
        released
    }

    /// Forgets every call (this node lost the virtual IP): [`Proxy::release_calls`] for all.
    pub fn release_all_calls(&mut self, now: Instant) -> usize {
        let all = self.calls.ids();
        self.release_calls(&all, now)
    }
}
