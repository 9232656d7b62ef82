//! `PMap`: a small persistent map. A short boxed slice while small (compact, cheap to copy),
//! a hash array mapped trie once large (O(log n) copy-on-write updates).
//!
//! The trie is this crate's own rather than `rpds`'s because of what a wide trie level (tens of
//! thousands of children, e.g. `devices/{id}/...`) costs there: `rpds` keeps every entry in two
//! heap blocks of its own (a leaf node and a shared entry, ~110 bytes per entry with their
//! headers) and copies 64-slot nodes; here entries sit inline in 32-slot nodes (a slot is the
//! size of the entry, 24 bytes for a trie child), so a map entry costs ~30 bytes and an update
//! copies at most 32 slots per level.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::hasher::LevelHasher;

mod copy;

pub(crate) use copy::{Deep, Husks, PathCopy};

/// At most this many entries are kept in a slice; one more turns it into a trie.
const SMALL_MAX: usize = 8;
/// A trie whose root is left with at most this many entries (and no sub-node) turns back
/// into a slice.
const SMALL_AGAIN: usize = SMALL_MAX / 2;
/// Hash bits used per trie level (32 slots per node).
const BITS: u32 = 5;
/// The hash has this many bits; a node this deep holds colliding entries in a plain list.
const HASH_BITS: u32 = u64::BITS;

/// A map whose clones share structure where it matters: cloning a small map copies at most
/// `SMALL_MAX` entries, cloning a large one is O(1) and updating it copies O(log n) slots.
pub(crate) enum PMap<K, V> {
    /// Unordered entries, unique keys, at most `SMALL_MAX`; exactly as long as needed.
    Small(Box<[(K, V)]>),
    /// More than `SMALL_AGAIN` entries (never empty).
    Large(Arc<HNode<K, V>>),
}

/// A trie node. Below hash depth `HASH_BITS` a slot is chosen by `BITS` bits of the key's
/// hash and present when its bit in `bitmap` is set (slots are stored densely, in bit order);
/// at that depth (full 64-bit collisions, in practice never) `bitmap` is 0 and `slots` is an
/// unordered list of entries.
pub(crate) struct HNode<K, V> {
    bitmap: u32,
    slots: Box<[Slot<K, V>]>,
}

/// An entry, or a sub-node for the entries whose hashes share this slot's bits.
pub(crate) enum Slot<K, V> {
    Entry(K, V),
    Sub(Arc<HNode<K, V>>),
}

impl<K: Clone, V: Clone> Clone for Slot<K, V> {
    fn clone(&self) -> Self {
        match self {
            Slot::Entry(k, v) => Slot::Entry(k.clone(), v.clone()),
            Slot::Sub(n) => Slot::Sub(n.clone()),
        }
    }
}

impl<K: Clone, V: Clone> Clone for HNode<K, V> {
    fn clone(&self) -> Self {
        HNode {
            bitmap: self.bitmap,
            slots: self.slots.clone(),
        }
    }
}

impl<K: Clone, V: Clone> Clone for PMap<K, V> {
    fn clone(&self) -> Self {
        match self {
            PMap::Small(v) => PMap::Small(v.clone()),
            PMap::Large(m) => PMap::Large(m.clone()),
        }
    }
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        PMap::Small(Box::default())
    }
}

fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    LevelHasher.hash_one(key)
}

/// `slots` with `slot` inserted at `pos`, in an allocation of exactly the new length (also
/// for the trie's shared-group lists). The entries are copied once into a new allocation and
/// the tail shifted there (growing the old allocation with `reserve_exact` went through
/// jemalloc's `realloc`, which copies too and cost ~460 instructions per call).
pub(crate) fn inserted<T>(slots: &mut Box<[T]>, pos: usize, slot: T) {
    let mut old = std::mem::take(slots).into_vec();
    let mut v = Vec::with_capacity(old.len() + 1);
    v.append(&mut old);
    v.insert(pos, slot);
    *slots = v.into_boxed_slice();
}

/// `slots` without the element at `pos` (which is returned), exactly as long as needed.
pub(crate) fn removed<T>(slots: &mut Box<[T]>, pos: usize) -> T {
    let mut v = std::mem::take(slots).into_vec();
    let out = v.remove(pos);
    *slots = v.into_boxed_slice();
    out
}

