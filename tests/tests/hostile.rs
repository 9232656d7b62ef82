//! Issue 5, hostile input over real sockets: random bytes, an oversize remaining length,
//! invalid UTF-8 topics, a CONNECT never finished, a packet left half-sent after CONNECT
//! (slowloris), a subscription storm and thousands of half-open connections from one source.
//!
//! Throughout, a witness publisher/subscriber pair keeps exchanging QoS 1 messages, the broker
//! keeps answering, its resident memory stays under [`RSS_BOUND_KIB`], and `/metrics` counts
//! every case. Halyard-only (metrics, config keys).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use halyard_tests::raw::{self, Connect, Packet, Props, Publish, RawClient, Version};
use halyard_tests::{TestBroker, WAIT, require_halyard, wait_for};

/// `mqtt.connect_timeout_secs` of the broker under test.
const CONNECT_TIMEOUT_SECS: u64 = 2;
/// `mqtt.partial_packet_timeout_secs` of the broker under test.
const PARTIAL_TIMEOUT_SECS: u64 = 2;
/// `mqtt.max_subscriptions_per_client` of the broker under test.
const MAX_SUBS: usize = 100;
/// `mqtt.max_topic_levels` of the broker under test.
const MAX_LEVELS: usize = 8;
/// `mqtt.max_topic_length` of the broker under test.
const MAX_TOPIC_LEN: usize = 64;
/// Half-open connections opened from 127.0.0.1 (the 10k).
const HALF_OPEN: usize = 10_000;
/// Half-open connections opened before waiting for the broker to accept them.
const BATCH: usize = 500;
/// The broker's default `limits.max_connections_per_source`: at most this many of the
/// half-open connections are ever held at once.
const PER_SOURCE: usize = 1000;
/// Bound on the broker's resident memory (VmRSS) at every sample point of the test. A held
/// connection costs a read buffer (`io.read_buffer_bytes`, 4 KiB) plus its task and session
/// state; 1000 of them and the rest of the broker stay far below this.
const RSS_BOUND_KIB: u64 = 64 * 1024;

fn config() -> String {
    format!(
        "[mqtt]\nconnect_timeout_secs = {CONNECT_TIMEOUT_SECS}\n\
         partial_packet_timeout_secs = {PARTIAL_TIMEOUT_SECS}\n\
         max_subscriptions_per_client = {MAX_SUBS}\n\
         max_topic_levels = {MAX_LEVELS}\n\
         max_topic_length = {MAX_TOPIC_LEN}\n"
    )
}

/// The broker's VmRSS in KiB, from /proc/PID/status.
fn rss_kib(b: &TestBroker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid()))
        .expect("read /proc/PID/status of the broker");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

fn assert_rss_bounded(b: &TestBroker, when: &str) -> u64 {
    let rss = rss_kib(b);
    eprintln!("broker VmRSS {when}: {rss} KiB");
    assert!(
        rss < RSS_BOUND_KIB,
        "broker VmRSS {rss} KiB {when} exceeds the bound {RSS_BOUND_KIB} KiB"
    );
    rss
}

/// A metric sample, 0 when absent.
fn metric(b: &TestBroker, key: &str) -> f64 {
    b.metrics().get(key).unwrap_or(0.0)
}

fn limit_key(limit: &str) -> String {
    format!("halyard_limit_hits_total{{limit=\"{limit}\"}}")
}

/// Waits (bounded) until `key` reaches `at_least`; fails with the value seen.
fn await_metric(b: &TestBroker, key: &str, at_least: f64) {
    let got = wait_for(WAIT, || {
        let v = metric(b, key);
        (v >= at_least).then_some(v)
    });
    assert!(
        got.is_some(),
        "{key} stayed at {} (expected at least {at_least})",
        metric(b, key)
    );
}

