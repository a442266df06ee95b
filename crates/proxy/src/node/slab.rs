//! The keyed slab behind every store of the core (calls, server and client transactions, the
//! proxy's own requests): values found by their protocol key (a Call-ID, a §17.2.3 server key,
//! a branch) when a message arrives, and by a typed, `Copy` [`Id`] everywhere else — timers,
//! ng waits, a client transaction's server. An id carries its slot's generation, so an id that
//! outlives its value (a late timer, a late relay reply) finds nothing, even when the slot
//! holds a newer value. Memory stays at the peak number of live values: freed slots are reused.
//!
//! Written here rather than taken from a crate: `slab` has no generations and no key index,
//! and the two generational arenas that have generations (`slotmap`, `generational-arena`)
//! would still need the key index beside them; this is the seventy lines of both together.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

/// The id of a value of type `T` in a [`Slab`].
pub(in crate::node) struct Id<T> {
    slot: u32,
    generation: u32,
    of: PhantomData<fn() -> T>,
}

impl<T> Clone for Id<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Id<T> {}

impl<T> PartialEq for Id<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.slot, self.generation) == (other.slot, other.generation)
    }
}

impl<T> Eq for Id<T> {}

impl<T> Hash for Id<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.slot, self.generation).hash(state);
    }
}

impl<T> fmt::Debug for Id<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.generation)
    }
}

struct Slot<K, V> {
    generation: u32,
    entry: Option<(K, V)>,
}

/// Values keyed by `K`, reached by [`Id`] once found.
pub(in crate::node) struct Slab<K, V> {
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    index: HashMap<K, u32>,
}

impl<K, V> Default for Slab<K, V> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Slab<K, V> {
    /// Live values.
    pub(in crate::node) fn len(&self) -> usize {
        self.index.len()
    }

    /// The id of the value stored under `key`.
    pub(in crate::node) fn find<Q>(&self, key: &Q) -> Option<Id<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = *self.index.get(key)?;
        let generation = self.slots.get(slot as usize)?.generation;
        Some(Id {
            slot,
            generation,
            of: PhantomData,
        })
    }

    fn live(&self, id: Id<V>) -> Option<&(K, V)> {
        let s = self.slots.get(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.entry.as_ref()
    }

    /// The value of `id`, if it is still stored.
    pub(in crate::node) fn get(&self, id: Id<V>) -> Option<&V> {
        self.live(id).map(|(_, v)| v)
    }

    /// The value of `id`, to change.
    pub(in crate::node) fn get_mut(&mut self, id: Id<V>) -> Option<&mut V> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        s.entry.as_mut().map(|(_, v)| v)
    }

    /// The key of `id`, if it is still stored.
    pub(in crate::node) fn key_of(&self, id: Id<V>) -> Option<&K> {
        self.live(id).map(|(k, _)| k)
    }

    /// The value stored under `key`.
    pub(in crate::node) fn get_by<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(key).and_then(|id| self.get(id))
    }

    /// The value stored under `key`, to change.
    pub(in crate::node) fn get_by_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let id = self.find(key)?;
        self.get_mut(id)
    }

    /// Stores `value` under `key` (replacing a value stored under it, which keeps its id).
    pub(in crate::node) fn insert(&mut self, key: K, value: V) -> Id<V> {
        if let Some(id) = self.find(&key) {
            if let Some(v) = self.get_mut(id) {
                *v = value;
            }
            return id;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let s = &mut self.slots[slot as usize];
        s.entry = Some((key.clone(), value));
        self.index.insert(key, slot);
        Id {
            slot,
            generation: s.generation,
            of: PhantomData,
        }
    }

    /// The value stored under `key`, stored as `V::default()` first (under `to_key(key)`) if
    /// there is none.
    pub(in crate::node) fn get_or_default<Q>(&mut self, key: &Q, to_key: impl Fn(&Q) -> K) -> &mut V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Default,
    {
        let slot = match self.index.get(key) {
            Some(&slot) => slot,
            None => self.insert(to_key(key), V::default()).slot,
        };
        &mut self.slots[slot as usize]
            .entry
            .get_or_insert_with(|| (to_key(key), V::default()))
            .1
    }

    /// Removes the value of `id`; its id and every copy of it find nothing from now on.
    pub(in crate::node) fn remove(&mut self, id: Id<V>) -> Option<V> {
        let s = self.slots.get_mut(id.slot as usize)?;
        if s.generation != id.generation {
            return None;
        }
        let (key, value) = s.entry.take()?;
        s.generation = s.generation.wrapping_add(1);
        self.index.remove(&key);
        self.free.push(id.slot);
        Some(value)
    }

    /// Removes the value stored under `key`.
    pub(in crate::node) fn remove_by<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let id = self.find(key)?;
        self.remove(id)
    }

    /// Removes every value `drop` says to, and returns how many (a walk over the slab: never
    /// per message). Their ids find nothing from now on.
    pub(in crate::node) fn remove_where(&mut self, mut drop: impl FnMut(&K, &V) -> bool) -> usize {
        let mut removed = 0;
        for (slot, s) in self.slots.iter_mut().enumerate() {
            if !s.entry.as_ref().is_some_and(|(k, v)| drop(k, v)) {
                continue;
            }
            if let Some((key, _)) = s.entry.take() {
                s.generation = s.generation.wrapping_add(1);
                self.index.remove(&key);
                self.free.push(slot as u32);
                removed += 1;
            }
        }
        removed
    }

    /// Every value with its key (a walk over the slab: never per message).
    pub(in crate::node) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_dies_with_its_value_even_when_the_slot_is_reused() {
        let mut s: Slab<String, u32> = Slab::default();
        let a = s.insert("a".into(), 1);
        assert_eq!(s.find("a"), Some(a));
        assert_eq!(s.get(a), Some(&1));
        assert_eq!(s.insert("a".into(), 2), a, "same key, same id");
        assert_eq!(s.remove(a), Some(2));
        assert_eq!((s.get(a), s.find("a"), s.len()), (None, None, 0));
        let b = s.insert("b".into(), 3);
        assert_eq!(s.get(a), None, "the slot is b's now");
        assert_eq!(s.remove(a), None);
        assert_eq!(
            (s.get(b), s.key_of(b).map(String::as_str)),
            (Some(&3), Some("b"))
        );
        assert_eq!(s.slots.len(), 1, "the freed slot was reused");
    }

    #[test]
    fn memory_stays_at_the_peak_of_live_values() {
        let mut s: Slab<u32, u32> = Slab::default();
        for round in 0..10 {
            let ids: Vec<_> = (0..1_000).map(|k| s.insert(k + round, k)).collect();
            for id in ids {
                assert!(s.remove(id).is_some());
            }
        }
        assert_eq!((s.len(), s.slots.len()), (0, 1_000));
    }

    #[test]
    fn remove_where_removes_exactly_the_chosen_values_and_kills_their_ids() {
        let mut s: Slab<u32, u32> = Slab::default();
        let ids: Vec<_> = (0..10).map(|k| s.insert(k, k * 10)).collect();
        assert_eq!(s.remove_where(|k, _| k % 2 == 0), 5);
        assert_eq!(s.len(), 5);
        assert_eq!((s.get(ids[2]), s.find(&2)), (None, None));
        assert_eq!((s.get(ids[3]), s.find(&3)), (Some(&30), Some(ids[3])));
        let reused = s.insert(42, 1);
        assert_eq!(
            s.get(ids[0]),
            None,
            "a freed slot reused: the old id finds nothing"
        );
        assert_eq!(s.get(reused), Some(&1));
    }
}
