//! The Redis backend: keys, the write pipeline, the CSeq reservation script and loading.
//!
//! Keys (`P` is `cluster.key_prefix`):
//! * `P:call:{CALL-ID}`: a hash with `rec` (the JSON record), `own` (the owner's token,
//!   `NODE/EPOCH`: see `ownership.rs`) and `cse` / `csr` (the CSeq numbers reserved towards the
//!   callee / caller, raised only by [`RedisBackend::reserve`]); every write sets its TTL
//!   (`cluster.record_ttl_s`). The braces make the Call-ID the Redis Cluster hash tag. Every
//!   write is a script that refuses it when `own` names another owner (fencing).
//! * `P:owner:NODE`: the set of Call-IDs NODE owns, a hint repaired by `load_owned`.
//! * `P:node:NODE:marker`: a random value set when the store starts; its absence means Redis lost
//!   its data since, and every live call is written again.

use std::collections::HashMap;
use std::time::Duration;

use anchorage_config::cluster::Secret;
use redis::{FromRedisValue, RedisError};

use super::link::{Link, Target};
use super::ownership::{DELETE_LUA, PUT_LUA, RESERVE_LUA};
use super::Write;
use crate::error::StoreError;
use crate::pending::Op;
use crate::record::{CallRecord, CseqReserved};

/// How long a deleted call's key keeps its owner's token, so that a late write of a node that
/// lost the call cannot bring it back.
const TOMBSTONE_MS: u64 = 60_000;

/// Turns Redis errors into store errors that name the location without the password.
pub(crate) struct Redactor {
    location: String,
    password: Option<Secret>,
    timeout_ms: u64,
}

