//! The load generator: scenarios, worker threads and the measurement controller.
//!
//! Runtime: `workers` OS threads, each running its own tokio current-thread runtime with the
//! connections assigned to it round-robin (no work stealing, no cross-thread wake-ups on the
//! socket path). In open loop each worker also has a pacer thread ([`pacer`]) that writes its
//! publishers' messages on schedule with a high-resolution timer. Publishers and subscribers share only per-publisher atomics (outstanding
//! deliveries, sequence counters) and a `Notify` that wakes a closed-loop publisher when its
//! window opens.
//!
//! A run goes SETUP (connect, subscribe) -> WARMUP -> MEASURE (the window every figure but
//! the loss counts refers to) -> DRAIN (publishers stop; wait for outstanding deliveries) ->
//! DONE. A watchdog thread ends the process if the run overshoots its hard cap.

mod conn;
pub mod mqtt;
pub mod pacer;
mod publisher;
mod subscriber;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use halyard_codec::{DecodeError, EncodeError, QoS};
use tokio::sync::{Notify, watch};

pub use mqtt::{ClientParams, PERSISTENT_SESSION_EXPIRY, PublishTemplate, SessionKind};

use crate::latency::Latency;
use crate::payload::{Clock, HEADER_LEN};
use crate::procfs::{self, Pid, ProcSample};
use crate::report::{BrokerStats, RunResult};
use crate::tracker::{DeliveryCounts, SeqTracker};

/// Longest `--duration` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Most clients (connections) one run may open.
pub const MAX_CLIENTS: usize = 200_000;
/// Most messages one publisher writes per socket write.
pub const MAX_BATCH: usize = 256;
/// Most QoS 1 publishes a publisher keeps unacknowledged (packet identifiers are 16 bits).
pub const MAX_INFLIGHT: usize = 65_000;
/// Longest pacer gap accepted (`--pace-gap-us`).
pub const MAX_PACE_GAP: Duration = Duration::from_millis(10);
/// Open loop: the first message is due this long after WARMUP starts (every pacer is awake
/// by then).
pub const PACER_LEAD_NS: u64 = 2_000_000;
/// How long the controller waits for every client to connect and subscribe.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a run or a client failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent something the codec rejects.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded (bad configuration).
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// The broker refused CONNECT or SUBSCRIBE.
    #[error("refused: {0}")]
    Refused(String),
    /// The broker sent an unexpected packet during the handshake.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// A step took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The configuration is not usable.
    #[error("config: {0}")]
    Config(String),
}

/// The traffic shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Scenario {
    /// N publishers -> 1 subscriber on a wildcard filter.
    Fanin,
    /// 1 publisher -> N subscribers.
    Fanout,
    /// N independent publisher/subscriber pairs.
    P2p,
    /// N idle connections (optionally one subscription each): connect rate and memory.
    Conn,
}

