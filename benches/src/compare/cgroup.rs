//! A CPU quota for one broker process (`--cpu-per-thread`): a cgroup of its own with a CFS
//! bandwidth limit, so that a broker's capacity can be set below what the machine's cores
//! give and the load generator, on the same cores, is never the limit. This is how the
//! thread-scaling runs measure `io.threads = 2` against 1 on a two-core machine (see
//! RESULTS.md, "Thread scaling").
//!
//! cgroup v2 (`cpu.max`, the unified hierarchy at /sys/fs/cgroup) is used when the root has
//! the cpu controller, else cgroup v1 (`cpu.cfs_quota_us` under /sys/fs/cgroup/cpu). Needs
//! root. The group is removed when the guard is dropped (after the broker has exited).

use std::fs;
use std::path::{Path, PathBuf};

use super::CompareError;

/// CFS period of the quota: the kernel's default, 100 ms. Each CPU draws run time from the
/// group's quota in slices (`sched_cfs_bandwidth_slice_us`, 5 ms); with a 10 ms period and
/// 8 ms of quota, two threads on two CPUs were measured using only ~0.5 CPU between them,
/// never throttled, against ~0.8 without a quota: the slices, not the quota, held them back.
pub const PERIOD_US: u64 = 100_000;

/// The group's CPU weight. A cgroup competes for each CPU as one entity with its own weight,
/// whatever the nice values of the threads inside: at the default weight (that of one nice-0
/// task) a two-thread broker was measured getting ~0.5 CPU of its 0.8 quota, never throttled,
/// while sharing the cores with the generator and other work. A high weight lets it take
/// what the quota allows, so the quota is the limit. (v1 `cpu.shares`: 1024 is nice 0;
/// v2 `cpu.weight`: 100 is nice 0, 10000 the maximum.)
pub const SHARES_V1: u64 = 1024 * 100;
/// See [`SHARES_V1`].
pub const WEIGHT_V2: u64 = 10_000;

/// A cgroup holding one broker, removed on drop.
#[derive(Debug)]
pub struct CpuQuota {
    dir: PathBuf,
}

/// Which hierarchy the quota is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    V2,
    V1,
}

fn flavour() -> Option<(Flavour, PathBuf)> {
    let v2 = Path::new("/sys/fs/cgroup");
    if fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))
    {
        return Some((Flavour::V2, v2.to_path_buf()));
    }
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    v1.join("cpu.cfs_quota_us")
        .exists()
        .then(|| (Flavour::V1, v1.to_path_buf()))
}

/// The quota in microseconds per [`PERIOD_US`] for `cpus` CPUs' worth of time.
pub fn quota_us(cpus: f64) -> u64 {
    // At least 1 ms per period: the kernel refuses quotas below 1 ms.
    ((cpus * PERIOD_US as f64).round() as u64).max(1_000)
}

impl CpuQuota {
    /// Puts process `pid` (all its threads) into a new cgroup named after `tag` whose CPU
    /// time is limited to `cpus` CPUs.
    pub fn apply(pid: u32, cpus: f64, tag: &str) -> Result<CpuQuota, CompareError> {
        if !(cpus > 0.0 && cpus <= 1024.0) {
            return Err(CompareError::Config(format!(
                "cpu quota {cpus} is out of range (0, 1024]"
            )));
        }
        let (flavour, root) = flavour().ok_or_else(|| {
            CompareError::Config(
                "--cpu-per-thread needs the cgroup cpu controller (v2 at /sys/fs/cgroup or v1 at /sys/fs/cgroup/cpu) and root".into(),
            )
        })?;
        let dir = root.join(format!("halyard-bench-{tag}"));
        if dir.exists() {
            // Left over from a run that was killed: its processes are gone or the removal
            // fails and says so.
            fs::remove_dir(&dir)?;
        }
        let quota = quota_us(cpus);
        let guard = match flavour {
            Flavour::V2 => {
                // The cpu controller must be enabled for the root's children; harmless when
                // it already is.
                let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
                fs::create_dir(&dir)?;
                let guard = CpuQuota { dir };
                fs::write(guard.dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
                fs::write(guard.dir.join("cpu.weight"), WEIGHT_V2.to_string())?;
                guard
            }
            Flavour::V1 => {
                fs::create_dir(&dir)?;
                let guard = CpuQuota { dir };
                fs::write(guard.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                fs::write(guard.dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                fs::write(guard.dir.join("cpu.shares"), SHARES_V1.to_string())?;
                guard
            }
        };
        fs::write(guard.dir.join("cgroup.procs"), pid.to_string())?;
        Ok(guard)
    }

    /// `(nr_periods, nr_throttled)` from `cpu.stat`: of the periods in which the broker had
    /// work, how many ran out of quota. A share near 1 means the quota, not the load
    /// generator, was the limit.
    pub fn throttling(&self) -> Option<(u64, u64)> {
        let stat = fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        Some((field("nr_periods ")?, field("nr_throttled ")?))
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // Fails while a process is still inside; the broker has been reaped by now.
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_scales_with_cpus_and_has_a_floor() {
        assert_eq!(quota_us(1.0), PERIOD_US);
        assert_eq!(quota_us(0.45), 45_000);
        assert_eq!(quota_us(0.9), 90_000);
        assert_eq!(quota_us(2.0), 200_000);
        assert_eq!(quota_us(0.001), 1_000);
    }

    #[test]
    fn out_of_range_quota_is_refused() {
        assert!(matches!(
            CpuQuota::apply(1, 0.0, "t"),
            Err(CompareError::Config(_))
        ));
        assert!(matches!(
            CpuQuota::apply(1, f64::NAN, "t"),
            Err(CompareError::Config(_))
        ));
    }
}
