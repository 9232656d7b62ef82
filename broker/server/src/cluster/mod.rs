//! The cluster wiring: the server's narrow glue to `halyard_cluster`.
//!
//! - Routes: every local subscription filter (with its `$share/` prefix) is counted; the
//!   first subscriber of a filter marks it dirty, the last one gone marks it dirty again. A
//!   control thread (`halyard-cluster-glue`, its own compio runtime) reconciles the dirty
//!   filters against what it proposed for this node and proposes the difference in one
//!   batch; SUBACKs wait for that batch to be applied here ([`route_barrier`], when
//!   `cluster.suback_waits_for_route`).
//! - Publish: [`Cluster::dispatch`] takes the route table's plan (lock-free), sends one copy
//!   per remote node (QoS 0 without waiting, dropped and counted when the link queue is full;
//!   QoS 1/2 through an acknowledged send the publisher awaits before its PUBACK/PUBREC), and
//!   tells the local matcher which shared groups other nodes serve.
//! - Inbound: the glue thread decodes each forwarded message, matches it against the local
//!   trie limited to what the sender's plan gave this node, hands the deliveries to the I/O
//!   threads' inboxes, then drops the `Inbound` (which acknowledges it), in order.
//! - Retained: replicated through the core group; `broker.retained` mirrors what is applied
//!   here (module [`retained`]).
//!
//! It must never block an I/O thread (the data plane only reads the route table, takes a
//! short mutex on SUBSCRIBE/UNSUBSCRIBE/session end, and awaits channels), and never lets
//! `halyard_cluster` depend on the server.

pub mod admin;
pub mod ops;
pub mod retained;
pub mod session;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use halyard_cluster::{AckStart, ClusterError, ClusterNode, Dispatch, NodeId, RouteOp, SharedPick};
use halyard_codec::QoS;
use halyard_session::Message;

use crate::engine::{Broker, ThreadMsg};

/// How a PUBLISH's copies for other nodes are sent (see [`Cluster::dispatch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Nothing is awaited (every copy sent like a QoS 0 one, dropped when a queue is full).
    Unacked,
    /// QoS 1/2 copies are queued now; the wait covers their acknowledgements only, so a
    /// publisher can have many in flight.
    Now,
    /// QoS 1/2 copies are queued when the wait is first polled: used after an earlier wait
    /// of the same publisher was [`AckWait::blocked`], until it resolved, so that copies keep
    /// the publisher's order.
    Later,
}

/// A publisher's wait for the destination nodes' acknowledgements (QoS 1/2).
pub struct AckWait {
    fut: Pin<Box<dyn Future<Output = ()>>>,
    blocked: bool,
}

impl AckWait {
    /// Whether some copy is not queued yet (a full link queue, or [`Forward::Later`]): it is
    /// queued when this wait is polled, so the publisher's later copies must use
    /// [`Forward::Later`] until this resolved.
    pub fn blocked(&self) -> bool {
        self.blocked
    }
}

impl Future for AckWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.fut.as_mut().poll(cx)
    }
}

/// Counters of the wiring, shown on `/metrics` as `halyard_cluster_wiring_*`.
#[derive(Debug, Default)]
pub struct WiringStats {
    /// Copies sent to other nodes.
    pub forwarded: AtomicU64,
    /// QoS 0 copies dropped because a link queue was full or the node unknown.
    pub forward_dropped: AtomicU64,
    /// Acknowledged sends that failed or timed out (the link keeps resending).
    pub ack_failures: Arc<AtomicU64>,
    /// Forwarded messages received and handed to local sessions.
    pub inbound: AtomicU64,
    /// Forwarded messages that could not be decoded.
    pub inbound_malformed: AtomicU64,
    /// Forwarded QoS 1/2 messages for persistent sessions that the store refused (full,
    /// failed): delivered from memory only, so a crash of this node can lose them.
    pub inbound_not_stored: AtomicU64,
    /// Route batches proposed.
    pub route_batches: AtomicU64,
    /// Route proposals that failed (retried).
    pub route_failures: AtomicU64,
    /// Retained updates that were not committed and applied here in time (a QoS 1/2
    /// publisher got an error instead of success).
    pub retained_failures: Arc<AtomicU64>,
    /// Replicated retained messages this node could not decode (not served here).
    pub retained_malformed: AtomicU64,
}

