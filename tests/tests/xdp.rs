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

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use halyard_tests::http::{self, Metrics};
use halyard_tests::raw::{Connect, Version};
use halyard_tests::{halyard_bin, require_halyard};

const MQTT_PORT: u16 = 1883;
const ADMIN: &str = "127.0.0.1:9100";
const CONNECTIONS: usize = 50;
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
    /// Starts `halyard run` inside `ns`, optionally through `setpriv` as `nobody`.
    fn start(net: &TestNet, as_nobody: bool) -> Broker {
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
            .env("RUST_LOG", "info")
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

#[test]
fn fifty_mqtt_connections_are_fifty_syns_on_metrics_and_ctl_top() {
    require_halyard();
    let net = TestNet::new();
    let broker = Broker::start(&net, false);
    let st = status(&net);
    assert_eq!(st["xdp"]["enabled"], true, "{st}\n{}", broker.log());
    assert_eq!(
        st["xdp"]["attachments"][0]["interface"],
        net.veth_a.as_str()
    );

    for host in [net.v4(1), format!("[{}]", net.v6(1))] {
        let job = format!("mqtt {host}:{MQTT_PORT} {CONNECTIONS}");
        assert_eq!(in_netns(&net.b, &job), CONNECTIONS.to_string());
    }

    let m = metrics(&net);
    let (src4, src6) = (net.v4(2), net.v6(2));
    assert_eq!(m.get("halyard_xdp_enabled"), Some(1.0));
    assert_eq!(
        m.get("halyard_xdp_syn_total"),
        Some(2.0 * CONNECTIONS as f64)
    );
    assert_eq!(m.get("halyard_xdp_syn_dropped_total"), Some(0.0));
    assert_eq!(m.get("halyard_xdp_tracked_sources"), Some(2.0));
    for src in [&src4, &src6] {
        let key = format!("halyard_xdp_source_syn_total{{source=\"{src}\"}}");
        assert_eq!(m.get(&key), Some(CONNECTIONS as f64), "{key}");
    }
    let mode = format!(
        "halyard_xdp_attach_mode{{interface=\"{}\",mode=\"driver\"}}",
        net.veth_a
    );
    assert_eq!(m.get(&mode), Some(1.0), "{mode}");
    assert!(m.get("halyard_xdp_packets_total").unwrap_or(0.0) >= 4.0 * CONNECTIONS as f64);

    let out = ctl_xdp_top(&net);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("halyard ctl xdp top:\n{text}");
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for src in [&src4, &src6] {
        assert!(
            text.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(src.as_str()) && w.next() == Some("50")
            }),
            "no `{src} 50` row in:\n{text}"
        );
    }
}

#[test]
fn without_capabilities_the_broker_runs_and_reports_xdp_disabled() {
    require_halyard();
    let net = TestNet::new();
    let broker = Broker::start(&net, true);
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
    // Logged once.
    assert_eq!(broker.log().matches("XDP accounting disabled").count(), 1);
}
