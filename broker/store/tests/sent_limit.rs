//! The per-session sent limit (format 2): round trip, removal with the session, expiry at
//! load, and the format check (a format-1 file is upgraded, a newer one refused).

mod common;

use common::{config, expiring, msg, now_ms, session};
use halyard_store::{Batch, NEVER_EXPIRES, STORE_FILE_NAME, Store, StoreError};
use redb::{Database, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[test]
fn sent_limit_comes_back_and_goes_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let now = now_ms();
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&session("c1", NEVER_EXPIRES, None))
            .put_session(&session("c2", NEVER_EXPIRES, None));
        // Entry 0 expired but may have been sent (below the limit): kept. Entry 1 expired
        // and never sent: dropped.
        b.enqueue("c1", &expiring("q", b"sent", now - 1))
            .enqueue("c1", &expiring("q", b"unsent", now - 1))
            .enqueue("c1", &msg("q", b"live"));
        b.set_sent_limit("c1", 1).set_sent_limit("c2", 7);
        store.submit(b).wait().unwrap();
        let mut b = Batch::new();
        b.delete_session("c2");
        store.submit(b).wait().unwrap();
    }
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(now).unwrap();
    assert_eq!(state.sent_limits.get("c1"), Some(&1));
    assert_eq!(
        state.sent_limits.get("c2"),
        None,
        "removed with its session"
    );
    let payloads: Vec<_> = state.queues["c1"]
        .iter()
        .map(|q| (q.seq, q.message.payload.clone()))
        .collect();
    assert_eq!(payloads, vec![(0, "sent".into()), (2, "live".into())]);
    assert_eq!(state.dropped.queued, 1);
}

fn set_format(dir: &std::path::Path, version: u64) {
    let db = Database::open(dir.join(STORE_FILE_NAME)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format", version)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn format_1_file_is_upgraded_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&session("c1", NEVER_EXPIRES, None))
            .enqueue("c1", &msg("q", b"m"));
        store.submit(b).wait().unwrap();
    }
    // A version-1 file: no `queue_sent` table.
    {
        let db = Database::open(dir.path().join(STORE_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(TableDefinition::<&str, u64>::new("queue_sent"))
            .unwrap();
        txn.open_table(META).unwrap().insert("format", 1).unwrap();
        txn.commit().unwrap();
    }
    let report = halyard_store::check(dir.path()).unwrap();
    assert!(
        report.counts.is_some(),
        "check reads a format-1 file: {report}"
    );
    {
        let store = Store::open(&cfg).unwrap();
        let state = store.load_all(now_ms()).unwrap();
        assert_eq!(state.queues["c1"].len(), 1);
        assert!(state.sent_limits.is_empty());
        let mut b = Batch::new();
        b.set_sent_limit("c1", 1);
        store.submit(b).wait().unwrap();
    }
    set_format(dir.path(), 3);
    match Store::open(&cfg) {
        Err(StoreError::Format {
            found: 3,
            expected: 2,
            ..
        }) => {}
        other => panic!("expected the format error, got {other:?}"),
    }
}
