//! Errors: one for a whole SDP that cannot be read, one for a single line or value.
//!
//! Their `Display` text names what is wrong, so it can be logged or put into a reason phrase.

/// The input is not SDP at all: [`Session::parse`](crate::Session::parse) refuses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Zero bytes of input.
    #[error("empty SDP: no lines")]
    Empty,
    /// A line that is neither blank nor `<letter>=...`.
    #[error("line {line}: expected '<letter>=' but found {found:?}")]
    NotATypedLine {
        /// 1-based line number.
        line: usize,
        /// The start of the offending line (lossy, shortened).
        found: String,
    },
    /// The session section has no `v=` line.
    #[error("no v= line")]
    NoVersionLine,
    /// An `m=` line is not UTF-8 text.
    #[error("line {line}: m= line is not text")]
    MediaNotText {
        /// 1-based line number.
        line: usize,
    },
    /// An `m=` line with only a media type.
    #[error("line {line}: m= line has no port")]
    MediaWithoutPort {
        /// 1-based line number.
        line: usize,
    },
    /// An `m=` line whose port (or port count) is not a number from 0 to 65535.
    #[error("line {line}: m= line port {found:?} is not a number from 0 to 65535")]
    MediaBadPort {
        /// 1-based line number.
        line: usize,
        /// The port field as found.
        found: String,
    },
    /// An `m=` line with a port but no transport protocol.
    #[error("line {line}: m= line has no transport protocol")]
    MediaWithoutProto {
        /// 1-based line number.
        line: usize,
    },
}

/// One line or value is missing or malformed, or an edit was given a value that would break the
/// SDP. The rest of the session stays usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A required line is absent, e.g. `"o="`.
    #[error("no {0} line")]
    Missing(&'static str),
    /// A line or value does not have the expected shape.
    #[error("{field}: {problem}: {found:?}")]
    Malformed {
        /// Which line or value, e.g. `"o= session version"`.
        field: &'static str,
        /// What is wrong, e.g. `"is not a number"`.
        problem: &'static str,
        /// The offending text (lossy, shortened).
        found: String,
    },
}

impl FieldError {
    pub(crate) fn malformed(field: &'static str, problem: &'static str, found: &[u8]) -> Self {
        FieldError::Malformed {
            field,
            problem,
            found: shown(found),
        }
    }
}

/// Lossy, shortened rendering of untrusted bytes for an error message.
pub(crate) fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 60;
    let cut = bytes.get(..MAX).unwrap_or(bytes);
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < bytes.len() {
        text.push('…');
    }
    text
}
