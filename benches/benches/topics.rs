//! Subscription-trie micro-benchmarks on 1M filters (mixed exact and wildcard, depth 3-7):
//! matching, subscribe/unsubscribe, and matching from 1 and 2 threads while another thread
//! churns subscriptions. `HALYARD_BENCH_FILTERS` overrides the filter count (default 1M, about
//! 460 MB of trie).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use halyard_topics::{SubscriptionTrie, TopicLimits};

/// Values per level; level j of a name is `l{j}v{n}` with n < CARD[j].
const CARD: [u64; 7] = [16, 64, 256, 1024, 64, 16, 8];
/// Topics matched in the "random" benchmarks.
const TOPICS: usize = 10_000;

/// A small deterministic generator (xorshift64*), so every run builds the same trie.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn name(rng: &mut Rng) -> Vec<String> {
    let depth = 3 + (rng.next() % 5) as usize;
    (0..depth)
        .map(|j| format!("l{j}v{}", rng.next() % CARD[j]))
        .collect()
}

/// 80 % exact filters, 10 % with one `+` level, 10 % ending in `#`.
fn filter(rng: &mut Rng) -> String {
    let mut levels = name(rng);
    match rng.next() % 10 {
        0 => {
            let i = (rng.next() as usize) % levels.len();
            levels[i] = "+".into();
        }
        1 => {
            let last = levels.len() - 1;
            levels[last] = "#".into();
        }
        _ => {}
    }
    levels.join("/")
}

fn filter_count() -> usize {
    std::env::var("HALYARD_BENCH_FILTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

struct Fixture {
    trie: Arc<SubscriptionTrie<u64, u8>>,
    topics: Arc<Vec<String>>,
    n: u64,
}

fn build() -> Fixture {
    let n = filter_count();
    let trie = Arc::new(SubscriptionTrie::new(TopicLimits::default()));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    // Batches of 10k keep each published snapshot's garbage small while building fast.
    let mut i = 0u64;
    while (i as usize) < n {
        trie.batch(|b| {
            for _ in 0..10_000.min(n - i as usize) {
                // Generated filters are valid by construction.
                b.insert(&filter(&mut rng), i, 1).expect("valid filter");
                i += 1;
            }
        });
    }
    eprintln!(
        "built {} subscriptions in {:.1} s",
        trie.len(),
        t0.elapsed().as_secs_f64()
    );
    let topics = (0..TOPICS).map(|_| name(&mut rng).join("/")).collect();
    Fixture {
        trie,
        topics: Arc::new(topics),
        n: n as u64,
    }
}

fn count_matches(trie: &SubscriptionTrie<u64, u8>, topic: &str) -> usize {
    let mut n = 0;
    trie.for_each_match(topic, |_| n += 1);
    n
}

/// Inserts and removes filters until `stop` is set (the churn thread).
fn churn(trie: Arc<SubscriptionTrie<u64, u8>>, stop: Arc<AtomicBool>, first_key: u64) {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut k = first_key;
    while !stop.load(Ordering::Relaxed) {
        let f = filter(&mut rng);
        trie.insert(&f, k, 2).expect("valid filter");
        trie.remove(&f, &k);
        k += 1;
    }
}

fn topics(c: &mut Criterion) {
    let fx = build();
    let mut g = c.benchmark_group("trie");
    let hot = fx.topics[0].clone();
    g.bench_function("match/hot", |b| {
        b.iter(|| count_matches(&fx.trie, black_box(&hot)))
    });
    let mut i = 0;
    g.bench_function("match/random", |b| {
        b.iter(|| {
            i = (i + 1) % fx.topics.len();
            count_matches(&fx.trie, &fx.topics[i])
        })
    });
    let mut rng = Rng(42);
    let mut key = fx.n;
    g.bench_function("subscribe+unsubscribe", |b| {
        b.iter(|| {
            let f = filter(&mut rng);
            key += 1;
            fx.trie.insert(&f, key, 3).expect("valid filter");
            fx.trie.remove(&f, &key)
        })
    });
    g.bench_function("subscribe+unsubscribe/batch-1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let fs: Vec<String> = (0..1000).map(|_| filter(&mut rng)).collect();
                key += 1;
                let t = Instant::now();
                fx.trie.batch(|bt| {
                    for f in &fs {
                        bt.insert(f, key, 3).expect("valid filter");
                    }
                });
                fx.trie.batch(|bt| {
                    for f in &fs {
                        bt.remove(f, &key);
                    }
                });
                total += t.elapsed();
            }
            total
        })
    });
    for threads in [1usize, 2] {
        g.bench_function(format!("match/random/{threads}-threads+churn"), |b| {
            b.iter_custom(|iters| {
                let stop = Arc::new(AtomicBool::new(false));
                let churner = {
                    let (trie, stop) = (fx.trie.clone(), stop.clone());
                    let first = fx.n + 10_000_000;
                    std::thread::spawn(move || churn(trie, stop, first))
                };
                let t = Instant::now();
                let workers: Vec<_> = (0..threads)
                    .map(|w| {
                        let (trie, topics) = (fx.trie.clone(), fx.topics.clone());
                        let per = iters / threads as u64 + 1;
                        std::thread::spawn(move || {
                            let mut found = 0;
                            for j in 0..per as usize {
                                found += count_matches(&trie, &topics[(j * 7 + w) % topics.len()]);
                            }
                            found
                        })
                    })
                    .collect();
                for w in workers {
                    black_box(w.join().expect("matcher thread"));
                }
                let elapsed = t.elapsed();
                stop.store(true, Ordering::Relaxed);
                churner.join().expect("churn thread");
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: this crate enables plotters' `ab_glyph` text (for halyard-compare's
    // charts), with which criterion's plot code finds no font and panics.
    config = Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = topics
}
criterion_main!(benches);
