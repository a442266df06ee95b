//! A call as it leaves the process and comes back: [`CallRecord`], the plain data another
//! start of this node (or another node) needs to carry the call on — its dialogs with their
//! CSeq renumbering, and where its media is anchored with each leg's SDPs — with relay nodes by
//! name and times on the wall clock, never an index or an `Instant` of this process.
//!
//! The core says which calls changed: once record keeping is on
//! ([`Proxy::enable_call_records`]), every call touched by an event comes out of
//! [`Proxy::poll_output`] once per event as [`Output::CallChanged`] (its latest record) or
//! [`Output::CallEnded`]; the driver hands them to the store. [`Proxy::import_call`] takes a
//! record back (at start, for the calls the node owned).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::dialog::Dialog;
use crate::media::{Policy, RtppLeg};
use crate::node::anchoring::{CallMedia, LegMedia};
pub use crate::node::calls::{InviteBranch, OpenInvite};
use crate::node::io::Output;
use crate::node::timers::TimerRef;
use crate::node::Proxy;
use crate::reanchor::Party;

/// How long the record of a call that came up or ended waits at most, whatever the write
/// delay: what a node dying after it could lose of such a call.
pub const URGENT_DELAY: Duration = Duration::from_millis(30);

/// One call, exportable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Its Call-ID.
    pub call_id: String,
    /// Its dialogs (one once confirmed), each with its creation on the wall clock.
    pub dialogs: Vec<DialogRecord>,
    /// Where its media is anchored, if it is.
    pub media: Option<MediaRecord>,
    /// A move in progress, if any.
    pub moving: Option<MoveRecord>,
    /// Where the initial INVITE was forwarded while it has no final response: a CANCEL or
    /// the ACK of a failure reaching another start of the node follows these.
    pub open_invite: Vec<InviteBranch>,
    /// The initial INVITE as it arrived, while it is open: a node that did not forward it
    /// makes the dialog from it when the callee's response reaches that node.
    pub open_invite_request: Option<OpenInvite>,
}

/// A move in progress, as a restarted node needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRecord {
    /// The relay node the move is making a session on.
    pub to: String,
    /// Whether its re-INVITEs may be out (the record is saved before they go): on import the
    /// move is then completed on `to` (the parties may already use it), else rolled back.
    pub invites_out: bool,
    /// The SDP each party's re-INVITE carries (caller, callee), once made.
    pub sdp_for: [Option<Bytes>; 2],
    /// Whether each party's re-INVITE (caller, callee) is known to have gone out: a node
    /// taking the move over waits for that party's answer; it sends the others' itself
    /// unless their answer comes first.
    pub sent: [bool; 2],
}

/// A dialog and when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogRecord {
    /// The dialog (its `created` is this process's; `created_unix_ms` is what travels).
    pub dialog: Dialog,
    /// When it was created, UNIX milliseconds.
    pub created_unix_ms: i64,
}

/// Where a call's media is anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRecord {
    /// The relay node, by name.
    pub node: String,
    /// Its relay set.
    pub set: String,
    /// ng flags for the SDP the caller gets.
    pub caller_flags: String,
    /// ng flags for the SDP the callee gets.
    pub callee_flags: String,
    /// RTPProxy letters (and address) for the SDP the caller gets.
    pub caller_rtpproxy: RtppLeg,
    /// RTPProxy letters (and address) for the SDP the callee gets.
    pub callee_rtpproxy: RtppLeg,
    /// Why RTPProxy nodes cannot carry the call, if so (a leg option only an ng node gives).
    pub rtpproxy_unfit: Option<String>,
    /// The caller's tag (which leg an SDP comes from).
    pub caller_tag: String,
    /// The caller's media.
    pub caller: LegMedia,
    /// The callee's media.
    pub callee: LegMedia,
    /// A late offer went out in a 2xx: the ACK carries the answer.
    pub answer_in_ack: bool,
    /// A late offer went out in a reliable provisional response: the PRACK carries it.
    pub answer_in_prack: bool,
}

/// Why a record could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// This node already holds the call.
    #[error("call {0:?} is already held by this node")]
    AlreadyHeld(String),
    /// The record names a relay node this proxy does not have.
    #[error("call {call_id:?} is anchored on relay node {node:?}, which this proxy does not have")]
    UnknownNode {
        /// The call.
        call_id: String,
        /// The node it names.
        node: String,
    },
}

