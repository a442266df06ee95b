//! Typed replies. Counters and timestamps are bencode integers (OpenSIPS type-checks them).

use bytes::Bytes;

use crate::error::{ErrorReason, ReplyError};
use crate::flags::int_value;
use crate::value::{Dict, Value};

/// The `result` of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`.
    Ok,
    /// `pong` (ping only).
    Pong,
    /// `error` with its `error-reason` text.
    Error(String),
    /// `load limit` with its optional `message` (only to clients that sent
    /// `supports: ["load limit"]`).
    LoadLimit(Option<String>),
}

/// A reply. One flat shape serves every command: keys a command does not produce stay
/// `None`/empty and are not encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `result` (+ `error-reason` / `message`).
    pub outcome: Outcome,
    /// `warning`: a non-fatal remark on an `ok` reply.
    pub warning: Option<String>,
    /// `sdp`: the rewritten body (offer/answer).
    pub sdp: Option<Bytes>,
    /// `created`: UNIX seconds (query, delete).
    pub created: Option<i64>,
    /// `created_us`: the microseconds part of `created`.
    pub created_us: Option<i64>,
    /// `last signal`: UNIX seconds of the last signalling event.
    pub last_signal: Option<i64>,
    /// `totals`: packet counters summed over the call.
    pub totals: Option<Totals>,
    /// `tags`: the participants, keyed as rtpengine keys them (by tag, or `<untagged N>`).
    pub tags: Option<Vec<(String, TagInfo)>>,
    /// `calls` (list): Call-IDs.
    pub calls: Option<Vec<String>>,
    /// `statistics` (statistics): the nested counters, untyped.
    pub statistics: Option<Value>,
    /// Keys not typed here (`SSRC`, recording keys, ...), as received.
    pub other: Dict,
}

/// `totals`: `{RTP: {...}, RTCP: {...}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// RTP counters.
    pub rtp: Counters,
    /// RTCP counters.
    pub rtcp: Counters,
}

/// `{packets, bytes, errors}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `packets`.
    pub packets: u64,
    /// `bytes`.
    pub bytes: u64,
    /// `errors`.
    pub errors: u64,
}

/// One participant in `tags`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagInfo {
    /// `tag`.
    pub tag: String,
    /// `label`.
    pub label: Option<String>,
    /// `created`: UNIX seconds.
    pub created: Option<i64>,
    /// `via-branch`.
    pub via_branch: Option<String>,
    /// Everything else (`medias`, `subscriptions`, ...), as received.
    pub other: Dict,
}

impl Reply {
    /// A reply with this outcome and nothing else.
    pub fn new(outcome: Outcome) -> Reply {
        Reply {
            outcome,
            warning: None,
            sdp: None,
            created: None,
            created_us: None,
            last_signal: None,
            totals: None,
            tags: None,
            calls: None,
            statistics: None,
            other: Vec::new(),
        }
    }

    /// `result: ok`.
    pub fn ok() -> Reply {
        Reply::new(Outcome::Ok)
    }

    /// `result: pong`.
    pub fn pong() -> Reply {
        Reply::new(Outcome::Pong)
    }

    /// `result: error` with rtpengine's text for `reason`.
    pub fn error(reason: ErrorReason) -> Reply {
        Reply::new(Outcome::Error(reason.as_str().to_owned()))
    }

    /// The reply for a capacity limit, as rtpengine gives it: `result: load limit` with the
    /// reason as `message` when the client sent `supports: ["load limit"]`, otherwise
    /// `result: error` with "Parallel session limit reached" (the legacy text, whatever the
    /// limit). `Ran out of ports` is not a load limit and is always an error.
    pub fn limit(reason: ErrorReason, supports_load_limit: bool) -> Reply {
        if !reason.is_load_limit() {
            Reply::error(reason)
        } else if supports_load_limit {
            Reply::new(Outcome::LoadLimit(Some(reason.as_str().to_owned())))
        } else {
            Reply::error(ErrorReason::ParallelSessionLimit)
        }
    }

    /// This reply with `sdp` set.
    pub fn with_sdp(mut self, sdp: impl Into<Bytes>) -> Reply {
        self.sdp = Some(sdp.into());
        self
    }

