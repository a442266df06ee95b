//! Calls loaded on demand (issue #14): a message about a call this node does not hold — an
//! in-dialog request, a CANCEL or ACK that matches no transaction, a response to one of the
//! proxies' own requests — is parked while the driver asks the store for the call's record
//! ([`Output::LoadCall`]). When the store answers ([`Proxy::handle_loaded`]) the call is
//! imported and the parked messages are handled in their order of arrival, as if the node had
//! held the call all along.
//!
//! Bounded, so a store that is slow or gone never holds messages for long nor grows memory:
//! at most [`MAX_PARKED`] messages in all and [`MAX_PARKED_PER_CALL`] per call, each parked at
//! most [`CoreConfig::load_timeout`](crate::node::CoreConfig). A message over a bound, or whose
//! call the store did not answer for in time, is handled at once from what the node has — as
//! a node without a store would. A call the store does not know is remembered for
//! [`UNKNOWN_FOR`] (at most [`MAX_UNKNOWN`] of them), so a stream of messages about calls
//! that were never recorded costs one lookup per call, not one per message.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anchorage_sip::{Message, Method};

use crate::node::io::{Datagram, Output};
use crate::node::moves::own_tx::OWN_BRANCH_PREFIX;
use crate::node::record::CallRecord;
use crate::node::timers::TimerRef;
use crate::node::transactions::{method_key, server_key};
use crate::node::Proxy;

/// Messages parked in all, over every call.
pub const MAX_PARKED: usize = 4096;
/// Messages parked for one call.
pub const MAX_PARKED_PER_CALL: usize = 32;
/// How long a call the store does not know is not asked for again.
pub const UNKNOWN_FOR: Duration = Duration::from_secs(5);
/// Calls the store did not know, remembered at most.
pub const MAX_UNKNOWN: usize = 10_000;

/// One message waiting for its call.
#[derive(Debug)]
struct ParkedMessage {
    msg: Message,
    datagram: Datagram,
}

/// The messages of one call waiting for its record.
#[derive(Debug)]
struct ParkedCall {
    messages: Vec<ParkedMessage>,
    deadline: Instant,
}

/// The parked messages and the calls the store did not know.
#[derive(Debug, Default)]
pub(in crate::node) struct Parking {
    calls: HashMap<String, ParkedCall>,
    /// Calls in the order they were parked (their deadlines are in the same order, as every
    /// call waits the same time); entries of calls already answered are skipped when met.
    order: VecDeque<(Instant, String)>,
    total: usize,
    unknown: HashMap<String, Instant>,
    /// The timeout timer set, if any (one at a time, for the front of `order`).
    timer: Option<Instant>,
}

impl Parking {
    /// Messages parked now.
    pub(in crate::node) fn len(&self) -> usize {
        self.total
    }

    fn recently_unknown(&self, call_id: &str, now: Instant) -> bool {
        self.unknown.get(call_id).is_some_and(|until| *until > now)
    }

    fn remember_unknown(&mut self, call_id: &str, now: Instant) {
        if self.unknown.len() >= MAX_UNKNOWN {
            self.unknown.retain(|_, until| *until > now);
            if self.unknown.len() >= MAX_UNKNOWN {
                // All still fresh: forget them all rather than grow (each costs one more
                // lookup at most).
                self.unknown.clear();
            }
        }
        self.unknown.insert(call_id.to_string(), now + UNKNOWN_FOR);
    }

    /// Drops the call's parked messages (it was released).
    pub(in crate::node) fn drop_call(&mut self, call_id: &str) {
        self.take(call_id);
    }

    fn take(&mut self, call_id: &str) -> Vec<ParkedMessage> {
        match self.calls.remove(call_id) {
            Some(parked) => {
                self.total -= parked.messages.len();
                parked.messages
            }
            None => Vec::new(),
        }
    }
}

impl Proxy {
    /// The Call-ID to load before `msg` can be handled, if it is about a call this node does
    /// not hold and the store may know: an in-dialog request or a CANCEL/ACK matching no
    /// transaction, a new INVITE while a takeover is under way, or a response to one of the
    /// proxies' own requests that no transaction here waits for. Only with a store
    /// ([`Proxy::enable_call_records`]).
    pub(in crate::node) fn call_to_load(&self, msg: &Message, now: Instant) -> Option<String> {
        if !self.records {
            return None;
        }
        let call_id = msg.call_id().ok()?;
        if self.calls.holds(call_id) || self.parking.recently_unknown(call_id, now) {
            return None;
        }
        let wanted = if msg.is_request() {
            let method = msg.method()?;
            let key = server_key(msg, method_key(&method))?;
            let in_dialog = msg.to().ok().is_some_and(|t| t.tag().is_some());
            match method {
                // A new INVITE while a takeover's calls are on their way may be the
                // retransmission of one the dead node forwarded: its call first, so it is
                // absorbed rather than forwarded and anchored a second time.
                Method::Invite if !in_dialog => {
                    self.taking_over && self.servers.find(&key).is_none()
                }
                // Its INVITE's transaction is handled here already.
                Method::Cancel => self.servers.find(&key.invite()).is_none(),
                // The ACK of a 2xx travels the dialog's route set, through us; the ACK of a
                // failure — the 503 of a call refused here, say — does not, and needs no call.
                Method::Ack => {
                    self.servers.find(&key.invite()).is_none()
                        && msg
                            .routes()
                            .filter_map(|r| r.ok()?.uri().ok())
                            .any(|uri| self.is_us(&uri))
                }
                _ => in_dialog && self.servers.find(&key).is_none(),
            }
        } else {
            let top = msg.top_via().ok()?;
            let branch = top.branch().unwrap_or("");
            if branch.starts_with(OWN_BRANCH_PREFIX) {
                self.own.find(branch).is_none()
            } else if branch.starts_with(crate::node::FORWARD_BRANCH_PREFIX) {
                // The owner's response to a request this node forwarded: back by its Via.
                false
            } else {
                // A response to the initial INVITE another node forwarded: the call holds the
                // INVITE, to make the dialog and anchor the answer here — or, for a failure,
                // to delete the call's relay session and record with it.
                self.clients.find(branch).is_none()
                    && msg.cseq().is_ok_and(|c| c.method == Method::Invite)
                    && msg.status().is_some_and(|s| s > 100)
                    && crate::via::is_ours(&self.ours, &top.host, top.port)
            }
        };
        wanted.then(|| call_id.to_string())
    }

