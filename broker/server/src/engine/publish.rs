//! The publish path: retained update, trie match, per-session merge, per-thread batching.
//! Takes no lock except the retained index's (only for RETAIN=1 messages).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use halyard_codec::QoS;
use halyard_session::{Delivery, Message};
use halyard_topics::Match;
use smallvec::SmallVec;

use super::{Broker, Routed, SessionKey, SubValue, Subscriber};
use crate::cluster::retained::RetainWait;
use crate::cluster::{Forward, Scope};
use crate::durable::DurableTarget;
use crate::metrics::{Limit, ThreadStats};

/// Deliveries collected during one batch of input, grouped by destination thread.
#[derive(Debug)]
pub struct Outbox {
    /// One batch per destination thread, indexed by thread; grown on the first push, so an
    /// outbox that never routed anything (an idle connection's) allocates nothing. With
    /// several threads, routing writes each delivery straight into its thread's batch
    /// ([`route_acked`]).
    per_thread: Vec<Vec<Routed>>,
    /// Number of I/O threads (deliveries for others are dropped).
    threads: usize,
}

impl Outbox {
    /// An empty outbox for `threads` threads.
    pub fn new(threads: usize) -> Self {
        Outbox {
            per_thread: Vec::new(),
            threads,
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.per_thread.iter().all(Vec::is_empty)
    }

    /// Adds one delivery for the thread in its route. A thread's batch starts from one of
    /// the thread's spare batches ([`spare_batch`]): a batch sent to another thread leaves
    /// with its capacity, and growing a new one from nothing for every read of a publisher
    /// reallocated it several times.
    pub fn push(&mut self, routed: Routed) {
        let t = routed.thread();
        if t >= self.threads {
            return;
        }
        self.grow();
        let batch = &mut self.per_thread[t];
        if batch.capacity() == 0 {
            *batch = spare_batch(None);
        }
        batch.push(routed);
    }

    /// Gives the outbox its batches (empty, unallocated) once it is used.
    fn grow(&mut self) {
        if self.per_thread.len() < self.threads {
            self.per_thread.resize_with(self.threads, Vec::new);
        }
    }

    /// The batch for `thread` when no other thread has one (the common case with one I/O
    /// thread, or subscribers on the publisher's thread); `None` otherwise, the outbox then
    /// left as it was.
    pub fn take_only(&mut self, thread: usize) -> Option<Vec<Routed>> {
        let others_empty = self
            .per_thread
            .iter()
            .enumerate()
            .all(|(t, b)| t == thread || b.is_empty());
        let batch = self.per_thread.get_mut(thread)?;
        if !others_empty || batch.is_empty() {
            return None;
        }
        Some(std::mem::take(batch))
    }

    /// Takes the non-empty batches as (thread, batch).
    pub fn drain(&mut self) -> impl Iterator<Item = (usize, Vec<Routed>)> + '_ {
        self.per_thread
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, b)| (t, std::mem::take(b)))
    }
}

/// Where each session's first delivery of one PUBLISH sits in the output (list, position),
/// for merging overlapping subscriptions (see [`merge_sessions`]).
type Targets = HashMap<SessionKey, (usize, usize), ahash::RandomState>;

/// Largest delivery batch (in deliveries, ~100 B each) a thread keeps for reuse once
/// delivered (see [`recycle_batch`]); a larger one is freed.
pub const SPARE_BATCH_MAX: usize = 4096;

/// Most spare delivery batches a thread keeps (see [`recycle_batch`]): routing with several
/// I/O threads holds one per destination thread at once; beyond this many the smallest is
/// freed. At most `SPARE_BATCHES` x [`SPARE_BATCH_MAX`] deliveries of capacity per thread.
pub const SPARE_BATCHES: usize = 4;

