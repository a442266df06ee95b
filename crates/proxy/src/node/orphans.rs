//! Relay sessions to delete when their relay comes back: a call moved off a dead relay (or
//! ended while its relay was down) leaves its session there, and a delete is never sent to a
//! dead node nor elsewhere. The list is this node's; with a store it is also written there
//! ([`Output::Orphan`]), so that a node taking this node's calls over — after a crash, or
//! when it gets the virtual IP — deletes them in its turn ([`Proxy::adopt_orphans`]).

use std::time::Instant;

use crate::media::NodeId;
use crate::node::io::{OrphanChange, Output};
use crate::node::Proxy;

impl Proxy {
    /// Lists call `call_id`'s session on `node` (down now) for deletion when it is back.
    pub(in crate::node) fn add_orphan(&mut self, node: NodeId, call_id: &str) {
        let list = self.orphans.entry(node).or_default();
        if list.iter().any(|c| c == call_id) {
            return;
        }
        list.push(call_id.to_string());
        if !self.records {
            return;
        }
        if let Some(relay) = self.relays.nodes().get(node).map(|n| n.name.clone()) {
            self.records_out
                .push_back(Output::Orphan(OrphanChange::Added {
                    relay,
                    call_id: call_id.to_string(),
                }));
        }
    }

    /// Takes over sessions another node (or an earlier start of this one) left to delete,
    /// as (relay name, call): deleted now on a relay that is up, else listed here for when
    /// it comes back. A session of a call this node has on that relay now (moved back since)
    /// is kept. Returns how many were taken.
    pub fn adopt_orphans(&mut self, orphans: Vec<(String, String)>, now: Instant) -> usize {
        let mut taken = 0;
        for (relay, call_id) in orphans {
            let Some(node) = self.relays.by_name(&relay) else {
                tracing::warn!(%relay, %call_id, "a session to delete on a relay this proxy does not have: left to the relay's own timeout");
                continue;
            };
            let live_here = self.calls.media(&call_id).is_some_and(|m| m.node == node)
                || self
                    .calls
                    .moving(&call_id)
                    .and_then(|m| m.new_node())
                    .is_some_and(|n| n == node);
            if live_here {
                continue;
            }
            taken += 1;
            self.delete_or_orphan(node, &call_id, now);
        }
        if taken > 0 {
            tracing::info!(sessions = taken, "relay sessions to delete taken over");
        }
        self.settle(now);
        taken
    }

    /// Sessions waiting for their relay to come back to be deleted, over every relay.
    pub fn orphan_count(&self) -> usize {
        self.orphans.values().map(Vec::len).sum()
    }
}
