//! Operations views of the cluster wiring: the `/status` section and the
//! `halyard_cluster_*` metrics (the library's figures plus the wiring's own counters).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Cluster;

fn gauge(v: f64) -> Gauge<f64, AtomicU64> {
    let g = Gauge::<f64, AtomicU64>::default();
    g.set(v);
    g
}

impl Cluster {
    /// The `cluster` section of `/status`: the library's [`halyard_cluster::ClusterStatus`]
    /// plus the wiring's counters.
    pub fn status_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.node.status()).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut v {
            let s = &self.stats;
            for (k, c) in [
                ("forwarded", &s.forwarded),
                ("forward_dropped", &s.forward_dropped),
                ("ack_failures", &*s.ack_failures),
                ("inbound", &s.inbound),
                ("inbound_malformed", &s.inbound_malformed),
                ("inbound_not_stored", &s.inbound_not_stored),
                ("route_batches", &s.route_batches),
                ("route_failures", &s.route_failures),
                ("retained_failures", &*s.retained_failures),
                ("retained_malformed", &s.retained_malformed),
            ] {
                map.insert(k.to_string(), c.load(Ordering::Relaxed).into());
            }
            let filters = super::lock(&self.book).counts.len();
            map.insert("local_filters".into(), filters.into());
        }
        v
    }

    /// Registers every `halyard_cluster_*` figure as a gauge.
    pub fn register(&self, reg: &mut Registry) {
        for (name, v) in self.node.status().metrics() {
            let short = name.strip_prefix("halyard_").unwrap_or(name);
            reg.register(
                format!("halyard_{short}"),
                format!("cluster figure {short}"),
                gauge(v),
            );
        }
        let s = &self.stats;
        for (name, help, c) in [
            (
                "forwarded",
                "Message copies sent to other nodes",
                &s.forwarded,
            ),
            (
                "forward_dropped",
                "QoS 0 copies dropped (link queue full or node unknown)",
                &s.forward_dropped,
            ),
            (
                "ack_failures",
                "QoS 1/2 copies not acknowledged in time (still resent)",
                &*s.ack_failures,
            ),
            (
                "inbound",
                "Forwarded messages delivered to local sessions",
                &s.inbound,
            ),
            (
                "inbound_malformed",
                "Forwarded messages that could not be decoded",
                &s.inbound_malformed,
            ),
            (
                "inbound_not_stored",
                "Forwarded QoS 1/2 messages for persistent sessions the store refused (held in memory only)",
                &s.inbound_not_stored,
            ),
            (
                "route_batches",
                "Route batches this node proposed",
                &s.route_batches,
            ),
            (
                "route_failures",
                "Route proposals that failed and were retried",
                &s.route_failures,
            ),
            (
                "retained_failures",
                "Retained updates not committed in time (QoS 1/2 publisher got an error)",
                &*s.retained_failures,
            ),
            (
                "retained_malformed",
                "Replicated retained messages this node could not decode",
                &s.retained_malformed,
            ),
        ] {
            reg.register(
                format!("halyard_cluster_wiring_{name}"),
                help,
                gauge(c.load(Ordering::Relaxed) as f64),
            );
        }
    }
}
