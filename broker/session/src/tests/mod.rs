//! Spec-driven tests of the state machine, driven with raw packets and virtual time.

mod close;
mod connect;
mod fuzz;
mod park;
mod partial;
mod parts;
mod publish_cache;
mod publish_in;
mod publish_out;
mod subscribe;
mod util;
