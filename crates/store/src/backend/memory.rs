//! The memory backend: the embedded default, with no Redis. Records live as long as the process.

use std::collections::HashMap;
use std::sync::Arc;

use super::Write;
use crate::pending::Op;
use crate::record::{CallRecord, CseqReserved};

/// Records by Call-ID, with the CSeq reservations made apart from them.
#[derive(Default)]
pub(crate) struct MemoryBackend {
    records: HashMap<String, (Option<Arc<CallRecord>>, CseqReserved)>,
    drained: std::collections::BTreeSet<String>,
}

impl MemoryBackend {
    pub fn write(&mut self, batch: &[Write<'_>]) {
        for write in batch {
            match write.op {
                Op::Put(record) => {
                    let slot = self.records.entry(write.call_id.to_string()).or_default();
                    slot.0 = Some(record.clone());
                }
                Op::Delete => {
                    self.records.remove(write.call_id);
                }
            }
        }
    }

    pub fn reserve(&mut self, call_id: &str, upto: CseqReserved) {
        let slot = self.records.entry(call_id.to_string()).or_default();
        slot.1 = slot.1.max(upto);
    }

    pub fn load(&self, call_id: &str) -> Option<CallRecord> {
        let (record, reserved) = self.records.get(call_id)?;
        let mut record = CallRecord::clone(record.as_ref()?);
        record.cseq_reserved = record.cseq_reserved.max(*reserved);
        Some(record)
    }

    pub fn load_owned(&self, node: &str) -> Vec<CallRecord> {
        self.records
            .iter()
            .filter(|(_, (record, _))| record.as_ref().is_some_and(|r| r.owner == node))
            .filter_map(|(call_id, _)| self.load(call_id))
            .collect()
    }

    pub fn claim(&mut self, call_id: &str, me: &str) -> Option<CallRecord> {
        let slot = self.records.get_mut(call_id)?;
        let record = Arc::make_mut(slot.0.as_mut()?);
        record.owner = me.to_string();
        self.load(call_id)
    }

    pub fn claim_of(
        &mut self,
        node: &str,
        me: &str,
        mine: impl Fn(&str) -> bool,
    ) -> Vec<CallRecord> {
        let call_ids: Vec<String> = self
            .records
            .iter()
            .filter(|(_, (record, _))| record.as_ref().is_some_and(|r| r.owner == node))
            .map(|(call_id, _)| call_id.clone())
            .filter(|call_id| mine(call_id))
            .collect();
        call_ids
            .iter()
            .filter_map(|call_id| self.claim(call_id, me))
            .collect()
    }

    pub fn owner(&self, call_id: &str) -> Option<String> {
        let (record, _) = self.records.get(call_id)?;
        record.as_ref().map(|r| r.owner.clone())
    }

    pub fn set_drained(&mut self, relay: &str, drained: bool) {
        if drained {
            self.drained.insert(relay.to_string());
        } else {
            self.drained.remove(relay);
        }
    }

    pub fn drained(&self) -> Vec<String> {
        self.drained.iter().cloned().collect()
    }
}
