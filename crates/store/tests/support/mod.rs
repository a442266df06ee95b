//! Shared by the store's integration tests.
#![allow(dead_code)]

pub mod logs;
pub mod redis_server;
pub mod sample;

use std::time::{Duration, Instant};

/// Waits until `ready` holds, panicking with `what` after `timeout`.
pub async fn eventually(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
