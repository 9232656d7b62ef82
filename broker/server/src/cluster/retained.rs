//! Retained messages in a cluster: the replicated state is the truth, this node's
//! `broker.retained` index is its mirror.
//!
//! - A PUBLISH with RETAIN is proposed to the core group ([`Cluster::retain`]): a `Set`
//!   carrying the message in the link encoding (`wire`) and its wall-clock expiry, or a
//!   `Delete` for an empty payload. The local index is not touched then; it changes when the
//!   update is applied here, in the cluster-wide commit order, through [`Mirror`] (the
//!   library's `RetainedSink`), so every node converges on the same message per topic.
//! - A QoS 1/2 publisher's PUBACK/PUBREC waits for the [`RetainWait`]: committed by the core
//!   group and applied on this node (a SUBSCRIBE on this node then finds it). A QoS 0
//!   publisher does not wait; its changes still commit in the order it sent them.
//! - Over `cluster.retained_max_messages` / `retained_max_bytes` the message is delivered
//!   and acknowledged but not retained, as on a single node at `limits.max_retained_messages`
//!   (counted as that limit and in `halyard_cluster_retained_over_limit_total`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use halyard_cluster::{ClusterError, RetainedDelta, RetainedMessage, RetainedOp, RetainedSink};
use halyard_codec::{ProtocolVersion, QoS, ReasonCode};
use halyard_session::Message;

use super::{Cluster, wire};
use crate::engine::Broker;

/// The wait for a retained update to be committed and applied on this node. Resolves to
/// the error when it was not (no leader or quorum within `cluster.write_timeout_ms`, or the
/// retained queue was full).
pub type RetainWait = Pin<Box<dyn Future<Output = Result<(), ClusterError>>>>;

/// Keeps `broker.retained` equal to the retained messages applied on this node.
pub(super) struct Mirror {
    pub broker: Weak<Broker>,
}

impl RetainedSink for Mirror {
    fn apply(&self, changes: &[RetainedDelta]) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let clock = wire::wall_clock();
        for change in changes {
            match change {
                RetainedDelta::Set(topic, m) => {
                    match wire::decode(Bytes::copy_from_slice(&m.body), &clock) {
                        Ok(f) if f.message.topic.as_str() == topic.as_str() => {
                            if let Err(e) = broker.retained.set(topic, f.message) {
                                tracing::warn!(%topic, error = %e, "replicated retained message not kept");
                            }
                        }
                        Ok(_) | Err(_) => {
                            // A node of another version may encode differently: do not
                            // serve a message this node cannot read, nor an older one.
                            broker.retained.remove(topic);
                            if let Some(c) = broker.cluster.get() {
                                c.stats.retained_malformed.fetch_add(1, Ordering::Relaxed);
                            }
                            tracing::warn!(%topic, "replicated retained message undecodable");
                        }
                    }
                }
                RetainedDelta::Removed(topic) => {
                    broker.retained.remove(topic);
                }
            }
        }
        let n = i64::try_from(broker.retained.len()).unwrap_or(i64::MAX);
        broker.metrics.retained.store(n, Ordering::Relaxed);
    }
}

impl Cluster {
    /// Proposes the retained update of `message` (RETAIN set): `Set`, or `Delete` for an
    /// empty payload [MQTT-3.3.1-6]. Enqueued before this returns, so one publisher's
    /// updates commit in the order they were published. `Err` when it was not enqueued:
    /// `RetainedFull` when a cap refused it (the caller counts the limit), `QueueFull`, or
    /// `Stopped`; otherwise the wait for its commit and local apply.
    pub fn retain(&self, message: &Message) -> Result<RetainWait, ClusterError> {
        let op = if message.payload.is_empty() {
            RetainedOp::Delete {
                topic: message.topic.as_str().to_owned(),
            }
        } else {
            let clock = wire::wall_clock();
            RetainedOp::Set {
                topic: message.topic.as_str().to_owned(),
                message: RetainedMessage {
                    expires_at_unix_ms: message.expires_at.map(|at| clock.unix_ms(at)),
                    body: wire::encode(message, false, &[], &clock).to_vec(),
                },
            }
        };
        let proposed = self.node.propose_retained(op)?;
        let node = self.node.clone();
        let failures = self.stats.retained_failures.clone();
        let wait: RetainWait = Box::pin(async move {
            let r = match proposed.await {
                Ok(index) => node.wait_applied(index).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &r {
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "retained update not committed");
            }
            r
        });
        Ok(wait)
    }
}

/// Starts mirroring the replicated retained messages into `broker.retained`.
pub(super) fn attach(broker: &Arc<Broker>, cluster: &Cluster) {
    cluster.node.set_retained_sink(Arc::new(Mirror {
        broker: Arc::downgrade(broker),
    }));
}

/// What a QoS 1/2 PUBLISH waits for before its PUBACK/PUBREC in a cluster: the destination
/// nodes' acknowledgements (`acks`) and the commit of its retained update. `None` for QoS 0
/// (nothing is awaited; the retained update still happens) and when there is nothing to wait
/// for. Resolves to the retained update's error, if any.
pub fn ack_wait(
    qos: QoS,
    acks: Option<super::AckWait>,
    retained: Option<RetainWait>,
) -> Option<RetainWait> {
    let retained = retained.filter(|_| qos != QoS::AtMostOnce);
    if acks.is_none() && retained.is_none() {
        return None;
    }
    let wait: RetainWait = Box::pin(async move {
        let acks = async move {
            if let Some(a) = acks {
                a.await;
            }
        };
        let retained = async move {
            match retained {
                Some(r) => r.await,
                None => Ok(()),
            }
        };
        futures_util::future::join(acks, retained).await.1
    });
    Some(wait)
}

/// The PUBACK/PUBREC reason code of a PUBLISH whose retained update failed: 0x97 (Quota
/// exceeded) when the retained queue was full, else 0x80 (Unspecified error), so the
/// client knows the message was not retained and may publish it again. `None` for MQTT
/// 3.1.1, which cannot refuse a PUBLISH: the caller closes the connection instead of
/// acknowledging (the client then resends it).
pub fn refusal(version: ProtocolVersion, e: &ClusterError) -> Option<ReasonCode> {
    if version != ProtocolVersion::V5 {
        return None;
    }
    Some(match e {
        ClusterError::QueueFull => ReasonCode::QUOTA_EXCEEDED,
        _ => ReasonCode::UNSPECIFIED_ERROR,
    })
}
