//! Connection accounting in the broker: starts `halyard-xdp` when `[xdp] enabled = true` on
//! the MQTT listener ports, remembers why it is off otherwise (logged once), and keeps the
//! broker's own per-source counts beside it ([`sources`]: accepts, refusals, CONNECTs and
//! sessions per source address, kept whether XDP runs or not), so SYNs that never became MQTT
//! sessions show up. Both are exported on `/metrics`, summarised in `/status`, listed on
//! `GET /xdp`, and printed by `halyard ctl xdp top` ([`top`]).
//!
//! XDP is an optional accelerator for observability: nothing here may stop the broker.

pub mod sources;
pub mod top;

use std::net::IpAddr;
use std::sync::Arc;

use halyard_xdp::{Attachment, Xdp, XdpConfig, XdpCounters, XdpSnapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::security::SourceSlot;

pub use sources::{SourceCounts, SourceEntry, SourceEvent, SourceTable, SourcesSummary};
pub use top::{TopArgs, XdpCtl, ctl, render};

/// XDP as the running broker has it: attached, or off with the reason.
#[derive(Debug)]
pub struct XdpRuntime {
    xdp: Option<Xdp>,
    status: XdpStatus,
    /// `xdp.top_k`: sources exported per scrape, by XDP and by the broker table each.
    top_k: usize,
    /// The broker's own per-source counts (kept when XDP is off too).
    sources: SourceTable,
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
    /// The broker's per-source counts joined with the XDP ones.
    #[serde(default)]
    pub sources: SourcesReport,
}

/// The broker's per-source table in `GET /xdp`: its size and the joined rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcesReport {
    /// Sources the broker tracks now.
    pub tracked: u64,
    /// Its bound (`limits.max_accounted_sources`).
    pub max: u64,
    /// Sources it forgot to stay within the bound.
    pub evictions: u64,
    /// The XDP top-K sources and the broker's top-K sources (at most `2 * xdp.top_k` rows),
    /// by SYNs, then accepts, CONNECTs and sessions.
    pub rows: Vec<SourceRow>,
}

/// One source as XDP and the broker saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    /// The source address.
    pub source: IpAddr,
    /// The XDP counters; `null` when XDP is off or the source is not in the XDP top-K.
    pub xdp: Option<XdpCounters>,
    /// The broker's counts (zero when the broker never accepted a connection from it).
    #[serde(flatten)]
    pub broker: SourceCounts,
}

impl XdpRuntime {
    /// Starts XDP if configured, and the broker's per-source table of at most `max_sources`
    /// addresses. Never fails: an XDP error is logged once and kept as the reason.
    pub fn start(cfg: &XdpConfig, ports: &[u16], max_sources: usize) -> XdpRuntime {
        let (xdp, status) = Self::attach(cfg, ports);
        XdpRuntime {
            xdp,
            status,
            top_k: cfg.top_k,
            sources: SourceTable::new(max_sources),
        }
    }

