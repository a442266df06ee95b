//! INVITE dialogs as a proxy sees them (RFC 3261 §12), per leg: tag, remote target, source
//! address, transport and local socket, and the last CSeq. Early dialogs (one per to-tag when
//! an INVITE forks) become confirmed on 2xx; the others go when the INVITE completes; a dialog
//! ends on BYE or when it reaches its maximum age.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_sip::{HeaderName, Message, Method};

use crate::Transport;

/// A dialog's identity: Call-ID, caller's tag (From of the INVITE), callee's tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// The caller's tag.
    pub caller_tag: String,
    /// The callee's tag.
    pub callee_tag: String,
}

/// RFC 3261 §12 dialog states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// A provisional response with a To tag created it.
    Early,
    /// A 2xx confirmed it.
    Confirmed,
}

/// One side of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The leg's tag.
    pub tag: String,
    /// Its remote target (Contact URI), if it sent one.
    pub remote_target: Option<String>,
    /// Where its messages came from (its real address, which may differ from the Contact).
    pub source: Option<SocketAddr>,
    /// The transport it used.
    pub transport: Option<Transport>,
    /// The local socket it reached us on.
    pub local: Option<SocketAddr>,
    /// The last CSeq number seen from it.
    pub last_cseq: Option<u32>,
}

/// A dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Identity.
    pub id: DialogId,
    /// State.
    pub state: DialogState,
    /// The calling party.
    pub caller: Leg,
    /// The called party.
    pub callee: Leg,
    /// The Record-Route set of the dialog as the callee returned it (callee side first).
    pub record_route: Vec<String>,
    /// When it was created.
    pub created: Instant,
    /// The caller's From header value (name-addr and tag) as the INVITE carried it: the
    /// identity the proxy takes on towards the callee when it re-INVITEs for the caller.
    pub caller_identity: String,
    /// The callee's To header value (with its tag) as the final response carried it.
    pub callee_identity: String,
    /// CSeq renumbering after requests the proxy sent in the dialog itself.
    pub renumber: Renumber,
}

pub use renumber::Renumber;

/// The dialogs of one call (one while it is confirmed, several while an INVITE forks): the
/// dialog part of the call's aggregate (`node::calls`). Every update touches one call's few
/// dialogs, never a node-wide table.
#[derive(Debug, Default, Clone)]
pub struct CallDialogs {
    list: Vec<Dialog>,
}

