//! Node-to-node message forwarding: one persistent TCP link per destination node, fed by a
//! bounded FIFO queue (so messages to one node keep their order), written in batches, and
//! acknowledged by the receiver.
//!
//! Every message gets a sequence number on its link (per sending process: the link's
//! epoch is the sender's incarnation). The sender keeps each message until the receiver
//! acknowledges it, at most `cluster.link_inflight_max` per link, and after a reconnect
//! sends the unacknowledged ones again; the receiver drops the ones it already handed on
//! (same epoch, sequence not above the last one), so a broken link neither loses nor
//! duplicates messages while both processes live. The receiver acknowledges a message
//! when the server drops the [`Inbound`] it was handed, i.e. after giving it to its local
//! sessions; [`crate::ClusterNode::send_acked`] resolves then (QoS 1/2 end to end).
//!
//! Frames, all integers big-endian:
//! - sender to receiver: `u32` body length, then `u64` sequence of the first message,
//!   `u32` message count, and per message `u32` length and bytes; bounded by
//!   `cluster.max_frame_bytes`;
//! - receiver to sender: `u64`, every sequence up to it was handed on (cumulative).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::error::ClusterError;
use crate::node::Shared;
use crate::types::NodeId;
use crate::wire::{Hello, write_frame};

/// Most senders whose last sequence a receiver remembers (for dropping resent messages);
/// beyond it the entries of non-members are forgotten first.
pub const MAX_LINK_PEERS: usize = 4096;

/// One message waiting for, or being sent on, a link.
pub(crate) struct Outgoing {
    msg: Bytes,
    /// Completed when the receiver acknowledged it (send_acked).
    done: Option<oneshot::Sender<()>>,
}

type Queue = mpsc::Sender<Outgoing>;

/// A message another node sent here. Drop it once it was handed to the local sessions:
/// that acknowledges it to the sender (in order: a later one acknowledges earlier ones).
#[derive(Debug)]
pub struct Inbound {
    /// The sending node.
    pub from: NodeId,
    /// The message, as the sender's server encoded it.
    pub message: Bytes,
    ack: Acker,
}

#[derive(Debug)]
struct Acker {
    state: Arc<PeerAcks>,
    seq: u64,
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.state.done.fetch_max(self.seq, Ordering::AcqRel);
        self.state.changed.notify_one();
    }
}

impl Inbound {
    /// Acknowledges the message now (the same as dropping it) and returns its bytes.
    pub fn into_message(self) -> Bytes {
        self.message
    }

    /// The sequence number of this message on its link (for tests and tracing).
    pub fn seq(&self) -> u64 {
        self.ack.seq
    }
}

/// What a receiver remembers about one sender across its connections.
#[derive(Debug)]
struct PeerAcks {
    epoch: u64,
    /// The last sequence handed to the inbound queue.
    handed: AtomicU64,
    /// The last sequence the server finished with (acknowledged).
    done: AtomicU64,
    changed: Notify,
}

/// The link queues by destination, the inbound channel and the receivers' memory.
pub(crate) struct Links {
    queues: ArcSwap<HashMap<NodeId, Queue>>,
    create: Mutex<()>,
    inbound_tx: mpsc::Sender<Inbound>,
    inbound_rx: Mutex<Option<mpsc::Receiver<Inbound>>>,
    peers: Mutex<HashMap<NodeId, Arc<PeerAcks>>>,
    /// Messages sent and not yet acknowledged, all links.
    inflight: AtomicU64,
    /// Bumped by [`Links::reset`]: every connected link drops its connection.
    reset: watch::Sender<u64>,
    /// Since when each destination's link has been without a connection (absent: connected,
    /// or never tried yet). One entry per member at most.
    down: Mutex<HashMap<NodeId, Instant>>,
}

