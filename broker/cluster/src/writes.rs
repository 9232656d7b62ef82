//! The write path: route and retained batching, proposing on the leader, forwarding to the
//! leader or to a core, and the status snapshot.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::node::Shared;
use crate::status::{ClusterStatus, Counters, StreamState};
use crate::types::{Command, LogIndex, RetainedBatch, RetainedOp, RouteOp};
use crate::wire::{Hello, WriteRequest, WriteResponse, read_frame, write_frame};

/// Most cores a write may pass through before it must reach the leader.
const MAX_HOPS: u8 = 3;

/// Idle forwarding connections kept per destination.
const POOL_IDLE_MAX: usize = 8;

/// Operations waiting for a batcher (route or retained changes), with the proposer's reply
/// channel.
pub(crate) struct BatchItem<T = RouteOp> {
    pub ops: Vec<T>,
    pub reply: oneshot::Sender<Result<LogIndex, ClusterError>>,
}

/// Operations a node batches into log entries.
pub(crate) trait Batchable: Sized + Send + 'static {
    /// An upper estimate of the encoded size of `ops`.
    fn bytes(ops: &[Self]) -> usize;
    /// The log entry of one batch.
    fn command(ops: Vec<Self>, cfg: &ClusterConfig) -> Command;
    /// The batcher's counters: queue length, operations and entries proposed.
    fn counters(c: &Counters) -> [&AtomicU64; 3];
}

impl Batchable for RouteOp {
    fn bytes(ops: &[Self]) -> usize {
        ops_bytes(ops)
    }

    fn command(ops: Vec<Self>, _: &ClusterConfig) -> Command {
        Command::Routes(ops)
    }

    fn counters(c: &Counters) -> [&AtomicU64; 3] {
        [
            &c.route_queue_len,
            &c.route_ops_proposed,
            &c.route_entries_proposed,
        ]
    }
}

impl Batchable for RetainedOp {
    fn bytes(ops: &[Self]) -> usize {
        retained_bytes(ops)
    }

    fn command(ops: Vec<Self>, cfg: &ClusterConfig) -> Command {
        Command::Retained(RetainedBatch {
            ops,
            max_messages: cfg.retained_max_messages as u64,
            max_bytes: cfg.retained_max_bytes as u64,
        })
    }

    fn counters(c: &Counters) -> [&AtomicU64; 3] {
        [
            &c.retained_queue_len,
            &c.retained_ops_proposed,
            &c.retained_entries_proposed,
        ]
    }
}

