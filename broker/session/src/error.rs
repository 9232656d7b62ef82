//! Why a connection was closed: [`ProtocolError`] (the client broke the protocol) and
//! [`CloseReason`].

use halyard_codec::{DecodeError, PacketType, QoS, ReasonCode};
use halyard_topics::TopicError;

/// A protocol violation by the client. Each closes the connection; on a 5.0 connection that
/// has been accepted the session first sends DISCONNECT with [`ProtocolError::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not a valid packet (the codec's reason code: 0x81 malformed, 0x82
    /// protocol error, 0x95 packet too large, ...).
    #[error("decode error: {0}")]
    Decode(#[from] DecodeError),
    /// The first packet is not CONNECT [MQTT-3.1.0-1]. Closed without any packet.
    #[error("first packet is not CONNECT")]
    FirstPacketNotConnect,
    /// A second CONNECT on the same connection [MQTT-3.1.0-2].
    #[error("second CONNECT on one connection")]
    SecondConnect,
    /// A packet only a server may send (CONNACK, SUBACK, UNSUBACK, PINGRESP).
    #[error("client sent a server-only packet {0:?}")]
    ServerOnlyPacket(PacketType),
    /// A PUBLISH topic name is invalid (wildcards, empty without alias, too long...)
    /// [MQTT-3.3.2-2] [MQTT-4.7.3-1].
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(TopicError),
    /// A PUBLISH Topic Alias above our Topic Alias Maximum (or 0) [MQTT-3.3.2-10].
    #[error("topic alias {0} out of range")]
    TopicAliasInvalid(u16),
    /// A PUBLISH with an empty topic and a Topic Alias with no mapping, or an empty topic
    /// without a Topic Alias (MQTT 5.0 §3.3.2.3.4).
    #[error("topic alias {0:?} has no mapping")]
    TopicAliasUnknown(Option<u16>),
    /// The client has more unacknowledged QoS 1/2 PUBLISH packets than our Receive Maximum
    /// [MQTT-3.3.4-7].
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// PUBLISH QoS above our Maximum QoS [MQTT-3.2.2-11].
    #[error("QoS {0:?} not supported")]
    QosNotSupported(QoS),
    /// PUBLISH with RETAIN=1 while Retain Available is false [MQTT-3.2.2-14].
    #[error("retain not supported")]
    RetainNotSupported,
    /// A PUBLISH from the client carries a Subscription Identifier [MQTT-3.3.4-6].
    #[error("subscription identifier in a client PUBLISH")]
    SubscriptionIdInPublish,
    /// SUBSCRIBE with a Subscription Identifier while they are not supported (0xA1).
    #[error("subscription identifiers not supported")]
    SubscriptionIdsNotSupported,
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// AUTH without an authentication method in CONNECT (MQTT 5.0 §4.12).
    #[error("AUTH packet without authentication method")]
    UnexpectedAuth,
    /// DISCONNECT sets a non-zero Session Expiry Interval when CONNECT had 0
    /// [MQTT-3.14.2-2].
    #[error("session expiry interval changed from 0")]
    SessionExpiryFromZero,
    /// A SUBSCRIBE/UNSUBSCRIBE reuses the packet identifier of one still pending
    /// [MQTT-2.2.1-3].
    #[error("packet identifier {0} in use")]
    PacketIdInUse(u16),
    /// More than [`crate::SessionConfig::max_packet_size`] bytes arrived while the CONNECT
    /// awaited the server's answer. Closed without a packet.
    #[error("too much input before CONNACK")]
    InputBeforeConnack,
    /// Too many SUBSCRIBE/UNSUBSCRIBE awaiting the server's answer
    /// ([`crate::SessionConfig::max_pending_requests`]).
    #[error("too many pending subscribe/unsubscribe requests")]
    TooManyPendingRequests,
}

impl ProtocolError {
    /// The MQTT 5.0 reason code for the DISCONNECT.
    pub fn reason_code(&self) -> ReasonCode {
        use ProtocolError::*;
        match self {
            Decode(e) => e.reason_code(),
            TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            TopicAliasInvalid(_) => ReasonCode::TOPIC_ALIAS_INVALID,
            ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            QosNotSupported(_) => ReasonCode::QOS_NOT_SUPPORTED,
            RetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
            SubscriptionIdsNotSupported => ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            TooManyPendingRequests | InputBeforeConnack => ReasonCode::QUOTA_EXCEEDED,
            FirstPacketNotConnect
            | SecondConnect
            | ServerOnlyPacket(_)
            | TopicAliasUnknown(_)
            | SubscriptionIdInPublish
            | NoLocalOnSharedSubscription
            | UnexpectedAuth
            | SessionExpiryFromZero
            | PacketIdInUse(_) => ReasonCode::PROTOCOL_ERROR,
        }
    }

