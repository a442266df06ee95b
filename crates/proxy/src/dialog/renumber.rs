//! CSeq renumbering (DESIGN.md "Dialogs"; RFC 3261 §12.2: a party's CSeq numbers only grow):
//! after the proxy sends requests of its own into a dialog, the other party's requests towards
//! that leg are shifted up so the receiver sees a strictly increasing sequence; an ACK keeps its
//! INVITE's shift; numbers are reserved in blocks for the call store, and a restarted node
//! resumes above them.

use super::Dialog;

/// CSeq renumbering (DESIGN.md "Dialogs"): after the proxy sent `n` requests of its own into the
/// dialog towards a leg, every request the other leg sends towards it is renumbered up by `n`
/// so that the receiving leg sees a strictly increasing sequence; responses go back with the
/// sender's own numbers (the server transaction holds them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Renumber {
    /// Added to the CSeq of requests from the caller to the callee.
    pub to_callee: u32,
    /// Added to the CSeq of requests from the callee to the caller.
    pub to_caller: u32,
    /// The highest CSeq the proxy itself sent to the callee (as the caller).
    pub own_to_callee: u32,
    /// The highest CSeq the proxy itself sent to the caller (as the callee).
    pub own_to_caller: u32,
    /// The caller's latest in-dialog INVITE: its CSeq and the offset it went out with (its ACK
    /// takes the same offset, whatever the proxy sent in between).
    pub invite_from_caller: Option<(u32, u32)>,
    /// The callee's latest in-dialog INVITE and its offset.
    pub invite_from_callee: Option<(u32, u32)>,
    /// The highest CSeq the proxy may send to the callee with the call's record durable (a
    /// restarted node starts above it, so it never reuses a number it may have sent).
    pub reserved_to_callee: u32,
    /// The highest CSeq the proxy may send to the caller, likewise.
    pub reserved_to_caller: u32,
}

/// How many requests a party may have sent in the last moments of a node that died, beyond
/// what its record says (its changes gather for `[cluster] write_delay_ms` before they are
/// written): the node that takes the call over numbers its own requests above that many.
pub const UNSEEN_CSEQ_MARGIN: u32 = 32;

impl Dialog {
    /// The CSeq for a request the proxy sends to the callee as the caller: one more than the
    /// callee has seen from the caller's side. Records it, and shifts the caller's later
    /// requests by one.
    pub fn next_cseq_to_callee(&mut self) -> u32 {
        let seen = self
            .caller
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_callee)
            .max(self.renumber.own_to_callee);
        let next = seen.saturating_add(1);
        self.renumber.own_to_callee = next;
        self.renumber.to_callee = self.renumber.to_callee.saturating_add(1);
        next
    }

    /// The CSeq for a request the proxy sends to the caller as the callee (see
    /// [`Dialog::next_cseq_to_callee`]).
    pub fn next_cseq_to_caller(&mut self) -> u32 {
        let seen = self
            .callee
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_caller)
            .max(self.renumber.own_to_caller);
        let next = seen.saturating_add(1);
        self.renumber.own_to_caller = next;
        self.renumber.to_caller = self.renumber.to_caller.saturating_add(1);
        next
    }

    /// The offset for `from_tag`'s request with CSeq `seq`: an ACK (`is_ack`) takes the offset
    /// its INVITE went out with, so a request of the proxy's own between a 2xx and its ACK does
    /// not shift the ACK away from its INVITE's number (RFC 3261 §17.1.1.3: same CSeq number).
    pub fn cseq_offset_for(&self, from_tag: &str, is_ack: bool, seq: u32) -> u32 {
        let invite = if from_tag == self.id.caller_tag {
            self.renumber.invite_from_caller
        } else if from_tag == self.id.callee_tag {
            self.renumber.invite_from_callee
        } else {
            None
        };
        match invite {
            Some((invite_seq, offset)) if is_ack && invite_seq == seq => offset,
            _ => self.cseq_offset_from(from_tag),
        }
    }

    /// An in-dialog INVITE from `from_tag` with CSeq `seq` is forwarded now: its offset is
    /// kept for its ACK.
    pub fn note_invite(&mut self, from_tag: &str, seq: u32) {
        let offset = self.cseq_offset_from(from_tag);
        if from_tag == self.id.caller_tag {
            self.renumber.invite_from_caller = Some((seq, offset));
        } else if from_tag == self.id.callee_tag {
            self.renumber.invite_from_callee = Some((seq, offset));
        }
    }

    /// Reserves CSeq numbers for the proxy's own requests up to `block` beyond the next one in
    /// each direction; whether the reservation grew (the record must then be written durably
    /// before one of those numbers is used).
    pub fn reserve_cseq(&mut self, block: u32) -> bool {
        let next_to_callee = self
            .caller
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_callee)
            .max(self.renumber.own_to_callee)
            .saturating_add(1);
        let next_to_caller = self
            .callee
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_caller)
            .max(self.renumber.own_to_caller)
            .saturating_add(1);
        let r = &mut self.renumber;
        if next_to_callee <= r.reserved_to_callee && next_to_caller <= r.reserved_to_caller {
            return false;
        }
        r.reserved_to_callee = r
            .reserved_to_callee
            .max(next_to_callee.saturating_add(block));
        r.reserved_to_caller = r
            .reserved_to_caller
            .max(next_to_caller.saturating_add(block));
        true
    }

    /// Taken back after a restart or by another node: the proxy may have used any number up
    /// to its reservations without the record saying so, and the parties' last requests —
    /// forwarded within the write delay before the crash — may be missing from the record,
    /// so its own numbers start above both (the reservations, and each side's last number
    /// seen plus [`UNSEEN_CSEQ_MARGIN`]) and each party's requests are shifted enough to stay
    /// above them (a gap in CSeq is allowed, a repeat is not: RFC 3261 §12.2.2).
    pub fn resume_above_reservations(&mut self) {
        let seen_by_callee = self
            .caller
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_callee)
            .max(self.renumber.own_to_callee);
        let seen_by_caller = self
            .callee
            .last_cseq
            .unwrap_or(0)
            .saturating_add(self.renumber.to_caller)
            .max(self.renumber.own_to_caller);
        let r = &mut self.renumber;
        r.reserved_to_callee = r
            .reserved_to_callee
            .max(seen_by_callee.saturating_add(UNSEEN_CSEQ_MARGIN));
        r.reserved_to_caller = r
            .reserved_to_caller
            .max(seen_by_caller.saturating_add(UNSEEN_CSEQ_MARGIN));
        if r.reserved_to_callee > r.own_to_callee {
            r.own_to_callee = r.reserved_to_callee;
            let floor = r
                .reserved_to_callee
                .saturating_sub(self.caller.last_cseq.unwrap_or(0));
            r.to_callee = r.to_callee.max(floor);
        }
        if r.reserved_to_caller > r.own_to_caller {
            r.own_to_caller = r.reserved_to_caller;
            let floor = r
                .reserved_to_caller
                .saturating_sub(self.callee.last_cseq.unwrap_or(0));
            r.to_caller = r.to_caller.max(floor);
        }
    }

    /// The offset for a request from the party tagged `from_tag`.
    pub fn cseq_offset_from(&self, from_tag: &str) -> u32 {
        if from_tag == self.id.caller_tag {
            self.renumber.to_callee
        } else if from_tag == self.id.callee_tag {
            self.renumber.to_caller
        } else {
            0
        }
    }
}
