//! The operations surface of issue 2 (§6): admin HTTP (`/healthz`, `/metrics`, `/status`),
//! `halyard ctl status`, configuration errors, I/O backend selection and SIGTERM.
//!
//! Every test here checks a Halyard-only feature: with `HALYARD_TEST_AGAINST=mosquitto` they
//! fail at once with "this test needs halyard" (exclude this file from a mosquitto run).

use std::time::Duration;

use halyard_tests::broker::{free_port, keys, run_halyard};
use halyard_tests::http::Metrics;
use halyard_tests::raw::{self, Packet, Props, Publish, RawClient, Version};
use halyard_tests::{TestBroker, require_halyard, wait_for};

fn start() -> TestBroker {
    require_halyard();
    TestBroker::start()
}

/// `GET /healthz` answers 200 while the broker runs.
#[test]
fn healthz_ok() {
    let b = start();
    let r = b.http_get("/healthz");
    assert_eq!(r.status, 200, "body: {}", r.body);
}

/// An unknown admin path is 404, not a crash; the admin server keeps answering.
#[test]
fn admin_unknown_path_404() {
    let b = start();
    assert_eq!(b.http_get("/no-such-page").status, 404);
    assert_eq!(b.http_get("/healthz").status, 200);
}

/// The metric families promised by issue 2 exist: connections, sessions, subscriptions,
/// messages in/out/dropped (by QoS), bytes, queue-limit hits, per-thread load, I/O backend.
#[test]
fn metrics_documented_names() {
    let b = start();
    let m = b.metrics();
    for name in [
        "halyard_connections",
        "halyard_connections_total",
        "halyard_sessions",
        "halyard_subscriptions",
        "halyard_retained_messages",
        "halyard_messages_received_total",
        "halyard_messages_sent_total",
        "halyard_messages_dropped_total",
        "halyard_bytes_received_total",
        "halyard_bytes_sent_total",
        "halyard_queue_limit_hits_total",
        "halyard_thread_connections",
        "halyard_thread_messages_total",
        "halyard_io_backend",
    ] {
        assert!(m.has(name), "metric {name} missing; have {:?}", m.names());
    }
    let by_qos = m
        .samples
        .keys()
        .filter(|k| k.starts_with("halyard_messages_received_total{") && k.contains("qos="))
        .count();
    assert!(
        by_qos >= 1,
        "messages received are labelled by QoS: {:?}",
        m.samples
    );
}

/// Counters rise with traffic: connections, subscriptions, messages received and sent, bytes.
#[test]
fn metrics_count_traffic() {
    let b = start();
    // The harness's readiness probe opened (and closed) one TCP connection: wait until the
    // broker has noticed, so that the baseline has no transient connection in it.
    let mut before = Metrics::default();
    let idle = wait_for(Duration::from_secs(5), || {
        before = b.metrics();
        (before.sum("halyard_connections") == 0.0).then_some(())
    });
    assert!(
        idle.is_some(),
        "a closed TCP connection is still counted: {:?}",
        before.samples
    );
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V5, "m-sub");
    s.subscribe(1, &[("met/t", 1)], &Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "m-pub");
    p.publish(&Publish::new("met/t", b"a").qos(1, 1));
    p.publish(&Publish::new("met/t", b"b"));
    for _ in 0..2 {
        let m = s.recv_publish();
        s.ack_publish(&m);
    }
    let ok = |m: &Metrics| {
        m.sum("halyard_connections") >= before.sum("halyard_connections") + 2.0
            && m.sum("halyard_connections_total") >= before.sum("halyard_connections_total") + 2.0
            && m.sum("halyard_subscriptions") >= before.sum("halyard_subscriptions") + 1.0
            && m.sum("halyard_messages_received_total")
                >= before.sum("halyard_messages_received_total") + 2.0
            && m.sum("halyard_messages_sent_total")
                >= before.sum("halyard_messages_sent_total") + 2.0
            && m.sum("halyard_bytes_received_total") > before.sum("halyard_bytes_received_total")
            && m.sum("halyard_bytes_sent_total") > before.sum("halyard_bytes_sent_total")
    };
    let mut last = Metrics::default();
    let got = wait_for(Duration::from_secs(5), || {
        last = b.metrics();
        ok(&last).then_some(())
    });
    assert!(
        got.is_some(),
        "counters did not rise; before {:?}\nafter {:?}",
        before.samples,
        last.samples
    );
    // QoS labels: one QoS 1 and one QoS 0 message received.
    let q1 = last
        .get("halyard_messages_received_total{qos=\"1\"}")
        .unwrap_or(0.0);
    let q0 = last
        .get("halyard_messages_received_total{qos=\"0\"}")
        .unwrap_or(0.0);
    assert!(
        q1 >= 1.0 && q0 >= 1.0,
        "per-QoS received counts: {:?}",
        last.samples
    );
    drop(s);
    drop(p);
    let gone = wait_for(Duration::from_secs(5), || {
        (b.metrics().sum("halyard_connections") <= before.sum("halyard_connections")).then_some(())
    });
    assert!(
        gone.is_some(),
        "halyard_connections falls back after the clients close"
    );
}

