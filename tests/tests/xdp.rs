//! Issue 6 end to end: the `halyard` binary in a network namespace with XDP on its veth.
//!
//! Needs root (namespaces, BPF), iproute2, util-linux `setpriv`, and the eBPF toolchain at
//! build time (`apt-get install clang-19 libbpf-dev`). Every namespace is created here with a
//! unique name and deleted on drop, also when an assertion fails; the broker process is
//! killed on drop. Addresses exist only inside the namespaces (10.203.200+N.0/24,
//! fd00:203:N::/64).
//!
//! Work that must happen inside a namespace (MQTT clients, admin HTTP requests) runs in a
//! child process of this same test binary started through `ip netns exec`, selected by the
//! `HALYARD_XDP_E2E` environment variable (see [`child_mode`]).
//!
//! Issue 6 item 4 (the broker's own accept/CONNECT/session counts per source, beside the XDP
//! SYN counts) is checked here in the namespace test and, without XDP and without root, over
//! loopback in [`broker_counts_accepts_connects_and_sessions_per_source_without_xdp`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use halyard_tests::http::{self, Metrics};
use halyard_tests::raw::{Connect, RawClient, RecvError, Version};
use halyard_tests::{TestBroker, WAIT, halyard_bin, require_halyard, wait_for};

const MQTT_PORT: u16 = 1883;
const ADMIN: &str = "127.0.0.1:9100";
const CONNECTIONS: usize = 50;
/// TCP connections that never send CONNECT (a scanner's or a half-open client's).
const BARE_TCP: usize = 20;
/// Connection attempts of the SYN flood test, and how long each may take.
const BURST: usize = 100;
const BURST_WAIT: Duration = Duration::from_millis(500);
const CHILD_ENV: &str = "HALYARD_XDP_E2E";
const BEGIN: &str = "<<<xdp-e2e-output>>>";
const END: &str = "<<<end>>>";
/// Bound on broker start and on each child step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (iproute2 installed? root?)"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Namespace `a` (broker, `veth_a`: 10.203.M.1, fd00:203:N::1) and `b` (clients, .2 / ::2).
struct TestNet {
    n: u32,
    veth_a: String,
    a: Netns,
    b: Netns,
}

impl TestNet {
    fn new() -> TestNet {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) + 1;
        let tag = format!("{}{n}", std::process::id() % 100_000);
        let a = Netns(format!("hxe2e-a-{tag}"));
        run(&["ip", "netns", "add", &a.0]);
        let b = Netns(format!("hxe2e-b-{tag}"));
        run(&["ip", "netns", "add", &b.0]);
        let (va, vb) = (format!("hxea{tag}"), format!("hxeb{tag}"));
        run(&[
            "ip", "link", "add", &va, "netns", &a.0, "type", "veth", "peer", "name", &vb, "netns",
            &b.0,
        ]);
        let net = TestNet {
            n,
            veth_a: va.clone(),
            a,
            b,
        };
        for (ns, dev, host) in [(&net.a.0, &va, 1), (&net.b.0, &vb, 2)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", net.v4(host)),
                "dev",
                dev,
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{}/64", net.v6(host)),
                "dev",
                dev,
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        net
    }

    fn v4(&self, host: u8) -> String {
        format!("10.203.{}.{host}", 200 + self.n % 50)
    }

    fn v6(&self, host: u8) -> String {
        format!("fd00:203:{}::{host}", self.n)
    }
}

/// The broker process, killed on drop; its log is printed when the test fails.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Broker {
    /// Starts `halyard run` inside `ns`, optionally through `setpriv` as `nobody`, with extra
    /// `HALYARD_*` overrides.
    fn start(net: &TestNet, as_nobody: bool, env: &[(&str, &str)]) -> Broker {
        let dir = std::env::temp_dir().join("halyard-tests-xdp");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}.log", net.a.0));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.a.0]);
        if as_nobody {
            cmd.args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ]);
        }
        cmd.arg(halyard_bin())
            .arg("run")
            .env("HALYARD_LISTENERS__TCP__BIND", format!("[::]:{MQTT_PORT}"))
            .env("HALYARD_ADMIN__BIND", ADMIN)
            .env("HALYARD_IO__THREADS", "1")
            .env("HALYARD_XDP__ENABLED", "true")
            .env("HALYARD_XDP__INTERFACES", &net.veth_a)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env(
                "HALYARD_IO__BACKEND",
                std::env::var("HALYARD_TEST_BACKEND").unwrap_or_else(|_| "auto".into()),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        let child = cmd.spawn().expect("start halyard through ip netns exec");
        let broker = Broker { child, log };
        // Ready when the admin server answers.
        in_netns(&net.a, &format!("get {ADMIN} /healthz"));
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- broker log ---\n{}", self.log());
        }
    }
}

