//! Round trips through the file, atomic batches, quotas and expiry across downtime.

mod common;

use common::{block_on, config, expiring, msg, now_ms, session};
use halyard_store::{
    Batch, InflightEntry, InflightStage, NEVER_EXPIRES, QuotaLimit, Store, StoreConfig, StoreError,
    WillRecord,
};

#[test]
fn everything_written_comes_back_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let s1 = session("c1", NEVER_EXPIRES, Some(1_000));
    let s2 = session("c2", 3600, None);
    let will = WillRecord {
        message: msg("will/c1", b"bye"),
        fire_at_unix_ms: 5_000,
    };
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&s1).put_session(&s2);
        b.enqueue("c1", &msg("q/1", b"m0"))
            .enqueue("c1", &msg("q/1", b"m1"))
            .enqueue("c2", &msg("q/2", b"n0"));
        b.set_retained(&msg("r/1", b"retained one"))
            .set_retained(&msg("r/2", b"retained two"));
        b.put_will("c1", &will);
        let committed = store.submit(b).wait().unwrap();
        assert_eq!(committed.seqs, vec![Some(0), Some(1), Some(0)]);
        let again = store.enqueue("c1", &msg("q/1", b"m2")).wait().unwrap();
        assert_eq!(again.seqs, vec![Some(2)]);
        let stats = store.stats().snapshot();
        assert_eq!(stats.sessions, 2);
        assert_eq!(stats.retained, 2);
        assert_eq!(stats.wills, 1);
        assert_eq!(stats.queued, 4);
        assert!(stats.store_bytes > 0);
    }
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(state.sessions, vec![s1, s2]);
    let q1: Vec<_> = state.queues["c1"]
        .iter()
        .map(|q| (q.seq, q.message.payload.clone()))
        .collect();
    assert_eq!(
        q1,
        vec![(0, "m0".into()), (1, "m1".into()), (2, "m2".into())]
    );
    assert_eq!(state.queues["c2"].len(), 1);
    assert_eq!(state.queues["c2"][0].message, msg("q/2", b"n0"));
    assert_eq!(
        state.retained,
        vec![msg("r/1", b"retained one"), msg("r/2", b"retained two")]
    );
    assert_eq!(state.wills.get("c1"), Some(&will));
    assert_eq!(state.dropped, Default::default());
    assert!(state.last_commit_unix_ms.is_some());
    // Sequence numbers continue after a reopen.
    let next = store.enqueue("c1", &msg("q/1", b"m3")).wait().unwrap();
    assert_eq!(next.seqs, vec![Some(3)]);
}

#[test]
fn removals_and_replacements_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&session("c1", NEVER_EXPIRES, Some(1)));
        b.put_session(&session("gone", NEVER_EXPIRES, Some(1)));
        for i in 0..5u8 {
            b.enqueue("c1", &msg("t", &[i]));
            b.enqueue("gone", &msg("t", &[i]));
        }
        b.set_retained(&msg("r/keep", b"old"))
            .set_retained(&msg("r/drop", b"x"));
        b.put_will(
            "c1",
            &WillRecord {
                message: msg("w", b"w"),
                fire_at_unix_ms: 1,
            },
        );
        store.submit(b).wait().unwrap();

        let mut b = Batch::new();
        b.dequeue_upto("c1", 2) // removes seqs 0, 1, 2
            .ack_inflight("c1", 3)
            .set_inflight(
                "c1",
                &InflightEntry {
                    packet_id: 9,
                    stage: InflightStage::AwaitingPubrec,
                    message: msg("a/b/c", b"replaced"),
                },
            )
            .set_inflight(
                "c1",
                &InflightEntry {
                    packet_id: 20,
                    stage: InflightStage::AwaitingPubrec,
                    message: msg("a/b/c", b"new"),
                },
            )
            .release_incoming_qos2("c1", 4)
            .set_incoming_qos2("c1", 30)
            .set_retained(&msg("r/keep", b"new"))
            .delete_retained("r/drop")
            .delete_will("c1")
            .delete_session("gone");
        store.submit(b).wait().unwrap();
        assert_eq!(store.stats().snapshot().queued, 2);
    }
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(state.sessions.len(), 1);
    let s = &state.sessions[0];
    let inflight: Vec<_> = s
        .inflight
        .iter()
        .map(|e| (e.packet_id, e.stage, e.message.payload.clone()))
        .collect();
    assert_eq!(
        inflight,
        vec![
            (9, InflightStage::AwaitingPubrec, "replaced".into()),
            (20, InflightStage::AwaitingPubrec, "new".into()),
        ]
    );
    assert_eq!(s.incoming_qos2, vec![11, 30]);
    let seqs: Vec<u64> = state.queues["c1"].iter().map(|q| q.seq).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(!state.queues.contains_key("gone"));
    assert_eq!(state.retained, vec![msg("r/keep", b"new")]);
    assert!(state.wills.is_empty());

    // put_session replaces the in-flight and incoming sets.
    let mut replaced = session("c1", NEVER_EXPIRES, Some(2));
    replaced.inflight.truncate(1);
    replaced.incoming_qos2 = vec![];
    store.put_session(&replaced).wait().unwrap();
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(state.sessions, vec![replaced]);
    assert_eq!(
        state.queues["c1"].len(),
        2,
        "put_session leaves the queue alone"
    );
}

