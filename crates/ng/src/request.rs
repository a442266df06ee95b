//! Typed requests: `ping`, `offer`, `answer`, `delete`, `query`, `list`, `statistics`, and
//! the other commands with their identity only.

use bytes::Bytes;

use crate::command::Command;
use crate::error::ErrorReason;
use crate::flags::{normalise, Flags};
use crate::value::{Dict, Value};

/// A SIP Call-ID, as the `call-id` key carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub String);

/// A SIP From/To tag (`from-tag`, `to-tag`): one call participant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub String);

/// A `via-branch`: one fork branch of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Branch(pub String);

macro_rules! text_newtype {
    ($t:ident) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl From<&str> for $t {
            fn from(s: &str) -> $t {
                $t(s.to_owned())
            }
        }
        impl $t {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}
text_newtype!(CallId);
text_newtype!(Tag);
text_newtype!(Branch);

/// A request: what to do, and every option normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command and its identity keys.
    pub kind: RequestKind,
    /// All other keys and flags (see [`crate::flags`]).
    pub flags: Flags,
}

/// The command of a request with the keys that identify what it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// `ping`.
    Ping,
    /// `offer`.
    Offer(OfferAnswer),
    /// `answer` (its `to-tag` is required).
    Answer(OfferAnswer),
    /// `delete`.
    Delete(Delete),
    /// `query`.
    Query(Query),
    /// `list` (the count is [`Flags::limit`]).
    List,
    /// `statistics`.
    Statistics,
    /// A command rtpengine knows that this crate does not type; its identity keys as sent.
    Other {
        /// The command.
        command: Command,
        /// `call-id`, if sent.
        call_id: Option<CallId>,
        /// `from-tag`, if sent.
        from_tag: Option<Tag>,
        /// `to-tag`, if sent.
        to_tag: Option<Tag>,
    },
}

/// The identity and body of an `offer` or `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    /// `call-id`.
    pub call_id: CallId,
    /// `from-tag`: the offerer's tag (also in an answer).
    pub from_tag: Tag,
    /// `to-tag`: the answerer's tag (required in an answer).
    pub to_tag: Option<Tag>,
    /// `via-branch`: the fork branch.
    pub via_branch: Option<Branch>,
    /// `sdp`: the body, raw (SDP is not guaranteed UTF-8).
    pub sdp: Bytes,
}

/// A `delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// `call-id`.
    pub call_id: CallId,
    /// `from-tag` (absent: the whole call).
    pub from_tag: Option<Tag>,
    /// `to-tag` (honoured only with the `to-tag` flag; see [`Delete::target`]).
    pub to_tag: Option<Tag>,
    /// `via-branch`.
    pub via_branch: Option<Branch>,
}

/// What a `delete` removes (rtpengine's `call_delete_branch` rules, reference §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteTarget<'a> {
    /// No `from-tag`: the whole call.
    Call,
    /// `from-tag` and an honoured `to-tag`: the dialogue between these participants.
    Dialogue {
        /// `from-tag`.
        from_tag: &'a Tag,
        /// `to-tag`.
        to_tag: &'a Tag,
    },
    /// `from-tag` and `via-branch`: only that fork branch's callee leg.
    Branch {
        /// `from-tag`.
        from_tag: &'a Tag,
        /// `via-branch`.
        via_branch: &'a Branch,
    },
    /// `from-tag` alone: that participant (and the call if nothing else needs media).
    Participant(&'a Tag),
}

impl Delete {
    /// What this delete removes, given the request's flags (`to-tag` is ignored unless the
    /// `to-tag` flag is set, which a `to-tag=` in `rtpp-flags` also does).
    pub fn target<'a>(&'a self, flags: &Flags) -> DeleteTarget<'a> {
        let Some(from_tag) = &self.from_tag else {
            return DeleteTarget::Call;
        };
        match (&self.to_tag, &self.via_branch) {
            (Some(to_tag), _) if flags.to_tag => DeleteTarget::Dialogue { from_tag, to_tag },
            (_, Some(via_branch)) => DeleteTarget::Branch {
                from_tag,
                via_branch,
            },
            _ => DeleteTarget::Participant(from_tag),
        }
    }
}

/// A `query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `call-id`.
    pub call_id: CallId,
    /// `from-tag`: restrict `tags` to this participant.
    pub from_tag: Option<Tag>,
    /// `to-tag`.
    pub to_tag: Option<Tag>,
}

impl Request {
    /// A request of this kind with no options.
    pub fn new(kind: RequestKind) -> Request {
        Request {
            kind,
            flags: Flags::default(),
        }
    }

    /// The command.
    pub fn command(&self) -> Command {
        match &self.kind {
            RequestKind::Ping => Command::Ping,
            RequestKind::Offer(_) => Command::Offer,
            RequestKind::Answer(_) => Command::Answer,
            RequestKind::Delete(_) => Command::Delete,
            RequestKind::Query(_) => Command::Query,
            RequestKind::List => Command::List,
            RequestKind::Statistics => Command::Statistics,
            RequestKind::Other { command, .. } => *command,
        }
    }