impl Redactor {
    /// For `target`.
    pub fn new(target: &Target) -> Redactor {
        Redactor {
            location: target.location.to_string(),
            password: target.password.clone(),
            timeout_ms: u64::try_from(target.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A store error for a Redis error, with the password scrubbed from the server's words.
    pub fn error(&self, error: RedisError) -> StoreError {
        let mut detail = error.to_string();
        if let Some(password) = &self.password {
            if !password.expose().is_empty() {
                detail = detail.replace(password.expose(), "***");
            }
        }
        if is_refused_credentials(&error, &detail) {
            StoreError::Auth {
                location: self.location.clone(),
                detail,
            }
        } else if error.is_timeout() {
            self.timeout()
        } else {
            StoreError::Redis {
                location: self.location.clone(),
                detail,
            }
        }
    }

    /// The error of an operation that did not finish within the timeout.
    pub fn timeout(&self) -> StoreError {
        StoreError::Timeout {
            location: self.location.clone(),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// The Redis backend.
pub(crate) struct RedisBackend {
    pub(super) link: Link,
    redactor: Redactor,
    pub(super) prefix: String,
    pub(super) node: String,
    /// Unique to this start of the process: the epoch of this node's token.
    marker: String,
    pub(super) ttl_ms: u64,
    timeout: Duration,
    /// The SHA1 of each script, for EVALSHA.
    shas: [(&'static str, String); 4],
    /// Whether writes are fenced (checked against the owner's token by a script): with several
    /// nodes (`cluster.mode` other than `single`). One node writes plainly — a restart of it is
    /// the only other writer, and it claims before it writes.
    fencing: bool,
    /// Whether the server has the scripts (`SCRIPT LOAD`): writes then send their hash
    /// (EVALSHA), not their text. Cleared by a NOSCRIPT answer (a restarted or failed-over
    /// Redis); the next heartbeat loads them again, and EVAL serves meanwhile.
    scripts_loaded: bool,
}

impl RedisBackend {
    /// A backend for `node` writing keys under `prefix`; connects on first use.
    pub fn new(
        target: &Target,
        prefix: &str,
        node: &str,
        marker: String,
        ttl: Duration,
        fencing: bool,
    ) -> Result<RedisBackend, StoreError> {
        let redactor = Redactor::new(target);
        let link = Link::new(target).map_err(|e| redactor.error(e))?;
        Ok(RedisBackend {
            link,
            redactor,
            prefix: prefix.to_string(),
            node: node.to_string(),
            marker,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            timeout: target.timeout,
            shas: [
                PUT_LUA,
                DELETE_LUA,
                RESERVE_LUA,
                super::ownership::CLAIM_LUA,
            ]
            .map(|code| (code, redis::Script::new(code).get_hash().to_string())),
            fencing,
            scripts_loaded: false,
        })
    }

    /// The key of a call's record.
    pub fn call_key(&self, call_id: &str) -> String {
        format!("{}:call:{{{call_id}}}", self.prefix)
    }

    /// The key of a call's tombstone (same hash slot as its record).
    pub(super) fn gone_key(&self, call_id: &str) -> String {
        format!("{}:gone:{{{call_id}}}", self.prefix)
    }

    /// This start's token: what `own` holds in the records this node may write.
    pub(super) fn token(&self) -> String {
        format!("{}/{}", self.node, self.marker)
    }

    pub(super) fn owner_key(&self, node: &str) -> String {
        format!("{}:owner:{node}", self.prefix)
    }

    fn marker_key(&self) -> String {
        format!("{}:node:{}:marker", self.prefix, self.node)
    }

    /// Runs `op` on the connection within the timeout; on failure the link is told, so it can
    /// reconnect.
    async fn run<T, F>(&mut self, op: F) -> Result<T, StoreError>
    where
        F: for<'a> FnOnce(&'a mut Link) -> redis::RedisFuture<'a, T>,
    {
        let timeout = self.timeout;
        let result = tokio::time::timeout(timeout, async {
            self.link.ensure().await?;
            op(&mut self.link).await
        })
        .await;
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if error.code() == Some("NOSCRIPT") || error.to_string().contains("NOSCRIPT") {
                    self.scripts_loaded = false;
                }
                self.link.after_error(&error);
                Err(self.redactor.error(error))
            }
            Err(_) => {
                self.link
                    .after_error(&RedisError::from((redis::ErrorKind::Io, "timed out")));
                Err(self.redactor.timeout())
            }
        }
    }

    /// Connects (through Sentinel, or to the Cluster) waiting for the attempt to end rather
    /// than for one operation's timeout, so that at start a refused password or an untrusted
    /// certificate is reported as such, not as a timeout. The attempt is bounded by itself.
    pub async fn connect(&mut self) -> Result<(), StoreError> {
        match self.link.ensure().await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.link.after_error(&error);
                Err(self.redactor.error(error))
            }
        }
    }

    /// Runs one command.
    pub(super) async fn query<T: FromRedisValue + Send + 'static>(
        &mut self,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        self.run(move |link| Box::pin(async move { cmd.query_async(link).await }))
            .await
    }

    /// Runs one pipeline.
    pub(super) async fn query_pipe<T: FromRedisValue + Send + 'static>(
        &mut self,
        pipe: redis::Pipeline,
    ) -> Result<T, StoreError> {
        self.run(move |link| Box::pin(async move { pipe.query_async(link).await }))
            .await
    }

    /// Runs pipelines: all at once over a Redis Cluster (each must stay within one slot),
    /// one after the other otherwise.
    pub(super) async fn query_pipes<T: FromRedisValue + Send + 'static>(
        &mut self,
        pipes: Vec<redis::Pipeline>,
    ) -> Result<Vec<T>, StoreError> {
        if !self.link.is_cluster() {
            let mut out = Vec::with_capacity(pipes.len());
            for pipe in pipes {
                out.push(self.query_pipe(pipe).await?);
            }
            return Ok(out);
        }
        self.run(move |link| {
            let connection = link.cluster_connection();
            Box::pin(async move {
                let connection = connection.ok_or_else(super::link::not_connected)?;
                let sends = pipes.iter().map(|pipe| {
                    let mut connection = connection.clone();
                    async move { pipe.query_async::<T>(&mut connection).await }
                });
                futures_util::future::try_join_all(sends).await
            })
        })
        .await
    }

    /// The index changes of a put: the call in its owner's index (and out of its old owner's),
    /// each in a pipeline of its own over a Redis Cluster.
    fn index_put(&self, pipes: &mut Vec<redis::Pipeline>, write: &Write<'_>) {
        let split = self.link.is_cluster();
        let next = |pipes: &mut Vec<redis::Pipeline>| {
            if split && !pipes.last().is_some_and(|p| p.is_empty()) {
                pipes.push(redis::pipe());
            }
            pipes.len() - 1
        };
        let last = next(pipes);
        pipes[last]
            .sadd(self.owner_key(write.owner), write.call_id)
            .ignore();
        if let Some(old) = write.old_owner {
            let last = next(pipes);
            pipes[last]
                .srem(self.owner_key(old), write.call_id)
                .ignore();
        }
    }

