//! One aggregate per call: everything this node holds about a call — its dialogs (RFC 3261
//! §12), where its media is anchored, its move, whether it waits for a relay, and how many of
//! its INVITE/UPDATE server transactions are open — in one [`Call`], keyed by its typed
//! [`CallId`] and reached from timers and ng waits by a `Copy` [`CallKey`].
//!
//! The store owns every part of a call, so a call is one thing to look at, count, export or
//! drop: a call's entry exists while any part is present and goes with its last part. Its
//! counters (dialogs, moves, waiting calls) change only here, so they cannot drift from what
//! is stored. A `CallKey` is a slab id ([`super::slab`]): a timer or an ng reply that outlives
//! its call finds nothing, even when the slot holds a newer call.

use std::borrow::Borrow;
use std::fmt;
use std::time::Instant;

use bytes::Bytes;

use crate::dialog::{CallDialogs, Dialog};
use crate::node::anchoring::CallMedia;
use crate::node::moves::CallMove;
use crate::node::slab::{Id, Slab};
use crate::Transport;

/// One branch of a call's initial INVITE as forwarded: its Via branch, where it went and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteBranch {
    /// The branch parameter of our Via.
    pub branch: String,
    /// The next hop it was sent to.
    pub destination: std::net::SocketAddr,
    /// Over which transport.
    pub transport: Transport,
}

/// The call's initial INVITE as it arrived, while it has no final response: what a node that
/// did not forward it needs to make the dialog from a response that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInvite {
    /// The INVITE as received from the caller.
    pub request: Bytes,
    /// Where it came from.
    pub source: std::net::SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// Our address it arrived at.
    pub local: std::net::SocketAddr,
}

/// A call's Call-ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(String);

impl CallId {
    /// The Call-ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for CallId {
    fn from(s: &str) -> CallId {
        CallId(s.to_string())
    }
}

impl Borrow<str> for CallId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A call's place in the store: copyable, for timers and ng waits.
pub(in crate::node) type CallKey = Id<Call>;

/// Whether a call waits for a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::node) enum Wait {
    /// No node could take it since then.
    Since(Instant),
    /// Taken from the waiting calls into a job that has not started its move yet.
    Resuming,
}

/// Everything the node holds about one call.
#[derive(Debug, Default)]
pub(in crate::node) struct Call {
    dialogs: CallDialogs,
    /// Where its media is anchored, if it is.
    pub(in crate::node) media: Option<CallMedia>,
    mv: Option<CallMove>,
    wait: Option<Wait>,
    /// INVITE and UPDATE server transactions without a final response: a move waits until
    /// there are none.
    open_offers: u32,
    /// Where the initial INVITE was forwarded while it has no final response (in the order
    /// tried): what a CANCEL, or the ACK of a failure, follows on a node without its
    /// transaction.
    invite_out: Vec<InviteBranch>,
    /// The initial INVITE itself while it is open (with `invite_out`).
    invite_in: Option<OpenInvite>,
    /// Already among the calls changed by the current event.
    changed: bool,
}

impl Call {
    fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
            && self.media.is_none()
            && self.mv.is_none()
            && self.wait.is_none()
            && self.open_offers == 0
            && self.invite_out.is_empty()
            && self.invite_in.is_none()
    }
}

/// The calls of this node.
#[derive(Default)]
pub struct Calls {
    slab: Slab<CallId, Call>,
    /// Whether changes are tracked (record keeping is on).
    tracking: bool,
    /// The calls the current event changed (for their records).
    changed: Vec<CallId>,
    /// Changed calls whose record must not wait for the write delay: a dialog confirmed (the
    /// call is up) or ended — what another node taking over must not miss.
    urgent: Vec<CallId>,
    dialogs: usize,
    moves: usize,
    waiting: usize,
    anchored: usize,
}

impl Calls {
    /// Calls with any state on this node.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// Dialogs, over every call.
    pub fn dialog_count(&self) -> usize {
        self.dialogs
    }

