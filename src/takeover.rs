//! Calls this node takes from the store: its own at start, one call when a message about it
//! arrives, every node's when it gets the virtual IP (`[cluster] mode = "vip"`), and the relays
//! drained cluster-wide. The event loop in `proxy_node.rs` drives these; the role itself is
//! `cluster.rs`.

use std::time::{Duration, Instant};

use anchorage_proxy::node::{CallRecord as CoreRecord, Proxy};
use tokio::sync::mpsc;

use crate::cluster::{ClusterState, RoleChange, VipWatch};

/// A call as the store keeps it.
pub(crate) type StoreRecord = anchorage_store::CallRecord;

/// One call's record from the store, claimed for this node (a message about it reached this
/// node, which acts for it from now on), for the core; `None` when the store has none or it
/// cannot be read or converted: the core then goes on without it.
pub(crate) async fn claim_call(
    store: &anchorage_store::Store,
    call_id: &str,
) -> Option<CoreRecord> {
    match store.claim(call_id).await {
        Ok(Some(record)) => match crate::call_records::from_store(record, Instant::now()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(%call_id, error = %e, "a stored call could not be read");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(%call_id, error = %e, "the store could not load a call");
            None
        }
    }
}

/// The calls this node held before it (re)started, claimed from the store, back into the core.
pub(crate) async fn claim_own_calls(
    proxy: &mut Proxy,
    store: &anchorage_store::Store,
    node_id: &str,
) {
    let started = Instant::now();
    let records = match store.claim_of(node_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "could not load this node's calls from the store: starting without them");
            return;
        }
    };
    let (loaded, refused) = import_records(proxy, records);
    match store.take_orphans_of(node_id, None).await {
        Ok(orphans) => {
            proxy.adopt_orphans(orphans, Instant::now());
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the relay sessions this node had left to delete")
        }
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(loaded, refused, ms, "calls loaded from the store");
    println!("anchorage proxy: {loaded} calls loaded from the store in {ms:.0} ms");
}

/// Stored calls into the core (a call it holds already is left as it is): how many were
/// taken and how many refused.
pub(crate) fn import_records(proxy: &mut Proxy, records: Vec<StoreRecord>) -> (usize, usize) {
    let (mut loaded, mut refused) = (0usize, 0usize);
    let now = Instant::now();
    for record in records {
        let call_id = record.call_id.clone();
        let imported = crate::call_records::from_store(record, now)
            .map_err(|e| e.to_string())
            .and_then(|r| proxy.import_call(r, now).map_err(|e| e.to_string()));
        match imported {
            Ok(()) => loaded += 1,
            Err(error) => {
                refused += 1;
                tracing::warn!(%call_id, %error, "a stored call could not be taken");
            }
        }
    }
    (loaded, refused)
}

/// Most calls remembered as ended during one takeover (a bound; past it, an ended call's older
/// record may come back as a dialog that ends at its maximum age).
pub(crate) const MAX_ENDED_IN_TAKEOVER: usize = 100_000;

/// How long a takeover waits before it asks a store that failed again.
pub(crate) const CLAIM_RETRY: Duration = Duration::from_millis(500);

/// Calls imported per turn of the event loop in a takeover.
pub(crate) const IMPORT_BATCH: usize = 256;

/// What the store gives a node that takes over.
pub(crate) enum Takeover {
    /// One node's calls, claimed.
    Calls(Vec<StoreRecord>),
    /// Relay sessions a node left to delete when their relay comes back, as (relay, call).
    Orphans(Vec<(String, String)>),
    /// The relays drained cluster-wide (after every node's calls).
    Drained(Vec<String>),
}

/// Drains again the relays the store says are drained (a restart, or a takeover): no new
/// calls for them, and a job that moves off the calls still on them.
pub(crate) fn drain_again(proxy: &mut Proxy, relays: &[String]) {
    let now = Instant::now();
    for relay in relays {
        match proxy.drain_relay(relay, now) {
            Ok(job) => {
                tracing::info!(%relay, job = job.0, "relay drained cluster-wide: drained here too")
            }
            Err(error) => {
                tracing::warn!(%relay, %error, "a relay drained cluster-wide is unknown here")
            }
        }
    }
}

