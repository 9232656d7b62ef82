//! `halyard-cluster`: the cluster benchmark of issue 8 (loopback only). Starts three Halyard
//! cores on 127.0.0.x, measures cross-node and same-node p2p throughput with `halyard-load`
//! and the route-commit rate with and without route batching, writes `results.md` and
//! `results.json`. Every node it started is stopped by pid and its data directory removed,
//! also when a run fails; a watchdog SIGKILLs them and exits past the hard cap.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use halyard_bench::cluster::nodes::{self, ClusterSpec};
use halyard_bench::cluster::report::{self, Info};
use halyard_bench::cluster::routes::RouteParams;
use halyard_bench::cluster::{self, ClusterBenchConfig, ClusterBenchError, Mode};
use halyard_bench::procfs;
use halyard_bench::report::{first_line, utc_now};

#[derive(Debug, Parser)]
#[command(
    name = "halyard-cluster",
    about = "Halyard cluster benchmark: cross-node p2p and route-commit rate (loopback only)"
)]
struct Args {
    /// Publisher/subscriber pairs of the p2p cases.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// QoS levels of the p2p cases.
    #[arg(long, default_value = "0,1", value_delimiter = ',')]
    qos: Vec<u8>,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Measurement window per p2p run, seconds.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Warm-up per p2p run, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Pause after the subscribers' SUBACKs before the warm-up (routes reach the
    /// publishers' node), seconds.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Generator worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Rounds of the p2p cases (same-node and cross-node alternate); 0 = none.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Distinct filters per route-commit run.
    #[arg(long, default_value_t = 10_000)]
    route_filters: usize,
    /// Clients the filters are spread over (at most 1000 each with the default
    /// `mqtt.max_subscriptions_per_client`).
    #[arg(long, default_value_t = 10)]
    route_clients: usize,
    /// Filters per SUBSCRIBE packet.
    #[arg(long, default_value_t = 100)]
    route_per_packet: usize,
    /// Route-commit runs per mode; 0 = none.
    #[arg(long, default_value_t = 3)]
    route_repeats: usize,
    /// Bound on each route phase (subscribe until visible; removal), seconds.
    #[arg(long, default_value_t = 120.0)]
    route_timeout: f64,
    /// Route batching modes, each on a fresh cluster (p2p runs on the batched one).
    #[arg(long, default_value = "batched,unbatched", value_delimiter = ',')]
    modes: Vec<String>,
    /// io.backend of the nodes.
    #[arg(long, default_value = "uring")]
    backend: String,
    /// io.threads per node.
    #[arg(long, default_value_t = 1)]
    io_threads: usize,
    /// Node i listens on 127.0.0.(first-ip + i).
    #[arg(long, default_value_t = 61)]
    first_ip: u8,
    /// MQTT port of every node (admin port + 1, cluster port + 2).
    #[arg(long, default_value_t = 23883)]
    port: u16,
    /// Parent of the nodes' data directories (a temporary directory removed at the end).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Output directory (results.md, results.json, node logs).
    #[arg(long, default_value = "benches/out/cluster")]
    out: PathBuf,
    /// halyard-load binary.
    #[arg(long, default_value = "target/release/halyard-load")]
    load_bin: PathBuf,
    /// halyard binary.
    #[arg(long, default_value = "target/release/halyard")]
    halyard_bin: PathBuf,
    /// The command line to print in the report.
    #[arg(long)]
    command: Option<String>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn config(a: &Args) -> Result<ClusterBenchConfig, ClusterBenchError> {
    let modes = a
        .modes
        .iter()
        .map(|m| {
            Mode::parse(m.trim())
                .ok_or_else(|| ClusterBenchError::Config(format!("unknown mode {m}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !(a.route_timeout > 0.0 && a.route_timeout <= 600.0) {
        return Err(ClusterBenchError::Config(
            "route-timeout must be within 0..=600 s".into(),
        ));
    }
    Ok(ClusterBenchConfig {
        spec: ClusterSpec {
            first_ip: a.first_ip,
            cores: 3,
            port: a.port,
            backend: a.backend.clone(),
            io_threads: a.io_threads,
            halyard: a.halyard_bin.clone(),
            data_root: a.data_root.clone().unwrap_or_else(std::env::temp_dir),
            logs: a.out.join("logs"),
        },
        load_bin: a.load_bin.clone(),
        pairs: a.pairs,
        payload: a.payload,
        qos: a.qos.clone(),
        duration: a.duration,
        warmup: a.warmup,
        settle: a.settle,
        workers: a.workers,
        p2p_repeats: a.repeats,
        routes: RouteParams {
            filters: a.route_filters,
            clients: a.route_clients,
            per_packet: a.route_per_packet,
            timeout: Duration::from_secs_f64(a.route_timeout),
        },
        route_repeats: a.route_repeats,
        modes,
    })
}

/// Upper bound of the whole run: every p2p run's own cap and every route phase's bound,
/// plus cluster start-ups.
fn hard_cap(c: &ClusterBenchConfig) -> Duration {
    let p2p_run = Duration::from_secs_f64(c.duration + c.warmup + c.settle + 3.0)
        + halyard_bench::load::SETUP_TIMEOUT
        + Duration::from_secs(30);
    let p2p = p2p_run * u32::try_from(c.p2p_repeats * c.qos.len() * 2).unwrap_or(u32::MAX);
    let route_run = c.routes.timeout * 3 + halyard_bench::load::SETUP_TIMEOUT;
    let routes = route_run * u32::try_from(c.route_repeats * c.modes.len()).unwrap_or(u32::MAX);
    let clusters = (nodes::FORM_TIMEOUT + Duration::from_secs(90))
        * u32::try_from(c.modes.len()).unwrap_or(u32::MAX);
    p2p + routes + clusters
}

fn run(a: Args) -> Result<(), ClusterBenchError> {
    let cfg = config(&a)?;
    cfg.validate()?;
    procfs::raise_nofile_limit()?;
    std::fs::create_dir_all(&a.out)?;
    let cap = hard_cap(&cfg);
    std::thread::spawn(move || {
        std::thread::sleep(cap);
        eprintln!(
            "halyard-cluster: hard time cap of {} s reached; killing the nodes",
            cap.as_secs()
        );
        nodes::kill_live();
        std::process::exit(3);
    });
    let mut info = Info {
        command: a
            .command
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        started: utc_now(),
        load_start: loadavg(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        version: first_line(&a.halyard_bin.to_string_lossy(), &["--version"]).unwrap_or_default(),
        settings: format!(
            "3 cores on 127.0.0.{}-{} ({} backend, {} I/O thread(s) each, Raft log in {}), no CPU pinning; \
             p2p: {} pairs, {} B payload, window 64, {} s after {} s warm-up and {} s settle, {} round(s); \
             routes: {} filters over {} clients, {} per SUBSCRIBE, {} run(s) per mode",
            a.first_ip,
            a.first_ip.saturating_add(2),
            a.backend,
            a.io_threads,
            cfg.spec.data_root.display(),
            a.pairs,
            a.payload,
            a.duration,
            a.warmup,
            a.settle,
            a.repeats,
            a.route_filters,
            a.route_clients,
            a.route_per_packet,
            a.route_repeats
        ),
        ..Info::default()
    };
    let measured = cluster::run(&cfg, |line| {
        eprintln!("[{}] {line}", utc_now());
    })?;
    info.finished = utc_now();
    info.load_end = loadavg();
    let md = report::markdown(&info, &measured);
    std::fs::write(a.out.join("results.md"), &md)?;
    let json = serde_json::json!({
        "info": info,
        "p2p_cells": report::p2p_cells(&measured),
        "route_cells": report::route_cells(&measured),
        "runs": measured,
    });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    let _ = writeln!(std::io::stdout(), "{md}");
    eprintln!("wrote {}/results.md and results.json", a.out.display());
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halyard-cluster: {e}");
            ExitCode::FAILURE
        }
    }
}
