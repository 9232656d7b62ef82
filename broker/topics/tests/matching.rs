//! Property tests: the trie and the retained index against a naive reference matcher.

use std::collections::{BTreeMap, BTreeSet};

use halyard_topics::{Entry, Match, RetainedIndex, SubscriptionTrie, TopicError, TrieBatch};
use proptest::prelude::*;

/// The reference: MQTT 5.0 §4.7 read literally, one level at a time.
fn reference_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    // [MQTT-4.7.2-1]
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    for i in 0.. {
        match (f.get(i).copied(), t.get(i).copied()) {
            // [MQTT-4.7.1-2]: '#' matches the parent level and any number of child levels.
            (Some("#"), _) => return true,
            // [MQTT-4.7.1-3]: '+' matches exactly one level.
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
    unreachable!("the loop returns once either side runs out")
}

const TOPIC_LEVELS: &[&str] = &["a", "b", "$sys", "", "c"];
const FILTER_LEVELS: &[&str] = &["a", "b", "$sys", "", "+"];

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOPIC_LEVELS), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(FILTER_LEVELS), 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push("#");
            }
            l.join("/")
        })
        .prop_filter("a topic filter is not empty", |f| !f.is_empty())
}

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u8, u32),
    Remove(String, u8),
    InsertShared(&'static str, String, u8, u32),
    RemoveShared(&'static str, String, u8),
}

fn op() -> impl Strategy<Value = Op> {
    ops_on(filter, 4)
}

/// Writes on filters drawn from `filters()` with subscriber keys below `keys`.
fn ops_on<S: Strategy<Value = String> + 'static>(
    filters: impl Fn() -> S,
    keys: u8,
) -> impl Strategy<Value = Op> {
    let group = prop::sample::select(&["g", "h"][..]);
    prop_oneof![
        3 => (filters(), 0..keys, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
        2 => (filters(), 0..keys).prop_map(|(f, k)| Op::Remove(f, k)),
        1 => (group.clone(), filters(), 0..keys, any::<u32>())
            .prop_map(|(g, f, k, v)| Op::InsertShared(g, f, k, v)),
        1 => (group, filters(), 0..keys).prop_map(|(g, f, k)| Op::RemoveShared(g, f, k)),
    ]
}

/// Levels of the wide cases: more distinct children per node, and more subscribers per
/// filter, than a node keeps in a short list (8), so the node maps become hash tries.
const WIDE: usize = 24;

fn wide_level() -> impl Strategy<Value = String> {
    (0..WIDE).prop_map(|i| format!("w{i}"))
}

fn wide_topic() -> impl Strategy<Value = String> {
    prop::collection::vec(wide_level(), 1..3).prop_map(|l| l.join("/"))
}

fn wide_filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            prop_oneof![4 => wide_level(), 1 => Just("+".to_string())],
            1..3,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
}

/// The write methods of the trie and of a batch, so one model drives both.
trait Sink {
    fn insert(&mut self, f: &str, k: u8, v: u32) -> Result<Option<u32>, TopicError>;
    fn remove(&mut self, f: &str, k: &u8) -> Option<u32>;
    fn insert_shared(&mut self, g: &str, f: &str, k: u8, v: u32)
    -> Result<Option<u32>, TopicError>;
    fn remove_shared(&mut self, g: &str, f: &str, k: &u8) -> Option<u32>;
}

impl Sink for &SubscriptionTrie<u8, u32> {
    fn insert(&mut self, f: &str, k: u8, v: u32) -> Result<Option<u32>, TopicError> {
        SubscriptionTrie::insert(self, f, k, v)
    }
    fn remove(&mut self, f: &str, k: &u8) -> Option<u32> {
        SubscriptionTrie::remove(self, f, k)
    }
    fn insert_shared(
        &mut self,
        g: &str,
        f: &str,
        k: u8,
        v: u32,
    ) -> Result<Option<u32>, TopicError> {
        SubscriptionTrie::insert_shared(self, g, f, k, v)
    }
    fn remove_shared(&mut self, g: &str, f: &str, k: &u8) -> Option<u32> {
        SubscriptionTrie::remove_shared(self, g, f, k)
    }
}

