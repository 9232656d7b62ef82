//! [`Session`]: the per-client state that can outlive a network connection (MQTT 5.0 §4.1).

use std::collections::{BTreeSet, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use halyard_codec::{QoS, SubscriptionOptions};

use crate::config::{QueuePolicy, SessionConfig};
use crate::inflight::Inflight;
use crate::message::{ClientId, Delivery};
use crate::parts::OutgoingParts;
use crate::queue::{Dropped, MemoryQueue, MessageQueue};
use crate::stats::SessionStats;
use crate::subscriptions::Subscriptions;

/// Session Expiry Interval meaning "the session never expires" (0xFFFFFFFF, MQTT 5.0
/// §3.1.2.11.2). MQTT 3.1.1 clients with Clean Session 0 get this value.
pub const SESSION_NEVER_EXPIRES: u32 = u32::MAX;

/// Hashes packet identifiers for the session's in-flight tables. Zero-sized, unlike
/// `RandomState` (16 bytes in every session, twice): the keys are 16-bit identifiers in
/// tables bounded by the in-flight windows, so seeding buys little; a full 64-bit mix
/// (the splitmix64 finaliser) spreads them over the bits the table probes with.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PacketIdHasher(u64);

impl Hasher for PacketIdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = (self.0 << 16) | u64::from(n);
    }
}

/// A set of packet identifiers, hashed with [`PacketIdHasher`].
pub(crate) type IdSet = HashSet<u16, BuildHasherDefault<PacketIdHasher>>;

/// One subscription held by a session, keyed by its full topic filter (including a
/// `$share/{group}/` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Options, with `qos` = the QoS granted in the SUBACK.
    pub options: SubscriptionOptions,
    /// Subscription Identifier given in the SUBSCRIBE (5.0).
    pub subscription_id: Option<u32>,
}

/// Where an outgoing QoS 1/2 message is in its acknowledgement exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// QoS 1 PUBLISH sent (or to send), awaiting PUBACK.
    Qos1Published,
    /// QoS 2 PUBLISH sent (or to send), awaiting PUBREC.
    Qos2Published,
    /// QoS 2 PUBREL sent (or to send), awaiting PUBCOMP.
    Qos2Released,
}

/// One outgoing QoS 1/2 message holding a packet identifier.
#[derive(Debug, Clone)]
pub(crate) struct OutFlight {
    /// Order of first assignment: resends keep the original order [MQTT-4.6.0-1].
    pub(crate) seq: u64,
    pub(crate) delivery: Delivery,
    pub(crate) state: OutState,
    /// Sent on the current connection (counts against the window).
    pub(crate) sent_here: bool,
    /// Sent on any connection: a PUBLISH resent later carries DUP=1 [MQTT-3.3.1-1].
    pub(crate) ever_sent: bool,
}

/// The state of one client that outlives its network connection when the Session Expiry
/// Interval is above 0 (3.1.1: Clean Session 0): subscriptions, outgoing QoS 1/2 messages in
/// flight, incoming QoS 2 packet identifiers awaiting PUBREL, and the pending queue
/// [MQTT-4.1.0].
///
/// A `Connection` owns the session while connected ([`crate::Connection::accept_connect`]
/// takes it, [`crate::Connection::into_session`] gives it back). While no connection owns it,
/// the server calls [`Session::enqueue`] for each matching message and discards the session
/// once its expiry interval has passed since the disconnect (the session does not track that
/// time: it has no clock).
#[derive(Debug)]
pub struct Session {
    client_id: ClientId,
    expiry_interval: u32,
    subscriptions: Subscriptions,
    pub(crate) outgoing: Inflight,
    next_seq: u64,
    next_packet_id: u16,
    /// Client packet identifiers of QoS 2 PUBLISH packets acknowledged with a successful
    /// PUBREC and not yet released by PUBREL (MQTT 5.0 §4.3.3, method B).
    pub(crate) incoming_qos2: IdSet,
    queue: Box<dyn MessageQueue>,
    max_queued: usize,
    policy: QueuePolicy,
    queue_qos0_offline: bool,
    /// Boxed and allocated at the first count: most sessions never queue or drop anything,
    /// and every session carries this field.
    stats: Option<Box<SessionStats>>,
    /// Changes since the last [`Session::take_changes`]; `None` while not tracking (boxed:
    /// only stored sessions track them, and every session is carried by its connection).
    changes: Option<Box<SessionChanges>>,
}

