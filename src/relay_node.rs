//! `anchorage relay`: the ng control plane ([`anchorage_relay_control::Controller`]) on a tokio
//! UDP socket, driving the media fast path ([`anchorage_net::media::MediaWorkers`]).
//!
//! One task owns the controller: it answers ng datagrams one at a time (each command is a few
//! microseconds; the media workers' acknowledgements are awaited so that a port released by a
//! `delete` is closed before it can be handed out again) and, once a second, reads the
//! workers' activity for the media timeouts and the metrics.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anchorage_config::RelayConfig;
use anchorage_net::media::{bind_udp, BoundMedia, CallKey, ForwardTotals, MediaWorkers};
use anchorage_ng::{
    decode_request, encode_reply, split_cookie, Begin, Cookie, ReplyCache, ReplyCacheConfig,
    RequestKind,
};
use anchorage_relay::{DtlsIdentity, EndpointLearning, Interface, PortRange, Timeouts};
use anchorage_relay_control::{
    Config as ControlConfig, Controller, MediaAction, Now, PortBinder, PortUsage, SessionKey,
    Statistics,
};
use anyhow::{bail, Context};
use tokio::net::UdpSocket;

mod metrics;
mod rtpp;

use metrics::{serve_metrics, MetricsView};

/// Command-line overrides of the `[relay]` section, named as rtpengine names its options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RelayArgs {
    /// ng control socket (default 127.0.0.1:2223).
    #[arg(long, value_name = "IP:PORT")]
    pub listen_ng: Option<SocketAddr>,
    /// Also answer RTPProxy's control protocol (Kamailio's and OpenSIPS' `rtpproxy` modules)
    /// on this socket, e.g. `udp:127.0.0.1:22222`.
    #[arg(long, value_name = "udp:IP:PORT", value_parser = anchorage_config::relay::parse_rtpp_listen)]
    pub listen_rtpp: Option<SocketAddr>,
    /// Network whose hosts may send ng commands (repeatable; replaces `relay.control_allow`).
    /// Required when the ng socket is not on loopback.
    #[arg(long, value_name = "CIDR")]
    pub control_allow: Vec<ipnet::IpNet>,
    /// Media interface `[NAME/]IP[!ADVERTISED]` (repeatable; replaces the configured ones).
    #[arg(long, value_name = "[NAME/]IP[!ADVERTISED]")]
    pub interface: Vec<String>,
    /// Lowest media port of the `--interface`s.
    #[arg(long)]
    pub port_min: Option<u16>,
    /// Highest media port of the `--interface`s.
    #[arg(long)]
    pub port_max: Option<u16>,
    /// Media worker threads (default: one per core).
    #[arg(long)]
    pub num_threads: Option<usize>,
    /// Seconds without media before a session ends.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Seconds an offer may wait for its answer.
    #[arg(long, value_name = "SECONDS")]
    pub offer_timeout: Option<u64>,
    /// Seconds a released port waits before reuse.
    #[arg(long, value_name = "SECONDS")]
    pub delete_delay: Option<u64>,
    /// Most simultaneous calls (0 = no limit).
    #[arg(long)]
    pub max_sessions: Option<u64>,
    /// Serve Prometheus `/metrics` on this address.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// TOS / traffic class of media packets, e.g. 184 (DSCP EF); a request's `TOS` wins.
    #[arg(long)]
    pub tos: Option<u8>,
}

/// Everything a relay node needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// ng socket.
    pub listen_ng: SocketAddr,
    /// RTPProxy control socket, if any.
    pub listen_rtpp: Option<SocketAddr>,
    /// Networks allowed to send ng commands; empty = any (loopback only).
    pub control_allow: Vec<ipnet::IpNet>,
    /// Worker threads (`None`: one per core).
    pub threads: Option<NonZeroUsize>,
    /// The controller's configuration.
    pub control: ControlConfig,
    /// `/metrics` address.
    pub metrics: Option<SocketAddr>,
    /// TOS of media packets when a request gives none.
    pub tos: Option<u8>,
    /// The relay's DTLS certificate, when it terminates DTLS-SRTP.
    pub dtls: Option<DtlsIdentity>,
}