impl Sink for &mut TrieBatch<'_, u8, u32> {
    fn insert(&mut self, f: &str, k: u8, v: u32) -> Result<Option<u32>, TopicError> {
        TrieBatch::insert(self, f, k, v)
    }
    fn remove(&mut self, f: &str, k: &u8) -> Option<u32> {
        TrieBatch::remove(self, f, k)
    }
    fn insert_shared(
        &mut self,
        g: &str,
        f: &str,
        k: u8,
        v: u32,
    ) -> Result<Option<u32>, TopicError> {
        TrieBatch::insert_shared(self, g, f, k, v)
    }
    fn remove_shared(&mut self, g: &str, f: &str, k: &u8) -> Option<u32> {
        TrieBatch::remove_shared(self, g, f, k)
    }
}

/// The model: (filter, key) -> value, and (group, filter) -> members in joining order.
#[derive(Default)]
struct Model {
    subs: BTreeMap<(String, u8), u32>,
    groups: BTreeMap<(String, String), Vec<(u8, u32)>>,
}

impl Model {
    fn apply(&mut self, mut trie: impl Sink, op: &Op) {
        match op {
            Op::Insert(f, k, v) => {
                let want = self.subs.insert((f.clone(), *k), *v);
                assert_eq!(trie.insert(f, *k, *v), Ok(want), "{op:?}");
            }
            Op::Remove(f, k) => {
                let want = self.subs.remove(&(f.clone(), *k));
                assert_eq!(trie.remove(f, k), want, "{op:?}");
            }
            Op::InsertShared(g, f, k, v) => {
                let members = self.groups.entry((g.to_string(), f.clone())).or_default();
                let want = match members.iter_mut().find(|(mk, _)| mk == k) {
                    Some(slot) => Some(std::mem::replace(&mut slot.1, *v)),
                    None => {
                        members.push((*k, *v));
                        None
                    }
                };
                assert_eq!(trie.insert_shared(g, f, *k, *v), Ok(want), "{op:?}");
            }
            Op::RemoveShared(g, f, k) => {
                let key = (g.to_string(), f.clone());
                let mut want = None;
                if let Some(members) = self.groups.get_mut(&key) {
                    if let Some(i) = members.iter().position(|(mk, _)| mk == k) {
                        want = Some(members.remove(i).1);
                    }
                    if members.is_empty() {
                        self.groups.remove(&key);
                    }
                }
                assert_eq!(trie.remove_shared(g, f, k), want, "{op:?}");
            }
        }
    }

    fn len(&self) -> usize {
        self.subs.len() + self.groups.values().map(Vec::len).sum::<usize>()
    }
}

type Found = (
    BTreeSet<(String, u8, u32)>,
    BTreeSet<(String, String, Vec<(u8, u32)>)>,
);

fn trie_matches(trie: &SubscriptionTrie<u8, u32>, topic: &str) -> Found {
    let (mut subs, mut groups) = (BTreeSet::new(), BTreeSet::new());
    trie.for_each_match(topic, |m| match m {
        Match::Subscriber { key, value, filter } => {
            assert!(subs.insert((filter.to_owned(), *key, *value)), "duplicate");
        }
        Match::Shared(g) => {
            let entry = (
                g.name().to_owned(),
                g.filter().to_owned(),
                g.members().to_vec(),
            );
            assert!(groups.insert(entry), "duplicate group");
        }
    });
    (subs, groups)
}

fn model_matches(model: &Model, topic: &str) -> Found {
    let subs = model
        .subs
        .iter()
        .filter(|((f, _), _)| reference_matches(f, topic))
        .map(|((f, k), v)| (f.clone(), *k, *v))
        .collect();
    let groups = model
        .groups
        .iter()
        .filter(|((_, f), _)| reference_matches(f, topic))
        .map(|((g, f), m)| (g.clone(), f.clone(), m.clone()))
        .collect();
    (subs, groups)
}