#[test]
fn commit_handle_works_as_a_future_and_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    store
        .put_session(&session("c", NEVER_EXPIRES, None))
        .wait()
        .unwrap();
    let committed = block_on(async { store.enqueue("c", &msg("t", b"x")).await }).unwrap();
    assert_eq!(committed.seqs, vec![Some(0)]);

    let mut pending = store.enqueue("c", &msg("t", b"y"));
    let result = loop {
        if let Some(r) = pending.try_result() {
            break r;
        }
        std::thread::yield_now();
    };
    assert_eq!(result.unwrap().seqs, vec![Some(1)]);
    assert!(pending.try_result().is_none(), "a result is returned once");
}

fn small_limits(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        max_messages_per_session: 3,
        max_bytes_per_session: 4096,
        ..config(dir)
    }
}

#[test]
fn per_session_message_limit_refuses_whole_batch_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&small_limits(dir.path())).unwrap();
    for c in ["c", "other"] {
        store
            .put_session(&session(c, NEVER_EXPIRES, None))
            .wait()
            .unwrap();
    }
    for i in 0..3u8 {
        store.enqueue("c", &msg("t", &[i])).wait().unwrap();
    }
    let err = store.enqueue("c", &msg("t", b"4")).wait().unwrap_err();
    assert!(err.is_quota(), "{err}");
    assert!(matches!(
        err,
        StoreError::QuotaExceeded {
            limit: QuotaLimit::SessionMessages
        }
    ));
    // A batch is all or nothing: the allowed enqueue to "other" is not written either.
    let mut b = Batch::new();
    b.enqueue("other", &msg("t", b"ok"))
        .enqueue("c", &msg("t", b"no"));
    assert!(store.submit(b).wait().unwrap_err().is_quota());
    let snap = store.stats().snapshot();
    assert_eq!(snap.rejected_session_messages, 2);
    assert_eq!(snap.queued, 3);

    // Freeing space makes room again.
    store.dequeue_upto("c", 0).wait().unwrap();
    store.enqueue("c", &msg("t", b"4")).wait().unwrap();

    // A fan-out skips only the full queue.
    let committed = {
        let mut b = Batch::new();
        b.enqueue_many(["c", "other"], &msg("t", b"fan"));
        store.submit(b).wait().unwrap()
    };
    assert_eq!(committed.seqs, vec![None, Some(0)]);
    assert_eq!(store.stats().snapshot().queue_drops_limit, 1);
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(state.queues["c"].len(), 3);
    assert_eq!(state.queues["other"].len(), 1);
}

#[test]
fn per_session_byte_limit_and_store_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_store_bytes: 1 << 20,
        max_bytes_per_session: 3000,
        ..config(dir.path())
    };
    let store = Store::open(&cfg).unwrap();
    store.enqueue("c", &msg("t", &[0; 2000])).wait().unwrap();
    let err = store
        .enqueue("c", &msg("t", &[0; 2000]))
        .wait()
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::QuotaExceeded {
            limit: QuotaLimit::SessionBytes
        }
    ));
    // Retained messages count against the store total only.
    store
        .set_retained(&msg("big/1", &vec![1; 700 * 1024]))
        .wait()
        .unwrap();
    let err = store
        .set_retained(&msg("big/2", &vec![2; 700 * 1024]))
        .wait()
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::QuotaExceeded {
            limit: QuotaLimit::StoreBytes
        }
    ));
    let snap = store.stats().snapshot();
    assert_eq!(snap.rejected_session_bytes, 1);
    assert_eq!(snap.rejected_store_bytes, 1);
    assert!(snap.store_bytes < 1 << 20);
    store.delete_retained("big/1").wait().unwrap();
    store
        .set_retained(&msg("big/2", &vec![2; 700 * 1024]))
        .wait()
        .unwrap();
}