    /// The Call-ID the request acts on, if any.
    pub fn call_id(&self) -> Option<&CallId> {
        match &self.kind {
            RequestKind::Offer(oa) | RequestKind::Answer(oa) => Some(&oa.call_id),
            RequestKind::Delete(d) => Some(&d.call_id),
            RequestKind::Query(q) => Some(&q.call_id),
            RequestKind::Other { call_id, .. } => call_id.as_ref(),
            RequestKind::Ping | RequestKind::List | RequestKind::Statistics => None,
        }
    }

    /// Interprets a decoded dictionary. Missing required keys give rtpengine's errors, checked
    /// in its order (SDP, call-id, from-tag, to-tag); an empty string counts as missing.
    pub fn from_dict(dict: &Dict) -> Result<Request, ErrorReason> {
        let (id, flags) = normalise(dict);
        let command = id.command.as_deref().ok_or(ErrorReason::NoCommand)?;
        let command = Command::from_wire(command).ok_or(ErrorReason::UnrecognizedCommand)?;
        let nonempty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
        let call_id = nonempty(&id.call_id).map(CallId);
        let from_tag = nonempty(&id.from_tag).map(Tag);
        let to_tag = nonempty(&id.to_tag).map(Tag);
        let via_branch = nonempty(&id.via_branch).map(Branch);
        let kind = match command {
            Command::Ping => RequestKind::Ping,
            Command::Offer | Command::Answer => {
                let sdp = id
                    .sdp
                    .filter(|s| !s.is_empty())
                    .ok_or(ErrorReason::NoSdpBody)?;
                let call_id = call_id.ok_or(ErrorReason::NoCallId)?;
                let from_tag = from_tag.ok_or(ErrorReason::NoFromTag)?;
                if command == Command::Answer && to_tag.is_none() {
                    return Err(ErrorReason::NoToTag);
                }
                let oa = OfferAnswer {
                    call_id,
                    from_tag,
                    to_tag,
                    via_branch,
                    sdp,
                };
                if command == Command::Offer {
                    RequestKind::Offer(oa)
                } else {
                    RequestKind::Answer(oa)
                }
            }
            Command::Delete => RequestKind::Delete(Delete {
                call_id: call_id.ok_or(ErrorReason::NoCallId)?,
                from_tag,
                to_tag,
                via_branch,
            }),
            Command::Query => RequestKind::Query(Query {
                call_id: call_id.ok_or(ErrorReason::NoCallId)?,
                from_tag,
                to_tag,
            }),
            Command::List => RequestKind::List,
            Command::Statistics => RequestKind::Statistics,
            command => RequestKind::Other {
                command,
                call_id,
                from_tag,
                to_tag,
            },
        };
        Ok(Request { kind, flags })
    }

    /// The wire dictionary: `command`, the identity keys, then [`Flags::to_entries`].
    pub fn to_dict(&self) -> Dict {
        let mut d: Dict = vec![("command".into(), Value::text(self.command().as_str()))];
        let mut text = |key: &str, value: Option<&str>| {
            if let Some(v) = value {
                d.push((key.to_owned(), Value::text(v)));
            }
        };
        match &self.kind {
            RequestKind::Ping | RequestKind::List | RequestKind::Statistics => {}
            RequestKind::Offer(oa) | RequestKind::Answer(oa) => {
                text("call-id", Some(oa.call_id.as_str()));
                text("from-tag", Some(oa.from_tag.as_str()));
                text("to-tag", oa.to_tag.as_ref().map(Tag::as_str));
                text("via-branch", oa.via_branch.as_ref().map(Branch::as_str));
                d.push(("sdp".into(), Value::Bytes(oa.sdp.clone())));
            }
            RequestKind::Delete(del) => {
                text("call-id", Some(del.call_id.as_str()));
                text("from-tag", del.from_tag.as_ref().map(Tag::as_str));
                text("to-tag", del.to_tag.as_ref().map(Tag::as_str));
                text("via-branch", del.via_branch.as_ref().map(Branch::as_str));
            }
            RequestKind::Query(q) => {
                text("call-id", Some(q.call_id.as_str()));
                text("from-tag", q.from_tag.as_ref().map(Tag::as_str));
                text("to-tag", q.to_tag.as_ref().map(Tag::as_str));
            }
            RequestKind::Other {
                call_id,
                from_tag,
                to_tag,
                ..
            } => {
                text("call-id", call_id.as_ref().map(CallId::as_str));
                text("from-tag", from_tag.as_ref().map(Tag::as_str));
                text("to-tag", to_tag.as_ref().map(Tag::as_str));
            }
        }
        d.extend(self.flags.to_entries());
        d
    }
}
