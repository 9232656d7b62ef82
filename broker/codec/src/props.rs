//! MQTT 5.0 properties: one struct per packet kind holding exactly the properties the
//! specification allows there (section 2.2.2.2). MQTT 3.1.1 packets carry none: for 3.1.1 the
//! decoder yields the defaults and the encoder ignores these structs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::types::{MqttString, PacketType, QoS};
use crate::wire::{self, MAX_VARIABLE_BYTE_INTEGER, Reader};

/// Property identifiers (MQTT 5.0 section 2.2.2.2).
pub mod id {
    /// Payload Format Indicator (byte).
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    /// Message Expiry Interval (four-byte integer).
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    /// Content Type (string).
    pub const CONTENT_TYPE: u8 = 0x03;
    /// Response Topic (string).
    pub const RESPONSE_TOPIC: u8 = 0x08;
    /// Correlation Data (binary).
    pub const CORRELATION_DATA: u8 = 0x09;
    /// Subscription Identifier (variable byte integer).
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    /// Session Expiry Interval (four-byte integer).
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    /// Assigned Client Identifier (string).
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    /// Server Keep Alive (two-byte integer).
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    /// Authentication Method (string).
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    /// Authentication Data (binary).
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    /// Request Problem Information (byte).
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    /// Will Delay Interval (four-byte integer).
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    /// Request Response Information (byte).
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    /// Response Information (string).
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    /// Server Reference (string).
    pub const SERVER_REFERENCE: u8 = 0x1C;
    /// Reason String (string).
    pub const REASON_STRING: u8 = 0x1F;
    /// Receive Maximum (two-byte integer, non-zero).
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    /// Topic Alias Maximum (two-byte integer).
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    /// Topic Alias (two-byte integer, non-zero).
    pub const TOPIC_ALIAS: u8 = 0x23;
    /// Maximum QoS (byte, 0 or 1).
    pub const MAXIMUM_QOS: u8 = 0x24;
    /// Retain Available (byte).
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    /// User Property (string pair).
    pub const USER_PROPERTY: u8 = 0x26;
    /// Maximum Packet Size (four-byte integer, non-zero).
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    /// Wildcard Subscription Available (byte).
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    /// Subscription Identifier Available (byte).
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    /// Shared Subscription Available (byte).
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// User properties: name/value pairs in wire order; names may repeat.
pub type UserProperties = Vec<(MqttString, MqttString)>;

/// How each property value type is decoded, measured and written.
mod kind {
    use super::*;

    fn dup<T>(slot: &Option<T>, id: u8) -> Result<(), DecodeError> {
        match slot {
            Some(_) => Err(DecodeError::DuplicateProperty(u32::from(id))),
            None => Ok(()),
        }
    }

