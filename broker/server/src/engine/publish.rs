//! The publish path: retained update, trie match, per-session merge, per-thread batching.
//! Takes no lock except the retained index's (only for RETAIN=1 messages).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// outbox that never routed anything (an idle connection's) allocates nothing.
    per_thread: Vec<Vec<Routed>>,
    /// Number of I/O threads (deliveries for others are dropped).
    threads: usize,
    /// With several threads: the list each PUBLISH is routed into before its deliveries
    /// go to their threads' batches, kept (empty) from one PUBLISH to the next while the
    /// outbox fills, and given back to the thread's spares ([`recycle_batch`]) when the
    /// outbox is emptied, so that routing a read's PUBLISHes touches the spares once.
    scratch: Vec<Routed>,
}

impl Outbox {
    /// An empty outbox for `threads` threads.
    pub fn new(threads: usize) -> Self {
        Outbox {
            per_thread: Vec::new(),
            threads,
            scratch: Vec::new(),
        }
    }

    /// Gives the routing scratch list back to the thread's spares (see [`Self::scratch`]);
    /// done by [`Self::take_only`] and [`Self::drain`] too.
    pub fn release_scratch(&mut self) {
        if self.scratch.capacity() > 0 {
            recycle_batch(std::mem::take(&mut self.scratch));
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
        if self.per_thread.len() <= t {
            self.per_thread.resize_with(self.threads, Vec::new);
        }
        let batch = &mut self.per_thread[t];
        if batch.capacity() == 0 {
            *batch = spare_batch();
        }
        batch.push(routed);
    }

    /// The batch for `thread` when no other thread has one (the common case with one I/O
    /// thread, or subscribers on the publisher's thread); `None` otherwise, the outbox then
    /// left as it was.
    pub fn take_only(&mut self, thread: usize) -> Option<Vec<Routed>> {
        self.release_scratch();
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
        self.release_scratch();
        self.per_thread
            .iter_mut()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .map(|(t, b)| (t, std::mem::take(b)))
    }
}

/// Where each session's first delivery of one PUBLISH sits in the output, for merging
/// overlapping subscriptions (see [`collect_targets`]).
type Targets = HashMap<SessionKey, usize, ahash::RandomState>;

/// Largest delivery batch (in deliveries, ~100 B each) a thread keeps for reuse once
/// delivered (see [`recycle_batch`]); a larger one is freed.
pub const SPARE_BATCH_MAX: usize = 4096;

/// Most spare delivery batches a thread keeps (see [`recycle_batch`]): routing with several
/// I/O threads holds one for its scratch list and one per destination thread at once;
/// beyond this many the smallest is freed. At most `SPARE_BATCHES` x [`SPARE_BATCH_MAX`]
/// deliveries of capacity per thread.
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
    /// forth instead of being allocated on one thread and freed on the other.
    static SPARE_BATCH: RefCell<Vec<Vec<Routed>>> = const { RefCell::new(Vec::new()) };
}