/// Collects operations for `route_batch_interval_ms` (or until `route_batch_max`) and
/// proposes each batch as one entry. Batches are proposed one after the other, so this
/// node's changes of one kind commit in the order they were proposed.
pub(crate) async fn batcher<T: Batchable>(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<BatchItem<T>>,
) {
    let interval = Duration::from_millis(shared.cfg.route_batch_interval_ms);
    let max = shared.cfg.route_batch_max;
    let max_bytes = max_entry_bytes(&shared.cfg);
    let mut carry: Option<BatchItem<T>> = None;
    loop {
        let first = match carry.take() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let mut n = first.ops.len();
        let mut bytes = T::bytes(&first.ops);
        let mut items = vec![first];
        let deadline = Instant::now() + interval;
        while n < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => {
                    let b = T::bytes(&item.ops);
                    if bytes + b > max_bytes || n + item.ops.len() > max {
                        carry = Some(item);
                        break;
                    }
                    n += item.ops.len();
                    bytes += b;
                    items.push(item);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(items.len());
        for item in items {
            ops.extend(item.ops);
            replies.push(item.reply);
        }
        let [queue_len, ops_proposed, entries_proposed] = T::counters(&shared.counters);
        queue_len.fetch_sub(n as u64, Ordering::Relaxed);
        ops_proposed.fetch_add(n as u64, Ordering::Relaxed);
        entries_proposed.fetch_add(1, Ordering::Relaxed);
        let res = submit(&shared, T::command(ops, &shared.cfg), 0).await;
        for reply in replies {
            let _ = reply.send(match &res {
                Ok(i) => Ok(*i),
                Err(e) => Err(duplicate(e)),
            });
        }
    }
}

/// Largest encoded route batch: a quarter of a frame, so one entry always fits in an
/// AppendEntries or stream frame.
pub(crate) fn max_entry_bytes(cfg: &crate::config::ClusterConfig) -> usize {
    cfg.max_frame_bytes / 4
}

/// An upper estimate of the encoded size of `ops`.
pub(crate) fn ops_bytes(ops: &[RouteOp]) -> usize {
    ops.iter().map(op_bytes).sum()
}

fn op_bytes(op: &RouteOp) -> usize {
    match op {
        RouteOp::Add { filter, .. } | RouteOp::Remove { filter, .. } => filter.len() + 16,
        RouteOp::RemoveNode(_) => 12,
    }
}

/// Splits `ops`, in order, into parts of at most `max_ops` operations and `max_bytes`
/// (estimated by [`ops_bytes`]; an operation larger than that alone gets its own part).
pub(crate) fn split_ops(ops: Vec<RouteOp>, max_ops: usize, max_bytes: usize) -> Vec<Vec<RouteOp>> {
    let max_ops = max_ops.max(1);
    let mut parts = Vec::with_capacity(ops.len().div_ceil(max_ops));
    let mut part = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let b = op_bytes(&op);
        if !part.is_empty() && (part.len() == max_ops || bytes + b > max_bytes) {
            parts.push(std::mem::take(&mut part));
            bytes = 0;
        }
        bytes += b;
        part.push(op);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// An upper estimate of the encoded size of retained `ops`.
pub(crate) fn retained_bytes(ops: &[RetainedOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            RetainedOp::Set { topic, message } => topic.len() + message.body.len() + 24,
            RetainedOp::Delete { topic } | RetainedOp::Expire { topic, .. } => topic.len() + 16,
        })
        .sum()
}

fn duplicate(e: &ClusterError) -> ClusterError {
    match e {
        ClusterError::Timeout(ms) => ClusterError::Timeout(*ms),
        ClusterError::Stopped => ClusterError::Stopped,
        ClusterError::NoLeader(s) => ClusterError::NoLeader(s.clone()),
        other => ClusterError::Raft(other.to_string()),
    }
}

/// Replicates `cmd` and returns its log index. On a core: proposes on the local Raft node,
/// or forwards to the leader it names; on a replicant: sends to a core from the seeds.
/// Retries until `write_timeout_ms` (halved per hop so the caller's bound expires last).
/// A retried write may commit twice; every command is idempotent (set semantics, and
/// batches of one node are sequential), so a duplicate changes nothing.
pub(crate) async fn submit(
    shared: &Arc<Shared>,
    cmd: Command,
    hops: u8,
) -> Result<LogIndex, ClusterError> {
    let bound = shared.cfg.write_timeout_ms >> hops.min(8);
    let deadline = Instant::now() + Duration::from_millis(bound.max(1));
    let mut seed_ix = 0usize;
    loop {
        let attempt = match &shared.core {
            Some(core) => match core.raft.client_write(cmd.clone()).await {
                Ok(r) => return Ok(r.log_id.index),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(node) if hops < MAX_HOPS && f.leader_id != Some(shared.id) => {
                            forward(shared, &node.addr, &cmd, hops, deadline).await
                        }
                        _ => Err(ClusterError::NoLeader("election in progress".into())),
                    }
                }
                Err(e) => Err(ClusterError::Raft(e.to_string())),
            },
            None => {
                let seeds = shared.discovery.cores();
                let r = match seeds.get(seed_ix % seeds.len().max(1)) {
                    Some(addr) => forward(shared, addr, &cmd, hops, deadline).await,
                    None => Err(ClusterError::NoLeader("discovery found no core".into())),
                };
                if r.is_err() {
                    seed_ix += 1;
                }
                r
            }
        };
        let last = match attempt {
            Ok(i) => return Ok(i),
            Err(e) => e,
        };
        if Instant::now() + shared.backoff() / 4 >= deadline {
            return Err(match last {
                ClusterError::NoLeader(_) | ClusterError::Raft(_) => last,
                _ => ClusterError::Timeout(bound),
            });
        }
        tokio::time::sleep(shared.backoff() / 4).await;
    }
}

