//! A call's deadlines: the earliest of them is the call's one entry in the agent's timer
//! heap (re-pushed whenever the call is put back), and `on_call_timer` does what each one due
//! asks — a transaction's retransmission or timeout, answering after the ring time, giving up
//! on an unanswered call, the CANCEL after the answer timeout, our re-INVITE, the BYE at the
//! hold time, and forgetting an ended call once it has lingered.

use std::cmp::Reverse;
use std::time::Instant;

use anchorage_sip::Method;

use super::{Agent, Call, ClientTx, Outcome, ServerTx, State};

impl Agent {
    pub(super) fn schedule(&mut self, call: &Call) {
        let deadlines = [
            call.client.as_ref().and_then(ClientTx::poll_timeout),
            call.bye.as_ref().and_then(ClientTx::poll_timeout),
            call.cancel.as_ref().and_then(ClientTx::poll_timeout),
            call.server.as_ref().and_then(ServerTx::poll_timeout),
            call.hangup_at,
            call.cancel_at,
            call.reinvite_at,
            call.answer_at,
            call.abandon_at,
            call.linger_until,
        ];
        if let Some(t) = deadlines.into_iter().flatten().min() {
            self.timers.push(Reverse((t, call.r.id)));
        }
    }

    pub(super) fn on_call_timer(&mut self, now: Instant, call: &mut Call) -> bool {
        if call.linger_until.is_some_and(|t| t <= now) {
            return true;
        }
        // Client transactions: retransmit, or give up.
        for which in [Method::Invite, Method::Bye, Method::Cancel] {
            let slot = match which {
                Method::Invite => &mut call.client,
                Method::Bye => &mut call.bye,
                _ => &mut call.cancel,
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
        if let Some(s) = call.server.as_mut() {
            let todo = s.handle_timeout(now);
            if todo.timed_out {
                let success = s.success();
                call.server = None;
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
        if due(&mut call.answer_at) && call.state == State::Calling {
            self.uas_answer(now, call);
        }
        if due(&mut call.abandon_at) && call.state == State::Calling {
            self.uas_final(now, call, 480, "Temporarily Unavailable");
            self.end(
                now,
                call,
                Outcome::Failed,
                Some(480),
                "never answered nor cancelled",
            );
        }
        if due(&mut call.cancel_at) && call.state == State::Proceeding {
            self.send_cancel(now, call);
        }
        if due(&mut call.reinvite_at) {
            self.send_reinvite(now, call);
        }
        if due(&mut call.hangup_at) && call.state == State::Established {
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
