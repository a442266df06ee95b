//! Errors, with rtpengine's exact `error-reason` strings.
//!
//! The proxies' failover logic compares these strings byte for byte (Kamailio fails over on
//! "Parallel session limit reached" and "Ran out of ports"; OpenSIPS also on the CPU, load
//! and bandwidth limits), so the wire text is the [`Display`](std::fmt::Display) text and is
//! also available as plain constants in [`reason`].

use crate::codec::{Cookie, Encoding};

/// rtpengine's `error-reason` strings (daemon/control_ng.c, daemon/call_interfaces.c).
pub mod reason {
    /// The document after the cookie is empty.
    pub const NO_PAYLOAD: &str = "Invalid data (no payload)";
    /// The document starts with neither `d` nor `{`.
    pub const INVALID_FORMAT: &str = "Invalid NG data format";
    /// A bencode document that is not a valid dictionary (also JSON that is not an object).
    pub const BAD_BENCODE: &str = "Could not decode bencode dictionary";
    /// A document starting with `{` that is not valid JSON.
    pub const BAD_JSON: &str = "Failed to parse JSON document";
    /// No `command` key.
    pub const NO_COMMAND: &str = "Dictionary contains no key \"command\"";
    /// A `command` we do not know.
    pub const UNRECOGNIZED_COMMAND: &str = "Unrecognized command";
    /// `offer`/`answer` without `sdp`.
    pub const NO_SDP_BODY: &str = "No SDP body in message";
    /// A call command without `call-id`.
    pub const NO_CALL_ID: &str = "No call-id in message";
    /// `offer`/`answer` without `from-tag`.
    pub const NO_FROM_TAG: &str = "No from-tag in message";
    /// `answer` without `to-tag`.
    pub const NO_TO_TAG: &str = "No to-tag in message";
    /// The call does not exist (answer before offer, query after delete, ...).
    pub const UNKNOWN_CALL_ID: &str = "Unknown call-id";
    /// `delete` found nothing to delete (a warning unless the `fatal` flag is given).
    pub const CALL_NOT_FOUND: &str = "Call-ID not found or tags didn't match";
    /// The SDP body could not be parsed.
    pub const FAILED_TO_PARSE_SDP: &str = "Failed to parse SDP";
    /// The SDP parsed but lacks what is needed (no usable media).
    pub const INCOMPLETE_SDP: &str = "Incomplete SDP specification";
    /// The tags do not fit the call's participants.
    pub const INVALID_DIALOGUE_ASSOCIATION: &str = "Invalid dialogue association";
    /// The outgoing SDP could not be built.
    pub const ERROR_REWRITING_SDP: &str = "Error rewriting SDP";
    /// No free media ports (the call is destroyed).
    pub const RAN_OUT_OF_PORTS: &str = "Ran out of ports";
    /// Session limit (also the error text when the client did not say `supports: load limit`).
    pub const PARALLEL_SESSION_LIMIT: &str = "Parallel session limit reached";
    /// CPU limit (`load limit` message).
    pub const CPU_USAGE_LIMIT: &str = "CPU usage limit exceeded";
    /// Load-average limit (`load limit` message).
    pub const LOAD_LIMIT: &str = "Load limit exceeded";
    /// Bandwidth limit (`load limit` message).
    pub const BANDWIDTH_LIMIT: &str = "Bandwidth limit exceeded";
}