    /// The pipelines that write `batch`: one, or over a Redis Cluster one per key. Each write's
    /// script is the one command of its pipeline whose answer is kept (1 written, 0 fenced).
    fn write_pipes(&self, batch: &[Write<'_>]) -> Vec<redis::Pipeline> {
        let split = self.link.is_cluster();
        let token = self.token();
        let mut pipes = vec![redis::pipe()];
        let next = |pipes: &mut Vec<redis::Pipeline>| {
            if split && !pipes.last().is_some_and(|p| p.is_empty()) {
                pipes.push(redis::pipe());
            }
        };
        for write in batch {
            let key = self.call_key(write.call_id);
            next(&mut pipes);
            let last = pipes.len() - 1;
            match write.op {
                Op::Put(record) if !self.fencing => {
                    pipes[last]
                        .hset_multiple(
                            &key,
                            &[("rec", record.encode()), ("own", token.as_bytes().to_vec())],
                        )
                        .ignore()
                        .pexpire(&key, self.ttl_ms as i64)
                        .ignore();
                    self.index_put(&mut pipes, write);
                }
                Op::Delete if !self.fencing => {
                    pipes[last].del(&key).ignore();
                    next(&mut pipes);
                    let last = pipes.len() - 1;
                    pipes[last]
                        .srem(self.owner_key(write.owner), write.call_id)
                        .ignore();
                }
                Op::Put(record) => {
                    let gone = self.gone_key(write.call_id);
                    let put = self
                        .script(PUT_LUA, &[&key, &gone])
                        .arg(&token)
                        .arg(record.encode())
                        .arg(self.ttl_ms)
                        .clone();
                    pipes[last].add_command(put);
                    self.index_put(&mut pipes, write);
                }
                Op::Delete => {
                    let gone = self.gone_key(write.call_id);
                    let delete = self
                        .script(DELETE_LUA, &[&key, &gone])
                        .arg(&token)
                        .arg(TOMBSTONE_MS)
                        .clone();
                    pipes[last].add_command(delete);
                    next(&mut pipes);
                    let last = pipes.len() - 1;
                    pipes[last]
                        .srem(self.owner_key(write.owner), write.call_id)
                        .ignore();
                }
            }
        }
        pipes
    }

    /// Writes the batch; for each write, whether it was done (false: another node owns the
    /// call now, and the write was refused).
    pub async fn write(&mut self, batch: &[Write<'_>]) -> Result<Vec<bool>, StoreError> {
        let pipes = self.write_pipes(batch);
        if !self.fencing {
            self.query_pipes::<()>(pipes).await?;
            return Ok(vec![true; batch.len()]);
        }
        let answers: Vec<Vec<i64>> = self.query_pipes(pipes).await?;
        Ok(answers
            .into_iter()
            .flatten()
            .map(|done| done == 1)
            .collect())
    }

    /// Raises the call's reservations; false when another node owns the call (fenced).
    pub async fn reserve(&mut self, call_id: &str, upto: CseqReserved) -> Result<bool, StoreError> {
        let reserve = self
            .script(RESERVE_LUA, &[&self.call_key(call_id)])
            .arg(upto.to_callee)
            .arg(upto.to_caller)
            .arg(self.ttl_ms)
            .arg(self.token())
            .clone();
        let done: i64 = self.query(reserve).await?;
        Ok(done == 1)
    }

    pub async fn load(&mut self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let fields: HashMap<String, Vec<u8>> = self.query(hgetall(self.call_key(call_id))).await?;
        record_of(call_id, &fields)
    }

    pub async fn load_owned(&mut self, node: &str) -> Result<Vec<CallRecord>, StoreError> {
        let index = self.owner_key(node);
        let call_ids: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(&index).clone())
            .await?;
        let mut records = Vec::with_capacity(call_ids.len());
        let mut stale = Vec::new();
        for chunk in call_ids.chunks(256) {
            let all: Vec<HashMap<String, Vec<u8>>> = if self.link.is_cluster() {
                let pipes = chunk
                    .iter()
                    .map(|call_id| {
                        let mut pipe = redis::pipe();
                        pipe.add_command(hgetall(self.call_key(call_id)));
                        pipe
                    })
                    .collect();
                let each: Vec<Vec<HashMap<String, Vec<u8>>>> = self.query_pipes(pipes).await?;
                each.into_iter().flatten().collect()
            } else {
                let mut pipe = redis::pipe();
                for call_id in chunk {
                    pipe.add_command(hgetall(self.call_key(call_id)));
                }
                self.query_pipe(pipe).await?
            };
            for (call_id, fields) in chunk.iter().zip(all) {
                match record_of(call_id, &fields) {
                    Ok(Some(record)) if record.owner == node => records.push(record),
                    Ok(_) => stale.push(call_id.clone()),
                    Err(error) => tracing::warn!(call_id = %call_id, "not loaded: {error}"),
                }
            }
        }
        if !stale.is_empty() {
            // Index entries of calls that ended, expired or moved to another owner.
            self.query::<()>(redis::cmd("SREM").arg(index).arg(stale).clone())
                .await?;
        }
        Ok(records)
    }

    /// Whether this node's marker is still there; sets it again when it is not.
    pub async fn check_marker(&mut self) -> Result<bool, StoreError> {
        let found: Option<String> = self
            .query(redis::cmd("GET").arg(self.marker_key()).clone())
            .await?;
        if found.is_none() {
            self.set_marker().await?;
        }
        if !self.scripts_loaded {
            self.load_scripts().await?;
        }
        Ok(found.is_some())
    }

    /// Loads the scripts into the server, so writes can name them by hash. Over a Redis
    /// Cluster they stay sent in full (EVAL): every primary would need them.
    async fn load_scripts(&mut self) -> Result<(), StoreError> {
        if self.link.is_cluster() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (code, _) in &self.shas {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*code).ignore();
        }
        self.query_pipe::<()>(pipe).await?;
        self.scripts_loaded = true;
        Ok(())
    }

