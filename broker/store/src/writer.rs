//! The writer thread: gathers submissions, applies them in one write transaction with
//! `Durability::Immediate`, then completes every handle.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use redb::{Database, Durability};

use crate::apply::{self, Limits, Tables};
use crate::batch::{Batch, CommitResult, Committed};
use crate::db::{Accounts, DbResult, PanicError};
use crate::error::{QuotaLimit, StoreError};
use crate::record::LoadedState;
use crate::stats::StoreStats;

/// Opens the database file; replaceable in tests (fault injection).
pub(crate) type Opener = Arc<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// A caller's batch, or several independent batches, with the completion handle.
pub(crate) enum Submission {
    /// One batch ([`crate::Store::submit`]).
    One {
        batch: Batch,
        reply: oneshot::Sender<CommitResult>,
    },
    /// Independent batches committed together, each with its own result
    /// ([`crate::Store::submit_each`]).
    Each {
        batches: Vec<Batch>,
        reply: oneshot::Sender<Vec<CommitResult>>,
    },
}

impl Submission {
    /// Encoded size, for the group's byte threshold.
    fn cost(&self) -> usize {
        match self {
            Submission::One { batch, .. } => batch.cost,
            Submission::Each { batches, .. } => batches.iter().map(|b| b.cost).sum(),
        }
    }
}

/// Where the results of a group's batches go: per submission, its reply and batch count.
enum Reply {
    One(oneshot::Sender<CommitResult>),
    Each(oneshot::Sender<Vec<CommitResult>>, usize),
}

impl Reply {
    fn fail(self, err: &StoreError) {
        match self {
            Reply::One(r) => {
                let _ = r.send(Err(err.clone()));
            }
            Reply::Each(r, n) => {
                let _ = r.send(vec![Err(err.clone()); n]);
            }
        }
    }
}