    /// Whether the driver is still claiming the calls of a takeover (it got the virtual IP
    /// and the claimed records are not all in yet). Meanwhile a new INVITE is held until its
    /// call is looked up in the store, like any message about a call not held here: it may
    /// be a retransmission of an INVITE the dead node forwarded, whose record has not come in.
    pub fn set_taking_over(&mut self, taking_over: bool) {
        self.taking_over = taking_over;
    }

    /// Parks `msg` until its call is loaded (asking the store for it, once per call), or
    /// handles it now when the parking is full.
    pub(in crate::node) fn park(
        &mut self,
        call_id: String,
        msg: Message,
        d: Datagram,
        now: Instant,
    ) {
        let p = &mut self.parking;
        let full = p.total >= MAX_PARKED
            || p.calls
                .get(&call_id)
                .is_some_and(|c| c.messages.len() >= MAX_PARKED_PER_CALL);
        if full {
            self.counters.parking_full += 1;
            self.dispatch(msg, &d, now);
            return;
        }
        p.total += 1;
        let what = describe(&msg);
        let message = ParkedMessage { msg, datagram: d };
        if let Some(call) = p.calls.get_mut(&call_id) {
            call.messages.push(message);
            return;
        }
        let deadline = now + self.config.load_timeout;
        p.calls.insert(
            call_id.clone(),
            ParkedCall {
                messages: vec![message],
                deadline,
            },
        );
        p.order.push_back((deadline, call_id.clone()));
        self.counters.load_requests += 1;
        tracing::debug!(%call_id, message = %what, "a message about a call not held here: loading it from the store");
        self.records_out.push_back(Output::LoadCall(call_id));
        self.arm_parking_timer();
    }

    /// The store's answer to [`Output::LoadCall`]: the call's record, or `None` when it has
    /// none or could not be read. The call is imported, then its parked messages are handled.
    pub fn handle_loaded(&mut self, call_id: &str, record: Option<CallRecord>, now: Instant) {
        match record {
            Some(record) if !self.calls.holds(call_id) => match self.import_call(record, now) {
                Ok(()) => {
                    self.counters.calls_loaded += 1;
                    tracing::info!(%call_id, "call loaded from the store on demand");
                }
                Err(error) => {
                    tracing::warn!(%call_id, %error, "a stored call could not be taken in")
                }
            },
            Some(_) => {}
            None => self.counters.load_misses += 1,
        }
        if !self.calls.holds(call_id) {
            self.parking.remember_unknown(call_id, now);
        }
        self.release_parked(call_id, now);
        self.settle(now);
    }

    /// Takes the parked messages of a call, in their order of arrival.
    pub(in crate::node) fn parking_take(&mut self, call_id: &str) -> Vec<(Message, Datagram)> {
        self.parking
            .take(call_id)
            .into_iter()
            .map(|m| (m.msg, m.datagram))
            .collect()
    }

    /// Handles the parked messages of a call, in their order of arrival.
    fn release_parked(&mut self, call_id: &str, now: Instant) {
        for m in self.parking.take(call_id) {
            self.dispatch(m.msg, &m.datagram, now);
        }
    }

    /// The parking timeout fired: calls the store has not answered for in time go on
    /// without their record.
    pub(in crate::node) fn on_parking_timeout(&mut self, now: Instant) {
        self.parking.timer = None;
        while let Some((deadline, _)) = self.parking.order.front() {
            if *deadline > now {
                break;
            }
            let Some((deadline, call_id)) = self.parking.order.pop_front() else {
                break;
            };
            let due = self
                .parking
                .calls
                .get(&call_id)
                .is_some_and(|c| c.deadline == deadline);
            if due {
                self.counters.load_timeouts += 1;
                tracing::warn!(%call_id, "the store did not answer in time: the call's messages are handled without its record");
                self.release_parked(&call_id, now);
            }
        }
        self.arm_parking_timer();
    }

    fn arm_parking_timer(&mut self) {
        // Skip the entries of calls already answered, so the timer is for a live deadline.
        while let Some((deadline, call_id)) = self.parking.order.front() {
            let live = self
                .parking
                .calls
                .get(call_id)
                .is_some_and(|c| c.deadline == *deadline);
            if live {
                break;
            }
            self.parking.order.pop_front();
        }
        let Some(&(deadline, _)) = self.parking.order.front() else {
            return;
        };
        if self.parking.timer.is_some_and(|t| t <= deadline) {
            return;
        }
        self.parking.timer = Some(deadline);
        self.timers.push(deadline, TimerRef::Parking);
    }

    /// Messages parked now, waiting for their calls to be loaded.
    pub fn parked_messages(&self) -> usize {
        self.parking.len()
    }
}

/// A message as the log names it: its method, or its status and CSeq method.
fn describe(msg: &Message) -> String {
    match msg.method() {
        Some(m) => m.as_str().to_string(),
        None => format!(
            "{} to {}",
            msg.status().unwrap_or(0),
            msg.cseq()
                .map(|c| c.method.as_str().to_string())
                .unwrap_or_default()
        ),
    }
}
