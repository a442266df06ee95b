//! The transaction table: every live transaction of a node, matched by key
//! ([RFC 3261 §17.1.3, §17.2.3](https://www.rfc-editor.org/rfc/rfc3261#section-17.2.3)) and
//! driven by one timer heap.
//!
//! Memory stays flat under load: transactions live in a slab of reusable slots (a slot is
//! freed the moment its transaction reaches `Terminated`, RFC 3261 §17.1.1.2), each live
//! transaction has at most one entry in an indexed binary heap (its earliest deadline,
//! updated in place, removed with the transaction), and the two key indexes map a 64-bit
//! key hash to a chain of slots. Every structure is bounded by the peak number of live
//! transactions, never by the number ever created.
//!
//! A [`TxId`] carries a generation, so an id kept after its transaction ended never reaches
//! the transaction that reuses its slot.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::key::{ClientKey, ServerKey, StoredKey};
use super::timers::{TimerConfig, TimerConfigError};
use super::{
    Action, ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TransactionError,
};

/// A handle on a transaction in a [`TransactionTable`]: a slot and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId {
    index: u32,
    generation: u32,
}

/// One transaction of any of the four kinds.
#[derive(Debug)]
pub enum Transaction {
    /// §17.1.1.
    ClientInvite(ClientInvite),
    /// §17.1.2.
    ClientNonInvite(ClientNonInvite),
    /// §17.2.1.
    ServerInvite(ServerInvite),
    /// §17.2.2.
    ServerNonInvite(ServerNonInvite),
}

impl Transaction {
    /// Whether the transaction is terminated.
    pub fn is_terminated(&self) -> bool {
        match self {
            Self::ClientInvite(tx) => tx.is_terminated(),
            Self::ClientNonInvite(tx) => tx.is_terminated(),
            Self::ServerInvite(tx) => tx.is_terminated(),
            Self::ServerNonInvite(tx) => tx.is_terminated(),
        }
    }

    /// The transaction's earliest deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::ClientInvite(tx) => tx.poll_timeout(),
            Self::ClientNonInvite(tx) => tx.poll_timeout(),
            Self::ServerInvite(tx) => tx.poll_timeout(),
            Self::ServerNonInvite(tx) => tx.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Self::ClientInvite(tx) => tx.handle_timeout(now),
            Self::ClientNonInvite(tx) => tx.handle_timeout(now),
            Self::ServerInvite(tx) => tx.handle_timeout(now),
            Self::ServerNonInvite(tx) => tx.handle_timeout(now),
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        match self {
            Self::ClientInvite(tx) => tx.poll_action(),
            Self::ClientNonInvite(tx) => tx.poll_action(),
            Self::ServerInvite(tx) => tx.poll_action(),
            Self::ServerNonInvite(tx) => tx.poll_action(),
        }
    }

    fn is_client(&self) -> bool {
        matches!(self, Self::ClientInvite(_) | Self::ClientNonInvite(_))
    }
}

/// What the table refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TableError {
    /// The id names no live transaction (it terminated, or never existed here).
    #[error("no such transaction")]
    UnknownTransaction,
    /// A transaction with an equal key exists already.
    #[error("a transaction with this key exists")]
    Duplicate(TxId),
    /// The key's method does not fit the kind of transaction (an INVITE key for a
    /// non-INVITE transaction, an ACK, …).
    #[error("the key's method does not fit this kind of transaction")]
    MethodMismatch,
    /// The input does not apply to this kind of transaction (an ACK to a client
    /// transaction, a received response to a server transaction, …).
    #[error("this input does not apply to this kind of transaction")]
    WrongKind,
    /// More than `u32::MAX` live transactions.
    #[error("the table is full")]
    Full,
    /// The transaction refused the input.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
}

/// Capacities of the table's internal structures, for checking that memory stays flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableCapacity {
    /// Slots of the slab (live and free).
    pub slots: usize,
    /// Entries the timer heap can hold.
    pub timer_heap: usize,
    /// Entries of the slot → heap position index.
    pub timer_positions: usize,
    /// Capacity of the client key index.
    pub client_index: usize,
    /// Capacity of the server key index.
    pub server_index: usize,
    /// Capacity of the action queue.
    pub actions: usize,
}

const NO_POSITION: u32 = u32::MAX;

