//! halyard-cluster: the core/replicant cluster layer of Halyard.
//!
//! This crate owns:
//! - the replicated vocabulary ([`NodeId`], [`Member`], [`RouteOp`], [`RetainedOp`],
//!   [`Command`]) and the deterministic state machine ([`ClusterState`]: route rows filter ->
//!   owner nodes, members, and the retained messages), with its compact snapshot encoding;
//! - retained messages as cluster-wide state (module `retained`): proposed like routes,
//!   bounded by `cluster.retained_max_messages` / `retained_max_bytes`, expired by the
//!   leader, handed to the server through a [`RetainedSink`];
//! - the lock-free route view the data plane matches against ([`RouteTable`], shared as
//!   `Arc`): "which nodes have subscribers for topic T" without taking a lock;
//! - the core group on openraft 0.9 (module [`raft`]: storage-v2 log store and state
//!   machine, durable on redb, TCP network), its forming from `cluster.initial_cores`
//!   (exactly once), batched route writes forwarded to the leader;
//! - autoclean: liveness of nodes as seen by the leader, removal of dead nodes' routes,
//!   reassertion of a live node's own routes;
//! - the replicant stream (`subscribe(from_index)` on every core; replicants bootstrap,
//!   replay, follow, and resume on another core from their applied index);
//! - node-to-node forwarding links (bounded queues, batched frames, back-pressure);
//! - [`ClusterStatus`], the figures `halyard ctl status` and `/metrics` show.
//!
//! Everything runs on one control-plane thread with its own tokio runtime, started by
//! [`ClusterNode::start`]; the data plane only reads [`RouteTable`] and calls the
//! runtime-agnostic async methods of [`ClusterNode`].
//!
//! It must never: implement consensus itself (openraft does), block or lock on the data
//! plane's publish path, panic on network input (every frame is size-checked before it is
//! buffered and decoding errors close the connection), or keep unbounded queues (every
//! limit is a [`ClusterConfig`] field, counted when hit).
//!
//! # How the server uses it
//! ```text
//! let node = ClusterNode::start(cluster_config)?;      // own thread + tokio runtime
//! let routes: Arc<RouteTable> = node.routes();         // hand to every data-plane thread
//! let mut inbound = node.take_inbound().unwrap();      // Inbound { from, message, .. }
//! // deliver `inbound.message` locally, then drop it: that acknowledges it to the sender
//! // first local subscriber on a filter / last one gone:
//! let idx = node.propose_routes(vec![RouteOp::Add { filter, node: node.id() }]).await?;
//! node.wait_applied(idx).await?;                       // SUBACK after local apply (optional)
//! // retained messages: the server's index follows the replicated state
//! node.set_retained_sink(sink);                        // before serving
//! let idx = node.propose_retained(RetainedOp::Set { topic, message }).await?;
//! node.wait_applied(idx).await?;                       // then PUBACK a QoS 1/2 retained PUBLISH
//! // publish: one copy per destination node, saying which shared groups it serves
//! routes.plan(topic, &mut plan);                       // Vec<Dispatch>
//! for d in plan.iter().filter(|d| d.node != node.id()) { node.send(d.node, encode(msg, d))?; }
//! // QoS 1/2: PUBACK/PUBREC once every destination handed it to its sessions
//! node.send_acked(d.node, encode(msg, d)).await?;
//! // status / metrics
//! let st: ClusterStatus = node.status();  for (name, v) in st.metrics() { ... }
//! node.leave().await?; node.shutdown();                // graceful stop
//! // `halyard ctl cluster join/leave` (cores, on the leader):
//! node.add_core(addr).await?; node.remove_core(id).await?;
//! node.evict(id).await?;                               // `ctl cluster evict`: a node gone for good
//! ```
//! The async methods only await channels, so they run on any executor (compio included).
//!
//! # Durability and cleaning
//! With `cluster.data_dir` set, a core keeps its Raft vote, log and latest snapshot in
//! `<data_dir>/raft.redb` (see [`raft`]): a restarted core recovers them from disk and
//! rejoins the group; nobody forms it again. Nodes that leave ([`ClusterNode::leave`],
//! [`ClusterNode::remove_core`], [`ClusterNode::evict`]) or that the core group has not
//! seen for `cluster.autoclean_grace_ms` lose their routes in one committed entry; a node
//! cleaned while alive puts its routes back (module `autoclean`).
//!
//! # Not yet
//! TLS between nodes, discovery other than the static seed list (the [`Discovery`] trait
//! is the seam), and a deterministic (seeded, fake-network) simulation of the whole group.

mod autoclean;
mod config;
mod discovery;
mod error;
mod hub;
mod links;
mod node;
pub mod raft;
mod replicant;
mod retained;
mod server;
mod state;
mod status;
mod types;
mod wire;
mod writes;

pub use config::ClusterConfig;
pub use discovery::{Discovery, StaticSeeds};
pub use error::ClusterError;
pub use links::{Inbound, MAX_LINK_PEERS};
pub use node::{AckStart, ClusterNode, SessionSource};
pub use replicant::MAX_SNAPSHOT_BYTES;
pub use server::MAX_CLUSTER_CONNECTIONS;
pub use state::{
    ClusterState, Dispatch, Replica, RetainedDelta, RetainedSink, RouteDelta, RouteTable,
    SharedPick, valid_route_filter,
};
pub use status::{ClusterStatus, StreamState};
pub use types::{
    ApplyOutcome, Command, LogIndex, Member, NodeId, NodeRole, RetainedBatch, RetainedMessage,
    RetainedOp, RouteOp, node_id_for_name,
};
