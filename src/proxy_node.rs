//! `anchorage proxy`: runs the sans-IO proxy core ([`anchorage_proxy::node::Proxy`]) on the
//! tokio SIP transports. One task owns the core; received messages and timers drive it, and
//! what it wants sent goes to the transports without waiting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anchorage_config::Config;
use anchorage_proxy::node::{
    CallRecord as CoreRecord, CoreConfig, Datagram, Listener, Now, OrphanChange, Output, Proxy,
};
use anchorage_sip_transport::{Limits, ListenerSpec, Outbound, Transport, Transports};
use anyhow::{bail, Context};
use tokio::sync::mpsc;

use crate::cluster::{ClusterState, VipWatch};
use crate::ng_link::{NgInput, NgLinks};
use crate::takeover::{
    claim_call, claim_own_calls, drain_again, import_records, take_role, take_role_if, Takeover,
    MAX_ENDED_IN_TAKEOVER,
};

/// A `--listen` value: `udp:IP:PORT` or `tcp:IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenArg {
    /// Transport.
    pub transport: Transport,
    /// Address.
    pub address: SocketAddr,
}

impl std::str::FromStr for ListenArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (proto, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected udp:IP:PORT or tcp:IP:PORT"))?;
        let transport = match proto.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => return Err(format!("{s:?}: unknown transport {other:?} (udp or tcp)")),
        };
        let address = addr
            .parse()
            .map_err(|e| format!("{s:?}: bad address {addr:?}: {e}"))?;
        Ok(ListenArg { transport, address })
    }
}

