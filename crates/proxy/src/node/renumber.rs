//! CSeq renumbering as the node applies it (DESIGN.md "Dialogs"; the counters are in
//! `crate::dialog::Renumber`): the shift added to a forwarded in-dialog request after requests
//! of the proxy's own, the shift an in-dialog INVITE goes out with (kept for its ACK), and the
//! sender's own number put back in the response.

use anchorage_sip::Message;

use crate::node::anchoring::tag_of;
use crate::node::transactions::ServerId;
use crate::node::Proxy;

impl Proxy {
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
}
