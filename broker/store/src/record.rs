//! Plain record types: what the store keeps. The server maps them to and from its session
//! and message types; this crate never interprets topics, properties or payloads.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `session_expiry_interval_secs` value meaning "never expires" (MQTT 5 0xFFFFFFFF; also
/// what the server stores for a 3.1.1 session with clean-session 0).
pub const NEVER_EXPIRES: u32 = u32::MAX;

/// An application message as stored: in an offline queue, as a retained message, in an
/// outgoing in-flight entry or as a will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: String,
    /// Payload, opaque.
    pub payload: Bytes,
    /// QoS (0, 1 or 2).
    pub qos: u8,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 publish properties as the server encoded them; opaque here.
    pub properties: Bytes,
    /// Wall-clock time (unix ms) after which the message must not be delivered
    /// (MQTT 5 Message Expiry Interval); `None` = never.
    pub expires_at_unix_ms: Option<u64>,
    /// Client id of the publisher, if the server tracks it (ordering, no-local).
    pub publisher_id: Option<String>,
}

impl StoredMessage {
    /// True when the message has expired at `now_unix_ms`.
    pub fn is_expired(&self, now_unix_ms: u64) -> bool {
        self.expires_at_unix_ms.is_some_and(|t| t <= now_unix_ms)
    }
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// Topic filter, including any `$share/group/` prefix.
    pub filter: String,
    /// The SUBSCRIBE options byte (QoS, no-local, retain-as-published, retain handling).
    pub options: u8,
    /// MQTT 5 subscription identifier.
    pub subscription_id: Option<u32>,
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InflightStage {
    /// QoS 1 PUBLISH sent, PUBACK not yet received.
    AwaitingPuback,
    /// QoS 2 PUBLISH sent, PUBREC not yet received.
    AwaitingPubrec,
    /// PUBREL sent, PUBCOMP not yet received.
    AwaitingPubcomp,
}

/// An outgoing in-flight delivery (server to client).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightEntry {
    /// Packet identifier used towards the client.
    pub packet_id: u16,
    /// Protocol stage.
    pub stage: InflightStage,
    /// The message (resent with DUP after a reconnect while awaiting PUBACK/PUBREC).
    pub message: StoredMessage,
}

/// A persistent session as a whole. Stored in three tables (session, outgoing in-flight,
/// incoming QoS 2) so that the frequent in-flight changes do not rewrite the session.
/// The offline queue is stored separately, see [`QueuedMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Client identifier (the key).
    pub client_id: String,
    /// Session Expiry Interval in seconds; [`NEVER_EXPIRES`] = never.
    pub session_expiry_interval_secs: u32,
    /// When the network connection closed (unix ms); `None` while connected. At load, a
    /// session with `None` counts as disconnected at the last commit before the shutdown.
    pub disconnected_at_unix_ms: Option<u64>,
    /// Protocol level from CONNECT: 4 = 3.1.1, 5 = 5.0.
    pub protocol_version: u8,
    /// Subscriptions.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Outgoing in-flight deliveries, ordered by packet id when loaded.
    pub inflight: Vec<InflightEntry>,
    /// Packet ids of incoming QoS 2 PUBLISHes that were PUBREC'd and await PUBREL
    /// (exactly-once across restarts), ascending when loaded.
    pub incoming_qos2: Vec<u16>,
}

impl SessionRecord {
    /// True when the session has expired at `now_unix_ms`; `fallback_disconnected_at` is used
    /// when the record says the client was connected.
    pub fn is_expired(&self, now_unix_ms: u64, fallback_disconnected_at: u64) -> bool {
        if self.session_expiry_interval_secs == NEVER_EXPIRES {
            return false;
        }
        let since = self
            .disconnected_at_unix_ms
            .unwrap_or(fallback_disconnected_at);
        let ends = since.saturating_add(u64::from(self.session_expiry_interval_secs) * 1000);
        ends <= now_unix_ms
    }
}

/// The part of a session stored in the `sessions` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionBase {
    pub session_expiry_interval_secs: u32,
    pub disconnected_at_unix_ms: Option<u64>,
    pub protocol_version: u8,
    pub subscriptions: Vec<SubscriptionRecord>,
}

/// A will message waiting for its delay (or for its session to end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    /// The will message.
    pub message: StoredMessage,
    /// When to publish it (unix ms). A will whose time passed during downtime is returned
    /// by `load_all`; the server publishes it at once.
    pub fire_at_unix_ms: u64,
}

/// One entry of a session's offline queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Sequence number, assigned by the store, increasing per session (it starts again at 0
    /// after `delete_session`).
    pub seq: u64,
    /// The message.
    pub message: StoredMessage,
}

/// What was dropped while loading because it had expired (or was orphaned).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DroppedAtLoad {
    /// Sessions whose expiry interval passed.
    pub sessions: u64,
    /// Offline-queue entries whose message expired, or whose session expired or is missing.
    pub queued: u64,
    /// Retained messages whose message expiry passed.
    pub retained: u64,
    /// Pending wills whose message expiry passed.
    pub wills: u64,
}

/// Everything the store holds, after expiry filtering, as returned by `Store::load_all`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedState {
    /// Live sessions, by client id order.
    pub sessions: Vec<SessionRecord>,
    /// Offline queues per client id, each in sequence order.
    pub queues: BTreeMap<String, Vec<QueuedMessage>>,
    /// Sent limits per client id (see `Batch::set_sent_limit`): its queue entries with a
    /// lower sequence number may have been sent. Missing = 0 (none was).
    pub sent_limits: BTreeMap<String, u64>,
    /// Retained messages, by topic order.
    pub retained: Vec<StoredMessage>,
    /// Pending wills per client id.
    pub wills: BTreeMap<String, WillRecord>,
    /// What was removed as expired or orphaned (also deleted from disk).
    pub dropped: DroppedAtLoad,
    /// Wall-clock time of the last commit before this load (unix ms), if any.
    pub last_commit_unix_ms: Option<u64>,
}
