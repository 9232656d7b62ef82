//! What a [`crate::Connection`] asks of the server: [`Event`] and its payloads.

use std::sync::Arc;

use bytes::Bytes;
use halyard_codec::{MqttString, ProtocolVersion, ReasonCode, SubscriptionOptions};
use halyard_topics::CheckedFilter;

use crate::error::CloseReason;
use crate::message::{ClientId, Message, Will};

/// A validated CONNECT, carried by [`Event::Connect`]. The server authenticates, resolves
/// takeover and answers with [`crate::Connection::accept_connect`] or
/// [`crate::Connection::reject_connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Protocol version of the connection.
    pub protocol_version: ProtocolVersion,
    /// Client identifier: as sent, or assigned by the session when a 5.0 client sent an
    /// empty one ([`Self::client_id_assigned`]).
    pub client_id: ClientId,
    /// The session generated [`Self::client_id`] (5.0, empty identifier); the CONNACK will
    /// carry it as Assigned Client Identifier [MQTT-3.2.2-16].
    pub client_id_assigned: bool,
    /// Clean Start (3.1.1: Clean Session). When true the server must discard any existing
    /// session and pass `None` to `accept_connect` [MQTT-3.1.2-4].
    pub clean_start: bool,
    /// Session Expiry Interval in seconds: 5.0 property (absent = 0); 3.1.1 Clean Session 1
    /// = 0, Clean Session 0 = [`crate::SESSION_NEVER_EXPIRES`].
    pub session_expiry_interval: u32,
    /// User Name.
    pub username: Option<MqttString>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message (validated: topic, QoS <= Maximum QoS, retain allowed). The session keeps
    /// its own copy and returns it in [`Event::Closed`] when it must be published.
    pub will: Option<Will>,
    /// Keep alive in force (seconds, 0 = none): the client's value, or Server Keep Alive when
    /// the session overrode it.
    pub keep_alive: u16,
    /// The client's Receive Maximum (absent = 65,535).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size (absent = none).
    pub maximum_packet_size: Option<u32>,
    /// The client's Topic Alias Maximum (absent = 0).
    pub topic_alias_maximum: u16,
    /// Request Problem Information (absent = true).
    pub request_problem_information: bool,
    /// Request Response Information (absent = false). Halyard sends no Response
    /// Information.
    pub request_response_information: bool,
    /// CONNECT User Properties (5.0).
    pub user_properties: Vec<(MqttString, MqttString)>,
}

/// One topic filter of a SUBSCRIBE, as the session validated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRequest {
    /// The topic filter exactly as sent (with any `$share/{group}/` prefix); the key of the
    /// subscription in [`crate::Session::subscriptions`].
    pub filter: MqttString,
    /// For a shared subscription `$share/{group}/{f}`: the group name.
    pub share_group: Option<MqttString>,
    /// Options, with `qos` capped at [`crate::SessionConfig::maximum_qos`]. 3.1.1: only `qos`
    /// is meaningful.
    pub options: SubscriptionOptions,
    /// Subscription Identifier of the SUBSCRIBE (5.0, §3.8.2.1.2).
    pub subscription_id: Option<u32>,
    /// No subscription with this filter existed in the session (Retain Handling 1 sends
    /// retained messages only then [MQTT-3.3.1-10]).
    pub is_new: bool,
    /// `Ok(topic_filter)`: valid, the server decides the granted QoS; `topic_filter` is the
    /// filter to match topics against (`f` for a shared subscription, else `filter`),
    /// checked with [`crate::SessionConfig::topic_limits`] (so the trie need not check
    /// the MQTT rules again: `TrieBatch::insert_checked`). `Err(code)`: refused by the
    /// session (0x8F invalid filter, 0xA2 wildcards or 0x9E shared subscriptions not
    /// available, 0x97 subscription limit); the server must not subscribe it and the session
    /// puts this code in the SUBACK whatever the server answers.
    pub status: Result<CheckedFilter<MqttString>, ReasonCode>,
}

/// Something the server must act on. Poll with [`crate::Connection::poll_event`] after every
/// call into the connection, until `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A valid CONNECT arrived. Answer with `accept_connect` or `reject_connect`; the
    /// session processes no further packet from the client until then [MQTT-3.1.4-5]
    /// (bytes received meanwhile are buffered).
    Connect(Box<ConnectRequest>),
    /// A PUBLISH was received and validated (topic, alias, QoS, receive maximum, QoS 2
    /// duplicates filtered). Route it; for `packet_id: Some(_)` (QoS 1/2) call
    /// `complete_publish` exactly once (it sends PUBACK/PUBREC).
    Publish {
        /// Packet identifier for QoS 1/2; `None` for QoS 0.
        packet_id: Option<u16>,
        /// The message (topic resolved from any alias, expiry computed, publisher set).
        message: Arc<Message>,
    },
    /// A SUBSCRIBE: subscribe every request whose `status` is `Ok`, send retained messages
    /// per Retain Handling, then call `complete_subscribe` with `requests` handed back.
    Subscribe {
        /// Packet identifier of the SUBSCRIBE.
        packet_id: u16,
        /// One entry per topic filter, in packet order.
        requests: Vec<SubscribeRequest>,
    },
    /// An UNSUBSCRIBE: remove the filters, then call `complete_unsubscribe`.
    Unsubscribe {
        /// Packet identifier of the UNSUBSCRIBE.
        packet_id: u16,
        /// Topic filters as sent (not validated: an unknown filter is answered 0x11).
        filters: Vec<MqttString>,
    },
    /// The connection is closed; emitted exactly once. Publish `will` (if any) after its
    /// delay (see [`Will`]); flush [`crate::Connection::poll_transmit`], close the socket, and
    /// take the session back with [`crate::Connection::into_session`].
    Closed {
        /// The will to publish, if the close requires it (boxed: inline it made every
        /// event, a PUBLISH's too, several times larger, and a busy connection's event
        /// queue is grown and copied for every read).
        will: Option<Box<Will>>,
        /// Why the connection closed.
        reason: CloseReason,
    },
}
