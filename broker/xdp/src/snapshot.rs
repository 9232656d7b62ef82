//! What the kernel counted, summed over CPUs, and the `halyard ctl xdp top` table.

use std::{fmt::Write as _, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::config::XdpMode;

/// Counters for TCP segments to the watched ports (totals or one source).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpCounters {
    /// SYN segments without ACK (connection attempts, retransmissions included).
    pub syn: u64,
    /// Segments.
    pub packets: u64,
    /// Bytes of those frames, link-layer header included.
    pub bytes: u64,
    /// SYNs dropped by the per-source rate limit.
    pub syn_dropped: u64,
}

impl XdpCounters {
    pub(crate) fn add(&mut self, other: &Self) {
        self.syn = self.syn.wrapping_add(other.syn);
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.syn_dropped = self.syn_dropped.wrapping_add(other.syn_dropped);
    }
}

/// One source address and its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// The source; IPv4 sources are shown as IPv4.
    pub source: IpAddr,
    /// Its counters, summed over CPUs.
    pub counters: XdpCounters,
}

/// The mode the program ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native mode, run by the driver.
    Driver,
    /// Generic mode, run by the kernel's network stack.
    Skb,
}

impl AttachMode {
    /// `driver` or `skb` (the metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        }
    }

    pub(crate) fn aya(self) -> aya::programs::XdpMode {
        match self {
            Self::Driver => aya::programs::XdpMode::Driver,
            Self::Skb => aya::programs::XdpMode::Skb,
        }
    }

    /// The modes tried, in order, for a configured mode.
    pub(crate) fn attempts(mode: XdpMode) -> &'static [AttachMode] {
        match mode {
            XdpMode::Auto => &[Self::Driver, Self::Skb],
            XdpMode::Driver => &[Self::Driver],
            XdpMode::Skb => &[Self::Skb],
        }
    }
}

/// One interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// How it is attached.
    pub mode: AttachMode,
}

/// A reading of all maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpSnapshot {
    /// Totals over all sources.
    pub totals: XdpCounters,
    /// Source addresses currently in the kernel's table (bounded by `xdp.max_sources`).
    pub tracked_sources: u64,
    /// The busiest sources, by SYNs then packets, at most `xdp.top_k`.
    pub top: Vec<SourceStats>,
    /// Map reads that failed during this snapshot (0 normally).
    pub read_errors: u64,
}

/// Orders sources busiest first: SYNs, then packets, then bytes, then address (stable output).
pub(crate) fn busiest_first(a: &SourceStats, b: &SourceStats) -> std::cmp::Ordering {
    let key = |s: &SourceStats| (s.counters.syn, s.counters.packets, s.counters.bytes);
    key(b).cmp(&key(a)).then_with(|| a.source.cmp(&b.source))
}

/// Formats a snapshot as the `halyard ctl xdp top` table.
pub fn render_top(snapshot: &XdpSnapshot) -> String {
    let t = &snapshot.totals;
    let mut out = format!(
        "XDP totals: {} SYN, {} SYN dropped, {} packets, {} bytes; {} sources tracked\n",
        t.syn, t.syn_dropped, t.packets, t.bytes, snapshot.tracked_sources
    );
    if snapshot.read_errors > 0 {
        let _ = writeln!(out, "warning: {} map reads failed", snapshot.read_errors);
    }
    if snapshot.top.is_empty() {
        out.push_str("no sources seen\n");
        return out;
    }
    let width = snapshot
        .top
        .iter()
        .map(|s| s.source.to_string().len())
        .max()
        .unwrap_or(0)
        .max("SOURCE".len());
    let _ = writeln!(
        out,
        "{:<width$}  {:>12}  {:>12}  {:>12}  {:>14}",
        "SOURCE", "SYN", "SYN_DROPPED", "PACKETS", "BYTES"
    );
    for s in &snapshot.top {
        let c = &s.counters;
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>12}  {:>14}",
            s.source.to_string(),
            c.syn,
            c.syn_dropped,
            c.packets,
            c.bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(ip: &str, syn: u64, packets: u64) -> SourceStats {
        SourceStats {
            source: ip.parse().unwrap(),
            counters: XdpCounters {
                syn,
                packets,
                bytes: packets * 60,
                syn_dropped: 0,
            },
        }
    }

    #[test]
    fn ordering_is_syn_then_packets() {
        let mut v = [
            src("10.0.0.1", 1, 100),
            src("10.0.0.2", 5, 5),
            src("::1", 5, 9),
        ];
        v.sort_by(busiest_first);
        let order: Vec<String> = v.iter().map(|s| s.source.to_string()).collect();
        assert_eq!(order, ["::1", "10.0.0.2", "10.0.0.1"]);
    }

    #[test]
    fn table_lists_each_source() {
        let snap = XdpSnapshot {
            totals: XdpCounters {
                syn: 50,
                packets: 200,
                bytes: 12000,
                syn_dropped: 3,
            },
            tracked_sources: 2,
            top: vec![src("10.203.0.2", 50, 150), src("fd00:203::2", 0, 50)],
            read_errors: 0,
        };
        let text = render_top(&snap);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("50 SYN, 3 SYN dropped, 200 packets"));
        assert!(lines[1].starts_with("SOURCE"));
        assert!(lines[2].starts_with("10.203.0.2 "));
        assert!(
            lines[2]
                .split_whitespace()
                .eq(["10.203.0.2", "50", "0", "150", "9000"])
        );
        assert!(lines[3].starts_with("fd00:203::2"));
        let json = serde_json::to_string(&snap).unwrap();
        assert_eq!(serde_json::from_str::<XdpSnapshot>(&json).unwrap(), snap);
    }

    #[test]
    fn empty_table() {
        let text = render_top(&XdpSnapshot::default());
        assert!(text.contains("no sources seen"));
    }
}
