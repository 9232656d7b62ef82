//! The generator's result: one JSON object per run, read back by the runner.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::tracker::DeliveryCounts;

/// Broker process figures over the measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Broker CPU seconds (utime + stime) spent in the window.
    pub cpu_s: f64,
    /// `cpu_s` / window length: 1.0 = one core fully busy.
    pub cpu_share: f64,
    /// Of `cpu_s`, the seconds spent in the kernel (stime: system calls, and the softirq
    /// work of loopback TCP that runs on the broker's core).
    #[serde(default)]
    pub sys_s: f64,
    /// RSS at the start of the window, KiB.
    pub rss_start_kib: u64,
    /// RSS at the end of the window, KiB.
    pub rss_end_kib: u64,
    /// Peak RSS since the reset at the start of the run, KiB.
    pub peak_rss_kib: u64,
}

/// Figures of the `conn` scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnStats {
    /// Connections that completed CONNECT (and SUBSCRIBE, if asked).
    pub connections: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Seconds from the first connect to the last CONNACK/SUBACK.
    pub connect_s: f64,
    /// `connections / connect_s`.
    pub connect_rate: f64,
    /// Whether each connection also subscribed to its own topic.
    pub subscribed: bool,
    /// Broker RSS before connecting, KiB.
    pub rss_before_kib: u64,
    /// Broker RSS after connecting and the hold time, KiB.
    pub rss_after_kib: u64,
    /// (rss_after - rss_before) / connections, bytes.
    pub rss_per_conn_bytes: f64,
    /// Broker CPU time per connection while connecting, microseconds.
    pub broker_cpu_us_per_conn: f64,
    /// Of `broker_cpu_us_per_conn`, the kernel's part (stime), microseconds.
    #[serde(default)]
    pub broker_sys_us_per_conn: f64,
}

/// Everything one run of `halyard-load` measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// `fanin`, `fanout`, `p2p` or `conn`.
    pub scenario: String,
    /// Subscribers used persistent sessions (`--persistent`: Clean Start 0, Session Expiry
    /// Interval > 0).
    #[serde(default)]
    pub persistent: bool,
    /// MQTT protocol level used (4 or 5).
    pub protocol: u8,
    /// QoS of publishes and subscriptions.
    pub qos: u8,
    /// Payload bytes per message.
    pub payload: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Subscribing connections.
    pub subscribers: usize,
    /// Closed loop: outstanding deliveries allowed per publisher and subscriber (0 = open loop).
    pub window: usize,
    /// Open loop: total publish rate asked for, msgs/s.
    pub rate: Option<f64>,
    /// Generator worker threads.
    pub workers: usize,
    /// Measured window length, seconds.
    pub window_s: f64,
    /// Messages published during the window.
    pub published: u64,
    /// Deliveries received during the window.
    pub delivered: u64,
    /// `delivered / window_s`.
    pub msgs_per_s: f64,
    /// Latency of the deliveries received during the window.
    pub latency: LatencySummary,
    /// Whole-run accounting (warm-up, window and drain).
    pub counts: DeliveryCounts,
    /// Times a closed-loop publisher waited four stall timeouts and wrote its outstanding
    /// deliveries off (they show up as lost unless they still arrive).
    pub stalls: u64,
    /// PINGREQs a closed-loop publisher sent because nothing came back for a stall timeout
    /// (a broker leaving received bytes unread); see `--stall-timeout`.
    pub nudges: u64,
    /// Messages received whose payload was not ours or came from an unexpected publisher.
    pub foreign: u64,
    /// Broker figures (when `--broker-pid` was given).
    pub broker: Option<BrokerStats>,
    /// `delivered / broker.cpu_s`: the figure that survives a noisy shared machine.
    pub deliveries_per_broker_cpu_s: Option<f64>,
    /// The generator's own CPU share over the window (1.0 = one core).
    pub own_cpu_share: f64,
    /// `conn` scenario figures.
    pub conn: Option<ConnStats>,
    /// Share of the host's CPU time stolen by the hypervisor over the window (`steal` in
    /// `/proc/stat`, all CPUs; 0.0-1.0): a slow run on a preempted virtual machine shows
    /// here.
    #[serde(default)]
    pub host_steal_share: Option<f64>,
    /// Open loop: how late messages left against their schedule (the generator's share of
    /// `latency`; microseconds).
    #[serde(default)]
    pub send_lag: Option<LatencySummary>,
    /// Open loop: end-to-end latency counted from when each message actually left (the
    /// headline `latency` counts from its scheduled time, so it includes `send_lag`): the
    /// broker's and the network's share, microseconds.
    #[serde(default)]
    pub latency_from_send: Option<LatencySummary>,
    /// Errors met (connections refused or closed, decode errors); empty on a clean run.
    pub errors: Vec<String>,
}

/// The first non-empty line `cmd args` prints (stdout, then stderr), e.g. a version.
pub fn first_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// The time now, `YYYY-MM-DD HH:MM:SS UTC` (from `date`; empty if it cannot run).
pub fn utc_now() -> String {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_default()
}
