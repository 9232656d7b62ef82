//! Plain counters and gauges; the server exports them (this crate has no metrics library).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::error::QuotaLimit;

/// Upper bounds (inclusive, microseconds) of the commit latency buckets; one more bucket
/// counts everything slower.
pub const COMMIT_LATENCY_BUCKETS_US: [u64; 12] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 512_000, 2_000_000,
];

/// Upper bounds (inclusive) of the batch-size buckets (submissions per commit); one more
/// bucket counts larger batches.
pub const BATCH_SIZE_BUCKETS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384];

/// Counters of one store, updated by the writer thread and the submitters.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub(crate) commits: AtomicU64,
    pub(crate) commit_failures: AtomicU64,
    pub(crate) submissions: AtomicU64,
    pub(crate) ops: AtomicU64,
    pub(crate) bytes_committed: AtomicU64,
    pub(crate) commit_latency: [AtomicU64; COMMIT_LATENCY_BUCKETS_US.len() + 1],
    pub(crate) commit_latency_sum_us: AtomicU64,
    pub(crate) batch_sizes: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
    pub(crate) store_bytes: AtomicU64,
    pub(crate) file_bytes: AtomicU64,
    pub(crate) sessions: AtomicU64,
    pub(crate) retained: AtomicU64,
    pub(crate) wills: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) rejected_store_bytes: AtomicU64,
    pub(crate) rejected_session_messages: AtomicU64,
    pub(crate) rejected_session_bytes: AtomicU64,
    pub(crate) rejected_disk_full: AtomicU64,
    pub(crate) rejected_busy: AtomicU64,
    pub(crate) queue_drops_limit: AtomicU64,
    pub(crate) expired_sessions: AtomicU64,
    pub(crate) expired_queued: AtomicU64,
    pub(crate) expired_retained: AtomicU64,
    pub(crate) expired_wills: AtomicU64,
    pub(crate) reopens: AtomicU64,
}

/// A copy of [`StoreStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Successful group commits (write transactions).
    pub commits: u64,
    /// Group commits that failed (every submission in them got the error).
    pub commit_failures: u64,
    /// Submissions made durable.
    pub submissions: u64,
    /// Operations made durable.
    pub ops: u64,
    /// Encoded bytes made durable.
    pub bytes_committed: u64,
    /// Commit latency histogram: counts per bucket of [`COMMIT_LATENCY_BUCKETS_US`], then +Inf.
    pub commit_latency: Vec<u64>,
    /// Sum of commit latencies in microseconds.
    pub commit_latency_sum_us: u64,
    /// Submissions-per-commit histogram: counts per bucket of [`BATCH_SIZE_BUCKETS`], then +Inf.
    pub batch_sizes: Vec<u64>,
    /// Gauge: logical bytes stored (the quantity `max_store_bytes` limits).
    pub store_bytes: u64,
    /// Gauge: size of the store file.
    pub file_bytes: u64,
    /// Gauge: stored sessions.
    pub sessions: u64,
    /// Gauge: retained messages.
    pub retained: u64,
    /// Gauge: pending wills.
    pub wills: u64,
    /// Gauge: offline-queue entries over all sessions.
    pub queued: u64,
    /// Submissions refused by `max_store_bytes`.
    pub rejected_store_bytes: u64,
    /// Submissions refused by `max_messages_per_session` (queue drops by limit).
    pub rejected_session_messages: u64,
    /// Submissions refused by `max_bytes_per_session` (queue drops by limit).
    pub rejected_session_bytes: u64,
    /// Group commits refused because the disk was full.
    pub rejected_disk_full: u64,
    /// Submissions refused because `max_pending_submissions` were waiting.
    pub rejected_busy: u64,
    /// `enqueue_many` targets skipped because their session's queue was full.
    pub queue_drops_limit: u64,
    /// Sessions dropped as expired at load.
    pub expired_sessions: u64,
    /// Queue entries dropped as expired or orphaned at load.
    pub expired_queued: u64,
    /// Retained messages dropped as expired at load.
    pub expired_retained: u64,
    /// Wills dropped as expired at load.
    pub expired_wills: u64,
    /// Times the writer reopened the file after an I/O error.
    pub reopens: u64,
}

