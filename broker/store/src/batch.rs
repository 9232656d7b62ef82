//! Submissions: a [`Batch`] of operations applied atomically, and the [`Commit`] handle that
//! completes when the group commit holding it is durable.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::error::StoreError;
use crate::record::{InflightEntry, SessionBase, SessionRecord, StoredMessage, WillRecord};

/// A client identifier as [`Batch`] methods take it: `&str` or `&String` (copied once per
/// operation) or `&Arc<str>` (shared: no copy, the broker's own client ids).
pub trait ClientRef {
    /// The identifier as the batch keeps it.
    fn into_client(self) -> Arc<str>;
}

impl ClientRef for &str {
    fn into_client(self) -> Arc<str> {
        Arc::from(self)
    }
}

impl ClientRef for &String {
    fn into_client(self) -> Arc<str> {
        Arc::from(self.as_str())
    }
}

impl ClientRef for &Arc<str> {
    fn into_client(self) -> Arc<str> {
        self.clone()
    }
}

/// Fixed cost counted for a removal when sizing a batch.
const REMOVAL_COST: usize = 16;

/// One encoded operation. Values are encoded by the submitter so that the writer thread only
/// touches B-trees.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    PutSession {
        client: Arc<str>,
        base: Bytes,
        inflight: Vec<(u16, Bytes)>,
        incoming: Vec<u16>,
    },
    DeleteSession {
        client: Arc<str>,
    },
    Enqueue {
        client: Arc<str>,
        value: Bytes,
        /// Skip (and count) instead of failing the batch when the session's queue is full.
        drop_if_full: bool,
    },
    DequeueUpto {
        client: Arc<str>,
        seq: u64,
    },
    RemoveQueued {
        client: Arc<str>,
        seq: u64,
    },
    SetInflight {
        client: Arc<str>,
        packet_id: u16,
        value: Bytes,
    },
    AckInflight {
        client: Arc<str>,
        packet_id: u16,
    },
    SetIncoming {
        client: Arc<str>,
        packet_id: u16,
    },
    ReleaseIncoming {
        client: Arc<str>,
        packet_id: u16,
    },
    SetSentLimit {
        client: Arc<str>,
        limit: u64,
    },
    SetRetained {
        topic: String,
        value: Bytes,
    },
    DeleteRetained {
        topic: String,
    },
    PutWill {
        client: Arc<str>,
        value: Bytes,
    },
    DeleteWill {
        client: Arc<str>,
    },
    /// Removes every entry of a queue number that no client owns (load clean-up).
    PurgeQueue {
        id: u64,
    },
    /// Changes nothing but the commit time (`last_commit_unix_ms`).
    Touch,
}

impl Op {
    /// Bytes this op adds to the store at most (key plus value), for quota pre-checks and
    /// batch sizing. Removals count a small fixed cost for sizing only.
    pub(crate) fn added_bytes(&self) -> u64 {
        let n = match self {
            Op::PutSession {
                client,
                base,
                inflight,
                incoming,
            } => {
                client.len()
                    + base.len()
                    + inflight
                        .iter()
                        .map(|(_, v)| client.len() + 2 + v.len())
                        .sum::<usize>()
                    + incoming.len() * (client.len() + 2)
            }
            Op::Enqueue { client, value, .. } => client.len() + 8 + value.len(),
            Op::SetInflight { client, value, .. } => client.len() + 2 + value.len(),
            Op::SetIncoming { client, .. } => client.len() + 2,
            Op::SetSentLimit { client, .. } => client.len() + 8,
            Op::SetRetained { topic, value } => topic.len() + value.len(),
            Op::PutWill { client, value } => client.len() + value.len(),
            _ => 0,
        };
        n as u64
    }

