//! XDP connection accounting in the broker: starts `halyard-xdp` when `[xdp] enabled = true`
//! on the MQTT listener ports, remembers why it is off otherwise (logged once), exports its
//! counters on `/metrics`, its state in `/status`, the top talkers on `GET /xdp`, and
//! implements `halyard ctl xdp top`.
//!
//! XDP is an optional accelerator for observability: nothing here may stop the broker.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use halyard_xdp::{Attachment, Xdp, XdpConfig, XdpSnapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::cli::ConfigArgs;
use crate::config::Config;
use crate::metrics::Metrics;

/// XDP as the running broker has it: attached, or off with the reason.
#[derive(Debug)]
pub struct XdpRuntime {
    xdp: Option<Xdp>,
    status: XdpStatus,
}

/// The `xdp` part of `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XdpStatus {
    /// True when the program is loaded and attached.
    pub enabled: bool,
    /// Why it is not enabled (`null` when it is).
    pub reason: Option<String>,
    /// Interfaces and attach modes.
    pub attachments: Vec<Attachment>,
}

/// The `GET /xdp` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct XdpReport {
    /// Same as `/status`'s `xdp`.
    #[serde(flatten)]
    pub status: XdpStatus,
    /// Counters and top talkers; `null` when XDP is off.
    pub snapshot: Option<XdpSnapshot>,
}

impl XdpRuntime {
    /// Starts XDP if configured. Never fails: an error is logged once and kept as the reason.
    pub fn start(cfg: &XdpConfig, ports: &[u16]) -> XdpRuntime {
        if !cfg.enabled {
            return Self::off("disabled in the configuration (xdp.enabled = false)".into());
        }
        match Xdp::start(cfg, ports) {
            Ok(xdp) => {
                for a in xdp.attachments() {
                    tracing::info!(interface = %a.interface, mode = a.mode.as_str(), "XDP accounting attached");
                }
                let status = XdpStatus {
                    enabled: true,
                    reason: None,
                    attachments: xdp.attachments().to_vec(),
                };
                XdpRuntime {
                    xdp: Some(xdp),
                    status,
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "XDP accounting disabled");
                Self::off(err.to_string())
            }
        }
    }

    fn off(reason: String) -> XdpRuntime {
        XdpRuntime {
            xdp: None,
            status: XdpStatus {
                enabled: false,
                reason: Some(reason),
                attachments: Vec::new(),
            },
        }
    }

    /// The `xdp` part of `/status`.
    pub fn status(&self) -> &XdpStatus {
        &self.status
    }

    /// The `GET /xdp` JSON text (reads the kernel maps).
    pub fn report_json(&self) -> String {
        let report = XdpReport {
            status: self.status.clone(),
            snapshot: self.xdp.as_ref().map(Xdp::snapshot),
        };
        // Plain structs of strings, numbers and addresses: serialising cannot fail.
        serde_json::to_string_pretty(&report).expect("xdp report serialises")
    }

    /// Adds the `halyard_xdp_*` metrics to `reg` (reads the kernel maps when enabled).
    pub fn register(&self, reg: &mut Registry) {
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        reg.register(
            "halyard_xdp_enabled",
            "1 when the XDP accounting program is attached",
            gauge(i64::from(self.xdp.is_some())),
        );
        let snap = self.xdp.as_ref().map(Xdp::snapshot).unwrap_or_default();
        let t = snap.totals;
        reg.register(
            "halyard_xdp_syn",
            "SYNs (without ACK) to the MQTT listener ports seen by XDP",
            counter(t.syn),
        );
        reg.register(
            "halyard_xdp_packets",
            "TCP segments to the MQTT listener ports seen by XDP",
            counter(t.packets),
        );
        reg.register(
            "halyard_xdp_bytes",
            "Bytes of those segments (whole frames)",
            counter(t.bytes),
        );
        reg.register(
            "halyard_xdp_syn_dropped",
            "SYNs dropped by the per-source rate limit (xdp.syn_rate_limit)",
            counter(t.syn_dropped),
        );
        reg.register(
            "halyard_xdp_tracked_sources",
            "Source addresses in the kernel table (bounded by xdp.max_sources)",
            gauge(i64::try_from(snap.tracked_sources).unwrap_or(i64::MAX)),
        );
        let modes = Family::<Vec<(String, String)>, Gauge>::default();
        for a in &self.status.attachments {
            modes
                .get_or_create(&vec![
                    ("interface".into(), a.interface.clone()),
                    ("mode".into(), a.mode.as_str().into()),
                ])
                .set(1);
        }
        reg.register(
            "halyard_xdp_attach_mode",
            "1 per interface and the XDP mode it is attached in",
            modes,
        );
        let per_source = |f: fn(&halyard_xdp::XdpCounters) -> u64| {
            let fam = Family::<Vec<(String, String)>, Counter>::default();
            for s in &snap.top {
                fam.get_or_create(&vec![("source".into(), s.source.to_string())])
                    .inc_by(f(&s.counters));
            }
            fam
        };
        reg.register(
            "halyard_xdp_source_syn",
            "SYNs of the top-K sources (xdp.top_k)",
            per_source(|c| c.syn),
        );
        reg.register(
            "halyard_xdp_source_packets",
            "Segments of the top-K sources",
            per_source(|c| c.packets),
        );
        reg.register(
            "halyard_xdp_source_bytes",
            "Bytes of the top-K sources",
            per_source(|c| c.bytes),
        );
        reg.register(
            "halyard_xdp_source_syn_dropped",
            "Dropped SYNs of the top-K sources",
            per_source(|c| c.syn_dropped),
        );
    }
}

