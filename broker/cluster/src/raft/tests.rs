//! Storage tests: openraft's own storage suite against the memory and the durable store,
//! and a reopen check of the durable one.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};

use super::disk::Disk;
use super::{LogStore, StateMachine, TypeConfig};
use crate::hub::Hub;
use crate::state::RouteTable;
use crate::types::{Command, NodeId, RouteOp};

fn hub() -> Arc<Hub> {
    Arc::new(Hub::new(Arc::new(RouteTable::new()), 100, usize::MAX, 16))
}

struct MemoryBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine> for MemoryBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        Ok(((), LogStore::memory(), StateMachine::new(hub())))
    }
}

struct DiskBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for DiskBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (disk, mut loaded) = Disk::open(dir.path(), 0, 64).expect("open raft file");
        let snap = loaded.snapshot.take();
        let log = LogStore::durable(disk.clone(), &mut loaded);
        let sm = StateMachine::durable(hub(), disk, snap).expect("state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_memory() {
    Suite::test_all(MemoryBuilder).expect("suite passes");
}

#[test]
fn openraft_storage_suite_durable() {
    Suite::test_all(DiskBuilder).expect("suite passes");
}

fn entry(term: u64, index: u64, cmd: Option<Command>) -> openraft::Entry<TypeConfig> {
    let log_id = openraft::testing::log_id(term, 1, index);
    match cmd {
        Some(c) => openraft::Entry {
            log_id,
            payload: openraft::EntryPayload::Normal(c),
        },
        None => openraft::testing::blank_ent(term, 1, index),
    }
}

fn add(filter: &str) -> Option<Command> {
    Some(Command::Routes(vec![RouteOp::Add {
        filter: filter.into(),
        node: 7,
    }]))
}

fn open(dir: &std::path::Path, node: NodeId) -> (Disk, LogStore, StateMachine, Arc<Hub>) {
    let (disk, mut loaded) = Disk::open(dir, node, 8).expect("open");
    let snap = loaded.snapshot.take();
    let log = LogStore::durable(disk.clone(), &mut loaded);
    let h = hub();
    let sm = StateMachine::durable(h.clone(), disk.clone(), snap).expect("sm");
    (disk, log, sm, h)
}

/// Appends and waits for openraft's flush callback (called after the fsync).
async fn append(log: &mut LogStore, entries: Vec<openraft::Entry<TypeConfig>>) {
    log.blocking_append(entries).await.expect("append");
}

#[test]
fn durable_store_reopens_with_vote_log_committed_and_snapshot() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(async {
        let (disk, mut log, mut sm, _) = open(dir.path(), 5);
        log.save_vote(&Vote::new(3, 1)).await.expect("vote");
        append(
            &mut log,
            vec![entry(1, 1, add("a/#")), entry(1, 2, add("b"))],
        )
        .await;
        append(&mut log, vec![entry(2, 3, add("c")), entry(2, 4, None)]).await;
        sm.apply(vec![entry(1, 1, add("a/#")), entry(1, 2, add("b"))])
            .await
            .expect("apply");
        // Snapshot at 2, purge up to 1, truncate the uncommitted 4, commit 3.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snap");
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        log.purge(openraft::testing::log_id(1, 1, 1))
            .await
            .expect("purge");
        log.truncate(openraft::testing::log_id(2, 1, 4))
            .await
            .expect("truncate");
        log.save_committed(Some(openraft::testing::log_id(2, 1, 3)))
            .await
            .expect("committed");
        disk.close();
        drop((log, sm));

        // Another node may not use this file.
        let err = Disk::open(dir.path(), 6, 8).expect_err("wrong node");
        assert!(err.to_string().contains("belongs to node 5"), "{err}");

        let (disk, mut log, mut sm, h) = open(dir.path(), 5);
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 1)));
        assert_eq!(
            log.read_committed().await.expect("c").map(|l| l.index),
            Some(3)
        );
        let st = log.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(st.last_log_id.map(|l| l.index), Some(3));
        let got: Vec<u64> = log
            .try_get_log_entries(0..10)
            .await
            .expect("read")
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(got, vec![2, 3]);
        // The state machine starts from the snapshot.
        let (applied, _) = sm.applied_state().await.expect("applied");
        assert_eq!(applied.map(|l| l.index), Some(2));
        {
            let g = h.lock();
            assert!(g.replica.state().route_nodes("a/#").is_some());
            assert!(g.replica.state().route_nodes("b").is_some());
            assert!(g.replica.state().route_nodes("c").is_none());
        }
        assert!(sm.get_current_snapshot().await.expect("snap").is_some());
        disk.close();
    });
}
