//! `anchorage ctl`: a thin client of the management API (docs/api.md). Long operations
//! (drain, re-anchoring, rebalance) show a progress bar until their job finishes, then the
//! final counts; the exit status is non-zero when a call could not be moved or the API
//! refused the command.

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// `anchorage ctl` options.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Management API address (`http://HOST:PORT` or `HOST:PORT`).
    #[arg(long, default_value = "http://127.0.0.1:7060")]
    pub api: String,
    /// API token for commands that change state (default: $ANCHORAGE_API_TOKEN).
    #[arg(long)]
    pub token: Option<String>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The management commands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Exit 0 when the node's API answers within `--timeout-ms` (for keepalived's
    /// `vrrp_script`); shows the call store's state (a store that is down does not fail it:
    /// calls go on from memory).
    Health {
        /// Longest wait for the connection and for the answer, ms: a node that is stopped or
        /// hung fails the check this soon.
        #[arg(long, default_value_t = 300)]
        timeout_ms: u64,
    },
    /// The proxies sharing the call store: this node's role (active or passive), every node's
    /// heartbeat and how many calls it owns.
    Cluster,
    /// The relay nodes: state, drained, calls.
    Relays,
    /// The calls in progress and where their media is anchored.
    Calls,
    /// Move every call off a relay node and give it no new calls; waits for the job.
    Drain {
        /// Relay node: its name or its address (`udp:IP:PORT`).
        node: String,
    },
    /// Give a drained relay node new calls again.
    Undrain {
        /// Relay node: its name or its address (`udp:IP:PORT`).
        node: String,
    },
    /// Move calls (all, or those on a node / in a set) to other relays; waits for the job.
    Reanchor {
        /// Only nodes of this engine (`ng`, `rtpengine` or `rtpproxy`): with `--call-id` the
        /// engine the call moves to; else which calls move, and where to.
        #[arg(long)]
        engine: Option<String>,
        /// Only calls on this node (its name or its address, `udp:IP:PORT`).
        #[arg(long)]
        node: Option<String>,
        /// Only calls in this relay set.
        #[arg(long)]
        set: Option<String>,
        /// Move to this node (its name or its address, `udp:IP:PORT`).
        #[arg(long)]
        to_node: Option<String>,
        /// Move to this set.
        #[arg(long)]
        to_set: Option<String>,
        /// Move only this call.
        #[arg(long)]
        call_id: Option<String>,
    },
    /// Even the load of a relay set (after adding nodes); waits for the job.
    Rebalance {
        /// Relay set name.
        set: String,
    },
    /// A job's progress.
    Job {
        /// Job id.
        id: u64,
    },
    /// The sources `[proxy.flood]` blocks, with the time left.
    Blocked,
    /// End the block of a source at once.
    Unblock {
        /// Source IP address.
        source: String,
    },
}

