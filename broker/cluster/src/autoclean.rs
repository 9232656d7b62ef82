//! Autoclean: nodes that are gone lose their routes, and nodes that are cleaned while alive
//! put them back.
//!
//! - **Liveness** is seen by the core group only: a core is alive while it answers the
//!   leader's liveness poll (every `cluster.liveness_interval_ms`), a replicant while it
//!   streams from any core (each core answers the poll with the replicants it streams to).
//! - **Declared dead**: the leader records when it last saw each member (a member it has
//!   never seen counts from when this leader first noticed it, so a new leader never
//!   cleans early). After `cluster.autoclean_grace_ms` without a sighting, a replicant's
//!   member record and every route it owns go in one committed entry ([`Command::Leave`]);
//!   a core keeps its member record and voter seat (only `halyard ctl cluster leave`
//!   removes those) but its routes go in one entry ([`RouteOp::RemoveNode`]).
//! - **Reassert**: every node remembers the routes it proposed for itself. When it applies
//!   its own removal while it is not leaving (it was cleaned during a partition, or by an
//!   operator), it joins again and re-proposes them through the ordinary batcher, in order
//!   with its other route changes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::ClusterError;
use crate::node::Shared;
use crate::types::{Command, NodeId, RouteOp};
use crate::wire::{Hello, Liveness, read_frame, write_frame};
use crate::writes::BatchItem;

/// The replicants this core streams to now (answer to [`Hello::Liveness`]).
pub(crate) fn streaming(shared: &Shared) -> Vec<NodeId> {
    shared
        .streaming
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect()
}

/// Counts one stream to `node` while alive (several at once are possible during a switch).
pub(crate) struct StreamSeen<'a> {
    shared: &'a Shared,
    node: NodeId,
}

impl<'a> StreamSeen<'a> {
    pub fn new(shared: &'a Shared, node: NodeId) -> Self {
        let mut g = shared.streaming.lock().unwrap_or_else(|p| p.into_inner());
        *g.entry(node).or_default() += 1;
        StreamSeen { shared, node }
    }
}

impl Drop for StreamSeen<'_> {
    fn drop(&mut self) {
        let mut g = self
            .shared
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.node);
            }
        }
    }
}

async fn poll(shared: &Shared, addr: &str) -> Result<Vec<NodeId>, ClusterError> {
    let max = shared.max_frame();
    let io = async {
        let mut s = TcpStream::connect(addr).await?;
        write_frame(&mut s, &Hello::Liveness, max).await?;
        let Liveness { streaming } = read_frame(&mut s, max).await?;
        Ok::<_, ClusterError>(streaming)
    };
    tokio::time::timeout(shared.connect_timeout(), io)
        .await
        .map_err(|_| ClusterError::Timeout(shared.cfg.connect_timeout_ms))?
}

pub(crate) fn is_leader(shared: &Shared) -> bool {
    shared.core.as_ref().is_some_and(|c| {
        let m = c.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(shared.id) && m.state.is_leader()
    })
}

/// Cores: while this core leads, polls the others and cleans members unseen for
/// `cluster.autoclean_grace_ms`. Runs until the runtime stops.
pub(crate) async fn leader_task(shared: Arc<Shared>) {
    let Some(core) = &shared.core else { return };
    let every = Duration::from_millis(shared.cfg.liveness_interval_ms);
    let grace = Duration::from_millis(shared.cfg.autoclean_grace_ms);
    let mut last_seen: HashMap<NodeId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.cfg.autoclean_grace_ms == 0 || !is_leader(&shared) {
            last_seen.clear();
            continue;
        }
        let now = Instant::now();
        let voters: Vec<(NodeId, String)> = {
            let m = core.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let mut seen: BTreeSet<NodeId> = BTreeSet::from([shared.id]);
        seen.extend(streaming(&shared));
        for (id, addr) in voters.iter().filter(|(id, _)| *id != shared.id) {
            if let Ok(streams) = poll(&shared, addr).await {
                seen.insert(*id);
                seen.extend(streams);
            }
        }
        for id in &seen {
            last_seen.insert(*id, now);
        }
        // Members, and route owners without a member record (a node that never joined).
        let candidates: BTreeSet<NodeId> = {
            let g = shared.hub.lock();
            let s = g.replica.state();
            s.members().keys().copied().chain(s.owners()).collect()
        };
        let voter_ids: BTreeSet<NodeId> = voters.iter().map(|(id, _)| *id).collect();
        for id in candidates {
            let first = *last_seen.entry(id).or_insert(now);
            if now.duration_since(first) < grace {
                continue;
            }
            // A core removed from the voters is cleaned like a replicant.
            let is_core = voter_ids.contains(&id);
            let cmd = if is_core {
                if !owns_routes(&shared, id) {
                    continue;
                }
                Command::Routes(vec![RouteOp::RemoveNode(id)])
            } else {
                Command::Leave(id)
            };
            match crate::writes::submit(&shared, cmd, 0).await {
                Ok(index) => {
                    shared
                        .counters
                        .autoclean_removed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        node = id,
                        index,
                        core = is_core,
                        "autoclean: node declared dead"
                    );
                    // Seen again only when it comes back.
                    last_seen.insert(id, now);
                }
                Err(e) => tracing::debug!(node = id, error = %e, "autoclean not committed"),
            }
        }
        last_seen.retain(|_, t| now.duration_since(*t) < grace * 4 + every * 4);
    }
}

