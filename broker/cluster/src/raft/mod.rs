//! The core group on openraft: type configuration, the log store, the state machine
//! adaptor and the TCP network client.
//!
//! # Storage
//! [`LogStore`] and [`StateMachine`] implement openraft's storage-v2 traits
//! (`RaftLogStorage`, `RaftStateMachine`). With `cluster.data_dir` set, a core writes its
//! vote, log, committed log id, last purged log id and latest snapshot to
//! `<data_dir>/raft.redb` through one writer thread (module `disk`): `save_vote` returns and
//! `append` calls back only after the fsync, and everything waiting is group-committed in
//! one transaction. The state machine stays in memory; a restarted core rebuilds it from
//! the stored snapshot plus the committed log entries after it (openraft re-applies them
//! at start), so it rejoins with its vote and log and nobody forms the group again.
//!
//! The file is a separate redb database rather than tables in `halyard-store`: the store's
//! API is MQTT records behind its own group-commit writer, and Raft needs ordered,
//! individually fsynced vote/log writes, truncation and purging with its own cadence; a
//! separate file also keeps the store's repair tools away from the consensus log.

mod disk;
mod log_store;
mod network;
mod state_machine;
#[cfg(test)]
mod tests;

use std::io::Cursor;
use std::sync::Arc;

pub(crate) use disk::Disk;
pub use disk::RAFT_FILE_NAME;
pub use log_store::{LogStore, MemLogStore};
pub(crate) use network::NetworkFactory;
pub use state_machine::StateMachine;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::types::{ApplyOutcome, Command};

openraft::declare_raft_types!(
    /// openraft type configuration of the core group.
    pub TypeConfig:
        D = Command,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle type.
pub type Raft = openraft::Raft<TypeConfig>;

/// openraft's configuration derived from ours.
pub(crate) fn raft_config(cfg: &ClusterConfig) -> Result<Arc<openraft::Config>, ClusterError> {
    let c = openraft::Config {
        cluster_name: "halyard".into(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        election_timeout_min: cfg.election_timeout_min_ms,
        election_timeout_max: cfg.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_every_entries),
        max_in_snapshot_log_to_keep: cfg.snapshot_every_entries.min(1000),
        snapshot_max_chunk_size: cfg.snapshot_chunk_bytes as u64,
        install_snapshot_timeout: cfg.write_timeout_ms.max(1000),
        ..Default::default()
    };
    let c = c.validate().map_err(|e| ClusterError::Config {
        field: "cluster",
        reason: e.to_string(),
    })?;
    Ok(Arc::new(c))
}
