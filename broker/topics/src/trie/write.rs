//! The write side: the writer mutex, copy-on-write updates and batches.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use smallvec::SmallVec;

use super::{Leaf, Node, SubscriptionTrie, find_leaf};
use crate::error::TopicError;
use crate::hasher::LevelHasher;
use crate::levels::levels;
use crate::pmap::{self, Husks, PMap, PathCopy};
use crate::shared::SharedGroup;
use crate::validate::{CheckedFilter, validate_share_name};

/// Levels of a written filter kept on the stack; deeper filters (up to
/// [`crate::TopicLimits::max_levels`]) spill to the heap. A write's `levels` vector was ~440
/// instructions and an allocation per subscription (benches/RESULTS.md, session 15).
const INLINE_LEVELS: usize = 16;

/// State only writers touch, behind the writer mutex.
pub(super) struct Writer {
    /// One `Arc<str>` per distinct level in use.
    pub(super) interner: HashSet<Arc<str>, LevelHasher>,
    /// Removals since the interner was last swept of unused levels.
    pub(super) removals_since_sweep: usize,
}

impl Writer {
    pub(super) fn new() -> Self {
        Writer {
            interner: HashSet::with_hasher(LevelHasher),
            removals_since_sweep: 0,
        }
    }

    fn intern(&mut self, level: &str) -> Arc<str> {
        if let Some(a) = self.interner.get(level) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(level);
        self.interner.insert(a.clone());
        a
    }

    /// Drops interned levels nothing else refers to: the levels of a removed filter at once,
    /// and every level once per `interner.len()` removals (levels a reader's old snapshot
    /// still held at removal time), so the sweep costs O(1) amortised per removal.
    fn release(&mut self, filter: &str) {
        for level in filter.split('/') {
            if self
                .interner
                .get(level)
                .is_some_and(|a| Arc::strong_count(a) == 1)
            {
                self.interner.remove(level);
            }
        }
        self.removals_since_sweep += 1;
        if self.removals_since_sweep > self.interner.len() {
            self.interner.retain(|a| Arc::strong_count(a) > 1);
            if self.interner.capacity() > 4 * self.interner.len() + 64 {
                self.interner.shrink_to_fit();
            }
            self.removals_since_sweep = 0;
        }
    }
}

/// Where in a leaf a write goes.
pub(super) enum Target<'a, K, V> {
    Subscriber {
        key: K,
        value: Option<V>,
    },
    Shared {
        group: &'a str,
        key: K,
        value: Option<V>,
    },
}

/// Writes that become visible to matches together, when [`SubscriptionTrie::batch`]'s
/// closure returns: a match sees all of them or none. Holds the writer mutex meanwhile.
///
/// Within a batch, nodes already copied are updated in place, so a large batch (a cluster
/// snapshot, a burst of route changes) costs much less than the same writes one by one.
pub struct TrieBatch<'a, K, V> {
    trie: &'a SubscriptionTrie<K, V>,
    writer: MutexGuard<'a, Writer>,
    /// Child-map nodes the last write replaced by bitwise copies (`pmap::copy`). Declared
    /// before `root`: if the batch is dropped unpublished, they are counted before it drops.
    husks: Husks<Arc<str>, Arc<Node<K, V>>>,
    /// The unpublished root; nodes only it references are private to the batch.
    root: Arc<Node<K, V>>,
    added: usize,
    /// Filters removed from, whose interned levels may be released after publishing.
    released: Vec<Box<str>>,
    changed: bool,
}

