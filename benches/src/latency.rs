//! End-to-end latency recording with an HDR histogram (nanoseconds, 3 significant digits).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency recorded exactly: 60 s. Longer ones are clamped to it and counted.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram. Each subscriber task owns one; they are merged at the end.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    clamped: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram covering 1 ns ..= [`MAX_LATENCY_NS`].
    pub fn new() -> Self {
        // The bounds are constants that satisfy the constructor's rules (low >= 1,
        // high >= 2 * low, sigfig <= 5), so it cannot fail.
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .expect("constant histogram bounds are valid");
        Latency { hist, clamped: 0 }
    }

    /// Records one latency in nanoseconds.
    pub fn record(&mut self, ns: u64) {
        let v = if ns > MAX_LATENCY_NS {
            self.clamped += 1;
            MAX_LATENCY_NS
        } else {
            ns.max(1)
        };
        // `v` is within the bounds given at construction, so recording cannot fail.
        self.hist.saturating_record(v);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms have the same bounds, so adding cannot fail; a failure would only
        // lose samples, which `summary().count` would show.
        let _ = self.hist.add(&other.hist);
        self.clamped += other.clamped;
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Percentiles in microseconds.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.hist.len(),
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: self.hist.mean() / 1000.0,
            clamped: self.clamped,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Samples above [`MAX_LATENCY_NS`], recorded as that value.
    pub clamped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for i in 1..=1000u64 {
            l.record(i * 1000); // 1 us ..= 1000 us
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        // Three significant digits: within 0.1 % of the exact order statistic.
        assert!((s.p50_us - 500.0).abs() <= 0.5 + 500.0 * 1e-3, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 990.0 * 1e-3 + 0.5, "{s:?}");
        assert!((s.p999_us - 999.0).abs() <= 999.0 * 1e-3 + 0.5, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        assert!((s.mean_us - 500.5).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn merge_adds_samples_and_clamps_outliers() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        a.record(0); // recorded as 1 ns
        b.record(MAX_LATENCY_NS * 2);
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.count, s.clamped), (2, 1));
        assert!(s.max_us >= MAX_LATENCY_NS as f64 / 1000.0 * 0.999);
    }

    #[test]
    fn empty_summary_is_zero() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
    }
}
