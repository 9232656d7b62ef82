//! [`ClusterNode`]: starts the control plane on its own thread and tokio runtime and is the
//! handle the server calls.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use openraft::BasicNode;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::ClusterConfig;
use crate::discovery::{Discovery, StaticSeeds};
use crate::error::ClusterError;
use crate::hub::Hub;
use crate::links::{Inbound, Links};
use crate::raft::{Disk, LogStore, NetworkFactory, Raft, StateMachine, raft_config};
use crate::state::{RetainedSink, RouteTable, valid_route_filter};
use crate::status::{ClusterStatus, Counters, StreamState};
use crate::types::{
    Command, LogIndex, Member, NodeId, NodeRole, RetainedOp, RouteOp, node_id_for_name,
};
use crate::wire::{Hello, Identity, read_frame, write_frame};
use crate::writes::{BatchItem, WritePool};

/// The Raft parts of a core.
pub(crate) struct Core {
    pub raft: Raft,
    pub log: LogStore,
    /// The Raft file's writer (cores with `cluster.data_dir`).
    pub disk: Option<Disk>,
}

/// State shared by the handle and every control-plane task.
pub(crate) struct Shared {
    pub cfg: ClusterConfig,
    pub id: NodeId,
    pub me: Member,
    pub hub: Arc<Hub>,
    pub routes: Arc<RouteTable>,
    pub core: Option<Core>,
    pub counters: Counters,
    pub links: Links,
    pub writes: WritePool,
    pub upstream: std::sync::Mutex<Option<String>>,
    pub discovery: Arc<dyn Discovery>,
    pub rt: tokio::runtime::Handle,
    /// Cores: replicants streaming from this core now, with their stream count.
    pub streaming: std::sync::Mutex<std::collections::HashMap<NodeId, u32>>,
    /// Set by [`ClusterNode::leave`]: this node's removal is expected, do not reassert.
    pub leaving: std::sync::atomic::AtomicBool,
    /// The routes this node proposed for itself.
    pub own_routes: crate::autoclean::OwnRoutes,
    /// The server's sessions, for [`ClusterNode::take_session`] asked by other nodes.
    pub session_source: std::sync::OnceLock<Arc<dyn SessionSource>>,
    /// Idle connections for session takeover requests, by member address.
    pub session_conns: WritePool,
    /// Members whose cluster port did not accept a connection, skipped by session takeovers
    /// until the time given (`cluster.write_timeout_ms` after the failure).
    pub session_down: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// The server's side of moving persistent sessions between nodes (a client that reconnects
/// to another node gets its session back): hands a local session over, encoded by the server.
pub trait SessionSource: Send + Sync + 'static {
    /// Takes this node's session of `client_id` away from it: disconnects its connection
    /// (0x8E Session taken over), removes its subscriptions and stored state here, and
    /// returns it encoded; with `discard` (the client connected elsewhere with Clean Start)
    /// ends it and returns `None`. `None` when there is no such session.
    fn take(
        &self,
        client_id: String,
        discard: bool,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;
}

impl Shared {
    pub fn max_frame(&self) -> usize {
        self.cfg.max_frame_bytes
    }

    pub fn set_stream_state(&self, s: StreamState) {
        self.counters
            .stream_state
            .store(s.as_u8(), Ordering::Relaxed);
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.connect_timeout_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.cfg.heartbeat_interval_ms)
    }

    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.cfg.reconnect_backoff_ms)
    }

    /// The cluster address of `node` from the member table.
    pub fn member_addr(&self, node: NodeId) -> Option<String> {
        let g = self.hub.lock();
        g.replica
            .state()
            .members()
            .get(&node)
            .map(|m| m.cluster_addr.clone())
    }
}

/// What [`ClusterNode::send_acked_now`] did with a message.
#[derive(Debug)]
pub enum AckStart {
    /// Queued; the receiver completes when the destination acknowledged it (an error if the
    /// link gave it up, e.g. the node left).
    Queued(oneshot::Receiver<()>),
    /// The link queue was full; the message is handed back.
    Full(Bytes),
}

