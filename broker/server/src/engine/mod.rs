//! The broker engine: state shared by every I/O thread ([`Broker`]) and the messages the
//! threads exchange ([`ThreadMsg`]).
//!
//! Ownership model: a connection and the [`Session`] it owns live on the thread that accepted
//! the socket. A session outlives its connection on that thread ("offline") until it expires
//! or a new connection claims it. The registry (client id -> [`RegEntry`]) is the single
//! arbiter of who owns a session; it is locked only on CONNECT and on close, never on the
//! publish path. Publishers find subscribers in the lock-free [`SubscriptionTrie`], whose
//! values carry an [`Route`] (the session's current thread, an atomic that moves with the
//! session), and hand deliveries to that thread in batches through its bounded inbox.
//!
//! Takeover protocol (client id X, old owner thread A, new connection on thread B):
//! 1. B locks the registry, records itself as X's connection (`RegEntry::conn`), points the
//!    route at B, unlocks, and sends [`ThreadMsg::Release`] to A.
//! 2. A disconnects X's old connection with 0x8E (or takes the offline session out of its
//!    table), then reads the registry's *current* claimant and sends it the session with
//!    [`ThreadMsg::Handover`]. A claimant that vanished meanwhile gets it forwarded or
//!    parked offline, so a session is never lost in a race.
//! 3. B resumes it with `accept_connect(Some(session), true)`.
//!
//! Deliveries that reach a thread after the session left are forwarded once along the route.

pub mod publish;
pub mod thread;
pub mod tick;
mod wheel;

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use halyard_codec::SubscriptionOptions;
use halyard_session::{ClientId, Delivery, Message, Session, SessionConfig};
use halyard_topics::{RetainedIndex, SubscriptionTrie};

use crate::config::Config;
use crate::durable::{Durability, QueueLedger};
use crate::metrics::Metrics;
use crate::security::Security;

/// Identifies one session incarnation; a clean start creates a new key for the same client id.
pub type SessionKey = u64;

/// Where a session currently lives. Shared by all its trie entries; updated on takeover.
#[derive(Debug)]
pub struct Route {
    thread: AtomicUsize,
    /// The session is stored (`[store]` on and Session Expiry Interval > 0): publishers
    /// store their QoS 1/2 deliveries to it before acknowledging.
    persistent: AtomicBool,
}

impl Route {
    /// A route to `thread`.
    pub fn new(thread: usize) -> Arc<Self> {
        Arc::new(Route {
            thread: AtomicUsize::new(thread),
            persistent: AtomicBool::new(false),
        })
    }

    /// Whether publishers must store deliveries to this session before acknowledging.
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Acquire)
    }

    /// Set by the session's owner once the session is stored (or no longer is).
    pub fn set_persistent(&self, on: bool) {
        self.persistent.store(on, Ordering::Release);
    }

    /// The owning thread.
    pub fn thread(&self) -> usize {
        self.thread.load(Ordering::Acquire)
    }

    /// Moves the session to `thread`.
    pub fn set_thread(&self, thread: usize) {
        self.thread.store(thread, Ordering::Release);
    }
}

/// The value stored in the subscription trie for one subscription.
#[derive(Debug, Clone)]
pub struct SubValue {
    /// Where the subscribing session lives.
    pub route: Arc<Route>,
    /// The subscriber's client id (for No Local and the ACL's read check).
    pub client_id: ClientId,
    /// The subscriber's user name (for the ACL's read check).
    pub username: Option<Arc<str>>,
    /// Options with the granted QoS.
    pub options: SubscriptionOptions,
    /// Subscription Identifier (5.0).
    pub subscription_id: Option<u32>,
}

/// A connection somewhere in the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// The I/O thread owning it.
    pub thread: usize,
    /// Its id, unique in the process.
    pub conn: u64,
}

/// The thread of a [`ConnRef`] that stands for another node taking a session over
/// (`cluster::session`): no I/O thread has this number; a session handed to it goes to the
/// waiting export through [`Broker::finish_export`].
pub const EXPORT_THREAD: usize = usize::MAX;

/// What an export waits for: the session (with its key), or `None` when it ended instead.
pub type Exported = Option<(SessionKey, Box<Moving>)>;

/// Client id -> session, behind the registry mutex. aHash with keys drawn at random per
/// process (client ids come from the network, so the keys must not be guessable), about
/// twice as fast as the standard SipHash on the CONNECT path.
pub type Registry = HashMap<ClientId, RegEntry, ahash::RandomState>;

/// The registry's record of one client id.
#[derive(Debug)]
pub struct RegEntry {
    /// The current session incarnation.
    pub key: SessionKey,
    /// Its route.
    pub route: Arc<Route>,
    /// The connection that owns or is claiming the session; `None` while offline.
    pub conn: Option<ConnRef>,
}

