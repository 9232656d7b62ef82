//! [`Inflight`]: a session's outgoing QoS 1/2 messages by packet identifier, as a ring.

use std::collections::{BTreeMap, VecDeque};

use crate::session::OutFlight;

/// Widest span of packet identifiers the ring of an [`Inflight`] covers (from its oldest
/// entry). An identifier further ahead (a message stuck at the front while thousands of
/// later ones come and go, or a fixed identifier far from the others) goes to the side
/// table instead. Bounds the ring's memory by span, not only by entries: at most this many
/// slots (~48 B each).
pub const INFLIGHT_RING_SPAN: usize = 4096;

/// The outgoing QoS 1/2 messages of a session holding a packet identifier.
///
/// Identifiers are handed out in increasing order and acknowledged mostly in the same
/// order, so the entries live in a ring of slots indexed by `id - base` (wrapping, the slot
/// of identifier 0 is always empty): the usual in-order PUBACK/PUBCOMP takes the front slot,
/// a new identifier appends at the back, both O(1) without hashing, and the entries of one
/// session sit next to each other in memory. Emptied slots at the front (and the back) are
/// dropped at once, so the ring spans from the oldest to the newest entry; identifiers the
/// ring cannot take within [`INFLIGHT_RING_SPAN`] go to an ordered side table.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    /// Packet identifier of `ring[0]`.
    base: u16,
    /// Slot `i` holds identifier `base + i` (wrapping); the first and last slots are full.
    ring: VecDeque<Option<OutFlight>>,
    /// Entries outside the ring's span (rare: boxed, and freed when empty, so that every
    /// session does not carry an empty map).
    // Boxed on purpose: an empty `BTreeMap` is 24 B inline in every session, the box 8 B.
    #[allow(clippy::box_collection)]
    spill: Option<Box<BTreeMap<u16, OutFlight>>>,
    /// Entries in `ring` (at most [`INFLIGHT_RING_SPAN`]).
    in_ring: u16,
}

