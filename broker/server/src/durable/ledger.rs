//! [`QueueLedger`]: which store queue entry backs each message in a session's pending queue.

use std::collections::VecDeque;

/// The store sequence numbers of a session's pending queue, front first, in step with the
/// `Session`'s own queue: `Some(seq)` for a message stored with `Batch::enqueue`, `None` for
/// one held only in memory (QoS 0). It travels with the `Session` (offline table, handover).
///
/// Bounded by the session's queue, whose limit is `mqtt.max_queued_messages`.
///
/// A stored delivery that never entered the session's queue (sent at once, or dropped) is
/// reported with [`QueueLedger::consumed`]; its store entry is removed by the next
/// `persist_changes`, in the same commit as the in-flight entry that replaces it. That list
/// is emptied by every `persist_changes`, so it holds at most one step's deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueLedger {
    seqs: VecDeque<Option<u64>>,
    consumed: Vec<u64>,
}

impl QueueLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        QueueLedger::default()
    }

    /// A ledger for a queue whose entries are all stored, with these sequence numbers.
    pub fn from_seqs(seqs: impl IntoIterator<Item = u64>) -> Self {
        QueueLedger {
            seqs: seqs.into_iter().map(Some).collect(),
            consumed: Vec::new(),
        }
    }

    /// Records a message just appended to the session's queue (`DeliverOutcome::Queued` or
    /// `Session::enqueue` returned `Ok`).
    pub fn pushed(&mut self, seq: Option<u64>) {
        self.seqs.push_back(seq);
    }

    /// Records a stored delivery that did not enter the session's queue
    /// (`DeliverOutcome::Sent` or `Dropped`): its store entry goes with the next
    /// `persist_changes`.
    pub fn consumed(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.consumed.push(seq);
        }
    }

    /// The consumed entries recorded since the last call.
    pub(crate) fn take_consumed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.consumed)
    }

    /// Whether consumed entries wait for removal.
    pub(crate) fn has_consumed(&self) -> bool {
        !self.consumed.is_empty()
    }

    /// Takes the entries of `n` messages that left the front of the session's queue
    /// (`SessionChanges::queue_popped`); returns their stored sequence numbers.
    pub fn popped(&mut self, n: u64) -> Vec<u64> {
        let n = usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(self.seqs.len());
        self.seqs.drain(..n).flatten().collect()
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
        assert_eq!(l.take_consumed(), [4]);
        assert!(!l.has_consumed());
    }
}
