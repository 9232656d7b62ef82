//! A [`Session`] as plain parts and back ([`SessionParts`]), for durable storage.
//!
//! [`Session::to_parts`] and [`Session::from_parts`] are inverse: a session rebuilt from its
//! parts holds the same client identifier, expiry interval, subscriptions, outgoing
//! in-flight messages (packet identifiers, stages, resend order, DUP), incoming QoS 2
//! identifiers, next packet identifier and queued messages. Counters ([`Session::stats`])
//! and change tracking are not part of it: a rebuilt session starts them afresh.

use std::collections::HashSet;

use halyard_codec::QoS;

use crate::config::SessionConfig;
use crate::error::PartsError;
use crate::message::{ClientId, Delivery};
use crate::queue::{MemoryQueue, MessageQueue};
use crate::session::{OutFlight, OutState, Session, Subscription};

/// Where an outgoing QoS 1/2 message stands in its acknowledgement exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutgoingStage {
    /// QoS 1 PUBLISH sent (or to send), awaiting PUBACK.
    AwaitingPuback,
    /// QoS 2 PUBLISH sent (or to send), awaiting PUBREC.
    AwaitingPubrec,
    /// QoS 2 PUBREL sent (or to send), awaiting PUBCOMP.
    AwaitingPubcomp,
}

impl OutgoingStage {
    fn of(state: OutState) -> Self {
        match state {
            OutState::Qos1Published => OutgoingStage::AwaitingPuback,
            OutState::Qos2Published => OutgoingStage::AwaitingPubrec,
            OutState::Qos2Released => OutgoingStage::AwaitingPubcomp,
        }
    }

    fn state(self) -> OutState {
        match self {
            OutgoingStage::AwaitingPuback => OutState::Qos1Published,
            OutgoingStage::AwaitingPubrec => OutState::Qos2Published,
            OutgoingStage::AwaitingPubcomp => OutState::Qos2Released,
        }
    }

    /// Whether this stage is possible for a delivery at `qos`.
    pub fn fits(self, qos: QoS) -> bool {
        match self {
            OutgoingStage::AwaitingPuback => qos == QoS::AtLeastOnce,
            OutgoingStage::AwaitingPubrec | OutgoingStage::AwaitingPubcomp => {
                qos == QoS::ExactlyOnce
            }
        }
    }
}

/// One outgoing in-flight message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingParts {
    /// Packet identifier used towards the client (1..=65535).
    pub packet_id: u16,
    /// Exchange stage.
    pub stage: OutgoingStage,
    /// The delivery (message, delivery QoS, RETAIN flag, subscription identifiers; its
    /// [`Delivery::packet_id`] is `None`: the identifier is [`OutgoingParts::packet_id`]).
    pub delivery: Delivery,
    /// Whether the PUBLISH was ever sent: a resend then carries DUP=1 [MQTT-3.3.1-1].
    /// A server that writes in-flight state before transmitting should restore `true`.
    pub ever_sent: bool,
    /// Resend order: increasing with each new outgoing message of the session, kept across
    /// [`Session::from_parts`] (which sorts by it) so that entries stored one at a time can
    /// be put back in their original order [MQTT-4.6.0-1].
    pub order: u64,
}

impl OutgoingParts {
    pub(crate) fn of(packet_id: u16, f: &OutFlight) -> Self {
        OutgoingParts {
            packet_id,
            stage: OutgoingStage::of(f.state),
            // In flight, the identifier is `packet_id`; the delivery's own (fixed) one
            // said which to take and is not part of the state.
            delivery: Delivery {
                packet_id: None,
                ..f.delivery.clone()
            },
            ever_sent: f.ever_sent,
            order: f.seq,
        }
    }
}

/// Everything of a [`Session`] that must survive a restart, as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParts {
    /// Client identifier.
    pub client_id: ClientId,
    /// Session Expiry Interval, seconds ([`crate::SESSION_NEVER_EXPIRES`] = never).
    pub expiry_interval: u32,
    /// Subscriptions by full topic filter; [`Session::to_parts`] sorts them by filter.
    pub subscriptions: Vec<(String, Subscription)>,
    /// Outgoing in-flight messages; [`Session::to_parts`] lists them in their original
    /// order (the order resends keep [MQTT-4.6.0-1]), [`Session::from_parts`] sorts them by
    /// [`OutgoingParts::order`].
    pub outgoing: Vec<OutgoingParts>,
    /// Incoming QoS 2 packet identifiers awaiting PUBREL; [`Session::to_parts`] sorts them.
    pub incoming_qos2: Vec<u16>,
    /// Queued messages, front first.
    pub queued: Vec<Delivery>,
    /// The packet identifier the session tries first for its next outgoing message (0 is
    /// read as 1).
    pub next_packet_id: u16,
}

