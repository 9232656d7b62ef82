//! Comparing a profile with the running kernel, applying it, and reading running values.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use crate::TuneError;
use crate::profile::{Compare, Entry, Profile};

/// The real sysctl tree.
const PROC_SYS: &str = "/proc/sys";

/// A profile key whose running value does not satisfy the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deviation {
    /// Dotted sysctl name.
    pub key: String,
    /// The profile's value.
    pub expected: String,
    /// The running value (fields separated by one space); `None` when the key is missing or
    /// unreadable (see `problem`).
    pub actual: Option<String>,
    /// How the values were compared.
    pub compare: Compare,
    /// Why the running value could not be read, when `actual` is `None`.
    pub problem: Option<String>,
}

impl fmt::Display for Deviation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let want = match self.compare {
            Compare::Exact => format!("= {}", self.expected),
            Compare::AtLeast => format!(">= {}", self.expected),
            Compare::RangeContains => format!("a range containing {}", self.expected),
        };
        match (&self.actual, &self.problem) {
            (Some(actual), _) => write!(f, "{}: running {actual}, profile wants {want}", self.key),
            (None, Some(p)) => write!(f, "{}: {p}, profile wants {want}", self.key),
            (None, None) => write!(f, "{}: unreadable, profile wants {want}", self.key),
        }
    }
}

/// A key written by [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Dotted sysctl name.
    pub key: String,
    /// The running value before the write.
    pub old: String,
    /// The value written.
    pub new: String,
}

/// The running value of one numeric field of a profile key, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningValue {
    /// Dotted sysctl name.
    pub key: String,
    /// Field index for multi-field values (`tcp_rmem` has 0, 1, 2); `None` for single values.
    pub field: Option<usize>,
    /// The running value.
    pub value: f64,
}

/// Whether `actual` satisfies `expected` under `compare`. Both are whitespace-separated field
/// lists; any non-numeric field makes the comparison a plain string comparison.
fn satisfies(compare: Compare, expected: &str, actual: &str) -> bool {
    let exp: Vec<&str> = expected.split_whitespace().collect();
    let act: Vec<&str> = actual.split_whitespace().collect();
    if exp.len() != act.len() {
        return false;
    }
    let nums = |v: &[&str]| {
        v.iter()
            .map(|s| s.parse::<i128>().ok())
            .collect::<Option<Vec<_>>>()
    };
    let (Some(e), Some(a)) = (nums(&exp), nums(&act)) else {
        return exp == act;
    };
    match compare {
        Compare::Exact => e == a,
        Compare::AtLeast => e.iter().zip(&a).all(|(e, a)| a >= e),
        Compare::RangeContains => e.len() == 2 && a[0] <= e[0] && a[1] >= e[1],
    }
}

