//! The RTPProxy engine: engine-neutral media requests as RTPProxy commands. An offer or answer
//! is one `U` (offer) or `L` (answer, or an offer with the `l` flag) per stream of its SDP —
//! RTPProxy keeps one session per Call-ID, tags and medianum — and its reply is the SDP with
//! the node's ports and addresses written in (`rtpproxy_sdp.rs`) once every stream is answered.
//! A delete is one `D` per session the engine opened for the call (or fork branch). `VF`
//! checks at start that the node keeps several streams per call; `V` is the health ping, and
//! `Ib` (brief statistics) goes with it at most once a second: its `active sessions` is the
//! node's load for the choice of a node for new calls.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anchorage_rtpp::{
    Client, ClientConfig, CommandKind, Event, Info, LegFlags, Modifier, Modifiers, Reply, Session,
    SessionTags, Tag, BASE_VERSION,
};
use bytes::Bytes;

use super::engine::{MediaError, MediaReply, RequestId};
use super::rtpproxy_sdp::{rewrite, streams, OriginState, Stream};
use super::{MediaRequest, SdpLeg};

/// The capability checked with `VF` at start: several RTP streams per call (medianum).
pub const MULTI_STREAM_CAPABILITY: &str = "20050322";

/// How often the node's load is asked for (`Ib`, on the ping client).
pub const LOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What a media request turned into.
#[derive(Debug)]
enum Job {
    /// An offer or answer: rewrite `sdp` once every stream has its port.
    Sdp {
        sdp: Box<anchorage_sdp::Session>,
        flags: LegFlags,
        streams: Vec<Stream>,
        /// `(wire Call-ID, sender's tag)`: whose `o=` state this SDP uses.
        origin_key: (String, String),
        /// The sessions this offer opened on a call the node had none of: closed again if
        /// the offer fails (boxed: the job stays small).
        opened: Option<Box<(String, String, String)>>,
        /// The address written into the SDP instead of the node's (the leg's `ip`).
        advertise: Option<IpAddr>,
        replies: Vec<Option<Result<(u16, IpAddr), MediaError>>>,
    },
    /// Deletes: done when every `D` is answered (or given up).
    Delete { left: usize },
}

/// The RTPProxy engine of one node.
#[derive(Debug)]
pub struct RtppEngine {
    control: SocketAddr,
    client: Client,
    pinger: Client,
    next_id: u64,
    jobs: HashMap<u64, Job>,
    /// Command → (job, stream slot); commands nobody waits for are absent.
    commands: HashMap<anchorage_rtpp::RequestId, (u64, usize)>,
    capability: Capability,
    /// Per Call-ID, the sessions opened by offers: `(wire Call-ID, offerer's tag)`.
    sessions: HashMap<String, BTreeSet<(String, String)>>,
    origins: HashMap<(String, String), OriginState>,
    events: VecDeque<MediaReply>,
    /// The `Ib` awaiting its reply, and when the next may go.
    load_query: Option<anchorage_rtpp::RequestId>,
    next_load_query: Instant,
    /// The node's `active sessions` from its latest `Ib`, not yet taken.
    load: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capability {
    Unknown,
    Asked(anchorage_rtpp::RequestId),
    Yes,
    No,
}

impl RtppEngine {
    /// The engine of the node at `control`, its `VF` check sent at `now`.
    pub(super) fn new(
        control: SocketAddr,
        config: ClientConfig,
        ping: ClientConfig,
        prefix: &str,
        n: usize,
        now: Instant,
    ) -> RtppEngine {
        let mut engine = RtppEngine {
            control,
            client: Client::new(config, &format!("{prefix}-c{n}")),
            pinger: Client::new(ping, &format!("{prefix}-p{n}")),
            next_id: 0,
            jobs: HashMap::new(),
            commands: HashMap::new(),
            capability: Capability::Unknown,
            sessions: HashMap::new(),
            origins: HashMap::new(),
            events: VecDeque::new(),
            load_query: None,
            next_load_query: now,
            load: None,
        };
        engine.ask_capability(now);
        engine
    }

    /// `Some(true)` once the node said it keeps several streams per call, `Some(false)` if it
    /// said it does not (it gets no calls).
    pub(super) fn capable(&self) -> Option<bool> {
        match self.capability {
            Capability::Yes => Some(true),
            Capability::No => Some(false),
            _ => None,
        }
    }

    fn ask_capability(&mut self, now: Instant) {
        let id = self.client.send(
            Modifiers::default(),
            CommandKind::VersionFeature(MULTI_STREAM_CAPABILITY.into()),
            now,
        );
        self.capability = Capability::Asked(id);
    }

