//! Concurrent stress test: readers match while writers insert and remove. Bounded in
//! operation count and in time; asserts only on what readers observe, never on timing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use halyard_topics::{Entry, Match, SubscriptionTrie};

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

    let readers = spawn_readers(&done, deadline, {
        let trie = trie.clone();
        move |_, _| check_one_match(&trie)
    });

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

/// Starts `READERS` threads that call `check(reader, round)` until `done` (or the deadline),
/// then once more; each returns its number of rounds.
fn spawn_readers(
    done: &Arc<AtomicBool>,
    deadline: Instant,
    check: impl Fn(usize, u64) + Clone + Send + 'static,
) -> Vec<thread::JoinHandle<u64>> {
    (0..READERS)
        .map(|r| {
            let (done, check) = (done.clone(), check.clone());
            thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) && Instant::now() < deadline {
                    check(r, rounds);
                    rounds += 1;
                }
                check(r, rounds);
                rounds + 1
            })
        })
        .collect()
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

/// A level with thousands of children (`w/{n}`, the way every connection of the `conn`
/// benchmark subscribes to its own topic): a writer adds children one at a time in order and
/// removes every other one again, while readers check that each match sees every permanent
/// subscription (`w/+` and `w/p{k}`, which live among the churning children), untorn values
/// and only the child it asked for; at the end exactly the odd children are left.
#[test]
fn a_wide_level_stays_correct_under_concurrent_readers() {
    const WIDE: u64 = 6_000;
    const PERMANENT_WIDE: u64 = 100;
    let trie: Arc<SubscriptionTrie<u64, u64>> = Arc::new(SubscriptionTrie::default());
    for k in 0..PERMANENT_WIDE {
        trie.insert(&format!("w/p{k}"), k, value_of(k)).unwrap();
        trie.insert("w/+", k, value_of(k)).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + TIME_CAP;
    let writer = {
        let trie = trie.clone();
        thread::spawn(move || {
            for n in 0..WIDE {
                let key = 1_000_000 + n;
                assert_eq!(trie.insert(&format!("w/{n}"), key, value_of(key)), Ok(None));
                if n % 2 == 1 {
                    let old = 1_000_000 + n - 1;
                    assert_eq!(
                        trie.remove(&format!("w/{}", n - 1), &old),
                        Some(value_of(old))
                    );
                }
                if Instant::now() > deadline {
                    break;
                }
            }
        })
    };
    let readers = spawn_readers(&done, deadline, {
        let trie = trie.clone();
        move |r, rounds| {
            // Probe a child near the writer's position and one far behind it.
            let n = (rounds * 7 + r as u64 * 13) % WIDE;
            let mut exact = Vec::new();
            let mut plus = 0;
            trie.for_each_match(&format!("w/{n}"), |m| {
                if let Match::Subscriber { key, value, filter } = m {
                    assert_eq!(*value, value_of(*key), "torn value on {filter}");
                    if filter == "w/+" {
                        plus += 1;
                    } else {
                        assert_eq!(filter, format!("w/{n}"));
                        exact.push(*key);
                    }
                }
            });
            assert_eq!(
                plus, PERMANENT_WIDE,
                "a permanent '+' subscription went missing"
            );
            assert!(exact.len() <= 1 && exact.iter().all(|k| *k == 1_000_000 + n));
            let p = rounds % PERMANENT_WIDE;
            let mut seen = 0;
            trie.for_each_match(&format!("w/p{p}"), |m| {
                if let Match::Subscriber { key, .. } = m
                    && *key == p
                {
                    seen += 1;
                }
            });
            assert_eq!(seen, 2, "w/p{p} and w/+ for key {p}");
        }
    });
    writer.join().expect("writer");
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    // Every odd child is left, every even one was removed.
    for n in 0..WIDE {
        let want = (n % 2 == 1).then(|| value_of(1_000_000 + n));
        assert_eq!(trie.get(&format!("w/{n}"), &(1_000_000 + n)), want, "w/{n}");
    }
    assert_eq!(trie.len() as u64, 2 * PERMANENT_WIDE + WIDE / 2);
    for n in (1..WIDE).step_by(2) {
        assert!(trie.remove(&format!("w/{n}"), &(1_000_000 + n)).is_some());
    }
    for k in 0..PERMANENT_WIDE {
        assert!(trie.remove(&format!("w/p{k}"), &k).is_some());
        assert!(trie.remove("w/+", &k).is_some());
    }
    assert!(trie.is_empty());
}

/// Bitwise path copies of wide levels (`pmap/copy.rs`) under readers, one of which holds a
/// whole snapshot while it lists every entry (so replaced nodes are often still shared when a
/// write is published, and are counted instead of freed): a writer adds `c/{n}` one at a time
/// and two per batch, and `c/{m}/x` below children that exist (a write through an existing
/// entry); readers check values and levels. At the end every filter is there once, and
/// removing them all leaves the trie empty.
#[test]
fn bitwise_path_copies_under_readers_holding_snapshots() {
    const WIDE: u64 = 4_000;
    const BELOW: u64 = 10_000_000;
    let trie: Arc<SubscriptionTrie<u64, u64>> = Arc::new(SubscriptionTrie::default());
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + TIME_CAP;
    let writer = {
        let trie = trie.clone();
        thread::spawn(move || {
            for n in (0..WIDE).step_by(2) {
                if n % 4 == 0 {
                    trie.batch(|b| {
                        for k in [n, n + 1] {
                            assert_eq!(b.insert(&format!("c/{k}"), k, value_of(k)), Ok(None));
                        }
                    });
                } else {
                    for k in [n, n + 1] {
                        assert_eq!(trie.insert(&format!("c/{k}"), k, value_of(k)), Ok(None));
                    }
                }
                let m = n / 2;
                let key = BELOW + m;
                assert_eq!(
                    trie.insert(&format!("c/{m}/x"), key, value_of(key)),
                    Ok(None)
                );
                if Instant::now() > deadline {
                    break;
                }
            }
        })
    };
    let readers = spawn_readers(&done, deadline, {
        let trie = trie.clone();
        move |r, rounds| {
            if r == 0 && rounds % 8 == 0 {
                let mut seen = HashSet::new();
                trie.for_each_entry(|e| {
                    let Entry::Subscriber { filter, key, value } = e else {
                        panic!("no shared subscription was inserted");
                    };
                    assert_eq!(*value, value_of(*key), "torn value on {filter}");
                    let want = if *key >= BELOW {
                        format!("c/{}/x", key - BELOW)
                    } else {
                        format!("c/{key}")
                    };
                    assert_eq!(filter, want);
                    assert!(seen.insert(*key), "{key} listed twice");
                });
                return;
            }
            let k = (rounds * 31 + r as u64 * 17) % WIDE;
            for topic in [format!("c/{k}"), format!("c/{k}/x")] {
                trie.for_each_match(&topic, |m| {
                    let Match::Subscriber { key, value, filter } = m else {
                        panic!("no shared subscription was inserted");
                    };
                    assert_eq!(*value, value_of(*key), "torn value on {filter}");
                    assert_eq!(filter, topic);
                    assert!(*key == k || *key == BELOW + k, "{key} on {filter}");
                });
            }
        }
    });
    writer.join().expect("writer");
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    assert_eq!(trie.len() as u64, WIDE + WIDE / 2);
    for k in 0..WIDE {
        assert_eq!(trie.get(&format!("c/{k}"), &k), Some(value_of(k)));
        assert_eq!(trie.remove(&format!("c/{k}"), &k), Some(value_of(k)));
    }
    for m in 0..WIDE / 2 {
        let key = BELOW + m;
        assert_eq!(trie.remove(&format!("c/{m}/x"), &key), Some(value_of(key)));
    }
    assert!(trie.is_empty());
    let mut left = 0;
    trie.for_each_entry(|_| left += 1);
    assert_eq!(left, 0);
}