thread_local! {
    /// Each thread's scratch map for [`route_scoped`]: emptied after every PUBLISH but kept
    /// allocated, so routing does not grow a fresh map for every message. Its capacity is
    /// bounded by the largest fan-out seen (the sessions one topic matches).
    static TARGETS: RefCell<Targets> = RefCell::new(Targets::default());
    /// Empty delivery batches kept by each thread (at most [`SPARE_BATCHES`], each of at
    /// most [`SPARE_BATCH_MAX`] entries of capacity), so that a fan-out's batch, or a batch
    /// for another thread, is not grown from nothing, reallocated and copied several times,
    /// for every read of its publisher. Batches that other threads sent here end up here
    /// once delivered, so with two threads routing to each other the batches go back and
    /// forth instead of being allocated on one thread and freed on the other; what does not
    /// fit here goes to the broker's [`BatchPool`].
    static SPARE_BATCH: RefCell<Vec<Vec<Routed>>> = const { RefCell::new(Vec::new()) };
}

/// Largest delivery batch (in deliveries) the shared [`BatchPool`] keeps: the batches a
/// publisher's thread fills for another thread in a fan-out (4 000-5 500 deliveries per
/// publisher read with two threads at window 256, capacity up to 8 192) are larger than a
/// thread's own spares may be ([`SPARE_BATCH_MAX`]); one thread's fan-out batches (~23 000
/// deliveries per read, ~2.3 MB) are not kept.
pub const POOL_BATCH_MAX: usize = 16 * 1024;

/// Batches the shared [`BatchPool`] holds per I/O thread: at most `threads` x this x
/// [`POOL_BATCH_MAX`] deliveries of capacity (~1.5 MB per thread at ~90 B a delivery).
pub const POOL_BATCHES_PER_THREAD: usize = 1;

/// Emptied delivery batches shared by the I/O threads (bounded: see
/// [`POOL_BATCHES_PER_THREAD`], [`POOL_BATCH_MAX`]). A batch routed on one thread for
/// another is emptied on the receiving thread; in a fan-out that thread may never route
/// (its connections only subscribe), so without a way back the routing thread allocated every
/// such batch anew and grew it by doubling for every read of its publisher, and the receiving
/// thread freed it. A thread puts here what its own spares do not keep (too large, or its
/// spares full) and takes from here when it has no spare of its own.
#[derive(Debug)]
pub struct BatchPool {
    batches: std::sync::Mutex<Vec<Vec<Routed>>>,
    /// Batches held (kept beside the list so that an empty pool is seen without the lock).
    held: AtomicUsize,
    /// Most batches held.
    cap: usize,
}

impl BatchPool {
    /// A pool for `threads` I/O threads.
    pub fn new(threads: usize) -> Self {
        BatchPool {
            batches: std::sync::Mutex::new(Vec::new()),
            held: AtomicUsize::new(0),
            cap: threads * POOL_BATCHES_PER_THREAD,
        }
    }

    /// The largest batch held, if any.
    fn take(&self) -> Option<Vec<Routed>> {
        if self.held.load(Relaxed) == 0 {
            return None;
        }
        let mut batches = self.batches.lock().ok()?;
        let batch = take_largest(&mut batches);
        self.held.store(batches.len(), Relaxed);
        batch
    }

    /// Keeps `batch` (emptied, at most [`POOL_BATCH_MAX`] of capacity) or, when the pool is
    /// full, in place of a smaller one held. True when a batch was freed because of a limit.
    fn give(&self, batch: Vec<Routed>) -> bool {
        if batch.capacity() > POOL_BATCH_MAX || self.cap == 0 {
            return true;
        }
        let Ok(mut batches) = self.batches.lock() else {
            return true;
        };
        let freed = keep_largest(&mut batches, self.cap, batch).is_some();
        self.held.store(batches.len(), Relaxed);
        freed
    }
}

/// Takes the largest batch out of `batches` (a thread's spares, or the pool's).
fn take_largest(batches: &mut Vec<Vec<Routed>>) -> Option<Vec<Routed>> {
    let largest = (0..batches.len()).max_by_key(|&i| batches[i].capacity())?;
    Some(batches.swap_remove(largest))
}

