//! Concurrent stress test: readers match while writers insert and remove. Bounded in
//! operation count and in time; asserts only on what readers observe, never on timing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use halyard_topics::{Match, SubscriptionTrie};

/// Filter inserted first (and removed last) for every sequence number. It is reached through
/// the '+' branch, which a match visits before the literal branch of `SECOND`.
const FIRST: &str = "+/a/x";
/// Filter inserted after `FIRST` (and removed before it) for the same sequence number.
const SECOND: &str = "s/a/x";
/// Filters the churn writer toggles: two match the topic, one does not.
const CHURN: [&str; 3] = ["s/#", "s/+/x", "s/b/x"];
const TOPIC: &str = "s/a/x";
/// Filters a batch toggles together: a match must show both for a key or neither.
const PAIR: [&str; 2] = ["+/+/x", "s/a/#"];
const PERMANENT: u64 = 16;
const SEQUENCE: u64 = 3_000;
const CHURN_OPS: u64 = 6_000;
const READERS: usize = 2;
/// A safety stop; the test normally ends when the writers are done.
const TIME_CAP: Duration = Duration::from_secs(60);

/// The value every subscription of `key` carries, so a reader can detect a torn value.
fn value_of(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[test]
fn readers_see_whole_writes_only() {
    let trie: Arc<SubscriptionTrie<u64, u64>> = Arc::new(SubscriptionTrie::default());
    for k in 0..PERMANENT {
        trie.insert("s/+/+", k, value_of(k)).unwrap();
    }
    trie.insert_shared("g", "s/a/+", 0, value_of(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + TIME_CAP;

    // Writer 1: for n in order, insert (FIRST, n) then (SECOND, n).
    let w1 = {
        let (trie, inserted) = (trie.clone(), inserted.clone());
        thread::spawn(move || {
            for n in 0..SEQUENCE {
                let key = 1_000_000 + n;
                trie.insert(FIRST, key, value_of(key)).unwrap();
                trie.insert(SECOND, key, value_of(key)).unwrap();
                inserted.store(n + 1, Ordering::Release);
                if Instant::now() > deadline {
                    break;
                }
            }
        })
    };
    // Writer 2: trails writer 1, removing (SECOND, n) then (FIRST, n) for half of them,
    // and churns shared-group members and other filters.
    let w2 = {
        let (trie, inserted) = (trie.clone(), inserted.clone());
        thread::spawn(move || {
            let mut removed = 0;
            for i in 0..CHURN_OPS {
                let key = 2_000_000 + i % 64;
                let filter = CHURN[(i % 3) as usize];
                if (i / 64) % 2 == 0 {
                    trie.insert(filter, key, value_of(key)).unwrap();
                    trie.insert_shared("g", "s/a/+", key, value_of(key))
                        .unwrap();
                } else {
                    trie.remove(filter, &key);
                    trie.remove_shared("g", "s/a/+", &key);
                }
                let pair_key = 3_000_000 + i % 32;
                trie.batch(|b| {
                    if (i / 32) % 2 == 0 {
                        for f in PAIR {
                            b.insert(f, pair_key, value_of(pair_key)).unwrap();
                        }
                    } else {
                        for f in PAIR {
                            assert_eq!(b.remove(f, &pair_key), Some(value_of(pair_key)));
                        }
                    }
                });
                let done_upto = inserted.load(Ordering::Acquire);
                if removed < done_upto && removed % 2 == 0 {
                    let key = 1_000_000 + removed;
                    assert_eq!(trie.remove(SECOND, &key), Some(value_of(key)));
                    assert_eq!(trie.remove(FIRST, &key), Some(value_of(key)));
                }
                removed += u64::from(removed < done_upto);
                if Instant::now() > deadline {
                    break;
                }
            }
        })
    };

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (trie, done) = (trie.clone(), done.clone());
            thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                    check_one_match(&trie);
                    rounds += 1;
                }
                check_one_match(&trie);
                rounds
            })
        })
        .collect();

    w1.join().expect("writer 1");
    w2.join().expect("writer 2");
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    let final_len = trie.len();
    let mut counted = 0;
    trie.for_each_entry(|_| counted += 1);
    assert_eq!(final_len, counted);
}

