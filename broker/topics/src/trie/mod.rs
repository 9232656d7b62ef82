//! The subscription trie: topic filter -> subscribers, matched by topic name without locks.
//!
//! # Concurrency
//! The whole trie is an immutable tree behind one [`ArcSwap`]. A reader loads the root (no
//! lock, no shared counter touched on the fast path) and walks a snapshot that no writer will
//! ever change. A writer takes the writer mutex, copies the path from the root to the changed
//! node (each node's child map is a [`PMap`]: a short slice or a 32-way hash trie of its own, so a
//! copy is O(8) or O(log n)), and publishes the new root with one atomic store. Every match
//! therefore sees exactly the state after some sequence of whole writes (or whole
//! [`TrieBatch`]es), never half of one. Old snapshots are freed when their last reader
//! drops them (reference counts; no epochs, no garbage list). An insert copies the shared
//! nodes of a child map bitwise and settles their reference counts after publishing, so a
//! replaced node no reader holds is freed without the count traffic of a clone
//! (`pmap/copy.rs`, which states why readers still never see freed memory).
//!
//! # Memory
//! Level strings are interned (one `Arc<str>` per distinct level, shared by every node that
//! uses it), each filter keeps its text once (handed to the visitor), and nodes that become
//! empty are pruned on removal.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::error::TopicError;
use crate::levels::{Levels, levels};
use crate::pmap::PMap;
use crate::shared::SharedGroup;
use crate::validate::TopicLimits;

mod write;

pub use write::TrieBatch;
use write::Writer;

/// One node per filter level. Immutable once published.
#[derive(Clone)]
struct Node<K, V> {
    /// Literal next levels.
    children: PMap<Arc<str>, Arc<Node<K, V>>>,
    /// The `+` next level.
    plus: Option<Arc<Node<K, V>>>,
    /// Subscriptions to `<this path>/#`.
    hash: Option<Arc<Leaf<K, V>>>,
    /// Subscriptions to exactly `<this path>`.
    leaf: Option<Arc<Leaf<K, V>>>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: PMap::default(),
            plus: None,
            hash: None,
            leaf: None,
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone> Node<K, V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.leaf.is_none()
    }
}

/// The subscriptions of one filter.
struct Leaf<K, V> {
    /// The filter's text (without any `$share/{group}/`).
    filter: Arc<str>,
    /// Ordinary subscribers.
    subs: PMap<K, V>,
    /// Shared-subscription groups on this filter, by name (a boxed slice, 8 bytes smaller
    /// than a vector in every leaf; groups change rarely).
    groups: Box<[Arc<SharedGroup<K, V>>]>,
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone> Clone for Leaf<K, V> {
    fn clone(&self) -> Self {
        Leaf {
            filter: self.filter.clone(),
            subs: self.subs.clone(),
            groups: self.groups.clone(),
        }
    }
}

impl<K: Eq + std::hash::Hash + Clone, V: Clone> Leaf<K, V> {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.groups.is_empty()
    }
}

/// What a topic matched, handed to the visitor of [`SubscriptionTrie::for_each_match`].
#[derive(Debug)]
pub enum Match<'a, K, V> {
    /// An ordinary subscription.
    Subscriber {
        /// The subscriber (e.g. a session id).
        key: &'a K,
        /// Its subscription value (e.g. QoS and options).
        value: &'a V,
        /// The filter that matched.
        filter: &'a str,
    },
    /// A shared-subscription group: deliver to one member, e.g.
    /// [`SharedGroup::pick_round_robin`].
    Shared(&'a SharedGroup<K, V>),
}

/// One stored subscription, handed to the visitor of [`SubscriptionTrie::for_each_entry`].
#[derive(Debug)]
pub enum Entry<'a, K, V> {
    /// An ordinary subscription, as given to [`SubscriptionTrie::insert`].
    Subscriber {
        /// The filter.
        filter: &'a str,
        /// The subscriber.
        key: &'a K,
        /// Its value.
        value: &'a V,
    },
    /// A shared-subscription membership, as given to [`SubscriptionTrie::insert_shared`].
    SharedMember {
        /// The ShareName.
        group: &'a str,
        /// The filter after the ShareName.
        filter: &'a str,
        /// The member.
        key: &'a K,
        /// Its value.
        value: &'a V,
    },
}

