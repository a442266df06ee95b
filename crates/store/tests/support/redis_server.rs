//! Redis servers for the store's tests: the plain one (from testkit) and a second connection
//! to it, one that speaks only TLS, and a Sentinel.

use std::path::{Path, PathBuf};
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

/// Certificates made with `openssl` in a directory of the test's own: a CA and a certificate
/// for 127.0.0.1 that it signed (servers use it for their TLS port, their replication and
/// cluster-bus links).
pub struct TestCerts {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), for IP 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// Runs `openssl ARGS`, failing the test with its error output.
fn openssl(args: &[&str]) {
    let openssl = require_tool("openssl", "openssl");
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

/// A self-signed CA `NAME.pem` (key `NAME.key`) in `dir`, with common name `cn`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) -> PathBuf {
    let path = |file: String| dir.join(file).to_string_lossy().into_owned();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        &path(format!("{name}.key")),
        "-out",
        &path(format!("{name}.pem")),
    ]);
    dir.join(format!("{name}.pem"))
}

impl TestCerts {
    /// Makes the CA (`ca.pem`) and the server certificate (`server.pem`, `server.key`) in `dir`.
    pub fn make(dir: &Path) -> TestCerts {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        std::fs::write(
            path("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("the extension file");
        let ca = make_ca(dir, "ca", "anchorage-test-ca");
        openssl(&[
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
        ]);
        openssl(&[
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
        ]);
        TestCerts {
            ca,
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// The arguments that make a redis-server (or sentinel) speak only TLS on `port`, with
    /// these certificates and no client certificates asked for.
    pub fn server_args(&self, port: u16) -> Vec<String> {
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(&self.cert),
            "--tls-key-file",
            &path(&self.key),
            "--tls-ca-cert-file",
            &path(&self.ca),
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The `redis-cli` arguments to reach such a server.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.to_string_lossy().into_owned(),
        ]
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
        let bin = require_tool("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = TestCerts::make(dir.path());
        let port = free_port(LOCALHOST);
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir.path())
            .args(["--bind", "127.0.0.1"])
            .args(certs.server_args(port))
            .args(["--requirepass", password])
            .args(["--save", "", "--appendonly", "no"]);
        let mut daemon = Daemon::spawn("redis-server-tls", &mut cmd);
        daemon.wait_until(Duration::from_secs(10), |d| {
            d.log().contains("Ready to accept connections")
        });
        TlsRedisServer {
            port,
            ca_file: certs.ca,
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

/// A port whose cluster-bus port (+10000) is free too.
fn free_port_with_bus(taken: &[u16]) -> u16 {
    loop {
        let port = free_port(LOCALHOST);
        let bus_free =
            port < 55_000 && std::net::TcpListener::bind((LOCALHOST, port + 10_000)).is_ok();
        if bus_free && !taken.contains(&port) {
            return port;
        }
    }
}

/// Runs `redis-cli` with `args` and the password in `REDISCLI_AUTH` (never on its command
/// line), returning what it printed.
fn cli(certs: &TestCerts, password: &str, args: &[String]) -> std::process::Output {
    let cli = require_tool("redis-cli", "redis-tools");
    Command::new(cli)
        .env("REDISCLI_AUTH", password)
        .args(certs.cli_args())
        .args(args)
        .output()
        .expect("redis-cli runs")
}

/// A master, its replica and a Sentinel watching them as `mymaster`, all speaking only TLS
/// (replication and Sentinel's links too) with the same certificates, and all with one
/// password (`requirepass`, `masterauth`, the Sentinel's own `requirepass` and `auth-pass`).
/// The Sentinel fails over after the master has been silent for a second.
pub struct TlsSentinel {
    /// The first master's TLS port.
    pub master_port: u16,
    /// The replica's TLS port (the master after a failover).
    pub replica_port: u16,
    /// The Sentinel's TLS port.
    pub sentinel_port: u16,
    /// The certificates every process uses.
    pub certs: TestCerts,
    password: String,
    master: Option<Daemon>,
    _replica: Daemon,
    sentinel: Daemon,
    /// Holds the certificates and the processes' working directories.
    pub dir: tempfile::TempDir,
}

impl TlsSentinel {
    /// Makes the certificates, starts the three processes and waits until the replica is in
    /// sync and the Sentinel monitors the master and knows the replica.
    pub fn start(password: &str) -> TlsSentinel {
        let bin = require_tool("redis-server", "redis-server");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = TestCerts::make(dir.path());
        let master_port = free_port(LOCALHOST);
        let replica_port = free_port(LOCALHOST);
        let sentinel_port = free_port(LOCALHOST);
        let server = |name: &str, port: u16, extra: &[&str]| {
            let work = dir.path().join(name);
            std::fs::create_dir(&work).expect("a working directory");
            let mut cmd = Command::new(&bin);
            cmd.current_dir(&work)
                .args(["--bind", "127.0.0.1"])
                .args(certs.server_args(port))
                .args(["--tls-replication", "yes"])
                .args(["--requirepass", password, "--masterauth", password])
                .args(["--save", "", "--appendonly", "no"])
                .args(extra);
            let mut daemon = Daemon::spawn(name, &mut cmd);
            daemon.wait_until(Duration::from_secs(10), |d| {
                d.log().contains("Ready to accept connections")
            });
            daemon
        };
        let master = server("master", master_port, &[]);
        let mut replica = server(
            "replica",
            replica_port,
            &["--replicaof", "127.0.0.1", &master_port.to_string()],
        );
        replica.wait_until(Duration::from_secs(10), |d| {
            d.log()
                .contains("MASTER <-> REPLICA sync: Finished with success")
        });
        let work = dir.path().join("sentinel");
        std::fs::create_dir(&work).expect("a working directory");
        let conf = work.join("sentinel.conf");
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport 0\ntls-port {sentinel_port}\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\ntls-replication yes\nrequirepass {password}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel auth-pass mymaster {password}\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n",
                path(&certs.cert),
                path(&certs.key),
                path(&certs.ca),
            ),
        )
        .expect("the sentinel configuration");
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&work).arg(&conf).arg("--sentinel");
        let mut sentinel = Daemon::spawn("redis-sentinel-tls", &mut cmd);
        sentinel.wait_until(Duration::from_secs(15), |d| {
            d.log().contains("+monitor master") && d.log().contains("+slave slave")
        });
        TlsSentinel {
            master_port,
            replica_port,
            sentinel_port,
            certs,
            password: password.to_string(),
            master: Some(master),
            _replica: replica,
            sentinel,
            dir,
        }
    }

    /// Kills the master (`kill -9` of its process group) and waits until the Sentinel has
    /// promoted the replica.
    pub fn kill_master_and_wait_for_failover(&mut self) {
        if let Some(mut master) = self.master.take() {
            master.signal(9);
            master.wait_exit(Duration::from_secs(5));
        }
        self.sentinel.wait_until(Duration::from_secs(30), |d| {
            d.log().contains(&format!(
                "+switch-master mymaster 127.0.0.1 {} 127.0.0.1 {}",
                self.master_port, self.replica_port
            ))
        });
    }

    /// What the Sentinel says of the master, asked with `redis-cli --tls`.
    pub fn sentinel_says(&self) -> String {
        let out = cli(
            &self.certs,
            &self.password,
            &[
                "-p".into(),
                self.sentinel_port.to_string(),
                "sentinel".into(),
                "get-master-addr-by-name".into(),
                "mymaster".into(),
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A Redis Cluster of three masters that speak only TLS, on the cluster bus too
/// (`--tls-cluster yes`), with a password; made with `redis-cli --tls --cluster create`.
pub struct TlsRedisCluster {
    /// The nodes' TLS ports on 127.0.0.1.
    pub ports: Vec<u16>,
    /// The certificates every node uses.
    pub certs: TestCerts,
    _daemons: Vec<Daemon>,
    /// Holds the certificates and the nodes' working directories.
    pub dir: tempfile::TempDir,
}

impl TlsRedisCluster {
    /// Starts three nodes, joins them and waits until every node says the cluster is ok.
    pub fn start(password: &str) -> TlsRedisCluster {
        let bin = require_tool("redis-server", "redis-server");
        require_tool("redis-cli", "redis-tools");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = TestCerts::make(dir.path());
        let mut ports = Vec::new();
        let mut daemons = Vec::new();
        while ports.len() < 3 {
            let port = free_port_with_bus(&ports);
            let work = dir.path().join(format!("node-{port}"));
            std::fs::create_dir(&work).expect("a working directory");
            let mut cmd = Command::new(&bin);
            cmd.current_dir(&work)
                .args(["--bind", "127.0.0.1"])
                .args(certs.server_args(port))
                .args(["--tls-replication", "yes", "--tls-cluster", "yes"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--requirepass", password, "--masterauth", password])
                .args(["--save", "", "--appendonly", "no"]);
            let mut daemon = Daemon::spawn("redis-cluster-tls-node", &mut cmd);
            daemon.wait_until(Duration::from_secs(10), |d| {
                d.log().contains("Ready to accept connections")
            });
            ports.push(port);
            daemons.push(daemon);
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = cli(&certs, password, &create);
        assert!(
            out.status.success(),
            "redis-cli --tls --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            loop {
                let info = cli(
                    &certs,
                    password,
                    &[
                        "-p".into(),
                        port.to_string(),
                        "cluster".into(),
                        "info".into(),
                    ],
                );
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok on port {port}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        TlsRedisCluster {
            ports,
            certs,
            _daemons: daemons,
            dir,
        }
    }

    /// How many keys each node holds (`DBSIZE` over TLS), in the order of `ports`.
    pub fn keys_per_node(&self, password: &str) -> Vec<u64> {
        self.ports
            .iter()
            .map(|port| {
                let out = cli(
                    &self.certs,
                    password,
                    &["-p".into(), port.to_string(), "dbsize".into()],
                );
                let text = String::from_utf8_lossy(&out.stdout);
                text.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("dbsize on {port}: {text:?}"))
            })
            .collect()
    }
}