impl CallDialogs {
    /// Number of dialogs.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The dialogs, in the order they were created.
    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.list.iter()
    }

    /// Adds a dialog taken from a record (replacing one with the same identity).
    pub fn insert(&mut self, dialog: Dialog) {
        self.list.retain(|d| d.id != dialog.id);
        self.list.push(dialog);
    }

    /// The confirmed dialog (the one the call's media belongs to).
    pub fn confirmed(&self) -> Option<&Dialog> {
        self.list.iter().find(|d| d.state == DialogState::Confirmed)
    }

    /// The confirmed dialog, to change.
    pub fn confirmed_mut(&mut self) -> Option<&mut Dialog> {
        self.list
            .iter_mut()
            .find(|d| d.state == DialogState::Confirmed)
    }

    /// The dialog between the parties tagged `a` and `b` (either way round).
    pub fn between(&self, a: &str, b: &str) -> Option<&Dialog> {
        self.list.iter().find(|d| {
            (d.id.caller_tag == a && d.id.callee_tag == b)
                || (d.id.caller_tag == b && d.id.callee_tag == a)
        })
    }

    /// The dialog between the parties tagged `a` and `b`, to change.
    pub fn between_mut(&mut self, a: &str, b: &str) -> Option<&mut Dialog> {
        self.list.iter_mut().find(|d| {
            (d.id.caller_tag == a && d.id.callee_tag == b)
                || (d.id.caller_tag == b && d.id.callee_tag == a)
        })
    }

    /// Where the callee is reached: the hop the INVITE's winning branch went to.
    pub fn set_callee_hop(
        &mut self,
        callee_tag: &str,
        destination: SocketAddr,
        transport: Transport,
    ) {
        for d in &mut self.list {
            if d.id.callee_tag == callee_tag && d.callee.source.is_none() {
                d.callee.source = Some(destination);
                d.callee.transport = Some(transport);
            }
        }
    }

    /// Ends every early dialog (the initial INVITE failed); whether there was one.
    pub fn drop_early(&mut self) -> bool {
        let before = self.list.len();
        self.list.retain(|d| d.state != DialogState::Early);
        self.list.len() < before
    }

    /// Forgets every dialog (another node carries the call on).
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// Ends the confirmed dialog (the proxy ended the call itself); whether there was one.
    pub fn remove_confirmed(&mut self) -> bool {
        let before = self.list.len();
        self.list.retain(|d| d.state != DialogState::Confirmed);
        self.list.len() < before
    }

    /// Ends the dialogs older than `max_age`; returns how many ended.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> usize {
        let before = self.list.len();
        self.list
            .retain(|d| now.saturating_duration_since(d.created) < max_age);
        before - self.list.len()
    }

    /// Updates the dialogs from a response to `request` (received from `source`), a request
    /// of this call; returns whether a dialog was created or ended.
    pub fn on_response(
        &mut self,
        request: &Message,
        source: SocketAddr,
        transport: Transport,
        local: SocketAddr,
        response: &Message,
        now: Instant,
    ) -> bool {
        let (Some(method), Some(status)) = (request.method(), response.status()) else {
            return false;
        };
        let Ok(call_id) = request.call_id() else {
            return false;
        };
        let from_tag = request.from().ok().and_then(|f| f.tag()).unwrap_or("");
        let request_to_tag = request.to().ok().and_then(|t| t.tag());
        let response_to_tag = response.to().ok().and_then(|t| t.tag());
        match (method, request_to_tag) {
            (Method::Invite, None) => {
                let Some(callee_tag) = response_to_tag else {
                    return false;
                };
                let id = DialogId {
                    call_id: call_id.to_string(),
                    caller_tag: from_tag.to_string(),
                    callee_tag: callee_tag.to_string(),
                };
                match status {
                    101..=299 => {
                        let caller = Leg {
                            tag: id.caller_tag.clone(),
                            remote_target: contact_uri(request),
                            source: Some(source),
                            transport: Some(transport),
                            local: Some(local),
                            last_cseq: request.cseq().ok().map(|c| c.seq),
                        };
                        self.on_invite_dialog_response(id, caller, request, response, now)
                    }
                    300.. => self.retain(|d| {
                        !(d.id.caller_tag == from_tag && d.state == DialogState::Early)
                    }),
                    _ => false,
                }
            }
            (Method::Bye, Some(to_tag)) if status >= 200 => {
                // Either party may hang up: match the tags both ways.
                self.retain(|d| {
                    let tags = (d.id.caller_tag.as_str(), d.id.callee_tag.as_str());
                    tags != (from_tag, to_tag) && tags != (to_tag, from_tag)
                })
            }
            (_, Some(to_tag)) => {
                // An in-dialog request: its CSeq, and where its sender is now (a party behind
                // NAT may come from a new address), on the leg that sent it. A 2xx to a target
                // refresh request (re-INVITE, UPDATE) gives each party its new remote target
                // (RFC 3261 §12.2): the request's Contact for the sender, the response's for
                // the other.
                let seq = request.cseq().ok().map(|c| c.seq);
                let refresh = matches!(method, Method::Invite | Method::Update)
                    && (200..300).contains(&status);
                let (sender_target, other_target) = if refresh {
                    (contact_uri(request), contact_uri(response))
                } else {
                    (None, None)
                };
                for d in &mut self.list {
                    let (sender, other) =
                        if d.id.caller_tag == from_tag && d.id.callee_tag == to_tag {
                            (&mut d.caller, &mut d.callee)
                        } else if d.id.callee_tag == from_tag && d.id.caller_tag == to_tag {
                            (&mut d.callee, &mut d.caller)
                        } else {
                            continue;
                        };
                    sender.last_cseq = seq.max(sender.last_cseq);
                    sender.source = Some(source);
                    sender.transport = Some(transport);
                    sender.local = Some(local);
                    if let Some(target) = sender_target.clone() {
                        sender.remote_target = Some(target);
                    }
                    if let Some(target) = other_target.clone() {
                        other.remote_target = Some(target);
                    }
                }
                false
            }
            _ => false,
        }
    }

    /// A 101–299 response to an initial INVITE: creates or updates the dialog `id`; a 2xx
    /// confirms it and ends the INVITE's other early dialogs (forking). `caller` is the
    /// caller's leg as the INVITE showed it.
    fn on_invite_dialog_response(
        &mut self,
        id: DialogId,
        caller: Leg,
        request: &Message,
        response: &Message,
        now: Instant,
    ) -> bool {
        let Some(status) = response.status() else {
            return false;
        };
        let state = if status >= 200 {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        let (index, created) = match self.list.iter().position(|d| d.id == id) {
            Some(i) => (i, false),
            None => {
                self.list.push(Dialog {
                    id: id.clone(),
                    state,
                    caller,
                    callee: Leg {
                        tag: id.callee_tag.clone(),
                        remote_target: None,
                        source: None,
                        transport: None,
                        local: None,
                        last_cseq: None,
                    },
                    record_route: Vec::new(),
                    created: now,
                    caller_identity: header_text(request, HeaderName::From),
                    callee_identity: String::new(),
                    renumber: Renumber::default(),
                });
                (self.list.len() - 1, true)
            }
        };
        let Some(dialog) = self.list.get_mut(index) else {
            return false;
        };
        dialog.callee.remote_target = contact_uri(response).or(dialog.callee.remote_target.take());
        dialog.record_route = response
            .headers_of(HeaderName::RecordRoute)
            .flat_map(|h| h.values())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        dialog.callee_identity = header_text(response, HeaderName::To);
        if status >= 200 {
            dialog.state = DialogState::Confirmed;
            // Other early dialogs of this INVITE (forking) are over.
            self.retain(|d| !(d.id.caller_tag == id.caller_tag && d.state == DialogState::Early));
        }
        created
    }

    /// Keeps the dialogs for which `keep` holds; whether any was removed.
    fn retain(&mut self, keep: impl Fn(&Dialog) -> bool) -> bool {
        let before = self.list.len();
        self.list.retain(|d| keep(d));
        self.list.len() < before
    }
}

fn header_text(m: &Message, name: HeaderName) -> String {
    m.header(name)
        .map(|h| String::from_utf8_lossy(h.value()).trim().to_string())
        .unwrap_or_default()
}

fn contact_uri(m: &Message) -> Option<String> {
    match m.contacts().next()?.ok()? {
        anchorage_sip::Contact::Address(a) => Some(String::from_utf8_lossy(a.uri_raw).into_owned()),
        _ => None,
    }
}

mod renumber;
#[cfg(test)]
mod tests;
