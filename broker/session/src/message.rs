//! Application messages as the broker routes them: [`Message`], [`Delivery`], [`Will`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_codec::{MqttString, QoS};
use smallvec::SmallVec;

use crate::error::PartsError;

/// The PUBLISH properties a broker forwards unchanged to subscribers
/// [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20] [MQTT-3.3.2-4].
///
/// Message Expiry Interval is not here: it lives in [`Message::expires_at`] and is
/// recomputed at each send. Topic Alias and Subscription Identifier are per connection /
/// per subscription and never forwarded as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload Format Indicator: `Some(true)` = UTF-8 payload, `Some(false)` = unspecified
    /// bytes (sent as 0), `None` = absent.
    pub payload_format_indicator: Option<bool>,
    /// Content Type.
    pub content_type: Option<MqttString>,
    /// Response Topic.
    pub response_topic: Option<MqttString>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in the order received [MQTT-3.3.2-18].
    pub user_properties: Vec<(MqttString, MqttString)>,
}

/// Identity of the client that published a message, for No Local.
pub type ClientId = Arc<str>;

/// One application message, shared by every subscriber it is delivered to (`Arc<Message>`).
///
/// All fields are public so that the server can build messages itself (wills, retained
/// messages, `$SYS`). The session never changes a `Message`; per-subscriber differences
/// (QoS, RETAIN flag, subscription identifiers) travel in [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name (never empty: a received topic alias has already been resolved).
    pub topic: MqttString,
    /// Payload (zero-copy slice of the received packet).
    pub payload: Bytes,
    /// QoS the message was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded unchanged.
    pub properties: MessageProperties,
    /// When the message expires (publish time + Message Expiry Interval); `None` = never.
    /// Expired messages are never sent; a forwarded message carries the remaining time
    /// [MQTT-3.3.2-5] [MQTT-3.3.2-6].
    pub expires_at: Option<Instant>,
    /// Client identifier of the publisher, if a client published it. The server uses it
    /// for No Local [MQTT-3.8.3-3] when matching; the session does not look at it.
    pub publisher: Option<ClientId>,
}

impl Message {
    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// The Message Expiry Interval to send at `now`: the remaining lifetime in whole
    /// seconds, rounded up so that an unexpired message never carries 0 [MQTT-3.3.2-6].
    /// `None` when the message never expires.
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX).max(1)
        })
    }
}

/// One message for one subscriber, as the server hands it to [`crate::Connection::deliver`]
/// or [`crate::Session::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS to deliver at: already min(granted QoS, published QoS) [MQTT-3.8.4-8]
    /// (3.1.1: the highest over overlapping subscriptions).
    pub qos: QoS,
    /// RETAIN flag to send: the server applies Retain As Published [MQTT-3.3.1-12]
    /// [MQTT-3.3.1-13] and sets it for retained messages sent because of a subscribe
    /// [MQTT-3.3.1-8].
    pub retain: bool,
    /// Subscription identifiers of every matching subscription [MQTT-3.3.4-3]; ignored for
    /// 3.1.1 connections.
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// The packet identifier a QoS 1/2 PUBLISH of this delivery must use, when the server
    /// fixes it (a durable server derives it from the message's store sequence number, so
    /// that it is the same after a restart [MQTT-4.4.0-1]); `None` = the session picks a
    /// free one. While another outgoing message holds that identifier the delivery waits
    /// in the session's queue (and the messages behind it too: order is kept). Ignored at
    /// QoS 0; 0 counts as `None`.
    pub packet_id: Option<u16>,
}

/// A will message from CONNECT, returned in [`crate::Event::Closed`] when it must be
/// published. The server schedules it: it publishes it after
/// min([`Will::delay_interval`], session expiry) unless the client reconnects to the same
/// session first [MQTT-3.1.3-9].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will topic (validated).
    pub topic: MqttString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS (at most [`crate::SessionConfig::maximum_qos`]).
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties forwarded with the message.
    pub properties: MessageProperties,
    /// Message Expiry Interval of the will message, seconds; counted from publication.
    pub message_expiry_interval: Option<u32>,
    /// Will Delay Interval, seconds (0 for 3.1.1).
    pub delay_interval: u32,
}

impl Will {
    /// The delay before publication as a `Duration`.
    pub fn delay(&self) -> Duration {
        Duration::from_secs(u64::from(self.delay_interval))
    }

