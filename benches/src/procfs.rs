//! Process measurements from `/proc`: CPU time (utime + stime), resident memory (VmRSS) and
//! its peak (VmHWM, reset through `clear_refs`).

use std::fs;
use std::io;

/// CPU time and memory of one process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime in seconds.
    pub cpu_s: f64,
    /// Of `cpu_s`, the time spent in the kernel (stime), seconds.
    pub sys_s: f64,
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// Peak resident set size in KiB since start or the last reset.
    pub hwm_kib: u64,
}

/// A process to sample: a pid, or `self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// This process.
    Me,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Me => "/proc/self".to_owned(),
            Pid::Other(p) => format!("/proc/{p}"),
        }
    }
}

/// Clock ticks per second used by `/proc/PID/stat`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (utime, stime) in clock ticks, parsed from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name (field 2) may contain spaces and parentheses: fields after it start
    // behind the last ')'. utime and stime are fields 14 and 15, i.e. the 12th and 13th after
    // the name.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// (VmRSS, VmHWM) in KiB, parsed from the text of `/proc/PID/status`.
pub fn parse_status_kib(status: &str) -> (u64, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Samples `pid` now.
pub fn sample(pid: Pid) -> io::Result<ProcSample> {
    let dir = pid.dir();
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let (utime, stime) = parse_stat_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    let (rss_kib, hwm_kib) = parse_status_kib(&status);
    Ok(ProcSample {
        cpu_s: (utime + stime) as f64 / clock_ticks(),
        sys_s: stime as f64 / clock_ticks(),
        rss_kib,
        hwm_kib,
    })
}

/// The whole host's CPU time from the aggregate `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTicks {
    /// Time the hypervisor ran something else while this VM's CPUs wanted to run (`steal`).
    pub steal: u64,
    /// All accounted time: user, nice, system, idle, iowait, irq, softirq and steal (guest
    /// time is already inside user and nice).
    pub total: u64,
}

impl HostTicks {
    /// The share of all CPU time between `self` and the later sample `later` that was
    /// stolen (0.0-1.0); `None` if no time passed.
    pub fn steal_share(self, later: HostTicks) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let steal = later.steal.saturating_sub(self.steal);
        (total > 0).then(|| steal as f64 / total as f64)
    }
}

/// [`HostTicks`] parsed from the text of `/proc/stat`.
pub fn parse_host_ticks(stat: &str) -> Option<HostTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 8).then(|| HostTicks {
        steal: f[7],
        total: f.iter().sum(),
    })
}

/// The host's CPU time now (`/proc/stat`); `None` if it cannot be read or parsed, e.g. in a
/// container that hides it.
pub fn host_ticks() -> Option<HostTicks> {
    parse_host_ticks(&fs::read_to_string("/proc/stat").ok()?)
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS (`echo 5 > clear_refs`).
pub fn reset_peak_rss(pid: Pid) -> io::Result<()> {
    fs::write(format!("{}/clear_refs", pid.dir()), "5")
}

/// Samples every process of `pids` and sums their figures (CPU time, RSS, peak RSS), e.g. the
/// brokers of a cluster; `None` when `pids` is empty.
pub fn sample_sum(pids: &[u32]) -> io::Result<Option<ProcSample>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut sum = ProcSample::default();
    for &p in pids {
        let s = sample(Pid::Other(p))?;
        sum.cpu_s += s.cpu_s;
        sum.sys_s += s.sys_s;
        sum.rss_kib += s.rss_kib;
        sum.hwm_kib += s.hwm_kib;
    }
    Ok(Some(sum))
}

/// [`reset_peak_rss`] for every process of `pids`.
pub fn reset_peak_rss_all(pids: &[u32]) -> io::Result<()> {
    pids.iter().try_for_each(|&p| reset_peak_rss(Pid::Other(p)))
}

/// Raises this process's open-file limit to its hard limit; returns the new soft limit.
/// Children inherit it (the runner relies on that for the brokers).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit with cur <= max.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 37 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_stat_ticks(stat), Some((250, 37)));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kib(status), (10240, 20480));
        assert_eq!(parse_status_kib(""), (0, 0));
    }

    #[test]
    fn host_steal() {
        let stat = "cpu  100 5 50 800 10 0 20 15 7 0\ncpu0 50 2 25 400 5 0 10 8 3 0\nintr 1\n";
        let a = parse_host_ticks(stat).unwrap();
        assert_eq!(
            a,
            HostTicks {
                steal: 15,
                total: 1000
            }
        );
        let b = HostTicks {
            steal: 65,
            total: 2000,
        };
        assert_eq!(a.steal_share(b), Some(0.05));
        assert_eq!(a.steal_share(a), None);
        assert_eq!(b.steal_share(a), None);
        assert_eq!(parse_host_ticks("cpu  1 2 3\n"), None);
        assert_eq!(parse_host_ticks("intr 1\n"), None);
        assert!(host_ticks().is_some(), "/proc/stat of this machine");
    }

    #[test]
    fn own_process_can_be_sampled_and_reset() {
        let s = sample(Pid::Me).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.hwm_kib >= s.rss_kib);
        // The owner may write its own clear_refs; afterwards the peak is the current RSS
        // (plus whatever was touched since), so it cannot exceed the earlier peak.
        reset_peak_rss(Pid::Me).unwrap();
        let after = sample(Pid::Me).unwrap();
        assert!(after.hwm_kib <= s.hwm_kib.max(after.rss_kib));
    }

    #[test]
    fn sums_over_processes() {
        assert_eq!(sample_sum(&[]).unwrap(), None);
        let me = std::process::id();
        let two = sample_sum(&[me, me]).unwrap().unwrap();
        let one = sample(Pid::Me).unwrap();
        assert!(two.rss_kib >= one.rss_kib && two.cpu_s >= one.cpu_s);
    }
}
