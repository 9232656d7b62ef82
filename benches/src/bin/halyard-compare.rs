//! `halyard-compare`: runs the benchmark cases on Halyard, Mosquitto and rumqttd in turn and
//! writes `results.md`, `results.json` and PNG charts. Installing the peers is the job of
//! `benches/compare.sh` (the `just bench-compare` recipe); this binary expects them present.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use halyard_bench::compare::charts::{self, ChartSpec};
use halyard_bench::compare::summary::{self, Cell, RunInfo};
use halyard_bench::compare::{self, Broker, BrokerBins, CaseKind, CompareConfig, CompareError};
use halyard_bench::procfs;
use halyard_bench::report::{first_line, utc_now};

#[derive(Debug, Parser)]
#[command(
    name = "halyard-compare",
    about = "Side-by-side MQTT broker benchmark (loopback only)"
)]
struct Args {
    /// Brokers, comma-separated, in turn order: halyard-uring, halyard-epoll, mosquitto, rumqttd;
    /// also halyard-uring-store, halyard-epoll-store (store on, a fresh store per run) and
    /// halyard-uring-t2, halyard-epoll-t2 (io.threads = 2; any -t<N>, also before -store).
    #[arg(
        long,
        default_value = "halyard-uring,halyard-epoll,mosquitto,rumqttd",
        value_delimiter = ','
    )]
    brokers: Vec<String>,
    /// Cases to run (default: all): fanin-q0, fanin-q1, fanout-q0, fanout-q1, p2p-q0, p2p-q1,
    /// p2p-q1-persistent, p2p-q0-5k, p2p-q1-50k, conn-idle, conn-sub.
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Rounds over every case and broker.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Measurement window per run, seconds (the defaults make a full run about 15 minutes).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Warm-up per run, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections of the conn cases.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Output directory.
    #[arg(long, default_value = "benches/out")]
    out: PathBuf,
    /// halyard-load binary.
    #[arg(long, default_value = "target/release/halyard-load")]
    load_bin: PathBuf,
    /// halyard binary.
    #[arg(long, default_value = "target/release/halyard")]
    halyard_bin: PathBuf,
    /// mosquitto binary.
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto_bin: PathBuf,
    /// rumqttd binary.
    #[arg(long, default_value = "benches/.peers/bin/rumqttd")]
    rumqttd_bin: PathBuf,
    /// taskset CPU list for the broker.
    #[arg(long, default_value = "0")]
    broker_cpus: String,
    /// taskset CPU list for the load generator.
    #[arg(long, default_value = "1")]
    load_cpus: String,
    /// Generator worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Limit every broker run to this many CPUs per I/O thread (a cgroup with a CFS quota;
    /// needs root), e.g. 0.4: the thread-scaling runs (`just bench-scaling`), where broker and
    /// generator share the cores and the quota keeps the broker, not the generator, the limit.
    #[arg(long)]
    cpu_per_thread: Option<f64>,
    /// Closed-loop window per publisher for the throughput cases (the generator's default,
    /// 64, when not given). A larger one keeps more in flight, for runs that must be limited
    /// by the broker's CPU rather than by round trips (the thread-scaling runs).
    #[arg(long)]
    window: Option<usize>,
    /// SCHED_FIFO priority (chrt -f, needs root) for broker and generator in the open-loop
    /// (latency) cases, so that other work on a shared machine does not make their latency;
    /// 0: normal scheduling.
    #[arg(long, default_value_t = 10)]
    rt_priority: u8,
    /// First port (broker i listens on base + i, Halyard's admin on port + 1000).
    #[arg(long, default_value_t = 21883)]
    base_port: u16,
    /// The command line to print in the report (the wrapper script passes its own).
    #[arg(long)]
    command: Option<String>,
}