impl<K: Eq + Hash + Clone, V: Clone> HNode<K, V> {
    /// Where the slot for `hash` at `shift` is: (bit, dense position).
    fn locate(&self, hash: u64, shift: u32) -> (u32, usize) {
        let bit = 1u32 << ((hash >> shift) & ((1 << BITS) - 1));
        (bit, (self.bitmap & (bit - 1)).count_ones() as usize)
    }

    fn get<Q>(&self, hash: u64, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut node = self;
        let mut shift = 0;
        loop {
            if shift >= HASH_BITS {
                return node.slots.iter().find_map(|s| match s {
                    Slot::Entry(k, v) if k.borrow() == key => Some(v),
                    _ => None,
                });
            }
            let (bit, pos) = node.locate(hash, shift);
            if node.bitmap & bit == 0 {
                return None;
            }
            match &node.slots[pos] {
                Slot::Entry(k, v) => return (k.borrow() == key).then_some(v),
                Slot::Sub(sub) => node = sub,
            }
            shift += BITS;
        }
    }

    /// The value of `key` for update in place, copying shared sub-nodes on its path with
    /// `copy` (`copied`: this node is `copy`'s fresh copy, see [`PathCopy::write`]); the caller
    /// has checked that `key` is present (a miss would copy the path for nothing).
    fn get_mut<Q, P>(
        &mut self,
        hash: u64,
        key: &Q,
        shift: u32,
        copied: Option<usize>,
        copy: &mut P,
    ) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
        P: PathCopy<K, V>,
    {
        let pos = if shift >= HASH_BITS {
            self.slots
                .iter()
                .position(|s| matches!(s, Slot::Entry(k, _) if k.borrow() == key))?
        } else {
            let (bit, pos) = self.locate(hash, shift);
            if self.bitmap & bit == 0 {
                return None;
            }
            pos
        };
        match &self.slots[pos] {
            Slot::Entry(k, _) if k.borrow() != key => return None,
            slot => copy.descend(slot, pos, copied),
        }
        match &mut self.slots[pos] {
            Slot::Entry(_, v) => Some(v),
            Slot::Sub(sub) => {
                let (inner, copied) = copy.write(sub);
                inner.get_mut(hash, key, shift + BITS, copied, copy)
            }
        }
    }

    /// A node at `shift` holding two entries with different keys.
    fn pair(a: (u64, K, V), b: (u64, K, V), shift: u32) -> Self {
        if shift >= HASH_BITS {
            return HNode {
                bitmap: 0,
                slots: Box::new([Slot::Entry(a.1, a.2), Slot::Entry(b.1, b.2)]),
            };
        }
        let ia = (a.0 >> shift) & ((1 << BITS) - 1);
        let ib = (b.0 >> shift) & ((1 << BITS) - 1);
        if ia == ib {
            return HNode {
                bitmap: 1 << ia,
                slots: Box::new([Slot::Sub(Arc::new(HNode::pair(a, b, shift + BITS)))]),
            };
        }
        let (lo, hi) = if ia < ib { (a, b) } else { (b, a) };
        HNode {
            bitmap: (1 << ia) | (1 << ib),
            slots: Box::new([Slot::Entry(lo.1, lo.2), Slot::Entry(hi.1, hi.2)]),
        }
    }