/// Keeps `batch` in `batches` (a thread's spares, or the pool's) when they hold fewer than
/// `cap`, else in place of the smallest if that is smaller. The batch left out (that one, or
/// `batch` itself), if any.
fn keep_largest(
    batches: &mut Vec<Vec<Routed>>,
    cap: usize,
    batch: Vec<Routed>,
) -> Option<Vec<Routed>> {
    if batches.len() < cap {
        batches.push(batch);
        return None;
    }
    match batches.iter_mut().min_by_key(|s| s.capacity()) {
        Some(smallest) if smallest.capacity() < batch.capacity() => {
            Some(std::mem::replace(smallest, batch))
        }
        _ => Some(batch),
    }
}

/// The thread's largest spare delivery batch (empty; with capacity when one was recycled),
/// else one from `pool` (when given), else a new one.
fn spare_batch(pool: Option<&BatchPool>) -> Vec<Routed> {
    let own = SPARE_BATCH
        .try_with(|b| {
            b.try_borrow_mut()
                .ok()
                .and_then(|mut spares| take_largest(&mut spares))
        })
        .ok()
        .flatten();
    own.or_else(|| pool.and_then(BatchPool::take))
        .unwrap_or_default()
}

/// Gives a delivered batch back for the next fan-out (emptied): to the thread's own spares
/// when it fits there (at most [`SPARE_BATCH_MAX`] entries of capacity; when the thread
/// holds [`SPARE_BATCHES`] already, in place of the smallest if that is smaller), else to
/// `pool`. True when a batch's memory was freed because of a limit (this one, or a smaller
/// spare it replaced): the caller counts it as the `spare_batches` limit.
pub fn recycle_batch(mut batch: Vec<Routed>, pool: &BatchPool) -> bool {
    if batch.capacity() == 0 {
        return false;
    }
    batch.clear();
    if batch.capacity() > SPARE_BATCH_MAX {
        return pool.give(batch);
    }
    let overflow = SPARE_BATCH
        .try_with(|b| {
            let Ok(mut spares) = b.try_borrow_mut() else {
                return Some(batch);
            };
            keep_largest(&mut spares, SPARE_BATCHES, batch)
        })
        .unwrap_or(None);
    overflow.is_some_and(|b| pool.give(b))
}

/// Whether routing keeps each delivery's subscriber `Arc`s (route, client id) in its
/// [`Routed`]: needed where deliveries are placed after a wait, during which the session may
/// move (store commit, cluster forwarding, will messages), and for the store's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Placed in the same step: the session's thread is read when routing, no `Arc` cloned.
    Thread,
    /// Placed later, or stored first: the route and client id are cloned from the trie.
    Subscriber,
}

/// Deliveries of one PUBLISH to one I/O thread from which routing gives that thread a copy
/// of the message of its own ([`ThreadCopies`]) instead of references to the publisher's.
/// Every delivery holds a reference (`Arc<Message>`) and drops it when the message is sent
/// (QoS 0) or acknowledged (QoS 1/2): with the receivers of a fan-out on two threads, both
/// cores updated the one reference count, and its cache line (which also holds the topic and
/// payload fields that every encode reads) moved between them for each delivery. A copy
/// costs one allocation and the clone of the message's fields (its topic and payload stay
/// shared: one count update each per copy), and is freed on the thread it was made for:
/// worth it from a few deliveries on, never for one (point to point, fan-in).
pub const THREAD_COPY_MIN: usize = 4;

/// The message each delivery of one PUBLISH gets, per destination thread: the thread of the
/// first delivery keeps the publisher's message, any other thread with at least
/// [`THREAD_COPY_MIN`] deliveries gets one copy of its own (see there), made when its count
/// reaches that; the deliveries routed to it before then are switched to the copy at the end
/// ([`Self::finish`]). Used only when routing into per-thread batches ([`Lists::PerThread`]:
/// several I/O threads, deliveries placed at once); with one I/O thread nothing is tracked.
struct ThreadCopies {
    /// The thread of the first delivery (keeps the original).
    first: Option<usize>,
    /// The other threads the message goes to.
    others: SmallVec<[OtherThread; 2]>,
}