/// A publisher and a subscriber exchanging QoS 1 messages on their own thread for the whole
/// test. Any failure (a missing PUBACK or delivery, a closed socket) panics that thread, and
/// [`Witness::finish`] reports it.
struct Witness {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Witness {
    fn start(addr: SocketAddr) -> Witness {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let mut sub = RawClient::connected(addr, Version::V5, "witness-sub");
        assert_eq!(sub.subscribe(1, &[("witness/t", 1)], &Props::new()), [1]);
        let mut publ = RawClient::connected(addr, Version::V5, "witness-pub");
        let (stop2, rounds2) = (stop.clone(), rounds.clone());
        let thread = std::thread::spawn(move || {
            let mut n: u16 = 0;
            while !stop2.load(Ordering::Relaxed) {
                n = n.wrapping_add(1).max(1);
                let payload = n.to_be_bytes();
                assert_eq!(
                    publ.publish(&Publish::new("witness/t", &payload).qos(1, n)),
                    0,
                    "witness PUBACK {n}"
                );
                let got = sub.recv_publish();
                let (topic, body, ..) = raw::publish_parts(&got);
                assert_eq!((topic, body), ("witness/t", &payload[..]), "witness {n}");
                sub.ack_publish(&got);
                rounds2.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let w = Witness {
            stop,
            rounds,
            thread: Some(thread),
        };
        w.progress("at start");
        w
    }

    /// Waits (bounded) for two more completed round trips: the witness works right now.
    fn progress(&self, when: &str) {
        let from = self.rounds.load(Ordering::Relaxed);
        let ok = wait_for(WAIT, || {
            (self.rounds.load(Ordering::Relaxed) >= from + 2)
                .then_some(())
                .or_else(|| {
                    assert!(
                        !self.thread.as_ref().is_some_and(|t| t.is_finished()),
                        "witness thread stopped {when}"
                    );
                    None
                })
        });
        assert!(ok.is_some(), "witness made no progress {when}");
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("witness thread");
        if let Err(e) = t.join() {
            std::panic::resume_unwind(e);
        }
        self.rounds.load(Ordering::Relaxed)
    }
}

/// xorshift64: reproducible "random" bytes.
struct Noise(u64);

impl Noise {
    fn byte(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// A first byte whose packet type is not CONNECT (1).
    fn not_connect(&mut self) -> u8 {
        let b = self.byte();
        if b >> 4 == 1 { b ^ 0x80 } else { b }
    }
}

/// Random bytes instead of CONNECT, framed as a packet of a random type and unframed:
/// each connection is closed without CONNACK [MQTT-3.1.0-1] and counted as a protocol error.
fn random_bytes(b: &TestBroker, noise: &mut Noise) {
    let before = metric(b, "halyard_protocol_errors_total");
    let rounds = 40usize;
    for round in 0..rounds {
        let bytes = if round % 2 == 0 {
            let body = noise.bytes((round * 7) % 200);
            raw::frame(noise.not_connect(), &body)
        } else {
            let mut v = noise.bytes(1 + (round * 13) % 300);
            v[0] = noise.not_connect();
            v
        };
        let mut c = RawClient::open(b.mqtt_addr(), Version::V5);
        c.send(&bytes);
        let seen = c.expect_closed();
        assert!(
            seen.iter()
                .all(|p| !matches!(p, Packet::ConnAck { code: 0, .. })),
            "round {round}: random bytes accepted: {seen:?}"
        );
    }
    await_metric(b, "halyard_protocol_errors_total", before + rounds as f64);
}

/// Random bytes after a valid CONNECT: whatever they decode to, the connection ends (a
/// protocol error, or the partial-packet timeout when they announce a longer packet).
fn random_bytes_after_connect(b: &TestBroker, noise: &mut Noise) {
    let key_pe = "halyard_protocol_errors_total";
    let key_pt = limit_key("partial_packet_timeout");
    let before = metric(b, key_pe) + metric(b, &key_pt);
    let rounds = 10;
    for round in 0..rounds {
        let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("noise-{round}"));
        // Packet type 0 and 15 (AUTH) are both refused after CONNECT; start with a type that
        // is not DISCONNECT (14), so that the noise cannot end the connection politely.
        let mut bytes = noise.bytes(64 + round * 16);
        if bytes[0] >> 4 == 14 {
            bytes[0] ^= 0x80;
        }
        c.send(&bytes);
        c.expect_closed_within(WAIT + Duration::from_secs(PARTIAL_TIMEOUT_SECS));
    }
    let got = wait_for(WAIT, || {
        let v = metric(b, key_pe) + metric(b, &key_pt);
        (v >= before + rounds as f64).then_some(v)
    });
    assert!(got.is_some(), "noise after CONNECT not counted");
}

/// A remaining length above `mqtt.max_packet_size` is refused before any body is buffered
/// (DISCONNECT 0x95 [MQTT-3.2.2-15]); a fifth remaining-length byte is malformed (0x81,
/// MQTT 5.0 §1.5.5: at most four bytes).
fn oversize_remaining_length(b: &TestBroker) {
    let big = limit_key("max_packet_size");
    let (big0, pe0) = (metric(b, &big), metric(b, "halyard_protocol_errors_total"));
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, "huge-5");
    c.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    c.expect_disconnect(0x95);
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, "huge-3");
    c.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(
        c.expect_closed().is_empty(),
        "3.1.1: closed without a packet"
    );
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, "five-byte-length");
    c.send(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    c.expect_disconnect(0x81);
    await_metric(b, &big, big0 + 2.0);
    await_metric(b, "halyard_protocol_errors_total", pe0 + 3.0);
}

/// A PUBLISH whose topic is ill-formed UTF-8 [MQTT-1.5.4-1] or holds U+0000 [MQTT-1.5.4-2]
/// is a Malformed Packet: DISCONNECT 0x81 (5.0) or a plain close (3.1.1).
fn invalid_utf8_topics(b: &TestBroker) {
    let pe0 = metric(b, "halyard_protocol_errors_total");
    let topics: [&[u8]; 3] = [b"a/\xC3\x28", b"\xED\xA0\x80/surrogate", b"nul/\x00"];
    for (i, topic) in topics.iter().enumerate() {
        let mut body = Vec::new();
        body.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
        body.extend_from_slice(topic);
        let mut v5 = body.clone();
        v5.push(0); // no properties
        v5.extend_from_slice(b"payload");
        let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("utf8-5-{i}"));
        c.send(&raw::frame(0x30, &v5));
        c.expect_disconnect(0x81);
        body.extend_from_slice(b"payload");
        let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, &format!("utf8-3-{i}"));
        c.send(&raw::frame(0x30, &body));
        assert!(
            c.expect_closed().is_empty(),
            "3.1.1: closed without a packet"
        );
    }
    await_metric(b, "halyard_protocol_errors_total", pe0 + 6.0);
}

