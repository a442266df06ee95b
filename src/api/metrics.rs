//! `/metrics` of every server: the proxy's numbers ([`ProxySnapshot`]) in the OpenMetrics text
//! format, and the helpers the relay's and the store's collectors share.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use anchorage_proxy::node::Counters;

use super::{error, RelayView};

/// The proxy's numbers at one moment.
#[derive(Debug, Clone, Default)]
pub struct ProxySnapshot {
    /// Core counters.
    pub counters: Counters,
    /// Live server transactions.
    pub server_transactions: usize,
    /// Live client transactions.
    pub client_transactions: usize,
    /// Live dialogs.
    pub dialogs: usize,
    /// Open TCP connections.
    pub tcp_connections: usize,
    /// TCP connections refused or not opened at `proxy.tcp.max_connections`.
    pub tcp_refused: u64,
    /// Inbound TCP connections refused at `proxy.tcp.max_connections_per_source`.
    pub tcp_refused_per_source: u64,
    /// TCP connections closed for a message incomplete past `proxy.tcp.message_timeout_s`.
    pub tcp_message_timeouts: u64,
    /// Messages sent.
    pub sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// UDP sends that waited for room in the socket's send buffer.
    pub udp_send_deferred: u64,
    /// Calls per relay node.
    pub relays: Vec<RelayView>,
    /// Re-anchoring counters.
    pub reanchor: anchorage_proxy::node::ReanchorMetrics,
    /// Calls waiting for a relay.
    pub waiting_calls: usize,
    /// Messages parked for a call being loaded from the store.
    pub parked_messages: usize,
}

/// `anchorage_reanchor_move_seconds`: the duration of each call's move, as a Prometheus
/// histogram written by hand (the counts live in the core).
fn encode_duration_histogram(
    encoder: &mut DescriptorEncoder,
    r: &anchorage_proxy::node::ReanchorMetrics,
) -> Result<(), std::fmt::Error> {
    let metric = HistogramSnapshot {
        sum: r.duration_sum,
        count: r.duration_count,
        buckets: r.duration_buckets.clone(),
    };
    metric.encode(encoder.encode_descriptor(
        "anchorage_reanchor_move_seconds",
        "Time from the start of a call's move to its end",
        None,
        prometheus_client::metrics::MetricType::Histogram,
    )?)
}

