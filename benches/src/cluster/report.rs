//! Medians and ranges of the cluster runs and the markdown report.

use std::fmt::Write as _;

use serde::Serialize;

use super::Measured;
use crate::compare::summary::{Stat, fmt_stat, stat};

/// Facts printed at the top of the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Info {
    /// The command that produced it.
    pub command: String,
    /// UTC start and end.
    pub started: String,
    /// UTC end.
    pub finished: String,
    /// `/proc/loadavg` at the start and the end (other work on the machine).
    pub load_start: String,
    /// See `load_start`.
    pub load_end: String,
    /// `nproc`.
    pub nproc: usize,
    /// Kernel release.
    pub kernel: String,
    /// `halyard --version`.
    pub version: String,
    /// Topology, sizes, windows.
    pub settings: String,
}

/// One p2p case over its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct P2pCell {
    /// Case name.
    pub case: String,
    /// Nodes whose CPU is summed.
    pub nodes: String,
    /// Runs with a result.
    pub runs: usize,
    /// Delivered msgs/s.
    pub msgs_per_s: Option<Stat>,
    /// Deliveries per broker CPU-second.
    pub per_cpu_s: Option<Stat>,
    /// Broker CPU share (1.0 = one core), summed over the nodes.
    pub cpu_share: Option<Stat>,
    /// p50 latency, microseconds.
    pub p50_us: Option<Stat>,
    /// p99 latency, microseconds.
    pub p99_us: Option<Stat>,
    /// Lost, duplicated, reordered deliveries summed over the rounds.
    pub lost: u64,
    /// See `lost`.
    pub duplicated: u64,
    /// See `lost`.
    pub reordered: u64,
    /// Rounds with an election or an error.
    pub troubled: usize,
}

/// One route mode over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct RouteCell {
    /// `batched` or `unbatched`.
    pub mode: String,
    /// Filters per run.
    pub filters: usize,
    /// Runs that completed.
    pub runs: usize,
    /// Routes per second until visible on the other node.
    pub routes_per_s: Option<Stat>,
    /// Routes per second until the last SUBACK.
    pub suback_routes_per_s: Option<Stat>,
    /// Route operations per Raft entry.
    pub ops_per_entry: Option<Stat>,
    /// Removals per second after the disconnect, until gone on the other node.
    pub removal_routes_per_s: Option<Stat>,
    /// Runs with an election or an error.
    pub troubled: usize,
}

