//! Durable enqueue throughput: group commit versus one commit (one fsync) per message.
//!
//! Every message is acknowledged only after its commit returned (Durability::Immediate).
//! Run: `cargo bench -p halyard-store --bench commit`. The store lives under the cargo
//! target directory, i.e. on the real disk (not a tmpfs).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use halyard_store::{Commit, Store, StoreConfig, StoredMessage};

const PAYLOAD: usize = 64;
/// Offline sessions the messages are spread over (round robin): many sessions dirty many
/// B-tree leaves per commit, few sessions append to few leaves.
const CLIENT_COUNTS: [usize; 2] = [1000, 10];
/// Sessions for the one-commit-per-message baseline.
const CLIENTS: usize = 1000;
/// Submitting threads (like the broker's runtime threads).
const SUBMITTERS: usize = 2;
/// Outstanding (not yet durable) submissions per submitter, like unacknowledged publishes.
const WINDOW: usize = 4096;

fn message() -> StoredMessage {
    StoredMessage {
        topic: "bench/topic".into(),
        payload: Bytes::from(vec![0xAB; PAYLOAD]),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_unix_ms: None,
        publisher_id: Some("bench-publisher".into()),
    }
}

fn open(commit_interval_ms: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let cfg = StoreConfig {
        commit_interval_ms,
        max_store_bytes: 1 << 40,
        max_messages_per_session: 1 << 40,
        max_bytes_per_session: 1 << 40,
        ..StoreConfig::with_dir(dir.path())
    };
    let store = Store::open(&cfg).expect("open store");
    (dir, store)
}

/// Enqueues `n` messages from `SUBMITTERS` threads, each keeping up to `WINDOW` submissions
/// outstanding, and waits until all are durable.
fn run_grouped(store: &Store, clients: usize, n: u64) -> Duration {
    let msg = message();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..SUBMITTERS {
            let store = store.clone();
            let msg = msg.clone();
            s.spawn(move || {
                let mut window: VecDeque<Commit> = VecDeque::with_capacity(WINDOW);
                let mine = n / SUBMITTERS as u64 + u64::from((t as u64) < n % SUBMITTERS as u64);
                for i in 0..mine {
                    let client = format!("client-{}", (i as usize * SUBMITTERS + t) % clients);
                    window.push_back(store.enqueue(&client, &msg));
                    if window.len() >= WINDOW
                        && let Some(c) = window.pop_front()
                    {
                        c.wait().expect("durable enqueue");
                    }
                }
                for c in window {
                    c.wait().expect("durable enqueue");
                }
            });
        }
    });
    start.elapsed()
}

/// One message per commit: submit, wait for the fsync, repeat.
fn run_one_by_one(store: &Store, n: u64) -> Duration {
    let msg = message();
    let start = Instant::now();
    for i in 0..n {
        let client = format!("client-{}", i as usize % CLIENTS);
        store
            .enqueue(&client, &msg)
            .wait()
            .expect("durable enqueue");
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_enqueue_64B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    for clients in CLIENT_COUNTS {
        let (_dir, store) = open(2);
        let name = format!("group_commit_{clients}_sessions");
        g.bench_function(&name, |b| {
            b.iter_custom(|iters| run_grouped(&store, clients, iters))
        });
        print_stats(&name, &store);
    }

    let (_dir, store) = open(0);
    g.bench_function("commit_per_message", |b| {
        b.iter_custom(|iters| run_one_by_one(&store, iters))
    });
    print_stats("commit_per_message", &store);
    g.finish();
}

fn print_stats(name: &str, store: &Store) {
    let s = store.stats().snapshot();
    let per_commit = s.submissions as f64 / s.commits.max(1) as f64;
    let mean_ms = s.commit_latency_sum_us as f64 / s.commits.max(1) as f64 / 1000.0;
    println!(
        "{name}: {} messages in {} commits ({per_commit:.1} per commit), mean commit {mean_ms:.2} ms, file {} MiB",
        s.submissions,
        s.commits,
        s.file_bytes >> 20
    );
    if let Some(cpu) = writer_cpu_seconds() {
        println!(
            "{name}: writer thread used {cpu:.2} CPU-s: {:.0} messages per writer CPU-second",
            s.submissions as f64 / cpu
        );
    }
}

/// CPU time (user + system) of the live `halyard-store` writer thread, from /proc (Linux).
fn writer_cpu_seconds() -> Option<f64> {
    // Clock ticks per second; 100 on every Linux configuration this runs on.
    const TICKS: f64 = 100.0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim() != "halyard-store" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        return Some((utime + stime) / TICKS);
    }
    None
}

criterion_group!(benches, bench);
criterion_main!(benches);
