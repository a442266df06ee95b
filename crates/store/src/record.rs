//! [`CallRecord`]: everything a signalling node holds about one call, as plain data another
//! process can read (DESIGN.md "State store and clustering").
//!
//! Nothing in it is local to one process: times are unix milliseconds, relay nodes are named,
//! SDPs are text. The encoding is JSON with a version field `v`; [`CallRecord::decode`] reads
//! every version this build knows (today only 1) and refuses a newer one with
//! [`RecordError::UnknownVersion`], so a node never acts on a record it half understands. Fields
//! added later without a new version are ignored by older readers; an incompatible change
//! bumps `v`, and the reader of the new version keeps reading `tests/fixtures/record_v1.json`.
//! The media anchor's RTPProxy letters (`caller_rtpproxy`, `callee_rtpproxy`, `rtpproxy_unfit`)
//! are such later fields of v1: records written without them read as calls without letters,
//! and a build that predates them reads the rest of the record.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The version this build writes.
pub const RECORD_VERSION: u32 = 1;

/// Why a record could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record was written by a newer version of Anchorage.
    #[error("call record version {found} is newer than this build reads (up to {RECORD_VERSION})")]
    UnknownVersion {
        /// The `v` found.
        found: u64,
    },
    /// The bytes are not a call record of a known version.
    #[error("malformed call record: {0}")]
    Malformed(#[from] serde_json::Error),
    /// An SDP body is not UTF-8 text, so it cannot be kept in a record.
    #[error("the {what} is not UTF-8 text")]
    NotUtf8 {
        /// Which SDP (e.g. "caller SDP received").
        what: &'static str,
    },
}

/// One call: its dialogs (several while forking), its media anchor, the open INVITE's
/// destinations, a move in progress and the CSeq numbers reserved for the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The Call-ID.
    pub call_id: String,
    /// The `[node] id` of the node that holds the call.
    pub owner: String,
    /// When the owner last changed this record (unix ms).
    pub updated_unix_ms: u64,
    /// The call's dialogs: one once confirmed, several early ones while forking.
    pub dialogs: Vec<DialogRecord>,
    /// Where the call's media is anchored, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaRecord>,
    /// Where the initial INVITE went while it has no final answer, so a CANCEL or the ACK of a
    /// failure can follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_invite: Option<Vec<InviteDestination>>,
    /// The initial INVITE as it arrived, while it is open: a node that did not forward it
    /// makes the dialog from it when the callee's response reaches that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_invite_request: Option<OpenInviteRecord>,
    /// A media move in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<MoveRecord>,
    /// The highest CSeq numbers the owner may use for its own requests without reserving more.
    #[serde(default)]
    pub cseq_reserved: CseqReserved,
}

/// One dialog of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogRecord {
    /// The caller's (From) tag.
    pub caller_tag: String,
    /// The callee's (To) tag.
    pub callee_tag: String,
    /// Early or confirmed.
    pub state: DialogState,
    /// The caller's From header value as the INVITE carried it.
    pub caller_identity: String,
    /// The callee's To header value as its final response carried it.
    pub callee_identity: String,
    /// The Record-Route set, callee side first.
    pub record_route: Vec<String>,
    /// The calling party.
    pub caller: LegRecord,
    /// The called party.
    pub callee: LegRecord,
    /// CSeq renumbering after the proxy's own requests.
    pub renumber: RenumberRecord,
    /// When the dialog was created (unix ms): its maximum age counts from here.
    pub created_unix_ms: u64,
}

/// A dialog's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialogState {
    /// A provisional response with a to-tag created it.
    Early,
    /// A 2xx confirmed it.
    Confirmed,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// One party of a dialog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegRecord {
    /// Its tag.
    pub tag: String,
    /// Its remote target (Contact URI), if it sent one.
    pub remote_target: Option<String>,
    /// Where its messages come from (`ip:port`; its real address behind NAT).
    pub source: Option<SocketAddr>,
    /// The transport it uses.
    pub transport: Option<Transport>,
    /// Our local socket it reached us on (`ip:port`).
    pub local: Option<SocketAddr>,
    /// The last CSeq number seen from it.
    pub last_cseq: Option<u32>,
}

/// CSeq renumbering state of a dialog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenumberRecord {
    /// Added to the CSeq of requests from the caller to the callee.
    pub to_callee: u32,
    /// Added to the CSeq of requests from the callee to the caller.
    pub to_caller: u32,
    /// The highest CSeq the proxy itself sent to the callee.
    pub own_to_callee: u32,
    /// The highest CSeq the proxy itself sent to the caller.
    pub own_to_caller: u32,
    /// The caller's latest in-dialog INVITE: its CSeq and the offset it went out with (its ACK
    /// takes the same). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_from_caller: Option<[u32; 2]>,
    /// The callee's latest in-dialog INVITE and its offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_from_callee: Option<[u32; 2]>,
}