impl Links {
    pub fn new(inbound_max: usize) -> Self {
        let (tx, rx) = mpsc::channel(inbound_max.max(1));
        Links {
            queues: ArcSwap::from_pointee(HashMap::new()),
            create: Mutex::new(()),
            inbound_tx: tx,
            inbound_rx: Mutex::new(Some(rx)),
            peers: Mutex::new(HashMap::new()),
            inflight: AtomicU64::new(0),
            reset: watch::channel(0).0,
            down: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the link to `node` has been without a connection for at least `after`.
    pub fn unreachable(&self, node: NodeId, after: Duration) -> bool {
        let g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&node).is_some_and(|since| since.elapsed() >= after)
    }

    /// Records that the link to `node` has no connection (keeps the earlier time).
    fn mark_down(&self, node: NodeId) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(node).or_insert_with(Instant::now);
    }

    /// Records that the link to `node` is connected (or closed for good).
    fn mark_up(&self, node: NodeId) {
        let mut g = self.down.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(&node);
    }

    /// Forgets the queue of `node` (its link task is ending).
    fn close(&self, node: NodeId) {
        let _g = self.create.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = HashMap::clone(&self.queues.load());
        map.remove(&node);
        self.queues.store(Arc::new(map));
    }

    /// Makes every outgoing link drop its connection; each reconnects and resends what
    /// was not acknowledged.
    pub fn reset(&self) {
        self.reset.send_modify(|g| *g += 1);
    }

    pub fn take_inbound(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.inbound_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Messages queued on all links (not yet sent).
    pub fn queued(&self) -> u64 {
        self.queues
            .load()
            .values()
            .map(|q| (q.max_capacity() - q.capacity()) as u64)
            .sum()
    }

    /// Messages sent on all links and not yet acknowledged.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
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
        fits(shared, &msg)?;
        let out = Outgoing { msg, done: None };
        match self.queue(shared, node)?.try_send(out) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                shared.counters.link_dropped.fetch_add(1, Ordering::Relaxed);
                Err(ClusterError::QueueFull)
            }
            Err(TrySendError::Closed(_)) => Err(ClusterError::Stopped),
        }
    }

    /// Queues `msg` with an acknowledgement receiver if the queue has room now; gives the
    /// message back when it is full.
    pub fn try_send_acked(
        &self,
        shared: &Arc<Shared>,
        node: NodeId,
        msg: Bytes,
    ) -> Result<Result<oneshot::Receiver<()>, Bytes>, ClusterError> {
        fits(shared, &msg)?;
        let q = self.queue(shared, node)?;
        let (tx, rx) = oneshot::channel();
        match q.try_send(Outgoing {
            msg,
            done: Some(tx),
        }) {
            Ok(()) => Ok(Ok(rx)),
            Err(TrySendError::Full(out)) => Ok(Err(out.msg)),
            Err(TrySendError::Closed(_)) => Err(ClusterError::Stopped),
        }
    }

    /// Queues `msg`, waiting for room; with `acked`, returns the receiver that completes
    /// when the destination acknowledged it.
    pub async fn send_wait(
        &self,
        shared: &Arc<Shared>,
        node: NodeId,
        msg: Bytes,
        acked: bool,
    ) -> Result<Option<oneshot::Receiver<()>>, ClusterError> {
        fits(shared, &msg)?;
        let q = self.queue(shared, node)?;
        let (done, rx) = if acked {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        match q.try_send(Outgoing { msg, done }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(out)) => {
                shared.counters.link_blocked.fetch_add(1, Ordering::Relaxed);
                q.send(out).await.map_err(|_| ClusterError::Stopped)?;
                Ok(rx)
            }
            Err(TrySendError::Closed(_)) => Err(ClusterError::Stopped),
        }
    }

    /// The receiver's memory of `from` for epoch `epoch` (reset when the sender restarted).
    fn peer(&self, shared: &Shared, from: NodeId, epoch: u64) -> Arc<PeerAcks> {
        let mut g = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = g.get(&from)
            && p.epoch == epoch
        {
            return p.clone();
        }
        if g.len() >= MAX_LINK_PEERS && !g.contains_key(&from) {
            let members = shared.hub.lock().replica.state().members().clone();
            g.retain(|id, _| members.contains_key(id));
            if g.len() >= MAX_LINK_PEERS {
                g.clear();
            }
        }
        let p = Arc::new(PeerAcks {
            epoch,
            handed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            changed: Notify::new(),
        });
        g.insert(from, p.clone());
        p
    }
}

