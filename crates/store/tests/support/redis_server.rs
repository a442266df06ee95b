//! Redis servers for the store's tests: the plain one (from testkit) and a second connection
//! to it, one that speaks only TLS, and a Sentinel.

use std::process::Command;
use std::time::{Duration, Instant};

use anchorage_testkit::{free_port, require_tool, Daemon, LOCALHOST};

pub use anchorage_testkit::redis::RedisServer;

/// A second, independent connection to `server` (to check what the store wrote).
pub fn connection(server: &RedisServer) -> redis::Connection {
    let client = redis::Client::open(server.url()).expect("a client");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.get_connection() {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("cannot connect to redis: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A redis-server that speaks only TLS, with a certificate for 127.0.0.1 signed by a CA of
/// its own (made with `openssl`), and a password.
pub struct TlsRedisServer {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// The CA certificate (PEM file) that signed the server's.
    pub ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _daemon: Daemon,
}

impl TlsRedisServer {
    /// Makes the certificates and starts the server with `requirepass password`.
    pub fn start(password: &str) -> TlsRedisServer {
        let openssl = require_tool("openssl", "openssl");
        let bin = require_tool("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        std::fs::write(
            path("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("the extension file");
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=anchorage-test-ca",
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("ca.pem"),
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &path("server.key"),
                "-out",
                &path("server.csr"),
            ],
            &[
                "x509",
                "-req",
                "-in",
                &path("server.csr"),
                "-CA",
                &path("ca.pem"),
                "-CAkey",
                &path("ca.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &path("ext.cnf"),
                "-out",
                &path("server.pem"),
            ],
        ];
        for args in steps {
            let out = Command::new(&openssl)
                .args(args)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port(LOCALHOST);
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .args(["--save", "", "--appendonly", "no"]);
        let mut daemon = Daemon::spawn("redis-server-tls", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("Ready to accept connections")
        });
        TlsRedisServer {
            port,
            ca_file: dir.path().join("ca.pem"),
            _dir: dir,
            _daemon: daemon,
        }
    }
}

/// A Redis Sentinel (redis-server --sentinel) monitoring `master_port` as `mymaster`, with the
/// same password as the master.
pub struct Sentinel {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
    _daemon: Daemon,
}

impl Sentinel {
    /// Starts it and waits until it monitors the master.
    pub fn start(master_port: u16, password: &str) -> Sentinel {
        let bin = require_tool("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port(LOCALHOST);
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\nrequirepass {password}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel auth-pass mymaster {password}\n"
            ),
        )
        .expect("the sentinel configuration");
        let mut cmd = Command::new(bin);
        cmd.arg(&conf).arg("--sentinel");
        let mut daemon = Daemon::spawn("redis-sentinel", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("+monitor master")
        });
        Sentinel {
            port,
            _dir: dir,
            _daemon: daemon,
        }
    }
}

/// A Redis Cluster of three masters on loopback (no replicas), made with `redis-cli --cluster
/// create`.
pub struct RedisCluster {
    /// The nodes' ports on 127.0.0.1.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
    _daemons: Vec<Daemon>,
}

impl RedisCluster {
    /// Starts three nodes, joins them and waits until the cluster is ok.
    pub fn start() -> RedisCluster {
        let bin = require_tool("redis-server", "redis-server");
        let cli = require_tool("redis-cli", "redis-tools");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ports = Vec::new();
        let mut daemons = Vec::new();
        while ports.len() < 3 {
            // The cluster bus listens on port + 10000.
            let port = free_port(LOCALHOST);
            let bus_free =
                port < 55_000 && std::net::TcpListener::bind((LOCALHOST, port + 10_000)).is_ok();
            if !bus_free || ports.contains(&port) {
                continue;
            }
            let mut cmd = Command::new(&bin);
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no"]);
            let mut daemon = Daemon::spawn("redis-cluster-node", &mut cmd);
            daemon.wait_until(Duration::from_secs(10), |d| {
                d.log().contains("Ready to accept connections")
            });
            ports.push(port);
            daemons.push(daemon);
        }
        let out = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        for port in &ports {
            loop {
                let info = Command::new(&cli)
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli runs");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok on port {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster {
            ports,
            _dir: dir,
            _daemons: daemons,
        }
    }
}