/// Runs this test binary inside `ns` in child mode `job` and returns what it printed. The
/// child runs [`CHILD_TEST`], which does nothing but the job in child mode.
fn in_netns(ns: &Netns, job: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, job)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child `{job}` in {} failed: {}\n{stdout}\n{}",
        ns.0,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let start = stdout.find(BEGIN).map(|i| i + BEGIN.len());
    let end = stdout.rfind(END);
    match (start, end) {
        (Some(s), Some(e)) if s <= e => stdout[s..e].to_string(),
        _ => panic!("child `{job}` printed no result:\n{stdout}"),
    }
}

/// The test that child processes run.
const CHILD_TEST: &str = "child_job";

/// In a child process (`HALYARD_XDP_E2E` set): performs the job it names. In the normal run
/// it checks the child-mode parsing of jobs instead, so it asserts something either way.
#[test]
fn child_job() {
    match std::env::var(CHILD_ENV) {
        Ok(job) => child_mode(&job),
        Err(_) => {
            let r = std::panic::catch_unwind(|| child_mode("frobnicate"));
            assert!(r.is_err(), "an unknown job must fail the child");
        }
    }
}

fn child_mode(job: &str) {
    let words: Vec<&str> = job.split_whitespace().collect();
    let result = match words.as_slice() {
        ["get", addr, path] => child_get(addr.parse().unwrap(), path),
        ["mqtt", addr, count] => child_mqtt(addr.parse().unwrap(), count.parse().unwrap()),
        ["tcp", addr, count] => child_tcp(addr.parse().unwrap(), count.parse().unwrap()),
        ["burst", addr, count] => child_burst(addr.parse().unwrap(), count.parse().unwrap()),
        _ => panic!("unknown child job {job:?}"),
    };
    println!("{BEGIN}{result}{END}");
}

/// GET `path` until it answers 200 (the broker may still be starting), bounded.
fn child_get(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match http::get(addr, path) {
            Ok(r) if r.status == 200 => return r.body,
            other if Instant::now() > deadline => panic!("GET {path}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Opens `count` MQTT 3.1.1 connections (CONNECT answered by CONNACK 0) and closes them.
fn child_mqtt(addr: SocketAddr, count: usize) -> String {
    let mut open = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        s.write_all(&Connect::new(Version::V311, &format!("xdp-e2e-{i}")).encode())
            .unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK for connection {i}");
        open.push(s);
    }
    for mut s in open {
        let _ = s.write_all(&[0xE0, 0]); // DISCONNECT
    }
    format!("{count}")
}

/// Opens `count` TCP connections that send nothing, then closes them.
fn child_tcp(addr: SocketAddr, count: usize) -> String {
    let open: Vec<TcpStream> = (0..count)
        .map(|_| {
            TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
        })
        .collect();
    format!("{}", open.len())
}

/// Starts `count` connects at once (one thread each), each given [`BURST_WAIT`] to complete,
/// and returns how many were established. The wait is below the kernel's first SYN
/// retransmission (1 s), so every attempt sends exactly one SYN.
fn child_burst(addr: SocketAddr, count: usize) -> String {
    let attempts: Vec<_> = (0..count)
        .map(|_| std::thread::spawn(move || TcpStream::connect_timeout(&addr, BURST_WAIT).ok()))
        .collect();
    let open: Vec<TcpStream> = attempts
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    format!("{}", open.len())
}

fn metrics(net: &TestNet) -> Metrics {
    Metrics::parse(&in_netns(&net.a, &format!("get {ADMIN} /metrics")))
}

fn status(net: &TestNet) -> serde_json::Value {
    serde_json::from_str(&in_netns(&net.a, &format!("get {ADMIN} /status"))).unwrap()
}

fn ctl_xdp_top(net: &TestNet) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &net.a.0])
        .arg(halyard_bin())
        .args(["ctl", "xdp", "top", "--admin", ADMIN])
        .output()
        .unwrap()
}