impl Scenario {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanin => "fanin",
            Scenario::Fanout => "fanout",
            Scenario::P2p => "p2p",
            Scenario::Conn => "conn",
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Connection parameters.
    pub client: ClientParams,
    /// Traffic shape.
    pub scenario: Scenario,
    /// fanin: publishers; fanout: subscribers; p2p: pairs; conn: connections.
    pub clients: usize,
    /// QoS of publishes and subscriptions (0 or 1).
    pub qos: QoS,
    /// Payload bytes (>= 20).
    pub payload: usize,
    /// Closed loop: deliveries outstanding per publisher per subscriber it reaches.
    pub window: usize,
    /// Open loop: total msgs/s over all publishers (replaces the window).
    pub rate: Option<f64>,
    /// Open loop: shortest time between two wake-ups of a worker's pacer (messages due
    /// within it leave together); zero: one wake-up per due time.
    pub pace_gap: Duration,
    /// QoS 1: most unacknowledged publishes per publisher.
    pub inflight: usize,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Longest wait for outstanding deliveries after publishing stops.
    pub drain: Duration,
    /// A closed-loop publisher that hears nothing this long sends a PINGREQ; after four in a
    /// row it writes its outstanding deliveries off.
    pub stall_timeout: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Broker processes to sample (their figures are summed, e.g. the nodes of a cluster).
    pub broker_pids: Vec<u32>,
    /// Where the subscribers connect when not to `client.target` (a cluster: publishers on
    /// one node, subscribers on another).
    pub sub_target: Option<SocketAddr>,
    /// Pause between the end of setup (every SUBACK received) and the warm-up: in a cluster,
    /// the time for the subscribers' routes to reach the publishers' node.
    pub settle: Duration,
    /// conn: subscribe each connection to its own topic.
    pub conn_subscribe: bool,
    /// conn: handshakes in flight per worker.
    pub conn_concurrency: usize,
    /// conn: idle time after connecting before memory is sampled.
    pub hold: Duration,
    /// Client identifier prefix (unique per run).
    pub id_prefix: String,
    /// Subscribers ask for persistent sessions ([`SessionKind::Persistent`]); publishers
    /// always connect clean.
    pub persistent: bool,
}

impl LoadConfig {
    /// Checks the limits; returns the first problem.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: &str| Err(LoadError::Config(m.to_owned()));
        if self.clients == 0 || self.clients > MAX_CLIENTS {
            return bad("clients must be 1..=200000");
        }
        if self.payload < HEADER_LEN || self.payload > 1 << 20 {
            return bad("payload must be 20 B ..= 1 MiB");
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return bad("duration must be within 0..=3600 s");
        }
        if self.workers == 0 || self.workers > 64 {
            return bad("workers must be 1..=64");
        }
        if self.qos == QoS::ExactlyOnce {
            return bad("QoS 2 is not supported by the generator");
        }
        if self.rate.is_none() && self.window == 0 {
            return bad("closed loop needs window >= 1");
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad("rate must be a positive number");
        }
        if self.pace_gap > MAX_PACE_GAP {
            return bad("pace gap must be at most 10 ms");
        }
        if self.inflight == 0 || self.inflight > MAX_INFLIGHT {
            return bad("inflight must be 1..=65000");
        }
        if self.conn_concurrency == 0 {
            return bad("conn concurrency must be >= 1");
        }
        if self.persistent && self.scenario == Scenario::Conn {
            return bad("persistent applies to traffic scenarios (fanin, fanout, p2p)");
        }
        if self.sub_target.is_some() && self.scenario == Scenario::Conn {
            return bad("sub-target applies to traffic scenarios (fanin, fanout, p2p)");
        }
        Ok(())
    }

    /// The connection parameters of the subscribers: `client` with `sub_target`, if set.
    pub fn subscriber_params(&self) -> ClientParams {
        ClientParams {
            target: self.sub_target.unwrap_or(self.client.target),
            ..self.client.clone()
        }
    }

    /// The longest a run may take before the watchdog ends the process.
    pub fn hard_cap(&self) -> Duration {
        SETUP_TIMEOUT
            + self.settle
            + self.warmup
            + self.duration
            + self.drain
            + self.hold
            + Duration::from_secs(30)
    }
}

/// One publisher of the plan.
#[derive(Debug, Clone)]
pub struct PubSpec {
    /// Index, carried in the payload.
    pub id: u32,
    /// Topic it publishes to.
    pub topic: String,
    /// Subscribers each message reaches.
    pub fan: usize,
}

/// One subscriber of the plan.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Index.
    pub id: u32,
    /// Filter it subscribes to.
    pub filter: String,
    /// Publishers whose messages it expects.
    pub expects: Vec<u32>,
}

/// Who publishes and subscribes to what.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Publishers.
    pub pubs: Vec<PubSpec>,
    /// Subscribers.
    pub subs: Vec<SubSpec>,
}

