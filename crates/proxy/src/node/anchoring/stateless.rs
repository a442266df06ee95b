//! A response to an initial INVITE that another node forwarded (it died, the virtual IP moved
//! here): no client transaction waits for it on this node, yet the call it belongs to is here
//! (claimed from the store, with the INVITE as it arrived). The response makes the dialog as
//! it would have on the node that forwarded the INVITE, and its SDP answer goes through the
//! relay the call is anchored on — the caller gets the relay's address, never the callee's —
//! before it is forwarded by its Via.

use std::time::Instant;

use anchorage_sip::{Message, Method};

use crate::media;
use crate::node::anchoring::{carries_sdp, tag_of, MediaWait};
use crate::node::io::{Datagram, Transmit};
use crate::node::response::upstream_destination;
use crate::node::Proxy;

impl Proxy {
    /// Whether `req` is a retransmission of the open initial INVITE of a call held here that
    /// another node forwarded (same Via branch and CSeq as the INVITE stored with the call): it
    /// is answered `100 Trying` and goes no further — the callee has it already, and the call
    /// is not anchored a second time. Its final response comes here by the Via.
    pub(in crate::node) fn absorb_forwarded_invite(&mut self, req: &Message, d: &Datagram) -> bool {
        let Ok(call_id) = req.call_id() else {
            return false;
        };
        let Some(invite) = self.calls.open_invite(call_id) else {
            return false;
        };
        let Ok(stored) = Message::parse(invite.request.clone()) else {
            return false;
        };
        let branch = |m: &Message| {
            m.top_via()
                .ok()
                .and_then(|v| v.branch().map(str::to_string))
        };
        let cseq = |m: &Message| m.cseq().ok().map(|c| c.seq);
        if branch(req).is_none() || branch(req) != branch(&stored) || cseq(req) != cseq(&stored) {
            return false;
        }
        tracing::info!(%call_id, "the INVITE another node forwarded, retransmitted here: answered 100, not forwarded again");
        if let Ok(trying) = req.response(100, "Trying").build() {
            self.out.push_back(Transmit {
                data: trying.bytes(),
                destination: upstream_destination(req, d.source, d.transport),
                transport: d.transport,
                local: Some(d.local),
            });
        }
        true
    }

    /// Handles `resp` (status `status`, our Via on top, no client transaction here) if it
    /// answers the open initial INVITE of a call held here: the dialog is made from the stored
    /// INVITE, and a response with SDP waits for the relay's answer (true: taken; it is
    /// forwarded once the relay has rewritten it). False: forward it as it is.
    pub(in crate::node) fn answer_stateless(
        &mut self,
        resp: &Message,
        status: u16,
        branch: &str,
        now: Instant,
    ) -> bool {
        let Ok(call_id) = resp.call_id() else {
            return false;
        };
        if !resp.cseq().is_ok_and(|c| c.method == Method::Invite) || !(101..300).contains(&status) {
            return false;
        }
        let Some(invite) = self.calls.open_invite(call_id).cloned() else {
            return false;
        };
        let call_id = call_id.to_string();
        let callee_tag = tag_of(resp.to());
        if !callee_tag.is_empty() {
            if let (Ok(request), Ok(popped)) = (
                Message::parse(invite.request.clone()),
                resp.edit().pop_via().finish_message(),
            ) {
                let changed = self.calls.update_dialogs(&call_id, |d| {
                    d.on_response(
                        &request,
                        invite.source,
                        invite.transport,
                        invite.local,
                        &popped,
                        now,
                    )
                });
                if changed {
                    self.schedule_dialog_sweep(now);
                }
                // The callee is reached where the INVITE's branch went.
                let hop = self
                    .calls
                    .invite_branches(&call_id)
                    .iter()
                    .find(|b| b.branch == branch)
                    .map(|b| (b.destination, b.transport));
                if let Some((destination, transport)) = hop {
                    self.calls.update_dialogs(&call_id, |d| {
                        d.set_callee_hop(&callee_tag, destination, transport)
                    });
                }
            }
        }
        if !carries_sdp(resp) {
            return false;
        }
        let Some(call) = self.calls.media(&call_id).cloned() else {
            return false;
        };
        let request = media::offer_answer(
            true,
            &call_id,
            &call.caller_tag,
            Some(callee_tag.as_str()).filter(|t| !t.is_empty()),
            resp.body_bytes(),
            &call.policy.caller_flags,
        )
        .rtpproxy(&call.policy.caller_rtpproxy);
        match self.relays.send(call.node, &request, now) {
            Some(id) => {
                tracing::info!(%call_id, status, "a response to an INVITE another node forwarded: its answer goes through the call's relay");
                let wait = MediaWait::StatelessAnswer {
                    response: Box::new(resp.clone()),
                };
                self.media_waits.insert((call.node, id), wait);
                true
            }
            None => false,
        }
    }

    /// The relay's answer for [`Proxy::answer_stateless`] (or none: the relay failed; the
    /// response is dropped, and the callee's retransmission of a 2xx tries again).
    pub(in crate::node) fn on_stateless_answer(
        &mut self,
        response: &Message,
        sdp: Option<bytes::Bytes>,
        now: Instant,
    ) {
        let Some(sdp) = sdp else {
            tracing::warn!(call_id = ?response.call_id().ok(), "the relay did not answer for a response to another node's INVITE: dropped (a 2xx is retransmitted)");
            return;
        };
        if let Some(call) = response
            .call_id()
            .ok()
            .and_then(|c| self.calls.media_mut(c))
        {
            let (from, to) = call.legs_from(&tag_of(response.to()));
            from.received = Some(response.body_bytes());
            to.record_sent(&sdp);
        }
        if let Ok(rewritten) = response.edit().set_body(sdp).finish_message() {
            self.forward_response_stateless(&rewritten, now);
        }
    }
}
