//! [`ClusterStatus`]: what `halyard ctl status` prints and `/metrics` exports, as plain
//! numbers. Metric names mirror EMQX's Mria (prefix `halyard_cluster_`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::types::{LogIndex, NodeId, NodeRole};

/// Where a node's copy of the replicated state stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// A replicant with no upstream core right now (it keeps its applied index).
    Disconnected,
    /// Receiving a snapshot.
    Bootstrap,
    /// Applying entries committed before the stream went live.
    LocalReplay,
    /// Following every commit as it happens.
    Normal,
    /// A core: applies through Raft, has no stream.
    Core,
}

impl StreamState {
    pub(crate) fn from_u8(v: u8) -> StreamState {
        match v {
            1 => StreamState::Bootstrap,
            2 => StreamState::LocalReplay,
            3 => StreamState::Normal,
            4 => StreamState::Core,
            _ => StreamState::Disconnected,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            StreamState::Disconnected => 0,
            StreamState::Bootstrap => 1,
            StreamState::LocalReplay => 2,
            StreamState::Normal => 3,
            StreamState::Core => 4,
        }
    }
}

/// Counters kept by the cluster tasks (monotonic unless named `_len`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub route_queue_len: AtomicU64,
    pub route_queue_full: AtomicU64,
    pub route_ops_proposed: AtomicU64,
    pub route_entries_proposed: AtomicU64,
    pub link_dropped: AtomicU64,
    pub link_unreachable: AtomicU64,
    pub sessions_taken_over: AtomicU64,
    pub sessions_handed_over: AtomicU64,
    pub session_takeover_failures: AtomicU64,
    pub sessions_dropped: AtomicU64,
    pub link_blocked: AtomicU64,
    pub link_lost: AtomicU64,
    pub link_sent: AtomicU64,
    pub link_received: AtomicU64,
    pub bootstraps: AtomicU64,
    pub bootstrap_time_us: AtomicU64,
    pub bootstrap_keys: AtomicU64,
    pub stream_state: std::sync::atomic::AtomicU8,
    pub upstream_committed: AtomicU64,
    pub apply_queue_len: AtomicU64,
    pub stream_reconnects: AtomicU64,
    pub connections_refused: AtomicU64,
    pub stream_cuts: AtomicU64,
    pub inbound_blocked: AtomicU64,
    pub formed: AtomicU64,
    pub autoclean_removed: AtomicU64,
    pub reasserts: AtomicU64,
    pub link_resent: AtomicU64,
    pub link_inflight_full: AtomicU64,
    pub link_duplicates: AtomicU64,
    pub link_departed_dropped: AtomicU64,
    pub retained_queue_len: AtomicU64,
    pub retained_queue_full: AtomicU64,
    pub retained_ops_proposed: AtomicU64,
    pub retained_entries_proposed: AtomicU64,
    pub retained_over_limit: AtomicU64,
    pub retained_expired: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A point-in-time view of one node's cluster layer.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's name.
    pub node_name: String,
    /// Core or replicant.
    pub role: NodeRole,
    /// Cores: the current Raft term.
    pub raft_term: Option<u64>,
    /// Cores: the leader this core knows of.
    pub raft_leader: Option<NodeId>,
    /// Cores: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub raft_state: Option<String>,
    /// Cores: whether this node formed the core group (at most one node of a cluster, once).
    pub formed_group: bool,
    /// Cores: whether the Raft vote, log and snapshot are kept on disk (`cluster.data_dir`).
    pub raft_durable: bool,
    /// Cores: the last log index covered by this core's latest snapshot.
    pub raft_snapshot_index: Option<LogIndex>,
    /// Cores: the last log index purged from this core's log (kept in the snapshot).
    pub raft_purged_index: Option<LogIndex>,
    /// Cores: Raft file transactions committed with an fsync (each holds one or more
    /// appends, votes or snapshot writes: group commit).
    pub raft_fsyncs: u64,
    /// Cores: Raft write requests written to disk.
    pub raft_disk_writes: u64,
    /// Cores: group commits cut at `cluster.raft_write_batch_max` requests.
    pub raft_write_batch_full: u64,
    /// Cores: failed Raft file transactions (the Raft node stops on the first).
    pub raft_storage_errors: u64,
    /// Cores: the voters of the current Raft membership.
    pub raft_voters: Vec<NodeId>,
    /// Cores: per peer, how many log entries it is behind the leader (leader only).
    pub raft_peer_lag: Vec<(NodeId, u64)>,
    /// Stream state (cores report [`StreamState::Core`]).
    pub stream_state: StreamState,
    /// Replicants: the core streamed from.
    pub upstream_core: Option<String>,
    /// The last index applied to the local route table.
    pub applied_index: LogIndex,
    /// The last committed index known here (cores: Raft's; replicants: the upstream's).
    pub committed_index: LogIndex,
    /// `committed_index - applied_index`.
    pub lag: u64,
    /// Cores: replicant streams served now.
    pub replicants: u64,
    /// Cores: entries waiting to be sent to the slowest replicant stream.
    pub stream_queue_len: u64,
    /// Replicants: received entries not yet applied.
    pub apply_queue_len: u64,
    /// Route operations waiting to be batched.
    pub route_queue_len: u64,
    /// Proposals refused because the route queue was full.
    pub route_queue_full: u64,
    /// Route operations this node proposed.
    pub route_ops_proposed: u64,
    /// Log entries (batches) those operations went into.
    pub route_entries_proposed: u64,
    /// Messages queued on forwarding links (all destinations).
    pub link_queue_len: u64,
    /// Messages sent on links and not yet acknowledged by their receivers.
    pub link_inflight: u64,
    /// Messages sent again after a link reconnected (they were not acknowledged).
    pub link_resent: u64,
    /// Times a link waited because `link_inflight_max` messages were unacknowledged.
    pub link_inflight_full: u64,
    /// Received messages dropped because they were resent copies of ones handed on.
    pub link_duplicates: u64,
    /// Messages dropped because their destination left the cluster (its link closed).
    pub link_departed_dropped: u64,
    /// Messages refused by `send` because a link queue was full.
    pub link_dropped: u64,
    /// Acknowledged sends that did not wait because the destination's link had been down
    /// for `link_ack_timeout_ms` (the publisher was acknowledged at once).
    pub link_unreachable: u64,
    /// Sessions this node received from another node (a client reconnected here).
    pub sessions_taken_over: u64,
    /// Sessions this node sent to another node.
    pub sessions_handed_over: u64,
    /// Members that did not answer a session takeover in time (skipped).
    pub session_takeover_failures: u64,
    /// Extra copies of a session from a second node (after a partition), dropped.
    pub sessions_dropped: u64,
    /// Sends that found their link queue full (`send_wait` then waits for room; a
    /// `send_acked_now` hands the message back to be sent that way).
    pub link_blocked: u64,
    /// Messages dropped because one alone exceeds `cluster.max_frame_bytes`.
    pub link_lost: u64,
    /// Messages sent on links.
    pub link_sent: u64,
    /// Messages received on links.
    pub link_received: u64,
    /// Replicants: snapshots installed since start.
    pub bootstraps: u64,
    /// Replicants: duration of the last bootstrap.
    pub bootstrap_time_seconds: f64,
    /// Replicants: route rows in the last bootstrap snapshot.
    pub bootstrap_keys: u64,
    /// Replicants: stream reconnects since start.
    pub stream_reconnects: u64,
    /// Cores: replicant streams cut because they fell `stream_queue_max` entries behind.
    pub stream_cuts: u64,
    /// Received link batches that waited because the inbound queue was full.
    pub inbound_blocked: u64,
    /// Connections refused because `MAX_CLUSTER_CONNECTIONS` were open.
    pub connections_refused: u64,
    /// Cores: nodes this core declared dead and cleaned while it led (autoclean).
    pub autoclean_removed: u64,
    /// Times this node found its own routes removed while alive and put them back.
    pub reasserts: u64,
    /// Known members.
    pub members: u64,
    /// Route rows (filter, node) in the replicated table.
    pub route_rows: u64,
    /// Retained messages in the replicated state.
    pub retained: u64,
    /// Bytes (topic + encoded message) of those retained messages.
    pub retained_bytes: u64,
    /// Retained changes waiting to be batched.
    pub retained_queue_len: u64,
    /// Retained changes refused because `cluster.retained_queue_max` were waiting.
    pub retained_queue_full: u64,
    /// Retained changes this node proposed.
    pub retained_ops_proposed: u64,
    /// Log entries (batches) those changes went into.
    pub retained_entries_proposed: u64,
    /// Retained messages this node refused before proposing: `cluster.retained_max_messages`
    /// or `cluster.retained_max_bytes` reached as seen here, or one message larger than a
    /// log entry may be.
    pub retained_over_limit: u64,
    /// Retained messages refused when applied because a cap was reached (concurrent
    /// proposals from several nodes; every node counts the same).
    pub retained_refused: u64,
    /// Cores: expired retained messages this core's sweep removed while it led.
    pub retained_expired: u64,
}

