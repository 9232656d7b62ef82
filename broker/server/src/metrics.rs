//! Broker counters: plain atomics, one [`ThreadStats`] per I/O thread (written only by that
//! thread, so no cache line is shared on the hot path) plus a few node-wide gauges. The admin
//! server turns a snapshot into Prometheus text with prometheus-client; nothing else in the
//! workspace knows about Prometheus.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub mod store;

/// Why a message was not delivered (`halyard_messages_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// A session's queue was full (`mqtt.max_queued_messages`).
    QueueFull = 0,
    /// A destination thread's inbox was full (`limits.inbox_capacity`); QoS 0 only.
    InboxFull = 1,
    /// The message expired before it could be sent (Message Expiry Interval).
    Expired = 2,
    /// The message exceeded the receiver's Maximum Packet Size.
    TooLarge = 3,
    /// The destination session disappeared before the delivery arrived.
    SessionGone = 4,
    /// A QoS 0 message met a full output backlog (slow consumer).
    OutputFull = 5,
    /// A QoS 0 message for an offline session (not queued).
    Qos0Offline = 6,
}

impl DropReason {
    /// Label values, indexed by the discriminant.
    pub const LABELS: [&'static str; 7] = [
        "queue_full",
        "inbox_full",
        "expired",
        "too_large",
        "session_gone",
        "output_full",
        "qos0_offline",
    ];
}

/// A configured limit that was hit (`halyard_limit_hits_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Limit {
    /// `limits.max_connections`.
    MaxConnections = 0,
    /// `limits.max_sessions`.
    MaxSessions = 1,
    /// `limits.max_retained_messages`.
    MaxRetainedMessages = 2,
    /// `limits.inbox_capacity`.
    InboxCapacity = 3,
    /// `limits.max_write_buffer_bytes`.
    MaxWriteBufferBytes = 4,
    /// `mqtt.max_queued_messages`.
    MaxQueuedMessages = 5,
    /// `mqtt.max_packet_size` (a client sent a larger packet).
    MaxPacketSize = 6,
    /// `limits.write_timeout_secs` (a client stopped reading; closed).
    WriteTimeout = 7,
    /// `mqtt.connect_timeout_secs` (no CONNECT in time; closed).
    ConnectTimeout = 8,
    /// `mqtt.partial_packet_timeout_secs` (a packet stayed half-sent; closed).
    PartialPacketTimeout = 9,
    /// `mqtt.max_subscriptions_per_client` (a SUBSCRIBE entry refused).
    MaxSubscriptions = 10,
    /// `mqtt.max_topic_levels` (a topic name or filter refused).
    MaxTopicLevels = 11,
    /// `mqtt.max_topic_length` (a topic name or filter refused).
    MaxTopicLength = 12,
    /// `io.max_busy_readers` (a busy io_uring connection kept on the poll path).
    MaxBusyReaders = 13,
    /// `listeners.tcp.defer_accept_secs` (the deferral ran out: a connection was handed over
    /// before any of its bytes arrived).
    DeferAccept = 14,
    /// The process's descriptor limit (`RLIMIT_NOFILE`, or the system's file table) refused
    /// an accept: the connection waits in the kernel's accept queue until a descriptor is
    /// free (see `run::accept_loop`).
    OpenFiles = 15,
    /// `engine::publish::SPARE_BATCH_MAX` / `SPARE_BATCHES` and `POOL_BATCH_MAX` /
    /// `POOL_BATCHES_PER_THREAD`: a delivered batch's memory was freed instead of kept for the
    /// next fan-out (too large, or the thread's spares and the shared pool full).
    SpareBatches = 16,
}

impl Limit {
    /// Label values, indexed by the discriminant.
    pub const LABELS: [&'static str; 17] = [
        "max_connections",
        "max_sessions",
        "max_retained_messages",
        "inbox_capacity",
        "max_write_buffer_bytes",
        "max_queued_messages",
        "max_packet_size",
        "write_timeout",
        "connect_timeout",
        "partial_packet_timeout",
        "max_subscriptions",
        "max_topic_levels",
        "max_topic_length",
        "max_busy_readers",
        "defer_accept",
        "open_files",
        "spare_batches",
    ];
}

