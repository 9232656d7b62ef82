//! The durable half of a core's Raft storage: one redb file (`<data_dir>/raft.redb`) holding
//! the vote, the log, the committed log id, the last purged log id and the latest snapshot,
//! written by one writer thread with group commit.
//!
//! Every write goes through one FIFO channel to the writer thread, so writes reach the disk
//! in the order openraft issued them (a rule of `RaftLogStorage`). The thread takes every
//! request waiting (up to `cluster.raft_write_batch_max`) into one redb write transaction
//! and commits it with an fsync (`Durability::Immediate`) before completing any of them:
//! votes and appends are durable before openraft hears they are done, and many appends
//! share one fsync. A batch holding only a committed-index update commits without an fsync
//! (`Durability::None`); the next durable commit persists it too (losing it only means
//! re-learning the commit index from the leader).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use openraft::storage::LogFlushed;
use openraft::{BasicNode, Entry, LogId, SnapshotMeta, Vote};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::TypeConfig;
use crate::error::ClusterError;
use crate::types::NodeId;

/// The Raft file's name inside `cluster.data_dir`.
pub const RAFT_FILE_NAME: &str = "raft.redb";

/// Log entries by index (postcard-encoded `Entry`).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Small records by name (see the `K_*` keys).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The node id the file belongs to (u64, big-endian): a file is never used by another node.
const K_NODE: &str = "node_id";
const K_VOTE: &str = "vote";
const K_COMMITTED: &str = "committed";
const K_PURGED: &str = "last_purged";
const K_SNAP_META: &str = "snapshot_meta";
const K_SNAP_DATA: &str = "snapshot_data";

/// Counters of the writer thread (plain atomics; the status turns them into metrics).
#[derive(Debug, Default)]
pub(crate) struct DiskStats {
    /// Write transactions committed with an fsync.
    pub fsyncs: AtomicU64,
    /// Requests (appends, votes, ...) written.
    pub writes: AtomicU64,
    /// Batches cut at `cluster.raft_write_batch_max` requests.
    pub batch_full: AtomicU64,
    /// Write transactions that failed (the Raft node stops on a storage error).
    pub errors: AtomicU64,
}

/// What was on disk when the file was opened.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub vote: Option<Vote<NodeId>>,
    pub committed: Option<LogId<NodeId>>,
    pub last_purged: Option<LogId<NodeId>>,
    pub log: BTreeMap<u64, Entry<TypeConfig>>,
    pub snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

type Reply = oneshot::Sender<Result<(), std::io::Error>>;

/// One request to the writer thread.
pub(crate) enum Op {
    /// Entries (index, encoded entry); the callback runs after the fsync.
    Append(Vec<(u64, Vec<u8>)>, LogFlushed<TypeConfig>),
    /// The encoded vote.
    Vote(Vec<u8>, Reply),
    /// The encoded committed log id (no reply, no fsync of its own).
    Committed(Vec<u8>),
    /// Delete entries from this index on.
    Truncate(u64, Reply),
    /// Delete entries up to this index (inclusive) and record the encoded purged log id.
    Purge(u64, Vec<u8>, Reply),
    /// Replace the stored snapshot: encoded meta, data.
    Snapshot(Vec<u8>, Vec<u8>, Reply),
    /// Finish, close the file, then answer.
    Close(mpsc::Sender<()>),
}

impl Op {
    /// Whether the batch holding this op must be fsynced.
    fn durable(&self) -> bool {
        !matches!(self, Op::Committed(_) | Op::Close(_))
    }

    fn finish(self, res: &Result<(), String>) {
        let io = || res.clone().map_err(std::io::Error::other);
        match self {
            Op::Append(_, cb) => cb.log_io_completed(io()),
            Op::Vote(_, r) | Op::Truncate(_, r) | Op::Purge(_, _, r) | Op::Snapshot(_, _, r) => {
                // The requester may have given up (its task was cancelled): nothing to do.
                let _ = r.send(io());
            }
            Op::Committed(_) | Op::Close(_) => {}
        }
    }
}