/// One thread in [`ThreadCopies::others`].
struct OtherThread {
    thread: usize,
    /// Deliveries to it so far.
    deliveries: usize,
    /// Its copy, once made.
    copy: Option<Arc<Message>>,
}

impl ThreadCopies {
    fn new() -> Self {
        ThreadCopies {
            first: None,
            others: SmallVec::new(),
        }
    }

    /// The message for the next delivery to `thread`.
    fn message_for<'a>(
        &'a mut self,
        thread: usize,
        original: &'a Arc<Message>,
    ) -> &'a Arc<Message> {
        let first = *self.first.get_or_insert(thread);
        if first == thread {
            return original;
        }
        let i = match self.others.iter().position(|o| o.thread == thread) {
            Some(i) => i,
            None => {
                self.others.push(OtherThread {
                    thread,
                    deliveries: 0,
                    copy: None,
                });
                self.others.len() - 1
            }
        };
        let other = &mut self.others[i];
        other.deliveries += 1;
        if other.copy.is_none() && other.deliveries >= THREAD_COPY_MIN {
            other.copy = Some(Arc::new(Message::clone(original)));
        }
        other.copy.as_ref().unwrap_or(original)
    }

    /// Switches the deliveries routed to a thread before its copy existed to it: the first
    /// `THREAD_COPY_MIN - 1` this PUBLISH added to that thread's batch (`batches[t]` from
    /// `starts[t]` on; before the merge of [`merge_sessions`], which may drop some).
    fn finish(&self, batches: &mut [Vec<Routed>], starts: &[usize], original: &Arc<Message>) {
        for other in &self.others {
            let (Some(copy), Some(batch), Some(&start)) = (
                &other.copy,
                batches.get_mut(other.thread),
                starts.get(other.thread),
            ) else {
                continue;
            };
            for r in batch.iter_mut().skip(start).take(THREAD_COPY_MIN - 1) {
                if Arc::ptr_eq(&r.delivery.message, original) {
                    r.delivery.message = copy.clone();
                }
            }
        }
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if a.as_u8() <= b.as_u8() { a } else { b }
}

/// Stores or deletes the retained message for `message.topic` [MQTT-3.3.1-5]
/// [MQTT-3.3.1-6] [MQTT-3.3.1-7]. In a cluster the update is proposed to the core group
/// instead (the local index follows once it is applied here; see `cluster::retained`) and
/// the wait for its commit is returned: a QoS 1/2 publisher awaits it before its
/// PUBACK/PUBREC, others may drop it (the update still happens, in order).
pub fn update_retained(
    broker: &Broker,
    stats: &ThreadStats,
    message: &Arc<Message>,
) -> Option<RetainWait> {
    if let Some(cluster) = broker.cluster.get() {
        return match cluster.retain(message) {
            Ok(wait) => Some(wait),
            Err(halyard_cluster::ClusterError::RetainedFull(reason)) => {
                stats.hit_limit(Limit::MaxRetainedMessages);
                tracing::debug!(%reason, "retained message not kept");
                None
            }
            Err(e) => {
                let failed: RetainWait = Box::pin(async move { Err(e) });
                Some(failed)
            }
        };
    }
    if message.payload.is_empty() {
        broker.retained.remove(&message.topic);
    } else {
        let exists = broker.retained.get_with(&message.topic, |_| ()).is_some();
        if !exists && broker.retained.len() >= broker.config.limits.max_retained_messages {
            stats.hit_limit(Limit::MaxRetainedMessages);
            return None;
        }
        if let Err(e) = broker.retained.set(&message.topic, message.clone()) {
            tracing::debug!(error = %e, "retained message not stored");
        }
    }
    let n = i64::try_from(broker.retained.len()).unwrap_or(i64::MAX);
    broker
        .metrics
        .retained
        .store(n, std::sync::atomic::Ordering::Relaxed);
    None
}