    /// Sends a media request.
    pub(super) fn send(&mut self, request: &MediaRequest, now: Instant) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let result = match request {
            MediaRequest::Offer(leg) => self.send_sdp(id, leg, false, now),
            MediaRequest::Answer(leg) => self.send_sdp(id, leg, true, now),
            MediaRequest::Delete {
                call_id,
                from_tag,
                via_branch,
            } => {
                self.send_deletes(id, call_id, from_tag.as_deref(), via_branch.as_deref(), now);
                Ok(())
            }
        };
        if let Err(reason) = result {
            self.events.push_back(MediaReply {
                id: RequestId(id),
                result: Err(MediaError::Refused(reason)),
            });
        }
        RequestId(id)
    }

    /// One `U`/`L` per stream; an error (bad flags, unreadable SDP) refuses the request.
    fn send_sdp(
        &mut self,
        id: u64,
        leg: &SdpLeg,
        answer: bool,
        now: Instant,
    ) -> Result<(), String> {
        let flags = LegFlags::parse(&leg.rtpproxy_flags).map_err(|e| e.to_string())?;
        let sdp = anchorage_sdp::Session::parse(leg.sdp.clone())
            .map_err(|e| format!("unreadable SDP: {e}"))?;
        let streams = streams(&sdp)?;
        let wire = match &leg.via_branch {
            Some(branch) => format!("{};{branch}", leg.call_id),
            None => leg.call_id.clone(),
        };
        // Tags go in the order of the offer's transaction (offerer, answerer) for `U` and `L`
        // alike: RTPProxy tells the sides apart by which tag matches the session's.
        let (first, second) = (leg.from_tag.clone(), leg.to_tag.clone());
        if answer && second.as_deref().is_none_or(str::is_empty) {
            return Err("an answer without the answerer's tag".into());
        }
        if first.is_empty() || first.contains(char::is_whitespace) {
            return Err(format!("tag {first:?} cannot be sent to RTPProxy"));
        }
        // Whose SDP this is: its `o=` is kept stable per sender.
        let sender = if answer {
            second.clone().unwrap_or_default()
        } else {
            first.clone()
        };
        let lookup = answer || flags.force_lookup;
        let opened = (!lookup && !self.sessions.contains_key(&leg.call_id))
            .then(|| Box::new((leg.call_id.clone(), wire.clone(), first.clone())));
        if !lookup {
            let sessions = self.sessions.entry(leg.call_id.clone()).or_default();
            // One `D` per session: a re-offer from the other side names the same one.
            if !sessions.iter().any(|(w, _)| *w == wire) {
                sessions.insert((wire.clone(), first.clone()));
            }
        }
        for (slot, stream) in streams.iter().enumerate() {
            let n = stream.medianum();
            let tag = |t: &str| Tag {
                tag: t.to_string(),
                medianum: Some(n),
            };
            let session = Session {
                call_id: wire.clone(),
                address: stream.address,
                port: stream.port,
                tags: SessionTags {
                    from: tag(&first),
                    to: second.as_deref().filter(|t| !t.is_empty()).map(tag),
                },
                notify: None,
            };
            let mut modifiers = flags.modifiers.clone();
            if stream.address.is_ipv6() {
                modifiers.0.push(Modifier::Ipv6);
            }
            let kind = if lookup {
                CommandKind::Lookup(session)
            } else {
                CommandKind::Update(session)
            };
            let command = self.client.send(modifiers, kind, now);
            self.commands.insert(command, (id, slot));
        }
        let replies = vec![None; streams.len()];
        let job = Job::Sdp {
            sdp: Box::new(sdp),
            flags,
            origin_key: (wire, sender),
            opened,
            advertise: leg.rtpproxy_ip,
            replies,
            streams,
        };
        self.jobs.insert(id, job);
        self.finish_if_done(id, now);
        Ok(())
    }

    /// Takes on the session of a call this engine did not open (a call imported from its record
    /// after a restart): `offerer_tag`'s session under the Call-ID itself, so the call's delete
    /// reaches the node. Nothing when sessions of the call are known already.
    pub(super) fn adopt(&mut self, call_id: &str, offerer_tag: &str) {
        self.sessions
            .entry(call_id.to_string())
            .or_insert_with(|| BTreeSet::from([(call_id.to_string(), offerer_tag.to_string())]));
    }

