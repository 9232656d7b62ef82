//! Store format upgrades: a format-2 file written by a format-2 build (the broker of commit
//! a2271d4, `tests/fixtures/format2.redb.gz`) and a format-1 file made from it are upgraded
//! to format 3 with every session, queue entry, sent limit and retained message intact;
//! the upgraded file takes new writes, keeps its sequence numbers and reopens; the tools
//! read an old file without upgrading it; a newer format is refused.

mod common;

use std::io::Read;
use std::path::Path;

use common::{config, msg};
use halyard_store::{Batch, LoadedState, NEVER_EXPIRES, STORE_FILE_NAME, Store, StoreError};
use redb::{Database, TableDefinition, TableHandle};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const QUEUE_ENTRIES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("queue_entries");

/// The fixture was written at 2026-12-06 13:36 UTC; its MQTT 5 session expires an hour after
/// its disconnect, so every load here happens at a fixed time shortly after.
const FIXTURE_NOW: u64 = 1_796_564_400_000;

/// The fixture, made by a format-2 broker with the store on: `fix-a` (3.1.1, Clean Session
/// 0) and `fix-b` (5.0, Session Expiry Interval 3600) subscribed to `fix/#` at QoS 1;
/// `fix-b` received and acknowledged m1-m3 and left; m4-m6 were then published; and a
/// retained message on `other/r`. `fix-a` holds m1-m6 as entries 0-5, `fix-b` m4-m6 as
/// entries 3-5 and a sent limit (m1-m3 went out by reference to their entries).
fn unpack_fixture(dir: &Path) {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/format2.redb.gz"
    ))
    .unwrap();
    let mut file = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut file)
        .unwrap();
    std::fs::write(dir.join(STORE_FILE_NAME), file).unwrap();
}

fn raw(dir: &Path) -> Database {
    Database::open(dir.join(STORE_FILE_NAME)).unwrap()
}

fn format_of(dir: &Path) -> u64 {
    let db = raw(dir);
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(META).unwrap();
    meta.get("format").unwrap().unwrap().value()
}

fn table_names(dir: &Path) -> Vec<String> {
    let db = raw(dir);
    let txn = db.begin_read().unwrap();
    txn.list_tables()
        .unwrap()
        .map(|t| t.name().to_owned())
        .collect()
}

fn queue(state: &LoadedState, client: &str) -> Vec<(u64, String)> {
    state.queues.get(client).map_or_else(Vec::new, |q| {
        q.iter()
            .map(|e| {
                let payload = String::from_utf8(e.message.payload.to_vec()).unwrap();
                (e.seq, payload)
            })
            .collect()
    })
}

fn entries(seqs: std::ops::RangeInclusive<u64>, first_payload: u64) -> Vec<(u64, String)> {
    let offset = first_payload - seqs.start();
    seqs.map(|s| (s, format!("m{}", s + offset))).collect()
}

/// What the fixture holds, checked after an upgrade from format `from`.
fn assert_fixture_state(state: &LoadedState, from: u64) {
    let sessions: Vec<_> = state
        .sessions
        .iter()
        .map(|s| {
            let filters: Vec<_> = s.subscriptions.iter().map(|f| f.filter.as_str()).collect();
            (
                s.client_id.as_str(),
                s.protocol_version,
                s.session_expiry_interval_secs,
                filters,
            )
        })
        .collect();
    assert_eq!(
        sessions,
        vec![
            ("fix-a", 4, NEVER_EXPIRES, vec!["fix/#"]),
            ("fix-b", 5, 3600, vec!["fix/#"]),
        ]
    );
    assert_eq!(queue(state, "fix-a"), entries(0..=5, 1));
    assert_eq!(queue(state, "fix-b"), entries(3..=5, 4));
    let sent_b = state.sent_limits.get("fix-b").copied();
    if from >= 2 {
        assert!(
            sent_b.is_some_and(|limit| limit >= 3),
            "fix-b's sent limit covers the three entries it was sent: {sent_b:?}"
        );
    } else {
        assert_eq!(sent_b, None, "a format-1 file has no sent limits");
    }
    assert_eq!(state.retained.len(), 1);
    assert_eq!(state.retained[0].topic, "other/r");
    assert_eq!(&state.retained[0].payload[..], b"kept");
    assert_eq!(state.dropped, Default::default());
}

