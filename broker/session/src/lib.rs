//! halyard-session: the per-client MQTT 3.1.1 + 5.0 protocol state machine.
//!
//! It owns everything that happens between one client and the broker on one network
//! connection ([`Connection`]): CONNECT validation and CONNACK, keep alive, the CONNECT and
//! half-sent-packet (slowloris) timeouts, QoS 1/2 exchanges in both directions with packet
//! identifiers, Receive Maximum both ways, Maximum Packet Size both ways, topic aliases both
//! ways, message expiry, subscription bookkeeping and protocol violations (the right reason
//! code, then close). It also owns the state that outlives a
//! connection ([`Session`]): subscriptions, in-flight messages and the bounded pending queue
//! behind [`MessageQueue`].
//!
//! It is sans-IO: bytes and `now: Instant` go in, bytes, [`Event`]s and deadlines come out.
//! It must never touch a socket, read the clock, spawn a thread, hold a global, or panic on
//! input from the network. Routing, retained messages, authentication, takeover, will delay,
//! No Local and shared-subscription dispatch are decisions of the server (halyard-server),
//! asked for through [`Event`]s and answered through `Connection` methods.
//!
//! # What the server must do
//!
//! - Drive each [`Connection`] as its module documentation says (bytes, timeouts, events,
//!   transmit) and answer every [`Event`]: `Connect` with `accept_connect`/`reject_connect`
//!   (authentication, takeover: call [`Connection::disconnect`] with 0x8E on the old
//!   connection first and pass its [`Session`] on unless Clean Start), `Publish` with
//!   `complete_publish` for QoS 1/2 (the session never acknowledges on its own), `Subscribe`
//!   and `Unsubscribe` with `complete_subscribe`/`complete_unsubscribe`.
//! - Route: match topics, apply No Local (compare [`Message::publisher`] with the
//!   subscriber's client id), Retain As Published (set [`Delivery::retain`]), min(granted,
//!   published) QoS, one copy per subscriber with every matching subscription identifier
//!   (3.1.1: highest QoS), shared-group member selection, `$`-topic rules.
//! - Retained messages: store/delete on PUBLISH with RETAIN, send on SUBSCRIBE per Retain
//!   Handling ([`SubscribeRequest::is_new`] for handling 1), never on shared subscriptions.
//! - Wills: [`Event::Closed`] carries the will when it must be published; the server
//!   publishes it after min(will delay, session expiry) unless the client resumes the
//!   session first (and, on takeover with Clean Start 0 and a will delay > 0, not at all).
//! - Session lifetime: keep the [`Session`] from [`Connection::into_session`] for its expiry
//!   interval (the session has no clock), feeding it with [`Session::enqueue`].
//! - Durable sessions (optional): snapshot a session with [`Session::to_parts`] and rebuild
//!   it with [`Session::from_parts`]; convert messages with [`Message::to_parts`] /
//!   [`Message::from_parts`] and a caller-supplied [`WallClock`]; mirror changes as they
//!   happen with [`Session::set_track_changes`] and [`Session::take_changes`], and write
//!   them before transmitting what caused them.

#![deny(missing_docs)]

mod config;
mod connection;
mod error;
mod event;
pub mod fuzzing;
mod inflight;
mod message;
mod parts;
mod queue;
mod session;
mod stats;
mod subscriptions;

pub use config::{QueuePolicy, SessionConfig};
pub use connection::{
    Connection, DeliverOutcome, PUBLISH_CACHE_MAX_PACKET, PUBLISH_CACHE_SLOTS, PUBLISH_CACHE_WAYS,
    ParkedConnection, PublishCache,
};
pub use error::{CloseReason, PartsError, ProtocolError};
pub use event::{ConnectRequest, Event, SubscribeRequest};
pub use message::{ClientId, Delivery, Message, MessageParts, MessageProperties, WallClock, Will};
pub use parts::{OutgoingParts, OutgoingStage, SessionParts};
pub use queue::{Dropped, MemoryQueue, MessageQueue};
pub use session::{SESSION_NEVER_EXPIRES, Session, SessionChanges, Subscription};
pub use stats::{ConnectionStats, DropCounters, SessionStats};
pub use subscriptions::Subscriptions;

#[cfg(test)]
mod tests;