/// Topic filter -> subscribers, matched by topic name. Readers never lock; writers serialise
/// on an internal mutex (see the module documentation).
///
/// `K` identifies a subscriber (e.g. a session id), `V` is what the subscription carries
/// (e.g. granted QoS, options, subscription identifier). A key has at most one value per
/// filter; a key subscribed through several matching filters is visited once per filter,
/// and the caller merges (one copy per session [MQTT-3.3.4-2]).
pub struct SubscriptionTrie<K, V> {
    root: ArcSwap<Node<K, V>>,
    writer: Mutex<Writer>,
    len: AtomicUsize,
    limits: TopicLimits,
}

impl<K, V> fmt::Debug for SubscriptionTrie<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<K, V> Default for SubscriptionTrie<K, V>
where
    K: Eq + std::hash::Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn default() -> Self {
        Self::new(TopicLimits::default())
    }
}

impl<K, V> SubscriptionTrie<K, V>
where
    K: Eq + std::hash::Hash + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    /// An empty trie whose filters are checked against `limits`.
    pub fn new(limits: TopicLimits) -> Self {
        SubscriptionTrie {
            root: ArcSwap::from_pointee(Node::default()),
            writer: Mutex::new(Writer::new()),
            len: AtomicUsize::new(0),
            limits,
        }
    }

    /// The limits filters are checked against.
    pub fn limits(&self) -> TopicLimits {
        self.limits
    }

    /// Number of stored subscriptions: ordinary (filter, key) pairs plus shared-group
    /// memberships. Updated just after each write is published, so it may lag a concurrent
    /// match by one write.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no subscription is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes `key` to `filter` (not a `$share/` filter: see
    /// [`SubscriptionTrie::insert_shared`]) and returns the value it replaces for the same
    /// filter and key [MQTT-3.8.4-3]. The filter is checked with
    /// [`TopicLimits::validate_topic_filter`] first.
    pub fn insert(&self, filter: &str, key: K, value: V) -> Result<Option<V>, TopicError> {
        self.batch(|b| b.insert(filter, key, value))
    }

    /// Unsubscribes `key` from `filter`; returns the removed value, `None` when there was no
    /// such subscription (or the filter is invalid, so there cannot be one).
    pub fn remove(&self, filter: &str, key: &K) -> Option<V> {
        self.batch(|b| b.remove(filter, key))
    }

    /// Adds `key` to the shared group `group` on `filter` (from `$share/{group}/{filter}`,
    /// see [`crate::parse_shared_subscription`]); returns the value it replaces.
    pub fn insert_shared(
        &self,
        group: &str,
        filter: &str,
        key: K,
        value: V,
    ) -> Result<Option<V>, TopicError> {
        self.batch(|b| b.insert_shared(group, filter, key, value))
    }

    /// Removes `key` from the shared group `group` on `filter`; returns its value. A group
    /// left without members disappears.
    pub fn remove_shared(&self, group: &str, filter: &str, key: &K) -> Option<V> {
        self.batch(|b| b.remove_shared(group, filter, key))
    }

    /// The value `key` has on `filter`, if subscribed.
    pub fn get(&self, filter: &str, key: &K) -> Option<V> {
        let root = self.root.load();
        find_leaf(&root, filter)?.subs.get(key).cloned()
    }

    /// Calls `visit` for every subscription whose filter matches the topic name `topic`,
    /// and once for every matching shared group. Takes no lock and sees one consistent
    /// snapshot. `+` matches one level, `#` the parent level and every level below
    /// [MQTT-4.7.1-2], empty levels are levels, and a filter starting with a wildcard does not
    /// match a topic starting with `$` [MQTT-4.7.2-1]. `topic` should be a valid topic name;
    /// any other string is matched level by level without error.
    ///
    /// `visit` runs while the snapshot is pinned: keep it short (collect, then deliver).
    pub fn for_each_match<F>(&self, topic: &str, mut visit: F)
    where
        F: FnMut(Match<'_, K, V>),
    {
        let root = self.root.load();
        let dollar = topic.starts_with('$');
        walk(&root, levels(topic), !dollar, &mut visit);
    }

    /// Calls `visit` for every stored subscription of one consistent snapshot (for cluster
    /// snapshots and admin listings). Takes no lock; runs in O(size of the trie).
    pub fn for_each_entry<F>(&self, mut visit: F)
    where
        F: FnMut(Entry<'_, K, V>),
    {
        let root = self.root.load_full();
        each_entry(&root, &mut visit);
    }
}

/// The leaf that stores `filter`'s subscriptions, if any.
fn find_leaf<'n, K, V>(root: &'n Node<K, V>, filter: &str) -> Option<&'n Leaf<K, V>>
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
{
    let mut node = root;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level == "#" && levels.peek().is_none() {
            return node.hash.as_deref();
        }
        node = if level == "+" {
            node.plus.as_deref()?
        } else {
            node.children.get(level)?
        };
    }
    node.leaf.as_deref()
}

