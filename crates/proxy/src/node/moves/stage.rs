//! One call's move as a state machine of its own, without I/O: each state is named after what
//! it awaits and carries the data valid in it (the new node once one is picked, the SDP each
//! party will get once the new node made it, the legs' re-INVITEs once they are out), so no
//! field is an `Option` that only some states fill. The proxy (`call_move.rs`, `conclude.rs`)
//! sends what a transition asks for; the transitions and their guards are here and tested
//! here.
//!
//! ```text
//!  Idle ──offer_sent(node)──► Offer ──offer_answered──► Answer ──answer_answered──► Legs
//!   ▲                          │                          │                          │
//!   └───────── retry() ◄───────┴──────────────────────────┴──────────────────────────┘
//!                (ng error or timeout; a refused leg while the old node is dead)
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::NodeId;
use crate::reanchor::{JobId, MoveTarget, Party, Trigger};

/// What one call's move awaits.
#[derive(Debug, Clone)]
pub(in crate::node) enum Awaiting {
    /// Neither party may have an INVITE or UPDATE open when the move starts its offer (and
    /// after a failed attempt, the retry pause).
    Idle,
    /// The new node's reply to its offer (the caller's SDP).
    Offer {
        /// The node picked.
        node: NodeId,
    },
    /// The new node's reply to its answer (the callee's SDP).
    Answer {
        /// The node picked.
        node: NodeId,
        /// What the callee will get: the offer's rewrite, with the callee's own `o=`.
        for_callee: Bytes,
    },
    /// The move's record written durably (the store has it before a re-INVITE goes out, so a
    /// restarted node knows what the parties may have been told).
    Saving(Inviting),
    /// Both parties' answers to the re-INVITEs.
    Legs(Inviting),
}

/// How long a node that took over a move waits for a party's answer to a re-INVITE the dead
/// node may or may not have sent (its record was saved, the mark that it went out was not)
/// before it sends that re-INVITE itself: a party that had it answers within this (its 2xx
/// is retransmitted after 500 ms until ACKed), and one that did not would wait for ever.
pub(in crate::node) const UNSURE_LEG_WAIT: Duration = Duration::from_secs(1);

/// The re-INVITEs of a move, out to both parties at once.
#[derive(Debug, Clone)]
pub(in crate::node) struct Inviting {
    /// The new node.
    pub(in crate::node) node: NodeId,
    /// The SDP each party gets (caller, callee), with its own `o=`.
    pub(in crate::node) sdp_for: [Bytes; 2],
    /// Each leg's re-INVITE.
    pub(in crate::node) legs: [LegMove; 2],
    /// When the legs must have answered.
    pub(in crate::node) deadline: Instant,
}

/// A leg's re-INVITE.
#[derive(Debug, Clone, Default)]
pub(in crate::node) struct LegMove {
    /// Its final outcome: the answer SDP, or the failure status.
    pub(in crate::node) done: Option<Result<Bytes, u16>>,
    /// When it goes (again): after a 491's back-off, or, for a move taken over from a node
    /// that died, when a re-INVITE that node may not have sent is sent by this one.
    pub(in crate::node) retry_at: Option<Instant>,
    /// It went out (the record says so once written: a node taking over knows the party has
    /// it, and waits for its answer instead of sending it again).
    pub(in crate::node) sent: bool,
}

/// What a leg's final answer leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::node) enum LegStep {
    /// Not awaited (no re-INVITEs out, or this leg already answered): nothing to do.
    Ignored,
    /// Glare (491): the re-INVITE goes again at this time.
    RetryAt(Instant),
    /// The other leg has yet to answer.
    Waiting,
    /// Both legs answered: (caller, callee).
    BothAnswered([Result<Bytes, u16>; 2]),
}

/// One call being moved.
#[derive(Debug, Clone)]
pub(in crate::node) struct CallMove {
    pub(in crate::node) job: JobId,
    pub(in crate::node) trigger: Trigger,
    pub(in crate::node) old_node: NodeId,
    pub(in crate::node) target: MoveTarget,
    /// Nodes tried already (not picked again by this move).
    pub(in crate::node) tried: Vec<NodeId>,
    pub(in crate::node) started: Instant,
    /// Attempts that failed (ng errors, a refused leg with a dead old node).
    pub(in crate::node) attempts: u32,
    pub(in crate::node) awaiting: Awaiting,
}