/// Reads the running value of `entry` under `root`: `Ok(None)` when the key does not exist.
fn read_running(root: &Path, entry: &Entry) -> Result<Option<String>, std::io::Error> {
    match std::fs::read_to_string(root.join(entry.relative_path())) {
        Ok(text) => Ok(Some(text.split_whitespace().collect::<Vec<_>>().join(" "))),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Compares `profile` with the running kernel (`/proc/sys`). Returns one [`Deviation`] per key
/// whose running value does not satisfy the profile; an empty vector means fully tuned.
pub fn check(profile: &Profile) -> Vec<Deviation> {
    check_at(profile, Path::new(PROC_SYS))
}

/// [`check`] against a sysctl tree rooted at `root` instead of `/proc/sys`.
pub fn check_at(profile: &Profile, root: &Path) -> Vec<Deviation> {
    let mut out = Vec::new();
    for entry in &profile.entries {
        let deviation = |actual: Option<String>, problem: Option<String>| Deviation {
            key: entry.key.clone(),
            expected: entry.value.clone(),
            actual,
            compare: entry.compare,
            problem,
        };
        match read_running(root, entry) {
            Ok(Some(actual)) if satisfies(entry.compare, &entry.value, &actual) => {}
            Ok(Some(actual)) => out.push(deviation(Some(actual), None)),
            Ok(None) if entry.optional => {}
            Ok(None) => out.push(deviation(None, Some("missing in this kernel".into()))),
            Err(e) => out.push(deviation(None, Some(format!("unreadable: {e}")))),
        }
    }
    out
}

/// Writes every key of `profile` whose running value deviates (root only). Keys that already
/// satisfy the profile are left alone, so a host tuned higher than an `[at least]` key is not
/// lowered. Optional keys missing from the kernel are skipped. Returns what was written; if
/// some writes fail, the others still happen and the failures are returned together.
pub fn apply(profile: &Profile) -> Result<Vec<Applied>, TuneError> {
    apply_at(profile, Path::new(PROC_SYS))
}

/// [`apply`] against a sysctl tree rooted at `root` instead of `/proc/sys`.
pub fn apply_at(profile: &Profile, root: &Path) -> Result<Vec<Applied>, TuneError> {
    let mut applied = Vec::new();
    let mut failed = Vec::new();
    for dev in check_at(profile, root) {
        let Some(entry) = profile.get(&dev.key) else {
            continue;
        };
        let Some(old) = dev.actual else {
            let kind = if dev.problem.as_deref() == Some("missing in this kernel") {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
            let msg = dev.problem.unwrap_or_default();
            failed.push((dev.key, std::io::Error::new(kind, msg)));
            continue;
        };
        match std::fs::write(
            root.join(entry.relative_path()),
            format!("{}\n", entry.value),
        ) {
            Ok(()) => applied.push(Applied {
                key: dev.key,
                old,
                new: entry.value.clone(),
            }),
            Err(e) => failed.push((dev.key, e)),
        }
    }
    if failed.is_empty() {
        Ok(applied)
    } else {
        Err(TuneError::Apply(failed))
    }
}

/// The running numeric values of `profile`'s keys (for `halyard_sysctl` gauges). Missing keys
/// and non-numeric fields are left out.
pub fn profile_values(profile: &Profile) -> Vec<RunningValue> {
    profile_values_at(profile, Path::new(PROC_SYS))
}

/// [`profile_values`] against a sysctl tree rooted at `root` instead of `/proc/sys`.
pub fn profile_values_at(profile: &Profile, root: &Path) -> Vec<RunningValue> {
    let mut out = Vec::new();
    for entry in &profile.entries {
        let Ok(Some(actual)) = read_running(root, entry) else {
            continue;
        };
        let fields: Vec<&str> = actual.split(' ').collect();
        let multi = fields.len() > 1;
        for (i, f) in fields.iter().enumerate() {
            if let Ok(v) = f.parse::<f64>() {
                out.push(RunningValue {
                    key: entry.key.clone(),
                    field: multi.then_some(i),
                    value: v,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A temporary sysctl tree, removed on drop.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(tag: &str) -> FakeSys {
            let dir =
                std::env::temp_dir().join(format!("halyard-tune-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            FakeSys(dir)
        }
        fn set(&self, key: &str, value: &str) {
            let p = self.0.join(key.replace('.', "/"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{value}\n")).unwrap();
        }
        fn get(&self, key: &str) -> String {
            std::fs::read_to_string(self.0.join(key.replace('.', "/"))).unwrap()
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PROFILE: &str = "# [at least] q\nnet.core.somaxconn = 65535\n\
        # exact\nnet.ipv4.tcp_rmem = 4096 16384 16777216\n\
        # [range] ports\nnet.ipv4.ip_local_port_range = 10240 65535\n\
        # exact\nnet.ipv4.tcp_tw_reuse = 1\n\
        # optional\n-net.netfilter.nf_conntrack_max = 100\n\
        # string\nnet.core.default_qdisc = fq\n";

    #[test]
    fn field_wise_comparison_rules() {
        assert!(satisfies(Compare::Exact, "1 2 3", "1\t2  3"));
        assert!(!satisfies(Compare::Exact, "1 2 3", "1 2 4"));
        assert!(!satisfies(Compare::Exact, "1 2 3", "1 2"));
        assert!(satisfies(Compare::AtLeast, "100", "200"));
        assert!(!satisfies(Compare::AtLeast, "100", "99"));
        assert!(satisfies(Compare::AtLeast, "10 20", "10 25"));
        assert!(!satisfies(Compare::AtLeast, "10 20", "11 19"));
        assert!(satisfies(
            Compare::RangeContains,
            "10240 65535",
            "1024 65535"
        ));
        assert!(!satisfies(
            Compare::RangeContains,
            "10240 65535",
            "32768 60999"
        ));
        assert!(!satisfies(
            Compare::RangeContains,
            "10240 65535",
            "10240 65000"
        ));
        assert!(satisfies(Compare::Exact, "fq", "fq"));
        assert!(!satisfies(Compare::AtLeast, "fq", "pfifo_fast"));
        // file-max on 64-bit kernels is LONG_MAX: must not overflow.
        assert!(satisfies(
            Compare::AtLeast,
            "4194304",
            "9223372036854775807"
        ));
    }

    #[test]
    fn check_reports_each_deviation() {
        let sys = FakeSys::new("check");
        let p = Profile::parse("t", PROFILE).unwrap();
        sys.set("net.core.somaxconn", "4096");
        sys.set("net.ipv4.tcp_rmem", "4096\t131072\t6291456");
        sys.set("net.ipv4.ip_local_port_range", "32768\t60999");
        sys.set("net.ipv4.tcp_tw_reuse", "1");
        sys.set("net.core.default_qdisc", "fq");
        let devs = check_at(&p, &sys.0);
        let keys: Vec<&str> = devs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "net.core.somaxconn",
                "net.ipv4.tcp_rmem",
                "net.ipv4.ip_local_port_range"
            ]
        );
        assert_eq!(devs[0].actual.as_deref(), Some("4096"));
        assert_eq!(devs[1].actual.as_deref(), Some("4096 131072 6291456"));
        assert_eq!(
            devs[0].to_string(),
            "net.core.somaxconn: running 4096, profile wants >= 65535"
        );

        // Higher-than-asked at-least values and containing ranges are fine.
        sys.set("net.core.somaxconn", "131072");
        sys.set("net.ipv4.tcp_rmem", "4096 16384 16777216");
        sys.set("net.ipv4.ip_local_port_range", "1024 65535");
        assert!(check_at(&p, &sys.0).is_empty());
    }

    #[test]
    fn missing_required_key_is_a_deviation_but_optional_is_not() {
        let sys = FakeSys::new("missing");
        let p = Profile::parse("t", "a.b = 1\n-c.d = 2\n").unwrap();
        let devs = check_at(&p, &sys.0);
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].key, "a.b");
        assert_eq!(devs[0].actual, None);
        assert!(devs[0].to_string().contains("missing"));
    }

    #[test]
    fn apply_writes_only_deviations_and_then_check_is_clean() {
        let sys = FakeSys::new("apply");
        let p = Profile::parse("t", PROFILE).unwrap();
        sys.set("net.core.somaxconn", "4096");
        sys.set("net.ipv4.tcp_rmem", "4096 131072 6291456");
        sys.set("net.ipv4.ip_local_port_range", "1024 65535");
        sys.set("net.ipv4.tcp_tw_reuse", "2");
        sys.set("net.core.default_qdisc", "pfifo_fast");
        let applied = apply_at(&p, &sys.0).unwrap();
        let keys: Vec<&str> = applied.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "net.core.somaxconn",
                "net.ipv4.tcp_rmem",
                "net.ipv4.tcp_tw_reuse",
                "net.core.default_qdisc"
            ]
        );
        assert_eq!(applied[0].old, "4096");
        assert_eq!(sys.get("net.core.somaxconn"), "65535\n");
        // The wider running range was left alone.
        assert_eq!(sys.get("net.ipv4.ip_local_port_range"), "1024 65535\n");
        assert!(check_at(&p, &sys.0).is_empty());
        assert!(apply_at(&p, &sys.0).unwrap().is_empty());
    }

    #[test]
    fn apply_reports_missing_required_keys_and_writes_the_rest() {
        let sys = FakeSys::new("apply-missing");
        let p = Profile::parse("t", "a.b = 1\nc.d = 2\n").unwrap();
        sys.set("c.d", "0");
        match apply_at(&p, &sys.0) {
            Err(TuneError::Apply(failed)) => {
                assert_eq!(failed.len(), 1);
                assert_eq!(failed[0].0, "a.b");
            }
            other => panic!("expected Apply error, got {other:?}"),
        }
        assert_eq!(sys.get("c.d"), "2\n");
    }

    #[test]
    fn running_values_per_field() {
        let sys = FakeSys::new("values");
        let p = Profile::parse("t", PROFILE).unwrap();
        sys.set("net.core.somaxconn", "4096");
        sys.set("net.ipv4.tcp_rmem", "1 2 3");
        sys.set("net.core.default_qdisc", "fq");
        let v = profile_values_at(&p, &sys.0);
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0],
            RunningValue {
                key: "net.core.somaxconn".into(),
                field: None,
                value: 4096.0
            }
        );
        assert_eq!(v[3].field, Some(2));
        assert_eq!(v[3].value, 3.0);
    }

    #[test]
    fn check_runs_against_the_real_kernel() {
        // Reads /proc/sys; whatever it finds, every deviation names a profile key.
        let p = Profile::embedded("core").unwrap();
        for d in check(&p) {
            assert!(p.get(&d.key).is_some());
        }
        assert!(
            profile_values(&p)
                .iter()
                .any(|v| v.key == "net.core.somaxconn")
        );
    }
}