/// Refuses a message that could never fit in a link frame on its own.
fn fits(shared: &Shared, msg: &Bytes) -> Result<(), ClusterError> {
    let (len, max) = (FRAME_OVERHEAD + msg.len(), shared.max_frame());
    if len > max {
        return Err(ClusterError::FrameTooLarge { len, max });
    }
    Ok(())
}

/// Frame bytes besides the message: first sequence, count, one length (the body length
/// prefix is not counted against the limit).
const FRAME_OVERHEAD: usize = 8 + 4 + 4;

/// Sent messages waiting for their acknowledgement.
struct Unacked {
    items: VecDeque<(u64, Outgoing)>,
    next_seq: u64,
}

impl Unacked {
    /// Drops everything up to `acked` and completes its waiters; returns how many.
    fn ack(&mut self, acked: u64) -> u64 {
        let mut n = 0;
        while self.items.front().is_some_and(|(seq, _)| *seq <= acked) {
            if let Some((_, out)) = self.items.pop_front()
                && let Some(done) = out.done
            {
                // The waiter may have timed out: nothing to do then.
                let _ = done.send(());
            }
            n += 1;
        }
        n
    }
}

/// Drains one destination's queue onto its TCP link, reconnecting as needed and resending
/// what was not acknowledged.
async fn run_link(shared: Arc<Shared>, node: NodeId, mut rx: mpsc::Receiver<Outgoing>) {
    let epoch = shared.me.incarnation;
    let mut unacked = Unacked {
        items: VecDeque::new(),
        next_seq: 1,
    };
    loop {
        let Some(addr) = shared.member_addr(node) else {
            // The node left or was removed: close this link. What it held is dropped and
            // counted; `send_acked` waiters see an error. A later send to the node (if it
            // joins again) opens a new link.
            shared.links.close(node);
            shared.links.mark_up(node);
            rx.close();
            let mut dropped = unacked.items.len() as u64;
            shared.links.inflight.fetch_sub(dropped, Ordering::Relaxed);
            while rx.try_recv().is_ok() {
                dropped += 1;
            }
            shared
                .counters
                .link_departed_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::info!(node, dropped, "node left: link closed");
            return;
        };
        let connect =
            tokio::time::timeout(shared.connect_timeout(), TcpStream::connect(addr.as_str()));
        let mut sock = match connect.await {
            Ok(Ok(s)) => s,
            _ => {
                shared.links.mark_down(node);
                tokio::time::sleep(shared.backoff()).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let hello = Hello::Link {
            from: shared.id,
            epoch,
        };
        if write_frame(&mut sock, &hello, shared.max_frame())
            .await
            .is_err()
        {
            shared.links.mark_down(node);
            continue;
        }
        shared.links.mark_up(node);
        match connected(&shared, sock, &mut rx, &mut unacked).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(node, error = %e, "link broken; reconnecting"),
        }
        shared.links.mark_down(node);
        tokio::time::sleep(shared.backoff()).await;
    }
}

/// Runs one connection of a link: resends what is unacknowledged, then sends new messages
/// and takes acknowledgements. `Ok` when the queue closed (node stopping).
async fn connected(
    shared: &Arc<Shared>,
    sock: TcpStream,
    rx: &mut mpsc::Receiver<Outgoing>,
    unacked: &mut Unacked,
) -> Result<(), ClusterError> {
    let (mut rd, mut wr) = sock.into_split();
    let mut reset = shared.links.reset.subscribe();
    let (ack_tx, mut ack_rx) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        while let Ok(acked) = rd.read_u64().await {
            if ack_tx.send(acked).is_err() {
                return;
            }
        }
    });
    let res = async {
        let c = &shared.counters;
        // Resend what the last connection did not get acknowledged, in order.
        let again: Vec<(u64, Bytes)> = unacked
            .items
            .iter()
            .map(|(s, o)| (*s, o.msg.clone()))
            .collect();
        if !again.is_empty() {
            c.link_resent
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            for part in frames(shared, &again) {
                write_batch(&mut wr, part, shared.max_frame()).await?;
            }
        }
        let window = shared.cfg.link_inflight_max;
        let mut was_full = false;
        loop {
            let room = unacked.items.len() < window;
            if !room && !was_full {
                // Only acknowledgements (or a reset) can move this link on now.
                c.link_inflight_full.fetch_add(1, Ordering::Relaxed);
            }
            was_full = !room;
            tokio::select! {
                _ = reset.changed() => {
                    return Err(ClusterError::Protocol("link reset".into()));
                }
                r = ack_rx.changed() => {
                    if r.is_err() {
                        return Err(ClusterError::Protocol("link closed by the peer".into()));
                    }
                    let acked = *ack_rx.borrow_and_update();
                    let n = unacked.ack(acked);
                    shared.links.inflight.fetch_sub(n, Ordering::Relaxed);
                }
                item = rx.recv(), if room => {
                    let Some(first) = item else { return Ok(()) };
                    send_new(shared, &mut wr, rx, unacked, first).await?;
                }
            }
        }
    }
    .await;
    reader.abort();
    res
}