/// The thread's largest spare delivery batch (empty; with capacity when one was recycled).
fn spare_batch() -> Vec<Routed> {
    SPARE_BATCH
        .try_with(|b| {
            b.try_borrow_mut().map(|mut spares| {
                let largest = (0..spares.len()).max_by_key(|&i| spares[i].capacity());
                largest.map(|i| spares.swap_remove(i)).unwrap_or_default()
            })
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Gives a delivered batch back to its thread for the next fan-out (emptied; kept only up
/// to [`SPARE_BATCH_MAX`] entries of capacity; when the thread holds [`SPARE_BATCHES`]
/// already, in place of the smallest if that is smaller).
pub fn recycle_batch(mut batch: Vec<Routed>) {
    if batch.capacity() == 0 || batch.capacity() > SPARE_BATCH_MAX {
        return;
    }
    batch.clear();
    let _ = SPARE_BATCH.try_with(|b| {
        let Ok(mut spares) = b.try_borrow_mut() else {
            return;
        };
        if spares.len() < SPARE_BATCHES {
            spares.push(batch);
        } else if let Some(smallest) = spares.iter_mut().min_by_key(|s| s.capacity())
            && smallest.capacity() < batch.capacity()
        {
            *smallest = batch;
        }
    });
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
/// ([`Self::finish`]). Used only for deliveries placed at once (no store, see
/// [`Keep::Thread`]); with one I/O thread it never copies.
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

    /// Switches the deliveries in `routed` made before their thread's copy existed to it.
    fn finish(&self, routed: &mut [Routed], original: &Arc<Message>) {
        if self.others.iter().all(|o| o.copy.is_none()) {
            return;
        }
        for r in routed {
            let copy = self
                .others
                .iter()
                .find(|o| o.thread == r.routed_to)
                .and_then(|o| o.copy.as_ref());
            if let Some(copy) = copy
                && Arc::ptr_eq(&r.delivery.message, original)
            {
                r.delivery.message = copy.clone();
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
pub fn route_acked(
    broker: &Broker,
    message: &Arc<Message>,
    outbox: &mut Outbox,
    mode: Forward,
) -> (usize, Option<crate::cluster::AckWait>) {
    if outbox.threads == 1 && outbox.per_thread.is_empty() {
        outbox.per_thread.push(Vec::new());
    }
    if let [only] = outbox.per_thread.as_mut_slice() {
        // One I/O thread: every delivery goes to it, straight into its batch.
        if only.capacity() == 0 {
            *only = spare_batch();
        }
        return route_kept(broker, message, only, mode, Keep::Thread);
    }
    let mut routed = std::mem::take(&mut outbox.scratch);
    if routed.capacity() == 0 {
        routed = spare_batch();
    }
    let (n, wait) = route_kept(broker, message, &mut routed, mode, Keep::Thread);
    for r in routed.drain(..) {
        outbox.push(r);
    }
    outbox.scratch = routed;
    (n, wait)
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
    route_kept(broker, message, out, mode, Keep::Subscriber)
}

/// [`route_collect_acked`] keeping what `keep` says.
fn route_kept(
    broker: &Broker,
    message: &Arc<Message>,
    out: &mut Vec<Routed>,
    mode: Forward,
    keep: Keep,
) -> (usize, Option<crate::cluster::AckWait>) {
    match broker.cluster.get() {
        None => (route_scoped(broker, message, out, &Scope::All, keep), None),
        Some(c) => {
            let (elsewhere, wait) = c.dispatch(message, mode);
            let scope = Scope::Publisher {
                elsewhere: &elsewhere,
            };
            (route_scoped(broker, message, out, &scope, keep), wait)
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
    TARGETS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut targets) => collect_targets(broker, message, out, scope, keep, &mut targets),
        // Only a nested call could find it borrowed: use a map of its own.
        Err(_) => collect_targets(broker, message, out, scope, keep, &mut Targets::default()),
    })
}

/// The body of [`route_scoped`]: one delivery per matched subscription straight into
/// `out`; then, only when the matches came from more than one filter or shared group (a
/// session can then appear twice; within one filter's subscriber map it cannot), the
/// deliveries of one session are merged through `targets` (empty on entry and on return)
/// into its first one: the highest QoS, RETAIN if any subscription keeps it, every
/// subscription identifier in match order. The common fan-out (one filter, many
/// subscribers) thus hashes nothing.
fn collect_targets(
    broker: &Broker,
    message: &Arc<Message>,
    out: &mut Vec<Routed>,
    scope: &Scope<'_>,
    keep: Keep,
    targets: &mut Targets,
) -> usize {
    let start = out.len();
    let mut copies = (keep == Keep::Thread).then(ThreadCopies::new);
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
        let mut subscription_ids = SmallVec::new();
        if let Some(id) = value.subscription_id {
            subscription_ids.push(id);
        }
        let thread = value.route.thread();
        let shared = match copies.as_mut() {
            Some(c) => c.message_for(thread, message),
            None => message,
        };
        out.push(Routed {
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
        c.finish(&mut out[start..], message);
    }
    if sources > 1 {
        merge_sessions(out, start, targets);
    }
    out.len() - start
}

/// Merges the deliveries of `out[start..]` that go to the same session into the first
/// one (see [`collect_targets`]), keeping the order of the others. `targets` is empty on
/// entry and on return.
fn merge_sessions(out: &mut Vec<Routed>, start: usize, targets: &mut Targets) {
    let tail: Vec<Routed> = out.drain(start..).collect();
    for r in tail {
        match targets.entry(r.key) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(r);
            }
            std::collections::hash_map::Entry::Occupied(e) => {
                let Some(first) = out.get_mut(*e.get()) else {
                    continue;
                };
                let d = &mut first.delivery;
                if r.delivery.qos.as_u8() > d.qos.as_u8() {
                    d.qos = r.delivery.qos;
                }
                d.retain |= r.delivery.retain;
                d.subscription_ids.extend(r.delivery.subscription_ids);
            }
        }
    }
    targets.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread keeps at most [`SPARE_BATCHES`] spare batches, the largest ones, and hands
    /// out the largest first.
    #[test]
    fn spare_batches_are_bounded_and_largest_first() {
        for cap in [10, 15, 11, 14, 12, 13] {
            recycle_batch(Vec::with_capacity(cap));
        }
        // Not kept: empty or above the limit.
        recycle_batch(Vec::new());
        recycle_batch(Vec::with_capacity(SPARE_BATCH_MAX + 1));
        let caps: Vec<usize> = (0..=SPARE_BATCHES)
            .map(|_| spare_batch().capacity())
            .collect();
        assert_eq!(caps, [15, 14, 13, 12, 0]);
    }
}
