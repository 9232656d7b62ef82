//! Starting and stopping the brokers under comparison, each fresh, pinned with `taskset`,
//! on its own loopback port, with a minimal configuration meant to be fair (same in-flight
//! and queue limits, TCP_NODELAY where the broker has the option, no persistence).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::CompareError;
use super::cgroup::CpuQuota;

/// QoS 1 messages in flight per client, the same for every broker.
pub const INFLIGHT: u32 = 1000;
/// Queued messages per client, the same for every broker.
pub const QUEUED: u32 = 10_000;
/// Halyard `[limits]` overrides for the benchmark: every connection comes from one source
/// (127.0.0.1), so the per-source limits are disabled (0) and the node-wide connection limit
/// is above the largest `conn` case.
pub const HALYARD_BENCH_LIMITS: [(&str, &str); 5] = [
    ("HALYARD_LIMITS__MAX_CONNECTIONS", "250000"),
    ("HALYARD_LIMITS__MAX_CONNECTIONS_PER_SOURCE", "0"),
    ("HALYARD_LIMITS__CONNECT_RATE_PER_SOURCE", "0"),
    ("HALYARD_LIMITS__FLAP_MAX_CONNECTS", "0"),
    ("HALYARD_LIMITS__AUTH_FAILURES_PER_SOURCE", "0"),
];
/// How long a broker may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a broker may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A broker under comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Halyard on the given backend (`uring` or `epoll`).
    Halyard {
        /// `io.backend`.
        backend: String,
        /// `io.threads` (1 unless the name ends in `-t<N>`).
        threads: usize,
        /// `store.enabled`: durable sessions in a fresh store directory per run (the
        /// `-store` variants), else in memory.
        store: bool,
    },
    /// Eclipse Mosquitto.
    Mosquitto,
    /// rumqttd.
    Rumqttd,
}

impl Broker {
    /// Parses `halyard-uring`, `halyard-epoll`, `halyard` (= uring), with `-t<N>` for N I/O
    /// threads (`halyard-uring-t2`) and/or `-store` for the store on (`halyard-uring-store`,
    /// `halyard-epoll-t2-store`), `mosquitto`, `rumqttd`.
    pub fn parse(s: &str) -> Option<Broker> {
        let (base, store) = match s.strip_suffix("-store") {
            Some(base) => (base, true),
            None => (s, false),
        };
        let (base, threads) = match base.rsplit_once("-t") {
            Some((b, n)) if b.starts_with("halyard") => match n.parse::<usize>() {
                Ok(n @ 2..=64) => (b, n),
                _ => return None,
            },
            _ => (base, 1),
        };
        let halyard = |backend: &str| {
            Some(Broker::Halyard {
                backend: backend.into(),
                threads,
                store,
            })
        };
        match base {
            "halyard" | "halyard-uring" => halyard("uring"),
            "halyard-epoll" => halyard("epoll"),
            _ if store || threads > 1 => None,
            "mosquitto" => Some(Broker::Mosquitto),
            "rumqttd" => Some(Broker::Rumqttd),
            _ => None,
        }
    }

    /// Display name, e.g. `halyard-uring`.
    pub fn name(&self) -> String {
        match self {
            Broker::Halyard {
                backend,
                threads,
                store,
            } => format!(
                "halyard-{backend}{}{}",
                if *threads > 1 {
                    format!("-t{threads}")
                } else {
                    String::new()
                },
                if *store { "-store" } else { "" }
            ),
            Broker::Mosquitto => "mosquitto".into(),
            Broker::Rumqttd => "rumqttd".into(),
        }
    }

    /// Whether this is one of Halyard's variants.
    pub fn is_halyard(&self) -> bool {
        matches!(self, Broker::Halyard { .. })
    }

    /// The same Halyard variant with one I/O thread, for a `-t<N>` variant (N > 1); `None`
    /// otherwise.
    pub fn one_thread_twin(&self) -> Option<Broker> {
        match self {
            Broker::Halyard {
                backend,
                threads,
                store,
            } if *threads > 1 => Some(Broker::Halyard {
                backend: backend.clone(),
                threads: 1,
                store: *store,
            }),
            _ => None,
        }
    }