/// What a CONNECT got from the registry.
#[derive(Debug)]
pub enum Claim {
    /// No session existed: start a new one.
    New {
        /// The new session key.
        key: SessionKey,
        /// Its route (already pointing at the claiming thread).
        route: Arc<Route>,
    },
    /// Clean start replaced an existing session, which must be discarded on `old_thread`.
    Replaced {
        /// The new session key.
        key: SessionKey,
        /// Its route.
        route: Arc<Route>,
        /// The discarded session.
        old_key: SessionKey,
        /// Where the discarded session lives.
        old_thread: usize,
    },
    /// The existing session must be released by `from_thread` and handed over.
    Resume {
        /// The session key.
        key: SessionKey,
        /// Its route (now pointing at the claiming thread).
        route: Arc<Route>,
        /// Where the session was.
        from_thread: usize,
    },
}

/// Messages between I/O threads (through each thread's bounded inbox).
#[derive(Debug)]
pub enum ThreadMsg {
    /// Deliveries for sessions owned by the receiving thread (without the per-subscriber
    /// `Arc`s: see [`hand_over`]).
    Deliver(Vec<Routed>),
    /// Give session `key` to the registry's current claimant (disconnecting its connection
    /// with 0x8E first).
    Release {
        /// The session.
        key: SessionKey,
    },
    /// End session `key` (replaced by a clean start): disconnect with 0x8E and drop it.
    Discard {
        /// The session.
        key: SessionKey,
    },
    /// A session for connection `to`.
    Handover {
        /// The claiming connection.
        to: ConnRef,
        /// The session's key.
        key: SessionKey,
        /// The session with its store ledger (boxed: it is large and moves between threads).
        session: Box<Moving>,
    },
    /// The session connection `to` claimed ended instead of moving (it had expiry 0): the
    /// claimant starts a fresh session now instead of waiting for a handover.
    NoSession {
        /// The claiming connection.
        to: ConnRef,
    },
    /// Stop accepting and disconnect every client (0x8B).
    Shutdown,
}

/// A session on its way between owners (connection, offline table, another thread).
#[derive(Debug)]
pub struct Moving {
    /// The session.
    pub session: Session,
    /// Which store queue entries back its pending queue (empty when not stored).
    pub ledger: QueueLedger,
    /// Protocol level of its last connection (4 = 3.1.1, 5 = 5.0), for its store record.
    pub protocol_version: u8,
}

/// One delivery on its way to a session.
#[derive(Debug)]
pub struct Routed {
    /// The target session.
    pub key: SessionKey,
    /// The session's thread as last read: when the delivery was routed, or when a thread
    /// the session had left sent it on ([`Self::redirect`]; see [`Self::thread`]).
    pub routed_to: usize,
    /// The subscriber's route and client id, kept only by routing whose deliveries are
    /// placed after a wait (store commit, cluster; see [`publish::Keep`]).
    pub subscriber: Option<Subscriber>,
    /// The delivery.
    pub delivery: Delivery,
    /// The store queue entry holding this delivery (`None`: held in memory only).
    pub seq: Option<u64>,
}

/// The per-subscriber `Arc`s a [`Routed`] delivery keeps when it is placed after a wait.
///
/// Routing that places its deliveries at once (a PUBLISH without the store) keeps neither:
/// with two I/O threads publishing to the same subscriber (fan-in), cloning and dropping
/// them moved their reference counts' cache line between the cores for every delivery.
#[derive(Debug)]
pub struct Subscriber {
    /// Its route (where it lives when the delivery is placed).
    pub route: Arc<Route>,
    /// The subscriber's client id (names its store queue).
    pub client_id: ClientId,
}

impl Routed {
    /// Readies the delivery to cross to another thread: a kept route and client id are
    /// dropped here, on the routing thread, which cloned them (see [`Subscriber`]).
    pub fn strip(&mut self) {
        self.subscriber = None;
    }

    /// Readies the delivery to go on to `thread`, where its session is now (found by a
    /// thread the session had left): stripped (see [`Self::strip`]) and addressed there.
    pub fn redirect(&mut self, thread: usize) {
        self.strip();
        self.routed_to = thread;
    }

    /// The thread to place the delivery on: the session's thread now when the route was
    /// kept, else the one it had when routed (placed right after routing, in the same step).
    pub fn thread(&self) -> usize {
        self.subscriber
            .as_ref()
            .map_or(self.routed_to, |s| s.route.thread())
    }

    /// Whether the publisher stores this delivery before acknowledging: QoS 1/2 to a
    /// persistent session (known only with the route kept: routing for the store keeps it).
    pub fn is_durable_target(&self) -> bool {
        self.delivery.qos != halyard_codec::QoS::AtMostOnce
            && self
                .subscriber
                .as_ref()
                .is_some_and(|s| s.route.is_persistent())
    }
}

