//! halyard-tune owns Halyard's kernel-tuning profiles: it parses sysctl profiles
//! (`sysctl.conf(5)` syntax), compares them with the running kernel under `/proc/sys`, writes
//! them (root only), reports the running values for metrics, and checks the process's
//! file-descriptor limits against the configured connection count.
//!
//! The two shipped profiles (`kernel-tuning/core.conf`, `kernel-tuning/replicant.conf`) are
//! embedded at compile time, so `halyard tune check --profile core` works on any host.
//!
//! This crate must never write anything except the sysctl files named by a profile, and only
//! from [`apply`]; it owns no thread, socket or global state, and every function that touches
//! the system has an `_at` variant taking the `/proc/sys` root so tests run on a temporary
//! directory.

mod compare;
mod limits;
mod profile;

pub use compare::{
    Applied, Deviation, RunningValue, apply, apply_at, check, check_at, profile_values,
    profile_values_at,
};
pub use limits::{FD_RESERVE, FdLimits, fd_limit_warning, fd_limit_warning_for};
pub use profile::{Compare, EMBEDDED_PROFILES, Entry, Profile};

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// A profile line could not be parsed (not `key = value`, empty key or value, bad key).
    #[error("{source_name}:{line}: {reason}")]
    Parse {
        /// File name or embedded profile name the line came from.
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// `--profile NAME` named no embedded profile.
    #[error("unknown profile '{0}' (valid: core, replicant)")]
    UnknownProfile(String),
    /// Reading a profile file or a sysctl file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// [`apply`] could not write some keys; the others were written.
    #[error("could not apply {} key(s): {}", .0.len(), .0.iter().map(|(k, e)| format!("{k}: {e}")).collect::<Vec<_>>().join("; "))]
    Apply(Vec<(String, std::io::Error)>),
}
