//! The RTPProxy engine: engine-neutral media requests as RTPProxy commands. An offer or answer
//! is one `U` (offer) or `L` (answer, or an offer with the `l` flag) per stream of its SDP —
//! RTPProxy keeps one session per Call-ID, tags and medianum — and its reply is the SDP with
//! the node's ports and addresses written in (`rtpproxy_sdp.rs`) once every stream is answered.
//! A delete is one `D` per session the engine opened for the call (or fork branch). `VF`
//! checks at start that the node keeps several streams per call; `V` is the health ping.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anchorage_rtpp::{
    Client, ClientConfig, CommandKind, Event, LegFlags, Modifier, Modifiers, Reply, Session,
    SessionTags, Tag, BASE_VERSION,
};
use bytes::Bytes;

use super::engine::{MediaError, MediaReply, RequestId};
use super::rtpproxy_sdp::{rewrite, streams, OriginState, Stream};
use super::{MediaRequest, SdpLeg};

/// The capability checked with `VF` at start: several RTP streams per call (medianum).
pub const MULTI_STREAM_CAPABILITY: &str = "20050322";

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
        /// the offer fails.
        opened: Option<(String, String, String)>,
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
            .then(|| (leg.call_id.clone(), wire.clone(), first.clone()));
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
            replies,
            streams,
        };
        self.jobs.insert(id, job);
        self.finish_if_done(id, now);
        Ok(())
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

    /// Sends a `V` ping (and the `VF` check again if it was never answered).
    pub(super) fn send_ping(&mut self, now: Instant) -> u64 {
        if self.capability == Capability::Unknown {
            self.ask_capability(now);
        }
        self.pinger
            .send(Modifiers::default(), CommandKind::Version, now)
            .0
    }

    /// The next ping outcome: answered with the base version or not.
    pub(super) fn poll_ping(&mut self) -> Option<(u64, bool)> {
        self.pinger.poll_event().map(|event| match event {
            Event::Reply(id, reply) => {
                let version = match &reply {
                    Reply::Number(n) => n.to_string(),
                    Reply::Text(t) => t.trim().to_string(),
                    _ => String::new(),
                };
                (id.0, version == BASE_VERSION)
            }
            Event::TimedOut(id) | Event::Failed(id, _) => (id.0, false),
        })
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
                replies,
            }) => {
                let mut relayed = Vec::new();
                let mut failure = None;
                for (stream, reply) in streams.iter().zip(replies) {
                    match reply {
                        Some(Ok((port, address))) => relayed.push((stream.index, port, address)),
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
    fn close_opened(&mut self, opened: Option<(String, String, String)>, now: Instant) {
        let Some((call_id, wire, tag)) = opened else {
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
mod tests {
    use super::*;
    use std::time::Duration;

    const OFFER: &[u8] =
        b"v=0\r\no=a 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 96\r\n";

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn engine(now: Instant) -> RtppEngine {
        let control: SocketAddr = "127.0.0.1:22222".parse().unwrap();
        let mut e = RtppEngine::new(
            control,
            ClientConfig::default(),
            ClientConfig::default(),
            "n1-1",
            0,
            now,
        );
        let vf = e.poll_transmit().unwrap();
        assert_eq!(&vf[..], b"n1-1-c0_0 VF 20050322");
        e.handle_datagram(b"n1-1-c0_0 1\n", now);
        assert_eq!(e.capable(), Some(true));
        e
    }

    fn offer(call_id: &str) -> MediaRequest {
        super::super::offer_answer(false, call_id, "ft", None, Bytes::from_static(OFFER), "")
            .rtpproxy("z20")
    }

    /// The commands sent since the last call, as text.
    fn sent(e: &mut RtppEngine) -> Vec<String> {
        std::iter::from_fn(|| e.poll_transmit())
            .map(|d| String::from_utf8_lossy(&d).to_string())
            .collect()
    }

    #[test]
    fn one_update_per_stream_and_the_sdp_gets_every_port() {
        let now = t0();
        let mut e = engine(now);
        let id = e.send(&offer("c1"), now);
        assert_eq!(
            sent(&mut e),
            vec![
                "n1-1-c0_1 UZ20 c1 192.0.2.1 4000 ft;1",
                "n1-1-c0_2 UZ20 c1 192.0.2.1 4002 ft;2"
            ]
        );
        e.handle_datagram(b"n1-1-c0_2 30002 203.0.113.9\n", now);
        assert_eq!(e.poll_event(), None, "one stream still waits");
        e.handle_datagram(b"n1-1-c0_1 30000\n", now);
        let reply = e.poll_event().unwrap();
        assert_eq!(reply.id, id);
        let sdp = String::from_utf8(reply.result.unwrap().unwrap().to_vec()).unwrap();
        assert!(
            sdp.contains("m=audio 30000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\n"),
            "{sdp}"
        );
        assert!(
            sdp.contains("m=video 30002 RTP/AVP 96\r\nc=IN IP4 203.0.113.9\r\n"),
            "{sdp}"
        );
        // The whole call's delete: one D for the session the offer opened.
        e.send(&super::super::delete("c1"), now);
        assert_eq!(sent(&mut e), vec!["n1-1-c0_3 D c1 ft"]);
        e.handle_datagram(b"n1-1-c0_3 0\n", now);
        assert!(matches!(
            e.poll_event(),
            Some(MediaReply {
                result: Ok(None),
                ..
            })
        ));
    }

    #[test]
    fn malformed_replies_fail_their_request_only() {
        let now = t0();
        let mut e = engine(now);
        let bad = e.send(&offer("bad"), now);
        let good = e.send(&offer("good"), now);
        sent(&mut e);
        // A port out of range for one stream of the first offer: that offer fails with a clear
        // error; its other stream's session is closed again; the second offer is untouched.
        e.handle_datagram(b"n1-1-c0_1 70000 127.0.0.1\n", now);
        e.handle_datagram(b"n1-1-c0_2 30002 127.0.0.1\n", now);
        let reply = e.poll_event().unwrap();
        assert_eq!(reply.id, bad);
        assert_eq!(
            reply.result,
            Err(MediaError::Malformed("malformed port `70000`".into()))
        );
        assert_eq!(sent(&mut e), vec!["n1-1-c0_5 D bad ft"]);
        // Garbage with no cookie of ours, and text where a port belongs.
        e.handle_datagram(b"\xff\xfe", now);
        e.handle_datagram(b"n1-1-c0_3 sessions created: 1\n", now);
        e.handle_datagram(b"n1-1-c0_4 E71\n", now);
        let reply = e.poll_event().unwrap();
        assert_eq!(reply.id, good);
        assert!(matches!(&reply.result, Err(MediaError::Malformed(m)) if m.contains("not a port")));
        assert_eq!(e.poll_event(), None);
        assert_eq!(sent(&mut e), vec!["n1-1-c0_6 D good ft"]);
        // A refusal is an answer: the next node is tried without waiting.
        let refused = e.send(&offer("r"), now);
        e.handle_datagram(b"n1-1-c0_7 E71\n", now);
        e.handle_datagram(b"n1-1-c0_8 30000 127.0.0.1\n", now);
        let reply = e.poll_event().unwrap();
        assert_eq!(reply.id, refused);
        assert_eq!(
            reply.result,
            Err(MediaError::Refused("RTPProxy error E71".into()))
        );
    }

    #[test]
    fn unknown_flags_and_unreadable_sdp_are_refused_at_once() {
        let now = t0();
        let mut e = engine(now);
        let flags = e.send(&offer("c").rtpproxy("cq"), now);
        let reply = e.poll_event().unwrap();
        assert_eq!(reply.id, flags);
        assert_eq!(
            reply.result,
            Err(MediaError::Refused("unknown RTPProxy flag 'q'".into()))
        );
        let garbage =
            super::super::offer_answer(false, "c", "ft", None, Bytes::from_static(b"nonsense"), "");
        e.send(&garbage, now);
        assert!(matches!(
            e.poll_event().map(|r| r.result),
            Some(Err(MediaError::Refused(m))) if m.starts_with("unreadable SDP")
        ));
        assert!(sent(&mut e).is_empty(), "nothing goes to the node");
    }

    #[test]
    fn a_node_without_the_capability_is_not_capable_and_pings_want_the_base_version() {
        let now = t0();
        let control: SocketAddr = "127.0.0.1:22222".parse().unwrap();
        let mut e = RtppEngine::new(
            control,
            ClientConfig::default(),
            ClientConfig::default(),
            "p",
            3,
            now,
        );
        sent(&mut e);
        e.handle_datagram(b"p-c3_0 0\n", now);
        assert_eq!(e.capable(), Some(false));
        let ping = e.send_ping(now);
        assert_eq!(sent(&mut e), vec!["p-p3_0 V"]);
        e.handle_datagram(b"p-p3_0 20040107\n", now);
        assert_eq!(e.poll_ping(), Some((ping, true)));
        let ping = e.send_ping(now);
        e.handle_timeout(now + Duration::from_secs(2));
        assert_eq!(e.poll_ping(), Some((ping, false)));
    }
}
