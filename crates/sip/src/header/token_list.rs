//! Comma-separated token lists: Require, Proxy-Require, Supported, Unsupported
//! ([RFC 3261 §20.32](https://www.rfc-editor.org/rfc/rfc3261#section-20.32), §20.29, §20.37,
//! §20.40) and Allow (§20.5).

use super::HeaderName;
use crate::error::ParseError;
use crate::syntax::{is_token, text, CommaSplit};

/// Checks that `v` is a comma list of tokens; an empty value is allowed (Supported may be
/// empty, §20.37).
pub(crate) fn check(v: &[u8], name: HeaderName) -> Result<(), ParseError> {
    if crate::syntax::trim(v).is_empty() {
        return Ok(());
    }
    for r in CommaSplit::new(v) {
        if !is_token(&v[r]) {
            return Err(ParseError::bad(name, "element is not a token"));
        }
    }
    Ok(())
}

/// The tokens of a token-list value, skipping elements that are not tokens.
pub(crate) fn tokens(v: &[u8]) -> impl Iterator<Item = &str> {
    CommaSplit::new(v).filter_map(move |r| {
        let t = &v[r];
        if is_token(t) {
            text(t)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists() {
        assert_eq!(
            tokens(b"100rel , timer,path").collect::<Vec<_>>(),
            ["100rel", "timer", "path"]
        );
        assert!(check(b"", HeaderName::Supported).is_ok());
        assert_eq!(
            check(b"foo, b@r", HeaderName::Require)
                .unwrap_err()
                .to_string(),
            "bad Require header: element is not a token"
        );
    }
}