    /// A byte that must be 0 or 1.
    pub(super) mod flag {
        use super::*;
        pub(crate) fn decode(
            s: &mut Option<bool>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            *s = Some(match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::InvalidPropertyValue(u32::from(id))),
            });
            Ok(())
        }
        pub(crate) fn len(s: &Option<bool>) -> usize {
            if s.is_some() { 2 } else { 0 }
        }
        pub(crate) fn write(
            s: &Option<bool>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                out.put_u8(id);
                out.put_u8(u8::from(*v));
            }
            Ok(())
        }
    }

    /// Maximum QoS: a byte 0 or 1.
    pub(super) mod max_qos {
        use super::*;
        pub(crate) fn decode(
            s: &mut Option<QoS>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            *s = Some(match r.u8()? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => return Err(DecodeError::InvalidPropertyValue(u32::from(id))),
            });
            Ok(())
        }
        pub(crate) fn len(s: &Option<QoS>) -> usize {
            if s.is_some() { 2 } else { 0 }
        }
        pub(crate) fn write(
            s: &Option<QoS>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(q) = s {
                if *q == QoS::ExactlyOnce {
                    return Err(EncodeError::InvalidPropertyValue(u32::from(id)));
                }
                out.put_u8(id);
                out.put_u8(q.as_u8());
            }
            Ok(())
        }
    }

    /// Two-byte integer; `NONZERO` rejects 0 (Receive Maximum, Topic Alias).
    pub(super) mod int16 {
        use super::*;
        pub(crate) fn decode<const NONZERO: bool>(
            s: &mut Option<u16>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            let v = r.u16()?;
            if NONZERO && v == 0 {
                return Err(DecodeError::InvalidPropertyValue(u32::from(id)));
            }
            *s = Some(v);
            Ok(())
        }
        pub(crate) fn len(s: &Option<u16>) -> usize {
            if s.is_some() { 3 } else { 0 }
        }
        pub(crate) fn write<const NONZERO: bool>(
            s: &Option<u16>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                if NONZERO && *v == 0 {
                    return Err(EncodeError::InvalidPropertyValue(u32::from(id)));
                }
                out.put_u8(id);
                out.put_u16(*v);
            }
            Ok(())
        }
    }

    /// Four-byte integer; `NONZERO` rejects 0 (Maximum Packet Size).
    pub(super) mod int32 {
        use super::*;
        pub(crate) fn decode<const NONZERO: bool>(
            s: &mut Option<u32>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            let v = r.u32()?;
            if NONZERO && v == 0 {
                return Err(DecodeError::InvalidPropertyValue(u32::from(id)));
            }
            *s = Some(v);
            Ok(())
        }
        pub(crate) fn len(s: &Option<u32>) -> usize {
            if s.is_some() { 5 } else { 0 }
        }
        pub(crate) fn write<const NONZERO: bool>(
            s: &Option<u32>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                if NONZERO && *v == 0 {
                    return Err(EncodeError::InvalidPropertyValue(u32::from(id)));
                }
                out.put_u8(id);
                out.put_u32(*v);
            }
            Ok(())
        }
    }

    fn check_sub_id(v: u32, id: u8) -> Result<(), EncodeError> {
        if v == 0 || v > MAX_VARIABLE_BYTE_INTEGER {
            return Err(EncodeError::InvalidPropertyValue(u32::from(id)));
        }
        Ok(())
    }

    fn read_sub_id(r: &mut Reader, id: u8) -> Result<u32, DecodeError> {
        let v = r.vbi()?;
        if v == 0 {
            return Err(DecodeError::InvalidPropertyValue(u32::from(id)));
        }
        Ok(v)
    }

    /// One Subscription Identifier (SUBSCRIBE): 1..=268,435,455.
    pub(super) mod sub_id {
        use super::*;
        pub(crate) fn decode(
            s: &mut Option<u32>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            *s = Some(read_sub_id(r, id)?);
            Ok(())
        }
        pub(crate) fn len(s: &Option<u32>) -> usize {
            s.map_or(0, |v| 1 + wire::vbi_len(v as usize))
        }
        pub(crate) fn write(
            s: &Option<u32>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                check_sub_id(*v, id)?;
                out.put_u8(id);
                wire::write_vbi(*v as usize, out);
            }
            Ok(())
        }
    }

    /// Any number of Subscription Identifiers (PUBLISH), in wire order.
    pub(super) mod sub_ids {
        use super::*;
        pub(crate) fn decode(s: &mut Vec<u32>, r: &mut Reader, id: u8) -> Result<(), DecodeError> {
            s.push(read_sub_id(r, id)?);
            Ok(())
        }
        pub(crate) fn len(s: &[u32]) -> usize {
            s.iter().map(|v| 1 + wire::vbi_len(*v as usize)).sum()
        }
        pub(crate) fn write(s: &[u32], id: u8, out: &mut BytesMut) -> Result<(), EncodeError> {
            for v in s {
                check_sub_id(*v, id)?;
                out.put_u8(id);
                wire::write_vbi(*v as usize, out);
            }
            Ok(())
        }
    }

    /// UTF-8 string.
    pub(super) mod string {
        use super::*;
        pub(crate) fn decode(
            s: &mut Option<MqttString>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            *s = Some(r.string()?);
            Ok(())
        }
        pub(crate) fn len(s: &Option<MqttString>) -> usize {
            s.as_ref().map_or(0, |v| 1 + wire::string_len(v))
        }
        pub(crate) fn write(
            s: &Option<MqttString>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                out.put_u8(id);
                wire::write_string(v, out)?;
            }
            Ok(())
        }
    }

    /// Binary data.
    pub(super) mod binary {
        use super::*;
        pub(crate) fn decode(
            s: &mut Option<Bytes>,
            r: &mut Reader,
            id: u8,
        ) -> Result<(), DecodeError> {
            dup(s, id)?;
            *s = Some(r.binary()?);
            Ok(())
        }
        pub(crate) fn len(s: &Option<Bytes>) -> usize {
            s.as_ref().map_or(0, |v| 1 + wire::binary_len(v))
        }
        pub(crate) fn write(
            s: &Option<Bytes>,
            id: u8,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            if let Some(v) = s {
                out.put_u8(id);
                wire::write_binary(v, out)?;
            }
            Ok(())
        }
    }
}

