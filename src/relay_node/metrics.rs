//! The relay's `/metrics`: what the relay task last read of its controller and workers,
//! encoded for Prometheus, and the HTTP server that serves it.

use super::*;

/// What `/metrics` shows, refreshed every second by the relay task.
#[derive(Debug, Clone, Default)]
pub(super) struct MetricsView {
    pub(super) calls: usize,
    pub(super) sessions: usize,
    pub(super) statistics: Statistics,
    pub(super) ports: Vec<PortUsage>,
    pub(super) forwarded: ForwardTotals,
    /// Media sockets the workers hold open.
    pub(super) media_sockets: usize,
    /// ng commands dropped per source (bounded labels).
    pub(super) control_refused: std::collections::BTreeMap<String, u64>,
}

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

impl Collector for MetricsView {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.statistics;
        let srtp = &self.forwarded.srtp;
        let dtls = &self.forwarded.dtls;
        let counters: [(&str, &str, u64); 21] = [
            ("anchorage_relay_offers", "ng offers received", s.offers),
            ("anchorage_relay_answers", "ng answers received", s.answers),
            ("anchorage_relay_deletes", "ng deletes received", s.deletes),
            (
                "anchorage_relay_ng_errors",
                "ng commands answered with an error",
                s.errors,
            ),
            (
                "anchorage_relay_sessions_managed",
                "Calls created",
                s.managed_sessions,
            ),
            (
                "anchorage_relay_sessions_rejected",
                "Offers refused for capacity",
                s.rejected_sessions,
            ),
            (
                "anchorage_relay_sessions_timed_out",
                "Sessions ended by a media or offer timeout",
                s.timeout_sessions,
            ),
            (
                "anchorage_relay_forwarded_packets",
                "Media packets relayed",
                self.forwarded.packets,
            ),
            (
                "anchorage_relay_forwarded_bytes",
                "Media bytes relayed",
                self.forwarded.bytes,
            ),
            (
                "anchorage_relay_dropped_packets",
                "Media packets not relayed (no destination, strict source, send failure)",
                self.forwarded.dropped + self.forwarded.send_errors,
            ),
            (
                "anchorage_relay_srtp_decrypted_packets",
                "SRTP/SRTCP packets from encrypted legs (SDES or DTLS) authenticated and decrypted",
                srtp.decrypted_packets,
            ),
            (
                "anchorage_relay_srtp_decrypted_bytes",
                "Bytes of the SRTP/SRTCP packets decrypted, as received",
                srtp.decrypted_bytes,
            ),
            (
                "anchorage_relay_srtp_encrypted_packets",
                "RTP/RTCP packets encrypted towards encrypted legs (SDES or DTLS)",
                srtp.encrypted_packets,
            ),
            (
                "anchorage_relay_srtp_encrypted_bytes",
                "Bytes of the SRTP/SRTCP packets encrypted, as sent",
                srtp.encrypted_bytes,
            ),
            (
                "anchorage_relay_srtp_auth_failures",
                "SRTP/SRTCP packets dropped because their authentication tag did not verify",
                srtp.auth_failures,
            ),
            (
                "anchorage_relay_srtp_replayed_packets",
                "SRTP/SRTCP packets dropped as replays",
                srtp.replayed,
            ),
            (
                "anchorage_relay_srtp_failures",
                "SRTP packets dropped for another reason (no key yet, malformed, key lifetime reached)",
                srtp.other_failures,
            ),
            (
                "anchorage_relay_dtls_handshakes",
                "DTLS-SRTP handshakes completed (the leg keyed from them)",
                dtls.handshakes,
            ),
            (
                "anchorage_relay_dtls_handshake_failures",
                "DTLS-SRTP handshakes failed (alert, retransmissions exhausted, wrong fingerprint)",
                dtls.failures,
            ),
            (
                "anchorage_relay_dtls_wrong_fingerprint",
                "DTLS-SRTP handshakes failed because the certificate did not match a=fingerprint",
                dtls.wrong_fingerprint,
            ),
            (
                "anchorage_relay_dtls_dropped",
                "DTLS datagrams dropped (a leg without DTLS, or not from the leg's party)",
                dtls.dropped,
            ),
        ];
        crate::api::encode_counters(&mut encoder, &counters)?;
        let gauges: [(&str, &str, usize); 3] = [
            (
                "anchorage_relay_active_calls",
                "Calls with media on this relay",
                self.calls,
            ),
            (
                "anchorage_relay_active_sessions",
                "Relayed dialogs (each with its own ports)",
                self.sessions,
            ),
            (
                "anchorage_relay_media_sockets",
                "Media sockets open (RTP per leg, RTCP per leg unless it uses rtcp-mux)",
                self.media_sockets,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        encode_srtp_by_kind(&mut encoder, &self.forwarded.srtp_by_kind)?;
        crate::security::encode_refused(&mut encoder, &self.control_refused)?;
        let mut family = encoder.encode_descriptor(
            "anchorage_relay_port_pairs",
            "Media port pairs per interface and state",
            None,
            MetricType::Gauge,
        )?;
        for usage in &self.ports {
            for (state, value) in [
                ("in_use", usage.in_use),
                ("free", usage.free),
                ("quarantined", usage.quarantined),
            ] {
                let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
                let labels = [("interface", usage.interface.as_str()), ("state", state)];
                gauge.encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The SRTP counters by kind of leg: `keying` (`sdes`, `dtls`) and `suite` (the six suites,
/// `none` before a key), at most 14 label sets whatever the number of calls — per leg they
/// are in `query`. Kinds that never counted anything are left out.
fn encode_srtp_by_kind(
    encoder: &mut DescriptorEncoder,
    by_kind: &anchorage_relay::SrtpByKind,
) -> Result<(), std::fmt::Error> {
    let seen: Vec<_> = by_kind
        .iter()
        .filter(|(_, _, stats)| **stats != anchorage_relay::SrtpStats::default())
        .collect();
    let suite_name = |suite: Option<anchorage_relay::SrtpSuite>| suite.map_or("none", |s| s.name());
    type Outcomes = fn(&anchorage_relay::SrtpStats) -> Vec<(&'static str, u64)>;
    let families: [(&str, &str, Outcomes); 2] = [
        (
            "anchorage_relay_srtp_leg_packets",
            "SRTP/SRTCP packets by kind of leg (keying, suite) and outcome: decrypted from the \
             leg, encrypted towards it, auth_failure, replayed, failed (no key yet, malformed, \
             lifetime)",
            |s| {
                vec![
                    ("decrypted", s.decrypted_packets),
                    ("encrypted", s.encrypted_packets),
                    ("auth_failure", s.auth_failures),
                    ("replayed", s.replayed),
                    ("failed", s.other_failures),
                ]
            },
        ),
        (
            "anchorage_relay_srtp_leg_bytes",
            "Bytes of the SRTP/SRTCP packets decrypted (as received) and encrypted (as sent), \
             by kind of leg (keying, suite)",
            |s| {
                vec![
                    ("decrypted", s.decrypted_bytes),
                    ("encrypted", s.encrypted_bytes),
                ]
            },
        ),
    ];
    for (name, help, outcomes) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (keying, suite, stats) in &seen {
            for (outcome, value) in outcomes(stats) {
                let labels = [
                    ("keying", keying.name()),
                    ("suite", suite_name(*suite)),
                    ("outcome", outcome),
                ];
                prometheus_client::metrics::counter::ConstCounter::new(value)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

pub(super) async fn serve_metrics(
    listen: SocketAddr,
    view: Arc<Mutex<MetricsView>>,
) -> anyhow::Result<SocketAddr> {
    let handler = move || {
        let view = view.clone();
        async move {
            let snapshot = view.lock().map(|v| v.clone()).unwrap_or_default();
            crate::api::metrics_response(snapshot)
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the metrics address {listen}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "relay metrics server stopped");
        }
    });
    Ok(bound)
}
