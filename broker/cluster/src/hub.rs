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
use tokio::sync::{Notify, broadcast, watch};

use crate::state::{ClusterState, Replica, RouteTable};
use crate::types::{ApplyOutcome, Command, LogIndex, NodeId, RouteOp};

/// One applied entry as kept in the backlog and sent to streams.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    /// The entry at this index (`None`: no command, e.g. Raft membership or blank).
    Entry(LogIndex, Option<Arc<Command>>),
    /// The state was replaced by a snapshot: streams must restart from their index.
    Reset,
}

/// Estimated memory of one backlog entry.
fn entry_bytes(cmd: Option<&Command>) -> usize {
    32 + match cmd {
        Some(Command::Routes(ops)) => crate::writes::ops_bytes(ops),
        Some(Command::Join(m)) => 64 + m.name.len() + m.cluster_addr.len(),
        Some(Command::Retained(b)) => crate::writes::retained_bytes(&b.ops),
        Some(Command::Leave(_)) | None => 0,
    }
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
    /// Estimated bytes held by `backlog`.
    backlog_bytes: usize,
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
    backlog_bytes_max: usize,
    applied_tx: watch::Sender<LogIndex>,
    /// Replicant streams currently served (cores).
    pub streams: AtomicU64,
    /// This node's id (0 until [`Hub::set_me`]), to notice its own removal.
    me: AtomicU64,
    /// Notified when an applied command removed this node's member record or all its
    /// routes (autoclean's reassert waits on it).
    pub evicted: Notify,
    /// Retained `Set`s refused at apply because a cap of their batch was reached.
    pub retained_refused: AtomicU64,
}

impl Hub {
    /// `backlog_max` entries and `backlog_bytes_max` bytes bound the backlog (the oldest
    /// entries go first); `stream_queue_max` bounds each stream's queue.
    pub fn new(
        routes: Arc<RouteTable>,
        backlog_max: usize,
        backlog_bytes_max: usize,
        stream_queue_max: usize,
    ) -> Self {
        let (tx, _) = broadcast::channel(stream_queue_max.max(1));
        Hub {
            inner: Mutex::new(HubInner {
                replica: Replica::new(routes),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                raft_applied: None,
                raft_membership: StoredMembership::default(),
            }),
            tx,
            backlog_max: backlog_max.max(1),
            backlog_bytes_max,
            applied_tx: watch::channel(0).0,
            streams: AtomicU64::new(0),
            me: AtomicU64::new(0),
            evicted: Notify::new(),
            retained_refused: AtomicU64::new(0),
        }
    }

    /// Tells the hub which node it belongs to (see [`Hub::evicted`]).
    pub fn set_me(&self, me: NodeId) {
        self.me.store(me, Ordering::Relaxed);
    }

    fn removes_me(&self, cmd: &Command) -> bool {
        let me = self.me.load(Ordering::Relaxed);
        me != 0
            && match cmd {
                Command::Leave(n) => *n == me,
                Command::Routes(ops) => ops
                    .iter()
                    .any(|op| matches!(op, RouteOp::RemoveNode(n) if *n == me)),
                Command::Join(_) | Command::Retained(_) => false,
            }
    }