/// A histogram whose counts are already known.
#[derive(Debug)]
struct HistogramSnapshot {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl prometheus_client::encoding::EncodeMetric for HistogramSnapshot {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        // Cumulative counts turned back into per-bucket counts, which the encoder sums.
        let mut previous = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.buckets.len() + 1);
        for (bound, cumulative) in &self.buckets {
            buckets.push((*bound, cumulative.saturating_sub(previous)));
            previous = *cumulative;
        }
        buckets.push((f64::INFINITY, self.count.saturating_sub(previous)));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum, self.count, &buckets, None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

impl Collector for ProxySnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counters;
        let counters: [(&str, &str, u64); 20] = [
            (
                "anchorage_sip_overload_rejected",
                "New INVITEs answered 503 because the proxy was over a [proxy.overload] bound",
                c.overload_rejected,
            ),
            (
                "anchorage_sip_udp_send_deferred",
                "UDP sends that found the send buffer full and waited for room",
                self.udp_send_deferred,
            ),
            (
                "anchorage_sip_requests",
                "SIP requests received, retransmissions included",
                c.requests,
            ),
            (
                "anchorage_sip_responses",
                "SIP responses received",
                c.responses,
            ),
            (
                "anchorage_sip_dropped",
                "SIP messages dropped as unparsable or unanswerable",
                c.dropped,
            ),
            (
                "anchorage_sip_rejected",
                "Requests answered with an error by the proxy itself",
                c.rejected,
            ),
            (
                "anchorage_sip_stateless_requests",
                "CANCEL/ACK forwarded without a transaction",
                c.stateless_requests,
            ),
            (
                "anchorage_sip_stateless_responses",
                "Responses forwarded without a transaction",
                c.stateless_responses,
            ),
            (
                "anchorage_sip_forwarded_to_owner",
                "Requests forwarded to the cluster node that owns their call (active-active)",
                c.forwarded_to_owner,
            ),
            (
                "anchorage_sip_flood_dropped",
                "Requests dropped because their source went over [proxy.flood]'s rate limit",
                c.flood_dropped,
            ),
            (
                "anchorage_sip_flood_blocks",
                "Times a source was blocked by [proxy.flood]'s rate limit",
                c.flood_blocks,
            ),
            (
                "anchorage_sip_user_agent_dropped",
                "Requests dropped for a User-Agent in [proxy.flood] drop_user_agents",
                c.user_agent_dropped,
            ),
            (
                "anchorage_sip_tcp_message_timeouts",
                "TCP connections closed because a message stayed incomplete past \
                 proxy.tcp.message_timeout_s",
                self.tcp_message_timeouts,
            ),
            (
                "anchorage_store_load_requests",
                "Calls asked of the store because a message arrived about one not held here",
                c.load_requests,
            ),
            (
                "anchorage_store_calls_loaded",
                "Calls loaded from the store on demand",
                c.calls_loaded,
            ),
            (
                "anchorage_store_load_misses",
                "On-demand loads the store had no record for, or could not read",
                c.load_misses,
            ),
            (
                "anchorage_store_load_timeouts",
                "On-demand loads not answered in time (their messages went on without the record)",
                c.load_timeouts,
            ),
            (
                "anchorage_sip_parking_full",
                "Messages about a call being loaded handled at once because the parking was full",
                c.parking_full,
            ),
            ("anchorage_sip_sent", "SIP messages sent", self.sent),
            (
                "anchorage_sip_send_errors",
                "SIP messages that could not be sent",
                self.send_errors,
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        let gauges: [(&str, &str, usize); 6] = [
            (
                "anchorage_sip_parked_messages",
                "Messages waiting for their call to be loaded from the store",
                self.parked_messages,
            ),
            (
                "anchorage_calls_waiting_for_relay",
                "Calls whose relay died while no node could take them; moved when one can",
                self.waiting_calls,
            ),
            (
                "anchorage_server_transactions",
                "Live server transactions",
                self.server_transactions,
            ),
            (
                "anchorage_client_transactions",
                "Live client transactions",
                self.client_transactions,
            ),
            ("anchorage_dialogs", "Live dialogs (calls)", self.dialogs),
            (
                "anchorage_tcp_connections",
                "Open SIP TCP connections",
                self.tcp_connections,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "anchorage_sip_tcp_refused",
                "TCP connections refused, by the limit reached (proxy.tcp.max_connections: \
                 node; max_connections_per_source: source)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (limit, value) in [
                ("node", self.tcp_refused),
                ("source", self.tcp_refused_per_source),
            ] {
                let counter = ConstCounter::new(value);
                counter.encode(family.encode_family(&[("limit", limit)])?)?;
            }
        }
        if !self.relays.is_empty() {
            {
                let mut family = encoder.encode_descriptor(
                    "anchorage_relay_calls",
                    "Calls anchored on the relay node by this proxy",
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for relay in &self.relays {
                    let gauge = ConstGauge::new(i64::try_from(relay.calls).unwrap_or(i64::MAX));
                    let labels = [("relay", relay.name.as_str())];
                    gauge.encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = encoder.encode_descriptor(
                "anchorage_relay_up",
                "1 when the relay node passes its health checks",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for relay in &self.relays {
                let gauge = ConstGauge::new(i64::from(relay.state == "up"));
                let labels = [("relay", relay.name.as_str())];
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        let r = &self.reanchor;
        if !r.results.is_empty() {
            let mut family = encoder.encode_descriptor(
                "anchorage_reanchor_moves",
                "Calls whose re-anchoring ended, by trigger and result",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for ((trigger, result), count) in &r.results {
                let counter = ConstCounter::new(*count);
                let labels = [("trigger", trigger.as_str()), ("result", result.as_str())];
                counter.encode(family.encode_family(&labels)?)?;
            }
        }
        encode_duration_histogram(&mut encoder, r)?;
        Ok(())
    }
}

/// Writes counters `(name, help, value)` into a metrics page (every server's collectors).
pub fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in counters {
        let counter = ConstCounter::new(*value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
}

/// Writes gauges `(name, help, value)` into a metrics page.
pub fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    gauges: &[(&str, &str, i64)],
) -> Result<(), std::fmt::Error> {
    for (name, help, value) in gauges {
        let gauge = ConstGauge::new(*value);
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// `/metrics`: a collector's metrics in the OpenMetrics text format (every server's page).
pub fn metrics_response(collector: impl Collector) -> Response {
    metrics_page(vec![Box::new(collector)])
}

/// `/metrics` from several collectors.
pub fn metrics_page(collectors: Vec<Box<dyn Collector>>) -> Response {
    let mut registry = Registry::default();
    for collector in collectors {
        registry.register_collector(collector);
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
