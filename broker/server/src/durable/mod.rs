//! Durable sessions, retained messages and wills: the bridge between halyard-session's
//! in-memory types and halyard-store's records ([`convert`], [`blob`]), the [`Durability`]
//! facade the connection and engine code call, and [`restore`] at start.
//!
//! With the store disabled (`Durability::disabled()`), every method completes at once and
//! writes nothing: today's in-memory behaviour.
//!
//! The contract (issue 4): a QoS 1/2 PUBLISH is acknowledged only once
//! [`Durability::persist_publish`] resolved (queued for every persistent session it was
//! routed to, retained update stored); a session's output is transmitted only once
//! [`Durability::persist_changes`] for the step that produced it resolved (outgoing
//! in-flight entries before their PUBLISH/PUBREL leave, incoming QoS 2 ids before their
//! PUBREC leaves; a QoS 1 delivery in flight by reference to its queue entry writes nothing
//! before it leaves but needs the session's sent limit durable, see [`QueueLedger`]).
//! Nothing here blocks a runtime thread: the returned [`Pending`] futures complete when the
//! store's group commit is durable. See
//! `/work/notes/durable-integration.md` for where each call goes.

pub mod blob;
pub mod convert;
mod ledger;
mod restore;
#[cfg(test)]
mod tests;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use halyard_codec::ReasonCode;
use halyard_session::{
    ClientId, Delivery, Message, PartsError, Session, SessionChanges, WallClock, Will,
};
use halyard_store::{
    Batch, CommitFuture, CommitResult, Committed, LoadedState, Store, StoreConfig, StoreError,
    StoreStats,
};

pub use ledger::{QueueLedger, SENT_LEASE, packet_id_for};
pub use restore::{RestoredSession, RestoredState, RestoredWill, restore};

use blob::BlobError;

/// Everything that can go wrong between the session types and the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// The store refused or failed the write (quota, disk full, busy, closed, I/O), or could
    /// not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record holds a value the session layer refuses (bad QoS, duplicate packet
    /// identifier...).
    #[error("stored state is invalid: {0}")]
    Parts(#[from] PartsError),
    /// A stored properties blob does not decode.
    #[error("stored message properties: {0}")]
    Blob(#[from] BlobError),
    /// A stored subscription options byte is invalid.
    #[error("stored subscription options byte {0:#04x} is invalid")]
    Options(u8),
}

impl DurableError {
    /// The reason code for the PUBACK/PUBREC/SUBACK/CONNACK refused because of this error:
    /// 0x97 Quota exceeded for quotas and a full disk, 0x89 Server busy when too many
    /// submissions wait, else 0x80 Unspecified error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DurableError::Store(e) if e.is_quota() => ReasonCode::QUOTA_EXCEEDED,
            DurableError::Store(StoreError::Busy { .. }) => ReasonCode::SERVER_BUSY,
            _ => ReasonCode::UNSPECIFIED_ERROR,
        }
    }
}

/// How often a running broker records its commit time ([`Durability::heartbeat`]): a
/// session connected at a crash is taken to have disconnected at most this long before it.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Wall-clock time now, in Unix milliseconds (the one place this module reads the clock).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The [`WallClock`] for `now`.
pub fn wall_clock(now: Instant) -> WallClock {
    WallClock::new(now, now_unix_ms())
}

/// A write on its way to disk: resolves with the store's [`Committed`] (queue sequence
/// numbers) once the group commit holding it is durable, or with the error (nothing of it
/// was written). Completes at once when the store is disabled.
#[derive(Debug)]
#[must_use = "the write is durable only when this resolves"]
pub struct Pending {
    state: PendingState,
    /// On success, raise this sent limit to this value (see [`ledger::SENT_LEASE`]).
    raise: Option<(Arc<AtomicU64>, u64)>,
}

#[derive(Debug)]
enum PendingState {
    Ready(Option<Result<Committed, DurableError>>),
    Waiting(CommitFuture),
}