/// Counters of one I/O thread. Only that thread writes them (Relaxed); the admin server reads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ThreadStats {
    /// Open connections owned by the thread.
    pub connections: AtomicI64,
    /// Connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Open connections parked (idle, state compacted; see `conn::park`).
    pub parked: AtomicI64,
    /// Of those, parked in their task (no epoll registration possible; see `conn::park`).
    pub parked_in_task: AtomicI64,
    /// PUBLISH packets received from clients, by QoS.
    pub received: [AtomicU64; 3],
    /// PUBLISH packets sent to clients, by QoS.
    pub sent: [AtomicU64; 3],
    /// Messages dropped, by [`DropReason`].
    pub dropped: [AtomicU64; 7],
    /// Bytes read from client sockets.
    pub bytes_received: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_sent: AtomicU64,
    /// Times a per-session queue limit was hit.
    pub queue_limit_hits: AtomicU64,
    /// Times each [`Limit`] was hit.
    pub limit_hits: [AtomicU64; Limit::LABELS.len()],
    /// Connections closed for a protocol violation (malformed packet, first packet not
    /// CONNECT, invalid topic, ...).
    pub protocol_errors: AtomicU64,
    /// PUBLISHes, CONNECTs and session writes refused because of the store, by
    /// [`STORE_REFUSED_LABELS`] (0x97 quota or disk full, 0x89 busy, 0x80 other).
    pub store_refused: [AtomicU64; 3],
}

/// Labels of [`ThreadStats::store_refused`].
pub const STORE_REFUSED_LABELS: [&str; 3] = ["0x97", "0x89", "0x80"];