/// Aggregates the p2p runs per case, in first-seen order.
pub fn p2p_cells(m: &Measured) -> Vec<P2pCell> {
    let mut names: Vec<&str> = Vec::new();
    for r in &m.p2p {
        if !names.contains(&r.case.as_str()) {
            names.push(&r.case);
        }
    }
    names
        .iter()
        .map(|&case| {
            let runs: Vec<_> = m.p2p.iter().filter(|r| r.case == case).collect();
            let ok: Vec<_> = runs.iter().filter_map(|r| r.result.as_ref()).collect();
            let s = |f: &dyn Fn(&crate::report::RunResult) -> Option<f64>| {
                stat(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            P2pCell {
                case: case.into(),
                nodes: runs.first().map(|r| r.nodes.join("+")).unwrap_or_default(),
                runs: ok.len(),
                msgs_per_s: s(&|r| Some(r.msgs_per_s)),
                per_cpu_s: s(&|r| r.deliveries_per_broker_cpu_s),
                cpu_share: s(&|r| r.broker.map(|b| b.cpu_share)),
                p50_us: s(&|r| Some(r.latency.p50_us)),
                p99_us: s(&|r| Some(r.latency.p99_us)),
                lost: ok.iter().map(|r| r.counts.lost).sum(),
                duplicated: ok.iter().map(|r| r.counts.duplicated).sum(),
                reordered: ok.iter().map(|r| r.counts.reordered).sum(),
                troubled: runs
                    .iter()
                    .filter(|r| r.term_changed || r.error.is_some())
                    .count(),
            }
        })
        .collect()
}

/// Aggregates the route runs per mode, in first-seen order.
pub fn route_cells(m: &Measured) -> Vec<RouteCell> {
    let mut modes: Vec<&str> = Vec::new();
    for r in &m.routes {
        if !modes.contains(&r.mode.as_str()) {
            modes.push(&r.mode);
        }
    }
    modes
        .iter()
        .map(|&mode| {
            let runs: Vec<_> = m.routes.iter().filter(|r| r.mode == mode).collect();
            let ok: Vec<_> = runs.iter().filter(|r| r.visible_s > 0.0).collect();
            let s = |f: &dyn Fn(&super::RouteRun) -> Option<f64>| {
                stat(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            RouteCell {
                mode: mode.into(),
                filters: runs.first().map_or(0, |r| r.filters),
                runs: ok.len(),
                routes_per_s: s(&|r| Some(r.routes_per_s)),
                suback_routes_per_s: s(&|r| Some(r.suback_routes_per_s)),
                ops_per_entry: s(&|r| {
                    (r.entries_proposed > 0)
                        .then(|| r.ops_proposed as f64 / r.entries_proposed as f64)
                }),
                removal_routes_per_s: s(&|r| r.removal_routes_per_s),
                troubled: runs
                    .iter()
                    .filter(|r| r.term_changed || r.error.is_some())
                    .count(),
            }
        })
        .collect()
}

/// The markdown report.
pub fn markdown(info: &Info, m: &Measured) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Halyard cluster benchmark\n");
    let _ = writeln!(s, "- command: `{}`", info.command);
    let _ = writeln!(
        s,
        "- {} -> {}; load average (1/5/15 min, runnable/total) at start `{}`, at end `{}`",
        info.started, info.finished, info.load_start, info.load_end
    );
    let _ = writeln!(
        s,
        "- {} CPU(s), kernel {}, {}",
        info.nproc, info.kernel, info.version
    );
    let _ = writeln!(s, "- {}", info.settings);
    for r in &m.roles {
        let _ = writeln!(s, "- {r}");
    }
    let p2p = p2p_cells(m);
    if !p2p.is_empty() {
        let _ = writeln!(
            s,
            "\n## p2p throughput (closed loop; median (min-max) over the rounds)\n"
        );
        let _ = writeln!(
            s,
            "| case | broker CPU of | msgs/s | deliveries / broker CPU-s | broker CPU share | p50 us | p99 us | lost | dup | reordered | runs (troubled) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
        for c in &p2p {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) |",
                c.case,
                c.nodes,
                fmt_stat(&c.msgs_per_s),
                fmt_stat(&c.per_cpu_s),
                c.cpu_share
                    .map_or("-".into(), |x| format!("{:.0} %", x.median * 100.0)),
                fmt_stat(&c.p50_us),
                fmt_stat(&c.p99_us),
                c.lost,
                c.duplicated,
                c.reordered,
                c.runs,
                c.troubled
            );
        }
        for (same, cross) in [("same-q0", "cross-q0"), ("same-q1", "cross-q1")] {
            let get = |n: &str| p2p.iter().find(|c| c.case == n);
            if let (Some(a), Some(b)) = (get(same), get(cross))
                && let (Some(x), Some(y), Some(px), Some(py)) =
                    (a.msgs_per_s, b.msgs_per_s, a.per_cpu_s, b.per_cpu_s)
            {
                let _ = writeln!(
                    s,
                    "\n{cross} / {same}: msgs/s x{:.2}, deliveries per broker CPU-s x{:.2}",
                    y.median / x.median,
                    py.median / px.median
                );
            }
        }
    }
    let routes = route_cells(m);
    if !routes.is_empty() {
        let _ = writeln!(
            s,
            "\n## Route commit (median (min-max) over the runs)\n\n\
             Routes/s = filters / (first SUBSCRIBE -> the other node's table holds them all).\n"
        );
        let _ = writeln!(
            s,
            "| mode | filters | routes/s (visible on other node) | routes/s (SUBACKs) | route ops per Raft entry | removals/s after disconnect | runs (troubled) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for c in &routes {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} ({}) |",
                c.mode,
                c.filters,
                fmt_stat(&c.routes_per_s),
                fmt_stat(&c.suback_routes_per_s),
                fmt_stat(&c.ops_per_entry),
                fmt_stat(&c.removal_routes_per_s),
                c.runs,
                c.troubled
            );
        }
    }
    let errors: Vec<String> = m
        .p2p
        .iter()
        .filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("{} round {}: {e}", r.case, r.repeat + 1))
        })
        .chain(
            m.routes
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("routes {}: {e}", r.mode))),
        )
        .collect();
    let elections = m.p2p.iter().filter(|r| r.term_changed).count()
        + m.routes.iter().filter(|r| r.term_changed).count();
    if elections > 0 {
        let _ = writeln!(
            s,
            "\n{elections} run(s) saw a Raft election (term changed): their figures include it."
        );
    }
    if !errors.is_empty() {
        let _ = writeln!(s, "\n## Errors\n");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{P2pRun, RouteRun};
    use crate::report::RunResult;

    fn p2p(case: &str, msgs: f64, per_cpu: f64) -> P2pRun {
        P2pRun {
            case: case.into(),
            repeat: 0,
            nodes: vec!["c2".into()],
            result: Some(RunResult {
                msgs_per_s: msgs,
                deliveries_per_broker_cpu_s: Some(per_cpu),
                ..RunResult::default()
            }),
            term_changed: false,
            error: None,
        }
    }

    #[test]
    fn cells_and_markdown() {
        let m = Measured {
            p2p: vec![
                p2p("same-q0", 100.0, 400.0),
                p2p("cross-q0", 50.0, 100.0),
                p2p("same-q0", 300.0, 600.0),
            ],
            routes: vec![RouteRun {
                mode: "unbatched".into(),
                filters: 10,
                visible_s: 2.0,
                routes_per_s: 5.0,
                ops_proposed: 10,
                entries_proposed: 10,
                term_changed: true,
                ..RouteRun::default()
            }],
            roles: vec!["batched: leader c1".into()],
        };
        let cells = p2p_cells(&m);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[0].runs, 2);
        assert_eq!(cells[0].msgs_per_s.map(|s| s.median), Some(200.0));
        let routes = route_cells(&m);
        assert_eq!(routes[0].ops_per_entry.map(|s| s.median), Some(1.0));
        assert_eq!(routes[0].troubled, 1);
        let md = markdown(&Info::default(), &m);
        assert!(md.contains("cross-q0 / same-q0: msgs/s x0.25, deliveries per broker CPU-s x0.20"));
        assert!(md.contains("| unbatched | 10 |"));
        assert!(md.contains("1 run(s) saw a Raft election"));
    }
}