/// `GET /status` is JSON with the version, the node, the I/O backend in use (`uring` or
/// `epoll`, the one requested by `HALYARD_TEST_BACKEND` when set) and the MQTT listener.
#[test]
fn status_json() {
    let b = start();
    let r = b.http_get("/status");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .contains("application/json"),
        "content type {:?}",
        r.header("content-type")
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("/status is JSON");
    assert!(v["version"].is_string(), "{v}");
    let backend = v["io"]["backend"].as_str().unwrap_or_default();
    assert!(
        ["uring", "epoll"].contains(&backend),
        "io.backend {backend:?} in {v}"
    );
    if let Ok(want) = std::env::var("HALYARD_TEST_BACKEND")
        && !want.is_empty()
    {
        assert_eq!(
            backend, want,
            "the backend requested by HALYARD_TEST_BACKEND is in use"
        );
    }
    let listeners = v["listeners"].to_string();
    assert!(
        listeners.contains(&b.mqtt_addr().to_string()),
        "listeners: {listeners}"
    );
}

/// `halyard ctl status --admin ADDR` prints a human summary; `--json` prints the `/status`
/// document.
#[test]
fn ctl_status_human_and_json() {
    let b = start();
    let admin = b.admin_addr().to_string();
    let out = run_halyard(
        &["ctl", "status", "--admin", &admin],
        &[],
        Duration::from_secs(20),
    )
    .expect("ctl status finished");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ctl status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.trim().is_empty(), "summary printed");
    assert!(
        !text.trim_start().starts_with('{'),
        "human summary, not JSON: {text}"
    );
    let out = run_halyard(
        &["ctl", "status", "--admin", &admin, "--json"],
        &[],
        Duration::from_secs(20),
    )
    .expect("ctl status --json finished");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("ctl status --json prints JSON");
    assert!(v["version"].is_string(), "{v}");
}

/// `halyard ctl status` against an address where nothing listens fails with a message.
#[test]
fn ctl_status_unreachable_fails() {
    require_halyard();
    let addr = format!("127.0.0.1:{}", free_port());
    let out = run_halyard(
        &["ctl", "status", "--admin", &addr],
        &[],
        Duration::from_secs(20),
    )
    .expect("ctl status finished");
    assert!(
        !out.status.success(),
        "exit status for an unreachable admin address"
    );
    assert!(!out.stderr.is_empty(), "an error message on stderr");
}

/// A bad configuration value fails at start: non-zero exit, and stderr names the key
/// (issue 2 §6).
#[test]
fn bad_env_value_names_key() {
    require_halyard();
    for (key, value, name) in [
        (keys::IO_BACKEND, "foo", "io.backend"),
        (keys::ADMIN_BIND, "localhost", "admin.bind"),
        ("HALYARD_MQTT__RECEIVE_MAXIMUM", "0", "mqtt.receive_maximum"),
        ("HALYARD_MQTT__NO_SUCH_KEY", "1", "mqtt.no_such_key"),
    ] {
        let mqtt = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let mut env = vec![
            (keys::TCP_BIND, mqtt.as_str()),
            (keys::ADMIN_BIND, admin.as_str()),
        ];
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
        let out = run_halyard(&["run"], &env, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("{key}={value}: halyard still running after 20 s"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}={value} must fail at start");
        assert!(
            err.contains(name),
            "{key}={value}: stderr must name `{name}`: {err}"
        );
    }
}

/// A missing `--config` file fails at start with a message naming the file.
#[test]
fn missing_config_file_fails() {
    require_halyard();
    let out = run_halyard(
        &["run", "--config", "/nonexistent/halyard.toml"],
        &[],
        Duration::from_secs(20),
    )
    .expect("halyard exited");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/halyard.toml"));
}

/// `io.backend = epoll` is honoured (and reported) and the broker serves MQTT on it.
#[test]
fn forced_epoll_backend_serves() {
    require_halyard();
    let b = TestBroker::start_with(&[(keys::IO_BACKEND, "epoll")]);
    let v: serde_json::Value =
        serde_json::from_str(&b.http_get("/status").body).expect("/status JSON");
    assert_eq!(v["io"]["backend"], "epoll", "{v}");
    assert_eq!(
        b.metrics().get("halyard_io_backend{backend=\"epoll\"}"),
        Some(1.0)
    );
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V5, "ep-sub");
    s.subscribe(1, &[("ep/t", 1)], &Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V5, "ep-pub");
    p.publish(&Publish::new("ep/t", b"x").qos(1, 1));
    assert!(matches!(s.recv_publish(), Packet::Publish { .. }));
}