/// What the writer thread is asked to do.
pub(crate) enum Request {
    Submit(Submission),
    Load {
        now_unix_ms: u64,
        reply: oneshot::Sender<Result<LoadedState, StoreError>>,
    },
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub path: PathBuf,
    pub opener: Opener,
    pub db: Option<Database>,
    pub acc: Accounts,
    pub limits: Limits,
    pub interval: Duration,
    pub max_bytes: usize,
    pub stats: Arc<StoreStats>,
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Writer {
    /// Runs until every `Store` handle is gone, then returns (closing the file).
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let mut group: Vec<Submission> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut deferred_load = None;
            match first {
                Request::Load { now_unix_ms, reply } => {
                    let _ = reply.send(self.load(now_unix_ms));
                    continue;
                }
                Request::Submit(sub) => group.push(sub),
            }
            let mut bytes = group[0].cost();
            let deadline = Instant::now() + self.interval;
            while bytes < self.max_bytes {
                let next = if self.interval.is_zero() {
                    rx.try_recv().map_err(|e| match e {
                        TryRecvError::Empty => RecvTimeoutError::Timeout,
                        TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    })
                } else {
                    rx.recv_deadline(deadline)
                };
                match next {
                    Ok(Request::Submit(sub)) => {
                        bytes += sub.cost();
                        group.push(sub);
                    }
                    Ok(Request::Load { now_unix_ms, reply }) => {
                        deferred_load = Some((now_unix_ms, reply));
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(std::mem::take(&mut group));
            if let Some((now, reply)) = deferred_load {
                let _ = reply.send(self.load(now));
            }
        }
        tracing::debug!(file = %self.path.display(), "store writer stopped");
    }

    pub(crate) fn ensure_open(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            let db = (self.opener)()?;
            self.acc = Accounts::load(&db).map_err(|e| StoreError::corrupt(&self.path, e))?;
            self.stats.reopens.fetch_add(1, Relaxed);
            tracing::info!(file = %self.path.display(), "store reopened");
            self.db = Some(db);
        }
        match &self.db {
            Some(db) => Ok(db),
            None => Err(StoreError::Closed),
        }
    }

    /// Applies and commits a group; completes every handle.
    pub(crate) fn commit_group(&mut self, group: Vec<Submission>) {
        if group.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut replies = Vec::with_capacity(group.len());
        let mut batches = Vec::with_capacity(group.len());
        for sub in group {
            match sub {
                Submission::One { batch, reply } => {
                    replies.push(Reply::One(reply));
                    batches.push(batch);
                }
                Submission::Each { batches: b, reply } => {
                    replies.push(Reply::Each(reply, b.len()));
                    batches.extend(b);
                }
            }
        }
        if let Err(err) = self.ensure_open() {
            fail_all(replies.into_iter(), &err);
            return;
        }
        // redb asserts on some states after an I/O failure; a panic must not kill the
        // writer (every later submission would fail with `Closed`).
        let outcome = catch_unwind(AssertUnwindSafe(|| self.transact(&batches)));
        let err = match outcome {
            Ok(Ok(done)) => {
                if done.committed {
                    let accepted = done.results.iter().filter(|r| r.is_ok()).count() as u64;
                    self.stats
                        .record_commit(started.elapsed(), accepted, done.ops, done.bytes);
                    self.stats
                        .queue_drops_limit
                        .fetch_add(done.dropped_full, Relaxed);
                    self.publish_gauges();
                }
                // Counters first, so that a woken caller sees them.
                for limit in done.results.iter().filter_map(|r| r.as_ref().err()) {
                    self.stats.record_rejection(*limit);
                }
                let mut results = done
                    .results
                    .into_iter()
                    .map(|r| r.map_err(|limit| StoreError::QuotaExceeded { limit }));
                for reply in replies {
                    match reply {
                        Reply::One(r) => {
                            let result = results.next().unwrap_or(Err(StoreError::Closed));
                            let _ = r.send(result);
                        }
                        Reply::Each(r, n) => {
                            let _ = r.send(results.by_ref().take(n).collect());
                        }
                    }
                }
                return;
            }
            Ok(Err(e)) => StoreError::from_write(e),
            Err(panic) => StoreError::Storage {
                source: Arc::new(PanicError::from_payload(panic)),
            },
        };
        tracing::warn!(file = %self.path.display(), error = %err, "group commit failed");
        self.stats.commit_failures.fetch_add(1, Relaxed);
        if let StoreError::QuotaExceeded { limit } = &err {
            self.stats.record_rejection(*limit);
        }
        // The in-memory counters are stale and, after an I/O error, redb's handle is
        // poisoned: drop it; the next group reopens the file (redb recovers it).
        self.db = None;
        fail_all(replies.into_iter(), &err);
    }

    /// One write transaction over `batches`; refused batches leave no trace in it.
    fn transact(&mut self, batches: &[Batch]) -> DbResult<Transacted> {
        let db = self.db.as_ref().ok_or(redb::Error::PreviousIo)?;
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::Immediate);
        let mut done = Transacted {
            results: Vec::with_capacity(batches.len()),
            ..Transacted::default()
        };
        {
            let mut tables = Tables::open(&txn)?;
            for batch in batches {
                if let Err(limit) = apply::precheck(&batch.ops, &self.acc, &self.limits) {
                    done.results.push(Err(limit));
                    continue;
                }
                let applied = apply::apply(&mut tables, &mut self.acc, &self.limits, &batch.ops)?;
                done.ops += batch.ops.len() as u64;
                done.bytes += batch.cost as u64;
                done.dropped_full += applied.dropped_full;
                done.results.push(Ok(Committed { seqs: applied.seqs }));
            }
            if done.results.iter().any(|r| r.is_ok()) {
                tables.flush_accounts(&mut self.acc, now_unix_ms())?;
            }
        }
        if done.results.iter().any(|r| r.is_ok()) {
            txn.commit()?;
            done.committed = true;
        }
        // Otherwise (everything refused) dropping `txn` aborts it; it wrote nothing.
        // On an error above, dropping it is also the safe way out: redb's explicit abort
        // asserts after a storage failure, its Drop does not.
        Ok(done)
    }

    pub(crate) fn publish_gauges(&self) {
        let s = &self.stats;
        s.store_bytes.store(self.acc.bytes, Relaxed);
        s.sessions.store(self.acc.sessions, Relaxed);
        s.retained.store(self.acc.retained, Relaxed);
        s.wills.store(self.acc.wills, Relaxed);
        s.queued.store(self.acc.queued, Relaxed);
        if let Ok(m) = std::fs::metadata(&self.path) {
            s.file_bytes.store(m.len(), Relaxed);
        }
    }

    /// Commits one batch synchronously on the writer thread (used by `load`).
    pub(crate) fn commit_now(&mut self, batch: Batch) -> CommitResult {
        if batch.is_empty() {
            return Ok(Committed::default());
        }
        let (tx, rx) = oneshot::channel();
        self.commit_group(vec![Submission::One { batch, reply: tx }]);
        rx.try_recv().unwrap_or(Err(StoreError::Closed))
    }
}

/// Outcome of one successful `transact`.
#[derive(Debug, Default)]
struct Transacted {
    /// Per batch: committed, or refused by a quota.
    results: Vec<Result<Committed, QuotaLimit>>,
    ops: u64,
    bytes: u64,
    dropped_full: u64,
    /// False when every batch was refused (no transaction was committed).
    committed: bool,
}

fn fail_all(replies: impl Iterator<Item = Reply>, err: &StoreError) {
    for reply in replies {
        reply.fail(err);
    }
}