/// One match of `TOPIC`, checked against what any whole-write snapshot can contain.
fn check_one_match(trie: &SubscriptionTrie<u64, u64>) {
    let mut first = HashSet::new();
    let mut second = HashSet::new();
    let mut permanent = HashSet::new();
    let mut pair = [HashSet::new(), HashSet::new()];
    let mut groups = 0;
    trie.for_each_match(TOPIC, |m| match m {
        Match::Subscriber { key, value, filter } => {
            assert_eq!(*value, value_of(*key), "torn value for {key} on {filter}");
            let fresh = match filter {
                FIRST => first.insert(*key),
                SECOND => second.insert(*key),
                "s/+/+" => {
                    assert!(*key < PERMANENT);
                    permanent.insert(*key)
                }
                f if f == PAIR[0] => pair[0].insert(*key),
                f if f == PAIR[1] => pair[1].insert(*key),
                "s/#" | "s/+/x" => {
                    assert!((2_000_000..2_000_064).contains(key));
                    true
                }
                other => panic!("{other} was never inserted or does not match {TOPIC}"),
            };
            assert!(fresh, "{key} on {filter} visited twice");
        }
        Match::Shared(g) => {
            groups += 1;
            assert_eq!((g.name(), g.filter()), ("g", "s/a/+"));
            assert_eq!(
                g.members()[0],
                (0, value_of(0)),
                "the permanent member stays"
            );
            for (k, v) in g.members() {
                assert_eq!(*v, value_of(*k));
            }
            let (k, _) = g
                .pick_round_robin()
                .expect("a group handed out is not empty");
            assert!(g.members().iter().any(|(m, _)| m == k));
        }
    });
    assert_eq!(
        permanent.len() as u64,
        PERMANENT,
        "a permanent subscription went missing"
    );
    assert_eq!(groups, 1);
    // Writes to SECOND come after the same key's write to FIRST, removals the other way
    // round, so every whole-write snapshot has SECOND ⊆ FIRST. A reader that mixed an older
    // view of FIRST's branch with a newer view of SECOND's would break this.
    assert!(
        second.is_subset(&first),
        "torn snapshot: {:?}",
        second.difference(&first).next()
    );
    assert_eq!(pair[0], pair[1], "half of a batch was visible");
}

/// The retained index under concurrent `set`/`remove` and lookups: permanent topics are always
/// seen, values are never torn, and nothing never-set shows up.
#[test]
fn retained_lookups_during_writes() {
    use halyard_topics::RetainedIndex;

    const ROUNDS: u64 = 4_000;
    let index: Arc<RetainedIndex<u64>> = Arc::new(RetainedIndex::default());
    for k in 0..PERMANENT {
        index.set(&format!("r/p/{k}"), value_of(k)).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + TIME_CAP;
    let writer = {
        let index = index.clone();
        thread::spawn(move || {
            for i in 0..ROUNDS {
                let k = 1_000 + i % 50;
                let topic = format!("r/c/{k}");
                if (i / 50) % 2 == 0 {
                    index.set(&topic, value_of(k)).unwrap();
                } else {
                    index.remove(&topic);
                }
                if Instant::now() > deadline {
                    break;
                }
            }
        })
    };
    let reader = {
        let (index, done) = (index.clone(), done.clone());
        thread::spawn(move || {
            let mut rounds = 0u64;
            while (rounds == 0 || !done.load(Ordering::Acquire)) && Instant::now() < deadline {
                let mut permanent = 0;
                index.for_each_match("r/#", |topic, v| {
                    let k: u64 = topic.rsplit('/').next().unwrap().parse().unwrap();
                    assert_eq!(*v, value_of(k), "torn value at {topic}");
                    if topic.starts_with("r/p/") {
                        permanent += 1;
                    } else {
                        assert!(topic.starts_with("r/c/") && (1_000..1_050).contains(&k));
                    }
                });
                assert_eq!(permanent, PERMANENT);
                rounds += 1;
            }
            rounds
        })
    };
    writer.join().expect("writer");
    done.store(true, Ordering::Release);
    assert!(reader.join().expect("reader") > 0);
    assert!(index.len() >= PERMANENT as usize);
}