/// Readies a batch for another thread (see [`Routed::strip`]).
pub fn hand_over(batch: &mut [Routed]) {
    for r in batch {
        r.strip();
    }
}

/// Why a CONNECT was refused by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// `limits.max_sessions` sessions exist already.
    #[error("session limit reached")]
    TooManySessions,
}

/// State shared by all I/O threads.
#[derive(Debug)]
pub struct Broker {
    /// The configuration.
    pub config: Arc<Config>,
    /// The session layer's configuration (built from `[mqtt]`).
    pub session_config: Arc<SessionConfig>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Authentication, ACL, bans and per-source limits.
    pub security: Arc<Security>,
    /// Topic filter -> subscriptions.
    pub trie: SubscriptionTrie<SessionKey, SubValue>,
    /// Retained messages by topic.
    pub retained: RetainedIndex<Arc<Message>>,
    registry: Mutex<Registry>,
    /// One inbox sender per I/O thread.
    pub inboxes: Vec<flume::Sender<ThreadMsg>>,
    /// Emptied delivery batches on their way back to a routing thread (see
    /// [`publish::BatchPool`]).
    pub spare_batches: publish::BatchPool,
    /// Durable state (`[store]`); disabled: every write completes at once, nothing stored.
    pub durable: Durability,
    /// The cluster wiring, set once at start when `cluster.seeds` is configured.
    pub cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    next_key: AtomicU64,
    next_conn: AtomicU64,
    /// Sessions being taken over by another node: export id -> its waiter.
    exports: Mutex<HashMap<u64, flume::Sender<Exported>>>,
}

impl Broker {
    /// A broker for `inboxes.len()` threads.
    pub fn new(
        config: Arc<Config>,
        session_config: Arc<SessionConfig>,
        metrics: Arc<Metrics>,
        security: Arc<Security>,
        inboxes: Vec<flume::Sender<ThreadMsg>>,
        durable: Durability,
    ) -> Self {
        let limits = session_config.topic_limits;
        Broker {
            config,
            session_config,
            metrics,
            security,
            trie: SubscriptionTrie::new(limits),
            retained: RetainedIndex::new(limits),
            registry: Mutex::new(Registry::default()),
            spare_batches: publish::BatchPool::new(inboxes.len()),
            inboxes,
            durable,
            cluster: std::sync::OnceLock::new(),
            next_key: AtomicU64::new(1),
            next_conn: AtomicU64::new(1),
            exports: Mutex::new(HashMap::new()),
        }
    }

    /// Starts taking `client_id`'s session away for another node: records export `me`
    /// (thread [`EXPORT_THREAD`]) as its claimant and returns the session's key and thread
    /// (send it `Release`), with the receiver of the session. `None` when there is no
    /// such session here. The route keeps pointing at the session's thread meanwhile, so
    /// deliveries still reach it (and travel with it).
    pub fn claim_export(
        &self,
        client_id: &str,
        me: ConnRef,
    ) -> Option<(SessionKey, usize, flume::Receiver<Exported>)> {
        let mut reg = self.registry();
        let entry = reg.get_mut(client_id)?;
        entry.conn = Some(me);
        let (tx, rx) = flume::bounded(1);
        self.lock_exports().insert(me.conn, tx);
        Some((entry.key, entry.route.thread(), rx))
    }

    /// Hands an exported session (or `None`: it ended) to export `id`; gives it back when
    /// the export is no longer waiting (timed out), so that the caller keeps it.
    pub fn finish_export(&self, id: u64, session: Exported) -> Exported {
        let waiter = self.lock_exports().remove(&id);
        match waiter {
            Some(tx) => match tx.send(session) {
                Ok(()) => None,
                Err(flume::SendError(back)) => back,
            },
            None => session,
        }
    }

    /// Ends export `id` (done or given up); a session arriving later stays here.
    pub fn drop_export(&self, id: u64) {
        self.lock_exports().remove(&id);
    }