    /// The script `code` with its keys, for the caller to add its arguments: by hash once the
    /// server has the scripts, else in full.
    pub(super) fn script(&self, code: &'static str, keys: &[&str]) -> redis::Cmd {
        let sha = self
            .shas
            .iter()
            .find(|(c, _)| std::ptr::eq(*c, code))
            .map(|(_, sha)| sha.as_str());
        let mut cmd = match sha {
            Some(sha) if self.scripts_loaded => redis::cmd("EVALSHA").arg(sha).clone(),
            _ => redis::cmd("EVAL").arg(code).clone(),
        };
        cmd.arg(keys.len()).arg(keys);
        cmd
    }

    /// Sets this node's marker (at start: what Redis holds now is the baseline) and loads
    /// the scripts.
    pub async fn set_marker(&mut self) -> Result<(), StoreError> {
        let set = redis::cmd("SET")
            .arg(self.marker_key())
            .arg(&self.marker)
            .clone();
        self.query::<()>(set).await?;
        self.load_scripts().await
    }
}

/// Whether `error` (whose text is `detail`) says Redis refused the credentials. The Cluster
/// client reports that it reached no seed node as an I/O error that carries the cause only as
/// text ("Failed to create initial connections - Io: Password authentication failed -
/// AuthenticationFailed"), so the text is read too.
fn is_refused_credentials(error: &RedisError, detail: &str) -> bool {
    const REFUSALS: [&str; 4] = ["AuthenticationFailed", "WRONGPASS", "NOAUTH", "NOPERM"];
    matches!(error.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || REFUSALS.iter().any(|word| detail.contains(word))
}

pub(super) fn hgetall(key: String) -> redis::Cmd {
    redis::cmd("HGETALL").arg(key).clone()
}

/// The record in a call hash's fields, with the reservations made apart from it.
pub(super) fn record_of(
    call_id: &str,
    fields: &HashMap<String, Vec<u8>>,
) -> Result<Option<CallRecord>, StoreError> {
    let Some(bytes) = fields.get("rec") else {
        return Ok(None);
    };
    let mut record = CallRecord::decode(bytes).map_err(|source| StoreError::Record {
        call_id: call_id.to_string(),
        source,
    })?;
    let number = |field: &str| {
        fields
            .get(field)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    // `own` is the truth of who owns the call (a claim changes it, not the JSON).
    if let Some(owner) = fields
        .get("own")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|token| token.rsplit_once('/'))
        .map(|(node, _)| node)
    {
        record.owner = owner.to_string();
    }
    record.cseq_reserved = record.cseq_reserved.max(CseqReserved {
        to_callee: number("cse"),
        to_caller: number("csr"),
    });
    Ok(Some(record))
}
