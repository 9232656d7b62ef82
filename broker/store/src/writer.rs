//! The writer thread: gathers submissions, applies them in one write transaction with
//! `Durability::Immediate`, then completes every handle.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use redb::{Database, Durability};

use crate::apply::{self, Limits, Tables};
use crate::batch::{Batch, CommitResult, Committed};
use crate::db::Accounts;
use crate::error::{QuotaLimit, StoreError};
use crate::record::LoadedState;
use crate::stats::StoreStats;

/// Opens the database file; replaceable in tests (fault injection).
pub(crate) type Opener = Arc<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

/// A caller's batch with its completion handle.
pub(crate) struct Submission {
    pub batch: Batch,
    pub reply: oneshot::Sender<CommitResult>,
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
            let mut bytes = group[0].batch.cost;
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
                        bytes += sub.batch.cost;
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
        if let Err(err) = self.ensure_open() {
            fail_all(group.into_iter().map(|s| s.reply), &err);
            return;
        }
        let Some(db) = self.db.as_ref() else {
            return;
        };
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(e) => {
                let err = StoreError::from_write(e.into());
                fail_all(group.into_iter().map(|s| s.reply), &err);
                self.after_failure(&err);
                return;
            }
        };
        txn.set_durability(Durability::Immediate);
        let mut done: Vec<(oneshot::Sender<CommitResult>, Committed)> =
            Vec::with_capacity(group.len());
        let (mut ops, mut bytes, mut dropped_full) = (0u64, 0u64, 0u64);
        let mut failure: Option<redb::Error> = None;
        match Tables::open(&txn) {
            Err(e) => {
                failure = Some(e);
                done.extend(group.into_iter().map(|s| (s.reply, Committed::default())));
            }
            Ok(mut tables) => {
                for sub in group {
                    if failure.is_some() {
                        done.push((sub.reply, Committed::default()));
                        continue;
                    }
                    if let Err(limit) = apply::precheck(&sub.batch.ops, &self.acc, &self.limits) {
                        self.stats.record_rejection(limit);
                        let _ = sub.reply.send(Err(StoreError::QuotaExceeded { limit }));
                        continue;
                    }
                    match apply::apply(&mut tables, &mut self.acc, &self.limits, &sub.batch.ops) {
                        Ok(applied) => {
                            ops += sub.batch.ops.len() as u64;
                            bytes += sub.batch.cost as u64;
                            dropped_full += applied.dropped_full;
                            done.push((
                                sub.reply,
                                Committed {
                                    seqs: applied.seqs,
                                },
                            ));
                        }
                        Err(e) => {
                            failure = Some(e);
                            done.push((sub.reply, Committed::default()));
                        }
                    }
                }
                if failure.is_none() && !done.is_empty() {
                    if let Err(e) = tables.flush_accounts(&mut self.acc, now_unix_ms()) {
                        failure = Some(e);
                    }
                }
            }
        }
        if done.is_empty() {
            // Everything was refused by a quota: nothing to write.
            let _ = txn.abort();
            return;
        }
        let outcome = match failure {
            Some(e) => {
                let _ = txn.abort();
                Err(e)
            }
            None => txn.commit().map_err(redb::Error::from),
        };
        match outcome {
            Ok(()) => {
                let submissions = done.len() as u64;
                self.stats
                    .record_commit(started.elapsed(), submissions, ops, bytes);
                self.stats.queue_drops_limit.fetch_add(dropped_full, Relaxed);
                self.publish_gauges();
                for (reply, committed) in done {
                    let _ = reply.send(Ok(committed));
                }
            }
            Err(e) => {
                let err = StoreError::from_write(e);
                tracing::warn!(file = %self.path.display(), error = %err, "group commit failed");
                fail_all(done.into_iter().map(|(r, _)| r), &err);
                self.after_failure(&err);
            }
        }
    }

    /// After a failed transaction the in-memory counters are stale; an I/O failure also
    /// poisons redb's handle (it must be reopened).
    fn after_failure(&mut self, err: &StoreError) {
        self.stats.commit_failures.fetch_add(1, Relaxed);
        if let StoreError::QuotaExceeded { limit } = err {
            debug_assert_eq!(*limit, QuotaLimit::DiskFull);
            self.stats.record_rejection(*limit);
        }
        let reload = self.db.as_ref().map(Accounts::load);
        match reload {
            Some(Ok(acc)) if !matches!(err, StoreError::QuotaExceeded { .. }) => self.acc = acc,
            _ => {
                // Drop the handle; the next group reopens the file (recovering it).
                self.db = None;
            }
        }
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
        self.commit_group(vec![Submission { batch, reply: tx }]);
        rx.try_recv().unwrap_or(Err(StoreError::Closed))
    }
}

fn fail_all(replies: impl Iterator<Item = oneshot::Sender<CommitResult>>, err: &StoreError) {
    for reply in replies {
        let _ = reply.send(Err(err.clone()));
    }
}