/// What changed in a [`Session`] since the last [`Session::take_changes`], for a server that
/// mirrors sessions into durable storage (enable with [`Session::set_track_changes`]).
///
/// The sets are bounded by the packet identifier space (65,535 entries each), so they need
/// no further limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionChanges {
    /// Outgoing packet identifiers whose in-flight entry was added, changed stage or was
    /// removed. Look each up with [`Session::outgoing_parts`]: `Some` = write it, `None` =
    /// delete it.
    pub outgoing: BTreeSet<u16>,
    /// Incoming QoS 2 packet identifiers added or removed. Look each up with
    /// [`Session::has_incoming_qos2`].
    pub incoming_qos2: BTreeSet<u16>,
    /// The subscriptions changed (SUBSCRIBE or UNSUBSCRIBE completed).
    pub subscriptions: bool,
    /// The Session Expiry Interval changed (CONNECT of a resumed session, DISCONNECT).
    pub expiry_interval: bool,
    /// Messages that left the front of the pending queue (moved in flight, sent at QoS 0,
    /// dropped as expired or by `DropOldest`), in queue order. A server mirroring the queue
    /// removes as many entries from the front of its copy.
    pub queue_popped: u64,
}

impl SessionChanges {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.outgoing.is_empty()
            && self.incoming_qos2.is_empty()
            && !self.subscriptions
            && !self.expiry_interval
            && self.queue_popped == 0
    }
}

impl Session {
    /// A new, empty session with an in-memory queue, limits from `cfg`.
    pub fn new(client_id: ClientId, expiry_interval: u32, cfg: &SessionConfig) -> Self {
        Self::with_queue(
            client_id,
            expiry_interval,
            cfg,
            Box::new(MemoryQueue::new()),
        )
    }

    /// A new, empty session using `queue` for its pending messages (e.g. a durable store).
    pub fn with_queue(
        client_id: ClientId,
        expiry_interval: u32,
        cfg: &SessionConfig,
        queue: Box<dyn MessageQueue>,
    ) -> Self {
        Session {
            client_id,
            expiry_interval,
            subscriptions: Subscriptions::default(),
            outgoing: Inflight::default(),
            next_seq: 0,
            next_packet_id: 1,
            incoming_qos2: IdSet::default(),
            queue,
            max_queued: cfg.max_queued_messages,
            policy: cfg.queue_policy,
            queue_qos0_offline: cfg.queue_qos0_offline,
            stats: None,
            changes: None,
        }
    }

    /// Starts (`true`) or stops (`false`) recording changes for [`Session::take_changes`].
    /// Off by default. Turn it on before handing the session to
    /// [`crate::Connection::accept_connect`] (pass a new tracked session instead of `None`
    /// for a client without one) so that nothing the connection does is missed.
    pub fn set_track_changes(&mut self, on: bool) {
        match (on, self.changes.is_some()) {
            (true, false) => self.changes = Some(Box::default()),
            (false, true) => self.changes = None,
            _ => {}
        }
    }

    /// Whether changes are being recorded.
    pub fn tracks_changes(&self) -> bool {
        self.changes.is_some()
    }

    /// The changes recorded since the last call (empty when not tracking), and starts a new
    /// record.
    pub fn take_changes(&mut self) -> SessionChanges {
        match self.changes.as_mut() {
            Some(c) => std::mem::take(&mut **c),
            None => SessionChanges::default(),
        }
    }

    fn note(&mut self, f: impl FnOnce(&mut SessionChanges)) {
        if let Some(c) = self.changes.as_mut() {
            f(c);
        }
    }