/// The relay's DTLS certificate: read from `relay.dtls_certificate`, else generated.
fn dtls_identity(config: &RelayConfig) -> anyhow::Result<Option<DtlsIdentity>> {
    if !config.dtls {
        return Ok(None);
    }
    let identity = match &config.dtls_certificate {
        Some(path) => {
            let pem = std::fs::read_to_string(path).with_context(|| {
                format!("relay.dtls_certificate: cannot read {}", path.display())
            })?;
            DtlsIdentity::from_pem(&pem)
                .with_context(|| format!("relay.dtls_certificate: {}", path.display()))?
        }
        None => DtlsIdentity::generate().context("cannot generate the DTLS certificate")?,
    };
    Ok(Some(identity))
}

/// The relay's settings from its config section and the command line (which wins).
pub fn settings(config: &RelayConfig, args: &RelayArgs) -> anyhow::Result<Settings> {
    let mut interfaces = Vec::new();
    if args.interface.is_empty() {
        for (i, iface) in config.interface.iter().enumerate() {
            let ports = PortRange::new(
                args.port_min.unwrap_or(iface.port_min),
                args.port_max.unwrap_or(iface.port_max),
            )
            .with_context(|| format!("relay.interface[{i}]"))?;
            let advertised = iface.advertise.unwrap_or(iface.address);
            interfaces.push(
                Interface::new(&iface.name, iface.address, advertised, ports)
                    .with_context(|| format!("relay.interface[{i}]"))?,
            );
        }
    } else {
        // The same default range as a configured interface.
        let defaults = anchorage_config::relay::Interface::default();
        let ports = PortRange::new(
            args.port_min.unwrap_or(defaults.port_min),
            args.port_max.unwrap_or(defaults.port_max),
        )
        .context("--port-min/--port-max")?;
        for spec in &args.interface {
            interfaces.push(
                Interface::parse(spec, ports).with_context(|| format!("--interface {spec}"))?,
            );
        }
    }
    if interfaces.is_empty() {
        bail!("the relay needs at least one media interface");
    }
    // Command-line values are held to the config's bounds (a year) so no timer overflows.
    let seconds = |arg: Option<u64>, configured: u64| {
        Duration::from_secs(
            arg.unwrap_or(configured)
                .min(anchorage_config::relay::MAX_SECONDS),
        )
    };
    let threads = args.num_threads.unwrap_or(config.num_threads);
    let listen_ng = args.listen_ng.unwrap_or(config.listen_ng);
    let control_allow = if args.control_allow.is_empty() {
        config.control_allow.clone()
    } else {
        args.control_allow.clone()
    };
    crate::security::check_control_exposure(listen_ng, &control_allow)?;
    let listen_rtpp = args.listen_rtpp.or(config.listen_rtpp);
    if let Some(listen) = listen_rtpp {
        if control_allow.is_empty() && !anchorage_config::is_loopback(listen.ip()) {
            bail!(
                "the rtpproxy control socket {listen} is not on loopback and no controller \
                 network is allowed: anyone who reaches it could create and delete calls' media. \
                 Set `relay.control_allow = [\"CIDR\", …]` (or --control-allow CIDR, repeatable) \
                 to the networks of the proxies that drive this relay"
            );
        }
    }
    let dtls = dtls_identity(config)?;
    Ok(Settings {
        listen_ng,
        listen_rtpp,
        control_allow,
        threads: NonZeroUsize::new(threads),
        control: ControlConfig {
            interfaces,
            timeouts: Timeouts {
                media: seconds(args.timeout, config.timeout_s),
                offer: seconds(args.offer_timeout, config.offer_timeout_s),
            },
            port_quarantine: seconds(args.delete_delay, config.delete_delay_s),
            max_sessions: args.max_sessions.unwrap_or(config.max_sessions),
            learning: EndpointLearning::Delayed,
            instance: format!("anchorage-{}", std::process::id()),
            dtls: dtls.as_ref().map(DtlsIdentity::fingerprint),
        },
        metrics: args.metrics.or(config.metrics_listen),
        tos: args.tos.or(config.tos),
        dtls,
    })
}

/// Binds real sockets for the ports the controller picks and keeps them until the media
/// worker takes them; whatever is left when a command is done is closed.
#[derive(Default)]
struct SocketBinder {
    sockets: HashMap<SocketAddr, StdUdpSocket>,
}

impl PortBinder for SocketBinder {
    fn bind(&mut self, rtp: SocketAddr, rtcp: SocketAddr) -> bool {
        let Ok(rtp_socket) = bind_udp(rtp) else {
            return false;
        };
        let Ok(rtcp_socket) = bind_udp(rtcp) else {
            return false;
        };
        self.sockets.insert(rtp, rtp_socket);
        self.sockets.insert(rtcp, rtcp_socket);
        true
    }