/// The clients of a traffic scenario (`conn` has none: see the conn module).
pub fn plan(scenario: Scenario, n: usize) -> Plan {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    match scenario {
        Scenario::Fanin => Plan {
            pubs: (0..n32)
                .map(|i| PubSpec {
                    id: i,
                    topic: format!("bench/fanin/{i}"),
                    fan: 1,
                })
                .collect(),
            subs: vec![SubSpec {
                id: 0,
                filter: "bench/fanin/#".into(),
                expects: (0..n32).collect(),
            }],
        },
        Scenario::Fanout => Plan {
            pubs: vec![PubSpec {
                id: 0,
                topic: "bench/fanout".into(),
                fan: n,
            }],
            subs: (0..n32)
                .map(|i| SubSpec {
                    id: i,
                    filter: "bench/fanout".into(),
                    expects: vec![0],
                })
                .collect(),
        },
        Scenario::P2p => Plan {
            pubs: (0..n32)
                .map(|i| PubSpec {
                    id: i,
                    topic: format!("bench/p2p/{i}"),
                    fan: 1,
                })
                .collect(),
            subs: (0..n32)
                .map(|i| SubSpec {
                    id: i,
                    filter: format!("bench/p2p/{i}"),
                    expects: vec![i],
                })
                .collect(),
        },
        Scenario::Conn => Plan::default(),
    }
}

/// Run phases, stored in [`Shared::phase`].
pub mod phase {
    /// Connecting and subscribing.
    pub const SETUP: u8 = 0;
    /// Publishing, not measured.
    pub const WARMUP: u8 = 1;
    /// Publishing, measured.
    pub const MEASURE: u8 = 2;
    /// Publishing stopped; waiting for outstanding deliveries.
    pub const DRAIN: u8 = 3;
    /// Everyone stops.
    pub const DONE: u8 = 4;
}

/// Per-publisher counters shared with the subscribers.
#[derive(Debug, Default)]
pub struct PubState {
    /// Deliveries sent but not yet received (may go negative after a stall write-off).
    pub outstanding: AtomicI64,
    /// Messages published (= the next sequence number).
    pub sent: AtomicU64,
    /// Messages published during MEASURE.
    pub sent_measured: AtomicU64,
    /// Wakes the publisher when deliveries or acknowledgements arrive.
    pub notify: Notify,
    /// Stall write-offs.
    pub stalls: AtomicU64,
    /// PINGREQs sent because nothing came back for a stall timeout.
    pub nudges: AtomicU64,
}

/// State shared by the controller and every client task.
#[derive(Debug)]
pub struct Shared {
    /// Time origin of the payload stamps.
    pub clock: Clock,
    /// Current phase (see [`phase`]); read on the hot path.
    pub phase: AtomicU8,
    /// The same phase, for waiting.
    pub phase_tx: watch::Sender<u8>,
    /// One entry per publisher of the plan.
    pub pubs: Vec<PubState>,
    /// Clients that finished their handshake.
    pub ready: AtomicUsize,
    /// Clients that failed.
    pub failed: AtomicUsize,
    /// Error messages (first few).
    pub errors: std::sync::Mutex<Vec<String>>,
    /// Open loop: send lateness against the schedule, merged from every pacer.
    pub send_lag: std::sync::Mutex<Latency>,
    /// Open loop: when the first message is due (ns on `clock`), set before WARMUP.
    pub origin_ns: AtomicU64,
}

/// Most error messages kept per run.
pub const MAX_ERRORS: usize = 20;

impl Shared {
    fn new(npubs: usize) -> Self {
        Shared {
            clock: Clock::start(),
            phase: AtomicU8::new(phase::SETUP),
            phase_tx: watch::channel(phase::SETUP).0,
            pubs: (0..npubs).map(|_| PubState::default()).collect(),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            errors: std::sync::Mutex::new(Vec::new()),
            send_lag: std::sync::Mutex::new(Latency::new()),
            origin_ns: AtomicU64::new(0),
        }
    }

