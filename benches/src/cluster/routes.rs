//! The route-commit measurement: `filters` distinct subscriptions made on one node by
//! `clients` clients (SUBSCRIBE packets of `per_packet` filters, all written at once), timed
//! until the other node's replicated route table holds every one of them (`route_rows` of its
//! `/status`), then until they are all gone again after the clients disconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use halyard_codec::{
    Packet, ProtocolVersion, QoS, Subscribe, SubscribeFilter, SubscribeProperties,
    SubscriptionOptions, encode,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::ClusterBenchError;
use super::nodes::RunningCluster;
use crate::load::mqtt::{self, ClientParams, SessionKind};
use crate::load::{LoadError, SETUP_TIMEOUT};

/// How often the observing node's `/status` is polled.
pub const POLL: Duration = Duration::from_millis(5);

/// What one route-commit run does.
#[derive(Debug, Clone)]
pub struct RouteParams {
    /// Distinct filters subscribed in total.
    pub filters: usize,
    /// Clients sharing them (each at most `mqtt.max_subscriptions_per_client`, 1000 by
    /// default).
    pub clients: usize,
    /// Filters per SUBSCRIBE packet.
    pub per_packet: usize,
    /// Bound on each phase (subscribe and visible; removal).
    pub timeout: Duration,
}

impl RouteParams {
    /// Checks the shape; returns the first problem.
    pub fn validate(&self) -> Result<(), ClusterBenchError> {
        let bad = |m: &str| Err(ClusterBenchError::Config(m.into()));
        if self.filters == 0 || self.clients == 0 || self.per_packet == 0 {
            return bad("route filters, clients and filters per packet must be >= 1");
        }
        if self
            .filters
            .div_ceil(self.clients)
            .div_ceil(self.per_packet)
            > usize::from(u16::MAX)
        {
            return bad("too many SUBSCRIBE packets per client (packet ids are 16 bits)");
        }
        Ok(())
    }
}

/// One route-commit run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RouteRun {
    /// `batched` or `unbatched`.
    pub mode: String,
    /// Filters subscribed.
    pub filters: usize,
    /// Filters the brokers refused in SUBACK.
    pub refused: u64,
    /// Seconds from the first SUBSCRIBE to the last SUBACK (the subscribing node waits for
    /// its routes to be committed and applied before it answers).
    pub suback_s: f64,
    /// Seconds from the first SUBSCRIBE until the other node's table held every route.
    pub visible_s: f64,
    /// `filters / visible_s`: the route-commit rate.
    pub routes_per_s: f64,
    /// `filters / suback_s`.
    pub suback_routes_per_s: f64,
    /// Route operations the subscribing node proposed meanwhile.
    pub ops_proposed: u64,
    /// Log entries they went into.
    pub entries_proposed: u64,
    /// Seconds from the clients' DISCONNECT until the other node's table no longer held
    /// their routes.
    pub removal_s: Option<f64>,
    /// `filters / removal_s`.
    pub removal_routes_per_s: Option<f64>,
    /// The Raft term changed during the run (an election: the figures include it).
    pub term_changed: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// State shared by the clients and the controller.
struct Shared {
    go: watch::Sender<u8>,
    ready: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    subacked_clients: AtomicU64,
    /// Nanoseconds after `t0` of the last SUBACK seen.
    last_suback_ns: AtomicU64,
    t0: std::sync::OnceLock<Instant>,
    errors: std::sync::Mutex<Vec<String>>,
}

/// `go` values: subscribe, then disconnect.
const GO_SUBSCRIBE: u8 = 1;
const GO_DISCONNECT: u8 = 2;

impl Shared {
    fn fail(&self, who: usize, e: &LoadError) {
        self.failed.fetch_add(1, Ordering::AcqRel);
        // A poisoned lock only means a client task panicked while pushing; keep going.
        let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errs.len() < 10 {
            errs.push(format!("route client {who}: {e}"));
        }
    }
}

fn filter(tag: &str, client: usize, i: usize) -> String {
    format!("bench/routes/{tag}/{client}/{i}")
}

/// The SUBSCRIBE packets of client `c`, encoded back to back.
fn subscribes(
    p: &RouteParams,
    tag: &str,
    c: usize,
    v: ProtocolVersion,
) -> Result<(BytesMut, usize), LoadError> {
    let mine: Vec<usize> = (c..p.filters).step_by(p.clients).collect();
    let mut out = BytesMut::new();
    let mut packets = 0;
    for (n, chunk) in mine.chunks(p.per_packet).enumerate() {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: u16::try_from(n + 1).unwrap_or(u16::MAX),
            filters: chunk
                .iter()
                .map(|&i| SubscribeFilter {
                    filter: filter(tag, c, i).into(),
                    options: SubscriptionOptions::qos(QoS::AtMostOnce),
                })
                .collect(),
            properties: SubscribeProperties::default(),
        });
        encode(&packet, v, &mut out)?;
        packets += 1;
    }
    Ok((out, packets))
}