impl Proxy {
    /// From now on, every call an event changes comes out of [`Proxy::poll_output`] as a
    /// record (the driver has a store). Off by default: without a store nothing is exported.
    pub fn enable_call_records(&mut self) {
        self.records = true;
        self.calls.track_changes();
    }

    /// The record of a call this node holds.
    pub fn export_call(&self, call_id: &str) -> Option<CallRecord> {
        let dialogs: Vec<DialogRecord> = self
            .calls
            .dialogs_of(call_id)
            .map(|d| DialogRecord {
                dialog: d.clone(),
                created_unix_ms: self.unix_us_at(d.created) / 1000,
            })
            .collect();
        let media = self.calls.media(call_id).and_then(|m| {
            Some(MediaRecord {
                node: self.relays.nodes().get(m.node)?.name.clone(),
                set: m.policy.set.clone(),
                caller_flags: m.policy.caller_flags.clone(),
                callee_flags: m.policy.callee_flags.clone(),
                caller_rtpproxy: m.policy.caller_rtpproxy.clone(),
                callee_rtpproxy: m.policy.callee_rtpproxy.clone(),
                rtpproxy_unfit: m.policy.rtpproxy_unfit.clone(),
                caller_tag: m.caller_tag.clone(),
                caller: m.caller.clone(),
                callee: m.callee.clone(),
                answer_in_ack: m.answer_in_ack,
                answer_in_prack: m.answer_in_prack,
            })
        });
        let open_invite = self.calls.invite_branches(call_id).to_vec();
        let open_invite_request = self.calls.open_invite(call_id).cloned();
        if dialogs.is_empty()
            && media.is_none()
            && open_invite.is_empty()
            && open_invite_request.is_none()
        {
            return None;
        }
        let moving = self.calls.moving(call_id).and_then(|m| {
            Some(MoveRecord {
                to: self.relays.nodes().get(m.new_node()?)?.name.clone(),
                invites_out: m.invites_out(),
                sdp_for: [
                    m.sdp_for(Party::Caller).cloned(),
                    m.sdp_for(Party::Callee).cloned(),
                ],
                sent: m.legs_sent(),
            })
        });
        Some(CallRecord {
            call_id: call_id.to_string(),
            dialogs,
            media,
            moving,
            open_invite,
            open_invite_request,
        })
    }

