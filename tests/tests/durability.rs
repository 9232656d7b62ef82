//! Durable sessions (`[store] enabled = true`, issue 4): nothing the broker acknowledged is
//! lost when it is killed with SIGKILL, retained messages, delayed wills and session expiry
//! survive a restart (expired ones are gone), and a corrupt store file stops the start with
//! the documented error and way out.
//!
//! Every broker here runs on a store directory owned by the test, so that a restarted broker
//! (new process, new ports) reads what the killed one wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use halyard_tests::raw::{
    Connect, Packet, Prop, Props, Publish, RawClient, RecvError, Version, ack, prop,
};
use halyard_tests::{TestBroker, WAIT, require_halyard, wait_for};

/// A store directory removed when the test ends (kept when it fails, for inspection).
struct StoreDir(PathBuf);

impl StoreDir {
    fn new(name: &str) -> StoreDir {
        let dir = std::env::temp_dir()
            .join("halyard-tests-store")
            .join(format!("{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the store dir");
        StoreDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HALYARD_STORE__ENABLED", "true".to_string()),
            ("HALYARD_STORE__DIR", self.0.display().to_string()),
            ("HALYARD_STORE__COMMIT_INTERVAL_MS", "2".to_string()),
            // Two threads: deliveries cross threads and sessions move between them.
            ("HALYARD_IO__THREADS", "2".to_string()),
        ]
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn start(store: &StoreDir, args: &[&str]) -> TestBroker {
    let env = store.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestBroker::start_with_args(args, &env)
}

/// A 5.0 CONNECT with Clean Start 0 and a Session Expiry Interval.
fn persistent(client_id: &str, expiry: u32) -> Connect {
    let mut c = Connect::new(Version::V5, client_id);
    c.clean = false;
    c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, expiry));
    c
}

fn connect(addr: SocketAddr, c: &Connect) -> (RawClient, bool) {
    let (client, present, code, _) = RawClient::connect(addr, c);
    assert_eq!(code, 0, "CONNACK code for {}", c.client_id);
    (client, present)
}

fn disconnect(mut c: RawClient) {
    c.send(&halyard_tests::raw::disconnect(
        Version::V5,
        0,
        &Props::new(),
    ));
    let _ = c.expect_closed();
}

/// Deterministic pseudo-random numbers (no dependency; the sequence only needs to vary).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Where a publisher's message is in its QoS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// PUBLISH sent, no PUBACK/PUBREC yet.
    Sent,
    /// PUBREC received (QoS 2), PUBCOMP not yet.
    Received,
}

/// Sends message `n` (QoS 1 for odd, 2 for even numbers), then, if `kill` is set, kills
/// the broker before reading the answer. Returns whether the broker acknowledged it (PUBACK
/// or PUBREC with a success code) and completes the QoS 2 flow when it can.
fn publish_one(p: &mut RawClient, n: u32, dup: bool, stage: &mut Stage) -> Result<bool, RecvError> {
    let qos = if n % 2 == 1 { 1 } else { 2 };
    let pid = u16::try_from(n % 60_000 + 1).expect("below 60001");
    if *stage == Stage::Sent {
        let mut publish = Publish::new("k/seq", n.to_string().as_bytes()).qos(qos, pid);
        publish.dup = dup;
        p.send(&publish.encode(Version::V5));
    } else {
        p.send(&ack(0x62, pid));
    }
    loop {
        match p.recv_within(WAIT)? {
            Packet::Ack {
                kind: 4,
                pid: got,
                reason,
            } if got == pid => {
                assert!(reason < 0x80, "PUBACK {reason:#04x} for message {n}");
                return Ok(true);
            }
            Packet::Ack {
                kind: 5,
                pid: got,
                reason,
            } if got == pid => {
                assert!(reason < 0x80, "PUBREC {reason:#04x} for message {n}");
                *stage = Stage::Received;
                p.send(&ack(0x62, pid));
            }
            Packet::Ack {
                kind: 7, pid: got, ..
            } if got == pid => return Ok(true),
            other => panic!("publisher got {other:?} while sending message {n}"),
        }
    }
}