/// Matches `message` and pushes one delivery per matching session into `outbox`:
/// No Local applied [MQTT-3.8.3-3]; overlapping subscriptions of a session merged into one
/// copy at the highest granted QoS carrying every subscription identifier [MQTT-3.3.4-2]
/// [MQTT-3.3.4-3]; one member per shared group, round robin. Returns the number of sessions.
pub fn route(broker: &Broker, message: &Arc<Message>, outbox: &mut Outbox) -> usize {
    route_acked(broker, message, outbox, Forward::Unacked).0
}

/// As [`route`]; in a cluster, also returns the wait for the other nodes' acknowledgements
/// of a QoS 1/2 message forwarded with `mode` (await it before the PUBACK/PUBREC).
///
/// Each delivery is written once, into its destination thread's batch (with one I/O
/// thread, the only batch); with several threads the merge of overlapping subscriptions and
/// the per-thread copies of the message work on what this PUBLISH added to each batch.
pub fn route_acked(
    broker: &Broker,
    message: &Arc<Message>,
    outbox: &mut Outbox,
    mode: Forward,
) -> (usize, Option<crate::cluster::AckWait>) {
    outbox.grow();
    let lists = match outbox.per_thread.as_mut_slice() {
        [only] => {
            if only.capacity() == 0 {
                *only = spare_batch(Some(&broker.spare_batches));
            }
            Lists::One(only, Keep::Thread)
        }
        batches => Lists::PerThread(batches),
    };
    route_kept(broker, message, lists, mode)
}

/// The durable targets among `routed` (QoS 1/2 to persistent sessions), in order.
pub fn durable_targets(routed: &[Routed]) -> Vec<DurableTarget<'_>> {
    routed
        .iter()
        .filter(|r| r.is_durable_target())
        .filter_map(|r| {
            r.subscriber.as_ref().map(|s| DurableTarget {
                client_id: &s.client_id,
                delivery: &r.delivery,
            })
        })
        .collect()
}

/// Writes the queue sequence numbers of a resolved `persist_publish` into the durable
/// targets of `routed` (same order as [`durable_targets`]), and the packet id each entry
/// fixes ([`crate::durable::packet_id_for`]).
pub fn apply_seqs(routed: &mut [Routed], seqs: Vec<Option<u64>>) {
    for (r, seq) in routed
        .iter_mut()
        .filter(|r| r.is_durable_target())
        .zip(seqs)
    {
        r.seq = seq;
        // The queue entry fixes the packet id (the same after a restart).
        if r.delivery.qos != QoS::AtMostOnce {
            r.delivery.packet_id = seq.map(crate::durable::packet_id_for);
        }
    }
}

/// As [`route`], into a plain list (the caller stores the durable targets first and places
/// the deliveries after that: the subscribers' routes are kept), forwarding to the other
/// nodes of a cluster (see [`crate::cluster::Cluster::dispatch`]).
pub fn route_collect_acked(
    broker: &Broker,
    message: &Arc<Message>,
    out: &mut Vec<Routed>,
    mode: Forward,
) -> (usize, Option<crate::cluster::AckWait>) {
    route_kept(broker, message, Lists::One(out, Keep::Subscriber), mode)
}

/// Where routing writes one PUBLISH's deliveries.
enum Lists<'a> {
    /// One list for every thread, keeping what the [`Keep`] says.
    One(&'a mut Vec<Routed>, Keep),
    /// One batch per I/O thread (indexed by thread; a delivery for a thread beyond them is
    /// dropped, as by [`Outbox::push`]), placed at once ([`Keep::Thread`]), with the
    /// message copied per thread ([`ThreadCopies`]). Empty batches start from the thread's
    /// spares ([`spare_batch`]).
    PerThread(&'a mut [Vec<Routed>]),
}

/// [`route_collect_acked`] into `lists`.
fn route_kept(
    broker: &Broker,
    message: &Arc<Message>,
    lists: Lists<'_>,
    mode: Forward,
) -> (usize, Option<crate::cluster::AckWait>) {
    match broker.cluster.get() {
        None => (route_lists(broker, message, lists, &Scope::All), None),
        Some(c) => {
            let (elsewhere, wait) = c.dispatch(message, mode);
            let scope = Scope::Publisher {
                elsewhere: &elsewhere,
            };
            (route_lists(broker, message, lists, &scope), wait)
        }
    }
}

/// Matches `message` against the local trie within `scope` (which subscribers this node
/// serves for it), one delivery per matching session into `out`, keeping what `keep` says.
pub fn route_scoped(
    broker: &Broker,
    message: &Arc<Message>,
    out: &mut Vec<Routed>,
    scope: &Scope<'_>,
    keep: Keep,
) -> usize {
    route_lists(broker, message, Lists::One(out, keep), scope)
}

/// [`route_scoped`] into `lists`.
fn route_lists(
    broker: &Broker,
    message: &Arc<Message>,
    lists: Lists<'_>,
    scope: &Scope<'_>,
) -> usize {
    TARGETS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut targets) => collect_targets(broker, message, lists, scope, &mut targets),
        // Only a nested call could find it borrowed: use a map of its own.
        Err(_) => collect_targets(broker, message, lists, scope, &mut Targets::default()),
    })
}

