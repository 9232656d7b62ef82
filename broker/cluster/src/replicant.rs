//! The replicant stream: the service every core runs (`subscribe(from_index)`) and the
//! client every replicant runs (`Bootstrap -> LocalReplay -> Normal`, resuming on another
//! core from its applied index after a failure, without a new bootstrap).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tokio::sync::broadcast::error::RecvError;

use crate::error::ClusterError;
use crate::hub::{Applied, StreamStart};
use crate::node::Shared;
use crate::state::ClusterState;
use crate::status::StreamState;
use crate::types::{LogIndex, NodeId};
use crate::wire::{Hello, StreamMsg, read_frame, write_frame};

/// Most bytes of one snapshot a replicant accepts (a named bound on what it buffers).
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

struct StreamGuard<'a>(&'a Shared);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.hub.count_stream(-1);
    }
}

/// Core side: serves one replicant that applied up to `from`.
pub(crate) async fn serve_stream(
    shared: &Arc<Shared>,
    mut sock: TcpStream,
    node: NodeId,
    from: LogIndex,
) -> Result<(), ClusterError> {
    if shared.core.is_none() {
        return Err(ClusterError::Protocol(
            "stream request to a replicant".into(),
        ));
    }
    shared.hub.count_stream(1);
    let _guard = StreamGuard(shared);
    let _seen = crate::autoclean::StreamSeen::new(shared, node);
    let max = shared.max_frame();
    let (start, committed, mut rx) = shared.hub.subscribe(from);
    let mut last = from;
    match start {
        StreamStart::Snapshot(index, state) => {
            // Encoding a large table takes a while: do it off the runtime thread and keep
            // the replicant's idle timer fed meanwhile.
            let mut enc = tokio::task::spawn_blocking(move || state.snapshot());
            let mut tick = tokio::time::interval(shared.heartbeat());
            let bytes = loop {
                tokio::select! {
                    r = &mut enc => break r.map_err(|_| ClusterError::Stopped)?,
                    _ = tick.tick() => {
                        let msg = StreamMsg::Heartbeat { committed };
                        write_frame(&mut sock, &msg, max).await?;
                    }
                }
            };
            tracing::info!(
                replicant = node,
                index,
                bytes = bytes.len(),
                "bootstrapping replicant"
            );
            let chunk = shared.cfg.snapshot_chunk_bytes;
            let mut parts = bytes.chunks(chunk).peekable();
            if parts.peek().is_none() {
                let msg = StreamMsg::Snapshot {
                    index,
                    chunk: Vec::new(),
                    last: true,
                };
                write_frame(&mut sock, &msg, max).await?;
            }
            while let Some(part) = parts.next() {
                let msg = StreamMsg::Snapshot {
                    index,
                    chunk: part.to_vec(),
                    last: parts.peek().is_none(),
                };
                write_frame(&mut sock, &msg, max).await?;
            }
            last = index;
        }
        StreamStart::Replay(entries) => {
            for (index, cmd) in entries {
                let msg = StreamMsg::Entry {
                    index,
                    cmd: cmd.map(|c| (*c).clone()),
                };
                write_frame(&mut sock, &msg, max).await?;
                last = index;
            }
        }
    }
    write_frame(
        &mut sock,
        &StreamMsg::Live {
            committed: committed.max(last),
        },
        max,
    )
    .await?;
    let mut tick = tokio::time::interval(shared.heartbeat());
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(Applied::Entry(index, cmd)) => {
                    if index > last {
                        let msg = StreamMsg::Entry { index, cmd: cmd.map(|c| (*c).clone()) };
                        write_frame(&mut sock, &msg, max).await?;
                        last = index;
                    }
                }
                // A snapshot replaced the state, or this stream fell too far behind: the
                // replicant reconnects and resumes from its index.
                Err(RecvError::Lagged(_)) => {
                    shared.counters.stream_cuts.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(Applied::Reset) | Err(RecvError::Closed) => return Ok(()),
            },
            _ = tick.tick() => {
                let msg = StreamMsg::Heartbeat { committed: shared.hub.applied() };
                write_frame(&mut sock, &msg, max).await?;
            }
        }
    }
}