    /// Re-reads the queue limits from `cfg` (called when a connection takes the session).
    pub(crate) fn apply_config(&mut self, cfg: &SessionConfig) {
        self.max_queued = cfg.max_queued_messages;
        self.policy = cfg.queue_policy;
        self.queue_qos0_offline = cfg.queue_qos0_offline;
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Session Expiry Interval in seconds; [`SESSION_NEVER_EXPIRES`] = never, 0 = the session
    /// ends with its connection.
    pub fn expiry_interval(&self) -> u32 {
        self.expiry_interval
    }

    /// Sets the Session Expiry Interval (the connection does this from CONNECT and
    /// DISCONNECT).
    pub fn set_expiry_interval(&mut self, secs: u32) {
        if self.expiry_interval != secs {
            self.note(|c| c.expiry_interval = true);
        }
        self.expiry_interval = secs;
    }

    /// Subscriptions by full topic filter (with any `$share/{group}/` prefix).
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// Mutable subscriptions; recorded as changed.
    pub(crate) fn subscriptions_mut(&mut self) -> &mut Subscriptions {
        self.note(|c| c.subscriptions = true);
        &mut self.subscriptions
    }

    /// The outgoing in-flight message with packet identifier `id`, as plain parts.
    pub fn outgoing_parts(&self, id: u16) -> Option<OutgoingParts> {
        self.outgoing.get(id).map(|f| OutgoingParts::of(id, f))
    }

    /// Whether `id` is an incoming QoS 2 packet identifier awaiting PUBREL.
    pub fn has_incoming_qos2(&self, id: u16) -> bool {
        self.incoming_qos2.contains(&id)
    }

    /// Removes an outgoing in-flight message (acknowledged or discarded).
    pub(crate) fn remove_outgoing(&mut self, id: u16) -> Option<OutFlight> {
        let f = self.outgoing.remove(id);
        if f.is_some() {
            self.note(|c| {
                c.outgoing.insert(id);
            });
        }
        f
    }

    /// Moves an outgoing QoS 2 message to "PUBREL sent, awaiting PUBCOMP".
    pub(crate) fn release_outgoing(&mut self, id: u16) {
        let changed = match self.outgoing.get_mut(id) {
            Some(f) if f.state != OutState::Qos2Released => {
                f.state = OutState::Qos2Released;
                true
            }
            _ => false,
        };
        if changed {
            self.note(|c| {
                c.outgoing.insert(id);
            });
        }
    }

    /// Records an incoming QoS 2 identifier as PUBREC'd, awaiting PUBREL.
    pub(crate) fn insert_incoming_qos2(&mut self, id: u16) {
        if self.incoming_qos2.insert(id) {
            self.note(|c| {
                c.incoming_qos2.insert(id);
            });
        }
    }

    /// Releases an incoming QoS 2 identifier (PUBREL); false when it was unknown.
    pub(crate) fn remove_incoming_qos2(&mut self, id: u16) -> bool {
        let known = self.incoming_qos2.remove(&id);
        if known {
            self.note(|c| {
                c.incoming_qos2.insert(id);
            });
        }
        known
    }

    /// Outgoing QoS 1/2 messages holding a packet identifier (sent or about to be resent).
    pub fn inflight_len(&self) -> usize {
        self.outgoing.len()
    }

    /// Incoming QoS 2 packet identifiers awaiting PUBREL.
    pub fn incoming_qos2_len(&self) -> usize {
        self.incoming_qos2.len()
    }

    /// Messages in the pending queue.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// The queued messages, front first.
    pub(crate) fn queue_iter(&self) -> Box<dyn Iterator<Item = &Delivery> + '_> {
        self.queue.iter()
    }

    /// The packet identifier tried first for the next outgoing message.
    pub(crate) fn next_packet_id(&self) -> u16 {
        self.next_packet_id
    }

    /// After a rebuild from parts: the next packet identifier, and the resend order
    /// counter (past every restored in-flight message).
    pub(crate) fn restore_counters(&mut self, next_packet_id: u16, next_seq: u64) {
        self.next_packet_id = next_packet_id.max(1);
        self.next_seq = next_seq;
    }

    /// Counters of this session.
    pub fn stats(&self) -> &SessionStats {
        self.stats.as_deref().unwrap_or(&SessionStats::ZERO)
    }

    fn stats_mut(&mut self) -> &mut SessionStats {
        self.stats.get_or_insert_with(Box::default)
    }

    /// Queues a message for this session while no connection owns it (offline).
    ///
    /// Expired messages are refused ([`Dropped::Expired`]); QoS 0 messages are refused
    /// unless [`SessionConfig::queue_qos0_offline`]; a full queue applies the
    /// [`QueuePolicy`] ([`Dropped::QueueFull`] for `DropNewest`; `DropOldest` drops the
    /// oldest message, counts it, and returns `Ok`). Every refusal and drop is counted in
    /// [`Session::stats`].
    pub fn enqueue(&mut self, now: Instant, delivery: Delivery) -> Result<(), Dropped> {
        if delivery.message.is_expired(now) {
            self.stats_mut().dropped.count(Dropped::Expired);
            return Err(Dropped::Expired);
        }
        if delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline {
            self.stats_mut().dropped.count(Dropped::Qos0Offline);
            return Err(Dropped::Qos0Offline);
        }
        self.push_pending(delivery)
    }

