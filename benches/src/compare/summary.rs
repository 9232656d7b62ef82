//! Aggregation of the samples (median and min-max per case and broker), Halyard/peer ratios,
//! and the markdown report.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Broker, Case, CaseKind, Sample};
use crate::report::RunResult;

/// Median and range of one metric over the repeats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

/// Median and range of `values`; `None` when empty.
pub fn stat(values: &[f64]) -> Option<Stat> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// Everything known about one case on one broker.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Case name.
    pub case: String,
    /// Broker name.
    pub broker: String,
    /// Case kind.
    pub kind: CaseKind,
    /// Runs that produced a result.
    pub runs: usize,
    /// Runs without a result.
    pub failed_runs: usize,
    /// Delivered msgs/s.
    pub msgs_per_s: Option<Stat>,
    /// Deliveries per broker CPU-second.
    pub per_cpu_s: Option<Stat>,
    /// Broker CPU share (1.0 = one core).
    pub broker_cpu: Option<Stat>,
    /// Generator CPU share.
    pub load_cpu: Option<Stat>,
    /// Latency percentiles, microseconds.
    pub p50_us: Option<Stat>,
    /// 99th percentile.
    pub p99_us: Option<Stat>,
    /// 99.9th percentile.
    pub p999_us: Option<Stat>,
    /// Open loop: the generator's send lag against its schedule, p50, microseconds.
    pub lag_p50_us: Option<Stat>,
    /// Open loop: send lag p99, microseconds.
    pub lag_p99_us: Option<Stat>,
    /// Open loop: latency from the actual send (without the send lag), p50, microseconds.
    pub sent_p50_us: Option<Stat>,
    /// Open loop: latency from the actual send, p99, microseconds.
    pub sent_p99_us: Option<Stat>,
    /// Broker peak RSS, MiB.
    pub peak_rss_mib: Option<Stat>,
    /// Lost, duplicated and reordered deliveries summed over the runs.
    pub lost: u64,
    /// Duplicated deliveries.
    pub duplicated: u64,
    /// Reordered deliveries.
    pub reordered: u64,
    /// Connections per second.
    pub connect_rate: Option<Stat>,
    /// Broker RSS growth per connection, bytes.
    pub bytes_per_conn: Option<Stat>,
    /// Connections (CONNECT, and SUBSCRIBE in `conn-sub`) per broker CPU-second (utime +
    /// stime while connecting): what the broker costs per connection, whatever else runs on
    /// the machine. The raw connect rate is bounded by the whole machine (the generator, the
    /// kernel's loopback TCP work in softirq, other tenants), not by the broker.
    pub conn_per_cpu_s: Option<Stat>,
    /// Broker CPU per connection while connecting, microseconds (the inverse of
    /// `conn_per_cpu_s`, run by run).
    pub conn_cpu_us: Option<Stat>,
    /// Of `conn_cpu_us`, the kernel's part (stime), microseconds: what a broker cannot cut
    /// in user space.
    pub conn_sys_us: Option<Stat>,
    /// With a CPU quota: share of the broker's active periods that ran out of quota.
    pub throttled: Option<Stat>,
    /// Share of the host's CPU time stolen by the hypervisor during the window (all CPUs):
    /// the runs of a preempted virtual machine are slow for every broker alike.
    pub steal: Option<Stat>,
    /// Errors reported (first few).
    pub errors: Vec<String>,
}

/// Open loop: a generator whose send lag p99 (median over the runs) exceeds this fell behind
/// its schedule, so the case's latency partly measures the generator (microseconds).
pub const LAG_P99_LIMIT_US: f64 = 1_000.0;

/// Open loop: a broker or generator whose CPU share (median) reaches this is saturated. At
/// SCHED_FIFO the kernel's real-time budget (`sched_rt_runtime_us`, 95 % by default) then
/// pauses it for the rest of each second, and p99 measures those pauses.
pub const SATURATED_CPU: f64 = 0.90;