impl Pending {
    fn ready(r: Result<Committed, DurableError>) -> Self {
        Pending {
            state: PendingState::Ready(Some(r)),
            raise: None,
        }
    }

    fn submit(store: &Store, batch: Batch) -> Self {
        Pending {
            state: PendingState::Waiting(store.submit(batch).into_future()),
            raise: None,
        }
    }

    /// True when the result is available without waiting (disabled store, empty write).
    pub fn is_ready(&self) -> bool {
        matches!(self.state, PendingState::Ready(_))
    }
}

impl Future for Pending {
    type Output = Result<Committed, DurableError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = match &mut self.state {
            PendingState::Ready(r) => r.take().unwrap_or(Err(StoreError::Closed.into())),
            PendingState::Waiting(f) => match Pin::new(f).poll(cx) {
                Poll::Ready(r) => r.map_err(Into::into),
                Poll::Pending => return Poll::Pending,
            },
        };
        if r.is_ok()
            && let Some((limit, to)) = self.raise.take()
        {
            limit.fetch_max(to, Ordering::AcqRel);
        }
        Poll::Ready(r)
    }
}

/// Several independent writes on their way to disk ([`Durability::submit_each`]): resolves
/// to one result per batch, in order.
#[derive(Debug)]
#[must_use = "the writes are durable only when this resolves"]
pub struct PendingEach {
    n: usize,
    state: PendingEachState,
}

#[derive(Debug)]
enum PendingEachState {
    Ready(Option<Vec<CommitResult>>),
    Waiting(CommitFuture<Vec<CommitResult>>),
}

impl Future for PendingEach {
    type Output = Vec<Result<Committed, DurableError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let n = self.n;
        let results = match &mut self.state {
            PendingEachState::Ready(r) => r.take().unwrap_or_default(),
            PendingEachState::Waiting(f) => match Pin::new(f).poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
        };
        // A store that closed mid-way answers with fewer results: the rest failed.
        let disabled = matches!(self.state, PendingEachState::Ready(_));
        let mut out: Vec<_> = results
            .into_iter()
            .map(|r| r.map_err(DurableError::from))
            .collect();
        while out.len() < n {
            out.push(if disabled {
                Ok(Committed::default())
            } else {
                Err(StoreError::Closed.into())
            });
        }
        Poll::Ready(out)
    }
}

/// Whether two deliveries of one message are stored alike.
fn same_delivery(a: &Delivery, b: &Delivery) -> bool {
    a.qos == b.qos && a.retain == b.retain && a.subscription_ids == b.subscription_ids
}

/// One persistent session a published message was routed to.
#[derive(Debug, Clone, Copy)]
pub struct DurableTarget<'a> {
    /// The subscriber's client identifier.
    pub client_id: &'a ClientId,
    /// What it gets.
    pub delivery: &'a Delivery,
}

/// The server's handle on durable state: `None` = store disabled.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    store: Option<Store>,
}

impl Durability {
    /// Store disabled: nothing is written, every [`Pending`] is ready at once.
    pub fn disabled() -> Self {
        Durability { store: None }
    }

    /// Uses an open store.
    pub fn with_store(store: Store) -> Self {
        Durability { store: Some(store) }
    }

    /// Opens the store of `cfg` (`None` when `cfg.enabled` is false). With
    /// `discard_corrupt`, a corrupt file is moved aside (logged with what it held) and an
    /// empty store is started instead.
    pub fn open(cfg: &StoreConfig, discard_corrupt: bool) -> Result<Self, DurableError> {
        if !cfg.enabled {
            return Ok(Durability::disabled());
        }
        let store = if discard_corrupt {
            let (store, discarded) = halyard_store::open_discarding_corrupt(cfg)?;
            if let Some(d) = discarded {
                tracing::error!(discarded = ?d, "corrupt store moved aside; its contents are lost");
            }
            store
        } else {
            Store::open(cfg)?
        };
        Ok(Durability::with_store(store))
    }

    /// Whether a store is in use.
    pub fn is_enabled(&self) -> bool {
        self.store.is_some()
    }

