//! `halyard_store_*`: the durable store's counters (halyard-store's [`StoreStats`]) and the
//! refusals the server answered because of it, exported at scrape time.

use std::collections::HashMap;

use halyard_store::{BATCH_SIZE_BUCKETS, COMMIT_LATENCY_BUCKETS_US, StatsSnapshot, StoreStats};
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Metrics, STORE_REFUSED_LABELS};

/// A histogram read from precomputed bucket counts (the store keeps plain counters).
#[derive(Debug)]
struct FixedHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket), non-cumulative, `f64::MAX` (encoded +Inf) last.
    buckets: Vec<(f64, u64)>,
}

impl FixedHistogram {
    fn new(bounds: impl Iterator<Item = f64>, counts: &[u64], sum: f64) -> Self {
        let buckets: Vec<(f64, u64)> = bounds
            .chain(std::iter::once(f64::MAX))
            .zip(counts.iter().copied())
            .collect();
        FixedHistogram {
            sum,
            count: counts.iter().sum(),
            buckets,
        }
    }
}

impl EncodeMetric for FixedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(n: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(n);
    c
}

fn gauge(n: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(n).unwrap_or(i64::MAX));
    g
}

fn labelled(key: &str, values: &[(&str, u64)]) -> Family<Vec<(String, String)>, Counter> {
    let fam = Family::<Vec<(String, String)>, Counter>::default();
    for (label, n) in values {
        fam.get_or_create(&vec![(key.into(), (*label).into())])
            .inc_by(*n);
    }
    fam
}

/// Registers the store metrics when the store is enabled.
pub fn register(m: &Metrics, reg: &mut Registry) {
    let Some(stats) = m.store.get() else {
        return;
    };
    register_snapshot(&stats_snapshot(stats), reg);
    let refused: Vec<(&str, u64)> = STORE_REFUSED_LABELS
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let n = m
                .threads
                .iter()
                .map(|t| t.store_refused[i].load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            (*l, n)
        })
        .collect();
    reg.register(
        "halyard_store_refused",
        "PUBLISHes, CONNECTs and session writes refused because of the store, by reason code",
        labelled("reason", &refused),
    );
}

fn stats_snapshot(stats: &StoreStats) -> StatsSnapshot {
    stats.snapshot()
}

fn register_snapshot(s: &StatsSnapshot, reg: &mut Registry) {
    reg.register(
        "halyard_store_commit_latency_seconds",
        "Group commit latency (write transaction with fsync)",
        FixedHistogram::new(
            COMMIT_LATENCY_BUCKETS_US.iter().map(|us| *us as f64 / 1e6),
            &s.commit_latency,
            s.commit_latency_sum_us as f64 / 1e6,
        ),
    );
    reg.register(
        "halyard_store_batch_size",
        "Submissions per group commit",
        FixedHistogram::new(
            BATCH_SIZE_BUCKETS.iter().map(|n| *n as f64),
            &s.batch_sizes,
            s.submissions as f64,
        ),
    );
    for (name, help, n) in [
        (
            "halyard_store_commits",
            "Group commits made durable",
            s.commits,
        ),
        (
            "halyard_store_commit_failures",
            "Group commits that failed (every write in them was refused)",
            s.commit_failures,
        ),
        (
            "halyard_store_submissions",
            "Writes made durable",
            s.submissions,
        ),
        (
            "halyard_store_operations",
            "Store operations (inserts and removals) made durable",
            s.ops,
        ),
        (
            "halyard_store_bytes_committed",
            "Encoded bytes made durable",
            s.bytes_committed,
        ),
        (
            "halyard_store_queue_drops",
            "Deliveries not queued for a session whose stored queue was full",
            s.queue_drops_limit,
        ),
        (
            "halyard_store_reopens",
            "Times the store reopened its file after an I/O error",
            s.reopens,
        ),
    ] {
        reg.register(name, help, counter(n));
    }
    reg.register(
        "halyard_store_rejected",
        "Writes refused by a store limit, a full disk or a full submission queue",
        labelled(
            "limit",
            &[
                ("max_store_bytes", s.rejected_store_bytes),
                ("max_messages_per_session", s.rejected_session_messages),
                ("max_bytes_per_session", s.rejected_session_bytes),
                ("disk_full", s.rejected_disk_full),
                ("busy", s.rejected_busy),
            ],
        ),
    );
    reg.register(
        "halyard_store_expired",
        "Stored records dropped as expired when the store was loaded",
        labelled(
            "kind",
            &[
                ("sessions", s.expired_sessions),
                ("queued", s.expired_queued),
                ("retained", s.expired_retained),
                ("wills", s.expired_wills),
            ],
        ),
    );
    for (name, help, n) in [
        (
            "halyard_store_bytes",
            "Logical bytes stored (what store.max_store_bytes limits)",
            s.store_bytes,
        ),
        (
            "halyard_store_file_bytes",
            "Size of the store file",
            s.file_bytes,
        ),
        ("halyard_store_sessions", "Stored sessions", s.sessions),
        (
            "halyard_store_retained",
            "Stored retained messages",
            s.retained,
        ),
        ("halyard_store_wills", "Stored pending wills", s.wills),
        (
            "halyard_store_queued",
            "Stored offline-queue entries over all sessions",
            s.queued,
        ),
    ] {
        reg.register(name, help, gauge(n));
    }
}

/// Store counts for `/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StoreSummary {
    /// Stored sessions.
    pub sessions: u64,
    /// Stored offline-queue entries.
    pub queued: u64,
    /// Stored retained messages.
    pub retained: u64,
    /// Stored pending wills.
    pub wills: u64,
    /// Logical bytes stored.
    pub bytes: u64,
    /// Size of the store file.
    pub file_bytes: u64,
    /// Group commits made durable.
    pub commits: u64,
}

/// The `/status` summary of the store, `None` when disabled.
pub fn summary(m: &Metrics) -> Option<StoreSummary> {
    let s = m.store.get()?.snapshot();
    Some(StoreSummary {
        sessions: s.sessions,
        queued: s.queued,
        retained: s.retained,
        wills: s.wills,
        bytes: s.store_bytes,
        file_bytes: s.file_bytes,
        commits: s.commits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_store_metrics_when_enabled() {
        let m = Metrics::new(1);
        assert!(!m.encode().contains("halyard_store_"), "disabled: nothing");
        let dir = tempfile_dir();
        let store = halyard_store::Store::open(&halyard_store::StoreConfig::with_dir(&dir))
            .expect("store opens");
        let _ = m.store.set(store.stats_handle());
        m.threads[0].store_refused(halyard_codec::ReasonCode::QUOTA_EXCEEDED);
        let text = m.encode();
        for needle in [
            "halyard_store_commit_latency_seconds_bucket{le=\"+Inf\"} 0",
            "halyard_store_batch_size_count",
            "halyard_store_commits_total",
            "halyard_store_rejected_total{limit=\"disk_full\"} 0",
            "halyard_store_expired_total{kind=\"sessions\"} 0",
            "halyard_store_sessions 0",
            "halyard_store_refused_total{reason=\"0x97\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(summary(&m).map(|s| s.sessions), Some(0));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "halyard-store-metrics-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