    fn batch_cost(&self) -> usize {
        match self.added_bytes() {
            0 => REMOVAL_COST,
            n => n as usize,
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    // postcard only fails for sequences of unknown length or a full fixed buffer; the record
    // types have neither and `to_allocvec` grows its buffer, so this cannot fail.
    Bytes::from(postcard::to_allocvec(value).expect("postcard encoding of a record type"))
}

/// A set of operations that the store applies atomically (all or none), in order, in one
/// group commit. Build it, then hand it to [`crate::Store::submit`].
///
/// Quota checks count everything a batch adds before anything it removes, so a batch that
/// both frees and adds space may be refused near a limit.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
    pub(crate) cost: usize,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends every operation of `other`, after this batch's.
    pub fn append(&mut self, mut other: Batch) -> &mut Self {
        self.cost += other.cost;
        self.ops.append(&mut other.ops);
        self
    }

    fn push(&mut self, op: Op) -> &mut Self {
        self.cost += op.batch_cost();
        self.ops.push(op);
        self
    }

    /// Stores the session, replacing its subscriptions, outgoing in-flight entries and
    /// incoming QoS 2 ids. Leaves its offline queue and will alone.
    pub fn put_session(&mut self, session: &SessionRecord) -> &mut Self {
        let base = SessionBase {
            session_expiry_interval_secs: session.session_expiry_interval_secs,
            disconnected_at_unix_ms: session.disconnected_at_unix_ms,
            protocol_version: session.protocol_version,
            subscriptions: session.subscriptions.clone(),
        };
        let inflight = session
            .inflight
            .iter()
            .map(|e| (e.packet_id, encode(e)))
            .collect();
        self.push(Op::PutSession {
            client: Arc::from(session.client_id.as_str()),
            base: encode(&base),
            inflight,
            incoming: session.incoming_qos2.clone(),
        })
    }

    /// Deletes the session with its in-flight state and offline queue (not its will).
    pub fn delete_session(&mut self, client_id: impl ClientRef) -> &mut Self {
        self.push(Op::DeleteSession {
            client: client_id.into_client(),
        })
    }

    /// Appends the message to the client's offline queue. The assigned sequence number is
    /// returned in [`Committed::seqs`]. If the session's queue limits
    /// (`max_messages_per_session`, `max_bytes_per_session`) would be passed, the whole batch
    /// fails with `QuotaExceeded`.
    pub fn enqueue(&mut self, client_id: impl ClientRef, message: &StoredMessage) -> &mut Self {
        let value = encode(message);
        self.push(Op::Enqueue {
            client: client_id.into_client(),
            value,
            drop_if_full: false,
        })
    }

    /// Appends one message to several clients' queues (a fan-out), encoding it once. A client
    /// whose queue is full is skipped: its entry in [`Committed::seqs`] is `None` and
    /// `StatsSnapshot::queue_drops_limit` counts it; the rest of the batch still commits
    /// (MQTT drops for one slow subscriber, not for all).
    pub fn enqueue_many<C: ClientRef>(
        &mut self,
        client_ids: impl IntoIterator<Item = C>,
        message: &StoredMessage,
    ) -> &mut Self {
        let value = encode(message);
        for client in client_ids {
            self.push(Op::Enqueue {
                client: client.into_client(),
                value: value.clone(),
                drop_if_full: true,
            });
        }
        self
    }

    /// Removes every queue entry of the client with a sequence number `<= seq`.
    pub fn dequeue_upto(&mut self, client_id: impl ClientRef, seq: u64) -> &mut Self {
        self.push(Op::DequeueUpto {
            client: client_id.into_client(),
            seq,
        })
    }

    /// Removes one queue entry (e.g. an expired message in the middle of a queue).
    pub fn remove_queued(&mut self, client_id: impl ClientRef, seq: u64) -> &mut Self {
        self.push(Op::RemoveQueued {
            client: client_id.into_client(),
            seq,
        })
    }

    /// Records that the client's queue entries with a sequence number below `limit` may have
    /// been sent to it (a server that keeps a QoS 1 message in flight as its queue entry
    /// only). [`crate::LoadedState::sent_limits`] returns it; such entries are not dropped as
    /// expired at load (their delivery may have started). Removed with the session.
    pub fn set_sent_limit(&mut self, client_id: impl ClientRef, limit: u64) -> &mut Self {
        self.push(Op::SetSentLimit {
            client: client_id.into_client(),
            limit,
        })
    }

    /// Records (or replaces) an outgoing in-flight delivery.
    pub fn set_inflight(&mut self, client_id: impl ClientRef, entry: &InflightEntry) -> &mut Self {
        let value = encode(entry);
        self.push(Op::SetInflight {
            client: client_id.into_client(),
            packet_id: entry.packet_id,
            value,
        })
    }

    /// Forgets an outgoing in-flight delivery (PUBACK or PUBCOMP received).
    pub fn ack_inflight(&mut self, client_id: impl ClientRef, packet_id: u16) -> &mut Self {
        self.push(Op::AckInflight {
            client: client_id.into_client(),
            packet_id,
        })
    }

    /// Records an incoming QoS 2 packet id that was PUBREC'd and awaits PUBREL.
    pub fn set_incoming_qos2(&mut self, client_id: impl ClientRef, packet_id: u16) -> &mut Self {
        self.push(Op::SetIncoming {
            client: client_id.into_client(),
            packet_id,
        })
    }

    /// Forgets an incoming QoS 2 packet id (PUBREL received).
    pub fn release_incoming_qos2(
        &mut self,
        client_id: impl ClientRef,
        packet_id: u16,
    ) -> &mut Self {
        self.push(Op::ReleaseIncoming {
            client: client_id.into_client(),
            packet_id,
        })
    }

    /// Stores (or replaces) the retained message for `message.topic`.
    pub fn set_retained(&mut self, message: &StoredMessage) -> &mut Self {
        let value = encode(message);
        self.push(Op::SetRetained {
            topic: message.topic.clone(),
            value,
        })
    }

    /// Deletes the retained message of a topic.
    pub fn delete_retained(&mut self, topic: &str) -> &mut Self {
        self.push(Op::DeleteRetained {
            topic: topic.to_owned(),
        })
    }

    /// Stores (or replaces) the client's pending will.
    pub fn put_will(&mut self, client_id: impl ClientRef, will: &WillRecord) -> &mut Self {
        let value = encode(will);
        self.push(Op::PutWill {
            client: client_id.into_client(),
            value,
        })
    }

    /// Deletes the client's pending will (published, or cancelled by a reconnect).
    pub fn delete_will(&mut self, client_id: impl ClientRef) -> &mut Self {
        self.push(Op::DeleteWill {
            client: client_id.into_client(),
        })
    }

    /// Removes the entries of a queue number that no client owns (found at load).
    pub(crate) fn purge_queue(&mut self, id: u64) -> &mut Self {
        self.push(Op::PurgeQueue { id })
    }

    /// Writes nothing but the commit time, which [`crate::LoadedState::last_commit_unix_ms`]
    /// reports after a crash: a periodic touch bounds how early a session connected at the
    /// crash is taken to have disconnected.
    pub fn touch(&mut self) -> &mut Self {
        self.push(Op::Touch)
    }
}

/// Result of a durable submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Sequence numbers assigned to the batch's `enqueue`/`enqueue_many` operations, in
    /// batch order; `None` for an `enqueue_many` target skipped because its queue was full.
    pub seqs: Vec<Option<u64>>,
}