/// Reads whether this node holds the virtual IP (if due) and acts on a change of role: on
/// getting it, every node's calls are claimed from the store in the background (they arrive
/// on `claimed`); on losing it, every call is released at once, before anything else is done.
pub(crate) fn take_role(
    vip: &mut VipWatch,
    proxy: &mut Proxy,
    store: &anchorage_store::Store,
    claimed: &mpsc::UnboundedSender<Takeover>,
) {
    take_role_if(vip, proxy, store, claimed, false);
}

/// [`take_role`], reading the interfaces now whatever the last reading's age when `now_anyway`.
pub(crate) fn take_role_if(
    vip: &mut VipWatch,
    proxy: &mut Proxy,
    store: &anchorage_store::Store,
    claimed: &mpsc::UnboundedSender<Takeover>,
    now_anyway: bool,
) {
    let now = Instant::now();
    let change = if now_anyway {
        vip.check_if(now, true)
    } else {
        vip.check(now)
    };
    match change {
        Some(RoleChange::Gained) => {
            let (store, claimed) = (store.clone(), claimed.clone());
            let cluster = vip.shared();
            tokio::spawn(async move { claim_every_node(&store, &claimed, &cluster).await });
        }
        Some(RoleChange::Lost) => {
            let released = proxy.release_all_calls(Instant::now());
            vip.state().count_released(released);
        }
        None => {}
    }
}

/// Claims the calls of every node the store knows (this one's previous starts included). While
/// the store cannot answer, it tries again every [`CLAIM_RETRY`] as long as this node stays
/// active: calls with no message coming (waiting for a relay, say) must still get an owner.
pub(crate) async fn claim_every_node(
    store: &anchorage_store::Store,
    claimed: &mpsc::UnboundedSender<Takeover>,
    cluster: &ClusterState,
) {
    let started = Instant::now();
    let mut total = 0;
    let mut pending: Option<Vec<String>> = None;
    let mut drained_done = false;
    while cluster.is_active() {
        let nodes = match pending.take() {
            Some(nodes) => nodes,
            None => match store.nodes().await {
                Ok(nodes) => nodes.into_iter().map(|n| n.id).collect(),
                Err(error) => {
                    tracing::error!(%error, "could not list the cluster's nodes: trying again (meanwhile calls are taken over as their messages arrive)");
                    tokio::time::sleep(CLAIM_RETRY).await;
                    continue;
                }
            },
        };
        let mut failed = Vec::new();
        for node in nodes {
            match store.claim_of(&node).await {
                Ok(records) => {
                    total += records.len();
                    // A few hundred at a time: the event loop takes one batch per turn, so
                    // messages and timers go on between the batches of a large takeover.
                    for batch in records.chunks(IMPORT_BATCH) {
                        if claimed.send(Takeover::Calls(batch.to_vec())).is_err() {
                            return;
                        }
                    }
                    // Its sessions to delete come after its calls (a call moved back onto
                    // a relay keeps its session there).
                    match store.take_orphans_of(&node, None).await {
                        Ok(orphans) if !orphans.is_empty() => {
                            if claimed.send(Takeover::Orphans(orphans)).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%node, %error, "could not take a node's relay sessions to delete")
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%node, %error, "could not claim a node's calls: trying again");
                    failed.push(node);
                }
            }
        }
        if !drained_done {
            match store.drained().await {
                Ok(relays) => {
                    drained_done = true;
                    let _ = claimed.send(Takeover::Drained(relays));
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read which relays are drained: trying again")
                }
            }
        }
        if failed.is_empty() && drained_done {
            break;
        }
        pending = Some(failed);
        tokio::time::sleep(CLAIM_RETRY).await;
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::warn!(calls = total, ms, "calls claimed from the store");
}