/// Replicant side: follows a core from the seeds forever (until the runtime is dropped).
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ix = shared.id as usize;
    loop {
        let seeds = shared.discovery.cores();
        let Some(addr) = seeds.get(ix % seeds.len().max(1)) else {
            tokio::time::sleep(shared.backoff()).await;
            continue;
        };
        if let Err(e) = follow(&shared, addr).await {
            tracing::debug!(core = %addr, error = %e, "replicant stream ended");
        }
        shared.set_stream_state(StreamState::Disconnected);
        *shared.upstream.lock().unwrap_or_else(|p| p.into_inner()) = None;
        shared
            .counters
            .stream_reconnects
            .fetch_add(1, Ordering::Relaxed);
        ix += 1;
        tokio::time::sleep(shared.backoff()).await;
    }
}

async fn follow(shared: &Arc<Shared>, addr: &str) -> Result<(), ClusterError> {
    let max = shared.max_frame();
    let mut sock = tokio::time::timeout(shared.connect_timeout(), TcpStream::connect(addr))
        .await
        .map_err(|_| ClusterError::Timeout(shared.cfg.connect_timeout_ms))??;
    let _ = sock.set_nodelay(true);
    let from = shared.hub.applied();
    write_frame(
        &mut sock,
        &Hello::Stream {
            node: shared.id,
            from,
        },
        max,
    )
    .await?;
    *shared.upstream.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
    shared.set_stream_state(StreamState::LocalReplay);
    // No frame (cores send heartbeats) for this long means the core is gone or stuck.
    let silence = std::time::Duration::from_millis(shared.cfg.stream_idle_timeout_ms);
    let mut snapshot: Vec<u8> = Vec::new();
    let mut boot_started = None;
    loop {
        let msg: StreamMsg = tokio::time::timeout(silence, read_frame(&mut sock, max))
            .await
            .map_err(|_| ClusterError::Timeout(silence.as_millis() as u64))??;
        let c = &shared.counters;
        match msg {
            StreamMsg::Snapshot { index, chunk, last } => {
                if boot_started.is_none() {
                    boot_started = Some(std::time::Instant::now());
                    shared.set_stream_state(StreamState::Bootstrap);
                }
                if snapshot.len() + chunk.len() > MAX_SNAPSHOT_BYTES {
                    return Err(ClusterError::FrameTooLarge {
                        len: snapshot.len() + chunk.len(),
                        max: MAX_SNAPSHOT_BYTES,
                    });
                }
                snapshot.extend_from_slice(&chunk);
                if last {
                    // Decoding and installing a large table happens off the runtime thread.
                    let bytes = std::mem::take(&mut snapshot);
                    let hub = shared.hub.clone();
                    let keys = tokio::task::spawn_blocking(move || {
                        let state = ClusterState::restore(&bytes)?;
                        let keys = state.route_rows() as u64;
                        hub.install(index, state);
                        Ok::<u64, ClusterError>(keys)
                    })
                    .await
                    .map_err(|_| ClusterError::Stopped)??;
                    let took = boot_started.map_or(0, |t| t.elapsed().as_micros() as u64);
                    c.bootstraps.fetch_add(1, Ordering::Relaxed);
                    c.bootstrap_time_us.store(took, Ordering::Relaxed);
                    c.bootstrap_keys.store(keys, Ordering::Relaxed);
                    c.upstream_committed.fetch_max(index, Ordering::Relaxed);
                    shared.set_stream_state(StreamState::LocalReplay);
                    tracing::info!(index, keys, micros = took, "replicant bootstrapped");
                }
            }
            StreamMsg::Entry { index, cmd } => {
                shared.hub.apply(index, cmd);
                c.upstream_committed.fetch_max(index, Ordering::Relaxed);
            }
            StreamMsg::Live { committed } => {
                c.upstream_committed.fetch_max(committed, Ordering::Relaxed);
                shared.set_stream_state(StreamState::Normal);
            }
            StreamMsg::Heartbeat { committed } => {
                c.upstream_committed.fetch_max(committed, Ordering::Relaxed);
            }
        }
    }
}