async fn client(
    params: ClientParams,
    p: RouteParams,
    tag: String,
    c: usize,
    shared: Arc<Shared>,
) -> Result<(), LoadError> {
    let v = params.version;
    let (wire, packets) = subscribes(&p, &tag, c, v)?;
    let id = format!("hcr{}-{tag}-{c}", std::process::id());
    let (mut s, mut rbuf) = mqtt::connect(&params, &id, None, SessionKind::Clean).await?;
    shared.ready.fetch_add(1, Ordering::AcqRel);
    let mut go = shared.go.subscribe();
    if go.wait_for(|g| *g >= GO_SUBSCRIBE).await.is_err() {
        return Ok(());
    }
    s.write_all(&wire).await?;
    let mut acked = 0;
    while acked < packets {
        match mqtt::read_packet(&mut s, &mut rbuf, v).await? {
            Packet::SubAck(ack) => {
                acked += 1;
                let refused = ack.reason_codes.iter().filter(|r| !r.is_success()).count();
                shared.refused.fetch_add(refused as u64, Ordering::AcqRel);
            }
            other => {
                return Err(LoadError::Unexpected(format!(
                    "{:?} instead of SUBACK",
                    other.packet_type()
                )));
            }
        }
    }
    if let Some(t0) = shared.t0.get() {
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        shared.last_suback_ns.fetch_max(ns, Ordering::AcqRel);
    }
    shared.subacked_clients.fetch_add(1, Ordering::AcqRel);
    let _ = go.wait_for(|g| *g >= GO_DISCONNECT).await;
    let mut out = BytesMut::new();
    encode(&Packet::Disconnect(Default::default()), v, &mut out)?;
    s.write_all(&out).await?;
    Ok(())
}

/// Waits until `done()` or `timeout`; the seconds it took from `since`, or `None`.
fn wait_until(
    since: Instant,
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, ClusterBenchError>,
) -> Result<Option<f64>, ClusterBenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        if done()? {
            return Ok(Some(since.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until node `at`'s route table and queue are quiet (the same on every node and
/// unchanged over a poll), so that one run does not measure the previous one's removals.
pub fn settle_routes(cluster: &RunningCluster, timeout: Duration) -> Result<(), ClusterBenchError> {
    let deadline = Instant::now() + timeout;
    let rows = |c: &RunningCluster| -> Result<Vec<u64>, ClusterBenchError> {
        (0..c.nodes.len())
            .map(|i| c.status_u64(i, "route_rows"))
            .collect()
    };
    let mut last = rows(cluster)?;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = rows(cluster)?;
        if now == last && now.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterBenchError::Config(format!(
                "route tables did not settle within {timeout:?}: {now:?}"
            )));
        }
        last = now;
    }
}