    /// The specification statement (or MQTT 5.0 section) the client broke.
    pub fn spec(&self) -> &'static str {
        use ProtocolError::*;
        match self {
            Decode(e) => e.spec(),
            FirstPacketNotConnect => "MQTT-3.1.0-1",
            SecondConnect => "MQTT-3.1.0-2",
            ServerOnlyPacket(_) => "MQTT-5.0-2.1.2",
            TopicNameInvalid(e) => e.spec().unwrap_or("MQTT-3.3.2-1"),
            TopicAliasInvalid(_) => "MQTT-3.3.2-10",
            TopicAliasUnknown(_) => "MQTT-5.0-3.3.2.3.4",
            ReceiveMaximumExceeded => "MQTT-3.3.4-7",
            QosNotSupported(_) => "MQTT-3.2.2-11",
            RetainNotSupported => "MQTT-3.2.2-14",
            SubscriptionIdInPublish => "MQTT-3.3.4-6",
            SubscriptionIdsNotSupported => "MQTT-5.0-3.2.2.3.13",
            NoLocalOnSharedSubscription => "MQTT-3.8.3-4",
            UnexpectedAuth => "MQTT-5.0-4.12",
            SessionExpiryFromZero => "MQTT-3.14.2-2",
            PacketIdInUse(_) => "MQTT-2.2.1-3",
            TooManyPendingRequests | InputBeforeConnack => "MQTT-5.0-4.13",
        }
    }
}

/// Why a connection closed, carried by [`crate::Event::Closed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT with this reason code (3.1.1: always 0x00). The will is
    /// returned for any code other than 0x00 (e.g. 0x04 Disconnect with Will Message)
    /// [MQTT-3.14.4-3].
    ClientDisconnect(ReasonCode),
    /// The client broke the protocol; 5.0 connections were sent DISCONNECT with
    /// [`ProtocolError::reason_code`] (if the CONNECT had been accepted).
    Protocol(ProtocolError),
    /// No packet within 1.5 x keep alive [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22]); 5.0
    /// connections were sent DISCONNECT 0x8D.
    KeepAliveTimeout,
    /// No CONNECT within [`crate::SessionConfig::connect_timeout`].
    ConnectTimeout,
    /// A packet stayed incomplete for [`crate::SessionConfig::partial_packet_timeout`]
    /// (slowloris); 5.0 connections were sent DISCONNECT 0x97 (quota exceeded). Not a
    /// protocol violation: the bytes so far were valid, they just stopped coming.
    PartialPacketTimeout,
    /// The CONNECT was refused with this CONNACK reason code (by the session itself, e.g.
    /// 0x85 / 0x8C / 3.1.1 0x02, or by [`crate::Connection::reject_connect`]).
    ConnectRefused(ReasonCode),
    /// The server closed the connection with [`crate::Connection::disconnect`] (e.g. 0x8E
    /// session taken over, 0x8B server shutting down).
    ServerDisconnect(ReasonCode),
    /// The network connection went away ([`crate::Connection::socket_closed`]).
    SocketClosed,
}

/// Why [`crate::Session::from_parts`] or [`crate::Message::from_parts`] refused its input
/// (state read back from storage that this crate would never have produced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsError {
    /// A QoS value other than 0, 1 or 2.
    #[error("invalid QoS value {0}")]
    InvalidQos(u8),
    /// An empty topic name.
    #[error("empty topic name")]
    EmptyTopic,
    /// Packet identifier 0, which MQTT never uses [MQTT-2.2.1-3].
    #[error("packet identifier 0")]
    ZeroPacketId,
    /// The same packet identifier twice among the outgoing in-flight messages or among the
    /// incoming QoS 2 identifiers.
    #[error("packet identifier {0} appears twice")]
    DuplicatePacketId(u16),
    /// An outgoing in-flight stage that does not fit the delivery QoS (PUBACK awaited for a
    /// QoS 2 message, PUBREC or PUBCOMP for QoS 1, or any stage for QoS 0).
    #[error("outgoing packet {0}: stage does not match the delivery QoS")]
    StageMismatch(u16),
    /// The same topic filter twice among the subscriptions.
    #[error("topic filter {0:?} appears twice")]
    DuplicateFilter(String),
}