    /// Takes a call back from its record (at start, or when another node's call comes here):
    /// its dialogs, with their age on the wall clock and their own CSeq numbers above what was
    /// reserved, and its media on the named node. A move that was in progress is taken over
    /// if its re-INVITEs may have gone out (the parties' answers awaited, a re-INVITE not
    /// known to have gone sent again; then committed or rolled back as any move), else
    /// rolled back (the session it was making is deleted).
    pub fn import_call(&mut self, record: CallRecord, now: Instant) -> Result<(), ImportError> {
        let call_id = record.call_id.as_str();
        if self.calls.confirmed(call_id).is_some() || self.calls.media(call_id).is_some() {
            return Err(ImportError::AlreadyHeld(record.call_id));
        }
        let media = match &record.media {
            Some(m) => {
                let node =
                    self.relays
                        .by_name(&m.node)
                        .ok_or_else(|| ImportError::UnknownNode {
                            call_id: record.call_id.clone(),
                            node: m.node.clone(),
                        })?;
                Some(CallMedia {
                    node,
                    policy: Policy {
                        set: m.set.clone(),
                        caller_flags: m.caller_flags.clone(),
                        callee_flags: m.callee_flags.clone(),
                        caller_rtpproxy: m.caller_rtpproxy.clone(),
                        callee_rtpproxy: m.callee_rtpproxy.clone(),
                        rtpproxy_unfit: m.rtpproxy_unfit.clone(),
                    },
                    caller_tag: m.caller_tag.clone(),
                    caller: m.caller.clone(),
                    callee: m.callee.clone(),
                    answer_in_ack: m.answer_in_ack,
                    answer_in_prack: m.answer_in_prack,
                    forks: Vec::new(),
                })
            }
            None => None,
        };
        let now_unix_ms = self.unix_us_at(now) / 1000;
        for d in record.dialogs {
            let age = Duration::from_millis(
                u64::try_from(now_unix_ms.saturating_sub(d.created_unix_ms)).unwrap_or(0),
            );
            let mut dialog = d.dialog;
            dialog.created = now.checked_sub(age).unwrap_or(now);
            dialog.resume_above_reservations();
            self.calls
                .update_dialogs(call_id, |list| list.insert(dialog));
        }
        let mut taken_over = None;
        if let Some(mut media) = media {
            let mut node = media.node;
            let moved_to = record
                .moving
                .as_ref()
                .and_then(|m| Some((self.relays.by_name(&m.to)?, m)));
            match moved_to {
                Some((new_node, m))
                    if new_node != node && m.invites_out && !self.relays.is_up(new_node) =>
                {
                    // The parties may have the new relay, which is down here: the call is
                    // on it, and waits for a relay like any call of a dead one.
                    tracing::info!(%call_id, relay = m.to.as_str(), "an imported call's re-INVITEs may have gone out to a relay that is down here: the call waits on it");
                    for (leg, sdp) in [&mut media.caller, &mut media.callee]
                        .into_iter()
                        .zip(&m.sdp_for)
                    {
                        if let Some(sdp) = sdp {
                            leg.record_sent(sdp);
                        }
                    }
                    self.relays.adopt(node, call_id, &media.caller_tag);
                    self.delete_or_orphan(node, call_id, now);
                    node = new_node;
                    media.node = new_node;
                }
                Some((new_node, m)) if new_node != node && m.invites_out => {
                    if let [Some(for_caller), Some(for_callee)] = &m.sdp_for {
                        if m.sent == [true, true] {
                            tracing::info!(%call_id, relay = m.to.as_str(), "an imported call's re-INVITEs had gone out: its move is completed");
                        } else {
                            tracing::info!(%call_id, relay = m.to.as_str(), sent_to_caller = m.sent[0], sent_to_callee = m.sent[1], "an imported call's re-INVITEs may not all have gone out: its move is taken over, a party that does not answer gets its re-INVITE again");
                        }
                        let deadline =
                            now + Duration::from_secs(self.config.reanchor.invite_timeout_s);
                        taken_over = Some(crate::node::moves::CallMove::taken_over(
                            node,
                            new_node,
                            [for_caller.clone(), for_callee.clone()],
                            m.sent,
                            now,
                            deadline,
                        ));
                        // Either session may be the one to delete.
                        self.relays.adopt(new_node, call_id, &media.caller_tag);
                    }
                }
                Some((new_node, m)) if new_node != node => {
                    tracing::info!(%call_id, relay = m.to.as_str(), "an imported call was being moved: the session of the move is deleted");
                    self.relays.adopt(new_node, call_id, &media.caller_tag);
                    self.delete_or_orphan(new_node, call_id, now);
                }
                _ => {}
            }
            self.relays.count_call(node, 1);
            // An RTPProxy node's engine deletes only the sessions it knows of.
            self.relays.adopt(node, call_id, &media.caller_tag);
            self.calls.set_media(call_id, media);
            if let Some(m) = taken_over {
                let (wakes, outcomes) = (m.wake_times(), m.outcomes());
                self.calls.start_move(call_id, m);
                match outcomes {
                    Some(outcomes) => self.conclude_move(call_id, outcomes, now),
                    None => {
                        for at in wakes {
                            self.wake_move(call_id, at);
                        }
                    }
                }
            } else if !self.relays.is_up(node) {
                // Its relay is down here: the call waits for one like any other.
                self.start_waiting(call_id, now);
            }
        }
        if let Some(invite) = record.open_invite_request {
            self.calls.invite_received(call_id, invite);
        }
        if !record.open_invite.is_empty() {
            for branch in record.open_invite {
                self.calls.invite_forwarded(call_id, branch);
            }
            // Nothing here will see the INVITE's final response if it never comes: the
            // branches are kept as long as the INVITE may live (Timer C).
            if let Some(key) = self.calls.key(call_id) {
                let at = now + self.config.timers.timer_c;
                self.timers.push(at, TimerRef::InviteBranches(key));
            }
        }
        self.schedule_dialog_sweep(now);
        // What was imported is stored already: no record goes out for it.
        self.calls.take_changed(call_id);
        Ok(())
    }

