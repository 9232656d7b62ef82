//! The cluster under test: `halyard` core processes on 127.0.0.x, configured through the
//! environment as an operator would (`HALYARD_NODE__*`, `HALYARD_CLUSTER__*`), observed
//! through the admin `/status`, stopped by pid, their data directory removed.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ClusterBenchError, http};
use crate::compare::brokers::{HALYARD_BENCH_LIMITS, INFLIGHT, QUEUED, stop_child};

/// How long a node may take to accept MQTT connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to form (every node sees every member, a leader is known).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Pids of the nodes running now, for the watchdog ([`kill_live`]).
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    // A list of pids: a panic while holding the lock cannot leave it half-updated.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs every node still running (the watchdog's last resort before it exits).
pub fn kill_live() {
    for &pid in live().iter() {
        if let Ok(p) = i32::try_from(pid) {
            // SAFETY: kill(2) on a node we spawned; its pid leaves the list when it is reaped,
            // so it cannot name another process.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// Where and how the nodes run.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Node `i` gets the address 127.0.0.(`first_ip` + i).
    pub first_ip: u8,
    /// Cores (3: the smallest group that survives the loss of one).
    pub cores: usize,
    /// MQTT port of every node; admin on `port + 1`, cluster listener on `port + 2`.
    pub port: u16,
    /// `io.backend`.
    pub backend: String,
    /// `io.threads` per node.
    pub io_threads: usize,
    /// The `halyard` binary.
    pub halyard: PathBuf,
    /// Parent of the data directories (Raft log, a temporary directory removed at stop).
    pub data_root: PathBuf,
    /// Where the node logs go (kept).
    pub logs: PathBuf,
}

/// One running node.
#[derive(Debug)]
pub struct Node {
    /// `c1`, `c2`, ...
    pub name: String,
    /// MQTT listener.
    pub mqtt: SocketAddr,
    /// Admin HTTP listener.
    pub admin: SocketAddr,
    child: Child,
}

impl Node {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A running cluster; dropping it stops every node and removes the data directory.
#[derive(Debug)]
pub struct RunningCluster {
    /// The nodes, in name order.
    pub nodes: Vec<Node>,
    data: PathBuf,
}

impl RunningCluster {
    /// Starts `spec.cores` cores with `extra` environment (e.g. route batching settings);
    /// `tag` names the log files. Returns once every node accepts MQTT connections.
    pub fn start(
        spec: &ClusterSpec,
        extra: &[(String, String)],
        tag: &str,
    ) -> Result<RunningCluster, ClusterBenchError> {
        let data = spec.data_root.join(format!(
            "halyard-cluster-bench-{}-{tag}",
            std::process::id()
        ));
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir_all(&data)?;
        std::fs::create_dir_all(&spec.logs)?;
        let mut cluster = RunningCluster {
            nodes: Vec::new(),
            data,
        };
        let ip = |i: usize| Ipv4Addr::new(127, 0, 0, spec.first_ip.saturating_add(i as u8));
        let names: Vec<String> = (1..=spec.cores).map(|i| format!("c{i}")).collect();
        let seeds = (0..spec.cores)
            .map(|i| format!("{}:{}", ip(i), spec.port.wrapping_add(2)))
            .collect::<Vec<_>>()
            .join(",");
        for (i, name) in names.iter().enumerate() {
            let mqtt = SocketAddr::from((ip(i), spec.port));
            let admin = SocketAddr::from((ip(i), spec.port.wrapping_add(1)));
            let listen = SocketAddr::from((ip(i), spec.port.wrapping_add(2)));
            let mut cmd = Command::new(&spec.halyard);
            cmd.arg("run")
                .env("HALYARD_NODE__NAME", name)
                .env("HALYARD_NODE__ROLE", "core")
                .env("HALYARD_CLUSTER__LISTEN", listen.to_string())
                .env("HALYARD_CLUSTER__SEEDS", &seeds)
                .env("HALYARD_CLUSTER__INITIAL_CORES", names.join(","))
                .env("HALYARD_STORE__DIR", cluster.data.join(name))
                .env("HALYARD_LISTENERS__TCP__BIND", mqtt.to_string())
                .env("HALYARD_ADMIN__BIND", admin.to_string())
                .env("HALYARD_IO__THREADS", spec.io_threads.to_string())
                .env("HALYARD_IO__BACKEND", &spec.backend)
                .env("HALYARD_LOG__LEVEL", "warn")
                .env("HALYARD_MQTT__MAX_INFLIGHT", INFLIGHT.to_string())
                .env("HALYARD_MQTT__MAX_QUEUED_MESSAGES", QUEUED.to_string());
            for (k, v) in HALYARD_BENCH_LIMITS {
                cmd.env(k, v);
            }
            for (k, v) in extra {
                cmd.env(k, v);
            }
            let log = std::fs::File::create(spec.logs.join(format!("{tag}-{name}.log")))?;
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            let child = cmd
                .spawn()
                .map_err(|e| ClusterBenchError::Node(name.clone(), format!("cannot start: {e}")))?;
            live().push(child.id());
            cluster.nodes.push(Node {
                name: name.clone(),
                mqtt,
                admin,
                child,
            });
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_listening(i)?;
        }
        Ok(cluster)
    }

    fn wait_listening(&mut self, i: usize) -> Result<(), ClusterBenchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let n = &mut self.nodes[i];
        loop {
            if TcpStream::connect_timeout(&n.mqtt, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(ClusterBenchError::Node(
                    n.name.clone(),
                    format!("exited at start: {status}"),
                ));
            }
            if Instant::now() > deadline {
                return Err(ClusterBenchError::Node(
                    n.name.clone(),
                    "did not listen within 20 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `cluster` object of node `i`'s `/status`.
    pub fn status(&self, i: usize) -> Result<Value, ClusterBenchError> {
        let body = http::get(self.nodes[i].admin, "/status", ADMIN_TIMEOUT)
            .map_err(|e| ClusterBenchError::Node(self.nodes[i].name.clone(), e.to_string()))?;
        let doc: Value = serde_json::from_str(&body).map_err(|e| {
            ClusterBenchError::Node(self.nodes[i].name.clone(), format!("/status: {e}"))
        })?;
        Ok(doc["cluster"].clone())
    }

    /// A number of node `i`'s cluster status (0 when absent).
    pub fn status_u64(&self, i: usize, key: &str) -> Result<u64, ClusterBenchError> {
        Ok(self.status(i)?[key].as_u64().unwrap_or(0))
    }

    /// Waits until every node sees all members, applied something, and agrees on a leader;
    /// returns the leader's index in [`RunningCluster::nodes`].
    pub fn wait_formed(&self) -> Result<usize, ClusterBenchError> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let members = self.nodes.len() as u64;
        loop {
            if let Some(leader) = self.formed(members) {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = (0..self.nodes.len())
                    .map(|i| self.status(i).map(|s| s.to_string()).unwrap_or_default())
                    .collect();
                return Err(ClusterBenchError::Form(seen.join("\n")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn formed(&self, members: u64) -> Option<usize> {
        let mut leader = None;
        for i in 0..self.nodes.len() {
            let s = self.status(i).ok()?;
            let ok = s["members"].as_u64() == Some(members)
                && s["applied_index"].as_u64().unwrap_or(0) > 0;
            let l = s["raft_leader"].as_u64()?;
            if !ok || leader.is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l);
        }
        let leader = leader?;
        (0..self.nodes.len())
            .find(|&i| self.status(i).ok().and_then(|s| s["node_id"].as_u64()) == Some(leader))
    }

    /// The pids of nodes `which`.
    pub fn pids(&self, which: &[usize]) -> Vec<u32> {
        which.iter().map(|&i| self.nodes[i].pid()).collect()
    }

    /// Stops every node (SIGTERM, then SIGKILL) and removes the data directory.
    pub fn stop(&mut self) {
        for n in &mut self.nodes {
            stop_child(&mut n.child);
            let pid = n.child.id();
            live().retain(|&p| p != pid);
        }
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.data);
    }

    /// The data directory (removed at stop).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