/// The body of [`route_scoped`]: one delivery per matched subscription straight into its
/// list; then, only when the matches came from more than one filter or shared group (a
/// session can then appear twice; within one filter's subscriber map it cannot), the
/// deliveries of one session are merged through `targets` (empty on entry and on return)
/// into its first one ([`merge_sessions`]). The common fan-out (one filter, many
/// subscribers) thus hashes nothing.
fn collect_targets(
    broker: &Broker,
    message: &Arc<Message>,
    lists: Lists<'_>,
    scope: &Scope<'_>,
    targets: &mut Targets,
) -> usize {
    let (lists, keep, by_thread) = match lists {
        Lists::One(out, keep) => (std::slice::from_mut(out), keep, false),
        Lists::PerThread(batches) => (batches, Keep::Thread, true),
    };
    let starts: SmallVec<[usize; 4]> = lists.iter().map(Vec::len).collect();
    let mut copies = by_thread.then(ThreadCopies::new);
    let publisher = message.publisher.as_deref();
    let acl = broker.security.restricted_acl();
    // Filters and shared groups that contributed (a leaf is visited in one run).
    let mut sources = 0usize;
    let mut last_filter: *const u8 = std::ptr::null();
    let mut add = |key: SessionKey, value: &SubValue, no_local_applies: bool| {
        if no_local_applies && value.options.no_local && publisher == Some(&*value.client_id) {
            return;
        }
        if let Some(acl) = &acl
            && !acl.check_topic(
                &value.client_id,
                value.username.as_deref(),
                &message.topic,
                halyard_auth::Access::Read,
            )
        {
            broker.security.count(crate::security::Denial::Delivery);
            return;
        }
        let thread = value.route.thread();
        let Some(list) = lists.get_mut(if by_thread { thread } else { 0 }) else {
            return;
        };
        if by_thread && list.capacity() == 0 {
            *list = spare_batch(Some(&broker.spare_batches));
        }
        let mut subscription_ids = SmallVec::new();
        if let Some(id) = value.subscription_id {
            subscription_ids.push(id);
        }
        let shared = match copies.as_mut() {
            Some(c) => c.message_for(thread, message),
            None => message,
        };
        list.push(Routed {
            key,
            routed_to: thread,
            subscriber: (keep == Keep::Subscriber).then(|| Subscriber {
                route: value.route.clone(),
                client_id: value.client_id.clone(),
            }),
            delivery: Delivery {
                message: shared.clone(),
                qos: min_qos(value.options.qos, message.qos),
                retain: value.options.retain_as_published && message.retain,
                subscription_ids,
                packet_id: None,
            },
            seq: None,
        });
    };
    broker.trie.for_each_match(&message.topic, |m| match m {
        Match::Subscriber { key, value, filter } => {
            if scope.ordinary() {
                if filter.as_ptr() != last_filter {
                    last_filter = filter.as_ptr();
                    sources += 1;
                }
                add(*key, value, true);
            }
        }
        Match::Shared(group) if !scope.serves_group(group.name(), group.filter()) => {}
        Match::Shared(group) => {
            if let Some((key, value)) = group.pick_round_robin() {
                sources += 1;
                add(*key, value, false);
            }
        }
    });
    if let Some(c) = &copies {
        c.finish(lists, &starts, message);
    }
    if sources > 1 {
        merge_sessions(lists, &starts, targets);
    }
    lists.iter().zip(&starts).map(|(l, s)| l.len() - s).sum()
}

