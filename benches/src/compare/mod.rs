//! The side-by-side runner: every case for every broker in turn (A B A B ...), repeated,
//! each broker started fresh per run, broker and generator pinned to different cores; then
//! medians, min-max, Halyard/peer ratios, a markdown table, JSON and PNG charts.

pub mod brokers;
pub mod cgroup;
pub mod charts;
pub mod summary;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use brokers::{Broker, BrokerBins};

use crate::report::RunResult;

/// Why the runner failed.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// File or process I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A broker did not start.
    #[error("broker {0}: {1}")]
    Broker(String, String),
    /// The generator failed or printed no result.
    #[error("load generator: {0}")]
    Load(String),
    /// A chart could not be drawn.
    #[error("chart: {0}")]
    Chart(String),
    /// Bad arguments.
    #[error("config: {0}")]
    Config(String),
}

/// What a case measures first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CaseKind {
    /// Closed loop: throughput ceiling and deliveries per broker CPU-second.
    Throughput,
    /// Open loop: latency at a fixed rate.
    Latency,
    /// Idle connections: connect rate and memory per connection.
    Connections,
}

/// One benchmark case: a name and the generator arguments that define it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    /// Name, e.g. `p2p-q1`.
    pub name: String,
    /// What it measures.
    pub kind: CaseKind,
    /// `halyard-load` arguments (without target, pid and durations).
    pub args: Vec<String>,
}

fn case(name: &str, kind: CaseKind, args: &str) -> Case {
    Case {
        name: name.into(),
        kind,
        args: args.split_whitespace().map(String::from).collect(),
    }
}

/// The default cases of issue 3.
pub fn default_cases(connections: usize) -> Vec<Case> {
    use CaseKind::*;
    vec![
        case(
            "fanin-q0",
            Throughput,
            "--scenario fanin --clients 10 --qos 0",
        ),
        case(
            "fanin-q1",
            Throughput,
            "--scenario fanin --clients 10 --qos 1",
        ),
        case(
            "fanout-q0",
            Throughput,
            "--scenario fanout --clients 100 --qos 0",
        ),
        case(
            "fanout-q1",
            Throughput,
            "--scenario fanout --clients 100 --qos 1",
        ),
        case("p2p-q0", Throughput, "--scenario p2p --clients 50 --qos 0"),
        case("p2p-q1", Throughput, "--scenario p2p --clients 50 --qos 1"),
        case(
            "p2p-q1-persistent",
            Throughput,
            "--scenario p2p --clients 50 --qos 1 --persistent",
        ),
        case(
            "p2p-q0-5k",
            Latency,
            "--scenario p2p --clients 50 --qos 0 --rate 5000",
        ),
        case(
            "p2p-q1-50k",
            Latency,
            "--scenario p2p --clients 50 --qos 1 --rate 50000",
        ),
        case(
            "conn-idle",
            Connections,
            &format!("--scenario conn --clients {connections}"),
        ),
        case(
            "conn-sub",
            Connections,
            &format!("--scenario conn --clients {connections} --subscribe"),
        ),
    ]
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Brokers, in the order they take turns.
    pub brokers: Vec<Broker>,
    /// Cases to run.
    pub cases: Vec<Case>,
    /// Rounds over all cases and brokers.
    pub repeats: usize,
    /// Measurement window per run, seconds.
    pub duration: f64,
    /// Warm-up per run, seconds.
    pub warmup: f64,
    /// The `halyard-load` binary.
    pub load_bin: PathBuf,
    /// Broker binaries.
    pub bins: BrokerBins,
    /// taskset CPU list for the broker.
    pub broker_cpus: String,
    /// taskset CPU list for the generator.
    pub load_cpus: String,
    /// Generator worker threads.
    pub workers: usize,
    /// CPU quota per broker I/O thread (a cgroup per broker run), for the thread-scaling runs.
    pub cpu_per_thread: Option<f64>,
    /// First port; broker i uses `base_port + i`.
    pub base_port: u16,
    /// Output directory (results.md, results.json, charts, broker logs).
    pub out: PathBuf,
}

