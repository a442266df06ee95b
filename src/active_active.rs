//! The driver's part of `[cluster] mode = "active-active"`: every node acts for the calls it
//! set up; a message about another node's call is forwarded to that node while it lives
//! (the core does the forwarding, `anchorage_proxy::node::peers`); a node whose heartbeat
//! expired has its calls taken by the survivors, each its share (rendezvous hashing over the
//! live nodes, `anchorage_store::share_of`), so every call gets exactly one new owner without
//! the survivors talking to each other.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchorage_proxy::node::{CallRecord as CoreRecord, Proxy};
use anchorage_store::{NodeState, Store};
use tokio::sync::mpsc;

use crate::takeover::{claim_call, Takeover};

/// The cluster's nodes as the last look at the store saw them, and this node's calls per
/// relay as the event loop last gave them (published at the next look).
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    nodes: Arc<Mutex<Vec<NodeState>>>,
    own_relay_calls: Arc<Mutex<Vec<(String, u64)>>>,
}

/// What a look at the store tells the event loop.
pub(crate) enum News {
    /// The other live nodes, by id with their SIP address.
    Peers(Vec<(String, SocketAddr)>),
    /// The calls the other live nodes anchored per relay.
    RelayCalls(HashMap<String, u64>),
    /// Relays another node drained (cluster-wide): drained here too.
    Drain(Vec<String>),
    /// Relays another node undrained.
    Undrain(Vec<String>),
}

impl View {
    fn set(&self, nodes: Vec<NodeState>) {
        *self.nodes.lock().unwrap_or_else(|p| p.into_inner()) = nodes;
    }

    /// This node's calls per relay, for the next publication.
    pub(crate) fn set_own_relay_calls(&self, calls: Vec<(String, u64)>) {
        *self
            .own_relay_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = calls;
    }

    fn own_relay_calls(&self) -> Vec<(String, u64)> {
        self.own_relay_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn live_owner(&self, token: &str) -> Option<(String, Option<SocketAddr>)> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .iter()
            .find(|n| n.alive && n.token.as_deref() == Some(token))
            .map(|n| (n.id.clone(), n.sip))
    }
}

/// Where the messages of a call this node does not hold go.
pub(crate) enum Located {
    /// Here: the call's record, claimed for this node (its owner is dead, or it is this
    /// node's own from a previous start), or none when the store has none.
    Here(Option<Box<CoreRecord>>),
    /// To the live node that owns it, at this SIP address.
    Owner(SocketAddr),
}

/// Where a message about `call_id` goes: to its owner if another live node owns it, else
/// here (claimed from a dead owner, or unknown).
pub(crate) async fn locate(store: &Store, view: &View, me: &str, call_id: &str) -> Located {
    match store.owner(call_id).await {
        Ok(Some(token)) => match view.live_owner(&token) {
            Some((node, Some(sip))) if node != me => return Located::Owner(sip),
            _ => {}
        },
        Ok(None) => return Located::Here(None),
        Err(error) => {
            tracing::warn!(%call_id, %error, "the store could not say who owns a call");
            return Located::Here(None);
        }
    }
    Located::Here(claim_call(store, call_id).await.map(Box::new))
}

