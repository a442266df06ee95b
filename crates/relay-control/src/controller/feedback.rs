//! What flows back from the data plane (counters, last packets) and the timers: media and
//! offer timeouts, delayed deletes, the port quarantine; and the getters the I/O layer reads
//! for `/metrics`.

use std::time::Instant;

use anchorage_relay::{Expiry, MediaPair};

use super::{Controller, Expired, ExpiryReason, MediaAction, PortUsage, Statistics};
use crate::session::{Dialog, SessionKey};

impl Controller {
    /// The dialogs of a call (to refresh their counters before a `query` or `delete`).
    pub fn sessions_of(&self, call_id: &str) -> Vec<SessionKey> {
        self.calls
            .get(call_id)
            .map(|c| c.dialogs.iter().map(|d| d.key).collect())
            .unwrap_or_default()
    }

    /// Every dialog.
    pub fn sessions(&self) -> impl Iterator<Item = SessionKey> + '_ {
        self.keys.keys().copied()
    }

    /// The data plane's current state of a dialog's streams.
    pub fn observe(&mut self, key: SessionKey, snapshot: Vec<MediaPair>) {
        if let Some(dialog) = self.dialog_mut(key) {
            dialog.last_packet = snapshot.iter().filter_map(MediaPair::last_packet).max();
            dialog.snapshot = snapshot;
        }
    }

    /// The last packet the data plane saw on a dialog.
    pub fn observe_activity(&mut self, key: SessionKey, last_packet: Option<Instant>) {
        if let Some(dialog) = self.dialog_mut(key) {
            dialog.last_packet = dialog.last_packet.max(last_packet);
        }
    }

    fn dialog_mut(&mut self, key: SessionKey) -> Option<&mut Dialog> {
        let call_id = self.keys.get(&key)?;
        self.calls
            .get_mut(call_id)?
            .dialogs
            .iter_mut()
            .find(|d| d.key == key)
    }

    /// Ends what timed out by `now` and what a delayed `delete` scheduled; the I/O layer
    /// removes each expired dialog's media.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut due: Vec<(String, Vec<usize>, Vec<ExpiryReason>)> = Vec::new();
        for (call_id, call) in &self.calls {
            let mut indexes = Vec::new();
            let mut reasons = Vec::new();
            for (i, dialog) in call.dialogs.iter().enumerate() {
                let reason = if call.delete_at.is_some_and(|at| at <= now) {
                    Some(ExpiryReason::DelayedDelete)
                } else {
                    match dialog.liveness.check(now, dialog.last_packet) {
                        Some(Expiry::Media) => Some(ExpiryReason::Media),
                        Some(Expiry::Offer) => Some(ExpiryReason::Offer),
                        None => None,
                    }
                };
                if let Some(reason) = reason {
                    indexes.push(i);
                    reasons.push(reason);
                }
            }
            if !indexes.is_empty() {
                due.push((call_id.clone(), indexes, reasons));
            }
        }
        let mut expired = Vec::new();
        for (call_id, indexes, reasons) in due {
            let actions = self.remove_dialogs(&call_id, &indexes, now);
            for (action, reason) in actions.into_iter().zip(reasons) {
                if let MediaAction::Remove { key } = action {
                    if reason != ExpiryReason::DelayedDelete {
                        self.statistics.timeout_sessions += 1;
                    }
                    expired.push(Expired {
                        call_id: call_id.clone(),
                        key,
                        reason,
                    });
                }
            }
        }
        for pool in &mut self.pools {
            pool.reclaim(now);
        }
        expired
    }

    /// Lifetime counters.
    pub fn statistics(&self) -> Statistics {
        self.statistics
    }

    /// Calls in progress.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Dialogs in progress (each with its own ports).
    pub fn session_count(&self) -> usize {
        self.keys.len()
    }

    /// Port pool occupancy per interface.
    pub fn port_usage(&self) -> Vec<PortUsage> {
        self.config
            .interfaces
            .iter()
            .zip(&self.pools)
            .map(|(iface, pool)| PortUsage {
                interface: iface.name.clone(),
                in_use: pool.in_use(),
                free: pool.free(),
                quarantined: pool.quarantined(),
            })
            .collect()
    }
}
