//! Delivery accounting per (subscriber, publisher) stream: lost, duplicated and reordered
//! deliveries, from the per-publisher sequence numbers in the payload.
//!
//! MQTT keeps the order of one publisher's messages on one topic at one QoS, so every
//! subscriber should see `0, 1, 2, ...`. A jump forward opens a gap (a range of missing
//! sequence numbers); a sequence number that later fills a gap is *reordered*; one seen
//! before (not in a gap) is a *duplicate*; whatever is still missing at the end is *lost*.

use std::collections::BTreeMap;

/// Most gaps (ranges of missing sequence numbers) remembered per stream. When exceeded the
/// oldest gap is forgotten: its numbers stay counted as missing, and a late arrival into it is
/// counted as a duplicate and in [`SeqTracker::forgotten_gaps`].
pub const MAX_GAPS: usize = 4096;

/// Accounting for one publisher as seen by one subscriber.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// The next in-order sequence number (one past the highest seen).
    next: u64,
    /// Missing ranges `start -> end` (end exclusive), keyed by start.
    gaps: BTreeMap<u64, u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    forgotten_gaps: u64,
}

impl SeqTracker {
    /// Records one delivery of sequence number `seq`.
    pub fn record(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            self.gaps.insert(self.next, seq);
            if self.gaps.len() > MAX_GAPS {
                self.gaps.pop_first();
                self.forgotten_gaps += 1;
            }
            self.next = seq + 1;
            self.unique += 1;
        } else if self.fill(seq) {
            self.reordered += 1;
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Removes `seq` from the gap containing it; `false` if it is in no gap.
    fn fill(&mut self, seq: u64) -> bool {
        let Some((&start, &end)) = self.gaps.range(..=seq).next_back() else {
            return false;
        };
        if seq >= end {
            return false;
        }
        self.gaps.remove(&start);
        if start < seq {
            self.gaps.insert(start, seq);
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
        }
        true
    }

    /// Distinct sequence numbers delivered.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Deliveries of a sequence number already delivered.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Deliveries that arrived after a later sequence number (and filled a gap).
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Gaps dropped because more than [`MAX_GAPS`] were open.
    pub fn forgotten_gaps(&self) -> u64 {
        self.forgotten_gaps
    }

    /// Messages lost, given that the publisher sent `sent` messages (`0..sent`).
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique)
    }
}

/// Totals over many streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryCounts {
    /// Distinct messages delivered.
    pub unique: u64,
    /// Duplicate deliveries.
    pub duplicated: u64,
    /// Out-of-order deliveries.
    pub reordered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
}

impl DeliveryCounts {
    /// Adds one stream whose publisher sent `sent` messages.
    pub fn add(&mut self, t: &SeqTracker, sent: u64) {
        self.unique += t.unique();
        self.duplicated += t.duplicates();
        self.reordered += t.reordered();
        self.lost += t.lost(sent);
    }

    /// Counts an expected stream that delivered nothing at all.
    pub fn add_silent(&mut self, sent: u64) {
        self.lost += sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn in_order_stream_is_clean() {
        let t = feed(&[0, 1, 2, 3, 4]);
        assert_eq!(
            (t.unique(), t.duplicates(), t.reordered(), t.lost(5)),
            (5, 0, 0, 0)
        );
    }

    #[test]
    fn gaps_at_end_and_middle_are_lost() {
        let t = feed(&[0, 1, 4, 5]);
        assert_eq!(t.lost(8), 4); // 2, 3 in the middle; 6, 7 never sent back
        assert_eq!(t.reordered(), 0);
        let t = feed(&[]);
        assert_eq!(t.lost(3), 3);
    }

    #[test]
    fn duplicates_are_counted_once_each() {
        let t = feed(&[0, 1, 1, 2, 0, 2]);
        assert_eq!((t.unique(), t.duplicates(), t.lost(3)), (3, 3, 0));
    }

    #[test]
    fn late_arrivals_fill_gaps_as_reordered() {
        let t = feed(&[0, 3, 1, 2, 4]);
        assert_eq!(
            (t.unique(), t.duplicates(), t.reordered(), t.lost(5)),
            (5, 0, 2, 0)
        );
        // A late arrival that was already filled is a duplicate.
        let t = feed(&[0, 5, 2, 2, 3]);
        assert_eq!((t.reordered(), t.duplicates(), t.lost(6)), (2, 1, 2));
    }

    #[test]
    fn gap_splitting_keeps_both_sides() {
        let mut t = feed(&[0, 10]);
        t.record(5);
        t.record(1);
        t.record(9);
        assert_eq!(t.reordered(), 3);
        t.record(5);
        assert_eq!(t.duplicates(), 1);
        // 2,3,4,6,7,8 still missing.
        assert_eq!(t.lost(11), 6);
    }

    #[test]
    fn gap_table_is_bounded() {
        let mut t = SeqTracker::default();
        for i in 0..(MAX_GAPS as u64 + 10) {
            t.record(i * 2 + 1); // every even number missing
        }
        assert!(t.gaps.len() <= MAX_GAPS);
        assert_eq!(t.forgotten_gaps(), 10);
        t.record(0); // in a forgotten gap: counted as duplicate, not reordered
        assert_eq!((t.reordered(), t.duplicates()), (0, 1));
    }

    #[test]
    fn totals_add_streams() {
        let mut c = DeliveryCounts::default();
        c.add(&feed(&[0, 2, 1, 1]), 4);
        c.add_silent(7);
        assert_eq!(
            c,
            DeliveryCounts {
                unique: 3,
                duplicated: 1,
                reordered: 1,
                lost: 8
            }
        );
    }
}