impl Cell {
    /// Open loop: why this cell's latency does not measure the broker alone (empty: it does).
    pub fn latency_caveats(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.kind != CaseKind::Latency {
            return why;
        }
        if let Some(lag) = self.lag_p99_us.filter(|l| l.median > LAG_P99_LIMIT_US) {
            why.push(format!(
                "the generator fell behind its schedule (send lag p99 {} us)",
                fmt_num(lag.median)
            ));
        }
        if let Some(c) = self.load_cpu.filter(|c| c.median >= SATURATED_CPU) {
            why.push(format!(
                "the generator is saturated ({:.0} % CPU)",
                c.median * 100.0
            ));
        }
        if let Some(c) = self.broker_cpu.filter(|c| c.median >= SATURATED_CPU) {
            why.push(format!(
                "the broker is saturated ({:.0} % CPU)",
                c.median * 100.0
            ));
        }
        why
    }

    /// The case's headline metrics: (name, value, whether higher is better).
    pub fn headlines(&self) -> Vec<(&'static str, Option<Stat>, bool)> {
        match self.kind {
            CaseKind::Throughput => vec![("per broker CPU-s", self.per_cpu_s, true)],
            CaseKind::Latency => vec![("p99", self.p99_us, false)],
            CaseKind::Connections => vec![
                ("RSS per connection", self.bytes_per_conn, false),
                ("connections per broker CPU-s", self.conn_per_cpu_s, true),
            ],
        }
    }
}

fn collect(rs: &[&RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<Stat> {
    stat(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
}

/// One cell per (case, broker), in case order then broker order.
pub fn summarise(cases: &[Case], brokers: &[String], samples: &[Sample]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for c in cases {
        for b in brokers {
            let mine: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.case == c.name && &s.broker == b)
                .collect();
            let rs: Vec<&RunResult> = mine.iter().filter_map(|s| s.result.as_ref()).collect();
            let traffic = c.kind != CaseKind::Connections;
            let t = |f: fn(&RunResult) -> Option<f64>| if traffic { collect(&rs, f) } else { None };
            let k = |f: fn(&RunResult) -> Option<f64>| if traffic { None } else { collect(&rs, f) };
            let mut errors: Vec<String> = mine.iter().filter_map(|s| s.error.clone()).collect();
            errors.dedup();
            errors.truncate(3);
            cells.push(Cell {
                case: c.name.clone(),
                broker: b.clone(),
                kind: c.kind,
                runs: rs.len(),
                failed_runs: mine.len() - rs.len(),
                msgs_per_s: t(|r| Some(r.msgs_per_s)),
                per_cpu_s: t(|r| r.deliveries_per_broker_cpu_s),
                broker_cpu: collect(&rs, |r| r.broker.map(|b| b.cpu_share)),
                load_cpu: collect(&rs, |r| Some(r.own_cpu_share)),
                steal: collect(&rs, |r| r.host_steal_share),
                // A run that delivered nothing in the window has no latency (not zero).
                p50_us: t(|r| (r.latency.count > 0).then_some(r.latency.p50_us)),
                p99_us: t(|r| (r.latency.count > 0).then_some(r.latency.p99_us)),
                p999_us: t(|r| (r.latency.count > 0).then_some(r.latency.p999_us)),
                lag_p50_us: t(|r| r.send_lag.map(|l| l.p50_us)),
                lag_p99_us: t(|r| r.send_lag.map(|l| l.p99_us)),
                sent_p50_us: t(|r| r.latency_from_send.map(|l| l.p50_us)),
                sent_p99_us: t(|r| r.latency_from_send.map(|l| l.p99_us)),
                peak_rss_mib: collect(&rs, |r| r.broker.map(|b| b.peak_rss_kib as f64 / 1024.0)),
                lost: rs.iter().map(|r| r.counts.lost).sum(),
                duplicated: rs.iter().map(|r| r.counts.duplicated).sum(),
                reordered: rs.iter().map(|r| r.counts.reordered).sum(),
                connect_rate: k(|r| r.conn.map(|c| c.connect_rate)),
                bytes_per_conn: k(|r| r.conn.map(|c| c.rss_per_conn_bytes)),
                conn_per_cpu_s: k(conn_per_cpu_s),
                conn_cpu_us: k(|r| r.conn.map(|c| c.broker_cpu_us_per_conn)),
                conn_sys_us: k(|r| r.conn.map(|c| c.broker_sys_us_per_conn)),
                throttled: stat(
                    &mine
                        .iter()
                        .filter_map(|s| s.throttled_share)
                        .collect::<Vec<_>>(),
                ),
                errors,
            });
        }
    }
    cells
}

/// Halyard's headline metric over a peer's, per case.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Case name.
    pub case: String,
    /// The metric compared (see [`Cell::headlines`]).
    pub metric: &'static str,
    /// Halyard variant.
    pub halyard: String,
    /// Peer broker.
    pub peer: String,
    /// Halyard median / peer median of the case's headline metric.
    pub value: f64,
    /// The same ratio round by round (Halyard's run over the peer's run of the same round,
    /// which ran minutes apart at most): median and range over the rounds. On a noisy machine
    /// a tail latency moves with the minute, and the per-round ratio shows whether the
    /// ratio of medians holds round after round.
    pub paired: Option<Stat>,
    /// Rounds in which Halyard's run was the better of the pair.
    pub rounds_better: usize,
    /// Whether a ratio above 1 means Halyard is better.
    pub higher_is_better: bool,
}

/// A run's connections (CONNECT, and SUBSCRIBE in `conn-sub`) per broker CPU-second.
fn conn_per_cpu_s(r: &RunResult) -> Option<f64> {
    let (c, b) = (r.conn?, r.broker?);
    (b.cpu_s > 0.0).then(|| c.connections as f64 / b.cpu_s)
}

/// The headline metrics of one run of a case of `kind`, in the order of
/// [`Cell::headlines`].
fn run_headlines(kind: CaseKind) -> &'static [fn(&RunResult) -> Option<f64>] {
    match kind {
        CaseKind::Throughput => &[|r| r.deliveries_per_broker_cpu_s],
        CaseKind::Latency => &[|r| (r.latency.count > 0).then_some(r.latency.p99_us)],
        CaseKind::Connections => &[|r| r.conn.map(|c| c.rss_per_conn_bytes), conn_per_cpu_s],
    }
}