    /// Moves to phase `p`.
    pub fn set_phase(&self, p: u8) {
        self.phase.store(p, Ordering::Release);
        self.phase_tx.send_replace(p);
    }

    /// The current phase.
    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Records a client failure.
    pub fn fail(&self, who: &str, e: &LoadError) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means another client panicked while pushing; keep going.
        let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errs.len() < MAX_ERRORS {
            errs.push(format!("{who}: {e}"));
        }
    }
}

/// What a subscriber hands back when it ends.
#[derive(Debug, Default)]
pub struct SubOutcome {
    /// Latencies of the deliveries received in MEASURE.
    pub latency: Latency,
    /// The same from the actual send (without the publisher's send lag).
    pub from_send: Latency,
    /// Deliveries received in MEASURE.
    pub delivered: u64,
    /// Per expected publisher, its stream accounting (index = position in `expects`).
    pub streams: Vec<(u32, SeqTracker)>,
    /// Messages not ours or from an unexpected publisher.
    pub foreign: u64,
}

/// Runs one traffic scenario (fanin, fanout, p2p) and measures it.
pub fn run_traffic(cfg: &LoadConfig) -> Result<RunResult, LoadError> {
    let plan = plan(cfg.scenario, cfg.clients);
    let shared = Arc::new(Shared::new(plan.pubs.len()));
    let total = plan.pubs.len() + plan.subs.len();
    // Round-robin assignment of clients to workers, subscribers first so that each worker
    // gets a share of both.
    let mut per_worker: Vec<(Vec<SubSpec>, Vec<PubSpec>)> =
        (0..cfg.workers).map(|_| Default::default()).collect();
    for (i, s) in plan.subs.iter().enumerate() {
        per_worker[i % cfg.workers].0.push(s.clone());
    }
    for (i, p) in plan.pubs.iter().enumerate() {
        per_worker[(plan.subs.len() + i) % cfg.workers]
            .1
            .push(p.clone());
    }
    let mut handles = Vec::new();
    for (w, (subs, pubs)) in per_worker.into_iter().enumerate() {
        let shared = shared.clone();
        let cfg = cfg.clone();
        let h = std::thread::Builder::new()
            .name(format!("load-{w}"))
            .spawn(move || worker(&cfg, &shared, subs, pubs))?;
        handles.push(h);
    }
    let broker = &cfg.broker_pids;
    procfs::reset_peak_rss_all(broker)?;
    wait_ready(&shared, total)?;
    std::thread::sleep(cfg.settle);
    shared
        .origin_ns
        .store(shared.clock.now_ns() + PACER_LEAD_NS, Ordering::Release);
    shared.set_phase(phase::WARMUP);
    std::thread::sleep(cfg.warmup);
    let b0 = procfs::sample_sum(broker)?;
    let me0 = procfs::sample(Pid::Me)?;
    let host0 = procfs::host_ticks();
    let t0 = Instant::now();
    shared.set_phase(phase::MEASURE);
    sleep_unless_failed(&shared, cfg.duration);
    shared.set_phase(phase::DRAIN);
    let window_s = t0.elapsed().as_secs_f64();
    let b1 = procfs::sample_sum(broker)?;
    let me1 = procfs::sample(Pid::Me)?;
    let host_steal_share = procfs::host_ticks()
        .zip(host0)
        .and_then(|(b, a)| a.steal_share(b));
    let drain_end = Instant::now() + cfg.drain;
    while Instant::now() < drain_end
        && shared
            .pubs
            .iter()
            .any(|p| p.outstanding.load(Ordering::Acquire) > 0)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.set_phase(phase::DONE);
    let mut outcomes = Vec::new();
    for h in handles {
        match h.join() {
            Ok(o) => outcomes.extend(o),
            Err(_) => return Err(LoadError::Config("a worker thread panicked".into())),
        }
    }
    let mut result = summarise(
        cfg,
        &plan,
        &shared,
        outcomes,
        window_s,
        (b0, b1),
        (me0, me1),
    );
    result.host_steal_share = host_steal_share;
    Ok(result)
}