/// A running cluster node. Dropping it (or [`ClusterNode::shutdown`]) stops the control
/// plane at once: its runtime and every socket are dropped, as if the process died.
pub struct ClusterNode {
    shared: Arc<Shared>,
    batch_tx: mpsc::UnboundedSender<BatchItem>,
    retained_tx: mpsc::UnboundedSender<BatchItem<RetainedOp>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.shared.id)
            .field("name", &self.shared.cfg.node_name)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// Validates `cfg`, binds `cluster.listen` and starts the control plane on a new thread
    /// (`halyard-cluster`) with its own tokio runtime. Returns once the listener is bound and
    /// (on cores) the Raft node is created; forming, joining and streaming go on in the
    /// background (watch [`ClusterNode::status`]).
    pub fn start(cfg: ClusterConfig) -> Result<ClusterNode, ClusterError> {
        let seeds = StaticSeeds(cfg.seeds.clone());
        Self::start_with_discovery(cfg, Arc::new(seeds))
    }

    /// [`ClusterNode::start`] with another source of core addresses than `cluster.seeds`
    /// (which must still be non-empty for validation; it is not used).
    pub fn start_with_discovery(
        cfg: ClusterConfig,
        discovery: Arc<dyn Discovery>,
    ) -> Result<ClusterNode, ClusterError> {
        cfg.validate()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("halyard-cluster".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ClusterError::Io(e)));
                        return;
                    }
                };
                let disk = rt.block_on(async move {
                    match boot(cfg, discovery).await {
                        Ok(parts) => {
                            let disk = parts.0.core.as_ref().and_then(|c| c.disk.clone());
                            let _ = ready_tx.send(Ok(parts));
                            // Runs until the handle is dropped or shut down.
                            let _ = stop_rx.await;
                            disk
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            None
                        }
                    }
                });
                // Dropping the runtime cancels every task and closes every socket.
                drop(rt);
                // Then the Raft file: what was queued is written and the file is released,
                // so the node can be started again on the same directory at once.
                if let Some(disk) = disk {
                    disk.close();
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok((shared, batch_tx, retained_tx))) => Ok(ClusterNode {
                shared,
                batch_tx,
                retained_tx,
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(ClusterError::Stopped)
            }
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The route table the data plane matches against (lock-free reads).
    pub fn routes(&self) -> Arc<RouteTable> {
        self.shared.routes.clone()
    }

    /// Queues route operations for the next batch (about `route_batch_interval_ms` or
    /// `route_batch_max` operations per log entry) and resolves to the log index of the last
    /// entry that committed them. A long list is split into entry-sized parts (at most
    /// `route_batch_max` operations and a quarter of `max_frame_bytes` each), so one call
    /// never makes an entry that would hold up the control plane or overflow a frame; the
    /// parts commit in order. Works on cores (forwarded to the leader if needed) and
    /// replicants (sent to a core). The future needs no particular runtime. Fails fast with
    /// [`ClusterError::InvalidFilter`], [`ClusterError::FrameTooLarge`] (one operation larger
    /// than an entry) or [`ClusterError::QueueFull`] (more than `route_queue_max` operations
    /// waiting, this call's included); otherwise resolves within `cluster.write_timeout_ms`
    /// per part.
    pub async fn propose_routes(&self, ops: Vec<RouteOp>) -> Result<LogIndex, ClusterError> {
        for op in &ops {
            if let RouteOp::Add { filter, .. } = op
                && !valid_route_filter(filter)
            {
                return Err(ClusterError::InvalidFilter(filter.clone()));
            }
        }
        if ops.is_empty() {
            return Ok(self.shared.hub.applied());
        }
        let max = crate::writes::max_entry_bytes(&self.shared.cfg);
        if let Some(len) = ops
            .iter()
            .map(|op| crate::writes::ops_bytes(std::slice::from_ref(op)))
            .find(|&len| len > max)
        {
            return Err(ClusterError::FrameTooLarge { len, max });
        }
        let n = ops.len() as u64;
        let c = &self.shared.counters;
        let queued = c.route_queue_len.fetch_add(n, Ordering::Relaxed);
        if queued + n > self.shared.cfg.route_queue_max as u64 {
            c.route_queue_len.fetch_sub(n, Ordering::Relaxed);
            c.route_queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(ClusterError::QueueFull);
        }
        let parts = crate::writes::split_ops(ops, self.shared.cfg.route_batch_max, max);
        let mut replies = Vec::with_capacity(parts.len());
        let mut unsent = n;
        for part in parts {
            let len = part.len() as u64;
            let (reply, rx) = oneshot::channel();
            let sent =
                self.shared
                    .own_routes
                    .record_and_send(self.shared.id, part, reply, &self.batch_tx);
            if let Err(e) = sent {
                c.route_queue_len.fetch_sub(unsent, Ordering::Relaxed);
                return Err(e);
            }
            unsent -= len;
            replies.push(rx);
        }
        let mut last = 0;
        for rx in replies {
            last = last.max(rx.await.map_err(|_| ClusterError::Stopped)??);
        }
        Ok(last)
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.cfg
    }

    /// Queues a retained-message change for the next batch (as [`ClusterNode::propose_routes`]
    /// does for routes) before it returns, so this node's changes commit in the order of the
    /// calls; the future resolves to the log index of the entry that committed it (it needs
    /// no particular runtime, and dropping it does not withdraw the change); await
    /// [`ClusterNode::wait_applied`] for this node's [`RetainedSink`] to have it. Fails at
    /// once with [`ClusterError::RetainedFull`] when a `Set` for a new topic would pass
    /// `cluster.retained_max_messages` or `cluster.retained_max_bytes` as applied here, or
    /// is larger than one log entry (counted in `retained_over_limit`), and with
    /// [`ClusterError::QueueFull`] (counted); otherwise resolves within
    /// `cluster.write_timeout_ms`. A `Set` may still be refused when applied if other nodes
    /// filled the cap meanwhile (counted in `retained_refused` on every node).
    pub fn propose_retained(
        &self,
        op: RetainedOp,
    ) -> Result<impl Future<Output = Result<LogIndex, ClusterError>> + Send + 'static, ClusterError>
    {
        let c = &self.shared.counters;
        if let Err(e) = crate::retained::check(&self.shared, &op) {
            c.retained_over_limit.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        let queued = c.retained_queue_len.fetch_add(1, Ordering::Relaxed);
        if queued + 1 > self.shared.cfg.retained_queue_max as u64 {
            c.retained_queue_len.fetch_sub(1, Ordering::Relaxed);
            c.retained_queue_full.fetch_add(1, Ordering::Relaxed);
            return Err(ClusterError::QueueFull);
        }
        let (reply, rx) = oneshot::channel();
        let item = BatchItem {
            ops: vec![op],
            reply,
        };
        if self.retained_tx.send(item).is_err() {
            c.retained_queue_len.fetch_sub(1, Ordering::Relaxed);
            return Err(ClusterError::Stopped);
        }
        Ok(async move { rx.await.map_err(|_| ClusterError::Stopped)? })
    }

    /// Hands every retained message applied on this node to `sink`: at once the ones
    /// applied so far, then each change as it is applied (from the Raft state machine on
    /// cores, the stream on replicants, including snapshots). Call once, before serving.
    pub fn set_retained_sink(&self, sink: Arc<dyn RetainedSink>) {
        self.shared.hub.set_retained_sink(sink);
    }

    /// Removes this node from the cluster: its member record and every route row it owns
    /// (graceful departure, e.g. on SIGTERM). Resolves to the log index of the removal.
    pub async fn leave(&self) -> Result<LogIndex, ClusterError> {
        self.shared.leaving.store(true, Ordering::Relaxed);
        let shared = self.shared.clone();
        let cmd = Command::Leave(shared.id);
        let task = self
            .shared
            .rt
            .spawn(async move { crate::writes::submit(&shared, cmd, 0).await });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Cores, called on the leader: adds the core listening at `addr` to the voters (first
    /// as a learner that catches up, then through openraft's joint consensus). The new core
    /// must run with this cluster's `initial_cores` and not be first in them, so it waits to
    /// be added instead of forming a group. Resolves to the index of the new membership.
    pub async fn add_core(&self, addr: String) -> Result<LogIndex, ClusterError> {
        let shared = self.shared.clone();
        let task = self.shared.rt.spawn(async move {
            let core = shared
                .core
                .as_ref()
                .ok_or(ClusterError::Protocol("not a core".into()))?;
            let who = identify(&shared, &addr).await?;
            if who.role != NodeRole::Core {
                return Err(ClusterError::Protocol(format!(
                    "{} is not a core",
                    who.name
                )));
            }
            core.raft
                .add_learner(who.id, BasicNode::new(who.addr), true)
                .await
                .map_err(membership_error)?;
            let ids = std::collections::BTreeSet::from([who.id]);
            let r = core
                .raft
                .change_membership(openraft::ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(membership_error)?;
            Ok(r.log_id.index)
        });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Cores, called on the leader: removes core `id` from the group (joint consensus); it
    /// stops receiving the log. Then its member record and every route it owns are removed
    /// in one committed entry. Resolves to the index of that entry.
    pub async fn remove_core(&self, id: NodeId) -> Result<LogIndex, ClusterError> {
        let shared = self.shared.clone();
        let task = self.shared.rt.spawn(async move {
            let core = shared
                .core
                .as_ref()
                .ok_or(ClusterError::Protocol("not a core".into()))?;
            let ids = std::collections::BTreeSet::from([id]);
            core.raft
                .change_membership(openraft::ChangeMembers::RemoveVoters(ids), false)
                .await
                .map_err(membership_error)?;
            crate::writes::submit(&shared, Command::Leave(id), 0).await
        });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Removes node `id`'s member record and every route it owns in one committed entry
    /// (`halyard ctl cluster evict`: a node known to be gone for good). A node evicted
    /// while it is still running joins again and re-proposes its routes. Cores stay voters
    /// (use [`ClusterNode::remove_core`]). Works on any node; resolves to the entry's index.
    pub async fn evict(&self, id: NodeId) -> Result<LogIndex, ClusterError> {
        let shared = self.shared.clone();
        let task = self
            .shared
            .rt
            .spawn(async move { crate::writes::submit(&shared, Command::Leave(id), 0).await });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Resolves once this node applied `index` (read-your-writes after
    /// [`ClusterNode::propose_routes`]), or fails after `cluster.write_timeout_ms`.
    pub async fn wait_applied(&self, index: LogIndex) -> Result<(), ClusterError> {
        let mut watch = self.shared.hub.applied_watch();
        let bound = self.shared.cfg.write_timeout_ms;
        let task = self.shared.rt.spawn(async move {
            let wait = watch.wait_for(|v| *v >= index);
            match tokio::time::timeout(Duration::from_millis(bound), wait).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(ClusterError::Stopped),
                Err(_) => Err(ClusterError::NotApplied(index)),
            }
        });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Queues `message` for `node` without waiting: one copy per call. Fails with
    /// [`ClusterError::QueueFull`] (counted in `link_dropped`) when that node's link queue
    /// is full, [`ClusterError::UnknownNode`] when no member record names its address.
    /// Messages to one node keep the order of the calls.
    pub fn send(&self, node: NodeId, message: Bytes) -> Result<(), ClusterError> {
        self.shared.links.send(&self.shared, node, message)
    }

    /// Like [`ClusterNode::send`] but waits for queue space (back-pressure; counted in
    /// `link_blocked` when it had to wait). Needs no particular runtime.
    pub async fn send_wait(&self, node: NodeId, message: Bytes) -> Result<(), ClusterError> {
        self.shared
            .links
            .send_wait(&self.shared, node, message, false)
            .await
            .map(|_| ())
    }

    /// Like [`ClusterNode::send_wait`], then waits until `node` acknowledged the message,
    /// i.e. its server handed it to its local sessions and dropped the [`Inbound`]: the
    /// publisher may then acknowledge a QoS 1/2 PUBLISH. Fails with
    /// [`ClusterError::Timeout`] after `cluster.link_ack_timeout_ms` (the message may still
    /// arrive later: the link keeps resending it until acknowledged). Needs no particular
    /// runtime.
    ///
    /// When the link to `node` has been down for `link_ack_timeout_ms` already (a dead node
    /// whose routes autoclean has not removed yet, or a core being restarted), it does not
    /// wait: the message is queued if there is room (sent if the node comes back; else
    /// dropped and counted in `link_dropped`) and [`ClusterError::Unreachable`] returned at
    /// once, so one dead node does not hold every QoS 1/2 publisher for the timeout.
    pub async fn send_acked(&self, node: NodeId, message: Bytes) -> Result<(), ClusterError> {
        let message = self.unless_unreachable(node, message)?;
        let ms = self.shared.cfg.link_ack_timeout_ms;
        let rx = self
            .shared
            .links
            .send_wait(&self.shared, node, message, true)
            .await?
            .ok_or(ClusterError::Stopped)?;
        let task = self.shared.rt.spawn(async move {
            match tokio::time::timeout(Duration::from_millis(ms), rx).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(ClusterError::Stopped),
                Err(_) => Err(ClusterError::Timeout(ms)),
            }
        });
        task.await.map_err(|_| ClusterError::Stopped)?
    }

    /// Like [`ClusterNode::send_acked`], but queues the message at once, without waiting,
    /// so that a publisher can have many messages in flight: [`AckStart::Queued`] holds the
    /// receiver that completes when `node` acknowledged it (the caller bounds the wait by
    /// `cluster.link_ack_timeout_ms`; it fails if the link gives the message up). When the
    /// link queue is full the message comes back in [`AckStart::Full`]: send it with
    /// [`ClusterNode::send_acked`], and queue this publisher's later messages to the same
    /// nodes only after it, to keep their order. An unreachable node is handled as in
    /// `send_acked`.
    pub fn send_acked_now(&self, node: NodeId, message: Bytes) -> Result<AckStart, ClusterError> {
        let message = self.unless_unreachable(node, message)?;
        Ok(
            match self
                .shared
                .links
                .try_send_acked(&self.shared, node, message)?
            {
                Ok(rx) => AckStart::Queued(rx),
                Err(message) => {
                    self.shared
                        .counters
                        .link_blocked
                        .fetch_add(1, Ordering::Relaxed);
                    AckStart::Full(message)
                }
            },
        )
    }

    /// Gives `message` back unless the link to `node` has been down for
    /// `cluster.link_ack_timeout_ms`; then queues it without waiting (dropped and counted
    /// when the queue is full), counts it in `link_unreachable` and fails with
    /// [`ClusterError::Unreachable`].
    fn unless_unreachable(&self, node: NodeId, message: Bytes) -> Result<Bytes, ClusterError> {
        let after = Duration::from_millis(self.shared.cfg.link_ack_timeout_ms);
        if !self.shared.links.unreachable(node, after) {
            return Ok(message);
        }
        self.shared
            .counters
            .link_unreachable
            .fetch_add(1, Ordering::Relaxed);
        self.send(node, message)?;
        Err(ClusterError::Unreachable(node))
    }

    /// Drops every outgoing link connection; each reconnects at once and resends what its
    /// destination did not acknowledge (which drops copies it already has). For tests and
    /// an operator's `ctl cluster relink`.
    pub fn reset_links(&self) {
        self.shared.links.reset();
    }

    /// The receiver of messages other nodes sent here; `None` after the first call. Drop
    /// each [`Inbound`] once it was handed to the local sessions (that acknowledges it to
    /// the sender). When nobody drains it, links stop reading (back-pressure).
    pub fn take_inbound(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.shared.links.take_inbound()
    }

    /// Installs the server's [`SessionSource`] (once, before serving clients).
    pub fn set_session_source(&self, source: Arc<dyn SessionSource>) {
        let _ = self.shared.session_source.set(source);
    }

    /// Asks every other member for its session of `client_id` (a client connecting here):
    /// each one that has it disconnects it and sends it here, or ends it when `discard`
    /// (Clean Start). Returns the encoded session, if one was sent. Members that do not
    /// answer within `cluster.write_timeout_ms` are counted in `session_takeover_failures`
    /// and skipped (a client should not wait longer for a dead node); one whose port does not
    /// accept a connection within `cluster.connect_timeout_ms` is also skipped by the
    /// takeovers of the next `cluster.write_timeout_ms`. Should two nodes
    /// answer (only after a partition), the first answer is kept and the others counted in
    /// `sessions_dropped`. Needs no particular runtime.
    pub async fn take_session(&self, client_id: &str, discard: bool) -> Option<Vec<u8>> {
        let mut others: Vec<String> = self
            .members()
            .into_values()
            .filter(|m| m.id != self.shared.id && !m.cluster_addr.is_empty())
            .map(|m| m.cluster_addr)
            .collect();
        {
            let now = std::time::Instant::now();
            let mut down = self
                .shared
                .session_down
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            down.retain(|_, until| *until > now);
            others.retain(|a| !down.contains_key(a));
        }
        if others.is_empty() {
            return None;
        }
        let shared = self.shared.clone();
        let client_id = client_id.to_owned();
        let task =
            self.shared.rt.spawn(async move {
                let bound = Duration::from_millis(shared.cfg.write_timeout_ms);
                let asks: Vec<_> = others.into_iter().map(|addr| {
                let shared = shared.clone();
                let client_id = client_id.clone();
                tokio::spawn(async move {
                    let ask = async {
                        let max = shared.max_frame();
                        let req = crate::wire::SessionRequest { client_id, discard };
                        // A pooled connection the peer closed meanwhile (it restarted) fails
                        // before any answer: then once more on a new one.
                        if let Some(mut sock) = shared.session_conns.take(&addr)
                            && write_frame(&mut sock, &req, max).await.is_ok()
                            && let Ok(answer) =
                                read_frame::<_, crate::wire::SessionAnswer>(&mut sock, max).await
                        {
                            shared.session_conns.give(&addr, sock);
                            return Ok(answer.0);
                        }
                        let connect = tokio::time::timeout(
                            shared.connect_timeout(),
                            TcpStream::connect(addr.as_str()),
                        )
                        .await;
                        let Ok(Ok(mut sock)) = connect else {
                            // Not reachable: skip it for a while rather than make every
                            // CONNECT wait for it.
                            let until = std::time::Instant::now()
                                + Duration::from_millis(shared.cfg.write_timeout_ms);
                            shared
                                .session_down
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(addr.clone(), until);
                            return Err(ClusterError::Io(std::io::Error::other(format!(
                                "{addr} unreachable"
                            ))));
                        };
                        let _ = sock.set_nodelay(true);
                        write_frame(&mut sock, &Hello::Sessions, max).await?;
                        write_frame(&mut sock, &req, max).await?;
                        let answer: crate::wire::SessionAnswer = read_frame(&mut sock, max).await?;
                        shared.session_conns.give(&addr, sock);
                        Ok::<_, ClusterError>(answer.0)
                    };
                    match tokio::time::timeout(bound, ask).await {
                        Ok(Ok(answer)) => answer,
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "session takeover: no answer");
                            shared
                                .counters
                                .session_takeover_failures
                                .fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(_) => {
                            tracing::debug!(%addr, "session takeover: timed out");
                            shared
                                .counters
                                .session_takeover_failures
                                .fetch_add(1, Ordering::Relaxed);
                            None
                        }
                    }
                })
            }).collect();
                let mut found = Vec::new();
                for ask in asks {
                    if let Ok(Some(answer)) = ask.await {
                        found.push(answer);
                    }
                }
                let extra = found.len().saturating_sub(1) as u64;
                let first = found.into_iter().next();
                if extra > 0 {
                    shared
                        .counters
                        .sessions_dropped
                        .fetch_add(extra, Ordering::Relaxed);
                }
                if first.is_some() {
                    shared
                        .counters
                        .sessions_taken_over
                        .fetch_add(1, Ordering::Relaxed);
                }
                first
            });
        task.await.ok().flatten()
    }

    /// The member table as applied here.
    pub fn members(&self) -> BTreeMap<NodeId, Member> {
        self.shared.hub.lock().replica.state().members().clone()
    }

    /// A snapshot of the status figures.
    pub fn status(&self) -> ClusterStatus {
        crate::writes::status(&self.shared)
    }

    /// Stops the control plane (as [`Drop`] does) and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn membership_error(
    e: openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, BasicNode>>,
) -> ClusterError {
    use openraft::error::{ClientWriteError, RaftError};
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ClusterError::NoLeader(format!("not the leader; the leader is {:?}", f.leader_id))
        }
        other => ClusterError::Raft(other.to_string()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type BootParts = (
    Arc<Shared>,
    mpsc::UnboundedSender<BatchItem>,
    mpsc::UnboundedSender<BatchItem<RetainedOp>>,
);

/// Everything that happens on the control-plane runtime at start.
async fn boot(
    cfg: ClusterConfig,
    discovery: Arc<dyn Discovery>,
) -> Result<BootParts, ClusterError> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let id = node_id_for_name(&cfg.node_name);
    let me = Member {
        id,
        name: cfg.node_name.clone(),
        role: cfg.role,
        cluster_addr: cfg.advertised().to_string(),
        incarnation: now_ms(),
    };
    let routes = Arc::new(RouteTable::new());
    // Only cores serve streams; a replicant keeps no backlog.
    let (backlog, backlog_bytes) = match cfg.role {
        NodeRole::Core => (cfg.stream_backlog_entries, cfg.stream_backlog_bytes),
        NodeRole::Replicant => (1, 0),
    };
    let hub = Arc::new(Hub::new(
        routes.clone(),
        backlog,
        backlog_bytes,
        cfg.stream_queue_max,
    ));
    let core = if cfg.role == NodeRole::Core {
        let (log, sm, disk) = match &cfg.data_dir {
            Some(dir) => {
                let (disk, mut loaded) = Disk::open(dir, id, cfg.raft_write_batch_max)?;
                let snapshot = loaded.snapshot.take();
                let log = LogStore::durable(disk.clone(), &mut loaded);
                let sm = StateMachine::durable(hub.clone(), disk.clone(), snapshot)?;
                (log, sm, Some(disk))
            }
            None => {
                tracing::warn!(
                    "cluster.data_dir is not set: this core keeps its Raft log in memory"
                );
                (LogStore::memory(), StateMachine::new(hub.clone()), None)
            }
        };
        let net = NetworkFactory {
            me: id,
            max_frame: cfg.max_frame_bytes,
            connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        };
        let raft = Raft::new(id, raft_config(&cfg)?, net, log.clone(), sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;
        Some(Core { raft, log, disk })
    } else {
        None
    };
    let links = Links::new(cfg.inbound_queue_max);
    hub.set_me(id);
    let shared = Arc::new(Shared {
        streaming: std::sync::Mutex::new(std::collections::HashMap::new()),
        leaving: std::sync::atomic::AtomicBool::new(false),
        own_routes: crate::autoclean::OwnRoutes::default(),
        session_source: std::sync::OnceLock::new(),
        session_conns: WritePool::default(),
        session_down: std::sync::Mutex::new(std::collections::HashMap::new()),
        writes: WritePool::default(),
        upstream: std::sync::Mutex::new(None),
        discovery,
        rt: tokio::runtime::Handle::current(),
        counters: Counters::default(),
        cfg,
        id,
        me,
        hub,
        routes,
        core,
        links,
    });
    shared.set_stream_state(if shared.core.is_some() {
        StreamState::Core
    } else {
        StreamState::Disconnected
    });
    tokio::spawn(crate::server::serve(shared.clone(), listener));
    let (batch_tx, batch_rx) = mpsc::unbounded_channel();
    tokio::spawn(crate::writes::batcher(shared.clone(), batch_rx));
    let (retained_tx, retained_rx) = mpsc::unbounded_channel();
    tokio::spawn(crate::writes::batcher(shared.clone(), retained_rx));
    tokio::spawn(crate::autoclean::reassert_task(
        shared.clone(),
        batch_tx.clone(),
    ));
    if shared.core.is_some() {
        tokio::spawn(form_if_first(shared.clone()));
        tokio::spawn(crate::autoclean::leader_task(shared.clone()));
        tokio::spawn(crate::retained::expiry_task(shared.clone()));
    } else {
        tokio::spawn(crate::replicant::run(shared.clone()));
    }
    tokio::spawn(join_loop(shared.clone()));
    Ok((shared, batch_tx, retained_tx))
}

/// Records this node in the member table (retried until it commits).
async fn join_loop(shared: Arc<Shared>) {
    let cmd = Command::Join(shared.me.clone());
    loop {
        match crate::writes::submit(&shared, cmd.clone(), 0).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "join not committed yet"),
        }
        tokio::time::sleep(shared.backoff()).await;
    }
}

/// Asks `addr` who it is.
pub(crate) async fn identify(shared: &Shared, addr: &str) -> Result<Identity, ClusterError> {
    let max = shared.max_frame();
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        write_frame(&mut s, &Hello::Identify, max).await?;
        read_frame::<_, Identity>(&mut s, max).await
    };
    let bound = shared.connect_timeout();
    tokio::time::timeout(bound, io)
        .await
        .map_err(|_| ClusterError::Timeout(bound.as_millis() as u64))?
}

/// Forms the Raft group, exactly once, from the first core named in `initial_cores`.
///
/// Forming twice is prevented three ways: only the node whose name is
/// `initial_cores[0]` ever calls `initialize`; it does so only when its own Raft state is
/// pristine (openraft also refuses `initialize` on a node with any log or vote); and only
/// when none of the other initial cores reports Raft state (a formed group exists, e.g. this
/// node restarted without its disk), in which case it waits to be added back instead.
async fn form_if_first(shared: Arc<Shared>) {
    let Some(core) = &shared.core else { return };
    if shared.cfg.initial_cores.first() != Some(&shared.cfg.node_name) {
        return;
    }
    if core.raft.is_initialized().await.unwrap_or(true) {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(shared.cfg.form_timeout_ms);
    let mut found: BTreeMap<NodeId, BasicNode> = BTreeMap::new();
    found.insert(shared.id, BasicNode::new(shared.me.cluster_addr.clone()));
    let wanted: Vec<NodeId> = shared
        .cfg
        .initial_cores
        .iter()
        .map(|n| node_id_for_name(n))
        .collect();
    while tokio::time::Instant::now() < deadline {
        for seed in &shared.discovery.cores() {
            let Ok(who) = identify(&shared, seed).await else {
                continue;
            };
            if who.role != NodeRole::Core || !wanted.contains(&who.id) || who.id == shared.id {
                continue;
            }
            if who.initialized {
                tracing::warn!(peer = %who.name, "a core group already exists: not forming");
                return;
            }
            found.insert(who.id, BasicNode::new(who.addr));
        }
        if wanted.iter().all(|id| found.contains_key(id)) {
            match core.raft.initialize(found.clone()).await {
                Ok(()) => {
                    shared.counters.formed.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(cores = found.len(), "core group formed");
                }
                Err(e) => tracing::warn!(error = %e, "not forming the core group"),
            }
            return;
        }
        tokio::time::sleep(shared.backoff()).await;
    }
    tracing::error!("initial cores did not all answer within cluster.form_timeout_ms");
}
