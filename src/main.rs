//! `anchorage`: one binary for the SIP proxy, the media relay, the embedded
//! all-in-one default, the management CLI and the call generator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod active_active;
mod api;
mod call_records;
mod callgen;
mod cluster;
mod ctl;
mod memory;
mod ng_link;
mod proxy_node;
mod relay_node;
mod resolve;
mod security;
mod store_view;
mod takeover;
mod up;

/// Command line of the `anchorage` binary.
#[derive(Debug, Parser)]
#[command(
    name = "anchorage",
    version,
    about = "SIP proxy and RTP media relay whose calls survive the loss of a relay node",
    long_about = "Anchorage is a SIP proxy and an RTP media relay. When a relay node dies, is \
                  drained or new nodes join, the media of calls in progress moves to another \
                  relay within about a second by in-dialog re-INVITEs (re-anchoring)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; see `docs/` for each.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded default: a proxy on 127.0.0.1:5060 (UDP and TCP) forwarding by
    /// Request-URI, the management API on 127.0.0.1:7060, and media anchored on the relays.
    Up {
        /// SIP address (UDP and TCP).
        #[arg(long, default_value = "127.0.0.1:5060", value_name = "IP:PORT")]
        sip: std::net::SocketAddr,
        /// Management API and /metrics address.
        #[arg(long, default_value = "127.0.0.1:7060", value_name = "IP:PORT")]
        api: std::net::SocketAddr,
        /// Number of relay nodes.
        #[arg(long, default_value_t = 2)]
        relays: u16,
        /// Anchor media on relays already running on the ng ports (`anchorage relay` processes
        /// or rtpengine) instead of starting them in this process.
        #[arg(long)]
        external_relays: bool,
        /// ng port of the first relay node; the others follow (relay-a 2223, relay-b 2224, …).
        #[arg(long, default_value_t = 2223, value_name = "PORT")]
        ng_base: u16,
        /// First media port of the built-in relays; each takes 5,000 (relay-a 30000–34999,
        /// relay-b 35000–39999, …).
        #[arg(long, default_value_t = 30000, value_name = "PORT")]
        media_base: u16,
        /// Bearer token of the management API (`api.token`); required when `--api` is not a
        /// loopback address, unless `--api-allow-unauthenticated`.
        #[arg(long, value_name = "TOKEN")]
        api_token: Option<String>,
        /// Serve the API without a token on a non-loopback address
        /// (`api.allow_unauthenticated`): anyone who reaches it can move calls.
        #[arg(long)]
        api_allow_unauthenticated: bool,
    },
    /// Run a SIP signalling node. Without a configuration file it listens on UDP and TCP
    /// 127.0.0.1:5060 and forwards every request to its Request-URI.
    Proxy {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Listen on `udp:IP:PORT` or `tcp:IP:PORT` instead of the configured listeners
        /// (repeatable).
        #[arg(long, value_name = "PROTO:IP:PORT")]
        listen: Vec<proxy_node::ListenArg>,
        /// Serve the management API and /metrics on this address (overrides `api.listen`).
        #[arg(long, value_name = "IP:PORT")]
        api: Option<std::net::SocketAddr>,
    },
    /// Run a media relay node controlled over the ng protocol.
    Relay {
        /// Configuration file (TOML); its `[relay]` section is used.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Overrides of the configuration, named as rtpengine's options.
        #[command(flatten)]
        args: relay_node::RelayArgs,
    },
    /// Management CLI: talks to the HTTP API of a running node.
    Ctl(ctl::CtlArgs),
    /// Place calls with real media and measure every media gap (`anchorage callgen --help`).
    #[command(disable_help_flag = true)]
    Callgen {
        /// Call generator options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Validate a configuration file and report every error with its key path.
    Check {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
}

impl Command {
    /// The subcommand's name as typed on the command line.
    fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Proxy { .. } => "proxy",
            Command::Relay { .. } => "relay",
            Command::Ctl(_) => "ctl",
            Command::Callgen { .. } => "callgen",
            Command::Check { .. } => "check",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check { config } => check(config),
        Command::Up {
            sip,
            api,
            relays,
            external_relays,
            ng_base,
            media_base,
            api_token,
            api_allow_unauthenticated,
        } => {
            init_logging();
            let mut config = up::config(*relays, *ng_base);
            config.api.token = api_token.clone().filter(|t| !t.is_empty());
            config.api.allow_unauthenticated = *api_allow_unauthenticated;
            // Before the relays start: an API open to strangers is refused (issue 18).
            if let Err(e) = security::check_api_exposure(*api, &config.api) {
                eprintln!("anchorage up: {e} (on the command line: --api-token TOKEN or --api-allow-unauthenticated)");
                return ExitCode::FAILURE;
            }
            let listen = up::listeners(*sip);
            let (relays, ng_base, external, media_base) =
                (*relays, *ng_base, *external_relays, *media_base);
            let api = *api;
            run_async(async move {
                if !external {
                    for index in 0..relays {
                        let settings = up::relay_settings(index, ng_base, media_base)?;
                        let (min, max) = up::relay_ports(index, media_base);
                        let ng = relay_node::spawn(settings).await?;
                        println!(
                            "anchorage up: relay {} with ng on udp:{ng}, media ports {min}-{max}",
                            up::relay_name(index)
                        );
                    }
                }
                proxy_node::run(config, &listen, Some(api)).await
            })
        }
        Command::Proxy {
            config,
            listen,
            api,
        } => {
            let config = match load_or_default(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging();
            run_async(proxy_node::run(config, listen, *api))
        }
        Command::Ctl(args) => ctl::run(args),
        Command::Relay { config, args } => {
            let config = match load_or_default(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let settings = match relay_node::settings(&config.relay, args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("anchorage relay: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging();
            run_async(relay_node::run(settings))
        }
        command @ Command::Callgen { args } => callgen::run(command.name(), args),
    }
}

/// The configuration file, or the embedded defaults without one; errors are printed with their
/// key path.
fn load_or_default(path: Option<&std::path::Path>) -> Result<anchorage_config::Config, ExitCode> {
    let Some(path) = path else {
        return Ok(anchorage_config::Config::default());
    };
    anchorage_config::load(path).map_err(|errors| {
        for error in &errors.0 {
            eprintln!("{}: {error}", path.display());
        }
        ExitCode::FAILURE
    })
}

/// Structured logs on stderr; `RUST_LOG` filters (default `info`), `ANCHORAGE_LOG=json` for JSON.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("ANCHORAGE_LOG").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs a server on a multi-threaded tokio runtime; an error is printed and exits 1.
fn run_async(server: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anchorage: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anchorage: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `anchorage check -c FILE`: prints every error with its key path; exit 1 if there is any.
/// A valid file's warnings (what it leaves open to strangers) are printed too, exit 0.
fn check(path: &std::path::Path) -> ExitCode {
    match anchorage_config::load(path) {
        Ok(config) => {
            for warning in anchorage_config::warnings(&config) {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{}: {error}", path.display());
            }
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}
