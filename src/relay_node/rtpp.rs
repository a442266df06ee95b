//! RTPProxy's control protocol on the relay (`--listen-rtpp`, `relay.listen_rtpp`): the
//! commands Kamailio's and OpenSIPS' `rtpproxy` modules send, each carried out through the
//! same [`Controller`] as an ng command, so the port pools, latching, timeouts, limits and
//! metrics are those of ng sessions.
//!
//! | command | done as |
//! | --- | --- |
//! | `V`, `VF`, `I` | answered here |
//! | `U` | ng `offer` with an SDP made of the command's address and port; the port and address of the returned SDP are the reply |
//! | `L` | ng `answer` the same way; `0` when there is no such session (as RTPProxy) |
//! | `D` | ng `delete` of every participant the command's tags name; `E50` if none |
//! | `Q` | ng `query`; `ttl npkts_ina npkts_ino nrelayed ndropped` |
//!
//! **One ng dialog per medianum.** RTPProxy keeps one session per `tag;medianum` and the
//! modules send one `U`/`L` per `m=` line, each naming its line by the medianum. The tags
//! given to the controller keep the `;medianum` (`ft;1` ↔ `tt;1`), so each `m=` line is a
//! dialog with its own ports — exactly RTPProxy's model, with no state of our own to keep in
//! step with the controller's: a re-`U` from either party finds its dialog by the two tags
//! as an ng re-offer does, and `D`/`Q` without a medianum reach every line of the call by
//! matching the tag before the `;`. Mapping the lines to `m=` lines of one dialog instead
//! would need the other lines' addresses (which only earlier commands carried) to rebuild
//! each offer.

use anchorage_ng::{
    CallId, Delete, ErrorReason, OfferAnswer, Outcome, Query, Reply as NgReply, Request,
    RequestKind, Value,
};
use anchorage_rtpp::{
    Command, CommandKind, ErrorCode, Modifier, Reply, Session, SessionTags, Tag, BASE_VERSION,
};
use bytes::Bytes;

use super::{clock, Begin, Cookie, RelayNode, ReplyCache, SocketBinder};

/// The capabilities (`VF`) this relay implements: the base protocol, several streams per
/// call (`tag;medianum`), `VF` itself, `Q` statistics, and payload types in `U`/`L` (`c…`,
/// accepted and used as the offered formats). Not: re-packetisation (`Z`), copying,
/// recording, playback, timeout notification, `Un`/`Ln`, sub-commands. Bridging (`E`/`I`)
/// needs no capability: it picks the relay's interfaces named `internal` and `external`.
pub(super) const CAPABILITIES: &[&str] =
    &["20040107", "20050322", "20060704", "20080403", "20081102"];

/// The interface names RTPProxy's bridging letters `I` and `E` pick.
const INTERNAL_EXTERNAL: [&str; 2] = ["internal", "external"];

/// The RTPProxy control socket's state.
pub(super) struct RtppControl {
    /// The socket.
    pub(super) socket: tokio::net::UdpSocket,
    /// Replies by (source, cookie): a retransmitted command gets the same reply.
    pub(super) cache: ReplyCache,
    /// The media timeout, reported as `Q`'s `ttl`.
    pub(super) ttl_s: u64,
}

/// The controller's tag for an RTPProxy tag: the medianum stays on it, taken from the other
/// tag when only one carries it (RTPProxy applies one medianum to both).
fn ng_tag(tag: &Tag, tags: &SessionTags) -> String {
    match tag.medianum.or(tags.medianum()) {
        Some(n) => format!("{};{n}", tag.tag),
        None => tag.tag.clone(),
    }
}

