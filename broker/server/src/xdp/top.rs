//! `halyard ctl xdp top`: the busiest sources from `GET /xdp`, with the XDP counts (SYNs,
//! drops, packets, bytes) beside the broker's (accepted, CONNECT, sessions, refused), so a
//! scanner shows SYNs far above accepts and a reconnect storm many CONNECTs.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{SourceRow, XdpReport};
use crate::cli::ConfigArgs;

/// `halyard ctl xdp ...`.
#[derive(Debug, Subcommand)]
pub enum XdpCtl {
    /// Print the busiest sources seen by XDP and by the broker (from `GET /xdp`).
    Top(TopArgs),
}

/// Arguments of `halyard ctl xdp top`.
#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Admin HTTP address; default: `admin.bind` of the configuration.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Print the raw JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Configuration to read `admin.token` from, and `admin.bind` when `--admin` is not given.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs `halyard ctl xdp ...`. With XDP off it still prints the broker's counts, says why XDP
/// is off on stderr and exits with status 1.
pub fn ctl(cmd: &XdpCtl) -> ExitCode {
    let XdpCtl::Top(args) = cmd;
    let target = match crate::admin::ctl::admin_target(args.admin.as_deref(), &args.config) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let body = match crate::admin::ctl::get(&target, "/xdp") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!("{}", body.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<XdpReport>(&body) {
        Ok(report) => {
            let (text, off) = render(&report);
            print!("{text}");
            match off {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprint!("{why}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("unexpected /xdp document: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `ctl xdp top` text, and, when XDP is off, the line saying why (for stderr). The table
/// has one row per source of [`XdpReport::sources`]; `-` marks XDP counters that are unknown
/// (XDP off, or the source is not in its top-K).
pub fn render(report: &XdpReport) -> (String, Option<String>) {
    let mut out = String::new();
    let off = match (&report.snapshot, report.status.enabled) {
        (Some(snap), true) => {
            let modes: Vec<String> = report
                .status
                .attachments
                .iter()
                .map(|a| format!("{} ({})", a.interface, a.mode.as_str()))
                .collect();
            let t = &snap.totals;
            let _ = writeln!(out, "XDP attached to {}", modes.join(", "));
            let _ = writeln!(
                out,
                "XDP totals: {} SYN, {} SYN dropped, {} packets, {} bytes; {} sources tracked",
                t.syn, t.syn_dropped, t.packets, t.bytes, snap.tracked_sources
            );
            if snap.read_errors > 0 {
                let _ = writeln!(out, "warning: {} map reads failed", snap.read_errors);
            }
            None
        }
        _ => Some(format!(
            "XDP is disabled: {}\n",
            report.status.reason.as_deref().unwrap_or("unknown reason")
        )),
    };
    let s = &report.sources;
    let _ = writeln!(
        out,
        "broker: {} sources tracked (max {}), {} evicted",
        s.tracked, s.max, s.evictions
    );
    if s.rows.is_empty() {
        out.push_str("no sources seen\n");
    } else {
        table(&mut out, &s.rows);
    }
    (out, off)
}

/// Column titles after SOURCE, in order.
const COLUMNS: [&str; 8] = [
    "SYN",
    "ACCEPTED",
    "CONNECT",
    "SESSIONS",
    "REFUSED",
    "SYN_DROPPED",
    "PACKETS",
    "BYTES",
];

fn table(out: &mut String, rows: &[SourceRow]) {
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let x = |f: fn(&halyard_xdp::XdpCounters) -> u64| {
                r.xdp
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |c| f(c).to_string())
            };
            let b = &r.broker;
            [
                r.source.to_string(),
                x(|c| c.syn),
                b.accepts.to_string(),
                b.connects.to_string(),
                b.sessions.to_string(),
                b.refused.to_string(),
                x(|c| c.syn_dropped),
                x(|c| c.packets),
                x(|c| c.bytes),
            ]
        })
        .collect();
    let title: [&str; 9] = std::array::from_fn(|i| if i == 0 { "SOURCE" } else { COLUMNS[i - 1] });
    let widths: [usize; 9] = std::array::from_fn(|i| {
        cells
            .iter()
            .map(|c| c[i].len())
            .chain([title[i].len()])
            .max()
            .unwrap_or(0)
    });
    let mut line = |cols: &[&str; 9]| {
        let mut l = format!("{:<w$}", cols[0], w = widths[0]);
        for (c, w) in cols.iter().zip(widths).skip(1) {
            let _ = write!(l, "  {c:>w$}");
        }
        out.push_str(&l);
        out.push('\n');
    };
    line(&title);
    for c in &cells {
        line(&std::array::from_fn(|i| c[i].as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::{SourceCounts, SourcesReport, XdpStatus};
    use halyard_xdp::{AttachMode, Attachment, SourceStats, XdpCounters, XdpSnapshot};

    fn row(ip: &str, xdp: Option<(u64, u64)>, b: [u64; 4]) -> SourceRow {
        SourceRow {
            source: ip.parse().unwrap(),
            xdp: xdp.map(|(syn, packets)| XdpCounters {
                syn,
                packets,
                bytes: packets * 60,
                syn_dropped: 0,
            }),
            broker: SourceCounts {
                accepts: b[0],
                connects: b[1],
                sessions: b[2],
                refused: b[3],
            },
        }
    }

    fn words(text: &str, first: &str) -> Vec<String> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(first))
            .unwrap_or_else(|| panic!("no {first} row in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn rows_show_xdp_and_broker_counts_side_by_side() {
        let scanner = row("10.0.0.66", Some((500, 1000)), [3, 0, 0, 0]);
        let storm = row("10.0.0.7", Some((40, 400)), [40, 40, 40, 0]);
        let report = XdpReport {
            status: XdpStatus {
                enabled: true,
                reason: None,
                attachments: vec![Attachment {
                    interface: "eth0".into(),
                    mode: AttachMode::Driver,
                }],
            },
            snapshot: Some(XdpSnapshot {
                totals: XdpCounters {
                    syn: 540,
                    packets: 1400,
                    bytes: 84000,
                    syn_dropped: 0,
                },
                tracked_sources: 2,
                top: vec![SourceStats {
                    source: scanner.source,
                    counters: scanner.xdp.unwrap(),
                }],
                read_errors: 0,
            }),
            sources: SourcesReport {
                tracked: 2,
                max: 65536,
                evictions: 0,
                rows: vec![scanner, storm, row("fd00::9", None, [2, 1, 0, 1])],
            },
        };
        let (text, off) = render(&report);
        assert!(off.is_none(), "{off:?}");
        assert!(text.contains("XDP attached to eth0 (driver)"), "{text}");
        assert!(text.contains("XDP totals: 540 SYN"), "{text}");
        assert!(text.contains("broker: 2 sources tracked (max 65536), 0 evicted"));
        assert_eq!(
            words(&text, "SOURCE").join(" "),
            "SOURCE SYN ACCEPTED CONNECT SESSIONS REFUSED SYN_DROPPED PACKETS BYTES"
        );
        assert_eq!(
            words(&text, "10.0.0.66"),
            ["10.0.0.66", "500", "3", "0", "0", "0", "0", "1000", "60000"]
        );
        assert_eq!(
            words(&text, "10.0.0.7")[..5],
            ["10.0.0.7", "40", "40", "40", "40"]
        );
        assert_eq!(
            words(&text, "fd00::9"),
            ["fd00::9", "-", "2", "1", "0", "1", "-", "-", "-"]
        );
    }

    #[test]
    fn xdp_off_still_prints_the_broker_counts() {
        let report = XdpReport {
            status: XdpStatus {
                enabled: false,
                reason: Some("disabled in the configuration (xdp.enabled = false)".into()),
                attachments: Vec::new(),
            },
            snapshot: None,
            sources: SourcesReport {
                tracked: 1,
                max: 10,
                evictions: 4,
                rows: vec![row("127.0.0.1", None, [5, 4, 3, 0])],
            },
        };
        let (text, off) = render(&report);
        assert!(off.unwrap().contains("xdp.enabled = false"));
        assert!(!text.contains("XDP attached"), "{text}");
        assert!(text.contains("broker: 1 sources tracked (max 10), 4 evicted"));
        assert_eq!(
            words(&text, "127.0.0.1")[..5],
            ["127.0.0.1", "-", "5", "4", "3"]
        );
        let empty = XdpReport {
            sources: SourcesReport::default(),
            ..report
        };
        assert!(render(&empty).0.contains("no sources seen"));
    }
}
