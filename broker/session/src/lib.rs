//! halyard-session: the per-client MQTT 3.1.1 + 5.0 protocol state machine.
//!
//! It owns everything that happens between one client and the broker on one network
//! connection ([`Connection`]): CONNECT validation and CONNACK, keep alive, QoS 1/2 exchanges
//! in both directions with packet identifiers, Receive Maximum both ways, Maximum Packet Size
//! both ways, topic aliases both ways, message expiry, subscription bookkeeping and protocol
//! violations (the right reason code, then close). It also owns the state that outlives a
//! connection ([`Session`]): subscriptions, in-flight messages and the bounded pending queue
//! behind [`MessageQueue`].
//!
//! It is sans-IO: bytes and `now: Instant` go in, bytes, [`Event`]s and deadlines come out.
//! It must never touch a socket, read the clock, spawn a thread, hold a global, or panic on
//! input from the network. Routing, retained messages, authentication, takeover, will delay,
//! No Local and shared-subscription dispatch are decisions of the server (halyard-server),
//! asked for through [`Event`]s and answered through `Connection` methods.

mod config;
mod connection;
mod error;
mod event;
mod message;
mod queue;
mod session;
mod stats;

pub use config::{QueuePolicy, SessionConfig};
pub use connection::{Connection, DeliverOutcome};
pub use error::{CloseReason, ProtocolError};
pub use event::{ConnectRequest, Event, SubscribeRequest};
pub use message::{ClientId, Delivery, Message, MessageProperties, Will};
pub use queue::{Dropped, MemoryQueue, MessageQueue};
pub use session::{SESSION_NEVER_EXPIRES, Session, Subscription};
pub use stats::{ConnectionStats, DropCounters, SessionStats};

#[cfg(test)]
mod tests;