/// Per round, Halyard's headline metric over the peer's (rounds where both have one).
fn paired(
    samples: &[Sample],
    metric: fn(&RunResult) -> Option<f64>,
    case: &str,
    h: &str,
    p: &str,
) -> Vec<f64> {
    let of = |broker: &str, round: usize| {
        samples
            .iter()
            .find(|s| s.case == case && s.broker == broker && s.repeat == round)
            .and_then(|s| s.result.as_ref())
            .and_then(metric)
    };
    let rounds = samples.iter().map(|s| s.repeat + 1).max().unwrap_or(0);
    (0..rounds)
        .filter_map(|i| match (of(h, i), of(p, i)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// Ratios of every Halyard variant against every peer, per case.
pub fn ratios(cells: &[Cell], samples: &[Sample]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for h in cells.iter().filter(|c| c.broker.starts_with("halyard")) {
        for p in cells
            .iter()
            .filter(|c| c.case == h.case && !c.broker.starts_with("halyard"))
        {
            let metrics = h.headlines().into_iter().zip(p.headlines());
            for (((metric, hs, better), (_, ps, _)), of_run) in metrics.zip(run_headlines(h.kind)) {
                let (Some(hs), Some(ps)) = (hs, ps) else {
                    continue;
                };
                if ps.median > 0.0 {
                    let rounds = paired(samples, *of_run, &h.case, &h.broker, &p.broker);
                    let rounds_better = rounds
                        .iter()
                        .filter(|&&x| if better { x > 1.0 } else { x < 1.0 })
                        .count();
                    out.push(Ratio {
                        case: h.case.clone(),
                        metric,
                        halyard: h.broker.clone(),
                        peer: p.broker.clone(),
                        value: hs.median / ps.median,
                        paired: stat(&rounds),
                        rounds_better,
                        higher_is_better: better,
                    });
                }
            }
        }
    }
    out
}

/// A Halyard variant with N I/O threads against the same variant with one, per case.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    /// Case name.
    pub case: String,
    /// The N-thread variant, e.g. `halyard-uring-t2`.
    pub variant: String,
    /// The one-thread variant it is compared with, e.g. `halyard-uring`.
    pub base: String,
    /// N.
    pub threads: usize,
    /// Median delivered msgs/s, N threads / 1.
    pub msgs_per_s: f64,
    /// Median deliveries per broker CPU-second, N threads / 1 (1.0: no cost per message for
    /// the extra threads).
    pub per_cpu_s: Option<f64>,
}

/// `halyard-uring-t2` -> (`halyard-uring`, 2); `None` for one-thread names (parsed as
/// [`Broker::parse`] does).
fn split_threads(name: &str) -> Option<(String, usize)> {
    let variant = Broker::parse(name)?;
    let threads = variant.io_threads();
    Some((variant.one_thread_twin()?.name(), threads))
}

/// Thread scaling of every `-t<N>` Halyard variant against its one-thread twin, per
/// throughput case.
pub fn scaling(cells: &[Cell]) -> Vec<Scaling> {
    let mut out = Vec::new();
    for v in cells.iter().filter(|c| c.kind == CaseKind::Throughput) {
        let Some((base, threads)) = split_threads(&v.broker) else {
            continue;
        };
        let Some(b) = cells.iter().find(|c| c.case == v.case && c.broker == base) else {
            continue;
        };
        let (Some(vm), Some(bm)) = (v.msgs_per_s, b.msgs_per_s) else {
            continue;
        };
        if bm.median <= 0.0 {
            continue;
        }
        let per_cpu_s = match (v.per_cpu_s, b.per_cpu_s) {
            (Some(vc), Some(bc)) if bc.median > 0.0 => Some(vc.median / bc.median),
            _ => None,
        };
        out.push(Scaling {
            case: v.case.clone(),
            variant: v.broker.clone(),
            base,
            threads,
            msgs_per_s: vm.median / bm.median,
            per_cpu_s,
        });
    }
    out
}

/// A number in a short human form (1.23M, 45k, 678, 0.12).
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// A statistic as `median (min-max)`, or the value alone for one run, or `-`.
pub fn fmt_stat(s: &Option<Stat>) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{} ({}-{})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
        Some(s) => fmt_num(s.median),
        None => "-".into(),
    }
}