/// Out of descriptors (`RLIMIT_NOFILE` lowered under the running broker): accepts fail, the
/// connections wait in the listen queue, each failure is counted as the `open_files` limit,
/// the warning is logged once rather than at every retry (100 per second), and once
/// descriptors are free again new clients are served.
#[test]
fn descriptor_limit_is_counted_and_recovers() {
    require_halyard();
    let b = TestBroker::start_with(&[("HALYARD_IO__THREADS", "1")]);
    let open = std::fs::read_dir(format!("/proc/{}/fd", b.pid()))
        .expect("broker's /proc fd list")
        .count();
    let limit = (open + 4).to_string();
    let st = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &b.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit(1)");
    assert!(st.success(), "prlimit failed");
    // More CONNECTs than free descriptors: the rest wait in the listen queue.
    let mut waiting = Vec::new();
    for i in 0..12 {
        let mut s = std::net::TcpStream::connect(b.mqtt_addr()).expect("connect");
        let connect = raw::Connect::new(Version::V311, &format!("nofile-{i}")).encode();
        std::io::Write::write_all(&mut s, &connect).expect("send CONNECT");
        waiting.push(s);
    }
    // Retries for a second (every 10 ms) while every descriptor is taken.
    std::thread::sleep(Duration::from_secs(1));
    drop(waiting);
    // The broker closes the connections it had and accepts (and closes) the queued ones; the
    // admin server needs a descriptor too, so the counters are read once they are free.
    let hits = wait_for(Duration::from_secs(10), || {
        let m = b.metrics();
        m.get("halyard_limit_hits_total{limit=\"open_files\"}")
            .filter(|&n| n >= 2.0)
    });
    assert!(
        hits.is_some(),
        "open_files limit hits: {:?}",
        b.metrics().samples
    );
    let warnings = b.log_text().matches("accept failed").count();
    assert!(
        (1..=2).contains(&warnings),
        "one warning per 10 s, not one per retry: {warnings}"
    );
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, "after-nofile");
    c.send(&raw::pingreq());
    let pong = c.recv_until(|p| matches!(p, Packet::PingResp));
    assert!(matches!(pong, Packet::PingResp), "served again");
}

/// SIGTERM: 5.0 clients receive DISCONNECT 0x8B (Server shutting down), 3.1.1 clients are
/// closed, and the process exits 0 (issue 2 §6).
#[test]
fn sigterm_disconnects_0x8b_and_exits_0() {
    let mut b = start();
    let mut c5 = RawClient::connected(b.mqtt_addr(), Version::V5, "term5");
    let mut c4 = RawClient::connected(b.mqtt_addr(), Version::V311, "term4");
    let st = b.sigterm();
    c5.expect_disconnect(0x8B);
    let seen = c4.expect_closed();
    assert!(seen.is_empty(), "3.1.1 clients are just closed: {seen:?}");
    assert!(st.success(), "exit status after SIGTERM: {st}");
}