/// A CONNECT whose first bytes arrive and the rest never does: closed after
/// `connect_timeout_secs` without CONNACK, counted as `connect_timeout`.
fn connect_never_finished(b: &TestBroker) {
    let key = limit_key("connect_timeout");
    let before = metric(b, &key);
    let connect = Connect::new(Version::V5, "never-finished").encode();
    let mut c = RawClient::open(b.mqtt_addr(), Version::V5);
    c.send(&connect[..connect.len() / 2]);
    let seen = c.expect_closed_within(WAIT + Duration::from_secs(CONNECT_TIMEOUT_SECS));
    assert!(seen.is_empty(), "no CONNACK for a half CONNECT: {seen:?}");
    await_metric(b, &key, before + 1.0);
}

/// After CONNECT, a packet left half-sent closes the connection after
/// `partial_packet_timeout_secs` (5.0: DISCONNECT 0x97), the will is published (no
/// DISCONNECT from the client [MQTT-3.1.2-8]), and `partial_packet_timeout` is counted. A
/// client trickling one byte every 200 ms does not extend the deadline.
fn half_sent_packet(b: &TestBroker) {
    let key = limit_key("partial_packet_timeout");
    let before = metric(b, &key);
    let mut watcher = RawClient::connected(b.mqtt_addr(), Version::V5, "will-watcher");
    assert_eq!(
        watcher.subscribe(1, &[("hostile/will", 0)], &Props::new()),
        [0]
    );
    let mut connect = Connect::new(Version::V5, "half-sender");
    connect.will = Some(raw::Will {
        topic: "hostile/will".into(),
        payload: b"slowloris".to_vec(),
        qos: 0,
        retain: false,
        props: Props::new(),
    });
    let (mut c, _, code, _) = RawClient::connect(b.mqtt_addr(), &connect);
    assert_eq!(code, 0);
    let publish = Publish::new("half/t", b"never completed").encode(Version::V5);
    c.send(&publish[..3]);
    c.expect_disconnect(0x97);
    let will = watcher.recv_publish();
    assert_eq!(
        raw::publish_parts(&will).1,
        b"slowloris",
        "will after the timeout"
    );

    let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, "half-3");
    c.send(&publish[..3]);
    assert!(
        c.expect_closed().is_empty(),
        "3.1.1: closed without a packet"
    );

    // Trickling: a 300-byte PUBLISH at one byte per 200 ms would take a minute.
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, "trickler");
    let big = Publish::new("trickle/t", &[b'x'; 290]).encode(Version::V5);
    let mut writer = c.stream().try_clone().expect("clone the socket");
    let trickle = std::thread::spawn(move || {
        use std::io::Write;
        for byte in big {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    c.expect_disconnect(0x97);
    let _ = c.stream().shutdown(std::net::Shutdown::Both);
    trickle.join().expect("trickle thread");
    await_metric(b, &key, before + 3.0);
}

/// A storm of SUBSCRIBEs, pipelined without waiting for SUBACKs: filters beyond
/// `max_subscriptions_per_client` get 0x97 (5.0) / 0x80 (3.1.1), the client stays connected,
/// the broker's subscription table stays bounded and `max_subscriptions` is counted.
fn subscription_storm(b: &TestBroker) {
    let key = limit_key("max_subscriptions");
    let before = metric(b, &key);
    let subs_before = metric(b, "halyard_subscriptions");
    let (packets, per_packet) = (30u16, 10usize);
    let total = usize::from(packets) * per_packet;
    for (v, id, refused) in [
        (Version::V5, "storm-5", 0x97u8),
        (Version::V311, "storm-3", 0x80),
    ] {
        let mut c = RawClient::connected(b.mqtt_addr(), v, id);
        let mut wire = Vec::new();
        for p in 0..packets {
            let names: Vec<String> = (0..per_packet)
                .map(|i| format!("storm/{p}/{i}/+"))
                .collect();
            let filters: Vec<(&str, u8)> = names.iter().map(|n| (n.as_str(), 1)).collect();
            wire.extend(raw::subscribe(v, p + 1, &filters, &Props::new()));
        }
        c.send(&wire);
        let mut codes = Vec::new();
        for p in 0..packets {
            match c.recv_until(|x| matches!(x, Packet::SubAck { .. })) {
                Packet::SubAck { pid, codes: got } => {
                    assert_eq!(pid, p + 1, "SUBACKs in order");
                    codes.extend(got);
                }
                _ => unreachable!("a SUBACK"),
            }
        }
        assert_eq!(codes.len(), total);
        assert!(codes[..MAX_SUBS].iter().all(|&c| c == 1), "{id}: {codes:?}");
        assert!(
            codes[MAX_SUBS..].iter().all(|&c| c == refused),
            "{id}: {codes:?}"
        );
        // Still connected and served.
        c.send(&raw::pingreq());
        assert!(matches!(
            c.recv_until(|x| matches!(x, Packet::PingResp)),
            Packet::PingResp
        ));
    }
    let over = 2.0 * (total - MAX_SUBS) as f64;
    await_metric(b, &key, before + over);
    let subs = metric(b, "halyard_subscriptions");
    assert!(
        subs <= subs_before + 2.0 * MAX_SUBS as f64,
        "subscription table grew to {subs}"
    );
}

/// Topic names and filters beyond `max_topic_levels` / `max_topic_length` (configured limits,
/// not the specification's): a PUBLISH is refused with DISCONNECT 0x90 (5.0) or a plain close
/// (3.1.1), a filter gets 0x8F (5.0) or 0x80 (3.1.1) in its SUBACK; each is counted.
fn topic_limits(b: &TestBroker) {
    let (levels, length) = (limit_key("max_topic_levels"), limit_key("max_topic_length"));
    let (l0, n0) = (metric(b, &levels), metric(b, &length));
    let deep = ["l"; MAX_LEVELS + 1].join("/");
    let long = "x".repeat(MAX_TOPIC_LEN + 1);
    for (v, refused) in [(Version::V5, 0x8Fu8), (Version::V311, 0x80)] {
        let mut c = RawClient::connected(b.mqtt_addr(), v, &format!("topic-limits-{v:?}"));
        let ok = ["l"; MAX_LEVELS].join("/");
        c.send(&raw::subscribe(
            v,
            1,
            &[(ok.as_str(), 1), (deep.as_str(), 1), (long.as_str(), 1)],
            &Props::new(),
        ));
        match c.recv_until(|x| matches!(x, Packet::SubAck { .. })) {
            Packet::SubAck { codes, .. } => assert_eq!(codes, vec![1, refused, refused], "{v:?}"),
            _ => unreachable!("a SUBACK"),
        }
    }
    for (i, topic) in [&deep, &long].into_iter().enumerate() {
        let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("deep-pub-5-{i}"));
        c.send(&Publish::new(topic, b"x").encode(Version::V5));
        c.expect_disconnect(0x90);
        let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, &format!("deep-pub-3-{i}"));
        c.send(&Publish::new(topic, b"x").encode(Version::V311));
        assert!(
            c.expect_closed().is_empty(),
            "3.1.1: closed without a packet"
        );
    }
    await_metric(b, &levels, l0 + 4.0);
    await_metric(b, &length, n0 + 4.0);
}

