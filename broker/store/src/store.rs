//! `Store`: the handle the server holds.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::apply::Limits;
use crate::batch::{Batch, Commit, CommitResult};
use crate::config::StoreConfig;
use crate::db::{self, Accounts};
use crate::error::StoreError;
use crate::record::{InflightEntry, LoadedState, SessionRecord, StoredMessage, WillRecord};
use crate::stats::StoreStats;
use crate::writer::{Opener, Request, Submission, Writer};

/// Handle to an open store. Cheap to clone; every clone feeds the same writer thread. The
/// file is closed (and its lock released) when the last clone is dropped: that drop blocks
/// until the writer has committed everything already submitted, so drop the last clone at
/// shutdown, not on a runtime thread in the middle of serving.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<Sender<Request>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<StoreStats>,
    path: PathBuf,
    max_pending: usize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx.take();
        let handle = match self.thread.get_mut() {
            Ok(h) => h.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(file = %self.path.display(), "store writer thread panicked");
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Sets the calling thread's niceness (on Linux `setpriority` on a thread id applies to that
/// thread only); 0 leaves it alone.
fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    if nice == 0 {
        return Ok(());
    }
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Store {
    /// Validates the config, opens (or creates) `<dir>/halyard.redb`, recovering it after an
    /// unclean shutdown, and starts the writer thread. Fails with `Corrupt` (naming the file
    /// and the way out) when the file cannot be read, `Locked` when another process has it,
    /// and `Config` when `enabled` is false or a field is out of range.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let path = cfg.file_path();
        let cache = cfg.cache_bytes;
        let p = path.clone();
        let opener: Opener = Arc::new(move || db::open_database(&p, cache));
        Store::open_with(cfg, opener)
    }

    pub(crate) fn open_with(cfg: &StoreConfig, opener: Opener) -> Result<Store, StoreError> {
        if !cfg.enabled {
            return Err(StoreError::config(
                "enabled",
                "is false; a disabled store cannot be opened",
            ));
        }
        cfg.validate()?;
        let path = cfg.file_path();
        let db = opener()?;
        let acc = Accounts::load(&db).map_err(|e| StoreError::corrupt(&path, e))?;
        let stats = Arc::new(StoreStats::default());
        let writer = Writer {
            path: path.clone(),
            opener,
            db: Some(db),
            acc,
            limits: Limits {
                max_store_bytes: cfg.max_store_bytes,
                max_messages_per_session: cfg.max_messages_per_session,
                max_bytes_per_session: cfg.max_bytes_per_session,
            },
            interval: Duration::from_millis(cfg.commit_interval_ms),
            max_bytes: cfg.commit_max_bytes,
            stats: stats.clone(),
        };
        writer.publish_gauges();
        let (tx, rx) = crossbeam_channel::bounded(cfg.max_pending_submissions);
        let nice = cfg.writer_nice;
        let thread = std::thread::Builder::new()
            .name("halyard-store".into())
            .spawn(move || {
                if let Err(e) = set_thread_nice(nice) {
                    tracing::warn!(
                        nice,
                        error = %e,
                        "store writer keeps the process's scheduling priority: store.writer_nice below 0 needs CAP_SYS_NICE (grant it, or set store.writer_nice = 0)"
                    );
                }
                writer.run(rx)
            })
            .map_err(|e| StoreError::io(&path, e))?;
        tracing::info!(file = %path.display(), "store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                tx: Some(tx),
                thread: Mutex::new(Some(thread)),
                stats,
                path,
                max_pending: cfg.max_pending_submissions,
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Counters and gauges.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// A shared handle on the store's counters that does not keep the store open (for a
    /// metrics exporter that outlives it).
    pub fn stats_handle(&self) -> Arc<StoreStats> {
        self.inner.stats.clone()
    }

    /// Hands a batch to the writer thread without blocking. The returned handle resolves when
    /// the group commit holding the batch is durable on disk (fsync'd), or with the error;
    /// batches from one thread are applied in submission order.
    pub fn submit(&self, batch: Batch) -> Commit {
        if batch.is_empty() {
            return Commit::ready(Ok(Default::default()));
        }
        let Some(tx) = &self.inner.tx else {
            return Commit::ready(Err(StoreError::Closed));
        };
        let (reply, rx) = oneshot::channel();
        match tx.try_send(Request::Submit(Submission::One { batch, reply })) {
            Ok(()) => Commit::waiting(rx),
            Err(TrySendError::Full(_)) => {
                self.inner.stats.rejected_busy.fetch_add(1, Relaxed);
                Commit::ready(Err(StoreError::Busy {
                    limit: self.inner.max_pending,
                }))
            }
            Err(TrySendError::Disconnected(_)) => Commit::ready(Err(StoreError::Closed)),
        }
    }

    /// Hands several independent batches to the writer thread in one submission (one
    /// channel message, one completion): they join the same group commit, each applied
    /// atomically and refused by a quota on its own, as if submitted one by one in this
    /// order. Resolves to one result per batch, in order, once the commit is durable.
    pub fn submit_each(&self, batches: Vec<Batch>) -> Commit<Vec<CommitResult>> {
        let n = batches.len();
        if batches.iter().all(Batch::is_empty) {
            return Commit::ready(vec![Ok(Default::default()); n]);
        }
        let Some(tx) = &self.inner.tx else {
            return Commit::ready(vec![Err(StoreError::Closed); n]);
        };
        let (reply, rx) = oneshot::channel();
        match tx.try_send(Request::Submit(Submission::Each { batches, reply })) {
            Ok(()) => Commit::waiting(rx),
            Err(TrySendError::Full(_)) => {
                self.inner.stats.rejected_busy.fetch_add(1, Relaxed);
                let err = StoreError::Busy {
                    limit: self.inner.max_pending,
                };
                Commit::ready(vec![Err(err); n])
            }
            Err(TrySendError::Disconnected(_)) => Commit::ready(vec![Err(StoreError::Closed); n]),
        }
    }

    /// Reads everything back (call once at start, before serving). Sessions whose expiry
    /// passed by `now_unix_ms` (wall clock: downtime counts), expired messages in queues,
    /// retained messages and wills, and orphaned rows are left out, deleted from disk, and
    /// counted in `LoadedState::dropped`. Blocks the calling thread.
    pub fn load_all(&self, now_unix_ms: u64) -> Result<LoadedState, StoreError> {
        let Some(tx) = &self.inner.tx else {
            return Err(StoreError::Closed);
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Request::Load { now_unix_ms, reply })
            .map_err(|_| StoreError::Closed)?;
        rx.recv().unwrap_or(Err(StoreError::Closed))
    }

    fn one(&self, f: impl FnOnce(&mut Batch)) -> Commit {
        let mut b = Batch::new();
        f(&mut b);
        self.submit(b)
    }

    /// Submits [`Batch::put_session`] alone.
    pub fn put_session(&self, session: &SessionRecord) -> Commit {
        self.one(|b| {
            b.put_session(session);
        })
    }

    /// Submits [`Batch::delete_session`] alone.
    pub fn delete_session(&self, client_id: &str) -> Commit {
        self.one(|b| {
            b.delete_session(client_id);
        })
    }

    /// Submits [`Batch::enqueue`] alone; the sequence number is `Committed::seqs[0]`.
    pub fn enqueue(&self, client_id: &str, message: &StoredMessage) -> Commit {
        self.one(|b| {
            b.enqueue(client_id, message);
        })
    }

    /// Submits [`Batch::dequeue_upto`] alone.
    pub fn dequeue_upto(&self, client_id: &str, seq: u64) -> Commit {
        self.one(|b| {
            b.dequeue_upto(client_id, seq);
        })
    }

    /// Submits [`Batch::set_inflight`] alone.
    pub fn set_inflight(&self, client_id: &str, entry: &InflightEntry) -> Commit {
        self.one(|b| {
            b.set_inflight(client_id, entry);
        })
    }

    /// Submits [`Batch::ack_inflight`] alone.
    pub fn ack_inflight(&self, client_id: &str, packet_id: u16) -> Commit {
        self.one(|b| {
            b.ack_inflight(client_id, packet_id);
        })
    }

    /// Submits [`Batch::set_retained`] alone.
    pub fn set_retained(&self, message: &StoredMessage) -> Commit {
        self.one(|b| {
            b.set_retained(message);
        })
    }

    /// Submits [`Batch::delete_retained`] alone.
    pub fn delete_retained(&self, topic: &str) -> Commit {
        self.one(|b| {
            b.delete_retained(topic);
        })
    }

    /// Submits [`Batch::put_will`] alone.
    pub fn put_will(&self, client_id: &str, will: &WillRecord) -> Commit {
        self.one(|b| {
            b.put_will(client_id, will);
        })
    }

    /// Submits [`Batch::delete_will`] alone.
    pub fn delete_will(&self, client_id: &str) -> Commit {
        self.one(|b| {
            b.delete_will(client_id);
        })
    }
}
