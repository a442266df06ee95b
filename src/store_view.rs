//! The call store as operators see it: its state in `/v1/health` and `anchorage ctl health`,
//! and its figures in `/metrics` (store up, calls not yet written, write errors, load time).

use anchorage_store::StoreStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// The store's figures at one moment, for `/metrics`.
#[derive(Debug)]
pub struct StoreMetrics(pub StoreStatus);

impl Collector for StoreMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let gauges: [(&str, &str, i64); 3] = [
            (
                "anchorage_store_up",
                "1 when the last operation on the call store succeeded",
                i64::from(s.up),
            ),
            (
                "anchorage_store_dirty_calls",
                "Calls whose latest state is not written to the store yet",
                i64::try_from(s.dirty_calls).unwrap_or(i64::MAX),
            ),
            (
                "anchorage_store_live_calls",
                "Calls the store holds for this node",
                i64::try_from(s.live_calls).unwrap_or(i64::MAX),
            ),
        ];
        crate::api::encode_gauges(&mut encoder, &gauges)?;
        let counters = [
            (
                "anchorage_store_records_written",
                "Call records written to the store (puts and deletes)",
                s.records_written,
            ),
            (
                "anchorage_store_write_errors",
                "Failed or timed-out store operations",
                s.write_errors,
            ),
            (
                "anchorage_store_refills",
                "Times the store had lost this node's calls and every live call was written again",
                s.refills,
            ),
            (
                "anchorage_store_fenced_writes",
                "Writes the store refused because another node owns the call now (this node was fenced)",
                s.fenced_writes,
            ),
            (
                "anchorage_store_claimed_calls",
                "Calls this node took over from the store (at start, on a message, with the virtual IP)",
                s.claimed_calls,
            ),
        ];
        crate::api::encode_counters(&mut encoder, &counters)?;
        if let Some(ms) = s.last_load_ms {
            let gauge = ConstGauge::new(ms / 1000.0);
            gauge.encode(encoder.encode_descriptor(
                "anchorage_store_last_load_seconds",
                "How long the last load of records took",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
