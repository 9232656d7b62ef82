//! Retained messages indexed by topic name, matched by topic filter on SUBSCRIBE.

use std::collections::HashMap;
use std::fmt;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::TopicError;
use crate::hasher::LevelHasher;
use crate::validate::TopicLimits;

/// One node per topic level.
struct RNode<V> {
    children: HashMap<Box<str>, RNode<V>, LevelHasher>,
    value: Option<V>,
}

impl<V> RNode<V> {
    fn new() -> Self {
        RNode {
            children: HashMap::with_hasher(LevelHasher),
            value: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.value.is_none() && self.children.is_empty()
    }
}

struct Inner<V> {
    root: RNode<V>,
    len: usize,
}

/// Topic name -> retained value (e.g. an `Arc` of the retained PUBLISH), matched by topic
/// filter when a client subscribes.
///
/// Concurrency: one `RwLock`. Lookups share the read lock and run concurrently with each
/// other; `set` and `remove` take the write lock and wait for running lookups. That is
/// acceptable because retained lookups happen on SUBSCRIBE, not on the publish path, and a
/// `set` (a retained PUBLISH) holds the lock for one short path update. A lookup's visitor
/// runs under the read lock: collect what it needs and return.
pub struct RetainedIndex<V> {
    inner: RwLock<Inner<V>>,
    limits: TopicLimits,
}

impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new(TopicLimits::default())
    }
}

