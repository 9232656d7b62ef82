//! [`PublishCache`]: encoded PUBLISH packets shared by the connections a message fans out to.

use std::sync::Arc;

use bytes::Bytes;
use halyard_codec::{ProtocolVersion, QoS};

use crate::message::Message;

/// Slots of a [`PublishCache`]: [`PUBLISH_CACHE_WAYS`]-way sets picked by a hash of the
/// message's address; within a set a new message replaces the oldest one.
pub const PUBLISH_CACHE_SLOTS: usize = 512;

/// Slots per set of a [`PublishCache`]. Several ways keep the messages of one burst (a
/// subscriber's window, tens of messages, all in the cache at once while the thread's
/// connections take their copies one after the other) from evicting each other: with one
/// way, two live messages whose addresses share a slot are encoded again for every
/// receiver.
pub const PUBLISH_CACHE_WAYS: usize = 4;

/// Largest encoded PUBLISH a [`PublishCache`] keeps; larger ones are encoded per connection
/// (the copy would cost about as much as the encode, and the cache stays small: at most
/// `PUBLISH_CACHE_SLOTS` x this many bytes, plus the messages it holds).
pub const PUBLISH_CACHE_MAX_PACKET: usize = 2048;

/// The per-receiver form of a PUBLISH that a cached encoding is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Variant {
    version: ProtocolVersion,
    qos: QoS,
    retain: bool,
}

#[derive(Debug)]
struct Slot {
    /// Held so that the address the slot is keyed by cannot be reused by another message.
    message: Arc<Message>,
    variant: Variant,
    packet: Bytes,
    /// Where the packet identifier sits in `packet` (QoS 1/2), to patch per receiver.
    packet_id_at: Option<usize>,
    /// When it was stored (the cache's `stored` count then): the oldest of a set goes first.
    stamp: u64,
}

/// Encoded PUBLISH packets of recent messages, shared by the [`crate::Connection`]s of one
/// thread through [`crate::Connection::deliver_cached`]: when one message goes to many
/// subscribers, it is encoded once per form (protocol version, QoS, RETAIN) and copied
/// into each connection's output, with its packet identifier patched.
///
/// Only first transmissions of PUBLISH packets whose bytes are the same for every receiver
/// are cached: 3.1.1, and 5.0 without a topic alias, subscription identifiers or a Message
/// Expiry Interval (which changes with time), to clients without a Maximum Packet Size,
/// and only of messages that another holder could still deliver (not the last reference).
/// Bounded by [`PUBLISH_CACHE_SLOTS`] and [`PUBLISH_CACHE_MAX_PACKET`]. Plain data, no
/// clock, no global: the server owns one per thread.
#[derive(Debug, Default)]
pub struct PublishCache {
    slots: Vec<Option<Slot>>,
    /// PUBLISH packets copied from the cache.
    pub hits: u64,
    /// PUBLISH packets encoded and stored.
    pub misses: u64,
}

impl PublishCache {
    /// An empty cache of [`PUBLISH_CACHE_SLOTS`] slots. ([`PublishCache::default`] has no
    /// slots and caches nothing.)
    pub fn new() -> Self {
        PublishCache {
            slots: (0..PUBLISH_CACHE_SLOTS).map(|_| None).collect(),
            hits: 0,
            misses: 0,
        }
    }