impl Inflight {
    /// The ring slot of `id`, if the ring spans it.
    fn slot(&self, id: u16) -> Option<usize> {
        let at = usize::from(id.wrapping_sub(self.base));
        (at < self.ring.len()).then_some(at)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.in_ring) + self.spill.as_ref().map_or(0, |s| s.len())
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: u16) -> bool {
        self.get(id).is_some()
    }

    /// The ring slot of `id` when the ring holds `id` (else it is in the side table, if
    /// anywhere: the ring's span can grow over an identifier put there earlier).
    fn ring_slot(&self, id: u16) -> Option<usize> {
        self.slot(id)
            .filter(|&at| self.ring.get(at).is_some_and(Option::is_some))
    }

    /// The entry of `id`.
    pub(crate) fn get(&self, id: u16) -> Option<&OutFlight> {
        match self.ring_slot(id) {
            Some(at) => self.ring.get(at).and_then(Option::as_ref),
            None => self.spill.as_ref()?.get(&id),
        }
    }

    /// The entry of `id`, mutable.
    pub(crate) fn get_mut(&mut self, id: u16) -> Option<&mut OutFlight> {
        match self.ring_slot(id) {
            Some(at) => self.ring.get_mut(at).and_then(Option::as_mut),
            None => self.spill.as_mut()?.get_mut(&id),
        }
    }

    /// Adds `f` under `id`, replacing (and returning) an entry already there.
    pub(crate) fn insert(&mut self, id: u16, f: OutFlight) -> Option<OutFlight> {
        if let Some(spill) = self.spill.as_mut()
            && spill.contains_key(&id)
        {
            return spill.insert(id, f);
        }
        if self.ring.is_empty() {
            self.base = id;
        }
        let at = usize::from(id.wrapping_sub(self.base));
        if let Some(slot) = self.ring.get_mut(at) {
            let old = slot.replace(f);
            if old.is_none() {
                self.in_ring += 1;
            }
            return old;
        }
        if at < INFLIGHT_RING_SPAN {
            self.ring.resize_with(at, || None);
            self.ring.push_back(Some(f));
            self.in_ring += 1;
            return None;
        }
        self.spill.get_or_insert_with(Box::default).insert(id, f)
    }

    /// Removes and returns the entry of `id`.
    pub(crate) fn remove(&mut self, id: u16) -> Option<OutFlight> {
        let Some(at) = self.ring_slot(id) else {
            let spill = self.spill.as_mut()?;
            let f = spill.remove(&id);
            if spill.is_empty() {
                self.spill = None;
            }
            return f;
        };
        let f = self.ring.get_mut(at).and_then(Option::take)?;
        self.in_ring -= 1;
        while let Some(None) = self.ring.front() {
            self.ring.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        while let Some(None) = self.ring.back() {
            self.ring.pop_back();
        }
        Some(f)
    }

    /// Every entry with its identifier (ring order, then the side table's).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u16, &OutFlight)> {
        let base = self.base;
        self.ring
            .iter()
            .enumerate()
            .filter_map(move |(i, f)| {
                // The ring spans fewer than `u16::MAX` slots, so `i` fits.
                let id = base.wrapping_add(i as u16);
                f.as_ref().map(|f| (id, f))
            })
            .chain(
                self.spill
                    .iter()
                    .flat_map(|s| s.iter())
                    .map(|(id, f)| (*id, f)),
            )
    }

    /// Every entry, mutable.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut OutFlight> {
        self.ring
            .iter_mut()
            .filter_map(Option::as_mut)
            .chain(self.spill.iter_mut().flat_map(|s| s.values_mut()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use halyard_codec::{MqttString, QoS};

    use super::*;
    use crate::message::{Delivery, Message, MessageProperties};
    use crate::session::OutState;

    fn flight(seq: u64) -> OutFlight {
        let message = Arc::new(Message {
            topic: MqttString::from("t".to_owned()),
            payload: bytes::Bytes::new(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: None,
        });
        OutFlight {
            seq,
            delivery: Delivery {
                message,
                qos: QoS::AtLeastOnce,
                retain: false,
                subscription_ids: Default::default(),
                packet_id: None,
            },
            state: OutState::Qos1Published,
            sent_here: false,
            ever_sent: false,
        }
    }

    fn ids(f: &Inflight) -> Vec<u16> {
        let mut v: Vec<u16> = f.iter().map(|(id, _)| id).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn in_order_acks_keep_the_ring_tight() {
        let mut f = Inflight::default();
        for id in 1..=64 {
            assert!(f.insert(id, flight(u64::from(id))).is_none());
        }
        assert_eq!(f.len(), 64);
        for id in 1..=64 {
            assert_eq!(f.remove(id).map(|x| x.seq), Some(u64::from(id)));
            assert!(!f.contains(id));
            assert_eq!(f.ring.len(), usize::from(64 - id));
        }
        assert_eq!(f.len(), 0);
        assert!(f.remove(3).is_none());
    }

    #[test]
    fn out_of_order_and_holes() {
        let mut f = Inflight::default();
        for id in [10, 11, 12, 15] {
            f.insert(id, flight(u64::from(id)));
        }
        assert_eq!(f.ring.len(), 6);
        assert!(!f.contains(13) && !f.contains(9) && !f.contains(16));
        assert_eq!(f.remove(11).map(|x| x.seq), Some(11));
        assert_eq!(f.remove(15).map(|x| x.seq), Some(15));
        // The back shrinks to the newest entry, the front to the oldest.
        assert_eq!(f.ring.len(), 3);
        assert_eq!(f.remove(10).map(|x| x.seq), Some(10));
        assert_eq!(f.ring.len(), 1);
        assert_eq!(ids(&f), vec![12]);
        // Fill a hole behind the newest entry, then one before the base (side table).
        f.insert(13, flight(13));
        f.insert(5, flight(5));
        assert_eq!(ids(&f), vec![5, 12, 13]);
        assert_eq!(f.get(5).map(|x| x.seq), Some(5));
        if let Some(x) = f.get_mut(13) {
            x.sent_here = true;
        }
        assert!(f.get(13).is_some_and(|x| x.sent_here));
        assert_eq!(f.values_mut().count(), 3);
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn identifiers_wrap_past_zero() {
        let mut f = Inflight::default();
        for id in [65534, 65535, 1, 2] {
            f.insert(id, flight(u64::from(id)));
        }
        // Slot of identifier 0 stays empty.
        assert_eq!(f.ring.len(), 5);
        assert!(!f.contains(0));
        assert_eq!(ids(&f), vec![1, 2, 65534, 65535]);
        for id in [65534, 65535, 1, 2] {
            assert!(f.remove(id).is_some());
        }
        assert_eq!(f.len(), 0);
        assert!(f.ring.is_empty());
    }

    #[test]
    fn far_identifiers_go_to_the_side_table() {
        let mut f = Inflight::default();
        f.insert(1, flight(1));
        let far = 1 + INFLIGHT_RING_SPAN as u16;
        f.insert(far, flight(2));
        assert_eq!(f.ring.len(), 1);
        assert_eq!(f.spill.as_ref().map_or(0, |s| s.len()), 1);
        assert_eq!(f.get(far).map(|x| x.seq), Some(2));
        // Replacing keeps one entry.
        assert!(f.insert(far, flight(3)).is_some());
        assert_eq!(f.len(), 2);
        assert_eq!(f.remove(1).map(|x| x.seq), Some(1));
        // The ring is empty and starts again below the spilled identifier, then grows over
        // it: the entry is still found, replaced and removed in the side table, never held
        // twice.
        f.insert(far - 1, flight(4));
        f.insert(far + 1, flight(5));
        assert_eq!(f.ring.len(), 3);
        assert_eq!(f.get(far).map(|x| x.seq), Some(3));
        assert_eq!(f.get(far + 1).map(|x| x.seq), Some(5));
        assert_eq!(f.insert(far, flight(6)).map(|x| x.seq), Some(3));
        assert_eq!(f.len(), 3);
        assert_eq!(f.remove(far).map(|x| x.seq), Some(6));
        assert!(f.get(far).is_none());
        assert_eq!(f.len(), 2);
        assert_eq!(ids(&f), vec![far - 1, far + 1]);
    }
}