impl ThreadStats {
    /// Counts a dropped message.
    pub fn drop_message(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts a store refusal answered with `code`.
    pub fn store_refused(&self, code: halyard_codec::ReasonCode) {
        let i = match code {
            halyard_codec::ReasonCode::QUOTA_EXCEEDED => 0,
            halyard_codec::ReasonCode::SERVER_BUSY => 1,
            _ => 2,
        };
        self.store_refused[i].fetch_add(1, Relaxed);
    }

    /// Counts a limit hit.
    pub fn hit_limit(&self, limit: Limit) {
        self.limit_hits[limit as usize].fetch_add(1, Relaxed);
    }

    /// Messages received plus sent: the thread's message load.
    pub fn messages_total(&self) -> u64 {
        self.received
            .iter()
            .chain(self.sent.iter())
            .map(|c| c.load(Relaxed))
            .sum()
    }
}

/// Node-wide metrics.
#[derive(Debug)]
pub struct Metrics {
    /// One entry per I/O thread, indexed by thread number.
    pub threads: Vec<ThreadStats>,
    /// Sessions in the registry (connected or offline).
    pub sessions: AtomicI64,
    /// Subscriptions in the trie.
    pub subscriptions: AtomicI64,
    /// Retained messages stored.
    pub retained: AtomicI64,
    /// The io driver actually in use ("uring" or "epoll"), set when the threads start.
    pub backend: OnceLock<&'static str>,
    /// When the broker started.
    pub started: Instant,
    /// XDP accounting (`halyard_xdp_*`), set once at start.
    pub xdp: OnceLock<Arc<crate::xdp::XdpRuntime>>,
    /// Auth/ACL refusals and the abuse limits' hit counts, set once at start.
    pub security: OnceLock<Arc<crate::security::Security>>,
    /// TLS/WebSocket counters of the optional listeners.
    pub transport: crate::listeners::TransportCounters,
    /// The durable store (`halyard_store_*` and `/status` counts), set once at start.
    pub store: OnceLock<Arc<halyard_store::StoreStats>>,
    /// The cluster wiring (`halyard_cluster_*`), when clustered.
    pub cluster: OnceLock<Arc<crate::cluster::Cluster>>,
}

impl Metrics {
    /// Metrics for `threads` I/O threads.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: (0..threads).map(|_| ThreadStats::default()).collect(),
            sessions: AtomicI64::new(0),
            subscriptions: AtomicI64::new(0),
            retained: AtomicI64::new(0),
            backend: OnceLock::new(),
            started: Instant::now(),
            xdp: OnceLock::new(),
            security: OnceLock::new(),
            transport: crate::listeners::TransportCounters::default(),
            store: OnceLock::new(),
            cluster: OnceLock::new(),
        }
    }

    /// Open connections on all threads.
    pub fn connections(&self) -> i64 {
        self.threads
            .iter()
            .map(|t| t.connections.load(Relaxed))
            .sum()
    }

    fn sum(&self, f: impl Fn(&ThreadStats) -> u64) -> u64 {
        self.threads.iter().map(f).sum()
    }

    /// Summed counters for `/status`.
    pub fn totals(&self) -> Totals {
        Totals {
            connections: self.connections(),
            connections_accepted: self.sum(|t| t.connections_accepted.load(Relaxed)),
            sessions: self.sessions.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            retained: self.retained.load(Relaxed),
            messages_received: self.sum(|t| t.received.iter().map(|c| c.load(Relaxed)).sum()),
            messages_sent: self.sum(|t| t.sent.iter().map(|c| c.load(Relaxed)).sum()),
            messages_dropped: self.sum(|t| t.dropped.iter().map(|c| c.load(Relaxed)).sum()),
        }
    }

    /// Encodes every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut reg = Registry::default();
        self.register_gauges(&mut reg);
        self.register_counters(&mut reg);
        self.register_per_thread(&mut reg);
        crate::tune::register(&mut reg);
        if let Some(xdp) = self.xdp.get() {
            xdp.register(&mut reg);
        }
        store::register(self, &mut reg);
        if let Some(c) = self.cluster.get() {
            c.register(&mut reg);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &reg).expect("fmt to String");
        out
    }

    fn register_gauges(&self, reg: &mut Registry) {
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        reg.register(
            "halyard_connections",
            "Open client connections",
            gauge(self.connections()),
        );
        reg.register(
            "halyard_connections_total",
            "Client connections accepted since start",
            UntypedTotal(self.sum(|t| t.connections_accepted.load(Relaxed))),
        );
        reg.register(
            "halyard_connections_parked",
            "Open client connections parked while idle (state compacted, io.park_idle_connections)",
            gauge(self.threads.iter().map(|t| t.parked.load(Relaxed)).sum()),
        );
        reg.register(
            "halyard_connections_parked_in_task",
            "Of the parked connections, those waiting in their own task (not in the thread's epoll set)",
            gauge(
                self.threads
                    .iter()
                    .map(|t| t.parked_in_task.load(Relaxed))
                    .sum(),
            ),
        );
        reg.register(
            "halyard_sessions",
            "Sessions held (connected or offline)",
            gauge(self.sessions.load(Relaxed)),
        );
        reg.register(
            "halyard_subscriptions",
            "Subscriptions in the subscription trie",
            gauge(self.subscriptions.load(Relaxed)),
        );
        reg.register(
            "halyard_retained_messages",
            "Retained messages stored",
            gauge(self.retained.load(Relaxed)),
        );
        let backend = Family::<Vec<(String, String)>, Gauge>::default();
        let active = self.backend.get().copied().unwrap_or("none");
        for name in ["uring", "epoll"] {
            backend
                .get_or_create(&vec![("backend".into(), name.into())])
                .set(i64::from(name == active));
        }
        reg.register("halyard_io_backend", "1 for the io driver in use", backend);
    }

    fn register_counters(&self, reg: &mut Registry) {
        let by_qos = |f: &dyn Fn(&ThreadStats) -> &[AtomicU64; 3]| {
            let fam = Family::<Vec<(String, String)>, Counter>::default();
            for qos in 0..3 {
                fam.get_or_create(&vec![("qos".into(), qos.to_string())])
                    .inc_by(self.sum(|t| f(t)[qos].load(Relaxed)));
            }
            fam
        };
        reg.register(
            "halyard_messages_received",
            "PUBLISH packets received from clients",
            by_qos(&|t| &t.received),
        );
        reg.register(
            "halyard_messages_sent",
            "PUBLISH packets sent to clients",
            by_qos(&|t| &t.sent),
        );
        let labelled = |key: &str, labels: &[&str], f: &dyn Fn(&ThreadStats, usize) -> u64| {
            let fam = Family::<Vec<(String, String)>, Counter>::default();
            for (i, label) in labels.iter().enumerate() {
                fam.get_or_create(&vec![(key.into(), (*label).into())])
                    .inc_by(self.sum(|t| f(t, i)));
            }
            fam
        };
        reg.register(
            "halyard_messages_dropped",
            "Messages not delivered, by reason",
            labelled("reason", &DropReason::LABELS, &|t, i| {
                t.dropped[i].load(Relaxed)
            }),
        );
        let limit_hits = labelled("limit", &Limit::LABELS, &|t, i| {
            t.limit_hits[i].load(Relaxed)
        });
        if let Some(security) = self.security.get() {
            for (name, n) in security.guard().counters().named() {
                limit_hits
                    .get_or_create(&vec![("limit".into(), name.into())])
                    .inc_by(n);
            }
            let denials = Family::<Vec<(String, String)>, Counter>::default();
            for (label, n) in crate::security::Denial::LABELS
                .iter()
                .zip(security.denials())
            {
                denials
                    .get_or_create(&vec![("reason".into(), (*label).into())])
                    .inc_by(n);
            }
            reg.register(
                "halyard_auth_denials",
                "CONNECTs, PUBLISHes, SUBSCRIBEs and deliveries refused by auth or the ACL",
                denials,
            );
        }
        for (name, n) in self.transport.limit_hits() {
            limit_hits
                .get_or_create(&vec![("limit".into(), name.into())])
                .inc_by(n);
        }
        let reloads = Family::<Vec<(String, String)>, Counter>::default();
        for (result, c) in [
            ("ok", &self.transport.reloads_ok),
            ("error", &self.transport.reloads_failed),
        ] {
            reloads
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(c.load(Relaxed));
        }
        reg.register(
            "halyard_tls_reloads",
            "TLS reloads on SIGHUP, by result",
            reloads,
        );
        for (name, help, v) in self.transport.named() {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            reg.register(name, help, c);
        }
        reg.register(
            "halyard_limit_hits",
            "Times a configured limit was hit, by limit",
            limit_hits,
        );
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        reg.register(
            "halyard_bytes_received",
            "Bytes read from client sockets",
            counter(self.sum(|t| t.bytes_received.load(Relaxed))),
        );
        reg.register(
            "halyard_bytes_sent",
            "Bytes written to client sockets",
            counter(self.sum(|t| t.bytes_sent.load(Relaxed))),
        );
        reg.register(
            "halyard_queue_limit_hits",
            "Times a per-session queue was full",
            counter(self.sum(|t| t.queue_limit_hits.load(Relaxed))),
        );
        reg.register(
            "halyard_protocol_errors",
            "Connections closed because the client broke the protocol",
            counter(self.sum(|t| t.protocol_errors.load(Relaxed))),
        );
    }

    fn register_per_thread(&self, reg: &mut Registry) {
        let conns = Family::<Vec<(String, String)>, Gauge>::default();
        let msgs = Family::<Vec<(String, String)>, Counter>::default();
        for (i, t) in self.threads.iter().enumerate() {
            let label = vec![("thread".to_string(), i.to_string())];
            conns.get_or_create(&label).set(t.connections.load(Relaxed));
            msgs.get_or_create(&label).inc_by(t.messages_total());
        }
        reg.register(
            "halyard_thread_connections",
            "Open connections per I/O thread",
            conns,
        );
        reg.register(
            "halyard_thread_messages",
            "Messages received plus sent per I/O thread",
            msgs,
        );
    }
}

