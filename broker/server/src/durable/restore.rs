//! [`restore`]: the store's [`LoadedState`] rebuilt as sessions, queues, retained messages
//! and will timers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halyard_codec::QoS;
use halyard_session::{
    ClientId, Delivery, Message, OutgoingParts, OutgoingStage, QueuePolicy, Session, SessionConfig,
    WallClock, Will,
};
use halyard_store::{DroppedAtLoad, LoadedState, NEVER_EXPIRES, SessionRecord};

use super::convert::{record_to_parts, record_to_will, stored_to_delivery, stored_to_message};
use super::{DurableError, QueueLedger, packet_id_for};

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
        let sent_limit = loaded.sent_limits.get(&client).copied().unwrap_or(0);
        match restore_session(record, queue, sent_limit, fallback, clock, cfg) {
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

/// A stored queue split at the session's sent limit.
#[derive(Default)]
struct SplitQueue {
    /// Still queued: (entry, delivery with its fixed packet id).
    queued: Vec<(u64, Delivery)>,
    /// QoS 1 entries below the sent limit: (entry, in flight by reference), resent with
    /// their packet id and DUP=1 (possibly sent before the crash).
    in_flight: Vec<(u64, OutgoingParts)>,
    /// QoS 0 entries below the sent limit: possibly sent, so not sent again (at most once).
    dropped: Vec<u64>,
}

/// Splits `queue` at `sent_limit` (see [`super::SENT_LEASE`]). A QoS 2 entry below it was
/// never sent (its in-flight entry replaced it in the commit before its PUBLISH left) and
/// stays queued. An entry whose packet id another in-flight message holds (possible only
/// 65,535 entries apart, after a lost removal) stays queued too.
fn split_queue(
    queue: Vec<halyard_store::QueuedMessage>,
    sent_limit: u64,
    outgoing: &[OutgoingParts],
    clock: &WallClock,
) -> Result<SplitQueue, DurableError> {
    let mut out = SplitQueue::default();
    let mut ids: HashSet<u16> = outgoing.iter().map(|o| o.packet_id).collect();
    let mut order = outgoing
        .iter()
        .map(|o| o.order.saturating_add(1))
        .max()
        .unwrap_or(0);
    for q in queue {
        let (mut d, _) = stored_to_delivery(q.message, clock)?;
        let id = packet_id_for(q.seq);
        if d.qos != QoS::AtMostOnce {
            d.packet_id = Some(id);
        }
        let below = q.seq < sent_limit;
        if below && d.qos == QoS::AtMostOnce {
            out.dropped.push(q.seq);
        } else if below && d.qos == QoS::AtLeastOnce && ids.insert(id) {
            out.in_flight.push((
                q.seq,
                OutgoingParts {
                    packet_id: id,
                    stage: OutgoingStage::AwaitingPuback,
                    delivery: d,
                    ever_sent: true,
                    order,
                },
            ));
            order += 1;
        } else {
            out.queued.push((q.seq, d));
        }
    }
    Ok(out)
}

fn restore_session(
    record: SessionRecord,
    queue: Vec<halyard_store::QueuedMessage>,
    sent_limit: u64,
    fallback_disconnected_at: u64,
    clock: &WallClock,
    cfg: &SessionConfig,
) -> Result<RestoredSession, DurableError> {
    let protocol_version = record.protocol_version;
    let expires_at = (record.session_expiry_interval_secs != NEVER_EXPIRES).then(|| {
        let since = record
            .disconnected_at_unix_ms
            .unwrap_or(fallback_disconnected_at);
        clock.instant(since) + Duration::from_secs(u64::from(record.session_expiry_interval_secs))
    });
    let mut parts = record_to_parts(record, Vec::new(), clock)?;
    let split = split_queue(queue, sent_limit, &parts.outgoing, clock)?;
    let by_ref: Vec<(u16, u64, Arc<Message>)> = split
        .in_flight
        .iter()
        .map(|(seq, o)| (o.packet_id, *seq, o.delivery.message.clone()))
        .collect();
    let mut seqs = Vec::with_capacity(split.queued.len());
    for (seq, d) in split.queued {
        seqs.push((seq, d.message.clone()));
        parts.queued.push(d);
    }
    parts
        .outgoing
        .extend(split.in_flight.into_iter().map(|(_, o)| o));
    let mut session = Session::from_parts(parts, cfg)?;
    session.set_track_changes(true);
    // A queue longer than the configured limit lost entries to the queue policy while being
    // rebuilt: the newest (DropNewest) or the oldest (DropOldest). Keep the ledger in step
    // and hand the dropped entries' numbers back for deletion.
    let excess = seqs.len().saturating_sub(session.queued_len());
    let mut stale: Vec<u64> = match cfg.queue_policy {
        QueuePolicy::DropNewest => seqs.split_off(seqs.len() - excess),
        QueuePolicy::DropOldest => seqs.drain(..excess).collect(),
    }
    .into_iter()
    .map(|(seq, _)| seq)
    .collect();
    stale.extend(split.dropped);
    let ledger = QueueLedger::restored(seqs, by_ref, sent_limit);
    Ok(RestoredSession {
        session,
        stale_queued: stale,
        ledger,
        protocol_version,
        expires_at,
    })
}