/// Route bookkeeping shared by the I/O threads and the glue thread.
#[derive(Debug, Default)]
struct RouteBook {
    /// Local subscriptions per full filter.
    counts: HashMap<String, usize>,
    /// Filters whose presence changed since the glue thread last looked.
    dirty: HashSet<String>,
    /// SUBACKs waiting for the next applied batch.
    barriers: Vec<flume::Sender<()>>,
}

/// The running cluster wiring of this node.
pub struct Cluster {
    pub(crate) node: Arc<ClusterNode>,
    id: NodeId,
    book: Mutex<RouteBook>,
    wake: flume::Sender<()>,
    wake_rx: flume::Receiver<()>,
    suback_waits: bool,
    /// The wiring's counters.
    pub stats: WiringStats,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where a forwarded or local publish may deliver (see [`Cluster::dispatch`]).
#[derive(Debug)]
pub enum Scope<'a> {
    /// Everything local (no cluster).
    All,
    /// A local publish: every ordinary subscriber; shared groups except those the plan gave
    /// to another node.
    Publisher {
        /// Groups served elsewhere for this message.
        elsewhere: &'a [SharedPick],
    },
    /// A forwarded message: ordinary subscribers if `ordinary`, and only `groups`.
    Inbound {
        /// Serve the ordinary subscribers.
        ordinary: bool,
        /// The shared groups to serve.
        groups: &'a [SharedPick],
    },
}

impl Scope<'_> {
    /// Whether ordinary subscribers get the message.
    pub fn ordinary(&self) -> bool {
        match self {
            Scope::All | Scope::Publisher { .. } => true,
            Scope::Inbound { ordinary, .. } => *ordinary,
        }
    }

    /// Whether the shared group `group` on `filter` is served here.
    pub fn serves_group(&self, group: &str, filter: &str) -> bool {
        let is = |p: &SharedPick| p.group == group && p.filter == filter;
        match self {
            Scope::All => true,
            Scope::Publisher { elsewhere } => !elsewhere.iter().any(is),
            Scope::Inbound { groups, .. } => groups.iter().any(is),
        }
    }
}

