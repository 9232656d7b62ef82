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

/// Handshakes in flight in the `conn-*` cases. Below Mosquitto's listen backlog (100): with
/// more, SYNs overflow its accept queue and wait out the client's 1 s retransmission timer,
/// and the connect rate measures that timer (seen: 7k/s at 128 in flight against 17-19k/s at
/// 64-96, with the kernel's ListenOverflows counter growing).
pub const CONN_CONCURRENCY: usize = 64;

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
            &format!("--scenario conn --clients {connections} --concurrency {CONN_CONCURRENCY}"),
        ),
        case(
            "conn-sub",
            Connections,
            &format!(
                "--scenario conn --clients {connections} --concurrency {CONN_CONCURRENCY} --subscribe"
            ),
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
    /// Closed-loop window per publisher for the throughput cases (`None`: the generator's).
    pub window: Option<usize>,
    /// SCHED_FIFO priority for broker and generator in the open-loop (latency) cases; `None`:
    /// normal scheduling. See [`launcher`].
    pub rt_priority: Option<u8>,
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
    let rt = cfg.rt_priority.filter(|_| c.kind == CaseKind::Latency);
    let mut running = brokers::start(
        b,
        &cfg.bins,
        port,
        launcher(Some(&cfg.broker_cpus), rt),
        cfg.cpu_per_thread,
        work,
    )?;
    let result = run_load(cfg, c, running.addr.to_string(), running.pid, rt);
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
    rt: Option<u8>,
) -> Result<RunResult, CompareError> {
    let mut args = c.args.clone();
    if let Some(w) = cfg.window.filter(|_| c.kind == CaseKind::Throughput) {
        args.push("--window".into());
        args.push(w.to_string());
    }
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
    let mut cmd = launcher(Some(&cfg.load_cpus), rt);
    cmd.arg(&cfg.load_bin);
    run_generator(cmd, &args, fence)
}

/// The start of a command line that runs a program pinned to `cpus` (`taskset -c`) and, with
/// `rt`, at that SCHED_FIFO priority (`chrt -f`, needs root): the program follows as the next
/// argument. Both tools exec it, so the child's pid is the program's.
///
/// Real-time priority is for the open-loop cases: at a fixed, moderate rate neither broker nor
/// generator is CPU-bound, and on a shared machine their latency is otherwise mostly the time
/// they wait for a core behind other tenants' work (seen here: p50 7-12 ms at 50k msgs/s under
/// normal scheduling against 1.2-2 ms with SCHED_FIFO, for every broker). Every broker gets the
/// same treatment; the kernel's real-time throttling (`sched_rt_runtime_us`) still leaves the
/// other tasks 5 % of each core.
pub fn launcher(cpus: Option<&str>, rt: Option<u8>) -> Command {
    let mut cmd = match rt {
        Some(prio) => {
            let mut c = Command::new("chrt");
            c.arg("-f").arg(prio.to_string());
            if cpus.is_some() {
                c.arg("taskset");
            }
            c
        }
        None if cpus.is_some() => Command::new("taskset"),
        None => return Command::new("env"),
    };
    if let Some(cpus) = cpus {
        cmd.arg("-c").arg(cpus);
    }
    cmd
}

/// Runs `halyard-load` (`cmd`: the binary, possibly behind a [`launcher`]) with `args` (plus
/// `--json-only`) and returns its result. The generator bounds its own run time (hard cap);
/// `fence` is a second one: past it the generator is killed.
pub fn run_generator(
    mut cmd: Command,
    args: &[String],
    fence: Duration,
) -> Result<RunResult, CompareError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(c: &Command) -> Vec<String> {
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn launcher_pins_and_raises_priority_only_when_asked() {
        assert_eq!(line(&launcher(Some("0"), None)), ["taskset", "-c", "0"]);
        assert_eq!(
            line(&launcher(Some("1"), Some(10))),
            ["chrt", "-f", "10", "taskset", "-c", "1"]
        );
        assert_eq!(line(&launcher(None, Some(5))), ["chrt", "-f", "5"]);
        assert_eq!(line(&launcher(None, None)), ["env"]);
    }
}
