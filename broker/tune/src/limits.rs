//! File-descriptor limits versus the configured connection count.

use std::path::Path;

/// Descriptors the broker needs beyond one per connection: listeners, node links, store files,
/// io_uring/eventfd/timer descriptors, log files.
pub const FD_RESERVE: u64 = 1024;

/// The limits that bound how many sockets the broker can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    /// RLIMIT_NOFILE soft limit of this process (`None` = unlimited or unknown).
    pub soft: Option<u64>,
    /// RLIMIT_NOFILE hard limit of this process (`None` = unlimited or unknown).
    pub hard: Option<u64>,
    /// `fs.file-max`, the system-wide ceiling (`None` = unknown).
    pub file_max: Option<u64>,
}

impl FdLimits {
    /// Reads the limits of the running process from `/proc/self/limits` and
    /// `/proc/sys/fs/file-max`; values that cannot be read are `None`.
    pub fn current() -> FdLimits {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let (soft, hard) = parse_nofile(&limits);
        let file_max = read_u64(Path::new("/proc/sys/fs/file-max"));
        FdLimits {
            soft,
            hard,
            file_max,
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Parses the "Max open files" line of `/proc/self/limits`: `(soft, hard)`.
fn parse_nofile(limits: &str) -> (Option<u64>, Option<u64>) {
    for line in limits.lines() {
        if let Some(rest) = line.strip_prefix("Max open files") {
            let mut f = rest.split_whitespace();
            let soft = f.next().and_then(|s| s.parse().ok());
            let hard = f.next().and_then(|s| s.parse().ok());
            return (soft, hard);
        }
    }
    (None, None)
}

/// A one-line start-up warning when the running process's limits cannot hold
/// `configured_max_connections` sockets (plus [`FD_RESERVE`]); `None` when they can.
pub fn fd_limit_warning(configured_max_connections: u64) -> Option<String> {
    fd_limit_warning_for(&FdLimits::current(), configured_max_connections)
}

/// [`fd_limit_warning`] for given limits (testable without touching the process).
pub fn fd_limit_warning_for(limits: &FdLimits, configured_max_connections: u64) -> Option<String> {
    let needed = configured_max_connections.saturating_add(FD_RESERVE);
    let mut problems = Vec::new();
    if let Some(soft) = limits.soft.filter(|s| *s < needed) {
        let hint = match limits.hard {
            Some(h) if h >= needed => format!("raise the soft limit (hard limit {h} allows it)"),
            _ => "raise nofile in limits.conf / LimitNOFILE= / ulimit -n".to_string(),
        };
        problems.push(format!(
            "open-files limit (RLIMIT_NOFILE) is {soft}: {hint}"
        ));
    }
    if let Some(fm) = limits.file_max.filter(|m| *m < needed) {
        problems.push(format!("fs.file-max is {fm}"));
    }
    if problems.is_empty() {
        return None;
    }
    Some(format!(
        "file-descriptor limits too low for max_connections = {configured_max_connections} \
         (needs {needed}): {}; see kernel-tuning/ and `halyard tune check`",
        problems.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_self_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(text), (Some(1024), Some(524288)));
        let unl = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_nofile(unl), (None, None));
        assert_eq!(parse_nofile(""), (None, None));
    }

    #[test]
    fn warns_only_when_limits_are_below_connections_plus_reserve() {
        let ok = FdLimits {
            soft: Some(1_048_576),
            hard: Some(1_048_576),
            file_max: Some(u64::MAX / 2),
        };
        assert_eq!(fd_limit_warning_for(&ok, 1_000_000), None);
        assert!(
            fd_limit_warning_for(&ok, 1_048_576).is_some(),
            "reserve must count"
        );

        let low = FdLimits {
            soft: Some(1024),
            hard: Some(4096),
            file_max: Some(100_000),
        };
        let w = fd_limit_warning_for(&low, 1_000_000).unwrap();
        assert!(!w.contains('\n'), "one line: {w}");
        assert!(w.contains("1000000") && w.contains("1024") && w.contains("fs.file-max is 100000"));
        assert!(w.contains("limits.conf"));

        let soft_only = FdLimits {
            soft: Some(1024),
            hard: Some(1_048_576),
            file_max: None,
        };
        let w = fd_limit_warning_for(&soft_only, 10_000).unwrap();
        assert!(w.contains("hard limit 1048576 allows it"), "{w}");

        let unknown = FdLimits {
            soft: None,
            hard: None,
            file_max: None,
        };
        assert_eq!(fd_limit_warning_for(&unknown, u64::MAX), None);
    }

    #[test]
    fn current_limits_are_readable_on_linux() {
        let l = FdLimits::current();
        assert!(l.file_max.is_some());
        // The test process has some finite soft limit on every CI machine we run on.
        assert!(l.soft.is_some());
    }
}
