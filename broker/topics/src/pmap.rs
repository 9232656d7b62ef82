//! `PMap`: a small persistent map. A short vector while small (compact, cheap to copy),
//! a hash array mapped trie (`rpds`) once large (O(log n) copy-on-write updates).

use std::borrow::Borrow;
use std::hash::Hash;

use rpds::HashTrieMapSync;

use crate::hasher::LevelHasher;

/// At most this many entries are kept in a vector; one more turns it into a trie.
const SMALL_MAX: usize = 8;
/// A trie that shrinks to this many entries turns back into a vector.
const SMALL_AGAIN: usize = SMALL_MAX / 2;

/// A map whose clones share structure where it matters: cloning a small map copies at most
/// `SMALL_MAX` entries, cloning a large one is O(1) and updating it copies O(log n) nodes.
pub(crate) enum PMap<K, V> {
    /// Unordered entries, unique keys, at most `SMALL_MAX`.
    Small(Vec<(K, V)>),
    /// More than `SMALL_AGAIN` entries.
    Large(HashTrieMapSync<K, V, LevelHasher>),
}

impl<K: Eq + Hash + Clone, V: Clone> Clone for PMap<K, V> {
    fn clone(&self) -> Self {
        match self {
            PMap::Small(v) => PMap::Small(v.clone()),
            PMap::Large(m) => PMap::Large(m.clone()),
        }
    }
}

impl<K, V> Default for PMap<K, V> {
    fn default() -> Self {
        PMap::Small(Vec::new())
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
            PMap::Large(m) => m.get(key),
        }
    }

    /// Inserts or replaces; returns the replaced value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            PMap::Small(v) => {
                if let Some(slot) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if v.len() < SMALL_MAX {
                    // Exact: a node's vector is rarely appended to twice before the node is
                    // copied again, so the usual doubling would only waste memory.
                    v.reserve_exact(1);
                    v.push((key, value));
                    return None;
                }
                let mut m = HashTrieMapSync::new_with_hasher_and_ptr_kind(LevelHasher);
                for (k, val) in v.drain(..) {
                    m.insert_mut(k, val);
                }
                m.insert_mut(key, value);
                *self = PMap::Large(m);
                None
            }
            PMap::Large(m) => {
                let old = m.get(&key).cloned();
                m.insert_mut(key, value);
                old
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
                Some(v.swap_remove(i).1)
            }
            PMap::Large(m) => {
                let old = m.get(key).cloned()?;
                m.remove_mut(key);
                if m.size() <= SMALL_AGAIN {
                    let small = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    *self = PMap::Small(small);
                }
                Some(old)
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            PMap::Small(v) => v.len(),
            PMap::Large(m) => m.size(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every entry, in no particular order.
    pub(crate) fn for_each<'a>(&'a self, mut f: impl FnMut(&'a K, &'a V)) {
        match self {
            PMap::Small(v) => v.iter().for_each(|(k, v)| f(k, v)),
            PMap::Large(m) => m.iter().for_each(|(k, v)| f(k, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
