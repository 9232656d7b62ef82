//! The cluster benchmark of issue 8 (`halyard-cluster`, `just bench-cluster`): a three-core
//! Halyard cluster on loopback, then
//! - p2p throughput through `halyard-load` (a subprocess): publishers on one node and
//!   subscribers on another (cross-node), and both on one node (the baseline), QoS 0 and 1,
//!   closed loop, deliveries per broker CPU-second summed over the nodes involved;
//! - the route-commit rate ([`routes`]): distinct subscriptions made on one node until the
//!   other node's replicated table holds them, with the default route batching and with one
//!   route change per Raft entry (`cluster.route_batch_max = 1`), each on a fresh cluster.
//!
//! Both measured nodes are Raft followers: a route change made there is forwarded to the
//! leader, committed by a majority (two fsyncs) and learnt by the other follower through
//! the leader, the common path in a three-core group.

pub mod http;
pub mod nodes;
pub mod report;
pub mod routes;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::compare::{CompareError, run_generator};
use crate::report::RunResult;
use nodes::{ClusterSpec, RunningCluster};
use routes::{RouteParams, RouteRun};

/// Why the cluster benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterBenchError {
    /// File or process I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A node did not start or answer.
    #[error("node {0}: {1}")]
    Node(String, String),
    /// The cluster did not form.
    #[error("the cluster did not form; /status of each node:\n{0}")]
    Form(String),
    /// The load generator failed.
    #[error("{0}")]
    Load(#[from] CompareError),
    /// Bad arguments or an unusable state.
    #[error("config: {0}")]
    Config(String),
}

/// Route batching of a cluster run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The defaults: `cluster.route_batch_max = 1000`, `route_batch_interval_ms = 1`.
    Batched,
    /// `cluster.route_batch_max = 1`: one route change per Raft entry.
    Unbatched,
}

impl Mode {
    /// `batched` or `unbatched`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Batched => "batched",
            Mode::Unbatched => "unbatched",
        }
    }

    /// Parses [`Mode::name`].
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "batched" => Some(Mode::Batched),
            "unbatched" => Some(Mode::Unbatched),
            _ => None,
        }
    }

    /// The nodes' extra environment.
    pub fn env(self) -> Vec<(String, String)> {
        match self {
            Mode::Batched => Vec::new(),
            Mode::Unbatched => vec![("HALYARD_CLUSTER__ROUTE_BATCH_MAX".into(), "1".into())],
        }
    }
}

/// Everything a benchmark run needs.
#[derive(Debug, Clone)]
pub struct ClusterBenchConfig {
    /// The nodes.
    pub spec: ClusterSpec,
    /// The `halyard-load` binary.
    pub load_bin: PathBuf,
    /// Publisher/subscriber pairs.
    pub pairs: usize,
    /// Payload bytes.
    pub payload: usize,
    /// QoS levels of the p2p cases.
    pub qos: Vec<u8>,
    /// Measurement window per p2p run, seconds.
    pub duration: f64,
    /// Warm-up per p2p run, seconds.
    pub warmup: f64,
    /// Pause between the subscribers' SUBACKs and the warm-up, seconds.
    pub settle: f64,
    /// Generator worker threads.
    pub workers: usize,
    /// Rounds of the p2p cases (0 = none).
    pub p2p_repeats: usize,
    /// The route-commit runs.
    pub routes: RouteParams,
    /// Route-commit runs per mode (0 = none).
    pub route_repeats: usize,
    /// Route batching modes, each on a fresh cluster.
    pub modes: Vec<Mode>,
}

impl ClusterBenchConfig {
    /// Checks the limits; returns the first problem.
    pub fn validate(&self) -> Result<(), ClusterBenchError> {
        let bad = |m: &str| Err(ClusterBenchError::Config(m.into()));
        if self.spec.cores < 3 {
            return bad("at least 3 cores (two followers are measured)");
        }
        if self.p2p_repeats > 20 || self.route_repeats > 20 {
            return bad("repeats must be at most 20");
        }
        if !(self.duration > 0.0 && self.duration <= 600.0) {
            return bad("duration must be within 0..=600 s");
        }
        if self.qos.iter().any(|&q| q > 1) {
            return bad("qos must be 0 or 1");
        }
        self.routes.validate()
    }
}

/// One p2p run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct P2pRun {
    /// `same-q0`, `cross-q1`, ...
    pub case: String,
    /// Round (0-based).
    pub repeat: usize,
    /// Nodes whose CPU time is summed in the result (publishers' first).
    pub nodes: Vec<String>,
    /// The generator's result.
    pub result: Option<RunResult>,
    /// The Raft term changed during the run.
    pub term_changed: bool,
    /// What went wrong.
    pub error: Option<String>,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measured {
    /// The p2p runs, in run order.
    pub p2p: Vec<P2pRun>,
    /// The route-commit runs, in run order.
    pub routes: Vec<RouteRun>,
    /// Per cluster started: mode, leader and the two measured followers.
    pub roles: Vec<String>,
}

/// Node indices of one cluster: the leader, then the followers `a` (publishers, route
/// subscriptions) and `b` (subscribers, route observer).
#[derive(Debug, Clone, Copy)]
struct Roles {
    a: usize,
    b: usize,
}

fn roles(cluster: &RunningCluster, leader: usize) -> Roles {
    let mut followers = (0..cluster.nodes.len()).filter(|&i| i != leader);
    // validate() requires 3 cores, so there are two followers.
    let a = followers.next().unwrap_or(0);
    let b = followers.next().unwrap_or(0);
    Roles { a, b }
}