/// Reads what a subscriber got within `idle` of silence (bounded by `max_packets`),
/// acknowledging every PUBLISH; appends (number, qos, dup) to `got`. Returns false when the
/// connection closed.
fn drain(
    c: &mut RawClient,
    idle: Duration,
    max_packets: usize,
    got: &mut Vec<(u32, u8, bool)>,
) -> bool {
    for _ in 0..max_packets {
        match c.recv_within(idle) {
            Ok(Packet::Publish {
                payload,
                qos,
                dup,
                pid,
                ..
            }) => {
                let n: u32 = std::str::from_utf8(&payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("payload {payload:?} is not a sequence number"));
                got.push((n, qos, dup));
                match qos {
                    1 => c.send(&ack(0x40, pid)),
                    2 => c.send(&ack(0x50, pid)),
                    _ => {}
                }
            }
            Ok(Packet::Ack { kind: 6, pid, .. }) => c.send(&ack(0x70, pid)),
            Ok(Packet::PingResp) => {}
            Ok(other) => panic!("subscriber got {other:?}"),
            Err(RecvError::Timeout) => return true,
            Err(RecvError::Closed) => return false,
            Err(e) => panic!("subscriber read failed: {e:?}"),
        }
    }
    true
}

/// Checks one subscriber's deliveries against the acknowledged numbers.
fn check_deliveries(
    who: &str,
    got: &[(u32, u8, bool)],
    acked: &BTreeSet<u32>,
    published: u32,
    qos2_exactly_once: bool,
) {
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    let mut first_seen = Vec::new();
    for (n, _, _) in got {
        assert!(
            (1..=published).contains(n),
            "{who} got {n}, which was never published"
        );
        let c = count.entry(*n).or_default();
        if *c == 0 {
            first_seen.push(*n);
        }
        *c += 1;
    }
    let missing: Vec<u32> = acked
        .iter()
        .filter(|n| !count.contains_key(n))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{who} lost {} acknowledged messages: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if qos2_exactly_once {
        let dups: Vec<u32> = count
            .iter()
            .filter(|(n, c)| *n % 2 == 0 && **c > 1)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            dups.is_empty(),
            "{who} got QoS 2 messages more than once [MQTT-4.3.3]: {dups:?}"
        );
    }
    // One publisher: messages arrive in the order it sent them [MQTT-4.6.0-6] (a QoS 1
    // redelivery may repeat an earlier one; its first arrival is in order).
    for w in first_seen.windows(2) {
        assert!(
            w[0] < w[1],
            "{who}: {} arrived before {} [MQTT-4.6.0-6]",
            w[1],
            w[0]
        );
    }
}