/// A failure the server reports in a reply's `error-reason` (or, for the load limits, in a
/// `load limit` reply's `message`). `Display` is the exact wire text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorReason {
    /// See [`reason::NO_PAYLOAD`].
    #[error("{}", reason::NO_PAYLOAD)]
    NoPayload,
    /// See [`reason::INVALID_FORMAT`].
    #[error("{}", reason::INVALID_FORMAT)]
    InvalidFormat,
    /// See [`reason::BAD_BENCODE`].
    #[error("{}", reason::BAD_BENCODE)]
    BadBencode,
    /// See [`reason::BAD_JSON`].
    #[error("{}", reason::BAD_JSON)]
    BadJson,
    /// See [`reason::NO_COMMAND`].
    #[error("{}", reason::NO_COMMAND)]
    NoCommand,
    /// See [`reason::UNRECOGNIZED_COMMAND`].
    #[error("{}", reason::UNRECOGNIZED_COMMAND)]
    UnrecognizedCommand,
    /// See [`reason::NO_SDP_BODY`].
    #[error("{}", reason::NO_SDP_BODY)]
    NoSdpBody,
    /// See [`reason::NO_CALL_ID`].
    #[error("{}", reason::NO_CALL_ID)]
    NoCallId,
    /// See [`reason::NO_FROM_TAG`].
    #[error("{}", reason::NO_FROM_TAG)]
    NoFromTag,
    /// See [`reason::NO_TO_TAG`].
    #[error("{}", reason::NO_TO_TAG)]
    NoToTag,
    /// See [`reason::UNKNOWN_CALL_ID`].
    #[error("{}", reason::UNKNOWN_CALL_ID)]
    UnknownCallId,
    /// See [`reason::CALL_NOT_FOUND`].
    #[error("{}", reason::CALL_NOT_FOUND)]
    CallNotFound,
    /// See [`reason::FAILED_TO_PARSE_SDP`].
    #[error("{}", reason::FAILED_TO_PARSE_SDP)]
    FailedToParseSdp,
    /// See [`reason::INCOMPLETE_SDP`].
    #[error("{}", reason::INCOMPLETE_SDP)]
    IncompleteSdp,
    /// See [`reason::INVALID_DIALOGUE_ASSOCIATION`].
    #[error("{}", reason::INVALID_DIALOGUE_ASSOCIATION)]
    InvalidDialogueAssociation,
    /// See [`reason::ERROR_REWRITING_SDP`].
    #[error("{}", reason::ERROR_REWRITING_SDP)]
    ErrorRewritingSdp,
    /// See [`reason::RAN_OUT_OF_PORTS`].
    #[error("{}", reason::RAN_OUT_OF_PORTS)]
    RanOutOfPorts,
    /// See [`reason::PARALLEL_SESSION_LIMIT`].
    #[error("{}", reason::PARALLEL_SESSION_LIMIT)]
    ParallelSessionLimit,
    /// See [`reason::CPU_USAGE_LIMIT`].
    #[error("{}", reason::CPU_USAGE_LIMIT)]
    CpuUsageLimit,
    /// See [`reason::LOAD_LIMIT`].
    #[error("{}", reason::LOAD_LIMIT)]
    LoadLimit,
    /// See [`reason::BANDWIDTH_LIMIT`].
    #[error("{}", reason::BANDWIDTH_LIMIT)]
    BandwidthLimit,
}

impl ErrorReason {
    /// Every reason, for tables and tests.
    pub const ALL: [ErrorReason; 21] = [
        ErrorReason::NoPayload,
        ErrorReason::InvalidFormat,
        ErrorReason::BadBencode,
        ErrorReason::BadJson,
        ErrorReason::NoCommand,
        ErrorReason::UnrecognizedCommand,
        ErrorReason::NoSdpBody,
        ErrorReason::NoCallId,
        ErrorReason::NoFromTag,
        ErrorReason::NoToTag,
        ErrorReason::UnknownCallId,
        ErrorReason::CallNotFound,
        ErrorReason::FailedToParseSdp,
        ErrorReason::IncompleteSdp,
        ErrorReason::InvalidDialogueAssociation,
        ErrorReason::ErrorRewritingSdp,
        ErrorReason::RanOutOfPorts,
        ErrorReason::ParallelSessionLimit,
        ErrorReason::CpuUsageLimit,
        ErrorReason::LoadLimit,
        ErrorReason::BandwidthLimit,
    ];