    fn attach(cfg: &XdpConfig, ports: &[u16]) -> (Option<Xdp>, XdpStatus) {
        let off = |reason: String| XdpStatus {
            enabled: false,
            reason: Some(reason),
            attachments: Vec::new(),
        };
        if !cfg.enabled {
            return (
                None,
                off("disabled in the configuration (xdp.enabled = false)".into()),
            );
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
                (Some(xdp), status)
            }
            Err(err) => {
                tracing::warn!(error = %err, "XDP accounting disabled");
                (None, off(err.to_string()))
            }
        }
    }

    /// The `xdp` part of `/status`.
    pub fn status(&self) -> &XdpStatus {
        &self.status
    }

    /// The broker's per-source table (the accept loop and the connections count into it).
    pub fn sources(&self) -> &SourceTable {
        &self.sources
    }

    /// The `sources` part of `/status`: the table's size and its top-K.
    pub fn sources_summary(&self) -> SourcesSummary {
        self.sources.summary(self.top_k)
    }

    /// The `GET /xdp` document (reads the kernel maps).
    pub fn report(&self) -> XdpReport {
        let snapshot = self.xdp.as_ref().map(Xdp::snapshot);
        let sources = self.sources_report(snapshot.as_ref());
        XdpReport {
            status: self.status.clone(),
            snapshot,
            sources,
        }
    }

    /// The `GET /xdp` JSON text (reads the kernel maps).
    pub fn report_json(&self) -> String {
        // Plain structs of strings, numbers and addresses: serialising cannot fail.
        serde_json::to_string_pretty(&self.report()).expect("xdp report serialises")
    }

    /// Joins the XDP top-K with the broker's top-K: every XDP source gets its broker counts
    /// (zero when the broker never saw it: SYNs that never became connections), every broker
    /// source its XDP counters when XDP has it in its top-K.
    fn sources_report(&self, snap: Option<&XdpSnapshot>) -> SourcesReport {
        let mut rows: Vec<SourceRow> = snap
            .map(|s| s.top.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|s| SourceRow {
                source: s.source.to_canonical(),
                xdp: Some(s.counters),
                broker: self.sources.get(s.source),
            })
            .collect();
        for e in self.sources.top(self.top_k) {
            if !rows.iter().any(|r| r.source == e.source) {
                rows.push(SourceRow {
                    source: e.source,
                    xdp: None,
                    broker: e.counts,
                });
            }
        }
        let key = |r: &SourceRow| {
            let b = &r.broker;
            let syn = r.xdp.map_or(0, |x| x.syn);
            (syn, b.accepts, b.connects, b.sessions)
        };
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.source.cmp(&b.source)));
        SourcesReport {
            tracked: self.sources.len() as u64,
            max: self.sources.max() as u64,
            evictions: self.sources.evictions(),
            rows,
        }
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
        let snapshot = self.xdp.as_ref().map(Xdp::snapshot);
        self.register_sources(reg, &self.sources_report(snapshot.as_ref()));
        let snap = snapshot.unwrap_or_default();
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
            source_family(snap.top.iter().map(|s| (s.source, f(&s.counters))))
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

    /// Adds the `halyard_source_*` metrics: the table's size and, per source of the joined
    /// rows, the broker's counts (so they can be joined with `halyard_xdp_source_*` on
    /// `source`; a source XDP saw but the broker did not gets zeros).
    fn register_sources(&self, reg: &mut Registry, report: &SourcesReport) {
        let tracked = Gauge::<i64>::default();
        tracked.set(i64::try_from(report.tracked).unwrap_or(i64::MAX));
        reg.register(
            "halyard_source_tracked",
            "Source addresses in the broker's accounting table (bounded by limits.max_accounted_sources)",
            tracked,
        );
        let evictions = Counter::<u64>::default();
        evictions.inc_by(report.evictions);
        reg.register(
            "halyard_source_evictions",
            "Sources forgotten by the broker's accounting table to stay within its bound",
            evictions,
        );
        let per_source = |f: fn(&SourceCounts) -> u64| {
            source_family(report.rows.iter().map(|r| (r.source, f(&r.broker))))
        };
        reg.register(
            "halyard_source_accepts",
            "TCP connections the broker accepted, per top-K source (xdp.top_k, broker and XDP)",
            per_source(|c| c.accepts),
        );
        reg.register(
            "halyard_source_refused",
            "Of those, connections closed at accept by a limit, per top-K source",
            per_source(|c| c.refused),
        );
        reg.register(
            "halyard_source_connects",
            "CONNECT packets received, per top-K source",
            per_source(|c| c.connects),
        );
        reg.register(
            "halyard_source_sessions",
            "CONNECTs accepted (session started or resumed), per top-K source",
            per_source(|c| c.sessions),
        );
    }
}

/// Counts each of `events` for `ip` in the broker's per-source table, in one record (nothing
/// before `start_for`).
pub fn count(metrics: &Metrics, ip: IpAddr, events: &[SourceEvent]) {
    if let Some(rt) = metrics.xdp.get() {
        rt.sources.record_each(ip, events);
    }
}

/// Counts a TCP connection accepted from `ip` (the accept loop, before any limit).
pub fn count_accept(metrics: &Metrics, ip: IpAddr) {
    count(metrics, ip, &[SourceEvent::Accepted]);
}

/// Counts a connection from `ip` closed at accept by a limit.
pub fn count_refused(metrics: &Metrics, ip: IpAddr) {
    count(metrics, ip, &[SourceEvent::Refused]);
}

/// Counts a CONNECT received on the socket of `slot` (`None`: a socket without a source)
/// once it was answered, and with it the session it started (`claimed`: it passed the
/// checks, claimed its session and was not refused since): one record for both.
pub fn count_connect(metrics: &Metrics, slot: Option<&SourceSlot>, claimed: bool) {
    let Some(slot) = slot else {
        return;
    };
    let events: &[SourceEvent] = if claimed {
        &[SourceEvent::Connect, SourceEvent::Session]
    } else {
        &[SourceEvent::Connect]
    };
    count(metrics, slot.ip(), events);
}

/// Starts XDP on the ports of `listeners` (the MQTT listeners) and the per-source table
/// (`limits.max_accounted_sources`), and hands them to `metrics`, which serves them on
/// `/metrics`, `/status` and `/xdp`. Called once by `run::start`, before any accept.
pub fn start_for(metrics: &Metrics, config: &Config, listeners: &[std::net::TcpListener]) {
    let mut ports: Vec<u16> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let rt = XdpRuntime::start(&config.xdp, &ports, config.limits.max_accounted_sources);
    let _ = metrics.xdp.set(Arc::new(rt));
}

