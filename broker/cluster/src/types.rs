//! The replicated vocabulary: node identities, members, route operations and log commands.

use serde::{Deserialize, Serialize};

/// A node's identity in the cluster, derived from its unique name by [`node_id_for_name`].
pub type NodeId = u64;

/// A position in the replicated log (the openraft log index). It is global: every core
/// applies the same command at the same index, so a replicant can resume on any core.
pub type LogIndex = u64;

/// The stable id of the node named `name` (64-bit FNV-1a of the UTF-8 name, never 0).
///
/// Ids are derived from names so that `cluster.initial_cores` (names) and Raft membership
/// (ids) agree without an extra exchange; [`crate::ClusterConfig::validate`] rejects names
/// whose ids collide.
pub fn node_id_for_name(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Votes in the Raft group and serves the replicant stream.
    Core,
    /// Follows the committed log from a core; keeps no durable cluster state.
    Replicant,
}

/// One cluster member as recorded in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id ([`node_id_for_name`] of `name`).
    pub id: NodeId,
    /// The node's unique name (`node.name`).
    pub name: String,
    /// Core or replicant.
    pub role: NodeRole,
    /// The node's cluster listener (`cluster.listen`), used by other nodes for links.
    pub cluster_addr: String,
    /// Grows on every start of the node (its start time in milliseconds since the Unix
    /// epoch): a join with a lower incarnation than the recorded one is stale and ignored.
    pub incarnation: u64,
}

/// One change to the route table. A route row is (filter, node): the node owns the row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RouteOp {
    /// `node` has at least one subscriber for `filter` (a topic filter, or a
    /// `$share/{group}/{filter}` shared subscription).
    Add {
        /// The topic filter.
        filter: String,
        /// The owner node.
        node: NodeId,
    },
    /// `node` no longer has subscribers for `filter`.
    Remove {
        /// The topic filter.
        filter: String,
        /// The owner node.
        node: NodeId,
    },
    /// Drop every row owned by the node (it left or was removed).
    RemoveNode(NodeId),
}

/// The payload of one replicated log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of route changes, applied in order.
    Routes(Vec<RouteOp>),
    /// A node joined (or restarted with a higher incarnation).
    Join(Member),
    /// A node left: its member record and all its route rows are removed.
    Leave(NodeId),
    /// A batch of retained-message changes, applied in order (appended last: the variant
    /// index is part of the encoding of stored logs).
    Retained(RetainedBatch),
}

/// A retained message as replicated. The cluster layer does not look inside `body` (the
/// server's encoding of the whole message); it only needs the expiry to drop it in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedMessage {
    /// When the message expires (wall clock, Unix milliseconds; `None`: never). The core
    /// group's leader removes expired messages with [`RetainedOp::Expire`].
    pub expires_at_unix_ms: Option<u64>,
    /// The message in the server's encoding.
    pub body: Vec<u8>,
}

impl RetainedMessage {
    /// The bytes a retained message for `topic` counts against `retained_max_bytes`.
    pub fn cost(&self, topic: &str) -> u64 {
        (topic.len() + self.body.len()) as u64
    }
}

/// One change to the retained messages (topic -> message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetainedOp {
    /// Retain `message` for `topic`, replacing the previous one [MQTT-3.3.1-5].
    Set {
        /// The topic name.
        topic: String,
        /// The message.
        message: RetainedMessage,
    },
    /// Remove `topic`'s retained message (a PUBLISH with RETAIN and an empty payload)
    /// [MQTT-3.3.1-6].
    Delete {
        /// The topic name.
        topic: String,
    },
    /// Remove `topic`'s retained message if it still expires at `at_unix_ms` (the leader's
    /// sweep; a newer message on the topic is left alone).
    Expire {
        /// The topic name.
        topic: String,
        /// The expiry of the message the sweep saw.
        at_unix_ms: u64,
    },
}

/// Retained changes with the caps they are applied under. The caps travel with the command
/// so every node applies the same ones, whatever its own configuration says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedBatch {
    /// The changes, in order.
    pub ops: Vec<RetainedOp>,
    /// A `Set` for a new topic is refused when this many messages are retained.
    pub max_messages: u64,
    /// A `Set` that grows the total ([`RetainedMessage::cost`]) beyond this is refused.
    pub max_bytes: u64,
}

/// What applying a [`Command`] did; returned to the proposer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// Route rows added or removed (operations that changed nothing do not count).
    pub changed: u64,
    /// Operations skipped because their filter or topic is invalid (counted, never
    /// applied).
    pub rejected: u64,
    /// Retained `Set`s refused because a cap of their batch was reached.
    pub retained_refused: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(node_id_for_name("c1"), node_id_for_name("c1"));
        assert_ne!(node_id_for_name("c1"), node_id_for_name("c2"));
        assert_ne!(node_id_for_name(""), 0);
    }
}