fn check_trie(
    trie: &SubscriptionTrie<u8, u32>,
    model: &Model,
    topics: &[String],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(trie.len(), model.len());
    for t in topics {
        prop_assert_eq!(
            trie_matches(trie, t),
            model_matches(model, t),
            "topic {:?}",
            t
        );
    }
    let mut entries = 0;
    trie.for_each_entry(|e| {
        entries += 1;
        match e {
            Entry::Subscriber { filter, key, value } => {
                assert_eq!(model.subs.get(&(filter.to_owned(), *key)), Some(value));
            }
            Entry::SharedMember {
                group,
                filter,
                key,
                value,
            } => {
                let members = &model.groups[&(group.to_owned(), filter.to_owned())];
                assert!(members.contains(&(*key, *value)));
            }
        }
    });
    prop_assert_eq!(entries, model.len());
    Ok(())
}

/// Applies `ops` one by one and compares the trie with the model on `topics`.
fn writes_agree(ops: &[Op], topics: &[String]) -> Result<(), TestCaseError> {
    let trie = SubscriptionTrie::default();
    let mut model = Model::default();
    for op in ops {
        model.apply(&trie, op);
    }
    check_trie(&trie, &model, topics)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn trie_agrees_with_the_reference(
        ops in prop::collection::vec(op(), 1..40),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        writes_agree(&ops, &topics)?;
    }

    #[test]
    fn batched_writes_agree_with_the_reference(
        ops in prop::collection::vec(op(), 1..40),
        cuts in prop::collection::vec(1..6usize, 1..40),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let trie = SubscriptionTrie::default();
        let mut model = Model::default();
        let mut rest = &ops[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*cut).min(rest.len()));
            trie.batch(|b| {
                for op in now {
                    model.apply(&mut *b, op);
                }
            });
            rest = later;
        }
        check_trie(&trie, &model, &topics)?;
    }

    #[test]
    fn wide_levels_agree_with_the_reference(
        ops in prop::collection::vec(ops_on(wide_filter, 20), 1..300),
        topics in prop::collection::vec(wide_topic(), 1..16),
    ) {
        writes_agree(&ops, &topics)?;
    }

    #[test]
    fn retained_index_agrees_with_the_reference(
        ops in prop::collection::vec((topic(), any::<bool>(), any::<u16>()), 1..40),
        filters in prop::collection::vec(filter(), 1..8),
    ) {
        let index = RetainedIndex::default();
        let mut model = BTreeMap::new();
        for (t, set, v) in &ops {
            if *set {
                prop_assert_eq!(index.set(t, *v), Ok(model.insert(t.clone(), *v)));
            } else {
                prop_assert_eq!(index.remove(t), model.remove(t));
            }
        }
        prop_assert_eq!(index.len(), model.len());
        for f in &filters {
            let mut got = Vec::new();
            index.for_each_match(f, |t, v| got.push((t.to_owned(), *v)));
            got.sort();
            let want: Vec<(String, u16)> = model
                .iter()
                .filter(|(t, _)| reference_matches(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            prop_assert_eq!(got, want, "filter {:?}", f);
        }
    }
}

#[test]
fn reference_matcher_follows_the_spec_examples() {
    // [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.2-1]: the reference itself must be right.
    assert!(reference_matches("sport/#", "sport"));
    assert!(reference_matches("sport/tennis/+", "sport/tennis/player1"));
    assert!(!reference_matches("sport/+", "sport"));
    assert!(reference_matches("sport/+", "sport/"));
    assert!(reference_matches("+/+", "/finance"));
    assert!(!reference_matches("+", "/finance"));
    assert!(!reference_matches("#", "$SYS/x"));
    assert!(!reference_matches("+/x", "$SYS/x"));
    assert!(reference_matches("$SYS/#", "$SYS/x"));
}