/// Runs a proxy node until Ctrl-C or SIGTERM; with `api`, also the management server.
pub async fn run(
    config: Config,
    listen: &[ListenArg],
    api: Option<SocketAddr>,
) -> anyhow::Result<()> {
    // Before anything is bound: an API open to strangers is refused (issue 18).
    if let Some(listen) = api.or(config.api.listen) {
        crate::security::check_api_exposure(listen, &config.api)?;
    }
    crate::memory::spawn_trim();
    let p = &config.proxy;
    let mut specs = Vec::new();
    let mut advertise = Vec::new();
    if listen.is_empty() {
        for l in &p.listen {
            let transport = match l.transport {
                anchorage_config::proxy::Transport::Udp => Transport::Udp,
                anchorage_config::proxy::Transport::Tcp => Transport::Tcp,
            };
            specs.push(ListenerSpec {
                transport,
                address: l.address,
            });
            advertise.push(l.advertise.clone());
        }
    } else {
        for l in listen {
            specs.push(ListenerSpec {
                transport: l.transport,
                address: l.address,
            });
            advertise.push(None);
        }
    }
    let limits = Limits {
        max_connections: p.tcp.max_connections,
        idle_timeout: Duration::from_secs(p.tcp.idle_timeout_s),
        max_message_bytes: p.tcp.max_message_bytes,
        max_connections_per_source: p.tcp.max_connections_per_source,
        message_timeout: Duration::from_secs(p.tcp.message_timeout_s),
    };
    let (inbound_tx, mut inbound) = mpsc::channel(8192);
    let transports = Transports::bind(&specs, limits, inbound_tx)
        .await
        .context("starting the SIP listeners")?;
    let mut listeners = Vec::new();
    for ((transport, local), adv) in transports.local_addrs().iter().zip(&advertise) {
        let (host, port) = match adv {
            Some(a) => split_host_port(a, local.port()),
            None => (ip_host(local), local.port()),
        };
        if local.ip().is_unspecified() && adv.is_none() {
            bail!(
                "listener {local} binds a wildcard address: give it an `advertise` address so \
                 Via and Record-Route name a reachable one"
            );
        }
        listeners.push(Listener {
            transport: *transport,
            local: *local,
            advertise_host: host,
            advertise_port: port,
        });
        println!(
            "anchorage proxy: SIP {} on {local}",
            transport.via_token().to_ascii_lowercase()
        );
    }
    // Where other nodes of an active-active cluster forward this node's calls' messages.
    let forward_to = listeners
        .iter()
        .find(|l| l.transport == Transport::Udp)
        .and_then(|l| {
            let ip = l.advertise_host.trim_matches(['[', ']']).parse().ok()?;
            Some(std::net::SocketAddr::new(ip, l.advertise_port))
        });
    let core_config = CoreConfig::from_config(&config, listeners);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    for set in &p.relay_set {
        for node in &set.nodes {
            if let Some(engine) = node.engine() {
                println!(
                    "anchorage proxy: relay {} (set {}) at {} {}",
                    node.name,
                    set.name,
                    engine.name(),
                    engine.address()
                );
            }
        }
    }
    let mut proxy = Proxy::new(core_config, seed, clock_now());
    let store = anchorage_store::Store::open(&config.cluster, &config.node.id)
        .await
        .context("opening the call store ([cluster] store)")?;
    let node_id = config.node.id.clone();
    let cluster = std::sync::Arc::new(ClusterState::new(&node_id, &config.cluster));
    let mut vip = VipWatch::new(cluster.clone());
    if store.status().backend != "memory" {
        // Calls outlive this process: every change goes to the store. A single node takes
        // back the calls it held before a restart now; in a VIP cluster the node that holds
        // the address claims them all (below, when it sees the address).
        proxy.enable_call_records();
        if cluster.is_active() {
            claim_own_calls(&mut proxy, &store, &node_id).await;
            match store.drained().await {
                Ok(relays) => drain_again(&mut proxy, &relays),
                Err(error) => {
                    tracing::warn!(%error, "could not read which relays are drained")
                }
            }
        }
    }
    // What the store gives a node taking over: calls (one batch per node), then the relays
    // drained cluster-wide.
    let (claimed_tx, mut claimed) = mpsc::unbounded_channel::<Takeover>();
    // Active-active: the other nodes' addresses, and the calls found to be another live
    // node's (their messages go there).
    let active_active = config.cluster.mode == anchorage_config::ClusterMode::ActiveActive;
    let view = crate::active_active::View::default();
    let (news_tx, mut news) = mpsc::unbounded_channel::<crate::active_active::News>();
    let (owned_tx, mut owned) = mpsc::unbounded_channel::<(String, std::net::SocketAddr)>();
    if active_active {
        if let Some(sip) = forward_to {
            store.set_sip_address(sip);
        }
        tokio::spawn(crate::active_active::watch(
            store.clone(),
            view.clone(),
            node_id.clone(),
            Duration::from_millis(config.cluster.heartbeat_ms),
            news_tx,
            claimed_tx.clone(),
        ));
    }
    // Calls ended while a takeover's batches are on their way.
    let mut ended_in_takeover: std::collections::HashSet<String> = Default::default();
    let resolver =
        std::sync::Arc::new(crate::resolve::resolver(&p.dns.servers).context("setting up DNS")?);
    let (resolved_tx, mut resolved) = mpsc::unbounded_channel();
    // Durable writes the core waits for (a move's record before its re-INVITEs): one per
    // move in flight at most, bounded by `[proxy.reanchor] max_in_flight`.
    let (saved_tx, mut saved) = mpsc::unbounded_channel::<String>();
    // Records read for messages about calls not held here: one per parked call at most,
    // bounded by the core's parking.
    let (loaded_tx, mut loaded) = mpsc::unbounded_channel::<(String, Option<CoreRecord>)>();
    let (query_tx, mut queries) = mpsc::channel(64);
    // One socket connected to each relay node: replies, and the refusals of a dead one.
    let (ng_links, mut ng_inputs) = NgLinks::connect(p.relay_set.iter().flat_map(|s| {
        s.nodes
            .iter()
            .filter_map(|n| n.engine().map(|e| e.address()))
    }))
    .context("connecting the ng sockets")?;
    if let Some(listen) = api.or(config.api.listen) {
        let bound = crate::api::serve(
            listen,
            query_tx,
            &config.api,
            store.clone(),
            cluster.clone(),
        )
        .await
        .with_context(|| format!("starting the management server on {listen}"))?;
        println!("anchorage proxy: management API and /metrics on http://{bound}");
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tracing::info!(node = %config.node.id, "proxy started");
    let vip_mode = config.cluster.mode == anchorage_config::ClusterMode::Vip;
    let mut vip_ticks = tokio::time::interval(crate::cluster::CHECK_EVERY);
    vip_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = proxy.poll_timeout();
        tokio::select! {
            _ = vip_ticks.tick(), if vip_mode => {
                take_role(&mut vip, &mut proxy, &store, &claimed_tx);
            }
            Some(takeover) = claimed.recv() => match takeover {
                // A claim that ends after the address left again is not taken: the node
                // that has it now claims those calls in its turn.
                _ if !cluster.is_active() => {}
                Takeover::Calls(records) => {
                    // A call that ended here since the takeover began (its message brought
                    // it here first) is not brought back by the batch's older record.
                    let records = records
                        .into_iter()
                        .filter(|r| !ended_in_takeover.contains(&r.call_id))
                        .collect();
                    import_records(&mut proxy, records);
                }
                Takeover::Orphans(orphans) => {
                    proxy.adopt_orphans(orphans, Instant::now());
                }
                Takeover::Drained(relays) => {
                    drain_again(&mut proxy, &relays);
                    // The last message of a takeover.
                    cluster.takeover_done();
                    ended_in_takeover.clear();
                }
            },
            () = store.fenced() => {
                let calls = store.take_fenced();
                let released = proxy.release_calls(&calls, Instant::now());
                cluster.count_released(released);
            }
            message = inbound.recv() => {
                let Some(first) = message else { break };
                // A node back from a freeze learns whether it still holds the address first;
                // a passive node that gets a message has just got the address.
                let passive = !vip.state().is_active();
                take_role_if(&mut vip, &mut proxy, &store, &claimed_tx, passive);
                // Until the takeover's claims are in, a new INVITE is looked up first (it may
                // be the dead node's INVITE, retransmitted).
                proxy.set_taking_over(cluster.takeover_running());
                let now = Instant::now();
                // How far behind the proxy is: new calls are shed while it is too far.
                proxy.set_input_delay(now.saturating_duration_since(first.received));
                proxy.handle_datagram(datagram(first), now);
                // Take what else is queued before sending, to batch under load.
                for _ in 0..256 {
                    match inbound.try_recv() {
                        Ok(m) => proxy.handle_datagram(datagram(m), now),
                        Err(_) => break,
                    }
                }
            }
            _ = sleep_until(wake) => {
                take_role(&mut vip, &mut proxy, &store, &claimed_tx);
                // Evidence first: relay replies already received are taken before a silence
                // window can run out, so a busy proxy never declares a living relay dead.
                let now = Instant::now();
                while let Ok(input) = ng_inputs.try_recv() {
                    ng_input(&mut proxy, input, now);
                }
                ng_links.take_ready(|input| ng_input(&mut proxy, input, now));
                proxy.handle_clock(clock_now());
                proxy.handle_timeout(now);
            }
            Some((id, result)) = resolved.recv() => proxy.handle_resolved(id, result, Instant::now()),
            Some(call_id) = saved.recv() => proxy.handle_saved(&call_id, Instant::now()),
            Some((call_id, record)) = loaded.recv() => proxy.handle_loaded(&call_id, record, Instant::now()),
            Some((call_id, owner)) = owned.recv() => proxy.handle_owned_elsewhere(&call_id, owner, Instant::now()),
            Some(news) = news.recv() => crate::active_active::apply_news(&mut proxy, &view, news),
            Some(query) = queries.recv() => answer(&mut proxy, &transports, &store, query),
            Some(input) = ng_inputs.recv() => {
                take_role(&mut vip, &mut proxy, &store, &claimed_tx);
                let now = Instant::now();
                ng_input(&mut proxy, input, now);
                for _ in 0..256 {
                    match ng_inputs.try_recv() {
                        Ok(input) => ng_input(&mut proxy, input, now),
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
        while let Some(output) = proxy.poll_output() {
            match output {
                Output::Ng { relay, datagram } => match ng_links.send(relay, &datagram) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        proxy.handle_relay_refused(relay, Instant::now());
                    }
                    Err(e) => tracing::warn!(%relay, error = %e, "ng send failed"),
                },
                Output::Resolve(query) => {
                    let resolver = resolver.clone();
                    let done = resolved_tx.clone();
                    tokio::spawn(async move {
                        let result = crate::resolve::resolve(&resolver, &query).await;
                        let _ = done.send((query.id, result));
                    });
                }
                Output::CallChanged(record) => {
                    match crate::call_records::to_store(&record, &node_id, unix_ms()) {
                        Ok(r) => store.put(r),
                        Err(e) => {
                            tracing::warn!(call_id = %record.call_id, error = %e, "call record not written")
                        }
                    }
                }
                Output::CallEnded(call_id) => {
                    if cluster.takeover_running() && ended_in_takeover.len() < MAX_ENDED_IN_TAKEOVER
                    {
                        ended_in_takeover.insert(call_id.clone());
                    }
                    store.delete(&call_id)
                }
                Output::SaveDurable(record) => {
                    let call_id = record.call_id.clone();
                    match crate::call_records::to_store(&record, &node_id, unix_ms()) {
                        Ok(r) => {
                            let (store, done) = (store.clone(), saved_tx.clone());
                            tokio::spawn(async move {
                                match store.put_durable(r).await {
                                    Ok(()) => {}
                                    // Another node owns the call: nothing more is sent for it
                                    // here (it is released through the store's fenced calls).
                                    Err(anchorage_store::StoreError::Fenced { .. }) => return,
                                    Err(e) => {
                                        tracing::warn!(%call_id, error = %e, "a move's record could not be saved: it goes on from memory")
                                    }
                                }
                                let _ = done.send(call_id);
                            });
                        }
                        Err(e) => {
                            tracing::warn!(%call_id, error = %e, "call record not written");
                            let _ = saved_tx.send(call_id);
                        }
                    }
                }
                Output::Orphan(change) => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let result = match &change {
                            OrphanChange::Added { relay, call_id } => {
                                store.add_orphan(relay, call_id).await
                            }
                            OrphanChange::Cleared { relay } => store.clear_orphans(relay).await,
                        };
                        if let Err(error) = result {
                            tracing::warn!(?change, %error, "a relay session to delete not written to the store");
                        }
                    });
                }
                Output::LoadCall(call_id) => {
                    let (store, done) = (store.clone(), loaded_tx.clone());
                    if !cluster.is_active() {
                        // A passive node takes no call: the message goes on from what it has.
                        let _ = done.send((call_id, None));
                        continue;
                    }
                    if active_active {
                        let (view, me, owned) = (view.clone(), node_id.clone(), owned_tx.clone());
                        tokio::spawn(async move {
                            match crate::active_active::locate(&store, &view, &me, &call_id).await {
                                crate::active_active::Located::Here(record) => {
                                    let _ = done.send((call_id, record.map(|r| *r)));
                                }
                                crate::active_active::Located::Owner(sip) => {
                                    let _ = owned.send((call_id, sip));
                                }
                            }
                        });
                        continue;
                    }
                    tokio::spawn(async move {
                        let record = claim_call(&store, &call_id).await;
                        let _ = done.send((call_id, record));
                    });
                }
                Output::Sip(t) => {
                    let out = Outbound {
                        data: t.data,
                        destination: t.destination,
                        transport: t.transport,
                        local: t.local,
                    };
                    if let Err(e) = transports.send(out) {
                        tracing::warn!(error = %e, "send failed");
                    }
                }
            }
        }
    }
    // What changed within the last write delay goes to the store before the process ends.
    proxy.flush_records();
    while let Some(output) = proxy.poll_output() {
        match output {
            Output::CallChanged(record) => {
                if let Ok(r) = crate::call_records::to_store(&record, &node_id, unix_ms()) {
                    store.put(r);
                }
            }
            Output::CallEnded(call_id) => store.delete(&call_id),
            _ => {}
        }
    }
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), store.flush())
        .await
        .unwrap_or(Ok(()))
    {
        tracing::warn!(error = %e, "the store could not take the last changes before the stop");
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// The wall clock in UNIX milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Both clocks, read together.
fn clock_now() -> Now {
    let unix_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Now {
        mono: Instant::now(),
        unix_us,
    }
}

/// Answers a management query from the core's state.
fn answer(
    proxy: &mut Proxy,
    transports: &Transports,
    store: &anchorage_store::Store,
    query: crate::api::Query,
) {
    use crate::api::{ProxySnapshot, Query};
    let now = Instant::now();
    match query {
        Query::Calls(reply) => {
            let _ = reply.send(
                proxy
                    .dialogs()
                    .iter()
                    .map(|d| view(proxy, d, now))
                    .collect(),
            );
        }
        Query::Call(call_id, reply) => {
            let _ = reply.send(
                proxy
                    .dialogs()
                    .by_call_id(&call_id)
                    .map(|d| view(proxy, d, now))
                    .collect(),
            );
        }
        Query::Metrics(reply) => {
            let (server_transactions, client_transactions) = proxy.transaction_count();
            let stats = transports.stats();
            let _ = reply.send(ProxySnapshot {
                counters: proxy.counters().clone(),
                server_transactions,
                client_transactions,
                dialogs: proxy.dialogs().len(),
                tcp_connections: transports.open_connections(),
                tcp_refused: stats
                    .connections_refused
                    .load(std::sync::atomic::Ordering::Relaxed),
                tcp_refused_per_source: stats
                    .connections_refused_per_source
                    .load(std::sync::atomic::Ordering::Relaxed),
                tcp_message_timeouts: stats
                    .message_timeouts
                    .load(std::sync::atomic::Ordering::Relaxed),
                sent: stats.sent.load(std::sync::atomic::Ordering::Relaxed),
                send_errors: stats.send_errors.load(std::sync::atomic::Ordering::Relaxed),
                udp_send_deferred: stats
                    .udp_send_deferred
                    .load(std::sync::atomic::Ordering::Relaxed),
                relays: relay_views(proxy),
                reanchor: proxy.reanchor_metrics(),
                waiting_calls: proxy.waiting_calls(),
                parked_messages: proxy.parked_messages(),
            });
        }
        Query::Command(command, reply) => {
            let drained = match &command {
                crate::api::Command::Drain(node) => Some((node.clone(), true)),
                crate::api::Command::Undrain(node) => Some((node.clone(), false)),
                _ => None,
            };
            let result = command_result(proxy, command, now);
            if let (Some((relay, drained)), Ok(_)) = (drained, &result) {
                // Every node sharing the store keeps it drained (or not).
                let store = store.clone();
                tokio::spawn(async move {
                    if let Err(error) = store.set_drained(&relay, drained).await {
                        tracing::warn!(%relay, %error, "the store could not record the relay's drain state");
                    }
                });
            }
            let _ = reply.send(result);
        }
        Query::Relays(reply) => {
            let _ = reply.send(relay_views(proxy));
        }
        Query::PendingRecords(reply) => {
            let _ = reply.send(proxy.records_pending());
        }
    }
}

/// Executes a management command on the core.
fn command_result(
    proxy: &mut Proxy,
    command: crate::api::Command,
    now: Instant,
) -> crate::api::CommandResult {
    use crate::api::{job_json, Command};
    use anchorage_proxy::reanchor::{CommandError, JobId, MoveTarget, Trigger};
    let job = |proxy: &Proxy, id: JobId| {
        proxy
            .job(id)
            .map(|j| job_json(&j, now, proxy.unix_us_at(j.started)))
            .ok_or((404, format!("no job {id}")))
    };
    match command {
        Command::Reanchor {
            engine,
            node,
            set,
            call_id,
            new_set,
            new_node,
            caller,
            callee,
        } => {
            let id = proxy
                .start_reanchor(
                    Trigger::Api,
                    node.as_deref(),
                    set.as_deref(),
                    call_id.as_deref(),
                    MoveTarget {
                        set: new_set,
                        node: new_node,
                        engine,
                        caller,
                        callee,
                    },
                    now,
                )
                .map_err(|e| {
                    // The call is the resource asked for; an unknown node or set is a bad
                    // parameter of the request.
                    let status = match e {
                        CommandError::UnknownCall(_) => 404,
                        CommandError::UnknownNode(_)
                        | CommandError::UnknownSet(_)
                        | CommandError::WrongEngine { .. } => 400,
                    };
                    (status, e.to_string())
                })?;
            job(proxy, id)
        }
        Command::Drain(node) => {
            let id = proxy
                .drain_relay(&node, now)
                .map_err(|e| (404, e.to_string()))?;
            job(proxy, id)
        }
        Command::Undrain(node) => {
            proxy
                .undrain_relay(&node, now)
                .map_err(|e| (404, e.to_string()))?;
            Ok(serde_json::json!({ "relay": node, "draining": false }))
        }
        Command::Rebalance(set) => {
            let id = proxy
                .rebalance(&set, now)
                .map_err(|e| (404, e.to_string()))?;
            job(proxy, id)
        }
        Command::Job(id) => job(proxy, JobId(id)),
        Command::Jobs => Ok(serde_json::json!({
            "jobs": proxy.jobs().iter().map(|j| job_json(j, now, proxy.unix_us_at(j.started))).collect::<Vec<_>>()
        })),
        Command::FloodBlocked => {
            let blocked: Vec<_> = proxy
                .flood_blocked(now)
                .into_iter()
                .map(|(ip, left)| {
                    serde_json::json!({ "source": ip.to_string(), "remaining_s": left.as_secs_f64() })
                })
                .collect();
            Ok(serde_json::json!({ "enabled": proxy.flood_enabled(), "blocked": blocked }))
        }
        Command::FloodUnblock(ip) => {
            if proxy.flood_unblock(ip, now) {
                tracing::info!(source = %ip, "rate limit block ended by the API");
                Ok(serde_json::json!({ "source": ip.to_string(), "blocked": false }))
            } else {
                Err((404, format!("{ip} is not blocked")))
            }
        }
    }
}

/// Hands the core what a relay's socket brought.
fn ng_input(proxy: &mut Proxy, input: NgInput, now: Instant) {
    match input {
        NgInput::Datagram(relay, data) => proxy.handle_ng_datagram(relay, &data, now),
        NgInput::Refused(relay) => proxy.handle_relay_refused(relay, now),
    }
}

/// The relay nodes, as the API shows them.
fn relay_views(proxy: &Proxy) -> Vec<crate::api::RelayView> {
    use anchorage_proxy::media::DownReason;
    let health = proxy.relay_health();
    proxy
        .relays()
        .nodes()
        .iter()
        .map(|n| crate::api::RelayView {
            down_reason: n.down_reason.map(DownReason::as_str),
            down_silent_ms: match n.down_reason {
                Some(DownReason::TimedOut { silent }) => Some(silent.as_millis() as u64),
                _ => None,
            },
            rtt_ms: n.rtt().map(|r| r.as_secs_f64() * 1000.0),
            window_ms: n.window(&health).as_millis() as u64,
            pending: n.pending(),
            name: n.name.clone(),
            ng: n.address.to_string(),
            engine: n.engine_name(),
            weight: n.weight,
            calls: n.calls,
            reported_sessions: n.reported.map(|(sessions, _)| sessions),
            load: n.load(),
            state: if n.up { "up" } else { "down" },
            draining: n.draining,
            state_age_s: Instant::now()
                .saturating_duration_since(n.changed_at)
                .as_secs(),
        })
        .collect()
}

/// A dialog with its media anchoring, as the API shows it.
fn view(proxy: &Proxy, d: &anchorage_proxy::dialog::Dialog, now: Instant) -> crate::api::CallView {
    let mut v = crate::api::CallView::of(d, now);
    v.media = proxy
        .anchored_call(&d.id.call_id)
        .map(crate::api::MediaView::of);
    if let Some(media) = v.media.as_mut() {
        media.waiting_for_relay_s = proxy
            .waiting_since(&d.id.call_id)
            .map(|since| now.saturating_duration_since(since).as_secs());
    }
    v
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn datagram(m: anchorage_sip_transport::Inbound) -> Datagram {
    Datagram {
        data: m.data,
        source: m.source,
        local: m.local,
        transport: m.transport,
    }
}

fn ip_host(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// `host` or `host:port` (IPv6 in brackets) from an `advertise` value.
fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return (ip_host(&addr), addr.port());
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return (ip_host(&SocketAddr::new(ip, default_port)), default_port);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h.to_string(), port),
            Err(_) => (s.to_string(), default_port),
        },
        _ => (s.to_string(), default_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_arg_parses_and_names_errors() {
        let a: ListenArg = "udp:127.0.0.1:5070".parse().unwrap();
        assert_eq!(a.transport, Transport::Udp);
        assert_eq!(a.address.to_string(), "127.0.0.1:5070");
        let b: ListenArg = "TCP:[::1]:5060".parse().unwrap();
        assert_eq!(b.address.to_string(), "[::1]:5060");
        assert_eq!(
            "sctp:127.0.0.1:1".parse::<ListenArg>().unwrap_err(),
            "\"sctp:127.0.0.1:1\": unknown transport \"sctp\" (udp or tcp)"
        );
        assert!("udp:nowhere".parse::<ListenArg>().is_err());
    }

    #[test]
    fn advertise_values() {
        assert_eq!(
            split_host_port("203.0.113.5", 5060),
            ("203.0.113.5".into(), 5060)
        );
        assert_eq!(
            split_host_port("203.0.113.5:5080", 5060),
            ("203.0.113.5".into(), 5080)
        );
        assert_eq!(
            split_host_port("sip.example.com", 5062),
            ("sip.example.com".into(), 5062)
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5061", 5060),
            ("[2001:db8::1]".into(), 5061)
        );
    }
}
