//! `halyard-load`: MQTT load generator for Halyard, Mosquitto and rumqttd (loopback only).
//!
//! Prints a human summary, then the result as one JSON line (the last line of stdout).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use halyard_bench::load::{self, ClientParams, LoadConfig, Scenario};
use halyard_bench::procfs;
use halyard_bench::report::RunResult;
use halyard_codec::{ProtocolVersion, QoS};

#[derive(Debug, Parser)]
#[command(
    name = "halyard-load",
    about = "MQTT load generator (loopback targets only)"
)]
struct Args {
    /// Broker address (host:port); must resolve to loopback only.
    #[arg(long, default_value = "127.0.0.1:1883")]
    target: String,
    /// Traffic shape.
    #[arg(long, value_enum, default_value = "p2p")]
    scenario: Scenario,
    /// fanin: publishers (default 10); fanout: subscribers (100); p2p: pairs (50);
    /// conn: connections (10000).
    #[arg(long)]
    clients: Option<usize>,
    /// QoS of publishes and subscriptions (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload bytes (>= 20: send timestamp, sequence, publisher id).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Closed loop: deliveries outstanding per publisher and subscriber it reaches.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Open loop: total publish rate in msgs/s (replaces the window).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: shortest time between two wake-ups of a worker's pacer, microseconds
    /// (0: wake for every message). Messages due within it leave together, up to this late.
    /// At 50k msgs/s QoS 1 a wake-up per message (every 20 us) cost the generator 85-90 % of
    /// its core against ~75 % with 50 us (send lag p99 ~50 us).
    #[arg(long, default_value_t = 50.0)]
    pace_gap_us: f64,
    /// QoS 1: most unacknowledged publishes per publisher.
    #[arg(long, default_value_t = 1000)]
    inflight: usize,
    /// Measurement window, seconds (at most 3600).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait for outstanding deliveries after publishing stops, seconds.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// A closed-loop publisher that hears nothing for this long sends a PINGREQ (some brokers
    /// leave bytes unread until more arrive); after four in a row it writes its window off.
    #[arg(long, default_value_t = 0.25)]
    stall_timeout: f64,
    /// Worker threads (each a tokio current-thread runtime).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4)]
    protocol: u8,
    /// Keep Alive sent in CONNECT, seconds. The generator sends no PINGREQ, so this must
    /// exceed the run time; the default (the maximum, ~18 h) does. rumqttd refuses 0.
    #[arg(long, default_value_t = u16::MAX)]
    keep_alive: u16,
    /// Broker pid(s) to sample (CPU, RSS, peak RSS), comma-separated; several (the nodes of
    /// a cluster) are summed.
    #[arg(long, value_delimiter = ',')]
    broker_pid: Vec<u32>,
    /// Subscribers connect here instead of --target (e.g. another node of a cluster);
    /// must resolve to loopback only.
    #[arg(long)]
    sub_target: Option<String>,
    /// Pause after every client has connected and subscribed, before the warm-up, seconds
    /// (a cluster: time for the subscribers' routes to reach the publishers' node).
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// conn: subscribe each connection to its own topic.
    #[arg(long)]
    subscribe: bool,
    /// conn: handshakes in flight per worker.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// conn: idle time after connecting before memory is sampled, seconds.
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
    /// Subscribers connect with persistent sessions (Clean Start 0 / Clean Session 0; 5.0:
    /// Session Expiry Interval 3600 s), so a broker with a store on makes each QoS 1 delivery
    /// durable before acknowledging its PUBLISH. Publishers connect clean.
    #[arg(long)]
    persistent: bool,
    /// Print only the JSON line.
    #[arg(long)]
    json_only: bool,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

fn config(a: &Args) -> Result<LoadConfig, String> {
    let target = load::loopback_target(&a.target).map_err(|e| e.to_string())?;
    let version = ProtocolVersion::from_level(a.protocol).ok_or("protocol must be 4 or 5")?;
    let qos = QoS::from_u8(a.qos).ok_or("qos must be 0 or 1")?;
    let clients = a.clients.unwrap_or(match a.scenario {
        Scenario::Fanin => 10,
        Scenario::Fanout => 100,
        Scenario::P2p => 50,
        Scenario::Conn => 10_000,
    });
    Ok(LoadConfig {
        client: ClientParams {
            target,
            version,
            keep_alive: a.keep_alive,
        },
        scenario: a.scenario,
        clients,
        qos,
        payload: a.payload,
        window: a.window,
        rate: a.rate,
        pace_gap: secs(a.pace_gap_us / 1e6),
        inflight: a.inflight,
        warmup: secs(a.warmup),
        duration: secs(a.duration),
        drain: secs(a.drain),
        stall_timeout: secs(a.stall_timeout),
        workers: a.workers,
        broker_pids: a.broker_pid.clone(),
        sub_target: a
            .sub_target
            .as_deref()
            .map(load::loopback_target)
            .transpose()
            .map_err(|e| e.to_string())?,
        settle: secs(a.settle),
        conn_subscribe: a.subscribe,
        conn_concurrency: a.concurrency,
        hold: secs(a.hold),
        id_prefix: format!("hl{}", std::process::id()),
        persistent: a.persistent,
    })
}

fn human(r: &RunResult) -> String {
    let mut s = format!(
        "scenario {}{} qos {} payload {} B  pubs {} subs {}  {}\n",
        r.scenario,
        if r.persistent {
            " (persistent sessions)"
        } else {
            ""
        },
        r.qos,
        r.payload,
        r.publishers,
        r.subscribers,
        match r.rate {
            Some(rate) => format!("open loop {rate:.0} msg/s"),
            None => format!("closed loop window {}", r.window),
        }
    );
    if let Some(c) = &r.conn {
        s += &format!(
            "connections {} (failed {}) in {:.2} s = {:.0} conn/s; broker RSS {} -> {} KiB = {:.0} B/conn; {:.1} us broker CPU/conn ({:.1} us in the kernel)\n",
            c.connections,
            c.failed,
            c.connect_s,
            c.connect_rate,
            c.rss_before_kib,
            c.rss_after_kib,
            c.rss_per_conn_bytes,
            c.broker_cpu_us_per_conn,
            c.broker_sys_us_per_conn
        );
    } else {
        let l = &r.latency;
        s += &format!(
            "delivered {} in {:.2} s = {:.0} msg/s (published {})\nlatency p50 {:.0} us  p99 {:.0} us  p999 {:.0} us  max {:.0} us\nlost {} duplicated {} reordered {} stalls {} nudges {} foreign {}\n",
            r.delivered,
            r.window_s,
            r.msgs_per_s,
            r.published,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            r.counts.lost,
            r.counts.duplicated,
            r.counts.reordered,
            r.stalls,
            r.nudges,
            r.foreign
        );
    }
    if let Some(b) = &r.broker {
        s += &format!(
            "broker CPU {:.2} s ({:.0} % of a core), RSS {} -> {} KiB, peak {} KiB",
            b.cpu_s,
            b.cpu_share * 100.0,
            b.rss_start_kib,
            b.rss_end_kib,
            b.peak_rss_kib
        );
        if let Some(d) = r.deliveries_per_broker_cpu_s {
            s += &format!(", {d:.0} deliveries per broker CPU-second");
        }
        s += "\n";
    }
    s += &format!("generator CPU {:.0} % of a core", r.own_cpu_share * 100.0);
    if let Some(st) = r.host_steal_share {
        s += &format!("; host steal {:.1} % of all CPU time", st * 100.0);
    }
    if let Some(l) = &r.send_lag {
        s += &format!(
            "; send lag against the schedule p50 {:.0} us  p99 {:.0} us",
            l.p50_us, l.p99_us
        );
    }
    if let Some(l) = &r.latency_from_send {
        s += &format!(
            "\nlatency from the actual send (without the send lag): p50 {:.0} us  p99 {:.0} us  p999 {:.0} us",
            l.p50_us, l.p99_us, l.p999_us
        );
    }
    for e in &r.errors {
        s += &format!("\nerror: {e}");
    }
    s
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("halyard-load: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.validate() {
        eprintln!("halyard-load: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = procfs::raise_nofile_limit() {
        eprintln!("halyard-load: cannot raise the open-file limit: {e}");
    }
    // Watchdog: whatever happens, the process ends within the hard cap.
    let cap = cfg.hard_cap();
    std::thread::spawn(move || {
        std::thread::sleep(cap);
        eprintln!(
            "halyard-load: hard time cap of {} s reached, exiting",
            cap.as_secs()
        );
        std::process::exit(3);
    });
    match load::run(&cfg) {
        Ok(r) => {
            // A closed stdout (e.g. piped into `head`) is not worth a panic: ignore write errors.
            let mut out = std::io::stdout().lock();
            if !args.json_only {
                let _ = writeln!(out, "{}", human(&r));
            }
            // serde_json cannot fail on this plain struct of numbers and strings.
            let json = serde_json::to_string(&r).expect("RunResult serialises");
            let _ = writeln!(out, "{json}");
            if r.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("halyard-load: {e}");
            ExitCode::from(1)
        }
    }
}