impl CallMove {
    /// A move of a call on `old_node`, starting at `now` by waiting for the call to be idle.
    pub(in crate::node) fn new(
        job: JobId,
        trigger: Trigger,
        old_node: NodeId,
        target: MoveTarget,
        tried: Vec<NodeId>,
        now: Instant,
    ) -> CallMove {
        CallMove {
            job,
            trigger,
            old_node,
            target,
            tried,
            started: now,
            attempts: 0,
            awaiting: Awaiting::Idle,
        }
    }

    /// The node the move is making a session on, once one is picked.
    pub(in crate::node) fn new_node(&self) -> Option<NodeId> {
        match &self.awaiting {
            Awaiting::Idle => None,
            Awaiting::Offer { node } | Awaiting::Answer { node, .. } => Some(*node),
            Awaiting::Saving(i) | Awaiting::Legs(i) => Some(i.node),
        }
    }

    /// Whether the move has started changing the call (a party's own offer then meets a 491).
    pub(in crate::node) fn is_active(&self) -> bool {
        !matches!(self.awaiting, Awaiting::Idle)
    }

    /// The offer went to `node`: it is tried, and its reply awaited.
    pub(in crate::node) fn offer_sent(&mut self, node: NodeId) {
        self.tried.push(node);
        self.awaiting = Awaiting::Offer { node };
    }

    /// The new node made the callee's SDP; the answer goes to it next. False if no offer was
    /// awaited.
    pub(in crate::node) fn offer_answered(&mut self, for_callee: Bytes) -> bool {
        let Awaiting::Offer { node } = self.awaiting else {
            return false;
        };
        self.awaiting = Awaiting::Answer { node, for_callee };
        true
    }

    /// The new node made the caller's SDP: both re-INVITEs go out, to be answered by
    /// `deadline` — first saved, if `durable`. False if no answer was awaited.
    pub(in crate::node) fn answer_answered(
        &mut self,
        for_caller: Bytes,
        deadline: Instant,
        durable: bool,
    ) -> bool {
        let Awaiting::Answer { node, for_callee } = &self.awaiting else {
            return false;
        };
        let inviting = Inviting {
            node: *node,
            sdp_for: [for_caller, for_callee.clone()],
            legs: [LegMove::default(), LegMove::default()],
            deadline,
        };
        self.awaiting = if durable {
            Awaiting::Saving(inviting)
        } else {
            Awaiting::Legs(inviting)
        };
        true
    }

    /// A move taken over from a record whose re-INVITEs may be out (the node that started it
    /// died), to `node`. A leg whose re-INVITE is known to have gone out (`sent`: caller,
    /// callee) counts as accepted: its party may have answered the dead node, which ACKed
    /// it, and nothing more would ever come. A leg not known to have gone out is sent by this
    /// node after [`UNSURE_LEG_WAIT`], unless its party answers the first one before; the
    /// move then ends as any other, by `deadline`.
    pub(in crate::node) fn taken_over(
        old_node: NodeId,
        node: NodeId,
        sdp_for: [Bytes; 2],
        sent: [bool; 2],
        now: Instant,
        deadline: Instant,
    ) -> CallMove {
        let leg = |sent: bool| LegMove {
            done: sent.then(|| Ok(Bytes::new())),
            retry_at: (!sent).then_some(now + UNSURE_LEG_WAIT),
            sent,
        };
        CallMove {
            job: JobId(0),
            trigger: Trigger::Takeover,
            old_node,
            target: MoveTarget::default(),
            tried: vec![old_node, node],
            started: now,
            attempts: 0,
            awaiting: Awaiting::Legs(Inviting {
                node,
                sdp_for,
                legs: [leg(sent[0]), leg(sent[1])],
                deadline: deadline.max(now + UNSURE_LEG_WAIT + Duration::from_secs(4)),
            }),
        }
    }

