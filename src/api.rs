//! The management HTTP server (axum): `/metrics` in Prometheus text format and the JSON API
//! under `/v1` (see `docs/api.md`). Errors are JSON objects with an `error` message.
//!
//! The server never touches the proxy core: it sends a [`Query`] to the task that owns the core
//! and waits for the answer, so the core stays single-owner and lock-free.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anchorage_proxy::dialog::{Dialog, DialogState, Leg};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

mod cluster;
mod metrics;

pub use metrics::{encode_counters, encode_gauges, metrics_page, metrics_response, ProxySnapshot};

/// A question for the task that owns the proxy core.
// One value per API request, moved once through a channel: boxing the large variant would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Query {
    /// Every call (dialog).
    Calls(oneshot::Sender<Vec<CallView>>),
    /// The dialogs of one Call-ID.
    Call(String, oneshot::Sender<Vec<CallView>>),
    /// Numbers for `/metrics`.
    Metrics(oneshot::Sender<ProxySnapshot>),
    /// The relay nodes.
    Relays(oneshot::Sender<Vec<RelayView>>),
    /// Calls whose latest changes the proxy has not handed to the store yet (its write delay).
    PendingRecords(oneshot::Sender<usize>),
    /// A command that changes state (re-anchoring, drain, ...) or reads jobs.
    Command(Command, oneshot::Sender<CommandResult>),
}

/// A management command the proxy task executes.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // see `Query`
pub enum Command {
    /// `POST /v1/reanchor` or `/v1/calls/{id}/reanchor`.
    Reanchor {
        /// Only nodes of this engine: with `call_id`, the engine the call moves to; else
        /// which calls move, and where to.
        engine: Option<anchorage_proxy::media::EngineKind>,
        /// Only calls on this node.
        node: Option<String>,
        /// Only calls of this set.
        set: Option<String>,
        /// Only this call.
        call_id: Option<String>,
        /// Move to this set.
        new_set: Option<String>,
        /// Move to this node.
        new_node: Option<String>,
        /// New options for the caller's leg (one call only).
        caller: anchorage_proxy::reanchor::LegOptions,
        /// New options for the callee's leg (one call only).
        callee: anchorage_proxy::reanchor::LegOptions,
    },
    /// `POST /v1/relays/{node}/drain`.
    Drain(String),
    /// `POST /v1/relays/{node}/undrain`.
    Undrain(String),
    /// `POST /v1/rebalance`.
    Rebalance(String),
    /// `GET /v1/jobs/{id}`.
    Job(u64),
    /// `GET /v1/jobs`.
    Jobs,
    /// `GET /v1/flood`: the sources `[proxy.flood]` blocks.
    FloodBlocked,
    /// `POST /v1/flood/{ip}/unblock`.
    FloodUnblock(std::net::IpAddr),
}

/// A command's JSON answer, or an HTTP status with a message.
pub type CommandResult = Result<serde_json::Value, (u16, String)>;

/// A re-anchoring job as the API shows it.
/// `started_unix_us` is the job's start on the wall clock (the core's `unix_us_at`).
pub fn job_json(
    job: &anchorage_proxy::reanchor::JobStatus,
    now: Instant,
    started_unix_us: i64,
) -> serde_json::Value {
    let elapsed = job
        .finished
        .unwrap_or(now)
        .saturating_duration_since(job.started)
        .as_secs_f64();
    serde_json::json!({
        "id": job.id.0,
        "trigger": job.trigger.as_str(),
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "waiting": job.waiting,
        "in_flight": job.in_flight,
        "finished": job.finished.is_some(),
        "seconds": elapsed,
        "started_unix_ms": started_unix_us / 1000,
    })
}