/// The offline queue is bounded by `mqtt.max_queued_messages` with the `drop_new` policy: of
/// 10 QoS 1 messages published while a persistent session is offline, the first 3 are kept
/// and delivered, the rest are dropped and counted in
/// `halyard_messages_dropped_total{reason="queue_full"}` (issue 2: bounded queue, drop policy,
/// counter).
#[test]
fn offline_queue_bounded_and_counted() {
    require_halyard();
    let b = TestBroker::start_with(&[
        ("HALYARD_MQTT__MAX_QUEUED_MESSAGES", "3"),
        ("HALYARD_MQTT__QUEUE_POLICY", "drop_new"),
    ]);
    let mut c = raw::Connect::new(Version::V5, "bounded");
    c.props = Props::new().with(raw::Prop::U32(raw::prop::SESSION_EXPIRY, 300));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("bq/t", 1)], &Props::new());
    s.send(&raw::disconnect(Version::V5, 0, &Props::new()));
    s.expect_closed();
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V5, "bq-pub");
    for i in 0..10u16 {
        p.publish(&Publish::new("bq/t", format!("{i}").as_bytes()).qos(1, 1 + i));
    }
    // All ten reached the offline session (7 refused by its bound) before the client comes
    // back: a message still on its way when the session resumes is delivered, not dropped.
    let full = "halyard_messages_dropped_total{reason=\"queue_full\"}";
    let drops = wait_for(Duration::from_secs(10), || {
        (b.metrics().get(full).unwrap_or(0.0) >= 7.0).then_some(())
    });
    assert!(
        drops.is_some(),
        "7 queue_full drops: {:?}",
        b.metrics().samples
    );
    c.clean = false;
    let (mut s, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, true));
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = s.recv_publish();
        s.ack_publish(&m);
        if let Packet::Publish { payload, .. } = m {
            got.push(String::from_utf8_lossy(&payload).into_owned());
        }
    }
    assert_eq!(
        got,
        vec!["0", "1", "2"],
        "drop_new keeps the oldest messages"
    );
    p.publish(&Publish::new("bq/t", b"marker").qos(1, 50));
    let Packet::Publish { payload, .. } = s.recv_publish() else {
        unreachable!()
    };
    assert_eq!(
        payload, b"marker",
        "no more than 3 queued messages delivered"
    );
    let dropped = b.metrics().sum("halyard_messages_dropped_total");
    assert!(dropped >= 7.0, "7 drops counted, metrics say {dropped}");
    let m = b.metrics();
    assert!(
        m.get("halyard_messages_dropped_total{reason=\"queue_full\"}")
            .unwrap_or(0.0)
            >= 7.0,
        "{:?}",
        m.samples
    );
}

/// A message larger than a client's Maximum Packet Size is dropped for that client
/// [MQTT-3.1.2-25] and counted as `halyard_messages_dropped_total{reason="too_large"}`.
#[test]
fn too_large_for_client_counted() {
    let b = start();
    let mut c = raw::Connect::new(Version::V5, "small-client");
    c.props = Props::new().with(raw::Prop::U32(raw::prop::MAXIMUM_PACKET_SIZE, 128));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("tl/t", 1)], &Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V5, "tl-pub");
    p.publish(&Publish::new("tl/t", &[b'x'; 1000]).qos(1, 1));
    p.publish(&Publish::new("tl/t", b"small").qos(1, 2));
    let Packet::Publish { payload, .. } = s.recv_publish() else {
        unreachable!()
    };
    assert_eq!(payload, b"small");
    let mut last = Metrics::default();
    let counted = wait_for(Duration::from_secs(5), || {
        last = b.metrics();
        (last
            .get("halyard_messages_dropped_total{reason=\"too_large\"}")
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    assert!(
        counted.is_some(),
        "too_large drop not counted: {:?}",
        last.samples
    );
}

/// A connected slow consumer is bounded too: with Receive Maximum 1 and no PUBACK, further
/// messages wait in the session queue (`mqtt.max_queued_messages` = 5) and the excess is
/// dropped and counted (issue 2: slow consumers never take unbounded memory).
#[test]
fn slow_consumer_queue_bounded() {
    require_halyard();
    let b = TestBroker::start_with(&[
        ("HALYARD_MQTT__MAX_QUEUED_MESSAGES", "5"),
        ("HALYARD_MQTT__QUEUE_POLICY", "drop_new"),
    ]);
    let mut c = raw::Connect::new(Version::V5, "slow");
    c.props = Props::new().with(raw::Prop::U16(raw::prop::RECEIVE_MAXIMUM, 1));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("slow/t", 1)], &Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V5, "slow-pub");
    for i in 0..30u16 {
        p.publish(&Publish::new("slow/t", format!("{i}").as_bytes()).qos(1, 1 + i));
    }
    let mut got = 0;
    while let Ok(m @ Packet::Publish { .. }) = s.recv_within(Duration::from_secs(3)) {
        s.ack_publish(&m);
        got += 1;
        assert!(got <= 30);
    }
    assert!(
        (1..30).contains(&got),
        "a bounded queue delivers some but not all of 30 messages, got {got}"
    );
    let m = b.metrics();
    let dropped = m
        .get("halyard_messages_dropped_total{reason=\"queue_full\"}")
        .unwrap_or(0.0);
    assert_eq!(
        dropped as usize,
        30 - got,
        "every undelivered message counted: {:?}",
        m.samples
    );
}