/// Summed counters, for `/status`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Totals {
    /// Open connections.
    pub connections: i64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Sessions held.
    pub sessions: i64,
    /// Subscriptions.
    pub subscriptions: i64,
    /// Retained messages.
    pub retained: i64,
    /// PUBLISH packets received.
    pub messages_received: u64,
    /// PUBLISH packets sent.
    pub messages_sent: u64,
    /// Messages dropped.
    pub messages_dropped: u64,
}

/// A monotonically increasing value exported under a name that already ends in `_total`
/// without the OpenMetrics counter type: a counter family named `halyard_connections` would
/// collide with the `halyard_connections` gauge.
#[derive(Debug)]
struct UntypedTotal(u64);

impl EncodeMetric for UntypedTotal {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.0 as i64))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_name() {
        let m = Metrics::new(2);
        m.threads[1].connections.fetch_add(3, Relaxed);
        m.threads[0].received[1].fetch_add(5, Relaxed);
        m.threads[1].drop_message(DropReason::QueueFull);
        m.threads[0].hit_limit(Limit::MaxConnections);
        let _ = m.backend.set("epoll");
        let text = m.encode();
        for needle in [
            "halyard_connections 3\n",
            "halyard_connections_total 0\n",
            "halyard_sessions 0\n",
            "halyard_subscriptions 0\n",
            "halyard_retained_messages 0\n",
            "halyard_messages_received_total{qos=\"1\"} 5\n",
            "halyard_messages_sent_total{qos=\"0\"} 0\n",
            "halyard_messages_dropped_total{reason=\"queue_full\"} 1\n",
            "halyard_bytes_received_total 0\n",
            "halyard_bytes_sent_total 0\n",
            "halyard_queue_limit_hits_total 0\n",
            "halyard_protocol_errors_total 0\n",
            "halyard_limit_hits_total{limit=\"partial_packet_timeout\"} 0\n",
            "halyard_thread_connections{thread=\"1\"} 3\n",
            "halyard_thread_messages_total{thread=\"0\"} 5\n",
            "halyard_io_backend{backend=\"epoll\"} 1\n",
            "halyard_io_backend{backend=\"uring\"} 0\n",
            "halyard_limit_hits_total{limit=\"max_connections\"} 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