fn versions(brokers: &[Broker], bins: &BrokerBins) -> Vec<String> {
    let mut v = Vec::new();
    let s = |p: &PathBuf| p.to_string_lossy().into_owned();
    if brokers.iter().any(Broker::is_halyard) {
        v.push(format!(
            "halyard: {}",
            first_line(&s(&bins.halyard), &["--version"]).unwrap_or_default()
        ));
    }
    if brokers.contains(&Broker::Mosquitto) {
        v.push(format!(
            "mosquitto: {}",
            first_line(&s(&bins.mosquitto), &["-h"]).unwrap_or_default()
        ));
    }
    if brokers.contains(&Broker::Rumqttd) {
        v.push(format!(
            "rumqttd: {}",
            first_line(&s(&bins.rumqttd), &["--version"]).unwrap_or_default()
        ));
    }
    v
}

fn chart_specs() -> Vec<ChartSpec<'static>> {
    fn throughput(c: &Cell) -> bool {
        c.kind == CaseKind::Throughput
    }
    fn open_loop(c: &Cell) -> bool {
        c.kind == CaseKind::Latency
    }
    fn conns(c: &Cell) -> bool {
        c.kind == CaseKind::Connections
    }
    vec![
        ChartSpec {
            file: "per_cpu.png",
            title: "Deliveries per broker CPU-second (closed loop)",
            y_label: "deliveries / CPU-s",
            log: true,
            metric: |c| c.per_cpu_s,
            filter: throughput,
        },
        ChartSpec {
            file: "msgs_per_s.png",
            title: "Delivered messages per second (closed loop)",
            y_label: "msgs/s",
            log: true,
            metric: |c| c.msgs_per_s,
            filter: throughput,
        },
        ChartSpec {
            file: "latency_p50.png",
            title: "End-to-end p50 latency (open loop)",
            y_label: "microseconds",
            log: true,
            metric: |c| c.p50_us,
            filter: open_loop,
        },
        ChartSpec {
            file: "latency_p99.png",
            title: "End-to-end p99 latency (open loop)",
            y_label: "microseconds",
            log: true,
            metric: |c| c.p99_us,
            filter: open_loop,
        },
        ChartSpec {
            file: "conn_memory.png",
            title: "Broker RSS per idle connection",
            y_label: "bytes",
            log: true,
            metric: |c| c.bytes_per_conn,
            filter: conns,
        },
        ChartSpec {
            file: "conn_per_cpu_s.png",
            title: "Connections per broker CPU-second",
            y_label: "connections / broker CPU-s",
            log: false,
            metric: |c| c.conn_per_cpu_s,
            filter: conns,
        },
        ChartSpec {
            file: "connect_rate.png",
            title: "Connect rate",
            y_label: "connections / s",
            log: false,
            metric: |c| c.connect_rate,
            filter: conns,
        },
    ]
}