/// One run: subscribe on node `sub`, observe node `obs`.
pub fn run(
    cluster: &RunningCluster,
    sub: usize,
    obs: usize,
    p: &RouteParams,
    mode: &str,
    tag: &str,
) -> Result<RouteRun, ClusterBenchError> {
    p.validate()?;
    settle_routes(cluster, p.timeout)?;
    let base = Baseline {
        rows: cluster.status_u64(obs, "route_rows")?,
        ops: cluster.status_u64(sub, "route_ops_proposed")?,
        entries: cluster.status_u64(sub, "route_entries_proposed")?,
    };
    let term0 = cluster.status_u64(sub, "raft_term")?;
    let (go, _) = watch::channel(0u8);
    let shared = Arc::new(Shared {
        go,
        ready: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        subacked_clients: AtomicU64::new(0),
        last_suback_ns: AtomicU64::new(0),
        t0: std::sync::OnceLock::new(),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let params = ClientParams {
        target: cluster.nodes[sub].mqtt,
        version: ProtocolVersion::V311,
        keep_alive: u16::MAX,
    };
    let clients = spawn_clients(params, p, tag, &shared)?;
    let mut run = RouteRun {
        mode: mode.into(),
        filters: p.filters,
        ..RouteRun::default()
    };
    let result = measure(cluster, (sub, obs), p, &shared, &base, &mut run);
    // Whatever happened, the clients disconnect and their thread ends.
    shared.go.send_replace(GO_DISCONNECT);
    let _ = clients.join();
    result?;
    run.term_changed = cluster.status_u64(sub, "raft_term")? != term0;
    run.refused = shared.refused.load(Ordering::Acquire);
    let mut errs = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    if run.refused > 0 {
        errs.push(format!(
            "{} filters refused in SUBACK (mqtt.max_subscriptions_per_client?)",
            run.refused
        ));
    }
    if let Some(e) = run.error.take() {
        errs.insert(0, e);
    }
    if !errs.is_empty() {
        run.error = Some(errs.join("; "));
    }
    Ok(run)
}

fn spawn_clients(
    params: ClientParams,
    p: &RouteParams,
    tag: &str,
    shared: &Arc<Shared>,
) -> Result<std::thread::JoinHandle<()>, ClusterBenchError> {
    let (p, tag, shared) = (p.clone(), tag.to_owned(), shared.clone());
    Ok(std::thread::Builder::new()
        .name("route-clients".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    shared.fail(0, &LoadError::Io(e));
                    return;
                }
            };
            rt.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for c in 0..p.clients {
                    let (params, p, tag, shared) =
                        (params.clone(), p.clone(), tag.clone(), shared.clone());
                    tasks.spawn(async move {
                        if let Err(e) = client(params, p, tag, c, shared.clone()).await {
                            shared.fail(c, &e);
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
        })?)
}

/// What the run starts from: the observer's route rows and the subscribing node's counters.
struct Baseline {
    rows: u64,
    ops: u64,
    entries: u64,
}

fn measure(
    cluster: &RunningCluster,
    (sub, obs): (usize, usize),
    p: &RouteParams,
    shared: &Shared,
    base: &Baseline,
    run: &mut RouteRun,
) -> Result<(), ClusterBenchError> {
    let n = p.clients as u64;
    let setup = wait_until(Instant::now(), SETUP_TIMEOUT, || {
        Ok(shared.ready.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire) >= n)
    })?;
    if setup.is_none() || shared.failed.load(Ordering::Acquire) > 0 {
        return Err(ClusterBenchError::Config(format!(
            "route clients did not connect: {:?}",
            shared.errors.lock().map(|e| e.clone()).unwrap_or_default()
        )));
    }
    let t0 = Instant::now();
    let _ = shared.t0.set(t0);
    shared.go.send_replace(GO_SUBSCRIBE);
    let want = base.rows + p.filters as u64;
    let visible = wait_until(t0, p.timeout, || {
        Ok(cluster.status_u64(obs, "route_rows")? >= want)
    })?;
    let subacked = wait_until(t0, p.timeout, || {
        Ok(
            shared.subacked_clients.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire)
                >= n,
        )
    })?;
    let (Some(visible_s), Some(_)) = (visible, subacked) else {
        let seen = cluster
            .status_u64(obs, "route_rows")?
            .saturating_sub(base.rows);
        run.error = Some(format!(
            "timed out after {:?}: {seen} of {} routes visible on the other node",
            p.timeout, p.filters
        ));
        return Ok(());
    };
    run.visible_s = visible_s;
    run.suback_s = shared.last_suback_ns.load(Ordering::Acquire) as f64 / 1e9;
    run.routes_per_s = p.filters as f64 / visible_s;
    run.suback_routes_per_s = p.filters as f64 / run.suback_s.max(1e-9);
    run.ops_proposed = cluster.status_u64(sub, "route_ops_proposed")? - base.ops;
    run.entries_proposed = cluster.status_u64(sub, "route_entries_proposed")? - base.entries;
    let t1 = Instant::now();
    shared.go.send_replace(GO_DISCONNECT);
    let removed = wait_until(t1, p.timeout, || {
        Ok(cluster.status_u64(obs, "route_rows")? <= base.rows)
    })?;
    run.removal_s = removed;
    run.removal_routes_per_s = removed.map(|s| p.filters as f64 / s.max(1e-9));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use halyard_codec::{MAX_PACKET_SIZE, decode};

    #[test]
    fn subscribes_cover_every_filter_once() {
        let p = RouteParams {
            filters: 1003,
            clients: 4,
            per_packet: 100,
            timeout: Duration::from_secs(1),
        };
        let mut seen = std::collections::HashSet::new();
        for c in 0..p.clients {
            let (mut wire, packets) = subscribes(&p, "t", c, ProtocolVersion::V311).unwrap();
            let mut n = 0;
            while let Some(Packet::Subscribe(s)) =
                decode(&mut wire, ProtocolVersion::V311, MAX_PACKET_SIZE).unwrap()
            {
                n += 1;
                assert_eq!(usize::from(s.packet_id), n);
                assert!(s.filters.len() <= p.per_packet);
                for f in s.filters {
                    assert!(seen.insert(f.filter.to_string()), "{}", f.filter);
                }
            }
            assert_eq!(n, packets);
        }
        assert_eq!(seen.len(), p.filters);
    }
}