/// The kill -9 loop of issue 4: a persistent publisher sends QoS 1 and QoS 2 messages to an
/// offline persistent session and to a connected one while the broker is killed with
/// SIGKILL at random moments (mid-flight) and restarted on the same store. Every message the
/// broker acknowledged reaches both subscribers after the restarts; QoS 2 ones exactly once.
#[test]
fn kill9_loop_keeps_every_acknowledged_message() {
    require_halyard();
    const MESSAGES: u32 = 600;
    const KILLS: usize = 4;
    let store = StoreDir::new("kill9");
    let mut rng = Lcg(0x5eed_1234);
    let mut broker = start(&store, &[]);
    let addr = broker.mqtt_addr();

    // The offline subscriber: subscribes at QoS 2, then leaves (session kept 1 h).
    let (mut s, _) = connect(addr, &persistent("dur-offline", 3600));
    assert_eq!(s.subscribe(1, &[("k/#", 2)], &Props::new()), vec![2]);
    disconnect(s);
    // The connected subscriber: QoS 1, reconnects after every restart.
    let live_connect = persistent("dur-live", 3600);
    let (mut live, _) = connect(addr, &live_connect);
    assert_eq!(live.subscribe(1, &[("k/#", 1)], &Props::new()), vec![1]);
    let pub_connect = persistent("dur-pub", 3600);
    let (mut p, _) = connect(addr, &pub_connect);

    let mut kill_at: BTreeSet<u32> = BTreeSet::new();
    while kill_at.len() < KILLS {
        kill_at.insert(1 + u32::try_from(rng.next(u64::from(MESSAGES))).expect("small"));
    }
    let mut acked = BTreeSet::new();
    let mut live_got = Vec::new();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    for n in 1..=MESSAGES {
        assert!(
            Instant::now() < deadline,
            "kill loop too slow (at message {n})"
        );
        let mut stage = Stage::Sent;
        let mut dup = false;
        let mut kill_now = kill_at.contains(&n);
        loop {
            if kill_now {
                // Kill at a random moment while message n is in flight.
                let pid = u16::try_from(n % 60_000 + 1).expect("small");
                let qos = if n % 2 == 1 { 1 } else { 2 };
                p.send(
                    &Publish::new("k/seq", n.to_string().as_bytes())
                        .qos(qos, pid)
                        .encode(Version::V5),
                );
                std::thread::sleep(Duration::from_micros(rng.next(3000)));
                broker.kill();
                kills += 1;
                kill_now = false;
                dup = true;
                broker = start(&store, &[]);
                let addr = broker.mqtt_addr();
                let (np, present) = connect(addr, &pub_connect);
                assert!(present, "the publisher's session survived the kill");
                p = np;
                let (nl, present) = connect(addr, &live_connect);
                assert!(present, "the live subscriber's session survived the kill");
                live = nl;
                continue;
            }
            match publish_one(&mut p, n, dup, &mut stage) {
                Ok(true) => {
                    acked.insert(n);
                    break;
                }
                Ok(false) => unreachable!("publish_one returns true or an error"),
                Err(e) => panic!(
                    "publisher lost the broker without a kill: {e:?}\n{}",
                    broker.log_text()
                ),
            }
        }
        if !drain(&mut live, Duration::from_millis(1), 256, &mut live_got) {
            panic!("live subscriber closed without a kill");
        }
    }
    assert_eq!(kills, KILLS);
    assert_eq!(
        acked.len(),
        MESSAGES as usize,
        "every message ends acknowledged"
    );

    // A last restart, then everything must be there.
    broker.kill();
    broker = start(&store, &[]);
    let addr = broker.mqtt_addr();
    let (mut live, present) = connect(addr, &live_connect);
    assert!(present, "live subscriber's session kept");
    let (mut s, present) = connect(addr, &persistent("dur-offline", 3600));
    assert!(present, "offline subscriber's session kept");
    let mut s_got = Vec::new();
    for _ in 0..50 {
        let before = (s_got.len(), live_got.len());
        assert!(drain(&mut s, Duration::from_millis(500), 4096, &mut s_got));
        assert!(drain(
            &mut live,
            Duration::from_millis(200),
            4096,
            &mut live_got
        ));
        let seen: BTreeSet<u32> = s_got.iter().map(|g| g.0).collect();
        let seen_live: BTreeSet<u32> = live_got.iter().map(|g| g.0).collect();
        if (seen.len() >= acked.len() && seen_live.len() >= acked.len())
            || before == (s_got.len(), live_got.len())
        {
            break;
        }
    }
    check_deliveries("offline subscriber", &s_got, &acked, MESSAGES, true);
    check_deliveries("live subscriber", &live_got, &acked, MESSAGES, false);
    for (n, qos, _) in &s_got {
        let expected = if n % 2 == 1 { 1 } else { 2 };
        assert_eq!(*qos, expected, "message {n} at min(published, granted) QoS");
    }
    let m = broker.metrics();
    assert!(
        m.sum("halyard_store_commits_total") > 0.0,
        "store metrics exported"
    );
}