    /// The broker's I/O threads as configured here (1 for the peers: Mosquitto has one,
    /// rumqttd sizes its own runtime).
    pub fn io_threads(&self) -> usize {
        match self {
            Broker::Halyard { threads, .. } => *threads,
            _ => 1,
        }
    }
}

/// Where the broker executables are.
#[derive(Debug, Clone)]
pub struct BrokerBins {
    /// The `halyard` release binary.
    pub halyard: PathBuf,
    /// `mosquitto`.
    pub mosquitto: PathBuf,
    /// `rumqttd`.
    pub rumqttd: PathBuf,
}

/// A running broker.
#[derive(Debug)]
pub struct Running {
    child: Child,
    /// Its pid (taskset and chrt exec the broker, so this is the broker itself).
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its CPU quota, when the run sets one; removed after the broker exits.
    pub quota: Option<CpuQuota>,
}

fn mosquitto_conf(port: u16) -> String {
    // max_queued_messages stays unlimited (0): with both it and max_inflight_messages set,
    // Mosquitto 2.0.11 was seen here to hold back QoS 1 fan-in deliveries for seconds (lost
    // at the end of a run); with either alone it delivers everything. The closed-loop window
    // keeps every queue far below QUEUED anyway.
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\n\
         max_inflight_messages {INFLIGHT}\nmax_queued_messages 0\nmax_keepalive 65535\n\
         log_dest none\n"
    )
}

fn rumqttd_conf(port: u16) -> String {
    // Small commit-log segments (100 KiB x 10 per filter) so that memory reflects the
    // broker, not its default 100 MiB segments; no delay between accepts; high limits.
    // max_outgoing_packet_count is raised from the sample config's 200 to INFLIGHT: at 200,
    // QoS 0 fan-in (640 deliveries outstanding for one subscriber) ran at a third of the
    // rate with both rumqttd and the generator mostly idle.
    format!(
        "id = 0\n\n[router]\nid = 0\nmax_connections = 250010\nmax_outgoing_packet_count = {INFLIGHT}\n\
         max_segment_size = 102400\nmax_segment_count = 10\n\n[v4.1]\nname = \"v4-1\"\n\
         listen = \"127.0.0.1:{port}\"\nnext_connection_delay_ms = 0\n\n[v4.1.connections]\n\
         connection_timeout_ms = 60000\nmax_payload_size = 1048576\nmax_inflight_count = {INFLIGHT}\n\
         dynamic_filters = true\n"
    )
}