    /// When the move must be looked at again while its legs are out: each leg's retry time
    /// and the deadline.
    pub(in crate::node) fn wake_times(&self) -> Vec<Instant> {
        let Awaiting::Legs(i) = &self.awaiting else {
            return Vec::new();
        };
        i.legs
            .iter()
            .filter_map(|l| l.retry_at)
            .chain([i.deadline])
            .collect()
    }

    /// Whether the move was taken over from a node that died (a party's 2xx that no
    /// transaction here awaits is then its answer to the dead node's re-INVITE).
    pub(in crate::node) fn is_taken_over(&self) -> bool {
        self.trigger == Trigger::Takeover
    }

    /// `party`'s re-INVITE went out.
    pub(in crate::node) fn leg_sent(&mut self, party: Party) {
        if let Awaiting::Legs(i) = &mut self.awaiting {
            if let Some(leg) = i.legs.get_mut(party.index()) {
                leg.sent = true;
            }
        }
    }

    /// Both legs' outcomes (caller, callee), once both are in.
    pub(in crate::node) fn outcomes(&self) -> Option<[Result<Bytes, u16>; 2]> {
        match &self.awaiting {
            Awaiting::Legs(Inviting {
                legs:
                    [LegMove {
                        done: Some(caller), ..
                    }, LegMove {
                        done: Some(callee), ..
                    }],
                ..
            }) => Some([caller.clone(), callee.clone()]),
            _ => None,
        }
    }

    /// Whether each leg's re-INVITE (caller, callee) went out.
    pub(in crate::node) fn legs_sent(&self) -> [bool; 2] {
        match &self.awaiting {
            Awaiting::Legs(i) => [i.legs[0].sent, i.legs[1].sent],
            _ => [false, false],
        }
    }

    /// Whether `party`'s answer is still awaited.
    pub(in crate::node) fn awaits_leg(&self, party: Party) -> bool {
        match &self.awaiting {
            Awaiting::Legs(i) => i.legs.get(party.index()).is_some_and(|l| l.done.is_none()),
            _ => false,
        }
    }

    /// The move's record is saved (or could not be: the move goes on from memory): the
    /// re-INVITEs go out now. False if nothing was being saved.
    pub(in crate::node) fn saved(&mut self) -> bool {
        let Awaiting::Saving(i) = &self.awaiting else {
            return false;
        };
        self.awaiting = Awaiting::Legs(i.clone());
        true
    }

    /// Whether the re-INVITEs are out or about to go (the parties may have the new node's SDP).
    pub(in crate::node) fn invites_out(&self) -> bool {
        matches!(self.awaiting, Awaiting::Saving(_) | Awaiting::Legs(_))
    }

    /// The attempt failed: back to waiting, one attempt more. Returns the attempts so far.
    pub(in crate::node) fn retry(&mut self) -> u32 {
        self.attempts += 1;
        self.awaiting = Awaiting::Idle;
        self.attempts
    }

    /// The SDP `party`'s re-INVITE carries, while the re-INVITEs are out.
    pub(in crate::node) fn sdp_for(&self, party: Party) -> Option<&Bytes> {
        match &self.awaiting {
            Awaiting::Saving(i) | Awaiting::Legs(i) => i.sdp_for.get(party.index()),
            _ => None,
        }
    }

    /// `party` answered its re-INVITE with `outcome`; a 491 is retried after `backoff` (the
    /// move's deadline stretched to cover it).
    pub(in crate::node) fn leg_answered(
        &mut self,
        party: Party,
        outcome: Result<Bytes, u16>,
        now: Instant,
        backoff: Duration,
    ) -> LegStep {
        let Awaiting::Legs(i) = &mut self.awaiting else {
            return LegStep::Ignored;
        };
        let Some(leg) = i.legs.get_mut(party.index()) else {
            return LegStep::Ignored;
        };
        if leg.done.is_some() {
            return LegStep::Ignored;
        }
        if outcome == Err(491) {
            let at = now + backoff;
            leg.retry_at = Some(at);
            i.deadline = i.deadline.max(at + Duration::from_secs(4));
            return LegStep::RetryAt(at);
        }
        leg.done = Some(outcome);
        leg.retry_at = None;
        match &i.legs {
            [LegMove {
                done: Some(caller), ..
            }, LegMove {
                done: Some(callee), ..
            }] => LegStep::BothAnswered([caller.clone(), callee.clone()]),
            _ => LegStep::Waiting,
        }
    }

