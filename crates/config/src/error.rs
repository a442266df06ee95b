//! Configuration errors that name the key path they belong to.

use std::fmt;

/// One configuration error: the dotted key path (`proxy.route[1].reply.status`, empty for the
/// whole file) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `relay.interface[0].port_min`.
    pub path: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error reported by the TOML decoder, with the line it points at.
    pub(crate) fn from_toml(path: &str, error: &toml::de::Error, text: &str) -> Self {
        let message = error.message().trim().to_string();
        let message = match error.span() {
            Some(span) => {
                let line = text
                    .as_bytes()
                    .iter()
                    .take(span.start)
                    .filter(|&&b| b == b'\n')
                    .count()
                    + 1;
                format!("{message} (line {line})")
            }
            None => message,
        };
        Self::new(path, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A list of one error.
    pub fn one(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