/// A relay node as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RelayView {
    /// Its name.
    pub name: String,
    /// Its control address (named `ng` for every engine, as before RTPProxy nodes).
    pub ng: String,
    /// Its engine: `ng` or `rtpproxy`.
    pub engine: &'static str,
    /// Its weight in its sets.
    pub weight: u32,
    /// Calls anchored on it by this proxy.
    pub calls: usize,
    /// The sessions the node itself last reported (an RTPProxy node's `active sessions`, read
    /// with `Ib` once a second); `null` for ng nodes.
    pub reported_sessions: Option<u64>,
    /// Its load for the choice of a node for new calls: `calls`, plus the sessions it reported
    /// beyond this proxy's calls at that moment (another controller's, or left over).
    pub load: u64,
    /// `up` or `down` (health checks).
    pub state: &'static str,
    /// Drained: it gets no new calls.
    pub draining: bool,
    /// Seconds since `state` last changed.
    pub state_age_s: u64,
    /// Why it went down the last time: `refused` (no process on its port) or `timed_out`.
    pub down_reason: Option<&'static str>,
    /// With `timed_out`: how long it had been silent when it was declared down, ms.
    pub down_silent_ms: Option<u64>,
    /// Smoothed round trip of its health pings, ms.
    pub rtt_ms: Option<f64>,
    /// How long it may now stay silent before it is down, ms (adapts to its round trips).
    pub window_ms: u64,
    /// ng requests sent to it awaiting a reply.
    pub pending: usize,
}

/// A dialog as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    /// Call-ID.
    pub call_id: String,
    /// `early` or `confirmed`.
    pub state: &'static str,
    /// Seconds since the dialog was created.
    pub age_s: u64,
    /// The calling party.
    pub caller: LegView,
    /// The called party.
    pub callee: LegView,
    /// Record-Route set as the callee returned it.
    pub record_route: Vec<String>,
    /// CSeq renumbering after the proxy's own requests into the dialog (a move's re-INVITEs).
    pub cseq_offsets: CseqOffsetsView,
    /// Where the call's media is anchored, if it is.
    pub media: Option<MediaView>,
}

/// A dialog's CSeq renumbering, as the call record keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct CseqOffsetsView {
    /// Added to the CSeq of the caller's requests to the callee.
    pub to_callee: u32,
    /// Added to the CSeq of the callee's requests to the caller.
    pub to_caller: u32,
    /// The highest CSeq the proxy itself sent to the callee.
    pub own_to_callee: u32,
    /// The highest CSeq the proxy itself sent to the caller.
    pub own_to_caller: u32,
}

/// A call's media anchoring.
#[derive(Debug, Clone, Serialize)]
pub struct MediaView {
    /// Relay node.
    pub relay: String,
    /// Relay set.
    pub set: String,
    /// Seconds this call has waited for a relay (its relay died and no node could take it
    /// yet); absent when it is not waiting.
    pub waiting_for_relay_s: Option<u64>,
    /// The caller's SDPs.
    pub caller: LegMediaView,
    /// The callee's SDPs.
    pub callee: LegMediaView,
}

/// One leg's SDPs.
#[derive(Debug, Clone, Serialize)]
pub struct LegMediaView {
    /// The last SDP received from the leg.
    pub sdp_received: Option<String>,
    /// The last SDP sent to the leg.
    pub sdp_sent: Option<String>,
    /// `o=` username, session id and version of the SDP sent.
    pub origin_sent: Option<(String, String, u64)>,
}

impl MediaView {
    /// The view of an anchored call.
    pub fn of(call: anchorage_proxy::node::AnchoredCall) -> MediaView {
        let leg = |l: anchorage_proxy::node::LegMedia| LegMediaView {
            sdp_received: l.received.map(|b| String::from_utf8_lossy(&b).into_owned()),
            sdp_sent: l.sent.map(|b| String::from_utf8_lossy(&b).into_owned()),
            origin_sent: l.origin_sent,
        };
        MediaView {
            relay: call.node,
            set: call.set,
            waiting_for_relay_s: None,
            caller: leg(call.caller),
            callee: leg(call.callee),
        }
    }
}

/// One leg of a dialog.
#[derive(Debug, Clone, Serialize)]
pub struct LegView {
    /// Its tag.
    pub tag: String,
    /// Its Contact.
    pub remote_target: Option<String>,
    /// Where its messages came from.
    pub source: Option<String>,
    /// `udp` or `tcp`.
    pub transport: Option<&'static str>,
    /// Last CSeq number seen from it.
    pub last_cseq: Option<u32>,
}