    /// The legs whose glare back-off is over at `now` (their retry time is cleared: the
    /// re-INVITE goes again).
    pub(in crate::node) fn due_retries(&mut self, now: Instant) -> Vec<Party> {
        let Awaiting::Legs(i) = &mut self.awaiting else {
            return Vec::new();
        };
        let mut due = Vec::new();
        for party in [Party::Caller, Party::Callee] {
            if let Some(leg) = i.legs.get_mut(party.index()) {
                if leg.retry_at.is_some_and(|at| at <= now) {
                    leg.retry_at = None;
                    due.push(party);
                }
            }
        }
        due
    }

    /// The legs still unanswered when the deadline has passed at `now` (treated as gone).
    pub(in crate::node) fn overdue_legs(&self, now: Instant) -> Vec<Party> {
        let Awaiting::Legs(i) = &self.awaiting else {
            return Vec::new();
        };
        if i.deadline > now {
            return Vec::new();
        }
        [Party::Caller, Party::Callee]
            .into_iter()
            .filter(|p| i.legs.get(p.index()).is_some_and(|l| l.done.is_none()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
    fn t0() -> Instant {
        Instant::now()
    }

    fn a_move(now: Instant) -> CallMove {
        CallMove::new(
            JobId(1),
            Trigger::Drain,
            0,
            MoveTarget::default(),
            vec![0],
            now,
        )
    }

    fn sdp(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_move_goes_offer_answer_legs_and_ends_when_both_legs_answered() {
        let now = t0();
        let mut m = a_move(now);
        assert!(!m.is_active());
        assert_eq!(m.new_node(), None);
        assert!(!m.offer_answered(sdp("x")), "no offer out yet");
        m.offer_sent(2);
        assert_eq!((m.new_node(), m.tried.clone()), (Some(2), vec![0, 2]));
        assert!(m.is_active());
        assert!(
            !m.answer_answered(sdp("x"), now, false),
            "the offer's reply comes first"
        );
        assert!(m.offer_answered(sdp("callee")));
        let deadline = now + Duration::from_secs(10);
        assert!(m.answer_answered(sdp("caller"), deadline, false));
        assert_eq!(m.sdp_for(Party::Caller), Some(&sdp("caller")));
        assert_eq!(m.sdp_for(Party::Callee), Some(&sdp("callee")));
        assert_eq!(
            m.leg_answered(Party::Callee, Ok(sdp("a2")), now, Duration::ZERO),
            LegStep::Waiting
        );
        assert_eq!(
            m.leg_answered(Party::Callee, Ok(sdp("again")), now, Duration::ZERO),
            LegStep::Ignored,
            "a leg answers once"
        );
        assert_eq!(
            m.leg_answered(Party::Caller, Err(488), now, Duration::ZERO),
            LegStep::BothAnswered([Err(488), Ok(sdp("a2"))])
        );
    }

    #[test]
    fn glare_retries_the_leg_after_its_back_off_and_stretches_the_deadline() {
        let now = t0();
        let mut m = a_move(now);
        m.offer_sent(1);
        m.offer_answered(sdp("callee"));
        m.answer_answered(sdp("caller"), now + Duration::from_secs(1), false);
        let backoff = Duration::from_millis(2_500);
        assert_eq!(
            m.leg_answered(Party::Callee, Err(491), now, backoff),
            LegStep::RetryAt(now + backoff)
        );
        assert_eq!(m.due_retries(now), vec![]);
        assert_eq!(
            m.overdue_legs(now + Duration::from_secs(2)),
            vec![],
            "stretched"
        );
        assert_eq!(m.due_retries(now + backoff), vec![Party::Callee]);
        assert_eq!(m.due_retries(now + backoff), vec![], "cleared once due");
        let Awaiting::Legs(i) = &m.awaiting else {
            panic!("{:?}", m.awaiting)
        };
        assert_eq!(i.deadline, now + backoff + Duration::from_secs(4));
        assert_eq!(
            m.overdue_legs(i.deadline),
            vec![Party::Caller, Party::Callee]
        );
    }

    #[test]
    fn a_durable_move_is_saved_before_its_re_invites_and_takes_no_answer_until_then() {
        let now = t0();
        let mut m = a_move(now);
        m.offer_sent(1);
        m.offer_answered(sdp("callee"));
        assert!(m.answer_answered(sdp("caller"), now + Duration::from_secs(5), true));
        assert!(m.invites_out() && m.is_active());
        assert_eq!(m.sdp_for(Party::Callee), Some(&sdp("callee")));
        assert_eq!(
            m.leg_answered(Party::Caller, Ok(sdp("early")), now, Duration::ZERO),
            LegStep::Ignored,
            "no re-INVITE is out yet"
        );
        assert!(m.saved());
        assert!(!m.saved(), "saved once");
        assert_eq!(
            m.leg_answered(Party::Caller, Ok(sdp("a")), now, Duration::ZERO),
            LegStep::Waiting
        );
    }

    #[test]
    fn a_move_taken_over_counts_sent_legs_as_accepted_and_sends_the_others_after_the_wait() {
        let now = t0();
        let deadline = now + Duration::from_secs(30);
        let sdps = [sdp("caller"), sdp("callee")];
        let both = CallMove::taken_over(0, 1, sdps.clone(), [true, true], now, deadline);
        assert!(both.is_taken_over());
        assert_eq!(both.outcomes(), Some([Ok(Bytes::new()), Ok(Bytes::new())]));
        let mut m = CallMove::taken_over(0, 1, sdps, [false, true], now, deadline);
        assert_eq!(m.outcomes(), None);
        assert_eq!((m.old_node, m.new_node()), (0, Some(1)));
        assert!(m.awaits_leg(Party::Caller) && !m.awaits_leg(Party::Callee));
        assert_eq!(m.wake_times(), vec![now + UNSURE_LEG_WAIT, deadline]);
        assert_eq!(m.due_retries(now), vec![]);
        assert_eq!(
            m.due_retries(now + UNSURE_LEG_WAIT),
            vec![Party::Caller],
            "the caller's re-INVITE goes again"
        );
        m.leg_sent(Party::Caller);
        assert_eq!(m.legs_sent(), [true, true]);
        assert_eq!(
            m.leg_answered(Party::Caller, Ok(sdp("a")), now, Duration::ZERO),
            LegStep::BothAnswered([Ok(sdp("a")), Ok(Bytes::new())])
        );
        // A leg answered before its wait is over is not sent again.
        let mut m = CallMove::taken_over(0, 1, [sdp("x"), sdp("y")], [false, false], now, now);
        m.leg_answered(Party::Callee, Ok(sdp("b")), now, Duration::ZERO);
        assert_eq!(m.due_retries(now + UNSURE_LEG_WAIT), vec![Party::Caller]);
        let Awaiting::Legs(i) = &m.awaiting else {
            panic!("{:?}", m.awaiting)
        };
        assert!(
            i.deadline >= now + UNSURE_LEG_WAIT,
            "the deadline covers the wait"
        );
    }

    #[test]
    fn a_failed_attempt_forgets_the_node_but_not_that_it_was_tried() {
        let now = t0();
        let mut m = a_move(now);
        m.offer_sent(3);
        assert_eq!(m.retry(), 1);
        assert_eq!((m.new_node(), m.is_active()), (None, false));
        assert_eq!(m.tried, vec![0, 3]);
        assert_eq!(m.sdp_for(Party::Caller), None);
        assert_eq!(
            m.leg_answered(Party::Caller, Ok(sdp("late")), now, Duration::ZERO),
            LegStep::Ignored,
            "a late answer of an abandoned attempt changes nothing"
        );
    }
}