impl StoreStats {
    /// Copies every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            commits: self.commits.load(Relaxed),
            commit_failures: self.commit_failures.load(Relaxed),
            submissions: self.submissions.load(Relaxed),
            ops: self.ops.load(Relaxed),
            bytes_committed: self.bytes_committed.load(Relaxed),
            commit_latency: self
                .commit_latency
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
            commit_latency_sum_us: self.commit_latency_sum_us.load(Relaxed),
            batch_sizes: self.batch_sizes.iter().map(|c| c.load(Relaxed)).collect(),
            store_bytes: self.store_bytes.load(Relaxed),
            file_bytes: self.file_bytes.load(Relaxed),
            sessions: self.sessions.load(Relaxed),
            retained: self.retained.load(Relaxed),
            wills: self.wills.load(Relaxed),
            queued: self.queued.load(Relaxed),
            rejected_store_bytes: self.rejected_store_bytes.load(Relaxed),
            rejected_session_messages: self.rejected_session_messages.load(Relaxed),
            rejected_session_bytes: self.rejected_session_bytes.load(Relaxed),
            rejected_disk_full: self.rejected_disk_full.load(Relaxed),
            rejected_busy: self.rejected_busy.load(Relaxed),
            queue_drops_limit: self.queue_drops_limit.load(Relaxed),
            expired_sessions: self.expired_sessions.load(Relaxed),
            expired_queued: self.expired_queued.load(Relaxed),
            expired_retained: self.expired_retained.load(Relaxed),
            expired_wills: self.expired_wills.load(Relaxed),
            reopens: self.reopens.load(Relaxed),
        }
    }

    pub(crate) fn record_commit(&self, latency: Duration, submissions: u64, ops: u64, bytes: u64) {
        self.commits.fetch_add(1, Relaxed);
        self.submissions.fetch_add(submissions, Relaxed);
        self.ops.fetch_add(ops, Relaxed);
        self.bytes_committed.fetch_add(bytes, Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.commit_latency_sum_us.fetch_add(us, Relaxed);
        self.commit_latency[bucket(&COMMIT_LATENCY_BUCKETS_US, us)].fetch_add(1, Relaxed);
        self.batch_sizes[bucket(&BATCH_SIZE_BUCKETS, submissions)].fetch_add(1, Relaxed);
    }

    pub(crate) fn record_rejection(&self, limit: QuotaLimit) {
        let counter = match limit {
            QuotaLimit::StoreBytes => &self.rejected_store_bytes,
            QuotaLimit::SessionMessages => &self.rejected_session_messages,
            QuotaLimit::SessionBytes => &self.rejected_session_bytes,
            QuotaLimit::DiskFull => &self.rejected_disk_full,
        };
        counter.fetch_add(1, Relaxed);
    }
}

fn bucket(bounds: &[u64], value: u64) -> usize {
    bounds
        .iter()
        .position(|&b| value <= b)
        .unwrap_or(bounds.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_by_upper_bound() {
        let stats = StoreStats::default();
        stats.record_commit(Duration::from_micros(250), 1, 1, 10);
        stats.record_commit(Duration::from_micros(251), 3, 3, 10);
        stats.record_commit(Duration::from_secs(10), 20_000, 20_000, 10);
        let s = stats.snapshot();
        assert_eq!(s.commits, 3);
        assert_eq!(s.submissions, 20_004);
        assert_eq!(s.commit_latency[0], 1);
        assert_eq!(s.commit_latency[1], 1);
        assert_eq!(s.commit_latency[COMMIT_LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(s.batch_sizes[0], 1);
        assert_eq!(s.batch_sizes[2], 1);
        assert_eq!(s.batch_sizes[BATCH_SIZE_BUCKETS.len()], 1);
    }
}