impl CallView {
    /// The view of a dialog at `now`.
    pub fn of(d: &Dialog, now: Instant) -> CallView {
        let leg = |l: &Leg| LegView {
            tag: l.tag.clone(),
            remote_target: l.remote_target.clone(),
            source: l.source.map(|s| s.to_string()),
            transport: l.transport.map(|t| match t {
                anchorage_proxy::Transport::Udp => "udp",
                anchorage_proxy::Transport::Tcp => "tcp",
            }),
            last_cseq: l.last_cseq,
        };
        CallView {
            call_id: d.id.call_id.clone(),
            state: match d.state {
                DialogState::Early => "early",
                DialogState::Confirmed => "confirmed",
            },
            age_s: now.saturating_duration_since(d.created).as_secs(),
            caller: leg(&d.caller),
            callee: leg(&d.callee),
            record_route: d.record_route.clone(),
            cseq_offsets: CseqOffsetsView {
                to_callee: d.renumber.to_callee,
                to_caller: d.renumber.to_caller,
                own_to_callee: d.renumber.own_to_callee,
                own_to_caller: d.renumber.own_to_caller,
            },
            media: None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    queries: mpsc::Sender<Query>,
    /// The call store (memory or Redis), for `/v1/health` and `/metrics`.
    store: anchorage_store::Store,
    token: Option<String>,
    /// Failed token checks and refused connections (`crate::security`).
    counters: Arc<crate::security::ApiCounters>,
    /// This node's role among the proxies sharing the store (`/v1/cluster`).
    cluster: Arc<crate::cluster::ClusterState>,
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn ask<T>(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<T>) -> Query,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    state
        .queries
        .send(make(tx))
        .await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the proxy is stopping"))?;
    rx.await
        .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "the proxy is stopping"))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = match ask(&state, Query::Metrics).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    metrics_page(vec![
        Box::new(snapshot),
        Box::new(state.counters.clone()),
        Box::new(crate::store_view::StoreMetrics(state.store.status())),
        Box::new(cluster::ClusterMetrics(state.cluster.clone())),
    ])
}

/// `GET /v1/health`: the proxy's own event loop answers (a stuck proxy fails this as well as
/// a dead one), with its relays and the state of its call store. A store that is down makes
/// the node `degraded`, not down: calls go on from memory.
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let relays = match ask(&state, Query::Relays).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let up = relays.iter().filter(|r| r.state == "up").count();
    let held = match ask(&state, Query::PendingRecords).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let mut store = state.store.status();
    // Not yet written: what the store holds, and what the proxy still gathers.
    store.dirty_calls += held;
    let status = if store.up { "ok" } else { "degraded" };
    Json(serde_json::json!({
        "status": status,
        "relays_up": up,
        "relays": relays.len(),
        "store": store,
    }))
    .into_response()
}

async fn calls(State(state): State<Arc<AppState>>) -> Response {
    match ask(&state, Query::Calls).await {
        Ok(calls) => Json(serde_json::json!({ "calls": calls })).into_response(),
        Err(r) => r,
    }
}

async fn call(State(state): State<Arc<AppState>>, Path(call_id): Path<String>) -> Response {
    match ask(&state, |tx| Query::Call(call_id.clone(), tx)).await {
        Ok(dialogs) if dialogs.is_empty() => error(
            StatusCode::NOT_FOUND,
            format!("no call with Call-ID {call_id:?}"),
        ),
        Ok(dialogs) => {
            Json(serde_json::json!({ "call_id": call_id, "dialogs": dialogs })).into_response()
        }
        Err(r) => r,
    }
}

async fn relays(State(state): State<Arc<AppState>>) -> Response {
    match ask(&state, Query::Relays).await {
        Ok(relays) => Json(serde_json::json!({ "relays": relays })).into_response(),
        Err(r) => r,
    }
}

/// Refuses a state-changing request without the configured bearer token.
#[allow(clippy::result_large_err)] // an axum Response, returned as is by the handler
fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if crate::security::token_matches(given, token) {
        Ok(())
    } else {
        state
            .counters
            .auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(error(
            StatusCode::UNAUTHORIZED,
            "this endpoint needs the API token: Authorization: Bearer <token>",
        ))
    }
}

async fn run_command(state: &AppState, command: Command) -> Response {
    match ask(state, |tx| Query::Command(command, tx)).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err((status, message))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            message,
        ),
        Err(r) => r,
    }
}

/// The JSON body of a POST as `T` (its struct says which fields exist, with
/// `deny_unknown_fields`): empty means `{}`.
#[allow(clippy::result_large_err)] // an axum Response, returned as is by the handler
fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // A struct would also read a JSON array, field by position: only an object is a body.
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b == b'[') {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(text).map_err(|e| {
        let message = if e.is_syntax() || e.is_eof() {
            format!("the body is not JSON: {e}")
        } else {
            format!("bad request body: {e}")
        };
        error(StatusCode::BAD_REQUEST, message)
    })
}