/// A core no longer among the voters (removed through joint consensus) stays removed.
fn removed_core(shared: &Shared) -> bool {
    shared.core.as_ref().is_some_and(|c| {
        let m = c.raft.metrics();
        let m = m.borrow();
        !m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == shared.id)
    })
}

fn owns_routes(shared: &Shared, id: NodeId) -> bool {
    shared.hub.lock().replica.state().owns_routes(id)
}

/// This node's own routes as it proposed them (what a reassert puts back).
#[derive(Default)]
pub(crate) struct OwnRoutes {
    filters: std::sync::Mutex<BTreeSet<String>>,
}

impl OwnRoutes {
    /// Records `ops` (those owned by `me`) and queues them for the batcher under one lock,
    /// so the batcher sees route changes in the same order as this record.
    pub fn record_and_send(
        &self,
        me: NodeId,
        ops: Vec<RouteOp>,
        reply: oneshot::Sender<Result<u64, ClusterError>>,
        tx: &mpsc::UnboundedSender<BatchItem>,
    ) -> Result<(), ClusterError> {
        let mut g = self.filters.lock().unwrap_or_else(|p| p.into_inner());
        for op in &ops {
            match op {
                RouteOp::Add { filter, node } if *node == me => {
                    g.insert(filter.clone());
                }
                RouteOp::Remove { filter, node } if *node == me => {
                    g.remove(filter);
                }
                RouteOp::RemoveNode(node) if *node == me => g.clear(),
                _ => {}
            }
        }
        tx.send(BatchItem { ops, reply })
            .map_err(|_| ClusterError::Stopped)
    }

    /// Queues an Add for every recorded filter (in `chunk`-sized items).
    fn resend(&self, shared: &Shared, tx: &mpsc::UnboundedSender<BatchItem>) {
        let g = self.filters.lock().unwrap_or_else(|p| p.into_inner());
        let all: Vec<RouteOp> = g
            .iter()
            .map(|f| RouteOp::Add {
                filter: f.clone(),
                node: shared.id,
            })
            .collect();
        // Counted before they are queued: the batcher subtracts what it takes.
        shared
            .counters
            .route_queue_len
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        for part in all.chunks(shared.cfg.route_batch_max.max(1)) {
            // Nobody waits for these replies: the reassert loop checks the state instead.
            let (reply, _) = oneshot::channel();
            let _ = tx.send(BatchItem {
                ops: part.to_vec(),
                reply,
            });
        }
    }
}

/// Every node: when this node's removal is applied while it is not leaving, join again and
/// re-propose its own routes. Runs until the runtime stops.
pub(crate) async fn reassert_task(shared: Arc<Shared>, tx: mpsc::UnboundedSender<BatchItem>) {
    loop {
        shared.hub.evicted.notified().await;
        if shared.leaving.load(Ordering::Relaxed) || removed_core(&shared) {
            continue;
        }
        tracing::warn!("this node's routes were removed by the cluster: putting them back");
        shared.counters.reasserts.fetch_add(1, Ordering::Relaxed);
        let join = Command::Join(shared.me.clone());
        loop {
            if shared.leaving.load(Ordering::Relaxed) {
                break;
            }
            match crate::writes::submit(&shared, join.clone(), 0).await {
                Ok(_) => break,
                Err(e) => tracing::debug!(error = %e, "rejoin not committed yet"),
            }
            tokio::time::sleep(shared.backoff()).await;
        }
        if shared.leaving.load(Ordering::Relaxed) {
            continue;
        }
        shared.own_routes.resend(&shared, &tx);
    }
}