/// Looks at the cluster every `every`: the other nodes' addresses (trusted to forward), the
/// calls they anchored per relay, the relays drained or undrained cluster-wide (each sent on
/// `news`; this node's own calls per relay are published), and the share of each dead node's
/// calls that falls to this node, claimed and sent on `claimed`. Runs until the receivers are
/// gone.
pub(crate) async fn watch(
    store: Store,
    view: View,
    me: String,
    every: Duration,
    news: mpsc::UnboundedSender<News>,
    claimed: mpsc::UnboundedSender<Takeover>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut known: Vec<(String, SocketAddr)> = Vec::new();
    // The drained relays as last read (this node drained them at its start).
    let mut drained: Option<BTreeSet<String>> = None;
    loop {
        ticks.tick().await;
        let nodes = match store.nodes().await {
            Ok(nodes) => nodes,
            // Redis is away: nothing is claimed, and messages go on as they are.
            Err(_) => continue,
        };
        let mut addresses: Vec<(String, SocketAddr)> = nodes
            .iter()
            .filter(|n| n.alive && n.id != me)
            .filter_map(|n| Some((n.id.clone(), n.sip?)))
            .collect();
        addresses.sort();
        if addresses != known {
            known = addresses.clone();
            if news.send(News::Peers(addresses)).is_err() {
                return;
            }
        }
        let others: Vec<String> = nodes
            .iter()
            .filter(|n| n.alive && n.id != me)
            .map(|n| n.id.clone())
            .collect();
        if let Err(error) = store.publish_relay_calls(view.own_relay_calls()).await {
            tracing::debug!(%error, "this node's calls per relay not published");
        }
        if let Ok(calls) = store.relay_calls_of(others).await {
            if news.send(News::RelayCalls(calls)).is_err() {
                return;
            }
        }
        if let Ok(now) = store.drained().await {
            let now: BTreeSet<String> = now.into_iter().collect();
            if let Some(before) = &drained {
                let added: Vec<String> = now.difference(before).cloned().collect();
                let removed: Vec<String> = before.difference(&now).cloned().collect();
                if !added.is_empty() && news.send(News::Drain(added)).is_err() {
                    return;
                }
                if !removed.is_empty() && news.send(News::Undrain(removed)).is_err() {
                    return;
                }
            }
            drained = Some(now);
        }
        let live: Vec<String> = nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.id.clone())
            .collect();
        let dead: Vec<String> = nodes
            .iter()
            .filter(|n| !n.alive && n.calls > 0 && n.id != me)
            .map(|n| n.id.clone())
            .collect();
        view.set(nodes);
        if !live.contains(&me) {
            // This node's own heartbeat is not in yet: it takes no share before it is.
            continue;
        }
        for node in dead {
            match store.claim_share_of(&node, live.clone()).await {
                Ok(records) if !records.is_empty() => {
                    tracing::info!(dead = %node, calls = records.len(), "a dead node's share of calls taken over");
                    if claimed.send(Takeover::Calls(records)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(dead = %node, %error, "could not take a dead node's calls");
                    continue;
                }
            }
            // Its sessions to delete go with their calls, by the same share.
            match store.take_orphans_of(&node, Some(live.clone())).await {
                Ok(orphans) if !orphans.is_empty() => {
                    if claimed.send(Takeover::Orphans(orphans)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(dead = %node, %error, "could not take a dead node's relay sessions to delete")
                }
            }
        }
    }
}

/// What the active-active watch learnt from the store, into the core.
pub(crate) fn apply_news(proxy: &mut Proxy, view: &View, news: News) {
    let now = Instant::now();
    let draining = |proxy: &Proxy, relay: &str| {
        proxy
            .relays()
            .nodes()
            .iter()
            .any(|n| n.name == relay && n.draining)
    };
    match news {
        News::Peers(peers) => proxy.set_cluster_peers(peers),
        News::RelayCalls(calls) => {
            proxy.set_cluster_relay_calls(&calls);
            // Ours, for the watch to publish at its next look.
            view.set_own_relay_calls(proxy.own_relay_calls());
        }
        News::Drain(relays) => {
            // One this node drained itself (its own API) needs nothing more.
            let relays: Vec<String> = relays.into_iter().filter(|r| !draining(proxy, r)).collect();
            crate::takeover::drain_again(proxy, &relays);
        }
        News::Undrain(relays) => {
            let relays: Vec<String> = relays.into_iter().filter(|r| draining(proxy, r)).collect();
            for relay in &relays {
                match proxy.undrain_relay(relay, now) {
                    Ok(()) => {
                        tracing::info!(%relay, "relay undrained cluster-wide: undrained here too")
                    }
                    Err(error) => {
                        tracing::warn!(%relay, %error, "a relay undrained cluster-wide is unknown here")
                    }
                }
            }
        }
    }
}