/// `at` as nanoseconds since `epoch` (0 before it; saturating after 584 years).
fn tick(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A min-heap of (deadline, slot) with one entry per slot, updated in place. Deadlines are
/// nanoseconds since the table's epoch: integer comparisons, 12-byte entries.
#[derive(Debug, Default)]
struct TimerHeap {
    heap: Vec<(u64, u32)>,
    /// `positions[slot]` is the slot's index in `heap`, or `NO_POSITION`.
    positions: Vec<u32>,
}

impl TimerHeap {
    fn peek(&self) -> Option<(u64, u32)> {
        self.heap.first().copied()
    }

    fn position(&self, slot: u32) -> Option<usize> {
        match self.positions.get(slot as usize) {
            Some(&p) if p != NO_POSITION => Some(p as usize),
            _ => None,
        }
    }

    fn set_position(&mut self, slot: u32, position: u32) {
        if let Some(p) = self.positions.get_mut(slot as usize) {
            *p = position;
        }
    }

    /// Sets (or clears) the deadline of `slot`.
    fn set(&mut self, slot: u32, at: Option<u64>) {
        if self.positions.len() <= slot as usize {
            self.positions.resize(slot as usize + 1, NO_POSITION);
        }
        match (self.position(slot), at) {
            (None, None) => {}
            (None, Some(at)) => {
                let i = self.heap.len();
                self.heap.push((at, slot));
                self.sift_up(i);
            }
            (Some(i), Some(at)) => {
                if let Some(entry) = self.heap.get_mut(i) {
                    let earlier = at < entry.0;
                    entry.0 = at;
                    if earlier {
                        self.sift_up(i);
                    } else {
                        self.sift_down(i);
                    }
                }
            }
            (Some(i), None) => {
                self.set_position(slot, NO_POSITION);
                let Some(last) = self.heap.pop() else {
                    return;
                };
                if i < self.heap.len() {
                    // The last entry fills the hole, then finds its place.
                    self.place(i, last);
                    if self.sift_up(i) == i {
                        self.sift_down(i);
                    }
                }
            }
        }
    }

    /// Puts `item` at heap index `i` and records its position.
    fn place(&mut self, i: usize, item: (u64, u32)) {
        if let Some(e) = self.heap.get_mut(i) {
            *e = item;
        }
        self.set_position(item.1, i as u32);
    }

    /// Moves the entry at `i` up to its place; returns where it ended.
    fn sift_up(&mut self, mut i: usize) -> usize {
        let Some(&item) = self.heap.get(i) else {
            return i;
        };
        while i > 0 {
            let parent = (i - 1) / 2;
            let Some(&p) = self.heap.get(parent) else {
                break;
            };
            if item.0 >= p.0 {
                break;
            }
            self.place(i, p);
            i = parent;
        }
        self.place(i, item);
        i
    }

    /// Moves the entry at `i` down to its place.
    fn sift_down(&mut self, mut i: usize) {
        let Some(&item) = self.heap.get(i) else {
            return;
        };
        loop {
            let left = 2 * i + 1;
            let Some(&l) = self.heap.get(left) else {
                break;
            };
            let (child, c) = match self.heap.get(left + 1) {
                Some(&r) if r.0 < l.0 => (left + 1, r),
                _ => (left, l),
            };
            if c.0 >= item.0 {
                break;
            }
            self.place(i, c);
            i = child;
        }
        self.place(i, item);
    }
}

/// The key indexes hold hashes already: pass them through.
#[derive(Debug, Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Index = HashMap<u64, u32, BuildHasherDefault<PreHashed>>;

#[derive(Debug)]
struct Entry {
    tx: Transaction,
    key: StoredKey,
    hash: u64,
    next_in_bucket: Option<u32>,
}

/// A slab slot. Vacant slots are reused by the next insertion, so boxing the occupied
/// variant would only add an allocation per transaction.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Slot {
    Occupied {
        generation: u32,
        entry: Entry,
    },
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
}

/// Many transactions, their keys and their timers (sans-IO).
///
/// Inputs name a transaction by [`TxId`], found with [`TransactionTable::lookup_client`] or
/// [`TransactionTable::lookup_server`]. After each input, drain
/// [`TransactionTable::poll_action`] and read [`TransactionTable::poll_timeout`]. A
/// transaction leaves the table the moment it terminates; its last action is
/// [`Action::Terminated`].
#[derive(Debug)]
pub struct TransactionTable<S = RandomState> {
    config: TimerConfig,
    hasher: S,
    /// The `now` of the first insertion: timer deadlines are kept relative to it.
    epoch: Option<Instant>,
    slots: Vec<Slot>,
    free_head: Option<u32>,
    len: usize,
    client_index: Index,
    server_index: Index,
    timers: TimerHeap,
    actions: VecDeque<(TxId, Action)>,
}