    /// One `D` per session of the call (or of its fork branch `via_branch`).
    fn send_deletes(
        &mut self,
        id: u64,
        call_id: &str,
        from_tag: Option<&str>,
        via_branch: Option<&str>,
        now: Instant,
    ) {
        let branch_wire = via_branch.map(|b| format!("{call_id};{b}"));
        let mut doomed = Vec::new();
        if let Some(sessions) = self.sessions.get_mut(call_id) {
            sessions.retain(|(wire, tag)| {
                let hit = branch_wire.as_ref().is_none_or(|w| w == wire)
                    && (branch_wire.is_none() || from_tag.is_none_or(|f| f == tag));
                if hit {
                    doomed.push((wire.clone(), tag.clone()));
                }
                !hit
            });
            if sessions.is_empty() {
                self.sessions.remove(call_id);
            }
        }
        self.origins
            .retain(|(wire, _), _| !doomed.iter().any(|(w, _)| w == wire));
        for (slot, (wire, tag)) in doomed.iter().enumerate() {
            let command = self.delete_command(wire, tag, now);
            self.commands.insert(command, (id, slot));
        }
        self.jobs.insert(id, Job::Delete { left: doomed.len() });
        self.finish_if_done(id, now);
    }

    fn delete_command(&mut self, wire: &str, tag: &str, now: Instant) -> anchorage_rtpp::RequestId {
        let kind = CommandKind::Delete {
            call_id: wire.to_string(),
            tags: SessionTags {
                from: Tag {
                    tag: tag.to_string(),
                    medianum: None,
                },
                to: None,
            },
        };
        self.client.send(Modifiers::default(), kind, now)
    }

    /// Sends a `V` ping (and the `VF` check again if it was never answered), with an `Ib`
    /// for the node's load when one is due and none is awaited.
    pub(super) fn send_ping(&mut self, now: Instant) -> u64 {
        if self.capability == Capability::Unknown {
            self.ask_capability(now);
        }
        let ping = self
            .pinger
            .send(Modifiers::default(), CommandKind::Version, now);
        if self.load_query.is_none() && now >= self.next_load_query {
            let brief = Modifiers(vec![Modifier::Brief]);
            self.load_query = Some(self.pinger.send(brief, CommandKind::Info, now));
            self.next_load_query = now + LOAD_INTERVAL;
        }
        ping.0
    }

    /// The next ping outcome: answered with the base version or not. The `Ib` replies met on
    /// the way are taken as the node's load.
    pub(super) fn poll_ping(&mut self) -> Option<(u64, bool)> {
        loop {
            let event = self.pinger.poll_event()?;
            let id = match &event {
                Event::Reply(id, _) | Event::TimedOut(id) | Event::Failed(id, _) => *id,
            };
            if self.load_query == Some(id) {
                self.load_query = None;
                self.take_load(event);
                continue;
            }
            return Some(match event {
                Event::Reply(id, reply) => {
                    let version = match &reply {
                        Reply::Number(n) => n.to_string(),
                        Reply::Text(t) => t.trim().to_string(),
                        _ => String::new(),
                    };
                    (id.0, version == BASE_VERSION)
                }
                Event::TimedOut(id) | Event::Failed(id, _) => (id.0, false),
            });
        }
    }

    /// An `Ib` outcome: its `active sessions`, or a warning (the last load stands).
    fn take_load(&mut self, event: Event) {
        let text = match event {
            Event::Reply(_, Reply::Text(text)) => text,
            Event::Reply(_, other) => other.to_string(),
            Event::TimedOut(_) => return,
            Event::Failed(_, e) => e.to_string(),
        };
        match Info::parse(&text) {
            Ok(info) => self.load = Some(info.active_sessions),
            Err(e) => {
                tracing::warn!(node = %self.control, error = %e, "RTPProxy statistics (Ib) unreadable: its load is not updated");
            }
        }
    }

    /// The node's `active sessions` from an `Ib` answered since the last call.
    pub(super) fn poll_load(&mut self) -> Option<u64> {
        self.load.take()
    }

    /// A datagram from the node.
    pub(super) fn handle_datagram(&mut self, datagram: &[u8], now: Instant) {
        // Cookies tell the two clients' replies apart; each ignores the other's.
        self.client.handle_datagram(datagram);
        self.pinger.handle_datagram(datagram);
        self.collect(now);
    }