fn wait_ready(shared: &Shared, total: usize) -> Result<(), LoadError> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let ready = shared.ready.load(Ordering::Acquire);
        let failed = shared.failed.load(Ordering::Acquire);
        if failed > 0 {
            shared.set_phase(phase::DONE);
            let errs = shared
                .errors
                .lock()
                .map(|e| e.join("; "))
                .unwrap_or_default();
            return Err(LoadError::Refused(format!(
                "{failed} client(s) failed during setup: {errs}"
            )));
        }
        if ready >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            shared.set_phase(phase::DONE);
            return Err(LoadError::Timeout("setup"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sleeps `d`, waking early if a client fails (the run is then reported with its errors).
fn sleep_unless_failed(shared: &Shared, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && shared.failed.load(Ordering::Relaxed) == 0 {
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
}

fn worker(
    cfg: &LoadConfig,
    shared: &Arc<Shared>,
    subs: Vec<SubSpec>,
    pubs: Vec<PubSpec>,
) -> Vec<SubOutcome> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.fail("worker", &LoadError::Io(e));
            return Vec::new();
        }
    };
    // Open loop: the pacer thread writes this worker's publishers' messages.
    let (pacer_tx, pacer) = match cfg.rate {
        Some(rate) if !pubs.is_empty() => {
            let (tx, rx) = std::sync::mpsc::channel();
            let (sh, n, gap) = (shared.clone(), pubs.len(), cfg.pace_gap);
            let spawned = std::thread::Builder::new()
                .name("pacer".into())
                .spawn(move || pacer::run(&sh, &rx, n, rate, gap));
            match spawned {
                Ok(h) => (Some(tx), Some(h)),
                Err(e) => {
                    shared.fail("pacer", &LoadError::Io(e));
                    return Vec::new();
                }
            }
        }
        _ => (None, None),
    };
    let out = rt.block_on(async {
        let mut sub_tasks = Vec::new();
        for s in subs {
            sub_tasks.push(tokio::spawn(subscriber::run(
                cfg.clone(),
                shared.clone(),
                s,
            )));
        }
        let mut pub_tasks = Vec::new();
        for p in pubs {
            pub_tasks.push(tokio::spawn(publisher::run(
                cfg.clone(),
                shared.clone(),
                p,
                pacer_tx.clone(),
            )));
        }
        drop(pacer_tx);
        for t in pub_tasks {
            let _ = t.await;
        }
        let mut out = Vec::new();
        for t in sub_tasks {
            if let Ok(o) = t.await {
                out.push(o);
            }
        }
        out
    });
    if let Some(h) = pacer
        && h.join().is_err()
    {
        shared.fail(
            "pacer",
            &LoadError::Config("the pacer thread panicked".into()),
        );
    }
    out
}

fn broker_stats(b: (Option<ProcSample>, Option<ProcSample>), window_s: f64) -> Option<BrokerStats> {
    let (Some(b0), Some(b1)) = b else { return None };
    let cpu_s = (b1.cpu_s - b0.cpu_s).max(0.0);
    Some(BrokerStats {
        cpu_s,
        cpu_share: cpu_s / window_s,
        sys_s: (b1.sys_s - b0.sys_s).max(0.0),
        rss_start_kib: b0.rss_kib,
        rss_end_kib: b1.rss_kib,
        peak_rss_kib: b1.hwm_kib,
    })
}

