//! Persistent sessions that follow their client across nodes: a client connecting to this
//! node asks every other node for its session (`ClusterNode::take_session`, over pooled
//! connections) before its
//! CONNECT claims one here. A node that has it takes it from its connection (which is
//! disconnected with 0x8E Session taken over) or from its offline table, exactly as a local
//! takeover does, but towards an export ([`EXPORT_THREAD`]); removes its subscriptions,
//! registry entry and stored state; and sends it encoded ([`Transfer`]: the store's session
//! record and queue, the same form a restart reads back). This node registers it offline
//! on the connection's thread with its subscriptions (and stores it, store on), then the
//! CONNECT resumes it like any offline session: Session Present 1, in-flight messages
//! resent with DUP, the queue delivered. With Clean Start the other nodes end their copy.
//!
//! Limits: a member that does not answer within `cluster.write_timeout_ms` is skipped
//! (counted), so the client gets a new session if its old node is unreachable; messages
//! published while the session is in transit (between the old node removing its
//! subscriptions and this node's routes being committed: a few milliseconds) find no
//! subscriber and are not delivered to it; the old node deletes its stored copy before this
//! node stored its own, so a crash of both in that window loses the session.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use halyard_cluster::SessionSource;
use halyard_session::{Session, SessionConfig};
use halyard_store::{SessionRecord, StoredMessage};
use serde::{Deserialize, Serialize};

use crate::durable::{self, QueueLedger, convert};
use crate::engine::thread::ThreadCtx;
use crate::engine::{Broker, ConnRef, EXPORT_THREAD, Moving, ThreadMsg};

/// Format version of [`Transfer`]; a node refuses other versions (the client then starts
/// a new session).
const TRANSFER_VERSION: u8 = 1;

/// A session on the wire between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Transfer {
    version: u8,
    record: SessionRecord,
    queued: Vec<StoredMessage>,
}

/// The server's [`SessionSource`]: hands this node's sessions to other nodes.
pub(super) struct Sessions {
    pub broker: Weak<Broker>,
}

impl SessionSource for Sessions {
    fn take(
        &self,
        client_id: String,
        discard: bool,
    ) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>> {
        let broker = self.broker.upgrade();
        Box::pin(async move { export(&broker?, &client_id, discard).await })
    }
}

/// Takes `client_id`'s session away from this node (see the module documentation); the
/// encoded session unless `discard`.
async fn export(broker: &Arc<Broker>, client_id: &str, discard: bool) -> Option<Vec<u8>> {
    let me = ConnRef {
        thread: EXPORT_THREAD,
        conn: broker.next_conn_id(),
    };
    let (key, thread, rx) = broker.claim_export(client_id, me)?;
    broker.send_to(thread, ThreadMsg::Release { key }).await;
    let bound = match broker.cluster.get() {
        Some(c) => Duration::from_millis(c.node.config().write_timeout_ms),
        None => Duration::from_secs(5),
    };
    let got = tokio::time::timeout(bound, rx.recv_async()).await;
    broker.drop_export(me.conn);
    let moving = match got {
        Ok(Ok(Some((_, moving)))) => moving,
        Ok(Ok(None)) | Ok(Err(_)) => {
            // The session ended as its connection closed (expiry 0).
            let mut reg = broker.registry();
            if reg
                .get(client_id)
                .is_some_and(|e| e.key == key && e.conn == Some(me))
            {
                reg.remove(client_id);
            }
            broker.update_session_gauge(reg.len());
            return None;
        }
        Err(_) => {
            // Not released in time: it stays here (parked offline when it arrives).
            tracing::warn!(
                client_id,
                "session takeover: not released in time; kept here"
            );
            let mut reg = broker.registry();
            if let Some(e) = reg.get_mut(client_id)
                && e.key == key
                && e.conn == Some(me)
            {
                e.conn = None;
            }
            return None;
        }
    };
    {
        let mut reg = broker.registry();
        if reg.get(client_id).is_some_and(|e| e.key == key) {
            reg.remove(client_id);
        }
        broker.update_session_gauge(reg.len());
    }
    let filters: Vec<String> = moving.session.subscriptions().filters();
    broker.remove_subscriptions(key, filters.iter().map(String::as_str));
    if broker.durable.is_enabled()
        && let Err(e) = broker.durable.delete_session(client_id).await
    {
        tracing::warn!(client_id, error = %e, "handed-over session not removed from the store");
    }
    if discard {
        return None;
    }
    match encode(&moving) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(client_id, error = %e, "session takeover: not encoded; ended");
            None
        }
    }
}