    /// The store's counters (for metrics), if enabled.
    pub fn stats(&self) -> Option<&StoreStats> {
        self.store.as_ref().map(Store::stats)
    }

    /// A handle on the store's counters that does not keep the store open, if enabled.
    pub fn stats_handle(&self) -> Option<std::sync::Arc<StoreStats>> {
        self.store.as_ref().map(Store::stats_handle)
    }

    /// Reads everything back (start-up, before serving; blocks the calling thread) and
    /// rebuilds it with [`restore`]. Empty when disabled.
    pub fn load(
        &self,
        now: Instant,
        cfg: &halyard_session::SessionConfig,
    ) -> Result<RestoredState, DurableError> {
        self.load_at(&wall_clock(now), cfg)
    }

    /// As [`Durability::load`] at a given wall-clock time (tests of downtime).
    pub fn load_at(
        &self,
        clock: &WallClock,
        cfg: &halyard_session::SessionConfig,
    ) -> Result<RestoredState, DurableError> {
        let Some(store) = &self.store else {
            return Ok(RestoredState::default());
        };
        let loaded: LoadedState = store.load_all(clock.now_unix_ms)?;
        let state = restore(loaded, clock, cfg);
        let mut batch = Batch::new();
        for s in &state.sessions {
            for seq in &s.stale_queued {
                batch.remove_queued(s.session.client_id(), *seq);
            }
        }
        // Start-up, before serving: blocking here is allowed (as `load_all` does).
        store.submit(batch).wait()?;
        Ok(state)
    }

    fn submit(&self, f: impl FnOnce(&mut Batch)) -> Pending {
        let Some(store) = &self.store else {
            return Pending::ready(Ok(Committed::default()));
        };
        let mut batch = Batch::new();
        f(&mut batch);
        Pending::submit(store, batch)
    }

