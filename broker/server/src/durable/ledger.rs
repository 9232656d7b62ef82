//! [`QueueLedger`]: which store queue entry backs each message in a session's pending queue,
//! and each QoS 1 message in flight whose only store copy is its queue entry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halyard_session::Message;
use halyard_store::Commit;

/// How far past the newest queue entry sent by reference the session's stored sent limit
/// is moved (`Batch::set_sent_limit`). A queue entry may be sent by reference only below
/// the durable limit; the limit is moved ahead lazily (not awaited) when the entries sent
/// come within half of this of it, so a session awaits a limit write only when it sends
/// faster than a commit returns. After a crash, at most this many entries that were never
/// sent come back with DUP=1 (allowed: DUP=1 means "may have been sent before").
pub const SENT_LEASE: u64 = 1024;

/// The packet identifier of the delivery stored as queue entry `seq`: (seq mod 65535) + 1.
/// It is a function of the entry, so a message in flight by reference gets the same
/// identifier again after a restart [MQTT-4.4.0-1]; two entries of one session share one
/// only 65,535 entries apart, and the session does not send the later one while the
/// earlier one holds it.
pub fn packet_id_for(seq: u64) -> u16 {
    // `seq % 65535` is below 65535: the cast cannot truncate.
    (seq % 65535) as u16 + 1
}

/// The session's stored sent limit: what is durable, and a higher one on its way.
#[derive(Debug, Default)]
pub(crate) struct SentLease {
    /// Queue entries below this may be sent by reference. Shared with the [`super::Pending`]
    /// of the write that raises it.
    pub durable: Arc<AtomicU64>,
    /// A higher limit submitted without waiting, not yet known to be committed.
    pending: Option<(u64, Commit)>,
}

impl Clone for SentLease {
    fn clone(&self) -> Self {
        SentLease {
            durable: Arc::new(AtomicU64::new(self.durable())),
            pending: None,
        }
    }
}

impl SentLease {
    /// The durable limit.
    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Takes in the lazily submitted limit if its commit returned (without waiting).
    pub(crate) fn poll(&mut self) {
        if let Some((limit, commit)) = &mut self.pending
            && let Some(result) = commit.try_result()
        {
            if result.is_ok() {
                self.durable.fetch_max(*limit, Ordering::AcqRel);
            }
            self.pending = None;
        }
    }

    /// The highest limit durable or on its way.
    pub(crate) fn reach(&self) -> u64 {
        self.pending
            .as_ref()
            .map_or(0, |(l, _)| *l)
            .max(self.durable())
    }

    /// Whether a lazily submitted limit is on its way.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Follows a limit submitted without waiting.
    pub(crate) fn submitted(&mut self, limit: u64, commit: Commit) {
        self.pending = Some((limit, commit));
    }
}

/// One stored (or memory-only) delivery the ledger follows. The message is kept (a reference
/// count, the session holds it anyway) so that the in-flight entry it becomes can be
/// recognised by identity (`Arc::ptr_eq`): a live `Arc` cannot share its address with another.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub seq: Option<u64>,
    pub message: Option<Arc<Message>>,
}

/// The store sequence numbers of a session's pending queue, front first, in step with the
/// `Session`'s own queue: `Some(seq)` for a message stored with `Batch::enqueue`, `None` for
/// one held only in memory (QoS 0). It travels with the `Session` (offline table, handover).
///
/// Bounded by the session's queue, whose limit is `mqtt.max_queued_messages`, plus its
/// in-flight window (`mqtt.max_inflight`).
///
/// A stored delivery that never entered the session's queue (sent at once, or dropped) is
/// reported with [`QueueLedger::consumed_message`]; that list is emptied by every
/// `persist_changes`, so it holds at most one step's deliveries. When such a delivery (or
/// one popped from the queue) went in flight at QoS 1 with the packet id its entry fixes
/// ([`packet_id_for`]), its queue entry is kept as its store copy ("by reference", no
/// in-flight entry written before the PUBLISH leaves, only the session's sent limit
/// ([`SENT_LEASE`]) must cover it: after a crash it comes back in flight with the same packet
/// id and DUP=1) and removed after its PUBACK; anything else leaving the queue has its entry
/// removed.
#[derive(Debug, Clone, Default)]
pub struct QueueLedger {
    seqs: VecDeque<Tracked>,
    consumed: Vec<Tracked>,
    /// Outgoing packet id -> (queue sequence number, message) of QoS 1 deliveries in flight
    /// stored by reference. At most `mqtt.max_inflight` entries (after a restart, those
    /// below the sent limit: at most [`SENT_LEASE`] more).
    by_ref: HashMap<u16, (u64, Arc<Message>)>,
    /// The stored sent limit (see [`SENT_LEASE`]).
    pub(crate) lease: SentLease,
}

