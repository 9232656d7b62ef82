//! `halyard tune check|apply` and the `halyard_sysctl` gauges: the server's side of
//! `halyard-tune` (kernel-tuning profiles, see `kernel-tuning/README.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use halyard_tune::{EMBEDDED_PROFILES, Profile, TuneError};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `halyard tune ...`.
#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// Compare the running kernel with a profile: print each deviation, exit 1 if any.
    Check(ProfileArgs),
    /// Write the profile's deviating values to /proc/sys (root), then check again.
    Apply(ProfileArgs),
}

/// Which profile `tune check|apply` uses.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Embedded profile: `core` or `replicant`.
    #[arg(long, default_value = "core", value_name = "NAME")]
    pub profile: String,
    /// A profile file (sysctl.conf syntax) instead of an embedded profile.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl ProfileArgs {
    fn load(&self) -> Result<Profile, TuneError> {
        match &self.file {
            Some(path) => Profile::from_file(path),
            None => Profile::embedded(&self.profile),
        }
    }
}

/// Runs `halyard tune ...`: 0 = tuned, 1 = deviations (or failed writes), 2 = bad profile.
pub fn main(cmd: &TuneCommand) -> ExitCode {
    let (args, apply) = match cmd {
        TuneCommand::Check(a) => (a, false),
        TuneCommand::Apply(a) => (a, true),
    };
    let profile = match args.load() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut status = ExitCode::SUCCESS;
    if apply {
        match halyard_tune::apply(&profile) {
            Ok(done) => {
                for a in &done {
                    println!("set {}: {} -> {}", a.key, a.old, a.new);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                status = ExitCode::from(1);
            }
        }
    }
    let deviations = halyard_tune::check(&profile);
    for d in &deviations {
        println!("{d}");
    }
    if deviations.is_empty() {
        println!(
            "profile {}: all {} keys match",
            profile.name,
            profile.entries.len()
        );
        status
    } else {
        println!(
            "profile {}: {} of {} keys deviate",
            profile.name,
            deviations.len(),
            profile.entries.len()
        );
        ExitCode::from(1)
    }
}

/// Registers `halyard_sysctl{key[,field]}` (running value of every key of the embedded
/// profiles; multi-value keys get one gauge per `field`) and
/// `halyard_sysctl_profile_deviations{profile}` (keys that deviate from each profile).
pub fn register(reg: &mut Registry) {
    let values = Family::<Vec<(String, String)>, Gauge>::default();
    let deviations = Family::<Vec<(String, String)>, Gauge>::default();
    let mut seen = std::collections::HashSet::new();
    for (name, _) in EMBEDDED_PROFILES {
        // The embedded profiles are parsed by halyard-tune's own tests; a failure here would
        // only drop their gauges.
        let Ok(profile) = Profile::embedded(name) else {
            continue;
        };
        let count = halyard_tune::check(&profile).len();
        deviations
            .get_or_create(&vec![("profile".into(), (*name).into())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
        for v in halyard_tune::profile_values(&profile) {
            let mut labels = vec![("key".to_string(), v.key.clone())];
            if let Some(f) = v.field {
                labels.push(("field".into(), f.to_string()));
            }
            if seen.insert(labels.clone()) {
                // `as` saturates: LONG_MAX-sized values (fs.file-max) stay at i64::MAX.
                values.get_or_create(&labels).set(v.value as i64);
            }
        }
    }
    reg.register(
        "halyard_sysctl",
        "Running value of a sysctl tuned by the kernel-tuning profiles",
        values,
    );
    reg.register(
        "halyard_sysctl_profile_deviations",
        "Keys whose running value deviates from a kernel-tuning profile",
        deviations,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_a_gauge_per_tuned_key() {
        let mut reg = Registry::default();
        register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
        assert!(
            text.contains(&format!(
                "halyard_sysctl{{key=\"net.core.somaxconn\"}} {}",
                somaxconn.trim()
            )),
            "{text}"
        );
        assert!(text.contains("halyard_sysctl{key=\"net.ipv4.tcp_rmem\",field=\"2\"}"));
        assert!(text.contains("halyard_sysctl_profile_deviations{profile=\"core\"}"));
        assert!(text.contains("halyard_sysctl_profile_deviations{profile=\"replicant\"}"));
    }

    #[test]
    fn unknown_profile_is_a_usage_error() {
        let cmd = TuneCommand::Check(ProfileArgs {
            profile: "edge".into(),
            file: None,
        });
        assert_eq!(main(&cmd), ExitCode::from(2));
    }
}
