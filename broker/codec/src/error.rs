//! Decode and encode errors. Every decode error names the MQTT 5.0 reason code a server sends
//! for it and the specification statement (or section) it breaks.

use crate::reason::ReasonCode;
use crate::types::PacketType;

/// Why a received byte stream is not a valid MQTT packet. After any error the stream is
/// unusable: the connection must be closed (5.0: after a DISCONNECT with [`Self::reason_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The whole packet (fixed header + remaining length) is larger than the maximum packet
    /// size; detected from the fixed header alone, before the body is buffered.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total packet size announced by the fixed header.
        size: u64,
        /// The limit in force.
        max: u32,
    },
    /// A Variable Byte Integer used more than four bytes.
    #[error("variable byte integer longer than 4 bytes")]
    VariableByteIntegerTooLong,
    /// Packet type 0 (reserved), or 15 (AUTH) on a 3.1.1 connection.
    #[error("reserved or unsupported packet type {0}")]
    ReservedPacketType(u8),
    /// Fixed-header flags differ from the ones the packet type requires.
    #[error("invalid fixed header flags {flags:#06b} for {packet:?}")]
    InvalidHeaderFlags {
        /// The packet type.
        packet: PacketType,
        /// The flags received.
        flags: u8,
    },
    /// A PUBLISH or SUBSCRIBE QoS of 3.
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH.
    #[error("DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier of 0 where one is required.
    #[error("packet identifier 0 in {0:?}")]
    ZeroPacketId(PacketType),
    /// A UTF-8 string field is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A UTF-8 string field contains U+0000.
    #[error("string contains U+0000")]
    NullCharacter,
    /// The content runs past the remaining length (missing bytes).
    #[error("packet content runs past its remaining length")]
    UnexpectedEnd,
    /// Bytes left over after the content (trailing bytes inside the remaining length).
    #[error("{0} bytes left after the end of the packet content")]
    TrailingBytes(usize),
    /// CONNECT protocol name is neither "MQTT" nor "MQIsdp".
    #[error("CONNECT protocol name is not \"MQTT\"")]
    InvalidProtocolName,
    /// CONNECT protocol level other than 4 (3.1.1) or 5 (5.0), e.g. 3 ("MQIsdp").
    /// A server answers with 5.0 reason 0x84 / 3.1.1 return code 0x01.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT reserved flag (bit 0) set.
    #[error("CONNECT reserved flag is set")]
    ConnectReservedFlag,
    /// Will QoS non-zero while the Will Flag is 0.
    #[error("Will QoS set without the Will Flag")]
    WillQoSWithoutWill,
    /// Will QoS 3.
    #[error("Will QoS 3")]
    WillQoS3,
    /// Will Retain set while the Will Flag is 0.
    #[error("Will Retain set without the Will Flag")]
    WillRetainWithoutWill,
    /// MQTT 3.1.1: Password Flag set while the User Name Flag is 0.
    #[error("password flag set without user name flag")]
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags with reserved bits set.
    #[error("CONNACK reserved flags set: {0:#04x}")]
    InvalidConnAckFlags(u8),
    /// SUBSCRIBE options with reserved bits set.
    #[error("subscription options with reserved bits set: {0:#04x}")]
    InvalidSubscriptionOptions(u8),
    /// SUBSCRIBE Retain Handling 3.
    #[error("retain handling 3")]
    InvalidRetainHandling,
    /// SUBSCRIBE without any topic filter.
    #[error("SUBSCRIBE without topic filters")]
    EmptySubscribe,
    /// UNSUBSCRIBE without any topic filter.
    #[error("UNSUBSCRIBE without topic filters")]
    EmptyUnsubscribe,
    /// A property that may appear once appeared twice.
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u32),
    /// A property identifier unknown or not allowed in this packet.
    #[error("property {id:#04x} not allowed in {packet:?}")]
    PropertyNotAllowed {
        /// Property identifier.
        id: u32,
        /// The packet (or will properties: `Connect`).
        packet: PacketType,
    },
    /// A property value the specification forbids (e.g. Receive Maximum 0, Topic Alias 0,
    /// Subscription Identifier 0, a boolean byte other than 0/1, Maximum QoS 2).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u32),
    /// A reason code (or 3.1.1 return code) not allowed in this packet.
    #[error("reason code {code:#04x} not allowed in {packet:?}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
}

