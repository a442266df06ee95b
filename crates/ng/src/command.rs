//! THE command table: every ng command rtpengine knows, with its wire string.
//!
//! Dispatch, metric labels and documentation derive from [`Command::ALL`] and
//! [`Command::as_str`] (rtpengine's `ng_command_strings`, include/control_ng.h).
//! Wire strings are case-sensitive, as in rtpengine (`"block DTMF"`, not `"block dtmf"`).

/// An ng command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Command {
    /// `ping`: liveness; answered with `result: pong`.
    Ping,
    /// `offer`: create or update a call from the offerer's SDP.
    Offer,
    /// `answer`: complete the offer/answer exchange with the answerer's SDP.
    Answer,
    /// `delete`: end a call, a participant or a fork branch.
    Delete,
    /// `query`: timestamps, participants and packet counters of a call.
    Query,
    /// `list`: the Call-IDs of the calls in progress.
    List,
    /// `start recording`.
    StartRecording,
    /// `stop recording`.
    StopRecording,
    /// `pause recording`.
    PauseRecording,
    /// `start forwarding`.
    StartForwarding,
    /// `stop forwarding`.
    StopForwarding,
    /// `block DTMF`.
    BlockDtmf,
    /// `unblock DTMF`.
    UnblockDtmf,
    /// `block media`.
    BlockMedia,
    /// `unblock media`.
    UnblockMedia,
    /// `silence media`.
    SilenceMedia,
    /// `unsilence media`.
    UnsilenceMedia,
    /// `play media`.
    PlayMedia,
    /// `stop media`.
    StopMedia,
    /// `play DTMF`.
    PlayDtmf,
    /// `statistics`: global counters.
    Statistics,
    /// `publish`.
    Publish,
    /// `subscribe request`.
    SubscribeRequest,
    /// `subscribe answer`.
    SubscribeAnswer,
    /// `unsubscribe`.
    Unsubscribe,
    /// `connect`.
    Connect,
    /// `cli` (also accepted as `CLI`).
    Cli,
}

impl Command {
    /// Every command, in rtpengine's order.
    pub const ALL: [Command; 27] = [
        Command::Ping,
        Command::Offer,
        Command::Answer,
        Command::Delete,
        Command::Query,
        Command::List,
        Command::StartRecording,
        Command::StopRecording,
        Command::PauseRecording,
        Command::StartForwarding,
        Command::StopForwarding,
        Command::BlockDtmf,
        Command::UnblockDtmf,
        Command::BlockMedia,
        Command::UnblockMedia,
        Command::SilenceMedia,
        Command::UnsilenceMedia,
        Command::PlayMedia,
        Command::StopMedia,
        Command::PlayDtmf,
        Command::Statistics,
        Command::Publish,
        Command::SubscribeRequest,
        Command::SubscribeAnswer,
        Command::Unsubscribe,
        Command::Connect,
        Command::Cli,
    ];

    /// The wire string (`"start recording"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::StartRecording => "start recording",
            Command::StopRecording => "stop recording",
            Command::PauseRecording => "pause recording",
            Command::StartForwarding => "start forwarding",
            Command::StopForwarding => "stop forwarding",
            Command::BlockDtmf => "block DTMF",
            Command::UnblockDtmf => "unblock DTMF",
            Command::BlockMedia => "block media",
            Command::UnblockMedia => "unblock media",
            Command::SilenceMedia => "silence media",
            Command::UnsilenceMedia => "unsilence media",
            Command::PlayMedia => "play media",
            Command::StopMedia => "stop media",
            Command::PlayDtmf => "play DTMF",
            Command::Statistics => "statistics",
            Command::Publish => "publish",
            Command::SubscribeRequest => "subscribe request",
            Command::SubscribeAnswer => "subscribe answer",
            Command::Unsubscribe => "unsubscribe",
            Command::Connect => "connect",
            Command::Cli => "cli",
        }
    }

    /// The command whose wire string is exactly `wire` (plus rtpengine's alias `CLI`).
    pub fn from_wire(wire: &[u8]) -> Option<Command> {
        if wire == b"CLI" {
            return Some(Command::Cli);
        }
        Command::ALL
            .into_iter()
            .find(|c| c.as_str().as_bytes() == wire)
    }

    /// True for the commands this crate types fully (the rest decode as
    /// [`crate::RequestKind::Other`]).
    pub fn is_typed(self) -> bool {
        matches!(
            self,
            Command::Ping
                | Command::Offer
                | Command::Answer
                | Command::Delete
                | Command::Query
                | Command::List
                | Command::Statistics
        )
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_round_trips_through_its_wire_string() {
        for c in Command::ALL {
            assert_eq!(Command::from_wire(c.as_str().as_bytes()), Some(c));
        }
        assert_eq!(Command::from_wire(b"CLI"), Some(Command::Cli));
        assert_eq!(Command::from_wire(b"block DTMF"), Some(Command::BlockDtmf));
        assert_eq!(Command::from_wire(b"block dtmf"), None);
        assert_eq!(Command::from_wire(b"Ping"), None);
    }
}