impl<K, V> TrieBatch<'_, K, V>
where
    K: Eq + std::hash::Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// As [`SubscriptionTrie::insert`], visible when the batch is published.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Result<Option<V>, TopicError> {
        let filter = self.trie.limits.check_topic_filter(filter)?;
        self.insert_checked(&filter, key, value)
    }

    /// [`TrieBatch::insert`] for a filter checked already: only the trie's size limits are
    /// checked ([`crate::TopicLimits::max_len`], [`crate::TopicLimits::max_levels`]), as the
    /// filter may have been checked against other limits.
    pub fn insert_checked<S: AsRef<str>>(
        &mut self,
        filter: &CheckedFilter<S>,
        key: K,
        value: V,
    ) -> Result<Option<V>, TopicError> {
        let target = Target::Subscriber {
            key,
            value: Some(value),
        };
        self.apply(filter.as_str(), target)
    }

    /// As [`SubscriptionTrie::remove`], visible when the batch is published.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        if self.trie.limits.validate_topic_filter(filter).is_err() {
            return None;
        }
        let target = Target::Subscriber {
            key: key.clone(),
            value: None,
        };
        self.apply(filter, target).ok().flatten()
    }

    /// As [`SubscriptionTrie::insert_shared`], visible when the batch is published.
    pub fn insert_shared(
        &mut self,
        group: &str,
        filter: &str,
        key: K,
        value: V,
    ) -> Result<Option<V>, TopicError> {
        let filter = self.trie.limits.check_topic_filter(filter)?;
        self.insert_shared_checked(group, &filter, key, value)
    }

    /// [`TrieBatch::insert_shared`] for a filter checked already (see
    /// [`TrieBatch::insert_checked`]); the group name is checked.
    pub fn insert_shared_checked<S: AsRef<str>>(
        &mut self,
        group: &str,
        filter: &CheckedFilter<S>,
        key: K,
        value: V,
    ) -> Result<Option<V>, TopicError> {
        validate_share_name(group)?;
        let target = Target::Shared {
            group,
            key,
            value: Some(value),
        };
        self.apply(filter.as_str(), target)
    }

    /// As [`SubscriptionTrie::remove_shared`], visible when the batch is published.
    pub fn remove_shared(&mut self, group: &str, filter: &str, key: &K) -> Option<V> {
        if validate_share_name(group).is_err()
            || self.trie.limits.validate_topic_filter(filter).is_err()
        {
            return None;
        }
        let target = Target::Shared {
            group,
            key: key.clone(),
            value: None,
        };
        self.apply(filter, target).ok().flatten()
    }

    /// The value `key` has on `filter` in this batch's (unpublished) state.
    pub fn get(&self, filter: &str, key: &K) -> Option<V> {
        find_leaf(&self.root, filter)?.subs.get(key).cloned()
    }

    #[cfg(test)]
    pub(super) fn root_ptr_for_test(&self) -> *const Node<K, V> {
        Arc::as_ptr(&self.root)
    }

    #[cfg(test)]
    pub(super) fn child_ptr_for_test(&self, level: &str) -> Option<*const Node<K, V>> {
        self.root.children.get(level).map(Arc::as_ptr)
    }

    /// Writes `target` under `filter`, which follows the MQTT rules (checked by the caller);
    /// the trie's size limits are checked here, on the levels the write walks (they bound
    /// the recursion of `update`).
    fn apply(&mut self, filter: &str, target: Target<'_, K, V>) -> Result<Option<V>, TopicError> {
        let levels: SmallVec<[&str; INLINE_LEVELS]> = levels(filter).collect();
        self.trie
            .limits
            .check_filter_size(filter.len(), levels.len())?;
        let removing = match &target {
            Target::Subscriber { value, .. } | Target::Shared { value, .. } => value.is_none(),
        };
        if removing && !contains(&self.root, filter, &target) {
            return Ok(None);
        }
        // Exact reference counts again before this write's uniqueness tests.
        self.husks.settle();
        let mut op = LeafOp {
            filter,
            target,
            result: None,
            added: false,
        };
        if removing {
            // A removal may also shrink a child map (re-collecting its entries), which only
            // the cloning copy supports.
            update(
                &mut self.root,
                &levels,
                &mut self.writer,
                &mut op,
                &mut pmap::Deep,
            );
        } else {
            update(
                &mut self.root,
                &levels,
                &mut self.writer,
                &mut op,
                &mut self.husks,
            );
        }
        self.changed = true;
        if removing {
            self.released.push(filter.into());
        } else if op.added {
            self.added += 1;
        }
        Ok(op.result)
    }

    /// Makes the batch visible with one atomic store, then releases unused levels.
    fn publish(self) {
        let TrieBatch {
            trie,
            mut writer,
            mut husks,
            root,
            added,
            released,
            changed,
        } = self;
        if !changed {
            return;
        }
        // Dropping the replaced root frees what only it held, up to the husks (the list still
        // holds them); then the husks no one else holds are freed without their shares.
        drop(trie.root.swap(root));
        husks.release();
        trie.len.fetch_add(added, Ordering::Relaxed);
        trie.len.fetch_sub(released.len(), Ordering::Relaxed);
        for filter in &released {
            writer.release(filter);
        }
    }
}