impl ClusterStatus {
    /// The numbers under their Prometheus names (the server adds labels and exports them).
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        let mut m = vec![
            ("halyard_cluster_lag", self.lag as f64),
            (
                "halyard_cluster_last_committed_index",
                self.committed_index as f64,
            ),
            (
                "halyard_cluster_last_applied_index",
                self.applied_index as f64,
            ),
            (
                "halyard_cluster_bootstrap_time_seconds",
                self.bootstrap_time_seconds,
            ),
            ("halyard_cluster_bootstrap_keys", self.bootstrap_keys as f64),
            ("halyard_cluster_bootstraps_total", self.bootstraps as f64),
            ("halyard_cluster_replicants", self.replicants as f64),
            (
                "halyard_cluster_stream_queue_len",
                self.stream_queue_len as f64,
            ),
            (
                "halyard_cluster_apply_queue_len",
                self.apply_queue_len as f64,
            ),
            (
                "halyard_cluster_stream_state",
                f64::from(self.stream_state.as_u8()),
            ),
            (
                "halyard_cluster_stream_reconnects_total",
                self.stream_reconnects as f64,
            ),
            (
                "halyard_cluster_route_queue_len",
                self.route_queue_len as f64,
            ),
            (
                "halyard_cluster_route_queue_full_total",
                self.route_queue_full as f64,
            ),
            (
                "halyard_cluster_route_ops_proposed_total",
                self.route_ops_proposed as f64,
            ),
            (
                "halyard_cluster_route_entries_proposed_total",
                self.route_entries_proposed as f64,
            ),
            ("halyard_cluster_link_queue_len", self.link_queue_len as f64),
            (
                "halyard_cluster_link_dropped_total",
                self.link_dropped as f64,
            ),
            (
                "halyard_cluster_link_unreachable_total",
                self.link_unreachable as f64,
            ),
            (
                "halyard_cluster_sessions_taken_over_total",
                self.sessions_taken_over as f64,
            ),
            (
                "halyard_cluster_sessions_handed_over_total",
                self.sessions_handed_over as f64,
            ),
            (
                "halyard_cluster_session_takeover_failures_total",
                self.session_takeover_failures as f64,
            ),
            (
                "halyard_cluster_sessions_dropped_total",
                self.sessions_dropped as f64,
            ),
            (
                "halyard_cluster_link_blocked_total",
                self.link_blocked as f64,
            ),
            ("halyard_cluster_link_lost_total", self.link_lost as f64),
            ("halyard_cluster_link_inflight", self.link_inflight as f64),
            ("halyard_cluster_link_resent_total", self.link_resent as f64),
            (
                "halyard_cluster_link_inflight_full_total",
                self.link_inflight_full as f64,
            ),
            (
                "halyard_cluster_link_duplicates_total",
                self.link_duplicates as f64,
            ),
            (
                "halyard_cluster_link_departed_dropped_total",
                self.link_departed_dropped as f64,
            ),
            ("halyard_cluster_link_sent_total", self.link_sent as f64),
            (
                "halyard_cluster_link_received_total",
                self.link_received as f64,
            ),
            ("halyard_cluster_stream_cuts_total", self.stream_cuts as f64),
            (
                "halyard_cluster_inbound_blocked_total",
                self.inbound_blocked as f64,
            ),
            (
                "halyard_cluster_connections_refused_total",
                self.connections_refused as f64,
            ),
            (
                "halyard_cluster_autoclean_removed_total",
                self.autoclean_removed as f64,
            ),
            ("halyard_cluster_reasserts_total", self.reasserts as f64),
            ("halyard_cluster_members", self.members as f64),
            ("halyard_cluster_route_rows", self.route_rows as f64),
            ("halyard_cluster_retained", self.retained as f64),
            ("halyard_cluster_retained_bytes", self.retained_bytes as f64),
            (
                "halyard_cluster_retained_queue_len",
                self.retained_queue_len as f64,
            ),
            (
                "halyard_cluster_retained_queue_full_total",
                self.retained_queue_full as f64,
            ),
            (
                "halyard_cluster_retained_ops_proposed_total",
                self.retained_ops_proposed as f64,
            ),
            (
                "halyard_cluster_retained_entries_proposed_total",
                self.retained_entries_proposed as f64,
            ),
            (
                "halyard_cluster_retained_over_limit_total",
                self.retained_over_limit as f64,
            ),
            (
                "halyard_cluster_retained_refused_total",
                self.retained_refused as f64,
            ),
            (
                "halyard_cluster_retained_expired_total",
                self.retained_expired as f64,
            ),
        ];
        if self.role == NodeRole::Core {
            m.push(("halyard_cluster_raft_fsyncs_total", self.raft_fsyncs as f64));
            m.push((
                "halyard_cluster_raft_disk_writes_total",
                self.raft_disk_writes as f64,
            ));
            m.push((
                "halyard_cluster_raft_write_batch_full_total",
                self.raft_write_batch_full as f64,
            ));
            m.push((
                "halyard_cluster_raft_storage_errors_total",
                self.raft_storage_errors as f64,
            ));
        }
        if let Some(term) = self.raft_term {
            m.push(("halyard_cluster_raft_term", term as f64));
        }
        if let Some(leader) = self.raft_leader {
            m.push(("halyard_cluster_raft_leader", leader as f64));
        }
        m
    }
}