fn summarise(
    cfg: &LoadConfig,
    plan: &Plan,
    shared: &Shared,
    outcomes: Vec<SubOutcome>,
    window_s: f64,
    broker: (Option<ProcSample>, Option<ProcSample>),
    me: (ProcSample, ProcSample),
) -> RunResult {
    let mut latency = Latency::new();
    let mut from_send = Latency::new();
    let mut counts = DeliveryCounts::default();
    let mut delivered = 0;
    let mut foreign = 0;
    for o in &outcomes {
        latency.merge(&o.latency);
        from_send.merge(&o.from_send);
        delivered += o.delivered;
        foreign += o.foreign;
        for (p, t) in &o.streams {
            let sent = shared.pubs[*p as usize].sent.load(Ordering::Acquire);
            counts.add(t, sent);
        }
    }
    // Subscribers that never reported (failed) lose everything they expected.
    for s in plan.subs.iter().skip(outcomes.len()) {
        for p in &s.expects {
            counts.add_silent(shared.pubs[*p as usize].sent.load(Ordering::Acquire));
        }
    }
    let published = shared
        .pubs
        .iter()
        .map(|p| p.sent_measured.load(Ordering::Acquire))
        .sum();
    let stalls = shared
        .pubs
        .iter()
        .map(|p| p.stalls.load(Ordering::Acquire))
        .sum();
    let nudges = shared
        .pubs
        .iter()
        .map(|p| p.nudges.load(Ordering::Acquire))
        .sum();
    let broker = broker_stats(broker, window_s);
    let errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let send_lag = cfg
        .rate
        .and_then(|_| shared.send_lag.lock().ok().map(|l| l.summary()));
    RunResult {
        scenario: cfg.scenario.name().into(),
        persistent: cfg.persistent,
        protocol: cfg.client.version.level(),
        qos: cfg.qos.as_u8(),
        payload: cfg.payload,
        publishers: plan.pubs.len(),
        subscribers: plan.subs.len(),
        window: if cfg.rate.is_some() { 0 } else { cfg.window },
        rate: cfg.rate,
        workers: cfg.workers,
        window_s,
        published,
        delivered,
        msgs_per_s: delivered as f64 / window_s,
        latency: latency.summary(),
        counts,
        stalls,
        nudges,
        foreign,
        deliveries_per_broker_cpu_s: broker
            .filter(|b| b.cpu_s > 0.0)
            .map(|b| delivered as f64 / b.cpu_s),
        broker,
        own_cpu_share: (me.1.cpu_s - me.0.cpu_s).max(0.0) / window_s,
        conn: None,
        host_steal_share: None,
        latency_from_send: cfg.rate.map(|_| from_send.summary()),
        send_lag,
        errors,
    }
}

/// Runs the configured scenario.
pub fn run(cfg: &LoadConfig) -> Result<RunResult, LoadError> {
    cfg.validate()?;
    match cfg.scenario {
        Scenario::Conn => conn::run(cfg),
        _ => run_traffic(cfg),
    }
}

/// The target address, checked to be loopback.
pub fn loopback_target(target: &str) -> Result<SocketAddr, LoadError> {
    crate::target::resolve_loopback(target).map_err(|e| LoadError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_have_the_documented_shape() {
        let p = plan(Scenario::Fanin, 10);
        assert_eq!((p.pubs.len(), p.subs.len()), (10, 1));
        assert_eq!(p.subs[0].expects.len(), 10);
        assert!(
            p.pubs
                .iter()
                .all(|x| x.fan == 1 && x.topic.starts_with("bench/fanin/"))
        );
        let p = plan(Scenario::Fanout, 100);
        assert_eq!((p.pubs.len(), p.subs.len(), p.pubs[0].fan), (1, 100, 100));
        let p = plan(Scenario::P2p, 50);
        assert_eq!((p.pubs.len(), p.subs.len()), (50, 50));
        assert!(
            p.subs
                .iter()
                .all(|s| s.expects == vec![s.id] && s.filter == p.pubs[s.id as usize].topic)
        );
        assert!(plan(Scenario::Conn, 5).pubs.is_empty());
    }
}
