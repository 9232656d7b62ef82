//! Spec-driven tests of the state machine, driven with raw packets and virtual time.

mod connect;
mod util;