fn lock(m: &Mutex<RouteBook>) -> MutexGuard<'_, RouteBook> {
    // Every update of the book is a few map operations that cannot leave it inconsistent,
    // so a panic elsewhere while holding the lock does not poison its meaning.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Wraps a started node.
    pub fn new(node: ClusterNode, suback_waits: bool) -> Arc<Self> {
        let (wake, wake_rx) = flume::bounded(1);
        Arc::new(Cluster {
            id: node.id(),
            node: Arc::new(node),
            book: Mutex::new(RouteBook::default()),
            wake,
            wake_rx,
            suback_waits,
            stats: WiringStats::default(),
        })
    }

    /// The cluster node.
    pub fn node(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    fn mark(&self, book: &mut RouteBook, filter: &str) {
        book.dirty.insert(filter.to_string());
        let _ = self.wake.try_send(());
    }

    /// A local subscription to `filter` (full, with any `$share/` prefix) was added.
    pub fn subscribed(&self, filter: &str) {
        let mut book = lock(&self.book);
        let n = book.counts.entry(filter.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.mark(&mut book, filter);
        }
    }

    /// A local subscription to `filter` was removed.
    pub fn unsubscribed(&self, filter: &str) {
        let mut book = lock(&self.book);
        let gone = match book.counts.get_mut(filter) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                book.counts.remove(filter);
                true
            }
            None => false,
        };
        if gone {
            self.mark(&mut book, filter);
        }
    }

    /// A wait that resolves once the route changes made so far are applied on this node
    /// (`None` when `cluster.suback_waits_for_route` is off).
    pub fn barrier(&self) -> Option<flume::Receiver<()>> {
        if !self.suback_waits {
            return None;
        }
        let (tx, rx) = flume::bounded(1);
        let mut book = lock(&self.book);
        book.barriers.push(tx);
        let _ = self.wake.try_send(());
        Some(rx)
    }

    /// Plans `message` over the cluster: sends one copy to every other node with matching
    /// routes and returns the shared groups served elsewhere (for the local [`Scope`]) and,
    /// for a QoS 1/2 message forwarded [`Forward::Now`] or [`Forward::Later`], the wait for
    /// the destinations' acks.
    pub fn dispatch(&self, message: &Message, mode: Forward) -> (Vec<SharedPick>, Option<AckWait>) {
        let mut plan: Vec<Dispatch> = Vec::new();
        self.node.routes().plan(&message.topic, &mut plan);
        let mut elsewhere = Vec::new();
        if plan.iter().all(|d| d.node == self.id) {
            return (elsewhere, None);
        }
        let clock = wire::wall_clock();
        let reliable = mode != Forward::Unacked && message.qos != QoS::AtMostOnce;
        let mut pending = Vec::new();
        for d in plan {
            if d.node == self.id {
                continue;
            }
            let bytes = wire::encode(message, d.ordinary, &d.groups, &clock);
            elsewhere.extend(d.groups);
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            if reliable {
                pending.push((d.node, bytes));
            } else if self.node.send(d.node, bytes).is_err() {
                self.stats.forward_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let wait = (!pending.is_empty()).then(|| self.ack_wait(pending, mode == Forward::Now));
        (elsewhere, wait)
    }

    /// The wait for the acknowledgements of `pending` copies; with `now`, each is queued at
    /// once where its link queue has room (the others when the wait is polled).
    fn ack_wait(&self, pending: Vec<(NodeId, bytes::Bytes)>, now: bool) -> AckWait {
        type Send = Pin<Box<dyn Future<Output = Result<(), ClusterError>>>>;
        let node = &self.node;
        let ms = node.config().link_ack_timeout_ms;
        let mut blocked = false;
        let mut later = |n: NodeId, bytes: bytes::Bytes| -> Send {
            blocked = true;
            let node = node.clone();
            Box::pin(async move { node.send_acked(n, bytes).await })
        };
        let sends: Vec<Send> = pending
            .into_iter()
            .map(|(n, bytes)| {
                if !now {
                    return later(n, bytes);
                }
                match node.send_acked_now(n, bytes) {
                    Ok(AckStart::Queued(rx)) => Box::pin(async move {
                        match compio::time::timeout(Duration::from_millis(ms), rx).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(_)) => Err(ClusterError::Stopped),
                            Err(_) => Err(ClusterError::Timeout(ms)),
                        }
                    }) as Send,
                    Ok(AckStart::Full(bytes)) => later(n, bytes),
                    Err(e) => Box::pin(std::future::ready(Err(e))),
                }
            })
            .collect();
        let failures = self.stats.ack_failures.clone();
        let fut = Box::pin(async move {
            for r in futures_util::future::join_all(sends).await {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "forwarded message not acknowledged");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        AckWait { fut, blocked }
    }
}

/// Starts the cluster node of `config` (when `cluster.seeds` is set) and its glue thread,
/// and attaches it to `broker`. Call before the I/O threads start.
pub fn start(broker: &Arc<Broker>) -> Result<(), StartError> {
    let config = &broker.config;
    if !config.cluster.enabled() {
        return Ok(());
    }
    let node_cfg = config
        .cluster_node_config()
        .map_err(|e| StartError(e.to_string()))?;
    if let Some(dir) = &node_cfg.data_dir {
        std::fs::create_dir_all(dir).map_err(|e| StartError(format!("{}: {e}", dir.display())))?;
    }
    let node = ClusterNode::start(node_cfg).map_err(|e| StartError(e.to_string()))?;
    let inbound = node
        .take_inbound()
        .ok_or_else(|| StartError("inbound receiver already taken".into()))?;
    let cluster = Cluster::new(node, config.cluster.suback_waits_for_route);
    let _ = broker.cluster.set(cluster.clone());
    retained::attach(broker, &cluster);
    cluster.node.set_session_source(Arc::new(session::Sessions {
        broker: Arc::downgrade(broker),
    }));
    let _ = broker.metrics.cluster.set(cluster.clone());
    let b = broker.clone();
    std::thread::Builder::new()
        .name("halyard-cluster-glue".into())
        .spawn(move || glue_thread(b, cluster, inbound))
        .map_err(|e| StartError(e.to_string()))?;
    Ok(())
}

/// The cluster could not start (the message names the cause).
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct StartError(pub String);

fn glue_thread(
    broker: Arc<Broker>,
    cluster: Arc<Cluster>,
    inbound: tokio_mpsc::Receiver<halyard_cluster::Inbound>,
) {
    let rt = match crate::io::build_runtime(crate::config::Backend::Epoll, 64) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cluster glue thread failed to start");
            return;
        }
    };
    rt.block_on(async move {
        let routes = compio::runtime::spawn(route_loop(cluster.clone()));
        inbound_loop(&broker, &cluster, inbound).await;
        drop(routes);
    });
}

use tokio::sync::mpsc as tokio_mpsc;

/// Most route operations the glue proposes in one call (each call is queued whole in the
/// cluster's route queue, `cluster.route_queue_max`, which also caps it at half its size).
const ROUTE_PROPOSAL_MAX: usize = 10_000;

