//! [`StoreError`]: why a store could not be opened or an operation did not complete. No
//! variant ever holds the Redis password: locations are the redacted `Display` of
//! [`anchorage_config::StoreLocation`] and server messages are scrubbed of the password.

use std::path::PathBuf;

use crate::record::RecordError;

/// Why the store could not be opened or did not complete an operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `cluster.store` is not a valid store location.
    #[error("cluster.store: {0}")]
    Config(String),
    /// A file named by the configuration could not be read.
    #[error("cannot read {key} {path}: {source}")]
    File {
        /// The configuration key (`cluster.password_file`, `cluster.tls_ca_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Redis refused the credentials (wrong or missing password or user).
    #[error("Redis at {location} refused the credentials: {detail}")]
    Auth {
        /// The store location, without the password.
        location: String,
        /// What the server said.
        detail: String,
    },
    /// Redis failed or could not be reached.
    #[error("Redis at {location}: {detail}")]
    Redis {
        /// The store location, without the password.
        location: String,
        /// What went wrong.
        detail: String,
    },
    /// Redis did not answer in time.
    #[error("Redis at {location} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The store location, without the password.
        location: String,
        /// The configured `cluster.timeout_ms`.
        timeout_ms: u64,
    },
    /// A stored record could not be read.
    #[error("call {call_id}: {source}")]
    Record {
        /// The call.
        call_id: String,
        /// Why.
        source: RecordError,
    },
    /// Another node owns the call now (it claimed it): this node may not change it.
    #[error("call {call_id} is owned by another node now")]
    Fenced {
        /// The call.
        call_id: String,
    },
    /// The store's task has ended (the runtime is shutting down).
    #[error("the store has stopped")]
    Stopped,
}
