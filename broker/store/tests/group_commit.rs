//! Group commit: concurrent submitters share write transactions.

mod common;

use std::sync::{Arc, Barrier};

use common::{config, msg, now_ms, session};
use halyard_store::{BATCH_SIZE_BUCKETS, Batch, NEVER_EXPIRES, Store, StoreConfig};

const THREADS: usize = 4;
const PER_THREAD: usize = 25;
const PER_COMMIT: usize = 10;

/// Every submission has the same encoded size, so a batch that closes on
/// `commit_max_bytes` holds exactly `PER_COMMIT` of them. The gathering interval is long
/// (1 s) so that the size threshold, not the timer, closes every batch.
#[test]
fn batches_close_on_the_size_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let mut b = Batch::new();
        b.enqueue("c0", &msg("t", &[0; 500]));
        b
    };
    let cost = batch_cost(&one);
    let cfg = StoreConfig {
        commit_interval_ms: 1000,
        commit_max_bytes: cost * PER_COMMIT,
        ..config(dir.path())
    };
    assert!(
        cfg.commit_max_bytes >= 4096,
        "payload too small for the config minimum"
    );
    let store = Store::open(&cfg).unwrap();
    for t in 0..THREADS {
        store
            .put_session(&session(&format!("c{t}"), NEVER_EXPIRES, None))
            .wait()
            .unwrap();
    }
    let before = store.stats().snapshot();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let commits: Vec<_> = (0..PER_THREAD)
                    .map(|_| store.enqueue(&format!("c{t}"), &msg("t", &[0; 500])))
                    .collect();
                commits
                    .into_iter()
                    .map(|c| c.wait().unwrap().seqs[0].unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    for h in handles {
        let seqs = h.join().unwrap();
        assert_eq!(seqs, (0..PER_THREAD as u64).collect::<Vec<_>>());
    }
    let snap = store.stats().snapshot();
    assert_eq!(
        snap.submissions - before.submissions,
        (THREADS * PER_THREAD) as u64
    );
    let commits = snap.commits - before.commits;
    assert_eq!(commits, (THREADS * PER_THREAD / PER_COMMIT) as u64);
    let bucket = BATCH_SIZE_BUCKETS
        .iter()
        .position(|&b| PER_COMMIT as u64 <= b)
        .unwrap();
    assert_eq!(
        snap.batch_sizes[bucket] - before.batch_sizes[bucket],
        commits
    );
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(
        state.queues.values().map(Vec::len).sum::<usize>(),
        THREADS * PER_THREAD
    );
}

/// With the default 2 ms gathering interval, 8 threads that each keep one submission in
/// flight share transactions: far fewer commits than submissions.
#[test]
fn concurrent_waiters_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    let threads = 8;
    let per_thread = 40;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let c = store.enqueue(&format!("c{t}"), &msg("t", &[i as u8; 64]));
                    c.wait().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let snap = store.stats().snapshot();
    let total = (threads * per_thread) as u64;
    assert_eq!(snap.submissions, total);
    assert!(
        snap.commits * 2 <= total,
        "{} commits for {total} submissions: group commit did not coalesce",
        snap.commits
    );
}

fn batch_cost(b: &Batch) -> usize {
    // The cost the writer uses is the encoded key plus value; measure it through a store
    // with a tiny batch threshold: one submission per commit, bytes_committed / 1.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        commit_interval_ms: 0,
        ..config(dir.path())
    })
    .unwrap();
    store.submit(b.clone()).wait().unwrap();
    store.stats().snapshot().bytes_committed as usize
}