    /// The store has the record [`Output::SaveDurable`] asked for (or could not take it: the
    /// core goes on from memory): a move waiting for it sends its re-INVITEs.
    pub fn handle_saved(&mut self, call_id: &str, now: Instant) {
        let saved = self.calls.moving_mut(call_id).is_some_and(|m| m.saved());
        if saved {
            self.send_both_reinvites(call_id, now);
        }
        self.settle(now);
    }

    /// Writes the call's record now, without the write delay and without waiting for the
    /// store: after a move's re-INVITEs went out, so that a node taking the call over knows
    /// the parties have them (a window of one store round trip instead of the delay).
    pub(in crate::node) fn write_record_now(&mut self, call_id: &str) {
        if !self.records {
            return;
        }
        if let Some(record) = self.export_call(call_id) {
            self.calls.take_changed(call_id);
            self.records_out
                .push_back(Output::CallChanged(Box::new(record)));
        }
    }

    /// Asks the driver to write the call's record durably now.
    pub(in crate::node) fn save_durably(&mut self, call_id: &str) {
        if let Some(record) = self.export_call(call_id) {
            self.calls.take_changed(call_id);
            self.records_out
                .push_back(Output::SaveDurable(Box::new(record)));
        }
    }

    /// Called when an event settles: the records of the calls changed since the last ones
    /// went out, as outputs — at once with no `record_delay`, else when the delay that the
    /// first change started has passed (so a call's burst of changes, its set-up or its end,
    /// is one record). Nothing when record keeping is off.
    pub(in crate::node) fn flush_call_records(&mut self, now: Instant) {
        if !self.records {
            self.calls.clear_changed();
            return;
        }
        let delay = self.config.record_delay;
        if !delay.is_zero() {
            // A call that came up or ended does not wait the whole delay: a node taking over
            // must know it. It waits URGENT_DELAY, so the rest of the same exchange (the
            // relay's answer that a 200 waits for) is in the same record.
            if self.urgent_flush.is_none() && self.calls.has_urgent() {
                let at = now + delay.min(URGENT_DELAY);
                self.urgent_flush = Some(at);
                self.timers.push(at, TimerRef::UrgentFlush);
            }
            if self.record_flush.is_none() && self.calls.has_changed() {
                let at = now + delay;
                self.record_flush = Some(at);
                self.timers.push(at, TimerRef::RecordFlush);
            }
            return;
        }
        self.write_changed_records();
    }

    /// The records of every call changed since the last ones went out, now (the driver stops:
    /// nothing it has changed is left unwritten).
    pub fn flush_records(&mut self) {
        if self.records {
            self.write_changed_records();
        }
    }

    /// Calls changed since their records last went out (waiting for the write delay).
    pub fn records_pending(&self) -> usize {
        if self.records {
            self.calls.changed_count()
        } else {
            0
        }
    }

    /// The urgent timer fired: the records of the calls that came up or ended go out (those
    /// the record-delay timer has not written meanwhile); the other changed calls wait on.
    pub(in crate::node) fn on_urgent_flush(&mut self) {
        self.urgent_flush = None;
        if !self.records {
            return;
        }
        for call_id in self.calls.drain_urgent() {
            if self.calls.take_changed(call_id.as_str()) {
                let output = self.record_output(call_id.as_str());
                self.records_out.push_back(output);
            }
        }
    }

    /// The record-delay timer fired: the changed calls' records go out.
    pub(in crate::node) fn on_record_flush(&mut self) {
        self.record_flush = None;
        if self.records {
            self.write_changed_records();
        }
    }

    fn write_changed_records(&mut self) {
        self.calls.drain_urgent();
        for call_id in self.calls.drain_changed() {
            let output = self.record_output(call_id.as_str());
            self.records_out.push_back(output);
        }
    }

    /// The call's record as it is now, or its end.
    fn record_output(&self, call_id: &str) -> Output {
        match self.export_call(call_id) {
            Some(record) => Output::CallChanged(Box::new(record)),
            None => Output::CallEnded(call_id.to_string()),
        }
    }
}
