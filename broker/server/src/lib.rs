//! `halyard-server`: the `halyard` binary's library half.
//!
//! This crate owns everything that touches the outside world: the compio I/O threads and their
//! sockets, the clock, timers, signals, the configuration file and environment, the CLI, the
//! admin HTTP server and Prometheus metrics. It glues the sans-IO crates together: bytes from a
//! socket go into a `halyard_session::Connection`, its events are answered here (routing through
//! the `halyard_topics` trie, retained messages, takeover), and its output goes back to the socket.
//!
//! It must never put protocol rules here that belong in `halyard-session` or `halyard-codec`,
//! never take a global lock on the publish path, and never hold unbounded queues: every buffer
//! and queue has a named limit in [`config::Config`] and a counter when hit.
//!
//! With `cluster.seeds` set it also starts a `halyard_cluster` node (module [`cluster`]): the
//! publish path reads that crate's lock-free route table to forward copies to other nodes,
//! and the cluster wiring proposes this node's routes and delivers forwarded messages. The
//! dependency is one-way: `halyard-cluster` knows nothing of the server.

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod durable;
pub mod engine;
pub mod io;
pub mod listeners;
pub mod metrics;
pub mod run;
pub mod security;
pub mod tune;
pub mod xdp;
