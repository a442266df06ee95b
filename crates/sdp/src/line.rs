//! Raw lines: the byte-exact unit the whole model is built on.
//!
//! A line is its text (without the terminator) plus the terminator it had, so that an unedited
//! SDP serializes to exactly the bytes it was parsed from, mixed endings and all.

use std::ops::Range;

use bytes::Bytes;

use crate::error::FieldError;

/// The line-ending style of an SDP; lines added by edits use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\r\n`, what RFC 4566 asks for.
    CrLf,
    /// A bare `\n`, which RFC 4566 §5 tells parsers to accept.
    Lf,
}

impl LineEnding {
    /// The terminator bytes.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            LineEnding::CrLf => b"\r\n",
            LineEnding::Lf => b"\n",
        }
    }
}

/// The terminator one line actually had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    CrLf,
    Lf,
    /// The last line of an input without a final newline.
    None,
}

impl From<LineEnding> for End {
    fn from(style: LineEnding) -> Self {
        match style {
            LineEnding::CrLf => End::CrLf,
            LineEnding::Lf => End::Lf,
        }
    }
}

/// Kind byte of a blank (empty or whitespace-only) line.
pub(crate) const BLANK: u8 = 0;

/// One line of an SDP.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// The text without its terminator, trailing whitespace included.
    pub(crate) text: Bytes,
    pub(crate) end: End,
    /// The type letter (`b'v'`, `b'a'`, ...) or [`BLANK`].
    pub(crate) kind: u8,
}

impl Line {
    /// A line we built ourselves; its text is `<letter>=...` without line breaks.
    pub(crate) fn built(text: Vec<u8>, end: End) -> Self {
        let kind = kind_of(&text).unwrap_or(BLANK);
        Line {
            text: Bytes::from(text),
            end,
            kind,
        }
    }

    /// The value after `<letter>=`, trailing whitespace removed.
    pub(crate) fn value(&self) -> &[u8] {
        self.text.get(2..).unwrap_or_default().trim_ascii_end()
    }
}

/// `Some(letter)` for `<letter>=...`, `Some(BLANK)` for a blank line, `None` otherwise.
pub(crate) fn kind_of(text: &[u8]) -> Option<u8> {
    match text {
        [letter, b'=', ..] if letter.is_ascii_alphabetic() => Some(*letter),
        _ if text.trim_ascii().is_empty() => Some(BLANK),
        _ => None,
    }
}

/// `bytes` as text, or an error naming `field`.
pub(crate) fn text<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, FieldError> {
    std::str::from_utf8(bytes).map_err(|_| FieldError::malformed(field, "is not UTF-8", bytes))
}

/// Checks a value an edit is about to write: no line breaks, and for a token no whitespace.
pub(crate) fn check_value(field: &'static str, value: &str, token: bool) -> Result<(), FieldError> {
    let bad = |b: u8| b == b'\r' || b == b'\n' || b == 0 || (token && b.is_ascii_whitespace());
    if value.bytes().any(bad) {
        let problem = if token {
            "contains whitespace or a line break"
        } else {
            "contains a line break"
        };
        return Err(FieldError::malformed(field, problem, value.as_bytes()));
    }
    if token && value.is_empty() {
        return Err(FieldError::malformed(field, "is empty", b""));
    }
    Ok(())
}

/// Byte ranges of the space- or tab-separated tokens of `bytes`.
pub(crate) fn token_ranges(bytes: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = bytes.get(pos..)?;
        let start = pos + rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let len = bytes
            .get(start..)?
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(bytes.len() - start);
        pos = start + len;
        Some(start..pos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of(b"v=0"), Some(b'v'));
        assert_eq!(kind_of(b"y=x"), Some(b'y'));
        assert_eq!(kind_of(b" \t"), Some(BLANK));
        assert_eq!(kind_of(b""), Some(BLANK));
        assert_eq!(kind_of(b"v 0"), None);
        assert_eq!(kind_of(b"1=0"), None);
    }

    #[test]
    fn tokens() {
        let line = b" a  bc\td ";
        let got: Vec<_> = token_ranges(line).collect();
        assert_eq!(got, vec![1..2, 4..6, 7..8]);
        assert_eq!(token_ranges(b"").count(), 0);
    }
}