/// Pooled connections by destination address, one request in flight per connection (for
/// forwarded writes, and for session takeovers).
#[derive(Default)]
pub(crate) struct WritePool {
    idle: std::sync::Mutex<HashMap<String, Vec<TcpStream>>>,
}

impl WritePool {
    pub(crate) fn take(&self, addr: &str) -> Option<TcpStream> {
        // Only map operations happen under this lock.
        let mut g = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        g.get_mut(addr).and_then(Vec::pop)
    }

    pub(crate) fn give(&self, addr: &str, s: TcpStream) {
        let mut g = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let v = g.entry(addr.to_owned()).or_default();
        if v.len() < POOL_IDLE_MAX {
            v.push(s);
        }
    }
}

async fn forward(
    shared: &Arc<Shared>,
    addr: &str,
    cmd: &Command,
    hops: u8,
    deadline: Instant,
) -> Result<LogIndex, ClusterError> {
    let max = shared.max_frame();
    let req = WriteRequest {
        cmd: cmd.clone(),
        hops,
    };
    let io = async {
        let mut s = match shared.writes.take(addr) {
            Some(s) => s,
            None => {
                let mut s =
                    tokio::time::timeout(shared.connect_timeout(), TcpStream::connect(addr))
                        .await
                        .map_err(|_| ClusterError::Timeout(shared.cfg.connect_timeout_ms))??;
                let _ = s.set_nodelay(true);
                write_frame(&mut s, &Hello::Write, max).await?;
                s
            }
        };
        write_frame(&mut s, &req, max).await?;
        let WriteResponse(r) = read_frame(&mut s, max).await?;
        shared.writes.give(addr, s);
        r.map_err(ClusterError::NoLeader)
    };
    tokio::time::timeout_at(deadline, io)
        .await
        .map_err(|_| ClusterError::Timeout(shared.cfg.write_timeout_ms))?
}