    /// Builds the message to publish at `now` (the publication time), attributed to
    /// `publisher`.
    pub fn to_message(&self, now: Instant, publisher: Option<ClientId>) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self
                .message_expiry_interval
                .map(|s| now + Duration::from_secs(u64::from(s))),
            publisher,
        }
    }
}

/// The pairing of the monotonic clock the session uses (`Instant`) with the wall clock
/// (milliseconds since the Unix epoch) at one moment, supplied by the caller (the session
/// reads no clock). It converts expiry times between the two, e.g. to store them across a
/// restart where `Instant`s mean nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// A monotonic instant.
    pub now: Instant,
    /// The wall-clock time at `now`, milliseconds since the Unix epoch.
    pub now_unix_ms: u64,
}

impl WallClock {
    /// Pairs `now` with the wall-clock time `now_unix_ms`.
    pub fn new(now: Instant, now_unix_ms: u64) -> Self {
        WallClock { now, now_unix_ms }
    }

    /// The wall-clock time of `at`, in Unix milliseconds. A time after `now` is rounded up
    /// to the next millisecond (an unexpired message never expires earlier once stored);
    /// one before `now` is rounded down. Saturates at 0 and `u64::MAX`.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        if at >= self.now {
            let d = at - self.now;
            let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
            self.now_unix_ms
                .saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
        } else {
            let d = self.now - at;
            let ms = d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000));
            self.now_unix_ms
                .saturating_sub(u64::try_from(ms).unwrap_or(u64::MAX))
        }
    }

    /// The `Instant` of the wall-clock time `unix_ms`. A time so far in the past that no
    /// `Instant` represents it gives `now` (it is in the past either way, so anything expiring
    /// then is expired); one too far in the future saturates to about 100 years from `now`.
    pub fn instant(&self, unix_ms: u64) -> Instant {
        /// Furthest future instant produced (about 100 years).
        const MAX_AHEAD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        if unix_ms >= self.now_unix_ms {
            let ahead = Duration::from_millis(unix_ms - self.now_unix_ms).min(MAX_AHEAD);
            self.now.checked_add(ahead).unwrap_or(self.now)
        } else {
            let behind = Duration::from_millis(self.now_unix_ms - unix_ms);
            self.now.checked_sub(behind).unwrap_or(self.now)
        }
    }
}

/// A [`Message`] as plain values, for storage: no `Instant`, no `Arc`, no codec types.
/// Build with [`Message::to_parts`], turn back with [`Message::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageParts {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS as published (0, 1 or 2).
    pub qos: u8,
    /// RETAIN flag as published.
    pub retain: bool,
    /// Forwarded properties.
    pub properties: MessageProperties,
    /// Expiry as wall-clock Unix milliseconds; `None` = never.
    pub expires_at_unix_ms: Option<u64>,
    /// Client identifier of the publisher.
    pub publisher: Option<String>,
}

impl Message {
    /// The message as plain values, its expiry converted with `clock`.
    pub fn to_parts(&self, clock: &WallClock) -> MessageParts {
        MessageParts {
            topic: self.topic.as_str().to_owned(),
            payload: self.payload.clone(),
            qos: self.qos.as_u8(),
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at_unix_ms: self.expires_at.map(|at| clock.unix_ms(at)),
            publisher: self.publisher.as_deref().map(str::to_owned),
        }
    }

    /// Rebuilds a message from [`MessageParts`], its expiry converted with `clock` (a
    /// message whose expiry passed is rebuilt as expired; dropping it is the caller's or
    /// the session's business). Fails on a QoS above 2 or an empty topic.
    pub fn from_parts(parts: MessageParts, clock: &WallClock) -> Result<Message, PartsError> {
        if parts.topic.is_empty() {
            return Err(PartsError::EmptyTopic);
        }
        let qos = QoS::from_u8(parts.qos).ok_or(PartsError::InvalidQos(parts.qos))?;
        Ok(Message {
            topic: MqttString::from(parts.topic),
            payload: parts.payload,
            qos,
            retain: parts.retain,
            properties: parts.properties,
            expires_at: parts.expires_at_unix_ms.map(|ms| clock.instant(ms)),
            publisher: parts.publisher.map(ClientId::from),
        })
    }
}