impl<K, V> SubscriptionTrie<K, V>
where
    K: Eq + std::hash::Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// Runs `f` with a [`TrieBatch`] and publishes all its writes at once when `f` returns
    /// (nothing is published if `f` panics). Other writers wait; matches do not.
    pub fn batch<R>(&self, f: impl FnOnce(&mut TrieBatch<'_, K, V>) -> R) -> R {
        let writer = self.lock_writer();
        let root = self.root.load_full();
        let mut batch = TrieBatch {
            trie: self,
            writer,
            husks: Husks::new(),
            root,
            added: 0,
            released: Vec::new(),
            changed: false,
        };
        let result = f(&mut batch);
        batch.publish();
        result
    }

    pub(super) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock happened before its batch was published (publishing
        // is the last step), so the published trie is intact: keep going with the inner value.
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A pending change to one leaf, and its outcome.
struct LeafOp<'a, K, V> {
    filter: &'a str,
    target: Target<'a, K, V>,
    /// The value replaced or removed.
    result: Option<V>,
    /// Whether a new subscription was added.
    added: bool,
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone> LeafOp<'_, K, V> {
    /// Applies the change to a leaf slot; empties the slot when the leaf has nothing left.
    fn apply(&mut self, slot: &mut Option<Arc<Leaf<K, V>>>) {
        let leaf_arc = slot.get_or_insert_with(|| {
            Arc::new(Leaf {
                filter: Arc::from(self.filter),
                subs: PMap::default(),
                groups: Box::default(),
            })
        });
        let leaf = Arc::make_mut(leaf_arc);
        match &mut self.target {
            Target::Subscriber { key, value } => match value.take() {
                Some(v) => self.result = leaf.subs.insert(key.clone(), v),
                None => self.result = leaf.subs.remove(key),
            },
            Target::Shared { group, key, value } => {
                let pos = leaf.groups.iter().position(|g| &*g.name == *group);
                match (value.take(), pos) {
                    (Some(v), Some(i)) => {
                        self.result = Arc::make_mut(&mut leaf.groups[i]).upsert(key.clone(), v);
                    }
                    (Some(v), None) => {
                        let mut g = SharedGroup::new(Arc::from(*group), leaf.filter.clone());
                        g.upsert(key.clone(), v);
                        let end = leaf.groups.len();
                        pmap::inserted(&mut leaf.groups, end, Arc::new(g));
                    }
                    (None, Some(i)) => {
                        self.result = Arc::make_mut(&mut leaf.groups[i]).remove(key);
                        if leaf.groups[i].is_empty() {
                            pmap::removed(&mut leaf.groups, i);
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        self.added = self.result.is_none();
        if leaf.is_empty() {
            *slot = None;
        }
    }
}

/// Applies the change under `levels` below `node`, copying a node only when it is shared
/// with the published trie (or an older snapshot) and pruning nodes left empty. Child maps
/// copy their shared nodes with `copy`.
fn update<K, V, P>(
    node: &mut Arc<Node<K, V>>,
    levels: &[&str],
    writer: &mut Writer,
    op: &mut LeafOp<'_, K, V>,
    copy: &mut P,
) where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    P: PathCopy<Arc<str>, Arc<Node<K, V>>>,
{
    let n = Arc::make_mut(node);
    match levels {
        [] => op.apply(&mut n.leaf),
        ["#"] => op.apply(&mut n.hash),
        ["+", rest @ ..] => {
            let child = n.plus.get_or_insert_with(Arc::default);
            update(child, rest, writer, op, copy);
            if child.is_empty() {
                n.plus = None;
            }
        }
        [first, rest @ ..] => {
            // An existing child is updated where it is (not taken out and put back: that would
            // reallocate a small map twice and intern the level again); a batch-private child
            // has no other owner, so `update` changes it in place.
            let emptied = n.children.get_mut_with(*first, copy).map(|child| {
                update(child, rest, writer, op, copy);
                child.is_empty()
            });
            match emptied {
                Some(true) => {
                    // Only a removal empties a child, and removals copy with `Deep`; settled
                    // anyway, as a shrinking map needs exact counts.
                    copy.settle();
                    n.children.remove(*first);
                }
                Some(false) => {}
                None => {
                    let mut child = Arc::default();
                    update(&mut child, rest, writer, op, copy);
                    if !child.is_empty() {
                        n.children.insert_with(writer.intern(first), child, copy);
                    }
                }
            }
        }
    }
}

/// Whether the subscription a removal targets exists.
fn contains<K, V>(root: &Node<K, V>, filter: &str, target: &Target<'_, K, V>) -> bool
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    let Some(leaf) = find_leaf(root, filter) else {
        return false;
    };
    match target {
        Target::Subscriber { key, .. } => leaf.subs.get(key).is_some(),
        Target::Shared { group, key, .. } => leaf
            .groups
            .iter()
            .any(|g| &*g.name == *group && g.members.iter().any(|(k, _)| k == key)),
    }
}