    /// A PUBLISH: stores (or, empty payload, deletes) the retained message when `message`
    /// has RETAIN, and appends the delivery to the offline queue of every target (persistent
    /// sessions only; the caller leaves out sessions with expiry 0 and QoS 0 deliveries it
    /// does not keep). `Committed::seqs[i]` is target `i`'s queue sequence number, `None`
    /// when its queue was full (dropped for that subscriber, counted by the store). Acknowledge
    /// the PUBLISH only when this resolved `Ok`; on `Err` answer with
    /// [`DurableError::reason_code`] and deliver nothing.
    pub fn persist_publish(
        &self,
        message: &Message,
        targets: &[DurableTarget<'_>],
        clock: &WallClock,
    ) -> Pending {
        self.persist_publish_from(message, targets, None, clock)
    }

    /// As [`Durability::persist_publish`], and for a QoS 2 PUBLISH from a stored session,
    /// `incoming_qos2 = Some((publisher, packet_id))` records its packet identifier in the
    /// same commit as the fan-out: after a crash the publisher's resent PUBLISH (it got no
    /// PUBREC) is then recognised and not routed a second time (exactly once).
    pub fn persist_publish_from(
        &self,
        message: &Message,
        targets: &[DurableTarget<'_>],
        incoming_qos2: Option<(&str, u16)>,
        clock: &WallClock,
    ) -> Pending {
        match (
            &self.store,
            self.publish_batch(message, targets, incoming_qos2, clock),
        ) {
            (Some(store), Some(batch)) => Pending::submit(store, batch),
            _ => Pending::ready(Ok(Committed {
                seqs: vec![None; targets.len()],
            })),
        }
    }

    /// The writes of [`Durability::persist_publish_from`] as a batch, to be submitted with
    /// others through [`Durability::submit_each`]; `None` when there is nothing to write
    /// (store disabled, no retained update and no persistent target): acknowledge at once.
    /// Targets with the same delivery (QoS, RETAIN, subscription identifiers) share one
    /// encoding of the message.
    pub fn publish_batch(
        &self,
        message: &Message,
        targets: &[DurableTarget<'_>],
        incoming_qos2: Option<(&str, u16)>,
        clock: &WallClock,
    ) -> Option<Batch> {
        if self.store.is_none() || (!message.retain && targets.is_empty()) {
            return None;
        }
        let mut b = Batch::new();
        if message.retain {
            if message.payload.is_empty() {
                b.delete_retained(&message.topic);
            } else {
                b.set_retained(&convert::message_to_stored(message, clock));
            }
        }
        let mut done = 0;
        while done < targets.len() {
            // Targets [done..end) with the same delivery as targets[done], in target order
            // (`Committed::seqs` follows the target order).
            let first = targets[done].delivery;
            let end = done
                + targets[done..]
                    .iter()
                    .take_while(|t| same_delivery(t.delivery, first))
                    .count();
            let stored = convert::delivery_to_stored(first, None, clock);
            b.enqueue_many(targets[done..end].iter().map(|t| t.client_id), &stored);
            done = end;
        }
        if let Some((publisher, id)) = incoming_qos2
            && !targets.is_empty()
        {
            b.set_incoming_qos2(publisher, id);
        }
        Some(b)
    }

    /// Submits independent batches (e.g. the PUBLISHes of one step) in one submission: one
    /// group commit, one wake-up, one result per batch in order. Ready at once when the store
    /// is disabled or there is nothing to write.
    pub fn submit_each(&self, batches: Vec<Batch>) -> PendingEach {
        let n = batches.len();
        match &self.store {
            Some(store) if n > 0 => PendingEach {
                n,
                state: PendingEachState::Waiting(store.submit_each(batches).into_future()),
            },
            _ => PendingEach {
                n,
                state: PendingEachState::Ready(Some(Vec::new())),
            },
        }
    }

    /// Writes what changed in a session: `changes` from [`Session::take_changes`] or
    /// [`halyard_session::Connection::take_session_changes`], `session` to read the changed
    /// entries from. Outgoing in-flight entries are written or removed, incoming QoS 2 ids
    /// recorded or released, queue entries that left the session's queue (through `ledger`,
    /// popped or consumed) removed, and the whole record rewritten when subscriptions or
    /// expiry changed. Transmit the connection's output only once this resolved `Ok`.
    ///
    /// Two shortcuts keep the common QoS 1 path to one insert and one delete per message:
    /// a stored delivery that goes in flight at QoS 1 with the packet id its queue entry
    /// fixes ([`packet_id_for`]) keeps that entry as its store copy (no in-flight entry; see
    /// [`QueueLedger`]), and a step whose writes are only removals (PUBACK, PUBCOMP, dropped
    /// messages) does not wait for them: losing them in a crash only means a redelivery (at
    /// least once), never a loss. Ready at once then, and when nothing changed. The
    /// session's sent limit ([`SENT_LEASE`]) is moved ahead of the entries sent by reference:
    /// awaited only by a step that sends past the durable limit.
    pub fn persist_changes(
        &self,
        changes: SessionChanges,
        session: &Session,
        ledger: &mut QueueLedger,
        protocol_version: u8,
        clock: &WallClock,
    ) -> Pending {
        let Some(store) = &self.store else {
            return Pending::ready(Ok(Committed::default()));
        };
        if changes.is_empty() && !ledger.has_consumed() {
            return Pending::ready(Ok(Committed::default()));
        }
        let client = session.client_id();
        let mut left = ledger.popped_tracked(changes.queue_popped);
        left.extend(ledger.take_consumed());
        // Writes that must be durable before the output showing them.
        let mut ahead = Batch::new();
        // A new sent limit written in this step.
        let mut lease = None;
        // Removals: they may follow.
        let mut lazy = Batch::new();
        if changes.subscriptions || changes.expiry_interval {
            ahead.put_session(&convert::session_to_record(
                session,
                protocol_version,
                None,
                clock,
            ));
            // The record holds every in-flight entry, by-reference ones included.
            for (_, seq) in ledger.take_by_ref() {
                ahead.remove_queued(client, seq);
            }
        } else {
            let mut wrote_inflight = false;
            // The newest queue entry sent by reference in this step.
            let mut top: Option<u64> = None;
            for id in &changes.outgoing {
                let id = *id;
                let Some(o) = session.outgoing_parts(id) else {
                    match ledger.unmap_by_ref(id) {
                        Some(seq) => lazy.remove_queued(client, seq),
                        None => lazy.ack_inflight(client, id),
                    };
                    continue;
                };
                match ledger.by_ref_state(id, &o.delivery.message) {
                    // Unchanged (a resend): its queue entry still stands for it.
                    Some(true) => continue,
                    Some(false) => {
                        if let Some(seq) = ledger.unmap_by_ref(id) {
                            lazy.remove_queued(client, seq);
                        }
                    }
                    None => {}
                }
                // By reference only with the packet id its queue entry fixes, so that the
                // same id comes back after a restart.
                if o.delivery.qos == halyard_codec::QoS::AtLeastOnce
                    && let Some(i) = left.iter().position(|t| {
                        t.seq.is_some_and(|seq| packet_id_for(seq) == id)
                            && t.message
                                .as_ref()
                                .is_some_and(|m| Arc::ptr_eq(m, &o.delivery.message))
                    })
                {
                    let t = left.swap_remove(i);
                    if let (Some(seq), Some(m)) = (t.seq, t.message) {
                        ledger.map_by_ref(id, seq, m);
                        top = top.max(Some(seq));
                        continue;
                    }
                }
                ahead.set_inflight(client, &convert::outgoing_to_entry(&o, clock));
                wrote_inflight = true;
            }
            if wrote_inflight && ledger.has_by_ref() {
                // Keep the resend order after a crash: in-flight entries are restored before
                // the queue, so every by-reference entry becomes an in-flight entry as soon as
                // a later one is written as such.
                for (id, seq) in ledger.take_by_ref() {
                    if let Some(o) = session.outgoing_parts(id) {
                        ahead.set_inflight(client, &convert::outgoing_to_entry(&o, clock));
                    }
                    ahead.remove_queued(client, seq);
                }
            }
            for id in &changes.incoming_qos2 {
                if session.has_incoming_qos2(*id) {
                    ahead.set_incoming_qos2(client, *id);
                } else {
                    ahead.release_incoming_qos2(client, *id);
                }
            }
            if let Some(top) = top {
                lease = Self::extend_lease(ledger, client, top, &mut ahead, &mut lazy);
            }
        }
        for seq in left.into_iter().filter_map(|t| t.seq) {
            lazy.remove_queued(client, seq);
        }
        if ahead.is_empty() {
            // Nothing to wait for; removals are ordered after every earlier submission.
            if !lazy.is_empty() {
                let commit = store.submit(lazy);
                match lease {
                    Some(limit) => ledger.lease.submitted(limit, commit),
                    None => drop(commit),
                }
            }
            return Pending::ready(Ok(Committed::default()));
        }
        // Removals of entries replaced in this step commit with their replacement (a popped
        // QoS 2 delivery must not exist both queued and in flight).
        ahead.append(lazy);
        let mut pending = Pending::submit(store, ahead);
        pending.raise = lease.map(|limit| (ledger.lease.durable.clone(), limit));
        pending
    }

    /// The sent limit for a step that sent queue entries up to `top` by reference (see
    /// [`SENT_LEASE`]): below the durable limit nothing waits; past it, the step's output
    /// waits for a new limit (`ahead`); near it, a new limit goes with the removals
    /// (`lazy`). Returns the limit written, if any.
    fn extend_lease(
        ledger: &mut QueueLedger,
        client: &ClientId,
        top: u64,
        ahead: &mut Batch,
        lazy: &mut Batch,
    ) -> Option<u64> {
        ledger.lease.poll();
        let limit = top.saturating_add(SENT_LEASE);
        if top >= ledger.lease.durable() {
            ahead.set_sent_limit(client, limit);
            Some(limit)
        } else if !ledger.lease.has_pending()
            && top.saturating_add(SENT_LEASE / 2) >= ledger.lease.reach()
        {
            lazy.set_sent_limit(client, limit);
            Some(limit)
        } else {
            None
        }
    }

    /// The session's connection closed and it stays offline: writes its whole record (with
    /// the disconnect time `now`, from which its expiry counts across restarts), its
    /// in-flight state and the queue entries that left it, like
    /// [`Durability::persist_changes`]. Queue entries still pending stay as they are.
    pub fn persist_park(
        &self,
        session: &mut Session,
        ledger: &mut QueueLedger,
        protocol_version: u8,
        now: Instant,
        clock: &WallClock,
    ) -> Pending {
        let changes = session.take_changes();
        if self.store.is_none() {
            return Pending::ready(Ok(Committed::default()));
        }
        let client = session.client_id().clone();
        let mut removed = ledger.popped(changes.queue_popped);
        removed.extend(ledger.take_consumed().into_iter().filter_map(|t| t.seq));
        // The record holds every in-flight entry, by-reference ones included.
        removed.extend(ledger.take_by_ref().into_iter().map(|(_, seq)| seq));
        let record = convert::session_to_record(session, protocol_version, Some(now), clock);
        self.submit(|b| {
            b.put_session(&record);
            for seq in removed {
                b.remove_queued(&client, seq);
            }
        })
    }

    /// Replaces everything stored for the session with its current state: record, in-flight
    /// state and offline queue (every queued message is stored). Use it when a session
    /// becomes persistent (CONNECT accepted with expiry > 0) and when it is parked
    /// (`disconnected_at = Some(now)`). On `Ok`, replace the session's ledger with
    /// `QueueLedger::from_seqs(committed.seqs.into_iter().flatten())` and give the queued
    /// deliveries the packet ids their new entries fix (`Session::set_queued_packet_ids`
    /// with [`packet_id_for`]). Also starts change tracking on the session.
    pub fn persist_session(
        &self,
        session: &mut Session,
        protocol_version: u8,
        disconnected_at: Option<Instant>,
        clock: &WallClock,
    ) -> Pending {
        session.set_track_changes(self.is_enabled());
        let _ = session.take_changes();
        let parts = session.to_parts();
        self.submit(|b| {
            b.delete_session(&parts.client_id);
            b.put_session(&convert::parts_to_record(
                &parts,
                protocol_version,
                disconnected_at,
                clock,
            ));
            for d in &parts.queued {
                b.enqueue(
                    &parts.client_id,
                    &convert::delivery_to_stored(d, None, clock),
                );
            }
        })
    }

    /// Records the commit time without changing anything: after a crash, sessions that were
    /// connected count their expiry from the last commit, so a running broker calls this
    /// every [`HEARTBEAT`] to keep that estimate close to the crash.
    pub fn heartbeat(&self) -> Pending {
        self.submit(|b| {
            b.touch();
        })
    }

    /// The session ended (expired, replaced by a clean start, or closed with expiry 0):
    /// deletes it with its in-flight state and queue. Its will is kept (see
    /// [`Durability::delete_will`]).
    pub fn delete_session(&self, client_id: &str) -> Pending {
        self.submit(|b| {
            b.delete_session(client_id);
        })
    }

    /// A will waiting for its delay: stores it to fire at `fire_at`.
    pub fn put_will(
        &self,
        client_id: &ClientId,
        will: &Will,
        fire_at: Instant,
        clock: &WallClock,
    ) -> Pending {
        self.submit(|b| {
            b.put_will(
                client_id,
                &convert::will_to_record(will, client_id, fire_at, clock),
            );
        })
    }

    /// A pending will was published or cancelled (the client resumed its session).
    pub fn delete_will(&self, client_id: &str) -> Pending {
        self.submit(|b| {
            b.delete_will(client_id);
        })
    }

    /// A retained message changed outside a PUBLISH (e.g. a will with RETAIN): stores it, or
    /// deletes it for an empty payload.
    pub fn persist_retained(&self, message: &Message, clock: &WallClock) -> Pending {
        self.persist_publish(message, &[], clock)
    }
}