    /// Inserts or replaces below this node (at `shift`); returns the replaced value. Shared
    /// sub-nodes on the path are copied with `copy` (`copied` as for [`HNode::get_mut`]),
    /// private ones updated in place. `rehash` is the hash function (`hash` is
    /// `rehash(&key)`), for an entry that must move down a level.
    #[allow(
        clippy::too_many_arguments,
        reason = "one recursive step's whole state"
    )]
    fn insert<P: PathCopy<K, V>>(
        &mut self,
        hash: u64,
        key: K,
        value: V,
        shift: u32,
        rehash: &impl Fn(&K) -> u64,
        copied: Option<usize>,
        copy: &mut P,
    ) -> Option<V> {
        if shift >= HASH_BITS {
            let found = self
                .slots
                .iter()
                .position(|s| matches!(s, Slot::Entry(k, _) if *k == key));
            let Some(i) = found else {
                let end = self.slots.len();
                inserted(&mut self.slots, end, Slot::Entry(key, value));
                return None;
            };
            copy.descend(&self.slots[i], i, copied);
            let Slot::Entry(_, v) = &mut self.slots[i] else {
                unreachable!("found as an entry just above");
            };
            return Some(std::mem::replace(v, value));
        }
        let (bit, pos) = self.locate(hash, shift);
        if self.bitmap & bit == 0 {
            self.bitmap |= bit;
            inserted(&mut self.slots, pos, Slot::Entry(key, value));
            return None;
        }
        let through = match &self.slots[pos] {
            Slot::Sub(_) => true,
            Slot::Entry(k, _) => *k == key,
        };
        if through {
            copy.descend(&self.slots[pos], pos, copied);
        }
        match &mut self.slots[pos] {
            Slot::Sub(sub) => {
                let (inner, copied) = copy.write(sub);
                inner.insert(hash, key, value, shift + BITS, rehash, copied, copy)
            }
            Slot::Entry(_, v) if through => Some(std::mem::replace(v, value)),
            Slot::Entry(..) => {
                // Moved (not cloned) into the new sub-node: a bitwise duplicate stays one.
                let Slot::Entry(k, v) = removed(&mut self.slots, pos) else {
                    unreachable!("matched as an entry just above");
                };
                let other = (rehash(&k), k, v);
                let sub = HNode::pair(other, (hash, key, value), shift + BITS);
                inserted(&mut self.slots, pos, Slot::Sub(Arc::new(sub)));
                None
            }
        }
    }

    /// Removes below this node (at `shift`); returns the removed value. A sub-node left with
    /// one entry is replaced by that entry, one left empty is dropped.
    fn remove<Q>(&mut self, hash: u64, key: &Q, shift: u32) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        if shift >= HASH_BITS {
            let pos = self
                .slots
                .iter()
                .position(|s| matches!(s, Slot::Entry(k, _) if k.borrow() == key))?;
            let Slot::Entry(_, v) = removed(&mut self.slots, pos) else {
                unreachable!("found as an entry just above");
            };
            return Some(v);
        }
        let (bit, pos) = self.locate(hash, shift);
        if self.bitmap & bit == 0 {
            return None;
        }
        match &mut self.slots[pos] {
            Slot::Entry(k, _) => {
                if (*k).borrow() != key {
                    return None;
                }
                self.bitmap &= !bit;
                let Slot::Entry(_, v) = removed(&mut self.slots, pos) else {
                    unreachable!("matched as an entry just above");
                };
                Some(v)
            }
            Slot::Sub(sub) => {
                // The caller looked first ([`PMap::remove`]): a miss copies no path.
                let inner = Arc::make_mut(sub);
                let out = inner.remove(hash, key, shift + BITS);
                match &*inner.slots {
                    [] => {
                        self.bitmap &= !bit;
                        removed(&mut self.slots, pos);
                    }
                    [Slot::Entry(..)] => {
                        let lifted = removed(&mut inner.slots, 0);
                        self.slots[pos] = lifted;
                    }
                    _ => {}
                }
                out
            }
        }
    }

    /// Entries below this node, counted up to `limit` (stops there).
    fn count_upto(&self, limit: usize) -> usize {
        let mut n = 0;
        for s in self.slots.iter() {
            n += match s {
                Slot::Entry(..) => 1,
                Slot::Sub(sub) => sub.count_upto(limit - n),
            };
            if n >= limit {
                break;
            }
        }
        n
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Entry(..) => 1,
                Slot::Sub(n) => n.len(),
            })
            .sum()
    }

    fn for_each<'a>(&'a self, f: &mut impl FnMut(&'a K, &'a V)) {
        for s in self.slots.iter() {
            match s {
                Slot::Entry(k, v) => f(k, v),
                Slot::Sub(n) => n.for_each(f),
            }
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> PMap<K, V> {
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            PMap::Small(v) => v.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            PMap::Large(m) => m.get(hash_of(key), key),
        }
    }

    /// The value of `key`, to update in place (a large map copies the shared part of the
    /// path to it; nothing is copied when `key` is absent).
    #[cfg(test)]
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_mut_with(key, &mut Deep)
    }

    /// As [`PMap::get_mut`], copying the path with `copy`.
    pub(crate) fn get_mut_with<Q, P>(&mut self, key: &Q, copy: &mut P) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        P: PathCopy<K, V>,
    {
        match self {
            PMap::Small(v) => v
                .iter_mut()
                .find(|(k, _)| (*k).borrow() == key)
                .map(|(_, v)| v),
            PMap::Large(m) => {
                let hash = hash_of(key);
                m.get(hash, key)?;
                let (root, copied) = copy.write(m);
                root.get_mut(hash, key, 0, copied, copy)
            }
        }
    }

    /// Inserts or replaces; returns the replaced value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.insert_with(key, value, &mut Deep)
    }

    /// As [`PMap::insert`], copying the path with `copy`.
    pub(crate) fn insert_with<P: PathCopy<K, V>>(
        &mut self,
        key: K,
        value: V,
        copy: &mut P,
    ) -> Option<V> {
        match self {
            PMap::Small(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if v.len() < SMALL_MAX {
                    // Exact: a node's slice is rarely appended to twice before the node is
                    // copied again, so the usual doubling would only waste memory.
                    let end = v.len();
                    inserted(v, end, (key, value));
                    return None;
                }
                let mut m = HNode {
                    bitmap: 0,
                    slots: Box::default(),
                };
                for (k, val) in std::mem::take(v).into_vec() {
                    m.insert(hash_of(&k), k, val, 0, &hash_of, None, &mut Deep);
                }
                m.insert(hash_of(&key), key, value, 0, &hash_of, None, &mut Deep);
                *self = PMap::Large(Arc::new(m));
                None
            }
            PMap::Large(m) => {
                let (root, copied) = copy.write(m);
                root.insert(hash_of(&key), key, value, 0, &hash_of, copied, copy)
            }
        }
    }

    /// Removes; returns the removed value.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self {
            PMap::Small(v) => {
                let i = v.iter().position(|(k, _)| k.borrow() == key)?;
                Some(removed(v, i).1)
            }
            PMap::Large(m) => {
                let hash = hash_of(key);
                m.get(hash, key)?;
                let root = Arc::make_mut(m);
                let old = root.remove(hash, key, 0);
                // Entries whose hashes share the root's bits sit in a sub-node: count them
                // too (at most `SMALL_AGAIN + 1` visited), or such a map would stay large.
                let few = root.slots.len() <= SMALL_AGAIN
                    && root.count_upto(SMALL_AGAIN + 1) <= SMALL_AGAIN;
                if few {
                    let mut small: Vec<(K, V)> = Vec::with_capacity(SMALL_AGAIN);
                    root.for_each(&mut |k, v| small.push((k.clone(), v.clone())));
                    *self = PMap::Small(small.into_boxed_slice());
                }
                old
            }
        }
    }

    /// Number of entries: O(1) while small, O(n) once large.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            PMap::Small(v) => v.len(),
            PMap::Large(m) => m.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        // A large map is never empty: it turns small before that.
        matches!(self, PMap::Small(v) if v.is_empty())
    }

    /// Visits every entry, in no particular order.
    pub(crate) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a K, &'a V)) {
        match self {
            PMap::Small(v) => v.iter().for_each(|(k, v)| f(k, v)),
            PMap::Large(m) => m.for_each(&mut f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `inserted` puts the slot at any position, keeps the order of the rest and neither
    /// drops nor leaks an entry.
    #[test]
    fn inserted_places_the_slot_and_moves_the_rest_once() {
        for len in 0..6 {
            for pos in 0..=len {
                let live = Arc::new(());
                let mut slots: Box<[(usize, Arc<()>)]> =
                    (0..len).map(|i| (i, live.clone())).collect();
                inserted(&mut slots, pos, (99, live.clone()));
                let order: Vec<usize> = slots.iter().map(|s| s.0).collect();
                let mut want: Vec<usize> = (0..len).collect();
                want.insert(pos, 99);
                assert_eq!(order, want, "len {len} pos {pos}");
                assert_eq!(Arc::strong_count(&live), len + 2);
                drop(slots);
                assert_eq!(Arc::strong_count(&live), 1);
            }
        }
    }

    /// Two keys in the same root slot (their hashes share the low `BITS` bits): once the
    /// rest is removed they sit together in a sub-node, and the map must still shrink.
    #[test]
    fn shrinks_back_when_the_survivors_share_a_root_slot() {
        let slot = |k: &u32| hash_of(k) & ((1 << BITS) - 1);
        let a = 1000u32;
        let b = (1001..2000)
            .find(|k| slot(k) == slot(&a))
            .expect("33 keys fill 32 slots");
        let mut m: PMap<u32, u32> = PMap::default();
        for k in (0..98).chain([a, b]) {
            assert_eq!(m.insert(k, k), None);
        }
        assert!(matches!(m, PMap::Large(_)));
        for k in 0..98 {
            assert_eq!(m.remove(&k), Some(k));
        }
        assert!(matches!(m, PMap::Small(_)));
        assert_eq!((m.get(&a), m.get(&b), m.len()), (Some(&a), Some(&b), 2));
    }

    #[test]
    fn grows_into_a_trie_and_shrinks_back() {
        let mut m: PMap<u32, u32> = PMap::default();
        for i in 0..100 {
            assert_eq!(m.insert(i, i), None);
        }
        assert!(matches!(m, PMap::Large(_)));
        let snapshot = m.clone();
        assert_eq!(m.insert(7, 70), Some(7));
        for i in 0..100 {
            assert_eq!(m.get(&i), Some(&if i == 7 { 70 } else { i }));
            assert_eq!(
                snapshot.get(&i),
                Some(&i),
                "a clone is not changed by writes"
            );
        }
        for i in 0..98 {
            assert!(m.remove(&i).is_some());
            assert_eq!(m.remove(&i), None);
        }
        assert!(matches!(m, PMap::Small(_)));
        assert_eq!(m.len(), 2);
        assert_eq!(m.insert(99, 1), Some(99));
        assert_eq!(m.get(&99), Some(&1));
        let mut n = 0;
        m.for_each(|_, _| n += 1);
        assert_eq!(n, 2);
        assert_eq!(snapshot.len(), 100);
    }

    #[test]
    fn a_wide_map_stays_correct_through_inserts_and_removes() {
        let mut m: PMap<String, u32> = PMap::default();
        for i in 0..20_000 {
            assert_eq!(m.insert(format!("n{i}"), i), None);
        }
        assert_eq!(m.len(), 20_000);
        let snapshot = m.clone();
        for i in (0..20_000).step_by(2) {
            assert_eq!(m.remove(format!("n{i}").as_str()), Some(i));
        }
        assert_eq!(m.remove("n0"), None);
        *m.get_mut("n1").expect("present") = 100;
        assert_eq!(m.get_mut("n0"), None);
        assert_eq!(
            snapshot.get("n1"),
            Some(&1),
            "get_mut copies what a clone shares"
        );
        *m.get_mut("n1").expect("present") = 1;
        assert_eq!(m.remove("absent"), None);
        for i in 0..20_000 {
            let want = (i % 2 == 1).then_some(i);
            assert_eq!(m.get(format!("n{i}").as_str()).copied(), want);
            assert_eq!(snapshot.get(format!("n{i}").as_str()), Some(&i));
        }
        let mut seen = 0;
        m.for_each(|k, v| {
            assert_eq!(*k, format!("n{v}"));
            seen += 1;
        });
        assert_eq!(seen, 10_000);
        for i in (1..20_000).step_by(2) {
            assert_eq!(m.remove(format!("n{i}").as_str()), Some(i));
        }
        assert!(m.is_empty());
        assert_eq!(snapshot.len(), 20_000);
    }

    /// Drives the trie with chosen hashes: full collisions and shared prefixes.
    #[test]
    fn colliding_hashes_share_a_list_at_the_bottom() {
        let mut root: HNode<u32, u32> = HNode {
            bitmap: 0,
            slots: Box::default(),
        };
        let hash = |k: &u32| {
            if *k < 3 {
                0xdead_beef
            } else {
                u64::from(*k) << 60
            }
        };
        for k in 0..6 {
            assert_eq!(
                root.insert(hash(&k), k, k * 10, 0, &hash, None, &mut Deep),
                None
            );
        }
        assert_eq!(
            root.insert(hash(&1), 1, 11, 0, &hash, None, &mut Deep),
            Some(10)
        );
        for k in 0..6 {
            let want = if k == 1 { 11 } else { k * 10 };
            assert_eq!(root.get(hash(&k), &k), Some(&want));
        }
        assert_eq!(root.get(hash(&0), &9), None);
        assert_eq!(root.len(), 6);
        assert_eq!(root.remove(hash(&0), &0, 0), Some(0));
        assert_eq!(root.remove(hash(&0), &0, 0), None);
        assert_eq!(root.remove(hash(&2), &2, 0), Some(20));
        // The one colliding entry left is lifted back to the root.
        assert!(root.slots.iter().any(|s| matches!(s, Slot::Entry(1, 11))));
        for k in [1, 3, 4, 5] {
            assert!(root.remove(hash(&k), &k, 0).is_some());
        }
        assert!(root.slots.is_empty());
        assert_eq!(root.bitmap, 0);
    }
}