/// Takes `first` and whatever else is queued (up to `link_batch_max`, the window and the
/// frame size), numbers them, writes them as one frame and keeps them until acknowledged.
async fn send_new(
    shared: &Arc<Shared>,
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Outgoing>,
    unacked: &mut Unacked,
    first: Outgoing,
) -> Result<(), ClusterError> {
    let max = shared.max_frame();
    let c = &shared.counters;
    let limit = shared
        .cfg
        .link_batch_max
        .min(
            shared
                .cfg
                .link_inflight_max
                .saturating_sub(unacked.items.len()),
        )
        .max(1);
    let mut batch = vec![first];
    let mut size = FRAME_OVERHEAD + batch[0].msg.len();
    while batch.len() < limit {
        match rx.try_recv() {
            Ok(m) => {
                size += 4 + m.msg.len();
                batch.push(m);
                if size > max {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let mut fresh = Vec::with_capacity(batch.len());
    for out in batch {
        if FRAME_OVERHEAD + out.msg.len() > max {
            // Refused before queueing; kept as a safety net: dropped and counted.
            c.link_lost.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let seq = unacked.next_seq;
        unacked.next_seq += 1;
        fresh.push((seq, out.msg.clone()));
        unacked.items.push_back((seq, out));
    }
    let n = fresh.len() as u64;
    shared.links.inflight.fetch_add(n, Ordering::Relaxed);
    for part in frames(shared, &fresh) {
        write_batch(wr, part, max).await?;
    }
    c.link_sent.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// Splits consecutive `(seq, message)` pairs into frame-sized runs.
fn frames<'a>(shared: &Shared, msgs: &'a [(u64, Bytes)]) -> Vec<&'a [(u64, Bytes)]> {
    let (max, per) = (shared.max_frame(), shared.cfg.link_batch_max.max(1));
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 12);
    for (i, (_, m)) in msgs.iter().enumerate() {
        if i > start && (size + 4 + m.len() > max || i - start >= per) {
            out.push(&msgs[start..i]);
            (start, size) = (i, 12);
        }
        size += 4 + m.len();
    }
    if start < msgs.len() {
        out.push(&msgs[start..]);
    }
    out
}

async fn write_batch(
    wr: &mut OwnedWriteHalf,
    msgs: &[(u64, Bytes)],
    max: usize,
) -> Result<(), ClusterError> {
    let Some((first, _)) = msgs.first() else {
        return Ok(());
    };
    let body = 12 + msgs.iter().map(|(_, m)| 4 + m.len()).sum::<usize>();
    if body > max {
        return Err(ClusterError::FrameTooLarge { len: body, max });
    }
    let mut buf = BytesMut::with_capacity(4 + body);
    buf.extend_from_slice(&(body as u32).to_be_bytes());
    buf.extend_from_slice(&first.to_be_bytes());
    buf.extend_from_slice(&(msgs.len() as u32).to_be_bytes());
    for (_, m) in msgs {
        buf.extend_from_slice(&(m.len() as u32).to_be_bytes());
        buf.extend_from_slice(m);
    }
    wr.write_all(&buf).await?;
    Ok(())
}

/// Decodes one link frame body into the first sequence and the messages (zero-copy
/// slices of `body`).
fn decode_batch(mut body: Bytes) -> Result<(u64, Vec<Bytes>), ClusterError> {
    let bad = || ClusterError::Protocol("malformed link frame".into());
    if body.len() < 12 {
        return Err(bad());
    }
    let first = body.get_u64();
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
    if !body.is_empty() || first == 0 {
        return Err(bad());
    }
    Ok((first, out))
}

/// Receiving side of a link from `from` (epoch `epoch`): hands new messages to the
/// inbound channel, waiting when it is full (which stops reading, so TCP pushes back on
/// the sender), drops resent ones it already handed on, and acknowledges what the server
/// finished with.
pub(crate) async fn serve_inbound(
    shared: &Arc<Shared>,
    sock: TcpStream,
    from: NodeId,
    epoch: u64,
) -> Result<(), ClusterError> {
    let max = shared.max_frame();
    let peer = shared.links.peer(shared, from, epoch);
    let (mut rd, wr) = sock.into_split();
    let acks = tokio::spawn(send_acks(peer.clone(), wr));
    let res = async {
        loop {
            let len = rd.read_u32().await? as usize;
            if len > max {
                return Err(ClusterError::FrameTooLarge { len, max });
            }
            let mut body = BytesMut::zeroed(len);
            rd.read_exact(&mut body).await?;
            let (first, msgs) = decode_batch(body.freeze())?;
            let n = msgs.len() as u64;
            let mut blocked = false;
            for (i, message) in msgs.into_iter().enumerate() {
                let seq = first + i as u64;
                if peer.handed.fetch_max(seq, Ordering::AcqRel) >= seq {
                    shared
                        .counters
                        .link_duplicates
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let item = Inbound {
                    from,
                    message,
                    ack: Acker {
                        state: peer.clone(),
                        seq,
                    },
                };
                let tx = &shared.links.inbound_tx;
                match tx.try_send(item) {
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
    .await;
    acks.abort();
    res
}

/// Writes the cumulative acknowledgement whenever the server finished more messages.
async fn send_acks(peer: Arc<PeerAcks>, mut wr: OwnedWriteHalf) {
    let mut sent = 0;
    loop {
        let done = peer.done.load(Ordering::Acquire);
        if done > sent {
            if wr.write_u64(done).await.is_err() {
                return;
            }
            sent = done;
            continue;
        }
        peer.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_malformed_frames() {
        let head = |first: u64, count: u32| {
            let mut v = first.to_be_bytes().to_vec();
            v.extend_from_slice(&count.to_be_bytes());
            v
        };
        assert!(decode_batch(Bytes::from_static(&[0, 0])).is_err());
        assert!(decode_batch(Bytes::from(head(1, 9))).is_err());
        let mut v = head(1, 1);
        v.extend_from_slice(&[0, 0, 0, 5, 1]);
        assert!(decode_batch(Bytes::from(v)).is_err());
        let mut v = head(1, 0);
        v.push(7);
        assert!(decode_batch(Bytes::from(v)).is_err(), "trailing bytes");
        assert!(decode_batch(Bytes::from(head(0, 0))).is_err(), "sequence 0");
        let mut v = head(5, 2);
        v.extend_from_slice(&[0, 0, 0, 1, 7, 0, 0, 0, 0]);
        let (first, msgs) = decode_batch(Bytes::from(v)).unwrap();
        assert_eq!(first, 5);
        assert_eq!(msgs, vec![Bytes::from_static(&[7]), Bytes::new()]);
    }
}
