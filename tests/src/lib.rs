//! Shared harness for Halyard's integration tests.
//!
//! Owns: starting a broker process on free loopback ports ([`TestBroker`]), a hand-built MQTT
//! packet writer/reader for raw-socket tests ([`raw`]), thin wrappers around rumqttc v4/v5
//! clients with bounded waits ([`rumq`]), and a tiny HTTP client for the admin surface
//! ([`http`]).
//!
//! Must never: link the broker's crates at runtime (the broker is a separate process, driven
//! only through its sockets, its CLI and its signals), wait without a bound, or skip a test
//! silently. With `HALYARD_TEST_AGAINST=mosquitto` the same MQTT tests run against a local
//! Mosquitto so that the tests themselves can be checked against a reference broker; tests of
//! Halyard-only features call [`require_halyard`] and fail loudly in that mode.
//!
//! Environment read by the harness:
//! - `HALYARD_BIN`: path of the `halyard` binary (else `$CARGO_TARGET_DIR/debug/halyard`, else
//!   the `debug` directory holding the test executable, else `<workspace>/target/debug`).
//! - `HALYARD_TEST_AGAINST=mosquitto`: run against `mosquitto` instead of `halyard`.
//! - `HALYARD_TEST_BACKEND=uring|epoll`: passed to the broker as `HALYARD_IO__BACKEND`.
//! - `HALYARD_TEST_STORE=on`: every broker runs with `[store] enabled = true` on its own store
//!   directory (the whole suite with durable sessions; tests that set the store themselves
//!   override it).

pub mod broker;
pub mod cluster;
pub mod http;
pub mod raw;
pub mod rumq;

pub use broker::{Target, TestBroker, halyard_bin, require_halyard, target};

use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "promptly" (a reply, a delivery).
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `f` every 20 ms until it returns `Some`, or gives up after `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