    /// Retransmissions and timeouts due at `now`.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.pinger.handle_timeout(now);
        self.collect(now);
    }

    /// The next retransmission or timeout.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.pinger.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next datagram to send.
    pub(super) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.client
            .poll_transmit()
            .or_else(|| self.pinger.poll_transmit())
            .map(Bytes::from)
    }

    /// The next finished media request.
    pub(super) fn poll_event(&mut self) -> Option<MediaReply> {
        self.events.pop_front()
    }

    /// Commands awaiting the node's reply (pings aside).
    pub(super) fn pending(&self) -> usize {
        self.client.pending()
    }

    /// Takes the command replies into their jobs.
    fn collect(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            let (command, outcome) = match event {
                Event::Reply(c, reply) => (c, Ok(reply)),
                Event::TimedOut(c) => (c, Err(MediaError::TimedOut)),
                Event::Failed(c, e) => (c, Err(MediaError::Malformed(e.to_string()))),
            };
            if self.capability == Capability::Asked(command) {
                self.capability = match outcome {
                    Ok(Reply::Number(1)) => Capability::Yes,
                    Ok(other) => {
                        tracing::warn!(node = %self.control, reply = %other, capability = MULTI_STREAM_CAPABILITY, "RTPProxy node lacks a capability the proxy needs: no calls go to it");
                        Capability::No
                    }
                    Err(_) => Capability::Unknown,
                };
                continue;
            }
            let Some((job, slot)) = self.commands.remove(&command) else {
                continue;
            };
            match self.jobs.get_mut(&job) {
                Some(Job::Sdp { replies, .. }) => {
                    if let Some(r) = replies.get_mut(slot) {
                        *r = Some(outcome.and_then(|reply| port_of(&reply, self.control.ip())));
                    }
                }
                Some(Job::Delete { left }) => *left = left.saturating_sub(1),
                None => {}
            }
            self.finish_if_done(job, now);
        }
    }

    /// Hands out the reply of a job whose commands are all answered.
    fn finish_if_done(&mut self, id: u64, now: Instant) {
        let done = match self.jobs.get(&id) {
            Some(Job::Sdp { replies, .. }) => replies.iter().all(Option::is_some),
            Some(Job::Delete { left }) => *left == 0,
            None => false,
        };
        if !done {
            return;
        }
        let result = match self.jobs.remove(&id) {
            Some(Job::Sdp {
                sdp,
                flags,
                streams,
                origin_key,
                opened,
                advertise,
                replies,
            }) => {
                let mut relayed = Vec::new();
                let mut failure = None;
                for (stream, reply) in streams.iter().zip(replies) {
                    match reply {
                        Some(Ok((port, address))) => {
                            relayed.push((stream.index, port, advertise.unwrap_or(address)));
                        }
                        Some(Err(e)) => {
                            failure.get_or_insert(e);
                        }
                        None => {}
                    }
                }
                match failure {
                    Some(e) => {
                        self.close_opened(opened, now);
                        Err(e)
                    }
                    None => {
                        let mut origin = self.origins.remove(&origin_key);
                        let out = rewrite(&sdp, &relayed, &flags, &mut origin)
                            .map(Some)
                            .map_err(|e| MediaError::Refused(format!("SDP rewrite: {e}")));
                        if let Some(origin) = origin {
                            self.origins.insert(origin_key, origin);
                        }
                        out
                    }
                }
            }
            Some(Job::Delete { .. }) => Ok(None),
            None => return,
        };
        self.events.push_back(MediaReply {
            id: RequestId(id),
            result,
        });
    }

    /// A failed offer on a call the node had no session of leaves none behind: the streams it
    /// did open are deleted (nobody waits for those replies).
    fn close_opened(&mut self, opened: Option<Box<(String, String, String)>>, now: Instant) {
        let Some((call_id, wire, tag)) = opened.map(|o| *o) else {
            return;
        };
        if let Some(sessions) = self.sessions.get_mut(&call_id) {
            sessions.remove(&(wire.clone(), tag.clone()));
            if sessions.is_empty() {
                self.sessions.remove(&call_id);
            }
        }
        // A `D` for a stream that was never made is answered E50: harmless.
        self.delete_command(&wire, &tag, now);
    }
}

/// The port and address of a `U`/`L` reply (`default` when it gives no address).
fn port_of(reply: &Reply, default: IpAddr) -> Result<(u16, IpAddr), MediaError> {
    match reply {
        Reply::Error(code) => Err(MediaError::Refused(format!("RTPProxy error {code}"))),
        Reply::Number(0) => Err(MediaError::Refused("RTPProxy has no such session".into())),
        other => other
            .port()
            .map(|(port, address)| (port, address.unwrap_or(default)))
            .ok_or_else(|| MediaError::Malformed(format!("not a port: {other:?}"))),
    }
}

#[cfg(test)]
mod tests;
