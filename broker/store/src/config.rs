//! `StoreConfig`: the `[store]` section of the server's config file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// Name of the database file inside `StoreConfig::dir`.
pub const STORE_FILE_NAME: &str = "halyard.redb";

/// Configuration of the durable store. Every limit has a documented default; hitting one
/// increments a counter in [`crate::StoreStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Whether the broker keeps durable state at all. Default for this type: `true`; the
    /// server's own default config sets `false` (stateless nodes keep sessions in memory).
    /// [`crate::Store::open`] refuses a config with `enabled = false`.
    pub enabled: bool,
    /// Directory holding the store file [`STORE_FILE_NAME`]; created if missing.
    /// Default: `data/store` (relative to the working directory).
    pub dir: PathBuf,
    /// How long the writer gathers submissions after the first one arrives before it commits
    /// them in one transaction. 0 = commit whatever is queued at once (submissions that arrive
    /// during an fsync still share the next commit). Default 2, at most 1000.
    pub commit_interval_ms: u64,
    /// A gathering batch is committed as soon as its encoded size reaches this many bytes.
    /// Default 1 MiB; from 4 KiB to 1 GiB.
    pub commit_max_bytes: usize,
    /// Limit on the logical size of everything stored (keys plus encoded records; the file is
    /// larger by redb's page overhead). Writes that would pass it fail with
    /// `QuotaExceeded { StoreBytes }`. Default 4 GiB; at least 1 MiB.
    pub max_store_bytes: u64,
    /// Limit on entries in one session's offline queue. Default 10 000; at least 1.
    pub max_messages_per_session: u64,
    /// Limit on bytes in one session's offline queue. Default 64 MiB; at least 1 KiB.
    pub max_bytes_per_session: u64,
    /// Limit on submissions waiting for the writer thread; past it a submission fails at
    /// once with `Busy`. Default 65 536; from 1 to 16 777 216.
    pub max_pending_submissions: usize,
    /// Memory redb may use to cache file pages. Default 64 MiB; at least 1 MiB.
    pub cache_bytes: usize,
    /// Scheduling niceness of the writer thread (Linux, per thread), from -20 to 19; 0 leaves
    /// it as the process was started. Default -10: every QoS 1/2 PUBLISH in a group waits
    /// for its commit, so when the writer shares a core with I/O threads it runs first.
    /// Below 0 needs CAP_SYS_NICE (or RLIMIT_NICE); without it the writer keeps the
    /// process's niceness and a warning is logged.
    pub writer_nice: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            dir: PathBuf::from("data/store"),
            commit_interval_ms: 2,
            commit_max_bytes: 1 << 20,
            max_store_bytes: 4 << 30,
            max_messages_per_session: 10_000,
            max_bytes_per_session: 64 << 20,
            max_pending_submissions: 65_536,
            cache_bytes: 64 << 20,
            writer_nice: -10,
        }
    }
}

impl StoreConfig {
    /// A config with defaults and the given directory (tests, tools).
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            dir: dir.into(),
            ..StoreConfig::default()
        }
    }

    /// The store file's path.
    pub fn file_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE_NAME)
    }

    /// Checks every field against its documented range; the error names the field.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.dir.as_os_str().is_empty() {
            return Err(StoreError::config("dir", "must not be empty"));
        }
        if self.commit_interval_ms > 1000 {
            return Err(StoreError::config(
                "commit_interval_ms",
                format!("is {}; must be at most 1000", self.commit_interval_ms),
            ));
        }
        check_range(
            "commit_max_bytes",
            self.commit_max_bytes as u64,
            4096,
            1 << 30,
        )?;
        check_range("max_store_bytes", self.max_store_bytes, 1 << 20, u64::MAX)?;
        check_range(
            "max_messages_per_session",
            self.max_messages_per_session,
            1,
            u64::MAX,
        )?;
        check_range(
            "max_bytes_per_session",
            self.max_bytes_per_session,
            1024,
            u64::MAX,
        )?;
        check_range(
            "max_pending_submissions",
            self.max_pending_submissions as u64,
            1,
            1 << 24,
        )?;
        check_range("cache_bytes", self.cache_bytes as u64, 1 << 20, u64::MAX)?;
        if !(-20..=19).contains(&self.writer_nice) {
            return Err(StoreError::config(
                "writer_nice",
                format!("is {}; must be from -20 to 19", self.writer_nice),
            ));
        }
        Ok(())
    }
}

fn check_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), StoreError> {
    if value < min || value > max {
        let reason = if max == u64::MAX {
            format!("is {value}; must be at least {min}")
        } else {
            format!("is {value}; must be from {min} to {max}")
        };
        return Err(StoreError::config(field, reason));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        StoreConfig::default().validate().unwrap();
        assert!(StoreConfig::default().enabled);
        assert_eq!(StoreConfig::default().commit_interval_ms, 2);
        assert_eq!(StoreConfig::default().commit_max_bytes, 1 << 20);
    }

    #[test]
    fn validation_names_the_field() {
        let cfg = StoreConfig {
            commit_interval_ms: 5000,
            ..StoreConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("store.commit_interval_ms"), "{err}");

        let cfg = StoreConfig {
            max_messages_per_session: 0,
            ..StoreConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("store.max_messages_per_session"), "{err}");

        let cfg = StoreConfig {
            commit_max_bytes: 10,
            ..StoreConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("store.commit_max_bytes"), "{err}");
    }

    #[test]
    fn deserialize_rejects_unknown_fields_and_fills_defaults() {
        // serde's derived Deserialize works with any format; a minimal map deserializer from
        // serde's value module keeps this test free of a TOML dependency.
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error as DeError, MapDeserializer};
        let map = vec![("dir", "/tmp/x"), ("bogus", "1")];
        let de: MapDeserializer<'_, _, DeError> =
            MapDeserializer::new(map.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let err = StoreConfig::deserialize(de).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");

        let map = vec![("dir", "/tmp/x")];
        let de: MapDeserializer<'_, _, DeError> =
            MapDeserializer::new(map.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let cfg = StoreConfig::deserialize(de).unwrap();
        assert_eq!(cfg.dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.max_messages_per_session, 10_000);
    }
}
