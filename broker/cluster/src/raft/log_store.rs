//! The Raft log and vote: an in-memory mirror (what readers see) written through to the
//! durable [`Disk`] on cores that have a `cluster.data_dir`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, RaftLogReader, StorageError, Vote};

use super::TypeConfig;
use super::disk::{Disk, Loaded, Op, encode};
use crate::types::NodeId;

#[derive(Debug, Default)]
struct Inner {
    last_purged: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<TypeConfig>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

/// The Raft log and vote; clones share the same log. Without a disk ([`LogStore::memory`])
/// everything is lost when the node stops.
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    disk: Option<Disk>,
}

/// The former name of the memory-only store.
pub type MemLogStore = LogStore;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: std::io::Error,
) -> StorageError<NodeId> {
    StorageError::from_io_error(subject, verb, e)
}

impl LogStore {
    /// A store that keeps everything in memory only.
    pub fn memory() -> Self {
        Self::default()
    }

    /// A store over `disk`, starting from what was read back from it.
    pub(crate) fn durable(disk: Disk, loaded: &mut Loaded) -> Self {
        let inner = Inner {
            last_purged: loaded.last_purged,
            log: std::mem::take(&mut loaded.log),
            committed: loaded.committed,
            vote: loaded.vote,
        };
        LogStore {
            inner: Arc::new(Mutex::new(inner)),
            disk: Some(disk),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding this lock (plain map operations).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last committed log index this store was told about (0 if none).
    pub fn committed_index(&self) -> u64 {
        self.lock().committed.map_or(0, |l| l.index)
    }

    /// Whether writes reach a disk.
    pub fn is_durable(&self) -> bool {
        self.disk.is_some()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(self
            .lock()
            .log
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let g = self.lock();
        let last = g
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(g.last_purged);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        if let Some(disk) = &self.disk {
            let bytes = encode(vote);
            disk.write(|r| Op::Vote(bytes, r))
                .await
                .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        }
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.lock().committed = committed;
        if let Some(disk) = &self.disk {
            disk.submit(Op::Committed(encode(&committed)));
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        {
            let mut g = self.lock();
            for e in entries {
                if self.disk.is_some() {
                    rows.push((e.log_id.index, encode(&e)));
                }
                g.log.insert(e.log_id.index, e);
            }
        }
        // Readable now; durable when the writer thread calls back after its fsync.
        match &self.disk {
            Some(disk) => disk.submit(Op::Append(rows, callback)),
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut g = self.lock();
            let _ = g.log.split_off(&log_id.index);
        }
        if let Some(disk) = &self.disk {
            disk.write(|r| Op::Truncate(log_id.index, r))
                .await
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        {
            let mut g = self.lock();
            let keep = g.log.split_off(&(log_id.index + 1));
            g.log = keep;
            g.last_purged = Some(log_id);
        }
        if let Some(disk) = &self.disk {
            let id = encode(&Some(log_id));
            disk.write(|r| Op::Purge(log_id.index, id, r))
                .await
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        Ok(())
    }
}