    /// The set `message` belongs to, `None` for a cache without slots. It depends on where
    /// the message was allocated: more than [`PUBLISH_CACHE_WAYS`] live messages of one
    /// burst in one set evict each other (each is then encoded again per receiver).
    pub(crate) fn set_of(&self, message: &Arc<Message>) -> Option<usize> {
        let sets = self.slots.len() / PUBLISH_CACHE_WAYS;
        if sets == 0 {
            return None;
        }
        // Fibonacci hashing: consecutive allocations (a fixed stride apart) spread over all
        // sets instead of the few that the address's low bits would pick.
        let h = (Arc::as_ptr(message) as usize as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Some(((h >> 32) as usize) % sets)
    }

    /// The slots of the set `message` belongs to (empty for a cache without slots).
    fn set_range(&self, message: &Arc<Message>) -> std::ops::Range<usize> {
        self.set_of(message).map_or(0..0, |set| {
            set * PUBLISH_CACHE_WAYS..(set + 1) * PUBLISH_CACHE_WAYS
        })
    }

    /// The cached packet for `message` in `variant`, with where its packet id goes.
    fn get(&self, message: &Arc<Message>, variant: Variant) -> Option<(&[u8], Option<usize>)> {
        self.slots
            .get(self.set_range(message))?
            .iter()
            .flatten()
            .find(|s| Arc::ptr_eq(&s.message, message) && s.variant == variant)
            .map(|s| (&s.packet[..], s.packet_id_at))
    }

    /// Stores `packet`, the encoding of `message` in `variant`, in the free or oldest slot
    /// of its set.
    fn put(&mut self, message: &Arc<Message>, variant: Variant, packet: &[u8]) {
        if packet.len() > PUBLISH_CACHE_MAX_PACKET {
            return;
        }
        let packet_id_at = if variant.qos == QoS::AtMostOnce {
            None
        } else {
            match packet_id_offset(packet) {
                Some(at) => Some(at),
                None => return,
            }
        };
        let stamp = self.misses;
        let range = self.set_range(message);
        let Some(set) = self.slots.get_mut(range) else {
            return;
        };
        let Some(slot) = set
            .iter_mut()
            .min_by_key(|s| s.as_ref().map_or(0, |s| s.stamp + 1))
        else {
            return;
        };
        *slot = Some(Slot {
            message: message.clone(),
            variant,
            packet: Bytes::copy_from_slice(packet),
            packet_id_at,
            stamp,
        });
    }
}

/// Offset of the packet identifier in an encoded PUBLISH: after the fixed header (one byte
/// and the Remaining Length, 1-4 bytes) and the topic name (two length bytes and the name).
fn packet_id_offset(packet: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        let b = *packet.get(at)?;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return None;
        }
    }
    let len = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]);
    let id_at = at + 2 + usize::from(len);
    (id_at + 2 <= packet.len()).then_some(id_at)
}

impl super::Connection {
    /// As [`crate::Connection::deliver`], encoding through `cache` (see [`PublishCache`]).
    pub fn deliver_cached(
        &mut self,
        now: std::time::Instant,
        delivery: crate::Delivery,
        cache: &mut PublishCache,
    ) -> crate::DeliverOutcome {
        std::mem::swap(&mut self.cache, cache);
        let outcome = self.deliver(now, delivery);
        std::mem::swap(&mut self.cache, cache);
        outcome
    }

    /// The cache form of `d` on this connection, when its bytes would be the same for every
    /// receiver (see [`PublishCache`]).
    ///
    /// `None` too for a message nothing else holds (`d`'s is its only reference): no other
    /// receiver can be given it, so an encoding kept for one would never be taken (a
    /// message in the cache has the cache's reference as well, so it cannot be there
    /// either). A point-to-point message thus costs no lookup, no copy into the cache and no
    /// eviction, and is freed when its delivery is done instead of when its slot is reused
    /// (with two I/O threads, on the publisher's thread's memory, long after its lines left
    /// the cache).
    pub(crate) fn cache_variant(&self, d: &crate::Delivery, dup: bool) -> Option<Variant> {
        if dup
            || self.cache.slots.is_empty()
            || self.peer_limits_size()
            || Arc::strong_count(&d.message) == 1
        {
            return None;
        }
        if self.version == ProtocolVersion::V5
            && (self.alias_limit() > 0
                || !d.subscription_ids.is_empty()
                || d.message.expires_at.is_some())
        {
            return None;
        }
        Some(Variant {
            version: self.version,
            qos: d.qos,
            retain: d.retain,
        })
    }

    /// Appends the cached PUBLISH of `message` in `variant` to the output with `packet_id`;
    /// false when not cached.
    pub(crate) fn send_cached(
        &mut self,
        message: &Arc<Message>,
        variant: Variant,
        packet_id: u16,
    ) -> bool {
        let Some((packet, id_at)) = self.cache.get(message, variant) else {
            return false;
        };
        let start = self.tx.len();
        self.tx.extend_from_slice(packet);
        if let Some(at) = id_at {
            self.tx[start + at..start + at + 2].copy_from_slice(&packet_id.to_be_bytes());
        }
        self.cache.hits += 1;
        self.stats_mut().packets_out += 1;
        true
    }

    /// Stores the PUBLISH just encoded at `start..` of the output in the cache.
    pub(crate) fn cache_sent(&mut self, message: &Arc<Message>, variant: Variant, start: usize) {
        self.cache.misses += 1;
        if let Some(packet) = self.tx.get(start..) {
            self.cache.put(message, variant, packet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_id_offset_skips_header_and_topic() {
        // PUBLISH QoS 1, remaining 7: topic "a/b", id 0x0102, payload "x".
        let p = [0x32, 8, 0, 3, b'a', b'/', b'b', 1, 2, b'x'];
        assert_eq!(packet_id_offset(&p), Some(7));
        assert_eq!(packet_id_offset(&p[..7]), None);
        assert_eq!(packet_id_offset(&[0x32, 0x80, 0x80, 0x80, 0x80, 0]), None);
    }
}