impl TransactionTable<RandomState> {
    /// An empty table with a randomly keyed SipHash for the key indexes.
    pub fn new(config: TimerConfig) -> Result<Self, TimerConfigError> {
        Self::with_hasher(config, RandomState::new())
    }
}

impl<S: BuildHasher> TransactionTable<S> {
    /// An empty table hashing keys with `hasher` (give a keyed hasher: keys come from the
    /// network).
    pub fn with_hasher(config: TimerConfig, hasher: S) -> Result<Self, TimerConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            hasher,
            epoch: None,
            slots: Vec::new(),
            free_head: None,
            len: 0,
            client_index: Index::default(),
            server_index: Index::default(),
            timers: TimerHeap::default(),
            actions: VecDeque::new(),
        })
    }

    /// The timer configuration.
    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// The number of live transactions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacities of the internal structures.
    pub fn capacity(&self) -> TableCapacity {
        TableCapacity {
            slots: self.slots.capacity(),
            timer_heap: self.timers.heap.capacity(),
            timer_positions: self.timers.positions.capacity(),
            client_index: self.client_index.capacity(),
            server_index: self.server_index.capacity(),
            actions: self.actions.capacity(),
        }
    }

    /// The transaction named by `id`, if live.
    pub fn get(&self, id: TxId) -> Option<&Transaction> {
        match self.slots.get(id.index as usize) {
            Some(Slot::Occupied { generation, entry }) if *generation == id.generation => {
                Some(&entry.tx)
            }
            _ => None,
        }
    }

    /// Creates an INVITE client transaction for a request sent with `key`; `proxied` starts
    /// Timer C (§16.6 step 11).
    pub fn insert_client_invite(
        &mut self,
        now: Instant,
        key: &ClientKey<'_>,
        reliable: bool,
        proxied: bool,
    ) -> Result<TxId, TableError> {
        if key.method() != b"INVITE" {
            return Err(TableError::MethodMismatch);
        }
        let tx = if proxied {
            ClientInvite::new_proxied(now, reliable, &self.config)
        } else {
            ClientInvite::new(now, reliable, &self.config)
        };
        self.insert_client(now, key, Transaction::ClientInvite(tx))
    }

    /// Creates a non-INVITE client transaction for a request sent with `key`.
    pub fn insert_client_non_invite(
        &mut self,
        now: Instant,
        key: &ClientKey<'_>,
        reliable: bool,
    ) -> Result<TxId, TableError> {
        if key.method() == b"INVITE" || key.method() == b"ACK" {
            return Err(TableError::MethodMismatch);
        }
        let tx = ClientNonInvite::new(now, reliable, &self.config);
        self.insert_client(now, key, Transaction::ClientNonInvite(tx))
    }

    /// Creates an INVITE server transaction for a received INVITE with `key`.
    pub fn insert_server_invite(
        &mut self,
        now: Instant,
        key: &ServerKey<'_>,
        reliable: bool,
    ) -> Result<TxId, TableError> {
        if key.method() != b"INVITE" || key.is_ack() {
            return Err(TableError::MethodMismatch);
        }
        let tx = ServerInvite::new(now, reliable, &self.config);
        self.insert_server(now, key, Transaction::ServerInvite(tx))
    }

    /// Creates a non-INVITE server transaction for a received request with `key` (never an
    /// ACK: an ACK creates no transaction).
    pub fn insert_server_non_invite(
        &mut self,
        now: Instant,
        key: &ServerKey<'_>,
        reliable: bool,
    ) -> Result<TxId, TableError> {
        if key.method() == b"INVITE" || key.is_ack() {
            return Err(TableError::MethodMismatch);
        }
        let tx = ServerNonInvite::new(now, reliable, &self.config);
        self.insert_server(now, key, Transaction::ServerNonInvite(tx))
    }

    /// The client transaction a response with this key belongs to (§17.1.3).
    pub fn lookup_client(&self, key: &ClientKey<'_>) -> Option<TxId> {
        self.lookup_client_hashed(key, self.hash_client(key))
    }

    fn lookup_client_hashed(&self, key: &ClientKey<'_>, hash: u64) -> Option<TxId> {
        self.find(&self.client_index, hash, |stored| {
            stored.as_client().is_some_and(|k| key.matches(&k))
        })
    }

    /// The server transaction a request with this key belongs to (§17.2.3): a
    /// retransmission, an ACK for a non-2xx final response, or (with
    /// [`ServerKey::cancelled_invite`]) the INVITE a CANCEL cancels.
    pub fn lookup_server(&self, key: &ServerKey<'_>) -> Option<TxId> {
        self.lookup_server_hashed(key, self.hash_server(key))
    }

    fn lookup_server_hashed(&self, key: &ServerKey<'_>, hash: u64) -> Option<TxId> {
        self.find(&self.server_index, hash, |stored| {
            stored
                .as_server()
                .is_some_and(|k| key.matches(&k, stored.response_to_tag()))
        })
    }

    /// Records the To tag the TU put in the final response of a server INVITE transaction,
    /// so that an RFC 2543 ACK (matched by that tag, §17.2.3) finds the transaction.
    pub fn set_response_to_tag(&mut self, id: TxId, tag: &[u8]) -> Result<(), TableError> {
        let entry = self.entry_mut(id)?;
        if !matches!(entry.tx, Transaction::ServerInvite(_)) {
            return Err(TableError::WrongKind);
        }
        entry.key.set_response_to_tag(tag);
        Ok(())
    }

    /// A response with this status code matched client transaction `id`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: TxId,
        status: u16,
    ) -> Result<(), TableError> {
        let result = match &mut self.entry_mut(id)?.tx {
            Transaction::ClientInvite(tx) => tx.handle_response(now, status),
            Transaction::ClientNonInvite(tx) => tx.handle_response(now, status),
            _ => return Err(TableError::WrongKind),
        };
        self.settle(id.index);
        Ok(result?)
    }

    /// A retransmission of the request of server transaction `id` arrived.
    pub fn handle_request_retransmission(
        &mut self,
        now: Instant,
        id: TxId,
    ) -> Result<(), TableError> {
        match &mut self.entry_mut(id)?.tx {
            Transaction::ServerInvite(tx) => tx.handle_request_retransmission(now),
            Transaction::ServerNonInvite(tx) => tx.handle_request_retransmission(now),
            _ => return Err(TableError::WrongKind),
        }
        self.settle(id.index);
        Ok(())
    }

    /// An ACK matched server INVITE transaction `id`.
    pub fn handle_ack(&mut self, now: Instant, id: TxId) -> Result<(), TableError> {
        match &mut self.entry_mut(id)?.tx {
            Transaction::ServerInvite(tx) => tx.handle_ack(now),
            _ => return Err(TableError::WrongKind),
        }
        self.settle(id.index);
        Ok(())
    }

    /// The TU gives server transaction `id` a response with this status code to send.
    pub fn send_response(&mut self, now: Instant, id: TxId, status: u16) -> Result<(), TableError> {
        let result = match &mut self.entry_mut(id)?.tx {
            Transaction::ServerInvite(tx) => tx.send_response(now, status),
            Transaction::ServerNonInvite(tx) => tx.send_response(now, status),
            _ => return Err(TableError::WrongKind),
        };
        self.settle(id.index);
        Ok(result?)
    }

    /// The transport reported an error sending for transaction `id`.
    pub fn handle_transport_error(&mut self, now: Instant, id: TxId) -> Result<(), TableError> {
        match &mut self.entry_mut(id)?.tx {
            Transaction::ClientInvite(tx) => tx.handle_transport_error(now),
            Transaction::ClientNonInvite(tx) => tx.handle_transport_error(now),
            Transaction::ServerInvite(tx) => tx.handle_transport_error(now),
            Transaction::ServerNonInvite(tx) => tx.handle_transport_error(now),
        }
        self.settle(id.index);
        Ok(())
    }

    /// The TU sent a CANCEL for client INVITE transaction `id` (§9.1).
    pub fn handle_cancel_sent(&mut self, now: Instant, id: TxId) -> Result<(), TableError> {
        match &mut self.entry_mut(id)?.tx {
            Transaction::ClientInvite(tx) => tx.handle_cancel_sent(now),
            _ => return Err(TableError::WrongKind),
        }
        self.settle(id.index);
        Ok(())
    }

    /// Fires every timer due at `now`, in deadline order.
    pub fn handle_timeouts(&mut self, now: Instant) {
        let Some(epoch) = self.epoch else {
            return;
        };
        let now_tick = tick(epoch, now);
        while let Some((at, index)) = self.timers.peek() {
            if at > now_tick {
                break;
            }
            match self.slots.get_mut(index as usize) {
                Some(Slot::Occupied { entry, .. }) => entry.tx.handle_timeout(now),
                _ => {
                    self.timers.set(index, None);
                    continue;
                }
            }
            self.settle(index);
        }
    }

    /// The earliest deadline of any transaction: when to call
    /// [`TransactionTable::handle_timeouts`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let epoch = self.epoch?;
        self.timers
            .peek()
            .map(|(at, _)| epoch + Duration::from_nanos(at))
    }

    /// The next action, with the transaction it concerns, in order.
    pub fn poll_action(&mut self) -> Option<(TxId, Action)> {
        self.actions.pop_front()
    }

    fn hash_client(&self, key: &ClientKey<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash_into(&mut h);
        h.finish()
    }

    fn hash_server(&self, key: &ServerKey<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        key.hash_into(&mut h);
        h.finish()
    }

    fn find(&self, index: &Index, hash: u64, matches: impl Fn(&StoredKey) -> bool) -> Option<TxId> {
        let mut cursor = index.get(&hash).copied();
        while let Some(i) = cursor {
            match self.slots.get(i as usize) {
                Some(Slot::Occupied { generation, entry }) => {
                    if entry.hash == hash && matches(&entry.key) {
                        return Some(TxId {
                            index: i,
                            generation: *generation,
                        });
                    }
                    cursor = entry.next_in_bucket;
                }
                _ => return None,
            }
        }
        None
    }

    fn entry_mut(&mut self, id: TxId) -> Result<&mut Entry, TableError> {
        match self.slots.get_mut(id.index as usize) {
            Some(Slot::Occupied { generation, entry }) if *generation == id.generation => Ok(entry),
            _ => Err(TableError::UnknownTransaction),
        }
    }

    fn insert_client(
        &mut self,
        now: Instant,
        key: &ClientKey<'_>,
        tx: Transaction,
    ) -> Result<TxId, TableError> {
        self.epoch.get_or_insert(now);
        let hash = self.hash_client(key);
        if let Some(existing) = self.lookup_client_hashed(key, hash) {
            return Err(TableError::Duplicate(existing));
        }
        self.insert(hash, StoredKey::client(key), tx)
    }

    fn insert_server(
        &mut self,
        now: Instant,
        key: &ServerKey<'_>,
        tx: Transaction,
    ) -> Result<TxId, TableError> {
        self.epoch.get_or_insert(now);
        let hash = self.hash_server(key);
        if let Some(existing) = self.lookup_server_hashed(key, hash) {
            return Err(TableError::Duplicate(existing));
        }
        self.insert(hash, StoredKey::server(key), tx)
    }

    fn insert(&mut self, hash: u64, key: StoredKey, tx: Transaction) -> Result<TxId, TableError> {
        let index_map = if tx.is_client() {
            &mut self.client_index
        } else {
            &mut self.server_index
        };
        let (index, generation) = match self.free_head {
            Some(free) => match self.slots.get(free as usize) {
                Some(Slot::Vacant {
                    generation,
                    next_free,
                }) => {
                    self.free_head = *next_free;
                    (free, *generation)
                }
                _ => return Err(TableError::Full),
            },
            None => {
                let index = u32::try_from(self.slots.len()).map_err(|_| TableError::Full)?;
                if index == NO_POSITION {
                    return Err(TableError::Full);
                }
                self.slots.push(Slot::Vacant {
                    generation: 0,
                    next_free: None,
                });
                (index, 0)
            }
        };
        let next_in_bucket = match index_map.entry(hash) {
            MapEntry::Occupied(mut head) => Some(std::mem::replace(head.get_mut(), index)),
            MapEntry::Vacant(v) => {
                v.insert(index);
                None
            }
        };
        if let Some(slot) = self.slots.get_mut(index as usize) {
            *slot = Slot::Occupied {
                generation,
                entry: Entry {
                    tx,
                    key,
                    hash,
                    next_in_bucket,
                },
            };
        }
        self.len += 1;
        self.settle(index);
        Ok(TxId { index, generation })
    }

    /// Moves the transaction's actions to the table queue, reschedules its timer, and
    /// removes it if it terminated.
    fn settle(&mut self, index: u32) {
        let Some(Slot::Occupied { generation, entry }) = self.slots.get_mut(index as usize) else {
            return;
        };
        let id = TxId {
            index,
            generation: *generation,
        };
        while let Some(action) = entry.tx.poll_action() {
            self.actions.push_back((id, action));
        }
        if entry.tx.is_terminated() {
            self.remove(index);
        } else {
            let at = entry.tx.poll_timeout();
            let at = match (at, self.epoch) {
                (Some(at), Some(epoch)) => Some(tick(epoch, at)),
                _ => None,
            };
            self.timers.set(index, at);
        }
    }

    fn remove(&mut self, index: u32) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        let Slot::Occupied { generation, .. } = slot else {
            return;
        };
        let vacant = Slot::Vacant {
            generation: generation.wrapping_add(1),
            next_free: self.free_head,
        };
        let Slot::Occupied { entry, .. } = std::mem::replace(slot, vacant) else {
            return;
        };
        self.free_head = Some(index);
        self.len -= 1;
        self.timers.set(index, None);
        let is_client = entry.tx.is_client();
        self.unlink(is_client, entry.hash, index, entry.next_in_bucket);
    }

    /// Removes `index` from its hash chain.
    fn unlink(&mut self, is_client: bool, hash: u64, index: u32, next: Option<u32>) {
        let index_map = if is_client {
            &mut self.client_index
        } else {
            &mut self.server_index
        };
        let Some(&head) = index_map.get(&hash) else {
            return;
        };
        if head == index {
            match next {
                Some(next) => {
                    index_map.insert(hash, next);
                }
                None => {
                    index_map.remove(&hash);
                }
            }
            return;
        }
        let mut cursor = head;
        while let Some(Slot::Occupied { entry, .. }) = self.slots.get_mut(cursor as usize) {
            match entry.next_in_bucket {
                Some(n) if n == index => {
                    entry.next_in_bucket = next;
                    return;
                }
                Some(n) => cursor = n,
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::key::RequestFields;
    use crate::transaction::test_support::{at, epoch};
    use crate::transaction::Timer;

    fn table() -> TransactionTable {
        TransactionTable::new(TimerConfig::default()).unwrap()
    }

    fn drain(t: &mut TransactionTable) -> Vec<(TxId, Action)> {
        std::iter::from_fn(|| t.poll_action()).collect()
    }

    fn request<'a>(method: &'a [u8], branch: &'a [u8]) -> RequestFields<'a> {
        RequestFields {
            method,
            branch: Some(branch),
            sent_by: b"192.0.2.1:5060",
            ..RequestFields::default()
        }
    }

    #[test]
    fn client_transaction_is_found_by_branch_and_method_and_removed_when_terminated() {
        let t0 = epoch();
        let mut t = table();
        let key = ClientKey::new(b"z9hG4bK1", b"OPTIONS");
        let id = t.insert_client_non_invite(t0, &key, true).unwrap();
        assert_eq!(drain(&mut t), [(id, Action::SendRequest)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup_client(&key), Some(id));
        assert_eq!(
            t.lookup_client(&ClientKey::new(b"z9hG4bK1", b"CANCEL")),
            None
        );
        assert_eq!(t.poll_timeout(), Some(at(t0, 32_000)));
        t.handle_response(at(t0, 10), id, 200).unwrap();
        assert_eq!(
            drain(&mut t),
            [
                (id, Action::PassResponseToTu(200)),
                (id, Action::Terminated)
            ]
        );
        assert!(t.is_empty());
        assert_eq!(t.lookup_client(&key), None);
        assert_eq!(t.poll_timeout(), None);
        assert_eq!(
            t.handle_response(at(t0, 20), id, 200),
            Err(TableError::UnknownTransaction)
        );
    }

    #[test]
    fn a_stale_id_does_not_reach_the_slot_reuser() {
        let t0 = epoch();
        let mut t = table();
        let a = t
            .insert_client_non_invite(t0, &ClientKey::new(b"z9hG4bKa", b"BYE"), true)
            .unwrap();
        t.handle_transport_error(t0, a).unwrap();
        let b = t
            .insert_client_non_invite(t0, &ClientKey::new(b"z9hG4bKb", b"BYE"), true)
            .unwrap();
        assert_ne!(a, b);
        assert!(t.get(a).is_none());
        assert!(t.get(b).is_some());
        // The slot was reused, under a new generation.
        assert_eq!(a.index, b.index);
        assert_ne!(a.generation, b.generation);
        assert_eq!(t.slots.len(), 1);
    }

    #[test]
    fn duplicates_and_method_mismatches_are_refused() {
        let t0 = epoch();
        let mut t = table();
        let key = ClientKey::new(b"z9hG4bK1", b"INVITE");
        let id = t.insert_client_invite(t0, &key, false, true).unwrap();
        assert_eq!(
            t.insert_client_invite(t0, &key, false, true),
            Err(TableError::Duplicate(id))
        );
        assert_eq!(
            t.insert_client_non_invite(t0, &key, false),
            Err(TableError::MethodMismatch)
        );
        let ack = request(b"ACK", b"z9hG4bK9");
        assert_eq!(
            t.insert_server_invite(t0, &ServerKey::from_request(&ack), false),
            Err(TableError::MethodMismatch)
        );
        assert_eq!(
            t.insert_server_non_invite(t0, &ServerKey::from_request(&ack), false),
            Err(TableError::MethodMismatch)
        );
        assert_eq!(t.handle_ack(t0, id), Err(TableError::WrongKind));
    }

    #[test]
    fn server_invite_absorbs_retransmissions_matches_ack_and_cancel() {
        let t0 = epoch();
        let mut t = table();
        let invite = request(b"INVITE", b"z9hG4bKinv");
        let id = t
            .insert_server_invite(t0, &ServerKey::from_request(&invite), false)
            .unwrap();
        assert_eq!(
            drain(&mut t),
            [(id, Action::PassRequestToTu), (id, Action::Send100Trying)]
        );

        // The retransmitted INVITE is matched and answered with the 100 again.
        let found = t.lookup_server(&ServerKey::from_request(&invite)).unwrap();
        assert_eq!(found, id);
        t.handle_request_retransmission(at(t0, 500), found).unwrap();
        assert_eq!(drain(&mut t), [(id, Action::RetransmitResponse(100))]);

        // A CANCEL gets its own transaction and finds the INVITE.
        let cancel = request(b"CANCEL", b"z9hG4bKinv");
        let cancel_key = ServerKey::from_request(&cancel);
        assert_eq!(t.lookup_server(&cancel_key), None);
        let cid = t
            .insert_server_non_invite(at(t0, 600), &cancel_key, false)
            .unwrap();
        assert_eq!(t.lookup_server(&cancel_key.cancelled_invite()), Some(id));
        t.send_response(at(t0, 600), cid, 200).unwrap();
        t.send_response(at(t0, 600), id, 487).unwrap();
        assert_eq!(
            drain(&mut t),
            [
                (cid, Action::PassRequestToTu),
                (cid, Action::SendResponse(200)),
                (id, Action::SendResponse(487))
            ]
        );

        // The ACK for the 487 matches the INVITE transaction and confirms it.
        let ack = request(b"ACK", b"z9hG4bKinv");
        let aid = t.lookup_server(&ServerKey::from_request(&ack)).unwrap();
        assert_eq!(aid, id);
        t.handle_ack(at(t0, 700), aid).unwrap();
        assert_eq!(
            t.get(id).map(|tx| match tx {
                Transaction::ServerInvite(s) => s.state(),
                _ => unreachable!(),
            }),
            Some(crate::transaction::ServerInviteState::Confirmed)
        );
        // Timer I at 5.7 s, Timer J (CANCEL) at 32.6 s.
        assert_eq!(t.poll_timeout(), Some(at(t0, 5_700)));
        t.handle_timeouts(at(t0, 5_700));
        assert_eq!(drain(&mut t), [(id, Action::Terminated)]);
        assert_eq!(t.poll_timeout(), Some(at(t0, 32_600)));
        t.handle_timeouts(at(t0, 40_000));
        assert_eq!(drain(&mut t), [(cid, Action::Terminated)]);
        assert!(t.is_empty());
    }

    #[test]
    fn rfc2543_ack_needs_the_response_to_tag() {
        let t0 = epoch();
        let mut t = table();
        let invite = RequestFields {
            method: b"INVITE",
            branch: None,
            request_uri: b"sip:bob@biloxi.com",
            call_id: b"c1",
            from_tag: b"f1",
            cseq_number: 1,
            top_via: b"SIP/2.0/UDP 192.0.2.1",
            ..RequestFields::default()
        };
        let id = t
            .insert_server_invite(t0, &ServerKey::from_request(&invite), false)
            .unwrap();
        t.send_response(t0, id, 404).unwrap();
        let ack = RequestFields {
            method: b"ACK",
            to_tag: b"srv",
            ..invite
        };
        assert_eq!(t.lookup_server(&ServerKey::from_request(&ack)), None);
        t.set_response_to_tag(id, b"srv").unwrap();
        assert_eq!(t.lookup_server(&ServerKey::from_request(&ack)), Some(id));
        // The INVITE retransmission (no To tag) still matches.
        assert_eq!(t.lookup_server(&ServerKey::from_request(&invite)), Some(id));
    }

    #[test]
    fn timers_of_many_transactions_fire_in_deadline_order() {
        let t0 = epoch();
        let mut t = table();
        let a = t
            .insert_client_invite(t0, &ClientKey::new(b"z9hG4bKa", b"INVITE"), true, false)
            .unwrap();
        let b = t
            .insert_client_non_invite(at(t0, 100), &ClientKey::new(b"z9hG4bKb", b"INFO"), false)
            .unwrap();
        drain(&mut t);
        assert_eq!(t.poll_timeout(), Some(at(t0, 600)));
        t.handle_timeouts(at(t0, 32_050));
        let actions = drain(&mut t);
        assert_eq!(
            actions[actions.len() - 2..],
            [(a, Action::Timeout(Timer::B)), (a, Action::Terminated)]
        );
        assert!(actions[..actions.len() - 2]
            .iter()
            .all(|(id, act)| *id == b && *act == Action::RetransmitRequest));
        assert_eq!(t.poll_timeout(), Some(at(t0, 32_100)));
        t.handle_timeouts(at(t0, 32_100));
        assert_eq!(
            drain(&mut t),
            [(b, Action::Timeout(Timer::F)), (b, Action::Terminated)]
        );
        assert!(t.is_empty());
    }

    proptest::proptest! {
        /// The indexed heap agrees with a plain map of deadlines after any sequence of
        /// sets and clears, and every position index points at its own entry.
        #[test]
        fn timer_heap_matches_a_model(
            ops in proptest::collection::vec((0u32..40, proptest::option::of(0u64..1_000)), 0..400)
        ) {
            let mut heap = TimerHeap::default();
            let mut model = std::collections::BTreeMap::new();
            for (slot, at) in ops {
                heap.set(slot, at);
                match at {
                    Some(at) => { model.insert(slot, at); }
                    None => { model.remove(&slot); }
                }
                let min = model.values().min().copied();
                proptest::prop_assert_eq!(heap.peek().map(|(at, _)| at), min);
                proptest::prop_assert_eq!(heap.heap.len(), model.len());
                for (i, (at, slot)) in heap.heap.iter().enumerate() {
                    proptest::prop_assert_eq!(heap.position(*slot), Some(i));
                    proptest::prop_assert_eq!(model.get(slot), Some(at));
                }
            }
        }
    }

    #[test]
    fn hash_collisions_fall_back_to_full_comparison() {
        #[derive(Default)]
        struct Constant;
        impl Hasher for Constant {
            fn finish(&self) -> u64 {
                7
            }
            fn write(&mut self, _: &[u8]) {}
        }
        let t0 = epoch();
        let mut t = TransactionTable::with_hasher(
            TimerConfig::default(),
            BuildHasherDefault::<Constant>::default(),
        )
        .unwrap();
        let keys: Vec<Vec<u8>> = (0..5).map(|i| format!("z9hG4bK{i}").into_bytes()).collect();
        let ids: Vec<TxId> = keys
            .iter()
            .map(|k| {
                t.insert_client_non_invite(t0, &ClientKey::new(k, b"BYE"), true)
                    .unwrap()
            })
            .collect();
        for (k, id) in keys.iter().zip(&ids) {
            assert_eq!(t.lookup_client(&ClientKey::new(k, b"BYE")), Some(*id));
        }
        // Remove from the middle, the head and the tail of the chain.
        for i in [2, 4, 0] {
            t.handle_response(t0, ids[i], 200).unwrap();
        }
        for (i, (k, id)) in keys.iter().zip(&ids).enumerate() {
            let expected = [1, 3].contains(&i).then_some(*id);
            assert_eq!(t.lookup_client(&ClientKey::new(k, b"BYE")), expected);
        }
        assert_eq!(t.len(), 2);
    }
}
