//! The crate's error type.

use crate::types::{LogIndex, NodeId};

/// Everything that can go wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A configuration field is invalid; names the field (e.g. `cluster.seeds`).
    #[error("invalid cluster configuration: {field}: {reason}")]
    Config {
        /// The field, as written in the TOML / environment key.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The Raft storage file (`<cluster.data_dir>/raft.redb`) could not be opened, read or
    /// written, or belongs to another node.
    #[error("raft storage {path}: {reason}")]
    Storage {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A socket or runtime operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame or snapshot could not be decoded (network input: never a panic).
    #[error("decode error: {0}")]
    Decode(String),
    /// A frame announced more bytes than `cluster.max_frame_bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// No core could be reached or no leader is known right now; retry later.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// The Raft group refused or failed the operation.
    #[error("raft: {0}")]
    Raft(String),
    /// The operation did not finish within its bound.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The cluster node is shutting down or stopped.
    #[error("cluster node stopped")]
    Stopped,
    /// A bounded queue is full (back-pressure); the operation was not performed.
    #[error("queue full")]
    QueueFull,
    /// The destination node is unknown (no member record with a cluster address).
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The link to the destination node has been down for longer than
    /// `cluster.link_ack_timeout_ms`: an acknowledged send does not wait for it (the message
    /// stays queued, when there is room, and is sent if the node comes back).
    #[error("node {0} unreachable")]
    Unreachable(NodeId),
    /// The peer violated the cluster protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A route operation was rejected before proposing (invalid filter).
    #[error("invalid route filter {0:?}")]
    InvalidFilter(String),
    /// A retained message was not proposed: it would pass `cluster.retained_max_messages`
    /// or `cluster.retained_max_bytes`, or it alone is larger than a log entry may be.
    #[error("retained message refused: {0}")]
    RetainedFull(String),
    /// Waiting for an index that this node will not apply (stream gone for too long).
    #[error("index {0} not applied in time")]
    NotApplied(LogIndex),
}
