//! A real `redis-server` for tests: on a free loopback port, no persistence, killed on drop;
//! restartable (empty) on the same port.

use std::process::Command;
use std::time::Duration;

use crate::{free_port, require_tool, Daemon, LOCALHOST};

/// A running redis-server.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    password: Option<String>,
    daemon: Option<Daemon>,
}

impl RedisServer {
    /// Starts one with no persistence, optionally with `requirepass`.
    pub fn start(password: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(LOCALHOST),
            password: password.map(str::to_string),
            daemon: None,
        };
        server.restart();
        server
    }

    /// Starts it again (empty) on the same port.
    pub fn restart(&mut self) {
        let bin = require_tool("redis-server", "redis-server");
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let mut daemon = Daemon::spawn("redis-server", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("Ready to accept connections")
        });
        self.daemon = Some(daemon);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(daemon) = self.daemon.as_mut() {
            daemon.signal(9);
            daemon.wait_exit(Duration::from_secs(5));
        }
        self.daemon = None;
    }

    /// The URL (with the password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }
}