/// A state-changing request's body, once the token is checked.
#[allow(clippy::result_large_err)] // an axum Response, returned as is by the handler
fn authorized_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, Response> {
    authorized(state, headers)?;
    body_of(body)
}

/// `engine` of a move: `ng` (or `rtpengine`, OpenSIPS' name for it) or `rtpproxy`.
#[allow(clippy::result_large_err)] // an axum Response, returned as is by the handler
fn check_engine(
    engine: Option<&str>,
) -> Result<Option<anchorage_proxy::media::EngineKind>, Response> {
    engine
        .map(str::parse)
        .transpose()
        .map_err(|e: anchorage_proxy::media::UnknownEngine| {
            error(StatusCode::BAD_REQUEST, e.to_string())
        })
}

/// `POST /v1/reanchor`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReanchorBody {
    engine: Option<String>,
    set: Option<String>,
    node: Option<String>,
    new_set: Option<String>,
    new_node: Option<String>,
}

/// `POST /v1/calls/{call_id}/reanchor`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CallReanchorBody {
    engine: Option<String>,
    set: Option<String>,
    node: Option<String>,
    caller: Option<LegBody>,
    callee: Option<LegBody>,
}

/// The per-leg options of a one-call move.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LegBody {
    flags: Option<String>,
    #[serde(rename = "type")]
    transport: Option<String>,
    ip: Option<std::net::IpAddr>,
    iface: Option<String>,
}

/// `POST /v1/rebalance`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceBody {
    set: String,
}

async fn reanchor(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let b: ReanchorBody = match authorized_body(&state, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let engine = match check_engine(b.engine.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    run_command(
        &state,
        Command::Reanchor {
            engine,
            node: b.node,
            set: b.set,
            call_id: None,
            new_set: b.new_set,
            new_node: b.new_node,
            caller: Default::default(),
            callee: Default::default(),
        },
    )
    .await
}

async fn reanchor_call(
    State(state): State<Arc<AppState>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b: CallReanchorBody = match authorized_body(&state, &headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let engine = match check_engine(b.engine.as_deref()) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let (caller, callee) = match (
        leg_options("caller", b.caller.unwrap_or_default()),
        leg_options("callee", b.callee.unwrap_or_default()),
    ) {
        (Ok(caller), Ok(callee)) => (caller, callee),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    run_command(
        &state,
        Command::Reanchor {
            engine,
            node: None,
            set: None,
            call_id: Some(call_id),
            new_set: b.set,
            new_node: b.node,
            caller,
            callee,
        },
    )
    .await
}

/// The per-leg options of a one-call move, checked: `type` one of the transports, `iface` an
/// interface name.
#[allow(clippy::result_large_err)] // an axum Response, returned as is by the handler
fn leg_options(
    leg: &str,
    options: LegBody,
) -> Result<anchorage_proxy::reanchor::LegOptions, Response> {
    use anchorage_proxy::reanchor::{LegOptions, TRANSPORTS};
    if let Some(iface) = &options.iface {
        let ok = !iface.is_empty()
            && iface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ok {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{leg}.iface {iface:?} is not an interface name (letters, digits, - _ .)"),
            ));
        }
    }
    if let Some(t) = &options.transport {
        if !TRANSPORTS.contains(&t.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("{leg}.type {t:?} is not one of {}", TRANSPORTS.join(", ")),
            ));
        }
    }
    Ok(LegOptions {
        flags: options.flags,
        transport: options.transport,
        ip: options.ip,
        iface: options.iface,
    })
}

async fn drain(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized_command(&state, &headers, Command::Drain(node)).await
}

async fn undrain(
    State(state): State<Arc<AppState>>,
    Path(node): Path<String>,
    headers: HeaderMap,
) -> Response {
    authorized_command(&state, &headers, Command::Undrain(node)).await
}

/// A state-changing command without a body: the token is checked, then it runs.
async fn authorized_command(state: &AppState, headers: &HeaderMap, command: Command) -> Response {
    match authorized(state, headers) {
        Ok(()) => run_command(state, command).await,
        Err(r) => r,
    }
}

async fn rebalance(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match authorized_body::<RebalanceBody>(&state, &headers, &body) {
        Ok(b) => run_command(&state, Command::Rebalance(b.set)).await,
        Err(r) => r,
    }
}