    /// This reply with `warning` set.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Reply {
        self.warning = Some(warning.into());
        self
    }

    /// The known reason of an `error` reply or the message of a `load limit` reply.
    pub fn error_reason(&self) -> Option<ErrorReason> {
        match &self.outcome {
            Outcome::Error(text) => ErrorReason::from_wire(text),
            Outcome::LoadLimit(Some(text)) => ErrorReason::from_wire(text),
            Outcome::LoadLimit(None) => Some(ErrorReason::LoadLimit),
            Outcome::Ok | Outcome::Pong => None,
        }
    }

    /// True when a proxy should try the next relay node: `load limit`, or an error whose
    /// reason is a capacity failure (Kamailio's and OpenSIPS' failover lists).
    pub fn is_capacity_failure(&self) -> bool {
        matches!(self.outcome, Outcome::LoadLimit(_))
            || self.error_reason().is_some_and(ErrorReason::is_capacity)
    }

    /// Interprets a decoded reply dictionary. Unknown keys go to [`Reply::other`]; a typed key
    /// of the wrong type is an error naming it.
    pub fn from_dict(dict: &Dict) -> Result<Reply, ReplyError> {
        let mut reply = Reply::ok();
        let mut result = None;
        let mut error_reason = None;
        let mut message = None;
        for (key, value) in dict {
            match key.as_str() {
                "result" => result = Some(text(key, value)?),
                "error-reason" => error_reason = Some(text(key, value)?),
                "message" => message = Some(text(key, value)?),
                "warning" => reply.warning = Some(text(key, value)?),
                "sdp" => match value {
                    Value::Bytes(b) => reply.sdp = Some(b.clone()),
                    other => return Err(wrong_type(key, other, "string")),
                },
                "created" => reply.created = Some(int(key, value)?),
                "created_us" => reply.created_us = Some(int(key, value)?),
                "last signal" => reply.last_signal = Some(int(key, value)?),
                "totals" => reply.totals = Some(totals(value)?),
                "tags" => reply.tags = Some(tags(value)?),
                "calls" => match value {
                    Value::List(items) => {
                        reply.calls = Some(
                            items
                                .iter()
                                .map(|i| text("calls", i))
                                .collect::<Result<_, _>>()?,
                        )
                    }
                    other => return Err(wrong_type(key, other, "list")),
                },
                "statistics" => reply.statistics = Some(value.clone()),
                _ => reply.other.push((key.clone(), value.clone())),
            }
        }
        let result = result.ok_or_else(|| ReplyError::Invalid("no \"result\" key".into()))?;
        reply.outcome = match result.as_str() {
            "ok" => Outcome::Ok,
            "pong" => Outcome::Pong,
            "error" => Outcome::Error(error_reason.unwrap_or_default()),
            "load limit" => Outcome::LoadLimit(message),
            other => return Err(ReplyError::Invalid(format!("unknown result \"{other}\""))),
        };
        Ok(reply)
    }

    /// The wire dictionary. An `error` reply carries only `result` and `error-reason`.
    pub fn to_dict(&self) -> Dict {
        let mut d: Dict = Vec::new();
        match &self.outcome {
            Outcome::Ok => d.push(("result".into(), Value::text("ok"))),
            Outcome::Pong => d.push(("result".into(), Value::text("pong"))),
            Outcome::Error(reason) => {
                d.push(("result".into(), Value::text("error")));
                d.push(("error-reason".into(), Value::text(reason.as_str())));
                return d;
            }
            Outcome::LoadLimit(message) => {
                d.push(("result".into(), Value::text("load limit")));
                if let Some(m) = message {
                    d.push(("message".into(), Value::text(m.as_str())));
                }
            }
        }
        if let Some(w) = &self.warning {
            d.push(("warning".into(), Value::text(w.as_str())));
        }
        if let Some(sdp) = &self.sdp {
            d.push(("sdp".into(), Value::Bytes(sdp.clone())));
        }
        if let Some(c) = self.created {
            d.push(("created".into(), Value::Int(c)));
        }
        if let Some(c) = self.created_us {
            d.push(("created_us".into(), Value::Int(c)));
        }
        if let Some(l) = self.last_signal {
            d.push(("last signal".into(), Value::Int(l)));
        }
        if let Some(t) = &self.totals {
            d.push((
                "totals".into(),
                Value::Dict(vec![
                    ("RTP".into(), counters_value(&t.rtp)),
                    ("RTCP".into(), counters_value(&t.rtcp)),
                ]),
            ));
        }
        if let Some(tags) = &self.tags {
            let entries = tags
                .iter()
                .map(|(key, info)| (key.clone(), tag_value(info)))
                .collect();
            d.push(("tags".into(), Value::Dict(entries)));
        }
        if let Some(calls) = &self.calls {
            d.push((
                "calls".into(),
                Value::List(calls.iter().map(|c| Value::text(c.as_str())).collect()),
            ));
        }
        if let Some(s) = &self.statistics {
            d.push(("statistics".into(), s.clone()));
        }
        d.extend(self.other.iter().cloned());
        d
    }
}

