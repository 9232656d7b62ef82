//! The core group on openraft: type configuration, the log store, the state machine
//! adaptor and the TCP network client.
//!
//! # Storage seam
//! [`MemLogStore`] and [`StateMachine`] implement openraft's storage-v2 traits
//! (`RaftLogStorage`, `RaftStateMachine`) in memory. The durable version (broker/store, redb)
//! replaces [`MemLogStore`] behind the same trait: `save_vote` and `append` must be durable
//! before they return / call the flush callback (group-commit the appends), `truncate` and
//! `purge` are ordinary deletes, and the last purged log id must be stored with them. The
//! state machine stays in memory and is rebuilt on start from the latest persisted snapshot
//! plus the log (`build_snapshot` output written next to the log). Until then a core that
//! restarts comes back empty: it must be re-added to the group (see the crate docs).

mod log_store;
mod network;
mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

pub use log_store::MemLogStore;
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
