//! The redb file: table layout, opening (with crash recovery and corruption mapping), and the
//! accounting that the quotas check.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::error::{StoreError, from_open};

/// redb's error, boxed: `redb::Error` is 160 bytes and travels through every fallible path.
#[derive(Debug)]
pub(crate) struct DbError(pub Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        DbError(Box::new(e.into()))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Result of a redb operation.
pub(crate) type DbResult<T> = Result<T, DbError>;

/// On-disk format version written to the `meta` table. Version 2 added the `queue_sent`
/// table; version 3 keys offline-queue entries by a per-session queue number instead of the
/// client id (`queues` and `queue_entries` replace `queue_meta` and `queue`).
pub(crate) const FORMAT_VERSION: u64 = 3;
/// The oldest format this build opens. An older file is upgraded when opened for writing,
/// in one transaction: from version 1 the `queue_sent` table is created, empty (a version-1
/// writer removed a queue entry before its message was sent, so no entry of such a file was
/// ever sent); from versions 1 and 2 every queue gets a number and its entries move to
/// `queue_entries` (see [`upgrade`]). The operator tools read older files as they are. A
/// file with a newer version is refused with [`StoreError::Format`], never misread.
pub(crate) const FORMAT_VERSION_OLDEST: u64 = 1;
/// The first format with numbered queues.
pub(crate) const FORMAT_NUMBERED_QUEUES: u64 = 3;

pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(crate) const INFLIGHT: TableDefinition<(&str, u16), &[u8]> = TableDefinition::new("inflight");
pub(crate) const INCOMING: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming_qos2");
/// (queue number, sequence number) -> message. Fixed-width keys: the writer's B-tree
/// searches compare two integers, not a client id string. Format 3.
pub(crate) const QUEUE_ENTRIES: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("queue_entries");
/// client id -> (queue number, next sequence number, entries, bytes). A queue number is
/// given when a session's first entry is queued and never given again (`meta`
/// `next_queue`); it goes with the session. Format 3.
pub(crate) const QUEUES: TableDefinition<&str, (u64, u64, u64, u64)> =
    TableDefinition::new("queues");
/// Formats 1-2: (client id, sequence number) -> message. Read by the upgrade and the tools.
pub(crate) const LEGACY_QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
/// Formats 1-2: client id -> (next sequence number, entries, bytes).
pub(crate) const LEGACY_QUEUE_META: TableDefinition<&str, (u64, u64, u64)> =
    TableDefinition::new("queue_meta");
/// client id -> sent limit: its queue entries with a lower sequence number may have been
/// sent (a QoS 1 message in flight keeps its queue entry as its only copy). Format 2.
pub(crate) const QUEUE_SENT: TableDefinition<&str, u64> = TableDefinition::new("queue_sent");
pub(crate) const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
pub(crate) const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_BYTES: &str = "bytes";
pub(crate) const META_SESSIONS: &str = "sessions";
pub(crate) const META_RETAINED: &str = "retained";
pub(crate) const META_WILLS: &str = "wills";
pub(crate) const META_QUEUED: &str = "queued";
pub(crate) const META_LAST_COMMIT: &str = "last_commit_unix_ms";
/// The next queue number to give (format 3).
pub(crate) const META_NEXT_QUEUE: &str = "next_queue";

/// Hasher of the writer's per-client maps (looked up for every queue operation; the keys are
/// client ids, and the maps are not exposed to the network, only to the broker's own writes).
pub(crate) type FastHash = ahash::RandomState;

/// Per-session queue bookkeeping.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueMeta {
    /// The queue number keying its entries in [`QUEUE_ENTRIES`].
    pub id: u64,
    pub next_seq: u64,
    pub count: u64,
    pub bytes: u64,
}

/// Counters mirrored in memory by the writer, persisted in `meta`/`queues` with every
/// commit, and reloaded from disk after a failed commit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounts {
    pub bytes: u64,
    pub sessions: u64,
    pub retained: u64,
    pub wills: u64,
    pub queued: u64,
    /// The next queue number to give.
    pub next_queue: u64,
    pub queues: HashMap<String, QueueMeta, FastHash>,
    /// Clients whose `queues` entry changed in the current transaction.
    pub dirty: HashSet<String, FastHash>,
}