/// The words of the first line of `text` whose first word is `first`.
fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&first))
        .unwrap_or_else(|| panic!("no `{first}` row in:\n{text}"))
}

/// The broker's four per-source counters of `source`: accepts, refused, CONNECTs, sessions.
fn source_counts(m: &Metrics, source: &str) -> [Option<f64>; 4] {
    ["accepts", "refused", "connects", "sessions"]
        .map(|c| m.get(&format!("halyard_source_{c}_total{{source=\"{source}\"}}")))
}

#[test]
fn fifty_mqtt_connections_are_fifty_syns_on_metrics_and_ctl_top() {
    require_halyard();
    let net = TestNet::new();
    let broker = Broker::start(&net, false, &[]);
    let st = status(&net);
    assert_eq!(st["xdp"]["enabled"], true, "{st}\n{}", broker.log());
    assert_eq!(
        st["xdp"]["attachments"][0]["interface"],
        net.veth_a.as_str()
    );

    // First connections that never send CONNECT (from the IPv4 source only), then MQTT
    // sessions. One I/O thread takes connections from one accept queue in order, so all the
    // bare ones are accepted before the last CONNACK arrives.
    let bare = format!("tcp {}:{MQTT_PORT} {BARE_TCP}", net.v4(1));
    assert_eq!(in_netns(&net.b, &bare), BARE_TCP.to_string());
    for host in [net.v4(1), format!("[{}]", net.v6(1))] {
        let job = format!("mqtt {host}:{MQTT_PORT} {CONNECTIONS}");
        assert_eq!(in_netns(&net.b, &job), CONNECTIONS.to_string());
    }

    let m = metrics(&net);
    let (src4, src6) = (net.v4(2), net.v6(2));
    let (n, bare) = (CONNECTIONS as f64, BARE_TCP as f64);
    assert_eq!(m.get("halyard_xdp_enabled"), Some(1.0));
    assert_eq!(m.get("halyard_xdp_syn_total"), Some(2.0 * n + bare));
    assert_eq!(m.get("halyard_xdp_syn_dropped_total"), Some(0.0));
    assert_eq!(m.get("halyard_xdp_tracked_sources"), Some(2.0));
    for (src, syn) in [(&src4, n + bare), (&src6, n)] {
        let key = format!("halyard_xdp_source_syn_total{{source=\"{src}\"}}");
        assert_eq!(m.get(&key), Some(syn), "{key}");
    }
    let mode = format!(
        "halyard_xdp_attach_mode{{interface=\"{}\",mode=\"driver\"}}",
        net.veth_a
    );
    assert_eq!(m.get(&mode), Some(1.0), "{mode}");
    assert!(m.get("halyard_xdp_packets_total").unwrap_or(0.0) >= 4.0 * CONNECTIONS as f64);

    // Item 4: the broker's own counts beside the SYNs. Every SYN became an accepted
    // connection, but only the MQTT ones sent CONNECT and got a session.
    let some = |v: f64| Some(v);
    assert_eq!(
        source_counts(&m, &src4),
        [some(n + bare), some(0.0), some(n), some(n)],
        "{src4}: accepts, refused, connects, sessions"
    );
    assert_eq!(
        source_counts(&m, &src6),
        [some(n), some(0.0), some(n), some(n)],
        "{src6}: accepts, refused, connects, sessions"
    );
    assert_eq!(m.get("halyard_source_tracked"), Some(2.0));
    assert_eq!(m.get("halyard_source_evictions_total"), Some(0.0));
    let st = status(&net);
    assert_eq!(st["sources"]["tracked"], 2, "{st}");
    assert_eq!(st["sources"]["top"][0]["source"], src4.as_str(), "{st}");
    assert_eq!(st["sources"]["top"][0]["accepts"], CONNECTIONS + BARE_TCP);

    let out = ctl_xdp_top(&net);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("halyard ctl xdp top:\n{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        row(&text, "SOURCE")[..5],
        ["SOURCE", "SYN", "ACCEPTED", "CONNECT", "SESSIONS"]
    );
    let (all, fifty) = (
        (CONNECTIONS + BARE_TCP).to_string(),
        CONNECTIONS.to_string(),
    );
    let (all, fifty) = (all.as_str(), fifty.as_str());
    assert_eq!(row(&text, &src4)[1..5], [all, all, fifty, fifty]);
    assert_eq!(row(&text, &src6)[1..5], [fifty, fifty, fifty, fifty]);
}