    fn bind_rtcp(&mut self, rtcp: SocketAddr) -> bool {
        match bind_udp(rtcp) {
            Ok(socket) => {
                self.sockets.insert(rtcp, socket);
                true
            }
            Err(_) => false,
        }
    }
}

fn clock() -> Now {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Now {
        mono: Instant::now(),
        unix_us,
    }
}

fn call_key(key: SessionKey) -> CallKey {
    CallKey(key.0)
}

/// A running relay node's state, owned by one task.
struct RelayNode {
    socket: UdpSocket,
    media: MediaWorkers,
    controller: Controller,
    cache: ReplyCache,
    metrics: Arc<Mutex<MetricsView>>,
    /// TOS of media packets when a request gives none.
    tos: Option<u8>,
    /// The control allow-list (ng and RTPProxy sockets): what it refuses gets no answer.
    gate: crate::security::ControlGate,
    /// The RTPProxy control socket, when configured.
    rtpp: Option<rtpp::RtppControl>,
}

impl RelayNode {
    async fn on_datagram(&mut self, datagram: &[u8], source: SocketAddr) {
        let now = clock();
        if !self.gate.admits(source, now.mono) {
            return;
        }
        let Some((cookie, _)) = split_cookie(datagram) else {
            return; // no cookie: rtpengine drops these silently
        };
        let Some(cookie) = Cookie::new(bytes::Bytes::copy_from_slice(cookie)) else {
            return;
        };
        match self.cache.begin(source, &cookie, now.mono) {
            Begin::Cached(reply) => {
                let _ = self.socket.send_to(&reply, source).await;
                return;
            }
            Begin::InProgress => return,
            Begin::New => {}
        }
        let reply = match decode_request(datagram) {
            Ok(incoming) => {
                let call_id = incoming.request.call_id().map(|c| c.as_str().to_owned());
                let command = incoming.request.command().as_str();
                if matches!(
                    incoming.request.kind,
                    RequestKind::Query(_) | RequestKind::Delete(_)
                ) {
                    if let Some(call_id) = &call_id {
                        self.refresh(call_id).await;
                    }
                }
                let mut binder = SocketBinder::default();
                let handled = self.controller.handle(&incoming.request, now, &mut binder);
                self.apply(handled.actions, &mut binder).await;
                if let anchorage_ng::Outcome::Error(reason) = &handled.reply.outcome {
                    tracing::warn!(call_id = call_id.as_deref().unwrap_or(""), command, %source, reason = reason.as_str(), "ng command failed");
                } else {
                    tracing::debug!(call_id = call_id.as_deref().unwrap_or(""), command, %source, "ng command");
                }
                encode_reply(&incoming.cookie, &handled.reply, incoming.encoding)
            }
            Err(error) => {
                tracing::warn!(%source, error = %error, "undecodable ng request");
                match error.error_reply() {
                    Some(reply) => reply,
                    None => {
                        self.cache.abandon(source, &cookie);
                        return;
                    }
                }
            }
        };
        self.cache
            .complete(source, &cookie, reply.clone(), Instant::now());
        if let Err(e) = self.socket.send_to(&reply, source).await {
            tracing::warn!(%source, error = %e, "cannot send ng reply");
        }
    }

    /// Reads the current counters of a call's dialogs from the workers.
    async fn refresh(&mut self, call_id: &str) {
        for key in self.controller.sessions_of(call_id) {
            let Ok(answer) = self.media.snapshot(call_key(key)) else {
                continue;
            };
            if let Ok(Some(pairs)) = answer.await {
                self.controller.observe(key, pairs);
            }
        }
    }