/// One run of one case on one broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Case name.
    pub case: String,
    /// Broker name.
    pub broker: String,
    /// Round (0-based).
    pub repeat: usize,
    /// The generator's result, if it produced one.
    pub result: Option<RunResult>,
    /// Why there is no result or what went wrong.
    pub error: Option<String>,
    /// With a CPU quota: the share of the broker's active CFS periods in which it ran out of
    /// quota (near 1: the quota, not the generator, limited the run).
    #[serde(default)]
    pub throttled_share: Option<f64>,
}

/// Runs everything and returns the samples in run order.
pub fn run_all(cfg: &CompareConfig, mut progress: impl FnMut(&Sample)) -> Vec<Sample> {
    let work = cfg.out.join("work");
    let mut samples = Vec::new();
    for repeat in 0..cfg.repeats {
        for c in &cfg.cases {
            for (i, b) in cfg.brokers.iter().enumerate() {
                let port = cfg.base_port.wrapping_add(u16::try_from(i).unwrap_or(0));
                let (result, error, throttled_share) = match run_one(cfg, c, b, port, &work) {
                    Ok((r, throttled)) => {
                        let err = (!r.errors.is_empty()).then(|| r.errors.join("; "));
                        (Some(r), err, throttled)
                    }
                    Err(e) => (None, Some(e.to_string()), None),
                };
                let s = Sample {
                    case: c.name.clone(),
                    broker: b.name(),
                    repeat,
                    result,
                    error,
                    throttled_share,
                };
                progress(&s);
                samples.push(s);
            }
        }
    }
    samples
}

fn run_one(
    cfg: &CompareConfig,
    c: &Case,
    b: &Broker,
    port: u16,
    work: &std::path::Path,
) -> Result<(RunResult, Option<f64>), CompareError> {
    let mut running = brokers::start(
        b,
        &cfg.bins,
        port,
        &cfg.broker_cpus,
        cfg.cpu_per_thread,
        work,
    )?;
    let result = run_load(cfg, c, running.addr.to_string(), running.pid);
    let throttled = running
        .quota
        .as_ref()
        .and_then(cgroup::CpuQuota::throttling)
        .and_then(|(periods, throttled)| (periods > 0).then(|| throttled as f64 / periods as f64));
    brokers::stop(&mut running);
    Ok((result?, throttled))
}

fn run_load(
    cfg: &CompareConfig,
    c: &Case,
    target: String,
    pid: u32,
) -> Result<RunResult, CompareError> {
    let mut args = c.args.clone();
    for (k, v) in [
        ("--target", target),
        ("--broker-pid", pid.to_string()),
        ("--duration", cfg.duration.to_string()),
        ("--warmup", cfg.warmup.to_string()),
        ("--workers", cfg.workers.to_string()),
    ] {
        args.push(k.into());
        args.push(v);
    }
    let fence = Duration::from_secs_f64(cfg.duration + cfg.warmup) + Duration::from_secs(300);
    run_generator(&cfg.load_bin, Some(&cfg.load_cpus), &args, fence)
}

/// Runs `halyard-load` with `args` (plus `--json-only`), pinned with `taskset` to `cpus` when
/// given, and returns its result. The generator bounds its own run time (hard cap); `fence`
/// is a second one: past it the generator is killed.
pub fn run_generator(
    load_bin: &std::path::Path,
    cpus: Option<&str>,
    args: &[String],
    fence: Duration,
) -> Result<RunResult, CompareError> {
    let mut cmd = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(load_bin);
            c
        }
        None => Command::new(load_bin),
    };
    cmd.args(args)
        .arg("--json-only")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| CompareError::Load(format!("cannot start: {e}")))?;
    let started = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if started.elapsed() > fence {
            if let Ok(p) = i32::try_from(pid) {
                // SAFETY: kill(2) on the generator we spawned and have not reaped yet.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = waiter
        .join()
        .map_err(|_| CompareError::Load("waiter panicked".into()))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match line {
        Some(l) => {
            serde_json::from_str(l).map_err(|e| CompareError::Load(format!("bad JSON: {e}")))
        }
        None => Err(CompareError::Load(format!(
            "no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}