/// Retained messages, a delayed will and session expiry across a SIGKILL and downtime:
/// the retained message is still there, the one whose Message Expiry passed is gone, the
/// session whose expiry passed is gone (Session Present 0), and the will whose delay passed
/// during the downtime is published at start to the persistent session subscribed to it.
#[test]
fn retained_wills_and_expiry_survive_a_restart() {
    require_halyard();
    let store = StoreDir::new("restart");
    let mut broker = start(&store, &[]);
    let addr = broker.mqtt_addr();

    let mut p = RawClient::connected(addr, Version::V5, "ret-pub");
    assert_eq!(
        p.publish(&Publish::new("r/keep", b"kept").qos(1, 1).retain()),
        0
    );
    let short_lived = Props::new().with(Prop::U32(prop::MESSAGE_EXPIRY, 1));
    assert_eq!(
        p.publish(
            &Publish::new("r/gone", b"expires")
                .qos(1, 2)
                .retain()
                .props(short_lived)
        ),
        0
    );
    // Acknowledged: both are durable now. Overwrite nothing, delete nothing.
    disconnect(p);

    // A persistent subscriber of the will topic, offline.
    let (mut l, _) = connect(addr, &persistent("will-listener", 3600));
    assert_eq!(l.subscribe(1, &[("w/t", 1)], &Props::new()), vec![1]);
    disconnect(l);
    // A session that expires 1 s after its disconnect.
    let (mut e, _) = connect(addr, &persistent("short-session", 1));
    assert_eq!(e.subscribe(1, &[("x/#", 1)], &Props::new()), vec![1]);
    disconnect(e);
    // A client with a will delayed by 2 s (session kept 60 s) that vanishes.
    let mut w = persistent("will-owner", 60);
    w.will = Some(halyard_tests::raw::Will {
        topic: "w/t".into(),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: false,
        props: Props::new().with(Prop::U32(prop::WILL_DELAY, 2)),
    });
    let (wc, _) = connect(addr, &w);
    wc.drop_abruptly();
    let stored = wait_for(WAIT, || {
        let m = broker.metrics();
        (m.sum("halyard_store_wills") >= 1.0 && m.sum("halyard_store_sessions") >= 3.0)
            .then_some(())
    });
    assert!(stored.is_some(), "the will and the sessions were stored");

    broker.kill();
    // Downtime longer than the will delay, the short session's expiry and the message expiry.
    std::thread::sleep(Duration::from_millis(2500));
    let broker = start(&store, &[]);
    let addr = broker.mqtt_addr();

    let (_, present) = connect(addr, &persistent("short-session", 1));
    assert!(
        !present,
        "a session whose expiry passed during downtime is gone"
    );
    let (mut l, present) = connect(addr, &persistent("will-listener", 3600));
    assert!(present, "the listener's session survived");
    match l.recv_publish() {
        Packet::Publish { topic, payload, .. } => {
            assert_eq!(
                (topic.as_str(), payload.as_slice()),
                ("w/t", &b"gone"[..]),
                "delayed will published after restart"
            );
        }
        _ => unreachable!("recv_publish returns a PUBLISH"),
    }
    let mut r = RawClient::connected(addr, Version::V5, "ret-check");
    assert_eq!(r.subscribe(1, &[("r/#", 0)], &Props::new()), vec![0]);
    let mut retained = Vec::new();
    while let Ok(Packet::Publish {
        topic,
        payload,
        retain,
        ..
    }) = r.recv_within(Duration::from_millis(500))
    {
        assert!(retain, "retained delivery has RETAIN [MQTT-3.3.1-9]");
        retained.push((topic, payload));
    }
    assert_eq!(
        retained,
        vec![("r/keep".to_string(), b"kept".to_vec())],
        "the retained message survived; the expired one is gone"
    );
    let status = broker.http_get("/status");
    let doc: serde_json::Value = serde_json::from_str(&status.body).expect("status is JSON");
    assert!(
        doc["store"]["sessions"].as_u64().is_some(),
        "/status shows store counts: {doc}"
    );
}