impl<V> RetainedIndex<V> {
    /// An empty index whose topic names and filters are checked against `limits`.
    pub fn new(limits: TopicLimits) -> Self {
        RetainedIndex {
            inner: RwLock::new(Inner {
                root: RNode::new(),
                len: 0,
            }),
            limits,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner<V>> {
        // A write that panicked part-way (allocation failure) can only have left empty
        // interior nodes behind, which matching skips: a poisoned lock still guards a tree
        // that answers correctly.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<V>> {
        // See `read`.
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.read().len
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Retains `value` for `topic` (checked with [`TopicLimits::validate_topic_name`]),
    /// replacing and returning the previous value [MQTT-3.3.1-5]. Deleting on an empty
    /// payload [MQTT-3.3.1-6] is the caller's call to [`RetainedIndex::remove`].
    pub fn set(&self, topic: &str, value: V) -> Result<Option<V>, TopicError> {
        self.limits.validate_topic_name(topic)?;
        let mut inner = self.write();
        let mut node = &mut inner.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_insert_with(RNode::new);
        }
        let old = node.value.replace(value);
        if old.is_none() {
            inner.len += 1;
        }
        Ok(old)
    }

    /// Removes and returns the value retained for `topic`, pruning empty levels.
    pub fn remove(&self, topic: &str) -> Option<V> {
        let mut inner = self.write();
        let old = remove_at(&mut inner.root, topic.split('/'));
        if old.is_some() {
            inner.len -= 1;
        }
        old
    }

    /// The value retained for exactly `topic`.
    pub fn get_with<R>(&self, topic: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let inner = self.read();
        let mut node = &inner.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref().map(f)
    }

    /// Calls `visit(topic, value)` for every retained topic that `filter` matches: `+` one
    /// level, `#` the parent and everything below [MQTT-4.7.1-2], and a filter starting with
    /// a wildcard skips topics starting with `$` [MQTT-4.7.2-1]. An invalid filter (see
    /// [`TopicLimits::validate_topic_filter`]) matches nothing. Runs under the read lock;
    /// an empty index answers at once (no filter check, no walk: the common SUBSCRIBE on a
    /// broker with nothing retained).
    pub fn for_each_match<F>(&self, filter: &str, mut visit: F)
    where
        F: FnMut(&str, &V),
    {
        let inner = self.read();
        if inner.len == 0 || self.limits.validate_topic_filter(filter).is_err() {
            return;
        }
        let mut topic = String::new();
        match_at(&inner.root, filter.split('/'), true, &mut topic, &mut visit);
    }
}

/// Removes the value at the path `levels` below `node`, pruning nodes left empty.
fn remove_at<V>(node: &mut RNode<V>, mut levels: std::str::Split<'_, char>) -> Option<V> {
    let Some(level) = levels.next() else {
        return node.value.take();
    };
    let child = node.children.get_mut(level)?;
    let old = remove_at(child, levels);
    if old.is_some() && child.is_empty() {
        node.children.remove(level);
    }
    old
}

/// Appends one level to the topic being rebuilt; returns the length to truncate back to.
fn push_level(topic: &mut String, level: &str, first: bool) -> usize {
    let mark = topic.len();
    if !first {
        topic.push('/');
    }
    topic.push_str(level);
    mark
}

/// Walks `filter`'s levels from `node`. `first`: the next level is the topic's first.
/// Recursion depth is bounded by the validated filter's and the stored topics' levels.
fn match_at<V, F>(
    node: &RNode<V>,
    mut levels: std::str::Split<'_, char>,
    first: bool,
    topic: &mut String,
    visit: &mut F,
) where
    F: FnMut(&str, &V),
{
    let Some(level) = levels.next() else {
        if let Some(v) = &node.value {
            visit(topic, v);
        }
        return;
    };
    match level {
        "#" => {
            // The parent level too: "sport/#" matches "sport" [MQTT-4.7.1-2].
            if let (false, Some(v)) = (first, &node.value) {
                visit(topic, v);
            }
            for (name, child) in &node.children {
                if first && name.starts_with('$') {
                    continue;
                }
                let mark = push_level(topic, name, first);
                match_all(child, topic, visit);
                topic.truncate(mark);
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if first && name.starts_with('$') {
                    continue;
                }
                let mark = push_level(topic, name, first);
                match_at(child, levels.clone(), false, topic, visit);
                topic.truncate(mark);
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                let mark = push_level(topic, literal, first);
                match_at(child, levels, false, topic, visit);
                topic.truncate(mark);
            }
        }
    }
}

/// Visits `node` and everything below it.
fn match_all<V, F>(node: &RNode<V>, topic: &mut String, visit: &mut F)
where
    F: FnMut(&str, &V),
{
    if let Some(v) = &node.value {
        visit(topic, v);
    }
    for (name, child) in &node.children {
        let mark = push_level(topic, name, false);
        match_all(child, topic, visit);
        topic.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(idx: &RetainedIndex<u32>, filter: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        idx.for_each_match(filter, |t, v| out.push((t.to_owned(), *v)));
        out.sort();
        out
    }

    fn index(topics: &[&str]) -> RetainedIndex<u32> {
        let idx = RetainedIndex::default();
        for (i, t) in topics.iter().enumerate() {
            idx.set(t, i as u32).unwrap();
        }
        idx
    }

    fn topics(m: &[(String, u32)]) -> Vec<&str> {
        m.iter().map(|(t, _)| t.as_str()).collect()
    }

    #[test]
    fn set_replaces_and_remove_prunes() {
        // [MQTT-3.3.1-5]: a new retained message replaces the one for the same topic.
        let idx = index(&["a/b"]);
        assert_eq!(idx.set("a/b", 7), Ok(Some(0)));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.get_with("a/b", |v| *v), Some(7));
        assert_eq!(idx.remove("a"), None);
        assert_eq!(idx.remove("a/b"), Some(7));
        assert_eq!(idx.remove("a/b"), None);
        assert!(idx.is_empty());
        assert!(
            idx.read().root.children.is_empty(),
            "empty levels are pruned"
        );
        assert!(matches!(idx.set("a/+", 1), Err(TopicError::WildcardInName)));
    }

    #[test]
    fn an_index_emptied_again_matches_nothing_and_then_matches_anew() {
        let idx = index(&["a/b"]);
        assert_eq!(idx.remove("a/b"), Some(0));
        for f in ["#", "a/#", "a/+", "a/b", "a/#/b"] {
            assert!(matches(&idx, f).is_empty(), "{f}");
        }
        idx.set("a/c", 3).unwrap();
        assert_eq!(matches(&idx, "a/+"), [("a/c".to_owned(), 3)]);
        assert_eq!(matches(&idx, "#"), [("a/c".to_owned(), 3)]);
        // Invalid filters still match nothing once something is retained.
        assert!(matches(&idx, "a/#/c").is_empty());
        assert!(matches(&idx, "a+").is_empty());
    }

    #[test]
    fn wildcards_follow_the_spec() {
        let idx = index(&[
            "sport",
            "sport/tennis",
            "sport/tennis/player1",
            "/finance",
            "a//b",
        ]);
        // [MQTT-4.7.1-2]: "sport/#" matches "sport" as well.
        assert_eq!(
            topics(&matches(&idx, "sport/#")),
            ["sport", "sport/tennis", "sport/tennis/player1"]
        );
        // [MQTT-4.7.1-3]: "sport/+" matches "sport/tennis" but not "sport" or deeper.
        assert_eq!(topics(&matches(&idx, "sport/+")), ["sport/tennis"]);
        // "+" matches "sport" but not "/finance"; "+/+" matches "/finance".
        assert_eq!(topics(&matches(&idx, "+")), ["sport"]);
        assert_eq!(topics(&matches(&idx, "+/+")), ["/finance", "sport/tennis"]);
        assert_eq!(topics(&matches(&idx, "/+")), ["/finance"]);
        // Empty levels are levels.
        assert_eq!(topics(&matches(&idx, "a/+/b")), ["a//b"]);
        assert_eq!(topics(&matches(&idx, "a/b")), Vec::<&str>::new());
        assert_eq!(matches(&idx, "#").len(), 5);
        assert_eq!(
            matches(&idx, "sport/tennis#"),
            [],
            "invalid filter matches nothing"
        );
    }

    #[test]
    fn dollar_topics_are_not_matched_by_leading_wildcards() {
        // [MQTT-4.7.2-1]
        let idx = index(&["$SYS/uptime", "$SYS", "x/$y"]);
        assert_eq!(topics(&matches(&idx, "#")), ["x/$y"]);
        assert_eq!(topics(&matches(&idx, "+/uptime")), Vec::<&str>::new());
        assert_eq!(topics(&matches(&idx, "+")), Vec::<&str>::new());
        assert_eq!(topics(&matches(&idx, "$SYS/#")), ["$SYS", "$SYS/uptime"]);
        assert_eq!(topics(&matches(&idx, "$SYS/+")), ["$SYS/uptime"]);
        assert_eq!(topics(&matches(&idx, "x/+")), ["x/$y"]);
    }
}
