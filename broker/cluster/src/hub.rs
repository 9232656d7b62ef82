//! [`Hub`]: the applied state of one node (its [`Replica`]) plus, on cores, the backlog of
//! recently applied entries and the broadcast that feeds replicant streams.
//!
//! Cores apply through the Raft state machine, replicants through their stream client;
//! both end in [`Hub::apply`], which updates the route table, the backlog and the
//! subscribers under one lock so a subscriber never misses or repeats an entry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::{BasicNode, LogId, StoredMembership};
use tokio::sync::{broadcast, watch};

use crate::state::{ClusterState, Replica, RouteTable};
use crate::types::{ApplyOutcome, Command, LogIndex, NodeId};

/// One applied entry as kept in the backlog and sent to streams.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    /// The entry at this index (`None`: no command, e.g. Raft membership or blank).
    Entry(LogIndex, Option<Arc<Command>>),
    /// The state was replaced by a snapshot: streams must restart from their index.
    Reset,
}

/// What a new stream subscriber starts from.
pub(crate) enum StreamStart {
    /// Send this state first (as of the index; encode it off the runtime thread), then
    /// live entries.
    Snapshot(LogIndex, Box<ClusterState>),
    /// Send these backlog entries (all > the subscriber's index), then live entries.
    Replay(Vec<(LogIndex, Option<Arc<Command>>)>),
}

pub(crate) struct HubInner {
    pub replica: Replica,
    backlog: VecDeque<(LogIndex, Option<Arc<Command>>)>,
    /// Cores: the Raft log id of the last applied entry (with its term).
    pub raft_applied: Option<LogId<NodeId>>,
    /// Cores: the last applied Raft membership.
    pub raft_membership: StoredMembership<NodeId, BasicNode>,
}

/// See the module documentation.
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    tx: broadcast::Sender<Applied>,
    backlog_max: usize,
    applied_tx: watch::Sender<LogIndex>,
    /// Replicant streams currently served (cores).
    pub streams: AtomicU64,
}

impl Hub {
    pub fn new(routes: Arc<RouteTable>, backlog_max: usize, stream_queue_max: usize) -> Self {
        let (tx, _) = broadcast::channel(stream_queue_max.max(1));
        Hub {
            inner: Mutex::new(HubInner {
                replica: Replica::new(routes),
                backlog: VecDeque::new(),
                raft_applied: None,
                raft_membership: StoredMembership::default(),
            }),
            tx,
            backlog_max: backlog_max.max(1),
            applied_tx: watch::channel(0).0,
            streams: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while applying leaves a state this node can no longer trust either way;
        // continuing with the inner value keeps the process serving, as the trie does.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one entry (idempotent for indexes already applied).
    pub fn apply(&self, index: LogIndex, cmd: Option<Command>) -> ApplyOutcome {
        self.apply_with(index, cmd, |_| {})
    }

    /// [`Hub::apply`], also running `meta` under the same lock (Raft bookkeeping).
    pub fn apply_with(
        &self,
        index: LogIndex,
        cmd: Option<Command>,
        meta: impl FnOnce(&mut HubInner),
    ) -> ApplyOutcome {
        let mut g = self.lock();
        meta(&mut g);
        if g.replica.applied() != 0 && index <= g.replica.applied() {
            return ApplyOutcome::default();
        }
        let out = g.replica.apply(index, cmd.as_ref());
        let cmd = cmd.map(Arc::new);
        if g.backlog.len() == self.backlog_max {
            g.backlog.pop_front();
        }
        g.backlog.push_back((index, cmd.clone()));
        // No subscriber is not an error.
        let _ = self.tx.send(Applied::Entry(index, cmd));
        drop(g);
        self.applied_tx.send_replace(index);
        out
    }

    /// Replaces the state by a snapshot as of `index`; streams are told to restart.
    pub fn install(&self, index: LogIndex, state: ClusterState) {
        self.install_with(index, state, |_| {});
    }

    /// [`Hub::install`], also running `meta` under the same lock.
    pub fn install_with(
        &self,
        index: LogIndex,
        state: ClusterState,
        meta: impl FnOnce(&mut HubInner),
    ) {
        let mut g = self.lock();
        meta(&mut g);
        g.replica.install(index, state);
        g.backlog.clear();
        let _ = self.tx.send(Applied::Reset);
        drop(g);
        self.applied_tx.send_replace(index);
    }

    /// Registers a stream for a subscriber that applied up to `from`.
    pub fn subscribe(
        &self,
        from: LogIndex,
    ) -> (StreamStart, LogIndex, broadcast::Receiver<Applied>) {
        let g = self.lock();
        let applied = g.replica.applied();
        let resumable_from = g
            .backlog
            .front()
            .map_or(applied, |(i, _)| i.saturating_sub(1));
        let start = if from == 0 || from < resumable_from {
            StreamStart::Snapshot(applied, Box::new(g.replica.state().clone()))
        } else {
            StreamStart::Replay(
                g.backlog
                    .iter()
                    .filter(|(i, _)| *i > from)
                    .cloned()
                    .collect(),
            )
        };
        (start, applied, self.tx.subscribe())
    }

    pub fn applied(&self) -> LogIndex {
        *self.applied_tx.borrow()
    }

    pub fn applied_watch(&self) -> watch::Receiver<LogIndex> {
        self.applied_tx.subscribe()
    }

    /// Entries queued in the broadcast for the slowest stream.
    pub fn stream_queue_len(&self) -> u64 {
        self.tx.len() as u64
    }

    pub fn count_stream(&self, delta: i64) {
        if delta > 0 {
            self.streams.fetch_add(1, Ordering::Relaxed);
        } else {
            self.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
