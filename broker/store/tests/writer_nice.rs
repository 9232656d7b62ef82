//! `writer_nice` reaches the writer thread (its own test binary: the only store, hence the
//! only `halyard-store` thread, of this process). A positive niceness needs no privilege.

use halyard_store::{Store, StoreConfig};

/// Niceness of this process's threads named `name` (field 19 of `/proc/self/task/*/stat`).
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // After the parenthesised command: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
    }
    out
}

#[test]
fn writer_thread_runs_at_the_configured_niceness() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        writer_nice: 7,
        ..StoreConfig::with_dir(dir.path())
    };
    let store = Store::open(&cfg).unwrap();
    // The thread sets its niceness before it serves anything: once a commit returned, it has.
    store.delete_session("nobody").wait().unwrap();
    assert_eq!(nice_of_threads("halyard-store"), vec![7]);
    drop(store);

    let bad = StoreConfig {
        writer_nice: 20,
        ..StoreConfig::with_dir(dir.path())
    };
    let err = Store::open(&bad).unwrap_err().to_string();
    assert!(err.contains("store.writer_nice"), "{err}");
}