impl Accounts {
    /// Reads the persisted counters.
    pub(crate) fn load(db: &Database) -> DbResult<Accounts> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get =
            |key: &str| -> DbResult<u64> { Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0)) };
        let mut acc = Accounts {
            bytes: get(META_BYTES)?,
            sessions: get(META_SESSIONS)?,
            retained: get(META_RETAINED)?,
            wills: get(META_WILLS)?,
            queued: get(META_QUEUED)?,
            ..Accounts::default()
        };
        let next_queue = get(META_NEXT_QUEUE)?;
        let qm = txn.open_table(QUEUES)?;
        for row in qm.iter()? {
            let (k, v) = row?;
            let (id, next_seq, count, bytes) = v.value();
            // Never give a number in use, even if the counter was lost.
            acc.next_queue = acc.next_queue.max(id + 1);
            acc.queues.insert(
                k.value().to_owned(),
                QueueMeta {
                    id,
                    next_seq,
                    count,
                    bytes,
                },
            );
        }
        acc.next_queue = acc.next_queue.max(next_queue);
        Ok(acc)
    }
}

/// Opens (or atomically creates) the store file. Crash recovery after an unclean shutdown
/// happens here, inside redb. Any failure to read the file maps to `Corrupt`, including a
/// panic inside redb on a damaged file.
pub(crate) fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    match fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_fresh(path, cache_bytes)?,
        Err(e) => return Err(StoreError::io(path, e)),
    }
    let db = open_existing(path, cache_bytes)?;
    let found = check_format(path, &db)?;
    if found < FORMAT_VERSION {
        let queues = upgrade(&db, found).map_err(|e| StoreError::corrupt(path, e))?;
        tracing::info!(file = %path.display(), from = found, to = FORMAT_VERSION, queues, "store format upgraded");
    }
    Ok(db)
}

/// Brings a file of an older format (see [`FORMAT_VERSION_OLDEST`]) to [`FORMAT_VERSION`] in
/// one transaction (a crash during it leaves the old file as it was). Returns the number of
/// queues renumbered.
pub(crate) fn upgrade(db: &Database, from: u64) -> DbResult<u64> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate);
    create_tables(&txn)?;
    let queues = if from < FORMAT_NUMBERED_QUEUES {
        number_queues(&txn)?
    } else {
        0
    };
    txn.open_table(META)?.insert(META_FORMAT, FORMAT_VERSION)?;
    txn.commit()?;
    Ok(queues)
}

/// Formats 1-2 to 3: gives every queue a number (in client id order, from 0) and moves its
/// entries from `queue` to `queue_entries`, then deletes the old tables. The byte counts do
/// not change (an entry counts its client id, as before; see `apply::key_bytes`).
fn number_queues(txn: &redb::WriteTransaction) -> DbResult<u64> {
    let mut metas: std::collections::BTreeMap<String, QueueMeta> = Default::default();
    {
        let old_meta = txn.open_table(LEGACY_QUEUE_META)?;
        for row in old_meta.iter()? {
            let (k, v) = row?;
            let (next_seq, count, bytes) = v.value();
            let meta = QueueMeta {
                id: 0,
                next_seq,
                count,
                bytes,
            };
            metas.insert(k.value().to_owned(), meta);
        }
    }
    let mut next = 0u64;
    for meta in metas.values_mut() {
        meta.id = next;
        next += 1;
    }
    let mut unaccounted = 0u64;
    {
        let old = txn.open_table(LEGACY_QUEUE)?;
        let mut entries = txn.open_table(QUEUE_ENTRIES)?;
        for row in old.iter()? {
            let (k, v) = row?;
            let (client, seq) = k.value();
            match metas.get_mut(client) {
                Some(meta) => {
                    meta.next_seq = meta.next_seq.max(seq + 1);
                    entries.insert((meta.id, seq), v.value())?;
                }
                // Entries without bookkeeping (only in a hand-edited file): the old writer
                // could never remove them, nor did the counters include them.
                None => unaccounted += 1,
            }
        }
    }
    if unaccounted > 0 {
        tracing::warn!(
            entries = unaccounted,
            "queue entries without queue bookkeeping dropped by the format upgrade"
        );
    }
    {
        let mut queues = txn.open_table(QUEUES)?;
        for (client, m) in &metas {
            queues.insert(client.as_str(), (m.id, m.next_seq, m.count, m.bytes))?;
        }
        txn.open_table(META)?.insert(META_NEXT_QUEUE, next)?;
    }
    txn.delete_table(LEGACY_QUEUE)?;
    txn.delete_table(LEGACY_QUEUE_META)?;
    Ok(metas.len() as u64)
}