/// Merges the deliveries that go to the same session (`lists[i]` from `starts[i]` on: what
/// one PUBLISH added) into its first one: the highest QoS, RETAIN if any subscription keeps
/// it, every subscription identifier in match order [MQTT-3.3.4-2] [MQTT-3.3.4-3]. Each list
/// keeps the order of the deliveries it keeps. A session's deliveries are in one list (its
/// thread's) unless its thread changed during the match (a takeover): the later one is then
/// merged into the first list's and dropped from its own, so that the session still gets
/// one copy (it is forwarded from the thread it left). `targets` is empty on entry and on
/// return.
fn merge_sessions(lists: &mut [Vec<Routed>], starts: &[usize], targets: &mut Targets) {
    use std::collections::hash_map::Entry;
    // Merges into another list than their own, done once every list is compacted.
    let mut strays: Vec<((usize, usize), Merged)> = Vec::new();
    for (l, (list, &start)) in lists.iter_mut().zip(starts).enumerate() {
        // In place: the deliveries kept move down over those merged away, which end up
        // after `kept` and are dropped.
        let mut kept = start;
        for i in start..list.len() {
            match targets.entry(list[i].key) {
                Entry::Vacant(e) => {
                    e.insert((l, kept));
                    list.swap(kept, i);
                    kept += 1;
                }
                Entry::Occupied(e) => {
                    let (first_list, at) = *e.get();
                    let (head, tail) = list.split_at_mut(i);
                    let later = Merged::take(&mut tail[0].delivery);
                    if first_list == l {
                        later.merge_into(&mut head[at].delivery);
                    } else {
                        strays.push(((first_list, at), later));
                    }
                }
            }
        }
        list.truncate(kept);
    }
    for ((l, at), later) in strays {
        if let Some(first) = lists.get_mut(l).and_then(|list| list.get_mut(at)) {
            later.merge_into(&mut first.delivery);
        }
    }
    targets.clear();
}

/// What a delivery merged away adds to the session's first one (see [`merge_sessions`]).
struct Merged {
    qos: QoS,
    retain: bool,
    subscription_ids: SmallVec<[u32; 2]>,
}

impl Merged {
    /// Takes what `later` adds (its identifiers are moved out).
    fn take(later: &mut Delivery) -> Self {
        Merged {
            qos: later.qos,
            retain: later.retain,
            subscription_ids: std::mem::take(&mut later.subscription_ids),
        }
    }

