//! [`restore`]: the store's [`LoadedState`] rebuilt as sessions, queues, retained messages
//! and will timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_session::{ClientId, Message, QueuePolicy, Session, SessionConfig, WallClock, Will};
use halyard_store::{DroppedAtLoad, LoadedState, NEVER_EXPIRES, SessionRecord};

use super::convert::{record_to_parts, record_to_will, stored_to_delivery, stored_to_message};
use super::{DurableError, QueueLedger};

/// One session read back from the store, offline.
#[derive(Debug)]
pub struct RestoredSession {
    /// The session (change tracking on): resume it on the client's next CONNECT.
    pub session: Session,
    /// Queue entries dropped by the queue limit while rebuilding (the limit shrank):
    /// [`super::Durability::load`] deletes them from the store.
    pub stale_queued: Vec<u64>,
    /// Its offline queue's store sequence numbers, in step with the session's queue.
    pub ledger: QueueLedger,
    /// Protocol level of the last connection (4 = 3.1.1, 5 = 5.0).
    pub protocol_version: u8,
    /// When the session ends unless the client reconnects (`None` = never): disconnect time
    /// (or, for a session connected at the crash, the last commit) plus its expiry interval,
    /// wall-clock time so that downtime counts.
    pub expires_at: Option<Instant>,
}

/// A pending will read back from the store.
#[derive(Debug)]
pub struct RestoredWill {
    /// The client whose will it is.
    pub client_id: ClientId,
    /// The will (its delay is what remained of it).
    pub will: Will,
    /// When to publish it; in the past when its time passed during downtime (publish now).
    pub fire_at: Instant,
}

/// Everything [`restore`] rebuilt.
#[derive(Debug, Default)]
pub struct RestoredState {
    /// Offline sessions, by client id order.
    pub sessions: Vec<RestoredSession>,
    /// Retained messages, by topic order.
    pub retained: Vec<Arc<Message>>,
    /// Pending wills.
    pub wills: Vec<RestoredWill>,
    /// What the store dropped as expired while loading.
    pub dropped: DroppedAtLoad,
    /// Records that could not be rebuilt (client id or topic, and why); logged and skipped
    /// so that one bad record does not keep the broker down. They stay in the store until
    /// overwritten.
    pub skipped: Vec<(String, DurableError)>,
}

/// Rebuilds the loaded state at `clock` with the queue limits of `cfg`. Queued messages
/// whose expiry passed are dropped by the session when their turn comes.
pub fn restore(loaded: LoadedState, clock: &WallClock, cfg: &SessionConfig) -> RestoredState {
    let mut out = RestoredState {
        dropped: loaded.dropped,
        ..RestoredState::default()
    };
    let fallback = loaded.last_commit_unix_ms.unwrap_or(clock.now_unix_ms);
    let mut queues = loaded.queues;
    for record in loaded.sessions {
        let client = record.client_id.clone();
        let queue = queues.remove(&client).unwrap_or_default();
        match restore_session(record, queue, fallback, clock, cfg) {
            Ok(s) => out.sessions.push(s),
            Err(e) => {
                tracing::error!(client_id = %client, error = %e, "stored session skipped");
                out.skipped.push((client, e));
            }
        }
    }
    for m in loaded.retained {
        let topic = m.topic.clone();
        match stored_to_message(m, clock) {
            Ok(m) => out.retained.push(Arc::new(m)),
            Err(e) => {
                tracing::error!(%topic, error = %e, "stored retained message skipped");
                out.skipped.push((topic, e));
            }
        }
    }
    for (client, w) in loaded.wills {
        match record_to_will(w, clock) {
            Ok((will, fire_at)) => out.wills.push(RestoredWill {
                client_id: ClientId::from(client),
                will,
                fire_at,
            }),
            Err(e) => {
                tracing::error!(client_id = %client, error = %e, "stored will skipped");
                out.skipped.push((client, e));
            }
        }
    }
    out
}

fn restore_session(
    record: SessionRecord,
    queue: Vec<halyard_store::QueuedMessage>,
    fallback_disconnected_at: u64,
    clock: &WallClock,
    cfg: &SessionConfig,
) -> Result<RestoredSession, DurableError> {
    let mut deliveries = Vec::with_capacity(queue.len());
    let mut seqs = Vec::with_capacity(queue.len());
    for q in queue {
        let (d, _) = stored_to_delivery(q.message, clock)?;
        seqs.push((q.seq, d.message.clone()));
        deliveries.push(d);
    }
    let protocol_version = record.protocol_version;
    let expires_at = (record.session_expiry_interval_secs != NEVER_EXPIRES).then(|| {
        let since = record
            .disconnected_at_unix_ms
            .unwrap_or(fallback_disconnected_at);
        clock.instant(since) + Duration::from_secs(u64::from(record.session_expiry_interval_secs))
    });
    let parts = record_to_parts(record, deliveries, clock)?;
    let mut session = Session::from_parts(parts, cfg)?;
    session.set_track_changes(true);
    // A queue longer than the configured limit lost entries to the queue policy while being
    // rebuilt: the newest (DropNewest) or the oldest (DropOldest). Keep the ledger in step
    // and hand the dropped entries' numbers back for deletion.
    let excess = seqs.len().saturating_sub(session.queued_len());
    let stale: Vec<u64> = match cfg.queue_policy {
        QueuePolicy::DropNewest => seqs.split_off(seqs.len() - excess),
        QueuePolicy::DropOldest => seqs.drain(..excess).collect(),
    }
    .into_iter()
    .map(|(seq, _)| seq)
    .collect();
    let ledger = QueueLedger::from_stored(seqs);
    Ok(RestoredSession {
        session,
        stale_queued: stale,
        ledger,
        protocol_version,
        expires_at,
    })
}