/// A store file that is not a store: `halyard run` exits non-zero naming the file and the way
/// out, `halyard store check` says it is corrupt, and `--discard-corrupt` moves it aside and
/// starts empty.
#[test]
fn corrupt_store_fails_loudly_and_discard_corrupt_recovers() {
    require_halyard();
    let store = StoreDir::new("corrupt");
    let file = store.path().join("halyard.redb");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &garbage).expect("write garbage");
    let env = store.env();
    let mqtt = format!("127.0.0.1:{}", halyard_tests::broker::free_port());
    let admin = format!("127.0.0.1:{}", halyard_tests::broker::free_port());
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("HALYARD_LISTENERS__TCP__BIND", &mqtt));
    env.push(("HALYARD_ADMIN__BIND", &admin));

    let out = halyard_tests::broker::run_halyard(&["run"], &env, Duration::from_secs(20))
        .expect("halyard run exits on a corrupt store instead of running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "non-zero exit; stderr:\n{stderr}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "names the file:\n{stderr}"
    );
    assert!(
        stderr.contains("halyard store check"),
        "names the check tool:\n{stderr}"
    );
    assert!(
        stderr.contains("--discard-corrupt"),
        "names the way out:\n{stderr}"
    );

    let dir = store.path().display().to_string();
    let check = halyard_tests::broker::run_halyard(
        &["store", "check", "--dir", &dir],
        &[],
        Duration::from_secs(20),
    )
    .expect("store check finishes");
    let text = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(1),
        "check fails on a corrupt file:\n{text}"
    );
    assert!(text.contains("corrupt"), "{text}");

    let broker = start(&store, &["--discard-corrupt"]);
    let log = broker.log_text();
    assert!(
        log.contains("halyard.redb.corrupt-1"),
        "logs where the file went:\n{log}"
    );
    assert!(store.path().join("halyard.redb.corrupt-1").exists());
    let (_, present) = connect(broker.mqtt_addr(), &persistent("after-discard", 60));
    assert!(!present, "the store starts empty");
    drop(broker);
    let check = halyard_tests::broker::run_halyard(
        &["store", "check", "--dir", &dir],
        &[],
        Duration::from_secs(20),
    )
    .expect("store check finishes");
    assert!(
        check.status.success(),
        "the new store is usable: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// A session that was offline once and then resumed does not expire while connected: after
/// a crash its expiry counts from the last commit, not from the old disconnect
/// [MQTT-3.1.2-23].
#[test]
fn resumed_session_does_not_expire_from_its_old_disconnect() {
    require_halyard();
    let store = StoreDir::new("resumed");
    let mut broker = start(&store, &[]);
    let addr = broker.mqtt_addr();
    let (mut c, _) = connect(addr, &persistent("resumer", 3));
    assert_eq!(c.subscribe(1, &[("z/#", 1)], &Props::new()), vec![1]);
    disconnect(c);
    let (c, present) = connect(addr, &persistent("resumer", 3));
    assert!(present, "resumed within its expiry");
    // Connected for longer than the expiry interval, then the broker dies. The broker
    // records its commit time every second, so the restored session has about 2 s left.
    std::thread::sleep(Duration::from_millis(4000));
    broker.kill();
    drop(c);
    let broker = start(&store, &[]);
    let (_, present) = connect(broker.mqtt_addr(), &persistent("resumer", 3));
    assert!(
        present,
        "the session was connected until the crash: its expiry starts there"
    );
}

/// A store at its size limit refuses new persistent work with 0x97 Quota exceeded (counted
/// in `halyard_store_refused_total`) instead of failing: the broker keeps serving.
#[test]
fn full_store_refuses_publishes_with_quota_exceeded() {
    require_halyard();
    let store = StoreDir::new("quota");
    let mut env = store.env();
    env.push(("HALYARD_STORE__MAX_STORE_BYTES", (1u64 << 20).to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let broker = TestBroker::start_with(&env);
    let addr = broker.mqtt_addr();
    let (mut s, _) = connect(addr, &persistent("quota-sub", 3600));
    assert_eq!(s.subscribe(1, &[("q/#", 1)], &Props::new()), vec![1]);
    disconnect(s);
    let mut p = RawClient::connected(addr, Version::V5, "quota-pub");
    let payload = vec![7u8; 100_000];
    let mut codes = Vec::new();
    for i in 1..=30u16 {
        let code = p.publish(&Publish::new("q/big", &payload).qos(1, i));
        codes.push(code);
        if code == 0x97 {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&0x97),
        "PUBACK 0x97 once 1 MiB is stored (5.0 section 3.4.2.1): {codes:?}"
    );
    assert!(
        codes[..codes.len() - 1].iter().all(|c| *c == 0),
        "{codes:?}"
    );
    let m = broker.metrics();
    assert_eq!(
        m.get("halyard_store_refused_total{reason=\"0x97\"}"),
        Some(1.0)
    );
    // Still serving: a ping goes through on the same connection.
    p.send(&halyard_tests::raw::pingreq());
    assert!(matches!(
        p.recv_until(|x| matches!(x, Packet::PingResp)),
        Packet::PingResp
    ));
}

/// Outgoing QoS 2 state survives SIGKILL: an unacknowledged PUBLISH is resent after the
/// restart with DUP and the same packet identifier [MQTT-4.4.0-1]; once the subscriber sent
/// PUBREC, the restarted broker resends PUBREL, never the PUBLISH (exactly once).
#[test]
fn outgoing_qos2_state_is_resent_after_a_crash() {
    require_halyard();
    let store = StoreDir::new("inflight");
    let mut broker = start(&store, &[]);
    let addr = broker.mqtt_addr();
    let (mut s, _) = connect(addr, &persistent("inflight-sub", 3600));
    assert_eq!(s.subscribe(1, &[("i/t", 2)], &Props::new()), vec![2]);
    let mut p = RawClient::connected(addr, Version::V5, "inflight-pub");
    assert_eq!(p.publish(&Publish::new("i/t", b"once").qos(2, 7)), 0);
    let Packet::Publish { pid, dup, qos, .. } = s.recv_publish() else {
        unreachable!("recv_publish returns a PUBLISH")
    };
    assert_eq!((qos, dup), (2, false));
    // Not acknowledged: the broker dies with the message in flight.
    broker.kill();
    broker = start(&store, &[]);
    let (mut s, present) = connect(broker.mqtt_addr(), &persistent("inflight-sub", 3600));
    assert!(present);
    let Packet::Publish {
        pid: again,
        dup,
        payload,
        ..
    } = s.recv_publish()
    else {
        unreachable!("recv_publish returns a PUBLISH")
    };
    assert_eq!(
        (again, dup, payload.as_slice()),
        (pid, true, &b"once"[..]),
        "resent with DUP and the same packet id [MQTT-4.4.0-1] [MQTT-3.3.1-1]"
    );
    // PUBREC: the broker answers PUBREL; it dies before PUBCOMP.
    s.send(&ack(0x50, pid));
    let rel = s.recv_until(|x| matches!(x, Packet::Ack { kind: 6, .. }));
    assert_eq!(
        rel,
        Packet::Ack {
            kind: 6,
            pid,
            reason: 0
        }
    );
    broker.kill();
    let broker = start(&store, &[]);
    let (mut s, present) = connect(broker.mqtt_addr(), &persistent("inflight-sub", 3600));
    assert!(present);
    match s.recv() {
        Ok(Packet::Ack {
            kind: 6, pid: got, ..
        }) => assert_eq!(got, pid, "PUBREL resent"),
        other => panic!("expected the PUBREL again, never the PUBLISH: {other:?}"),
    }
    s.send(&ack(0x70, pid));
    // Nothing else follows: the message was delivered exactly once.
    match s.recv_within(Duration::from_millis(500)) {
        Err(RecvError::Timeout) => {}
        other => panic!("nothing more expected, got {other:?}"),
    }
}

/// The (packet id, DUP, payload) of the next `n` PUBLISHes, none acknowledged.
fn recv_unacked(s: &mut RawClient, n: usize) -> Vec<(u16, bool, Vec<u8>)> {
    (0..n)
        .map(|_| match s.recv_publish() {
            Packet::Publish {
                pid, dup, payload, ..
            } => (pid, dup, payload),
            _ => unreachable!("recv_publish returns a PUBLISH"),
        })
        .collect()
}

/// Outgoing QoS 1 state survives SIGKILL: PUBLISHes the subscriber received but did not
/// acknowledge come again after the restart with their original packet identifiers and
/// DUP=1 [MQTT-4.4.0-1] [MQTT-3.3.1-1], in order; later messages come with DUP=0.
fn qos1_in_flight_is_resent_with_its_packet_id_after_a_crash(version: Version) {
    require_halyard();
    let store = StoreDir::new(&format!("inflight-q1-{version:?}"));
    let mut broker = start(&store, &[]);
    let addr = broker.mqtt_addr();
    let sub = |addr| {
        let mut c = Connect::new(version, "q1-sub");
        c.clean = false;
        if version == Version::V5 {
            c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, 3600));
        }
        RawClient::connect(addr, &c)
    };
    let (mut s, _, code, _) = sub(addr);
    assert_eq!(code, 0);
    assert_eq!(s.subscribe(1, &[("q1/t", 1)], &Props::new()), vec![1]);
    let mut p = RawClient::connected(addr, Version::V5, "q1-pub");
    let publish = |p: &mut RawClient, n: u16| {
        let body = format!("m{n}");
        assert_eq!(
            p.publish(&Publish::new("q1/t", body.as_bytes()).qos(1, n)),
            0
        );
    };
    // Three delivered and acknowledged, so that the packet ids in flight at the crash are
    // not the first ones a fresh counter would give.
    for n in 1..=3 {
        publish(&mut p, n);
    }
    for (pid, _, _) in recv_unacked(&mut s, 3) {
        s.send(&ack(0x40, pid));
    }
    for n in 4..=7 {
        publish(&mut p, n);
    }
    let sent = recv_unacked(&mut s, 4);
    let payloads: Vec<&[u8]> = sent.iter().map(|(_, _, b)| b.as_slice()).collect();
    assert_eq!(payloads, [&b"m4"[..], b"m5", b"m6", b"m7"]);
    assert!(sent.iter().all(|(_, dup, _)| !dup), "first sends: {sent:?}");
    // Not acknowledged: the broker dies with the four in flight.
    broker.kill();
    broker = start(&store, &[]);
    let (mut s, present, code, _) = sub(broker.mqtt_addr());
    assert_eq!((code, present), (0, true));
    let again = recv_unacked(&mut s, 4);
    let want: Vec<_> = sent
        .iter()
        .map(|(pid, _, b)| (*pid, true, b.clone()))
        .collect();
    assert_eq!(
        again, want,
        "resent in order with DUP=1 and the same packet ids [MQTT-4.4.0-1]"
    );
    for (pid, _, _) in &again {
        s.send(&ack(0x40, *pid));
    }
    // A new message after the restart is a first send.
    let mut p = RawClient::connected(broker.mqtt_addr(), Version::V5, "q1-pub");
    publish(&mut p, 8);
    let next = recv_unacked(&mut s, 1);
    assert_eq!((next[0].1, next[0].2.as_slice()), (false, &b"m8"[..]));
}

#[test]
fn qos1_in_flight_is_resent_with_its_packet_id_after_a_crash_v5() {
    qos1_in_flight_is_resent_with_its_packet_id_after_a_crash(Version::V5);
}

#[test]
fn qos1_in_flight_is_resent_with_its_packet_id_after_a_crash_v311() {
    qos1_in_flight_is_resent_with_its_packet_id_after_a_crash(Version::V311);
}

/// As above past the sent limit's first lease (1024 entries, moved ahead while messages
/// flow): 1,100 messages delivered and acknowledged, then three left unacknowledged at the
/// crash come back with their packet ids and DUP=1, and only they.
#[test]
fn qos1_packet_ids_survive_a_crash_past_the_first_sent_lease() {
    require_halyard();
    let store = StoreDir::new("inflight-q1-lease");
    let mut broker = start(&store, &[]);
    let (mut s, _) = connect(broker.mqtt_addr(), &persistent("lease-sub", 3600));
    assert_eq!(s.subscribe(1, &[("l/t", 1)], &Props::new()), vec![1]);
    let mut p = RawClient::connected(broker.mqtt_addr(), Version::V5, "lease-pub");
    let flow = 1_100u16;
    // In rounds of 50 (within the broker's Receive Maximum and in-flight window), each
    // delivery acknowledged as it comes.
    for round in 0..flow / 50 {
        for n in round * 50 + 1..=round * 50 + 50 {
            let body = format!("m{n}");
            assert_eq!(
                p.publish(&Publish::new("l/t", body.as_bytes()).qos(1, n)),
                0
            );
        }
        for _ in 0..50 {
            let (pid, _, _) = recv_unacked(&mut s, 1)[0];
            s.send(&ack(0x40, pid));
        }
    }
    // The broker has read every PUBACK above once it answers this PINGREQ.
    s.send(&halyard_tests::raw::pingreq());
    s.recv_until(|x| matches!(x, Packet::PingResp));
    for n in flow + 1..=flow + 3 {
        assert_eq!(
            p.publish(&Publish::new("l/t", format!("m{n}").as_bytes()).qos(1, n)),
            0
        );
    }
    let sent = recv_unacked(&mut s, 3);
    broker.kill();
    broker = start(&store, &[]);
    let (mut s, present) = connect(broker.mqtt_addr(), &persistent("lease-sub", 3600));
    assert!(present);
    let again = recv_unacked(&mut s, 3);
    let want: Vec<_> = sent
        .iter()
        .map(|(pid, _, b)| (*pid, true, b.clone()))
        .collect();
    assert_eq!(again, want, "the same packet ids, DUP=1 [MQTT-4.4.0-1]");
    match s.recv_within(Duration::from_millis(500)) {
        Err(RecvError::Timeout) => {}
        other => panic!("nothing more expected, got {other:?}"),
    }
}