/// Builds a [`ClusterStatus`] from the shared state.
pub(crate) fn status(shared: &Shared) -> ClusterStatus {
    let c = &shared.counters;
    let (applied, members, route_rows, retained, retained_bytes) = {
        let g = shared.hub.lock();
        let s = g.replica.state();
        (
            g.replica.applied(),
            s.members().len() as u64,
            s.route_rows() as u64,
            s.retained_count() as u64,
            s.retained_bytes(),
        )
    };
    let mut st = ClusterStatus {
        node_id: shared.id,
        node_name: shared.cfg.node_name.clone(),
        role: shared.cfg.role,
        raft_term: None,
        raft_leader: None,
        raft_state: None,
        formed_group: Counters::get(&c.formed) > 0,
        raft_snapshot_index: None,
        raft_purged_index: None,
        raft_durable: false,
        raft_fsyncs: 0,
        raft_disk_writes: 0,
        raft_write_batch_full: 0,
        raft_storage_errors: 0,
        raft_voters: Vec::new(),
        raft_peer_lag: Vec::new(),
        stream_state: StreamState::from_u8(c.stream_state.load(Ordering::Relaxed)),
        upstream_core: shared
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        applied_index: applied,
        committed_index: applied,
        lag: 0,
        replicants: shared.hub.streams.load(Ordering::Relaxed),
        stream_queue_len: shared.hub.stream_queue_len(),
        apply_queue_len: Counters::get(&c.apply_queue_len),
        route_queue_len: Counters::get(&c.route_queue_len),
        route_queue_full: Counters::get(&c.route_queue_full),
        route_ops_proposed: Counters::get(&c.route_ops_proposed),
        route_entries_proposed: Counters::get(&c.route_entries_proposed),
        link_queue_len: shared.links.queued(),
        link_inflight: shared.links.inflight(),
        link_resent: Counters::get(&c.link_resent),
        link_inflight_full: Counters::get(&c.link_inflight_full),
        link_duplicates: Counters::get(&c.link_duplicates),
        link_departed_dropped: Counters::get(&c.link_departed_dropped),
        link_dropped: Counters::get(&c.link_dropped),
        link_unreachable: Counters::get(&c.link_unreachable),
        sessions_taken_over: Counters::get(&c.sessions_taken_over),
        sessions_handed_over: Counters::get(&c.sessions_handed_over),
        session_takeover_failures: Counters::get(&c.session_takeover_failures),
        sessions_dropped: Counters::get(&c.sessions_dropped),
        link_blocked: Counters::get(&c.link_blocked),
        link_lost: Counters::get(&c.link_lost),
        link_sent: Counters::get(&c.link_sent),
        link_received: Counters::get(&c.link_received),
        bootstraps: Counters::get(&c.bootstraps),
        bootstrap_time_seconds: Counters::get(&c.bootstrap_time_us) as f64 / 1e6,
        bootstrap_keys: Counters::get(&c.bootstrap_keys),
        stream_reconnects: Counters::get(&c.stream_reconnects),
        stream_cuts: Counters::get(&c.stream_cuts),
        inbound_blocked: Counters::get(&c.inbound_blocked),
        connections_refused: Counters::get(&c.connections_refused),
        autoclean_removed: Counters::get(&c.autoclean_removed),
        reasserts: Counters::get(&c.reasserts),
        members,
        route_rows,
        retained,
        retained_bytes,
        retained_queue_len: Counters::get(&c.retained_queue_len),
        retained_queue_full: Counters::get(&c.retained_queue_full),
        retained_ops_proposed: Counters::get(&c.retained_ops_proposed),
        retained_entries_proposed: Counters::get(&c.retained_entries_proposed),
        retained_over_limit: Counters::get(&c.retained_over_limit),
        retained_refused: shared.hub.retained_refused.load(Ordering::Relaxed),
        retained_expired: Counters::get(&c.retained_expired),
    };
    match &shared.core {
        Some(core) => {
            let m = core.raft.metrics().borrow().clone();
            st.raft_term = Some(m.current_term);
            st.raft_leader = m.current_leader;
            st.raft_state = Some(format!("{:?}", m.state));
            st.raft_voters = m.membership_config.membership().voter_ids().collect();
            st.raft_snapshot_index = m.snapshot.map(|l| l.index);
            st.raft_purged_index = m.purged.map(|l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            if let Some(repl) = &m.replication {
                st.raft_peer_lag = repl
                    .iter()
                    .filter(|(id, _)| **id != shared.id)
                    .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
                    .collect();
            }
            st.committed_index = core.log.committed_index().max(applied);
            if let Some(disk) = &core.disk {
                let d = &disk.stats;
                st.raft_durable = true;
                st.raft_fsyncs = Counters::get(&d.fsyncs);
                st.raft_disk_writes = Counters::get(&d.writes);
                st.raft_write_batch_full = Counters::get(&d.batch_full);
                st.raft_storage_errors = Counters::get(&d.errors);
            }
        }
        None => {
            st.committed_index = Counters::get(&c.upstream_committed).max(applied);
        }
    }
    st.lag = st.committed_index - st.applied_index;
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(i: usize, len: usize) -> RouteOp {
        RouteOp::Add {
            filter: format!("{i:0len$}"),
            node: 1,
        }
    }

    #[test]
    fn split_ops_keeps_order_and_bounds_each_part() {
        let ops: Vec<RouteOp> = (0..2500).map(|i| add(i, 8)).collect();
        let parts = split_ops(ops.clone(), 1000, usize::MAX);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        assert_eq!(parts.concat(), ops, "nothing lost or reordered");
        // 24 estimated bytes each: ten fit in 240 bytes.
        let parts = split_ops(ops.clone(), 1000, 240);
        assert!(parts.iter().all(|p| p.len() == 10 && ops_bytes(p) <= 240));
        assert_eq!(parts.concat(), ops);
        // An operation larger than the byte bound alone is a part of its own.
        let big = vec![add(1, 8), add(2, 500), add(3, 8)];
        let parts = split_ops(big, 1000, 100);
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1]);
        assert!(split_ops(Vec::new(), 0, 0).is_empty());
    }
}