/// Raises the soft file-descriptor limit of this process (inherited by the broker it starts)
/// so that both sides can hold the half-open connections.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read only the struct passed.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(got, 0, "getrlimit");
    if lim.rlim_cur >= need {
        return;
    }
    assert!(
        lim.rlim_max >= need,
        "this test needs {need} file descriptors; the hard limit is {} (raise ulimit -Hn)",
        lim.rlim_max
    );
    lim.rlim_cur = need;
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(set, 0, "setrlimit");
}

/// [`HALF_OPEN`] TCP connections from 127.0.0.1 that never send a byte. The per-source limits
/// (defaults: 1000 open, 200/s after a burst of 500) refuse most of them at accept (counted);
/// those held are closed after `connect_timeout_secs` (counted); memory stays bounded and the
/// witness keeps working while they are held.
fn half_open_connections(b: &TestBroker, witness: &Witness) {
    let conns_before = metric(b, "halyard_connections");
    let refused_before =
        metric(b, &limit_key("source_connections")) + metric(b, &limit_key("source_rate"));
    let timeouts_before = metric(b, &limit_key("connect_timeout"));
    let handled = |m: &halyard_tests::http::Metrics| {
        m.get("halyard_connections_total").unwrap_or(0.0)
            + m.get(&limit_key("source_connections")).unwrap_or(0.0)
            + m.get(&limit_key("source_rate")).unwrap_or(0.0)
    };
    let handled_before = handled(&b.metrics());
    let mut held = Vec::with_capacity(HALF_OPEN);
    let mut failed = 0usize;
    for batch in 0..HALF_OPEN / BATCH {
        for _ in 0..BATCH {
            match TcpStream::connect_timeout(&b.mqtt_addr(), WAIT) {
                Ok(s) => held.push(s),
                Err(_) => failed += 1,
            }
        }
        // Pace the batches on the broker's accepts (served or refused), so that the listen
        // backlog never overflows and no connect waits for a SYN retransmission.
        let target = handled_before + held.len() as f64;
        let caught_up = wait_for(WAIT, || (handled(&b.metrics()) >= target).then_some(()));
        assert!(
            caught_up.is_some(),
            "broker stopped accepting at batch {batch}"
        );
    }
    eprintln!(
        "half-open: {} connected, {failed} failed to connect",
        held.len()
    );
    let open_now = metric(b, "halyard_connections");
    assert!(
        open_now <= conns_before + PER_SOURCE as f64,
        "{open_now} connections open: the per-source limit did not hold"
    );
    assert_rss_bounded(b, "with the half-open connections held");
    witness.progress("while the half-open connections are held");
    assert_eq!(b.http_get("/healthz").status, 200);
    // Every connection was either refused at accept or is closed by the CONNECT timeout.
    let settled = wait_for(WAIT + Duration::from_secs(CONNECT_TIMEOUT_SECS), || {
        let m = b.metrics();
        let refused = m.get(&limit_key("source_connections")).unwrap_or(0.0)
            + m.get(&limit_key("source_rate")).unwrap_or(0.0)
            - refused_before;
        let timed_out = m.get(&limit_key("connect_timeout")).unwrap_or(0.0) - timeouts_before;
        let open = m.get("halyard_connections").unwrap_or(0.0);
        (open <= conns_before && refused + timed_out >= (HALF_OPEN - failed) as f64)
            .then_some((refused, timed_out))
    });
    let (refused, timed_out) = settled.unwrap_or_else(|| {
        panic!(
            "half-open connections not all refused or timed out: metrics\n{:?}",
            b.metrics().samples
        )
    });
    eprintln!("half-open: {refused} refused at accept, {timed_out} closed by the CONNECT timeout");
    assert!(refused >= 1.0 && timed_out >= 1.0);
    drop(held);
}