impl PartialEq for QueueLedger {
    fn eq(&self, other: &Self) -> bool {
        let seqs = |l: &QueueLedger| l.seqs.iter().map(|t| t.seq).collect::<Vec<_>>();
        let consumed = |l: &QueueLedger| l.consumed.iter().map(|t| t.seq).collect::<Vec<_>>();
        let mut a: Vec<_> = self.by_ref.iter().map(|(k, v)| (*k, v.0)).collect();
        let mut b: Vec<_> = other.by_ref.iter().map(|(k, v)| (*k, v.0)).collect();
        a.sort_unstable();
        b.sort_unstable();
        seqs(self) == seqs(other)
            && consumed(self) == consumed(other)
            && a == b
            && self.lease.durable() == other.lease.durable()
    }
}

impl Eq for QueueLedger {}

impl QueueLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        QueueLedger::default()
    }

    /// A ledger for a queue whose entries are all stored, with these sequence numbers.
    pub fn from_seqs(seqs: impl IntoIterator<Item = u64>) -> Self {
        QueueLedger {
            seqs: seqs
                .into_iter()
                .map(|s| Tracked {
                    seq: Some(s),
                    message: None,
                })
                .collect(),
            ..QueueLedger::default()
        }
    }

    /// As [`QueueLedger::from_seqs`], with the queued messages (a restored queue), so that
    /// those sent at QoS 1 are stored by reference.
    pub fn from_stored(entries: impl IntoIterator<Item = (u64, Arc<Message>)>) -> Self {
        QueueLedger {
            seqs: entries
                .into_iter()
                .map(|(seq, m)| Tracked {
                    seq: Some(seq),
                    message: Some(m),
                })
                .collect(),
            ..QueueLedger::default()
        }
    }

    /// Records a message just appended to the session's queue (`DeliverOutcome::Queued` or
    /// `Session::enqueue` returned `Ok`).
    pub fn pushed(&mut self, seq: Option<u64>) {
        self.seqs.push_back(Tracked { seq, message: None });
    }

    /// As [`QueueLedger::pushed`], keeping the message so that, sent later at QoS 1, its
    /// queue entry can stand for its in-flight entry.
    pub fn pushed_message(&mut self, seq: Option<u64>, message: &Arc<Message>) {
        self.seqs.push_back(Tracked {
            seq,
            message: seq.map(|_| message.clone()),
        });
    }

    /// Records a stored delivery that did not enter the session's queue
    /// (`DeliverOutcome::Sent` or `Dropped`): its store entry goes with the next
    /// `persist_changes`.
    pub fn consumed(&mut self, seq: Option<u64>) {
        if seq.is_some() {
            self.consumed.push(Tracked { seq, message: None });
        }
    }

    /// As [`QueueLedger::consumed`], keeping the message: sent at QoS 1, its queue entry is
    /// kept as its store copy until the PUBACK.
    pub fn consumed_message(&mut self, seq: Option<u64>, message: &Arc<Message>) {
        if seq.is_some() {
            self.consumed.push(Tracked {
                seq,
                message: Some(message.clone()),
            });
        }
    }

    /// The consumed entries recorded since the last call.
    pub(crate) fn take_consumed(&mut self) -> Vec<Tracked> {
        std::mem::take(&mut self.consumed)
    }

    /// Whether consumed entries wait for removal.
    pub(crate) fn has_consumed(&self) -> bool {
        !self.consumed.is_empty()
    }

    /// Takes the entries of `n` messages that left the front of the session's queue
    /// (`SessionChanges::queue_popped`), stored ones only.
    pub(crate) fn popped_tracked(&mut self, n: u64) -> Vec<Tracked> {
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.seqs.len());
        self.seqs.drain(..n).filter(|t| t.seq.is_some()).collect()
    }

    /// Takes the entries of `n` messages that left the front of the session's queue
    /// (`SessionChanges::queue_popped`); returns their stored sequence numbers.
    pub fn popped(&mut self, n: u64) -> Vec<u64> {
        self.popped_tracked(n)
            .into_iter()
            .filter_map(|t| t.seq)
            .collect()
    }

    /// A restored ledger: queued entries `seqs` (with their messages), QoS 1 deliveries in
    /// flight by reference (packet id, queue entry, message), and the stored sent limit.
    pub(crate) fn restored(
        queued: Vec<(u64, Arc<Message>)>,
        by_ref: Vec<(u16, u64, Arc<Message>)>,
        sent_limit: u64,
    ) -> Self {
        let mut l = QueueLedger::from_stored(queued);
        for (id, seq, m) in by_ref {
            l.by_ref.insert(id, (seq, m));
        }
        l.lease.durable = Arc::new(AtomicU64::new(sent_limit));
        l
    }

    /// Outgoing packet id `id` now stands for `message`, stored as queue entry `seq`.
    pub(crate) fn map_by_ref(&mut self, id: u16, seq: u64, message: Arc<Message>) {
        self.by_ref.insert(id, (seq, message));
    }

    /// Whether outgoing packet id `id` is stored by reference: `Some(true)` when `message`
    /// is the one it stands for, `Some(false)` when it stands for another one (that one was
    /// acknowledged and the id reused within the step), `None` when it is not.
    pub(crate) fn by_ref_state(&self, id: u16, message: &Arc<Message>) -> Option<bool> {
        self.by_ref.get(&id).map(|(_, m)| Arc::ptr_eq(m, message))
    }

    /// Forgets outgoing packet id `id` (acknowledged, or replaced); returns its queue entry.
    pub(crate) fn unmap_by_ref(&mut self, id: u16) -> Option<u64> {
        self.by_ref.remove(&id).map(|(seq, _)| seq)
    }

    /// Forgets every by-reference in-flight entry (they are about to be written as in-flight
    /// entries); returns (packet id, queue entry) pairs.
    pub(crate) fn take_by_ref(&mut self) -> Vec<(u16, u64)> {
        self.by_ref
            .drain()
            .map(|(id, (seq, _))| (id, seq))
            .collect()
    }

    /// Whether any in-flight message is stored by reference.
    pub(crate) fn has_by_ref(&self) -> bool {
        !self.by_ref.is_empty()
    }

    /// Entries tracked.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// True when no entry is tracked.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_from_entries_are_never_zero_and_repeat_65535_apart() {
        assert_eq!(packet_id_for(0), 1);
        assert_eq!(packet_id_for(65_533), 65_534);
        assert_eq!(packet_id_for(65_534), 65_535);
        assert_eq!(packet_id_for(65_535), 1);
        for seq in [7, 1 << 20, 1 << 40] {
            assert_ne!(packet_id_for(seq), 0);
            assert_eq!(packet_id_for(seq), packet_id_for(seq + 65_535));
            assert_ne!(packet_id_for(seq), packet_id_for(seq + 1));
        }
        assert_ne!(packet_id_for(u64::MAX), 0);
    }

    #[test]
    fn pops_follow_pushes_in_order_and_skip_memory_only_entries() {
        let mut l = QueueLedger::from_seqs([3, 4]);
        l.pushed(None);
        l.pushed(Some(9));
        assert_eq!(l.popped(3), [3, 4]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.popped(5), [9], "more pops than entries are clamped");
        assert!(l.is_empty());
        l.consumed(Some(4));
        l.consumed(None);
        assert!(l.has_consumed());
        let consumed: Vec<_> = l.take_consumed().into_iter().map(|t| t.seq).collect();
        assert_eq!(consumed, [Some(4)]);
        assert!(!l.has_consumed());
    }
}
