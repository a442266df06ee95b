//! Relay replies and failures (of any engine) back to what waited for them: one arm per `MediaWait` variant and
//! outcome. A refused or unanswered initial offer tries the next node of the set; no path
//! relays a message unanchored.

use std::time::Instant;

use crate::media;
use crate::node::anchoring::forks::ForkWait;
use crate::node::anchoring::{tag_of, MediaWait};
use crate::node::io::Datagram;
use crate::node::Proxy;

impl Proxy {
    /// Acts on relay replies and timeouts, whatever the node's engine.
    pub(in crate::node) fn drain_relay_events(&mut self, now: Instant) {
        while let Some(change) = self.relays.poll_health_change() {
            self.on_relay_health(change, now);
        }
        while let Some((node, media::MediaReply { id, result })) = self.relays.poll_event() {
            let Some(wait) = self.media_waits.remove(&(node, id)) else {
                continue;
            };
            // A refusal is an answer; a timeout or an unreadable reply is none.
            let answered = result.as_ref().map_or_else(|e| e.answered(), |_| true);
            let sdp = result.as_ref().ok().cloned().flatten();
            match (wait, sdp) {
                (MediaWait::Delete, _) => {}
                (MediaWait::ReanchorOffer { call_id }, sdp) => {
                    self.on_reanchor_ng(&call_id, true, sdp, now);
                }
                (MediaWait::ReanchorAnswer { call_id }, sdp) => {
                    self.on_reanchor_ng(&call_id, false, sdp, now);
                }
                (MediaWait::FollowUp { call_id, party }, Some(sdp)) => {
                    self.send_follow_up_offer(&call_id, party, sdp, now);
                }
                (MediaWait::FollowUp { .. }, None) => {}
                (
                    MediaWait::ForkOffer {
                        key,
                        target,
                        via_branch,
                        policy,
                    },
                    sdp,
                ) => {
                    let wait = ForkWait {
                        key,
                        target,
                        via_branch,
                        policy,
                        sdp,
                    };
                    self.on_fork_offer(node, wait, now);
                }
                (
                    MediaWait::ResponseOffer {
                        key,
                        status,
                        response,
                        policy,
                        initial,
                    },
                    Some(sdp),
                ) => {
                    // A message without a Call-ID never gets past validation.
                    let call_id = response.call_id().ok().map(str::to_string);
                    if let (true, Some(call_id)) = (initial, &call_id) {
                        let caller_tag = self
                            .servers
                            .get(key)
                            .map(|s| tag_of(s.request.from()))
                            .unwrap_or_default();
                        tracing::debug!(%call_id, node, "call anchored by a late offer");
                        self.anchor_call(call_id, node, policy, caller_tag, None);
                    }
                    if let Some(call) = call_id.and_then(|c| self.calls.media_mut(&c)) {
                        call.answer_in_ack = status >= 200;
                        call.answer_in_prack = status < 200;
                        let (from, to) = call.legs_from(&tag_of(response.to()));
                        from.received = Some(response.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = response.edit().set_body(sdp).finish_message() {
                        self.forward_response_upstream(key, status, rewritten.bytes(), now);
                    }
                }
                (MediaWait::ResponseOffer { key, status, .. }, None) => {
                    tracing::warn!("relay refused or did not answer a late offer; the response is not relayed unanchored");
                    if status >= 200 {
                        self.respond(key, 502, "Media Relay Failed", now);
                    }
                }
                (
                    MediaWait::AckAnswer {
                        ack,
                        source,
                        local,
                        transport,
                    },
                    Some(sdp),
                ) => {
                    let call = ack.call_id().ok().and_then(|c| self.calls.media_mut(c));
                    if let Some(call) = call {
                        call.answer_in_ack = false;
                        let (from, to) = call.legs_from(&tag_of(ack.from()));
                        from.received = Some(ack.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = ack.edit().set_body(sdp).finish_message() {
                        let d = Datagram {
                            data: rewritten.bytes(),
                            source,
                            local,
                            transport,
                        };
                        self.forward_stateless(rewritten, &d, now);
                    }
                }
                (MediaWait::AckAnswer { ack, .. }, None) => {
                    tracing::warn!(call_id = ?ack.call_id().ok(), "relay refused or did not answer the answer in an ACK; the ACK is not relayed unanchored");
                }
                (
                    MediaWait::Offer {
                        key,
                        policy,
                        initial,
                        ..
                    },
                    Some(sdp),
                ) => {
                    let Some(tx) = self.servers.get_mut(key) else {
                        continue;
                    };
                    let Ok(call_id) = tx.request.call_id().map(str::to_string) else {
                        continue;
                    };
                    if tx.final_status.is_some() || tx.cancelled {
                        // Answered (e.g. CANCELled) while the relay was asked: the session it
                        // has just made for a new call is not left behind.
                        if initial {
                            self.send_media_quietly(node, &media::delete(&call_id), now);
                        }
                        continue;
                    }
                    let offered = tx.request.body_bytes();
                    let offerer = tag_of(tx.request.from());
                    match tx.request.edit().set_body(sdp.clone()).finish_message() {
                        Ok(rewritten) => tx.request = rewritten,
                        Err(e) => {
                            // Never forwarded with the party's own SDP: its media would bypass
                            // the relay.
                            tracing::warn!(%call_id, error = %e, "cannot put the relay's SDP in the request");
                            if initial {
                                self.send_media_quietly(node, &media::delete(&call_id), now);
                            }
                            self.respond(key, 500, "SDP Rewrite Failed", now);
                            continue;
                        }
                    }
                    if initial {
                        tracing::debug!(%call_id, node, "call anchored");
                        self.anchor_call(&call_id, node, policy, offerer.clone(), None);
                    }
                    if let Some(call) = self.calls.media_mut(&call_id) {
                        let (from, to) = call.legs_from(&offerer);
                        from.received = Some(offered);
                        to.record_sent(&sdp);
                    }
                    self.try_next_target(key, now);
                }
                (
                    MediaWait::Offer {
                        key,
                        policy,
                        tried,
                        initial,
                    },
                    None,
                ) => {
                    let reason = result.as_ref().err().cloned();
                    let name = self
                        .relays
                        .nodes()
                        .get(node)
                        .map(|n| n.name.clone())
                        .unwrap_or_default();
                    tracing::warn!(relay = %name, ?reason, "relay refused or did not answer an offer");
                    // Not tried again (nor answered twice) once the request has its answer.
                    let open = self
                        .servers
                        .get(key)
                        .filter(|t| t.final_status.is_none() && !t.cancelled)
                        .map(|t| t.request.clone());
                    // No reply at all: a busy relay may still carry the offer out late, and
                    // nobody would ever delete that session (a relay keeps an unanswered offer
                    // for its offer timeout, an hour by default). The call goes elsewhere, so
                    // a delete follows it on this node (sent after the offer, so done after it).
                    if initial && !answered {
                        let call_id = self
                            .servers
                            .get(key)
                            .and_then(|t| t.request.call_id().ok().map(str::to_string));
                        if let Some(call_id) = call_id {
                            self.delete_or_orphan(node, &call_id, now);
                        }
                    }
                    match (initial, open) {
                        (true, Some(req)) => self.send_offer(key, &req, policy, tried, now),
                        (false, Some(_)) => self.respond(key, 503, "Media Relay Failed", now),
                        (_, None) => {}
                    }
                }
                (
                    MediaWait::Answer {
                        key,
                        status,
                        response,
                    },
                    Some(sdp),
                ) => {
                    let call = response
                        .call_id()
                        .ok()
                        .and_then(|c| self.calls.media_mut(c));
                    if let Some(call) = call {
                        // The answer comes from the leg the offer went to.
                        let (from, to) = call.legs_from(&tag_of(response.to()));
                        from.received = Some(response.body_bytes());
                        to.record_sent(&sdp);
                    }
                    if let Ok(rewritten) = response.edit().set_body(sdp).finish_message() {
                        self.forward_response_upstream(key, status, rewritten.bytes(), now);
                    }
                }
                (MediaWait::StatelessAnswer { response }, sdp) => {
                    self.on_stateless_answer(&response, sdp, now);
                }
                (MediaWait::Answer { key, status, .. }, None) => {
                    tracing::warn!("relay refused or did not answer an answer; the response is not relayed unanchored");
                    if status >= 200 {
                        self.respond(key, 502, "Media Relay Failed", now);
                    }
                }
            }
        }
    }
}