/// Runs the configured cases; `progress` gets one line per finished run.
pub fn run(
    cfg: &ClusterBenchConfig,
    mut progress: impl FnMut(&str),
) -> Result<Measured, ClusterBenchError> {
    cfg.validate()?;
    let mut m = Measured::default();
    for &mode in &cfg.modes {
        let p2p = mode == Mode::Batched && cfg.p2p_repeats > 0;
        if !p2p && cfg.route_repeats == 0 {
            continue;
        }
        let mut cluster = RunningCluster::start(&cfg.spec, &mode.env(), mode.name())?;
        let leader = cluster.wait_formed()?;
        let r = roles(&cluster, leader);
        let line = format!(
            "{}: leader {}, publishers/route subscriptions on {}, subscribers/route observer on {}",
            mode.name(),
            cluster.nodes[leader].name,
            cluster.nodes[r.a].name,
            cluster.nodes[r.b].name
        );
        progress(&line);
        m.roles.push(line);
        if p2p {
            for repeat in 0..cfg.p2p_repeats {
                for &qos in &cfg.qos {
                    for cross in [false, true] {
                        let run = p2p_run(cfg, &cluster, r, qos, cross, repeat);
                        progress(&p2p_line(&run));
                        m.p2p.push(run);
                    }
                }
            }
        }
        for repeat in 0..cfg.route_repeats {
            let tag = format!("{}{repeat}", mode.name());
            let run = routes::run(&cluster, r.a, r.b, &cfg.routes, mode.name(), &tag)
                .unwrap_or_else(|e| RouteRun {
                    mode: mode.name().into(),
                    filters: cfg.routes.filters,
                    error: Some(e.to_string()),
                    ..RouteRun::default()
                });
            progress(&route_line(&run));
            m.routes.push(run);
        }
        cluster.stop();
    }
    Ok(m)
}

fn p2p_run(
    cfg: &ClusterBenchConfig,
    cluster: &RunningCluster,
    r: Roles,
    qos: u8,
    cross: bool,
    repeat: usize,
) -> P2pRun {
    let sub = if cross { r.b } else { r.a };
    let involved: Vec<usize> = if cross { vec![r.a, r.b] } else { vec![r.a] };
    let pids = cluster
        .pids(&involved)
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let args: Vec<String> = [
        "--scenario",
        "p2p",
        "--clients",
        &cfg.pairs.to_string(),
        "--qos",
        &qos.to_string(),
        "--payload",
        &cfg.payload.to_string(),
        "--target",
        &cluster.nodes[r.a].mqtt.to_string(),
        "--sub-target",
        &cluster.nodes[sub].mqtt.to_string(),
        "--broker-pid",
        &pids,
        "--duration",
        &cfg.duration.to_string(),
        "--warmup",
        &cfg.warmup.to_string(),
        "--settle",
        &cfg.settle.to_string(),
        "--workers",
        &cfg.workers.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let term = |i: usize| cluster.status_u64(i, "raft_term").ok();
    let term0 = term(r.a);
    let fence =
        Duration::from_secs_f64(cfg.duration + cfg.warmup + cfg.settle) + Duration::from_secs(300);
    let (result, error) =
        match run_generator(std::process::Command::new(&cfg.load_bin), &args, fence) {
            Ok(res) => {
                let err = (!res.errors.is_empty()).then(|| res.errors.join("; "));
                (Some(res), err)
            }
            Err(e) => (None, Some(e.to_string())),
        };
    P2pRun {
        case: format!("{}-q{qos}", if cross { "cross" } else { "same" }),
        repeat,
        nodes: involved
            .iter()
            .map(|&i| cluster.nodes[i].name.clone())
            .collect(),
        result,
        term_changed: term(r.a) != term0,
        error,
    }
}

fn p2p_line(r: &P2pRun) -> String {
    let brief = r.result.as_ref().map_or(String::new(), |x| {
        format!(
            "{:.0} msg/s, {:.0} per broker CPU-s, p99 {:.0} us, lost {} dup {} reord {}",
            x.msgs_per_s,
            x.deliveries_per_broker_cpu_s.unwrap_or(0.0),
            x.latency.p99_us,
            x.counts.lost,
            x.counts.duplicated,
            x.counts.reordered
        )
    });
    format!(
        "round {} {:<9} {brief}{}",
        r.repeat + 1,
        r.case,
        trailer(r.term_changed, r.error.as_deref())
    )
}

/// What a progress line ends with: an election, an error.
fn trailer(term_changed: bool, error: Option<&str>) -> String {
    let mut s = String::new();
    if term_changed {
        s += " (term changed)";
    }
    if let Some(e) = error {
        s += &format!(" error: {e}");
    }
    s
}

fn route_line(r: &RouteRun) -> String {
    format!(
        "routes {:<9} {} filters: SUBACKs {:.3} s, visible on the other node {:.3} s = {:.0} routes/s, {} ops in {} entries, removal {}{}",
        r.mode,
        r.filters,
        r.suback_s,
        r.visible_s,
        r.routes_per_s,
        r.ops_proposed,
        r.entries_proposed,
        r.removal_s.map_or("-".into(), |s| format!("{s:.3} s")),
        trailer(r.term_changed, r.error.as_deref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_unbatched_means_one_op_per_entry() {
        for m in [Mode::Batched, Mode::Unbatched] {
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
        assert!(Mode::parse("x").is_none());
        assert!(Mode::Batched.env().is_empty());
        assert_eq!(
            Mode::Unbatched.env(),
            vec![("HALYARD_CLUSTER__ROUTE_BATCH_MAX".into(), "1".into())]
        );
    }
}