impl DecodeError {
    /// The MQTT 5.0 reason code a server sends in DISCONNECT (or CONNACK) for this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            InvalidProtocolName | UnsupportedProtocolVersion(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            ZeroPacketId(_)
            | InvalidRetainHandling
            | EmptySubscribe
            | EmptyUnsubscribe
            | DuplicateProperty(_)
            | InvalidPropertyValue(_) => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The specification statement this error breaks, e.g. `"MQTT-3.1.2-3"`; where the
    /// specification has no numbered statement, the MQTT 5.0 section, e.g. `"MQTT-5.0-2.2.2.2"`.
    pub fn spec(&self) -> &'static str {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => "MQTT-5.0-3.2.2.3.6",
            VariableByteIntegerTooLong => "MQTT-5.0-1.5.5",
            ReservedPacketType(_) => "MQTT-5.0-2.1.2",
            InvalidHeaderFlags { .. } => "MQTT-2.1.3-1",
            InvalidQoS => "MQTT-3.3.1-4",
            DupOnQoS0 => "MQTT-3.3.1-2",
            ZeroPacketId(_) => "MQTT-2.2.1-3",
            InvalidUtf8 => "MQTT-1.5.4-1",
            NullCharacter => "MQTT-1.5.4-2",
            UnexpectedEnd | TrailingBytes(_) => "MQTT-5.0-2.1.4",
            InvalidProtocolName => "MQTT-3.1.2-1",
            UnsupportedProtocolVersion(_) => "MQTT-3.1.2-2",
            ConnectReservedFlag => "MQTT-3.1.2-3",
            WillQoSWithoutWill => "MQTT-3.1.2-11",
            WillQoS3 => "MQTT-3.1.2-12",
            WillRetainWithoutWill => "MQTT-3.1.2-13",
            PasswordWithoutUsername => "MQTT-3.1.2-22",
            InvalidConnAckFlags(_) => "MQTT-3.2.2-1",
            InvalidSubscriptionOptions(_) => "MQTT-3-8.3-5",
            InvalidRetainHandling => "MQTT-5.0-3.8.3.1",
            EmptySubscribe => "MQTT-3.8.3-3",
            EmptyUnsubscribe => "MQTT-3.10.3-2",
            DuplicateProperty(_) | PropertyNotAllowed { .. } | InvalidPropertyValue(_) => {
                "MQTT-5.0-2.2.2.2"
            }
            InvalidReasonCode { .. } => "MQTT-5.0-2.4",
        }
    }
}

/// Why a packet cannot be encoded. The output buffer is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string longer than 65,535 bytes.
    #[error("string of {0} bytes is longer than 65535")]
    StringTooLong(usize),
    /// A string containing U+0000 [MQTT-1.5.4-2].
    #[error("string contains U+0000")]
    NullCharacter,
    /// Binary data longer than 65,535 bytes.
    #[error("binary data of {0} bytes is longer than 65535")]
    BinaryTooLong(usize),
    /// The remaining length exceeds 268,435,455 bytes.
    #[error("remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// A packet identifier of 0 where one is required.
    #[error("packet identifier 0 in {0:?}")]
    ZeroPacketId(PacketType),
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters.
    #[error("{0:?} without topic filters")]
    EmptyPayload(PacketType),
    /// The packet does not exist in this protocol version (AUTH in 3.1.1).
    #[error("{0:?} does not exist in MQTT 3.1.1")]
    NotInVersion(PacketType),
    /// A 3.1.1 CONNACK with a reason code that has no 3.1.1 return code.
    #[error("{0} has no MQTT 3.1.1 CONNACK return code")]
    NoV311ConnAckCode(ReasonCode),
    /// A 3.1.1 CONNECT with a password but no user name [MQTT-3.1.2-22].
    #[error("MQTT 3.1.1 password without user name")]
    PasswordWithoutUsername,
    /// A reason code that MQTT 5.0 does not allow in this packet.
    #[error("{code} not allowed in {packet:?}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code.
        code: ReasonCode,
    },
    /// A property value the specification forbids (see [`DecodeError::InvalidPropertyValue`]).
    #[error("invalid value for property {0:#04x}")]
    InvalidPropertyValue(u32),
}