fn wrong_type(key: &str, value: &Value, expected: &str) -> ReplyError {
    ReplyError::Invalid(format!(
        "key \"{key}\" is a {}, expected {expected}",
        value.kind()
    ))
}

fn text(key: &str, value: &Value) -> Result<String, ReplyError> {
    match value {
        Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(wrong_type(key, other, "string")),
    }
}

fn int(key: &str, value: &Value) -> Result<i64, ReplyError> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(wrong_type(key, other, "integer")),
    }
}

fn count(key: &str, value: &Value) -> Result<u64, ReplyError> {
    let i = int(key, value)?;
    u64::try_from(i).map_err(|_| ReplyError::Invalid(format!("key \"{key}\" is negative: {i}")))
}

fn totals(value: &Value) -> Result<Totals, ReplyError> {
    let dict = value
        .as_dict()
        .ok_or_else(|| wrong_type("totals", value, "dictionary"))?;
    let mut t = Totals::default();
    for (key, v) in dict {
        match key.as_str() {
            "RTP" => t.rtp = counters(v)?,
            "RTCP" => t.rtcp = counters(v)?,
            _ => {}
        }
    }
    Ok(t)
}

fn counters(value: &Value) -> Result<Counters, ReplyError> {
    let dict = value
        .as_dict()
        .ok_or_else(|| wrong_type("totals", value, "dictionary"))?;
    let mut c = Counters::default();
    for (key, v) in dict {
        match key.as_str() {
            "packets" => c.packets = count(key, v)?,
            "bytes" => c.bytes = count(key, v)?,
            "errors" => c.errors = count(key, v)?,
            _ => {}
        }
    }
    Ok(c)
}

fn counters_value(c: &Counters) -> Value {
    Value::Dict(vec![
        ("packets".into(), int_value(c.packets)),
        ("bytes".into(), int_value(c.bytes)),
        ("errors".into(), int_value(c.errors)),
    ])
}

fn tags(value: &Value) -> Result<Vec<(String, TagInfo)>, ReplyError> {
    let dict = value
        .as_dict()
        .ok_or_else(|| wrong_type("tags", value, "dictionary"))?;
    let mut out = Vec::with_capacity(dict.len());
    for (key, v) in dict {
        let entries = v
            .as_dict()
            .ok_or_else(|| wrong_type(key, v, "dictionary"))?;
        let mut info = TagInfo::default();
        for (k, item) in entries {
            match k.as_str() {
                "tag" => info.tag = text(k, item)?,
                "label" => info.label = Some(text(k, item)?),
                "created" => info.created = Some(int(k, item)?),
                "via-branch" => info.via_branch = Some(text(k, item)?),
                _ => info.other.push((k.clone(), item.clone())),
            }
        }
        out.push((key.clone(), info));
    }
    Ok(out)
}

fn tag_value(info: &TagInfo) -> Value {
    let mut d: Dict = vec![("tag".into(), Value::text(info.tag.as_str()))];
    if let Some(l) = &info.label {
        d.push(("label".into(), Value::text(l.as_str())));
    }
    if let Some(c) = info.created {
        d.push(("created".into(), Value::Int(c)));
    }
    if let Some(b) = &info.via_branch {
        d.push(("via-branch".into(), Value::text(b.as_str())));
    }
    d.extend(info.other.iter().cloned());
    Value::Dict(d)
}