impl Session {
    /// The session as plain parts: see [`SessionParts`]; [`Session::from_parts`] rebuilds
    /// an equivalent session (same state, fresh counters).
    pub fn to_parts(&self) -> SessionParts {
        let mut subscriptions: Vec<(String, Subscription)> = self
            .subscriptions()
            .iter()
            .map(|(f, s)| (f.to_owned(), *s))
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut outgoing: Vec<(u64, OutgoingParts)> = self
            .outgoing
            .iter()
            .map(|(id, f)| (f.seq, OutgoingParts::of(id, f)))
            .collect();
        outgoing.sort_unstable_by_key(|(seq, _)| *seq);
        let mut incoming_qos2: Vec<u16> = self.incoming_qos2.iter().copied().collect();
        incoming_qos2.sort_unstable();
        SessionParts {
            client_id: self.client_id().clone(),
            expiry_interval: self.expiry_interval(),
            subscriptions,
            outgoing: outgoing.into_iter().map(|(_, o)| o).collect(),
            incoming_qos2,
            queued: self.queue_iter().cloned().collect(),
            next_packet_id: self.next_packet_id(),
        }
    }

    /// Rebuilds a session from its parts with an in-memory queue and the queue limits of
    /// `cfg`. Queued messages beyond [`SessionConfig::max_queued_messages`] are handled by
    /// the [`crate::QueuePolicy`] and counted, as if enqueued now; expired ones are kept
    /// (they are dropped when their turn comes). Fails on state this crate never produces
    /// (see [`PartsError`]).
    pub fn from_parts(parts: SessionParts, cfg: &SessionConfig) -> Result<Session, PartsError> {
        Session::from_parts_with_queue(parts, cfg, Box::new(MemoryQueue::new()))
    }

    /// As [`Session::from_parts`], with `queue` (empty) holding the pending messages.
    pub fn from_parts_with_queue(
        parts: SessionParts,
        cfg: &SessionConfig,
        queue: Box<dyn MessageQueue>,
    ) -> Result<Session, PartsError> {
        let mut seen = HashSet::new();
        for o in &parts.outgoing {
            if o.packet_id == 0 {
                return Err(PartsError::ZeroPacketId);
            }
            if !seen.insert(o.packet_id) {
                return Err(PartsError::DuplicatePacketId(o.packet_id));
            }
            if !o.stage.fits(o.delivery.qos) {
                return Err(PartsError::StageMismatch(o.packet_id));
            }
        }
        let mut incoming = crate::session::IdSet::default();
        for &id in &parts.incoming_qos2 {
            if id == 0 {
                return Err(PartsError::ZeroPacketId);
            }
            if !incoming.insert(id) {
                return Err(PartsError::DuplicatePacketId(id));
            }
        }
        let mut s = Session::with_queue(parts.client_id, parts.expiry_interval, cfg, queue);
        {
            let subs = s.subscriptions_mut();
            for (filter, sub) in parts.subscriptions {
                if subs.insert(filter.clone(), sub).is_some() {
                    return Err(PartsError::DuplicateFilter(filter));
                }
            }
        }
        let mut outgoing = parts.outgoing;
        outgoing.sort_by_key(|o| o.order);
        let next_seq = outgoing.last().map_or(0, |o| o.order.saturating_add(1));
        for o in outgoing {
            s.outgoing.insert(
                o.packet_id,
                OutFlight {
                    seq: o.order,
                    delivery: o.delivery,
                    state: o.stage.state(),
                    sent_here: false,
                    ever_sent: o.ever_sent,
                },
            );
        }
        s.restore_counters(parts.next_packet_id, next_seq);
        s.incoming_qos2 = incoming;
        for d in parts.queued {
            // A refusal is counted by the session (QueuePolicy), as for any enqueue.
            let _ = s.push_pending(d);
        }
        Ok(s)
    }
}
