//! The [`Agent`]'s seam — `handle_datagram`, `handle_timeout`, the polls, `stop` and
//! `abandon` — and what every call shares: the dispatch of a datagram to its call (or a new
//! one), responses, the media instruction of a call, and how a call is set up and ends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use anchorage_sip::{Message, Method};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sdp::RemoteMedia;

use super::{
    side_index, transaction, Agent, Call, Config, Event, MediaPorts, Outcome, Progress, Reply,
    Side, State, Transmit, ALLOW, LINGER_T1S,
};

impl Agent {
    /// An agent starting at `now`; the UAC places its first call at once.
    pub fn new(config: Config, now: Instant) -> Agent {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let run_id = rng.random::<u64>() & 0xffff_ffff_ffff;
        let next_call_at = config.uac.as_ref().filter(|u| u.calls > 0).map(|_| now);
        Agent {
            tx_timers: transaction::timer_config(config.t1, config.t2),
            config,
            rng,
            calls: HashMap::new(),
            by_call_id: HashMap::new(),
            next_id: 0,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            run_id,
            placed: 0,
            next_call_at,
            blocked: false,
            live: [0; 2],
            uas_ended: 0,
            stopping: false,
            progress: Progress::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counts for a progress line.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// A datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// A media instruction or a finished call, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let next_call = self.next_call_at.filter(|_| !self.start_blocked());
        match (timer, next_call) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn start_blocked(&self) -> bool {
        self.stopping
            || self
                .config
                .uac
                .as_ref()
                .is_none_or(|u| self.live[0] >= u.concurrent)
    }

    /// Whether every call is placed and over (UAS only: the configured number of calls
    /// ended, or stopped with none left).
    pub fn is_done(&self) -> bool {
        let uac_done = match &self.config.uac {
            Some(u) => (self.stopping || self.placed >= u.calls) && self.live[0] == 0,
            None => true,
        };
        let uas_done = match &self.config.uas {
            Some(u) if self.config.uac.is_none() => {
                self.live[1] == 0 && (self.stopping || u.calls.is_some_and(|n| self.uas_ended >= n))
            }
            Some(_) => self.live[1] == 0,
            None => true,
        };
        uac_done && uas_done
    }

    /// Live calls of a population.
    pub fn live(&self, side: Side) -> u64 {
        self.live[side_index(side)]
    }

    /// Stops placing calls and ends every live one: BYE for set-up calls, CANCEL for ringing
    /// ones, 480 for unanswered incoming ones.
    pub fn stop(&mut self, now: Instant) {
        self.stopping = true;
        self.next_call_at = None;
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(mut call) = self.calls.remove(&id) else {
                continue;
            };
            match (call.r.side, call.state) {
                (_, State::Established) | (Side::Uas, State::Answered) => {
                    self.send_bye(now, &mut call);
                }
                (Side::Uac, State::Proceeding) => self.send_cancel(now, &mut call),
                (Side::Uas, State::Calling) => {
                    self.uas_final(now, &mut call, 480, "Temporarily Unavailable");
                    self.end(now, &mut call, Outcome::Failed, Some(480), "stopped");
                }
                _ => {}
            }
            self.put_back(call);
        }
    }

    /// Forgets every call at once (the last call of a run after its deadline).
    pub fn abandon(&mut self, now: Instant) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            if let Some(mut call) = self.calls.remove(&id) {
                if call.state != State::Ended {
                    let outcome = if call.record.established.is_some() {
                        Outcome::Dropped
                    } else {
                        Outcome::Failed
                    };
                    self.end(now, &mut call, outcome, None, "still running at the end");
                }
            }
        }
        self.by_call_id.clear();
        self.timers.clear();
    }

    pub(super) fn put_back(&mut self, call: Call) {
        self.schedule(&call);
        self.calls.insert(call.r.id, call);
    }

    pub(super) fn send(&mut self, side: Side, destination: SocketAddr, data: Bytes) {
        self.transmits.push_back(Transmit {
            side,
            destination,
            data,
        });
    }

    pub(super) fn token(&mut self, len: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(HEX[self.rng.random_range(0..16)]))
            .collect()
    }

    pub(super) fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.token(16))
    }

    pub(super) fn local_sip(&self, side: Side) -> Option<SocketAddr> {
        match side {
            Side::Uac => self.config.uac.as_ref().map(|u| u.local),
            Side::Uas => self.config.uas.as_ref().map(|u| u.local),
        }
    }

    /// Runs the timers due at `now` and starts the calls due.
    pub fn handle_timeout(&mut self, now: Instant, media: &mut dyn MediaPorts) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(mut call) = self.calls.remove(&id) {
                let remove = self.on_call_timer(now, &mut call);
                if remove {
                    self.by_call_id.remove(&(call.r.side, call.call_id.clone()));
                } else {
                    self.put_back(call);
                }
            }
        }
        self.start_due_calls(now, media);
    }

    /// A datagram arrived on one population's SIP socket.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        side: Side,
        source: SocketAddr,
        data: Bytes,
        media: &mut dyn MediaPorts,
    ) {
        let msg = match Message::parse(data) {
            Ok(m) if m.validate().is_ok() => m,
            _ => {
                self.progress.bad_messages += 1;
                return;
            }
        };
        let Ok(call_id) = msg.call_id().map(str::to_string) else {
            self.progress.bad_messages += 1;
            return;
        };
        let id = self.by_call_id.get(&(side, call_id)).copied();
        if msg.is_request() {
            match id.and_then(|id| self.calls.remove(&id)) {
                Some(mut call) => {
                    self.on_request(now, &mut call, &msg, source);
                    self.put_back(call);
                }
                None => self.on_new_request(now, side, &msg, source, media),
            }
        } else if let Some(mut call) = id.and_then(|id| self.calls.remove(&id)) {
            self.on_response(now, &mut call, &msg);
            self.put_back(call);
        }
        self.start_due_calls(now, media);
    }

    /// Sends `reply` to `req` from `side`'s socket to `destination`, with our To tag `tag`;
    /// returns the response as sent.
    pub(super) fn respond(
        &mut self,
        side: Side,
        req: &Message,
        destination: SocketAddr,
        tag: &str,
        reply: Reply<'_>,
    ) -> Option<Bytes> {
        let mut b = req.response(reply.status, reply.reason).to_tag(tag);
        for (name, value) in reply.extra {
            b = b.header(name, value);
        }
        if let Some(body) = reply.body {
            b = b.body("application/sdp", body);
        }
        let data = b.build().ok()?.bytes();
        self.send(side, destination, data.clone());
        Some(data)
    }

    pub(super) fn on_new_request(
        &mut self,
        now: Instant,
        side: Side,
        msg: &Message,
        source: SocketAddr,
        media: &mut dyn MediaPorts,
    ) {
        let method = msg.method().unwrap_or(Method::Other("?"));
        let has_to_tag = msg.to().ok().and_then(|t| t.tag()).is_some();
        let tag = self.token(10);
        match method {
            Method::Ack => {}
            Method::Invite if side == Side::Uas && !has_to_tag && self.config.uas.is_some() => {
                if self.stopping {
                    self.respond(
                        side,
                        msg,
                        source,
                        &tag,
                        Reply::new(480, "Temporarily Unavailable"),
                    );
                } else {
                    self.new_uas_call(now, msg, source, tag, media);
                }
            }
            Method::Options => {
                self.respond(
                    side,
                    msg,
                    source,
                    &tag,
                    Reply::new(200, "OK").extra(&[("Allow", ALLOW)]),
                );
            }
            _ => {
                self.respond(
                    side,
                    msg,
                    source,
                    &tag,
                    Reply::new(481, "Call/Transaction Does Not Exist"),
                );
            }
        }
    }

    /// Ends the call: records the outcome, stops the media, counts it, and lets it linger.
    pub(super) fn end(
        &mut self,
        now: Instant,
        call: &mut Call,
        outcome: Outcome,
        status: Option<u16>,
        reason: &str,
    ) {
        if call.state == State::Ended {
            return;
        }
        let was_up = matches!(
            call.state,
            State::Established | State::Answered | State::Ending
        );
        call.state = State::Ended;
        call.record.outcome = outcome;
        if status.is_some() {
            call.record.status = status;
        }
        if outcome != Outcome::Completed && call.record.reason.is_none() {
            call.record.reason = Some(reason.to_string());
        }
        call.record.ended = now;
        call.deadlines.hangup_at = None;
        call.deadlines.cancel_at = None;
        call.deadlines.reinvite_at = None;
        call.deadlines.answer_at = None;
        call.deadlines.abandon_at = None;
        call.deadlines.linger_until = Some(now + self.config.t1 * LINGER_T1S);
        call.tx.client = None;
        call.tx.bye = None;
        call.tx.cancel = None;
        let i = side_index(call.r.side);
        self.live[i] = self.live[i].saturating_sub(1);
        if call.r.side == Side::Uas {
            self.uas_ended += 1;
        }
        if self.counts_up(call.r.side) {
            if was_up && call.record.established.is_some() {
                self.progress.up = self.progress.up.saturating_sub(1);
            }
            self.progress.ended += 1;
            match outcome {
                Outcome::Completed => self.progress.completed += 1,
                Outcome::Dropped => self.progress.dropped += 1,
                Outcome::Failed => self.progress.failed += 1,
            }
        }
        self.events.push_back(Event::MediaStop { call: call.r });
        self.events.push_back(Event::Ended {
            call: call.r,
            record: call.record.clone(),
        });
    }

    pub(super) fn establish(&mut self, now: Instant, call: &mut Call) {
        call.state = State::Established;
        call.record.established = Some(now);
        if !call.send_ready {
            call.send_ready = true;
            self.media_event(call, false);
        }
        if self.counts_up(call.r.side) {
            self.progress.up += 1;
        }
        let hold = self.config.hold;
        call.deadlines.hangup_at = Some(if call.hangs_up {
            now + hold
        } else {
            now + hold + self.config.t1 * 64
        });
        if call.r.side == Side::Uac {
            if let Some(after) = self.config.uac.as_ref().and_then(|u| u.reinvite_after) {
                call.deadlines.reinvite_at = Some(now + after);
            }
        }
    }

    /// The up-count follows the UAC when there is one, else the UAS.
    pub(super) fn counts_up(&self, side: Side) -> bool {
        side == Side::Uac || self.config.uac.is_none()
    }

    pub(super) fn media_event(&mut self, call: &Call, reinvite: bool) {
        let remote = call.remote.unwrap_or(RemoteMedia {
            address: None,
            direction: anchorage_sdp::Direction::Inactive,
        });
        let ours = call.sdp.direction();
        let we_send = matches!(
            ours,
            anchorage_sdp::Direction::SendRecv | anchorage_sdp::Direction::SendOnly
        );
        let we_receive = matches!(
            ours,
            anchorage_sdp::Direction::SendRecv | anchorage_sdp::Direction::RecvOnly
        );
        self.events.push_back(Event::Media {
            call: call.r,
            remote: remote.address,
            send: we_send && remote.receives() && call.send_ready,
            receive: we_receive && remote.sends(),
            reinvite,
        });
    }
}