/// The handle to the writer thread; clones share it.
#[derive(Clone)]
pub(crate) struct Disk {
    tx: mpsc::Sender<Op>,
    pub stats: Arc<DiskStats>,
    path: Arc<PathBuf>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn storage_err(path: &Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    b: &[u8],
) -> Result<T, ClusterError> {
    postcard::from_bytes(b).map_err(|e| storage_err(path, format!("{what}: {e}")))
}

/// Encodes a record for the file. Postcard into a `Vec` only fails for types serde cannot
/// describe, which none of ours are.
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

impl Disk {
    /// Opens (or creates) `<dir>/raft.redb` for node `node`, reads everything back and
    /// starts the writer thread. Fails if the file belongs to another node.
    pub fn open(
        dir: &Path,
        node: NodeId,
        batch_max: usize,
    ) -> Result<(Disk, Loaded), ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| storage_err(dir, e))?;
        let path = dir.join(RAFT_FILE_NAME);
        let db = Database::create(&path).map_err(|e| storage_err(&path, e))?;
        let loaded = load(&db, &path, node)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(DiskStats::default());
        let st = stats.clone();
        let thread = std::thread::Builder::new()
            .name("halyard-raft-log".into())
            .spawn(move || writer(db, rx, batch_max.max(1), &st))
            .map_err(|e| storage_err(&path, e))?;
        Ok((
            Disk {
                tx,
                stats,
                path: Arc::new(path),
                thread: Arc::new(std::sync::Mutex::new(Some(thread))),
            },
            loaded,
        ))
    }

    /// Queues `op`; if the writer is gone the op completes with an error at once.
    pub fn submit(&self, op: Op) {
        if let Err(mpsc::SendError(op)) = self.tx.send(op) {
            op.finish(&Err("the raft log writer has stopped".into()));
        }
    }

    /// Queues `op` built around a reply channel and waits for the write to be durable.
    pub async fn write(&self, op: impl FnOnce(Reply) -> Op) -> Result<(), std::io::Error> {
        let (tx, rx) = oneshot::channel();
        self.submit(op(tx));
        rx.await
            .map_err(|_| std::io::Error::other("the raft log writer has stopped"))?
    }

    /// Writes what is queued, closes the file and stops the writer thread (blocking). The
    /// file can be opened again once this returns. Later writes fail.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Op::Close(tx)).is_ok() {
            let _ = rx.recv();
        }
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn load(db: &Database, path: &Path, node: NodeId) -> Result<Loaded, ClusterError> {
    let err = |e: &dyn std::fmt::Display| storage_err(path, e);
    // Create both tables and claim the file for this node if it is new.
    let w = db.begin_write().map_err(|e| err(&e))?;
    {
        let _ = w.open_table(LOG).map_err(|e| err(&e))?;
        let mut meta = w.open_table(META).map_err(|e| err(&e))?;
        let owner = meta
            .get(K_NODE)
            .map_err(|e| err(&e))?
            .map(|v| v.value().to_vec());
        match owner {
            Some(b) => {
                let owner = u64::from_be_bytes(
                    b.as_slice()
                        .try_into()
                        .map_err(|_| err(&"bad node id record"))?,
                );
                if owner != node {
                    return Err(storage_err(
                        path,
                        format!(
                            "the file belongs to node {owner}, not to this node ({node}): use another cluster.data_dir"
                        ),
                    ));
                }
            }
            None => {
                meta.insert(K_NODE, node.to_be_bytes().as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
    }
    w.commit().map_err(|e| err(&e))?;

    let r = db.begin_read().map_err(|e| err(&e))?;
    let meta = r.open_table(META).map_err(|e| err(&e))?;
    let get = |k: &str| -> Result<Option<Vec<u8>>, ClusterError> {
        Ok(meta
            .get(k)
            .map_err(|e| err(&e))?
            .map(|v| v.value().to_vec()))
    };
    let mut loaded = Loaded::default();
    if let Some(b) = get(K_VOTE)? {
        loaded.vote = Some(decode(path, "vote", &b)?);
    }
    if let Some(b) = get(K_COMMITTED)? {
        loaded.committed = decode(path, "committed", &b)?;
    }
    if let Some(b) = get(K_PURGED)? {
        loaded.last_purged = decode(path, "last purged", &b)?;
    }
    if let (Some(m), Some(d)) = (get(K_SNAP_META)?, get(K_SNAP_DATA)?) {
        loaded.snapshot = Some((decode(path, "snapshot meta", &m)?, d));
    }
    let log = r.open_table(LOG).map_err(|e| err(&e))?;
    for row in log.iter().map_err(|e| err(&e))? {
        let (k, v) = row.map_err(|e| err(&e))?;
        let entry: Entry<TypeConfig> = decode(path, "log entry", v.value())?;
        loaded.log.insert(k.value(), entry);
    }
    Ok(loaded)
}

/// The writer thread: group-commits queued ops until closed or every handle is gone.
fn writer(db: Database, rx: mpsc::Receiver<Op>, batch_max: usize, stats: &DiskStats) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if batch.len() == batch_max {
            stats.batch_full.fetch_add(1, Ordering::Relaxed);
        }
        let close = match batch.last() {
            Some(Op::Close(_)) => batch.pop(),
            _ => None,
        };
        // A Close in the middle cannot happen: `close` waits for its answer and nothing
        // else sends afterwards except stragglers, which then find the channel closed.
        let res = match write_batch(&db, &batch) {
            Ok(synced) => {
                if synced {
                    stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "raft log write failed");
                Err(e)
            }
        };
        stats
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for op in batch {
            op.finish(&res);
        }
        if let Some(Op::Close(done)) = close {
            drop(db);
            let _ = done.send(());
            return;
        }
    }
}

/// Writes `batch` in one transaction; returns whether it was fsynced.
fn write_batch(db: &Database, batch: &[Op]) -> Result<bool, String> {
    if batch.is_empty() {
        return Ok(false);
    }
    let mut w = db.begin_write().map_err(text)?;
    let durable = batch.iter().any(Op::durable);
    w.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    {
        let mut log = w.open_table(LOG).map_err(text)?;
        let mut meta = w.open_table(META).map_err(text)?;
        for op in batch {
            match op {
                Op::Append(entries, _) => {
                    for (i, e) in entries {
                        log.insert(*i, e.as_slice()).map_err(text)?;
                    }
                }
                Op::Vote(v, _) => {
                    meta.insert(K_VOTE, v.as_slice()).map_err(text)?;
                }
                Op::Committed(c) => {
                    meta.insert(K_COMMITTED, c.as_slice()).map_err(text)?;
                }
                Op::Truncate(from, _) => {
                    log.retain_in(*from.., |_, _| false).map_err(text)?;
                }
                Op::Purge(upto, id, _) => {
                    log.retain_in(..=*upto, |_, _| false).map_err(text)?;
                    meta.insert(K_PURGED, id.as_slice()).map_err(text)?;
                }
                Op::Snapshot(m, d, _) => {
                    meta.insert(K_SNAP_META, m.as_slice()).map_err(text)?;
                    meta.insert(K_SNAP_DATA, d.as_slice()).map_err(text)?;
                }
                Op::Close(_) => {}
            }
        }
    }
    w.commit().map_err(text)?;
    Ok(durable)
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}