async fn job(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("job id {id:?} is not a number"),
        );
    };
    run_command(&state, Command::Job(id)).await
}

async fn jobs(State(state): State<Arc<AppState>>) -> Response {
    run_command(&state, Command::Jobs).await
}

async fn flood_blocked(State(state): State<Arc<AppState>>) -> Response {
    run_command(&state, Command::FloodBlocked).await
}

async fn flood_unblock(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
) -> Response {
    match source.parse() {
        Ok(ip) => authorized_command(&state, &headers, Command::FloodUnblock(ip)).await,
        Err(_) => error(
            StatusCode::BAD_REQUEST,
            format!("{source:?} is not an IP address"),
        ),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

/// Binds the server and serves it in the background; returns the bound address. `api` gives
/// the token and the per-source connection limit (its `listen` is not read: `listen` wins).
pub async fn serve(
    listen: SocketAddr,
    queries: mpsc::Sender<Query>,
    api: &anchorage_config::ApiConfig,
    store: anchorage_store::Store,
    cluster: Arc<crate::cluster::ClusterState>,
) -> anyhow::Result<SocketAddr> {
    crate::security::check_api_exposure(listen, api)?;
    let counters = Arc::new(crate::security::ApiCounters::default());
    let state = Arc::new(AppState {
        queries,
        store,
        token: api.token.clone(),
        counters: counters.clone(),
        cluster,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/health", get(health))
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/calls", get(calls))
        .route("/v1/calls/{call_id}", get(call))
        .route("/v1/calls/{call_id}/reanchor", post(reanchor_call))
        .route("/v1/relays", get(relays))
        .route("/v1/relays/{node}/drain", post(drain))
        .route("/v1/relays/{node}/undrain", post(undrain))
        .route("/v1/reanchor", post(reanchor))
        .route("/v1/rebalance", post(rebalance))
        .route("/v1/jobs", get(jobs))
        .route("/v1/flood", get(flood_blocked))
        .route("/v1/flood/{source}/unblock", post(flood_unblock))
        .route("/v1/jobs/{id}", get(job))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    crate::security::warn_if_unauthenticated(bound, api);
    let listener =
        crate::security::LimitedListener::new(listener, api.max_connections_per_source, counters);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "management server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let body = futures_body(r);
        (status, body)
    }

    /// The body of a response built by [`error`] (a JSON object with `error`).
    fn futures_body(r: Response) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    #[test]
    fn request_bodies_are_read_by_their_structs_and_refused_with_the_reason() {
        let b: CallReanchorBody = body_of(&Bytes::from_static(b"  ")).unwrap();
        assert!(b.caller.is_none() && b.set.is_none(), "empty means {{}}");
        let b: CallReanchorBody = body_of(&Bytes::from_static(
            br#"{"set": "b", "callee": {"type": "RTP/SAVP", "ip": "203.0.113.7"}}"#,
        ))
        .unwrap();
        let callee = b.callee.unwrap();
        assert_eq!(callee.ip, Some("203.0.113.7".parse().unwrap()));
        for (body, says) in [
            (r#"{"nodes": "a"}"#, "unknown field `nodes`"),
            (r#"{"node": 5}"#, "invalid type: integer `5`"),
            (r#"{"callee": {"ip": "nope"}}"#, "invalid IP address"),
            (r#"{"callee": {"colour": "red"}}"#, "unknown field `colour`"),
            (r#"[1]"#, "the body must be a JSON object"),
            (r#"7"#, "invalid type: integer `7`, expected struct"),
            (r#"{"node": "#, "the body is not JSON"),
        ] {
            let Err(r) = body_of::<CallReanchorBody>(&Bytes::from(body.to_string())) else {
                panic!("{body} was accepted")
            };
            let (status, text) = message(r);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(text.contains(says), "{body}: {text}");
        }
        let Err(r) = body_of::<RebalanceBody>(&Bytes::from_static(b"{}")) else {
            panic!("set is required")
        };
        assert!(message(r).1.contains("missing field `set`"));
        let Err(r) = leg_options(
            "callee",
            LegBody {
                iface: Some("eth 0".into()),
                ..LegBody::default()
            },
        ) else {
            panic!("a space in an interface name")
        };
        assert!(message(r).1.contains("is not an interface name"));
    }
}
