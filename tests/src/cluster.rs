//! A multi-process cluster for the integration tests (tests/cluster.rs,
//! tests/cluster_retained.rs): cores and replicants as real `halyard` processes on 127.0.0.x,
//! configured through the environment exactly as an operator would, observed through `/status`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::broker::free_port;
use crate::{TestBroker, wait_for};

/// Bound on the cluster forming or recovering.
pub const FORM: Duration = Duration::from_secs(30);

/// One node of a test cluster: a `halyard` process with its own address and data dir.
pub struct Node {
    pub name: &'static str,
    pub role: &'static str,
    pub ip: Ipv4Addr,
    pub cluster_port: u16,
    pub store: PathBuf,
    /// `HALYARD_CLUSTER__SEEDS` for this node when not the cluster's list.
    pub seeds: Option<String>,
    /// Extra environment for this node.
    pub env: Vec<(&'static str, String)>,
    pub broker: Option<TestBroker>,
}

/// Cores and replicants as real processes on 127.0.0.x, each with its own data directory
/// (removed after a passing test, kept after a failure for inspection).
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub seeds: String,
    root: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop every node first (TestBroker's drop kills it), then remove the data dirs;
        // kept after a failure for inspection.
        for n in &mut self.nodes {
            n.broker.take();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl Cluster {
    /// Node `i` gets the loopback address 127.0.0.(`first_ip` + i); test files that may run
    /// at the same time use different `first_ip`s. `tag` names the data directory.
    pub fn new(tag: &str, first_ip: u8, names: &[(&'static str, &'static str)]) -> Cluster {
        let root = std::env::temp_dir().join("halyard-tests").join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let nodes: Vec<Node> = names
            .iter()
            .enumerate()
            .map(|(i, (name, role))| Node {
                name,
                role,
                ip: Ipv4Addr::new(127, 0, 0, first_ip + i as u8),
                cluster_port: free_port(),
                store: root.join(name),
                seeds: None,
                env: Vec::new(),
                broker: None,
            })
            .collect();
        let seeds = nodes
            .iter()
            .filter(|n| n.role == "core")
            .map(|n| format!("{}:{}", n.ip, n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        Cluster { nodes, seeds, root }
    }

    pub fn start(&mut self, i: usize) {
        let cores = self
            .nodes
            .iter()
            .filter(|n| n.role == "core")
            .map(|n| n.name)
            .collect::<Vec<_>>()
            .join(",");
        let n = &self.nodes[i];
        let listen = self.cluster_addr(i);
        let store = n.store.display().to_string();
        let seeds = n.seeds.as_deref().unwrap_or(&self.seeds);
        let mut env = vec![
            ("HALYARD_NODE__NAME", n.name),
            ("HALYARD_NODE__ROLE", n.role),
            ("HALYARD_CLUSTER__LISTEN", listen.as_str()),
            ("HALYARD_CLUSTER__SEEDS", seeds),
            ("HALYARD_CLUSTER__INITIAL_CORES", cores.as_str()),
            ("HALYARD_STORE__DIR", store.as_str()),
        ];
        env.extend(n.env.iter().map(|(k, v)| (*k, v.as_str())));
        let b = TestBroker::start_on(n.ip, &env);
        self.nodes[i].broker = Some(b);
    }

    /// SIGKILL of node `i`.
    pub fn kill(&mut self, i: usize) {
        let mut b = self.nodes[i].broker.take().expect("node running");
        b.kill();
    }

    pub fn cluster_addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].ip, self.nodes[i].cluster_port)
    }

    pub fn broker(&self, i: usize) -> &TestBroker {
        self.nodes[i].broker.as_ref().expect("node running")
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].broker.is_some())
    }