/// Starts `broker` on 127.0.0.1:`port` through `launcher` (`taskset`, maybe `chrt`: see
/// [`super::launcher`]), with its config files in `work`, limited to `cpu_per_thread` CPUs per
/// I/O thread when given (see [`CpuQuota`]); returns once it accepts TCP connections.
pub fn start(
    broker: &Broker,
    bins: &BrokerBins,
    port: u16,
    launcher: Command,
    cpu_per_thread: Option<f64>,
    work: &Path,
) -> Result<Running, CompareError> {
    // A port someone else holds (another benchmark run with the same --base-port) would make
    // this run measure that process's broker: refuse instead.
    let admin = port.wrapping_add(1000);
    for p in [port, admin] {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", p)) {
            return Err(CompareError::Broker(
                broker.name(),
                format!(
                    "port {p} is not free ({e}): is another benchmark running? pick --base-port"
                ),
            ));
        }
    }
    fs::create_dir_all(work)?;
    let mut cmd = launcher;
    match broker {
        Broker::Halyard {
            backend,
            threads,
            store,
        } => {
            if *store {
                // A fresh, empty store for every run.
                let dir = work.join(format!("store-{port}"));
                if dir.exists() {
                    fs::remove_dir_all(&dir)?;
                }
                cmd.env("HALYARD_STORE__ENABLED", "true")
                    .env("HALYARD_STORE__DIR", dir);
            }
            cmd.arg(&bins.halyard)
                .arg("run")
                .env("HALYARD_LISTENERS__TCP__BIND", format!("127.0.0.1:{port}"))
                .env("HALYARD_ADMIN__BIND", format!("127.0.0.1:{admin}"))
                .env("HALYARD_IO__THREADS", threads.to_string())
                .env("HALYARD_IO__BACKEND", backend)
                .env("HALYARD_LOG__LEVEL", "warn")
                .env("HALYARD_MQTT__MAX_INFLIGHT", INFLIGHT.to_string())
                .env("HALYARD_MQTT__MAX_QUEUED_MESSAGES", QUEUED.to_string());
            // Every client of a benchmark comes from 127.0.0.1: the per-source abuse limits
            // (connections, connect rate, flapping, failed logins) are off, as in the peers,
            // which have none.
            for (key, value) in HALYARD_BENCH_LIMITS {
                cmd.env(key, value);
            }
        }
        Broker::Mosquitto => {
            let conf = work.join(format!("mosquitto-{port}.conf"));
            fs::write(&conf, mosquitto_conf(port))?;
            cmd.arg(&bins.mosquitto).arg("-c").arg(conf);
        }
        Broker::Rumqttd => {
            let conf = work.join(format!("rumqttd-{port}.toml"));
            fs::write(&conf, rumqttd_conf(port))?;
            cmd.arg(&bins.rumqttd).arg("--config").arg(conf);
        }
    }
    let log = fs::File::create(work.join(format!("{}-{port}.log", broker.name())))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd
        .spawn()
        .map_err(|e| CompareError::Broker(broker.name(), format!("cannot start: {e}")))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut running = Running {
        pid: child.id(),
        child,
        addr,
        quota: None,
    };
    if let Some(cpus) = cpu_per_thread {
        // The whole process (all its threads) moves into the group; it has only just
        // started, before any load.
        let quota = cpus * broker.io_threads() as f64;
        match CpuQuota::apply(running.pid, quota, &port.to_string()) {
            Ok(q) => running.quota = Some(q),
            Err(e) => {
                stop(&mut running);
                return Err(e);
            }
        }
    }
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Let it finish starting (threads, allocator) before the baseline is sampled.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            return Err(CompareError::Broker(
                broker.name(),
                format!("exited at start: {status}"),
            ));
        }
        if Instant::now() > deadline {
            stop(&mut running);
            return Err(CompareError::Broker(
                broker.name(),
                "did not listen within 20 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a broker: SIGTERM, then SIGKILL after a grace period.
pub fn stop(r: &mut Running) {
    stop_child(&mut r.child);
    r.quota = None;
}

/// Stops a child process we spawned and have not reaped: SIGTERM, then SIGKILL after
/// [`STOP_TIMEOUT`]; reaps it.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped: checked just
        // above) and a valid signal number has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in [
            "halyard-uring",
            "halyard-epoll",
            "halyard-uring-store",
            "halyard-epoll-store",
            "halyard-uring-t2",
            "halyard-epoll-t2-store",
            "mosquitto",
            "rumqttd",
        ] {
            assert_eq!(Broker::parse(n).unwrap().name(), n);
        }
        assert_eq!(Broker::parse("halyard-epoll-t2").unwrap().io_threads(), 2);
        assert_eq!(Broker::parse("halyard-epoll").unwrap().io_threads(), 1);
        for bad in [
            "halyard-uring-t1",
            "halyard-uring-tx",
            "mosquitto-t2",
            "rumqttd-t2",
        ] {
            assert!(Broker::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Broker::parse("halyard").unwrap().name(), "halyard-uring");
        assert!(Broker::parse("emqx").is_none());
        assert!(Broker::parse("mosquitto-store").is_none());
    }

    #[test]
    fn configs_bind_loopback_with_shared_limits() {
        let m = mosquitto_conf(21001);
        assert!(m.contains("listener 21001 127.0.0.1\n"));
        assert!(m.contains("set_tcp_nodelay true") && m.contains("persistence false"));
        assert!(m.contains(&format!("max_inflight_messages {INFLIGHT}")));
        let r = rumqttd_conf(21002);
        assert!(r.contains("listen = \"127.0.0.1:21002\""));
        assert!(r.contains(&format!("max_inflight_count = {INFLIGHT}")));
        assert!(r.contains("max_segment_size = 102400"));
        // Every benchmark client comes from 127.0.0.1: Halyard's per-source limits are off.
        for key in [
            "HALYARD_LIMITS__MAX_CONNECTIONS_PER_SOURCE",
            "HALYARD_LIMITS__CONNECT_RATE_PER_SOURCE",
            "HALYARD_LIMITS__FLAP_MAX_CONNECTS",
        ] {
            assert!(HALYARD_BENCH_LIMITS.contains(&(key, "0")), "{key}");
        }
    }
}
