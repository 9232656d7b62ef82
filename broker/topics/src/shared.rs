//! Shared-subscription groups as seen by a publisher.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One shared-subscription group: the sessions subscribed with `$share/{name}/{filter}`
/// [MQTT-4.8.2-1]. Each matching message goes to one member.
///
/// A group is an immutable snapshot of its members; the round-robin cursor is shared by
/// every snapshot of the same group, so concurrent publishers spread messages across members
/// even while members join and leave.
#[derive(Debug, Clone)]
pub struct SharedGroup<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) filter: Arc<str>,
    /// In order of joining; never empty inside a trie.
    pub(crate) members: Vec<(K, V)>,
    pub(crate) cursor: Arc<AtomicUsize>,
}

impl<K: PartialEq, V> SharedGroup<K, V> {
    pub(crate) fn new(name: Arc<str>, filter: Arc<str>) -> Self {
        SharedGroup {
            name,
            filter,
            members: Vec::new(),
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds or replaces a member; returns the value replaced.
    pub(crate) fn upsert(&mut self, key: K, value: V) -> Option<V> {
        match self.members.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => Some(std::mem::replace(&mut slot.1, value)),
            None => {
                self.members.push((key, value));
                None
            }
        }
    }

    /// Removes a member, keeping the others in order; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(i).1)
    }
}

impl<K, V> SharedGroup<K, V> {
    /// The ShareName.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic filter after the ShareName.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The members (subscriber key and subscription value) in order of joining.
    pub fn members(&self) -> &[(K, V)] {
        &self.members
    }

    /// Number of members (at least 1 for a group handed out by a match).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no members (never true for a group handed out by a match).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The next member in round-robin order. One atomic increment, no lock: concurrent
    /// publishers each get a different position. `None` only for an empty group.
    pub fn pick_round_robin(&self) -> Option<(&K, &V)> {
        self.pick_round_robin_where(|_, _| true)
    }

    /// Like [`SharedGroup::pick_round_robin`], skipping members `accept` refuses (say, a
    /// session whose queue is full); tries each member at most once, then gives up.
    pub fn pick_round_robin_where(
        &self,
        mut accept: impl FnMut(&K, &V) -> bool,
    ) -> Option<(&K, &V)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let (k, v) = &self.members[i];
            if accept(k, v) {
                return Some((k, v));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_member_in_turn() {
        let mut g = SharedGroup::new("g".into(), "a/+".into());
        for k in 0..3u32 {
            assert_eq!(g.upsert(k, k * 10), None);
        }
        assert_eq!(g.upsert(1, 11), Some(10));
        let picks: Vec<u32> = (0..6).map(|_| *g.pick_round_robin().unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // A copy (the next snapshot) continues the same cursor.
        let mut next = g.clone();
        assert_eq!(next.remove(&0), Some(0));
        assert_eq!(*next.pick_round_robin().unwrap().0, 1);
        assert_eq!(*g.pick_round_robin().unwrap().0, 1);
        assert_eq!(
            next.pick_round_robin_where(|k, _| *k == 2).map(|(k, _)| *k),
            Some(2)
        );
        assert_eq!(next.pick_round_robin_where(|_, _| false), None);
        next.remove(&1);
        next.remove(&2);
        assert!(next.is_empty());
        assert_eq!(next.pick_round_robin(), None);
        assert_eq!((g.name(), g.filter(), g.len()), ("g", "a/+", 3));
        assert_eq!(g.members()[1], (1, 11));
    }
}