    /// Merges into `first`: the higher QoS, RETAIN if either, the identifiers appended.
    fn merge_into(self, first: &mut Delivery) {
        if self.qos.as_u8() > first.qos.as_u8() {
            first.qos = self.qos;
        }
        first.retain |= self.retain;
        first.subscription_ids.extend(self.subscription_ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(
        message: &Arc<Message>,
        key: SessionKey,
        thread: usize,
        qos: QoS,
        id: u32,
    ) -> Routed {
        Routed {
            key,
            routed_to: thread,
            subscriber: None,
            delivery: Delivery {
                message: message.clone(),
                qos,
                retain: false,
                subscription_ids: SmallVec::from_slice(&[id]),
                packet_id: None,
            },
            seq: None,
        }
    }

    /// The merge works on what the PUBLISH added to each list (from its start on), keeps
    /// each list's order, and merges a session found in two lists (its thread changed
    /// during the match) into the first list's delivery.
    #[test]
    fn merge_sessions_per_list_from_their_starts() {
        let m = Arc::new(Message {
            topic: halyard_codec::MqttString::from("t"),
            payload: bytes::Bytes::from_static(b"p"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: halyard_session::MessageProperties::default(),
            expires_at: None,
            publisher: None,
        });
        let (q0, q1, q2) = (QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce);
        let mut lists = vec![
            vec![
                // Routed by an earlier PUBLISH: not merged.
                delivery(&m, 1, 0, q0, 90),
                delivery(&m, 1, 0, q0, 1),
                delivery(&m, 2, 0, q0, 2),
                delivery(&m, 1, 0, q1, 11),
                delivery(&m, 3, 0, q0, 3),
            ],
            vec![
                delivery(&m, 4, 1, q0, 4),
                delivery(&m, 2, 1, q2, 22),
                delivery(&m, 4, 1, q0, 44),
                delivery(&m, 5, 1, q0, 5),
            ],
        ];
        let mut targets = Targets::default();
        merge_sessions(&mut lists, &[1, 0], &mut targets);
        assert!(targets.is_empty());
        let seen = |list: &Vec<Routed>| -> Vec<(SessionKey, QoS, Vec<u32>)> {
            list.iter()
                .map(|r| (r.key, r.delivery.qos, r.delivery.subscription_ids.to_vec()))
                .collect()
        };
        assert_eq!(
            seen(&lists[0]),
            [
                (1, q0, vec![90]),
                (1, q1, vec![1, 11]),
                (2, q2, vec![2, 22]),
                (3, q0, vec![3]),
            ]
        );
        assert_eq!(seen(&lists[1]), [(4, q0, vec![4, 44]), (5, q0, vec![5])]);
    }

    /// A thread keeps at most [`SPARE_BATCHES`] spare batches, the largest ones, and hands
    /// out the largest first.
    #[test]
    fn spare_batches_are_bounded_and_largest_first() {
        // No pool to overflow into: the thread's own spares only.
        let pool = BatchPool::new(0);
        // The first four are kept; each later one frees a batch (the smallest spare it
        // replaces, or itself): a limit hit.
        let freed: Vec<bool> = [10, 15, 11, 14, 12, 13]
            .into_iter()
            .map(|cap| recycle_batch(Vec::with_capacity(cap), &pool))
            .collect();
        assert_eq!(freed, [false, false, false, false, true, true]);
        // Not kept: empty (nothing to keep, no limit hit) or above the limit (a hit).
        assert!(!recycle_batch(Vec::new(), &pool));
        assert!(recycle_batch(
            Vec::with_capacity(SPARE_BATCH_MAX + 1),
            &pool
        ));
        let caps: Vec<usize> = (0..=SPARE_BATCHES)
            .map(|_| spare_batch(Some(&pool)).capacity())
            .collect();
        assert_eq!(caps, [15, 14, 13, 12, 0]);
    }

    /// A batch emptied on another thread, too large for that thread's spares or beyond them,
    /// comes back through the pool to a thread that has no spare of its own; the pool is
    /// bounded in batches and in each batch's capacity.
    #[test]
    fn emptied_batches_come_back_through_the_pool() {
        let pool = BatchPool::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                // A fan-out batch for another thread (larger than a thread's own spares).
                assert!(!recycle_batch(
                    Vec::with_capacity(SPARE_BATCH_MAX * 2),
                    &pool
                ));
                // Fills the receiving thread's own spares, then one more: into the pool.
                for _ in 0..SPARE_BATCHES {
                    assert!(!recycle_batch(Vec::with_capacity(100), &pool));
                }
                assert!(!recycle_batch(Vec::with_capacity(50), &pool));
                // The pool is full (2 batches): a larger one replaces the smallest (freed),
                // one above the pool's limit is freed.
                assert!(recycle_batch(Vec::with_capacity(60), &pool));
                assert!(recycle_batch(Vec::with_capacity(POOL_BATCH_MAX + 1), &pool));
            })
            .join()
            .unwrap();
        });
        // This thread has no spares: it gets the pool's batches, largest first.
        assert_eq!(spare_batch(Some(&pool)).capacity(), SPARE_BATCH_MAX * 2);
        assert_eq!(spare_batch(Some(&pool)).capacity(), 60);
        assert_eq!(spare_batch(Some(&pool)).capacity(), 0);
    }
}