fn builder(cache_bytes: usize) -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(cache_bytes);
    b.create_with_file_format_v3(true);
    b
}

/// Opens an existing file, never initialising it: an empty or foreign file is corrupt.
pub(crate) fn open_existing(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    open_with(path, cache_bytes, |_| {})
}

/// As [`open_existing`], calling `on_repair` when redb has to recover the file.
pub(crate) fn open_with(
    path: &Path,
    cache_bytes: usize,
    on_repair: impl Fn(&mut redb::RepairSession) + 'static,
) -> Result<Database, StoreError> {
    let shown = path.display().to_string();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut b = builder(cache_bytes);
        b.set_repair_callback(move |session| {
            if session.progress() == 0.0 {
                tracing::warn!(file = %shown, "store was not shut down cleanly; recovering");
            }
            on_repair(session);
        });
        b.open(path)
    }));
    match outcome {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(from_open(path, e)),
        Err(panic) => Err(StoreError::corrupt(path, PanicError::from_payload(panic))),
    }
}

/// Creates the file under a temporary name, writes the format version, and renames it into
/// place, so that a crash during creation never leaves a half-made store file.
fn create_fresh(path: &Path, cache_bytes: usize) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.creating");
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&tmp, e)),
    }
    {
        let db = builder(cache_bytes)
            .create(&tmp)
            .map_err(|e| from_open(&tmp, e))?;
        let txn = db.begin_write().map_err(write_err)?;
        create_tables(&txn).map_err(StoreError::from_write)?;
        {
            let mut meta = txn.open_table(META).map_err(write_err)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
    }
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    tracing::info!(file = %path.display(), "created a new store file");
    Ok(())
}

fn write_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::from_write(DbError::from(e))
}

/// Makes a rename or creation inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    fs::File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(d, e))
}

pub(crate) fn create_tables(txn: &redb::WriteTransaction) -> DbResult<()> {
    txn.open_table(SESSIONS)?;
    txn.open_table(INFLIGHT)?;
    txn.open_table(INCOMING)?;
    txn.open_table(QUEUE_ENTRIES)?;
    txn.open_table(QUEUES)?;
    txn.open_table(QUEUE_SENT)?;
    txn.open_table(RETAINED)?;
    txn.open_table(WILLS)?;
    txn.open_table(META)?;
    Ok(())
}

/// The file's format version, when this build reads it.
pub(crate) fn check_format(path: &Path, db: &Database) -> Result<u64, StoreError> {
    let read = || -> DbResult<Option<u64>> {
        let txn = db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(DbError::from(e)),
        };
        Ok(meta.get(META_FORMAT)?.map(|v| v.value()))
    };
    match read() {
        Ok(Some(v @ FORMAT_VERSION_OLDEST..=FORMAT_VERSION)) => Ok(v),
        Ok(Some(found)) => Err(StoreError::Format {
            path: path.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
        }),
        Ok(None) => Err(StoreError::corrupt(
            path,
            io::Error::other("not a Halyard store (no format version)"),
        )),
        Err(e) => Err(StoreError::corrupt(path, e)),
    }
}

/// A panic inside redb, turned into an error.
#[derive(Debug)]
pub(crate) struct PanicError(pub String);

impl PanicError {
    pub(crate) fn from_payload(payload: Box<dyn std::any::Any + Send>) -> PanicError {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_owned()
        };
        PanicError(format!("redb panicked: {msg}"))
    }
}

impl std::fmt::Display for PanicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PanicError {}

/// The file path for a store directory.
pub(crate) fn file_in(dir: &Path) -> PathBuf {
    dir.join(crate::config::STORE_FILE_NAME)
}
