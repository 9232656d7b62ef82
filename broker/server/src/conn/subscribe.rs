//! The trie writes of SUBSCRIBE packets, gathered per I/O thread into one batch.
//!
//! Every write to the subscription trie copies the path from the root to the filter's
//! leaf (readers never lock), and dropping the replaced path touches the reference count of
//! every entry of the copied nodes: with 10 000 filters below one level that is three
//! 32-slot nodes, a few hundred cache lines, about a tenth of the broker's CPU per connection
//! when each client subscribes once (RESULTS.md, session 7). One batch copies each node
//! once, so the SUBSCRIBEs a thread handles in the same round of its executor share one
//! copy: a connection queues its filters ([`SubBatches::queue`]) and yields once; the
//! first of the batch's connections to run again writes the whole batch
//! ([`Batch::results`]); the others find their results there. The SUBACK leaves only after
//! its filters are in the published trie, as before.
//!
//! Limit: a batch holds at most [`MAX_BATCH_FILTERS`] filters; the connection whose filters
//! reach it writes the batch at once.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use halyard_codec::{MqttString, ReasonCode};

use crate::engine::thread::ThreadCtx;
use crate::engine::{SessionKey, SubValue};

/// Most filters one batch gathers before it is written (a bound on the batch's memory and
/// on how long one write holds the trie's writer lock).
pub const MAX_BATCH_FILTERS: usize = 1024;

/// One filter to add to the trie.
pub struct SubWrite {
    /// The filter to match topics against.
    pub topic_filter: MqttString,
    /// The share group of a shared subscription.
    pub share_group: Option<MqttString>,
    pub key: SessionKey,
    pub value: SubValue,
}

/// What writing one filter gave: the value it replaced (`None`: a new subscription), or
/// the reason code refusing it.
pub type SubResult = Result<Option<SubValue>, ReasonCode>;

/// The filters of one batch and, once written, their results.
#[derive(Default)]
pub struct Batch {
    writes: RefCell<Vec<SubWrite>>,
    /// `Some` once the batch was written: one entry per write, taken by its connection.
    results: RefCell<Option<Vec<Option<SubResult>>>>,
}

/// A thread's batch being gathered (see the module documentation).
#[derive(Default)]
pub struct SubBatches {
    open: RefCell<Option<Rc<Batch>>>,
}

impl std::fmt::Debug for SubBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.open.borrow();
        let n = open.as_ref().map_or(0, |b| b.writes.borrow().len());
        write!(f, "SubBatches({n} queued)")
    }
}

impl SubBatches {
    /// Adds `writes` to the open batch: the batch, where the first of them sits, and
    /// whether the batch is full (then the caller writes it at once).
    pub fn queue(&self, writes: Vec<SubWrite>) -> (Rc<Batch>, usize, bool) {
        let mut open = self.open.borrow_mut();
        let batch = open.get_or_insert_with(Rc::default).clone();
        let mut queued = batch.writes.borrow_mut();
        let start = queued.len();
        queued.extend(writes);
        let full = queued.len() >= MAX_BATCH_FILTERS;
        if full {
            *open = None;
        }
        drop(queued);
        (batch, start, full)
    }

    /// Closes `batch` if it is the open one (no more writes join it).
    fn close(&self, batch: &Rc<Batch>) {
        let mut open = self.open.borrow_mut();
        if open.as_ref().is_some_and(|b| Rc::ptr_eq(b, batch)) {
            *open = None;
        }
    }
}

impl Batch {
    /// The results of writes `start..start + len` of this batch, writing the batch to
    /// `broker`'s trie first if no connection did yet.
    pub fn results(self: &Rc<Self>, ctx: &ThreadCtx, start: usize, len: usize) -> Vec<SubResult> {
        if self.results.borrow().is_none() {
            ctx.sub_batches.close(self);
            let writes = std::mem::take(&mut *self.writes.borrow_mut());
            let stats = ctx.stats();
            stats.subscribe_batches.fetch_add(1, Relaxed);
            stats
                .subscribe_batch_filters
                .fetch_add(writes.len() as u64, Relaxed);
            let broker = &ctx.broker;
            let results = broker.trie.batch(|b| {
                writes
                    .into_iter()
                    .map(|w| {
                        let inserted = match &w.share_group {
                            Some(group) => b.insert_shared(group, &w.topic_filter, w.key, w.value),
                            None => b.insert(&w.topic_filter, w.key, w.value),
                        };
                        Some(inserted.map_err(|_| ReasonCode::TOPIC_FILTER_INVALID))
                    })
                    .collect()
            });
            *self.results.borrow_mut() = Some(results);
        }
        let mut results = self.results.borrow_mut();
        let Some(all) = results.as_mut() else {
            return Vec::new();
        };
        all.iter_mut()
            .skip(start)
            .take(len)
            // Each connection takes its own entries once; a missing one cannot happen.
            .map(|r| r.take().unwrap_or(Err(ReasonCode::UNSPECIFIED_ERROR)))
            .collect()
    }
}