fn pct(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| format!("{:.0} %", s.median * 100.0))
}

/// A share's median and range as a percentage with one decimal (small shares such as steal).
fn pct1(s: &Option<Stat>) -> String {
    s.map_or("-".into(), |s| {
        if s.n > 1 {
            format!(
                "{:.1} % ({:.1}-{:.1})",
                s.median * 100.0,
                s.min * 100.0,
                s.max * 100.0
            )
        } else {
            format!("{:.1} %", s.median * 100.0)
        }
    })
}

/// Facts about the run printed at the top of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunInfo {
    /// The command that produced the report.
    pub command: String,
    /// `nproc`.
    pub nproc: usize,
    /// Kernel release.
    pub kernel: String,
    /// Broker versions, one line each.
    pub versions: Vec<String>,
    /// Repeats, window and warm-up, CPU pinning.
    pub settings: String,
    /// UTC time the run finished.
    pub finished: String,
}

/// The markdown report: tables, ratios, chart links, errors.
pub fn markdown(info: &RunInfo, cells: &[Cell], ratios: &[Ratio], charts: &[String]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Halyard vs Mosquitto vs rumqttd\n");
    let _ = writeln!(m, "- command: `{}`", info.command);
    let _ = writeln!(m, "- machine: nproc {}, kernel {}", info.nproc, info.kernel);
    let _ = writeln!(m, "- settings: {}", info.settings);
    for v in &info.versions {
        let _ = writeln!(m, "- {v}");
    }
    let _ = writeln!(m, "- finished: {}\n", info.finished);
    let _ = writeln!(
        m,
        "Medians over the repeats, (min-max) when more than one run. \"per broker CPU-s\" = deliveries / broker CPU seconds (utime+stime) in the window.\n"
    );
    let _ = writeln!(m, "## Closed loop (throughput ceiling)\n");
    let _ = writeln!(
        m,
        "| case | broker | msgs/s | per broker CPU-s | broker CPU | generator CPU | host steal | p50 us | p99 us | p999 us | peak RSS MiB | lost / dup / reord | runs |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in cells.iter().filter(|c| c.kind == CaseKind::Throughput) {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {}{} |",
            c.case,
            c.broker,
            fmt_stat(&c.msgs_per_s),
            fmt_stat(&c.per_cpu_s),
            pct(&c.broker_cpu),
            pct(&c.load_cpu),
            pct1(&c.steal),
            fmt_stat(&c.p50_us),
            fmt_stat(&c.p99_us),
            fmt_stat(&c.p999_us),
            fmt_stat(&c.peak_rss_mib),
            c.lost,
            c.duplicated,
            c.reordered,
            c.runs,
            if c.failed_runs > 0 {
                format!(" ({} failed)", c.failed_runs)
            } else {
                String::new()
            }
        );
    }
    if cells.iter().any(|c| c.kind == CaseKind::Latency) {
        let _ = writeln!(m, "\n## Open loop (latency at a fixed offered rate)\n");
        let _ = writeln!(
            m,
            "| case | broker | delivered msgs/s | p50 us | p99 us | p999 us | generator send lag p50 / p99 us | from the actual send p50 / p99 us | broker CPU | generator CPU | host steal | per broker CPU-s | peak RSS MiB | lost / dup / reord | runs |"
        );
        let _ = writeln!(
            m,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for c in cells.iter().filter(|c| c.kind == CaseKind::Latency) {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} / {} / {} | {} |",
                c.case,
                c.broker,
                fmt_stat(&c.msgs_per_s),
                fmt_stat(&c.p50_us),
                fmt_stat(&c.p99_us),
                fmt_stat(&c.p999_us),
                c.lag_p50_us.map_or("-".into(), |s| fmt_num(s.median)),
                c.lag_p99_us.map_or("-".into(), |s| fmt_num(s.median)),
                fmt_stat(&c.sent_p50_us),
                fmt_stat(&c.sent_p99_us),
                pct(&c.broker_cpu),
                pct(&c.load_cpu),
                pct1(&c.steal),
                fmt_stat(&c.per_cpu_s),
                fmt_stat(&c.peak_rss_mib),
                c.lost,
                c.duplicated,
                c.reordered,
                c.runs
            );
        }
    }
    let caveats: Vec<(&Cell, Vec<String>)> = cells
        .iter()
        .map(|c| (c, c.latency_caveats()))
        .filter(|(_, why)| !why.is_empty())
        .collect();
    if !caveats.is_empty() {
        let _ = writeln!(
            m,
            "\nNot a measurement of the broker's latency alone (its p99 ratios below are flagged):\n"
        );
        for (c, why) in &caveats {
            let _ = writeln!(m, "- {} / {}: {}.", c.case, c.broker, why.join("; "));
        }
    }
    if cells.iter().any(|c| c.kind == CaseKind::Connections) {
        let _ = writeln!(m, "\n## Idle connections\n");
        let _ = writeln!(
            m,
            "\"per broker CPU-s\" = connections / broker CPU seconds while connecting (the headline: the raw rate depends on everything else the machine runs).\n"
        );
        let _ = writeln!(
            m,
            "| case | broker | connect rate /s | per broker CPU-s | broker CPU us per connection | of which kernel | broker CPU | generator CPU | host steal | RSS per connection, bytes | peak RSS MiB | runs |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for c in cells.iter().filter(|c| c.kind == CaseKind::Connections) {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.case,
                c.broker,
                fmt_stat(&c.connect_rate),
                fmt_stat(&c.conn_per_cpu_s),
                fmt_stat(&c.conn_cpu_us),
                fmt_stat(&c.conn_sys_us),
                pct(&c.broker_cpu),
                pct(&c.load_cpu),
                pct1(&c.steal),
                fmt_stat(&c.bytes_per_conn),
                fmt_stat(&c.peak_rss_mib),
                c.runs
            );
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(m, "\n## Halyard / peer (headline metric of each case)\n");
        let _ = writeln!(
            m,
            "Throughput cases: deliveries per broker CPU-s (higher is better); latency: p99 (lower is better); connections: RSS per connection (lower is better) and connections per broker CPU-s (higher is better).\n"
        );
        let _ = writeln!(
            m,
            "| case | metric | halyard | peer | ratio of medians | per round: median (min-max) | rounds Halyard better |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|---|---|");
        for r in ratios {
            let dir = if r.higher_is_better {
                "higher is better"
            } else {
                "lower is better"
            };
            let (per_round, better) = match r.paired {
                Some(p) => (
                    format!("{:.2}x ({:.2}-{:.2})", p.median, p.min, p.max),
                    format!("{} of {}", r.rounds_better, p.n),
                ),
                None => ("-".into(), "-".into()),
            };
            // Caveats are only for open-loop cells, whose one ratio is their p99.
            let flagged = caveats
                .iter()
                .any(|(c, _)| c.case == r.case && (c.broker == r.halyard || c.broker == r.peer));
            let flag = if flagged { ", see caveats" } else { "" };
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {:.2}x ({dir}{flag}) | {per_round} | {better} |",
                r.case, r.metric, r.halyard, r.peer, r.value
            );
        }
    }
    let scale = scaling(cells);
    if !scale.is_empty() {
        let _ = writeln!(m, "\n## Thread scaling (N I/O threads / 1)\n");
        let _ = writeln!(
            m,
            "Delivered msgs/s and deliveries per broker CPU-s of each `-t<N>` variant over its one-thread twin. With `--cpu-per-thread` every broker run has a CPU quota of that many CPUs per I/O thread; \"throttled\" is the share of its active periods that ran out of quota (near 100 %: the quota, not the generator, was the limit).\n"
        );
        let _ = writeln!(
            m,
            "| case | variant | msgs/s ratio | per broker CPU-s ratio | throttled (1 thread / N) |"
        );
        let _ = writeln!(m, "|---|---|---|---|---|");
        for s in &scale {
            let thr = |name: &str| {
                cells
                    .iter()
                    .find(|c| c.case == s.case && c.broker == name)
                    .and_then(|c| c.throttled)
                    .map_or("-".into(), |t| format!("{:.0} %", t.median * 100.0))
            };
            let _ = writeln!(
                m,
                "| {} | {} / {} | {:.2}x | {} | {} / {} |",
                s.case,
                s.variant,
                s.base,
                s.msgs_per_s,
                s.per_cpu_s.map_or("-".into(), |r| format!("{r:.2}x")),
                thr(&s.base),
                thr(&s.variant)
            );
        }
    }
    if !charts.is_empty() {
        let _ = writeln!(m, "\n## Charts\n");
        for c in charts {
            let _ = writeln!(m, "![{c}]({c})");
        }
    }
    let errs: Vec<&Cell> = cells.iter().filter(|c| !c.errors.is_empty()).collect();
    if !errs.is_empty() {
        let _ = writeln!(m, "\n## Errors\n");
        for c in errs {
            let _ = writeln!(m, "- {} / {}: {}", c.case, c.broker, c.errors.join(" | "));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{BrokerStats, ConnStats};

    #[test]
    fn stat_median_and_range() {
        assert_eq!(stat(&[]), None);
        let s = stat(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = stat(&[4.0, 1.0, f64::NAN, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.n), (2.5, 4));
    }

    fn sample(case: &str, broker: &str, per_cpu: f64) -> Sample {
        round(case, broker, per_cpu, 0)
    }

    fn round(case: &str, broker: &str, per_cpu: f64, repeat: usize) -> Sample {
        Sample {
            case: case.into(),
            broker: broker.into(),
            repeat,
            result: Some(RunResult {
                msgs_per_s: per_cpu / 2.0,
                deliveries_per_broker_cpu_s: Some(per_cpu),
                ..RunResult::default()
            }),
            error: None,
            throttled_share: None,
        }
    }

    #[test]
    fn ratios_use_medians_of_the_headline_metric() {
        let cases = vec![super::super::case(
            "p2p-q0",
            CaseKind::Throughput,
            "--scenario p2p",
        )];
        let brokers = vec!["halyard-uring".to_string(), "mosquitto".to_string()];
        let samples = vec![
            sample("p2p-q0", "halyard-uring", 400.0),
            sample("p2p-q0", "halyard-uring", 600.0),
            sample("p2p-q0", "halyard-uring", 500.0),
            sample("p2p-q0", "mosquitto", 100.0),
            Sample {
                result: None,
                error: Some("boom".into()),
                ..sample("p2p-q0", "mosquitto", 0.0)
            },
        ];
        let cells = summarise(&cases, &brokers, &samples);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].per_cpu_s.unwrap().median, 500.0);
        assert_eq!((cells[1].runs, cells[1].failed_runs), (1, 1));
        let r = ratios(&cells, &samples);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].value, r[0].higher_is_better), (5.0, true));
        let md = markdown(&RunInfo::default(), &cells, &r, &[]);
        assert!(
            md.contains("| p2p-q0 | halyard-uring | 250 (200-300) | 500 (400-600) |"),
            "{md}"
        );
        assert!(md.contains("5.00x"));
        assert!(md.contains("boom"));
        assert!(!md.contains("Thread scaling"));
    }

    #[test]
    fn connection_cases_compare_memory_and_broker_cpu() {
        let cases = vec![super::super::case(
            "conn-sub",
            CaseKind::Connections,
            "--scenario conn --subscribe",
        )];
        let brokers = vec!["halyard-uring".to_string(), "mosquitto".to_string()];
        let conn = |broker: &str, cpu_s: f64, bytes: f64| Sample {
            result: Some(RunResult {
                broker: Some(BrokerStats {
                    cpu_s,
                    ..BrokerStats::default()
                }),
                conn: Some(ConnStats {
                    connections: 10_000,
                    connect_rate: 20_000.0,
                    rss_per_conn_bytes: bytes,
                    broker_cpu_us_per_conn: cpu_s * 100.0,
                    broker_sys_us_per_conn: cpu_s * 60.0,
                    ..ConnStats::default()
                }),
                host_steal_share: Some(cpu_s / 10.0),
                ..RunResult::default()
            }),
            ..sample("conn-sub", broker, 0.0)
        };
        let samples = vec![
            conn("halyard-uring", 0.1, 1500.0),
            conn("mosquitto", 0.25, 1000.0),
            conn("mosquitto", 0.0, 1000.0),
        ];
        let cells = summarise(&cases, &brokers, &samples);
        assert_eq!(cells[0].conn_per_cpu_s.unwrap().median, 100_000.0);
        assert_eq!(
            cells[1].conn_per_cpu_s.unwrap().n,
            1,
            "a run without broker CPU has no rate"
        );
        let r = ratios(&cells, &samples);
        let got: Vec<_> = r
            .iter()
            .map(|r| (r.metric, r.value, r.higher_is_better))
            .collect();
        assert_eq!(
            got,
            [
                ("RSS per connection", 1.5, false),
                ("connections per broker CPU-s", 2.5, true)
            ]
        );
        let md = markdown(&RunInfo::default(), &cells, &r, &[]);
        assert!(
            md.contains("| conn-sub | halyard-uring | 20k | 100k | 10.00 | 6.00 |"),
            "{md}"
        );
        // Steal is a share of the host's time per run: 1 % for the Halyard run, 2.5 % and
        // 0 % for Mosquitto's two.
        assert!(md.contains("| 0 % | 0 % | 1.0 % |"), "{md}");
        assert!(md.contains("| 1.2 % (0.0-2.5) |"), "{md}");
        assert!(md.contains(
            "| conn-sub | connections per broker CPU-s | halyard-uring | mosquitto | 2.50x"
        ));
    }

    #[test]
    fn latency_ratios_are_also_paired_round_by_round() {
        let cases = vec![super::super::case("p2p-q1-50k", CaseKind::Latency, "")];
        let brokers = ["halyard-epoll", "mosquitto"].map(String::from);
        let run = |broker: &str, p99: f64, repeat: usize| {
            let mut s = round("p2p-q1-50k", broker, 1.0, repeat);
            if let Some(r) = s.result.as_mut() {
                r.latency.count = 10;
                r.latency.p99_us = p99;
            }
            s
        };
        // Medians 150 / 200 (0.75x), but round by round Halyard is 0.5x, 2x and 0.8x.
        let samples = vec![
            run("halyard-epoll", 100.0, 0),
            run("mosquitto", 200.0, 0),
            run("halyard-epoll", 400.0, 1),
            run("mosquitto", 200.0, 1),
            run("halyard-epoll", 200.0, 2),
            run("mosquitto", 250.0, 2),
            // A round the peer has no result for is left out of the pairing.
            run("halyard-epoll", 1.0, 3),
        ];
        let cells = summarise(&cases, &brokers, &samples);
        let r = ratios(&cells, &samples);
        assert_eq!(r.len(), 1);
        assert!(!r[0].higher_is_better);
        let p = r[0].paired.unwrap();
        assert_eq!((p.median, p.min, p.max, p.n), (0.8, 0.5, 2.0, 3));
        assert_eq!(r[0].rounds_better, 2);
        let md = markdown(&RunInfo::default(), &cells, &r, &[]);
        assert!(md.contains("| 0.80x (0.50-2.00) | 2 of 3 |"), "{md}");
    }

    #[test]
    fn open_loop_cells_with_a_late_or_saturated_generator_are_flagged() {
        let cases = vec![super::super::case("p2p-q1-50k", CaseKind::Latency, "")];
        let brokers = ["halyard-uring", "rumqttd"].map(String::from);
        let run = |broker: &str, lag_p99: f64, load_cpu: f64| {
            let mut s = round("p2p-q1-50k", broker, 1.0, 0);
            if let Some(r) = s.result.as_mut() {
                r.latency.count = 10;
                r.latency.p99_us = 500.0;
                r.own_cpu_share = load_cpu;
                r.send_lag = Some(crate::latency::LatencySummary {
                    count: 10,
                    p99_us: lag_p99,
                    ..Default::default()
                });
            }
            s
        };
        let samples = vec![
            run("halyard-uring", 27_000.0, 0.95),
            run("rumqttd", 65.0, 0.80),
        ];
        let cells = summarise(&cases, &brokers, &samples);
        let late = cells.iter().find(|c| c.broker == "halyard-uring").unwrap();
        let why = late.latency_caveats();
        assert_eq!(why.len(), 2, "{why:?}");
        assert!(why[0].contains("send lag p99 27k us"), "{why:?}");
        assert!(
            why[1].contains("generator is saturated (95 % CPU)"),
            "{why:?}"
        );
        let clean = cells.iter().find(|c| c.broker == "rumqttd").unwrap();
        assert!(clean.latency_caveats().is_empty());
        let r = ratios(&cells, &samples);
        let md = markdown(&RunInfo::default(), &cells, &r, &[]);
        assert!(
            md.contains("- p2p-q1-50k / halyard-uring: the generator fell behind"),
            "{md}"
        );
        assert!(md.contains("(lower is better, see caveats)"), "{md}");
        assert!(!md.contains("- p2p-q1-50k / rumqttd"), "{md}");
    }

    #[test]
    fn scaling_pairs_each_thread_variant_with_its_one_thread_twin() {
        assert_eq!(
            split_threads("halyard-uring-t2"),
            Some(("halyard-uring".into(), 2))
        );
        assert_eq!(
            split_threads("halyard-epoll-t4-store"),
            Some(("halyard-epoll-store".into(), 4))
        );
        assert_eq!(split_threads("halyard-uring"), None);
        assert_eq!(split_threads("halyard-uring-store"), None);
        let cases = vec![super::super::case(
            "p2p-q0",
            CaseKind::Throughput,
            "--scenario p2p",
        )];
        let brokers = vec!["halyard-uring".to_string(), "halyard-uring-t2".to_string()];
        let with = |s: Sample, t: f64| Sample {
            throttled_share: Some(t),
            ..s
        };
        let samples = vec![
            with(sample("p2p-q0", "halyard-uring", 400.0), 0.9),
            with(sample("p2p-q0", "halyard-uring-t2", 700.0), 0.95),
            with(sample("p2p-q0", "halyard-uring-t2", 660.0), 0.97),
        ];
        let cells = summarise(&cases, &brokers, &samples);
        let s = scaling(&cells);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].base.as_str(), s[0].threads), ("halyard-uring", 2));
        // msgs/s: median(350, 330) = 340 over 200.
        assert!((s[0].msgs_per_s - 1.7).abs() < 1e-9, "{s:?}");
        assert!((s[0].per_cpu_s.unwrap() - 1.7).abs() < 1e-9);
        let md = markdown(&RunInfo::default(), &cells, &[], &[]);
        assert!(
            md.contains(
                "| p2p-q0 | halyard-uring-t2 / halyard-uring | 1.70x | 1.70x | 90 % / 96 % |"
            ),
            "{md}"
        );
    }
}
