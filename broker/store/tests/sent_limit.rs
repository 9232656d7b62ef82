//! The per-session sent limit (format 2): round trip, removal with the session, expiry at
//! load. Format upgrades: `format_upgrade.rs`.

mod common;

use common::{config, expiring, msg, now_ms, session};
use halyard_store::{Batch, NEVER_EXPIRES, Store};

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