/// A SYN flood cut by `xdp.syn_rate_limit`: the XDP SYN count of the source is far above the
/// connections the broker accepted, and none of them sent CONNECT.
#[test]
fn syns_that_never_became_sessions_show_beside_the_broker_counts() {
    require_halyard();
    let net = TestNet::new();
    let _broker = Broker::start(&net, false, &[("HALYARD_XDP__SYN_RATE_LIMIT", "10")]);
    let job = format!("burst {}:{MQTT_PORT} {BURST}", net.v4(1));
    let established: usize = in_netns(&net.b, &job).parse().unwrap();
    assert!(
        (1..BURST).contains(&established),
        "{established} of {BURST} attempts got through a limit of 10/s"
    );
    let src = net.v4(2);
    // The broker accepts in its own time: wait (bounded) until it has taken them all.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let m = loop {
        let m = metrics(&net);
        if source_counts(&m, &src)[0] == Some(established as f64) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "accepts never reached {established}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let xdp = |c: &str| m.get(&format!("halyard_xdp_source_{c}_total{{source=\"{src}\"}}"));
    assert_eq!(xdp("syn"), Some(BURST as f64));
    let dropped = xdp("syn_dropped").unwrap_or(0.0);
    assert!(
        dropped > 0.0 && dropped <= (BURST - established) as f64,
        "{dropped} dropped"
    );
    let n = established as f64;
    assert_eq!(
        source_counts(&m, &src),
        [Some(n), Some(0.0), Some(0.0), Some(0.0)],
        "{src}: accepts, refused, connects, sessions"
    );

    let out = ctl_xdp_top(&net);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let (burst, n) = (BURST.to_string(), established.to_string());
    assert_eq!(
        row(&text, &src)[1..5],
        [burst.as_str(), n.as_str(), "0", "0"],
        "SYN ACCEPTED CONNECT SESSIONS in:\n{text}"
    );
}

#[test]
fn without_capabilities_the_broker_runs_and_reports_xdp_disabled() {
    require_halyard();
    let net = TestNet::new();
    let broker = Broker::start(&net, true, &[]);
    let st = status(&net);
    assert_eq!(st["xdp"]["enabled"], false, "{st}");
    let reason = st["xdp"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CAP_BPF"),
        "reason: {reason}\n{}",
        broker.log()
    );
    assert_eq!(metrics(&net).get("halyard_xdp_enabled"), Some(0.0));
    // MQTT still works.
    let job = format!("mqtt {}:{MQTT_PORT} 1", net.v4(1));
    assert_eq!(in_netns(&net.b, &job), "1");
    let out = ctl_xdp_top(&net);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("XDP is disabled"));
    // The broker's own counts are there without XDP; the XDP columns are unknown.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(row(&text, &net.v4(2))[1..5], ["-", "1", "1", "1"], "{text}");
    // Logged once.
    assert_eq!(broker.log().matches("XDP accounting disabled").count(), 1);
}

