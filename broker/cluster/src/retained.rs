//! Retained messages as cluster-wide state: the proposer's checks before a change enters
//! the batcher, and the leader's expiry sweep.
//!
//! Retained messages live in the replicated [`crate::ClusterState`] next to the routes:
//! cores apply them through Raft and keep them in their durable snapshots, replicants get
//! them in their bootstrap snapshot and the commit stream, and every node hands them to the
//! server through its [`crate::RetainedSink`]. Applying stays deterministic: a message's
//! expiry is an absolute wall-clock time chosen by the publishing node, and only the leader
//! reads the clock, to propose [`RetainedOp::Expire`] for the messages whose time passed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::ClusterError;
use crate::node::Shared;
use crate::types::{Command, RetainedBatch, RetainedOp};

/// Checks a change against the caps as applied on this node (unless that state is locked
/// right now), and a `Set` against the largest log entry. Concurrent proposals from other nodes may still fill the caps first;
/// the state machine enforces them again, deterministically.
pub(crate) fn check(shared: &Shared, op: &RetainedOp) -> Result<(), ClusterError> {
    let RetainedOp::Set { topic, message } = op else {
        return Ok(());
    };
    let max_entry = crate::writes::max_entry_bytes(&shared.cfg);
    let size = crate::writes::retained_bytes(std::slice::from_ref(op));
    if size > max_entry {
        return Err(ClusterError::RetainedFull(format!(
            "{size} bytes exceed a log entry's {max_entry}"
        )));
    }
    // Called on the data plane: when the state is being applied to right now, skip the
    // cap check rather than wait (the state machine enforces the caps anyway).
    let Some(g) = shared.hub.try_lock() else {
        return Ok(());
    };
    let state = g.replica.state();
    let old = state.retained(topic).map(|m| m.cost(topic));
    let new = message.cost(topic);
    if old.is_none() && state.retained_count() >= shared.cfg.retained_max_messages {
        return Err(ClusterError::RetainedFull(format!(
            "cluster.retained_max_messages ({}) reached",
            shared.cfg.retained_max_messages
        )));
    }
    let after = state.retained_bytes() - old.unwrap_or(0) + new;
    if new > old.unwrap_or(0) && after > shared.cfg.retained_max_bytes as u64 {
        return Err(ClusterError::RetainedFull(format!(
            "cluster.retained_max_bytes ({}) reached",
            shared.cfg.retained_max_bytes
        )));
    }
    Ok(())
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Cores: while this core leads, every `cluster.retained_expiry_interval_ms` proposes the
/// removal of the retained messages whose expiry passed (at most `route_batch_max` per
/// entry). Runs until the runtime stops.
pub(crate) async fn expiry_task(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.cfg.retained_expiry_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !crate::autoclean::is_leader(&shared) {
            continue;
        }
        let ops = {
            let g = shared.hub.lock();
            g.replica
                .state()
                .expired_retained(now_unix_ms(), shared.cfg.route_batch_max)
        };
        if ops.is_empty() {
            continue;
        }
        let n = ops.len() as u64;
        let cmd = Command::Retained(RetainedBatch {
            ops,
            max_messages: shared.cfg.retained_max_messages as u64,
            max_bytes: shared.cfg.retained_max_bytes as u64,
        });
        match crate::writes::submit(&shared, cmd, 0).await {
            Ok(_) => {
                shared
                    .counters
                    .retained_expired
                    .fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "expired retained messages not removed yet"),
        }
    }
}
