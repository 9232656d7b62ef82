//! The one error type of this crate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which limit a refused write would have broken. The server answers every one of them with
/// MQTT 5 reason code 0x97 (Quota exceeded) and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaLimit {
    /// `store.max_store_bytes`: the logical size of everything stored.
    StoreBytes,
    /// `store.max_messages_per_session`: entries in one session's offline queue.
    SessionMessages,
    /// `store.max_bytes_per_session`: bytes in one session's offline queue.
    SessionBytes,
    /// The file system refused to grow the file (ENOSPC or EDQUOT).
    DiskFull,
}

impl QuotaLimit {
    /// Name used in logs and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::StoreBytes => "max_store_bytes",
            QuotaLimit::SessionMessages => "max_messages_per_session",
            QuotaLimit::SessionBytes => "max_bytes_per_session",
            QuotaLimit::DiskFull => "disk_full",
        }
    }
}

impl fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared, clonable error cause (one commit failure completes many handles).
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the store. Clonable because one failed group commit
/// completes every handle in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A `StoreConfig` field has a value outside its documented range.
    #[error("invalid store config: `store.{field}` {reason}")]
    Config {
        /// The offending field, as spelled in the config file.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The store file exists but cannot be read as a Halyard store: truncated, overwritten,
    /// damaged beyond redb's automatic crash recovery, or holding undecodable records.
    #[error(
        "store file {} is corrupt: {source}. Inspect it with `halyard store check --dir {dir}`, \
         try `halyard store repair --dir {dir}`, or start with `--discard-corrupt` to move it \
         aside and start empty (its sessions, queues, retained messages and wills are then lost)",
        path.display(),
        dir = dir_of(path).display()
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What redb or the record decoder reported.
        source: Cause,
    },
    /// Another process (or another `Store` in this process) has the file open.
    #[error("store file {} is in use by another process or Store", path.display())]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// The file or directory could not be created, opened or moved.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// The file was written by an incompatible version of this crate.
    #[error("store file {} has format version {found}; this build reads version {expected}", path.display())]
    Format {
        /// The store file.
        path: PathBuf,
        /// Version found in the file.
        found: u64,
        /// Version this build reads and writes.
        expected: u64,
    },
    /// A write was refused because it would break a limit, or the disk is full.
    /// Nothing of the refused submission was written.
    #[error("store quota exceeded: {limit}")]
    QuotaExceeded {
        /// The limit that was hit.
        limit: QuotaLimit,
    },
    /// More than `store.max_pending_submissions` submissions wait for the writer.
    #[error("store is busy: {limit} submissions already wait for a commit")]
    Busy {
        /// The configured limit.
        limit: usize,
    },
    /// A write transaction failed for a reason other than the ones above; nothing of the
    /// group commit it belonged to was written.
    #[error("store write failed: {source}")]
    Storage {
        /// redb's error.
        source: Cause,
    },
    /// The writer thread has stopped (the store was dropped, or the thread panicked).
    #[error("the store is closed")]
    Closed,
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl StoreError {
    /// True when the server should answer with reason code 0x97 (Quota exceeded).
    pub fn is_quota(&self) -> bool {
        matches!(self, StoreError::QuotaExceeded { .. })
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Config {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: &Path, err: io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source: Arc::new(err),
        }
    }

    pub(crate) fn corrupt(
        path: &Path,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// Maps an error raised while writing: a full disk becomes `QuotaExceeded { DiskFull }`.
    pub(crate) fn from_write(err: crate::db::DbError) -> Self {
        if let redb::Error::Io(io) = &*err.0
            && is_disk_full(io)
        {
            return StoreError::QuotaExceeded {
                limit: QuotaLimit::DiskFull,
            };
        }
        StoreError::Storage {
            source: Arc::new(err),
        }
    }
}

/// ENOSPC and EDQUOT, the two ways a file system says "no more room".
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    matches!(err.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
        || err.kind() == io::ErrorKind::StorageFull
        || err.kind() == io::ErrorKind::QuotaExceeded
}

/// Maps an error from opening the database file.
pub(crate) fn from_open(path: &Path, err: redb::DatabaseError) -> StoreError {
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        // redb reports a short or foreign file as an I/O error of these kinds.
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if !matches!(
                io.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            StoreError::io(path, io)
        }
        other => StoreError::corrupt(path, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_names_the_file_and_the_fix() {
        let err = StoreError::corrupt(
            Path::new("/var/lib/halyard/store/halyard.redb"),
            io::Error::other("bad magic"),
        );
        let text = err.to_string();
        assert!(
            text.contains("/var/lib/halyard/store/halyard.redb"),
            "{text}"
        );
        assert!(
            text.contains("halyard store check --dir /var/lib/halyard/store"),
            "{text}"
        );
        assert!(text.contains("--discard-corrupt"), "{text}");
    }

    #[test]
    fn enospc_is_a_quota_error() {
        let err = StoreError::from_write(redb::Error::Io(io::Error::from_raw_os_error(28)).into());
        assert!(err.is_quota());
        assert!(matches!(
            err,
            StoreError::QuotaExceeded {
                limit: QuotaLimit::DiskFull
            }
        ));
        let other = StoreError::from_write(redb::Error::Io(io::Error::from_raw_os_error(5)).into());
        assert!(!other.is_quota());
    }
}
