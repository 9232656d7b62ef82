//! Helpers for in-process cluster tests on 127.0.0.x loopback addresses.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use halyard_cluster::{ClusterConfig, ClusterNode, NodeId, NodeRole, RouteOp, StreamState};

/// Cluster tests start several nodes with their own threads; run them one at a time so
/// they do not starve each other's timers on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A free port on `127.0.0.{host}`.
pub fn free_addr(host: u8) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, host], 0))).expect("bind loopback");
    l.local_addr().expect("local addr")
}

pub fn config(
    name: &str,
    role: NodeRole,
    listen: SocketAddr,
    seeds: &[SocketAddr],
    initial: &[&str],
) -> ClusterConfig {
    ClusterConfig {
        node_name: name.into(),
        role,
        listen,
        seeds: seeds.iter().map(ToString::to_string).collect(),
        initial_cores: initial.iter().map(|s| s.to_string()).collect(),
        form_timeout_ms: 20_000,
        write_timeout_ms: 8_000,
        ..ClusterConfig::default()
    }
}

/// A test runtime for the async API (which needs no particular runtime itself).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A set of cores named c1..cN on 127.0.0.(10+i).
pub struct Cores {
    pub nodes: Vec<Option<Arc<ClusterNode>>>,
    pub addrs: Vec<SocketAddr>,
    pub names: Vec<String>,
    /// Each core's configuration, for restarts.
    pub cfgs: Vec<ClusterConfig>,
}

impl Cores {
    /// Cores keeping their Raft state in memory.
    pub fn start(n: usize) -> Cores {
        Self::start_with(n, |_, _| {})
    }

    /// Cores with their Raft state in `<dir>/cN`, the configuration adjusted by `tweak`.
    pub fn start_durable(
        n: usize,
        dir: &std::path::Path,
        tweak: impl Fn(&mut ClusterConfig),
    ) -> Cores {
        Self::start_with(n, |i, cfg| {
            cfg.data_dir = Some(dir.join(format!("c{}", i + 1)));
            tweak(cfg);
        })
    }

    pub fn start_with(n: usize, tweak: impl Fn(usize, &mut ClusterConfig)) -> Cores {
        let names: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        let addrs: Vec<SocketAddr> = (0..n).map(|i| free_addr(10 + i as u8)).collect();
        let initial: Vec<&str> = names.iter().map(String::as_str).collect();
        let cfgs: Vec<ClusterConfig> = names
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(i, (name, addr))| {
                let mut cfg = config(name, NodeRole::Core, *addr, &addrs, &initial);
                tweak(i, &mut cfg);
                cfg
            })
            .collect();
        let nodes = cfgs
            .iter()
            .map(|cfg| {
                Some(Arc::new(
                    ClusterNode::start(cfg.clone()).expect("core starts"),
                ))
            })
            .collect();
        Cores {
            nodes,
            addrs,
            names,
            cfgs,
        }
    }

    /// Starts core `i` again with its configuration (and data directory).
    pub fn restart(&mut self, i: usize) -> &ClusterNode {
        assert!(self.nodes[i].is_none(), "core {i} is running");
        let node = ClusterNode::start(self.cfgs[i].clone()).expect("core restarts");
        self.nodes[i] = Some(Arc::new(node));
        self.nodes[i].as_deref().expect("just set")
    }

    pub fn alive(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().flatten().map(|n| &**n)
    }

    /// Waits until every live core names the same leader and that leader is live; returns
    /// its position.
    pub fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let mut found = None;
        wait_until(limit, || {
            found = self.current_leader();
            found.is_some()
        });
        found
    }

    pub fn current_leader(&self) -> Option<usize> {
        let leaders: Vec<Option<NodeId>> = self.alive().map(|n| n.status().raft_leader).collect();
        let first = leaders.first().copied().flatten()?;
        if !leaders.iter().all(|l| *l == Some(first)) {
            return None;
        }
        let pos = self
            .nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.id() == first))?;
        let st = self.nodes[pos].as_ref()?.status();
        (st.raft_state.as_deref() == Some("Leader")).then_some(pos)
    }

    /// Stops core `i` abruptly (its runtime and sockets are dropped).
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            let n = Arc::try_unwrap(n).unwrap_or_else(|_| panic!("node still shared"));
            n.shutdown();
        }
    }
}

pub fn replicant(name: &str, host: u8, seeds: &[SocketAddr], initial: &[String]) -> ClusterNode {
    let initial: Vec<&str> = initial.iter().map(String::as_str).collect();
    let cfg = config(name, NodeRole::Replicant, free_addr(host), seeds, &initial);
    ClusterNode::start(cfg).expect("replicant starts")
}

pub fn add(filter: &str, node: NodeId) -> RouteOp {
    RouteOp::Add {
        filter: filter.into(),
        node,
    }
}

pub fn nodes_for(n: &ClusterNode, topic: &str) -> Vec<NodeId> {
    let mut v = Vec::new();
    n.routes().nodes_for_topic(topic, &mut v);
    v
}

pub fn is_normal(n: &ClusterNode) -> bool {
    n.status().stream_state == StreamState::Normal
}

pub fn applied_at_least(n: &ClusterNode, index: u64) -> bool {
    n.status().applied_index >= index
}
