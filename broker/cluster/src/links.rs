//! Node-to-node message forwarding: one persistent TCP link per destination node, fed by a
//! bounded FIFO queue (so messages to one node keep their order), written in batches.
//!
//! Link frame: `u32` body length, then `u32` message count, then per message `u32` length
//! and bytes (all big-endian). Frames are bounded by `cluster.max_frame_bytes`. A batch
//! that was being written when the link broke is dropped and counted in `link_lost`
//! (at-most-once on failure; the sender's QoS layer retries).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::error::ClusterError;
use crate::node::Shared;
use crate::types::NodeId;
use crate::wire::{Hello, write_frame};

type Queue = mpsc::Sender<Bytes>;

/// The link queues by destination and the inbound channel.
pub(crate) struct Links {
    queues: ArcSwap<HashMap<NodeId, Queue>>,
    create: Mutex<()>,
    inbound_tx: mpsc::Sender<(NodeId, Bytes)>,
    inbound_rx: Mutex<Option<mpsc::Receiver<(NodeId, Bytes)>>>,
}

impl Links {
    pub fn new(inbound_max: usize) -> Self {
        let (tx, rx) = mpsc::channel(inbound_max.max(1));
        Links {
            queues: ArcSwap::from_pointee(HashMap::new()),
            create: Mutex::new(()),
            inbound_tx: tx,
            inbound_rx: Mutex::new(Some(rx)),
        }
    }

    pub fn take_inbound(&self) -> Option<mpsc::Receiver<(NodeId, Bytes)>> {
        self.inbound_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Messages queued on all links.
    pub fn queued(&self) -> u64 {
        self.queues
            .load()
            .values()
            .map(|q| (q.max_capacity() - q.capacity()) as u64)
            .sum()
    }

    fn queue(&self, shared: &Arc<Shared>, node: NodeId) -> Result<Queue, ClusterError> {
        if let Some(q) = self.queues.load().get(&node) {
            return Ok(q.clone());
        }
        if shared.member_addr(node).is_none() {
            return Err(ClusterError::UnknownNode(node));
        }
        // Creation is rare (first message to a node); the lock only orders creators.
        let _g = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = self.queues.load().get(&node) {
            return Ok(q.clone());
        }
        let (tx, rx) = mpsc::channel(shared.cfg.link_queue_max);
        let mut map = HashMap::clone(&self.queues.load());
        map.insert(node, tx.clone());
        self.queues.store(Arc::new(map));
        shared.rt.spawn(run_link(shared.clone(), node, rx));
        Ok(tx)
    }

    pub fn send(&self, shared: &Arc<Shared>, node: NodeId, msg: Bytes) -> Result<(), ClusterError> {
        match self.queue(shared, node)?.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                shared.counters.link_dropped.fetch_add(1, Ordering::Relaxed);
                Err(ClusterError::QueueFull)
            }
            Err(TrySendError::Closed(_)) => Err(ClusterError::Stopped),
        }
    }

    pub async fn send_wait(
        &self,
        shared: &Arc<Shared>,
        node: NodeId,
        msg: Bytes,
    ) -> Result<(), ClusterError> {
        let q = self.queue(shared, node)?;
        match q.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                shared.counters.link_blocked.fetch_add(1, Ordering::Relaxed);
                q.send(msg).await.map_err(|_| ClusterError::Stopped)
            }
            Err(TrySendError::Closed(_)) => Err(ClusterError::Stopped),
        }
    }
}