    pub fn cores(&self) -> impl Iterator<Item = usize> + '_ {
        self.running().filter(|&i| self.nodes[i].role == "core")
    }

    pub fn status(&self, i: usize) -> serde_json::Value {
        let body = self.broker(i).http_get("/status").body;
        let doc: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
        doc["cluster"].clone()
    }

    pub fn all_status(&self) -> BTreeMap<&str, String> {
        self.running()
            .map(|i| (self.nodes[i].name, self.status(i).to_string()))
            .collect()
    }

    /// Waits until every running node sees `members` members and has applied what its
    /// cores committed, cores know a leader, and running replicants stream in `normal` state.
    pub fn wait_formed(&self, members: u64) {
        let ok = wait_for(FORM, || {
            let all = self.running().all(|i| {
                let c = self.status(i);
                let members_ok = c["members"].as_u64() == Some(members);
                let applied = c["applied_index"].as_u64().unwrap_or(0);
                let role = self.nodes[i].role;
                let has_leader = role != "core" || !c["raft_leader"].is_null();
                let streaming = role != "replicant" || c["stream_state"] == "normal";
                members_ok && applied > 0 && has_leader && streaming
            });
            all.then_some(())
        });
        if ok.is_none() {
            panic!(
                "cluster did not form within {FORM:?}: {:#?}",
                self.all_status()
            );
        }
    }

    /// Waits until every running node applied everything the cores committed so far: a
    /// route committed by one node's SUBACK is then known to the publishing node too.
    pub fn settle(&self) {
        let committed = self
            .cores()
            .filter_map(|i| self.status(i)["committed_index"].as_u64())
            .max()
            .unwrap_or(0);
        let ok = wait_for(FORM, || {
            self.running()
                .all(|i| self.status(i)["applied_index"].as_u64() >= Some(committed))
                .then_some(())
        });
        if ok.is_none() {
            panic!(
                "nodes did not apply index {committed} within {FORM:?}: {:#?}",
                self.all_status()
            );
        }
    }

    /// The index of the core every running core names as Raft leader.
    pub fn leader(&self) -> usize {
        let found = wait_for(FORM, || {
            let ids: BTreeSet<u64> = self
                .cores()
                .filter_map(|i| self.status(i)["raft_leader"].as_u64())
                .collect();
            let id = *ids.first()?;
            (ids.len() == 1)
                .then(|| self.cores().find(|&i| self.status(i)["node_id"] == id))
                .flatten()
        });
        found.unwrap_or_else(|| panic!("no agreed Raft leader: {:#?}", self.all_status()))
    }

    /// The core a replicant streams from, by its cluster address.
    pub fn upstream_of(&self, replicant: usize) -> Option<usize> {
        let up = self.status(replicant)["upstream_core"]
            .as_str()?
            .to_string();
        (0..self.nodes.len()).find(|&i| self.nodes[i].role == "core" && self.cluster_addr(i) == up)
    }

    /// Makes sure one of `replicants` streams from core `target` and returns it: if none
    /// does, the last one restarts with its seed list rotated so that its first choice (the
    /// seed at its node id modulo the list length) is `target`.
    pub fn replicant_following(&mut self, target: usize, replicants: &[usize]) -> usize {
        if let Some(&r) = replicants
            .iter()
            .find(|&&r| self.upstream_of(r) == Some(target))
        {
            return r;
        }
        let r = *replicants.last().expect("a replicant");
        let id = self.status(r)["node_id"].as_u64().expect("node id");
        let mut cores: Vec<String> = self.seeds.split(',').map(str::to_string).collect();
        let at = cores
            .iter()
            .position(|a| *a == self.cluster_addr(target))
            .expect("target is a seed");
        let want = (id % cores.len() as u64) as usize;
        let len = cores.len();
        cores.rotate_left((at + len - want) % len);
        self.nodes[r].seeds = Some(cores.join(","));
        let mut b = self.nodes[r].broker.take().expect("running");
        b.sigterm();
        drop(b);
        self.start(r);
        let ok = wait_for(FORM, || {
            (self.status(r)["stream_state"] == "normal").then_some(())
        });
        assert!(
            ok.is_some(),
            "restarted replicant streams: {}",
            self.status(r)
        );
        assert_eq!(
            self.upstream_of(r),
            Some(target),
            "replicant follows the chosen core: {}",
            self.status(r)
        );
        r
    }

    pub fn mqtt(&self, i: usize) -> std::net::SocketAddr {
        self.broker(i).mqtt_addr()
    }
}
