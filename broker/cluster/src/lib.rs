//! halyard-cluster: the core/replicant cluster layer of Halyard.
//!
//! This crate owns:
//! - the replicated vocabulary ([`NodeId`], [`Member`], [`RouteOp`], [`Command`]) and the
//!   deterministic state machine ([`ClusterState`]: route rows filter -> owner nodes, and
//!   members), with its compact snapshot encoding;
//! - the lock-free route view the data plane matches against ([`RouteTable`], shared as
//!   `Arc`): "which nodes have subscribers for topic T" without taking a lock;
//! - the core group on openraft 0.9 (module [`raft`]: storage-v2 log store and state
//!   machine, TCP network), its forming from `cluster.initial_cores` (exactly once), batched
//!   route writes forwarded to the leader;
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
//! let mut inbound = node.take_inbound().unwrap();      // (sender, bytes) from other nodes
//! // first local subscriber on a filter / last one gone:
//! let idx = node.propose_routes(vec![RouteOp::Add { filter, node: node.id() }]).await?;
//! node.wait_applied(idx).await?;                       // SUBACK after local apply (optional)
//! // publish: one copy per destination node
//! routes.nodes_for_topic(topic, &mut dests);
//! for d in dests.iter().filter(|d| **d != node.id()) { node.send(*d, encoded.clone())?; }
//! // status / metrics
//! let st: ClusterStatus = node.status();  for (name, v) in st.metrics() { ... }
//! node.leave().await?; node.shutdown();                // graceful stop
//! // `halyard ctl cluster join/leave` (cores, on the leader):
//! node.add_core(addr).await?; node.remove_core(id).await?;
//! ```
//! The async methods only await channels, so they run on any executor (compio included).
//!
//! # Not yet
//! The Raft log is in memory ([`raft::MemLogStore`]): the durable redb store plugs in behind
//! openraft's `RaftLogStorage` (see [`raft`]); until then a restarted core comes back empty
//! and is brought up to date by the leader (it stays a voter, so losing a majority of cores
//! at once loses the table). Not wired yet: removal of departed nodes' routes after a
//! timeout (autoclean), closing links to nodes that left, TLS between nodes, discovery
//! other than the static seed list (the [`Discovery`] trait is the seam), and a deterministic (seeded, fake-network) simulation
//! of the whole group.

mod config;
mod discovery;
mod error;
mod hub;
mod links;
mod node;
pub mod raft;
mod replicant;
mod server;
mod state;
mod status;
mod types;
mod wire;
mod writes;

pub use config::ClusterConfig;
pub use discovery::{Discovery, StaticSeeds};
pub use error::ClusterError;
pub use node::ClusterNode;
pub use replicant::MAX_SNAPSHOT_BYTES;
pub use server::MAX_CLUSTER_CONNECTIONS;
pub use state::{ClusterState, Replica, RouteDelta, RouteTable, valid_route_filter};
pub use status::{ClusterStatus, StreamState};
pub use types::{
    ApplyOutcome, Command, LogIndex, Member, NodeId, NodeRole, RouteOp, node_id_for_name,
};