fn run(a: Args) -> Result<(), CompareError> {
    let brokers: Vec<Broker> = a
        .brokers
        .iter()
        .map(|b| {
            Broker::parse(b.trim())
                .ok_or_else(|| CompareError::Config(format!("unknown broker {b}")))
        })
        .collect::<Result<_, _>>()?;
    let mut cases = compare::default_cases(a.connections);
    if !a.cases.is_empty() {
        if let Some(bad) = a
            .cases
            .iter()
            .find(|n| !cases.iter().any(|c| &c.name == *n))
        {
            return Err(CompareError::Config(format!("unknown case {bad}")));
        }
        cases.retain(|c| a.cases.contains(&c.name));
    }
    if let Some(q) = a.cpu_per_thread
        && !(q > 0.0 && q <= 64.0)
    {
        return Err(CompareError::Config(format!(
            "--cpu-per-thread {q}: must be in (0, 64]"
        )));
    }
    if a.rt_priority > 99 {
        return Err(CompareError::Config(format!(
            "--rt-priority {}: SCHED_FIFO priorities are 1..=99 (0: off)",
            a.rt_priority
        )));
    }
    if a.repeats == 0 || a.repeats > 50 || !(a.duration > 0.0 && a.duration <= 600.0) {
        return Err(CompareError::Config(
            "repeats must be 1..=50 and duration 0..=600 s".into(),
        ));
    }
    let bins = BrokerBins {
        halyard: a.halyard_bin.clone(),
        mosquitto: a.mosquitto_bin.clone(),
        rumqttd: a.rumqttd_bin.clone(),
    };
    std::fs::create_dir_all(&a.out)?;
    procfs::raise_nofile_limit()?;
    let cfg = CompareConfig {
        brokers: brokers.clone(),
        cases: cases.clone(),
        repeats: a.repeats,
        duration: a.duration,
        warmup: a.warmup,
        load_bin: a.load_bin.clone(),
        bins: bins.clone(),
        broker_cpus: a.broker_cpus.clone(),
        load_cpus: a.load_cpus.clone(),
        workers: a.workers,
        cpu_per_thread: a.cpu_per_thread,
        window: a.window,
        rt_priority: (a.rt_priority > 0).then_some(a.rt_priority),
        base_port: a.base_port,
        out: a.out.clone(),
    };
    let mut log = std::fs::File::create(a.out.join("samples.jsonl"))?;
    let samples = compare::run_all(&cfg, |s| {
        let line = serde_json::to_string(s).unwrap_or_default();
        let _ = writeln!(log, "{line}");
        let brief = s.result.as_ref().map_or(String::new(), |r| match &r.conn {
            Some(c) => format!(
                "{:.0} conn/s, {:.1} broker CPU us/conn, {:.0} B/conn",
                c.connect_rate, c.broker_cpu_us_per_conn, c.rss_per_conn_bytes
            ),
            None => format!(
                "{:.0} msg/s, {:.0} per broker CPU-s, p99 {:.0} us",
                r.msgs_per_s,
                r.deliveries_per_broker_cpu_s.unwrap_or(0.0),
                r.latency.p99_us
            ),
        });
        eprintln!(
            "[{}] round {} {:<11} {:<14} {brief} {}",
            utc_now(),
            s.repeat + 1,
            s.case,
            s.broker,
            s.error.as_deref().unwrap_or("")
        );
    });
    let names: Vec<String> = brokers.iter().map(Broker::name).collect();
    let cells = summary::summarise(&cases, &names, &samples);
    let ratios = summary::ratios(&cells, &samples);
    let mut chart_files = Vec::new();
    let mut chart_error = None;
    match charts::load_font() {
        Ok(()) => {
            for spec in chart_specs() {
                match charts::bar_chart(&a.out, &spec, &cells, &names) {
                    Ok(true) => chart_files.push(spec.file.to_string()),
                    Ok(false) => {}
                    Err(e) => chart_error = Some(e.to_string()),
                }
            }
        }
        Err(e) => chart_error = Some(e.to_string()),
    }
    let info = RunInfo {
        command: a
            .command
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        versions: versions(&brokers, &bins),
        settings: format!(
            "{} round(s), {} s window after {} s warm-up, broker on CPU {}, generator on CPU {} ({} worker thread(s)){}{}{}, brokers in turn: {}",
            a.repeats,
            a.duration,
            a.warmup,
            a.broker_cpus,
            a.load_cpus,
            a.workers,
            a.window.map_or(String::new(), |w| format!(
                ", closed-loop window {w} per publisher"
            )),
            a.cpu_per_thread.map_or(String::new(), |q| format!(
                ", broker CPU quota {q} CPU per I/O thread (cgroup, {} us period)",
                compare::cgroup::PERIOD_US
            )),
            if a.rt_priority > 0 {
                format!(
                    ", open-loop cases with broker and generator at SCHED_FIFO priority {}",
                    a.rt_priority
                )
            } else {
                String::new()
            },
            names.join(" ")
        ),
        finished: utc_now(),
    };
    let mut md = summary::markdown(&info, &cells, &ratios, &chart_files);
    if let Some(e) = chart_error {
        md += &format!("\nCharts not drawn: {e}\n");
    }
    std::fs::write(a.out.join("results.md"), &md)?;
    let json =
        serde_json::json!({ "info": info, "cells": cells, "ratios": ratios, "samples": samples });
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    let _ = writeln!(std::io::stdout(), "{md}");
    eprintln!(
        "wrote {}/results.md, results.json, samples.jsonl and {} chart(s)",
        a.out.display(),
        chart_files.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("halyard-compare: {e}");
            ExitCode::FAILURE
        }
    }
}
