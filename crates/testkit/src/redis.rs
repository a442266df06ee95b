//! A real `redis-server` for tests: on a free loopback port (or on a host of a test LAN), no
//! persistence, killed on drop; restartable (empty) on the same port.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use crate::lan::{LanHost, NsExec};
use crate::{free_port, require_tool, Daemon, LOCALHOST};

/// A running redis-server.
pub struct RedisServer {
    /// Its port on 127.0.0.1 (on [`RedisServer::ip`] for one on a test LAN).
    pub port: u16,
    ip: IpAddr,
    exec: Option<NsExec>,
    password: Option<String>,
    daemon: Option<Daemon>,
}

impl RedisServer {
    /// Starts one with no persistence, optionally with `requirepass`.
    pub fn start(password: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(LOCALHOST),
            ip: LOCALHOST,
            exec: None,
            password: password.map(str::to_string),
            daemon: None,
        };
        server.restart();
        server
    }

    /// Starts one with no persistence on `host`'s address, port 6379 (the host's namespace is
    /// the test's own: the port is free).
    pub fn start_in(host: &LanHost) -> RedisServer {
        let mut server = RedisServer {
            port: 6379,
            ip: host.addr(),
            exec: Some(host.exec()),
            password: None,
            daemon: None,
        };
        server.restart();
        server
    }

    /// The address it listens on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// Starts it again (empty) on the same port.
    pub fn restart(&mut self) {
        let bin = require_tool("redis-server", "redis-server");
        let mut cmd = match &self.exec {
            Some(exec) => exec.command(bin),
            None => Command::new(bin),
        };
        cmd.args([
            "--bind",
            &self.ip.to_string(),
            "--port",
            &self.port.to_string(),
        ])
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

    /// `redis-cli` against it (run on its host): its output, trimmed; panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let bin = require_tool("redis-cli", "redis-tools");
        let mut cmd = match &self.exec {
            Some(exec) => exec.command(bin),
            None => Command::new(bin),
        };
        cmd.args(["-h", &self.ip.to_string(), "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.args(["-a", password, "--no-auth-warning"]);
        }
        let out = cmd.args(args).output().expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Sends `signal` to the server (`SIGSTOP` freezes it with its data, `SIGCONT` resumes).
    pub fn signal(&self, signal: i32) {
        if let Some(daemon) = self.daemon.as_ref() {
            daemon.signal(signal);
        }
    }

    /// `kill -9` of the server (its data is gone: it keeps none on disk).
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
            Some(p) => format!("redis://:{p}@{}:{}/0", self.ip, self.port),
            None => format!("redis://{}:{}/0", self.ip, self.port),
        }
    }
}