/// What a commit handle resolves to.
pub type CommitResult = Result<Committed, StoreError>;

/// Completion handle of a submission. Resolves once the group commit holding it is durable
/// (`Ok`) or failed (`Err`, and nothing of the submission was written). Await it on any
/// executor (`.await` works through `IntoFuture`), poll it with [`Commit::try_result`], or
/// block with [`Commit::wait`] (tests, tools; never on a runtime thread).
///
/// `T` is [`CommitResult`] for [`crate::Store::submit`], one `CommitResult` per batch for
/// [`crate::Store::submit_each`].
#[derive(Debug)]
#[must_use = "a submission is durable only when its Commit resolves"]
pub struct Commit<T = CommitResult> {
    state: State<T>,
}

#[derive(Debug)]
enum State<T> {
    Waiting(oneshot::Receiver<T>),
    Ready(T),
    Taken,
}

/// What a commit handle resolves to when the writer is gone (the store closed).
pub trait Outcome: Unpin {
    /// The result standing for "the store closed before the commit completed".
    fn closed() -> Self;
}

impl Outcome for CommitResult {
    fn closed() -> Self {
        Err(StoreError::Closed)
    }
}

impl Outcome for Vec<CommitResult> {
    /// Empty: the caller sees fewer results than batches and treats the missing ones as
    /// [`StoreError::Closed`].
    fn closed() -> Self {
        Vec::new()
    }
}

impl<T: Outcome> Commit<T> {
    pub(crate) fn waiting(rx: oneshot::Receiver<T>) -> Self {
        Commit {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn ready(result: T) -> Self {
        Commit {
            state: State::Ready(result),
        }
    }

    /// Blocks the calling thread until the commit completes.
    pub fn wait(self) -> T {
        match self.state {
            State::Waiting(rx) => rx.recv().unwrap_or_else(|_| T::closed()),
            State::Ready(result) => result,
            State::Taken => T::closed(),
        }
    }

    /// Non-blocking: the result if the commit has completed (returned once), else `None`.
    pub fn try_result(&mut self) -> Option<T> {
        match &self.state {
            State::Waiting(rx) => match rx.try_recv() {
                Ok(result) => {
                    self.state = State::Taken;
                    Some(result)
                }
                Err(oneshot::TryRecvError::Empty) => None,
                Err(oneshot::TryRecvError::Disconnected) => {
                    self.state = State::Taken;
                    Some(T::closed())
                }
            },
            State::Ready(_) => match std::mem::replace(&mut self.state, State::Taken) {
                State::Ready(result) => Some(result),
                _ => None,
            },
            State::Taken => None,
        }
    }
}

/// The future behind `Commit`'s `IntoFuture`.
#[derive(Debug)]
pub struct CommitFuture<T = CommitResult> {
    state: FutState<T>,
}

#[derive(Debug)]
enum FutState<T> {
    Waiting(oneshot::AsyncReceiver<T>),
    Ready(Option<T>),
}

impl<T: Outcome> IntoFuture for Commit<T> {
    type Output = T;
    type IntoFuture = CommitFuture<T>;

    fn into_future(self) -> CommitFuture<T> {
        let state = match self.state {
            State::Waiting(rx) => FutState::Waiting(rx.into_future()),
            State::Ready(result) => FutState::Ready(Some(result)),
            State::Taken => FutState::Ready(Some(T::closed())),
        };
        CommitFuture { state }
    }
}

impl<T: Outcome> Future for CommitFuture<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.state {
            FutState::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(T::closed()),
                Poll::Pending => Poll::Pending,
            },
            FutState::Ready(result) => Poll::Ready(result.take().unwrap_or_else(T::closed)),
        }
    }
}
