//! `listeners.tcp.defer_accept_secs` (TCP_DEFER_ACCEPT on the listening sockets): the broker
//! accepts a connection only once its first bytes arrived, and a client that connects and
//! sends nothing is still accepted at the end of the deferral and then closed by
//! `mqtt.connect_timeout_secs`, counted as `connect_timeout`. Halyard-only (config keys,
//! metrics).

use std::time::Duration;

use halyard_tests::raw::{Connect, Packet, RawClient, Version};
use halyard_tests::{TestBroker, WAIT, require_halyard, wait_for};

/// Accepted connections since start.
const ACCEPTED: &str = "halyard_connections_total";

fn metric(b: &TestBroker, key: &str) -> f64 {
    b.metrics().get(key).unwrap_or(0.0)
}

/// Sends a CONNECT on an open connection and expects a successful CONNACK.
fn finish_connect(c: &mut RawClient, client_id: &str) {
    c.send(&Connect::new(Version::V311, client_id).encode());
    match c.recv() {
        Ok(Packet::ConnAck { code: 0, .. }) => {}
        other => panic!("expected CONNACK 0 for {client_id}, got {other:?}"),
    }
}

/// A client whose handshake completed but which sent nothing is not handed to the broker
/// while a later client that sent its CONNECT is: one I/O thread accepts in the order the
/// handshakes completed, so without the deferral the silent one would be counted first.
/// Once it sends its CONNECT it is accepted and answered like any other.
#[test]
fn a_connection_is_accepted_once_its_connect_arrived() {
    require_halyard();
    let b = TestBroker::start_with(&[
        ("HALYARD_IO__THREADS", "1"),
        ("HALYARD_LISTENERS__TCP__DEFER_ACCEPT_SECS", "30"),
    ]);
    // Every connection opened before this one (the harness's readiness probe) is accepted
    // by the time it has its CONNACK.
    let _first = RawClient::connected(b.mqtt_addr(), Version::V311, "defer-first");
    let before = metric(&b, ACCEPTED);

    let mut silent = RawClient::open(b.mqtt_addr(), Version::V311);
    let _second = RawClient::connected(b.mqtt_addr(), Version::V311, "defer-second");
    assert_eq!(
        metric(&b, ACCEPTED),
        before + 1.0,
        "only the client that sent its CONNECT was accepted"
    );

    finish_connect(&mut silent, "defer-silent");
    assert_eq!(metric(&b, ACCEPTED), before + 2.0);
}

/// The interaction with `mqtt.connect_timeout_secs`: a client that connects and never sends
/// a byte is accepted when the deferral ends (about 1 s here), counted as `defer_accept`,
/// and closed by the connect timeout without a CONNACK, counted as `connect_timeout`, as
/// without the deferral.
#[test]
fn a_silent_client_is_still_closed_by_the_connect_timeout() {
    require_halyard();
    let b = TestBroker::start_with(&[
        ("HALYARD_LISTENERS__TCP__DEFER_ACCEPT_SECS", "1"),
        ("HALYARD_MQTT__CONNECT_TIMEOUT_SECS", "1"),
    ]);
    let key = "halyard_limit_hits_total{limit=\"connect_timeout\"}";
    let ran_out = "halyard_limit_hits_total{limit=\"defer_accept\"}";
    let before = metric(&b, key);
    assert_eq!(metric(&b, ran_out), 0.0, "no deferral ran out yet");
    let mut silent = RawClient::open(b.mqtt_addr(), Version::V311);
    // Deferral (1 s, the first SYN-ACK retransmission) plus the connect timeout (1 s).
    let seen = silent.expect_closed_within(WAIT + Duration::from_secs(2));
    assert!(
        seen.is_empty(),
        "nothing is sent to a silent client: {seen:?}"
    );
    let counted = wait_for(WAIT, || (metric(&b, key) > before).then_some(()));
    assert!(counted.is_some(), "{key} stayed at {before}");
    assert_eq!(
        metric(&b, ran_out),
        1.0,
        "the deferral that ran out is counted"
    );

    // The listener still serves clients that do send their CONNECT.
    let _c = RawClient::connected(b.mqtt_addr(), Version::V311, "after-silent");
}