#[test]
fn hostile_input_leaves_the_broker_up_bounded_and_counted() {
    require_halyard();
    raise_fd_limit(HALF_OPEN as u64 + 2048);
    let b = TestBroker::start_with_config(&config(), &[]);
    let baseline = assert_rss_bounded(&b, "at start");
    let witness = Witness::start(b.mqtt_addr());
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);

    random_bytes(&b, &mut noise);
    witness.progress("after random bytes");
    random_bytes_after_connect(&b, &mut noise);
    witness.progress("after noise following CONNECT");
    oversize_remaining_length(&b);
    witness.progress("after oversize remaining lengths");
    invalid_utf8_topics(&b);
    witness.progress("after invalid UTF-8 topics");
    connect_never_finished(&b);
    witness.progress("after a CONNECT never finished");
    half_sent_packet(&b);
    witness.progress("after half-sent packets");
    subscription_storm(&b);
    witness.progress("after the subscription storm");
    topic_limits(&b);
    witness.progress("after topics beyond the topic limits");
    assert_rss_bounded(&b, "after the single-connection cases");
    half_open_connections(&b, &witness);
    witness.progress("after the half-open connections");

    let end = assert_rss_bounded(&b, "at the end");
    eprintln!("broker VmRSS grew from {baseline} KiB to {end} KiB");
    assert_eq!(b.http_get("/healthz").status, 200);
    let rounds = witness.finish();
    eprintln!("witness: {rounds} QoS 1 round trips, none failed");
}
