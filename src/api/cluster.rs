//! `GET /v1/cluster` and the cluster's figures in `/metrics`: this node's role (active or
//! passive, and since when), its mode and virtual IP, and every node sharing the call store
//! with its heartbeat and how many calls it owns.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::{ask, AppState, Query};
use crate::cluster::ClusterState;

/// `GET /v1/cluster`. A store that cannot list the nodes still gives this node's own part,
/// with the store's error in `nodes_error`.
pub(super) async fn cluster(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = match ask(&state, Query::Metrics).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = &state.cluster;
    let (nodes, nodes_error) = match state.store.nodes().await {
        Ok(nodes) => (nodes, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let nodes: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "alive": n.alive,
                "epoch": n.epoch,
                "calls": n.calls,
                "this_node": n.id == c.node,
            })
        })
        .collect();
    let role = if c.is_active() { "active" } else { "passive" };
    let body = serde_json::json!({
        "node": c.node,
        "mode": c.mode.name(),
        "vip": c.vip.map(|v| v.to_string()),
        "role": role,
        "active_since_unix_ms": c.active_since_ms(),
        "takeovers": c.takeovers(),
        "released_calls": c.released(),
        "dialogs": snapshot.dialogs,
        "store": state.store.status(),
        "nodes": nodes,
        "nodes_error": nodes_error,
    });
    Json(body).into_response()
}

/// The node's role in `/metrics`.
#[derive(Debug)]
pub(super) struct ClusterMetrics(pub Arc<ClusterState>);

impl Collector for ClusterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.0;
        super::encode_gauges(
            &mut encoder,
            &[(
                "anchorage_cluster_active",
                "1 when this node acts for calls (single mode, or it holds the virtual IP)",
                i64::from(c.is_active()),
            )],
        )?;
        super::encode_counters(
            &mut encoder,
            &[
                (
                    "anchorage_cluster_takeovers",
                    "Times this node got the virtual IP and claimed the calls",
                    c.takeovers(),
                ),
                (
                    "anchorage_cluster_released_calls",
                    "Calls released because another node acts for them now",
                    c.released(),
                ),
            ],
        )
    }
}