    /// The exact wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::NoPayload => reason::NO_PAYLOAD,
            ErrorReason::InvalidFormat => reason::INVALID_FORMAT,
            ErrorReason::BadBencode => reason::BAD_BENCODE,
            ErrorReason::BadJson => reason::BAD_JSON,
            ErrorReason::NoCommand => reason::NO_COMMAND,
            ErrorReason::UnrecognizedCommand => reason::UNRECOGNIZED_COMMAND,
            ErrorReason::NoSdpBody => reason::NO_SDP_BODY,
            ErrorReason::NoCallId => reason::NO_CALL_ID,
            ErrorReason::NoFromTag => reason::NO_FROM_TAG,
            ErrorReason::NoToTag => reason::NO_TO_TAG,
            ErrorReason::UnknownCallId => reason::UNKNOWN_CALL_ID,
            ErrorReason::CallNotFound => reason::CALL_NOT_FOUND,
            ErrorReason::FailedToParseSdp => reason::FAILED_TO_PARSE_SDP,
            ErrorReason::IncompleteSdp => reason::INCOMPLETE_SDP,
            ErrorReason::InvalidDialogueAssociation => reason::INVALID_DIALOGUE_ASSOCIATION,
            ErrorReason::ErrorRewritingSdp => reason::ERROR_REWRITING_SDP,
            ErrorReason::RanOutOfPorts => reason::RAN_OUT_OF_PORTS,
            ErrorReason::ParallelSessionLimit => reason::PARALLEL_SESSION_LIMIT,
            ErrorReason::CpuUsageLimit => reason::CPU_USAGE_LIMIT,
            ErrorReason::LoadLimit => reason::LOAD_LIMIT,
            ErrorReason::BandwidthLimit => reason::BANDWIDTH_LIMIT,
        }
    }

    /// The reason whose wire text is exactly `text`, if it is one we know.
    pub fn from_wire(text: &str) -> Option<ErrorReason> {
        ErrorReason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// True for the capacity failures after which a proxy tries the next relay node (the
    /// union of Kamailio's and OpenSIPS' failover lists).
    pub fn is_capacity(self) -> bool {
        matches!(
            self,
            ErrorReason::RanOutOfPorts
                | ErrorReason::ParallelSessionLimit
                | ErrorReason::CpuUsageLimit
                | ErrorReason::LoadLimit
                | ErrorReason::BandwidthLimit
        )
    }

    /// True for the limits rtpengine reports as `result: "load limit"` (with the text in
    /// `message`) to a client that sent `supports: ["load limit"]`.
    pub fn is_load_limit(self) -> bool {
        matches!(
            self,
            ErrorReason::ParallelSessionLimit
                | ErrorReason::CpuUsageLimit
                | ErrorReason::LoadLimit
                | ErrorReason::BandwidthLimit
        )
    }
}

/// Why a datagram could not be turned into a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No cookie: no space, or the datagram starts with a space. rtpengine drops such a
    /// datagram without a reply, and so must we.
    #[error("invalid ng datagram: no cookie before the first space")]
    NoCookie,
    /// A cookie was found but the document is unusable: answer `result: error` with
    /// `reason` (see [`DecodeError::error_reply`]).
    #[error("ng request with cookie {cookie}: {reason}{}", detail_suffix(.detail))]
    Request {
        /// The request's cookie, to echo in the error reply.
        cookie: Cookie,
        /// The encoding the reply must use (that of the request, bencode if unknown).
        encoding: Encoding,
        /// The wire reason for the reply.
        reason: ErrorReason,
        /// What exactly was wrong, for logs (not sent).
        detail: Option<String>,
    },
}

fn detail_suffix(detail: &Option<String>) -> String {
    match detail {
        Some(d) => format!(" ({d})"),
        None => String::new(),
    }
}

impl DecodeError {
    /// The complete reply datagram (`<cookie> <dict with result error>`) to send back, or
    /// `None` when the datagram must be dropped silently.
    pub fn error_reply(&self) -> Option<bytes::Bytes> {
        match self {
            DecodeError::NoCookie => None,
            DecodeError::Request {
                cookie,
                encoding,
                reason,
                ..
            } => {
                let reply = crate::reply::Reply::error(*reason);
                Some(crate::codec::encode_reply(cookie, &reply, *encoding))
            }
        }
    }
}

/// Why a reply datagram could not be read (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// No cookie before the first space.
    #[error("ng reply has no cookie before the first space")]
    NoCookie,
    /// The document is neither bencode nor JSON, or does not decode.
    #[error("ng reply document does not decode: {0}")]
    Document(String),
    /// The document decodes but is not a valid reply.
    #[error("ng reply is invalid: {0}")]
    Invalid(String),
}
