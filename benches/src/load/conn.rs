//! The `conn` scenario: open K connections (optionally one subscription each), measure the
//! connect rate and the broker's memory per idle connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::mqtt::SessionKind;
use super::{LoadConfig, LoadError, SETUP_TIMEOUT, Shared, mqtt, phase};
use crate::procfs::{self, Pid};
use crate::report::{BrokerStats, ConnStats, RunResult};

/// How long the broker is left alone before the baseline memory sample.
const SETTLE: Duration = Duration::from_millis(300);

/// Runs the scenario.
pub(super) fn run(cfg: &LoadConfig) -> Result<RunResult, LoadError> {
    let broker = &cfg.broker_pids;
    let shared = Arc::new(Shared::new(0));
    std::thread::sleep(SETTLE);
    procfs::reset_peak_rss_all(broker)?;
    let b0 = procfs::sample_sum(broker)?;
    let me0 = procfs::sample(Pid::Me)?;
    let host0 = procfs::host_ticks();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for w in 0..cfg.workers {
        let ids: Vec<usize> = (w..cfg.clients).step_by(cfg.workers).collect();
        let (cfg, shared) = (cfg.clone(), shared.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("conn-{w}"))
                .spawn(move || worker(&cfg, &shared, ids))?,
        );
    }
    let deadline = t0 + SETUP_TIMEOUT;
    while shared.ready.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire) < cfg.clients
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    let b_conn = procfs::sample_sum(broker)?;
    let me1 = procfs::sample(Pid::Me)?;
    let host1 = procfs::host_ticks();
    std::thread::sleep(cfg.hold);
    let b1 = procfs::sample_sum(broker)?;
    shared.set_phase(phase::DONE);
    for h in handles {
        let _ = h.join();
    }
    let connections = shared.ready.load(Ordering::Acquire) as u64;
    let failed = cfg.clients as u64 - connections;
    let mut conn = ConnStats {
        connections,
        failed,
        connect_s,
        connect_rate: connections as f64 / connect_s,
        subscribed: cfg.conn_subscribe,
        ..ConnStats::default()
    };
    let mut broker_stats = None;
    if let (Some(b0), Some(bc), Some(b1)) = (b0, b_conn, b1) {
        conn.rss_before_kib = b0.rss_kib;
        conn.rss_after_kib = b1.rss_kib;
        let grown = b1.rss_kib.saturating_sub(b0.rss_kib) as f64 * 1024.0;
        conn.rss_per_conn_bytes = grown / connections.max(1) as f64;
        let cpu_s = (bc.cpu_s - b0.cpu_s).max(0.0);
        conn.broker_cpu_us_per_conn = cpu_s * 1e6 / connections.max(1) as f64;
        let sys_s = (bc.sys_s - b0.sys_s).max(0.0);
        conn.broker_sys_us_per_conn = sys_s * 1e6 / connections.max(1) as f64;
        broker_stats = Some(BrokerStats {
            cpu_s,
            sys_s,
            cpu_share: cpu_s / connect_s,
            rss_start_kib: b0.rss_kib,
            rss_end_kib: b1.rss_kib,
            peak_rss_kib: b1.hwm_kib,
        });
    }
    let errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    Ok(RunResult {
        scenario: cfg.scenario.name().into(),
        protocol: cfg.client.version.level(),
        qos: cfg.qos.as_u8(),
        workers: cfg.workers,
        window_s: connect_s,
        broker: broker_stats,
        own_cpu_share: (me1.cpu_s - me0.cpu_s).max(0.0) / connect_s,
        conn: Some(conn),
        host_steal_share: host0.zip(host1).and_then(|(a, b)| a.steal_share(b)),
        errors,
        ..RunResult::default()
    })
}

fn worker(cfg: &LoadConfig, shared: &Arc<Shared>, ids: Vec<usize>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shared.fail("conn worker", &LoadError::Io(e));
            return;
        }
    };
    rt.block_on(async {
        let mut open = Vec::with_capacity(ids.len());
        let mut pending = JoinSet::new();
        let mut next = ids.into_iter();
        loop {
            while pending.len() < cfg.conn_concurrency {
                let Some(i) = next.next() else { break };
                let client = cfg.client.clone();
                let id = format!("{}-c{i}", cfg.id_prefix);
                let filter = cfg.conn_subscribe.then(|| format!("bench/conn/{i}"));
                let qos = cfg.qos;
                pending.spawn(async move {
                    let f = filter.as_deref().map(|f| (f, qos));
                    mqtt::connect(&client, &id, f, SessionKind::Clean).await
                });
            }
            let Some(done) = pending.join_next().await else {
                break;
            };
            match done {
                Ok(Ok((stream, _))) => {
                    shared.ready.fetch_add(1, Ordering::AcqRel);
                    open.push(stream);
                }
                Ok(Err(e)) => shared.fail("conn", &e),
                Err(e) => shared.fail("conn", &LoadError::Config(e.to_string())),
            }
        }
        let mut rx = shared.phase_tx.subscribe();
        let _ = rx.wait_for(|p| *p >= phase::DONE).await;
        drop(open);
    });
}
