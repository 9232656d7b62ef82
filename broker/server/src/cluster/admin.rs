//! Cluster membership on the admin HTTP server (all `POST`, bearer token as elsewhere):
//! - `/cluster/leave`: this node leaves (its member record and routes are removed);
//! - `/cluster/join` with the new core's cluster address as the body: on the leader, adds
//!   that core to the voters (learner first, then joint consensus);
//! - `/cluster/remove/{id}`: on the leader, removes core `id` from the voters and its routes;
//! - `/cluster/evict/{id}`: removes node `id`'s member record and routes (a node gone for good).
//!
//! Each answers `200` with the committed log index, `409` with the cluster's error, `404`
//! on a single node. The await happens on the admin thread's runtime, never an I/O thread.

use std::sync::Arc;

use halyard_cluster::{ClusterError, LogIndex};

use super::Cluster;
use crate::admin::http::Request;

type Reply = (u16, &'static str, String);

fn done(r: Result<LogIndex, ClusterError>) -> Reply {
    match r {
        Ok(i) => (200, "application/json", format!("{{\"index\":{i}}}\n")),
        Err(e) => (409, "text/plain", format!("{e}\n")),
    }
}

/// Answers one `/cluster/...` request.
pub async fn route(cluster: Option<&Arc<Cluster>>, req: &Request) -> Reply {
    let Some(c) = cluster else {
        return (404, "text/plain", "cluster not configured\n".into());
    };
    if req.method != "POST" {
        return (405, "text/plain", "method not allowed\n".into());
    }
    let node = c.node();
    let id = |p: &str| -> Option<u64> { req.path.strip_prefix(p)?.parse().ok() };
    match req.path.as_str() {
        "/cluster/leave" => done(node.leave().await),
        "/cluster/join" => {
            let addr = String::from_utf8_lossy(&req.body).trim().to_string();
            if addr.is_empty() {
                return (
                    400,
                    "text/plain",
                    "body: the new core's cluster address\n".into(),
                );
            }
            done(node.add_core(addr).await)
        }
        p if p.starts_with("/cluster/remove/") => match id("/cluster/remove/") {
            Some(n) => done(node.remove_core(n).await),
            None => (
                400,
                "text/plain",
                "expected /cluster/remove/{node id}\n".into(),
            ),
        },
        p if p.starts_with("/cluster/evict/") => match id("/cluster/evict/") {
            Some(n) => done(node.evict(n).await),
            None => (
                400,
                "text/plain",
                "expected /cluster/evict/{node id}\n".into(),
            ),
        },
        _ => (404, "text/plain", "not found\n".into()),
    }
}