/// The call's media anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The relay node, by its configured name.
    pub node: String,
    /// The relay set.
    pub set: String,
    /// Flags for the SDP sent to the caller.
    pub caller_flags: String,
    /// Flags for the SDP sent to the callee.
    pub callee_flags: String,
    /// What an RTPProxy node is told for the SDP sent to the caller. Absent when empty, and in
    /// records written before it existed (read as empty).
    #[serde(default, skip_serializing_if = "RtppLegRecord::is_empty")]
    pub caller_rtpproxy: RtppLegRecord,
    /// What an RTPProxy node is told for the SDP sent to the callee (absent when empty).
    #[serde(default, skip_serializing_if = "RtppLegRecord::is_empty")]
    pub callee_rtpproxy: RtppLegRecord,
    /// Why RTPProxy nodes cannot carry the call, if so (absent: they can).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtpproxy_unfit: Option<String>,
    /// The tag of the leg whose offer anchored the call.
    pub caller_tag: String,
    /// The caller's media.
    pub caller: LegMediaRecord,
    /// The callee's media.
    pub callee: LegMediaRecord,
    /// A late offer waits for its answer in the ACK.
    pub answer_in_ack: bool,
    /// An offer in a reliable provisional response waits for its answer in the PRACK.
    pub answer_in_prack: bool,
}

/// One leg's options for an RTPProxy node: OpenSIPS flag letters, and the address written into
/// that leg's SDP instead of the node's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtppLegRecord {
    /// The letters (e.g. `co`, `ei`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub letters: String,
    /// The address, if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

impl RtppLegRecord {
    /// No letters and no address.
    pub fn is_empty(&self) -> bool {
        self.letters.is_empty() && self.ip.is_none()
    }
}

/// One leg's SDPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegMediaRecord {
    /// The last SDP received from the leg.
    pub received: Option<String>,
    /// The last SDP sent to the leg.
    pub sent: Option<String>,
    /// The `o=` line of `sent`.
    pub origin_sent: Option<OriginRecord>,
}

/// The fields of an `o=` line the proxy continues on the next SDP it sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRecord {
    /// Username.
    pub username: String,
    /// Session id.
    pub session_id: String,
    /// Session version.
    pub version: u64,
}

/// One destination of the open initial INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteDestination {
    /// The Via branch the INVITE was sent with.
    pub branch: String,
    /// Where it was sent.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
}

/// The open initial INVITE as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenInviteRecord {
    /// The request, as text.
    pub request: String,
    /// Where it came from.
    pub source: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// Our address it arrived at.
    pub local: SocketAddr,
}

/// A media move in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRecord {
    /// The job it belongs to.
    pub job: u64,
    /// What started it (e.g. "node-down", "api").
    pub trigger: String,
    /// The relay node the media leaves.
    pub old_node: String,
    /// The relay node the media goes to, once chosen.
    pub new_node: Option<String>,
    /// What the move waits for.
    pub stage: MoveStage,
    /// When it started (unix ms).
    pub started_unix_ms: u64,
    /// The new relay's SDP for the caller's re-INVITE.
    pub sdp_for_caller: Option<String>,
    /// The new relay's SDP for the callee's re-INVITE.
    pub sdp_for_callee: Option<String>,
    /// The caller's re-INVITE is known to have gone out (absent in older records: not known).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent_to_caller: bool,
    /// The callee's re-INVITE is known to have gone out (absent in older records: not known).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sent_to_callee: bool,
}

/// The stage of a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveStage {
    /// Waiting for the call to have no offer open.
    Idle,
    /// Waiting for the new relay's answer to the offer.
    Offer,
    /// Waiting for the new relay's answer to the answer.
    Answer,
    /// Waiting for both legs' re-INVITEs.
    Legs,
}

/// CSeq numbers reserved for the owner's own requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CseqReserved {
    /// Highest CSeq the owner may send to the callee.
    pub to_callee: u32,
    /// Highest CSeq the owner may send to the caller.
    pub to_caller: u32,
}

impl CseqReserved {
    /// The higher of each number.
    pub fn max(self, other: CseqReserved) -> CseqReserved {
        CseqReserved {
            to_callee: self.to_callee.max(other.to_callee),
            to_caller: self.to_caller.max(other.to_caller),
        }
    }
}

impl CallRecord {
    /// A record of the current version with no dialog, media, open INVITE or move.
    pub fn new(call_id: impl Into<String>, owner: impl Into<String>, updated_unix_ms: u64) -> Self {
        Self {
            v: RECORD_VERSION,
            call_id: call_id.into(),
            owner: owner.into(),
            updated_unix_ms,
            dialogs: Vec::new(),
            media: None,
            open_invite: None,
            open_invite_request: None,
            moving: None,
            cseq_reserved: CseqReserved::default(),
        }
    }

    /// The record as JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings, numbers and options cannot fail to serialise to a Vec.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a record of any version this build knows.
    pub fn decode(bytes: &[u8]) -> Result<CallRecord, RecordError> {
        match serde_json::from_slice::<CallRecord>(bytes) {
            Ok(record) if record.v == RECORD_VERSION => Ok(record),
            Ok(record) => Err(RecordError::UnknownVersion {
                found: u64::from(record.v),
            }),
            Err(error) => Err(match peek_version(bytes) {
                Some(found) if found != u64::from(RECORD_VERSION) => {
                    RecordError::UnknownVersion { found }
                }
                _ => RecordError::Malformed(error),
            }),
        }
    }
}

/// The `v` of a record that did not decode as the current version.
fn peek_version(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Version {
        v: u64,
    }
    serde_json::from_slice::<Version>(bytes).ok().map(|v| v.v)
}

/// An SDP body as record text; `what` names it in the error.
pub fn sdp_text(body: &[u8], what: &'static str) -> Result<String, RecordError> {
    String::from_utf8(body.to_vec()).map_err(|_| RecordError::NotUtf8 { what })
}
