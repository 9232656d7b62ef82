//! The Raft state machine: applies committed entries to the node's [`Hub`] and builds /
//! installs snapshots in the [`ClusterState`] encoding.
//!
//! The state itself lives in memory. On a core with a disk every snapshot built or
//! installed is written to it before openraft hears of it (so the log below it may be
//! purged), and a restarted core starts from that snapshot; openraft then re-applies the
//! committed entries after it from the log.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership,
};

use super::TypeConfig;
use super::disk::{Disk, Op, encode};
use crate::error::ClusterError;
use crate::hub::Hub;
use crate::state::ClusterState;
use crate::types::{ApplyOutcome, NodeId};

/// The latest snapshot built or installed (kept for followers that need it).
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine adaptor over a [`Hub`]; clones share everything.
#[derive(Clone)]
pub struct StateMachine {
    hub: Arc<Hub>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    disk: Option<Disk>,
}

impl StateMachine {
    /// A state machine over `hub` that keeps snapshots in memory only.
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        StateMachine {
            hub,
            current: Arc::new(Mutex::new(None)),
            disk: None,
        }
    }

    /// A state machine that writes its snapshots to `disk`, starting from the snapshot read
    /// back from it (installed into `hub`).
    pub(crate) fn durable(
        hub: Arc<Hub>,
        disk: Disk,
        snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    ) -> Result<Self, ClusterError> {
        let sm = StateMachine {
            hub,
            current: Arc::new(Mutex::new(None)),
            disk: Some(disk),
        };
        if let Some((meta, data)) = snapshot {
            let state = ClusterState::restore(&data)?;
            sm.install_state(&meta, state);
            sm.store_current(StoredSnapshot { meta, data });
        }
        Ok(sm)
    }

    fn install_state(&self, meta: &SnapshotMeta<NodeId, BasicNode>, state: ClusterState) {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let (last, membership) = (meta.last_log_id, meta.last_membership.clone());
        self.hub.install_with(index, state, |g| {
            g.raft_applied = last;
            g.raft_membership = membership;
        });
    }

    /// Writes the snapshot to the disk (if any) and waits for the fsync.
    async fn persist(&self, snap: &StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let (meta, data) = (encode(&snap.meta), snap.data.clone());
        disk.write(|r| Op::Snapshot(meta, data, r))
            .await
            .map_err(|e| {
                StorageError::from_io_error(
                    ErrorSubject::Snapshot(Some(snap.meta.signature())),
                    ErrorVerb::Write,
                    e,
                )
            })
    }

    fn store_current(&self, snap: StoredSnapshot) {
        // Only assignments happen under this lock.
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (state, last, membership) = {
            let g = self.hub.lock();
            (
                g.replica.state().clone(),
                g.raft_applied,
                g.raft_membership.clone(),
            )
        };
        // Encoding a large table takes a while: keep it off the runtime thread, which also
        // drives Raft heartbeats.
        let data = tokio::task::spawn_blocking(move || state.snapshot())
            .await
            .map_err(|e| {
                StorageError::from_io_error(
                    ErrorSubject::StateMachine,
                    ErrorVerb::Read,
                    std::io::Error::other(e.to_string()),
                )
            })?;
        let snapshot_id = match last {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.persist(&snap).await?;
        self.store_current(snap);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let g = self.hub.lock();
        Ok((g.raft_applied, g.raft_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let (cmd, membership) = match entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(cmd) => (Some(cmd), None),
                EntryPayload::Membership(m) => (None, Some(StoredMembership::new(Some(log_id), m))),
            };
            out.push(self.hub.apply_with(log_id.index, cmd, |g| {
                g.raft_applied = Some(log_id);
                if let Some(m) = membership {
                    g.raft_membership = m;
                }
            }));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let state = ClusterState::restore(&data).map_err(|e| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                std::io::Error::other(e.to_string()),
            )
        })?;
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // On disk before the state changes: openraft purges the log below it next.
        self.persist(&snap).await?;
        self.install_state(meta, state);
        self.store_current(snap);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let cur = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(cur.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