#[test]
fn expiry_is_by_wall_clock_across_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let t0 = 1_000_000_000_000u64;
    {
        let store = Store::open(&cfg).unwrap();
        let mut b = Batch::new();
        b.put_session(&session("short", 60, Some(t0)));
        b.put_session(&session("forever", NEVER_EXPIRES, Some(t0)));
        b.enqueue("short", &msg("t", b"keeps"));
        b.enqueue("forever", &expiring("t", b"expires", t0 + 10_000));
        b.enqueue("forever", &msg("t", b"keeps"));
        b.set_retained(&expiring("r/x", b"r", t0 + 5_000));
        b.set_retained(&msg("r/y", b"r"));
        b.put_will(
            "short",
            &WillRecord {
                message: expiring("w", b"w", t0 + 20_000),
                fire_at_unix_ms: t0 + 1_000,
            },
        );
        store.submit(b).wait().unwrap();
    }
    // Restart one second later: nothing expired.
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(t0 + 1_000).unwrap();
    assert_eq!(state.sessions.len(), 2);
    assert_eq!(state.queues["forever"].len(), 2);
    assert_eq!(state.retained.len(), 2);
    assert_eq!(
        state.wills.len(),
        1,
        "a will whose delay passed is still returned"
    );
    assert_eq!(state.dropped, Default::default());
    drop(store);

    // 30 s later: the queued message and the retained one expired, the session did not.
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(t0 + 30_000).unwrap();
    assert_eq!(state.sessions.len(), 2);
    assert_eq!(state.queues["forever"].len(), 1);
    assert_eq!(state.queues["forever"][0].message.payload, "keeps");
    assert_eq!(state.retained, vec![msg("r/y", b"r")]);
    assert!(state.wills.is_empty());
    assert_eq!(state.dropped.queued, 1);
    assert_eq!(state.dropped.retained, 1);
    assert_eq!(state.dropped.wills, 1);
    assert_eq!(state.dropped.sessions, 0);
    drop(store);

    // 100 s after the disconnect the 60 s session is gone with its queue; the rest stays.
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(t0 + 100_000).unwrap();
    let names: Vec<_> = state
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(names, vec!["forever"]);
    assert!(!state.queues.contains_key("short"));
    assert_eq!(state.dropped.sessions, 1);
    assert_eq!(state.dropped.queued, 1);
    assert_eq!(store.stats().snapshot().expired_sessions, 1);
    drop(store);

    // What expired was deleted from disk, not just hidden.
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(t0 + 100_000).unwrap();
    assert_eq!(state.dropped, Default::default());
    assert_eq!(state.sessions.len(), 1);
    let snap = store.stats().snapshot();
    assert_eq!((snap.sessions, snap.queued, snap.retained), (1, 1, 1));
}

#[test]
fn connected_session_expires_from_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    {
        let store = Store::open(&cfg).unwrap();
        store.put_session(&session("c", 60, None)).wait().unwrap();
    }
    let store = Store::open(&cfg).unwrap();
    let state = store.load_all(now_ms() + 1_000).unwrap();
    assert_eq!(state.sessions.len(), 1);
    let state = store.load_all(now_ms() + 120_000).unwrap();
    assert!(state.sessions.is_empty());
    assert_eq!(state.dropped.sessions, 1);
}

#[test]
fn disabled_or_invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        enabled: false,
        ..config(dir.path())
    };
    let err = Store::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("store.enabled"), "{err}");
    let cfg = StoreConfig {
        commit_max_bytes: 1,
        ..config(dir.path())
    };
    let err = Store::open(&cfg).unwrap_err().to_string();
    assert!(err.contains("store.commit_max_bytes"), "{err}");
}

/// `submit_each`: independent batches in one submission, one result each, in order; a batch
/// refused by a quota leaves the others committed.
#[test]
fn submit_each_commits_batches_independently() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig {
        max_messages_per_session: 1,
        ..config(dir.path())
    };
    let store = Store::open(&cfg).unwrap();
    for c in ["a", "b"] {
        store
            .put_session(&session(c, NEVER_EXPIRES, None))
            .wait()
            .unwrap();
    }
    let one = |client: &str, body: &[u8]| {
        let mut b = Batch::new();
        b.enqueue(client, &msg("t", body));
        b
    };
    let results = store
        .submit_each(vec![
            one("a", b"1"),
            one("a", b"2"),
            one("b", b"3"),
            Batch::new(),
        ])
        .wait();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().seqs, vec![Some(0)]);
    assert!(
        results[1].as_ref().unwrap_err().is_quota(),
        "a's queue is full"
    );
    assert_eq!(results[2].as_ref().unwrap().seqs, vec![Some(0)]);
    assert!(results[3].as_ref().unwrap().seqs.is_empty());
    let state = store.load_all(now_ms()).unwrap();
    assert_eq!(state.queues["a"].len(), 1);
    assert_eq!(state.queues["b"].len(), 1);
    // Nothing to write: ready at once, one result per batch.
    let empty = store.submit_each(vec![Batch::new(), Batch::new()]).wait();
    assert!(empty.iter().all(Result::is_ok) && empty.len() == 2);
}