    /// Carries out what the controller decided, in order.
    async fn apply(&mut self, actions: Vec<MediaAction>, binder: &mut SocketBinder) {
        for action in actions {
            match action {
                // Adds, extensions and updates are not waited for: the worker applies its
                // commands in order, the sockets are already bound (a bind failure was met
                // while choosing ports), so the reply need not wait for the worker's
                // acknowledgement; a refusal is still logged.
                MediaAction::Add { key, pairs, tos } => {
                    match bind_all(pairs, binder, tos.or(self.tos)) {
                        Ok(media) => report(self.media.add_call(call_key(key), media)),
                        Err(e) => tracing::error!(error = %e, "cannot bind a media socket"),
                    }
                }
                MediaAction::Extend { key, pairs, tos } => {
                    match bind_all(pairs, binder, tos.or(self.tos)) {
                        Ok(media) => report(self.media.extend_call(call_key(key), media)),
                        Err(e) => tracing::error!(error = %e, "cannot bind a media socket"),
                    }
                }
                MediaAction::Update {
                    key,
                    media,
                    side,
                    remote,
                    rtcp_mux,
                    flags,
                } => report(self.media.update_leg(
                    call_key(key),
                    media,
                    side,
                    remote,
                    rtcp_mux,
                    flags,
                )),
                // An RTCP socket opened again (bound by the binder in this command, before the
                // update that ends the leg's rtcp-mux) or closed under rtcp-mux.
                MediaAction::Rtcp {
                    key,
                    media,
                    side,
                    local,
                    open,
                } => {
                    let socket = if open {
                        match binder
                            .sockets
                            .remove(&local)
                            .map_or_else(|| bind_udp(local).map_err(|e| e.to_string()), Ok)
                        {
                            Ok(socket) => Some(socket),
                            Err(error) => {
                                tracing::error!(%local, %error, "cannot open an RTCP socket again");
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    report(
                        self.media
                            .set_rtcp_socket(call_key(key), media, side, socket),
                    );
                }
                // A removal is waited for: its ports may be handed out again as soon as the
                // next command, and their sockets must be closed by then.
                MediaAction::Remove { key } => {
                    if let Err(error) = match self.media.remove_call(call_key(key)) {
                        Ok(answer) => answer.await.map(|_| ()).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    } {
                        tracing::error!(%error, "media worker refused a command");
                    }
                }
            }
        }
        binder.sockets.clear();
    }

    /// Once a second: media activity, timeouts, cache expiry, metrics.
    async fn housekeeping(&mut self) {
        let mut forwarded = ForwardTotals::default();
        let mut media_sockets = 0;
        for index in 0..self.media.threads() {
            let Ok(answer) = self.media.activity(index) else {
                continue;
            };
            let Ok(activity) = answer.await else {
                continue;
            };
            for (key, last) in activity.calls {
                self.controller.observe_activity(SessionKey(key.0), last);
            }
            media_sockets += activity.sockets;
            forwarded.packets += activity.totals.packets;
            forwarded.bytes += activity.totals.bytes;
            forwarded.dropped += activity.totals.dropped;
            forwarded.send_errors += activity.totals.send_errors;
            forwarded.srtp.add(&activity.totals.srtp);
            forwarded.dtls.add(&activity.totals.dtls);
            forwarded.srtp_by_kind.add(&activity.totals.srtp_by_kind);
        }
        let now = Instant::now();
        for expired in self.controller.expire(now) {
            tracing::info!(call_id = expired.call_id.as_str(), reason = ?expired.reason, "relay session ended");
            if let Ok(answer) = self.media.remove_call(call_key(expired.key)) {
                let _ = answer.await;
            }
        }
        self.cache.handle_timeout(now);
        if let Some(rtpp) = self.rtpp.as_mut() {
            rtpp.cache.handle_timeout(now);
        }
        if let Ok(mut view) = self.metrics.lock() {
            *view = MetricsView {
                calls: self.controller.call_count(),
                sessions: self.controller.session_count(),
                statistics: self.controller.statistics(),
                ports: self.controller.port_usage(),
                forwarded,
                media_sockets,
                control_refused: self.gate.refused().clone(),
            };
        }
    }
}

fn bind_all(
    pairs: Vec<anchorage_relay::MediaPair>,
    binder: &mut SocketBinder,
    tos: Option<u8>,
) -> Result<Vec<BoundMedia>, anchorage_net::media::MediaError> {
    if let Some(tos) = tos {
        for (local, socket) in &binder.sockets {
            if let Err(e) = set_tos(socket, *local, tos) {
                tracing::warn!(%local, tos, error = %e, "cannot set the TOS of a media socket");
            }
        }
    }
    pairs
        .into_iter()
        .map(|pair| BoundMedia::with_sockets(pair, &mut binder.sockets))
        .collect()
}

/// Marks the packets a media socket sends: IP TOS on IPv4, the traffic class on IPv6.
fn set_tos(socket: &StdUdpSocket, local: SocketAddr, tos: u8) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    if local.is_ipv4() {
        socket.set_tos_v4(u32::from(tos))
    } else {
        socket.set_tclass_v6(u32::from(tos))
    }
}

/// Logs a media worker's refusal of a command, without holding up the control plane.
fn report(
    sent: Result<
        tokio::sync::oneshot::Receiver<Result<(), anchorage_net::media::MediaError>>,
        anchorage_net::media::MediaError,
    >,
) {
    match sent {
        Ok(answer) => {
            tokio::spawn(async move {
                match answer.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::error!(%error, "media worker refused a command"),
                    Err(_) => tracing::error!("media worker stopped"),
                }
            });
        }
        Err(error) => tracing::error!(%error, "media worker refused a command"),
    }
}

/// Starts a relay node in the background; returns the bound ng address.
pub async fn spawn(settings: Settings) -> anyhow::Result<SocketAddr> {
    Ok(spawn_with_rtpp(settings).await?.0)
}

/// Receives on the RTPProxy socket if there is one; never completes otherwise.
async fn recv_optional(
    control: Option<&rtpp::RtppControl>,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match control {
        Some(control) => control.socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

/// Starts a relay node in the background; returns the bound ng address and the bound
/// RTPProxy control address (when `listen_rtpp` is set).
pub async fn spawn_with_rtpp(
    settings: Settings,
) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    let rtpp = match settings.listen_rtpp {
        Some(listen) => {
            let socket = anchorage_sip_transport::bind_udp(listen)
                .with_context(|| format!("cannot bind the rtpproxy control socket {listen}"))?;
            Some(rtpp::RtppControl {
                socket,
                cache: ReplyCache::new(ReplyCacheConfig::default()),
                ttl_s: settings.control.timeouts.media.as_secs(),
            })
        }
        None => None,
    };
    let rtpp_bound = match &rtpp {
        Some(control) => Some(control.socket.local_addr()?),
        None => None,
    };
    let socket = anchorage_sip_transport::bind_udp(settings.listen_ng)
        .with_context(|| format!("cannot bind the ng socket {}", settings.listen_ng))?;
    let bound = socket.local_addr()?;
    let media = MediaWorkers::start_with_dtls(settings.threads, settings.dtls.clone())
        .context("cannot start media workers")?;
    if let Some(identity) = &settings.dtls {
        tracing::info!(fingerprint = %identity.fingerprint().sdp_value(), "relay DTLS certificate");
    }
    let controller = Controller::new(
        settings.control.clone(),
        &mut <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng(),
        clock(),
    )
    .context("relay configuration")?;
    let metrics = Arc::new(Mutex::new(MetricsView::default()));
    if let Some(listen) = settings.metrics {
        let bound_metrics = serve_metrics(listen, metrics.clone()).await?;
        tracing::info!(metrics = %bound_metrics, "relay metrics");
    }
    for iface in &settings.control.interfaces {
        tracing::info!(ng = %bound, interface = %iface, "relay listening");
    }
    if !settings.control_allow.is_empty() {
        let allow: Vec<String> = settings
            .control_allow
            .iter()
            .map(|n| n.to_string())
            .collect();
        tracing::info!(ng = %bound, allow = allow.join(" "), "ng commands accepted only from relay.control_allow");
    }
    if let Some(rtpp) = rtpp_bound {
        tracing::info!(rtpproxy = %rtpp, "relay answering the RTPProxy control protocol");
    }
    let mut node = RelayNode {
        socket,
        media,
        controller,
        cache: ReplyCache::new(ReplyCacheConfig::default()),
        metrics,
        tos: settings.tos,
        gate: crate::security::ControlGate::new(settings.control_allow.clone()),
        rtpp,
    };
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        let mut rtpp_buffer = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = node.socket.recv_from(&mut buffer) => match received {
                    Ok((len, source)) => {
                        let datagram = buffer.get(..len).unwrap_or_default().to_vec();
                        node.on_datagram(&datagram, source).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "ng socket receive failed"),
                },
                received = recv_optional(node.rtpp.as_ref(), &mut rtpp_buffer) => match received {
                    Ok((len, source)) => {
                        let datagram = rtpp_buffer.get(..len).unwrap_or_default().to_vec();
                        node.on_rtpp(&datagram, source).await;
                    }
                    Err(e) => tracing::warn!(error = %e, "rtpproxy socket receive failed"),
                },
                _ = tick.tick() => node.housekeeping().await,
            }
        }
    });
    Ok((bound, rtpp_bound))
}

/// Runs a relay node until Ctrl-C or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crate::memory::spawn_trim();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let (ng, rtpp) = spawn_with_rtpp(settings).await?;
    println!("anchorage relay: ng on udp:{ng}");
    if let Some(rtpp) = rtpp {
        println!("anchorage relay: rtpproxy on udp:{rtpp}");
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

// ---- /metrics ------------------------------------------------------------------------------
