//! Operator tools behind `halyard store check`, `halyard store repair` and the
//! `--discard-corrupt` start option.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::StoreConfig;
use crate::db;
use crate::error::StoreError;
use crate::load::read_all;
use crate::store::Store;

/// Cache used by the tools (they read each page about once).
const TOOL_CACHE_BYTES: usize = 16 << 20;

/// How many `.corrupt-N` names `discard_corrupt` tries before giving up.
const MAX_DISCARDED_FILES: u32 = 1000;

/// Verdict on a store file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckStatus {
    /// There is no store file; a start creates an empty one.
    Missing,
    /// The file passed redb's integrity check and every record decodes.
    Clean,
    /// The file was not shut down cleanly (crash, kill -9, power cut); opening it recovers the
    /// last durable commit automatically, nothing acknowledged is lost.
    Recovered,
    /// The integrity check found damage that redb could repair (by `check`: in a scratch copy,
    /// so run `repair` to fix the real file; by `repair`: fixed in place).
    Repaired,
    /// The file cannot be read or repaired: start with `--discard-corrupt` to move it aside.
    Corrupt {
        /// What failed.
        reason: String,
    },
}

/// Record counts of a readable store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions.
    pub sessions: u64,
    /// Offline-queue entries.
    pub queued: u64,
    /// Retained messages.
    pub retained: u64,
    /// Pending wills.
    pub wills: u64,
}

/// Result of [`check`] or [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The store file.
    pub path: PathBuf,
    /// Its size in bytes (0 when missing).
    pub file_bytes: u64,
    /// The verdict.
    pub status: CheckStatus,
    /// Counts, when the file could be read (before any expiry filtering).
    pub counts: Option<Counts>,
}

impl Report {
    /// True when a broker can start on this file as it is (possibly after automatic recovery).
    pub fn is_usable(&self) -> bool {
        matches!(
            self.status,
            CheckStatus::Missing | CheckStatus::Clean | CheckStatus::Recovered
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        write!(f, "{} ({} bytes): ", self.path.display(), self.file_bytes)?;
        match &self.status {
            CheckStatus::Missing => write!(f, "no store file; a start creates an empty one")?,
            CheckStatus::Clean => write!(f, "clean")?,
            CheckStatus::Recovered => write!(
                f,
                "not shut down cleanly; the next start recovers it automatically"
            )?,
            CheckStatus::Repaired => write!(
                f,
                "damaged but repairable; run `halyard store repair --dir {}`",
                dir.display()
            )?,
            CheckStatus::Corrupt { reason } => write!(
                f,
                "corrupt ({reason}); start with `--discard-corrupt` to move it aside \
                 (its contents are lost)"
            )?,
        }
        if let Some(c) = &self.counts {
            write!(
                f,
                "; {} sessions, {} queued messages, {} retained, {} wills",
                c.sessions, c.queued, c.retained, c.wills
            )?;
        }
        Ok(())
    }
}

/// Checks the store in `dir` without changing it: copies the file (under the lock, so a
/// running broker makes this fail with `Locked`), lets redb recover and integrity-check the
/// copy, decodes every record, and deletes the copy.
pub fn check(dir: &Path) -> Result<Report, StoreError> {
    let path = db::file_in(dir);
    let Some(file_bytes) = file_len(&path)? else {
        return Ok(missing(path));
    };
    let scratch = dir.join(format!(
        "{}.check-{}",
        crate::config::STORE_FILE_NAME,
        std::process::id()
    ));
    {
        let _lock = lock(&path)?;
        fs::copy(&path, &scratch).map_err(|e| StoreError::io(&scratch, e))?;
    }
    let report = inspect(&scratch, &path, file_bytes);
    let _ = fs::remove_file(&scratch);
    report
}

/// Repairs the store in `dir` in place: opens it (redb recovers an unclean shutdown), runs
/// redb's integrity check and repair, and decodes every record. A status of `Corrupt` means
/// the file is beyond repair.
pub fn repair(dir: &Path) -> Result<Report, StoreError> {
    let path = db::file_in(dir);
    let Some(file_bytes) = file_len(&path)? else {
        return Ok(missing(path));
    };
    let report = inspect(&path, &path, file_bytes)?;
    if let CheckStatus::Corrupt { reason } = &report.status {
        tracing::error!(file = %path.display(), %reason, "store repair failed");
    }
    Ok(report)
}

/// Moves the store file in `dir` aside to `halyard.redb.corrupt-N` (first free N) and
/// returns the new path; the next open starts empty. Fails with `Locked` while a broker uses it.
pub fn discard_corrupt(dir: &Path) -> Result<PathBuf, StoreError> {
    let path = db::file_in(dir);
    let bytes = file_len(&path)?.ok_or_else(|| {
        StoreError::io(
            &path,
            io::Error::new(io::ErrorKind::NotFound, "no store file"),
        )
    })?;
    let _lock = lock(&path)?;
    for n in 1..=MAX_DISCARDED_FILES {
        let target = dir.join(format!("{}.corrupt-{n}", crate::config::STORE_FILE_NAME));
        if target.exists() {
            continue;
        }
        fs::rename(&path, &target).map_err(|e| StoreError::io(&path, e))?;
        db::sync_dir(dir)?;
        tracing::warn!(
            file = %path.display(),
            moved_to = %target.display(),
            bytes,
            "moved the store file aside; its sessions, queues, retained messages and wills are lost"
        );
        return Ok(target);
    }
    Err(StoreError::io(
        &path,
        io::Error::other(format!(
            "{MAX_DISCARDED_FILES} discarded store files already exist in {}",
            dir.display()
        )),
    ))
}

/// What `open_discarding_corrupt` moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// Where the corrupt file now is.
    pub moved_to: PathBuf,
    /// Why it could not be opened.
    pub reason: String,
}