    /// Appends to the pending queue, applying the limit and the policy.
    pub(crate) fn push_pending(&mut self, delivery: Delivery) -> Result<(), Dropped> {
        if self.queue.len() >= self.max_queued {
            self.stats_mut().dropped.count(Dropped::QueueFull);
            match self.policy {
                QueuePolicy::DropNewest => return Err(Dropped::QueueFull),
                QueuePolicy::DropOldest => {
                    if self.queue.pop_front().is_some() {
                        self.note(|c| c.queue_popped += 1);
                    }
                    if self.max_queued == 0 {
                        return Err(Dropped::QueueFull);
                    }
                }
            }
        }
        self.queue.push_back(delivery);
        self.stats_mut().enqueued += 1;
        Ok(())
    }

    /// Takes the next unexpired queued message; expired ones are dropped and counted.
    pub(crate) fn pop_pending(&mut self, now: Instant) -> Option<Delivery> {
        while let Some(d) = self.queue.pop_front() {
            self.note(|c| c.queue_popped += 1);
            if d.message.is_expired(now) {
                self.stats_mut().dropped.count(Dropped::Expired);
                continue;
            }
            return Some(d);
        }
        None
    }

    /// Whether the pending queue holds anything.
    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Puts a delivery just taken with [`Session::pop_pending`] back at the front of the
    /// queue (its packet identifier is still in use): as if it had never left.
    pub(crate) fn unpop_pending(&mut self, delivery: Delivery) {
        self.queue.push_front(delivery);
        self.note(|c| c.queue_popped = c.queue_popped.saturating_sub(1));
    }

    /// Whether `delivery` could get a packet identifier now: its fixed one
    /// ([`Delivery::packet_id`]) is free, or any is.
    pub(crate) fn packet_id_free(&self, delivery: &Delivery) -> bool {
        match delivery.packet_id.filter(|id| *id != 0) {
            Some(id) => !self.outgoing.contains(id),
            None => self.outgoing.len() < usize::from(u16::MAX),
        }
    }

    /// The packet identifier a new outgoing QoS 1/2 message for `delivery` would get now:
    /// its fixed one ([`Delivery::packet_id`]) or the next free one. `None` when that
    /// identifier (or, without one, every identifier) is in use: the caller keeps the
    /// delivery queued. Nothing is recorded until [`Session::insert_outgoing`].
    pub(crate) fn free_packet_id(&self, delivery: &Delivery) -> Option<u16> {
        if !self.packet_id_free(delivery) {
            return None;
        }
        Some(match delivery.packet_id.filter(|id| *id != 0) {
            Some(id) => id,
            None => {
                let mut id = self.next_packet_id;
                while id == 0 || self.outgoing.contains(id) {
                    id = id.wrapping_add(1);
                }
                id
            }
        })
    }

    /// Records a new outgoing QoS 1/2 message under `id`, which
    /// [`Session::free_packet_id`] gave for it; `sent`: it was just sent on the current
    /// connection.
    pub(crate) fn insert_outgoing(&mut self, id: u16, delivery: Delivery, sent: bool) {
        if delivery.packet_id.filter(|id| *id != 0).is_none() {
            self.next_packet_id = id.wrapping_add(1);
        }
        let state = if delivery.qos == QoS::ExactlyOnce {
            OutState::Qos2Published
        } else {
            OutState::Qos1Published
        };
        self.outgoing.insert(
            id,
            OutFlight {
                seq: self.next_seq,
                delivery,
                state,
                sent_here: sent,
                ever_sent: sent,
            },
        );
        self.next_seq += 1;
        self.note(|c| {
            c.outgoing.insert(id);
        });
    }

    /// Sets the fixed packet identifier ([`Delivery::packet_id`]) of every queued delivery,
    /// front first (a server that stored the queue anew and derives identifiers from its
    /// store). Not a change of the queue: nothing is recorded.
    pub fn set_queued_packet_ids(&mut self, ids: impl IntoIterator<Item = Option<u16>>) {
        let mut ids = ids.into_iter();
        let n = self.queue.len();
        for _ in 0..n {
            let Some(mut d) = self.queue.pop_front() else {
                break;
            };
            d.packet_id = ids.next().flatten();
            self.queue.push_back(d);
        }
    }

    /// Packet identifiers of outgoing messages not yet sent on the current connection, in
    /// original order.
    pub(crate) fn unsent_ids(&self) -> Vec<u16> {
        let mut ids: Vec<(u64, u16)> = self
            .outgoing
            .iter()
            .filter(|(_, f)| !f.sent_here)
            .map(|(id, f)| (f.seq, id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Marks every outgoing message as not sent on the (new) connection.
    pub(crate) fn reset_sent_here(&mut self) {
        for f in self.outgoing.values_mut() {
            f.sent_here = false;
        }
    }
}