    pub fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while applying leaves a state this node can no longer trust either way;
        // continuing with the inner value keeps the process serving, as the trie does.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lock if it is free now (callers on the data plane must not wait for it).
    pub fn try_lock(&self) -> Option<MutexGuard<'_, HubInner>> {
        match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
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
        if out.retained_refused > 0 {
            self.retained_refused
                .fetch_add(out.retained_refused, Ordering::Relaxed);
        }
        if cmd.as_ref().is_some_and(|c| self.removes_me(c)) {
            self.evicted.notify_one();
        }
        let cmd = cmd.map(Arc::new);
        g.backlog_bytes += entry_bytes(cmd.as_deref());
        g.backlog.push_back((index, cmd.clone()));
        while g.backlog.len() > self.backlog_max
            || (g.backlog_bytes > self.backlog_bytes_max && g.backlog.len() > 1)
        {
            if let Some((_, old)) = g.backlog.pop_front() {
                g.backlog_bytes -= entry_bytes(old.as_deref());
            }
        }
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
        // A snapshot that no longer holds this node's record (removed while this node
        // was away from the stream) counts as a removal too.
        let me = self.me.load(Ordering::Relaxed);
        let was_member = me != 0 && g.replica.state().members().contains_key(&me);
        let removed = was_member && !state.members().contains_key(&me);
        g.replica.install(index, state);
        if removed {
            self.evicted.notify_one();
        }
        g.backlog.clear();
        g.backlog_bytes = 0;
        let _ = self.tx.send(Applied::Reset);
        drop(g);
        self.applied_tx.send_replace(index);
    }

    /// Hands every retained message applied here to `sink` (the current ones first).
    pub fn set_retained_sink(&self, sink: Arc<dyn crate::state::RetainedSink>) {
        self.lock().replica.set_retained_sink(sink);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(n: usize) -> Option<Command> {
        Some(Command::Routes(
            (0..n)
                .map(|i| RouteOp::Add {
                    filter: format!("f/{i}"),
                    node: 1,
                })
                .collect(),
        ))
    }

    fn replay_indexes(start: StreamStart) -> Option<Vec<LogIndex>> {
        match start {
            StreamStart::Replay(v) => Some(v.into_iter().map(|(i, _)| i).collect()),
            StreamStart::Snapshot(..) => None,
        }
    }

    #[test]
    fn subscribers_resume_from_the_backlog_or_get_a_snapshot() {
        let hub = Hub::new(Arc::new(RouteTable::new()), 3, usize::MAX, 16);
        for i in 1..=5 {
            hub.apply(i, routes(1));
        }
        // Backlog holds 3, 4, 5: resuming from 2 or later replays, earlier needs a snapshot.
        assert_eq!(replay_indexes(hub.subscribe(2).0), Some(vec![3, 4, 5]));
        assert_eq!(replay_indexes(hub.subscribe(4).0), Some(vec![5]));
        assert_eq!(replay_indexes(hub.subscribe(5).0), Some(vec![]));
        assert_eq!(replay_indexes(hub.subscribe(1).0), None);
        assert_eq!(replay_indexes(hub.subscribe(0).0), None);
        // A subscriber sees every later entry exactly once.
        let (_, applied, mut rx) = hub.subscribe(5);
        assert_eq!(applied, 5);
        hub.apply(6, None);
        assert!(matches!(rx.try_recv(), Ok(Applied::Entry(6, None))));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn backlog_is_bounded_by_bytes_and_reset_by_install() {
        let hub = Hub::new(Arc::new(RouteTable::new()), 1000, 4000, 16);
        for i in 1..=10 {
            hub.apply(i, routes(50)); // about 1000 bytes each
        }
        let kept = replay_indexes(hub.subscribe(9).0).unwrap();
        assert_eq!(kept, vec![10]);
        assert_eq!(
            replay_indexes(hub.subscribe(3).0),
            None,
            "old entries evicted"
        );
        let (_, _, mut rx) = hub.subscribe(10);
        hub.install(20, ClusterState::new());
        assert!(matches!(rx.try_recv(), Ok(Applied::Reset)));
        assert_eq!(hub.applied(), 20);
        assert_eq!(replay_indexes(hub.subscribe(20).0), Some(vec![]));
        assert_eq!(replay_indexes(hub.subscribe(15).0), None);
    }

    #[test]
    fn the_node_notices_its_own_removal_by_entry_or_by_snapshot() {
        use crate::types::{Member, NodeRole};
        let hub = Hub::new(Arc::new(RouteTable::new()), 10, usize::MAX, 16);
        hub.set_me(7);
        let me = Member {
            id: 7,
            name: "r7".into(),
            role: NodeRole::Replicant,
            cluster_addr: "127.0.0.1:1".into(),
            incarnation: 1,
        };
        let notified = || {
            let f = hub.evicted.notified();
            tokio::pin!(f);
            f.as_mut().enable()
        };
        hub.apply(1, Some(Command::Join(me.clone())));
        hub.apply(2, Some(Command::Leave(8)));
        assert!(!notified(), "someone else's removal");
        hub.apply(3, Some(Command::Leave(7)));
        assert!(notified(), "own Leave");
        hub.apply(4, Some(Command::Join(me.clone())));
        hub.apply(5, Some(Command::Routes(vec![RouteOp::RemoveNode(7)])));
        assert!(notified(), "own routes removed");
        // A snapshot without this node's record, after it had one.
        hub.install(9, ClusterState::new());
        assert!(notified(), "missing from a snapshot");
        hub.install(10, ClusterState::new());
        assert!(!notified(), "was not a member before");
    }
}