/// Starts XDP on the ports of `listeners` (the MQTT listeners) and hands it to `metrics`,
/// which serves it on `/metrics`, `/status` and `/xdp`. Called once by `run::start`.
pub fn start_for(metrics: &Metrics, cfg: &XdpConfig, listeners: &[std::net::TcpListener]) {
    let mut ports: Vec<u16> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let _ = metrics.xdp.set(Arc::new(XdpRuntime::start(cfg, &ports)));
}

/// `halyard ctl xdp ...`.
#[derive(Debug, Subcommand)]
pub enum XdpCtl {
    /// Print the busiest sources seen by XDP (from the admin endpoint `GET /xdp`).
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
    /// Configuration to read `admin.bind` from when `--admin` is not given.
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Runs `halyard ctl xdp ...`.
pub fn ctl(cmd: &XdpCtl) -> ExitCode {
    let XdpCtl::Top(args) = cmd;
    let addr = match &args.admin {
        Some(a) => a.clone(),
        None => match Config::load_from_process(args.config.config.as_deref()) {
            Ok(c) => c.admin.bind.to_string(),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
    };
    let body = match crate::admin::ctl::get(&addr, "/xdp") {
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
        Ok(report) => match render(&report) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(text) => {
                eprint!("{text}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("unexpected /xdp document: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `ctl xdp top` text; `Err` when XDP is off (the text then says why).
pub fn render(report: &XdpReport) -> Result<String, String> {
    match (&report.snapshot, report.status.enabled) {
        (Some(snap), true) => {
            let modes: Vec<String> = report
                .status
                .attachments
                .iter()
                .map(|a| format!("{} ({})", a.interface, a.mode.as_str()))
                .collect();
            Ok(format!(
                "XDP attached to {}\n{}",
                modes.join(", "),
                halyard_xdp::render_top(snap)
            ))
        }
        _ => Err(format!(
            "XDP is disabled: {}\n",
            report.status.reason.as_deref().unwrap_or("unknown reason")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_in_config_is_reported_and_exported() {
        let rt = XdpRuntime::start(&XdpConfig::default(), &[1883]);
        assert!(!rt.status().enabled);
        assert!(
            rt.status()
                .reason
                .as_deref()
                .unwrap()
                .contains("xdp.enabled")
        );
        let mut reg = Registry::default();
        rt.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for needle in [
            "halyard_xdp_enabled 0\n",
            "halyard_xdp_syn_total 0\n",
            "halyard_xdp_packets_total 0\n",
            "halyard_xdp_bytes_total 0\n",
            "halyard_xdp_syn_dropped_total 0\n",
            "halyard_xdp_tracked_sources 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let report: XdpReport = serde_json::from_str(&rt.report_json()).unwrap();
        assert!(report.snapshot.is_none());
        assert!(render(&report).unwrap_err().contains("xdp.enabled = false"));
    }

    #[test]
    fn missing_interface_is_the_reason() {
        let cfg = XdpConfig {
            enabled: true,
            interfaces: vec!["hxnope0".into()],
            ..XdpConfig::default()
        };
        let rt = XdpRuntime::start(&cfg, &[1883]);
        assert!(!rt.status().enabled);
        assert!(rt.status().reason.as_deref().unwrap().contains("hxnope0"));
    }
}