#[test]
fn format_2_file_is_upgraded_with_its_data_and_takes_new_writes() {
    let dir = tempfile::tempdir().unwrap();
    unpack_fixture(dir.path());
    assert_eq!(format_of(dir.path()), 2);

    // The tools read a format-2 file as it is, without upgrading it.
    let report = halyard_store::check(dir.path()).unwrap();
    let counts = report.counts.expect("check reads a format-2 file");
    assert_eq!((counts.sessions, counts.queued, counts.retained), (2, 9, 1));
    assert_eq!(format_of(dir.path()), 2, "check does not upgrade");

    let cfg = config(dir.path());
    let sent_b;
    {
        let store = Store::open(&cfg).unwrap();
        let state = store.load_all(FIXTURE_NOW).unwrap();
        assert_fixture_state(&state, 2);
        sent_b = state.sent_limits["fix-b"];
        assert_eq!(store.stats().snapshot().queued, 9);

        // Sequence numbers go on where the format-2 file left them.
        let mut b = Batch::new();
        b.put_session(&common::session("fix-c", NEVER_EXPIRES, None))
            .enqueue("fix-a", &msg("fix/t", b"m7"))
            .enqueue("fix-b", &msg("fix/t", b"m7"))
            .enqueue("fix-c", &msg("fix/t", b"c0"));
        let c = store.submit(b).wait().unwrap();
        assert_eq!(c.seqs, vec![Some(6), Some(6), Some(0)]);
        let mut b = Batch::new();
        b.dequeue_upto("fix-b", 4).remove_queued("fix-a", 0);
        store.submit(b).wait().unwrap();
        assert_eq!(store.stats().snapshot().queued, 9);
    }
    assert_eq!(format_of(dir.path()), 3);
    let tables = table_names(dir.path());
    assert!(
        !tables.iter().any(|t| t == "queue" || t == "queue_meta"),
        "the format-2 queue tables are gone: {tables:?}"
    );

    // Reopened: the writes and the upgraded data are there.
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(FIXTURE_NOW).unwrap();
    assert_eq!(queue(&state, "fix-a"), entries(1..=6, 2));
    assert_eq!(queue(&state, "fix-b"), entries(5..=6, 6));
    assert_eq!(queue(&state, "fix-c"), vec![(0, "c0".to_owned())]);
    assert_eq!(state.sent_limits.get("fix-b"), Some(&sent_b));
    assert_eq!(state.dropped, Default::default());
    assert_eq!(store.stats().snapshot().queued, 9);

    // A session removed and started again gets a fresh queue: no old entry comes back.
    let mut b = Batch::new();
    b.delete_session("fix-b");
    store.submit(b).wait().unwrap();
    let c = store
        .enqueue("fix-b", &msg("fix/t", b"again"))
        .wait()
        .unwrap();
    assert_eq!(c.seqs, vec![Some(0)]);
    drop(store);
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(FIXTURE_NOW).unwrap();
    assert!(!state.queues.contains_key("fix-b"), "no session: dropped");
    assert_eq!(state.dropped.queued, 1);
    assert_eq!(queue(&state, "fix-a"), entries(1..=6, 2));
    drop(store);

    let report = halyard_store::check(dir.path()).unwrap();
    assert!(report.is_usable(), "{report}");
}

#[test]
fn format_1_file_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    unpack_fixture(dir.path());
    // A version-1 file: no `queue_sent` table.
    {
        let db = raw(dir.path());
        let txn = db.begin_write().unwrap();
        txn.delete_table(TableDefinition::<&str, u64>::new("queue_sent"))
            .unwrap();
        txn.open_table(META).unwrap().insert("format", 1).unwrap();
        txn.commit().unwrap();
    }
    let report = halyard_store::check(dir.path()).unwrap();
    assert_eq!(report.counts.map(|c| c.queued), Some(9), "{report}");

    let cfg = config(dir.path());
    {
        let store = Store::open(&cfg).unwrap();
        let state = store.load_all(FIXTURE_NOW).unwrap();
        assert_fixture_state(&state, 1);
        let mut b = Batch::new();
        b.set_sent_limit("fix-a", 2);
        store.submit(b).wait().unwrap();
    }
    assert_eq!(format_of(dir.path()), 3);
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(FIXTURE_NOW).unwrap();
    assert_eq!(state.sent_limits.get("fix-a"), Some(&2));
    assert_eq!(queue(&state, "fix-a"), entries(0..=5, 1));
}

#[test]
fn newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    drop(Store::open(&cfg).unwrap());
    {
        let db = raw(dir.path());
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 4).unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&cfg) {
        Err(StoreError::Format {
            found: 4,
            expected: 3,
            ..
        }) => {}
        other => panic!("expected the format error, got {other:?}"),
    }
}

#[test]
fn queue_entries_of_no_queue_are_dropped_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&common::session("c1", NEVER_EXPIRES, None))
            .enqueue("c1", &msg("q", b"kept"));
        store.submit(b).wait().unwrap();
    }
    // Entries under a queue number that no client owns (a hand-edited file).
    {
        let db = raw(dir.path());
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(QUEUE_ENTRIES).unwrap();
            t.insert((999, 0), &b"not even a message"[..]).unwrap();
            t.insert((999, 1), &b"nor this"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let store = Store::open(&cfg).unwrap();
        let state = store.load_all(common::now_ms()).unwrap();
        assert_eq!(state.dropped.queued, 2);
        assert_eq!(queue(&state, "c1"), vec![(0, "kept".to_owned())]);
    }
    let db = raw(dir.path());
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(QUEUE_ENTRIES).unwrap();
    assert_eq!(
        t.range((999, 0)..=(999, u64::MAX)).unwrap().count(),
        0,
        "deleted from disk"
    );
}
