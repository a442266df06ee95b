//! Who may write a call: the fencing scripts, claims and heartbeats of the Redis backend.
//!
//! Each start of a node has a token, `NODE/EPOCH` (the epoch is random per start). A call's
//! hash holds its owner's token in `own`; every write, deletion and CSeq reservation is a
//! script that refuses to act when `own` names another token, so a node that lost a call (it
//! was frozen, another node claimed the call) cannot overwrite what the new owner wrote. A
//! claim is the one way `own` changes hands: the claimer reads the record and sets its own
//! token in one step.
//!
//! Keys besides the calls' (`P` is `cluster.key_prefix`):
//! * `P:gone:{CALL-ID}`: the token of the node that ended the call, for a minute (a tombstone
//!   in the call's hash slot);
//! * `P:nodes`: the set of node ids that ever beat;
//! * `P:relays:drained`: the relay nodes an operator drained (cluster-wide: the node that takes
//!   over goes on draining them);
//! * `P:node:NODE:alive`: NODE's token, expiring `cluster.lease_ms` after its last heartbeat;
//! * `P:node:NODE:sip`: the SIP address other nodes forward NODE's calls' messages to
//!   (active-active), with the same life;
//! * `P:node:NODE:orphans`: relay sessions NODE is to delete when their relay comes back
//!   (`RELAY \x1f CALL-ID`), taken with its calls by a node that takes them over.

use std::collections::HashMap;
use std::time::Duration;

use super::redis::{record_of, RedisBackend};
use crate::error::StoreError;
use crate::record::CallRecord;

/// Writes the record: KEYS[1] the call, KEYS[2] its tombstone; ARGV: token, record, TTL (ms).
/// 1 written, 0 fenced (another token owns the call, or ended it within the tombstone's life).
pub(super) const PUT_LUA: &str = r"
local own = redis.call('HGET', KEYS[1], 'own')
if not own then own = redis.call('GET', KEYS[2]) end
if own and own ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'own', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Deletes the record and leaves a tombstone with the owner's token for ARGV[2] ms, so a late
/// write of a fenced node cannot bring the call back: KEYS as for [`PUT_LUA`]; ARGV: token,
/// tombstone TTL. 1 done, 0 fenced.
pub(super) const DELETE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local own = redis.call('HGET', KEYS[1], 'own')
if own and own ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Raises `cse` and `csr` to at least ARGV[1] and ARGV[2] and refreshes the TTL (ARGV[3] ms)
/// unless another token owns the call (ARGV[4]). 1 done, 0 fenced.
pub(super) const RESERVE_LUA: &str = r"
local key = KEYS[1]
local own = redis.call('HGET', key, 'own')
if own and own ~= ARGV[4] then return 0 end
local function raise(field, value)
  local current = tonumber(redis.call('HGET', key, field) or '0')
  if tonumber(value) > current then redis.call('HSET', key, field, value) end
end
raise('cse', ARGV[1])
raise('csr', ARGV[2])
redis.call('HSET', key, 'own', ARGV[4])
redis.call('PEXPIRE', key, ARGV[3])
return 1
";

/// Takes the call: ARGV: the claimer's token, the prefix the current owner's token must have
/// ('' = any owner; a record without an owner token is always taken), TTL (ms), and '1' to
/// leave a call the claimer owns already. Returns the whole hash once taken, an empty array
/// for a call left as the claimer's, nil when there is no record or another owner holds it.
pub(super) const CLAIM_LUA: &str = r"
local rec = redis.call('HGET', KEYS[1], 'rec')
if not rec then return false end
local own = redis.call('HGET', KEYS[1], 'own') or ''
if ARGV[4] == '1' and own == ARGV[1] then return {} end
if ARGV[2] ~= '' and own ~= '' and string.sub(own, 1, string.len(ARGV[2])) ~= ARGV[2] then
  return false
end
redis.call('HSET', KEYS[1], 'own', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('HGETALL', KEYS[1])
";

/// A call's hash as Redis returns it.
type Fields = HashMap<String, Vec<u8>>;

/// How long a node's list of sessions to delete lives after its last change (s).
const ORPHANS_TTL_S: u64 = 3_600;

/// One entry of a node's list of sessions to delete: the relay, a unit separator, the call.
fn orphan_entry(relay: &str, call_id: &str) -> String {
    format!("{relay}\u{1f}{call_id}")
}

/// (relay, call) of an [`orphan_entry`].
fn split_orphan(entry: &str) -> Option<(&str, &str)> {
    entry.split_once('\u{1f}')
}

/// One node as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeState {
    /// Its `[node] id`.
    pub id: String,
    /// The epoch of its current start, while its heartbeat is fresh.
    pub epoch: Option<String>,
    /// Whether its heartbeat is fresh (younger than `cluster.lease_ms`).
    pub alive: bool,
    /// Calls its index lists (a hint: calls claimed away may still be counted until the
    /// index is repaired).
    pub calls: u64,
    /// Its token (`NODE/EPOCH`) while its heartbeat is fresh.
    #[serde(skip)]
    pub token: Option<String>,
    /// The SIP address it gave with its heartbeat (where other nodes forward its calls'
    /// messages), while fresh.
    pub sip: Option<std::net::SocketAddr>,
}