/// Whether the controller's tag `ng` is the RTPProxy tag `tag` (any medianum when it gives
/// none, as RTPProxy's `compare_session_tags`).
fn tag_matches(ng: &str, tag: &Tag) -> bool {
    match tag.medianum {
        Some(n) => ng == format!("{};{n}", tag.tag),
        None => {
            ng == tag.tag
                || ng
                    .strip_prefix(tag.tag.as_str())
                    .and_then(|rest| rest.strip_prefix(';'))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

/// The SDP an RTPProxy command stands for: one audio line at its address and port.
fn synthesized_sdp(session: &Session, formats: &[u8]) -> Bytes {
    let family = if session.address.is_ipv6() {
        "IP6"
    } else {
        "IP4"
    };
    let formats = if formats.is_empty() {
        "0".to_owned()
    } else {
        formats
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    Bytes::from(format!(
        "v=0\r\no=- 0 0 IN {family} {addr}\r\ns=-\r\nc=IN {family} {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n",
        addr = session.address,
        port = session.port,
    ))
}

/// The relay's port and address in the SDP it returned.
fn port_of(sdp: &Bytes) -> Option<Reply> {
    let session = anchorage_sdp::Session::parse(sdp.clone()).ok()?;
    let port = session.media().first()?.media().port();
    let address = session
        .effective_connection(0)
        .ok()
        .flatten()
        .and_then(|c| c.ip());
    Some(Reply::Port { port, address })
}

/// RTP packets received from one participant, from an ng `query` tag entry.
fn packets_of(info: &anchorage_ng::TagInfo) -> u64 {
    let field = |dict: &[(String, Value)], key: &str| -> Option<Value> {
        dict.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let Some(Value::List(medias)) = field(&info.other, "medias") else {
        return 0;
    };
    medias
        .iter()
        .filter_map(|m| match m {
            Value::Dict(m) => match field(m, "stats") {
                Some(Value::Dict(stats)) => match field(&stats, "packets") {
                    Some(Value::Int(n)) => u64::try_from(n).ok(),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .sum()
}

impl RelayNode {
    /// One datagram on the RTPProxy socket.
    pub(super) async fn on_rtpp(&mut self, datagram: &[u8], source: std::net::SocketAddr) {
        let now = clock();
        if !self.gate.admits(source, now.mono) {
            return;
        }
        let parsed = Command::parse(datagram);
        let cookie_text = match &parsed {
            Ok(command) => command.cookie.clone(),
            Err(error) => match &error.cookie {
                Some(cookie) => cookie.clone(),
                None => return, // nothing to answer to, as RTPProxy
            },
        };
        let Some(cookie) = Cookie::new(Bytes::from(cookie_text.clone())) else {
            return;
        };
        let Some(rtpp) = self.rtpp.as_mut() else {
            return;
        };
        match rtpp.cache.begin(source, &cookie, now.mono) {
            Begin::Cached(reply) => {
                let _ = rtpp.socket.send_to(&reply, source).await;
                return;
            }
            Begin::InProgress => return,
            Begin::New => {}
        }
        let reply = match &parsed {
            Ok(command) => {
                let reply = self.execute(command, now).await;
                let call_id = command.call_id().unwrap_or("");
                if let Reply::Error(code) = reply {
                    tracing::warn!(call_id, command = command.name(), %source, %code, "rtpproxy command failed");
                } else {
                    tracing::debug!(call_id, command = command.name(), %source, "rtpproxy command");
                }
                reply
            }
            Err(error) => {
                tracing::warn!(%source, %error, code = %error.code(), "malformed rtpproxy command");
                Reply::Error(error.code())
            }
        };
        let bytes = Bytes::from(reply.encode(&cookie_text));
        let Some(rtpp) = self.rtpp.as_mut() else {
            return;
        };
        rtpp.cache
            .complete(source, &cookie, bytes.clone(), std::time::Instant::now());
        if let Err(e) = rtpp.socket.send_to(&bytes, source).await {
            tracing::warn!(%source, error = %e, "cannot send rtpproxy reply");
        }
    }

    async fn execute(&mut self, command: &Command, now: anchorage_relay_control::Now) -> Reply {
        match &command.kind {
            CommandKind::Version => Reply::Text(BASE_VERSION.to_owned()),
            CommandKind::VersionFeature(cap) => {
                Reply::Number(u64::from(CAPABILITIES.contains(&cap.as_str())))
            }
            CommandKind::Info => self.rtpp_info(),
            CommandKind::Update(session) => {
                self.rtpp_offer_answer(command, session, true, now).await
            }
            CommandKind::Lookup(session) => {
                self.rtpp_offer_answer(command, session, false, now).await
            }
            CommandKind::Delete { call_id, tags } => self.rtpp_delete(call_id, tags, now).await,
            CommandKind::Query {
                call_id,
                tags,
                counters,
            } => {
                let verbose = command.modifiers.contains(&Modifier::Verbose);
                self.rtpp_query(call_id, tags, counters, verbose, now).await
            }
            CommandKind::Other { letter, .. } => {
                tracing::warn!(command = %letter, "rtpproxy command not implemented by this relay");
                Reply::Error(ErrorCode::UNKNOWN_COMMAND)
            }
        }
    }

    /// `U` (an offer) or `L` (an answer).
    async fn rtpp_offer_answer(
        &mut self,
        command: &Command,
        session: &Session,
        offer: bool,
        now: anchorage_relay_control::Now,
    ) -> Reply {
        let mut asymmetric = false;
        let mut formats: Vec<u8> = Vec::new();
        // Bridging, as RTPProxy: the first `E`/`I` names the interface facing the command's
        // sender, the second the one facing the other party; a third is an error.
        let mut sides: Vec<&'static str> = Vec::new();
        for modifier in &command.modifiers.0 {
            match modifier {
                Modifier::Asymmetric => asymmetric = true,
                Modifier::Symmetric => asymmetric = false,
                // No weak/strong distinction: a `D` deletes the session either way.
                Modifier::Weak | Modifier::Ipv6 => {}
                Modifier::Codecs(types) => formats = types.clone(),
                Modifier::External | Modifier::Internal if sides.len() == 2 => {
                    return Reply::Error(if *modifier == Modifier::External {
                        ErrorCode::NO_EXTERNAL
                    } else {
                        ErrorCode::NO_INTERNAL
                    });
                }
                Modifier::External => sides.push(INTERNAL_EXTERNAL[1]),
                Modifier::Internal => sides.push(INTERNAL_EXTERNAL[0]),
                other => {
                    tracing::warn!(call_id = session.call_id.as_str(), modifier = %other, "rtpproxy modifier not supported by this relay");
                    return Reply::Error(ErrorCode::UNSUPPORTED_MODIFIER);
                }
            }
        }
        let tags = &session.tags;
        let oa = OfferAnswer {
            call_id: CallId(session.call_id.clone()),
            from_tag: anchorage_ng::Tag(ng_tag(&tags.from, tags)),
            to_tag: tags.to.as_ref().map(|t| anchorage_ng::Tag(ng_tag(t, tags))),
            via_branch: None,
            sdp: synthesized_sdp(session, &formats),
        };
        let mut request = Request::new(if offer {
            RequestKind::Offer(oa)
        } else {
            RequestKind::Answer(oa)
        });
        request.flags.asymmetric = asymmetric;
        // As the ng `direction` pair (offerer's side first), on the offer that makes the
        // sockets: a side not named is on the internal interface, RTPProxy's first `-l`
        // address. A relay without interfaces named so keeps its usual choice (its first
        // interface of the address family): the one address is used for both sides. An `L`
        // finds the sockets the `U` made, as RTPProxy's does.
        if offer && !sides.is_empty() {
            let other = sides.get(1).copied().unwrap_or(INTERNAL_EXTERNAL[0]);
            request.flags.direction = vec![sides[0].to_owned(), other.to_owned()];
        }
        let mut binder = SocketBinder::default();
        let handled = self.controller.handle(&request, now, &mut binder);
        self.apply(handled.actions, &mut binder).await;
        match &handled.reply.outcome {
            Outcome::Ok | Outcome::Pong => {}
            Outcome::Error(reason) | Outcome::LoadLimit(Some(reason)) => {
                let lookup_missed = matches!(
                    handled.reply.error_reason(),
                    Some(
                        ErrorReason::UnknownCallId
                            | ErrorReason::InvalidDialogueAssociation
                            | ErrorReason::NoToTag
                    )
                );
                if !offer && lookup_missed {
                    return Reply::ok(); // RTPProxy's "no such session" to an `L`
                }
                tracing::warn!(
                    call_id = session.call_id.as_str(),
                    reason = reason.as_str(),
                    "rtpproxy command refused"
                );
                return Reply::Error(ErrorCode::CREATE_FAILED);
            }
            Outcome::LoadLimit(None) => return Reply::Error(ErrorCode::OVERLOAD),
        }
        match handled.reply.sdp.as_ref().and_then(port_of) {
            Some(reply) => reply,
            None => Reply::Error(ErrorCode::CREATE_FAILED),
        }
    }

    /// The controller's tags of a call (every participant of every dialog).
    fn tags_of(&mut self, call_id: &str, now: anchorage_relay_control::Now) -> Option<NgReply> {
        let request = Request::new(RequestKind::Query(Query {
            call_id: CallId(call_id.to_owned()),
            from_tag: None,
            to_tag: None,
        }));
        let handled = self
            .controller
            .handle(&request, now, &mut SocketBinder::default());
        (handled.reply.outcome == Outcome::Ok).then_some(handled.reply)
    }

    /// `D`: every participant the tags name, on every medianum unless one is given.
    async fn rtpp_delete(
        &mut self,
        call_id: &str,
        tags: &SessionTags,
        now: anchorage_relay_control::Now,
    ) -> Reply {
        let Some(report) = self.tags_of(call_id, now) else {
            return Reply::Error(ErrorCode::SESSION_UNKNOWN);
        };
        let named: Vec<String> = report
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|(_, info)| info.tag)
            .filter(|t| {
                !t.is_empty()
                    && (tag_matches(t, &tags.from)
                        || tags.to.as_ref().is_some_and(|to| tag_matches(t, to)))
            })
            .collect();
        if named.is_empty() {
            return Reply::Error(ErrorCode::SESSION_UNKNOWN);
        }
        for tag in named {
            let request = Request::new(RequestKind::Delete(Delete {
                call_id: CallId(call_id.to_owned()),
                from_tag: Some(anchorage_ng::Tag(tag)),
                to_tag: None,
                via_branch: None,
            }));
            let mut binder = SocketBinder::default();
            let handled = self.controller.handle(&request, now, &mut binder);
            self.apply(handled.actions, &mut binder).await;
        }
        Reply::ok()
    }

    /// `Q`: `ttl npkts_ina npkts_ino nrelayed ndropped`, or the counters named.
    async fn rtpp_query(
        &mut self,
        call_id: &str,
        tags: &SessionTags,
        counters: &[String],
        verbose: bool,
        now: anchorage_relay_control::Now,
    ) -> Reply {
        self.refresh(call_id).await;
        let Some(report) = self.tags_of(call_id, now) else {
            return Reply::Error(ErrorCode::SESSION_UNKNOWN);
        };
        let all = report.tags.unwrap_or_default();
        if !all
            .iter()
            .any(|(_, info)| tag_matches(&info.tag, &tags.from))
        {
            return Reply::Error(ErrorCode::SESSION_UNKNOWN);
        }
        let mut ina = 0;
        let mut ino = 0;
        for (_, info) in &all {
            if tag_matches(&info.tag, &tags.from) {
                ina += packets_of(info);
            } else if tags.to.as_ref().is_none_or(|to| tag_matches(&info.tag, to)) {
                ino += packets_of(info);
            }
        }
        let ttl = self.rtpp.as_ref().map_or(0, |r| r.ttl_s);
        // The relay forwards what it receives from a known party; drops are not counted per
        // session, so `ndropped` is 0 and `nrelayed` is what came in from both.
        let value = |name: &str| -> Option<u64> {
            Some(match name {
                "ttl" => ttl,
                "npkts_ina" => ina,
                "npkts_ino" => ino,
                "nrelayed" => ina + ino,
                "ndropped" => 0,
                _ => return None,
            })
        };
        let default = ["ttl", "npkts_ina", "npkts_ino", "nrelayed", "ndropped"];
        let names: Vec<&str> = if counters.is_empty() {
            default.to_vec()
        } else {
            counters.iter().map(String::as_str).collect()
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(v) = value(name) else {
                return Reply::Error(ErrorCode::QUERY_FAILED);
            };
            out.push(if verbose {
                format!("{name}={v}")
            } else {
                v.to_string()
            });
        }
        Reply::Text(out.join(" "))
    }

    /// `I`: RTPProxy's statistics lines.
    fn rtpp_info(&self) -> Reply {
        let statistics = self.controller.statistics();
        let sessions = self.controller.session_count();
        let forwarded = self.metrics.lock().map(|m| m.forwarded).unwrap_or_default();
        Reply::Text(format!(
            "sessions created: {}\nactive sessions: {}\nactive streams: {}\npackets received: {}\npackets transmitted: {}\n",
            statistics.managed_sessions,
            sessions,
            sessions * 2,
            forwarded.packets + forwarded.dropped,
            forwarded.packets,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(text: &str) -> Tag {
        Tag::parse(text).unwrap()
    }

    #[test]
    fn medianum_stays_on_the_tags() {
        let tags = SessionTags {
            from: tag("ft;2"),
            to: Some(tag("tt")),
        };
        assert_eq!(ng_tag(&tags.from, &tags), "ft;2");
        assert_eq!(ng_tag(tags.to.as_ref().unwrap(), &tags), "tt;2");
        assert!(tag_matches("ft;2", &tag("ft")));
        assert!(tag_matches("ft", &tag("ft")));
        assert!(tag_matches("ft;2", &tag("ft;2")));
        assert!(!tag_matches("ft;1", &tag("ft;2")));
        assert!(!tag_matches("ftx;1", &tag("ft")));
        assert!(!tag_matches("ft;x", &tag("ft")));
    }

    #[test]
    fn the_sdp_stands_for_the_command() {
        let session = Session {
            call_id: "c".into(),
            address: "2001:db8::1".parse().unwrap(),
            port: 4000,
            tags: SessionTags {
                from: tag("f;1"),
                to: None,
            },
            notify: None,
        };
        let sdp = synthesized_sdp(&session, &[8, 101]);
        let text = String::from_utf8(sdp.to_vec()).unwrap();
        assert!(text.contains("c=IN IP6 2001:db8::1\r\n"), "{text}");
        assert!(text.ends_with("m=audio 4000 RTP/AVP 8 101\r\n"), "{text}");
    }
}