/// Drains one destination's queue onto its TCP link, reconnecting as needed.
async fn run_link(shared: Arc<Shared>, node: NodeId, mut rx: mpsc::Receiver<Bytes>) {
    let max = shared.max_frame();
    let batch_max = shared.cfg.link_batch_max;
    let mut pending: Vec<Bytes> = Vec::new();
    loop {
        let Some(addr) = shared.member_addr(node) else {
            tokio::time::sleep(shared.backoff()).await;
            continue;
        };
        let connect =
            tokio::time::timeout(shared.connect_timeout(), TcpStream::connect(addr.as_str()));
        let mut sock = match connect.await {
            Ok(Ok(s)) => s,
            _ => {
                tokio::time::sleep(shared.backoff()).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        if write_frame(&mut sock, &Hello::Link { from: shared.id }, max)
            .await
            .is_err()
        {
            continue;
        }
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(m) => pending.push(m),
                    None => return,
                }
            }
            let mut size = 8 + pending.iter().map(|m| 4 + m.len()).sum::<usize>();
            while pending.len() < batch_max {
                match rx.try_recv() {
                    Ok(m) if size + 4 + m.len() <= max => {
                        size += 4 + m.len();
                        pending.push(m);
                    }
                    Ok(m) => {
                        // Too big for this frame: write what we have, this one goes next.
                        let n = pending.len();
                        if write_batch(&mut sock, &pending, max).await.is_err() {
                            shared
                                .counters
                                .link_lost
                                .fetch_add(n as u64, Ordering::Relaxed);
                            pending = vec![m];
                            break;
                        }
                        shared
                            .counters
                            .link_sent
                            .fetch_add(n as u64, Ordering::Relaxed);
                        pending.clear();
                        pending.push(m);
                        size = 8 + 4 + pending[0].len();
                    }
                    Err(_) => break,
                }
            }
            let n = pending.len() as u64;
            match write_batch(&mut sock, &pending, max).await {
                Ok(()) => {
                    shared.counters.link_sent.fetch_add(n, Ordering::Relaxed);
                    pending.clear();
                }
                Err(ClusterError::FrameTooLarge { .. }) => {
                    shared.counters.link_lost.fetch_add(n, Ordering::Relaxed);
                    pending.clear();
                }
                Err(_) => {
                    shared.counters.link_lost.fetch_add(n, Ordering::Relaxed);
                    pending.clear();
                    break;
                }
            }
        }
    }
}

async fn write_batch(sock: &mut TcpStream, msgs: &[Bytes], max: usize) -> Result<(), ClusterError> {
    let body = 4 + msgs.iter().map(|m| 4 + m.len()).sum::<usize>();
    if body > max {
        return Err(ClusterError::FrameTooLarge { len: body, max });
    }
    let mut buf = BytesMut::with_capacity(4 + body);
    buf.extend_from_slice(&(body as u32).to_be_bytes());
    buf.extend_from_slice(&(msgs.len() as u32).to_be_bytes());
    for m in msgs {
        buf.extend_from_slice(&(m.len() as u32).to_be_bytes());
        buf.extend_from_slice(m);
    }
    sock.write_all(&buf).await?;
    Ok(())
}

/// Decodes one link frame body into messages (zero-copy slices of `body`).
fn decode_batch(mut body: Bytes) -> Result<Vec<Bytes>, ClusterError> {
    let bad = || ClusterError::Protocol("malformed link frame".into());
    if body.len() < 4 {
        return Err(bad());
    }
    let count = body.get_u32() as usize;
    // Each message needs at least its 4-byte length.
    if count > body.len() / 4 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if body.len() < 4 {
            return Err(bad());
        }
        let len = body.get_u32() as usize;
        if len > body.len() {
            return Err(bad());
        }
        out.push(body.split_to(len));
    }
    if !body.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Receiving side of a link from `from`: hands messages to the inbound channel, waiting
/// when it is full (which stops reading, so TCP pushes back on the sender).
pub(crate) async fn serve_inbound(
    shared: &Arc<Shared>,
    mut sock: TcpStream,
    from: NodeId,
) -> Result<(), ClusterError> {
    let max = shared.max_frame();
    loop {
        let len = sock.read_u32().await? as usize;
        if len > max {
            return Err(ClusterError::FrameTooLarge { len, max });
        }
        let mut body = BytesMut::zeroed(len);
        sock.read_exact(&mut body).await?;
        let msgs = decode_batch(body.freeze())?;
        let n = msgs.len() as u64;
        let mut blocked = false;
        for m in msgs {
            let tx = &shared.links.inbound_tx;
            match tx.try_send((from, m)) {
                Ok(()) => {}
                Err(TrySendError::Full(item)) => {
                    blocked = true;
                    tx.send(item).await.map_err(|_| ClusterError::Stopped)?;
                }
                Err(TrySendError::Closed(_)) => return Err(ClusterError::Stopped),
            }
        }
        if blocked {
            shared
                .counters
                .inbound_blocked
                .fetch_add(1, Ordering::Relaxed);
        }
        shared
            .counters
            .link_received
            .fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_malformed_frames() {
        assert!(decode_batch(Bytes::from_static(&[0, 0])).is_err());
        assert!(decode_batch(Bytes::from_static(&[0, 0, 0, 9])).is_err());
        assert!(decode_batch(Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 5, 1])).is_err());
        assert!(decode_batch(Bytes::from_static(&[0, 0, 0, 0, 7])).is_err());
        let ok =
            decode_batch(Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 1, 7, 0, 0, 0, 0])).unwrap();
        assert_eq!(ok, vec![Bytes::from_static(&[7]), Bytes::new()]);
    }
}
