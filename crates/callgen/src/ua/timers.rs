//! A call's deadlines: the earliest of them is the call's one entry in the agent's timer
//! heap (re-pushed whenever the call is put back), and `on_call_timer` does what each one due
//! asks — a transaction's retransmission or timeout, answering after the ring time, giving up
//! on an unanswered call, the CANCEL after the answer timeout, our re-INVITE, the BYE at the
//! hold time, and forgetting an ended call once it has lingered.

/// A call's own deadlines, beside its transactions' timers. Each is consumed when it passes,
/// acted on or not, so none fires twice.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// The BYE at the hold time (or, for the side that does not hang up, the give-up after it).
    pub(super) hangup_at: Option<Instant>,
    /// UAC: the CANCEL after the answer timeout.
    pub(super) cancel_at: Option<Instant>,
    /// UAC: our re-INVITE (after `reinvite_after`, or the §14.1 back-off after a 491).
    pub(super) reinvite_at: Option<Instant>,
    /// UAS: the 200 after the ring time.
    pub(super) answer_at: Option<Instant>,
    /// UAS: give up on an INVITE nobody answers or cancels.
    pub(super) abandon_at: Option<Instant>,
    /// An ended call is forgotten (it lingers to answer retransmissions).
    pub(super) linger_until: Option<Instant>,
}

impl Deadlines {
    /// The earliest of them.
    pub(super) fn earliest(&self) -> Option<Instant> {
        [
            self.hangup_at,
            self.cancel_at,
            self.reinvite_at,
            self.answer_at,
            self.abandon_at,
            self.linger_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

use std::cmp::Reverse;
use std::time::Instant;

use anchorage_sip::Method;

use super::{Agent, Call, ClientTx, Outcome, State};

impl Agent {
    /// Puts the call's earliest deadline (its own or its transactions') in the timer heap.
    pub(super) fn schedule(&mut self, call: &Call) {
        let next = [call.tx.poll_timeout(), call.deadlines.earliest()]
            .into_iter()
            .flatten()
            .min();
        if let Some(t) = next {
            self.timers.push(Reverse((t, call.r.id)));
        }
    }

    /// Runs what is due at `now` for `call`; `true` when the call is to be forgotten.
    pub(super) fn on_call_timer(&mut self, now: Instant, call: &mut Call) -> bool {
        if call.deadlines.linger_until.is_some_and(|t| t <= now) {
            return true;
        }
        // Client transactions: retransmit, or give up.
        for which in [Method::Invite, Method::Bye, Method::Cancel] {
            let slot = match which {
                Method::Invite => &mut call.tx.client,
                Method::Bye => &mut call.tx.bye,
                _ => &mut call.tx.cancel,
            };
            let Some(tx) = slot.as_mut() else { continue };
            let todo = tx.handle_timeout(now);
            if todo.timed_out {
                if let Some(tx) = slot.take() {
                    self.client_timeout(now, call, tx);
                }
                continue;
            }
            if todo.send {
                let (dest, data) = (tx.request.destination, tx.request.data.clone());
                self.send(call.r.side, dest, data);
            }
        }
        if let Some(s) = call.tx.server.as_mut() {
            let todo = s.handle_timeout(now);
            if todo.timed_out {
                let success = s.success();
                call.tx.server = None;
                if success && call.state == State::Answered {
                    // RFC 3261 §13.3.1.4: no ACK — end the dialog with a BYE.
                    call.record.reason = Some("no ACK for the 200".into());
                    call.record.established = Some(now);
                    self.send_bye(now, call);
                }
            } else if todo.send {
                let (dest, data) = (s.destination, s.data.clone());
                self.send(call.r.side, dest, data);
            }
        }
        // Each timer that passed is consumed, acted on or not, so none fires twice.
        let due = |t: &mut Option<Instant>| t.take_if(|t| *t <= now).is_some();
        if due(&mut call.deadlines.answer_at) && call.state == State::Calling {
            self.uas_answer(now, call);
        }
        if due(&mut call.deadlines.abandon_at) && call.state == State::Calling {
            self.uas_final(now, call, 480, "Temporarily Unavailable");
            self.end(
                now,
                call,
                Outcome::Failed,
                Some(480),
                "never answered nor cancelled",
            );
        }
        if due(&mut call.deadlines.cancel_at) && call.state == State::Proceeding {
            self.send_cancel(now, call);
        }
        if due(&mut call.deadlines.reinvite_at) {
            self.send_reinvite(now, call);
        }
        if due(&mut call.deadlines.hangup_at) && call.state == State::Established {
            if !call.hangs_up {
                call.record.reason = Some("no BYE from the other side at the hold time".into());
            }
            self.send_bye(now, call);
        }
        false
    }

    pub(super) fn client_timeout(&mut self, now: Instant, call: &mut Call, tx: ClientTx) {
        match tx.request.method {
            Method::Invite if call.state == State::Established => {
                // Our re-INVITE timed out: the other side is gone (§14.1: like 408).
                call.record.reason = Some("re-INVITE timed out".into());
                self.send_bye(now, call);
            }
            Method::Invite => {
                self.end(now, call, Outcome::Failed, Some(408), "INVITE timed out");
            }
            Method::Bye => {
                let reason = call
                    .record
                    .reason
                    .clone()
                    .unwrap_or_else(|| "BYE timed out".into());
                self.end(now, call, Outcome::Dropped, None, &reason);
            }
            _ => {}
        }
    }
}