impl RedisBackend {
    fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}:node:{node}:alive", self.prefix)
    }

    fn orphans_key(&self, node: &str) -> String {
        format!("{}:node:{node}:orphans", self.prefix)
    }

    /// Notes that call `call_id`'s session on relay `relay` is to be deleted when the relay
    /// comes back (this node's list; kept an hour past its last change, the longest a relay
    /// keeps an idle session).
    pub async fn add_orphan(&mut self, relay: &str, call_id: &str) -> Result<(), StoreError> {
        let key = self.orphans_key(&self.node);
        self.query::<()>(
            redis::cmd("SADD")
                .arg(&key)
                .arg(orphan_entry(relay, call_id))
                .clone(),
        )
        .await?;
        self.query::<()>(redis::cmd("EXPIRE").arg(&key).arg(ORPHANS_TTL_S).clone())
            .await
    }

    /// Relay `relay` is back and its sessions to delete were deleted: off this node's list.
    pub async fn clear_orphans(&mut self, relay: &str) -> Result<(), StoreError> {
        let key = self.orphans_key(&self.node);
        let entries: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&key).clone()).await?;
        let done: Vec<&String> = entries
            .iter()
            .filter(|e| split_orphan(e).is_some_and(|(r, _)| r == relay))
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        self.query::<()>(redis::cmd("SREM").arg(&key).arg(done).clone())
            .await
    }

    /// Takes off `node`'s list the sessions to delete that `mine` accepts (by call), and
    /// returns them as (relay, call): the taker deletes them (or lists them as its own).
    pub async fn take_orphans_of(
        &mut self,
        node: &str,
        mine: impl Fn(&str) -> bool,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.orphans_key(node);
        let entries: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&key).clone()).await?;
        let taken: Vec<&String> = entries
            .iter()
            .filter(|e| split_orphan(e).is_some_and(|(_, call)| mine(call)))
            .collect();
        if taken.is_empty() {
            return Ok(Vec::new());
        }
        self.query::<()>(redis::cmd("SREM").arg(&key).arg(&taken).clone())
            .await?;
        Ok(taken
            .into_iter()
            .filter_map(|e| split_orphan(e))
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect())
    }

    fn relays_key(&self, node: &str) -> String {
        format!("{}:node:{node}:relays", self.prefix)
    }

    /// Publishes the calls this node anchored on each relay, alive for `lease` (other nodes
    /// add them to their own in the choice of the least loaded relay).
    pub async fn publish_relay_calls(
        &mut self,
        calls: &[(String, u64)],
        lease: Duration,
    ) -> Result<(), StoreError> {
        let key = self.relays_key(&self.node);
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&key).ignore();
        if !calls.is_empty() {
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for (relay, n) in calls {
                hset.arg(relay).arg(n);
            }
            pipe.add_command(hset).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(lease_ms).ignore();
        }
        self.query_pipes::<()>(vec![pipe]).await.map(|_| ())
    }

    /// The calls each of `nodes` published per relay, summed by relay.
    pub async fn relay_calls_of(
        &mut self,
        nodes: &[String],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut sum: HashMap<String, u64> = HashMap::new();
        for node in nodes {
            let calls: HashMap<String, u64> = self
                .query(redis::cmd("HGETALL").arg(self.relays_key(node)).clone())
                .await?;
            for (relay, n) in calls {
                *sum.entry(relay).or_default() += n;
            }
        }
        Ok(sum)
    }

    fn sip_key(&self, node: &str) -> String {
        format!("{}:node:{node}:sip", self.prefix)
    }

    /// Takes one call whoever owns it; its record, or none if the store has none.
    pub async fn claim(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let cmd = self.claim_cmd(call_id, "", false);
        let fields: Option<Fields> = self.query(cmd).await?;
        let Some(fields) = fields else {
            return Ok(None);
        };
        let record = record_of(call_id, &fields)?;
        if record.is_some() {
            self.query::<()>(
                redis::cmd("SADD")
                    .arg(self.owner_key(&self.node))
                    .arg(call_id)
                    .clone(),
            )
            .await?;
        }
        Ok(record)
    }

    /// The claim script for one call; `leave_mine`: a call this start owns already is left
    /// (answered with an empty hash).
    fn claim_cmd(&self, call_id: &str, from_prefix: &str, leave_mine: bool) -> redis::Cmd {
        self.script(CLAIM_LUA, &[&self.call_key(call_id)])
            .arg(self.token())
            .arg(from_prefix)
            .arg(self.ttl_ms)
            .arg(if leave_mine { "1" } else { "0" })
            .clone()
    }

    /// Takes every call that `node`'s index lists and that `node` (any start of it) still
    /// owns, and moves them to this node's index. `node` may be this node itself: the calls
    /// of its previous start.
    pub async fn claim_of(
        &mut self,
        node: &str,
        mine: impl Fn(&str) -> bool,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let index = self.owner_key(node);
        let listed: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&index).clone())
            .await?;
        // The calls left to other nodes stay in the index for them.
        let call_ids: Vec<String> = listed.into_iter().filter(|c| mine(c)).collect();
        let prefix = format!("{node}/");
        let mut records = Vec::with_capacity(call_ids.len());
        let mut stale = Vec::new();
        for chunk in call_ids.chunks(256) {
            let pipes: Vec<redis::Pipeline> = if self.link.is_cluster() {
                chunk
                    .iter()
                    .map(|call_id| {
                        let mut pipe = redis::pipe();
                        pipe.add_command(self.claim_cmd(call_id, &prefix, true));
                        pipe
                    })
                    .collect()
            } else {
                let mut pipe = redis::pipe();
                for call_id in chunk {
                    pipe.add_command(self.claim_cmd(call_id, &prefix, true));
                }
                vec![pipe]
            };
            let answers: Vec<Vec<Option<Fields>>> = self.query_pipes(pipes).await?;
            let mut taken = Vec::new();
            for (call_id, fields) in chunk.iter().zip(answers.into_iter().flatten()) {
                // Already this start's (it claimed the call before): nothing to take.
                if fields.as_ref().is_some_and(HashMap::is_empty) {
                    continue;
                }
                match fields.map(|f| record_of(call_id, &f)) {
                    Some(Ok(Some(record))) => {
                        taken.push(call_id.clone());
                        records.push(record);
                    }
                    Some(Err(error)) => {
                        tracing::warn!(call_id = %call_id, "not claimed: {error}")
                    }
                    // Gone, or owned by another node now.
                    _ => stale.push(call_id.clone()),
                }
            }
            if !taken.is_empty() && node != self.node {
                self.query::<()>(
                    redis::cmd("SADD")
                        .arg(self.owner_key(&self.node))
                        .arg(&taken)
                        .clone(),
                )
                .await?;
            }
        }
        // The index of another node loses every entry (each was claimed here, is owned by a
        // third node, or is gone); this node's own loses the calls it no longer owns.
        let remove = if node == self.node { stale } else { call_ids };
        if !remove.is_empty() {
            self.query::<()>(redis::cmd("SREM").arg(&index).arg(&remove).clone())
                .await?;
        }
        Ok(records)
    }

    /// The token of the node start that owns `call_id`, if the call has a record.
    pub async fn owner(&mut self, call_id: &str) -> Result<Option<String>, StoreError> {
        self.query(
            redis::cmd("HGET")
                .arg(self.call_key(call_id))
                .arg("own")
                .clone(),
        )
        .await
    }

    /// Writes this node's heartbeat: its token (and SIP address, for the nodes that forward
    /// to it), alive for `lease`.
    pub async fn heartbeat(
        &mut self,
        lease: Duration,
        sip: Option<&str>,
    ) -> Result<(), StoreError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let beat = redis::cmd("SET")
            .arg(self.alive_key(&self.node))
            .arg(self.token())
            .arg("PX")
            .arg(lease_ms)
            .clone();
        self.query::<()>(beat).await?;
        if let Some(sip) = sip {
            let address = redis::cmd("SET")
                .arg(self.sip_key(&self.node))
                .arg(sip)
                .arg("PX")
                .arg(lease_ms)
                .clone();
            self.query::<()>(address).await?;
        }
        let join = redis::cmd("SADD")
            .arg(self.nodes_key())
            .arg(&self.node)
            .clone();
        self.query::<()>(join).await
    }

    /// Records that an operator drained relay `relay` (or undrained it).
    pub async fn set_drained(&mut self, relay: &str, drained: bool) -> Result<(), StoreError> {
        let key = format!("{}:relays:drained", self.prefix);
        let cmd = if drained {
            redis::cmd("SADD").arg(key).arg(relay).clone()
        } else {
            redis::cmd("SREM").arg(key).arg(relay).clone()
        };
        self.query::<()>(cmd).await
    }

    /// The relays drained cluster-wide.
    pub async fn drained(&mut self) -> Result<Vec<String>, StoreError> {
        let key = format!("{}:relays:drained", self.prefix);
        let mut relays: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(key).clone()).await?;
        relays.sort();
        Ok(relays)
    }

    /// Every node that ever beat, with its heartbeat and its index's size.
    pub async fn nodes(&mut self) -> Result<Vec<NodeState>, StoreError> {
        let mut ids: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.nodes_key()).clone())
            .await?;
        ids.sort();
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            let token: Option<String> = self
                .query(redis::cmd("GET").arg(self.alive_key(&id)).clone())
                .await?;
            let calls: u64 = self
                .query(redis::cmd("SCARD").arg(self.owner_key(&id)).clone())
                .await?;
            let sip: Option<String> = self
                .query(redis::cmd("GET").arg(self.sip_key(&id)).clone())
                .await?;
            let epoch = token
                .as_deref()
                .and_then(|t| t.rsplit_once('/'))
                .map(|(_, epoch)| epoch.to_string());
            nodes.push(NodeState {
                alive: epoch.is_some(),
                token,
                sip: sip.and_then(|s| s.parse().ok()),
                id,
                epoch,
                calls,
            });
        }
        Ok(nodes)
    }
}
