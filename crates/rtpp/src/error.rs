//! Why a command or a reply cannot be read, and RTPProxy's numeric error codes.

use std::fmt;

/// An RTPProxy error code, sent as `E<code>` (RTPProxy's `rtpp_command_ecodes.h` numbering,
/// which clients log but do not interpret: any reply starting with `E` is a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// `E0`: unknown command.
    pub const UNKNOWN_COMMAND: ErrorCode = ErrorCode(0);
    /// `E1`: wrong number of arguments (or nothing after the cookie).
    pub const ARGUMENT_COUNT: ErrorCode = ErrorCode(1);
    /// `E2`: modifiers given to a command that takes none.
    pub const MODIFIERS_NOT_ALLOWED: ErrorCode = ErrorCode(2);
    /// `E3`: a `&&` sub-command, which this implementation does not support.
    pub const SUBCOMMAND: ErrorCode = ErrorCode(3);
    /// `E11`: `E` (external interface) that cannot be given: RTPProxy without a second
    /// interface, or a third bridging letter.
    pub const NO_EXTERNAL: ErrorCode = ErrorCode(11);
    /// `E12`: `I` (internal interface) that cannot be given: RTPProxy without a second
    /// interface, or a third bridging letter.
    pub const NO_INTERNAL: ErrorCode = ErrorCode(12);
    /// `E13`: a malformed `Z` (repacketisation) modifier.
    pub const BAD_PTIME: ErrorCode = ErrorCode(13);
    /// `E14`: a malformed `C` (codecs) modifier.
    pub const BAD_CODECS: ErrorCode = ErrorCode(14);
    /// `E15`: a malformed `L` (local address) modifier.
    pub const BAD_LOCAL_ADDRESS: ErrorCode = ErrorCode(15);
    /// `E16`: a malformed `R` (remote address) modifier.
    pub const BAD_REMOTE_ADDRESS: ErrorCode = ErrorCode(16);
    /// `E35`: a modifier the relay does not know or does not implement.
    pub const UNSUPPORTED_MODIFIER: ErrorCode = ErrorCode(35);
    /// `E37`: the media address or port cannot be read.
    pub const BAD_ADDRESS: ErrorCode = ErrorCode(37);
    /// `E50`: no such session (`D`, `Q`).
    pub const SESSION_UNKNOWN: ErrorCode = ErrorCode(50);
    /// `E62`: a `Q` counter name that is not known.
    pub const QUERY_FAILED: ErrorCode = ErrorCode(62);
    /// `E71`: the session could not be created (no ports, session limit).
    pub const CREATE_FAILED: ErrorCode = ErrorCode(71);
    /// `E98`: overloaded.
    pub const OVERLOAD: ErrorCode = ErrorCode(98);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E{}", self.0)
    }
}

/// A command datagram that cannot be read; [`ParseError::code`] is the error to answer with
/// (when there is a cookie to answer to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// The datagram's cookie, if it had one (without it no reply can be matched: drop).
    pub cookie: Option<String>,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// The RTPProxy error code for this failure.
    pub fn code(&self) -> ErrorCode {
        self.kind.code()
    }
}

/// What is wrong with a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Empty, or only a cookie.
    #[error("no command after the cookie")]
    NoCommand,
    /// Not text.
    #[error("the command is not UTF-8 text")]
    NotText,
    /// The first letter names no command.
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// Too few or too many arguments.
    #[error("{command}: {given} arguments, expected {expected}")]
    ArgumentCount {
        /// The command's letter.
        command: char,
        /// How many came (the command word included, as RTPProxy counts).
        given: usize,
        /// What the command takes, e.g. `5 to 8`.
        expected: &'static str,
    },
    /// Modifiers on a command that takes none.
    #[error("{0}: the command takes no modifiers")]
    ModifiersNotAllowed(char),
    /// A `&&` sub-command.
    #[error("`&&` sub-commands are not supported")]
    Subcommand,
    /// A modifier's value is malformed.
    #[error("malformed modifier `{letter}`: {reason}")]
    BadModifier {
        /// The modifier's letter.
        letter: char,
        /// Why.
        reason: &'static str,
    },
    /// The media address is not an IP address.
    #[error("bad media address `{0}`")]
    BadAddress(String),
    /// The media port is not a number from 0 to 65535.
    #[error("bad media port `{0}`")]
    BadPort(String),
    /// A tag is empty or its medianum is not a number.
    #[error("bad tag `{0}`")]
    BadTag(String),
}

impl ParseErrorKind {
    /// The RTPProxy error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ParseErrorKind::NoCommand | ParseErrorKind::NotText => ErrorCode::ARGUMENT_COUNT,
            ParseErrorKind::UnknownCommand(_) => ErrorCode::UNKNOWN_COMMAND,
            ParseErrorKind::ArgumentCount { .. } => ErrorCode::ARGUMENT_COUNT,
            ParseErrorKind::ModifiersNotAllowed(_) => ErrorCode::MODIFIERS_NOT_ALLOWED,
            ParseErrorKind::Subcommand => ErrorCode::SUBCOMMAND,
            ParseErrorKind::BadModifier { letter, .. } => match letter.to_ascii_uppercase() {
                'Z' => ErrorCode::BAD_PTIME,
                'C' => ErrorCode::BAD_CODECS,
                'L' => ErrorCode::BAD_LOCAL_ADDRESS,
                'R' => ErrorCode::BAD_REMOTE_ADDRESS,
                _ => ErrorCode::UNSUPPORTED_MODIFIER,
            },
            ParseErrorKind::BadAddress(_)
            | ParseErrorKind::BadPort(_)
            | ParseErrorKind::BadTag(_) => ErrorCode::BAD_ADDRESS,
        }
    }
}

/// A reply datagram that cannot be read (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyParseError {
    /// Not text.
    #[error("the reply is not UTF-8 text")]
    NotText,
    /// No cookie, or nothing after it.
    #[error("the reply has no cookie or no result")]
    Empty,
    /// An `E` that is not followed by a number.
    #[error("malformed error reply `{0}`")]
    BadError(String),
    /// A port that is not a number from 0 to 65535.
    #[error("malformed port `{0}`")]
    BadPort(String),
    /// An address that is not an IP address.
    #[error("malformed address `{0}`")]
    BadAddress(String),
}

/// An `I` reply that gives no load (client side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoParseError {
    /// No `active sessions:` line.
    #[error("the statistics have no `active sessions` line")]
    NoActiveSessions,
    /// A statistic whose value is not a whole number.
    #[error("statistic `{name}` is not a number: `{value}`")]
    BadNumber {
        /// The statistic.
        name: String,
        /// What came instead.
        value: String,
    },
}