    /// Calls anchored on a relay.
    pub fn anchored_count(&self) -> usize {
        self.anchored
    }

    /// Every dialog, in no particular order.
    pub fn dialogs(&self) -> impl Iterator<Item = &Dialog> {
        self.slab.iter().flat_map(|(_, c)| c.dialogs.iter())
    }

    /// The dialogs of a Call-ID (several while an INVITE forks).
    pub fn dialogs_of<'a>(&'a self, call_id: &str) -> impl Iterator<Item = &'a Dialog> + 'a {
        self.get(call_id).into_iter().flat_map(|c| c.dialogs.iter())
    }

    /// The confirmed dialog of a Call-ID.
    pub fn confirmed(&self, call_id: &str) -> Option<&Dialog> {
        self.get(call_id)?.dialogs.confirmed()
    }

    /// Whether this node holds any state of the call.
    pub fn holds(&self, call_id: &str) -> bool {
        self.get(call_id).is_some()
    }

    fn get(&self, call_id: &str) -> Option<&Call> {
        self.slab.get_by(call_id)
    }

    fn get_mut(&mut self, call_id: &str) -> Option<&mut Call> {
        self.slab.get_by_mut(call_id)
    }

    /// The call's entry, made if it has none.
    fn entry(&mut self, call_id: &str) -> &mut Call {
        self.slab
            .get_or_default(call_id, |id: &str| CallId::from(id))
    }

    /// Drops the call's entry if nothing is left of it.
    fn release_if_empty(&mut self, call_id: &str) {
        if self.get(call_id).is_some_and(Call::is_empty) {
            self.slab.remove_by(call_id);
        }
    }

    /// The call's key, if it has an entry.
    pub(in crate::node) fn key(&self, call_id: &str) -> Option<CallKey> {
        self.slab.find(call_id)
    }

    /// The Call-ID of a key, if its call still has an entry.
    pub(in crate::node) fn id_of(&self, key: CallKey) -> Option<&CallId> {
        self.slab.key_of(key)
    }

    // --- changes, for the call records ---

    /// Tracks which calls change from now on.
    pub(in crate::node) fn track_changes(&mut self) {
        self.tracking = true;
    }

    /// The call changed in a way its record shows.
    fn mark(&mut self, call_id: &str) {
        if !self.tracking {
            return;
        }
        match self.slab.get_by_mut(call_id) {
            Some(call) if call.changed => {}
            Some(call) => {
                call.changed = true;
                self.changed.push(CallId::from(call_id));
            }
            None => self.changed.push(CallId::from(call_id)),
        }
    }

    /// How many calls changed since the last drain (a call may be listed twice).
    pub(in crate::node) fn changed_count(&self) -> usize {
        self.changed.len()
    }

    /// Whether any call changed since the last drain.
    pub(in crate::node) fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The calls changed since the last drain (each once).
    pub(in crate::node) fn drain_changed(&mut self) -> Vec<CallId> {
        let mut changed = std::mem::take(&mut self.changed);
        // A call released and touched again in one event was listed twice.
        let mut seen = std::collections::HashSet::new();
        changed.retain(|id| seen.insert(id.clone()));
        for id in &changed {
            if let Some(call) = self.slab.get_by_mut(id.as_str()) {
                call.changed = false;
            }
        }
        changed
    }

    /// Whether a changed call's record must not wait the whole write delay.
    pub(in crate::node) fn has_urgent(&self) -> bool {
        !self.urgent.is_empty()
    }

    /// The changed calls whose record must go out now (see `urgent`), each once.
    pub(in crate::node) fn drain_urgent(&mut self) -> Vec<CallId> {
        let mut urgent = std::mem::take(&mut self.urgent);
        urgent.sort();
        urgent.dedup();
        urgent
    }

    /// Forgets that `call_id` changed (its record is what the store has).
    /// Whether it had changed.
    pub(in crate::node) fn take_changed(&mut self, call_id: &str) -> bool {
        let before = self.changed.len();
        self.changed.retain(|id| id.as_str() != call_id);
        self.urgent.retain(|id| id.as_str() != call_id);
        if let Some(call) = self.slab.get_by_mut(call_id) {
            call.changed = false;
        }
        self.changed.len() < before
    }

    /// Forgets every change.
    pub(in crate::node) fn clear_changed(&mut self) {
        for id in std::mem::take(&mut self.changed) {
            if let Some(call) = self.slab.get_by_mut(id.as_str()) {
                call.changed = false;
            }
        }
    }

    // --- media anchoring ---

    /// Where the call's media is anchored.
    pub(in crate::node) fn media(&self, call_id: &str) -> Option<&CallMedia> {
        self.get(call_id)?.media.as_ref()
    }

    /// Where the call's media is anchored, to change.
    pub(in crate::node) fn media_mut(&mut self, call_id: &str) -> Option<&mut CallMedia> {
        self.mark(call_id);
        self.get_mut(call_id)?.media.as_mut()
    }

    /// The anchored calls with their media (a walk over the store: for jobs and the
    /// management API, never per message).
    pub(in crate::node) fn anchored(&self) -> impl Iterator<Item = (&CallId, &CallMedia)> {
        self.slab
            .iter()
            .filter_map(|(id, c)| c.media.as_ref().map(|m| (id, m)))
    }

    /// Records where the call's media is anchored (replacing what was there).
    pub(in crate::node) fn set_media(&mut self, call_id: &str, media: CallMedia) {
        self.entry(call_id);
        self.mark(call_id);
        let call = self.entry(call_id);
        let new = call.media.is_none();
        call.media = Some(media);
        if new {
            self.anchored += 1;
        }
    }

    /// The call is no longer anchored: its media state, if it had one.
    pub(in crate::node) fn take_media(&mut self, call_id: &str) -> Option<CallMedia> {
        self.mark(call_id);
        let media = self.get_mut(call_id)?.media.take();
        if media.is_some() {
            self.anchored -= 1;
        }
        self.release_if_empty(call_id);
        media
    }

    // --- re-anchoring ---

    /// The call's move, if it is being moved.
    pub(in crate::node) fn moving(&self, call_id: &str) -> Option<&CallMove> {
        self.get(call_id)?.mv.as_ref()
    }

    /// The call's move, to change.
    pub(in crate::node) fn moving_mut(&mut self, call_id: &str) -> Option<&mut CallMove> {
        self.mark(call_id);
        self.get_mut(call_id)?.mv.as_mut()
    }

    /// Calls being moved.
    pub(in crate::node) fn move_count(&self) -> usize {
        self.moves
    }

    /// The call starts moving.
    pub(in crate::node) fn start_move(&mut self, call_id: &str, mv: CallMove) {
        self.entry(call_id);
        self.mark(call_id);
        let call = self.entry(call_id);
        let new = call.mv.is_none();
        call.mv = Some(mv);
        if new {
            self.moves += 1;
        }
    }

    /// The call's move is over: what it was.
    pub(in crate::node) fn take_move(&mut self, call_id: &str) -> Option<CallMove> {
        self.mark(call_id);
        let mv = self.get_mut(call_id)?.mv.take();
        if mv.is_some() {
            self.moves -= 1;
        }
        self.release_if_empty(call_id);
        mv
    }

    // --- waiting for a relay ---

    /// Whether (and how) the call waits for a relay.
    pub(in crate::node) fn wait(&self, call_id: &str) -> Option<Wait> {
        self.get(call_id)?.wait
    }

    /// Calls waiting for a relay (not those already taken into a job).
    pub(in crate::node) fn waiting_count(&self) -> usize {
        self.waiting
    }

    /// Sets how the call waits; returns how it waited before.
    pub(in crate::node) fn set_wait(&mut self, call_id: &str, wait: Option<Wait>) -> Option<Wait> {
        let old = match wait {
            Some(_) => std::mem::replace(&mut self.entry(call_id).wait, wait),
            None => self.get_mut(call_id).and_then(|c| c.wait.take()),
        };
        if matches!(old, Some(Wait::Since(_))) {
            self.waiting -= 1;
        }
        if matches!(wait, Some(Wait::Since(_))) {
            self.waiting += 1;
        }
        self.release_if_empty(call_id);
        old
    }

    /// The Call-IDs of the calls waiting for a relay (a walk over the store: for the retry
    /// timer and the management API, never per packet).
    pub(in crate::node) fn waiting_ids(&self) -> impl Iterator<Item = (&CallId, &Call)> {
        self.slab
            .iter()
            .filter(|(_, c)| matches!(c.wait, Some(Wait::Since(_))))
    }

    // --- open offers ---

    /// An INVITE or UPDATE of the call is now open.
    pub(in crate::node) fn open_offer(&mut self, call_id: &str) {
        self.entry(call_id).open_offers += 1;
    }

    /// An INVITE or UPDATE of the call got its final response.
    pub(in crate::node) fn close_offer(&mut self, call_id: &str) {
        if let Some(call) = self.get_mut(call_id) {
            call.open_offers = call.open_offers.saturating_sub(1);
        }
        self.release_if_empty(call_id);
    }

    /// The initial INVITE was forwarded on one more branch.
    pub(in crate::node) fn invite_forwarded(&mut self, call_id: &str, branch: InviteBranch) {
        self.entry(call_id).invite_out.push(branch);
        self.mark(call_id);
    }

    /// The initial INVITE as it arrived (kept until it has its final response).
    pub(in crate::node) fn invite_received(&mut self, call_id: &str, invite: OpenInvite) {
        let call = self.entry(call_id);
        if call.invite_in.is_none() {
            call.invite_in = Some(invite);
            self.mark(call_id);
        }
    }

    /// The open initial INVITE as it arrived, if any.
    pub(in crate::node) fn open_invite(&self, call_id: &str) -> Option<&OpenInvite> {
        self.get(call_id)?.invite_in.as_ref()
    }

    /// The initial INVITE's branches are of no more use (it got a final response, or the
    /// wait for one ended).
    pub(in crate::node) fn invite_done(&mut self, call_id: &str) {
        let had = self
            .get_mut(call_id)
            .map(|c| (std::mem::take(&mut c.invite_out), c.invite_in.take()))
            .is_some_and(|(b, i)| !b.is_empty() || i.is_some());
        if had {
            self.mark(call_id);
        }
        self.release_if_empty(call_id);
    }

    /// Where the call's initial INVITE went, while it has no final response.
    pub(in crate::node) fn invite_branches(&self, call_id: &str) -> &[InviteBranch] {
        self.get(call_id).map_or(&[], |c| c.invite_out.as_slice())
    }

    /// The call's open offers are of no more concern here (it was released).
    pub(in crate::node) fn forget_offers(&mut self, call_id: &str) {
        if let Some(call) = self.get_mut(call_id) {
            call.open_offers = 0;
        }
        self.release_if_empty(call_id);
    }

    /// Every Call-ID held (a walk over the store: when the node releases every call).
    pub(in crate::node) fn ids(&self) -> Vec<String> {
        self.slab
            .iter()
            .map(|(id, _)| id.as_str().to_string())
            .collect()
    }

    /// Whether an INVITE or UPDATE of the call is still without a final response.
    pub(in crate::node) fn has_open_offer(&self, call_id: &str) -> bool {
        self.get(call_id).is_some_and(|c| c.open_offers > 0)
    }

    // --- dialogs ---

    /// The confirmed dialog of a call, to change.
    pub(in crate::node) fn confirmed_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        self.mark(call_id);
        self.get_mut(call_id)?.dialogs.confirmed_mut()
    }

    /// The dialog between the parties tagged `a` and `b` (either way round).
    pub(in crate::node) fn between(&self, call_id: &str, a: &str, b: &str) -> Option<&Dialog> {
        self.get(call_id)?.dialogs.between(a, b)
    }

    /// Changes the call's dialogs with `change` (which returns what it returns), keeping the
    /// count and the entry right.
    pub(in crate::node) fn update_dialogs<R>(
        &mut self,
        call_id: &str,
        change: impl FnOnce(&mut CallDialogs) -> R,
    ) -> R {
        self.entry(call_id);
        self.mark(call_id);
        let dialogs = &mut self.entry(call_id).dialogs;
        let before = dialogs.len();
        let was_up = dialogs.confirmed().is_some();
        let result = change(dialogs);
        let after = dialogs.len();
        let is_up = dialogs.confirmed().is_some();
        self.dialogs = self.dialogs + after - before;
        if self.tracking && was_up != is_up {
            self.urgent.push(CallId::from(call_id));
        }
        self.release_if_empty(call_id);
        result
    }

    /// The calls with a dialog older than `max_age` (a walk over the store, from the dialog
    /// sweep timer).
    pub(in crate::node) fn with_dialogs_older_than(
        &self,
        now: Instant,
        max_age: std::time::Duration,
    ) -> Vec<CallId> {
        self.slab
            .iter()
            .filter(|(_, c)| {
                c.dialogs
                    .iter()
                    .any(|d| now.saturating_duration_since(d.created) >= max_age)
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// The dialogs of a node, as the management API reads them.
pub struct Dialogs<'a> {
    calls: &'a Calls,
}

impl<'a> Dialogs<'a> {
    /// A view of `calls`' dialogs.
    pub(in crate::node) fn new(calls: &'a Calls) -> Dialogs<'a> {
        Dialogs { calls }
    }

    /// Number of dialogs.
    pub fn len(&self) -> usize {
        self.calls.dialog_count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every dialog, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &'a Dialog> {
        self.calls.dialogs()
    }

    /// The dialogs of a Call-ID.
    pub fn by_call_id(&self, call_id: &str) -> impl Iterator<Item = &'a Dialog> {
        self.calls.dialogs_of(call_id)
    }

    /// The confirmed dialog of a Call-ID.
    pub fn confirmed(&self, call_id: &str) -> Option<&'a Dialog> {
        self.calls.confirmed(call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
    fn an_entry_lives_while_any_part_does_and_its_key_dies_with_it() {
        let mut calls = Calls::default();
        calls.open_offer("a");
        let key = calls.key("a").unwrap();
        calls.set_wait("a", Some(Wait::Since(Instant::now())));
        assert_eq!((calls.len(), calls.waiting_count()), (1, 1));
        calls.close_offer("a");
        assert_eq!(calls.id_of(key).map(CallId::as_str), Some("a"));
        assert!(calls.set_wait("a", Some(Wait::Resuming)).is_some());
        assert_eq!(calls.waiting_count(), 0);
        calls.set_wait("a", None);
        assert!(calls.is_empty());
        assert_eq!(calls.id_of(key), None);
        // The slot is reused by another call: the old key still finds nothing.
        calls.open_offer("b");
        assert_eq!(calls.id_of(key), None);
        let b = calls.key("b").unwrap();
        assert_eq!(calls.id_of(b).map(CallId::as_str), Some("b"));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's clock
    fn counters_follow_what_is_stored() {
        let mut calls = Calls::default();
        for id in ["a", "b", "c"] {
            calls.set_wait(id, Some(Wait::Since(Instant::now())));
        }
        calls.set_wait("b", Some(Wait::Since(Instant::now())));
        assert_eq!(calls.waiting_count(), 3);
        assert_eq!(calls.waiting_ids().count(), 3);
        calls.set_wait("a", None);
        calls.set_wait("zzz", None);
        assert_eq!((calls.waiting_count(), calls.len()), (2, 2));
    }
}