    fn lock_exports(&self) -> MutexGuard<'_, HashMap<u64, flume::Sender<Exported>>> {
        self.exports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn new_key(&self) -> SessionKey {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Locks the registry (CONNECT / close paths only).
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock leaves the map itself consistent (every update is
        // a single insert/remove/field store), so continuing with the inner value is safe.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the registry size as the `halyard_sessions` gauge.
    pub fn update_session_gauge(&self, len: usize) {
        self.metrics
            .sessions
            .store(i64::try_from(len).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Records `me` as the connection of `client_id` and says what to do with any existing
    /// session (see the module documentation).
    pub fn claim(
        &self,
        client_id: &ClientId,
        clean_start: bool,
        me: ConnRef,
    ) -> Result<Claim, ClaimError> {
        let mut reg = self.registry();
        let full = reg.len() >= self.config.limits.max_sessions;
        // One hash and probe for a new client id (the common case), not a lookup and then an
        // insert.
        let claim = match reg.entry(client_id.clone()) {
            MapEntry::Vacant(_) if full => {
                return Err(ClaimError::TooManySessions);
            }
            MapEntry::Vacant(slot) => {
                let key = self.new_key();
                let route = Route::new(me.thread);
                slot.insert(RegEntry {
                    key,
                    route: route.clone(),
                    conn: Some(me),
                });
                Claim::New { key, route }
            }
            MapEntry::Occupied(mut slot) if clean_start => {
                let entry = slot.get_mut();
                let old_key = entry.key;
                let old_thread = entry.route.thread();
                let key = self.new_key();
                let route = Route::new(me.thread);
                *entry = RegEntry {
                    key,
                    route: route.clone(),
                    conn: Some(me),
                };
                Claim::Replaced {
                    key,
                    route,
                    old_key,
                    old_thread,
                }
            }
            MapEntry::Occupied(mut slot) => {
                let entry = slot.get_mut();
                let from_thread = entry.route.thread();
                entry.conn = Some(me);
                entry.route.set_thread(me.thread);
                Claim::Resume {
                    key: entry.key,
                    route: entry.route.clone(),
                    from_thread,
                }
            }
        };
        self.update_session_gauge(reg.len());
        Ok(claim)
    }

    /// Registers a session read back from the store as offline on `thread` (start-up, before
    /// any connection); returns its key and route (marked persistent). `None` when the client
    /// id is registered already.
    pub fn register_restored(
        &self,
        client_id: &ClientId,
        thread: usize,
    ) -> Option<(SessionKey, Arc<Route>)> {
        let mut reg = self.registry();
        if reg.contains_key(client_id) {
            return None;
        }
        let key = self.new_key();
        let route = Route::new(thread);
        route.set_persistent(true);
        reg.insert(
            client_id.clone(),
            RegEntry {
                key,
                route: route.clone(),
                conn: None,
            },
        );
        self.update_session_gauge(reg.len());
        Some((key, route))
    }

    /// Puts the subscriptions of a session that arrives offline (read back from the store,
    /// or handed over by another node) into the trie, pointing at `route`. The caller
    /// updates the subscription gauge (once, after all of them).
    pub fn restore_subscriptions(
        &self,
        key: SessionKey,
        route: &Arc<Route>,
        client_id: &ClientId,
        session: &Session,
    ) {
        for (filter, sub) in session.subscriptions() {
            let value = SubValue {
                route: route.clone(),
                client_id: client_id.clone(),
                username: None,
                options: sub.options,
                subscription_id: sub.subscription_id,
            };
            let limits = &self.session_config.topic_limits;
            let inserted = match limits.parse_shared_subscription(filter) {
                Ok(Some(shared)) => {
                    self.trie
                        .insert_shared(shared.group, shared.filter, key, value)
                }
                _ => self.trie.insert(filter, key, value),
            };
            match inserted {
                Err(e) => {
                    tracing::warn!(%client_id, %filter, error = %e, "subscription not restored");
                }
                Ok(None) => crate::cluster::subscribed(self, filter),
                Ok(Some(_)) => {}
            }
        }
    }

    /// Whether `client_id` has no session in the registry (its stored state may go).
    pub fn is_unregistered(&self, client_id: &str) -> bool {
        !self.registry().contains_key(client_id)
    }

    /// Sends `msg` to `thread`'s inbox, waiting while it is full (used for control messages
    /// and QoS 1/2 batches: back-pressure instead of loss).
    pub async fn send_to(&self, thread: usize, msg: ThreadMsg) {
        if let Some(tx) = self.inboxes.get(thread)
            && let Err(flume::TrySendError::Full(msg)) = tx.try_send(msg)
        {
            if let Some(stats) = self.metrics.threads.get(thread) {
                stats.hit_limit(crate::metrics::Limit::InboxCapacity);
            }
            // The receiver lives as long as the thread; an error means it has exited.
            let _ = tx.send_async(msg).await;
        }
    }

    /// The thread owning session `key` now, found through its subscription matching
    /// `topic` (the subscription that routed a delivery of that topic to it); `None` when
    /// the session no longer subscribes to it. For the rare delivery without its route that reached
    /// a thread the session had left: one trie walk, no lock.
    pub fn owner_of(&self, key: SessionKey, topic: &str) -> Option<usize> {
        let mut owner = None;
        self.trie.for_each_match(topic, |m| {
            if owner.is_some() {
                return;
            }
            owner = match m {
                halyard_topics::Match::Subscriber { key: k, value, .. } if *k == key => {
                    Some(value.route.thread())
                }
                halyard_topics::Match::Shared(group) => group
                    .members()
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.route.thread()),
                _ => None,
            };
        });
        owner
    }

    /// The thread owning the session of delivery `d` now: its kept route's, else found
    /// through the trie ([`Self::owner_of`]; `d` reached a thread the session had left).
    pub fn owner_now(&self, d: &Routed) -> Option<usize> {
        match &d.subscriber {
            Some(s) => Some(s.route.thread()),
            None => self.owner_of(d.key, &d.delivery.message.topic),
        }
    }

    /// Removes every subscription of session `key` given its full filters.
    pub fn remove_subscriptions<'a>(
        &self,
        key: SessionKey,
        filters: impl IntoIterator<Item = &'a str>,
    ) {
        for filter in filters {
            self.remove_subscription(key, filter);
        }
        self.update_subscription_gauge();
    }

    /// Removes one subscription by its full filter (with any `$share/` prefix); returns
    /// whether it existed.
    pub fn remove_subscription(&self, key: SessionKey, filter: &str) -> bool {
        let removed = match self
            .session_config
            .topic_limits
            .parse_shared_subscription(filter)
        {
            Ok(Some(shared)) => self
                .trie
                .remove_shared(shared.group, shared.filter, &key)
                .is_some(),
            _ => self.trie.remove(filter, &key).is_some(),
        };
        if removed {
            crate::cluster::unsubscribed(self, filter);
        }
        removed
    }

    /// Publishes the trie size as the `halyard_subscriptions` gauge.
    pub fn update_subscription_gauge(&self) {
        let n = i64::try_from(self.trie.len()).unwrap_or(i64::MAX);
        self.metrics.subscriptions.store(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use halyard_codec::{MqttString, QoS};
    use halyard_session::MessageProperties;

    use super::publish::{Outbox, route};
    use super::*;

    fn broker(threads: usize) -> Broker {
        let config = Arc::new(Config::default());
        let session_config = Arc::new(crate::run::session_config(&config));
        let inboxes = (0..threads).map(|_| flume::bounded(4).0).collect();
        Broker::new(
            config,
            session_config,
            Arc::new(Metrics::new(threads)),
            Arc::new(Security::new(&Config::default()).expect("no files to load")),
            inboxes,
            Durability::disabled(),
        )
    }

    fn conn(thread: usize, conn: u64) -> ConnRef {
        ConnRef { thread, conn }
    }

    #[test]
    fn claim_new_resume_and_replace() {
        let b = broker(2);
        let id: ClientId = Arc::from("c");
        let Ok(Claim::New { key, route }) = b.claim(&id, false, conn(0, 1)) else {
            panic!("first connect creates a session");
        };
        assert_eq!(route.thread(), 0);
        // Clean Start 0 from another thread resumes the same session and moves its route.
        let Ok(Claim::Resume {
            key: k2,
            from_thread,
            route: r2,
        }) = b.claim(&id, false, conn(1, 2))
        else {
            panic!("second connect resumes");
        };
        assert_eq!((k2, from_thread, r2.thread()), (key, 0, 1));
        assert_eq!(route.thread(), 1, "the shared route moved with the session");
        // Clean Start 1 replaces it with a new key [MQTT-3.1.2-4].
        let Ok(Claim::Replaced {
            key: k3, old_key, ..
        }) = b.claim(&id, true, conn(0, 3))
        else {
            panic!("clean start replaces");
        };
        assert_ne!(k3, key);
        assert_eq!(old_key, key);
        assert_eq!(b.registry().len(), 1);
    }

    #[test]
    fn session_limit_refuses_new_client_ids() {
        let mut config = Config::default();
        config.limits.max_sessions = 1;
        let config = Arc::new(config);
        let sc = Arc::new(crate::run::session_config(&config));
        let b = Broker::new(
            config,
            sc,
            Arc::new(Metrics::new(1)),
            Arc::new(Security::new(&Config::default()).expect("no files to load")),
            vec![flume::bounded(1).0],
            Durability::disabled(),
        );
        assert!(b.claim(&Arc::from("a"), true, conn(0, 1)).is_ok());
        assert_eq!(
            b.claim(&Arc::from("b"), true, conn(0, 2)).unwrap_err(),
            ClaimError::TooManySessions
        );
        assert!(
            b.claim(&Arc::from("a"), false, conn(0, 3)).is_ok(),
            "existing id still resumes"
        );
    }

    fn message(topic: &str, qos: QoS, publisher: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: MqttString::from(topic),
            payload: bytes::Bytes::from_static(b"p"),
            qos,
            retain: true,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: Some(Arc::from(publisher)),
        })
    }

    fn sub(route: &Arc<Route>, client: &str, qos: QoS, id: Option<u32>) -> SubValue {
        SubValue {
            route: route.clone(),
            client_id: Arc::from(client),
            username: None,
            options: SubscriptionOptions::qos(qos),
            subscription_id: id,
        }
    }

    #[test]
    fn route_merges_overlaps_applies_no_local_and_batches_per_thread() {
        let b = broker(2);
        let (r0, r1) = (Route::new(0), Route::new(1));
        b.trie
            .insert("a/#", 1, sub(&r0, "s1", QoS::AtMostOnce, Some(7)))
            .unwrap();
        b.trie
            .insert("a/+", 1, sub(&r0, "s1", QoS::ExactlyOnce, Some(9)))
            .unwrap();
        let mut own = sub(&r1, "pub", QoS::AtLeastOnce, None);
        own.options.no_local = true;
        b.trie.insert("a/b", 2, own).unwrap();
        let mut rap = sub(&r1, "s3", QoS::AtLeastOnce, None);
        rap.options.retain_as_published = true;
        b.trie.insert("a/b", 3, rap).unwrap();

        let mut outbox = Outbox::new(2);
        let n = route(&b, &message("a/b", QoS::AtLeastOnce, "pub"), &mut outbox);
        assert_eq!(n, 2, "session 2 is the publisher and asked for No Local");
        let batches: Vec<(usize, Vec<Routed>)> = outbox.drain().collect();
        assert_eq!(batches.len(), 2);
        let (t0, b0) = &batches[0];
        assert_eq!((*t0, b0.len()), (0, 1));
        let d = &b0[0].delivery;
        // One copy, min(highest granted, published) QoS, both identifiers [MQTT-3.3.4-3].
        assert_eq!(d.qos, QoS::AtLeastOnce);
        let mut ids = d.subscription_ids.to_vec();
        ids.sort_unstable();
        assert_eq!(ids, [7, 9]);
        assert!(!d.retain, "RETAIN cleared without Retain As Published");
        let (t1, b1) = &batches[1];
        assert_eq!((*t1, b1[0].key), (1, 3));
        assert!(
            b1[0].delivery.retain,
            "Retain As Published keeps RETAIN [MQTT-3.3.1-12]"
        );
    }

    /// A fan-out over two threads: the deliveries to the thread of the first one share the
    /// publisher's message, those to the other thread (at least `THREAD_COPY_MIN` of them)
    /// one copy of their own, equal to it; below that many, every delivery shares the
    /// publisher's message.
    #[test]
    fn a_fan_out_to_another_thread_gets_its_own_copy_of_the_message() {
        use super::publish::THREAD_COPY_MIN;
        let b = broker(2);
        let routes = [Route::new(0), Route::new(1)];
        let per_thread = THREAD_COPY_MIN + 2;
        for key in 0..2 * per_thread as u64 {
            // Alternate the threads, so that deliveries to thread 1 are made before its copy.
            let route = &routes[key as usize % 2];
            let value = sub(route, &format!("c{key}"), QoS::AtLeastOnce, None);
            b.trie.insert("f/x", key, value).unwrap();
        }
        let original = message("f/x", QoS::AtLeastOnce, "pub");
        let mut outbox = Outbox::new(2);
        assert_eq!(route(&b, &original, &mut outbox), 2 * per_thread);
        let batches: Vec<(usize, Vec<Routed>)> = outbox.drain().collect();
        let first_thread = batches
            .iter()
            .find(|(_, batch)| {
                batch
                    .iter()
                    .any(|r| Arc::ptr_eq(&r.delivery.message, &original))
            })
            .map(|(t, _)| *t)
            .expect("one thread keeps the publisher's message");
        for (thread, batch) in &batches {
            assert_eq!(batch.len(), per_thread);
            let shared = &batch[0].delivery.message;
            assert!(
                batch
                    .iter()
                    .all(|r| Arc::ptr_eq(&r.delivery.message, shared))
            );
            assert_eq!(**shared, *original);
            if *thread == first_thread {
                assert!(Arc::ptr_eq(shared, &original));
            } else {
                assert!(
                    !Arc::ptr_eq(shared, &original),
                    "thread {thread} has its own copy"
                );
            }
        }

        // Fewer deliveries to the other thread than THREAD_COPY_MIN: no copy.
        for key in 2 * (THREAD_COPY_MIN as u64 - 1)..2 * per_thread as u64 {
            b.trie.remove("f/x", &key);
        }
        let mut outbox = Outbox::new(2);
        assert_eq!(route(&b, &original, &mut outbox), 2 * (THREAD_COPY_MIN - 1));
        for (_, batch) in outbox.drain() {
            assert!(
                batch
                    .iter()
                    .all(|r| Arc::ptr_eq(&r.delivery.message, &original))
            );
        }
    }

    /// With two threads each delivery goes straight into its thread's batch, and the merge
    /// of overlapping subscriptions works per batch on what one PUBLISH added: sessions
    /// matched by two filters on both threads get one delivery each (highest QoS, RETAIN if
    /// any, every identifier), the others theirs untouched; a second
    /// PUBLISH routed into the same outbox adds one more per session, never merged into
    /// the first's.
    #[test]
    fn overlaps_merge_per_thread_batch_and_per_publish() {
        let b = broker(2);
        let routes = [Route::new(0), Route::new(1)];
        // Sessions 1..=8 on alternating threads on "o/x"; 3 (thread 1) and 4 (thread 0) also
        // through "o/+", which is walked after "o/x".
        for key in 1..=8u64 {
            let route = &routes[key as usize % 2];
            let id = u32::try_from(key).ok();
            let value = sub(route, &format!("c{key}"), QoS::AtMostOnce, id);
            b.trie.insert("o/x", key, value).unwrap();
        }
        for key in [3u64, 4] {
            let route = &routes[key as usize % 2];
            let mut value = sub(route, &format!("c{key}"), QoS::AtLeastOnce, Some(100));
            value.options.retain_as_published = true;
            b.trie.insert("o/+", key, value).unwrap();
        }
        let mut outbox = Outbox::new(2);
        let first = message("o/x", QoS::AtLeastOnce, "pub");
        let second = Arc::new(Message {
            payload: bytes::Bytes::from_static(b"second"),
            ..Message::clone(&first)
        });
        assert_eq!(route(&b, &first, &mut outbox), 8);
        assert_eq!(route(&b, &second, &mut outbox), 8);
        let batches: Vec<(usize, Vec<Routed>)> = outbox.drain().collect();
        assert_eq!(batches.len(), 2);
        for (thread, batch) in &batches {
            let mine: Vec<SessionKey> = (1..=8).filter(|k| k % 2 == *thread as u64).collect();
            assert_eq!(batch.len(), 2 * mine.len(), "thread {thread}");
            // The first PUBLISH's deliveries, then the second's, one per session each.
            for (half, msg) in batch.chunks(mine.len()).zip([&first, &second]) {
                let mut keys: Vec<SessionKey> = half.iter().map(|r| r.key).collect();
                keys.sort_unstable();
                assert_eq!(keys, mine, "thread {thread}: one per session and PUBLISH");
                for r in half {
                    assert_eq!(r.delivery.message.payload, msg.payload);
                    assert_eq!(r.routed_to, *thread);
                    let d = &r.delivery;
                    let mut ids = d.subscription_ids.to_vec();
                    ids.sort_unstable();
                    if r.key == 3 || r.key == 4 {
                        assert_eq!(ids, [r.key as u32, 100], "session {} merged", r.key);
                        assert_eq!(d.qos, QoS::AtLeastOnce);
                        assert!(d.retain, "one subscription keeps RETAIN");
                    } else {
                        assert_eq!(ids, [r.key as u32]);
                        assert_eq!(d.qos, QoS::AtMostOnce);
                        assert!(!d.retain);
                    }
                }
            }
        }
    }

    #[test]
    fn one_filter_fans_out_unmerged_and_a_second_filter_merges() {
        let b = broker(1);
        let r = Route::new(0);
        for key in 1..=50u64 {
            let id = u32::try_from(key).ok();
            let client = format!("c{key}");
            b.trie
                .insert("f/x", key, sub(&r, &client, QoS::AtLeastOnce, id))
                .unwrap();
        }
        let deliveries = |b: &Broker| {
            let mut outbox = Outbox::new(1);
            let n = route(b, &message("f/x", QoS::AtLeastOnce, "pub"), &mut outbox);
            let mut all: Vec<Routed> = outbox.drain().flat_map(|(_, batch)| batch).collect();
            all.sort_by_key(|r| r.key);
            assert_eq!(n, all.len());
            all
        };
        let all = deliveries(&b);
        assert_eq!(
            all.iter().map(|r| r.key).collect::<Vec<_>>(),
            (1..=50).collect::<Vec<_>>()
        );
        for r in &all {
            assert_eq!(r.delivery.subscription_ids.to_vec(), [r.key as u32]);
            assert_eq!(r.delivery.qos, QoS::AtLeastOnce);
        }
        // Session 7 also matches through a wildcard: still one copy, both identifiers, the
        // highest QoS; the others are untouched.
        b.trie
            .insert("f/+", 7, sub(&r, "c7", QoS::AtMostOnce, Some(700)))
            .unwrap();
        let all = deliveries(&b);
        assert_eq!(all.len(), 50);
        let seven = &all[6];
        assert_eq!(seven.key, 7);
        let mut ids = seven.delivery.subscription_ids.to_vec();
        ids.sort_unstable();
        assert_eq!(ids, [7, 700]);
        assert_eq!(seven.delivery.qos, QoS::AtLeastOnce);
        assert_eq!(all[7].delivery.subscription_ids.to_vec(), [8]);
    }

    #[test]
    fn handed_delivery_finds_its_session_through_the_trie() {
        let b = broker(3);
        let (r1, r2) = (Route::new(1), Route::new(2));
        b.trie
            .insert("m/+", 5, sub(&r1, "s5", QoS::AtLeastOnce, None))
            .unwrap();
        b.trie
            .insert_shared("g", "m/#", 6, sub(&r2, "s6", QoS::AtLeastOnce, None))
            .unwrap();
        assert_eq!(b.owner_of(5, "m/x"), Some(1));
        assert_eq!(b.owner_of(6, "m/x"), Some(2), "a shared group's member");
        // The session moved (takeover): the route says where it went.
        r1.set_thread(2);
        assert_eq!(b.owner_of(5, "m/x"), Some(2));
        assert_eq!(
            b.owner_of(5, "other"),
            None,
            "no subscription for the topic"
        );
        assert_eq!(b.owner_of(7, "m/x"), None, "an unknown session");
        // Routed (keeping the routes, as for the store) into batches for threads 1 and 2,
        // then handed over without the Arcs; a delivery without its route finds its owner.
        let mut kept = Vec::new();
        let msg = message("m/x", QoS::AtLeastOnce, "p");
        publish::route_collect_acked(&b, &msg, &mut kept, crate::cluster::Forward::Now);
        let mut outbox = Outbox::new(3);
        for r in kept {
            outbox.push(r);
        }
        let handed: Vec<(usize, Vec<Routed>)> = outbox
            .drain()
            .map(|(t, mut batch)| {
                hand_over(&mut batch);
                (t, batch)
            })
            .collect();
        for (t, batch) in &handed {
            for r in batch {
                assert_eq!(b.owner_now(r), Some(*t));
            }
        }
        let mut keys: Vec<(usize, SessionKey)> = handed
            .iter()
            .flat_map(|(t, batch)| batch.iter().map(|h| (*t, h.key)))
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [(2, 5), (2, 6)]);
        assert_eq!(Arc::strong_count(&r1), 2, "the trie's and this test's only");
    }

    /// With several threads, a batch for another thread starts from one of the routing
    /// thread's spares (batches delivered here and given back), not from an empty list.
    #[test]
    fn outbox_batches_start_from_the_threads_spares() {
        let b = broker(2);
        let r1 = Route::new(1);
        b.trie
            .insert("s/x", 1, sub(&r1, "s1", QoS::AtMostOnce, None))
            .unwrap();
        // A delivered batch given back (as `deliver_local` does) becomes the batch for
        // thread 1.
        publish::recycle_batch(Vec::with_capacity(1000), &b.spare_batches);
        for round in 0..3 {
            let mut outbox = Outbox::new(2);
            for _ in 0..3 {
                route(&b, &message("s/x", QoS::AtMostOnce, "p"), &mut outbox);
            }
            let mut batches: Vec<(usize, Vec<Routed>)> = outbox.drain().collect();
            assert_eq!(batches.len(), 1);
            let (t, batch) = batches.pop().unwrap();
            assert_eq!((t, batch.len()), (1, 3));
            assert!(batch.capacity() >= 1000, "round {round}: a new batch");
            // Delivered there and, in this test, given back here.
            publish::recycle_batch(batch, &b.spare_batches);
        }
    }

    #[test]
    fn routing_placed_at_once_clones_no_subscriber_arcs() {
        let b = broker(2);
        let r1 = Route::new(1);
        b.trie
            .insert("k/x", 4, sub(&r1, "s4", QoS::AtLeastOnce, None))
            .unwrap();
        let msg = message("k/x", QoS::AtLeastOnce, "p");
        // A PUBLISH without the store: placed in the same step, by the thread read now.
        let mut outbox = Outbox::new(2);
        route(&b, &msg, &mut outbox);
        assert_eq!(Arc::strong_count(&r1), 2, "the trie's and this test's only");
        let batches: Vec<(usize, Vec<Routed>)> = outbox.drain().collect();
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].0, batches[0].1[0].key), (1, 4));
        assert!(batches[0].1[0].subscriber.is_none());
        // Routing whose deliveries wait (store, cluster, wills) keeps the route: placed
        // where the session is when the wait is over.
        let mut kept = Vec::new();
        publish::route_collect_acked(&b, &msg, &mut kept, crate::cluster::Forward::Now);
        assert_eq!(Arc::strong_count(&r1), 3);
        r1.set_thread(0);
        assert_eq!(kept[0].thread(), 0);
        assert_eq!(&*kept[0].subscriber.as_ref().unwrap().client_id, "s4");
    }

    #[test]
    fn shared_group_gets_one_copy() {
        let b = broker(1);
        let r = Route::new(0);
        for key in [1, 2, 3] {
            b.trie
                .insert_shared("g", "s/t", key, sub(&r, "m", QoS::AtLeastOnce, None))
                .unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..6 {
            let mut outbox = Outbox::new(1);
            assert_eq!(
                route(&b, &message("s/t", QoS::AtLeastOnce, "x"), &mut outbox),
                1
            );
            for (_, batch) in outbox.drain() {
                seen.extend(batch.iter().map(|r| r.key));
            }
        }
        assert_eq!(seen.len(), 3, "round robin reaches every member");
    }
}