/// With no file and no environment, the embedded default configuration listens for MQTT on
/// 127.0.0.1:1883 and serves admin HTTP on 127.0.0.1:8081 (issue 2 §6), as printed by
/// `halyard config check` (which does not bind).
#[test]
fn default_config_addresses() {
    require_halyard();
    let out = run_halyard(&["config", "check"], &[], Duration::from_secs(20))
        .expect("config check finished");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("127.0.0.1:1883"),
        "default MQTT listener: {text}"
    );
    assert!(
        text.contains("127.0.0.1:8081"),
        "default admin address: {text}"
    );
}

/// A TOML file given with `--config` is applied, and an environment variable overrides the
/// same key of the file (issue 2 §6): the file sets `mqtt.max_keepalive_secs = 20`, the
/// environment 10, and CONNACK announces Server Keep Alive 10; a key only in the file (the
/// Topic Alias Maximum, 7) is applied as written.
#[test]
fn config_file_then_env_override() {
    let toml = "[mqtt]\nmax_keepalive_secs = 20\ntopic_alias_max = 7\n";
    let b = TestBroker::start_with_config(toml, &[(keys::MAX_KEEPALIVE, "10")]);
    let mut c = raw::Connect::new(Version::V5, "cfg");
    c.keepalive = 300;
    let (_cl, _, code, props) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    assert_eq!(
        props.int(raw::prop::SERVER_KEEP_ALIVE),
        Some(10),
        "{props:?}"
    );
    assert_eq!(
        props.int(raw::prop::TOPIC_ALIAS_MAXIMUM),
        Some(7),
        "{props:?}"
    );
}

/// io_uring busy reads (`io.busy_read_buffer_bytes`, `io.max_busy_readers`): two publishers
/// each stream 300 QoS 1 messages (one read per PUBLISH, so both become "busy"); with a
/// 64-byte receive buffer most packets span several receives. The subscriber gets every
/// message of each publisher, intact and in order. Only one connection may hold a busy
/// buffer, so on io_uring the other one is refused one and the limit hit is counted; on
/// epoll (no busy path) nothing is counted.
#[test]
fn busy_reads_keep_the_stream_intact_and_are_bounded() {
    require_halyard();
    let b = TestBroker::start_with(&[
        ("HALYARD_IO__THREADS", "1"),
        ("HALYARD_IO__BUSY_READ_BUFFER_BYTES", "64"),
        ("HALYARD_IO__MAX_BUSY_READERS", "1"),
    ]);
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, "busy-sub");
    s.subscribe(1, &[("busy/#", 0)], &Props::new());
    let mut p1 = RawClient::connected(b.mqtt_addr(), Version::V311, "busy-pub1");
    let mut p2 = RawClient::connected(b.mqtt_addr(), Version::V311, "busy-pub2");
    const N: u16 = 300;
    // A payload longer than the receive buffer, with its sequence number in it.
    let payload = |who: u8, i: u16| format!("{who}:{i:05}:{}", "x".repeat(100));
    for i in 0..N {
        p1.publish(&Publish::new("busy/1", payload(1, i).as_bytes()).qos(1, 1 + i));
        p2.publish(&Publish::new("busy/2", payload(2, i).as_bytes()).qos(1, 1 + i));
    }
    let mut next = [0u16; 2];
    while next != [N, N] {
        let Packet::Publish {
            topic,
            payload: got,
            ..
        } = s.recv_publish()
        else {
            unreachable!()
        };
        let who = if topic == "busy/1" { 1 } else { 2 };
        let i = &mut next[usize::from(who - 1)];
        assert_eq!(
            String::from_utf8_lossy(&got),
            payload(who, *i),
            "publisher {who}, message {i}"
        );
        *i += 1;
    }
    let r = b.http_get("/status");
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("/status is JSON");
    let hits = b
        .metrics()
        .get("halyard_limit_hits_total{limit=\"max_busy_readers\"}")
        .unwrap_or(0.0);
    match v["io"]["backend"].as_str() {
        Some("uring") => assert!(hits >= 1.0, "busy-reader limit hits: {hits}"),
        _ => assert_eq!(hits, 0.0, "no busy reads on epoll"),
    }
}
