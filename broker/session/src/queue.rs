//! The pending-message queue of a session behind [`MessageQueue`], and why a message is dropped.

use std::collections::VecDeque;
use std::fmt;

use crate::message::Delivery;

/// Why a message was not (and will never be) delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Dropped {
    /// The session's pending queue was full (see [`crate::QueuePolicy`]): with
    /// `DropNewest` the new message, with `DropOldest` the oldest queued one.
    #[error("session queue full")]
    QueueFull,
    /// The message expired before delivery started [MQTT-3.3.2-5].
    #[error("message expired")]
    Expired,
    /// The encoded PUBLISH exceeds the client's Maximum Packet Size [MQTT-3.1.2-25].
    #[error("packet larger than the client's maximum packet size")]
    TooLarge,
    /// QoS 0 message while the connection's output buffer is over
    /// [`crate::SessionConfig::max_pending_output`] (slow consumer).
    #[error("QoS 0 message refused: output backlog full")]
    OutputFull,
    /// QoS 0 message for an offline session, not queued
    /// ([`crate::SessionConfig::queue_qos0_offline`] is false).
    #[error("QoS 0 message for an offline session")]
    Qos0Offline,
    /// The connection is closed (or not yet accepted): use [`crate::Session::enqueue`]
    /// on the session instead.
    #[error("connection not accepting deliveries")]
    NotConnected,
    /// The encoder refused the message (e.g. a property too long for MQTT).
    #[error("message cannot be encoded")]
    Unencodable,
}

/// Storage of the messages waiting for a session: offline, or behind the in-flight window.
///
/// FIFO. The session applies the limit and the [`crate::QueuePolicy`] itself; an
/// implementation only stores. The in-memory [`MemoryQueue`] is the default; a durable store
/// implements this trait later. Implementations must be `Send` because a session moves to
/// another thread on takeover.
pub trait MessageQueue: Send + fmt::Debug {
    /// Appends a message at the back.
    fn push_back(&mut self, delivery: Delivery);
    /// Removes and returns the front message.
    fn pop_front(&mut self) -> Option<Delivery>;
    /// Puts a message just taken with [`MessageQueue::pop_front`] back at the front.
    fn push_front(&mut self, delivery: Delivery);
    /// The front message, without removing it.
    fn front(&self) -> Option<&Delivery>;
    /// Number of queued messages.
    fn len(&self) -> usize;
    /// The queued messages, front first, without removing them (used to snapshot a
    /// session with [`crate::Session::to_parts`]).
    fn iter(&self) -> Box<dyn Iterator<Item = &Delivery> + '_>;
    /// Whether the queue is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// In-memory [`MessageQueue`] on a `VecDeque`.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    items: VecDeque<Delivery>,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MessageQueue for MemoryQueue {
    fn push_back(&mut self, delivery: Delivery) {
        self.items.push_back(delivery);
    }

    fn pop_front(&mut self) -> Option<Delivery> {
        self.items.pop_front()
    }

    fn push_front(&mut self, delivery: Delivery) {
        self.items.push_front(delivery);
    }

    fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Delivery> + '_> {
        Box::new(self.items.iter())
    }
}