/// Length of the user properties when encoded.
fn user_len(u: &UserProperties) -> usize {
    u.iter()
        .map(|(k, v)| 1 + wire::string_len(k) + wire::string_len(v))
        .sum()
}

fn write_user(u: &UserProperties, out: &mut BytesMut) -> Result<(), EncodeError> {
    for (k, v) in u {
        out.put_u8(id::USER_PROPERTY);
        wire::write_string(k, out)?;
        wire::write_string(v, out)?;
    }
    Ok(())
}

macro_rules! properties {
    (
        $(#[$m:meta])*
        $name:ident {
            $(
                $(#[$fm:meta])*
                $field:ident : $ty:ty = $pid:ident => $kind:ident $(::<$nz:literal>)?,
            )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            /// User Properties, in wire order (names may repeat).
            pub user_properties: UserProperties,
        }

        impl $name {
            /// Decodes the property length and the properties that follow it.
            pub(crate) fn decode(r: &mut Reader, packet: PacketType) -> Result<Self, DecodeError> {
                let len = r.vbi()? as usize;
                let mut r = r.sub(len)?;
                let mut p = Self::default();
                while !r.is_empty() {
                    let pid = r.vbi()?;
                    match u8::try_from(pid) {
                        $(Ok(id::$pid) => kind::$kind::decode$(::<$nz>)?(&mut p.$field, &mut r, id::$pid)?,)*
                        Ok(id::USER_PROPERTY) => {
                            let name = r.string()?;
                            let value = r.string()?;
                            p.user_properties.push((name, value));
                        }
                        _ => {
                            return Err(DecodeError::PropertyNotAllowed { id: pid, packet })
                        }
                    }
                }
                Ok(p)
            }

            /// Length of the properties without the property-length prefix.
            pub(crate) fn content_len(&self) -> usize {
                0 $(+ kind::$kind::len(&self.$field))* + user_len(&self.user_properties)
            }

            /// Length of the properties including the property-length prefix.
            pub(crate) fn encoded_len(&self) -> usize {
                let n = self.content_len();
                wire::vbi_len(n) + n
            }

            /// Writes the property length and the properties.
            pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
                wire::write_vbi(self.content_len(), out);
                $(kind::$kind::write$(::<$nz>)?(&self.$field, id::$pid, out)?;)*
                write_user(&self.user_properties, out)
            }

            /// True when no property is set.
            pub fn is_empty(&self) -> bool {
                self.content_len() == 0
            }
        }
    };
}

properties! {
    /// CONNECT properties.
    ConnectProperties {
        /// Session Expiry Interval in seconds (absent = 0).
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL => int32::<false>,
        /// Receive Maximum (non-zero; absent = 65,535).
        receive_maximum: Option<u16> = RECEIVE_MAXIMUM => int16::<true>,
        /// Maximum Packet Size the client accepts (non-zero; absent = no limit).
        maximum_packet_size: Option<u32> = MAXIMUM_PACKET_SIZE => int32::<true>,
        /// Topic Alias Maximum the client accepts (absent = 0).
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM => int16::<false>,
        /// Request Response Information (absent = false).
        request_response_information: Option<bool> = REQUEST_RESPONSE_INFORMATION => flag,
        /// Request Problem Information (absent = true).
        request_problem_information: Option<bool> = REQUEST_PROBLEM_INFORMATION => flag,
        /// Authentication Method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD => string,
        /// Authentication Data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA => binary,
    }
}

properties! {
    /// Will properties (in the CONNECT payload).
    WillProperties {
        /// Will Delay Interval in seconds (absent = 0).
        will_delay_interval: Option<u32> = WILL_DELAY_INTERVAL => int32::<false>,
        /// Payload Format Indicator (true = UTF-8 payload).
        payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR => flag,
        /// Message Expiry Interval in seconds.
        message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL => int32::<false>,
        /// Content Type.
        content_type: Option<MqttString> = CONTENT_TYPE => string,
        /// Response Topic.
        response_topic: Option<MqttString> = RESPONSE_TOPIC => string,
        /// Correlation Data.
        correlation_data: Option<Bytes> = CORRELATION_DATA => binary,
    }
}

properties! {
    /// CONNACK properties.
    ConnAckProperties {
        /// Session Expiry Interval the server uses.
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL => int32::<false>,
        /// Receive Maximum of the server (non-zero).
        receive_maximum: Option<u16> = RECEIVE_MAXIMUM => int16::<true>,
        /// Maximum QoS the server supports (0 or 1; absent = 2).
        maximum_qos: Option<QoS> = MAXIMUM_QOS => max_qos,
        /// Retain Available (absent = true).
        retain_available: Option<bool> = RETAIN_AVAILABLE => flag,
        /// Maximum Packet Size the server accepts (non-zero).
        maximum_packet_size: Option<u32> = MAXIMUM_PACKET_SIZE => int32::<true>,
        /// Assigned Client Identifier.
        assigned_client_identifier: Option<MqttString> = ASSIGNED_CLIENT_IDENTIFIER => string,
        /// Topic Alias Maximum the server accepts.
        topic_alias_maximum: Option<u16> = TOPIC_ALIAS_MAXIMUM => int16::<false>,
        /// Reason String.
        reason_string: Option<MqttString> = REASON_STRING => string,
        /// Wildcard Subscription Available (absent = true).
        wildcard_subscription_available: Option<bool> = WILDCARD_SUBSCRIPTION_AVAILABLE => flag,
        /// Subscription Identifiers Available (absent = true).
        subscription_identifiers_available: Option<bool> = SUBSCRIPTION_IDENTIFIER_AVAILABLE => flag,
        /// Shared Subscription Available (absent = true).
        shared_subscription_available: Option<bool> = SHARED_SUBSCRIPTION_AVAILABLE => flag,
        /// Server Keep Alive in seconds.
        server_keep_alive: Option<u16> = SERVER_KEEP_ALIVE => int16::<false>,
        /// Response Information.
        response_information: Option<MqttString> = RESPONSE_INFORMATION => string,
        /// Server Reference.
        server_reference: Option<MqttString> = SERVER_REFERENCE => string,
        /// Authentication Method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD => string,
        /// Authentication Data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA => binary,
    }
}

properties! {
    /// PUBLISH properties.
    PublishProperties {
        /// Payload Format Indicator (true = UTF-8 payload).
        payload_format_indicator: Option<bool> = PAYLOAD_FORMAT_INDICATOR => flag,
        /// Message Expiry Interval in seconds.
        message_expiry_interval: Option<u32> = MESSAGE_EXPIRY_INTERVAL => int32::<false>,
        /// Topic Alias (non-zero).
        topic_alias: Option<u16> = TOPIC_ALIAS => int16::<true>,
        /// Response Topic.
        response_topic: Option<MqttString> = RESPONSE_TOPIC => string,
        /// Correlation Data.
        correlation_data: Option<Bytes> = CORRELATION_DATA => binary,
        /// Subscription Identifiers (server to client; each 1..=268,435,455), in wire order.
        subscription_identifiers: Vec<u32> = SUBSCRIPTION_IDENTIFIER => sub_ids,
        /// Content Type.
        content_type: Option<MqttString> = CONTENT_TYPE => string,
    }
}

properties! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties {
        /// Reason String.
        reason_string: Option<MqttString> = REASON_STRING => string,
    }
}

properties! {
    /// SUBSCRIBE properties.
    SubscribeProperties {
        /// Subscription Identifier (1..=268,435,455).
        subscription_identifier: Option<u32> = SUBSCRIPTION_IDENTIFIER => sub_id,
    }
}

properties! {
    /// UNSUBSCRIBE properties (user properties only).
    UnsubscribeProperties {}
}

properties! {
    /// DISCONNECT properties.
    DisconnectProperties {
        /// Session Expiry Interval (client to server only).
        session_expiry_interval: Option<u32> = SESSION_EXPIRY_INTERVAL => int32::<false>,
        /// Reason String.
        reason_string: Option<MqttString> = REASON_STRING => string,
        /// Server Reference.
        server_reference: Option<MqttString> = SERVER_REFERENCE => string,
    }
}

properties! {
    /// AUTH properties.
    AuthProperties {
        /// Authentication Method.
        authentication_method: Option<MqttString> = AUTHENTICATION_METHOD => string,
        /// Authentication Data.
        authentication_data: Option<Bytes> = AUTHENTICATION_DATA => binary,
        /// Reason String.
        reason_string: Option<MqttString> = REASON_STRING => string,
    }
}