/// Visits what a leaf holds.
fn visit_leaf<'n, K, V, F>(leaf: &'n Leaf<K, V>, visit: &mut F)
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    F: FnMut(Match<'n, K, V>),
{
    leaf.subs.for_each(|key, value| {
        visit(Match::Subscriber {
            key,
            value,
            filter: &leaf.filter,
        })
    });
    for g in leaf.groups.iter() {
        visit(Match::Shared(g));
    }
}

/// The matching walk. `wild_ok`: wildcards may match this level (false only for the first
/// level of a `$` topic [MQTT-4.7.2-1]). Recursion depth is bounded by the trie's depth,
/// which [`TopicLimits::max_levels`] bounds.
fn walk<'n, 't, K, V, F>(node: &'n Node<K, V>, mut levels: Levels<'t>, wild_ok: bool, visit: &mut F)
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    F: FnMut(Match<'n, K, V>),
{
    let Some(level) = levels.next() else {
        // "sport/#" also matches "sport" [MQTT-4.7.1-2].
        if let Some(leaf) = &node.leaf {
            visit_leaf(leaf, visit);
        }
        if let Some(leaf) = &node.hash {
            visit_leaf(leaf, visit);
        }
        return;
    };
    if wild_ok {
        if let Some(leaf) = &node.hash {
            visit_leaf(leaf, visit);
        }
        if let Some(plus) = &node.plus {
            walk(plus, levels.clone(), true, visit);
        }
    }
    if let Some(child) = node.children.get(level) {
        walk(child, levels, true, visit);
    }
}

/// Visits every subscription under `node`.
fn each_entry<'n, K, V, F>(node: &'n Node<K, V>, visit: &mut F)
where
    K: Eq + std::hash::Hash + Clone,
    V: Clone,
    F: FnMut(Entry<'n, K, V>),
{
    for leaf in [&node.leaf, &node.hash].into_iter().flatten() {
        leaf.subs.for_each(|key, value| {
            visit(Entry::Subscriber {
                filter: &leaf.filter,
                key,
                value,
            })
        });
        for g in leaf.groups.iter() {
            for (key, value) in &g.members {
                visit(Entry::SharedMember {
                    group: &g.name,
                    filter: &g.filter,
                    key,
                    value,
                });
            }
        }
    }
    if let Some(plus) = &node.plus {
        each_entry(plus, visit);
    }
    node.children.for_each(|_, child| each_entry(child, visit));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(trie: &SubscriptionTrie<u32, u32>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |m| match m {
            Match::Subscriber { key, filter, .. } => out.push(format!("{filter}@{key}")),
            Match::Shared(g) => out.push(format!("$share/{}/{}", g.name(), g.filter())),
        });
        out.sort();
        out
    }

    fn trie(filters: &[&str]) -> SubscriptionTrie<u32, u32> {
        let t = SubscriptionTrie::default();
        for (i, f) in filters.iter().enumerate() {
            t.insert(f, i as u32, 0).unwrap();
        }
        t
    }

    fn filters_matching(t: &SubscriptionTrie<u32, u32>, topic: &str) -> Vec<String> {
        matches(t, topic)
            .into_iter()
            .map(|s| s.split('@').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        // [MQTT-4.7.1-2]: "sport/tennis/player1/#" matches "sport/tennis/player1",
        // ".../ranking" and ".../score/wimbledon"; "sport/#" matches "sport".
        let t = trie(&["sport/tennis/player1/#", "sport/#", "#"]);
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1/score/wimbledon"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(filters_matching(&t, "sport"), ["#", "sport/#"]);
        assert_eq!(filters_matching(&t, "sports"), ["#"]);
        assert_eq!(filters_matching(&t, "sport/"), ["#", "sport/#"]);
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        // [MQTT-4.7.1-3]: "sport/tennis/+" matches "sport/tennis/player1" but not
        // "sport/tennis/player1/ranking"; "sport/+" does not match "sport" but does
        // match "sport/"; "+/+" and "/+" match "/finance", "+" does not.
        let t = trie(&["sport/tennis/+", "sport/+", "+/+", "/+", "+"]);
        assert_eq!(
            filters_matching(&t, "sport/tennis/player1"),
            ["sport/tennis/+"]
        );
        assert!(filters_matching(&t, "sport/tennis/player1/ranking").is_empty());
        assert_eq!(filters_matching(&t, "sport"), ["+"]);
        assert_eq!(filters_matching(&t, "sport/"), ["+/+", "sport/+"]);
        assert_eq!(filters_matching(&t, "/finance"), ["+/+", "/+"]);
    }

    #[test]
    fn empty_levels_are_levels() {
        let t = trie(&["a//b", "a/+/b", "a/b", "/", "+/+"]);
        assert_eq!(filters_matching(&t, "a//b"), ["a/+/b", "a//b"]);
        assert_eq!(filters_matching(&t, "a/b"), ["+/+", "a/b"]);
        assert_eq!(filters_matching(&t, "/"), ["+/+", "/"]);
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]: "#" and "+/monitor/Clients" do not match "$SYS/monitor/Clients";
        // "$SYS/#" and "$SYS/monitor/+" do.
        let t = trie(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+/#"]);
        assert_eq!(
            filters_matching(&t, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(filters_matching(&t, "a/$SYS"), ["#", "+/#"]);
        t.insert_shared("g", "#", 9, 0).unwrap();
        assert!(
            !matches(&t, "$SYS/x")
                .iter()
                .any(|m| m.starts_with("$share"))
        );
    }

    #[test]
    fn insert_replaces_and_remove_prunes() {
        // [MQTT-3.8.4-3]: a SUBSCRIBE with an existing filter replaces the subscription.
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        assert_eq!(t.insert("a/+/c", 1, 10), Ok(None));
        assert_eq!(t.insert("a/+/c", 1, 11), Ok(Some(10)));
        assert_eq!(t.insert("a/+/c", 2, 20), Ok(None));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a/+/c", &1), Some(11));
        assert_eq!(t.remove("a/+/c", &3), None);
        assert_eq!(t.remove("a/x/c", &1), None);
        assert_eq!(t.remove("a/+/c", &1), Some(11));
        assert_eq!(t.remove("a/+/c", &1), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove("a/+/c", &2), Some(20));
        assert!(t.is_empty());
        assert!(t.root.load().is_empty(), "every node was pruned");
        assert!(
            t.lock_writer().interner.is_empty(),
            "interned levels are released"
        );
    }

    #[test]
    fn invalid_filters_are_refused() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new(TopicLimits {
            max_levels: 2,
            max_len: 100,
        });
        assert_eq!(
            t.insert("a/#/b", 1, 0),
            Err(TopicError::MultiLevelWildcardMisplaced)
        );
        assert!(matches!(
            t.insert("a/b/c", 1, 0),
            Err(TopicError::TooManyLevels { .. })
        ));
        assert_eq!(
            t.insert_shared("g+", "a", 1, 0),
            Err(TopicError::InvalidShareName)
        );
        assert_eq!(t.remove("a/#/b", &1), None);
        assert!(t.is_empty());
        assert_eq!(t.limits().max_levels, 2);
    }

    /// A filter skips the trie's rule check only as a `CheckedFilter`, which only a passed
    /// check makes; the trie's own size limits still apply to it (it may have been checked
    /// against looser ones), and a refused write leaves the trie as it was.
    #[test]
    fn checked_filters_skip_only_the_rules_not_the_tries_limits() {
        let loose = TopicLimits {
            max_levels: 64,
            max_len: 1000,
        };
        for bad in ["", "a/#/b", "a+/b", "a\0b", "#/x"] {
            assert!(loose.check_topic_filter(bad).is_err(), "{bad:?} refused");
        }
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new(TopicLimits {
            max_levels: 3,
            max_len: 12,
        });
        let deep = loose.check_topic_filter("a/b/c/d").unwrap();
        let long = loose
            .check_topic_filter(String::from("abcdefghijklm"))
            .unwrap();
        let shared = loose.check_topic_filter("s/+/#").unwrap();
        t.batch(|b| {
            assert!(matches!(
                b.insert_checked(&deep, 1, 0),
                Err(TopicError::TooManyLevels { max: 3, .. })
            ));
            assert!(matches!(
                b.insert_checked(&long, 1, 0),
                Err(TopicError::TooLong {
                    len: 13,
                    max: 12,
                    ..
                })
            ));
            assert_eq!(
                b.insert_shared_checked("g/", &shared, 1, 0),
                Err(TopicError::InvalidShareName)
            );
        });
        assert!(t.is_empty());
        assert!(t.root.load().is_empty(), "nothing was written");
        let ok = loose.check_topic_filter("a/+/c").unwrap();
        t.batch(|b| {
            assert_eq!(b.insert_checked(&ok, 1, 10), Ok(None));
            assert_eq!(b.insert_shared_checked("g", &shared, 2, 20), Ok(None));
        });
        assert_eq!(filters_matching(&t, "a/x/c"), ["a/+/c"]);
        assert_eq!(matches(&t, "s/x/y").len(), 1);
        assert_eq!(
            t.insert("a/+/c", 1, 11),
            Ok(Some(10)),
            "the same subscription"
        );
    }

    /// Filters deeper than the levels a write keeps on the stack are written and matched
    /// like any other.
    #[test]
    fn deep_filters_are_written_and_removed() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        let deep: Vec<String> = (0..40).map(|i| format!("l{i}")).collect();
        let filter = deep.join("/");
        let wild = format!("{}/+/#", deep[..20].join("/"));
        assert_eq!(t.insert(&filter, 1, 1), Ok(None));
        assert_eq!(t.insert(&wild, 2, 2), Ok(None));
        // Sorted: "+" before "l20".
        assert_eq!(
            filters_matching(&t, &filter),
            [wild.clone(), filter.clone()]
        );
        assert_eq!(t.remove(&filter, &1), Some(1));
        assert_eq!(t.remove(&wild, &2), Some(2));
        assert!(t.root.load().is_empty(), "every node was pruned");
        assert!(t.lock_writer().interner.is_empty());
    }

    #[test]
    fn shared_groups_are_matched_as_groups() {
        // [MQTT-4.8.2-1]: each group on a filter is one match; one member gets the message.
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        assert_eq!(t.insert_shared("g", "s/+", 1, 10), Ok(None));
        assert_eq!(t.insert_shared("g", "s/+", 2, 20), Ok(None));
        assert_eq!(t.insert_shared("g", "s/+", 2, 21), Ok(Some(20)));
        assert_eq!(t.insert_shared("h", "s/+", 3, 30), Ok(None));
        assert_eq!(t.insert_shared("g", "s/#", 4, 40), Ok(None));
        t.insert("s/+", 1, 99).unwrap();
        assert_eq!(t.len(), 5);
        assert_eq!(
            matches(&t, "s/x"),
            ["$share/g/s/#", "$share/g/s/+", "$share/h/s/+", "s/+@1"]
        );
        let mut picks = Vec::new();
        for _ in 0..4 {
            t.for_each_match("s/x", |m| {
                if let Match::Shared(g) = m
                    && g.name() == "g"
                    && g.filter() == "s/+"
                {
                    let (k, v) = g.pick_round_robin().unwrap();
                    picks.push((*k, *v));
                }
            });
        }
        assert_eq!(picks, [(1, 10), (2, 21), (1, 10), (2, 21)]);
        assert_eq!(t.remove_shared("g", "s/+", &1), Some(10));
        assert_eq!(t.remove_shared("g", "s/+", &1), None);
        assert_eq!(t.remove_shared("g", "s/+", &2), Some(21));
        assert_eq!(
            matches(&t, "s/x"),
            ["$share/g/s/#", "$share/h/s/+", "s/+@1"]
        );
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn for_each_entry_lists_everything() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        t.insert("a/b", 1, 10).unwrap();
        t.insert("a/#", 2, 20).unwrap();
        t.insert("+", 3, 30).unwrap();
        t.insert_shared("g", "a/b", 4, 40).unwrap();
        let mut all = Vec::new();
        t.for_each_entry(|e| match e {
            Entry::Subscriber { filter, key, value } => all.push(format!("{filter} {key} {value}")),
            Entry::SharedMember {
                group,
                filter,
                key,
                value,
            } => all.push(format!("$share/{group}/{filter} {key} {value}")),
        });
        all.sort();
        assert_eq!(all, ["$share/g/a/b 4 40", "+ 3 30", "a/# 2 20", "a/b 1 10"]);
    }

    #[test]
    fn a_batch_is_published_whole_or_not_at_all() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        t.insert("a/b", 1, 1).unwrap();
        let seen_inside = t.batch(|b| {
            b.insert("a/+", 2, 2).unwrap();
            b.insert_shared("g", "a/#", 3, 3).unwrap();
            assert_eq!(b.remove("a/b", &1), Some(1));
            assert_eq!(b.get("a/+", &2), Some(2));
            assert_eq!(
                b.insert("a/#/x", 9, 9),
                Err(TopicError::MultiLevelWildcardMisplaced)
            );
            // Not yet visible to matches.
            matches(&t, "a/b")
        });
        assert_eq!(seen_inside, ["a/b@1"]);
        assert_eq!(matches(&t, "a/b"), ["$share/g/a/#", "a/+@2"]);
        assert_eq!(t.len(), 2);

        let before = matches(&t, "a/b");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            t.batch(|b| {
                b.insert("a/b", 5, 5).unwrap();
                panic!("the caller fails half-way");
            })
        }));
        assert!(outcome.is_err());
        assert_eq!(
            matches(&t, "a/b"),
            before,
            "a failed batch publishes nothing"
        );
        assert_eq!(t.len(), 2);
        t.insert("a/b", 6, 6).unwrap();
        assert_eq!(t.len(), 3, "the trie still works after a failed batch");
    }

    #[test]
    fn a_batch_updates_its_own_copies_in_place() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        t.insert("x/y", 0, 0).unwrap();
        let published = t.root.load_full();
        t.batch(|b| {
            b.insert("x/0", 0, 0).unwrap();
            let root = b.root_ptr_for_test();
            let x = b.child_ptr_for_test("x");
            for i in 1..100 {
                b.insert(&format!("x/{i}"), i, i).unwrap();
            }
            // Copied once by the first write, then updated in place.
            assert_eq!(b.root_ptr_for_test(), root);
            assert_eq!(b.child_ptr_for_test("x"), x);
        });
        assert_eq!(published.children.len(), 1);
        assert_eq!(t.root.load().children.get("x").unwrap().children.len(), 101);
    }

    #[test]
    fn levels_are_interned_once() {
        let t: SubscriptionTrie<u32, u32> = SubscriptionTrie::default();
        for i in 0..50 {
            t.insert(&format!("dev/{i}/cmd"), i, 0).unwrap();
        }
        assert_eq!(t.lock_writer().interner.len(), 52);
        let root = t.root.load_full();
        let a = root.children.get("dev").unwrap().children.get("1").unwrap();
        let b = root.children.get("dev").unwrap().children.get("2").unwrap();
        let key_a = match &a.children {
            PMap::Small(v) => v[0].0.clone(),
            PMap::Large(_) => unreachable!("one child"),
        };
        let key_b = match &b.children {
            PMap::Small(v) => v[0].0.clone(),
            PMap::Large(_) => unreachable!("one child"),
        };
        assert!(Arc::ptr_eq(&key_a, &key_b), "\"cmd\" is stored once");
    }
}
