//! halyard-bench: the benchmark harness of Halyard.
//!
//! It owns the `halyard-load` load generator ([`load`]: MQTT clients built on the project's
//! own codec, scenarios, latency and delivery accounting, `/proc` sampling of the broker),
//! the `halyard-compare` side-by-side runner ([`compare`]: starts Halyard, Mosquitto and
//! rumqttd in turn, aggregates and charts), the `halyard-cluster` benchmark ([`cluster`]: a
//! three-core cluster, cross-node p2p and the route-commit rate) and the criterion
//! micro-benches in `benches/`.
//!
//! It must never: send traffic anywhere but loopback ([`target::resolve_loopback`] refuses
//! other targets), run unbounded (every run has a hard time cap), or assert timings in tests.

pub mod cluster;
pub mod compare;
pub mod latency;
pub mod load;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod target;
pub mod tracker;