/// `Store::open`, but a `Corrupt` file is moved aside (logged) and an empty store opened:
/// the `--discard-corrupt` start option.
pub fn open_discarding_corrupt(
    cfg: &StoreConfig,
) -> Result<(Store, Option<Discarded>), StoreError> {
    match Store::open(cfg) {
        Ok(store) => Ok((store, None)),
        Err(err @ StoreError::Corrupt { .. }) => {
            let moved_to = discard_corrupt(&cfg.dir)?;
            let store = Store::open(cfg)?;
            Ok((
                store,
                Some(Discarded {
                    moved_to,
                    reason: err.to_string(),
                }),
            ))
        }
        Err(other) => Err(other),
    }
}

fn missing(path: PathBuf) -> Report {
    Report {
        path,
        file_bytes: 0,
        status: CheckStatus::Missing,
        counts: None,
    }
}

fn file_len(path: &Path) -> Result<Option<u64>, StoreError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Takes the same advisory lock redb takes, so tools never race a running broker.
fn lock(path: &Path) -> Result<fs::File, StoreError> {
    let file = fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io(path, e)),
    }
}

/// Opens `file` (recovering it), integrity-checks it and decodes everything; reports about
/// `shown` (the real path when `file` is a scratch copy).
fn inspect(file: &Path, shown: &Path, file_bytes: u64) -> Result<Report, StoreError> {
    let recovered = Arc::new(AtomicBool::new(false));
    let flag = recovered.clone();
    let report = |status: CheckStatus, counts: Option<Counts>| Report {
        path: shown.to_path_buf(),
        file_bytes,
        status,
        counts,
    };
    let corrupt = |e: &dyn fmt::Display| {
        report(
            CheckStatus::Corrupt {
                reason: e.to_string(),
            },
            None,
        )
    };
    let mut database = match db::open_with(file, TOOL_CACHE_BYTES, move |_| {
        flag.store(true, Ordering::Relaxed);
    }) {
        Ok(d) => d,
        Err(StoreError::Corrupt { source, .. }) => return Ok(corrupt(&source)),
        Err(other) => return Err(other),
    };
    if let Err(e) = db::check_format(file, &database) {
        return Ok(match e {
            StoreError::Corrupt { source, .. } => corrupt(&source),
            other => corrupt(&other),
        });
    }
    let integrity =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| database.check_integrity()));
    let clean = match integrity {
        Ok(Ok(clean)) => clean,
        Ok(Err(e)) => return Ok(corrupt(&e)),
        Err(panic) => return Ok(corrupt(&db::PanicError::from_payload(panic))),
    };
    let raw = match read_all(&database, file) {
        Ok(raw) => raw,
        Err(StoreError::Corrupt { source, .. }) => return Ok(corrupt(&source)),
        Err(other) => return Err(other),
    };
    let counts = Counts {
        sessions: raw.sessions.len() as u64,
        queued: raw.queues.values().map(|q| q.len() as u64).sum(),
        retained: raw.retained.len() as u64,
        wills: raw.wills.len() as u64,
    };
    let status = if !clean {
        CheckStatus::Repaired
    } else if recovered.load(Ordering::Relaxed) {
        CheckStatus::Recovered
    } else {
        CheckStatus::Clean
    };
    Ok(report(status, Some(counts)))
}