/// Reconciles dirty filters with the cluster and releases SUBACK barriers (also after a
/// failed proposal, which is retried in the background: a SUBACK is not held up for longer
/// than one `cluster.write_timeout_ms` by an unavailable core group).
///
/// A proposal that failed (a timeout, a leader change) may still commit later, after this
/// loop has moved on. Its filters are therefore *uncertain*: their next proposal states the
/// wanted state whatever this node believes it proposed (Add and Remove are idempotent in the
/// state machine), so a late commit of the failed entry is overwritten by an entry that Raft
/// orders after it, and no route is left behind or missing.
async fn route_loop(cluster: Arc<Cluster>) {
    let mut proposed: HashSet<String> = HashSet::new();
    let mut uncertain: HashSet<String> = HashSet::new();
    loop {
        if cluster.wake_rx.recv_async().await.is_err() {
            return;
        }
        let (ops, barriers) = {
            let mut book = lock(&cluster.book);
            let dirty = std::mem::take(&mut book.dirty);
            let barriers = std::mem::take(&mut book.barriers);
            let mut ops = Vec::new();
            for f in dirty {
                let want = book.counts.contains_key(&f);
                let unsure = uncertain.contains(&f);
                if want && (unsure || !proposed.contains(&f)) {
                    ops.push(RouteOp::Add {
                        filter: f,
                        node: cluster.id,
                    });
                } else if !want && (unsure || proposed.contains(&f)) {
                    ops.push(RouteOp::Remove {
                        filter: f,
                        node: cluster.id,
                    });
                }
            }
            (ops, barriers)
        };
        if ops.is_empty() {
            for b in barriers {
                let _ = b.send(());
            }
            continue;
        }
        // A node with many subscriptions (a reconnecting fleet, a restarted node) can have
        // more dirty filters than the cluster's route queue holds: propose them in parts
        // that always fit, one after the other.
        let part_max = (cluster.node.config().route_queue_max / 2).clamp(1, ROUTE_PROPOSAL_MAX);
        let parts: Vec<&[RouteOp]> = ops.chunks(part_max).collect();
        for (n, part) in parts.iter().enumerate() {
            cluster.stats.route_batches.fetch_add(1, Ordering::Relaxed);
            let result = match cluster.node.propose_routes(part.to_vec()).await {
                Ok(i) => cluster.node.wait_applied(i).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                cluster.stats.route_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "route proposal failed; retrying");
                {
                    let mut book = lock(&cluster.book);
                    for op in parts[n..].iter().flat_map(|p| p.iter()) {
                        match op {
                            RouteOp::Add { filter, .. } | RouteOp::Remove { filter, .. } => {
                                book.dirty.insert(filter.clone());
                                uncertain.insert(filter.clone());
                            }
                            RouteOp::RemoveNode(_) => {}
                        }
                    }
                }
                compio::time::sleep(Duration::from_millis(200)).await;
                let _ = cluster.wake.try_send(());
                break;
            }
            for op in *part {
                match op {
                    RouteOp::Add { filter, .. } => {
                        uncertain.remove(filter);
                        proposed.insert(filter.clone());
                    }
                    RouteOp::Remove { filter, .. } => {
                        uncertain.remove(filter);
                        proposed.remove(filter);
                    }
                    RouteOp::RemoveNode(_) => {}
                }
            }
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

/// Most forwarded messages taken from the inbound queue at once: their store writes go into
/// one group commit.
const INBOUND_BATCH_MAX: usize = 256;

/// A forwarded message on its way to the local sessions.
struct InboundStep {
    msg: halyard_cluster::Inbound,
    routed: Vec<crate::engine::Routed>,
    /// The store commit of its deliveries to persistent sessions (store on).
    pending: Option<crate::durable::Pending>,
}

/// Delivers forwarded messages in order; dropping each `Inbound` acknowledges it (and every
/// earlier one of its link) to the sender, which then acknowledges the publisher. With the
/// store on, QoS 1/2 deliveries to persistent sessions are stored first, as for a local
/// publisher: the acknowledgement means the message is durable on this node too. Messages
/// waiting in the queue are taken together (up to [`INBOUND_BATCH_MAX`]) so that their
/// writes share a commit.
async fn inbound_loop(
    broker: &Arc<Broker>,
    cluster: &Cluster,
    mut inbound: tokio_mpsc::Receiver<halyard_cluster::Inbound>,
) {
    let mut batch = Vec::with_capacity(INBOUND_BATCH_MAX);
    while let Some(first) = inbound.recv().await {
        batch.push(first);
        while batch.len() < INBOUND_BATCH_MAX {
            match inbound.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let clock = wire::wall_clock();
        let store_clock = crate::durable::wall_clock(std::time::Instant::now());
        let mut steps = Vec::with_capacity(batch.len());
        for msg in batch.drain(..) {
            let fwd = match wire::decode(msg.message.clone(), &clock) {
                Ok(f) => f,
                Err(e) => {
                    cluster
                        .stats
                        .inbound_malformed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(from = msg.from, error = %e, "forwarded message dropped");
                    // Kept in line: dropping it acknowledges the earlier ones too.
                    steps.push(InboundStep {
                        msg,
                        routed: Vec::new(),
                        pending: None,
                    });
                    continue;
                }
            };
            let scope = Scope::Inbound {
                ordinary: fwd.ordinary,
                groups: &fwd.groups,
            };
            let mut routed = Vec::new();
            crate::engine::publish::route_scoped(
                broker,
                &fwd.message,
                &mut routed,
                &scope,
                crate::engine::publish::Keep::Subscriber,
            );
            let pending = broker.durable.is_enabled().then(|| {
                let targets = crate::engine::publish::durable_targets(&routed);
                // Retained messages are replicated by the core group, not stored from here.
                let unretained;
                let message: &Message = if fwd.message.retain {
                    unretained = Message {
                        retain: false,
                        ..(*fwd.message).clone()
                    };
                    &unretained
                } else {
                    &fwd.message
                };
                broker
                    .durable
                    .persist_publish_from(message, &targets, None, &store_clock)
            });
            steps.push(InboundStep {
                msg,
                routed,
                pending,
            });
        }
        // One batch per destination thread for all of them (in order), then the
        // acknowledgements.
        let mut per_thread: HashMap<usize, Vec<crate::engine::Routed>> = HashMap::new();
        let mut done = Vec::with_capacity(steps.len());
        for step in steps {
            let InboundStep {
                msg,
                mut routed,
                pending,
            } = step;
            if let Some(pending) = pending {
                match pending.await {
                    Ok(committed) => {
                        crate::engine::publish::apply_seqs(&mut routed, committed.seqs)
                    }
                    Err(e) => {
                        cluster
                            .stats
                            .inbound_not_stored
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(from = msg.from, error = %e, "forwarded message not stored; delivered from memory");
                    }
                }
            }
            for r in routed {
                per_thread.entry(r.thread()).or_default().push(r);
            }
            done.push(msg);
        }
        for (t, mut batch) in per_thread {
            if let Some(tx) = broker.inboxes.get(t) {
                crate::engine::hand_over(&mut batch);
                let _ = tx.send_async(ThreadMsg::Deliver(batch)).await;
            }
        }
        cluster
            .stats
            .inbound
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        // In order: each drop acknowledges its link's messages up to it.
        for msg in done {
            drop(msg);
        }
    }
}

/// Hook: a local subscription to `filter` was added (no-op without a cluster).
pub fn subscribed(broker: &Broker, filter: &str) {
    if let Some(c) = broker.cluster.get() {
        c.subscribed(filter);
    }
}

/// Hook: a local subscription to `filter` was removed (no-op without a cluster).
pub fn unsubscribed(broker: &Broker, filter: &str) {
    if let Some(c) = broker.cluster.get() {
        c.unsubscribed(filter);
    }
}

/// Hook for SUBACK: waits until this node's route changes so far are applied locally.
pub async fn route_barrier(broker: &Broker) {
    if let Some(rx) = broker.cluster.get().and_then(|c| c.barrier()) {
        let _ = rx.recv_async().await;
    }
}

/// Graceful departure on SIGTERM/SIGINT: a replicant leaves the cluster (its member record
/// and routes are removed in one committed entry), bounded by two seconds. Cores stay
/// members (a restarted core recovers from its Raft log).
pub fn depart(cluster: &Arc<Cluster>) {
    if cluster.node.status().role != halyard_cluster::NodeRole::Replicant {
        return;
    }
    let node = cluster.node.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("halyard-cluster-leave".into())
        .spawn(move || {
            if let Ok(rt) = crate::io::build_runtime(crate::config::Backend::Epoll, 8) {
                let r = rt.block_on(async move { node.leave().await });
                let _ = tx.send(r);
            }
        });
    if spawned.is_ok() {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(Ok(i)) => tracing::info!(index = i, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "leaving the cluster failed"),
            Err(_) => tracing::warn!("leaving the cluster timed out"),
        }
    }
}