/// The session as sent to another node.
fn encode(m: &Moving) -> Result<Vec<u8>, postcard::Error> {
    let now = Instant::now();
    let clock = durable::wall_clock(now);
    let parts = m.session.to_parts();
    let transfer = Transfer {
        version: TRANSFER_VERSION,
        record: convert::parts_to_record(&parts, m.protocol_version, Some(now), &clock),
        queued: parts
            .queued
            .iter()
            .map(|d| convert::delivery_to_stored(d, None, &clock))
            .collect(),
    };
    postcard::to_allocvec(&transfer)
}

/// A session another node sent (network input: errors, never a panic).
fn decode(bytes: &[u8], cfg: &SessionConfig) -> Result<Box<Moving>, String> {
    let t: Transfer = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
    if t.version != TRANSFER_VERSION {
        return Err(format!(
            "transfer format {} (expected {TRANSFER_VERSION})",
            t.version
        ));
    }
    let clock = durable::wall_clock(Instant::now());
    let mut queued = Vec::with_capacity(t.queued.len());
    for s in t.queued {
        let (d, _) = convert::stored_to_delivery(s, &clock).map_err(|e| e.to_string())?;
        queued.push(d);
    }
    let protocol_version = t.record.protocol_version;
    let parts = convert::record_to_parts(t.record, queued, &clock).map_err(|e| e.to_string())?;
    let session = Session::from_parts(parts, cfg).map_err(|e| e.to_string())?;
    Ok(Box::new(Moving {
        session,
        ledger: QueueLedger::default(),
        protocol_version,
    }))
}

/// Before a CONNECT claims a session here: fetches `client_id`'s session from the other
/// nodes (or, with `clean_start`, has them end it) and, when one arrives, registers it
/// offline on `ctx`'s thread (stored first, store on), so that the claim resumes it.
pub async fn import(ctx: &Rc<ThreadCtx>, client_id: &str, clean_start: bool) {
    let broker = &ctx.broker;
    let Some(cluster) = broker.cluster.get() else {
        return;
    };
    if !broker.config.cluster.session_takeover || !broker.is_unregistered(client_id) {
        return;
    }
    let Some(bytes) = cluster.node.take_session(client_id, clean_start).await else {
        return;
    };
    if clean_start {
        return;
    }
    let mut moving = match decode(&bytes, &broker.session_config) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(client_id, error = %e, "session from another node refused; a new one starts");
            return;
        }
    };
    if broker.durable.is_enabled() && moving.session.expiry_interval() > 0 {
        let now = Instant::now();
        let clock = durable::wall_clock(now);
        let pv = moving.protocol_version;
        let stored = broker
            .durable
            .persist_session(&mut moving.session, pv, Some(now), &clock)
            .await;
        match stored {
            Ok(c) => {
                // Stored anew: the queue entries' numbers fix the packet ids.
                moving.session.set_queued_packet_ids(
                    c.seqs.iter().map(|seq| seq.map(durable::packet_id_for)),
                );
                moving.ledger = QueueLedger::from_seqs(c.seqs.into_iter().flatten());
            }
            Err(e) => {
                tracing::warn!(client_id, error = %e, "session from another node not stored");
            }
        }
    }
    if !ctx.adopt(moving) {
        tracing::debug!(
            client_id,
            "a session appeared here meanwhile; the handed-over one dropped"
        );
        return;
    }
    // As for a SUBACK: its subscriptions are routed here before the CONNACK.
    super::route_barrier(broker).await;
}
