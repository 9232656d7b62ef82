//! MQTT 5.0 reason codes and their MQTT 3.1.1 equivalents.

use std::fmt;

use crate::types::PacketType;

/// An MQTT 5.0 reason code (section 2.4). A plain `u8` so that unknown values can be carried;
/// the decoder only accepts the codes the specification allows for each packet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($($(#[$m:meta])* $name:ident = $v:literal,)*) => {
        impl ReasonCode {
            $($(#[$m])* pub const $name: ReasonCode = ReasonCode($v);)*

            /// The specification's name for this code (the first one when a value has
            /// several names), or `None` for a value the specification does not define.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($v => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00 Success (also Normal disconnection, Granted QoS 0).
    SUCCESS = 0x00,
    /// 0x01 Granted QoS 1.
    GRANTED_QOS_1 = 0x01,
    /// 0x02 Granted QoS 2.
    GRANTED_QOS_2 = 0x02,
    /// 0x04 Disconnect with Will Message.
    DISCONNECT_WITH_WILL_MESSAGE = 0x04,
    /// 0x10 No matching subscribers.
    NO_MATCHING_SUBSCRIBERS = 0x10,
    /// 0x11 No subscription existed.
    NO_SUBSCRIPTION_EXISTED = 0x11,
    /// 0x18 Continue authentication.
    CONTINUE_AUTHENTICATION = 0x18,
    /// 0x19 Re-authenticate.
    RE_AUTHENTICATE = 0x19,
    /// 0x80 Unspecified error.
    UNSPECIFIED_ERROR = 0x80,
    /// 0x81 Malformed Packet.
    MALFORMED_PACKET = 0x81,
    /// 0x82 Protocol Error.
    PROTOCOL_ERROR = 0x82,
    /// 0x83 Implementation specific error.
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83,
    /// 0x84 Unsupported Protocol Version.
    UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    /// 0x85 Client Identifier not valid.
    CLIENT_IDENTIFIER_NOT_VALID = 0x85,
    /// 0x86 Bad User Name or Password.
    BAD_USER_NAME_OR_PASSWORD = 0x86,
    /// 0x87 Not authorized.
    NOT_AUTHORIZED = 0x87,
    /// 0x88 Server unavailable.
    SERVER_UNAVAILABLE = 0x88,
    /// 0x89 Server busy.
    SERVER_BUSY = 0x89,
    /// 0x8A Banned.
    BANNED = 0x8A,
    /// 0x8B Server shutting down.
    SERVER_SHUTTING_DOWN = 0x8B,
    /// 0x8C Bad authentication method.
    BAD_AUTHENTICATION_METHOD = 0x8C,
    /// 0x8D Keep Alive timeout.
    KEEP_ALIVE_TIMEOUT = 0x8D,
    /// 0x8E Session taken over.
    SESSION_TAKEN_OVER = 0x8E,
    /// 0x8F Topic Filter invalid.
    TOPIC_FILTER_INVALID = 0x8F,
    /// 0x90 Topic Name invalid.
    TOPIC_NAME_INVALID = 0x90,
    /// 0x91 Packet Identifier in use.
    PACKET_IDENTIFIER_IN_USE = 0x91,
    /// 0x92 Packet Identifier not found.
    PACKET_IDENTIFIER_NOT_FOUND = 0x92,
    /// 0x93 Receive Maximum exceeded.
    RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    /// 0x94 Topic Alias invalid.
    TOPIC_ALIAS_INVALID = 0x94,
    /// 0x95 Packet too large.
    PACKET_TOO_LARGE = 0x95,
    /// 0x96 Message rate too high.
    MESSAGE_RATE_TOO_HIGH = 0x96,
    /// 0x97 Quota exceeded.
    QUOTA_EXCEEDED = 0x97,
    /// 0x98 Administrative action.
    ADMINISTRATIVE_ACTION = 0x98,
    /// 0x99 Payload format invalid.
    PAYLOAD_FORMAT_INVALID = 0x99,
    /// 0x9A Retain not supported.
    RETAIN_NOT_SUPPORTED = 0x9A,
    /// 0x9B QoS not supported.
    QOS_NOT_SUPPORTED = 0x9B,
    /// 0x9C Use another server.
    USE_ANOTHER_SERVER = 0x9C,
    /// 0x9D Server moved.
    SERVER_MOVED = 0x9D,
    /// 0x9E Shared Subscriptions not supported.
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E,
    /// 0x9F Connection rate exceeded.
    CONNECTION_RATE_EXCEEDED = 0x9F,
    /// 0xA0 Maximum connect time.
    MAXIMUM_CONNECT_TIME = 0xA0,
    /// 0xA1 Subscription Identifiers not supported.
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1,
    /// 0xA2 Wildcard Subscriptions not supported.
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2,
}

impl ReasonCode {
    /// 0x00 Normal disconnection (DISCONNECT).
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    /// 0x00 Granted QoS 0 (SUBACK).
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);

    /// True for codes below 0x80 (success or a non-error outcome).
    pub const fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// The granted-QoS reason code for a SUBACK.
    pub const fn granted(qos: crate::QoS) -> ReasonCode {
        ReasonCode(qos.as_u8())
    }

    /// The MQTT 3.1.1 CONNACK return code for this reason code, or `None` when 3.1.1 has no
    /// equivalent (then a 3.1.1 server closes the connection without a CONNACK).
    ///
    /// 0x00 -> 0 accepted; 0x84 -> 1 unacceptable protocol version; 0x85 -> 2 identifier
    /// rejected; server-side refusals (0x80, 0x83, 0x88, 0x89, 0x97, 0x9C, 0x9D, 0x9F) -> 3
    /// server unavailable; 0x86 -> 4 bad user name or password; 0x87, 0x8A, 0x8C -> 5 not
    /// authorized.
    pub const fn v311_connack_return_code(self) -> Option<u8> {
        match self.0 {
            0x00 => Some(0),
            0x84 => Some(1),
            0x85 => Some(2),
            0x80 | 0x83 | 0x88 | 0x89 | 0x97 | 0x9C | 0x9D | 0x9F => Some(3),
            0x86 => Some(4),
            0x87 | 0x8A | 0x8C => Some(5),
            _ => None,
        }
    }

    /// The reason code a 3.1.1 CONNACK return code (0..=5) stands for.
    pub const fn from_v311_connack_return_code(code: u8) -> Option<ReasonCode> {
        match code {
            0 => Some(ReasonCode::SUCCESS),
            1 => Some(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            2 => Some(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            3 => Some(ReasonCode::SERVER_UNAVAILABLE),
            4 => Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
            5 => Some(ReasonCode::NOT_AUTHORIZED),
            _ => None,
        }
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS (0, 1, 2) or 0x80 for any failure.
    pub const fn v311_suback_return_code(self) -> u8 {
        if self.0 <= 2 { self.0 } else { 0x80 }
    }

    /// Whether MQTT 5.0 allows this reason code in a packet of the given type.
    pub fn allowed_in(self, packet: PacketType) -> bool {
        let allowed: &[u8] = match packet {
            PacketType::ConnAck => &[
                0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
                0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
            ],
            PacketType::PubAck | PacketType::PubRec => {
                &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
            }
            PacketType::PubRel | PacketType::PubComp => &[0x00, 0x92],
            PacketType::SubAck => &[
                0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
            ],
            PacketType::UnsubAck => &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
            PacketType::Disconnect => &[
                0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
                0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
                0xA2,
            ],
            PacketType::Auth => &[0x00, 0x18, 0x19],
            _ => &[],
        };
        allowed.contains(&self.0)
    }
}

impl From<u8> for ReasonCode {
    fn from(v: u8) -> Self {
        ReasonCode(v)
    }
}

impl From<ReasonCode> for u8 {
    fn from(v: ReasonCode) -> Self {
        v.0
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ReasonCode({:#04x} {name})", self.0),
            None => write!(f, "ReasonCode({:#04x})", self.0),
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