/// One counter per source address, labelled `source`.
fn source_family<A: std::fmt::Display>(
    values: impl Iterator<Item = (A, u64)>,
) -> Family<Vec<(String, String)>, Counter> {
    let fam = Family::<Vec<(String, String)>, Counter>::default();
    for (source, v) in values {
        fam.get_or_create(&vec![("source".into(), source.to_string())])
            .inc_by(v);
    }
    fam
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rt: &XdpRuntime) -> String {
        let mut reg = Registry::default();
        rt.register(&mut reg);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        text
    }

    #[test]
    fn disabled_in_config_is_reported_and_exported() {
        let rt = XdpRuntime::start(&XdpConfig::default(), &[1883], 100);
        assert!(!rt.status().enabled);
        assert!(
            rt.status()
                .reason
                .as_deref()
                .unwrap()
                .contains("xdp.enabled")
        );
        let text = encode(&rt);
        for needle in [
            "halyard_xdp_enabled 0\n",
            "halyard_xdp_syn_total 0\n",
            "halyard_xdp_packets_total 0\n",
            "halyard_xdp_bytes_total 0\n",
            "halyard_xdp_syn_dropped_total 0\n",
            "halyard_xdp_tracked_sources 0\n",
            "halyard_source_tracked 0\n",
            "halyard_source_evictions_total 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let report: XdpReport = serde_json::from_str(&rt.report_json()).unwrap();
        assert!(report.snapshot.is_none());
        assert!(render(&report).1.unwrap().contains("xdp.enabled = false"));
    }

    #[test]
    fn broker_counts_are_exported_without_xdp() {
        let rt = XdpRuntime::start(&XdpConfig::default(), &[1883], 100);
        let (a, b): (IpAddr, IpAddr) = (
            "::ffff:10.1.2.3".parse().unwrap(),
            "fd00::2".parse().unwrap(),
        );
        for _ in 0..5 {
            rt.sources().record(a, SourceEvent::Accepted);
        }
        rt.sources().record(a, SourceEvent::Refused);
        for _ in 0..3 {
            rt.sources().record(a, SourceEvent::Connect);
        }
        rt.sources().record(a, SourceEvent::Session);
        rt.sources().record(b, SourceEvent::Accepted);
        let text = encode(&rt);
        for needle in [
            "halyard_source_tracked 2\n",
            "halyard_source_accepts_total{source=\"10.1.2.3\"} 5\n",
            "halyard_source_refused_total{source=\"10.1.2.3\"} 1\n",
            "halyard_source_connects_total{source=\"10.1.2.3\"} 3\n",
            "halyard_source_sessions_total{source=\"10.1.2.3\"} 1\n",
            "halyard_source_accepts_total{source=\"fd00::2\"} 1\n",
            "halyard_source_connects_total{source=\"fd00::2\"} 0\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let summary = rt.sources_summary();
        assert_eq!(summary.tracked, 2);
        assert_eq!(summary.max, 100);
        assert_eq!(summary.top[0].source, "10.1.2.3".parse::<IpAddr>().unwrap());
        let report = rt.report();
        let rows: Vec<(String, Option<XdpCounters>, u64)> = report
            .sources
            .rows
            .iter()
            .map(|r| (r.source.to_string(), r.xdp, r.broker.accepts))
            .collect();
        assert_eq!(
            rows,
            [("10.1.2.3".into(), None, 5), ("fd00::2".into(), None, 1)]
        );
    }

    #[test]
    fn per_source_series_are_bounded_by_top_k() {
        let cfg = XdpConfig {
            top_k: 3,
            ..XdpConfig::default()
        };
        let rt = XdpRuntime::start(&cfg, &[1883], 1000);
        for i in 0..50u32 {
            for _ in 0..=i {
                rt.sources()
                    .record(IpAddr::V4((0x0a00_0000 + i).into()), SourceEvent::Accepted);
            }
        }
        let text = encode(&rt);
        let series = text
            .lines()
            .filter(|l| l.starts_with("halyard_source_accepts_total{"))
            .count();
        assert_eq!(series, 3, "{text}");
        assert!(text.contains("halyard_source_accepts_total{source=\"10.0.0.49\"} 50\n"));
        assert!(text.contains("halyard_source_tracked 50\n"));
        assert_eq!(rt.sources_summary().top.len(), 3);
    }

    #[test]
    fn missing_interface_is_the_reason() {
        let cfg = XdpConfig {
            enabled: true,
            interfaces: vec!["hxnope0".into()],
            ..XdpConfig::default()
        };
        let rt = XdpRuntime::start(&cfg, &[1883], 100);
        assert!(!rt.status().enabled);
        assert!(rt.status().reason.as_deref().unwrap().contains("hxnope0"));
    }
}