/// Runs a ctl command; prints errors and returns the exit status.
pub fn run(args: &CtlArgs) -> ExitCode {
    match execute(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("anchorage ctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(args: &CtlArgs) -> anyhow::Result<ExitCode> {
    let mut api = Api::new(
        &args.api,
        args.token
            .clone()
            .or_else(|| std::env::var("ANCHORAGE_API_TOKEN").ok()),
    )?;
    let show = |value: &serde_json::Value| {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    };
    match &args.command {
        CtlCommand::Health { timeout_ms } => {
            let timeout = Duration::from_millis((*timeout_ms).max(1));
            api.timeouts = (timeout, timeout);
            let value = api.get("/v1/health")?;
            if args.json {
                show(&value);
            } else {
                let s = &value["store"];
                let state = if s["up"] == true { "up" } else { "DOWN" };
                println!(
                    "ok; store {} {} {state}: {} calls not yet written, {} write errors{}",
                    s["backend"].as_str().unwrap_or("?"),
                    s["location"].as_str().unwrap_or(""),
                    s["dirty_calls"],
                    s["write_errors"],
                    s["last_error"]
                        .as_str()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Cluster => {
            let value = api.get("/v1/cluster")?;
            if args.json {
                show(&value);
            } else {
                println!(
                    "node {} ({} mode{}): {}, {} dialogs, {} takeovers, {} calls released",
                    value["node"].as_str().unwrap_or("?"),
                    value["mode"].as_str().unwrap_or("?"),
                    value["vip"]
                        .as_str()
                        .map(|v| format!(", virtual IP {v}"))
                        .unwrap_or_default(),
                    value["role"].as_str().unwrap_or("?"),
                    value["dialogs"],
                    value["takeovers"],
                    value["released_calls"],
                );
                if let Some(e) = value["nodes_error"].as_str() {
                    println!("nodes unknown: {e}");
                }
                println!(
                    "{:<20} {:<6} {:<18} {:>7}",
                    "NODE", "ALIVE", "EPOCH", "CALLS"
                );
                for n in value["nodes"].as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<6} {:<18} {:>7}{}",
                        n["id"].as_str().unwrap_or(""),
                        if n["alive"] == true { "yes" } else { "no" },
                        n["epoch"].as_str().unwrap_or("-"),
                        n["calls"],
                        if n["this_node"] == true {
                            "  (this node)"
                        } else {
                            ""
                        },
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Relays => {
            let value = api.get("/v1/relays")?;
            if args.json {
                show(&value);
            } else {
                println!(
                    "{:<16} {:<22} {:>6} {:<5} {:>8} {:>7} {:>8} {:>6} {:>8} {:>9}  WHY DOWN",
                    "RELAY",
                    "NG",
                    "WEIGHT",
                    "STATE",
                    "DRAINING",
                    "CALLS",
                    "SESSIONS",
                    "LOAD",
                    "RTT_MS",
                    "WINDOW_MS"
                );
                for r in value["relays"].as_array().into_iter().flatten() {
                    let why = match (r["state"].as_str(), r["down_reason"].as_str()) {
                        (Some("down"), Some("timed_out")) => {
                            format!("timed out (silent {} ms)", r["down_silent_ms"])
                        }
                        (Some("down"), Some(reason)) => reason.to_string(),
                        _ => "-".to_string(),
                    };
                    println!(
                        "{:<16} {:<22} {:>6} {:<5} {:>8} {:>7} {:>8} {:>6} {:>8} {:>9}  {why}",
                        r["name"].as_str().unwrap_or(""),
                        r["ng"].as_str().unwrap_or(""),
                        r["weight"],
                        r["state"].as_str().unwrap_or(""),
                        if r["draining"] == true { "yes" } else { "no" },
                        r["calls"],
                        // The node's own count of its sessions (RTPProxy nodes report one).
                        r["reported_sessions"]
                            .as_u64()
                            .map_or("-".to_string(), |n| n.to_string()),
                        r["load"],
                        r["rtt_ms"]
                            .as_f64()
                            .map_or("-".to_string(), |v| format!("{v:.1}")),
                        r["window_ms"],
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Calls => {
            let value = api.get("/v1/calls")?;
            if args.json {
                show(&value);
            } else {
                let calls = value["calls"].as_array().cloned().unwrap_or_default();
                println!(
                    "{:<40} {:<10} {:>7} {:<16} WAITING_FOR_RELAY_S",
                    "CALL-ID", "STATE", "AGE_S", "RELAY"
                );
                let mut waiting = 0;
                for c in &calls {
                    let wait = c["media"]["waiting_for_relay_s"].as_u64();
                    waiting += usize::from(wait.is_some());
                    println!(
                        "{:<40} {:<10} {:>7} {:<16} {}",
                        c["call_id"].as_str().unwrap_or(""),
                        c["state"].as_str().unwrap_or(""),
                        c["age_s"],
                        c["media"]["relay"].as_str().unwrap_or("-"),
                        wait.map_or("-".to_string(), |s| s.to_string())
                    );
                }
                println!("{} call(s), {waiting} waiting for a relay", calls.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Drain { node } => {
            let job = api.post(&format!("/v1/relays/{node}/drain"), "")?;
            follow(&api, &job, args.json)
        }
        CtlCommand::Undrain { node } => {
            let value = api.post(&format!("/v1/relays/{node}/undrain"), "")?;
            if args.json {
                show(&value);
            } else {
                println!("{node}: takes new calls again");
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Reanchor {
            engine,
            node,
            set,
            to_node,
            to_set,
            call_id,
        } => {
            let job = match call_id {
                Some(id) => {
                    let body =
                        serde_json::json!({ "engine": engine, "node": to_node, "set": to_set });
                    api.post(&format!("/v1/calls/{id}/reanchor"), &body.to_string())?
                }
                None => {
                    let body = serde_json::json!({
                        "engine": engine, "node": node, "set": set, "new_node": to_node,
                        "new_set": to_set,
                    });
                    api.post("/v1/reanchor", &body.to_string())?
                }
            };
            follow(&api, &job, args.json)
        }
        CtlCommand::Rebalance { set } => {
            let body = serde_json::json!({ "set": set });
            let job = api.post("/v1/rebalance", &body.to_string())?;
            follow(&api, &job, args.json)
        }
        CtlCommand::Blocked => {
            let value = api.get("/v1/flood")?;
            if args.json {
                show(&value);
            } else {
                let blocked = value["blocked"].as_array().cloned().unwrap_or_default();
                if value["enabled"] == serde_json::Value::Bool(false) {
                    println!("the rate limit is off ([proxy.flood] requests_per_second = 0)");
                }
                println!("{:<40} {:>10}", "SOURCE", "LEFT_S");
                for b in &blocked {
                    println!(
                        "{:<40} {:>10.1}",
                        b["source"].as_str().unwrap_or(""),
                        b["remaining_s"].as_f64().unwrap_or(0.0)
                    );
                }
                println!("{} source(s) blocked", blocked.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Unblock { source } => {
            let value = api.post(&format!("/v1/flood/{source}/unblock"), "")?;
            if args.json {
                show(&value);
            } else {
                println!("{source}: no longer blocked");
            }
            Ok(ExitCode::SUCCESS)
        }
        CtlCommand::Job { id } => {
            let value = api.get(&format!("/v1/jobs/{id}"))?;
            if args.json {
                show(&value);
            } else {
                println!("{}", summary(&value));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Polls a job until it finishes, drawing a progress bar; the final counts decide the exit.
fn follow(api: &Api, job: &serde_json::Value, json: bool) -> anyhow::Result<ExitCode> {
    let id = job["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("the API answered without a job id: {job}"))?;
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let mut current = job.clone();
    loop {
        if current["finished"] == true {
            break;
        }
        if tty {
            eprint!("\r{}", bar(&current));
        } else if last_line.elapsed() >= Duration::from_secs(1) {
            eprintln!("{}", summary(&current));
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
        current = api.get(&format!("/v1/jobs/{id}"))?;
    }
    if tty {
        eprintln!("\r{}", bar(&current));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&current).unwrap_or_default()
        );
    } else {
        println!("{}", summary(&current));
    }
    Ok(if current["failed"].as_u64().unwrap_or(0) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bar(job: &serde_json::Value) -> String {
    let total = job["total"].as_u64().unwrap_or(0);
    let finished = job["done"].as_u64().unwrap_or(0)
        + job["failed"].as_u64().unwrap_or(0)
        + job["waiting"].as_u64().unwrap_or(0);
    let width = 30;
    let filled = (finished * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    format!(
        "[{}{}] {}",
        "#".repeat(filled as usize),
        ".".repeat((width - filled) as usize),
        summary(job)
    )
}

fn summary(job: &serde_json::Value) -> String {
    format!(
        "job {} ({}): {}/{} moved, {} failed, {} waiting for a relay, {} in flight, {:.2} s{}",
        job["id"],
        job["trigger"].as_str().unwrap_or(""),
        job["done"],
        job["total"],
        job["failed"],
        job["waiting"].as_u64().unwrap_or(0),
        job["in_flight"],
        job["seconds"].as_f64().unwrap_or(0.0),
        if job["finished"] == true {
            ", finished"
        } else {
            ""
        }
    )
}

/// A blocking HTTP/1.1 client for the API (one request per connection; the API is local or
/// on the operator's network, so no TLS and no pooling).
struct Api {
    address: SocketAddr,
    host: String,
    token: Option<String>,
    /// Longest wait to connect, and for each read or write.
    timeouts: (Duration, Duration),
}

impl Api {
    fn new(url: &str, token: Option<String>) -> anyhow::Result<Api> {
        let host = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/')
            .to_string();
        if url.starts_with("https://") {
            bail!("https is not supported by ctl: use http://HOST:PORT");
        }
        let address = host
            .to_socket_addrs()
            .with_context(|| format!("bad API address {url:?}"))?
            .next()
            .ok_or_else(|| anyhow!("API address {url:?} resolves to nothing"))?;
        Ok(Api {
            address,
            host,
            token,
            timeouts: (Duration::from_secs(5), Duration::from_secs(30)),
        })
    }

    fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.request("GET", path, "")
    }

    fn post(&self, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        self.request("POST", path, body)
    }

    fn request(&self, method: &str, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
        let (connect, io) = self.timeouts;
        let mut stream = TcpStream::connect_timeout(&self.address, connect)
            .with_context(|| format!("cannot reach the API at {}", self.address))?;
        stream.set_read_timeout(Some(io))?;
        stream.set_write_timeout(Some(io))?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("no answer from the API at {} within {io:?}", self.address))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("the API sent no HTTP response"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("the API sent a bad status line: {head:?}"))?;
        // The API does not chunk (axum sends Content-Length for JSON bodies).
        let value: serde_json::Value = serde_json::from_str(body.trim())
            .with_context(|| format!("the API answered {status} with a body that is not JSON"))?;
        if status >= 400 {
            bail!(
                "{method} {path}: {status}: {}",
                value["error"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(value)
    }
}