/// Without XDP (the default configuration) and without root: the broker still counts, per
/// source, the connections it accepted, refused at accept, the CONNECTs it received and the
/// sessions it accepted; they are on `/metrics`, in `/status` and in `halyard ctl xdp top`.
#[test]
fn broker_counts_accepts_connects_and_sessions_per_source_without_xdp() {
    const BARE: usize = 3;
    const STORM: usize = 5;
    const FLAP_MAX: usize = 3;
    const KEPT: usize = 2;
    // Room for every connection of the test open at once (closed ones may linger for a
    // moment), so only the deliberate excess at the end is refused.
    const PER_SOURCE: usize = BARE + STORM + KEPT;
    require_halyard();
    let (flap, per_source) = (FLAP_MAX.to_string(), PER_SOURCE.to_string());
    let broker = TestBroker::start_with(&[
        // One I/O thread: accepts are in order, and a connection that closes releases its
        // per-source slot in the same step that lowers `halyard_connections`.
        ("HALYARD_IO__THREADS", "1"),
        // The bare connections below never send a byte: with TCP_DEFER_ACCEPT (default 1 s)
        // the kernel would hand them over only when the deferral ends, in no set order, so
        // the one over the per-source limit would not be the last one opened.
        ("HALYARD_LISTENERS__TCP__DEFER_ACCEPT_SECS", "0"),
        ("HALYARD_MQTT__CONNECT_TIMEOUT_SECS", "600"),
        ("HALYARD_LIMITS__FLAP_MAX_CONNECTS", &flap),
        ("HALYARD_LIMITS__MAX_CONNECTIONS_PER_SOURCE", &per_source),
    ]);
    let addr = broker.mqtt_addr();
    // The harness's readiness probes connected too. One I/O thread accepts in order, so once
    // a session's CONNACK arrives they are counted: take the counts from there as the base.
    drop(RawClient::connected(addr, Version::V311, "warmup"));
    let base = source_counts(&broker.metrics(), "127.0.0.1").map(|v| v.unwrap_or(0.0));
    assert_eq!(base[1], 0.0, "nothing refused yet");
    let wait_open = |n: usize| {
        wait_for(WAIT, || {
            (broker.metrics().get("halyard_connections") == Some(n as f64)).then_some(())
        })
        .unwrap_or_else(|| panic!("not {n} connections open; log:\n{}", broker.log_text()))
    };
    wait_open(0);
    // Connections that never send CONNECT, kept open.
    let bare: Vec<RawClient> = (0..BARE)
        .map(|_| RawClient::open(addr, Version::V311))
        .collect();
    // A reconnect storm: one client id over and over; beyond FLAP_MAX connects the flapping
    // detector refuses it, so CONNECTs outnumber sessions.
    for i in 0..STORM {
        let connect = Connect::new(Version::V311, "storm");
        let (mut c, _, code, _) = RawClient::connect(addr, &connect);
        assert_eq!(
            code == 0,
            i < FLAP_MAX,
            "CONNACK {code} for storm connect {i}"
        );
        c.send(&[0xE0, 0]);
    }
    let kept: Vec<RawClient> = (0..KEPT)
        .map(|i| RawClient::connected(addr, Version::V311, &format!("kept-{i}")))
        .collect();
    wait_open(BARE + KEPT);
    // Up to the per-source limit, then one over it: closed at accept.
    let fill: Vec<RawClient> = (BARE + KEPT..PER_SOURCE)
        .map(|_| RawClient::open(addr, Version::V311))
        .collect();
    let mut refused = RawClient::open(addr, Version::V311);
    assert!(
        matches!(refused.recv(), Err(RecvError::Closed)),
        "a connection over max_connections_per_source must be closed"
    );

    let m = wait_for(WAIT, || {
        let m = broker.metrics();
        let r = m.get("halyard_source_refused_total{source=\"127.0.0.1\"}");
        (r == Some(1.0)).then_some(m)
    })
    .unwrap_or_else(|| panic!("no refusal counted:\n{:?}", broker.metrics().samples));
    assert_eq!(m.get("halyard_xdp_enabled"), Some(0.0));
    let counts = source_counts(&m, "127.0.0.1");
    let delta = [PER_SOURCE + STORM + 1, 1, STORM + KEPT, FLAP_MAX + KEPT];
    let want: [f64; 4] = std::array::from_fn(|i| base[i] + delta[i] as f64);
    assert_eq!(
        counts,
        want.map(Some),
        "127.0.0.1: accepts, refused, connects, sessions"
    );
    assert_eq!(m.get("halyard_source_tracked"), Some(1.0));
    assert_eq!(m.get("halyard_source_evictions_total"), Some(0.0));

    let st: serde_json::Value = serde_json::from_str(&broker.http_get("/status").body).unwrap();
    let top = &st["sources"]["top"][0];
    assert_eq!(top["source"], "127.0.0.1", "{st}");
    assert_eq!(top["accepts"].as_f64(), Some(want[0]), "{st}");
    assert_eq!(top["sessions"].as_f64(), Some(want[3]), "{st}");
    assert_eq!(st["sources"]["max"], 65536, "{st}");

    let admin = broker.admin_addr().to_string();
    let out = Command::new(halyard_bin())
        .args(["ctl", "xdp", "top", "--admin", &admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "XDP is off: ctl xdp top fails");
    assert!(String::from_utf8_lossy(&out.stderr).contains("XDP is disabled"));
    let e = want.map(|v| v.to_string());
    assert_eq!(
        row(&text, "127.0.0.1")[1..6],
        [
            "-",
            e[0].as_str(),
            e[2].as_str(),
            e[3].as_str(),
            e[1].as_str()
        ],
        "SYN ACCEPTED CONNECT SESSIONS REFUSED in:\n{text}"
    );
    drop((bare, kept, fill));
}
