//! The cluster listener: accepts connections and dispatches on their [`Hello`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

use crate::error::ClusterError;
use crate::node::Shared;
use crate::wire::{
    Hello, Identity, RaftRequest, RaftResponse, WriteRequest, WriteResponse, read_frame,
    write_frame,
};

/// Most connections served at once by one node's cluster listener; more are closed at once
/// and counted in `connections_refused`.
pub const MAX_CLUSTER_CONNECTIONS: usize = 4096;

/// Accepts until the runtime is dropped.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cluster accept failed");
                tokio::time::sleep(shared.backoff()).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CLUSTER_CONNECTIONS {
            shared
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (shared, open) = (shared.clone(), open.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(&shared, sock).await {
                tracing::debug!(error = %e, "cluster connection closed");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn handle(shared: &Arc<Shared>, mut sock: TcpStream) -> Result<(), ClusterError> {
    let _ = sock.set_nodelay(true);
    let max = shared.max_frame();
    let hello: Hello = read_frame(&mut sock, max).await?;
    match hello {
        Hello::Identify => {
            let initialized = match &shared.core {
                Some(core) => core.raft.is_initialized().await.unwrap_or(false),
                None => false,
            };
            let who = Identity {
                name: shared.me.name.clone(),
                id: shared.id,
                role: shared.me.role,
                addr: shared.me.cluster_addr.clone(),
                initialized,
            };
            write_frame(&mut sock, &who, max).await
        }
        Hello::Raft { .. } => serve_raft(shared, sock).await,
        Hello::Write => loop {
            let req: WriteRequest = read_frame(&mut sock, max).await?;
            let res = crate::writes::submit(shared, req.cmd, req.hops.saturating_add(1)).await;
            let resp = WriteResponse(res.map_err(|e| e.to_string()));
            write_frame(&mut sock, &resp, max).await?;
        },
        Hello::Stream { node, from } => {
            crate::replicant::serve_stream(shared, sock, node, from).await
        }
        Hello::Link { from, epoch } => crate::links::serve_inbound(shared, sock, from, epoch).await,
        Hello::Liveness => {
            let answer = crate::wire::Liveness {
                streaming: crate::autoclean::streaming(shared),
            };
            write_frame(&mut sock, &answer, max).await
        }
        Hello::Sessions => loop {
            let req: crate::wire::SessionRequest = read_frame(&mut sock, max).await?;
            let source = shared.session_source.get().cloned();
            let answer = match source {
                Some(source) => source.take(req.client_id, req.discard).await,
                None => None,
            };
            if answer.is_some() {
                shared
                    .counters
                    .sessions_handed_over
                    .fetch_add(1, Ordering::Relaxed);
            }
            write_frame(&mut sock, &crate::wire::SessionAnswer(answer), max).await?;
        },
    }
}

async fn serve_raft(shared: &Arc<Shared>, mut sock: TcpStream) -> Result<(), ClusterError> {
    let Some(core) = &shared.core else {
        return Err(ClusterError::Protocol("raft rpc to a replicant".into()));
    };
    let max = shared.max_frame();
    loop {
        let req: RaftRequest = read_frame(&mut sock, max).await?;
        let resp = match req {
            RaftRequest::Append(r) => RaftResponse::Append(core.raft.append_entries(r).await),
            RaftRequest::Vote(r) => RaftResponse::Vote(core.raft.vote(r).await),
            RaftRequest::Snapshot(r) => RaftResponse::Snapshot(core.raft.install_snapshot(r).await),
        };
        write_frame(&mut sock, &resp, max).await?;
    }
}
